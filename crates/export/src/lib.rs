//! From Habitat packages to an image. Start at [`export`]: [`ExportSettings`] in, [`Events`]
//! out — the closure resolved by `depot`, an [`ImagePlan`] (a pure function of the closure
//! and options: which packages go in which layer, the extras layer, the config, names and
//! tags), the layers from their one owner ([`Layers`]: cache, prebuild, staging, regrouping,
//! fresh builds), or the docker/buildah [`engine`]; the push through the caller's
//! [`Publisher`]; the [`output`]s and the [`report`].
//!
//! The layer format (v1) is what makes digests reproducible: docs/layer-format-v1.md.
//! This crate never prints, never sees clap and never talks to a registry.

pub mod base;
pub mod base_source;
pub mod cache;
pub mod cache_source;
pub mod engine;
mod error;
pub mod extras;
pub mod layers;
pub mod naming;
mod native;
mod operation;
pub mod output;
pub mod plan;
pub mod platform;
mod prebuild;
pub mod record;
pub mod report;
mod rewrite;
pub mod sbom;
pub mod settings;

pub use error::ExportError;
pub use layers::{LayerKey, LayerReady, LayerSource, Layers, Member};
pub use naming::{Naming, NamingOptions};
pub use operation::{
    Events, Exported, NoEvents, PublishError, Publisher, PushSession, RemoteBlob, export,
};
pub use output::{Output, OutputSet};
pub use plan::{ImagePlan, Layering, PlanOptions, PlannedLayer, Supervisor};
pub use settings::{CacheSettings, CacheSources, Engine, ExportSettings, SupervisorPackages};

/// The layer format version: part of every layer's annotations and of cache keys.
pub const LAYER_FORMAT: &str = "1";

/// Rewrites a decoded payload (a tar stream) as the native engine does, into an uncompressed
/// layer tar, returned with the package's ident. The fuzz targets' entry point (`fuzz/`);
/// not an API.
#[doc(hidden)]
pub fn rewrite_for_fuzzing(tar: &[u8]) -> Result<(hart::PackageIdent, Vec<u8>), ExportError> {
    let mut w = oci_image::LayerWriter::new(Vec::new(), oci_image::Compression::None).map_err(
        |source| ExportError::Io {
            path: "fuzz".into(),
            source,
        },
    )?;
    let mut emitted = std::collections::HashSet::new();
    let ident = rewrite::write_tar(
        &mut w,
        tar,
        std::path::Path::new("fuzz.hart"),
        None,
        &mut emitted,
        &|_| {},
    )?;
    let (_, layer) = w.finish().map_err(|source| ExportError::Io {
        path: "fuzz".into(),
        source,
    })?;
    Ok((ident, layer))
}

/// Progress events from long work; the binary draws them, tests ignore them.
pub trait Progress: Sync {
    /// The plan is made: the image will have `count` layers (extras included).
    fn layers_planned(&self, _count: usize) {}
    /// A layer started: its index in the plan, a label, and the bytes it will process.
    fn layer_started(&self, _index: usize, _label: &str, _total: u64) {}
    /// `bytes` more of layer `index` were processed.
    fn layer_advanced(&self, _index: usize, _bytes: u64) {}
    fn layer_finished(&self, _index: usize, _digest: &str, _size: u64) {}
    /// A message about what happens next (writing an output, loading into docker, ...).
    fn step(&self, _message: &str) {}
}

/// A `Progress` that ignores everything.
pub struct NoProgress;
impl Progress for NoProgress {}
