//! The hart crate against real packages and keys published by the Habitat project.

use std::path::{Path, PathBuf};

use hart::{DecodeOptions, Hart, HartError, KeyDirs, NamedRevision, PublicKey, SecretKey};

fn fixtures(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(sub)
}

fn keys(sub: &str) -> KeyDirs {
    KeyDirs::new(vec![fixtures(sub)])
}

#[test]
fn happyhumans_verifies_with_upstream_checksum() {
    let path = fixtures("habitat/happyhumans-possums-8.1.4-20160427165340-x86_64-linux.hart");
    let v = Hart::open(&path)
        .expect("header")
        .verify(&keys("habitat"))
        .expect("verifies");
    assert_eq!(
        v.checksum(),
        "74d368d3642721b5045929845f6a1146fad50c7ecab7ab547603965e45a29a82"
    );
    assert_eq!(
        v.payload_hash(),
        "0f2c5f4de145c7f78601caae9c7b8767098413d05739de913c012922b7eed760"
    );
    assert_eq!(v.payload_len(), 940);
    let m = v.metadata(DecodeOptions::default()).expect("metadata");
    assert_eq!(
        m.ident.to_string(),
        "happyhumans/possums/8.1.4/20160427165340"
    );
    assert_eq!(m.target.as_str(), "x86_64-linux");
    assert_eq!(m.entries, 6);
    assert!(m.file("MANIFEST").is_some());
    assert!(!m.is_service);
}

#[test]
fn builder_fixtures_classified() {
    let dir = fixtures("builder");
    let keys = keys("builder");
    let mut ok = 0;
    for entry in std::fs::read_dir(&dir).expect("dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "hart") {
            continue;
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let result = Hart::open(&path).expect("header").verify(&keys);
        let unknown = [
            "0.1.3-20171205003213",
            "0.1.3-20171206004121",
            "0.1.4-20171206004139",
        ];
        if unknown.iter().any(|u| name.contains(u)) {
            match result {
                Err(HartError::UnknownKey { signer, .. }) => {
                    assert_eq!(signer.to_string(), "neurosis-20171205003147")
                }
                other => panic!("{name}: expected unknown key, got {other:?}"),
            }
        } else {
            let v = result.unwrap_or_else(|e| panic!("{name}: {e}"));
            let m = v.metadata(DecodeOptions::default()).expect("metadata");
            let canonical = m.ident.archive_name(&m.target).expect("fq");
            assert_eq!(canonical, name);
            ok += 1;
        }
    }
    assert_eq!(ok, 7);
}

#[test]
fn signme_matches_upstream_vector() {
    let key_path = fixtures("habitat/origin-key-valid-20160509190508.sig.key");
    let key = SecretKey::from_file(&key_path).expect("secret key");
    let data = std::fs::read(fixtures("habitat/signme.dat")).expect("signme");
    assert_eq!(
        hart::artifact::blake2b_hex(&data),
        "20590a52c4f00588c500328b16d466c982a26fabaa5fa4dcc83052dd0a84f233"
    );
    let sig = key.sign_combined(hart::artifact::blake2b_hex(&data).as_bytes());
    assert_eq!(&sig[..6], &[148, 34, 226, 235, 2, 136]);
    assert_eq!(hex::encode(&sig), SIGNME_SIGNATURE);
    // The public key verifies what the secret key signed.
    let public = PublicKey::from_file(&fixtures("habitat/origin-key-valid-20160509190508.pub"))
        .expect("pub");
    assert_eq!(public.key, key.public().key);
}

/// The full combined signature of signme.dat by origin-key-valid-20160509190508, computed
/// independently with Python's `cryptography` (OpenSSL's Ed25519).
const SIGNME_SIGNATURE: &str = "9422e2eb0288da8782f18186c1ce030f9e6344a98b260d8c785c988f618716e914f3303f3b521a33353f05d6a6e7717bf12119e35bc94c30c7d6b76eada1960c32303539306135326334663030353838633530303332386231366434363663393832613236666162616135666134646363383330353264643061383466323333";

#[test]
fn invalid_version_keys_rejected() {
    for f in [
        "origin-key-invalid-version-20160518021451.pub",
        "origin-key-invalid-version-20160518021451.sig.key",
    ] {
        let path = fixtures("habitat").join(f);
        let err = if f.ends_with(".pub") {
            PublicKey::from_file(&path).err().map(|e| e.to_string())
        } else {
            SecretKey::from_file(&path).err().map(|e| e.to_string())
        };
        let err = err.expect("must be rejected");
        assert!(err.contains("unsupported key version 'NONSENSE-1"), "{err}");
        assert!(err.contains(f), "{err}");
    }
}

#[test]
fn unknown_key_names_file_and_dirs() {
    let path = fixtures("builder/neurosis-testapp-0.1.3-20171205003213-x86_64-linux.hart");
    let err = Hart::open(&path)
        .expect("header")
        .verify(&keys("builder"))
        .expect_err("unknown");
    let msg = err.to_string();
    assert!(msg.contains("neurosis-20171205003147.pub"), "{msg}");
    assert!(msg.contains("fixtures/builder"), "{msg}");
    let _ = NamedRevision::parse("neurosis-20171205003147").expect("valid");
}
