//! The `--report` JSON and Habitat's `results/last_container_export.env`.

use std::path::Path;

use oci_image::{BuiltImage, BuiltIndex, LayerDescriptor};
use serde::Serialize;

use crate::ExportError;
use crate::engine::EngineReport;
use crate::error::io_at;
use crate::layers::{LayerReady, Member};
use crate::naming::Naming;

#[derive(Debug, Serialize)]
pub struct LayerReport {
    pub digest: String,
    pub diff_id: String,
    pub size: u64,
    pub media_type: String,
    pub packages: Vec<String>,
    pub checksums: Vec<String>,
    /// Where a package layer came from (native engine).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<crate::LayerSource>,
}

/// What one cache source gave (native engine).
#[derive(Debug, Clone, Default, Serialize)]
pub struct SourceReport {
    pub reference: String,
    /// The manifest read (for the export's platform); `None` when none could be.
    pub manifest_digest: Option<String>,
    /// Its package layers hab-oci could read (its format, compression and platform).
    pub layers: usize,
    /// Of those, the ones the push's repository holds or mounted (confirmed without bytes).
    pub confirmed: usize,
    /// Why some or all of it was not used.
    pub notes: Vec<String>,
}

impl LayerReport {
    fn of(l: &LayerDescriptor, members: &[Member]) -> LayerReport {
        LayerReport {
            digest: l.digests.digest.clone(),
            diff_id: l.digests.diff_id.clone(),
            size: l.digests.size,
            media_type: l.digests.media_type.to_owned(),
            packages: members.iter().map(|m| m.ident.to_string()).collect(),
            checksums: members.iter().map(|m| m.checksum.clone()).collect(),
            source: None,
        }
    }
}

/// One platform's image of a multi-platform export.
#[derive(Debug, Serialize)]
pub struct PlatformReport {
    /// `linux/arm64/v8`.
    pub platform: String,
    pub manifest_digest: String,
    pub config_digest: String,
    pub layers: Vec<LayerReport>,
}

/// The base image under one platform's image.
#[derive(Debug, Serialize)]
pub struct BaseReport {
    /// As given.
    pub reference: String,
    /// What it resolved to (its index's digest when it is an index): the
    /// `org.opencontainers.image.base.digest` label.
    pub digest: String,
    pub manifest_digest: String,
    /// Its layers, bottom of the image.
    pub layers: usize,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub name: String,
    pub tags: Vec<String>,
    pub references: Vec<String>,
    /// The image's manifest; with several targets, the first target's (the tags point at
    /// `index_digest`, and `platforms` lists every image).
    pub manifest_digest: String,
    pub config_digest: String,
    /// The image index the tags point at, when the export made one image per target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index_digest: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<PlatformReport>,
    /// The base image (`--base-image`): one per platform, in the order of `platforms`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub base: Vec<BaseReport>,
    pub outputs: Vec<String>,
    /// The layers of the image (the first target's, with several).
    pub layers: Vec<LayerReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push: Option<PushReport>,
    /// What the layer cache did (native engine).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<crate::cache::CacheStats>,
    /// What the docker/buildah engine did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine: Option<EngineReport>,
    /// The cache sources read (native engine, push-only exports).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cache_sources: Vec<SourceReport>,
    /// The SBOMs made (native engine): where written, where attached.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sbom: Option<crate::sbom::SbomReport>,
}

/// What a push did (filled by the caller that pushed).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PushReport {
    pub references: Vec<String>,
    pub blobs_skipped: u64,
    pub blobs_mounted: u64,
    pub blobs_uploaded: u64,
    /// Of the blobs above, those handled while the image was still being built.
    pub blobs_early: u64,
    pub bytes_uploaded: u64,
    pub tags_written: u64,
    pub tags_unchanged: u64,
    /// HTTP requests of the push (registry and token service, handshake included).
    pub requests: u64,
}

impl Report {
    /// The report of a native build; `ready` holds the package layers' members (the
    /// layers of `image` beyond them, the extras, hold no package).
    pub fn new(
        image: &BuiltImage,
        ready: &[LayerReady],
        naming: &Naming,
        outputs: Vec<String>,
    ) -> Report {
        Report {
            name: naming.name.clone(),
            tags: naming.tags.clone(),
            references: naming.references(),
            manifest_digest: image.manifest_digest.clone(),
            config_digest: image.config_digest.clone(),
            index_digest: None,
            platforms: Vec::new(),
            base: Vec::new(),
            outputs,
            push: None,
            cache: None,
            engine: None,
            cache_sources: Vec::new(),
            sbom: None,
            layers: layer_reports(image, ready),
        }
    }

    /// A multi-platform export: the index and each platform's image (`ready[i]` holds
    /// the package layers of the index's `i`th image).
    pub fn set_index(&mut self, index: &BuiltIndex, ready: &[Vec<LayerReady>]) {
        self.index_digest = Some(index.digest.clone());
        self.platforms = index
            .images
            .iter()
            .zip(ready)
            .map(|((platform, image), ready)| PlatformReport {
                platform: platform.to_string(),
                manifest_digest: image.manifest_digest.clone(),
                config_digest: image.config_digest.clone(),
                layers: layer_reports(image, ready),
            })
            .collect();
    }
}

/// One report per layer of `image`: the base's (below the package layers), the package
/// layers (`ready`), then the extras.
fn layer_reports(image: &BuiltImage, ready: &[LayerReady]) -> Vec<LayerReport> {
    let base = image.layers.len().saturating_sub(ready.len() + 1);
    image
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            if i < base {
                let mut report = LayerReport::of(l, &[]);
                report.source = Some(crate::LayerSource::Base);
                return report;
            }
            let r = ready.get(i - base);
            let mut report = LayerReport::of(l, r.map_or(&[][..], |r| &r.members[..]));
            report.source = r.map(|r| r.source);
            report
        })
        .collect()
}

impl Report {
    /// The report of a docker/buildah build: the engine knows the image ID (its config
    /// digest); layer digests are the registry's business after a push.
    pub fn from_engine(naming: &Naming, outputs: Vec<String>, engine: EngineReport) -> Report {
        Report {
            name: naming.name.clone(),
            tags: naming.tags.clone(),
            references: naming.references(),
            manifest_digest: engine
                .pushed
                .first()
                .and_then(|r| r.rsplit_once('@'))
                .map(|(_, d)| d.to_owned())
                .unwrap_or_default(),
            config_digest: engine.image_id.clone(),
            index_digest: None,
            platforms: Vec::new(),
            base: Vec::new(),
            outputs,
            layers: Vec::new(),
            push: None,
            cache: None,
            engine: Some(engine),
            cache_sources: Vec::new(),
            sbom: None,
        }
    }
}

impl Report {
    /// An engine's image as hab-oci pushed it: its manifest, its layers (with `members[i]`,
    /// the packages of layer `i`, where known), what the push did.
    pub fn pushed_image(&mut self, image: &BuiltImage, members: &[Vec<Member>], push: PushReport) {
        self.manifest_digest.clone_from(&image.manifest_digest);
        self.config_digest.clone_from(&image.config_digest);
        self.layers = image
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| LayerReport::of(l, members.get(i).map_or(&[][..], Vec::as_slice)))
            .collect();
        self.push = Some(push);
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ExportError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io_at(dir))?;
    }
    hab_oci_fs::write(path, "report", bytes, hab_oci_fs::Persist::DURABLE).map_err(io_at(path))
}

pub fn write_report(path: &Path, report: &Report) -> Result<(), ExportError> {
    let mut bytes =
        serde_json::to_vec_pretty(report).map_err(|e| ExportError::Plan(e.to_string()))?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// Habitat's `results/last_container_export.env` (and its `last_docker_export.env` copy).
/// `id` is the short image ID, i.e. the first 12 hex digits of the config digest (which is
/// what docker and buildah call the image ID).
pub fn write_env_files(
    results: &Path,
    config_digest: &str,
    naming: &Naming,
) -> Result<(), ExportError> {
    let id = config_digest
        .trim_start_matches("sha256:")
        .chars()
        .take(12)
        .collect::<String>();
    let text = format!(
        "id={id}\nname={}\ntags={}\nname_tags={}\n",
        naming.name,
        naming.tags.join(","),
        naming.references().join(",")
    );
    write_atomic(&results.join("last_container_export.env"), text.as_bytes())?;
    write_atomic(&results.join("last_docker_export.env"), text.as_bytes())
}
