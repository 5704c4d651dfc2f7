//! Where a package's files live: `hab/pkgs/ORIGIN/NAME/VERSION/RELEASE/`, and the parent
//! directories above it. One home for these rules, because they are a security rule: every
//! entry of a package must stay inside its own prefix (the metadata reader, the layer
//! rewriter, grouped-layer replay and the engines' build context all ask here).

use std::path::{Component, Path};

use crate::PackageIdent;

/// `hab/pkgs/O/N/V/R` (no leading slash) of a fully qualified ident.
pub fn prefix(ident: &PackageIdent) -> String {
    format!("hab/pkgs/{ident}")
}

/// The parents of a package's prefix, outermost first: `hab`, `hab/pkgs`, `hab/pkgs/O`,
/// `hab/pkgs/O/N`, `hab/pkgs/O/N/V`.
pub fn parent_dirs(ident: &PackageIdent) -> [String; 5] {
    [
        "hab".to_owned(),
        "hab/pkgs".to_owned(),
        format!("hab/pkgs/{}", ident.origin),
        format!("hab/pkgs/{}/{}", ident.origin, ident.name),
        format!(
            "hab/pkgs/{}/{}/{}",
            ident.origin,
            ident.name,
            ident.version.as_deref().unwrap_or_default()
        ),
    ]
}

/// A tar entry's path as `a/b/c`: `.` components dropped; `None` for an absolute path, a
/// `..` component, a name that is not UTF-8, or nothing at all — such an entry would land
/// outside any package.
pub fn normalize(path: &Path) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_str()?),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Of a normalized path under some package's prefix: (`O/N/V/R`, the rest, possibly empty).
pub fn split_prefix(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("hab/pkgs/")?;
    let mut end = 0;
    for (n, part) in rest.split('/').enumerate() {
        if n == 4 {
            break;
        }
        if part.is_empty() {
            return None;
        }
        end += part.len() + usize::from(n > 0);
        if n == 3 {
            let after = &rest[end..];
            return match after.strip_prefix('/') {
                Some(r) => Some((&rest[..end], r)),
                None if after.is_empty() => Some((&rest[..end], "")),
                None => None,
            };
        }
    }
    None
}

/// The ident whose prefix a normalized path is under, if any.
pub fn ident_of(path: &str) -> Option<PackageIdent> {
    PackageIdent::parse_fq(split_prefix(path)?.0).ok()
}

/// Is a normalized path one of `hab`, `hab/pkgs`, `hab/pkgs/O`, `hab/pkgs/O/N`,
/// `hab/pkgs/O/N/V` (the parents of some prefix)?
pub fn is_parent_dir(path: &str) -> bool {
    let p: Vec<&str> = path.split('/').collect();
    p[0] == "hab" && p.len() <= 5 && (p.len() < 2 || p[1] == "pkgs")
}

/// Is a normalized path a parent directory of `prefix` (and not the prefix itself)?
pub fn is_parent_of(path: &str, prefix: &str) -> bool {
    path != prefix && format!("{prefix}/").starts_with(&format!("{path}/"))
}

/// Is a normalized path the prefix itself or inside it?
pub fn is_inside(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Is a normalized path one of the directories every package layer shares: `hab`,
/// `hab/pkgs`, `hab/pkgs/O`?
pub fn is_shared_dir(path: &str) -> bool {
    let mut parts = path.split('/');
    parts.next() == Some("hab")
        && match parts.next() {
            None => true,
            Some("pkgs") => parts.nth(1).is_none(),
            Some(_) => false,
        }
}

/// Where a package's tar entry lies, by [`PrefixGuard::place`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// A parent directory of the prefix (`hab`, ..., `hab/pkgs/O/N/V`): writers synthesize
    /// these themselves, so the entry is skipped.
    Parent,
    /// Inside the prefix; the path relative to it (empty for the prefix itself).
    Inside(String),
}

/// Why an entry is refused, by [`PrefixGuard::place`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// Absolute, with `..`, not UTF-8, or not under any `hab/pkgs/O/N/V/R/`.
    Outside,
    /// Under (or a parent directory of) another package's prefix than `prefix`
    /// (`hab/pkgs/O/N/V/R`); `entry` is the offending entry (an earlier parent-shaped
    /// directory, when it is the one found out only now).
    OtherPackage { entry: String, prefix: String },
}

/// The package-prefix rules, entry by entry in tar order: every entry lies in one
/// `hab/pkgs/O/N/V/R/` prefix or is a parent directory of it. The prefix is known up front
/// (a package whose ident is known) or taken from the first entry inside one; a
/// parent-shaped directory seen before that must turn out to be a parent of it. The one
/// implementation of the rule: the metadata reader and the layer rewriter both use it, so
/// they accept exactly the same packages.
#[derive(Debug, Default)]
pub struct PrefixGuard {
    prefix: Option<String>,
    early_parents: Vec<String>,
}

impl PrefixGuard {
    /// A guard for a package whose ident is `known` (else the first entry decides).
    pub fn new(known: Option<&PackageIdent>) -> PrefixGuard {
        PrefixGuard {
            prefix: known.map(prefix),
            early_parents: Vec::new(),
        }
    }

    /// The prefix (`hab/pkgs/O/N/V/R`), once known.
    pub fn prefix(&self) -> Option<&str> {
        self.prefix.as_deref()
    }

    /// Places one entry: `path` as [`normalize`] gives it (`None`: it did not normalize).
    pub fn place(&mut self, path: Option<&str>, is_dir: bool) -> Result<Place, Violation> {
        let path = path.ok_or(Violation::Outside)?;
        let other = |entry: &str, prefix: &str| Violation::OtherPackage {
            entry: entry.to_owned(),
            prefix: prefix.to_owned(),
        };
        if is_dir && is_parent_dir(path) {
            match &self.prefix {
                Some(p) if !is_parent_of(path, p) => return Err(other(path, p)),
                Some(_) => {}
                None => self.early_parents.push(path.to_owned()),
            }
            return Ok(Place::Parent);
        }
        let (this, rest) = split_prefix(path).ok_or(Violation::Outside)?;
        let this = format!("hab/pkgs/{this}");
        match &self.prefix {
            Some(p) if *p != this => Err(other(path, p)),
            Some(_) => Ok(Place::Inside(rest.to_owned())),
            None => {
                if let Some(d) = self.early_parents.iter().find(|d| !is_parent_of(d, &this)) {
                    return Err(other(d, &this));
                }
                self.prefix = Some(this);
                Ok(Place::Inside(rest.to_owned()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_takes_the_first_prefix_and_checks_earlier_parents() {
        let mut g = PrefixGuard::new(None);
        assert_eq!(g.place(Some("hab/pkgs/a/b"), true), Ok(Place::Parent));
        assert_eq!(
            g.place(Some("hab/pkgs/a/b/1/2/bin/x"), false),
            Ok(Place::Inside("bin/x".into()))
        );
        assert_eq!(g.prefix(), Some("hab/pkgs/a/b/1/2"));
        assert!(matches!(
            g.place(Some("hab/pkgs/a/b/9"), true),
            Err(Violation::OtherPackage { .. })
        ));
        assert!(matches!(
            g.place(Some("hab/pkgs/c/d/1/2/x"), false),
            Err(Violation::OtherPackage { .. })
        ));
        assert_eq!(g.place(None, false), Err(Violation::Outside));
        assert_eq!(g.place(Some("etc/passwd"), false), Err(Violation::Outside));
        // A parent of another version before the files: refused once the prefix shows.
        let mut g = PrefixGuard::new(None);
        assert_eq!(g.place(Some("hab/pkgs/a/b/9"), true), Ok(Place::Parent));
        assert_eq!(
            g.place(Some("hab/pkgs/a/b/1/2/x"), false),
            Err(Violation::OtherPackage {
                entry: "hab/pkgs/a/b/9".into(),
                prefix: "hab/pkgs/a/b/1/2".into()
            })
        );
        // Known up front: the same rules, from the first entry.
        let id = PackageIdent::parse_fq("a/b/1/2").expect("ident");
        let mut g = PrefixGuard::new(Some(&id));
        assert!(g.place(Some("hab/pkgs/a/b/9"), true).is_err());
        assert_eq!(
            g.place(Some("hab/pkgs/a/b/1/2"), true),
            Ok(Place::Inside(String::new()))
        );
    }

    #[test]
    fn prefixes() {
        let n = |p: &str| normalize(Path::new(p));
        assert_eq!(n("./hab/pkgs/a").as_deref(), Some("hab/pkgs/a"));
        assert_eq!(n("hab/"), Some("hab".into()));
        assert_eq!(n("hab/pkgs/a/b/1/2/../../x"), None);
        assert_eq!(n("/hab/pkgs/a/b/1/2/x"), None);
        assert_eq!(n("."), None);
        assert_eq!(
            split_prefix("hab/pkgs/a/b/1/2/bin/x"),
            Some(("a/b/1/2", "bin/x"))
        );
        assert_eq!(split_prefix("hab/pkgs/a/b/1/2"), Some(("a/b/1/2", "")));
        assert_eq!(split_prefix("hab/pkgs/a/b/1"), None);
        assert_eq!(
            split_prefix("hab/pkgs/a/b/1/2x/y").map(|p| p.0),
            Some("a/b/1/2x")
        );
        assert_eq!(split_prefix("etc/passwd"), None);
        assert_eq!(
            ident_of("hab/pkgs/a/b/1.0/20240101000000/x").map(|i| i.to_string()),
            Some("a/b/1.0/20240101000000".into())
        );
        assert!(is_parent_dir("hab/pkgs/a/b/1"));
        assert!(is_parent_dir("hab"));
        assert!(!is_parent_dir("etc"));
        assert!(!is_parent_dir("hab/other"));
        assert!(!is_parent_dir("hab/pkgs/a/b/1/2"));
        let pre = "hab/pkgs/a/b/1/2";
        assert!(is_parent_of("hab/pkgs/a", pre));
        assert!(!is_parent_of(pre, pre));
        assert!(!is_parent_of("hab/pkgs/a/b/1/2/x", pre));
        assert!(!is_parent_of("hab/pk", pre));
        assert!(is_inside(pre, pre));
        assert!(is_inside("hab/pkgs/a/b/1/2/x", pre));
        assert!(!is_inside("hab/pkgs/a/b/1/20", pre));
        for (p, shared) in [
            ("hab", true),
            ("hab/pkgs", true),
            ("hab/pkgs/core", true),
            ("hab/pkgs/core/glibc", false),
            ("hab/svc", false),
            ("habx", false),
            ("etc", false),
        ] {
            assert_eq!(is_shared_dir(p), shared, "{p}");
        }
        let id = PackageIdent::parse_fq("o/n/1.2/20240101000000").expect("ident");
        assert_eq!(prefix(&id), "hab/pkgs/o/n/1.2/20240101000000");
        assert_eq!(parent_dirs(&id)[4], "hab/pkgs/o/n/1.2");
    }
}
