//! Reading an image's manifest and config, as a cache source or a base image is read: the
//! manifest a tag or digest names (an index resolved to one platform's manifest) and the
//! config blob, size-bounded and checked against their digests. A layer blob is read only
//! by [`fetch_blob`] (a base image's layers for a local output), streamed and checked.

use std::io::Write;
use std::time::Duration;

use oci_image::Platform;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, RANGE};
use serde_json::Value;
use sha2::Digest as _;

use crate::push::{MANIFEST_ACCEPT, base_url, client};
use crate::reference::{Repository, parse_repository};
use crate::session::{Failure, Session};
use crate::{Credentials, RegistryError, RegistryOptions, clean};

/// Registries refuse manifests above 4 MiB; a config is of the same order.
const MAX_DOCUMENT: u64 = 4 << 20;

/// An image as read: its manifest (for the platform asked for) and config.
#[derive(Debug, Clone)]
pub struct ImageDocuments {
    /// `registry/repository`.
    pub repository: String,
    /// The index the platform manifest was chosen from, when the reference named one.
    pub index_digest: Option<String>,
    pub manifest_digest: String,
    pub manifest: Vec<u8>,
    pub config: Vec<u8>,
}

/// What the registry holds for a reference and a platform.
#[derive(Debug, Clone)]
pub enum PlatformRead {
    Found(ImageDocuments),
    /// No such repository, tag or digest.
    NoImage,
    /// An index without a manifest for the platform: the platforms it has.
    NoPlatform(Vec<Platform>),
    /// A manifest of a media type that is not an OCI or Docker v2 image manifest or index
    /// (a Docker schema 1 manifest, an artifact).
    Unsupported {
        media_type: String,
    },
}

/// The manifest of `reference` (`registry/repo[:tag][@digest]`, tag `latest` when neither
/// is given) for `os`/`architecture`, and its config. `None` when the registry has no such
/// tag, repository or platform manifest.
pub fn read_image(
    reference: &str,
    os: &str,
    architecture: &str,
    creds: &Credentials,
    opts: &RegistryOptions,
) -> Result<Option<ImageDocuments>, RegistryError> {
    let platform = Platform {
        os: os.to_owned(),
        architecture: architecture.to_owned(),
        variant: None,
    };
    Ok(
        match read_platform_image(reference, &platform, creds, opts)? {
            PlatformRead::Found(d) => Some(d),
            _ => None,
        },
    )
}

/// The manifest of `reference` for `platform` (chosen in an index as
/// [`oci_image::base::platform_manifest`] does: the variant asked for, else an entry
/// without one), with its config and the index digest; or what the registry has instead.
pub fn read_platform_image(
    reference: &str,
    platform: &Platform,
    creds: &Credentials,
    opts: &RegistryOptions,
) -> Result<PlatformRead, RegistryError> {
    crate::runtime()?.block_on(read(reference, platform, creds, opts))
}

/// A pull session on `reference`'s repository.
fn pull_session(
    reference: &str,
    creds: &Credentials,
    opts: &RegistryOptions,
) -> Result<(oci_image::reference::Reference, Repository, Session), RegistryError> {
    let r = oci_image::reference::Reference::parse(reference).map_err(|e| {
        RegistryError::Reference {
            reference: reference.to_owned(),
            detail: e.problem,
        }
    })?;
    let repo = parse_repository(&r.name)?;
    let (base, _) = base_url(&repo, opts, reference)?;
    let s = Session::new(
        client(opts)?,
        base,
        creds.clone(),
        vec![format!("repository:{}:pull", repo.path)],
        opts.attempts,
    );
    Ok((r, repo, s))
}

async fn read(
    reference: &str,
    platform: &Platform,
    creds: &Credentials,
    opts: &RegistryOptions,
) -> Result<PlatformRead, RegistryError> {
    let (r, repo, s) = pull_session(reference, creds, opts)?;
    let fail = |what: &str, f: Failure| RegistryError::Request {
        what: format!("{what} of {reference}"),
        registry: repo.registry.clone(),
        detail: clean(&f.detail, creds),
    };
    let wanted = r
        .digest
        .clone()
        .or(r.tag.clone())
        .unwrap_or("latest".into());
    let json = |bytes: &[u8]| {
        serde_json::from_slice::<Value>(bytes).map_err(|e| {
            fail(
                "reading the manifest",
                Failure::other(format!("not JSON: {e}")),
            )
        })
    };
    // A manifest asked for by digest must be the one served.
    let by_digest = |what: &str, got: &str, want: &str| {
        if got == want {
            Ok(())
        } else {
            Err(fail(
                what,
                Failure::other(format!("the registry served {got} for {want}")),
            ))
        }
    };
    let Some((mut digest, mut manifest)) = get(&s, &repo.path, "manifests", &wanted)
        .await
        .map_err(|f| fail("reading the manifest", f))?
    else {
        return Ok(PlatformRead::NoImage);
    };
    if let Some(d) = &r.digest {
        by_digest("reading the manifest", &digest, d)?;
    }
    let mut doc = json(&manifest)?;
    let mut index_digest = None;
    if doc.get("manifests").is_some() {
        let d = match oci_image::base::platform_manifest(&doc, platform) {
            Ok(d) => d,
            Err(available) => return Ok(PlatformRead::NoPlatform(available)),
        };
        let Some((got, bytes)) = get(&s, &repo.path, "manifests", &d)
            .await
            .map_err(|f| fail("reading the platform manifest", f))?
        else {
            return Ok(PlatformRead::NoImage);
        };
        by_digest("reading the platform manifest", &got, &d)?;
        doc = json(&bytes)?;
        index_digest = Some(digest);
        (digest, manifest) = (got, bytes);
    }
    let Some(config_digest) = doc.pointer("/config/digest").and_then(Value::as_str) else {
        // Not an image manifest: a Docker schema 1 manifest, an index in an index, ...
        let media_type = doc
            .get("mediaType")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| {
                format!(
                    "(none; schemaVersion {})",
                    doc.get("schemaVersion").unwrap_or(&Value::Null)
                )
            });
        return Ok(PlatformRead::Unsupported { media_type });
    };
    let config_digest = config_digest.to_owned();
    let Some((got, config)) = get(&s, &repo.path, "blobs", &config_digest)
        .await
        .map_err(|f| fail("reading the config", f))?
    else {
        return Err(fail(
            "reading the config",
            Failure::other(format!("the registry has no blob {config_digest}")),
        ));
    };
    if got != config_digest {
        return Err(fail(
            "reading the config",
            Failure::other(format!("its bytes hash to {got}, not {config_digest}")),
        ));
    }
    Ok(PlatformRead::Found(ImageDocuments {
        repository: r.name,
        index_digest,
        manifest_digest: digest,
        manifest,
        config,
    }))
}

/// Streams the blob `digest` (`size` bytes) of `reference`'s repository into `dest`,
/// hashing it as it arrives; returns the bytes written. A connection cut in the body is
/// resumed where it stopped (`Range`; from a registry that ignores it, the whole blob again
/// with what `dest` has skipped), within the attempts of `opts`. Bytes that do not hash
/// to `digest`, or more or fewer than `size`, are [`RegistryError::Digest`]: `dest` holds
/// them then and must not be trusted (a `CheckedBlobWriter` names nothing on a mismatch).
pub fn fetch_blob(
    reference: &str,
    digest: &str,
    size: u64,
    dest: &mut dyn Write,
    creds: &Credentials,
    opts: &RegistryOptions,
) -> Result<u64, RegistryError> {
    crate::runtime()?.block_on(fetch(reference, digest, size, dest, creds, opts))
}

async fn fetch(
    reference: &str,
    digest: &str,
    size: u64,
    dest: &mut dyn Write,
    creds: &Credentials,
    opts: &RegistryOptions,
) -> Result<u64, RegistryError> {
    let (_, repo, s) = pull_session(reference, creds, opts)?;
    let what = format!("blob {digest} of {reference}");
    let fail = |f: Failure| RegistryError::Request {
        what: format!("fetching {what}"),
        registry: repo.registry.clone(),
        detail: clean(&f.detail, creds),
    };
    let mismatch = |actual: String| RegistryError::Digest {
        what: what.clone(),
        expected: digest.to_owned(),
        actual,
    };
    let url = s.url(&format!("/v2/{}/blobs/{digest}", repo.path));
    let mut state = sha2::Sha256::new();
    let mut written: u64 = 0;
    let mut cuts_left = opts.attempts.max(1);
    let mut backoff = Duration::from_millis(200);
    loop {
        let from = written;
        let mut resp = s
            .retrying(|| async {
                s.expect(
                    &[
                        StatusCode::OK,
                        StatusCode::PARTIAL_CONTENT,
                        StatusCode::NOT_FOUND,
                    ],
                    &|c| {
                        let mut rb = c.get(url.clone());
                        if from > 0 {
                            rb = rb.header(RANGE, format!("bytes={from}-"));
                        }
                        Ok(rb)
                    },
                )
                .await
            })
            .await
            .map_err(fail)?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Err(fail(Failure::other("the registry has no such blob")));
        }
        // A full answer to a ranged request repeats what `dest` already has.
        let mut skip = if resp.status() == StatusCode::OK {
            from
        } else {
            0
        };
        let cut = loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    let k = skip.min(chunk.len() as u64) as usize;
                    skip -= k as u64;
                    let data = &chunk[k..];
                    if written + data.len() as u64 > size {
                        return Err(mismatch(format!("more than {size} bytes")));
                    }
                    dest.write_all(data)
                        .map_err(|source| RegistryError::Write {
                            what: what.clone(),
                            source,
                        })?;
                    state.update(data);
                    written += data.len() as u64;
                }
                Ok(None) => break None,
                Err(e) => break Some(crate::session::error_text(&e)),
            }
        };
        let Some(detail) = cut else { break };
        cuts_left -= 1;
        if cuts_left == 0 {
            return Err(fail(Failure::other(format!(
                "the connection broke after {written} of {size} bytes: {detail}"
            ))));
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
    let actual = format!("sha256:{}", hex::encode(state.finalize()));
    if written != size {
        return Err(mismatch(format!("{written} bytes, not {size}")));
    }
    if actual != digest {
        return Err(mismatch(actual));
    }
    Ok(written)
}

/// `GET /v2/<path>/<kind>/<reference>`, bounded; the body and the sha256 digest of its
/// bytes. `None` on 404.
async fn get(
    s: &Session,
    path: &str,
    kind: &str,
    reference: &str,
) -> Result<Option<(String, Vec<u8>)>, Failure> {
    let url = s.url(&format!("/v2/{path}/{kind}/{reference}"));
    let resp = s
        .retrying(|| async {
            s.expect(&[StatusCode::OK, StatusCode::NOT_FOUND], &|c| {
                Ok(c.get(url.clone()).header(ACCEPT, MANIFEST_ACCEPT))
            })
            .await
        })
        .await?;
    if resp.status() == StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if resp.content_length().is_some_and(|n| n > MAX_DOCUMENT) {
        return Err(Failure::other(format!(
            "it is larger than the {MAX_DOCUMENT} bytes hab-oci reads"
        )));
    }
    let mut resp = resp;
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| Failure {
        transient: true,
        ..Failure::other(crate::session::error_text(&e))
    })? {
        body.extend_from_slice(&chunk);
        if body.len() as u64 > MAX_DOCUMENT {
            return Err(Failure::other(format!(
                "it is larger than the {MAX_DOCUMENT} bytes hab-oci reads"
            )));
        }
    }
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&body)));
    Ok(Some((digest, body)))
}
