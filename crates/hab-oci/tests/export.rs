//! `hab-oci export` end to end, checked with real tools: skopeo, umoci, `docker load` and
//! `docker run` against a real dockerd, and a real docker-registry on loopback.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;

use predicates::prelude::*;

mod common;
use common::*;

const GREETING: &str = "Hello from a Habitat package, shipped as its own image layer.\n";

/// Exports with `--report`, returning the report.
fn export(tmp: &Path, cwd: &Path, args: &[&str]) -> serde_json::Value {
    fs::create_dir_all(cwd).expect("cwd");
    let report = cwd.join("report.json");
    hab_oci(tmp)
        .current_dir(cwd)
        .arg("export")
        .args(args)
        .arg("--report")
        .arg(&report)
        .assert()
        .success();
    read_json(&report)
}

/// Export args for the shipped examples plus a busybox package (a shell for the scripts).
fn example_args(tmp: &Path) -> Vec<String> {
    let bb = busybox_source(tmp);
    vec![
        "--source".into(),
        repo("examples").display().to_string(),
        "--source".into(),
        bb.display().to_string(),
        "--no-supervisor".into(),
        "example/hello".into(),
        "core/busybox-static".into(),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// What a verified hart holds: path → (kind, mode, content or link target).
fn hart_tree(path: &Path, keys: &[PathBuf]) -> BTreeMap<String, (char, u32, Vec<u8>)> {
    let v = hart::Hart::open(path)
        .expect("open")
        .verify(&hart::KeyDirs::new(keys.to_vec()))
        .expect("verify");
    let mut ar = tar::Archive::new(v.payload(hart::DecodeOptions::default()).expect("payload"));
    let mut out = BTreeMap::new();
    for e in ar.entries().expect("entries") {
        let mut e = e.expect("entry");
        let p = e
            .path()
            .expect("path")
            .to_string_lossy()
            .trim_end_matches('/')
            .to_owned();
        let mode = e.header().mode().expect("mode") & 0o7777;
        let t = e.header().entry_type();
        let entry = if t.is_dir() {
            ('d', mode | ((mode & 0o700) >> 3), Vec::new())
        } else if t.is_symlink() {
            (
                'l',
                0,
                e.link_name()
                    .expect("link")
                    .expect("target")
                    .to_string_lossy()
                    .as_bytes()
                    .to_vec(),
            )
        } else {
            let mut data = Vec::new();
            e.read_to_end(&mut data).expect("read");
            ('f', mode, data)
        };
        out.insert(p, entry);
    }
    out
}

/// What an unpacked rootfs holds, in the same shape.
fn disk_tree(root: &Path) -> BTreeMap<String, (char, u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("read_dir") {
            let e = e.expect("entry");
            let p = e.path();
            let rel = p
                .strip_prefix(root)
                .expect("rel")
                .to_string_lossy()
                .into_owned();
            let meta = fs::symlink_metadata(&p).expect("meta");
            let mode = meta.permissions().mode() & 0o7777;
            if meta.file_type().is_symlink() {
                out.insert(
                    rel,
                    (
                        'l',
                        0,
                        fs::read_link(&p)
                            .expect("link")
                            .to_string_lossy()
                            .as_bytes()
                            .to_vec(),
                    ),
                );
            } else if meta.is_dir() {
                out.insert(rel, ('d', mode, Vec::new()));
                stack.push(p);
            } else {
                out.insert(rel, ('f', mode, fs::read(&p).expect("read")));
            }
        }
    }
    out
}

/// umoci-unpacks `oci_ref` and checks the rootfs is exactly the union of the packages plus
/// the extras, byte for byte.
fn assert_unpacked_is_union(tmp: &Path, oci_ref: &str, harts: &[PathBuf], keys: &[PathBuf]) {
    let bundle = tmp.join(format!("bundle-{}", oci_ref.replace([':', '/'], "_")));
    run(StdCommand::new("umoci")
        .args(["unpack", "--rootless", "--image", oci_ref])
        .arg(&bundle));
    let disk = disk_tree(&bundle.join("rootfs"));
    let mut expected: BTreeMap<String, (char, u32, Vec<u8>)> = BTreeMap::new();
    for h in harts {
        expected.extend(hart_tree(h, keys));
    }
    for (path, want) in &expected {
        let got = disk
            .get(path)
            .unwrap_or_else(|| panic!("{path} missing from the image"));
        if want.0 == 'd' {
            assert_eq!(got.0, 'd', "{path}");
            assert_eq!(got.1, want.1, "{path} mode");
        } else {
            assert_eq!(got, want, "{path} differs");
        }
    }
    let extras: BTreeSet<&str> = ["etc", "bin", "tmp", "var", "root", ".hab", "hab", "init.sh"]
        .into_iter()
        .collect();
    for path in disk.keys() {
        let top = path.split('/').next().unwrap_or_default();
        let is_parent = "hab/pkgs".starts_with(path.as_str())
            || path.matches('/').count() <= 4 && path.starts_with("hab/pkgs/");
        assert!(
            expected.contains_key(path)
                || (extras.contains(top) && !path.starts_with("hab/pkgs/"))
                || is_parent,
            "{path} is in the image but in no package and not an extra"
        );
    }
    assert_eq!(disk["tmp"].1, 0o1777);
    assert_eq!(disk["var/tmp"].1, 0o1777);
    assert_eq!(disk["root"].1, 0o750);
    assert_eq!(disk[".hab/cache/keys"].1, 0o770);
    assert!(
        String::from_utf8_lossy(&disk["etc/passwd"].2)
            .contains("hab:x:42:42:hab User:/:/bin/false")
    );
}

fn example_harts() -> Vec<PathBuf> {
    [
        "greeting-data-1.0.0-20240101000000",
        "libhello-1.2.0-20240101000000",
        "hello-0.3.0-20240101000000",
    ]
    .iter()
    .map(|s| repo("examples/artifacts").join(format!("example-{s}-x86_64-linux.hart")))
    .collect()
}

fn export_reads_in_oci_tools_runs_in_docker_and_copies_to_a_registry() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let name = format!("hab-oci-test/hello-{}", std::process::id());
    let mut args = example_args(t);
    args.extend(["--image-name".into(), name.clone()]);
    args.extend([
        "-o".into(),
        "oci:out".into(),
        "-o".into(),
        "docker-archive:img.tar".into(),
    ]);
    args.extend(["-o".into(), "oci-archive:img.oci.tar".into()]);
    let report = export(t, t, &strs(&args));
    let manifest = report["manifest_digest"]
        .as_str()
        .expect("digest")
        .to_owned();
    assert_eq!(
        report["layers"].as_array().map(Vec::len),
        Some(5),
        "4 packages + extras"
    );
    assert!(
        fs::read_to_string(t.join("results/last_container_export.env"))
            .expect("env")
            .contains(&format!("name={name}\n"))
    );

    let inspect = run(StdCommand::new("skopeo")
        .args(["inspect", "oci:out:latest"])
        .current_dir(t));
    let v: serde_json::Value = serde_json::from_str(&inspect).expect("json");
    assert_eq!(v["Digest"], manifest);
    assert_eq!(
        v["Labels"]["sh.habitat.package.ident"],
        "example/hello/0.3.0/20240101000000"
    );
    let inspect = run(StdCommand::new("skopeo")
        .args(["inspect", "oci-archive:img.oci.tar:latest"])
        .current_dir(t));
    assert!(inspect.contains(&manifest));
    let inspect = run(StdCommand::new("skopeo")
        .args(["inspect", "docker-archive:img.tar"])
        .current_dir(t));
    assert!(inspect.contains("example/hello/0.3.0/20240101000000"));
    let mut harts = example_harts();
    harts.extend(
        fs::read_dir(t.join("busybox-src/artifacts"))
            .expect("bb")
            .map(|e| e.expect("e").path()),
    );
    let keys = vec![repo("examples/keys"), t.join("busybox-src/keys")];
    assert_unpacked_is_union(
        t,
        &format!("{}:latest", t.join("out").display()),
        &harts,
        &keys,
    );
    run(StdCommand::new("docker")
        .args(["load", "-i"])
        .arg(t.join("img.tar")));
    let out = run(StdCommand::new("docker").args([
        "run",
        "--rm",
        "--network",
        "none",
        &format!("{name}:0.3.0"),
    ]));
    assert_eq!(out, GREETING);
    let id = run(StdCommand::new("docker").args([
        "image",
        "inspect",
        "--format",
        "{{.Id}}",
        &format!("{name}:latest"),
    ]));
    assert_eq!(id.trim(), report["config_digest"].as_str().expect("config"));
    run(StdCommand::new("docker").args([
        "rmi",
        &format!("{name}:latest"),
        &format!("{name}:0.3.0"),
        &format!("{name}:0.3.0-20240101000000"),
    ]));
    // Straight into the daemon.
    let daemon_name = format!("{name}-daemon");
    let mut args = example_args(t);
    args.extend([
        "--image-name".into(),
        daemon_name.clone(),
        "--no-tag-version".into(),
        "--no-tag-version-release".into(),
    ]);
    args.extend(["-o".into(), "docker-daemon".into()]);
    export(t, &t.join("daemon"), &strs(&args));
    let out = run(StdCommand::new("docker").args([
        "run",
        "--rm",
        "--network",
        "none",
        &format!("{daemon_name}:latest"),
    ]));
    assert_eq!(out, GREETING);
    run(StdCommand::new("docker").args(["rmi", &format!("{daemon_name}:latest")]));
    let reg = registry();
    let dest = format!("docker://{reg}/{name}:latest");
    run(StdCommand::new("skopeo")
        .args(["copy", "--dest-tls-verify=false", "oci:out:latest", &dest])
        .current_dir(t));
    let inspect = run(StdCommand::new("skopeo").args(["inspect", "--tls-verify=false", &dest]));
    let v: serde_json::Value = serde_json::from_str(&inspect).expect("json");
    assert_eq!(v["Digest"], manifest);
}

fn same_inputs_same_digests_whatever_the_directory_tz_umask_and_time() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let src = repo("examples").display().to_string();
    let a = export(
        t,
        &t.join("a"),
        &[
            "--source",
            &src,
            "--no-supervisor",
            "example/hello",
            "-o",
            "oci:img",
        ],
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    fs::create_dir_all(t.join("elsewhere/b")).expect("mkdir");
    let bin = assert_cmd::cargo::cargo_bin("hab-oci");
    let script = format!(
        "umask 077 && cd {} && exec {} export --no-cache --source {src} --no-supervisor example/hello -o oci:img --report report.json",
        t.join("elsewhere/b").display(),
        bin.display()
    );
    run(StdCommand::new("sh")
        .args(["-c", &script])
        .env("TZ", "Pacific/Kiritimati")
        .env("HAB_CACHE_KEY_PATH", t.join("none"))
        .env("HAB_CACHE_ARTIFACT_PATH", t.join("none")));
    let b = read_json(&t.join("elsewhere/b/report.json"));
    assert_eq!(a["manifest_digest"], b["manifest_digest"]);
    assert_eq!(a["config_digest"], b["config_digest"]);
    assert_eq!(layer_digests(&a), layer_digests(&b));
    let blobs = |d: &Path| -> BTreeSet<String> {
        fs::read_dir(d.join("img/blobs/sha256"))
            .expect("blobs")
            .map(|e| e.expect("e").file_name().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(blobs(&t.join("a")), blobs(&t.join("elsewhere/b")));
}

/// Pins the digest of one fixture's layer: a compressor, tar or format change that alters a
/// byte fails here instead of silently invalidating every cache and registry blob.
fn golden_layer_digest() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let src = fixtures("habitat").display().to_string();
    let r = export(
        t,
        t,
        &[
            "--source",
            &src,
            "--no-supervisor",
            "happyhumans/possums",
            "-o",
            "oci:img",
        ],
    );
    let layers = r["layers"].as_array().expect("layers");
    assert_eq!(
        layers[0]["packages"][0],
        "happyhumans/possums/8.1.4/20160427165340"
    );
    assert_eq!(
        layers[0]["diff_id"], GOLDEN_DIFF_ID,
        "layer format v1 changed: bump the format version"
    );
    assert_eq!(
        layers[0]["digest"], GOLDEN_DIGEST,
        "gzip output changed: was the flate2 backend switched?"
    );
}

/// zstd layers are pinned too (zstd-sys could link a system libzstd of another version).
fn golden_zstd_layer_digest() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let src = fixtures("habitat").display().to_string();
    let r = export(
        t,
        t,
        &[
            "--source",
            &src,
            "--no-supervisor",
            "--compression",
            "zstd",
            "happyhumans/possums",
            "-o",
            "oci:img",
        ],
    );
    let layer = &r["layers"][0];
    assert_eq!(layer["diff_id"], GOLDEN_DIFF_ID);
    assert_eq!(
        layer["media_type"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    assert_eq!(layer["digest"], GOLDEN_ZSTD_DIGEST, "zstd output changed");
}

const GOLDEN_ZSTD_DIGEST: &str =
    "sha256:4888e071d0fc927e12bd2492901f5ed0a0d00a572394821f1c6ddfedb1577838";
const GOLDEN_DIFF_ID: &str =
    "sha256:d8b9b1be252be696f9cd0b6c39fb3666662cfbcedddf4f83ec931525a919af88";
const GOLDEN_DIGEST: &str =
    "sha256:9c7c44814026583839705adb0da25d68bc46be862d02fdff1e1f64d81dcf53c9";

/// Exports `gen/app` from the generated closure in `src` to `cwd/img`, with `extra` flags.
fn export_app(tmp: &Path, cwd: &Path, src: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "--source",
        src,
        "--no-supervisor",
        "gen/app",
        "-o",
        "oci:img",
    ];
    args.extend_from_slice(extra);
    export(tmp, cwd, &args)
}

fn gen_closure(dir: &Path, packages: usize) -> hab_oci_testkit::Closure {
    let spec = hab_oci_testkit::ClosureSpec {
        packages,
        total_size: 400 * 1024,
        block_size: 64 * 1024,
        ..Default::default()
    };
    hab_oci_testkit::generate(&spec, dir, None).expect("generate")
}

/// Positions whose digests differ between two reports (same layer count).
fn changed(a: &serde_json::Value, b: &serde_json::Value) -> Vec<BTreeSet<String>> {
    let (la, lb) = (
        a["layers"].as_array().expect("a"),
        b["layers"].as_array().expect("b"),
    );
    assert_eq!(la.len(), lb.len());
    la.iter()
        .zip(lb)
        .filter(|(x, y)| x["digest"] != y["digest"])
        .map(|(_, y)| {
            y["packages"]
                .as_array()
                .expect("p")
                .iter()
                .map(|p| p.as_str().expect("s").to_owned())
                .collect()
        })
        .collect()
}

fn a_new_primary_release_changes_only_its_layer_and_the_extras() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let mut closure = gen_closure(&t.join("src"), 10);
    let src = t.join("src").display().to_string();
    let v1 = export_app(t, &t.join("v1"), &src, &[]);
    let mut app = closure.packages[9].clone();
    app.ident.release = Some("20240202000000".into());
    let new_app = app.ident.to_string();
    hab_oci_testkit::add_package(&mut closure, app, 64 * 1024).expect("new release");
    let v2 = export_app(t, &t.join("v2"), &src, &[]);
    let ch = changed(&v1, &v2);
    assert_eq!(
        ch,
        vec![BTreeSet::from([new_app]), BTreeSet::new()],
        "only the app layer and the extras change"
    );
}

fn a_rebuilt_library_changes_exactly_it_and_its_dependents() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let mut closure = gen_closure(&t.join("src"), 10);
    let src = t.join("src").display().to_string();
    let v1 = export_app(t, &t.join("v1"), &src, &[]);
    // Rebuild the library with the most dependents, and every package that depends on it,
    // as Habitat does: new releases, DEPS/TDEPS pointing at the new releases.
    let specs = closure.packages.clone();
    let target = specs[..9]
        .iter()
        .max_by_key(|s| specs.iter().filter(|o| o.tdeps.contains(&s.ident)).count())
        .expect("a library")
        .ident
        .clone();
    let rebuilt = hab_oci_testkit::rebuild_specs(&specs, &target.name, "20240303000000");
    for n in &rebuilt {
        hab_oci_testkit::add_package(&mut closure, n.clone(), 64 * 1024).expect("rebuild");
    }
    assert!(rebuilt.len() >= 2, "the library has dependents");
    let v2 = export_app(t, &t.join("v2"), &src, &[]);
    let mut ch = changed(&v1, &v2);
    assert_eq!(
        ch.pop(),
        Some(BTreeSet::new()),
        "the extras layer changes (the primary's release)"
    );
    let got: BTreeSet<String> = ch.into_iter().flatten().collect();
    let want: BTreeSet<String> = rebuilt.iter().map(|n| n.ident.to_string()).collect();
    assert_eq!(got, want);
}

fn over_the_layer_budget_packages_are_grouped_and_the_image_still_runs() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let closure = gen_closure(&t.join("src"), 12);
    let src = t.join("src").display().to_string();
    let r = export_app(t, &t.join("g"), &src, &["--max-layers", "5"]);
    let layers = r["layers"].as_array().expect("layers");
    assert!(layers.len() <= 5, "{} layers", layers.len());
    let packages: usize = layers
        .iter()
        .map(|l| l["packages"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(packages, 12);
    assert_eq!(
        layers[layers.len() - 2]["packages"],
        serde_json::json!([closure.primary().to_string()]),
        "the primary keeps its own top layer"
    );
    let single = export_app(t, &t.join("s"), &src, &["--single-layer"]);
    let single = single["layers"].as_array().expect("layers");
    assert_eq!(
        single.len(),
        2,
        "one layer for all packages, plus the extras"
    );
    assert_eq!(single[0]["packages"].as_array().map(Vec::len), Some(12));
    let harts: Vec<PathBuf> = fs::read_dir(t.join("src/artifacts"))
        .expect("a")
        .map(|e| e.expect("e").path())
        .collect();
    assert_unpacked_is_union(
        t,
        &format!("{}:latest", t.join("g/img").display()),
        &harts,
        &[t.join("src/keys")],
    );
    let name = format!("hab-oci-test/grouped-{}", std::process::id());
    let mut args = example_args(t);
    args.extend([
        "--max-layers".into(),
        "4".into(),
        "--image-name".into(),
        name.clone(),
        "--no-tag-version".into(),
        "--no-tag-version-release".into(),
    ]);
    args.extend(["-o".into(), "docker-archive:img.tar".into()]);
    let r = export(t, &t.join("run"), &strs(&args));
    assert_eq!(r["layers"].as_array().map(Vec::len), Some(4));
    run(StdCommand::new("docker")
        .args(["load", "-i"])
        .arg(t.join("run/img.tar")));
    let out = run(StdCommand::new("docker").args([
        "run",
        "--rm",
        "--network",
        "none",
        &format!("{name}:latest"),
    ]));
    assert_eq!(out, GREETING);
    run(StdCommand::new("docker").args(["rmi", &format!("{name}:latest")]));
}

/// Above the budget, adding a small leaf dependency (with the new primary release that uses
/// it) keeps every other grouped layer as it was.
fn grouping_is_stable_when_a_leaf_is_added() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let mut closure = gen_closure(&t.join("src"), 14);
    let src = t.join("src").display().to_string();
    let v1 = export_app(t, &t.join("v1"), &src, &["--max-layers", "8"]);
    let leaf = hab_oci_testkit::PackageSpec {
        ident: hart::PackageIdent::new_fq("gen", "zleaf", "1.0.0", "20240101000000"),
        deps: vec![],
        tdeps: vec![],
        size: 100,
        service: false,
        seed: 99,
    };
    let mut app = closure.packages[13].clone();
    app.ident.release = Some("20240202000000".into());
    app.deps.push(leaf.ident.clone());
    app.tdeps.push(leaf.ident.clone());
    hab_oci_testkit::add_package(&mut closure, leaf, 64 * 1024).expect("leaf");
    hab_oci_testkit::add_package(&mut closure, app, 64 * 1024).expect("app");
    let v2 = export_app(t, &t.join("v2"), &src, &["--max-layers", "8"]);
    let (l1, l2) = (layer_digests(&v1), layer_digests(&v2));
    assert!(l2.len() <= 8);
    // Besides the primary's layer and the extras, only the layer the leaf joins changes.
    let gone: Vec<&String> = l1[..l1.len() - 2]
        .iter()
        .filter(|d| !l2.contains(d))
        .collect();
    assert!(gone.len() <= 1, "layers changed by adding a leaf: {gone:?}");
    let layers = v2["layers"].as_array().expect("layers");
    let new: Vec<&serde_json::Value> = layers[..layers.len() - 2]
        .iter()
        .filter(|l| !l1.contains(&l["digest"].as_str().expect("d").to_owned()))
        .collect();
    assert!(
        new.len() <= gone.len() + 1,
        "{} new layers for {} gone",
        new.len(),
        gone.len()
    );
    for l in new {
        assert!(
            l["packages"]
                .as_array()
                .expect("p")
                .iter()
                .any(|p| p.as_str().is_some_and(|p| p.starts_with("gen/zleaf/"))),
            "a layer without the leaf changed: {l}"
        );
    }
}

fn an_existing_output_that_is_not_ours_is_refused_without_force() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    fs::create_dir_all(t.join("out")).expect("mkdir");
    fs::write(t.join("out/precious.txt"), "keep me").expect("write");
    fs::write(t.join("img.tar"), "not an image").expect("write");
    let src = repo("examples").display().to_string();
    for o in ["oci:out", "docker-archive:img.tar"] {
        hab_oci(t)
            .current_dir(t)
            .args([
                "export",
                "--source",
                &src,
                "--no-supervisor",
                "example/hello",
                "-o",
                o,
            ])
            .assert()
            .code(1)
            .stderr(predicate::str::contains("is not an image hab-oci wrote"));
    }
    assert_eq!(
        fs::read_to_string(t.join("out/precious.txt")).expect("kept"),
        "keep me"
    );
    // Our own previous output is replaced without --force; a foreign one with --force.
    for extra in [
        &["-o", "oci:mine"][..],
        &["-o", "oci:mine"],
        &["-o", "oci:out", "--force"],
    ] {
        let mut args = vec!["--source", &src, "--no-supervisor", "example/hello"];
        args.extend_from_slice(extra);
        export(t, t, &args);
    }
    assert!(!t.join("out/precious.txt").exists());
    assert!(t.join("out/index.json").exists());
}

fn bad_flags_fail_before_any_work() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let src = repo("examples").display().to_string();
    for (args, msg) in [
        (
            vec!["--rm-image"],
            "--rm-image applies to --engine docker or buildah",
        ),
        (
            vec!["--engine", "docker"],
            "--output applies to the native engine",
        ),
        (vec!["--image-name", "{{pkg_name"], "is never closed"),
        (vec!["-o", "tarball:x"], "invalid output"),
    ] {
        hab_oci(t)
            .current_dir(t)
            .args([
                "export",
                "--source",
                &src,
                "--no-supervisor",
                "example/hello",
                "-o",
                "oci:o",
            ])
            .args(&args)
            .assert()
            .code(1)
            .stderr(predicate::str::contains(msg));
    }
    hab_oci(t)
        .args([
            "export",
            "--source",
            &src,
            "--no-supervisor",
            "example/hello",
            "-o",
            "oci:o",
            "--max-layers",
            "200",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("200 is not in 2..=125"));
    hab_oci(t)
        .args([
            "export",
            "--source",
            &src,
            "--no-supervisor",
            "example/hello",
            "-o",
            "oci:o",
        ])
        .args([
            "--no-tag-latest",
            "--no-tag-version",
            "--no-tag-version-release",
        ])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("at least one tag is needed"));
    // No --output and no Docker daemon: fail before any work, saying what to pass.
    hab_oci(t)
        .current_dir(t)
        .env("PATH", "/nonexistent")
        .args([
            "export",
            "--source",
            &src,
            "--no-supervisor",
            "example/hello",
        ])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "no --output given and no Docker daemon answers",
        ));
    // A package whose signing key is not available is never used.
    hab_oci(t)
        .current_dir(t)
        .args(["export", "--no-supervisor", "--source"])
        .arg(repo("examples/artifacts"))
        .args(["example/hello", "-o", "oci:o"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no public key file example-"));
    assert!(!t.join("o").exists());
    // Without --no-supervisor, missing Supervisor packages are explained.
    hab_oci(t)
        .current_dir(t)
        .args(["export", "--source", &src, "example/hello", "-o", "oci:o"])
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("hab pkg download")
                .and(predicate::str::contains("--no-supervisor")),
        );
}

/// With Supervisor packages in the sources (stand-ins for chef/hab, hab-sup, hab-launcher
/// and core/cacerts, plus a real busybox), the image gets Habitat's /init.sh, /bin/hab, the
/// /etc/ssl link and port 9631, and `docker run IMAGE` goes init.sh → hab sup run → run hook.
fn supervisor_images_dispatch_through_init_sh() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let bb = busybox_source(t);
    let sup = t.join("sup-src");
    let chef = hart::SecretKey::generate("chef").expect("key");
    chef.write_pair(&sup.join("keys")).expect("keys");
    // The `core` key busybox was signed with (a second `core` key made in the same second
    // would carry the same name).
    let core_key = fs::read_dir(bb.join("keys"))
        .expect("keys")
        .map(|e| e.expect("e").path())
        .find(|p| p.to_string_lossy().ends_with(".sig.key"))
        .expect("core secret key");
    let core = hart::SecretKey::from_file(&core_key).expect("core key");
    let art = sup.join("artifacts");
    supervisor_stand_ins(t, &chef, &core, &art);
    let busybox_sh = "/hab/pkgs/core/busybox-static/1.36.1/20240101000000/bin/sh";
    let hab_id = "chef/hab/1.6.0/20240101000000";
    let name = format!("hab-oci-test/sup-{}", std::process::id());
    let args = [
        "--source",
        &repo("examples").display().to_string(),
        "--source",
        &bb.display().to_string(),
        "--source",
        &sup.display().to_string(),
        "--image-name",
        &name,
        "--no-tag-version",
        "--no-tag-version-release",
        "example/hello",
        "-o",
        "oci:img",
        "-o",
        "docker-archive:img.tar",
    ];
    let r = export(t, t, &args);
    assert_eq!(
        r["layers"].as_array().map(Vec::len),
        Some(9),
        "8 packages + extras"
    );
    let config_path = t.join("img/blobs/sha256").join(
        r["config_digest"]
            .as_str()
            .expect("c")
            .trim_start_matches("sha256:"),
    );
    let config = read_json(&config_path);
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/init.sh"])
    );
    assert_eq!(
        config["config"]["Cmd"],
        serde_json::json!(["run", "example/hello"])
    );
    assert_eq!(
        config["config"]["ExposedPorts"],
        serde_json::json!({"8080/tcp": {}, "9631/tcp": {}})
    );
    let bundle = t.join("bundle");
    run(StdCommand::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:latest", t.join("img").display()))
        .arg(&bundle));
    let root = bundle.join("rootfs");
    let init = fs::read_to_string(root.join("init.sh")).expect("init.sh");
    assert!(init.starts_with(&format!("#!{busybox_sh}\n")), "{init}");
    assert!(
        init.contains("exec /bin/hab sup run example/hello \"$@\""),
        "{init}"
    );
    assert_eq!(
        fs::read_link(root.join("bin/hab")).expect("hab link"),
        PathBuf::from(format!("/hab/pkgs/{hab_id}/bin/hab"))
    );
    assert_eq!(
        fs::read_link(root.join("etc/ssl")).expect("ssl"),
        PathBuf::from("/hab/pkgs/core/cacerts/2024.01.01/20240101000000/ssl")
    );
    assert!(
        !root.join("bin/hab-sup").exists(),
        "only the hab binary of the hab package is linked"
    );
    run(StdCommand::new("docker")
        .args(["load", "-i"])
        .arg(t.join("img.tar")));
    let image = format!("{name}:latest");
    assert_eq!(
        run(StdCommand::new("docker").args(["run", "--rm", "--network", "none", &image])),
        GREETING
    );
    assert_eq!(
        run(StdCommand::new("docker").args(["run", "--rm", "--network", "none", &image, "term"])),
        "hab sup term\n"
    );
    run(StdCommand::new("docker").args(["rmi", &image]));
}

/// README's main job on the shipped examples, as written (`export --source examples
/// --no-supervisor example/hello`: no shell, no busybox, no Supervisor in the image; only the
/// image name and the outputs' paths differ), to a docker-archive: `docker load` takes it and
/// `docker run` starts example/hello's static `run` program, which prints the greeting.
fn readme_main_job_runs_in_docker() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let name = format!("hab-oci-test/readme-{}", std::process::id());
    let archive = t.join("hello.tar");
    let r = export(
        t,
        t,
        &[
            "--source",
            &repo("examples").display().to_string(),
            "--no-supervisor",
            "example/hello",
            "--output",
            &format!("oci:{}", t.join("hello-image").display()),
            "--output",
            &format!("docker-archive:{}", archive.display()),
            "--image-name",
            &name,
            "--no-tag-version",
            "--no-tag-version-release",
        ],
    );
    assert_eq!(
        r["layers"].as_array().map(Vec::len),
        Some(4),
        "3 packages + extras"
    );
    run(StdCommand::new("docker").args(["load", "-i"]).arg(&archive));
    let image = format!("{name}:latest");
    let entrypoint = run(StdCommand::new("docker").args([
        "image",
        "inspect",
        "--format",
        "{{json .Config.Entrypoint}}",
        &image,
    ]));
    assert_eq!(
        entrypoint.trim(),
        r#"["/hab/pkgs/example/hello/0.3.0/20240101000000/run"]"#
    );
    let out = run(StdCommand::new("docker").args(["run", "--rm", "--network", "none", &image]));
    run(StdCommand::new("docker").args(["rmi", &image]));
    assert_eq!(out, GREETING);
}

tests![
    export_reads_in_oci_tools_runs_in_docker_and_copies_to_a_registry => [
        Need::Tool("skopeo"),
        Need::Tool("umoci"),
        Need::Docker,
        Need::Registry,
    ],
    same_inputs_same_digests_whatever_the_directory_tz_umask_and_time,
    golden_layer_digest,
    golden_zstd_layer_digest,
    a_new_primary_release_changes_only_its_layer_and_the_extras,
    a_rebuilt_library_changes_exactly_it_and_its_dependents,
    over_the_layer_budget_packages_are_grouped_and_the_image_still_runs => [
        Need::Tool("umoci"),
        Need::Docker,
    ],
    grouping_is_stable_when_a_leaf_is_added,
    an_existing_output_that_is_not_ours_is_refused_without_force,
    bad_flags_fail_before_any_work,
    supervisor_images_dispatch_through_init_sh => [Need::Tool("umoci"), Need::Docker],
    readme_main_job_runs_in_docker => [Need::Docker],
];
