//! Reading `.hart` files: the five-line header, signature and hash verification in one
//! streaming pass, and the verified xz payload as a reader.
//!
//! The header parser is written by hand on purpose: it is five lines, and each of upstream's
//! error cases must surface as its own typed error.

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::Signature;

use crate::keys::{KeyDirs, KeyLookupError, NamedRevision};

/// The longest header line we accept. The real ones are at most ~270 bytes (a 255-character
/// origin plus a revision; a 172-character signature).
pub const MAX_HEADER_LINE: usize = 1024;

/// The combined signature is 64 signature bytes plus the 64-character hex hash.
const SIGNATURE_LEN: usize = 128;

/// xz stream magic (start) and footer magic (end).
const XZ_MAGIC: &[u8] = b"\xFD7zXZ\x00";
const XZ_FOOTER_MAGIC: &[u8] = b"YZ";

/// What is wrong with a hart's header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("corrupt payload, can't read format version (the file is empty)")]
    Empty,
    #[error("unsupported format version '{0}' (expected HART-1); is this a .hart file?")]
    FormatVersion(String),
    #[error("header line {line} is longer than {MAX_HEADER_LINE} bytes")]
    LineTooLong { line: usize },
    #[error("header line {line} is not UTF-8 text")]
    NotUtf8 { line: usize },
    #[error(transparent)]
    NamedRevision(#[from] crate::keys::NamedRevisionError),
    #[error("unsupported signature type '{0}' (expected BLAKE2b)")]
    HashType(String),
    #[error("can't decode signature: line 4 is not valid base64")]
    SignatureBase64,
    #[error("signature is {0} bytes, expected {SIGNATURE_LEN}")]
    SignatureLength(usize),
    #[error("expected empty delimiter line in header; got '{0}'")]
    Delimiter(String),
    #[error("corrupt payload, can't find end of header (the file ends at header line {line})")]
    Truncated { line: usize },
}

/// A parsed header.
#[derive(Clone, PartialEq, Eq)]
pub struct Header {
    pub signer: NamedRevision,
    /// The decoded combined signature: 64 bytes of signature, then the signed message.
    pub signature: Vec<u8>,
}

impl fmt::Debug for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Header")
            .field("signer", &self.signer)
            .finish_non_exhaustive()
    }
}

impl Header {
    /// The header bytes exactly as Habitat writes them.
    pub fn to_bytes(&self) -> Vec<u8> {
        format!(
            "HART-1\n{}\nBLAKE2b\n{}\n\n",
            self.signer,
            B64.encode(&self.signature)
        )
        .into_bytes()
    }
}

/// Reads one header line (up to and excluding `\n`), bounded by [`MAX_HEADER_LINE`].
/// Returns `None` at end of file before any byte.
fn read_line<R: BufRead>(
    r: &mut R,
    line: usize,
    consumed: &mut u64,
) -> Result<Option<String>, io::Error> {
    let mut buf = Vec::new();
    let n = r
        .by_ref()
        .take(MAX_HEADER_LINE as u64 + 1)
        .read_until(b'\n', &mut buf)?;
    *consumed += n as u64;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    } else if buf.len() > MAX_HEADER_LINE {
        return Err(io::Error::other(HeaderError::LineTooLong { line }));
    } else {
        // End of file in the middle of a line: the header is cut short.
        return Err(io::Error::other(HeaderError::Truncated { line }));
    }
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| io::Error::other(HeaderError::NotUtf8 { line }))
}

/// Parses the five header lines from `r`, returning the header and how many bytes it took.
/// Lines are trimmed as Habitat trims them (so `\r\n` is tolerated).
pub fn parse_header<R: BufRead>(r: &mut R) -> Result<(Header, u64), HeaderReadError> {
    let mut consumed = 0u64;
    let mut next = |line: usize| -> Result<Option<String>, HeaderReadError> {
        read_line(r, line, &mut consumed)
            .map(|o| o.map(|s| s.trim().to_owned()))
            .map_err(HeaderReadError::from_io)
    };
    let version = next(1)?.ok_or(HeaderError::Empty)?;
    if version != "HART-1" {
        return Err(HeaderError::FormatVersion(version.chars().take(40).collect()).into());
    }
    let signer = next(2)?.ok_or(HeaderError::Truncated { line: 2 })?;
    let signer = NamedRevision::parse(&signer).map_err(HeaderError::from)?;
    let hash_type = next(3)?.ok_or(HeaderError::Truncated { line: 3 })?;
    if hash_type != "BLAKE2b" {
        return Err(HeaderError::HashType(hash_type.chars().take(40).collect()).into());
    }
    let sig = next(4)?.ok_or(HeaderError::Truncated { line: 4 })?;
    let signature = B64
        .decode(sig.as_bytes())
        .map_err(|_| HeaderError::SignatureBase64)?;
    if signature.len() != SIGNATURE_LEN {
        return Err(HeaderError::SignatureLength(signature.len()).into());
    }
    let delim = next(5)?.ok_or(HeaderError::Truncated { line: 5 })?;
    if !delim.is_empty() {
        return Err(HeaderError::Delimiter(delim.chars().take(40).collect()).into());
    }
    Ok((Header { signer, signature }, consumed))
}

/// A header that could not be read: either malformed or an I/O failure.
#[derive(Debug, thiserror::Error)]
pub enum HeaderReadError {
    #[error(transparent)]
    Header(#[from] HeaderError),
    #[error(transparent)]
    Io(io::Error),
}

impl HeaderReadError {
    fn from_io(e: io::Error) -> HeaderReadError {
        if e.get_ref().is_some_and(|inner| inner.is::<HeaderError>()) {
            let inner = e
                .into_inner()
                .and_then(|b| b.downcast::<HeaderError>().ok());
            match inner {
                Some(h) => HeaderReadError::Header(*h),
                None => HeaderReadError::Io(io::Error::other("header read failed")),
            }
        } else {
            HeaderReadError::Io(e)
        }
    }
}

/// Errors about one `.hart` file; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum HartError {
    #[error("{}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: bad header", path.display())]
    Header { path: PathBuf, source: HeaderError },
    /// The lookup's failure is part of the message (it completes the sentence), so it is
    /// not also this error's `source()`.
    #[error("{}: signed by {signer}, but {problem}", path.display())]
    UnknownKey {
        path: PathBuf,
        signer: NamedRevision,
        problem: Box<KeyLookupError>,
    },
    #[error(
        "{}: the signature does not verify with public key {key} (the header was altered, or the key is not the one that signed it)",
        path.display()
    )]
    BadSignature { path: PathBuf, key: PathBuf },
    #[error("{}: the signed message is not a BLAKE2b-256 hex digest", path.display())]
    BadSignedHash { path: PathBuf },
    #[error(
        "{}: payload was modified: the signature is for BLAKE2b {expected} but the payload hashes to {computed}",
        path.display()
    )]
    HashMismatch {
        path: PathBuf,
        expected: String,
        computed: String,
    },
    #[error(
        "{}: payload is truncated: {payload_len} bytes after the header and no xz stream footer at the end (the download or copy was cut short)",
        path.display()
    )]
    Truncated { path: PathBuf, payload_len: u64 },
    #[error("{}: payload is not an xz stream (bad magic bytes)", path.display())]
    NotXz { path: PathBuf },
    #[error("{}: reading the payload", path.display())]
    Payload { path: PathBuf, source: io::Error },
    #[error("{}: {detail}", path.display())]
    Metadata { path: PathBuf, detail: String },
}

/// An opened `.hart` whose header parsed. Nothing of its payload has been decoded.
#[derive(Debug, Clone)]
pub struct Hart {
    path: PathBuf,
    header: Header,
    header_len: u64,
}

/// Hex BLAKE2b-256.
fn blake2b256() -> blake2b_simd::State {
    blake2b_simd::Params::new().hash_length(32).to_state()
}

/// BLAKE2b-256 of `data`, lowercase hex (what Habitat signs).
pub fn blake2b_hex(data: &[u8]) -> String {
    hex::encode(blake2b256().update(data).finalize().as_bytes())
}

impl Hart {
    pub fn open(path: &Path) -> Result<Hart, HartError> {
        let file = File::open(path).map_err(|source| HartError::Io {
            path: path.to_owned(),
            source,
        })?;
        let mut r = BufReader::with_capacity(4096, file);
        let (header, header_len) = parse_header(&mut r).map_err(|e| match e {
            HeaderReadError::Header(source) => HartError::Header {
                path: path.to_owned(),
                source,
            },
            HeaderReadError::Io(source) => HartError::Io {
                path: path.to_owned(),
                source,
            },
        })?;
        Ok(Hart {
            path: path.to_owned(),
            header,
            header_len,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn signer(&self) -> &NamedRevision {
        &self.header.signer
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    fn io_err(&self) -> impl Fn(io::Error) -> HartError + '_ {
        |source| HartError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Checks the signature against the signer's public key from `keys`, then hashes the
    /// payload in one streaming pass (also computing the whole-file checksum) and compares.
    pub fn verify(self, keys: &KeyDirs) -> Result<VerifiedHart, HartError> {
        let (key, key_path) =
            keys.find_file(&self.header.signer)
                .map_err(|source| HartError::UnknownKey {
                    path: self.path.clone(),
                    signer: self.header.signer.clone(),
                    problem: Box::new(source),
                })?;
        let (sig, message) = self.header.signature.split_at(64);
        let sig = Signature::from_bytes(sig.try_into().map_err(|_| HartError::BadSignedHash {
            path: self.path.clone(),
        })?);
        key.key
            .verify_strict(message, &sig)
            .map_err(|_| HartError::BadSignature {
                path: self.path.clone(),
                key: key_path,
            })?;
        let expected = std::str::from_utf8(message)
            .ok()
            .filter(|m| m.len() == 64 && m.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| HartError::BadSignedHash {
                path: self.path.clone(),
            })?
            .to_ascii_lowercase();

        let mut file = File::open(&self.path).map_err(self.io_err())?;
        let mut whole = blake2b256();
        let mut payload = blake2b256();
        let mut buf = vec![0u8; 256 * 1024];
        let mut pos = 0u64;
        let mut head: Vec<u8> = Vec::with_capacity(8);
        let mut tail = [0u8; 2];
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io_err()(e)),
            };
            let chunk = &buf[..n];
            let skip = self.header_len.saturating_sub(pos).min(n as u64) as usize;
            let body = &chunk[skip..];
            // Both hashes cover (nearly) the same bytes: one SIMD pass over two lanes costs
            // little more than one hash (it was half the time of a warm export).
            blake2b_simd::many::update_many([(&mut whole, chunk), (&mut payload, body)]);
            if head.len() < XZ_MAGIC.len() {
                let want = XZ_MAGIC.len() - head.len();
                head.extend_from_slice(&body[..want.min(body.len())]);
            }
            // Keep the last two payload bytes for the truncation check.
            match body {
                [.., a, b] => tail = [*a, *b],
                [b] => tail = [tail[1], *b],
                [] => {}
            }
            pos += n as u64;
        }
        let payload_len = pos.saturating_sub(self.header_len);
        let computed = hex::encode(payload.finalize().as_bytes());
        if computed != expected {
            if payload_len < XZ_MAGIC.len() as u64 {
                return Err(HartError::Truncated {
                    path: self.path.clone(),
                    payload_len,
                });
            }
            if head != XZ_MAGIC {
                return Err(HartError::NotXz {
                    path: self.path.clone(),
                });
            }
            if tail != XZ_FOOTER_MAGIC {
                return Err(HartError::Truncated {
                    path: self.path.clone(),
                    payload_len,
                });
            }
            return Err(HartError::HashMismatch {
                path: self.path.clone(),
                expected,
                computed,
            });
        }
        Ok(VerifiedHart {
            hart: self,
            checksum: hex::encode(whole.finalize().as_bytes()),
            payload_hash: computed,
            payload_len,
            file_len: pos,
            max_unpacked: DEFAULT_MAX_UNPACKED,
        })
    }
}

/// A hart whose signature and payload hash checked out. Only a `VerifiedHart` hands out
/// decoded payload bytes.
#[derive(Debug, Clone)]
pub struct VerifiedHart {
    hart: Hart,
    checksum: String,
    payload_hash: String,
    payload_len: u64,
    file_len: u64,
    max_unpacked: u64,
}

/// How many bytes a payload may decode to unless told otherwise: generous for real
/// packages (the largest Habitat packages unpack to a few GB), a bound for a small hart that
/// inflates without end (xz packs a GB of zeros into ~150 KB).
pub const DEFAULT_MAX_UNPACKED: u64 = 8 << 30;

/// How many threads xz decoding may use for one payload (multi-block streams decode blocks
/// in parallel; a single-block stream decodes on one thread whatever this says).
#[derive(Debug, Clone, Copy)]
pub struct DecodeOptions {
    pub threads: u32,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions { threads: 1 }
    }
}

impl VerifiedHart {
    pub fn path(&self) -> &Path {
        &self.hart.path
    }

    pub fn signer(&self) -> &NamedRevision {
        &self.hart.header.signer
    }

    /// BLAKE2b-256 of the whole file, lowercase hex: Habitat's and Builder's "checksum".
    pub fn checksum(&self) -> &str {
        &self.checksum
    }

    /// BLAKE2b-256 of the payload (what the signature covers).
    pub fn payload_hash(&self) -> &str {
        &self.payload_hash
    }

    pub fn payload_len(&self) -> u64 {
        self.payload_len
    }

    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// The decoded tar stream. The file is opened again and its payload re-hashed while it
    /// is decoded: if the file changed since verification, reading fails at the end instead
    /// of returning unverified bytes as good. liblzma's multi-threaded decoder is built by
    /// hand because its `new_parallel` leaves `memlimit_threading` at 0, i.e. one thread.
    /// Bounds what [`VerifiedHart::payload`] may decode to: beyond `max` bytes, reading
    /// fails (the whole tar stream counts, headers and padding included).
    pub fn with_max_unpacked(mut self, max: u64) -> VerifiedHart {
        self.max_unpacked = max;
        self
    }

    pub fn max_unpacked(&self) -> u64 {
        self.max_unpacked
    }

    pub fn payload(&self, opts: DecodeOptions) -> Result<impl Read + use<>, HartError> {
        let mut file = File::open(&self.hart.path).map_err(self.hart.io_err())?;
        file.seek(SeekFrom::Start(self.hart.header_len))
            .map_err(self.hart.io_err())?;
        let checked = RehashReader {
            inner: file,
            state: blake2b256(),
            expected: self.payload_hash.clone(),
            done: false,
        };
        let stream = liblzma::stream::MtStreamBuilder::new()
            .threads(opts.threads.max(1))
            .memlimit_threading(1 << 30)
            // A header may ask for a dictionary of up to 4 GiB; Habitat's `xz -6` uses 8 MiB
            // and `-9` 64 MiB. Past 2 GiB decoding fails instead of taking the memory.
            .memlimit_stop(2 << 30)
            .decoder()
            .map_err(|e| HartError::Payload {
                path: self.hart.path.clone(),
                source: io::Error::other(e),
            })?;
        Ok(Bounded {
            inner: liblzma::read::XzDecoder::new_stream(
                BufReader::with_capacity(256 * 1024, checked),
                stream,
            ),
            left: self.max_unpacked,
            max: self.max_unpacked,
        })
    }
}

/// Fails a read that would go beyond `max` decoded bytes: a decompression bomb stops at the
/// bound instead of filling a disk or running for hours.
struct Bounded<R> {
    inner: R,
    left: u64,
    max: u64,
}

/// A payload decoded past its bound (a decompression bomb, or a genuine package larger than
/// the bound the caller set): carried inside the `io::Error` of the read that crossed it.
#[derive(Debug, thiserror::Error)]
#[error(
    "the payload unpacks to more than {max} bytes, the limit; a small package that inflates this much is a decompression bomb"
)]
pub struct UnpackLimit {
    pub max: u64,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            // At the bound: only the end of the stream may follow.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    UnpackLimit { max: self.max },
                )),
            };
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// Hashes what passes through and fails at end of file if the hash is not the verified one.
struct RehashReader {
    inner: File,
    state: blake2b_simd::State,
    expected: String,
    done: bool,
}

impl Read for RehashReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 {
            if !self.done {
                self.done = true;
                let got = hex::encode(self.state.finalize().as_bytes());
                if got != self.expected {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the file changed after its signature was verified",
                    ));
                }
            }
            return Ok(0);
        }
        self.state.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn the_unpacked_bound_allows_exactly_its_size() {
        let read = |len: usize, max: u64| {
            let mut b = Bounded {
                inner: Cursor::new(vec![7u8; len]),
                left: max,
                max,
            };
            let mut out = Vec::new();
            b.read_to_end(&mut out).map(|_| out.len())
        };
        assert_eq!(read(1000, 1000).expect("at the bound"), 1000);
        assert_eq!(read(999, 1000).expect("below"), 999);
        let err = read(1001, 1000).expect_err("above");
        assert!(err.to_string().contains("more than 1000 bytes"), "{err}");
    }

    fn header_of(text: &[u8]) -> Result<(Header, u64), HeaderReadError> {
        parse_header(&mut Cursor::new(text.to_vec()))
    }

    fn sig_b64() -> String {
        B64.encode([1u8; SIGNATURE_LEN])
    }

    #[test]
    fn header_cases() {
        let good = format!(
            "HART-1\nacme-20200101000000\nBLAKE2b\n{}\n\nPAYLOAD",
            sig_b64()
        );
        let (h, n) = header_of(good.as_bytes()).expect("valid");
        assert_eq!(h.signer.to_string(), "acme-20200101000000");
        assert_eq!(n as usize, good.len() - "PAYLOAD".len());
        assert_eq!(h.to_bytes(), good.as_bytes()[..n as usize].to_vec());

        let err = |t: &[u8]| match header_of(t) {
            Err(HeaderReadError::Header(h)) => h,
            other => panic!("expected a header error, got {other:?}"),
        };
        assert_eq!(err(b""), HeaderError::Empty);
        assert!(matches!(err(b"HART-2\n"), HeaderError::FormatVersion(_)));
        assert!(matches!(
            err(b"HART-1\nnope\n"),
            HeaderError::NamedRevision(_)
        ));
        assert!(matches!(
            err(b"HART-1\nacme-20200101000000\nSHA1\n"),
            HeaderError::HashType(_)
        ));
        assert_eq!(
            err(b"HART-1\nacme-20200101000000\nBLAKE2b\n***\n\n"),
            HeaderError::SignatureBase64
        );
        assert_eq!(
            err(b"HART-1\nacme-20200101000000\nBLAKE2b\nAAAA\n\n"),
            HeaderError::SignatureLength(3)
        );
        let no_delim = format!("HART-1\nacme-20200101000000\nBLAKE2b\n{}\nxx\n", sig_b64());
        assert!(matches!(
            err(no_delim.as_bytes()),
            HeaderError::Delimiter(_)
        ));
        let cut = format!("HART-1\nacme-20200101000000\nBLAKE2b\n{}\n", sig_b64());
        assert_eq!(err(cut.as_bytes()), HeaderError::Truncated { line: 5 });
        assert_eq!(
            err(b"HART-1\nacme-2020"),
            HeaderError::Truncated { line: 2 }
        );
        let long = format!("HART-1\n{}\n", "a".repeat(5000));
        assert_eq!(err(long.as_bytes()), HeaderError::LineTooLong { line: 2 });
        assert_eq!(
            err(b"HART-1\nacme\xff-20200101000000\n"),
            HeaderError::NotUtf8 { line: 2 }
        );
    }

    proptest::proptest! {
        #[test]
        fn header_parser_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let _ = header_of(&bytes);
        }

        #[test]
        fn header_parser_never_panics_on_near_valid(prefix_len in 0usize..200, junk in proptest::collection::vec(proptest::num::u8::ANY, 0..50)) {
            let good = format!("HART-1\nacme-20200101000000\nBLAKE2b\n{}\n\n", sig_b64());
            let mut bytes = good.as_bytes()[..prefix_len.min(good.len())].to_vec();
            bytes.extend(junk);
            let _ = header_of(&bytes);
        }
    }
}
