//! Each shard is a Raft group (openraft; DESIGN.md, "Metadata that
//! survives losing a machine"). The shard's redb database is the state
//! machine (machine.rs), changed only by applying committed entries; the
//! logs and votes of all the process's shards share a database of their
//! own, and its commits (log.rs). An entry carries
//! the change set of one group commit (txn.rs): what the leader's
//! mutations wrote, row by row, so a member applies bytes and never runs
//! a mutation's logic.
//!
//! A group has one member (this process: an entry is committed once it
//! is durable in the local log) or the MDS processes of the config's
//! `members`, which reach each other over QUIC (net.rs). Then whichever
//! process leads shard 0's group claims the others, and the others give
//! up what they lead (replica.rs), so that one process leads them all.
pub mod codec;
pub mod log;
mod machine;
pub mod net;

pub use log::{LogStore, Logs};
pub use machine::Machine;

use crate::store::txn::ChangeSet;
use aifs_common::{Error, Result};
use openraft::{BasicNode, Config, SnapshotPolicy};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

openraft::declare_raft_types!(
    /// The Raft types of a shard group.
    pub Cfg:
        D = ChangeSet,
        R = (),
        NodeId = u64,
        Node = BasicNode,
        SnapshotData = tokio::fs::File,
);

pub type NodeId = u64;
pub type ShardRaft = openraft::Raft<Cfg>;

/// This process's member id in one-member groups.
pub const SELF: NodeId = 1;

/// Its address there: none, as no other member reaches it.
pub const SOLO_ADDR: &str = "local";

/// Who a process's groups are made of.
#[derive(Clone)]
pub struct Members {
    /// This process's id among them.
    pub me: NodeId,
    /// Every member and the address its MDS serves at.
    pub all: BTreeMap<NodeId, String>,
    /// How to reach the others (none for a one-member group).
    pub peers: Option<net::PeerClients>,
    /// The groups exist elsewhere: this process waits to be added to
    /// them rather than making them from `all`.
    pub join: bool,
    /// How many of `all` each group but shard 0's is made of in a new
    /// file system (0: every one). Shard 0's group has every member.
    pub group_size: usize,
}

impl Members {
    /// This process alone.
    pub fn solo() -> Members {
        Members { me: SELF, all: BTreeMap::from([(SELF, SOLO_ADDR.to_string())]), peers: None, join: false, group_size: 0 }
    }

    /// The members shard `shard`'s group is made of in a new file system:
    /// every one for shard 0; for another, [`Members::group_size`] of them
    /// in id order, starting at the (shard - 1)th and counting round, so
    /// that each member is in as many groups.
    pub fn of_shard(&self, shard: u32) -> BTreeMap<NodeId, String> {
        let n = self.all.len();
        if shard == 0 || self.group_size == 0 || self.group_size >= n {
            return self.all.clone();
        }
        let ids: Vec<(&NodeId, &String)> = self.all.iter().collect();
        (0..self.group_size).map(|i| ids[(shard as usize - 1 + i) % n]).map(|(id, a)| (*id, a.clone())).collect()
    }

    /// One-member groups, never to have more.
    pub fn is_solo(&self) -> bool {
        self.peers.is_none()
    }
}

/// Heartbeats go this often; a member that hears none for a random time
/// in the election range stands for election.
pub const HEARTBEAT_MS: u64 = 100;
pub const ELECTION_MIN_MS: u64 = 300;
pub const ELECTION_MAX_MS: u64 = 600;

/// How the groups' logs are kept short (MdsConfig's `[raft]`).
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LogUpkeep {
    /// A snapshot writes every row of the shard, so one is taken only once
    /// the log has grown, since the last, by this many bytes or by the size
    /// of the shard's database, whichever is more: the cost of snapshots
    /// stays in proportion to what was logged, and the log to about the
    /// shard's size.
    pub snapshot_after_bytes: u64,
    /// Entries kept in the log behind a snapshot, for members a little
    /// behind; one further behind is sent the snapshot.
    pub keep_behind_snapshot: u64,
}

impl Default for LogUpkeep {
    fn default() -> Self {
        LogUpkeep { snapshot_after_bytes: 256 << 20, keep_behind_snapshot: 1_000 }
    }
}

/// How often the log's growth is looked at.
const SNAPSHOT_CHECK: Duration = Duration::from_secs(1);

/// How long a start may take to become its groups' leader and apply its
/// log.
const START_TIMEOUT: Duration = Duration::from_secs(60);

fn raft_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Io(format!("{what}: {e}"))
}

/// Start shard `shard`'s group over `db` (the shard's database). A
/// one-member group is ready when this returns: led here, with every
/// logged entry applied, so the mutations that run next see all that was
/// acknowledged before. A group of several members is left as it is:
/// elected from what it holds, or empty, either for [`make_group`] or, if
/// the process joins, for the leader to fill. Snapshots are taken and the
/// log purged as `upkeep` says. Its log is kept in `logs`.
pub async fn start(logs: &Arc<Logs>, dir: &Path, shard: u32, db: Arc<redb::Database>, upkeep: &LogUpkeep, members: &Members) -> Result<ShardRaft> {
    let log = logs.store(dir, shard)?;
    let appended = log.appended.clone();
    let machine = Machine::new(db, dir, shard)?;
    let config = Config {
        cluster_name: format!("aifs-shard-{shard}"),
        heartbeat_interval: HEARTBEAT_MS,
        election_timeout_min: ELECTION_MIN_MS,
        election_timeout_max: ELECTION_MAX_MS,
        // An append must fit one message (`frame::MAX_PAYLOAD`): an entry
        // is at most one batch of mutations.
        max_payload_entries: 64,
        snapshot_policy: SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: upkeep.keep_behind_snapshot,
        ..Default::default()
    }
    .validate()
    .map_err(|e| raft_err("raft config", e))?;
    let network = net::Peers { shard, clients: members.peers.clone() };
    let raft = ShardRaft::new(members.me, Arc::new(config), network, log, machine).await.map_err(|e| raft_err("starting shard group", e))?;
    if members.is_solo() {
        make_group(&raft, shard, members).await?;
    }
    tokio::spawn(snapshot_when_grown(raft.clone(), appended, dir.join(crate::store::ShardStore::file_name(shard)), upkeep.snapshot_after_bytes));
    if !members.is_solo() {
        return Ok(raft);
    }
    // The only voter: no reason to wait out an election timeout.
    if raft.metrics().borrow().current_leader != Some(SELF) {
        raft.trigger().elect().await.map_err(|e| raft_err("shard group election", e))?;
    }
    raft.wait(Some(START_TIMEOUT))
        .metrics(
            |m| {
                m.current_leader == Some(SELF)
                    && m.last_applied.is_some_and(|l| l.leader_id.term == m.current_term && Some(l.index) == m.last_log_index)
            },
            "shard group led here with its log applied",
        )
        .await
        .map_err(|e| raft_err(&format!("shard {shard} did not become ready"), e))?;
    Ok(raft)
}

/// Make `raft`'s group (shard `shard`'s), if it is new, of the config's
/// `members` ([`Members::of_shard`]): each of them makes the same first
/// entry.
pub async fn make_group(raft: &ShardRaft, shard: u32, members: &Members) -> Result<()> {
    if raft.is_initialized().await.map_err(|e| raft_err("shard group", e))? {
        return Ok(());
    }
    let all: BTreeMap<NodeId, BasicNode> = members.of_shard(shard).iter().map(|(id, a)| (*id, BasicNode::new(a))).collect();
    raft.initialize(all).await.map_err(|e| raft_err("making shard group", e))
}

/// Take a snapshot whenever the log has grown past what [`start`] says;
/// ends with the group.
async fn snapshot_when_grown(raft: ShardRaft, appended: Arc<AtomicU64>, db: PathBuf, floor: u64) {
    let running = raft.metrics();
    let mut since = 0;
    loop {
        tokio::time::sleep(SNAPSHOT_CHECK).await;
        if running.has_changed().is_err() {
            return;
        }
        let now = appended.load(Ordering::Relaxed);
        let size = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
        if now - since > floor.max(size) {
            if raft.trigger().snapshot().await.is_err() {
                return;
            }
            since = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::testing::{StoreBuilder, Suite};
    use openraft::StorageError;

    struct Builder;

    impl StoreBuilder<Cfg, LogStore, Machine, tempfile::TempDir> for Builder {
        async fn build(&self) -> std::result::Result<(tempfile::TempDir, LogStore, Machine), StorageError<NodeId>> {
            let dir = tempfile::tempdir().unwrap();
            let db = Arc::new(redb::Database::create(dir.path().join("shard-0.redb")).unwrap());
            let t = db.begin_write().unwrap();
            for table in crate::store::tables::TABLES {
                table.create(&t).unwrap();
            }
            t.commit().unwrap();
            let log = Logs::open(&crate::store::media::Disk, dir.path()).unwrap().store(dir.path(), 0).unwrap();
            let machine = Machine::new(db, dir.path(), 0).unwrap();
            Ok((dir, log, machine))
        }
    }

    /// openraft's own checks of a log store and state machine: log
    /// reads, truncation and purging, votes, membership, applying, and
    /// a snapshot built by one machine installed in another.
    #[test]
    fn the_log_and_state_machine_pass_openrafts_suite() {
        Suite::test_all(Builder).unwrap();
    }

    fn members(n: u64, group_size: usize) -> Members {
        let all = (1..=n).map(|id| (id, format!("10.0.0.{id}:7000"))).collect();
        Members { me: 1, all, peers: None, join: false, group_size }
    }

    /// Shard 0's group is over every member; each other shard's over
    /// `group_size` distinct members, each member in as many groups
    /// (over a whole round of shards); with `group_size` 0, or not fewer
    /// than the members, every group is over all of them.
    #[test]
    fn groups_of_a_size_are_spread_evenly_over_the_members() {
        let m = members(5, 3);
        assert_eq!(m.of_shard(0), m.all);
        let mut count = BTreeMap::<NodeId, usize>::new();
        for shard in 1..=5 {
            let g = m.of_shard(shard);
            assert_eq!(g.len(), 3, "shard {shard}: {g:?}");
            assert!(g.iter().all(|(id, a)| m.all.get(id) == Some(a)));
            for id in g.keys() {
                *count.entry(*id).or_default() += 1;
            }
        }
        assert_eq!(count.values().copied().collect::<Vec<_>>(), vec![3; 5], "{count:?}");
        assert_eq!(m.of_shard(1).keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(m.of_shard(5).keys().copied().collect::<Vec<_>>(), vec![1, 2, 5]);
        for (n, size) in [(3, 3), (2, 3), (4, 0)] {
            let m = members(n, size);
            assert!((0..8).all(|s| m.of_shard(s) == m.all), "{n} members, groups of {size}");
        }
    }
}
