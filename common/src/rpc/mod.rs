//! The RPC layer over quinn (DESIGN.md, "Wire protocol and transport"):
//! one QUIC connection per peer pair, one bidirectional stream per call,
//! mutual TLS with the cluster CA. `tls` builds the rustls configurations,
//! `endpoint` the UDP sockets and transport settings, `client` makes calls
//! `server` serves a `Service` (within a `budget` of bytes in flight),
//! `gate` keeps revoked certificates out, and `leader` finds the MDS
//! process that serves.
pub mod budget;
pub mod client;
pub mod endpoint;
pub mod gate;
pub mod leader;
pub mod server;
pub mod tls;
mod udp;

pub use budget::Budget;
pub use client::{call_on, RpcClient};
pub use endpoint::{client_endpoint, server_endpoint};
pub use gate::Gate;
pub use server::{serve, serve_conn, Peer, Service};
pub use tls::Identity;
