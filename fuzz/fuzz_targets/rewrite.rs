//! The tar rewriter (hart payload → layer) on arbitrary tar streams: whatever it accepts, the
//! layer it writes reads back as a tar whose every entry is one of the prefix's parents or
//! lies inside the package's own `hab/pkgs/o/n/v/r/` prefix, with no `..` component and no
//! hardlink leaving the prefix.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok((ident, layer)) = export::rewrite_for_fuzzing(data) else {
        return;
    };
    let prefix = format!("hab/pkgs/{ident}");
    let parents: Vec<String> = (1..=5)
        .map(|n| prefix.split('/').take(n).collect::<Vec<_>>().join("/"))
        .collect();
    let inside = |p: &str| {
        let p = p.trim_end_matches('/');
        !p.split('/').any(|c| c == ".." || c == "." || c.is_empty())
            && (p == prefix
                || p.starts_with(&format!("{prefix}/"))
                || parents.iter().any(|q| q == p))
    };
    let mut archive = tar::Archive::new(&layer[..]);
    for entry in archive.entries().expect("our layer is a tar") {
        let entry = entry.expect("our layer's entries read back");
        let path = entry.path().expect("path").to_string_lossy().into_owned();
        assert!(inside(&path), "{path} escapes {prefix}");
        if entry.header().entry_type() == tar::EntryType::Link {
            let target = entry.link_name().expect("link").expect("target");
            assert!(
                inside(&target.to_string_lossy()),
                "hardlink {path} → {target:?}"
            );
        }
    }
});
