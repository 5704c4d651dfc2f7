//! Reading an image's manifest and config, as a cache source is read: the manifest a tag or
//! digest names (an index resolved to one platform's manifest) and the config blob — never
//! a layer blob. Both are size-bounded and checked against their digests.

use reqwest::StatusCode;
use reqwest::header::ACCEPT;
use serde_json::Value;
use sha2::Digest as _;

use crate::push::{MANIFEST_ACCEPT, base_url, client};
use crate::reference::parse_repository;
use crate::session::{Failure, Session};
use crate::{Credentials, RegistryError, RegistryOptions, clean};

/// Registries refuse manifests above 4 MiB; a config is of the same order.
const MAX_DOCUMENT: u64 = 4 << 20;

/// An image as read: its manifest (for the platform asked for) and config.
#[derive(Debug, Clone)]
pub struct ImageDocuments {
    /// `registry/repository`.
    pub repository: String,
    pub manifest_digest: String,
    pub manifest: Vec<u8>,
    pub config: Vec<u8>,
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
    crate::runtime()?.block_on(read(reference, os, architecture, creds, opts))
}

async fn read(
    reference: &str,
    os: &str,
    architecture: &str,
    creds: &Credentials,
    opts: &RegistryOptions,
) -> Result<Option<ImageDocuments>, RegistryError> {
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
        return Ok(None);
    };
    if let Some(d) = &r.digest {
        by_digest("reading the manifest", &digest, d)?;
    }
    let mut doc = json(&manifest)?;
    if doc.get("manifests").is_some() {
        let Some(d) = platform_manifest(&doc, os, architecture) else {
            return Ok(None);
        };
        let Some((got, bytes)) = get(&s, &repo.path, "manifests", &d)
            .await
            .map_err(|f| fail("reading the platform manifest", f))?
        else {
            return Ok(None);
        };
        by_digest("reading the platform manifest", &got, &d)?;
        doc = json(&bytes)?;
        (digest, manifest) = (got, bytes);
    }
    let config_digest = doc
        .pointer("/config/digest")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            fail(
                "reading the manifest",
                Failure::other("it names no config (not an image manifest)"),
            )
        })?
        .to_owned();
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
    Ok(Some(ImageDocuments {
        repository: r.name,
        manifest_digest: digest,
        manifest,
        config,
    }))
}

/// The digest of `os`/`architecture`'s manifest in an index.
fn platform_manifest(index: &Value, os: &str, architecture: &str) -> Option<String> {
    index
        .get("manifests")?
        .as_array()?
        .iter()
        .find(|m| {
            m.pointer("/platform/os").and_then(Value::as_str) == Some(os)
                && m.pointer("/platform/architecture").and_then(Value::as_str) == Some(architecture)
        })
        .and_then(|m| m.get("digest")?.as_str().map(str::to_owned))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_platforms() {
        let index: Value = serde_json::json!({"manifests": [
            {"digest": "sha256:a", "platform": {"os": "linux", "architecture": "arm64"}},
            {"digest": "sha256:b", "platform": {"os": "linux", "architecture": "amd64"}},
        ]});
        assert_eq!(
            platform_manifest(&index, "linux", "amd64").as_deref(),
            Some("sha256:b")
        );
        assert_eq!(platform_manifest(&index, "linux", "s390x"), None);
    }
}
