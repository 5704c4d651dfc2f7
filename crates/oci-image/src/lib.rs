//! Deterministic OCI image building blocks, free of Habitat and of any async runtime:
//! normalized layer tars compressed while streaming with their digests ([`layer`]),
//! canonical JSON config/manifest/index ([`image`]), and the on-disk formats: an OCI image
//! layout directory, and tar archives of it (oci-archive, and the dual docker-archive that
//! `docker load` and OCI tools both read) ([`layout`]); and reading another tool's image
//! archive (`docker save`) into a layout, each layer re-compressed as its exact bytes
//! ([`import`]); a base image for `--base-image`, opened for one platform, its layers
//! checked against their digests and the files they leave visible ([`base`]).

pub mod base;
pub mod digest;
pub mod image;
pub mod import;
pub mod layer;
pub mod layout;
pub mod reference;

pub use image::{
    Built, BuiltImage, BuiltIndex, HistoryEntry, ImageConfigSpec, LayerDescriptor, Platform,
    build_index,
};
pub use import::{ImportError, import_archive};
pub use layer::{
    Compression, EntryMeta, EntrySink, LayerDigests, LayerWriter, decompressed, sha256_digest,
};
pub use layout::{ArchiveKind, BlobWriter, IndexEntry, LayoutError, OciDir, write_archive};
