//! `export --engine docker|buildah`: engine options from the flags, the engine's checks
//! before any work, the build through `export::engine`, then the report and the references.

use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use depot::ResolvedClosure;
use export::ImagePlan;
use export::engine::{self, DockerBuilder, EngineHost, EngineKind, EngineOptions};
use export::naming::registry_of;

use crate::cli::ExportArgs;
use crate::printer::Printer;

/// Engine commands and output: command lines and every output line with `-v`; steps and
/// warnings as status lines.
struct Host<'a> {
    printer: &'a Printer,
}

impl EngineHost for Host<'_> {
    fn command(&self, argv: &[String]) {
        let line =
            shlex::try_join(argv.iter().map(String::as_str)).unwrap_or_else(|_| argv.join(" "));
        self.printer.verbose(&format!("$ {line}"));
    }
    fn output(&self, line: &str) {
        self.printer.verbose(&format!("  {line}"));
    }
    fn warning(&self, message: &str) {
        self.printer.status(&format!("warning: {message}"));
    }
    fn step(&self, message: &str) {
        self.printer.status(message);
    }
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

/// A stable context path per image name: engines key nothing on it, but a path that changes
/// every run is what made Habitat refuse buildah multi-layer builds; stable is simplest.
fn context_dir(name: &str) -> std::path::PathBuf {
    let safe: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    std::env::temp_dir().join("hab-oci-context").join(safe)
}

pub(crate) fn run(
    a: &ExportArgs,
    closure: &ResolvedClosure,
    plan: &ImagePlan,
    progress: &dyn export::Progress,
    printer: &Printer,
) -> Result<ExitCode> {
    let kind = match a.engine.as_str() {
        "docker" => EngineKind::Docker,
        _ => EngineKind::Buildah,
    };
    if kind == EngineKind::Docker && a.format.is_some() {
        anyhow::bail!("--format applies to --engine buildah (docker builds docker images)");
    }
    let registry = registry_of(&plan.naming.name);
    let credentials = match (&a.username, &a.password, a.password_stdin) {
        (Some(u), Some(p), _) => Some((u.clone(), p.clone())),
        (Some(u), None, true) => {
            let mut p = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut p)
                .context("reading the password from stdin")?;
            Some((u.clone(), p.trim_end_matches(['\n', '\r']).to_owned()))
        }
        _ => None,
    };
    let context_dir = context_dir(&plan.naming.name);
    let opts = EngineOptions {
        kind,
        binary: a.engine_binary.clone(),
        builder: a.docker_builder.as_deref().map(|b| match b {
            "buildkit" => DockerBuilder::BuildKit,
            _ => DockerBuilder::Legacy,
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
        buildah_format: a.format.clone().unwrap_or_else(|| "docker".into()),
        context_dir: context_dir.clone(),
        single_copy: a.single_layer,
        insecure_registry: oci_registry::is_loopback(&registry)
            || a.insecure_registry.contains(&registry),
        push: a.push_image,
        credentials,
        registry,
        rm_image: a.rm_image,
    };
    let host = Host { printer };
    let prepared = engine::prepare(&opts, &plan.naming, plan.layers.len() > 1, &host)?;
    // One build per context path at a time: a second export of the same image waits.
    std::fs::create_dir_all(context_dir.parent().unwrap_or(&context_dir))
        .with_context(|| format!("creating {}", context_dir.display()))?;
    let lock_path = context_dir.with_extension("lock");
    let lock = std::fs::File::create(&lock_path)
        .with_context(|| format!("creating {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("locking {}", lock_path.display()))?;
    // Ours now (another run of the same image waits on the lock): an interruption
    // removes it.
    crate::interrupt::own(&context_dir);
    printer.status(&format!(
        "Building {} with {} ({} packages in {} layers + extras)",
        plan.naming.name,
        kind.name(),
        closure.packages.len(),
        plan.layers.len()
    ));
    let report = engine::build(&prepared, closure, plan, progress, &host)?;
    drop(lock);
    if report.cached_steps > 0 || !report.cache_from.is_empty() {
        printer.status(&format!(
            "{} of {} COPY steps came from the build cache (cache sources: {})",
            report.cached_steps.min(report.copy_steps),
            report.copy_steps,
            if report.cache_from.is_empty() {
                "local only".to_owned()
            } else {
                report.cache_from.join(", ")
            }
        ));
    }
    let output = match kind {
        EngineKind::Docker => "docker-daemon",
        EngineKind::Buildah => "buildah",
    };
    let pushed = report.pushed.clone();
    let image_id = report.image_id.clone();
    let full = export::report::Report::from_engine(&plan.naming, vec![output.into()], report);
    if let Some(path) = &a.report {
        export::report::write_report(path, &full)?;
    }
    export::report::write_env_files(std::path::Path::new("results"), &image_id, &plan.naming)?;
    if a.json {
        printer.out(&serde_json::to_string_pretty(&full)?)?;
    } else if !pushed.is_empty() {
        for r in &pushed {
            printer.out(r)?;
        }
    } else {
        for r in plan.naming.references() {
            printer.out(&r)?;
        }
    }
    printer.status(&format!("Exported {} ({})", plan.naming.name, image_id));
    Ok(ExitCode::SUCCESS)
}
