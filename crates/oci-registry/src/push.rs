//! The push itself: handshake, the manifest `HEAD` shortcut per tag, blobs (HEAD, mount,
//! monolithic or chunked upload) many at a time, then the manifest under every tag.

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
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

fn client(opts: &RegistryOptions) -> Result<reqwest::Client, RegistryError> {
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

/// Everything a blob upload needs, shared by the concurrent uploads.
struct Ctx<'a> {
    s: &'a Session,
    repo: &'a Repository,
    mount_from: &'a [Repository],
    chunk_size: u64,
    progress: Arc<dyn PushProgress + Send>,
    /// Bytes sent in blob bodies, retries included (shared with the 'static body streams).
    uploaded: Arc<AtomicU64>,
}

pub(crate) async fn push(
    req: &PushRequest,
    creds: &Credentials,
    opts: &RegistryOptions,
    progress: Arc<dyn PushProgress + Send>,
) -> Result<PushStats, RegistryError> {
    let repo = parse_repository(&req.repository)?;
    let registry = repo.registry.clone();
    let mut mount_from = Vec::new();
    for m in &req.mount_from {
        let r = parse_repository(m)?;
        if r.host == repo.host && r.path != repo.path && !mount_from.contains(&r) {
            mount_from.push(r);
        }
    }
    let plain_http =
        opts.insecure.contains(&registry) || (opts.ca_certs.is_empty() && is_loopback(&registry));
    let base = Url::parse(&format!(
        "{}://{}/",
        if plain_http { "http" } else { "https" },
        repo.host
    ))
    .map_err(|e| RegistryError::Reference {
        reference: req.repository.clone(),
        detail: e.to_string(),
    })?;
    let mut scopes = vec![format!("repository:{}:pull,push", repo.path)];
    scopes.extend(
        mount_from
            .iter()
            .map(|m| format!("repository:{}:pull", m.path)),
    );
    let s = Session::new(client(opts)?, base, creds.clone(), scopes, opts.attempts);

    // The hint for a refused request: a token the registry would not take (expired, or
    // for another service) is a different problem from a wrong password.
    let refused = |s: &Session| match s.token_realm() {
        Some(realm) => format!(
            "hint: the registry refused the token issued by {realm}: it expired or is not valid for this registry (check that this machine's clock and the token service's agree), or the credentials lack access to {}",
            repo.path
        ),
        None => format!(
            "hint: the registry refused the credentials: check --username and --password, or the docker login for {registry}"
        ),
    };
    let fail = |what: &str, f: Failure| {
        let mut detail = clean(&f.detail, creds);
        if f.auth {
            return RegistryError::Auth {
                registry: registry.clone(),
                detail,
            };
        }
        match f.status {
            Some(401) => detail = format!("{detail}\n{}", refused(&s)),
            Some(403) => {
                detail = format!(
                    "{detail}\nhint: the credentials are valid but may not push to {}",
                    repo.path
                )
            }
            Some(400) if plain_http => {
                detail = format!(
                    "{detail}\nhint: this registry was spoken to over plain HTTP; if it serves TLS, pass --ca-cert with its CA"
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
            registry: registry.clone(),
            detail,
        }
    };

    // Handshake: `GET /v2/` finds out how the registry wants to be spoken to (and answers
    // a 401 with the credentials), so that a wrong password or host fails before any work.
    s.retrying(|| async {
        s.expect(&[StatusCode::OK], &|c| Ok(c.get(s.url("/v2/"))))
            .await
            .map(drop)
    })
    .await
    .map_err(|f| match f.status {
        Some(401) => RegistryError::Auth {
            registry: registry.clone(),
            detail: format!("{}\n{}", clean(&f.detail, creds), refused(&s)),
        },
        _ => fail("checking the registry API (/v2/)", f),
    })?;

    let mut stats = PushStats::default();
    // The manifest HEAD shortcut: tags that already point at this image need nothing.
    let mut pending_tags = Vec::new();
    for tag in &req.tags {
        let current = s
            .retrying(|| manifest_digest(&s, &repo, tag))
            .await
            .map_err(|f| fail(&format!("checking tag {tag}"), f))?;
        if current.as_deref() == Some(req.manifest_digest.as_str()) {
            stats.tags_unchanged += 1;
            stats
                .references
                .push(format!("{}:{tag}@{}", req.repository, req.manifest_digest));
        } else {
            pending_tags.push(tag.clone());
        }
    }
    if !pending_tags.is_empty() {
        let ctx = Ctx {
            s: &s,
            repo: &repo,
            mount_from: &mount_from,
            chunk_size: opts.chunk_size.max(1),
            progress,
            uploaded: Arc::new(AtomicU64::new(0)),
        };
        let outcomes: Vec<BlobOutcome> = stream::iter(req.blobs.iter())
            .map(|blob| {
                let ctx = &ctx;
                let fail = &fail;
                async move {
                    ctx.progress.blob_started(&blob.digest, blob.size);
                    let outcome = push_blob(ctx, blob)
                        .await
                        .map_err(|f| fail(&format!("uploading blob {}", blob.digest), f))?;
                    ctx.progress.blob_finished(&blob.digest, outcome);
                    Ok::<_, RegistryError>(outcome)
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
        stats.bytes_uploaded = ctx.uploaded.load(Ordering::Relaxed);

        // Every blob is confirmed: now, and only now, the tags.
        let content_type = HeaderValue::from_str(&req.manifest_media_type).map_err(|_| {
            RegistryError::Request {
                what: "manifest media type".into(),
                registry: registry.clone(),
                detail: req.manifest_media_type.clone(),
            }
        })?;
        for tag in pending_tags {
            let url = s.url(&format!("/v2/{}/manifests/{tag}", repo.path));
            let put = |c: &reqwest::Client| {
                Ok(c.put(url.clone())
                    .header(CONTENT_TYPE, content_type.clone())
                    .body(req.manifest.clone()))
            };
            let resp = s
                .retrying(|| s.expect(&[StatusCode::CREATED, StatusCode::OK], &put))
                .await
                .map_err(|f| fail(&format!("writing tag {tag}"), f))?;
            if let Some(d) = header(&resp, "docker-content-digest")
                && d != req.manifest_digest
            {
                return Err(fail(
                    &format!("writing tag {tag}"),
                    Failure::other(format!(
                        "the registry stored the manifest as {d}, not {}",
                        req.manifest_digest
                    )),
                ));
            }
            stats.tags_written += 1;
            stats
                .references
                .push(format!("{}:{tag}@{}", req.repository, req.manifest_digest));
        }
    }
    stats.requests = s.requests();
    stats.token_requests = s.token_requests();
    Ok(stats)
}

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
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
/// Each attempt of the upload starts over in a new upload session, streaming from the
/// file's start, so a fault mid-way leaves nothing half-written behind.
async fn push_blob(ctx: &Ctx<'_>, blob: &Blob) -> Result<BlobOutcome, Failure> {
    let s = ctx.s;
    let url = s.url(&format!("/v2/{}/blobs/{}", ctx.repo.path, blob.digest));
    let present = s
        .retrying(|| async {
            let resp = s
                .expect(&[StatusCode::OK, StatusCode::NOT_FOUND], &|c| {
                    Ok(c.head(url.clone()))
                })
                .await?;
            Ok(resp.status() == StatusCode::OK)
        })
        .await?;
    if present {
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
async fn upload(ctx: &Ctx<'_>, blob: &Blob) -> Result<BlobOutcome, Failure> {
    let s = ctx.s;
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
async fn upload_chunked(ctx: &Ctx<'_>, blob: &Blob) -> Result<(), Failure> {
    let s = ctx.s;
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
fn file_body(ctx: &Ctx<'_>, blob: &Blob, offset: u64, len: u64) -> Result<reqwest::Body, Failure> {
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
