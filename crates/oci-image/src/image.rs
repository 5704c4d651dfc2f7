//! Image config and manifest, typed with `oci-spec` and serialized canonically.
//!
//! `oci-spec` keeps labels, annotations and exposed ports in `HashMap`s whose iteration order
//! changes per process, so `to_string` would give a different digest each run. We go through
//! `serde_json::Value` (sorted maps; `preserve_order` must stay off) and hash those bytes.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, DescriptorBuilder, Digest, HistoryBuilder,
    ImageConfigurationBuilder, ImageManifestBuilder, MediaType, Os, RootFsBuilder,
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

/// The runtime configuration and metadata of an image.
#[derive(Debug, Clone, Default)]
pub struct ImageConfigSpec {
    /// OCI architecture, e.g. `amd64`.
    pub architecture: String,
    pub os: String,
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
    let image_config = ImageConfigurationBuilder::default()
        .created(spec.created.clone())
        .architecture(Arch::from(spec.architecture.as_str()))
        .os(Os::from(spec.os.as_str()))
        .config(config.build().map_err(spec_err("config"))?)
        .rootfs(rootfs)
        .history(history)
        .build()
        .map_err(spec_err("configuration"))?;
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
