//! Pushing images to registries over the OCI distribution API (the only async code in the
//! workspace, behind the blocking [`push`]). Per blob: `HEAD` first and skip what is there,
//! cross-repository mount when another repository of the same registry has it, otherwise a
//! monolithic upload streamed from the blob file (chunked when the registry refuses a large
//! body). Manifests are written last, one per tag, only after every blob is confirmed; a tag
//! whose manifest already has our digest costs one `HEAD`. Reading: an image's manifest and
//! config for a platform ([`read_platform_image`]), a blob streamed and checked
//! ([`fetch_blob`]). Habitat-free.

mod pull;
mod push;
mod reference;
mod referrer;
mod session;

pub use pull::{ImageDocuments, PlatformRead, fetch_blob, read_image, read_platform_image};

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

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
    /// Attempts per request on connection errors, timeouts, 429 and 5xx answers.
    pub attempts: u32,
    /// Chunk size for registries that refuse a blob in one request (413); raised to the
    /// registry's `OCI-Chunk-Min-Length` when that is larger.
    pub chunk_size: u64,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            insecure: Vec::new(),
            ca_certs: Vec::new(),
            jobs: 8,
            attempts: 4,
            chunk_size: 8 << 20,
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
    /// Manifests the tagged one refers to (an index's platform manifests), pushed by
    /// digest after the blobs and before the tags.
    pub children: Vec<Manifest>,
    /// Other repositories of the same registry that may hold the blobs (mount sources).
    pub mount_from: Vec<String>,
}

/// A manifest pushed by its digest.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub bytes: Vec<u8>,
    pub digest: String,
    pub media_type: String,
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
    /// An upload starts over (after a fault, or chunked after the registry refused the
    /// whole body): the bytes sent so far for this blob no longer count.
    fn blob_restarted(&self, _digest: &str) {}
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
    /// HTTP requests sent to the registry and its token service, the handshake included.
    pub requests: u64,
    /// Of those, requests to the token service.
    pub token_requests: u64,
    /// Blobs handled (uploaded, mounted or found) before the manifest was known, while the
    /// image was still being built (see [`Pusher`]).
    pub blobs_early: u64,
    /// `repository:tag@digest` per tag.
    pub references: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("invalid image reference '{reference}': {detail}")]
    Reference { reference: String, detail: String },
    #[error("reading CA certificate {}", path.display())]
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
    #[error("reading blob {}", path.display())]
    Blob {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: the bytes hash to {actual}, not {expected}")]
    Digest {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("writing {what}")]
    Write {
        what: String,
        source: std::io::Error,
    },
    #[error("starting the network runtime: {0}")]
    Runtime(std::io::Error),
}

pub use oci_image::reference::is_loopback;

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

/// Pushes `req` and returns what it did. Blocking: runs its own small runtime.
pub fn push(
    req: &PushRequest,
    creds: &Credentials,
    opts: &RegistryOptions,
    progress: Arc<dyn PushProgress + Send>,
) -> Result<PushStats, RegistryError> {
    runtime()?.block_on(push::push(req, creds, opts, progress))
}

/// A manifest an artifact refers to (its `subject`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    /// `sha256:HEX`.
    pub digest: String,
    pub size: u64,
}

/// An artifact to attach to `subject` as an OCI 1.1 referrer (see [`attach`]).
#[derive(Debug, Clone)]
pub struct AttachRequest {
    /// `registry/repository` holding the subject, e.g. `127.0.0.1:5000/team/app`.
    pub repository: String,
    pub subject: Descriptor,
    /// The referrer's `artifactType`, also the media type of its one layer, `blob`.
    pub artifact_type: String,
    pub blob: Vec<u8>,
    /// The referrer manifest's annotations (repeated in the referrers list).
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// What [`attach`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttachStats {
    /// `sha256:HEX` of the referrer manifest.
    pub manifest_digest: String,
    /// The registry answered `OCI-Subject`: it lists the referrer itself.
    pub referrers_api: bool,
    /// Otherwise the referrers tag (`sha256-HEX` of the subject) whose index lists it.
    pub fallback_tag: Option<String>,
    /// Blobs uploaded (the empty config and the artifact, when not there yet).
    pub blobs_uploaded: u64,
    /// HTTP requests, the handshake included.
    pub requests: u64,
}

/// Attaches an artifact to a manifest as an OCI 1.1 referrer: the empty config blob and the
/// artifact's blob, then its manifest (with `subject`) by digest; where the registry has no
/// referrers API (no `OCI-Subject` in its answer), the `sha256-HEX` referrers tag's index
/// gets its descriptor (made when missing, unchanged when it lists it already). Blocking.
pub fn attach(
    req: &AttachRequest,
    creds: &Credentials,
    opts: &RegistryOptions,
) -> Result<AttachStats, RegistryError> {
    runtime()?.block_on(async {
        let ctx = push::connect(&req.repository, &[], creds, opts, Arc::new(NoProgress)).await?;
        referrer::attach(&ctx, req).await
    })
}

/// Entry points for the fuzz targets (`fuzz/`): the parsers of what a registry or a user
/// hands us. Not an API.
#[doc(hidden)]
pub mod fuzzing {
    pub fn www_authenticate(header: &str) {
        let _ = crate::session::parse_challenge(header);
    }
    pub fn retry_after(value: &str) {
        let _ = crate::session::parse_retry_after(value);
    }
    pub fn registry_json(body: &[u8]) {
        let _ = crate::session::registry_errors(body);
        let _ = crate::session::parse_token_answer(body);
    }
    pub fn repository(reference: &str) {
        let _ = crate::reference::parse_repository(reference);
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, RegistryError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(RegistryError::Runtime)
}

/// A push that starts before the image is complete: connected (and authenticated) at
/// [`Pusher::start`], it uploads each blob [`Pusher::offer`]ed while the caller goes on
/// building, then [`Pusher::finish`] pushes what is left and writes the tags. Tags are
/// written only after every blob of the manifest is confirmed, as with [`push`]: a build
/// that fails half-way leaves unreferenced blobs in the registry (as any interrupted push
/// does), never a tag.
pub struct Pusher {
    rt: tokio::runtime::Runtime,
    ctx: Arc<push::Ctx>,
    tx: tokio::sync::mpsc::UnboundedSender<Blob>,
    early: tokio::task::JoinHandle<std::collections::HashMap<String, BlobOutcome>>,
}

impl Pusher {
    /// Connects to the registry of `repository` (`registry/path`): a wrong host or
    /// password fails here, before the caller's work.
    pub fn start(
        repository: &str,
        mount_from: &[String],
        creds: &Credentials,
        opts: &RegistryOptions,
        progress: Arc<dyn PushProgress + Send>,
    ) -> Result<Pusher, RegistryError> {
        let rt = runtime()?;
        let ctx =
            Arc::new(rt.block_on(push::connect(repository, mount_from, creds, opts, progress))?);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let early = rt.spawn(push::early(ctx.clone(), rx));
        Ok(Pusher { rt, ctx, tx, early })
    }

    /// Queues a finished blob for upload; returns at once.
    pub fn offer(&self, blob: Blob) {
        // The receiver lives until `finish`: a send cannot fail before.
        let _ = self.tx.send(blob);
    }

    /// Which of `blobs` (`digest`, `size`, `registry/repository` holding it) are in the
    /// repository, made so without uploading: found with the size given, or mounted from
    /// their repository when it is another one of the same registry. Blocking.
    pub fn confirm(&self, blobs: &[(String, u64, String)]) -> Vec<Option<BlobOutcome>> {
        self.rt.block_on(push::confirm_blobs(&self.ctx, blobs))
    }

    /// Waits for the offered blobs, then pushes `req` (its repository must be the one
    /// given to `start`): blobs not offered, or whose early upload failed, then the tags.
    pub fn finish(self, req: &PushRequest) -> Result<PushStats, RegistryError> {
        let Pusher { rt, ctx, tx, early } = self;
        drop(tx);
        let done = rt.block_on(early).unwrap_or_default();
        rt.block_on(push::finish(&ctx, req, &done))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
