//! `hab-oci export --push-image` against a real docker-registry on loopback (started by
//! scripts/services.sh): only missing blobs are uploaded, no-op pushes write nothing, blobs of
//! another repository are mounted, the pushed image pulls and runs in docker, TLS with a
//! private CA and docker's credential sources. What a registry does wrong (500s, cut
//! connections, 429 with `Retry-After`, 413 above a body limit, refused manifests, bearer
//! tokens that lapse) is played by testkit's in-process fake registry, whose log shows every
//! request the binary made: those tests need no service.

use std::path::Path;
use std::process::Command as StdCommand;

use hab_oci_testkit::registry::{
    Auth, FakeRegistry, Faults, LoggedRequest, RegistryConfig, TokenAuth, UploadFailure,
};
use predicates::prelude::*;

mod common;
use common::*;

fn push(tmp: &Path, cwd: &Path, args: &[&str]) -> serde_json::Value {
    std::fs::create_dir_all(cwd).expect("cwd");
    hab_oci(tmp)
        .current_dir(cwd)
        .args(["export", "--push-image", "--report", "report.json"])
        // The image's push alone: request counts and orders here leave out the SBOM
        // referrer (tests/sbom.rs).
        .args(["--sbom", "none"])
        .args(args)
        .assert()
        .success();
    read_json(&cwd.join("report.json"))["push"].clone()
}

fn n(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"))
}

/// The repository `example/hello` is pushed to under `--registry-url ADDR/team`.
const HELLO: &str = "team/example/hello";

/// An anonymous fake registry (testkit) on 127.0.0.1 with these faults; hab-oci speaks plain
/// HTTP to it, as to any loopback registry.
fn fake(faults: Faults) -> FakeRegistry {
    FakeRegistry::start_with(RegistryConfig {
        faults,
        ..RegistryConfig::default()
    })
    .expect("fake registry")
}

/// `example/hello` from the examples, pushed to `REGISTRY/team` (`--jobs 1`: one request at a
/// time, so the log is in the order the push made its requests).
fn hello_args<'a>(ex: &'a str, registry_url: &'a str) -> [&'a str; 8] {
    [
        "--source",
        ex,
        "--no-supervisor",
        "--jobs",
        "1",
        "--registry-url",
        registry_url,
        "example/hello",
    ]
}

/// The manifest digest of a report's first reference (`…@sha256:…`).
fn pushed_digest(report: &serde_json::Value) -> String {
    report["references"][0]
        .as_str()
        .expect("ref")
        .rsplit_once('@')
        .expect("@")
        .1
        .to_owned()
}

/// `METHOD PATH -> STATUS` of each logged request, for failure messages.
fn lines(log: &[LoggedRequest]) -> Vec<String> {
    log.iter()
        .map(|r| format!("{} {} -> {}", r.method, r.path, r.status))
        .collect()
}

/// The `digest` of each upload request (the final `PUT ?digest=`), in order.
fn upload_digests(log: &[LoggedRequest]) -> Vec<String> {
    log.iter()
        .filter(|r| r.is_upload())
        .filter_map(|r| r.param("digest"))
        .collect()
}

/// Tags are written last: every manifest PUT comes after every blob upload.
fn assert_tags_last(log: &[LoggedRequest]) {
    let last_upload = log.iter().rposition(LoggedRequest::is_upload);
    let first_manifest = log.iter().position(LoggedRequest::is_manifest_put);
    if let (Some(u), Some(m)) = (last_upload, first_manifest) {
        assert!(u < m, "a blob went up after a tag: {:#?}", lines(log));
    }
}

fn push_runs_and_a_second_push_is_a_no_op() {
    let reg = registry();
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let bb = busybox_source(t);
    let prefix = format!("{reg}/push-{}", std::process::id());
    let (ex, bbs) = (
        repo("examples").display().to_string(),
        bb.display().to_string(),
    );
    let args = [
        "--source",
        &ex,
        "--source",
        &bbs,
        "--no-supervisor",
        "--registry-url",
        &prefix,
        "example/hello",
        "core/busybox-static",
    ];
    let first = push(t, &t.join("1"), &args);
    assert_eq!(n(&first, "blobs_uploaded"), 6, "5 layers + config: {first}");
    assert_eq!(n(&first, "tags_written"), 3);
    let again = push(t, &t.join("2"), &args);
    assert_eq!(
        (
            n(&again, "tags_unchanged"),
            n(&again, "blobs_uploaded"),
            n(&again, "bytes_uploaded")
        ),
        (3, 0, 0),
        "{again}"
    );
    let image = format!("{prefix}/example/hello:0.3.0");
    let manifest = first["references"][0]
        .as_str()
        .expect("ref")
        .rsplit_once('@')
        .expect("@")
        .1
        .to_owned();
    let out = run(StdCommand::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{image}"),
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["Digest"], manifest);
    run(StdCommand::new("docker").args(["pull", "-q", &image]));
    let out = run(StdCommand::new("docker").args(["run", "--rm", "--network", "none", &image]));
    assert_eq!(
        out,
        "Hello from a Habitat package, shipped as its own image layer.\n"
    );
    run(StdCommand::new("docker").args(["rmi", &image]));
}

fn only_changed_packages_are_uploaded_and_other_repositories_mount() {
    let reg = registry();
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let spec = hab_oci_testkit::ClosureSpec {
        packages: 40,
        total_size: 1200 * 1024,
        block_size: 64 * 1024,
        ..Default::default()
    };
    let mut closure = hab_oci_testkit::generate(&spec, &t.join("src"), None).expect("generate");
    let original = closure.packages.clone();
    let src = t.join("src").display().to_string();
    let bb = busybox_source(t).display().to_string();
    let prefix = format!("{reg}/delta-{}", std::process::id());
    let args = [
        "--source",
        &src,
        "--source",
        &bb,
        "--no-supervisor",
        "--registry-url",
        &prefix,
        "gen/app",
        "core/busybox-static",
    ];
    let v1 = push(t, &t.join("v1"), &args);
    assert_eq!(
        n(&v1, "blobs_uploaded"),
        43,
        "40 packages + busybox + extras + config: {v1}"
    );
    // The package layers went up while the image was being built.
    assert_eq!(n(&v1, "blobs_early"), 41, "{v1}");
    let image = format!("{prefix}/gen/app:latest");
    let out = run(StdCommand::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{image}"),
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["Layers"].as_array().map(Vec::len), Some(42), "{v}");
    run(StdCommand::new("docker").args(["pull", "-q", &image]));
    let sh = "/hab/pkgs/core/busybox-static/1.36.1/20240101000000/bin/sh";
    let out = run(StdCommand::new("docker").args([
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        sh,
        &image,
        "-c",
        "ls /hab/pkgs/gen | wc -l; cat /hab/pkgs/gen/app/*/*/IDENT",
    ]));
    let app = closure.primary().to_string();
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["40", app.as_str()]
    );
    run(StdCommand::new("docker").args(["rmi", &image]));

    // The same image again: the handshake and one manifest HEAD per tag, nothing else
    // (the layer cache knows every layer is in this repository: none goes up early).
    let noop = push(t, &t.join("noop"), &args);
    assert_eq!(
        (n(&noop, "tags_unchanged"), n(&noop, "requests")),
        (3, 1 + 3),
        "{noop}"
    );
    assert_eq!(n(&noop, "blobs_early"), 0, "{noop}");
    // A fresh CI runner (empty layer cache) pushing the same image: the image's own
    // `latest` is the cache source, each of its package layers confirmed with one HEAD
    // before the build (none is built), nothing uploaded, no tag rewritten. (The source's
    // manifest and config are read in a session of their own, not counted here.)
    let fresh = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(t.join("fresh")).expect("cwd");
    hab_oci(t)
        .env("HAB_OCI_CACHE", fresh.path())
        .current_dir(t.join("fresh"))
        .args(["export", "--push-image", "--report", "report.json"])
        .args(args)
        .assert()
        .success();
    let fresh = read_json(&t.join("fresh/report.json"))["push"].clone();
    assert_eq!(
        (
            n(&fresh, "blobs_uploaded"),
            n(&fresh, "blobs_skipped"),
            n(&fresh, "tags_unchanged"),
            n(&fresh, "requests")
        ),
        (0, 41, 3, 1 + 41 + 3),
        "{fresh}"
    );

    // A new release of the primary: its layer, the extras and the config move, nothing else.
    let mut app = closure.packages[39].clone();
    app.ident.release = Some("20240202000000".into());
    hab_oci_testkit::add_package(&mut closure, app, 64 * 1024).expect("release");
    let v2 = push(t, &t.join("v2"), &args);
    assert_eq!(
        (n(&v2, "blobs_uploaded"), n(&v2, "blobs_skipped")),
        (3, 40),
        "{v2}"
    );
    assert_eq!(
        n(&v2, "blobs_early"),
        1,
        "only the new layer goes up early: {v2}"
    );
    assert_eq!(n(&v2, "tags_written"), 3);

    // A library rebuilt with everything that depends on it: exactly their layers move.
    let rebuilt = hab_oci_testkit::rebuild_specs(&original, "lib002", "20240303000000");
    assert!(rebuilt.len() > 2, "lib002 has dependents");
    for spec in &rebuilt {
        hab_oci_testkit::add_package(&mut closure, spec.clone(), 64 * 1024).expect("rebuild");
    }
    let v3 = push(t, &t.join("v3"), &args);
    let moved = rebuilt.len() as u64 + 2;
    assert_eq!(
        (n(&v3, "blobs_uploaded"), n(&v3, "blobs_skipped")),
        (moved, 43 - moved),
        "{} rebuilt packages: {v3}",
        rebuilt.len()
    );

    // The same image under another repository of the registry: every blob is mounted.
    let other = format!("{reg}/delta-other-{}", std::process::id());
    let from = format!("{prefix}/gen/app");
    let mounted = push(
        t,
        &t.join("m"),
        &[
            "--source",
            &src,
            "--source",
            &bb,
            "--no-supervisor",
            "--registry-url",
            &other,
            "--mount-from",
            &from,
            "gen/app",
            "core/busybox-static",
        ],
    );
    assert_eq!(
        (
            n(&mounted, "blobs_mounted"),
            n(&mounted, "blobs_uploaded"),
            n(&mounted, "blobs_early")
        ),
        (43, 0, 41),
        "{mounted}"
    );
}

fn a_registry_that_rejects_the_manifest_or_an_unknown_host_is_a_clear_error() {
    let reg = fake(Faults {
        reject_manifests: true,
        ..Faults::default()
    });
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let ex = repo("examples").display().to_string();
    hab_oci(t)
        .current_dir(t)
        .args(["export", "--push-image"])
        .args(hello_args(&ex, &reg.repository("team")))
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("writing tag latest")
                .and(predicate::str::contains("MANIFEST_INVALID")),
        );
    // The blobs went up, the one manifest PUT was refused, and no tag exists.
    let log = reg.log();
    let manifests: Vec<u16> = log
        .iter()
        .filter(|r| r.is_manifest_put())
        .map(|r| r.status)
        .collect();
    assert_eq!(manifests, [400], "{:#?}", lines(&log));
    assert_eq!(upload_digests(&log).len(), 5, "{:#?}", lines(&log));
    assert_eq!(reg.tags(HELLO), Vec::<String>::new());
    hab_oci(t)
        .current_dir(t)
        .args([
            "export",
            "--push-image",
            "--source",
            &ex,
            "--no-supervisor",
            "example/hello",
        ])
        .args(["--registry-url", "registry.does-not-exist.invalid/team"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("registry.does-not-exist.invalid"));
}

fn push_errors_are_clear_and_leave_no_tag() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let ex = repo("examples").display().to_string();
    // Nothing listens on this port: a clear error naming the registry, exit 1.
    let out = hab_oci(t)
        .current_dir(t)
        .args([
            "export",
            "--push-image",
            "--source",
            &ex,
            "--no-supervisor",
            "--registry-url",
            "127.0.0.1:9",
            "example/hello",
        ])
        .args(["--username", "someone", "--password", "s3cret-value"])
        .assert()
        .code(1)
        .get_output()
        .clone();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("127.0.0.1:9"), "{err}");
    assert!(
        !err.contains("s3cret-value"),
        "the password must never be printed: {err}"
    );
    // A password without a user is a usage error.
    hab_oci(t)
        .args([
            "export",
            "--push-image",
            "--source",
            &ex,
            "--password",
            "x",
            "example/hello",
        ])
        .assert()
        .code(2);
}

fn basic_auth_behind_tls_with_a_private_ca() {
    let (reg, ca) = tls_registry();
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let ex = repo("examples").display().to_string();
    let prefix = format!("{reg}/tls-{}", std::process::id());
    let base = [
        "export",
        "--push-image",
        "--source",
        &ex,
        "--no-supervisor",
        "--registry-url",
        &prefix,
        "example/hello",
    ];
    let ca_s = ca.display().to_string();
    // Password on stdin, CA from --ca-cert.
    hab_oci(t)
        .current_dir(t)
        .args(base)
        .args([
            "--ca-cert",
            &ca_s,
            "--username",
            "testuser",
            "--password-stdin",
            "--report",
            "r.json",
        ])
        .write_stdin("testpassword\n")
        .assert()
        .success();
    let r = read_json(&t.join("r.json"))["push"].clone();
    assert_eq!(
        (n(&r, "blobs_uploaded"), n(&r, "tags_written")),
        (5, 3),
        "{r}"
    );
    // A wrong password: a clear error without the password in it, and no tag written.
    let out = hab_oci(t)
        .current_dir(t)
        .args(base)
        .args([
            "--ca-cert",
            &ca_s,
            "--username",
            "testuser",
            "--password",
            "not-the-password",
            "--tag-custom",
            "wrong",
        ])
        .assert()
        .code(1)
        .get_output()
        .clone();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&reg), "{err}");
    assert!(!err.contains("not-the-password"), "{err}");
    assert!(err.contains("refused the credentials"), "{err}");
    let tags = StdCommand::new("curl")
        .args(["-fsS", "-u", "testuser:testpassword", "--cacert", &ca_s])
        .arg(format!(
            "https://{reg}/v2/tls-{}/example/hello/tags/list",
            std::process::id()
        ))
        .output()
        .expect("curl");
    let tags = String::from_utf8_lossy(&tags.stdout);
    assert!(tags.contains("latest") && !tags.contains("wrong"), "{tags}");
    // Without --ca-cert a loopback registry is spoken to over plain HTTP, which a TLS
    // registry refuses: the error says what to pass.
    hab_oci(t)
        .current_dir(t)
        .args(base)
        .args(["--username", "testuser", "--password", "testpassword"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("pass --ca-cert"));
}

/// Without --username, the credentials docker would use: `auths` in $DOCKER_CONFIG/config.json,
/// a `credHelpers` helper (`docker-credential-NAME get` on PATH), and $REGISTRY_AUTH_FILE.
fn credentials_come_from_docker_config_helpers_and_registry_auth_file() {
    let (reg, ca) = tls_registry();
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let ex = repo("examples").display().to_string();
    let ca_s = ca.display().to_string();
    let auth = "dGVzdHVzZXI6dGVzdHBhc3N3b3Jk"; // base64("testuser:testpassword")
    let push_with = |name: &str, envs: &[(&str, String)]| {
        let prefix = format!("{reg}/creds-{}-{name}", std::process::id());
        let mut cmd = hab_oci(t);
        cmd.current_dir(t)
            .env_remove("REGISTRY_AUTH_FILE")
            .env("DOCKER_CONFIG", t.join("no-docker-config"))
            .args([
                "export",
                "--push-image",
                "--source",
                &ex,
                "--no-supervisor",
                "--ca-cert",
                &ca_s,
            ])
            .args(["--registry-url", &prefix, "example/hello"]);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd.assert()
    };
    // No credentials anywhere: refused by the registry.
    push_with("none", &[]).code(1);
    // docker config `auths`.
    let dc = t.join("docker-auths");
    std::fs::create_dir_all(&dc).expect("mkdir");
    std::fs::write(
        dc.join("config.json"),
        format!(r#"{{"auths":{{"{reg}":{{"auth":"{auth}"}}}}}}"#),
    )
    .expect("config");
    push_with("auths", &[("DOCKER_CONFIG", dc.display().to_string())]).success();
    // A credential helper.
    let bin = t.join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    let helper = bin.join("docker-credential-habocitest");
    std::fs::write(&helper, "#!/bin/sh\nread server\necho '{\"ServerURL\":\"'$server'\",\"Username\":\"testuser\",\"Secret\":\"testpassword\"}'\n").expect("helper");
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let dh = t.join("docker-helper");
    std::fs::create_dir_all(&dh).expect("mkdir");
    std::fs::write(
        dh.join("config.json"),
        format!(r#"{{"credHelpers":{{"{reg}":"habocitest"}}}}"#),
    )
    .expect("config");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    push_with(
        "helper",
        &[("DOCKER_CONFIG", dh.display().to_string()), ("PATH", path)],
    )
    .success();
    // Podman/skopeo's REGISTRY_AUTH_FILE.
    let af = t.join("auth.json");
    std::fs::write(
        &af,
        format!(r#"{{"auths":{{"{reg}":{{"auth":"{auth}"}}}}}}"#),
    )
    .expect("auth file");
    push_with(
        "authfile",
        &[("REGISTRY_AUTH_FILE", af.display().to_string())],
    )
    .success();
}

fn uploads_survive_dropped_connections_and_500s_or_fail_without_a_tag() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let ex = repo("examples").display().to_string();
    // Two faults (a 500, then a connection cut mid-body): retried, the push succeeds.
    let reg = fake(Faults {
        fail_uploads: 2,
        failure: UploadFailure::Alternate,
        ..Faults::default()
    });
    let r = push(t, &t.join("a"), &hello_args(&ex, &reg.repository("team")));
    assert_eq!(n(&r, "blobs_uploaded"), 5, "{r}");
    let log = reg.log();
    let uploads: Vec<u16> = log
        .iter()
        .filter(|r| r.is_upload())
        .map(|r| r.status)
        .collect();
    assert_eq!(
        uploads,
        [500, 0, 201, 201, 201, 201, 201],
        "a 500, a cut (0), then the five blobs: {:#?}",
        lines(&log)
    );
    let cut = log.iter().find(|r| r.status == 0).expect("the cut request");
    let length: u64 = cut
        .header("content-length")
        .and_then(|l| l.parse().ok())
        .expect("Content-Length");
    assert!(
        cut.body_bytes > 0 && cut.body_bytes < length,
        "cut mid-body: {} of {length} bytes arrived",
        cut.body_bytes
    );
    // The blob that failed twice went up whole on its third attempt, then the others.
    let digests = upload_digests(&log);
    let failed = &digests[0];
    assert_eq!(
        digests.iter().filter(|d| *d == failed).count(),
        3,
        "{failed} sent three times: {digests:?}"
    );
    assert!(reg.has_blob(HELLO, failed), "{failed}");
    assert_tags_last(&log);
    let manifest = pushed_digest(&r);
    assert_eq!(reg.tags(HELLO).len(), 3, "{:?}", reg.tags(HELLO));
    for tag in reg.tags(HELLO) {
        assert_eq!(
            reg.tag(HELLO, &tag).as_deref(),
            Some(manifest.as_str()),
            "{tag}"
        );
    }

    // Every upload fails: a clear error once the attempts are spent, and no tag points at an
    // incomplete image (no manifest was even sent).
    let broken = fake(Faults {
        fail_uploads: usize::MAX,
        failure: UploadFailure::Alternate,
        ..Faults::default()
    });
    let out = hab_oci(t)
        .current_dir(t)
        .args(["export", "--push-image"])
        .args(hello_args(&ex, &broken.repository("team")))
        .assert()
        .code(1)
        .get_output()
        .clone();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("uploading blob"), "{err}");
    let log = broken.log();
    let digests = upload_digests(&log);
    assert!(
        !digests.is_empty()
            && digests
                .iter()
                .all(|d| digests.iter().filter(|x| *x == d).count() > 1),
        "every blob sent was tried again: {:#?}",
        lines(&log)
    );
    assert!(log.iter().all(|r| !r.is_upload() || r.status != 201));
    assert_eq!(broken.count("PUT", "/manifests/"), 0, "{:#?}", lines(&log));
    assert_eq!(broken.tags(HELLO), Vec::<String>::new());
}

fn sigterm_during_a_push_leaves_the_tags_as_they_were() {
    let reg = fake(Faults::default());
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let ex = repo("examples").display().to_string();
    let url = reg.repository("team");
    let v1 = push(
        t,
        &t.join("v1"),
        &[
            "--source",
            &ex,
            "--no-supervisor",
            "--registry-url",
            &url,
            "example/hello/0.2.0",
        ],
    );
    let tags_before: Vec<(String, Option<String>)> = reg
        .tags(HELLO)
        .into_iter()
        .map(|tag| (tag.clone(), reg.tag(HELLO, &tag)))
        .collect();
    let before = reg.tag(HELLO, "latest").expect("latest");
    assert_eq!(pushed_digest(&v1), before, "{v1}");

    // 0.3.0 to a registry that makes every upload wait 30 s: terminated mid-push.
    reg.clear_log();
    reg.set_faults(Faults {
        throttle_uploads: usize::MAX,
        retry_after: Some("30".into()),
        ..Faults::default()
    });
    let tmpdir = t.join("tmpdir");
    let cwd = t.join("v2");
    std::fs::create_dir_all(&tmpdir).expect("tmpdir");
    std::fs::create_dir_all(&cwd).expect("cwd");
    let child = hab_oci_process(t)
        .env("TMPDIR", &tmpdir)
        .current_dir(&cwd)
        .args(["export", "--push-image", "--no-supervisor", "--source", &ex])
        .args(["--registry-url", &url])
        .arg("example/hello")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let throttled = || reg.log().into_iter().find(|r| r.status == 429);
    let start = std::time::Instant::now();
    while throttled().is_none() && start.elapsed() < std::time::Duration::from_secs(60) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let first_429 = throttled().expect("an upload was throttled");
    run(StdCommand::new("kill").args(["-TERM", &child.id().to_string()]));
    let out = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{err}");
    assert!(err.contains("interrupted by SIGTERM"), "{err}");
    // It stopped instead of waiting out the Retry-After it was in.
    assert!(
        first_429.arrived.elapsed() < std::time::Duration::from_secs(30),
        "exited only after the Retry-After: 30 ran out"
    );
    let log = reg.log();
    // 0: an upload still in flight when the push gave up, cut as the process ended.
    assert!(
        log.iter()
            .all(|r| !r.is_upload() || r.status == 429 || r.status == 0),
        "no blob of 0.3.0 went up: {:#?}",
        lines(&log)
    );
    assert_eq!(reg.count("PUT", "/manifests/"), 0, "{:#?}", lines(&log));
    let tags_after: Vec<(String, Option<String>)> = reg
        .tags(HELLO)
        .into_iter()
        .map(|tag| (tag.clone(), reg.tag(HELLO, &tag)))
        .collect();
    assert_eq!(tags_after, tags_before, "the tags are as they were");
    assert_eq!(reg.tag(HELLO, "latest"), Some(before), "latest still 0.2.0");
    assert_eq!(reg.tag(HELLO, "0.3.0"), None, "no 0.3.0 tag was written");
    for dir in [&cwd, &tmpdir, &t.join("hab-oci-cache")] {
        assert_eq!(temporaries(dir), Vec::<String>::new(), "{}", dir.display());
    }
}

fn retry_after_is_honoured_and_an_overlong_one_is_a_clear_error() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let ex = repo("examples").display().to_string();
    let reg = fake(Faults {
        throttle_uploads: 1,
        retry_after: Some("2".into()),
        ..Faults::default()
    });
    let r = push(t, &t.join("a"), &hello_args(&ex, &reg.repository("team")));
    assert_eq!(n(&r, "blobs_uploaded"), 5, "{r}");
    // No request came sooner after the 429 than the registry asked (our own backoff would
    // have tried again after 0.2 s), and then the same blob went up.
    let log = reg.log();
    let i = log
        .iter()
        .position(|r| r.status == 429)
        .expect("a 429 was answered");
    assert_eq!(log.iter().filter(|r| r.status == 429).count(), 1);
    let waited = log[i + 1..]
        .iter()
        .map(|r| r.arrived - log[i].arrived)
        .min()
        .expect("requests after the 429");
    assert!(
        waited >= std::time::Duration::from_secs(2),
        "the next request came {waited:?} after a 429 with Retry-After: 2"
    );
    let throttled = log[i].param("digest").expect("digest");
    let retried = log[i + 1..]
        .iter()
        .find(|r| r.is_upload())
        .expect("an upload after the 429");
    assert_eq!(
        (retried.param("digest"), retried.status),
        (Some(throttled), 201)
    );
    assert_tags_last(&log);
    assert_eq!(reg.tag(HELLO, "latest"), Some(pushed_digest(&r)));

    // A registry asking for an hour: a clear error now, not a stalled CI job.
    let reg = fake(Faults {
        throttle_uploads: usize::MAX,
        retry_after: Some("3600".into()),
        ..Faults::default()
    });
    let out = hab_oci(t)
        .current_dir(t)
        .args([
            "export",
            "--push-image",
            "--source",
            &ex,
            "--no-supervisor",
            "--registry-url",
            &reg.repository("team"),
            "example/hello",
        ])
        .assert()
        .code(1)
        .get_output()
        .clone();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("429 Too Many Requests") && err.contains("retry after 3600 s"),
        "{err}"
    );
    let log = reg.log();
    // 0: an upload still in flight when the push gave up, cut as the process ended.
    assert!(
        log.iter()
            .all(|r| !r.is_upload() || r.status == 429 || r.status == 0),
        "{:#?}",
        lines(&log)
    );
    assert_eq!(reg.count("PUT", "/manifests/"), 0, "{:#?}", lines(&log));
    assert_eq!(reg.tags(HELLO), Vec::<String>::new());
}

fn a_registry_refusing_large_bodies_gets_the_blob_in_chunks() {
    let reg = fake(Faults {
        max_body: Some(300 * 1024),
        ..Faults::default()
    });
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let bb = busybox_source(t).display().to_string();
    let r = push(
        t,
        &t.join("a"),
        &[
            "--source",
            &bb,
            "--no-supervisor",
            "--push-chunk-size",
            "256K",
            "--registry-url",
            &reg.repository("chunks"),
            "core/busybox-static",
        ],
    );
    assert_eq!(n(&r, "blobs_uploaded"), 3, "{r}");
    let report = read_json(&t.join("a/report.json"));
    let (size, big) = report["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| {
            (
                l["size"].as_u64().expect("size"),
                l["digest"].as_str().expect("digest").to_owned(),
            )
        })
        .max()
        .expect("a layer");
    assert!(
        size > 300 * 1024,
        "the busybox layer ({size} bytes) must exceed the limit"
    );
    // Refused whole once, then sent in 256 KiB PATCHes, in order, and committed by the
    // registry, which checks the digest of what it assembled.
    let log = reg.log();
    let refused: Vec<&LoggedRequest> = log.iter().filter(|r| r.status == 413).collect();
    assert_eq!(
        refused.len(),
        1,
        "one whole-body PUT refused: {:#?}",
        lines(&log)
    );
    assert_eq!(
        (refused[0].method.as_str(), refused[0].param("digest")),
        ("PUT", Some(big.clone()))
    );
    let ranges: Vec<String> = log
        .iter()
        .filter(|r| r.method == "PATCH")
        .map(|r| r.header("content-range").unwrap_or_default().to_owned())
        .collect();
    let chunk = 256 * 1024;
    let expected: Vec<String> = (0..size)
        .step_by(chunk as usize)
        .map(|o| format!("{o}-{}", (o + chunk).min(size) - 1))
        .collect();
    assert_eq!(ranges, expected, "a PATCH per 256 KiB chunk");
    assert_eq!(
        reg.blob(&big).map(|b| b.len() as u64),
        Some(size),
        "{big} assembled"
    );
    // The tag names an image whose every blob is in the repository.
    let repo_name = "chunks/core/busybox-static";
    let manifest: serde_json::Value =
        serde_json::from_slice(&reg.manifest(repo_name, "latest").expect("latest"))
            .expect("manifest json");
    let layers: Vec<String> = manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["digest"].as_str().expect("digest").to_owned())
        .collect();
    assert_eq!(layers, layer_digests(&report));
    let config = manifest["config"]["digest"].as_str().expect("config");
    for d in layers.iter().map(String::as_str).chain([config]) {
        assert!(reg.has_blob(repo_name, d), "{d}");
    }
    assert_tags_last(&log);
}

fn bearer_token_flow() {
    let reg = FakeRegistry::start_with(RegistryConfig {
        auth: Auth::Bearer(TokenAuth {
            credentials: Some(("testuser".into(), "testpassword".into())),
            ..TokenAuth::default()
        }),
        ..RegistryConfig::default()
    })
    .expect("fake registry");
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let ex = repo("examples").display().to_string();
    let url = reg.repository("team");
    let args = [
        "--source",
        &ex,
        "--no-supervisor",
        "--registry-url",
        &url,
        "example/hello",
        "--username",
        "testuser",
        "--password",
        "testpassword",
        // The push's own requests (the cache source's read is tested in cache_source.rs).
        "--no-auto-cache-from",
    ];
    let first = push(t, &t.join("1"), &args);
    assert_eq!(
        (n(&first, "blobs_uploaded"), n(&first, "tags_written")),
        (5, 3),
        "{first}"
    );
    // One token for the repository's pull+push scope serves every request of the push.
    assert_eq!(
        (reg.token_requests(), reg.tokens_issued()),
        (1, 1),
        "{:#?}",
        lines(&reg.log())
    );
    let token = reg
        .log()
        .into_iter()
        .find(|r| r.path == "/token")
        .expect("the token request");
    assert_eq!(
        token.param("scope").as_deref(),
        Some(format!("repository:{HELLO}:pull,push").as_str())
    );
    assert_eq!(reg.tag(HELLO, "latest"), Some(pushed_digest(&first)));

    // A no-op push: the handshake (401, token, retry) and one HEAD per tag, as the registry
    // saw it too.
    reg.clear_log();
    let again = push(t, &t.join("2"), &args);
    assert_eq!(n(&again, "tags_unchanged"), 3, "{again}");
    assert_eq!(n(&again, "requests"), 3 + 3, "{again}");
    assert_eq!(reg.log().len(), 3 + 3, "{:#?}", lines(&reg.log()));

    // A token the registry no longer accepts is renewed once, and the push goes on.
    reg.clear_log();
    reg.set_faults(Faults {
        expired_tokens: 1,
        ..Faults::default()
    });
    let renewed = push(t, &t.join("3"), &args);
    assert_eq!(n(&renewed, "tags_unchanged"), 3, "{renewed}");
    let log = reg.log();
    assert_eq!(reg.token_requests(), 2, "expired token, then a good one");
    let refused = log
        .iter()
        .position(|r| {
            r.status == 401
                && r.header("authorization")
                    .is_some_and(|a| a.starts_with("Bearer "))
        })
        .expect("a request refused with the expired token");
    let after = lines(&log[refused + 1..]);
    assert!(
        after.first().is_some_and(|l| l == "GET /token -> 200")
            && after.get(1).is_some_and(|l| {
                l.starts_with(&format!("{} {}", log[refused].method, log[refused].path))
                    && !l.ends_with("401")
            }),
        "renewed, then the same request again: {:#?}",
        lines(&log)
    );

    // Tokens that are always refused: a clear error naming the token service.
    reg.clear_log();
    reg.set_faults(Faults {
        expired_tokens: usize::MAX,
        ..Faults::default()
    });
    let out = hab_oci(t)
        .current_dir(t)
        .args(["export", "--push-image"])
        .args(args)
        .assert()
        .code(1)
        .get_output()
        .clone();
    reg.set_faults(Faults::default());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "refused the token issued by {}",
            reg.token_realm()
        )) && err.contains("expired")
            && !err.contains("testpassword"),
        "{err}"
    );
    assert_eq!(reg.count("PUT", "/manifests/"), 0);

    // Wrong credentials: the token service refuses them, a clear error without the password,
    // and nothing else is asked of the registry.
    reg.clear_log();
    let issued = reg.tokens_issued();
    hab_oci(t)
        .current_dir(t)
        .args([
            "export",
            "--push-image",
            "--source",
            &ex,
            "--no-supervisor",
            "--registry-url",
            &url,
            "example/hello",
        ])
        .args(["--username", "testuser", "--password", "wrong-secret-xyz"])
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("authentication to")
                .and(predicate::str::contains("wrong-secret-xyz").not()),
        );
    let log = reg.log();
    assert!(
        log.iter().any(|r| r.path == "/token" && r.status == 401),
        "{:#?}",
        lines(&log)
    );
    assert_eq!(
        reg.tokens_issued(),
        issued,
        "no token for wrong credentials"
    );
    assert!(
        !log.iter().any(|r| r.is_upload() || r.is_manifest_put()),
        "{:#?}",
        lines(&log)
    );
    assert_eq!(reg.tag(HELLO, "latest"), Some(pushed_digest(&first)));
}

tests![
    push_runs_and_a_second_push_is_a_no_op => [Need::Registry, Need::Tool("skopeo"), Need::Docker],
    only_changed_packages_are_uploaded_and_other_repositories_mount => [
        Need::Registry,
        Need::Tool("skopeo"),
        Need::Docker,
    ],
    a_registry_that_rejects_the_manifest_or_an_unknown_host_is_a_clear_error,
    push_errors_are_clear_and_leave_no_tag,
    basic_auth_behind_tls_with_a_private_ca => [Need::TlsRegistry],
    credentials_come_from_docker_config_helpers_and_registry_auth_file => [Need::TlsRegistry],
    uploads_survive_dropped_connections_and_500s_or_fail_without_a_tag,
    sigterm_during_a_push_leaves_the_tags_as_they_were,
    retry_after_is_honoured_and_an_overlong_one_is_a_clear_error,
    a_registry_refusing_large_bodies_gets_the_blob_in_chunks,
    bearer_token_flow,
];
