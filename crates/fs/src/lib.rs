//! Files that appear whole or not at all. Every file hab-oci writes goes through a
//! temporary name in its destination's directory ([`temp`]: `.hab-oci-PID-TOKEN-…`, which
//! an interrupted run removes), then [`persist`]: permissions, optionally `fsync`, and a
//! rename under the interruption gate. One implementation for the workspace: package
//! signing, keys, the metadata and layer caches, image blobs, archives and reports.

pub mod temp;

use std::io::{self, Write};
use std::path::Path;

/// How a finished temporary file becomes its destination.
#[derive(Debug, Clone, Copy)]
pub struct Persist {
    /// Permission bits of the result (temporary files are created 0600).
    pub mode: u32,
    /// `fsync` the data before the rename, so that after a crash the name never holds a
    /// partial file. Worth it for files read back as trusted later (caches, keys, outputs);
    /// not for blobs inside a staging layout that only becomes visible whole.
    pub durable: bool,
    /// Fail with `AlreadyExists` instead of replacing an existing destination.
    pub no_clobber: bool,
}

impl Persist {
    /// Readable by anyone, on disk before it is named, replacing what was there.
    pub const DURABLE: Persist = Persist {
        mode: 0o644,
        durable: true,
        no_clobber: false,
    };
    /// Readable by anyone, no `fsync` (see [`Persist::durable`]).
    pub const FAST: Persist = Persist {
        mode: 0o644,
        durable: false,
        no_clobber: false,
    };
}

/// Makes the finished `tmp` (created in `dest`'s directory, e.g. by [`temp::file_in`]) the
/// file `dest`.
pub fn persist(tmp: tempfile::NamedTempFile, dest: &Path, how: Persist) -> io::Result<()> {
    set_mode(tmp.path(), how.mode)?;
    if how.durable {
        tmp.as_file().sync_all()?;
    }
    temp::guarded(|| {
        if how.no_clobber {
            tmp.persist_noclobber(dest).map(drop).map_err(|e| e.error)
        } else {
            tmp.persist(dest).map(drop).map_err(|e| e.error)
        }
    })
}

/// Writes `bytes` to `dest` through a temporary name beside it (`what` names it): the whole
/// file or nothing.
pub fn write(dest: &Path, what: &str, bytes: &[u8], how: Persist) -> io::Result<()> {
    let dir = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = temp::file_in(dir, what)?;
    tmp.write_all(bytes)?;
    persist(tmp, dest, how)
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_or_nothing_and_no_clobber() {
        let d = tempfile::tempdir().expect("tmp");
        let dest = d.path().join("f");
        write(&dest, "t", b"one", Persist::DURABLE).expect("write");
        assert_eq!(std::fs::read(&dest).expect("read"), b"one");
        write(&dest, "t", b"two", Persist::FAST).expect("replace");
        assert_eq!(std::fs::read(&dest).expect("read"), b"two");
        let keep = Persist {
            mode: 0o600,
            no_clobber: true,
            ..Persist::DURABLE
        };
        let err = write(&dest, "t", b"three", keep).expect_err("exists");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&dest).expect("read"), b"two");
        // No temporary name is left behind, whatever happened.
        let names: Vec<_> = std::fs::read_dir(d.path())
            .expect("dir")
            .map(|e| e.expect("e").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("f")]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&dest).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o644);
        }
    }
}
