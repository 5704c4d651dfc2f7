//! Image references and repository names as users and templates write them.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = export::naming::parse_reference(&text);
    let _ = export::naming::check_template(&text);
    oci_registry::fuzzing::repository(&text);
});
