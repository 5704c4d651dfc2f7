//! hab-oci as Habitat's container exporter: called as `hab-pkg-export-container` (the name
//! `HAB_PKG_EXPORT_CONTAINER_BINARY` points `hab pkg export container` at), with the
//! exporter's own argument list, against a Builder (testkit's fake, following the recorded
//! contract). It must build the same image as `hab-oci export` with the same flags.

use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;

use hab_oci_testkit::builder::{BuilderConfig, BuilderServer};
use hab_oci_testkit::{ClosureSpec, generate};

mod common;
use common::*;

/// A small generated closure published in `stable`, and the Builder serving it.
fn builder_with_closure(tmp: &Path) -> (BuilderServer, String) {
    let spec = ClosureSpec {
        origin: "acme".into(),
        packages: 4,
        total_size: 256 * 1024,
        ..ClosureSpec::default()
    };
    let closure = generate(&spec, &tmp.join("closure"), None).expect("closure");
    let packages = closure
        .harts
        .iter()
        .map(|h| (h.clone(), vec!["stable".to_owned()]))
        .collect();
    let server = BuilderServer::start(BuilderConfig {
        packages,
        keys_dir: closure.dir.join("keys"),
        ..BuilderConfig::default()
    })
    .expect("builder");
    let primary = closure.primary();
    (server, format!("{}/{}", primary.origin, primary.name))
}

/// The binary under the exporter's name: a symbolic link, as users install it.
fn exporter(tmp: &Path) -> PathBuf {
    let link = tmp.join("bin/hab-pkg-export-container");
    if !link.exists() {
        std::fs::create_dir_all(link.parent().expect("parent")).expect("bin dir");
        std::os::unix::fs::symlink(assert_cmd::cargo::cargo_bin("hab-oci"), &link).expect("link");
    }
    link
}

fn env_for(cmd: &mut StdCommand, caches: &Path) {
    cmd.env("HAB_CACHE_KEY_PATH", caches.join("keys"))
        .env("HAB_CACHE_ARTIFACT_PATH", caches.join("artifacts"))
        .env("HAB_OCI_CACHE", caches.join("hab-oci-cache"))
        .env_remove("HAB_OCI_OFFLINE")
        .env_remove("HAB_BLDR_URL")
        .env_remove("HAB_DEPOT_URL")
        .env_remove("HAB_AUTH_TOKEN")
        .env_remove("SOURCE_DATE_EPOCH");
}

fn manifest_digest(report: &Path) -> String {
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report).expect("report")).expect("json");
    r["manifest_digest"].as_str().expect("digest").to_owned()
}

fn habitat_argument_list_builds_the_same_image() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let (server, app) = builder_with_closure(t);
    // Habitat's exporter argument list, as `hab pkg export container` passes it on.
    let habitat_args = |out: &str| -> Vec<String> {
        [
            "--multi-layer",
            "--no-supervisor",
            "--url",
            &server.url(),
            "--channel",
            "stable",
            "--image-name",
            "team/{{pkg_name}}",
            "--tag-custom",
            "{{channel}}-{{pkg_version}}",
            "--output",
            out,
            "--report",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    };
    let mut cmd = StdCommand::new(exporter(t));
    env_for(&mut cmd, &t.join("caches-a"));
    let report_a = t.join("a.json");
    cmd.current_dir(t)
        .args(habitat_args(&format!("oci:{}", t.join("a").display())))
        .arg(&report_a)
        .arg(&app);
    let out = run(&mut cmd);
    assert!(out.contains("team/app:stable-"), "{out}");
    let mut cmd = StdCommand::new(assert_cmd::cargo::cargo_bin("hab-oci"));
    env_for(&mut cmd, &t.join("caches-b"));
    let report_b = t.join("b.json");
    cmd.current_dir(t)
        .arg("export")
        .args(habitat_args(&format!("oci:{}", t.join("b").display())))
        .arg(&report_b)
        .arg(&app);
    run(&mut cmd);
    assert_eq!(manifest_digest(&report_a), manifest_digest(&report_b));
    // Both got their packages from Builder, each into its own (empty) artifact cache.
    for c in ["caches-a", "caches-b"] {
        let harts = std::fs::read_dir(t.join(c).join("artifacts"))
            .expect("artifact cache")
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".hart"))
            })
            .count();
        assert_eq!(harts, 4, "{c}");
    }
}

fn registry_types_as_habitat_names_them() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let mut cmd = StdCommand::new(exporter(t));
    env_for(&mut cmd, t);
    let out = cmd
        .args([
            "--registry-type",
            "amazon",
            "--push-image",
            "--no-supervisor",
            "acme/app",
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--registry-type amazon is not supported yet")
            && err.contains("aws ecr get-login-password"),
        "{err}"
    );
    // `azure` is a registry like any other (username/password as given): the export goes
    // as far as resolving (here: nothing to resolve offline).
    let mut cmd = StdCommand::new(exporter(t));
    env_for(&mut cmd, t);
    let out = cmd
        .args([
            "--registry-type",
            "azure",
            "--offline",
            "--no-supervisor",
            "-o",
            "oci:x",
            "acme/app",
        ])
        .current_dir(t)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no package matching acme/app"), "{err}");
}

tests![
    habitat_argument_list_builds_the_same_image,
    registry_types_as_habitat_names_them,
];
