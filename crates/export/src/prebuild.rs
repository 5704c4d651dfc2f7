//! One decode for two uses: while the depot decodes a package for its metadata, the same
//! tar stream is rewritten into that package's single-package layer, straight into the
//! layer cache. An export then finds its layers built (unless packages share a layer above
//! the layer budget). The layer is kept only if the metadata read succeeded and names the
//! package the layer's entries belong to.
//!
//! Small packages are staged uncompressed: the layer budget may group them with others
//! (decided only once the whole closure is known), and a grouped package compressed alone
//! first would be compressed twice. The native build compresses a staged layer once it knows
//! the package stands alone, or replays it into its group without any decoding.

use std::collections::{HashMap, HashSet};
use std::io::BufWriter;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use depot::PayloadTap;
use hart::{PackageIdent, PackageMetadata, VerifiedHart};
use oci_image::{Compression, LayerDigests, LayerWriter};

use crate::cache::LayerCache;
use crate::layers::{LayerKey, Member};
use crate::rewrite;

type Built = Option<(tempfile::NamedTempFile, LayerDigests, PackageIdent)>;

/// Packages whose xz payload is at most this are staged uncompressed. The layer budget only
/// ever groups the smallest packages; staging one that then stands alone costs a write and
/// a read of its tar, not a second compression.
pub(crate) const STAGE_RAW_MAX: u64 = 4 << 20;

/// Most bytes a staged (uncompressed) layer may take: real packages unpack to a few times
/// their xz size; a decompression bomb (a small payload of zeros) must not write gigabytes
/// into the cache before `--max-unpacked-size` stops it. Past the cap the package is not
/// staged; its layer is built compressed later.
fn staged_cap(hart: &VerifiedHart) -> u64 {
    (hart.payload_len().saturating_mul(32)).max(64 << 20)
}

/// The compression a package's prebuilt layer is stored with.
fn staged_compression(hart: &VerifiedHart, compression: Compression) -> Compression {
    if compression != Compression::None && hart.payload_len() <= STAGE_RAW_MAX {
        Compression::None
    } else {
        compression
    }
}

#[derive(Debug)]
pub(crate) struct PrebuildTap {
    cache: Arc<LayerCache>,
    compression: Compression,
    running: Mutex<HashMap<String, JoinHandle<Built>>>,
}

impl PrebuildTap {
    pub(crate) fn new(cache: Arc<LayerCache>, compression: Compression) -> PrebuildTap {
        PrebuildTap {
            cache,
            compression,
            running: Mutex::new(HashMap::new()),
        }
    }
}

/// Rewrites the tar stream from `reader` into a layer in a temporary cache file; `None`
/// (and the temporary file gone) if it fails or an uncompressed layer outgrows `cap`.
fn build(
    reader: std::io::PipeReader,
    cache: &LayerCache,
    compression: Compression,
    source: &std::path::Path,
    cap: u64,
) -> Built {
    let tmp = cache.temp_blob().ok()?;
    let file = tmp.reopen().ok()?;
    let mut w = LayerWriter::new(BufWriter::with_capacity(1 << 20, file), compression).ok()?;
    let mut emitted = HashSet::new();
    let capped = Capped {
        inner: reader,
        left: if compression == Compression::None {
            cap
        } else {
            u64::MAX
        },
    };
    let ident = rewrite::write_tar(&mut w, capped, source, None, &mut emitted, &|_| {}).ok()?;
    let (digests, buf) = w.finish().ok()?;
    buf.into_inner().ok()?;
    Some((tmp, digests, ident))
}

impl PayloadTap for PrebuildTap {
    fn tap(&self, hart: &VerifiedHart) -> Option<Box<dyn std::io::Write + Send>> {
        let key = LayerKey::new([hart.checksum()], self.compression);
        let compression = staged_compression(hart, self.compression);
        let staged = LayerKey::new([hart.checksum()], compression);
        let mut running = self.running.lock().ok()?;
        if self.cache.contains(&key)
            || self.cache.contains(&staged)
            || running.contains_key(hart.checksum())
        {
            return None;
        }
        let (reader, writer) = std::io::pipe().ok()?;
        let cache = self.cache.clone();
        let source = hart.path().to_owned();
        let cap = staged_cap(hart);
        let handle = std::thread::spawn(move || build(reader, &cache, compression, &source, cap));
        running.insert(hart.checksum().to_owned(), handle);
        Some(Box::new(writer))
    }

    fn finished(&self, hart: &VerifiedHart, metadata: Option<&PackageMetadata>) {
        let handle = self
            .running
            .lock()
            .ok()
            .and_then(|mut r| r.remove(hart.checksum()));
        let Some(built) = handle.and_then(|h| h.join().ok()).flatten() else {
            return;
        };
        let (tmp, digests, ident) = built;
        if let Some(m) = metadata.filter(|m| m.ident == ident) {
            let compression = staged_compression(hart, self.compression);
            let key = LayerKey::new([hart.checksum()], compression);
            let member = Member {
                ident: m.ident.clone(),
                checksum: hart.checksum().to_owned(),
            };
            // Best effort, like every cache write: a failure costs a rebuild later.
            let _ = self
                .cache
                .put_built(&key, tmp, &digests, compression, &[member]);
        }
    }
}

/// Fails reads past `left` bytes (the staging cap).
struct Capped<R> {
    inner: R,
    left: u64,
}

impl<R: std::io::Read> std::io::Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.left = self.left.checked_sub(n as u64).ok_or_else(|| {
            std::io::Error::other("the staged layer outgrew its cap; built compressed later")
        })?;
        Ok(n)
    }
}
