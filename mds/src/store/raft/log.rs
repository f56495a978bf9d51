//! A shard's Raft log and vote, in a redb database of their own beside
//! the shard's (`shard-N.log.redb`). Appends are durable before openraft
//! is told they are; the log is read back by index for replication and
//! for applying entries again after a restart.
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
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// index -> DiskEntry
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
/// "vote" -> DiskVote, "purged" and "committed" -> DiskLogId
const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_state");

type StResult<T> = Result<T, StorageError<NodeId>>;

fn read_err(e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::read_logs(&std::io::Error::other(e.to_string())).into()
}

fn write_err(e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::write_logs(&std::io::Error::other(e.to_string())).into()
}

/// Run blocking store work (a redb commit, which syncs) where it does
/// not hold up other tasks: in place on a multi-threaded runtime (tokio
/// moves this worker's other tasks away), else on a blocking thread.
/// In place saves two thread hops per log write.
pub(super) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> StResult<T> + Send + 'static) -> StResult<T> {
    match tokio::runtime::Handle::current().runtime_flavor() {
        tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => tokio::task::spawn_blocking(f).await.map_err(write_err)?,
    }
}

#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    /// Bytes of entries appended since the store was opened.
    pub appended: Arc<AtomicU64>,
}

impl LogStore {
    pub fn open(media: &dyn Media, path: &Path) -> aifs_common::Result<LogStore> {
        let db = media.database(path)?;
        let t = db.begin_write().io()?;
        t.open_table(LOG).io()?;
        t.open_table(STATE).io()?;
        t.commit().io()?;
        Ok(LogStore { db: Arc::new(db), appended: Arc::default() })
    }

    fn state<T>(db: &Database, key: &str, dec: impl FnOnce(&[u8]) -> aifs_common::Result<T>) -> StResult<Option<T>> {
        let t = db.begin_read().map_err(read_err)?;
        let table = t.open_table(STATE).map_err(read_err)?;
        let v = table.get(key).map_err(read_err)?;
        v.map(|v| dec(v.value())).transpose().map_err(read_err)
    }

    fn put_state(db: &Database, key: &str, value: &[u8], durable: bool) -> StResult<()> {
        let mut t = db.begin_write().map_err(write_err)?;
        if !durable {
            t.set_durability(Durability::None).map_err(write_err)?;
        }
        t.open_table(STATE).map_err(write_err)?.insert(key, value).map_err(write_err)?;
        t.commit().map_err(write_err)
    }

    fn log_id(key: &str, db: &Database) -> StResult<Option<LogId<NodeId>>> {
        Self::state(db, key, |b| decode::<DiskLogId>(b).map(|l| LogId::from(&l)))
    }
}

impl RaftLogReader<Cfg> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StResult<Vec<Entry<Cfg>>> {
        let db = self.db.clone();
        let (start, end) = (range.start_bound().cloned(), range.end_bound().cloned());
        blocking(move || {
            let t = db.begin_read().map_err(read_err)?;
            let log = t.open_table(LOG).map_err(read_err)?;
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
        let db = self.db.clone();
        blocking(move || {
            let purged = Self::log_id("purged", &db)?;
            let t = db.begin_read().map_err(read_err)?;
            let last = match t.open_table(LOG).map_err(read_err)?.last().map_err(read_err)? {
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
        let (db, bytes) = (self.db.clone(), encode(&DiskVote::from(vote)).map_err(write_err)?);
        blocking(move || Self::put_state(&db, "vote", &bytes, true)).await
    }

    async fn read_vote(&mut self) -> StResult<Option<Vote<NodeId>>> {
        let db = self.db.clone();
        blocking(move || Self::state(&db, "vote", |b| decode::<DiskVote>(b).map(|v| Vote::from(&v)))).await
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
        let db = self.db.clone();
        let r = blocking(move || {
            let t = db.begin_write().map_err(write_err)?;
            {
                let mut log = t.open_table(LOG).map_err(write_err)?;
                for (i, bytes) in &rows {
                    log.insert(*i, bytes.as_slice()).map_err(write_err)?;
                }
            }
            t.commit().map_err(write_err)
        })
        .await;
        callback.log_io_completed(r.clone().map_err(|e| std::io::Error::other(e.to_string())));
        r
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StResult<()> {
        let db = self.db.clone();
        blocking(move || {
            let t = db.begin_write().map_err(write_err)?;
            t.open_table(LOG).map_err(write_err)?.retain_in(log_id.index.., |_, _| false).map_err(write_err)?;
            t.commit().map_err(write_err)
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StResult<()> {
        let (db, bytes) = (self.db.clone(), encode(&DiskLogId::from(&log_id)).map_err(write_err)?);
        blocking(move || {
            let t = db.begin_write().map_err(write_err)?;
            t.open_table(STATE).map_err(write_err)?.insert("purged", bytes.as_slice()).map_err(write_err)?;
            t.open_table(LOG).map_err(write_err)?.retain_in(..=log_id.index, |_, _| false).map_err(write_err)?;
            t.commit().map_err(write_err)
        })
        .await
    }
}

