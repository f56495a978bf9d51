//! `st_blocks`: the disk space a file's data holds on the OSDs, measured
//! after the file changes (a writer's flush or close, a truncate) and kept
//! in `store::ALLOCATED`, as ZFS reports a file's blocks once its writes
//! have settled. A sparse file counts only what its objects hold, so `du`
//! and sparse-aware copies see the truth, not its size.
//!
//! Changes are gathered for `SETTLE` and then measured together: a file
//! flushed by many ranks at once is measured once. Each object is asked of
//! one replica not recorded as stale, the others if that one does not
//! answer; a file none of whose replicas answers keeps its last figure.
use crate::gc::OsdClients;
use crate::namespace::Namespace;
use aifs_common::proto::osd::{OsdReq, OsdResp, MAX_ALLOCATED_QUERY};
use aifs_common::{Error, InodeId, ObjectId, OsdId, Result};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// How long changes gather before they are measured.
const SETTLE: Duration = Duration::from_secs(1);
/// Files queued at most; past it, new changes wait for the next figure of
/// files already queued or for a later change (the figure is advisory).
const MAX_QUEUED: usize = 100_000;

pub struct Meter {
    ns: Arc<Namespace>,
    osds: Arc<OsdClients>,
    queued: Mutex<HashSet<InodeId>>,
    wake: Notify,
}

impl Meter {
    pub fn new(ns: Arc<Namespace>, osds: Arc<OsdClients>) -> Self {
        Meter { ns, osds, queued: Mutex::new(HashSet::new()), wake: Notify::new() }
    }

    /// `ino`'s data changed: measure it soon.
    pub fn changed(&self, ino: InodeId) {
        if let Ok(mut q) = self.queued.lock() {
            if q.len() < MAX_QUEUED && q.insert(ino) && q.len() == 1 {
                self.wake.notify_one();
            }
        }
    }

    pub async fn run(self: Arc<Self>) {
        loop {
            self.wake.notified().await;
            tokio::time::sleep(SETTLE).await;
            let batch: Vec<InodeId> = match self.queued.lock() {
                Ok(mut q) => q.drain().collect(),
                Err(_) => return,
            };
            for ino in batch {
                match self.measure(ino).await {
                    Ok(Some(bytes)) => match self.ns.set_allocated(ino, bytes).await {
                        // Clients caching the file's attributes take the new
                        // figure; one slow to answer holds up no other file.
                        Ok(()) => {
                            let cl = self.ns.cluster.clone();
                            tokio::spawn(async move { cl.tell_allocated(ino, bytes).await });
                        }
                        Err(e) => e.log("recording a file's disk use failed"),
                    },
                    Ok(None) => {}
                    Err(e) => tracing::debug!(%ino, error = %e, "disk use not measured"),
                }
            }
        }
    }

    /// Bytes of disk `ino`'s objects hold, one replica each; `None` for a
    /// file gone or with no data.
    pub async fn measure(&self, ino: InodeId) -> Result<Option<u64>> {
        let layout = match self.ns.getattr(ino).await {
            Ok(a) => match a.layout {
                Some(l) => l,
                None => return Ok(None),
            },
            Err(Error::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        let stale: Vec<(u32, OsdId)> = self.ns.list_degraded(Some(ino)).await?.into_iter().map(|(_, d)| (d.index, d.osd)).collect();
        let (stale, layout) = (&stale, &layout);
        let healthy = move |k: u32| layout.object_osds(k).iter().copied().filter(move |o| !stale.contains(&(k, *o)));
        // One request per OSD, for the objects it is the first healthy
        // replica of; an OSD that does not answer, object by object then.
        let mut by_osd: BTreeMap<OsdId, Vec<ObjectId>> = BTreeMap::new();
        for k in 0..layout.stripe_count {
            if let Some(o) = healthy(k).next() {
                by_osd.entry(o).or_default().push(ObjectId { ino, index: k });
            }
        }
        let mut total = 0;
        for (osd, objs) in by_osd {
            for part in objs.chunks(MAX_ALLOCATED_QUERY) {
                match self.ask(osd, part.to_vec()).await {
                    Ok(v) => total += v.iter().sum::<u64>(),
                    Err(_) => {
                        for o in part {
                            total += self.object_held(*o, healthy(o.index).filter(|r| *r != osd)).await?;
                        }
                    }
                }
            }
        }
        Ok(Some(total))
    }

    async fn ask(&self, osd: OsdId, objs: Vec<ObjectId>) -> Result<Vec<u64>> {
        let n = objs.len();
        match self.osds.call(osd.0, &OsdReq::Allocated { objs }).await? {
            OsdResp::Allocated(v) if v.len() == n => Ok(v),
            other => Err(Error::Protocol(format!("unexpected reply to Allocated: {other:?}"))),
        }
    }

    /// One object's bytes, from the first of `replicas` that answers.
    async fn object_held(&self, obj: ObjectId, replicas: impl Iterator<Item = OsdId>) -> Result<u64> {
        let mut last = Error::Unavailable(format!("no replica of {obj} answered"));
        for osd in replicas {
            match self.ask(osd, vec![obj]).await {
                Ok(v) => return Ok(v.iter().sum()),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}
