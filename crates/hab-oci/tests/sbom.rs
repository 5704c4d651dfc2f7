//! SBOMs through the real binary: `--sbom spdx|cyclonedx` with `--sbom-output` on a
//! generated closure, checked by the real validators (`pyspdxtools` of spdx-tools, the
//! CycloneDX 1.6 strict JSON schema validator of cyclonedx-python-lib), listing every
//! package of the image with its checksum, byte-identical across runs; then pushed to the
//! loopback registry (distribution 2.x: no referrers API) and found again through the
//! `sha256-HEX` referrers tag with plain HTTP.

use std::fs;
use std::path::Path;
use std::process::Command as StdCommand;

use serde_json::Value;

mod common;
use common::*;

fn closure(dir: &Path) -> hab_oci_testkit::Closure {
    let spec = hab_oci_testkit::ClosureSpec {
        packages: 8,
        total_size: 200 * 1024,
        block_size: 64 * 1024,
        ..Default::default()
    };
    hab_oci_testkit::generate(&spec, dir, None).expect("generate")
}

/// Exports `gen/app` with `args`; returns the report.
fn export(tmp: &Path, src: &Path, name: &str, args: &[&str]) -> Value {
    let report = tmp.join(format!("{name}.report.json"));
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

/// Every package of the report's layers: (ident, checksum).
fn packages(report: &Value) -> Vec<(String, String)> {
    let mut all = Vec::new();
    for l in report["layers"].as_array().expect("layers") {
        let idents = l["packages"].as_array().expect("packages");
        let sums = l["checksums"].as_array().expect("checksums");
        for (i, s) in idents.iter().zip(sums) {
            all.push((
                i.as_str().expect("ident").to_owned(),
                s.as_str().expect("sum").to_owned(),
            ));
        }
    }
    assert!(all.len() >= 8, "{all:?}");
    all
}

fn validate_spdx(file: &Path) {
    let out = StdCommand::new("pyspdxtools")
        .arg("-i")
        .arg(file)
        .output()
        .expect("pyspdxtools");
    assert!(
        out.status.success(),
        "pyspdxtools rejects {}:\n{}{}",
        file.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn validate_cyclonedx(file: &Path) {
    let script = "import sys\n\
        from cyclonedx.validation.json import JsonStrictValidator\n\
        from cyclonedx.schema import SchemaVersion\n\
        e = JsonStrictValidator(SchemaVersion.V1_6).validate_str(open(sys.argv[1]).read())\n\
        sys.exit(0 if e is None else 'invalid: %s' % (e,))\n";
    let out = StdCommand::new("python3")
        .args(["-c", script])
        .arg(file)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "the CycloneDX validator rejects {}:\n{}{}",
        file.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The SPDX document lists `ident` with its hart's BLAKE2b-256.
fn spdx_lists(doc: &Value, ident: &str, sum: &str) -> bool {
    doc["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .any(|p| {
            p["externalRefs"].as_array().is_some_and(|refs| {
                refs.iter().any(|r| {
                    r["referenceType"] == "habitat-ident"
                        && r["referenceLocator"]
                            .as_str()
                            .is_some_and(|l| l.starts_with(&format!("{ident}/")))
                })
            }) && p["checksums"][0]["algorithm"] == "BLAKE2b-256"
                && p["checksums"][0]["checksumValue"] == sum
        })
}

fn cyclonedx_lists(doc: &Value, ident: &str, sum: &str) -> bool {
    doc["components"]
        .as_array()
        .expect("components")
        .iter()
        .any(|c| {
            c["bom-ref"] == format!("habitat:{ident}")
                && c["hashes"][0]["alg"] == "BLAKE2b-256"
                && c["hashes"][0]["content"] == sum
        })
}

/// Both formats, validated, complete and reproducible; licenses and sources from the
/// packages' MANIFESTs.
fn documents_validate_and_list_every_package() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let c = closure(&t.join("src"));
    let src = c.dir.clone();
    let spdx = export(
        t,
        &src,
        "spdx",
        &["-o", "oci:img", "--sbom-output", "sbom.spdx.json"],
    );
    let manifest_digest = spdx["manifest_digest"].as_str().expect("digest").to_owned();
    let file = t.join("sbom.spdx.json");
    validate_spdx(&file);
    let doc = read_json(&file);
    for (ident, sum) in packages(&spdx) {
        assert!(
            spdx_lists(&doc, &ident, &sum),
            "{ident} {sum} not in the SPDX"
        );
    }
    assert!(
        doc["documentNamespace"]
            .as_str()
            .is_some_and(|n| n.ends_with(manifest_digest.trim_start_matches("sha256:"))),
        "{}",
        doc["documentNamespace"]
    );
    // testkit's MANIFESTs: SPDX identifiers and one name that is none (`apachev2`).
    let declared: Vec<&str> = doc["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter_map(|p| p["licenseDeclared"].as_str())
        .collect();
    assert!(declared.iter().any(|l| l.contains("MIT")), "{declared:?}");
    assert!(
        doc["packages"]
            .as_array()
            .expect("packages")
            .iter()
            .any(|p| p["downloadLocation"]
                .as_str()
                .is_some_and(|d| d.starts_with("https://example.org/"))),
        "source URLs from the MANIFESTs"
    );
    let entry = &spdx["sbom"];
    assert_eq!(entry["format"], "spdx");
    assert_eq!(entry["documents"][0]["subject"], manifest_digest.as_str());
    let bytes = fs::read(&file).expect("sbom");
    assert_eq!(
        entry["documents"][0]["digest"],
        format!("sha256:{}", sha256_hex(&bytes))
    );

    // The same image again (warm cache, another output): the same bytes.
    export(
        t,
        &src,
        "again",
        &["-o", "oci:img2", "--sbom-output", "again.spdx.json"],
    );
    assert_eq!(
        fs::read(t.join("again.spdx.json")).expect("again"),
        bytes,
        "same image, same SBOM bytes"
    );

    let cdx = export(
        t,
        &src,
        "cdx",
        &[
            "-o",
            "oci:img3",
            "--sbom",
            "cyclonedx",
            "--sbom-output",
            "sbom.cdx.json",
        ],
    );
    let file = t.join("sbom.cdx.json");
    validate_cyclonedx(&file);
    let doc = read_json(&file);
    for (ident, sum) in packages(&cdx) {
        assert!(
            cyclonedx_lists(&doc, &ident, &sum),
            "{ident} {sum} not in the CycloneDX"
        );
    }
    assert_eq!(doc["metadata"]["component"]["type"], "container");
    assert_eq!(
        doc["metadata"]["component"]["version"],
        cdx["manifest_digest"]
    );

    // --sbom none: no document, no report entry.
    let none = export(t, &src, "none", &["-o", "oci:img4", "--sbom", "none"]);
    assert!(none.get("sbom").is_none(), "{none}");
}

fn sha256_hex(bytes: &[u8]) -> String {
    oci_image::sha256_digest(bytes)
        .trim_start_matches("sha256:")
        .to_owned()
}

fn curl(url: &str, accept: &str) -> Vec<u8> {
    let out = StdCommand::new("curl")
        .args(["-fsS", "-H", &format!("Accept: {accept}"), url])
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "GET {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Pushed: the SBOM is attached to the image manifest, listed under the referrers tag (the
/// loopback registry has no referrers API), and its blob is the file's bytes.
fn pushed_sbom_is_found_through_the_referrers_tag() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let c = closure(&t.join("src"));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let prefix = format!("sbom-{}-{nanos}", std::process::id());
    let url = format!("{}/{prefix}", registry());
    let report = export(
        t,
        &c.dir,
        "push",
        &[
            "--registry-url",
            &url,
            "--push-image",
            "--sbom-output",
            "pushed.spdx.json",
        ],
    );
    let file = t.join("pushed.spdx.json");
    validate_spdx(&file);
    let subject = report["manifest_digest"].as_str().expect("digest");
    let attached = &report["sbom"]["documents"][0]["attached"];
    let tag = format!("sha256-{}", subject.trim_start_matches("sha256:"));
    assert_eq!(attached["referrers_api"], false, "{attached}");
    assert_eq!(attached["fallback_tag"], tag.as_str(), "{attached}");

    let base = format!("http://{}/v2/{prefix}/gen/app", registry());
    let index: Value = serde_json::from_slice(&curl(
        &format!("{base}/manifests/{tag}"),
        "application/vnd.oci.image.index.v1+json",
    ))
    .expect("index");
    let entry = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .find(|m| m["artifactType"] == "application/spdx+json")
        .unwrap_or_else(|| panic!("no SPDX referrer in {index}"))
        .clone();
    assert_eq!(entry["digest"], attached["manifest_digest"]);
    let manifest: Value = serde_json::from_slice(&curl(
        &format!("{base}/manifests/{}", entry["digest"].as_str().expect("d")),
        "application/vnd.oci.image.manifest.v1+json",
    ))
    .expect("manifest");
    assert_eq!(manifest["subject"]["digest"], subject);
    assert_eq!(manifest["artifactType"], "application/spdx+json");
    let layer = manifest["layers"][0]["digest"].as_str().expect("layer");
    let blob = curl(&format!("{base}/blobs/{layer}"), "*/*");
    assert_eq!(
        blob,
        fs::read(&file).expect("file"),
        "the pushed SBOM is the file"
    );

    // Pushed again: the same referrer, still listed once.
    let again = export(
        t,
        &c.dir,
        "push-again",
        &[
            "--registry-url",
            &url,
            "--push-image",
            "--sbom-output",
            "again.spdx.json",
        ],
    );
    assert_eq!(
        again["sbom"]["documents"][0]["attached"]["manifest_digest"],
        attached["manifest_digest"]
    );
    let index: Value = serde_json::from_slice(&curl(
        &format!("{base}/manifests/{tag}"),
        "application/vnd.oci.image.index.v1+json",
    ))
    .expect("index");
    assert_eq!(
        index["manifests"].as_array().expect("m").len(),
        1,
        "{index}"
    );

    // A fresh runner (empty caches): the pushed image is its cache source, so its packages
    // come from the layers' records, not decoded; the SBOM is the same bytes all the same
    // (the records carry the MANIFEST facts), and the referrer stays the one.
    let fresh = t.join("fresh");
    fs::create_dir_all(&fresh).expect("mkdir");
    let third = export(
        &fresh,
        &c.dir,
        "fresh",
        &["--registry-url", &url, "--push-image"],
    );
    let sources: Vec<&Value> = third["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| &l["source"])
        .collect();
    assert!(
        sources.iter().filter(|s| **s == "registry").count() >= 8,
        "the packages came from the cache source: {sources:?}"
    );
    assert_eq!(
        third["sbom"]["documents"][0]["digest"], again["sbom"]["documents"][0]["digest"],
        "the same SBOM bytes"
    );
    assert_eq!(
        third["sbom"]["documents"][0]["attached"]["manifest_digest"],
        attached["manifest_digest"]
    );
}

tests![
    documents_validate_and_list_every_package => [
        Need::Tool("python3"),
        Need::Python("spdx_tools"),
        Need::Python("cyclonedx"),
    ],
    pushed_sbom_is_found_through_the_referrers_tag => [
        Need::Registry,
        Need::Python("spdx_tools"),
    ],
];
