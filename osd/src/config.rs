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
    /// Address clients should use, when it differs from `listen` (e.g.
    /// listening on 0.0.0.0).
    #[serde(default)]
    pub advertise: Option<SocketAddr>,
    /// The MDS to register with.
    pub mds: SocketAddr,
    /// Where objects live.
    pub data_dir: PathBuf,
    /// Milliseconds between heartbeats to the MDS.
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    pub tls: TlsConfig,
    #[serde(default)]
    pub transport: TransportConfig,
}

fn default_heartbeat_ms() -> u64 {
    1000
}
