//! The shared core of `bundle-build` and `bundle-install`: the manifest, safe bundle paths, hashing,
//! minisign-format signatures, writing archives, and the streaming verifier that alone can produce a
//! [`verify::VerifiedBundle`].

pub mod archive;
pub mod durable;
pub mod exit;
pub mod hash;
pub mod input;
pub mod keycrypt;
pub mod manifest;
pub mod naming;
pub mod paths;
pub mod report;
pub mod rotation;
pub mod signature;
pub mod split;
pub mod tags;
pub mod tarfmt;
pub mod time;
pub mod unsigned;
pub mod verify;
pub mod version;
pub mod wheel;
