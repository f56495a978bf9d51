//! A shard's persistent store: one redb database per shard, and a writer
//! thread that group-commits (DESIGN.md, "Metadata"). Mutations queue up as
//! closures; the writer runs every queued closure in one write transaction,
//! commits once (one fsync for the batch) and only then answers each.
//!
//! A mutation closure must do all its checks before its first write: if it
//! returns an error, whatever it wrote still commits with the batch.
use crate::records::{GcJob, InodeRec};
use aifs_common::{Error, Result};
use redb::{ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub const INODES: TableDefinition<u64, &[u8]> = TableDefinition::new("inodes");
/// (dir, name) -> (ino, kind, cookie)
pub const DENTRIES: TableDefinition<(u64, &str), (u64, u8, u64)> = TableDefinition::new("dentries");
/// (dir, cookie) -> name: readdir order, stable under inserts and removes.
pub const COOKIES: TableDefinition<(u64, u64), &str> = TableDefinition::new("cookies");
pub const XATTRS: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("xattrs");
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub const GC: TableDefinition<u64, &[u8]> = TableDefinition::new("gc");
pub const OSDS: TableDefinition<u32, &[u8]> = TableDefinition::new("osds");
/// Secrets of the cluster (shard 0): "cap_master", from which the keys
/// that authenticate capabilities come (mds/src/caps.rs).
pub const SECRETS: TableDefinition<&str, &[u8]> = TableDefinition::new("secrets");
/// Revoked certificates (shard 0): owner (32 bytes) -> when (unix ms, 8
/// bytes LE) and the name it was issued as (mds/src/revoked.rs).
pub const REVOKED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("revoked");
/// Files with no name left that some client still had open: freed at the
/// last close (or at start, when no client has anything open).
pub const ORPHANS: TableDefinition<u64, ()> = TableDefinition::new("orphans");
/// Object replicas that missed writes: (file inode, object index, OSD).
/// Such a replica is stale; nobody reads it until repair rewrites it.
pub const DEGRADED: TableDefinition<(u64, u32, u32), ()> = TableDefinition::new("degraded");
/// Requests that must not be applied twice, as answered: (client, request
/// number) -> (outcome, outcome, unix seconds when recorded). Written in
/// the request's own transaction (mds/src/once.rs).
pub const REQUESTS: TableDefinition<(u64, u64), (u64, u64, u64)> = TableDefinition::new("requests");
/// Client sessions (shard 0) -> their owner (the hash of the certificate
/// that opened them, 32 bytes) and the client's name. After a restart
/// the MDS waits for these to come back, each under its own certificate,
/// before answering anything that could contradict what they cached.
pub const SESSIONS: TableDefinition<u128, &[u8]> = TableDefinition::new("client_sessions");
/// Changes over several shards whose later commits may not have happened
/// yet, kept in the shard of the first commit: rolled forward at start.
pub const INTENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("intents");
/// Which later commits of an intent were made in this shard: (the
/// intent's shard, its id, the commit's number).
pub const INTENT_DONE: TableDefinition<(u32, u64, u32), ()> = TableDefinition::new("intent_done");

/// Most mutations folded into one commit.
const MAX_BATCH: usize = 512;

pub trait IoResult<T> {
    fn io(self) -> Result<T>;
}
impl<T, E: std::fmt::Display> IoResult<T> for std::result::Result<T, E> {
    fn io(self) -> Result<T> {
        self.map_err(|e| Error::Io(format!("metadata store: {e}")))
    }
}

type Deliver = Box<dyn FnOnce(Result<()>) + Send>;
type Job = Box<dyn FnOnce(&WriteTransaction) -> Deliver + Send>;

#[derive(Default)]
pub struct StoreStats {
    pub commits: AtomicU64,
    pub mutations: AtomicU64,
}

pub struct ShardStore {
    pub id: u32,
    db: Arc<redb::Database>,
    tx: std::sync::mpsc::Sender<Job>,
    pub stats: Arc<StoreStats>,
}

/// Make `dir`'s entries (files made or renamed in it) durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// Write `path` whole or not at all, and durably: a temporary file beside
/// it, synced, renamed over it, and the directory synced.
pub fn write_durably(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().ok_or_else(|| Error::InvalidArgument(format!("{} has no directory", path.display())))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    sync_dir(dir)
}

impl ShardStore {
    pub fn open(dir: &Path, id: u32) -> Result<ShardStore> {
        std::fs::create_dir_all(dir)?;
        let db = Arc::new(redb::Database::create(dir.join(format!("shard-{id}.redb"))).io()?);
        {
            let t = db.begin_write().io()?;
            for def in [INODES, GC] {
                t.open_table(def).io()?;
            }
            t.open_table(DENTRIES).io()?;
            t.open_table(COOKIES).io()?;
            t.open_table(XATTRS).io()?;
            t.open_table(META).io()?;
            t.open_table(OSDS).io()?;
            t.open_table(ORPHANS).io()?;
            t.open_table(DEGRADED).io()?;
            t.open_table(REQUESTS).io()?;
            t.open_table(SESSIONS).io()?;
            t.open_table(INTENTS).io()?;
            t.open_table(INTENT_DONE).io()?;
            t.commit().io()?;
        }
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let stats = Arc::new(StoreStats::default());
        let wdb = db.clone();
        let wstats = stats.clone();
        std::thread::Builder::new().name(format!("shard-{id}-commit")).spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(j) => batch.push(j),
                        Err(_) => break,
                    }
                }
                let txn = match wdb.begin_write() {
                    Ok(t) => t,
                    Err(e) => {
                        let err = Error::Io(format!("metadata store: {e}"));
                        tracing::error!(shard = id, error = %err, "cannot begin transaction");
                        // The jobs never ran: answer each with the error.
                        drop(batch);
                        continue;
                    }
                };
                let n = batch.len() as u64;
                let mut delivers: Vec<Deliver> = Vec::with_capacity(batch.len());
                let mut panicked = false;
                for j in batch {
                    // A bug in one mutation must not take the shard down
                    // with it, nor commit half of what it did.
                    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| j(&txn))) {
                        Ok(d) => delivers.push(d),
                        Err(_) => panicked = true,
                    }
                }
                if panicked {
                    tracing::error!(shard = id, "a metadata mutation panicked; its batch is rolled back");
                    let _ = txn.abort();
                    for d in delivers {
                        d(Err(Error::Io("metadata transaction aborted".into())));
                    }
                    continue;
                }
                let res = txn.commit().io();
                if let Err(e) = &res {
                    tracing::error!(shard = id, error = %e, "commit failed");
                }
                wstats.commits.fetch_add(1, Ordering::Relaxed);
                wstats.mutations.fetch_add(n, Ordering::Relaxed);
                for d in delivers {
                    d(res.clone());
                }
            }
        })?;
        Ok(ShardStore { id, db, tx, stats })
    }

    /// Run `f` in the next group commit; answer once it is durable.
    pub async fn mutate<T: Send + 'static>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (otx, orx) = tokio::sync::oneshot::channel::<Result<T>>();
        let job: Job = Box::new(move |txn| {
            let r = f(txn);
            Box::new(move |commit: Result<()>| {
                let _ = otx.send(commit.and(r));
            })
        });
        self.tx.send(job).map_err(|_| Error::Io("shard writer stopped".into()))?;
        // A job dropped unrun (transaction could not begin) closes the channel.
        orx.await.map_err(|_| Error::Io("metadata transaction could not start".into()))?
    }

    /// Read committed state on a blocking thread.
    pub async fn read<T: Send + 'static>(&self, f: impl FnOnce(&ReadTransaction) -> Result<T> + Send + 'static) -> Result<T> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let t = db.begin_read().io()?;
            f(&t)
        })
        .await
        .map_err(|e| Error::Io(format!("read task: {e}")))?
    }
}

// Table helpers shared by reads and writes.

pub fn get_inode<T: ReadableTable<u64, &'static [u8]>>(t: &T, ino: u64) -> Result<InodeRec> {
    match t.get(ino).io()? {
        Some(v) => InodeRec::decode(v.value()),
        None => Err(Error::NotFound),
    }
}

pub fn put_inode(t: &mut redb::Table<u64, &'static [u8]>, ino: u64, rec: &InodeRec) -> Result<()> {
    t.insert(ino, rec.encode()?.as_slice()).io()?;
    Ok(())
}

pub fn next_counter(t: &mut redb::Table<&'static str, u64>, key: &str, first: u64) -> Result<u64> {
    let cur = t.get(key).io()?.map(|v| v.value()).unwrap_or(first);
    t.insert(key, cur + 1).io()?;
    Ok(cur)
}

pub fn add_gc(txn: &WriteTransaction, job: &GcJob) -> Result<u64> {
    let mut meta = txn.open_table(META).io()?;
    let id = next_counter(&mut meta, "next_gc", 1)?;
    let mut gc = txn.open_table(GC).io()?;
    gc.insert(id, job.encode()?.as_slice()).io()?;
    Ok(id)
}
