//! `mdsctl fsck`: every file's replicas checked against what the OSDs
//! store. Lists each OSD's objects first, then reads the namespace (so a
//! file made in between is never taken for an orphan), then for each object
//! of each file not open: a replica absent where another exists is missing,
//! and every present replica is read whole and its blocks checked against
//! their crcs (a deep scrub). Objects of no file and no pending delete, or
//! on an OSD their file's layout does not name (left behind by a move), are
//! orphans. With `repair`, missing and corrupt replicas are recorded as
//! degraded, for the repair task to rewrite, and orphans are deleted.
//!
//! One check runs at a time, in the background; its report is polled.
//! It covers the shards this process leads: their files, and the objects
//! whose inodes are theirs. Shard 0's leader adds up the checks of the
//! processes that lead the others (ops/fsck.rs): each reads its shards as
//! their leader, knows which of their files are open, and holds them
//! against its own repair's moves.
use crate::gc::OsdClients;
use crate::namespace::Namespace;
use crate::records::{GcJob, InodeRec};
use crate::repair::Repair;
use crate::store::{IoResult, DEGRADED, GC, INODES};
use aifs_common::proto::mds::{Attr, Degraded, FileKind, FsckFinding, FsckKind, FsckReport};
use aifs_common::proto::osd::{OsdReq, OsdResp};
use aifs_common::{Error, InodeId, Layout, ObjectId, OsdId, Result};
use redb::ReadableTable;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

/// Objects asked for per `List`.
const LIST_PAGE: u32 = 10_000;

/// The objects each OSD stores, with their sizes, by OSD.
type Stored = BTreeMap<u32, BTreeMap<ObjectId, u64>>;

/// Does `layout` (the file's, if it exists) put object `obj` on `osd`?
fn placed(layout: Option<&Layout>, obj: ObjectId, osd: u32) -> bool {
    layout.is_some_and(|l| obj.index < l.stripe_count && l.object_osds(obj.index).iter().any(|o| o.0 == osd))
}

/// Is object `obj` on `osd`, listed as an orphan, one still, given its
/// file's attributes read again (`now`)? Only if the file is gone or its
/// layout does not place the object there: a read that failed for any
/// other reason (a busy or failing store) proves nothing, and the object
/// is kept.
fn still_orphan(now: &Result<Attr>, obj: ObjectId, osd: u32) -> bool {
    match now {
        Ok(a) => !placed(a.layout.as_ref(), obj, osd),
        Err(Error::NotFound) => true,
        Err(_) => false,
    }
}

pub struct Fsck {
    ns: Arc<Namespace>,
    osds: Arc<OsdClients>,
    repair: Arc<Repair>,
    report: Mutex<FsckReport>,
}

impl Fsck {
    pub fn new(ns: Arc<Namespace>, osds: Arc<OsdClients>, repair: Arc<Repair>) -> Self {
        Fsck { ns, osds, repair, report: Mutex::new(FsckReport::default()) }
    }

    /// Start a check unless one runs; the report as it stands.
    pub fn start(self: &Arc<Self>, repair: bool) -> FsckReport {
        let Ok(mut r) = self.report.lock() else { return FsckReport::default() };
        if !r.running {
            *r = FsckReport { running: true, repair, ..Default::default() };
            let me = self.clone();
            tokio::spawn(async move {
                let res = me.check(repair).await;
                me.update(|r| {
                    r.running = false;
                    if let Err(e) = res {
                        r.error = Some(e.to_string());
                    }
                });
                tracing::info!("fsck finished");
            });
            tracing::info!(repair, "fsck started");
        }
        r.clone()
    }

    pub fn status(&self) -> FsckReport {
        self.report.lock().map(|r| r.clone()).unwrap_or_default()
    }

    fn update(&self, f: impl FnOnce(&mut FsckReport)) {
        if let Ok(mut r) = self.report.lock() {
            f(&mut r);
        }
    }

    fn found(&self, kind: FsckKind, obj: ObjectId, osd: u32) {
        tracing::warn!(?kind, %obj, osd, "fsck finding");
        self.update(|r| {
            match kind {
                FsckKind::Missing => r.missing += 1,
                FsckKind::Corrupt => r.corrupt += 1,
                FsckKind::Orphan => r.orphans += 1,
            }
            if r.findings.len() < FsckReport::MAX_FINDINGS {
                r.findings.push(FsckFinding { kind, ino: obj.ino.0, index: obj.index, osd: OsdId(osd) });
            }
        });
    }

    /// Every object an OSD stores, with its size.
    async fn list(&self, osd: u32) -> Result<BTreeMap<ObjectId, u64>> {
        let mut out = BTreeMap::new();
        let mut after = None;
        loop {
            let OsdResp::Objects(page) = self.osds.call(osd, &OsdReq::List { after, max: LIST_PAGE }).await? else {
                return Err(Error::Protocol("unexpected reply to List".into()));
            };
            let n = page.len();
            after = page.last().map(|p| p.0);
            out.extend(page);
            if n < LIST_PAGE as usize {
                return Ok(out);
            }
        }
    }

    /// Files with their layouts, inodes with a delete pending, and the
    /// replicas already known to be stale.
    async fn namespace(&self) -> Result<(Vec<(u64, Layout)>, HashSet<u64>, HashSet<(u64, u32, u32)>)> {
        let mut files = Vec::new();
        let mut deleting = HashSet::new();
        let mut stale = HashSet::new();
        for s in self.ns.led() {
            let (f, d, st) = s
                .scan(|t| {
                    let mut f = Vec::new();
                    for r in t.open_table(INODES).io()?.iter().io()? {
                        let (k, v) = r.io()?;
                        let rec = InodeRec::decode(v.value())?;
                        if let (FileKind::File, Some(l)) = (rec.kind, rec.layout) {
                            f.push((k.value(), l));
                        }
                    }
                    let mut d = Vec::new();
                    for r in t.open_table(GC).io()?.iter().io()? {
                        let (_, v) = r.io()?;
                        if let Ok(job) = GcJob::decode(v.value()) {
                            d.push(job.ino);
                        }
                    }
                    let mut st = Vec::new();
                    for r in t.open_table(DEGRADED).io()?.iter().io()? {
                        st.push(r.io()?.0.value());
                    }
                    Ok((f, d, st))
                })
                .await?;
            files.extend(f);
            deleting.extend(d);
            stale.extend(st);
        }
        Ok((files, deleting, stale))
    }

    /// What each OSD holds, then the namespace, checked against each
    /// other; with `repair`, what was found handed to repair or deleted.
    async fn check(&self, repair: bool) -> Result<()> {
        let stored = self.stored().await?;
        let (files, deleting, stale) = self.namespace().await?;
        self.update(|r| r.files = files.len() as u64);
        let fix = self.check_replicas(&files, &stored, &stale).await?;
        let orphans = self.orphans(&files, &stored, &deleting);
        if repair {
            self.hand_to_repair(fix).await;
            self.delete_orphans(orphans).await;
        }
        Ok(())
    }

    /// The objects of the shards led here on each OSD that is up and
    /// answers, by OSD; the others are reported as skipped.
    async fn stored(&self) -> Result<Stored> {
        let cluster = &self.ns.cluster;
        let up = cluster.osds.up();
        let down: Vec<OsdId> = cluster.osds.infos().iter().map(|o| o.id).filter(|o| !up.contains(&o.0)).collect();
        self.update(|r| r.osds_skipped = down);
        let mut stored = Stored::new();
        for &osd in &up {
            match self.list(osd).await {
                Ok(mut objs) => {
                    objs.retain(|o, _| self.ns.leads(o.ino.shard()));
                    stored.insert(osd, objs);
                }
                // Up by the map but not answering: not checked, like a
                // down one.
                Err(e) if e.unreachable() => {
                    tracing::warn!(osd, error = %e, "fsck cannot reach an OSD; not checking it");
                    self.update(|r| r.osds_skipped.push(OsdId(osd)));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(stored)
    }

    /// Every replica of every file not open, on the OSDs listed and not
    /// already known stale: missing where another copy exists, or read
    /// whole and found corrupt. The replicas to rewrite, by inode.
    async fn check_replicas(&self, files: &[(u64, Layout)], stored: &Stored, stale: &HashSet<(u64, u32, u32)>) -> Result<BTreeMap<u64, Vec<Degraded>>> {
        let mut fix: BTreeMap<u64, Vec<Degraded>> = BTreeMap::new();
        for (ino, layout) in files {
            if self.ns.cluster.is_open(InodeId(*ino)) {
                self.update(|r| r.files_skipped += 1);
                continue;
            }
            for index in 0..layout.stripe_count {
                let obj = ObjectId { ino: InodeId(*ino), index };
                let reps: Vec<u32> = layout.object_osds(index).iter().map(|o| o.0).collect();
                let present = |o: u32| stored.get(&o).is_some_and(|m| m.contains_key(&obj));
                let anywhere = reps.iter().any(|&o| present(o));
                for &osd in reps.iter().filter(|o| stored.contains_key(o) && !stale.contains(&(*ino, index, **o))) {
                    let bad = match present(osd) {
                        false if anywhere => Some(FsckKind::Missing),
                        false => None,
                        true => self.verify(obj, osd).await?,
                    };
                    if let Some(kind) = bad {
                        self.found(kind, obj, osd);
                        fix.entry(*ino).or_default().push(Degraded { index, osd: OsdId(osd) });
                    }
                }
            }
            self.update(|r| r.files_done += 1);
        }
        Ok(fix)
    }

    /// Replica `obj` on `osd` read whole and its blocks checked: `Corrupt`
    /// if one fails its crc; nothing if it is sound, was deleted since the
    /// listing (the file went too), or the OSD cannot be reached.
    async fn verify(&self, obj: ObjectId, osd: u32) -> Result<Option<FsckKind>> {
        let verified = match self.osds.call(osd, &OsdReq::Verify { obj }).await {
            Err(e) if e.unreachable() => {
                tracing::warn!(%obj, osd, error = %e, "fsck cannot reach an OSD to verify a replica");
                return Ok(None);
            }
            r => r?,
        };
        match verified {
            OsdResp::Verified { exists: true, bad_blocks, .. } => {
                self.update(|r| r.replicas_verified += 1);
                Ok((bad_blocks > 0).then_some(FsckKind::Corrupt))
            }
            OsdResp::Verified { exists: false, .. } => Ok(None),
            _ => Err(Error::Protocol("unexpected reply to Verify".into())),
        }
    }

    /// Objects stored where no file's layout places them, with no delete
    /// pending for their inode.
    fn orphans(&self, files: &[(u64, Layout)], stored: &Stored, deleting: &HashSet<u64>) -> Vec<(ObjectId, u32)> {
        let layouts: BTreeMap<u64, &Layout> = files.iter().map(|(i, l)| (*i, l)).collect();
        let mut orphans = Vec::new();
        for (&osd, objs) in stored {
            for obj in objs.keys().filter(|o| !deleting.contains(&o.ino.0)) {
                if !placed(layouts.get(&obj.ino.0).copied(), *obj, osd) {
                    self.found(FsckKind::Orphan, *obj, osd);
                    orphans.push((*obj, osd));
                }
            }
        }
        orphans
    }

    /// Missing and corrupt replicas recorded as degraded, and repair woken.
    async fn hand_to_repair(&self, fix: BTreeMap<u64, Vec<Degraded>>) {
        for (ino, objs) in fix {
            let n = objs.len() as u64;
            match self.ns.mark_degraded(InodeId(ino), objs).await {
                Ok(()) => self.update(|r| r.fixed += n),
                Err(e) => tracing::warn!(ino, error = %e, "fsck could not hand replicas to repair"),
            }
        }
        self.repair.wake.notify_one();
    }

    /// Each orphan deleted if it still is one.
    async fn delete_orphans(&self, orphans: Vec<(ObjectId, u32)>) {
        let cluster = &self.ns.cluster;
        for (obj, osd) in orphans {
            // Checked again with the file held against repair's moves,
            // which copy an object to its new OSD before the layout names
            // it: a copy on its way is not an orphan.
            if !cluster.begin_repair(obj.ino) {
                continue;
            }
            let now = self.ns.getattr(obj.ino).await;
            if let Err(e) = now.as_ref().map(|_| ()).or_else(|e| if matches!(e, Error::NotFound) { Ok(()) } else { Err(e) }) {
                tracing::warn!(%obj, osd, error = %e, "fsck could not read the file of an object it found no layout for; kept");
            }
            let r = match still_orphan(&now, obj, osd) {
                false => None,
                true => Some(self.osds.call(osd, &OsdReq::Delete { obj }).await),
            };
            cluster.end_repair(obj.ino);
            match r {
                Some(Ok(_)) => self.update(|r| r.fixed += 1),
                Some(Err(e)) => tracing::warn!(%obj, osd, error = %e, "fsck could not delete an orphan object"),
                None => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_is_an_orphan_only_when_its_file_is_known_not_to_place_it() {
        let layout = Layout { stripe_size: 1 << 20, stripe_count: 1, replicas: 1, osds: vec![OsdId(1)] };
        let (home, elsewhere) = (1, 2);
        let obj = ObjectId { ino: InodeId(7), index: 0 };
        let mut a = Attr::new_file(InodeId(7), 0o644, 0, 0, layout, 0);
        assert!(!still_orphan(&Ok(a.clone()), obj, home));
        assert!(still_orphan(&Ok(a.clone()), obj, elsewhere));
        assert!(still_orphan(&Err(Error::NotFound), obj, home));
        for e in [Error::Io("disk".into()), Error::Unavailable("busy".into()), Error::Stale] {
            assert!(!still_orphan(&Err(e.clone()), obj, home), "{e:?} deleted an object");
        }
        a.layout = None;
        assert!(still_orphan(&Ok(a), obj, home));
    }
}
