//! Writing `.hart` files: an installed-package directory → GNU tar → xz → signed header,
//! the way Habitat's plan-build and `hab pkg sign` do it.

use std::fs::{self, File};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::artifact::Header;
use crate::ident::{PackageIdent, PackageTarget};
use crate::keys::SecretKey;

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("{}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: not an installed package directory: {detail}", path.display())]
    NotAPackage { path: PathBuf, detail: String },
    #[error(
        "the key {key} is for origin '{key_origin}', but the package {ident} is of origin '{}'",
        ident.origin
    )]
    WrongOrigin {
        key: String,
        key_origin: String,
        ident: Box<PackageIdent>,
    },
    #[error("{}: unsupported file type (only files, directories and symlinks can be packed)", path.display())]
    FileType { path: PathBuf },
    #[error("xz encoder: {0}")]
    Xz(String),
}

/// How to compress. The defaults are Habitat's: `xz -6 --threads=0`, whose blocks are
/// 3 × the dictionary (24 MiB at level 6), so large packages get multi-block streams.
#[derive(Debug, Clone)]
pub struct PackOptions {
    pub level: u32,
    pub threads: u32,
    /// Uncompressed bytes per xz block; 0 lets liblzma pick (3 × dictionary size).
    pub block_size: u64,
    /// Overrides every entry's mtime (for reproducible packages, e.g. `SOURCE_DATE_EPOCH`).
    pub mtime: Option<u64>,
}

impl Default for PackOptions {
    fn default() -> Self {
        PackOptions {
            level: 6,
            threads: std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1),
            block_size: 0,
            mtime: None,
        }
    }
}

/// What was written.
#[derive(Debug, Clone)]
pub struct Packed {
    pub path: PathBuf,
    pub ident: PackageIdent,
    pub target: PackageTarget,
}

/// Reads `IDENT` and `TARGET` of the package directory `dir` (the release directory,
/// `.../hab/pkgs/o/n/v/r`).
pub fn read_package_dir(dir: &Path) -> Result<(PackageIdent, PackageTarget), PackError> {
    let not_pkg = |detail: String| PackError::NotAPackage {
        path: dir.to_owned(),
        detail,
    };
    let read = |name: &str| -> Result<String, PackError> {
        fs::read_to_string(dir.join(name))
            .map(|s| s.trim().to_owned())
            .map_err(|e| not_pkg(format!("cannot read {name}: {e}")))
    };
    let ident =
        PackageIdent::parse_fq(&read("IDENT")?).map_err(|e| not_pkg(format!("IDENT: {e}")))?;
    let target =
        PackageTarget::parse(&read("TARGET")?).map_err(|e| not_pkg(format!("TARGET: {e}")))?;
    Ok((ident, target))
}

/// Packs and signs the package directory `dir` into `out` (a file path), or into its
/// canonical file name inside `out_dir` when `out` is `None`. The file appears whole or not
/// at all: it is written to a temporary file beside the destination and renamed.
pub fn pack(
    dir: &Path,
    key: &SecretKey,
    out: Option<&Path>,
    out_dir: &Path,
    opts: &PackOptions,
) -> Result<Packed, PackError> {
    let (ident, target) = read_package_dir(dir)?;
    if key.name.name != ident.origin {
        return Err(PackError::WrongOrigin {
            key: key.name.to_string(),
            key_origin: key.name.name.clone(),
            ident: Box::new(ident),
        });
    }
    let dest = match out {
        Some(p) => p.to_owned(),
        None => out_dir.join(ident.archive_name(&target).unwrap_or_default()),
    };
    let dest_dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let io_at = |path: &Path| {
        let path = path.to_owned();
        move |source| PackError::Io { path, source }
    };
    fs::create_dir_all(&dest_dir).map_err(io_at(&dest_dir))?;
    let mut tmp = hab_oci_fs::temp::file_in(&dest_dir, "pack").map_err(io_at(&dest_dir))?;

    // The header has a fixed length for a given signer (the signature is always 128 bytes),
    // so write a placeholder, stream the payload after it, then fill the signature in.
    let placeholder = Header {
        signer: key.name.clone(),
        signature: vec![0u8; 128],
    }
    .to_bytes();
    let tmp_path = tmp.path().to_owned();
    tmp.write_all(&placeholder).map_err(io_at(&tmp_path))?;
    let hashing = HashingWriter {
        inner: tmp.as_file_mut(),
        state: blake2b_simd::Params::new().hash_length(32).to_state(),
    };
    let stream = liblzma::stream::MtStreamBuilder::new()
        .preset(opts.level)
        .threads(opts.threads.max(1))
        .block_size(opts.block_size)
        .check(liblzma::stream::Check::Crc64)
        .encoder()
        .map_err(|e| PackError::Xz(e.to_string()))?;
    let xz = liblzma::write::XzEncoder::new_stream(hashing, stream);
    let mut builder = tar::Builder::new(xz);
    builder.follow_symlinks(false);
    let prefix = PathBuf::from(format!("hab/pkgs/{ident}"));
    append_tree(&mut builder, dir, &prefix, opts)?;
    let xz = builder.into_inner().map_err(io_at(dir))?;
    let hashing = xz.finish().map_err(io_at(&tmp_path))?;
    let digest = hex::encode(hashing.state.finalize().as_bytes());
    let header = Header {
        signer: key.name.clone(),
        signature: key.sign_combined(digest.as_bytes()),
    }
    .to_bytes();
    debug_assert_eq!(header.len(), placeholder.len());
    let file = tmp.as_file_mut();
    file.seek(SeekFrom::Start(0)).map_err(io_at(&dest))?;
    file.write_all(&header).map_err(io_at(&dest))?;
    hab_oci_fs::persist(tmp, &dest, hab_oci_fs::Persist::DURABLE).map_err(io_at(&dest))?;
    Ok(Packed {
        path: dest,
        ident,
        target,
    })
}

/// Signs an arbitrary file the way `hab pkg sign` does (header + the file's bytes), e.g.
/// to reproduce upstream's `signme.dat` vector. Returns the header bytes.
pub fn sign_bytes(key: &SecretKey, data: &[u8]) -> Vec<u8> {
    let digest = crate::artifact::blake2b_hex(data);
    Header {
        signer: key.name.clone(),
        signature: key.sign_combined(digest.as_bytes()),
    }
    .to_bytes()
}

/// Appends `dir` as `prefix` and everything below it, names sorted so the tar is the same on
/// every machine (GNU tar would use directory order).
fn append_tree<W: Write>(
    builder: &mut tar::Builder<W>,
    dir: &Path,
    prefix: &Path,
    opts: &PackOptions,
) -> Result<(), PackError> {
    let io_at = |path: &Path| {
        let path = path.to_owned();
        move |source| PackError::Io { path, source }
    };
    let mut stack = vec![(dir.to_owned(), prefix.to_owned())];
    while let Some((src, name)) = stack.pop() {
        let meta = fs::symlink_metadata(&src).map_err(io_at(&src))?;
        let mut header = tar::Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header
            .set_username("root")
            .and_then(|()| header.set_groupname("root"))
            .map_err(io_at(&src))?;
        header.set_mode(mode_of(&meta));
        let mtime = opts.mtime.unwrap_or_else(|| {
            meta.modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs())
        });
        header.set_mtime(mtime);
        let ft = meta.file_type();
        if ft.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
            builder
                .append_data(&mut header, &name, io::empty())
                .map_err(io_at(&src))?;
            let mut children: Vec<_> = fs::read_dir(&src)
                .map_err(io_at(&src))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<_, _>>()
                .map_err(io_at(&src))?;
            children.sort();
            // Reverse onto the stack so they pop in sorted order, depth first.
            for child in children.into_iter().rev() {
                stack.push((src.join(&child), name.join(&child)));
            }
        } else if ft.is_symlink() {
            let target = fs::read_link(&src).map_err(io_at(&src))?;
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            builder
                .append_link(&mut header, &name, &target)
                .map_err(io_at(&src))?;
        } else if ft.is_file() {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(meta.len());
            let f = File::open(&src).map_err(io_at(&src))?;
            builder
                .append_data(&mut header, &name, f)
                .map_err(io_at(&src))?;
        } else {
            return Err(PackError::FileType { path: src });
        }
    }
    Ok(())
}

#[cfg(unix)]
fn mode_of(meta: &fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o7777
}

#[cfg(not(unix))]
fn mode_of(meta: &fs::Metadata) -> u32 {
    if meta.is_dir() { 0o755 } else { 0o644 }
}

/// Hashes the bytes it writes (BLAKE2b's state is a `Write`, but we need the bytes to go on
/// to the file too).
struct HashingWriter<W> {
    inner: W,
    state: blake2b_simd::State,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.state.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
