//! What the MDS reports of the cluster to its operators (`mdsctl status`,
//! `top`, `fsck`, `repair status`): OSDs, sessions and their load,
//! shards, members, evictions, fsck's findings, repair's progress; and
//! what an OSD says of itself in its heartbeat. Re-exported by `mds`,
//! where the messages that carry them live.
use super::osd::OsdStats;
use crate::ids::{OsdId, SessionId};
use rkyv::{Archive, Deserialize, Serialize};

#[derive(Archive, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug, serde::Serialize)]
#[rkyv(derive(Debug))]
pub enum OsdState {
    Up,
    Down,
}

#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug, serde::Serialize)]
#[rkyv(derive(Debug))]
pub struct OsdInfo {
    pub id: OsdId,
    pub addr: String,
    pub state: OsdState,
    pub capacity: u64,
    pub used: u64,
    pub objects: u64,
    /// Milliseconds since the last heartbeat (as the MDS saw it).
    pub last_seen_ms: u64,
    /// Taken out (`mdsctl osd out`): gets no new data, its replicas move.
    pub out: bool,
    /// What it has served since it started, as of its last heartbeat.
    pub served: OsdStats,
    /// What it served a second, between its last two heartbeats.
    pub rate: OsdStats,
}

/// What an OSD says of itself in each heartbeat.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Default, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub struct OsdUsage {
    pub capacity: u64,
    pub used: u64,
    pub objects: u64,
    pub served: OsdStats,
}

#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug, serde::Serialize)]
#[rkyv(derive(Debug))]
pub struct SessionInfo {
    pub id: SessionId,
    pub name: String,
    pub addr: String,
    pub last_seen_ms: u64,
    /// Leases the session holds.
    pub leases: u64,
    /// Requests the MDS served for it (heartbeats not counted).
    pub requests: u64,
    /// What the client did, since it started, as of its last heartbeat.
    pub io: ClientIo,
    /// A second, between its last two heartbeats.
    pub rate: SessionRate,
}

/// What a client did through its mount since it started: file system
/// operations, and the bytes its readers and writers moved.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Default, PartialEq, Eq, Debug, serde::Serialize)]
#[rkyv(derive(Debug))]
pub struct ClientIo {
    pub ops: u64,
    pub read_bytes: u64,
    pub written_bytes: u64,
}

/// A session's load, a second.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Default, PartialEq, Eq, Debug, serde::Serialize)]
#[rkyv(derive(Debug))]
pub struct SessionRate {
    pub ops: u64,
    pub read_bytes: u64,
    pub written_bytes: u64,
    pub mds_requests: u64,
}

/// One of the slowest requests the MDS served lately.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug, serde::Serialize)]
#[rkyv(derive(Debug))]
pub struct SlowOp {
    pub op: String,
    pub session: Option<SessionId>,
    pub micros: u64,
    /// How long ago it was answered.
    pub ago_ms: u64,
}

#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug, serde::Serialize)]
#[rkyv(derive(Debug))]
pub struct ShardInfo {
    pub id: u32,
    pub inodes: u64,
    pub dentries: u64,
    pub commits: u64,
    pub pending_gc: u64,
    /// Object replicas recorded as stale.
    pub degraded: u64,
    /// The shard's Raft group (mds/src/store/raft): its voting members,
    pub members: Vec<u64>,
    /// the member leading it (None while there is no leader) and its term,
    pub leader: Option<u64>,
    pub term: u64,
    /// the index of the last entry in the log, of the last applied, and
    /// of the last in the snapshot (0: none).
    pub last_log: u64,
    pub applied: u64,
    pub snapshot: u64,
    /// The member an operator asked to lead it (`mdsctl shard move`), if
    /// any: it is handed the lead whenever it answers and holds the log.
    pub wanted: Option<u64>,
}

#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug, serde::Serialize)]
#[rkyv(derive(Debug))]
pub struct Statfs {
    pub total_bytes: u64,
    pub used_bytes: u64,
    pub avail_bytes: u64,
    pub files: u64,
}

#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug, serde::Serialize)]
#[rkyv(derive(Debug))]
pub struct ClusterStatus {
    pub shards: Vec<ShardInfo>,
    pub osds: Vec<OsdInfo>,
    pub sessions: Vec<SessionInfo>,
    pub osd_epoch: u64,
    pub statfs: Statfs,
    /// Requests the MDS has served since it started (heartbeats not counted).
    pub mds_requests: u64,
    pub repair: RepairInfo,
    /// The latest sessions the MDS ended itself, oldest first.
    pub evictions: Vec<EvictionInfo>,
    /// The MDS processes every shard is replicated over (one: this one).
    pub members: Vec<MemberInfo>,
    /// The slowest requests of the last minute, slowest first.
    pub slowest: Vec<SlowOp>,
}

/// One MDS process of the shards' groups, as the leader sees it.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug, serde::Serialize)]
#[rkyv(derive(Debug))]
pub struct MemberInfo {
    pub id: u64,
    /// The address it serves at.
    pub addr: String,
    /// It leads every shard (the one answering).
    pub leader: bool,
    /// It votes (otherwise it is a learner, catching up before it does).
    pub voter: bool,
    /// It is recorded as having held the log: started again with no data,
    /// it refuses to run (it must be taken out and added again).
    pub held: bool,
    /// Per shard, the index of the last log entry it is known to hold.
    pub matched: Vec<u64>,
}

/// A session the MDS ended: by an operator, a revocation, or because it
/// held up others.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug, serde::Serialize)]
#[rkyv(derive(Debug))]
pub struct EvictionInfo {
    pub id: SessionId,
    pub name: String,
    pub why: String,
    pub at_ms: u64,
}

/// What fsck found wrong with one replica.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug, serde::Serialize)]
#[rkyv(derive(Debug))]
pub enum FsckKind {
    /// Absent on this OSD while another replica of the object exists.
    Missing,
    /// Blocks whose bytes fail their stored crc.
    Corrupt,
    /// An object of no file (and no pending delete).
    Orphan,
}

#[derive(Archive, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug, serde::Serialize)]
#[rkyv(derive(Debug))]
pub struct FsckFinding {
    pub kind: FsckKind,
    pub ino: u64,
    pub index: u32,
    pub osd: OsdId,
}

/// Progress and findings of a check (`mdsctl fsck`).
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug, Default, serde::Serialize)]
#[rkyv(derive(Debug))]
pub struct FsckReport {
    pub running: bool,
    pub repair: bool,
    /// Files to check, and checked so far.
    pub files: u64,
    pub files_done: u64,
    /// Open files are being written: left out.
    pub files_skipped: u64,
    /// Replicas whose every block was read and checked.
    pub replicas_verified: u64,
    pub missing: u64,
    pub corrupt: u64,
    pub orphans: u64,
    /// Findings fixed: replicas handed to repair, orphans deleted.
    pub fixed: u64,
    /// OSDs down, so not checked.
    pub osds_skipped: Vec<OsdId>,
    /// The first findings (all are counted above).
    pub findings: Vec<FsckFinding>,
    pub error: Option<String>,
}

impl FsckReport {
    /// Findings kept in a report (all are counted).
    pub const MAX_FINDINGS: usize = 1000;

    /// Add `part`, a check of other shards, to this report: counts added,
    /// findings kept up to [`Self::MAX_FINDINGS`], the first error kept.
    pub fn add(&mut self, part: FsckReport) {
        self.running |= part.running;
        self.files += part.files;
        self.files_done += part.files_done;
        self.files_skipped += part.files_skipped;
        self.replicas_verified += part.replicas_verified;
        self.missing += part.missing;
        self.corrupt += part.corrupt;
        self.orphans += part.orphans;
        self.fixed += part.fixed;
        for o in part.osds_skipped {
            if !self.osds_skipped.contains(&o) {
                self.osds_skipped.push(o);
            }
        }
        let room = Self::MAX_FINDINGS.saturating_sub(self.findings.len());
        self.findings.extend(part.findings.into_iter().take(room));
        if self.error.is_none() {
            self.error = part.error;
        }
    }
}

/// Background repair of degraded replicas since the MDS started.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug, serde::Serialize)]
#[rkyv(derive(Debug))]
pub struct RepairInfo {
    /// Replicas rewritten.
    pub repaired: u64,
    /// Bytes copied.
    pub bytes: u64,
    /// Replicas being rewritten now.
    pub active: u64,
    /// Replicas moved off OSDs taken out.
    pub moved: u64,
    /// Replicas on OSDs taken out still to move (counted every few seconds).
    pub to_move: u64,
}
