//! Reading a base image from a registry (the in-process fake of `hab_oci_testkit::registry`
//! holding testkit's busybox base): the platform manifest chosen from an index, with the
//! index digest; the platforms listed when none matches; media types we cannot read; and
//! layer blobs streamed and checked against their digests.

use hab_oci_testkit::base_image::{BaseFixture, busybox_base};
use hab_oci_testkit::registry::{FakeRegistry, sha256_digest};
use oci_image::Platform;
use oci_image::base::{BaseImage, BlobDir};
use oci_registry::{
    Credentials, PlatformRead, RegistryError, RegistryOptions, fetch_blob, read_platform_image,
};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn platform(arch: &str, variant: Option<&str>) -> Platform {
    Platform {
        os: "linux".into(),
        architecture: arch.into(),
        variant: variant.map(str::to_owned),
    }
}

fn upload(reg: &FakeRegistry, repo: &str, f: &BaseFixture) {
    for l in &f.layers {
        reg.add_blob(repo, l);
    }
    reg.add_blob(repo, &f.config);
    reg.put_manifest(repo, &f.architecture, OCI_MANIFEST, &f.manifest);
}

/// `base:multi` an index over amd64 and arm64/v8; returns the index digest.
fn two_platforms(reg: &FakeRegistry, amd: &BaseFixture, arm: &BaseFixture) -> String {
    upload(reg, "base", amd);
    upload(reg, "base", arm);
    let manifests: Vec<serde_json::Value> = [amd, arm]
        .iter()
        .map(|f| {
            let mut platform = serde_json::json!({"os": "linux", "architecture": f.architecture});
            if let Some(v) = &f.variant {
                platform["variant"] = v.as_str().into();
            }
            serde_json::json!({
                "mediaType": OCI_MANIFEST,
                "digest": f.manifest_digest,
                "size": f.manifest.len(),
                "platform": platform,
            })
        })
        .collect();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests,
    }))
    .expect("json");
    reg.put_manifest("base", "multi", OCI_INDEX, &index)
}

fn read(reference: &str, p: &Platform) -> PlatformRead {
    read_platform_image(
        reference,
        p,
        &Credentials::Anonymous,
        &RegistryOptions::default(),
    )
    .expect("read")
}

#[test]
fn the_platform_manifest_of_an_index_and_the_index_digest() {
    let reg = FakeRegistry::start().expect("registry");
    let amd = busybox_base("amd64").expect("fixture");
    let arm = busybox_base("arm64").expect("fixture");
    let index = two_platforms(&reg, &amd, &arm);
    let reference = reg.repository("base:multi");
    for (p, f) in [
        (platform("amd64", None), &amd),
        (platform("arm64", Some("v8")), &arm),
        (platform("arm64", None), &arm),
    ] {
        let PlatformRead::Found(d) = read(&reference, &p) else {
            panic!("{p}: not found");
        };
        assert_eq!(d.index_digest.as_deref(), Some(index.as_str()));
        assert_eq!(d.manifest_digest, f.manifest_digest);
        assert_eq!(d.config, f.config);
        // What oci-image makes of the documents is the same base as from a layout.
        let image = BaseImage::from_documents(&reference, d.index_digest, d.manifest, d.config, &p)
            .expect("base");
        assert_eq!(image.layers.len(), 2);
        assert_eq!(image.layers[1].digest, f.layer_digests()[1]);
    }
    match read(&reference, &platform("s390x", None)) {
        PlatformRead::NoPlatform(available) => assert_eq!(
            available,
            [platform("amd64", None), platform("arm64", Some("v8"))]
        ),
        other => panic!("{other:?}"),
    }
    // By digest, and a single-platform manifest by tag (no index).
    let PlatformRead::Found(d) = read(
        &reg.repository(&format!("base@{index}")),
        &platform("amd64", None),
    ) else {
        panic!("by digest");
    };
    assert_eq!(d.manifest_digest, amd.manifest_digest);
    let PlatformRead::Found(d) = read(&reg.repository("base:amd64"), &platform("amd64", None))
    else {
        panic!("by tag");
    };
    assert_eq!(d.index_digest, None);
}

#[test]
fn a_missing_image_and_an_unreadable_manifest() {
    let reg = FakeRegistry::start().expect("registry");
    assert!(matches!(
        read(&reg.repository("nothing:1"), &platform("amd64", None)),
        PlatformRead::NoImage
    ));
    let schema1 = br#"{"schemaVersion":1,"name":"old","tag":"1","fsLayers":[]}"#;
    reg.put_manifest(
        "old",
        "1",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        schema1,
    );
    match read(&reg.repository("old:1"), &platform("amd64", None)) {
        PlatformRead::Unsupported { media_type } => {
            assert!(media_type.contains("schemaVersion 1"), "{media_type}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_blob_is_streamed_and_checked_against_its_digest() {
    let reg = FakeRegistry::start().expect("registry");
    let amd = busybox_base("amd64").expect("fixture");
    upload(&reg, "base", &amd);
    let reference = reg.repository("base:amd64");
    let dir = tempfile::tempdir().expect("tmp");
    let blobs = BlobDir::new(dir.path());
    let layer = &amd.layers[0];
    let digest = sha256_digest(layer);
    let opts = RegistryOptions::default();

    let mut w = blobs.writer().expect("writer");
    let n = fetch_blob(
        &reference,
        &digest,
        layer.len() as u64,
        &mut w,
        &Credentials::Anonymous,
        &opts,
    )
    .expect("fetch");
    assert_eq!(n, layer.len() as u64);
    let path = w.commit(&digest).expect("commit");
    assert_eq!(std::fs::read(path).expect("blob"), *layer);

    // A registry serving other bytes under the digest.
    let other = sha256_digest(&amd.layers[1]);
    reg.put_damaged_blob("base", &other, &amd.layers[0]);
    let mut w = blobs.writer().expect("writer");
    let e = fetch_blob(
        &reference,
        &other,
        amd.layers[0].len() as u64,
        &mut w,
        &Credentials::Anonymous,
        &opts,
    )
    .expect_err("damaged");
    match &e {
        RegistryError::Digest {
            expected, actual, ..
        } => {
            assert_eq!(expected, &other);
            assert_eq!(actual, &digest);
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("base"), "{e}");
    assert!(w.commit(&other).is_err(), "the writer names nothing");
    assert!(!blobs.contains(&other));

    // The size announced is wrong: too many bytes are refused as they arrive.
    let mut sink = Vec::new();
    let e = fetch_blob(
        &reference,
        &digest,
        10,
        &mut sink,
        &Credentials::Anonymous,
        &opts,
    )
    .expect_err("too long");
    assert!(matches!(e, RegistryError::Digest { .. }), "{e:?}");

    // A blob the registry does not have.
    let missing = format!("sha256:{}", "1".repeat(64));
    let e = fetch_blob(
        &reference,
        &missing,
        1,
        &mut sink,
        &Credentials::Anonymous,
        &opts,
    )
    .expect_err("missing");
    assert!(e.to_string().contains("no such blob"), "{e}");
}
