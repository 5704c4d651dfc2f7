//! Fresh builds: a planned layer streamed from its harts (verified payload → xz → tar →
//! rewrite → compress, digests on the fly) into a blob, and the extras layer. Which layers
//! need a fresh build is decided by [`crate::layers::Layers`].

use std::collections::HashSet;
use std::io::{BufWriter, Write};

use depot::ResolvedPackage;
use oci_image::{Compression, LayerDigests, LayerWriter, OciDir};

use crate::layers::label;
use crate::plan::{ImagePlan, release_time};
use crate::{ExportError, Progress, rewrite};

/// Builds the layer of `members` (planned layer `index`) from their harts into `store`.
pub(crate) fn build_layer(
    members: &[&ResolvedPackage],
    index: usize,
    store: &OciDir,
    compression: Compression,
    progress: &dyn Progress,
) -> Result<LayerDigests, ExportError> {
    let label = label(members);
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
    for p in members {
        rewrite::write_package(
            &mut w,
            crate::native::local_hart(p)?,
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
    Ok(digests)
}

/// The hart a layer is built from; only a package a cache source's record stands for has
/// none (and its layer is never built: see `operation.rs`, `materialize`).
pub(crate) fn local_hart(p: &depot::ResolvedPackage) -> Result<&hart::VerifiedHart, ExportError> {
    p.hart
        .as_ref()
        .ok_or_else(|| ExportError::NotLocal(p.ident().to_string()))
}

/// The extras layer (users, `/bin` links, `/init.sh`, directories) of `plan`.
pub(crate) fn build_extras(
    plan: &ImagePlan,
    store: &OciDir,
    compression: Compression,
    progress: &dyn Progress,
) -> Result<LayerDigests, ExportError> {
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
    Ok(digests)
}
