//! `hab-oci export`: flags → settings (`settings::export`) → the library's export
//! operation, drawn with progress bars and pushed with `oci-registry` → the references on
//! stdout. Hints that name flags are added here, never in the libraries.

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Result;
use export::engine::EngineHost;
use export::{Engine, Events, ExportError, ExportSettings, Output, Progress};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cli::ExportArgs;
use crate::hints::Hinted;
use crate::printer::Printer;
use crate::settings;

/// Progress bars (one per layer being built, on stderr; hidden when quiet or not a
/// terminal), status lines, engine command lines with `-v`, and the interruption cleanup's
/// list of what this run owns.
pub(crate) struct Bars<'a> {
    pub(crate) multi: MultiProgress,
    bars: Mutex<HashMap<usize, ProgressBar>>,
    done: ProgressBar,
    printer: &'a Printer,
}

impl<'a> Bars<'a> {
    fn new(printer: &'a Printer) -> Bars<'a> {
        let multi = MultiProgress::with_draw_target(if printer.progress_enabled() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        let done = multi.add(ProgressBar::new(0));
        done.set_style(
            ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} layers  {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        done.set_prefix("Exporting");
        Bars {
            multi,
            bars: Mutex::new(HashMap::new()),
            done,
            printer,
        }
    }
}

impl Progress for Bars<'_> {
    fn layers_planned(&self, count: usize) {
        self.done.set_length(count as u64);
    }
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
    fn layer_finished(&self, index: usize, _digest: &str, _size: u64) {
        if let Some(b) = self.bars.lock().ok().and_then(|mut b| b.remove(&index)) {
            b.finish_and_clear();
        }
        self.done.inc(1);
    }
    fn step(&self, message: &str) {
        let _ = self.multi.println(format!("{message:>10}"));
    }
}

impl EngineHost for Bars<'_> {
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

/// A bar per download from Builder and a running total, in the export's bars.
#[derive(Debug)]
pub(crate) struct DownloadBars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
    /// Drawn from the first download on (an export from local packages shows none).
    total: Mutex<Option<ProgressBar>>,
}

impl DownloadBars {
    pub(crate) fn new(multi: &MultiProgress) -> DownloadBars {
        DownloadBars {
            multi: multi.clone(),
            bars: Mutex::new(HashMap::new()),
            total: Mutex::new(None),
        }
    }
}

impl depot::DownloadProgress for DownloadBars {
    fn started(&self, what: &str, total: Option<u64>) {
        if let Ok(mut t) = self.total.lock()
            && t.is_none()
        {
            let bar = self.multi.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("{prefix:>10} {pos} packages from Builder")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_prefix("Downloaded");
            *t = Some(bar);
        }
        let bar = self.multi.add(ProgressBar::new(total.unwrap_or(0)));
        bar.set_style(
            ProgressStyle::with_template(
                "  download {msg:40!} {bytes:>10}/{total_bytes:<10} {bytes_per_sec}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(what.to_owned());
        if let Ok(mut b) = self.bars.lock()
            && let Some(old) = b.insert(what.to_owned(), bar)
        {
            old.finish_and_clear();
        }
    }
    fn advanced(&self, what: &str, bytes: u64) {
        if let Some(b) = self.bars.lock().ok().and_then(|b| b.get(what).cloned()) {
            b.inc(bytes);
        }
    }
    fn finished(&self, what: &str, ok: bool) {
        if let Some(b) = self.bars.lock().ok().and_then(|mut b| b.remove(what)) {
            b.finish_and_clear();
        }
        if ok && let Some(t) = self.total.lock().ok().and_then(|t| t.clone()) {
            t.inc(1);
        }
    }
}

impl Events for Bars<'_> {
    fn downloads(&self) -> Option<std::sync::Arc<dyn depot::DownloadProgress>> {
        Some(std::sync::Arc::new(DownloadBars::new(&self.multi)))
    }
    fn status(&self, message: &str) {
        self.printer.status(message);
    }
    fn owns(&self, path: &Path) {
        crate::interrupt::own(path);
    }
}

/// Where an interrupted run may have left temporary names (see `interrupt`).
fn watch_temporaries(s: &ExportSettings) {
    let parent = |p: &Path| {
        p.parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_owned()
    };
    if let Engine::Native { outputs } = &s.engine {
        for p in outputs.outputs.iter().filter_map(Output::path) {
            crate::interrupt::watch(&parent(p));
        }
    }
    if let Some(r) = &s.report {
        crate::interrupt::watch(&parent(r));
    }
    crate::interrupt::watch(&s.results_dir);
    if let Some(c) = &s.cache {
        crate::interrupt::watch(export::cache::LayerCache::open(&c.root, c.max_bytes).dir());
    }
    if let Some(m) = &s.depot.metadata_cache {
        crate::interrupt::watch(m);
    }
    if let Some(b) = &s.depot.builder {
        crate::interrupt::watch(&b.artifact_cache);
        crate::interrupt::watch(&b.key_cache);
    }
}

/// The Supervisor packages' absence gets its own hint: where they come from.
fn with_hint(err: ExportError, s: &ExportSettings) -> anyhow::Error {
    let supervisor = s.base_packages();
    match err {
        ExportError::Depot(depot::DepotError::NotFound { ref ident, .. })
            if supervisor.iter().any(|b| b.starts_with(&ident.short())) =>
        {
            anyhow::Error::new(Hinted {
                error: err,
                hint: format!(
                    "the Supervisor packages come from the sources: `hab pkg download --download-directory DIR {}` then --source DIR; or pass --no-supervisor",
                    supervisor.join(" ")
                ),
            })
        }
        other => anyhow::Error::new(other),
    }
}

pub(crate) fn run(a: &ExportArgs, printer: &Printer) -> Result<ExitCode> {
    let (settings, push) = settings::export(a)?;
    watch_temporaries(&settings);
    let bars = Bars::new(printer);
    let publisher = push.map(|p| super::push::Publisher::new(p, &bars.multi, printer));
    let exported = export::export(
        &settings,
        &bars,
        publisher.as_ref().map(|p| p as &dyn export::Publisher),
    )
    .map_err(|e| with_hint(e, &settings))?;
    bars.done.finish();
    if a.json {
        printer.out(&serde_json::to_string_pretty(&exported.report)?)?;
    } else {
        for r in &exported.references {
            printer.out(r)?;
        }
    }
    printer.status(&match &exported.image_id {
        Some(id) => format!("Exported {} ({id})", exported.naming.name),
        None => format!(
            "Exported {} ({} layers)",
            exported.naming.name, exported.layers
        ),
    });
    Ok(ExitCode::SUCCESS)
}
