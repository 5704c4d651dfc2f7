//! An image another tool wrote as a tar stream, read once as it streams into an [`OciDir`]:
//! `docker save` (a docker-archive: `manifest.json`, `<id>/layer.tar`, repeated layers as
//! symlinks; since Docker 25 an OCI layout that still has a `manifest.json`), `buildah push
//! IMAGE docker-archive:…` (`<diff_id>.tar` layers), or an oci-archive (`index.json`,
//! `blobs/sha256/…`, no `manifest.json`).
//!
//! Each layer is compressed with the pinned compressor ([`LayerWriter::copy_tar`]) exactly as
//! the tool wrote it, nothing re-normalized: its diff_id stays the tool's, checked against the
//! config's `rootfs.diff_ids`, and the same layer tar gives the same blob digest on any
//! machine. A layer the archive holds compressed (gzip, zstd) is decompressed first. The
//! config is kept byte for byte, so its digest stays the tool's image ID.

use std::collections::HashMap;
use std::io::{self, Cursor, Read};

use serde::Deserialize;

use crate::image::{BuiltImage, ImageError, LayerDescriptor, with_config};
use crate::layer::{Compression, LayerDigests, LayerWriter, sha256_digest};
use crate::layout::{LayoutError, OciDir};

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("reading the archive")]
    Read(#[source] io::Error),
    #[error("layer {path} of the archive")]
    Layer {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("the archive has neither a manifest.json nor an index.json: it is not an image")]
    NoManifest,
    #[error("{path} in the archive is not valid: {detail}")]
    Invalid { path: String, detail: String },
    #[error("the archive holds {count} images; one was expected")]
    Images { count: usize },
    #[error("the archive does not hold {path}, which its manifest names")]
    Missing { path: String },
    #[error("the image config lists {config} layers, the manifest {manifest}")]
    LayerCount { config: usize, manifest: usize },
    #[error(
        "layer {path} is not the image's layer {index}: its tar hashes to {actual}, the config says {expected}"
    )]
    DiffId {
        path: String,
        index: usize,
        actual: String,
        expected: String,
    },
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error(transparent)]
    Image(#[from] ImageError),
}

/// Most bytes of one JSON file (manifest, index, config) kept in memory: far above any real
/// one, low enough that a hostile archive cannot fill memory with them.
pub(crate) const MAX_JSON: u64 = 64 << 20;

/// Links followed from one name at most (a chain of symlinks, or a loop).
pub(crate) const MAX_HOPS: usize = 16;

/// `path` after the archive's links (name → the name it stands for), at most
/// [`MAX_HOPS`] of them: a loop ends rather than spins.
pub(crate) fn resolve_link<'a>(links: &'a HashMap<String, String>, mut path: &'a str) -> &'a str {
    for _ in 0..MAX_HOPS {
        match links.get(path) {
            Some(t) => path = t,
            None => break,
        }
    }
    path
}

/// Reads the image in `archive` into `store`: layer blobs compressed with `compression`,
/// the config blob as it was. Returns the image (an OCI manifest over those blobs); its
/// config and manifest blobs are not written to `store` (as for a built image).
pub fn import_archive(
    archive: impl Read,
    store: &OciDir,
    compression: Compression,
) -> Result<BuiltImage, ImportError> {
    let mut found = Found::default();
    let mut tar = tar::Archive::new(archive);
    for entry in tar.entries().map_err(ImportError::Read)? {
        let mut e = entry.map_err(ImportError::Read)?;
        let path = clean(&e.path().map_err(ImportError::Read)?.to_string_lossy());
        let kind = e.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            let target = link_target(&e, &path).map_err(ImportError::Read)?;
            found.links.insert(path, target);
        } else if kind.is_file() {
            let size = e.size();
            found.file(path, size, &mut e, store, compression)?;
        }
    }
    found.image(store, compression)
}

/// What the archive held, by name.
#[derive(Default)]
struct Found {
    /// Layer candidates, compressed into the store as they streamed past.
    layers: HashMap<String, LayerDigests>,
    /// Files that look like JSON (manifests, configs, an index).
    json: HashMap<String, Vec<u8>>,
    /// Symlinks and hard links: name → the name they stand for.
    links: HashMap<String, String>,
}

impl Found {
    fn file(
        &mut self,
        path: String,
        size: u64,
        entry: &mut dyn Read,
        store: &OciDir,
        compression: Compression,
    ) -> Result<(), ImportError> {
        let (head, rest) = peek(entry, 4).map_err(ImportError::Read)?;
        if matches!(head.first(), Some(b'{' | b'[')) && size <= MAX_JSON {
            let mut bytes = head;
            rest.read_to_end(&mut bytes).map_err(ImportError::Read)?;
            self.json.insert(path, bytes);
            return Ok(());
        }
        // Layers are named `<id>/layer.tar` (docker), `<diff_id>.tar` (containers/image)
        // or `blobs/ALG/HEX` (OCI layouts); anything else (VERSION files) is not needed.
        if path.ends_with(".tar") || path.starts_with("blobs/") {
            let digests =
                compress(&head, rest, store, compression).map_err(|e| layer_err(&path, e))?;
            self.layers.insert(path, digests);
        }
        Ok(())
    }

    /// `path` after its links.
    fn resolve<'a>(&'a self, path: &'a str) -> &'a str {
        resolve_link(&self.links, path)
    }

    fn json(&self, path: &str) -> Result<&[u8], ImportError> {
        self.json
            .get(self.resolve(path))
            .map(Vec::as_slice)
            .ok_or_else(|| ImportError::Missing {
                path: path.to_owned(),
            })
    }

    /// The layer at `path`: compressed while it streamed, or (a layer tar that looked like
    /// JSON: a first entry named `{…`) compressed now from memory.
    fn layer(
        &self,
        path: &str,
        store: &OciDir,
        compression: Compression,
    ) -> Result<LayerDigests, ImportError> {
        let real = self.resolve(path);
        if let Some(d) = self.layers.get(real) {
            return Ok(d.clone());
        }
        match self.json.get(real) {
            Some(bytes) => {
                compress(&[], &mut &bytes[..], store, compression).map_err(|e| layer_err(path, e))
            }
            None => Err(ImportError::Missing {
                path: path.to_owned(),
            }),
        }
    }

    /// The one image of the archive, from Docker's `manifest.json`, else the OCI
    /// `index.json`: its config and layers, checked against each other.
    fn image(&self, store: &OciDir, compression: Compression) -> Result<BuiltImage, ImportError> {
        let (config_path, layer_paths) = if self.json.contains_key("manifest.json") {
            let entries: Vec<DockerEntry> = parse("manifest.json", self.json("manifest.json")?)?;
            match <[DockerEntry; 1]>::try_from(entries) {
                Ok([e]) => (e.config, e.layers),
                Err(v) => return Err(ImportError::Images { count: v.len() }),
            }
        } else if self.json.contains_key("index.json") {
            let index: OciIndex = parse("index.json", self.json("index.json")?)?;
            let mut digests: Vec<String> = index.manifests.into_iter().map(|m| m.digest).collect();
            // One image under several tags is listed once per tag.
            digests.sort();
            digests.dedup();
            let [digest] = <[String; 1]>::try_from(digests)
                .map_err(|v| ImportError::Images { count: v.len() })?;
            let path = blob_path(&digest, "index.json")?;
            let m: OciManifest = parse(&path, self.json(&path)?)?;
            let layers = m
                .layers
                .iter()
                .map(|l| blob_path(&l.digest, &path))
                .collect::<Result<_, _>>()?;
            (blob_path(&m.config.digest, &path)?, layers)
        } else {
            return Err(ImportError::NoManifest);
        };
        let config = self.json(&config_path)?.to_vec();
        let diff_ids = parse::<ConfigRootfs>(&config_path, &config)?
            .rootfs
            .diff_ids;
        if diff_ids.len() != layer_paths.len() {
            return Err(ImportError::LayerCount {
                config: diff_ids.len(),
                manifest: layer_paths.len(),
            });
        }
        let mut layers = Vec::with_capacity(layer_paths.len());
        for (index, (path, expected)) in layer_paths.iter().zip(diff_ids).enumerate() {
            let digests = self.layer(path, store, compression)?;
            if digests.diff_id != expected {
                return Err(ImportError::DiffId {
                    path: path.clone(),
                    index,
                    actual: digests.diff_id,
                    expected,
                });
            }
            layers.push(LayerDescriptor {
                digests,
                annotations: Default::default(),
            });
        }
        store.put_blob(&sha256_digest(&config), &config)?;
        Ok(with_config(config, &layers)?)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    layers: Vec<String>,
}

#[derive(Deserialize)]
struct OciIndex {
    manifests: Vec<OciDescriptor>,
}

#[derive(Deserialize)]
struct OciDescriptor {
    digest: String,
}

#[derive(Deserialize)]
struct OciManifest {
    config: OciDescriptor,
    layers: Vec<OciDescriptor>,
}

#[derive(Deserialize)]
struct ConfigRootfs {
    rootfs: Rootfs,
}

#[derive(Deserialize)]
struct Rootfs {
    diff_ids: Vec<String>,
}

fn parse<'a, T: Deserialize<'a>>(path: &str, bytes: &'a [u8]) -> Result<T, ImportError> {
    serde_json::from_slice(bytes).map_err(|e| ImportError::Invalid {
        path: path.to_owned(),
        detail: e.to_string(),
    })
}

/// `blobs/ALG/HEX` of a digest named in `by`.
fn blob_path(digest: &str, by: &str) -> Result<String, ImportError> {
    digest
        .split_once(':')
        .filter(|(alg, hex)| {
            let plain = |s: &str| {
                !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            };
            plain(alg) && plain(hex)
        })
        .map(|(alg, hex)| format!("blobs/{alg}/{hex}"))
        .ok_or_else(|| ImportError::Invalid {
            path: by.to_owned(),
            detail: format!("'{digest}' is not a digest"),
        })
}

fn layer_err(path: &str, source: ImportError) -> ImportError {
    match source {
        ImportError::Read(source) => ImportError::Layer {
            path: path.to_owned(),
            source,
        },
        other => other,
    }
}

/// Compresses the layer tar `head` + `rest` into a blob of `store`; a gzip or zstd stream is
/// decompressed first (the diff_id is that of the tar).
fn compress(
    head: &[u8],
    rest: &mut dyn Read,
    store: &OciDir,
    compression: Compression,
) -> Result<LayerDigests, ImportError> {
    let raw = Cursor::new(head).chain(rest);
    let mut tar: Box<dyn Read + '_> = match head {
        [0x1f, 0x8b, ..] => Box::new(flate2::read::MultiGzDecoder::new(raw)),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => {
            Box::new(zstd::stream::read::Decoder::new(raw).map_err(ImportError::Read)?)
        }
        _ => Box::new(raw),
    };
    let w = store.blob_writer()?;
    let (digests, w) = LayerWriter::new(w, compression)
        .and_then(|l| l.copy_tar(&mut tar))
        .map_err(ImportError::Read)?;
    w.commit(&digests.digest)?;
    Ok(digests)
}

/// Up to `n` first bytes of `r` (fewer only at its end), and the rest of it.
pub(crate) fn peek(r: &mut dyn Read, n: usize) -> io::Result<(Vec<u8>, &mut dyn Read)> {
    let mut head = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match r.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    head.truncate(got);
    Ok((head, r))
}

/// A name as the archive's manifests spell it: no `./`, no trailing `/`, `..` resolved.
/// The archive path the link entry `e` at `path` stands for: a symlink points from its own
/// directory, a hard link from the archive's root.
pub(crate) fn link_target<R: Read>(e: &tar::Entry<'_, R>, path: &str) -> io::Result<String> {
    let kind = e.header().entry_type();
    let target = e
        .link_name()?
        .map(|t| t.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(if kind.is_symlink() {
        join(parent(path), &target)
    } else {
        clean(&target)
    })
}

pub(crate) fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

pub(crate) fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(p, _)| p)
}

pub(crate) fn join(dir: &str, rel: &str) -> String {
    if rel.starts_with('/') || dir.is_empty() {
        clean(rel)
    } else {
        clean(&format!("{dir}/{rel}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::EntryMeta;

    fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = LayerWriter::new(Vec::new(), Compression::None).expect("writer");
        for (name, data) in files {
            let meta = EntryMeta {
                mode: 0o644,
                mtime: 1_700_000_000,
            };
            w.file(name, meta, data.len() as u64, &mut &data[..])
                .expect("file");
        }
        w.finish().expect("finish").1
    }

    /// What the pinned compressor makes of these exact tar bytes.
    fn expected(tar: &[u8], c: Compression) -> LayerDigests {
        LayerWriter::new(Vec::new(), c)
            .expect("writer")
            .copy_tar(&mut &tar[..])
            .expect("copy")
            .0
    }

    fn hex(tar: &[u8]) -> String {
        sha256_digest(tar).trim_start_matches("sha256:").to_owned()
    }

    fn config(diff_ids: &[String]) -> Vec<u8> {
        // Docker's own config fields, which an OCI config does not have, must survive.
        serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "docker_version": "20.10.24+dfsg1",
            "container_config": {"Hostname": "", "Cmd": ["/bin/sh"]},
            "config": {"Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .expect("json")
    }

    enum Item<'a> {
        File(&'a str, Vec<u8>),
        Symlink(&'a str, &'a str),
        Dir(&'a str),
    }

    fn archive(items: &[Item<'_>]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for i in items {
            let mut h = tar::Header::new_ustar();
            h.set_mode(0o644);
            match i {
                Item::File(name, data) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, name, &data[..]).expect("file");
                }
                Item::Symlink(name, target) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    b.append_link(&mut h, name, target).expect("link");
                }
                Item::Dir(name) => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    b.append_data(&mut h, name, io::empty()).expect("dir");
                }
            }
        }
        b.into_inner().expect("tar")
    }

    /// `docker save` as Docker 20.10 writes it: entries in name order (so manifest.json comes
    /// after the layers), a repeated layer as a symlink to the first copy.
    fn docker_save(layers: &[Vec<u8>], config: &[u8], diff_ids_ok: bool) -> Vec<u8> {
        let ids = ["0c39", "c931", "d980"].map(|p| format!("{p}{}", "0".repeat(60)));
        let config_name = format!("{}.json", hex(config));
        let mut items = vec![Item::Dir(&ids[0])];
        let names: Vec<String> = ids.iter().map(|d| format!("{d}/layer.tar")).collect();
        let version: Vec<String> = ids.iter().map(|d| format!("{d}/VERSION")).collect();
        let json: Vec<String> = ids.iter().map(|d| format!("{d}/json")).collect();
        items.push(Item::File(&version[0], b"1.0".to_vec()));
        items.push(Item::File(&json[0], br#"{"id":"x"}"#.to_vec()));
        items.push(Item::File(&names[0], layers[0].clone()));
        items.push(Item::File(&config_name, config.to_vec()));
        items.push(Item::File(&version[1], b"1.0".to_vec()));
        items.push(Item::File(&names[1], layers[1].clone()));
        // The third layer is the first again.
        let up = format!("../{}", names[0]);
        items.push(Item::Symlink(&names[2], &up));
        let manifest = serde_json::to_vec(&serde_json::json!([{
            "Config": config_name,
            "RepoTags": null,
            "Layers": if diff_ids_ok { names.to_vec() } else { vec![names[1].clone(), names[0].clone(), names[2].clone()] },
        }]))
        .expect("json");
        items.push(Item::File("manifest.json", manifest));
        items.push(Item::File("repositories", b"{}".to_vec()));
        archive(&items)
    }

    fn two_layers() -> (Vec<Vec<u8>>, Vec<String>) {
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let layers = vec![
            layer_tar(&[("a.txt", b"hello\n")]),
            layer_tar(&[("d/b", &big), ("{odd", b"x")]),
        ];
        let diff_ids = [&layers[0], &layers[1], &layers[0]]
            .iter()
            .map(|l| sha256_digest(l))
            .collect();
        (layers, diff_ids)
    }

    #[test]
    fn docker_save_archive_becomes_an_oci_image_of_the_same_layers() {
        let (layers, diff_ids) = two_layers();
        let cfg = config(&diff_ids);
        let bytes = docker_save(&layers, &cfg, true);
        for c in [Compression::Gzip, Compression::Zstd] {
            let dir = tempfile::tempdir().expect("tmp");
            let store = OciDir::create(dir.path()).expect("store");
            // Read in odd pieces, as a pipe delivers them.
            let image = import_archive(
                crate::layer::tests::PieceReader {
                    data: &bytes,
                    piece: 1000,
                },
                &store,
                c,
            )
            .expect("import");
            assert_eq!(image.config, cfg, "the config is kept byte for byte");
            assert_eq!(image.config_digest, sha256_digest(&cfg));
            let got: Vec<&LayerDigests> = image.layers.iter().map(|l| &l.digests).collect();
            let want = [
                expected(&layers[0], c),
                expected(&layers[1], c),
                expected(&layers[0], c),
            ];
            assert_eq!(got, want.iter().collect::<Vec<_>>(), "{c:?}");
            for (l, d) in image.layers.iter().zip(&diff_ids) {
                assert_eq!(&l.digests.diff_id, d);
                let blob = std::fs::read(store.blob_path(&l.digests.digest).expect("path"))
                    .expect("blob in the store");
                assert_eq!(sha256_digest(&blob), l.digests.digest);
            }
            assert!(store.blob_path(&image.config_digest).expect("p").is_file());
            let m: serde_json::Value = serde_json::from_slice(&image.manifest).expect("json");
            assert_eq!(m["config"]["digest"], image.config_digest.as_str());
            assert_eq!(m["layers"].as_array().expect("layers").len(), 3);
            // The store holds the blobs and nothing half-written.
            let names: Vec<String> = std::fs::read_dir(dir.path().join("blobs/sha256"))
                .expect("dir")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            assert_eq!(names.len(), 3, "two layers and the config: {names:?}");
        }
    }

    /// Docker 25's form and oci-archives: an OCI layout, layers possibly compressed (by
    /// another gzip than ours): the blob is ours, the diff_id the tar's.
    #[test]
    fn oci_layout_archive_with_compressed_layers() {
        use std::io::Write as _;
        let (layers, diff_ids) = two_layers();
        let cfg = config(&diff_ids);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&layers[1]).expect("gzip");
        let gz = gz.finish().expect("gzip");
        let zst = zstd::encode_all(&layers[0][..], 19).expect("zstd");
        let desc = |b: &[u8]| serde_json::json!({"mediaType": "x", "digest": sha256_digest(b), "size": b.len()});
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "config": desc(&cfg),
            "layers": [desc(&zst), desc(&gz), desc(&zst)],
        }))
        .expect("json");
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [desc(&manifest), desc(&manifest)],
        }))
        .expect("json");
        let blob = |b: &[u8]| format!("blobs/sha256/{}", hex(b));
        let (bz, bg, bm, bc) = (blob(&zst), blob(&gz), blob(&manifest), blob(&cfg));
        let bytes = archive(&[
            Item::File("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
            Item::File("index.json", index),
            Item::Dir("blobs/"),
            Item::File(&bz, zst.clone()),
            Item::File(&bg, gz.clone()),
            Item::File(&bm, manifest.clone()),
            Item::File(&bc, cfg.clone()),
        ]);
        let dir = tempfile::tempdir().expect("tmp");
        let store = OciDir::create(dir.path()).expect("store");
        let image = import_archive(&bytes[..], &store, Compression::Gzip).expect("import");
        assert_eq!(image.config, cfg);
        let got: Vec<LayerDigests> = image.layers.iter().map(|l| l.digests.clone()).collect();
        assert_eq!(
            got,
            [
                expected(&layers[0], Compression::Gzip),
                expected(&layers[1], Compression::Gzip),
                expected(&layers[0], Compression::Gzip),
            ]
        );
    }

    #[test]
    fn what_is_not_an_image_is_refused() {
        let (layers, diff_ids) = two_layers();
        let cfg = config(&diff_ids);
        let dir = tempfile::tempdir().expect("tmp");
        let store = OciDir::create(dir.path()).expect("store");
        let import = |bytes: &[u8]| import_archive(bytes, &store, Compression::Gzip);

        let no_manifest = archive(&[Item::File("a/layer.tar", layers[0].clone())]);
        assert!(matches!(import(&no_manifest), Err(ImportError::NoManifest)));

        let swapped = docker_save(&layers, &cfg, false);
        match import(&swapped) {
            Err(ImportError::DiffId { index: 0, path, .. }) => {
                assert!(path.starts_with("c931"), "{path}")
            }
            other => panic!("{other:?}"),
        }

        let mut truncated = docker_save(&layers, &cfg, true);
        truncated.truncate(3000);
        assert!(
            matches!(
                import(&truncated),
                Err(ImportError::Read(_) | ImportError::Layer { .. } | ImportError::NoManifest)
            ),
            "{:?}",
            import(&truncated)
        );

        let two = serde_json::to_vec(&serde_json::json!([
            {"Config": "c.json", "Layers": []},
            {"Config": "c.json", "Layers": []},
        ]))
        .expect("json");
        let archive2 = archive(&[Item::File("manifest.json", two)]);
        assert!(matches!(
            import(&archive2),
            Err(ImportError::Images { count: 2 })
        ));

        let missing = serde_json::to_vec(&serde_json::json!([
            {"Config": "c.json", "Layers": ["gone/layer.tar"]},
        ]))
        .expect("json");
        let cfg1 = config(&[sha256_digest(&layers[0])]);
        let archive3 = archive(&[
            Item::File("c.json", cfg1),
            Item::File("manifest.json", missing),
        ]);
        match import(&archive3) {
            Err(ImportError::Missing { path }) => assert_eq!(path, "gone/layer.tar"),
            other => panic!("{other:?}"),
        }

        let bad = archive(&[Item::File("manifest.json", b"{not json".to_vec())]);
        match import(&bad) {
            Err(e @ ImportError::Invalid { .. }) => {
                assert!(
                    e.to_string().starts_with("manifest.json in the archive"),
                    "{e}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn names_are_cleaned_and_links_resolved() {
        assert_eq!(clean("./a//b/../c/"), "a/c");
        assert_eq!(join("x/y", "../z/layer.tar"), "x/z/layer.tar");
        assert_eq!(join("", "a.tar"), "a.tar");
        assert_eq!(join("x", "/abs.tar"), "abs.tar");
        let mut f = Found::default();
        f.links.insert("a".into(), "b".into());
        f.links.insert("b".into(), "a".into());
        // A loop ends after a bounded number of hops.
        assert!(["a", "b"].contains(&f.resolve("a")));
    }
}
