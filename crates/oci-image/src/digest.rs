//! Tee writers: hash or count what passes through. Written by hand because sha2 0.11 hashers
//! no longer implement `io::Write`.

use std::io::{self, Write};

use sha2::{Digest as _, Sha256};

/// Passes bytes to `W` and feeds them to a SHA-256 state.
pub struct HashingWriter<W> {
    inner: W,
    state: Sha256,
    on: bool,
}

impl<W> HashingWriter<W> {
    pub fn new(inner: W) -> HashingWriter<W> {
        HashingWriter {
            inner,
            state: Sha256::new(),
            on: true,
        }
    }

    /// A pass-through that hashes nothing (its state stays that of no bytes): for a blob
    /// whose digest is known to equal another hash of the same bytes.
    pub fn unhashed(inner: W) -> HashingWriter<W> {
        HashingWriter {
            inner,
            state: Sha256::new(),
            on: false,
        }
    }

    pub fn into_parts(self) -> (Sha256, W) {
        (self.state, self.inner)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if self.on {
            self.state.update(&buf[..n]);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Passes bytes to `W` and counts them.
pub struct Counted<W> {
    inner: W,
    count: u64,
}

impl<W> Counted<W> {
    pub fn new(inner: W) -> Counted<W> {
        Counted { inner, count: 0 }
    }

    pub fn into_parts(self) -> (W, u64) {
        (self.inner, self.count)
    }
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// `sha256:` digest and size of a file, streamed.
pub fn sha256_file(path: &std::path::Path) -> io::Result<(String, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut w = Counted::new(HashingWriter::new(io::sink()));
    io::copy(&mut f, &mut w)?;
    let (inner, n) = w.into_parts();
    let (state, _) = inner.into_parts();
    Ok((format!("sha256:{}", hex::encode(state.finalize())), n))
}

/// Feeds what is read from `R` to a SHA-256 state.
pub struct HashingReader<R> {
    inner: R,
    state: Sha256,
}

impl<R> HashingReader<R> {
    pub fn new(inner: R) -> HashingReader<R> {
        HashingReader {
            inner,
            state: Sha256::new(),
        }
    }

    /// `sha256:` digest of everything read so far.
    pub fn digest(&self) -> String {
        format!("sha256:{}", hex::encode(self.state.clone().finalize()))
    }
}

impl<R: io::Read> io::Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.state.update(&buf[..n]);
        Ok(n)
    }
}
