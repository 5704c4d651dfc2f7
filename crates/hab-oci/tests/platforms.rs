//! Multi-platform images through the real binary: one image per `--target` (or Docker-style
//! `--platform`), tied by an OCI image index in `oci:` and `oci-archive:` outputs and on
//! push; Docker's formats hold the host's platform. Checked with skopeo, umoci, a real
//! registry and a real Docker daemon (pull and run on this amd64 machine). Then the bad
//! input: a target that lacks packages (listed per target), targets that make no images.

use std::fs;
use std::path::Path;
use std::process::Command as StdCommand;

use serde_json::Value;

mod common;
use common::*;

fn export(tmp: &Path, src: &Path, args: &[&str]) -> Value {
    let report = tmp.join(format!("report-{}.json", args.len()));
    let _ = fs::remove_file(&report);
    hab_oci(tmp)
        .current_dir(tmp)
        .args(["export", "--no-supervisor", "--source"])
        .arg(src)
        .arg("--report")
        .arg(&report)
        .args(args)
        .arg("gen/app")
        .assert()
        .success();
    read_json(&report)
}

fn platforms_of(index: &Value) -> Vec<String> {
    index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| {
            let p = &m["platform"];
            let mut s = format!(
                "{}/{}",
                p["os"].as_str().unwrap_or(""),
                p["architecture"].as_str().unwrap_or("")
            );
            if let Some(v) = p["variant"].as_str() {
                s.push('/');
                s.push_str(v);
            }
            s
        })
        .collect()
}

/// The demonstration: `skopeo inspect --raw` shows the index with both platforms;
/// pushed to the loopback registry, `docker pull` gets the amd64 image and it runs; `umoci
/// unpack` of the arm64 manifest holds the arm64 packages; `--platform` gives the same index
/// as `--target`, and the docker-archive holds the host's image.
fn two_targets_make_one_index() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let src = two_platform_source(t, &["x86_64-linux", "aarch64-linux"]);
    let local = export(
        t,
        &src,
        &[
            "--target",
            "x86_64-linux",
            "--target",
            "aarch64-linux",
            "-o",
            "oci:out",
            "-o",
            "oci-archive:image.tar",
            "-o",
            "docker-archive:docker.tar",
        ],
    );
    let index_digest = local["index_digest"]
        .as_str()
        .expect("index digest")
        .to_owned();
    let raw = run(StdCommand::new("skopeo")
        .args(["inspect", "--raw", "oci:out:latest"])
        .current_dir(t));
    let index: Value = serde_json::from_str(&raw).expect("index json");
    assert_eq!(
        index["mediaType"], "application/vnd.oci.image.index.v1+json",
        "{raw}"
    );
    assert_eq!(
        platforms_of(&index),
        ["linux/arm64/v8", "linux/amd64"],
        "{raw}"
    );
    let raw_archive = run(StdCommand::new("skopeo")
        .args(["inspect", "--raw", "oci-archive:image.tar:latest"])
        .current_dir(t));
    assert_eq!(
        raw, raw_archive,
        "oci: and oci-archive: hold the same index"
    );
    assert_eq!(oci_image::sha256_digest(raw.as_bytes()), index_digest);
    // Each platform's config says its platform; each image holds that target's packages.
    let platforms = local["platforms"].as_array().expect("platforms");
    assert_eq!(platforms.len(), 2);
    for (m, p) in index["manifests"]
        .as_array()
        .expect("m")
        .iter()
        .zip(platforms)
    {
        assert_eq!(m["digest"], p["manifest_digest"]);
    }
    // The docker-archive holds one image: the host's (amd64 here).
    let amd64 = &platforms[1];
    assert_eq!(amd64["platform"], "linux/amd64");
    let docker_config = run(StdCommand::new("skopeo")
        .args(["inspect", "--config", "docker-archive:docker.tar"])
        .current_dir(t));
    let docker_config: Value = serde_json::from_str(&docker_config).expect("config");
    assert_eq!(docker_config["architecture"], "amd64");

    // umoci unpack of the arm64 manifest: a layout whose index names only it.
    let arm = &index["manifests"][0];
    let single = t.join("arm64-layout");
    copy_dir(&t.join("out"), &single);
    let mut entry = arm.clone();
    entry["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "arm64"});
    fs::write(
        single.join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [entry],
        }))
        .expect("json"),
    )
    .expect("index.json");
    let bundle = t.join("bundle");
    run(StdCommand::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:arm64", single.display()))
        .arg(&bundle));
    let rootfs = bundle.join("rootfs");
    for pkg in [APP, BUSYBOX] {
        assert_eq!(
            fs::read_to_string(rootfs.join("hab/pkgs").join(pkg).join("TARGET")).expect("TARGET"),
            "aarch64-linux\n",
            "{pkg}"
        );
    }

    // Pushed with the Docker-style alias: the same index, manifests first, tags on it.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let url = format!("{}/platforms-{}-{nanos}", registry(), std::process::id());
    let pushed = export(
        t,
        &src,
        &[
            "--platform",
            "linux/arm64,linux/amd64",
            "--registry-url",
            &url,
            "--push-image",
        ],
    );
    assert_eq!(pushed["index_digest"].as_str(), Some(index_digest.as_str()));
    // One SBOM per platform manifest, each attached to its own manifest (the loopback
    // registry has no referrers API: through the `sha256-HEX` tag of that manifest).
    let documents = pushed["sbom"]["documents"]
        .as_array()
        .expect("sbom documents");
    assert_eq!(documents.len(), 2, "{}", pushed["sbom"]);
    for (d, p) in documents.iter().zip(platforms) {
        assert_eq!(d["subject"], p["manifest_digest"]);
        let tag = d["attached"]["fallback_tag"]
            .as_str()
            .expect("fallback tag");
        assert_eq!(
            tag,
            p["manifest_digest"]
                .as_str()
                .expect("digest")
                .replace(':', "-")
        );
    }
    let image = format!("{url}/gen/app:latest");
    let remote = run(StdCommand::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{image}"),
    ]));
    assert_eq!(remote, raw, "the registry holds the same index bytes");
    run(StdCommand::new("docker").args(["pull", "-q", &image]));
    let arch = run(StdCommand::new("docker").args([
        "image",
        "inspect",
        "--format",
        "{{.Architecture}}",
        &image,
    ]));
    let said = run(StdCommand::new("docker").args(["run", "--rm", "--network", "none", &image]));
    let _ = StdCommand::new("docker")
        .args(["rmi", "-f", &image])
        .output();
    assert_eq!(arch.trim(), "amd64");
    assert_eq!(said, "hello from gen/app\n");
}

/// A target whose packages are missing: the error lists each target's problem, and no
/// output is written.
fn missing_packages_are_listed_per_target() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let src = two_platform_source(t, &["x86_64-linux"]);
    let out = hab_oci(t)
        .current_dir(t)
        .args(["export", "--no-supervisor", "--source"])
        .arg(&src)
        .args([
            "--target",
            "x86_64-linux,aarch64-linux",
            "-o",
            "oci:out",
            "gen/app",
        ])
        .assert()
        .failure();
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(err.contains("cannot be made for every target"), "{err}");
    assert!(err.contains("aarch64-linux: "), "{err}");
    assert!(err.contains("gen/app"), "{err}");
    assert!(
        !err.contains("x86_64-linux: "),
        "only the failing target: {err}"
    );
    assert!(!t.join("out").exists());
    assert_eq!(temporaries(t), Vec::<String>::new());
}

/// Targets that hab does not know, or that make no container images, are refused before any
/// work, naming the flag.
fn targets_without_images_are_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    for (args, says) in [
        (["--target", "x86_64-plan9"], "not a Habitat target"),
        (["--target", "x86_64-windows"], "makes no container images"),
        (
            ["--platform", "linux/s390x"],
            "linux/amd64 and linux/arm64 only",
        ),
    ] {
        let out = hab_oci(t)
            .current_dir(t)
            .args(["export", "--no-supervisor", "-o", "oci:out"])
            .args(args)
            .arg("gen/app")
            .assert()
            .failure();
        let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(err.contains(args[0]), "{args:?} names the flag: {err}");
    }
    let out = hab_oci(t)
        .current_dir(t)
        .args([
            "export",
            "--no-supervisor",
            "--engine",
            "docker",
            "--target",
            "x86_64-linux,aarch64-linux",
            "gen/app",
        ])
        .assert()
        .failure();
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(err.contains("native engine"), "{err}");
}

/// Each platform's image stands on the base's manifest of its own platform: the arm64
/// image's first layers are the base's arm64 layers, the amd64 image's the amd64 ones.
fn each_platform_stands_on_its_base() {
    use hab_oci_testkit::base_image::{busybox_base, write_oci_layout};
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let src = two_platform_source(t, &["x86_64-linux", "aarch64-linux"]);
    let amd = busybox_base("amd64").expect("fixture");
    let arm = busybox_base("arm64").expect("fixture");
    let base_index = write_oci_layout(&t.join("base"), "multi", &[&amd, &arm]).expect("layout");
    let report = export(
        t,
        &src,
        &[
            "--target",
            "x86_64-linux,aarch64-linux",
            "--base-image",
            "oci:base:multi",
            "-o",
            "oci:out",
        ],
    );
    let platforms = report["platforms"].as_array().expect("platforms");
    for (p, fixture) in platforms.iter().zip([&arm, &amd]) {
        let layers: Vec<&str> = p["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .take(2)
            .map(|l| l["digest"].as_str().expect("digest"))
            .collect();
        assert_eq!(layers, fixture.layer_digests(), "{}", p["platform"]);
    }
    assert_eq!(report["base"][0]["digest"], base_index.as_str());
    assert_eq!(
        report["base"][0]["manifest_digest"],
        arm.manifest_digest.as_str()
    );
    assert_eq!(
        report["base"][1]["manifest_digest"],
        amd.manifest_digest.as_str()
    );
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for e in fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let dst = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            fs::copy(e.path(), &dst).expect("copy");
        }
    }
}

tests![
    two_targets_make_one_index => [
        Need::Docker,
        Need::Registry,
        Need::Tool("skopeo"),
        Need::Tool("umoci"),
        Need::File("/bin/busybox"),
    ],
    missing_packages_are_listed_per_target => [Need::File("/bin/busybox")],
    each_platform_stands_on_its_base => [Need::File("/bin/busybox")],
    targets_without_images_are_refused,
];
