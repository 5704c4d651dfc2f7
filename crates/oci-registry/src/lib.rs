//! Pushing images to registries over the OCI distribution API, on top of `oci-client` (the
//! only async code in the workspace, behind the blocking [`push`]). Per blob: `HEAD` first and
//! skip what is there, cross-repository mount when another repository of the same registry
//! has it, otherwise a monolithic upload streamed from the blob file. Manifests are written
//! last, one per tag, only after every blob is confirmed; a tag whose manifest already has our
//! digest costs one `HEAD`. Habitat-free.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt, stream};
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};

/// Registry credentials. `Debug` never shows the secret.
#[derive(Clone, Default)]
pub enum Credentials {
    #[default]
    Anonymous,
    Basic {
        username: String,
        password: String,
    },
    /// An identity (refresh) token from a credential helper.
    Token(String),
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Credentials::Token(_) => f.write_str("Token(***)"),
        }
    }
}

impl Credentials {
    /// What docker would use for `registry`: `~/.docker/config.json` (`$DOCKER_CONFIG`)
    /// `auths`, `credHelpers` and `credsStore` helpers, then `REGISTRY_AUTH_FILE` (podman);
    /// anonymous when nothing is configured.
    pub fn from_docker_config(registry: &str) -> Credentials {
        let found = docker_credential::get_credential(registry)
            .or_else(|_| docker_credential::get_podman_credential(registry));
        match found {
            Ok(docker_credential::DockerCredential::UsernamePassword(username, password)) => {
                Credentials::Basic { username, password }
            }
            Ok(docker_credential::DockerCredential::IdentityToken(t)) => Credentials::Token(t),
            Err(_) => Credentials::Anonymous,
        }
    }

    fn to_auth(&self) -> RegistryAuth {
        match self {
            Credentials::Anonymous => RegistryAuth::Anonymous,
            Credentials::Basic { username, password } => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
            Credentials::Token(t) => RegistryAuth::Bearer(t.clone()),
        }
    }
}

/// How to reach registries.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Hosts (`host[:port]`) spoken to over plain HTTP. Loopback hosts are added
    /// automatically unless a CA certificate is given, as docker treats them as insecure.
    pub insecure: Vec<String>,
    /// Extra PEM CA certificates trusted besides the system roots.
    pub ca_certs: Vec<PathBuf>,
    /// Blobs in flight at once.
    pub jobs: usize,
    /// Attempts per request on connection errors, timeouts and 5xx answers.
    pub attempts: u32,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            insecure: Vec::new(),
            ca_certs: Vec::new(),
            jobs: 8,
            attempts: 4,
        }
    }
}

/// One blob to push, stored in a file.
#[derive(Debug, Clone)]
pub struct Blob {
    pub digest: String,
    pub size: u64,
    pub path: PathBuf,
}

/// What to push: blobs (layers and config), then the manifest under every tag.
#[derive(Debug, Clone)]
pub struct PushRequest {
    /// `registry/repository` without tag, e.g. `127.0.0.1:5000/team/app`.
    pub repository: String,
    pub tags: Vec<String>,
    pub blobs: Vec<Blob>,
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
    pub manifest_media_type: String,
    /// Other repositories of the same registry that may hold the blobs (mount sources).
    pub mount_from: Vec<String>,
}

/// What happened to one blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobOutcome {
    /// Already in the repository.
    Skipped,
    /// Mounted from another repository of the registry.
    Mounted,
    Uploaded,
}

/// Progress events; the binary draws bars, tests ignore them.
pub trait PushProgress: Sync {
    fn blob_started(&self, _digest: &str, _size: u64) {}
    fn blob_bytes(&self, _digest: &str, _bytes: u64) {}
    fn blob_finished(&self, _digest: &str, _outcome: BlobOutcome) {}
}

pub struct NoProgress;
impl PushProgress for NoProgress {}

/// Totals of a push.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushStats {
    pub blobs_skipped: u64,
    pub blobs_mounted: u64,
    pub blobs_uploaded: u64,
    pub bytes_uploaded: u64,
    /// Tags whose manifest was already this image (nothing was written for them).
    pub tags_unchanged: u64,
    pub tags_written: u64,
    /// `repository:tag@digest` per tag.
    pub references: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("invalid image reference '{reference}': {detail}")]
    Reference { reference: String, detail: String },
    #[error("reading CA certificate {}: {source}", path.display())]
    CaCert {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("authentication to {registry} failed: {detail}")]
    Auth { registry: String, detail: String },
    #[error("{registry}: {what}: {detail}")]
    Request {
        what: String,
        registry: String,
        detail: String,
    },
    #[error("reading blob {}: {source}", path.display())]
    Blob {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("starting the network runtime: {0}")]
    Runtime(std::io::Error),
}

/// Is `host[:port]` a loopback address, which docker treats as an insecure registry?
pub fn is_loopback(host: &str) -> bool {
    let h = host
        .rsplit_once(':')
        .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host, |(h, _)| h);
    let h = h.trim_start_matches('[').trim_end_matches(']');
    h == "localhost" || h == "::1" || h.starts_with("127.")
}

fn parse_ref(s: &str) -> Result<Reference, RegistryError> {
    s.parse::<Reference>()
        .map_err(|e| RegistryError::Reference {
            reference: s.to_owned(),
            detail: e.to_string(),
        })
}

/// Strips anything that looks like a credential from an error text we pass on.
fn clean(detail: &str, creds: &Credentials) -> String {
    let mut d = detail.to_owned();
    match creds {
        Credentials::Basic { password, .. } if !password.is_empty() => {
            d = d.replace(password.as_str(), "***");
        }
        Credentials::Token(t) if !t.is_empty() => d = d.replace(t.as_str(), "***"),
        _ => {}
    }
    d
}

/// An error with its causes (reqwest keeps the interesting part, e.g. DNS, in the source).
fn error_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let t = s.to_string();
        if !text.contains(&t) {
            text = format!("{text}: {t}");
        }
        source = s.source();
    }
    text
}

/// Worth another attempt: connection trouble, timeouts, 5xx and 429.
fn transient(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::RequestError(r) => {
            r.is_connect()
                || r.is_timeout()
                || r.is_request()
                || r.is_body()
                || r.status()
                    .is_some_and(|s| s.is_server_error() || s.as_u16() == 429)
        }
        OciDistributionError::ServerError { code, .. } => *code >= 500 || *code == 429,
        OciDistributionError::IoError(_) => true,
        _ => false,
    }
}

/// Runs `op` up to `attempts` times with exponential backoff on transient failures.
async fn retry<T, F, Fut>(attempts: u32, mut op: F) -> Result<T, OciDistributionError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, OciDistributionError>>,
{
    let mut delay = Duration::from_millis(200);
    let mut n = 1;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if n < attempts && transient(&e) => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
                n += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Pushes `req` and returns what it did. Blocking: runs its own small runtime.
pub fn push(
    req: &PushRequest,
    creds: &Credentials,
    opts: &RegistryOptions,
    progress: Arc<dyn PushProgress + Send>,
) -> Result<PushStats, RegistryError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(RegistryError::Runtime)?;
    rt.block_on(push_async(req, creds, opts, progress))
}

async fn push_async(
    req: &PushRequest,
    creds: &Credentials,
    opts: &RegistryOptions,
    progress: Arc<dyn PushProgress + Send>,
) -> Result<PushStats, RegistryError> {
    let first_tag = req.tags.first().map_or("latest", String::as_str);
    let target = parse_ref(&format!("{}:{first_tag}", req.repository))?;
    let registry = target.resolve_registry().to_owned();
    let mut insecure = opts.insecure.clone();
    if opts.ca_certs.is_empty() && is_loopback(&registry) {
        insecure.push(registry.clone());
    }
    let mut extra_root_certificates = Vec::new();
    for p in &opts.ca_certs {
        let data = std::fs::read(p).map_err(|source| RegistryError::CaCert {
            path: p.clone(),
            source,
        })?;
        extra_root_certificates.push(Certificate {
            encoding: CertificateEncoding::Pem,
            data,
        });
    }
    let plain_http = insecure.contains(&registry);
    let client = Client::new(ClientConfig {
        protocol: ClientProtocol::HttpsExcept(insecure),
        extra_root_certificates,
        use_monolithic_push: true,
        max_concurrent_upload: opts.jobs.max(1),
        connect_timeout: Some(Duration::from_secs(30)),
        read_timeout: Some(Duration::from_secs(300)),
        ..ClientConfig::default()
    });
    let auth = creds.to_auth();
    let request_err = |what: &str, e: OciDistributionError| {
        let status = match &e {
            OciDistributionError::RequestError(r) => r.status().map(|s| s.as_u16()),
            OciDistributionError::ServerError { code, .. } => Some(*code),
            _ => None,
        };
        let mut detail = clean(&error_text(&e), creds);
        match status {
            Some(401) => {
                detail = format!(
                    "{detail}\nhint: the registry refused the credentials: check --username and --password, or the docker login for {registry}"
                );
            }
            Some(400) if plain_http => {
                detail = format!(
                    "{detail}\nhint: this registry was spoken to over plain HTTP; if it serves TLS, pass --ca-cert with its CA"
                );
            }
            _ => {}
        }
        RegistryError::Request {
            what: what.to_owned(),
            registry: registry.clone(),
            detail,
        }
    };
    retry(opts.attempts, || {
        client.auth(&target, &auth, RegistryOperation::Push)
    })
    .await
    .map_err(|e| match &e {
        OciDistributionError::RequestError(r) if r.is_connect() || r.is_timeout() => {
            RegistryError::Request {
                what: "connecting".into(),
                registry: registry.clone(),
                detail: clean(&error_text(&e), creds),
            }
        }
        _ => RegistryError::Auth {
            registry: registry.clone(),
            detail: clean(&error_text(&e), creds),
        },
    })?;

    let mut stats = PushStats::default();
    // The manifest HEAD shortcut: tags that already point at this image need nothing.
    let mut pending_tags = Vec::new();
    for tag in &req.tags {
        let r = parse_ref(&format!("{}:{tag}", req.repository))?;
        let current = client.fetch_manifest_digest(&r, &auth).await.ok();
        if current.as_deref() == Some(req.manifest_digest.as_str()) {
            stats.tags_unchanged += 1;
            stats
                .references
                .push(format!("{}:{tag}@{}", req.repository, req.manifest_digest));
        } else {
            pending_tags.push(tag.clone());
        }
    }
    if pending_tags.is_empty() {
        return Ok(stats);
    }

    let mount_sources: Vec<Reference> = req
        .mount_from
        .iter()
        .filter(|m| **m != req.repository)
        .map(|m| parse_ref(&format!("{m}:latest")))
        .collect::<Result<_, _>>()?;
    let uploaded_bytes = Arc::new(AtomicU64::new(0));
    let outcomes: Vec<BlobOutcome> = stream::iter(req.blobs.iter())
        .map(|blob| {
            let client = &client;
            let target = &target;
            let mount_sources = &mount_sources;
            let uploaded_bytes = uploaded_bytes.clone();
            let request_err = &request_err;
            let progress = progress.clone();
            async move {
                progress.blob_started(&blob.digest, blob.size);
                let exists = retry(opts.attempts, || client.blob_exists(target, &blob.digest))
                    .await
                    .map_err(|e| request_err(&format!("HEAD blob {}", blob.digest), e))?;
                if exists {
                    progress.blob_finished(&blob.digest, BlobOutcome::Skipped);
                    return Ok(BlobOutcome::Skipped);
                }
                for src in mount_sources {
                    if client.blob_exists(src, &blob.digest).await.unwrap_or(false)
                        && client.mount_blob(target, src, &blob.digest).await.is_ok()
                        && client
                            .blob_exists(target, &blob.digest)
                            .await
                            .unwrap_or(false)
                    {
                        progress.blob_finished(&blob.digest, BlobOutcome::Mounted);
                        return Ok(BlobOutcome::Mounted);
                    }
                }
                // Each attempt streams the file from its start: a failed upload restarts
                // cleanly in a new upload session.
                retry(opts.attempts, || async {
                    let file = tokio::fs::File::open(&blob.path)
                        .await
                        .map_err(OciDistributionError::IoError)?;
                    let digest = blob.digest.clone();
                    let counter = uploaded_bytes.clone();
                    let progress = progress.clone();
                    let body = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024)
                        .inspect_ok(move |chunk| {
                            counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                            progress.blob_bytes(&digest, chunk.len() as u64);
                        })
                        .map_err(OciDistributionError::IoError);
                    client
                        .push_blob_stream(target, body, &blob.digest, Some(blob.size))
                        .await
                })
                .await
                .map_err(|e| request_err(&format!("uploading blob {}", blob.digest), e))?;
                progress.blob_finished(&blob.digest, BlobOutcome::Uploaded);
                Ok::<_, RegistryError>(BlobOutcome::Uploaded)
            }
        })
        .buffer_unordered(opts.jobs.max(1))
        .try_collect()
        .await?;
    for o in outcomes {
        match o {
            BlobOutcome::Skipped => stats.blobs_skipped += 1,
            BlobOutcome::Mounted => stats.blobs_mounted += 1,
            BlobOutcome::Uploaded => stats.blobs_uploaded += 1,
        }
    }
    stats.bytes_uploaded = uploaded_bytes.load(Ordering::Relaxed);

    // Every blob is confirmed: now, and only now, the tags.
    let content_type: http::HeaderValue =
        req.manifest_media_type
            .parse()
            .map_err(|_| RegistryError::Request {
                what: "manifest media type".into(),
                registry: registry.clone(),
                detail: req.manifest_media_type.clone(),
            })?;
    for tag in pending_tags {
        let r = parse_ref(&format!("{}:{tag}", req.repository))?;
        retry(opts.attempts, || {
            client.push_manifest_raw(&r, req.manifest.clone(), content_type.clone())
        })
        .await
        .map_err(|e| request_err(&format!("writing tag {tag}"), e))?;
        stats.tags_written += 1;
        stats
            .references
            .push(format!("{}:{tag}@{}", req.repository, req.manifest_digest));
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "127.0.0.1:5000",
            "localhost:5000",
            "localhost",
            "[::1]:5000",
            "127.1.2.3",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "registry.example.com",
            "ghcr.io",
            "10.0.0.1:5000",
            "localhost.evil.com",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn credentials_never_debug_print() {
        let c = Credentials::Basic {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(clean("bad hunter2 here", &c), "bad *** here");
    }
}
