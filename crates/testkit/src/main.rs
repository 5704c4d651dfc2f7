//! `hab-oci-testkit gen`: writes a generated closure for benchmarks and manual testing.
//!
//! Example: `cargo run --release -p hab-oci-testkit -- gen --out /tmp/closure --packages 50 --size-mb 60`
//! then `hab-oci resolve --source /tmp/closure gen/app`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use hab_oci_testkit::{ClosureSpec, generate};

#[derive(Parser)]
#[command(version, about = "Generate signed test closures of Habitat packages")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a closure into DIR/artifacts and DIR/keys.
    Gen {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 10)]
        packages: usize,
        /// Approximate total unpacked size in MiB.
        #[arg(long, default_value_t = 2)]
        size_mb: u64,
        #[arg(long, default_value = "gen")]
        origin: String,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// xz block size in KiB (small blocks make multi-block payloads).
        #[arg(long, default_value_t = 1024)]
        block_kb: u64,
        #[arg(long, default_value = "20240101000000")]
        release: String,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Gen {
            out,
            packages,
            size_mb,
            origin,
            seed,
            block_kb,
            release,
        } => {
            let spec = ClosureSpec {
                origin,
                packages,
                total_size: size_mb * 1024 * 1024,
                seed,
                block_size: block_kb * 1024,
                release,
            };
            let closure = generate(&spec, &out, None)?;
            #[allow(clippy::print_stdout)]
            {
                println!("{}", closure.primary());
            }
        }
    }
    Ok(())
}
