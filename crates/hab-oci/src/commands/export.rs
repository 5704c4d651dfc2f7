//! `hab-oci export`: resolve → plan → native build → outputs → report.

use std::collections::{BTreeMap, HashMap};
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use depot::{Depot, Request};
use export::cache::LayerCache;
use export::prebuild::PrebuildTap;
use export::{
    ImagePlan, Layering, NamingOptions, Output, OutputSet, PlanOptions, Progress, Supervisor,
};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use oci_image::{Compression, OciDir};

use crate::cli::ExportArgs;
use crate::commands::resolve::with_hint;
use crate::printer::Printer;
use crate::settings;

/// Flags of `hab pkg export container` we accept but do not implement yet: refuse, never
/// ignore silently. Engine flags given to the native engine are refused the same way.
fn refuse_unsupported(a: &ExportArgs) -> Result<()> {
    let unsupported: [(bool, &str); 5] = [
        (
            a.registry_type.as_deref().is_some_and(|t| t != "docker"),
            "--registry-type",
        ),
        (
            a.url.is_some(),
            "--url (Builder downloads; use --source with `hab pkg download` output)",
        ),
        (a.base_pkgs_url.is_some(), "--base-pkgs-url"),
        (a.base_pkgs_channel.is_some(), "--base-pkgs-channel"),
        (a.auth.is_some(), "--auth"),
    ];
    for (given, flag) in unsupported {
        if given {
            bail!("{flag} is not supported yet by hab-oci");
        }
    }
    if a.engine == "native" {
        let engine_only: [(bool, &str); 11] = [
            (a.format.is_some(), "--format"),
            (a.rm_image, "--rm-image"),
            (a.memory.is_some(), "--memory"),
            (!a.cache_from.is_empty(), "--cache-from"),
            (a.cache_to.is_some(), "--cache-to"),
            (a.inline_cache, "--inline-cache"),
            (a.no_inline_cache, "--no-inline-cache"),
            (a.docker_builder.is_some(), "--docker-builder"),
            (!a.engine_arg.is_empty(), "--engine-arg"),
            (a.engine_binary.is_some(), "--engine-binary"),
            (a.no_auto_cache_from, "--no-auto-cache-from"),
        ];
        for (given, flag) in engine_only {
            if given {
                bail!(
                    "{flag} applies to --engine docker or buildah; the native engine needs no build cache (the same package always gives the same layer)"
                );
            }
        }
    } else if !a.outputs.is_empty() {
        bail!(
            "--output applies to the native engine: with --engine {} the image stays in the engine's store (add --push-image to push it)",
            a.engine
        );
    }
    Ok(())
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

fn parse_words(what: &str, s: &str, split: bool) -> Result<Vec<String>> {
    if s.trim_start().starts_with('[') {
        return serde_json::from_str(s)
            .with_context(|| format!("{what} '{s}' is not a JSON array of strings"));
    }
    Ok(if split {
        s.split_whitespace().map(str::to_owned).collect()
    } else {
        vec![s.to_owned()]
    })
}

fn docker_daemon_answers() -> bool {
    Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Called with each finished layer (index, digest, size): the early push.
type OnLayer<'a> = Box<dyn Fn(usize, &str, u64) + Send + Sync + 'a>;

/// Progress bars: one per layer being built, on stderr; hidden when quiet or not a terminal.
struct Bars<'a> {
    multi: MultiProgress,
    bars: Mutex<HashMap<usize, ProgressBar>>,
    total_layers: usize,
    done: ProgressBar,
    on_layer: Option<OnLayer<'a>>,
}

impl Bars<'_> {
    fn new(printer: &Printer, total_layers: usize) -> Bars<'static> {
        let multi = MultiProgress::with_draw_target(if printer.progress_enabled() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        let done = multi.add(ProgressBar::new(total_layers as u64));
        done.set_style(
            ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} layers  {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        done.set_prefix("Exporting");
        Bars {
            multi,
            bars: Mutex::new(HashMap::new()),
            total_layers,
            done,
            on_layer: None,
        }
    }
}

impl Progress for Bars<'_> {
    fn layer_started(&self, index: usize, label: &str, total: u64) {
        let bar = self
            .multi
            .insert_before(&self.done, ProgressBar::new(total));
        bar.set_style(
            ProgressStyle::with_template(
                "  {msg:50!} {bytes:>10}/{total_bytes:<10} {bytes_per_sec}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(label.to_owned());
        bar.enable_steady_tick(Duration::from_millis(250));
        if let Ok(mut b) = self.bars.lock() {
            b.insert(index, bar);
        }
    }
    fn layer_advanced(&self, index: usize, bytes: u64) {
        if let Some(b) = self.bars.lock().ok().and_then(|b| b.get(&index).cloned()) {
            b.inc(bytes);
        }
    }
    fn layer_finished(&self, index: usize, digest: &str, size: u64) {
        if let Some(f) = &self.on_layer {
            f(index, digest, size);
        }
        if let Some(b) = self.bars.lock().ok().and_then(|mut b| b.remove(&index)) {
            b.finish_and_clear();
        }
        self.done.inc(1);
        if self.done.position() as usize == self.total_layers {
            self.done.finish();
        }
    }
    fn step(&self, message: &str) {
        let _ = self.multi.println(format!("{message:>10}"));
    }
}

pub(crate) fn run(a: &ExportArgs, printer: &Printer) -> Result<ExitCode> {
    refuse_unsupported(a)?;
    // Everything the user typed is checked before any package work.
    for t in a.image_name.iter().chain(a.tag_custom.iter()) {
        export::naming::check_template(t)?;
    }
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
    let compression = match a.compression.as_str() {
        "zstd" => Compression::Zstd,
        "none" => Compression::None,
        _ => Compression::Gzip,
    };
    let source_date_epoch = settings::source_date_epoch()?;
    let mut outputs: Vec<Output> = a
        .outputs
        .iter()
        .map(|o| o.parse())
        .collect::<Result<_, _>>()?;
    if outputs.is_empty() && !a.push_image && a.engine == "native" {
        if !docker_daemon_answers() {
            bail!(
                "no --output given and no Docker daemon answers\nhint: pass --output oci:DIR, --output docker-archive:FILE or --output oci-archive:FILE"
            );
        }
        outputs.push(Output::DockerDaemon);
    }
    let output_set = OutputSet {
        outputs,
        force: a.force,
    };
    output_set.check()?;
    // Where this run may leave temporary names if interrupted (see `interrupt`).
    let parent = |p: &std::path::Path| {
        p.parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."))
            .to_owned()
    };
    for o in &output_set.outputs {
        if let Some(p) = o.path() {
            crate::interrupt::watch(&parent(p));
        }
    }
    if let Some(r) = &a.report {
        crate::interrupt::watch(&parent(r));
    }
    crate::interrupt::watch(std::path::Path::new("results"));

    let requests = a
        .packages
        .iter()
        .map(|p| Request::parse(p))
        .collect::<Result<Vec<_>, _>>()?;
    let base_names: Vec<String> = if a.no_supervisor {
        Vec::new()
    } else {
        [&a.hab_pkg, &a.sup_pkg, &a.launcher_pkg]
            .into_iter()
            .cloned()
            .chain(["core/busybox-static".to_owned(), "core/cacerts".to_owned()])
            .collect()
    };
    let base = base_names
        .iter()
        .map(|p| Request::parse(p))
        .collect::<Result<Vec<_>, _>>()?;
    // The native engine's layer cache; packages decoded for their metadata have their
    // layers built into it on the way (one decode for both).
    let cache: Option<Arc<LayerCache>> = settings::cache_root()
        .filter(|_| !a.no_cache && a.engine == "native")
        .map(|root| Arc::new(LayerCache::open(&root, a.cache_max_size)));
    if let Some(c) = &cache {
        crate::interrupt::watch(c.dir());
    }
    let depot_settings = settings::depot(&a.source, !a.no_cache)?;
    if let Some(m) = &depot_settings.metadata_cache {
        crate::interrupt::watch(m);
    }
    let mut depot = Depot::open(&depot_settings).map_err(with_hint)?;
    // Per-package layers only: with --single-layer they would be built for nothing.
    if let Some(c) = cache.as_ref().filter(|_| !a.single_layer) {
        depot = depot.with_tap(Arc::new(PrebuildTap::new(c.clone(), compression)));
    }
    printer.status("Resolving and verifying packages");
    let closure = depot.resolve_with_base(&base, &requests).map_err(|e| {
        let supervisor_missing = matches!(&e, depot::DepotError::NotFound { ident, .. }
            if base_names.iter().any(|b| b.starts_with(&ident.short())));
        if supervisor_missing {
            anyhow!(
                "{e}\nhint: the Supervisor packages come from the sources: `hab pkg download --download-directory DIR {}` then --source DIR; or pass --no-supervisor",
                base_names.join(" ")
            )
        } else {
            with_hint(e)
        }
    })?;
    let supervisor = if a.no_supervisor {
        None
    } else {
        let find = |name: &str| -> Result<hart::PackageIdent> {
            let want = hart::PackageIdent::parse(name)?;
            closure
                .packages
                .iter()
                .map(|p| p.ident())
                .find(|i| want.satisfied_by(i))
                .cloned()
                .ok_or_else(|| anyhow!("{name} is not in the closure"))
        };
        Some(Supervisor {
            hab: find(&a.hab_pkg)?,
            sup: find(&a.sup_pkg)?,
            launcher: find(&a.launcher_pkg)?,
        })
    };
    let plan_opts = PlanOptions {
        layering: if a.single_layer {
            Layering::Single
        } else {
            Layering::PerPackage
        },
        max_layers: usize::from(a.max_layers),
        supervisor,
        entrypoint,
        cmd,
        env: env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        user: a.user.clone(),
        working_dir: a.workdir.clone(),
        labels,
        source_date_epoch,
        naming: NamingOptions {
            image_name: a.image_name.clone(),
            registry_url: a.registry_url.clone(),
            tag_latest: !a.no_tag_latest,
            tag_version: !a.no_tag_version,
            tag_version_release: !a.no_tag_version_release,
            tag_custom: a.tag_custom.clone(),
            channel: a.channel.clone(),
        },
    };
    let plan = ImagePlan::new(&closure, &plan_opts)?;
    for p in &closure.packages {
        if p.metadata.has_install_hook {
            printer.status(&format!(
                "warning: {} has an install hook; hab-oci does not run install hooks",
                p.ident()
            ));
        }
        // Kept, as `hab pkg install` and docker's COPY keep them: the origin signed them.
        // Said out loud because they matter for images that run as a non-root --user.
        if !p.metadata.setuid.is_empty() {
            printer.status(&format!(
                "warning: {} has setuid/setgid files, kept as packaged: {}",
                p.ident(),
                p.metadata.setuid.join(", ")
            ));
        }
    }
    if a.engine != "native" {
        let bars = Bars::new(printer, plan.layers.len() + 1);
        return super::engine::run(a, &closure, &plan, &bars, printer);
    }
    printer.status(&format!(
        "Building {} ({} packages in {} layers + extras, {})",
        plan.naming.name,
        closure.packages.len(),
        plan.layers.len(),
        compression.name()
    ));
    let staging = output_set.staging()?;
    let store = OciDir::create(staging.path())?;
    let mut bars = Bars::new(printer, plan.layers.len() + 1);
    if let Some(c) = &cache
        && a.push_image
        && output_set.outputs.is_empty()
    {
        c.trust_pushed_to(&plan.naming.name);
    }
    // The push starts with the build: each package layer goes up as soon as it is built,
    // unless an earlier push confirmed it in this repository (then the final push finds it
    // with one HEAD, or not at all when the tags already point at this image).
    let pusher = if a.push_image {
        Some(Arc::new(super::push::start(
            a,
            &plan.naming,
            &bars.multi,
            printer,
        )?))
    } else {
        None
    };
    if let Some(p) = pusher.clone() {
        let early: Vec<bool> = (0..plan.layers.len())
            .map(|i| {
                let members = export::plan::layer_members(&closure, &plan, i);
                let sums: Vec<&str> = members.iter().map(|p| p.hart.checksum()).collect();
                !cache.as_deref().is_some_and(|c| {
                    c.pushed_to(&LayerCache::key(&sums, compression), &plan.naming.name)
                })
            })
            .collect();
        let store = &store;
        bars.on_layer = Some(Box::new(move |index, digest, size| {
            if early.get(index) == Some(&true)
                && let Ok(path) = store.blob_path(digest)
            {
                p.offer(oci_registry::Blob {
                    digest: digest.to_owned(),
                    size,
                    path,
                });
            }
        }));
    }
    let image = export::native::build(
        &closure,
        &plan,
        &store,
        compression,
        cache.as_deref(),
        &bars,
    )?;
    bars.on_layer = None;
    if let Some(c) = &cache {
        // A cache over its bound is trimmed, never a reason to fail the export.
        if let Err(e) = c.evict() {
            printer.status(&format!("warning: trimming the layer cache: {e}"));
        }
    }
    let pushed = if let Some(pusher) = pusher {
        let pusher = Arc::into_inner(pusher).context("the early push is still referenced")?;
        let report = super::push::finish(pusher, a, &store, &image, &plan.naming, printer)?;
        if let Some(c) = &cache {
            // Every blob is in the repository now: later push-only exports need not read them.
            for l in &image.layers {
                if let Some(sums) = l.annotations.get(export::native::ANN_CHECKSUMS) {
                    let sums: Vec<&str> = sums.split(',').filter(|s| !s.is_empty()).collect();
                    if !sums.is_empty() {
                        c.record_pushed(&LayerCache::key(&sums, compression), &plan.naming.name);
                    }
                }
            }
        }
        Some(report)
    } else {
        None
    };
    output_set.write(staging, &store, &image, &plan.naming, &bars)?;
    let mut report = export::report::Report::new(
        &image,
        &plan.naming,
        output_set.outputs.iter().map(ToString::to_string).collect(),
    );
    report.push = pushed;
    report.cache = cache.as_deref().map(LayerCache::stats);
    if let Some(path) = &a.report {
        export::report::write_report(path, &report)?;
    }
    export::report::write_env_files(
        std::path::Path::new("results"),
        &image.config_digest,
        &plan.naming,
    )?;
    if a.json {
        printer.out(&serde_json::to_string_pretty(&report)?)?;
    } else if plan.naming.tags.is_empty() {
        printer.out(&format!("{}@{}", plan.naming.name, image.manifest_digest))?;
    } else {
        for r in plan.naming.references() {
            printer.out(&format!("{r}@{}", image.manifest_digest))?;
        }
    }
    printer.status(&format!(
        "Exported {} ({} layers)",
        plan.naming.name,
        image.layers.len()
    ));
    Ok(ExitCode::SUCCESS)
}
