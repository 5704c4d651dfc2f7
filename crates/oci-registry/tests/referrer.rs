//! Attaching an artifact as an OCI 1.1 referrer against testkit's fake registry, which (like
//! distribution 2.x) has no referrers API: the `sha256-HEX` fallback tag's index.

use std::collections::BTreeMap;

use hab_oci_testkit::registry::FakeRegistry;
use oci_registry::{AttachRequest, Credentials, Descriptor, RegistryOptions, attach};

fn request(addr: &str, blob: &[u8]) -> AttachRequest {
    AttachRequest {
        repository: format!("{addr}/team/app"),
        subject: Descriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: format!("sha256:{}", "ab".repeat(32)),
            size: 1234,
        },
        artifact_type: "application/spdx+json".into(),
        blob: blob.to_vec(),
        annotations: BTreeMap::from([(
            "org.opencontainers.image.created".to_owned(),
            "2024-01-01T00:00:00Z".to_owned(),
        )]),
    }
}

fn index(reg: &FakeRegistry, tag: &str) -> serde_json::Value {
    serde_json::from_slice(&reg.manifest("team/app", tag).expect("referrers index")).expect("json")
}

#[test]
fn attaches_through_the_fallback_tag_once() {
    let reg = FakeRegistry::start().expect("registry");
    let opts = RegistryOptions::default();
    let req = request(&reg.addr(), b"{\"spdxVersion\":\"SPDX-2.3\"}\n");
    let stats = attach(&req, &Credentials::Anonymous, &opts).expect("attach");
    let tag = format!("sha256-{}", "ab".repeat(32));
    assert!(!stats.referrers_api);
    assert_eq!(stats.fallback_tag.as_deref(), Some(tag.as_str()));
    assert_eq!(stats.blobs_uploaded, 2, "the empty config and the SBOM");

    let manifest: serde_json::Value = serde_json::from_slice(
        &reg.manifest("team/app", &stats.manifest_digest)
            .expect("referrer manifest"),
    )
    .expect("json");
    assert_eq!(manifest["artifactType"], "application/spdx+json");
    assert_eq!(manifest["subject"]["digest"], req.subject.digest);
    assert_eq!(
        manifest["config"]["digest"],
        "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    );
    let layer = manifest["layers"][0]["digest"].as_str().expect("layer");
    assert_eq!(reg.blob(layer).expect("blob"), req.blob);

    let listed = index(&reg, &tag);
    assert_eq!(
        listed["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(listed["manifests"].as_array().expect("manifests").len(), 1);
    assert_eq!(listed["manifests"][0]["digest"], stats.manifest_digest);
    assert_eq!(
        listed["manifests"][0]["artifactType"],
        "application/spdx+json"
    );

    // The same artifact again: same referrer, the index is not written again.
    let puts = reg.count("PUT", &format!("/manifests/{tag}"));
    let again = attach(&req, &Credentials::Anonymous, &opts).expect("attach again");
    assert_eq!(again.manifest_digest, stats.manifest_digest);
    assert_eq!(again.blobs_uploaded, 0);
    assert_eq!(reg.count("PUT", &format!("/manifests/{tag}")), puts);

    // Another artifact for the same subject joins the index.
    let other = request(&reg.addr(), b"{\"bomFormat\":\"CycloneDX\"}\n");
    let third = attach(&other, &Credentials::Anonymous, &opts).expect("attach other");
    assert_ne!(third.manifest_digest, stats.manifest_digest);
    let listed = index(&reg, &tag);
    let digests: Vec<&str> = listed["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| m["digest"].as_str().expect("digest"))
        .collect();
    assert_eq!(
        digests,
        [
            stats.manifest_digest.as_str(),
            third.manifest_digest.as_str()
        ]
    );
}
