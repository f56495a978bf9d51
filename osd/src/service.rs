//! OSD request handling: one function per request, each running the store
//! on a blocking thread (STYLE.md §4), and the heartbeat loop to the MDS.
use crate::config::{OsdConfig, OsdLimits};
use crate::store::file::FileStore;
use crate::store::{range_of, ObjectStore, ReadOut, Usage};
use aifs_common::certs::Role;
use aifs_common::proto::mds::{MdsCall, MdsReply, MdsReq, MdsResp, OsdUsage};
use aifs_common::cap::{self, Cap, Keyring};
use aifs_common::proto::osd::{Needs, OsdCall, OsdReq, OsdResp, OsdStats, MAX_ALLOCATED_QUERY, MAX_DELETE_BATCH};
use aifs_common::metrics::{MetricsServer, RpcMetrics};
use aifs_common::rpc::{self, Budget, Identity, Peer, RpcClient, Service};
use prometheus_client::registry::Registry;
use aifs_common::{Error, ObjectId, OsdId, Result};
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub struct OsdService {
    store: Arc<dyn ObjectStore>,
    served: Arc<Served>,
    /// The keys that authenticate clients' capabilities, from the MDS's
    /// heartbeat replies.
    keys: Arc<RwLock<Keyring>>,
    /// Object bytes in flight, per connection and in all.
    budget: Budget,
    /// Requests counted for the metrics endpoint, if there is one.
    rpc: Option<Arc<RpcMetrics>>,
    /// Wakes the heartbeat loop (`OsdReq::Beat`).
    beat: Arc<tokio::sync::Notify>,
}

/// Counters behind `OsdReq::Stats`.
#[derive(Default)]
struct Served {
    reads: AtomicU64,
    read_bytes: AtomicU64,
    writes: AtomicU64,
    write_bytes: AtomicU64,
}

impl Served {
    fn count(counter: &AtomicU64, bytes: &AtomicU64, n: usize) {
        counter.fetch_add(1, Ordering::Relaxed);
        bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn stats(&self) -> OsdStats {
        OsdStats {
            reads: self.reads.load(Ordering::Relaxed),
            read_bytes: self.read_bytes.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            write_bytes: self.write_bytes.load(Ordering::Relaxed),
        }
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::Io(format!("store task failed: {e}")))?
}

/// Reads up to this length run on the worker itself: a page-cache hit or
/// one small disk read costs less than `spawn_blocking`'s two thread
/// hand-offs (4 KiB random reads at QD1: a fifth less latency and CPU;
/// `block_in_place` gained nothing). Longer ones would hold the worker's
/// other connections too long.
const INLINE_READ_MAX: u32 = 128 * 1024;

/// A read of `len` bytes: on the worker itself if it is small and the
/// object is free (`ObjectStore::read_now`; a worker never waits on an
/// object's lock, which a long write or check may hold), else on a
/// blocking thread.
async fn read_object(store: &Arc<dyn ObjectStore>, obj: ObjectId, off: u64, len: u32) -> Result<ReadOut> {
    if len <= INLINE_READ_MAX {
        if let Some(r) = store.read_now(obj, off, len as u64) {
            return r;
        }
    }
    let store = store.clone();
    blocking(move || store.read(obj, off, len as u64)).await
}

impl OsdService {
    pub fn new(store: Arc<dyn ObjectStore>, keys: Arc<RwLock<Keyring>>, limits: &OsdLimits, rpc: Option<Arc<RpcMetrics>>) -> Self {
        let budget = Budget::new(limits.inflight_mb << 20, limits.inflight_per_conn_mb << 20);
        OsdService { store, served: Arc::new(Served::default()), keys, budget, rpc, beat: Default::default() }
    }

    /// May `role` ask for `req` with `cap`? The mds and admin roles may do
    /// anything; a client needs a capability over the object's file that
    /// grants what the request does (common/src/cap.rs), and may not list,
    /// verify, stat, truncate or delete at all.
    fn authorize(&self, role: Role, cap: Option<&Cap>, req: &OsdReq) -> Result<()> {
        if matches!(role, Role::Mds | Role::Admin) {
            return Ok(());
        }
        match req.needs() {
            Needs::Nothing => Ok(()),
            Needs::Operator => Err(Error::Unauthorized(format!("a {} certificate cannot do this", role.name()))),
            Needs::Cap(obj, rights) => {
                let keys = self.keys.read().map_err(|_| Error::Io("capability keys poisoned".into()))?;
                if keys.is_empty() {
                    // Not heard from the MDS since it started: not ready,
                    // as if down (a write goes on with the other replicas).
                    return Err(Error::Unavailable("OSD has no capability keys from the MDS yet".into()));
                }
                keys.check(cap, obj, rights, cap::now_ms())
            }
        }
    }

    /// A read's reply length on the wire, counted as served.
    fn served_read(&self, data: &Bytes) -> Result<u32> {
        let n = u32::try_from(data.len()).map_err(|_| Error::Io("read reply too large".into()))?;
        Served::count(&self.served.reads, &self.served.read_bytes, data.len());
        Ok(n)
    }

    async fn handle(&self, req: OsdReq, payload: Bytes) -> Result<(OsdResp, Vec<Bytes>)> {
        let store = self.store.clone();
        match req {
            OsdReq::Write { obj, off, len, crcs } => {
                if payload.len() != len as usize {
                    return Err(Error::Protocol("payload length differs from header".into()));
                }
                let n = payload.len();
                blocking(move || store.write(obj, off, &payload, &crcs)).await?;
                Served::count(&self.served.writes, &self.served.write_bytes, n);
                Ok((OsdResp::Done, vec![]))
            }
            OsdReq::Read { obj, off, len } => {
                let out = read_object(&store, obj, off, len).await?;
                let n = self.served_read(&out.data)?;
                let resp = OsdResp::Data { off: out.off, len: n, crcs: out.crcs, obj_size: out.obj_size };
                Ok((resp, vec![out.data]))
            }
            OsdReq::ReadRange { obj, off, len } => {
                let out = range_of(obj, read_object(&store, obj, off, len).await?, off, len as u64)?;
                let n = self.served_read(&out.data)?;
                Ok((OsdResp::Range { off, len: n, crc: out.crc, obj_size: out.obj_size }, vec![out.data]))
            }
            OsdReq::Truncate { obj, size } => {
                blocking(move || store.truncate(obj, size)).await?;
                Ok((OsdResp::Done, vec![]))
            }
            OsdReq::Delete { obj } => {
                blocking(move || store.delete(&[obj])).await?;
                Ok((OsdResp::Done, vec![]))
            }
            OsdReq::DeleteMany { objs } => {
                if objs.len() > MAX_DELETE_BATCH {
                    return Err(Error::InvalidArgument(format!("{} objects in one delete; at most {MAX_DELETE_BATCH}", objs.len())));
                }
                blocking(move || store.delete(&objs)).await?;
                Ok((OsdResp::Done, vec![]))
            }
            OsdReq::Stat { obj } => {
                let st = blocking(move || store.stat(obj)).await?;
                Ok((OsdResp::Stat { exists: st.is_some(), size: st.unwrap_or(0) }, vec![]))
            }
            OsdReq::Commit { objs } => {
                blocking(move || store.commit(&objs)).await?;
                Ok((OsdResp::Done, vec![]))
            }
            OsdReq::List { after, max } => {
                let max = (max as usize).clamp(1, 100_000);
                let v = blocking(move || store.list(after, max)).await?;
                Ok((OsdResp::Objects(v), vec![]))
            }
            OsdReq::Verify { obj } => {
                let r = blocking(move || store.verify(obj)).await?;
                let (exists, size, bad_blocks) = match r {
                    Some((size, bad)) => (true, size, bad),
                    None => (false, 0, 0),
                };
                Ok((OsdResp::Verified { exists, size, bad_blocks }, vec![]))
            }
            OsdReq::Stats => Ok((OsdResp::Stats(self.served.stats()), vec![])),
            OsdReq::Allocate { obj, off, len, mode } => {
                blocking(move || store.allocate(obj, off, len, mode)).await?;
                Ok((OsdResp::Done, vec![]))
            }
            OsdReq::Allocated { objs } => {
                if objs.len() > MAX_ALLOCATED_QUERY {
                    return Err(Error::InvalidArgument(format!("{} objects asked, at most {MAX_ALLOCATED_QUERY}", objs.len())));
                }
                let v = blocking(move || objs.iter().map(|&o| store.allocated(o)).collect::<Result<Vec<u64>>>()).await?;
                Ok((OsdResp::Allocated(v), vec![]))
            }
            OsdReq::Beat => {
                self.beat.notify_one();
                Ok((OsdResp::Done, vec![]))
            }
            OsdReq::Usage => {
                let u = blocking(move || store.usage()).await?;
                Ok((OsdResp::Usage { capacity: u.capacity, used: u.used, objects: u.objects }, vec![]))
            }
        }
    }
}

impl Service for OsdService {
    type Req = OsdCall;
    type Resp = OsdResp;

    async fn call(&self, peer: &Arc<Peer>, call: OsdCall, payload: Bytes) -> (OsdResp, Vec<Bytes>) {
        let OsdCall { cap, req } = call;
        let r = match self.authorize(peer.role, cap.as_ref(), &req) {
            Ok(()) => self.handle(req, payload).await,
            Err(e) => Err(e),
        };
        match r {
            Ok(r) => r,
            Err(e) => {
                e.log(&format!("osd request from {} failed", peer.addr));
                (OsdResp::Err(e.to_wire()), vec![])
            }
        }
    }

    fn error(e: Error) -> OsdResp {
        OsdResp::Err(e.to_wire())
    }

    fn accepts(&self, role: Role) -> bool {
        matches!(role, Role::Client | Role::Mds | Role::Admin)
    }

    fn budget(&self) -> Option<&Budget> {
        Some(&self.budget)
    }

    fn cost(&self, call: &OsdCall) -> u64 {
        match call.req {
            OsdReq::Write { len, .. } | OsdReq::Read { len, .. } | OsdReq::ReadRange { len, .. } => u64::from(len),
            _ => 0,
        }
    }

    fn metrics(&self) -> Option<&RpcMetrics> {
        self.rpc.as_deref()
    }

    fn op_name(call: &OsdCall) -> &'static str {
        call.req.name()
    }

    fn error_kind(resp: &OsdResp) -> Option<&'static str> {
        match resp {
            OsdResp::Err(w) => Some(aifs_common::metrics::wire_error_kind(w)),
            _ => None,
        }
    }
}

/// A running OSD.
pub struct OsdHandle {
    pub addr: SocketAddr,
    endpoint: quinn::Endpoint,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The metrics endpoint, if configured; stops at shutdown.
    metrics: std::sync::Mutex<Option<MetricsServer>>,
}

impl OsdHandle {
    pub fn shutdown(&self) {
        if let Ok(mut m) = self.metrics.lock() {
            m.take();
        }
        self.endpoint.close(0u32.into(), b"shutdown");
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Drop for OsdHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// How often an OSD that lost the MDS says it still cannot reach it.
const STILL_UNREACHABLE: Duration = Duration::from_secs(5);

/// Open the store, listen, and start heartbeating to the MDS.
pub async fn start(cfg: OsdConfig) -> Result<OsdHandle> {
    let id = Identity::load(&cfg.tls)?;
    let store: Arc<dyn ObjectStore> = Arc::new(FileStore::open(&cfg.data_dir)?);
    // the revoked certificates, as the MDS last sent them
    let gate = Arc::new(rpc::Gate::default());
    let endpoint = rpc::server_endpoint(cfg.listen, &id, &cfg.transport, gate.clone())?;
    let addr = endpoint.local_addr()?;
    let advertise = cfg.advertise.unwrap_or(addr);
    let keys = Arc::new(RwLock::new(Keyring::default()));
    let mut registry = Registry::with_prefix("aifs_osd");
    let rpc_metrics = RpcMetrics::register(&mut registry);
    let counted = cfg.metrics_listen.as_ref().map(|_| rpc_metrics);
    let svc = Arc::new(OsdService::new(store.clone(), keys.clone(), &cfg.limits, counted));
    let metrics = match &cfg.metrics_listen {
        Some(listen) => Some(crate::metrics::start(listen, registry, store.clone())?),
        None => None,
    };
    let heartbeat = Heartbeat {
        mds: RpcClient::of_members(endpoint.clone(), &cfg.mds, &id, &cfg.transport)?.with_first_check(rpc::leader::BEAT_CHECK),
        store,
        gate: gate.clone(),
        keys,
        served: svc.served.clone(),
        beat: svc.beat.clone(),
        id: cfg.id,
        advertise,
        period: Duration::from_millis(cfg.heartbeat_ms.max(50)),
    };
    let serve = tokio::spawn(rpc::serve(endpoint.clone(), svc, gate));
    let hb = tokio::spawn(heartbeat.run());
    tracing::info!(osd = cfg.id, %addr, data = %cfg.data_dir.display(), "OSD serving");
    Ok(OsdHandle { addr, endpoint, tasks: vec![serve, hb], metrics: std::sync::Mutex::new(metrics) })
}

/// An OSD's heartbeat to the MDS: its address and usage told, the
/// capability keys and revoked certificates the answer brings installed.
struct Heartbeat {
    mds: RpcClient,
    store: Arc<dyn ObjectStore>,
    gate: Arc<rpc::Gate>,
    keys: Arc<RwLock<Keyring>>,
    served: Arc<Served>,
    /// Wakes the loop before its period (`OsdReq::Beat`).
    beat: Arc<tokio::sync::Notify>,
    id: u32,
    advertise: SocketAddr,
    period: Duration,
}

impl Heartbeat {
    async fn run(self) {
        let mut registered = false;
        let mut unreachable_since = None;
        let mut learned = None;
        loop {
            if registered {
                rpc::leader::learn_members_when_due(&self.mds, &mut learned).await;
            }
            // A connection just lost (an MDS restart resets it) is made
            // again at once: a restarted MDS waits for its OSDs.
            let mut pause = self.period;
            let usage = {
                let s = self.store.clone();
                blocking(move || s.usage()).await
            };
            match usage {
                Ok(u) => {
                    let Some(answer) = self.send(u).await else { continue };
                    match answer {
                        Ok(MdsReply { resp: MdsResp::OsdBeat { keys, revoked }, .. }) => {
                            self.install(&keys, revoked);
                            if !registered {
                                tracing::info!(osd = self.id, mds = %self.mds.addr(), "registered with MDS");
                                registered = true;
                            }
                        }
                        Ok(MdsReply { resp: MdsResp::Err(e), .. }) => {
                            tracing::warn!(code = e.code, msg = %e.msg, "MDS refused heartbeat")
                        }
                        Ok(_) => tracing::warn!("unexpected heartbeat reply"),
                        Err(e) => {
                            if registered {
                                tracing::warn!(error = %e, "heartbeat to MDS failed");
                                pause = self.period.min(Duration::from_millis(100));
                                unreachable_since = Some(std::time::Instant::now());
                            } else if unreachable_since.is_some_and(|t: std::time::Instant| t.elapsed() >= STILL_UNREACHABLE) {
                                // Still failing: say so now and then, with why.
                                tracing::warn!(error = %e, "MDS still unreachable");
                                unreachable_since = Some(std::time::Instant::now());
                            }
                            registered = false;
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read disk usage"),
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = self.beat.notified() => {}
            }
        }
    }

    /// One heartbeat with usage `u`: the MDS's answer, or None when
    /// another member of a replicated MDS leads and it is to be sent
    /// there at once.
    async fn send(&self, u: Usage) -> Option<Result<MdsReply>> {
        let req = MdsReq::OsdHeartbeat {
            id: OsdId(self.id),
            addr: self.advertise.to_string(),
            usage: OsdUsage { capacity: u.capacity, used: u.used, objects: u.objects, served: self.served.stats() },
            revoked_known: self.gate.revoked_count() as u32,
        };
        let sent = self.mds.call::<_, MdsReply>(&MdsCall::from(req), &[]).await.map(|(r, _)| r);
        match rpc::leader::follow(&self.mds, sent).await {
            rpc::leader::Next::Done(r) => Some(r),
            rpc::leader::Next::Again(p) => {
                tokio::time::sleep(p).await;
                None
            }
        }
    }

    /// The keys (and revoked certificates, when the list changed) from
    /// the MDS's answer, put to use.
    fn install(&self, keys: &[aifs_common::cap::CapKey], revoked: Option<Vec<aifs_common::ids::Owner>>) {
        match self.keys.write() {
            Ok(mut ring) => ring.install(keys),
            Err(_) => tracing::error!("capability keys poisoned"),
        }
        if let Some(owners) = revoked {
            let closed = self.gate.revoke(owners);
            tracing::info!(revoked = self.gate.revoked_count(), closed, "revocation list updated");
        }
    }
}
