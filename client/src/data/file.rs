//! The state of one open file on this client (DESIGN.md, "Data"): its
//! write-behind buffers and ships (driven by writeback.rs), its read-ahead
//! window (driven by prefetch.rs), the replicas it must not read, and the
//! size and mtime it owes the MDS. Both pipelines work on this state and
//! neither knows the other: a write bumps `generation`, which is what makes
//! read-ahead drop units fetched before it.
use super::cap::CapSlot;
use crate::dirops::DirOps;
use crate::pool::Pool;
use aifs_common::cap::Cap;
use aifs_common::proto::mds::{Degraded, MdsReq, MdsResp};
use aifs_common::{Error, InodeId, Layout, OsdId, Result};
use bytes::{Bytes, BytesMut};
use futures::future::{BoxFuture, Shared};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Budget permits are counted in KiB.
pub(super) const BUDGET_UNIT: usize = 1024;

/// What every file's data path shares.
pub struct DataCtx {
    pub pool: Arc<Pool>,
    /// Changes made under directories' write leases, queued for the MDS: a
    /// capability is renewed only for a file the MDS knows.
    pub dirops: Arc<DirOps>,
    pub budget: Arc<Semaphore>,
    pub budget_kib: usize,
    pub write_window: usize,
    pub max_buffered_units: usize,
    pub readahead_units: usize,
    /// Rung when a writer finds the budget spent: the flusher then ships
    /// every file's buffered units, not only stale ones.
    pub pressure: tokio::sync::Notify,
    /// Write-back and read-ahead bytes are counted here.
    pub metrics: Arc<crate::metrics::ClientMetrics>,
}

pub(super) struct UnitBuf {
    pub(super) data: BytesMut,
    /// Sorted, disjoint dirty ranges within the unit.
    pub(super) ranges: Vec<(u64, u64)>,
    /// This buffer's share of the global memory budget.
    pub(super) permit: Option<OwnedSemaphorePermit>,
    /// When the unit was first dirtied: units left partial this long are
    /// shipped by the background flusher.
    pub(super) since: Instant,
}

impl UnitBuf {
    pub(super) fn add(&mut self, start: u64, end: u64) {
        self.ranges.push((start, end));
        self.ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(self.ranges.len());
        for &(s, e) in &self.ranges {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        self.ranges = merged;
    }
}

/// One unit's latest ship: a future any number of waiters can await, and a
/// flag the task sets when it has finished.
#[derive(Clone)]
pub(super) struct Ship {
    pub(super) fut: Shared<BoxFuture<'static, ()>>,
    pub(super) done: Arc<AtomicBool>,
}

impl Ship {
    pub(super) fn finished(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }
}

pub(super) struct Inner {
    pub(super) units: BTreeMap<u64, UnitBuf>,
    /// The latest ship of each unit, kept until it has finished so that
    /// every flush, fsync and later ship of the unit can wait for it.
    pub(super) ships: HashMap<u64, Ship>,
    pub(super) size: u64,
    pub(super) meta_dirty: bool,
    pub(super) mtime_ns: i64,
    pub(super) error: Option<Error>,
    /// Objects written since the last commit.
    pub(super) written: BTreeSet<u32>,
    pub(super) ships_since_gc: usize,
}

/// Pieces of one unit to write: (object offset, bytes).
pub(super) type Pieces = Vec<(u64, Bytes)>;

pub(super) type UnitFuture = Shared<BoxFuture<'static, Result<Bytes>>>;

/// A sequential reader's window (prefetch.rs): the units fetched ahead
/// of it, shared by every handle of the file.
#[derive(Default)]
pub struct ReadAhead {
    /// Unit the reader was last in.
    pub(super) last_unit: Option<u64>,
    /// Unit where its current sequential run began.
    pub(super) run_start: u64,
    pub(super) window: usize,
    pub(super) cache: BTreeMap<u64, UnitFuture>,
    /// The file's write generation the cached units were fetched under.
    pub(super) generation: u64,
}

impl ReadAhead {
    pub fn clear(&mut self) {
        self.cache.clear();
        self.window = 0;
        self.last_unit = None;
        self.run_start = 0;
    }
}

pub struct FileState {
    pub ino: InodeId,
    pub layout: Layout,
    /// What lets this client touch the file's objects on the OSDs.
    pub caps: CapSlot,
    pub(super) inner: Mutex<Inner>,
    pub(super) window: Arc<Semaphore>,
    pub ra: Mutex<ReadAhead>,
    pub opens: AtomicU32,
    /// Bumped by every write and every landed ship: read-ahead data fetched
    /// under an older generation may predate a write and is not reused.
    pub generation: AtomicU64,
    /// Writes hold it shared from checking the file's write lease until
    /// their bytes are buffered; a recall takes it exclusively to drop the
    /// lease, so no write slips into the buffers after the recall's flush.
    pub gate: tokio::sync::RwLock<()>,
    /// Held from taking the unpublished size until the MDS has it. A
    /// second publisher (a recall arriving while a close publishes) waits
    /// for the first: answering the recall before the size is at the MDS
    /// would let the next writer start from the old end of the file.
    pub publishing: tokio::sync::Mutex<()>,
    /// Its lease was recalled since it last took one: others may have
    /// changed the size since, so an open asks the MDS rather than reuse
    /// this state as it is.
    pub recalled: std::sync::atomic::AtomicBool,
    /// Replicas of this file's objects that missed writes (from the MDS at
    /// open, and this client's own reports): never read, no longer written.
    pub(super) stale: Mutex<HashSet<Degraded>>,
}

pub(super) fn poisoned() -> Error {
    Error::Io("file state lock poisoned".into())
}

impl FileState {
    pub fn new(ino: InodeId, layout: Layout, cap: Option<Cap>, size: u64, ctx: &DataCtx) -> Self {
        FileState {
            ino,
            layout,
            caps: CapSlot::new(ino, cap),
            inner: Mutex::new(Inner {
                units: BTreeMap::new(),
                ships: HashMap::new(),
                size,
                meta_dirty: false,
                mtime_ns: 0,
                error: None,
                written: BTreeSet::new(),
                ships_since_gc: 0,
            }),
            window: Arc::new(Semaphore::new(ctx.write_window.max(1))),
            ra: Mutex::new(ReadAhead::default()),
            opens: AtomicU32::new(0),
            generation: AtomicU64::new(0),
            gate: tokio::sync::RwLock::new(()),
            publishing: tokio::sync::Mutex::new(()),
            recalled: Default::default(),
            stale: Mutex::new(HashSet::new()),
        }
    }

    /// Stale replicas the MDS knows of.
    pub fn add_stale(&self, d: &[Degraded]) {
        if let Ok(mut s) = self.stale.lock() {
            s.extend(d.iter().copied());
        }
    }

    /// The OSDs whose replica of object `index` is stale.
    pub fn stale_of(&self, index: u32) -> Vec<OsdId> {
        self.stale.lock().map(|s| s.iter().filter(|d| d.index == index).map(|d| d.osd).collect()).unwrap_or_default()
    }

    /// Record replicas that missed a write at the MDS, durably, before the
    /// write counts as done: from then on nobody reads them.
    pub async fn degrade(&self, ctx: &DataCtx, objs: Vec<Degraded>) -> Result<()> {
        if objs.is_empty() {
            return Ok(());
        }
        tracing::warn!(ino = %self.ino, ?objs, "recording replicas as degraded");
        match ctx.pool.mds(&MdsReq::Degraded { ino: self.ino, objs: objs.clone() }).await? {
            MdsResp::Done => {
                self.add_stale(&objs);
                Ok(())
            }
            _ => Err(Error::Protocol("unexpected reply to Degraded".into())),
        }
    }

    pub fn size(&self) -> u64 {
        self.inner.lock().map(|i| i.size).unwrap_or(0)
    }

    /// Local size and whether it is newer than the MDS's.
    pub fn local_size(&self) -> Option<u64> {
        let i = self.inner.lock().ok()?;
        let pending = i.meta_dirty || !i.units.is_empty();
        pending.then_some(i.size)
    }

    /// The MDS's size after a setattr or a fresh open. With nothing of
    /// this client's pending it is taken as is (another client may have
    /// shrunk the file); otherwise it never shrinks what this client wrote.
    pub fn set_size(&self, size: u64, exact: bool) {
        if let Ok(mut i) = self.inner.lock() {
            let quiet = !i.meta_dirty && i.units.is_empty() && i.ships.values().all(|s| s.finished());
            i.size = if exact || quiet { size } else { size.max(i.size) };
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.ra_clear();
    }

    /// Where an append of `len` bytes goes: the end of the file as this
    /// client knows it, which under an exclusive write lease is the end.
    /// The range is reserved, so concurrent appends never overlap.
    pub fn append_at(&self, len: u64) -> Result<u64> {
        let mut i = self.inner.lock().map_err(|_| poisoned())?;
        let off = i.size;
        i.size = off.checked_add(len).ok_or(Error::FileTooBig)?;
        Ok(off)
    }

    /// Size or mtime not yet published to the MDS.
    pub fn meta_dirty(&self) -> bool {
        self.inner.lock().map(|i| i.meta_dirty).unwrap_or(true)
    }

    /// Another client may change the file now: cached data is not reused.
    pub fn forget_cached(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.ra_clear();
    }

    pub(super) fn ra_clear(&self) {
        if let Ok(mut ra) = self.ra.lock() {
            ra.clear();
        }
    }

    pub fn has_pending(&self) -> bool {
        self.inner.lock().map(|i| !i.units.is_empty() || i.ships.values().any(|s| !s.finished())).unwrap_or(true)
    }

    /// Keep `e` for the application's next write, flush or fsync.
    pub fn fail(&self, e: Error) {
        if let Ok(mut i) = self.inner.lock() {
            i.error.get_or_insert(e);
        }
    }

    /// The write error kept since the last report, cleared by reading it.
    pub fn take_error(&self) -> Option<Error> {
        self.inner.lock().ok()?.error.take()
    }

    /// Size and mtime to publish, if this client changed them.
    pub fn take_meta(&self) -> Option<(u64, i64)> {
        let mut i = self.inner.lock().ok()?;
        if !i.meta_dirty {
            return None;
        }
        i.meta_dirty = false;
        Some((i.size, i.mtime_ns))
    }

    /// Put back metadata that could not be published.
    pub fn restore_meta(&self, size: u64, mtime_ns: i64) {
        if let Ok(mut i) = self.inner.lock() {
            i.meta_dirty = true;
            i.size = i.size.max(size);
            i.mtime_ns = i.mtime_ns.max(mtime_ns);
        }
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirty_ranges_merge() {
        let mut u = UnitBuf { data: BytesMut::zeroed(16), ranges: vec![], permit: None, since: Instant::now() };
        u.add(4, 8);
        u.add(0, 2);
        u.add(2, 4);
        assert_eq!(u.ranges, vec![(0, 8)]);
        u.add(10, 12);
        u.add(7, 11);
        assert_eq!(u.ranges, vec![(0, 12)]);
    }
}
