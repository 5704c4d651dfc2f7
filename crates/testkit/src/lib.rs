//! Generates realistic, signed Habitat package closures for tests and benchmarks: tens of
//! packages with real file bytes (text, code-like and incompressible data), DEPS/TDEPS that
//! form a proper dependency graph, multi-block xz payloads, written in the layout
//! `hab pkg download --download-directory DIR` leaves (`artifacts/`, `keys/`).
//!
//! Everything is a pure function of the spec (seed included), so two runs produce the same
//! package directories; the harts differ only if the key does.
//!
//! [`registry`] is an in-process fake OCI registry (auth, faults, a request log) for push tests;
//! [`builder`] an in-process fake Habitat Builder (packages in channels, origin keys, bearer
//! token, faults, a request log) for download tests; [`base_image`] a busybox base image
//! (OCI layout, oci-archive, docker-archive, pushed with skopeo) for `--base-image` tests.

pub mod base_image;
pub mod builder;
mod http;
pub mod registry;

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use hart::{PackOptions, PackageIdent, SecretKey};

/// A small deterministic PRNG (splitmix64). Written by hand on purpose: generated test data
/// must stay byte-identical across machines and crate upgrades, which `rand`'s generators do
/// not promise.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}

const WORDS: &[&str] = &[
    "habitat",
    "package",
    "service",
    "supervisor",
    "config",
    "layer",
    "image",
    "registry",
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "for",
    "on",
    "with",
    "as",
    "by",
    "this",
    "that",
    "return",
    "static",
    "const",
    "struct",
    "function",
    "error",
    "value",
    "buffer",
    "index",
    "memory",
    "thread",
    "signal",
    "socket",
    "stream",
    "header",
    "version",
    "release",
    "origin",
];

/// Fills `out` with `len` bytes of content shaped like real package files: a mix of prose,
/// repetitive code-like records and incompressible runs (compressed binaries, images).
pub fn realistic_bytes(rng: &mut Rng, len: usize, out: &mut Vec<u8>) {
    let start = out.len();
    while out.len() - start < len {
        match rng.below(10) {
            0..=3 => {
                // Prose.
                for _ in 0..(20 + rng.below(200)) {
                    out.extend_from_slice(WORDS[rng.below(WORDS.len() as u64) as usize].as_bytes());
                    out.push(if rng.below(12) == 0 { b'\n' } else { b' ' });
                }
            }
            4..=6 => {
                // Symbol-table-like records: structured, moderately compressible.
                for _ in 0..(8 + rng.below(64)) {
                    let v = rng.next_u64();
                    out.extend_from_slice(&(v & 0xFFFF_u64).to_le_bytes());
                    out.extend_from_slice(&[0, 0, 0x40, 0, 0, 0, 0, 0]);
                    out.extend_from_slice(&(v >> 48).to_le_bytes()[..4]);
                }
            }
            _ => {
                // Incompressible run.
                for _ in 0..(16 + rng.below(256)) {
                    out.extend_from_slice(&rng.next_u64().to_le_bytes());
                }
            }
        }
    }
    out.truncate(start + len);
}

/// One package to write.
#[derive(Debug, Clone)]
pub struct PackageSpec {
    pub ident: PackageIdent,
    pub deps: Vec<PackageIdent>,
    pub tdeps: Vec<PackageIdent>,
    /// Total bytes of generated file content.
    pub size: u64,
    pub service: bool,
    pub seed: u64,
}

/// Writes the installed-package directory for `spec` under `root` (as
/// `root/hab/pkgs/o/n/v/r`) and returns its path.
pub fn write_package_dir(root: &Path, spec: &PackageSpec) -> Result<PathBuf> {
    write_package_dir_for(root, spec, "x86_64-linux")
}

/// [`write_package_dir`] for `target`: the same files, TARGET (and MANIFEST's) aside.
pub fn write_package_dir_for(root: &Path, spec: &PackageSpec, target: &str) -> Result<PathBuf> {
    let id = &spec.ident;
    let dir = root.join("hab/pkgs").join(id.to_string());
    fs::create_dir_all(dir.join("bin"))?;
    fs::create_dir_all(dir.join("lib"))?;
    fs::create_dir_all(dir.join("share/doc"))?;
    let lines = |v: &[PackageIdent]| v.iter().map(|d| format!("{d}\n")).collect::<String>();
    fs::write(dir.join("IDENT"), format!("{id}\n"))?;
    fs::write(dir.join("TARGET"), format!("{target}\n"))?;
    if !spec.deps.is_empty() {
        fs::write(dir.join("DEPS"), lines(&spec.deps))?;
        fs::write(dir.join("TDEPS"), lines(&spec.tdeps))?;
    }
    fs::write(dir.join("PATH"), format!("/hab/pkgs/{id}/bin\n"))?;
    fs::write(
        dir.join("MANIFEST"),
        manifest(spec).replace(
            "* __Target__: x86_64-linux",
            &format!("* __Target__: {target}"),
        ),
    )?;
    let mut rng = Rng::new(spec.seed);
    // Split the size over a few files: most in the library, some in the binary and docs.
    let total = spec.size as usize;
    let parts = [
        ("lib", format!("lib{}.so", id.name), total * 6 / 10),
        ("bin", id.name.clone(), total * 3 / 10),
        (
            "share/doc",
            "README".to_owned(),
            total - total * 6 / 10 - total * 3 / 10,
        ),
    ];
    for (sub, name, len) in parts {
        let mut buf = Vec::with_capacity(len);
        realistic_bytes(&mut rng, len, &mut buf);
        let path = dir.join(sub).join(name);
        fs::write(&path, &buf)?;
        if sub == "bin" {
            set_exec(&path)?;
        }
    }
    if spec.service {
        fs::create_dir_all(dir.join("hooks"))?;
        let run = dir.join("hooks/run");
        fs::write(
            &run,
            format!("#!/bin/sh\nexec /hab/pkgs/{id}/bin/{} \"$@\"\n", id.name),
        )?;
        set_exec(&run)?;
        fs::write(dir.join("SVC_USER"), "hab\n")?;
        fs::write(dir.join("SVC_GROUP"), "hab\n")?;
        fs::write(dir.join("EXPOSES"), "8080 8443\n")?;
    }
    Ok(dir)
}

/// The licenses a generated package declares, by its seed: SPDX identifiers, a list of two,
/// and one name that is not an SPDX identifier (as older Habitat plans wrote them).
const LICENSES: &[&str] = &[
    "Apache-2.0",
    "MIT",
    "MIT Apache-2.0",
    "apachev2",
    "BSD-3-Clause",
];

/// A MANIFEST as Habitat's plan-build writes it (Markdown: the facts list, then the plan),
/// with a license, an upstream source URL and its SHA-256 (made up, deterministic).
pub fn manifest(spec: &PackageSpec) -> String {
    let id = &spec.ident;
    let version = id.version.as_deref().unwrap_or_default();
    let release = id.release.as_deref().unwrap_or_default();
    let mut rng = Rng::new(spec.seed ^ 0x5EED_F00D_0C00);
    let sha: String = (0..4).map(|_| format!("{:016x}", rng.next_u64())).collect();
    let license = LICENSES[(spec.seed % LICENSES.len() as u64) as usize];
    let source = format!(
        "https://example.org/{}/{}-{version}.tar.gz",
        id.name, id.name
    );
    let upstream = format!("https://example.org/{}", id.name);
    let deps = if spec.deps.is_empty() {
        "no runtime dependencies or undefined".to_owned()
    } else {
        let list: Vec<String> = spec.deps.iter().map(ToString::to_string).collect();
        format!("`{} `", list.join(" "))
    };
    format!(
        "# {origin} / {name}\nA generated package (hab-oci-testkit)\n\n\
         * __Maintainer__: hab-oci tests <tests@example.org>\n\
         * __Version__: {version}\n\
         * __Release__: {release}\n\
         * __Target__: x86_64-linux\n\
         * __Upstream URL__: [{upstream}]({upstream})\n\
         * __License__: {license} \n\
         * __Source__: [{source}]({source})\n\
         * __SHA__: `{sha}`\n\
         * __Path__: `/hab/pkgs/{id}`\n\
         * __Build Dependencies__: no build dependencies or undefined\n\
         * __Dependencies__: {deps}\n\
         * __Interpreters__: no interpreters or undefined\n\n\
         # Plan\n\n## Plan Source\n\n```bash\npkg_name={name}\npkg_origin={origin}\n\
         pkg_version={version}\npkg_license=({license})\npkg_source={source}\n\
         pkg_shasum={sha}\n```\n",
        origin = id.origin,
        name = id.name,
    )
}

#[cfg(unix)]
fn set_exec(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

#[cfg(not(unix))]
fn set_exec(_path: &Path) -> Result<()> {
    Ok(())
}

/// A closure to generate.
#[derive(Debug, Clone)]
pub struct ClosureSpec {
    pub origin: String,
    /// Number of packages, the primary service included.
    pub packages: usize,
    /// Approximate total unpacked bytes across all packages.
    pub total_size: u64,
    pub seed: u64,
    /// xz block size: small blocks give multi-block payloads even for small packages.
    pub block_size: u64,
    /// Release stamp for every package (14 digits).
    pub release: String,
}

impl Default for ClosureSpec {
    fn default() -> Self {
        ClosureSpec {
            origin: "gen".to_owned(),
            packages: 10,
            total_size: 2 * 1024 * 1024,
            seed: 1,
            block_size: 1024 * 1024,
            release: "20240101000000".to_owned(),
        }
    }
}

/// A generated closure on disk.
#[derive(Debug)]
pub struct Closure {
    /// `artifacts/` with the harts and `keys/` with the key pair.
    pub dir: PathBuf,
    pub key: SecretKey,
    /// Every package, dependencies before dependents; the last one is the primary service.
    pub packages: Vec<PackageSpec>,
    pub harts: Vec<PathBuf>,
}

impl Closure {
    pub fn primary(&self) -> &PackageIdent {
        &self.packages[self.packages.len() - 1].ident
    }
}

/// Plans the packages of a closure: libraries `lib000..`, each depending on up to three
/// earlier ones, sized with a long tail (a few large, many small), then the primary `app`
/// service depending on several libraries.
pub fn plan_closure(spec: &ClosureSpec) -> Vec<PackageSpec> {
    let mut rng = Rng::new(spec.seed);
    let n = spec.packages.max(1);
    // Weights 1/(k+1) shuffled, so sizes have a realistic long tail.
    let mut weights: Vec<f64> = (0..n).map(|k| 1.0 / (k as f64 + 1.0)).collect();
    for i in (1..n).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        weights.swap(i, j);
    }
    let wsum: f64 = weights.iter().sum();
    let mut specs: Vec<PackageSpec> = Vec::with_capacity(n);
    for i in 0..n {
        let primary = i == n - 1;
        let name = if primary {
            "app".to_owned()
        } else {
            format!("lib{i:03}")
        };
        let ident = PackageIdent::new_fq(
            &spec.origin,
            &name,
            &format!("1.{}.0", i % 7),
            &spec.release,
        );
        let mut deps: Vec<PackageIdent> = Vec::new();
        if i > 0 {
            let want = if primary {
                3.min(i) + (i / 8).min(4)
            } else {
                rng.below(4) as usize
            };
            for _ in 0..want {
                let d = &specs[rng.below(i as u64) as usize].ident;
                if !deps.contains(d) {
                    deps.push(d.clone());
                }
            }
        }
        let mut tdeps: Vec<PackageIdent> = Vec::new();
        for d in &deps {
            let dspec = specs
                .iter()
                .find(|s| &s.ident == d)
                .map(|s| s.tdeps.clone())
                .unwrap_or_default();
            for t in std::iter::once(d.clone()).chain(dspec) {
                if !tdeps.contains(&t) {
                    tdeps.push(t);
                }
            }
        }
        tdeps.sort_by(|a, b| a.total_cmp(b));
        let size = ((spec.total_size as f64) * weights[i] / wsum) as u64;
        specs.push(PackageSpec {
            ident,
            deps,
            tdeps,
            size: size.max(64),
            service: primary,
            seed: spec.seed.wrapping_mul(1_000_003).wrapping_add(i as u64),
        });
    }
    // Every library should be reachable from the primary: add unreached ones as its deps.
    let last = specs.len() - 1;
    let reached: Vec<PackageIdent> = specs[last].tdeps.clone();
    for i in 0..last {
        let id = specs[i].ident.clone();
        if !reached.contains(&id) {
            let extra = specs[i].tdeps.clone();
            let app = &mut specs[last];
            app.deps.push(id.clone());
            for t in std::iter::once(id).chain(extra) {
                if !app.tdeps.contains(&t) {
                    app.tdeps.push(t);
                }
            }
        }
    }
    specs[last].tdeps.sort_by(|a, b| a.total_cmp(b));
    specs
}

/// Generates the closure under `out` (creating `out/artifacts` and `out/keys`), signing with
/// `key` or a fresh key for the spec's origin.
pub fn generate(spec: &ClosureSpec, out: &Path, key: Option<SecretKey>) -> Result<Closure> {
    generate_for(spec, out, key, "x86_64-linux")
}

/// [`generate`] for `target` (the same package contents; TARGET differs): with the same key
/// into the same `out`, a closure for several targets, as for a multi-platform image.
pub fn generate_for(
    spec: &ClosureSpec,
    out: &Path,
    key: Option<SecretKey>,
    target: &str,
) -> Result<Closure> {
    let key = match key {
        Some(k) => k,
        None => SecretKey::generate(&spec.origin)?,
    };
    let artifacts = out.join("artifacts");
    let keys = out.join("keys");
    fs::create_dir_all(&artifacts)?;
    // A second target's closure into the same directory keeps the key already there.
    match key.write_pair(&keys) {
        Err(hart::KeyError::Exists { .. }) => {}
        r => {
            r?;
        }
    }
    let specs = plan_closure(spec);
    let work = tempfile::tempdir_in(out).context("work directory")?;
    let opts = PackOptions {
        block_size: spec.block_size,
        mtime: Some(1_700_000_000),
        ..PackOptions::default()
    };
    let mut harts = Vec::new();
    for s in &specs {
        let dir = write_package_dir_for(work.path(), s, target)?;
        let packed = hart::pack(&dir, &key, None, &artifacts, &opts)
            .with_context(|| format!("packing {}", s.ident))?;
        harts.push(packed.path);
        fs::remove_dir_all(&dir)?;
    }
    Ok(Closure {
        dir: out.to_owned(),
        key,
        packages: specs,
        harts,
    })
}

/// Packs one more package (e.g. a new release of an existing one) into `closure`.
pub fn add_package(closure: &mut Closure, spec: PackageSpec, block_size: u64) -> Result<PathBuf> {
    let work = tempfile::tempdir_in(&closure.dir)?;
    let dir = write_package_dir(work.path(), &spec)?;
    let opts = PackOptions {
        block_size,
        mtime: Some(1_700_000_000),
        ..PackOptions::default()
    };
    let packed = hart::pack(
        &dir,
        &closure.key,
        None,
        &closure.dir.join("artifacts"),
        &opts,
    )?;
    closure.harts.push(packed.path.clone());
    closure.packages.push(spec);
    Ok(packed.path)
}

/// One raw tar entry for [`raw_hart`]: anything a hostile package could hold.
#[derive(Debug, Clone)]
pub enum RawEntry {
    File(String, Vec<u8>),
    Dir(String),
    Symlink(String, String),
    Hardlink(String, String),
    Fifo(String),
    CharDevice(String),
    /// A regular file of `size` zero bytes, streamed (a decompression bomb's body).
    Zeros(String, u64),
    /// A regular file with the given mode (setuid and friends).
    Mode(String, Vec<u8>, u32),
}

/// A signed hart built from raw tar entries, bypassing our packer's checks: for tests of
/// what hab-oci must refuse.
pub fn raw_hart(key: &SecretKey, entries: &[RawEntry]) -> Result<Vec<u8>> {
    let payload = raw_payload(entries)?;
    let mut out = hart::pack::sign_bytes(key, &payload);
    out.extend_from_slice(&payload);
    Ok(out)
}

/// The xz payload of [`raw_hart`], unsigned.
pub fn raw_payload(entries: &[RawEntry]) -> Result<Vec<u8>> {
    // Preset 1: these payloads only need to be valid xz, and zeros compress fast there.
    let mut tar = tar::Builder::new(liblzma::write::XzEncoder::new(Vec::new(), 1));
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o755);
        h.set_mtime(1_700_000_000);
        h.set_size(0);
        match e {
            RawEntry::File(p, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
                write_raw_path(&mut h, p)?;
                h.set_cksum();
                tar.append(&h, &data[..])?;
            }
            RawEntry::Dir(p) => {
                h.set_entry_type(tar::EntryType::Directory);
                write_raw_path(&mut h, p)?;
                h.set_cksum();
                tar.append(&h, std::io::empty())?;
            }
            RawEntry::Symlink(p, t) | RawEntry::Hardlink(p, t) => {
                h.set_entry_type(if matches!(e, RawEntry::Symlink(..)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                });
                write_raw_path(&mut h, p)?;
                let b = t.as_bytes();
                if let Some(g) = h.as_gnu_mut() {
                    g.linkname[..b.len()].copy_from_slice(b);
                }
                h.set_cksum();
                tar.append(&h, std::io::empty())?;
            }
            RawEntry::Zeros(p, size) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(*size);
                write_raw_path(&mut h, p)?;
                h.set_cksum();
                tar.append(&h, std::io::Read::take(std::io::repeat(0), *size))?;
            }
            RawEntry::Mode(p, data, mode) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                write_raw_path(&mut h, p)?;
                h.set_cksum();
                tar.append(&h, &data[..])?;
            }
            RawEntry::Fifo(p) | RawEntry::CharDevice(p) => {
                h.set_entry_type(if matches!(e, RawEntry::Fifo(_)) {
                    tar::EntryType::Fifo
                } else {
                    tar::EntryType::Char
                });
                write_raw_path(&mut h, p)?;
                h.set_cksum();
                tar.append(&h, std::io::empty())?;
            }
        }
    }
    Ok(tar.into_inner()?.finish()?)
}

/// Writes the name bytes as given (`set_path` would refuse `..` and absolute paths).
fn write_raw_path(h: &mut tar::Header, p: &str) -> Result<()> {
    let b = p.as_bytes();
    anyhow::ensure!(b.len() <= 100, "raw path too long");
    if let Some(g) = h.as_gnu_mut() {
        g.name = [0; 100];
        g.name[..b.len()].copy_from_slice(b);
    }
    Ok(())
}

/// A package holding Debian's static busybox (`/bin/busybox`) as `core/busybox-static`,
/// with applet links for `sh`, `cat`, `echo`, `ls`: a real executable for images we run.
pub fn busybox_package(root: &Path, origin: &str) -> Result<PathBuf> {
    let id = PackageIdent::new_fq(origin, "busybox-static", "1.36.1", "20240101000000");
    let dir = root.join("hab/pkgs").join(id.to_string());
    fs::create_dir_all(dir.join("bin"))?;
    fs::copy("/bin/busybox", dir.join("bin/busybox"))
        .context("copying /bin/busybox (Debian package busybox-static)")?;
    set_exec(&dir.join("bin/busybox"))?;
    for applet in ["sh", "cat", "echo", "ls"] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet))?;
    }
    fs::write(dir.join("IDENT"), format!("{id}\n"))?;
    fs::write(dir.join("TARGET"), "x86_64-linux\n")?;
    fs::write(dir.join("PATH"), format!("/hab/pkgs/{id}/bin\n"))?;
    Ok(dir)
}

/// Rebuilds `name` and every package that depends on it, as Habitat rebuilds them: new
/// releases, DEPS/TDEPS pointing at the new releases. Returns the new specs (plan order).
pub fn rebuild_specs(specs: &[PackageSpec], name: &str, release: &str) -> Vec<PackageSpec> {
    let mut renamed: Vec<(PackageIdent, PackageIdent)> = Vec::new();
    let mut out = Vec::new();
    for s in specs {
        let hit =
            s.ident.name == name || s.tdeps.iter().any(|d| renamed.iter().any(|(o, _)| o == d));
        if !hit {
            continue;
        }
        let remap = |v: &[PackageIdent]| -> Vec<PackageIdent> {
            v.iter()
                .map(|d| {
                    renamed
                        .iter()
                        .find(|(o, _)| o == d)
                        .map_or_else(|| d.clone(), |(_, n)| n.clone())
                })
                .collect()
        };
        let mut n = s.clone();
        n.ident.release = Some(release.to_owned());
        n.deps = remap(&s.deps);
        n.tdeps = remap(&s.tdeps);
        renamed.push((s.ident.clone(), n.ident.clone()));
        out.push(n);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_is_deterministic_and_closed() {
        let spec = ClosureSpec {
            packages: 40,
            ..ClosureSpec::default()
        };
        let a = plan_closure(&spec);
        let b = plan_closure(&spec);
        assert_eq!(a.len(), 40);
        assert_eq!(
            a.iter()
                .map(|s| (s.ident.to_string(), s.size))
                .collect::<Vec<_>>(),
            b.iter()
                .map(|s| (s.ident.to_string(), s.size))
                .collect::<Vec<_>>()
        );
        // Every library is in the primary's TDEPS, and every TDEPS is closed.
        let app = &a[39];
        assert_eq!(app.tdeps.len(), 39);
        for s in &a {
            for d in &s.deps {
                assert!(s.tdeps.contains(d));
            }
        }
    }
}
