//! What answers on the MDS's endpoint: Raft messages from the other MDS
//! processes, the members' addresses and who leads, always; the two phases'
//! messages (shardnet.rs) by the namespace served here; every other request, by
//! the namespace service while this process leads the shard it is routed
//! by (`MdsReq::routed_by`: the shard of the inode it names, shard 0 for
//! what is the cluster's), and otherwise by "not leader", naming the
//! process that leads that shard if one is known, so that clients, OSDs
//! and `mdsctl` go there.
use crate::replica::Replica;
use crate::service::MdsService;
use aifs_common::certs::Role;
use aifs_common::proto::mds::{MdsCall, MdsReply, MdsReq, MdsResp};
use aifs_common::rpc::{Peer, Service};
use aifs_common::metrics::RpcMetrics;
use aifs_common::Error;
use bytes::Bytes;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// How long a request waits for this leader's lease to be renewed (a
/// heartbeat round late) before it is told to go elsewhere.
const LEASE_WAIT: Duration = Duration::from_millis(500);

/// The longest a question of who leads waits for news.
const LEADER_WAIT_MAX: Duration = Duration::from_secs(1);

/// The namespace service and the tasks that run beside it while this
/// process leads; stopped when it is dropped.
pub struct Active {
    pub svc: Arc<MdsService>,
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The shards the service serves (the groups it was started over).
    pub led: Vec<bool>,
}

impl Active {
    pub fn serves(&self, shard: u32) -> bool {
        self.led.get(shard as usize).copied().unwrap_or(false)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

pub struct Front {
    pub replica: Arc<Replica>,
    active: RwLock<Option<Arc<Active>>>,
    /// Requests counted for the metrics endpoint, if there is one.
    rpc: Option<Arc<RpcMetrics>>,
}

impl Front {
    pub fn new(replica: Arc<Replica>, rpc: Option<Arc<RpcMetrics>>) -> Self {
        Front { replica, active: RwLock::new(None), rpc }
    }

    /// The namespace service, while it runs here.
    pub fn active(&self) -> Option<Arc<Active>> {
        self.active.read().ok().and_then(|a| a.clone())
    }

    pub fn set_active(&self, a: Option<Active>) {
        if let Ok(mut cur) = self.active.write() {
            *cur = a.map(Arc::new);
        }
    }

    /// The shard whose leader answers `req`: one there is, else 0 (where
    /// an inode of a shard there is not will not be found).
    fn route(&self, req: &MdsReq) -> u32 {
        req.routed_by().map(|i| i.shard()).filter(|s| *s < self.replica.shards()).unwrap_or(0)
    }

    /// The service, once this process leads `shard` within its lease and
    /// serves it; waits a little for a lease a heartbeat round late, and
    /// for the namespace of a process just elected to start (claiming the
    /// other groups, applying their logs): sent away, the caller would
    /// find no one else to go to and wait longer.
    async fn leading(&self, shard: u32) -> Option<Arc<Active>> {
        let until = tokio::time::Instant::now() + LEASE_WAIT;
        loop {
            match self.active() {
                Some(a) if a.serves(shard) && self.replica.leads_shard(shard) => return Some(a),
                Some(a) if !a.serves(shard) => return None,
                // Not starting a service that will serve it.
                None if !((self.replica.leads_zero() && self.replica.group(shard).is_some()) || self.replica.is_to_lead(shard)) || self.replica.yielding() => {
                    return None
                }
                _ => {}
            }
            if tokio::time::Instant::now() >= until {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn raft(&self, shard: u32, payload: Bytes) -> aifs_common::Result<(MdsReply, Vec<Bytes>)> {
        let out = self.replica.serve(shard, &payload).await?;
        Ok((MdsReply { session: None, resp: MdsResp::Raft { len: out.len() as u64 } }, vec![Bytes::from(out)]))
    }

    /// A step of a membership change (membership.rs), taken by shard 0's
    /// leader for an admin, or one group's part of it, taken by that
    /// group's leader for shard 0's.
    async fn membership(&self, req: &MdsReq) -> aifs_common::Result<MdsResp> {
        if let MdsReq::GroupMember { shard, step } = req {
            return Ok(MdsResp::Member(self.replica.take_group_step(*shard, step).await?));
        }
        // Shard 0's leader takes the steps, serving or not: one that took
        // itself out of some groups still finishes taking itself out.
        if !self.replica.leads_zero() {
            return Err(Error::NotLeader(self.replica.leader_addr()));
        }
        let change = match req {
            MdsReq::AddMember { id, addr } => self.replica.add_member(*id, addr).await?,
            MdsReq::RemoveMember { id } => self.replica.remove_member(*id).await?,
            _ => return Err(Error::Protocol("not a membership change".into())),
        };
        Ok(MdsResp::Member(change))
    }
}

/// Whether `peer`'s certificate may send `req`.
pub fn allowed(peer: &Peer, req: &MdsReq) -> aifs_common::Result<()> {
    let rule = req.rule();
    match rule.allows(peer.role) {
        true => Ok(()),
        false => Err(Error::Unauthorized(format!("a {} certificate cannot send {}", peer.role.name(), rule.name))),
    }
}

impl Front {
    /// A heartbeat for a session this process does not know, while
    /// another process leads shard 0, is for the session the client has
    /// there: its pool was sent here by a "not leader" that named no one
    /// (a leader no majority acknowledged for a moment). It is told to go
    /// to shard 0's leader, not that its session is gone, which would
    /// empty its cache and open another. (A session with this process
    /// that it lost is opened again either way.)
    fn home_elsewhere(&self, reply: MdsReply) -> MdsReply {
        match &reply.resp {
            MdsResp::Err(e) if Error::from_wire(e.code, &e.msg) == Error::Stale && !self.replica.leads_zero() => {
                Self::error(Error::NotLeader(self.replica.leader_hint(0)))
            }
            _ => reply,
        }
    }
}

impl Service for Front {
    type Req = MdsCall;
    type Resp = MdsReply;

    async fn call(&self, peer: &Arc<Peer>, call: MdsCall, payload: Bytes) -> (MdsReply, Vec<Bytes>) {
        // Who may send what is checked here, before any member's state is
        // touched, from the one table (common/src/proto/requests.rs).
        if let Err(e) = allowed(peer, &call.req) {
            return (Self::error(e), vec![]);
        }
        if let MdsReq::Raft { shard, .. } = call.req {
            return self.raft(shard, payload).await.unwrap_or_else(|e| (Self::error(e), vec![]));
        }
        if let MdsReq::Shard { shard, .. } = call.req {
            let r = match self.leading(shard).await {
                Some(a) => crate::shardnet::answer(&a.svc.ns, &payload).await,
                None => Err(Error::NotLeader(self.replica.leader_hint(shard))),
            };
            return r.unwrap_or_else(|e| (Self::error(e), vec![]));
        }
        if let MdsReq::Members = call.req {
            return (MdsReply { session: None, resp: MdsResp::Addrs(self.replica.addrs()) }, vec![]);
        }
        if let MdsReq::ShardLeaders = call.req {
            let n = self.replica.shards();
            let leaders = (0..n).map(|s| self.replica.leading_addr_of(s)).collect();
            return (MdsReply { session: None, resp: MdsResp::Addrs(leaders) }, vec![]);
        }
        if let MdsReq::Leader { past, wait_ms } = &call.req {
            let wait = Duration::from_millis(u64::from(*wait_ms)).min(LEADER_WAIT_MAX);
            let addr = self.replica.leader_other_than(past, wait).await;
            return (MdsReply { session: None, resp: MdsResp::Leader { addr } }, vec![]);
        }
        if matches!(call.req, MdsReq::AddMember { .. } | MdsReq::RemoveMember { .. } | MdsReq::GroupMember { .. }) {
            let resp = self.membership(&call.req).await.unwrap_or_else(|e| MdsResp::Err(e.to_wire()));
            return (MdsReply { session: None, resp }, vec![]);
        }
        let shard = match call.req.per_process() {
            // A session is with the process the client addresses: any
            // that serves a shard keeps its own.
            true => self.active().and_then(|a| a.led.iter().position(|l| *l)).map_or(0, |s| s as u32),
            false => self.route(&call.req),
        };
        let heartbeat = matches!(call.req, MdsReq::SessionHeartbeat { .. });
        match self.leading(shard).await {
            Some(a) => {
                let (reply, body) = a.svc.call(peer, call, payload).await;
                (if heartbeat { self.home_elsewhere(reply) } else { reply }, body)
            }
            None => (Self::error(Error::NotLeader(self.replica.leader_hint(shard))), vec![]),
        }
    }

    fn error(e: Error) -> MdsReply {
        MdsReply { session: None, resp: MdsResp::Err(e.to_wire()) }
    }

    fn accepts(&self, _role: Role) -> bool {
        true
    }

    fn metrics(&self) -> Option<&RpcMetrics> {
        self.rpc.as_deref()
    }

    fn op_name(call: &MdsCall) -> &'static str {
        call.req.rule().name
    }

    fn error_kind(reply: &MdsReply) -> Option<&'static str> {
        match &reply.resp {
            MdsResp::Err(w) => Some(aifs_common::metrics::wire_error_kind(w)),
            _ => None,
        }
    }
}
