//! Cache sources of the native engine: images hab-oci pushed earlier, known from their
//! manifest and config alone (never a layer blob). Each package layer's annotations say
//! which packages (by hart checksum) it holds and record what an export needs of them
//! ([`crate::record`]), so a planned layer with the same key is neither built nor uploaded
//! and its packages are neither decoded nor downloaded. What cannot be believed (another
//! platform, format or compression, annotations that do not parse or disagree with the
//! manifest) is skipped with a note: the layer is then built, never misread.

use std::collections::HashMap;

use oci_image::{Compression, LayerDigests};
use serde_json::Value;

use crate::LAYER_FORMAT;
use crate::layers::{ANN_CHECKSUMS, ANN_FORMAT, ANN_PACKAGES, LayerKey, Member};
use crate::record::{self, ANN_RECORD, PackageRecord};

/// A cache source as the caller's registry client read it: its manifest (for the export's
/// platform, picked from an index) and its config.
#[derive(Debug, Clone)]
pub struct RemoteImage {
    /// `registry/repository` of the source, where its blobs are.
    pub repository: String,
    pub manifest_digest: String,
    pub manifest: Vec<u8>,
    pub config: Vec<u8>,
}

pub use crate::platform::Platform;

/// A package layer a cache source holds, believed as far as its manifest can tell.
#[derive(Debug, Clone)]
pub struct SourceLayer {
    pub key: LayerKey,
    pub digests: LayerDigests,
    pub members: Vec<Member>,
    pub records: Vec<PackageRecord>,
    /// `registry/repository` of the source.
    pub repository: String,
    /// Which source (in the order given) and which of its layers: records are believed in
    /// this order, so two sources that disagree always resolve the same way.
    pub order: (usize, usize),
}

/// Why a whole cache source is not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceProblem {
    #[error("not an OCI image manifest: {0}")]
    NotAManifest(String),
    #[error("its config is not the blob the manifest names ({0})")]
    ConfigMismatch(String),
    #[error("it is for {found}, not {wanted}")]
    OtherPlatform { found: String, wanted: String },
    #[error("its config lists {diff_ids} diff_ids for {layers} layers")]
    DiffIdCount { diff_ids: usize, layers: usize },
    #[error("hab-oci did not write it (no hab-oci layer annotations)")]
    NotOurs,
    #[error("it has {0} layers; images have at most {MAX_LAYERS}")]
    TooManyLayers(usize),
}

/// Docker refuses images deeper than this; a source claiming more is not read further (each
/// layer would cost a request to the push's registry).
const MAX_LAYERS: usize = 127;

/// The package layers of one cache source worth trying, and notes on those skipped.
#[derive(Debug, Default)]
pub struct Parsed {
    pub layers: Vec<SourceLayer>,
    pub notes: Vec<String>,
}

/// Reads `image` as a cache source for an export of `platform` with `compression`.
pub fn parse(
    image: &RemoteImage,
    index: usize,
    platform: &Platform,
    compression: Compression,
) -> Result<Parsed, SourceProblem> {
    let bad = |e: &dyn std::fmt::Display| SourceProblem::NotAManifest(e.to_string());
    let manifest: Value = serde_json::from_slice(&image.manifest).map_err(|e| bad(&e))?;
    let config_digest = manifest
        .pointer("/config/digest")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(&"no config digest"))?;
    let actual = oci_image::sha256_digest(&image.config);
    if actual != config_digest {
        return Err(SourceProblem::ConfigMismatch(format!(
            "{config_digest} named, {actual} read"
        )));
    }
    let config: Value = serde_json::from_slice(&image.config)
        .map_err(|e| SourceProblem::NotAManifest(format!("its config: {e}")))?;
    let field = |k: &str| config.get(k).and_then(Value::as_str).unwrap_or("");
    if field("os") != platform.os || field("architecture") != platform.architecture {
        return Err(SourceProblem::OtherPlatform {
            found: format!("{}/{}", field("os"), field("architecture")),
            wanted: platform.to_string(),
        });
    }
    let layers = manifest
        .get("layers")
        .and_then(Value::as_array)
        .ok_or_else(|| bad(&"no layers"))?;
    let diff_ids: Vec<&str> = config
        .pointer("/rootfs/diff_ids")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if layers.len() > MAX_LAYERS {
        return Err(SourceProblem::TooManyLayers(layers.len()));
    }
    if diff_ids.len() != layers.len() {
        return Err(SourceProblem::DiffIdCount {
            diff_ids: diff_ids.len(),
            layers: layers.len(),
        });
    }
    let annotation = |l: &Value, k: &str| -> Option<String> {
        l.pointer(&format!("/annotations/{}", k.replace('/', "~1")))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    if !layers.iter().any(|l| annotation(l, ANN_FORMAT).is_some()) {
        return Err(SourceProblem::NotOurs);
    }
    let mut parsed = Parsed::default();
    let mut other_compression = 0;
    let mut no_records = 0;
    for (i, (l, diff_id)) in layers.iter().zip(&diff_ids).enumerate() {
        // The extras layer (no checksums) is rebuilt from the records every time.
        let Some(checksums) = annotation(l, ANN_CHECKSUMS) else {
            continue;
        };
        let format = annotation(l, ANN_FORMAT).unwrap_or_default();
        if format != LAYER_FORMAT {
            parsed.notes.push(format!(
                "layer {i} is of layer format '{format}' (this hab-oci writes {LAYER_FORMAT})"
            ));
            continue;
        }
        if l.get("mediaType").and_then(Value::as_str) != Some(compression.media_type()) {
            other_compression += 1;
            continue;
        }
        let Some(text) = annotation(l, ANN_RECORD) else {
            no_records += 1;
            continue;
        };
        let idents = annotation(l, ANN_PACKAGES).unwrap_or_default();
        match layer(l, diff_id, &idents, &checksums, &text, compression) {
            Ok((digests, members, records)) => parsed.layers.push(SourceLayer {
                key: LayerKey::of(&members, compression),
                digests,
                members,
                records,
                repository: image.repository.clone(),
                order: (index, i),
            }),
            Err(e) => parsed.notes.push(format!("layer {i}: {e}")),
        }
    }
    if other_compression > 0 {
        parsed.notes.push(format!(
            "{other_compression} layers are not compressed with {} as this export is",
            compression.name()
        ));
    }
    if no_records > 0 {
        parsed.notes.push(format!(
            "{no_records} layers carry no package records (written by an older hab-oci)"
        ));
    }
    Ok(parsed)
}

/// One package layer's descriptor and annotations, each checked against the others.
fn layer(
    l: &Value,
    diff_id: &str,
    idents: &str,
    checksums: &str,
    record_text: &str,
    compression: Compression,
) -> Result<(LayerDigests, Vec<Member>, Vec<PackageRecord>), String> {
    let digest = l.get("digest").and_then(Value::as_str).unwrap_or_default();
    let size = l
        .get("size")
        .and_then(Value::as_u64)
        .ok_or("its descriptor has no size")?;
    for d in [digest, diff_id] {
        let hex = d.strip_prefix("sha256:").unwrap_or_default();
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("'{d}' is not a sha256 digest"));
        }
    }
    let records = record::decode(record_text)?;
    let recorded_idents: Vec<String> = records.iter().map(|r| r.ident.to_string()).collect();
    let recorded_sums: Vec<&str> = records.iter().map(|r| r.checksum.as_str()).collect();
    if records.is_empty()
        || recorded_idents.join(",") != idents
        || recorded_sums.join(",") != checksums
    {
        return Err(format!(
            "its records ({}) disagree with its package annotations ({idents})",
            recorded_idents.join(",")
        ));
    }
    let members = records
        .iter()
        .map(|r| Member {
            ident: r.ident.clone(),
            checksum: r.checksum.clone(),
        })
        .collect();
    let digests = LayerDigests {
        diff_id: diff_id.to_owned(),
        digest: digest.to_owned(),
        size,
        media_type: compression.media_type(),
    };
    Ok((digests, members, records))
}

/// The layers of every source by key, first source first; a key two sources hold with
/// different digests keeps the first (both decompress to members' layers, but only one
/// can be named).
pub fn by_key(sources: Vec<Parsed>) -> HashMap<LayerKey, SourceLayer> {
    let mut out: HashMap<LayerKey, SourceLayer> = HashMap::new();
    for l in sources.into_iter().flat_map(|p| p.layers) {
        out.entry(l.key.clone()).or_insert(l);
    }
    out
}

#[cfg(test)]
mod tests;
