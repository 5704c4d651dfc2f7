//! The export operation in process: `ExportSettings` built directly (no CLI), a generated
//! closure exported to an OCI layout with and without the layer cache, cold and warm, with
//! the same manifest digest every time, a report that lists every package with its hart's
//! checksum, and progress events for every layer.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use depot::{Depot, DepotSettings, Request};
use export::engine::EngineHost;
use export::{
    CacheSettings, Engine, Events, ExportSettings, Exported, Output, OutputSet, PlanOptions,
    Progress, export,
};
use hab_oci_testkit::{ClosureSpec, generate};
use oci_image::Compression;

/// Records the progress events of one export.
#[derive(Default)]
struct Recorder {
    planned: Mutex<Vec<usize>>,
    started: Mutex<Vec<(usize, String)>>,
    finished: Mutex<Vec<(usize, String)>>,
}

impl Progress for Recorder {
    fn layers_planned(&self, count: usize) {
        self.planned.lock().expect("lock").push(count);
    }
    fn layer_started(&self, index: usize, label: &str, _total: u64) {
        self.started
            .lock()
            .expect("lock")
            .push((index, label.to_owned()));
    }
    fn layer_finished(&self, index: usize, digest: &str, _size: u64) {
        self.finished
            .lock()
            .expect("lock")
            .push((index, digest.to_owned()));
    }
}

impl EngineHost for Recorder {}
impl Events for Recorder {}

/// A generated closure: harts in `src/artifacts`, keys in `src/keys` (given as key dirs).
struct Fixture {
    tmp: tempfile::TempDir,
    /// Hart checksum of every package, by ident.
    checksums: BTreeMap<String, String>,
}

impl Fixture {
    fn new(packages: usize) -> Fixture {
        let tmp = tempfile::tempdir().expect("temp dir");
        let spec = ClosureSpec {
            packages,
            total_size: 256 * 1024,
            block_size: 16 * 1024,
            seed: 11,
            ..ClosureSpec::default()
        };
        generate(&spec, &tmp.path().join("src"), None).expect("generate the closure");
        let mut f = Fixture {
            tmp,
            checksums: BTreeMap::new(),
        };
        let closure = Depot::open(&f.depot())
            .expect("open the depot")
            .resolve(&[Request::parse("gen/app").expect("request")])
            .expect("resolve");
        f.checksums = closure
            .packages
            .iter()
            .map(|p| (p.ident().to_string(), p.checksum().to_owned()))
            .collect();
        assert_eq!(f.checksums.len(), packages);
        f
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.tmp.path().join(sub)
    }

    fn depot(&self) -> DepotSettings {
        DepotSettings {
            sources: vec![self.path("src/artifacts")],
            key_dirs: vec![self.path("src/keys")],
            ..DepotSettings::default()
        }
    }

    /// Settings of an export of `gen/app` into `oci:OUT` (`out` under the temp dir).
    fn settings(&self, out: &str, cache: bool, max_layers: usize) -> ExportSettings {
        ExportSettings {
            packages: vec![Request::parse("gen/app").expect("request")],
            targets: Vec::new(),
            base_image: None,
            depot: self.depot(),
            supervisor: None,
            plan: PlanOptions {
                max_layers,
                source_date_epoch: Some(1_700_000_000),
                ..PlanOptions::default()
            },
            compression: Compression::Gzip,
            engine: Engine::Native {
                outputs: OutputSet {
                    outputs: vec![Output::Oci(self.path(out))],
                    force: false,
                },
            },
            cache: cache.then(|| CacheSettings {
                root: self.path("cache"),
                max_bytes: 1 << 30,
            }),
            cache_sources: Default::default(),
            push: false,
            sbom: Default::default(),
            report: Some(self.path(&format!("{out}.report.json"))),
            results_dir: self.path("results"),
        }
    }

    /// Runs one export and checks what every run must show: the report's layers (each
    /// package once with its checksum, the extras without packages), one start and one
    /// finish per layer with the report's digest, the layout and the results file.
    fn run(&self, out: &str, cache: bool, max_layers: usize) -> (Exported, Recorder) {
        let events = Recorder::default();
        let exported =
            export(&self.settings(out, cache, max_layers), &events, None).expect("export");
        let report = &exported.report;
        let layers = &report.layers;
        assert_eq!(layers.len(), exported.layers);
        assert!(layers.len() <= max_layers, "{} layers", layers.len());
        let (extras, packages) = layers.split_last().expect("an extras layer");
        assert!(extras.packages.is_empty() && extras.checksums.is_empty());
        let mut listed: BTreeMap<String, String> = BTreeMap::new();
        for l in packages {
            assert!(!l.packages.is_empty(), "a package layer without packages");
            assert_eq!(l.packages.len(), l.checksums.len());
            for (p, c) in l.packages.iter().zip(&l.checksums) {
                assert!(
                    listed.insert(p.clone(), c.clone()).is_none(),
                    "{p} is in two layers"
                );
            }
        }
        assert_eq!(
            listed, self.checksums,
            "packages and checksums of the report"
        );

        assert_eq!(*events.planned.lock().expect("lock"), vec![layers.len()]);
        let mut started: Vec<usize> = events
            .started
            .lock()
            .expect("lock")
            .iter()
            .map(|(i, _)| *i)
            .collect();
        started.sort_unstable();
        assert_eq!(started, (0..layers.len()).collect::<Vec<_>>(), "starts");
        let mut finished = events.finished.lock().expect("lock").clone();
        finished.sort();
        let want: Vec<(usize, String)> = layers
            .iter()
            .enumerate()
            .map(|(i, l)| (i, l.digest.clone()))
            .collect();
        assert_eq!(finished, want, "one finish per layer, with its digest");

        let index = std::fs::read_to_string(self.path(out).join("index.json")).expect("index");
        assert!(index.contains(&report.manifest_digest), "{index}");
        let manifest = self.path(out).join("blobs/sha256").join(
            report
                .manifest_digest
                .strip_prefix("sha256:")
                .expect("a sha256 digest"),
        );
        assert!(manifest.is_file(), "{}", manifest.display());
        let written: serde_json::Value = serde_json::from_slice(
            &std::fs::read(self.path(&format!("{out}.report.json"))).expect("report file"),
        )
        .expect("report json");
        assert_eq!(written["manifest_digest"], report.manifest_digest.as_str());
        let env = std::fs::read_to_string(self.path("results/last_container_export.env"))
            .expect("results env file");
        assert!(env.contains("name=gen/app"), "{env}");
        (exported, events)
    }
}

/// Labels of the package layers (not the extras) a run announced.
fn package_labels(events: &Recorder, package_layers: usize) -> Vec<String> {
    let mut started = events.started.lock().expect("lock").clone();
    started.sort();
    started
        .into_iter()
        .filter(|(i, _)| *i < package_layers)
        .map(|(_, label)| label)
        .collect()
}

/// Exports the same closure without a cache, with a cold cache, then warm, with budget
/// `max_layers`: the same image every time; the warm run takes every layer from the cache.
fn same_image_with_and_without_the_cache(packages: usize, max_layers: usize) {
    let f = Fixture::new(packages);
    let (plain, _) = f.run("plain", false, max_layers);
    let (cold, cold_events) = f.run("cold", true, max_layers);
    let (warm, warm_events) = f.run("warm", true, max_layers);
    let digest = &plain.report.manifest_digest;
    assert_eq!(&cold.report.manifest_digest, digest, "cold cache");
    assert_eq!(&warm.report.manifest_digest, digest, "warm cache");
    assert_eq!(plain.references, warm.references);
    assert!(plain.report.cache.is_none());
    let package_layers = plain.layers - 1;

    // Cold: every package was staged (small packages, uncompressed) while it was decoded
    // for its metadata; a layer of one package is compressed from it, a group replayed from
    // its members'. Warm: every package layer is a hit, nothing else.
    let cold_stats = cold.report.cache.as_ref().expect("cache stats");
    assert_eq!(cold_stats.prebuilt, packages as u64, "{cold_stats:?}");
    let cold_labels = package_labels(&cold_events, package_layers);
    let groups = cold_labels.iter().filter(|l| l.contains(" + ")).count();
    assert_eq!(
        (cold_stats.staged as usize, cold_stats.regrouped as usize),
        (package_layers - groups, groups),
        "{cold_stats:?}"
    );
    assert_eq!(groups > 0, package_layers < packages, "{cold_labels:?}");
    let warm_stats = warm.report.cache.as_ref().expect("cache stats");
    assert_eq!(warm_stats.hits, package_layers as u64, "{warm_stats:?}");
    assert_eq!(
        (
            warm_stats.misses,
            warm_stats.prebuilt,
            warm_stats.staged,
            warm_stats.regrouped,
            warm_stats.corrupt
        ),
        (0, 0, 0, 0, 0),
        "{warm_stats:?}"
    );
    for label in package_labels(&warm_events, package_layers) {
        assert!(label.ends_with(" (cached)"), "warm: {label}");
    }
}

#[test]
fn one_package_a_layer_with_and_without_the_cache() {
    same_image_with_and_without_the_cache(8, 100);
}

#[test]
fn grouped_layers_with_and_without_the_cache() {
    same_image_with_and_without_the_cache(12, 6);
}

#[test]
fn an_existing_output_is_replaced_with_the_same_image() {
    let f = Fixture::new(4);
    let (first, _) = f.run("out", false, 100);
    let (second, _) = f.run("out", true, 100);
    assert_eq!(first.report.manifest_digest, second.report.manifest_digest);
    assert!(f.path("out/oci-layout").is_file());
}
