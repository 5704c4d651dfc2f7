//! Turns parsed arguments plus the environment into resolved settings for the libraries.

use std::path::PathBuf;

use anyhow::{Context, Result};
use depot::DepotSettings;
use hart::{KeyDirs, PackageTarget};

use crate::cli::{KeysArgs, SourceArgs};

fn home_hab(sub: &str) -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".hab/cache").join(sub))
}

/// Habitat's cache directory for `sub` ("keys", "artifacts"): `$env_var` if set, else the
/// system one and the user's one (`hab` uses the first as root, the second otherwise).
fn habitat_cache(env_var: &str, sub: &str) -> Vec<PathBuf> {
    if let Some(p) = std::env::var_os(env_var) {
        return vec![PathBuf::from(p)];
    }
    let mut v = vec![PathBuf::from("/hab/cache").join(sub)];
    v.extend(home_hab(sub));
    v
}

/// Where `key generate` writes by default.
pub(crate) fn key_cache_for_writing() -> PathBuf {
    habitat_cache("HAB_CACHE_KEY_PATH", "keys")
        .into_iter()
        .next()
        .unwrap_or_else(|| PathBuf::from("/hab/cache/keys"))
}

pub(crate) fn key_dirs(args: &KeysArgs) -> KeyDirs {
    if args.keys.is_empty() {
        KeyDirs::new(habitat_cache("HAB_CACHE_KEY_PATH", "keys"))
    } else {
        KeyDirs::new(args.keys.clone())
    }
}

/// hab-oci's own cache (layers, package metadata): `$HAB_OCI_CACHE`, else
/// `$XDG_CACHE_HOME/hab-oci`, else `~/.cache/hab-oci`.
pub(crate) fn cache_root() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HAB_OCI_CACHE").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p).join("hab-oci"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/hab-oci"))
}

/// Package metadata records under the cache root. Bump the version when what `metadata()`
/// computes changes: old records would otherwise still answer (records that no longer
/// parse are rebuilt anyway).
pub(crate) fn metadata_dir(root: &std::path::Path) -> PathBuf {
    root.join("metadata-v2")
}

/// `use_cache`: keep package metadata in hab-oci's cache, so a package seen before is
/// verified but not decoded again.
pub(crate) fn depot(args: &SourceArgs, use_cache: bool) -> Result<DepotSettings> {
    let target = PackageTarget::parse(&args.target).context("--target")?;
    Ok(DepotSettings {
        sources: args.sources.clone(),
        artifact_caches: habitat_cache("HAB_CACHE_ARTIFACT_PATH", "artifacts"),
        key_dirs: key_dirs(&args.keys).dirs().to_vec(),
        target: Some(target),
        decode_threads: 1,
        metadata_cache: cache_root().filter(|_| use_cache).map(|r| metadata_dir(&r)),
        max_unpacked: args.max_unpacked_size,
    })
}

/// `SOURCE_DATE_EPOCH`, the reproducible-builds convention for "the time to use".
pub(crate) fn source_date_epoch() -> Result<Option<u64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v
            .trim()
            .parse::<u64>()
            .map(Some)
            .with_context(|| format!("SOURCE_DATE_EPOCH '{v}' is not a number of seconds")),
        Err(_) => Ok(None),
    }
}
