//! An in-process fake OCI registry for tests: the distribution API subset a pushing client
//! uses, Basic or bearer-token authentication with its own token endpoint, injectable faults,
//! and a log of every request, so that push logic is tested without a live registry.
//!
//! It behaves like `distribution` (docker-registry) where a client can tell: JSON error
//! bodies, `Location`/`Range`/`Docker-Content-Digest` headers, digests verified on commit,
//! chunks that must arrive in order, manifests refused while a blob they name is missing.
//! The faults are those a proxy in front of a registry produces (500s, connections cut
//! mid-body, 429/503 with `Retry-After`, 413 above a body limit), applied before the
//! registry proper sees the request, as a proxy would.
//!
//! Plain HTTP/1.1 on std threads (one per connection, keep-alive), so that any client can
//! speak to it and a test needs no runtime of its own.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use sha2::Digest as _;

use crate::http::{Head, Server, percent_decode, query_pairs, read_body, read_head, reason};

/// How clients must authenticate.
#[derive(Debug, Clone, Default)]
pub enum Auth {
    /// Anyone may pull and push.
    #[default]
    None,
    /// Every request needs `Authorization: Basic` with these credentials (htpasswd style).
    Basic { username: String, password: String },
    /// The bearer-token flow of the distribution spec, tokens from the fake's `/token`.
    Bearer(TokenAuth),
}

/// The token service of [`Auth::Bearer`] and the lifetime of its tokens.
#[derive(Debug, Clone)]
pub struct TokenAuth {
    /// Basic credentials the token endpoint demands; `None` issues tokens to anyone.
    pub credentials: Option<(String, String)>,
    /// An identity token accepted as `grant_type=refresh_token` (docker's `identitytoken`).
    pub refresh_token: Option<String>,
    /// How long the registry accepts a token.
    pub lifetime: Duration,
    /// How many requests the registry accepts a token for; `None`: no limit. A small number
    /// makes a token lapse in the middle of a push without waiting for the clock.
    pub max_uses: Option<u64>,
    /// The `expires_in` of the token answer; `None`: the lifetime in whole seconds. Telling
    /// a client more than the real lifetime is how a registry whose clock disagrees looks.
    pub expires_in: Option<u64>,
    /// The `service` of the challenge.
    pub service: String,
}

impl Default for TokenAuth {
    fn default() -> Self {
        TokenAuth {
            credentials: None,
            refresh_token: None,
            lifetime: Duration::from_secs(300),
            max_uses: None,
            expires_in: None,
            service: "fake-registry".into(),
        }
    }
}

/// What a failed upload request looks like to the client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UploadFailure {
    /// `500`, then a connection cut mid-body, then `500`, … (what `FaultProxy` did).
    #[default]
    Alternate,
    /// `500 Internal Server Error` after the body was read.
    ServerError,
    /// The connection closed after part of the body, without an answer.
    Disconnect,
}

/// Faults injected in front of the registry. Counts are of requests still to be hit: they
/// go down as faults are injected (`usize::MAX` is "every one"), so [`FakeRegistry::faults`]
/// shows what is left.
#[derive(Debug, Clone)]
pub struct Faults {
    /// The next this many upload requests (`PUT`/`PATCH` under `/blobs/uploads/`) fail as
    /// `failure` says.
    pub fail_uploads: usize,
    pub failure: UploadFailure,
    /// Then the next this many upload requests are answered `throttle_status` (429 or 503)
    /// with `retry_after` as `Retry-After` (none when `None`).
    pub throttle_uploads: usize,
    pub throttle_status: u16,
    pub retry_after: Option<String>,
    /// Any request with a larger body is answered `413`, as a proxy with a body limit does.
    pub max_body: Option<u64>,
    /// The `413` goes out as soon as the head announces a body above `max_body`, before the
    /// body is read, and the connection closes once the body is drained (nginx does this);
    /// otherwise the body is read first and the connection stays open.
    pub reject_before_body: bool,
    /// Every manifest `PUT` is refused (`400 MANIFEST_INVALID`), as by a registry that does
    /// not accept the media type.
    pub reject_manifests: bool,
    /// The next this many tokens issued are refused by the registry (expired on arrival, as
    /// after a long upload or with clocks that disagree).
    pub expired_tokens: usize,
    /// Manifest answers carry no `Docker-Content-Digest` (the spec does not require it).
    pub omit_manifest_digest: bool,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            fail_uploads: 0,
            failure: UploadFailure::Alternate,
            throttle_uploads: 0,
            throttle_status: 429,
            retry_after: None,
            max_body: None,
            reject_before_body: false,
            reject_manifests: false,
            expired_tokens: 0,
            omit_manifest_digest: false,
        }
    }
}

/// How to start a [`FakeRegistry`].
#[derive(Debug, Clone, Default)]
pub struct RegistryConfig {
    pub auth: Auth,
    pub faults: Faults,
    /// `OCI-Chunk-Min-Length` announced when an upload session opens; a chunk shorter than
    /// this may only be the last one (the next `PATCH` after it is answered 416).
    pub chunk_min_length: Option<u64>,
}

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct LoggedRequest {
    pub method: String,
    /// Percent-encoded, as sent.
    pub path: String,
    /// Without the `?`; empty when there was none.
    pub query: String,
    /// The answer's status; 0 when the connection was cut instead.
    pub status: u16,
    /// When the request head had arrived.
    pub arrived: Instant,
    /// Body bytes received (for a cut connection, those read before the cut).
    pub body_bytes: u64,
    pub headers: Vec<(String, String)>,
}

impl LoggedRequest {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::http::header(&self.headers, name)
    }

    /// A query parameter, decoded.
    pub fn param(&self, name: &str) -> Option<String> {
        crate::http::param(&self.query, name)
    }

    /// A request carrying blob bytes into an upload session (`PUT`/`PATCH`).
    pub fn is_upload(&self) -> bool {
        is_upload(&self.method, &self.path)
    }

    pub fn is_manifest_put(&self) -> bool {
        self.method == "PUT" && self.path.contains("/manifests/")
    }
}

fn is_upload(method: &str, path: &str) -> bool {
    (method == "PUT" || method == "PATCH") && path.contains("/blobs/uploads/")
}

/// `sha256:HEX` of `data`, the form registries name blobs and manifests by.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// A fake registry on `127.0.0.1:<free port>`, serving until dropped.
pub struct FakeRegistry {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// Stops accepting when dropped.
    _server: Server,
}

impl FakeRegistry {
    /// An anonymous registry without faults.
    pub fn start() -> io::Result<FakeRegistry> {
        FakeRegistry::start_with(RegistryConfig::default())
    }

    pub fn start_with(config: RegistryConfig) -> io::Result<FakeRegistry> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            addr,
            auth: config.auth,
            chunk_min_length: config.chunk_min_length,
            state: Mutex::new(State {
                faults: config.faults,
                ..State::default()
            }),
            log: Mutex::new(Vec::new()),
            upload_bytes: AtomicU64::new(0),
            tokens_issued: AtomicU64::new(0),
        });
        let s = shared.clone();
        let server = Server::spawn(listener, "fake-registry", move |conn| {
            let _ = s.serve(conn);
        })?;
        Ok(FakeRegistry {
            addr,
            shared,
            _server: server,
        })
    }

    /// `127.0.0.1:PORT`, the registry part of a repository name.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// `127.0.0.1:PORT/path`.
    pub fn repository(&self, path: &str) -> String {
        format!("{}/{path}", self.addr)
    }

    /// The token realm named in bearer challenges.
    pub fn token_realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// Replaces the faults (and restarts the [`UploadFailure::Alternate`] sequence).
    pub fn set_faults(&self, faults: Faults) {
        let mut st = self.shared.state();
        st.faults = faults;
        st.failures = 0;
    }

    /// The faults still to be injected.
    pub fn faults(&self) -> Faults {
        self.shared.state().faults.clone()
    }

    /// Every request so far, in the order they were answered.
    pub fn log(&self) -> Vec<LoggedRequest> {
        self.shared
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn clear_log(&self) {
        self.shared
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Requests with this method whose path contains `path_part`.
    pub fn count(&self, method: &str, path_part: &str) -> usize {
        self.log()
            .iter()
            .filter(|r| r.method == method && r.path.contains(path_part))
            .count()
    }

    /// Body bytes received by upload requests (`POST`/`PUT`/`PATCH` under
    /// `/blobs/uploads/`), refused and cut-off ones included.
    pub fn upload_bytes(&self) -> u64 {
        self.shared.upload_bytes.load(Ordering::SeqCst)
    }

    /// Tokens the token endpoint handed out.
    pub fn tokens_issued(&self) -> u64 {
        self.shared.tokens_issued.load(Ordering::SeqCst)
    }

    /// Requests to the token endpoint, refused ones included.
    pub fn token_requests(&self) -> usize {
        self.log().iter().filter(|r| r.path == "/token").count()
    }

    /// The tags of `repo`, sorted.
    pub fn tags(&self, repo: &str) -> Vec<String> {
        self.shared
            .state()
            .repos
            .get(repo)
            .map(|r| r.tags.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The digest `repo:tag` points at.
    pub fn tag(&self, repo: &str, tag: &str) -> Option<String> {
        self.shared
            .state()
            .repos
            .get(repo)
            .and_then(|r| r.tags.get(tag).cloned())
    }

    /// A manifest of `repo` by tag or digest.
    pub fn manifest(&self, repo: &str, reference: &str) -> Option<Vec<u8>> {
        let st = self.shared.state();
        let r = st.repos.get(repo)?;
        let digest = r.tags.get(reference).map_or(reference, String::as_str);
        r.manifests.get(digest).map(|m| m.body.clone())
    }

    /// Is the blob in `repo`?
    pub fn has_blob(&self, repo: &str, digest: &str) -> bool {
        self.shared
            .state()
            .repos
            .get(repo)
            .is_some_and(|r| r.blobs.contains(digest))
    }

    /// A blob's content, whichever repository has it.
    pub fn blob(&self, digest: &str) -> Option<Vec<u8>> {
        self.shared.state().blobs.get(digest).map(|b| b.to_vec())
    }

    /// Stores a blob in `repo` without a request (for a registry that already has some
    /// content); returns its digest.
    pub fn add_blob(&self, repo: &str, data: &[u8]) -> String {
        let digest = sha256_digest(data);
        let mut st = self.shared.state();
        st.blobs.insert(digest.clone(), Arc::from(data));
        st.repos
            .entry(repo.to_owned())
            .or_default()
            .blobs
            .insert(digest.clone());
        digest
    }

    /// Stores a manifest in `repo` under `tag` without a request and without checking its
    /// blobs (an image someone else pushed, or a damaged one); returns its digest.
    pub fn put_manifest(&self, repo: &str, tag: &str, media_type: &str, body: &[u8]) -> String {
        let digest = sha256_digest(body);
        let mut st = self.shared.state();
        let r = st.repos.entry(repo.to_owned()).or_default();
        r.manifests.insert(
            digest.clone(),
            StoredManifest {
                media_type: media_type.to_owned(),
                body: body.to_vec(),
            },
        );
        r.tags.insert(tag.to_owned(), digest.clone());
        digest
    }

    /// Stores `data` in `repo` under `digest`, whatever it hashes to: a registry (or a
    /// proxy's cache) that serves damaged bytes.
    pub fn put_damaged_blob(&self, repo: &str, digest: &str, data: &[u8]) {
        let mut st = self.shared.state();
        st.blobs.insert(digest.to_owned(), Arc::from(data));
        st.repos
            .entry(repo.to_owned())
            .or_default()
            .blobs
            .insert(digest.to_owned());
    }

    /// Forgets a blob everywhere, as a garbage collection that removed it would.
    pub fn remove_blob(&self, digest: &str) {
        let mut st = self.shared.state();
        st.blobs.remove(digest);
        for r in st.repos.values_mut() {
            r.blobs.remove(digest);
        }
    }
}

// ---------------------------------------------------------------------------------------
// State.

#[derive(Default)]
struct State {
    faults: Faults,
    /// Upload failures injected so far (which one of the alternation comes next).
    failures: usize,
    /// Content by digest; repositories link to it, as distribution's storage does.
    blobs: HashMap<String, Arc<[u8]>>,
    repos: HashMap<String, Repo>,
    uploads: HashMap<String, Upload>,
    tokens: HashMap<String, Token>,
    next_id: u64,
}

impl State {
    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

#[derive(Default)]
struct Repo {
    blobs: HashSet<String>,
    manifests: HashMap<String, StoredManifest>,
    tags: BTreeMap<String, String>,
}

struct StoredManifest {
    media_type: String,
    body: Vec<u8>,
}

struct Upload {
    repo: String,
    data: Vec<u8>,
    /// The last chunk was below the minimum chunk length: only the final PUT may follow.
    short_chunk: bool,
}

struct Token {
    issued: Instant,
    lifetime: Duration,
    uses: u64,
    refused: bool,
    /// `(repository, actions)` granted.
    access: Vec<(String, Vec<String>)>,
}

struct Shared {
    addr: SocketAddr,
    auth: Auth,
    chunk_min_length: Option<u64>,
    state: Mutex<State>,
    log: Mutex<Vec<LoggedRequest>>,
    upload_bytes: AtomicU64,
    tokens_issued: AtomicU64,
}

// ---------------------------------------------------------------------------------------
// HTTP.

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn new(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    fn header(mut self, name: &str, value: impl Into<String>) -> Reply {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    fn json(mut self, value: &serde_json::Value) -> Reply {
        self.body = value.to_string().into_bytes();
        self.header("Content-Type", "application/json")
    }

    /// `{"errors":[…]}` as distribution writes it.
    fn error(status: u16, code: &str, message: &str, detail: serde_json::Value) -> Reply {
        let mut e = serde_json::json!({"code": code, "message": message});
        if !detail.is_null() {
            e["detail"] = detail;
        }
        Reply::new(status).json(&serde_json::json!({ "errors": [e] }))
    }
}

enum Outcome {
    Answer(Reply),
    /// Answer before reading the body, then drain the body and close.
    Early(Reply),
    /// Close the connection without an answer.
    Cut,
}

/// Part of the body before a cut: half of it, at most 64 KiB, so the client is mid-send.
fn read_some(r: &mut impl BufRead, head: &Head) -> u64 {
    let want = head
        .content_length()
        .map_or(4096, |l| (l / 2).min(64 * 1024));
    io::copy(&mut r.take(want), &mut io::sink()).unwrap_or(0)
}

fn write_reply(w: &mut impl Write, reply: &Reply, head_only: bool, close: bool) -> io::Result<()> {
    let mut out = format!("HTTP/1.1 {} {}\r\n", reply.status, reason(reply.status));
    out.push_str("Docker-Distribution-API-Version: registry/2.0\r\n");
    for (k, v) in &reply.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    // A HEAD answer announces the length of what a GET would send.
    out.push_str(&format!("Content-Length: {}\r\n", reply.body.len()));
    if close {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    w.write_all(out.as_bytes())?;
    if !head_only {
        w.write_all(&reply.body)?;
    }
    w.flush()
}

// ---------------------------------------------------------------------------------------
// The registry.

/// Where a `/v2/` path points.
enum Route {
    Base,
    Uploads { repo: String },
    Upload { repo: String, id: String },
    Blob { repo: String, digest: String },
    Manifest { repo: String, reference: String },
    Tags { repo: String },
    Unknown,
}

impl Route {
    fn parse(path: &str) -> Route {
        let Some(rest) = path.strip_prefix("/v2/") else {
            return Route::Unknown;
        };
        let rest = percent_decode(rest, false);
        if rest.is_empty() {
            return Route::Base;
        }
        if let Some(repo) = rest.strip_suffix("/tags/list") {
            return Route::Tags {
                repo: repo.to_owned(),
            };
        }
        if let Some((repo, id)) = rest.split_once("/blobs/uploads/") {
            let repo = repo.to_owned();
            return if id.is_empty() {
                Route::Uploads { repo }
            } else {
                Route::Upload {
                    repo,
                    id: id.to_owned(),
                }
            };
        }
        if let Some((repo, digest)) = rest.rsplit_once("/blobs/") {
            return Route::Blob {
                repo: repo.to_owned(),
                digest: digest.to_owned(),
            };
        }
        if let Some((repo, reference)) = rest.rsplit_once("/manifests/") {
            return Route::Manifest {
                repo: repo.to_owned(),
                reference: reference.to_owned(),
            };
        }
        Route::Unknown
    }

    fn repo(&self) -> Option<&str> {
        match self {
            Route::Uploads { repo }
            | Route::Upload { repo, .. }
            | Route::Blob { repo, .. }
            | Route::Manifest { repo, .. }
            | Route::Tags { repo } => Some(repo),
            Route::Base | Route::Unknown => None,
        }
    }
}

fn valid_repo(name: &str) -> bool {
    !name.is_empty()
        && name.split('/').all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
                && c.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
        })
}

fn is_digest(s: &str) -> bool {
    s.split_once(':').is_some_and(|(alg, hex)| {
        !alg.is_empty() && !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

fn content_range(head: &Head) -> Option<Result<(u64, u64), ()>> {
    let v = head.header("content-range")?;
    let v = v
        .trim()
        .trim_start_matches("bytes")
        .trim_start_matches([' ', '=']);
    let parsed = v
        .split_once('-')
        .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)));
    Some(parsed.ok_or(()))
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record(&self, head: &Head, arrived: Instant, status: u16, body_bytes: u64) {
        if head.path.contains("/blobs/uploads/") {
            self.upload_bytes.fetch_add(body_bytes, Ordering::SeqCst);
        }
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(LoggedRequest {
                method: head.method.clone(),
                path: head.path.clone(),
                query: head.query.clone(),
                status,
                arrived,
                body_bytes,
                headers: head.headers.clone(),
            });
    }

    /// One connection: requests until the client closes it, a fault cuts it, or a read
    /// stalls for a minute.
    fn serve(&self, conn: TcpStream) -> io::Result<()> {
        conn.set_read_timeout(Some(Duration::from_secs(60)))?;
        let _ = conn.set_nodelay(true);
        let mut reader = BufReader::new(conn.try_clone()?);
        let mut writer = conn;
        while let Some(head) = read_head(&mut reader)? {
            let arrived = Instant::now();
            if head
                .header("expect")
                .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
            {
                writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
            }
            let (outcome, body_bytes) = self.handle(&head, &mut reader);
            match outcome {
                Outcome::Cut => {
                    self.record(&head, arrived, 0, body_bytes);
                    let _ = writer.shutdown(Shutdown::Both);
                    return Ok(());
                }
                Outcome::Early(reply) => {
                    write_reply(&mut writer, &reply, false, true)?;
                    let drained = read_body(&mut reader, &head).map_or(0, |b| b.len() as u64);
                    self.record(&head, arrived, reply.status, drained);
                    let _ = writer.shutdown(Shutdown::Both);
                    return Ok(());
                }
                Outcome::Answer(reply) => {
                    let close = head
                        .header("connection")
                        .is_some_and(|v| v.eq_ignore_ascii_case("close"));
                    self.record(&head, arrived, reply.status, body_bytes);
                    write_reply(&mut writer, &reply, head.method == "HEAD", close)?;
                    if close {
                        let _ = writer.shutdown(Shutdown::Both);
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }

    /// The answer to one request, and the body bytes read for it.
    fn handle(&self, head: &Head, reader: &mut impl BufRead) -> (Outcome, u64) {
        // The proxy's faults first: they hit before the registry reads anything.
        let upload = is_upload(&head.method, &head.path);
        let mut throttled = None;
        if upload {
            let mut st = self.state();
            if st.faults.fail_uploads > 0 {
                st.faults.fail_uploads -= 1;
                let n = st.failures;
                st.failures += 1;
                let cut = match st.faults.failure {
                    UploadFailure::Alternate => n % 2 == 1,
                    UploadFailure::ServerError => false,
                    UploadFailure::Disconnect => true,
                };
                drop(st);
                if cut {
                    let got = read_some(reader, head);
                    return (Outcome::Cut, got);
                }
                return match read_body(reader, head) {
                    Ok(b) => (
                        Outcome::Answer(Reply::new(500).header("Content-Type", "text/plain")),
                        b.len() as u64,
                    ),
                    Err(_) => (Outcome::Cut, 0),
                };
            }
            if st.faults.throttle_uploads > 0 {
                st.faults.throttle_uploads -= 1;
                throttled = Some((st.faults.throttle_status, st.faults.retry_after.clone()));
            }
        }
        let (max_body, early) = {
            let st = self.state();
            (st.faults.max_body, st.faults.reject_before_body)
        };
        let too_large = || {
            // nginx's answer: HTML, not the registry's JSON.
            let mut reply = Reply::new(413).header("Content-Type", "text/html");
            reply.body =
                b"<html><body><h1>413 Request Entity Too Large</h1></body></html>".to_vec();
            reply
        };
        if early
            && throttled.is_none()
            && max_body.is_some_and(|max| head.content_length().is_some_and(|l| l > max))
        {
            return (Outcome::Early(too_large()), 0);
        }
        let body = match read_body(reader, head) {
            Ok(b) => b,
            Err(_) => return (Outcome::Cut, 0),
        };
        let got = body.len() as u64;
        if let Some((status, retry_after)) = throttled {
            let (code, message) = if status == 429 {
                ("TOOMANYREQUESTS", "too many requests")
            } else {
                ("UNAVAILABLE", "service unavailable")
            };
            let mut reply = Reply::error(status, code, message, serde_json::Value::Null);
            if let Some(ra) = retry_after {
                reply = reply.header("Retry-After", ra);
            }
            return (Outcome::Answer(reply), got);
        }
        if max_body.is_some_and(|max| got > max) {
            return (Outcome::Answer(too_large()), got);
        }
        let reply = if head.path == "/token" {
            self.token(head, &body)
        } else {
            self.registry(head, body)
        };
        (Outcome::Answer(reply), got)
    }

    fn registry(&self, head: &Head, body: Vec<u8>) -> Reply {
        let route = Route::parse(&head.path);
        if let Some(repo) = route.repo()
            && !valid_repo(repo)
        {
            return Reply::error(
                400,
                "NAME_INVALID",
                "invalid repository name",
                serde_json::Value::String(repo.to_owned()),
            );
        }
        let write = !matches!(head.method.as_str(), "GET" | "HEAD");
        if let Err(reply) = self.authorize(head, route.repo(), write) {
            return reply;
        }
        let m = head.method.as_str();
        match (&route, m) {
            (Route::Base, "GET" | "HEAD") => Reply::new(200).json(&serde_json::json!({})),
            (Route::Uploads { repo }, "POST") => self.start_upload(head, repo, &body),
            (Route::Upload { repo, id }, "PATCH") => self.patch(head, repo, id, &body),
            (Route::Upload { repo, id }, "PUT") => self.commit(head, repo, id, &body),
            (Route::Upload { repo, id }, "GET") => self.upload_status(repo, id),
            (Route::Upload { repo, id }, "DELETE") => self.cancel(repo, id),
            (Route::Blob { repo, digest }, "GET" | "HEAD") => self.get_blob(repo, digest),
            (Route::Manifest { repo, reference }, "PUT") => {
                self.put_manifest(head, repo, reference, body)
            }
            (Route::Manifest { repo, reference }, "GET" | "HEAD") => {
                self.get_manifest(repo, reference)
            }
            (Route::Tags { repo }, "GET") => self.tag_list(repo),
            (Route::Unknown, _) => {
                Reply::error(404, "NOT_FOUND", "not found", serde_json::Value::Null)
            }
            _ => Reply::error(
                405,
                "UNSUPPORTED",
                "The operation is unsupported.",
                serde_json::Value::Null,
            ),
        }
    }

    // -- Authentication. --------------------------------------------------------------

    fn authorize(&self, head: &Head, repo: Option<&str>, write: bool) -> Result<(), Reply> {
        let unauthorized = || {
            Reply::error(
                401,
                "UNAUTHORIZED",
                "authentication required",
                serde_json::Value::Null,
            )
        };
        match &self.auth {
            Auth::None => Ok(()),
            Auth::Basic { username, password } => {
                let expected = base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{password}"));
                let given = head
                    .header("authorization")
                    .and_then(|v| v.strip_prefix("Basic "))
                    .map(str::trim);
                if given == Some(expected.as_str()) {
                    Ok(())
                } else {
                    Err(unauthorized().header("WWW-Authenticate", r#"Basic realm="fake-registry""#))
                }
            }
            Auth::Bearer(t) => {
                let actions = if write { "pull,push" } else { "pull" };
                let given = head
                    .header("authorization")
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(str::trim);
                let verdict = given.map(|token| self.check_token(token, repo, write));
                let error = match verdict {
                    Some(TokenVerdict::Ok) => return Ok(()),
                    Some(TokenVerdict::Invalid) => Some("invalid_token"),
                    Some(TokenVerdict::Scope) => Some("insufficient_scope"),
                    None => None,
                };
                let mut challenge = format!(
                    r#"Bearer realm="http://{}/token",service="{}""#,
                    self.addr, t.service
                );
                if let Some(repo) = repo {
                    challenge.push_str(&format!(r#",scope="repository:{repo}:{actions}""#));
                }
                if let Some(e) = error {
                    challenge.push_str(&format!(r#",error="{e}""#));
                }
                Err(unauthorized().header("WWW-Authenticate", challenge))
            }
        }
    }

    /// Is the token good for `repo` (pull, or push too when `write`)? A good one is used up
    /// a little.
    fn check_token(&self, token: &str, repo: Option<&str>, write: bool) -> TokenVerdict {
        let max_uses = match &self.auth {
            Auth::Bearer(t) => t.max_uses,
            _ => None,
        };
        let mut st = self.state();
        let Some(t) = st.tokens.get_mut(token) else {
            return TokenVerdict::Invalid;
        };
        if t.refused
            || t.issued.elapsed() >= t.lifetime
            || max_uses.is_some_and(|max| t.uses >= max)
        {
            return TokenVerdict::Invalid;
        }
        if let Some(repo) = repo
            && (!t.grants(repo, "pull") || (write && !t.grants(repo, "push")))
        {
            return TokenVerdict::Scope;
        }
        t.uses += 1;
        TokenVerdict::Ok
    }

    /// May this request read `repo` (a mount source)?
    fn may_pull(&self, head: &Head, repo: &str) -> bool {
        match &self.auth {
            Auth::None | Auth::Basic { .. } => true,
            Auth::Bearer(_) => head
                .header("authorization")
                .and_then(|v| v.strip_prefix("Bearer "))
                .and_then(|token| {
                    self.state()
                        .tokens
                        .get(token.trim())
                        .map(|t| t.grants(repo, "pull"))
                })
                .unwrap_or(false),
        }
    }

    /// The token endpoint: `GET` with Basic credentials (docker's flow), or `POST` with a
    /// form (`grant_type=refresh_token` or `password`, the OAuth2 flow).
    fn token(&self, head: &Head, body: &[u8]) -> Reply {
        let Auth::Bearer(cfg) = &self.auth else {
            return Reply::error(
                404,
                "NOT_FOUND",
                "no token service",
                serde_json::Value::Null,
            );
        };
        let (params, authorized) = match head.method.as_str() {
            "GET" => {
                let params = query_pairs(&head.query);
                let basic = head
                    .header("authorization")
                    .and_then(|v| v.strip_prefix("Basic "))
                    .and_then(|v| {
                        base64::engine::general_purpose::STANDARD
                            .decode(v.trim())
                            .ok()
                    })
                    .map(|v| String::from_utf8_lossy(&v).into_owned());
                let ok = match &cfg.credentials {
                    None => true,
                    Some((u, p)) => basic.as_deref() == Some(format!("{u}:{p}").as_str()),
                };
                (params, ok)
            }
            "POST" => {
                let params = query_pairs(&String::from_utf8_lossy(body));
                let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
                let ok = match get("grant_type").as_deref() {
                    Some("refresh_token") => cfg
                        .refresh_token
                        .as_ref()
                        .is_some_and(|t| get("refresh_token").as_ref() == Some(t)),
                    Some("password") => match &cfg.credentials {
                        None => true,
                        Some((u, p)) => {
                            get("username").as_ref() == Some(u)
                                && get("password").as_ref() == Some(p)
                        }
                    },
                    _ => false,
                };
                // The form's scope is space-separated; split it like repeated `scope=`.
                let params = params
                    .iter()
                    .flat_map(|(k, v)| {
                        v.split(' ')
                            .map(|v| (k.clone(), v.to_owned()))
                            .collect::<Vec<_>>()
                    })
                    .collect();
                (params, ok)
            }
            _ => {
                return Reply::error(
                    405,
                    "UNSUPPORTED",
                    "The operation is unsupported.",
                    serde_json::Value::Null,
                );
            }
        };
        if !authorized {
            return Reply::error(
                401,
                "UNAUTHORIZED",
                "authentication required",
                serde_json::Value::Null,
            );
        }
        let access: Vec<(String, Vec<String>)> = params
            .iter()
            .filter(|(k, _)| k == "scope")
            .filter_map(|(_, scope)| {
                let mut parts = scope.splitn(3, ':');
                let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                (kind == "repository").then(|| {
                    (
                        name.to_owned(),
                        actions.split(',').map(str::to_owned).collect(),
                    )
                })
            })
            .collect();
        let mut st = self.state();
        let id = st.id();
        let refused = st.faults.expired_tokens > 0;
        if refused {
            st.faults.expired_tokens -= 1;
        }
        let token = format!("fake-token-{id}");
        st.tokens.insert(
            token.clone(),
            Token {
                issued: Instant::now(),
                lifetime: cfg.lifetime,
                uses: 0,
                refused,
                access,
            },
        );
        drop(st);
        self.tokens_issued.fetch_add(1, Ordering::SeqCst);
        let expires_in = cfg.expires_in.unwrap_or(cfg.lifetime.as_secs());
        Reply::new(200).json(&serde_json::json!({
            "token": token,
            "access_token": token,
            "expires_in": expires_in,
        }))
    }

    // -- Blobs. --------------------------------------------------------------------------

    fn get_blob(&self, repo: &str, digest: &str) -> Reply {
        let st = self.state();
        match st
            .repos
            .get(repo)
            .filter(|r| r.blobs.contains(digest))
            .and_then(|_| st.blobs.get(digest))
        {
            Some(data) => {
                let mut r = Reply::new(200)
                    .header("Content-Type", "application/octet-stream")
                    .header("Docker-Content-Digest", digest);
                r.body = data.to_vec();
                r
            }
            None => Reply::error(
                404,
                "BLOB_UNKNOWN",
                "blob unknown to registry",
                serde_json::Value::String(digest.to_owned()),
            ),
        }
    }

    fn upload_location(&self, repo: &str, id: &str, state: u64) -> String {
        // Absolute, with a `_state` query, as distribution writes it: a client must keep
        // the query when it adds `digest=`.
        format!(
            "http://{}/v2/{repo}/blobs/uploads/{id}?_state={state}",
            self.addr
        )
    }

    fn start_upload(&self, head: &Head, repo: &str, body: &[u8]) -> Reply {
        if let (Some(digest), Some(from)) = (head.param("mount"), head.param("from"))
            && self.may_pull(head, &from)
        {
            let mut st = self.state();
            if st
                .repos
                .get(&from)
                .is_some_and(|r| r.blobs.contains(&digest))
            {
                st.repos
                    .entry(repo.to_owned())
                    .or_default()
                    .blobs
                    .insert(digest.clone());
                return Reply::new(201)
                    .header("Location", format!("/v2/{repo}/blobs/{digest}"))
                    .header("Docker-Content-Digest", digest);
            }
        }
        if let Some(digest) = head.param("digest") {
            // A monolithic upload in the POST itself.
            return self.store(repo, &digest, body.to_vec());
        }
        let mut st = self.state();
        let id = st.id();
        let uuid = format!("{:08x}-fake-upload-{id}", id.wrapping_mul(0x9E37_79B9));
        st.uploads.insert(
            uuid.clone(),
            Upload {
                repo: repo.to_owned(),
                data: Vec::new(),
                short_chunk: false,
            },
        );
        let state = st.id();
        drop(st);
        let mut r = Reply::new(202)
            .header("Location", self.upload_location(repo, &uuid, state))
            .header("Range", "0-0")
            .header("Docker-Upload-UUID", uuid);
        if let Some(min) = self.chunk_min_length {
            r = r.header("OCI-Chunk-Min-Length", min.to_string());
        }
        r
    }

    fn unknown_upload(id: &str) -> Reply {
        Reply::error(
            404,
            "BLOB_UPLOAD_UNKNOWN",
            "blob upload unknown to registry",
            serde_json::Value::String(id.to_owned()),
        )
    }

    /// Where the upload stands: `Location` and `Range` of what was received.
    fn progress(&self, status: u16, repo: &str, id: &str, size: usize, state: u64) -> Reply {
        Reply::new(status)
            .header("Location", self.upload_location(repo, id, state))
            .header("Range", format!("0-{}", size.saturating_sub(1)))
            .header("Docker-Upload-UUID", id)
    }

    fn patch(&self, head: &Head, repo: &str, id: &str, body: &[u8]) -> Reply {
        let mut st = self.state();
        let state = st.id();
        let min = self.chunk_min_length;
        let Some(up) = st.uploads.get_mut(id).filter(|u| u.repo == repo) else {
            return Self::unknown_upload(id);
        };
        let size = up.data.len();
        let out_of_order = match content_range(head) {
            None => false,
            Some(Err(())) => true,
            Some(Ok((start, end))) => {
                start != size as u64 || end + 1 < start || end + 1 - start != body.len() as u64
            }
        };
        if out_of_order || up.short_chunk {
            let detail = if up.short_chunk {
                "a chunk below OCI-Chunk-Min-Length may only be the last"
            } else {
                "Content-Range does not continue the upload"
            };
            return Reply::error(
                416,
                "BLOB_UPLOAD_INVALID",
                "blob upload invalid",
                serde_json::Value::String(detail.into()),
            )
            .header("Location", self.upload_location(repo, id, state))
            .header("Range", format!("0-{}", size.saturating_sub(1)));
        }
        up.short_chunk = min.is_some_and(|m| (body.len() as u64) < m);
        up.data.extend_from_slice(body);
        let size = up.data.len();
        drop(st);
        self.progress(202, repo, id, size, state)
    }

    fn upload_status(&self, repo: &str, id: &str) -> Reply {
        let mut st = self.state();
        let state = st.id();
        match st.uploads.get(id).filter(|u| u.repo == repo) {
            Some(up) => {
                let size = up.data.len();
                drop(st);
                self.progress(204, repo, id, size, state)
            }
            None => Self::unknown_upload(id),
        }
    }

    fn cancel(&self, repo: &str, id: &str) -> Reply {
        let mut st = self.state();
        if st.uploads.get(id).is_some_and(|u| u.repo == repo) {
            st.uploads.remove(id);
            Reply::new(204)
        } else {
            Self::unknown_upload(id)
        }
    }

    /// `PUT ?digest=`: the last bytes (if any), then the digest of the whole upload.
    fn commit(&self, head: &Head, repo: &str, id: &str, body: &[u8]) -> Reply {
        let Some(digest) = head.param("digest") else {
            return Reply::error(
                400,
                "DIGEST_INVALID",
                "provided digest did not match uploaded content",
                serde_json::Value::String("digest missing".into()),
            );
        };
        let mut st = self.state();
        let Some(up) = st.uploads.get_mut(id).filter(|u| u.repo == repo) else {
            return Self::unknown_upload(id);
        };
        if let Some(Ok((start, _))) = content_range(head)
            && start != up.data.len() as u64
            && !body.is_empty()
        {
            return Reply::error(
                416,
                "BLOB_UPLOAD_INVALID",
                "blob upload invalid",
                serde_json::Value::String("Content-Range does not continue the upload".into()),
            );
        }
        up.data.extend_from_slice(body);
        // distribution keeps a session whose commit failed; so does the fake.
        let data = up.data.clone();
        if sha256_digest(&data) != digest {
            return Reply::error(
                400,
                "DIGEST_INVALID",
                "provided digest did not match uploaded content",
                serde_json::Value::String(digest),
            );
        }
        st.uploads.remove(id);
        drop(st);
        self.store(repo, &digest, data)
    }

    fn store(&self, repo: &str, digest: &str, data: Vec<u8>) -> Reply {
        if !digest.starts_with("sha256:") || !is_digest(digest) {
            return Reply::error(
                400,
                "DIGEST_INVALID",
                "provided digest did not match uploaded content",
                serde_json::Value::String(format!("unsupported digest {digest}")),
            );
        }
        if sha256_digest(&data) != digest {
            return Reply::error(
                400,
                "DIGEST_INVALID",
                "provided digest did not match uploaded content",
                serde_json::Value::String(digest.to_owned()),
            );
        }
        let mut st = self.state();
        st.blobs.insert(digest.to_owned(), Arc::from(data));
        st.repos
            .entry(repo.to_owned())
            .or_default()
            .blobs
            .insert(digest.to_owned());
        Reply::new(201)
            .header("Location", format!("/v2/{repo}/blobs/{digest}"))
            .header("Docker-Content-Digest", digest)
    }

    // -- Manifests. ----------------------------------------------------------------------

    fn put_manifest(&self, head: &Head, repo: &str, reference: &str, body: Vec<u8>) -> Reply {
        let refuse = self.state().faults.reject_manifests;
        if refuse {
            return Reply::error(
                400,
                "MANIFEST_INVALID",
                "manifest invalid",
                serde_json::Value::String(format!(
                    "unsupported media type {}",
                    head.header("content-type").unwrap_or("(none)")
                )),
            );
        }
        let digest = sha256_digest(&body);
        if is_digest(reference) && reference != digest {
            return Reply::error(
                400,
                "DIGEST_INVALID",
                "provided digest did not match uploaded content",
                serde_json::Value::String(reference.to_owned()),
            );
        }
        let invalid = |detail: &str| {
            Reply::error(
                400,
                "MANIFEST_INVALID",
                "manifest invalid",
                serde_json::Value::String(detail.to_owned()),
            )
        };
        let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&body) else {
            return invalid("not JSON");
        };
        let media_type = head
            .header("content-type")
            .map(str::to_owned)
            .or_else(|| doc["mediaType"].as_str().map(str::to_owned))
            .unwrap_or_default();
        let digests_of = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|d| d["digest"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut blobs = digests_of(&doc["layers"]);
        if let Some(c) = doc["config"]["digest"].as_str() {
            blobs.push(c.to_owned());
        }
        let children = digests_of(&doc["manifests"]);
        let mut st = self.state();
        let r = st.repos.entry(repo.to_owned()).or_default();
        // distribution refuses a manifest whose blobs are not all in the repository: a tag
        // never points at an incomplete image.
        let missing = blobs
            .iter()
            .find(|d| !r.blobs.contains(*d))
            .or_else(|| children.iter().find(|d| !r.manifests.contains_key(*d)));
        if let Some(d) = missing {
            return Reply::error(
                400,
                "MANIFEST_BLOB_UNKNOWN",
                "blob unknown to registry",
                serde_json::Value::String(d.clone()),
            );
        }
        r.manifests
            .insert(digest.clone(), StoredManifest { media_type, body });
        if !is_digest(reference) {
            r.tags.insert(reference.to_owned(), digest.clone());
        }
        Reply::new(201)
            .header("Location", format!("/v2/{repo}/manifests/{digest}"))
            .header("Docker-Content-Digest", digest)
    }

    fn get_manifest(&self, repo: &str, reference: &str) -> Reply {
        let st = self.state();
        let found = st.repos.get(repo).and_then(|r| {
            let digest = r.tags.get(reference).map_or(reference, String::as_str);
            r.manifests.get(digest).map(|m| (digest.to_owned(), m))
        });
        match found {
            Some((digest, m)) => {
                let mut r = Reply::new(200).header("Content-Type", m.media_type.clone());
                if !st.faults.omit_manifest_digest {
                    r = r.header("Docker-Content-Digest", digest);
                }
                r.body = m.body.clone();
                r
            }
            None => Reply::error(
                404,
                "MANIFEST_UNKNOWN",
                "manifest unknown",
                serde_json::json!({ "Tag": reference }),
            ),
        }
    }

    fn tag_list(&self, repo: &str) -> Reply {
        let st = self.state();
        match st.repos.get(repo) {
            Some(r) => Reply::new(200).json(&serde_json::json!({
                "name": repo,
                "tags": r.tags.keys().collect::<Vec<_>>(),
            })),
            None => Reply::error(
                404,
                "NAME_UNKNOWN",
                "repository name not known to registry",
                serde_json::json!({ "name": repo }),
            ),
        }
    }
}

enum TokenVerdict {
    Ok,
    /// Unknown, expired or used up.
    Invalid,
    Scope,
}

impl Token {
    fn grants(&self, repo: &str, action: &str) -> bool {
        self.access
            .iter()
            .any(|(name, actions)| name == repo && actions.iter().any(|a| a == action || a == "*"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal HTTP/1.1 exchange over a fresh connection.
    fn call(
        reg: &FakeRegistry,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, String, Vec<u8>) {
        let mut c = TcpStream::connect(reg.addr).expect("connect");
        let mut req = format!(
            "{method} {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            reg.addr,
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        c.write_all(req.as_bytes()).expect("write");
        c.write_all(body).expect("body");
        let mut out = Vec::new();
        c.read_to_end(&mut out).expect("read");
        let split = out.windows(4).position(|w| w == b"\r\n\r\n").expect("head") + 4;
        let head = String::from_utf8_lossy(&out[..split]).into_owned();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status");
        (status, head, out[split..].to_vec())
    }

    fn location(head: &str) -> String {
        head.lines()
            .find_map(|l| l.strip_prefix("Location: "))
            .expect("Location")
            .trim()
            .trim_start_matches("http://")
            .split_once('/')
            .map(|(_, p)| format!("/{p}"))
            .expect("path")
    }

    #[test]
    fn chunks_in_order_then_digest_verified() {
        let reg = FakeRegistry::start_with(RegistryConfig {
            chunk_min_length: Some(4),
            ..RegistryConfig::default()
        })
        .expect("start");
        let (s, head, _) = call(&reg, "POST", "/v2/a/b/blobs/uploads/", &[], b"");
        assert_eq!(s, 202);
        assert!(head.contains("OCI-Chunk-Min-Length: 4"), "{head}");
        let loc = location(&head);
        // Out of order: 416.
        let (s, _, _) = call(&reg, "PATCH", &loc, &[("Content-Range", "2-5")], b"abcd");
        assert_eq!(s, 416);
        let (s, head, _) = call(&reg, "PATCH", &loc, &[("Content-Range", "0-4")], b"hello");
        assert_eq!(s, 202);
        assert!(head.contains("Range: 0-4"), "{head}");
        let loc = location(&head);
        let (s, head, _) = call(&reg, "PATCH", &loc, &[("Content-Range", "5-6")], b", ");
        assert_eq!(s, 202);
        // After a short chunk only the commit may come.
        let loc = location(&head);
        let (s, _, _) = call(&reg, "PATCH", &loc, &[("Content-Range", "7-12")], b"world!");
        assert_eq!(s, 416);
        let wrong = sha256_digest(b"nope");
        let (s, _, body) = call(&reg, "PUT", &format!("{loc}&digest={wrong}"), &[], b"world");
        assert_eq!(s, 400);
        assert!(String::from_utf8_lossy(&body).contains("DIGEST_INVALID"));
        // The failed commit appended its bytes; a fresh session commits the right content.
        let (_, head, _) = call(&reg, "POST", "/v2/a/b/blobs/uploads/", &[], b"");
        let loc = location(&head);
        let digest = sha256_digest(b"hello, world");
        let (s, head, _) = call(
            &reg,
            "PUT",
            &format!("{loc}&digest={digest}"),
            &[],
            b"hello, world",
        );
        assert_eq!(s, 201, "{head}");
        assert!(reg.has_blob("a/b", &digest));
        let (s, head, body) = call(&reg, "HEAD", &format!("/v2/a/b/blobs/{digest}"), &[], b"");
        assert_eq!((s, body.len()), (200, 0));
        assert!(head.contains("Content-Length: 12"), "{head}");
    }

    #[test]
    fn mounts_manifests_and_tags() {
        let reg = FakeRegistry::start().expect("start");
        let d = reg.add_blob("src", b"layer");
        let (s, _, _) = call(
            &reg,
            "POST",
            &format!("/v2/dst/blobs/uploads/?mount={d}&from=src"),
            &[],
            b"",
        );
        assert_eq!(s, 201);
        let (s, _, _) = call(
            &reg,
            "POST",
            &format!("/v2/dst/blobs/uploads/?mount={d}&from=none"),
            &[],
            b"",
        );
        assert_eq!(s, 202);
        let manifest = serde_json::json!({"schemaVersion": 2, "config": {"digest": d}, "layers": [{"digest": sha256_digest(b"missing")}]}).to_string();
        let (s, _, body) = call(
            &reg,
            "PUT",
            "/v2/dst/manifests/v1",
            &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
            manifest.as_bytes(),
        );
        assert_eq!(s, 400);
        assert!(String::from_utf8_lossy(&body).contains("MANIFEST_BLOB_UNKNOWN"));
        let manifest = serde_json::json!({"schemaVersion": 2, "config": {"digest": d}, "layers": [{"digest": d}]}).to_string();
        let (s, head, _) = call(
            &reg,
            "PUT",
            "/v2/dst/manifests/v1",
            &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
            manifest.as_bytes(),
        );
        assert_eq!(s, 201);
        let md = sha256_digest(manifest.as_bytes());
        assert!(head.contains(&md), "{head}");
        assert_eq!(reg.tags("dst"), ["v1"]);
        let (s, _, body) = call(&reg, "GET", "/v2/dst/manifests/v1", &[], b"");
        assert_eq!((s, body), (200, manifest.into_bytes()));
        let (s, _, body) = call(&reg, "GET", "/v2/dst/tags/list", &[], b"");
        assert_eq!(s, 200);
        assert!(String::from_utf8_lossy(&body).contains("\"v1\""));
    }

    #[test]
    fn bearer_challenge_token_and_expiry_by_use() {
        let reg = FakeRegistry::start_with(RegistryConfig {
            auth: Auth::Bearer(TokenAuth {
                credentials: Some(("u".into(), "p".into())),
                max_uses: Some(1),
                ..TokenAuth::default()
            }),
            ..RegistryConfig::default()
        })
        .expect("start");
        let (s, head, _) = call(&reg, "GET", "/v2/team/app/tags/list", &[], b"");
        assert_eq!(s, 401);
        assert!(
            head.contains(&format!(
                r#"Bearer realm="{}",service="fake-registry",scope="repository:team/app:pull""#,
                reg.token_realm()
            )),
            "{head}"
        );
        let (s, _, _) = call(
            &reg,
            "GET",
            "/token?scope=repository%3Ateam%2Fapp%3Apull",
            &[("Authorization", "Basic dTp3cm9uZw==")],
            b"",
        );
        assert_eq!(s, 401);
        let (s, _, body) = call(
            &reg,
            "GET",
            "/token?scope=repository%3Ateam%2Fapp%3Apull",
            &[("Authorization", "Basic dTpw")],
            b"",
        );
        assert_eq!(s, 200);
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        let bearer = format!("Bearer {}", v["token"].as_str().expect("token"));
        let (s, _, _) = call(
            &reg,
            "GET",
            "/v2/team/app/tags/list",
            &[("Authorization", &bearer)],
            b"",
        );
        assert_eq!(s, 404, "authorized: the repository does not exist");
        let (s, head, _) = call(
            &reg,
            "GET",
            "/v2/team/app/tags/list",
            &[("Authorization", &bearer)],
            b"",
        );
        assert_eq!(s, 401, "used up");
        assert!(head.contains(r#"error="invalid_token""#), "{head}");
        assert_eq!(reg.tokens_issued(), 1);
    }

    #[test]
    fn faults_are_counted_down_and_logged() {
        let reg = FakeRegistry::start_with(RegistryConfig {
            faults: Faults {
                fail_uploads: 1,
                throttle_uploads: 1,
                throttle_status: 503,
                retry_after: Some("7".into()),
                max_body: Some(3),
                ..Faults::default()
            },
            ..RegistryConfig::default()
        })
        .expect("start");
        let (s, _, _) = call(
            &reg,
            "PUT",
            "/v2/a/blobs/uploads/x?digest=sha256:00",
            &[],
            b"ab",
        );
        assert_eq!(s, 500);
        let (s, head, _) = call(
            &reg,
            "PUT",
            "/v2/a/blobs/uploads/x?digest=sha256:00",
            &[],
            b"ab",
        );
        assert_eq!(s, 503);
        assert!(head.contains("Retry-After: 7"), "{head}");
        let (s, _, _) = call(
            &reg,
            "PUT",
            "/v2/a/blobs/uploads/x?digest=sha256:00",
            &[],
            b"abcd",
        );
        assert_eq!(s, 413);
        let log = reg.log();
        assert_eq!(
            log.iter().map(|r| r.status).collect::<Vec<_>>(),
            [500, 503, 413]
        );
        assert_eq!(reg.upload_bytes(), 8);
        assert!(log.iter().all(LoggedRequest::is_upload));
        assert_eq!(log[0].param("digest").as_deref(), Some("sha256:00"));
        assert_eq!(
            (reg.faults().fail_uploads, reg.faults().throttle_uploads),
            (0, 0)
        );
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(
            percent_decode("repository%3Aa%2Fb%3Apull%2Cpush", false),
            "repository:a/b:pull,push"
        );
        assert_eq!(percent_decode("a+b%", true), "a b%");
        assert_eq!(percent_decode("%zz%4", false), "%zz%4");
    }
}
