//! Shared helpers for the integration tests that drive the real `hab-oci` binary, and their
//! harness: each test file is a `harness = false` binary whose `main` is [`tests!`], which
//! lists its tests with the services each needs ([`Need`]). Outside CI a test whose service is
//! missing is reported as skipped (ignored) by the test runner; in CI (`CI` set, not "false")
//! it runs and fails, saying which service is missing.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;
use std::process::ExitCode;
use std::sync::{Mutex, OnceLock};

use assert_cmd::Command;

/// A service a test needs, declared up front in its file's [`tests!`] list; the test body then
/// uses it unconditionally ([`registry`], [`tls_registry`], `docker`, ...). Bearer-token flows
/// and injected faults need no service: they run against testkit's in-process fake registry.
/// `. scripts/services.sh` starts the daemons and registries; scripts/test.sh installs the tools.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Need {
    /// A Docker daemon that `docker info` reaches.
    Docker,
    /// The plain docker-registry on loopback ([`registry`]).
    Registry,
    /// The docker-registry with TLS and basic auth, and its CA ([`tls_registry`]).
    TlsRegistry,
    /// A program that answers `NAME --version` (skopeo, umoci, buildah, dockerd).
    Tool(&'static str),
    /// A file that must exist, e.g. one particular docker client.
    File(&'static str),
    /// Mounting a tmpfs (root).
    Tmpfs,
    /// A Python module `python3` imports (the SBOM validators scripts/test.sh installs).
    Python(&'static str),
}

impl Need {
    fn describe(self) -> String {
        match self {
            Need::Docker => "a Docker daemon (`docker info`)".into(),
            Need::Registry => format!("a docker-registry on loopback at {}", registry()),
            Need::TlsRegistry => format!(
                "a docker-registry with TLS and basic auth at {} (CA {})",
                tls_registry().0,
                tls_registry().1.display()
            ),
            Need::Tool(name) => format!("`{name}` (`{name} --version`)"),
            Need::File(path) => format!("the file {path}"),
            Need::Tmpfs => "mounting a tmpfs (root)".into(),
            Need::Python(module) => {
                format!("the Python module {module} (`python3 -c 'import {module}'`)")
            }
        }
    }

    /// Probed once per process, when the test list is built.
    fn available(self) -> bool {
        static PROBED: OnceLock<Mutex<HashMap<Need, bool>>> = OnceLock::new();
        let probed = PROBED.get_or_init(Mutex::default);
        if let Some(&known) = probed.lock().expect("probes").get(&self) {
            return known;
        }
        let ok = self.probe();
        probed.lock().expect("probes").insert(self, ok);
        ok
    }

    fn probe(self) -> bool {
        let succeeds = |cmd: &mut StdCommand| cmd.output().is_ok_and(|o| o.status.success());
        match self {
            Need::Docker => succeeds(StdCommand::new("docker").arg("info")),
            Need::Registry => succeeds(
                StdCommand::new("curl").args(["-fsS", &format!("http://{}/v2/", registry())]),
            ),
            Need::TlsRegistry => {
                let (addr, ca) = tls_registry();
                succeeds(
                    StdCommand::new("curl")
                        .args(["-fsS", "-u", "testuser:testpassword", "--cacert"])
                        .arg(&ca)
                        .arg(format!("https://{addr}/v2/")),
                )
            }
            Need::Tool(name) => succeeds(StdCommand::new(name).arg("--version")),
            Need::File(path) => Path::new(path).exists(),
            Need::Python(module) => {
                succeeds(StdCommand::new("python3").args(["-c", &format!("import {module}")]))
            }
            Need::Tmpfs => {
                let Ok(dir) = tempfile::tempdir() else {
                    return false;
                };
                let mounted = succeeds(
                    StdCommand::new("mount")
                        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
                        .arg(dir.path()),
                );
                if mounted {
                    let _ = StdCommand::new("umount").arg(dir.path()).status();
                }
                mounted
            }
        }
    }
}

/// Is this CI (`CI` set, not empty, not "false")? There a test whose service is missing fails.
pub(crate) fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false")
}

/// One entry of a [`tests!`] list.
pub(crate) struct Test {
    pub(crate) name: &'static str,
    pub(crate) body: fn(),
    pub(crate) needs: Vec<Need>,
}

/// The `main` of a test binary: `tests![plain_test, needs_docker => [Need::Docker], ...];`
/// at the bottom of the file, each name a `fn()` of the file (no `#[test]` attribute).
macro_rules! tests {
    ($($name:ident $(=> [$($need:expr),* $(,)?])?),* $(,)?) => {
        fn main() -> std::process::ExitCode {
            $crate::common::run_tests(vec![$(
                $crate::common::Test {
                    name: stringify!($name),
                    body: $name,
                    needs: vec![$($($need),*)?],
                }
            ),*])
        }
    };
}
pub(crate) use tests;

/// Runs the tests of a binary through libtest-mimic (the libtest command line, so
/// `cargo test` and nextest's `--list --format terse`, `--ignored`, `--exact` work). A test
/// whose needs are not met is created ignored outside CI; in CI, or when run with `--ignored`,
/// it fails with what is missing before its body runs.
pub(crate) fn run_tests(tests: Vec<Test>) -> ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    let ci = in_ci();
    let trials = tests
        .into_iter()
        .map(|test| {
            // nextest runs each test in its own process (`--exact NAME`): probe only for it.
            let selected = !(args.exact && args.filter.as_deref().is_some_and(|f| f != test.name));
            let missing: Vec<Need> = if selected {
                test.needs
                    .iter()
                    .copied()
                    .filter(|n| !n.available())
                    .collect()
            } else {
                Vec::new()
            };
            let missing = missing
                .into_iter()
                .map(Need::describe)
                .collect::<Vec<_>>()
                .join("; ");
            let skipped = !missing.is_empty() && !ci;
            // Said where the runner shows it (`cargo test`); nextest never starts a skipped test.
            if skipped && !args.list && !args.ignored && !args.include_ignored {
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED {}: it needs what is not available here: {missing}. \
                     `. scripts/services.sh` starts the services (in CI this test fails instead)",
                    test.name
                );
            }
            let body = test.body;
            libtest_mimic::Trial::test(test.name, move || {
                if missing.is_empty() {
                    body();
                    Ok(())
                } else if ci {
                    Err(format!(
                        "this test needs what is not available here: {missing}. In CI (CI is \
                         set) a test whose service is missing fails instead of being skipped: \
                         start the services with `. scripts/services.sh` (bash scripts/test.sh \
                         does)"
                    )
                    .into())
                } else {
                    Err(format!(
                        "this test needs what is not available here: {missing}. It is skipped \
                         unless run with --ignored; `. scripts/services.sh` starts the services"
                    )
                    .into())
                }
            })
            .with_ignored_flag(skipped)
        })
        .collect();
    libtest_mimic::run(&args, trials).exit_code()
}

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
        // Local packages only, unless a test about Builder removes it: no test may reach
        // the public Builder by accident.
        .env("HAB_OCI_OFFLINE", "1")
        .env_remove("HAB_BLDR_URL")
        .env_remove("HAB_DEPOT_URL")
        .env_remove("HAB_AUTH_TOKEN")
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
        // Local packages only, unless a test about Builder removes it: no test may reach
        // the public Builder by accident.
        .env("HAB_OCI_OFFLINE", "1")
        .env_remove("HAB_BLDR_URL")
        .env_remove("HAB_DEPOT_URL")
        .env_remove("HAB_AUTH_TOKEN")
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

/// The plain docker-registry on loopback ([`Need::Registry`]): `HOST:PORT`.
pub(crate) fn registry() -> String {
    std::env::var("HAB_OCI_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into())
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

/// The registry with htpasswd basic auth behind TLS (scripts/services.sh), and its CA
/// ([`Need::TlsRegistry`]).
pub(crate) fn tls_registry() -> (String, PathBuf) {
    let addr =
        std::env::var("HAB_OCI_TEST_TLS_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5443".into());
    let ca = PathBuf::from(
        std::env::var("HAB_OCI_TEST_CA")
            .unwrap_or_else(|_| "/tmp/hab-oci-services/tls/ca.crt".into()),
    );
    (addr, ca)
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

/// Writes and packs a package directory with `files` (relative path, content, mode) into
/// `out`; returns the hart.
pub(crate) fn pack_simple(
    tmp: &Path,
    key: &hart::SecretKey,
    out: &Path,
    ident: &str,
    files: &[(&str, &str, u32)],
) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = tmp.join("simple").join(ident);
    fs::create_dir_all(&dir).expect("mkdir");
    fs::write(dir.join("IDENT"), format!("{ident}\n")).expect("IDENT");
    fs::write(dir.join("TARGET"), "x86_64-linux\n").expect("TARGET");
    for (path, content, mode) in files {
        let p = dir.join(path);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(&p, content).expect("write");
        fs::set_permissions(&p, fs::Permissions::from_mode(*mode)).expect("chmod");
    }
    hart::pack(&dir, key, None, out, &hart::PackOptions::default())
        .expect("pack")
        .path
}

/// Stand-ins for the Supervisor packages (chef/hab, hab-sup, hab-launcher signed by `chef`,
/// core/cacerts by `core`) packed into `out`. The stand-in `hab`: `hab sup run ORIGIN/NAME`
/// runs that package's `run` (the program its plan's pkg_svc_run names; example/hello's is
/// a static binary), anything else prints `hab ARGS`; it needs busybox's shell.
pub(crate) fn supervisor_stand_ins(
    tmp: &Path,
    chef: &hart::SecretKey,
    core: &hart::SecretKey,
    out: &Path,
) -> Vec<PathBuf> {
    let busybox_sh = "/hab/pkgs/core/busybox-static/1.36.1/20240101000000/bin/sh";
    let fake_hab = format!(
        "#!{busybox_sh}\nif [ \"$1\" = sup ] && [ \"$2\" = run ]; then\n  for d in /hab/pkgs/$3/*/*; do exec \"$d/run\"; done\nfi\necho \"hab $*\"\n"
    );
    let hab_id = "chef/hab/1.6.0/20240101000000";
    vec![
        pack_simple(
            tmp,
            chef,
            out,
            hab_id,
            &[
                ("bin/hab", &fake_hab, 0o755),
                ("PATH", &format!("/hab/pkgs/{hab_id}/bin\n"), 0o644),
            ],
        ),
        pack_simple(
            tmp,
            chef,
            out,
            "chef/hab-sup/1.6.0/20240101000000",
            &[("bin/hab-sup", "#!/bin/sh\n", 0o755)],
        ),
        pack_simple(
            tmp,
            chef,
            out,
            "chef/hab-launcher/1.6.0/20240101000000",
            &[("bin/hab-launch", "#!/bin/sh\n", 0o755)],
        ),
        pack_simple(
            tmp,
            core,
            out,
            "core/cacerts/2024.01.01/20240101000000",
            &[("ssl/cert.pem", "-----BEGIN CERTIFICATE-----\n", 0o644)],
        ),
    ]
}

pub(crate) const BUSYBOX: &str = "core/busybox-static/1.36.1/20240101000000";
pub(crate) const APP: &str = "gen/app/1.0.0/20240101000000";

/// A source with `gen/app` (a service whose `run` prints a line with busybox's shell) and
/// busybox for each of `targets`: the same bytes, only TARGET differs, as for packages
/// built from one plan on two machines.
pub(crate) fn two_platform_source(tmp: &Path, targets: &[&str]) -> PathBuf {
    let src = tmp.join("src");
    let core = hart::SecretKey::generate("core").expect("key");
    let gen_key = hart::SecretKey::generate("gen").expect("key");
    core.write_pair(&src.join("keys")).expect("keys");
    gen_key.write_pair(&src.join("keys")).expect("keys");
    let artifacts = src.join("artifacts");
    for target in targets {
        let work = tmp.join("pkgs").join(target);
        let busybox = hab_oci_testkit::busybox_package(&work, "core").expect("busybox");
        fs::write(busybox.join("TARGET"), format!("{target}\n")).expect("TARGET");
        hart::pack(
            &busybox,
            &core,
            None,
            &artifacts,
            &hart::PackOptions::default(),
        )
        .expect("pack busybox");
        let app = work.join("hab/pkgs").join(APP);
        fs::create_dir_all(&app).expect("app dir");
        for (name, content, mode) in [
            ("IDENT", format!("{APP}\n"), 0o644),
            ("TARGET", format!("{target}\n"), 0o644),
            ("DEPS", format!("{BUSYBOX}\n"), 0o644),
            ("TDEPS", format!("{BUSYBOX}\n"), 0o644),
            ("SVC_USER", "hab\n".to_owned(), 0o644),
            ("SVC_GROUP", "hab\n".to_owned(), 0o644),
            (
                "run",
                format!("#!/hab/pkgs/{BUSYBOX}/bin/sh\necho \"hello from gen/app\"\n"),
                0o755,
            ),
        ] {
            use std::os::unix::fs::PermissionsExt;
            let p = app.join(name);
            fs::write(&p, content).expect("write");
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).expect("chmod");
        }
        hart::pack(
            &app,
            &gen_key,
            None,
            &artifacts,
            &hart::PackOptions::default(),
        )
        .expect("pack app");
    }
    src
}
