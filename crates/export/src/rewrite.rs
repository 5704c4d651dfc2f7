//! Layer format v1: a verified hart's tar stream rewritten entry by entry into a normalized
//! layer (docs/layer-format-v1.md): synthesized parents, then the hart's entries in their own
//! order, ownership 0/0 without names, directories `g=u`, the hart's mtimes. Every entry
//! must stay inside the package's own `hab/pkgs/o/n/v/r/` prefix.

use std::collections::HashSet;
use std::io::Read;
use std::path::Path;

use hart::{DecodeOptions, PackageIdent, VerifiedHart, layout};
use oci_image::{EntryMeta, EntrySink};

use crate::ExportError;
use crate::plan::release_time;

/// Directories get group permissions equal to owner permissions (Habitat's `chmod g=u`), so
/// an arbitrary UID in group 0 can write `/hab/svc` and friends.
pub(crate) fn dir_mode(mode: u32) -> u32 {
    (mode & !0o070) | ((mode & 0o700) >> 3)
}

/// Writes the parents `hab/`, `hab/pkgs/`, `hab/pkgs/O/`, `hab/pkgs/O/N/`, `hab/pkgs/O/N/V/`
/// not yet in `emitted`, with the package's release time.
pub(crate) fn write_parents<S: EntrySink + ?Sized>(
    w: &mut S,
    ident: &PackageIdent,
    mtime: u64,
    emitted: &mut HashSet<String>,
) -> std::io::Result<()> {
    for p in layout::parent_dirs(ident) {
        if emitted.insert(p.clone()) {
            w.dir(&p, EntryMeta { mode: 0o775, mtime })?;
        }
    }
    Ok(())
}

/// Streams one verified hart into `w`. `advance` gets the content bytes of each entry.
pub(crate) fn write_package<S: EntrySink + ?Sized>(
    w: &mut S,
    hart: &VerifiedHart,
    ident: &PackageIdent,
    release_mtime: u64,
    emitted: &mut HashSet<String>,
    advance: &dyn Fn(u64),
) -> Result<(), ExportError> {
    let payload = hart.payload(DecodeOptions::default())?;
    write_tar(
        w,
        payload,
        hart.path(),
        Some((ident, release_mtime)),
        emitted,
        advance,
    )
    .map(drop)
}

/// Rewrites a decoded hart payload (a tar stream) into `w`. With `known` = (ident, release
/// mtime) the entries must lie in that ident's prefix; without, the prefix is the first
/// entry's, and the ident found is returned (the caller checks it against the package's
/// IDENT). `source` names the hart in errors.
pub(crate) fn write_tar<S: EntrySink + ?Sized, R: Read>(
    w: &mut S,
    reader: R,
    source: &Path,
    known: Option<(&PackageIdent, u64)>,
    emitted: &mut HashSet<String>,
    advance: &dyn Fn(u64),
) -> Result<PackageIdent, ExportError> {
    let mut ident: Option<PackageIdent> = known.map(|(i, _)| i.clone());
    let shown_ident = |i: &Option<PackageIdent>| {
        i.as_ref()
            .map_or_else(|| source.display().to_string(), ToString::to_string)
    };
    let payload_err = |source_err| {
        ExportError::Hart(hart::HartError::Payload {
            path: source.to_owned(),
            source: source_err,
        })
    };
    if let Some((i, mtime)) = known {
        write_parents(w, i, mtime, emitted).map_err(|source| ExportError::LayerWrite {
            package: i.to_string(),
            source,
        })?;
    }
    let mut archive = tar::Archive::new(reader);
    let mut links = Links::default();
    let mut guard = layout::PrefixGuard::new(ident.as_ref());
    for entry in archive.entries().map_err(payload_err)? {
        let mut entry = entry.map_err(payload_err)?;
        let raw = entry.path().map_err(payload_err)?.into_owned();
        let shown = raw.to_string_lossy().into_owned();
        let bad = |problem: &str, ident: &Option<PackageIdent>| ExportError::BadEntry {
            package: shown_ident(ident),
            entry: shown.clone(),
            problem: problem.to_owned(),
        };
        let path = layout::normalize(&raw).ok_or_else(|| {
            bad(
                "escapes the package (absolute path or '..') or is not UTF-8",
                &ident,
            )
        })?;
        let kind = entry.header().entry_type();
        // Parents of the prefix are skipped: ours are synthesized with fixed metadata.
        match guard.place(Some(&path), kind.is_dir()) {
            Ok(layout::Place::Parent) => continue,
            Ok(layout::Place::Inside(_)) => {}
            Err(v) => {
                return Err(match (v, guard.prefix()) {
                    (layout::Violation::OtherPackage { entry, prefix }, _) => {
                        ExportError::BadEntry {
                            package: shown_ident(&ident),
                            entry: if entry == path { shown.clone() } else { entry },
                            problem: format!("is outside the package's prefix {prefix}/"),
                        }
                    }
                    (layout::Violation::Outside, Some(prefix)) => bad(
                        &format!("is outside the package's prefix {prefix}/"),
                        &ident,
                    ),
                    (layout::Violation::Outside, None) => {
                        bad("is outside hab/pkgs/ORIGIN/NAME/VERSION/RELEASE/", &None)
                    }
                });
            }
        }
        let id = match &ident {
            Some(i) => i.clone(),
            None => {
                let found = guard
                    .prefix()
                    .and_then(|p| PackageIdent::parse_fq(p.strip_prefix("hab/pkgs/")?).ok())
                    .ok_or_else(|| {
                        bad("is outside hab/pkgs/ORIGIN/NAME/VERSION/RELEASE/", &None)
                    })?;
                write_parents(w, &found, release_time(&found), emitted).map_err(|source| {
                    ExportError::LayerWrite {
                        package: found.to_string(),
                        source,
                    }
                })?;
                ident = Some(found.clone());
                found
            }
        };
        let prefix = layout::prefix(&id);
        let write_err = |source| ExportError::LayerWrite {
            package: id.to_string(),
            source,
        };
        links.admit(&path).map_err(|p| bad(&p, &ident))?;
        let header = entry.header();
        let mode = header.mode().map_err(payload_err)? & 0o7777;
        let mtime = header.mtime().map_err(payload_err)?;
        let meta = EntryMeta { mode, mtime };
        match kind {
            tar::EntryType::Directory => {
                w.dir(
                    &path,
                    EntryMeta {
                        mode: dir_mode(mode),
                        mtime,
                    },
                )
                .map_err(write_err)?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.size();
                let mut counted = CountingReader {
                    inner: &mut entry,
                    advance,
                    n: 0,
                };
                w.file(&path, meta, size, &mut counted).map_err(write_err)?;
                links.files.insert(path);
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(payload_err)?
                    .ok_or_else(|| bad("is a symlink without a target", &ident))?;
                w.symlink(&path, &target.to_string_lossy(), meta)
                    .map_err(write_err)?;
                links.symlinks.insert(path);
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(payload_err)?
                    .ok_or_else(|| bad("is a hardlink without a target", &ident))?;
                let t = links
                    .hardlink_target(&target, &prefix)
                    .map_err(|p| bad(&p, &ident))?;
                w.hardlink(&path, &t, meta).map_err(write_err)?;
            }
            tar::EntryType::XGlobalHeader => {}
            other => {
                return Err(bad(
                    &format!(
                        "has an unsupported type ({other:?}): device nodes, fifos and the like are refused"
                    ),
                    &ident,
                ));
            }
        }
    }
    // Read to the end of the payload so the decoder's checks and the re-hash run.
    std::io::copy(&mut archive.into_inner(), &mut std::io::sink()).map_err(payload_err)?;
    ident.ok_or_else(|| ExportError::BadEntry {
        package: source.display().to_string(),
        entry: String::new(),
        problem: "the package holds no files".into(),
    })
}

/// What the entries so far let later ones do: no entry through a symlink the package
/// created, no path twice, hardlinks only to earlier regular files of the package.
#[derive(Default)]
struct Links {
    symlinks: HashSet<String>,
    files: HashSet<String>,
    seen: HashSet<String>,
}

impl Links {
    /// Admits an entry at `path`, or says why not.
    fn admit(&mut self, path: &str) -> Result<(), String> {
        // No entry may be reached through a symlink the package itself created.
        if let Some(link) = through_symlink(path, &self.symlinks) {
            return Err(format!(
                "passes through the symlink {link} the package created"
            ));
        }
        // A second entry for a path would replace the first on extraction (and could turn
        // a checked file into a symlink after the fact): refused.
        if !self.seen.insert(path.to_owned()) {
            return Err("appears twice in the package".into());
        }
        Ok(())
    }

    /// The normalized target of a hardlink inside `prefix`, or why it is refused.
    fn hardlink_target(&self, target: &Path, prefix: &str) -> Result<String, String> {
        let t = layout::normalize(target).filter(|t| layout::is_inside(t, prefix) && t != prefix);
        let Some(t) = t else {
            return Err(format!(
                "is a hardlink to '{}', outside the package",
                target.display()
            ));
        };
        if !self.files.contains(&t) || through_symlink(&t, &self.symlinks).is_some() {
            return Err(format!(
                "is a hardlink to '{t}', which is not an earlier regular file of the package"
            ));
        }
        Ok(t)
    }
}

/// The first proper ancestor of `path` that is a symlink the package created, if any.
fn through_symlink<'a>(path: &str, symlinks: &'a HashSet<String>) -> Option<&'a str> {
    let mut ancestor = path;
    while let Some((parent, _)) = ancestor.rsplit_once('/') {
        if let Some(l) = symlinks.get(parent) {
            return Some(l.as_str());
        }
        ancestor = parent;
    }
    None
}

/// A relative, `..`-free path as a string without trailing slash; `None` if it escapes.
/// Reports bytes read to `advance`, a MiB at a time.
pub(crate) struct CountingReader<'a, R> {
    pub(crate) inner: R,
    pub(crate) advance: &'a dyn Fn(u64),
    pub(crate) n: u64,
}

/// Progress is reported per MiB, not per read: a report takes a lock in the printer.
const PROGRESS_STEP: u64 = 1 << 20;

impl<R: Read> Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        if self.n >= PROGRESS_STEP || n == 0 {
            (self.advance)(self.n);
            self.n = 0;
        }
        Ok(n)
    }
}

impl<R> Drop for CountingReader<'_, R> {
    fn drop(&mut self) {
        if self.n > 0 {
            (self.advance)(self.n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_and_paths() {
        assert_eq!(dir_mode(0o755), 0o775);
        assert_eq!(dir_mode(0o700), 0o770);
        assert_eq!(dir_mode(0o1755), 0o1775);
    }

    /// A parent-shaped directory of another package (here another version) before the
    /// package's own entries: refused whether the prefix is known up front (a build from
    /// the hart) or found on the way (the prebuild tap, the fuzz entry point), as the
    /// metadata reader refuses it. Before, the second path accepted it.
    #[test]
    fn a_parent_of_another_package_is_refused_before_the_prefix_is_known() {
        let prefix = "hab/pkgs/a/b/1.0/20240101000000";
        let mut b = tar::Builder::new(Vec::new());
        let mut dir = tar::Header::new_gnu();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_mode(0o755);
        dir.set_size(0);
        dir.set_cksum();
        b.append_data(&mut dir, "hab/pkgs/a/b/2.0/", &[][..])
            .expect("append");
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, format!("{prefix}/IDENT"), &b"x\n"[..])
            .expect("append");
        let tar = b.into_inner().expect("tar");
        let err = crate::rewrite_for_fuzzing(&tar).expect_err("refused");
        assert!(
            err.to_string().contains("hab/pkgs/a/b/2.0")
                && err.to_string().contains("outside the package's prefix"),
            "{err}"
        );
        let meta = hart::metadata::metadata_from_tar(&tar[..], Path::new("x.hart"), false)
            .expect_err("refused");
        assert!(meta.to_string().contains("another package"), "{meta}");
    }

    /// Found by the `rewrite` fuzz target (whose property was too strict): a version with
    /// `..` inside a component (`2..n31-beta`) is an ordinary name, not a way out; it is
    /// accepted and every entry stays in its prefix.
    #[test]
    fn dots_inside_a_version_are_not_a_parent_component() {
        let prefix = "hab/pkgs/neurosis/odd/2..n31-beta/20190513194219";
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in [
            ("IDENT", "neurosis/odd/2..n31-beta/20190513194219\n"),
            ("TARGET", "x86_64-linux\n"),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, format!("{prefix}/{name}"), data.as_bytes())
                .expect("append");
        }
        let tar = b.into_inner().expect("tar");
        let (ident, layer) = crate::rewrite_for_fuzzing(&tar).expect("accepted");
        assert_eq!(ident.to_string(), "neurosis/odd/2..n31-beta/20190513194219");
        let mut names = Vec::new();
        for e in tar::Archive::new(&layer[..]).entries().expect("entries") {
            names.push(
                e.expect("entry")
                    .path()
                    .expect("path")
                    .display()
                    .to_string(),
            );
        }
        assert!(names.contains(&format!("{prefix}/IDENT")), "{names:?}");
        assert!(
            names
                .iter()
                .all(|n| !n.split('/').any(|c| c == "..") && n.starts_with("hab/")),
            "{names:?}"
        );
    }
}
