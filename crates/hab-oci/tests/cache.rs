//! The layer cache through the real binary: a warm export is byte-identical to a cold one and
//! decodes nothing it has seen; a corrupted entry is detected and rebuilt; two exports racing
//! on one cache both succeed with the same image; a cache over its bound evicts.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

mod common;
use common::*;

fn closure(t: &Path, packages: usize, seed: u64) -> String {
    let spec = hab_oci_testkit::ClosureSpec {
        packages,
        total_size: 300 * 1024,
        block_size: 64 * 1024,
        seed,
        ..Default::default()
    };
    let dir = t.join(format!("src-{seed}"));
    hab_oci_testkit::generate(&spec, &dir, None).expect("generate");
    dir.display().to_string()
}

/// Exports `gen/app` from `src` into `cwd/img` and returns the report.
fn export(t: &Path, cwd: &str, src: &str, extra: &[&str]) -> serde_json::Value {
    let dir = t.join(cwd);
    fs::create_dir_all(&dir).expect("cwd");
    hab_oci(t)
        .current_dir(&dir)
        .args([
            "export",
            "--source",
            src,
            "--no-supervisor",
            "-o",
            "oci:img",
        ])
        .args(["--report", "report.json"])
        .args(extra)
        .arg("gen/app")
        .assert()
        .success();
    read_json(&dir.join("report.json"))
}

fn stat(r: &serde_json::Value, k: &str) -> u64 {
    r["cache"][k]
        .as_u64()
        .unwrap_or_else(|| panic!("cache.{k} in {r}"))
}

fn blobs(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir.join("img/blobs/sha256"))
        .expect("blobs")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect()
}

fn cache_dir(t: &Path) -> std::path::PathBuf {
    t.join("hab-oci-cache/layers-v1")
}

fn a_warm_export_is_identical_and_builds_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let src = closure(t, 8, 1);
    let cold = export(t, "cold", &src, &[]);
    // Cold: each package's layer is built while it is decoded for its metadata (one
    // decode for both); these small packages are staged uncompressed (the layer budget
    // could have grouped them) and compressed once the plan says they stand alone.
    assert_eq!(
        (
            stat(&cold, "prebuilt"),
            stat(&cold, "staged"),
            stat(&cold, "hits")
        ),
        (8, 8, 0),
        "{cold}"
    );
    // Package metadata is kept too: a package seen before is verified, not decoded again.
    let records = fs::read_dir(t.join("hab-oci-cache/metadata-v3"))
        .expect("metadata records")
        .count();
    assert_eq!(records, 8);
    let warm = export(t, "warm", &src, &[]);
    assert_eq!(
        (
            stat(&warm, "prebuilt"),
            stat(&warm, "hits"),
            stat(&warm, "misses")
        ),
        (0, 8, 0),
        "{warm}"
    );
    let uncached = export(t, "none", &src, &["--no-cache"]);
    assert!(uncached.get("cache").is_none());
    for r in [&warm, &uncached] {
        assert_eq!(r["manifest_digest"], cold["manifest_digest"]);
        assert_eq!(layer_digests(r), layer_digests(&cold));
    }
    assert_eq!(blobs(&t.join("cold")), blobs(&t.join("warm")));
    assert_eq!(blobs(&t.join("cold")), blobs(&t.join("none")));
}

fn a_corrupted_entry_is_detected_and_rebuilt() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let src = closure(t, 4, 2);
    let cold = export(t, "cold", &src, &[]);
    // Flip a byte in one cached blob (hard links are broken first, as an editor would).
    let blob = fs::read_dir(cache_dir(t))
        .expect("cache")
        .map(|e| e.expect("e").path())
        .find(|p| p.extension().is_some_and(|e| e == "blob"))
        .expect("a cached blob");
    let mut bytes = fs::read(&blob).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::remove_file(&blob).expect("unlink");
    fs::write(&blob, &bytes).expect("corrupt");
    let again = export(t, "again", &src, &[]);
    assert_eq!(
        (
            stat(&again, "corrupt"),
            stat(&again, "hits"),
            stat(&again, "misses")
        ),
        (1, 3, 1),
        "{again}"
    );
    assert_eq!(again["manifest_digest"], cold["manifest_digest"]);
    assert_eq!(blobs(&t.join("cold")), blobs(&t.join("again")));
    // The entry was rebuilt: a third export finds every layer intact.
    let third = export(t, "third", &src, &[]);
    assert_eq!(
        (stat(&third, "hits"), stat(&third, "corrupt")),
        (4, 0),
        "{third}"
    );
}

fn two_exports_racing_on_one_cache_both_succeed() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let src = closure(t, 8, 3);
    let spawn = |cwd: &str| {
        let dir = t.join(cwd);
        fs::create_dir_all(&dir).expect("cwd");
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("hab-oci"));
        c.current_dir(&dir)
            .env("HAB_CACHE_KEY_PATH", t.join("keys"))
            .env("HAB_CACHE_ARTIFACT_PATH", t.join("artifacts"))
            .env("HAB_OCI_CACHE", t.join("hab-oci-cache"))
            .args(["export", "-q", "--source", &src, "--no-supervisor"])
            .args(["-o", "oci:img", "--report", "report.json", "gen/app"]);
        c.spawn().expect("spawn")
    };
    let (mut a, mut b) = (spawn("a"), spawn("b"));
    assert!(a.wait().expect("a").success());
    assert!(b.wait().expect("b").success());
    let (ra, rb) = (
        read_json(&t.join("a/report.json")),
        read_json(&t.join("b/report.json")),
    );
    assert_eq!(ra["manifest_digest"], rb["manifest_digest"]);
    assert_eq!(blobs(&t.join("a")), blobs(&t.join("b")));
    // What they left is a consistent cache: the next export takes everything from it.
    let next = export(t, "next", &src, &[]);
    assert_eq!(
        (stat(&next, "hits"), stat(&next, "corrupt")),
        (8, 0),
        "{next}"
    );
    assert_eq!(next["manifest_digest"], ra["manifest_digest"]);
}

fn a_cache_over_its_bound_evicts_least_recently_used_first() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let first = closure(t, 4, 4);
    let second = closure(t, 4, 5);
    export(t, "one", &first, &[]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    export(t, "two", &second, &[]);
    let info = |t: &Path| -> serde_json::Value {
        let out = hab_oci(t)
            .args(["cache", "info", "--json"])
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        serde_json::from_slice(&out).expect("json")
    };
    let both = info(t);
    assert_eq!(both["entries"], 8, "{both}");
    // A bound that holds about one closure: the older closure's layers go.
    let total = both["bytes"].as_u64().expect("bytes");
    let r = export(
        t,
        "three",
        &second,
        &["--cache-max-size", &(total / 2 + total / 8).to_string()],
    );
    assert!(stat(&r, "evicted") >= 3, "{r}");
    let again = export(t, "four", &second, &[]);
    assert_eq!(
        stat(&again, "hits"),
        4,
        "the recently used closure stayed: {again}"
    );
    // `cache prune` empties it.
    hab_oci(t).args(["cache", "prune"]).assert().success();
    assert_eq!(info(t)["entries"], 0);
}

fn a_push_only_export_does_not_read_layers_the_registry_has() {
    let reg = registry();
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let src = closure(t, 4, 6);
    let prefix = format!("{reg}/cache-trust-{}", std::process::id());
    let push = |cwd: &str| -> serde_json::Value {
        let dir = t.join(cwd);
        fs::create_dir_all(&dir).expect("cwd");
        hab_oci(t)
            .current_dir(&dir)
            .args([
                "export",
                "--source",
                &src,
                "--no-supervisor",
                "--push-image",
                // The layer cache's own record of what was pushed, not a cache source.
                "--no-auto-cache-from",
            ])
            .args([
                "--registry-url",
                &prefix,
                "--report",
                "report.json",
                "gen/app",
            ])
            .assert()
            .success();
        read_json(&dir.join("report.json"))
    };
    let first = push("one");
    assert_eq!(stat(&first, "prebuilt"), 4, "{first}");
    // Garbage of the same size in every cached blob: a push-only export to the repository
    // the layers were pushed to does not read them, so it cannot notice (nor needs to).
    for e in fs::read_dir(cache_dir(t)).expect("cache") {
        let p = e.expect("e").path();
        if p.extension().is_some_and(|x| x == "blob") {
            let len = fs::metadata(&p).expect("meta").len() as usize;
            fs::remove_file(&p).expect("unlink");
            fs::write(&p, vec![0x5a; len]).expect("garbage");
        }
    }
    let second = push("two");
    assert_eq!(
        (stat(&second, "trusted"), stat(&second, "corrupt")),
        (4, 0),
        "{second}"
    );
    assert_eq!(second["manifest_digest"], first["manifest_digest"]);
    assert_eq!(second["push"]["tags_unchanged"], 3, "{second}");
    // An export that writes files reads and checks every entry: all four are rebuilt.
    let out = export(t, "files", &src, &[]);
    assert_eq!(stat(&out, "corrupt"), 4, "{out}");
    assert_eq!(out["manifest_digest"], first["manifest_digest"]);
}

fn grouped_layers_from_cached_member_layers_are_identical() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let src = closure(t, 8, 7);
    // 8 packages in a budget of 5 layers: some layers hold several packages.
    let budget = ["--max-layers", "5"];
    let cold = export(t, "cold", &src, &budget);
    assert!(stat(&cold, "regrouped") >= 1, "{cold}");
    let grouped = cold["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .filter(|l| l["packages"].as_array().is_some_and(|p| p.len() > 1))
        .count();
    assert!(grouped >= 1, "{cold}");
    let none = export(t, "none", &src, &["--max-layers", "5", "--no-cache"]);
    assert_eq!(none["manifest_digest"], cold["manifest_digest"]);
    assert_eq!(blobs(&t.join("cold")), blobs(&t.join("none")));
    // The cold export grouped the members' staged (uncompressed) layers; a cache holding
    // their compressed single-package layers instead (an export without the budget ran
    // first) gives the same grouped layers.
    fs::remove_dir_all(t.join("hab-oci-cache")).expect("clear the cache");
    let singles = export(t, "singles", &src, &[]);
    assert_eq!(stat(&singles, "staged"), 8, "{singles}");
    let regrouped = export(t, "regrouped", &src, &budget);
    assert!(stat(&regrouped, "regrouped") >= 1, "{regrouped}");
    assert_eq!(
        (stat(&regrouped, "prebuilt"), stat(&regrouped, "corrupt")),
        (0, 0),
        "{regrouped}"
    );
    assert_eq!(regrouped["manifest_digest"], cold["manifest_digest"]);
    assert_eq!(blobs(&t.join("regrouped")), blobs(&t.join("none")));
}

tests![
    a_warm_export_is_identical_and_builds_nothing,
    a_corrupted_entry_is_detected_and_rebuilt,
    two_exports_racing_on_one_cache_both_succeed,
    a_cache_over_its_bound_evicts_least_recently_used_first,
    a_push_only_export_does_not_read_layers_the_registry_has => [Need::Registry],
    grouped_layers_from_cached_member_layers_are_identical,
];
