//! Ctrl-C (SIGINT) and SIGTERM: stop at once, remove this process's temporary files and
//! directories (every one is named `.hab-oci-PID-…`, see `hab_oci_fs::temp`) from the directories
//! the command registered, then exit 130 / 143. Outputs are only ever renamed into place
//! complete and tags written after every blob, so what was there before stays as it was.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// Directories to sweep for temporary names, and paths to remove whole.
static WATCHED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static OWNED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Starts the thread that waits for the signals. Without it (signals unavailable) the
/// default action applies: the process dies and the layer cache's pruning removes its
/// temporary files an hour later.
pub(crate) fn install() {
    let Ok(mut signals) = Signals::new([SIGINT, SIGTERM]) else {
        return;
    };
    watch(&std::env::temp_dir());
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            // Waits for an output being renamed into place, then no thread can create a
            // temporary name or commit an output any more; held until exit.
            let _closed = hab_oci_fs::temp::close();
            let removed = sweep();
            let name = if sig == SIGINT { "SIGINT" } else { "SIGTERM" };
            let _ = writeln!(
                std::io::stderr().lock(),
                "\nhab-oci: interrupted by {name}; removed {removed} temporary files and directories"
            );
            std::process::exit(128 + sig);
        }
    });
}

/// Temporary names of this process in `dir` are removed on interruption.
pub(crate) fn watch(dir: &Path) {
    if let Ok(mut w) = WATCHED.lock() {
        w.push(dir.to_owned());
    }
}

/// `path` (a directory this process made, e.g. an engine's build context) is removed whole
/// on interruption.
pub(crate) fn own(path: &Path) {
    if let Ok(mut o) = OWNED.lock() {
        o.push(path.to_owned());
    }
}

fn remove(path: &Path) -> bool {
    if path.is_dir() && !path.is_symlink() {
        std::fs::remove_dir_all(path).is_ok()
    } else {
        std::fs::remove_file(path).is_ok()
    }
}

/// Removes what this process registered; returns how many paths went.
fn sweep() -> usize {
    let mut removed = 0;
    let dirs = WATCHED.lock().map(|w| w.clone()).unwrap_or_default();
    for dir in dirs {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            if hab_oci_fs::temp::is_ours(&e.file_name().to_string_lossy()) && remove(&e.path()) {
                removed += 1;
            }
        }
    }
    for p in OWNED.lock().map(|o| o.clone()).unwrap_or_default() {
        if remove(&p) {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_removes_only_this_process_names() {
        let d = tempfile::tempdir().expect("tmp");
        let ours = hab_oci_fs::temp::dir_in(d.path(), "staging")
            .expect("dir")
            .keep();
        std::fs::write(ours.join("blob"), b"x").expect("blob");
        let ours_file = hab_oci_fs::temp::file_in(d.path(), "archive")
            .expect("file")
            .keep()
            .expect("keep")
            .1;
        let other = d.path().join(format!(
            ".hab-oci-{}-00000000-staging-x",
            std::process::id()
        ));
        std::fs::create_dir(&other).expect("other");
        let output = d.path().join("out");
        std::fs::create_dir(&output).expect("out");
        watch(d.path());
        sweep();
        assert!(!ours.exists() && !ours_file.exists());
        assert!(other.exists() && output.exists());
    }
}
