//! `docker build` from the context: builder choice (legacy or BuildKit), cache sources
//! (pulled first for the legacy builder, which only uses local images), inline cache,
//! then `docker push` as Habitat does when the engine pushes.

use std::path::PathBuf;
use std::process::Command;

use super::context::Context;
use super::{
    DockerBuilder, EngineHost, EngineOptions, EngineRefusal, EngineReport, Prepared, major_minor,
    missing, run, tag_args,
};
use crate::ExportError;
use crate::naming::Naming;

const LEGACY_REPRODUCIBLE: &str = "package layers: yes, without any cache (legacy builder, context with fixed mtimes: the same package gives the same layer on any machine)";
const BUILDKIT_REPRODUCIBLE: &str = "package layers: only through a cache source (this BuildKit stamps directories with the build time, so a build without cache makes new layers)";

fn answer(
    binary: &PathBuf,
    args: &[&str],
    host: &dyn EngineHost,
) -> Result<std::process::Output, std::io::Error> {
    let mut argv = vec![binary.display().to_string()];
    argv.extend(args.iter().map(|a| (*a).to_owned()));
    host.command(&argv);
    Command::new(binary)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
}

pub(super) fn prepare(
    opts: &EngineOptions,
    naming: &Naming,
    multi_layer: bool,
    host: &dyn EngineHost,
) -> Result<Prepared, ExportError> {
    let binary = opts
        .binary
        .clone()
        .unwrap_or_else(|| PathBuf::from("docker"));
    let out = answer(
        &binary,
        &[
            "version",
            "--format",
            "{{.Client.Version}}|{{.Server.Version}}",
        ],
        host,
    )
    .map_err(|e| missing("docker", &binary, &e))?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let (client, server) = text.split_once('|').unwrap_or((text.as_str(), ""));
    if !out.status.success() || server.is_empty() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(EngineRefusal::NoDaemon(err.trim().to_owned()).into());
    }
    let modern_client = major_minor(client).0 >= 23;
    let buildx = modern_client
        && answer(&binary, &["buildx", "version"], host).is_ok_and(|o| o.status.success());
    let builder = match opts.builder {
        Some(b) => b,
        None => match std::env::var("DOCKER_BUILDKIT").ok().as_deref() {
            Some("0" | "false") => DockerBuilder::Legacy,
            Some("1" | "true") => DockerBuilder::BuildKit,
            _ if buildx => DockerBuilder::BuildKit,
            _ => DockerBuilder::Legacy,
        },
    };
    if builder == DockerBuilder::BuildKit && modern_client && !buildx {
        return Err(EngineRefusal::NoBuildx(client.to_owned()).into());
    }
    let inline_cache = match (opts.inline_cache, builder) {
        (Some(true), DockerBuilder::Legacy) => {
            return Err(EngineRefusal::InlineCacheLegacy.into());
        }
        (Some(v), _) => v,
        (None, b) => b == DockerBuilder::BuildKit && multi_layer,
    };
    if opts.cache_to.is_some() && !(builder == DockerBuilder::BuildKit && buildx) {
        return Err(EngineRefusal::CacheToNeedsBuildx(client.to_owned()).into());
    }
    let mut cache_from = opts.cache_from.clone();
    if cache_from.is_empty() && opts.auto_cache_from {
        cache_from.push(format!("{}:latest", naming.name));
    }
    Ok(Prepared::new(
        opts,
        naming,
        binary,
        format!("client {client}, daemon {server}"),
        Some(builder),
        cache_from,
        inline_cache,
    ))
}

/// The first line of an engine error, for a warning.
fn first_line(e: &ExportError) -> String {
    let s = e.to_string();
    let out = match &e {
        ExportError::EngineFailed { output, .. } => output.lines().last().unwrap_or("").to_owned(),
        _ => s.lines().next().unwrap_or("").to_owned(),
    };
    out.trim().to_owned()
}

pub(super) fn build(
    p: &Prepared,
    ctx: &Context,
    naming: &Naming,
    host: &dyn EngineHost,
) -> Result<EngineReport, ExportError> {
    let o = &p.opts;
    let builder = p.builder.unwrap_or(DockerBuilder::Legacy);
    let auth = p.auth()?;
    let global: Vec<String> = auth
        .as_ref()
        .map(|d| vec!["--config".to_owned(), d.path().display().to_string()])
        .unwrap_or_default();
    let env = [(
        "DOCKER_BUILDKIT",
        if builder == DockerBuilder::BuildKit {
            "1"
        } else {
            "0"
        },
    )];
    let with =
        |rest: &[String]| -> Vec<String> { global.iter().chain(rest.iter()).cloned().collect() };
    let (used, unavailable) = if builder == DockerBuilder::Legacy {
        pull_cache_sources(p, &global, &env, host)
    } else {
        (p.cache_from.clone(), Vec::new())
    };
    let iid_dir = hab_oci_fs::temp::dir_in(&std::env::temp_dir(), "iid")
        .map_err(|e| ExportError::Engine(e.to_string()))?;
    let iid = iid_dir.path().join("iid");
    let mut args: Vec<String> = vec![
        "build".into(),
        "-f".into(),
        ctx.dockerfile.display().to_string(),
        "--iidfile".into(),
        iid.display().to_string(),
    ];
    args.extend(tag_args(naming));
    if builder == DockerBuilder::BuildKit {
        args.push("--progress=plain".into());
    }
    for r in &used {
        args.extend(["--cache-from".into(), r.clone()]);
    }
    if p.inline_cache {
        args.extend(["--build-arg".into(), "BUILDKIT_INLINE_CACHE=1".into()]);
    }
    p.finish_build_args(&mut args, ctx);
    host.step(&format!(
        "Building with docker ({} builder, {} COPY steps)",
        builder.name(),
        ctx.copy_steps
    ));
    let built = p.run_build("docker", &with(&args), &env, &iid, host)?;
    let mut report = EngineReport {
        engine: "docker".into(),
        version: p.version.clone(),
        builder: Some(builder.name().into()),
        command: built.command,
        cache_from: used,
        cache_from_unavailable: unavailable,
        inline_cache: p.inline_cache,
        cache_to: None,
        copy_steps: ctx.copy_steps,
        cached_steps: built.cached,
        image_id: built.image_id,
        reproducible_layers: match builder {
            DockerBuilder::Legacy => LEGACY_REPRODUCIBLE.into(),
            DockerBuilder::BuildKit => BUILDKIT_REPRODUCIBLE.into(),
        },
        pushed: Vec::new(),
        removed: false,
    };
    if o.push {
        report.pushed = push(p, naming, &global, &env, host)?;
    }
    Ok(report)
}

/// The legacy builder only uses cache sources that are local images: each is pulled
/// first; one that cannot be is a warning. Returns (used, unavailable).
fn pull_cache_sources(
    p: &Prepared,
    global: &[String],
    env: &[(&str, &str)],
    host: &dyn EngineHost,
) -> (Vec<String>, Vec<String>) {
    let mut used = Vec::new();
    let mut unavailable = Vec::new();
    for r in &p.cache_from {
        host.step(&format!("Pulling cache source {r}"));
        let mut args = global.to_vec();
        args.extend(["pull".into(), r.clone()]);
        match run("docker", &p.binary, &args, env, host) {
            Ok(_) => used.push(r.clone()),
            Err(e) => {
                host.warning(&format!(
                    "cache source {r} could not be pulled ({}); building without it",
                    first_line(&e)
                ));
                unavailable.push(r.clone());
            }
        }
    }
    (used, unavailable)
}

/// `docker push` of every reference; returns each as `REF@DIGEST`.
fn push(
    p: &Prepared,
    naming: &Naming,
    global: &[String],
    env: &[(&str, &str)],
    host: &dyn EngineHost,
) -> Result<Vec<String>, ExportError> {
    let mut pushed = Vec::new();
    for r in naming.references() {
        host.step(&format!("Pushing {r}"));
        let mut args = global.to_vec();
        args.extend(["push".into(), r.clone()]);
        let ran = run("docker", &p.binary, &args, env, host)?;
        // "latest: digest: sha256:… size: 1234"
        let digest = ran.lines.iter().find_map(|l| {
            l.split_once("digest: ")
                .and_then(|(_, d)| d.split_whitespace().next())
                .map(str::to_owned)
        });
        pushed.push(format!("{r}@{}", digest.unwrap_or_default()));
    }
    Ok(pushed)
}
