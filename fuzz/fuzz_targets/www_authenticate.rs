//! A registry's `WWW-Authenticate` and `Retry-After` headers.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    oci_registry::fuzzing::www_authenticate(&text);
    oci_registry::fuzzing::retry_after(&text);
});
