//! The shards' Raft logs and votes, in one redb database for the whole
//! process (`raft-log.redb`), a table pair per shard. Appends are durable
//! before openraft is told they are; the log is read back by index for
//! replication and for applying entries again after a restart.
//!
//! Writes are group-committed ([`Logs`]): each group's writes wait in one
//! queue, and one commit (one sync) takes every write queued while the
//! one before it ran. With a database per shard, every append was a
//! commit and a sync of its own, whatever the others were doing: under
//! load the appends were a quarter of an MDS process's CPU, three fifths
//! of that redb's commit work and the rest the syncs.
//!
//! The committed index is not stored (openraft's default): after a restart
//! the entries past the state machine's last synced commit are applied
//! once this member, as leader, commits again, which `raft::start` waits
//! for.
use super::codec::{decode, encode, DiskEntry, DiskLogId, DiskVote};
use super::{Cfg, NodeId};
use crate::store::media::Media;
use crate::store::IoResult;
use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, StorageError, StorageIOError, Vote};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// The database's file in the data directory.
pub const FILE: &str = "raft-log.redb";

/// Shard `shard`'s log: index -> DiskEntry.
fn log_table(name: &str) -> TableDefinition<'_, u64, &'static [u8]> {
    TableDefinition::new(name)
}

/// Shard `shard`'s state: "vote" -> DiskVote, "purged" -> DiskLogId.
fn state_table(name: &str) -> TableDefinition<'_, &'static str, &'static [u8]> {
    TableDefinition::new(name)
}

/// The names of a shard's two tables.
#[derive(Clone)]
struct Names {
    log: Arc<str>,
    state: Arc<str>,
}

impl Names {
    fn of(shard: u32) -> Names {
        Names { log: format!("raft_log_{shard}").into(), state: format!("raft_state_{shard}").into() }
    }
}

/// A shard's log as it was kept before the shards shared one database:
/// `shard-N.log.redb`, with these two tables.
const LEGACY_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const LEGACY_STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_state");

type StResult<T> = Result<T, StorageError<NodeId>>;

fn read_err(e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::read_logs(&std::io::Error::other(e.to_string())).into()
}

fn write_err(e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::write_logs(&std::io::Error::other(e.to_string())).into()
}

/// Run blocking store work (a redb read) where it does not hold up other
/// tasks: in place on a multi-threaded runtime (tokio moves this worker's
/// other tasks away), else on a blocking thread. In place saves two
/// thread hops.
pub(super) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> StResult<T> + Send + 'static) -> StResult<T> {
    match tokio::runtime::Handle::current().runtime_flavor() {
        tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => tokio::task::spawn_blocking(f).await.map_err(write_err)?,
    }
}

/// One write of one shard's log or vote.
enum Op {
    Append(Vec<(u64, Vec<u8>)>),
    /// Drop the entries from this index on.
    Truncate(u64),
    /// Drop the entries up to this index, recording the log id purged.
    Purge(u64, Vec<u8>),
    Vote(Vec<u8>),
    /// Drop the shard's log and vote: this process left its group.
    Forget,
    /// A write whose commit panics, as a bug in the store would.
    #[cfg(test)]
    Panic,
}

struct Write {
    names: Names,
    op: Op,
    done: tokio::sync::oneshot::Sender<Result<(), String>>,
}

impl Write {
    fn run(&self, t: &WriteTransaction) -> Result<(), redb::Error> {
        let (log, state) = (log_table(&self.names.log), state_table(&self.names.state));
        match &self.op {
            Op::Append(rows) => {
                let mut log = t.open_table(log)?;
                for (i, bytes) in rows {
                    log.insert(*i, bytes.as_slice())?;
                }
            }
            Op::Truncate(from) => t.open_table(log)?.retain_in(*from.., |_, _| false)?,
            Op::Purge(upto, purged) => {
                t.open_table(state)?.insert("purged", purged.as_slice())?;
                t.open_table(log)?.retain_in(..=*upto, |_, _| false)?;
            }
            Op::Vote(vote) => {
                t.open_table(state)?.insert("vote", vote.as_slice())?;
            }
            Op::Forget => {
                t.delete_table(log)?;
                t.delete_table(state)?;
            }
            #[cfg(test)]
            Op::Panic => panic!("a write that panics"),
        }
        Ok(())
    }
}

/// The writes waiting for a commit, and whether one is running.
#[derive(Default)]
struct Queue {
    writes: Vec<Write>,
    committing: bool,
}

/// The process's log database and its group commit.
pub struct Logs {
    db: Database,
    queue: Mutex<Queue>,
}

impl Logs {
    /// Open (or make) the log database in `dir`.
    pub fn open(media: &dyn Media, dir: &Path) -> aifs_common::Result<Arc<Logs>> {
        let db = media.database(&dir.join(FILE))?;
        Ok(Arc::new(Logs { db, queue: Mutex::default() }))
    }

    /// Shard `shard`'s log, its tables made if new, and its log from a
    /// database of its own (`shard-N.log.redb`, as kept before) moved in.
    pub fn store(self: &Arc<Self>, dir: &Path, shard: u32) -> aifs_common::Result<LogStore> {
        let names = Names::of(shard);
        let t = self.db.begin_write().io()?;
        let (log, state) = (t.open_table(log_table(&names.log)).io()?, t.open_table(state_table(&names.state)).io()?);
        let fresh = log.is_empty().io()? && state.is_empty().io()?;
        drop((log, state));
        let legacy = dir.join(format!("shard-{shard}.log.redb"));
        let adopt = legacy.exists();
        if adopt && fresh {
            Self::copy_legacy(&legacy, &t, &names).io()?;
        }
        t.commit().io()?;
        if adopt {
            // Copied by the commit above, or by one before a crash that
            // left the file (the tables were not fresh then).
            std::fs::remove_file(&legacy)?;
            crate::store::sync_dir(dir)?;
        }
        Ok(LogStore { logs: self.clone(), names, appended: Arc::default() })
    }

    /// Drop shard `shard`'s log and vote, once its group has stopped
    /// here: this process was taken out of it.
    pub async fn forget(self: &Arc<Self>, shard: u32) -> aifs_common::Result<()> {
        self.write(&Names::of(shard), Op::Forget).await.map_err(|e| aifs_common::Error::Io(format!("dropping shard {shard}'s log: {e}")))
    }

    fn copy_legacy(path: &Path, t: &WriteTransaction, names: &Names) -> Result<(), redb::Error> {
        let old = Database::open(path)?;
        let r = old.begin_read()?;
        copy_rows(&r, LEGACY_LOG, t, log_table(&names.log))?;
        copy_rows(&r, LEGACY_STATE, t, state_table(&names.state))
    }

    /// Queue `op` for the next commit and wait until it is durable. The
    /// first write to find no commit running starts one on a blocking
    /// thread, which commits batch after batch until the queue is empty.
    async fn write(self: &Arc<Self>, names: &Names, op: Op) -> StResult<()> {
        let (done, answer) = tokio::sync::oneshot::channel();
        let start = {
            let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            q.writes.push(Write { names: names.clone(), op, done });
            !std::mem::replace(&mut q.committing, true)
        };
        if start {
            let logs = self.clone();
            tokio::task::spawn_blocking(move || logs.drain());
        }
        answer.await.map_err(|_| write_err("the log's writer stopped"))?.map_err(write_err)
    }

    fn drain(&self) {
        loop {
            let batch = {
                let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
                if q.writes.is_empty() {
                    q.committing = false;
                    return;
                }
                std::mem::take(&mut q.writes)
            };
            match self.commit(&batch) {
                Ok(()) => batch.into_iter().for_each(|w| _ = w.done.send(Ok(()))),
                // One write's failure is no other group's: each alone.
                Err(_) if batch.len() > 1 => {
                    for w in batch {
                        let r = self.commit(std::slice::from_ref(&w));
                        _ = w.done.send(r);
                    }
                }
                Err(e) => batch.into_iter().for_each(|w| _ = w.done.send(Err(e.clone()))),
            }
        }
    }

    /// Commit `batch`: a panic in it is that batch's error, so that the
    /// writes waiting on it hear of it and the queue is drained on. Were
    /// the drain to end with it, the queue would stay marked as being
    /// drained, and every later write of every group here would wait
    /// for good.
    fn commit(&self, batch: &[Write]) -> Result<(), String> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.commit_once(batch))).unwrap_or_else(|p| {
            let what = p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned()).unwrap_or_default();
            Err(format!("the log's commit panicked: {what}"))
        })
    }

    fn commit_once(&self, batch: &[Write]) -> Result<(), String> {
        let t = self.db.begin_write().map_err(|e| e.to_string())?;
        for w in batch {
            w.run(&t).map_err(|e| e.to_string())?;
        }
        t.commit().map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A commit that panics fails its writes, and the queue goes on:
    /// the next write is committed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_that_panics_fails_its_writes_and_the_next_is_committed() {
        let dir = tempfile::tempdir().unwrap();
        let logs = Logs::open(&crate::store::media::Disk, dir.path()).unwrap();
        let names = Names::of(0);
        let failed = logs.write(&names, Op::Panic).await;
        assert!(failed.is_err(), "{failed:?}");
        let next = tokio::time::timeout(std::time::Duration::from_secs(5), logs.write(&names, Op::Vote(vec![1, 2, 3]))).await;
        assert!(matches!(next, Ok(Ok(()))), "the write after a panic: {next:?}");
    }
}

/// Every row of table `from` in `r` into table `to` in `t`; none if `from`
/// does not exist.
fn copy_rows<K: redb::Key + 'static, V: redb::Value + 'static>(
    r: &redb::ReadTransaction,
    from: TableDefinition<K, V>,
    t: &WriteTransaction,
    to: TableDefinition<K, V>,
) -> Result<(), redb::Error> {
    let from = match r.open_table(from) {
        Ok(from) => from,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let mut to = t.open_table(to)?;
    for row in from.iter()? {
        let (k, v) = row?;
        to.insert(k.value(), v.value())?;
    }
    Ok(())
}

/// Move shard `shard`'s log from the log database in `from` to the one
/// in `to`, as tests that move a shard's store between directories
/// need; neither may be open.
#[cfg(test)]
pub fn move_log(from: &Path, to: &Path, shard: u32) -> Result<(), redb::Error> {
    let names = Names::of(shard);
    let (src, dst) = (Database::create(from.join(FILE))?, Database::create(to.join(FILE))?);
    let (r, t) = (src.begin_read()?, dst.begin_write()?);
    t.delete_table(log_table(&names.log))?;
    t.delete_table(state_table(&names.state))?;
    copy_rows(&r, log_table(&names.log), &t, log_table(&names.log))?;
    copy_rows(&r, state_table(&names.state), &t, state_table(&names.state))?;
    t.commit()?;
    drop(r);
    let t = src.begin_write()?;
    t.delete_table(log_table(&names.log))?;
    t.delete_table(state_table(&names.state))?;
    t.commit()?;
    Ok(())
}

/// Keep shard `shard`'s log in `dir` as it was kept before the shards
/// shared a database (`shard-N.log.redb`), and remove the shared one.
#[cfg(test)]
pub fn to_legacy(dir: &Path, shard: u32) -> Result<(), redb::Error> {
    let names = Names::of(shard);
    {
        let (src, dst) = (Database::create(dir.join(FILE))?, Database::create(dir.join(format!("shard-{shard}.log.redb")))?);
        let (r, t) = (src.begin_read()?, dst.begin_write()?);
        copy_rows(&r, log_table(&names.log), &t, LEGACY_LOG)?;
        copy_rows(&r, state_table(&names.state), &t, LEGACY_STATE)?;
        t.commit()?;
    }
    std::fs::remove_file(dir.join(FILE))?;
    Ok(())
}

/// One shard's log in the process's [`Logs`].
#[derive(Clone)]
pub struct LogStore {
    logs: Arc<Logs>,
    names: Names,
    /// Bytes of entries appended since the store was opened.
    pub appended: Arc<AtomicU64>,
}

impl LogStore {
    fn state<T>(&self, key: &str, dec: impl FnOnce(&[u8]) -> aifs_common::Result<T>) -> StResult<Option<T>> {
        let t = self.logs.db.begin_read().map_err(read_err)?;
        let table = t.open_table(state_table(&self.names.state)).map_err(read_err)?;
        let v = table.get(key).map_err(read_err)?;
        v.map(|v| dec(v.value())).transpose().map_err(read_err)
    }

    fn log_id(&self, key: &str) -> StResult<Option<LogId<NodeId>>> {
        self.state(key, |b| decode::<DiskLogId>(b).map(|l| LogId::from(&l)))
    }
}

impl RaftLogReader<Cfg> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StResult<Vec<Entry<Cfg>>> {
        let me = self.clone();
        let (start, end) = (range.start_bound().cloned(), range.end_bound().cloned());
        blocking(move || {
            let t = me.logs.db.begin_read().map_err(read_err)?;
            let log = t.open_table(log_table(&me.names.log)).map_err(read_err)?;
            let mut out = Vec::new();
            for row in log.range::<u64>((start, end)).map_err(read_err)? {
                let (_, v) = row.map_err(read_err)?;
                out.push(decode::<DiskEntry>(v.value()).and_then(Entry::try_from).map_err(read_err)?);
            }
            Ok(out)
        })
        .await
    }
}

impl RaftLogStorage<Cfg> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StResult<LogState<Cfg>> {
        let me = self.clone();
        blocking(move || {
            let purged = me.log_id("purged")?;
            let t = me.logs.db.begin_read().map_err(read_err)?;
            let last = match t.open_table(log_table(&me.names.log)).map_err(read_err)?.last().map_err(read_err)? {
                Some((_, v)) => Some(LogId::from(&decode::<DiskEntry>(v.value()).map_err(read_err)?.log_id)),
                None => purged,
            };
            Ok(LogState { last_purged_log_id: purged, last_log_id: last })
        })
        .await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StResult<()> {
        let bytes = encode(&DiskVote::from(vote)).map_err(write_err)?;
        self.logs.write(&self.names, Op::Vote(bytes)).await
    }

    async fn read_vote(&mut self) -> StResult<Option<Vote<NodeId>>> {
        let me = self.clone();
        blocking(move || me.state("vote", |b| decode::<DiskVote>(b).map(|v| Vote::from(&v)))).await
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<Cfg>) -> StResult<()>
    where
        I: IntoIterator<Item = Entry<Cfg>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut rows = Vec::new();
        for e in entries {
            rows.push((e.log_id.index, encode(&DiskEntry::from(&e)).map_err(write_err)?));
        }
        self.appended.fetch_add(rows.iter().map(|(_, b)| b.len() as u64).sum(), Ordering::Relaxed);
        let r = self.logs.write(&self.names, Op::Append(rows)).await;
        callback.log_io_completed(r.clone().map_err(|e| std::io::Error::other(e.to_string())));
        r
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StResult<()> {
        self.logs.write(&self.names, Op::Truncate(log_id.index)).await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StResult<()> {
        let bytes = encode(&DiskLogId::from(&log_id)).map_err(write_err)?;
        self.logs.write(&self.names, Op::Purge(log_id.index, bytes)).await
    }
}
