//! Write-behind (DESIGN.md, "Data"). FUSE writes are gathered per stripe
//! unit; a unit that is fully written ships at once, partial units wait for
//! more data, for `flush`, or for the per-file buffer cap. Shipping sends
//! each unit to every replica of its object in parallel. Two bounds hold
//! the pipeline: a per-file window of write calls in flight and a global
//! memory budget; a writer blocks (backpressure) until both admit it.
//!
//! Memory: every buffered unit and every unit in flight holds its share of
//! the global budget until it has landed on the OSDs. A writer that finds
//! the budget spent ships its own buffered units and waits; a background
//! flusher ships units left partial for a few seconds, so buffered memory
//! always drains.
//!
//! Ships of one unit are chained, each waiting for the previous, so a
//! rewritten unit reaches the OSD in the order it was written. The first
//! error is kept and surfaces at the next write, flush or fsync.
use super::io::write_object;
use super::prefetch::ReadAhead;
use crate::pool::Pool;
use aifs_common::{Error, Layout, ObjectId, Result};
use bytes::{Bytes, BytesMut};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use aifs_common::proto::mds::{Degraded, MdsReq, MdsResp};
use futures::future::{BoxFuture, FutureExt, Shared};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Budget permits are counted in KiB.
const BUDGET_UNIT: usize = 1024;

/// What every file's data path shares.
pub struct DataCtx {
    pub pool: Arc<Pool>,
    pub budget: Arc<Semaphore>,
    pub budget_kib: usize,
    pub write_window: usize,
    pub max_buffered_units: usize,
    pub readahead_units: usize,
    /// Rung when a writer finds the budget spent: the flusher then ships
    /// every file's buffered units, not only stale ones.
    pub pressure: tokio::sync::Notify,
}

struct UnitBuf {
    data: BytesMut,
    /// Sorted, disjoint dirty ranges within the unit.
    ranges: Vec<(u64, u64)>,
    /// This buffer's share of the global memory budget.
    permit: Option<OwnedSemaphorePermit>,
    /// When the unit was first dirtied: units left partial this long are
    /// shipped by the background flusher.
    since: Instant,
}

impl UnitBuf {
    fn add(&mut self, start: u64, end: u64) {
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
struct Ship {
    fut: Shared<BoxFuture<'static, ()>>,
    done: Arc<AtomicBool>,
}

impl Ship {
    fn finished(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }
}

struct Inner {
    units: BTreeMap<u64, UnitBuf>,
    /// The latest ship of each unit, kept until it has finished so that
    /// every flush, fsync and later ship of the unit can wait for it.
    ships: HashMap<u64, Ship>,
    size: u64,
    meta_dirty: bool,
    mtime_ns: i64,
    error: Option<Error>,
    /// Objects written since the last commit.
    written: BTreeSet<u32>,
    ships_since_gc: usize,
}

/// Pieces of one unit to write: (object offset, bytes).
type Pieces = Vec<(u64, Bytes)>;

pub struct FileState {
    pub ino: u64,
    pub layout: Layout,
    inner: Mutex<Inner>,
    window: Arc<Semaphore>,
    pub ra: Mutex<ReadAhead>,
    pub opens: AtomicU32,
    /// Bumped by every write and every landed ship: read-ahead data fetched
    /// under an older generation may predate a write and is not reused.
    pub generation: AtomicU64,
    /// Writes hold it shared from checking the file's write lease until
    /// their bytes are buffered; a recall takes it exclusively to drop the
    /// lease, so no write slips into the buffers after the recall's flush.
    pub gate: tokio::sync::RwLock<()>,
    /// Replicas of this file's objects that missed writes (from the MDS at
    /// open, and this client's own reports): never read, no longer written.
    stale: Mutex<HashSet<Degraded>>,
}

fn poisoned() -> Error {
    Error::Io("file state lock poisoned".into())
}

impl FileState {
    pub fn new(ino: u64, layout: Layout, size: u64, ctx: &DataCtx) -> Self {
        FileState {
            ino,
            layout,
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
    pub fn stale_of(&self, index: u32) -> Vec<u32> {
        self.stale.lock().map(|s| s.iter().filter(|d| d.index == index).map(|d| d.osd).collect()).unwrap_or_default()
    }

    /// Record replicas that missed a write at the MDS, durably, before the
    /// write counts as done: from then on nobody reads them.
    pub async fn degrade(&self, ctx: &DataCtx, objs: Vec<Degraded>) -> Result<()> {
        if objs.is_empty() {
            return Ok(());
        }
        tracing::warn!(ino = self.ino, ?objs, "recording replicas as degraded");
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

    fn ra_clear(&self) {
        if let Ok(mut ra) = self.ra.lock() {
            ra.clear();
        }
    }

    pub fn has_pending(&self) -> bool {
        self.inner.lock().map(|i| !i.units.is_empty() || i.ships.values().any(|s| !s.finished())).unwrap_or(true)
    }

    fn unit_kib(&self) -> usize {
        (self.layout.stripe_size as usize).div_ceil(BUDGET_UNIT)
    }

    /// Reserve `kib` of the global budget. When it is short, this file's
    /// own buffered units ship first (their memory comes back once they
    /// land), then the writer waits: backpressure, never unbounded memory.
    async fn reserve(self: &Arc<Self>, ctx: &Arc<DataCtx>, kib: usize) -> Result<OwnedSemaphorePermit> {
        let kib = kib.clamp(1, ctx.budget_kib.max(1)) as u32;
        if let Ok(p) = ctx.budget.clone().try_acquire_many_owned(kib) {
            return Ok(p);
        }
        self.ship_buffered(ctx, None)?;
        ctx.pressure.notify_one();
        ctx.budget.clone().acquire_many_owned(kib).await.map_err(|_| Error::Io("shutting down".into()))
    }

    /// Buffer (or ship) a write at file offset `off`.
    pub async fn write(self: &Arc<Self>, ctx: &Arc<DataCtx>, off: u64, data: Bytes) -> Result<()> {
        if let Some(e) = self.inner.lock().map_err(|_| poisoned())?.error.clone() {
            return Err(e);
        }
        let end = off.checked_add(data.len() as u64).ok_or(Error::FileTooBig)?;
        let su = self.layout.stripe_size as u64;
        let exts = self.layout.extents(off, data.len() as u64);
        // Every extent either ships at once or lands in a unit buffer; a
        // unit's worth of budget each covers both (the excess goes back).
        let mut reserved = self.reserve(ctx, exts.len() * self.unit_kib()).await?;
        let win = Arc::new(self.window.clone().acquire_owned().await.map_err(|_| Error::Io("shutting down".into()))?);
        let now = aifs_common::time::now_ns();
        let mut inner = self.inner.lock().map_err(|_| poisoned())?;
        self.generation.fetch_add(1, Ordering::AcqRel);
        let mut to_ship: Vec<(u64, Pieces, Option<OwnedSemaphorePermit>)> = Vec::new();
        for ext in exts {
            let unit = ext.file_off / su;
            let in_unit = ext.file_off % su;
            let slice = data.slice((ext.file_off - off) as usize..(ext.file_off - off + ext.len) as usize);
            let share = reserved.split(self.unit_kib().min(reserved.num_permits()));
            if ext.len == su && !inner.units.contains_key(&unit) {
                to_ship.push((unit, vec![(ext.obj_off, slice)], share));
                continue;
            }
            let buf = inner.units.entry(unit).or_insert_with(|| UnitBuf {
                data: BytesMut::zeroed(su as usize),
                ranges: Vec::new(),
                permit: None,
                since: Instant::now(),
            });
            if buf.permit.is_none() {
                buf.permit = share;
            }
            buf.data[in_unit as usize..(in_unit + ext.len) as usize].copy_from_slice(&slice);
            buf.add(in_unit, in_unit + ext.len);
            if buf.ranges == [(0, su)] {
                if let Some(b) = inner.units.remove(&unit) {
                    to_ship.push(self.pieces(unit, b));
                }
            }
        }
        while inner.units.len() > ctx.max_buffered_units.max(1) {
            if let Some((unit, b)) = inner.units.pop_first() {
                to_ship.push(self.pieces(unit, b));
            }
        }
        inner.size = inner.size.max(end);
        inner.meta_dirty = true;
        inner.mtime_ns = now;
        for (unit, pieces, permit) in to_ship {
            self.ship(&mut inner, ctx, unit, pieces, permit, Some(win.clone()));
        }
        drop(inner);
        self.ra_clear();
        Ok(())
    }

    fn pieces(&self, unit: u64, b: UnitBuf) -> (u64, Pieces, Option<OwnedSemaphorePermit>) {
        let su = self.layout.stripe_size as u64;
        let data = b.data.freeze();
        let pieces = b
            .ranges
            .iter()
            .map(|&(s, e)| {
                let (_, obj_off) = self.layout.locate(unit * su + s);
                (obj_off, data.slice(s as usize..e as usize))
            })
            .collect();
        (unit, pieces, b.permit)
    }

    /// Start shipping one unit, after any earlier ship of the same unit. The
    /// permits are held until the unit has landed.
    fn ship(
        self: &Arc<Self>,
        inner: &mut Inner,
        ctx: &Arc<DataCtx>,
        unit: u64,
        pieces: Pieces,
        budget: Option<OwnedSemaphorePermit>,
        window: Option<Arc<OwnedSemaphorePermit>>,
    ) {
        let prev = inner.ships.get(&unit).cloned();
        let me = self.clone();
        let ctx = ctx.clone();
        let done = Arc::new(AtomicBool::new(false));
        let done2 = done.clone();
        let (object, _) = self.layout.locate(unit * self.layout.stripe_size as u64);
        let h = tokio::spawn(async move {
            if let Some(p) = prev {
                p.fut.await;
            }
            let stale = me.stale_of(object);
            let writes = pieces
                .into_iter()
                .map(|(obj_off, bytes)| write_object(&ctx.pool, &me.layout, me.ino, object, obj_off, bytes, &stale));
            let mut failed = None;
            let mut missed = BTreeSet::new();
            for r in futures::future::join_all(writes).await {
                match r {
                    Ok(m) => missed.extend(m),
                    Err(e) => {
                        failed.get_or_insert(e);
                    }
                }
            }
            let missed: Vec<Degraded> = missed.into_iter().map(|osd| Degraded { index: object, osd }).collect();
            if let Err(e) = me.degrade(&ctx, missed).await {
                failed.get_or_insert(e);
            }
            drop(budget);
            drop(window);
            if let Ok(mut i) = me.inner.lock() {
                match failed {
                    Some(e) => {
                        tracing::warn!(ino = me.ino, unit, error = %e, "write-behind failed");
                        i.error.get_or_insert(e);
                    }
                    None => {
                        i.written.insert(object);
                    }
                }
            }
            me.generation.fetch_add(1, Ordering::AcqRel);
            done2.store(true, Ordering::Release);
        });
        let fut = async move {
            let _ = h.await;
        }
        .boxed()
        .shared();
        inner.ships.insert(unit, Ship { fut, done });
        inner.ships_since_gc += 1;
        if inner.ships_since_gc >= 256 {
            inner.ships.retain(|_, s| !s.finished());
            inner.ships_since_gc = 0;
        }
    }

    /// Ship buffered units (those older than `older_than`, or all), without
    /// waiting for them to land. Returns how many were shipped.
    pub fn ship_buffered(self: &Arc<Self>, ctx: &Arc<DataCtx>, older_than: Option<std::time::Duration>) -> Result<usize> {
        let mut inner = self.inner.lock().map_err(|_| poisoned())?;
        let units: Vec<u64> = inner
            .units
            .iter()
            .filter(|(_, b)| older_than.is_none_or(|age| b.since.elapsed() >= age))
            .map(|(u, _)| *u)
            .collect();
        for u in &units {
            if let Some(b) = inner.units.remove(u) {
                let (unit, pieces, permit) = self.pieces(*u, b);
                self.ship(&mut inner, ctx, unit, pieces, permit, None);
            }
        }
        Ok(units.len())
    }

    /// Ship every buffered unit and wait for every ship started before
    /// this call. Leaves any error in place (see `take_error`). Ships stay
    /// in the map, so a concurrent drain waits for them too.
    pub async fn drain(self: &Arc<Self>, ctx: &Arc<DataCtx>) -> Result<()> {
        self.ship_buffered(ctx, None)?;
        let snapshot: Vec<Ship> = {
            let inner = self.inner.lock().map_err(|_| poisoned())?;
            inner.ships.values().filter(|s| !s.finished()).cloned().collect()
        };
        for s in snapshot {
            s.fut.await;
        }
        if let Ok(mut inner) = self.inner.lock() {
            inner.ships.retain(|_, s| !s.finished());
        }
        Ok(())
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

    /// fsync on the OSDs every object written since the last commit, on
    /// each replica not stale. A replica whose OSD cannot be reached is
    /// recorded as degraded, as long as another replica of its object
    /// committed.
    pub async fn commit(&self, ctx: &DataCtx) -> Result<()> {
        let objs: Vec<u32> = {
            let mut i = self.inner.lock().map_err(|_| poisoned())?;
            std::mem::take(&mut i.written).into_iter().collect()
        };
        let mut per_osd: BTreeMap<u32, Vec<ObjectId>> = BTreeMap::new();
        for &k in &objs {
            let stale = self.stale_of(k);
            for o in self.layout.object_osds(k).iter().filter(|o| !stale.contains(&o.0)) {
                per_osd.entry(o.0).or_default().push(ObjectId { ino: self.ino, index: k });
            }
        }
        let calls = per_osd.into_iter().map(|(osd, objs)| {
            let pool = ctx.pool.clone();
            async move {
                let r = pool.osd_call(osd, &aifs_common::proto::osd::OsdReq::Commit { objs: objs.clone() }, &[]).await;
                (osd, objs, r)
            }
        });
        let mut res = Ok(());
        let mut missed = Vec::new();
        let mut committed: HashSet<u32> = HashSet::new();
        for (osd, objs, r) in futures::future::join_all(calls).await {
            match r {
                Ok(_) => committed.extend(objs.iter().map(|o| o.index)),
                Err(e) if e.unreachable() => {
                    tracing::warn!(ino = self.ino, osd, error = %e, "replica not reached by a commit");
                    missed.extend(objs.iter().map(|o| Degraded { index: o.index, osd }));
                    if res.is_ok() {
                        res = Err(e);
                    }
                }
                Err(e) => res = Err(e),
            }
        }
        // Unreachable replicas are no error where another replica of the
        // same object committed: they become degraded.
        let only_unreached = !missed.is_empty() && res.as_ref().err().is_some_and(Error::unreachable);
        if only_unreached && missed.iter().all(|d| committed.contains(&d.index)) {
            res = self.degrade(ctx, missed).await;
        }
        if res.is_err() {
            // Keep the objects owed a commit for the next fsync.
            if let Ok(mut i) = self.inner.lock() {
                i.written.extend(objs);
            }
        }
        res
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
