//! Names of temporary files and directories: every one hab-oci creates, in any directory,
//! starts with `.hab-oci-PID-`, so that an interrupted run (Ctrl-C, SIGTERM) can find and
//! remove exactly its own, and never another run's.

use std::io;
use std::path::Path;

/// `.hab-oci-PID-`: the prefix of this process's temporary names.
pub fn prefix() -> String {
    format!(".hab-oci-{}-", std::process::id())
}

/// Is `name` a temporary name of the process `pid`?
pub fn is_of_process(name: &str, pid: u32) -> bool {
    name.starts_with(&format!(".hab-oci-{pid}-"))
}

/// A temporary file in `dir`, named with [`prefix`] and `what`.
pub fn file_in(dir: &Path, what: &str) -> io::Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(&format!("{}{what}-", prefix()))
        .tempfile_in(dir)
}

/// A temporary directory in `dir`, named with [`prefix`] and `what`.
pub fn dir_in(dir: &Path, what: &str) -> io::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("{}{what}-", prefix()))
        .tempdir_in(dir)
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
        assert!(is_of_process(&name, std::process::id()), "{name}");
        assert!(!is_of_process(&name, std::process::id() + 1), "{name}");
        assert!(!is_of_process(".hab-oci-12-x", 1));
    }
}
