//! The `hab-oci` executable: parse the command line, run the command, map the outcome to an
//! exit code (0 success, 1 failure, 2 usage error from clap).

mod cli;
mod commands;
mod hints;
mod interrupt;
mod printer;
mod settings;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
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
