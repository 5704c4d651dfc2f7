//! Cache sources read from manifests built the way the native engine builds them, then
//! damaged one way at a time.

use std::collections::BTreeMap;

use depot::ResolvedPackage;
use hart::{PackageIdent, PackageMetadata, PackageTarget};
use oci_image::image::build_image;
use oci_image::{ImageConfigSpec, LayerDescriptor};

use super::*;
use crate::layers::annotations;

fn package(ident: &str, sum: char) -> ResolvedPackage {
    let ident = PackageIdent::parse_fq(ident).expect("ident");
    ResolvedPackage {
        hart: None,
        checksum: sum.to_string().repeat(64),
        metadata: PackageMetadata {
            ident,
            target: PackageTarget::parse("x86_64-linux").expect("target"),
            deps: Vec::new(),
            tdeps: Vec::new(),
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
            manifest: Default::default(),
            files: BTreeMap::new(),
        },
        height: 0,
        requested: false,
    }
}

fn digests(n: u8) -> LayerDigests {
    LayerDigests {
        diff_id: format!("sha256:{}", format!("{n:02x}").repeat(32)),
        digest: format!("sha256:{}", format!("{:02x}", n + 100).repeat(32)),
        size: 1000 + u64::from(n),
        media_type: Compression::Gzip.media_type(),
    }
}

/// Two package layers (the second holding two packages) and the extras layer.
fn descriptors() -> Vec<LayerDescriptor> {
    let a = package("acme/a/1.0.0/20240101000000", 'a');
    let b = package("acme/b/1.0.0/20240101000000", 'b');
    let c = package("acme/c/1.0.0/20240101000000", 'c');
    let member = |p: &ResolvedPackage| Member {
        ident: p.ident().clone(),
        checksum: p.checksum().to_owned(),
    };
    vec![
        LayerDescriptor {
            digests: digests(1),
            annotations: annotations(&[member(&a)], Some(record::encode(&[&a]))),
        },
        LayerDescriptor {
            digests: digests(2),
            annotations: annotations(&[member(&b), member(&c)], Some(record::encode(&[&b, &c]))),
        },
        LayerDescriptor {
            digests: digests(3),
            annotations: annotations(&[], None),
        },
    ]
}

fn image(layers: &[LayerDescriptor], architecture: &str) -> RemoteImage {
    let spec = ImageConfigSpec {
        architecture: architecture.into(),
        os: "linux".into(),
        created: "2024-01-01T00:00:00Z".into(),
        ..ImageConfigSpec::default()
    };
    let built = build_image(&spec, layers).expect("image");
    RemoteImage {
        repository: "127.0.0.1:5000/acme/app".into(),
        manifest_digest: built.manifest_digest,
        manifest: built.manifest,
        config: built.config,
    }
}

fn amd64() -> Platform {
    crate::platform::of(&PackageTarget::parse("x86_64-linux").expect("target")).expect("platform")
}

#[test]
fn package_layers_are_read_with_their_keys_and_records() {
    let parsed = parse(
        &image(&descriptors(), "amd64"),
        0,
        &amd64(),
        Compression::Gzip,
    )
    .expect("ok");
    assert!(parsed.notes.is_empty(), "{:?}", parsed.notes);
    assert_eq!(
        parsed.layers.len(),
        2,
        "the extras layer is not a cache entry"
    );
    let grouped = &parsed.layers[1];
    assert_eq!(grouped.members.len(), 2);
    assert_eq!(
        grouped.key,
        LayerKey::of(&grouped.members, Compression::Gzip)
    );
    assert_eq!(grouped.digests, digests(2));
    assert_eq!(grouped.records[1].ident.name, "c");
    assert_eq!(grouped.repository, "127.0.0.1:5000/acme/app");
}

#[test]
fn another_compression_or_platform_is_not_used() {
    let img = image(&descriptors(), "amd64");
    let zstd = parse(&img, 0, &amd64(), Compression::Zstd).expect("ok");
    assert!(zstd.layers.is_empty());
    assert!(
        zstd.notes[0].contains("not compressed with zstd"),
        "{:?}",
        zstd.notes
    );
    let arm = image(&descriptors(), "arm64");
    assert_eq!(
        parse(&arm, 0, &amd64(), Compression::Gzip).expect_err("refused"),
        SourceProblem::OtherPlatform {
            found: "linux/arm64".into(),
            wanted: "linux/amd64".into()
        }
    );
}

#[test]
fn damaged_annotations_skip_the_layer_with_a_note() {
    // A record whose checksum disagrees with the checksums annotation.
    let mut layers = descriptors();
    let sums = layers[0].annotations[ANN_CHECKSUMS].clone();
    layers[0]
        .annotations
        .insert(ANN_CHECKSUMS.into(), sums.replace('a', "d"));
    let parsed = parse(&image(&layers, "amd64"), 0, &amd64(), Compression::Gzip).expect("ok");
    assert_eq!(parsed.layers.len(), 1, "only the intact layer");
    assert!(
        parsed.notes[0].starts_with("layer 0: its records"),
        "{:?}",
        parsed.notes
    );
    // A record that does not parse; a layer of another layer format; no record at all.
    let mut layers = descriptors();
    layers[0].annotations.insert(ANN_RECORD.into(), "{".into());
    layers[1].annotations.insert(ANN_FORMAT.into(), "2".into());
    let parsed = parse(&image(&layers, "amd64"), 0, &amd64(), Compression::Gzip).expect("ok");
    assert!(parsed.layers.is_empty());
    assert!(
        parsed.notes[0].contains("not a record"),
        "{:?}",
        parsed.notes
    );
    assert!(
        parsed.notes[1].contains("layer format '2'"),
        "{:?}",
        parsed.notes
    );
    let mut layers = descriptors();
    layers[0].annotations.remove(ANN_RECORD);
    let parsed = parse(&image(&layers, "amd64"), 0, &amd64(), Compression::Gzip).expect("ok");
    assert_eq!(parsed.layers.len(), 1);
    assert!(
        parsed.notes[0].contains("no package records"),
        "{:?}",
        parsed.notes
    );
}

#[test]
fn images_that_do_not_add_up_are_refused_whole() {
    let img = image(&descriptors(), "amd64");
    // The config the manifest names is not the one read.
    let mut other = img.clone();
    other.config.push(b' ');
    assert!(matches!(
        parse(&other, 0, &amd64(), Compression::Gzip),
        Err(SourceProblem::ConfigMismatch(_))
    ));
    // One diff_id fewer than layers.
    let mut config: Value = serde_json::from_slice(&img.config).expect("json");
    config["rootfs"]["diff_ids"]
        .as_array_mut()
        .expect("diff_ids")
        .pop();
    let mut short = img.clone();
    short.config = serde_json::to_vec(&config).expect("json");
    let mut manifest: Value = serde_json::from_slice(&img.manifest).expect("json");
    manifest["config"]["digest"] = oci_image::sha256_digest(&short.config).into();
    short.manifest = serde_json::to_vec(&manifest).expect("json");
    assert_eq!(
        parse(&short, 0, &amd64(), Compression::Gzip).expect_err("refused"),
        SourceProblem::DiffIdCount {
            diff_ids: 2,
            layers: 3
        }
    );
    // Not written by hab-oci: no annotations at all.
    let plain: Vec<LayerDescriptor> = descriptors()
        .into_iter()
        .map(|mut l| {
            l.annotations.clear();
            l
        })
        .collect();
    assert_eq!(
        parse(&image(&plain, "amd64"), 0, &amd64(), Compression::Gzip).expect_err("refused"),
        SourceProblem::NotOurs
    );
    let garbage = RemoteImage {
        manifest: b"<html>".to_vec(),
        ..img
    };
    assert!(matches!(
        parse(&garbage, 0, &amd64(), Compression::Gzip),
        Err(SourceProblem::NotAManifest(_))
    ));
}

#[test]
fn the_first_source_wins_a_key() {
    let img = image(&descriptors(), "amd64");
    let first = parse(&img, 0, &amd64(), Compression::Gzip).expect("ok");
    let mut second = parse(&img, 1, &amd64(), Compression::Gzip).expect("ok");
    for l in &mut second.layers {
        l.repository = "elsewhere/app".into();
    }
    let keyed = by_key(vec![first, second]);
    assert_eq!(keyed.len(), 2);
    assert!(
        keyed
            .values()
            .all(|l| l.repository == "127.0.0.1:5000/acme/app")
    );
}
