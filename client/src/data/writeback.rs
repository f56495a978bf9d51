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
use super::file::{poisoned, DataCtx, FileState, Inner, Pieces, Ship, UnitBuf, BUDGET_UNIT};
use super::io::write_object;
use aifs_common::proto::mds::Degraded;
use aifs_common::{Error, ObjectId, OsdId, Result};
use bytes::{Bytes, BytesMut};
use futures::future::FutureExt;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::OwnedSemaphorePermit;

impl FileState {
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
            let bytes: u64 = pieces.iter().map(|(_, b)| b.len() as u64).sum();
            let writes = pieces
                .into_iter()
                .map(|(obj_off, bytes)| write_object(&ctx, &me.caps, &me.layout, object, obj_off, bytes, &stale));
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
                        tracing::warn!(ino = %me.ino, unit, error = %e, "write-behind failed");
                        i.error.get_or_insert(e);
                    }
                    None => {
                        i.written.insert(object);
                        ctx.metrics.writeback_bytes.inc_by(bytes);
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

    /// fsync on the OSDs every object written since the last commit, on
    /// each replica not stale. A replica whose OSD cannot be reached is
    /// recorded as degraded, as long as another replica of its object
    /// committed.
    pub async fn commit(&self, ctx: &DataCtx) -> Result<()> {
        let objs: Vec<u32> = {
            let mut i = self.inner.lock().map_err(|_| poisoned())?;
            std::mem::take(&mut i.written).into_iter().collect()
        };
        let mut per_osd: BTreeMap<OsdId, Vec<ObjectId>> = BTreeMap::new();
        for &k in &objs {
            let stale = self.stale_of(k);
            for o in self.layout.object_osds(k).iter().filter(|o| !stale.contains(o)) {
                per_osd.entry(*o).or_default().push(ObjectId { ino: self.ino, index: k });
            }
        }
        let calls = per_osd.into_iter().map(|(osd, objs)| async move {
            let req = aifs_common::proto::osd::OsdReq::Commit { objs: objs.clone() };
            let r = match self.caps.request(ctx, req).await {
                Ok(call) => self.caps.call(ctx, osd, &call, &[]).await,
                Err(e) => Err(e),
            };
            (osd, objs, r)
        });
        let mut res = Ok(());
        let mut missed = Vec::new();
        let mut committed: HashSet<u32> = HashSet::new();
        for (osd, objs, r) in futures::future::join_all(calls).await {
            match r {
                Ok(_) => committed.extend(objs.iter().map(|o| o.index)),
                Err(e) if e.unreachable() => {
                    tracing::warn!(ino = %self.ino, osd = osd.0, error = %e, "replica not reached by a commit");
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
