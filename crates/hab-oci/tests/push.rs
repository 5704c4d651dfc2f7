//! `hab-oci export --push-image` against a real docker-registry on loopback (started by
//! scripts/test.sh): only missing blobs are uploaded, no-op pushes write nothing, blobs of
//! another repository are mounted, and the pushed image pulls and runs in docker.

use std::path::Path;
use std::process::Command as StdCommand;

use predicates::prelude::*;

mod common;
use common::*;

fn push(tmp: &Path, cwd: &Path, args: &[&str]) -> serde_json::Value {
    std::fs::create_dir_all(cwd).expect("cwd");
    hab_oci(tmp)
        .current_dir(cwd)
        .args(["export", "--push-image", "--report", "report.json"])
        .args(args)
        .assert()
        .success();
    read_json(&cwd.join("report.json"))["push"].clone()
}

fn n(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"))
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
    // A fresh CI runner (empty layer cache) pushing the same image: each package layer is
    // checked with one HEAD while building, nothing is uploaded, no tag rewritten.
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
            n(&fresh, "blobs_early"),
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
    let reg = registry();
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let ex = repo("examples").display().to_string();
    let proxy = FaultProxy::start_with(
        reg,
        Faults {
            reject_manifests: true,
            ..Faults::default()
        },
    );
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
        .args([
            "--registry-url",
            &format!("{}/reject-{}", proxy.addr, std::process::id()),
        ])
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("writing tag latest")
                .and(predicate::str::contains("MANIFEST_INVALID")),
        );
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

/// Faults a [`FaultProxy`] injects.
#[derive(Clone, Default)]
struct Faults {
    /// The first this many blob uploads (`PUT …/blobs/uploads/…`) are answered 500 or cut
    /// off mid-body, alternately.
    fail_uploads: usize,
    /// Every manifest PUT is refused as a registry refuses a media type it does not accept.
    reject_manifests: bool,
    /// The first this many blob uploads are answered `429` with this `Retry-After`.
    throttle_uploads: usize,
    retry_after: &'static str,
    /// Upload PUTs with a larger body are answered `413`, as a proxy with a body limit does.
    max_put_body: Option<u64>,
}

/// A loopback HTTP proxy in front of the registry that injects [`Faults`] and logs every
/// request line with its arrival time and the answer's status. Every forwarded request gets
/// `Connection: close`, so each request has its own connection and the proxy sees them all.
struct FaultProxy {
    addr: String,
    uploads_seen: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    log: std::sync::Arc<std::sync::Mutex<Vec<(std::time::Instant, String, u16)>>>,
}

impl FaultProxy {
    fn start(upstream: String, fail: usize) -> FaultProxy {
        FaultProxy::start_with(
            upstream,
            Faults {
                fail_uploads: fail,
                ..Faults::default()
            },
        )
    }

    fn requests(&self, method_and_path: &str) -> usize {
        self.log
            .lock()
            .expect("log")
            .iter()
            .filter(|(_, l, _)| l.starts_with(method_and_path) || l.contains(method_and_path))
            .count()
    }

    fn start_with(upstream: String, faults: Faults) -> FaultProxy {
        use std::io::{Read, Write};
        use std::net::{TcpListener, TcpStream};
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::{Arc, Mutex};
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let uploads_seen = Arc::new(AtomicUsize::new(0));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (seen, log2) = (uploads_seen.clone(), log.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(mut client) = client else { continue };
                let upstream = upstream.clone();
                let seen = seen.clone();
                let log = log2.clone();
                let faults = faults.clone();
                std::thread::spawn(move || {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match client.read(&mut byte) {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let arrived = std::time::Instant::now();
                    let text = String::from_utf8_lossy(&head).into_owned();
                    let first = text.lines().next().unwrap_or_default().to_owned();
                    let record = |status: u16| {
                        log.lock()
                            .expect("log")
                            .push((arrived, first.clone(), status));
                    };
                    let answer = |client: &mut TcpStream, status: &str, extra: &str, body: &str| {
                        record(status[..3].parse().unwrap_or(0));
                        let _ = client.write_all(
                            format!("HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).as_bytes(),
                        );
                        let _ = client.shutdown(std::net::Shutdown::Both);
                    };
                    if faults.reject_manifests
                        && first.starts_with("PUT ")
                        && first.contains("/manifests/")
                    {
                        let body = r#"{"errors":[{"code":"MANIFEST_INVALID","message":"manifest invalid","detail":"unsupported media type application/vnd.oci.image.manifest.v1+json"}]}"#;
                        answer(
                            &mut client,
                            "400 Bad Request",
                            "Content-Type: application/json\r\n",
                            body,
                        );
                        return;
                    }
                    if first.starts_with("PUT ") && first.contains("/blobs/uploads/") {
                        let n = seen.fetch_add(1, Ordering::SeqCst);
                        if n < faults.fail_uploads {
                            if n.is_multiple_of(2) {
                                answer(&mut client, "500 Internal Server Error", "", "");
                            } else {
                                record(0);
                                let mut some = [0u8; 512];
                                let _ = client.read(&mut some);
                                let _ = client.shutdown(std::net::Shutdown::Both);
                            }
                            return;
                        }
                        if n < faults.throttle_uploads {
                            let extra = format!("Retry-After: {}\r\n", faults.retry_after);
                            let body =
                                r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#;
                            answer(&mut client, "429 Too Many Requests", &extra, body);
                            return;
                        }
                        let length: u64 = text
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse().ok())?
                            })
                            .unwrap_or(0);
                        if faults.max_put_body.is_some_and(|max| length > max) {
                            // Read the body first, so that the client sees the answer.
                            let _ = std::io::copy(
                                &mut (&mut client).take(length),
                                &mut std::io::sink(),
                            );
                            answer(&mut client, "413 Payload Too Large", "", "body too large");
                            return;
                        }
                    }
                    let mut rewritten: Vec<String> = text
                        .trim_end()
                        .lines()
                        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
                        .map(str::to_owned)
                        .collect();
                    rewritten.push("Connection: close".into());
                    let Ok(mut up) = TcpStream::connect(&upstream) else {
                        return;
                    };
                    if up
                        .write_all(format!("{}\r\n\r\n", rewritten.join("\r\n")).as_bytes())
                        .is_err()
                    {
                        return;
                    }
                    let (mut c2, mut u2) = (
                        client.try_clone().expect("clone"),
                        up.try_clone().expect("clone"),
                    );
                    let to_upstream = std::thread::spawn(move || {
                        let _ = std::io::copy(&mut c2, &mut u2);
                    });
                    // The status line of the answer, for the log.
                    let mut status_line = Vec::new();
                    while !status_line.ends_with(b"\r\n") {
                        match up.read(&mut byte) {
                            Ok(1) => status_line.push(byte[0]),
                            _ => break,
                        }
                    }
                    let status = String::from_utf8_lossy(&status_line)
                        .split(' ')
                        .nth(1)
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(0);
                    record(status);
                    let _ = client.write_all(&status_line);
                    let _ = std::io::copy(&mut up, &mut client);
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    let _ = up.shutdown(std::net::Shutdown::Both);
                    let _ = to_upstream.join();
                });
            }
        });
        FaultProxy {
            addr,
            uploads_seen,
            log,
        }
    }
}

fn uploads_survive_dropped_connections_and_500s_or_fail_without_a_tag() {
    let reg = registry();
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let ex = repo("examples").display().to_string();
    let repo_name = format!("fault-{}", std::process::id());
    // Two faults (a 500, then a connection cut mid-body): retried, the push succeeds.
    let proxy = FaultProxy::start(reg.clone(), 2);
    let r = push(
        t,
        &t.join("a"),
        &[
            "--source",
            &ex,
            "--no-supervisor",
            "--jobs",
            "1",
            "--registry-url",
            &format!("{}/{repo_name}", proxy.addr),
            "example/hello",
        ],
    );
    assert_eq!(n(&r, "blobs_uploaded"), 5, "{r}");
    assert!(
        proxy.uploads_seen.load(std::sync::atomic::Ordering::SeqCst) >= 7,
        "the faults were injected"
    );
    let out = run(StdCommand::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{reg}/{repo_name}/example/hello:latest"),
    ]));
    assert!(
        out.contains(
            r["references"][0]
                .as_str()
                .expect("ref")
                .rsplit_once('@')
                .expect("@")
                .1
        )
    );
    // Every upload fails: a clear error, and no tag points at an incomplete image.
    let broken = FaultProxy::start(reg.clone(), usize::MAX);
    let other = format!("fault-broken-{}", std::process::id());
    let out = hab_oci(t)
        .current_dir(t)
        .args([
            "export",
            "--push-image",
            "--source",
            &ex,
            "--no-supervisor",
            "--registry-url",
            &format!("{}/{other}", broken.addr),
            "example/hello",
        ])
        .assert()
        .code(1)
        .get_output()
        .clone();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("uploading blob"), "{err}");
    let tags = StdCommand::new("curl")
        .args([
            "-sS",
            &format!("http://{reg}/v2/{other}/example/hello/tags/list"),
        ])
        .output()
        .expect("curl");
    let tags = String::from_utf8_lossy(&tags.stdout);
    assert!(!tags.contains("latest"), "no tag may exist: {tags}");
}

fn sigterm_during_a_push_leaves_the_tags_as_they_were() {
    let reg = registry();
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let ex = repo("examples").display().to_string();
    let repo_name = format!("sigterm-{}", std::process::id());
    let v1 = push(
        t,
        &t.join("v1"),
        &[
            "--source",
            &ex,
            "--no-supervisor",
            "--registry-url",
            &format!("{reg}/{repo_name}"),
            "example/hello/0.2.0",
        ],
    );
    let tag_digest = |tag: &str| -> String {
        let out = StdCommand::new("curl")
            .args([
                "-sSI",
                "-H",
                "Accept: application/vnd.oci.image.manifest.v1+json",
                &format!("http://{reg}/v2/{repo_name}/example/hello/manifests/{tag}"),
            ])
            .output()
            .expect("curl");
        let head = String::from_utf8_lossy(&out.stdout).to_lowercase();
        head.lines()
            .find_map(|l| l.strip_prefix("docker-content-digest:"))
            .map(|d| d.trim().to_owned())
            .unwrap_or_else(|| head.lines().next().unwrap_or_default().to_owned())
    };
    let before = tag_digest("latest");
    assert!(
        v1["references"][0]
            .as_str()
            .is_some_and(|r| r.ends_with(&before)),
        "{v1} {before}"
    );

    // 0.3.0 through a proxy that makes every upload wait 30 s: terminated mid-push.
    let proxy = FaultProxy::start_with(
        reg.clone(),
        Faults {
            throttle_uploads: usize::MAX,
            retry_after: "30",
            ..Faults::default()
        },
    );
    let tmpdir = t.join("tmpdir");
    let cwd = t.join("v2");
    std::fs::create_dir_all(&tmpdir).expect("tmpdir");
    std::fs::create_dir_all(&cwd).expect("cwd");
    let child = hab_oci_process(t)
        .env("TMPDIR", &tmpdir)
        .current_dir(&cwd)
        .args(["export", "--push-image", "--no-supervisor", "--source", &ex])
        .args(["--registry-url", &format!("{}/{repo_name}", proxy.addr)])
        .arg("example/hello")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let start = std::time::Instant::now();
    while proxy.requests("PUT") == 0 && start.elapsed() < std::time::Duration::from_secs(60) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(proxy.requests("PUT") > 0, "no upload started");
    let signalled = std::time::Instant::now();
    run(StdCommand::new("kill").args(["-TERM", &child.id().to_string()]));
    let out = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{err}");
    assert!(err.contains("interrupted by SIGTERM"), "{err}");
    assert!(
        signalled.elapsed() < std::time::Duration::from_secs(5),
        "stopped in {:?}",
        signalled.elapsed()
    );
    assert_eq!(tag_digest("latest"), before, "latest still points at 0.2.0");
    assert!(
        tag_digest("0.3.0").contains("404"),
        "no 0.3.0 tag was written: {}",
        tag_digest("0.3.0")
    );
    for dir in [&cwd, &tmpdir, &t.join("hab-oci-cache")] {
        assert_eq!(temporaries(dir), Vec::<String>::new(), "{}", dir.display());
    }
}

fn retry_after_is_honoured_and_an_overlong_one_is_a_clear_error() {
    let reg = registry();
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let ex = repo("examples").display().to_string();
    let repo_name = format!("throttle-{}", std::process::id());
    let proxy = FaultProxy::start_with(
        reg.clone(),
        Faults {
            throttle_uploads: 1,
            retry_after: "2",
            ..Faults::default()
        },
    );
    let r = push(
        t,
        &t.join("a"),
        &[
            "--source",
            &ex,
            "--no-supervisor",
            "--jobs",
            "1",
            "--registry-url",
            &format!("{}/{repo_name}", proxy.addr),
            "example/hello",
        ],
    );
    assert_eq!(n(&r, "blobs_uploaded"), 5, "{r}");
    // The request after the 429 came no sooner than the registry asked (our own backoff
    // would have tried again after 0.2 s).
    let log = proxy.log.lock().expect("log").clone();
    let i = log
        .iter()
        .position(|(_, _, status)| *status == 429)
        .expect("a 429 was answered");
    let waited = log[i + 1].0 - log[i].0;
    assert!(
        waited >= std::time::Duration::from_millis(1900),
        "waited {waited:?} after Retry-After: 2"
    );

    // A registry asking for an hour: a clear error now, not a stalled CI job.
    let proxy = FaultProxy::start_with(
        reg.clone(),
        Faults {
            throttle_uploads: usize::MAX,
            retry_after: "3600",
            ..Faults::default()
        },
    );
    let out = hab_oci(t)
        .current_dir(t)
        .args([
            "export",
            "--push-image",
            "--source",
            &ex,
            "--no-supervisor",
            "--registry-url",
            &format!("{}/throttle-long-{}", proxy.addr, std::process::id()),
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
}

fn a_registry_refusing_large_bodies_gets_the_blob_in_chunks() {
    let reg = registry();
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let bb = busybox_source(t).display().to_string();
    let repo_name = format!("chunks-{}", std::process::id());
    let proxy = FaultProxy::start_with(
        reg.clone(),
        Faults {
            max_put_body: Some(300 * 1024),
            ..Faults::default()
        },
    );
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
            &format!("{}/{repo_name}", proxy.addr),
            "core/busybox-static",
        ],
    );
    assert_eq!(n(&r, "blobs_uploaded"), 3, "{r}");
    let size = read_json(&t.join("a/report.json"))["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["size"].as_u64().expect("size"))
        .max()
        .expect("a layer");
    assert!(
        size > 300 * 1024,
        "the busybox layer ({size} bytes) must exceed the limit"
    );
    // Refused whole once, then sent in 256 KiB PATCHes and committed by the registry, which
    // checks the digest of what it assembled.
    let refused = proxy
        .log
        .lock()
        .expect("log")
        .iter()
        .filter(|(_, _, status)| *status == 413)
        .count();
    assert_eq!(refused, 1, "one whole-body PUT refused");
    let patches = proxy.requests("PATCH ");
    assert_eq!(patches as u64, size.div_ceil(256 * 1024), "PATCH per chunk");
    let dir = t.join("copy");
    run(StdCommand::new("skopeo").args([
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{reg}/{repo_name}/core/busybox-static:latest"),
        &format!("oci:{}:x", dir.display()),
    ]));
}

/// A small token server for the registry on 127.0.0.1:5001 (scripts/services.sh): checks the
/// Basic credentials, and answers `GET /token?service=…&scope=repository:NAME:ACTIONS` with a
/// JWT (RS256 via `openssl dgst`, the signing certificate in `x5c`) granting what was asked.
struct TokenServer {
    requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// The next this many tokens are issued already expired (as after a long upload, or
    /// with clocks that disagree).
    expired: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl TokenServer {
    fn start(key: std::path::PathBuf, cert: std::path::PathBuf) -> Option<TokenServer> {
        use base64::Engine as _;
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        use std::io::{Read, Write};
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:5002").ok()?;
        let der = StdCommand::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert)
            .output()
            .expect("openssl");
        let x5c = STANDARD.encode(der.stdout);
        let requests = Arc::new(AtomicUsize::new(0));
        let count = requests.clone();
        let expired = Arc::new(AtomicUsize::new(0));
        let expire = expired.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match conn.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => break,
                    }
                }
                count.fetch_add(1, Ordering::SeqCst);
                let text = String::from_utf8_lossy(&head).into_owned();
                let target = text
                    .lines()
                    .next()
                    .and_then(|l| l.split(' ').nth(1))
                    .unwrap_or_default()
                    .to_owned();
                let authorized = text.lines().any(|l| {
                    l.to_ascii_lowercase().starts_with("authorization: basic ")
                        && l[21..].trim() == STANDARD.encode("testuser:testpassword")
                });
                if !authorized {
                    let _ = conn.write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    continue;
                }
                let query = target.split_once('?').map(|(_, q)| q).unwrap_or_default();
                let access: Vec<serde_json::Value> = query
                    .split('&')
                    .filter_map(|kv| kv.strip_prefix("scope="))
                    .map(percent_decode)
                    .filter_map(|scope| {
                        let mut parts = scope.splitn(3, ':');
                        let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                        Some(serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
                    })
                    .collect();
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .expect("time")
                    .as_secs();
                let exp = if expire
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
                {
                    now - 3600
                } else {
                    now + 300
                };
                let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5c": [x5c]});
                let claims = serde_json::json!({
                    "iss": "hab-oci-test-issuer", "sub": "testuser", "aud": "hab-oci-test",
                    "exp": exp, "nbf": now - 7200, "iat": now,
                    "jti": format!("t{}", count.load(Ordering::SeqCst)), "access": access,
                });
                let signing_input = format!(
                    "{}.{}",
                    URL_SAFE_NO_PAD.encode(header.to_string()),
                    URL_SAFE_NO_PAD.encode(claims.to_string())
                );
                let mut openssl = std::process::Command::new("openssl")
                    .args(["dgst", "-sha256", "-sign"])
                    .arg(&key)
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .expect("openssl");
                openssl
                    .stdin
                    .take()
                    .expect("stdin")
                    .write_all(signing_input.as_bytes())
                    .expect("sign input");
                let sig = openssl.wait_with_output().expect("signature").stdout;
                let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig));
                let body =
                    serde_json::json!({"token": token, "access_token": token, "expires_in": 300})
                        .to_string();
                let _ = conn.write_all(
                    format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
                        .as_bytes(),
                );
            }
        });
        Some(TokenServer { requests, expired })
    }
}

fn bearer_token_flow() {
    let (reg, key, cert) = token_registry();
    let server = TokenServer::start(key, cert).expect("port 5002 for the token server");
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let ex = repo("examples").display().to_string();
    let prefix = format!("{reg}/token-{}", std::process::id());
    let args = [
        "--source",
        &ex,
        "--no-supervisor",
        "--registry-url",
        &prefix,
        "example/hello",
        "--username",
        "testuser",
        "--password",
        "testpassword",
    ];
    let first = push(t, &t.join("1"), &args);
    assert_eq!(
        (n(&first, "blobs_uploaded"), n(&first, "tags_written")),
        (5, 3),
        "{first}"
    );
    let tokens_first = server.requests.load(std::sync::atomic::Ordering::SeqCst);
    // One token for the repository's pull+push scope serves every request of the push.
    assert!(
        tokens_first <= 2,
        "{tokens_first} token requests for one push"
    );
    let again = push(t, &t.join("2"), &args);
    assert_eq!(n(&again, "tags_unchanged"), 3, "{again}");
    // A no-op push: the handshake (401, token, retry) and one HEAD per tag.
    assert_eq!(n(&again, "requests"), 3 + 3, "{again}");

    // A token the registry no longer accepts is renewed once, and the push goes on.
    use std::sync::atomic::Ordering::SeqCst;
    server.expired.store(1, SeqCst);
    let before = server.requests.load(SeqCst);
    let renewed = push(t, &t.join("3"), &args);
    assert_eq!(n(&renewed, "tags_unchanged"), 3, "{renewed}");
    assert_eq!(
        server.requests.load(SeqCst) - before,
        2,
        "expired token, then a good one"
    );
    // Tokens that are always expired: a clear error naming the token service.
    server.expired.store(usize::MAX, SeqCst);
    let out = hab_oci(t)
        .current_dir(t)
        .args(["export", "--push-image"])
        .args(args)
        .assert()
        .code(1)
        .get_output()
        .clone();
    server.expired.store(0, SeqCst);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refused the token issued by http://127.0.0.1:5002/token")
            && err.contains("expired")
            && !err.contains("testpassword"),
        "{err}"
    );

    // Wrong credentials: the token server refuses them, a clear error without the password.
    hab_oci(t)
        .current_dir(t)
        .args([
            "export",
            "--push-image",
            "--source",
            &ex,
            "--no-supervisor",
            "--registry-url",
            &prefix,
            "example/hello",
        ])
        .args(["--username", "testuser", "--password", "wrong-secret-xyz"])
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("authentication to")
                .and(predicate::str::contains("wrong-secret-xyz").not()),
        );
}

tests![
    push_runs_and_a_second_push_is_a_no_op => [Need::Registry, Need::Tool("skopeo"), Need::Docker],
    only_changed_packages_are_uploaded_and_other_repositories_mount => [
        Need::Registry,
        Need::Tool("skopeo"),
        Need::Docker,
    ],
    a_registry_that_rejects_the_manifest_or_an_unknown_host_is_a_clear_error => [Need::Registry],
    push_errors_are_clear_and_leave_no_tag,
    basic_auth_behind_tls_with_a_private_ca => [Need::TlsRegistry],
    credentials_come_from_docker_config_helpers_and_registry_auth_file => [Need::TlsRegistry],
    uploads_survive_dropped_connections_and_500s_or_fail_without_a_tag => [
        Need::Registry,
        Need::Tool("skopeo"),
    ],
    sigterm_during_a_push_leaves_the_tags_as_they_were => [Need::Registry],
    retry_after_is_honoured_and_an_overlong_one_is_a_clear_error => [Need::Registry],
    a_registry_refusing_large_bodies_gets_the_blob_in_chunks => [
        Need::Registry,
        Need::Tool("skopeo"),
    ],
    bearer_token_flow => [Need::TokenRegistry],
];
