//! JSON a registry or token service answers: error bodies and token answers.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    oci_registry::fuzzing::registry_json(data);
});
