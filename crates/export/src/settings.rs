//! [`ExportSettings`]: everything an export needs, typed and already validated. The binary
//! builds it from its flags and the environment (every flag-compatibility rule lives there,
//! in one function); tests build it directly and call [`crate::export`] in process.

use hart::PackageTarget;
use std::path::PathBuf;

use depot::{DepotSettings, Request};
use oci_image::Compression;

use crate::engine::EngineOptions;
use crate::output::OutputSet;
use crate::plan::PlanOptions;

/// The packages of the Habitat Supervisor an image runs under (as given: idents, fuzzy or
/// not). `core/busybox-static` and `core/cacerts` come with them, as in Habitat.
#[derive(Debug, Clone)]
pub struct SupervisorPackages {
    pub hab: String,
    pub sup: String,
    pub launcher: String,
}

impl SupervisorPackages {
    /// Every package the Supervisor brings, in the order they are resolved.
    pub fn all(&self) -> Vec<String> {
        vec![
            self.hab.clone(),
            self.sup.clone(),
            self.launcher.clone(),
            "core/busybox-static".to_owned(),
            "core/cacerts".to_owned(),
        ]
    }
}

/// Which engine builds the image, with what it needs.
#[derive(Debug, Clone)]
pub enum Engine {
    /// hab-oci's own build: reproducible layers into the outputs (no daemon).
    Native { outputs: OutputSet },
    /// `docker build` or `buildah build` from a context; the image stays in the engine's
    /// store (pushed by hab-oci from the engine's saved image, or by the engine itself with
    /// its `push`).
    External(EngineOptions),
}

/// hab-oci's own cache (layers and package metadata).
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// Its root (`$HAB_OCI_CACHE`, ...); layers go in `layers-v1/` below it.
    pub root: PathBuf,
    /// Bound of the layer cache; least recently used entries go first.
    pub max_bytes: u64,
}

/// Cache sources of the native engine (see [`crate::cache_source`]): images hab-oci
/// pushed earlier, whose layers a push-only export reuses without their bytes.
#[derive(Debug, Clone, Default)]
pub struct CacheSources {
    /// Image references, in order of preference.
    pub references: Vec<String>,
    /// Without `references`, the image's own `NAME:latest` in the push's registry.
    pub auto: bool,
    /// Build every layer anyway and compare each with the cache sources' record of it.
    pub verify: bool,
}

#[derive(Debug, Clone)]
pub struct ExportSettings {
    /// The packages asked for, in order (the first service is the primary one).
    pub packages: Vec<Request>,
    /// The depot's settings; its `target` is replaced by each of [`Self::targets`] in turn.
    pub depot: DepotSettings,
    /// The targets of a multi-platform image (one image per target, tied by an index);
    /// empty: one image, for `depot.target`.
    pub targets: Vec<PackageTarget>,
    /// The base image (`--base-image`: a registry reference, `oci:DIR[:TAG]`,
    /// `oci-archive:FILE` or `docker-archive:FILE`); native engine only.
    pub base_image: Option<String>,
    /// `None`: an image without the Supervisor (no `/init.sh`).
    pub supervisor: Option<SupervisorPackages>,
    /// The plan's options; its `supervisor` is filled in once the closure is resolved.
    pub plan: PlanOptions,
    pub compression: Compression,
    pub engine: Engine,
    /// The layer cache (native engine); `None`: every layer built from its hart.
    pub cache: Option<CacheSettings>,
    /// Cache sources (native engine, push-only exports).
    pub cache_sources: CacheSources,
    /// Push every tag to the registry of the image name: through the caller's
    /// [`crate::Publisher`], unless an engine pushes itself ([`EngineOptions::push`]).
    pub push: bool,
    /// The SBOM: its format, where to write it (attached to the image when pushed).
    pub sbom: crate::sbom::SbomSettings,
    /// Where to write the JSON report.
    pub report: Option<PathBuf>,
    /// Habitat's `results/` directory (`last_container_export.env`).
    pub results_dir: PathBuf,
}

impl ExportSettings {
    /// The Supervisor packages to resolve beside the requested ones (none without it).
    pub fn base_packages(&self) -> Vec<String> {
        self.supervisor
            .as_ref()
            .map(SupervisorPackages::all)
            .unwrap_or_default()
    }

    /// The targets to build for, without repeats, in a fixed order (so the same flags in
    /// any order give the same index): `targets`, else the depot's target.
    pub fn targets(&self) -> Vec<PackageTarget> {
        let mut targets = self.targets.clone();
        if targets.is_empty() {
            targets.push(
                self.depot
                    .target
                    .clone()
                    .unwrap_or_else(PackageTarget::host_linux),
            );
        }
        targets.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        targets.dedup();
        targets
    }

    /// Per-package layers (prebuilt while decoding) are worth building.
    pub(crate) fn per_package_layers(&self) -> bool {
        self.plan.layering == crate::Layering::PerPackage
    }
}
