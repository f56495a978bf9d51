use aifs_common::config::{TlsConfig, TransportConfig};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct OsdConfig {
    /// This OSD's id, unique in the cluster.
    pub id: u32,
    /// Address to listen on for client and MDS connections.
    pub listen: SocketAddr,
    /// Where Prometheus metrics are served over HTTP (`127.0.0.1:9501`);
    /// none by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
    /// Address clients should use, when it differs from `listen` (e.g.
    /// listening on 0.0.0.0).
    #[serde(default)]
    pub advertise: Option<SocketAddr>,
    /// The MDS to register with: one address, or the members of a
    /// replicated MDS.
    pub mds: aifs_common::config::MdsAddrs,
    /// Where objects live.
    pub data_dir: PathBuf,
    /// Milliseconds between heartbeats to the MDS.
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    #[serde(default)]
    pub limits: OsdLimits,
    pub tls: TlsConfig,
    #[serde(default)]
    pub transport: TransportConfig,
    /// Log filter, in `RUST_LOG`'s syntax (`info,aifs_mds=debug`);
    /// `RUST_LOG`, when set, wins. Default: info.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// `text` (default) or `json`: one object a line, for log shippers.
    #[serde(default, skip_serializing_if = "aifs_common::logging::LogFormat::is_text")]
    pub log_format: aifs_common::logging::LogFormat,
}

/// What one peer, and all of them, may hold of the OSD's memory
/// (common/src/rpc/budget.rs).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OsdLimits {
    /// Object bytes in flight (writes being received, reads not yet taken
    /// by their peer) in all, in MiB.
    #[serde(default = "default_inflight_mb")]
    pub inflight_mb: u64,
    /// The same, for one connection.
    #[serde(default = "default_inflight_per_conn_mb")]
    pub inflight_per_conn_mb: u64,
}

impl Default for OsdLimits {
    fn default() -> Self {
        OsdLimits { inflight_mb: default_inflight_mb(), inflight_per_conn_mb: default_inflight_per_conn_mb() }
    }
}

/// Enough for every client's write window (16 units of 1 MiB per file,
/// several files) and read-ahead at once; a few GPU nodes' worth.
fn default_inflight_mb() -> u64 {
    1024
}

/// One client's write window and read-ahead over a handful of files.
fn default_inflight_per_conn_mb() -> u64 {
    256
}

fn default_heartbeat_ms() -> u64 {
    1000
}
