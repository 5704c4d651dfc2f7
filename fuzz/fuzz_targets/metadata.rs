//! Package metadata from an arbitrary decoded payload (tar stream): prefix checks, metafile
//! parsing (IDENT, TARGET, DEPS, TDEPS, PATH, EXPOSES, ...), all the way and stopping early.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::path::Path::new("fuzz.hart");
    let _ = hart::metadata::metadata_from_tar(data, path, false);
    let _ = hart::metadata::metadata_from_tar(data, path, true);
});
