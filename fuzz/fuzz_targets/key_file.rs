//! Origin key files (public and secret) from arbitrary text.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let path = std::path::Path::new("fuzz-20240101000000.pub");
    let _ = hart::PublicKey::parse(path, &text);
    let _ = hart::SecretKey::parse(std::path::Path::new("fuzz-20240101000000.sig.key"), &text);
    let _ = hart::NamedRevision::parse(&text);
});
