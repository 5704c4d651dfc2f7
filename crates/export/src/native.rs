//! The native engine: every planned layer streamed from its harts (verified payload → xz →
//! tar → rewrite → compress, digests on the fly) into a blob, layers in parallel (largest
//! first so both cores stay busy), then the extras layer, config and manifest.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufWriter, Write};

use depot::ResolvedClosure;
use oci_image::image::build_image;
use oci_image::{BuiltImage, Compression, EntryMeta, LayerDescriptor, LayerWriter, OciDir};
use rayon::prelude::*;

use crate::cache::LayerCache;
use crate::plan::{ImagePlan, layer_label, layer_members, release_time};
use crate::{ExportError, LAYER_FORMAT, Progress, rewrite};

/// Annotation keys on each layer descriptor: what a later run needs to reuse a layer
/// without decoding its harts.
pub const ANN_PACKAGES: &str = "sh.habitat.hab-oci.packages";
pub const ANN_CHECKSUMS: &str = "sh.habitat.hab-oci.checksums";
pub const ANN_FORMAT: &str = "sh.habitat.hab-oci.layer-format";

/// Builds every layer of `plan` into `store` and returns the image (config and manifest
/// blobs are written too). Package layers come from `cache` when it has them, and go into
/// it when built.
pub fn build(
    closure: &ResolvedClosure,
    plan: &ImagePlan,
    store: &OciDir,
    compression: Compression,
    cache: Option<&LayerCache>,
    progress: &dyn Progress,
) -> Result<BuiltImage, ExportError> {
    let pkgs = &closure.packages;
    let mut order: Vec<usize> = (0..plan.layers.len()).collect();
    let size_of = |i: usize| -> u64 {
        plan.layers[i]
            .members
            .iter()
            .map(|&m| pkgs[m].hart.payload_len())
            .sum()
    };
    order.sort_by_key(|&i| std::cmp::Reverse(size_of(i)));
    let built: Vec<(usize, LayerDescriptor)> = order
        .par_iter()
        .map(|&i| {
            cached_or_built(closure, plan, i, store, compression, cache, progress).map(|d| (i, d))
        })
        .collect::<Result<_, _>>()?;
    let mut layers: Vec<Option<LayerDescriptor>> = vec![None; plan.layers.len()];
    for (i, d) in built {
        layers[i] = Some(d);
    }
    let mut layers: Vec<LayerDescriptor> = layers.into_iter().flatten().collect();
    layers.push(build_extras(plan, store, compression, progress)?);
    let image = build_image(&plan.config, &layers)?;
    store.put_blob(&image.config_digest, &image.config)?;
    store.put_blob(&image.manifest_digest, &image.manifest)?;
    Ok(image)
}

fn cached_or_built(
    closure: &ResolvedClosure,
    plan: &ImagePlan,
    index: usize,
    store: &OciDir,
    compression: Compression,
    cache: Option<&LayerCache>,
    progress: &dyn Progress,
) -> Result<LayerDescriptor, ExportError> {
    let Some(cache) = cache else {
        return build_layer(closure, plan, index, store, compression, progress);
    };
    let members = layer_members(closure, plan, index);
    let checksums: Vec<&str> = members.iter().map(|p| p.hart.checksum()).collect();
    let key = LayerCache::key(&checksums, compression);
    if let Some(digests) = cache.get(&key, store) {
        progress.layer_started(index, &format!("{} (cached)", layer_label(&members)), 0);
        progress.layer_finished(index, &digests.digest, digests.size);
        return Ok(LayerDescriptor {
            digests,
            annotations: annotations(&members),
        });
    }
    let reused = if members.len() == 1 {
        compress_staged(cache, members[0], index, store, compression, progress)
    } else {
        replay_group(cache, &members, index, store, compression, progress)
    };
    let built = match reused {
        Some(d) => d,
        None => build_layer(closure, plan, index, store, compression, progress)?,
    };
    cache.put(
        &key,
        &built.digests,
        store,
        compression,
        members.iter().map(|p| p.ident().to_string()).collect(),
        checksums.iter().map(|c| (*c).to_owned()).collect(),
    );
    Ok(built)
}

/// A package's layer compressed from its staged uncompressed layer (see `prebuild`): the
/// same blob a build from the hart gives, without decoding it again. `None` when nothing is
/// staged or the staged tar does not hash to its digest (then it is discarded).
fn compress_staged(
    cache: &LayerCache,
    member: &depot::ResolvedPackage,
    index: usize,
    store: &OciDir,
    compression: Compression,
    progress: &dyn Progress,
) -> Option<LayerDescriptor> {
    if compression == Compression::None {
        return None;
    }
    let key = LayerCache::key(&[member.hart.checksum()], Compression::None);
    let (path, digest) = cache.blob_for(&key)?;
    let members = [member];
    progress.layer_started(index, &layer_label(&members), member.metadata.unpacked_size);
    let advance = |n: u64| progress.layer_advanced(index, n);
    let mut tar = rewrite::CountingReader {
        inner: std::fs::File::open(&path).ok()?,
        advance: &advance,
        n: 0,
    };
    let blob = store.blob_writer().ok()?;
    let w = LayerWriter::new(BufWriter::with_capacity(1 << 20, blob), compression).ok()?;
    // A write error (full disk) leaves the staged entry alone; a tar that does not hash to
    // its digest (an uncompressed blob's digest is its diff_id) removes it.
    let (digests, buf) = w.copy_tar(&mut tar).ok()?;
    if digests.diff_id != digest {
        cache.discard(&key);
        return None;
    }
    let blob = buf.into_inner().ok()?;
    blob.commit(&digests.digest).ok()?;
    cache.note_staged_used(&key);
    progress.layer_finished(index, &digests.digest, digests.size);
    Some(LayerDescriptor {
        digests,
        annotations: annotations(&members),
    })
}

/// A layer of several packages (above the layer budget) from its members' cached
/// single-package layers: their entries replayed in order, each shared parent directory
/// once — exactly what `build_layer` writes, read at gzip instead of xz decoding speed (a
/// cold export has just built those single layers while reading the packages' metadata,
/// small ones staged uncompressed). `None` when a member is not cached or its blob does not
/// hash to its digest.
fn replay_group(
    cache: &LayerCache,
    members: &[&depot::ResolvedPackage],
    index: usize,
    store: &OciDir,
    compression: Compression,
    progress: &dyn Progress,
) -> Option<LayerDescriptor> {
    if members.len() < 2 {
        return None;
    }
    let sources: Vec<(String, std::path::PathBuf, String, Compression)> = members
        .iter()
        .map(|p| {
            [compression, Compression::None].into_iter().find_map(|c| {
                let key = LayerCache::key(&[p.hart.checksum()], c);
                cache
                    .blob_for(&key)
                    .map(|(path, digest)| (key, path, digest, c))
            })
        })
        .collect::<Option<_>>()?;
    let total: u64 = members.iter().map(|p| p.metadata.unpacked_size).sum();
    progress.layer_started(index, &layer_label(members), total);
    let blob = store.blob_writer().ok()?;
    let mut w = LayerWriter::new(BufWriter::with_capacity(1 << 20, blob), compression).ok()?;
    let mut emitted: HashSet<String> = HashSet::new();
    for ((key, path, digest, stored), p) in sources.iter().zip(members) {
        let id = p.ident();
        let version = id.version.as_deref().unwrap_or_default();
        let parents = [
            "hab".to_owned(),
            "hab/pkgs".to_owned(),
            format!("hab/pkgs/{}", id.origin),
            format!("hab/pkgs/{}/{}", id.origin, id.name),
            format!("hab/pkgs/{}/{}/{version}", id.origin, id.name),
        ];
        let mut hashing = oci_image::digest::HashingReader::new(std::fs::File::open(path).ok()?);
        let replayed = (|| -> std::io::Result<()> {
            let mut archive = tar::Archive::new(oci_image::decompressed(&mut hashing, *stored)?);
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
                let link = || -> std::io::Result<String> {
                    Ok(entry
                        .link_name()?
                        .map(|l| l.to_string_lossy().into_owned())
                        .unwrap_or_default())
                };
                match h.entry_type() {
                    tar::EntryType::Directory => w.dir(&name, meta)?,
                    tar::EntryType::Symlink => w.symlink(&name, &link()?, meta)?,
                    tar::EntryType::Link => w.hardlink(&name, &link()?, meta)?,
                    _ => {
                        let size = entry.size();
                        w.file(&name, meta, size, &mut entry)?;
                        progress.layer_advanced(index, size);
                    }
                }
            }
            // To the end of the blob, so that all of it is hashed.
            std::io::copy(&mut archive.into_inner(), &mut std::io::sink())?;
            Ok(())
        })();
        if replayed.is_err() || hashing.digest() != *digest {
            // Only a member whose bytes are wrong goes; a write error (full disk) does not
            // make its entry corrupt.
            let wrong = oci_image::digest::sha256_file(path).map_or(true, |(d, _)| d != *digest);
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
    Some(LayerDescriptor {
        digests,
        annotations: annotations(members),
    })
}

/// What a later run needs to reuse a layer without decoding its harts.
fn annotations(members: &[&depot::ResolvedPackage]) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            ANN_PACKAGES.to_owned(),
            members
                .iter()
                .map(|p| p.ident().to_string())
                .collect::<Vec<_>>()
                .join(","),
        ),
        (
            ANN_CHECKSUMS.to_owned(),
            members
                .iter()
                .map(|p| p.hart.checksum().to_owned())
                .collect::<Vec<_>>()
                .join(","),
        ),
        (ANN_FORMAT.to_owned(), LAYER_FORMAT.to_owned()),
    ])
}

fn build_layer(
    closure: &ResolvedClosure,
    plan: &ImagePlan,
    index: usize,
    store: &OciDir,
    compression: Compression,
    progress: &dyn Progress,
) -> Result<LayerDescriptor, ExportError> {
    let members = layer_members(closure, plan, index);
    let label = layer_label(&members);
    let total: u64 = members.iter().map(|p| p.metadata.unpacked_size).sum();
    progress.layer_started(index, &label, total);
    let blob = store.blob_writer()?;
    let mut w =
        LayerWriter::new(BufWriter::with_capacity(1 << 20, blob), compression).map_err(|e| {
            ExportError::Io {
                path: store.root().to_owned(),
                source: e,
            }
        })?;
    let mut emitted = HashSet::new();
    let advance = |n: u64| progress.layer_advanced(index, n);
    for p in &members {
        rewrite::write_package(
            &mut w,
            &p.hart,
            p.ident(),
            release_time(p.ident()),
            &mut emitted,
            &advance,
        )?;
    }
    let io = |e| ExportError::Io {
        path: store.root().to_owned(),
        source: e,
    };
    let (digests, buf) = w.finish().map_err(io)?;
    let blob = buf.into_inner().map_err(|e| io(e.into_error()))?;
    blob.commit(&digests.digest)?;
    progress.layer_finished(index, &digests.digest, digests.size);
    Ok(LayerDescriptor {
        digests,
        annotations: annotations(&members),
    })
}

fn build_extras(
    plan: &ImagePlan,
    store: &OciDir,
    compression: Compression,
    progress: &dyn Progress,
) -> Result<LayerDescriptor, ExportError> {
    let index = plan.layers.len();
    progress.layer_started(index, "extras", 0);
    let io = |e| ExportError::Io {
        path: store.root().to_owned(),
        source: e,
    };
    let blob = store.blob_writer()?;
    let mut w = LayerWriter::new(BufWriter::new(blob), compression).map_err(io)?;
    crate::extras::write_entries(&mut w, &plan.extras, plan.extras_mtime)
        .map_err(|(_, e)| io(e))?;
    let (digests, buf) = w.finish().map_err(io)?;
    let mut blob = buf.into_inner().map_err(|e| io(e.into_error()))?;
    blob.flush().map_err(io)?;
    blob.commit(&digests.digest)?;
    progress.layer_finished(index, &digests.digest, digests.size);
    let annotations = BTreeMap::from([
        (ANN_PACKAGES.to_owned(), String::new()),
        (ANN_FORMAT.to_owned(), LAYER_FORMAT.to_owned()),
    ]);
    Ok(LayerDescriptor {
        digests,
        annotations,
    })
}
