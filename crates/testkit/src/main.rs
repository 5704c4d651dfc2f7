//! `hab-oci-testkit`: writes generated closures for benchmarks and manual testing.
//!
//! Example: `cargo run --release -p hab-oci-testkit -- gen --out /tmp/closure --packages 50 --size-mb 60`
//! then `hab-oci resolve --source /tmp/closure gen/app`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use hab_oci_testkit::{ClosureSpec, generate_for};

#[derive(Parser)]
#[command(version, about = "Generate signed test closures of Habitat packages")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// What identifies a generated closure: the same values give the same packages.
#[derive(Args)]
struct ClosureArgs {
    /// DIR: packages go to DIR/artifacts, keys to DIR/keys.
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
}

impl ClosureArgs {
    fn spec(&self, release: &str) -> ClosureSpec {
        ClosureSpec {
            origin: self.origin.clone(),
            packages: self.packages,
            total_size: self.size_mb * 1024 * 1024,
            seed: self.seed,
            block_size: self.block_kb * 1024,
            release: release.to_owned(),
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Generate a closure into DIR/artifacts and DIR/keys (signed with the key already in
    /// DIR/keys, if any: run it once per --target for a multi-platform closure).
    Gen {
        #[command(flatten)]
        closure: ClosureArgs,
        #[arg(long, default_value = "20240101000000")]
        release: String,
        /// The packages' TARGET.
        #[arg(long, default_value = "x86_64-linux")]
        target: String,
    },
    /// Rebuild one package of a closure made by `gen` (same closure arguments) and everything
    /// that depends on it, with a new release, signed with the closure's key in DIR/keys.
    Rebuild {
        #[command(flatten)]
        closure: ClosureArgs,
        /// The package name to rebuild, e.g. app or lib003.
        #[arg(long)]
        package: String,
        /// The new release (14 digits).
        #[arg(long)]
        release: String,
    },
    /// Serve a directory of harts (DIR/artifacts, keys in DIR/keys) as a fake Habitat
    /// Builder on 127.0.0.1 (every package in CHANNEL), printing its URL, until killed.
    ServeBuilder {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = "stable")]
        channel: String,
        /// Keep FILE holding the request log, one `ROUTE STATUS IDENT` line per request
        /// (rewritten as requests arrive), for benchmarks that count downloads.
        #[arg(long, value_name = "FILE")]
        log: Option<PathBuf>,
    },
}

/// The secret key a closure in `out` was signed with.
fn existing_key(out: &std::path::Path) -> Result<hart::SecretKey> {
    let key_path = std::fs::read_dir(out.join("keys"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.to_string_lossy().ends_with(".sig.key"))
        .ok_or_else(|| anyhow::anyhow!("no secret key in {}/keys", out.display()))?;
    Ok(hart::SecretKey::from_file(&key_path)?)
}

#[allow(clippy::print_stdout)] // the generated idents are this tool's output
fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Gen {
            closure,
            release,
            target,
        } => {
            let key = existing_key(&closure.out).ok();
            let c = generate_for(&closure.spec(&release), &closure.out, key, &target)?;
            println!("{}", c.primary());
        }
        Command::Rebuild {
            closure,
            package,
            release,
        } => {
            let specs = hab_oci_testkit::plan_closure(&closure.spec("20240101000000"));
            let key = existing_key(&closure.out)?;
            let mut c = hab_oci_testkit::Closure {
                dir: closure.out.clone(),
                key,
                packages: specs.clone(),
                harts: Vec::new(),
            };
            for n in hab_oci_testkit::rebuild_specs(&specs, &package, &release) {
                println!("{}", n.ident);
                hab_oci_testkit::add_package(&mut c, n, closure.block_kb * 1024)?;
            }
        }
        Command::ServeBuilder { dir, channel, log } => {
            use hab_oci_testkit::builder::{BuilderConfig, BuilderServer, Framing};
            let mut packages = Vec::new();
            for e in std::fs::read_dir(dir.join("artifacts"))? {
                let p = e?.path();
                if p.extension().is_some_and(|x| x == "hart") {
                    packages.push((p, vec![channel.clone()]));
                }
            }
            let server = BuilderServer::start(BuilderConfig {
                packages,
                keys_dir: dir.join("keys"),
                framing: Framing::ContentLength,
                ..BuilderConfig::default()
            })?;
            println!("{}", server.url());
            std::io::Write::flush(&mut std::io::stdout())?;
            let mut written = usize::MAX;
            loop {
                std::thread::sleep(std::time::Duration::from_millis(100));
                let Some(path) = &log else { continue };
                let entries = server.log();
                if entries.len() == written {
                    continue;
                }
                written = entries.len();
                let text: String = entries
                    .iter()
                    .map(|r| {
                        format!(
                            "{:?} {} {}\n",
                            r.route,
                            r.status,
                            r.ident.as_deref().unwrap_or("-")
                        )
                    })
                    .collect();
                let tmp = path.with_extension("tmp");
                std::fs::write(&tmp, text)?;
                std::fs::rename(&tmp, path)?;
            }
        }
    }
    Ok(())
}
