//! Giving object space back: GC jobs recorded by unlink and truncate (in the
//! same transaction as the namespace change) are applied to the OSDs here,
//! then removed. A job whose OSD is down stays queued and is retried, so a
//! crash or an outage never leaks objects.
use crate::cluster::Cluster;
use crate::cluster::Holder;
use crate::namespace::Namespace;
use crate::records::GcJob;
use crate::store::{IoResult, GC};
use aifs_common::certs::Role;
use aifs_common::proto::mds::Degraded;
use aifs_common::proto::osd::{OsdCall, OsdReq, OsdResp, MAX_DELETE_BATCH};
use aifs_common::rpc::RpcClient;
use aifs_common::lease::LeaseKind;
use aifs_common::{Error, InodeId, ObjectId, Result};
use dashmap::DashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Jobs taken from one shard per pass.
const GC_BATCH: usize = 1024;
/// Truncate jobs applied at once (deletes go out batched per OSD).
const GC_PARALLEL: usize = 16;
/// After a wake-up, wait this long so one pass (and one commit to clear
/// the queue) covers a burst of unlinks instead of one each.
const GC_DEBOUNCE: Duration = Duration::from_millis(500);

/// Connections from the MDS to OSDs, made on first use.
pub struct OsdClients {
    endpoint: quinn::Endpoint,
    cluster: Arc<Cluster>,
    clients: DashMap<u32, Arc<RpcClient>>,
}

impl OsdClients {
    pub fn new(endpoint: quinn::Endpoint, cluster: Arc<Cluster>) -> Self {
        OsdClients { endpoint, cluster, clients: DashMap::new() }
    }

    pub fn get(&self, id: u32) -> Result<Arc<RpcClient>> {
        let addr: SocketAddr = self
            .cluster
            .osds.addr(id)
            .ok_or_else(|| Error::Unavailable(format!("osd.{id} unknown")))?
            .parse()
            .map_err(|_| Error::Unavailable(format!("osd.{id} has a bad address")))?;
        if let Some(c) = self.clients.get(&id) {
            if c.addr() == addr {
                return Ok(c.clone());
            }
        }
        let c = Arc::new(RpcClient::new(self.endpoint.clone(), addr, Role::Osd));
        self.clients.insert(id, c.clone());
        Ok(c)
    }

    /// Ask OSDs `ids` to heartbeat now (`OsdReq::Beat`): a process that
    /// has just taken the lead waits for them in its grace. One that does
    /// not answer within a second beats in its own time.
    pub async fn ask_to_beat(&self, ids: Vec<u32>) {
        let asked = ids.into_iter().map(|id| async move {
            match tokio::time::timeout(Duration::from_secs(1), self.call(id, &OsdReq::Beat)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::debug!(osd = id, error = %e, "asking an OSD to heartbeat now"),
                Err(_) => tracing::debug!(osd = id, "asking an OSD to heartbeat now: no answer"),
            }
        });
        futures::future::join_all(asked).await;
    }

    pub async fn call(&self, id: u32, req: &OsdReq) -> Result<OsdResp> {
        self.call_with(id, req, &[]).await.map(|r| r.0)
    }

    /// A call with payloads both ways (object data). The MDS's own
    /// requests need no capability: its certificate's role allows them.
    pub async fn call_with(&self, id: u32, req: &OsdReq, payload: &[bytes::Bytes]) -> Result<(OsdResp, bytes::Bytes)> {
        let c = self.get(id)?;
        match c.call::<_, OsdResp>(&OsdCall::from(req.clone()), payload).await? {
            (OsdResp::Err(e), _) => Err(Error::from_wire(e.code, &e.msg)),
            r => Ok(r),
        }
    }
}

/// How long a replayed truncate waits for the file's writers to give
/// their leases back before it is deferred to a later pass.
const REPLAY_LEASE_WAIT: Duration = Duration::from_secs(2);

/// A request's hold on a file's GC jobs (`Gc::claim`).
pub struct Claim {
    gc: Arc<Gc>,
    ino: u64,
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Ok(mut c) = self.gc.claimed.lock() {
            if let Some(n) = c.get_mut(&self.ino) {
                *n -= 1;
                if *n == 0 {
                    c.remove(&self.ino);
                }
            }
        }
    }
}

#[derive(Debug, PartialEq)]
enum Replay {
    Apply,
    /// The job no longer applies: forget it.
    Drop,
    /// Not now: a later pass looks again.
    Defer,
}

/// A queued truncate to `cut_to` for a file that now has `size` (`None`:
/// the file is gone; its delete frees the objects). While anyone else may
/// be writing, bytes past `cut_to` may be written but not yet published,
/// so the size says nothing: wait. Once nobody writes, a file of another
/// size has been written or resized since, and cutting could destroy the
/// newer data.
fn replay_truncate(cut_to: u64, size: Option<u64>, written: bool) -> Replay {
    match size {
        None => Replay::Drop,
        Some(_) if written => Replay::Defer,
        Some(s) if s == cut_to => Replay::Apply,
        Some(_) => Replay::Drop,
    }
}

pub struct Gc {
    pub ns: Arc<Namespace>,
    pub osds: Arc<OsdClients>,
    pub wake: tokio::sync::Notify,
    /// Files a request handler is truncating itself (a truncate answers
    /// only after its cut), with how many: the background pass leaves their
    /// jobs alone.
    claimed: std::sync::Mutex<std::collections::BTreeMap<u64, usize>>,
    /// Per shard, the job id the next pass starts after, so a run of jobs
    /// stuck on a down OSD does not hide the ones behind it.
    cursor: std::sync::Mutex<std::collections::BTreeMap<u32, u64>>,
}

impl Gc {
    pub fn new(ns: Arc<Namespace>, osds: Arc<OsdClients>) -> Self {
        Gc {
            ns,
            osds,
            wake: tokio::sync::Notify::new(),
            claimed: std::sync::Mutex::new(Default::default()),
            cursor: std::sync::Mutex::new(Default::default()),
        }
    }

    /// Keep the background pass off `ino`'s jobs until the claim is dropped.
    pub fn claim(self: &Arc<Self>, ino: InodeId) -> Claim {
        if let Ok(mut c) = self.claimed.lock() {
            *c.entry(ino.0).or_default() += 1;
        }
        Claim { gc: self.clone(), ino: ino.0 }
    }

    fn is_claimed(&self, ino: u64) -> bool {
        self.claimed.lock().map(|c| c.contains_key(&ino)).unwrap_or(true)
    }

    /// Whether to apply `job` now. A truncate left behind (its OSD was
    /// down when the request ran) waits while any client has the file open
    /// for writing, and is replayed under a write lease the MDS takes on
    /// the file itself: holders of write leases are recalled first, so
    /// they publish what they wrote, and none can write while the cut runs.
    /// The returned holder keeps that lease until it is dropped.
    async fn replay(&self, job: &GcJob) -> (Replay, Option<Holder>) {
        let Some(cut_to) = job.truncate_to else { return (Replay::Apply, None) };
        let ino = InodeId(job.ino);
        let cl = &self.ns.cluster;
        if cl.any_writer(ino) {
            return (Replay::Defer, None);
        }
        let h = cl.own_holder(false);
        if !matches!(tokio::time::timeout(REPLAY_LEASE_WAIT, cl.acquire(&h, ino, LeaseKind::Write)).await, Ok(Ok(_))) {
            return (Replay::Defer, None);
        }
        let size = match self.ns.getattr(ino).await {
            Ok(a) => Some(a.size),
            Err(Error::NotFound) => None,
            Err(_) => return (Replay::Defer, None),
        };
        (replay_truncate(cut_to, size, cl.any_writer(ino)), Some(h))
    }

    /// Apply a job on every OSD holding one of the file's objects. A
    /// truncate that reaches some replicas of an object but not others
    /// counts as done: those it missed are recorded as degraded (they
    /// still hold the bytes cut off), read by nobody, and rewritten by
    /// repair from a replica that was cut.
    pub async fn apply(&self, job: &GcJob) -> Result<()> {
        let l = &job.layout;
        let mut calls = Vec::new();
        let mut targets = Vec::new();
        for k in 0..l.stripe_count {
            let obj = ObjectId { ino: InodeId(job.ino), index: k };
            let req = match job.truncate_to {
                Some(size) => OsdReq::Truncate { obj, size: l.object_size(size, k) },
                None => OsdReq::Delete { obj },
            };
            for osd in l.object_osds(k) {
                let req = req.clone();
                let id = osd.0;
                targets.push(Degraded { index: k, osd: *osd });
                calls.push(async move { self.osds.call(id, &req).await });
            }
        }
        let mut missed = Vec::new();
        for (t, r) in targets.iter().zip(futures::future::join_all(calls).await) {
            match r {
                Ok(_) => {}
                Err(e) if job.truncate_to.is_some() && e.unreachable() => missed.push((*t, e)),
                Err(e) => return Err(e),
            }
        }
        if missed.is_empty() {
            return Ok(());
        }
        // An object none of whose replicas was cut waits for the next pass.
        for k in 0..l.stripe_count {
            let all = l.object_osds(k).len();
            if missed.iter().filter(|(t, _)| t.index == k).count() == all {
                if let Some((_, e)) = missed.into_iter().find(|(t, _)| t.index == k) {
                    return Err(e);
                }
                return Err(Error::Unavailable(format!("no replica of object {k} of inode {} reached", job.ino)));
            }
        }
        let objs: Vec<Degraded> = missed.into_iter().map(|(t, _)| t).collect();
        tracing::warn!(ino = job.ino, ?objs, "replicas not reached by a truncate; recorded as degraded");
        self.ns.mark_degraded(InodeId(job.ino), objs).await
    }

    /// Delete the objects of every job in `jobs` (deletes all), batched
    /// per OSD: one request per OSD for up to `MAX_DELETE_BATCH` objects
    /// instead of one per object. Returns the ids of the jobs whose every
    /// OSD answered; the others wait for a later pass.
    async fn delete_batched(&self, jobs: &[(u64, &GcJob)]) -> Vec<u64> {
        let mut per_osd: std::collections::BTreeMap<u32, Vec<(ObjectId, u64)>> = Default::default();
        for (id, job) in jobs {
            let l = &job.layout;
            for k in 0..l.stripe_count {
                for osd in l.object_osds(k) {
                    per_osd.entry(osd.0).or_default().push((ObjectId { ino: InodeId(job.ino), index: k }, *id));
                }
            }
        }
        let calls = per_osd.iter().flat_map(|(osd, objs)| objs.chunks(MAX_DELETE_BATCH).map(move |c| (*osd, c)));
        let results = futures::future::join_all(calls.map(|(osd, chunk)| async move {
            let req = OsdReq::DeleteMany { objs: chunk.iter().map(|(o, _)| *o).collect() };
            (chunk, self.osds.call(osd, &req).await)
        }))
        .await;
        let mut failed = std::collections::BTreeSet::new();
        for (chunk, r) in results {
            if let Err(e) = r {
                tracing::debug!(objects = chunk.len(), error = %e, "GC deletes deferred");
                failed.extend(chunk.iter().map(|(_, id)| *id));
            }
        }
        jobs.iter().map(|(id, _)| *id).filter(|id| !failed.contains(id)).collect()
    }

    pub async fn remove(&self, shard: u32, id: u64) -> Result<()> {
        self.ns
            .shard(shard)
            .mutate(move |txn| {
                txn.open_table(GC).io()?.remove(id).io()?;
                Ok(())
            })
            .await
    }

    /// One pass over every shard's queue; returns jobs completed.
    pub async fn pass(&self) -> usize {
        let mut done = 0;
        for s in self.ns.led() {
            let sid = s.id;
            let after = self.cursor.lock().ok().and_then(|c| c.get(&sid).copied()).unwrap_or(0);
            let jobs = s
                .read(move |t| {
                    let mut v = Vec::new();
                    for r in t.open_table(GC).io()?.range(after..).io()?.take(GC_BATCH) {
                        let (k, val) = r.io()?;
                        v.push((k.value(), GcJob::decode(val.value())));
                    }
                    Ok(v)
                })
                .await;
            let jobs = match jobs {
                Ok(j) => j,
                Err(e) => {
                    tracing::warn!(shard = sid, error = %e, "cannot read GC queue");
                    continue;
                }
            };
            if let Ok(mut c) = self.cursor.lock() {
                // Resume after this batch next time; wrap to the start when
                // the queue's end was reached.
                let next = if jobs.len() < GC_BATCH { 0 } else { jobs.last().map(|j| j.0 + 1).unwrap_or(0) };
                c.insert(sid, next);
            }
            let jobs: Vec<_> = jobs.into_iter().filter(|(_, j)| !j.as_ref().is_ok_and(|j| self.is_claimed(j.ino))).collect();
            // Deletes go out together; truncates (and corrupt records)
            // one by one below.
            let (deletes, jobs): (Vec<_>, Vec<_>) = jobs.into_iter().partition(|(_, j)| j.as_ref().is_ok_and(|j| j.truncate_to.is_none()));
            let deletes: Vec<(u64, &GcJob)> = deletes.iter().filter_map(|(id, j)| j.as_ref().ok().map(|j| (*id, j))).collect();
            let mut finished = self.delete_batched(&deletes).await;
            for chunk in jobs.chunks(GC_PARALLEL) {
                let rs = futures::future::join_all(chunk.iter().map(|(id, job)| async move {
                    let job = match job {
                        Ok(job) => job,
                        Err(e) => {
                            tracing::error!(shard = sid, job = id, error = %e, "corrupt GC record dropped");
                            return Some(*id);
                        }
                    };
                    let (replay, _lease) = self.replay(job).await;
                    match replay {
                        Replay::Drop => {
                            tracing::warn!(ino = job.ino, "stale truncate job dropped: the file changed since");
                            Some(*id)
                        }
                        Replay::Defer => None,
                        Replay::Apply => match self.apply(job).await {
                            Ok(()) => Some(*id),
                            Err(e) => {
                                tracing::debug!(ino = job.ino, error = %e, "GC job deferred");
                                None
                            }
                        },
                    }
                }))
                .await;
                finished.extend(rs.into_iter().flatten());
            }
            if !finished.is_empty() {
                let n = finished.len();
                let r = s
                    .mutate(move |txn| {
                        let mut gc = txn.open_table(GC).io()?;
                        for &id in &finished {
                            gc.remove(id).io()?;
                        }
                        Ok(())
                    })
                    .await;
                match r {
                    Ok(()) => done += n,
                    Err(e) => tracing::warn!(shard = sid, error = %e, "cannot clear GC jobs"),
                }
            }
        }
        done
    }

    pub async fn run(self: Arc<Self>) {
        loop {
            let n = self.pass().await;
            if n == 0 {
                tokio::select! {
                    _ = self.wake.notified() => tokio::time::sleep(GC_DEBOUNCE).await,
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_truncate_is_replayed_only_on_a_file_nobody_writes_that_kept_its_size() {
        assert_eq!(replay_truncate(100, Some(100), false), Replay::Apply);
        // bytes past 100 may be written but not yet published: not cut
        assert_eq!(replay_truncate(100, Some(100), true), Replay::Defer);
        assert_eq!(replay_truncate(100, Some(5000), true), Replay::Defer);
        assert_eq!(replay_truncate(100, Some(5000), false), Replay::Drop);
        assert_eq!(replay_truncate(100, None, false), Replay::Drop);
    }
}
