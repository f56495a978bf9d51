//! The aifs client: a FUSE file system (`fuse`) over an async core
//! (`fs::ClientFs`) that talks to the MDS and stripes data over OSDs.
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod config;
pub mod cred;
pub mod data;
pub mod dirops;
pub mod fs;
pub mod fuse;
pub mod meta;
pub mod metrics;
pub mod pool;
pub mod route;

pub use config::ClientConfig;
pub use fs::ClientFs;
