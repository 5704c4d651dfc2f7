//! The hostile package corpus: packages and keys crafted to escape, lie or exhaust, built
//! with our own signing code and raw tar. Each must be refused with its own error naming the file
//! or package, a non-zero exit, nothing at the output paths, and a layer cache with no entry
//! and no temporary file. The test checks that SECURITY.md's case → error table is what the
//! corpus gives, and writes the table it got to `target/tmp/hostile-corpus.md`.

use std::fs;
use std::path::{Path, PathBuf};

use hab_oci_testkit::RawEntry::{self, *};

mod common;
use common::*;

const P: &str = "hab/pkgs/evil/pkg/1.0/20240101000000";
const HART: &str = "evil-pkg-1.0-20240101000000-x86_64-linux.hart";

fn base() -> Vec<RawEntry> {
    vec![
        Dir(format!("{P}/")),
        File(
            format!("{P}/IDENT"),
            b"evil/pkg/1.0/20240101000000\n".to_vec(),
        ),
        File(format!("{P}/TARGET"), b"x86_64-linux\n".to_vec()),
    ]
}

fn with(extra: Vec<RawEntry>) -> Vec<RawEntry> {
    let mut e = base();
    e.extend(extra);
    e
}

type WriteKeys = Box<dyn Fn(&Path)>;

/// What a case puts in its source directory and key directory.
struct Case {
    name: &'static str,
    hart: Vec<u8>,
    /// Writes the case's keys into the directory given (default: the good key pair).
    keys: Option<WriteKeys>,
    extra_args: Vec<&'static str>,
    expect: &'static str,
}

/// An error line as SECURITY.md shows it: without `error: `, the case's own paths as `X.hart`,
/// `KEYS` and `SRC`, the temporary directory as `…`, the package's prefix `{P}/` as `…/`, key
/// revisions as `REV`, hashes cut to four digits, in a code span with `|` escaped.
fn documented(line: &str, dir: &Path, tmp: &Path, keys: &[(String, &str)]) -> String {
    let mut s = line.strip_prefix("error: ").unwrap_or(line).to_owned();
    let d = dir.display().to_string();
    for (from, to) in [
        (format!("{d}/src/{HART}"), "X.hart"),
        (format!("{d}/keys"), "KEYS"),
        (format!("{d}/src"), "SRC"),
        (tmp.display().to_string(), "…"),
        (format!("{P}/"), "…/"),
    ] {
        s = s.replace(&from, to);
    }
    for (from, to) in keys {
        s = s.replace(from.as_str(), to);
    }
    let mut out = String::with_capacity(s.len());
    let mut hex = String::new();
    let flush = |out: &mut String, hex: &mut String| {
        if hex.len() >= 32 {
            out.push_str(&hex[..4]);
            out.push('…');
        } else {
            out.push_str(hex);
        }
        hex.clear();
    };
    for ch in s.chars() {
        if ch.is_ascii_hexdigit() {
            hex.push(ch);
        } else {
            flush(&mut out, &mut hex);
            out.push(ch);
        }
    }
    flush(&mut out, &mut hex);
    let out = out.replace('|', "\\|");
    if out.contains('`') {
        format!("`` {out} ``")
    } else {
        format!("`{out}`")
    }
}

/// The lines of `want` and `got` that differ, `-`/`+` in order (a longest-common-subsequence
/// diff).
fn diff(want: &[&str], got: &[&str]) -> String {
    let (n, m) = (want.len(), got.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if want[i] == got[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < n || j < m {
        if i < n && j < m && want[i] == got[j] {
            (i, j) = (i + 1, j + 1);
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push(format!("+ {}", got[j]));
            j += 1;
        } else {
            out.push(format!("- {}", want[i]));
            i += 1;
        }
    }
    out.join("\n")
}

fn layer_cache_is_clean(cache: &Path) -> Result<(), String> {
    let layers = cache.join("layers-v1");
    let Ok(rd) = fs::read_dir(&layers) else {
        return Ok(());
    };
    let left: Vec<String> = rd
        .map(|e| e.expect("e").file_name().to_string_lossy().into_owned())
        .collect();
    if left.is_empty() {
        Ok(())
    } else {
        Err(format!("layer cache not clean: {left:?}"))
    }
}

fn hostile_packages_and_keys_are_refused_and_leave_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let key = hart::SecretKey::generate("evil").expect("key");
    let good_keys = t.join("good-keys");
    key.write_pair(&good_keys).expect("keys");
    let signer = fs::read_dir(&good_keys)
        .expect("keys")
        .map(|e| e.expect("e").path())
        .find(|p| p.extension().is_some_and(|x| x == "pub"))
        .expect("pub key");
    let signer_name = signer.file_name().expect("name").to_owned();
    let signer_text = fs::read_to_string(&signer).expect("pub");
    let stranger = hart::SecretKey::generate("stranger").expect("key");
    let raw = |entries: Vec<RawEntry>| hab_oci_testkit::raw_hart(&key, &entries).expect("raw");
    let good = raw(base());

    let mut cases: Vec<Case> = Vec::new();
    let simple = |name, hart, expect| Case {
        name,
        hart,
        keys: None,
        extra_args: Vec::new(),
        expect,
    };
    cases.push(simple(
        "`..` components",
        raw(with(vec![File(
            format!("{P}/../../../../../etc/passwd"),
            b"x".to_vec(),
        )])),
        "outside",
    ));
    cases.push(simple(
        "absolute path",
        raw(with(vec![File("/etc/shadow".into(), b"x".to_vec())])),
        "outside",
    ));
    cases.push(simple(
        "write through a symlink the package created",
        raw(with(vec![
            Symlink(format!("{P}/lib"), "/etc".into()),
            File(format!("{P}/lib/passwd"), b"x".to_vec()),
        ])),
        "passes through the symlink",
    ));
    cases.push(simple(
        "hardlink to outside the package",
        raw(with(vec![Hardlink(format!("{P}/x"), "etc/passwd".into())])),
        "is a hardlink to 'etc/passwd', outside the package",
    ));
    cases.push(simple(
        "hardlink through a symlink",
        raw(with(vec![
            Symlink(format!("{P}/d"), "/etc".into()),
            Hardlink(format!("{P}/h"), format!("{P}/d/passwd")),
        ])),
        "not an earlier regular file of the package",
    ));
    cases.push(simple(
        "device node",
        raw(with(vec![CharDevice(format!("{P}/null"))])),
        "device nodes, fifos and the like are refused",
    ));
    cases.push(simple(
        "fifo",
        raw(with(vec![Fifo(format!("{P}/pipe"))])),
        "device nodes, fifos and the like are refused",
    ));
    cases.push(simple(
        "duplicate entry",
        raw(with(vec![
            File(format!("{P}/bin/tool"), b"one".to_vec()),
            File(format!("{P}/bin/tool"), b"two".to_vec()),
        ])),
        "appears twice in the package",
    ));
    cases.push(simple(
        "entry in another package's prefix",
        raw(with(vec![File(
            "hab/pkgs/core/glibc/2.27/20190115002733/lib/libc.so.6".into(),
            b"x".to_vec(),
        )])),
        "belongs to another package",
    ));
    cases.push(simple(
        "IDENT names another package",
        raw(vec![
            Dir(format!("{P}/")),
            File(
                format!("{P}/IDENT"),
                b"core/glibc/2.27/20190115002733\n".to_vec(),
            ),
            File(format!("{P}/TARGET"), b"x86_64-linux\n".to_vec()),
        ]),
        "core/glibc/2.27/20190115002733",
    ));
    cases.push(simple(
        "TDEPS naming itself",
        raw(with(vec![
            File(
                format!("{P}/DEPS"),
                b"evil/pkg/1.0/20240101000000\n".to_vec(),
            ),
            File(
                format!("{P}/TDEPS"),
                b"evil/pkg/1.0/20240101000000\n".to_vec(),
            ),
        ])),
        "itself",
    ));
    cases.push(simple(
        "metafile larger than 8 MiB",
        // Not MANIFEST: a large one only costs its SBOM facts (hart's metadata tests).
        raw(with(vec![Zeros(format!("{P}/EXPORTS"), 9 << 20)])),
        "metadata file EXPORTS is",
    ));
    cases.push(Case {
        name: "1 GiB of zeros in a small hart, `--max-unpacked-size 64M`",
        hart: raw(with(vec![Zeros(format!("{P}/bomb"), 1 << 30)])),
        keys: None,
        extra_args: vec!["--max-unpacked-size", "64M"],
        expect: "unpacks to more than 67108864 bytes",
    });
    let mut enormous = b"HART-1\n".to_vec();
    enormous.extend(std::iter::repeat_n(b'k', 100_000));
    enormous.extend_from_slice(b"\nBLAKE2b\nAAAA\n\n");
    cases.push(simple("enormous header line", enormous, "bad header"));
    cases.push(simple(
        "truncated xz payload",
        good[..good.len() - 200].to_vec(),
        "payload is truncated",
    ));
    let mut flipped = good.clone();
    let last = flipped.len() - 20;
    flipped[last] ^= 0x55;
    cases.push(simple(
        "payload byte changed after signing",
        flipped,
        "payload was modified",
    ));
    cases.push(simple(
        "signed by an unknown key",
        hab_oci_testkit::raw_hart(&stranger, &base()).expect("raw"),
        "no public key file stranger-",
    ));
    let wrong_name = signer_text.replacen(
        signer_name.to_string_lossy().trim_end_matches(".pub"),
        "evil-19990101000000",
        1,
    );
    let name = signer_name.clone();
    cases.push(Case {
        name: "key file whose name and header disagree",
        hart: good.clone(),
        keys: Some(Box::new(move |dir: &Path| {
            fs::write(dir.join(&name), &wrong_name).expect("key");
        })),
        extra_args: Vec::new(),
        expect: "evil-19990101000000",
    });
    let name = signer_name.clone();
    cases.push(Case {
        name: "key file that is a symlink to `/dev/zero`",
        hart: good.clone(),
        keys: Some(Box::new(move |dir: &Path| {
            std::os::unix::fs::symlink("/dev/zero", dir.join(&name)).expect("symlink");
        })),
        extra_args: Vec::new(),
        expect: "key",
    });

    let mut failures: Vec<String> = Vec::new();
    let mut table = vec!["| case | error |".to_owned(), "|---|---|".to_owned()];
    let revisions = [
        (key.name.to_string(), "evil-REV"),
        (stranger.name.to_string(), "stranger-REV"),
    ];
    for c in &cases {
        let dir = t.join(c.name.replace(|ch: char| !ch.is_ascii_alphanumeric(), "_"));
        let keys: PathBuf = dir.join("keys");
        fs::create_dir_all(dir.join("src")).expect("mkdir");
        fs::create_dir_all(&keys).expect("mkdir");
        match &c.keys {
            Some(write) => write(&keys),
            None => {
                for e in fs::read_dir(&good_keys).expect("keys") {
                    let e = e.expect("e");
                    fs::copy(e.path(), keys.join(e.file_name())).expect("copy key");
                }
            }
        }
        fs::write(dir.join("src").join(HART), &c.hart).expect("write");
        let cache = dir.join("hab-oci-cache");
        let out = hab_oci(t)
            .env("HAB_OCI_CACHE", &cache)
            .current_dir(&dir)
            .args(["export", "--no-supervisor", "--keys"])
            .arg(&keys)
            .arg("--source")
            .arg(dir.join("src"))
            .args(&c.extra_args)
            .args(["evil/pkg", "-o", "oci:out", "-o", "docker-archive:out.tar"])
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.code() != Some(1) || !err.contains(c.expect) {
            failures.push(format!(
                "{}: wanted exit 1 and '{}' in: {err}",
                c.name, c.expect
            ));
        }
        if !(err.contains(HART) || err.contains("evil/pkg") || err.contains("evil-")) {
            failures.push(format!(
                "{}: the error names no package or file: {err}",
                c.name
            ));
        }
        let mut left: Vec<String> = fs::read_dir(&dir)
            .expect("dir")
            .map(|e| e.expect("e").file_name().to_string_lossy().into_owned())
            .filter(|n| n != "hab-oci-cache")
            .collect();
        left.sort();
        assert_eq!(left, ["keys", "src"], "{}: nothing left behind", c.name);
        layer_cache_is_clean(&cache).unwrap_or_else(|e| panic!("{}: {e}", c.name));
        let first = err
            .lines()
            .find(|l| l.starts_with("error"))
            .unwrap_or_default();
        let first = documented(first, &dir, t, &revisions);
        table.push(format!("| {} | {first} |", c.name));
    }
    // The table for SECURITY.md, regenerated by every run and compared with SECURITY.md's.
    let table_path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("hostile-corpus.md");
    fs::write(&table_path, table.join("\n") + "\n").expect("table");
    let security = fs::read_to_string(repo("SECURITY.md")).expect("SECURITY.md");
    let in_security: Vec<&str> = security
        .lines()
        .skip_while(|l| *l != table[0])
        .take_while(|l| l.starts_with('|'))
        .collect();
    let got: Vec<&str> = table.iter().map(String::as_str).collect();
    if in_security != got {
        failures.push(format!(
            "SECURITY.md's table of the hostile corpus (the lines from '{}') is not what the \
             corpus gives now (- SECURITY.md, + now):\n{}\nUpdate SECURITY.md: replace its \
             table with the one in {}",
            table[0],
            diff(&in_security, &got),
            table_path.display()
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn setuid_files_are_kept_and_warned_about() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let key = hart::SecretKey::generate("evil").expect("key");
    key.write_pair(&t.join("keys")).expect("keys");
    fs::create_dir_all(t.join("src")).expect("mkdir");
    let entries = with(vec![
        Dir(format!("{P}/bin/")),
        Mode(format!("{P}/bin/su"), b"#!/bin/sh\n".to_vec(), 0o4755),
        Mode(format!("{P}/bin/wall"), b"#!/bin/sh\n".to_vec(), 0o2755),
    ]);
    fs::write(
        t.join("src").join(HART),
        hab_oci_testkit::raw_hart(&key, &entries).expect("raw"),
    )
    .expect("write");
    let out = hab_oci(t)
        .current_dir(t)
        .args(["export", "--no-supervisor", "--keys"])
        .arg(t.join("keys"))
        .arg("--source")
        .arg(t.join("src"))
        .args(["evil/pkg", "-o", "oci:out"])
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(
            "warning: evil/pkg/1.0/20240101000000 has setuid/setgid files, kept as packaged: bin/su, bin/wall"
        ),
        "{err}"
    );
    // The modes are in the layer as packaged.
    let index = read_json(&t.join("out/index.json"));
    let manifest = index["manifests"][0]["digest"]
        .as_str()
        .expect("digest")
        .trim_start_matches("sha256:")
        .to_owned();
    let manifest = read_json(&t.join("out/blobs/sha256").join(manifest));
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .expect("digest")
        .trim_start_matches("sha256:")
        .to_owned();
    let blob = fs::File::open(t.join("out/blobs/sha256").join(layer)).expect("blob");
    let mut ar = tar::Archive::new(
        oci_image::decompressed(blob, oci_image::Compression::Gzip).expect("gzip"),
    );
    let modes: Vec<(String, u32)> = ar
        .entries()
        .expect("entries")
        .map(|e| {
            let e = e.expect("entry");
            (
                e.path().expect("path").to_string_lossy().into_owned(),
                e.header().mode().expect("mode"),
            )
        })
        .filter(|(p, _)| p.contains("/bin/") && !p.ends_with('/'))
        .collect();
    assert_eq!(
        modes,
        [
            (format!("{P}/bin/su"), 0o4755),
            (format!("{P}/bin/wall"), 0o2755)
        ]
    );
}

/// A package that inflates enormously but within the bound (`--max-unpacked-size` raised):
/// it exports, but its layer is not staged uncompressed in the cache (the staging cap), so a
/// small hart cannot write its unpacked size to disk; the layer is built compressed.
fn a_package_that_inflates_is_not_staged_uncompressed() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let key = hart::SecretKey::generate("evil").expect("key");
    key.write_pair(&t.join("keys")).expect("keys");
    fs::create_dir_all(t.join("src")).expect("mkdir");
    let hart = hab_oci_testkit::raw_hart(&key, &with(vec![Zeros(format!("{P}/zeros"), 512 << 20)]))
        .expect("raw");
    assert!(hart.len() < 200 << 10, "a small hart: {} bytes", hart.len());
    fs::write(t.join("src").join(HART), &hart).expect("write");
    let out = hab_oci(t)
        .current_dir(t)
        .args([
            "export",
            "--no-supervisor",
            "--max-unpacked-size",
            "1G",
            "--keys",
        ])
        .arg(t.join("keys"))
        .arg("--source")
        .arg(t.join("src"))
        .args(["evil/pkg", "-o", "oci:out", "--report", "report.json"])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = read_json(&t.join("report.json"));
    assert_eq!(report["cache"]["prebuilt"], 0, "{report}");
    assert_eq!(report["cache"]["staged"], 0, "{report}");
    let biggest = fs::read_dir(t.join("hab-oci-cache/layers-v1"))
        .expect("cache")
        .map(|e| e.expect("e").metadata().expect("meta").len())
        .max()
        .unwrap_or(0);
    assert!(biggest < 64 << 20, "a cache file of {biggest} bytes");
    assert_eq!(temporaries(&t.join("hab-oci-cache")), Vec::<String>::new());
}

tests![
    hostile_packages_and_keys_are_refused_and_leave_nothing,
    setuid_files_are_kept_and_warned_about,
    a_package_that_inflates_is_not_staged_uncompressed,
];
