//! `buildah build --layers` from the context, with buildah's registry cache
//! (`--cache-from`/`--cache-to` take repositories), then `buildah push` when the engine
//! pushes.

use std::path::PathBuf;
use std::process::Command;

use super::context::Context;
use super::{
    EngineHost, EngineOptions, EngineRefusal, EngineReport, Prepared, major_minor, missing, run,
    tag_args,
};
use crate::ExportError;
use crate::naming::{Naming, parse_reference};

pub(super) fn prepare(
    opts: &EngineOptions,
    naming: &Naming,
    host: &dyn EngineHost,
) -> Result<Prepared, ExportError> {
    let binary = opts
        .binary
        .clone()
        .unwrap_or_else(|| PathBuf::from("buildah"));
    host.command(&[binary.display().to_string(), "--version".into()]);
    let out = Command::new(&binary)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| missing("buildah", &binary, &e))?;
    // "buildah version 1.28.2 (image-spec 1.0.2-dev, runtime-spec 1.0.2-dev)"
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text
        .split_whitespace()
        .nth(2)
        .unwrap_or_default()
        .to_owned();
    if !out.status.success() || version.is_empty() {
        return Err(ExportError::Engine(format!(
            "{} --version failed: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    if (!opts.cache_from.is_empty() || opts.cache_to.is_some()) && major_minor(&version) < (1, 27) {
        return Err(EngineRefusal::OldBuildah(version).into());
    }
    let _ = naming;
    Ok(Prepared::new(
        opts,
        naming,
        binary,
        version,
        None,
        opts.cache_from.clone(),
        false,
    ))
}

/// buildah's cache options take a repository: the reference without tag or digest.
fn repository(r: &str) -> String {
    parse_reference(r).map_or_else(|_| r.to_owned(), |(name, _, _)| name)
}

pub(super) fn build(
    p: &Prepared,
    ctx: &Context,
    naming: &Naming,
    host: &dyn EngineHost,
) -> Result<EngineReport, ExportError> {
    let o = &p.opts;
    let auth = p.auth()?;
    let authfile: Vec<String> = auth
        .as_ref()
        .map(|d| {
            vec![
                "--authfile".to_owned(),
                d.path().join("config.json").display().to_string(),
            ]
        })
        .unwrap_or_default();
    let tls: Vec<String> = if p.insecure {
        vec!["--tls-verify=false".into()]
    } else {
        Vec::new()
    };
    let iid_dir = hab_oci_fs::temp::dir_in(&std::env::temp_dir(), "iid")
        .map_err(|e| ExportError::Engine(e.to_string()))?;
    let iid = iid_dir.path().join("iid");
    let mut args: Vec<String> = vec![
        "build".into(),
        "--layers".into(),
        "-f".into(),
        ctx.dockerfile.display().to_string(),
        "--format".into(),
        o.buildah_format.clone(),
        "--iidfile".into(),
        iid.display().to_string(),
    ];
    args.extend(tag_args(naming));
    for r in &p.cache_from {
        args.extend(["--cache-from".into(), repository(r)]);
    }
    if let Some(r) = &o.cache_to {
        args.extend(["--cache-to".into(), repository(r)]);
    }
    if !p.cache_from.is_empty() || o.cache_to.is_some() {
        args.extend(tls.iter().cloned());
        args.extend(authfile.iter().cloned());
    }
    p.finish_build_args(&mut args, ctx);
    host.step(&format!(
        "Building with buildah {} ({} COPY steps)",
        p.version, ctx.copy_steps
    ));
    let built = p.run_build("buildah", &args, &[], &iid, host)?;
    let mut report = EngineReport {
        engine: "buildah".into(),
        version: p.version.clone(),
        builder: None,
        command: built.command,
        cache_from: p.cache_from.iter().map(|r| repository(r)).collect(),
        cache_from_unavailable: Vec::new(),
        inline_cache: false,
        cache_to: o.cache_to.as_deref().map(repository),
        copy_steps: ctx.copy_steps,
        cached_steps: built.cached,
        image_id: built.image_id,
        reproducible_layers:
            "package layers: only through the cache (cache sources and --cache-to)".into(),
        pushed: Vec::new(),
        removed: false,
    };
    if o.push {
        for r in naming.references() {
            host.step(&format!("Pushing {r}"));
            let digest_file = iid_dir.path().join("digest");
            let mut push = vec![
                "push".to_owned(),
                "--digestfile".into(),
                digest_file.display().to_string(),
            ];
            push.extend(tls.iter().cloned());
            push.extend(authfile.iter().cloned());
            push.extend([r.clone(), format!("docker://{r}")]);
            run("buildah", &p.binary, &push, &[], host)?;
            let digest = std::fs::read_to_string(&digest_file).unwrap_or_default();
            report.pushed.push(format!("{r}@{}", digest.trim()));
        }
    }
    Ok(report)
}
