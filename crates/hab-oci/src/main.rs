//! The `hab-oci` executable: parse the command line, run the command, map the outcome to an
//! exit code (0 success, 1 failure, 2 usage error from clap). Called as
//! `hab-pkg-export-container` (a link to it), it is Habitat's container exporter: its
//! arguments are `export`'s, so `HAB_PKG_EXPORT_CONTAINER_BINARY=hab-pkg-export-container
//! hab pkg export container ...` runs hab-oci.

mod cli;
mod commands;
mod hints;
mod interrupt;
mod printer;
mod settings;

use std::process::ExitCode;

use clap::Parser as _;

/// The name `hab pkg export container` runs (`HAB_PKG_EXPORT_CONTAINER_BINARY`).
const EXPORTER_NAME: &str = "hab-pkg-export-container";

/// The command line, with the exporter's argument list turned into `hab-oci export`'s.
fn args() -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let called_as = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_stem())
        .is_some_and(|s| s == EXPORTER_NAME);
    if called_as {
        args[0] = EXPORTER_NAME.into();
        args.insert(1, "export".into());
    }
    args
}

fn main() -> ExitCode {
    let cli = cli::Cli::parse_from(args());
    let printer = printer::Printer::new(cli.global.quiet, cli.global.verbose);
    interrupt::install();
    match commands::run(cli, &printer) {
        Ok(code) => code,
        Err(err) => {
            // A closed stdout (e.g. `| head`) is not a failure.
            if err.chain().any(|e| {
                e.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            printer.error(&err);
            ExitCode::FAILURE
        }
    }
}
