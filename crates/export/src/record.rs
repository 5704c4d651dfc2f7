//! Package records (record format 2): what a later export needs of each package of a layer
//! without its payload — closure order and grouping (DEPS, TDEPS, size), the extras layer
//! (PATH binaries, SVC_USER/SVC_GROUP, EXPOSES), the config (run script, signal) and the
//! SBOM (the MANIFEST's licenses and sources, so an image's SBOM is the same bytes whether
//! its packages were decoded or recorded) —
//! written as one annotation on each package layer (docs/layer-format-v1.md, §9). A cache
//! source's records stand in for decoding (or downloading) the packages whose layers it holds.

use depot::ResolvedPackage;
use hart::{PackageIdent, PackageMetadata, PackageTarget};
use serde::{Deserialize, Serialize};

/// The annotation holding a package layer's records.
pub const ANN_RECORD: &str = "sh.habitat.hab-oci.record";

/// Changes whenever a field is added, removed or changes meaning; a reader skips records
/// of another version (the layer is then built, never misread).
pub const RECORD_FORMAT: u32 = 2;

/// A cache source's records are read from its manifest: this bounds what one layer's
/// annotation may claim before it is believed (a layer of 125 packages with long TDEPS
/// stays far below it).
const MAX_RECORD_TEXT: usize = 1 << 20;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LayerRecord {
    format: u32,
    packages: Vec<PackageRecord>,
}

/// One package's record. Field names are the format: keep them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageRecord {
    pub ident: PackageIdent,
    pub target: PackageTarget,
    /// BLAKE2b-256 of the whole `.hart`, lowercase hex.
    pub checksum: String,
    pub deps: Vec<PackageIdent>,
    pub tdeps: Vec<PackageIdent>,
    pub path: Vec<String>,
    pub binaries: Vec<String>,
    pub exposes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub svc_user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub svc_group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown_signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_script: Option<String>,
    pub is_service: bool,
    pub has_install_hook: bool,
    pub setuid: Vec<String>,
    pub entries: u64,
    pub unpacked_size: u64,
    /// The MANIFEST's facts (format 2).
    pub manifest: hart::ManifestFacts,
}

impl PackageRecord {
    pub fn of(p: &ResolvedPackage) -> PackageRecord {
        let m = &p.metadata;
        PackageRecord {
            ident: m.ident.clone(),
            target: m.target.clone(),
            checksum: p.checksum().to_owned(),
            deps: m.deps.clone(),
            tdeps: m.tdeps.clone(),
            path: m.path.clone(),
            binaries: m.binaries.clone(),
            exposes: m.exposes.clone(),
            svc_user: m.svc_user.clone(),
            svc_group: m.svc_group.clone(),
            shutdown_signal: m.shutdown_signal.clone(),
            run_script: m.run_script.clone(),
            is_service: m.is_service,
            has_install_hook: m.has_install_hook,
            setuid: m.setuid.clone(),
            entries: m.entries,
            unpacked_size: m.unpacked_size,
            manifest: m.manifest.clone(),
        }
    }

    /// The metadata an export needs, as the package's own would give it (BUILD_DEPS and
    /// the metafiles are not recorded: nothing of the image depends on them).
    pub fn metadata(&self) -> PackageMetadata {
        PackageMetadata {
            ident: self.ident.clone(),
            target: self.target.clone(),
            deps: self.deps.clone(),
            tdeps: self.tdeps.clone(),
            build_deps: Vec::new(),
            path: self.path.clone(),
            binaries: self.binaries.clone(),
            exposes: self.exposes.clone(),
            svc_user: self.svc_user.clone(),
            svc_group: self.svc_group.clone(),
            shutdown_signal: self.shutdown_signal.clone(),
            is_service: self.is_service,
            run_script: self.run_script.clone(),
            has_install_hook: self.has_install_hook,
            setuid: self.setuid.clone(),
            entries: self.entries,
            unpacked_size: self.unpacked_size,
            manifest: self.manifest.clone(),
            files: Default::default(),
        }
    }
}

/// The annotation value for a layer of `packages` (in layer order): canonical JSON (keys
/// sorted, no whitespace), so equal packages give equal manifests on any machine.
pub fn encode(packages: &[&ResolvedPackage]) -> String {
    let record = LayerRecord {
        format: RECORD_FORMAT,
        packages: packages.iter().map(|p| PackageRecord::of(p)).collect(),
    };
    // Through a `Value`: its maps are sorted by key (serde_json without preserve_order).
    serde_json::to_value(&record)
        .and_then(|v| serde_json::to_string(&v))
        .unwrap_or_default()
}

/// The records of one layer's annotation, checked for what can be checked without the
/// packages: the format, fully qualified idents, hex checksums.
pub fn decode(text: &str) -> Result<Vec<PackageRecord>, String> {
    if text.len() > MAX_RECORD_TEXT {
        return Err(format!(
            "the record is {} bytes, more than the {MAX_RECORD_TEXT} hab-oci reads",
            text.len()
        ));
    }
    #[derive(Deserialize)]
    struct Version {
        format: u32,
    }
    let v: Version = serde_json::from_str(text).map_err(|e| format!("not a record: {e}"))?;
    if v.format != RECORD_FORMAT {
        return Err(format!(
            "record format {} (this hab-oci reads {RECORD_FORMAT})",
            v.format
        ));
    }
    let r: LayerRecord = serde_json::from_str(text).map_err(|e| format!("not a record: {e}"))?;
    for p in &r.packages {
        check(p).map_err(|problem| format!("{}: {problem}", p.ident))?;
    }
    Ok(r.packages)
}

/// What a record must satisfy to stand for a package: what reading the package itself
/// would guarantee (fully qualified idents, no self-dependency, DEPS within TDEPS, PATH and
/// binaries inside its own prefix, a run script Habitat knows), and words that go into
/// `/etc/passwd`, `/etc/group` and the config as plain words.
fn check(p: &PackageRecord) -> Result<(), String> {
    let all = std::iter::once(&p.ident).chain(&p.deps).chain(&p.tdeps);
    if let Some(bad) = all.into_iter().find(|i| !i.fully_qualified()) {
        return Err(format!("{bad} is not a fully qualified ident"));
    }
    let hex = p.checksum.len() == 64
        && p.checksum
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !hex {
        return Err(format!(
            "checksum '{}' is not 64 lowercase hex digits",
            p.checksum
        ));
    }
    if p.deps.contains(&p.ident) || p.tdeps.contains(&p.ident) {
        return Err("it lists itself as a dependency".into());
    }
    if let Some(d) = p.deps.iter().find(|d| !p.tdeps.contains(d)) {
        return Err(format!("DEPS lists {d}, which TDEPS does not"));
    }
    let prefix = format!("/{}/", hart::layout::prefix(&p.ident));
    for b in &p.binaries {
        let leaf = b
            .strip_prefix(&prefix)
            .and_then(|rest| rest.rsplit('/').next());
        let plain = leaf.is_some_and(|l| !l.is_empty() && l != "." && l != "..")
            && !b.split('/').any(|c| c == "..");
        if !plain || !word(b) {
            return Err(format!("binary '{b}' is not a file inside {prefix}"));
        }
    }
    if let Some(d) = p.path.iter().find(|d| {
        !(d.starts_with(&prefix) || **d == prefix.trim_end_matches('/'))
            || d.split('/').any(|c| c == "..")
            || !word(d)
    }) {
        return Err(format!("PATH directory '{d}' is not inside {prefix}"));
    }
    if let Some(r) = &p.run_script
        && r != "run"
        && r != "hooks/run"
    {
        return Err(format!("run script '{r}' is neither run nor hooks/run"));
    }
    let words = [&p.svc_user, &p.svc_group, &p.shutdown_signal];
    if let Some(w) = words
        .into_iter()
        .flatten()
        .find(|w| !word(w) || w.contains(':'))
    {
        return Err(format!("'{w}' is not a plain user, group or signal name"));
    }
    if let Some(e) = p.exposes.iter().find(|e| !word(e)) {
        return Err(format!("exposed port '{e}' is not a plain word"));
    }
    Ok(())
}

/// Non-empty, without whitespace or control characters.
fn word(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ident: &str, checksum: &str) -> PackageRecord {
        PackageRecord {
            ident: PackageIdent::parse_fq(ident).expect("ident"),
            target: PackageTarget::parse("x86_64-linux").expect("target"),
            checksum: checksum.to_owned(),
            deps: vec![PackageIdent::parse_fq("core/glibc/2.36/20240101000000").expect("dep")],
            tdeps: vec![PackageIdent::parse_fq("core/glibc/2.36/20240101000000").expect("dep")],
            path: vec!["/hab/pkgs/a/b/1/20240101000000/bin".into()],
            binaries: vec!["/hab/pkgs/a/b/1/20240101000000/bin/b".into()],
            exposes: vec!["80".into()],
            svc_user: Some("hab".into()),
            svc_group: None,
            shutdown_signal: None,
            run_script: Some("run".into()),
            is_service: true,
            has_install_hook: false,
            setuid: Vec::new(),
            entries: 7,
            unpacked_size: 1234,
            manifest: hart::ManifestFacts {
                licenses: vec!["MIT".into()],
                source_url: Some("https://example.org/b-1.tar.gz".into()),
                ..Default::default()
            },
        }
    }

    fn text(packages: &[PackageRecord]) -> String {
        let r = LayerRecord {
            format: RECORD_FORMAT,
            packages: packages.to_vec(),
        };
        serde_json::to_string(&serde_json::to_value(&r).expect("value")).expect("json")
    }

    #[test]
    fn records_round_trip_and_are_canonical() {
        let sum = "ab".repeat(32);
        let r = record("a/b/1/20240101000000", &sum);
        let t = text(std::slice::from_ref(&r));
        assert_eq!(decode(&t).expect("decodes"), vec![r.clone()]);
        assert!(
            t.starts_with(r#"{"format":2,"packages":[{"binaries":"#),
            "{t}"
        );
        assert!(!t.contains("svc_group"), "absent fields are omitted: {t}");
        let m = r.metadata();
        assert_eq!(m.ident, r.ident);
        assert_eq!(m.unpacked_size, 1234);
        assert_eq!(
            m.manifest.licenses,
            ["MIT"],
            "the SBOM's facts come through"
        );
    }

    #[test]
    fn bad_records_are_refused_with_the_reason() {
        let sum = "ab".repeat(32);
        let good = text(&[record("a/b/1/20240101000000", &sum)]);
        let other = good.replace(r#""format":2"#, r#""format":1"#);
        assert!(
            decode(&other)
                .expect_err("refused")
                .contains("record format 1")
        );
        let upper = text(&[record("a/b/1/20240101000000", &"AB".repeat(32))]);
        assert!(
            decode(&upper)
                .expect_err("refused")
                .contains("lowercase hex")
        );
        let fuzzy = good.replace("a/b/1/20240101000000", "a/b");
        assert!(
            decode(&fuzzy)
                .expect_err("refused")
                .contains("fully qualified")
        );
        let extra = good.replace(r#""format":2,"#, r#""format":2,"x":1,"#);
        assert!(
            decode(&extra)
                .expect_err("refused")
                .contains("not a record")
        );
        assert!(decode("{").is_err());
        assert!(decode(&" ".repeat(MAX_RECORD_TEXT + 1)).is_err());
    }

    #[test]
    fn records_that_would_change_the_image_unsafely_are_refused() {
        let sum = "ab".repeat(32);
        let refused = |change: &dyn Fn(&mut PackageRecord), why: &str| {
            let mut r = record("a/b/1/20240101000000", &sum);
            change(&mut r);
            let e = decode(&text(&[r])).expect_err("refused");
            assert!(e.contains(why), "{e}");
        };
        refused(
            &|r| r.svc_user = Some("hab:x:0:0::/:/bin/sh".into()),
            "plain user",
        );
        refused(&|r| r.svc_group = Some("hab\nroot".into()), "plain user");
        refused(
            &|r| r.binaries = vec!["/bin/sh".into()],
            "not a file inside",
        );
        refused(
            &|r| r.binaries = vec!["/hab/pkgs/a/b/1/20240101000000/bin/..".into()],
            "not a file inside",
        );
        refused(&|r| r.path = vec!["/usr/bin".into()], "PATH directory");
        refused(&|r| r.run_script = Some("../../x".into()), "run script");
        refused(
            &|r| {
                r.tdeps
                    .push(PackageIdent::parse_fq("a/b/1/20240101000000").expect("id"))
            },
            "itself",
        );
        refused(&|r| r.tdeps.clear(), "which TDEPS does not");
        refused(&|r| r.exposes = vec!["80 443".into()], "exposed port");
        let ok = record("a/b/1/20240101000000", &sum);
        assert!(decode(&text(&[ok])).is_ok());
    }
}
