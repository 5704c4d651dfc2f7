//! Where the image goes: `oci:DIR`, `oci-archive:FILE`, `docker-archive:FILE`,
//! `docker-daemon`. Every output appears whole or not at all: archives are written to a
//! temporary file beside the destination and renamed; a layout directory is built in a
//! sibling staging directory and renamed into place. An existing path is only replaced if
//! hab-oci wrote it (or with `force`).

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;

use oci_image::layout::{IndexEntry, write_archive};
use oci_image::{ArchiveKind, Built, OciDir, Platform};

use crate::error::io_at;
use crate::naming::Naming;
use crate::{ExportError, Progress};

/// The index annotation that marks an image layout or archive as hab-oci's.
pub const OURS: &str = "sh.habitat.hab-oci";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Oci(PathBuf),
    OciArchive(PathBuf),
    DockerArchive(PathBuf),
    DockerDaemon,
}

impl FromStr for Output {
    type Err = ExportError;
    fn from_str(s: &str) -> Result<Output, ExportError> {
        let path = |p: &str| {
            if p.is_empty() {
                Err(ExportError::OutputSpec(s.to_owned()))
            } else {
                Ok(PathBuf::from(p))
            }
        };
        if let Some(p) = s.strip_prefix("oci:") {
            Ok(Output::Oci(path(p)?))
        } else if let Some(p) = s.strip_prefix("oci-archive:") {
            Ok(Output::OciArchive(path(p)?))
        } else if let Some(p) = s.strip_prefix("docker-archive:") {
            Ok(Output::DockerArchive(path(p)?))
        } else if s == "docker-daemon" || s == "docker-daemon:" {
            Ok(Output::DockerDaemon)
        } else {
            Err(ExportError::OutputSpec(s.to_owned()))
        }
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Output::Oci(p) => write!(f, "oci:{}", p.display()),
            Output::OciArchive(p) => write!(f, "oci-archive:{}", p.display()),
            Output::DockerArchive(p) => write!(f, "docker-archive:{}", p.display()),
            Output::DockerDaemon => f.write_str("docker-daemon"),
        }
    }
}

impl Output {
    /// Docker's formats hold one image, not an index.
    pub fn holds_one_image(&self) -> bool {
        matches!(self, Output::DockerArchive(_) | Output::DockerDaemon)
    }

    pub fn path(&self) -> Option<&Path> {
        match self {
            Output::Oci(p) | Output::OciArchive(p) | Output::DockerArchive(p) => Some(p),
            Output::DockerDaemon => None,
        }
    }
}

/// The outputs of one export.
#[derive(Debug, Clone)]
pub struct OutputSet {
    pub outputs: Vec<Output>,
    pub force: bool,
}

fn parent_of(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Is the existing `path` an image layout or archive hab-oci wrote?
fn is_ours(path: &Path) -> bool {
    if path.is_dir() {
        let empty = fs::read_dir(path)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        return empty
            || fs::read_to_string(path.join("index.json")).is_ok_and(|s| s.contains(OURS));
    }
    let mut head = vec![0u8; 16 * 1024];
    let n = fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    let head = &head[..n];
    head.starts_with(b"oci-layout") && head.windows(OURS.len()).any(|w| w == OURS.as_bytes())
}

impl OutputSet {
    /// Checks every output before any work: parents exist, existing paths are ours.
    pub fn check(&self) -> Result<(), ExportError> {
        for o in &self.outputs {
            let Some(p) = o.path() else { continue };
            let parent = parent_of(p);
            if !parent.is_dir() {
                return Err(ExportError::Io {
                    path: parent,
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "directory of the output does not exist",
                    ),
                });
            }
            if p.exists() && !self.force && !is_ours(p) {
                return Err(ExportError::NotOurs { path: p.to_owned() });
            }
        }
        Ok(())
    }

    /// The first `oci:` output: the staging layout is renamed into it at the end.
    fn first_oci(&self) -> Option<&PathBuf> {
        self.outputs.iter().find_map(|o| match o {
            Output::Oci(p) => Some(p),
            _ => None,
        })
    }

    /// A staging layout for the blobs, beside the first `oci:` output (same filesystem, so
    /// the final rename is atomic), else beside the first other output, else in the
    /// temporary directory.
    pub fn staging(&self) -> Result<tempfile::TempDir, ExportError> {
        let dir = self
            .first_oci()
            .map(|p| parent_of(p))
            .or_else(|| self.outputs.iter().find_map(|o| o.path().map(parent_of)))
            .unwrap_or_else(std::env::temp_dir);
        hab_oci_fs::temp::dir_in(&dir, "staging").map_err(io_at(&dir))
    }

    /// Writes every output from the staging layout. `oci:` and `oci-archive:` hold what
    /// the tags point at (an index, for several platforms); `docker-archive:` and
    /// `docker-daemon` hold one image: the host's platform, else the first.
    pub fn write(
        &self,
        staging: tempfile::TempDir,
        store: &OciDir,
        built: &Built,
        naming: &Naming,
        progress: &dyn Progress,
    ) -> Result<(), ExportError> {
        let entry = IndexEntry {
            image: built,
            names: naming.references(),
            tags: naming.tags.clone(),
        };
        let single = match built {
            Built::Image(_) => None,
            Built::Index(x) => {
                let host = Platform::host();
                let (image, is_host) = built.for_platform(&host);
                let platform = x
                    .images
                    .iter()
                    .find(|(_, i)| i.manifest_digest == image.manifest_digest)
                    .map(|(p, _)| p.to_string())
                    .unwrap_or_default();
                if self.outputs.iter().any(Output::holds_one_image) {
                    progress.step(&if is_host {
                        format!("docker-archive and docker-daemon hold one image: {platform}, the host's platform")
                    } else {
                        format!("docker-archive and docker-daemon hold one image: {platform} (the host's platform, {host}, is not among the targets)")
                    });
                }
                Some(Built::Image(image.clone()))
            }
        };
        let one = IndexEntry {
            image: single.as_ref().unwrap_or(built),
            names: naming.references(),
            tags: naming.tags.clone(),
        };
        let ann = BTreeMap::from([(OURS.to_owned(), crate::LAYER_FORMAT.to_owned())]);
        for o in &self.outputs {
            match o {
                Output::OciArchive(p) | Output::DockerArchive(p) => {
                    progress.step(&format!("writing {o}"));
                    let (kind, entry) = if matches!(o, Output::DockerArchive(_)) {
                        (ArchiveKind::Docker, &one)
                    } else {
                        (ArchiveKind::Oci, &entry)
                    };
                    let parent = parent_of(p);
                    let tmp =
                        hab_oci_fs::temp::file_in(&parent, "archive").map_err(io_at(&parent))?;
                    let w = write_archive(store, entry, kind, &ann, BufWriter::new(tmp))?;
                    let tmp = w.into_inner().map_err(|e| io_at(p)(e.into_error()))?;
                    hab_oci_fs::persist(tmp, p, hab_oci_fs::Persist::DURABLE).map_err(io_at(p))?;
                }
                Output::DockerDaemon => {
                    progress.step("loading into the docker daemon (docker load)");
                    docker_load(store, &one, &ann)?;
                }
                Output::Oci(_) => {}
            }
        }
        let Some(first) = self.first_oci() else {
            return Ok(());
        };
        store.write_images(std::slice::from_ref(&entry), &ann)?;
        for o in &self.outputs {
            let Output::Oci(p) = o else { continue };
            if p == first {
                continue;
            }
            progress.step(&format!("writing {o}"));
            let copy = hab_oci_fs::temp::dir_in(&parent_of(p), "staging").map_err(io_at(p))?;
            copy_tree(store.root(), copy.path())?;
            replace_dir(copy.path(), p)?;
        }
        progress.step(&format!("writing oci:{}", first.display()));
        // On success the staging directory has become the output and dropping the TempDir
        // finds nothing to remove; on failure it removes the staging directory.
        replace_dir(staging.path(), first)?;
        Ok(())
    }
}

/// Swaps two paths in one step (Linux `renameat2(RENAME_EXCHANGE)`): at no moment is
/// neither the old nor the new output at `dest`, even if the process is killed. `false`
/// where the kernel or filesystem cannot (then the caller renames in two steps).
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> bool {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE).is_ok()
}

#[cfg(not(target_os = "linux"))]
fn exchange(_: &Path, _: &Path) -> bool {
    false
}

/// Moves `staged` to `dest`, replacing what was there: swapped in one step where the
/// system can, else the old directory is renamed aside first and removed only once the new
/// one is in place. Under the temporary-name gate (`hab_oci_fs::temp`): an interruption's cleanup
/// waits for it rather than sweeping a directory in the middle of the swap.
fn replace_dir(staged: &Path, dest: &Path) -> Result<(), ExportError> {
    hab_oci_fs::temp::guarded(|| Ok::<_, std::io::Error>(replace_dir_now(staged, dest)))
        .map_err(io_at(dest))?
}

fn replace_dir_now(staged: &Path, dest: &Path) -> Result<(), ExportError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(staged, fs::Permissions::from_mode(0o755)).map_err(io_at(staged))?;
    }
    if dest.is_dir() && exchange(staged, dest) {
        // `staged` (a temporary name of this process) now holds the previous output.
        return fs::remove_dir_all(staged).map_err(io_at(staged));
    }
    if dest.exists() {
        let aside = parent_of(dest).join(format!(
            "{}old-{}",
            hab_oci_fs::temp::prefix(),
            dest.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ));
        fs::rename(dest, &aside).map_err(io_at(dest))?;
        if let Err(e) = fs::rename(staged, dest) {
            // Put the previous output back: a failed export leaves it as it was.
            let _ = fs::rename(&aside, dest);
            return Err(io_at(dest)(e));
        }
        if aside.is_dir() {
            fs::remove_dir_all(&aside).map_err(io_at(&aside))?;
        } else {
            fs::remove_file(&aside).map_err(io_at(&aside))?;
        }
    } else {
        fs::rename(staged, dest).map_err(io_at(dest))?;
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), ExportError> {
    for e in fs::read_dir(from).map_err(io_at(from))? {
        let e = e.map_err(io_at(from))?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if e.file_type().map_err(io_at(&src))?.is_dir() {
            fs::create_dir_all(&dst).map_err(io_at(&dst))?;
            copy_tree(&src, &dst)?;
        } else if e.file_name().to_string_lossy().starts_with(".tmp-") {
            continue;
        } else if fs::hard_link(&src, &dst).is_err() {
            fs::copy(&src, &dst).map_err(io_at(&dst))?;
        }
    }
    Ok(())
}

/// Streams the docker-archive into `docker load`; the archive's RepoTags apply the tags.
fn docker_load(
    store: &OciDir,
    entry: &IndexEntry<'_>,
    ann: &BTreeMap<String, String>,
) -> Result<(), ExportError> {
    let mut child = Command::new("docker")
        .arg("load")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ExportError::DockerLoad(format!("cannot run docker: {e}")))?;
    let stdin = child
        .stdin
        .take()
        .ok_or_else(|| ExportError::DockerLoad("no stdin".into()))?;
    let written = write_archive(
        store,
        entry,
        ArchiveKind::Docker,
        ann,
        BufWriter::new(stdin),
    )
    .and_then(|mut w| {
        w.flush().map_err(|e| oci_image::LayoutError::Io {
            path: "docker load".into(),
            source: e,
        })?;
        Ok(())
    });
    let out = child
        .wait_with_output()
        .map_err(|e| ExportError::DockerLoad(e.to_string()))?;
    // Our own failure (reading a blob, say) explains more than docker's "unexpected EOF";
    // a broken pipe means docker stopped reading, and its stderr says why.
    if let Err(e) = written {
        let broken_pipe = matches!(&e, oci_image::LayoutError::Io { source, .. }
            if source.kind() == std::io::ErrorKind::BrokenPipe);
        if !broken_pipe || out.status.success() {
            return Err(e.into());
        }
    }
    if !out.status.success() {
        return Err(ExportError::DockerLoad(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ));
    }
    Ok(())
}
