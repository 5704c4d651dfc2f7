//! The local sources first, then Builder: which package a request means when Builder is
//! configured, and how a download becomes a package in the artifact cache. A download is
//! verified (signature, ident, target, and the channel's checksum when a lookup gave one)
//! under its temporary name and only then named; a package that fails is deleted, never
//! left for the next run.

use std::path::Path;

use hart::{Hart, HartError, KeyDirs, KeyLookupError, PackageIdent, VerifiedHart};

use crate::builder::{BuilderClient, DownloadProgress, Origin};
use crate::error::DepotError;
use crate::source::{Depot, Loaded};

#[derive(Debug)]
struct Silent;
impl DownloadProgress for Silent {}

impl Depot {
    /// Verifies the hart at `path`; a signer whose key no key directory holds has it
    /// fetched from Builder (when configured and online) first.
    pub(crate) fn verify(&self, path: &Path) -> Result<VerifiedHart, DepotError> {
        match Hart::open(path)?.verify(&self.keys) {
            Err(HartError::UnknownKey {
                problem, signer, ..
            }) if matches!(*problem, KeyLookupError::NotFound { .. }) => {
                let fetching =
                    |b: &&BuilderClient| !b.settings().offline && b.settings().fetch_keys;
                let Some(b) = self.builder.as_ref().filter(fetching) else {
                    return Err(HartError::UnknownKey {
                        path: path.to_owned(),
                        signer,
                        problem,
                    }
                    .into());
                };
                // One fetch per key: packages of one origin are verified in parallel, and
                // the second waits here, then finds the key the first one fetched.
                let _one_at_a_time = self.key_fetch.lock().unwrap_or_else(|e| e.into_inner());
                if let Ok(v) = Hart::open(path)?.verify(&self.keys) {
                    return Ok(v);
                }
                let key = b.fetch_key(&signer, Origin::Main).or_else(|e| {
                    if b.url(Origin::Base) == b.url(Origin::Main) {
                        Err(e)
                    } else {
                        b.fetch_key(&signer, Origin::Base)
                    }
                })?;
                // Kept only if it verifies this package: a key that does not would stay in
                // the key cache and fail every later export of the origin.
                let cache = &b.settings().key_cache;
                let trial = std::fs::create_dir_all(cache)
                    .and_then(|()| hab_oci_fs::temp::dir_in(cache, "key"))
                    .map_err(|source| DepotError::Io {
                        path: cache.clone(),
                        source,
                    })?;
                let trial_key = trial.path().join(&key.name);
                std::fs::write(&trial_key, &key.text).map_err(|source| DepotError::Io {
                    path: trial_key.clone(),
                    source,
                })?;
                let verified = Hart::open(path)?
                    .verify(&KeyDirs::new(vec![trial.path().to_owned()]))
                    .map_err(|e| DepotError::KeyRefused {
                        signer: signer.to_string(),
                        url: key.url.clone(),
                        source: Box::new(e),
                    })?;
                b.keep_key(&key)?;
                Ok(verified)
            }
            other => Ok(other?),
        }
    }

    /// The package a request for `ident` means. Fully qualified: the local one, else a
    /// download. Fuzzy, with Builder: the channel's latest, unless a local version is newer
    /// (`hab pkg install`'s rule); present locally, it is not downloaded again.
    pub(crate) fn find_for(
        &self,
        ident: &PackageIdent,
        origin: Origin,
    ) -> Result<Loaded, DepotError> {
        let Some(b) = self.builder.as_ref() else {
            return self.find_local(ident);
        };
        if b.settings().offline {
            return self.find_local(ident).map_err(|e| match e {
                DepotError::NotFound {
                    ident,
                    target,
                    searched,
                } => DepotError::NotFoundOffline {
                    ident,
                    target,
                    searched,
                },
                other => other,
            });
        }
        if ident.fully_qualified() {
            return match self.find_exact_local(ident)? {
                Some(l) => Ok(l),
                None => match self.recorded(ident, None) {
                    Some(l) => Ok(l),
                    None => self.fetch(ident, origin, None),
                },
            };
        }
        // `hab pkg install` weighs the channel against installed packages only, never cached
        // artifacts; here that is the `--source` directories. (Counting the artifact cache
        // would let one run's channel or URL decide the next run's.)
        let local = match self.find_local_in(ident, true) {
            Ok(l) => Some(l),
            Err(DepotError::NotFound { .. }) | Err(DepotError::OnlyOtherTargets { .. }) => None,
            Err(e) => return Err(e),
        };
        let Some(remote) = b.latest(ident, &self.target, origin)? else {
            return local.ok_or_else(|| DepotError::NotInChannel {
                ident: ident.clone(),
                target: self.target.clone(),
                channel: b.channel(origin).to_owned(),
                url: b.url(origin).to_owned(),
                elsewhere: b.channels_with(ident, &self.target, origin),
            });
        };
        if let Some(l) = local
            && l.metadata.ident.total_cmp(&remote.ident).is_gt()
        {
            return Ok(l);
        }
        match self.find_exact_local(&remote.ident)? {
            Some(l) => Ok(l),
            None => match self.recorded(&remote.ident, Some(&remote.checksum)) {
                Some(l) => Ok(l),
                None => self.fetch(&remote.ident, origin, Some(&remote.checksum)),
            },
        }
    }

    /// The package a cache source recorded with exactly this ident (and, when the channel
    /// says which, this checksum) for the depot's target.
    fn recorded(&self, ident: &PackageIdent, checksum: Option<&str>) -> Option<Loaded> {
        self.records.package(ident).filter(|l| {
            l.metadata.target == self.target
                && checksum.is_none_or(|c| c.eq_ignore_ascii_case(&l.checksum))
        })
    }

    /// A dependency (fully qualified): the local one, else a download (never a lookup).
    /// `None` when neither has it (offline, or Builder has no such package).
    pub(crate) fn find_dependency(
        &self,
        ident: &PackageIdent,
        origin: Origin,
    ) -> Result<Option<Loaded>, DepotError> {
        if let Some(l) = self.find_exact_local(ident)? {
            return Ok(Some(l));
        }
        // A cache source holds its layer: neither its bytes nor its hart are needed.
        if let Some(l) = self.recorded(ident, None) {
            return Ok(Some(l));
        }
        self.fetch_dependency(ident, origin)
    }

    /// A dependency from Builder; `None` without Builder (or offline) or when Builder has
    /// no such package.
    pub(crate) fn fetch_dependency(
        &self,
        ident: &PackageIdent,
        origin: Origin,
    ) -> Result<Option<Loaded>, DepotError> {
        if self.builder.as_ref().is_none_or(|b| b.settings().offline) {
            return Ok(None);
        }
        match self.fetch(ident, origin, None) {
            Ok(l) => Ok(Some(l)),
            Err(DepotError::Builder(crate::builder::BuilderError::Status {
                status: 404, ..
            })) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Downloads `ident` into the artifact cache and loads it. Checked before it is named:
    /// the channel's checksum (`expected`), the signature, and that IDENT and TARGET are
    /// what was asked for.
    fn fetch(
        &self,
        ident: &PackageIdent,
        origin: Origin,
        expected: Option<&str>,
    ) -> Result<Loaded, DepotError> {
        let Some(b) = self.builder.as_ref() else {
            return self.find_local(ident);
        };
        let progress: &dyn DownloadProgress = match &self.downloads {
            Some(p) => p.as_ref(),
            None => &Silent,
        };
        let d = b.download(ident, &self.target, origin, progress)?;
        let bad = |problem: String| DepotError::BadDownload {
            ident: ident.clone(),
            url: d.url.clone(),
            problem,
        };
        if let Some(e) = expected
            && !e.eq_ignore_ascii_case(&d.checksum)
        {
            return Err(bad(format!(
                "its checksum is {} but the channel lists {e}",
                d.checksum
            )));
        }
        let unverified = |source: DepotError| DepotError::DownloadUnverified {
            ident: ident.clone(),
            url: d.url.clone(),
            source: Box::new(source),
        };
        let verified = self.verify(d.file.path()).map_err(unverified)?;
        let m = verified
            .ident_and_target(self.decode)
            .map_err(|e| unverified(e.into()))?;
        if m.ident != *ident || m.target != self.target {
            return Err(bad(format!("it holds {} for {}", m.ident, m.target)));
        }
        let dest = b.settings().artifact_cache.join(&d.name);
        hab_oci_fs::persist(d.file, &dest, hab_oci_fs::Persist::DURABLE).map_err(|source| {
            DepotError::Io {
                path: dest.clone(),
                source,
            }
        })?;
        // Checked in full before it was named; should loading it still fail (its metadata,
        // the unpack bound), it does not stay in the cache either.
        let loaded = self.load(&dest).and_then(|l| {
            if l.metadata.ident == *ident {
                Ok(l)
            } else {
                Err(bad(format!("it holds {}", l.metadata.ident)))
            }
        });
        if loaded.is_err() {
            let _ = std::fs::remove_file(&dest);
        }
        loaded
    }
}
