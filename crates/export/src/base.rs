//! An image on a base (`--base-image`), the pure part: the config merged the way users of
//! `FROM base` expect ([`merge_config`]), Habitat's users and groups added to the base's
//! `/etc/passwd` and `/etc/group` ([`merge_passwd`], [`merge_group`], [`id_clashes`]), and
//! the extras that would hide a file of the base ([`hidden_paths`]). Reading the base is
//! `oci_image::base` (local) and `oci-registry` (registry); its layers come first, unchanged.

use std::collections::{BTreeSet, HashMap, HashSet};

use oci_image::base::{BaseFiles, BaseImage};
use oci_image::{HistoryEntry, ImageConfigSpec};

use crate::extras::{ExtraEntry, ExtraKind};

/// The base's reference, as given (OCI annotation: "image reference of the base image").
pub const LABEL_BASE_NAME: &str = "org.opencontainers.image.base.name";
/// The digest the reference resolved to (OCI annotation: "digest of the base image").
pub const LABEL_BASE_DIGEST: &str = "org.opencontainers.image.base.digest";

/// Our config on top of the base's:
/// - `Env`: the base's kept in its order, a variable we set replacing its value in place,
///   ours that the base lacks after it; `PATH` is ours first, then the base's entries not
///   already in it (Habitat's programs win, the base's stay reachable).
/// - `Entrypoint`/`Cmd` as `FROM` does: our entrypoint resets the base's `Cmd` (it was an
///   argument list for the base's entrypoint); our `Cmd` alone keeps the base's entrypoint;
///   neither keeps both of the base's.
/// - `ExposedPorts`: both; `Labels`: the base's, ours on top, then the base's name and
///   digest; `StopSignal`: ours, else the base's.
/// - `User`/`WorkingDir`: ours when the user gave them, else the base's (else ours).
/// - history: the base's layer entries first (one per base layer: the base's entries that
///   made no layer are left out, as our history has one entry per layer), then ours.
///
/// The platform and `created` are ours. The base digest label is the index digest when
/// the base is an index (what its reference resolves to, the same for every platform),
/// else the manifest's.
pub fn merge_config(
    base: &BaseImage,
    ours: &ImageConfigSpec,
    ours_set_user: bool,
    ours_set_workdir: bool,
) -> ImageConfigSpec {
    let b = &base.config;
    let mut out = ours.clone();
    out.env = merge_env(&b.env, &ours.env);
    (out.entrypoint, out.cmd) = match (&ours.entrypoint, &ours.cmd) {
        (Some(e), cmd) => (Some(e.clone()), cmd.clone()),
        (None, Some(c)) => (b.entrypoint.clone(), Some(c.clone())),
        (None, None) => (b.entrypoint.clone(), b.cmd.clone()),
    };
    let ports: BTreeSet<&String> = b.exposed_ports.iter().chain(&ours.exposed_ports).collect();
    out.exposed_ports = ports.into_iter().cloned().collect();
    let mut labels = b.labels.clone();
    labels.extend(ours.labels.clone());
    labels.insert(LABEL_BASE_NAME.to_owned(), base.reference.clone());
    labels.insert(
        LABEL_BASE_DIGEST.to_owned(),
        base.index_digest
            .clone()
            .unwrap_or_else(|| base.manifest_digest.clone()),
    );
    out.labels = labels;
    out.stop_signal = ours.stop_signal.clone().or_else(|| b.stop_signal.clone());
    if !ours_set_user {
        out.user = b.user.clone().or_else(|| ours.user.clone());
    }
    if !ours_set_workdir {
        out.working_dir = b.working_dir.clone().or_else(|| ours.working_dir.clone());
    }
    out.history = base_history(base);
    out.history.extend(ours.history.iter().cloned());
    out
}

/// One history entry per base layer: the base's own, or (a base whose history does not
/// match its layers) one naming the base.
fn base_history(base: &BaseImage) -> Vec<HistoryEntry> {
    let own: Vec<HistoryEntry> = base
        .config
        .history
        .iter()
        .filter(|h| !h.empty_layer)
        .map(|h| HistoryEntry {
            created_by: h.created_by.clone().unwrap_or_default(),
            comment: h.comment.clone(),
        })
        .collect();
    if own.len() == base.layers.len() {
        return own;
    }
    (1..=base.layers.len())
        .map(|i| HistoryEntry {
            created_by: format!("base image {} layer {i}", base.reference),
            comment: None,
        })
        .collect()
}

fn env_key(e: &str) -> &str {
    e.split_once('=').map_or(e, |(k, _)| k)
}

/// `Env` merged as [`merge_config`] says.
pub fn merge_env(base: &[String], ours: &[String]) -> Vec<String> {
    let ours_by_key: HashMap<&str, &String> = ours.iter().map(|e| (env_key(e), e)).collect();
    let mut out: Vec<String> = Vec::with_capacity(base.len() + ours.len());
    let mut seen: HashSet<&str> = HashSet::new();
    for e in base {
        let key = env_key(e);
        if !seen.insert(key) {
            continue;
        }
        out.push(match (key, ours_by_key.get(key)) {
            ("PATH", Some(mine)) => merge_path(mine, e),
            (_, Some(mine)) => (*mine).clone(),
            (_, None) => e.clone(),
        });
    }
    for e in ours {
        if seen.insert(env_key(e)) {
            out.push(e.clone());
        }
    }
    out
}

/// `PATH=ours…:base's entries not in ours`.
fn merge_path(ours: &str, base: &str) -> String {
    let value = |e: &str| e.split_once('=').map_or("", |(_, v)| v).to_owned();
    let (ours, base) = (value(ours), value(base));
    let mut parts: Vec<&str> = Vec::new();
    for p in ours.split(':').chain(base.split(':')) {
        if !p.is_empty() && !parts.contains(&p) {
            parts.push(p);
        }
    }
    format!("PATH={}", parts.join(":"))
}

/// The first field of a passwd/group line; `None` for blank lines and comments.
fn name_of(line: &str) -> Option<&str> {
    let line = line.trim_start();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    line.split(':').next().filter(|n| !n.is_empty())
}

/// The id field (uid or gid, the third) of a passwd/group line.
fn id_of(line: &str) -> Option<u32> {
    line.split(':').nth(2)?.trim().parse().ok()
}

fn merge_table(base: Option<&str>, ours: &str) -> String {
    let Some(base) = base else {
        return ours.to_owned();
    };
    let mut out = base.to_owned();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    let names: HashSet<&str> = base.lines().filter_map(name_of).collect();
    for line in ours.lines() {
        if name_of(line).is_some_and(|n| !names.contains(n)) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The base's `/etc/passwd` (byte for byte) with our users it lacks appended; a user of
/// the same name stays as the base has it. Without a base file, ours.
pub fn merge_passwd(base: Option<&str>, ours: &str) -> String {
    merge_table(base, ours)
}

/// [`merge_passwd`] for `/etc/group`.
pub fn merge_group(base: Option<&str>, ours: &str) -> String {
    merge_table(base, ours)
}

/// Our entries that [`merge_passwd`]/[`merge_group`] add with a uid/gid the base already
/// gives another name (Debian's `shadow` group is gid 42, Habitat's `hab` user and group
/// are 42 too): `(our name, id, the base's name)`. Files of that id then show the base's
/// name; worth a warning, not a refusal.
pub fn id_clashes(base: Option<&str>, ours: &str) -> Vec<(String, u32, String)> {
    let Some(base) = base else {
        return Vec::new();
    };
    let names: HashSet<&str> = base.lines().filter_map(name_of).collect();
    let ids: HashMap<u32, &str> = base
        .lines()
        .filter_map(|l| Some((id_of(l)?, name_of(l)?)))
        .collect();
    ours.lines()
        .filter_map(|l| {
            let name = name_of(l)?;
            let id = id_of(l)?;
            let theirs = ids.get(&id)?;
            (!names.contains(name)).then(|| (name.to_owned(), id, (*theirs).to_owned()))
        })
        .collect()
}

/// The paths (absolute, `/bin/sh`) where an extras entry would hide what the base has
/// there: a file or link over any base path, a directory over a base file or link (a
/// directory over a directory merges). `/etc/passwd` and `/etc/group` are merged instead
/// ([`merge_passwd`]), so never reported.
pub fn hidden_paths(entries: &[ExtraEntry], files: &BaseFiles) -> Vec<String> {
    entries
        .iter()
        .filter(|e| e.path != "etc/passwd" && e.path != "etc/group")
        .filter(|e| {
            let path = e.path.trim_matches('/');
            files.paths.contains(path)
                && match e.kind {
                    ExtraKind::Dir => !files.dirs.contains(path),
                    ExtraKind::File(_) | ExtraKind::Symlink(_) => true,
                }
        })
        .map(|e| format!("/{}", e.path.trim_matches('/')))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_image::base::{BaseConfig, BaseHistory, BaseLayer};
    use oci_image::{Compression, Platform};
    use std::collections::BTreeMap;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    fn base() -> BaseImage {
        let layer = |d: char| BaseLayer {
            digest: format!("sha256:{}", d.to_string().repeat(64)),
            size: 1,
            media_type: Compression::Gzip.media_type().into(),
            diff_id: format!("sha256:{}", "f".repeat(64)),
            compression: Compression::Gzip,
        };
        let h = |by: &str, empty: bool| BaseHistory {
            created_by: Some(by.into()),
            empty_layer: empty,
            ..Default::default()
        };
        BaseImage {
            reference: "127.0.0.1:5000/base:1".into(),
            index_digest: Some("sha256:index".into()),
            manifest_digest: "sha256:manifest".into(),
            manifest: Vec::new(),
            config_digest: "sha256:config".into(),
            config_bytes: Vec::new(),
            config: BaseConfig {
                platform: Platform::host(),
                env: s(&["LANG=C.UTF-8", "PATH=/usr/bin:/bin", "HOME=/root"]),
                user: Some("app".into()),
                working_dir: Some("/srv".into()),
                entrypoint: Some(s(&["/entry"])),
                cmd: Some(s(&["serve"])),
                exposed_ports: s(&["80/tcp", "9631/tcp"]),
                labels: BTreeMap::from([
                    ("a".to_owned(), "base".to_owned()),
                    ("b".to_owned(), "base".to_owned()),
                ]),
                stop_signal: Some("SIGQUIT".into()),
                history: vec![
                    h("ADD rootfs", false),
                    h("ENV LANG", true),
                    h("RUN x", false),
                ],
                diff_ids: Vec::new(),
            },
            layers: vec![layer('a'), layer('b')],
            blobs: None,
        }
    }

    fn ours() -> ImageConfigSpec {
        ImageConfigSpec {
            architecture: "amd64".into(),
            os: "linux".into(),
            created: "2024-01-01T00:00:00Z".into(),
            env: s(&["PATH=/bin:/hab/bin", "HOME=/hab"]),
            cmd: Some(s(&["hab/app"])),
            exposed_ports: s(&["9631/tcp", "9638/tcp"]),
            labels: BTreeMap::from([("b".to_owned(), "ours".to_owned())]),
            history: vec![HistoryEntry {
                created_by: "core/app".into(),
                comment: None,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn config_on_top_of_the_base() {
        let m = merge_config(&base(), &ours(), false, false);
        assert_eq!(
            m.env,
            s(&["LANG=C.UTF-8", "PATH=/bin:/hab/bin:/usr/bin", "HOME=/hab"])
        );
        // Our Cmd alone keeps the base's entrypoint.
        assert_eq!(m.entrypoint, Some(s(&["/entry"])));
        assert_eq!(m.cmd, Some(s(&["hab/app"])));
        assert_eq!(m.exposed_ports, s(&["80/tcp", "9631/tcp", "9638/tcp"]));
        assert_eq!(m.labels["a"], "base");
        assert_eq!(m.labels["b"], "ours");
        assert_eq!(m.labels[LABEL_BASE_NAME], "127.0.0.1:5000/base:1");
        assert_eq!(m.labels[LABEL_BASE_DIGEST], "sha256:index");
        assert_eq!(m.user.as_deref(), Some("app"));
        assert_eq!(m.working_dir.as_deref(), Some("/srv"));
        assert_eq!(m.stop_signal.as_deref(), Some("SIGQUIT"));
        let by: Vec<&str> = m.history.iter().map(|h| h.created_by.as_str()).collect();
        assert_eq!(by, ["ADD rootfs", "RUN x", "core/app"]);
        assert_eq!(m.architecture, "amd64");

        // Our entrypoint resets the base's Cmd; our user and workdir when given.
        let mut o = ours();
        o.entrypoint = Some(s(&["/init.sh"]));
        o.cmd = None;
        o.user = Some("hab".into());
        o.working_dir = None;
        let m = merge_config(&base(), &o, true, true);
        assert_eq!((m.entrypoint, m.cmd), (Some(s(&["/init.sh"])), None));
        assert_eq!(m.user.as_deref(), Some("hab"));
        assert_eq!(m.working_dir, None);

        // Neither: the base's both; a base without an index pins its manifest.
        let mut o = ours();
        o.cmd = None;
        let mut b = base();
        b.index_digest = None;
        b.config.history.clear();
        let m = merge_config(&b, &o, false, false);
        assert_eq!(
            (m.entrypoint, m.cmd),
            (Some(s(&["/entry"])), Some(s(&["serve"])))
        );
        assert_eq!(m.labels[LABEL_BASE_DIGEST], "sha256:manifest");
        assert_eq!(m.history.len(), 3, "one per base layer, then ours");
        assert_eq!(
            m.history[0].created_by,
            "base image 127.0.0.1:5000/base:1 layer 1"
        );
    }

    #[test]
    fn env_and_path() {
        assert_eq!(
            merge_env(&s(&["PATH=/a:/b"]), &s(&["PATH=/b:/c"])),
            s(&["PATH=/b:/c:/a"])
        );
        assert_eq!(merge_env(&[], &s(&["PATH=/bin"])), s(&["PATH=/bin"]));
        assert_eq!(merge_env(&s(&["PATH=/bin"]), &[]), s(&["PATH=/bin"]));
        assert_eq!(
            merge_env(&s(&["A=1", "A=2", "B"]), &s(&["C=3"])),
            s(&["A=1", "B", "C=3"])
        );
    }

    #[test]
    fn users_join_the_base_table() {
        let base = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false";
        let ours = crate::extras::passwd(&crate::extras::users_and_groups("hab", "hab").0);
        let merged = merge_passwd(Some(base), &ours);
        assert!(
            merged.starts_with(&format!("{base}\n")),
            "the base's lines first, as they are"
        );
        assert!(merged.ends_with("hab:x:42:42:hab User:/:/bin/false\n"));
        // Habitat's root and nobody are the base's; its bin and daemon are added.
        let named = |n: &str| merged.lines().filter(|l| l.starts_with(n)).count();
        assert_eq!((named("root:"), named("nobody:")), (1, 1));
        assert!(merged.contains("\ndaemon:x:6:6:"));
        assert_eq!(merge_passwd(None, &ours), ours);

        let base_groups = "root:x:0:\nshadow:x:42:\nhab:x:1000:someone\n";
        let ours = crate::extras::group(&crate::extras::users_and_groups("hab", "hab").1);
        let merged = merge_group(Some(base_groups), &ours);
        assert!(
            merged.contains("\nhab:x:1000:someone\n"),
            "the base's hab group is kept"
        );
        assert_eq!(merged.matches("\nhab:").count(), 1);
        assert!(merged.contains("\nnogroup:x:99:\n"));
        let clashes = id_clashes(Some("root:x:0:\nshadow:x:42:\n"), &ours);
        assert_eq!(clashes, [("hab".to_owned(), 42, "shadow".to_owned())]);
    }

    #[test]
    fn extras_that_hide_base_files() {
        let files = BaseFiles {
            passwd: None,
            group: None,
            paths: [
                "bin",
                "bin/sh",
                "etc",
                "etc/passwd",
                "etc/resolv.conf",
                "lib",
                "tmp",
            ]
            .into_iter()
            .map(str::to_owned)
            .collect(),
            dirs: ["etc", "tmp"].into_iter().map(str::to_owned).collect(),
        };
        let input = crate::extras::ExtrasInput {
            svc_user: "hab".into(),
            svc_group: "hab".into(),
            bin_links: vec![("sh".into(), "/hab/pkgs/core/busybox/bin/sh".into())],
            ..Default::default()
        };
        let entries = crate::extras::entries(&input);
        // `bin` is a link in the base (merged /usr): our directory replaces it.
        assert_eq!(
            hidden_paths(&entries, &files),
            ["/bin", "/bin/sh", "/etc/resolv.conf"]
        );
    }
}

/// The base under a plan: its layers (bottom of the image, unchanged) and what the report
/// and the SBOM say of it.
#[derive(Debug, Clone)]
pub struct PlanBase {
    /// As given (`--base-image`).
    pub reference: String,
    /// What the reference resolved to (the index's digest when it is an index).
    pub digest: String,
    /// The platform manifest taken.
    pub manifest_digest: String,
    /// Bottom to top, with where their bytes are.
    pub layers: Vec<(oci_image::LayerDescriptor, std::path::PathBuf)>,
    /// `registry/repository` of a registry base, for mounting its layers on push.
    pub repository: Option<String>,
}

/// [`merge_passwd`] or [`merge_group`].
type Merge = fn(Option<&str>, &str) -> String;

/// Puts `plan` on `base`: config merged ([`merge_config`]), Habitat's users and groups
/// added to the base's files, the base's layers under the plan's. Returns the warnings: our
/// extras that hide a base file, ids that clash.
pub fn apply(
    plan: &mut crate::ImagePlan,
    base: &crate::base_source::Based,
    user_set: bool,
    workdir_set: bool,
) -> Result<Vec<String>, crate::ExportError> {
    let image = &base.image;
    let files = &base.files;
    let mut warnings: Vec<String> = hidden_paths(&plan.extras, files)
        .into_iter()
        .map(|p| {
            format!("the base image's {p} is hidden by the same path in hab-oci's extras layer")
        })
        .collect();
    // A base that has the file but whose text could not be taken (a link, a hard link,
    // too large) would lose its users silently: say so.
    for (path, text) in [("etc/passwd", &files.passwd), ("etc/group", &files.group)] {
        if text.is_none() && files.paths.contains(path) {
            warnings.push(format!(
                "the base image's /{path} could not be read (a link, or too large): the image's /{path} has Habitat's entries only"
            ));
        }
    }
    for e in &mut plan.extras {
        let (base_text, merge, what): (Option<&str>, Merge, &str) = match e.path.as_str() {
            "etc/passwd" => (files.passwd.as_deref(), merge_passwd, "user"),
            "etc/group" => (files.group.as_deref(), merge_group, "group"),
            _ => continue,
        };
        let ExtraKind::File(bytes) = &e.kind else {
            continue;
        };
        let ours = String::from_utf8_lossy(bytes).into_owned();
        for (name, id, theirs) in id_clashes(base_text, &ours) {
            warnings.push(format!(
                "Habitat's {what} {name} has id {id}, which the base image's /{} gives to {theirs}",
                e.path
            ));
        }
        e.kind = ExtraKind::File(merge(base_text, &ours).into_bytes());
    }
    plan.config = merge_config(image, &plan.config, user_set, workdir_set);
    plan.base = Some(PlanBase {
        reference: image.reference.clone(),
        digest: image
            .index_digest
            .clone()
            .unwrap_or_else(|| image.manifest_digest.clone()),
        manifest_digest: image.manifest_digest.clone(),
        layers: base.layers()?,
        repository: base.repository.clone(),
    });
    Ok(warnings)
}
