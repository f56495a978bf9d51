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
use aifs_common::cap::Cap;
use aifs_common::certs::Role;
use aifs_common::proto::mds::{Attr, Degraded, DirEntry, DirOp, FileKind, HeldLock, LeaseMode, LockInfo, LockKind, MdsReq, MdsResp, RecallReq, RecallResp, SetAttr, Statfs, Writable, RESERVE_BATCH};
use aifs_common::perm::{self, Perms};
use aifs_common::rpc::{self, Identity, Peer, Service};
use aifs_common::{Error, InodeId, Result, SessionId};
use bytes::Bytes;
use dashmap::DashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, Semaphore};

mod files;
mod io;
mod locks;
mod names;
mod recall;
mod session;
mod statahead;


/// How often the background flusher looks for stale partial units.
const FLUSH_TICK: Duration = Duration::from_secs(1);
/// A partial stripe unit untouched this long is shipped (as the kernel's
/// dirty_expire does for page cache).
const STALE_UNIT: Duration = Duration::from_secs(5);

/// A directory no create has taken a reserved inode number from for this
/// long gives its numbers back (dirops.rs, `give_back_idle`).
const IDLE_RESERVED: Duration = Duration::from_secs(30);

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
    fn forget_entry(&self, parent: InodeId, name: &str);
    /// Forget `ino`'s attributes, and with `data` its cached pages.
    fn forget_inode(&self, ino: InodeId, data: bool);
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

/// Whether a publish of a file's size waits for one already on its way.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Others {
    /// It waits: a recall, fsync, truncate or unmount promises that the
    /// size is at the MDS when it returns (a recall answered sooner lets
    /// the next writer start from the old end of the file).
    Wait,
    /// It does not: a close (FLUSH). A child's `exec` closes every
    /// descriptor it inherited, each a FLUSH here; one that waited on a
    /// publish held up by an unreachable MDS would hold up the exec, even
    /// of the MDS itself. The size gets there anyway: the publish on its
    /// way was started by a recall or fsync of this file, and the RELEASE
    /// of the last descriptor waits for it before the lease is lowered.
    Pass,
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

/// A handle this client gave the kernel for an open file: a key of
/// `ClientFs`'s handle table, meaningful to this mount only.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct FileHandle(pub u64);

impl From<fuser::FileHandle> for FileHandle {
    fn from(fh: fuser::FileHandle) -> Self {
        FileHandle(fh.0)
    }
}

impl From<FileHandle> for fuser::FileHandle {
    fn from(fh: FileHandle) -> Self {
        fuser::FileHandle(fh.0)
    }
}

/// How an open was answered.
pub struct Opened {
    pub fh: FileHandle,
    pub attr: Attr,
    /// The kernel's cached pages of the file are still good.
    pub keep_cache: bool,
    /// Several clients write the file: the kernel must not cache its pages.
    pub direct_io: bool,
}

pub struct ClientFs {
    pub pool: Arc<Pool>,
    ctx: Arc<DataCtx>,
    files: DashMap<InodeId, Arc<FileState>>,
    handles: DashMap<FileHandle, Handle>,
    next_fh: AtomicU64,
    name: String,
    pub meta: MetaCache,
    lease_cache: bool,
    /// Take directories' write leases (config `dir_leases`).
    dir_leases: bool,
    /// Session term, learned when the session opens.
    term_ms: AtomicU64,
    /// What this node's root acts as at the MDS, if squashed (told at
    /// session open): what the client answers itself is checked for it.
    root_squash: std::sync::Mutex<Option<(u32, u32)>>,
    kernel: OnceLock<Arc<dyn KernelCache>>,
    /// Woken when a new MDS connection needs the session bound to it.
    rebind: Notify,
    /// (inode, lock owner) pairs that took a lock through this client: a
    /// close by that owner releases its locks at the MDS.
    lockers: DashMap<(InodeId, u64), ()>,
    /// The locks this client holds (as the MDS granted them; session 0),
    /// to take them again from an MDS that restarted.
    held_locks: std::sync::Mutex<aifs_common::locks::LockTable>,
    /// Changes made under directories' write leases, on their way to the
    /// MDS (dirops.rs).
    dirops: Arc<DirOps>,
    /// Directories whose lookups keep missing the cache (statahead.rs).
    statahead: statahead::Statahead,
    /// What the mount counts (metrics.rs); the data paths hold it too.
    pub metrics: Arc<crate::metrics::ClientMetrics>,
}

fn unexpected(what: &str) -> Error {
    Error::Protocol(format!("unexpected MDS reply to {what}"))
}

impl ClientFs {
    /// One MDS request, after every change this client made under a
    /// directory's write lease reached the MDS (dirops.rs, "Order").
    async fn mds(&self, req: &MdsReq) -> Result<MdsResp> {
        self.dirops.barrier().await;
        self.pool.mds(req).await
    }

    /// `mds`, with the session the reply's leases were granted under.
    async fn mds_leased(&self, req: &MdsReq) -> (Result<MdsResp>, Option<SessionId>) {
        self.dirops.barrier().await;
        self.pool.mds_leased(req).await
    }
}
