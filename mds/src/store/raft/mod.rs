//! Each shard is a Raft group (openraft; DESIGN.md, "Metadata that
//! survives losing a machine"). The shard's redb database is the state
//! machine (machine.rs), changed only by applying committed entries; the
//! log and vote are in a database of their own (log.rs). An entry carries
//! the change set of one group commit (txn.rs): what the leader's
//! mutations wrote, row by row, so a member applies bytes and never runs
//! a mutation's logic.
//!
//! Today every group has one member, this process, so an entry is
//! committed once it is durable in the local log. Groups over several
//! processes need the MDS-to-MDS transport, which is not built yet:
//! [`Peers`] says so to openraft if it ever asks for another member.
pub mod codec;
mod log;
mod machine;

pub use log::LogStore;
pub use machine::Machine;

use crate::store::txn::ChangeSet;
use aifs_common::{Error, Result};
use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest, VoteResponse};
use openraft::{BasicNode, Config, SnapshotPolicy};
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

/// This process's member id in the groups it holds.
pub const SELF: NodeId = 1;

/// A snapshot writes every row of the shard, so one is taken only once the
/// log has grown, since the last, by this many bytes or by the size of the
/// shard's database, whichever is more: the cost of snapshots stays in
/// proportion to what was logged, and the log to about the shard's size.
pub const LOG_BEFORE_SNAPSHOT: u64 = 256 << 20;

/// How often the log's growth is looked at.
const SNAPSHOT_CHECK: Duration = Duration::from_secs(1);

/// Entries kept in the log behind a snapshot, for members a little behind.
const KEEP_BEHIND_SNAPSHOT: u64 = 1_000;

/// How long a start may take to become its groups' leader and apply its
/// log.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Other members of a group, reached over the network: none yet.
pub struct Peers;

/// A member this process cannot reach.
pub struct NoPeer {
    target: NodeId,
}

impl NoPeer {
    fn unreachable<E: std::error::Error>(&self) -> RPCError<NodeId, BasicNode, E> {
        let why = format!("MDS member {} cannot be reached: this MDS holds one-member groups only", self.target);
        RPCError::Unreachable(Unreachable::new(&std::io::Error::other(why)))
    }
}

impl RaftNetworkFactory<Cfg> for Peers {
    type Network = NoPeer;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> NoPeer {
        NoPeer { target }
    }
}

impl RaftNetwork<Cfg> for NoPeer {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<Cfg>,
        _option: RPCOption,
    ) -> std::result::Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        Err(self.unreachable())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<Cfg>,
        _option: RPCOption,
    ) -> std::result::Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>> {
        Err(self.unreachable())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> std::result::Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        Err(self.unreachable())
    }
}

fn raft_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Io(format!("{what}: {e}"))
}

/// Start shard `shard`'s group over `db` (the shard's database) and wait
/// until this process leads it with every logged entry applied, so the
/// mutations that run next see all that was acknowledged before. A
/// snapshot is taken once the log has grown by `log_before_snapshot`
/// bytes, or by the database's size if more ([`LOG_BEFORE_SNAPSHOT`]).
pub async fn start(dir: &Path, shard: u32, db: Arc<redb::Database>, log_before_snapshot: u64) -> Result<ShardRaft> {
    let log = LogStore::open(&dir.join(format!("shard-{shard}.log.redb")))?;
    let appended = log.appended.clone();
    let machine = Machine::new(db, dir, shard)?;
    let config = Config {
        cluster_name: format!("aifs-shard-{shard}"),
        heartbeat_interval: 100,
        election_timeout_min: 300,
        election_timeout_max: 600,
        snapshot_policy: SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: KEEP_BEHIND_SNAPSHOT,
        ..Default::default()
    }
    .validate()
    .map_err(|e| raft_err("raft config", e))?;
    let raft = ShardRaft::new(SELF, Arc::new(config), Peers, log, machine).await.map_err(|e| raft_err("starting shard group", e))?;
    if !raft.is_initialized().await.map_err(|e| raft_err("shard group", e))? {
        let members = std::collections::BTreeMap::from([(SELF, BasicNode::new("local"))]);
        raft.initialize(members).await.map_err(|e| raft_err("making shard group", e))?;
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
    tokio::spawn(snapshot_when_grown(raft.clone(), appended, dir.join(format!("shard-{shard}.redb")), log_before_snapshot));
    Ok(raft)
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
            let log = LogStore::open(&dir.path().join("shard-0.log.redb")).unwrap();
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
}
