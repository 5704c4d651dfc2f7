//! The command line as clap sees it: syntax only. Meaning is given in `settings`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "hab-oci",
    version,
    about = "Turn signed Habitat packages into container images, one reproducible layer per package",
    propagate_version = true
)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: GlobalArgs,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Args)]
pub(crate) struct GlobalArgs {
    /// No status messages on stderr (results and errors are still printed).
    #[arg(short, long, global = true)]
    pub(crate) quiet: bool,
    /// More detail on stderr.
    #[arg(short, long, global = true)]
    pub(crate) verbose: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// The verified runtime closure of packages, one fully qualified ident per line in layer
    /// order (the dry run of `export`).
    Resolve(ResolveArgs),
    /// Work with .hart files.
    #[command(subcommand)]
    Hart(HartCommand),
    /// Work with origin keys.
    #[command(subcommand)]
    Key(KeyCommand),
}

/// Where packages and keys come from.
#[derive(Debug, Args, Clone)]
pub(crate) struct SourceArgs {
    /// A directory of .hart files, or one laid out by `hab pkg download --download-directory`
    /// (artifacts/ and keys/ inside; its keys are used). Repeatable; searched in order, then
    /// the Habitat artifact cache ($HAB_CACHE_ARTIFACT_PATH, default /hab/cache/artifacts).
    #[arg(long = "source", value_name = "DIR")]
    pub(crate) sources: Vec<PathBuf>,
    #[command(flatten)]
    pub(crate) keys: KeysArgs,
    /// Platform of the image.
    #[arg(long, value_name = "TARGET", default_value = "x86_64-linux")]
    pub(crate) target: String,
}

#[derive(Debug, Args, Clone)]
pub(crate) struct KeysArgs {
    /// A directory of origin public keys (ORIGIN-REVISION.pub). Repeatable. Default: the
    /// Habitat key cache ($HAB_CACHE_KEY_PATH, else /hab/cache/keys and ~/.hab/cache/keys).
    #[arg(long = "keys", value_name = "DIR")]
    pub(crate) keys: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct ResolveArgs {
    /// Packages: idents (origin/name[/version[/release]]) or paths to .hart files.
    #[arg(value_name = "PKG", required = true)]
    pub(crate) packages: Vec<String>,
    #[command(flatten)]
    pub(crate) source: SourceArgs,
    /// Print a JSON array with each package's details instead of idents.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum HartCommand {
    /// Verify signatures and payload hashes; one line per file, non-zero exit if any fails.
    Verify {
        #[arg(value_name = "FILE", required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        keys: KeysArgs,
    },
    /// Show what a .hart holds (it is verified first).
    Info {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        #[command(flatten)]
        keys: KeysArgs,
        #[arg(long)]
        json: bool,
    },
    /// Sign an installed-package directory (.../hab/pkgs/ORIGIN/NAME/VERSION/RELEASE) into a
    /// .hart, as Habitat's build does (GNU tar, xz, signed header). Entry mtimes come from
    /// the files, or from $SOURCE_DATE_EPOCH when set.
    Pack {
        #[arg(value_name = "PKG_DIR")]
        dir: PathBuf,
        /// The origin's secret signing key file (ORIGIN-REVISION.sig.key).
        #[arg(long, value_name = "SIG_KEY")]
        key: PathBuf,
        /// Output file. Default: the canonical name in the current directory.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// xz preset level (Habitat: $HAB_HART_COMPRESSION_LEVEL, default 6).
        #[arg(long, env = "HAB_HART_COMPRESSION_LEVEL", default_value_t = 6, value_parser = clap::value_parser!(u32).range(0..=9))]
        level: u32,
        /// Uncompressed bytes per xz block (default: xz's own, 3 x the dictionary size).
        #[arg(long, value_name = "BYTES")]
        xz_block_size: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum KeyCommand {
    /// Generate an origin signing key pair (ORIGIN-REVISION.pub and .sig.key).
    Generate {
        #[arg(value_name = "ORIGIN")]
        origin: String,
        /// Where to write the pair (default: the Habitat key cache).
        #[arg(long = "keys", value_name = "DIR")]
        keys: Option<PathBuf>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }
}
