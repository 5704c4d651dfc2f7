//! Image config and manifest, typed with `oci-spec` and serialized canonically.
//!
//! `oci-spec` keeps labels, annotations and exposed ports in `HashMap`s whose iteration order
//! changes per process, so `to_string` would give a different digest each run. We go through
//! `serde_json::Value` (sorted maps; `preserve_order` must stay off) and hash those bytes.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, DescriptorBuilder, Digest, HistoryBuilder,
    ImageConfigurationBuilder, ImageIndexBuilder, ImageManifestBuilder, MediaType, Os,
    PlatformBuilder, RootFsBuilder,
};
use serde::Serialize;

use crate::layer::{LayerDigests, sha256_digest};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("building the image {what}: {detail}")]
    Spec { what: &'static str, detail: String },
    #[error("serializing JSON")]
    Json(#[from] serde_json::Error),
}

fn spec_err(what: &'static str) -> impl Fn(oci_spec::OciSpecError) -> ImageError {
    move |e| ImageError::Spec {
        what,
        detail: e.to_string(),
    }
}

/// Serializes `value` canonically: object keys sorted, no insignificant whitespace.
pub fn canonical_json<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    let v = serde_json::to_value(value)?;
    serde_json::to_vec(&v)
}

/// One history entry per layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    pub created_by: String,
    pub comment: Option<String>,
}

/// The platform an image is for, as OCI names it (`linux/arm64/v8`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Platform {
    pub os: String,
    /// OCI architecture, e.g. `amd64`.
    pub architecture: String,
    /// The CPU variant, e.g. `v8` for `arm64`.
    pub variant: Option<String>,
}

impl Platform {
    /// The platform of the machine we run on, for the outputs that hold one image
    /// (`docker load` runs images of the host's platform).
    pub fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            other => (other, None),
        };
        Platform {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: variant.map(str::to_owned),
        }
    }

    /// Same OS and architecture, and the variant when both name one.
    pub fn matches(&self, other: &Platform) -> bool {
        self.os == other.os
            && self.architecture == other.architecture
            && match (&self.variant, &other.variant) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// The runtime configuration and metadata of an image.
#[derive(Debug, Clone, Default)]
pub struct ImageConfigSpec {
    /// OCI architecture, e.g. `amd64`.
    pub architecture: String,
    pub os: String,
    /// The CPU variant (`v8` for `arm64`), when the platform has one.
    pub variant: Option<String>,
    /// RFC 3339.
    pub created: String,
    pub user: Option<String>,
    pub env: Vec<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    /// `PORT/PROTO`, e.g. `9631/tcp`.
    pub exposed_ports: Vec<String>,
    pub working_dir: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub stop_signal: Option<String>,
    /// Bottom to top, one per layer.
    pub history: Vec<HistoryEntry>,
}

/// A layer as the manifest lists it.
#[derive(Debug, Clone)]
pub struct LayerDescriptor {
    pub digests: LayerDigests,
    pub annotations: BTreeMap<String, String>,
}

/// Config and manifest bytes with their digests.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    pub config: Vec<u8>,
    pub config_digest: String,
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
    pub layers: Vec<LayerDescriptor>,
}

/// An image index over one image per platform, with its bytes and digest.
#[derive(Debug, Clone)]
pub struct BuiltIndex {
    pub bytes: Vec<u8>,
    pub digest: String,
    /// In the index's order.
    pub images: Vec<(Platform, BuiltImage)>,
}

/// What an export's tags point at: one image, or an index of one image per platform.
#[derive(Debug, Clone)]
pub enum Built {
    Image(BuiltImage),
    Index(BuiltIndex),
}

impl Built {
    /// The digest the tags point at.
    pub fn digest(&self) -> &str {
        match self {
            Built::Image(i) => &i.manifest_digest,
            Built::Index(x) => &x.digest,
        }
    }

    /// The bytes the tags point at (manifest or index).
    pub fn bytes(&self) -> &[u8] {
        match self {
            Built::Image(i) => &i.manifest,
            Built::Index(x) => &x.bytes,
        }
    }

    pub fn media_type(&self) -> &'static str {
        match self {
            Built::Image(_) => MEDIA_MANIFEST,
            Built::Index(_) => MEDIA_INDEX,
        }
    }

    /// Every image (one, or one per platform, in the index's order).
    pub fn images(&self) -> Vec<&BuiltImage> {
        match self {
            Built::Image(i) => vec![i],
            Built::Index(x) => x.images.iter().map(|(_, i)| i).collect(),
        }
    }

    /// The image for `platform`, else the first, and whether it was `platform`'s: for
    /// the outputs that hold one image.
    pub fn for_platform(&self, platform: &Platform) -> (&BuiltImage, bool) {
        match self {
            Built::Image(i) => (i, true),
            Built::Index(x) => x
                .images
                .iter()
                .find(|(p, _)| p.matches(platform))
                .map(|(_, i)| (i, true))
                .unwrap_or((&x.images[0].1, false)),
        }
    }

    /// The descriptor an `index.json` lists for it.
    pub fn descriptor(
        &self,
        annotations: &BTreeMap<String, String>,
    ) -> Result<Descriptor, ImageError> {
        match self {
            Built::Image(i) => manifest_descriptor(i, annotations),
            Built::Index(x) => descriptor(
                MediaType::ImageIndex,
                &x.digest,
                x.bytes.len() as u64,
                annotations,
            ),
        }
    }
}

pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// The index of `images` (one per platform), in the order given: the caller fixes the
/// order, so the same images always give the same index bytes.
pub fn build_index(images: Vec<(Platform, BuiltImage)>) -> Result<BuiltIndex, ImageError> {
    let manifests = images
        .iter()
        .map(|(p, i)| {
            let mut platform = PlatformBuilder::default()
                .os(Os::from(p.os.as_str()))
                .architecture(Arch::from(p.architecture.as_str()));
            if let Some(v) = &p.variant {
                platform = platform.variant(v.clone());
            }
            let mut d = manifest_descriptor(i, &BTreeMap::new())?;
            d.set_platform(Some(platform.build().map_err(spec_err("platform"))?));
            Ok(d)
        })
        .collect::<Result<Vec<_>, ImageError>>()?;
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()
        .map_err(spec_err("index"))?;
    let bytes = canonical_json(&index)?;
    Ok(BuiltIndex {
        digest: sha256_digest(&bytes),
        bytes,
        images,
    })
}

fn digest(s: &str) -> Result<Digest, ImageError> {
    Digest::from_str(s).map_err(spec_err("digest"))
}

fn descriptor(
    media_type: MediaType,
    digest_str: &str,
    size: u64,
    annotations: &BTreeMap<String, String>,
) -> Result<Descriptor, ImageError> {
    let mut b = DescriptorBuilder::default()
        .media_type(media_type)
        .digest(digest(digest_str)?)
        .size(size);
    if !annotations.is_empty() {
        b = b.annotations(
            annotations
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<HashMap<_, _>>(),
        );
    }
    b.build().map_err(spec_err("descriptor"))
}

/// Builds the config and the manifest for `layers` (bottom to top).
pub fn build_image(
    spec: &ImageConfigSpec,
    layers: &[LayerDescriptor],
) -> Result<BuiltImage, ImageError> {
    let mut config = ConfigBuilder::default().env(spec.env.clone());
    if let Some(u) = &spec.user {
        config = config.user(u.clone());
    }
    if let Some(e) = &spec.entrypoint {
        config = config.entrypoint(e.clone());
    }
    if let Some(c) = &spec.cmd {
        config = config.cmd(c.clone());
    }
    if !spec.exposed_ports.is_empty() {
        config = config.exposed_ports(spec.exposed_ports.clone());
    }
    if let Some(w) = &spec.working_dir {
        config = config.working_dir(w.clone());
    }
    if !spec.labels.is_empty() {
        config = config.labels(
            spec.labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<HashMap<_, _>>(),
        );
    }
    if let Some(s) = &spec.stop_signal {
        config = config.stop_signal(s.clone());
    }
    let history = spec
        .history
        .iter()
        .map(|h| {
            let mut b = HistoryBuilder::default()
                .created(spec.created.clone())
                .created_by(h.created_by.clone());
            if let Some(c) = &h.comment {
                b = b.comment(c.clone());
            }
            b.build().map_err(spec_err("history"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let rootfs = RootFsBuilder::default()
        .diff_ids(
            layers
                .iter()
                .map(|l| l.digests.diff_id.clone())
                .collect::<Vec<_>>(),
        )
        .build()
        .map_err(spec_err("rootfs"))?;
    let mut image_config = ImageConfigurationBuilder::default()
        .created(spec.created.clone())
        .architecture(Arch::from(spec.architecture.as_str()))
        .os(Os::from(spec.os.as_str()))
        .config(config.build().map_err(spec_err("config"))?)
        .rootfs(rootfs)
        .history(history);
    if let Some(v) = &spec.variant {
        image_config = image_config.variant(v.clone());
    }
    let image_config = image_config.build().map_err(spec_err("configuration"))?;
    with_config(canonical_json(&image_config)?, layers)
}

/// The manifest for config bytes made elsewhere (another tool's image config, kept byte for
/// byte so its digest — the tool's image ID — stays) and `layers` (bottom to top).
pub fn with_config(
    config_bytes: Vec<u8>,
    layers: &[LayerDescriptor],
) -> Result<BuiltImage, ImageError> {
    let config_digest = sha256_digest(&config_bytes);
    let layer_descs = layers
        .iter()
        .map(|l| {
            descriptor(
                MediaType::from(l.digests.media_type),
                &l.digests.digest,
                l.digests.size,
                &l.annotations,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(descriptor(
            MediaType::ImageConfig,
            &config_digest,
            config_bytes.len() as u64,
            &BTreeMap::new(),
        )?)
        .layers(layer_descs)
        .build()
        .map_err(spec_err("manifest"))?;
    let manifest_bytes = canonical_json(&manifest)?;
    Ok(BuiltImage {
        manifest_digest: sha256_digest(&manifest_bytes),
        manifest: manifest_bytes,
        config_digest,
        config: config_bytes,
        layers: layers.to_vec(),
    })
}

/// A manifest descriptor for an index, with its reference annotations.
pub fn manifest_descriptor(
    image: &BuiltImage,
    annotations: &BTreeMap<String, String>,
) -> Result<Descriptor, ImageError> {
    descriptor(
        MediaType::ImageManifest,
        &image.manifest_digest,
        image.manifest.len() as u64,
        annotations,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_digest_is_stable_with_many_labels() {
        let mut spec = ImageConfigSpec {
            architecture: "amd64".into(),
            os: "linux".into(),
            created: "2024-01-01T00:00:00Z".into(),
            exposed_ports: vec!["9631/tcp".into(), "80/tcp".into(), "443/tcp".into()],
            ..Default::default()
        };
        for i in 0..20 {
            spec.labels.insert(format!("label.{i}"), format!("v{i}"));
        }
        let layer = LayerDescriptor {
            digests: LayerDigests {
                diff_id: format!("sha256:{}", "a".repeat(64)),
                digest: format!("sha256:{}", "b".repeat(64)),
                size: 10,
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip",
            },
            annotations: (0..10)
                .map(|i| (format!("k{i}"), format!("v{i}")))
                .collect(),
        };
        let a = build_image(&spec, std::slice::from_ref(&layer)).expect("build");
        for _ in 0..5 {
            let b = build_image(&spec, std::slice::from_ref(&layer)).expect("build");
            assert_eq!(a.config, b.config);
            assert_eq!(a.manifest_digest, b.manifest_digest);
        }
        let text = String::from_utf8(a.config.clone()).expect("utf8");
        assert!(
            text.contains(r#""ExposedPorts":{"443/tcp":{},"80/tcp":{},"9631/tcp":{}}"#),
            "{text}"
        );
    }
}
