//! The push client against the in-process fake registry of `hab_oci_testkit::registry`:
//! HEAD-before-upload, retries (500s, cut connections, `Retry-After`), chunked uploads after
//! a 413, token renewal, Basic auth, cross-repository mounts and manifests written last.
//! Every assertion is about what the registry received (its request log and byte counters),
//! never about how fast it went.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hab_oci_testkit::registry::{
    Auth, FakeRegistry, Faults, LoggedRequest, RegistryConfig, TokenAuth, UploadFailure,
    sha256_digest,
};
use oci_registry::{
    Blob, BlobOutcome, Credentials, NoProgress, PushProgress, PushRequest, PushStats, Pusher,
    RegistryError, RegistryOptions, push,
};

/// An image on disk: its blobs (layers, then the config) and its manifest.
struct Image {
    _dir: tempfile::TempDir,
    blobs: Vec<Blob>,
    manifest: Vec<u8>,
    digest: String,
}

impl Image {
    /// Layers of the given sizes, with content depending on `seed`.
    fn new(layer_sizes: &[usize], seed: u64) -> Image {
        Image::with_layers(
            &layer_sizes
                .iter()
                .enumerate()
                .map(|(i, &n)| {
                    let mut rng = hab_oci_testkit::Rng::new(seed * 1000 + i as u64);
                    let mut data = Vec::new();
                    hab_oci_testkit::realistic_bytes(&mut rng, n, &mut data);
                    data
                })
                .collect::<Vec<_>>(),
        )
    }

    fn with_layers(layers: &[Vec<u8>]) -> Image {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |data: &[u8]| {
            let digest = sha256_digest(data);
            let path = dir.path().join(digest.replace(':', "-"));
            std::fs::write(&path, data).expect("write blob");
            Blob {
                digest,
                size: data.len() as u64,
                path,
            }
        };
        let mut blobs: Vec<Blob> = layers.iter().map(|l| write(l)).collect();
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": blobs.iter().map(|b| &b.digest).collect::<Vec<_>>()},
        })
        .to_string();
        let config = write(config.as_bytes());
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.digest, "size": config.size},
            "layers": blobs.iter().map(|b| serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": b.digest, "size": b.size,
            })).collect::<Vec<_>>(),
        })
        .to_string()
        .into_bytes();
        blobs.push(config);
        Image {
            _dir: dir,
            digest: sha256_digest(&manifest),
            blobs,
            manifest,
        }
    }

    fn request(&self, reg: &FakeRegistry, repo: &str, tags: &[&str]) -> PushRequest {
        PushRequest {
            repository: reg.repository(repo),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            blobs: self.blobs.clone(),
            manifest: self.manifest.clone(),
            manifest_digest: self.digest.clone(),
            manifest_media_type: MANIFEST_TYPE.into(),
            children: Vec::new(),
            mount_from: Vec::new(),
        }
    }

    fn bytes(&self) -> u64 {
        self.blobs.iter().map(|b| b.size).sum()
    }
}

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// One blob at a time, so that the log is in the order the client worked.
fn sequential() -> RegistryOptions {
    RegistryOptions {
        jobs: 1,
        ..RegistryOptions::default()
    }
}

fn run(req: &PushRequest, creds: &Credentials, opts: &RegistryOptions) -> PushStats {
    push(req, creds, opts, Arc::new(NoProgress)).expect("push")
}

fn fail(req: &PushRequest, creds: &Credentials, opts: &RegistryOptions) -> RegistryError {
    match push(req, creds, opts, Arc::new(NoProgress)) {
        Ok(s) => panic!("the push succeeded: {s:?}"),
        Err(e) => e,
    }
}

fn registry(config: RegistryConfig) -> FakeRegistry {
    FakeRegistry::start_with(config).expect("fake registry")
}

fn file(b: &Blob) -> Vec<u8> {
    std::fs::read(&b.path).expect("blob file")
}

fn line(r: &LoggedRequest) -> String {
    format!("{} {} -> {}", r.method, r.path, r.status)
}

/// The blob uploads the registry committed, and the manifest PUTs: none of the latter may
/// arrive before the last of the former.
fn assert_manifests_last(log: &[LoggedRequest]) {
    let last_blob = log
        .iter()
        .filter(|r| r.is_upload() || r.path.contains("/blobs/uploads/"))
        .map(|r| r.arrived)
        .max();
    let first_manifest = log
        .iter()
        .filter(|r| r.is_manifest_put())
        .map(|r| r.arrived)
        .min();
    if let (Some(b), Some(m)) = (last_blob, first_manifest) {
        assert!(
            m > b,
            "a manifest was written before every blob was in: {:#?}",
            log.iter().map(line).collect::<Vec<_>>()
        );
    }
}

#[test]
fn a_push_uploads_every_blob_and_a_second_push_only_asks() {
    let reg = registry(RegistryConfig::default());
    let img = Image::new(&[40_000, 70_000], 1);
    let req = img.request(&reg, "team/app", &["latest", "1.0"]);
    let s = run(&req, &Credentials::Anonymous, &RegistryOptions::default());
    assert_eq!(
        (s.blobs_uploaded, s.blobs_skipped, s.tags_written),
        (3, 0, 2),
        "{s:?}"
    );
    assert_eq!(s.bytes_uploaded, img.bytes());
    assert_eq!(reg.upload_bytes(), img.bytes(), "every byte sent once");
    for b in &img.blobs {
        assert_eq!(reg.blob(&b.digest), Some(file(b)), "{}", b.digest);
    }
    assert_eq!(reg.tags("team/app"), ["1.0", "latest"]);
    assert_eq!(
        reg.tag("team/app", "latest").as_deref(),
        Some(img.digest.as_str())
    );
    assert_eq!(reg.manifest("team/app", "1.0"), Some(img.manifest.clone()));
    assert_eq!(
        s.references,
        [
            format!("{}:latest@{}", req.repository, img.digest),
            format!("{}:1.0@{}", req.repository, img.digest)
        ]
    );
    assert_eq!(
        s.requests,
        reg.log().len() as u64,
        "the client counts what it sends"
    );
    assert_manifests_last(&reg.log());

    // The same image again: the handshake and one manifest HEAD per tag, nothing else.
    reg.clear_log();
    let again = run(&req, &Credentials::Anonymous, &RegistryOptions::default());
    assert_eq!(
        (
            again.tags_unchanged,
            again.tags_written,
            again.blobs_uploaded,
            again.bytes_uploaded
        ),
        (2, 0, 0, 0),
        "{again:?}"
    );
    let log: Vec<String> = reg.log().iter().map(line).collect();
    assert_eq!(
        log,
        [
            "GET /v2/ -> 200",
            "HEAD /v2/team/app/manifests/latest -> 200",
            "HEAD /v2/team/app/manifests/1.0 -> 200",
        ]
    );
    assert_eq!(reg.upload_bytes(), img.bytes());

    // A new tag for the same image: each blob is found with a HEAD, only the tag is written.
    reg.clear_log();
    let tagged = run(
        &img.request(&reg, "team/app", &["latest", "2.0"]),
        &Credentials::Anonymous,
        &RegistryOptions::default(),
    );
    assert_eq!(
        (
            tagged.blobs_skipped,
            tagged.blobs_uploaded,
            tagged.tags_unchanged,
            tagged.tags_written
        ),
        (3, 0, 1, 1),
        "{tagged:?}"
    );
    let log = reg.log();
    assert_eq!(reg.count("HEAD", "/blobs/"), 3);
    assert!(
        log.iter()
            .all(|r| matches!(r.method.as_str(), "GET" | "HEAD") || r.is_manifest_put()),
        "{:#?}",
        log.iter().map(line).collect::<Vec<_>>()
    );
    assert_eq!(reg.count("PUT", "/manifests/2.0"), 1);
    assert_eq!(reg.upload_bytes(), img.bytes());
}

#[test]
fn uploads_survive_500s_and_cut_connections_and_tags_come_last() {
    let reg = registry(RegistryConfig {
        faults: Faults {
            fail_uploads: 2,
            ..Faults::default()
        },
        ..RegistryConfig::default()
    });
    let img = Image::new(&[200_000, 30_000], 2);
    let req = img.request(&reg, "team/app", &["latest"]);
    let s = run(&req, &Credentials::Anonymous, &sequential());
    assert_eq!((s.blobs_uploaded, s.tags_written), (3, 1), "{s:?}");
    let log = reg.log();
    let uploads: Vec<u16> = log
        .iter()
        .filter(|r| r.is_upload())
        .map(|r| r.status)
        .collect();
    // A 500, then a connection cut mid-body (status 0), then the three blobs.
    assert_eq!(uploads, [500, 0, 201, 201, 201], "{uploads:?}");
    let cut = log.iter().find(|r| r.status == 0).expect("the cut request");
    assert!(
        cut.body_bytes > 0
            && cut.body_bytes
                < cut
                    .header("content-length")
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(0),
        "cut mid-body: {} bytes arrived",
        cut.body_bytes
    );
    // Each retry is a new upload session, from the blob's first byte.
    assert_eq!(reg.count("POST", "/blobs/uploads/"), 5);
    for b in &img.blobs {
        assert_eq!(reg.blob(&b.digest), Some(file(b)));
    }
    assert_manifests_last(&log);
    // Both sides count the failed attempts' bytes too; the client counts what it handed to
    // the connection, which is at least what arrived.
    assert!(reg.upload_bytes() > img.bytes());
    assert!(s.bytes_uploaded >= reg.upload_bytes());

    // Every upload fails: a clear error once the attempts are spent, and no tag.
    let reg = registry(RegistryConfig {
        faults: Faults {
            fail_uploads: usize::MAX,
            failure: UploadFailure::ServerError,
            ..Faults::default()
        },
        ..RegistryConfig::default()
    });
    let opts = RegistryOptions {
        attempts: 3,
        ..sequential()
    };
    let err = fail(
        &img.request(&reg, "team/app", &["latest"]),
        &Credentials::Anonymous,
        &opts,
    )
    .to_string();
    assert!(
        err.contains("uploading blob") && err.contains("500 Internal Server Error"),
        "{err}"
    );
    assert_eq!(
        reg.log().iter().filter(|r| r.is_upload()).count(),
        3,
        "three attempts"
    );
    assert_eq!(reg.count("PUT", "/manifests/"), 0);
    assert!(reg.tags("team/app").is_empty());
}

/// One upload answered `status` with `Retry-After: 1`: the next request comes no sooner.
fn throttled_once(status: u16) {
    let reg = registry(RegistryConfig {
        faults: Faults {
            throttle_uploads: 1,
            throttle_status: status,
            retry_after: Some("1".into()),
            ..Faults::default()
        },
        ..RegistryConfig::default()
    });
    let img = Image::new(&[10_000], 3);
    let s = run(
        &img.request(&reg, "team/app", &["latest"]),
        &Credentials::Anonymous,
        &sequential(),
    );
    assert_eq!(s.blobs_uploaded, 2, "{s:?}");
    let log = reg.log();
    let throttled = log
        .iter()
        .find(|r| r.status == status)
        .expect("a throttled request");
    let next = log
        .iter()
        .filter(|r| r.arrived > throttled.arrived)
        .map(|r| r.arrived - throttled.arrived)
        .min()
        .expect("requests after the throttled one");
    // Our own backoff would have tried again after 0.2 s.
    assert!(
        next >= Duration::from_secs(1),
        "the next request came {next:?} after a {status} with Retry-After: 1"
    );
    assert_eq!(log.iter().filter(|r| r.status == status).count(), 1);
}

#[test]
fn retry_after_of_a_429_is_honoured() {
    throttled_once(429);
}

#[test]
fn retry_after_of_a_503_is_honoured() {
    throttled_once(503);
}

#[test]
fn an_overlong_retry_after_fails_at_once_with_a_clear_error() {
    let reg = registry(RegistryConfig {
        faults: Faults {
            throttle_uploads: usize::MAX,
            retry_after: Some("3600".into()),
            ..Faults::default()
        },
        ..RegistryConfig::default()
    });
    let img = Image::new(&[10_000], 4);
    let err = fail(
        &img.request(&reg, "team/app", &["latest"]),
        &Credentials::Anonymous,
        &sequential(),
    )
    .to_string();
    assert!(
        err.contains("429 Too Many Requests") && err.contains("retry after 3600 s"),
        "{err}"
    );
    assert_eq!(
        reg.log().iter().filter(|r| r.is_upload()).count(),
        1,
        "not retried"
    );
    assert!(reg.tags("team/app").is_empty());
}

/// Records blob restarts (a refused whole-body upload going chunked is one).
#[derive(Default)]
struct Restarts(Mutex<Vec<String>>);

impl PushProgress for Restarts {
    fn blob_restarted(&self, digest: &str) {
        self.0.lock().expect("lock").push(digest.to_owned());
    }
}

/// The PATCHes of chunked uploads: `(Content-Range, body bytes)`.
fn patches(log: &[LoggedRequest]) -> Vec<(String, u64)> {
    log.iter()
        .filter(|r| r.method == "PATCH")
        .map(|r| {
            (
                r.header("content-range").unwrap_or_default().to_owned(),
                r.body_bytes,
            )
        })
        .collect()
}

/// A body limit of 64 KiB in front of the registry, the 413 sent after the body was read
/// or (`early`) as soon as the head announced it.
fn refused_then_chunked(early: bool) {
    let reg = registry(RegistryConfig {
        faults: Faults {
            max_body: Some(64 * 1024),
            reject_before_body: early,
            ..Faults::default()
        },
        ..RegistryConfig::default()
    });
    let img = Image::new(&[200_000, 10_000], 5);
    let big = img.blobs[0].clone();
    let progress = Arc::new(Restarts::default());
    let opts = RegistryOptions {
        chunk_size: 48 * 1024,
        ..sequential()
    };
    let s = push(
        &img.request(&reg, "team/app", &["latest"]),
        &Credentials::Anonymous,
        &opts,
        progress.clone(),
    )
    .expect("push");
    assert_eq!((s.blobs_uploaded, s.tags_written), (3, 1), "{s:?}");
    let log = reg.log();
    assert_eq!(
        log.iter().filter(|r| r.status == 413).count(),
        1,
        "one whole-body PUT refused"
    );
    assert_eq!(
        patches(&log),
        [
            ("0-49151".to_owned(), 49152),
            ("49152-98303".to_owned(), 49152),
            ("98304-147455".to_owned(), 49152),
            ("147456-196607".to_owned(), 49152),
            ("196608-199999".to_owned(), 3392),
        ]
    );
    // The registry assembled the chunks and verified the digest when the upload was committed.
    assert_eq!(reg.blob(&big.digest), Some(file(&big)));
    assert_eq!(
        *progress.0.lock().expect("lock"),
        std::slice::from_ref(&big.digest)
    );
    assert_manifests_last(&log);
}

#[test]
fn a_registry_refusing_large_bodies_gets_the_blob_in_chunks() {
    refused_then_chunked(false);
}

#[test]
fn a_proxy_refusing_a_large_body_before_reading_it_gets_the_blob_in_chunks() {
    refused_then_chunked(true);
}

#[test]
fn chunks_grow_to_the_registrys_minimum_length() {
    let reg = registry(RegistryConfig {
        faults: Faults {
            max_body: Some(100_000),
            ..Faults::default()
        },
        chunk_min_length: Some(80_000),
        ..RegistryConfig::default()
    });
    let img = Image::new(&[200_000], 6);
    let opts = RegistryOptions {
        chunk_size: 16 * 1024,
        ..sequential()
    };
    let s = run(
        &img.request(&reg, "team/app", &["latest"]),
        &Credentials::Anonymous,
        &opts,
    );
    assert_eq!(s.blobs_uploaded, 2, "{s:?}");
    assert_eq!(
        patches(&reg.log()),
        [
            ("0-79999".to_owned(), 80_000),
            ("80000-159999".to_owned(), 80_000),
            ("160000-199999".to_owned(), 40_000),
        ]
    );
    assert_eq!(reg.blob(&img.blobs[0].digest), Some(file(&img.blobs[0])));
}

fn bearer(token: TokenAuth) -> FakeRegistry {
    registry(RegistryConfig {
        auth: Auth::Bearer(TokenAuth {
            credentials: Some(("user".into(), "secret-pw".into())),
            ..token
        }),
        ..RegistryConfig::default()
    })
}

fn user() -> Credentials {
    Credentials::Basic {
        username: "user".into(),
        password: "secret-pw".into(),
    }
}

/// Requests refused although they carried a token.
fn refused_tokens(log: &[LoggedRequest]) -> Vec<&LoggedRequest> {
    log.iter()
        .filter(|r| {
            r.status == 401
                && r.header("authorization")
                    .is_some_and(|a| a.starts_with("Bearer "))
        })
        .collect()
}

#[test]
fn a_token_the_registry_stops_accepting_is_renewed() {
    // A token is good for five requests: it lapses in the middle of the push.
    let reg = bearer(TokenAuth {
        max_uses: Some(5),
        ..TokenAuth::default()
    });
    let img = Image::new(&[10_000, 20_000], 7);
    let s = run(
        &img.request(&reg, "team/app", &["latest"]),
        &user(),
        &sequential(),
    );
    assert_eq!((s.blobs_uploaded, s.tags_written), (3, 1), "{s:?}");
    assert!(reg.tokens_issued() >= 2, "{} tokens", reg.tokens_issued());
    assert_eq!(s.token_requests, reg.tokens_issued());
    let log = reg.log();
    let refused = refused_tokens(&log);
    assert!(!refused.is_empty());
    // Each refusal is followed by a new token and the same request again, accepted.
    for r in refused {
        let i = log
            .iter()
            .position(|x| std::ptr::eq(x, r))
            .expect("in the log");
        let after: Vec<String> = log[i + 1..].iter().take(2).map(line).collect();
        assert_eq!(after[0], "GET /token -> 200", "{after:?}");
        assert!(
            after[1].starts_with(&format!("{} {}", r.method, r.path)) && !after[1].ends_with("401"),
            "{after:?}"
        );
    }
    assert_eq!(reg.tag("team/app", "latest"), Some(img.digest.clone()));

    // A token refused from the start (a clock that disagrees): renewed once.
    let reg = bearer(TokenAuth::default());
    reg.set_faults(Faults {
        expired_tokens: 1,
        ..Faults::default()
    });
    let s = run(
        &img.request(&reg, "team/app", &["latest"]),
        &user(),
        &sequential(),
    );
    assert_eq!(s.tags_written, 1);
    assert_eq!(reg.tokens_issued(), 2);

    // Tokens that are never accepted: a clear error naming the token service.
    reg.set_faults(Faults {
        expired_tokens: usize::MAX,
        ..Faults::default()
    });
    let err = fail(
        &img.request(&reg, "team/other", &["latest"]),
        &user(),
        &sequential(),
    )
    .to_string();
    assert!(
        err.contains(&format!(
            "refused the token issued by {}",
            reg.token_realm()
        )) && err.contains("expired")
            && !err.contains("secret-pw"),
        "{err}"
    );
    assert!(reg.tags("team/other").is_empty());
}

#[test]
fn a_token_about_to_lapse_is_renewed_before_it_is_refused() {
    // Tokens live one second; the push waits a second for a Retry-After in between.
    let reg = bearer(TokenAuth {
        lifetime: Duration::from_secs(1),
        ..TokenAuth::default()
    });
    reg.set_faults(Faults {
        throttle_uploads: 1,
        retry_after: Some("1".into()),
        ..Faults::default()
    });
    let img = Image::new(&[10_000], 8);
    let s = run(
        &img.request(&reg, "team/app", &["latest"]),
        &user(),
        &sequential(),
    );
    assert_eq!(s.tags_written, 1, "{s:?}");
    assert!(reg.tokens_issued() >= 2, "the lapsed token was replaced");
    let log = reg.log();
    assert!(
        refused_tokens(&log).is_empty(),
        "renewed from expires_in, not after a refusal: {:#?}",
        log.iter().map(line).collect::<Vec<_>>()
    );
}

#[test]
fn a_token_lapsing_between_chunks_is_renewed_and_the_chunk_sent_again() {
    let reg = bearer(TokenAuth {
        max_uses: Some(4),
        ..TokenAuth::default()
    });
    reg.set_faults(Faults {
        max_body: Some(64 * 1024),
        ..Faults::default()
    });
    let img = Image::new(&[200_000], 19);
    let opts = RegistryOptions {
        chunk_size: 32 * 1024,
        ..sequential()
    };
    let s = run(&img.request(&reg, "team/app", &["latest"]), &user(), &opts);
    assert_eq!((s.blobs_uploaded, s.tags_written), (2, 1), "{s:?}");
    let log = reg.log();
    assert!(
        refused_tokens(&log).iter().any(|r| r.method == "PATCH"),
        "a chunk was refused: {:#?}",
        log.iter().map(line).collect::<Vec<_>>()
    );
    // Every range went in once, in order, whatever was refused on the way.
    let accepted: Vec<String> = log
        .iter()
        .filter(|r| r.method == "PATCH" && r.status == 202)
        .filter_map(|r| r.header("content-range").map(str::to_owned))
        .collect();
    let expected: Vec<String> = (0..200_000u64)
        .step_by(32 * 1024)
        .map(|o| format!("{o}-{}", (o + 32 * 1024).min(200_000) - 1))
        .collect();
    assert_eq!(accepted, expected);
    assert_eq!(reg.blob(&img.blobs[0].digest), Some(file(&img.blobs[0])));
}

#[test]
fn concurrent_refusals_renew_the_token_once() {
    // The registry keeps tokens two seconds but says five minutes (clocks that disagree);
    // every upload waits two seconds for a Retry-After, so all of them come back with a
    // lapsed token at about the same time.
    let reg = bearer(TokenAuth {
        lifetime: Duration::from_secs(2),
        expires_in: Some(300),
        ..TokenAuth::default()
    });
    reg.set_faults(Faults {
        throttle_uploads: 8,
        retry_after: Some("2".into()),
        ..Faults::default()
    });
    let img = Image::new(&[5_000, 6_000, 7_000, 8_000, 9_000, 10_000, 11_000], 17);
    let s = run(
        &img.request(&reg, "team/app", &["latest"]),
        &user(),
        &RegistryOptions::default(),
    );
    assert_eq!((s.blobs_uploaded, s.tags_written), (8, 1), "{s:?}");
    let log = reg.log();
    assert!(
        !refused_tokens(&log).is_empty(),
        "the first token lapsed: {:#?}",
        log.iter().map(line).collect::<Vec<_>>()
    );
    assert_eq!(reg.tokens_issued(), 2, "one renewal for all the refusals");
}

#[test]
fn anonymous_tokens_are_fetched_without_credentials() {
    let reg = registry(RegistryConfig {
        auth: Auth::Bearer(TokenAuth::default()),
        ..RegistryConfig::default()
    });
    let img = Image::new(&[10_000], 18);
    let req = img.request(&reg, "team/app", &["latest", "1.0"]);
    let s = run(&req, &Credentials::Anonymous, &sequential());
    assert_eq!((s.tags_written, s.token_requests), (2, 1), "{s:?}");
    let log = reg.log();
    let token = log
        .iter()
        .find(|r| r.path == "/token")
        .expect("a token request");
    assert_eq!(token.header("authorization"), None);
    assert_eq!(
        token.param("scope").as_deref(),
        Some("repository:team/app:pull,push")
    );
    assert_eq!(token.param("service").as_deref(), Some("fake-registry"));
    // A no-op push: the handshake (401, token, again) and one HEAD per tag.
    reg.clear_log();
    let again = run(&req, &Credentials::Anonymous, &sequential());
    assert_eq!(
        (again.tags_unchanged, again.requests),
        (2, 3 + 2),
        "{again:?}"
    );
    assert_eq!(reg.log().len(), 5);
}

#[test]
fn wrong_credentials_fail_before_any_upload() {
    let reg = registry(RegistryConfig {
        auth: Auth::Basic {
            username: "user".into(),
            password: "secret-pw".into(),
        },
        ..RegistryConfig::default()
    });
    let img = Image::new(&[10_000], 9);
    let repo = reg.repository("team/app");
    let wrong = Credentials::Basic {
        username: "user".into(),
        password: "not-the-pw".into(),
    };
    for creds in [wrong.clone(), Credentials::Anonymous] {
        let err = match Pusher::start(
            &repo,
            &[],
            &creds,
            &RegistryOptions::default(),
            Arc::new(NoProgress),
        ) {
            Ok(_) => panic!("connected with {creds:?}"),
            Err(e) => e,
        };
        assert!(matches!(err, RegistryError::Auth { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains(&reg.addr())
                && text.contains("refused the credentials")
                && !text.contains("not-the-pw"),
            "{text}"
        );
    }
    let err = fail(
        &img.request(&reg, "team/app", &["latest"]),
        &wrong,
        &sequential(),
    );
    assert!(matches!(err, RegistryError::Auth { .. }), "{err:?}");
    let paths: Vec<String> = reg.log().iter().map(line).collect();
    assert!(
        paths.iter().all(|l| l == "GET /v2/ -> 401"),
        "only the handshake: {paths:#?}"
    );
    assert_eq!(reg.upload_bytes(), 0);

    // The right password pushes.
    let right = Credentials::Basic {
        username: "user".into(),
        password: "secret-pw".into(),
    };
    let s = run(
        &img.request(&reg, "team/app", &["latest"]),
        &right,
        &sequential(),
    );
    assert_eq!(s.tags_written, 1);

    // Behind a token service, wrong credentials are refused by the token service.
    let reg = bearer(TokenAuth::default());
    let err = fail(
        &img.request(&reg, "team/app", &["latest"]),
        &wrong,
        &sequential(),
    );
    let text = err.to_string();
    assert!(
        matches!(err, RegistryError::Auth { .. })
            && text.contains(&reg.token_realm())
            && !text.contains("not-the-pw"),
        "{text}"
    );
    assert_eq!(reg.tokens_issued(), 0);
    assert_eq!(
        reg.log()
            .iter()
            .filter(|r| r.path.contains("/blobs/"))
            .count(),
        0
    );
}

#[test]
fn an_identity_token_is_exchanged_for_a_registry_token() {
    let reg = bearer(TokenAuth {
        refresh_token: Some("identity-123".into()),
        ..TokenAuth::default()
    });
    let img = Image::new(&[10_000], 10);
    let s = run(
        &img.request(&reg, "team/app", &["latest"]),
        &Credentials::Token("identity-123".into()),
        &sequential(),
    );
    assert_eq!(s.tags_written, 1);
    assert_eq!(reg.count("POST", "/token"), 1);
    let err = fail(
        &img.request(&reg, "team/app", &["latest"]),
        &Credentials::Token("identity-999".into()),
        &sequential(),
    );
    assert!(matches!(err, RegistryError::Auth { .. }), "{err:?}");
    assert!(!err.to_string().contains("identity-999"), "{err}");
}

/// Pushes an image to `team/base`, then to `team/app` mounting from `team/base`.
fn mount_case(reg: &FakeRegistry, creds: &Credentials) {
    let base = Image::new(&[30_000, 40_000], 11);
    run(
        &base.request(reg, "team/base", &["latest"]),
        creds,
        &sequential(),
    );
    let before = reg.upload_bytes();
    reg.clear_log();
    let mut req = base.request(reg, "team/app", &["latest"]);
    req.mount_from = vec![reg.repository("team/base")];
    let s = run(&req, creds, &sequential());
    assert_eq!(
        (s.blobs_mounted, s.blobs_uploaded, s.bytes_uploaded),
        (3, 0, 0),
        "{s:?}"
    );
    assert_eq!(reg.upload_bytes(), before, "nothing uploaded");
    assert_eq!(
        reg.log()
            .iter()
            .filter(|r| r.method == "POST" && r.param("mount").is_some() && r.status == 201)
            .count(),
        3
    );
    assert!(reg.log().iter().all(|r| !r.is_upload()));
    for b in &base.blobs {
        assert!(reg.has_blob("team/app", &b.digest));
    }
    assert_eq!(reg.tag("team/app", "latest"), Some(base.digest.clone()));
}

#[test]
fn blobs_of_another_repository_are_mounted_not_uploaded() {
    mount_case(
        &registry(RegistryConfig::default()),
        &Credentials::Anonymous,
    );
    // With tokens: the token must also grant pull on the source.
    mount_case(&bearer(TokenAuth::default()), &user());

    // Two sources, the first without the blobs: its session is closed, the second mounts
    // what it has, and a new layer is uploaded in the session the last mount opened.
    let reg = registry(RegistryConfig::default());
    let shared = {
        let mut rng = hab_oci_testkit::Rng::new(99);
        let mut v = Vec::new();
        hab_oci_testkit::realistic_bytes(&mut rng, 25_000, &mut v);
        v
    };
    reg.add_blob("team/base", &shared);
    let img = Image::with_layers(&[shared.clone(), b"a new layer".to_vec()]);
    let mut req = img.request(&reg, "team/app", &["latest"]);
    req.mount_from = vec![reg.repository("team/empty"), reg.repository("team/base")];
    let s = run(&req, &Credentials::Anonymous, &sequential());
    assert_eq!((s.blobs_mounted, s.blobs_uploaded), (1, 2), "{s:?}");
    assert_eq!(reg.upload_bytes(), img.bytes() - shared.len() as u64);
    let log = reg.log();
    let mounts: Vec<(String, u16)> = log
        .iter()
        .filter(|r| r.method == "POST")
        .map(|r| (r.param("from").unwrap_or_default(), r.status))
        .collect();
    assert_eq!(
        mounts,
        [
            ("team/empty".into(), 202),
            ("team/base".into(), 201),
            ("team/empty".into(), 202),
            ("team/base".into(), 202),
            ("team/empty".into(), 202),
            ("team/base".into(), 202),
        ]
    );
    assert_eq!(reg.count("DELETE", "/blobs/uploads/"), 3);
    assert_eq!(reg.count("POST", "/blobs/uploads/"), 6, "no extra session");
}

#[test]
fn a_refused_manifest_is_an_error_and_leaves_no_tag() {
    let reg = registry(RegistryConfig {
        faults: Faults {
            reject_manifests: true,
            ..Faults::default()
        },
        ..RegistryConfig::default()
    });
    let img = Image::new(&[10_000], 12);
    let err = fail(
        &img.request(&reg, "team/app", &["latest", "1.0"]),
        &Credentials::Anonymous,
        &sequential(),
    )
    .to_string();
    assert!(
        err.contains("writing tag latest") && err.contains("MANIFEST_INVALID"),
        "{err}"
    );
    assert!(reg.tags("team/app").is_empty());
    assert_eq!(
        reg.count("PUT", "/manifests/"),
        1,
        "the first refusal stops the push"
    );
}

#[test]
fn a_pusher_uploads_offered_blobs_before_the_manifest_is_known() {
    let reg = registry(RegistryConfig::default());
    let img = Image::new(&[30_000, 20_000, 10_000], 13);
    let pusher = Pusher::start(
        &reg.repository("team/app"),
        &[],
        &Credentials::Anonymous,
        &RegistryOptions::default(),
        Arc::new(NoProgress),
    )
    .expect("start");
    // The layers are ready before the config and the manifest.
    for b in &img.blobs[..3] {
        pusher.offer(b.clone());
    }
    let s = pusher
        .finish(&img.request(&reg, "team/app", &["latest"]))
        .expect("finish");
    assert_eq!(
        (s.blobs_early, s.blobs_uploaded, s.tags_written),
        (3, 4, 1),
        "{s:?}"
    );
    assert_eq!(reg.count("PUT", "/blobs/uploads/"), 4, "each blob once");
    assert_manifests_last(&reg.log());
    assert_eq!(reg.tag("team/app", "latest"), Some(img.digest.clone()));
}

#[test]
fn a_blob_whose_early_upload_failed_is_pushed_by_finish() {
    let reg = registry(RegistryConfig {
        faults: Faults {
            fail_uploads: 1,
            failure: UploadFailure::ServerError,
            ..Faults::default()
        },
        ..RegistryConfig::default()
    });
    let img = Image::new(&[30_000, 20_000], 16);
    let opts = RegistryOptions {
        attempts: 1,
        ..RegistryOptions::default()
    };
    let pusher = Pusher::start(
        &reg.repository("team/app"),
        &[],
        &Credentials::Anonymous,
        &opts,
        Arc::new(NoProgress),
    )
    .expect("start");
    for b in &img.blobs[..2] {
        pusher.offer(b.clone());
    }
    let s = pusher
        .finish(&img.request(&reg, "team/app", &["latest"]))
        .expect("finish");
    assert_eq!(
        (s.blobs_early, s.blobs_uploaded, s.tags_written),
        (1, 3, 1),
        "{s:?}"
    );
    // The two early uploads run side by side: their answers come in either order.
    let mut uploads: Vec<u16> = reg
        .log()
        .iter()
        .filter(|r| r.is_upload())
        .map(|r| r.status)
        .collect();
    uploads.sort_unstable();
    assert_eq!(uploads, [201, 201, 201, 500], "{uploads:?}");
    assert_manifests_last(&reg.log());
}

#[test]
fn a_registry_without_digest_headers_has_its_manifest_hashed() {
    let reg = registry(RegistryConfig {
        faults: Faults {
            omit_manifest_digest: true,
            ..Faults::default()
        },
        ..RegistryConfig::default()
    });
    let img = Image::new(&[10_000], 14);
    let req = img.request(&reg, "team/app", &["latest"]);
    run(&req, &Credentials::Anonymous, &sequential());
    reg.clear_log();
    let again = run(&req, &Credentials::Anonymous, &sequential());
    assert_eq!(again.tags_unchanged, 1, "{again:?}");
    let log: Vec<String> = reg.log().iter().map(line).collect();
    assert_eq!(
        log,
        [
            "GET /v2/ -> 200",
            "HEAD /v2/team/app/manifests/latest -> 200",
            "GET /v2/team/app/manifests/latest -> 200",
        ]
    );
}

#[test]
fn blob_outcomes_are_reported_per_blob() {
    #[derive(Default)]
    struct Outcomes(Mutex<Vec<BlobOutcome>>);
    impl PushProgress for Outcomes {
        fn blob_finished(&self, _digest: &str, outcome: BlobOutcome) {
            self.0.lock().expect("lock").push(outcome);
        }
    }
    let reg = registry(RegistryConfig::default());
    let img = Image::new(&[10_000, 20_000], 15);
    reg.add_blob("team/app", &file(&img.blobs[0]));
    let progress = Arc::new(Outcomes::default());
    push(
        &img.request(&reg, "team/app", &["latest"]),
        &Credentials::Anonymous,
        &sequential(),
        progress.clone(),
    )
    .expect("push");
    assert_eq!(
        *progress.0.lock().expect("lock"),
        [
            BlobOutcome::Skipped,
            BlobOutcome::Uploaded,
            BlobOutcome::Uploaded
        ]
    );
}
