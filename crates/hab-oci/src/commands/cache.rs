//! `hab-oci cache info|prune`: the layer cache's place and size, and trimming it.

use std::process::ExitCode;

use anyhow::{Result, anyhow};
use export::cache::LayerCache;

use crate::printer::Printer;
use crate::settings;

fn open() -> Result<(std::path::PathBuf, LayerCache)> {
    let root = settings::cache_root()
        .ok_or_else(|| anyhow!("no cache directory: set HAB_OCI_CACHE (or HOME)"))?;
    let cache = LayerCache::open(&root, u64::MAX);
    Ok((root, cache))
}

pub(crate) fn info(json: bool, printer: &Printer) -> Result<ExitCode> {
    let (root, cache) = open()?;
    let info = cache.info();
    if json {
        printer.out(&serde_json::to_string_pretty(&info)?)?;
    } else {
        printer.out(&format!("cache: {}", root.display()))?;
        printer.out(&format!(
            "layers: {} ({:.1} MiB)",
            info.entries,
            info.bytes as f64 / (1024.0 * 1024.0)
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn prune(max_size: Option<u64>, printer: &Printer) -> Result<ExitCode> {
    let (root, cache) = open()?;
    match max_size {
        Some(max) => {
            let removed = cache.prune(max)?;
            printer.status(&format!("removed {removed} layers from {}", root.display()));
        }
        None => {
            cache.clear()?;
            let meta = settings::metadata_dir(&root);
            if meta.exists() {
                std::fs::remove_dir_all(&meta)
                    .map_err(|e| anyhow!("removing {}: {e}", meta.display()))?;
            }
            printer.status(&format!("emptied {}", root.display()));
        }
    }
    Ok(ExitCode::SUCCESS)
}
