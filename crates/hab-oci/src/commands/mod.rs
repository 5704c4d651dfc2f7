//! One module per command; each takes its parsed arguments and the printer, and returns the
//! exit code or an error for `main` to print.

mod cache;
mod export;
mod hart;
mod key;
mod push;
mod resolve;

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::{CacheCommand, Cli, Command, HartCommand, KeyCommand};
use crate::printer::Printer;

pub(crate) fn run(cli: Cli, printer: &Printer) -> Result<ExitCode> {
    match cli.command {
        Command::Resolve(args) => resolve::run(&args, printer),
        Command::Export(args) => export::run(&args, printer),
        Command::Hart(HartCommand::Verify { files, keys }) => hart::verify(&files, &keys, printer),
        Command::Hart(HartCommand::Info { file, keys, json }) => {
            hart::info(&file, &keys, json, printer)
        }
        Command::Hart(HartCommand::Pack {
            dir,
            key,
            output,
            level,
            xz_block_size,
        }) => hart::pack(&dir, &key, output.as_deref(), level, xz_block_size, printer),
        Command::Key(KeyCommand::Generate { origin, keys }) => {
            key::generate(&origin, keys.as_deref(), printer)
        }
        Command::Cache(CacheCommand::Info { json }) => cache::info(json, printer),
        Command::Cache(CacheCommand::Prune { max_size }) => cache::prune(max_size, printer),
    }
}
