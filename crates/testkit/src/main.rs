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
    /// Rebuild one package of a closure made by `gen` (same --packages/--size-mb/--seed/
    /// --origin) and everything that depends on it, with a new release, signed with the
    /// closure's key in DIR/keys.
    Rebuild {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 10)]
        packages: usize,
        #[arg(long, default_value_t = 2)]
        size_mb: u64,
        #[arg(long, default_value = "gen")]
        origin: String,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 1024)]
        block_kb: u64,
        /// The package name to rebuild, e.g. app or lib003.
        #[arg(long)]
        package: String,
        /// The new release (14 digits).
        #[arg(long)]
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
        Command::Rebuild {
            out,
            packages,
            size_mb,
            origin,
            seed,
            block_kb,
            package,
            release,
        } => {
            let spec = ClosureSpec {
                origin,
                packages,
                total_size: size_mb * 1024 * 1024,
                seed,
                block_size: block_kb * 1024,
                ..ClosureSpec::default()
            };
            let specs = hab_oci_testkit::plan_closure(&spec);
            let key_path = std::fs::read_dir(out.join("keys"))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| p.to_string_lossy().ends_with(".sig.key"))
                .ok_or_else(|| anyhow::anyhow!("no secret key in {}/keys", out.display()))?;
            let key = hart::SecretKey::from_file(&key_path)?;
            let mut closure = hab_oci_testkit::Closure {
                dir: out.clone(),
                key,
                packages: specs.clone(),
                harts: Vec::new(),
            };
            for n in hab_oci_testkit::rebuild_specs(&specs, &package, &release) {
                #[allow(clippy::print_stdout)]
                {
                    println!("{}", n.ident);
                }
                hab_oci_testkit::add_package(&mut closure, n, block_kb * 1024)?;
            }
        }
    }
    Ok(())
}
