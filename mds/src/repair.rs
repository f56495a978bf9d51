//! Repair of degraded replicas: a replica a writer could not reach (recorded
//! in the shard's `DEGRADED` table) is rewritten from a healthy replica of
//! the same object once its OSD is up again, in the background and at most
//! `repair_mb_per_s`. The copy goes through the MDS: read from the source
//! OSD, crcs checked, written to the target (which checks them again),
//! cut to the source's size and fsync'd; only then is the record removed.
//!
//! A copy must never race a write: a file is repaired only while no client
//! has it open, and an open waits while its file is being repaired
//! (`Cluster::begin_repair`, checked from both sides).
use crate::cluster::Cluster;
use crate::gc::OsdClients;
use crate::namespace::Namespace;
use crate::store::{IoResult, DEGRADED};
use redb::ReadableTable;
use aifs_common::proto::mds::Degraded;
use aifs_common::proto::osd::{block_crcs, OsdReq, OsdResp};
use aifs_common::{Error, InodeId, ObjectId, OsdId, Result};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Records taken from one shard per pass.
const BATCH: usize = 256;
/// Bytes copied per read and write.
const CHUNK: u64 = 4 << 20;
/// Files whose replicas move off OSDs taken out, per pass.
const DRAIN_BATCH: usize = 64;
/// How often the replicas left on OSDs taken out are counted whole.
const COUNT_EVERY: Duration = Duration::from_secs(5);

/// Once a scan found nothing left on the OSDs out, how long until the next
/// scan looks again (for a file made from a layout reserved just before).
const DRAINED_RESCAN: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct RepairStats {
    /// Replicas rewritten since the MDS started.
    pub repaired: AtomicU64,
    /// Bytes copied since the MDS started.
    pub bytes: AtomicU64,
    /// Replicas being rewritten now.
    pub active: AtomicU64,
    /// Replicas moved off OSDs taken out.
    pub moved: AtomicU64,
    /// Replicas on OSDs taken out still to move, as last counted.
    pub to_move: AtomicU64,
    /// When `to_move` was last counted.
    counted: std::sync::Mutex<Option<Instant>>,
}

pub struct Repair {
    ns: Arc<Namespace>,
    osds: Arc<OsdClients>,
    /// Bytes per second at most (0: no limit).
    rate: u64,
    pub wake: tokio::sync::Notify,
    pub stats: RepairStats,
    /// The OSDs out when a scan last found none of their replicas, and when.
    drained: std::sync::Mutex<Option<(Vec<u32>, Instant)>>,
}

impl Repair {
    pub fn new(ns: Arc<Namespace>, osds: Arc<OsdClients>, mb_per_s: u64) -> Self {
        Repair {
            ns,
            osds,
            rate: mb_per_s * 1_000_000,
            wake: tokio::sync::Notify::new(),
            stats: RepairStats::default(),
            drained: std::sync::Mutex::new(None),
        }
    }

    fn cluster(&self) -> &Arc<Cluster> {
        &self.ns.cluster
    }

    pub async fn run(self: Arc<Self>) {
        loop {
            let n = self.pass().await;
            if n == 0 {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
        }
    }

    /// One pass over every shard's records, then over files with replicas
    /// on OSDs taken out; returns replicas repaired or moved.
    pub async fn pass(&self) -> usize {
        let mut done = self.drain().await;
        for s in self.ns.led() {
            let rows = s
                .read(|t| {
                    let mut v = Vec::new();
                    for r in t.open_table(DEGRADED).io()?.iter().io()?.take(BATCH) {
                        let (k, _) = r.io()?;
                        v.push(k.value());
                    }
                    Ok(v)
                })
                .await;
            let rows = match rows {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(shard = s.id, error = %e, "cannot read degraded replicas");
                    continue;
                }
            };
            let mut by_file: BTreeMap<u64, Vec<Degraded>> = BTreeMap::new();
            for (ino, index, osd) in rows {
                by_file.entry(ino).or_default().push(Degraded { index, osd: OsdId(osd) });
            }
            for (ino, objs) in by_file {
                if !self.cluster().begin_repair(InodeId(ino)) {
                    continue;
                }
                done += self.repair_file(ino, &objs).await;
                self.cluster().end_repair(InodeId(ino));
            }
        }
        done
    }

    /// Rewrite the stale replicas of one file whose OSDs are up.
    async fn repair_file(&self, ino: u64, objs: &[Degraded]) -> usize {
        let layout = match self.ns.getattr(InodeId(ino)).await.map(|a| a.layout) {
            Ok(Some(l)) => l,
            // Gone: its records went with it.
            _ => return 0,
        };
        let up = self.cluster().osds.up();
        let mut done = 0;
        for d in objs.iter().filter(|d| up.contains(&d.osd.0)) {
            let to = d.osd.0;
            let stale: Vec<u32> = objs.iter().filter(|o| o.index == d.index).map(|o| o.osd.0).collect();
            let Some(from) = layout.object_osds(d.index).iter().map(|o| o.0).find(|o| !stale.contains(o) && up.contains(o)) else {
                tracing::debug!(ino, index = d.index, "no healthy replica up to repair from");
                continue;
            };
            let obj = ObjectId { ino: InodeId(ino), index: d.index };
            self.stats.active.fetch_add(1, Ordering::Relaxed);
            let r = self.copy(obj, from, to).await;
            self.stats.active.fetch_sub(1, Ordering::Relaxed);
            // Unlinked meanwhile: its delete may have run before the copy
            // made the object again, so the copy goes too.
            if matches!(self.ns.getattr(InodeId(ino)).await, Err(Error::NotFound)) {
                if let Err(e) = self.osds.call(to, &OsdReq::Delete { obj }).await {
                    tracing::warn!(%obj, osd = to, error = %e, "copy of a deleted file's object left behind; fsck finds it");
                }
                return done;
            }
            let r = match r {
                Ok(n) => self.settled(ino, *d).await.map(|_| n),
                Err(e) => Err(e),
            };
            match r {
                Ok(n) => {
                    tracing::info!(%obj, from, to, bytes = n, "replica repaired");
                    self.stats.repaired.fetch_add(1, Ordering::Relaxed);
                    done += 1;
                }
                Err(e) => tracing::warn!(%obj, from, to, error = %e, "replica repair failed; retried later"),
            }
        }
        done
    }

    /// Move replicas off OSDs taken out (`mdsctl osd out`), a batch of
    /// files at a time: each object is copied to an OSD that is up, in, and
    /// not yet one of its replicas, the layout then names the new OSD, and
    /// the old copy is deleted.
    async fn drain(&self) -> usize {
        let out = self.cluster().osds.taken_out();
        if out.is_empty() {
            self.stats.to_move.store(0, Ordering::Relaxed);
            return 0;
        }
        // Every inode is read per scan: not again every pass once done.
        let done_lately = |d: &Option<(Vec<u32>, Instant)>| d.as_ref().is_some_and(|(o, at)| *o == out && at.elapsed() < DRAINED_RESCAN);
        if self.drained.lock().is_ok_and(|d| done_lately(&d)) {
            return 0;
        }
        // The scan stops at a batch, but for a count of what is left
        // (`mdsctl repair status`) now and then.
        let count = self.stats.counted.lock().map(|c| c.is_none_or(|at| at.elapsed() >= COUNT_EVERY)).unwrap_or(false);
        let files = self.scan_out(&out, count).await;
        if let Ok(mut d) = self.drained.lock() {
            *d = files.is_empty().then(|| (out.clone(), Instant::now()));
        }
        let mut done = 0;
        for (ino, layout) in files {
            if !self.cluster().begin_repair(InodeId(ino)) {
                continue;
            }
            let n = self.drain_file(ino, &layout, &out).await;
            self.cluster().end_repair(InodeId(ino));
            if n > 0 {
                // Clients see the new layout at their next open.
                self.cluster().invalidate(None, vec![(InodeId(ino), vec![])]).await;
            }
            done += n;
        }
        done
    }

    /// Count the replicas on the OSDs taken out now (`osd out` answers
    /// once it is known, so that a watcher sees it from the start).
    pub async fn count_to_move(&self) {
        let out = self.cluster().osds.taken_out();
        match out.is_empty() {
            true => self.stats.to_move.store(0, Ordering::Relaxed),
            false => drop(self.scan_out(&out, true).await),
        }
    }

    /// Files with replicas on the OSDs `out`, a batch of them; with
    /// `count`, every file is looked at and the replicas left counted into
    /// `stats.to_move` (also when none are left).
    async fn scan_out(&self, out: &[u32], count: bool) -> Vec<(u64, aifs_common::Layout)> {
        let mut files = Vec::new();
        let mut left = 0u64;
        let mut failed = false;
        for s in self.ns.led() {
            let out = out.to_vec();
            let found = s
                .scan(move |t| {
                    let (mut v, mut left) = (Vec::new(), 0u64);
                    for r in t.open_table(crate::store::INODES).io()?.iter().io()? {
                        let (k, val) = r.io()?;
                        let rec = crate::records::InodeRec::decode(val.value())?;
                        if let Some(l) = rec.layout.filter(|l| l.osds.iter().any(|o| out.contains(&o.0))) {
                            left += l.osds.iter().filter(|o| out.contains(&o.0)).count() as u64;
                            if v.len() < DRAIN_BATCH {
                                v.push((k.value(), l));
                            } else if !count {
                                break;
                            }
                        }
                    }
                    Ok((v, left))
                })
                .await;
            match found {
                Ok((v, n)) => {
                    files.extend(v);
                    left += n;
                }
                Err(e) => {
                    tracing::warn!(shard = s.id, error = %e, "cannot look for replicas to move");
                    failed = true;
                }
            }
        }
        // A shard not looked at would make the count short: kept as it was.
        if (count || files.is_empty()) && !failed {
            self.stats.to_move.store(left, Ordering::Relaxed);
            if let Ok(mut c) = self.stats.counted.lock() {
                *c = Some(Instant::now());
            }
        }
        files
    }

    async fn drain_file(&self, ino: u64, layout: &aifs_common::Layout, out: &[u32]) -> usize {
        let up = self.cluster().osds.up();
        let targets = self.cluster().osds.placeable();
        let stale = self.ns.degraded(InodeId(ino)).await.unwrap_or_default();
        let mut done = 0;
        for index in 0..layout.stripe_count {
            let reps: Vec<u32> = layout.object_osds(index).iter().map(|o| o.0).collect();
            for &from in reps.iter().filter(|o| out.contains(o)) {
                let free: Vec<u32> = targets.iter().copied().filter(|t| !reps.contains(t)).collect();
                if free.is_empty() {
                    tracing::warn!(ino, index, from, "no OSD up and in to move a replica to");
                    continue;
                }
                let to = free[((ino ^ index as u64) % free.len() as u64) as usize];
                let bad = |o: &u32| stale.iter().any(|d| d.index == index && d.osd.0 == *o);
                // The copy on the OSD taken out is good unless stale; a
                // healthy replica elsewhere is preferred.
                let mut sources: Vec<u32> = reps.iter().copied().filter(|o| up.contains(o) && !bad(o)).collect();
                sources.sort_by_key(|o| out.contains(o));
                let Some(&src) = sources.first() else {
                    tracing::warn!(ino, index, "no healthy replica up to move from");
                    continue;
                };
                let obj = ObjectId { ino: InodeId(ino), index };
                self.stats.active.fetch_add(1, Ordering::Relaxed);
                let r = self.copy(obj, src, to).await;
                self.stats.active.fetch_sub(1, Ordering::Relaxed);
                let moved = match r {
                    Ok(_) => self.ns.move_replica(InodeId(ino), index, from, to).await,
                    Err(e) => Err(e),
                };
                match moved {
                    Ok(true) => {
                        tracing::info!(%obj, from, to, "replica moved off an OSD taken out");
                        if let Err(e) = self.osds.call(from, &OsdReq::Delete { obj }).await {
                            tracing::warn!(%obj, osd = from, error = %e, "old replica left behind; fsck finds it");
                        }
                        self.stats.moved.fetch_add(1, Ordering::Relaxed);
                        let _ = self.stats.to_move.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_sub(1)));
                        done += 1;
                    }
                    Ok(false) => {
                        let _ = self.osds.call(to, &OsdReq::Delete { obj }).await;
                    }
                    Err(e) => tracing::warn!(%obj, from, to, error = %e, "replica move failed; retried later"),
                }
            }
        }
        done
    }

    async fn settled(&self, ino: u64, d: Degraded) -> Result<()> {
        self.ns
            .shard_for(ino)?
            .mutate(move |txn| {
                txn.open_table(DEGRADED).io()?.remove((ino, d.index, d.osd.0)).io()?;
                Ok(())
            })
            .await
    }

    /// Copy object `obj` from OSD `from` to OSD `to`, durably; returns the
    /// bytes copied.
    async fn copy(&self, obj: ObjectId, from: u32, to: u32) -> Result<u64> {
        let size = match self.osds.call(from, &OsdReq::Stat { obj }).await? {
            OsdResp::Stat { exists: true, size } => size,
            OsdResp::Stat { exists: false, .. } => {
                // Never written on the healthy replica: none anywhere.
                self.osds.call(to, &OsdReq::Delete { obj }).await?;
                return Ok(0);
            }
            _ => return Err(Error::Protocol("unexpected reply to Stat".into())),
        };
        let start = Instant::now();
        let mut off = 0;
        while off < size {
            let len = CHUNK.min(size - off) as u32;
            let (resp, body) = self.osds.call_with(from, &OsdReq::Read { obj, off, len }, &[]).await?;
            let OsdResp::Data { off: at, crcs, .. } = resp else {
                return Err(Error::Protocol("unexpected reply to Read".into()));
            };
            if at != off || body.is_empty() {
                return Err(Error::Protocol(format!("osd.{from} answered a read of {obj} at {off} with {} bytes at {at}", body.len())));
            }
            // A bad block on the source is not spread: that replica is for
            // the checksum repair to mend first.
            if block_crcs(off, &body) != crcs {
                return Err(Error::Checksum(format!("{obj} on osd.{from} at {off}")));
            }
            let n = body.len() as u64;
            let req = OsdReq::Write { obj, off, len: n as u32, crcs };
            self.osds.call_with(to, &req, &[body]).await?;
            off += n;
            self.stats.bytes.fetch_add(n, Ordering::Relaxed);
            self.pace(start, off).await;
        }
        self.osds.call(to, &OsdReq::Truncate { obj, size }).await?;
        self.osds.call(to, &OsdReq::Commit { objs: vec![obj] }).await?;
        Ok(size)
    }

    /// Sleep so that `copied` bytes since `start` stay within the rate.
    async fn pace(&self, start: Instant, copied: u64) {
        if self.rate == 0 {
            return;
        }
        let due = Duration::from_secs_f64(copied as f64 / self.rate as f64);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
}
