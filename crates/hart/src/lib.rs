//! Habitat packages as hab-oci needs them: identifiers and Habitat's version ordering
//! ([`ident`]), origin keys ([`keys`]), reading and verifying `.hart` files ([`artifact`]),
//! their metadata without unpacking ([`metadata`]), and packing/signing new ones ([`pack`]).
//!
//! Start with [`Hart::open`] → [`Hart::verify`] → [`VerifiedHart::metadata`] or
//! [`VerifiedHart::payload`]: only a verified hart hands out decoded bytes. This crate knows
//! nothing of images or registries, and never prints.

pub mod artifact;
pub mod ident;
pub mod keys;
pub mod layout;
pub mod metadata;
pub mod pack;

pub use artifact::{
    DEFAULT_MAX_UNPACKED, DecodeOptions, Hart, HartError, Header, HeaderError, UnpackLimit,
    VerifiedHart,
};
pub use ident::{IdentError, PackageIdent, PackageTarget};
pub use keys::{KeyDirs, KeyError, KeyLookupError, NamedRevision, PublicKey, SecretKey};
pub use metadata::{ManifestFacts, MetadataRecord, PackageMetadata};
pub use pack::{PackError, PackOptions, Packed, pack};
