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

/// The push section of a report: (blobs uploaded, blobs already in the registry, tags
/// written, tags that already named this image).
fn pushed(r: &serde_json::Value) -> (u64, u64, u64, u64) {
    let p = &r["push"];
    let n = |k: &str| p[k].as_u64().unwrap_or_else(|| panic!("push.{k}: {r}"));
    (
        n("blobs_uploaded"),
        n("blobs_skipped"),
        n("tags_written"),
        n("tags_unchanged"),
    )
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
    // hab-oci pushed it (not `docker push`): 11 layers and the config, 3 tags.
    assert_eq!(pushed(&v1), (12, 0, 3, 0), "{v1}");
    assert_eq!(
        layer_digests(&v1),
        l1,
        "the report's layers are the registry's"
    );

    // A fresh daemon and no cache at all: the legacy builder makes the very same layer tars,
    // which hab-oci compresses to the very same blobs: only the config is new (it holds the
    // build's time), so the manifest and the tags are rewritten.
    let fresh = FreshDockerd::start();
    let again = call(
        "again",
        &[("DOCKER_HOST", &fresh.host)],
        &["--no-auto-cache-from"],
    );
    assert_eq!(cached(&again).0, 0, "nothing cached on a fresh daemon");
    assert_eq!(registry_layers(&image), l1, "reproducible without a cache");
    assert_eq!(pushed(&again), (1, 11, 3, 0), "{again}");
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
    // Every step cached: the image is the pulled one, config included, so the manifest is
    // the one the tags already name; the push stops at that (no blob is even checked).
    assert_eq!(pushed(&cachedrun), (0, 0, 0, 3), "{cachedrun}");

    // (a) a new release of the primary: its layer and the extras are new, nothing else; the
    // push sends them and the config.
    new_release(&mut c, &original);
    let v2 = call("v2", &[("DOCKER_HOST", &fresh.host)], &[]);
    let l2 = registry_layers(&image);
    assert_eq!(new_layers(&l1, &l2), 2, "app + extras");
    assert_eq!(pushed(&v2), (3, 9, 3, 0), "{v2}");
    // (b) a library rebuilt with its dependents: exactly their layers (+ extras) are new.
    let n = rebuild_lib(&mut c, &original);
    let v3 = call("v3", &[("DOCKER_HOST", &fresh.host)], &[]);
    let l3 = registry_layers(&image);
    assert_eq!(new_layers(&l2, &l3), n + 1, "{n} rebuilt packages + extras");
    assert_eq!(
        pushed(&v3).0,
        n as u64 + 2,
        "{n} layers, extras, config: {v3}"
    );
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

    assert_eq!(pushed(&v1), (12, 0, 3, 0), "{v1}");

    // hab-oci's push keeps BuildKit's config (and so its inline cache) byte for byte and the
    // layers in order: the image it pushed serves a fresh daemon's build as its cache.
    let fresh = FreshDockerd::start();
    let again = export(t, &t.join("again"), &[("DOCKER_HOST", &fresh.host)], &args);
    assert_eq!(cached(&again), (11, 11), "{again}");
    assert_eq!(registry_layers(&image), l1, "cached layers are v1's layers");
    // Every step from the cache gives back v1's image, config included: the tags already
    // name its manifest, nothing is sent.
    assert_eq!(pushed(&again), (0, 0, 0, 3), "{again}");
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
    fail(
        &["--engine-push", "--push-image"],
        "--engine-push applies to --engine docker or buildah",
    );
    fail(
        &["--engine", "docker", "--engine-push"],
        "--engine-push chooses who pushes: it needs --push-image",
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

/// A buildah storage configuration in `dir` of its own: buildah's default store may hold
/// other runs' images, and a fresh store is a fresh directory.
fn buildah_store(dir: &Path) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).expect("store");
    let conf = dir.join("storage.conf");
    std::fs::write(
        &conf,
        format!(
            "[storage]\ndriver = \"overlay\"\ngraphroot = \"{0}/graph\"\nrunroot = \"{0}/run\"\n",
            dir.display()
        ),
    )
    .expect("storage.conf");
    conf
}

/// Both ways of pushing an engine's image, to a registry with TLS and a login: hab-oci's own
/// push (the default: the image read out of the engine, the credentials and CA given to
/// hab-oci) and the engine's (`--engine-push`: `docker push` / `buildah push`). Each writes
/// the three tags; `--rm-image` removes the image after the push either way.
fn engines_push_with_credentials_and_remove_the_image() {
    let (reg, ca) = tls_registry();
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let ex = repo("examples").display().to_string();
    let ca = ca.display().to_string();
    for engine in ["docker", "buildah"] {
        for engine_push in [false, true] {
            let how = if engine_push { "engine" } else { "hab-oci" };
            let prefix = format!("{reg}/eng-auth-{engine}-{how}-{}", std::process::id());
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
            if engine_push {
                c.arg("--engine-push");
            } else {
                // hab-oci's client speaks plain HTTP to loopback registries unless told of a CA.
                c.args(["--ca-cert", &ca]);
            }
            if engine == "docker" {
                c.args(["--docker-builder", "legacy"]);
            } else {
                c.env("CONTAINERS_STORAGE_CONF", buildah_store(&t.join("store")));
            }
            let out = c.assert().success().get_output().clone();
            let err = String::from_utf8_lossy(&out.stderr);
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(!err.contains("testpassword"), "{engine}: {err}");
            let r = read_json(&t.join("r.json"));
            assert_eq!(r["engine"]["removed"], true, "{r}");
            // Who pushed: the commands run (`-v` prints each) and the report's sections.
            let engine_pushed = r["engine"]["pushed"].as_array().expect("pushed").clone();
            let saved = format!(
                "$ {engine} {}",
                if engine == "docker" {
                    "save"
                } else {
                    "push --quiet"
                }
            );
            let image = format!("{prefix}/example/hello:latest");
            let engine_push_cmd = if engine == "docker" {
                format!(" push {image}")
            } else {
                format!(" docker://{image}")
            };
            let refs: Vec<String> = if engine_push {
                assert!(r.get("push").is_none(), "{r}");
                assert!(err.contains(&engine_push_cmd), "{err}");
                assert!(!err.contains(&saved), "{err}");
                engine_pushed
                    .iter()
                    .map(|v| v.as_str().expect("ref").to_owned())
                    .collect()
            } else {
                assert!(engine_pushed.is_empty(), "{r}");
                assert!(err.contains(&saved), "{err}");
                assert!(!err.contains(&engine_push_cmd), "no engine push: {err}");
                // example/hello: 3 packages + extras, and the config; nothing there before.
                assert_eq!(pushed(&r), (5, 0, 3, 0), "{r}");
                r["push"]["references"]
                    .as_array()
                    .expect("references")
                    .iter()
                    .map(|v| v.as_str().expect("ref").to_owned())
                    .collect()
            };
            assert_eq!(refs.len(), 3, "{r}");
            let digest = refs[0].rsplit_once('@').expect("@").1.to_owned();
            assert!(digest.starts_with("sha256:"), "{r}");
            if !engine_push {
                assert_eq!(r["manifest_digest"], digest.as_str(), "{r}");
                // What the binary prints: NAME:TAG@DIGEST per tag.
                assert_eq!(stdout.lines().collect::<Vec<_>>(), refs, "{stdout}");
            }
            let inspect = run(StdCommand::new("skopeo").args([
                "inspect",
                "--tls-verify=false",
                "--creds",
                "testuser:testpassword",
                &format!("docker://{image}"),
            ]));
            let v: serde_json::Value = serde_json::from_str(&inspect).expect("json");
            assert_eq!(v["Digest"], digest.as_str(), "{engine} {how}");
            let mut tags: Vec<String> = v["RepoTags"]
                .as_array()
                .expect("tags")
                .iter()
                .map(|t| t.as_str().expect("tag").to_owned())
                .collect();
            tags.sort();
            assert_eq!(tags, ["0.3.0", "0.3.0-20240101000000", "latest"], "{v}");
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
}

/// A fresh CI runner, by hab-oci's push: an image pushed, the engine's image and build cache
/// removed (`docker rmi`, `docker builder prune -af`; `buildah rmi --all`), then a new
/// release of the primary exported and pushed without any cache source. docker's legacy
/// builder and buildah make the unchanged packages' layer tars byte for byte again, which
/// hab-oci compresses to the blobs the registry has: only the new package's layer, the extras
/// and the config go up.
fn fresh_runner_uploads_only_what_changed() {
    let reg = registry();
    for engine in ["docker", "buildah"] {
        let tmp = tempfile::tempdir().expect("tmp");
        let t = tmp.path();
        let mut c = closure(t);
        let original = c.packages.clone();
        let src = t.join("src").display().to_string();
        let prefix = format!("{reg}/eng-fresh-{engine}-{}", std::process::id());
        // The engine's state of its own, so that removing it touches no other test's.
        let daemon = (engine == "docker").then(FreshDockerd::start);
        let (state_var, state) = match &daemon {
            Some(d) => ("DOCKER_HOST", d.host.clone()),
            None => (
                "CONTAINERS_STORAGE_CONF",
                buildah_store(&t.join("store")).display().to_string(),
            ),
        };
        let env = [(state_var, state.as_str())];
        let mut args = vec![
            "--engine",
            engine,
            "--push-image",
            "--source",
            &src,
            "--no-supervisor",
            "--registry-url",
            &prefix,
        ];
        if engine == "docker" {
            args.extend(["--docker-builder", "legacy", "--no-auto-cache-from"]);
        }
        args.push("gen/app");
        let v1 = export(t, &t.join("v1"), &env, &args);
        assert_eq!(
            pushed(&v1),
            (12, 0, 3, 0),
            "{engine}: 11 layers + config: {v1}"
        );

        let engine_cmd = |a: &[&str]| {
            run(StdCommand::new(engine).args(a).env(state_var, &state));
        };
        if engine == "docker" {
            let refs: Vec<&str> = v1["references"]
                .as_array()
                .expect("refs")
                .iter()
                .map(|r| r.as_str().expect("ref"))
                .collect();
            engine_cmd(&[&["rmi"][..], &refs].concat());
            engine_cmd(&["builder", "prune", "-af"]);
            let left = run(StdCommand::new("docker")
                .args(["images", "-aq"])
                .env(state_var, &state));
            assert_eq!(left.trim(), "", "no image left on the daemon");
        } else {
            engine_cmd(&["rmi", "--all", "--force"]);
        }

        new_release(&mut c, &original);
        let v2 = export(t, &t.join("v2"), &env, &args);
        assert_eq!(cached(&v2).0, 0, "{engine}: nothing cached: {v2}");
        assert_eq!(
            pushed(&v2),
            (3, 9, 3, 0),
            "{engine}: the app's layer, the extras and the config; 9 layers already there: {v2}"
        );
        let l1 = layer_digests(&v1);
        let l2 = layer_digests(&v2);
        assert_eq!(l1[..9], l2[..9], "{engine}: unchanged packages, same blobs");
        assert_eq!(registry_layers(&format!("{prefix}/gen/app:latest")), l2);
        if engine == "buildah" {
            engine_cmd(&["rmi", "--all", "--force"]);
        }
    }
}

/// An engine's image pushed by hab-oci is a working image: the registry serves what the
/// report says, and docker pulls and runs it.
fn engine_images_pushed_by_hab_oci_pull_and_run() {
    let reg = registry();
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let ex = repo("examples").display().to_string();
    for engine in ["docker", "buildah"] {
        let prefix = format!("{reg}/eng-run-{engine}-{}", std::process::id());
        let conf = buildah_store(&t.join("store")).display().to_string();
        let mut args = vec![
            "--engine",
            engine,
            "--push-image",
            "--rm-image",
            "--source",
            &ex,
            "--no-supervisor",
            "--registry-url",
            &prefix,
            "example/hello",
        ];
        if engine == "docker" {
            args.extend(["--docker-builder", "legacy", "--no-auto-cache-from"]);
        }
        let r = export(
            t,
            &t.join(engine),
            &[("CONTAINERS_STORAGE_CONF", &conf)],
            &args,
        );
        let image = format!("{prefix}/example/hello:latest");
        let inspect = run(StdCommand::new("skopeo").args([
            "inspect",
            "--tls-verify=false",
            &format!("docker://{image}"),
        ]));
        let v: serde_json::Value = serde_json::from_str(&inspect).expect("json");
        assert_eq!(v["Digest"], r["manifest_digest"], "{engine}: {r}");
        assert_eq!(registry_layers(&image), layer_digests(&r), "{engine}");
        // The config is the engine's own: its digest is the engine's image ID.
        assert_eq!(r["config_digest"], r["engine"]["image_id"], "{r}");
        let packages: Vec<&str> = r["layers"][2]["packages"]
            .as_array()
            .expect("packages")
            .iter()
            .map(|p| p.as_str().expect("ident"))
            .collect();
        assert_eq!(packages, ["example/hello/0.3.0/20240101000000"], "{r}");
        run(StdCommand::new("docker").args(["pull", "-q", &image]));
        let out = run(StdCommand::new("docker").args(["run", "--rm", "--network", "none", &image]));
        assert!(
            out.contains("Hello from a Habitat package"),
            "{engine}: {out}"
        );
        let id = run(
            StdCommand::new("docker").args(["image", "inspect", "--format", "{{.Id}}", &image])
        );
        assert_eq!(
            id.trim(),
            r["config_digest"],
            "{engine}: the pulled image is the built one"
        );
        run(StdCommand::new("docker").args(["rmi", &image]));
    }
    let _ = StdCommand::new("buildah")
        .args(["rmi", "--all", "--force"])
        .env("CONTAINERS_STORAGE_CONF", buildah_store(&t.join("store")))
        .output();
}

/// `docker save` that fails, or an archive without its manifest: the error names the image
/// and the reason, nothing reaches the registry, and no temporary file is left.
fn a_failing_save_pushes_nothing_and_leaves_nothing() {
    use std::os::unix::fs::PermissionsExt;
    let reg = registry();
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let ex = repo("examples").display().to_string();
    // docker, except `save`: it fails, or drops manifest.json from the archive.
    let wrapper = t.join("docker");
    std::fs::write(
        &wrapper,
        "#!/bin/sh\nif [ \"$1\" = save ]; then\n  if [ \"$SAVE\" = fail ]; then\n    echo 'Error response from daemon: simulated failure' >&2\n    exit 1\n  fi\n  docker save \"$2\" | tar --delete -f - manifest.json\n  exit $?\nfi\nexec docker \"$@\"\n",
    )
    .expect("wrapper");
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let wrapper = wrapper.display().to_string();
    for (mode, reason) in [
        ("fail", "simulated failure"),
        ("no-manifest", "neither a manifest.json nor an index.json"),
    ] {
        let prefix = format!("{reg}/eng-bad-save-{mode}-{}", std::process::id());
        let temp = t.join(format!("tmp-{mode}"));
        std::fs::create_dir_all(&temp).expect("tmp");
        let out = hab_oci(t)
            .current_dir(t)
            .env("TMPDIR", &temp)
            .env("SAVE", mode)
            .args([
                "export",
                "--engine",
                "docker",
                "--engine-binary",
                &wrapper,
                "--docker-builder",
                "legacy",
                "--no-auto-cache-from",
                "--push-image",
                "--source",
                &ex,
                "--no-supervisor",
                "--registry-url",
                &prefix,
                "example/hello",
            ])
            .assert()
            .code(1)
            .get_output()
            .clone();
        let err = String::from_utf8_lossy(&out.stderr);
        let image = format!("{prefix}/example/hello");
        assert!(
            err.contains(&format!("reading {image} (sha256:")) && err.contains("out of docker"),
            "{mode}: {err}"
        );
        assert!(err.contains(reason), "{mode}: {err}");
        let inspect = StdCommand::new("skopeo")
            .args([
                "inspect",
                "--tls-verify=false",
                &format!("docker://{image}:latest"),
            ])
            .output()
            .expect("skopeo");
        assert!(!inspect.status.success(), "{mode}: nothing may be pushed");
        assert_eq!(temporaries(&temp), Vec::<String>::new(), "{mode}");
        for tag in ["latest", "0.3.0", "0.3.0-20240101000000"] {
            let _ = StdCommand::new("docker")
                .args(["rmi", &format!("{image}:{tag}")])
                .output();
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
    fresh_runner_uploads_only_what_changed => [
        Need::Registry,
        Need::Docker,
        Need::Tool("dockerd"),
        Need::Tool("buildah"),
        Need::Tool("skopeo"),
    ],
    engine_images_pushed_by_hab_oci_pull_and_run => [
        Need::Registry,
        Need::Docker,
        Need::Tool("buildah"),
        Need::Tool("skopeo"),
    ],
    a_failing_save_pushes_nothing_and_leaves_nothing => [
        Need::Registry,
        Need::Docker,
        Need::Tool("skopeo"),
    ],
];
