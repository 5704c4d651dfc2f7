//! The docker and buildah engines: the same [`ImagePlan`] as the native engine, materialized
//! as a build context ([`context`]) and built by the engine's own build command with the
//! cache options users of `hab pkg export container` asked for (`--cache-from`, BuildKit's
//! inline cache, `--cache-to`, passthrough arguments). Engine output goes to the
//! [`EngineHost`]; this crate still never prints.

mod buildah;
pub mod context;
mod docker;
mod save;

pub use save::SaveFailure;
pub(crate) use save::push_saved;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Command;

use depot::ResolvedClosure;
use serde::Serialize;

use crate::naming::{Naming, parse_reference};
use crate::plan::ImagePlan;
use crate::{ExportError, Progress};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    Docker,
    Buildah,
}

impl EngineKind {
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Docker => "docker",
            EngineKind::Buildah => "buildah",
        }
    }
}

/// Docker's two builders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DockerBuilder {
    /// The classic builder (`DOCKER_BUILDKIT=0`): `COPY` layers are reproducible from a
    /// context with fixed mtimes; `--cache-from` needs the images pulled first.
    Legacy,
    BuildKit,
}

impl DockerBuilder {
    pub fn name(self) -> &'static str {
        match self {
            DockerBuilder::Legacy => "legacy",
            DockerBuilder::BuildKit => "buildkit",
        }
    }
}

#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub kind: EngineKind,
    /// The engine binary (default: `docker` / `buildah` on `PATH`).
    pub binary: Option<PathBuf>,
    /// Docker only: the builder (default: `DOCKER_BUILDKIT`, else the client's default).
    pub builder: Option<DockerBuilder>,
    /// Image references, in order.
    pub cache_from: Vec<String>,
    /// Use the image's own `NAME:latest` when no `cache_from` is given (docker).
    pub auto_cache_from: bool,
    /// BuildKit's inline cache metadata; `None`: on for BuildKit multi-layer builds.
    pub inline_cache: Option<bool>,
    pub cache_to: Option<String>,
    /// Appended to the build command.
    pub engine_args: Vec<String>,
    pub memory: Option<String>,
    /// buildah `--format` (`docker` or `oci`).
    pub buildah_format: String,
    /// One `COPY` for everything (`--single-layer`).
    pub single_copy: bool,
    /// Registries (`host[:port]`) to talk to without TLS verification, besides loopback ones.
    pub insecure_registries: Vec<String>,
    /// The engine pushes every tag itself (`docker push`, `buildah push`). Otherwise an
    /// export that pushes ([`crate::ExportSettings::push`]) reads the image out of the engine
    /// and pushes it through the caller's [`crate::Publisher`], as a native image.
    pub push: bool,
    /// `user`, `password` for the registry of the image (pull of cache sources and push).
    pub credentials: Option<(String, String)>,
    /// Remove the image from the engine's store at the end (after any push).
    pub rm_image: bool,
}

/// A stable context path per image name: engines key nothing on it, but a path that changes
/// every run is what made Habitat refuse buildah multi-layer builds; stable is simplest.
pub fn context_dir(name: &str) -> PathBuf {
    let safe: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    std::env::temp_dir().join("hab-oci-context").join(safe)
}

/// Why an engine cannot build what was asked, as found by its checks. The binary adds
/// what to do next (which flags to pass); this crate names no flag.
#[derive(Debug, thiserror::Error)]
pub enum EngineRefusal {
    #[error("the Docker daemon does not answer: {0}")]
    NoDaemon(String),
    #[error(
        "docker client {0} runs BuildKit builds through the buildx plugin, which is not installed"
    )]
    NoBuildx(String),
    #[error("the inline cache is BuildKit's, and the build uses docker's legacy builder")]
    InlineCacheLegacy,
    #[error(
        "a cache export needs docker buildx (BuildKit's registry cache export), which docker {0} here does not have"
    )]
    CacheToNeedsBuildx(String),
    #[error("buildah {0} has no registry cache (it needs buildah 1.27 or later)")]
    OldBuildah(String),
    #[error("{engine} not found ({}): install it ({install})", path.display())]
    NotFound {
        engine: String,
        path: PathBuf,
        install: String,
    },
}

/// Where engine commands and their output go (the binary prints them with `-v`).
pub trait EngineHost: Sync {
    /// A command is about to run (argv; never holds credentials).
    fn command(&self, _argv: &[String]) {}
    /// A line the engine printed.
    fn output(&self, _line: &str) {}
    fn warning(&self, _message: &str) {}
    fn step(&self, _message: &str) {}
}

/// What the engine did, for the report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EngineReport {
    pub engine: String,
    pub version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub builder: Option<String>,
    /// The build command line.
    pub command: Vec<String>,
    /// Cache sources given to the build.
    pub cache_from: Vec<String>,
    /// Cache sources that could not be used (could not be pulled).
    pub cache_from_unavailable: Vec<String>,
    pub inline_cache: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_to: Option<String>,
    pub copy_steps: usize,
    /// Build steps the engine reported as taken from its cache.
    pub cached_steps: usize,
    pub image_id: String,
    /// Which layers can come out byte-identical on another machine without a cache.
    pub reproducible_layers: String,
    /// `name:tag@digest` per pushed tag.
    pub pushed: Vec<String>,
    pub removed: bool,
}

/// The engine after its checks: what it is, which builder, which cache sources.
pub struct Prepared {
    opts: EngineOptions,
    /// The registry of the image: where credentials apply.
    registry: String,
    /// Talk to it without TLS verification (loopback, or named insecure).
    insecure: bool,
    /// Where the build context is written (stable per image, removed afterwards).
    pub context_dir: PathBuf,
    binary: PathBuf,
    version: String,
    builder: Option<DockerBuilder>,
    cache_from: Vec<String>,
    inline_cache: bool,
}

impl Prepared {
    /// The engine after its checks, bound to the image `naming` names: the registry its
    /// credentials are for, whether it is spoken to without TLS, and the context path.
    fn new(
        opts: &EngineOptions,
        naming: &Naming,
        binary: PathBuf,
        version: String,
        builder: Option<DockerBuilder>,
        cache_from: Vec<String>,
        inline_cache: bool,
    ) -> Prepared {
        let registry = crate::naming::registry_of(&naming.name);
        Prepared {
            insecure: oci_image::reference::is_loopback(&registry)
                || opts.insecure_registries.contains(&registry),
            context_dir: context_dir(&naming.name),
            registry,
            opts: opts.clone(),
            binary,
            version,
            builder,
            cache_from,
            inline_cache,
        }
    }
}

/// What an engine's build command did.
pub(crate) struct BuildRun {
    /// The command line, binary first.
    pub(crate) command: Vec<String>,
    /// `COPY` steps its log reports as taken from its cache.
    pub(crate) cached: usize,
    /// What it wrote to `--iidfile`.
    pub(crate) image_id: String,
}

impl Prepared {
    /// A docker-config directory with the login for the image's registry (removed when
    /// dropped), when credentials were given.
    pub(crate) fn auth(&self) -> Result<Option<tempfile::TempDir>, ExportError> {
        self.opts
            .credentials
            .as_ref()
            .map(|c| auth_dir(&self.registry, c))
            .transpose()
    }

    /// The end of every build command: the memory limit, the passthrough arguments, and
    /// the context directory.
    pub(crate) fn finish_build_args(&self, args: &mut Vec<String>, ctx: &context::Context) {
        if let Some(m) = &self.opts.memory {
            args.extend(["--memory".into(), m.clone()]);
        }
        args.extend(self.opts.engine_args.iter().cloned());
        args.push(ctx.dir.display().to_string());
    }

    /// Runs the build command `args`, whose `--iidfile` is `iid`.
    pub(crate) fn run_build(
        &self,
        engine: &str,
        args: &[String],
        env: &[(&str, &str)],
        iid: &Path,
        host: &dyn EngineHost,
    ) -> Result<BuildRun, ExportError> {
        let ran = run(engine, &self.binary, args, env, host)?;
        Ok(BuildRun {
            command: std::iter::once(self.binary.display().to_string())
                .chain(args.iter().cloned())
                .collect(),
            cached: cached_copy_steps(&ran.lines),
            image_id: std::fs::read_to_string(iid)
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
        })
    }
}

/// Checks everything before any work: the engine binary and daemon answer, the options
/// make sense for this engine and version, the cache references parse.
pub fn prepare(
    opts: &EngineOptions,
    naming: &Naming,
    multi_layer: bool,
    host: &dyn EngineHost,
) -> Result<Prepared, ExportError> {
    for r in opts.cache_from.iter().chain(opts.cache_to.iter()) {
        parse_reference(r).map_err(|e| {
            ExportError::Engine(format!(
                "cache reference '{r}' is not an image reference: {e}"
            ))
        })?;
    }
    match opts.kind {
        EngineKind::Docker => docker::prepare(opts, naming, multi_layer, host),
        EngineKind::Buildah => buildah::prepare(opts, naming, host),
    }
}

/// Materializes the context, builds (tags only on success), pushes with the engine when
/// asked ([`EngineOptions::push`]), and always removes the context.
pub fn build(
    prepared: &Prepared,
    closure: &ResolvedClosure,
    plan: &ImagePlan,
    progress: &dyn Progress,
    host: &dyn EngineHost,
) -> Result<EngineReport, ExportError> {
    let dir = &prepared.context_dir;
    remove_dir(dir)?;
    let result = context::materialize(closure, plan, dir, prepared.opts.single_copy, progress)
        .and_then(|ctx| match prepared.opts.kind {
            EngineKind::Docker => docker::build(prepared, &ctx, &plan.naming, host),
            EngineKind::Buildah => buildah::build(prepared, &ctx, &plan.naming, host),
        });
    let cleaned = remove_dir(dir);
    let report = result?;
    cleaned?;
    Ok(report)
}

/// `--rm-image`: the image's references removed from the engine's store, after any push.
pub fn remove_image(
    prepared: &Prepared,
    naming: &Naming,
    host: &dyn EngineHost,
) -> Result<(), ExportError> {
    let engine = prepared.opts.kind.name();
    let mut rmi = vec!["rmi".to_owned()];
    rmi.extend(naming.references());
    run(engine, &prepared.binary, &rmi, &[], host).map(drop)
}

fn remove_dir(dir: &Path) -> Result<(), ExportError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(ExportError::Io {
            path: dir.to_owned(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// How many `COPY` steps a build log reports as taken from the cache, for the legacy
/// builder (`Step 2/9 : COPY …` then ` ---> Using cache`), BuildKit's plain progress
/// (`#5 [2/9] COPY …` then `#5 CACHED`) and buildah (`STEP 2/9: COPY …` then
/// `--> Using cache …`).
pub(crate) fn cached_copy_steps(lines: &[String]) -> usize {
    let mut in_copy = false;
    let mut copy_ids = std::collections::HashSet::new();
    let mut n = 0;
    for l in lines {
        let t = l.trim();
        if let Some(rest) = t.strip_prefix("Step ").or_else(|| t.strip_prefix("STEP ")) {
            in_copy = rest.contains(": COPY ") || rest.contains(" : COPY ");
        } else if t.contains("Using cache") || t.contains("Cache pulled from remote") {
            if in_copy {
                n += 1;
                in_copy = false;
            }
        } else if let Some(id) = t.split_whitespace().next().filter(|w| w.starts_with('#')) {
            let rest = t[id.len()..].trim();
            if rest.starts_with('[') && rest.contains("] COPY ") {
                copy_ids.insert(id.to_owned());
            } else if rest == "CACHED" && copy_ids.remove(id) {
                n += 1;
            }
        }
    }
    n
}

/// `-t REF` for every reference of the image (the bare name when it has no tags).
pub(crate) fn tag_args(naming: &Naming) -> Vec<String> {
    let mut refs = naming.references();
    if refs.is_empty() {
        refs.push(naming.name.clone());
    }
    refs.into_iter()
        .flat_map(|r| ["-t".to_owned(), r])
        .collect()
}

/// What a finished command printed (stdout and stderr interleaved, as a terminal shows it).
pub(crate) struct Ran {
    pub(crate) lines: Vec<String>,
}

/// Runs `binary args`, passing each output line to the host; a non-zero exit is an error
/// carrying the command and the last lines it printed.
pub(crate) fn run(
    engine: &str,
    binary: &Path,
    args: &[String],
    env: &[(&str, &str)],
    host: &dyn EngineHost,
) -> Result<Ran, ExportError> {
    let mut argv = vec![binary.display().to_string()];
    argv.extend(args.iter().cloned());
    host.command(&argv);
    let (reader, writer) = std::io::pipe().map_err(|e| ExportError::Engine(e.to_string()))?;
    let mut cmd = Command::new(binary);
    cmd.args(args)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(
            writer
                .try_clone()
                .map_err(|e| ExportError::Engine(e.to_string()))?,
        )
        .stderr(writer);
    let mut child = cmd.spawn().map_err(|e| missing(engine, binary, &e))?;
    // The pipe's write ends live in `cmd` until it is dropped: drop it, or the read below
    // never sees the end.
    drop(cmd);
    let mut lines = Vec::new();
    let mut tail: VecDeque<String> = VecDeque::new();
    for line in BufReader::new(reader).lines() {
        let Ok(line) = line else { break };
        host.output(&line);
        if tail.len() == 30 {
            tail.pop_front();
        }
        tail.push_back(line.clone());
        lines.push(line);
    }
    let status = child
        .wait()
        .map_err(|e| ExportError::Engine(format!("waiting for {engine}: {e}")))?;
    if !status.success() {
        return Err(ExportError::EngineFailed {
            command: shlex::try_join(argv.iter().map(String::as_str))
                .unwrap_or_else(|_| argv.join(" ")),
            status: status.to_string(),
            output: tail.into_iter().collect::<Vec<_>>().join("\n"),
        });
    }
    Ok(Ran { lines })
}

fn missing(engine: &str, binary: &Path, e: &std::io::Error) -> ExportError {
    if e.kind() == std::io::ErrorKind::NotFound {
        let install = match engine {
            "docker" => "apt-get install docker.io (Debian/Ubuntu) or Docker's own packages",
            _ => "apt-get install buildah (Debian/Ubuntu) or dnf install buildah",
        };
        EngineRefusal::NotFound {
            engine: engine.to_owned(),
            path: binary.to_owned(),
            install: install.to_owned(),
        }
        .into()
    } else {
        ExportError::Engine(format!("running {}: {e}", binary.display()))
    }
}

/// A temporary auth file in docker's `config.json` format for `registry`, so that
/// credentials never appear on a command line (where `ps` and `-v` would show them).
pub(crate) fn auth_dir(
    registry: &str,
    creds: &(String, String),
) -> Result<tempfile::TempDir, ExportError> {
    use base64::Engine as _;
    let dir = hab_oci_fs::temp::dir_in(&std::env::temp_dir(), "auth")
        .map_err(|e| ExportError::Engine(e.to_string()))?;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", creds.0, creds.1));
    let text = serde_json::json!({ "auths": { registry: { "auth": auth } } }).to_string();
    let path = dir.path().join("config.json");
    std::fs::write(&path, text).map_err(crate::error::io_at(&path))?;
    Ok(dir)
}

/// `major.minor` of a version string like `20.10.24+dfsg1` or `1.28.2`.
pub(crate) fn major_minor(v: &str) -> (u32, u32) {
    let mut it = v
        .trim()
        .trim_start_matches('v')
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_steps_of_each_builder() {
        let lines = |s: &str| s.lines().map(str::to_owned).collect::<Vec<_>>();
        let legacy = "Step 2/5 : COPY layers/000/ /\n ---> Using cache\n ---> 4e72\nStep 3/5 : COPY extras/ /\n ---> 91\nStep 4/5 : ENV PATH=\"/bin\"\n ---> Using cache\n";
        assert_eq!(cached_copy_steps(&lines(legacy)), 1);
        let buildkit = "#4 [1/2] COPY layers/000/ /\n#4 CACHED\n\n#5 [2/2] COPY extras/ /\n#5 DONE 0.1s\n#6 exporting to image\n";
        assert_eq!(cached_copy_steps(&lines(buildkit)), 1);
        let buildah = "STEP 2/4: COPY layers/000/ /\n--> Using cache 1234\nSTEP 3/4: COPY extras/ /\n--> 5678\nSTEP 4/4: ENV A=b\n--> Using cache 9\n";
        assert_eq!(cached_copy_steps(&lines(buildah)), 1);
    }

    #[test]
    fn versions() {
        assert_eq!(major_minor("20.10.24+dfsg1"), (20, 10));
        assert_eq!(major_minor("1.28.2"), (1, 28));
        assert_eq!(major_minor("v27.1.0"), (27, 1));
        assert_eq!(major_minor("garbage"), (0, 0));
    }
}
