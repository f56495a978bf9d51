//! `ClientFs`: the file system as async operations, with no knowledge of
//! FUSE (fuse.rs is the thin glue). Metadata goes to the MDS and is cached
//! under its leases (meta.rs); file data goes through the write-behind and
//! read-ahead pipelines to the OSDs. The MDS's recalls arrive on streams it
//! opens on this client's connection and are served by `on_recall`.
use crate::config::ClientConfig;
use crate::data::prefetch;
use crate::data::file::{DataCtx, FileState};
use crate::dirops::DirOps;
use crate::meta::{MetaCache, Snap};
use crate::pool::Pool;
use aifs_common::certs::Role;
use aifs_common::proto::mds::{Attr, Degraded, DirEntry, DirOp, FileKind, HeldLock, LeaseMode, LockInfo, LockKind, MdsReq, MdsResp, RecallReq, RecallResp, SetAttr, Statfs, Writable, RESERVE_BATCH};
use aifs_common::rpc::{self, Identity, Peer, Service};
use aifs_common::{Error, Result};
use bytes::Bytes;
use dashmap::DashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, Semaphore};

/// How often the background flusher looks for stale partial units.
const FLUSH_TICK: Duration = Duration::from_secs(1);
/// A partial stripe unit untouched this long is shipped (as the kernel's
/// dirty_expire does for page cache).
const STALE_UNIT: Duration = Duration::from_secs(5);

/// Entries fetched per readdir call to the MDS.
const READDIR_BATCH: u32 = 512;

/// How long a recall waits for the kernel to drop an entry or an inode
/// before answering the MDS anyway. The kernel takes the directory's lock
/// to drop an entry; if this mount is itself in the middle of a change in
/// that directory, waiting on the MDS that waits for this answer, the
/// notice completes after that change does.
const KERNEL_NOTICE_WAIT: Duration = Duration::from_millis(50);

/// A waiting lock asks again after this long, doubling up to the maximum.
const LOCK_RETRY_MIN: Duration = Duration::from_millis(5);
const LOCK_RETRY_MAX: Duration = Duration::from_millis(200);

/// The kernel's caches, as the FUSE glue exposes them.
pub trait KernelCache: Send + Sync + 'static {
    /// Forget the entry `name` in `parent`.
    fn forget_entry(&self, parent: u64, name: &str);
    /// Forget `ino`'s attributes, and with `data` its cached pages.
    fn forget_inode(&self, ino: u64, data: bool);
}

/// An open file handle.
struct Handle {
    file: Arc<FileState>,
    /// Opened with `O_APPEND`: every write goes to the end of the file.
    append: bool,
    /// Read from: the access time may need setting at close.
    read: std::sync::atomic::AtomicBool,
    /// (atime, mtime, ctime) when opened: whether a read moves atime.
    times: (i64, i64, i64),
}

/// The lease a file operation needs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Want {
    Read,
    /// A write lease, shared with other writers if there are any.
    Write,
    /// A write lease no other client shares: appends must know the end.
    Append,
}

impl Want {
    fn of(write: bool, append: bool) -> Want {
        match (write, append) {
            (_, true) => Want::Append,
            (true, false) => Want::Write,
            (false, false) => Want::Read,
        }
    }

    fn suits(self, held: LeaseMode) -> bool {
        match self {
            Want::Read => held != LeaseMode::None,
            Want::Write => matches!(held, LeaseMode::Write | LeaseMode::SharedWrite),
            Want::Append => held == LeaseMode::Write,
        }
    }
}

/// How an open was answered.
pub struct Opened {
    pub fh: u64,
    pub attr: Attr,
    /// The kernel's cached pages of the file are still good.
    pub keep_cache: bool,
    /// Several clients write the file: the kernel must not cache its pages.
    pub direct_io: bool,
}

pub struct ClientFs {
    pub pool: Arc<Pool>,
    ctx: Arc<DataCtx>,
    files: DashMap<u64, Arc<FileState>>,
    handles: DashMap<u64, Handle>,
    next_fh: AtomicU64,
    name: String,
    pub meta: MetaCache,
    lease_cache: bool,
    /// Take directories' write leases (config `dir_leases`).
    dir_leases: bool,
    /// Session term, learned when the session opens.
    term_ms: AtomicU64,
    kernel: OnceLock<Arc<dyn KernelCache>>,
    /// Woken when a new MDS connection needs the session bound to it.
    rebind: Notify,
    /// (inode, lock owner) pairs that took a lock through this client: a
    /// close by that owner releases its locks at the MDS.
    lockers: DashMap<(u64, u64), ()>,
    /// The locks this client holds (as the MDS granted them; session 0),
    /// to take them again from an MDS that restarted.
    held_locks: std::sync::Mutex<aifs_common::locks::LockTable>,
    /// Changes made under directories' write leases, on their way to the
    /// MDS (dirops.rs).
    dirops: Arc<DirOps>,
}

fn unexpected(what: &str) -> Error {
    Error::Protocol(format!("unexpected MDS reply to {what}"))
}

/// Serves the MDS's recalls on this client's connection.
struct RecallService {
    fs: Weak<ClientFs>,
}

impl Service for RecallService {
    type Req = RecallReq;
    type Resp = RecallResp;

    async fn call(&self, _peer: &Arc<Peer>, req: RecallReq, _payload: Bytes) -> (RecallResp, Vec<Bytes>) {
        let Some(fs) = self.fs.upgrade() else {
            return (RecallResp::Done, vec![]);
        };
        match fs.on_recall(req).await {
            Ok(r) => (r, vec![]),
            Err(e) => (RecallResp::Err(e.to_wire()), vec![]),
        }
    }

    fn error(e: Error) -> RecallResp {
        RecallResp::Err(e.to_wire())
    }

    fn accepts(&self, role: Role) -> bool {
        role == Role::Mds
    }
}

impl ClientFs {
    /// Connect to the cluster (QUIC + mTLS) and open a session.
    pub async fn connect(cfg: &ClientConfig) -> Result<Arc<ClientFs>> {
        let id = Identity::load(&cfg.tls)?;
        let endpoint = rpc::client_endpoint(&id, &cfg.transport)?;
        let pool = Arc::new(Pool::new(endpoint, cfg.mds, Duration::from_secs(cfg.mds_retry_secs)));
        let budget_kib = (cfg.write_budget_mb.max(16) * 1024).min(Semaphore::MAX_PERMITS);
        let ctx = Arc::new(DataCtx {
            pool: pool.clone(),
            budget: Arc::new(Semaphore::new(budget_kib)),
            budget_kib,
            write_window: cfg.write_window,
            max_buffered_units: cfg.max_buffered_units,
            readahead_units: cfg.readahead_units,
            pressure: tokio::sync::Notify::new(),
        });
        let fs = Arc::new(ClientFs {
            pool,
            ctx,
            files: DashMap::new(),
            handles: DashMap::new(),
            next_fh: AtomicU64::new(1),
            name: cfg.name.clone(),
            meta: MetaCache::new(),
            lease_cache: cfg.lease_cache,
            dir_leases: cfg.dir_leases && cfg.lease_cache,
            term_ms: AtomicU64::new(0),
            kernel: OnceLock::new(),
            rebind: Notify::new(),
            lockers: DashMap::new(),
            held_locks: Default::default(),
            dirops: Arc::new(DirOps::default()),
        });
        // Every connection to the MDS carries its recalls back to us; a new
        // one (after a reconnect) gets the session bound by a heartbeat.
        let weak = Arc::downgrade(&fs);
        fs.pool.mds.on_connect(Box::new(move |conn| {
            let svc = Arc::new(RecallService { fs: weak.clone() });
            tokio::spawn(rpc::serve_conn(svc, Peer::new(Role::Mds, conn)));
            if let Some(fs) = weak.upgrade() {
                fs.rebind.notify_one();
            }
        }));
        let weak = Arc::downgrade(&fs);
        tokio::spawn(async move {
            // Background flusher: partial units do not sit in memory forever,
            // and all of them go when a writer runs out of budget.
            loop {
                let Some(ctx) = weak.upgrade().map(|fs| fs.ctx.clone()) else {
                    return;
                };
                let older_than = tokio::select! {
                    _ = tokio::time::sleep(FLUSH_TICK) => Some(STALE_UNIT),
                    _ = ctx.pressure.notified() => None,
                };
                let Some(fs) = weak.upgrade() else { return };
                let files: Vec<Arc<FileState>> = fs.files.iter().map(|f| f.value().clone()).collect();
                for f in files {
                    if let Err(e) = f.ship_buffered(&fs.ctx, older_than) {
                        tracing::warn!(ino = f.ino, error = %e, "background flush failed");
                    }
                }
            }
        });
        tokio::spawn(Self::send_dirops(Arc::downgrade(&fs)));
        let hb = fs.open_session().await?;
        fs.pool.refresh_osds().await?;
        let weak = Arc::downgrade(&fs);
        tokio::spawn(async move {
            let period = Duration::from_millis(hb.clamp(200, 10_000));
            loop {
                let Some(fs) = weak.upgrade() else { return };
                tokio::select! {
                    _ = tokio::time::sleep(period) => {}
                    _ = fs.rebind.notified() => {}
                }
                let id = fs.meta.session();
                let sent = Instant::now();
                match fs.pool.mds(&MdsReq::SessionHeartbeat { id }).await {
                    Ok(_) => fs.meta.renewed(sent, fs.term()),
                    Err(Error::Stale) => {
                        tracing::info!("session unknown to the MDS (restart, expiry or eviction); opening a new one");
                        fs.meta.clear();
                        fs.dirops.lost_leases();
                        let _ = fs.open_session().await;
                    }
                    Err(e) => tracing::warn!(error = %e, "session heartbeat failed"),
                }
            }
        });
        Ok(fs)
    }

    /// One MDS request, after every change this client made under a
    /// directory's write lease reached the MDS (dirops.rs, "Order").
    async fn mds(&self, req: &MdsReq) -> Result<MdsResp> {
        self.dirops.barrier().await;
        self.pool.mds(req).await
    }

    /// `mds`, with the session the reply's leases were granted under.
    async fn mds_leased(&self, req: &MdsReq) -> (Result<MdsResp>, u64) {
        self.dirops.barrier().await;
        self.pool.mds_leased(req).await
    }

    /// Send the changes made under directory leases, a batch at a time
    /// (changes made while one batch is out go in the next), and reserve
    /// inode numbers for the directories that run low.
    async fn send_dirops(weak: Weak<ClientFs>) {
        let mut pause = Duration::from_millis(10);
        loop {
            let Some(ops) = weak.upgrade().map(|fs| fs.dirops.clone()) else {
                return;
            };
            let woken = ops.queued.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let Some(fs) = weak.upgrade() else { return };
            loop {
                // Numbers for directories running low first: without them
                // creates there go to the MDS, behind every queued change.
                fs.reserve(&ops).await;
                let Some((batch, last)) = ops.take_batch() else {
                    break;
                };
                loop {
                    let req = MdsReq::Apply { session: fs.meta.session(), ops: batch.clone() };
                    match fs.pool.mds(&req).await {
                        Ok(MdsResp::Applied(rs)) => {
                            fs.not_applied(&batch, rs).await;
                            break;
                        }
                        // The MDS is away (restarting, say): the batch goes
                        // again; applying a change twice changes nothing.
                        Err(e) if e.unreachable() => {
                            tracing::warn!(error = %e, changes = batch.len(), "changes not delivered to the MDS; retrying");
                            tokio::time::sleep(pause).await;
                            pause = (pause * 2).min(Duration::from_secs(1));
                        }
                        r => {
                            let e = r.err().unwrap_or_else(|| unexpected("Apply"));
                            fs.not_applied(&batch, vec![Some(e.to_wire()); batch.len()]).await;
                            break;
                        }
                    }
                }
                pause = Duration::from_millis(10);
                ops.answered(last);
            }
            drop(fs);
            woken.await;
        }
    }

    /// Reserve inode numbers for the directories that asked.
    async fn reserve(&self, ops: &DirOps) {
        for dir in ops.take_refills() {
            let got = match self.pool.mds(&MdsReq::Reserve { dir, count: RESERVE_BATCH }).await {
                Ok(MdsResp::Reserved(v)) => v,
                Ok(_) => Vec::new(),
                Err(e) => {
                    tracing::debug!(dir, error = %e, "no inode numbers reserved; creates there go to the MDS");
                    Vec::new()
                }
            };
            ops.refilled(dir, got);
        }
    }

    /// Changes the MDS refused (the lease was lost, and another client
    /// changed the directory meanwhile): said loudly, and forgotten here.
    async fn not_applied(&self, batch: &[DirOp], results: Vec<Option<aifs_common::error::WireError>>) {
        for (op, r) in batch.iter().zip(results) {
            let Some(e) = r else { continue };
            let e = Error::from_wire(e.code, &e.msg);
            let (parent, name, ino) = match op {
                DirOp::Create { parent, name, ino, .. } => {
                    tracing::error!(parent, name, ino, error = %e, "a file made under a directory lease was refused by the MDS; it does not exist");
                    if let Some(f) = self.files.get(ino) {
                        f.fail(Error::Io(format!("file {name:?} was never created at the MDS: {e}")));
                    }
                    (parent, name, ino)
                }
                DirOp::Unlink { parent, name, ino, .. } => {
                    tracing::error!(parent, name, ino, error = %e, "an unlink made under a directory lease was refused by the MDS");
                    (parent, name, ino)
                }
                DirOp::Close { ino } => {
                    tracing::debug!(ino, error = %e, "close not applied; the session's end releases it");
                    continue;
                }
            };
            self.meta.drop_ino(*ino);
            self.meta.invalidate(*parent, std::slice::from_ref(name));
            self.tell_kernel(*parent, vec![name.clone()], false).await;
        }
    }

    /// A create answered here, under the directory's write lease, with an
    /// inode number reserved there. `None`: the MDS must answer (no lease,
    /// no number left, or the name is not known to be free).
    fn create_here(&self, parent: u64, name: &str, mode: u32, uid: u32, gid: u32, exclusive: bool) -> Option<Result<Attr>> {
        if !self.cache_on() {
            return None;
        }
        self.dirops.local(parent, |l| {
            match self.meta.dentry(parent, name)? {
                None => {}
                Some(_) if exclusive => return Some(Err(Error::Exists)),
                // Opening the file there: the MDS counts the open.
                Some(_) => return None,
            }
            let snap = self.meta.snap();
            let r = l.take()?;
            let now = aifs_common::time::now_ns();
            let a = Attr::new_file(r.ino, mode, uid, gid, r.layout.clone(), now);
            l.push(DirOp::Create {
                parent,
                name: name.to_string(),
                ino: r.ino,
                layout: r.layout,
                mode,
                uid,
                gid,
                time_ns: now,
                open: true,
            });
            // The creator holds a write lease on the new file.
            self.meta.put_attr(snap, snap.session(), &a, LeaseMode::Write);
            self.meta.local_entry(snap, parent, name, Some(a.ino), false);
            self.meta.touch_dir(parent, now);
            Some(Ok(a))
        })
    }

    /// An unlink answered here, under the directory's write lease, of a
    /// name this client knows. `None`: the MDS must answer.
    fn unlink_here(&self, parent: u64, name: &str) -> Option<Result<()>> {
        if !self.cache_on() {
            return None;
        }
        self.dirops.local(parent, |l| {
            let Some(ino) = self.meta.dentry(parent, name)? else {
                return Some(Err(Error::NotFound));
            };
            let (a, _) = self.meta.attr(ino)?;
            if a.kind == FileKind::Dir {
                return Some(Err(Error::IsDir));
            }
            let snap = self.meta.snap();
            let now = aifs_common::time::now_ns();
            l.push(DirOp::Unlink { parent, name: name.to_string(), ino, time_ns: now });
            self.meta.local_entry(snap, parent, name, None, false);
            self.meta.forget_attr(ino);
            self.meta.touch_dir(parent, now);
            Some(Ok(()))
        })
    }

    /// The MDS granted `dir`'s write lease in a reply to a request sent at
    /// `snap`: kept unless the lease was recalled meanwhile.
    fn writable(&self, snap: Snap, granted: u64, w: Option<Writable>) {
        let Some(w) = w else { return };
        if self.dir_leases && granted != 0 && granted == snap.session() && self.meta.quiet_since(snap, w.dir) {
            self.dirops.grant(w.dir, w.reserved);
        }
    }

    /// Wait until every change made under directory leases is at the MDS
    /// (`fsync` of a directory).
    pub async fn sync_dirs(&self) {
        self.dirops.barrier().await;
    }

    /// Where to send kernel cache notices (set once the FUSE session is up).
    pub fn set_kernel(&self, k: Arc<dyn KernelCache>) {
        let _ = self.kernel.set(k);
    }

    fn term(&self) -> Duration {
        Duration::from_millis(self.term_ms.load(Ordering::Relaxed))
    }

    /// Open a session; returns the heartbeat period in ms. The MDS asks for
    /// four heartbeats per term. A new session after the last one was lost
    /// (an MDS restart, an expiry) names the old one, which a restarted MDS
    /// waits for, and counts again the files this client has open.
    async fn open_session(&self) -> Result<u64> {
        let sent = Instant::now();
        let previous = self.meta.session();
        let open: Vec<u64> = self.files.iter().filter(|f| f.opens.load(Ordering::Acquire) > 0).map(|f| f.ino).collect();
        let locks: Vec<HeldLock> = match self.held_locks.lock() {
            Ok(t) => t.all().into_iter().map(|(ino, l)| HeldLock { ino, owner: l.owner, start: l.start, end: l.end, write: l.write, pid: l.pid }).collect(),
            Err(_) => Vec::new(),
        };
        let n_locks = locks.len();
        let req = MdsReq::OpenSession { name: self.name.clone(), dir_leases: self.dir_leases, previous, open, locks };
        match self.pool.mds(&req).await? {
            MdsResp::Session { id, heartbeat_ms, reclaimed } => {
                if n_locks > 0 && !reclaimed {
                    // The session ended at the MDS (expired, evicted):
                    // its locks went with it, and may be others' now.
                    tracing::error!(locks = n_locks, "the session was lost and the locks it held with it");
                    if let Ok(mut t) = self.held_locks.lock() {
                        t.clear();
                    }
                }
                self.term_ms.store(heartbeat_ms * 4, Ordering::Relaxed);
                self.meta.set_session(id, sent, self.term());
                Ok(heartbeat_ms)
            }
            _ => Err(unexpected("OpenSession")),
        }
    }

    /// Flush everything and close the session (unmount).
    pub async fn shutdown(&self) {
        let files: Vec<Arc<FileState>> = self.files.iter().map(|f| f.value().clone()).collect();
        for f in files {
            if let Err(e) = self.flush_file(&f).await {
                tracing::warn!(ino = f.ino, error = %e, "flush at unmount failed");
            }
        }
        if tokio::time::timeout(Duration::from_secs(30), self.dirops.barrier()).await.is_err() {
            tracing::error!("changes made under directory leases were not all applied before the unmount");
        }
        let id = self.meta.session();
        self.meta.clear();
        self.dirops.lost_leases();
        // An MDS that is gone must not hold up the unmount.
        let req = MdsReq::CloseSession { id };
        let close = self.pool.mds(&req);
        if tokio::time::timeout(Duration::from_secs(2), close).await.is_err() {
            tracing::warn!("MDS did not answer the session close; its session will expire");
        }
        self.pool.mds.close();
    }

    // ---- recalls -------------------------------------------------------

    /// The MDS recalls or invalidates something this client caches.
    pub async fn on_recall(&self, req: RecallReq) -> Result<RecallResp> {
        match req {
            RecallReq::Invalidate { ino, names } => {
                // Under a shared-write lease another writer published: the
                // kernel's pages of the file may be old.
                let pages = self.meta.mode(ino) == LeaseMode::SharedWrite;
                self.meta.invalidate(ino, &names);
                if let Some(f) = self.files.get(&ino).map(|f| f.clone()) {
                    f.forget_cached();
                }
                if names.is_empty() {
                    // Its default layout may have changed.
                    self.dirops.forget_reserved(ino);
                }
                self.tell_kernel(ino, names, pages).await;
                Ok(RecallResp::Done)
            }
            RecallReq::Degraded { ino, objs } => {
                if let Some(f) = self.files.get(&ino) {
                    f.add_stale(&objs);
                }
                Ok(RecallResp::Done)
            }
            RecallReq::Revoke { ino } if self.dirops.writable(ino) || self.meta.knows_dir(ino) => {
                // A directory: the changes made here under its write lease
                // go first; what is cached of it stays right, under the
                // read lease the MDS leaves this client.
                self.meta.demoted(ino);
                if let Some(n) = self.dirops.revoke(ino) {
                    self.dirops.wait(n).await;
                }
                Ok(RecallResp::Demoted)
            }
            RecallReq::Revoke { ino } => {
                let f = self.files.get(&ino).map(|f| f.clone());
                let mut res = Ok(());
                match f {
                    Some(f) => {
                        {
                            // No write buffers after this without a new lease.
                            let _g = f.gate.write().await;
                            self.meta.drop_ino(ino);
                        }
                        res = self.publish(&f).await;
                        f.forget_cached();
                    }
                    None => self.meta.drop_ino(ino),
                }
                self.tell_kernel(ino, Vec::new(), true).await;
                res.map(|_| RecallResp::Done)
            }
        }
    }

    async fn tell_kernel(&self, ino: u64, names: Vec<String>, data: bool) {
        let Some(k) = self.kernel.get().cloned() else {
            return;
        };
        let job = tokio::task::spawn_blocking(move || {
            for n in &names {
                k.forget_entry(ino, n);
            }
            k.forget_inode(ino, data);
        });
        if tokio::time::timeout(KERNEL_NOTICE_WAIT, job).await.is_err() {
            tracing::debug!(ino, "kernel notice still pending; answering the recall");
        }
    }

    // ---- metadata ------------------------------------------------------

    /// The kernel TTL for `a`: what is left of its lease.
    pub fn ttl(&self, ino: u64) -> Duration {
        self.meta.ttl(ino)
    }

    fn cache_on(&self) -> bool {
        self.lease_cache
    }

    /// Cache attributes granted under `granted`.
    fn keep(&self, snap: Snap, granted: u64, a: &Attr, mode: LeaseMode) {
        if self.cache_on() {
            self.meta.put_attr(snap, granted, a, mode);
        }
    }

    fn cached(&self, ino: u64) -> Option<(Attr, LeaseMode)> {
        if self.cache_on() {
            self.meta.attr(ino)
        } else {
            None
        }
    }

    /// Attributes as this client sees them: a size it wrote but has not
    /// yet published wins over the MDS's.
    fn overlay(&self, mut a: Attr) -> Attr {
        if let Some(f) = self.files.get(&a.ino) {
            if let Some(s) = f.local_size() {
                a.size = s;
            }
        }
        a
    }

    /// Directory attributes that came back with this client's own change.
    fn changed_dirs(&self, snap: Snap, dirs: &[Attr]) {
        for d in dirs {
            self.meta.refresh_attr(snap, d);
        }
    }

    pub async fn lookup(&self, parent: u64, name: &str) -> Result<Attr> {
        if self.cache_on() {
            match self.meta.dentry(parent, name) {
                Some(None) => return Err(Error::NotFound),
                Some(Some(ino)) => {
                    if let Some((a, _)) = self.meta.attr(ino) {
                        return Ok(self.overlay(a));
                    }
                }
                None => {}
            }
        }
        let snap = self.meta.snap();
        let (r, granted) = self.mds_leased(&MdsReq::Lookup { parent, name: name.to_string() }).await;
        match r {
            Ok(MdsResp::Attr(a)) if a.ino != 0 => {
                if self.cache_on() {
                    self.meta.put_dentry(snap, granted, parent, name, Some(a.ino));
                }
                self.keep(snap, granted, &a, LeaseMode::Read);
                Ok(self.overlay(a))
            }
            Ok(_) => Err(unexpected("Lookup")),
            Err(Error::NotFound) => {
                if self.cache_on() {
                    self.meta.put_dentry(snap, granted, parent, name, None);
                }
                Err(Error::NotFound)
            }
            Err(e) => Err(e),
        }
    }

    /// Kernel TTL for an entry: its directory's and its inode's leases,
    /// if this client holds `name` as `ino`.
    pub fn entry_ttl(&self, parent: u64, name: &str, ino: u64) -> Duration {
        if self.cache_on() && self.meta.dentry_is(parent, name, ino) {
            self.meta.ttl(ino)
        } else {
            Duration::ZERO
        }
    }

    /// Attributes: from the cache under a lease, else from the MDS.
    pub async fn getattr(&self, ino: u64) -> Result<Attr> {
        if let Some((a, _)) = self.cached(ino) {
            return Ok(self.overlay(a));
        }
        let snap = self.meta.snap();
        let (r, granted) = self.mds_leased(&MdsReq::GetAttr { ino }).await;
        match r? {
            MdsResp::Attr(a) if a.ino == ino => {
                self.keep(snap, granted, &a, LeaseMode::Read);
                Ok(self.overlay(a))
            }
            _ => Err(unexpected("GetAttr")),
        }
    }

    pub async fn setattr(&self, ino: u64, set: SetAttr) -> Result<Attr> {
        let file = self.files.get(&ino).map(|f| f.clone());
        if let Some(f) = &file {
            if set.size.is_some() || set.mtime.is_some() || set.atime.is_some() {
                // Data written before a truncate must land before it, and a
                // size/mtime published later must not undo an explicit time.
                self.flush_file(f).await?;
            }
        }
        let size = set.size;
        let snap = self.meta.snap();
        let a = match self.mds(&MdsReq::SetAttr { ino, set }).await {
            Ok(MdsResp::Attr(a)) => a,
            Ok(_) => return Err(unexpected("SetAttr")),
            Err(e) => {
                self.meta.forget_attr(ino);
                return Err(e);
            }
        };
        self.meta.refresh_attr(snap, &a);
        if let (Some(f), Some(s)) = (&file, size) {
            f.set_size(s, true);
        }
        Ok(self.overlay(a))
    }

    /// The file's state for one more open handle, made from `a` if this
    /// client has none. The MDS counted this open (`Open` with `first`, or
    /// `Create`); if another handle's state won the race to be made, that
    /// count is given back, so the MDS counts one open per state.
    fn file_state(&self, a: &Attr) -> Result<Arc<FileState>> {
        let layout = a.layout.clone().ok_or_else(|| Error::Io(format!("file {:#x} has no layout", a.ino)))?;
        layout.validate()?;
        let mut made = false;
        let f = self.files.entry(a.ino).or_insert_with(|| {
            made = true;
            Arc::new(FileState::new(a.ino, layout, a.size, &self.ctx))
        });
        // Counted while the map entry is held, so a release of another
        // handle cannot drop the state in between.
        f.opens.fetch_add(1, Ordering::AcqRel);
        let f = f.clone();
        if !made {
            self.send_close(a.ino);
        }
        Ok(f)
    }

    /// The state of a file this client already has open, with one more
    /// handle counted; `None` if it has none.
    fn reopen(&self, ino: u64) -> Option<Arc<FileState>> {
        let f = self.files.get(&ino)?;
        f.opens.fetch_add(1, Ordering::AcqRel);
        Some(f.clone())
    }

    /// Tell the MDS this client closed its last handle of `ino` (a file
    /// unlinked meanwhile is freed once no client has it open).
    fn send_close(&self, ino: u64) {
        // With the next batch of changes: closes come in bursts too.
        self.dirops.close(ino);
    }

    /// Send `req` to the MDS in the background; a failure is only logged
    /// (`what`), nothing waits for the answer.
    fn post(&self, req: MdsReq, what: &'static str) {
        let pool = self.pool.clone();
        let dirops = self.dirops.clone();
        tokio::spawn(async move {
            dirops.barrier().await;
            if let Err(e) = pool.mds(&req).await {
                tracing::debug!(?req, error = %e, "{what}");
            }
        });
    }

    fn new_handle(&self, f: &Arc<FileState>, append: bool, a: &Attr) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let times = (a.atime_ns, a.mtime_ns, a.ctime_ns);
        self.handles.insert(fh, Handle { file: f.clone(), append, read: Default::default(), times });
        fh
    }

    /// Take a lease on a file from the MDS (waiting while conflicting
    /// holders flush and release). `first`: this open is counted by the
    /// MDS until a `Close`. Mode `None`: no session, no lease.
    async fn take_lease(&self, ino: u64, write: Want, first: bool) -> Result<(Attr, LeaseMode, Vec<Degraded>)> {
        let snap = self.meta.snap();
        let req = MdsReq::Open { ino, write: write != Want::Read, first, exclusive: write == Want::Append };
        let (r, granted) = self.mds_leased(&req).await;
        match r? {
            MdsResp::Opened { attr, lease, degraded } if attr.ino == ino => {
                // The lease is recorded even with caching off: writes and
                // reads check it.
                self.meta.put_attr(snap, granted, &attr, lease);
                if let Some(f) = self.files.get(&ino) {
                    // Whoever wrote before us has flushed: their size counts.
                    f.set_size(attr.size, false);
                    f.add_stale(&degraded);
                }
                Ok((attr, lease, degraded))
            }
            _ => Err(unexpected("Open")),
        }
    }

    /// Open: close-to-open consistency. A file this client already has
    /// open, under a lease that suits, opens at once. Otherwise the MDS
    /// counts the open and grants a lease (recalling writers or readers in
    /// the way); the kernel keeps its pages if the lease this client held
    /// before was never recalled meanwhile.
    pub async fn open(&self, ino: u64, write: bool, append: bool) -> Result<Opened> {
        let want = Want::of(write, append);
        let held = self.meta.attr(ino).filter(|(a, m)| want.suits(*m) && a.kind == FileKind::File);
        if let Some((a, m)) = &held {
            if let Some(f) = self.reopen(ino) {
                let attr = self.overlay(a.clone());
                let keep = *m != LeaseMode::SharedWrite && !append;
                return Ok(Opened { fh: self.new_handle(&f, append, &attr), attr, keep_cache: keep, direct_io: !keep });
            }
        }
        let snap = self.meta.snap();
        let (a, mode, degraded) = self.take_lease(ino, want, true).await?;
        match a.kind {
            FileKind::File => {}
            kind => {
                self.send_close(ino);
                return Err(if kind == FileKind::Dir { Error::IsDir } else { Error::InvalidArgument("open of a symlink".into()) });
            }
        }
        let keep = held.is_some() && self.meta.quiet_since(snap, ino) && mode != LeaseMode::SharedWrite && !append;
        let f = self.file_state(&a)?;
        f.add_stale(&degraded);
        if !keep {
            f.set_size(a.size, false);
        }
        let attr = self.overlay(a);
        // Appends pick their own offset: the kernel's page cache and its
        // idea of the end of the file stay out of it.
        let direct_io = mode == LeaseMode::SharedWrite || append;
        Ok(Opened { fh: self.new_handle(&f, append, &attr), attr, keep_cache: keep, direct_io })
    }

    pub async fn create(&self, parent: u64, name: &str, mode: u32, uid: u32, gid: u32, exclusive: bool, append: bool) -> Result<Opened> {
        if let Some(r) = self.create_here(parent, name, mode, uid, gid, exclusive) {
            let a = r?;
            let f = self.file_state(&a)?;
            return Ok(Opened { fh: self.new_handle(&f, append, &a), attr: a, keep_cache: false, direct_io: append });
        }
        let req = MdsReq::Create { parent, name: name.to_string(), mode, uid, gid, exclusive };
        let snap = self.meta.snap();
        let (r, granted) = self.mds_leased(&req).await;
        let a = match r? {
            MdsResp::Changed { attr: Some(a), dirs, writable } if a.ino != 0 => {
                self.changed_dirs(snap, &dirs);
                self.writable(snap, granted, writable);
                a
            }
            _ => return Err(unexpected("Create")),
        };
        if a.kind != FileKind::File {
            return Err(Error::IsDir);
        }
        // The creator holds a write lease on the new file.
        self.meta.put_attr(snap, granted, &a, LeaseMode::Write);
        self.meta.local_entry(snap, parent, name, Some(a.ino), false);
        let f = self.file_state(&a)?;
        f.set_size(a.size, false);
        Ok(Opened { fh: self.new_handle(&f, append, &a), attr: a, keep_cache: false, direct_io: append })
    }

    /// A namespace change of this client's: the new inode's attributes.
    async fn change(&self, snap: Snap, req: MdsReq, what: &str) -> Result<Option<Attr>> {
        match self.mds(&req).await? {
            MdsResp::Changed { attr, dirs, .. } => {
                self.changed_dirs(snap, &dirs);
                Ok(attr)
            }
            MdsResp::Done => Ok(None),
            _ => Err(unexpected(what)),
        }
    }

    async fn made(&self, req: MdsReq, parent: u64, name: &str, what: &str) -> Result<Attr> {
        let snap = self.meta.snap();
        let a = self.change(snap, req, what).await?.filter(|a| a.ino != 0).ok_or_else(|| unexpected(what))?;
        self.meta.local_entry(snap, parent, name, Some(a.ino), false);
        Ok(a)
    }

    pub async fn mknod(&self, parent: u64, name: &str, mode: u32, uid: u32, gid: u32) -> Result<Attr> {
        if mode & libc::S_IFMT != libc::S_IFREG && mode & libc::S_IFMT != 0 {
            return Err(Error::NotPermitted("only regular files can be made with mknod".into()));
        }
        let req = MdsReq::Create { parent, name: name.to_string(), mode, uid, gid, exclusive: true };
        let a = self.made(req, parent, name, "Create").await?;
        // The MDS counts a create as an open; mknod leaves nothing open.
        self.send_close(a.ino);
        Ok(a)
    }

    /// The new directory comes leased to its maker, known to be empty.
    pub async fn mkdir(&self, parent: u64, name: &str, mode: u32, uid: u32, gid: u32) -> Result<Attr> {
        let snap = self.meta.snap();
        let req = MdsReq::Mkdir { parent, name: name.to_string(), mode, uid, gid };
        let (r, granted) = self.mds_leased(&req).await;
        match r? {
            MdsResp::Changed { attr: Some(a), dirs, writable } if a.ino != 0 => {
                self.changed_dirs(snap, &dirs);
                self.meta.local_entry(snap, parent, name, Some(a.ino), false);
                if self.cache_on() {
                    self.meta.put_attr(snap, granted, &a, LeaseMode::Read);
                    self.meta.new_dir(snap, granted, a.ino, parent);
                    self.writable(snap, granted, writable);
                }
                Ok(a)
            }
            _ => Err(unexpected("Mkdir")),
        }
    }

    pub async fn symlink(&self, parent: u64, name: &str, target: &str, uid: u32, gid: u32) -> Result<Attr> {
        let req = MdsReq::Symlink { parent, name: name.to_string(), target: target.to_string(), uid, gid };
        self.made(req, parent, name, "Symlink").await
    }

    pub async fn link(&self, ino: u64, newparent: u64, newname: &str) -> Result<Attr> {
        self.meta.forget_attr(ino);
        self.made(MdsReq::Link { ino, newparent, newname: newname.to_string() }, newparent, newname, "Link").await
    }

    /// The inode this client's cache says `name` in `dir` is.
    fn cached_child(&self, dir: u64, name: &str) -> Option<u64> {
        self.meta.dentry(dir, name).flatten()
    }

    pub async fn unlink(&self, parent: u64, name: &str) -> Result<()> {
        if let Some(r) = self.unlink_here(parent, name) {
            return r;
        }
        let child = self.cached_child(parent, name);
        let snap = self.meta.snap();
        let r = self.change(snap, MdsReq::Unlink { parent, name: name.to_string() }, "Unlink").await;
        self.meta.local_entry(snap, parent, name, None, r.is_err());
        if let Some(c) = child {
            self.meta.forget_attr(c);
        }
        r.map(|_| ())
    }

    pub async fn rmdir(&self, parent: u64, name: &str) -> Result<()> {
        let child = self.cached_child(parent, name);
        let snap = self.meta.snap();
        let r = self.change(snap, MdsReq::Rmdir { parent, name: name.to_string() }, "Rmdir").await;
        self.meta.local_entry(snap, parent, name, None, r.is_err());
        if let Some(c) = child {
            self.meta.drop_ino(c);
        }
        r.map(|_| ())
    }

    pub async fn rename(&self, parent: u64, name: &str, newparent: u64, newname: &str, flags: u32) -> Result<()> {
        let moved = self.cached_child(parent, name);
        let replaced = self.cached_child(newparent, newname);
        let req = MdsReq::Rename { parent, name: name.to_string(), newparent, newname: newname.to_string(), flags };
        let snap = self.meta.snap();
        let r = self.change(snap, req, "Rename").await;
        let ok = r.is_ok();
        self.meta.local_entry(snap, parent, name, None, !ok);
        self.meta.local_entry(snap, newparent, newname, moved, !ok || moved.is_none());
        for ino in [moved, replaced].into_iter().flatten() {
            // A moved directory's `..` changed; a replaced inode lost a link.
            self.meta.drop_ino(ino);
        }
        r.map(|_| ())
    }

    pub async fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        match self.mds(&MdsReq::Readlink { ino }).await? {
            MdsResp::Bytes(b) => Ok(b),
            _ => Err(unexpected("Readlink")),
        }
    }

    /// Entries after `cookie`, and the directory's parent.
    pub async fn readdir(&self, ino: u64, cookie: u64) -> Result<(Vec<DirEntry>, u64)> {
        if self.cache_on() {
            if let Some(l) = self.meta.listed(ino, cookie, READDIR_BATCH as usize) {
                return Ok((l.entries, l.parent));
            }
        }
        let snap = self.meta.snap();
        let (r, granted) = self.mds_leased(&MdsReq::Readdir { ino, cookie, max: READDIR_BATCH }).await;
        match r? {
            MdsResp::Dir { entries, parent, eof } => {
                if self.cache_on() {
                    self.meta.put_listing(snap, granted, ino, cookie, &entries, eof, parent);
                }
                Ok((entries, parent))
            }
            _ => Err(unexpected("Readdir")),
        }
    }

    /// Entries after `cookie` with their attributes, and the directory's
    /// parent.
    pub async fn readdirplus(&self, ino: u64, cookie: u64) -> Result<(Vec<(DirEntry, Attr)>, u64)> {
        if self.cache_on() {
            if let Some(l) = self.meta.listed(ino, cookie, READDIR_BATCH as usize) {
                let mut out = Vec::with_capacity(l.entries.len().min(READDIR_BATCH as usize));
                for e in l.entries {
                    match self.meta.attr(e.ino) {
                        Some((a, _)) => out.push((e, self.overlay(a))),
                        // Its lease was recalled: ask the MDS for the batch.
                        None => {
                            out.clear();
                            break;
                        }
                    }
                }
                if !out.is_empty() {
                    return Ok((out, l.parent));
                }
            }
        }
        let snap = self.meta.snap();
        let (r, granted) = self.mds_leased(&MdsReq::ReaddirPlus { ino, cookie, max: READDIR_BATCH }).await;
        match r? {
            MdsResp::DirPlus { entries, attrs, parent, eof } if entries.len() == attrs.len() => {
                if self.cache_on() {
                    for a in &attrs {
                        self.meta.put_attr(snap, granted, a, LeaseMode::Read);
                    }
                    self.meta.put_listing(snap, granted, ino, cookie, &entries, eof, parent);
                }
                let pairs = entries.into_iter().zip(attrs).map(|(e, a)| (e, self.overlay(a))).collect();
                Ok((pairs, parent))
            }
            _ => Err(unexpected("ReaddirPlus")),
        }
    }

    pub async fn statfs(&self) -> Result<Statfs> {
        match self.mds(&MdsReq::Statfs).await? {
            MdsResp::Statfs(s) => Ok(s),
            _ => Err(unexpected("Statfs")),
        }
    }

    /// The attributes cached under a lease say `ino` has no xattrs.
    fn known_without_xattrs(&self, ino: u64) -> bool {
        self.cached(ino).is_some_and(|(a, _)| a.xattrs == 0)
    }

    pub async fn getxattr(&self, ino: u64, name: &str) -> Result<Vec<u8>> {
        if self.known_without_xattrs(ino) {
            return Err(Error::NoXattr);
        }
        match self.mds(&MdsReq::GetXattr { ino, name: name.to_string() }).await? {
            MdsResp::Bytes(b) => Ok(b),
            _ => Err(unexpected("GetXattr")),
        }
    }

    pub async fn setxattr(&self, ino: u64, name: &str, value: Vec<u8>, flags: u32) -> Result<()> {
        let r = self.change(self.meta.snap(), MdsReq::SetXattr { ino, name: name.to_string(), value, flags }, "SetXattr").await;
        self.meta.forget_attr(ino);
        r.map(|_| ())
    }

    pub async fn listxattr(&self, ino: u64) -> Result<Vec<String>> {
        if self.known_without_xattrs(ino) {
            return Ok(Vec::new());
        }
        match self.mds(&MdsReq::ListXattr { ino }).await? {
            MdsResp::Names(n) => Ok(n),
            _ => Err(unexpected("ListXattr")),
        }
    }

    pub async fn removexattr(&self, ino: u64, name: &str) -> Result<()> {
        let r = self.change(self.meta.snap(), MdsReq::RemoveXattr { ino, name: name.to_string() }, "RemoveXattr").await;
        self.meta.forget_attr(ino);
        r.map(|_| ())
    }

    // ---- data ----------------------------------------------------------

    fn handle_file(&self, fh: u64) -> Result<Arc<FileState>> {
        self.handles.get(&fh).map(|h| h.file.clone()).ok_or(Error::Stale)
    }

    fn handle_appends(&self, fh: u64) -> bool {
        self.handles.get(&fh).is_some_and(|h| h.append)
    }

    /// Writes need a write lease: the holder buffers and owns the size. A
    /// recalled one is taken again first (the MDS makes readers elsewhere
    /// drop their caches). Without a session, writes go on unleased.
    /// An `O_APPEND` handle writes at the end of the file, under a write
    /// lease no other client shares (the end is then known here).
    pub async fn write(&self, fh: u64, off: u64, data: Bytes) -> Result<u32> {
        let f = self.handle_file(fh)?;
        if self.dirops.unapplied(f.ino) {
            // No objects for a file the MDS does not know yet.
            self.dirops.barrier().await;
        }
        let want = Want::of(true, self.handle_appends(fh));
        let n = data.len() as u32;
        let mut pause = Duration::ZERO;
        loop {
            {
                let _g = f.gate.read().await;
                if want.suits(self.meta.mode(f.ino)) {
                    let at = match want {
                        Want::Append => f.append_at(n as u64)?,
                        _ => off,
                    };
                    f.write(&self.ctx, at, data).await?;
                    if at != off {
                        // The kernel counted on another offset: its idea
                        // of the size is wrong now.
                        self.forget_kernel_attrs(f.ino);
                    }
                    return Ok(n);
                }
            }
            if !pause.is_zero() {
                // Granted but not kept (a notice crossed the reply, or the
                // session is being renewed): do not spin on the MDS.
                tokio::time::sleep(pause).await;
            }
            pause = (pause * 2).clamp(Duration::from_millis(1), Duration::from_millis(100));
            let (_, mode, _) = self.take_lease(f.ino, want, false).await?;
            if mode == LeaseMode::None {
                let _g = f.gate.read().await;
                f.write(&self.ctx, off, data).await?;
                return Ok(n);
            }
        }
    }

    /// After a read, set the access time as Linux's default `relatime`
    /// does: when it is not newer than the last change, or a day old. The
    /// kernel leaves atime to FUSE file systems. In the background: a close
    /// does not wait for it.
    fn touch_atime(&self, ino: u64, (atime, mtime, ctime): (i64, i64, i64)) {
        const DAY_NS: i64 = 86_400 * 1_000_000_000;
        let now = aifs_common::time::now_ns();
        if atime > mtime && atime > ctime && now - atime < DAY_NS {
            return;
        }
        self.post(MdsReq::Accessed { ino }, "access time not set");
        self.meta.forget_attr(ino);
    }

    fn forget_kernel_attrs(&self, ino: u64) {
        if let Some(k) = self.kernel.get().cloned() {
            tokio::task::spawn_blocking(move || k.forget_inode(ino, false));
        }
    }

    pub async fn read(&self, fh: u64, off: u64, len: u32) -> Result<Bytes> {
        let f = self.handle_file(fh)?;
        if let Some(h) = self.handles.get(&fh) {
            h.read.store(true, Ordering::Relaxed);
        }
        let mut mode = self.meta.mode(f.ino);
        if mode == LeaseMode::None {
            // Recalled since the open: a writer elsewhere flushes first.
            mode = self.take_lease(f.ino, Want::Read, false).await?.1;
        }
        if f.has_pending() {
            // Read your own writes: land buffered data first.
            f.drain(&self.ctx).await?;
        }
        if mode == LeaseMode::SharedWrite {
            return prefetch::read_direct(&self.ctx, &f, off, len as u64, f.size()).await;
        }
        prefetch::read(&self.ctx, &f, off, len as u64, f.size()).await
    }

    /// Land buffered data and publish size and mtime. A write error stays
    /// for the application's next flush, fsync or close.
    async fn publish(&self, f: &Arc<FileState>) -> Result<()> {
        f.drain(&self.ctx).await?;
        if let Some((size, mtime_ns)) = f.take_meta() {
            let req = MdsReq::UpdateSize { ino: f.ino, size, mtime_ns };
            let snap = self.meta.snap();
            match self.mds(&req).await {
                // The writer's own cached attributes follow what it published.
                Ok(MdsResp::Attr(a)) => self.meta.refresh_attr(snap, &a),
                Ok(_) => return Err(unexpected("UpdateSize")),
                Err(e) => {
                    f.restore_meta(size, mtime_ns);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Land buffered data and publish size and mtime; report the first
    /// write error since the last report.
    async fn flush_file(&self, f: &Arc<FileState>) -> Result<()> {
        let r = self.publish(f).await;
        if let Some(e) = f.take_error() {
            return Err(e);
        }
        r
    }

    /// A close of one descriptor by `lock_owner`: POSIX drops every lock
    /// the owner holds on the file, whichever descriptor took it.
    pub async fn flush(&self, fh: u64, lock_owner: u64) -> Result<()> {
        let f = self.handle_file(fh)?;
        let r = self.flush_file(&f).await;
        self.unlock_owner(f.ino, lock_owner).await?;
        r
    }

    /// Release `owner`'s locks on `ino`, if it ever took one here.
    pub async fn unlock_owner(&self, ino: u64, owner: u64) -> Result<()> {
        if !self.lockers.contains_key(&(ino, owner)) {
            return Ok(());
        }
        let session = self.meta.session();
        let req = MdsReq::SetLock { ino, owner, start: 0, end: u64::MAX, kind: LockKind::Unlock, pid: 0, session };
        self.mds(&req).await?;
        self.lockers.remove(&(ino, owner));
        if let Ok(mut t) = self.held_locks.lock() {
            t.unlock(ino, 0, owner, 0, u64::MAX);
        }
        Ok(())
    }

    /// `F_GETLK`: the lock in the way of `[start, end]`, if any.
    pub async fn getlk(&self, ino: u64, owner: u64, start: u64, end: u64, write: bool, pid: u32) -> Result<Option<LockInfo>> {
        let session = self.meta.session();
        match self.mds(&MdsReq::GetLock { ino, owner, start, end, write, pid, session }).await? {
            MdsResp::Lock(l) => Ok(l),
            _ => Err(unexpected("GetLock")),
        }
    }

    /// `F_SETLK` / `F_SETLKW` (and `flock`). A waiting lock asks again
    /// with a growing pause until it is granted.
    pub async fn setlk(&self, ino: u64, owner: u64, start: u64, end: u64, kind: LockKind, pid: u32, wait: bool) -> Result<()> {
        let mut pause = LOCK_RETRY_MIN;
        loop {
            if kind != LockKind::Unlock {
                self.lockers.insert((ino, owner), ());
            }
            let session = self.meta.session();
            match self.mds(&MdsReq::SetLock { ino, owner, start, end, kind, pid, session }).await {
                Ok(_) => {
                    if let Ok(mut t) = self.held_locks.lock() {
                        match kind {
                            LockKind::Unlock => t.unlock(ino, 0, owner, start, end),
                            k => {
                                let l = aifs_common::locks::Lock { session: 0, owner, start, end, write: k == LockKind::Write, pid };
                                t.force(ino, l);
                            }
                        }
                    }
                    return Ok(());
                }
                Err(Error::WouldBlock(_)) if wait => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(LOCK_RETRY_MAX);
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub async fn fsync(&self, fh: u64) -> Result<()> {
        let f = self.handle_file(fh)?;
        // The file's name too, if it was made under a directory lease.
        self.dirops.barrier().await;
        self.flush_file(&f).await?;
        f.commit(&self.ctx).await
    }

    pub async fn release(&self, fh: u64) -> Result<()> {
        let Some((_, h)) = self.handles.remove(&fh) else {
            return Ok(());
        };
        let f = h.file;
        if h.read.load(Ordering::Relaxed) {
            self.touch_atime(f.ino, h.times);
        }
        let res = self.flush_file(&f).await;
        if f.opens.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Keep the state while anything is unpublished: the next open,
            // close or the unmount publishes it.
            let gone = self.files.remove_if(&f.ino, |_, v| v.opens.load(Ordering::Acquire) == 0 && !v.has_pending() && !v.meta_dirty());
            if gone.is_some() {
                // Nothing of it is buffered: the MDS lowers the write lease
                // to a read lease at this close (this client may think it
                // holds less than the MDS says, never more).
                self.meta.downgrade(f.ino);
                self.send_close(f.ino);
            }
        }
        res
    }
}
