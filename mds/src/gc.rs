//! Giving object space back: GC jobs recorded by unlink and truncate (in the
//! same transaction as the namespace change) are applied to the OSDs here,
//! then removed. A job whose OSD is down stays queued and is retried, so a
//! crash or an outage never leaks objects.
use crate::cluster::Cluster;
use crate::namespace::Namespace;
use crate::records::GcJob;
use crate::store::{IoResult, GC};
use aifs_common::certs::Role;
use aifs_common::proto::mds::Degraded;
use aifs_common::proto::osd::{OsdCall, OsdReq, OsdResp};
use aifs_common::rpc::RpcClient;
use aifs_common::{Error, InodeId, ObjectId, Result};
use dashmap::DashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Jobs taken from one shard per pass.
const GC_BATCH: usize = 256;
/// Jobs applied at once.
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
            .osd_addr(id)
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

pub struct Gc {
    pub ns: Arc<Namespace>,
    pub osds: Arc<OsdClients>,
    pub wake: tokio::sync::Notify,
    /// Jobs a request handler is applying itself (a truncate answers only
    /// after its cut): the background pass leaves them alone.
    claimed: std::sync::Mutex<std::collections::BTreeSet<(u32, u64)>>,
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

    pub fn claim(&self, shard: u32, id: u64) {
        if let Ok(mut c) = self.claimed.lock() {
            c.insert((shard, id));
        }
    }

    pub fn unclaim(&self, shard: u32, id: u64) {
        if let Ok(mut c) = self.claimed.lock() {
            c.remove(&(shard, id));
        }
    }

    fn is_claimed(&self, shard: u32, id: u64) -> bool {
        self.claimed.lock().map(|c| c.contains(&(shard, id))).unwrap_or(true)
    }

    /// A truncate left behind (its OSD was down when the request ran) is
    /// applied only while the file still has the size it cut to: once the
    /// file has been written or resized since, cutting again could destroy
    /// newer data, so the job is dropped.
    async fn still_wanted(&self, job: &GcJob) -> bool {
        match job.truncate_to {
            None => true,
            Some(size) => matches!(self.ns.getattr(InodeId(job.ino)).await, Ok(a) if a.size == size),
        }
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
        for s in &self.ns.shards {
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
            let jobs: Vec<_> = jobs.into_iter().filter(|(id, _)| !self.is_claimed(sid, *id)).collect();
            let mut finished = Vec::new();
            for chunk in jobs.chunks(GC_PARALLEL) {
                let rs = futures::future::join_all(chunk.iter().map(|(id, job)| async move {
                    match job {
                        Ok(job) if !self.still_wanted(job).await => {
                            tracing::warn!(ino = job.ino, "stale truncate job dropped: the file changed since");
                            Some(*id)
                        }
                        Ok(job) => match self.apply(job).await {
                            Ok(()) => Some(*id),
                            Err(e) => {
                                tracing::debug!(ino = job.ino, error = %e, "GC job deferred");
                                None
                            }
                        },
                        Err(e) => {
                            tracing::error!(shard = sid, job = id, error = %e, "corrupt GC record dropped");
                            Some(*id)
                        }
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
                        for id in finished {
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
