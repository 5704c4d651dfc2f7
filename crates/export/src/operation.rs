//! The export operation: [`ExportSettings`] in, [`Events`] out — resolve and verify the
//! closure, plan the image, build it (natively through [`Layers`], or with docker/buildah),
//! push it through the caller's [`Publisher`], write the outputs and the report. The binary
//! calls [`export`]; tests can call it in process.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use depot::{Depot, Records, ResolvedClosure};
use oci_image::{Built, OciDir};
use rayon::prelude::*;

use crate::base_source::{Based, Bases};
use crate::cache::LayerCache;
use crate::cache_source::{self, Platform, RemoteImage, SourceLayer};
use crate::engine::{self, EngineHost, EngineOptions, EngineReport};
use crate::layers::{LayerKey, LayerReady, Layers};
use crate::naming::{self, Naming};
use crate::output::OutputSet;
use crate::plan::{ImagePlan, PlanOptions, Supervisor, primary_of};
use crate::report::{self, PushReport, Report, SourceReport};
use crate::settings::{Engine, ExportSettings};
use crate::{ExportError, Progress};

/// What an export tells its caller while it works: progress (bars), status and warnings,
/// engine command lines and output, and the temporary directories it owns.
pub trait Events: Progress + EngineHost {
    /// A status line: what happens next.
    fn status(&self, _message: &str) {}
    /// A directory this run owns until it ends; an interrupted run must remove it.
    fn owns(&self, _path: &Path) {}
    /// Where package downloads from Builder report their progress.
    fn downloads(&self) -> Option<Arc<dyn depot::DownloadProgress>> {
        None
    }
}

/// [`Events`] that go nowhere.
pub struct NoEvents;
impl Progress for NoEvents {}
impl EngineHost for NoEvents {}
impl Events for NoEvents {}

/// A push's failure, from whatever the [`Publisher`] talks to.
pub type PublishError = Box<dyn std::error::Error + Send + Sync>;

/// The registry side of an export's push (native, or an engine's image read out of it),
/// implemented by the caller (the binary uses `oci-registry`): this crate stays network-free.
pub trait Publisher: Sync {
    /// Connects to the registry of `naming` (handshake, credentials) before any layer is
    /// built, so that a wrong password fails before the work.
    fn start(&self, naming: &Naming) -> Result<Box<dyn PushSession>, PublishError>;
    /// A cache source: the manifest of `reference` (for `platform`, when it names an
    /// index) and its config, never a layer blob. `None` when the registry has no such
    /// image.
    fn read_image(
        &self,
        reference: &str,
        platform: &Platform,
    ) -> Result<Option<RemoteImage>, PublishError>;
    /// Attaches `artifact` (an SBOM) to the manifest `subject` in the repository of
    /// `naming` as an OCI 1.1 referrer, keeping the referrers-tag fallback up to date where
    /// the registry has no referrers API.
    fn attach(
        &self,
        _naming: &Naming,
        _subject: &crate::sbom::Subject,
        _artifact: &crate::sbom::Artifact,
    ) -> Result<crate::sbom::AttachReport, PublishError> {
        Err("this registry client cannot attach artifacts".into())
    }
    /// A base image (`--base-image` of a registry): the manifest of `reference` for
    /// `platform` and its config. The binary gives every export a publisher, pushing or
    /// not, for this.
    fn read_base(
        &self,
        _reference: &str,
        _platform: &Platform,
    ) -> Result<crate::base_source::BaseRead, PublishError> {
        Err("this registry client cannot read base images".into())
    }
    /// Streams the blob `digest` (`size` bytes) of `reference`'s repository into `dest`,
    /// checking its digest.
    fn fetch_blob(
        &self,
        _reference: &str,
        _digest: &str,
        _size: u64,
        _dest: &mut dyn std::io::Write,
    ) -> Result<u64, PublishError> {
        Err("this registry client cannot fetch blobs".into())
    }
}

/// A blob a cache source holds, to be confirmed in the push's repository.
#[derive(Debug, Clone)]
pub struct RemoteBlob {
    pub digest: String,
    pub size: u64,
    /// `registry/repository` of the cache source that holds it.
    pub repository: String,
}

/// One push in progress: it hears of each package layer as it is built, then finishes.
pub trait PushSession: Send + Sync {
    /// A package layer is in the store (not one an earlier push confirmed in this
    /// repository): it may be uploaded now.
    fn layer_ready(&self, layer: &LayerReady);
    /// Which of `blobs` the push's repository holds, made so without sending their bytes
    /// where the registry allows: found (a `HEAD` reporting the size given), or mounted
    /// from the cache source's repository when that is another repository of the same
    /// registry (never across registries). A confirmed blob is not uploaded by
    /// [`PushSession::finish`]; one not confirmed is built and uploaded instead.
    fn confirm(&self, blobs: &[RemoteBlob]) -> Vec<bool>;
    /// The remaining blobs, then the manifest and the tags.
    /// `built` is one image, or an index whose platform manifests are pushed before it.
    fn finish(
        self: Box<Self>,
        store: &OciDir,
        built: &Built,
        naming: &Naming,
    ) -> Result<PushReport, PublishError>;
}

/// What an export produced.
#[derive(Debug)]
pub struct Exported {
    pub report: Report,
    pub naming: Naming,
    /// What a user reads back: `NAME:TAG@DIGEST` per tag (or per pushed tag for the
    /// engines, or the bare references when an engine kept the image local).
    pub references: Vec<String>,
    /// Layers of the image (native engine), extras included.
    pub layers: usize,
    /// The engine's image ID (docker/buildah).
    pub image_id: Option<String>,
}

/// Runs an export. `publisher` is required when `settings.push` is set, unless an engine
/// pushes itself ([`EngineOptions::push`]).
pub fn export(
    settings: &ExportSettings,
    events: &dyn Events,
    publisher: Option<&dyn Publisher>,
) -> Result<Exported, ExportError> {
    let mut layers = Layers::new(
        match &settings.engine {
            Engine::Native { .. } => settings
                .cache
                .as_ref()
                .map(|c| Arc::new(LayerCache::open(&c.root, c.max_bytes))),
            Engine::External(_) => None,
        },
        settings.compression,
    );
    let targets = settings.targets();
    for t in &targets {
        crate::platform::required(t)?;
    }
    if targets.len() > 1 && !matches!(settings.engine, Engine::Native { .. }) {
        return Err(ExportError::Plan(
            "an image for several targets is built by the native engine only".into(),
        ));
    }
    // The base first: a base that cannot be read fails the export before any package work.
    let bases = crate::base_source::open(
        settings.base_image.as_deref(),
        &targets,
        layers.cache(),
        publisher,
        events,
    )?;
    let mut depots = targets
        .iter()
        .map(|t| open_depot(settings, t, &layers, events))
        .collect::<Result<Vec<_>, _>>()?;
    let base = settings
        .base_packages()
        .iter()
        .map(|p| depot::Request::parse(p))
        .collect::<Result<Vec<_>, _>>()?;
    events.status(&if targets.len() > 1 {
        format!(
            "Resolving and verifying packages for {}",
            targets
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else {
        "Resolving and verifying packages".to_owned()
    });
    let load = |depots: &[Depot]| {
        per_target(
            &targets,
            depots
                .iter()
                .map(|d| {
                    d.load_requested(&base, &settings.packages)
                        .map_err(ExportError::from)
                })
                .collect(),
        )
    };
    let requested = load(&depots)?;
    // The image is named after one target's primary package (see `lead_target`): on
    // Builder, each target's build has its own release, and the tags follow one.
    let lead = lead_target(&targets);
    // The push starts before the dependencies are loaded: a wrong password fails before
    // the work, and the cache sources (read through the same registry client) decide
    // which packages need their harts at all.
    let mut session = None;
    let mut sources = Vec::new();
    if let (Engine::Native { .. }, true) = (&settings.engine, settings.push) {
        let publisher = publisher.ok_or_else(|| {
            ExportError::Plan(
                "a push was asked for without a registry client (internal error)".into(),
            )
        })?;
        let primary = primary_of(&requested[lead].primary())
            .map(|i| requested[lead].primary()[i].ident.clone())
            .ok_or_else(|| ExportError::Plan("no package was requested".into()))?;
        let naming = naming::naming(&settings.plan.naming, &primary)?;
        let s = publisher
            .start(&naming)
            .map_err(|source| ExportError::Push {
                name: naming.name.clone(),
                source,
            })?;
        let mut remote = HashMap::new();
        for depot in &mut depots {
            let target = depot.target().clone();
            let found = cache_sources(settings, publisher, &*s, &naming, &target, &layers, events);
            if !settings.cache_sources.verify {
                depot.set_records(found.records);
            }
            remote.extend(found.layers);
            sources.extend(found.reports);
        }
        if settings.cache_sources.verify {
            layers.verify_against(remote);
        } else {
            layers.set_remote(remote);
        }
        session = Some(s);
    }
    let records_used = layers.reuses_any();
    let images = match complete_all(
        settings,
        &targets,
        &depots,
        requested,
        &layers,
        bases.as_ref(),
        events,
    ) {
        Ok(r) => r,
        // Records are believed, not proven: if the closure they give does not resolve
        // (a cycle, inconsistent TDEPS, a hart that is not what was recorded), the export
        // goes on as if there were no cache source.
        Err(e) if records_used => {
            let why = error_chain(&e);
            events.warning(&format!(
                "the cache sources' records do not resolve ({why}): going on without them"
            ));
            for s in &mut sources {
                s.notes
                    .push(format!("not used: its records do not resolve ({why})"));
            }
            for d in &mut depots {
                d.set_records(Records::default());
            }
            layers.set_remote(HashMap::new());
            let requested = load(&depots)?;
            complete_all(
                settings,
                &targets,
                &depots,
                requested,
                &layers,
                bases.as_ref(),
                events,
            )?
        }
        Err(e) => return Err(e),
    };
    let mut warned = Vec::new();
    for (closure, plan) in &images {
        warn_about_packages(closure, &mut warned);
        for w in &plan.warnings {
            if !warned.contains(w) {
                warned.push(w.clone());
            }
        }
    }
    for w in &warned {
        events.warning(w);
    }
    events.layers_planned(images.iter().map(|(_, p)| p.layers.len() + 1).sum());
    match &settings.engine {
        Engine::Native { outputs } => {
            let push = Started {
                session,
                sources,
                publisher,
            };
            native(settings, outputs, &images, lead, &layers, events, push)
        }
        Engine::External(opts) => {
            let [(closure, plan)] = images.as_slice() else {
                return Err(ExportError::Plan(
                    "an engine builds one platform (internal error)".into(),
                ));
            };
            external(settings, opts, closure, plan, events, publisher)
        }
    }
}

/// Which target names the image: x86_64-linux when it is among them, else the first (in
/// the fixed order). Not the host's: the same flags give the same tags on any runner.
fn lead_target(targets: &[hart::PackageTarget]) -> usize {
    targets
        .iter()
        .position(|t| t.as_str() == "x86_64-linux")
        .unwrap_or(0)
}

/// One result per target, or the failures: a single target's error as it is, several
/// targets' listed per target.
fn per_target<T>(
    targets: &[hart::PackageTarget],
    results: Vec<Result<T, ExportError>>,
) -> Result<Vec<T>, ExportError> {
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for (t, r) in targets.iter().zip(results) {
        match r {
            Ok(v) => ok.push(v),
            Err(e) => failed.push((t.to_string(), e)),
        }
    }
    if failed.is_empty() {
        Ok(ok)
    } else if targets.len() == 1 {
        Err(failed.remove(0).1)
    } else {
        Err(ExportError::Targets(failed))
    }
}

/// Each target's closure and plan (see [`plan_with_harts`]).
fn complete_all(
    settings: &ExportSettings,
    targets: &[hart::PackageTarget],
    depots: &[Depot],
    requested: Vec<depot::Requested>,
    layers: &Layers,
    bases: Option<&Bases>,
    events: &dyn Events,
) -> Result<Vec<(ResolvedClosure, ImagePlan)>, ExportError> {
    let results = depots
        .iter()
        .zip(requested)
        .enumerate()
        .map(|(i, (depot, r))| {
            let base = bases.map(|b| &b.per_target[i]);
            depot
                .complete(r)
                .map_err(ExportError::from)
                .and_then(|c| plan_with_harts(settings, depot, c, layers, base, events))
        })
        .collect();
    per_target(targets, results)
}

/// The depot of the export's sources for `target`; packages decoded for their metadata
/// have their layers built into the cache on the way.
fn open_depot(
    settings: &ExportSettings,
    target: &hart::PackageTarget,
    layers: &Layers,
    events: &dyn Events,
) -> Result<Depot, ExportError> {
    let mut depot_settings = settings.depot.clone();
    depot_settings.target = Some(target.clone());
    let mut depot = Depot::open(&depot_settings)?;
    if let Some(tap) = layers.prebuild_tap(!settings.per_package_layers()) {
        depot = depot.with_tap(tap);
    }
    if let Some(d) = events.downloads() {
        depot = depot.with_downloads(d);
    }
    Ok(depot)
}

/// What the cache sources offer, confirmed in the push's repository.
#[derive(Default)]
struct Found {
    records: Records,
    layers: HashMap<LayerKey, SourceLayer>,
    reports: Vec<SourceReport>,
}

/// Reads the cache sources (manifest and config only), keeps the layers the push's
/// repository holds or could mount, and the package records they carry. Nothing here fails
/// the export: a source that cannot be used is a note, and its layers are built.
fn cache_sources(
    settings: &ExportSettings,
    publisher: &dyn Publisher,
    session: &dyn PushSession,
    naming: &Naming,
    target: &hart::PackageTarget,
    local: &Layers,
    events: &dyn Events,
) -> Found {
    let cs = &settings.cache_sources;
    let references = if !cs.references.is_empty() {
        cs.references.clone()
    } else if cs.auto {
        vec![format!("{}:latest", naming.name)]
    } else {
        return Found::default();
    };
    let local_outputs =
        matches!(&settings.engine, Engine::Native { outputs } if !outputs.outputs.is_empty());
    if local_outputs && !cs.verify {
        events.status(&format!(
            "Not reading cache sources ({}): local outputs need every layer's bytes, so every layer is built (from the layer cache where it has them)",
            references.join(", ")
        ));
        return Found::default();
    }
    let Some(platform) = crate::platform::of(target) else {
        events.warning(&format!(
            "cache sources are not read: target {target} has no image platform"
        ));
        return Found::default();
    };
    let mut parsed = Vec::new();
    let mut reports = Vec::new();
    for (index, r) in references.iter().enumerate() {
        let mut report = SourceReport {
            reference: r.clone(),
            ..SourceReport::default()
        };
        events.status(&format!(
            "Reading cache source {r} (its manifest and config, no layer)"
        ));
        match publisher.read_image(r, &platform) {
            Ok(None) => report.notes.push("it does not exist".into()),
            Ok(Some(image)) => {
                report.manifest_digest = Some(image.manifest_digest.clone());
                match cache_source::parse(&image, index, &platform, settings.compression) {
                    Ok(p) => {
                        report.layers = p.layers.len();
                        report.notes.extend(p.notes.iter().cloned());
                        parsed.push(p);
                    }
                    Err(problem) => report.notes.push(format!("not used: {problem}")),
                }
            }
            Err(e) => report
                .notes
                .push(format!("could not be read: {}", error_chain(&*e))),
        }
        for n in &report.notes {
            events.warning(&format!("cache source {r}: {n}"));
        }
        reports.push(report);
    }
    let mut layers = cache_source::by_key(parsed);
    if cs.verify {
        // Every layer is built and compared: nothing needs confirming.
        return Found {
            layers,
            reports,
            ..Found::default()
        };
    }
    // A layer this machine's layer cache pushed to this repository before is taken from
    // that cache without a request (see `LayerCache::trust_pushed_to`): a no-op re-export
    // costs no HEAD per layer.
    layers.retain(|_, l| !local.pushed_to(&l.members, &naming.name));
    let mut keys: Vec<LayerKey> = layers.keys().cloned().collect();
    keys.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    let blobs: Vec<RemoteBlob> = keys
        .iter()
        .map(|k| {
            let l = &layers[k];
            RemoteBlob {
                digest: l.digests.digest.clone(),
                size: l.digests.size,
                repository: l.repository.clone(),
            }
        })
        .collect();
    let confirmed = session.confirm(&blobs);
    let mut missing = 0;
    for (k, ok) in keys
        .iter()
        .zip(confirmed.iter().chain(std::iter::repeat(&false)))
    {
        if !ok {
            missing += 1;
            layers.remove(k);
        }
    }
    if missing > 0 {
        events.warning(&format!(
            "{missing} layers of the cache sources are not in {} and could not be mounted (deleted or garbage-collected?): they are built and pushed",
            naming.name
        ));
    }
    // In the sources' order (the first record of an ident or checksum wins).
    let mut ordered: Vec<&SourceLayer> = layers.values().collect();
    ordered.sort_by_key(|l| l.order);
    let mut records = Records::default();
    for l in &ordered {
        for r in &l.records {
            records.insert(&r.checksum, r.metadata());
        }
    }
    for (index, report) in reports.iter_mut().enumerate() {
        report.confirmed = ordered.iter().filter(|l| l.order.0 == index).count();
    }
    events.status(&format!(
        "Cache sources: {} of their package layers are in {} ({} packages recorded); a planned layer among them is neither built nor uploaded",
        layers.len(),
        naming.name,
        records.len()
    ));
    Found {
        records,
        layers,
        reports,
    }
}

/// The plan, once every package of a layer that must be built has its hart: a package a
/// record stood for whose layer the registry does not hold as planned (say, grouped
/// differently) is fetched now, and the plan made again from what it really says.
fn plan_with_harts(
    settings: &ExportSettings,
    depot: &Depot,
    mut closure: ResolvedClosure,
    layers: &Layers,
    base: Option<&Based>,
    events: &dyn Events,
) -> Result<(ResolvedClosure, ImagePlan), ExportError> {
    loop {
        let plan = plan(settings, &closure, base)?;
        let needed: Vec<usize> = (0..plan.layers.len())
            .filter(|&i| !layers.in_registry(&Layers::members(&closure, &plan, i)))
            .flat_map(|i| plan.layers[i].members.iter().copied())
            .filter(|&m| closure.packages[m].hart.is_none())
            .collect();
        if needed.is_empty() {
            return Ok((closure, plan));
        }
        events.status(&format!(
            "{} recorded packages are needed after all (their layer is not in the registry as planned): fetching them",
            needed.len()
        ));
        let fetched = needed
            .par_iter()
            .map(|&m| depot.materialize(&closure.packages[m]))
            .collect::<Result<Vec<_>, _>>()?;
        for (m, p) in needed.into_iter().zip(fetched) {
            let recorded = &closure.packages[m];
            if p.checksum != recorded.checksum {
                return Err(ExportError::Plan(format!(
                    "{}: its hart's checksum is {}, but a cache source recorded {}",
                    p.ident(),
                    p.checksum,
                    recorded.checksum
                )));
            }
            closure.packages[m] = p;
        }
    }
}

/// The plan of `closure`, on `base` when there is one.
fn plan(
    settings: &ExportSettings,
    closure: &ResolvedClosure,
    base: Option<&Based>,
) -> Result<ImagePlan, ExportError> {
    let supervisor = match &settings.supervisor {
        None => None,
        Some(s) => {
            let find = |name: &str| -> Result<hart::PackageIdent, ExportError> {
                let want = hart::PackageIdent::parse(name)?;
                closure
                    .packages
                    .iter()
                    .map(|p| p.ident())
                    .find(|i| want.satisfied_by(i))
                    .cloned()
                    .ok_or_else(|| ExportError::Plan(format!("{name} is not in the closure")))
            };
            Some(Supervisor {
                hab: find(&s.hab)?,
                sup: find(&s.sup)?,
                launcher: find(&s.launcher)?,
            })
        }
    };
    let mut opts = PlanOptions {
        supervisor,
        ..settings.plan.clone()
    };
    let Some(base) = base else {
        return ImagePlan::new(closure, &opts);
    };
    // The base's layers count toward Docker's depth limit: the packages get what is left.
    let base_layers = base.image.layers.len();
    let left = crate::plan::DOCKER_MAX_LAYERS.saturating_sub(base_layers);
    if left < 2 {
        return Err(ExportError::LayerBudget {
            max: opts.max_layers,
            problem: format!(
                "the base image has {base_layers} layers, leaving fewer than 2 of Docker's {} for the packages and the extras",
                crate::plan::DOCKER_MAX_LAYERS
            ),
        });
    }
    opts.max_layers = opts.max_layers.min(left);
    let mut plan = ImagePlan::new(closure, &opts)?;
    let warnings = crate::base::apply(
        &mut plan,
        base,
        settings.plan.user.is_some(),
        settings.plan.working_dir.is_some(),
    )?;
    plan.warnings = warnings;
    Ok(plan)
}

/// Adds the warnings about `closure`'s packages to `warned`, once each (the targets of a
/// multi-platform image share most idents).
fn warn_about_packages(closure: &ResolvedClosure, warned: &mut Vec<String>) {
    let mut warn = |w: String| {
        if !warned.contains(&w) {
            warned.push(w);
        }
    };
    for p in &closure.packages {
        if p.metadata.has_install_hook {
            warn(format!(
                "{} has an install hook; hab-oci does not run install hooks",
                p.ident()
            ));
        }
        // Kept, as `hab pkg install` and docker's COPY keep them: the origin signed them.
        // Said out loud because they matter for images that run as a non-root user.
        if !p.metadata.setuid.is_empty() {
            warn(format!(
                "{} has setuid/setgid files, kept as packaged: {}",
                p.ident(),
                p.metadata.setuid.join(", ")
            ));
        }
    }
}

/// A native push as started before the dependencies were loaded: its session and what the
/// cache sources gave.
struct Started<'a> {
    session: Option<Box<dyn PushSession>>,
    sources: Vec<SourceReport>,
    /// Attaches the SBOM after the push.
    publisher: Option<&'a dyn Publisher>,
}

/// The native engine: layers (pushed as they are built), one image per target (and an
/// index over them when there are several), outputs, report.
fn native(
    settings: &ExportSettings,
    outputs: &OutputSet,
    images: &[(ResolvedClosure, ImagePlan)],
    lead: usize,
    layers: &Layers,
    events: &dyn Events,
    push: Started<'_>,
) -> Result<Exported, ExportError> {
    let Started {
        session,
        sources,
        publisher,
    } = push;
    let naming = &images[lead].1.naming;
    for (closure, plan) in images {
        if plan.naming != *naming {
            let target = &closure.packages[plan.primary].metadata.target;
            events.warning(&format!(
                "{target}'s primary package is {}: the tags ({}) follow {}",
                closure.packages[plan.primary].ident(),
                naming.tags.join(", "),
                images[lead].0.packages[images[lead].1.primary].ident()
            ));
        }
    }
    let packages: usize = images.iter().map(|(c, _)| c.packages.len()).sum();
    let planned: usize = images.iter().map(|(_, p)| p.layers.len()).sum();
    events.status(&format!(
        "Building {} ({} packages in {} layers + extras{}, {})",
        naming.name,
        packages,
        planned,
        if images.len() > 1 {
            format!(", {} platforms", images.len())
        } else {
            String::new()
        },
        layers.compression().name()
    ));
    let staging = outputs.staging()?;
    let store = OciDir::create(staging.path())?;
    if settings.push && outputs.outputs.is_empty() {
        layers.trust_pushed_to(&naming.name);
    }
    let push_err = |source: PublishError| ExportError::Push {
        name: naming.name.clone(),
        source,
    };
    let mut built_images = Vec::new();
    let mut readies = Vec::new();
    for (closure, plan) in images {
        let platform = crate::platform::required(&closure.packages[plan.primary].metadata.target)?;
        if images.len() > 1 {
            events.status(&format!(
                "{platform}: {} packages in {} layers + extras",
                closure.packages.len(),
                plan.layers.len()
            ));
        }
        // Each package layer goes up as soon as it is built, unless an earlier push
        // confirmed it in this repository (then the final push finds it with one HEAD, or
        // not at all when the tags already point at this image) or it came from a cache
        // source.
        let known: Vec<bool> = (0..plan.layers.len())
            .map(|i| layers.pushed_to(&Layers::members(closure, plan, i), &naming.name))
            .collect();
        let on_ready = |l: &LayerReady| {
            if let Some(s) = &session
                && known.get(l.index) == Some(&false)
                && l.path.is_some()
            {
                s.layer_ready(l);
            }
        };
        if let Some(base) = &plan.base {
            place_base(base, &store, session.as_deref(), outputs, naming, events)?;
        }
        let built = layers.build(closure, plan, &store, events, &on_ready)?;
        if built.records_left_out {
            events.warning(&format!(
                "the package records of the {platform} image would make its manifest too large for registries: it is written without them, so it cannot serve as a cache source"
            ));
        }
        built_images.push((platform, built.image));
        readies.push(built.ready);
    }
    let differ = readies
        .iter()
        .flat_map(|r| layers.verify(r))
        .collect::<Vec<_>>();
    for w in &differ {
        events.warning(w);
    }
    if settings.cache_sources.verify && differ.is_empty() {
        events.status(&format!(
            "Verified against the cache sources: {} layers they hold equal the local builds",
            layers.verified()
        ));
    }
    // A cache over its bound is trimmed, never a reason to fail the export.
    if let Err(e) = layers.evict() {
        events.warning(&format!("trimming the layer cache: {}", error_chain(&e)));
    }
    let top = if built_images.len() == 1 {
        Built::Image(built_images.remove(0).1)
    } else {
        Built::Index(oci_image::build_index(built_images)?)
    };
    let push = match session {
        Some(s) => {
            let report = s.finish(&store, &top, naming).map_err(push_err)?;
            // Every blob is in the repository now: later push-only exports need not read them.
            for ready in &readies {
                layers.record_pushed(ready, &naming.name);
            }
            Some(report)
        }
        None => None,
    };
    let sbom = crate::sbom::produce(settings, images, &top, naming, events, publisher)?;
    outputs.write(staging, &store, &top, naming, events)?;
    let first = top.images()[0];
    let mut report = Report::new(
        first,
        &readies[0],
        naming,
        outputs.outputs.iter().map(ToString::to_string).collect(),
    );
    if let Built::Index(x) = &top {
        report.set_index(x, &readies);
    }
    report.base = images
        .iter()
        .filter_map(|(_, p)| p.base.as_ref())
        .map(|b| report::BaseReport {
            reference: b.reference.clone(),
            digest: b.digest.clone(),
            manifest_digest: b.manifest_digest.clone(),
            layers: b.layers.len(),
        })
        .collect();
    report.push = push;
    report.cache = layers.stats();
    report.cache_sources = sources;
    report.sbom = sbom;
    // Habitat's results file names the image `docker-daemon` holds: the host's platform.
    let (loaded, _) = top.for_platform(&oci_image::Platform::host());
    finish_report(settings, &report, &loaded.config_digest, naming)?;
    let digest = top.digest();
    let references = if naming.tags.is_empty() {
        vec![format!("{}@{digest}", naming.name)]
    } else {
        naming
            .references()
            .into_iter()
            .map(|r| format!("{r}@{digest}"))
            .collect()
    };
    Ok(Exported {
        report,
        naming: naming.clone(),
        references,
        layers: first.layers.len(),
        image_id: None,
    })
}

/// Makes the base's layers part of the image's blobs: confirmed in the push's repository
/// (found with a `HEAD`, or mounted from the base's repository of the same registry: no
/// byte sent), and linked into the store (from the layer cache or the base's own layout)
/// where a local output needs them or the push could not confirm them.
fn place_base(
    base: &crate::base::PlanBase,
    store: &OciDir,
    session: Option<&dyn PushSession>,
    outputs: &OutputSet,
    naming: &Naming,
    events: &dyn Events,
) -> Result<(), ExportError> {
    let confirmed = match session {
        Some(s) => {
            let blobs: Vec<RemoteBlob> = base
                .layers
                .iter()
                .map(|(d, _)| RemoteBlob {
                    digest: d.digests.digest.clone(),
                    size: d.digests.size,
                    repository: base
                        .repository
                        .clone()
                        .unwrap_or_else(|| naming.name.clone()),
                })
                .collect();
            let confirmed = s.confirm(&blobs);
            let n = confirmed.iter().filter(|c| **c).count();
            events.status(&format!(
                "Base image {}: {n} of its {} layers are in {} (found or mounted, not uploaded)",
                base.reference,
                blobs.len(),
                naming.name
            ));
            confirmed
        }
        None => Vec::new(),
    };
    for (i, (d, path)) in base.layers.iter().enumerate() {
        let needed = !outputs.outputs.is_empty() || !confirmed.get(i).copied().unwrap_or(false);
        let dest = store.blob_path(&d.digests.digest)?;
        if !needed || dest.exists() {
            continue;
        }
        if std::fs::hard_link(path, &dest).is_err() {
            // Through a temporary name: a blob path never holds partial content.
            let mut w = store.blob_writer()?;
            let mut f = std::fs::File::open(path).map_err(crate::error::io_at(path))?;
            std::io::copy(&mut f, &mut w).map_err(crate::error::io_at(path))?;
            w.commit(&d.digests.digest)?;
        }
    }
    Ok(())
}

/// docker or buildah: the same plan built from a context by the engine's own command, then
/// pushed by hab-oci from the engine's saved image (or by the engine, `opts.push`).
fn external(
    settings: &ExportSettings,
    opts: &EngineOptions,
    closure: &ResolvedClosure,
    plan: &ImagePlan,
    events: &dyn Events,
    publisher: Option<&dyn Publisher>,
) -> Result<Exported, ExportError> {
    let naming = &plan.naming;
    let prepared = engine::prepare(opts, naming, plan.layers.len() > 1, events)?;
    // As for the native engine, the push session starts before the build: a wrong password
    // fails before the work.
    let session = match (settings.push && !opts.push, publisher) {
        (false, _) => None,
        (true, Some(p)) => Some(p.start(naming).map_err(|source| ExportError::Push {
            name: naming.name.clone(),
            source,
        })?),
        (true, None) => {
            return Err(ExportError::Plan(
                "a push was asked for without a registry client (internal error)".into(),
            ));
        }
    };
    let context_dir = prepared.context_dir.clone();
    // One build per context path at a time: a second export of the same image waits.
    let io = |p: &Path| {
        let p = p.to_owned();
        move |source| ExportError::Io { path: p, source }
    };
    let parent = context_dir.parent().unwrap_or(&context_dir);
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let lock_path = context_dir.with_extension("lock");
    let lock = std::fs::File::create(&lock_path).map_err(io(&lock_path))?;
    lock.lock().map_err(io(&lock_path))?;
    // Ours now (another run of the same image waits on the lock): an interruption removes it.
    events.owns(&context_dir);
    events.status(&format!(
        "Building {} with {} ({} packages in {} layers + extras)",
        naming.name,
        opts.kind.name(),
        closure.packages.len(),
        plan.layers.len()
    ));
    let mut engine_report = engine::build(&prepared, closure, plan, events, events)?;
    drop(lock);
    announce_cache_use(&engine_report, events);
    let pushed = match session {
        Some(s) => Some(engine::push_saved(
            &prepared,
            &engine_report.image_id,
            s,
            settings.compression,
            naming,
            events,
        )?),
        None => None,
    };
    if opts.rm_image {
        engine::remove_image(&prepared, naming, events)?;
        engine_report.removed = true;
    }
    let output = match opts.kind {
        engine::EngineKind::Docker => "docker-daemon",
        engine::EngineKind::Buildah => "buildah",
    };
    let image_id = engine_report.image_id.clone();
    let mut references = engine_report.pushed.clone();
    let mut report = Report::from_engine(naming, vec![output.to_owned()], engine_report);
    if let Some((image, push)) = pushed {
        // One image layer per planned layer, then the extras (unless one COPY made them all):
        // the report names each layer's packages as for a native image.
        let members: Vec<Vec<crate::Member>> =
            if image.layers.len() == plan.layers.len() + 1 && !opts.single_copy {
                (0..plan.layers.len())
                    .map(|i| Layers::members(closure, plan, i))
                    .collect()
            } else {
                Vec::new()
            };
        references.clone_from(&push.references);
        report.pushed_image(&image, &members, push);
    }
    finish_report(settings, &report, &image_id, naming)?;
    if references.is_empty() {
        references = naming.references();
    }
    Ok(Exported {
        report,
        naming: naming.clone(),
        references,
        layers: plan.layers.len() + 1,
        image_id: Some(image_id),
    })
}

fn announce_cache_use(r: &EngineReport, events: &dyn Events) {
    if r.cached_steps > 0 || !r.cache_from.is_empty() {
        events.status(&format!(
            "{} of {} COPY steps came from the build cache (cache sources: {})",
            r.cached_steps.min(r.copy_steps),
            r.copy_steps,
            if r.cache_from.is_empty() {
                "local only".to_owned()
            } else {
                r.cache_from.join(", ")
            }
        ));
    }
}

/// The `--report` file and Habitat's `results/*.env`.
fn finish_report(
    settings: &ExportSettings,
    report: &Report,
    image_id: &str,
    naming: &Naming,
) -> Result<(), ExportError> {
    if let Some(path) = &settings.report {
        report::write_report(path, report)?;
    }
    report::write_env_files(&settings.results_dir, image_id, naming)
}

/// An error and its causes as one line, for a warning.
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}
