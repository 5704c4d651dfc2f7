//! The registry as the layer cache, through the real binary: a fresh runner (empty layer,
//! artifact and key caches) exports and pushes a new release with the image it pushed before
//! as cache source, against testkit's fake registry (request log) and fake Builder
//! (download log). Assertions are on what moved: layer blobs never read, exactly the
//! changed layers uploaded, exactly the changed harts downloaded, and the same image a
//! runner with every package and no cache source builds. Then the bad sources: missing, not
//! ours, a layer garbage-collected, another registry, a grouping that differs (the recorded
//! packages are downloaded after all), a record that lies (`--verify-cache-source`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;

use hab_oci_testkit::builder::{BuilderConfig, BuilderServer};
use hab_oci_testkit::registry::{FakeRegistry, LoggedRequest};
use hab_oci_testkit::{Closure, ClosureSpec, add_package, generate, rebuild_specs};

mod common;
use common::*;

/// A generated closure of `packages` (the primary `gen/app` last), small and fast.
fn closure(dir: &Path, packages: usize, seed: u64) -> Closure {
    let spec = ClosureSpec {
        packages,
        total_size: 3 << 20,
        seed,
        ..ClosureSpec::default()
    };
    generate(&spec, dir, None).expect("closure")
}

/// Rebuilds `name` and its dependents as `release` into the closure; their idents and new
/// harts.
fn rebuild(c: &mut Closure, name: &str, release: &str) -> Vec<(String, PathBuf)> {
    rebuild_specs(&c.packages, name, release)
        .into_iter()
        .map(|s| {
            let ident = s.ident.to_string();
            (ident, add_package(c, s, 1 << 20).expect("rebuilt package"))
        })
        .collect()
}

/// A fake Builder with every package of `c` in `stable`.
fn builder_of(c: &Closure) -> BuilderServer {
    BuilderServer::start(BuilderConfig {
        packages: c
            .harts
            .iter()
            .map(|h| (h.clone(), vec!["stable".to_owned()]))
            .collect(),
        keys_dir: c.dir.join("keys"),
        ..BuilderConfig::default()
    })
    .expect("builder")
}

/// `export gen/app` on a fresh runner `tmp/name` whose only package source is Builder.
fn export_from_builder(
    tmp: &Path,
    name: &str,
    bldr: &BuilderServer,
    args: &[&str],
) -> (serde_json::Value, PathBuf) {
    let dir = runner(tmp, name);
    let report = report_of(
        hab_oci(&dir)
            .env_remove("HAB_OCI_OFFLINE")
            .args(["export", "--no-supervisor", "--report", "report.json"])
            .args(["--url", &bldr.url(), "--channel", "stable"])
            .args(args)
            .arg("gen/app"),
        &dir,
    );
    (report, dir)
}

/// Runs `cmd` (an `export … --report report.json`) in runner `run`: the report, with the
/// export's stderr under `stderr`.
fn report_of(cmd: &mut assert_cmd::Command, run: &Path) -> serde_json::Value {
    let out = cmd.current_dir(run).output().expect("runs");
    assert!(
        out.status.success(),
        "export failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut report = read_json(&run.join("report.json"));
    report["stderr"] = String::from_utf8_lossy(&out.stderr).into_owned().into();
    report
}

/// A fresh runner: its own empty caches and working directory under `tmp/name`.
fn runner(tmp: &Path, name: &str) -> PathBuf {
    let dir = tmp.join(name);
    std::fs::create_dir_all(&dir).expect("runner dir");
    dir
}

/// `export gen/app` from the local closure on runner `run`, with `args`; the report.
fn export(run: &Path, source: &Path, args: &[&str]) -> serde_json::Value {
    report_of(
        hab_oci(run)
            .args(["export", "--no-supervisor", "--report", "report.json"])
            // Blob and request counts here are the image's (the SBOM referrer: sbom.rs).
            .args(["--sbom", "none"])
            .arg("--source")
            .arg(source)
            .args(args)
            .arg("gen/app"),
        run,
    )
}

fn stderr(report: &serde_json::Value) -> &str {
    report["stderr"].as_str().unwrap_or_default()
}

/// The digests of the layers a report says were built (not taken from the registry).
fn built_layers(report: &serde_json::Value) -> BTreeSet<String> {
    report["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .filter(|l| l["source"] != "registry")
        .map(|l| l["digest"].as_str().expect("digest").to_owned())
        .collect()
}

fn sources(report: &serde_json::Value) -> Vec<&str> {
    report["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["source"].as_str().unwrap_or("extras"))
        .collect()
}

/// Blob digests uploaded (the digest is in the closing `PUT`'s query).
fn uploads(log: &[LoggedRequest]) -> BTreeSet<String> {
    log.iter()
        .filter(|r| r.method == "PUT" && r.path.contains("/blobs/uploads/"))
        .filter_map(|r| r.param("digest"))
        .collect()
}

/// Blobs read with `GET` (layers or configs).
fn blob_reads(log: &[LoggedRequest]) -> Vec<String> {
    log.iter()
        .filter(|r| r.method == "GET" && r.path.contains("/blobs/sha256:"))
        .map(|r| r.path.rsplit('/').next().unwrap_or_default().to_owned())
        .collect()
}

/// Packages a runner decoded (its metadata cache holds one record per decoded hart).
fn decoded(run: &Path) -> usize {
    std::fs::read_dir(run.join("hab-oci-cache/metadata-v3"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn registry_url(reg: &FakeRegistry) -> String {
    format!("{}/team", reg.addr())
}

fn a_fresh_runner_reuses_the_registry_layers_without_reading_them() {
    let tmp = tempfile::tempdir().expect("tmp");
    let reg = FakeRegistry::start().expect("registry");
    let url = registry_url(&reg);
    let mut c = closure(&tmp.path().join("src"), 8, 11);
    let src = c.dir.clone();
    let push = ["--registry-url", url.as_str(), "--push-image"];

    let v1 = export(&runner(tmp.path(), "run1"), &src, &push);
    assert_eq!(v1["cache_sources"][0]["notes"][0], "it does not exist");
    assert!(sources(&v1).iter().all(|s| *s != "registry"));

    // (a) A new release of the primary, exported by a fresh runner.
    rebuild(&mut c, "app", "20240202000000");
    reg.clear_log();
    let run2 = runner(tmp.path(), "run2");
    let v2 = export(&run2, &src, &push);
    let log = reg.log();
    let v1_config = v1["config_digest"].as_str().expect("config");
    assert_eq!(
        blob_reads(&log),
        [v1_config],
        "only v1's config is read, never a layer"
    );
    let reused: Vec<bool> = sources(&v2).iter().map(|s| *s == "registry").collect();
    assert_eq!(
        reused,
        [true, true, true, true, true, true, true, false, false],
        "the app's layer and the extras are built: {}",
        stderr(&v2)
    );
    let mut expected = built_layers(&v2);
    expected.insert(v2["config_digest"].as_str().expect("config").to_owned());
    assert_eq!(
        uploads(&log),
        expected,
        "the app layer, extras and config only"
    );
    assert_eq!(decoded(&run2), 1, "only the new app was decoded");
    assert_eq!(v2["push"]["blobs_uploaded"], 3);
    assert_eq!(v2["push"]["blobs_skipped"], 7, "{}", v2["push"]);
    // Every layer of v1 is in the repository (the old app's too, unused now).
    assert_eq!(v2["cache_sources"][0]["confirmed"], 8);

    // The same image as a runner with every package and no cache source builds.
    let local = export(
        &runner(tmp.path(), "local"),
        &src,
        &["--registry-url", url.as_str(), "-o", "oci:img"],
    );
    assert_eq!(v2["manifest_digest"], local["manifest_digest"]);

    // (b) A library rebuilt with its dependents: exactly those layers move.
    // (The closure's specs hold both app releases: both rebuild to one new app.)
    let rebuilt: BTreeSet<String> = rebuild(&mut c, "lib002", "20240303000000")
        .into_iter()
        .map(|(ident, _)| ident)
        .collect();
    assert!(rebuilt.len() >= 3, "lib002 has dependents: {rebuilt:?}");
    reg.clear_log();
    let run3 = runner(tmp.path(), "run3");
    let v3 = export(&run3, &src, &push);
    let log = reg.log();
    assert_eq!(blob_reads(&log).len(), 1, "only v2's config");
    let mut expected = built_layers(&v3);
    assert_eq!(expected.len(), rebuilt.len() + 1, "rebuilt + extras");
    expected.insert(v3["config_digest"].as_str().expect("config").to_owned());
    assert_eq!(uploads(&log), expected);
    assert_eq!(decoded(&run3), rebuilt.len());
}

fn with_builder_only_the_changed_harts_are_downloaded() {
    let tmp = tempfile::tempdir().expect("tmp");
    let reg = FakeRegistry::start().expect("registry");
    let url = registry_url(&reg);
    let mut c = closure(&tmp.path().join("src"), 8, 12);
    let bldr = builder_of(&c);
    let push = ["--registry-url", url.as_str(), "--push-image"];
    export_from_builder(tmp.path(), "run1", &bldr, &push);
    assert_eq!(bldr.downloads().len(), 8, "runner 1 downloads the closure");

    let new = rebuild(&mut c, "app", "20240202000000");
    for (_, h) in &new {
        bldr.add(h, &["stable"]).expect("published");
    }
    bldr.clear_log();
    reg.clear_log();
    let (v2, dir) = export_from_builder(tmp.path(), "run2", &bldr, &push);
    let downloads = bldr.downloads();
    assert_eq!(
        downloads.keys().cloned().collect::<Vec<_>>(),
        [new[0].0.clone()],
        "exactly the new app"
    );
    assert_eq!(blob_reads(&reg.log()).len(), 1, "only v1's config");
    assert_eq!(v2["push"]["blobs_uploaded"], 3);
    let artifacts = std::fs::read_dir(dir.join("artifacts"))
        .expect("artifact cache")
        .count();
    assert_eq!(artifacts, 1, "one hart on runner 2");

    // Grouped differently (five layers for eight packages): the groups are not in the
    // registry, so their members' harts are downloaded after all; the image is the one a
    // runner with every package builds.
    bldr.clear_log();
    let (grouped, _) = export_from_builder(
        tmp.path(),
        "run3",
        &bldr,
        &[&push[..], &["--max-layers", "5"]].concat(),
    );
    assert!(
        stderr(&grouped).contains("recorded packages are needed after all"),
        "{}",
        stderr(&grouped)
    );
    let (local, _) = export_from_builder(
        tmp.path(),
        "local",
        &bldr,
        &[
            "--registry-url",
            url.as_str(),
            "--max-layers",
            "5",
            "-o",
            "oci:img",
        ],
    );
    assert_eq!(grouped["manifest_digest"], local["manifest_digest"]);
}

fn unusable_cache_sources_fall_back_to_building() {
    let tmp = tempfile::tempdir().expect("tmp");
    let reg = FakeRegistry::start().expect("registry");
    let url = registry_url(&reg);
    let mut c = closure(&tmp.path().join("src"), 5, 13);
    let src = c.dir.clone();
    let push = ["--registry-url", url.as_str(), "--push-image"];
    let v1 = export(&runner(tmp.path(), "run1"), &src, &push);
    rebuild(&mut c, "app", "20240202000000");

    // A source that does not exist: a warning, every layer built and pushed.
    let missing = format!("{url}/nothing:here");
    let r = export(
        &runner(tmp.path(), "missing"),
        &src,
        &[&push[..], &["--cache-from", &missing]].concat(),
    );
    assert!(
        stderr(&r).contains(&format!("cache source {missing}: it does not exist")),
        "{}",
        stderr(&r)
    );
    assert!(sources(&r).iter().all(|s| *s != "registry"));

    // Not an image hab-oci wrote: v1's manifest without annotations, under another tag.
    let repo = "team/gen/app";
    let mut m: serde_json::Value =
        serde_json::from_slice(&reg.manifest(repo, "latest").expect("v1")).expect("json");
    for l in m["layers"].as_array_mut().expect("layers") {
        l.as_object_mut().expect("layer").remove("annotations");
    }
    let bytes = serde_json::to_vec(&m).expect("json");
    reg.put_manifest(
        repo,
        "plain",
        "application/vnd.oci.image.manifest.v1+json",
        &bytes,
    );
    let plain = format!("{url}/gen/app:plain");
    let r = export(
        &runner(tmp.path(), "plain"),
        &src,
        &[&push[..], &["--cache-from", &plain]].concat(),
    );
    assert!(
        stderr(&r).contains("not used: hab-oci did not write it"),
        "{}",
        stderr(&r)
    );
    assert!(sources(&r).iter().all(|s| *s != "registry"));

    // A layer of the source garbage-collected: HEAD says 404, so it is built and pushed.
    let gone = v1["layers"][0]["digest"]
        .as_str()
        .expect("digest")
        .to_owned();
    reg.remove_blob(&gone);
    reg.clear_log();
    let r = export(&runner(tmp.path(), "gc"), &src, &push);
    assert!(
        stderr(&r).contains("1 layers of the cache sources are not in"),
        "{}",
        stderr(&r)
    );
    assert_ne!(sources(&r)[0], "registry");
    assert!(uploads(&reg.log()).contains(&gone), "pushed again");
    assert!(reg.has_blob(repo, &gone));

    // A local hart whose checksum is not the recorded one (same ident, other bytes): its
    // record is not used, its layer is built from it; the others still come from v1.
    let mut lib000 = c.packages[0].clone();
    assert_eq!(lib000.ident.name, "lib000");
    lib000.seed += 1;
    add_package(&mut c, lib000, 1 << 20).expect("repacked");
    let run = runner(tmp.path(), "repacked");
    let r = export(&run, &src, &push);
    let s = sources(&r);
    assert_ne!(s[0], "registry", "{}", stderr(&r));
    assert!(s[1..4].iter().all(|s| *s == "registry"), "{s:?}");
    assert_eq!(decoded(&run), 2, "lib000 and the new app");

    // A source in another repository of the same registry: its layers are mounted into the
    // push's repository (one POST each before the build; the source is also a mount source
    // for the blobs the push uploads), none is uploaded or built.
    reg.clear_log();
    let from = format!("{url}/gen/app:latest");
    let r = export(
        &runner(tmp.path(), "mounted"),
        &src,
        &[
            "--registry-url",
            url.as_str(),
            "--image-name",
            "gen/copy",
            "--push-image",
            "--cache-from",
            &from,
        ],
    );
    let log = reg.log();
    let mounts: Vec<_> = log
        .iter()
        .filter(|r| r.param("from").as_deref() == Some("team/gen/app"))
        .collect();
    assert!(
        mounts.len() >= 5,
        "one mount per layer of the source: {}",
        mounts.len()
    );
    assert_eq!(r["cache_sources"][0]["confirmed"], 5);
    assert!(
        sources(&r)[..5].iter().all(|s| *s == "registry"),
        "{:?}",
        sources(&r)
    );
    let first = r["layers"][0]["digest"].as_str().expect("digest");
    assert!(
        reg.has_blob("team/gen/copy", first),
        "mounted, not uploaded"
    );
    assert_eq!(r["push"]["blobs_uploaded"], 0, "{}", r["push"]);

    // A source in another registry is read, never mounted: the new registry gets the bytes.
    let other = FakeRegistry::start().expect("registry");
    let other_url = registry_url(&other);
    let from = format!("{url}/gen/app:latest");
    let r = export(
        &runner(tmp.path(), "elsewhere"),
        &src,
        &[
            "--registry-url",
            other_url.as_str(),
            "--push-image",
            "--cache-from",
            &from,
        ],
    );
    assert!(other.log().iter().all(|r| r.param("mount").is_none()));
    assert!(sources(&r).iter().all(|s| *s != "registry"));
    assert_eq!(r["cache_sources"][0]["layers"], 5);
    assert_eq!(r["cache_sources"][0]["confirmed"], 0);
    assert_eq!(r["push"]["blobs_uploaded"], 7, "5 layers, extras, config");
}

fn verify_cache_source_finds_a_record_that_lies() {
    let tmp = tempfile::tempdir().expect("tmp");
    let reg = FakeRegistry::start().expect("registry");
    let url = registry_url(&reg);
    let c = closure(&tmp.path().join("src"), 4, 15);
    let src = c.dir.clone();
    let push = ["--registry-url", url.as_str(), "--push-image"];
    let v1 = export(&runner(tmp.path(), "run1"), &src, &push);
    let honest = export(
        &runner(tmp.path(), "honest"),
        &src,
        &[&push[..], &["--verify-cache-source"]].concat(),
    );
    assert!(
        stderr(&honest).contains("4 layers they hold equal the local builds"),
        "{}",
        stderr(&honest)
    );
    // The first layer's descriptor now names the second layer's blob.
    let repo = "team/gen/app";
    let mut m: serde_json::Value =
        serde_json::from_slice(&reg.manifest(repo, "latest").expect("v1")).expect("json");
    let second = m["layers"][1].clone();
    m["layers"][0]["digest"] = second["digest"].clone();
    m["layers"][0]["size"] = second["size"].clone();
    let bytes = serde_json::to_vec(&m).expect("json");
    reg.put_manifest(
        repo,
        "latest",
        "application/vnd.oci.image.manifest.v1+json",
        &bytes,
    );

    let r = export(
        &runner(tmp.path(), "verify"),
        &src,
        &[&push[..], &["--verify-cache-source"]].concat(),
    );
    let e = stderr(&r);
    assert!(
        e.contains("the source's record is not to be trusted"),
        "{e}"
    );
    assert_eq!(e.matches("not to be trusted").count(), 1, "{e}");
    assert_eq!(
        r["manifest_digest"], v1["manifest_digest"],
        "the local layers"
    );
    assert!(sources(&r).iter().all(|s| *s != "registry"));
}

/// The README's example through a real registry: a fresh runner's image whose package
/// layers all come from the registry (none built, none uploaded) pulls and runs in docker.
fn an_image_of_reused_layers_runs_in_docker() {
    let tmp = tempfile::tempdir().expect("tmp");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let url = format!("{}/cache-source-{}-{nanos}", registry(), std::process::id());
    let examples = repo("examples");
    let hello = |name: &str| {
        let run = runner(tmp.path(), name);
        report_of(
            hab_oci(&run)
                .args(["export", "--no-supervisor", "--report", "report.json"])
                .arg("--source")
                .arg(&examples)
                .args(["--registry-url", &url, "--push-image", "example/hello"]),
            &run,
        )
    };
    let first = hello("run1");
    let second = hello("run2");
    assert_eq!(
        sources(&second),
        ["registry", "registry", "registry", "extras"]
    );
    assert_eq!(second["push"]["blobs_uploaded"], 0, "{}", second["push"]);
    assert_eq!(first["manifest_digest"], second["manifest_digest"]);
    let image = format!("{url}/example/hello:latest");
    run(StdCommand::new("docker").args(["pull", "-q", &image]));
    let said = run(StdCommand::new("docker").args(["run", "--rm", "--network", "none", &image]));
    let _ = StdCommand::new("docker")
        .args(["rmi", "-f", &image])
        .output();
    assert_eq!(
        said,
        "Hello from a Habitat package, shipped as its own image layer.\n"
    );
}

/// A Supervisor image: the Supervisor's packages (base packages, resolved after the cache
/// sources are read) come from their records like the others; the extras built from the
/// records (`/bin/hab`, busybox's links, `/init.sh`) are the ones an all-local export builds.
fn supervisor_packages_come_from_their_records() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let reg = FakeRegistry::start().expect("registry");
    let url = registry_url(&reg);
    let bb = busybox_source(t);
    let sup = t.join("sup-src");
    let chef = hart::SecretKey::generate("chef").expect("key");
    chef.write_pair(&sup.join("keys")).expect("keys");
    let core_key = std::fs::read_dir(bb.join("keys"))
        .expect("keys")
        .map(|e| e.expect("e").path())
        .find(|p| p.to_string_lossy().ends_with(".sig.key"))
        .expect("core secret key");
    let core = hart::SecretKey::from_file(&core_key).expect("core key");
    supervisor_stand_ins(t, &chef, &core, &sup.join("artifacts"));
    let hello = |name: &str, out: &[&str]| {
        let run = runner(t, name);
        let report = report_of(
            hab_oci(&run)
                .args(["export", "--report", "report.json", "--registry-url", &url])
                .arg("--source")
                .arg(repo("examples"))
                .arg("--source")
                .arg(&bb)
                .arg("--source")
                .arg(&sup)
                .args(out)
                .arg("example/hello"),
            &run,
        );
        (report, run)
    };
    hello("run1", &["--push-image"]);
    let (second, run2) = hello("run2", &["--push-image"]);
    let reused = sources(&second)
        .iter()
        .filter(|s| **s == "registry")
        .count();
    assert_eq!(reused, 8, "every package layer: {:?}", sources(&second));
    assert_eq!(decoded(&run2), 1, "only the requested example/hello");
    let (local, _) = hello("local", &["-o", "oci:img"]);
    assert_eq!(second["manifest_digest"], local["manifest_digest"]);
}

/// A record that names another package than the hart with its checksum (both annotations
/// changed alike, so it parses): the closure it gives does not resolve, and the export goes
/// on without the cache source.
fn records_that_do_not_resolve_are_dropped() {
    let tmp = tempfile::tempdir().expect("tmp");
    let reg = FakeRegistry::start().expect("registry");
    let url = registry_url(&reg);
    let c = closure(&tmp.path().join("src"), 4, 16);
    let src = c.dir.clone();
    let push = ["--registry-url", url.as_str(), "--push-image"];
    let v1 = export(&runner(tmp.path(), "run1"), &src, &push);
    let repo = "team/gen/app";
    let mut m: serde_json::Value =
        serde_json::from_slice(&reg.manifest(repo, "latest").expect("v1")).expect("json");
    let ident = v1["layers"][0]["packages"][0]
        .as_str()
        .expect("ident")
        .to_owned();
    let other = ident.replace("/lib000/", "/lib999/");
    assert_ne!(ident, other);
    for (_, v) in m["layers"][0]["annotations"]
        .as_object_mut()
        .expect("annotations")
        .iter_mut()
    {
        if let Some(text) = v.as_str() {
            *v = text.replace(&ident, &other).into();
        }
    }
    let bytes = serde_json::to_vec(&m).expect("json");
    reg.put_manifest(
        repo,
        "latest",
        "application/vnd.oci.image.manifest.v1+json",
        &bytes,
    );
    let r = export(&runner(tmp.path(), "run2"), &src, &push);
    assert!(
        stderr(&r).contains("records do not resolve"),
        "{}",
        stderr(&r)
    );
    assert_eq!(r["manifest_digest"], v1["manifest_digest"]);
}

fn flags_are_checked() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = hab_oci(tmp.path())
        .args(["export", "--cache-from", "a/b:c", "-o", "oci:x", "gen/app"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("--cache-from with the native engine needs --push-image"),
        "{e}"
    );
    let out = hab_oci(tmp.path())
        .args(["export", "--push-image", "--cache-from", "A//b", "gen/app"])
        .output()
        .expect("runs");
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && e.contains("--cache-from 'A//b'"),
        "{e}"
    );
}

tests![
    a_fresh_runner_reuses_the_registry_layers_without_reading_them,
    with_builder_only_the_changed_harts_are_downloaded,
    unusable_cache_sources_fall_back_to_building,
    verify_cache_source_finds_a_record_that_lies,
    an_image_of_reused_layers_runs_in_docker => [Need::Docker, Need::Registry],
    supervisor_packages_come_from_their_records => [Need::File("/bin/busybox")],
    records_that_do_not_resolve_are_dropped,
    flags_are_checked,
];
