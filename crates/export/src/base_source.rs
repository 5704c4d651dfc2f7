//! The base image of an export (`--base-image`), the I/O part: the base opened once, the
//! manifest, config and layers of each target's platform read (a local layout or archive,
//! or a registry through the caller's [`Publisher`]), every layer's bytes in a
//! digest-checked blob directory (hab-oci's layer cache, else a temporary one), from which
//! `/etc/passwd`, `/etc/group` and the base's paths are read. All of it before any package
//! work, so a bad base fails the export before an output is written.

use std::path::PathBuf;

use hart::PackageTarget;
use oci_image::base::{BaseError, BaseFiles, BaseImage, BaseSpec, BlobDir, LocalBase, base_files};
use oci_image::{LayerDescriptor, Platform};

use crate::cache::LayerCache;
use crate::error::io_at;
use crate::operation::{Events, Publisher};
use crate::{ExportError, PublishError};

/// What a registry holds for a base reference and a platform.
#[derive(Debug)]
pub enum BaseRead {
    Found {
        /// `registry/repository` of the reference (where its blobs can be mounted from).
        repository: String,
        index_digest: Option<String>,
        manifest: Vec<u8>,
        config: Vec<u8>,
    },
    NoImage,
    /// An index without the platform: the platforms it has.
    NoPlatform(Vec<Platform>),
    Unsupported {
        media_type: String,
    },
}

/// A target's base, read and its layers' bytes at hand.
#[derive(Debug)]
pub struct Based {
    pub image: BaseImage,
    pub files: BaseFiles,
    /// `registry/repository` of a registry base: a push to the same registry mounts from it.
    pub repository: Option<String>,
}

impl Based {
    /// The base's layers as our manifest lists them, with where their bytes are.
    pub fn layers(&self) -> Result<Vec<(LayerDescriptor, PathBuf)>, ExportError> {
        (0..self.image.layers.len())
            .map(|i| Ok((self.image.layers[i].descriptor(), self.image.layer_path(i)?)))
            .collect()
    }
}

/// Every target's base (in the targets' order) and the temporary blob directory that
/// holds them when there is no layer cache.
pub struct Bases {
    pub per_target: Vec<Based>,
    _tmp: Option<tempfile::TempDir>,
}

/// Reads `reference` for each of `targets`. `None` without a base.
pub fn open(
    reference: Option<&str>,
    targets: &[PackageTarget],
    cache: Option<&LayerCache>,
    publisher: Option<&dyn Publisher>,
    events: &dyn Events,
) -> Result<Option<Bases>, ExportError> {
    let Some(reference) = reference else {
        return Ok(None);
    };
    let spec = BaseSpec::parse(reference)?;
    let (blobs, tmp) = match cache {
        Some(c) => (c.base_blobs(), None),
        None => {
            let dir = std::env::temp_dir();
            let tmp = hab_oci_fs::temp::dir_in(&dir, "base").map_err(io_at(&dir))?;
            events.owns(tmp.path());
            (BlobDir::new(tmp.path()), Some(tmp))
        }
    };
    events.status(&format!("Reading the base image {reference}"));
    let local = if spec.is_registry() {
        None
    } else {
        Some(LocalBase::open(&spec, &blobs)?)
    };
    let mut per_target = Vec::new();
    for t in targets {
        let platform = crate::platform::required(t)?;
        let (mut image, repository) = match &local {
            Some(l) => (l.image(&platform)?, None),
            None => {
                let publisher = publisher.ok_or_else(|| {
                    ExportError::Plan(
                        "a registry base image without a registry client (internal error)".into(),
                    )
                })?;
                registry_image(reference, &platform, publisher, &blobs, events)?
            }
        };
        if image.blobs.is_none() {
            image.blobs = Some(blobs.clone());
        }
        // Used now: the cache's eviction (least recently used first) keeps them longer.
        if let Some(c) = cache {
            for l in &image.layers {
                let _ = c.base_blob(&l.digest);
            }
        }
        let files = base_files(&image)?;
        per_target.push(Based {
            image,
            files,
            repository,
        });
    }
    Ok(Some(Bases {
        per_target,
        _tmp: tmp,
    }))
}

/// A registry base for `platform`: its documents, and each layer not in `blobs` yet
/// fetched into it (named only once its bytes hash to the digest).
fn registry_image(
    reference: &str,
    platform: &Platform,
    publisher: &dyn Publisher,
    blobs: &BlobDir,
    events: &dyn Events,
) -> Result<(BaseImage, Option<String>), ExportError> {
    let failed = |source: PublishError| ExportError::BaseRegistry {
        base: reference.to_owned(),
        source,
    };
    let (repository, index_digest, manifest, config) =
        match publisher.read_base(reference, platform).map_err(failed)? {
            BaseRead::Found {
                repository,
                index_digest,
                manifest,
                config,
            } => (repository, index_digest, manifest, config),
            BaseRead::NoImage => {
                return Err(BaseError::NotFound {
                    base: reference.to_owned(),
                    detail: "the registry has no such image".into(),
                }
                .into());
            }
            BaseRead::NoPlatform(available) => {
                return Err(BaseError::NoPlatform {
                    base: reference.to_owned(),
                    wanted: platform.clone(),
                    available,
                }
                .into());
            }
            BaseRead::Unsupported { media_type } => {
                return Err(BaseError::MediaType {
                    base: reference.to_owned(),
                    what: "manifest".into(),
                    media_type,
                }
                .into());
            }
        };
    let mut image = BaseImage::from_documents(reference, index_digest, manifest, config, platform)?;
    let missing: Vec<usize> = (0..image.layers.len())
        .filter(|&i| !blobs.contains(&image.layers[i].digest))
        .collect();
    if !missing.is_empty() {
        let bytes: u64 = missing.iter().map(|&i| image.layers[i].size).sum();
        events.status(&format!(
            "Fetching {} layers of the base image ({bytes} bytes) into the layer cache, to read its /etc/passwd, /etc/group and paths",
            missing.len()
        ));
    }
    for i in missing {
        let layer = &image.layers[i];
        let path = blobs
            .path(&layer.digest)
            .ok_or_else(|| ExportError::Plan(format!("{}: not a sha256 digest", layer.digest)))?;
        let mut w = blobs.writer().map_err(io_at(&path))?;
        publisher
            .fetch_blob(reference, &layer.digest, layer.size, &mut w)
            .map_err(failed)?;
        w.commit(&layer.digest)
            .map_err(|e| BaseError::from_read(reference, &format!("layer {}", layer.digest), e))?;
    }
    image.blobs = Some(blobs.clone());
    Ok((image, Some(repository)))
}
