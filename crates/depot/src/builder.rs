//! Packages from Habitat Builder, as `hab pkg install` gets them (the contract is the one
//! recorded in the module documentation of crates/testkit/src/builder.rs, the fake Builder
//! the tests use): a fuzzy ident is looked up in a channel, whose server
//! picks the latest (`GET /v1/depot/channels/O/C/pkgs/N[/V]/latest?target=T`); a fully
//! qualified one is downloaded without a lookup (`GET /v1/depot/pkgs/O/N/V/R/download`,
//! named by `x-filename`); a missing origin key is fetched without the token
//! (`GET /v1/depot/origins/O/keys/REV`). Downloads are streamed to a temporary name in the
//! artifact cache and hashed while they arrive; the depot verifies them before they get
//! their name. Connection errors, cut bodies and 5xx are retried a few times, quickly; a
//! 4xx never is (a wrong token stays wrong).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hart::{NamedRevision, PackageIdent, PackageTarget};
use serde::Deserialize;

/// Where Builder is and how to talk to it, resolved by the caller.
#[derive(Clone)]
pub struct BuilderSettings {
    /// Base URL of the packages asked for (`--url`), e.g. `https://bldr.habitat.sh`.
    pub url: String,
    pub channel: String,
    /// Base URL and channel of the Supervisor's packages (`--base-pkgs-url`/`-channel`).
    pub base_url: String,
    pub base_channel: String,
    /// Bearer token; sent on lookups and downloads, never on key fetches, never printed.
    pub token: Option<String>,
    /// Where downloads go (Habitat's artifact cache).
    pub artifact_cache: PathBuf,
    /// Where fetched origin keys go (Habitat's key cache).
    pub key_cache: PathBuf,
    /// No request at all: what is not present locally is missing.
    pub offline: bool,
    /// Tries per request (connection errors, cut bodies and 5xx are retried).
    pub attempts: u32,
    /// Wait before the first retry; doubled for each further one.
    pub backoff: Duration,
    /// Total time one request may take, body included (enforced while the body is read:
    /// reqwest's own timeout restarts with every read).
    pub timeout: Duration,
    /// Fetch origin keys missing locally (into `key_cache`, trusted from then on). Off when
    /// the user named the key directories: then only those keys are trusted.
    pub fetch_keys: bool,
}

/// The token stays out of debug output.
impl std::fmt::Debug for BuilderSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuilderSettings")
            .field("url", &self.url)
            .field("channel", &self.channel)
            .field("base_url", &self.base_url)
            .field("base_channel", &self.base_channel)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("artifact_cache", &self.artifact_cache)
            .field("key_cache", &self.key_cache)
            .field("offline", &self.offline)
            .field("fetch_keys", &self.fetch_keys)
            .finish_non_exhaustive()
    }
}

impl BuilderSettings {
    /// `url` and `channel` for the packages, the same for the Supervisor's, and Habitat's
    /// defaults for the rest.
    pub fn new(url: &str, channel: &str, artifact_cache: PathBuf, key_cache: PathBuf) -> Self {
        BuilderSettings {
            url: url.to_owned(),
            channel: channel.to_owned(),
            base_url: url.to_owned(),
            base_channel: channel.to_owned(),
            token: None,
            artifact_cache,
            key_cache,
            offline: false,
            attempts: 4,
            backoff: Duration::from_millis(250),
            timeout: Duration::from_secs(300),
            fetch_keys: true,
        }
    }
}

/// Which of the two Builder configurations a package comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The packages asked for and their dependencies (`--url`, `--channel`).
    Main,
    /// The Supervisor's packages (`--base-pkgs-url`, `--base-pkgs-channel`).
    Base,
}

/// Why talking to Builder failed. Messages name the package and the URL; never the token.
#[derive(Debug, thiserror::Error)]
pub enum BuilderError {
    #[error(
        "{url}: Builder {} (401)",
        if *sent_token { "refused the token" } else { "requires a token" }
    )]
    Unauthorized { url: String, sent_token: bool },
    #[error("{url}: Builder answered {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: {problem} (after {attempts} attempts)")]
    Transport {
        url: String,
        problem: String,
        attempts: u32,
    },
    #[error("{url}: Builder's answer is not what the API promises: {problem}")]
    Answer { url: String, problem: String },
    #[error("{url}: the key Builder sent does not parse")]
    Key { url: String, source: hart::KeyError },
    #[error("{url}: writing {}", path.display())]
    Io {
        url: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What a channel lookup says about a package.
#[derive(Debug, Clone)]
pub struct RemotePackage {
    pub ident: PackageIdent,
    /// BLAKE2b-256 of the whole `.hart`, as Builder recorded it.
    pub checksum: String,
}

#[derive(Deserialize)]
struct IdentJson {
    origin: String,
    name: String,
    version: Option<String>,
    release: Option<String>,
}

#[derive(Deserialize)]
struct PackageJson {
    ident: IdentJson,
    checksum: String,
}

#[derive(Deserialize)]
struct ChannelJson {
    name: String,
}

/// Hears of downloads as they go, for progress bars.
pub trait DownloadProgress: Send + Sync + std::fmt::Debug {
    /// A download of `what` started; `total` bytes when the server said.
    fn started(&self, _what: &str, _total: Option<u64>) {}
    fn advanced(&self, _what: &str, _bytes: u64) {}
    /// The body arrived whole (`ok`) or the attempt failed.
    fn finished(&self, _what: &str, _ok: bool) {}
}

/// A downloaded package under a temporary name in the artifact cache, with its checksum.
#[derive(Debug)]
pub struct Downloaded {
    pub file: tempfile::NamedTempFile,
    pub checksum: String,
    /// The name it gets once verified (`x-filename`, checked to be the canonical name).
    pub name: String,
    pub url: String,
}

/// Most bytes a lookup answer may have (real ones are a few KiB, a large MANIFEST included):
/// a server that sends more is not one to hold in memory for.
const MAX_LOOKUP_BODY: u64 = 8 << 20;
/// Most bytes of a channel list or a key answer (a key file is under 200 bytes).
const MAX_SMALL_BODY: u64 = 64 << 10;

/// Reads at most `max` bytes of `resp`; more is an answer of the wrong shape.
fn read_capped(resp: reqwest::blocking::Response, max: u64, url: &str) -> Result<Vec<u8>, Failure> {
    let mut body = Vec::new();
    resp.take(max + 1)
        .read_to_end(&mut body)
        .map_err(|e| Failure {
            retry: true,
            error: BuilderError::Transport {
                url: url.to_owned(),
                problem: format!("reading the answer: {e}"),
                attempts: 0,
            },
        })?;
    if body.len() as u64 > max {
        return Err(Failure {
            retry: false,
            error: BuilderError::Answer {
                url: url.to_owned(),
                problem: format!("the answer is larger than {max} bytes"),
            },
        });
    }
    Ok(body)
}

/// A blocking Builder client.
#[derive(Debug)]
pub struct BuilderClient {
    settings: BuilderSettings,
    http: reqwest::blocking::Client,
}

/// `hab`'s rule: a base URL whose path is `/` gets `/v1`; any other path is kept verbatim.
fn api_base(url: &str) -> String {
    let trimmed = url.trim_end_matches('/');
    match url::Url::parse(url) {
        Ok(u) if u.path() == "/" || u.path().is_empty() => format!("{trimmed}/v1"),
        _ => trimmed.to_owned(),
    }
}

/// One attempt's failure: worth another try or not.
struct Failure {
    retry: bool,
    error: BuilderError,
}

impl BuilderClient {
    pub fn new(settings: BuilderSettings) -> Result<BuilderClient, BuilderError> {
        let http = reqwest::blocking::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(Duration::from_secs(30).min(settings.timeout))
            .user_agent(format!(
                "hab-oci/{} ({})",
                env!("CARGO_PKG_VERSION"),
                PackageTarget::host_linux()
            ))
            .build()
            .map_err(|e| BuilderError::Transport {
                url: settings.url.clone(),
                problem: format!("starting the HTTP client: {e}"),
                attempts: 0,
            })?;
        Ok(BuilderClient { settings, http })
    }

    pub fn settings(&self) -> &BuilderSettings {
        &self.settings
    }

    fn base_and_channel(&self, origin: Origin) -> (String, &str) {
        match origin {
            Origin::Main => (api_base(&self.settings.url), &self.settings.channel),
            Origin::Base => (
                api_base(&self.settings.base_url),
                &self.settings.base_channel,
            ),
        }
    }

    /// The URL users know for `origin` (for messages).
    pub fn url(&self, origin: Origin) -> &str {
        match origin {
            Origin::Main => &self.settings.url,
            Origin::Base => &self.settings.base_url,
        }
    }

    pub fn channel(&self, origin: Origin) -> &str {
        self.base_and_channel(origin).1
    }

    /// Runs `op` until it succeeds, fails for good, or the attempts are spent.
    fn retrying<T>(&self, mut op: impl FnMut() -> Result<T, Failure>) -> Result<T, BuilderError> {
        let attempts = self.settings.attempts.max(1);
        let mut wait = self.settings.backoff;
        let mut n = 1;
        loop {
            match op() {
                Ok(v) => return Ok(v),
                Err(f) if f.retry && n < attempts => {
                    std::thread::sleep(wait);
                    wait = wait.saturating_mul(2);
                    n += 1;
                }
                Err(f) => {
                    return Err(match f.error {
                        BuilderError::Transport { url, problem, .. } => BuilderError::Transport {
                            url,
                            problem,
                            attempts: n,
                        },
                        other => other,
                    });
                }
            }
        }
    }

    /// Whether requests for `origin` carry the token: the Supervisor's packages from another
    /// Builder get none (Habitat's exporter sends none there, and a token for one Builder
    /// must not reach another).
    fn token_for(&self, origin: Origin) -> bool {
        origin == Origin::Main || self.settings.base_url == self.settings.url
    }

    fn get(&self, url: &str, with_token: bool) -> Result<reqwest::blocking::Response, Failure> {
        let mut req = self.http.get(url);
        if with_token && let Some(t) = &self.settings.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().map_err(|e| Failure {
            retry: true,
            error: BuilderError::Transport {
                url: url.to_owned(),
                problem: transport_text(&e),
                attempts: 0,
            },
        })?;
        let status = resp.status().as_u16();
        match status {
            200 => Ok(resp),
            401 => Err(Failure {
                retry: false,
                error: BuilderError::Unauthorized {
                    url: url.to_owned(),
                    sent_token: with_token && self.settings.token.is_some(),
                },
            }),
            _ => Err(Failure {
                retry: status >= 500,
                error: BuilderError::Status {
                    url: url.to_owned(),
                    status,
                },
            }),
        }
    }

    /// The latest `ident` (fuzzy) in the channel for `target`, as the server orders
    /// versions; `None` when the channel has none.
    pub fn latest(
        &self,
        ident: &PackageIdent,
        target: &PackageTarget,
        origin: Origin,
    ) -> Result<Option<RemotePackage>, BuilderError> {
        let (api, channel) = self.base_and_channel(origin);
        let url = lookup_url(&api, channel, ident, target);
        let asked = format!("{ident} in the '{channel}' channel");
        let found = self.retrying(|| match self.get(&url, self.token_for(origin)) {
            Ok(resp) => read_capped(resp, MAX_LOOKUP_BODY, &url)
                .map(Some)
                .map_err(|mut f| {
                    if let BuilderError::Answer { problem, .. } = &mut f.error {
                        *problem = format!("looking up {asked}: {problem}");
                    }
                    f
                }),
            Err(Failure {
                error: BuilderError::Status { status: 404, .. },
                ..
            }) => Ok(None),
            Err(f) => Err(f),
        })?;
        let Some(body) = found else { return Ok(None) };
        let answer = |problem: String| BuilderError::Answer {
            url: url.clone(),
            problem: format!("looking up {asked}: {problem}"),
        };
        let p: PackageJson = serde_json::from_slice(&body)
            .map_err(|e| answer(format!("not the package JSON: {e}")))?;
        let (Some(v), Some(r)) = (p.ident.version, p.ident.release) else {
            return Err(answer("the ident has no version or release".into()));
        };
        let got = PackageIdent::parse_fq(&format!("{}/{}/{v}/{r}", p.ident.origin, p.ident.name))
            .map_err(|e| answer(format!("ident: {e}")))?;
        if !ident.satisfied_by(&got) {
            return Err(answer(format!("asked for {ident}, got {got}")));
        }
        let checksum_ok =
            p.checksum.len() == 64 && p.checksum.bytes().all(|b| b.is_ascii_hexdigit());
        if !checksum_ok {
            return Err(answer(format!(
                "checksum '{}' is not BLAKE2b-256 hex",
                p.checksum
            )));
        }
        Ok(Some(RemotePackage {
            ident: got,
            checksum: p.checksum.to_ascii_lowercase(),
        }))
    }

    /// The channels of the origin that hold `ident` for `target` (for a not-found message).
    /// Best effort: any failure gives an empty list.
    pub fn channels_with(
        &self,
        ident: &PackageIdent,
        target: &PackageTarget,
        origin: Origin,
    ) -> Vec<String> {
        let (api, _) = self.base_and_channel(origin);
        let url = format!("{api}/depot/channels/{}", ident.origin);
        let Ok(resp) = self.get(&url, false) else {
            return Vec::new();
        };
        let Ok(channels) = read_capped(resp, MAX_SMALL_BODY, &url)
            .map_err(drop)
            .and_then(|b| serde_json::from_slice::<Vec<ChannelJson>>(&b).map_err(drop))
        else {
            return Vec::new();
        };
        channels
            .into_iter()
            .map(|c| c.name)
            .filter(|c| {
                let url = lookup_url(&api, c, ident, target);
                self.get(&url, self.token_for(origin)).is_ok()
            })
            .collect()
    }

    /// Downloads the fully qualified `ident` into a temporary file in the artifact cache.
    pub fn download(
        &self,
        ident: &PackageIdent,
        target: &PackageTarget,
        origin: Origin,
        progress: &dyn DownloadProgress,
    ) -> Result<Downloaded, BuilderError> {
        let (api, _) = self.base_and_channel(origin);
        let (o, n) = (&ident.origin, &ident.name);
        let v = ident.version.as_deref().unwrap_or_default();
        let r = ident.release.as_deref().unwrap_or_default();
        let url = format!("{api}/depot/pkgs/{o}/{n}/{v}/{r}/download?target={target}");
        let name = format!("{o}-{n}-{v}-{r}-{target}.hart");
        let dir = &self.settings.artifact_cache;
        std::fs::create_dir_all(dir).map_err(|source| BuilderError::Io {
            url: url.clone(),
            path: dir.clone(),
            source,
        })?;
        let what = ident.to_string();
        self.retrying(|| {
            let resp = self.get(&url, self.token_for(origin))?;
            check_filename(&resp, &name, &url)?;
            let total = resp.content_length();
            progress.started(&what, total);
            let got = self.stream(resp, dir, &url, total, &|b| progress.advanced(&what, b));
            progress.finished(&what, got.is_ok());
            let (file, checksum) = got?;
            Ok(Downloaded {
                file,
                checksum,
                name: name.clone(),
                url: url.clone(),
            })
        })
    }

    /// The body into a temporary file in `dir`, hashed (BLAKE2b-256) as it arrives.
    fn stream(
        &self,
        mut resp: reqwest::blocking::Response,
        dir: &Path,
        url: &str,
        total: Option<u64>,
        advance: &dyn Fn(u64),
    ) -> Result<(tempfile::NamedTempFile, String), Failure> {
        let io = |source: std::io::Error| Failure {
            retry: false,
            error: BuilderError::Io {
                url: url.to_owned(),
                path: dir.to_owned(),
                source,
            },
        };
        let mut file = hab_oci_fs::temp::file_in(dir, "download").map_err(io)?;
        let mut hash = blake2b_simd::Params::new().hash_length(32).to_state();
        let mut buf = vec![0u8; 1 << 16];
        let mut got: u64 = 0;
        let started = std::time::Instant::now();
        loop {
            if started.elapsed() > self.settings.timeout {
                return Err(Failure {
                    retry: true,
                    error: BuilderError::Transport {
                        url: url.to_owned(),
                        problem: format!(
                            "the download took longer than {} s ({got} bytes arrived)",
                            self.settings.timeout.as_secs()
                        ),
                        attempts: 0,
                    },
                });
            }
            let n = match resp.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    return Err(Failure {
                        retry: true,
                        error: BuilderError::Transport {
                            url: url.to_owned(),
                            problem: format!("the download broke off after {got} bytes: {e}"),
                            attempts: 0,
                        },
                    });
                }
            };
            hash.update(&buf[..n]);
            file.write_all(&buf[..n]).map_err(io)?;
            got += n as u64;
            advance(n as u64);
            if total.is_some_and(|t| got > t) {
                break;
            }
        }
        if let Some(t) = total
            && got != t
        {
            return Err(Failure {
                retry: got < t,
                error: BuilderError::Answer {
                    url: url.to_owned(),
                    problem: format!("the body is {got} bytes where Content-Length said {t}"),
                },
            });
        }
        file.flush().map_err(io)?;
        Ok((file, hex::encode(hash.finalize().as_bytes())))
    }

    /// Fetches the public key `signer` (no token: Builder serves keys to anyone, and `hab`
    /// sends none), checked to parse and to be the signer asked for. Not kept yet: see
    /// [`BuilderClient::keep_key`].
    pub fn fetch_key(
        &self,
        signer: &NamedRevision,
        origin: Origin,
    ) -> Result<FetchedKey, BuilderError> {
        let (api, _) = self.base_and_channel(origin);
        let url = format!(
            "{api}/depot/origins/{}/keys/{}",
            signer.name, signer.revision
        );
        let name = signer.public_key_file_name();
        let body = self.retrying(|| {
            let resp = self.get(&url, false)?;
            check_filename(&resp, &name, &url)?;
            read_capped(resp, MAX_SMALL_BODY, &url)
        })?;
        let answer = |problem: String| BuilderError::Answer {
            url: url.clone(),
            problem,
        };
        let text = std::str::from_utf8(&body)
            .map_err(|_| answer(format!("the key {signer} is not text")))?;
        // Named by the file name Builder gave it: the key is not on disk anywhere yet.
        let key =
            hart::PublicKey::parse(Path::new(&name), text).map_err(|source| BuilderError::Key {
                url: url.clone(),
                source,
            })?;
        if key.name != *signer {
            return Err(answer(format!("asked for key {signer}, got {}", key.name)));
        }
        Ok(FetchedKey {
            name,
            text: text.to_owned(),
            url,
        })
    }

    /// Writes a fetched key into the key cache (read-only, as `hab` does); call it once the
    /// key verified the package it was fetched for, so a key that does not is never kept.
    pub fn keep_key(&self, key: &FetchedKey) -> Result<PathBuf, BuilderError> {
        let dest = self.settings.key_cache.join(&key.name);
        let io = |source| BuilderError::Io {
            url: key.url.clone(),
            path: dest.clone(),
            source,
        };
        std::fs::create_dir_all(&self.settings.key_cache).map_err(io)?;
        let how = hab_oci_fs::Persist {
            mode: 0o444,
            ..hab_oci_fs::Persist::DURABLE
        };
        hab_oci_fs::write(&dest, "key", key.text.as_bytes(), how).map_err(io)?;
        Ok(dest)
    }
}

/// An origin public key from Builder, parsed and named as asked, not yet kept.
#[derive(Debug, Clone)]
pub struct FetchedKey {
    /// `ORIGIN-REVISION.pub`.
    pub name: String,
    pub text: String,
    pub url: String,
}

fn lookup_url(api: &str, channel: &str, ident: &PackageIdent, target: &PackageTarget) -> String {
    let mut path = format!(
        "{api}/depot/channels/{}/{channel}/pkgs/{}",
        ident.origin, ident.name
    );
    match (&ident.version, &ident.release) {
        (Some(v), Some(r)) => path.push_str(&format!("/{v}/{r}")),
        (Some(v), None) => path.push_str(&format!("/{v}/latest")),
        _ => path.push_str("/latest"),
    }
    format!("{path}?target={target}")
}

/// `x-filename` must be present (else the answer is retried, as `hab` does) and exactly the
/// name asked for: it names a file in a cache directory, so a path separator or `..` in it
/// is refused, never joined.
fn check_filename(
    resp: &reqwest::blocking::Response,
    want: &str,
    url: &str,
) -> Result<(), Failure> {
    let Some(v) = resp.headers().get("x-filename") else {
        return Err(Failure {
            retry: true,
            error: BuilderError::Answer {
                url: url.to_owned(),
                problem: "no x-filename header".into(),
            },
        });
    };
    let got = v.to_str().unwrap_or_default();
    if got != want {
        return Err(Failure {
            retry: false,
            error: BuilderError::Answer {
                url: url.to_owned(),
                problem: format!("x-filename is '{got}', expected '{want}'"),
            },
        });
    }
    Ok(())
}

/// A transport error with its causes (reqwest's own text is often just "error sending
/// request").
fn transport_text(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_prefix_as_hab_builds_it() {
        assert_eq!(
            api_base("https://bldr.habitat.sh"),
            "https://bldr.habitat.sh/v1"
        );
        assert_eq!(
            api_base("https://bldr.habitat.sh/"),
            "https://bldr.habitat.sh/v1"
        );
        assert_eq!(api_base("http://h:9636/foo"), "http://h:9636/foo");
        let t = PackageTarget::parse("x86_64-linux").expect("target");
        let id = PackageIdent::parse("core/redis").expect("ident");
        assert_eq!(
            lookup_url("http://h/v1", "stable", &id, &t),
            "http://h/v1/depot/channels/core/stable/pkgs/redis/latest?target=x86_64-linux"
        );
        let id = PackageIdent::parse("core/redis/7.2").expect("ident");
        assert!(
            lookup_url("http://h/v1", "base", &id, &t)
                .ends_with("/pkgs/redis/7.2/latest?target=x86_64-linux")
        );
    }
}
