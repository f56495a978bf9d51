//! Connections from the client to the MDS and the OSDs. The OSD map comes
//! from the MDS and is refreshed when an OSD is unknown or unreachable.
//!
//! MDS requests ride out an MDS restart: one that cannot reach the MDS is
//! sent again, with a growing pause, for up to `mds_retry_secs`. Requests
//! that would differ if applied twice carry a request id, so the MDS
//! answers a retry of one it already applied from its record.
use aifs_common::certs::Role;
use aifs_common::proto::mds::{MdsCall, MdsReply, MdsReq, MdsResp, OsdState, ReqId};
use aifs_common::proto::osd::{OsdCall, OsdResp};
use aifs_common::ids::mix;
use aifs_common::rpc::RpcClient;
use crate::route::{Proc, Routes};
use aifs_common::perm::Cred;
use aifs_common::{Error, OsdId, Result, SessionId};
use bytes::Bytes;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// First and longest pause between attempts to reach the MDS.
const MDS_RETRY_MIN: Duration = Duration::from_millis(50);
const MDS_RETRY_MAX: Duration = Duration::from_secs(1);

pub struct Pool {
    endpoint: quinn::Endpoint,
    /// Shard 0's leader, where everything goes but what `routes` sends
    /// elsewhere.
    pub mds: RpcClient,
    /// Shards led by other MDS processes (client/src/route.rs).
    pub routes: Routes,
    osds: RwLock<HashMap<OsdId, Arc<RpcClient>>>,
    /// OSDs the MDS marked down in the last map fetched.
    down: RwLock<HashSet<OsdId>>,
    refresh: tokio::sync::Mutex<()>,
    /// Request ids: this mount's, the next number, and the numbers whose
    /// answer has not arrived.
    client: u64,
    next_seq: AtomicU64,
    unanswered: Mutex<BTreeSet<u64>>,
    /// How long a request is retried while the MDS cannot be reached.
    mds_retry: Duration,
}

/// A request number, unanswered while this is held.
struct Ticket<'a> {
    pool: &'a Pool,
    seq: u64,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if let Ok(mut u) = self.pool.unanswered.lock() {
            u.remove(&self.seq);
        }
    }
}

impl Pool {
    /// `mds`: a client of the MDS (of its members, if replicated).
    pub fn new(endpoint: quinn::Endpoint, mds: RpcClient, mds_retry: Duration) -> Self {
        // Unique enough across every mount a cluster sees: the clock, the
        // process and the endpoint's port, mixed.
        let port = endpoint.local_addr().map(|a| a.port() as u64).unwrap_or(0);
        let seed = (aifs_common::time::now_ns() as u64) ^ ((std::process::id() as u64) << 32) ^ (port << 48);
        Pool {
            mds,
            routes: Routes::default(),
            endpoint,
            osds: RwLock::new(HashMap::new()),
            down: RwLock::new(HashSet::new()),
            refresh: tokio::sync::Mutex::new(()),
            client: mix(seed).max(1),
            next_seq: AtomicU64::new(1),
            unanswered: Mutex::new(BTreeSet::new()),
            mds_retry,
        }
    }

    fn ticket(&self) -> Ticket<'_> {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut u) = self.unanswered.lock() {
            u.insert(seq);
        }
        Ticket { pool: self, seq }
    }

    /// One MDS call; an error reply becomes `Err`.
    pub async fn mds(&self, req: &MdsReq) -> Result<MdsResp> {
        self.mds_leased(req).await.0
    }

    /// One MDS call, with the session its leases were granted under (0:
    /// none). An error reply may carry one too: a negative lookup is cached
    /// under the directory's lease. While the MDS cannot be reached the
    /// request is sent again, except a heartbeat or a session close, whose
    /// senders want to know at once.
    pub async fn mds_leased(&self, req: &MdsReq) -> (Result<MdsResp>, Option<SessionId>) {
        let ticket = req.carries_id().then(|| self.ticket());
        let retries = req.rule().retried;
        let started = Instant::now();
        let mut pause = MDS_RETRY_MIN;
        let mut attempt = 0u32;
        let cred = crate::cred::current();
        // A shard other than 0 may be led by another process.
        let shard = req.routed_by().map(|i| i.shard()).filter(|s| *s != 0 && !req.per_process());
        if matches!(req, MdsReq::OpenSession { .. }) {
            self.find_home().await;
        }
        loop {
            let rid = ticket.as_ref().map(|t| ReqId {
                client: self.client,
                seq: t.seq,
                oldest: self.unanswered.lock().ok().and_then(|u| u.first().copied()).unwrap_or(t.seq),
                retry: attempt > 0,
            });
            let proc = shard.and_then(|s| self.routes.proc_for(s, self.mds.addr(), &self.endpoint));
            let (r, session) = match self.send(proc.as_deref(), req, rid, cred.clone()).await {
                Ok(MdsReply { session, resp: MdsResp::Err(e) }) => match Error::from_wire(e.code, &e.msg) {
                    // A member that does not lead: go to the one it names.
                    Error::NotLeader(hint) => (Err(Error::NotLeader(hint)), None),
                    e => return (Err(e), session),
                },
                Ok(MdsReply { session, resp }) => (Ok(resp), session),
                Err(e) => (Err(e), None),
            };
            match (&r, shard) {
                // Go to the one named, whether or not this call is retried.
                (Err(Error::NotLeader(hint)), Some(s)) => self.routes.moved(s, hint, self.mds.addr()),
                (Err(Error::NotLeader(hint)), None) => self.mds.redirect(hint).await,
                (Err(e), Some(s)) if e.unreachable() => {
                    if let Some(p) = &proc {
                        self.routes.unreachable(s, p.rpc.addr());
                    }
                }
                _ => {}
            }
            match r {
                Err(e) if retries && e.unreachable() && started.elapsed() < self.mds_retry => {
                    if attempt == 0 {
                        tracing::warn!(error = %e, "MDS unreachable or not leading; retrying for up to {:?}", self.mds_retry);
                    }
                    attempt += 1;
                    // The leader named is asked at once; a member that
                    // knows of none (an election is on) after a short
                    // pause, not a growing one, so that the new leader is
                    // found soon after it starts; a member the client
                    // could not reach after a pause that grows.
                    match &e {
                        // Asked at once, unless two processes keep naming
                        // each other (each between two services).
                        Error::NotLeader(hint) if !hint.is_empty() && attempt < 3 => {}
                        Error::NotLeader(_) => tokio::time::sleep(MDS_RETRY_MIN).await,
                        _ => {
                            tokio::time::sleep(pause).await;
                            pause = (pause * 2).min(MDS_RETRY_MAX);
                        }
                    }
                }
                Ok(resp) => {
                    if attempt > 0 {
                        tracing::info!(attempts = attempt + 1, waited = ?started.elapsed(), "MDS answered again");
                    }
                    return (Ok(resp), session);
                }
                Err(e) => return (Err(e), session),
            }
        }
    }

    /// Send `req` once: to shard 0's leader, or to process `proc` under
    /// this client's session there (opened first if it has none).
    async fn send(&self, proc: Option<&Proc>, req: &MdsReq, rid: Option<ReqId>, cred: Cred) -> Result<MdsReply> {
        let mut req = req.clone();
        if let Some(p) = proc {
            req.set_session(self.session_at(p).await?);
        }
        let rpc = proc.map_or(&self.mds, |p| &p.rpc);
        rpc.call::<_, MdsReply>(&MdsCall { rid, cred, req }, &[]).await.map(|(r, _)| r)
    }

    /// This client's session with process `p`, opened (naming the
    /// sessions this client has and the one it lost there) if it has none.
    async fn session_at(&self, p: &Proc) -> Result<SessionId> {
        let mut s = p.session.lock().await;
        if let Some(id) = *s {
            return Ok(id);
        }
        let keeper = self.routes.keeper().ok_or_else(|| Error::Unavailable("the file system is gone".into()))?;
        let sent = Instant::now();
        match self.call_at(p, keeper.open_request(self.routes.former())).await? {
            MdsResp::Session { id, .. } => {
                keeper.opened(id, sent);
                *s = Some(id);
                Ok(id)
            }
            _ => Err(Error::Protocol("unexpected reply to OpenSession".into())),
        }
    }

    /// Heartbeat this client's session with every other process it
    /// speaks to. A session lost there loses its leases; a process that
    /// leads nothing now, or that cannot be reached and leads nothing
    /// this client knows of, is left (its session's leases count no
    /// more: the cache counts on the session that lapses first).
    pub async fn beat_procs(&self, io: aifs_common::proto::mds::ClientIo) {
        let Some(keeper) = self.routes.keeper() else { return };
        for (addr, p, used) in self.routes.procs() {
            let Some(id) = *p.session.lock().await else { continue };
            let sent = Instant::now();
            let lost = match self.call_at(&p, MdsReq::SessionHeartbeat { id, io: io.clone() }).await {
                Ok(_) => {
                    keeper.renewed(id, sent);
                    false
                }
                Err(e @ (Error::Stale | Error::NotLeader(_))) => {
                    tracing::info!(%addr, error = %e, "session with an MDS process lost; its leases with it");
                    true
                }
                Err(e) if !used => {
                    tracing::info!(%addr, error = %e, "an MDS process that leads no shard of this client's cannot be reached; left");
                    true
                }
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "session heartbeat failed");
                    false
                }
            };
            if lost {
                *p.session.lock().await = None;
                self.routes.lost(id);
                if !used {
                    self.routes.forget(addr);
                    p.rpc.close();
                }
            }
        }
    }

    /// Learn from shard 0's leader where every shard is led, and open a
    /// session with each process named that has none from this client
    /// yet: one that took shards over waits for the clients that may
    /// hold leases on them, whether or not they use those shards now.
    pub async fn learn_shards(&self) {
        let Some(leaders) = self.find_home().await else { return };
        let home = self.mds.addr();
        for (shard, addr) in leaders.iter().enumerate().skip(1) {
            self.routes.moved(shard as u32, addr, home);
        }
        for (shard, _) in leaders.iter().enumerate().skip(1) {
            if let Some(p) = self.routes.proc_for(shard as u32, home, &self.endpoint) {
                if let Err(e) = self.session_at(&p).await {
                    tracing::debug!(addr = %p.rpc.addr(), error = %e, "no session with an MDS process that leads a shard");
                }
            }
        }
    }

    /// Where each shard is led, as the process asked knows it; None for
    /// an MDS of one member (one process leads every shard) or no answer.
    async fn shard_leaders(&self) -> Option<Vec<String>> {
        if self.mds.members() < 2 {
            return None;
        }
        let call = MdsCall { rid: None, cred: crate::cred::current(), req: MdsReq::ShardLeaders };
        match self.mds.call::<_, MdsReply>(&call, &[]).await {
            Ok((MdsReply { resp: MdsResp::Addrs(v), .. }, _)) => Some(v),
            Ok(_) | Err(_) => None,
        }
    }

    /// Send the calls for shard 0's leader (the home session's first of
    /// all) to the process that leads shard 0 now; where each shard is
    /// led, as [`Pool::shard_leaders`]. Any process that leads a shard
    /// answers a session open itself (its sessions are its own), so a
    /// mount whose first member leads other shards only would open its
    /// home session there, and find it unknown at shard 0's leader at its
    /// first heartbeat (the scaling run's simulated nodes did).
    async fn find_home(&self) -> Option<Vec<String>> {
        let leaders = self.shard_leaders().await?;
        if let Some(zero) = leaders.first().filter(|a| !a.is_empty()) {
            self.mds.redirect(zero).await;
        }
        Some(leaders)
    }

    /// One call to process `p` itself, answered there or not at all.
    async fn call_at(&self, p: &Proc, req: MdsReq) -> Result<MdsResp> {
        let call = MdsCall { rid: None, cred: crate::cred::current(), req };
        match p.rpc.call::<_, MdsReply>(&call, &[]).await?.0.resp {
            MdsResp::Err(e) => Err(Error::from_wire(e.code, &e.msg)),
            r => Ok(r),
        }
    }

    /// Close this client's sessions with other processes (unmount).
    pub async fn close_procs(&self) {
        for (_, p, _) in self.routes.procs() {
            if let Some(id) = p.session.lock().await.take() {
                let _ = tokio::time::timeout(Duration::from_secs(2), self.call_at(&p, MdsReq::CloseSession { id })).await;
            }
            p.rpc.close();
        }
    }

    pub async fn refresh_osds(&self) -> Result<()> {
        let _g = self.refresh.lock().await;
        let MdsResp::OsdMap { osds, .. } = self.mds(&MdsReq::OsdMap).await? else {
            return Err(Error::Protocol("unexpected reply to OsdMap".into()));
        };
        if let Ok(mut d) = self.down.write() {
            *d = osds.iter().filter(|o| o.state != OsdState::Up).map(|o| o.id).collect();
        }
        let mut map = self.osds.write().map_err(|_| Error::Io("lock poisoned".into()))?;
        for o in osds {
            let Ok(addr) = o.addr.parse::<SocketAddr>() else { continue };
            let same = map.get(&o.id).is_some_and(|c| c.addr() == addr);
            if !same {
                map.insert(o.id, Arc::new(RpcClient::new(self.endpoint.clone(), addr, Role::Osd)));
            }
        }
        Ok(())
    }

    /// Marked down in the last OSD map: tried only when nothing else is
    /// left.
    pub fn is_down(&self, id: OsdId) -> bool {
        self.down.read().is_ok_and(|d| d.contains(&id))
    }

    async fn osd(&self, id: OsdId) -> Result<Arc<RpcClient>> {
        if let Some(c) = self.osds.read().map_err(|_| Error::Io("lock poisoned".into()))?.get(&id) {
            return Ok(c.clone());
        }
        self.refresh_osds().await?;
        self.osds
            .read()
            .map_err(|_| Error::Io("lock poisoned".into()))?
            .get(&id)
            .cloned()
            .ok_or_else(|| Error::Unavailable(format!("{id} is not in the OSD map")))
    }

    /// One OSD call. Every OSD request is idempotent, so a transport
    /// failure is retried once after refreshing the OSD map (the OSD may
    /// have restarted, possibly elsewhere).
    pub async fn osd_call(&self, id: OsdId, req: &OsdCall, payload: &[Bytes]) -> Result<(OsdResp, Bytes)> {
        let mut tries = 0;
        loop {
            let c = self.osd(id).await?;
            match c.call::<_, OsdResp>(req, payload).await {
                Ok((OsdResp::Err(e), _)) => return Err(Error::from_wire(e.code, &e.msg)),
                Ok(r) => return Ok(r),
                Err(Error::Transport(m)) if tries == 0 => {
                    tries += 1;
                    let _ = self.refresh_osds().await;
                    if self.is_down(id) {
                        // Marked down meanwhile: no point waiting out a
                        // connect timeout too.
                        return Err(Error::Transport(m));
                    }
                    tracing::debug!(osd = id.0, error = %m, "OSD call failed; retrying");
                }
                Err(e) => return Err(e),
            }
        }
    }
}
