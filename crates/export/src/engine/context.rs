//! The build context for the docker and buildah engines: each planned layer's packages
//! written (through the same checked rewrite as the native engine) under `layers/NNN/`, the
//! extras under `extras/`, every file and directory — parents included — carrying the mtime
//! and mode of the native layer, and a Dockerfile with one `COPY` per layer and no `RUN`.
//! Fixed mtimes on the parents are what let the legacy builder produce the same `COPY`
//! layer on any machine (docs/layer-format-v1.md, "The docker/buildah build context").

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use depot::ResolvedClosure;
use filetime::FileTime;
use oci_image::{EntryMeta, EntrySink};
use rayon::prelude::*;

use crate::error::io_at;
use crate::layers::{label, packages};
use crate::plan::{ImagePlan, release_time};
use crate::{ExportError, Progress, rewrite};

/// A materialized context.
#[derive(Debug, Clone)]
pub struct Context {
    pub dir: PathBuf,
    pub dockerfile: PathBuf,
    /// `COPY` steps in the Dockerfile (package layers + extras).
    pub copy_steps: usize,
}

/// Writes normalized entries into a directory tree. Directory modes and mtimes are applied
/// at the end, deepest first: writing into a directory changes its mtime, and a read-only
/// directory could not be written into.
struct DirSink {
    root: PathBuf,
    dirs: Vec<(PathBuf, u32, u64)>,
}

impl DirSink {
    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn parent_exists(&self, p: &Path) -> io::Result<()> {
        match p.parent() {
            Some(parent) if !parent.exists() => fs::create_dir_all(parent),
            _ => Ok(()),
        }
    }

    fn finish(self, root_mtime: u64) -> io::Result<()> {
        for (p, mode, mtime) in self.dirs.iter().rev() {
            fs::set_permissions(p, fs::Permissions::from_mode(*mode))?;
            filetime::set_file_mtime(p, FileTime::from_unix_time(*mtime as i64, 0))?;
        }
        filetime::set_file_mtime(&self.root, FileTime::from_unix_time(root_mtime as i64, 0))
    }
}

/// The mtime of the directories several layers share (`hab`, `hab/pkgs`, `hab/pkgs/ORIGIN`).
/// A `COPY` into a directory a lower layer made can carry that layer's metadata into its own
/// diff; one constant for all of them keeps each package's layer independent of the
/// packages below it (measured: with per-package mtimes, rebuilding one library changed
/// three more legacy-builder layers than it changes native ones).
const SHARED_DIR_MTIME: u64 = 0;

impl EntrySink for DirSink {
    fn dir(&mut self, path: &str, meta: EntryMeta) -> io::Result<()> {
        let p = self.path(path);
        fs::create_dir_all(&p)?;
        let mtime = if hart::layout::is_shared_dir(path) {
            SHARED_DIR_MTIME
        } else {
            meta.mtime
        };
        self.dirs.push((p, meta.mode, mtime));
        Ok(())
    }

    fn file(
        &mut self,
        path: &str,
        meta: EntryMeta,
        size: u64,
        data: &mut dyn Read,
    ) -> io::Result<()> {
        let p = self.path(path);
        self.parent_exists(&p)?;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&p)?;
        let copied = io::copy(&mut data.take(size), &mut f)?;
        if copied != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{path}: {copied} of {size} bytes"),
            ));
        }
        f.flush()?;
        drop(f);
        fs::set_permissions(&p, fs::Permissions::from_mode(meta.mode))?;
        filetime::set_file_mtime(&p, FileTime::from_unix_time(meta.mtime as i64, 0))
    }

    fn symlink(&mut self, path: &str, target: &str, meta: EntryMeta) -> io::Result<()> {
        let p = self.path(path);
        self.parent_exists(&p)?;
        std::os::unix::fs::symlink(target, &p)?;
        let t = FileTime::from_unix_time(meta.mtime as i64, 0);
        filetime::set_symlink_file_times(&p, t, t)
    }

    fn hardlink(&mut self, path: &str, target: &str, _meta: EntryMeta) -> io::Result<()> {
        let p = self.path(path);
        self.parent_exists(&p)?;
        fs::hard_link(self.path(target), &p)
    }
}

/// Writes the context for `plan` into `dir` (which must not exist yet).
pub fn materialize(
    closure: &ResolvedClosure,
    plan: &ImagePlan,
    dir: &Path,
    single_copy: bool,
    progress: &dyn Progress,
) -> Result<Context, ExportError> {
    fs::create_dir_all(dir.join("layers")).map_err(io_at(dir))?;
    let layer_dir = |i: usize| dir.join("layers").join(format!("{i:03}"));
    (0..plan.layers.len())
        .into_par_iter()
        .map(|i| {
            let root = layer_dir(i);
            fs::create_dir(&root).map_err(io_at(&root))?;
            let members = packages(closure, plan, i);
            progress.layer_started(
                i,
                &label(&members),
                members.iter().map(|p| p.metadata.unpacked_size).sum(),
            );
            let mut sink = DirSink {
                root: root.clone(),
                dirs: Vec::new(),
            };
            let mut emitted = HashSet::new();
            let advance = |n: u64| progress.layer_advanced(i, n);
            for p in &members {
                let mtime = release_time(p.ident());
                rewrite::write_package(
                    &mut sink,
                    crate::native::local_hart(p)?,
                    p.ident(),
                    mtime,
                    &mut emitted,
                    &advance,
                )?;
            }
            sink.finish(SHARED_DIR_MTIME).map_err(io_at(&root))?;
            progress.layer_finished(i, "", 0);
            Ok(())
        })
        .collect::<Result<Vec<()>, ExportError>>()?;

    let extras = dir.join("extras");
    fs::create_dir(&extras).map_err(io_at(&extras))?;
    let mut sink = DirSink {
        root: extras.clone(),
        dirs: Vec::new(),
    };
    let mtime = plan.extras_mtime;
    crate::extras::write_entries(&mut sink, &plan.extras, mtime)
        .map_err(|(path, e)| io_at(&extras.join(path))(e))?;
    sink.finish(mtime).map_err(io_at(&extras))?;
    filetime::set_file_mtime(
        dir.join("layers"),
        FileTime::from_unix_time(mtime as i64, 0),
    )
    .map_err(io_at(dir))?;

    let dockerfile = dir.join("Dockerfile");
    let text = dockerfile_text(plan, single_copy);
    fs::write(&dockerfile, text).map_err(io_at(&dockerfile))?;
    Ok(Context {
        dir: dir.to_owned(),
        dockerfile,
        copy_steps: if single_copy {
            1
        } else {
            plan.layers.len() + 1
        },
    })
}

/// A Dockerfile string literal: double-quoted, with `\`, `"` and `$` escaped (ENV and
/// LABEL values are subject to variable substitution).
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' | '"' | '$' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_array(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

/// One `COPY` per planned layer (bottom to top), the extras, then the config. No `RUN`:
/// what Habitat's Dockerfile did in `RUN` steps is already in the context.
pub fn dockerfile_text(plan: &ImagePlan, single_copy: bool) -> String {
    let c = &plan.config;
    let mut d =
        String::from("# Written by hab-oci: one COPY per package layer, no RUN.\nFROM scratch\n");
    if single_copy {
        d.push_str("COPY");
        for i in 0..plan.layers.len() {
            d.push_str(&format!(" layers/{i:03}/"));
        }
        d.push_str(" extras/ /\n");
    } else {
        for i in 0..plan.layers.len() {
            d.push_str(&format!("COPY layers/{i:03}/ /\n"));
        }
        d.push_str("COPY extras/ /\n");
    }
    // One instruction each for ENV, EXPOSE and LABEL: the legacy builder runs a container
    // per instruction.
    let env: Vec<String> = c
        .env
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| format!("{k}={}", quoted(v)))
        .collect();
    if !env.is_empty() {
        d.push_str(&format!("ENV {}\n", env.join(" \\\n    ")));
    }
    if !c.exposed_ports.is_empty() {
        d.push_str(&format!("EXPOSE {}\n", c.exposed_ports.join(" ")));
    }
    let labels: Vec<String> = c
        .labels
        .iter()
        .map(|(k, v)| format!("{}={}", quoted(k), quoted(v)))
        .collect();
    if !labels.is_empty() {
        d.push_str(&format!("LABEL {}\n", labels.join(" \\\n    ")));
    }
    if let Some(w) = &c.working_dir {
        d.push_str(&format!("WORKDIR {w}\n"));
    }
    if let Some(s) = &c.stop_signal {
        d.push_str(&format!("STOPSIGNAL {s}\n"));
    }
    if let Some(u) = &c.user {
        d.push_str(&format!("USER {u}\n"));
    }
    if let Some(e) = &c.entrypoint {
        d.push_str(&format!("ENTRYPOINT {}\n", json_array(e)));
    }
    if let Some(cmd) = &c.cmd {
        d.push_str(&format!("CMD {}\n", json_array(cmd)));
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quoted(r#"a "b" $HOME \x"#), r#""a \"b\" \$HOME \\x""#);
    }
}
