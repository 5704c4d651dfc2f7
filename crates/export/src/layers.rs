//! The one owner of package layers: cache keys, and every way a planned layer comes to be —
//! a cache hit (the depot's prebuild tap fills the cache while packages are decoded for
//! their metadata), a staged uncompressed layer compressed once the plan is known, a group
//! replayed from its members' cached layers, or a fresh build from the harts. Each finished
//! layer is announced as a typed [`LayerReady`] (the push subscribes to those), and the
//! manifest annotations are derived from the typed members at the end
//! (docs/layer-format-v1.md, "Annotations").

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::BufWriter;
use std::path::PathBuf;
use std::sync::Arc;

use depot::{PayloadTap, ResolvedClosure, ResolvedPackage};
use hart::PackageIdent;
use oci_image::image::build_image;
use oci_image::{
    BuiltImage, Compression, EntryMeta, LayerDescriptor, LayerDigests, LayerWriter, OciDir,
};
use rayon::prelude::*;
use serde::Serialize;

use crate::cache::{CacheStats, LayerCache};
use crate::cache_source::SourceLayer;
use crate::plan::ImagePlan;
use crate::prebuild::PrebuildTap;
use crate::{ExportError, LAYER_FORMAT, Progress, native, record, rewrite};

/// Annotation keys on each layer descriptor: what a later run needs to reuse a layer
/// without decoding its harts.
pub const ANN_PACKAGES: &str = "sh.habitat.hab-oci.packages";
pub const ANN_CHECKSUMS: &str = "sh.habitat.hab-oci.checksums";
pub const ANN_FORMAT: &str = "sh.habitat.hab-oci.layer-format";

/// The most record text a manifest gets (registries refuse manifests above 4 MiB; the rest
/// of a manifest of 125 layers is far below the difference).
const MAX_RECORDS: usize = 3 << 20;

/// One package of a layer: its ident and the checksum of its hart (what fixes its bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    pub ident: PackageIdent,
    pub checksum: String,
}

impl Member {
    fn of(p: &ResolvedPackage) -> Member {
        Member {
            ident: p.ident().clone(),
            checksum: p.checksum().to_owned(),
        }
    }
}

/// The identity of a layer's bytes: layer format, compression and its members' checksums
/// in layer order. The cache is keyed by it; nothing else derives one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LayerKey(String);

impl LayerKey {
    pub fn new<'a>(checksums: impl IntoIterator<Item = &'a str>, compression: Compression) -> Self {
        let sums: Vec<&str> = checksums.into_iter().collect();
        let text = format!(
            "hab-oci layer\nformat {LAYER_FORMAT}\ncompression {}\n{}\n",
            compression.name(),
            sums.join("\n")
        );
        LayerKey(
            oci_image::sha256_digest(text.as_bytes())
                .trim_start_matches("sha256:")
                .to_owned(),
        )
    }

    pub fn of(members: &[Member], compression: Compression) -> Self {
        LayerKey::new(members.iter().map(|m| m.checksum.as_str()), compression)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where a layer's bytes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LayerSource {
    /// The layer cache, from an earlier run.
    Cache,
    /// The layer cache, filled by this run's prebuild tap while the package was decoded.
    Prebuilt,
    /// Compressed from the package's staged uncompressed layer.
    Staged,
    /// A group replayed from its members' cached layers.
    Regrouped,
    /// Built from the harts.
    Built,
    /// Not built: a cache source in the registry holds it (no byte of it read or sent).
    Registry,
    /// A layer of the base image (`--base-image`), unchanged.
    Base,
}

/// A package layer is in the store: the event the push subscribes to.
#[derive(Debug, Clone)]
pub struct LayerReady {
    /// Its index in the plan.
    pub index: usize,
    pub members: Vec<Member>,
    pub digests: LayerDigests,
    pub source: LayerSource,
    /// The blob in the store; `None` for a layer reused from a cache source (only the
    /// registry has its bytes).
    pub path: Option<PathBuf>,
}

/// The manifest annotations of a layer, from its typed members and its packages' records
/// (`record`: [`crate::record::encode`] of the same packages; `None` for the extras layer).
pub fn annotations(members: &[Member], record: Option<String>) -> BTreeMap<String, String> {
    let join = |f: &dyn Fn(&Member) -> String| members.iter().map(f).collect::<Vec<_>>().join(",");
    let mut a = BTreeMap::from([
        (ANN_PACKAGES.to_owned(), join(&|m| m.ident.to_string())),
        (ANN_FORMAT.to_owned(), LAYER_FORMAT.to_owned()),
    ]);
    // The extras layer has no packages and so no checksums (layer format v1 writes none).
    if !members.is_empty() {
        a.insert(ANN_CHECKSUMS.to_owned(), join(&|m| m.checksum.clone()));
    }
    if let Some(r) = record {
        a.insert(crate::record::ANN_RECORD.to_owned(), r);
    }
    a
}

/// A layer's label for progress: its packages' idents.
pub fn label(members: &[&ResolvedPackage]) -> String {
    members
        .iter()
        .map(|p| p.ident().to_string())
        .collect::<Vec<_>>()
        .join(" + ")
}

/// The packages of planned layer `index`, in layer order.
pub fn packages<'a>(
    closure: &'a ResolvedClosure,
    plan: &ImagePlan,
    index: usize,
) -> Vec<&'a ResolvedPackage> {
    plan.layers[index]
        .members
        .iter()
        .map(|&m| &closure.packages[m])
        .collect()
}

/// The package layers of an export and where they come from.
#[derive(Debug)]
pub struct Layers {
    cache: Option<Arc<LayerCache>>,
    compression: Compression,
    /// Layers cache sources hold that the push's repository has (confirmed): used as they
    /// are, by key.
    remote: HashMap<LayerKey, SourceLayer>,
    /// `--verify-cache-source`: layers of cache sources to compare with the local builds.
    compare: HashMap<LayerKey, SourceLayer>,
    verified: std::sync::atomic::AtomicUsize,
}

/// The image the native build produced, with each package layer's typed members.
#[derive(Debug)]
pub struct BuiltLayers {
    pub image: BuiltImage,
    /// One per package layer, in plan order.
    pub ready: Vec<LayerReady>,
    /// The package records were too large for a manifest and were not written.
    pub records_left_out: bool,
}

impl Layers {
    pub fn new(cache: Option<Arc<LayerCache>>, compression: Compression) -> Layers {
        Layers {
            cache,
            compression,
            remote: HashMap::new(),
            compare: HashMap::new(),
            verified: Default::default(),
        }
    }

    /// Layers of cache sources to check: every layer is built, and [`Layers::verify`]
    /// compares those a source holds with the local build.
    pub fn verify_against(&mut self, layers: HashMap<LayerKey, SourceLayer>) {
        self.compare = layers;
    }

    /// After the build: a warning for each layer a cache source holds with other bytes
    /// than the local build (a record that lies, or a build that is not reproducible). The
    /// image holds the local layers either way.
    pub fn verify(&self, ready: &[LayerReady]) -> Vec<String> {
        let mut warnings = Vec::new();
        let mut checked = 0;
        for l in ready {
            let Some(s) = self.compare.get(&self.key(&l.members)) else {
                continue;
            };
            checked += 1;
            let (a, b) = (&l.digests, &s.digests);
            if a.digest != b.digest || a.diff_id != b.diff_id || a.size != b.size {
                warnings.push(format!(
                    "cache source {} holds the layer of {} as {} (diff_id {}, {} bytes), but it builds here as {} (diff_id {}, {} bytes): the source's record is not to be trusted; the local layer is pushed",
                    s.repository,
                    l.members.iter().map(|m| m.ident.to_string()).collect::<Vec<_>>().join(", "),
                    b.digest, b.diff_id, b.size, a.digest, a.diff_id, a.size
                ));
            }
        }
        if !self.compare.is_empty() && warnings.is_empty() {
            self.verified
                .store(checked, std::sync::atomic::Ordering::Relaxed);
        }
        warnings
    }

    /// Layers [`Layers::verify`] found equal to their cache source's.
    pub fn verified(&self) -> usize {
        self.verified.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Layers of cache sources confirmed in the push's repository: a planned layer with
    /// one of these keys is not built.
    pub fn set_remote(&mut self, remote: HashMap<LayerKey, SourceLayer>) {
        self.remote = remote;
    }

    /// Are any cache-source layers in use?
    pub fn reuses_any(&self) -> bool {
        !self.remote.is_empty()
    }

    /// Is planned layer `members` held by a cache source?
    pub fn in_registry(&self, members: &[Member]) -> bool {
        self.remote.contains_key(&self.key(members))
    }

    pub fn compression(&self) -> Compression {
        self.compression
    }

    pub fn cache(&self) -> Option<&LayerCache> {
        self.cache.as_deref()
    }

    /// The members of planned layer `index`.
    pub fn members(closure: &ResolvedClosure, plan: &ImagePlan, index: usize) -> Vec<Member> {
        packages(closure, plan, index)
            .into_iter()
            .map(Member::of)
            .collect()
    }

    pub fn key(&self, members: &[Member]) -> LayerKey {
        LayerKey::of(members, self.compression)
    }

    /// The depot's payload tap: single-package layers built into the cache while packages
    /// are decoded for their metadata (one decode for both). `None` without a cache, or
    /// when per-package layers would be built for nothing (`single_layer`).
    pub fn prebuild_tap(&self, single_layer: bool) -> Option<Arc<dyn PayloadTap>> {
        let cache = self.cache.clone().filter(|_| !single_layer)?;
        Some(Arc::new(PrebuildTap::new(cache, self.compression)))
    }

    /// For a push-only export: layers an earlier push confirmed in `repository` are linked
    /// from the cache without being read (see [`LayerCache::trust_pushed_to`]).
    pub fn trust_pushed_to(&self, repository: &str) {
        if let Some(c) = &self.cache {
            c.trust_pushed_to(repository);
        }
    }

    /// Did an earlier push confirm the layer of `members` in `repository`?
    pub fn pushed_to(&self, members: &[Member], repository: &str) -> bool {
        self.cache
            .as_deref()
            .is_some_and(|c| c.pushed_to(&self.key(members), repository))
    }

    /// Records that a push confirmed every layer of `ready` in `repository`.
    pub fn record_pushed(&self, ready: &[LayerReady], repository: &str) {
        if let Some(c) = &self.cache {
            for l in ready {
                c.record_pushed(&self.key(&l.members), repository);
            }
        }
    }

    /// Trims the cache to its bound.
    pub fn evict(&self) -> Result<u64, ExportError> {
        self.cache.as_deref().map_or(Ok(0), LayerCache::evict)
    }

    pub fn stats(&self) -> Option<CacheStats> {
        self.cache.as_deref().map(LayerCache::stats)
    }

    /// Every layer of `plan` into `store` (package layers in parallel, largest first so
    /// both cores stay busy; the extras layer on top), then config and manifest.
    /// `on_ready` hears of each package layer as soon as it is in the store.
    pub fn build(
        &self,
        closure: &ResolvedClosure,
        plan: &ImagePlan,
        store: &OciDir,
        progress: &dyn Progress,
        on_ready: &(dyn Fn(&LayerReady) + Sync),
    ) -> Result<BuiltLayers, ExportError> {
        let pkgs = &closure.packages;
        let mut order: Vec<usize> = (0..plan.layers.len()).collect();
        let size_of = |i: usize| -> u64 {
            plan.layers[i]
                .members
                .iter()
                .map(|&m| pkgs[m].payload_len())
                .sum()
        };
        order.sort_by_key(|&i| std::cmp::Reverse(size_of(i)));
        let mut ready: Vec<LayerReady> = order
            .par_iter()
            .map(|&i| {
                let l = self.layer(closure, plan, i, store, progress)?;
                on_ready(&l);
                Ok(l)
            })
            .collect::<Result<_, ExportError>>()?;
        ready.sort_by_key(|l| l.index);
        let mut records: Vec<String> = ready
            .iter()
            .map(|l| record::encode(&packages(closure, plan, l.index)))
            .collect();
        // Registries refuse manifests above 4 MiB: an image whose records would come near
        // that goes without them (it then cannot be a cache source, but it can be pushed).
        let records_left_out = records.iter().map(String::len).sum::<usize>() > MAX_RECORDS;
        if records_left_out {
            records.clear();
        }
        // The base image's layers first, unchanged (their bytes are placed in the store,
        // or confirmed in the registry, by the caller).
        let mut layers: Vec<LayerDescriptor> = plan
            .base
            .iter()
            .flat_map(|b| b.layers.iter().map(|(d, _)| d.clone()))
            .collect();
        layers.extend(ready.iter().enumerate().map(|(i, l)| LayerDescriptor {
            digests: l.digests.clone(),
            annotations: annotations(&l.members, records.get(i).cloned()),
        }));
        let extras = native::build_extras(plan, store, self.compression, progress)?;
        layers.push(LayerDescriptor {
            digests: extras,
            annotations: annotations(&[], None),
        });
        let image = build_image(&plan.config, &layers)?;
        store.put_blob(&image.config_digest, &image.config)?;
        store.put_blob(&image.manifest_digest, &image.manifest)?;
        Ok(BuiltLayers {
            image,
            ready,
            records_left_out,
        })
    }

    /// One package layer, cheapest source first.
    fn layer(
        &self,
        closure: &ResolvedClosure,
        plan: &ImagePlan,
        index: usize,
        store: &OciDir,
        progress: &dyn Progress,
    ) -> Result<LayerReady, ExportError> {
        let pkgs = packages(closure, plan, index);
        let members: Vec<Member> = pkgs.iter().map(|p| Member::of(p)).collect();
        let compression = self.compression;
        if let Some(l) = self.remote.get(&self.key(&members)) {
            progress.layer_started(index, &format!("{} (in the registry)", label(&pkgs)), 0);
            progress.layer_finished(index, &l.digests.digest, l.digests.size);
            return Ok(LayerReady {
                index,
                members,
                digests: l.digests.clone(),
                source: LayerSource::Registry,
                path: None,
            });
        }
        let (digests, source) = match self.cache.as_deref() {
            None => (
                native::build_layer(&pkgs, index, store, compression, progress)?,
                LayerSource::Built,
            ),
            Some(cache) => {
                let key = self.key(&members);
                if let Some((digests, prebuilt)) = cache.get(&key, store) {
                    progress.layer_started(index, &format!("{} (cached)", label(&pkgs)), 0);
                    progress.layer_finished(index, &digests.digest, digests.size);
                    let source = if prebuilt {
                        LayerSource::Prebuilt
                    } else {
                        LayerSource::Cache
                    };
                    (digests, source)
                } else {
                    let reused = if pkgs.len() == 1 {
                        self.compress_staged(cache, pkgs[0], index, store, progress)
                            .map(|d| (d, LayerSource::Staged))
                    } else {
                        self.replay_group(cache, &pkgs, index, store, progress)
                            .map(|d| (d, LayerSource::Regrouped))
                    };
                    let (digests, source) = match reused {
                        Some(r) => r,
                        None => (
                            native::build_layer(&pkgs, index, store, compression, progress)?,
                            LayerSource::Built,
                        ),
                    };
                    cache.put(&key, &digests, store, compression, &members);
                    (digests, source)
                }
            }
        };
        let path = store.blob_path(&digests.digest)?;
        Ok(LayerReady {
            index,
            members,
            digests,
            source,
            path: Some(path),
        })
    }

    /// A package's layer compressed from its staged uncompressed layer (see `prebuild`): the
    /// same blob a build from the hart gives, without decoding it again. `None` when nothing
    /// is staged or the staged tar does not hash to its digest (then it is discarded).
    fn compress_staged(
        &self,
        cache: &LayerCache,
        member: &ResolvedPackage,
        index: usize,
        store: &OciDir,
        progress: &dyn Progress,
    ) -> Option<LayerDigests> {
        let compression = self.compression;
        if compression == Compression::None {
            return None;
        }
        let key = LayerKey::new([member.checksum()], Compression::None);
        let (path, digest) = cache.blob_for(&key)?;
        progress.layer_started(index, &label(&[member]), member.metadata.unpacked_size);
        let advance = |n: u64| progress.layer_advanced(index, n);
        let mut tar = rewrite::CountingReader {
            inner: std::fs::File::open(&path).ok()?,
            advance: &advance,
            n: 0,
        };
        let blob = store.blob_writer().ok()?;
        let w = LayerWriter::new(BufWriter::with_capacity(1 << 20, blob), compression).ok()?;
        // A write error (full disk) leaves the staged entry alone; a tar that does not hash
        // to its digest (an uncompressed blob's digest is its diff_id) removes it.
        let (digests, buf) = w.copy_tar(&mut tar).ok()?;
        if digests.diff_id != digest {
            cache.discard(&key);
            return None;
        }
        let blob = buf.into_inner().ok()?;
        blob.commit(&digests.digest).ok()?;
        cache.note_staged_used(&key);
        progress.layer_finished(index, &digests.digest, digests.size);
        Some(digests)
    }

    /// A layer of several packages (above the layer budget) from its members' cached
    /// single-package layers: their entries replayed in order, each shared parent directory
    /// once — exactly what a build from the harts writes, read at gzip instead of xz
    /// decoding speed (a cold export has just built those single layers while reading the
    /// packages' metadata, small ones staged uncompressed). `None` when a member is not
    /// cached or its blob does not hash to its digest.
    fn replay_group(
        &self,
        cache: &LayerCache,
        members: &[&ResolvedPackage],
        index: usize,
        store: &OciDir,
        progress: &dyn Progress,
    ) -> Option<LayerDigests> {
        let compression = self.compression;
        let sources: Vec<(LayerKey, PathBuf, String, Compression)> = members
            .iter()
            .map(|p| {
                [compression, Compression::None].into_iter().find_map(|c| {
                    let key = LayerKey::new([p.checksum()], c);
                    cache
                        .blob_for(&key)
                        .map(|(path, digest)| (key, path, digest, c))
                })
            })
            .collect::<Option<_>>()?;
        let total: u64 = members.iter().map(|p| p.metadata.unpacked_size).sum();
        progress.layer_started(index, &label(members), total);
        let blob = store.blob_writer().ok()?;
        let mut w = LayerWriter::new(BufWriter::with_capacity(1 << 20, blob), compression).ok()?;
        let mut emitted: HashSet<String> = HashSet::new();
        for ((key, path, digest, stored), p) in sources.iter().zip(members) {
            let parents = hart::layout::parent_dirs(p.ident());
            let mut hashing =
                oci_image::digest::HashingReader::new(std::fs::File::open(path).ok()?);
            let replayed = replay_entries(
                &mut w,
                &mut hashing,
                *stored,
                &parents,
                &mut emitted,
                &|n| progress.layer_advanced(index, n),
            );
            if replayed.is_err() || hashing.digest() != *digest {
                // Only a member whose bytes are wrong goes; a write error (full disk) does
                // not make its entry corrupt.
                let wrong =
                    oci_image::digest::sha256_file(path).map_or(true, |(d, _)| d != *digest);
                if wrong {
                    cache.discard(key);
                }
                return None;
            }
        }
        let (digests, buf) = w.finish().ok()?;
        let blob = buf.into_inner().ok()?;
        blob.commit(&digests.digest).ok()?;
        cache.note_regrouped();
        progress.layer_finished(index, &digests.digest, digests.size);
        Some(digests)
    }
}

/// Copies one cached layer's entries into `w`, skipping parent directories an earlier
/// member already wrote, and reads the blob to its end so all of it is hashed.
fn replay_entries<W: std::io::Write>(
    w: &mut LayerWriter<W>,
    blob: &mut impl std::io::Read,
    stored: Compression,
    parents: &[String],
    emitted: &mut HashSet<String>,
    advance: &dyn Fn(u64),
) -> std::io::Result<()> {
    let mut archive = tar::Archive::new(oci_image::decompressed(blob, stored)?);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let name = entry
            .path()?
            .to_string_lossy()
            .trim_end_matches('/')
            .to_owned();
        if parents.contains(&name) && !emitted.insert(name.clone()) {
            continue;
        }
        let h = entry.header();
        let meta = EntryMeta {
            mode: h.mode()?,
            mtime: h.mtime()?,
        };
        let link = |e: &tar::Entry<'_, _>| -> std::io::Result<String> {
            Ok(e.link_name()?
                .map(|l| l.to_string_lossy().into_owned())
                .unwrap_or_default())
        };
        match h.entry_type() {
            tar::EntryType::Directory => w.dir(&name, meta)?,
            tar::EntryType::Symlink => w.symlink(&name, &link(&entry)?, meta)?,
            tar::EntryType::Link => w.hardlink(&name, &link(&entry)?, meta)?,
            _ => {
                let size = entry.size();
                w.file(&name, meta, size, &mut entry)?;
                advance(size);
            }
        }
    }
    std::io::copy(&mut archive.into_inner(), &mut std::io::sink())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_checksums_order_and_compression() {
        let a = LayerKey::new(["aa", "bb"], Compression::Gzip);
        assert_eq!(a, LayerKey::new(["aa", "bb"], Compression::Gzip));
        assert_ne!(a, LayerKey::new(["bb", "aa"], Compression::Gzip));
        assert_ne!(a, LayerKey::new(["aa", "bb"], Compression::Zstd));
        assert_eq!(a.as_str().len(), 64);
    }

    #[test]
    fn annotations_come_from_typed_members() {
        let m = |s: &str, c: &str| Member {
            ident: PackageIdent::parse_fq(s).expect("ident"),
            checksum: c.to_owned(),
        };
        let a = annotations(
            &[
                m("a/b/1/20240101000000", "c1"),
                m("a/c/2/20240101000000", "c2"),
            ],
            Some("R".into()),
        );
        assert_eq!(a[ANN_PACKAGES], "a/b/1/20240101000000,a/c/2/20240101000000");
        assert_eq!(a[ANN_CHECKSUMS], "c1,c2");
        assert_eq!(a[ANN_FORMAT], LAYER_FORMAT);
        assert_eq!(a[record::ANN_RECORD], "R");
        let extras = annotations(&[], None);
        assert_eq!(extras[ANN_PACKAGES], "");
        assert!(!extras.contains_key(ANN_CHECKSUMS));
        assert!(!extras.contains_key(record::ANN_RECORD));
    }
}
