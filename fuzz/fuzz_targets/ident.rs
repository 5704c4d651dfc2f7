//! Idents and Habitat's version ordering: parsing never panics, a parsed ident prints back to
//! itself, and the total order is antisymmetric.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (a, b) = text.split_once('\n').unwrap_or((&text, ""));
    let pa = hart::PackageIdent::parse(a);
    let pb = hart::PackageIdent::parse(b);
    let _ = hart::PackageIdent::parse_fq(a);
    if let Ok(i) = &pa {
        assert_eq!(hart::PackageIdent::parse(&i.to_string()).as_ref(), Ok(i));
    }
    if let (Ok(x), Ok(y)) = (&pa, &pb) {
        assert_eq!(x.total_cmp(y), y.total_cmp(x).reverse());
        let _ = x.habitat_partial_cmp(y);
        let _ = x.satisfied_by(y);
    }
    if let (Ok(x), Ok(y)) = (
        hart::ident::version_sort(a, b),
        hart::ident::version_sort(b, a),
    ) {
        assert_eq!(x, y.reverse(), "{a:?} vs {b:?}");
    }
});
