//! The `hab-oci` binary end to end: the upstream fixtures, damaged copies of them, and a
//! generated closure taken through key generate → pack → verify → info → resolve.

use std::fs;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::*;

mod common;
use common::{fixtures, hab_oci, tests};

const HAPPY: &str = "happyhumans-possums-8.1.4-20160427165340-x86_64-linux.hart";

fn verify_classifies_the_builder_fixtures() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = fixtures("builder");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "hart"))
        .collect();
    files.sort();
    let out = hab_oci(tmp.path())
        .args(["hart", "verify", "--keys"])
        .arg(&dir)
        .args(&files)
        .assert()
        .code(1)
        .get_output()
        .clone();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stdout.lines().count(), 7, "{stdout}");
    assert!(stdout.contains(": ok neurosis/oddversion6/2.0/20190513194234 x86_64-linux"));
    assert!(stdout.contains(": ok neurosis/testapp/0.1.4/20181115124506 x86_64-windows"));
    assert_eq!(
        stderr
            .matches("no public key file neurosis-20171205003147.pub")
            .count(),
        3,
        "{stderr}"
    );
}

/// Copies the happyhumans fixture with `damage` applied and returns the verify stderr.
fn verify_damaged(tmp: &Path, name: &str, damage: impl Fn(&mut Vec<u8>)) -> String {
    let mut bytes = fs::read(fixtures("habitat").join(HAPPY)).expect("fixture");
    damage(&mut bytes);
    let path = tmp.join(name);
    fs::write(&path, bytes).expect("write");
    let out = hab_oci(tmp)
        .args(["hart", "verify", "--keys"])
        .arg(fixtures("habitat"))
        .arg(&path)
        .assert()
        .code(1)
        .stdout("")
        .get_output()
        .clone();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains(name), "error must name the file: {err}");
    err
}

fn damaged_copies_fail_with_distinct_messages() {
    let tmp = tempfile::tempdir().expect("tmp");
    hab_oci(tmp.path())
        .args(["hart", "verify", "--keys"])
        .arg(fixtures("habitat"))
        .arg(fixtures("habitat").join(HAPPY))
        .assert()
        .success()
        .stdout(predicate::str::contains(
            ": ok happyhumans/possums/8.1.4/20160427165340 x86_64-linux",
        ));

    let header_len = 216;
    let flipped = verify_damaged(tmp.path(), "flipped.hart", |b| b[header_len + 100] ^= 0x01);
    assert!(flipped.contains("payload was modified"), "{flipped}");
    let truncated = verify_damaged(tmp.path(), "truncated.hart", |b| {
        b.truncate(header_len + 500)
    });
    assert!(truncated.contains("payload is truncated"), "{truncated}");
    let cut_header = verify_damaged(tmp.path(), "cut-header.hart", |b| b.truncate(100));
    assert!(
        cut_header.contains("can't find end of header"),
        "{cut_header}"
    );
    let bad_version = verify_damaged(tmp.path(), "version.hart", |b| b[5] = b'9');
    assert!(
        bad_version.contains("unsupported format version 'HART-9'"),
        "{bad_version}"
    );
    let sig = verify_damaged(tmp.path(), "sig.hart", |b| {
        b[60] = if b[60] == b'A' { b'B' } else { b'A' }
    });
    assert!(sig.contains("signature does not verify"), "{sig}");
    let long = verify_damaged(tmp.path(), "long.hart", |b| {
        b.splice(7..7, std::iter::repeat_n(b'x', 5000));
    });
    assert!(
        long.contains("header line 2 is longer than 1024 bytes"),
        "{long}"
    );
    let utf8 = verify_damaged(tmp.path(), "utf8.hart", |b| b[8] = 0xff);
    assert!(utf8.contains("header line 2 is not UTF-8"), "{utf8}");
    let all = [
        &flipped,
        &truncated,
        &cut_header,
        &bad_version,
        &sig,
        &long,
        &utf8,
    ];
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            assert_ne!(a, b);
        }
    }
}

fn bad_keys_and_idents_are_clear_errors() {
    let tmp = tempfile::tempdir().expect("tmp");
    // A public key of the wrong length under the name the hart asks for.
    let keys = tmp.path().join("k");
    fs::create_dir_all(&keys).expect("mkdir");
    fs::write(
        keys.join("happyhumans-20160424223347.pub"),
        "SIG-PUB-1\nhappyhumans-20160424223347\n\nAAAA",
    )
    .expect("key");
    hab_oci(tmp.path())
        .args(["hart", "verify", "--keys"])
        .arg(&keys)
        .arg(fixtures("habitat").join(HAPPY))
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "key material is 3 bytes, expected 32",
        ));
    // A key whose header names another key than its file name.
    let text = fs::read_to_string(fixtures("habitat/happyhumans-20160424223347.pub")).expect("key");
    fs::write(
        keys.join("happyhumans-20160424223347.pub"),
        text.replace("happyhumans-2016", "other-2016"),
    )
    .expect("key");
    hab_oci(tmp.path())
        .args(["hart", "verify", "--keys"])
        .arg(&keys)
        .arg(fixtures("habitat").join(HAPPY))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("the file is named for happyhumans-20160424223347 but the key inside is other-20160424223347"));
    hab_oci(tmp.path())
        .args(["resolve", "--source"])
        .arg(fixtures("builder"))
        .arg("neurosis/testapp/0.1.3/20190327162537/extra")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("invalid package identifier"));
    hab_oci(tmp.path())
        .args(["resolve", "--bogus-flag"])
        .assert()
        .code(2);
}

fn resolve_on_the_builder_fixtures() {
    let tmp = tempfile::tempdir().expect("tmp");
    hab_oci(tmp.path())
        .args(["resolve", "--source"])
        .arg(fixtures("builder"))
        .arg("neurosis/oddversion6")
        .assert()
        .success()
        .stdout("neurosis/oddversion6/2.0/20190513194234\n");
    let out = hab_oci(tmp.path())
        .args(["resolve", "--source"])
        .arg(fixtures("builder"))
        .arg("neurosis/testapp3")
        .assert()
        .code(1)
        .stdout("")
        .get_output()
        .clone();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("2 dependencies are missing"), "{err}");
    assert!(
        err.contains("\n  core/glibc/2.27/20190115002733 (needed by"),
        "{err}"
    );
    assert!(
        err.contains("\n  core/linux-headers/4.17.12/20190115002705 (needed by"),
        "{err}"
    );
    assert!(err.contains("hint: download them"), "{err}");
}

fn round_trip_generate_pack_verify_info_resolve() {
    let tmp = tempfile::tempdir().expect("tmp");
    let keys = tmp.path().join("keys");
    let out = hab_oci(tmp.path())
        .args(["key", "generate", "--keys"])
        .arg(&keys)
        .arg("rt")
        .assert()
        .success()
        .get_output()
        .clone();
    let written: Vec<PathBuf> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(PathBuf::from)
        .collect();
    assert_eq!(written.len(), 2);
    let secret = written
        .iter()
        .find(|p| p.to_string_lossy().ends_with(".sig.key"))
        .expect("secret");

    let spec = hab_oci_testkit::ClosureSpec {
        origin: "rt".into(),
        packages: 6,
        total_size: 300 * 1024,
        ..Default::default()
    };
    let pkgs = tmp.path().join("pkgs");
    let harts = tmp.path().join("harts");
    fs::create_dir_all(&harts).expect("mkdir");
    let plan = hab_oci_testkit::plan_closure(&spec);
    for p in &plan {
        let dir = hab_oci_testkit::write_package_dir(&pkgs, p).expect("package dir");
        hab_oci(tmp.path())
            .current_dir(&harts)
            .args(["hart", "pack", "--xz-block-size", "65536", "--key"])
            .arg(secret)
            .arg(&dir)
            .assert()
            .success()
            .stdout(predicate::str::ends_with(format!(
                "{}\n",
                p.ident
                    .archive_name(&hart::PackageTarget::host_linux())
                    .expect("fq")
            )));
    }
    let primary = &plan[plan.len() - 1].ident;
    let primary_hart = harts.join(
        primary
            .archive_name(&hart::PackageTarget::host_linux())
            .expect("fq"),
    );
    hab_oci(tmp.path())
        .args(["hart", "verify", "--keys"])
        .arg(&keys)
        .arg(&primary_hart)
        .assert()
        .success()
        .stdout(predicate::str::contains(format!(
            ": ok {primary} x86_64-linux"
        )));
    let info = hab_oci(tmp.path())
        .args(["hart", "info", "--json", "--keys"])
        .arg(&keys)
        .arg(&primary_hart)
        .assert()
        .success()
        .get_output()
        .clone();
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).expect("json");
    assert_eq!(info["ident"], primary.to_string());
    assert_eq!(info["service"], true);
    assert_eq!(info["svc_user"], "hab");
    assert_eq!(info["tdeps"].as_array().map(Vec::len), Some(5));
    assert!(info["unpacked_size"].as_u64().unwrap_or(0) >= plan[plan.len() - 1].size);

    // Packing the same directory twice with SOURCE_DATE_EPOCH gives identical bytes.
    let dir = pkgs.join("hab/pkgs").join(primary.to_string());
    for name in ["a.hart", "b.hart"] {
        hab_oci(tmp.path())
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args(["hart", "pack", "--key"])
            .arg(secret)
            .arg("-o")
            .arg(tmp.path().join(name))
            .arg(&dir)
            .assert()
            .success();
    }
    assert_eq!(
        fs::read(tmp.path().join("a.hart")).expect("a"),
        fs::read(tmp.path().join("b.hart")).expect("b")
    );

    let resolved = hab_oci(tmp.path())
        .args(["resolve", "--source"])
        .arg(&harts)
        .arg("--keys")
        .arg(&keys)
        .arg("rt/app")
        .assert()
        .success()
        .get_output()
        .clone();
    let lines: Vec<String> = String::from_utf8_lossy(&resolved.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), 6);
    assert_eq!(lines.last(), Some(&primary.to_string()));
}

fn pack_refuses_a_key_of_another_origin() {
    let tmp = tempfile::tempdir().expect("tmp");
    let spec = hab_oci_testkit::ClosureSpec {
        packages: 1,
        total_size: 1000,
        ..Default::default()
    };
    let p = &hab_oci_testkit::plan_closure(&spec)[0];
    let dir = hab_oci_testkit::write_package_dir(tmp.path(), p).expect("dir");
    hab_oci(tmp.path())
        .args(["hart", "pack", "--key"])
        .arg(fixtures("habitat/origin-key-valid-20160509190508.sig.key"))
        .arg("-o")
        .arg(tmp.path().join("x.hart"))
        .arg(&dir)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("is for origin 'origin-key-valid'"));
    assert!(!tmp.path().join("x.hart").exists());
    // Nothing half-written is left beside the destination either.
    let leftovers: Vec<_> = fs::read_dir(tmp.path())
        .expect("dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".hart-pack-"))
        .collect();
    assert!(leftovers.is_empty());
}

/// The shipped examples verify, resolve, and are exactly what `scripts/make-examples.sh`
/// produces from `examples/pkgs` (so the one documented command regenerates them).
fn examples_are_current() {
    let tmp = tempfile::tempdir().expect("tmp");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    hab_oci(tmp.path())
        .args(["resolve", "--source"])
        .arg(&examples)
        .arg("example/hello")
        .assert()
        .success()
        .stdout(
            "example/greeting-data/1.0.0/20240101000000\nexample/libhello/1.2.0/20240101000000\nexample/hello/0.3.0/20240101000000\n",
        );
    let key = fs::read_dir(examples.join("keys"))
        .expect("keys")
        .map(|e| e.expect("entry").path())
        .find(|p| p.to_string_lossy().ends_with(".sig.key"))
        .expect("example secret key");
    let mut checked = 0;
    for hart in fs::read_dir(examples.join("artifacts")).expect("artifacts") {
        let hart = hart.expect("entry").path();
        let name = hart
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name")
            .to_owned();
        let stem = name.trim_end_matches("-x86_64-linux.hart");
        // example-NAME-VERSION-RELEASE → the package directory.
        let dir = fs::read_dir(examples.join("pkgs/hab/pkgs/example"))
            .expect("pkgs")
            .flat_map(|n| {
                let n = n.expect("entry").path();
                fs::read_dir(&n)
                    .expect("versions")
                    .flat_map(|v| {
                        let v = v.expect("entry").path();
                        fs::read_dir(&v)
                            .expect("releases")
                            .map(|r| r.expect("entry").path())
                            .collect::<Vec<_>>()
                    })
                    .collect::<Vec<_>>()
            })
            .find(|d| {
                let parts: Vec<String> = d
                    .iter()
                    .rev()
                    .take(3)
                    .map(|c| c.to_string_lossy().into_owned())
                    .collect();
                stem == format!("example-{}-{}-{}", parts[2], parts[1], parts[0])
            })
            .expect("package dir for hart");
        // Normalize modes on a copy as the script does (a checkout's umask may differ).
        let copy = tmp.path().join(&name);
        copy_normalized(&dir, &copy);
        let out = tmp.path().join(format!("new-{name}"));
        hab_oci(tmp.path())
            .env("SOURCE_DATE_EPOCH", "1704067200")
            .args(["hart", "pack", "--key"])
            .arg(&key)
            .arg("-o")
            .arg(&out)
            .arg(&copy)
            .assert()
            .success();
        assert!(
            fs::read(&out).expect("new") == fs::read(&hart).expect("old"),
            "{name} is stale: run scripts/make-examples.sh"
        );
        checked += 1;
    }
    assert_eq!(checked, 4);
}

fn copy_normalized(from: &Path, to: &Path) {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(to).expect("mkdir");
    fs::set_permissions(to, fs::Permissions::from_mode(0o755)).expect("chmod");
    for e in fs::read_dir(from).expect("read") {
        let e = e.expect("entry");
        let dst = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_normalized(&e.path(), &dst);
        } else {
            fs::copy(e.path(), &dst).expect("copy");
            let exec = e.metadata().expect("meta").permissions().mode() & 0o100 != 0;
            fs::set_permissions(
                &dst,
                fs::Permissions::from_mode(if exec { 0o755 } else { 0o644 }),
            )
            .expect("chmod");
        }
    }
}

/// Without --source, packages come from Habitat's artifact cache ($HAB_CACHE_ARTIFACT_PATH)
/// and keys from its key cache ($HAB_CACHE_KEY_PATH), as `hab` finds them.
fn habitat_caches_are_sources() {
    let tmp = tempfile::tempdir().expect("tmp");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    Command::cargo_bin("hab-oci")
        .expect("binary")
        .env("HAB_CACHE_ARTIFACT_PATH", examples.join("artifacts"))
        .env("HAB_CACHE_KEY_PATH", examples.join("keys"))
        .env("HAB_OCI_CACHE", tmp.path().join("cache"))
        .args(["resolve", "--offline", "example/hello/0.2.0"])
        .assert()
        .success()
        .stdout(predicate::str::ends_with(
            "example/hello/0.2.0/20230601000000\n",
        ));
    // And with an empty key cache the error names the key file and where it looked.
    hab_oci(tmp.path())
        .env("HAB_CACHE_ARTIFACT_PATH", examples.join("artifacts"))
        .args(["resolve", "example/hello"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no public key file example-").and(
            predicate::str::contains(tmp.path().join("keys").display().to_string()),
        ));
}

tests![
    verify_classifies_the_builder_fixtures,
    damaged_copies_fail_with_distinct_messages,
    bad_keys_and_idents_are_clear_errors,
    resolve_on_the_builder_fixtures,
    round_trip_generate_pack_verify_info_resolve,
    pack_refuses_a_key_of_another_origin,
    examples_are_current,
    habitat_caches_are_sources,
];
