//! Package metadata (IDENT, TARGET, DEPS, TDEPS, PATH, EXPOSES, SVC_USER, ...) read from a
//! verified hart's tar stream without unpacking anything to disk.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::artifact::{DecodeOptions, HartError, VerifiedHart};
use crate::ident::{PackageIdent, PackageTarget};
use crate::layout;

/// The metafiles read from the top of a package's prefix (Habitat's set plus the runtime
/// files the exporter needs). Everything else is only counted.
pub const METAFILES: &[&str] = &[
    "BINDS",
    "BINDS_OPTIONAL",
    "BUILD_DEPS",
    "BUILD_TDEPS",
    "CFLAGS",
    "DEPS",
    "EXPORTS",
    "EXPOSES",
    "IDENT",
    "LDFLAGS",
    "LD_RUN_PATH",
    "MANIFEST",
    "PACKAGE_TYPE",
    "PATH",
    "RUNTIME_ENVIRONMENT",
    "RUNTIME_PATH",
    "SHUTDOWN_SIGNAL",
    "SHUTDOWN_TIMEOUT",
    "SVC_GROUP",
    "SVC_USER",
    "TARGET",
    "TDEPS",
    "TYPE",
    "default.toml",
];

/// A metafile larger than this is refused rather than held in memory (real MANIFESTs, the
/// largest, are tens of KB).
pub const MAX_METAFILE: u64 = 8 * 1024 * 1024;

/// A MANIFEST larger than this is not read: it is informational (nothing of the image
/// depends on it), so instead of failing the package its facts are left out, with a note.
/// Real ones are tens of KB, the plan source included.
pub const MAX_MANIFEST: u64 = 1024 * 1024;

/// What a package's MANIFEST (Markdown written by Habitat's plan-build) says about where the
/// package comes from: the facts an SBOM carries. Every field is optional in real packages.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFacts {
    /// `pkg_license` as written (Habitat joins the plan's list with spaces, so this is the
    /// list of words): usually SPDX identifiers, sometimes not (`apachev2`).
    pub licenses: Vec<String>,
    /// `pkg_maintainer`.
    pub maintainer: Option<String>,
    /// `pkg_upstream_url`: the project's home page.
    pub upstream_url: Option<String>,
    /// `pkg_source`: where the plan downloaded the upstream source from.
    pub source_url: Option<String>,
    /// `pkg_shasum`: the SHA-256 of that source archive, lowercase hex.
    pub source_sha256: Option<String>,
    /// Why the facts above are absent although the package has a MANIFEST (too large, not
    /// UTF-8), or come from elsewhere: said as a warning by whoever reports them.
    pub note: Option<String>,
}

impl ManifestFacts {
    /// The facts of a MANIFEST's text. Both layouts plan-build has written are read: the
    /// current `* __Key__: value` list and the 2016 `Key: value` lines. Only the header
    /// (before the plan section) counts, so a plan's own source cannot pose as a fact.
    pub fn parse(text: &str) -> ManifestFacts {
        let mut facts = ManifestFacts::default();
        let mut seen = std::collections::BTreeSet::new();
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with("```") || line == "# Plan" || line == "Plan" {
                break;
            }
            let item = line.strip_prefix("* ").unwrap_or(line);
            let Some((key, value)) = item.split_once(':') else {
                continue;
            };
            let key = key.trim().trim_matches('_').trim();
            let value = value.trim();
            // The first occurrence wins, as in Builder's reader.
            if !seen.insert(key.to_owned()) {
                continue;
            }
            match key {
                "License" => {
                    facts.licenses = value.split_whitespace().map(str::to_owned).collect();
                }
                "Maintainer" if !value.is_empty() => facts.maintainer = Some(value.to_owned()),
                "Upstream URL" => facts.upstream_url = link(value),
                "Source" => facts.source_url = link(value),
                "SHA" => {
                    let sha = value.trim_matches('`').trim();
                    if sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                        facts.source_sha256 = Some(sha.to_ascii_lowercase());
                    }
                }
                _ => {}
            }
        }
        facts
    }
}

/// The target of a Markdown link `[text](target)`; plan-build writes a sentence instead
/// when there is none ("source URL not provided or required").
fn link(value: &str) -> Option<String> {
    let rest = value.strip_prefix('[')?;
    let (_, rest) = rest.split_once("](")?;
    let target = rest.strip_suffix(')')?.trim();
    (!target.is_empty() && !target.contains(char::is_whitespace)).then(|| target.to_owned())
}

/// What a package says about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PackageMetadata {
    pub ident: PackageIdent,
    pub target: PackageTarget,
    pub deps: Vec<PackageIdent>,
    pub tdeps: Vec<PackageIdent>,
    pub build_deps: Vec<PackageIdent>,
    /// Binary directories from PATH that lie inside the package's own prefix.
    pub path: Vec<String>,
    /// Absolute in-image paths of the non-directory entries directly inside those PATH
    /// directories (what Habitat's binlink links into `/bin`), in tar order.
    pub binaries: Vec<String>,
    pub exposes: Vec<String>,
    pub svc_user: Option<String>,
    pub svc_group: Option<String>,
    pub shutdown_signal: Option<String>,
    /// Has `hooks/run` or a top-level `run`: a service, not a library.
    pub is_service: bool,
    /// The service's run script relative to the prefix: `run` (a plain script) if present,
    /// else `hooks/run` (a Handlebars template the Supervisor renders).
    pub run_script: Option<String>,
    pub has_install_hook: bool,
    /// Regular files with the setuid or setgid bit, relative to the prefix. They are kept
    /// in images (as Habitat installs them); the export warns about them.
    #[serde(default)]
    pub setuid: Vec<String>,
    /// Number of tar entries and bytes of regular-file content.
    pub entries: u64,
    pub unpacked_size: u64,
    /// Licenses and upstream source from the MANIFEST (for SBOMs).
    pub manifest: ManifestFacts,
    /// Every metafile found, trimmed, by name.
    #[serde(skip)]
    pub files: BTreeMap<String, String>,
}

/// The metadata with its metafiles and the checksum of the hart it came from, as a
/// metadata cache stores it (`resolve --json` leaves the metafiles out).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MetadataRecord {
    pub checksum: String,
    pub metadata: PackageMetadata,
    pub files: BTreeMap<String, String>,
}

impl MetadataRecord {
    pub fn new(checksum: &str, metadata: &PackageMetadata) -> MetadataRecord {
        MetadataRecord {
            checksum: checksum.to_owned(),
            metadata: metadata.clone(),
            files: metadata.files.clone(),
        }
    }

    /// The metadata, if this record is for the hart with `checksum`.
    pub fn into_metadata(self, checksum: &str) -> Option<PackageMetadata> {
        (self.checksum == checksum).then(|| {
            let mut m = self.metadata;
            m.files = self.files;
            m
        })
    }
}

impl PackageMetadata {
    /// `hab/pkgs/o/n/v/r` for this package (no leading slash).
    pub fn prefix(&self) -> String {
        layout::prefix(&self.ident)
    }

    pub fn file(&self, name: &str) -> Option<&str> {
        self.files.get(name).map(String::as_str)
    }
}

/// Copies what it reads to `out` until `out` fails.
struct TeeReader<'a, R> {
    inner: R,
    out: Option<&'a mut dyn std::io::Write>,
}

impl<R: Read> Read for TeeReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(out) = &mut self.out
            && out.write_all(&buf[..n]).is_err()
        {
            self.out = None;
        }
        Ok(n)
    }
}

impl VerifiedHart {
    /// Streams the whole payload once and returns the package's metadata. Every entry must
    /// lie inside one `hab/pkgs/o/n/v/r/` prefix (or be a parent directory of it), and that
    /// prefix must be the ident the IDENT file names.
    pub fn metadata(&self, opts: DecodeOptions) -> Result<PackageMetadata, HartError> {
        self.read_metadata(opts, false, None)
    }

    /// Like [`VerifiedHart::metadata`], and every decoded byte of the payload (the tar
    /// stream) is also written to `tee`, so another consumer can use the same single decode.
    /// A `tee` that fails (its reader gave up) is dropped; the metadata read goes on.
    pub fn metadata_tee(
        &self,
        opts: DecodeOptions,
        tee: &mut dyn std::io::Write,
    ) -> Result<PackageMetadata, HartError> {
        self.read_metadata(opts, false, Some(tee))
    }

    /// Like [`VerifiedHart::metadata`] but stops decoding as soon as IDENT and TARGET have
    /// been read: enough to name the package, usually a small fraction of the payload. The
    /// other fields, sizes and counts cover only what was read.
    pub fn ident_and_target(&self, opts: DecodeOptions) -> Result<PackageMetadata, HartError> {
        self.read_metadata(opts, true, None)
    }

    fn read_metadata(
        &self,
        opts: DecodeOptions,
        stop_at_ident: bool,
        tee: Option<&mut dyn std::io::Write>,
    ) -> Result<PackageMetadata, HartError> {
        let payload = self.payload(opts)?;
        let reader: Box<dyn Read + '_> = match tee {
            Some(out) => Box::new(TeeReader {
                inner: payload,
                out: Some(out),
            }),
            None => Box::new(payload),
        };
        metadata_from_tar(reader, self.path(), stop_at_ident)
    }
}

/// The metadata of a decoded payload (a tar stream); `path` names the hart in errors.
/// Public for the fuzz targets (`fuzz/`); callers go through [`VerifiedHart::metadata`].
#[doc(hidden)]
pub fn metadata_from_tar(
    reader: impl Read,
    path: &Path,
    stop_at_ident: bool,
) -> Result<PackageMetadata, HartError> {
    let path = path.to_owned();
    let meta_err = |detail: String| HartError::Metadata {
        path: path.clone(),
        detail,
    };
    let payload_err = |source: std::io::Error| HartError::Payload {
        path: path.clone(),
        source,
    };
    let mut archive = tar::Archive::new(reader);
    let mut scan = Scan::default();
    let mut guard = layout::PrefixGuard::new(None);
    for entry in archive.entries().map_err(payload_err)? {
        let mut entry = entry.map_err(payload_err)?;
        scan.entries += 1;
        let entry_path = entry.path().map_err(payload_err)?.into_owned();
        let normalized = layout::normalize(&entry_path);
        let rest = match guard.place(normalized.as_deref(), entry.header().entry_type().is_dir()) {
            Ok(layout::Place::Parent) => continue,
            Ok(layout::Place::Inside(rest)) => rest,
            Err(layout::Violation::Outside) => {
                return Err(meta_err(format!(
                    "tar entry '{}' is outside hab/pkgs/ORIGIN/NAME/VERSION/RELEASE/",
                    entry_path.display()
                )));
            }
            Err(layout::Violation::OtherPackage { entry, prefix }) => {
                let entry = if normalized.as_deref() == Some(entry.as_str()) {
                    entry_path.display().to_string()
                } else {
                    entry
                };
                return Err(meta_err(format!(
                    "tar entry '{entry}' belongs to another package than {prefix}"
                )));
            }
        };
        let rest: Vec<String> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').map(str::to_owned).collect()
        };
        let kind = entry.header().entry_type();
        if kind.is_file() {
            scan.unpacked_size += entry.size();
            if entry.header().mode().is_ok_and(|m| m & 0o6000 != 0) {
                scan.setuid.push(rest.join("/"));
            }
        }
        if !kind.is_dir()
            && let Some((name, parent)) = rest.split_last()
        {
            scan.leaves.push((parent.join("/"), name.clone()));
        }
        let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
        match rest.as_slice() {
            ["run"] => {
                scan.is_service = true;
                scan.run_script = Some("run".into());
            }
            ["hooks", "run"] => {
                scan.is_service = true;
                scan.run_script.get_or_insert_with(|| "hooks/run".into());
            }
            ["hooks", "install"] => scan.has_install_hook = true,
            // Informational: one too large or not text costs its facts, not the package.
            ["MANIFEST"] if kind.is_file() && entry.size() > MAX_MANIFEST => {
                scan.manifest_note = Some(format!(
                    "its MANIFEST is {} bytes, more than the {MAX_MANIFEST} read: license and source left out",
                    entry.size()
                ));
            }
            ["MANIFEST"] if kind.is_file() => {
                let mut buf = Vec::with_capacity(entry.size() as usize);
                (&mut entry)
                    .take(MAX_MANIFEST)
                    .read_to_end(&mut buf)
                    .map_err(payload_err)?;
                match String::from_utf8(buf) {
                    Ok(text) => {
                        scan.files
                            .insert("MANIFEST".to_owned(), text.trim().to_owned());
                    }
                    Err(_) => {
                        scan.manifest_note = Some(
                            "its MANIFEST is not UTF-8 text: license and source left out".into(),
                        );
                    }
                }
            }
            [name] if kind.is_file() && METAFILES.contains(name) => {
                if entry.size() > MAX_METAFILE {
                    return Err(meta_err(format!(
                        "metadata file {name} is {} bytes, more than the {MAX_METAFILE} allowed",
                        entry.size()
                    )));
                }
                let mut buf = Vec::with_capacity(entry.size() as usize);
                (&mut entry)
                    .take(MAX_METAFILE)
                    .read_to_end(&mut buf)
                    .map_err(payload_err)?;
                let text = String::from_utf8(buf)
                    .map_err(|_| meta_err(format!("metadata file {name} is not UTF-8 text")))?;
                scan.files
                    .insert((*name).to_owned(), text.trim().to_owned());
                if stop_at_ident
                    && scan.files.contains_key("IDENT")
                    && scan.files.contains_key("TARGET")
                {
                    break;
                }
            }
            _ => {}
        }
    }
    if !stop_at_ident {
        // Read past the tar's end-of-archive marker to the end of the xz stream, so the
        // stream's own checks and the re-hash of the file (see `payload`) both run.
        std::io::copy(&mut archive.into_inner(), &mut std::io::sink()).map_err(payload_err)?;
    }
    let prefix = guard
        .prefix()
        .and_then(|p| p.strip_prefix("hab/pkgs/"))
        .ok_or_else(|| meta_err("the package holds no files".into()))?;
    scan.into_metadata(prefix, &meta_err)
}

/// What one pass over a package's tar gathers.
#[derive(Default)]
struct Scan {
    files: BTreeMap<String, String>,
    entries: u64,
    unpacked_size: u64,
    is_service: bool,
    has_install_hook: bool,
    setuid: Vec<String>,
    run_script: Option<String>,
    /// Why the MANIFEST was not read.
    manifest_note: Option<String>,
    /// Non-directory entries as (parent, name) relative to the prefix; filtered against
    /// PATH at the end, since PATH may come after them in the tar.
    leaves: Vec<(String, String)>,
}

impl Scan {
    /// The metadata of a package whose entries lie under `hab/pkgs/PREFIX`: its metafiles
    /// parsed and checked against the prefix.
    fn into_metadata(
        self,
        prefix: &str,
        meta_err: &dyn Fn(String) -> HartError,
    ) -> Result<PackageMetadata, HartError> {
        let Scan {
            files,
            entries,
            unpacked_size,
            is_service,
            has_install_hook,
            setuid,
            run_script,
            manifest_note,
            leaves,
        } = self;
        let ident_text = files
            .get("IDENT")
            .ok_or_else(|| meta_err("the package has no IDENT file".into()))?;
        let ident =
            PackageIdent::parse_fq(ident_text).map_err(|e| meta_err(format!("IDENT: {e}")))?;
        let prefix_ident = prefix;
        if ident.to_string() != prefix_ident {
            return Err(meta_err(format!(
                "IDENT says {ident} but the files are under hab/pkgs/{prefix_ident}"
            )));
        }
        let target = files
            .get("TARGET")
            .ok_or_else(|| meta_err("the package has no TARGET file".into()))
            .and_then(|t| PackageTarget::parse(t).map_err(|e| meta_err(format!("TARGET: {e}"))))?;
        let idents = |name: &str| -> Result<Vec<PackageIdent>, HartError> {
            let Some(text) = files.get(name) else {
                return Ok(Vec::new());
            };
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(|l| PackageIdent::parse_fq(l).map_err(|e| meta_err(format!("{name}: {e}"))))
                .collect()
        };
        let deps = idents("DEPS")?;
        let tdeps = idents("TDEPS")?;
        let build_deps = idents("BUILD_DEPS")?;
        if tdeps.contains(&ident) || deps.contains(&ident) {
            return Err(meta_err(format!(
                "{ident} lists itself as its own dependency"
            )));
        }
        let own_prefix = format!("/{}", layout::prefix(&ident));
        let path_dirs: Vec<String> = files
            .get("PATH")
            .map(|p| {
                p.split(':')
                    .filter(|d| Path::new(d).starts_with(&own_prefix))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let binaries = {
            let dirs: Vec<String> = path_dirs
                .iter()
                .map(|d: &String| {
                    d.strip_prefix(&own_prefix)
                        .unwrap_or_default()
                        .trim_matches('/')
                        .to_owned()
                })
                .collect();
            leaves
                .into_iter()
                .filter(|(parent, _)| dirs.contains(parent))
                .map(|(parent, name)| format!("{own_prefix}/{parent}/{name}"))
                .collect()
        };
        let word = |name: &str| files.get(name).filter(|s| !s.is_empty()).cloned();
        let manifest = match (files.get("MANIFEST"), manifest_note) {
            (_, Some(note)) => ManifestFacts {
                note: Some(note),
                ..ManifestFacts::default()
            },
            (Some(text), None) => ManifestFacts::parse(text),
            (None, None) => ManifestFacts::default(),
        };
        Ok(PackageMetadata {
            exposes: files
                .get("EXPOSES")
                .map(|e| e.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default(),
            svc_user: word("SVC_USER"),
            svc_group: word("SVC_GROUP"),
            shutdown_signal: word("SHUTDOWN_SIGNAL"),
            ident,
            target,
            deps,
            tdeps,
            build_deps,
            path: path_dirs,
            binaries,
            is_service,
            run_script,
            has_install_hook,
            setuid,
            entries,
            unpacked_size,
            manifest,
            files,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A MANIFEST as plan-build writes it today (the fixtures' `neurosis/testapp` layout).
    const CURRENT: &str = "# core / zlib\nCompression library\n\n\
        * __Maintainer__: The Habitat Maintainers <humans@habitat.sh>\n\
        * __Version__: 1.3.1\n\
        * __Release__: 20240105173710\n\
        * __Target__: x86_64-linux\n\
        * __Upstream URL__: [https://zlib.net](https://zlib.net)\n\
        * __License__: Zlib \n\
        * __Source__: [https://zlib.net/fossils/zlib-1.3.1.tar.gz](https://zlib.net/fossils/zlib-1.3.1.tar.gz)\n\
        * __SHA__: `9A93B2B7DFDAC77CEBA5A558A580E74667DD6FEDE4585B91EEFB60F03B72DF23`\n\
        * __Path__: `/hab/pkgs/core/zlib/1.3.1/20240105173710`\n\
        \n# Plan\n\n## Plan Source\n\n```bash\n* __License__: not-this-one\npkg_source=x\n```\n";

    #[test]
    fn current_manifest_facts() {
        let f = ManifestFacts::parse(CURRENT);
        assert_eq!(f.licenses, ["Zlib"]);
        assert_eq!(
            f.maintainer.as_deref(),
            Some("The Habitat Maintainers <humans@habitat.sh>")
        );
        assert_eq!(f.upstream_url.as_deref(), Some("https://zlib.net"));
        assert_eq!(
            f.source_url.as_deref(),
            Some("https://zlib.net/fossils/zlib-1.3.1.tar.gz")
        );
        assert_eq!(
            f.source_sha256.as_deref(),
            Some("9a93b2b7dfdac77ceba5a558a580e74667dd6fede4585b91eefb60f03b72df23")
        );
        assert_eq!(f.note, None);
    }

    #[test]
    fn placeholders_and_the_2016_layout() {
        let f = ManifestFacts::parse(
            "* __License__:  \n* __Source__: source URL not provided or required\n\
             * __SHA__: SHA256 checksum not provided or required\n",
        );
        assert_eq!(f, ManifestFacts::default());
        let old = ManifestFacts::parse(
            "happyhumans possums\n=====\n\nMaintainer: Humans <h@example.org>\n\
             License: apachev2 MIT\nSource: [nosuchfile.tar.gz](nosuchfile.tar.gz)\nSHA: \n\nPlan\n====\n",
        );
        assert_eq!(old.licenses, ["apachev2", "MIT"]);
        assert_eq!(old.source_url.as_deref(), Some("nosuchfile.tar.gz"));
        assert_eq!(old.source_sha256, None);
        assert_eq!(old.maintainer.as_deref(), Some("Humans <h@example.org>"));
    }

    /// A package's tar with `manifest` as its MANIFEST.
    fn package_tar(manifest: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let p = "hab/pkgs/o/n/1.0/20240101000000";
        for (name, data) in [
            ("IDENT", &b"o/n/1.0/20240101000000\n"[..]),
            ("TARGET", b"x86_64-linux\n"),
            ("MANIFEST", manifest),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, format!("{p}/{name}"), data)
                .expect("append");
        }
        b.into_inner().expect("tar")
    }

    #[test]
    fn manifest_facts_are_read_with_the_metadata() {
        let m = metadata_from_tar(&package_tar(CURRENT.as_bytes())[..], Path::new("t"), false)
            .expect("metadata");
        assert_eq!(m.manifest.licenses, ["Zlib"]);
        assert!(m.file("MANIFEST").is_some());
    }

    #[test]
    fn bad_manifest_costs_its_facts_not_the_package() {
        let mut not_utf8 = CURRENT.as_bytes().to_vec();
        not_utf8.extend_from_slice(&[0xff, 0xfe]);
        let m = metadata_from_tar(&package_tar(&not_utf8)[..], Path::new("t"), false)
            .expect("metadata");
        assert_eq!(m.manifest.licenses, Vec::<String>::new());
        assert_eq!(m.manifest.source_url, None);
        assert!(
            m.manifest
                .note
                .as_deref()
                .is_some_and(|n| n.contains("not UTF-8")),
            "{:?}",
            m.manifest
        );

        let mut large = CURRENT.as_bytes().to_vec();
        large.resize(MAX_MANIFEST as usize + 1, b' ');
        let m =
            metadata_from_tar(&package_tar(&large)[..], Path::new("t"), false).expect("metadata");
        assert_eq!(m.manifest.licenses, Vec::<String>::new());
        assert!(m.file("MANIFEST").is_none());
        assert!(
            m.manifest
                .note
                .as_deref()
                .is_some_and(|n| n.contains("1048577 bytes")),
            "{:?}",
            m.manifest
        );
    }
}
