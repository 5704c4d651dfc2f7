//! An in-process fake Habitat Builder for tests: the depot routes `hab pkg install`,
//! `hab pkg download` and the container exporter use, serving signed `.hart` files in
//! channels and their origin keys, with bearer-token checks, injectable faults and a log of
//! every request, so that a Builder client is tested without bldr.habitat.sh.
//!
//! # The contract it follows
//!
//! Recorded from habitat-sh/habitat @ 78b87ed4 (hab 2.1.78) and habitat-sh/builder @ ec6a7a5a
//! (the "Builder HTTP contract" notes; section numbers below are theirs). Copied here
//! because it is what the fake must keep to:
//!
//! - **§1** Every route is under `/v1`. hab turns a base URL whose path is exactly `/` into
//!   `<base>/v1` (any other path is kept verbatim), sends `Connection: close`, no
//!   `Accept-Encoding`, `User-Agent: hab/<version> (<target>; <kernel>)`, and
//!   `Authorization: Bearer <token>` only where a route below says so and only when a token
//!   is configured. Builder never redirects; a redirect target would have to answer 200
//!   *and* `x-filename` (§4), so presigned storage URLs do not work with hab.
//! - **§2** The client accepts only the exact success status (`200`; a `206` is an error).
//!   Builder's errors have an **empty body**; a `401` is always shown as
//!   "Please check that you have specified a valid Personal Access Token." (body ignored).
//!   Only artifact downloads (Route B) and `hab origin key download` are retried (1 + 5
//!   tries, 10/10/20/30/50 s): any 4xx stops at once, `501` counts as success ("Unsupported
//!   package platform… Skipping!"), everything else (5xx, connection/IO errors, a missing
//!   `x-filename`, a downloaded file that is not a hart) is retried. Lookups (Route A), the
//!   key fetch of install/`pkg download` (Route C) and the channel list are not retried.
//! - **§3 Route A**, the latest or a given release in a channel:
//!   `GET /v1/depot/channels/{origin}/{channel}/pkgs/{name}/latest?target=T`,
//!   `…/pkgs/{name}/{version}/latest?target=T`, `…/pkgs/{name}/{version}/{release}?target=T`
//!   (token sent if set). `{version}` is an exact string (`1.2` does not match `1.2.3`). An
//!   unknown `target` is a core parse error: **500**, empty body; without `?target=` the
//!   target comes from the User-Agent's `(\w+-\w+)` inside `(…; …)`, default `x86_64-linux`.
//!   The server picks "latest" in SQL: `version_array = regexp_matches(version,
//!   '([\d\.]*\d+)(.+)?')`, `WHERE origin AND name AND ident_array @> [origin, name(,
//!   version(, release))] AND channel AND target AND visibility`, `ORDER BY
//!   string_to_array(version_array[1], '.')::numeric[] DESC, version_array[2] DESC,
//!   release DESC LIMIT 1`: dotted numbers compared numerically (a PostgreSQL array, so a
//!   shorter equal prefix is smaller: `1.0` < `1.0.0`), no suffix above a suffix (`DESC`
//!   puts NULL first), suffixes as text (the suffix keeps its leading `-`), then the
//!   release; a version without a digit has no row and is never "latest". Absent → **404,
//!   empty body**. 200: `Content-Type: application/json`, `Cache-Control: private,
//!   no-cache, no-store`; the body is builder-db's `Package`: `id`, `owner_id` (strings),
//!   `name`, `ident` `{origin, name, version, release}`, `ident_array`, `checksum`
//!   (BLAKE2b-256 hex of the whole hart), `manifest`, `config` (default.toml, `""` if none),
//!   `target`, `deps`, `tdeps`, `build_deps`, `build_tdeps` (ident objects), `exposes`
//!   (ints), `visibility`, `created_at`/`updated_at` (`YYYY-MM-DDTHH:MM:SS.ffffff`), `origin`,
//!   `package_type` (`Standard`/`Native`), `channels` (of this ident and target),
//!   `is_a_service` (the manifest mentions `pkg_exposes|pkg_binds|pkg_exports`). The client
//!   requires `ident` (fully qualified), `checksum`, `manifest`, `deps`, `tdeps`, `exposes`,
//!   `config` and ignores the rest.
//! - **§4 Route B**, `GET /v1/depot/pkgs/{o}/{n}/{v}/{r}/download?target=T` (token sent if
//!   set): a target that does not parse, or is not in `api.targets` (default
//!   `x86_64-linux, x86_64-linux-kernel2, x86_64-windows, aarch64-darwin, aarch64-linux`) →
//!   **422** with body `Invalid package target 'T'`; lookup by exact ident and target, no
//!   channel needed; absent (or the artifact missing from storage) → 404 empty. 200:
//!   `Content-Disposition: attachment; filename="F"`, `x-filename: F`, `Content-Type:
//!   application/octet-stream`, `Cache-Control: public, max-age=31536000`, where F is
//!   `{o}-{n}-{v}-{r}-{target}.hart`; the body is the raw hart, streamed (actix sends it
//!   chunked, without `Content-Length`). The client requires `x-filename` and writes the
//!   file under exactly that name; `Content-Disposition` is ignored.
//! - **§5 Route C**, `GET /v1/depot/origins/{origin}/keys/{revision}`: **no auth** (the
//!   client never sends its token there). 200: `Content-Disposition: attachment;
//!   filename*=ISO-8859-1''{origin}-{rev}.pub`, `x-filename: {origin}-{rev}.pub` (hab then
//!   loads that exact file name), `Cache-Control: private, no-cache, no-store`, body
//!   `SIG-PUB-1\n{origin}-{rev}\n\n{base64 key}` without a trailing newline; unknown → 404
//!   empty. `…/keys/latest` and the list `…/keys` exist too (hab's install does not use
//!   them).
//! - **§6 Route D**, `GET /v1/depot/channels/{origin}` (no token sent): 200
//!   `[{"name":"stable"},{"name":"unstable"}]`, `Cache-Control: private, no-cache, no-store`;
//!   unknown origin → 404. hab asks it only after a not-found, for suggestions.
//! - **§11.5** A request carrying an `Authorization` header that is not exactly two
//!   whitespace-separated parts `Bearer <valid token>` gets **401 on every route**
//!   (Builder's middleware, before routing).
//!
//! # Where the notes are silent, and what this fake does
//!
//! - Header names go out lowercase, as actix writes them.
//! - Every package is `public` and nothing is `hidden`; the license gate of §4 is off (its
//!   defaults are empty). An upload lands in `unstable`, as Builder's does
//!   ([`BuilderConfig::upload_to_unstable`]), and an origin has `stable` and `unstable`.
//! - `ident_array @> [...]` is array *containment*, so Route A matches when every requested
//!   part is one of the package's four parts — for real idents the same as equality.
//! - Suffixes compare byte-wise (the database's collation is UNCONFIRMED). A numeric part
//!   with an empty piece (`1..2`, `.5`) fails the `::numeric[]` cast, which fails the query:
//!   **500**.
//! - No server-side cache: a new release or channel is visible at once (Builder memcaches
//!   lookups, 404s included, and invalidates them on upload and promotion).
//! - The 422 body and the key answer carry no `Content-Type` (the handlers set none; what
//!   actix adds is UNCONFIRMED). `created_at`/`updated_at` come from the release stamp.
//! - With no token configured, no token is valid: any `Authorization` is answered 401.
//!
//! Plain HTTP/1.1 on std threads (the pieces shared with [`crate::registry`] are in
//! `http.rs`), so any client can speak to it and a test needs no runtime of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hart::{
    DecodeOptions, Hart, KeyDirs, PackageIdent, PackageMetadata, PackageTarget, PublicKey,
    SecretKey,
};
use serde_json::{Map, Value, json};

use crate::http::{Head, Server, percent_decode, read_body, read_head, reason};

/// Builder's default `api.targets` (its `habitat/default.toml`): the targets Route B serves.
pub const DEFAULT_TARGETS: [&str; 5] = [
    "x86_64-linux",
    "x86_64-linux-kernel2",
    "x86_64-windows",
    "aarch64-darwin",
    "aarch64-linux",
];

/// How a download's body is framed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Framing {
    /// `Transfer-Encoding: chunked`, no `Content-Length`: what actix sends for Builder's
    /// streamed artifact.
    #[default]
    Chunked,
    /// `Content-Length` (what a front end that buffers might send; UNCONFIRMED for
    /// bldr.habitat.sh).
    ContentLength,
}

/// How [`BuilderFaults::overlong_downloads`] makes a body longer than its `Content-Length`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlong {
    /// `Content-Length` is the hart's length and this many junk bytes follow the hart: a
    /// client reading exactly `Content-Length` bytes gets the whole hart.
    TrailingJunk(u64),
    /// `Content-Length` is this many bytes short of the hart's length and the whole hart is
    /// sent: a client reading exactly `Content-Length` bytes gets a truncated hart.
    Understated(u64),
}

/// What [`BuilderFaults::bad_lookups`] answers (200, in place of the package's JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum LookupBody {
    /// The package's JSON without `checksum`.
    #[default]
    MissingChecksum,
    /// The package's JSON with `ident` lacking `release` (not fully qualified).
    NoRelease,
    /// Not JSON at all: an HTML page (`Content-Type: text/html`), as a proxy or a captive
    /// portal might answer.
    NotJson,
    /// The package's JSON made to say it is this fully qualified ident (`o/n/v/r`: `ident`,
    /// `ident_array`, `origin` and `name`), whatever was asked; the rest (the checksum
    /// included) is the found package's.
    OtherIdent(String),
    /// The package's JSON with a `manifest` of this many bytes: an answer no client should
    /// hold in memory whole.
    Huge(usize),
}

/// What [`BuilderFaults::bad_keys`] answers (200, the right `x-filename`, in place of the
/// key's text).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum BadKey {
    /// Text that is no key file: [`GARBAGE_KEY`].
    #[default]
    Garbage,
    /// The asked key's text with its name line (`ORIGIN-REV`) replaced by this one.
    OtherName(String),
    /// A well-formed key of the asked name and revision whose bytes are another key's (a
    /// fresh key pair, so nothing it signed exists).
    OtherKey,
}

/// The body of [`BadKey::Garbage`].
pub const GARBAGE_KEY: &str = "SIG-PUB-1\nnot a key at all\n\n%%% not base64 %%%";

/// Where [`BuilderFaults::redirect_downloads`] sends the client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RedirectTo {
    /// The same download URL on this server named `localhost` instead of `127.0.0.1`:
    /// another host to the client (which should not carry the token there), answered as
    /// Builder answers.
    #[default]
    OtherHost,
    /// `http://localhost:PORT/_storage/{file}` on this server: the hart without
    /// `x-filename`, as a presigned storage URL would serve it (hab cannot use that, §1).
    Storage,
    /// Any URL, as given.
    Url(String),
}

/// Faults injected into answers. Counts are of requests still to be hit: they go down as
/// faults are injected (`usize::MAX` is "every one"), so [`BuilderServer::faults`] shows
/// what is left. An error status or a redirect is the whole answer; the other kinds may hit
/// the same download together (e.g. slow and cut), except that `missing_filename` goes
/// before `hostile_filename`. A fault not injected is not counted down.
#[derive(Debug, Clone)]
pub struct BuilderFaults {
    /// The next this many Route A lookups are answered `lookup_error_status`, empty body,
    /// before anything else (as a proxy in front of Builder would).
    pub lookup_errors: usize,
    pub lookup_error_status: u16,
    /// The next this many Route B downloads are answered `download_error_status` (a 5xx, or
    /// 501 for hab's "skipped"), empty body, before anything else.
    pub download_errors: usize,
    pub download_error_status: u16,
    /// The next this many successful downloads stop after half of the body and the
    /// connection closes (logged with status 0).
    pub cut_downloads: usize,
    /// The next this many successful downloads are sent in `slow_chunk` pieces with
    /// `slow_delay` between them.
    pub slow_downloads: usize,
    pub slow_delay: Duration,
    pub slow_chunk: usize,
    /// The next this many successful downloads have one byte of the payload (after the
    /// hart's header, which stays intact) flipped.
    pub corrupt_downloads: usize,
    /// The next this many successful downloads carry no `x-filename`.
    pub missing_filename: usize,
    /// The next this many successful downloads carry `x-filename: hostile_filename_value`,
    /// where `{file}` stands for the right name (default `../{file}`; try `sub/{file}` or
    /// `/tmp/{file}`).
    pub hostile_filename: usize,
    pub hostile_filename_value: String,
    /// The next this many successful downloads send a body longer than their
    /// `Content-Length` says (always with `Content-Length`, whatever the framing), then
    /// close the connection.
    pub overlong_downloads: usize,
    pub overlong: Overlong,
    /// The next this many downloads of an existing package are answered `302` to
    /// `redirect_to` (after the token check, as Builder itself would redirect).
    pub redirect_downloads: usize,
    pub redirect_to: RedirectTo,
    /// The next this many Route A lookups that find a package are answered 200 with
    /// `bad_lookup` instead of its JSON.
    pub bad_lookups: usize,
    pub bad_lookup: LookupBody,
    /// The next this many Route C answers of a key that exists carry `bad_key` instead of
    /// the key's text (headers as Builder sends them, `x-filename` the asked key's).
    pub bad_keys: usize,
    pub bad_key: BadKey,
    /// The next this many successful downloads of the ident `swap_download.0` (`o/n/v/r`)
    /// send the file `swap_download.1` (another package's hart) instead, under the asked
    /// ident's `x-filename`. Downloads of other idents are not counted.
    pub swapped_downloads: usize,
    pub swap_download: Option<(String, PathBuf)>,
}

impl Default for BuilderFaults {
    fn default() -> Self {
        BuilderFaults {
            lookup_errors: 0,
            lookup_error_status: 500,
            download_errors: 0,
            download_error_status: 500,
            cut_downloads: 0,
            slow_downloads: 0,
            slow_delay: Duration::from_millis(50),
            slow_chunk: 1024,
            corrupt_downloads: 0,
            missing_filename: 0,
            hostile_filename: 0,
            hostile_filename_value: "../{file}".to_owned(),
            overlong_downloads: 0,
            overlong: Overlong::Understated(1024),
            redirect_downloads: 0,
            redirect_to: RedirectTo::OtherHost,
            bad_lookups: 0,
            bad_lookup: LookupBody::MissingChecksum,
            bad_keys: 0,
            bad_key: BadKey::Garbage,
            swapped_downloads: 0,
            swap_download: None,
        }
    }
}

/// How to start a [`BuilderServer`].
#[derive(Debug, Clone)]
pub struct BuilderConfig {
    /// Signed harts and the channels each is in (see [`BuilderServer::add`]).
    pub packages: Vec<(PathBuf, Vec<String>)>,
    /// Where the origins' public keys are (`ORIGIN-REV.pub`): harts are verified with them
    /// when added, and Route C serves them (read when asked, so keys added later count).
    pub keys_dir: PathBuf,
    /// The one valid bearer token; `None`: none is valid (any `Authorization` gets 401).
    pub token: Option<String>,
    /// Route A and B requests without `Authorization` get 401 too (a private origin, or a
    /// license-gated channel).
    pub require_token: bool,
    pub faults: BuilderFaults,
    /// How downloads are framed.
    pub framing: Framing,
    /// Bytes per write of a download body (per chunk when chunked).
    pub chunk_size: usize,
    /// Builder's `api.targets`: the targets Route B accepts.
    pub targets: Vec<String>,
    /// Every added package is also in `unstable`, as a Builder upload is (`hab pkg
    /// download` of a fully qualified ident relies on it, §8).
    pub upload_to_unstable: bool,
}

impl Default for BuilderConfig {
    fn default() -> Self {
        BuilderConfig {
            packages: Vec::new(),
            keys_dir: PathBuf::new(),
            token: None,
            require_token: false,
            faults: BuilderFaults::default(),
            framing: Framing::Chunked,
            chunk_size: 64 * 1024,
            targets: DEFAULT_TARGETS.iter().map(|t| (*t).to_owned()).collect(),
            upload_to_unstable: true,
        }
    }
}

/// A package as the fake serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub ident: PackageIdent,
    pub target: String,
    /// BLAKE2b-256 of the whole file, lowercase hex.
    pub checksum: String,
    /// Sorted.
    pub channels: Vec<String>,
    pub path: PathBuf,
    /// `o-n-v-r-target.hart`, the `x-filename` of its download.
    pub file_name: String,
}

/// Which route a request took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// Route A: a package in a channel.
    Lookup,
    /// Route B: an artifact.
    Download,
    /// Route C: one origin key (a revision or `latest`).
    Key,
    /// The list of an origin's keys.
    KeyList,
    /// Route D: an origin's channels.
    Channels,
    /// The fake's storage URL of [`RedirectTo::Storage`].
    Storage,
    Unknown,
}

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct BuilderRequest {
    pub method: String,
    /// Percent-encoded, as sent.
    pub path: String,
    /// Without the `?`; empty when there was none.
    pub query: String,
    pub route: RouteKind,
    /// For a lookup, the ident answered; for a download, the ident asked for (`o/n/v/r`).
    pub ident: Option<String>,
    /// The answer's status; 0 when the body did not go out whole (a cut fault, or the client
    /// went away).
    pub status: u16,
    /// Did the request carry an `Authorization` header?
    pub authorization: bool,
    pub headers: Vec<(String, String)>,
    /// Body bytes sent (for chunked answers, without the chunk framing).
    pub body_bytes: u64,
    /// When the request head had arrived.
    pub arrived: Instant,
    /// The faults injected into this answer (the names of [`BuilderFaults`]' counts).
    pub faults: Vec<&'static str>,
    seq: u64,
}

impl BuilderRequest {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::http::header(&self.headers, name)
    }

    /// A query parameter, decoded.
    pub fn param(&self, name: &str) -> Option<String> {
        crate::http::param(&self.query, name)
    }
}

/// A fake Builder on `127.0.0.1:<free port>`, serving until dropped.
///
/// ```no_run
/// use hab_oci_testkit::builder::{BuilderConfig, BuilderFaults, BuilderServer};
/// # fn main() -> anyhow::Result<()> {
/// let dir = std::path::Path::new("/tmp/closure"); // from `hab_oci_testkit::generate`
/// let hart = dir.join("artifacts/gen-app-1.6.0-20240101000000-x86_64-linux.hart");
/// let builder = BuilderServer::start(BuilderConfig {
///     packages: vec![(hart, vec!["stable".into()])],
///     keys_dir: dir.join("keys"),
///     token: Some("secret".into()),
///     ..BuilderConfig::default()
/// })?;
/// builder.set_faults(BuilderFaults {
///     download_errors: 1,
///     ..BuilderFaults::default()
/// });
/// // … point the client at `builder.url()` (hab's HAB_BLDR_URL) with token "secret" …
/// let n = builder.downloads().get("gen/app/1.6.0/20240101000000").copied();
/// assert_eq!(n, Some(1), "one retry after the 500");
/// assert!(builder.log().iter().all(|r| !r.authorization || r.path.contains("/pkgs/")));
/// # Ok(())
/// # }
/// ```
pub struct BuilderServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// Stops accepting when dropped.
    _server: Server,
}

impl BuilderServer {
    /// Verifies and adds `config.packages`, then serves.
    pub fn start(config: BuilderConfig) -> Result<BuilderServer> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            addr,
            keys_dir: config.keys_dir,
            framing: config.framing,
            chunk_size: config.chunk_size.max(1),
            targets: config.targets,
            upload_to_unstable: config.upload_to_unstable,
            state: Mutex::new(State {
                packages: Vec::new(),
                faults: config.faults,
                token: config.token,
                require_token: config.require_token,
                next_id: 0,
            }),
            log: Mutex::new(Log::default()),
        });
        for (path, channels) in &config.packages {
            let channels: Vec<&str> = channels.iter().map(String::as_str).collect();
            shared.add(path, &channels)?;
        }
        let s = shared.clone();
        let server = Server::spawn(listener, "fake-builder", move |conn| {
            let _ = s.serve(conn);
        })?;
        Ok(BuilderServer {
            addr,
            shared,
            _server: server,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`: the Builder URL to give hab (`HAB_BLDR_URL`), which adds
    /// `/v1` itself.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT/v1`, the API root.
    pub fn api_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Publishes a signed hart (verified with the keys directory; its IDENT, TARGET, deps
    /// and checksum read from it) in `channels` (plus `unstable`, see
    /// [`BuilderConfig::upload_to_unstable`]). Adding a package that is already there adds
    /// the channels (a promotion); the same ident and target with other bytes is refused,
    /// as Builder refuses a re-upload.
    pub fn add(&self, path: impl AsRef<Path>, channels: &[&str]) -> Result<Published> {
        self.shared.add(path.as_ref(), channels)
    }

    /// Puts every target of `ident` (fully qualified) in `channel`; false if none is there.
    pub fn promote(&self, ident: &PackageIdent, channel: &str) -> bool {
        let mut st = self.shared.state();
        let mut found = false;
        for p in st.packages.iter_mut().filter(|p| p.ident == *ident) {
            p.channels.insert(channel.to_owned());
            found = true;
        }
        found
    }

    /// Takes every target of `ident` out of `channel`; false if it was in none.
    pub fn demote(&self, ident: &PackageIdent, channel: &str) -> bool {
        let mut st = self.shared.state();
        let mut found = false;
        for p in st.packages.iter_mut().filter(|p| p.ident == *ident) {
            found |= p.channels.remove(channel);
        }
        found
    }

    /// Every package served, in the order added.
    pub fn published(&self) -> Vec<Published> {
        self.shared
            .state()
            .packages
            .iter()
            .map(Package::published)
            .collect()
    }

    /// Replaces the faults.
    pub fn set_faults(&self, faults: BuilderFaults) {
        self.shared.state().faults = faults;
    }

    /// The faults still to be injected.
    pub fn faults(&self) -> BuilderFaults {
        self.shared.state().faults.clone()
    }

    /// Changes the valid token (`None`: none is valid; a revoked token).
    pub fn set_token(&self, token: Option<String>) {
        self.shared.state().token = token;
    }

    pub fn set_require_token(&self, require: bool) {
        self.shared.state().require_token = require;
    }

    /// Every request so far, in the order they were answered (an entry is written before
    /// its body goes out, so a client that has its answer finds it here).
    pub fn log(&self) -> Vec<BuilderRequest> {
        self.shared.log().entries.clone()
    }

    pub fn clear_log(&self) {
        self.shared.log().entries.clear();
    }

    /// Requests whose path contains `path_part`.
    pub fn count(&self, path_part: &str) -> usize {
        self.shared
            .log()
            .entries
            .iter()
            .filter(|r| r.path.contains(path_part))
            .count()
    }

    /// Route B answers with status 200, per ident (`o/n/v/r`).
    pub fn downloads(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for r in &self.shared.log().entries {
            if r.route == RouteKind::Download
                && r.status == 200
                && let Some(ident) = &r.ident
            {
                *out.entry(ident.clone()).or_insert(0) += 1;
            }
        }
        out
    }

    /// The Route A requests, whatever their answer.
    pub fn lookups(&self) -> Vec<BuilderRequest> {
        self.shared
            .log()
            .entries
            .iter()
            .filter(|r| r.route == RouteKind::Lookup)
            .cloned()
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// State.

struct Package {
    ident: PackageIdent,
    target: String,
    path: PathBuf,
    checksum: String,
    channels: BTreeSet<String>,
    /// The JSON of Route A without `channels` (which change).
    record: Map<String, Value>,
}

impl Package {
    fn file_name(&self) -> String {
        format!(
            "{}-{}-{}-{}-{}.hart",
            self.ident.origin,
            self.ident.name,
            self.ident.version.as_deref().unwrap_or_default(),
            self.ident.release.as_deref().unwrap_or_default(),
            self.target
        )
    }

    fn published(&self) -> Published {
        Published {
            ident: self.ident.clone(),
            target: self.target.clone(),
            checksum: self.checksum.clone(),
            channels: self.channels.iter().cloned().collect(),
            path: self.path.clone(),
            file_name: self.file_name(),
        }
    }

    /// The package's four ident parts (`ident_array`).
    fn parts(&self) -> [&str; 4] {
        [
            &self.ident.origin,
            &self.ident.name,
            self.ident.version.as_deref().unwrap_or_default(),
            self.ident.release.as_deref().unwrap_or_default(),
        ]
    }

    fn json(&self) -> Value {
        let mut m = self.record.clone();
        m.insert("channels".into(), json!(self.channels));
        Value::Object(m)
    }
}

struct State {
    packages: Vec<Package>,
    faults: BuilderFaults,
    token: Option<String>,
    require_token: bool,
    next_id: u64,
}

#[derive(Default)]
struct Log {
    entries: Vec<BuilderRequest>,
    next_seq: u64,
}

struct Shared {
    addr: SocketAddr,
    keys_dir: PathBuf,
    framing: Framing,
    chunk_size: usize,
    targets: Vec<String>,
    upload_to_unstable: bool,
    state: Mutex<State>,
    log: Mutex<Log>,
}

fn ident_json(id: &PackageIdent) -> Value {
    json!({
        "origin": id.origin,
        "name": id.name,
        "version": id.version,
        "release": id.release,
    })
}

/// builder-db's timestamp form, from a 14-digit release stamp (the fake has no upload time
/// that stays the same from run to run).
fn release_time(release: &str) -> Value {
    let b = release.as_bytes();
    if b.len() != 14 || !b.iter().all(u8::is_ascii_digit) {
        return Value::Null;
    }
    let r = release;
    Value::String(format!(
        "{}-{}-{}T{}:{}:{}.000000",
        &r[0..4],
        &r[4..6],
        &r[6..8],
        &r[8..10],
        &r[10..12],
        &r[12..14]
    ))
}

/// The JSON of Route A (§3) for a package, without `channels`.
fn package_record(id: u64, meta: &PackageMetadata, checksum: &str) -> Map<String, Value> {
    let ident = &meta.ident;
    let idents = |v: &[PackageIdent]| Value::Array(v.iter().map(ident_json).collect());
    let manifest = meta.file("MANIFEST").unwrap_or_default();
    let build_tdeps: Vec<PackageIdent> = meta
        .file("BUILD_TDEPS")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| PackageIdent::parse_fq(l.trim()).ok())
        .collect();
    let exposes: Vec<u32> = meta.exposes.iter().filter_map(|p| p.parse().ok()).collect();
    let package_type = match meta.file("PACKAGE_TYPE") {
        Some(t) if t.eq_ignore_ascii_case("native") => "Native",
        _ => "Standard",
    };
    let is_a_service = ["pkg_exposes", "pkg_binds", "pkg_exports"]
        .iter()
        .any(|k| manifest.contains(k));
    let created = release_time(ident.release.as_deref().unwrap_or_default());
    let mut m = Map::new();
    m.insert("id".into(), json!(id.to_string()));
    m.insert("owner_id".into(), json!("1"));
    m.insert("name".into(), json!(ident.name));
    m.insert("ident".into(), ident_json(ident));
    m.insert(
        "ident_array".into(),
        json!([ident.origin, ident.name, ident.version, ident.release]),
    );
    m.insert("checksum".into(), json!(checksum));
    m.insert("manifest".into(), json!(manifest));
    m.insert(
        "config".into(),
        json!(meta.file("default.toml").unwrap_or_default()),
    );
    m.insert("target".into(), json!(meta.target.as_str()));
    m.insert("deps".into(), idents(&meta.deps));
    m.insert("tdeps".into(), idents(&meta.tdeps));
    m.insert("build_deps".into(), idents(&meta.build_deps));
    m.insert("build_tdeps".into(), idents(&build_tdeps));
    m.insert("exposes".into(), json!(exposes));
    m.insert("visibility".into(), json!("public"));
    m.insert("created_at".into(), created.clone());
    m.insert("updated_at".into(), created);
    m.insert("origin".into(), json!(ident.origin));
    m.insert("package_type".into(), json!(package_type));
    m.insert("is_a_service".into(), json!(is_a_service));
    m
}

// ---------------------------------------------------------------------------------------
// Builder's "latest" (§3).

/// A version as Builder's view splits it: `([\d\.]*\d+)(.+)?`.
#[derive(Debug, PartialEq, Eq)]
struct SqlVersion {
    /// The dotted pieces, leading zeros removed (they compare as `numeric`).
    numeric: Vec<String>,
    /// The rest of the version, leading `-` included.
    suffix: Option<String>,
}

/// Why a version has no place in the order.
#[derive(Debug, PartialEq, Eq)]
enum SqlVersionError {
    /// No digit: the regex finds nothing, the view has no row.
    NoRow,
    /// An empty piece (`1..2`, `.5`): the `::numeric[]` cast fails, and the query with it.
    Cast,
}

fn sql_version(v: &str) -> Result<SqlVersion, SqlVersionError> {
    let b = v.as_bytes();
    let num = |c: u8| c.is_ascii_digit() || c == b'.';
    // The leftmost match: the first run of digits and dots that holds a digit, cut after
    // its last digit.
    let mut i = 0;
    while i < b.len() {
        if !num(b[i]) {
            i += 1;
            continue;
        }
        let mut end = i;
        while end < b.len() && num(b[end]) {
            end += 1;
        }
        if let Some(last) = b[i..end].iter().rposition(u8::is_ascii_digit) {
            let stop = i + last + 1;
            let numeric = v[i..stop]
                .split('.')
                .map(|p| {
                    if p.is_empty() {
                        Err(SqlVersionError::Cast)
                    } else {
                        let t = p.trim_start_matches('0');
                        Ok(if t.is_empty() { "0" } else { t }.to_owned())
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            let rest = &v[stop..];
            return Ok(SqlVersion {
                numeric,
                suffix: (!rest.is_empty()).then(|| rest.to_owned()),
            });
        }
        i = end;
    }
    Err(SqlVersionError::NoRow)
}

/// PostgreSQL's `numeric[]` order: piece by piece, a shorter equal prefix first.
fn cmp_numeric(a: &[String], b: &[String]) -> std::cmp::Ordering {
    for (x, y) in a.iter().zip(b) {
        let o = x.len().cmp(&y.len()).then_with(|| x.cmp(y));
        if o.is_ne() {
            return o;
        }
    }
    a.len().cmp(&b.len())
}

/// Ascending order of Builder's `ORDER BY … DESC`: the greatest is "latest".
fn cmp_sql(a: (&SqlVersion, &str), b: (&SqlVersion, &str)) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    cmp_numeric(&a.0.numeric, &b.0.numeric)
        .then_with(|| match (&a.0.suffix, &b.0.suffix) {
            // `DESC` lists NULL first: no suffix is the greatest.
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(x), Some(y)) => x.as_bytes().cmp(y.as_bytes()),
        })
        .then_with(|| a.1.cmp(b.1))
}

// ---------------------------------------------------------------------------------------
// Answers.

/// An answer and how it goes out.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    chunked: bool,
    /// A `Content-Length` other than the body's length.
    announced: Option<u64>,
    /// Close the connection after this many body bytes, without finishing the answer.
    cut_after: Option<usize>,
    /// The body goes out in pieces of this size (whole when `None`; chunks when chunked)…
    piece: Option<usize>,
    /// …with this pause between them.
    pause: Duration,
    /// Close the connection after the answer.
    close: bool,
    ident: Option<String>,
    faults: Vec<&'static str>,
}

impl Answer {
    /// Builder's error answer: a status and an empty body.
    fn empty(status: u16) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            chunked: false,
            announced: None,
            cut_after: None,
            piece: None,
            pause: Duration::ZERO,
            close: false,
            ident: None,
            faults: Vec::new(),
        }
    }

    fn header(mut self, name: &str, value: impl Into<String>) -> Answer {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    fn body(mut self, body: Vec<u8>) -> Answer {
        self.body = body;
        self
    }

    fn json(self, value: &Value) -> Answer {
        self.header("content-type", "application/json")
            .header("cache-control", "private, no-cache, no-store")
            .body(value.to_string().into_bytes())
    }
}

/// Writes the answer; the body bytes sent go to `sent` as they go out.
fn send(w: &mut impl Write, a: &Answer, close: bool, sent: &mut u64) -> io::Result<()> {
    let mut out = format!("HTTP/1.1 {} {}\r\n", a.status, reason(a.status));
    for (k, v) in &a.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if a.chunked {
        out.push_str("transfer-encoding: chunked\r\n");
    } else {
        let len = a.announced.unwrap_or(a.body.len() as u64);
        out.push_str(&format!("content-length: {len}\r\n"));
    }
    if close {
        out.push_str("connection: close\r\n");
    }
    out.push_str("\r\n");
    w.write_all(out.as_bytes())?;
    let end = a.cut_after.unwrap_or(a.body.len()).min(a.body.len());
    let piece = a.piece.unwrap_or(a.body.len()).max(1);
    // What lies beyond an announced length goes out in writes of its own, so `sent` tells
    // whether the answer proper went out whole when a client hangs up after it.
    let split = a.announced.map_or(end, |n| (n as usize).min(end));
    let pieces = a.body[..split]
        .chunks(piece)
        .chain(a.body[split..end].chunks(piece));
    for (i, chunk) in pieces.enumerate() {
        if i > 0 && !a.pause.is_zero() {
            std::thread::sleep(a.pause);
        }
        let mut buf = Vec::with_capacity(chunk.len() + 16);
        if a.chunked {
            buf.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            buf.extend_from_slice(chunk);
            buf.extend_from_slice(b"\r\n");
        } else {
            buf.extend_from_slice(chunk);
        }
        w.write_all(&buf)?;
        w.flush()?;
        *sent += chunk.len() as u64;
    }
    if a.chunked && a.cut_after.is_none() {
        w.write_all(b"0\r\n\r\n")?;
    }
    w.flush()
}

/// Where a path points (§3–§6), its pieces percent-decoded.
enum Route {
    Lookup {
        origin: String,
        channel: String,
        name: String,
        version: Option<String>,
        release: Option<String>,
    },
    Download {
        origin: String,
        name: String,
        version: String,
        release: String,
    },
    Key {
        origin: String,
        revision: String,
    },
    KeyList {
        origin: String,
    },
    Channels {
        origin: String,
    },
    Storage {
        file: String,
    },
    Unknown,
}

impl Route {
    fn parse(path: &str) -> Route {
        let segs: Vec<String> = path
            .split('/')
            .skip(1)
            .map(|s| percent_decode(s, false))
            .collect();
        let s: Vec<&str> = segs.iter().map(String::as_str).collect();
        let own = |x: &str| x.to_owned();
        match s.as_slice() {
            ["_storage", file] => Route::Storage { file: own(file) },
            ["v1", "depot", "channels", o, c, "pkgs", n, "latest"] => Route::Lookup {
                origin: own(o),
                channel: own(c),
                name: own(n),
                version: None,
                release: None,
            },
            // Registered before the fully qualified shape, as Builder's routes are: a
            // release named `latest` is the latest of the version.
            ["v1", "depot", "channels", o, c, "pkgs", n, v, "latest"] => Route::Lookup {
                origin: own(o),
                channel: own(c),
                name: own(n),
                version: Some(own(v)),
                release: None,
            },
            ["v1", "depot", "channels", o, c, "pkgs", n, v, r] => Route::Lookup {
                origin: own(o),
                channel: own(c),
                name: own(n),
                version: Some(own(v)),
                release: Some(own(r)),
            },
            ["v1", "depot", "channels", o] => Route::Channels { origin: own(o) },
            ["v1", "depot", "pkgs", o, n, v, r, "download"] => Route::Download {
                origin: own(o),
                name: own(n),
                version: own(v),
                release: own(r),
            },
            ["v1", "depot", "origins", o, "keys", rev] => Route::Key {
                origin: own(o),
                revision: own(rev),
            },
            ["v1", "depot", "origins", o, "keys"] => Route::KeyList { origin: own(o) },
            _ => Route::Unknown,
        }
    }

    fn kind(&self) -> RouteKind {
        match self {
            Route::Lookup { .. } => RouteKind::Lookup,
            Route::Download { .. } => RouteKind::Download,
            Route::Key { .. } => RouteKind::Key,
            Route::KeyList { .. } => RouteKind::KeyList,
            Route::Channels { .. } => RouteKind::Channels,
            Route::Storage { .. } => RouteKind::Storage,
            Route::Unknown => RouteKind::Unknown,
        }
    }
}

/// Builder's fallback when `?target=` is absent: `(\w+-\w+)` in the User-Agent's
/// `(<target>; <kernel>)`, else `x86_64-linux`.
fn user_agent_target(head: &Head) -> String {
    head.header("user-agent")
        .and_then(|ua| {
            let inner = ua.split_once('(')?.1;
            word_dash_word(inner.split([';', ')']).next()?)
        })
        .unwrap_or_else(|| "x86_64-linux".to_owned())
}

/// The leftmost match of the regex `\w+-\w+`.
fn word_dash_word(s: &str) -> Option<String> {
    let word = |c: char| c.is_alphanumeric() || c == '_';
    let chars: Vec<(usize, char)> = s.char_indices().collect();
    let mut i = 0;
    while i < chars.len() {
        if !word(chars[i].1) {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && word(chars[i].1) {
            i += 1;
        }
        if i + 1 < chars.len() && chars[i].1 == '-' && word(chars[i + 1].1) {
            let mut end = i + 1;
            while end < chars.len() && word(chars[end].1) {
                end += 1;
            }
            let stop = chars.get(end).map_or(s.len(), |c| c.0);
            return Some(s[chars[start].0..stop].to_owned());
        }
    }
    None
}

/// Builder's middleware (§11.5): exactly two whitespace-separated parts, `Bearer <token>`.
fn token_ok(header: &str, token: Option<&str>) -> bool {
    let mut parts = header.split_whitespace();
    match (parts.next(), parts.next(), parts.next()) {
        (Some("Bearer"), Some(t), None) => token == Some(t),
        _ => false,
    }
}

fn take(count: &mut usize) -> bool {
    if *count > 0 {
        *count -= 1;
        true
    } else {
        false
    }
}

/// Spoils Route A's JSON as [`LookupBody`] says (not [`LookupBody::NotJson`], which is no
/// JSON at all).
fn bad_record(m: &mut Map<String, Value>, bad: &LookupBody) {
    match bad {
        LookupBody::MissingChecksum => {
            m.remove("checksum");
        }
        LookupBody::NoRelease => {
            if let Some(Value::Object(ident)) = m.get_mut("ident") {
                ident.remove("release");
            }
        }
        LookupBody::OtherIdent(other) => {
            let parts: Vec<&str> = other.split('/').collect();
            if let [o, n, v, r] = parts.as_slice() {
                m.insert(
                    "ident".into(),
                    json!({"origin": o, "name": n, "version": v, "release": r}),
                );
                m.insert("ident_array".into(), json!(parts));
                m.insert("origin".into(), json!(o));
                m.insert("name".into(), json!(n));
            }
        }
        LookupBody::Huge(n) => {
            m.insert("manifest".into(), json!("x".repeat(*n)));
        }
        LookupBody::NotJson => {}
    }
}

/// Where a hart's payload starts: after the empty line that ends its header.
fn payload_start(hart: &[u8]) -> usize {
    hart.windows(2)
        .position(|w| w == b"\n\n")
        .map_or(0, |p| p + 2)
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn log(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn add(&self, path: &Path, channels: &[&str]) -> Result<Published> {
        let keys = KeyDirs::new(vec![self.keys_dir.clone()]);
        let verified = Hart::open(path)?.verify(&keys)?;
        let meta = verified.metadata(DecodeOptions::default())?;
        if !meta.ident.fully_qualified() {
            bail!(
                "{}: IDENT {} is not fully qualified",
                path.display(),
                meta.ident
            );
        }
        let checksum = verified.checksum().to_owned();
        let target = meta.target.as_str().to_owned();
        let mut wanted: BTreeSet<String> = channels.iter().map(|c| (*c).to_owned()).collect();
        if self.upload_to_unstable {
            wanted.insert("unstable".to_owned());
        }
        let mut st = self.state();
        if let Some(p) = st
            .packages
            .iter_mut()
            .find(|p| p.ident == meta.ident && p.target == target)
        {
            if p.checksum != checksum {
                bail!(
                    "{}: {} for {target} is already published with checksum {} (Builder answers a re-upload 409 Conflict)",
                    path.display(),
                    meta.ident,
                    p.checksum
                );
            }
            p.channels.extend(wanted);
            return Ok(p.published());
        }
        st.next_id += 1;
        // Builder's ids are large i64s; any stable number does.
        let id = 1_000_000_000_000_000 + st.next_id;
        let package = Package {
            record: package_record(id, &meta, &checksum),
            ident: meta.ident,
            target,
            path: path.to_owned(),
            checksum,
            channels: wanted,
        };
        let published = package.published();
        st.packages.push(package);
        Ok(published)
    }

    /// Logs a request before its body goes out; returns the entry's number for [`Shared::amend`].
    fn record(&self, head: &Head, arrived: Instant, route: RouteKind, a: &Answer) -> u64 {
        let mut log = self.log();
        log.next_seq += 1;
        let seq = log.next_seq;
        let planned = a.cut_after.unwrap_or(a.body.len()).min(a.body.len()) as u64;
        log.entries.push(BuilderRequest {
            method: head.method.clone(),
            path: head.path.clone(),
            query: head.query.clone(),
            route,
            ident: a.ident.clone(),
            status: if a.cut_after.is_some() { 0 } else { a.status },
            authorization: head.header("authorization").is_some(),
            headers: head.headers.clone(),
            body_bytes: planned,
            arrived,
            faults: a.faults.clone(),
            seq,
        });
        seq
    }

    /// The answer did not go out whole (the client went away).
    fn amend(&self, seq: u64, sent: u64) {
        let mut log = self.log();
        if let Some(e) = log.entries.iter_mut().rev().find(|e| e.seq == seq) {
            e.status = 0;
            e.body_bytes = sent;
        }
    }

    /// One connection: requests until the client closes it, asks to close, a fault cuts it,
    /// or a read stalls for a minute.
    fn serve(&self, conn: TcpStream) -> io::Result<()> {
        conn.set_read_timeout(Some(Duration::from_secs(60)))?;
        let _ = conn.set_nodelay(true);
        let mut reader = BufReader::new(conn.try_clone()?);
        let mut writer = conn;
        while let Some(head) = read_head(&mut reader)? {
            let arrived = Instant::now();
            // Builder's routes are GETs; a body, if any, is read and ignored.
            if read_body(&mut reader, &head).is_err() {
                let _ = writer.shutdown(Shutdown::Both);
                return Ok(());
            }
            let route = Route::parse(&head.path);
            let answer = self.handle(&head, &route);
            let close = head.wants_close() || answer.close || answer.cut_after.is_some();
            let seq = self.record(&head, arrived, route.kind(), &answer);
            let mut sent = 0;
            let result = send(&mut writer, &answer, close, &mut sent);
            // Bytes beyond an announced length are no part of the answer: a client that
            // hangs up before them has had the whole of it.
            let whole = result.is_ok() || answer.announced.is_some_and(|n| sent >= n);
            if !whole {
                self.amend(seq, sent);
            }
            if close || result.is_err() {
                let _ = writer.shutdown(Shutdown::Both);
                return Ok(());
            }
        }
        Ok(())
    }

    fn handle(&self, head: &Head, route: &Route) -> Answer {
        if head.method != "GET" {
            return Answer::empty(405);
        }
        // The proxy's faults first: they hit before Builder sees the request.
        {
            let mut st = self.state();
            let f = &mut st.faults;
            match route {
                Route::Lookup { .. } if take(&mut f.lookup_errors) => {
                    let mut a = Answer::empty(f.lookup_error_status);
                    a.faults.push("lookup_errors");
                    return a;
                }
                Route::Download { .. } if take(&mut f.download_errors) => {
                    let mut a = Answer::empty(f.download_error_status);
                    a.faults.push("download_errors");
                    return a;
                }
                _ => {}
            }
        }
        if !matches!(route, Route::Storage { .. }) {
            let st = self.state();
            match head.header("authorization") {
                Some(v) if !token_ok(v, st.token.as_deref()) => return Answer::empty(401),
                None if st.require_token
                    && matches!(route, Route::Lookup { .. } | Route::Download { .. }) =>
                {
                    return Answer::empty(401);
                }
                _ => {}
            }
        }
        match route {
            Route::Lookup {
                origin,
                channel,
                name,
                version,
                release,
            } => self.lookup(
                head,
                origin,
                channel,
                name,
                version.as_deref(),
                release.as_deref(),
            ),
            Route::Download {
                origin,
                name,
                version,
                release,
            } => {
                let ident = PackageIdent {
                    origin: origin.clone(),
                    name: name.clone(),
                    version: Some(version.clone()),
                    release: Some(release.clone()),
                };
                let mut a = self.download(head, &ident);
                a.ident = Some(ident.to_string());
                a
            }
            Route::Key { origin, revision } => self.key(origin, revision),
            Route::KeyList { origin } => self.key_list(origin),
            Route::Channels { origin } => self.channels(origin),
            Route::Storage { file } => self.storage(file),
            Route::Unknown => Answer::empty(404),
        }
    }

    /// Route A (§3).
    fn lookup(
        &self,
        head: &Head,
        origin: &str,
        channel: &str,
        name: &str,
        version: Option<&str>,
        release: Option<&str>,
    ) -> Answer {
        let target = head
            .param("target")
            .unwrap_or_else(|| user_agent_target(head));
        if PackageTarget::parse(&target).is_err() {
            return Answer::empty(500);
        }
        let mut st = self.state();
        let mut asked = vec![origin, name];
        asked.extend(version);
        asked.extend(release);
        let mut best: Option<(SqlVersion, &Package)> = None;
        for p in &st.packages {
            let parts = p.parts();
            if p.ident.origin != origin
                || p.ident.name != name
                || p.target != target
                || !p.channels.contains(channel)
                || !asked.iter().all(|a| parts.contains(a))
            {
                continue;
            }
            let v = match sql_version(parts[2]) {
                Ok(v) => v,
                Err(SqlVersionError::NoRow) => continue,
                Err(SqlVersionError::Cast) => return Answer::empty(500),
            };
            let better = best
                .as_ref()
                .is_none_or(|(bv, bp)| cmp_sql((&v, parts[3]), (bv, bp.parts()[3])).is_gt());
            if better {
                best = Some((v, p));
            }
        }
        let Some((_, p)) = best else {
            return Answer::empty(404);
        };
        let (mut json, ident) = (p.json(), p.ident.to_string());
        let f = &mut st.faults;
        if !take(&mut f.bad_lookups) {
            let mut a = Answer::empty(200).json(&json);
            a.ident = Some(ident);
            return a;
        }
        let mut a = match &f.bad_lookup {
            LookupBody::NotJson => Answer::empty(200)
                .header("content-type", "text/html")
                .body(b"<html><body><h1>Sign in to continue</h1></body></html>\n".to_vec()),
            bad => {
                if let Value::Object(m) = &mut json {
                    bad_record(m, bad);
                }
                Answer::empty(200).json(&json)
            }
        };
        a.ident = Some(ident);
        a.faults.push("bad_lookups");
        a
    }

    /// Route B (§4), with the download faults.
    fn download(&self, head: &Head, ident: &PackageIdent) -> Answer {
        let target = head
            .param("target")
            .unwrap_or_else(|| user_agent_target(head));
        if PackageTarget::parse(&target).is_err() || !self.targets.contains(&target) {
            return Answer::empty(422).body(format!("Invalid package target '{target}'").into());
        }
        let (path, file) = {
            let st = self.state();
            let Some(p) = st
                .packages
                .iter()
                .find(|p| p.ident == *ident && p.target == target)
            else {
                return Answer::empty(404);
            };
            (p.path.clone(), p.file_name())
        };
        // Read now: an artifact gone from storage is a 404, as in Builder.
        let Ok(mut bytes) = std::fs::read(&path) else {
            return Answer::empty(404);
        };
        let mut st = self.state();
        let f = &mut st.faults;
        if take(&mut f.redirect_downloads) {
            let port = self.addr.port();
            let location = match &f.redirect_to {
                RedirectTo::OtherHost => format!(
                    "http://localhost:{port}{}{}{}",
                    head.path,
                    if head.query.is_empty() { "" } else { "?" },
                    head.query
                ),
                RedirectTo::Storage => format!("http://localhost:{port}/_storage/{file}"),
                RedirectTo::Url(u) => u.clone(),
            };
            let mut a = Answer::empty(302).header("location", location);
            a.faults.push("redirect_downloads");
            return a;
        }
        let mut swapped = false;
        if let Some((asked, served)) = &f.swap_download
            && *asked == ident.to_string()
            && take(&mut f.swapped_downloads)
        {
            let Ok(other) = std::fs::read(served) else {
                return Answer::empty(404);
            };
            bytes = other;
            swapped = true;
        }
        let mut a = Answer::empty(200)
            .header(
                "content-disposition",
                format!("attachment; filename=\"{file}\""),
            )
            .header("content-type", "application/octet-stream")
            .header("cache-control", "public, max-age=31536000");
        if take(&mut f.missing_filename) {
            a.faults.push("missing_filename");
        } else if take(&mut f.hostile_filename) {
            a = a.header(
                "x-filename",
                f.hostile_filename_value.replace("{file}", &file),
            );
            a.faults.push("hostile_filename");
        } else {
            a = a.header("x-filename", file);
        }
        if swapped {
            a.faults.push("swapped_downloads");
        }
        if take(&mut f.corrupt_downloads) {
            let start = payload_start(&bytes);
            let at = start + (bytes.len() - start) / 2;
            if let Some(b) = bytes.get_mut(at) {
                *b ^= 0xff;
            }
            a.faults.push("corrupt_downloads");
        }
        let len = bytes.len() as u64;
        a.chunked = self.framing == Framing::Chunked;
        if take(&mut f.overlong_downloads) {
            a.chunked = false;
            a.close = true;
            match f.overlong {
                Overlong::TrailingJunk(n) => {
                    bytes.extend(std::iter::repeat_n(b'x', n as usize));
                    a.announced = Some(len);
                }
                Overlong::Understated(n) => a.announced = Some(len.saturating_sub(n)),
            }
            a.faults.push("overlong_downloads");
        }
        if take(&mut f.cut_downloads) {
            a.cut_after = Some(bytes.len() / 2);
            a.faults.push("cut_downloads");
        }
        a.piece = Some(self.chunk_size);
        if take(&mut f.slow_downloads) {
            a.piece = Some(f.slow_chunk);
            a.pause = f.slow_delay;
            a.faults.push("slow_downloads");
        }
        a.body = bytes;
        a
    }

    /// The public key files of `origin` in the keys directory, by revision.
    fn origin_keys(&self, origin: &str) -> BTreeMap<String, PathBuf> {
        let mut out = BTreeMap::new();
        let Ok(dir) = std::fs::read_dir(&self.keys_dir) else {
            return out;
        };
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(".pub") else {
                continue;
            };
            if let Ok(n) = hart::NamedRevision::parse(stem)
                && n.name == origin
            {
                out.insert(n.revision, e.path());
            }
        }
        out
    }

    /// Route C (§5): no auth, Builder's key text.
    fn key(&self, origin: &str, revision: &str) -> Answer {
        let keys = self.origin_keys(origin);
        let found = if revision == "latest" {
            keys.iter().next_back()
        } else {
            keys.get_key_value(revision)
        };
        let Some((rev, path)) = found else {
            return Answer::empty(404);
        };
        let Ok(key) = PublicKey::from_file(path) else {
            return Answer::empty(404);
        };
        let file = format!("{origin}-{rev}.pub");
        let mut text = key.to_file_text();
        let mut faults = Vec::new();
        {
            let mut st = self.state();
            let f = &mut st.faults;
            if take(&mut f.bad_keys) {
                text = match &f.bad_key {
                    BadKey::Garbage => GARBAGE_KEY.to_owned(),
                    BadKey::OtherName(name) => {
                        text.replacen(&format!("\n{}\n", key.name), &format!("\n{name}\n"), 1)
                    }
                    BadKey::OtherKey => match SecretKey::generate(origin) {
                        Ok(other) => {
                            let mut other = other.public();
                            other.name = key.name.clone();
                            other.to_file_text()
                        }
                        Err(_) => return Answer::empty(500),
                    },
                };
                faults.push("bad_keys");
            }
        }
        let mut a = Answer::empty(200)
            .header(
                "content-disposition",
                format!("attachment; filename*=ISO-8859-1''{file}"),
            )
            .header("x-filename", file)
            .header("cache-control", "private, no-cache, no-store")
            .body(text.into_bytes());
        a.faults = faults;
        a
    }

    /// The origin's keys, as `hab origin key download <origin>` lists them (§5).
    fn key_list(&self, origin: &str) -> Answer {
        let keys = self.origin_keys(origin);
        if keys.is_empty() {
            return Answer::empty(404);
        }
        let list: Vec<Value> = keys
            .keys()
            .map(|rev| {
                json!({
                    "origin": origin,
                    "revision": rev,
                    "location": format!("/origins/{origin}/keys/{rev}"),
                })
            })
            .collect();
        Answer::empty(200).json(&Value::Array(list))
    }

    /// Route D (§6): `stable` and `unstable` (made with every origin) and the channels the
    /// origin's packages are in, by name.
    fn channels(&self, origin: &str) -> Answer {
        let st = self.state();
        let mut names: BTreeSet<&str> = BTreeSet::new();
        for p in st.packages.iter().filter(|p| p.ident.origin == origin) {
            names.extend(p.channels.iter().map(String::as_str));
        }
        if names.is_empty() && self.origin_keys(origin).is_empty() {
            return Answer::empty(404);
        }
        names.extend(["stable", "unstable"]);
        let list: Vec<Value> = names.iter().map(|n| json!({ "name": n })).collect();
        Answer::empty(200).json(&Value::Array(list))
    }

    /// The storage URL of [`RedirectTo::Storage`]: the bytes, no `x-filename`.
    fn storage(&self, file: &str) -> Answer {
        let path = {
            let st = self.state();
            let Some(p) = st.packages.iter().find(|p| p.file_name() == file) else {
                return Answer::empty(404);
            };
            p.path.clone()
        };
        match std::fs::read(&path) {
            Ok(bytes) => Answer::empty(200)
                .header("content-type", "application/octet-stream")
                .body(bytes),
            Err(_) => Answer::empty(404),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use hart::PackOptions;

    use super::*;
    use crate::{PackageSpec, write_package_dir};

    const T: &str = "x86_64-linux";

    /// Signed harts of any idents, with every origin's key pair in `keys/`.
    struct Fixture {
        tmp: tempfile::TempDir,
        keys: BTreeMap<String, SecretKey>,
    }

    impl Fixture {
        fn new() -> Fixture {
            Fixture {
                tmp: tempfile::tempdir().expect("temp dir"),
                keys: BTreeMap::new(),
            }
        }

        fn keys_dir(&self) -> PathBuf {
            self.tmp.path().join("keys")
        }

        fn key(&mut self, origin: &str) -> &SecretKey {
            let dir = self.keys_dir();
            self.keys.entry(origin.to_owned()).or_insert_with(|| {
                let key = SecretKey::generate(origin).expect("generate a key");
                key.write_pair(&dir).expect("write the key pair");
                key
            })
        }

        /// Packs `ident` (o/n/v/r) depending on `deps` into `artifacts/`.
        fn pack(&mut self, ident: &str, deps: &[&str]) -> PathBuf {
            self.pack_as(ident, deps, false, 1, "artifacts")
        }

        fn pack_as(
            &mut self,
            ident: &str,
            deps: &[&str],
            service: bool,
            seed: u64,
            out: &str,
        ) -> PathBuf {
            let ident = PackageIdent::parse_fq(ident).expect("a fully qualified ident");
            let deps: Vec<PackageIdent> = deps
                .iter()
                .map(|d| PackageIdent::parse_fq(d).expect("a dep ident"))
                .collect();
            let spec = PackageSpec {
                ident,
                tdeps: deps.clone(),
                deps,
                size: 4096,
                service,
                seed,
            };
            let work = tempfile::tempdir_in(self.tmp.path()).expect("work dir");
            let dir = write_package_dir(work.path(), &spec).expect("package dir");
            let opts = PackOptions {
                level: 1,
                threads: 1,
                block_size: 0,
                mtime: Some(1_700_000_000),
            };
            let out = self.tmp.path().join(out);
            let key = self.key(&spec.ident.origin);
            hart::pack(&dir, key, None, &out, &opts).expect("pack").path
        }

        fn config(&self, packages: &[(&PathBuf, &[&str])]) -> BuilderConfig {
            BuilderConfig {
                packages: packages
                    .iter()
                    .map(|(p, c)| ((*p).clone(), c.iter().map(|c| (*c).to_owned()).collect()))
                    .collect(),
                keys_dir: self.keys_dir(),
                ..BuilderConfig::default()
            }
        }

        fn start(&self, packages: &[(&PathBuf, &[&str])]) -> BuilderServer {
            BuilderServer::start(self.config(packages)).expect("start")
        }
    }

    /// An answer as it came off the wire.
    struct Resp {
        status: u16,
        headers: Vec<(String, String)>,
        /// Everything after the head, framing included.
        raw: Vec<u8>,
    }

    impl Resp {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }

        /// The body as framed (de-chunked, or `Content-Length` bytes), and whether it
        /// arrived whole.
        fn framed(&self) -> (Vec<u8>, bool) {
            if self.header("transfer-encoding") == Some("chunked") {
                let mut out = Vec::new();
                let mut rest = &self.raw[..];
                loop {
                    let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
                        return (out, false);
                    };
                    let size_text = std::str::from_utf8(&rest[..eol]).expect("chunk size");
                    let size = usize::from_str_radix(size_text, 16).expect("hex chunk size");
                    rest = &rest[eol + 2..];
                    if size == 0 {
                        return (out, rest == b"\r\n");
                    }
                    if rest.len() < size + 2 {
                        out.extend_from_slice(&rest[..size.min(rest.len())]);
                        return (out, false);
                    }
                    out.extend_from_slice(&rest[..size]);
                    rest = &rest[size + 2..];
                }
            }
            let len: usize = self
                .header("content-length")
                .expect("Content-Length or chunked")
                .parse()
                .expect("a length");
            let n = len.min(self.raw.len());
            (self.raw[..n].to_vec(), self.raw.len() >= len)
        }

        fn body(&self) -> Vec<u8> {
            let (body, whole) = self.framed();
            assert!(whole, "the body arrived whole");
            body
        }

        fn json(&self) -> Value {
            serde_json::from_slice(&self.body()).expect("JSON")
        }
    }

    /// One `GET` over a fresh connection, as hab sends it (`Connection: close`).
    fn get_as(addr: SocketAddr, host: &str, target: &str, headers: &[(&str, &str)]) -> Resp {
        let mut c = TcpStream::connect(addr).expect("connect");
        let mut req = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        c.write_all(req.as_bytes()).expect("write");
        let mut out = Vec::new();
        // A cut connection may end in a reset: keep what arrived.
        let _ = c.read_to_end(&mut out);
        let split = out.windows(4).position(|w| w == b"\r\n\r\n").expect("head") + 4;
        let head = String::from_utf8_lossy(&out[..split]).into_owned();
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .expect("status");
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        Resp {
            status,
            headers,
            raw: out[split..].to_vec(),
        }
    }

    fn get(b: &BuilderServer, target: &str, headers: &[(&str, &str)]) -> Resp {
        get_as(b.addr(), &b.addr().to_string(), target, headers)
    }

    fn latest(b: &BuilderServer, channel: &str, name_version: &str) -> Resp {
        get(
            b,
            &format!("/v1/depot/channels/core/{channel}/pkgs/{name_version}/latest?target={T}"),
            &[],
        )
    }

    fn ident_of(r: &Resp) -> String {
        let v = r.json();
        let i = &v["ident"];
        format!(
            "{}/{}/{}/{}",
            i["origin"].as_str().expect("origin"),
            i["name"].as_str().expect("name"),
            i["version"].as_str().expect("version"),
            i["release"].as_str().expect("release")
        )
    }

    fn download_path(ident: &str) -> String {
        format!("/v1/depot/pkgs/{ident}/download?target={T}")
    }

    #[test]
    fn sql_order_of_versions() {
        let v = |s: &str| sql_version(s).expect("a version");
        let gt = |a: (&str, &str), b: (&str, &str)| cmp_sql((&v(a.0), a.1), (&v(b.0), b.1)).is_gt();
        let r = "20240101000000";
        let r2 = "20240102000000";
        assert!(gt(("1.10.0", r), ("1.9.0", r)), "numeric, not text");
        assert!(gt(("1.0.0", r), ("1.0", r)), "a longer array is greater");
        assert!(gt(("1.0.0", r), ("1.0.0-rc1", r2)), "no suffix first");
        assert!(gt(("1.0.0-rc9", r), ("1.0.0-rc10", r)), "suffixes as text");
        assert!(gt(("1.0.0", r2), ("1.0.0", r)), "then the release");
        assert!(gt(("01.2", r), ("1.1", r)), "numeric: leading zeros");
        assert_eq!(
            v("v1.2.3-master"),
            SqlVersion {
                numeric: vec!["1".into(), "2".into(), "3".into()],
                suffix: Some("-master".into()),
            }
        );
        assert_eq!(v("1.2.").suffix.as_deref(), Some("."));
        assert_eq!(sql_version("master"), Err(SqlVersionError::NoRow));
        assert_eq!(sql_version("1..2"), Err(SqlVersionError::Cast));
        assert_eq!(
            word_dash_word("x86_64-linux-kernel2").as_deref(),
            Some("x86_64-linux")
        );
        assert_eq!(word_dash_word(" 6.8.0-45-generic"), Some("0-45".into()));
        assert!(token_ok("Bearer  tok", Some("tok")));
        assert!(!token_ok("Bearer tok extra", Some("tok")));
        assert!(!token_ok("bearer tok", Some("tok")));
        assert!(!token_ok("Bearer tok", None));
    }

    #[test]
    fn latest_in_a_channel_follows_builders_order() {
        let mut fx = Fixture::new();
        let a = fx.pack("core/foo/1.2.0/20240101000000", &[]);
        let b = fx.pack("core/foo/1.10.0-rc1/20240301000000", &[]);
        let c = fx.pack("core/foo/1.10.0/20240201000000", &[]);
        let d = fx.pack("core/foo/1.10.0/20240202000000", &[]);
        let e = fx.pack("core/foo/2.0.0/20240401000000", &[]);
        let bar = fx.pack("core/bar/1.0.0/20240101000000", &[]);
        let s: &[&str] = &["stable"];
        let b = fx.start(&[(&a, s), (&b, s), (&c, s), (&d, s), (&e, &[]), (&bar, &[])]);
        let r = latest(&b, "stable", "foo");
        assert_eq!(r.status, 200);
        assert_eq!(ident_of(&r), "core/foo/1.10.0/20240202000000");
        // Every upload is in unstable.
        assert_eq!(
            ident_of(&latest(&b, "unstable", "foo")),
            "core/foo/2.0.0/20240401000000"
        );
        assert_eq!(
            ident_of(&latest(&b, "stable", "foo/1.10.0")),
            "core/foo/1.10.0/20240202000000"
        );
        assert_eq!(
            ident_of(&latest(&b, "stable", "foo/1.10.0-rc1")),
            "core/foo/1.10.0-rc1/20240301000000"
        );
        // Exact versions only; a package only in unstable is absent from stable.
        for (channel, what) in [
            ("stable", "foo/1.10"),
            ("stable", "foo/2.0.0"),
            ("stable", "bar"),
            ("nosuch", "foo"),
            ("stable", "baz"),
        ] {
            let r = latest(&b, channel, what);
            assert_eq!((r.status, r.body()), (404, Vec::new()), "{channel} {what}");
        }
        assert_eq!(latest(&b, "unstable", "bar").status, 200);
        // A new release, then a promotion.
        let f = fx.pack("core/foo/1.10.0/20240501000000", &[]);
        let published = b.add(&f, &["stable"]).expect("add");
        assert_eq!(published.channels, ["stable", "unstable"]);
        assert_eq!(
            ident_of(&latest(&b, "stable", "foo")),
            "core/foo/1.10.0/20240501000000"
        );
        let two = PackageIdent::parse_fq("core/foo/2.0.0/20240401000000").expect("ident");
        assert!(b.promote(&two, "stable"));
        assert_eq!(
            ident_of(&latest(&b, "stable", "foo")),
            "core/foo/2.0.0/20240401000000"
        );
        assert!(b.demote(&two, "stable"));
        assert_eq!(
            ident_of(&latest(&b, "stable", "foo")),
            "core/foo/1.10.0/20240501000000"
        );
        // Adding it again is a promotion; other bytes under a published ident are refused.
        assert_eq!(
            b.add(&f, &["prod"]).expect("again").channels,
            ["prod", "stable", "unstable"]
        );
        let other = fx.pack_as("core/foo/1.10.0/20240501000000", &[], false, 9, "other");
        let err = b.add(&other, &["stable"]).expect_err("a re-upload");
        assert!(err.to_string().contains("409"), "{err}");
        assert_eq!(b.lookups().len(), 13);
        assert_eq!(b.lookups().iter().filter(|r| r.status == 404).count(), 5);
    }

    #[test]
    fn lookup_body_and_headers() {
        let mut fx = Fixture::new();
        let dep = fx.pack("core/glibc/2.22/20160612063629", &[]);
        let app = fx.pack_as(
            "core/app/1.0.0/20240101000000",
            &["core/glibc/2.22/20160612063629"],
            true,
            1,
            "artifacts",
        );
        let b = fx.start(&[(&dep, &["stable"]), (&app, &["stable"])]);
        let r = latest(&b, "stable", "app");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(
            r.header("cache-control"),
            Some("private, no-cache, no-store")
        );
        let v = r.json();
        let glibc = json!({"origin": "core", "name": "glibc", "version": "2.22", "release": "20160612063629"});
        assert_eq!(
            v["ident"],
            json!({"origin": "core", "name": "app", "version": "1.0.0", "release": "20240101000000"})
        );
        assert_eq!(v["deps"], json!([glibc]));
        assert_eq!(v["tdeps"], json!([glibc]));
        assert_eq!(v["exposes"], json!([8080, 8443]));
        assert_eq!(v["config"], json!(""));
        assert!(
            v["manifest"]
                .as_str()
                .expect("manifest")
                .starts_with("# core / app\n")
        );
        assert_eq!(v["target"], json!(T));
        assert_eq!(v["channels"], json!(["stable", "unstable"]));
        assert_eq!(v["origin"], json!("core"));
        assert_eq!(v["name"], json!("app"));
        assert_eq!(v["visibility"], json!("public"));
        assert_eq!(v["package_type"], json!("Standard"));
        assert_eq!(v["created_at"], json!("2024-01-01T00:00:00.000000"));
        assert_eq!(v["build_deps"], json!([]));
        assert_eq!(
            v["ident_array"],
            json!(["core", "app", "1.0.0", "20240101000000"])
        );
        assert!(v["id"].is_string() && v["owner_id"].is_string());
        let bytes = std::fs::read(&app).expect("read the hart");
        assert_eq!(
            v["checksum"],
            json!(hart::artifact::blake2b_hex(&bytes)),
            "BLAKE2b-256 of the whole file"
        );
        // The target: 500 when unknown, from the User-Agent when absent, a filter when known.
        let path = "/v1/depot/channels/core/stable/pkgs/app/latest";
        let r = get(&b, &format!("{path}?target=nosuch"), &[]);
        assert_eq!((r.status, r.body()), (500, Vec::new()));
        let ua = |agent: &str| get(&b, path, &[("User-Agent", agent)]).status;
        assert_eq!(
            ua("hab/2.1.78/20260821213413 (x86_64-linux; 6.8.0-45-generic)"),
            200
        );
        assert_eq!(
            ua("hab/2.1.78/20260821213413 (aarch64-linux; 6.8.0-45-generic)"),
            404
        );
        assert_eq!(ua("hab/2.1.78/20260821213413 (nosuch-os; 6.8.0)"), 500);
        assert_eq!(get(&b, path, &[]).status, 200, "default x86_64-linux");
        assert_eq!(
            get(&b, &format!("{path}?target=aarch64-linux"), &[]).status,
            404
        );
    }

    #[test]
    fn fully_qualified_lookup() {
        let mut fx = Fixture::new();
        let a = fx.pack("core/foo/1.0.0/20240101000000", &[]);
        let c = fx.pack("core/foo/1.0.0/20240102000000", &[]);
        let b = fx.start(&[(&a, &["stable"]), (&c, &[])]);
        let fq = |channel: &str, release: &str| {
            get(
                &b,
                &format!("/v1/depot/channels/core/{channel}/pkgs/foo/1.0.0/{release}?target={T}"),
                &[],
            )
        };
        let r = fq("unstable", "20240101000000");
        assert_eq!(r.status, 200);
        assert_eq!(ident_of(&r), "core/foo/1.0.0/20240101000000");
        assert_eq!(r.json()["channels"], json!(["stable", "unstable"]));
        assert_eq!(
            ident_of(&fq("unstable", "20240102000000")),
            "core/foo/1.0.0/20240102000000"
        );
        assert_eq!(fq("stable", "20240102000000").status, 404);
        assert_eq!(fq("unstable", "20240103000000").status, 404);
        assert_eq!(
            ident_of(&fq("stable", "latest")),
            "core/foo/1.0.0/20240101000000"
        );
    }

    #[test]
    fn download_headers_and_bytes() {
        let mut fx = Fixture::new();
        let a = fx.pack("core/foo/1.0.0/20240101000000", &[]);
        let bytes = std::fs::read(&a).expect("read the hart");
        let file = "core-foo-1.0.0-20240101000000-x86_64-linux.hart";
        // In no channel but unstable, and downloadable all the same.
        let b = fx.start(&[(&a, &[])]);
        let r = get(&b, &download_path("core/foo/1.0.0/20240101000000"), &[]);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-filename"), Some(file));
        assert_eq!(
            r.header("content-disposition"),
            Some(format!("attachment; filename=\"{file}\"").as_str())
        );
        assert_eq!(r.header("content-type"), Some("application/octet-stream"));
        assert_eq!(r.header("cache-control"), Some("public, max-age=31536000"));
        assert_eq!(r.header("transfer-encoding"), Some("chunked"));
        assert_eq!(r.header("content-length"), None);
        assert!(r.body() == bytes, "the bytes of the file");
        // 404 empty, 422 with Builder's body.
        let r = get(&b, &download_path("core/foo/1.0.0/20240101000001"), &[]);
        assert_eq!((r.status, r.body()), (404, Vec::new()));
        for t in ["nosuch", "aarch64-windows"] {
            let r = get(
                &b,
                &format!("/v1/depot/pkgs/core/foo/1.0.0/20240101000000/download?target={t}"),
                &[],
            );
            assert_eq!(r.status, 422);
            assert_eq!(
                r.body(),
                format!("Invalid package target '{t}'").into_bytes()
            );
        }
        // The file gone from storage: 404.
        let gone = fx.pack("core/gone/1.0.0/20240101000000", &[]);
        b.add(&gone, &["stable"]).expect("add");
        std::fs::remove_file(&gone).expect("remove");
        assert_eq!(
            get(&b, &download_path("core/gone/1.0.0/20240101000000"), &[]).status,
            404
        );
        assert_eq!(
            b.downloads(),
            BTreeMap::from([("core/foo/1.0.0/20240101000000".to_owned(), 1)])
        );
        assert_eq!(b.count("/download"), 5);
        let first = &b.log()[0];
        assert_eq!(first.route, RouteKind::Download);
        assert_eq!(first.body_bytes, bytes.len() as u64);
        assert_eq!(first.param("target").as_deref(), Some(T));
        assert!(!first.authorization);
        // With Content-Length instead of chunks.
        let b = BuilderServer::start(BuilderConfig {
            framing: Framing::ContentLength,
            chunk_size: 100,
            ..fx.config(&[(&a, &[])])
        })
        .expect("start");
        let r = get(&b, &download_path("core/foo/1.0.0/20240101000000"), &[]);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("transfer-encoding"), None);
        assert_eq!(
            r.header("content-length"),
            Some(bytes.len().to_string().as_str())
        );
        assert!(r.body() == bytes && r.raw.len() == bytes.len());
    }

    #[test]
    fn key_and_channel_routes() {
        let mut fx = Fixture::new();
        let a = fx.pack("core/foo/1.0.0/20240101000000", &[]);
        let b = fx.start(&[(&a, &["stable", "base"])]);
        let key = fx.key("core").public();
        let rev = key.name.revision.clone();
        let file = format!("core-{rev}.pub");
        for which in [rev.as_str(), "latest"] {
            let r = get(&b, &format!("/v1/depot/origins/core/keys/{which}"), &[]);
            assert_eq!(r.status, 200);
            assert_eq!(r.header("x-filename"), Some(file.as_str()));
            assert_eq!(
                r.header("content-disposition"),
                Some(format!("attachment; filename*=ISO-8859-1''{file}").as_str())
            );
            assert_eq!(
                r.header("cache-control"),
                Some("private, no-cache, no-store")
            );
            assert_eq!(r.body(), key.to_file_text().into_bytes());
            assert!(!r.body().ends_with(b"\n"));
        }
        for missing in [
            "/v1/depot/origins/core/keys/20000101000000",
            "/v1/depot/origins/nosuch/keys/latest",
        ] {
            let r = get(&b, missing, &[]);
            assert_eq!((r.status, r.body()), (404, Vec::new()), "{missing}");
        }
        let r = get(&b, "/v1/depot/origins/core/keys", &[]);
        assert_eq!(
            r.json(),
            json!([{"origin": "core", "revision": rev, "location": format!("/origins/core/keys/{rev}")}])
        );
        let r = get(&b, "/v1/depot/channels/core", &[]);
        assert_eq!(r.status, 200);
        assert_eq!(
            r.json(),
            json!([{"name": "base"}, {"name": "stable"}, {"name": "unstable"}])
        );
        assert_eq!(get(&b, "/v1/depot/channels/nosuch", &[]).status, 404);
        assert_eq!(get(&b, "/v2/depot/channels/core", &[]).status, 404);
    }

    #[test]
    fn bearer_token() {
        let mut fx = Fixture::new();
        let a = fx.pack("core/foo/1.0.0/20240101000000", &[]);
        let b = BuilderServer::start(BuilderConfig {
            token: Some("secret".into()),
            require_token: true,
            ..fx.config(&[(&a, &["stable"])])
        })
        .expect("start");
        let rev = fx.key("core").name.revision.clone();
        let key = format!("/v1/depot/origins/core/keys/{rev}");
        let lookup = format!("/v1/depot/channels/core/stable/pkgs/foo/latest?target={T}");
        let download = download_path("core/foo/1.0.0/20240101000000");
        let good = [("Authorization", "Bearer secret")];
        // The key route needs no token; lookups and downloads do.
        assert_eq!(get(&b, &key, &[]).status, 200);
        assert_eq!(get(&b, "/v1/depot/channels/core", &[]).status, 200);
        assert_eq!(get(&b, &lookup, &[]).status, 401);
        assert_eq!(get(&b, &download, &[]).status, 401);
        assert_eq!(get(&b, &lookup, &good).status, 200);
        assert_eq!(get(&b, &download, &good).status, 200);
        // A wrong token is refused everywhere, the key route included.
        for wrong in [
            "Bearer nope",
            "Bearer secret extra",
            "Basic c2VjcmV0",
            "secret",
        ] {
            for path in [&key, &lookup, &download] {
                let r = get(&b, path, &[("Authorization", wrong)]);
                assert_eq!((r.status, r.body()), (401, Vec::new()), "{wrong} {path}");
            }
        }
        // A revoked token.
        b.set_token(None);
        assert_eq!(get(&b, &lookup, &good).status, 401);
        b.set_require_token(false);
        assert_eq!(get(&b, &lookup, &[]).status, 200);
        let log = b.log();
        assert_eq!(
            log.iter()
                .filter(|r| r.route == RouteKind::Key && r.authorization)
                .count(),
            4
        );
        assert!(log[0].route == RouteKind::Key && !log[0].authorization && log[0].status == 200);
        assert!(log[4].authorization && log[4].header("authorization") == Some("Bearer secret"));
    }

    #[test]
    fn error_status_faults() {
        let mut fx = Fixture::new();
        let a = fx.pack("core/foo/1.0.0/20240101000000", &[]);
        let b = fx.start(&[(&a, &["stable"])]);
        b.set_faults(BuilderFaults {
            lookup_errors: 1,
            lookup_error_status: 502,
            download_errors: 1,
            download_error_status: 503,
            ..BuilderFaults::default()
        });
        let download = download_path("core/foo/1.0.0/20240101000000");
        // Before auth and routing, as a proxy: even a wrong token sees the 5xx.
        let r = get(&b, &download, &[("Authorization", "Bearer wrong")]);
        assert_eq!((r.status, r.body()), (503, Vec::new()));
        assert_eq!(get(&b, &download, &[]).status, 200);
        let r = latest(&b, "stable", "foo");
        assert_eq!((r.status, r.body()), (502, Vec::new()));
        assert_eq!(latest(&b, "stable", "foo").status, 200);
        let f = b.faults();
        assert_eq!((f.lookup_errors, f.download_errors), (0, 0));
        let log = b.log();
        assert_eq!(log[0].faults, ["download_errors"]);
        assert_eq!(log[2].faults, ["lookup_errors"]);
        assert!(log[1].faults.is_empty());
        assert_eq!(b.downloads().values().sum::<usize>(), 1);
    }

    #[test]
    fn cut_download() {
        let mut fx = Fixture::new();
        let a = fx.pack("core/foo/1.0.0/20240101000000", &[]);
        let bytes = std::fs::read(&a).expect("read");
        for framing in [Framing::Chunked, Framing::ContentLength] {
            let b = BuilderServer::start(BuilderConfig {
                framing,
                faults: BuilderFaults {
                    cut_downloads: 1,
                    ..BuilderFaults::default()
                },
                ..fx.config(&[(&a, &[])])
            })
            .expect("start");
            let download = download_path("core/foo/1.0.0/20240101000000");
            let r = get(&b, &download, &[]);
            assert_eq!(r.status, 200);
            let (got, whole) = r.framed();
            assert!(!whole, "{framing:?}: cut");
            assert_eq!(got, bytes[..bytes.len() / 2], "{framing:?}");
            assert!(get(&b, &download, &[]).body() == bytes);
            let log = b.log();
            assert_eq!(
                (log[0].status, log[0].body_bytes),
                (0, bytes.len() as u64 / 2)
            );
            assert_eq!(log[0].faults, ["cut_downloads"]);
            assert_eq!(
                b.downloads().values().sum::<usize>(),
                1,
                "a cut is no download"
            );
        }
    }

    #[test]
    fn slow_download() {
        let mut fx = Fixture::new();
        let a = fx.pack("core/foo/1.0.0/20240101000000", &[]);
        let bytes = std::fs::read(&a).expect("read");
        let b = fx.start(&[(&a, &[])]);
        b.set_faults(BuilderFaults {
            slow_downloads: 1,
            slow_chunk: bytes.len() / 4 + 1,
            slow_delay: Duration::from_millis(100),
            ..BuilderFaults::default()
        });
        let download = download_path("core/foo/1.0.0/20240101000000");
        let t = Instant::now();
        let r = get(&b, &download, &[]);
        assert!(
            t.elapsed() >= Duration::from_millis(300),
            "{:?}",
            t.elapsed()
        );
        assert!(r.body() == bytes);
        let t = Instant::now();
        assert!(get(&b, &download, &[]).body() == bytes);
        assert!(t.elapsed() < Duration::from_millis(300), "only once");
        assert_eq!(b.log()[0].faults, ["slow_downloads"]);
    }

    #[test]
    fn corrupt_download() {
        let mut fx = Fixture::new();
        let a = fx.pack("core/foo/1.0.0/20240101000000", &[]);
        let bytes = std::fs::read(&a).expect("read");
        let b = fx.start(&[(&a, &[])]);
        b.set_faults(BuilderFaults {
            corrupt_downloads: 1,
            ..BuilderFaults::default()
        });
        let download = download_path("core/foo/1.0.0/20240101000000");
        let got = get(&b, &download, &[]).body();
        assert_eq!(got.len(), bytes.len());
        let differ: Vec<usize> = (0..got.len()).filter(|&i| got[i] != bytes[i]).collect();
        assert_eq!(differ.len(), 1);
        assert!(differ[0] >= payload_start(&bytes), "the header is intact");
        // What a client writes to disk opens (the header parses) and fails verification.
        let path = fx.tmp.path().join("corrupt.hart");
        std::fs::write(&path, &got).expect("write");
        let keys = KeyDirs::new(vec![fx.keys_dir()]);
        let opened = Hart::open(&path).expect("the header parses");
        assert!(opened.verify(&keys).is_err());
        assert!(get(&b, &download, &[]).body() == bytes);
    }

    #[test]
    fn filename_faults() {
        let mut fx = Fixture::new();
        let a = fx.pack("core/foo/1.0.0/20240101000000", &[]);
        let file = "core-foo-1.0.0-20240101000000-x86_64-linux.hart";
        let b = fx.start(&[(&a, &[])]);
        let download = download_path("core/foo/1.0.0/20240101000000");
        b.set_faults(BuilderFaults {
            missing_filename: 1,
            hostile_filename: 2,
            ..BuilderFaults::default()
        });
        let r = get(&b, &download, &[]);
        assert_eq!((r.status, r.header("x-filename")), (200, None));
        assert!(r.header("content-disposition").is_some());
        let hostile = format!("../{file}");
        assert_eq!(
            get(&b, &download, &[]).header("x-filename"),
            Some(hostile.as_str())
        );
        b.set_faults(BuilderFaults {
            hostile_filename: 1,
            hostile_filename_value: "sub/{file}".into(),
            ..b.faults()
        });
        let sub = format!("sub/{file}");
        assert_eq!(
            get(&b, &download, &[]).header("x-filename"),
            Some(sub.as_str())
        );
        assert_eq!(get(&b, &download, &[]).header("x-filename"), Some(file));
        let faults: Vec<Vec<&str>> = b.log().iter().map(|r| r.faults.clone()).collect();
        assert_eq!(
            faults,
            [
                vec!["missing_filename"],
                vec!["hostile_filename"],
                vec!["hostile_filename"],
                vec![]
            ]
        );
    }

    #[test]
    fn overlong_bodies() {
        let mut fx = Fixture::new();
        let a = fx.pack("core/foo/1.0.0/20240101000000", &[]);
        let bytes = std::fs::read(&a).expect("read");
        let b = fx.start(&[(&a, &[])]);
        let download = download_path("core/foo/1.0.0/20240101000000");
        b.set_faults(BuilderFaults {
            overlong_downloads: 1,
            overlong: Overlong::Understated(100),
            ..BuilderFaults::default()
        });
        let r = get(&b, &download, &[]);
        let announced = (bytes.len() - 100).to_string();
        assert_eq!(r.header("content-length"), Some(announced.as_str()));
        assert_eq!(r.header("transfer-encoding"), None, "always Content-Length");
        assert!(r.raw == bytes, "the whole hart went out");
        assert!(r.body() == bytes[..bytes.len() - 100]);
        b.set_faults(BuilderFaults {
            overlong_downloads: 1,
            overlong: Overlong::TrailingJunk(10),
            ..BuilderFaults::default()
        });
        let r = get(&b, &download, &[]);
        let announced = bytes.len().to_string();
        assert_eq!(r.header("content-length"), Some(announced.as_str()));
        assert_eq!(r.raw.len(), bytes.len() + 10);
        assert!(r.body() == bytes);
        assert_eq!(
            get(&b, &download, &[]).header("transfer-encoding"),
            Some("chunked")
        );
        assert_eq!(b.log()[1].body_bytes, bytes.len() as u64 + 10);
    }

    #[test]
    fn redirects() {
        let mut fx = Fixture::new();
        let a = fx.pack("core/foo/1.0.0/20240101000000", &[]);
        let bytes = std::fs::read(&a).expect("read");
        let file = "core-foo-1.0.0-20240101000000-x86_64-linux.hart";
        let b = BuilderServer::start(BuilderConfig {
            token: Some("secret".into()),
            ..fx.config(&[(&a, &[])])
        })
        .expect("start");
        let port = b.addr().port();
        let download = download_path("core/foo/1.0.0/20240101000000");
        let auth = [("Authorization", "Bearer secret")];
        let follow = |r: &Resp, headers: &[(&str, &str)]| {
            assert_eq!(r.status, 302);
            let location = r.header("location").expect("Location");
            let prefix = format!("http://localhost:{port}");
            let path = location.strip_prefix(&prefix).expect("another host name");
            get_as(b.addr(), &format!("localhost:{port}"), path, headers)
        };
        b.set_faults(BuilderFaults {
            redirect_downloads: 1,
            ..BuilderFaults::default()
        });
        let r = get(&b, &download, &auth);
        // A client that drops the token on another host still gets the package, as
        // Builder serves it.
        let there = follow(&r, &[]);
        assert_eq!(there.header("x-filename"), Some(file));
        assert!(there.body() == bytes);
        let log = b.log();
        assert_eq!(log[0].faults, ["redirect_downloads"]);
        assert!(log[0].authorization && !log[1].authorization);
        assert_eq!(
            log[1].header("host"),
            Some(format!("localhost:{port}").as_str())
        );
        b.set_faults(BuilderFaults {
            redirect_downloads: 1,
            redirect_to: RedirectTo::Storage,
            ..BuilderFaults::default()
        });
        let there = follow(&get(&b, &download, &auth), &[]);
        assert_eq!((there.status, there.header("x-filename")), (200, None));
        assert!(there.body() == bytes);
        assert_eq!(b.log()[3].route, RouteKind::Storage);
        b.set_faults(BuilderFaults {
            redirect_downloads: 1,
            redirect_to: RedirectTo::Url("https://s3.example/bucket/x".into()),
            ..BuilderFaults::default()
        });
        let r = get(&b, &download, &auth);
        assert_eq!(r.header("location"), Some("https://s3.example/bucket/x"));
        assert_eq!(get(&b, &download, &auth).status, 200, "once");
        // Redirects are for packages that exist.
        b.set_faults(BuilderFaults {
            redirect_downloads: 1,
            ..BuilderFaults::default()
        });
        assert_eq!(
            get(&b, &download_path("core/foo/9/20240101000000"), &auth).status,
            404
        );
        assert_eq!(b.faults().redirect_downloads, 1);
    }

    #[test]
    fn bad_lookup_bodies() {
        let mut fx = Fixture::new();
        let a = fx.pack("core/foo/1.0.0/20240101000000", &[]);
        let b = fx.start(&[(&a, &["stable"])]);
        let good = latest(&b, "stable", "foo").json();
        let bad = |kind: LookupBody| {
            b.set_faults(BuilderFaults {
                bad_lookups: 1,
                bad_lookup: kind,
                ..BuilderFaults::default()
            });
            // A lookup that finds nothing is not counted.
            assert_eq!(latest(&b, "stable", "nosuch").status, 404);
            let r = latest(&b, "stable", "foo");
            assert_eq!(r.status, 200);
            assert_eq!(b.faults().bad_lookups, 0);
            assert_eq!(latest(&b, "stable", "foo").json(), good, "once");
            r
        };
        let v = bad(LookupBody::MissingChecksum).json();
        assert!(v.get("checksum").is_none());
        assert_eq!(v["ident"], good["ident"]);
        assert_eq!(v["manifest"], good["manifest"]);
        let v = bad(LookupBody::NoRelease).json();
        assert_eq!(
            v["ident"],
            json!({"origin": "core", "name": "foo", "version": "1.0.0"})
        );
        assert_eq!(v["checksum"], good["checksum"]);
        let r = bad(LookupBody::NotJson);
        assert_eq!(r.header("content-type"), Some("text/html"));
        assert!(serde_json::from_slice::<Value>(&r.body()).is_err());
        let r = bad(LookupBody::OtherIdent(
            "core/bar/2.0.0/20240202000000".into(),
        ));
        assert_eq!(ident_of(&r), "core/bar/2.0.0/20240202000000");
        let v = r.json();
        assert_eq!(
            (&v["name"], &v["ident_array"], &v["checksum"]),
            (
                &json!("bar"),
                &json!(["core", "bar", "2.0.0", "20240202000000"]),
                &good["checksum"]
            )
        );
        let faults: Vec<Vec<&str>> = b
            .lookups()
            .iter()
            .filter(|r| r.status == 200)
            .map(|r| r.faults.clone())
            .collect();
        assert_eq!(faults.iter().filter(|f| *f == &["bad_lookups"]).count(), 4);
        assert_eq!(faults.len(), 9);
    }

    #[test]
    fn bad_key_answers() {
        let mut fx = Fixture::new();
        let a = fx.pack("core/foo/1.0.0/20240101000000", &[]);
        let b = fx.start(&[(&a, &[])]);
        let key = fx.key("core").public();
        let rev = key.name.revision.clone();
        let file = format!("core-{rev}.pub");
        let path = format!("/v1/depot/origins/core/keys/{rev}");
        let dest = fx.tmp.path().join(&file);
        let bad = |kind: BadKey| {
            b.set_faults(BuilderFaults {
                bad_keys: 1,
                bad_key: kind,
                ..BuilderFaults::default()
            });
            // A key that does not exist is not counted.
            assert_eq!(
                get(&b, "/v1/depot/origins/core/keys/20000101000000", &[]).status,
                404
            );
            let r = get(&b, &path, &[]);
            assert_eq!(
                (r.status, r.header("x-filename")),
                (200, Some(file.as_str()))
            );
            assert_eq!(b.faults().bad_keys, 0);
            assert_eq!(get(&b, &path, &[]).body(), key.to_file_text().into_bytes());
            String::from_utf8(r.body()).expect("text")
        };
        let text = bad(BadKey::Garbage);
        assert_eq!(text, GARBAGE_KEY);
        assert!(PublicKey::parse(&dest, &text).is_err());
        let text = bad(BadKey::OtherName("evil-20200101000000".into()));
        let parsed = PublicKey::parse(&dest, &text).expect("a key");
        assert_eq!(parsed.name.to_string(), "evil-20200101000000");
        assert_eq!(parsed.to_file_text().lines().last(), text.lines().last());
        let text = bad(BadKey::OtherKey);
        let parsed = PublicKey::parse(&dest, &text).expect("a key");
        assert_eq!(parsed.name, key.name);
        assert_ne!(text, key.to_file_text());
        // What it signed does not exist: the hart fails verification with it.
        let other_keys = fx.tmp.path().join("other-keys");
        std::fs::create_dir_all(&other_keys).expect("mkdir");
        std::fs::write(other_keys.join(&file), &text).expect("write");
        let opened = Hart::open(&a).expect("open");
        assert!(opened.verify(&KeyDirs::new(vec![other_keys])).is_err());
        let faults: Vec<Vec<&str>> = b
            .log()
            .iter()
            .filter(|r| r.status == 200)
            .map(|r| r.faults.clone())
            .collect();
        assert_eq!(faults.iter().filter(|f| *f == &["bad_keys"]).count(), 3);
        assert_eq!(faults.len(), 6);
    }

    #[test]
    fn swapped_download() {
        let mut fx = Fixture::new();
        let a = fx.pack("core/foo/1.0.0/20240101000000", &[]);
        let other = fx.pack("core/foo/1.0.0/20230101000000", &[]);
        let bar = fx.pack("core/bar/1.0.0/20240101000000", &[]);
        let b = fx.start(&[(&a, &[]), (&bar, &[])]);
        let (a_bytes, other_bytes) = (
            std::fs::read(&a).expect("read"),
            std::fs::read(&other).expect("read"),
        );
        let file = "core-foo-1.0.0-20240101000000-x86_64-linux.hart";
        b.set_faults(BuilderFaults {
            swapped_downloads: 1,
            swap_download: Some(("core/foo/1.0.0/20240101000000".into(), other.clone())),
            ..BuilderFaults::default()
        });
        // Another ident is neither swapped nor counted.
        let r = get(&b, &download_path("core/bar/1.0.0/20240101000000"), &[]);
        assert!(r.body() == std::fs::read(&bar).expect("read"));
        assert_eq!(b.faults().swapped_downloads, 1);
        let foo = download_path("core/foo/1.0.0/20240101000000");
        let r = get(&b, &foo, &[]);
        assert_eq!((r.status, r.header("x-filename")), (200, Some(file)));
        assert!(r.body() == other_bytes, "the other hart");
        assert_eq!(b.faults().swapped_downloads, 0);
        assert!(get(&b, &foo, &[]).body() == a_bytes, "once");
        let log = b.log();
        assert_eq!(log[1].faults, ["swapped_downloads"]);
        assert_eq!(
            log[1].ident.as_deref(),
            Some("core/foo/1.0.0/20240101000000")
        );
        assert!(log[0].faults.is_empty() && log[2].faults.is_empty());
    }
}
