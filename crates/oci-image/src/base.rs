//! A base image for `--base-image`: which kind of reference names it ([`BaseSpec`]), a local
//! one (`oci:DIR[:TAG]`, `oci-archive:FILE`, `docker-archive:FILE`) opened for one platform
//! ([`LocalBase`] → [`BaseImage`]), a registry one built from the documents `oci-registry`
//! read ([`BaseImage::from_documents`]), its layers read back with their digests checked
//! ([`BaseImage::open_layer`]), and the files its layers leave visible ([`base_files`]: the
//! `/etc/passwd` and `/etc/group` Habitat's users join, and every path our extras could hide).
//!
//! The base's layers go into our image unchanged, so everything here checks bytes against
//! digests instead of trusting names: an archive's blob is kept (in a [`BlobDir`], the
//! cache) only once it hashed to its name, and a layer is hashed again as it is read.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::image::{LayerDescriptor, Platform, with_config};
use crate::import::{MAX_JSON, clean, peek};
use crate::layer::{Compression, LayerDigests, decompressed, sha256_digest};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// Most bytes of `/etc/passwd` or `/etc/group` read from a base layer: far above any real
/// one, and a hostile base cannot fill memory with them.
const MAX_USER_TABLE: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum BaseError {
    #[error("base image '{base}' is not a reference hab-oci can read: {detail}")]
    Spec { base: String, detail: String },
    #[error("base image '{base}' does not exist: {detail}")]
    NotFound { base: String, detail: String },
    #[error(
        "base image '{base}' has no manifest for {wanted}; it has {}",
        list(available)
    )]
    NoPlatform {
        base: String,
        wanted: Platform,
        available: Vec<Platform>,
    },
    #[error(
        "base image '{base}': {what} has media type '{media_type}', which hab-oci cannot read \
         (OCI or Docker v2 manifests and indexes, tar, tar+gzip and tar+zstd layers)"
    )]
    MediaType {
        base: String,
        what: String,
        media_type: String,
    },
    #[error("base image '{base}': the bytes of {what} hash to {actual}, not {expected}")]
    Digest {
        base: String,
        what: String,
        expected: String,
        actual: String,
    },
    #[error("base image '{base}' is not a valid image: {detail}")]
    Invalid { base: String, detail: String },
    #[error("base image '{base}': {}", path.display())]
    Io {
        base: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn list(platforms: &[Platform]) -> String {
    if platforms.is_empty() {
        return "no platform manifest at all".into();
    }
    platforms
        .iter()
        .map(Platform::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// How `--base-image` names the base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseSpec {
    /// `registry/repository[:tag][@digest]` (a `docker://` prefix is accepted and dropped).
    Registry(String),
    /// `oci:DIR[:TAG]`: an OCI image layout directory.
    OciDir { dir: PathBuf, tag: Option<String> },
    /// `oci-archive:FILE`: a tar of an OCI image layout.
    OciArchive(PathBuf),
    /// `docker-archive:FILE`: what `docker save` writes.
    DockerArchive(PathBuf),
}

impl BaseSpec {
    /// The kind of reference `s` is, by its transport prefix (skopeo's names); anything
    /// without one is a registry reference (checked when the registry is asked).
    pub fn parse(s: &str) -> Result<BaseSpec, BaseError> {
        let spec_err = |detail: &str| BaseError::Spec {
            base: s.to_owned(),
            detail: detail.to_owned(),
        };
        let path = |rest: &str| {
            if rest.is_empty() {
                Err(spec_err("the path is empty"))
            } else {
                Ok(PathBuf::from(rest))
            }
        };
        if let Some(rest) = s.strip_prefix("oci:") {
            // `oci:DIR:TAG`: a tag follows the last `:` only when it has no `/`, so a
            // directory with a colon in an inner component is still a directory.
            let (dir, tag) = match rest.rsplit_once(':') {
                Some((dir, tag)) if !tag.contains('/') && !dir.is_empty() => {
                    (dir, (!tag.is_empty()).then(|| tag.to_owned()))
                }
                _ => (rest, None),
            };
            return Ok(BaseSpec::OciDir {
                dir: path(dir)?,
                tag,
            });
        }
        if let Some(rest) = s.strip_prefix("oci-archive:") {
            return Ok(BaseSpec::OciArchive(path(rest)?));
        }
        if let Some(rest) = s.strip_prefix("docker-archive:") {
            return Ok(BaseSpec::DockerArchive(path(rest)?));
        }
        for other in ["docker-daemon:", "containers-storage:", "dir:"] {
            if s.starts_with(other) {
                return Err(spec_err(&format!(
                    "'{other}' is not supported; use a registry reference, oci:DIR[:TAG], \
                     oci-archive:FILE or docker-archive:FILE"
                )));
            }
        }
        let r = s.strip_prefix("docker://").unwrap_or(s);
        if r.is_empty() {
            return Err(spec_err("the reference is empty"));
        }
        Ok(BaseSpec::Registry(r.to_owned()))
    }

    pub fn is_registry(&self) -> bool {
        matches!(self, BaseSpec::Registry(_))
    }
}

impl fmt::Display for BaseSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BaseSpec::Registry(r) => f.write_str(r),
            BaseSpec::OciDir { dir, tag: None } => write!(f, "oci:{}", dir.display()),
            BaseSpec::OciDir { dir, tag: Some(t) } => write!(f, "oci:{}:{t}", dir.display()),
            BaseSpec::OciArchive(p) => write!(f, "oci-archive:{}", p.display()),
            BaseSpec::DockerArchive(p) => write!(f, "docker-archive:{}", p.display()),
        }
    }
}

/// One history entry of the base's config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BaseHistory {
    pub created: Option<String>,
    pub created_by: Option<String>,
    pub comment: Option<String>,
    /// The entry made no layer (an `ENV`, a `CMD`).
    pub empty_layer: bool,
}

/// What the base's config says, the parts an export merges with its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BaseConfig {
    /// `os`, `architecture`, `variant`.
    pub platform: Platform,
    pub env: Vec<String>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    /// `PORT/PROTO`, sorted.
    pub exposed_ports: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub stop_signal: Option<String>,
    pub history: Vec<BaseHistory>,
    /// `rootfs.diff_ids`, bottom to top.
    pub diff_ids: Vec<String>,
}

impl BaseConfig {
    /// Reads an OCI or Docker image config; what is missing stays empty.
    pub fn parse(bytes: &[u8]) -> Result<BaseConfig, String> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        if !v.is_object() {
            return Err("not a JSON object".into());
        }
        let text = |v: &Value, p: &str| {
            v.pointer(p)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let strings = |v: Option<&Value>| -> Option<Vec<String>> {
            v?.as_array().map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
        };
        let c = v.get("config").cloned().unwrap_or(Value::Null);
        let mut exposed_ports: Vec<String> = c
            .get("ExposedPorts")
            .and_then(Value::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        exposed_ports.sort();
        let labels = c
            .get("Labels")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        let history = v
            .get("history")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|h| BaseHistory {
                        created: text(h, "/created"),
                        created_by: text(h, "/created_by"),
                        comment: text(h, "/comment"),
                        empty_layer: h
                            .get("empty_layer")
                            .and_then(Value::as_bool)
                            .unwrap_or(false),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(BaseConfig {
            platform: Platform {
                os: text(&v, "/os").unwrap_or_default(),
                architecture: text(&v, "/architecture").unwrap_or_default(),
                variant: text(&v, "/variant"),
            },
            env: strings(c.get("Env")).unwrap_or_default(),
            user: text(&c, "/User"),
            working_dir: text(&c, "/WorkingDir"),
            entrypoint: strings(c.get("Entrypoint")),
            cmd: strings(c.get("Cmd")),
            exposed_ports,
            labels,
            stop_signal: text(&c, "/StopSignal"),
            history,
            diff_ids: strings(v.pointer("/rootfs/diff_ids")).unwrap_or_default(),
        })
    }
}

/// One layer of the base, as its manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseLayer {
    pub digest: String,
    pub size: u64,
    pub media_type: String,
    /// From the config's `rootfs.diff_ids`.
    pub diff_id: String,
    /// How the blob is compressed (from the media type).
    pub compression: Compression,
}

impl BaseLayer {
    /// As our manifest lists it (the base's own media type is kept where ours has the
    /// same meaning; a Docker type becomes its OCI twin, as our manifest is OCI).
    pub fn descriptor(&self) -> LayerDescriptor {
        LayerDescriptor {
            digests: LayerDigests {
                diff_id: self.diff_id.clone(),
                digest: self.digest.clone(),
                size: self.size,
                media_type: self.compression.media_type(),
            },
            annotations: BTreeMap::new(),
        }
    }
}

/// The compression of a layer media type we can read; `None` for any other type
/// (non-distributable layers included: their bytes are not in the registry).
pub fn layer_compression(media_type: &str) -> Option<Compression> {
    Some(match media_type {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.docker.image.rootfs.diff.tar" => Compression::None,
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip" => Compression::Gzip,
        "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Compression::Zstd,
        _ => return None,
    })
}

/// A base image, opened for one platform.
#[derive(Debug, Clone)]
pub struct BaseImage {
    /// The reference as given (`--base-image`).
    pub reference: String,
    /// The index the platform manifest was chosen from, when the base is an index.
    pub index_digest: Option<String>,
    pub manifest_digest: String,
    pub manifest: Vec<u8>,
    pub config_digest: String,
    pub config_bytes: Vec<u8>,
    pub config: BaseConfig,
    /// Bottom to top.
    pub layers: Vec<BaseLayer>,
    /// Where the layer blobs are (`sha256/<hex>` under it): the layout's `blobs/`, the
    /// directory an archive was unpacked into, or — for a registry base — the cache the
    /// caller fetched them into (`None` until then).
    pub blobs: Option<BlobDir>,
}

impl BaseImage {
    /// The image of `manifest` (a platform manifest, OCI or Docker v2) and `config` (whose
    /// digest the manifest names), for `wanted`: media types, the config digest, the layer
    /// count against `rootfs.diff_ids` and the config's platform are checked.
    pub fn from_documents(
        reference: &str,
        index_digest: Option<String>,
        manifest: Vec<u8>,
        config: Vec<u8>,
        wanted: &Platform,
    ) -> Result<BaseImage, BaseError> {
        let base = reference.to_owned();
        let invalid = |detail: String| BaseError::Invalid {
            base: base.clone(),
            detail,
        };
        let doc: Value = serde_json::from_slice(&manifest)
            .map_err(|e| invalid(format!("its manifest is not JSON: {e}")))?;
        check_manifest_type(reference, &doc)?;
        let config_digest = str_at(&doc, "/config/digest")
            .ok_or_else(|| invalid("its manifest names no config".into()))?;
        let config_type = str_at(&doc, "/config/mediaType").unwrap_or(OCI_CONFIG);
        if config_type != OCI_CONFIG && config_type != DOCKER_CONFIG {
            return Err(media_err(reference, "the config", config_type));
        }
        let actual = sha256_digest(&config);
        if actual != config_digest {
            return Err(BaseError::Digest {
                base: base.clone(),
                what: "the config".into(),
                expected: config_digest.to_owned(),
                actual,
            });
        }
        let parsed = BaseConfig::parse(&config)
            .map_err(|e| invalid(format!("its config {config_digest} is {e}")))?;
        let descs = doc
            .get("layers")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid("its manifest has no layer list".into()))?;
        if descs.len() != parsed.diff_ids.len() {
            return Err(invalid(format!(
                "its manifest lists {} layers, its config {} diff_ids",
                descs.len(),
                parsed.diff_ids.len()
            )));
        }
        let mut layers = Vec::with_capacity(descs.len());
        for (i, (d, diff_id)) in descs.iter().zip(&parsed.diff_ids).enumerate() {
            let media_type = str_at(d, "/mediaType").unwrap_or_default();
            let compression = layer_compression(media_type)
                .ok_or_else(|| media_err(reference, &format!("layer {}", i + 1), media_type))?;
            let digest = str_at(d, "/digest")
                .filter(|d| hex_of(d).is_some())
                .ok_or_else(|| invalid(format!("layer {} has no sha256 digest", i + 1)))?;
            let size = d
                .get("size")
                .and_then(Value::as_u64)
                .ok_or_else(|| invalid(format!("layer {} has no size", i + 1)))?;
            layers.push(BaseLayer {
                digest: digest.to_owned(),
                size,
                media_type: media_type.to_owned(),
                diff_id: diff_id.clone(),
                compression,
            });
        }
        if !parsed.platform.matches(wanted) {
            return Err(BaseError::NoPlatform {
                base,
                wanted: wanted.clone(),
                available: vec![parsed.platform],
            });
        }
        Ok(BaseImage {
            reference: reference.to_owned(),
            index_digest,
            manifest_digest: sha256_digest(&manifest),
            manifest,
            config_digest: config_digest.to_owned(),
            config_bytes: config,
            config: parsed,
            layers,
            blobs: None,
        })
    }

    /// The blob file of layer `index` (bottom is 0), unchecked: [`BaseImage::verify_layer`]
    /// or [`BaseImage::open_layer`] check it.
    pub fn layer_path(&self, index: usize) -> Result<PathBuf, BaseError> {
        let layer = self.layer(index)?;
        let path = self
            .blobs
            .as_ref()
            .and_then(|b| b.path(&layer.digest))
            .ok_or_else(|| BaseError::NotFound {
                base: self.reference.clone(),
                detail: format!(
                    "layer {} ({}) has not been fetched",
                    index + 1,
                    layer.digest
                ),
            })?;
        if !path.is_file() {
            return Err(BaseError::NotFound {
                base: self.reference.clone(),
                detail: format!("layer {} ({}) is missing", index + 1, layer.digest),
            });
        }
        Ok(path)
    }

    fn layer(&self, index: usize) -> Result<&BaseLayer, BaseError> {
        self.layers.get(index).ok_or_else(|| BaseError::Invalid {
            base: self.reference.clone(),
            detail: format!("it has no layer {} (internal error)", index + 1),
        })
    }

    /// The compressed bytes of layer `index`, hashed as they are read: the read that
    /// reaches the end fails (`InvalidData`, a [`DigestMismatch`] inside; see
    /// [`BaseError::from_read`]) when they are not the layer's bytes.
    pub fn open_layer(&self, index: usize) -> Result<CheckedReader<File>, BaseError> {
        let layer = self.layer(index)?;
        let path = self.layer_path(index)?;
        let f = File::open(&path).map_err(|source| BaseError::Io {
            base: self.reference.clone(),
            path: path.clone(),
            source,
        })?;
        Ok(CheckedReader::new(f, &layer.digest, layer.size))
    }

    /// Hashes layer `index` whole; its path when the bytes are the layer's (to link or copy
    /// into a store).
    pub fn verify_layer(&self, index: usize) -> Result<PathBuf, BaseError> {
        let mut r = self.open_layer(index)?;
        io::copy(&mut r, &mut io::sink()).map_err(|e| self.read_error(index, e))?;
        self.layer_path(index)
    }

    /// An error reading layer `index`: a digest mismatch as [`BaseError::Digest`].
    pub fn read_error(&self, index: usize, e: io::Error) -> BaseError {
        let what = match self.layers.get(index) {
            Some(l) => format!("layer {} ({})", index + 1, l.digest),
            None => format!("layer {}", index + 1),
        };
        BaseError::from_read(&self.reference, &what, e)
    }

    /// The platform of the image (from its config).
    pub fn platform(&self) -> &Platform {
        &self.config.platform
    }
}

impl BaseError {
    /// An error of reading `what` of `base` through a [`CheckedReader`].
    pub fn from_read(base: &str, what: &str, e: io::Error) -> BaseError {
        if let Some(m) = e.get_ref().and_then(|r| r.downcast_ref::<DigestMismatch>()) {
            return BaseError::Digest {
                base: base.to_owned(),
                what: what.to_owned(),
                expected: m.expected.clone(),
                actual: m.actual.clone(),
            };
        }
        BaseError::Invalid {
            base: base.to_owned(),
            detail: format!("reading {what}: {e}"),
        }
    }
}

fn media_err(base: &str, what: &str, media_type: &str) -> BaseError {
    BaseError::MediaType {
        base: base.to_owned(),
        what: what.to_owned(),
        media_type: media_type.to_owned(),
    }
}

fn str_at<'a>(v: &'a Value, p: &str) -> Option<&'a str> {
    v.pointer(p).and_then(Value::as_str)
}

fn is_index(doc: &Value) -> bool {
    match str_at(doc, "/mediaType") {
        Some(t) => t == OCI_INDEX || t == DOCKER_LIST,
        None => doc.get("manifests").is_some(),
    }
}

/// An OCI or Docker v2 image manifest (the media type may be absent in OCI).
fn check_manifest_type(base: &str, doc: &Value) -> Result<(), BaseError> {
    match str_at(doc, "/mediaType") {
        Some(OCI_MANIFEST | DOCKER_MANIFEST) => Ok(()),
        Some(other) => Err(media_err(base, "the manifest", other)),
        None if doc.get("schemaVersion").and_then(Value::as_u64) == Some(2)
            && doc.get("config").is_some() =>
        {
            Ok(())
        }
        None => Err(media_err(
            base,
            "the manifest",
            &format!(
                "(none; schemaVersion {})",
                doc.get("schemaVersion").unwrap_or(&Value::Null)
            ),
        )),
    }
}

/// The platform an index entry names; `None` without one, or for what is not an image
/// (attestation manifests carry `unknown/unknown`).
fn entry_platform(entry: &Value) -> Option<Platform> {
    let os = str_at(entry, "/platform/os")?;
    let architecture = str_at(entry, "/platform/architecture")?;
    if os == "unknown" || architecture == "unknown" {
        return None;
    }
    Some(Platform {
        os: os.to_owned(),
        architecture: architecture.to_owned(),
        variant: str_at(entry, "/platform/variant").map(str::to_owned),
    })
}

/// The digest of `wanted`'s manifest in an index (OCI or Docker manifest list): the entry
/// of the same OS and architecture whose variant is the one asked for, else one that names
/// no variant (or, when none is asked for, the first). Otherwise the platforms it has.
pub fn platform_manifest(index: &Value, wanted: &Platform) -> Result<String, Vec<Platform>> {
    let entries: Vec<(&Value, Platform)> = index
        .get("manifests")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|e| entry_platform(e).map(|p| (e, p)))
                .collect()
        })
        .unwrap_or_default();
    let same = |p: &Platform| p.os == wanted.os && p.architecture == wanted.architecture;
    let pick = entries
        .iter()
        .find(|(_, p)| same(p) && wanted.variant.is_some() && p.variant == wanted.variant)
        .or_else(|| {
            entries
                .iter()
                .find(|(_, p)| same(p) && (p.variant.is_none() || wanted.variant.is_none()))
        });
    match pick.and_then(|(e, _)| str_at(e, "/digest")) {
        Some(d) => Ok(d.to_owned()),
        None => {
            let mut available: Vec<Platform> = entries.into_iter().map(|(_, p)| p).collect();
            available.dedup();
            Err(available)
        }
    }
}

/// `HEX` of `sha256:HEX` (64 hex digits), the only algorithm we store blobs by.
fn hex_of(digest: &str) -> Option<&str> {
    digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A content-addressed directory of blobs (`sha256/<hex>` under its root): the `blobs/`
/// of an OCI layout, or hab-oci's cache of base blobs. A blob appears under its name only
/// after its bytes hashed to it ([`CheckedBlobWriter::commit`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobDir {
    root: PathBuf,
}

impl BlobDir {
    pub fn new(root: impl Into<PathBuf>) -> BlobDir {
        BlobDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob `digest` is (or would be); `None` for what is not a sha256 digest.
    pub fn path(&self, digest: &str) -> Option<PathBuf> {
        Some(self.root.join("sha256").join(hex_of(digest)?))
    }

    pub fn contains(&self, digest: &str) -> bool {
        self.path(digest).is_some_and(|p| p.is_file())
    }

    /// A writer for one blob, named only by [`CheckedBlobWriter::commit`].
    pub fn writer(&self) -> io::Result<CheckedBlobWriter> {
        let dir = self.root.join("sha256");
        fs::create_dir_all(&dir)?;
        Ok(CheckedBlobWriter {
            tmp: hab_oci_fs::temp::file_in(&dir, "blob")?,
            state: Sha256::new(),
            size: 0,
            dir,
        })
    }
}

/// A blob's bytes did not hash to its digest (or were not of its size).
#[derive(Debug, Clone, thiserror::Error)]
#[error("the bytes hash to {actual}, not {expected}")]
pub struct DigestMismatch {
    pub expected: String,
    /// The digest of what was read, or a size note when the size was wrong.
    pub actual: String,
}

/// A blob being written into a [`BlobDir`], hashed as it goes.
pub struct CheckedBlobWriter {
    tmp: tempfile::NamedTempFile,
    state: Sha256,
    size: u64,
    dir: PathBuf,
}

impl Write for CheckedBlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.tmp.write(buf)?;
        self.state.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.tmp.flush()
    }
}

impl CheckedBlobWriter {
    /// `sha256:` digest of what was written so far.
    pub fn digest(&self) -> String {
        format!("sha256:{}", hex::encode(self.state.clone().finalize()))
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Names the blob `digest` when its bytes hash to it; otherwise the bytes are dropped
    /// and the error says what they hashed to.
    pub fn commit(self, digest: &str) -> io::Result<PathBuf> {
        let actual = self.digest();
        if actual != digest {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                DigestMismatch {
                    expected: digest.to_owned(),
                    actual,
                },
            ));
        }
        self.commit_hashed().map(|(_, p)| p)
    }

    /// Names the blob by what it hashed to.
    pub fn commit_hashed(self) -> io::Result<(String, PathBuf)> {
        let digest = self.digest();
        let hex = digest.trim_start_matches("sha256:");
        let dest = self.dir.join(hex);
        // Durable: the cache keeps it across runs, and a later run trusts its name.
        hab_oci_fs::persist(self.tmp, &dest, hab_oci_fs::Persist::DURABLE)?;
        Ok((digest, dest))
    }
}

/// Reads a blob and checks, when the end is reached, that it was `size` bytes hashing to
/// `digest`; otherwise that last read fails with `InvalidData` (a [`DigestMismatch`] inside).
pub struct CheckedReader<R> {
    inner: R,
    state: Sha256,
    read: u64,
    expected: String,
    size: u64,
}

impl<R: Read> CheckedReader<R> {
    pub fn new(inner: R, digest: &str, size: u64) -> CheckedReader<R> {
        CheckedReader {
            inner,
            state: Sha256::new(),
            read: 0,
            expected: digest.to_owned(),
            size,
        }
    }
}

impl<R: Read> Read for CheckedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.state.update(&buf[..n]);
        self.read += n as u64;
        if (n == 0 && !buf.is_empty()) || self.read > self.size {
            let actual = format!("sha256:{}", hex::encode(self.state.clone().finalize()));
            if actual != self.expected || self.read != self.size {
                let actual = if self.read == self.size {
                    actual
                } else {
                    format!("{} bytes, not {}", self.read, self.size)
                };
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    DigestMismatch {
                        expected: self.expected.clone(),
                        actual,
                    },
                ));
            }
        }
        Ok(n)
    }
}

/// A local base, read once: a layout directory, or an archive whose blobs were unpacked
/// (each checked against its name) into a [`BlobDir`]. [`LocalBase::image`] then picks
/// one platform's image, as often as there are targets.
#[derive(Debug)]
pub struct LocalBase {
    reference: String,
    tag: Option<String>,
    /// Where the blobs are.
    blobs: BlobDir,
    /// For archives: the small JSON files by path in the archive (documents, configs),
    /// files unpacked by path → (digest, size), and links; empty for a layout.
    archive: Option<Archive>,
}

#[derive(Debug, Default)]
struct Archive {
    json: HashMap<String, Vec<u8>>,
    files: HashMap<String, (String, u64)>,
    links: HashMap<String, String>,
    /// Blobs whose bytes did not hash to their name: path → (name's digest, actual).
    bad: HashMap<String, (String, String)>,
}

impl LocalBase {
    /// Opens `spec` (not a registry reference). An archive is read once, its blobs written
    /// into `unpack` (a blob already there is not written again).
    pub fn open(spec: &BaseSpec, unpack: &BlobDir) -> Result<LocalBase, BaseError> {
        let reference = spec.to_string();
        let not_found = |p: &Path, e: &io::Error| BaseError::NotFound {
            base: reference.clone(),
            detail: format!("{}: {e}", p.display()),
        };
        match spec {
            BaseSpec::Registry(_) => Err(BaseError::Spec {
                base: reference.clone(),
                detail: "a registry reference is read through the registry (internal error)".into(),
            }),
            BaseSpec::OciDir { dir, tag } => {
                let index = dir.join("index.json");
                if let Err(e) = fs::metadata(&index) {
                    return Err(not_found(&index, &e));
                }
                Ok(LocalBase {
                    reference: reference.clone(),
                    tag: tag.clone(),
                    blobs: BlobDir::new(dir.join("blobs")),
                    archive: None,
                })
            }
            BaseSpec::OciArchive(path) | BaseSpec::DockerArchive(path) => {
                let f = File::open(path).map_err(|e| not_found(path, &e))?;
                let archive = unpack_archive(&reference, f, unpack)?;
                Ok(LocalBase {
                    reference: reference.clone(),
                    tag: None,
                    blobs: unpack.clone(),
                    archive: Some(archive),
                })
            }
        }
    }

    /// The image for `wanted`.
    pub fn image(&self, wanted: &Platform) -> Result<BaseImage, BaseError> {
        let mut image = match &self.archive {
            Some(a)
                if !a.json.contains_key("index.json") && a.json.contains_key("manifest.json") =>
            {
                self.docker_image(a, wanted)?
            }
            _ => self.oci_image(wanted)?,
        };
        image.blobs = Some(self.blobs.clone());
        Ok(image)
    }

    fn invalid(&self, detail: String) -> BaseError {
        BaseError::Invalid {
            base: self.reference.clone(),
            detail,
        }
    }

    /// A JSON file of the layout or archive by its path (`index.json`, `blobs/sha256/…`).
    fn json_file(&self, path: &str) -> Result<Vec<u8>, BaseError> {
        match &self.archive {
            Some(a) => a
                .json
                .get(a.resolve(path))
                .cloned()
                .ok_or_else(|| self.invalid(format!("it holds no {path}"))),
            None => {
                let p = self
                    .blobs
                    .root()
                    .parent()
                    .unwrap_or(Path::new("."))
                    .join(path);
                let f = File::open(&p).map_err(|source| BaseError::Io {
                    base: self.reference.clone(),
                    path: p.clone(),
                    source,
                })?;
                let mut bytes = Vec::new();
                f.take(MAX_JSON + 1)
                    .read_to_end(&mut bytes)
                    .map_err(|source| BaseError::Io {
                        base: self.reference.clone(),
                        path: p.clone(),
                        source,
                    })?;
                if bytes.len() as u64 > MAX_JSON {
                    return Err(self.invalid(format!("{path} is larger than {MAX_JSON} bytes")));
                }
                Ok(bytes)
            }
        }
    }

    /// A document blob by digest, checked against it.
    fn document(&self, digest: &str, what: &str) -> Result<Vec<u8>, BaseError> {
        let hex = hex_of(digest).ok_or_else(|| {
            self.invalid(format!(
                "{what} is named by '{digest}', not a sha256 digest"
            ))
        })?;
        let path = format!("blobs/sha256/{hex}");
        if let Some((expected, actual)) = self.archive.as_ref().and_then(|a| a.bad.get(&path)) {
            return Err(BaseError::Digest {
                base: self.reference.clone(),
                what: what.to_owned(),
                expected: expected.clone(),
                actual: actual.clone(),
            });
        }
        let bytes = self.json_file(&path)?;
        let actual = sha256_digest(&bytes);
        if actual != digest {
            return Err(BaseError::Digest {
                base: self.reference.clone(),
                what: what.to_owned(),
                expected: digest.to_owned(),
                actual,
            });
        }
        Ok(bytes)
    }

    fn oci_image(&self, wanted: &Platform) -> Result<BaseImage, BaseError> {
        let top: Value = serde_json::from_slice(&self.json_file("index.json")?)
            .map_err(|e| self.invalid(format!("its index.json is not JSON: {e}")))?;
        let all: Vec<&Value> = top
            .get("manifests")
            .and_then(Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default();
        fn tag_of(e: &Value) -> Option<&str> {
            str_at(e, "/annotations/org.opencontainers.image.ref.name")
        }
        let chosen: Vec<&Value> = match &self.tag {
            Some(t) => all
                .iter()
                .copied()
                .filter(|e| tag_of(e) == Some(t.as_str()))
                .collect(),
            None => all.clone(),
        };
        let mut digests: Vec<&str> = chosen.iter().filter_map(|e| str_at(e, "/digest")).collect();
        digests.sort();
        digests.dedup();
        let entry = match (digests.len(), &self.tag) {
            (0, Some(t)) => {
                let mut tags: Vec<&str> = all.iter().filter_map(|e| tag_of(e)).collect();
                tags.sort();
                tags.dedup();
                return Err(BaseError::NotFound {
                    base: self.reference.clone(),
                    detail: format!(
                        "the layout has no image tagged '{t}' (it has {})",
                        if tags.is_empty() {
                            "no tags".into()
                        } else {
                            tags.join(", ")
                        }
                    ),
                });
            }
            (0, None) => return Err(self.invalid("its index.json lists no image".into())),
            (1, _) => chosen[0],
            // Several images without a tag: one per platform (a layout whose index.json
            // is itself the multi-platform index) is a choice by platform; else ambiguous.
            _ if chosen.iter().all(|e| entry_platform(e).is_some()) => {
                let d =
                    platform_manifest(&top, wanted).map_err(|available| BaseError::NoPlatform {
                        base: self.reference.clone(),
                        wanted: wanted.clone(),
                        available,
                    })?;
                return self.platform_image(None, &d, wanted);
            }
            _ => {
                return Err(self.invalid(format!(
                    "it holds {} images; name one as oci:DIR:TAG",
                    digests.len()
                )));
            }
        };
        let digest = str_at(entry, "/digest").unwrap_or_default();
        let bytes = self.document(digest, "the image index or manifest")?;
        let doc: Value = serde_json::from_slice(&bytes)
            .map_err(|e| self.invalid(format!("{digest} is not JSON: {e}")))?;
        if is_index(&doc) {
            let d = platform_manifest(&doc, wanted).map_err(|available| BaseError::NoPlatform {
                base: self.reference.clone(),
                wanted: wanted.clone(),
                available,
            })?;
            self.platform_image(Some(digest.to_owned()), &d, wanted)
        } else {
            self.manifest_image(None, bytes, &doc, wanted)
        }
    }

    fn platform_image(
        &self,
        index_digest: Option<String>,
        digest: &str,
        wanted: &Platform,
    ) -> Result<BaseImage, BaseError> {
        let bytes = self.document(digest, "the platform manifest")?;
        let doc: Value = serde_json::from_slice(&bytes)
            .map_err(|e| self.invalid(format!("{digest} is not JSON: {e}")))?;
        if is_index(&doc) {
            // An index inside an index: valid OCI, but no image tool writes it for bases.
            return Err(media_err(
                &self.reference,
                &format!("the platform manifest {digest}"),
                str_at(&doc, "/mediaType").unwrap_or(OCI_INDEX),
            ));
        }
        self.manifest_image(index_digest, bytes, &doc, wanted)
    }

    fn manifest_image(
        &self,
        index_digest: Option<String>,
        manifest: Vec<u8>,
        doc: &Value,
        wanted: &Platform,
    ) -> Result<BaseImage, BaseError> {
        check_manifest_type(&self.reference, doc)?;
        let config_digest = str_at(doc, "/config/digest")
            .ok_or_else(|| self.invalid("its manifest names no config".into()))?;
        let config = self.document(config_digest, "the config")?;
        let image =
            BaseImage::from_documents(&self.reference, index_digest, manifest, config, wanted)?;
        for (i, l) in image.layers.iter().enumerate() {
            self.check_blob(&l.digest, i)?;
        }
        Ok(image)
    }

    /// Layer `index`'s blob is there, or the error says why not.
    fn check_blob(&self, digest: &str, index: usize) -> Result<(), BaseError> {
        let what = format!("layer {} ({digest})", index + 1);
        if let Some(a) = &self.archive {
            let path = format!("blobs/sha256/{}", hex_of(digest).unwrap_or_default());
            if let Some((expected, actual)) = a.bad.get(&path) {
                return Err(BaseError::Digest {
                    base: self.reference.clone(),
                    what,
                    expected: expected.clone(),
                    actual: actual.clone(),
                });
            }
        }
        if !self.blobs.contains(digest) {
            return Err(self.invalid(format!("it does not hold {what}")));
        }
        Ok(())
    }

    /// `docker save`'s `manifest.json` (no OCI manifest): the manifest is the OCI one
    /// hab-oci writes for the config and layers, so its digest is reproducible.
    fn docker_image(&self, a: &Archive, wanted: &Platform) -> Result<BaseImage, BaseError> {
        let entries: Value = serde_json::from_slice(&self.json_file("manifest.json")?)
            .map_err(|e| self.invalid(format!("its manifest.json is not JSON: {e}")))?;
        let entries = entries.as_array().cloned().unwrap_or_default();
        let [entry] = <[Value; 1]>::try_from(entries).map_err(|v| {
            self.invalid(format!(
                "its manifest.json lists {} images, not one",
                v.len()
            ))
        })?;
        let config_path = str_at(&entry, "/Config")
            .ok_or_else(|| self.invalid("its manifest.json names no Config".into()))?;
        let config = self.json_file(&clean(config_path))?;
        let parsed = BaseConfig::parse(&config)
            .map_err(|e| self.invalid(format!("its config {config_path} is {e}")))?;
        let paths: Vec<&str> = entry
            .get("Layers")
            .and_then(Value::as_array)
            .map(|l| l.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if paths.len() != parsed.diff_ids.len() {
            return Err(self.invalid(format!(
                "its manifest.json lists {} layers, its config {} diff_ids",
                paths.len(),
                parsed.diff_ids.len()
            )));
        }
        let mut layers = Vec::new();
        for (i, (path, diff_id)) in paths.iter().zip(&parsed.diff_ids).enumerate() {
            let real = a.resolve(&clean(path)).to_owned();
            let (digest, size) = match a.files.get(&real) {
                Some(f) => f.clone(),
                // A layer tar whose first bytes looked like JSON (a first entry named `{…`).
                None => match a.json.get(&real) {
                    Some(bytes) => {
                        let mut w = self.blobs.writer().map_err(|e| self.io(&real, e))?;
                        w.write_all(bytes).map_err(|e| self.io(&real, e))?;
                        let (d, _) = w.commit_hashed().map_err(|e| self.io(&real, e))?;
                        (d, bytes.len() as u64)
                    }
                    None => return Err(self.invalid(format!("it does not hold layer {path}"))),
                },
            };
            let compression = self.magic(&digest)?;
            // The config's diff_id is the uncompressed tar's digest: for an uncompressed
            // layer (what `docker save` writes) it must be the blob's own.
            if compression == Compression::None && &digest != diff_id {
                return Err(BaseError::Digest {
                    base: self.reference.clone(),
                    what: format!("layer {} ({path})", i + 1),
                    expected: diff_id.clone(),
                    actual: digest,
                });
            }
            layers.push(LayerDescriptor {
                digests: LayerDigests {
                    diff_id: diff_id.clone(),
                    digest,
                    size,
                    media_type: compression.media_type(),
                },
                annotations: BTreeMap::new(),
            });
        }
        let built = with_config(config, &layers).map_err(|e| self.invalid(e.to_string()))?;
        BaseImage::from_documents(&self.reference, None, built.manifest, built.config, wanted)
    }

    fn io(&self, path: &str, source: io::Error) -> BaseError {
        BaseError::Io {
            base: self.reference.clone(),
            path: self.blobs.root().join(path),
            source,
        }
    }

    /// How an unpacked blob is compressed, by its first bytes.
    fn magic(&self, digest: &str) -> Result<Compression, BaseError> {
        let path = self.blobs.path(digest).unwrap_or_default();
        let mut head = [0u8; 4];
        let n = File::open(&path)
            .and_then(|mut f| f.read(&mut head))
            .map_err(|source| BaseError::Io {
                base: self.reference.clone(),
                path: path.clone(),
                source,
            })?;
        Ok(match &head[..n] {
            [0x1f, 0x8b, ..] => Compression::Gzip,
            [0x28, 0xb5, 0x2f, 0xfd] => Compression::Zstd,
            _ => Compression::None,
        })
    }
}

impl Archive {
    fn resolve<'a>(&'a self, path: &'a str) -> &'a str {
        crate::import::resolve_link(&self.links, path)
    }
}

/// Reads an archive once: small JSON files kept in memory, every other file hashed into
/// `blobs` (under its digest; a file named `blobs/sha256/HEX` only if it hashes to HEX).
fn unpack_archive(reference: &str, archive: File, blobs: &BlobDir) -> Result<Archive, BaseError> {
    let read_err = |e: io::Error| BaseError::Invalid {
        base: reference.to_owned(),
        detail: format!("reading the archive: {e}"),
    };
    let mut found = Archive::default();
    let mut tar = tar::Archive::new(io::BufReader::new(archive));
    for entry in tar.entries().map_err(read_err)? {
        let mut e = entry.map_err(read_err)?;
        let path = clean(&e.path().map_err(read_err)?.to_string_lossy());
        let kind = e.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            let target = crate::import::link_target(&e, &path).map_err(read_err)?;
            found.links.insert(path, target);
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        let size = e.size();
        let (head, rest) = peek(&mut e, 4).map_err(read_err)?;
        if matches!(head.first(), Some(b'{' | b'[')) && size <= MAX_JSON {
            let mut bytes = head;
            rest.read_to_end(&mut bytes).map_err(read_err)?;
            found.json.insert(path, bytes);
            continue;
        }
        let named = path
            .strip_prefix("blobs/sha256/")
            .map(|h| format!("sha256:{h}"))
            .filter(|d| hex_of(d).is_some());
        if named.as_deref().is_some_and(|d| blobs.contains(d)) {
            // Already unpacked (and checked) by an earlier run: the tar reader skips it.
            let d = named.unwrap_or_default();
            found.files.insert(path, (d, size));
            continue;
        }
        let mut w = blobs.writer().map_err(|source| BaseError::Io {
            base: reference.to_owned(),
            path: blobs.root().to_owned(),
            source,
        })?;
        w.write_all(&head).map_err(read_err)?;
        io::copy(rest, &mut w).map_err(read_err)?;
        let actual = w.digest();
        match named {
            Some(d) if d != actual => {
                // Dropped: an error only if the image uses it (then naming the layer).
                found.bad.insert(path, (d, actual));
            }
            _ => {
                let (d, _) = w.commit_hashed().map_err(|source| BaseError::Io {
                    base: reference.to_owned(),
                    path: blobs.root().to_owned(),
                    source,
                })?;
                found.files.insert(path, (d, size));
            }
        }
    }
    if !found.json.contains_key("index.json") && !found.json.contains_key("manifest.json") {
        return Err(BaseError::Invalid {
            base: reference.to_owned(),
            detail: "the archive has neither an index.json nor a manifest.json".into(),
        });
    }
    Ok(found)
}

/// What the base's layers leave visible, whiteouts applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BaseFiles {
    /// `/etc/passwd` of the merged filesystem, when it is a regular file.
    pub passwd: Option<String>,
    pub group: Option<String>,
    /// Every visible path, relative to `/` without a leading or trailing `/`.
    pub paths: BTreeSet<String>,
    /// Of those, the directories.
    pub dirs: BTreeSet<String>,
}

/// Walks the base's layers bottom to top (each decompressed by its media type and hashed
/// against its digest), applying each layer's whiteouts to the layers below it: `.wh.NAME`
/// deletes NAME, `.wh..wh..opq` empties its directory; a later layer's entry replaces an
/// earlier one (a non-directory replacing a directory hides what was below it).
pub fn base_files(image: &BaseImage) -> Result<BaseFiles, BaseError> {
    let mut out = BaseFiles::default();
    for (i, layer) in image.layers.iter().enumerate() {
        let mut reader = image.open_layer(i)?;
        let what = format!("layer {} ({})", i + 1, layer.digest);
        let err = |e: io::Error| BaseError::from_read(&image.reference, &what, e);
        let walked = walk_layer(&mut reader, layer.compression);
        // The rest of the blob (what the decoder did not need, or everything after a
        // decoding error) is hashed too: bytes that are not the layer's are reported as
        // such, not as the decoding error they cause.
        let rest = io::copy(&mut reader, &mut io::sink());
        let Changes {
            added,
            removed,
            opaque,
            tables,
        } = match (walked, rest) {
            (_, Err(e)) => return Err(err(e)),
            (Err(e), Ok(_)) => return Err(err(e)),
            (Ok(c), Ok(_)) => c,
        };
        for p in removed {
            remove_tree(&mut out, &p);
        }
        for d in opaque {
            let prefix = format!("{d}/");
            let under: Vec<String> = out
                .paths
                .iter()
                .filter(|p| d.is_empty() || p.starts_with(&prefix))
                .cloned()
                .collect();
            for p in under {
                out.paths.remove(&p);
                out.dirs.remove(&p);
            }
            tables_gone(&mut out, |p| d.is_empty() || p.starts_with(&prefix));
        }
        for (path, is_dir) in added {
            if !is_dir && out.dirs.contains(&path) {
                remove_tree(&mut out, &path);
            }
            if is_dir {
                // A directory over a file or link replaces it.
                if out.paths.contains(&path) && !out.dirs.contains(&path) {
                    tables_gone(&mut out, |p| p == path);
                }
                out.dirs.insert(path.clone());
            } else {
                out.dirs.remove(&path);
                tables_gone(&mut out, |p| p == path);
            }
            let mut p = path.as_str();
            while let Some((up, _)) = p.rsplit_once('/') {
                out.paths.insert(up.to_owned());
                out.dirs.insert(up.to_owned());
                p = up;
            }
            out.paths.insert(path);
        }
        for (path, text) in tables {
            if path == "etc/passwd" {
                out.passwd = text;
            } else {
                out.group = text;
            }
        }
    }
    Ok(out)
}

/// What one layer does to the layers below it.
#[derive(Default)]
struct Changes {
    /// Paths it adds, and whether each is a directory.
    added: Vec<(String, bool)>,
    /// `.wh.NAME` whiteouts: paths it deletes.
    removed: Vec<String>,
    /// `.wh..wh..opq`: directories whose lower content it hides.
    opaque: Vec<String>,
    /// `etc/passwd`/`etc/group` it adds, with their text when they are regular files.
    tables: Vec<(String, Option<String>)>,
}

fn walk_layer(blob: &mut dyn Read, compression: Compression) -> io::Result<Changes> {
    let mut stream = decompressed(blob, compression)?;
    let mut c = Changes::default();
    let mut tar = tar::Archive::new(&mut stream);
    for entry in tar.entries()? {
        let mut e = entry?;
        let raw = e.path()?.to_string_lossy().into_owned();
        let path = clean(&raw);
        if path.is_empty() || raw.split('/').any(|c| c == "..") {
            continue;
        }
        let (dir, name) = match path.rsplit_once('/') {
            Some((d, n)) => (d.to_owned(), n),
            None => (String::new(), path.as_str()),
        };
        if name == ".wh..wh..opq" {
            c.opaque.push(dir);
            continue;
        }
        if let Some(gone) = name.strip_prefix(".wh.") {
            c.removed.push(if dir.is_empty() {
                gone.to_owned()
            } else {
                format!("{dir}/{gone}")
            });
            continue;
        }
        let kind = e.header().entry_type();
        if path == "etc/passwd" || path == "etc/group" {
            let text = if kind.is_file() && e.size() <= MAX_USER_TABLE {
                let mut bytes = Vec::new();
                e.read_to_end(&mut bytes)?;
                Some(String::from_utf8_lossy(&bytes).into_owned())
            } else {
                None
            };
            c.tables.push((path.clone(), text));
        }
        c.added.push((path, kind.is_dir()));
    }
    // Tar padding and the compressed trailer: read so that the blob's end is reached.
    io::copy(&mut stream, &mut io::sink())?;
    Ok(c)
}

/// Removes `path` and everything under it.
fn remove_tree(out: &mut BaseFiles, path: &str) {
    let prefix = format!("{path}/");
    out.paths.retain(|p| p != path && !p.starts_with(&prefix));
    out.dirs.retain(|p| p != path && !p.starts_with(&prefix));
    tables_gone(out, |p| p == path || p.starts_with(&prefix));
}

/// Forgets `/etc/passwd` or `/etc/group` when `gone` says their path went.
fn tables_gone(out: &mut BaseFiles, gone: impl Fn(&str) -> bool) {
    if gone("etc/passwd") {
        out.passwd = None;
    }
    if gone("etc/group") {
        out.group = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_by_kind() {
        let p = |s: &str| BaseSpec::parse(s).expect(s);
        assert_eq!(
            p("oci:/tmp/base:1.0"),
            BaseSpec::OciDir {
                dir: "/tmp/base".into(),
                tag: Some("1.0".into())
            }
        );
        assert_eq!(
            p("oci:/tmp/base"),
            BaseSpec::OciDir {
                dir: "/tmp/base".into(),
                tag: None
            }
        );
        // The part after the last `:` is a tag only without a `/`.
        assert_eq!(
            p("oci:./a:b/c"),
            BaseSpec::OciDir {
                dir: "./a:b/c".into(),
                tag: None
            }
        );
        assert_eq!(
            p("oci:dir:"),
            BaseSpec::OciDir {
                dir: "dir".into(),
                tag: None
            }
        );
        assert_eq!(p("oci-archive:b.tar"), BaseSpec::OciArchive("b.tar".into()));
        assert_eq!(
            p("docker-archive:/x/b.tar"),
            BaseSpec::DockerArchive("/x/b.tar".into())
        );
        assert_eq!(
            p("127.0.0.1:5000/base:1"),
            BaseSpec::Registry("127.0.0.1:5000/base:1".into())
        );
        assert_eq!(p("docker://busybox"), BaseSpec::Registry("busybox".into()));
        for s in ["oci:/tmp/base:1.0", "oci-archive:b.tar", "docker.io/x/y:1"] {
            assert_eq!(p(s).to_string(), s);
        }
        for bad in ["oci:", "oci-archive:", "docker-daemon:x:1", ""] {
            assert!(
                matches!(BaseSpec::parse(bad), Err(BaseError::Spec { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn index_platform_choice() {
        let index = serde_json::json!({"manifests": [
            {"digest": "sha256:v7", "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
            {"digest": "sha256:arm64", "platform": {"os": "linux", "architecture": "arm64"}},
            {"digest": "sha256:v8", "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            {"digest": "sha256:amd", "platform": {"os": "linux", "architecture": "amd64"}},
            {"digest": "sha256:att", "platform": {"os": "unknown", "architecture": "unknown"}},
        ]});
        let p = |a: &str, v: Option<&str>| Platform {
            os: "linux".into(),
            architecture: a.into(),
            variant: v.map(str::to_owned),
        };
        let pick = |w: &Platform| platform_manifest(&index, w);
        assert_eq!(pick(&p("amd64", None)), Ok("sha256:amd".into()));
        // The exact variant wins over an entry without one.
        assert_eq!(pick(&p("arm64", Some("v8"))), Ok("sha256:v8".into()));
        assert_eq!(pick(&p("arm64", None)), Ok("sha256:arm64".into()));
        assert_eq!(pick(&p("arm", Some("v6"))).map_err(|a| a.len()), Err(4));
        let missing = pick(&p("s390x", None)).expect_err("none");
        assert!(
            missing.iter().all(|m| m.os == "linux"),
            "attestations are not platforms"
        );
    }

    #[test]
    fn config_fields() {
        let c = BaseConfig::parse(
            br#"{"os":"linux","architecture":"arm64","variant":"v8",
                "config":{"Env":["A=1"],"User":"","WorkingDir":"/w","Entrypoint":null,
                "Cmd":["sh"],"StopSignal":"SIGINT","ExposedPorts":{"9/udp":{},"80/tcp":{}}},
                "rootfs":{"diff_ids":["sha256:x"]}}"#,
        )
        .expect("parse");
        assert_eq!(c.platform.to_string(), "linux/arm64/v8");
        assert_eq!(c.user, None);
        assert_eq!(c.working_dir.as_deref(), Some("/w"));
        assert_eq!(c.entrypoint, None);
        assert_eq!(c.exposed_ports, ["80/tcp", "9/udp"]);
        assert_eq!(c.stop_signal.as_deref(), Some("SIGINT"));
        assert!(BaseConfig::parse(b"[1]").is_err());
    }
}
