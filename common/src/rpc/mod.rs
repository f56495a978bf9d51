//! The RPC layer over quinn (DESIGN.md, "Wire protocol and transport"):
//! one QUIC connection per peer pair, one bidirectional stream per call,
//! mutual TLS with the cluster CA. `tls` builds the rustls configurations,
//! `endpoint` the UDP sockets and transport settings, `client` makes calls
//! and `server` serves a `Service`.
pub mod client;
pub mod endpoint;
pub mod server;
pub mod tls;
mod udp;

pub use client::{call_on, RpcClient};
pub use endpoint::{client_endpoint, server_endpoint};
pub use server::{serve, serve_conn, Peer, Service};
pub use tls::Identity;
