//! `ClientFs`: the file system as async operations, with no knowledge of
//! FUSE (fuse.rs is the thin glue). Metadata goes to the MDS; file data
//! goes through the write-behind and read-ahead pipelines to the OSDs.
use crate::config::ClientConfig;
use crate::data::prefetch;
use crate::data::writeback::{DataCtx, FileState};
use crate::pool::Pool;
use aifs_common::proto::mds::{Attr, DirEntry, FileKind, MdsReq, MdsResp, SetAttr, Statfs};
use aifs_common::rpc::{self, Identity};
use aifs_common::{Error, Result};
use bytes::Bytes;
use dashmap::DashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// How often the background flusher looks for stale partial units.
const FLUSH_TICK: Duration = Duration::from_secs(1);
/// A partial stripe unit untouched this long is shipped (as the kernel's
/// dirty_expire does for page cache).
const STALE_UNIT: Duration = Duration::from_secs(5);

/// Entries fetched per readdir call to the MDS.
const READDIR_BATCH: u32 = 512;

/// An open file handle.
struct Handle {
    file: Arc<FileState>,
}

pub struct ClientFs {
    pub pool: Arc<Pool>,
    ctx: Arc<DataCtx>,
    files: DashMap<u64, Arc<FileState>>,
    handles: DashMap<u64, Handle>,
    next_fh: AtomicU64,
    session: AtomicU64,
    pub attr_ttl: Duration,
    name: String,
    /// Directory attributes the MDS sent, kept for the same fixed TTL the
    /// kernel is given. The kernel drops a directory's attributes after
    /// every change in it and asks again before the next permission check;
    /// the MDS's reply to the change already carried them. File attributes
    /// are not kept: size and link count come fresh from the MDS.
    attrs: TtlCache<Attr>,
    /// Inodes the MDS last said have no extended attributes, and when:
    /// within the attribute TTL their `getxattr` is answered here.
    no_xattrs: TtlCache<()>,
}

/// Entries per inode that count only while younger than the TTL; a TTL of
/// zero keeps nothing. Bounded: past `TTL_CACHE_MAX` entries, stale ones
/// are swept on insert.
struct TtlCache<V> {
    map: DashMap<u64, (V, Instant)>,
    ttl: Duration,
}

/// Size at which a `TtlCache` sweeps out entries older than its TTL.
const TTL_CACHE_MAX: usize = 100_000;

impl<V: Clone> TtlCache<V> {
    fn new(ttl: Duration) -> Self {
        TtlCache { map: DashMap::new(), ttl }
    }

    fn insert(&self, ino: u64, v: V) {
        if self.ttl.is_zero() {
            return;
        }
        if self.map.len() > TTL_CACHE_MAX {
            let ttl = self.ttl;
            self.map.retain(|_, (_, t)| t.elapsed() < ttl);
        }
        self.map.insert(ino, (v, Instant::now()));
    }

    fn get(&self, ino: u64) -> Option<V> {
        self.map.get(&ino).filter(|e| e.1.elapsed() < self.ttl).map(|e| e.0.clone())
    }

    fn remove(&self, ino: u64) {
        self.map.remove(&ino);
    }
}

fn unexpected(what: &str) -> Error {
    Error::Protocol(format!("unexpected MDS reply to {what}"))
}

impl ClientFs {
    /// Connect to the cluster (QUIC + mTLS) and open a session.
    pub async fn connect(cfg: &ClientConfig) -> Result<Arc<ClientFs>> {
        let id = Identity::load(&cfg.tls)?;
        let endpoint = rpc::client_endpoint(&id, &cfg.transport)?;
        let pool = Arc::new(Pool::new(endpoint, cfg.mds));
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
            session: AtomicU64::new(0),
            attr_ttl: Duration::from_millis(cfg.attr_ttl_ms),
            name: cfg.name.clone(),
            attrs: TtlCache::new(Duration::from_millis(cfg.attr_ttl_ms)),
            no_xattrs: TtlCache::new(Duration::from_millis(cfg.attr_ttl_ms)),
        });
        let hb = fs.open_session().await?;
        let weak = Arc::downgrade(&fs);
        tokio::spawn(async move {
            // Background flusher: partial units do not sit in memory forever,
            // and all of them go when a writer runs out of budget.
            loop {
                let Some(ctx) = weak.upgrade().map(|fs| fs.ctx.clone()) else { return };
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
        fs.pool.refresh_osds().await?;
        let weak = Arc::downgrade(&fs);
        tokio::spawn(async move {
            let period = Duration::from_millis(hb.clamp(200, 10_000));
            loop {
                tokio::time::sleep(period).await;
                let Some(fs) = weak.upgrade() else { return };
                let id = fs.session.load(Ordering::Relaxed);
                match fs.pool.mds(&MdsReq::SessionHeartbeat { id }).await {
                    Ok(_) => {}
                    Err(Error::Stale) => {
                        tracing::info!("session unknown to the MDS (restart or expiry); opening a new one");
                        let _ = fs.open_session().await;
                    }
                    Err(e) => tracing::warn!(error = %e, "session heartbeat failed"),
                }
            }
        });
        Ok(fs)
    }

    async fn open_session(&self) -> Result<u64> {
        match self.pool.mds(&MdsReq::OpenSession { name: self.name.clone() }).await? {
            MdsResp::Session { id, heartbeat_ms } => {
                self.session.store(id, Ordering::Relaxed);
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
        let id = self.session.load(Ordering::Relaxed);
        // An MDS that is gone must not hold up the unmount.
        let req = MdsReq::CloseSession { id };
        let close = self.pool.mds(&req);
        if tokio::time::timeout(Duration::from_secs(2), close).await.is_err() {
            tracing::warn!("MDS did not answer the session close; its session will expire");
        }
        self.pool.mds.close();
    }

    async fn attr_req(&self, req: MdsReq, what: &str) -> Result<Attr> {
        match self.pool.mds(&req).await? {
            MdsResp::Attr(a) | MdsResp::Changed { attr: Some(a), .. } if a.ino == 0 => Err(unexpected(what)),
            MdsResp::Attr(a) => Ok(self.overlay(self.remember(a))),
            MdsResp::Changed { attr: Some(a), dirs } => {
                for d in dirs {
                    self.remember(d);
                }
                Ok(self.overlay(self.remember(a)))
            }
            _ => Err(unexpected(what)),
        }
    }

    fn remember(&self, a: Attr) -> Attr {
        if a.xattrs == 0 {
            self.no_xattrs.insert(a.ino, ());
        } else {
            self.no_xattrs.remove(a.ino);
        }
        if a.kind == FileKind::Dir {
            self.attrs.insert(a.ino, a.clone());
        }
        a
    }

    fn forget(&self, ino: u64) {
        self.attrs.remove(ino);
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

    pub async fn lookup(&self, parent: u64, name: &str) -> Result<Attr> {
        self.attr_req(MdsReq::Lookup { parent, name: name.to_string() }, "Lookup").await
    }

    /// Attributes, from the cache while they are younger than the TTL.
    pub async fn getattr(&self, ino: u64) -> Result<Attr> {
        if let Some(a) = self.attrs.get(ino) {
            return Ok(self.overlay(a));
        }
        self.fresh_attr(ino).await
    }

    /// Attributes straight from the MDS (open: close-to-open consistency).
    async fn fresh_attr(&self, ino: u64) -> Result<Attr> {
        self.attr_req(MdsReq::GetAttr { ino }, "GetAttr").await
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
        let a = match self.pool.mds(&MdsReq::SetAttr { ino, set }).await {
            Ok(MdsResp::Attr(a)) => self.remember(a),
            Ok(_) => return Err(unexpected("SetAttr")),
            Err(e) => {
                self.forget(ino);
                return Err(e);
            }
        };
        if let (Some(f), Some(s)) = (&file, size) {
            f.set_size(s, true);
        }
        Ok(self.overlay(a))
    }

    fn file_state(&self, a: &Attr) -> Result<Arc<FileState>> {
        let layout = a.layout.clone().ok_or_else(|| Error::Io(format!("file {:#x} has no layout", a.ino)))?;
        layout.validate()?;
        let f = self.files.entry(a.ino).or_insert_with(|| Arc::new(FileState::new(a.ino, layout, a.size, &self.ctx)));
        // Counted while the map entry is held, so a release of another
        // handle cannot drop the state in between.
        f.opens.fetch_add(1, Ordering::AcqRel);
        let f = f.clone();
        // Close-to-open: a fresh open learns the size the MDS holds now.
        f.set_size(a.size, false);
        Ok(f)
    }

    fn new_handle(&self, f: &Arc<FileState>) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.insert(fh, Handle { file: f.clone() });
        fh
    }

    pub async fn open(&self, ino: u64) -> Result<(u64, Attr)> {
        let a = self.fresh_attr(ino).await?;
        match a.kind {
            FileKind::File => {}
            FileKind::Dir => return Err(Error::IsDir),
            FileKind::Symlink => return Err(Error::InvalidArgument("open of a symlink".into())),
        }
        let f = self.file_state(&a)?;
        Ok((self.new_handle(&f), a))
    }

    pub async fn create(&self, parent: u64, name: &str, mode: u32, uid: u32, gid: u32, exclusive: bool) -> Result<(u64, Attr)> {
        let req = MdsReq::Create { parent, name: name.to_string(), mode, uid, gid, exclusive };
        let a = self.attr_req(req, "Create").await?;
        if a.kind != FileKind::File {
            return Err(Error::IsDir);
        }
        let f = self.file_state(&a)?;
        Ok((self.new_handle(&f), a))
    }

    pub async fn mknod(&self, parent: u64, name: &str, mode: u32, uid: u32, gid: u32) -> Result<Attr> {
        if mode & libc::S_IFMT != libc::S_IFREG && mode & libc::S_IFMT != 0 {
            return Err(Error::NotPermitted("only regular files can be made with mknod".into()));
        }
        let req = MdsReq::Create { parent, name: name.to_string(), mode, uid, gid, exclusive: true };
        self.attr_req(req, "Create").await
    }

    pub async fn mkdir(&self, parent: u64, name: &str, mode: u32, uid: u32, gid: u32) -> Result<Attr> {
        self.attr_req(MdsReq::Mkdir { parent, name: name.to_string(), mode, uid, gid }, "Mkdir").await
    }

    pub async fn symlink(&self, parent: u64, name: &str, target: &str, uid: u32, gid: u32) -> Result<Attr> {
        let req = MdsReq::Symlink { parent, name: name.to_string(), target: target.to_string(), uid, gid };
        self.attr_req(req, "Symlink").await
    }

    pub async fn link(&self, ino: u64, newparent: u64, newname: &str) -> Result<Attr> {
        self.attr_req(MdsReq::Link { ino, newparent, newname: newname.to_string() }, "Link").await
    }

    async fn done(&self, req: MdsReq) -> Result<()> {
        match self.pool.mds(&req).await? {
            MdsResp::Done => Ok(()),
            MdsResp::Changed { dirs, .. } => {
                for d in dirs {
                    self.remember(d);
                }
                Ok(())
            }
            _ => Err(Error::Protocol("unexpected MDS reply".into())),
        }
    }

    pub async fn unlink(&self, parent: u64, name: &str) -> Result<()> {
        self.done(MdsReq::Unlink { parent, name: name.to_string() }).await
    }

    pub async fn rmdir(&self, parent: u64, name: &str) -> Result<()> {
        self.done(MdsReq::Rmdir { parent, name: name.to_string() }).await
    }

    pub async fn rename(&self, parent: u64, name: &str, newparent: u64, newname: &str, flags: u32) -> Result<()> {
        let req = MdsReq::Rename { parent, name: name.to_string(), newparent, newname: newname.to_string(), flags };
        self.done(req).await
    }

    pub async fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        match self.pool.mds(&MdsReq::Readlink { ino }).await? {
            MdsResp::Bytes(b) => Ok(b),
            _ => Err(unexpected("Readlink")),
        }
    }

    /// Entries after `cookie`, and the directory's parent.
    pub async fn readdir(&self, ino: u64, cookie: u64) -> Result<(Vec<DirEntry>, u64)> {
        match self.pool.mds(&MdsReq::Readdir { ino, cookie, max: READDIR_BATCH }).await? {
            MdsResp::Dir { entries, parent, .. } => Ok((entries, parent)),
            _ => Err(unexpected("Readdir")),
        }
    }

    /// Entries after `cookie` with their attributes, and the directory's
    /// parent.
    pub async fn readdirplus(&self, ino: u64, cookie: u64) -> Result<(Vec<(DirEntry, Attr)>, u64)> {
        match self.pool.mds(&MdsReq::ReaddirPlus { ino, cookie, max: READDIR_BATCH }).await? {
            MdsResp::DirPlus { entries, attrs, parent, .. } if entries.len() == attrs.len() => {
                let pairs = entries
                    .into_iter()
                    .zip(attrs)
                    .map(|(e, a)| {
                        let a = self.overlay(self.remember(a));
                        (e, a)
                    })
                    .collect();
                Ok((pairs, parent))
            }
            _ => Err(unexpected("ReaddirPlus")),
        }
    }

    pub async fn statfs(&self) -> Result<Statfs> {
        match self.pool.mds(&MdsReq::Statfs).await? {
            MdsResp::Statfs(s) => Ok(s),
            _ => Err(unexpected("Statfs")),
        }
    }

    fn known_without_xattrs(&self, ino: u64) -> bool {
        self.no_xattrs.get(ino).is_some()
    }

    pub async fn getxattr(&self, ino: u64, name: &str) -> Result<Vec<u8>> {
        if self.known_without_xattrs(ino) {
            return Err(Error::NoXattr);
        }
        match self.pool.mds(&MdsReq::GetXattr { ino, name: name.to_string() }).await? {
            MdsResp::Bytes(b) => Ok(b),
            _ => Err(unexpected("GetXattr")),
        }
    }

    pub async fn setxattr(&self, ino: u64, name: &str, value: Vec<u8>, flags: u32) -> Result<()> {
        self.no_xattrs.remove(ino);
        self.done(MdsReq::SetXattr { ino, name: name.to_string(), value, flags }).await
    }

    pub async fn listxattr(&self, ino: u64) -> Result<Vec<String>> {
        if self.known_without_xattrs(ino) {
            return Ok(Vec::new());
        }
        match self.pool.mds(&MdsReq::ListXattr { ino }).await? {
            MdsResp::Names(n) => Ok(n),
            _ => Err(unexpected("ListXattr")),
        }
    }

    pub async fn removexattr(&self, ino: u64, name: &str) -> Result<()> {
        self.done(MdsReq::RemoveXattr { ino, name: name.to_string() }).await
    }

    fn handle_file(&self, fh: u64) -> Result<Arc<FileState>> {
        self.handles.get(&fh).map(|h| h.file.clone()).ok_or(Error::Stale)
    }

    pub async fn write(&self, fh: u64, off: u64, data: Bytes) -> Result<u32> {
        let f = self.handle_file(fh)?;
        let n = data.len() as u32;
        f.write(&self.ctx, off, data).await?;
        Ok(n)
    }

    pub async fn read(&self, fh: u64, off: u64, len: u32) -> Result<Bytes> {
        let f = self.handle_file(fh)?;
        if f.has_pending() {
            // Read your own writes: land buffered data first.
            f.drain(&self.ctx).await?;
        }
        prefetch::read(&self.ctx, &f, off, len as u64, f.size()).await
    }

    /// Land buffered data and publish size and mtime; report the first
    /// write error since the last report.
    async fn flush_file(&self, f: &Arc<FileState>) -> Result<()> {
        f.drain(&self.ctx).await?;
        if let Some(e) = f.take_error() {
            return Err(e);
        }
        if let Some((size, mtime_ns)) = f.take_meta() {
            let req = MdsReq::UpdateSize { ino: f.ino, size, mtime_ns };
            if let Err(e) = self.pool.mds(&req).await {
                f.restore_meta(size, mtime_ns);
                return Err(e);
            }
        }
        Ok(())
    }

    pub async fn flush(&self, fh: u64) -> Result<()> {
        let f = self.handle_file(fh)?;
        self.flush_file(&f).await
    }

    pub async fn fsync(&self, fh: u64) -> Result<()> {
        let f = self.handle_file(fh)?;
        self.flush_file(&f).await?;
        f.commit(&self.ctx).await
    }

    pub async fn release(&self, fh: u64) -> Result<()> {
        let Some((_, h)) = self.handles.remove(&fh) else {
            return Ok(());
        };
        let f = h.file;
        let res = self.flush_file(&f).await;
        if f.opens.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Keep the state while anything is unpublished: the next open,
            // close or the unmount publishes it.
            self.files.remove_if(&f.ino, |_, v| v.opens.load(Ordering::Acquire) == 0 && !v.has_pending() && !v.meta_dirty());
        }
        res
    }
}
