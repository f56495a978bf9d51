//! The object storage daemon: serves object reads and writes over QUIC,
//! stores them in a `FileStore`, and registers and heartbeats with the MDS.
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod config;
pub mod metrics;
pub mod service;
pub mod store;

pub use config::{OsdConfig, OsdLimits};
pub use service::{start, OsdHandle};
