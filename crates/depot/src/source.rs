//! Package sources: the `.hart` files of some directories, indexed by the ident their
//! canonical file name claims (confirmed against IDENT once the file is verified), and the
//! directories origin public keys are looked up in.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hart::{
    DecodeOptions, KeyDirs, MetadataRecord, PackageIdent, PackageMetadata, PackageTarget,
    VerifiedHart,
};

use crate::builder::{BuilderClient, BuilderSettings, DownloadProgress};
use crate::error::DepotError;

/// Where to look, resolved by the caller (flags, environment, defaults).
#[derive(Debug, Clone)]
pub struct DepotSettings {
    /// Directories of `.hart` files. Each may be a plain directory of harts or a
    /// `hab pkg download --download-directory` tree (`artifacts/`, `keys/`); its keys are used.
    pub sources: Vec<PathBuf>,
    /// Habitat artifact caches (harts only), searched after the sources.
    pub artifact_caches: Vec<PathBuf>,
    /// Key directories (`--keys`, or Habitat's key cache), searched after the sources' own.
    pub key_dirs: Vec<PathBuf>,
    /// The image's platform.
    pub target: Option<PackageTarget>,
    /// Threads for decoding one payload (multi-block xz).
    pub decode_threads: u32,
    /// A directory of metadata records by hart checksum: a package seen before is not
    /// decoded again (it is still verified). `None`: no persistent cache.
    pub metadata_cache: Option<PathBuf>,
    /// Bytes one payload may decode to (a bound against decompression bombs).
    pub max_unpacked: u64,
    /// Habitat Builder, for what the local sources lack (`None`: local sources only).
    pub builder: Option<BuilderSettings>,
}

impl Default for DepotSettings {
    fn default() -> Self {
        DepotSettings {
            sources: Vec::new(),
            artifact_caches: Vec::new(),
            key_dirs: Vec::new(),
            target: None,
            decode_threads: 1,
            metadata_cache: None,
            max_unpacked: hart::DEFAULT_MAX_UNPACKED,
            builder: None,
        }
    }
}

/// What a file name says, when it is in Habitat's canonical form
/// `{origin}-{name}-{version}-{release}-{target}.hart`. Origin, name and version can all
/// contain `-`, so the `origin-name-version` part is kept whole and matched against requests.
#[derive(Debug, Clone)]
pub(crate) struct NameClaim {
    pub(crate) onv: String,
    pub(crate) release: String,
    pub(crate) target: PackageTarget,
}

impl NameClaim {
    pub(crate) fn parse(file_name: &str) -> Option<NameClaim> {
        let stem = file_name.strip_suffix(".hart")?;
        let (rest, target) = PackageTarget::known().iter().find_map(|t| {
            stem.strip_suffix(t)
                .and_then(|r| r.strip_suffix('-'))
                .map(|r| (r, *t))
        })?;
        let (onv, release) = rest.rsplit_once('-')?;
        if release.len() != 14 || !release.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(NameClaim {
            onv: onv.to_owned(),
            release: release.to_owned(),
            target: PackageTarget::parse(target).ok()?,
        })
    }

    /// The ident this claim denotes if the package is `origin/name`, i.e. its version.
    pub(crate) fn version_for(&self, origin: &str, name: &str) -> Option<&str> {
        self.onv
            .strip_prefix(origin)?
            .strip_prefix('-')?
            .strip_prefix(name)?
            .strip_prefix('-')
            .filter(|v| !v.is_empty())
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub(crate) path: PathBuf,
    pub(crate) claim: Option<NameClaim>,
    /// In a `--source` directory (not an artifact cache): only these count as "a newer
    /// local version" against a channel's latest (see `remote.rs`).
    pub(crate) from_source: bool,
}

/// A verified package with its metadata, or a package known only from a cache source's
/// record (see [`Records`]): then `hart` is `None` and nothing of it is on this machine.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub hart: Option<VerifiedHart>,
    /// BLAKE2b-256 of the whole `.hart` (for a record: as the record says).
    pub checksum: String,
    pub metadata: PackageMetadata,
}

impl Loaded {
    fn local(hart: VerifiedHart, metadata: PackageMetadata) -> Loaded {
        Loaded {
            checksum: hart.checksum().to_owned(),
            hart: Some(hart),
            metadata,
        }
    }

    /// Where it came from, for messages: the hart's path, or the record it was taken from.
    pub fn origin_path(&self) -> PathBuf {
        match &self.hart {
            Some(h) => h.path().to_owned(),
            None => PathBuf::from(format!("(cache source record of {})", self.metadata.ident)),
        }
    }
}

/// What cache sources recorded about packages whose layers they hold (hab-oci's layer
/// annotations): metadata by hart checksum, and checksum by ident. A local hart whose
/// checksum has a record is verified but not decoded; a dependency that no local source
/// holds is taken from its record instead of being downloaded.
#[derive(Debug, Clone, Default)]
pub struct Records {
    by_checksum: HashMap<String, PackageMetadata>,
    by_ident: HashMap<String, String>,
}

impl Records {
    /// Adds a record; the first one for a checksum or an ident wins (sources in order).
    pub fn insert(&mut self, checksum: &str, metadata: PackageMetadata) {
        self.by_ident
            .entry(metadata.ident.to_string())
            .or_insert_with(|| checksum.to_owned());
        self.by_checksum
            .entry(checksum.to_owned())
            .or_insert(metadata);
    }

    pub fn is_empty(&self) -> bool {
        self.by_checksum.is_empty()
    }

    pub fn len(&self) -> usize {
        self.by_checksum.len()
    }

    /// The recorded package with exactly this ident.
    pub(crate) fn package(&self, ident: &PackageIdent) -> Option<Loaded> {
        let checksum = self.by_ident.get(&ident.to_string())?;
        let metadata = self.by_checksum.get(checksum)?.clone();
        (metadata.ident == *ident).then(|| Loaded {
            hart: None,
            checksum: checksum.clone(),
            metadata,
        })
    }

    pub(crate) fn metadata(&self, checksum: &str) -> Option<PackageMetadata> {
        self.by_checksum.get(checksum).cloned()
    }
}

/// An index of package sources plus a cache of verified packages.
#[derive(Debug)]
pub struct Depot {
    pub(crate) candidates: Vec<Candidate>,
    pub(crate) searched: Vec<PathBuf>,
    pub(crate) keys: KeyDirs,
    pub(crate) target: PackageTarget,
    pub(crate) decode: DecodeOptions,
    loaded: Mutex<HashMap<PathBuf, Loaded>>,
    metadata_cache: Option<PathBuf>,
    max_unpacked: u64,
    tap: Option<Arc<dyn PayloadTap>>,
    pub(crate) records: Records,
    pub(crate) builder: Option<BuilderClient>,
    pub(crate) downloads: Option<Arc<dyn DownloadProgress>>,
    /// Held while an origin key is fetched (see `remote.rs`).
    pub(crate) key_fetch: Mutex<()>,
}

/// Something that wants the decoded payload of packages whose metadata is being read, so
/// that one xz decode serves both (the export builds layers from it).
pub trait PayloadTap: Send + Sync + std::fmt::Debug {
    /// A writer for the decoded tar stream of `hart`, or `None` when not interested.
    fn tap(&self, hart: &VerifiedHart) -> Option<Box<dyn std::io::Write + Send>>;
    /// The decode is over (the writer from `tap` is dropped): the metadata, or `None` if
    /// reading it failed.
    fn finished(&self, hart: &VerifiedHart, metadata: Option<&PackageMetadata>);
}

impl Depot {
    /// Lists the `.hart` files of every source (not opening them yet).
    pub fn open(settings: &DepotSettings) -> Result<Depot, DepotError> {
        let mut candidates = Vec::new();
        let mut searched = Vec::new();
        let mut key_dirs = Vec::new();
        for src in &settings.sources {
            if !src.is_dir() {
                return Err(DepotError::Io {
                    path: src.clone(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "package source is not a directory",
                    ),
                });
            }
            for dir in [src.clone(), src.join("artifacts")] {
                if dir.is_dir() {
                    scan(&dir, true, &mut candidates)?;
                    searched.push(dir);
                }
            }
            for dir in [src.join("keys"), src.clone()] {
                if dir.is_dir() {
                    key_dirs.push(dir);
                }
            }
        }
        for cache in &settings.artifact_caches {
            if cache.is_dir() {
                scan(cache, false, &mut candidates)?;
                searched.push(cache.clone());
            }
        }
        key_dirs.extend(settings.key_dirs.iter().cloned());
        // Downloads land in the artifact cache, where the next run finds them; fetched keys
        // in the key cache, searched last.
        let builder = match &settings.builder {
            Some(b) => {
                if !searched.contains(&b.artifact_cache) {
                    if b.artifact_cache.is_dir() {
                        scan(&b.artifact_cache, false, &mut candidates)?;
                    }
                    searched.push(b.artifact_cache.clone());
                }
                if b.fetch_keys && !key_dirs.contains(&b.key_cache) {
                    key_dirs.push(b.key_cache.clone());
                }
                Some(BuilderClient::new(b.clone())?)
            }
            None => None,
        };
        Ok(Depot {
            candidates,
            searched,
            keys: KeyDirs::new(key_dirs),
            target: settings
                .target
                .clone()
                .unwrap_or_else(PackageTarget::host_linux),
            decode: DecodeOptions {
                threads: settings.decode_threads.max(1),
            },
            loaded: Mutex::new(HashMap::new()),
            metadata_cache: settings.metadata_cache.clone(),
            max_unpacked: settings.max_unpacked,
            tap: None,
            records: Records::default(),
            builder,
            downloads: None,
            key_fetch: Mutex::new(()),
        })
    }

    pub fn key_dirs(&self) -> &KeyDirs {
        &self.keys
    }

    pub fn target(&self) -> &PackageTarget {
        &self.target
    }

    /// Packages decoded for their metadata are also streamed to `tap`.
    pub fn with_tap(mut self, tap: Arc<dyn PayloadTap>) -> Depot {
        self.tap = Some(tap);
        self
    }

    /// Packages cache sources recorded (see [`Records`]); replaces earlier ones, and
    /// forgets what was loaded with them.
    pub fn set_records(&mut self, records: Records) {
        self.records = records;
        if let Ok(mut l) = self.loaded.lock() {
            l.clear();
        }
    }

    /// Downloads report their progress to `progress`.
    pub fn with_downloads(mut self, progress: Arc<dyn DownloadProgress>) -> Depot {
        self.downloads = Some(progress);
        self
    }

    pub fn searched(&self) -> &[PathBuf] {
        &self.searched
    }

    /// Verifies `path` (signature and payload hash), then reads its metadata. Cached per path.
    pub fn load(&self, path: &Path) -> Result<Loaded, DepotError> {
        if let Some(l) = self.loaded.lock().ok().and_then(|m| m.get(path).cloned()) {
            return Ok(l);
        }
        let hart = self.verify(path)?.with_max_unpacked(self.max_unpacked);
        let recorded = || self.records.metadata(hart.checksum());
        let metadata = match self.cached_metadata(hart.checksum()).or_else(recorded) {
            Some(m) => m,
            None => {
                let m = match self.tap.as_ref() {
                    Some(tap) => {
                        let result = match tap.tap(&hart) {
                            // The writer is dropped at the end of this arm: the tap sees the
                            // end of the stream before `finished` waits for it.
                            Some(mut w) => hart.metadata_tee(self.decode, &mut *w),
                            None => hart.metadata(self.decode),
                        };
                        tap.finished(&hart, result.as_ref().ok());
                        result?
                    }
                    None => hart.metadata(self.decode)?,
                };
                self.store_metadata(hart.checksum(), &m);
                m
            }
        };
        let loaded = Loaded::local(hart, metadata);
        if let Ok(mut m) = self.loaded.lock() {
            m.insert(path.to_owned(), loaded.clone());
        }
        Ok(loaded)
    }
}

impl Depot {
    fn record_path(&self, checksum: &str) -> Option<PathBuf> {
        // The checksum names the file: keep it to hex so it can never name another path.
        let ok = !checksum.is_empty() && checksum.bytes().all(|b| b.is_ascii_hexdigit());
        self.metadata_cache
            .as_ref()
            .filter(|_| ok)
            .map(|d| d.join(format!("{checksum}.json")))
    }

    /// A record written by an earlier run for the same bytes; anything unreadable or for
    /// another checksum is ignored (and rewritten after decoding).
    fn cached_metadata(&self, checksum: &str) -> Option<PackageMetadata> {
        let bytes = std::fs::read(self.record_path(checksum)?).ok()?;
        serde_json::from_slice::<MetadataRecord>(&bytes)
            .ok()?
            .into_metadata(checksum)
    }

    /// Best effort: a cache that cannot be written only costs a decode next time.
    fn store_metadata(&self, checksum: &str, m: &PackageMetadata) {
        let Some(path) = self.record_path(checksum) else {
            return;
        };
        let Some(dir) = path.parent() else { return };
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(dir)?;
            let bytes = serde_json::to_vec(&MetadataRecord::new(checksum, m))?;
            hab_oci_fs::write(&path, "metadata", &bytes, hab_oci_fs::Persist::DURABLE)
        };
        let _ = write();
    }
}

fn scan(dir: &Path, from_source: bool, out: &mut Vec<Candidate>) -> Result<(), DepotError> {
    let io = |source| DepotError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.ends_with(".hart") || !entry.path().is_file() {
            continue;
        }
        found.push(Candidate {
            path: entry.path(),
            claim: NameClaim::parse(name),
            from_source,
        });
    }
    // Directory order differs between machines; the index must not.
    found.sort_by(|a, b| a.path.cmp(&b.path));
    out.extend(found);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_names() {
        let c =
            NameClaim::parse("neurosis-oddversion6-1.2.3-beta12-20190513194219-x86_64-linux.hart")
                .expect("canonical");
        assert_eq!(c.onv, "neurosis-oddversion6-1.2.3-beta12");
        assert_eq!(c.release, "20190513194219");
        assert_eq!(c.target.as_str(), "x86_64-linux");
        assert_eq!(
            c.version_for("neurosis", "oddversion6"),
            Some("1.2.3-beta12")
        );
        assert_eq!(c.version_for("neurosis", "oddversion"), None);
        let c = NameClaim::parse("core-linux-headers-4.3-20160612063537-x86_64-linux-kernel2.hart")
            .expect("canonical");
        assert_eq!(c.target.as_str(), "x86_64-linux-kernel2");
        assert_eq!(c.version_for("core", "linux-headers"), Some("4.3"));
        assert!(NameClaim::parse("foo.hart").is_none());
        assert!(NameClaim::parse("a-b-1-2024-x86_64-linux.hart").is_none());
    }
}
