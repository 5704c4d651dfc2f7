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

tests![
    a_registry_base_gives_each_platform_its_manifest_and_checked_layers =>
        [Need::Registry, Need::Tool("skopeo")],
    a_docker_archive_written_by_skopeo_is_a_base => [Need::Tool("skopeo")],
];
