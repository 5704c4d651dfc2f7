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

#[cfg(test)]
mod tests {
    use super::*;

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
