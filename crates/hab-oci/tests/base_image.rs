//! Base images (`--base-image`) read from the real tools' output: testkit's busybox base
//! pushed by skopeo to the loopback registry as a two-platform index (the platform manifest
//! chosen per target, the index digest kept, each layer fetched and checked into a blob
//! dir, `/etc/passwd` read back), and a docker-archive written by skopeo. The building
//! blocks only; the export's use of them is tested with the export.

use std::path::Path;

use hab_oci_testkit::base_image::{
    PASSWD, busybox_base, skopeo_docker_archive, skopeo_push, write_oci_layout,
};
use oci_image::Platform;
use oci_image::base::{BaseImage, BaseSpec, BlobDir, LocalBase, base_files};
use oci_registry::{Credentials, PlatformRead, RegistryOptions, fetch_blob, read_platform_image};

mod common;
use common::*;

fn platform(arch: &str) -> Platform {
    Platform {
        os: "linux".into(),
        architecture: arch.into(),
        variant: (arch == "arm64").then(|| "v8".into()),
    }
}

/// A repository name no other test run uses.
fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("hab-oci-test/{name}-{}-{nanos}", std::process::id())
}

fn two_platform_layout(dir: &Path) -> (String, String, String) {
    let amd = busybox_base("amd64").expect("fixture");
    let arm = busybox_base("arm64").expect("fixture");
    let index = write_oci_layout(dir, "multi", &[&amd, &arm]).expect("layout");
    (index, amd.manifest_digest, arm.manifest_digest)
}

fn a_registry_base_gives_each_platform_its_manifest_and_checked_layers() {
    let tmp = tempfile::tempdir().expect("tmp");
    let layout = tmp.path().join("layout");
    let (index, amd, arm) = two_platform_layout(&layout);
    let reference = format!("{}/{}:multi", registry(), unique("base"));
    skopeo_push(&layout, "multi", &reference).expect("skopeo push");

    let opts = RegistryOptions::default();
    let blobs = BlobDir::new(tmp.path().join("cache"));
    for (arch, manifest) in [("amd64", &amd), ("arm64", &arm)] {
        let p = platform(arch);
        let PlatformRead::Found(d) =
            read_platform_image(&reference, &p, &Credentials::Anonymous, &opts).expect("read")
        else {
            panic!("{arch}: not found");
        };
        assert_eq!(d.index_digest.as_deref(), Some(index.as_str()));
        assert_eq!(&d.manifest_digest, manifest);
        let mut image =
            BaseImage::from_documents(&reference, d.index_digest, d.manifest, d.config, &p)
                .expect("base");
        for l in &image.layers {
            if blobs.contains(&l.digest) {
                continue;
            }
            let mut w = blobs.writer().expect("writer");
            fetch_blob(
                &reference,
                &l.digest,
                l.size,
                &mut w,
                &Credentials::Anonymous,
                &opts,
            )
            .expect("fetch");
            w.commit(&l.digest).expect("commit");
        }
        image.blobs = Some(blobs.clone());
        let files = base_files(&image).expect("files");
        assert_eq!(files.passwd.as_deref(), Some(PASSWD));
        assert!(files.paths.contains("bin/sh") && !files.paths.contains("etc/motd"));
    }
    match read_platform_image(
        &reference,
        &platform("s390x"),
        &Credentials::Anonymous,
        &opts,
    )
    .expect("read")
    {
        PlatformRead::NoPlatform(available) => {
            assert_eq!(available, [platform("amd64"), platform("arm64")])
        }
        other => panic!("{other:?}"),
    }
    let missing = format!("{}/{}:1", registry(), unique("nothing"));
    assert!(matches!(
        read_platform_image(&missing, &platform("amd64"), &Credentials::Anonymous, &opts)
            .expect("read"),
        PlatformRead::NoImage
    ));
}

fn a_docker_archive_written_by_skopeo_is_a_base() {
    let tmp = tempfile::tempdir().expect("tmp");
    let layout = tmp.path().join("layout");
    let amd = busybox_base("amd64").expect("fixture");
    write_oci_layout(&layout, "1", &[&amd]).expect("layout");
    let file = tmp.path().join("base.tar");
    skopeo_docker_archive(&layout, "1", &file, "base:1").expect("skopeo");
    let spec = BaseSpec::parse(&format!("docker-archive:{}", file.display())).expect("spec");
    let base = LocalBase::open(&spec, &BlobDir::new(tmp.path().join("cache"))).expect("open");
    let image = base.image(&platform("amd64")).expect("image");
    assert_eq!(image.config.diff_ids.len(), 2);
    for (l, t) in image.layers.iter().zip(&amd.tars) {
        assert_eq!(l.diff_id, hab_oci_testkit::registry::sha256_digest(t));
    }
    let files = base_files(&image).expect("files");
    assert_eq!(files.passwd.as_deref(), Some(PASSWD));
    assert!(files.paths.contains("var/old/b") && !files.paths.contains("var/old/a"));
}

/// A source with `gen/app`, a service whose `run` is a shell script: the shell is the base's.
fn app_source(tmp: &Path) -> std::path::PathBuf {
    let src = tmp.join("src");
    if src.exists() {
        return src;
    }
    let key = hart::SecretKey::generate("gen").expect("key");
    key.write_pair(&src.join("keys")).expect("keys");
    pack_simple(
        tmp,
        &key,
        &src.join("artifacts"),
        "gen/app/1.0.0/20240101000000",
        &[
            (
                "run",
                "#!/bin/sh\necho \"hello on $(cat /etc/motd 2>/dev/null || echo a base)\"\n",
                0o755,
            ),
            ("SVC_USER", "hab\n", 0o644),
            ("SVC_GROUP", "hab\n", 0o644),
        ],
    );
    src
}

fn export_on(tmp: &Path, base: &str, args: &[&str]) -> serde_json::Value {
    let report = tmp.join("report.json");
    let _ = std::fs::remove_file(&report);
    hab_oci(tmp)
        .current_dir(tmp)
        .args(["export", "--no-supervisor", "--sbom", "none", "--source"])
        .arg(app_source(tmp))
        .args(["--base-image", base, "--report"])
        .arg(&report)
        .args(args)
        .arg("gen/app")
        .assert()
        .success();
    read_json(&report)
}

fn docker(args: &[&str]) -> String {
    run(std::process::Command::new("docker").args(args))
}

/// The demonstration, local: an image on testkit's busybox base (its own shell and
/// /etc/passwd) whose shell works, whose /etc/passwd has the base's users and Habitat's
/// `hab`, whose first layers are the base's (same digests), labelled with the base.
fn an_image_on_a_base_keeps_its_shell_and_users() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let base = busybox_base("amd64").expect("fixture");
    write_oci_layout(&t.join("base"), "1.0", &[&base]).expect("layout");
    let image = format!("hab-oci-test/on-base-{}", std::process::id());
    let report = export_on(
        t,
        "oci:base:1.0",
        &[
            "--image-name",
            &image,
            "--no-tag-version",
            "--no-tag-version-release",
            "-o",
            "docker-archive:img.tar",
        ],
    );
    let layers = layer_digests(&report);
    assert_eq!(
        layers[..2],
        base.layer_digests()[..],
        "the base's layers first, unchanged"
    );
    assert_eq!(report["layers"][0]["source"], "base");
    assert_eq!(
        report["base"][0]["manifest_digest"],
        base.manifest_digest.as_str()
    );
    docker(&["load", "-i", &t.join("img.tar").display().to_string()]);
    let tag = format!("{image}:latest");
    let said = docker(&["run", "--rm", "--network", "none", &tag]);
    let passwd = docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "/bin/sh",
        &tag,
        "-c",
        "cat /etc/passwd; echo; ls /bin/busybox",
    ]);
    let labels = docker(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.Labels}}",
        &tag,
    ]);
    let _ = std::process::Command::new("docker")
        .args(["rmi", "-f", &tag])
        .output();
    // The base's second layer deleted /etc/motd: the script falls back.
    assert_eq!(said, "hello on a base\n");
    assert!(
        passwd.starts_with(PASSWD),
        "the base's users first, as the base has them: {passwd}"
    );
    assert!(passwd.lines().any(|l| l.starts_with("hab:x:")), "{passwd}");
    assert!(passwd.contains("/bin/busybox"), "{passwd}");
    assert!(
        labels.contains("org.opencontainers.image.base.name"),
        "{labels}"
    );
    assert!(labels.contains(&base.manifest_digest), "{labels}");
}

/// Pushed to the registry its base is in: the base's layers are mounted, none of their
/// bytes uploaded (the push's byte count is exactly our blobs'), and the pulled image runs.
fn a_push_to_the_bases_registry_sends_none_of_its_bytes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let layout = t.join("layout");
    let (_, amd, _) = two_platform_layout(&layout);
    let base_ref = format!("{}/{}:multi", registry(), unique("base"));
    skopeo_push(&layout, "multi", &base_ref).expect("skopeo push");
    let url = format!("{}/{}", registry(), unique("pushed"));
    let report = export_on(t, &base_ref, &["--registry-url", &url, "--push-image"]);
    assert_eq!(report["base"][0]["manifest_digest"], amd.as_str());
    let base_layers: Vec<&serde_json::Value> = report["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .filter(|l| l["source"] == "base")
        .collect();
    assert_eq!(base_layers.len(), 2);
    let image = format!("{url}/gen/app:latest");
    let manifest: serde_json::Value =
        serde_json::from_str(&run(std::process::Command::new("skopeo").args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{image}"),
        ])))
        .expect("manifest");
    let ours: u64 = report["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .filter(|l| l["source"] != "base")
        .map(|l| l["size"].as_u64().expect("size"))
        .sum::<u64>()
        + manifest["config"]["size"].as_u64().expect("config size");
    let push = &report["push"];
    assert_eq!(push["bytes_uploaded"].as_u64(), Some(ours), "{push}");
    assert_eq!(push["blobs_mounted"].as_u64(), Some(2), "{push}");
    docker(&["pull", "-q", &image]);
    let said = docker(&["run", "--rm", "--network", "none", &image]);
    let _ = std::process::Command::new("docker")
        .args(["rmi", "-f", &image])
        .output();
    assert_eq!(said, "hello on a base\n");
}

/// Bad bases fail before any output is written, naming the base and the problem.
fn bad_bases_are_refused_before_any_output() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let arm = busybox_base("arm64").expect("fixture");
    write_oci_layout(&t.join("arm-only"), "1", &[&arm]).expect("layout");
    let amd = busybox_base("amd64").expect("fixture");
    write_oci_layout(&t.join("broken"), "1", &[&amd]).expect("layout");
    let blob = t
        .join("broken/blobs/sha256")
        .join(amd.layer_digests()[0].trim_start_matches("sha256:"));
    std::fs::write(&blob, b"not the layer").expect("corrupt");
    let missing = format!("{}/{}:1", registry(), unique("missing"));
    for (base, says) in [
        ("oci:nowhere:1", "nowhere"),
        (missing.as_str(), "no such image"),
        ("oci:arm-only:1", "linux/arm64"),
        ("oci:broken:1", amd.layer_digests()[0].as_str()),
    ] {
        let out = hab_oci(t)
            .current_dir(t)
            .args(["export", "--no-supervisor", "--source"])
            .arg(app_source(t))
            .args(["--base-image", base, "-o", "oci:out", "gen/app"])
            .assert()
            .failure();
        let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
        assert!(err.contains(says), "{base}: {err}");
        assert!(!t.join("out").exists(), "{base}: no output");
    }
}

tests![
    a_registry_base_gives_each_platform_its_manifest_and_checked_layers =>
        [Need::Registry, Need::Tool("skopeo")],
    a_docker_archive_written_by_skopeo_is_a_base => [Need::Tool("skopeo")],
    an_image_on_a_base_keeps_its_shell_and_users => [Need::Docker, Need::File("/bin/busybox")],
    a_push_to_the_bases_registry_sends_none_of_its_bytes =>
        [Need::Docker, Need::Registry, Need::Tool("skopeo"), Need::File("/bin/busybox")],
    bad_bases_are_refused_before_any_output => [Need::Registry, Need::File("/bin/busybox")],
];
