//! Shared helpers for the integration tests that drive the real `hab-oci` binary.
#![allow(dead_code)]

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;

use assert_cmd::Command;

pub(crate) fn repo(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(sub)
}

pub(crate) fn fixtures(sub: &str) -> PathBuf {
    repo("fixtures").join(sub)
}

/// The binary with Habitat's caches pointed at an empty directory, so the machine's own
/// /hab/cache never leaks into a test, hab-oci's own cache in that directory too (shared by
/// the calls of one test), and no SOURCE_DATE_EPOCH from the environment.
pub(crate) fn hab_oci(empty: &Path) -> Command {
    let mut c = Command::cargo_bin("hab-oci").expect("binary");
    c.env("HAB_CACHE_KEY_PATH", empty.join("keys"))
        .env("HAB_CACHE_ARTIFACT_PATH", empty.join("artifacts"))
        .env("HAB_OCI_CACHE", empty.join("hab-oci-cache"))
        .env_remove("SOURCE_DATE_EPOCH");
    c
}

/// [`hab_oci`] as a plain process, for tests that signal it while it runs.
#[allow(dead_code)]
pub(crate) fn hab_oci_process(empty: &Path) -> StdCommand {
    let mut c = StdCommand::new(assert_cmd::cargo::cargo_bin("hab-oci"));
    c.env("HAB_CACHE_KEY_PATH", empty.join("keys"))
        .env("HAB_CACHE_ARTIFACT_PATH", empty.join("artifacts"))
        .env("HAB_OCI_CACHE", empty.join("hab-oci-cache"))
        .env_remove("SOURCE_DATE_EPOCH");
    c
}

/// Names of temporary entries (`.hab-oci-…`) anywhere under `dir`.
#[allow(dead_code)]
pub(crate) fn temporaries(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(".hab-oci-") {
            found.push(e.path().display().to_string());
        } else if e.file_type().is_ok_and(|t| t.is_dir()) {
            found.extend(temporaries(&e.path()));
        }
    }
    found
}

/// Is a service the test needs available? In CI a missing service fails the test; outside
/// CI the test says loudly that it is skipped (run `bash scripts/test.sh`, which starts them).
pub(crate) fn service(name: &str, available: bool) -> bool {
    if available {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false") {
        panic!("{name} is required in CI but not available (scripts/test.sh starts it)");
    }
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: {name} is not available; run `bash scripts/test.sh`, which starts it"
    );
    false
}

pub(crate) fn docker() -> bool {
    let ok = StdCommand::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success());
    service("a Docker daemon", ok)
}

pub(crate) fn registry() -> Option<String> {
    let addr = std::env::var("HAB_OCI_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into());
    let ok = StdCommand::new("curl")
        .args(["-fsS", &format!("http://{addr}/v2/")])
        .output()
        .is_ok_and(|o| o.status.success());
    service("a docker-registry on loopback", ok).then_some(addr)
}

pub(crate) fn tool(name: &str) -> bool {
    let ok = StdCommand::new(name)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    service(name, ok)
}

/// Runs a command, panicking with its output if it fails; returns stdout.
pub(crate) fn run(cmd: &mut StdCommand) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A source directory with a `core/busybox-static` package (Debian's static busybox) signed
/// by a fresh `core` key, so exported images have a shell.
pub(crate) fn busybox_source(tmp: &Path) -> PathBuf {
    let src = tmp.join("busybox-src");
    if src.exists() {
        return src;
    }
    let key = hart::SecretKey::generate("core").expect("key");
    key.write_pair(&src.join("keys")).expect("keys");
    let dir = hab_oci_testkit::busybox_package(&tmp.join("busybox-pkg"), "core")
        .expect("busybox package");
    hart::pack(
        &dir,
        &key,
        None,
        &src.join("artifacts"),
        &hart::PackOptions::default(),
    )
    .expect("pack");
    src
}

pub(crate) fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(path).expect("read json")).expect("json")
}

/// Layer digests of a report, bottom to top.
pub(crate) fn layer_digests(report: &serde_json::Value) -> Vec<String> {
    report["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["digest"].as_str().expect("digest").to_owned())
        .collect()
}

/// The registry with htpasswd basic auth behind TLS (scripts/services.sh), and its CA.
pub(crate) fn tls_registry() -> Option<(String, PathBuf)> {
    let addr =
        std::env::var("HAB_OCI_TEST_TLS_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5443".into());
    let ca = PathBuf::from(
        std::env::var("HAB_OCI_TEST_CA")
            .unwrap_or_else(|_| "/tmp/hab-oci-services/tls/ca.crt".into()),
    );
    let ok = StdCommand::new("curl")
        .args(["-fsS", "-u", "testuser:testpassword", "--cacert"])
        .arg(&ca)
        .arg(format!("https://{addr}/v2/"))
        .output()
        .is_ok_and(|o| o.status.success());
    service("a docker-registry with TLS and basic auth", ok).then_some((addr, ca))
}

/// A second Docker daemon with its own empty data root, as on a fresh CI runner; stopped
/// (by its PID) and removed on drop. Point clients at it with `DOCKER_HOST`.
pub(crate) struct FreshDockerd {
    pub(crate) host: String,
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl FreshDockerd {
    pub(crate) fn start() -> FreshDockerd {
        // Short paths: the socket path must fit in a sockaddr_un.
        let dir = tempfile::Builder::new()
            .prefix("hd")
            .tempdir_in("/tmp")
            .expect("tmp");
        let d = dir.path();
        let host = format!("unix://{}/d.sock", d.display());
        let log = fs::File::create(d.join("dockerd.log")).expect("log");
        let child = StdCommand::new("dockerd")
            .arg("--host")
            .arg(&host)
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("x"))
            .arg("--pidfile")
            .arg(d.join("d.pid"))
            .args(["--iptables=false", "--bridge=none"])
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("dockerd");
        let fresh = FreshDockerd { host, child, dir };
        for _ in 0..120 {
            if StdCommand::new("docker")
                .args(["-H", &fresh.host, "info"])
                .output()
                .is_ok_and(|o| o.status.success())
            {
                return fresh;
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
        panic!(
            "a fresh dockerd did not start: {}",
            fs::read_to_string(fresh.dir.path().join("dockerd.log")).unwrap_or_default()
        );
    }
}

impl Drop for FreshDockerd {
    fn drop(&mut self) {
        let _ = StdCommand::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        // Mounts under the data root are gone with the daemon; what remains is files.
        let _ = StdCommand::new("rm")
            .arg("-rf")
            .arg(self.dir.path())
            .status();
    }
}

/// The layer digests of an image in a loopback registry, bottom to top (skopeo).
pub(crate) fn registry_layers(reference: &str) -> Vec<String> {
    let out = run(StdCommand::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{reference}"),
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    v["Layers"]
        .as_array()
        .expect("Layers")
        .iter()
        .map(|l| l.as_str().expect("digest").to_owned())
        .collect()
}
