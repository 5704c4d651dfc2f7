//! Every local output (`oci:DIR`, `oci-archive:FILE`, `docker-archive:FILE`) taken by the real
//! loaders: `podman load` (and `podman run`), containerd's `ctr images import` (and `ctr run`),
//! `docker load` (and `docker run`) and `skopeo copy`; podman and ctr on state of their own,
//! docker under names of this process, everything loaded removed at the end.
//!
//! The image is the shipped examples' closure (`example/hello`, whose `run` is a static
//! program that prints the greeting, and its two dependencies), exported once per test with
//! hab-oci's default three tags, the case loaders handle least alike.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Output, Stdio};

mod common;
use common::*;

const GREETING: &str = "Hello from a Habitat package, shipped as its own image layer.\n";
const IDENT: &str = "example/hello/0.3.0/20240101000000";
/// The tags hab-oci gives `example/hello` by default.
const TAGS: [&str; 3] = ["latest", "0.3.0", "0.3.0-20240101000000"];

/// One export to the three local outputs, in a temporary directory.
struct Exported {
    tmp: tempfile::TempDir,
    /// Unique per process, so concurrent runs sharing a daemon do not meet.
    name: String,
    manifest_digest: String,
    config_digest: String,
}

impl Exported {
    fn new() -> Exported {
        let tmp = tempfile::tempdir().expect("tmp");
        let name = format!("hab-oci-test/loaders-{}", std::process::id());
        let report = export(tmp.path(), &name, &[]);
        let digest = |key: &str| report[key].as_str().expect(key).to_owned();
        let (manifest_digest, config_digest) = (digest("manifest_digest"), digest("config_digest"));
        Exported {
            tmp,
            name,
            manifest_digest,
            config_digest,
        }
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.tmp.path().join(sub)
    }

    /// `NAME:TAG` for every default tag.
    fn references(&self) -> Vec<String> {
        TAGS.iter().map(|t| format!("{}:{t}", self.name)).collect()
    }
}

/// Exports the examples' `example/hello` into `dir` as `oci:out`, `oci-archive:img.oci.tar` and
/// `docker-archive:img.tar` (plus `extra` flags); returns the report.
fn export(dir: &Path, name: &str, extra: &[&str]) -> serde_json::Value {
    let report = dir.join("report.json");
    hab_oci(dir)
        .current_dir(dir)
        .args(["export", "--source"])
        .arg(repo("examples"))
        .args(["--no-supervisor", "example/hello", "--image-name", name])
        .args(["-o", "oci:out", "-o", "oci-archive:img.oci.tar"])
        .args(["-o", "docker-archive:img.tar"])
        .args(extra)
        .arg("--report")
        .arg(&report)
        .assert()
        .success();
    read_json(&report)
}

/// Runs a command that must fail; returns its output.
fn fails(cmd: &mut StdCommand) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        !out.status.success(),
        "{cmd:?} succeeded:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// podman as root on its own store: vfs storage (no overlay mounts needed), a containers.conf
/// of its own (CONTAINERS_CONF) so nothing outside the temporary directory is read for the
/// engine or written (libpod's tmp dir, the unpacked copy of an archive being loaded, the
/// network config dir). Everything it loaded goes with the directory.
struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    fn new() -> Podman {
        let dir = tempfile::tempdir().expect("tmp");
        let d = dir.path();
        // No systemd in the test container: cgroupfs and a file for events. podman as root
        // raises the container's nofile/nproc limits to 1048576/4194304 unless told
        // otherwise, above what this container may grant ("error setting rlimits for ready
        // process: ... operation not permitted"): ask for limits every machine allows.
        let conf = format!(
            "[containers]\n\
             default_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
             [engine]\n\
             cgroup_manager = \"cgroupfs\"\n\
             events_logger = \"file\"\n\
             tmp_dir = \"{}\"\n\
             image_copy_tmp_dir = \"{}\"\n\
             [network]\n\
             network_config_dir = \"{}\"\n",
            d.join("tmp").display(),
            d.join("copy").display(),
            d.join("net").display()
        );
        fs::write(d.join("containers.conf"), conf).expect("containers.conf");
        fs::create_dir(d.join("copy")).expect("mkdir");
        Podman { dir }
    }

    fn cmd(&self) -> StdCommand {
        let d = self.dir.path();
        let mut c = StdCommand::new("podman");
        c.env("CONTAINERS_CONF", d.join("containers.conf"))
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("run"))
            .args(["--storage-driver", "vfs"]);
        c
    }

    /// `REPOSITORY:TAG` of every image in the store.
    fn names(&self) -> Vec<String> {
        let out = run(self
            .cmd()
            .args(["images", "--format", "{{.Repository}}:{{.Tag}}"]));
        sorted(out.lines().map(str::to_owned).collect())
    }

    fn image_id(&self, image: &str) -> String {
        let out = run(self
            .cmd()
            .args(["image", "inspect", "--format", "{{.Id}}", image]));
        format!("sha256:{}", out.trim())
    }

    /// `podman run --rm` of `image` (a name or an ID); its stdout.
    fn run_image(&self, image: &str) -> String {
        run(self.cmd().args(["run", "--rm", "--network", "none", image]))
    }

    fn remove_all(&self) {
        run(self.cmd().args(["rmi", "--all", "--force"]));
        assert!(self.names().is_empty());
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // What a failure half-way left: containers (runs use --rm) and images, whose files
        // under the store go with the temporary directory anyway.
        let _ = self.cmd().args(["rm", "--all", "--force"]).output();
        let _ = self.cmd().args(["rmi", "--all", "--force"]).output();
    }
}

/// podman loads both archives with every tag and runs them; the oci: directory, which lists
/// the image once per tag, it refuses to `load` (it loads a layout only when its index has one
/// descriptor: podman#4646, still so in podman 5) and takes with `podman pull oci:DIR:TAG`.
/// With a single tag the oci-archive is the plain OCI layout, which podman loads as such.
fn podman_loads_the_archives_and_runs_them() {
    let e = Exported::new();
    let podman = Podman::new();
    let want: Vec<String> = sorted(
        e.references()
            .iter()
            .map(|r| format!("localhost/{r}"))
            .collect(),
    );
    for archive in ["img.tar", "img.oci.tar"] {
        run(podman.cmd().args(["load", "-i"]).arg(e.path(archive)));
        assert_eq!(podman.names(), want, "{archive}: every tag");
        assert_eq!(
            podman.image_id(&format!("{}:latest", e.name)),
            e.config_digest,
            "{archive}: the image ID is our config digest"
        );
        for r in e.references() {
            assert_eq!(podman.run_image(&r), GREETING, "{archive}: {r}");
        }
        podman.remove_all();
    }

    // Relative paths for directories: podman names an image loaded or pulled from an oci:
    // directory after the path it was given (`localhost/PATH`), which must be a valid
    // reference; the temporary directory's name (`.tmpXXXXXX`) is not.
    let refused = fails(
        podman
            .cmd()
            .args(["load", "-i", "out"])
            .current_dir(e.tmp.path()),
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("more than one image in oci, choose an image"),
        "{stderr}"
    );
    for tag in TAGS {
        let id = run(podman
            .cmd()
            .args(["pull", "-q", &format!("oci:out:{tag}")])
            .current_dir(e.tmp.path()));
        let id = format!("sha256:{}", id.trim());
        assert_eq!(id, e.config_digest, "oci:out:{tag}");
        assert_eq!(podman.run_image(&id), GREETING);
    }
    podman.remove_all();

    // One tag: one descriptor. podman loads the oci-archive through its OCI path (naming it
    // from io.containerd.image.name) and the directory too (naming it after the directory:
    // containers/image's oci: transport ignores the annotations).
    let one = e.path("one");
    fs::create_dir(&one).expect("mkdir");
    export(
        &one,
        &e.name,
        &["--no-tag-version", "--no-tag-version-release"],
    );
    let mut members = Vec::new();
    let mut tar = tar::Archive::new(fs::File::open(one.join("img.oci.tar")).expect("archive"));
    for entry in tar.entries().expect("entries") {
        members.push(
            entry
                .expect("entry")
                .path()
                .expect("path")
                .display()
                .to_string(),
        );
    }
    assert!(
        !members.contains(&"manifest.json".to_owned()),
        "{members:?}"
    );
    run(podman
        .cmd()
        .args(["load", "-i"])
        .arg(one.join("img.oci.tar")));
    assert_eq!(podman.names(), [format!("localhost/{}:latest", e.name)]);
    assert_eq!(podman.run_image(&format!("{}:latest", e.name)), GREETING);
    podman.remove_all();
    run(podman.cmd().args(["load", "-i", "out"]).current_dir(&one));
    assert_eq!(podman.names(), ["localhost/out:latest"]);
    assert_eq!(podman.run_image("localhost/out:latest"), GREETING);
}

/// containerd's `ctr` on dockerd's containerd, in a namespace of its own (removed at the end,
/// with what was imported into it). The native snapshotter copies files: it works wherever
/// overlayfs inside this container may not.
struct Ctr {
    address: String,
    namespace: String,
}

impl Ctr {
    fn new() -> Ctr {
        // dockerd starts its own containerd (here) unless a system one runs (there).
        let address = [
            "/var/run/docker/containerd/containerd.sock",
            "/run/containerd/containerd.sock",
        ]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("no containerd socket: neither dockerd's nor the system's")
        .to_owned();
        Ctr {
            address,
            namespace: format!("hab-oci-test-{}", std::process::id()),
        }
    }

    fn cmd(&self) -> StdCommand {
        let mut c = StdCommand::new("ctr");
        c.args(["--address", &self.address, "--namespace", &self.namespace]);
        c
    }

    fn import(&self) -> StdCommand {
        let mut c = self.cmd();
        c.args(["images", "import", "--snapshotter", "native"]);
        c
    }

    /// Each image's reference and manifest digest.
    fn images(&self) -> Vec<String> {
        let out = run(self.cmd().args(["images", "ls"]));
        sorted(
            out.lines()
                .skip(1)
                .map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    format!("{}@{}", f[0], f[2])
                })
                .collect(),
        )
    }

    /// `ctr run --rm`'s stdout. ctr reads the container's output through FIFOs it opens
    /// as the task starts; on a loaded machine a program that exits at once can be gone
    /// before they are read, and ctr then prints nothing, though it succeeded (seen here
    /// once in a full test run). An empty output is retried, twice at most: the image ran;
    /// a wrong output is never retried.
    fn run_image(&self, image: &str, id: &str) -> String {
        let mut out = String::new();
        for _ in 0..3 {
            out = run(self
                .cmd()
                .args(["run", "--rm", "--snapshotter", "native", image, id]));
            if !out.is_empty() {
                break;
            }
        }
        out
    }

    fn remove_all(&self) {
        let refs = run(self.cmd().args(["images", "ls", "-q"]));
        if !refs.trim().is_empty() {
            // --sync: wait for the garbage collector, so content and snapshots are gone too.
            run(self
                .cmd()
                .args(["images", "rm", "--sync"])
                .args(refs.split_whitespace()));
        }
    }
}

impl Drop for Ctr {
    fn drop(&mut self) {
        // A run that failed half-way may leave its container (`--rm` removes it on success).
        if let Ok(out) = self.cmd().args(["containers", "ls", "-q"]).output() {
            let ids = String::from_utf8_lossy(&out.stdout).into_owned();
            if !ids.trim().is_empty() {
                let _ = self
                    .cmd()
                    .args(["containers", "rm"])
                    .args(ids.split_whitespace())
                    .output();
            }
        }
        self.remove_all();
        let _ = StdCommand::new("ctr")
            .args([
                "--address",
                &self.address,
                "namespaces",
                "rm",
                &self.namespace,
            ])
            .output();
    }
}

/// `ctr images import` takes both archives, naming the image by io.containerd.image.name with
/// every tag, and `ctr run` runs it. It imports only a tar stream, so the oci: directory goes
/// in as `tar -C DIR -c .`: the same layout.
fn containerd_imports_every_output_and_runs_it() {
    let e = Exported::new();
    let ctr = Ctr::new();
    let want: Vec<String> = sorted(
        e.references()
            .iter()
            .map(|r| format!("{r}@{}", e.manifest_digest))
            .collect(),
    );
    for archive in ["img.oci.tar", "img.tar"] {
        run(ctr.import().arg(e.path(archive)));
        assert_eq!(ctr.images(), want, "{archive}");
        for (i, r) in e.references().iter().enumerate() {
            let id = format!("{}-{i}", ctr.namespace);
            assert_eq!(ctr.run_image(r, &id), GREETING, "{archive}: {r}");
        }
        ctr.remove_all();
        assert!(ctr.images().is_empty());
    }

    let mut tar = StdCommand::new("tar")
        .arg("-C")
        .arg(e.path("out"))
        .args(["-cf", "-", "."])
        .stdout(Stdio::piped())
        .spawn()
        .expect("tar");
    let stdout = tar.stdout.take().expect("stdout");
    run(ctr.import().arg("-").stdin(stdout));
    assert!(tar.wait().expect("tar").success());
    assert_eq!(ctr.images(), want, "oci:out through tar");
    let latest = format!("{}:latest", e.name);
    assert_eq!(
        ctr.run_image(&latest, &format!("{}-dir", ctr.namespace)),
        GREETING
    );
}

/// `docker load` (dockerd 20.10, which reads manifest.json) takes the docker-archive, and the
/// oci-archive too: with several tags it carries the same manifest.json (a one-tag
/// oci-archive is the plain OCI layout, which only Docker 25 and later load). `docker run`
/// runs it and the image ID is our config digest.
fn docker_loads_the_archives_and_runs_them() {
    /// Removes the loaded tags, also when an assertion fails.
    struct Loaded(Vec<String>);
    impl Drop for Loaded {
        fn drop(&mut self) {
            let _ = StdCommand::new("docker")
                .args(["rmi", "--force"])
                .args(&self.0)
                .output();
        }
    }
    let e = Exported::new();
    let _loaded = Loaded(e.references());
    for archive in ["img.tar", "img.oci.tar"] {
        let out = run(StdCommand::new("docker")
            .args(["load", "-i"])
            .arg(e.path(archive)));
        for r in e.references() {
            assert!(
                out.contains(&format!("Loaded image: {r}\n")),
                "{archive}: {out}"
            );
            let id = run(
                StdCommand::new("docker").args(["image", "inspect", "--format", "{{.Id}}", &r])
            );
            assert_eq!(id.trim(), e.config_digest, "{archive}: {r}");
        }
        let out = run(StdCommand::new("docker").args([
            "run",
            "--rm",
            "--network",
            "none",
            &format!("{}:latest", e.name),
        ]));
        run(StdCommand::new("docker").arg("rmi").args(e.references()));
        assert_eq!(out, GREETING, "{archive}");
    }
}

/// `skopeo copy` from each output: the OCI layout and the oci-archive (by tag) copy to an OCI
/// layout with our manifest digest and to `dir:` with our manifest bytes; the docker-archive,
/// which containers/image reads as Docker's format with uncompressed layers, copies to `dir:`
/// with our config byte for byte and our diff_ids as its layers.
fn skopeo_copies_every_output() {
    let e = Exported::new();
    let copies = e.path("copies");
    fs::create_dir(&copies).expect("mkdir");
    let manifest = fs::read(
        e.path("out/blobs/sha256")
            .join(e.manifest_digest.trim_start_matches("sha256:")),
    )
    .expect("our manifest");
    let config = fs::read(
        e.path("out/blobs/sha256")
            .join(e.config_digest.trim_start_matches("sha256:")),
    )
    .expect("our config");
    let skopeo = |from: String, to: String| {
        run(StdCommand::new("skopeo").args(["copy", "-q", &from, &to]));
    };
    let sources = [
        format!("oci:{}:latest", e.path("out").display()),
        format!("oci-archive:{}:latest", e.path("img.oci.tar").display()),
    ];
    for (i, from) in sources.into_iter().enumerate() {
        let layout = copies.join(format!("layout-{i}"));
        skopeo(from.clone(), format!("oci:{}:latest", layout.display()));
        let index = read_json(&layout.join("index.json"));
        assert_eq!(index["manifests"][0]["digest"], e.manifest_digest, "{from}");
        let dir = copies.join(format!("dir-{i}"));
        skopeo(from.clone(), format!("dir:{}", dir.display()));
        assert_eq!(
            fs::read(dir.join("manifest.json")).expect("m"),
            manifest,
            "{from}"
        );
    }

    let dir = copies.join("dir-docker");
    skopeo(
        format!("docker-archive:{}", e.path("img.tar").display()),
        format!("dir:{}", dir.display()),
    );
    let copied = read_json(&dir.join("manifest.json"));
    assert_eq!(copied["config"]["digest"], e.config_digest);
    let config_json: serde_json::Value = serde_json::from_slice(&config).expect("config");
    assert_eq!(
        copied["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .map(|l| l["digest"].clone())
            .collect::<Vec<_>>(),
        *config_json["rootfs"]["diff_ids"]
            .as_array()
            .expect("diff_ids")
    );
    assert_eq!(
        fs::read(dir.join(e.config_digest.trim_start_matches("sha256:"))).expect("config"),
        config
    );
    let labels = &config_json["config"]["Labels"];
    assert_eq!(labels["sh.habitat.package.ident"], IDENT);
}

/// A two-platform export (the default three tags): podman loads the oci-archive and runs
/// the host's image, ctr imports it and runs the host's image, docker loads the docker-archive
/// (the host's image alone), skopeo copies the whole index. The layout with its index
/// is what `skopeo copy --all` keeps digest for digest.
fn a_multi_platform_output_loads_the_hosts_image() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let src = two_platform_source(t, &["x86_64-linux", "aarch64-linux"]);
    let name = format!("hab-oci-test/loaders-multi-{}", std::process::id());
    let report = t.join("report.json");
    hab_oci(t)
        .current_dir(t)
        .args(["export", "--no-supervisor", "--sbom", "none", "--source"])
        .arg(&src)
        .args([
            "--target",
            "x86_64-linux,aarch64-linux",
            "--image-name",
            &name,
        ])
        .args(["--no-tag-version", "--no-tag-version-release"])
        .args(["-o", "oci:out", "-o", "oci-archive:img.oci.tar"])
        .args(["-o", "docker-archive:img.tar", "--report"])
        .arg(&report)
        .arg("gen/app")
        .assert()
        .success();
    let report = read_json(&report);
    let index = report["index_digest"].as_str().expect("index").to_owned();
    let amd64 = report["platforms"][1]["manifest_digest"]
        .as_str()
        .expect("amd64")
        .to_owned();
    let reference = format!("{name}:latest");
    let said = "hello from gen/app\n";
    let tags = ["latest", "1.0.0", "1.0.0-20240101000000"];

    let podman = Podman::new();
    run(podman
        .cmd()
        .arg("load")
        .arg("-i")
        .arg(t.join("img.oci.tar")));
    let arch = run(podman.cmd().args([
        "image",
        "inspect",
        "--format",
        "{{.Architecture}}",
        &reference,
    ]));
    assert_eq!(arch.trim(), "amd64");
    // podman 4.3 takes it (the one that refuses a one-image archive listed under several
    // tags without `manifest.json`), naming what it loaded after one of them.
    let names = podman.names();
    assert!(
        names
            .iter()
            .any(|n| tags.iter().any(|t| *n == format!("localhost/{name}:{t}"))),
        "{names:?}"
    );
    assert_eq!(podman.run_image(&reference), said);

    let ctr = Ctr::new();
    run(ctr.import().arg(t.join("img.oci.tar")));
    let listed = ctr.images();
    assert!(
        listed.iter().any(|l| l.ends_with(&index)),
        "ctr keeps the index: {listed:?}"
    );
    let id = format!("{}-multi", ctr.namespace);
    assert_eq!(ctr.run_image(&reference, &id), said);
    ctr.remove_all();

    run(StdCommand::new("docker")
        .arg("load")
        .arg("-i")
        .arg(t.join("img.tar")));
    let digest = run(StdCommand::new("docker").args([
        "image",
        "inspect",
        "--format",
        "{{.Architecture}}",
        &reference,
    ]));
    let ran = run(StdCommand::new("docker").args(["run", "--rm", "--network", "none", &reference]));
    let _ = StdCommand::new("docker")
        .args(["rmi", "-f", &reference])
        .output();
    assert_eq!(digest.trim(), "amd64");
    assert_eq!(ran, said);

    for from in ["oci:out:latest", "oci-archive:img.oci.tar:latest"] {
        let _ = fs::remove_dir_all(t.join("copy"));
        run(StdCommand::new("skopeo").current_dir(t).args([
            "copy",
            "-q",
            "--all",
            from,
            "oci:copy:latest",
        ]));
        let raw = run(StdCommand::new("skopeo").current_dir(t).args([
            "inspect",
            "--raw",
            "oci:copy:latest",
        ]));
        assert_eq!(oci_image::sha256_digest(raw.as_bytes()), index, "{from}");
        assert!(raw.contains(&amd64), "{from}");
    }
}

tests![
    a_multi_platform_output_loads_the_hosts_image => [
        Need::Tool("podman"),
        Need::Tool("ctr"),
        Need::Tool("skopeo"),
        Need::Docker,
        Need::File("/bin/busybox"),
    ],
    podman_loads_the_archives_and_runs_them => [Need::Tool("podman")],
    containerd_imports_every_output_and_runs_it => [Need::Docker, Need::Tool("ctr")],
    docker_loads_the_archives_and_runs_them => [Need::Docker],
    skopeo_copies_every_output => [Need::Tool("skopeo")],
];
