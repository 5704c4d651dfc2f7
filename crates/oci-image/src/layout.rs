//! The OCI image layout directory (`oci-layout`, `index.json`, `blobs/sha256/…`) and tar
//! archives of it. The docker flavour adds a `manifest.json` whose paths point at the same
//! blobs: Docker's `docker load` reads that, OCI tools read the layout (this is the layout
//! `docker save` itself writes since Docker 25). An oci-archive that lists its image under
//! several tags carries that `manifest.json` too, for `podman load` ([`write_archive`]).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use oci_spec::image::{ImageIndexBuilder, MediaType};
use serde::Serialize;

use crate::image::{Built, ImageError, canonical_json};

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("{}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("{digest} is not a sha256 digest")]
    BadDigest { digest: String },
}

fn io_at(path: &Path) -> impl Fn(io::Error) -> LayoutError + '_ {
    move |source| LayoutError::Io {
        path: path.to_owned(),
        source,
    }
}

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// An OCI image layout directory.
#[derive(Debug, Clone)]
pub struct OciDir {
    root: PathBuf,
}

/// A blob being written: a temporary file inside `blobs/sha256/`, renamed to its digest
/// only when complete, so a blob path never holds partial content.
pub struct BlobWriter {
    tmp: tempfile::NamedTempFile,
    dir: PathBuf,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tmp.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.tmp.flush()
    }
}

impl BlobWriter {
    /// Renames the finished blob to `blobs/sha256/<hex of digest>`.
    pub fn commit(self, digest: &str) -> Result<PathBuf, LayoutError> {
        let hex = hex_of(digest)?;
        let dest = self.dir.join(hex);
        // Not fsynced one by one: a layout becomes visible whole, by its final rename.
        hab_oci_fs::persist(self.tmp, &dest, hab_oci_fs::Persist::FAST).map_err(io_at(&dest))?;
        Ok(dest)
    }
}

fn hex_of(digest: &str) -> Result<&str, LayoutError> {
    digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| LayoutError::BadDigest {
            digest: digest.to_owned(),
        })
}

/// One image (or index of images) in an `index.json`, with the references it is known by.
pub struct IndexEntry<'a> {
    pub image: &'a Built,
    /// Full references (`name:tag`), for `io.containerd.image.name`.
    pub names: Vec<String>,
    /// Tags, for `org.opencontainers.image.ref.name` (what `oci:DIR:TAG` selects).
    pub tags: Vec<String>,
}

impl OciDir {
    /// Creates the layout skeleton at `root` (which may exist and be empty).
    pub fn create(root: &Path) -> Result<OciDir, LayoutError> {
        let blobs = root.join("blobs/sha256");
        fs::create_dir_all(&blobs).map_err(io_at(&blobs))?;
        let layout = root.join("oci-layout");
        fs::write(&layout, OCI_LAYOUT).map_err(io_at(&layout))?;
        Ok(OciDir {
            root: root.to_owned(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, LayoutError> {
        Ok(self.root.join("blobs/sha256").join(hex_of(digest)?))
    }

    pub fn blob_writer(&self) -> Result<BlobWriter, LayoutError> {
        let dir = self.root.join("blobs/sha256");
        let tmp = hab_oci_fs::temp::file_in(&dir, "blob").map_err(io_at(&dir))?;
        Ok(BlobWriter { tmp, dir })
    }

    /// Writes `bytes` as a blob (atomically) and returns its path.
    pub fn put_blob(&self, digest: &str, bytes: &[u8]) -> Result<PathBuf, LayoutError> {
        let mut w = self.blob_writer()?;
        w.write_all(bytes).map_err(io_at(&self.root))?;
        w.commit(digest)
    }

    /// Writes config and manifest blobs (and an index's blob) of `entries` and the
    /// `index.json` listing them.
    pub fn write_images(
        &self,
        entries: &[IndexEntry<'_>],
        annotations: &BTreeMap<String, String>,
    ) -> Result<(), LayoutError> {
        for e in entries {
            for image in e.image.images() {
                self.put_blob(&image.config_digest, &image.config)?;
                self.put_blob(&image.manifest_digest, &image.manifest)?;
            }
            if let Built::Index(x) = e.image {
                self.put_blob(&x.digest, &x.bytes)?;
            }
        }
        let index = index_json(entries, annotations)?;
        let path = self.root.join("index.json");
        hab_oci_fs::write(&path, "index", &index, hab_oci_fs::Persist::FAST).map_err(io_at(&path))
    }
}

fn index_json(
    entries: &[IndexEntry<'_>],
    annotations: &BTreeMap<String, String>,
) -> Result<Vec<u8>, LayoutError> {
    let mut manifests = Vec::new();
    for e in entries {
        if e.tags.is_empty() {
            manifests.push(e.image.descriptor(&BTreeMap::new())?);
        }
        for (tag, name) in e.tags.iter().zip(e.names.iter()) {
            let ann = BTreeMap::from([
                ("io.containerd.image.name".to_owned(), name.clone()),
                ("org.opencontainers.image.ref.name".to_owned(), tag.clone()),
            ]);
            manifests.push(e.image.descriptor(&ann)?);
        }
    }
    let mut index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests);
    if !annotations.is_empty() {
        index = index.annotations(
            annotations
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<std::collections::HashMap<_, _>>(),
        );
    }
    let index = index.build().map_err(|e| ImageError::Spec {
        what: "index",
        detail: e.to_string(),
    })?;
    Ok(canonical_json(&index).map_err(ImageError::from)?)
}

/// What kind of tar archive to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    /// The OCI layout (`oci-archive:`); with several tags, Docker's `manifest.json` as well
    /// ([`write_archive`] says why).
    Oci,
    /// The OCI layout plus Docker's `manifest.json` (`docker-archive:`, `docker load`).
    Docker,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry<'a> {
    config: String,
    repo_tags: &'a [String],
    layers: Vec<String>,
}

/// Streams a tar of the layout for `entry` into `out`: `oci-layout`, `index.json`, for Docker
/// `manifest.json`, then the blobs (an index's, then per image config, manifest, layers
/// bottom to top; each blob once). Entries carry fixed metadata, so the same image gives the
/// same archive bytes. A Docker archive holds one image: `docker load` takes no index.
///
/// An oci-archive whose `index.json` lists one image once per tag (several descriptors, as
/// containerd's `ctr export` and Docker 25's `docker save` write them) gets `manifest.json`
/// too: `podman load` (containers/image, podman 4 and 5) takes an OCI archive only when its
/// index has exactly one descriptor ("more than one image in oci, choose an image",
/// podman#4646) and otherwise reads the same tar as a docker-archive, through
/// `manifest.json`, with every tag. With one tag the oci-archive stays the plain layout; an
/// index (several platforms) with several tags gets the `manifest.json` of the host's
/// platform's image (the host's, as `docker load` would take; it names one image only).
pub fn write_archive<W: Write>(
    dir: &OciDir,
    entry: &IndexEntry<'_>,
    kind: ArchiveKind,
    annotations: &BTreeMap<String, String>,
    out: W,
) -> Result<W, LayoutError> {
    let mut tar = tar::Builder::new(out);
    let err = io_at(dir.root());
    let add = |tar: &mut tar::Builder<W>, name: &str, data: &[u8]| -> io::Result<()> {
        let mut h = fixed_header(tar::EntryType::Regular, 0o644);
        h.set_size(data.len() as u64);
        tar.append_data(&mut h, name, data)
    };
    add(&mut tar, "oci-layout", OCI_LAYOUT).map_err(&err)?;
    add(
        &mut tar,
        "index.json",
        &index_json(std::slice::from_ref(entry), annotations)?,
    )
    .map_err(&err)?;
    let blob_name =
        |d: &str| -> Result<String, LayoutError> { Ok(format!("blobs/sha256/{}", hex_of(d)?)) };
    let docker_image = match (kind, entry.image) {
        (ArchiveKind::Docker, Built::Image(i)) => Some(i),
        (ArchiveKind::Docker, Built::Index(_)) => {
            return Err(LayoutError::Image(ImageError::Spec {
                what: "docker archive",
                detail: "a docker archive holds one image, not an index (internal error)".into(),
            }));
        }
        (ArchiveKind::Oci, Built::Image(i)) if entry.tags.len() > 1 => Some(i),
        // podman then loads the host's image of the index, as `docker load` would.
        (ArchiveKind::Oci, built @ Built::Index(_)) if entry.tags.len() > 1 => {
            Some(built.for_platform(&crate::image::Platform::host()).0)
        }
        (ArchiveKind::Oci, _) => None,
    };
    if let Some(image) = docker_image {
        let m = [DockerManifestEntry {
            config: blob_name(&image.config_digest)?,
            repo_tags: &entry.names,
            layers: image
                .layers
                .iter()
                .map(|l| blob_name(&l.digests.digest))
                .collect::<Result<_, _>>()?,
        }];
        add(
            &mut tar,
            "manifest.json",
            &serde_json::to_vec(&m).map_err(ImageError::from)?,
        )
        .map_err(&err)?;
    }
    for d in ["blobs/", "blobs/sha256/"] {
        let mut h = fixed_header(tar::EntryType::Directory, 0o755);
        h.set_size(0);
        tar.append_data(&mut h, d, io::empty()).map_err(&err)?;
    }
    let mut seen = std::collections::HashSet::new();
    if let Built::Index(x) = entry.image {
        add(&mut tar, &blob_name(&x.digest)?, &x.bytes).map_err(&err)?;
    }
    for image in entry.image.images() {
        for (digest, bytes) in [
            (&image.config_digest, &image.config),
            (&image.manifest_digest, &image.manifest),
        ] {
            if seen.insert(digest.clone()) {
                add(&mut tar, &blob_name(digest)?, bytes).map_err(&err)?;
            }
        }
        for l in &image.layers {
            if !seen.insert(l.digests.digest.clone()) {
                continue;
            }
            let path = dir.blob_path(&l.digests.digest)?;
            let f = File::open(&path).map_err(io_at(&path))?;
            let mut h = fixed_header(tar::EntryType::Regular, 0o644);
            h.set_size(l.digests.size);
            tar.append_data(&mut h, blob_name(&l.digests.digest)?, f)
                .map_err(io_at(&path))?;
        }
    }
    tar.into_inner().map_err(&err)
}

fn fixed_header(kind: tar::EntryType, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{ImageConfigSpec, LayerDescriptor, Platform, build_image, build_index};
    use crate::layer::{Compression, EntryMeta, LayerDigests, LayerWriter, sha256_digest};

    /// Two platform images sharing one layer, in a layout.
    fn two_platforms(dir: &OciDir) -> Built {
        let layer = b"the same layer bytes".to_vec();
        let digest = sha256_digest(&layer);
        dir.put_blob(&digest, &layer).expect("layer");
        let descriptor = LayerDescriptor {
            digests: LayerDigests {
                diff_id: digest.clone(),
                digest,
                size: layer.len() as u64,
                media_type: "application/vnd.oci.image.layer.v1.tar",
            },
            annotations: BTreeMap::new(),
        };
        let image = |architecture: &str, variant: Option<&str>| {
            let spec = ImageConfigSpec {
                architecture: architecture.into(),
                os: "linux".into(),
                variant: variant.map(str::to_owned),
                created: "2024-01-01T00:00:00Z".into(),
                ..Default::default()
            };
            let platform = Platform {
                os: "linux".into(),
                architecture: architecture.into(),
                variant: variant.map(str::to_owned),
            };
            (
                platform,
                build_image(&spec, std::slice::from_ref(&descriptor)).expect("image"),
            )
        };
        Built::Index(
            build_index(vec![image("arm64", Some("v8")), image("amd64", None)]).expect("index"),
        )
    }

    #[test]
    fn an_index_is_reproducible_and_names_each_platform() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = OciDir::create(tmp.path()).expect("layout");
        let a = two_platforms(&dir);
        let b = two_platforms(&dir);
        assert_eq!(a.digest(), b.digest());
        assert_eq!(a.media_type(), crate::image::MEDIA_INDEX);
        let index: serde_json::Value = serde_json::from_slice(a.bytes()).expect("json");
        assert_eq!(index["manifests"][0]["platform"]["variant"], "v8");
        assert_eq!(index["manifests"][1]["platform"]["architecture"], "amd64");
        assert!(index["manifests"][1]["platform"].get("variant").is_none());
        let (host, found) = a.for_platform(&Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        });
        assert!(found);
        assert_eq!(host.manifest_digest, index["manifests"][1]["digest"]);
        let config: serde_json::Value =
            serde_json::from_slice(&a.images()[0].config).expect("config");
        assert_eq!(config["variant"], "v8");
    }

    #[test]
    fn a_layout_of_an_index_points_at_it_and_holds_each_blob_once() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = OciDir::create(&tmp.path().join("layout")).expect("layout");
        let built = two_platforms(&dir);
        let entry = IndexEntry {
            image: &built,
            names: vec!["example/app:latest".into()],
            tags: vec!["latest".into()],
        };
        dir.write_images(std::slice::from_ref(&entry), &BTreeMap::new())
            .expect("write");
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.root().join("index.json")).expect("index"))
                .expect("json");
        assert_eq!(index["manifests"].as_array().map(Vec::len), Some(1));
        assert_eq!(
            index["manifests"][0]["mediaType"],
            crate::image::MEDIA_INDEX
        );
        assert_eq!(index["manifests"][0]["digest"], built.digest());
        assert!(dir.blob_path(built.digest()).expect("path").exists());

        let tar = write_archive(&dir, &entry, ArchiveKind::Oci, &BTreeMap::new(), Vec::new())
            .expect("archive");
        let mut names = Vec::new();
        for e in tar::Archive::new(&tar[..]).entries().expect("entries") {
            names.push(
                e.expect("entry")
                    .path()
                    .expect("path")
                    .display()
                    .to_string(),
            );
        }
        let blobs = names
            .iter()
            .filter(|n| n.starts_with("blobs/sha256/") && n.len() > 14);
        // The index, two manifests, two configs, one shared layer.
        assert_eq!(blobs.count(), 6, "{names:?}");
        let again = write_archive(&dir, &entry, ArchiveKind::Oci, &BTreeMap::new(), Vec::new())
            .expect("archive");
        assert_eq!(tar, again, "the same index gives the same archive bytes");
        assert!(
            write_archive(
                &dir,
                &entry,
                ArchiveKind::Docker,
                &BTreeMap::new(),
                Vec::new()
            )
            .is_err(),
            "a docker archive holds one image"
        );
    }

    /// A one-layer image whose layer blob is in a fresh layout.
    fn image_in(dir: &OciDir) -> Built {
        let mut w =
            LayerWriter::new(dir.blob_writer().expect("blob"), Compression::Gzip).expect("writer");
        let meta = EntryMeta {
            mode: 0o644,
            mtime: 1_700_000_000,
        };
        w.file("hab/file", meta, 5, &mut &b"hello"[..])
            .expect("file");
        let (digests, blob) = w.finish().expect("finish");
        blob.commit(&digests.digest).expect("commit");
        let spec = ImageConfigSpec {
            architecture: "amd64".into(),
            os: "linux".into(),
            created: "2024-01-01T00:00:00Z".into(),
            ..Default::default()
        };
        let layer = LayerDescriptor {
            digests,
            annotations: BTreeMap::new(),
        };
        Built::Image(build_image(&spec, &[layer]).expect("image"))
    }

    /// The archive's entries by name.
    fn archive(
        dir: &OciDir,
        entry: &IndexEntry<'_>,
        kind: ArchiveKind,
    ) -> BTreeMap<String, Vec<u8>> {
        let bytes = write_archive(dir, entry, kind, &BTreeMap::new(), Vec::new()).expect("archive");
        let mut tar = tar::Archive::new(&bytes[..]);
        tar.entries()
            .expect("entries")
            .map(|e| {
                let mut e = e.expect("entry");
                let name = e.path().expect("path").display().to_string();
                let mut data = Vec::new();
                io::Read::read_to_end(&mut e, &mut data).expect("read");
                (name, data)
            })
            .collect()
    }

    #[test]
    fn an_oci_archive_with_several_tags_carries_manifest_json_for_podman_load() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = OciDir::create(tmp.path()).expect("layout");
        let built = image_in(&dir);
        let Built::Image(image) = &built else {
            unreachable!("one image")
        };
        let one = IndexEntry {
            image: &built,
            names: vec!["app:latest".into()],
            tags: vec!["latest".into()],
        };
        let oci = archive(&dir, &one, ArchiveKind::Oci);
        assert!(oci.contains_key("index.json"));
        assert!(
            !oci.contains_key("manifest.json"),
            "one tag: one descriptor, which podman load takes as an OCI archive"
        );
        assert!(archive(&dir, &one, ArchiveKind::Docker).contains_key("manifest.json"));

        let several = IndexEntry {
            image: &built,
            names: vec!["app:latest".into(), "app:1.0".into()],
            tags: vec!["latest".into(), "1.0".into()],
        };
        let oci = archive(&dir, &several, ArchiveKind::Oci);
        let index: serde_json::Value = serde_json::from_slice(&oci["index.json"]).expect("index");
        assert_eq!(index["manifests"].as_array().map(Vec::len), Some(2));
        let manifest: serde_json::Value =
            serde_json::from_slice(&oci["manifest.json"]).expect("manifest.json");
        let blob = |d: &str| format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
        assert_eq!(
            manifest,
            serde_json::json!([{
                "Config": blob(&image.config_digest),
                "RepoTags": ["app:latest", "app:1.0"],
                "Layers": [blob(&image.layers[0].digests.digest)],
            }])
        );
        assert!(oci.contains_key(&blob(&image.layers[0].digests.digest)));
        assert_eq!(
            oci,
            archive(&dir, &several, ArchiveKind::Docker),
            "the same bytes as the docker-archive"
        );
    }
}
