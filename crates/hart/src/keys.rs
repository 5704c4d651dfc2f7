//! Origin signing keys: `SIG-PUB-1` / `SIG-SEC-1` files, named revisions, key generation,
//! and the directories a public key is looked up in.

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};

/// Key files are a few hundred bytes; anything bigger is not a key (and reading no further
/// keeps a key "file" that is really `/dev/zero` from eating memory).
const MAX_KEY_FILE: u64 = 16 * 1024;

/// `<name>-<14 digit UTC revision>`, e.g. `core-20180119235000`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NamedRevision {
    pub name: String,
    pub revision: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot parse named revision '{0}': expected NAME-YYYYMMDDhhmmss")]
pub struct NamedRevisionError(pub String);

impl NamedRevision {
    pub fn parse(s: &str) -> Result<NamedRevision, NamedRevisionError> {
        let err = || NamedRevisionError(s.to_owned());
        let (name, rev) = s.rsplit_once('-').ok_or_else(err)?;
        if name.is_empty() || rev.len() != 14 || !rev.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        // Habitat's regex accepts any name (`.+`); we refuse what cannot be a file name.
        if name.contains(['/', '\\', '\0']) || name.chars().any(char::is_control) {
            return Err(err());
        }
        Ok(NamedRevision {
            name: name.to_owned(),
            revision: rev.to_owned(),
        })
    }

    pub fn public_key_file_name(&self) -> String {
        format!("{self}.pub")
    }

    pub fn secret_key_file_name(&self) -> String {
        format!("{self}.sig.key")
    }
}

impl fmt::Display for NamedRevision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.name, self.revision)
    }
}

/// What is wrong with a key file's contents.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: key file is larger than {MAX_KEY_FILE} bytes; not a key")]
    TooLarge { path: PathBuf },
    #[error("{path}: missing key version")]
    MissingVersion { path: PathBuf },
    #[error("{path}: unsupported key version '{found}' (expected {expected})")]
    Version {
        path: PathBuf,
        found: String,
        expected: &'static str,
    },
    #[error("{path}: missing name+revision line")]
    MissingName { path: PathBuf },
    #[error("{path}")]
    Name {
        path: PathBuf,
        source: NamedRevisionError,
    },
    #[error("{path}: missing key material")]
    MissingMaterial { path: PathBuf },
    #[error("{path}: invalid base64 key material")]
    Base64 { path: PathBuf },
    #[error("{path}: key material is {found} bytes, expected {expected}")]
    Length {
        path: PathBuf,
        found: usize,
        expected: usize,
    },
    #[error("{path}: invalid key: {detail}")]
    Invalid { path: PathBuf, detail: String },
    #[error("{path}: the file is named for {file_name} but the key inside is {inside}")]
    NameMismatch {
        path: PathBuf,
        file_name: String,
        inside: String,
    },
    #[error("{path} already exists with different contents; refusing to overwrite a key")]
    Exists { path: PathBuf },
    #[error("cannot generate a key: no randomness from the operating system: {0}")]
    Random(String),
}

const PUB_VERSION: &str = "SIG-PUB-1";
const SEC_VERSION: &str = "SIG-SEC-1";

/// A public origin signing key (Ed25519).
#[derive(Debug, Clone)]
pub struct PublicKey {
    pub name: NamedRevision,
    pub key: VerifyingKey,
}

/// A secret origin signing key (libsodium layout: 32-byte seed then 32-byte public key).
pub struct SecretKey {
    pub name: NamedRevision,
    key: SigningKey,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

fn read_bounded(path: &Path) -> Result<String, KeyError> {
    let io_err = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    let file = fs::File::open(path).map_err(io_err)?;
    let mut buf = Vec::new();
    file.take(MAX_KEY_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(io_err)?;
    if buf.len() as u64 > MAX_KEY_FILE {
        return Err(KeyError::TooLarge {
            path: path.to_owned(),
        });
    }
    String::from_utf8(buf).map_err(|_| KeyError::Invalid {
        path: path.to_owned(),
        detail: "not UTF-8 text".into(),
    })
}

/// Parses the 4-line key format: version word, name-revision, a line that is skipped, base64.
fn parse_key_text(
    path: &Path,
    text: &str,
    version: &'static str,
    len: usize,
) -> Result<(NamedRevision, Vec<u8>), KeyError> {
    let p = || path.to_owned();
    let mut lines = text.split('\n');
    let v = lines
        .next()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .ok_or_else(|| KeyError::MissingVersion { path: p() })?;
    if v != version {
        return Err(KeyError::Version {
            path: p(),
            found: v.chars().take(64).collect(),
            expected: version,
        });
    }
    let name = lines
        .next()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .ok_or_else(|| KeyError::MissingName { path: p() })?;
    let name = NamedRevision::parse(name).map_err(|source| KeyError::Name { path: p(), source })?;
    let _blank = lines.next();
    let material = lines
        .next()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .ok_or_else(|| KeyError::MissingMaterial { path: p() })?;
    let bytes = B64
        .decode(material)
        .map_err(|_| KeyError::Base64 { path: p() })?;
    if bytes.len() != len {
        return Err(KeyError::Length {
            path: p(),
            found: bytes.len(),
            expected: len,
        });
    }
    Ok((name, bytes))
}

impl PublicKey {
    pub fn from_file(path: &Path) -> Result<PublicKey, KeyError> {
        let text = read_bounded(path)?;
        PublicKey::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<PublicKey, KeyError> {
        let (name, bytes) = parse_key_text(path, text, PUB_VERSION, 32)?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| KeyError::Invalid {
            path: path.to_owned(),
            detail: "wrong length".into(),
        })?;
        let key = VerifyingKey::from_bytes(&arr).map_err(|e| KeyError::Invalid {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
        Ok(PublicKey { name, key })
    }

    /// The file text exactly as Habitat writes it (no trailing newline).
    pub fn to_file_text(&self) -> String {
        format!(
            "{PUB_VERSION}\n{}\n\n{}",
            self.name,
            B64.encode(self.key.as_bytes())
        )
    }
}

impl SecretKey {
    pub fn from_file(path: &Path) -> Result<SecretKey, KeyError> {
        let text = read_bounded(path)?;
        SecretKey::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<SecretKey, KeyError> {
        let (name, bytes) = parse_key_text(path, text, SEC_VERSION, 64)?;
        let arr: [u8; 64] = bytes.try_into().map_err(|_| KeyError::Invalid {
            path: path.to_owned(),
            detail: "wrong length".into(),
        })?;
        let key = SigningKey::from_keypair_bytes(&arr).map_err(|_| KeyError::Invalid {
            path: path.to_owned(),
            detail: "the public half does not match the secret seed".into(),
        })?;
        Ok(SecretKey { name, key })
    }

    /// A fresh key pair for `origin`, its revision the current UTC time.
    pub fn generate(origin: &str) -> Result<SecretKey, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
        let now = time::OffsetDateTime::now_utc();
        let rev = now
            .format(time::macros::format_description!(
                "[year][month][day][hour][minute][second]"
            ))
            .map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(SecretKey {
            name: NamedRevision {
                name: origin.to_owned(),
                revision: rev,
            },
            key: SigningKey::from_bytes(&seed),
        })
    }

    pub fn public(&self) -> PublicKey {
        PublicKey {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    pub fn to_file_text(&self) -> String {
        format!(
            "{SEC_VERSION}\n{}\n\n{}",
            self.name,
            B64.encode(self.key.to_keypair_bytes())
        )
    }

    /// libsodium `crypto_sign` combined mode over `message`: the 64-byte signature followed
    /// by the message itself.
    pub fn sign_combined(&self, message: &[u8]) -> Vec<u8> {
        let sig = self.key.sign(message);
        let mut out = Vec::with_capacity(64 + message.len());
        out.extend_from_slice(&sig.to_bytes());
        out.extend_from_slice(message);
        out
    }

    /// Writes the pair into `dir` as `<name>-<rev>.pub` (0444) and `.sig.key` (0400).
    /// An existing file with the same contents is fine; different contents are an error.
    pub fn write_pair(&self, dir: &Path) -> Result<(PathBuf, PathBuf), KeyError> {
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| KeyError::Io { path, source }
        };
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let pub_path = dir.join(self.name.public_key_file_name());
        let sec_path = dir.join(self.name.secret_key_file_name());
        write_key_file(&pub_path, &self.public().to_file_text(), 0o444)?;
        write_key_file(&sec_path, &self.to_file_text(), 0o400)?;
        Ok((pub_path, sec_path))
    }
}

fn write_key_file(path: &Path, text: &str, mode: u32) -> Result<(), KeyError> {
    let io_err = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    if path.exists() {
        let old = read_bounded(path)?;
        return if old == text {
            Ok(())
        } else {
            Err(KeyError::Exists {
                path: path.to_owned(),
            })
        };
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = hab_oci_fs::temp::file_in(dir, "key").map_err(io_err)?;
    tmp.write_all(text.as_bytes()).map_err(io_err)?;
    let how = hab_oci_fs::Persist {
        mode,
        no_clobber: true,
        ..hab_oci_fs::Persist::DURABLE
    };
    hab_oci_fs::persist(tmp, path, how).map_err(io_err)
}

/// Why a public key could not be found.
#[derive(Debug, thiserror::Error)]
pub enum KeyLookupError {
    #[error("no public key file {file} in {}", searched_list(.searched))]
    NotFound {
        signer: NamedRevision,
        file: String,
        searched: Vec<PathBuf>,
    },
    #[error(transparent)]
    Key(#[from] KeyError),
}

fn searched_list(dirs: &[PathBuf]) -> String {
    if dirs.is_empty() {
        "(no key directories)".to_owned()
    } else {
        dirs.iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The ordered directories public keys are looked up in.
#[derive(Debug, Clone, Default)]
pub struct KeyDirs {
    dirs: Vec<PathBuf>,
}

impl KeyDirs {
    pub fn new(dirs: Vec<PathBuf>) -> KeyDirs {
        let mut out: Vec<PathBuf> = Vec::new();
        for d in dirs {
            if !out.contains(&d) {
                out.push(d);
            }
        }
        KeyDirs { dirs: out }
    }

    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Finds `<signer>.pub` in the first directory that has it, and checks that the
    /// name-revision inside the file is the one its name promises.
    pub fn find(&self, signer: &NamedRevision) -> Result<PublicKey, KeyLookupError> {
        self.find_file(signer).map(|(key, _)| key)
    }

    /// Like [`KeyDirs::find`], also returning the file the key came from.
    pub fn find_file(
        &self,
        signer: &NamedRevision,
    ) -> Result<(PublicKey, PathBuf), KeyLookupError> {
        let file = signer.public_key_file_name();
        for dir in &self.dirs {
            let path = dir.join(&file);
            if path.is_file() || path.is_symlink() {
                let key = PublicKey::from_file(&path)?;
                if key.name != *signer {
                    return Err(KeyError::NameMismatch {
                        path,
                        file_name: signer.to_string(),
                        inside: key.name.to_string(),
                    }
                    .into());
                }
                return Ok((key, path));
            }
        }
        Err(KeyLookupError::NotFound {
            signer: signer.clone(),
            file,
            searched: self.dirs.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_revision() {
        let n = NamedRevision::parse("core-20180119235000").expect("valid");
        assert_eq!(n.name, "core");
        assert_eq!(n.revision, "20180119235000");
        let n = NamedRevision::parse("origin-key-valid-20160509190508").expect("valid");
        assert_eq!(n.name, "origin-key-valid");
        for bad in [
            "core",
            "core-2018",
            "-20180119235000",
            "happyhumans-20160424223347-not-valid-identifier!",
            "a/b-20180119235000",
        ] {
            assert!(NamedRevision::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn generate_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sk = SecretKey::generate("acme").expect("generate");
        assert_eq!(sk.name.revision.len(), 14);
        let (p, s) = sk.write_pair(dir.path()).expect("write");
        let pk = PublicKey::from_file(&p).expect("pub");
        let sk2 = SecretKey::from_file(&s).expect("sec");
        assert_eq!(pk.key, sk.public().key);
        assert_eq!(sk2.to_file_text(), sk.to_file_text());
        assert!(!sk.to_file_text().ends_with('\n'));
        // Same contents again is fine; a different key under the same name is refused.
        sk.write_pair(dir.path()).expect("idempotent");
        let other = SecretKey {
            name: sk.name.clone(),
            key: SigningKey::from_bytes(&[7u8; 32]),
        };
        assert!(matches!(
            other.write_pair(dir.path()),
            Err(KeyError::Exists { .. })
        ));
    }

    #[test]
    fn bad_key_files() {
        let p = Path::new("k.pub");
        let good = SecretKey::generate("acme")
            .expect("gen")
            .public()
            .to_file_text();
        assert!(PublicKey::parse(p, &good).is_ok());
        assert!(matches!(
            PublicKey::parse(p, ""),
            Err(KeyError::MissingVersion { .. })
        ));
        assert!(matches!(
            PublicKey::parse(p, &good.replace("SIG-PUB-1", "NONSENSE-12")),
            Err(KeyError::Version { .. })
        ));
        assert!(matches!(
            PublicKey::parse(p, "SIG-PUB-1\nacme-20200101000000\n\nAAAA"),
            Err(KeyError::Length {
                found: 3,
                expected: 32,
                ..
            })
        ));
        assert!(matches!(
            PublicKey::parse(p, "SIG-PUB-1\nacme-20200101000000\n\n!!!"),
            Err(KeyError::Base64 { .. })
        ));
        assert!(matches!(
            PublicKey::parse(p, "SIG-PUB-1\nacme-2020\n\nAAAA"),
            Err(KeyError::Name { .. })
        ));
        assert!(matches!(
            PublicKey::parse(p, "SIG-PUB-1\nacme-20200101000000\n"),
            Err(KeyError::MissingMaterial { .. })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn dev_zero_is_not_a_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let link = dir.path().join("acme-20200101000000.pub");
        std::os::unix::fs::symlink("/dev/zero", &link).expect("symlink");
        let dirs = KeyDirs::new(vec![dir.path().to_owned()]);
        let signer = NamedRevision::parse("acme-20200101000000").expect("valid");
        assert!(matches!(
            dirs.find(&signer),
            Err(KeyLookupError::Key(KeyError::TooLarge { .. }))
        ));
    }
}
