//! The documents' contract: reproducible bytes, every package with its checksum, licenses
//! only as validators take them, MANIFEST problems said as notes.

use super::*;
use hart::{PackageIdent, PackageMetadata, PackageTarget};

fn package(ident: &str, sum: char, deps: &[&str], facts: ManifestFacts) -> ResolvedPackage {
    let parse = |s: &str| PackageIdent::parse_fq(s).expect("ident");
    ResolvedPackage {
        hart: None,
        checksum: sum.to_string().repeat(64),
        metadata: PackageMetadata {
            ident: parse(ident),
            target: PackageTarget::parse("x86_64-linux").expect("target"),
            deps: deps.iter().map(|d| parse(d)).collect(),
            tdeps: deps.iter().map(|d| parse(d)).collect(),
            build_deps: Vec::new(),
            path: Vec::new(),
            binaries: Vec::new(),
            exposes: Vec::new(),
            svc_user: None,
            svc_group: None,
            shutdown_signal: None,
            is_service: false,
            run_script: None,
            has_install_hook: false,
            setuid: Vec::new(),
            entries: 1,
            unpacked_size: 10,
            manifest: facts,
            files: Default::default(),
        },
        height: 0,
        requested: false,
    }
}

fn facts(licenses: &[&str]) -> ManifestFacts {
    ManifestFacts {
        licenses: licenses.iter().map(|l| (*l).to_owned()).collect(),
        maintainer: Some("Maintainers <m@example.org>".into()),
        upstream_url: Some("https://example.org/lib".into()),
        source_url: Some("https://example.org/lib-1.0.tar.gz".into()),
        source_sha256: Some("ab".repeat(32)),
        note: None,
    }
}

fn closure() -> Vec<ResolvedPackage> {
    vec![
        package("core/zlib/1.3/20240101000000", 'a', &[], facts(&["Zlib"])),
        package(
            "core/openssl/3.0/20240101000000",
            'b',
            &["core/zlib/1.3/20240101000000"],
            facts(&["apachev2", "MIT"]),
        ),
        package(
            "acme/app/2.0/20240102000000",
            'c',
            &[
                "core/openssl/3.0/20240101000000",
                "core/zlib/1.3/20240101000000",
            ],
            facts(&["MIT", "OR", "Apache-2.0"]),
        ),
        package(
            "acme/broken/1.0/20240101000000",
            'd',
            &[],
            ManifestFacts {
                note: Some("its MANIFEST is not UTF-8 text: license and source left out".into()),
                ..ManifestFacts::default()
            },
        ),
    ]
}

fn subject() -> SbomSubject {
    SbomSubject {
        name: "registry.example.org:5000/acme/app".into(),
        tags: vec!["2.0".into(), "latest".into()],
        manifest_digest: format!("sha256:{}", "e".repeat(64)),
        platform: Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        },
        created: "2024-01-02T00:00:00Z".into(),
    }
}

fn doc(format: SbomFormat, packages: &[ResolvedPackage]) -> (Sbom, Value) {
    let refs: Vec<&ResolvedPackage> = packages.iter().collect();
    let sbom = document(format, &subject(), &refs, None).expect("document");
    let v = serde_json::from_slice(&sbom.bytes).expect("json");
    (sbom, v)
}

#[test]
fn same_image_same_bytes_whatever_the_order() {
    for format in [SbomFormat::Spdx, SbomFormat::CycloneDx] {
        let packages = closure();
        let (a, _) = doc(format, &packages);
        let (b, _) = doc(format, &packages);
        assert_eq!(a.bytes, b.bytes, "{format:?}");
        let mut reversed = closure();
        reversed.reverse();
        let (c, _) = doc(format, &reversed);
        assert_eq!(a.bytes, c.bytes, "{format:?}: order must not matter");
        assert_eq!(a.digest, oci_image::sha256_digest(&a.bytes));
    }
}

#[test]
fn spdx_lists_every_package_with_its_checksum() {
    let (sbom, v) = doc(SbomFormat::Spdx, &closure());
    assert_eq!(v["spdxVersion"], "SPDX-2.3");
    assert_eq!(v["creationInfo"]["created"], "2024-01-02T00:00:00Z");
    assert_eq!(
        v["documentNamespace"],
        format!(
            "https://spdx.org/spdxdocs/hab-oci/registry.example.org-5000-acme-app-{}",
            "e".repeat(64)
        )
    );
    let packages = v["packages"].as_array().expect("packages");
    assert_eq!(
        packages.len(),
        1 + closure().len(),
        "the image and each package"
    );
    for p in closure() {
        let e = packages
            .iter()
            .find(|e| e["name"] == format!("{}/{}", p.ident().origin, p.ident().name))
            .unwrap_or_else(|| panic!("{} listed", p.ident()));
        assert_eq!(e["checksums"][0]["algorithm"], "BLAKE2b-256");
        assert_eq!(e["checksums"][0]["checksumValue"], p.checksum());
        assert_eq!(e["supplier"], format!("Organization: {}", p.ident().origin));
    }
    let ids: Vec<&str> = packages
        .iter()
        .map(|e| e["SPDXID"].as_str().expect("id"))
        .collect();
    for id in &ids {
        let rest = id.strip_prefix("SPDXRef-").expect("prefix");
        assert!(
            !rest.is_empty()
                && rest
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'),
            "{id}"
        );
    }
    let declared = |name: &str| {
        packages.iter().find(|e| e["name"] == name).expect(name)["licenseDeclared"].clone()
    };
    assert_eq!(declared("core/zlib"), "Zlib");
    assert_eq!(declared("acme/app"), "MIT OR Apache-2.0");
    assert_eq!(declared("core/openssl"), "LicenseRef-apachev2 AND MIT");
    assert_eq!(declared("acme/broken"), "NOASSERTION");
    assert_eq!(
        v["hasExtractedLicensingInfos"][0]["licenseId"],
        "LicenseRef-apachev2"
    );
    let zlib = packages
        .iter()
        .find(|e| e["name"] == "core/zlib")
        .expect("zlib");
    assert_eq!(
        zlib["downloadLocation"],
        "https://example.org/lib-1.0.tar.gz"
    );
    assert!(
        zlib["sourceInfo"]
            .as_str()
            .is_some_and(|s| s.contains(&"ab".repeat(32)))
    );
    let relationships = v["relationships"].as_array().expect("relationships");
    let has = |from: &str, kind: &str, to: &str| {
        relationships.iter().any(|r| {
            r["spdxElementId"] == from
                && r["relationshipType"] == kind
                && r["relatedSpdxElement"] == to
        })
    };
    assert!(has("SPDXRef-DOCUMENT", "DESCRIBES", "SPDXRef-Image"));
    assert!(has(
        "SPDXRef-Package-acme-app-2.0-20240102000000",
        "DEPENDS_ON",
        "SPDXRef-Package-core-zlib-1.3-20240101000000"
    ));
    assert!(has(
        "SPDXRef-Image",
        "CONTAINS",
        "SPDXRef-Package-core-openssl-3.0-20240101000000"
    ));
    assert_eq!(sbom.notes.len(), 1, "{:?}", sbom.notes);
    assert!(sbom.notes[0].starts_with("acme/broken/1.0/20240101000000: its MANIFEST is not UTF-8"));
}

#[test]
fn cyclonedx_lists_every_package_with_its_checksum() {
    let (sbom, v) = doc(SbomFormat::CycloneDx, &closure());
    assert_eq!(v["specVersion"], "1.6");
    assert!(v["metadata"].get("timestamp").is_none());
    let serial = v["serialNumber"].as_str().expect("serial");
    assert_eq!(serial.len(), "urn:uuid:".len() + 36, "{serial}");
    assert_eq!(&serial[9 + 14..9 + 15], "5", "{serial}");
    assert_eq!(v["metadata"]["component"]["type"], "container");
    let components = v["components"].as_array().expect("components");
    assert_eq!(components.len(), closure().len());
    for p in closure() {
        let c = components
            .iter()
            .find(|c| c["bom-ref"] == format!("habitat:{}", p.ident()))
            .unwrap_or_else(|| panic!("{} listed", p.ident()));
        assert_eq!(c["hashes"][0]["alg"], "BLAKE2b-256");
        assert_eq!(c["hashes"][0]["content"], p.checksum());
        assert_eq!(c["supplier"]["name"], p.ident().origin);
    }
    let openssl = components
        .iter()
        .find(|c| c["name"] == "openssl")
        .expect("openssl");
    assert_eq!(openssl["licenses"][0]["license"]["name"], "apachev2");
    assert_eq!(openssl["licenses"][1]["license"]["id"], "MIT");
    let app = components.iter().find(|c| c["name"] == "app").expect("app");
    assert_eq!(app["licenses"][0]["expression"], "MIT OR Apache-2.0");
    assert_eq!(
        app["externalReferences"][1]["hashes"][0]["content"],
        "ab".repeat(32)
    );
    let deps = v["dependencies"].as_array().expect("dependencies");
    assert_eq!(deps[0]["ref"], format!("image:sha256:{}", "e".repeat(64)));
    assert_eq!(
        deps[0]["dependsOn"].as_array().expect("image deps").len(),
        4
    );
    assert_eq!(sbom.notes.len(), 1);
}

#[test]
fn another_digest_another_document_identity() {
    let packages = closure();
    let refs: Vec<&ResolvedPackage> = packages.iter().collect();
    let mut other = subject();
    other.manifest_digest = format!("sha256:{}", "f".repeat(64));
    for format in [SbomFormat::Spdx, SbomFormat::CycloneDx] {
        let a = document(format, &subject(), &refs, None).expect("a");
        let b = document(format, &other, &refs, None).expect("b");
        assert_ne!(a.digest, b.digest);
    }
}

#[test]
fn base_image_is_a_component() {
    let packages = closure();
    let refs: Vec<&ResolvedPackage> = packages.iter().collect();
    let base = BaseComponent {
        reference: "docker.io/library/busybox:1.36".into(),
        digest: format!("sha256:{}", "1".repeat(64)),
    };
    let spdx = document(SbomFormat::Spdx, &subject(), &refs, Some(&base)).expect("spdx");
    let v: Value = serde_json::from_slice(&spdx.bytes).expect("json");
    assert!(v["relationships"].as_array().expect("r").iter().any(|r| {
        r["relationshipType"] == "DESCENDANT_OF" && r["relatedSpdxElement"] == "SPDXRef-BaseImage"
    }));
    let cdx = document(SbomFormat::CycloneDx, &subject(), &refs, Some(&base)).expect("cdx");
    let v: Value = serde_json::from_slice(&cdx.bytes).expect("json");
    assert_eq!(v["components"][0]["name"], "docker.io/library/busybox:1.36");
}

#[test]
fn created_must_be_rfc3339_and_is_normalized_to_utc() {
    let packages = closure();
    let refs: Vec<&ResolvedPackage> = packages.iter().collect();
    let mut s = subject();
    s.created = "2024-01-02T01:00:00.5+01:00".into();
    let (_, v) = {
        let sbom = document(SbomFormat::Spdx, &s, &refs, None).expect("doc");
        let v: Value = serde_json::from_slice(&sbom.bytes).expect("json");
        (sbom, v)
    };
    assert_eq!(v["creationInfo"]["created"], "2024-01-02T00:00:00Z");
    s.created = "yesterday".into();
    assert!(document(SbomFormat::Spdx, &s, &refs, None).is_err());
}

#[test]
fn license_words() {
    let l = |w: &[&str]| licenses(&facts(w));
    assert_eq!(l(&[]), Licenses::None);
    assert_eq!(l(&["MIT"]), Licenses::Expression("MIT".into()));
    assert_eq!(
        l(&["GPL-2.0-or-later", "WITH", "Classpath-exception-2.0"]),
        Licenses::Expression("GPL-2.0-or-later WITH Classpath-exception-2.0".into())
    );
    // Deprecated identifiers and `+` forms are not passed on as SPDX.
    assert_eq!(
        l(&["GPL-2.0+"]),
        Licenses::Each(vec![Err("GPL-2.0+".into())])
    );
    assert_eq!(
        l(&["MIT", "Apache-2.0"]),
        Licenses::Each(vec![Ok("MIT".into()), Ok("Apache-2.0".into())])
    );
}

#[test]
fn several_platforms_get_one_file_each() {
    let linux_arm = Platform {
        os: "linux".into(),
        architecture: "arm64".into(),
        variant: Some("v8".into()),
    };
    assert_eq!(
        output_path(Path::new("out/sbom.json"), Some(&linux_arm)),
        Path::new("out/sbom.linux-arm64-v8.json")
    );
    assert_eq!(output_path(Path::new("sbom"), None), Path::new("sbom"));
}
