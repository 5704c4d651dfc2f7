//! The extras layer (docs/layer-format-v1.md §7): what Habitat's image has outside `/hab/pkgs`:
//! `/etc/passwd` and `/etc/group` by Habitat's user table, `nsswitch.conf`, `resolv.conf`,
//! `/etc/ssl` (with cacerts), `/bin` links, `/init.sh` (with a Supervisor), and the
//! directories a `RUN` step used to make: `/tmp`, `/var/tmp` 1777, `/root` 0750,
//! `/.hab/cache/keys` 0770.

use std::collections::BTreeMap;

use hart::PackageIdent;

/// What an extras entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtraKind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
}

/// Writes `entries` into `w` in order, all with `mtime`; an error names the entry's path.
pub(crate) fn write_entries<S: oci_image::EntrySink + ?Sized>(
    w: &mut S,
    entries: &[ExtraEntry],
    mtime: u64,
) -> Result<(), (String, std::io::Error)> {
    for e in entries {
        let meta = oci_image::EntryMeta {
            mode: e.mode,
            mtime,
        };
        match &e.kind {
            ExtraKind::Dir => w.dir(&e.path, meta),
            ExtraKind::File(bytes) => w.file(&e.path, meta, bytes.len() as u64, &mut &bytes[..]),
            ExtraKind::Symlink(t) => w.symlink(&e.path, t, meta),
        }
        .map_err(|err| (e.path.clone(), err))?;
    }
    Ok(())
}

/// One entry of the extras layer (path relative to `/`, no leading slash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraEntry {
    pub path: String,
    pub kind: ExtraKind,
    pub mode: u32,
}

const DEFAULT_PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
bin:x:1:1:bin:/dev/null:/bin/false\n\
daemon:x:6:6:Daemon User:/dev/null:/bin/false\n\
nobody:x:99:99:Unprivileged User:/dev/null:/bin/false\n";

const DEFAULT_GROUPS: &[(&str, u32)] = &[
    ("root", 0),
    ("bin", 1),
    ("sys", 2),
    ("kmem", 3),
    ("tape", 4),
    ("tty", 5),
    ("daemon", 6),
    ("floppy", 7),
    ("disk", 8),
    ("lp", 9),
    ("dialout", 10),
    ("audio", 11),
    ("video", 12),
    ("utmp", 13),
    ("usb", 14),
    ("cdrom", 15),
    ("adm", 16),
    ("messagebus", 18),
    ("systemd-journal", 23),
    ("input", 24),
    ("mail", 34),
    ("nogroup", 99),
    ("users", 999),
];

const NSSWITCH: &str = "passwd:     files\n\
group:      files\n\
shadow:     files\n\
\n\
hosts:      files dns\n\
networks:   files\n\
\n\
rpc:        files\n\
services:   files\n";

const RESOLV: &str = "nameserver 8.8.8.8\nnameserver 8.8.4.4\n";

/// A passwd line's name, uid, gid.
pub type User = (String, u32, u32);
/// A group line's name, gid, members.
pub type Group = (String, u32, Vec<String>);

const SVC_ID: u32 = 42;
const HAB_ID: u32 = 84;

/// Users (name, uid, gid) and groups (name, gid, members) Habitat adds for the primary
/// service's `SVC_USER`/`SVC_GROUP` (docs/layer-format-v1.md §7), de-duplicated: where Habitat's table would
/// add a second group of the same name, the first one wins and takes the members.
pub fn users_and_groups(svc_user: &str, svc_group: &str) -> (Vec<User>, Vec<Group>) {
    let hab = "hab".to_owned();
    let (users, groups): (Vec<User>, Vec<Group>) = match (svc_user, svc_group) {
        ("root", "root") => (
            vec![(hab.clone(), HAB_ID, HAB_ID)],
            vec![(hab.clone(), HAB_ID, vec![hab])],
        ),
        ("root", "hab") => (
            vec![(hab.clone(), HAB_ID, SVC_ID)],
            vec![(hab.clone(), SVC_ID, vec![hab])],
        ),
        ("root", g) => (
            vec![(hab.clone(), HAB_ID, HAB_ID)],
            vec![
                (g.to_owned(), SVC_ID, vec![]),
                (hab.clone(), HAB_ID, vec![hab]),
            ],
        ),
        ("hab", "hab") => (
            vec![(hab.clone(), SVC_ID, SVC_ID)],
            vec![(hab.clone(), SVC_ID, vec![hab])],
        ),
        ("hab", "root") => (
            vec![(hab.clone(), SVC_ID, HAB_ID)],
            vec![(hab.clone(), HAB_ID, vec![hab])],
        ),
        ("hab", g) => (
            vec![(hab.clone(), SVC_ID, SVC_ID)],
            vec![(g.to_owned(), SVC_ID, vec![hab])],
        ),
        (u, g) => (
            vec![
                (u.to_owned(), SVC_ID, SVC_ID),
                (hab.clone(), HAB_ID, HAB_ID),
            ],
            vec![
                (g.to_owned(), SVC_ID, vec![u.to_owned()]),
                (hab.clone(), HAB_ID, vec![hab]),
            ],
        ),
    };
    let groups_by_gid: Vec<(String, u32)> = groups.iter().map(|g| (g.0.clone(), g.1)).collect();
    let mut out_groups: Vec<Group> = Vec::new();
    for (name, gid, members) in groups {
        if DEFAULT_GROUPS.iter().any(|(n, _)| *n == name) {
            continue;
        }
        match out_groups.iter_mut().find(|g| g.0 == name) {
            Some(existing) => {
                for m in members {
                    if !existing.2.contains(&m) {
                        existing.2.push(m);
                    }
                }
            }
            None => out_groups.push((name, gid, members)),
        }
    }
    // A user's gid names a group line of the table; after de-duplication that group may live
    // under another gid (or be a default group): follow the name, not the number.
    let name_of_gid = |gid: u32| {
        groups_by_gid
            .iter()
            .find(|(_, g)| *g == gid)
            .map(|(n, _)| n.clone())
    };
    let kept_gid = |name: &str| {
        DEFAULT_GROUPS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, g)| *g)
            .or_else(|| out_groups.iter().find(|g| g.0 == name).map(|g| g.1))
    };
    let mut out_users: Vec<User> = Vec::new();
    for (name, uid, gid) in users {
        let gid = name_of_gid(gid).and_then(|n| kept_gid(&n)).unwrap_or(gid);
        if name != "root" && !out_users.iter().any(|x| x.0 == name) {
            out_users.push((name, uid, gid));
        }
    }
    (out_users, out_groups)
}

pub fn passwd(users: &[User]) -> String {
    let mut s = DEFAULT_PASSWD.to_owned();
    for (name, uid, gid) in users {
        s.push_str(&format!("{name}:x:{uid}:{gid}:{name} User:/:/bin/false\n"));
    }
    s
}

pub fn group(groups: &[Group]) -> String {
    let mut s = String::new();
    for (name, gid) in DEFAULT_GROUPS {
        let members = if *name == "bin" { "daemon" } else { "" };
        s.push_str(&format!("{name}:x:{gid}:{members}\n"));
    }
    for (name, gid, members) in groups {
        s.push_str(&format!("{name}:x:{gid}:{}\n", members.join(",")));
    }
    s
}

/// Habitat's `init.sh`: dispatches `docker run` arguments to the Supervisor.
pub fn init_sh(busybox: &PackageIdent, primary_short: &str) -> String {
    format!(
        "#!/hab/pkgs/{busybox}/bin/sh\n\
set -e\n\
\n\
export PATH=\"/bin\"\n\
\n\
case \"$1\" in\n\
  -h|--help|help|-V|--version)\n\
    exec /bin/hab sup \"$@\"\n\
    ;;\n\
  -*)\n\
    exec /bin/hab sup run {primary_short} \"$@\"\n\
    ;;\n\
  *)\n\
    exec /bin/hab sup \"$@\"\n\
    ;;\n\
esac\n"
    )
}

/// Inputs of the extras layer, gathered by the plan.
#[derive(Debug, Clone, Default)]
pub struct ExtrasInput {
    pub svc_user: String,
    pub svc_group: String,
    /// `/bin/<name>` → absolute target, in binlink order (later entries win).
    pub bin_links: Vec<(String, String)>,
    pub cacerts: Option<PackageIdent>,
    /// With a Supervisor: the busybox package (for the shebang) and the primary's `origin/name`.
    pub init: Option<(PackageIdent, String)>,
}

/// The entries of the extras layer, sorted by path (parents before children).
pub fn entries(input: &ExtrasInput) -> Vec<ExtraEntry> {
    let mut map: BTreeMap<String, ExtraEntry> = BTreeMap::new();
    let mut add = |path: &str, kind: ExtraKind, mode: u32| {
        map.insert(
            path.to_owned(),
            ExtraEntry {
                path: path.to_owned(),
                kind,
                mode,
            },
        );
    };
    let (users, groups) = users_and_groups(&input.svc_user, &input.svc_group);
    add("etc", ExtraKind::Dir, 0o755);
    add(
        "etc/passwd",
        ExtraKind::File(passwd(&users).into_bytes()),
        0o644,
    );
    add(
        "etc/group",
        ExtraKind::File(group(&groups).into_bytes()),
        0o644,
    );
    add(
        "etc/nsswitch.conf",
        ExtraKind::File(NSSWITCH.as_bytes().to_vec()),
        0o644,
    );
    add(
        "etc/resolv.conf",
        ExtraKind::File(RESOLV.as_bytes().to_vec()),
        0o644,
    );
    if let Some(c) = &input.cacerts {
        add(
            "etc/ssl",
            ExtraKind::Symlink(format!("/hab/pkgs/{c}/ssl")),
            0o777,
        );
    }
    add("bin", ExtraKind::Dir, 0o755);
    for (name, target) in &input.bin_links {
        add(
            &format!("bin/{name}"),
            ExtraKind::Symlink(target.clone()),
            0o777,
        );
    }
    add("tmp", ExtraKind::Dir, 0o1777);
    add("var", ExtraKind::Dir, 0o755);
    add("var/tmp", ExtraKind::Dir, 0o1777);
    add("root", ExtraKind::Dir, 0o750);
    add(".hab", ExtraKind::Dir, 0o770);
    add(".hab/cache", ExtraKind::Dir, 0o770);
    add(".hab/cache/keys", ExtraKind::Dir, 0o770);
    add("hab", ExtraKind::Dir, 0o775);
    if let Some((busybox, primary)) = &input.init {
        add(
            "init.sh",
            ExtraKind::File(init_sh(busybox, primary).into_bytes()),
            0o755,
        );
    }
    map.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn habitat_user_table() {
        let (u, g) = users_and_groups("hab", "hab");
        assert_eq!(u, vec![("hab".into(), 42, 42)]);
        assert_eq!(g, vec![("hab".into(), 42, vec!["hab".into()])]);
        let (u, g) = users_and_groups("root", "root");
        assert_eq!(u, vec![("hab".into(), 84, 84)]);
        assert_eq!(g, vec![("hab".into(), 84, vec!["hab".into()])]);
        // Habitat would add two `hab` groups here (42 and 84): we keep one.
        let (u, g) = users_and_groups("nginx", "hab");
        assert_eq!(u, vec![("nginx".into(), 42, 42), ("hab".into(), 84, 42)]);
        assert_eq!(
            g,
            vec![("hab".into(), 42, vec!["nginx".into(), "hab".into()])]
        );
        // And a second `root` group is never added; nginx joins the real root group.
        let (u, g) = users_and_groups("nginx", "root");
        assert_eq!(g, vec![("hab".into(), 84, vec!["hab".into()])]);
        assert_eq!(u[0], ("nginx".into(), 42, 0));
        // Every user's gid is a group that exists.
        for (su, sg) in [
            ("nginx", "hab"),
            ("nginx", "root"),
            ("hab", "root"),
            ("root", "www"),
        ] {
            let (u, g) = users_and_groups(su, sg);
            for (name, _, gid) in &u {
                assert!(
                    g.iter().any(|x| x.1 == *gid) || DEFAULT_GROUPS.iter().any(|x| x.1 == *gid),
                    "{su}/{sg}: {name} has gid {gid} with no group"
                );
            }
        }
        let p = passwd(&users_and_groups("hab", "hab").0);
        assert!(p.ends_with("hab:x:42:42:hab User:/:/bin/false\n"));
        assert_eq!(p.lines().count(), 5);
        let gr = group(&users_and_groups("hab", "hab").1);
        assert_eq!(gr.lines().count(), 24);
        assert!(gr.contains("bin:x:1:daemon\n"));
    }
}
