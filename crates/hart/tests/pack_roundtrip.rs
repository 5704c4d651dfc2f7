//! Packing and reading back: multi-block xz payloads, long paths, symlinks, and a package
//! whose IDENT disagrees with where its files are.

use std::fs;
use std::path::Path;
use std::process::Command;

use hart::{DecodeOptions, Hart, KeyDirs, PackOptions, SecretKey};

fn write_pkg(root: &Path, ident: &str, big: usize) -> std::path::PathBuf {
    let dir = root.join("hab/pkgs").join(ident);
    let deep = dir
        .join("share")
        .join("a-rather-long-directory-name-".repeat(5));
    fs::create_dir_all(&deep).expect("mkdir");
    fs::write(dir.join("IDENT"), format!("{ident}\n")).expect("IDENT");
    fs::write(dir.join("TARGET"), "x86_64-linux\n").expect("TARGET");
    // Incompressible-ish content so the payload spans several xz blocks.
    let mut state = 0x1234_5678_u64;
    let data: Vec<u8> = (0..big)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 64) as u8 + b' '
        })
        .collect();
    fs::write(deep.join("data.txt"), &data).expect("data");
    std::os::unix::fs::symlink("data.txt", deep.join("link")).expect("symlink");
    dir
}

fn xz_blocks(payload: &[u8], tmp: &Path) -> u64 {
    let f = tmp.join("payload.xz");
    fs::write(&f, payload).expect("write");
    let out = Command::new("xz")
        .args(["--robot", "--list"])
        .arg(&f)
        .output()
        .expect("xz --list (xz-utils)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let totals = text
        .lines()
        .find(|l| l.starts_with("totals"))
        .expect("totals line");
    totals
        .split('\t')
        .nth(2)
        .and_then(|b| b.parse().ok())
        .expect("block count")
}

#[test]
fn multi_block_payload_reads_back() {
    let tmp = tempfile::tempdir().expect("tmp");
    let key = SecretKey::generate("mb").expect("key");
    key.write_pair(&tmp.path().join("keys")).expect("keys");
    let dir = write_pkg(tmp.path(), "mb/pkg/1.0/20240101000000", 600_000);
    let opts = PackOptions {
        block_size: 100_000,
        threads: 2,
        ..PackOptions::default()
    };
    let packed = hart::pack(&dir, &key, None, &tmp.path().join("out"), &opts).expect("pack");
    let bytes = fs::read(&packed.path).expect("read");
    let header_len = bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(4)
        .map(|(i, _)| i + 1)
        .expect("header");
    assert!(xz_blocks(&bytes[header_len..], tmp.path()) >= 6);

    let v = Hart::open(&packed.path)
        .expect("open")
        .verify(&KeyDirs::new(vec![tmp.path().join("keys")]))
        .expect("verify");
    for threads in [1, 2] {
        let m = v.metadata(DecodeOptions { threads }).expect("metadata");
        assert_eq!(m.ident.to_string(), "mb/pkg/1.0/20240101000000");
        assert_eq!(
            m.unpacked_size,
            600_000 + "mb/pkg/1.0/20240101000000\n".len() as u64 + 13
        );
    }
    // The long path and the symlink survive as GNU tar stores them.
    let mut archive = tar::Archive::new(v.payload(DecodeOptions::default()).expect("payload"));
    let mut saw_link = false;
    for e in archive.entries().expect("entries") {
        let e = e.expect("entry");
        let p = e.path().expect("path").into_owned();
        assert!(p.starts_with("hab/pkgs/mb/pkg/1.0/20240101000000"));
        if e.header().entry_type().is_symlink() {
            assert_eq!(
                e.link_name().expect("link").expect("target").to_str(),
                Some("data.txt")
            );
            assert!(p.to_string_lossy().len() > 100);
            saw_link = true;
        }
        assert_eq!(e.header().uid().expect("uid"), 0);
    }
    assert!(saw_link);
}

/// A signed hart from raw tar entries (path, contents), bypassing our packer's checks.
fn raw_hart(key: &SecretKey, entries: &[(&str, &str)]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, path, data.as_bytes())
            .expect("append");
    }
    let tar = tar.into_inner().expect("tar");
    let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 6);
    std::io::Write::write_all(&mut xz, &tar).expect("xz");
    let payload = xz.finish().expect("xz");
    let mut out = hart::pack::sign_bytes(key, &payload);
    out.extend_from_slice(&payload);
    out
}

fn metadata_error(entries: &[(&str, &str)]) -> String {
    let tmp = tempfile::tempdir().expect("tmp");
    let key = SecretKey::generate("mb").expect("key");
    key.write_pair(tmp.path()).expect("keys");
    let path = tmp.path().join("raw.hart");
    fs::write(&path, raw_hart(&key, entries)).expect("write");
    let v = Hart::open(&path)
        .expect("open")
        .verify(&KeyDirs::new(vec![tmp.path().to_owned()]))
        .expect("verify");
    let err = v
        .metadata(DecodeOptions::default())
        .expect_err("must be rejected")
        .to_string();
    assert!(err.contains("raw.hart"), "{err}");
    err
}

#[test]
fn packages_that_lie_about_themselves_are_rejected() {
    let p = "hab/pkgs/mb/pkg/1.0/20240101000000";
    let err = metadata_error(&[
        (&format!("{p}/IDENT"), "mb/other/1.0/20240101000000\n"),
        (&format!("{p}/TARGET"), "x86_64-linux"),
    ]);
    assert!(err.contains("IDENT says mb/other/1.0/20240101000000 but the files are under hab/pkgs/mb/pkg/1.0/20240101000000"), "{err}");
    let err = metadata_error(&[
        (&format!("{p}/IDENT"), "mb/pkg/1.0/20240101000000"),
        (&format!("{p}/TARGET"), "x86_64-linux"),
        ("hab/pkgs/mb/evil/1.0/20240101000000/bin/x", "x"),
    ]);
    assert!(err.contains("belongs to another package"), "{err}");
    let err = metadata_error(&[
        (&format!("{p}/IDENT"), "mb/pkg/1.0/20240101000000"),
        ("etc/passwd", "root::0:0"),
    ]);
    assert!(err.contains("tar entry 'etc/passwd' is outside"), "{err}");
    let err = metadata_error(&[
        (&format!("{p}/IDENT"), "mb/pkg/1.0/20240101000000"),
        (&format!("{p}/TARGET"), "x86_64-linux"),
        (&format!("{p}/TDEPS"), "mb/pkg/1.0/20240101000000"),
    ]);
    assert!(err.contains("lists itself"), "{err}");
    let err = metadata_error(&[(&format!("{p}/TARGET"), "x86_64-linux")]);
    assert!(err.contains("no IDENT"), "{err}");
}
