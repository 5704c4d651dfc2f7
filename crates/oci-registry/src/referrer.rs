//! Attaching an artifact (an SBOM) to a manifest as an OCI 1.1 referrer: the empty config
//! and the artifact's blob, then an image manifest with `artifactType`, one layer and a
//! `subject`, put by digest. A registry with the referrers API answers `OCI-Subject` and
//! lists it itself; for one without (distribution 2.x), the referrers-tag fallback of the
//! distribution spec: the index under the tag `sha256-HEX` of the subject gets the
//! artifact's descriptor.

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE};
use serde_json::{Value, json};

use crate::push::{Ctx, blob_present, header};
use crate::session::Failure;
use crate::{AttachRequest, AttachStats, RegistryError};

pub(crate) const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
pub(crate) const EMPTY_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
const EMPTY: &[u8] = b"{}";
const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";

pub(crate) async fn attach(ctx: &Ctx, req: &AttachRequest) -> Result<AttachStats, RegistryError> {
    let mut stats = AttachStats::default();
    let blob_digest = oci_image::sha256_digest(&req.blob);
    for (digest, bytes) in [(EMPTY_DIGEST, EMPTY), (blob_digest.as_str(), &req.blob[..])] {
        if put_blob(ctx, digest, bytes)
            .await
            .map_err(|f| ctx.fail(&format!("uploading blob {digest}"), f))?
        {
            stats.blobs_uploaded += 1;
        }
    }
    let mut manifest = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "artifactType": req.artifact_type,
        "config": {"mediaType": EMPTY_MEDIA_TYPE, "digest": EMPTY_DIGEST, "size": EMPTY.len()},
        "layers": [{
            "mediaType": req.artifact_type,
            "digest": blob_digest,
            "size": req.blob.len(),
        }],
        "subject": {
            "mediaType": req.subject.media_type,
            "digest": req.subject.digest,
            "size": req.subject.size,
        },
    });
    if !req.annotations.is_empty() {
        manifest["annotations"] = json!(req.annotations);
    }
    // A `Value`'s keys are sorted: the same artifact gives the same manifest digest.
    let bytes = serde_json::to_vec(&manifest).map_err(|e| RegistryError::Request {
        what: "the referrer manifest".into(),
        registry: String::new(),
        detail: e.to_string(),
    })?;
    let digest = oci_image::sha256_digest(&bytes);
    stats.manifest_digest.clone_from(&digest);
    let s = ctx.session();
    let url = s.url(&format!("/v2/{}/manifests/{digest}", ctx.repo_path()));
    let resp = s
        .retrying(|| async {
            s.expect(&[StatusCode::CREATED, StatusCode::OK], &|c| {
                Ok(c.put(url.clone())
                    .header(CONTENT_TYPE, MEDIA_MANIFEST)
                    .body(bytes.clone()))
            })
            .await
        })
        .await
        .map_err(|f| ctx.fail("writing the referrer manifest", f))?;
    stats.referrers_api = header(&resp, "oci-subject").is_some();
    if !stats.referrers_api {
        let tag = fallback_tag(&req.subject.digest);
        let mut descriptor = json!({
            "mediaType": MEDIA_MANIFEST,
            "digest": digest,
            "size": bytes.len(),
            "artifactType": req.artifact_type,
        });
        if !req.annotations.is_empty() {
            descriptor["annotations"] = json!(req.annotations);
        }
        add_to_fallback(ctx, &tag, descriptor)
            .await
            .map_err(|f| ctx.fail(&format!("updating the referrers tag {tag}"), f))?;
        stats.fallback_tag = Some(tag);
    }
    stats.requests = s.requests();
    Ok(stats)
}

/// The referrers tag of a subject: `sha256-HEX` for `sha256:HEX` (the distribution
/// spec's fallback schema).
pub(crate) fn fallback_tag(subject_digest: &str) -> String {
    subject_digest.replacen(':', "-", 1)
}

/// A small blob from memory: `HEAD`, else one upload session and a monolithic `PUT`.
/// `true` when it was uploaded.
async fn put_blob(ctx: &Ctx, digest: &str, bytes: &[u8]) -> Result<bool, Failure> {
    let s = ctx.session();
    if blob_present(s, ctx.repo_path(), digest).await? {
        return Ok(false);
    }
    let uploads = s.url(&format!("/v2/{}/blobs/uploads/", ctx.repo_path()));
    // Each attempt opens its own upload session: a fault half-way leaves nothing behind.
    s.retrying(|| async {
        let resp = s
            .expect(&[StatusCode::ACCEPTED], &|c| {
                Ok(c.post(uploads.clone()).header(CONTENT_LENGTH, 0))
            })
            .await?;
        let mut put = s.location(&resp)?;
        put.query_pairs_mut().append_pair("digest", digest);
        let resp = s
            .expect(&[StatusCode::CREATED], &|c| {
                Ok(c.put(put.clone())
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .body(bytes.to_vec()))
            })
            .await?;
        match header(&resp, "docker-content-digest") {
            Some(d) if d != digest => Err(Failure::other(format!(
                "the registry stored the blob as {d}, not {digest}"
            ))),
            _ => Ok(true),
        }
    })
    .await
}

/// Adds `descriptor` to the index under `tag` (made when missing) unless it lists that
/// digest already. Read-modify-write: two pushes attaching to the same subject at the same
/// moment can lose one entry, a limit of the fallback itself (the referrers API has none).
async fn add_to_fallback(ctx: &Ctx, tag: &str, descriptor: Value) -> Result<(), Failure> {
    let s = ctx.session();
    let url = s.url(&format!("/v2/{}/manifests/{tag}", ctx.repo_path()));
    let resp = s
        .retrying(|| async {
            s.expect(&[StatusCode::OK, StatusCode::NOT_FOUND], &|c| {
                Ok(c.get(url.clone()).header(ACCEPT, MEDIA_INDEX))
            })
            .await
        })
        .await?;
    let mut index = if resp.status() == StatusCode::NOT_FOUND {
        json!({"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": []})
    } else {
        let body = resp.bytes().await.map_err(|e| Failure {
            transient: true,
            ..Failure::other(crate::session::error_text(&e))
        })?;
        let index: Value = serde_json::from_slice(&body)
            .map_err(|e| Failure::other(format!("the tag holds no JSON: {e}")))?;
        // Another kind of manifest under this name is not ours to replace.
        if index["mediaType"] != MEDIA_INDEX || !index["manifests"].is_array() {
            return Err(Failure::other(format!(
                "the tag holds a {} document, not a referrers index: left alone",
                index["mediaType"].as_str().unwrap_or("untyped")
            )));
        }
        index
    };
    let manifests = index["manifests"]
        .as_array_mut()
        .ok_or_else(|| Failure::other("the referrers index has no manifests list"))?;
    if manifests
        .iter()
        .any(|m| m["digest"] == descriptor["digest"])
    {
        return Ok(());
    }
    manifests.push(descriptor);
    let bytes = serde_json::to_vec(&index).map_err(|e| Failure::other(e.to_string()))?;
    s.retrying(|| async {
        s.expect(&[StatusCode::CREATED, StatusCode::OK], &|c| {
            Ok(c.put(url.clone())
                .header(CONTENT_TYPE, MEDIA_INDEX)
                .body(bytes.clone()))
        })
        .await
    })
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_is_what_its_digest_says() {
        assert_eq!(oci_image::sha256_digest(EMPTY), EMPTY_DIGEST);
        assert_eq!(
            fallback_tag("sha256:abc"),
            "sha256-abc",
            "the distribution spec's referrers tag schema"
        );
    }
}
