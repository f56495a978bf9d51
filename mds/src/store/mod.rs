//! A shard's persistent store: one redb database per shard, and a writer
//! thread that group-commits (DESIGN.md, "Metadata"). Mutations queue up as
//! closures; the writer runs every queued closure in one write transaction,
//! has the changes they recorded committed through the shard's Raft group
//! as one entry (one log sync for the batch; raft/) and only then answers
//! each.
//!
//! A mutation that fails (returns an error, or panics) leaves nothing
//! behind: the batch's transaction is thrown away and the mutations that
//! succeeded run again, without it, in a new one. So a closure may write
//! before its last check, and must be a pure function of the transaction
//! it is given (it can run more than once).
//!
//! One writer per shard for the life of the process: each namespace
//! service takes its own handle on it ([`ShardStore::successor`]), and
//! from then on what the handles before it send is refused. A request of
//! a service that stopped can so never write beside the next one, which
//! carries over what that request left half done (steps.rs,
//! `roll_forward`) and would otherwise see it made twice.
use crate::records::{GcJob, InodeRec};
use aifs_common::{Error, Result};
use redb::{ReadTransaction, ReadableDatabase, ReadableTable};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub mod media;
pub mod raft;
pub mod tables;
pub mod txn;
pub use tables::*;
pub use txn::Txn;

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

/// A queued mutation: run (perhaps more than once, each time in a fresh
/// transaction), then answered once with the commit's outcome.
trait Job: Send {
    /// Run against `txn`; keep the outcome; true if it succeeded.
    fn run(&mut self, txn: &Txn) -> bool;
    /// The generation of the handle that sent it.
    fn generation(&self) -> u64;
    /// Answer the caller: its own error, or the value once `commit` is Ok.
    fn answer(self: Box<Self>, commit: Result<()>);
}

struct Call<F, T> {
    f: F,
    generation: u64,
    outcome: Option<Result<T>>,
    reply: tokio::sync::oneshot::Sender<Result<T>>,
}

impl<F, T> Job for Call<F, T>
where
    F: Fn(&Txn) -> Result<T> + Send,
    T: Send,
{
    fn run(&mut self, txn: &Txn) -> bool {
        // A bug in one mutation must not take the shard down with it.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (self.f)(txn)))
            .unwrap_or_else(|_| Err(Error::Io("a metadata mutation panicked".into())));
        let ok = r.is_ok();
        self.outcome = Some(r);
        ok
    }

    fn generation(&self) -> u64 {
        self.generation
    }

    fn answer(self: Box<Self>, commit: Result<()>) {
        let r = match self.outcome {
            Some(Ok(v)) => commit.map(|()| v),
            Some(Err(e)) => Err(e),
            None => commit.and(Err(Error::Io("metadata mutation never ran".into()))),
        };
        let _ = self.reply.send(r);
    }
}

/// The shard's writer thread: runs queued mutations in batches and has
/// each batch's changes committed through the shard's group.
struct Writer {
    db: Arc<redb::Database>,
    raft: raft::ShardRaft,
    rt: tokio::runtime::Handle,
    shard: u32,
    stats: Arc<StoreStats>,
    /// The group was started for this store alone, and stops with it.
    owns_group: bool,
    /// When a majority last acknowledged this process as the group's
    /// leader (replica.rs keeps it); None for a one-member group.
    acked: Option<Acked>,
    gone: Gone,
    /// The generation of the newest handle: only its jobs run.
    current: Arc<AtomicU64>,
}

/// Told the inodes whose rows a commit removed ([`ShardStore::when_gone`]).
pub type GoneHook = Arc<dyn Fn(&[u64]) + Send + Sync>;
type Gone = Arc<std::sync::RwLock<Option<GoneHook>>>;

/// When a majority last acknowledged this member as its group's leader
/// (None: it does not lead, or no majority has yet).
pub type Acked = Arc<std::sync::Mutex<Option<std::time::Instant>>>;

/// A commit that no majority has acknowledged the leader for this long
/// is given up by its callers (not by the writer): by then the others,
/// if they can reach each other, have elected a leader of their own
/// (twice the longest election timeout).
const GIVE_UP: std::time::Duration = std::time::Duration::from_millis(raft::ELECTION_MAX_MS * 2);

/// How often a commit in flight looks at the acknowledgements.
const ACK_CHECK: std::time::Duration = std::time::Duration::from_millis(100);

impl Writer {
    fn run(self, rx: std::sync::mpsc::Receiver<Box<dyn Job>>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(j) => batch.push(j),
                    Err(_) => break,
                }
            }
            self.commit_batch(batch);
        }
        // The store was dropped: stop the group, which closes the files.
        if !self.owns_group {
            return;
        }
        if let Err(e) = self.rt.block_on(self.raft.shutdown()) {
            tracing::warn!(shard = self.shard, error = %e, "stopping shard group");
        }
    }

    /// Run `jobs` in one transaction and commit their changes, answering
    /// each. A job that fails is answered with its error and the rest run
    /// again without it, in a new transaction, until a pass where all
    /// succeed. The transaction itself is never committed: its changes
    /// reach the database when the group applies the entry that carries
    /// them, after the log has them durably.
    fn commit_batch(&self, jobs: Vec<Box<dyn Job>>) {
        let shard = self.shard;
        // Checked once, before the batch runs: a handle made meanwhile
        // waits for this batch before its first job (`successor`).
        let current = self.current.load(Ordering::Acquire);
        let (stale, mut jobs): (Vec<_>, Vec<_>) = jobs.into_iter().partition(|j| j.generation() < current);
        for j in stale {
            j.answer(Err(Error::Unavailable("the service this request began in has stopped; try again".into())));
        }
        while !jobs.is_empty() {
            let txn = match self.db.begin_write() {
                Ok(t) => t,
                Err(e) => {
                    let err = Error::Io(format!("metadata store: {e}"));
                    tracing::error!(shard, error = %err, "cannot begin transaction");
                    for j in jobs {
                        j.answer(Err(err.clone()));
                    }
                    return;
                }
            };
            let recorded = Txn::new(&txn);
            let (ok, failed): (Vec<_>, Vec<_>) = jobs.into_iter().map(|mut j| (j.run(&recorded), j)).partition(|(ok, _)| *ok);
            let gone = recorded.removed_inodes();
            let changes = recorded.take_changes();
            drop(recorded);
            let _ = txn.abort();
            jobs = ok.into_iter().map(|(_, j)| j).collect();
            if !failed.is_empty() {
                for (_, j) in failed {
                    j.answer(Ok(()));
                }
                continue;
            }
            self.stats.mutations.fetch_add(jobs.len() as u64, Ordering::Relaxed);
            let committed = changes.changes.is_empty() || self.commit(changes, &mut jobs);
            for j in jobs {
                j.answer(Ok(()));
            }
            if committed && !gone.is_empty() {
                let tell = self.gone.read().ok().and_then(|t| t.clone());
                if let Some(tell) = tell {
                    tell(&gone);
                }
            }
            return;
        }
    }

    /// Commit `changes` through the group; whether it committed. `jobs`
    /// are answered here if it did not, and left to the caller to answer
    /// if it did. A leader parted from the other members would hold its
    /// callers until the partition ends, while the others elect a leader
    /// and serve: so once no majority has acknowledged this one for
    /// [`GIVE_UP`], the callers are told to go elsewhere ("not leader",
    /// no leader named) and this thread waits on. The entry may yet
    /// commit (the leader was only slow), so the next batch must not be
    /// computed without it; a caller that sends again, to whichever
    /// member leads, does so with its request id, which finds the first
    /// attempt's outcome where it committed.
    fn commit(&self, changes: txn::ChangeSet, jobs: &mut Vec<Box<dyn Job>>) -> bool {
        let shard = self.shard;
        self.stats.commits.fetch_add(1, Ordering::Relaxed);
        let mut waiting = Some(std::mem::take(jobs));
        let started = std::time::Instant::now();
        let res = self.rt.block_on(async {
            let write = self.raft.client_write(changes);
            tokio::pin!(write);
            loop {
                tokio::select! {
                    r = &mut write => return r.map(|_| ()).map_err(|e| match e.forward_to_leader() {
                        // Another process leads now (or none does): the
                        // caller is told where to go.
                        Some(f) => Error::NotLeader(f.leader_node.as_ref().map(|n| n.addr.clone()).unwrap_or_default()),
                        None => Error::Io(format!("shard {shard}: commit: {e}")),
                    }),
                    _ = tokio::time::sleep(ACK_CHECK) => {
                        if self.unacknowledged(started) {
                            if let Some(jobs) = waiting.take() {
                                tracing::warn!(shard, mutations = jobs.len(), "no majority acknowledges this leader: its callers go elsewhere while the commit waits");
                                for j in jobs {
                                    j.answer(Err(Error::NotLeader(String::new())));
                                }
                            }
                        }
                    }
                }
            }
        });
        match res {
            Ok(()) => {
                *jobs = waiting.unwrap_or_default();
                true
            }
            Err(e) => {
                tracing::error!(shard, error = %e, "commit failed");
                for j in waiting.into_iter().flatten() {
                    j.answer(Err(e.clone()));
                }
                false
            }
        }
    }

    /// No majority has acknowledged this process as leader for
    /// [`GIVE_UP`], or since before a commit that began at `started` (a
    /// leader not yet acknowledged at all).
    fn unacknowledged(&self, started: std::time::Instant) -> bool {
        let Some(acked) = &self.acked else { return false };
        let since = acked.lock().ok().and_then(|a| *a).unwrap_or(started);
        since.elapsed() > GIVE_UP
    }
}

#[derive(Default)]
pub struct StoreStats {
    pub commits: AtomicU64,
    pub mutations: AtomicU64,
}

/// A shard's Raft group as it reports itself (`mdsctl shard ls`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupState {
    /// The voting members.
    pub members: Vec<u64>,
    /// The member leading it, if any, and its term.
    pub leader: Option<u64>,
    pub term: u64,
    /// Index of the last entry in the log, of the last applied, and of the
    /// last in the snapshot (0: none).
    pub last_log: u64,
    pub applied: u64,
    pub snapshot: u64,
    /// Every member and the address its MDS serves at.
    pub nodes: Vec<(u64, String)>,
    /// While this member leads: the index of the last entry each other
    /// member is known to hold.
    pub matched: Vec<(u64, u64)>,
}

pub struct ShardStore {
    pub id: u32,
    /// None where this process is not a member of the shard's group
    /// ([`ShardStore::not_held`]).
    db: Option<Arc<redb::Database>>,
    /// What the shard's group reports of itself.
    raft: tokio::sync::watch::Receiver<openraft::RaftMetrics<raft::NodeId, openraft::BasicNode>>,
    tx: std::sync::mpsc::Sender<Box<dyn Job>>,
    pub stats: Arc<StoreStats>,
    gone: Gone,
    /// Shared with the writer: the newest handle's generation.
    current: Arc<AtomicU64>,
    generation: u64,
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
    /// Open shard `id`'s database in `dir` and start its group; ready once
    /// everything the log holds is applied.
    pub async fn open(dir: &Path, id: u32) -> Result<ShardStore> {
        Self::open_with(dir, id, raft::LogUpkeep::default().snapshot_after_bytes).await
    }

    /// [`ShardStore::open`], with a snapshot once the log has grown by
    /// `log_before_snapshot` bytes, or by the database's size if more.
    /// The only shard open in `dir`: its log database is its own.
    pub async fn open_with(dir: &Path, id: u32, log_before_snapshot: u64) -> Result<ShardStore> {
        Self::open_on(&media::Disk, &raft::Logs::open(&media::Disk, dir)?, dir, id, log_before_snapshot).await
    }

    /// [`ShardStore::open_with`], with the databases on `media` and the
    /// log in `logs`, which the other shards open in `dir` share.
    pub async fn open_on(media: &dyn media::Media, logs: &Arc<raft::Logs>, dir: &Path, id: u32, log_before_snapshot: u64) -> Result<ShardStore> {
        let db = Self::open_db(media, dir, id)?;
        let upkeep = raft::LogUpkeep { snapshot_after_bytes: log_before_snapshot, ..Default::default() };
        let raft = raft::start(logs, dir, id, db.clone(), &upkeep, &raft::Members::solo()).await?;
        Self::over(id, db, raft, true, None)
    }

    /// The name of shard `id`'s database in its directory.
    pub fn file_name(id: u32) -> String {
        format!("shard-{id}.redb")
    }

    /// Open (or make, with every table) shard `id`'s database in `dir`.
    pub fn open_db(media: &dyn media::Media, dir: &Path, id: u32) -> Result<Arc<redb::Database>> {
        std::fs::create_dir_all(dir)?;
        let db = Arc::new(media.database(&dir.join(Self::file_name(id)))?);
        let t = db.begin_write().io()?;
        for table in TABLES {
            table.create(&t)?;
        }
        t.commit().io()?;
        Ok(db)
    }

    /// The store of shard `id` over its database and its group, which this
    /// process must lead for mutations to commit. With `owns_group`, the
    /// group stops when the store is dropped.
    /// `acked` (None for a one-member group) says when a majority last
    /// acknowledged this process as the group's leader.
    pub fn over(id: u32, db: Arc<redb::Database>, raft: raft::ShardRaft, owns_group: bool, acked: Option<Acked>) -> Result<ShardStore> {
        let metrics = raft.metrics();
        let (tx, rx) = std::sync::mpsc::channel::<Box<dyn Job>>();
        let stats = Arc::new(StoreStats::default());
        let (gone, current) = (Gone::default(), Arc::new(AtomicU64::new(0)));
        let writer = Writer { db: db.clone(), raft, rt: tokio::runtime::Handle::current(), shard: id, stats: stats.clone(), owns_group, acked, gone: gone.clone(), current: current.clone() };
        std::thread::Builder::new().name(format!("shard-{id}-commit")).spawn(move || writer.run(rx))?;
        Ok(ShardStore { id, db: Some(db), raft: metrics, tx, stats, gone, current, generation: 0 })
    }

    /// A stand-in for shard `id` where this process is not a member of
    /// its group (its groups are a subset, replica.rs): every read and
    /// mutation is refused, and its group reports no one.
    pub fn not_held(id: u32) -> ShardStore {
        let (tx, _) = std::sync::mpsc::channel::<Box<dyn Job>>();
        let (_, raft) = tokio::sync::watch::channel(openraft::RaftMetrics::new_initial(0));
        let stats = Arc::default();
        ShardStore { id, db: None, raft, tx, stats, gone: Gone::default(), current: Arc::default(), generation: 0 }
    }

    /// This process is a member of the shard's group: its reads and
    /// mutations are served.
    pub fn held(&self) -> bool {
        self.db.is_some()
    }

    /// The shard's database, if its group has a member here.
    fn db(&self) -> Result<&Arc<redb::Database>> {
        let id = self.id;
        self.db.as_ref().ok_or_else(|| Error::Unavailable(format!("shard {id}'s group has no member in this MDS")))
    }

    /// A handle on the same writer for the next namespace service: what
    /// this handle and every earlier one send from now on is refused
    /// ("unavailable", which a client sends again). A batch the writer
    /// already runs finishes first, so the new handle's first mutation
    /// sees everything the old ones made.
    pub fn successor(&self) -> ShardStore {
        let generation = self.current.fetch_add(1, Ordering::AcqRel) + 1;
        ShardStore {
            id: self.id,
            db: self.db.clone(),
            raft: self.raft.clone(),
            tx: self.tx.clone(),
            stats: self.stats.clone(),
            gone: self.gone.clone(),
            current: self.current.clone(),
            generation,
        }
    }

    /// Have `tell` told, after each commit, the inodes whose rows it
    /// removed (the last hook set replaces the one before).
    pub fn when_gone(&self, tell: GoneHook) {
        if let Ok(mut g) = self.gone.write() {
            *g = Some(tell);
        }
    }

    /// Run `f` in the next group commit; answer once it is durable. If `f`
    /// fails, nothing it wrote is kept. `f` may run more than once.
    pub async fn mutate<T: Send + 'static>(
        &self,
        f: impl Fn(&Txn) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.db()?;
        let (reply, orx) = tokio::sync::oneshot::channel::<Result<T>>();
        let job: Box<dyn Job> = Box::new(Call { f, generation: self.generation, outcome: None, reply });
        self.tx.send(job).map_err(|_| Error::Io("shard writer stopped".into()))?;
        orx.await.map_err(|_| Error::Io("shard writer stopped".into()))?
    }

    /// What the shard's group reports of itself.
    pub fn group(&self) -> GroupState {
        let m = self.raft.borrow();
        let index = |l: Option<openraft::LogId<u64>>| l.map(|l| l.index).unwrap_or(0);
        GroupState {
            members: m.membership_config.membership().voter_ids().collect(),
            leader: m.current_leader,
            term: m.current_term,
            last_log: m.last_log_index.unwrap_or(0),
            applied: index(m.last_applied),
            snapshot: index(m.snapshot),
            nodes: m.membership_config.membership().nodes().map(|(id, n)| (*id, n.addr.clone())).collect(),
            matched: m.replication.iter().flatten().map(|(id, l)| (*id, index(*l))).collect(),
        }
    }

    /// Read committed state: a point read or a bounded range, run in
    /// place. From redb's cache or the page cache it takes microseconds;
    /// a hop to a blocking thread and back cost more than the read (a
    /// getattr took 66 µs of MDS CPU that way, 27 µs in place,
    /// `aifs-bench --clients-only`). A read over a whole table is a
    /// [`ShardStore::scan`].
    pub async fn read<T: Send + 'static>(&self, f: impl FnOnce(&ReadTransaction) -> Result<T> + Send + 'static) -> Result<T> {
        let t = self.db()?.begin_read().io()?;
        f(&t)
    }

    /// Read committed state on a blocking thread: for reads whose length
    /// grows with a table (fsck, repair's and the start's scans), which
    /// must not hold up the requests sharing this runtime thread.
    pub async fn scan<T: Send + 'static>(&self, f: impl FnOnce(&ReadTransaction) -> Result<T> + Send + 'static) -> Result<T> {
        let db = self.db()?.clone();
        tokio::task::spawn_blocking(move || {
            let t = db.begin_read().io()?;
            f(&t)
        })
        .await
        .map_err(|e| Error::Io(format!("read task: {e}")))?
    }
}

// Table helpers shared by reads and writes.

/// `f` over `db`'s META table as this member holds it, read in place;
/// None where the table is not made yet (a group waiting to be filled).
pub fn with_meta<T>(db: &redb::Database, f: impl FnOnce(&redb::ReadOnlyTable<&'static str, u64>) -> Result<T>) -> Result<Option<T>> {
    let t = db.begin_read().io()?;
    match t.open_table(META) {
        Ok(meta) => f(&meta).map(Some),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(Error::Io(format!("meta table: {e}"))),
    }
}

pub fn get_inode<T: ReadableTable<u64, &'static [u8]>>(t: &T, ino: u64) -> Result<InodeRec> {
    match t.get(ino).io()? {
        Some(v) => InodeRec::decode(v.value()),
        None => Err(Error::NotFound),
    }
}

pub fn put_inode(t: &mut txn::Table<u64, &'static [u8]>, ino: u64, rec: &InodeRec) -> Result<()> {
    t.insert(ino, rec.encode()?.as_slice()).io()?;
    Ok(())
}

pub fn next_counter(t: &mut txn::Table<&'static str, u64>, key: &str, first: u64) -> Result<u64> {
    let cur = t.get(key).io()?.map(|v| v.value()).unwrap_or(first);
    t.insert(key, cur + 1).io()?;
    Ok(cur)
}

pub fn add_gc(txn: &Txn, job: &GcJob) -> Result<u64> {
    let mut meta = txn.open_table(META).io()?;
    let id = next_counter(&mut meta, "next_gc", 1)?;
    let mut gc = txn.open_table(GC).io()?;
    gc.insert(id, job.encode()?.as_slice()).io()?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(db: &redb::Database, key: &str) -> Option<u64> {
        let t = db.begin_read().ok()?;
        t.open_table(META).ok()?.get(key).ok()?.map(|v| v.value())
    }

    /// A shard whose log outgrew it takes a snapshot, and opens again with
    /// every row: those in the snapshot and those logged after it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_shard_opens_again_from_its_snapshot_and_the_log_after_it() {
        let dir = tempfile::tempdir().unwrap();
        // 20 rows written over and over: the log grows past the database.
        fn row(i: u64) -> Vec<u8> {
            format!("row {i} ").repeat(1000).into_bytes()
        }
        async fn put(s: &ShardStore, i: u64) -> Result<()> {
            s.mutate(move |txn| {
                txn.open_table(INODES).io()?.insert(i % 20, row(i).as_slice()).io()?;
                Ok(())
            })
            .await
        }
        let s = ShardStore::open_with(dir.path(), 0, 1).await.unwrap();
        for i in 0..600 {
            put(&s, i).await.unwrap();
        }
        let mut waited = 0;
        while s.group().snapshot == 0 {
            assert!(waited < 200, "no snapshot was taken");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            waited += 1;
        }
        assert!(dir.path().join("shard-0.snapshot").exists());
        drop(s);
        let s = open_again(dir.path(), |_| Ok(())).await;
        put(&s, 600).await.unwrap();
        let rows = s
            .read(|t| {
                let inodes = t.open_table(INODES).io()?;
                (0..20u64).map(|i| Ok(inodes.get(i).io()?.map(|v| v.value().to_vec()))).collect::<Result<Vec<_>>>()
            })
            .await
            .unwrap();
        for (k, got) in rows.iter().enumerate() {
            let last = if k == 0 { 600 } else { 580 + k as u64 };
            assert_eq!(got.as_deref(), Some(row(last).as_slice()), "row {k}");
        }
        // openraft reports an entry applied in its metrics a moment after
        // the write that made it is answered.
        let mut g = s.group();
        for _ in 0..40 {
            if g.applied == g.last_log {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            g = s.group();
        }
        assert_eq!((g.members.as_slice(), g.leader), (&[raft::SELF][..], Some(raft::SELF)));
        assert!(g.snapshot > 0 && g.applied == g.last_log && g.last_log > 600, "{g:?}");
    }

    /// Shard 0 in `dir` opened again once the group of the store dropped
    /// before has let go of its files (a moment later), `then` done to the
    /// files first.
    async fn open_again(dir: &Path, then: impl Fn(&Path) -> std::result::Result<(), redb::Error>) -> ShardStore {
        let mut done = false;
        for _ in 0..100 {
            if !done {
                match then(dir) {
                    Ok(()) => done = true,
                    Err(e) => tracing::debug!(error = %e, "not yet"),
                }
            }
            if done {
                match ShardStore::open_with(dir, 0, 1).await {
                    Ok(s) => return s,
                    Err(e) => tracing::debug!(error = %e, "not yet"),
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the shard does not open again");
    }

    /// A log kept the way it was before the shards shared one database
    /// (`shard-N.log.redb`) is moved into the shared one at the next
    /// start, and the entries only it holds are applied: the store's
    /// database is put back to before them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_log_of_its_own_from_before_is_moved_in_and_applied() {
        let dir = tempfile::tempdir().unwrap();
        async fn put(s: &ShardStore, k: u64) -> Result<()> {
            s.mutate(move |txn| {
                txn.open_table(INODES).io()?.insert(k, format!("row {k}").as_bytes()).io()?;
                Ok(())
            })
            .await
        }
        let s = ShardStore::open(dir.path(), 0).await.unwrap();
        put(&s, 1).await.unwrap();
        drop(s);
        let before = dir.path().join("before.redb");
        let s = open_again(dir.path(), |d| Ok(std::fs::copy(d.join("shard-0.redb"), &before).map(drop)?)).await;
        for k in 2..=5 {
            put(&s, k).await.unwrap();
        }
        drop(s);
        let s = open_again(dir.path(), |d| {
            raft::log::to_legacy(d, 0)?;
            Ok(std::fs::rename(&before, d.join("shard-0.redb"))?)
        })
        .await;
        let rows = s.read(|t| (1..=5u64).map(|k| Ok(t.open_table(INODES).io()?.get(k).io()?.is_some())).collect::<Result<Vec<_>>>()).await.unwrap();
        assert_eq!(rows, vec![true; 5], "rows 2-5 were only in the old log");
        assert!(!dir.path().join("shard-0.log.redb").exists(), "the old log stayed");
        put(&s, 6).await.unwrap();
    }

    /// A shard database made before shards were Raft groups (its tables
    /// and rows, no log beside it) opens with every row, and takes new
    /// mutations on top of them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_shard_from_before_its_group_opens_with_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = redb::Database::create(dir.path().join("shard-0.redb")).unwrap();
            let t = db.begin_write().unwrap();
            for table in TABLES {
                table.create(&t).unwrap();
            }
            t.open_table(INODES).unwrap().insert(7, b"old row".as_slice()).unwrap();
            t.open_table(META).unwrap().insert("next_ino", 99).unwrap();
            t.commit().unwrap();
        }
        let s = ShardStore::open(dir.path(), 0).await.unwrap();
        let next = s.mutate(|txn| next_counter(&mut txn.open_table(META).io()?, "next_ino", 1)).await.unwrap();
        assert_eq!(next, 99, "the old counter was kept");
        let (old, counter) = s
            .read(|t| {
                let old = t.open_table(INODES).io()?.get(7).io()?.map(|v| v.value().to_vec());
                Ok((old, t.open_table(META).io()?.get("next_ino").io()?.map(|v| v.value())))
            })
            .await
            .unwrap();
        assert_eq!((old.as_deref(), counter), (Some(b"old row".as_slice()), Some(100)));
        assert!(dir.path().join(raft::log::FILE).exists());
    }

    /// A mutation that writes and then fails (or panics) leaves nothing in
    /// the store, even when it shares its commit with mutations that
    /// succeed: they are kept, whole.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_mutation_commits_nothing_of_what_it_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(ShardStore::open(dir.path(), 0).await.unwrap());
        let put = |key: &'static str, fail: u8| {
            let s = s.clone();
            tokio::spawn(async move {
                s.mutate(move |txn| {
                    next_counter(&mut txn.open_table(META).io()?, key, 7)?;
                    match fail {
                        1 => Err(Error::Exists),
                        2 => panic!("a bug in a mutation"),
                        _ => Ok(key),
                    }
                })
                .await
            })
        };
        // Queued together, they share commits.
        let jobs: Vec<_> = (0..40).map(|i| put(["kept", "failed", "panicked"][i % 3], (i % 3) as u8)).collect();
        let mut outcomes = Vec::new();
        for j in jobs {
            outcomes.push(j.await.unwrap());
        }
        assert!(outcomes.iter().step_by(3).all(|r| *r == Ok("kept")));
        assert!(outcomes.iter().skip(1).step_by(3).all(|r| *r == Err(Error::Exists)));
        assert!(outcomes.iter().skip(2).step_by(3).all(|r| matches!(r, Err(Error::Io(_)))));
        assert_eq!(get(s.db().unwrap(), "kept"), Some(7 + 14), "every successful mutation counts once");
        assert_eq!(get(s.db().unwrap(), "failed"), None, "a failed mutation's write was committed");
        assert_eq!(get(s.db().unwrap(), "panicked"), None, "a panicked mutation's write was committed");
    }
}
