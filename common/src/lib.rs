//! Shared pieces of aifs: ids, striping math, wire messages, the QUIC RPC
//! layer with mutual TLS, configuration and the one error type.
//!
//! The architecture and the reasons behind it live in `DESIGN.md`; module
//! docs point there rather than repeat it.
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod cap;
pub mod certs;
pub mod config;
pub mod error;
pub mod ids;
pub mod layout;
pub mod lease;
pub mod locks;
pub mod logging;
pub mod metrics;
pub mod mounts;
pub mod perm;
pub mod proto;
pub mod rpc;
pub mod shutdown;
pub mod time;

pub use error::{errno, Error, Result};
pub use ids::{InodeId, ObjectId, OsdId, Owner, SessionId};
pub use layout::{Extent, Layout, LayoutPolicy};
