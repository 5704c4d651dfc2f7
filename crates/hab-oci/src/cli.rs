//! The command line as clap sees it: syntax only. Meaning is given in `settings`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    /// Build an image from packages (idents or .hart paths) and their runtime closure.
    Export(Box<ExportArgs>),
    /// Work with .hart files.
    #[command(subcommand)]
    Hart(HartCommand),
    /// Work with origin keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// hab-oci's layer and package-metadata cache ($HAB_OCI_CACHE, default ~/.cache/hab-oci).
    #[command(subcommand)]
    Cache(CacheCommand),
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
    /// Habitat target of the packages (default x86_64-linux). `export` takes it more than
    /// once (or comma-separated): one image per target, tied by an image index.
    #[arg(long = "target", value_name = "TARGET", value_delimiter = ',')]
    pub(crate) targets: Vec<String>,
    /// Most bytes one package's payload may unpack to: a small hart that inflates beyond it
    /// is refused (a decompression bomb cannot fill the disk).
    #[arg(long, value_name = "SIZE", default_value = "8G", value_parser = parse_size)]
    pub(crate) max_unpacked_size: u64,
    #[command(flatten)]
    pub(crate) builder: BuilderArgs,
}

/// Habitat Builder, for what the local sources lack. Builder is consulted when --url or
/// --base-pkgs-url is given, or when no --source is given (as `hab` does; then
/// HAB_BLDR_URL / HAB_DEPOT_URL apply); downloads go to the Habitat artifact cache, fetched
/// origin keys to the key cache (not with --keys: then only those keys are trusted).
#[derive(Debug, Args, Clone)]
pub(crate) struct BuilderArgs {
    /// Builder URL (else $HAB_BLDR_URL, else $HAB_DEPOT_URL, else https://bldr.habitat.sh;
    /// with --source, only this flag or --base-pkgs-url makes hab-oci ask Builder).
    #[arg(long, short = 'u', value_name = "URL")]
    pub(crate) url: Option<String>,
    /// Channel that fuzzy idents are looked up in; also {{channel}} in name templates.
    #[arg(long, short = 'c', env = "HAB_BLDR_CHANNEL", default_value = "base")]
    pub(crate) channel: String,
    /// Builder URL of the Supervisor packages (default: as --url). The token is not sent
    /// there unless it is the same URL.
    #[arg(long, value_name = "URL")]
    pub(crate) base_pkgs_url: Option<String>,
    /// Channel of the Supervisor packages.
    #[arg(long, value_name = "CHANNEL", default_value = "base")]
    pub(crate) base_pkgs_channel: String,
    /// Builder token, sent on lookups and downloads (never on key fetches, never printed).
    #[arg(
        long,
        short = 'z',
        env = "HAB_AUTH_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub(crate) auth: Option<String>,
    /// No network at all: only the sources and caches; say what is missing.
    #[arg(long, env = "HAB_OCI_OFFLINE", value_parser = clap::builder::FalseyValueParser::new())]
    pub(crate) offline: bool,
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
    /// Decode every package instead of using the metadata kept in hab-oci's cache.
    #[arg(long)]
    pub(crate) no_cache: bool,
}

/// `hab pkg export container`'s flags keep their names and meanings; ours are added.
/// Differences from Habitat: the engine is `native` (no daemon), and it builds one layer per
/// package by default (Habitat: one layer unless --multi-layer).
#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    /// Packages: idents (origin/name[/version[/release]]) or paths to .hart files. The first
    /// service among them is the primary one (users, /init.sh, default command).
    #[arg(value_name = "PKG", required = true)]
    pub(crate) packages: Vec<String>,
    #[command(flatten)]
    pub(crate) source: SourceArgs,
    /// Put the packages on this base image (native engine): a registry reference
    /// (`debian:bookworm-slim`, `REGISTRY/REPO@sha256:…`), or `oci:DIR[:TAG]`,
    /// `oci-archive:FILE`, `docker-archive:FILE`. Its layers come first, unchanged; its
    /// config is merged (its Env kept, PATH with Habitat's paths first; its User/WorkingDir
    /// unless given); Habitat's users and groups are added to its /etc/passwd and /etc/group.
    #[arg(long, value_name = "REF")]
    pub(crate) base_image: Option<String>,
    /// Docker-style platforms, another way to give --target: linux/amd64 (x86_64-linux),
    /// linux/arm64 (aarch64-linux). Repeatable or comma-separated.
    #[arg(long = "platform", value_name = "OS/ARCH", value_delimiter = ',')]
    pub(crate) platforms: Vec<String>,
    /// Where the image goes (repeatable): oci:DIR, oci-archive:FILE, docker-archive:FILE
    /// (loads with `docker load`, read by skopeo/umoci too) or docker-daemon. Default:
    /// docker-daemon when a Docker daemon answers. With several targets, oci: and
    /// oci-archive: hold the image index; docker-archive: and docker-daemon hold the host's
    /// platform (else the first target's).
    #[arg(long = "output", short = 'o', value_name = "OUTPUT")]
    pub(crate) outputs: Vec<String>,
    /// Replace an existing output path even if hab-oci did not write it.
    #[arg(long)]
    pub(crate) force: bool,
    /// Write a JSON report (name, tags, digests, per-layer packages) to FILE.
    #[arg(long, value_name = "FILE")]
    pub(crate) report: Option<PathBuf>,
    /// The SBOM of the image (native engine): SPDX 2.3 JSON, CycloneDX 1.6 JSON, or none.
    /// Pushed images get it attached as an OCI referrer (with the `sha256-DIGEST` tag
    /// fallback for registries without the referrers API).
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = SbomArg::Spdx)]
    pub(crate) sbom: SbomArg,
    /// Also write the SBOM to FILE (several platforms: FILE.OS-ARCH[-VARIANT] each,
    /// before its extension).
    #[arg(long, value_name = "FILE")]
    pub(crate) sbom_output: Option<PathBuf>,
    /// Image name template (Handlebars variables pkg_origin, pkg_name, pkg_version,
    /// pkg_release, channel). Default: {{pkg_origin}}/{{pkg_name}}.
    #[arg(long, short = 'i', value_name = "IMAGE_NAME")]
    pub(crate) image_name: Option<String>,
    /// Prefix for the image name, e.g. registry.example.com:5000/team.
    #[arg(long, short = 'G', value_name = "REGISTRY_URL")]
    pub(crate) registry_url: Option<String>,
    /// Tag the image `latest` (default).
    #[arg(long, overrides_with = "no_tag_latest")]
    pub(crate) tag_latest: bool,
    /// Do not tag the image `latest`.
    #[arg(long, overrides_with = "tag_latest")]
    pub(crate) no_tag_latest: bool,
    /// Tag the image with the package version (default).
    #[arg(long, overrides_with = "no_tag_version")]
    pub(crate) tag_version: bool,
    /// Do not tag the image with the package version.
    #[arg(long, overrides_with = "tag_version")]
    pub(crate) no_tag_version: bool,
    /// Tag the image with VERSION-RELEASE (default).
    #[arg(long, overrides_with = "no_tag_version_release")]
    pub(crate) tag_version_release: bool,
    /// Do not tag the image with VERSION-RELEASE.
    #[arg(long, overrides_with = "tag_version_release")]
    pub(crate) no_tag_version_release: bool,
    /// An extra tag, a template like --image-name.
    #[arg(long, value_name = "TAG_CUSTOM")]
    pub(crate) tag_custom: Option<String>,
    /// Accepted for compatibility: one layer per package is the native default.
    #[arg(long, conflicts_with = "single_layer")]
    pub(crate) multi_layer: bool,
    /// All packages in one layer (plus the extras layer).
    #[arg(long)]
    pub(crate) single_layer: bool,
    /// Layer budget for the whole image (2 to 125); above it packages are grouped.
    #[arg(long, default_value_t = 100, value_name = "N", value_parser = clap::value_parser!(u8).range(2..=125))]
    pub(crate) max_layers: u8,
    /// Layer compression.
    #[arg(long, value_enum, default_value_t = CompressionArg::Gzip)]
    pub(crate) compression: CompressionArg,
    /// Build engine: `native` builds the image itself (no daemon, reproducible layers);
    /// `docker` and `buildah` build the same plan from a context with one COPY per layer
    /// and no RUN step. Habitat's default is docker.
    #[arg(
        long,
        env = "HAB_PKG_EXPORT_CONTAINER_ENGINE",
        value_enum,
        default_value_t = EngineArg::Native
    )]
    pub(crate) engine: EngineArg,
    /// The engine's binary (default: docker or buildah on PATH), e.g. /usr/bin/docker.
    #[arg(long, env = "HAB_OCI_ENGINE_BINARY", value_name = "PATH")]
    pub(crate) engine_binary: Option<PathBuf>,
    /// Docker's builder. `legacy` (DOCKER_BUILDKIT=0) makes each package's COPY layer
    /// byte-identical on any machine from our fixed-mtime context, so hab-oci's push from a
    /// fresh daemon uploads only what changed (measured, 40 packages, 100 MB: a new release
    /// of the primary sends 3 blobs, 0.56 MB; `docker push` of it, with --engine-push, sends
    /// all 62 MB, since a fresh daemon does not know the layers' compressed digests).
    /// `buildkit` reuses layers only through a cache source (Docker 20.10's BuildKit stamps
    /// the directories it writes with the build time: without a cache hit every layer is new
    /// and uploaded) and writes inline cache metadata. Default: DOCKER_BUILDKIT, else the
    /// client's.
    #[arg(long, value_name = "BUILDER", value_enum)]
    pub(crate) docker_builder: Option<DockerBuilderArg>,
    /// An image to take layers or build cache from (repeatable, in order). native (with
    /// --push-image and no --output): an image hab-oci pushed; only its manifest and config
    /// are read, and each package layer it holds (same package checksums, layer format and
    /// compression) that the push's repository has or can mount is reused without being
    /// built, downloaded or uploaded, its packages' metadata taken from the image's records
    /// instead of their harts (which are then not downloaded either). A source is trusted as
    /// BuildKit trusts one: whoever can push to it can already replace the image (see
    /// SECURITY.md; --verify-cache-source checks it). docker: an image reference (the legacy
    /// builder pulls it first; a missing one is a warning). buildah: a cache repository
    /// written by --cache-to (the reference's repository part is used).
    #[arg(long, value_name = "REF")]
    pub(crate) cache_from: Vec<String>,
    /// native: build every layer anyway and compare each layer a cache source holds with
    /// the local build (digest, diff_id, size); a difference is a warning naming the layer,
    /// and the local layer is pushed. For users who do not trust their cache sources'
    /// records: it costs the downloads and decoding a cache source saves, and checks the
    /// layers' bytes (not the records' metadata, which a local build then does not use).
    #[arg(long)]
    pub(crate) verify_cache_source: bool,
    /// Where to export the build cache: buildah (a repository), or docker with buildx
    /// (type=registry,mode=max). Refused where the engine cannot.
    #[arg(long, value_name = "REF")]
    pub(crate) cache_to: Option<String>,
    /// Write BuildKit's inline cache metadata into the image (default with BuildKit and
    /// more than one layer), making the pushed image the next build's cache source.
    #[arg(long, overrides_with = "no_inline_cache")]
    pub(crate) inline_cache: bool,
    /// Do not write BuildKit's inline cache metadata.
    #[arg(long, overrides_with = "inline_cache")]
    pub(crate) no_inline_cache: bool,
    /// Without --cache-from, docker builds and native push-only exports use the image's own
    /// NAME:latest as cache source if it exists; this turns that off.
    #[arg(long)]
    pub(crate) no_auto_cache_from: bool,
    /// An argument appended to the engine's build command (repeatable); also from
    /// $HAB_OCI_ENGINE_ARGS, split as a shell would.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub(crate) engine_arg: Vec<String>,
    /// buildah's image format (default docker).
    #[arg(long, value_enum)]
    pub(crate) format: Option<FormatArg>,
    /// The hab CLI package of the Supervisor.
    #[arg(long, default_value = "chef/hab", value_name = "HAB_PKG")]
    pub(crate) hab_pkg: String,
    /// The Supervisor package.
    #[arg(long, default_value = "chef/hab-sup", value_name = "HAB_SUP_PKG")]
    pub(crate) sup_pkg: String,
    /// The Launcher package.
    #[arg(
        long,
        default_value = "chef/hab-launcher",
        value_name = "HAB_LAUNCHER_PKG"
    )]
    pub(crate) launcher_pkg: String,
    /// No Supervisor (hab, hab-sup, hab-launcher, busybox, cacerts) and no /init.sh: the
    /// image runs its command directly (default: the primary service's run hook).
    #[arg(long)]
    pub(crate) no_supervisor: bool,
    /// Entrypoint: a JSON array (["/bin/x","arg"]) or one path.
    #[arg(long, value_name = "ENTRYPOINT")]
    pub(crate) entrypoint: Option<String>,
    /// Cmd: a JSON array, or words split as a shell splits them (`sh -c "a b"` is three
    /// words).
    #[arg(long, value_name = "CMD")]
    pub(crate) cmd: Option<String>,
    /// Environment variable K=V for the image (repeatable).
    #[arg(long = "env", value_name = "K=V")]
    pub(crate) env: Vec<String>,
    /// User the container runs as.
    #[arg(long)]
    pub(crate) user: Option<String>,
    /// Working directory of the container.
    #[arg(long, value_name = "DIR")]
    pub(crate) workdir: Option<String>,
    /// Image label K=V (repeatable).
    #[arg(long = "label", value_name = "K=V")]
    pub(crate) labels: Vec<String>,
    /// Push every tag to the registry of the image name (see --registry-url): only blobs the
    /// registry lacks are uploaded, tags are written last (docker/buildah: see
    /// --engine-push). Credentials: --username and --password/--password-stdin, else what
    /// docker would use (~/.docker/config.json, its credential helpers, $REGISTRY_AUTH_FILE),
    /// else anonymous.
    #[arg(long, visible_alias = "push")]
    pub(crate) push_image: bool,
    #[arg(long, hide = true)]
    pub(crate) no_push_image: bool,
    /// Registry user (with --password or --password-stdin).
    #[arg(long, short = 'U', requires = "password_source")]
    pub(crate) username: Option<String>,
    /// Registry password (visible to other users of this machine: prefer --password-stdin).
    #[arg(long, short = 'P', group = "password_source", requires = "username")]
    pub(crate) password: Option<String>,
    /// Read the registry password from stdin.
    #[arg(long, group = "password_source", requires = "username")]
    pub(crate) password_stdin: bool,
    /// Extra CA certificate (PEM) to trust for the registry (repeatable).
    #[arg(long, value_name = "FILE")]
    pub(crate) ca_cert: Vec<PathBuf>,
    /// Talk plain HTTP to this registry host[:port] (loopback registries already are).
    #[arg(long, value_name = "HOST")]
    pub(crate) insecure_registry: Vec<String>,
    /// Blobs pushed at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub(crate) jobs: u16,
    /// Chunk size for registries (or proxies in front of them) that refuse a whole blob in
    /// one request with 413: the blob is then sent in PATCH chunks of this size, or of the
    /// registry's OCI-Chunk-Min-Length when larger. Suffixes K, M, G (powers of 1024).
    #[arg(long, value_name = "SIZE", default_value = "8M", value_parser = parse_size)]
    pub(crate) push_chunk_size: u64,
    /// Another repository of the same registry to mount blobs from instead of uploading
    /// them (repeatable), e.g. registry.example.com/team/base.
    #[arg(long, value_name = "REPOSITORY")]
    pub(crate) mount_from: Vec<String>,
    /// The registry's kind, as in Habitat: `docker` and `azure` (username/password as
    /// given) work alike; `amazon` (ECR's login from AWS credentials) is refused with what to
    /// do instead.
    #[arg(long, short = 'R', value_enum, default_value_t = RegistryTypeArg::Docker)]
    pub(crate) registry_type: RegistryTypeArg,
    /// docker/buildah: remove the image from the engine's store after pushing it.
    #[arg(long)]
    pub(crate) rm_image: bool,
    /// docker/buildah with --push-image: push with the engine's own `docker push` /
    /// `buildah push`, for what only the engine knows (its credential helpers, mirrors,
    /// certificates). Default: hab-oci pushes, reading the image out of the engine (`docker
    /// save`, `buildah push docker-archive:`) and compressing each layer with its own pinned
    /// gzip/zstd, so an unchanged layer has the same blob digest on any machine and a fresh
    /// runner uploads only the blobs the registry lacks; --username/--password, --ca-cert,
    /// --insecure-registry, --jobs and --mount-from apply as for the native engine.
    #[arg(long)]
    pub(crate) engine_push: bool,
    /// docker/buildah: memory limit of the build (e.g. 2g), as in Habitat.
    #[arg(long, short = 'm', value_name = "MEMORY")]
    pub(crate) memory: Option<String>,
    /// Print the report JSON on stdout instead of the references.
    #[arg(long)]
    pub(crate) json: bool,
    /// Neither read nor write hab-oci's cache ($HAB_OCI_CACHE, default ~/.cache/hab-oci):
    /// every layer is built from its hart and every package decoded.
    #[arg(long)]
    pub(crate) no_cache: bool,
    /// Size bound of the layer cache; least recently used layers go first.
    #[arg(long, value_name = "SIZE", default_value = "10G", value_parser = parse_size)]
    pub(crate) cache_max_size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum RegistryTypeArg {
    Docker,
    Amazon,
    Azure,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum SbomArg {
    Spdx,
    #[value(name = "cyclonedx")]
    CycloneDx,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum EngineArg {
    Native,
    Docker,
    Buildah,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum CompressionArg {
    Gzip,
    Zstd,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum DockerBuilderArg {
    Legacy,
    Buildkit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum FormatArg {
    Docker,
    Oci,
}

#[derive(Debug, Subcommand)]
pub(crate) enum CacheCommand {
    /// Where the cache is, how many layers it holds and their size.
    Info {
        #[arg(long)]
        json: bool,
    },
    /// Remove least recently used layers down to --max-size (default: remove all).
    Prune {
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        max_size: Option<u64>,
    },
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

/// A byte size: digits with an optional K, M or G (KiB/MiB/GiB spelt either way).
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    let (num, unit) = t.split_at(digits);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size (e.g. 512K, 8M, 2G)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("'{s}': unknown size unit (use K, M or G)")),
    };
    let v = n
        .checked_mul(mult)
        .ok_or_else(|| format!("'{s}' is too large"))?;
    if v == 0 {
        return Err("the size must be at least 1 byte".into());
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("8M"), Ok(8 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert_eq!(parse_size("100"), Ok(100));
        for bad in ["", "M", "1.5M", "3T", "0", "99999999999999999999G"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
