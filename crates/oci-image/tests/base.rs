//! Local base images (`oci:`, `oci-archive:`, `docker-archive:`) built by testkit from
//! busybox: opened per platform, their layers checked, their files read with whiteouts
//! applied, and every kind of bad input refused with an error naming the base.

use std::fs;
use std::io::Read as _;
use std::path::Path;

use hab_oci_testkit::base_image::{
    BaseFixture, GROUP, PASSWD, busybox_base, write_docker_archive, write_oci_archive,
    write_oci_layout,
};
use oci_image::Platform;
use oci_image::base::{BaseError, BaseImage, BaseSpec, BlobDir, LocalBase, base_files};

fn platform(arch: &str) -> Platform {
    Platform {
        os: "linux".into(),
        architecture: arch.into(),
        variant: (arch == "arm64").then(|| "v8".into()),
    }
}

fn open(spec: &str, unpack: &Path, arch: &str) -> Result<BaseImage, BaseError> {
    let spec = BaseSpec::parse(spec)?;
    LocalBase::open(&spec, &BlobDir::new(unpack))?.image(&platform(arch))
}

/// What every form of the fixture must read as.
fn check(image: &BaseImage, fixture: &BaseFixture) {
    assert_eq!(image.layers.len(), 2);
    for (l, t) in image.layers.iter().zip(&fixture.tars) {
        assert_eq!(l.diff_id, hab_oci_testkit::registry::sha256_digest(t));
    }
    let c = &image.config;
    assert_eq!(c.env, ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "BASE_ONLY=1"]);
    assert_eq!(c.cmd.as_deref(), Some(&["/bin/sh".to_owned()][..]));
    assert_eq!(c.working_dir.as_deref(), Some("/"));
    assert_eq!(c.user, None, "an empty User is no user");
    assert_eq!(c.exposed_ports, ["8080/tcp"]);
    assert_eq!(c.labels["org.example.base"], "busybox");
    assert_eq!(c.history.len(), 3);
    assert!(c.history[1].empty_layer);
    assert_eq!(c.platform.architecture, fixture.architecture);
    for i in 0..image.layers.len() {
        image.verify_layer(i).expect("layer bytes match");
    }
    let files = base_files(image).expect("files");
    assert_eq!(files.passwd.as_deref(), Some(PASSWD));
    assert_eq!(files.group.as_deref(), Some(GROUP));
    for p in [
        "bin",
        "bin/busybox",
        "bin/sh",
        "etc/passwd",
        "var/old",
        "var/old/b",
        "usr/share/base.txt",
    ] {
        assert!(files.paths.contains(p), "{p} is visible: {:?}", files.paths);
    }
    // `.wh.motd` deleted it; the opaque directory hides `a` of the layer below, not `b`.
    for p in [
        "etc/motd",
        "var/old/a",
        "etc/.wh.motd",
        "var/old/.wh..wh..opq",
    ] {
        assert!(!files.paths.contains(p), "{p} is hidden");
    }
    assert!(files.dirs.contains("etc") && files.dirs.contains("usr/share"));
    assert!(!files.dirs.contains("bin/sh"));
}

#[test]
fn an_oci_layout_with_one_image() {
    let fixture = busybox_base("amd64").expect("fixture");
    let dir = tempfile::tempdir().expect("tmp");
    let layout = dir.path().join("layout");
    write_oci_layout(&layout, "1.0", &[&fixture]).expect("layout");
    let unpack = dir.path().join("unused");
    for spec in [
        format!("oci:{}:1.0", layout.display()),
        format!("oci:{}", layout.display()),
    ] {
        let image = open(&spec, &unpack, "amd64").expect("open");
        assert_eq!(image.reference, spec);
        assert_eq!(image.index_digest, None);
        assert_eq!(image.manifest_digest, fixture.manifest_digest);
        assert_eq!(image.manifest, fixture.manifest);
        assert_eq!(image.config_bytes, fixture.config);
        assert_eq!(image.layers[0].digest, fixture.layer_digests()[0]);
        check(&image, &fixture);
    }
    assert!(!unpack.exists(), "a layout is read in place");
}

#[test]
fn a_two_platform_layout_gives_each_platform_its_manifest() {
    let amd = busybox_base("amd64").expect("fixture");
    let arm = busybox_base("arm64").expect("fixture");
    let dir = tempfile::tempdir().expect("tmp");
    let layout = dir.path().join("layout");
    let index = write_oci_layout(&layout, "multi", &[&amd, &arm]).expect("layout");
    let spec = format!("oci:{}:multi", layout.display());
    for f in [&amd, &arm] {
        let image = open(&spec, dir.path(), &f.architecture).expect("open");
        assert_eq!(image.index_digest.as_deref(), Some(index.as_str()));
        assert_eq!(image.manifest_digest, f.manifest_digest);
        check(&image, f);
    }
    // arm64 without a variant asked for matches the v8 entry too.
    let any_arm = Platform {
        variant: None,
        ..platform("arm64")
    };
    let image = LocalBase::open(&BaseSpec::parse(&spec).expect("spec"), &BlobDir::new("x"))
        .expect("open")
        .image(&any_arm)
        .expect("arm64");
    assert_eq!(image.manifest_digest, arm.manifest_digest);

    match open(&spec, dir.path(), "s390x") {
        Err(e @ BaseError::NoPlatform { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(&spec), "{msg}");
            assert!(
                msg.contains("no manifest for linux/s390x; it has linux/amd64, linux/arm64/v8"),
                "{msg}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_oci_archive_is_unpacked_once_into_the_blob_dir() {
    let amd = busybox_base("amd64").expect("fixture");
    let arm = busybox_base("arm64").expect("fixture");
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("base.tar");
    let index = write_oci_archive(&file, "latest", &[&amd, &arm]).expect("archive");
    let unpack = dir.path().join("cache");
    let spec = BaseSpec::parse(&format!("oci-archive:{}", file.display())).expect("spec");
    let base = LocalBase::open(&spec, &BlobDir::new(&unpack)).expect("open");
    let image = base.image(&platform("amd64")).expect("amd64");
    assert_eq!(image.index_digest.as_deref(), Some(index.as_str()));
    check(&image, &amd);
    check(&base.image(&platform("arm64")).expect("arm64"), &arm);
    for d in amd.layer_digests() {
        let p = unpack.join("sha256").join(d.trim_start_matches("sha256:"));
        assert!(p.is_file(), "{d} unpacked");
    }
    // Again: the blobs are there, nothing is written twice (same inode).
    let p = image.layer_path(0).expect("path");
    let before = fs::metadata(&p).expect("meta");
    let again = LocalBase::open(&spec, &BlobDir::new(&unpack))
        .and_then(|b| b.image(&platform("amd64")))
        .expect("again");
    let after = fs::metadata(again.layer_path(0).expect("path")).expect("meta");
    use std::os::unix::fs::MetadataExt as _;
    assert_eq!(before.ino(), after.ino());
    // Nothing half-written is left.
    let names: Vec<String> = fs::read_dir(unpack.join("sha256"))
        .expect("dir")
        .map(|e| e.expect("e").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| n.len() == 64), "{names:?}");
}

#[test]
fn a_docker_archive_gets_a_reproducible_manifest() {
    let fixture = busybox_base("amd64").expect("fixture");
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("docker.tar");
    write_docker_archive(&file, "base:1", &fixture).expect("archive");
    let spec = format!("docker-archive:{}", file.display());
    let a = open(&spec, &dir.path().join("c1"), "amd64").expect("open");
    let b = open(&spec, &dir.path().join("c2"), "amd64").expect("open");
    assert_eq!(a.manifest_digest, b.manifest_digest);
    assert_eq!(
        a.config_bytes, fixture.config,
        "the config is kept byte for byte"
    );
    // `docker save` layers are uncompressed tars: the blob is the diff_id.
    for l in &a.layers {
        assert_eq!(l.digest, l.diff_id);
        assert_eq!(l.media_type, "application/vnd.oci.image.layer.v1.tar");
    }
    check(&a, &fixture);
}

#[test]
fn a_missing_base_is_not_found() {
    let dir = tempfile::tempdir().expect("tmp");
    for spec in [
        format!("oci:{}", dir.path().join("nope").display()),
        format!("oci-archive:{}", dir.path().join("nope.tar").display()),
        format!("docker-archive:{}", dir.path().join("nope.tar").display()),
    ] {
        match open(&spec, dir.path(), "amd64") {
            Err(e @ BaseError::NotFound { .. }) => {
                assert!(e.to_string().contains(&spec), "{e}")
            }
            other => panic!("{spec}: {other:?}"),
        }
    }
    let fixture = busybox_base("amd64").expect("fixture");
    let layout = dir.path().join("layout");
    write_oci_layout(&layout, "1.0", &[&fixture]).expect("layout");
    match open(
        &format!("oci:{}:2.0", layout.display()),
        dir.path(),
        "amd64",
    ) {
        Err(e @ BaseError::NotFound { .. }) => {
            assert!(
                e.to_string().contains("no image tagged '2.0' (it has 1.0)"),
                "{e}"
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_single_image_of_another_platform_says_which_it_is() {
    let fixture = busybox_base("arm64").expect("fixture");
    let dir = tempfile::tempdir().expect("tmp");
    write_oci_layout(dir.path(), "t", &[&fixture]).expect("layout");
    match open(
        &format!("oci:{}:t", dir.path().display()),
        dir.path(),
        "amd64",
    ) {
        Err(BaseError::NoPlatform { available, .. }) => {
            assert_eq!(available, [platform("arm64")])
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn media_types_we_cannot_read_are_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut fixture = busybox_base("amd64").expect("fixture");
    let mut m = fixture.manifest_json().expect("json");
    m["layers"][1]["mediaType"] = "application/vnd.example.secret.layer".into();
    fixture.set_manifest(m).expect("manifest");
    write_oci_layout(dir.path(), "t", &[&fixture]).expect("layout");
    match open(
        &format!("oci:{}:t", dir.path().display()),
        dir.path(),
        "amd64",
    ) {
        Err(e @ BaseError::MediaType { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("layer 2 has media type 'application/vnd.example.secret.layer'"),
                "{msg}"
            );
        }
        other => panic!("{other:?}"),
    }

    // A Docker schema 1 manifest.
    let dir = tempfile::tempdir().expect("tmp");
    let mut fixture = busybox_base("amd64").expect("fixture");
    let mut m = fixture.manifest_json().expect("json");
    m["mediaType"] = "application/vnd.docker.distribution.manifest.v1+prettyjws".into();
    fixture.set_manifest(m).expect("manifest");
    write_oci_layout(dir.path(), "t", &[&fixture]).expect("layout");
    assert!(matches!(
        open(
            &format!("oci:{}:t", dir.path().display()),
            dir.path(),
            "amd64"
        ),
        Err(BaseError::MediaType { .. })
    ));
}

/// The first layer's blob with one byte changed (its name unchanged).
fn damage(blob: &Path) {
    let mut bytes = fs::read(blob).expect("read");
    let n = bytes.len() / 2;
    bytes[n] ^= 0xff;
    fs::write(blob, bytes).expect("write");
}

#[test]
fn layer_bytes_that_do_not_match_their_digest_are_refused() {
    let fixture = busybox_base("amd64").expect("fixture");
    let digest = fixture.layer_digests()[0].clone();
    let hex = digest.trim_start_matches("sha256:").to_owned();

    // A layout: found when the layer is read (base_files, or before it is used).
    let dir = tempfile::tempdir().expect("tmp");
    write_oci_layout(dir.path(), "t", &[&fixture]).expect("layout");
    damage(&dir.path().join("blobs/sha256").join(&hex));
    let image = open(
        &format!("oci:{}:t", dir.path().display()),
        dir.path(),
        "amd64",
    )
    .expect("documents are fine");
    for e in [
        image.verify_layer(0).expect_err("verify"),
        base_files(&image).expect_err("files"),
    ] {
        match &e {
            BaseError::Digest { what, expected, .. } => {
                assert_eq!(expected, &digest);
                assert!(what.starts_with("layer 1"), "{what}");
                assert!(e.to_string().contains("hash to"), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }
    let mut r = image.open_layer(0).expect("open");
    let err = std::io::copy(&mut r, &mut std::io::sink()).expect_err("read");
    assert!(matches!(
        BaseError::from_read("b", "l", err),
        BaseError::Digest { .. }
    ));

    // An oci-archive: refused when opened, and the bad blob never enters the blob dir.
    let file = dir.path().join("bad.tar");
    write_oci_archive(&file, "t", &[&fixture]).expect("archive");
    let mut bytes = fs::read(&file).expect("read");
    let at = find(&bytes, &fixture.layers[0][1000..1100]).expect("layer in the archive");
    bytes[at] ^= 0xff;
    fs::write(&file, bytes).expect("write");
    let cache = dir.path().join("cache");
    match open(&format!("oci-archive:{}", file.display()), &cache, "amd64") {
        Err(BaseError::Digest { what, expected, .. }) => {
            assert_eq!(expected, digest);
            assert!(what.starts_with("layer 1"), "{what}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!cache.join("sha256").join(&hex).exists());

    // A docker-archive: the layer tar against the config's diff_id.
    let file = dir.path().join("docker.tar");
    write_docker_archive(&file, "b:1", &fixture).expect("archive");
    let mut bytes = fs::read(&file).expect("read");
    let at = find(&bytes, PASSWD.as_bytes()).expect("passwd in the archive");
    bytes[at] = b'R';
    fs::write(&file, bytes).expect("write");
    assert!(matches!(
        open(
            &format!("docker-archive:{}", file.display()),
            &cache,
            "amd64"
        ),
        Err(BaseError::Digest { .. })
    ));
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn a_blob_writer_names_only_what_hashes_to_the_name() {
    let dir = tempfile::tempdir().expect("tmp");
    let blobs = BlobDir::new(dir.path());
    let mut w = blobs.writer().expect("writer");
    std::io::Write::write_all(&mut w, b"hello").expect("write");
    let wrong = format!("sha256:{}", "0".repeat(64));
    let e = w.commit(&wrong).expect_err("mismatch");
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    assert!(!blobs.contains(&wrong));
    let mut w = blobs.writer().expect("writer");
    std::io::Write::write_all(&mut w, b"hello").expect("write");
    let d = hab_oci_testkit::registry::sha256_digest(b"hello");
    let p = w.commit(&d).expect("commit");
    let mut s = String::new();
    fs::File::open(p)
        .expect("open")
        .read_to_string(&mut s)
        .expect("read");
    assert_eq!(s, "hello");
    assert!(blobs.contains(&d));
    assert_eq!(
        fs::read_dir(dir.path().join("sha256")).expect("d").count(),
        1
    );
}
