//! Interrupted and starved runs: Ctrl-C (SIGINT) in the middle of an export stops it, removes
//! every temporary file and directory it made (staging layout, layer cache temporaries,
//! TMPDIR) and leaves the previous output as it was; a full disk (a small tmpfs) is a clear
//! error with nothing partial left behind. (SIGTERM during a push: tests/push.rs.)

use std::fs;
use std::path::Path;
use std::process::{Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::*;

fn closure(dir: &Path, packages: usize, mb: u64, seed: u64) -> hab_oci_testkit::Closure {
    let spec = hab_oci_testkit::ClosureSpec {
        packages,
        total_size: mb << 20,
        block_size: 1 << 20,
        seed,
        ..Default::default()
    };
    hab_oci_testkit::generate(&spec, dir, None).expect("generate")
}

fn ctrl_c_during_an_export_removes_its_temporaries_and_keeps_the_previous_output() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let work = t.join("work");
    let tmpdir = t.join("tmpdir");
    fs::create_dir_all(&work).expect("work");
    fs::create_dir_all(&tmpdir).expect("tmpdir");
    closure(&t.join("old"), 4, 1, 1);
    let export = |src: &Path, cache: &Path| {
        let mut c = hab_oci_process(t);
        c.env("HAB_OCI_CACHE", cache)
            .env("TMPDIR", &tmpdir)
            .current_dir(&work)
            .args(["export", "--no-supervisor", "--source"])
            .arg(src)
            .args(["gen/app", "-o", "oci:out", "-o", "docker-archive:out.tar"]);
        c
    };
    // The previous output.
    let done = export(&t.join("old"), &t.join("cache-old"))
        .output()
        .expect("run");
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let index_before = fs::read(work.join("out/index.json")).expect("index");
    let archive_before = fs::read(work.join("out.tar")).expect("archive");

    // A bigger closure, cold: interrupted while layers are being built into the cache.
    closure(&t.join("new"), 30, 60, 2);
    let cache = t.join("cache-new");
    let mut child = export(&t.join("new"), &cache)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let start = Instant::now();
    let busy = loop {
        let in_cache = !temporaries(&cache).is_empty();
        let staged = !temporaries(&work).is_empty();
        if in_cache || staged {
            break true;
        }
        if start.elapsed() > Duration::from_secs(60) || child.try_wait().expect("wait").is_some() {
            break false;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(busy, "the export never had temporary files to interrupt");
    let signalled = Instant::now();
    run(StdCommand::new("kill").args(["-INT", &child.id().to_string()]));
    let out = child.wait_with_output().expect("wait");
    let stopped_in = signalled.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted by SIGINT"), "{err}");
    assert!(stopped_in < Duration::from_secs(5), "took {stopped_in:?}");
    for dir in [&work, &cache, &tmpdir] {
        assert_eq!(temporaries(dir), Vec::<String>::new(), "{}", dir.display());
    }
    assert_eq!(
        fs::read(work.join("out/index.json")).expect("index"),
        index_before
    );
    assert_eq!(
        fs::read(work.join("out.tar")).expect("archive"),
        archive_before
    );
    // The cache holds only complete entries: the same export now succeeds from it.
    let again = export(&t.join("new"), &cache).output().expect("run");
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}

/// A tmpfs of `size` at a new directory; unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        fs::create_dir_all(at).expect("mountpoint");
        let ok = StdCommand::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mounting a tmpfs at {}", at.display());
        Tmpfs(at.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = StdCommand::new("umount").arg(&self.0).status();
    }
}

fn a_full_disk_is_a_clear_error_and_leaves_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let src = t.join("src");
    closure(&src, 6, 24, 3);
    let small = Tmpfs::mount(&t.join("small"), "6m");
    for (what, cache_on_tmpfs) in [("output", false), ("cache", true)] {
        let dir = small.0.join(what);
        fs::create_dir_all(&dir).expect("dir");
        let cache = if cache_on_tmpfs {
            dir.join("cache")
        } else {
            t.join(format!("cache-{what}"))
        };
        let out = hab_oci(t)
            .env("HAB_OCI_CACHE", &cache)
            .current_dir(&dir)
            .args(["export", "--no-supervisor", "--source"])
            .arg(&src)
            .args(["gen/app", "-o", "oci:out", "-o", "docker-archive:out.tar"])
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what}: {err}");
        assert!(err.contains("No space left on device"), "{what}: {err}");
        let left: Vec<String> = fs::read_dir(&dir)
            .expect("dir")
            .map(|e| e.expect("e").file_name().to_string_lossy().into_owned())
            .filter(|n| n != "cache" && n != "results")
            .collect();
        assert_eq!(
            left,
            Vec::<String>::new(),
            "{what}: nothing partial left: {err}"
        );
        assert_eq!(temporaries(&dir), Vec::<String>::new(), "{what}");
        let _ = fs::remove_dir_all(&dir);
    }
}

tests![
    ctrl_c_during_an_export_removes_its_temporaries_and_keeps_the_previous_output,
    a_full_disk_is_a_clear_error_and_leaves_nothing => [Need::Tmpfs],
];
