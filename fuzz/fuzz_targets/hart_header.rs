//! The 5-line hart header parser on arbitrary bytes: an error, never a panic, and a parsed
//! header re-serializes to bytes that parse to the same header.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut cursor = std::io::Cursor::new(data);
    if let Ok((header, len)) = hart::artifact::parse_header(&mut cursor) {
        assert!(len as usize <= data.len());
        let bytes = header.to_bytes();
        let (again, _) = hart::artifact::parse_header(&mut std::io::Cursor::new(&bytes))
            .expect("a serialized header parses");
        assert_eq!(again.to_bytes(), bytes);
    }
});
