//! Configuration files (TOML) shared by every role. Each binary reads its
//! own file and lets command-line flags override single fields.
use crate::error::{Error, Result};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// QUIC transport settings. Defaults follow what measured best on loopback
/// (DESIGN.md, "Wire protocol and transport"): large stream and connection
/// windows so one connection keeps a 1 MiB stripe unit in flight per
/// stream, and 32 MiB socket buffers (set with the FORCE options, so the
/// sysctl caps do not apply when running as root): with 4 MiB, an OSD busy
/// for a moment dropped datagrams of a 16-unit write window (the kernel's
/// RcvbufErrors: ~120 a GiB), and each drop shrank the congestion window;
/// 32 MiB dropped none. Packets start at the 1200-byte QUIC
/// floor and path-MTU discovery raises them up to `max_mtu`: 6500 bytes by
/// default (ten of them fill one 64 KiB GSO send, see `rpc::udp`), and
/// `LOOPBACK_MAX_MTU` where every peer is on this machine. `max_mtu` is
/// also the largest datagram an endpoint accepts, which caps the peer's
/// discovery.
/// A peer silent for `idle_timeout_ms` (keepalives go every `keepalive_ms`)
/// is taken for dead: 5 s, as long as the MDS waits for an OSD's
/// heartbeat, bounds how long a write waits on a stopped or cut-off OSD.
/// A keepalive to a server that restarted draws a reset at once, so the
/// keepalive period is also how soon its peers learn of the restart.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TransportConfig {
    pub initial_mtu: u16,
    pub max_mtu: u16,
    pub stream_window: u64,
    pub conn_window: u64,
    pub send_window: u64,
    pub socket_buffer: usize,
    pub idle_timeout_ms: u64,
    pub keepalive_ms: u64,
    pub max_streams: u32,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            initial_mtu: 1200,
            max_mtu: 6500,
            stream_window: 16 << 20,
            conn_window: 64 << 20,
            send_window: 64 << 20,
            socket_buffer: 32 << 20,
            idle_timeout_ms: 5_000,
            keepalive_ms: 500,
            max_streams: 1024,
        }
    }
}

/// The largest packet when every peer is on loopback, whose MTU is 64 KiB:
/// one send, one AEAD call and one acknowledged packet per 65000 bytes
/// instead of per 6500. By hand, a 1 GiB save and load each took about 7%
/// less CPU over all aifs processes (median of 4, against 6500).
pub const LOOPBACK_MAX_MTU: u16 = 65_000;

impl TransportConfig {
    /// The settings for a cluster whose MDS is at `ip`: the defaults, with
    /// loopback's packet size when that is a loopback address (then every
    /// peer is on this machine).
    pub fn for_cluster_at(ip: std::net::IpAddr) -> Self {
        let mut t = TransportConfig::default();
        if ip.is_loopback() {
            t.max_mtu = LOOPBACK_MAX_MTU;
        }
        t
    }
}

/// Where a process finds the cluster CA and its own certificate and key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsConfig {
    /// The conventional file names in a directory made by `mdsctl init`:
    /// `ca.pem`, and `<stem>.pem`, `<stem>.key` (`mds`, `client`, `admin`,
    /// `osd<id>`).
    pub fn in_dir(dir: &Path, stem: &str) -> Self {
        TlsConfig {
            ca: dir.join("ca.pem"),
            cert: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}.key")),
        }
    }
}

/// The MDS processes a node may reach: one address, or the members of a
/// replicated MDS. In a config file, `mds = "ADDR"` or `mds = ["ADDR", ...]`;
/// on a command line, addresses separated by commas. Calls go to whichever
/// leads (`rpc::RpcClient::any_of`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MdsAddrs(pub Vec<std::net::SocketAddr>);

impl MdsAddrs {
    pub fn one(addr: std::net::SocketAddr) -> Self {
        MdsAddrs(vec![addr])
    }

    /// The first listed: where a one-MDS cluster is, and the address shown
    /// when one is wanted.
    pub fn first(&self) -> std::net::SocketAddr {
        self.0[0]
    }
}

impl std::fmt::Display for MdsAddrs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let all: Vec<String> = self.0.iter().map(|a| a.to_string()).collect();
        f.write_str(&all.join(","))
    }
}

impl std::str::FromStr for MdsAddrs {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let addrs = s
            .split(',')
            .map(|a| a.trim().parse().map_err(|e| format!("MDS address {a:?}: {e}")))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        if addrs.is_empty() {
            return Err("no MDS address".into());
        }
        Ok(MdsAddrs(addrs))
    }
}

impl Serialize for MdsAddrs {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => one.serialize(s),
            all => all.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for MdsAddrs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(std::net::SocketAddr),
            Many(Vec<std::net::SocketAddr>),
        }
        match OneOrMany::deserialize(d)? {
            OneOrMany::One(a) => Ok(MdsAddrs(vec![a])),
            OneOrMany::Many(v) if !v.is_empty() => Ok(MdsAddrs(v)),
            OneOrMany::Many(_) => Err(serde::de::Error::custom("mds: no address listed")),
        }
    }
}

pub fn load<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::InvalidArgument(format!("cannot read config {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| Error::InvalidArgument(format!("config {}: {e}", path.display())))
}

pub fn to_toml<T: Serialize>(v: &T) -> Result<String> {
    toml::to_string_pretty(v).map_err(|e| Error::InvalidArgument(format!("config encode: {e}")))
}

/// Where `make run` keeps the local cluster: `$AIFS_HOME/local`, else
/// `$HOME/.aifs/local`. `mdsctl` without `--config` looks here.
pub fn local_state_dir() -> PathBuf {
    if let Some(h) = std::env::var_os("AIFS_HOME") {
        return PathBuf::from(h).join("local");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".aifs").join("local")
}

#[cfg(test)]
mod tests {
    use super::{MdsAddrs, TransportConfig, LOOPBACK_MAX_MTU};

    #[test]
    fn mds_addresses_read_as_one_or_a_list() {
        #[derive(serde::Deserialize, serde::Serialize)]
        struct C {
            mds: MdsAddrs,
        }
        let one: C = toml::from_str("mds = \"127.0.0.1:7000\"").unwrap();
        assert_eq!(one.mds, MdsAddrs::one(([127, 0, 0, 1], 7000).into()));
        assert_eq!(toml::to_string(&one).unwrap().trim(), "mds = \"127.0.0.1:7000\"");
        let many: C = toml::from_str("mds = [\"127.0.0.1:7000\", \"127.0.0.1:7001\"]").unwrap();
        assert_eq!(many.mds, "127.0.0.1:7000, 127.0.0.1:7001".parse().unwrap());
        assert!(toml::from_str::<C>("mds = []").is_err());
        assert!("".parse::<MdsAddrs>().is_err());
    }

    #[test]
    fn only_a_loopback_cluster_gets_loopback_packets() {
        assert_eq!(TransportConfig::for_cluster_at([127, 0, 0, 1].into()).max_mtu, LOOPBACK_MAX_MTU);
        assert_eq!(TransportConfig::for_cluster_at(std::net::Ipv6Addr::LOCALHOST.into()).max_mtu, LOOPBACK_MAX_MTU);
        assert_eq!(TransportConfig::for_cluster_at([10, 0, 0, 7].into()), TransportConfig::default());
    }
}
