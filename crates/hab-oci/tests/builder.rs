//! Packages from Habitat Builder through the real binary, against testkit's in-process fake
//! Builder (`hab_oci_testkit::builder`): channel lookups, downloads into the artifact cache,
//! origin keys fetched without the token, the caches and `--offline` on later runs, faults
//! (5xx, cut connections, corrupted bodies, bad `x-filename`, a wrong token), bad input
//! (lookup answers of the wrong shape, bodies longer than their `Content-Length`, bad origin
//! keys, a download holding another package), and a Supervisor image built only from
//! Builder packages. Assertions are on the binary's output and exit code, the caches' files
//! and the fake's request log.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;

use hab_oci_testkit::builder::{
    BadKey, BuilderConfig, BuilderFaults, BuilderRequest, BuilderServer, Framing, LookupBody,
    Overlong, RouteKind,
};
use hab_oci_testkit::{PackageSpec, write_package_dir};
use hart::{PackOptions, PackageIdent, SecretKey};

mod common;
use common::*;

const TARGET: &str = "x86_64-linux";
/// `acme/app`: two releases of 1.0.0 in `stable`, a newer version only in `unstable`.
const APP_OLD: &str = "acme/app/1.0.0/20240101000000";
const APP: &str = "acme/app/1.0.0/20240201000000";
const APP_NEXT: &str = "acme/app/1.1.0/20240301000000";
/// `acme/app`'s dependency, which depends on `other/zlib` (another origin, another key).
const LIB: &str = "acme/lib/2.0.0/20240101000000";
const ZLIB: &str = "other/zlib/1.3.0/20240101000000";
/// Only in `unstable`.
const BETA: &str = "acme/beta/0.1.0/20240101000000";
/// The token the fake Builder accepts in the tests that configure one.
const TOKEN: &str = "bldr-token-3f9a1c77e2";

const GREETING: &str = "Hello from a Habitat package, shipped as its own image layer.\n";

/// Signed packages in a directory of their own (never the caches of a run), with every
/// origin's key pair in `keys/`.
struct Packages {
    dir: tempfile::TempDir,
    keys: BTreeMap<String, SecretKey>,
    tdeps: BTreeMap<String, Vec<PackageIdent>>,
}

impl Packages {
    fn new() -> Packages {
        Packages {
            dir: tempfile::tempdir().expect("tmp"),
            keys: BTreeMap::new(),
            tdeps: BTreeMap::new(),
        }
    }

    fn keys_dir(&self) -> PathBuf {
        self.dir.path().join("keys")
    }

    fn key(&mut self, origin: &str) -> &SecretKey {
        let keys_dir = self.keys_dir();
        self.keys.entry(origin.to_owned()).or_insert_with(|| {
            let key = SecretKey::generate(origin).expect("key");
            key.write_pair(&keys_dir).expect("key pair");
            key
        })
    }

    /// The file name Builder gives the origin's public key (`ORIGIN-REV.pub`).
    fn public_key_file(&mut self, origin: &str) -> String {
        self.key(origin).name.public_key_file_name()
    }

    /// Packs `ident` depending on `deps` (packed before), TDEPS computed; returns the hart.
    fn pack(&mut self, ident: &str, deps: &[&str]) -> PathBuf {
        let id = PackageIdent::parse_fq(ident).expect("ident");
        let deps: Vec<PackageIdent> = deps
            .iter()
            .map(|d| PackageIdent::parse_fq(d).expect("dep"))
            .collect();
        let mut tdeps: Vec<PackageIdent> = Vec::new();
        for d in &deps {
            let under = self.tdeps.get(&d.to_string()).cloned().unwrap_or_default();
            for t in std::iter::once(d.clone()).chain(under) {
                if !tdeps.contains(&t) {
                    tdeps.push(t);
                }
            }
        }
        tdeps.sort_by(|a, b| a.total_cmp(b));
        self.tdeps.insert(ident.to_owned(), tdeps.clone());
        let spec = PackageSpec {
            ident: id.clone(),
            deps,
            tdeps,
            size: 8 * 1024,
            service: id.name == "app",
            seed: 7,
        };
        let work = tempfile::tempdir_in(self.dir.path()).expect("work");
        let dir = write_package_dir(work.path(), &spec).expect("package dir");
        let opts = PackOptions {
            level: 1,
            threads: 1,
            block_size: 0,
            mtime: Some(1_700_000_000),
        };
        let out = self.dir.path().join("artifacts");
        let key = self.key(&id.origin);
        hart::pack(&dir, key, None, &out, &opts).expect("pack").path
    }
}

/// The `acme` packages on a fake Builder: zlib, lib and two releases of app in `stable`;
/// app's newer version and `acme/beta` only in `unstable`. With a token, lookups and
/// downloads need it (keys never do).
fn acme_builder(token: Option<&str>, framing: Framing) -> (Packages, BuilderServer) {
    let mut pk = Packages::new();
    let zlib = pk.pack(ZLIB, &[]);
    let lib = pk.pack(LIB, &[ZLIB]);
    let app_old = pk.pack(APP_OLD, &[LIB]);
    let app = pk.pack(APP, &[LIB]);
    let app_next = pk.pack(APP_NEXT, &[LIB]);
    let beta = pk.pack(BETA, &[]);
    let b = BuilderServer::start(BuilderConfig {
        keys_dir: pk.keys_dir(),
        token: token.map(str::to_owned),
        require_token: token.is_some(),
        framing,
        ..BuilderConfig::default()
    })
    .expect("fake Builder");
    for p in [&zlib, &lib, &app_old, &app] {
        b.add(p, &["stable"]).expect("publish");
    }
    // Uploads land in `unstable` (BuilderConfig::upload_to_unstable).
    for p in [&app_next, &beta] {
        b.add(p, &[]).expect("publish");
    }
    (pk, b)
}

/// The binary with empty caches in `run`, allowed to reach Builder.
fn bldr(run: &Path) -> assert_cmd::Command {
    let mut c = hab_oci(run);
    // Exports write Habitat's results/ into the working directory: keep it in the run's.
    std::fs::create_dir_all(run).expect("run dir");
    c.env_remove("HAB_OCI_OFFLINE").current_dir(run);
    c
}

/// `o/n/v/r` → `o-n-v-r-x86_64-linux.hart`, the name Builder and Habitat give it.
fn hart_name(ident: &str) -> String {
    format!("{}-{TARGET}.hart", ident.replace('/', "-"))
}

/// Every entry of a directory (dotfiles included); empty when it does not exist.
fn entries(dir: &Path) -> BTreeSet<String> {
    let Ok(rd) = fs::read_dir(dir) else {
        return BTreeSet::new();
    };
    rd.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect()
}

fn set(items: &[String]) -> BTreeSet<String> {
    items.iter().cloned().collect()
}

fn stdout_of(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stdout).into_owned()
}

fn stderr_of(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stderr).into_owned()
}

/// `export --url URL --channel stable --no-supervisor PKG -o oci:RUN/NAME` plus `extra`;
/// returns the report.
fn export_ok(
    run: &Path,
    b: &BuilderServer,
    pkg: &str,
    name: &str,
    extra: &[&str],
) -> serde_json::Value {
    let report = run.join(format!("{name}.json"));
    let a = bldr(run)
        .args([
            "export",
            "--url",
            &b.url(),
            "--channel",
            "stable",
            "--no-supervisor",
            pkg,
        ])
        .arg("-o")
        .arg(format!("oci:{}", run.join(name).display()))
        .arg("--report")
        .arg(&report)
        .args(extra)
        .assert();
    let out = a.get_output();
    assert!(
        out.status.success(),
        "export failed:\n{}\n{}\nBuilder log: {:#?}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        summary(&b.log())
    );
    read_json(&report)
}

/// The same export, expected to fail with exit 1; returns stderr.
fn export_fails(run: &Path, b: &BuilderServer, pkg: &str, extra: &[&str]) -> String {
    let a = bldr(run)
        .args([
            "export",
            "--url",
            &b.url(),
            "--channel",
            "stable",
            "--no-supervisor",
            pkg,
        ])
        .arg("-o")
        .arg(format!("oci:{}", run.join("failed-img").display()))
        .args(extra)
        .assert()
        .code(1);
    stderr_of(&a)
}

/// One line per request, for assertion messages.
fn summary(log: &[BuilderRequest]) -> Vec<String> {
    log.iter()
        .map(|r| {
            format!(
                "{:?} {} {}{} auth={} faults={:?}",
                r.route,
                r.status,
                r.path,
                if r.query.is_empty() {
                    String::new()
                } else {
                    format!("?{}", r.query)
                },
                r.authorization,
                r.faults
            )
        })
        .collect()
}

/// The Route B requests for `ident` (`o/n/v/r`), in order, by path (an error answered
/// before routing, as a proxy's, has no ident in the log).
fn downloads_of(log: &[BuilderRequest], ident: &str) -> Vec<BuilderRequest> {
    let path = format!("/v1/depot/pkgs/{ident}/download");
    log.iter()
        .filter(|r| r.route == RouteKind::Download && r.path == path)
        .cloned()
        .collect()
}

fn closure_downloads() -> BTreeMap<String, usize> {
    [APP, LIB, ZLIB]
        .iter()
        .map(|i| ((*i).to_owned(), 1))
        .collect()
}

// ---------------------------------------------------------------------------------------
// 1. resolve

/// `resolve --url URL --channel stable acme/app` prints the release the server calls latest
/// in that channel (not the older release, not the newer version of `unstable`), after
/// looking it up there; `HAB_BLDR_URL`/`HAB_BLDR_CHANNEL` do the same as the flags; the
/// `unstable` channel gives the newer version.
fn resolve_prints_the_latest_release_of_the_channel() {
    let (_pk, b) = acme_builder(None, Framing::Chunked);
    let url = b.url();
    let run = tempfile::tempdir().expect("tmp");
    let a = bldr(run.path())
        .args(["resolve", "--url", &url, "--channel", "stable", "acme/app"])
        .assert()
        .success();
    let out = stdout_of(&a);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.iter().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from([ZLIB, LIB, APP]),
        "{out}"
    );
    assert_eq!(
        lines.last(),
        Some(&APP),
        "the requested package on top: {out}"
    );
    let lookups = b.lookups();
    assert_eq!(lookups.len(), 1, "{:#?}", summary(&b.log()));
    assert_eq!(
        lookups[0].path, "/v1/depot/channels/acme/stable/pkgs/app/latest",
        "looked up in the channel asked for"
    );
    assert_eq!(lookups[0].param("target").as_deref(), Some(TARGET));
    assert_eq!(b.downloads(), closure_downloads());

    // A version without a release: the latest release of that version in the channel.
    let run = tempfile::tempdir().expect("tmp");
    let a = bldr(run.path())
        .args(["resolve", "-u", &url, "-c", "stable", "acme/app/1.0.0"])
        .assert()
        .success();
    assert_eq!(stdout_of(&a).lines().last(), Some(APP));
    assert!(
        b.lookups()
            .iter()
            .any(|r| r.path == "/v1/depot/channels/acme/stable/pkgs/app/1.0.0/latest")
    );

    // The environment instead of the flags.
    let run = tempfile::tempdir().expect("tmp");
    let a = bldr(run.path())
        .env("HAB_BLDR_URL", &url)
        .env("HAB_BLDR_CHANNEL", "stable")
        .args(["resolve", "acme/app"])
        .assert()
        .success();
    assert_eq!(stdout_of(&a).lines().last(), Some(APP));

    // Another channel, another latest.
    let run = tempfile::tempdir().expect("tmp");
    let a = bldr(run.path())
        .args([
            "resolve",
            "--url",
            &url,
            "--channel",
            "unstable",
            "acme/app",
        ])
        .assert()
        .success();
    assert_eq!(stdout_of(&a).lines().last(), Some(APP_NEXT));
    assert!(
        !stdout_of(&a).contains(APP),
        "only one acme/app: {}",
        stdout_of(&a)
    );
}

/// A package only in `unstable`, asked for in `stable`: exit 1, and the error names the
/// package, the channel, the target and the URL, and lists the channels that have it; a
/// package in no channel at all gets no such list. Nothing is downloaded.
fn resolve_of_a_package_missing_from_the_channel_names_channel_target_url_and_where_it_is() {
    let (_pk, b) = acme_builder(None, Framing::Chunked);
    let url = b.url();
    let run = tempfile::tempdir().expect("tmp");
    let a = bldr(run.path())
        .args(["resolve", "--url", &url, "--channel", "stable", "acme/beta"])
        .assert()
        .code(1);
    let err = stderr_of(&a);
    assert!(stdout_of(&a).is_empty(), "{}", stdout_of(&a));
    for part in [
        "acme/beta",
        "'stable'",
        TARGET,
        url.as_str(),
        "channels that have it: unstable",
        "--channel",
    ] {
        assert!(err.contains(part), "{part:?} missing from: {err}");
    }
    assert!(b.downloads().is_empty(), "{:#?}", summary(&b.log()));

    let a = bldr(run.path())
        .args([
            "resolve",
            "--url",
            &url,
            "--channel",
            "stable",
            "acme/nosuch",
        ])
        .assert()
        .code(1);
    let err = stderr_of(&a);
    for part in ["acme/nosuch", "'stable'", TARGET, url.as_str()] {
        assert!(err.contains(part), "{part:?} missing from: {err}");
    }
    assert!(!err.contains("channels that have it"), "{err}");
    assert!(entries(&run.path().join("artifacts")).is_empty());
}

// ---------------------------------------------------------------------------------------
// 2. export: downloads once, then the caches

/// From empty caches and only a Builder URL (with a token), an export downloads each package
/// of the closure and each origin key exactly once (keys without the token; lookups and
/// downloads with it), leaves `o-n-v-r-target.hart` files and no temporaries in the artifact
/// cache; a second identical export only looks the requested ident up again; `--offline`
/// makes no request at all; the three images are the same.
fn export_downloads_each_package_and_key_once_then_uses_the_caches() {
    let (mut pk, b) = acme_builder(Some(TOKEN), Framing::Chunked);
    let run = tempfile::tempdir().expect("tmp");
    let r = run.path();
    let auth = ["--auth", TOKEN];
    let first = export_ok(r, &b, "acme/app", "img1", &auth);
    let log = b.log();
    let s = summary(&log);
    assert_eq!(b.downloads(), closure_downloads(), "{s:#?}");
    for ident in [APP, LIB, ZLIB] {
        assert_eq!(downloads_of(&log, ident).len(), 1, "{ident}: {s:#?}");
    }
    assert!(
        log.iter().all(|q| q.status == 200),
        "no failed request: {s:#?}"
    );
    let keys: Vec<&BuilderRequest> = log.iter().filter(|q| q.route == RouteKind::Key).collect();
    let acme_key = pk.public_key_file("acme");
    let other_key = pk.public_key_file("other");
    let key_paths: BTreeSet<String> = keys.iter().map(|q| q.path.clone()).collect();
    assert_eq!(keys.len(), 2, "one fetch per origin key: {s:#?}");
    assert_eq!(
        key_paths,
        BTreeSet::from([
            format!(
                "/v1/depot/origins/acme/keys/{}",
                acme_key
                    .trim_start_matches("acme-")
                    .trim_end_matches(".pub")
            ),
            format!(
                "/v1/depot/origins/other/keys/{}",
                other_key
                    .trim_start_matches("other-")
                    .trim_end_matches(".pub")
            ),
        ])
    );
    assert!(
        keys.iter().all(|q| !q.authorization),
        "the key route never carries the token: {s:#?}"
    );
    assert!(
        log.iter()
            .filter(|q| matches!(q.route, RouteKind::Lookup | RouteKind::Download))
            .all(|q| q.header("authorization") == Some(&format!("Bearer {TOKEN}"))),
        "lookups and downloads carry the token: {s:#?}"
    );
    assert_eq!(
        entries(&r.join("artifacts")),
        set(&[hart_name(APP), hart_name(LIB), hart_name(ZLIB)]),
        "exactly the closure, under Builder's names, no temporaries"
    );
    let published: BTreeSet<String> = b
        .published()
        .iter()
        .filter(|p| [APP, LIB, ZLIB].contains(&p.ident.to_string().as_str()))
        .map(|p| p.file_name.clone())
        .collect();
    assert_eq!(entries(&r.join("artifacts")), published);
    assert_eq!(
        entries(&r.join("keys")),
        set(&[acme_key.clone(), other_key.clone()])
    );
    assert!(temporaries(r).is_empty(), "{:?}", temporaries(r));
    // The downloads are the published bytes.
    for p in b.published() {
        let cached = r.join("artifacts").join(&p.file_name);
        if cached.exists() {
            assert!(
                fs::read(&cached).expect("cached") == fs::read(&p.path).expect("published"),
                "{}",
                p.file_name
            );
        }
    }

    // Again: only the lookup of the fuzzy ident; everything else is in the caches.
    let before = b.log().len();
    let second = export_ok(r, &b, "acme/app", "img2", &auth);
    let log = b.log();
    let new = &log[before..];
    assert_eq!(new.len(), 1, "{:#?}", summary(new));
    assert_eq!(new[0].route, RouteKind::Lookup);
    assert_eq!(
        new[0].path,
        "/v1/depot/channels/acme/stable/pkgs/app/latest"
    );
    assert_eq!(b.downloads(), closure_downloads());

    // Offline: no request at all, the same image from the caches.
    let before = b.log().len();
    let third = export_ok(r, &b, "acme/app", "img3", &["--auth", TOKEN, "--offline"]);
    assert_eq!(b.log().len(), before, "{:#?}", summary(&b.log()[before..]));
    assert_eq!(entries(&r.join("artifacts")).len(), 3);
    assert!(temporaries(r).is_empty(), "{:?}", temporaries(r));

    let digest = |v: &serde_json::Value| v["manifest_digest"].as_str().expect("digest").to_owned();
    assert!(digest(&first).starts_with("sha256:"));
    assert_eq!(digest(&first), digest(&second));
    assert_eq!(digest(&first), digest(&third));
}

/// Packages of one origin downloaded in the same wave (two `other/*` dependencies of
/// `acme/app`, downloaded and verified in parallel) need that origin's key: it is fetched
/// once, not once per package (as in the sequential case of
/// [`export_downloads_each_package_and_key_once_then_uses_the_caches`]).
fn an_origin_key_is_fetched_once_for_packages_downloaded_together() {
    let mut pk = Packages::new();
    // Names of one length and the same generated content: bodies of the same size, which
    // arrive together.
    let deps = [
        "other/zlib/1.3.0/20240101000000",
        "other/zstd/1.3.0/20240101000000",
    ];
    let mut harts: Vec<PathBuf> = deps.iter().map(|d| pk.pack(d, &[])).collect();
    harts.push(pk.pack(APP, &deps));
    let b = BuilderServer::start(BuilderConfig {
        keys_dir: pk.keys_dir(),
        ..BuilderConfig::default()
    })
    .expect("fake Builder");
    for h in &harts {
        b.add(h, &["stable"]).expect("publish");
    }
    // A race shows only sometimes: three tries, each from empty caches.
    for attempt in 1..=3 {
        b.clear_log();
        // Every download arrives in pieces, so that the two dependencies, downloaded side by
        // side, are verified (and find the key missing) at about the same time.
        b.set_faults(BuilderFaults {
            slow_downloads: 1 + deps.len(),
            slow_chunk: 1024,
            slow_delay: std::time::Duration::from_millis(20),
            ..BuilderFaults::default()
        });
        let run = tempfile::tempdir().expect("tmp");
        export_ok(run.path(), &b, "acme/app", "img", &[]);
        let log = b.log();
        let other_keys = log
            .iter()
            .filter(|q| q.route == RouteKind::Key && q.path.starts_with("/v1/depot/origins/other/"))
            .count();
        assert_eq!(other_keys, 1, "attempt {attempt}: {:#?}", summary(&log));
        assert!(
            b.downloads().values().all(|&n| n == 1),
            "attempt {attempt}: {:#?}",
            summary(&log)
        );
    }
}

/// `--offline` from empty caches: exit 1 naming the package, no request, and the message
/// says that Builder was not asked because of `--offline` (settings.rs keeps the Builder
/// settings offline so that "the messages can say so").
fn offline_with_empty_caches_names_the_package_and_says_offline() {
    let (_pk, b) = acme_builder(None, Framing::Chunked);
    let run = tempfile::tempdir().expect("tmp");
    let err = export_fails(run.path(), &b, "acme/app", &["--offline"]);
    assert!(b.log().is_empty(), "{:#?}", summary(&b.log()));
    assert!(err.contains("acme/app"), "{err}");
    assert!(
        err.contains("offline"),
        "the message should say --offline: {err}"
    );
    // The same through $HAB_OCI_OFFLINE (the harness's default, kept here).
    let a = hab_oci(run.path())
        .args([
            "resolve",
            "--url",
            &b.url(),
            "--channel",
            "stable",
            "acme/app",
        ])
        .assert()
        .code(1);
    assert!(b.log().is_empty(), "{:#?}", summary(&b.log()));
    assert!(stderr_of(&a).contains("acme/app"), "{}", stderr_of(&a));
}

/// The Builder URL comes from `--url`, else `$HAB_BLDR_URL`, else `$HAB_DEPOT_URL`: a dead
/// URL in a variable that the flag (or `$HAB_BLDR_URL`) outranks is never used.
fn the_url_comes_from_the_flag_then_hab_bldr_url_then_hab_depot_url() {
    let (_pk, b) = acme_builder(None, Framing::Chunked);
    let url = b.url();
    // Nothing listens on port 9 of loopback (discard): a request there fails at once.
    let dead = "http://127.0.0.1:9";
    let cases: [(&[(&str, &str)], bool); 3] = [
        (&[("HAB_BLDR_URL", dead), ("HAB_DEPOT_URL", dead)], true),
        (
            &[("HAB_BLDR_URL", url.as_str()), ("HAB_DEPOT_URL", dead)],
            false,
        ),
        (&[("HAB_DEPOT_URL", url.as_str())], false),
    ];
    for (env, flag) in cases {
        let run = tempfile::tempdir().expect("tmp");
        let mut c = bldr(run.path());
        c.envs(env.iter().copied())
            .args(["resolve", "--channel", "stable"]);
        if flag {
            c.args(["--url", &url]);
        }
        let a = c.arg("acme/app").assert();
        let out = a.get_output();
        assert!(
            out.status.success(),
            "{env:?} flag={flag}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(stdout_of(&a).lines().last(), Some(APP), "{env:?}");
    }
    assert_eq!(b.lookups().len(), 3);
}

// ---------------------------------------------------------------------------------------
// 3. faults

/// A 500 and then a cut connection on the first download are retried (chunked and
/// `Content-Length` bodies) and the export succeeds with the package downloaded whole once.
fn downloads_retry_a_500_and_a_cut_connection() {
    for framing in [Framing::Chunked, Framing::ContentLength] {
        let (_pk, b) = acme_builder(None, framing);
        b.set_faults(BuilderFaults {
            download_errors: 1,
            download_error_status: 500,
            cut_downloads: 1,
            ..BuilderFaults::default()
        });
        let run = tempfile::tempdir().expect("tmp");
        let r = run.path();
        export_ok(r, &b, "acme/app", "img", &[]);
        let log = b.log();
        let s = summary(&log);
        // The app is the only request in flight when the faults hit: its first download.
        let tries: Vec<(u16, Vec<&str>)> = downloads_of(&log, APP)
            .into_iter()
            .map(|q| (q.status, q.faults))
            .collect();
        assert_eq!(
            tries,
            [
                (500, vec!["download_errors"]),
                (0, vec!["cut_downloads"]),
                (200, vec![])
            ],
            "{framing:?}: {s:#?}"
        );
        assert_eq!(b.downloads(), closure_downloads(), "{framing:?}: {s:#?}");
        let f = b.faults();
        assert_eq!((f.download_errors, f.cut_downloads), (0, 0));
        assert_eq!(
            entries(&r.join("artifacts")),
            set(&[hart_name(APP), hart_name(LIB), hart_name(ZLIB)]),
            "{framing:?}"
        );
        assert!(temporaries(r).is_empty(), "{:?}", temporaries(r));
    }
}

/// A corrupted download fails with exit 1, naming the package and its URL, and nothing of it
/// stays in the artifact cache: for a fuzzy ident (the channel's checksum catches it) and a
/// fully qualified one (no lookup; the signature catches it). Nothing is retried on its own,
/// and the next export, without the fault, works.
fn a_corrupted_download_fails_naming_the_package_and_leaves_nothing_behind() {
    let (_pk, b) = acme_builder(None, Framing::Chunked);
    let run = tempfile::tempdir().expect("tmp");
    let r = run.path();
    let url = b.url();
    let download_url = format!("{url}/v1/depot/pkgs/{APP}/download");
    for pkg in ["acme/app", APP] {
        b.set_faults(BuilderFaults {
            corrupt_downloads: 1,
            ..BuilderFaults::default()
        });
        let err = export_fails(r, &b, pkg, &[]);
        for part in [APP, download_url.as_str(), "refused"] {
            assert!(err.contains(part), "{pkg}: {part:?} missing from: {err}");
        }
        assert_eq!(b.faults().corrupt_downloads, 0, "{pkg}: the fault hit");
        assert!(
            entries(&r.join("artifacts")).is_empty(),
            "{pkg}: nothing of it in the artifact cache: {:?}",
            entries(&r.join("artifacts"))
        );
        assert!(temporaries(r).is_empty(), "{pkg}: {:?}", temporaries(r));
        assert!(!r.join("failed-img").exists(), "{pkg}: no image");
    }
    let log = b.log();
    assert_eq!(
        downloads_of(&log, APP).len(),
        2,
        "one download per export: {:#?}",
        summary(&log)
    );
    export_ok(r, &b, "acme/app", "img", &[]);
    assert_eq!(
        entries(&r.join("artifacts")),
        set(&[hart_name(APP), hart_name(LIB), hart_name(ZLIB)])
    );
}

/// A download without `x-filename` is retried (as `hab` retries it) and the export works.
fn a_download_without_x_filename_is_retried() {
    let (_pk, b) = acme_builder(None, Framing::Chunked);
    b.set_faults(BuilderFaults {
        missing_filename: 1,
        ..BuilderFaults::default()
    });
    let run = tempfile::tempdir().expect("tmp");
    let r = run.path();
    export_ok(r, &b, "acme/app", "img", &[]);
    let log = b.log();
    let tries: Vec<Vec<&str>> = downloads_of(&log, APP)
        .into_iter()
        .map(|q| q.faults)
        .collect();
    assert_eq!(
        tries,
        [vec!["missing_filename"], vec![]],
        "{:#?}",
        summary(&log)
    );
    assert_eq!(
        entries(&r.join("artifacts")),
        set(&[hart_name(APP), hart_name(LIB), hart_name(ZLIB)])
    );
    assert!(temporaries(r).is_empty(), "{:?}", temporaries(r));
}

/// An `x-filename` with a path in it (`../NAME`, `sub/NAME`) is refused with a message that
/// says so, not retried, and nothing is written: not in the artifact cache, not next to it.
fn an_x_filename_with_a_path_is_refused() {
    for hostile in ["../{file}", "sub/{file}"] {
        let (_pk, b) = acme_builder(None, Framing::Chunked);
        b.set_faults(BuilderFaults {
            hostile_filename: 1,
            hostile_filename_value: hostile.to_owned(),
            ..BuilderFaults::default()
        });
        let run = tempfile::tempdir().expect("tmp");
        let r = run.path();
        let err = export_fails(r, &b, "acme/app", &[]);
        let sent = hostile.replace("{file}", &hart_name(APP));
        for part in ["x-filename", sent.as_str(), b.url().as_str()] {
            assert!(
                err.contains(part),
                "{hostile}: {part:?} missing from: {err}"
            );
        }
        let log = b.log();
        assert_eq!(
            downloads_of(&log, APP).len(),
            1,
            "{hostile}: not retried: {:#?}",
            summary(&log)
        );
        assert!(entries(&r.join("artifacts")).is_empty(), "{hostile}");
        assert!(
            !r.join(hart_name(APP)).exists(),
            "{hostile}: nothing beside the cache"
        );
        assert!(temporaries(r).is_empty(), "{hostile}: {:?}", temporaries(r));
    }
}

/// A token the server does not take: exit 1 with a clear 401 message and the hint about
/// `--auth`, the token itself nowhere in the output, and no retry. The same through
/// `$HAB_AUTH_TOKEN`.
fn a_wrong_token_gets_a_clear_401_without_the_token() {
    let (_pk, b) = acme_builder(Some(TOKEN), Framing::Chunked);
    let wrong = "WRONG-token-0d5e8b";
    let run = tempfile::tempdir().expect("tmp");
    let r = run.path();
    let a = bldr(r)
        .args([
            "export",
            "--url",
            &b.url(),
            "--channel",
            "stable",
            "--no-supervisor",
        ])
        .args(["--auth", wrong, "acme/app", "-o"])
        .arg(format!("oci:{}", r.join("img").display()))
        .assert()
        .code(1);
    let (out, err) = (stdout_of(&a), stderr_of(&a));
    for part in ["401", "token", "--auth", b.url().as_str()] {
        assert!(err.contains(part), "{part:?} missing from: {err}");
    }
    assert!(!err.contains(wrong) && !out.contains(wrong), "{out}\n{err}");
    assert!(!err.contains(TOKEN), "{err}");
    let log = b.log();
    assert_eq!(log.len(), 1, "no retry after a 401: {:#?}", summary(&log));
    assert_eq!((log[0].route, log[0].status), (RouteKind::Lookup, 401));
    assert_eq!(
        log[0].header("authorization"),
        Some(format!("Bearer {wrong}").as_str())
    );

    let a = bldr(r)
        .env("HAB_AUTH_TOKEN", wrong)
        .args([
            "resolve",
            "--url",
            &b.url(),
            "--channel",
            "stable",
            "acme/app",
        ])
        .assert()
        .code(1);
    let (out, err) = (stdout_of(&a), stderr_of(&a));
    assert!(err.contains("401") && err.contains("--auth"), "{err}");
    assert!(!err.contains(wrong) && !out.contains(wrong), "{out}\n{err}");
    assert!(entries(&r.join("artifacts")).is_empty());
    assert_eq!(b.log().len(), 2);
}

/// A download redirected to another host (`localhost` instead of `127.0.0.1`, the same fake
/// answering as Builder does) is followed, and the token stays behind: only requests to the
/// Builder URL carry it.
fn a_redirected_download_leaves_the_token_behind() {
    let (_pk, b) = acme_builder(Some(TOKEN), Framing::Chunked);
    // Lookups and downloads to the Builder URL need the token; the other host's may not.
    b.set_require_token(false);
    b.set_faults(BuilderFaults {
        redirect_downloads: 1,
        ..BuilderFaults::default()
    });
    let run = tempfile::tempdir().expect("tmp");
    export_ok(run.path(), &b, "acme/app", "img", &["--auth", TOKEN]);
    let log = b.log();
    let s = summary(&log);
    let app = downloads_of(&log, APP);
    assert_eq!(app.len(), 2, "{s:#?}");
    assert_eq!(
        (app[0].status, app[0].faults.clone()),
        (302, vec!["redirect_downloads"])
    );
    assert!(app[0].authorization, "{s:#?}");
    let other_host = format!("localhost:{}", b.addr().port());
    assert_eq!(app[1].header("host"), Some(other_host.as_str()), "{s:#?}");
    assert!(
        !app[1].authorization,
        "the token went to another host: {s:#?}"
    );
    for q in &log {
        if q.header("host") != Some(other_host.as_str()) && q.route != RouteKind::Key {
            assert!(q.authorization, "{s:#?}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// 3b. bad input: answers of the wrong shape, keys and packages that are not what was asked

/// `export --auth TOKEN` of `pkg`, expected to fail with exit 1: stderr names every one of
/// `parts`, the token is nowhere in the output, and nothing is left half-written: no image,
/// no `.hab-oci-` temporaries, no hart at all in the artifact cache (these faults all hit
/// the first package), and nothing in the key cache but `good_keys` (genuine keys fetched
/// on the way). Returns stderr, or every problem found at once (with the output and the
/// Builder log).
fn refused(
    r: &Path,
    b: &BuilderServer,
    pkg: &str,
    parts: &[&str],
    good_keys: &BTreeSet<String>,
    case: &str,
) -> Result<String, String> {
    let a = bldr(r)
        .args([
            "export",
            "--url",
            &b.url(),
            "--channel",
            "stable",
            "--no-supervisor",
            "--auth",
            TOKEN,
            pkg,
        ])
        .arg("-o")
        .arg(format!("oci:{}", r.join("failed-img").display()))
        .assert();
    let (out, err) = (stdout_of(&a), stderr_of(&a));
    let mut problems = Vec::new();
    let code = a.get_output().status.code();
    if code != Some(1) {
        problems.push(format!("exit {code:?}, not 1"));
    }
    for part in parts {
        if !err.contains(part) {
            problems.push(format!("{part:?} missing from stderr"));
        }
    }
    if err.contains(TOKEN) || out.contains(TOKEN) {
        problems.push("the token is in the output".to_owned());
    }
    if r.join("failed-img").exists() {
        problems.push("an image was written".to_owned());
    }
    if !temporaries(r).is_empty() {
        problems.push(format!("temporaries left: {:?}", temporaries(r)));
    }
    let artifacts = entries(&r.join("artifacts"));
    if !artifacts.is_empty() {
        problems.push(format!("the artifact cache holds {artifacts:?}"));
    }
    let keys = entries(&r.join("keys"));
    if !keys.is_subset(good_keys) {
        problems.push(format!(
            "the key cache holds {keys:?}, only {good_keys:?} may be there"
        ));
    }
    if problems.is_empty() {
        return Ok(err);
    }
    Err(format!(
        "{case}:\n- {}\nstdout: {out}\nstderr: {err}\nBuilder log: {:#?}",
        problems.join("\n- "),
        summary(&b.log())
    ))
}

/// Fails with every case's problems, if any.
fn all_ok(failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} failing case(s):\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// The hart `b` publishes as `ident`.
fn published_path(b: &BuilderServer, ident: &str) -> PathBuf {
    b.published()
        .into_iter()
        .find(|p| p.ident.to_string() == ident)
        .map(|p| p.path)
        .expect("published")
}

/// A lookup answered 200 with something that is not the package record Builder promises —
/// JSON without `checksum`, an ident without a release, an HTML page, or a record of
/// another package (`acme/other/…` for `acme/app`) — fails the export with exit 1, naming
/// `acme/app` and the lookup URL; nothing is downloaded and both caches stay empty.
fn a_lookup_answer_of_the_wrong_shape_is_refused_naming_the_package_and_url() {
    let (_pk, b) = acme_builder(Some(TOKEN), Framing::Chunked);
    let lookup_url = format!("{}/v1/depot/channels/acme/stable/pkgs/app/latest", b.url());
    let other = "acme/other/1.0.0/20240201000000";
    let mut failures = Vec::new();
    for body in [
        LookupBody::MissingChecksum,
        LookupBody::NoRelease,
        LookupBody::NotJson,
        LookupBody::OtherIdent(other.to_owned()),
    ] {
        b.clear_log();
        b.set_faults(BuilderFaults {
            bad_lookups: 1,
            bad_lookup: body.clone(),
            ..BuilderFaults::default()
        });
        let run = tempfile::tempdir().expect("tmp");
        let case = format!("{body:?}");
        let mut parts = vec!["acme/app", lookup_url.as_str()];
        if let LookupBody::OtherIdent(o) = &body {
            parts.push(o);
        }
        if let Err(e) = refused(run.path(), &b, "acme/app", &parts, &BTreeSet::new(), &case) {
            failures.push(e);
        }
        let log = b.log();
        assert_eq!(b.faults().bad_lookups, 0, "{case}: the fault hit");
        assert_eq!(
            summary(&log).len(),
            1,
            "{case}: the lookup only, not retried, nothing downloaded: {:#?}",
            summary(&log)
        );
    }
    all_ok(&failures);
}

/// A download whose body is longer than its `Content-Length` said. HTTP/1.1 frames a body
/// by `Content-Length`: the client reads that many bytes and no more (the fake closes the
/// connection after the rest), so what it gets is never "the longer body" but the announced
/// prefix. What protects the user is therefore the verification of that prefix:
/// - `Understated` (the whole hart sent, `Content-Length` 1024 bytes short): the client holds
///   a truncated hart, refused by the channel's checksum (`acme/app`) or the signature (the
///   fully qualified ident, no lookup) — exit 1 naming the package and its URL, nothing in
///   the artifact cache.
/// - `TrailingJunk` (`Content-Length` the hart's length, junk after it): the client holds
///   exactly the published hart, which verifies; the export works and the cached file is
///   byte for byte the published one, without the junk.
fn a_download_longer_than_its_content_length_is_never_taken_whole() {
    // The fault always frames with Content-Length, whatever the server's framing.
    let (mut pk, b) = acme_builder(Some(TOKEN), Framing::Chunked);
    let download_url = format!("{}/v1/depot/pkgs/{APP}/download", b.url());
    let good_keys = set(&[pk.public_key_file("acme")]);
    let mut failures = Vec::new();
    for pkg in ["acme/app", APP] {
        b.clear_log();
        b.set_faults(BuilderFaults {
            overlong_downloads: 1,
            overlong: Overlong::Understated(1024),
            ..BuilderFaults::default()
        });
        let run = tempfile::tempdir().expect("tmp");
        let case = format!("{pkg} Understated");
        if let Err(e) = refused(
            run.path(),
            &b,
            pkg,
            &[APP, download_url.as_str()],
            &good_keys,
            &case,
        ) {
            failures.push(e);
        }
        let log = b.log();
        let app = downloads_of(&log, APP);
        assert_eq!(
            app.iter().map(|q| q.faults.clone()).collect::<Vec<_>>(),
            [vec!["overlong_downloads"]],
            "{case}: {:#?}",
            summary(&log)
        );
    }

    b.clear_log();
    b.set_faults(BuilderFaults {
        overlong_downloads: 1,
        overlong: Overlong::TrailingJunk(4096),
        ..BuilderFaults::default()
    });
    let run = tempfile::tempdir().expect("tmp");
    let r = run.path();
    export_ok(r, &b, "acme/app", "img", &["--auth", TOKEN]);
    let log = b.log();
    let app = downloads_of(&log, APP);
    assert_eq!(app.len(), 1, "{:#?}", summary(&log));
    assert_eq!(app[0].faults, ["overlong_downloads"]);
    let published = fs::read(published_path(&b, APP)).expect("published");
    assert_eq!(
        app[0].body_bytes,
        published.len() as u64 + 4096,
        "the junk went out"
    );
    let cached = fs::read(r.join("artifacts").join(hart_name(APP))).expect("cached");
    assert!(
        cached == published,
        "the cached hart is the published one ({} bytes cached, {} published)",
        cached.len(),
        published.len()
    );
    assert!(temporaries(r).is_empty(), "{:?}", temporaries(r));
    all_ok(&failures);
}

/// An export in `r` without faults, after a refused one: the caches did not keep anything
/// that stops it. `Err` with the output when it fails.
fn works_again(r: &Path, b: &BuilderServer, case: &str) -> Result<(), String> {
    b.set_faults(BuilderFaults::default());
    let a = bldr(r)
        .args([
            "export",
            "--url",
            &b.url(),
            "--channel",
            "stable",
            "--no-supervisor",
            "--auth",
            TOKEN,
            "acme/app",
        ])
        .arg("-o")
        .arg(format!("oci:{}", r.join("again-img").display()))
        .assert();
    if a.get_output().status.success() {
        return Ok(());
    }
    Err(format!(
        "{case}: the next export, without the fault, in the same caches:\n- exit {:?}\nstderr: {}\nkey cache: {:?}",
        a.get_output().status.code(),
        stderr_of(&a),
        entries(&r.join("keys"))
    ))
}

/// The origin key fetched to verify `acme/app` is not the key asked for: text that is no
/// key, or a key naming another origin or another revision. The export fails with exit 1
/// naming the package, the key (`acme-REV`) and the key's URL, no key file is left in the
/// key cache, and the next export without the fault works.
fn a_bad_origin_key_is_refused_naming_the_key_and_url_and_not_cached() {
    let (mut pk, b) = acme_builder(Some(TOKEN), Framing::Chunked);
    let acme_key = pk.public_key_file("acme");
    let key_name = acme_key.trim_end_matches(".pub").to_owned();
    let rev = key_name.trim_start_matches("acme-").to_owned();
    let key_url = format!("{}/v1/depot/origins/acme/keys/{rev}", b.url());
    let mut failures = Vec::new();
    for bad in [
        BadKey::Garbage,
        BadKey::OtherName(format!("evil-{rev}")),
        BadKey::OtherName("acme-20000101000000".to_owned()),
    ] {
        let case = format!("{bad:?}");
        bad_key_case(&b, bad, &[APP, &key_name, &key_url], &case, &mut failures);
    }
    all_ok(&failures);
}

/// A well-formed key of the right name and revision whose bytes are another key's (what a
/// Builder serving a replaced key would send): it cannot verify the package. The export
/// fails with exit 1 naming the package, the key and the key's URL; the key is not kept in
/// the key cache, where it would refuse every later package of the origin without Builder
/// being asked again; the next export without the fault works.
fn a_key_that_does_not_verify_the_package_is_not_kept() {
    let (mut pk, b) = acme_builder(Some(TOKEN), Framing::Chunked);
    let acme_key = pk.public_key_file("acme");
    let key_name = acme_key.trim_end_matches(".pub").to_owned();
    let rev = key_name.trim_start_matches("acme-").to_owned();
    let key_url = format!("{}/v1/depot/origins/acme/keys/{rev}", b.url());
    let mut failures = Vec::new();
    bad_key_case(
        &b,
        BadKey::OtherKey,
        &[APP, &key_name, &key_url],
        "OtherKey",
        &mut failures,
    );
    all_ok(&failures);
}

/// `export acme/app` from empty caches with the first key answer `bad`: refused with
/// `parts` and an empty key cache, then an export without the fault works. Problems go to
/// `failures`.
fn bad_key_case(
    b: &BuilderServer,
    bad: BadKey,
    parts: &[&str],
    case: &str,
    failures: &mut Vec<String>,
) {
    b.clear_log();
    b.set_faults(BuilderFaults {
        bad_keys: 1,
        bad_key: bad,
        ..BuilderFaults::default()
    });
    let run = tempfile::tempdir().expect("tmp");
    let r = run.path();
    // No good key either: the one fetch of the key is the bad one.
    if let Err(e) = refused(r, b, "acme/app", parts, &BTreeSet::new(), case) {
        failures.push(e);
    }
    let log = b.log();
    assert_eq!(b.faults().bad_keys, 0, "{case}: the fault hit");
    assert!(
        log.iter()
            .filter(|q| q.route == RouteKind::Key)
            .all(|q| !q.authorization),
        "{case}: {:#?}",
        summary(&log)
    );
    if let Err(e) = works_again(r, b, case) {
        failures.push(e);
    }
}

/// The download of one ident serves another package's hart (under the asked ident's
/// `x-filename`): an older release of the same package, or another package of the origin.
/// For `acme/app` the channel's checksum refuses it, for the fully qualified ident (no
/// lookup) its IDENT does; either way exit 1 naming the ident asked for and the download
/// URL, and nothing in the artifact cache (neither name).
fn a_download_holding_another_package_is_refused_naming_the_one_asked_for() {
    let (mut pk, b) = acme_builder(Some(TOKEN), Framing::Chunked);
    let download_url = format!("{}/v1/depot/pkgs/{APP}/download", b.url());
    let good_keys = set(&[pk.public_key_file("acme")]);
    let mut failures = Vec::new();
    for served in [APP_OLD, LIB] {
        for pkg in ["acme/app", APP] {
            b.clear_log();
            b.set_faults(BuilderFaults {
                swapped_downloads: 1,
                swap_download: Some((APP.to_owned(), published_path(&b, served))),
                ..BuilderFaults::default()
            });
            let run = tempfile::tempdir().expect("tmp");
            let case = format!("{pkg} served {served}");
            if let Err(e) = refused(
                run.path(),
                &b,
                pkg,
                &[APP, download_url.as_str()],
                &good_keys,
                &case,
            ) {
                failures.push(e);
            }
            assert_eq!(b.faults().swapped_downloads, 0, "{case}: the fault hit");
            let log = b.log();
            let app = downloads_of(&log, APP);
            assert_eq!(app.len(), 1, "{case}: not retried: {:#?}", summary(&log));
            assert!(
                downloads_of(&log, served).is_empty(),
                "{case}: {:#?}",
                summary(&log)
            );
        }
    }
    all_ok(&failures);
}

// ---------------------------------------------------------------------------------------
// 4. A Supervisor image from Builder only

fn harts_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .expect("artifacts")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "hart"))
        .collect();
    v.sort();
    v
}

/// The shipped examples on one fake Builder (`--url`, `--channel stable`), the Supervisor's
/// packages (stand-ins for chef/hab, hab-sup, hab-launcher; core/cacerts; a real
/// core/busybox-static) on another, in `stable` only (`--base-pkgs-url`,
/// `--base-pkgs-channel stable`); empty caches. The exported docker-archive loads into
/// docker, and `docker run` goes init.sh → hab sup run → example/hello's run program.
fn supervisor_image_from_builder_runs_in_docker() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let bb = busybox_source(t);
    // The Supervisor's origins' keys beside busybox's `core` key, which also signs cacerts.
    let base_keys = bb.join("keys");
    let chef = SecretKey::generate("chef").expect("key");
    chef.write_pair(&base_keys).expect("keys");
    let core_key = fs::read_dir(&base_keys)
        .expect("keys")
        .map(|e| e.expect("e").path())
        .find(|p| {
            let n = p.file_name().expect("name").to_string_lossy().into_owned();
            n.starts_with("core-") && n.ends_with(".sig.key")
        })
        .expect("core secret key");
    let core = SecretKey::from_file(&core_key).expect("core key");
    let art = t.join("sup-artifacts");
    let mut base_harts = supervisor_stand_ins(t, &chef, &core, &art);
    base_harts.extend(harts_in(&bb.join("artifacts")));
    let base = BuilderServer::start(BuilderConfig {
        keys_dir: base_keys,
        ..BuilderConfig::default()
    })
    .expect("base Builder");
    for h in &base_harts {
        base.add(h, &["stable"]).expect("publish");
    }
    let main = BuilderServer::start(BuilderConfig {
        keys_dir: repo("examples/keys"),
        ..BuilderConfig::default()
    })
    .expect("main Builder");
    for h in harts_in(&repo("examples/artifacts")) {
        main.add(&h, &["stable"]).expect("publish");
    }

    let work = t.join("run");
    fs::create_dir_all(&work).expect("run");
    let name = format!("hab-oci-test/bldr-sup-{}", std::process::id());
    let archive = work.join("img.tar");
    let report = work.join("report.json");
    let a = bldr(&work)
        .args(["export", "--url", &main.url(), "--channel", "stable"])
        .args([
            "--base-pkgs-url",
            &base.url(),
            "--base-pkgs-channel",
            "stable",
        ])
        .args([
            "--image-name",
            &name,
            "--no-tag-version",
            "--no-tag-version-release",
        ])
        .arg("example/hello")
        .arg("-o")
        .arg(format!("docker-archive:{}", archive.display()))
        .arg("--report")
        .arg(&report)
        .assert();
    let out = a.get_output();
    assert!(
        out.status.success(),
        "export failed:\n{}\n{}\nmain: {:#?}\nbase: {:#?}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        summary(&main.log()),
        summary(&base.log())
    );
    let r = read_json(&report);
    assert_eq!(
        r["layers"].as_array().map(Vec::len),
        Some(9),
        "8 packages + extras"
    );
    // The Supervisor's packages came from the base Builder's `stable`, the rest from main.
    let base_lookups: BTreeSet<String> = base.lookups().iter().map(|q| q.path.clone()).collect();
    let want: BTreeSet<String> = [
        "chef/stable/pkgs/hab",
        "chef/stable/pkgs/hab-sup",
        "chef/stable/pkgs/hab-launcher",
        "core/stable/pkgs/busybox-static",
        "core/stable/pkgs/cacerts",
    ]
    .iter()
    .map(|p| format!("/v1/depot/channels/{p}/latest"))
    .collect();
    assert_eq!(base_lookups, want, "{:#?}", summary(&base.log()));
    assert_eq!(base.downloads().len(), 5, "{:#?}", summary(&base.log()));
    assert!(base.downloads().values().all(|&n| n == 1));
    assert_eq!(
        main.lookups()
            .iter()
            .map(|q| q.path.as_str())
            .collect::<Vec<_>>(),
        ["/v1/depot/channels/example/stable/pkgs/hello/latest"]
    );
    assert_eq!(
        main.downloads().keys().cloned().collect::<Vec<_>>(),
        [
            "example/greeting-data/1.0.0/20240101000000",
            "example/hello/0.3.0/20240101000000",
            "example/libhello/1.2.0/20240101000000",
        ]
    );
    assert_eq!(entries(&work.join("artifacts")).len(), 8);
    assert!(temporaries(&work).is_empty(), "{:?}", temporaries(&work));

    run(StdCommand::new("docker").args(["load", "-i"]).arg(&archive));
    let image = format!("{name}:latest");
    let hello = StdCommand::new("docker")
        .args(["run", "--rm", "--network", "none", &image])
        .output()
        .expect("docker run");
    let term = StdCommand::new("docker")
        .args(["run", "--rm", "--network", "none", &image, "term"])
        .output()
        .expect("docker run");
    let _ = StdCommand::new("docker").args(["rmi", &image]).output();
    assert_eq!(
        String::from_utf8_lossy(&hello.stdout),
        GREETING,
        "{}",
        String::from_utf8_lossy(&hello.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&term.stdout),
        "hab sup term\n",
        "{}",
        String::from_utf8_lossy(&term.stderr)
    );
}

// ---------------------------------------------------------------------------------------
// Review findings, kept fixed

/// The token of `--url` never reaches a different `--base-pkgs-url` (Habitat's exporter
/// sends none there).
fn the_token_is_not_sent_to_another_base_url() {
    let (_pk, main) = acme_builder(Some(TOKEN), Framing::Chunked);
    // No token is valid there: one that arrived would be refused with 401.
    let (_pk2, base) = acme_builder(None, Framing::Chunked);
    let run = tempfile::tempdir().expect("tmp");
    let r = run.path();
    // The base Builder has the packages; asking it for a Supervisor that is not there is
    // enough to see what was sent.
    let out = bldr(r)
        .args(["resolve", "--url", &main.url(), "--channel", "stable"])
        .args(["--base-pkgs-url", &base.url(), "--auth", TOKEN])
        .arg("acme/app")
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let x = bldr(r)
        .args(["export", "--url", &main.url(), "--channel", "stable"])
        .args([
            "--base-pkgs-url",
            &base.url(),
            "--base-pkgs-channel",
            "stable",
        ])
        .args([
            "--auth",
            TOKEN,
            "--hab-pkg",
            "acme/lib",
            "--sup-pkg",
            "acme/lib",
        ])
        .args(["--launcher-pkg", "acme/lib", "acme/app", "-o"])
        .arg(format!("oci:{}", r.join("img").display()))
        .output()
        .expect("run");
    // Whatever the export's outcome (the stand-ins are no Supervisor), the base Builder was
    // asked, and never with the token; the main one always with it.
    let _ = x;
    let base_log = base.log();
    assert!(!base_log.is_empty(), "the base Builder was asked");
    assert!(
        base_log.iter().all(|q| !q.authorization),
        "{:#?}",
        summary(&base_log)
    );
    let main_log = main.log();
    assert!(
        main_log
            .iter()
            .filter(|q| q.route != RouteKind::Key)
            .all(|q| q.authorization),
        "{:#?}",
        summary(&main_log)
    );
}

/// A release in the artifact cache does not outrank the channel's latest (only `--source`
/// directories do, as installed packages do for `hab`): one run's channel does not decide
/// the next run's.
fn the_artifact_cache_does_not_outrank_the_channel() {
    let (_pk, b) = acme_builder(None, Framing::Chunked);
    let run = tempfile::tempdir().expect("tmp");
    let r = run.path();
    let resolve = |channel: &str| {
        let out = bldr(r)
            .args([
                "resolve",
                "--url",
                &b.url(),
                "--channel",
                channel,
                "acme/app",
            ])
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(resolve("unstable"), APP_NEXT);
    // APP_NEXT is in the artifact cache now; stable still means stable's latest.
    assert_eq!(resolve("stable"), APP);
}

/// `--keys` names the only keys to trust: no key is fetched, and the error says which is
/// missing.
fn with_keys_given_no_key_is_fetched() {
    let (_pk, b) = acme_builder(None, Framing::Chunked);
    let run = tempfile::tempdir().expect("tmp");
    let r = run.path();
    let mine = r.join("my-keys");
    fs::create_dir_all(&mine).expect("keys dir");
    let out = bldr(r)
        .args([
            "resolve",
            "--url",
            &b.url(),
            "--channel",
            "stable",
            "--keys",
        ])
        .arg(&mine)
        .arg("acme/app")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no public key file acme-"), "{err}");
    assert_eq!(
        b.log().iter().filter(|q| q.route == RouteKind::Key).count(),
        0
    );
    assert!(
        entries(&r.join("keys")).is_empty(),
        "nothing in the key cache"
    );
}

/// A download slower than `$HAB_CLIENT_SOCKET_TIMEOUT` in all is cut off (reqwest's own
/// timeout restarts with every read), tried again, and fails naming the URL.
fn a_stalling_download_is_cut_off() {
    let (_pk, b) = acme_builder(None, Framing::Chunked);
    b.set_faults(BuilderFaults {
        slow_downloads: usize::MAX,
        slow_delay: std::time::Duration::from_millis(700),
        slow_chunk: 64,
        ..BuilderFaults::default()
    });
    let run = tempfile::tempdir().expect("tmp");
    let r = run.path();
    let out = bldr(r)
        .env("HAB_CLIENT_SOCKET_TIMEOUT", "1")
        .args([
            "export",
            "--url",
            &b.url(),
            "--channel",
            "stable",
            "--no-supervisor",
        ])
        .arg("acme/app/1.0.0/20240201000000")
        .arg("-o")
        .arg(format!("oci:{}", r.join("img").display()))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("took longer than 1 s") && err.contains("/download"),
        "{err}"
    );
    assert!(
        entries(&r.join("artifacts"))
            .iter()
            .all(|n| !n.ends_with(".hart") && !n.starts_with(".hab-oci-")),
        "nothing left in the artifact cache"
    );
}

/// A lookup answer larger than any real one (8 MiB) is not read whole: refused, naming the
/// package and the URL.
fn an_oversized_lookup_answer_is_refused() {
    let (_pk, b) = acme_builder(None, Framing::Chunked);
    b.set_faults(BuilderFaults {
        bad_lookups: 1,
        bad_lookup: LookupBody::Huge(9 << 20),
        ..BuilderFaults::default()
    });
    let run = tempfile::tempdir().expect("tmp");
    let err = export_fails(run.path(), &b, "acme/app", &[]);
    assert!(
        err.contains("larger than 8388608 bytes")
            && err.contains("looking up acme/app")
            && err.contains("/latest"),
        "{err}"
    );
    assert!(entries(&run.path().join("artifacts")).is_empty());
}

tests![
    an_oversized_lookup_answer_is_refused,
    the_token_is_not_sent_to_another_base_url,
    the_artifact_cache_does_not_outrank_the_channel,
    with_keys_given_no_key_is_fetched,
    a_stalling_download_is_cut_off,
    resolve_prints_the_latest_release_of_the_channel,
    resolve_of_a_package_missing_from_the_channel_names_channel_target_url_and_where_it_is,
    export_downloads_each_package_and_key_once_then_uses_the_caches,
    an_origin_key_is_fetched_once_for_packages_downloaded_together,
    offline_with_empty_caches_names_the_package_and_says_offline,
    the_url_comes_from_the_flag_then_hab_bldr_url_then_hab_depot_url,
    downloads_retry_a_500_and_a_cut_connection,
    a_corrupted_download_fails_naming_the_package_and_leaves_nothing_behind,
    a_download_without_x_filename_is_retried,
    an_x_filename_with_a_path_is_refused,
    a_wrong_token_gets_a_clear_401_without_the_token,
    a_redirected_download_leaves_the_token_behind,
    a_lookup_answer_of_the_wrong_shape_is_refused_naming_the_package_and_url,
    a_download_longer_than_its_content_length_is_never_taken_whole,
    a_bad_origin_key_is_refused_naming_the_key_and_url_and_not_cached,
    a_key_that_does_not_verify_the_package_is_not_kept,
    a_download_holding_another_package_is_refused_naming_the_one_asked_for,
    supervisor_image_from_builder_runs_in_docker => [Need::Docker],
];
