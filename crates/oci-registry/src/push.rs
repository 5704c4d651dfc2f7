//! The push itself: handshake, the manifest `HEAD` shortcut per tag, blobs (HEAD, mount,
//! monolithic or chunked upload) many at a time, then the manifest under every tag.

use std::collections::HashMap;
use std::io::{Seek, SeekFrom};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt, stream};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use sha2::Digest as _;
use tokio::io::AsyncReadExt as _;
use url::Url;

use crate::reference::{Repository, parse_repository};
use crate::session::{Failure, Session};
use crate::{
    Blob, BlobOutcome, Credentials, PushProgress, PushRequest, PushStats, RegistryError,
    RegistryOptions, clean, is_loopback,
};

/// Manifest types we ask for when checking what a tag points at.
pub(crate) const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

pub(crate) fn client(opts: &RegistryOptions) -> Result<reqwest::Client, RegistryError> {
    let mut certs = Vec::new();
    for p in &opts.ca_certs {
        let data = std::fs::read(p).map_err(|source| RegistryError::CaCert {
            path: p.clone(),
            source,
        })?;
        let bundle =
            reqwest::Certificate::from_pem_bundle(&data).map_err(|e| RegistryError::CaCert {
                path: p.clone(),
                source: std::io::Error::other(format!("not a PEM certificate: {e}")),
            })?;
        if bundle.is_empty() {
            return Err(RegistryError::CaCert {
                path: p.clone(),
                source: std::io::Error::other("no PEM certificate in the file"),
            });
        }
        certs.extend(bundle);
    }
    reqwest::Client::builder()
        .user_agent(concat!("hab-oci/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(30))
        .read_timeout(Duration::from_secs(300))
        .pool_max_idle_per_host(opts.jobs.max(1))
        .tls_certs_merge(certs)
        .build()
        .map_err(|e| RegistryError::Request {
            what: "starting the HTTP client".into(),
            registry: String::new(),
            detail: crate::session::error_text(&e),
        })
}

/// A connected push target: everything a blob upload needs, shared by the concurrent
/// uploads (the early ones of a [`crate::Pusher`] and the final push's).
pub(crate) struct Ctx {
    s: Session,
    repo: Repository,
    mount_from: Vec<Repository>,
    registry: String,
    plain_http: bool,
    creds: Credentials,
    chunk_size: u64,
    jobs: usize,
    progress: Arc<dyn PushProgress + Send>,
    /// Bytes sent in blob bodies, retries included (shared with the 'static body streams).
    uploaded: Arc<AtomicU64>,
}

impl Ctx {
    /// The hint for a refused request: a token the registry would not take (expired, or
    /// for another service) is a different problem from a wrong password.
    fn refused(&self) -> String {
        match self.s.token_realm() {
            Some(realm) => format!(
                "hint: the registry refused the token issued by {realm}: it expired or is not valid for this registry (check that this machine's clock and the token service's agree), or the credentials lack access to {}",
                self.repo.path
            ),
            None => format!(
                "hint: the registry refused the credentials: check the username and password given, or the docker login for {}",
                self.registry
            ),
        }
    }

    /// The session, for the other requests of a connected target (referrers).
    pub(crate) fn session(&self) -> &Session {
        &self.s
    }

    /// The repository's path in its registry (`team/app`).
    pub(crate) fn repo_path(&self) -> &str {
        &self.repo.path
    }

    pub(crate) fn fail(&self, what: &str, f: Failure) -> RegistryError {
        let registry = self.registry.clone();
        let mut detail = clean(&f.detail, &self.creds);
        if f.auth {
            return RegistryError::Auth { registry, detail };
        }
        match f.status {
            Some(401) => detail = format!("{detail}\n{}", self.refused()),
            Some(403) => {
                detail = format!(
                    "{detail}\nhint: the credentials are valid but may not push to {}",
                    self.repo.path
                )
            }
            Some(400) if self.plain_http => {
                detail = format!(
                    "{detail}\nhint: this registry was spoken to over plain HTTP; if it serves TLS, trust its CA certificate instead (the registry client's CA option)"
                )
            }
            _ => {}
        }
        RegistryError::Request {
            what: if f.connect {
                "connecting".into()
            } else {
                what.to_owned()
            },
            registry,
            detail,
        }
    }

    /// One blob with progress events and the error a user reads.
    async fn blob(&self, blob: &Blob) -> Result<BlobOutcome, RegistryError> {
        self.progress.blob_started(&blob.digest, blob.size);
        let outcome = push_blob(self, blob)
            .await
            .map_err(|f| self.fail(&format!("uploading blob {}", blob.digest), f))?;
        self.progress.blob_finished(&blob.digest, outcome);
        Ok(outcome)
    }
}

/// Parses the target, then the handshake: `GET /v2/` finds out how the registry wants to
/// be spoken to (and answers a 401 with the credentials), so that a wrong password or host
/// fails before any work.
pub(crate) async fn connect(
    repository: &str,
    mount_from: &[String],
    creds: &Credentials,
    opts: &RegistryOptions,
    progress: Arc<dyn PushProgress + Send>,
) -> Result<Ctx, RegistryError> {
    let repo = parse_repository(repository)?;
    let registry = repo.registry.clone();
    let mut sources = Vec::new();
    for m in mount_from {
        let r = parse_repository(m)?;
        if r.host == repo.host && r.path != repo.path && !sources.contains(&r) {
            sources.push(r);
        }
    }
    let (base, plain_http) = base_url(&repo, opts, repository)?;
    let mut scopes = vec![format!("repository:{}:pull,push", repo.path)];
    scopes.extend(
        sources
            .iter()
            .map(|m| format!("repository:{}:pull", m.path)),
    );
    let ctx = Ctx {
        s: Session::new(client(opts)?, base, creds.clone(), scopes, opts.attempts),
        repo,
        mount_from: sources,
        registry,
        plain_http,
        creds: creds.clone(),
        chunk_size: opts.chunk_size.max(1),
        jobs: opts.jobs.max(1),
        progress,
        uploaded: Arc::new(AtomicU64::new(0)),
    };
    let s = &ctx.s;
    s.retrying(|| async {
        s.expect(&[StatusCode::OK], &|c| Ok(c.get(s.url("/v2/"))))
            .await
            .map(drop)
    })
    .await
    .map_err(|f| match f.status {
        Some(401) => RegistryError::Auth {
            registry: ctx.registry.clone(),
            detail: format!("{}\n{}", clean(&f.detail, creds), ctx.refused()),
        },
        _ => ctx.fail("checking the registry API (/v2/)", f),
    })?;
    Ok(ctx)
}

/// Where `repo`'s registry answers, and whether over plain HTTP (insecure hosts, and
/// loopback ones unless a CA certificate is given, as docker does).
pub(crate) fn base_url(
    repo: &Repository,
    opts: &RegistryOptions,
    reference: &str,
) -> Result<(Url, bool), RegistryError> {
    let plain_http = opts.insecure.contains(&repo.registry)
        || (opts.ca_certs.is_empty() && is_loopback(&repo.registry));
    let base = Url::parse(&format!(
        "{}://{}/",
        if plain_http { "http" } else { "https" },
        repo.host
    ))
    .map_err(|e| RegistryError::Reference {
        reference: reference.to_owned(),
        detail: e.to_string(),
    })?;
    Ok((base, plain_http))
}

/// Makes sure each blob is in the push's repository without sending its bytes: a `HEAD`
/// that finds it with the size given, else a mount from `from` when that is another
/// repository of the same registry (never across registries). `None` for a blob that is
/// not there (or not as described); the caller then builds and uploads it.
pub(crate) async fn confirm_blobs(
    ctx: &Ctx,
    blobs: &[(String, u64, String)],
) -> Vec<Option<BlobOutcome>> {
    stream::iter(blobs)
        .map(|(digest, size, from)| async move {
            let outcome = confirm_one(ctx, digest, *size, from).await.ok().flatten();
            if let Some(o) = outcome {
                ctx.progress.blob_finished(digest, o);
            }
            outcome
        })
        .buffered(ctx.jobs)
        .collect()
        .await
}

async fn confirm_one(
    ctx: &Ctx,
    digest: &str,
    size: u64,
    from: &str,
) -> Result<Option<BlobOutcome>, Failure> {
    let s = &ctx.s;
    let url = s.url(&format!("/v2/{}/blobs/{digest}", ctx.repo.path));
    let resp = s
        .retrying(|| async {
            s.expect(&[StatusCode::OK, StatusCode::NOT_FOUND], &|c| {
                Ok(c.head(url.clone()))
            })
            .await
        })
        .await?;
    if resp.status() == StatusCode::OK {
        // A registry that reports another size holds something else under that name.
        let length = header(&resp, "content-length").and_then(|v| v.parse::<u64>().ok());
        return Ok((length.is_none_or(|n| n == size)).then_some(BlobOutcome::Skipped));
    }
    let Some(source) = parse_repository(from)
        .ok()
        .filter(|r| r.host == ctx.repo.host && r.path != ctx.repo.path)
    else {
        return Ok(None);
    };
    let mut u = s.url(&format!("/v2/{}/blobs/uploads/", ctx.repo.path));
    u.query_pairs_mut()
        .append_pair("mount", digest)
        .append_pair("from", &source.path);
    let resp = s
        .retrying(|| async {
            s.expect(&[StatusCode::CREATED, StatusCode::ACCEPTED], &|c| {
                Ok(c.post(u.clone()).header(CONTENT_LENGTH, 0))
            })
            .await
        })
        .await?;
    if resp.status() == StatusCode::CREATED {
        return Ok(Some(BlobOutcome::Mounted));
    }
    // The registry could not mount and opened an upload session instead: close it.
    if let Ok(loc) = s.location(&resp) {
        let _ = s.send(&|c| Ok(c.delete(loc.clone()))).await;
    }
    Ok(None)
}

pub(crate) async fn push(
    req: &PushRequest,
    creds: &Credentials,
    opts: &RegistryOptions,
    progress: Arc<dyn PushProgress + Send>,
) -> Result<PushStats, RegistryError> {
    let ctx = connect(&req.repository, &req.mount_from, creds, opts, progress).await?;
    finish(&ctx, req, &HashMap::new()).await
}

/// Uploads blobs as they arrive on `rx` (a [`crate::Pusher`]'s early blobs), `jobs` at a
/// time. A blob that fails here is left out of the answer: the final push tries it again
/// and reports its error.
pub(crate) async fn early(
    ctx: Arc<Ctx>,
    rx: tokio::sync::mpsc::UnboundedReceiver<Blob>,
) -> HashMap<String, BlobOutcome> {
    let jobs = ctx.jobs;
    tokio_stream_of(rx)
        .map(|blob| {
            let ctx = ctx.clone();
            async move { ctx.blob(&blob).await.ok().map(|o| (blob.digest, o)) }
        })
        .buffer_unordered(jobs)
        .filter_map(|o| async move { o })
        .collect()
        .await
}

fn tokio_stream_of<T: 'static>(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<T>,
) -> impl futures_util::Stream<Item = T> {
    stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// The rest of a push once every blob is known: the manifest `HEAD` shortcut per tag, the
/// blobs not in `done` (handled earlier by a [`crate::Pusher`]), then the tags.
pub(crate) async fn finish(
    ctx: &Ctx,
    req: &PushRequest,
    done: &HashMap<String, BlobOutcome>,
) -> Result<PushStats, RegistryError> {
    let s = &ctx.s;
    let repo = &ctx.repo;
    let mut stats = PushStats::default();
    let mut outcomes: Vec<BlobOutcome> = req
        .blobs
        .iter()
        .filter_map(|b| done.get(&b.digest).copied())
        .collect();
    stats.blobs_early = outcomes.len() as u64;
    // The manifest HEAD shortcut: tags that already point at this image need nothing.
    let mut pending_tags = Vec::new();
    let mut unchanged = 0;
    let mut references = Vec::new();
    for tag in &req.tags {
        let current = s
            .retrying(|| manifest_digest(s, repo, tag))
            .await
            .map_err(|f| ctx.fail(&format!("checking tag {tag}"), f))?;
        if current.as_deref() == Some(req.manifest_digest.as_str()) {
            unchanged += 1;
            references.push(format!("{}:{tag}@{}", req.repository, req.manifest_digest));
        } else {
            pending_tags.push(tag.clone());
        }
    }
    if !pending_tags.is_empty() {
        let rest: Vec<BlobOutcome> =
            stream::iter(req.blobs.iter().filter(|b| !done.contains_key(&b.digest)))
                .map(|blob| ctx.blob(blob))
                .buffer_unordered(ctx.jobs)
                .try_collect()
                .await?;
        outcomes.extend(rest);

        // Every blob is confirmed: the manifests an index refers to, then, and only
        // then, the tags.
        for m in &req.children {
            put_manifest(ctx, &m.digest, &m.bytes, &m.media_type, &m.digest).await?;
        }
        for tag in pending_tags {
            put_manifest(
                ctx,
                &tag,
                &req.manifest,
                &req.manifest_media_type,
                &req.manifest_digest,
            )
            .await?;
            stats.tags_written += 1;
            references.push(format!("{}:{tag}@{}", req.repository, req.manifest_digest));
        }
    }
    for o in outcomes {
        match o {
            BlobOutcome::Skipped => stats.blobs_skipped += 1,
            BlobOutcome::Mounted => stats.blobs_mounted += 1,
            BlobOutcome::Uploaded => stats.blobs_uploaded += 1,
        }
    }
    stats.tags_unchanged = unchanged;
    stats.references = references;
    stats.bytes_uploaded = ctx.uploaded.load(Ordering::Relaxed);
    stats.requests = s.requests();
    stats.token_requests = s.token_requests();
    Ok(stats)
}

/// PUTs `bytes` as the manifest `reference` (a tag or a digest) and checks the registry
/// stored it under `digest`.
async fn put_manifest(
    ctx: &Ctx,
    reference: &str,
    bytes: &[u8],
    media_type: &str,
    digest: &str,
) -> Result<(), RegistryError> {
    let s = &ctx.s;
    let content_type = HeaderValue::from_str(media_type).map_err(|_| RegistryError::Request {
        what: "manifest media type".into(),
        registry: ctx.registry.clone(),
        detail: media_type.to_owned(),
    })?;
    let url = s.url(&format!("/v2/{}/manifests/{reference}", ctx.repo.path));
    let body = bytes.to_vec();
    let put = |c: &reqwest::Client| {
        Ok(c.put(url.clone())
            .header(CONTENT_TYPE, content_type.clone())
            .body(body.clone()))
    };
    let what = if reference.starts_with("sha256:") {
        format!("writing manifest {reference}")
    } else {
        format!("writing tag {reference}")
    };
    let resp = s
        .retrying(|| s.expect(&[StatusCode::CREATED, StatusCode::OK], &put))
        .await
        .map_err(|f| ctx.fail(&what, f))?;
    if let Some(d) = header(&resp, "docker-content-digest")
        && d != digest
    {
        return Err(ctx.fail(
            &what,
            Failure::other(format!(
                "the registry stored the manifest as {d}, not {digest}"
            )),
        ));
    }
    Ok(())
}

pub(crate) fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The digest `tag` points at, or `None` when the tag (or the repository) does not exist.
async fn manifest_digest(
    s: &Session,
    repo: &Repository,
    tag: &str,
) -> Result<Option<String>, Failure> {
    let url = s.url(&format!("/v2/{}/manifests/{tag}", repo.path));
    let resp = s
        .expect(&[StatusCode::OK, StatusCode::NOT_FOUND], &|c| {
            Ok(c.head(url.clone()).header(ACCEPT, MANIFEST_ACCEPT))
        })
        .await?;
    if resp.status() == StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if let Some(d) = header(&resp, "docker-content-digest") {
        return Ok(Some(d));
    }
    // Registries need not send the digest header: hash what they serve.
    let resp = s
        .expect(&[StatusCode::OK], &|c| {
            Ok(c.get(url.clone()).header(ACCEPT, MANIFEST_ACCEPT))
        })
        .await?;
    let body = resp.bytes().await.map_err(|e| Failure {
        transient: true,
        ..Failure::other(crate::session::error_text(&e))
    })?;
    Ok(Some(format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(&body))
    )))
}

/// One blob: skip it if present, mount it if a source repository has it, else upload it.
/// Does the repository `repo_path` hold the blob `digest`? One `HEAD`, retried.
pub(crate) async fn blob_present(
    s: &Session,
    repo_path: &str,
    digest: &str,
) -> Result<bool, Failure> {
    let url = s.url(&format!("/v2/{repo_path}/blobs/{digest}"));
    s.retrying(|| async {
        let resp = s
            .expect(&[StatusCode::OK, StatusCode::NOT_FOUND], &|c| {
                Ok(c.head(url.clone()))
            })
            .await?;
        Ok(resp.status() == StatusCode::OK)
    })
    .await
}

/// Each attempt of the upload starts over in a new upload session, streaming from the
/// file's start, so a fault mid-way leaves nothing half-written behind.
async fn push_blob(ctx: &Ctx, blob: &Blob) -> Result<BlobOutcome, Failure> {
    let s = &ctx.s;
    if blob_present(s, &ctx.repo.path, &blob.digest).await? {
        return Ok(BlobOutcome::Skipped);
    }
    let mut first = true;
    s.retrying(|| {
        let restart = !std::mem::replace(&mut first, false);
        async move {
            if restart {
                ctx.progress.blob_restarted(&blob.digest);
            }
            upload(ctx, blob).await
        }
    })
    .await
}

/// Opens an upload session (trying the mount sources first; a registry that cannot mount
/// answers a mount with a new session), then sends the blob.
async fn upload(ctx: &Ctx, blob: &Blob) -> Result<BlobOutcome, Failure> {
    let s = &ctx.s;
    let uploads = s.url(&format!("/v2/{}/blobs/uploads/", ctx.repo.path));
    let mut session = None;
    for (i, src) in ctx.mount_from.iter().enumerate() {
        let mut u = uploads.clone();
        u.query_pairs_mut()
            .append_pair("mount", &blob.digest)
            .append_pair("from", &src.path);
        let resp = s
            .expect(&[StatusCode::CREATED, StatusCode::ACCEPTED], &|c| {
                Ok(c.post(u.clone()).header(CONTENT_LENGTH, 0))
            })
            .await?;
        if resp.status() == StatusCode::CREATED {
            return Ok(BlobOutcome::Mounted);
        }
        let loc = s.location(&resp)?;
        if i + 1 < ctx.mount_from.len() {
            // Not there; the next source may have it. Close the session this opened.
            let _ = s.send(&|c| Ok(c.delete(loc.clone()))).await;
        } else {
            session = Some(loc);
        }
    }
    let location = match session {
        Some(l) => l,
        None => {
            let resp = s
                .expect(&[StatusCode::ACCEPTED], &|c| {
                    Ok(c.post(uploads.clone()).header(CONTENT_LENGTH, 0))
                })
                .await?;
            s.location(&resp)?
        }
    };
    let mut put = location.clone();
    put.query_pairs_mut().append_pair("digest", &blob.digest);
    let resp = s
        .send(&|c| {
            Ok(c.put(put.clone())
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_LENGTH, blob.size)
                .body(file_body(ctx, blob, 0, blob.size)?))
        })
        .await?;
    match resp.status() {
        StatusCode::CREATED => {
            confirm(&resp, blob)?;
            Ok(BlobOutcome::Uploaded)
        }
        StatusCode::PAYLOAD_TOO_LARGE => {
            // The registry (or a proxy in front of it) will not take the blob in one
            // request: start over in chunks.
            let _ = s.send(&|c| Ok(c.delete(location.clone()))).await;
            ctx.progress.blob_restarted(&blob.digest);
            upload_chunked(ctx, blob).await?;
            Ok(BlobOutcome::Uploaded)
        }
        _ => Err(Failure::from_response(resp).await),
    }
}

/// The chunked upload of the distribution spec: PATCH the blob in ranges, then PUT the digest.
async fn upload_chunked(ctx: &Ctx, blob: &Blob) -> Result<(), Failure> {
    let s = &ctx.s;
    let uploads = s.url(&format!("/v2/{}/blobs/uploads/", ctx.repo.path));
    let resp = s
        .expect(&[StatusCode::ACCEPTED], &|c| {
            Ok(c.post(uploads.clone()).header(CONTENT_LENGTH, 0))
        })
        .await?;
    let min = header(&resp, "oci-chunk-min-length")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let chunk = ctx.chunk_size.max(min);
    let mut location = s.location(&resp)?;
    let mut offset = 0;
    while offset < blob.size {
        let len = chunk.min(blob.size - offset);
        let range = format!("{}-{}", offset, offset + len - 1);
        let resp = s
            .expect(&[StatusCode::ACCEPTED], &|c| {
                Ok(c.patch(location.clone())
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_LENGTH, len)
                    .header("Content-Range", range.clone())
                    .body(file_body(ctx, blob, offset, len)?))
            })
            .await?;
        location = s.location(&resp)?;
        offset += len;
    }
    let mut put = location;
    put.query_pairs_mut().append_pair("digest", &blob.digest);
    let resp = s
        .expect(&[StatusCode::CREATED], &|c| {
            Ok(c.put(put.clone()).header(CONTENT_LENGTH, 0))
        })
        .await?;
    confirm(&resp, blob)
}

/// The registry says which digest it stored; it must be ours.
fn confirm(resp: &reqwest::Response, blob: &Blob) -> Result<(), Failure> {
    match header(resp, "docker-content-digest") {
        Some(d) if d != blob.digest => Err(Failure::other(format!(
            "the registry stored the blob as {d}, not {}",
            blob.digest
        ))),
        _ => Ok(()),
    }
}

/// `len` bytes of the blob file from `offset`, streamed (memory does not grow with the
/// blob), counted into the totals and the progress.
fn file_body(ctx: &Ctx, blob: &Blob, offset: u64, len: u64) -> Result<reqwest::Body, Failure> {
    let file = std::fs::File::open(&blob.path)
        .and_then(|mut f| f.seek(SeekFrom::Start(offset)).map(|_| f))
        .map_err(|e| Failure::other(format!("reading {}: {e}", blob.path.display())))?;
    let reader = tokio::fs::File::from_std(file).take(len);
    let progress = ctx.progress.clone();
    let digest = blob.digest.clone();
    let total = ctx.uploaded.clone();
    let stream =
        tokio_util::io::ReaderStream::with_capacity(reader, 256 * 1024).inspect_ok(move |chunk| {
            total.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            progress.blob_bytes(&digest, chunk.len() as u64);
        });
    Ok(reqwest::Body::wrap_stream(stream))
}
