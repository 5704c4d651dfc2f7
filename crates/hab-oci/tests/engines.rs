//! `hab-oci export --engine docker|buildah` against a real dockerd (legacy builder and
//! BuildKit), real buildah with overlay storage and a real docker-registry on loopback: the
//! fresh-CI scenario (engine state thrown away, then the same image again), what a change
//! re-pushes, argument passthrough and the errors before any build.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command as StdCommand;

use predicates::prelude::*;

mod common;
use common::*;

const BLOCK: u64 = 64 * 1024;

/// A 10-package closure with content no engine has seen before: a build cache left by an
/// earlier run (keyed by file content) must not answer for it.
fn closure(t: &Path) -> hab_oci_testkit::Closure {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_nanos() as u64;
    let spec = hab_oci_testkit::ClosureSpec {
        packages: 10,
        total_size: 600 * 1024,
        block_size: BLOCK,
        seed: nanos ^ u64::from(std::process::id()),
        ..Default::default()
    };
    hab_oci_testkit::generate(&spec, &t.join("src"), None).expect("generate")
}

/// Runs an engine export in `cwd` with `env`, returns the report.
fn export(t: &Path, cwd: &Path, env: &[(&str, &str)], args: &[&str]) -> serde_json::Value {
    std::fs::create_dir_all(cwd).expect("cwd");
    let mut c = hab_oci(t);
    c.current_dir(cwd)
        .args(["export", "--report", "report.json"])
        .args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.assert().success();
    read_json(&cwd.join("report.json"))
}

fn cached(r: &serde_json::Value) -> (u64, u64) {
    let e = &r["engine"];
    (
        e["cached_steps"].as_u64().expect("cached_steps"),
        e["copy_steps"].as_u64().expect("copy_steps"),
    )
}

/// Layer digests of `now` that `before` did not have: what a push of `now` uploads.
fn new_layers(before: &[String], now: &[String]) -> usize {
    let old: BTreeSet<&String> = before.iter().collect();
    now.iter().filter(|l| !old.contains(l)).count()
}

/// A new release of the primary package.
fn new_release(closure: &mut hab_oci_testkit::Closure, original: &[hab_oci_testkit::PackageSpec]) {
    let mut app = original.last().expect("app").clone();
    app.ident.release = Some("20240202000000".into());
    hab_oci_testkit::add_package(closure, app, BLOCK).expect("release");
}

/// lib002 rebuilt with everything that depends on it; how many packages that is.
fn rebuild_lib(
    closure: &mut hab_oci_testkit::Closure,
    original: &[hab_oci_testkit::PackageSpec],
) -> usize {
    let rebuilt = hab_oci_testkit::rebuild_specs(original, "lib002", "20240303000000");
    for s in &rebuilt {
        hab_oci_testkit::add_package(closure, s.clone(), BLOCK).expect("rebuild");
    }
    rebuilt.len()
}

fn docker_legacy_layers_are_the_same_on_a_fresh_daemon_and_only_changes_are_new() {
    let reg = registry();
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let mut c = closure(t);
    let original = c.packages.clone();
    let src = t.join("src").display().to_string();
    let prefix = format!("{reg}/eng-legacy-{}", std::process::id());
    let image = format!("{prefix}/gen/app:latest");
    let args = |extra: &[&'static str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "--engine",
            "docker",
            "--docker-builder",
            "legacy",
            "--push-image",
            "--source",
            &src,
            "--no-supervisor",
            "--registry-url",
            &prefix,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        v.extend(extra.iter().map(|s| (*s).to_owned()));
        v.push("gen/app".into());
        v
    };
    let call = |cwd: &str, env: &[(&str, &str)], extra: &[&'static str]| {
        let a = args(extra);
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        export(t, &t.join(cwd), env, &refs)
    };

    let v1 = call("v1", &[], &["--no-auto-cache-from"]);
    assert_eq!(v1["engine"]["builder"], "legacy");
    let l1 = registry_layers(&image);
    assert_eq!(l1.len(), 11, "10 packages + extras");

    // A fresh daemon and no cache at all: the legacy builder makes the very same layers.
    let fresh = FreshDockerd::start();
    let again = call(
        "again",
        &[("DOCKER_HOST", &fresh.host)],
        &["--no-auto-cache-from"],
    );
    assert_eq!(cached(&again).0, 0, "nothing cached on a fresh daemon");
    assert_eq!(registry_layers(&image), l1, "reproducible without a cache");
    drop(fresh);

    // Another fresh daemon with the automatic cache source (NAME:latest, pulled first):
    // every COPY comes from the cache.
    let fresh = FreshDockerd::start();
    let cachedrun = call("cached", &[("DOCKER_HOST", &fresh.host)], &[]);
    assert_eq!(
        cachedrun["engine"]["cache_from"][0].as_str(),
        Some(format!("{prefix}/gen/app:latest").as_str())
    );
    let (hits, steps) = cached(&cachedrun);
    assert_eq!((hits, steps), (11, 11), "{cachedrun}");
    assert_eq!(registry_layers(&image), l1);

    // (a) a new release of the primary: its layer and the extras are new, nothing else.
    new_release(&mut c, &original);
    call("v2", &[("DOCKER_HOST", &fresh.host)], &[]);
    let l2 = registry_layers(&image);
    assert_eq!(new_layers(&l1, &l2), 2, "app + extras");
    // (b) a library rebuilt with its dependents: exactly their layers (+ extras) are new.
    let n = rebuild_lib(&mut c, &original);
    call("v3", &[("DOCKER_HOST", &fresh.host)], &[]);
    let l3 = registry_layers(&image);
    assert_eq!(new_layers(&l2, &l3), n + 1, "{n} rebuilt packages + extras");
}

fn docker_buildkit_inline_cache_serves_a_fresh_daemon() {
    let reg = registry();
    // Docker 20.10's own client (/usr/bin/docker, a declared need) runs BuildKit builds
    // without the buildx plugin.
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    closure(t);
    let src = t.join("src").display().to_string();
    let prefix = format!("{reg}/eng-buildkit-{}", std::process::id());
    let image = format!("{prefix}/gen/app:latest");
    let args = [
        "--engine",
        "docker",
        "--engine-binary",
        "/usr/bin/docker",
        "--docker-builder",
        "buildkit",
        "--push-image",
        "--source",
        &src,
        "--no-supervisor",
        "--registry-url",
        &prefix,
        "gen/app",
    ];
    let v1 = export(t, &t.join("v1"), &[], &args);
    assert_eq!(v1["engine"]["inline_cache"], true, "on by default: {v1}");
    assert!(
        v1["engine"]["command"]
            .as_array()
            .expect("command")
            .iter()
            .any(|a| a == "BUILDKIT_INLINE_CACHE=1")
    );
    let l1 = registry_layers(&image);
    assert_eq!(l1.len(), 11);

    let fresh = FreshDockerd::start();
    let again = export(t, &t.join("again"), &[("DOCKER_HOST", &fresh.host)], &args);
    assert_eq!(cached(&again), (11, 11), "{again}");
    assert_eq!(registry_layers(&image), l1, "cached layers are v1's layers");
}

fn buildah_cache_repository_serves_a_fresh_store() {
    let reg = registry();
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    closure(t);
    let src = t.join("src").display().to_string();
    let prefix = format!("{reg}/eng-buildah-{}", std::process::id());
    let cache = format!("{prefix}/cache");
    let image = format!("{prefix}/gen/app:latest");
    // Overlay storage in a directory of our own: a fresh store is a fresh directory.
    let store = |name: &str| -> String {
        let d = t.join(name);
        std::fs::create_dir_all(&d).expect("store");
        let conf = d.join("storage.conf");
        std::fs::write(
            &conf,
            format!(
                "[storage]\ndriver = \"overlay\"\ngraphroot = \"{0}/graph\"\nrunroot = \"{0}/run\"\n",
                d.display()
            ),
        )
        .expect("storage.conf");
        conf.display().to_string()
    };
    let args = [
        "--engine",
        "buildah",
        "--push-image",
        "--cache-from",
        &cache,
        "--cache-to",
        &cache,
        "--source",
        &src,
        "--no-supervisor",
        "--registry-url",
        &prefix,
        "gen/app",
    ];
    let first = store("s1");
    let v1 = export(
        t,
        &t.join("v1"),
        &[("CONTAINERS_STORAGE_CONF", &first)],
        &args,
    );
    assert_eq!(v1["engine"]["engine"], "buildah");
    let l1 = registry_layers(&image);
    assert_eq!(l1.len(), 11);

    let second = store("s2");
    let again = export(
        t,
        &t.join("again"),
        &[("CONTAINERS_STORAGE_CONF", &second)],
        &args,
    );
    assert_eq!(cached(&again), (11, 11), "{again}");
    assert_eq!(registry_layers(&image), l1, "cached layers are v1's layers");
    // Leave no overlay mounts behind.
    for s in [first, second] {
        let _ = StdCommand::new("buildah")
            .args(["rmi", "--all", "--force"])
            .env("CONTAINERS_STORAGE_CONF", s)
            .output();
    }
}

fn engine_arguments_reach_the_engine_and_v_shows_the_command() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let ex = repo("examples").display().to_string();
    let name = format!("hab-oci-test/args-{}", std::process::id());
    let out = hab_oci(t)
        .current_dir(t)
        .env("HAB_OCI_ENGINE_ARGS", "--label 'from.env=two words'")
        .args([
            "export",
            "-v",
            "--engine",
            "docker",
            "--docker-builder",
            "legacy",
            "--no-auto-cache-from",
            "--source",
            &ex,
            "--no-supervisor",
            "--image-name",
            &name,
            "--no-tag-version",
            "--no-tag-version-release",
            "--engine-arg",
            "--label",
            "--engine-arg",
            "from.flag=yes",
            "example/hello",
        ])
        .assert()
        .success()
        .get_output()
        .clone();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("$ docker build")
            && err.contains("--label 'from.env=two words' --label 'from.flag=yes'"),
        "{err}"
    );
    let labels = run(StdCommand::new("docker").args([
        "image",
        "inspect",
        "--format",
        "{{json .Config.Labels}}",
        &format!("{name}:latest"),
    ]));
    let labels: serde_json::Value = serde_json::from_str(&labels).expect("json");
    assert_eq!(labels["from.env"], "two words");
    assert_eq!(labels["from.flag"], "yes");
    assert_eq!(labels["sh.habitat.package.name"], "hello");
    // The image runs: the context holds everything Habitat's RUN steps made.
    run(StdCommand::new("docker").args(["rmi", &format!("{name}:latest")]));
}

fn bad_engine_input_fails_before_the_build_and_leaves_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let ex = repo("examples").display().to_string();
    let name = format!("hab-oci-test/bad-{}", std::process::id());
    let base = [
        "export",
        "--source",
        &ex,
        "--no-supervisor",
        "--image-name",
        &name,
        "--no-tag-version",
        "--no-tag-version-release",
    ];
    let fail = |extra: &[&str], expect: &str| {
        let out = hab_oci(t)
            .current_dir(t)
            .args(base)
            .args(extra)
            .arg("example/hello")
            .assert()
            .code(1)
            .get_output()
            .clone();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(err.contains(expect), "expected '{expect}' in:\n{err}");
        assert!(!err.contains("Building with"), "no build may start:\n{err}");
        err
    };
    fail(
        &["--engine", "docker", "--cache-from", "Not A Reference"],
        "cache reference 'Not A Reference' is not an image reference",
    );
    fail(
        &[
            "--engine",
            "docker",
            "--docker-builder",
            "legacy",
            "--cache-to",
            "127.0.0.1:5000/c",
        ],
        "a cache export needs docker buildx",
    );
    fail(
        &["--engine", "buildah", "--inline-cache"],
        "buildah has no inline cache",
    );
    fail(
        &[
            "--engine",
            "docker",
            "--engine-binary",
            "/nonexistent/docker",
        ],
        "docker not found (/nonexistent/docker)",
    );
    fail(
        &["--cache-from", "a/b"],
        "--cache-from with the native engine needs --push-image",
    );
    fail(
        &["--engine", "docker", "-o", "oci:x"],
        "--output applies to the native engine",
    );
    // The engine refuses an argument: its own message, no tag, no context left.
    let out = hab_oci(t)
        .current_dir(t)
        .args(base)
        .args([
            "--engine",
            "docker",
            "--docker-builder",
            "legacy",
            "--no-auto-cache-from",
            "--engine-arg=--no-such-flag",
            "example/hello",
        ])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("unknown flag: --no-such-flag"))
        .get_output()
        .clone();
    let _ = out;
    let inspect = StdCommand::new("docker")
        .args(["image", "inspect", &format!("{name}:latest")])
        .output()
        .expect("docker");
    assert!(!inspect.status.success(), "no image may be tagged");
    let ctx = std::env::temp_dir()
        .join("hab-oci-context")
        .join(name.replace(['/', '-'], "_"));
    assert!(!ctx.exists(), "the context {} must be gone", ctx.display());
}

fn engines_push_with_credentials_and_remove_the_image() {
    let (reg, _ca) = tls_registry();
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let ex = repo("examples").display().to_string();
    for engine in ["docker", "buildah"] {
        let prefix = format!("{reg}/eng-auth-{engine}-{}", std::process::id());
        let mut c = hab_oci(t);
        c.current_dir(t)
            .args([
                "export",
                "-v",
                "--engine",
                engine,
                "--no-auto-cache-from",
                "--source",
                &ex,
                "--no-supervisor",
                "--registry-url",
                &prefix,
                "--push-image",
                "--rm-image",
                "--username",
                "testuser",
                "--password-stdin",
                "--report",
                "r.json",
                "example/hello",
            ])
            .write_stdin("testpassword\n");
        if engine == "docker" {
            c.args(["--docker-builder", "legacy"]);
        } else {
            // A store of its own: buildah's default one may hold other runs' images.
            let conf = t.join("storage.conf");
            std::fs::write(
                &conf,
                format!(
                    "[storage]\ndriver = \"overlay\"\ngraphroot = \"{0}/graph\"\nrunroot = \"{0}/run\"\n",
                    t.join("store").display()
                ),
            )
            .expect("storage.conf");
            c.env("CONTAINERS_STORAGE_CONF", &conf);
        }
        let out = c.assert().success().get_output().clone();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("testpassword"), "{engine}: {err}");
        let r = read_json(&t.join("r.json"));
        assert_eq!(r["engine"]["removed"], true, "{r}");
        let pushed = r["engine"]["pushed"].as_array().expect("pushed").clone();
        assert_eq!(pushed.len(), 3, "{r}");
        let digest = pushed[0]
            .as_str()
            .expect("ref")
            .rsplit_once('@')
            .expect("@")
            .1
            .to_owned();
        assert!(digest.starts_with("sha256:"), "{r}");
        let inspect = run(StdCommand::new("skopeo").args([
            "inspect",
            "--tls-verify=false",
            "--creds",
            "testuser:testpassword",
            &format!("docker://{prefix}/example/hello:latest"),
        ]));
        let v: serde_json::Value = serde_json::from_str(&inspect).expect("json");
        assert_eq!(v["Digest"], digest.as_str(), "{engine}");
        if engine == "docker" {
            let gone = StdCommand::new("docker")
                .args([
                    "image",
                    "inspect",
                    &format!("{prefix}/example/hello:latest"),
                ])
                .output()
                .expect("docker");
            assert!(!gone.status.success(), "--rm-image removes the image");
        }
    }
}

tests![
    docker_legacy_layers_are_the_same_on_a_fresh_daemon_and_only_changes_are_new => [
        Need::Registry,
        Need::Docker,
        Need::Tool("skopeo"),
        Need::Tool("dockerd"),
    ],
    docker_buildkit_inline_cache_serves_a_fresh_daemon => [
        Need::Registry,
        Need::Docker,
        Need::Tool("skopeo"),
        Need::Tool("dockerd"),
        Need::File("/usr/bin/docker"),
    ],
    buildah_cache_repository_serves_a_fresh_store => [
        Need::Registry,
        Need::Tool("buildah"),
        Need::Tool("skopeo"),
    ],
    engine_arguments_reach_the_engine_and_v_shows_the_command => [Need::Docker],
    bad_engine_input_fails_before_the_build_and_leaves_nothing => [Need::Docker],
    engines_push_with_credentials_and_remove_the_image => [
        Need::TlsRegistry,
        Need::Docker,
        Need::Tool("buildah"),
        Need::Tool("skopeo"),
    ],
];
