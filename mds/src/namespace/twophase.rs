//! Changes over shards led from different processes, in two phases
//! (DESIGN.md, "Metadata"; the README's design notes).
//!
//! The coordinator is the leader of the change's home shard: the shard of
//! the directory whose entry the change names first, where its
//! at-most-once record goes. Every other shard the change touches that
//! another process leads gets, in shard order among the coordinator's
//! own fences (fences.rs), a `Prepare`: its leader takes the shard's
//! fence as a local change would, logs a `PREPARED` row naming the
//! operation in the shard's group, and answers. The coordinator reads
//! what its checks need there (`Read`), and decides: its first commit, in
//! the home shard, records the intent (steps.rs), and that commit is the
//! decision. Each prepared shard then gets its steps (`Commit`, marked
//! done in the same transaction; the shard's last commit of the operation
//! drops the row and lets the fence go), or `Abort` when the checks
//! failed, the decision was refused, or the shard had nothing to change.
//!
//! A prepared shard whose coordinator falls silent (it died, or lost its
//! lead) asks the home shard's leader how the operation ended
//! (`Outcome`): an intent there means committed, and the steps come with
//! the answer; no intent means it never will be, and that leader records
//! it aborted before answering, so that a decision still on its way is
//! refused. A new leader of a shard settles the shard's prepared rows that
//! way, holding its fence until they are, and rolls forward the intents
//! of the shards it leads, sending the steps of shards led elsewhere.
use super::Namespace;
use crate::cluster::Holder;
use crate::records::{InodeRec, Intent, Step};
use crate::store::{IoResult, Txn, INTENTS, INTENT_DONE, PREPARED};
use aifs_common::perm::Cred;
use aifs_common::proto::status::ShardInfo;
use aifs_common::proto::mds::{Attr, FileKind};
use aifs_common::{Error, Result};
use futures::future::BoxFuture;
use redb::ReadableTable;
use rkyv::{Archive, Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::OwnedRwLockWriteGuard;

/// How long a shard stays prepared without word from its coordinator
/// before it asks how the operation ended.
pub const PREPARED_FOR: Duration = Duration::from_secs(5);

/// How long a prepare waits for the write leases on its directories to
/// come back before it answers `WouldBlock`, and the coordinator lets its
/// fences go and tries again (fences.rs): a client gives one back once
/// its queued changes are applied, and those may wait on a fence the
/// coordinator holds.
pub const RECALL_UNDER_FENCES: Duration = Duration::from_secs(1);

/// An operation over shards led from different processes: its home shard
/// and a number drawn at random there (unique across the home shard's
/// leaders without a commit to draw it).
#[derive(Archive, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct OpId {
    pub coord: u32,
    pub id: u64,
}

impl OpId {
    pub(crate) fn new(coord: u32) -> OpId {
        // Intent numbers drawn from the home shard's counter stay far
        // below 2^63; these never meet them.
        OpId { coord, id: rand::random::<u64>() | 1 << 63 }
    }
}

/// What a coordinator reads at a shard led elsewhere.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Debug)]
pub enum ShardRead {
    Inode(u64),
    Attr(u64),
    /// Several inodes' attributes, all in the shard (those not found left
    /// out).
    Attrs(Vec<u64>),
    /// The entry, checked as `Namespace::entry_as` checks it.
    Entry { dir: u64, name: String, cred: Option<Cred> },
    Linkable(u64),
    /// The shard's counts and group as its leader has them (`mdsctl
    /// status`, `shard ls`, `mds ls` at shard 0's leader).
    Status,
}

/// What one shard's leader is asked by another's.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Debug)]
pub enum ShardMsg {
    /// `inos`: what the operation names in the shard (its directories'
    /// write leases, granted there, are taken back first).
    Prepare { shard: u32, op: OpId, inos: Vec<u64> },
    Read { shard: u32, read: ShardRead },
    /// Commit `k` of the operation's intent; `last`: the shard's last.
    Commit { shard: u32, op: OpId, k: u32, steps: Vec<Step>, last: bool },
    Abort { shard: u32, op: OpId },
    /// Asked of the home shard's leader.
    Outcome { op: OpId },
    /// A block of the shard's inode numbers (numbers.rs), for a new
    /// directory made elsewhere to live in it.
    Numbers { shard: u32 },
}

impl ShardMsg {
    /// The shard whose leader answers.
    pub fn shard(&self) -> u32 {
        match self {
            ShardMsg::Prepare { shard, .. }
            | ShardMsg::Read { shard, .. }
            | ShardMsg::Commit { shard, .. }
            | ShardMsg::Abort { shard, .. }
            | ShardMsg::Numbers { shard } => *shard,
            ShardMsg::Outcome { op } => op.coord,
        }
    }
}

#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Debug)]
pub enum ShardReply {
    Done,
    Inode(InodeRec),
    Attr(Attr),
    Attrs(Vec<Attr>),
    Entry(u64, FileKind),
    Flag(bool),
    /// `Some`: committed, with the intent's commits after the first;
    /// `None`: aborted.
    Outcome(Option<Vec<(u32, Vec<Step>)>>),
    /// The shard's counts and group, with how far each member holds its
    /// log (`GroupState::matched`).
    Status(ShardInfo, Vec<(u64, u64)>),
    /// The first of a block of inode numbers.
    Numbers(u64),
}

/// Carries messages to the leader of the shard they name.
pub trait Peers: Send + Sync {
    fn send(&self, msg: ShardMsg) -> BoxFuture<'static, Result<ShardReply>>;
}

/// Which shards this process leads, and the way to the others.
pub struct Remote {
    led: Vec<bool>,
    pub(crate) peers: Arc<dyn Peers>,
    /// New directories go to the shards but shard 0 (`Namespace::
    /// dir_shard`): its group is over every process, wider than the
    /// others (`group_size`).
    pub(crate) spare_zero: bool,
}

impl Remote {
    pub fn new(led: Vec<bool>, peers: Arc<dyn Peers>, spare_zero: bool) -> Arc<Remote> {
        Arc::new(Remote { led, peers, spare_zero })
    }

    /// Is `shard` led by another process?
    pub fn elsewhere(&self, shard: u32) -> bool {
        !self.led.get(shard as usize).copied().unwrap_or(false)
    }

    pub(crate) async fn ask(&self, msg: ShardMsg) -> Result<ShardReply> {
        self.peers.send(msg).await
    }

    pub(crate) async fn read(&self, shard: u32, read: ShardRead) -> Result<ShardReply> {
        self.ask(ShardMsg::Read { shard, read }).await
    }
}

/// The shards a change prepared at other processes. Dropped before its
/// decision (a check failed, an error), it aborts them; after it, it lets
/// go of those that had nothing to change.
pub(crate) struct Prepared {
    pub(crate) op: OpId,
    /// Prepared and not yet finished.
    pub(crate) open: Vec<u32>,
    pub(crate) decided: bool,
    pub(crate) remote: Arc<Remote>,
}

impl Drop for Prepared {
    fn drop(&mut self) {
        for shard in std::mem::take(&mut self.open) {
            let (remote, op) = (self.remote.clone(), self.op);
            if self.decided {
                tracing::debug!(shard, ?op, "letting go of a shard the operation did not change");
            }
            tokio::spawn(async move {
                if let Err(e) = remote.ask(ShardMsg::Abort { shard, op }).await {
                    e.log("letting go of a prepared shard failed; it asks how the operation ended");
                }
            });
        }
    }
}

/// What this process holds for an operation coordinated elsewhere: the
/// shard's fence, and read leases on the directories it names there.
struct Hold {
    _fence: OwnedRwLockWriteGuard<()>,
    _leases: Holder,
}

/// The holds of operations coordinated elsewhere, by (shard, operation).
#[derive(Default)]
pub(crate) struct Holding(Mutex<HashMap<(u32, OpId), Hold>>);

impl Holding {
    fn put(&self, shard: u32, op: OpId, hold: Hold) {
        if let Ok(mut m) = self.0.lock() {
            m.insert((shard, op), hold);
        }
    }

    fn has(&self, shard: u32, op: OpId) -> bool {
        self.0.lock().map(|m| m.contains_key(&(shard, op))).unwrap_or(false)
    }

    fn drop_one(&self, shard: u32, op: OpId) {
        let g = self.0.lock().ok().and_then(|mut m| m.remove(&(shard, op)));
        drop(g);
    }
}

/// Apply commit `k` of `op` in this shard's transaction, unless it was
/// (its mark is there) or the shard is no longer prepared for `op` (every
/// commit of it made, or aborted). The shard's last commit drops the row.
fn commit_here(txn: &Txn, op: OpId, k: u32, steps: &[Step], last: bool, open: &dyn Fn(u64) -> bool) -> Result<()> {
    let rows = txn.open_table(PREPARED).io()?;
    if rows.get((op.coord, op.id)).io()?.is_none() {
        return Ok(());
    }
    let mut marks = txn.open_table(INTENT_DONE).io()?;
    if marks.get((op.coord, op.id, k)).io()?.is_none() {
        marks.insert((op.coord, op.id, k), ()).io()?;
        let now = aifs_common::time::now_ns();
        for s in steps.iter().cloned() {
            super::apply_step(txn, s, now, open)?;
        }
    }
    drop((rows, marks));
    match last {
        true => forget_here(txn, op),
        false => Ok(()),
    }
}

/// What `steps` change, as the clients caching it are told: the entries
/// and the inodes.
fn touched(steps: &[Step]) -> Vec<(aifs_common::InodeId, Vec<String>)> {
    use aifs_common::InodeId;
    let each = |s: &Step| match s {
        Step::InsertEntry { dir, name, .. } | Step::RemoveEntry { dir, name, .. } => (InodeId(*dir), vec![name.clone()]),
        Step::CreateInode { ino, .. } | Step::SetParent { ino, .. } | Step::AddLink { ino } | Step::DropLink { ino } | Step::DeleteDir { ino } => (InodeId(*ino), vec![]),
    };
    steps.iter().map(each).collect()
}

/// This shard is prepared for `op` no more: its row goes. Its marks stay
/// while the coordinator may still hold the intent: should the two
/// shards come to be led by one process before the intent is dropped,
/// that process rolls the intent forward here as a local commit, which
/// only the marks keep from applying the steps again (a rename's new
/// name, linked twice). They go at a start of the process that leads the
/// coordinator's shard and this one (`Namespace::roll_forward`).
fn forget_here(txn: &Txn, op: OpId) -> Result<()> {
    txn.open_table(PREPARED).io()?.remove((op.coord, op.id)).io().map(|_| ())
}

impl Namespace {
    /// Is `shard` led by another process?
    pub(crate) fn elsewhere(&self, shard: u32) -> Option<&Arc<Remote>> {
        self.remote.as_ref().filter(|r| r.elsewhere(shard))
    }

    /// Answer another shard's leader.
    pub async fn serve_shard(&self, msg: ShardMsg) -> Result<ShardReply> {
        if self.elsewhere(msg.shard()).is_some() {
            return Err(Error::NotLeader(String::new()));
        }
        match msg {
            ShardMsg::Prepare { shard, op, inos } => self.prepare(shard, op, &inos).await.map(|_| ShardReply::Done),
            ShardMsg::Read { shard, read } => self.read_here(shard, read).await,
            ShardMsg::Commit { shard, op, k, steps, last } => {
                let cluster = self.cluster.clone();
                let changed = touched(&steps);
                self.shard(shard)
                    .mutate(move |txn| commit_here(txn, op, k, &steps, last, &|ino| cluster.is_open(aifs_common::InodeId(ino))))
                    .await?;
                if last {
                    self.holding.drop_one(shard, op);
                }
                // Before the answer: the coordinator answers its client
                // after this, and a mount caching what changed here must
                // have let it go by then (the coordinator tells those
                // that hold leases at its own process).
                self.cluster.invalidate(None, changed).await;
                Ok(ShardReply::Done)
            }
            ShardMsg::Abort { shard, op } => {
                self.shard(shard).mutate(move |txn| forget_here(txn, op)).await?;
                self.holding.drop_one(shard, op);
                Ok(ShardReply::Done)
            }
            ShardMsg::Outcome { op } => self.outcome(op).await.map(ShardReply::Outcome),
            ShardMsg::Numbers { shard } => crate::numbers::block(self.shard(shard)).await.map(ShardReply::Numbers),
        }
    }

    /// A number of shard `shard` never given before, for a new inode
    /// there: from this process's block of the shard's numbers, refilled
    /// at the shard's leader when it runs out.
    pub(crate) async fn number_in(&self, shard: u32) -> Result<aifs_common::InodeId> {
        let Some(r) = self.elsewhere(shard) else { return self.numbers.take(self.shard(shard)).await };
        let refill = async move {
            match r.ask(ShardMsg::Numbers { shard }).await? {
                ShardReply::Numbers(start) => Ok(start),
                other => Err(Error::Protocol(format!("inode numbers answered with {other:?}"))),
            }
        };
        self.numbers.take_with(shard, refill).await
    }

    /// Take `shard`'s fence for `op` and log that it is held; a watcher
    /// asks how `op` ended should no word come.
    ///
    /// First the write leases granted here on the directories `op` names
    /// (`inos`) are taken back, as a change made here takes them back
    /// before its checks: a client that holds one answers creates there
    /// itself, and could make a name the operation's checks, read while
    /// the create waits to be applied, found free. Read leases held for
    /// `op` until it ends keep them from being granted again meanwhile.
    /// They are taken before the fence: a client gives its write lease
    /// back only once its changes there are applied, which the fence
    /// would hold up. Its changes elsewhere may wait on the coordinator's
    /// fences, so the wait is cut at [`RECALL_UNDER_FENCES`]: the
    /// coordinator then lets them go and prepares again.
    async fn prepare(&self, shard: u32, op: OpId, inos: &[u64]) -> Result<()> {
        if self.holding.has(shard, op) {
            return Ok(());
        }
        let leases = self.cluster.own_holder(false);
        let mut dirs = Vec::new();
        for ino in inos.iter().filter(|i| super::shard_of(**i) == shard) {
            if self.inode(*ino).await.is_ok_and(|r| r.kind == FileKind::Dir) {
                dirs.push(aifs_common::InodeId(*ino));
            }
        }
        let recalled = tokio::time::timeout(RECALL_UNDER_FENCES, self.cluster.acquire_read_all(&leases, &dirs)).await;
        recalled.map_err(|_| Error::WouldBlock(format!("write leases on directories of shard {shard} are still being given back")))??;
        let fence = self.fences.owned(shard).await;
        let secs = aifs_common::time::now_ns() as u64 / 1_000_000_000;
        self.shard(shard).mutate(move |txn| txn.open_table(PREPARED).io()?.insert((op.coord, op.id), secs).io().map(|_| ())).await?;
        self.holding.put(shard, op, Hold { _fence: fence, _leases: leases });
        Ok(())
    }

    /// Answer `read` of shard `shard`, led here.
    async fn read_here(&self, shard: u32, read: ShardRead) -> Result<ShardReply> {
        Ok(match read {
            ShardRead::Inode(ino) => ShardReply::Inode(self.inode(ino).await?),
            ShardRead::Attr(ino) => ShardReply::Attr(self.getattr(aifs_common::InodeId(ino)).await?),
            // (read in the shard checked to be led here: an inode of another
            // shard is not found there, and left out)
            ShardRead::Attrs(inos) => ShardReply::Attrs(self.attrs_here(shard, inos).await?),
            ShardRead::Entry { dir, name, cred } => {
                let (ino, kind) = self.entry_as(dir, &name, cred.as_ref()).await?;
                ShardReply::Entry(ino, kind)
            }
            ShardRead::Linkable(ino) => ShardReply::Flag(self.linkable(ino).await?),
            ShardRead::Status => {
                let (info, matched) = self.shard_status(shard).await?;
                ShardReply::Status(info, matched)
            }
        })
    }

    /// How `op`, coordinated from a shard led here, ended: its later
    /// commits if it was decided; if not, it is recorded aborted (an
    /// empty intent), so that it never will be.
    async fn outcome(&self, op: OpId) -> Result<Option<Vec<(u32, Vec<Step>)>>> {
        let bytes = self
            .shard(op.coord)
            .mutate(move |txn| {
                let mut t = txn.open_table(INTENTS).io()?;
                if let Some(v) = t.get(op.id).io()? {
                    return Ok(v.value().to_vec());
                }
                t.insert(op.id, [].as_slice()).io()?;
                Ok(Vec::new())
            })
            .await?;
        match bytes.is_empty() {
            true => Ok(None),
            false => Intent::decode(&bytes).map(|i| Some(i.rest)),
        }
    }

    /// Settle what `shard` was prepared for and no longer hears of: ask
    /// each operation's home shard how it ended, apply or drop it. Rows
    /// whose fence this process still holds for a live prepare are left,
    /// unless `stale` (they were prepared `PREPARED_FOR` ago).
    pub(crate) async fn settle(&self, shard: u32, only: Option<OpId>) -> Result<usize> {
        let rows: Vec<OpId> = self
            .shard(shard)
            .read(|t| {
                let mut v = Vec::new();
                for r in t.open_table(PREPARED).io()?.iter().io()? {
                    let (k, _) = r.io()?;
                    let (coord, id) = k.value();
                    v.push(OpId { coord, id });
                }
                Ok(v)
            })
            .await?;
        let mut settled = 0;
        for op in rows.into_iter().filter(|o| only.is_none_or(|x| x == *o)) {
            // (a home shard led here answers at once: a prepare that names
            // it and was never followed up is aborted)
            let outcome = match self.elsewhere(op.coord) {
                Some(remote) => match remote.ask(ShardMsg::Outcome { op }).await? {
                    ShardReply::Outcome(o) => o,
                    other => return Err(Error::Protocol(format!("outcome answered with {other:?}"))),
                },
                None => self.outcome(op).await?,
            };
            tracing::warn!(shard, ?op, committed = outcome.is_some(), "settled an operation whose coordinator fell silent");
            // This shard's commits, each with its place in the intent.
            let mine: Vec<(u32, Vec<Step>)> = match outcome {
                Some(rest) => rest.into_iter().enumerate().filter(|(_, (s, _))| *s == shard).map(|(k, (_, st))| (k as u32, st)).collect(),
                None => Vec::new(),
            };
            let changed: Vec<_> = mine.iter().flat_map(|(_, steps)| touched(steps)).collect();
            let cluster = self.cluster.clone();
            self.shard(shard)
                .mutate(move |txn| {
                    let open = |ino| cluster.is_open(aifs_common::InodeId(ino));
                    for (i, (k, steps)) in mine.iter().enumerate() {
                        commit_here(txn, op, *k, steps, i + 1 == mine.len(), &open)?;
                    }
                    forget_here(txn, op)
                })
                .await?;
            self.holding.drop_one(shard, op);
            // As for a commit sent here: the clients caching what changed
            // let it go.
            self.cluster.invalidate(None, changed).await;
            settled += 1;
        }
        Ok(settled)
    }

    /// At a lead's start, before it serves: settle every prepared row of
    /// the shards led here, each shard's fence taken now and held until
    /// it is (in the background: the home shard's leader may not be
    /// reachable yet).
    pub(crate) async fn settle_all(self: &Arc<Self>) {
        for shard in self.led_shards() {
            let fence = self.fences.owned(shard).await;
            let ns = Arc::downgrade(self);
            tokio::spawn(async move {
                let _fence = fence;
                loop {
                    let Some(ns) = ns.upgrade() else { return };
                    match ns.settle(shard, None).await {
                        Ok(_) => return,
                        Err(e) => e.log("settling prepared operations failed; trying again"),
                    }
                    drop(ns);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            });
        }
    }

    /// Watch one prepare: should its fence still be held `PREPARED_FOR`
    /// later, ask how the operation ended.
    fn watch(self: &Arc<Self>, shard: u32, op: OpId) {
        let ns = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(PREPARED_FOR).await;
                let Some(ns) = ns.upgrade() else { return };
                if !ns.holding.has(shard, op) {
                    return;
                }
                match ns.settle(shard, Some(op)).await {
                    Ok(_) => return,
                    Err(e) => e.log("asking how an operation ended failed; asking again"),
                }
            }
        });
    }

    /// [`Namespace::serve_shard`], with a watch on each prepare.
    pub async fn answer_shard(self: &Arc<Self>, msg: ShardMsg) -> Result<ShardReply> {
        let watch = match &msg {
            ShardMsg::Prepare { shard, op, .. } => Some((*shard, *op)),
            _ => None,
        };
        let r = self.serve_shard(msg).await?;
        if let Some((shard, op)) = watch {
            self.watch(shard, op);
        }
        Ok(r)
    }
}

/// Decode a read's answer, for the accessors in mod.rs.
pub(crate) fn expect_inode(r: ShardReply) -> Result<InodeRec> {
    match r {
        ShardReply::Inode(i) => Ok(i),
        other => Err(Error::Protocol(format!("inode read answered with {other:?}"))),
    }
}

pub(crate) fn expect_attr(r: ShardReply) -> Result<Attr> {
    match r {
        ShardReply::Attr(a) => Ok(a),
        other => Err(Error::Protocol(format!("attribute read answered with {other:?}"))),
    }
}

pub(crate) fn expect_attrs(r: ShardReply) -> Result<Vec<Attr>> {
    match r {
        ShardReply::Attrs(a) => Ok(a),
        other => Err(Error::Protocol(format!("attributes read answered with {other:?}"))),
    }
}

pub(crate) fn expect_flag(r: ShardReply) -> Result<bool> {
    match r {
        ShardReply::Flag(f) => Ok(f),
        other => Err(Error::Protocol(format!("flag read answered with {other:?}"))),
    }
}

pub(crate) fn expect_entry(r: ShardReply) -> Result<(u64, FileKind)> {
    match r {
        ShardReply::Entry(ino, kind) => Ok((ino, kind)),
        other => Err(Error::Protocol(format!("entry read answered with {other:?}"))),
    }
}

