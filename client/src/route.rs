//! Which MDS process a request goes to, when shards are led by several
//! (DESIGN.md, "Metadata that survives losing a machine").
//!
//! The pool's own client of the MDS (`Pool::mds`) follows shard 0's
//! leader, and everything goes there until a process answers "not
//! leader" for a shard, naming another process: from then on the
//! requests routed by an inode of that shard (`MdsReq::routed_by`) go to
//! that process, over a connection of their own, under a session this
//! client opens with it first. A shard whose process cannot be reached,
//! or that names no leader, goes back to shard 0's leader, which names
//! the shard's new one.
//!
//! Leases are granted per session, so a session with each process: the
//! cache counts on the soonest to lapse (client/src/meta.rs), and a
//! session lost anywhere drops everything cached, as one lost with shard
//! 0's leader always did.
use aifs_common::certs::Role;
use aifs_common::proto::mds::MdsReq;
use aifs_common::rpc::RpcClient;
use aifs_common::SessionId;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Instant;

/// Sessions lost lately that are named when one opens.
const FORMER: usize = 16;

/// What the pool needs of the file system to keep sessions with other
/// processes: what a session opens with, and what becomes of its leases.
pub trait SessionKeeper: Send + Sync {
    /// The request that opens a session naming `previous` (this client's
    /// sessions, current and lost): its name, open files and locks.
    fn open_request(&self, previous: Vec<SessionId>) -> MdsReq;
    /// A session with another process, opened by a request sent at `sent`.
    fn opened(&self, id: SessionId, sent: Instant);
    /// A heartbeat of session `id`, sent at `sent`, was answered.
    fn renewed(&self, id: SessionId, sent: Instant);
    /// Session `id` is over: its leases with it.
    fn lost(&self, id: SessionId);
    /// Called on each new connection to a process (recalls come on it).
    fn connected(self: Arc<Self>, conn: quinn::Connection);
}

/// Another MDS process that leads shards this client uses.
pub struct Proc {
    pub rpc: RpcClient,
    /// This client's session there.
    pub session: tokio::sync::Mutex<Option<SessionId>>,
}

#[derive(Default)]
pub struct Routes {
    /// Shards led by a process other than shard 0's leader, as answers
    /// named them.
    shards: RwLock<HashMap<u32, SocketAddr>>,
    procs: RwLock<HashMap<SocketAddr, Arc<Proc>>>,
    pub keeper: OnceLock<std::sync::Weak<dyn SessionKeeper>>,
    /// Sessions lost or closed with processes lately, named when a
    /// session opens anywhere: the process may have taken over their
    /// shards and wait for them.
    former: Mutex<std::collections::VecDeque<SessionId>>,
    /// Connections to processes are made with this (a member's: they
    /// leave a silent process soon).
    pub config: OnceLock<quinn::ClientConfig>,
}

impl Routes {
    /// The process that leads `shard`, if not shard 0's leader (`home`).
    pub fn proc_for(&self, shard: u32, home: SocketAddr, endpoint: &quinn::Endpoint) -> Option<Arc<Proc>> {
        let addr = self.shards.read().ok()?.get(&shard).copied().filter(|a| *a != home)?;
        if let Some(p) = self.procs.read().ok()?.get(&addr) {
            return Some(p.clone());
        }
        let mut procs = self.procs.write().ok()?;
        let p = procs.entry(addr).or_insert_with(|| {
            let mut rpc = RpcClient::new(endpoint.clone(), addr, Role::Mds);
            if let Some(c) = self.config.get() {
                rpc = rpc.with_config(c.clone());
            }
            let keeper = self.keeper.get().cloned();
            rpc.on_connect(Box::new(move |conn| {
                if let Some(k) = keeper.as_ref().and_then(|k| k.upgrade()) {
                    k.connected(conn);
                }
            }));
            tracing::info!(%addr, "an MDS process leads shards of this client's: speaking to it directly");
            Arc::new(Proc { rpc, session: Default::default() })
        });
        Some(p.clone())
    }

    /// `shard` is led at `hint` (empty: no one known): go there from now
    /// on, or (`hint` empty, or shard 0's leader `home`) to `home`.
    pub fn moved(&self, shard: u32, hint: &str, home: SocketAddr) {
        let to = hint.parse::<SocketAddr>().ok().filter(|a| *a != home);
        let Ok(mut s) = self.shards.write() else { return };
        let was = match to {
            Some(a) => s.insert(shard, a),
            None => s.remove(&shard),
        };
        if was != to {
            tracing::info!(shard, to = ?to.map_or(home, |a| a), "a shard is led by another MDS process");
        }
    }

    /// `shard`'s process could not be reached: shard 0's leader next.
    pub fn unreachable(&self, shard: u32, addr: SocketAddr) {
        if let Ok(mut s) = self.shards.write() {
            if s.get(&shard) == Some(&addr) {
                s.remove(&shard);
            }
        }
    }

    /// The processes this client speaks to besides shard 0's leader,
    /// each with whether a shard is routed to it now. One no shard goes
    /// to keeps its session while it answers: the shard map read from a
    /// member between two leaders may name shard 0's leader for a moment,
    /// and a session closed then would give back its locks.
    pub fn procs(&self) -> Vec<(SocketAddr, Arc<Proc>, bool)> {
        let used: Vec<SocketAddr> = self.shards.read().map(|s| s.values().copied().collect()).unwrap_or_default();
        let Ok(procs) = self.procs.read() else { return Vec::new() };
        procs.iter().map(|(a, p)| (*a, p.clone(), used.contains(a))).collect()
    }

    /// Speak to the process at `addr` no more.
    pub fn forget(&self, addr: SocketAddr) {
        if let Ok(mut procs) = self.procs.write() {
            procs.remove(&addr);
        }
    }

    /// Session `id` with a process is over.
    pub fn lost(&self, id: SessionId) {
        self.remember(id);
        if let Some(k) = self.keeper() {
            k.lost(id);
        }
    }

    /// Session `id` was replaced or is over: named when sessions open.
    pub fn remember(&self, id: SessionId) {
        if let Ok(mut f) = self.former.lock() {
            if f.len() >= FORMER {
                f.pop_front();
            }
            if !f.contains(&id) {
                f.push_back(id);
            }
        }
    }

    /// The sessions lost or closed lately.
    pub fn former(&self) -> Vec<SessionId> {
        self.former.lock().map(|f| f.iter().copied().collect()).unwrap_or_default()
    }

    pub fn keeper(&self) -> Option<Arc<dyn SessionKeeper>> {
        self.keeper.get().and_then(|k| k.upgrade())
    }
}
