//! Names of temporary files and directories: every one hab-oci creates, in any directory,
//! starts with `.hab-oci-PID-TOKEN-` (TOKEN random per process: PIDs repeat across containers
//! sharing a cache volume), so that an interrupted run (Ctrl-C, SIGTERM) can find and remove
//! exactly its own, and never another run's.
//!
//! A gate orders creation and commits against that cleanup: temporary names are created, and
//! outputs renamed into place, under the gate's shared side; the cleanup takes its exclusive
//! side, so it never runs in the middle of a commit, and once it has started no new
//! temporary name appears (creation fails with `Interrupted`).

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{OnceLock, RwLock, RwLockWriteGuard};

static GATE: RwLock<()> = RwLock::new(());
static CLOSED: AtomicBool = AtomicBool::new(false);

/// `.hab-oci-PID-TOKEN-`: the prefix of this process's temporary names.
pub fn prefix() -> String {
    static TOKEN: OnceLock<String> = OnceLock::new();
    let token = TOKEN.get_or_init(|| {
        let mut b = [0u8; 4];
        // Without randomness the PID alone still separates processes on one host.
        let _ = getrandom::fill(&mut b);
        hex::encode(b)
    });
    format!(".hab-oci-{}-{token}-", std::process::id())
}

/// Is `name` a temporary name of this process?
pub fn is_ours(name: &str) -> bool {
    name.starts_with(&prefix())
}

/// Runs `f` (which creates a temporary name, or commits an output by renaming) under the
/// gate's shared side; fails without running it once [`close`] has been called.
pub fn guarded<T, E: From<io::Error>>(f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    let _shared = GATE.read().unwrap_or_else(|e| e.into_inner());
    if CLOSED.load(Ordering::SeqCst) {
        return Err(io::Error::new(
            io::ErrorKind::Interrupted,
            "interrupted: no new temporary files",
        )
        .into());
    }
    f()
}

/// Waits for creations and commits in progress, then refuses new ones: the cleanup holds
/// the returned guard until the process exits.
pub fn close() -> RwLockWriteGuard<'static, ()> {
    let guard = GATE.write().unwrap_or_else(|e| e.into_inner());
    CLOSED.store(true, Ordering::SeqCst);
    guard
}

/// A temporary file in `dir`, named with [`prefix`] and `what`.
pub fn file_in(dir: &Path, what: &str) -> io::Result<tempfile::NamedTempFile> {
    guarded(|| {
        tempfile::Builder::new()
            .prefix(&format!("{}{what}-", prefix()))
            .tempfile_in(dir)
    })
}

/// A temporary directory in `dir`, named with [`prefix`] and `what`.
pub fn dir_in(dir: &Path, what: &str) -> io::Result<tempfile::TempDir> {
    guarded(|| {
        tempfile::Builder::new()
            .prefix(&format!("{}{what}-", prefix()))
            .tempdir_in(dir)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_process() {
        let d = tempfile::tempdir().expect("tmp");
        let f = file_in(d.path(), "blob").expect("file");
        let name = f
            .path()
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        assert!(is_ours(&name), "{name}");
        let pid = std::process::id();
        assert!(name.starts_with(&format!(".hab-oci-{pid}-")), "{name}");
        // Same PID, another process's token (another container): not ours.
        assert!(
            !is_ours(&format!(".hab-oci-{pid}-00000000-blob-x")) || prefix().contains("-00000000-")
        );
        assert!(!is_ours(".hab-oci-12-x"));
    }
}
