//! Deterministic layer tars, compressed while streaming, with the uncompressed `diff_id` and
//! the compressed blob digest computed in the same pass.
//!
//! Headers are written by hand on top of `tar::Header` on purpose: `tar::Builder` falls back
//! to GNU `././@LongLink` entries for long names, while our layer format wants plain ustar
//! with PAX records carrying only `path`/`linkpath`, and nothing else that varies by machine.

use std::io::{self, Read, Write};

use sha2::{Digest as _, Sha256};

use crate::digest::{Counted, HashingWriter};

/// Layer compression. Backends and levels are pinned: changing either changes every digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// gzip level 6 via flate2's zlib-rs backend; header mtime 0, no name, OS 255.
    Gzip,
    /// zstd level 3, single-threaded (multi-threaded output differs).
    Zstd,
    None,
}

impl Compression {
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::None => "none",
        }
    }
}

enum Compressor<W: Write> {
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
    None(W),
}

impl<W: Write> Compressor<W> {
    fn new(w: W, c: Compression) -> io::Result<Compressor<W>> {
        Ok(match c {
            Compression::Gzip => Compressor::Gzip(
                flate2::GzBuilder::new()
                    .mtime(0)
                    .operating_system(255)
                    .write(w, flate2::Compression::new(6)),
            ),
            Compression::Zstd => Compressor::Zstd(zstd::stream::write::Encoder::new(w, 3)?),
            Compression::None => Compressor::None(w),
        })
    }

    fn finish(self) -> io::Result<W> {
        match self {
            Compressor::Gzip(g) => g.finish(),
            Compressor::Zstd(z) => z.finish(),
            Compressor::None(w) => Ok(w),
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::Gzip(g) => g.write(buf),
            Compressor::Zstd(z) => z.write(buf),
            Compressor::None(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::Gzip(g) => g.flush(),
            Compressor::Zstd(z) => z.flush(),
            Compressor::None(w) => w.flush(),
        }
    }
}

/// The digests and size of a finished layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerDigests {
    /// `sha256:` of the uncompressed tar.
    pub diff_id: String,
    /// `sha256:` of the blob as stored.
    pub digest: String,
    /// Bytes of the blob as stored.
    pub size: u64,
    pub media_type: &'static str,
}

/// Metadata of one layer entry; ownership and other machine-dependent fields are not
/// settable: they are always uid/gid 0 with empty names.
#[derive(Debug, Clone, Copy)]
pub struct EntryMeta {
    pub mode: u32,
    pub mtime: u64,
}

/// Hands the compressor fixed-size chunks whatever sizes it is written in. The compressed
/// bytes must not depend on how the tar stream happened to be split (that varies with xz
/// decoder timing), and zlib-rs's deflate output does depend on the input chunking (found by
/// `compressed_bytes_do_not_depend_on_write_sizes`), so it only ever sees whole chunks.
struct Rechunk<W: Write> {
    inner: W,
    buf: Vec<u8>,
}

const CHUNK: usize = 128 * 1024;

impl<W: Write> Rechunk<W> {
    fn new(inner: W) -> Rechunk<W> {
        Rechunk {
            inner,
            buf: Vec::with_capacity(CHUNK),
        }
    }

    fn finish(mut self) -> io::Result<W> {
        if !self.buf.is_empty() {
            self.inner.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(self.inner)
    }
}

impl<W: Write> Write for Rechunk<W> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let n = data.len();
        while !data.is_empty() {
            let take = (CHUNK - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == CHUNK {
                self.inner.write_all(&self.buf)?;
                self.buf.clear();
            }
        }
        Ok(n)
    }

    /// Does not push a partial chunk down: that would make the output depend on flush points.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes a normalized layer tar into `W`, compressing and hashing on the way.
pub struct LayerWriter<W: Write> {
    out: HashingWriter<Rechunk<Compressor<HashingWriter<Counted<W>>>>>,
    compression: Compression,
    pax_seq: u64,
}

const BLOCK: usize = 512;

/// The tar stream inside a layer blob compressed with `compression`.
pub fn decompressed<'a, R: Read + 'a>(
    blob: R,
    compression: Compression,
) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match compression {
        Compression::Gzip => Box::new(flate2::read::GzDecoder::new(blob)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(blob)?),
        Compression::None => Box::new(blob),
    })
}

/// Where normalized entries go: a layer tar ([`LayerWriter`]), or a directory tree (an
/// engine's build context). Paths are relative, `/`-separated, already checked.
pub trait EntrySink {
    fn dir(&mut self, path: &str, meta: EntryMeta) -> io::Result<()>;
    fn file(
        &mut self,
        path: &str,
        meta: EntryMeta,
        size: u64,
        data: &mut dyn Read,
    ) -> io::Result<()>;
    fn symlink(&mut self, path: &str, target: &str, meta: EntryMeta) -> io::Result<()>;
    fn hardlink(&mut self, path: &str, target: &str, meta: EntryMeta) -> io::Result<()>;
}

impl<W: Write> EntrySink for LayerWriter<W> {
    fn dir(&mut self, path: &str, meta: EntryMeta) -> io::Result<()> {
        LayerWriter::dir(self, path, meta)
    }
    fn file(
        &mut self,
        path: &str,
        meta: EntryMeta,
        size: u64,
        data: &mut dyn Read,
    ) -> io::Result<()> {
        LayerWriter::file(self, path, meta, size, data)
    }
    fn symlink(&mut self, path: &str, target: &str, meta: EntryMeta) -> io::Result<()> {
        LayerWriter::symlink(self, path, target, meta)
    }
    fn hardlink(&mut self, path: &str, target: &str, meta: EntryMeta) -> io::Result<()> {
        LayerWriter::hardlink(self, path, target, meta)
    }
}

impl<W: Write> LayerWriter<W> {
    pub fn new(out: W, compression: Compression) -> io::Result<LayerWriter<W>> {
        // An uncompressed blob is the tar itself: its digest is the diff_id, hashed once.
        let blob = if compression == Compression::None {
            HashingWriter::unhashed(Counted::new(out))
        } else {
            HashingWriter::new(Counted::new(out))
        };
        Ok(LayerWriter {
            out: HashingWriter::new(Rechunk::new(Compressor::new(blob, compression)?)),
            compression,
            pax_seq: 0,
        })
    }

    pub fn dir(&mut self, path: &str, meta: EntryMeta) -> io::Result<()> {
        let name = if path.ends_with('/') {
            path.to_owned()
        } else {
            format!("{path}/")
        };
        self.entry(
            &name,
            tar::EntryType::Directory,
            meta,
            None,
            0,
            &mut io::empty(),
        )
    }

    pub fn file(
        &mut self,
        path: &str,
        meta: EntryMeta,
        size: u64,
        data: &mut dyn Read,
    ) -> io::Result<()> {
        self.entry(path, tar::EntryType::Regular, meta, None, size, data)
    }

    pub fn symlink(&mut self, path: &str, target: &str, meta: EntryMeta) -> io::Result<()> {
        self.entry(
            path,
            tar::EntryType::Symlink,
            meta,
            Some(target),
            0,
            &mut io::empty(),
        )
    }

    pub fn hardlink(&mut self, path: &str, target: &str, meta: EntryMeta) -> io::Result<()> {
        self.entry(
            path,
            tar::EntryType::Link,
            meta,
            Some(target),
            0,
            &mut io::empty(),
        )
    }

    fn entry(
        &mut self,
        path: &str,
        kind: tar::EntryType,
        meta: EntryMeta,
        link: Option<&str>,
        size: u64,
        data: &mut dyn Read,
    ) -> io::Result<()> {
        // Callers check paths against their own rules; this is the last line: a layer never
        // holds an absolute path or a `..` component, whatever the caller did.
        let body = path.strip_suffix('/').unwrap_or(path);
        if body.is_empty()
            || body.starts_with('/')
            || body
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("refusing layer entry '{path}': not a plain relative path"),
            ));
        }
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(meta.mode & 0o7777);
        h.set_mtime(meta.mtime);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(size);
        let mut pax: Vec<(&str, &str)> = Vec::new();
        if h.set_path(path).is_err() {
            pax.push(("path", path));
            set_truncated_name(&mut h, path);
        }
        if let Some(target) = link
            && h.set_link_name(target).is_err()
        {
            pax.push(("linkpath", target));
            set_truncated_link(&mut h, target);
        }
        if !pax.is_empty() {
            self.pax(&pax)?;
        }
        h.set_cksum();
        self.out.write_all(h.as_bytes())?;
        let copied = io::copy(&mut data.take(size), &mut self.out)?;
        if copied != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{path}: expected {size} bytes of content, got {copied}"),
            ));
        }
        pad(&mut self.out, size)
    }

    /// A PAX extended header entry with only the given records.
    fn pax(&mut self, records: &[(&str, &str)]) -> io::Result<()> {
        let mut body = Vec::new();
        for (k, v) in records {
            body.extend_from_slice(&pax_record(k, v));
        }
        self.pax_seq += 1;
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_path(format!("PaxHeaders/{}", self.pax_seq))?;
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(body.len() as u64);
        h.set_cksum();
        self.out.write_all(h.as_bytes())?;
        self.out.write_all(&body)?;
        pad(&mut self.out, body.len() as u64)
    }

    /// Ends the tar (two zero blocks), flushes the compressor and returns the digests.
    pub fn finish(mut self) -> io::Result<(LayerDigests, W)> {
        self.out.write_all(&[0u8; 2 * BLOCK])?;
        self.done()
    }

    /// A complete layer tar (end blocks included) made this writer's layer byte for byte,
    /// nothing re-normalized: its diff_id is the digest of exactly these bytes. For a staged
    /// uncompressed layer of an earlier `LayerWriter` this gives the blob a streaming build
    /// would have (the compressor only ever sees whole chunks); for another tool's layer tar
    /// (`docker save`), a blob whose digest depends on the tar bytes alone, on any machine.
    pub fn copy_tar(mut self, tar: &mut dyn Read) -> io::Result<(LayerDigests, W)> {
        io::copy(tar, &mut self.out)?;
        self.done()
    }

    fn done(self) -> io::Result<(LayerDigests, W)> {
        let (diff, rechunk) = self.out.into_parts();
        let blob = rechunk.finish()?.finish()?;
        let (blob_hash, counted) = blob.into_parts();
        let (inner, size) = counted.into_parts();
        let diff_id = format!("sha256:{}", hex::encode(diff.finalize()));
        let digest = if self.compression == Compression::None {
            diff_id.clone()
        } else {
            format!("sha256:{}", hex::encode(blob_hash.finalize()))
        };
        Ok((
            LayerDigests {
                diff_id,
                digest,
                size,
                media_type: self.compression.media_type(),
            },
            inner,
        ))
    }
}

fn pad(w: &mut impl Write, size: u64) -> io::Result<()> {
    let rem = (size % BLOCK as u64) as usize;
    if rem != 0 {
        w.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
    }
    Ok(())
}

/// `"<len> <key>=<value>\n"` where `<len>` counts the whole record, its own digits included.
fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    format!("{len} {key}={value}\n").into_bytes()
}

/// The ustar name field holds a (truncated) fallback for readers that ignore PAX.
fn set_truncated_name(h: &mut tar::Header, path: &str) {
    if let Some(u) = h.as_ustar_mut() {
        let b = path.as_bytes();
        let n = b.len().min(99);
        u.name = [0; 100];
        u.name[..n].copy_from_slice(&b[..n]);
        u.prefix = [0; 155];
    }
}

fn set_truncated_link(h: &mut tar::Header, target: &str) {
    if let Some(u) = h.as_ustar_mut() {
        let b = target.as_bytes();
        let n = b.len().min(99);
        u.linkname = [0; 100];
        u.linkname[..n].copy_from_slice(&b[..n]);
    }
}

/// `sha256:<hex>` of some bytes.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn meta() -> EntryMeta {
        EntryMeta {
            mode: 0o755,
            mtime: 1_700_000_000,
        }
    }

    #[test]
    fn pax_record_lengths() {
        assert_eq!(pax_record("path", "a"), b"9 path=a\n".to_vec());
        assert_eq!(pax_record("path", "abc"), b"12 path=abc\n".to_vec());
        let long = "x".repeat(300);
        let r = pax_record("path", &long);
        let len: usize = String::from_utf8_lossy(&r)
            .split(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert_eq!(len, r.len());
    }

    fn build(c: Compression) -> (LayerDigests, Vec<u8>) {
        let mut w = LayerWriter::new(Vec::new(), c).expect("writer");
        w.dir("hab/", meta()).expect("dir");
        let long = format!("hab/{}/file", "d".repeat(200));
        w.file(&long, meta(), 5, &mut &b"hello"[..]).expect("file");
        w.symlink("hab/link", &format!("/{}", "t".repeat(150)), meta())
            .expect("link");
        w.finish().expect("finish")
    }

    #[test]
    fn deterministic_and_readable() {
        for c in [Compression::Gzip, Compression::Zstd, Compression::None] {
            let (a, bytes) = build(c);
            let (b, _) = build(c);
            assert_eq!(a, b);
            assert_eq!(a.size, bytes.len() as u64);
            assert_eq!(a.digest, sha256_digest(&bytes));
            let tar_bytes = match c {
                Compression::Gzip => {
                    let mut out = Vec::new();
                    flate2::read::GzDecoder::new(&bytes[..])
                        .read_to_end(&mut out)
                        .expect("gunzip");
                    out
                }
                Compression::Zstd => zstd::decode_all(&bytes[..]).expect("unzstd"),
                Compression::None => bytes.clone(),
            };
            assert_eq!(a.diff_id, sha256_digest(&tar_bytes));
            let mut ar = tar::Archive::new(&tar_bytes[..]);
            let names: Vec<String> = ar
                .entries()
                .expect("entries")
                .map(|e| {
                    let e = e.expect("entry");
                    assert_eq!(e.header().uid().expect("uid"), 0);
                    assert_eq!(e.header().username().expect("utf8"), Some(""));
                    e.path().expect("path").to_string_lossy().into_owned()
                })
                .collect();
            assert_eq!(names[0], "hab/");
            assert_eq!(names[1].len(), 4 + 200 + 5);
            assert_eq!(names[2], "hab/link");
        }
    }

    /// The same tar content written in different piece sizes must compress to the same bytes.
    #[test]
    fn compressed_bytes_do_not_depend_on_write_sizes() {
        let mut state = 7u64;
        let data: Vec<u8> = (0..3_000_000)
            .map(|i| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                if i % 7 < 4 {
                    b"abcdefgh"[(state >> 60) as usize % 8]
                } else {
                    (state >> 56) as u8
                }
            })
            .collect();
        for c in [Compression::Gzip, Compression::Zstd] {
            let mut digests = Vec::new();
            for piece in [1usize, 517, 8192, 65_536, 1 << 20] {
                let mut w = LayerWriter::new(Vec::new(), c).expect("writer");
                let mut r = PieceReader { data: &data, piece };
                w.file("f", meta(), data.len() as u64, &mut r)
                    .expect("file");
                digests.push(w.finish().expect("finish").0);
            }
            assert!(
                digests.windows(2).all(|p| p[0] == p[1]),
                "{c:?}: {digests:?}"
            );
        }
    }

    #[test]
    fn staged_uncompressed_layer_compresses_to_the_streamed_blob() {
        let data: Vec<u8> = (0..700_000u32)
            .map(|i| ((i % 251) ^ (i / 3)) as u8)
            .collect();
        let write = |w: &mut LayerWriter<Vec<u8>>| {
            w.dir("hab", meta()).expect("dir");
            w.file("hab/f", meta(), data.len() as u64, &mut &data[..])
                .expect("file");
            w.symlink("hab/l", "f", meta()).expect("link");
        };
        let mut raw = LayerWriter::new(Vec::new(), Compression::None).expect("writer");
        write(&mut raw);
        let (raw_d, tar) = raw.finish().expect("finish");
        assert_eq!(raw_d.digest, raw_d.diff_id);
        assert_eq!(raw_d.digest, sha256_digest(&tar));
        assert_eq!(raw_d.size, tar.len() as u64);
        for c in [Compression::Gzip, Compression::Zstd] {
            let mut direct = LayerWriter::new(Vec::new(), c).expect("writer");
            write(&mut direct);
            let (want, want_blob) = direct.finish().expect("finish");
            let (got, blob) = LayerWriter::new(Vec::new(), c)
                .expect("writer")
                .copy_tar(&mut PieceReader {
                    data: &tar,
                    piece: 4099,
                })
                .expect("copy");
            assert_eq!(got, want, "{c:?}");
            assert_eq!(blob, want_blob, "{c:?}");
            assert_eq!(got.diff_id, raw_d.diff_id);
        }
    }

    /// Hands out `data` at most `piece` bytes per read (also used by `import.rs`' tests).
    pub(crate) struct PieceReader<'a> {
        pub(crate) data: &'a [u8],
        pub(crate) piece: usize,
    }

    impl Read for PieceReader<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.piece.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn unsafe_paths_are_refused() {
        let mut w = LayerWriter::new(Vec::new(), Compression::None).expect("writer");
        for p in ["/etc/passwd", "a/../b", "", "a//b", "./a"] {
            assert!(w.file(p, meta(), 0, &mut io::empty()).is_err(), "{p}");
        }
        assert!(w.dir("hab/", meta()).is_ok());
    }

    #[test]
    fn short_content_is_an_error() {
        let mut w = LayerWriter::new(Vec::new(), Compression::None).expect("writer");
        assert!(w.file("a", meta(), 10, &mut &b"abc"[..]).is_err());
    }
}
