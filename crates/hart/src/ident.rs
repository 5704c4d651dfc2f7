//! Package identifiers (`origin/name[/version[/release]]`), targets, and Habitat's version ordering.
//!
//! The ordering is written by hand on purpose: neither `semver` nor `version-compare` matches
//! Habitat's rules (unanchored numeric split, missing parts = 0, no-suffix above suffix,
//! suffixes compared as plain strings, releases as strings), and `hab` picks "latest" with them.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Errors from parsing identifiers and targets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentError {
    #[error(
        "invalid package identifier '{0}': expected origin/name[/version[/release]] (2 to 4 parts separated by '/')"
    )]
    Parts(String),
    #[error("invalid package identifier '{ident}': the {part} is empty")]
    EmptyPart { ident: String, part: &'static str },
    #[error(
        "invalid package identifier '{ident}': origin '{origin}' must match [a-z0-9][a-z0-9_-]* and be at most 255 characters"
    )]
    Origin { ident: String, origin: String },
    #[error("invalid package identifier '{ident}': name '{name}' must match [A-Za-z0-9_-]+")]
    Name { ident: String, name: String },
    #[error(
        "invalid package identifier '{ident}': the {part} '{value}' contains a character that is not allowed (whitespace, control or '/')"
    )]
    BadChar {
        ident: String,
        part: &'static str,
        value: String,
    },
    #[error("'{0}' is not a fully qualified package identifier (origin/name/version/release)")]
    NotFullyQualified(String),
    #[error(
        "unknown package target '{0}' (known: x86_64-linux, aarch64-linux, x86_64-linux-kernel2, x86_64-windows, aarch64-windows, x86_64-darwin, aarch64-darwin)"
    )]
    Target(String),
}

/// A Habitat package identifier. Version and release are optional (a "fuzzy" ident);
/// a release is only ever present together with a version.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PackageIdent {
    pub origin: String,
    pub name: String,
    pub version: Option<String>,
    pub release: Option<String>,
}

impl PackageIdent {
    /// A fully qualified ident.
    pub fn new_fq(origin: &str, name: &str, version: &str, release: &str) -> PackageIdent {
        PackageIdent {
            origin: origin.to_owned(),
            name: name.to_owned(),
            version: Some(version.to_owned()),
            release: Some(release.to_owned()),
        }
    }

    /// Parses and validates an ident.
    ///
    /// ```
    /// let id = hart::PackageIdent::parse("core/redis/7.2.4").unwrap();
    /// assert_eq!(id.release, None);
    /// assert!(hart::PackageIdent::parse("core/redis/7.2.4/20240101000000/x").is_err());
    /// ```
    ///
    /// Unlike Habitat (which checks characters later, or
    /// never), we validate at once: every ident we accept can be a path component.
    pub fn parse(s: &str) -> Result<PackageIdent, IdentError> {
        let parts: Vec<&str> = s.split('/').collect();
        if !(2..=4).contains(&parts.len()) {
            return Err(IdentError::Parts(s.to_owned()));
        }
        const PART_NAMES: [&str; 4] = ["origin", "name", "version", "release"];
        for (i, part) in parts.iter().enumerate() {
            if part.is_empty() {
                return Err(IdentError::EmptyPart {
                    ident: s.to_owned(),
                    part: PART_NAMES[i],
                });
            }
            if part.chars().any(|c| c.is_whitespace() || c.is_control())
                || *part == "."
                || *part == ".."
            {
                return Err(IdentError::BadChar {
                    ident: s.to_owned(),
                    part: PART_NAMES[i],
                    value: (*part).to_owned(),
                });
            }
        }
        if !valid_origin(parts[0]) {
            return Err(IdentError::Origin {
                ident: s.to_owned(),
                origin: parts[0].to_owned(),
            });
        }
        if !valid_name(parts[1]) {
            return Err(IdentError::Name {
                ident: s.to_owned(),
                name: parts[1].to_owned(),
            });
        }
        Ok(PackageIdent {
            origin: parts[0].to_owned(),
            name: parts[1].to_owned(),
            version: parts.get(2).map(|v| (*v).to_owned()),
            release: parts.get(3).map(|r| (*r).to_owned()),
        })
    }

    /// Parses an ident that must be fully qualified (DEPS/TDEPS lines, IDENT files).
    pub fn parse_fq(s: &str) -> Result<PackageIdent, IdentError> {
        let ident = PackageIdent::parse(s)?;
        if ident.fully_qualified() {
            Ok(ident)
        } else {
            Err(IdentError::NotFullyQualified(s.to_owned()))
        }
    }

    pub fn fully_qualified(&self) -> bool {
        self.version.is_some() && self.release.is_some()
    }

    /// Habitat's `satisfies`: same origin and name; a version or release present in `self`
    /// must equal the candidate's.
    pub fn satisfied_by(&self, candidate: &PackageIdent) -> bool {
        fn part_ok(want: &Option<String>, have: &Option<String>) -> bool {
            match (want, have) {
                (Some(w), Some(h)) => w == h,
                (Some(_), None) => false,
                (None, _) => true,
            }
        }
        self.origin == candidate.origin
            && self.name == candidate.name
            && part_ok(&self.version, &candidate.version)
            && part_ok(&self.release, &candidate.release)
    }

    /// `origin/name`, dropping version and release.
    pub fn short(&self) -> String {
        format!("{}/{}", self.origin, self.name)
    }

    /// The canonical `.hart` file name Habitat gives this (fully qualified) ident.
    pub fn archive_name(&self, target: &PackageTarget) -> Option<String> {
        Some(format!(
            "{}-{}-{}-{}-{}.hart",
            self.origin,
            self.name,
            self.version.as_deref()?,
            self.release.as_deref()?,
            target
        ))
    }

    /// Habitat's `PartialOrd` for picking "latest": different names are unordered (the origin
    /// is not compared), a missing version or release ranks lower, then `version_sort`, then
    /// the release as a string; when a version does not parse, versions compare as strings.
    pub fn habitat_partial_cmp(&self, other: &PackageIdent) -> Option<Ordering> {
        if self.name != other.name {
            return None;
        }
        let (a, b) = match (&self.version, &other.version) {
            (None, None) => return Some(Ordering::Equal),
            (None, Some(_)) => return Some(Ordering::Less),
            (Some(_), None) => return Some(Ordering::Greater),
            (Some(a), Some(b)) => (a, b),
        };
        let by_version = version_sort(a, b).unwrap_or_else(|_| a.cmp(b));
        Some(by_version.then_with(|| cmp_release(&self.release, &other.release)))
    }

    /// A total order for sorting lists of packages: origin, name, version (Habitat's
    /// `version_sort`, with the plain string order as the fallback for unparsable versions so
    /// the order stays total), release.
    pub fn total_cmp(&self, other: &PackageIdent) -> Ordering {
        self.origin
            .cmp(&other.origin)
            .then_with(|| self.name.cmp(&other.name))
            .then_with(|| match (&self.version, &other.version) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Less,
                (Some(_), None) => Ordering::Greater,
                (Some(a), Some(b)) => total_version_cmp(a, b),
            })
            .then_with(|| cmp_release(&self.release, &other.release))
    }
}

fn cmp_release(a: &Option<String>, b: &Option<String>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(a), Some(b)) => a.cmp(b),
    }
}

/// Versions that parse sort by `version_sort` and above those that do not; two that do not
/// parse compare as strings. Total, unlike Habitat's `Ord` (where an error counts as Less).
fn total_version_cmp(a: &str, b: &str) -> Ordering {
    match (split_version(a), split_version(b)) {
        (Ok(x), Ok(y)) => cmp_split(&x, &y),
        (Ok(_), Err(_)) => Ordering::Greater,
        (Err(_), Ok(_)) => Ordering::Less,
        (Err(_), Err(_)) => a.cmp(b),
    }
}

pub fn valid_origin(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 255
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
}

impl fmt::Display for PackageIdent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.origin, self.name)?;
        if let Some(v) = &self.version {
            write!(f, "/{v}")?;
            if let Some(r) = &self.release {
                write!(f, "/{r}")?;
            }
        }
        Ok(())
    }
}

impl FromStr for PackageIdent {
    type Err = IdentError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PackageIdent::parse(s)
    }
}

impl Serialize for PackageIdent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PackageIdent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PackageIdent::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A version that does not fit Habitat's `([\d.]+)(.+)?` pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("version '{0}' has no numeric part Habitat can order")]
pub struct VersionError(pub String);

/// A version split the way Habitat splits it: numeric parts and an optional extension.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SplitVersion {
    parts: Vec<u64>,
    extension: Option<String>,
}

/// Habitat's `split_version`: the first (unanchored) run of digits and dots is the numeric
/// part, each dot-separated piece a `u64` (an empty or oversized piece is an error); the
/// rest of the string is the extension, with one leading `-` removed.
fn split_version(v: &str) -> Result<SplitVersion, VersionError> {
    let is_num = |c: char| c.is_ascii_digit() || c == '.';
    let start = v.find(is_num).ok_or_else(|| VersionError(v.to_owned()))?;
    let rest = &v[start..];
    let end = rest.find(|c: char| !is_num(c)).unwrap_or(rest.len());
    let (numeric, ext) = rest.split_at(end);
    let parts = numeric
        .split('.')
        .map(|p| p.parse::<u64>())
        .collect::<Result<Vec<u64>, _>>()
        .map_err(|_| VersionError(v.to_owned()))?;
    let ext = ext.strip_prefix('-').unwrap_or(ext);
    Ok(SplitVersion {
        parts,
        extension: (!ext.is_empty()).then(|| ext.to_owned()),
    })
}

fn cmp_split(a: &SplitVersion, b: &SplitVersion) -> Ordering {
    let n = a.parts.len().max(b.parts.len());
    for i in 0..n {
        let x = a.parts.get(i).copied().unwrap_or(0);
        let y = b.parts.get(i).copied().unwrap_or(0);
        match x.cmp(&y) {
            Ordering::Equal => {}
            o => return o,
        }
    }
    match (&a.extension, &b.extension) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(x), Some(y)) => x.cmp(y),
    }
}

/// Habitat's `version_sort`.
///
/// ```
/// use std::cmp::Ordering;
/// use hart::ident::version_sort;
///
/// assert_eq!(version_sort("1.10", "1.9"), Ok(Ordering::Greater));
/// assert_eq!(version_sort("1.0", "1.0.0"), Ok(Ordering::Equal));
/// // No suffix ranks above a suffix; suffixes compare as plain strings.
/// assert_eq!(version_sort("2.1.1", "2.1.1-alpha2"), Ok(Ordering::Greater));
/// assert_eq!(version_sort("1.2.3-beta12", "1.2.3-beta2"), Ok(Ordering::Less));
/// assert!(version_sort("latest", "1.0").is_err());
/// ```
pub fn version_sort(a: &str, b: &str) -> Result<Ordering, VersionError> {
    Ok(cmp_split(&split_version(a)?, &split_version(b)?))
}

/// Picks the latest of `candidates` the way `hab` does: a left fold keeping the current
/// pick on Equal or unordered, replacing it only with something strictly greater.
pub fn latest<'a, T>(
    candidates: impl IntoIterator<Item = &'a T>,
    ident: impl Fn(&T) -> &PackageIdent,
) -> Option<&'a T>
where
    T: 'a,
{
    let mut best: Option<&'a T> = None;
    for c in candidates {
        best = match best {
            None => Some(c),
            Some(b) => match ident(c).habitat_partial_cmp(ident(b)) {
                Some(Ordering::Greater) => Some(c),
                _ => Some(b),
            },
        };
    }
    best
}

/// A package target (platform), e.g. `x86_64-linux`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackageTarget(String);

const KNOWN_TARGETS: [&str; 7] = [
    "x86_64-linux",
    "aarch64-linux",
    "x86_64-linux-kernel2",
    "x86_64-windows",
    "aarch64-windows",
    "x86_64-darwin",
    "aarch64-darwin",
];

impl PackageTarget {
    pub fn parse(s: &str) -> Result<PackageTarget, IdentError> {
        if KNOWN_TARGETS.contains(&s) {
            Ok(PackageTarget(s.to_owned()))
        } else {
            Err(IdentError::Target(s.to_owned()))
        }
    }

    /// The Linux target of the machine we run on, as Habitat's "active target".
    pub fn host_linux() -> PackageTarget {
        if cfg!(target_arch = "aarch64") {
            PackageTarget("aarch64-linux".to_owned())
        } else {
            PackageTarget("x86_64-linux".to_owned())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn known() -> &'static [&'static str] {
        &KNOWN_TARGETS
    }
}

impl fmt::Display for PackageTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for PackageTarget {
    type Err = IdentError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PackageTarget::parse(s)
    }
}

impl Serialize for PackageTarget {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for PackageTarget {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PackageTarget::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn vs(a: &str, b: &str) -> Ordering {
        version_sort(a, b).expect("parsable versions")
    }

    #[test]
    fn parse_and_display() {
        for s in [
            "core/redis",
            "core/redis/7.2.4",
            "core/redis/7.2.4/20240101000000",
        ] {
            assert_eq!(PackageIdent::parse(s).expect("valid").to_string(), s);
        }
        assert!(matches!(
            PackageIdent::parse("core"),
            Err(IdentError::Parts(_))
        ));
        assert!(matches!(
            PackageIdent::parse("a/b/c/d/e"),
            Err(IdentError::Parts(_))
        ));
        assert!(matches!(
            PackageIdent::parse("core//1.0"),
            Err(IdentError::EmptyPart { part: "name", .. })
        ));
        assert!(matches!(
            PackageIdent::parse("Core/redis"),
            Err(IdentError::Origin { .. })
        ));
        assert!(matches!(
            PackageIdent::parse("core/re.dis"),
            Err(IdentError::Name { .. })
        ));
        assert!(matches!(
            PackageIdent::parse("core/redis/1 0"),
            Err(IdentError::BadChar { .. })
        ));
        assert!(matches!(
            PackageIdent::parse("core/redis/.."),
            Err(IdentError::BadChar { .. })
        ));
        assert!(PackageIdent::parse_fq("core/redis/1.0").is_err());
    }

    #[test]
    fn habitat_version_cases() {
        // Habitat's own table (components/core ident.rs tests), in our words.
        assert_eq!(vs("1.0.0", "1.0.0"), Ordering::Equal);
        assert_eq!(vs("1.0", "1.0.0"), Ordering::Equal);
        assert_eq!(vs("1.0.1", "1.0.0"), Ordering::Greater);
        assert_eq!(vs("1.1.0", "1.0.9"), Ordering::Greater);
        assert_eq!(vs("2.0", "1.99.99"), Ordering::Greater);
        assert_eq!(vs("1.10", "1.9"), Ordering::Greater);
        assert_eq!(vs("2.1.1", "2.1.1-alpha2"), Ordering::Greater);
        assert_eq!(vs("2.1.1-beta1", "2.1.1-alpha1000"), Ordering::Greater);
        // Suffixes are plain strings: beta12 < beta2.
        assert_eq!(vs("1.2.3-beta12", "1.2.3-beta2"), Ordering::Less);
        assert_eq!(vs("1.2.3", "1.2.3-beta12"), Ordering::Greater);
        // Unanchored: a leading "v" is skipped.
        assert_eq!(vs("v1.2", "1.2"), Ordering::Equal);
        // Extension without a dash.
        assert_eq!(vs("1.0rc1", "1.0"), Ordering::Less);
        assert!(version_sort("1.2.", "1.2").is_err());
        assert!(version_sort("latest", "1.2").is_err());
        assert!(version_sort("99999999999999999999", "1").is_err());
    }

    #[test]
    fn partial_cmp_rules() {
        let p = |s: &str| PackageIdent::parse(s).expect("valid");
        assert_eq!(p("a/x").habitat_partial_cmp(&p("a/y")), None);
        assert_eq!(
            p("a/x").habitat_partial_cmp(&p("b/x")),
            Some(Ordering::Equal)
        );
        assert_eq!(
            p("a/x/1.0").habitat_partial_cmp(&p("a/x")),
            Some(Ordering::Greater)
        );
        assert_eq!(
            p("a/x/1.0/2").habitat_partial_cmp(&p("a/x/1.0")),
            Some(Ordering::Greater)
        );
        assert_eq!(
            p("a/x/1.0/2").habitat_partial_cmp(&p("a/x/1.0.0/1")),
            Some(Ordering::Greater)
        );
        // Unparsable versions fall back to string comparison.
        assert_eq!(
            p("a/x/abc/1").habitat_partial_cmp(&p("a/x/abd/1")),
            Some(Ordering::Less)
        );
    }

    #[test]
    fn latest_keeps_first_on_ties() {
        let ids: Vec<PackageIdent> = ["a/x/1.0/1", "b/x/1.0/1", "a/x/0.9/9"]
            .iter()
            .map(|s| PackageIdent::parse(s).expect("valid"))
            .collect();
        assert_eq!(latest(&ids, |i| i).map(|i| i.origin.as_str()), Some("a"));
    }

    #[test]
    fn satisfies() {
        let p = |s: &str| PackageIdent::parse(s).expect("valid");
        assert!(p("core/redis").satisfied_by(&p("core/redis/1.0/2")));
        assert!(p("core/redis/1.0").satisfied_by(&p("core/redis/1.0/2")));
        assert!(!p("core/redis/1.1").satisfied_by(&p("core/redis/1.0/2")));
        assert!(!p("other/redis").satisfied_by(&p("core/redis/1.0/2")));
    }

    fn version_strategy() -> impl Strategy<Value = String> {
        (
            prop::collection::vec(0u64..20, 1..4),
            prop::option::of("[a-z]{1,3}[0-9]{0,2}"),
            prop::bool::ANY,
        )
            .prop_map(|(nums, ext, dash)| {
                let mut s = nums
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(".");
                if let Some(e) = ext {
                    if dash {
                        s.push('-');
                    }
                    s.push_str(&e);
                }
                s
            })
    }

    proptest! {
        #[test]
        fn version_sort_is_a_total_preorder(a in version_strategy(), b in version_strategy(), c in version_strategy()) {
            let ab = vs(&a, &b);
            prop_assert_eq!(ab, vs(&b, &a).reverse());
            prop_assert_eq!(vs(&a, &a), Ordering::Equal);
            if ab != Ordering::Greater && vs(&b, &c) != Ordering::Greater {
                prop_assert_ne!(vs(&a, &c), Ordering::Greater);
            }
        }

        #[test]
        fn trailing_zeros_do_not_matter(nums in prop::collection::vec(0u64..1000, 1..5), zeros in 1usize..3) {
            let a = nums.iter().map(u64::to_string).collect::<Vec<_>>().join(".");
            let b = format!("{a}{}", ".0".repeat(zeros));
            prop_assert_eq!(vs(&a, &b), Ordering::Equal);
        }

        #[test]
        fn no_extension_ranks_above_any_extension(a in version_strategy(), ext in "[a-z][a-z0-9]{0,5}") {
            let base = split_version(&a).expect("parsable").parts.iter().map(u64::to_string).collect::<Vec<_>>().join(".");
            prop_assert_eq!(vs(&base, &format!("{base}-{ext}")), Ordering::Greater);
        }

        #[test]
        fn total_cmp_is_antisymmetric(a in "[a-z]{1,2}/[a-z]{1,2}/[0-9a-z.]{1,5}/[0-9]{1,3}", b in "[a-z]{1,2}/[a-z]{1,2}/[0-9a-z.]{1,5}/[0-9]{1,3}") {
            let (Ok(x), Ok(y)) = (PackageIdent::parse(&a), PackageIdent::parse(&b)) else { return Ok(()) };
            prop_assert_eq!(x.total_cmp(&y), y.total_cmp(&x).reverse());
        }

        #[test]
        fn parse_never_panics_and_round_trips(s in "\\PC{0,40}") {
            if let Ok(id) = PackageIdent::parse(&s) {
                prop_assert_eq!(id.to_string(), s);
            }
        }
    }
}
