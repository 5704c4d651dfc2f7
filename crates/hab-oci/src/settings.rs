//! Turns parsed arguments plus the environment into resolved settings for the libraries.
//! Every flag-compatibility rule of `export` lives in [`export`], each refusal naming its
//! flag: the libraries never see a flag name.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, anyhow, bail};
use depot::{DepotSettings, Request};
use export::engine::{DockerBuilder, EngineKind, EngineOptions};
use export::{
    CacheSettings, Engine, ExportSettings, Layering, NamingOptions, Output, OutputSet, PlanOptions,
    SupervisorPackages,
};
use hart::{KeyDirs, PackageTarget};
use oci_image::Compression;

use crate::cli::{
    CompressionArg, DockerBuilderArg, EngineArg, ExportArgs, FormatArg, KeysArgs, RegistryTypeArg,
    SourceArgs,
};

fn home_hab(sub: &str) -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".hab/cache").join(sub))
}

/// Habitat's cache directory for `sub` ("keys", "artifacts"): `$env_var` if set, else the
/// system one and the user's one (`hab` uses the first as root, the second otherwise).
fn habitat_cache(env_var: &str, sub: &str) -> Vec<PathBuf> {
    if let Some(p) = std::env::var_os(env_var) {
        return vec![PathBuf::from(p)];
    }
    let mut v = vec![PathBuf::from("/hab/cache").join(sub)];
    v.extend(home_hab(sub));
    v
}

/// Where `key generate` writes by default.
pub(crate) fn key_cache_for_writing() -> PathBuf {
    habitat_cache("HAB_CACHE_KEY_PATH", "keys")
        .into_iter()
        .next()
        .unwrap_or_else(|| PathBuf::from("/hab/cache/keys"))
}

pub(crate) fn key_dirs(args: &KeysArgs) -> KeyDirs {
    if args.keys.is_empty() {
        KeyDirs::new(habitat_cache("HAB_CACHE_KEY_PATH", "keys"))
    } else {
        KeyDirs::new(args.keys.clone())
    }
}

/// hab-oci's own cache (layers, package metadata): `$HAB_OCI_CACHE`, else
/// `$XDG_CACHE_HOME/hab-oci`, else `~/.cache/hab-oci`.
pub(crate) fn cache_root() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HAB_OCI_CACHE").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p).join("hab-oci"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/hab-oci"))
}

/// Package metadata records under the cache root. Bump the version when what `metadata()`
/// computes changes: old records would otherwise still answer (records that no longer
/// parse are rebuilt anyway).
pub(crate) fn metadata_dir(root: &std::path::Path) -> PathBuf {
    root.join("metadata-v3")
}

/// `--sbom` and `--sbom-output`: SBOMs are made by the native engine only.
fn sbom(a: &ExportArgs, native: bool) -> Result<export::sbom::SbomSettings> {
    use export::sbom::SbomFormat;
    let format = match a.sbom {
        crate::cli::SbomArg::Spdx => Some(SbomFormat::Spdx),
        crate::cli::SbomArg::CycloneDx => Some(SbomFormat::CycloneDx),
        crate::cli::SbomArg::None => None,
    };
    if a.sbom_output.is_some() && format.is_none() {
        bail!("--sbom-output needs an SBOM: drop --sbom none");
    }
    if a.sbom_output.is_some() && !native {
        bail!(
            "--sbom-output needs the native engine: docker and buildah images get no SBOM yet\nhint: drop --engine"
        );
    }
    Ok(export::sbom::SbomSettings {
        format: format.filter(|_| native),
        output: a.sbom_output.clone(),
    })
}

/// `use_cache`: keep package metadata in hab-oci's cache, so a package seen before is
/// verified but not decoded again.
pub(crate) fn depot(args: &SourceArgs, use_cache: bool) -> Result<DepotSettings> {
    // Any target hab knows (`resolve` lists Windows closures too); `export` checks that
    // its targets make images (`targets`).
    let target = match args.targets.as_slice() {
        [] => PackageTarget::parse(DEFAULT_TARGET)?,
        [t, ..] => known_target(t)?,
    };
    Ok(DepotSettings {
        sources: args.sources.clone(),
        artifact_caches: habitat_cache("HAB_CACHE_ARTIFACT_PATH", "artifacts"),
        key_dirs: key_dirs(&args.keys).dirs().to_vec(),
        target: Some(target),
        decode_threads: 1,
        metadata_cache: cache_root().filter(|_| use_cache).map(|r| metadata_dir(&r)),
        max_unpacked: args.max_unpacked_size,
        builder: builder(args)?,
    })
}

/// The target when none is given, as `hab` on a Linux x86_64 machine.
const DEFAULT_TARGET: &str = "x86_64-linux";

fn known_target(t: &str) -> Result<PackageTarget> {
    PackageTarget::parse(t.trim()).with_context(|| {
        format!(
            "--target {t}: not a Habitat target (known: {})",
            PackageTarget::known().join(", ")
        )
    })
}

/// A target of an image: one hab knows, with an image platform.
fn parse_target(t: &str) -> Result<PackageTarget> {
    let target = known_target(t)?;
    if export::platform::of(&target).is_none() {
        bail!(
            "--target {t}: this target makes no container images (x86_64-linux, aarch64-linux do)"
        );
    }
    Ok(target)
}

/// `export`'s targets: every --target and --platform, or none (the depot's default).
fn targets(a: &ExportArgs) -> Result<Vec<PackageTarget>> {
    let mut targets = a
        .source
        .targets
        .iter()
        .map(|t| parse_target(t))
        .collect::<Result<Vec<_>>>()?;
    for p in &a.platforms {
        targets.push(export::platform::target_of(p).with_context(|| {
            format!("--platform {p}: Habitat builds packages for linux/amd64 and linux/arm64 only")
        })?);
    }
    // One image per platform: two targets of one platform would give an index with two
    // entries a runtime cannot choose between.
    for (i, a) in targets.iter().enumerate() {
        for b in &targets[i + 1..] {
            if a != b && export::platform::of(a) == export::platform::of(b) {
                bail!(
                    "--target {a} and {b} make images of the same platform ({}): give one of them",
                    export::platform::of(a)
                        .map(|p| p.to_string())
                        .unwrap_or_default()
                );
            }
        }
    }
    Ok(targets)
}

/// Habitat's default Builder.
const DEFAULT_BLDR_URL: &str = "https://bldr.habitat.sh";

/// The Builder URL as the exporter finds it: the flag, `$HAB_BLDR_URL`, `$HAB_DEPOT_URL`.
fn configured_url(flag: Option<&str>) -> Option<String> {
    let env = |v: &str| std::env::var(v).ok().filter(|s| !s.trim().is_empty());
    flag.map(str::to_owned)
        .or_else(|| env("HAB_BLDR_URL"))
        .or_else(|| env("HAB_DEPOT_URL"))
}

/// Where Habitat writes `sub` ("artifacts", "keys"): `$env_var`, else `/hab/cache/SUB` as
/// root, else `~/.hab/cache/SUB`.
fn habitat_cache_for_writing(env_var: &str, sub: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env_var).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if rustix::process::geteuid().is_root() {
        return PathBuf::from("/hab/cache").join(sub);
    }
    home_hab(sub).unwrap_or_else(|| PathBuf::from("/hab/cache").join(sub))
}

/// Builder settings, when Builder is to be consulted: `--url` or `--base-pkgs-url` was
/// given, or no `--source` was (then the packages can only come from Builder and the caches,
/// as with `hab`, and `$HAB_BLDR_URL`/`$HAB_DEPOT_URL` apply). With `--source` and no URL
/// flag an export stays local, whatever the environment says. `--offline` keeps the
/// settings (the messages can say so) but no request is made.
fn builder(args: &SourceArgs) -> Result<Option<depot::BuilderSettings>> {
    let b = &args.builder;
    let asked = b.url.is_some() || b.base_pkgs_url.is_some();
    if !asked && !args.sources.is_empty() {
        return Ok(None);
    }
    let url = configured_url(b.url.as_deref()).unwrap_or_else(|| DEFAULT_BLDR_URL.to_owned());
    for (what, u) in [
        ("--url", Some(&url)),
        ("--base-pkgs-url", b.base_pkgs_url.as_ref()),
    ] {
        if let Some(u) = u {
            let ok = url::Url::parse(u).is_ok_and(|p| matches!(p.scheme(), "http" | "https"));
            if !ok {
                bail!("{what} '{u}' is not an http:// or https:// URL");
            }
        }
    }
    let mut s = depot::BuilderSettings::new(
        &url,
        &b.channel,
        habitat_cache_for_writing("HAB_CACHE_ARTIFACT_PATH", "artifacts"),
        habitat_cache_for_writing("HAB_CACHE_KEY_PATH", "keys"),
    );
    s.base_url = b.base_pkgs_url.clone().unwrap_or_else(|| url.clone());
    s.base_channel = b.base_pkgs_channel.clone();
    s.token = b.auth.clone().filter(|t| !t.is_empty());
    s.offline = b.offline;
    // `--keys` names the only keys to trust: none is fetched then.
    s.fetch_keys = args.keys.keys.is_empty();
    if let Some(secs) = std::env::var("HAB_CLIENT_SOCKET_TIMEOUT")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
    {
        s.timeout = std::time::Duration::from_secs(secs);
    }
    Ok(Some(s))
}

/// `SOURCE_DATE_EPOCH`, the reproducible-builds convention for "the time to use".
pub(crate) fn source_date_epoch() -> Result<Option<u64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v
            .trim()
            .parse::<u64>()
            .map(Some)
            .with_context(|| format!("SOURCE_DATE_EPOCH '{v}' is not a number of seconds")),
        Err(_) => Ok(None),
    }
}

/// The registry login given on the command line: `--username` with `--password`, or with
/// `--password-stdin` (read here, once, before any work; one trailing newline dropped).
pub(crate) fn login(
    username: Option<&str>,
    password: Option<&str>,
    password_stdin: bool,
) -> Result<Option<(String, String)>> {
    Ok(match (username, password, password_stdin) {
        (Some(u), Some(p), _) => Some((u.to_owned(), p.to_owned())),
        (Some(u), None, true) => {
            let mut p = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut p)
                .context("reading the password from stdin")?;
            Some((u.to_owned(), p.trim_end_matches(['\n', '\r']).to_owned()))
        }
        _ => None,
    })
}

/// Registry flags for the native push, kept until the image name is known.
#[derive(Debug, Clone)]
pub(crate) struct PushSettings {
    pub(crate) login: Option<(String, String)>,
    /// The registry `login` is for, when known before the push starts (from
    /// `--registry-url`): a base image there is read with it.
    pub(crate) login_registry: Option<String>,
    pub(crate) registry: oci_registry::RegistryOptions,
    pub(crate) mount_from: Vec<String>,
}

/// Flags of `hab pkg export container` we accept but do not implement yet: refused, never
/// ignored silently. Engine flags given to the native engine are refused the same way.
fn refuse_unsupported(a: &ExportArgs) -> Result<()> {
    if a.registry_type == RegistryTypeArg::Amazon {
        bail!(
            "--registry-type amazon is not supported yet: hab-oci does not make ECR's login from AWS credentials itself\nhint: pass it as a password: `aws ecr get-login-password --region REGION | hab-oci export --push-image --registry-url ACCOUNT.dkr.ecr.REGION.amazonaws.com --username AWS --password-stdin ...`"
        );
    }
    if a.engine == EngineArg::Native {
        let engine_only: [(bool, &str); 10] = [
            (a.format.is_some(), "--format"),
            (a.rm_image, "--rm-image"),
            (a.memory.is_some(), "--memory"),
            (a.cache_to.is_some(), "--cache-to"),
            (a.inline_cache, "--inline-cache"),
            (a.no_inline_cache, "--no-inline-cache"),
            (a.docker_builder.is_some(), "--docker-builder"),
            (!a.engine_arg.is_empty(), "--engine-arg"),
            (a.engine_binary.is_some(), "--engine-binary"),
            (a.engine_push, "--engine-push"),
        ];
        if let Some((_, flag)) = engine_only.iter().find(|(given, _)| *given) {
            bail!(
                "{flag} applies to --engine docker or buildah; the native engine needs no build cache (the same package always gives the same layer)"
            );
        }
        if !a.push_image && (!a.cache_from.is_empty() || a.verify_cache_source) {
            bail!(
                "--cache-from{} with the native engine needs --push-image: a cache source's layers are reused in the registry that holds them, without their bytes",
                if a.verify_cache_source {
                    " (and --verify-cache-source)"
                } else {
                    ""
                }
            );
        }
        for r in &a.cache_from {
            oci_image::reference::Reference::parse(r)
                .map_err(|e| anyhow::anyhow!("--cache-from '{r}': {}", e.problem))?;
        }
    } else if a.verify_cache_source {
        bail!(
            "--verify-cache-source applies to the native engine (docker and buildah check their own cache sources)"
        );
    } else if !a.outputs.is_empty() {
        bail!(
            "--output applies to the native engine: with --engine {} the image stays in the engine's store (add --push-image to push it)",
            engine_name(a.engine)
        );
    }
    if a.engine_push && !a.push_image {
        bail!("--engine-push chooses who pushes: it needs --push-image");
    }
    if a.engine == EngineArg::Buildah && a.inline_cache {
        bail!(
            "--inline-cache is BuildKit's: buildah has no inline cache; use --cache-to REPOSITORY (and --cache-from REPOSITORY on later builds)"
        );
    }
    if a.engine == EngineArg::Buildah && a.docker_builder.is_some() {
        bail!("--docker-builder applies to --engine docker only");
    }
    if a.engine == EngineArg::Docker && a.format.is_some() {
        bail!("--format applies to --engine buildah (docker builds docker images)");
    }
    Ok(())
}

fn engine_name(e: EngineArg) -> &'static str {
    match e {
        EngineArg::Native => "native",
        EngineArg::Docker => "docker",
        EngineArg::Buildah => "buildah",
    }
}

fn parse_kv(what: &str, items: &[String]) -> Result<Vec<(String, String)>> {
    items
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| anyhow!("{what} '{kv}' must be KEY=VALUE"))
        })
        .collect()
}

/// A JSON array of strings, else: with `split`, words split as a shell splits them
/// (quotes group, backslashes escape); without, the whole text as one word.
fn parse_words(what: &str, s: &str, split: bool) -> Result<Vec<String>> {
    if s.trim_start().starts_with('[') {
        return serde_json::from_str(s)
            .with_context(|| format!("{what} '{s}' is not a JSON array of strings"));
    }
    if !split {
        return Ok(vec![s.to_owned()]);
    }
    shlex::split(s).ok_or_else(|| anyhow!("{what} '{s}' has an unbalanced quote"))
}

fn docker_daemon_answers() -> bool {
    Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `--engine-arg`s after those of `$HAB_OCI_ENGINE_ARGS`, which is split as a shell would.
fn engine_args(a: &ExportArgs) -> Result<Vec<String>> {
    let mut args = Vec::new();
    if let Ok(env) = std::env::var("HAB_OCI_ENGINE_ARGS")
        && !env.trim().is_empty()
    {
        args = shlex::split(&env)
            .ok_or_else(|| anyhow!("HAB_OCI_ENGINE_ARGS has unbalanced quotes: {env}"))?;
    }
    args.extend(a.engine_arg.iter().cloned());
    Ok(args)
}

/// The docker/buildah engine's options from the flags.
fn engine_options(a: &ExportArgs, login: Option<(String, String)>) -> Result<EngineOptions> {
    Ok(EngineOptions {
        kind: if a.engine == EngineArg::Docker {
            EngineKind::Docker
        } else {
            EngineKind::Buildah
        },
        binary: a.engine_binary.clone(),
        builder: a.docker_builder.map(|b| match b {
            DockerBuilderArg::Buildkit => DockerBuilder::BuildKit,
            DockerBuilderArg::Legacy => DockerBuilder::Legacy,
        }),
        cache_from: a.cache_from.clone(),
        auto_cache_from: !a.no_auto_cache_from,
        inline_cache: if a.inline_cache {
            Some(true)
        } else if a.no_inline_cache {
            Some(false)
        } else {
            None
        },
        cache_to: a.cache_to.clone(),
        engine_args: engine_args(a)?,
        memory: a.memory.clone(),
        buildah_format: match a.format {
            Some(FormatArg::Oci) => "oci".into(),
            _ => "docker".into(),
        },
        single_copy: a.single_layer,
        insecure_registries: a.insecure_registry.clone(),
        push: a.push_image && a.engine_push,
        credentials: login,
        rm_image: a.rm_image,
    })
}

/// The image's layering, config, names and tags from the flags.
fn plan_options(a: &ExportArgs) -> Result<PlanOptions> {
    let env = parse_kv("--env", &a.env)?;
    let labels: BTreeMap<String, String> = parse_kv("--label", &a.labels)?.into_iter().collect();
    let entrypoint = a
        .entrypoint
        .as_deref()
        .map(|e| parse_words("--entrypoint", e, false))
        .transpose()?;
    let cmd = a
        .cmd
        .as_deref()
        .map(|c| parse_words("--cmd", c, true))
        .transpose()?;
    Ok(PlanOptions {
        layering: if a.single_layer {
            Layering::Single
        } else {
            Layering::PerPackage
        },
        max_layers: usize::from(a.max_layers),
        supervisor: None,
        entrypoint,
        cmd,
        env: env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        user: a.user.clone(),
        working_dir: a.workdir.clone(),
        labels,
        source_date_epoch: source_date_epoch()?,
        naming: NamingOptions {
            image_name: a.image_name.clone(),
            registry_url: a.registry_url.clone(),
            tag_latest: !a.no_tag_latest,
            tag_version: !a.no_tag_version,
            tag_version_release: !a.no_tag_version_release,
            tag_custom: a.tag_custom.clone(),
            channel: a.source.builder.channel.clone(),
        },
    })
}

/// `export`'s flags and environment as validated settings, every check before any package
/// work; plus the native push's registry settings.
pub(crate) fn export(a: &ExportArgs) -> Result<(ExportSettings, Option<PushSettings>)> {
    refuse_unsupported(a)?;
    for t in a.image_name.iter().chain(a.tag_custom.iter()) {
        export::naming::check_template(t)?;
    }
    let plan = plan_options(a)?;
    let compression = match a.compression {
        CompressionArg::Gzip => Compression::Gzip,
        CompressionArg::Zstd => Compression::Zstd,
        CompressionArg::None => Compression::None,
    };
    let packages = a
        .packages
        .iter()
        .map(|p| Request::parse(p))
        .collect::<Result<Vec<_>, _>>()?;
    let supervisor = (!a.no_supervisor).then(|| SupervisorPackages {
        hab: a.hab_pkg.clone(),
        sup: a.sup_pkg.clone(),
        launcher: a.launcher_pkg.clone(),
    });
    for p in supervisor.iter().flat_map(SupervisorPackages::all) {
        Request::parse(&p).with_context(|| format!("Supervisor package '{p}'"))?;
    }
    // Only read (stdin may be a terminal) when something will log in with it.
    let login = if a.push_image || a.engine != EngineArg::Native {
        login(
            a.username.as_deref(),
            a.password.as_deref(),
            a.password_stdin,
        )?
    } else {
        None
    };
    let engine = match a.engine {
        EngineArg::Native => {
            let mut outputs: Vec<Output> = a
                .outputs
                .iter()
                .map(|o| o.parse())
                .collect::<Result<_, _>>()?;
            if outputs.is_empty() && !a.push_image {
                if !docker_daemon_answers() {
                    bail!(
                        "no --output given and no Docker daemon answers\nhint: pass --output oci:DIR, --output docker-archive:FILE or --output oci-archive:FILE"
                    );
                }
                outputs.push(Output::DockerDaemon);
            }
            let outputs = OutputSet {
                outputs,
                force: a.force,
            };
            outputs.check()?;
            Engine::Native { outputs }
        }
        EngineArg::Docker | EngineArg::Buildah => {
            Engine::External(engine_options(a, login.clone())?)
        }
    };
    let native = matches!(engine, Engine::Native { .. });
    let cache = cache_root()
        .filter(|_| !a.no_cache && native)
        .map(|root| CacheSettings {
            root,
            max_bytes: a.cache_max_size,
        });
    let targets = targets(a)?;
    let mut depot = depot(&a.source, !a.no_cache)?;
    if let Some(t) = targets.first() {
        depot.target = Some(t.clone());
    }
    if !native && a.base_image.is_some() {
        bail!(
            "--base-image needs the native engine\nhint: with --engine docker|buildah, drop --base-image (their images start FROM scratch)"
        );
    }
    if let Some(b) = &a.base_image {
        oci_image::base::BaseSpec::parse(b).context("--base-image")?;
    }
    if !native && targets.len() > 1 {
        bail!(
            "several targets need the native engine: docker and buildah build one platform\nhint: drop --engine, or export once per --target"
        );
    }
    let settings = ExportSettings {
        packages,
        targets,
        base_image: a.base_image.clone(),
        depot,
        supervisor,
        plan,
        compression,
        engine,
        cache,
        cache_sources: export::CacheSources {
            references: if native {
                a.cache_from.clone()
            } else {
                Vec::new()
            },
            auto: native && !a.no_auto_cache_from,
            verify: a.verify_cache_source,
        },
        push: a.push_image,
        sbom: sbom(a, native)?,
        report: a.report.clone(),
        results_dir: PathBuf::from("results"),
    };
    // hab-oci's own push: native images, and engine images unless the engine pushes.
    // The registry client serves a registry base image too, pushing or not.
    let push =
        ((a.push_image && (native || !a.engine_push)) || a.base_image.is_some()).then(|| {
            PushSettings {
                login,
                login_registry: a.registry_url.as_deref().map(export::naming::registry_of),
                registry: oci_registry::RegistryOptions {
                    insecure: a.insecure_registry.clone(),
                    ca_certs: a.ca_cert.clone(),
                    jobs: usize::from(a.jobs),
                    chunk_size: a.push_chunk_size,
                    ..oci_registry::RegistryOptions::default()
                },
                // Cache sources in other repositories of the push's registry are mount sources too
                // (which also gives the push's token pull access to them).
                // So is a registry base image: its layers are mounted, not uploaded.
                mount_from: a
                    .mount_from
                    .iter()
                    .chain(&a.cache_from)
                    .chain(a.base_image.iter().filter(|b| {
                        matches!(
                            oci_image::base::BaseSpec::parse(b),
                            Ok(oci_image::base::BaseSpec::Registry(_))
                        )
                    }))
                    .map(|r| {
                        export::naming::parse_reference(r)
                            .map(|(name, _, _)| name)
                            .unwrap_or_else(|_| r.clone())
                    })
                    .collect(),
            }
        });
    Ok((settings, push))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmd_splits_like_a_shell_and_entrypoint_stays_whole() {
        let words = |s: &str| parse_words("--cmd", s, true).expect(s);
        assert_eq!(words(r#"sh -c "a b""#), ["sh", "-c", "a b"]);
        assert_eq!(words("/x  y"), ["/x", "y"]);
        assert_eq!(words(r"a\ b 'c d'"), ["a b", "c d"]);
        assert_eq!(words(r#"["/bin/x", "a b"]"#), ["/bin/x", "a b"]);
        assert!(parse_words("--cmd", r#"sh -c "a b"#, true).is_err());
        assert!(parse_words("--cmd", "[not json", true).is_err());
        assert_eq!(
            parse_words("--entrypoint", "/bin/x y", false).expect("one word"),
            ["/bin/x y"]
        );
    }

    #[test]
    fn key_values() {
        let kv = parse_kv("--env", &["A=1".into(), "B=x=y".into()]).expect("ok");
        assert_eq!(kv, [("A".into(), "1".into()), ("B".into(), "x=y".into())]);
        for bad in ["A", "=1"] {
            assert!(parse_kv("--env", &[bad.to_owned()]).is_err(), "{bad}");
        }
    }
}
