//! A small base image for `--base-image` tests, built here from Debian's static busybox
//! (`/bin/busybox`): `/bin/sh` → busybox, an `/etc/passwd` with `root` and `nobody`, an
//! `/etc/group` with `root` and `nogroup`, and a second layer with whiteouts (`.wh.motd`
//! deletes `/etc/motd`, `.wh..wh..opq` empties `/var/old` below it), so that a reader must
//! apply them. Written as an OCI layout (one image, or an index over several platforms),
//! an oci-archive, a docker-archive (`docker save`'s form) and pushed with skopeo.
//!
//! Every byte is a pure function of the platform and `/bin/busybox`: tar headers carry
//! fixed metadata and gzip a fixed header, so the same fixture has the same digests.

use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::registry::sha256_digest;

pub const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
pub const GROUP: &str = "root:x:0:\nnogroup:x:65534:\n";
pub const BASE_PATH: &str = "PATH=/usr/sbin:/usr/bin:/sbin:/bin";

/// One platform's image of the fixture, in memory.
#[derive(Debug, Clone)]
pub struct BaseFixture {
    /// `amd64`, `arm64`, ...
    pub architecture: String,
    pub variant: Option<String>,
    /// The layer tars, uncompressed (bottom to top).
    pub tars: Vec<Vec<u8>>,
    /// The same, gzip-compressed: the blobs of the OCI forms.
    pub layers: Vec<Vec<u8>>,
    pub config: Vec<u8>,
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
}

impl BaseFixture {
    /// The blobs of the image: layers, config, manifest.
    pub fn blobs(&self) -> Vec<&[u8]> {
        let mut b: Vec<&[u8]> = self.layers.iter().map(Vec::as_slice).collect();
        b.push(&self.config);
        b.push(&self.manifest);
        b
    }

    pub fn layer_digests(&self) -> Vec<String> {
        self.layers.iter().map(|l| sha256_digest(l)).collect()
    }

    /// Rewrites the manifest for layers changed in place by a test (their descriptors
    /// follow the new bytes): for a manifest naming another media type, say.
    pub fn set_manifest(&mut self, manifest: serde_json::Value) -> Result<()> {
        self.manifest = serde_json::to_vec(&manifest)?;
        self.manifest_digest = sha256_digest(&self.manifest);
        Ok(())
    }

    /// The manifest as JSON, to edit with [`BaseFixture::set_manifest`].
    pub fn manifest_json(&self) -> Result<serde_json::Value> {
        Ok(serde_json::from_slice(&self.manifest)?)
    }
}

enum Item<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8], u32),
    Symlink(&'a str, &'a str),
}

fn tar_of(items: &[Item<'_>]) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for item in items {
        let mut h = tar::Header::new_ustar();
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        match item {
            Item::Dir(p) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, p, std::io::empty())?;
            }
            Item::File(p, data, mode) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, *data)?;
            }
            Item::Symlink(p, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, p, target)?;
            }
        }
    }
    Ok(b.into_inner()?)
}

fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::fast());
    gz.write_all(data)?;
    Ok(gz.finish()?)
}

/// The busybox base for `architecture` (`amd64`; `arm64` gets variant `v8`). The arm64
/// image holds the same (amd64) busybox: only the metadata differs, as in the tests of
/// multi-platform exports.
pub fn busybox_base(architecture: &str) -> Result<BaseFixture> {
    let busybox =
        fs::read("/bin/busybox").context("reading /bin/busybox (Debian package busybox-static)")?;
    let first = tar_of(&[
        Item::Dir("bin/"),
        Item::File("bin/busybox", &busybox, 0o755),
        Item::Symlink("bin/sh", "busybox"),
        Item::Symlink("bin/ls", "busybox"),
        Item::Symlink("bin/cat", "busybox"),
        Item::Dir("etc/"),
        Item::File("etc/passwd", PASSWD.as_bytes(), 0o644),
        Item::File("etc/group", GROUP.as_bytes(), 0o644),
        Item::File("etc/motd", b"welcome\n", 0o644),
        Item::Dir("var/"),
        Item::Dir("var/old/"),
        Item::File("var/old/a", b"a\n", 0o644),
    ])?;
    let second = tar_of(&[
        Item::Dir("etc/"),
        Item::File("etc/.wh.motd", b"", 0o644),
        Item::Dir("var/old/"),
        Item::File("var/old/.wh..wh..opq", b"", 0o644),
        Item::File("var/old/b", b"b\n", 0o644),
        Item::Dir("usr/"),
        Item::Dir("usr/share/"),
        Item::File("usr/share/base.txt", b"from the base\n", 0o644),
    ])?;
    let tars = vec![first, second];
    let layers = tars.iter().map(|t| gzip(t)).collect::<Result<Vec<_>>>()?;
    let variant = (architecture == "arm64").then(|| "v8".to_owned());
    let mut config = json!({
        "architecture": architecture,
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": {
            "Env": [BASE_PATH, "BASE_ONLY=1"],
            "Cmd": ["/bin/sh"],
            "WorkingDir": "/",
            "User": "",
            "ExposedPorts": {"8080/tcp": {}},
            "Labels": {"org.example.base": "busybox", "org.opencontainers.image.title": "base"},
        },
        "rootfs": {"type": "layers", "diff_ids": tars.iter().map(|t| sha256_digest(t)).collect::<Vec<_>>()},
        "history": [
            {"created": "2024-01-01T00:00:00Z", "created_by": "ADD busybox /"},
            {"created": "2024-01-01T00:00:00Z", "created_by": "ENV BASE_ONLY=1", "empty_layer": true},
            {"created": "2024-01-01T00:00:00Z", "created_by": "ADD extras /"},
        ],
    });
    if let Some(v) = &variant {
        config["variant"] = json!(v);
    }
    let config = serde_json::to_vec(&config)?;
    let desc = |media: &str, b: &[u8]| json!({"mediaType": media, "digest": sha256_digest(b), "size": b.len()});
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": desc("application/vnd.oci.image.config.v1+json", &config),
        "layers": layers.iter().map(|l| desc("application/vnd.oci.image.layer.v1.tar+gzip", l)).collect::<Vec<_>>(),
    }))?;
    Ok(BaseFixture {
        architecture: architecture.to_owned(),
        variant,
        tars,
        layers,
        config,
        manifest_digest: sha256_digest(&manifest),
        manifest,
    })
}

fn put(dir: &Path, data: &[u8]) -> Result<()> {
    let d = sha256_digest(data);
    let path = dir
        .join("blobs/sha256")
        .join(d.trim_start_matches("sha256:"));
    fs::write(&path, data).with_context(|| format!("writing {}", path.display()))
}

/// Writes `images` as an OCI layout in `dir` under `tag`: one image as its manifest, several
/// as an image index over them (with their platforms). Returns the tagged digest.
pub fn write_oci_layout(dir: &Path, tag: &str, images: &[&BaseFixture]) -> Result<String> {
    fs::create_dir_all(dir.join("blobs/sha256"))?;
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    for image in images {
        for b in image.blobs() {
            put(dir, b)?;
        }
    }
    let (media, top) = match images {
        [] => bail!("no image to write"),
        [one] => (
            "application/vnd.oci.image.manifest.v1+json",
            one.manifest.clone(),
        ),
        many => {
            let index = serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": many.iter().map(|i| {
                    let mut platform = json!({"os": "linux", "architecture": i.architecture});
                    if let Some(v) = &i.variant {
                        platform["variant"] = json!(v);
                    }
                    json!({
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "digest": i.manifest_digest,
                        "size": i.manifest.len(),
                        "platform": platform,
                    })
                }).collect::<Vec<_>>(),
            }))?;
            put(dir, &index)?;
            ("application/vnd.oci.image.index.v1+json", index)
        }
    };
    let digest = sha256_digest(&top);
    let index_json = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": media,
            "digest": digest,
            "size": top.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    fs::write(dir.join("index.json"), serde_json::to_vec(&index_json)?)?;
    Ok(digest)
}

/// Tars the directory `dir` (files in name order, fixed metadata) into `file`.
fn tar_dir(dir: &Path, file: &Path) -> Result<()> {
    let mut b = tar::Builder::new(fs::File::create(file)?);
    b.mode(tar::HeaderMode::Deterministic);
    b.follow_symlinks(false);
    let mut paths = Vec::new();
    collect(dir, dir, &mut paths)?;
    paths.sort();
    for rel in paths {
        b.append_path_with_name(dir.join(&rel), &rel)?;
    }
    b.into_inner()?.sync_all()?;
    Ok(())
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        let rel = e.path().strip_prefix(root)?.to_string_lossy().into_owned();
        out.push(rel);
        if e.file_type()?.is_dir() {
            collect(root, &e.path(), out)?;
        }
    }
    Ok(())
}

/// Writes `images` as an oci-archive `file` (the layout of [`write_oci_layout`], tarred).
pub fn write_oci_archive(file: &Path, tag: &str, images: &[&BaseFixture]) -> Result<String> {
    let tmp = tempfile::tempdir()?;
    let digest = write_oci_layout(tmp.path(), tag, images)?;
    tar_dir(tmp.path(), file)?;
    Ok(digest)
}

/// Writes `image` as `docker save` (Docker 20.10) does: `manifest.json`, the config as
/// `<hex>.json`, each layer uncompressed as `<id>/layer.tar` with `VERSION` and `json`
/// beside it.
pub fn write_docker_archive(file: &Path, repo_tag: &str, image: &BaseFixture) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let config_name = format!(
        "{}.json",
        sha256_digest(&image.config).trim_start_matches("sha256:")
    );
    fs::write(dir.join(&config_name), &image.config)?;
    let mut layer_names = Vec::new();
    for t in &image.tars {
        let id = sha256_digest(t).trim_start_matches("sha256:").to_owned();
        fs::create_dir_all(dir.join(&id))?;
        fs::write(dir.join(&id).join("layer.tar"), t)?;
        fs::write(dir.join(&id).join("VERSION"), "1.0")?;
        fs::write(dir.join(&id).join("json"), format!(r#"{{"id":"{id}"}}"#))?;
        layer_names.push(format!("{id}/layer.tar"));
    }
    let manifest = json!([{"Config": config_name, "RepoTags": [repo_tag], "Layers": layer_names}]);
    fs::write(dir.join("manifest.json"), serde_json::to_vec(&manifest)?)?;
    tar_dir(dir, file)
}

/// `skopeo copy --all oci:DIR:TAG docker://DEST` to a plain-HTTP registry (every platform
/// of an index, the index itself byte for byte).
pub fn skopeo_push(layout: &Path, tag: &str, dest: &str) -> Result<()> {
    skopeo(&[
        "copy",
        "--all",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &format!("oci:{}:{tag}", layout.display()),
        &format!("docker://{dest}"),
    ])
}

/// `skopeo copy oci:DIR:TAG docker-archive:FILE:REF`, the docker-archive another tool writes.
pub fn skopeo_docker_archive(layout: &Path, tag: &str, file: &Path, repo_tag: &str) -> Result<()> {
    skopeo(&[
        "copy",
        &format!("oci:{}:{tag}", layout.display()),
        &format!("docker-archive:{}:{repo_tag}", file.display()),
    ])
}

fn skopeo(args: &[&str]) -> Result<()> {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .context("running skopeo")?;
    if !out.status.success() {
        bail!(
            "skopeo {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
