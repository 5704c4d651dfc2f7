//! Where packages come from and which ones an image needs: package sources (directories of
//! `.hart` files, such as `hab pkg download --download-directory` output or Habitat's
//! artifact cache), picking the latest match the way `hab` does, and resolving the verified
//! runtime closure in layer order. With Habitat Builder configured ([`builder`]), what the
//! local sources lack is looked up in a channel and downloaded into the artifact cache.
//!
//! Every closure member's signature and payload hash are checked before any byte of its
//! payload is decoded. This crate never prints; callers show what it returns.

pub mod builder;
mod error;
mod remote;
mod resolve;
mod source;

pub use builder::{BuilderSettings, DownloadProgress};
pub use error::{DepotError, Missing};
pub use resolve::{Request, Requested, ResolvedClosure, ResolvedPackage};
pub use source::{Depot, DepotSettings, Loaded, PayloadTap, Records};
