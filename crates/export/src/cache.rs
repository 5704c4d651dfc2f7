//! The layer cache: a package layer is a pure function of its harts (their checksums) and the
//! layer settings (format version, compression), so it is built once per machine and reused by
//! every later export. Entries are `KEY.blob` + `KEY.json` in one directory; the JSON is
//! written last (its presence means the entry is complete), both through a temporary name
//! and a rename, so concurrent exports and interrupted ones never see half an entry. Every
//! use re-hashes the blob: a corrupted entry is removed and the layer rebuilt, never used.
//! Least-recently-used entries (JSON mtime, touched on use) are evicted above a size bound.
//!
//! Base-image blobs (`--base-image`, for local outputs) live beside the entries, in
//! `base/sha256/<hex>`: named by their digest only once their bytes hashed to it
//! ([`LayerCache::base_blob_writer`]), evicted with the entries by the same bound.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use filetime::FileTime;
use oci_image::base::{BlobDir, CheckedBlobWriter};
use oci_image::digest::sha256_file;
use oci_image::{Compression, LayerDigests, OciDir};
use serde::{Deserialize, Serialize};

use crate::ExportError;
use crate::LAYER_FORMAT;
use crate::error::io_at;
use crate::layers::{LayerKey, Member};

/// What an entry records besides its blob.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    key: String,
    digest: String,
    diff_id: String,
    size: u64,
    compression: String,
    packages: Vec<String>,
    checksums: Vec<String>,
    /// Repositories (`registry/path`) a push confirmed this blob in.
    #[serde(default)]
    pushed: Vec<String>,
}

impl Record {
    fn new(
        key: &LayerKey,
        digests: &LayerDigests,
        compression: Compression,
        members: &[Member],
    ) -> Record {
        Record {
            key: key.as_str().to_owned(),
            digest: digests.digest.clone(),
            diff_id: digests.diff_id.clone(),
            size: digests.size,
            compression: compression.name().to_owned(),
            packages: members.iter().map(|m| m.ident.to_string()).collect(),
            checksums: members.iter().map(|m| m.checksum.clone()).collect(),
            pushed: Vec::new(),
        }
    }
}

/// Counts of one run, for the report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Entries whose blob no longer matched their digest: removed and rebuilt.
    pub corrupt: u64,
    pub evicted: u64,
    /// Hits used without reading the blob: a push-only export to a repository a previous
    /// push confirmed them in (the push's HEAD confirms them again).
    pub trusted: u64,
    /// Layers built while their packages were decoded for metadata (one decode for both).
    pub prebuilt: u64,
    /// Layers of several packages assembled from their members' cached layers.
    pub regrouped: u64,
    /// Single-package layers compressed from an uncompressed staged layer.
    pub staged: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CacheInfo {
    pub dir: PathBuf,
    pub entries: u64,
    pub bytes: u64,
    pub max_bytes: u64,
}

#[derive(Debug)]
pub struct LayerCache {
    dir: PathBuf,
    max_bytes: u64,
    hits: AtomicU64,
    misses: AtomicU64,
    corrupt: AtomicU64,
    evicted: AtomicU64,
    trusted: AtomicU64,
    prebuilt: AtomicU64,
    regrouped: AtomicU64,
    staged: AtomicU64,
    /// A push-only export's repository: entries recorded as pushed there are linked into
    /// the store without being read (see [`LayerCache::trust_pushed_to`]).
    trust: std::sync::OnceLock<String>,
    /// Keys this process wrote (prebuilt) moments ago: their blobs need no second hashing.
    written: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// Keys of base blobs among the entries: `base:<hex>`.
const BASE_KEY: &str = "base:";

fn compression_from(name: &str) -> Option<Compression> {
    [Compression::Gzip, Compression::Zstd, Compression::None]
        .into_iter()
        .find(|c| c.name() == name)
}

impl LayerCache {
    /// The cache under `root` (created on first write), bounded to `max_bytes` of blobs.
    pub fn open(root: &Path, max_bytes: u64) -> LayerCache {
        LayerCache {
            dir: root.join(format!("layers-v{LAYER_FORMAT}")),
            max_bytes,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            corrupt: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            trusted: AtomicU64::new(0),
            prebuilt: AtomicU64::new(0),
            regrouped: AtomicU64::new(0),
            staged: AtomicU64::new(0),
            trust: std::sync::OnceLock::new(),
            written: std::sync::Mutex::new(std::collections::HashSet::new()),
        }
    }

    /// For an export whose only output is a push to `repository`: a cached layer a previous
    /// push confirmed there is hard-linked into the store without being read or re-hashed.
    /// The push's `HEAD` finds it in the registry and never reads it either; should the
    /// registry have lost it, the upload is checked by the registry against its digest.
    pub fn trust_pushed_to(&self, repository: &str) {
        let _ = self.trust.set(repository.to_owned());
    }

    fn paths(&self, key: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("{key}.blob")),
            self.dir.join(format!("{key}.json")),
        )
    }

    fn remove(&self, key: &str) {
        if let Some(hex) = key.strip_prefix(BASE_KEY) {
            let _ = fs::remove_file(self.base_blobs().root().join("sha256").join(hex));
            return;
        }
        let (blob, json) = self.paths(key);
        let _ = fs::remove_file(json);
        let _ = fs::remove_file(blob);
    }

    /// Puts the cached layer for `key` into `store` (hard link when possible, else a copy),
    /// after checking its bytes against the recorded digest — unless this process wrote the
    /// entry itself (prebuilt moments ago) or a push-only export trusts it (see
    /// [`LayerCache::trust_pushed_to`]). `None`: not cached, or the
    /// entry was corrupt (then it is gone). The flag: this process wrote the entry.
    pub fn get(&self, key: &LayerKey, store: &OciDir) -> Option<(LayerDigests, bool)> {
        let key = key.as_str();
        let (blob, json) = self.paths(key);
        let record: Option<Record> = fs::read(&json)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let Some(record) = record.filter(|r| r.key == key) else {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let found = (|| -> Option<LayerDigests> {
            let compression = compression_from(&record.compression)?;
            let digests = LayerDigests {
                diff_id: record.diff_id.clone(),
                digest: record.digest.clone(),
                size: record.size,
                media_type: compression.media_type(),
            };
            let dest = store.blob_path(&record.digest).ok()?;
            let tmp = dest.with_file_name(format!(
                "{}{}",
                hab_oci_fs::temp::prefix(),
                record.digest.trim_start_matches("sha256:")
            ));
            let _ = fs::remove_file(&tmp);
            let pushed_there = self
                .trust
                .get()
                .is_some_and(|repo| record.pushed.contains(repo));
            let ours = self.written.lock().is_ok_and(|w| w.contains(key));
            if (pushed_there || ours)
                && fs::hard_link(&blob, &tmp).is_ok()
                && fs::metadata(&tmp).is_ok_and(|m| m.len() == record.size)
            {
                fs::rename(&tmp, &dest).ok()?;
                if pushed_there {
                    self.trusted.fetch_add(1, Ordering::Relaxed);
                }
                return Some(digests);
            }
            let _ = fs::remove_file(&tmp);
            if fs::hard_link(&blob, &tmp).is_err() {
                fs::copy(&blob, &tmp).ok()?;
            }
            match sha256_file(&tmp) {
                Ok((digest, size)) if digest == record.digest && size == record.size => {
                    fs::rename(&tmp, &dest).ok()?;
                    Some(digests)
                }
                _ => {
                    let _ = fs::remove_file(&tmp);
                    self.corrupt.fetch_add(1, Ordering::Relaxed);
                    self.remove(key);
                    None
                }
            }
        })();
        let ours = self.written.lock().is_ok_and(|w| w.contains(key));
        match &found {
            Some(_) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                let _ = filetime::set_file_mtime(&json, FileTime::now());
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
            }
        }
        found.map(|d| (d, ours))
    }

    /// Records the layer `digests` (its blob already in `store`) under `key`. Best effort:
    /// a cache that cannot be written costs a rebuild next time, never this export.
    pub fn put(
        &self,
        key: &LayerKey,
        digests: &LayerDigests,
        store: &OciDir,
        compression: Compression,
        members: &[Member],
    ) {
        let record = Record::new(key, digests, compression, members);
        let key = key.as_str();
        let write = || -> io::Result<()> {
            fs::create_dir_all(&self.dir)?;
            let (blob, json) = self.paths(key);
            let src = store
                .blob_path(&digests.digest)
                .map_err(|e| io::Error::other(e.to_string()))?;
            let tmp = self
                .dir
                .join(format!("{}{key}", hab_oci_fs::temp::prefix()));
            let _ = fs::remove_file(&tmp);
            hab_oci_fs::temp::guarded(|| -> io::Result<()> {
                if fs::hard_link(&src, &tmp).is_err() {
                    fs::copy(&src, &tmp)?;
                    fs::File::open(&tmp)?.sync_all()?;
                }
                Ok(())
            })?;
            fs::rename(&tmp, &blob)?;
            self.write_record(&json, &record)
        };
        let _ = write();
    }

    /// The blob of the entry for `key` and the digest it must hash to (unchecked: the
    /// caller hashes what it reads and calls [`LayerCache::discard`] on a mismatch).
    pub fn blob_for(&self, key: &LayerKey) -> Option<(PathBuf, String)> {
        let key = key.as_str();
        let (blob, json) = self.paths(key);
        let record: Record = serde_json::from_slice(&fs::read(json).ok()?).ok()?;
        (record.key == key).then_some((blob, record.digest))
    }

    /// Where base-image blobs are kept (`sha256/<hex>` under it; created on first write).
    pub fn base_blobs(&self) -> BlobDir {
        BlobDir::new(self.dir.join("base"))
    }

    /// The cached blob `digest` of a base image, if an earlier run fetched it (its bytes
    /// hashed to the digest when they were written; [`oci_image::base::BaseImage`] checks
    /// them again as it reads them). Marks it used, for eviction.
    pub fn base_blob(&self, digest: &str) -> Option<PathBuf> {
        let path = self.base_blobs().path(digest).filter(|p| p.is_file())?;
        let _ = filetime::set_file_mtime(&path, FileTime::now());
        Some(path)
    }

    /// A writer for a base blob: [`CheckedBlobWriter::commit`] names it only when its
    /// bytes hash to the digest given, and drops them otherwise.
    pub fn base_blob_writer(&self) -> io::Result<CheckedBlobWriter> {
        self.base_blobs().writer()
    }

    /// Counts a layer assembled from cached member layers.
    pub fn note_regrouped(&self) {
        self.regrouped.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a layer compressed from a staged one, whose entry is no longer needed (the
    /// compressed layer serves every later use, grouped ones too).
    pub fn note_staged_used(&self, staged_key: &LayerKey) {
        self.staged.fetch_add(1, Ordering::Relaxed);
        self.remove(staged_key.as_str());
    }

    /// Was the layer of `key` confirmed in `repository` by an earlier push?
    pub fn pushed_to(&self, key: &LayerKey, repository: &str) -> bool {
        let key = key.as_str();
        fs::read(self.paths(key).1)
            .ok()
            .and_then(|b| serde_json::from_slice::<Record>(&b).ok())
            .is_some_and(|r| r.key == key && r.pushed.iter().any(|p| p == repository))
    }

    /// Removes an entry found corrupt by a caller of [`LayerCache::blob_for`].
    pub fn discard(&self, key: &LayerKey) {
        self.corrupt.fetch_add(1, Ordering::Relaxed);
        self.remove(key.as_str());
    }

    /// Is there an entry for `key` (unchecked: `get` checks)?
    pub fn contains(&self, key: &LayerKey) -> bool {
        self.paths(key.as_str()).1.exists()
    }

    /// A temporary file in the cache directory, for a blob being built into the cache.
    pub fn temp_blob(&self) -> io::Result<tempfile::NamedTempFile> {
        fs::create_dir_all(&self.dir)?;
        hab_oci_fs::temp::file_in(&self.dir, "build")
    }

    /// Makes the finished `blob` (from [`LayerCache::temp_blob`]) the entry for `key`.
    pub fn put_built(
        &self,
        key: &LayerKey,
        blob: tempfile::NamedTempFile,
        digests: &LayerDigests,
        compression: Compression,
        members: &[Member],
    ) -> io::Result<()> {
        let record = Record::new(key, digests, compression, members);
        let key = key.as_str();
        let (path, json) = self.paths(key);
        hab_oci_fs::persist(blob, &path, hab_oci_fs::Persist::DURABLE)?;
        self.write_record(&json, &record)?;
        if let Ok(mut w) = self.written.lock() {
            w.insert(key.to_owned());
        }
        self.prebuilt.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn write_record(&self, json: &Path, record: &Record) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(record)?;
        hab_oci_fs::write(json, "record", &bytes, hab_oci_fs::Persist::DURABLE)
    }

    /// Notes that a push confirmed the layer of `key` in `repository`. Best effort.
    pub fn record_pushed(&self, key: &LayerKey, repository: &str) {
        let (_, json) = self.paths(key.as_str());
        let Some(mut record) = fs::read(&json)
            .ok()
            .and_then(|b| serde_json::from_slice::<Record>(&b).ok())
        else {
            return;
        };
        if !record.pushed.iter().any(|r| r == repository) {
            record.pushed.push(repository.to_owned());
            let _ = self.write_record(&json, &record);
        }
    }

    fn entries(&self) -> Vec<(PathBuf, FileTime, u64, String)> {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(key) = name.strip_suffix(".json") else {
                continue;
            };
            let Ok(meta) = e.metadata() else { continue };
            let size = fs::metadata(self.dir.join(format!("{key}.blob")))
                .map(|m| m.len())
                .unwrap_or(0);
            out.push((
                e.path(),
                FileTime::from_last_modification_time(&meta),
                size,
                key.to_owned(),
            ));
        }
        // Base blobs, each its own entry: its mtime is its last use.
        if let Ok(rd) = fs::read_dir(self.base_blobs().root().join("sha256")) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Ok(meta) = e.metadata() else { continue };
                if name.starts_with('.') || !meta.is_file() {
                    continue;
                }
                out.push((
                    e.path(),
                    FileTime::from_last_modification_time(&meta),
                    meta.len(),
                    format!("{BASE_KEY}{name}"),
                ));
            }
        }
        out
    }

    /// Where the entries (and this process's temporary files) are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn info(&self) -> CacheInfo {
        let entries = self.entries();
        CacheInfo {
            dir: self.dir.clone(),
            entries: entries.len() as u64,
            bytes: entries.iter().map(|e| e.2).sum(),
            max_bytes: self.max_bytes,
        }
    }

    /// Removes least-recently-used entries until the blobs take at most `max_bytes`, and
    /// leftovers of interrupted writes; returns how many entries went.
    pub fn prune(&self, max_bytes: u64) -> Result<u64, ExportError> {
        let mut entries = self.entries();
        entries.sort_by_key(|e| e.1);
        let mut total: u64 = entries.iter().map(|e| e.2).sum();
        let mut removed = 0;
        for (_, _, size, key) in entries {
            if total <= max_bytes {
                break;
            }
            self.remove(&key);
            total = total.saturating_sub(size);
            removed += 1;
        }
        // Blobs without a record and stale temporary files (older than an hour: a running
        // export may still be writing the young ones), here and among the base blobs.
        let hour_ago = FileTime::from_unix_time(FileTime::now().unix_seconds() - 3600, 0);
        if let Ok(rd) = fs::read_dir(self.base_blobs().root().join("sha256")) {
            for e in rd.flatten() {
                let old = e
                    .metadata()
                    .map(|m| FileTime::from_last_modification_time(&m) < hour_ago)
                    .unwrap_or(false);
                if e.file_name().to_string_lossy().starts_with('.') && old {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        if let Ok(rd) = fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let orphan = name
                    .strip_suffix(".blob")
                    .is_some_and(|k| !self.dir.join(format!("{k}.json")).exists());
                let old = e
                    .metadata()
                    .map(|m| FileTime::from_last_modification_time(&m) < hour_ago)
                    .unwrap_or(false);
                if (orphan || name.starts_with('.')) && old {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        self.evicted.fetch_add(removed, Ordering::Relaxed);
        Ok(removed)
    }

    /// Evicts down to the configured bound.
    pub fn evict(&self) -> Result<u64, ExportError> {
        self.prune(self.max_bytes)
    }

    /// Removes every entry.
    pub fn clear(&self) -> Result<(), ExportError> {
        match fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_at(&self.dir)(e)),
            _ => Ok(()),
        }
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            corrupt: self.corrupt.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
            trusted: self.trusted.load(Ordering::Relaxed),
            prebuilt: self.prebuilt.load(Ordering::Relaxed),
            regrouped: self.regrouped.load(Ordering::Relaxed),
            staged: self.staged.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn base_blobs_are_named_only_when_they_hash_to_their_digest() {
        let dir = tempfile::tempdir().expect("tmp");
        let cache = LayerCache::open(dir.path(), 1 << 30);
        let data = b"base layer bytes";
        let digest = oci_image::sha256_digest(data);
        assert_eq!(cache.base_blob(&digest), None);

        let mut w = cache.base_blob_writer().expect("writer");
        w.write_all(b"other bytes").expect("write");
        assert!(w.commit(&digest).is_err());
        assert_eq!(cache.base_blob(&digest), None);

        let mut w = cache.base_blob_writer().expect("writer");
        w.write_all(data).expect("write");
        let path = w.commit(&digest).expect("commit");
        assert_eq!(cache.base_blob(&digest), Some(path.clone()));
        assert_eq!(fs::read(&path).expect("read"), data);
        let info = cache.info();
        assert_eq!((info.entries, info.bytes), (1, data.len() as u64));

        // Evicted with the entries, least recently used first.
        filetime::set_file_mtime(&path, FileTime::from_unix_time(1_000_000, 0)).expect("mtime");
        let mut w = cache.base_blob_writer().expect("writer");
        w.write_all(b"newer").expect("write");
        let (newer, _) = w.commit_hashed().expect("commit");
        assert_eq!(cache.prune(5).expect("prune"), 1);
        assert_eq!(cache.base_blob(&digest), None);
        assert!(cache.base_blob(&newer).is_some());
    }
}
