use aifs_common::config::{TlsConfig, TransportConfig};
use aifs_common::LayoutPolicy;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct MdsConfig {
    /// Log filter, in `RUST_LOG`'s syntax (`info,aifs_mds=debug`);
    /// `RUST_LOG`, when set, wins. Default: info.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// `text` (default) or `json`: one object a line, for log shippers.
    #[serde(default, skip_serializing_if = "aifs_common::logging::LogFormat::is_text")]
    pub log_format: aifs_common::logging::LogFormat,
    pub listen: SocketAddr,
    /// Where Prometheus metrics are served over HTTP (`127.0.0.1:9500`);
    /// none by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
    /// One redb file per shard lives here.
    pub data_dir: PathBuf,
    /// This MDS's id among `members`.
    #[serde(default = "default_id")]
    pub id: u64,
    /// The MDS processes every shard is replicated over (a Raft group of
    /// them per shard), this one among them, each with the address it
    /// serves at. Fixed when the file system is created. None listed:
    /// this process alone, with one-member groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<Member>,
    /// This process joins a replicated MDS that exists already, as a new
    /// member or one whose data directory was lost: its groups start
    /// empty and wait for the leader to add it (`mdsctl mds add`), instead
    /// of being made from `members`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub join: bool,
    /// Shards other than 0 may be led by other processes than shard 0's
    /// (`mdsctl shard move N --to ID`, placing.rs). Off by default:
    /// clients do not route by shard yet, so a mount reaches only the
    /// shards led with shard 0.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub spread: bool,
    /// Number of metadata shards. Fixed when the file system is created.
    #[serde(default = "default_shards")]
    pub shards: u32,
    /// How many of `members` each shard's group but shard 0's is made of
    /// (0: every member; shard 0's group always has every member). Fixed
    /// when the file system is created, and the same in every member's
    /// config: each makes the groups it is listed in.
    #[serde(default, skip_serializing_if = "is_default")]
    pub group_size: usize,
    /// Layout of the root directory, inherited by everything below it that
    /// has no layout of its own.
    #[serde(default)]
    pub default_layout: LayoutPolicy,
    /// An OSD silent this long is marked down.
    #[serde(default = "default_osd_timeout_ms")]
    pub osd_timeout_ms: u64,
    /// Bandwidth the background repair of degraded replicas may use, in MB/s
    /// (0: no limit).
    #[serde(default = "default_repair_mb_per_s")]
    pub repair_mb_per_s: u64,
    /// A client session silent this long expires.
    #[serde(default = "default_session_timeout_ms")]
    pub session_timeout_ms: u64,
    /// How long a capability lives: a client renews it while it holds a
    /// lease, so this bounds how long access outlives a lease.
    #[serde(default = "default_cap_term_ms")]
    pub cap_term_ms: u64,
    /// The uid and gid that uid and gid 0 become for a client whose
    /// certificate squashes its root (`mdsctl cert issue --root-squash`).
    #[serde(default = "default_anon")]
    pub anon_uid: u32,
    #[serde(default = "default_anon")]
    pub anon_gid: u32,
    /// What one client session may hold (leases, open files).
    #[serde(default)]
    pub session_limits: crate::cluster::SessionLimits,
    pub tls: TlsConfig,
    #[serde(default)]
    pub transport: TransportConfig,
    /// When the shards' groups take snapshots and purge their logs.
    #[serde(default, skip_serializing_if = "is_default")]
    pub raft: crate::store::raft::LogUpkeep,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// One MDS process of a replicated MDS.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub id: u64,
    pub addr: SocketAddr,
}

impl MdsConfig {
    /// Shards other than 0 are led apart from it: `spread` is on, or the
    /// groups are over subsets of the members (`group_size`).
    pub fn spreads(&self) -> bool {
        self.spread || (self.group_size > 0 && self.group_size < self.members.len())
    }

    /// This process alone, with one-member groups.
    pub fn is_solo(&self) -> bool {
        self.members.is_empty() && !self.join
    }

    /// Who this process's groups are made of (`raft::Members`, without
    /// the network to reach them). A process that joins need not be
    /// listed: the leader adds it.
    pub fn group_members(&self) -> aifs_common::Result<(u64, std::collections::BTreeMap<u64, String>)> {
        if self.is_solo() {
            let solo = crate::store::raft::Members::solo();
            return Ok((solo.me, solo.all));
        }
        let all: std::collections::BTreeMap<u64, String> = self.members.iter().map(|m| (m.id, m.addr.to_string())).collect();
        if all.len() != self.members.len() {
            return Err(aifs_common::Error::InvalidArgument("members: an id is listed twice".into()));
        }
        if !all.contains_key(&self.id) && !self.join {
            return Err(aifs_common::Error::InvalidArgument(format!("members: this MDS's id {} is not listed", self.id)));
        }
        Ok((self.id, all))
    }
}

fn default_id() -> u64 {
    1
}

fn default_anon() -> u32 {
    aifs_common::perm::ANON_ID
}

fn default_shards() -> u32 {
    4
}
fn default_osd_timeout_ms() -> u64 {
    5_000
}
fn default_repair_mb_per_s() -> u64 {
    200
}
fn default_cap_term_ms() -> u64 {
    60_000
}
fn default_session_timeout_ms() -> u64 {
    10_000
}
