//! The lease driver (DESIGN.md, "Leases"): the pure table
//! (common/src/lease.rs) plus the clock and the recall channel.
//!
//! - A request is served for a holder: the client session bound to its
//!   connection, or, for a connection with no live session (an admin, a
//!   client between reconnect and heartbeat), a session made for that one
//!   request and closed when it is answered. Either way the request's reads
//!   take leases first, so a writer elsewhere is made to flush before the
//!   read happens. An admin connection only observes: it takes no leases.
//! - `acquire` waits until the table grants; the holders in the way are
//!   sent `Revoke` on a stream the MDS opens on their connection. They
//!   flush, drop their caches and answer; a holder that never answers is
//!   waited for only until its session expires.
//! - After a change, `invalidate` tells every other holder of the changed
//!   inodes what to drop (attributes, or directory entries by name) and
//!   waits for each to answer (or expire) before the change is answered:
//!   once a client's call returns, every other client sees it.
//! - Ordering. A read takes its lease before it reads the store, and a
//!   change notifies holders after it commits; so a reader either read the
//!   committed state or is among those notified. The client discards a
//!   reply that raced with a notice (client/src/meta.rs).
use crate::cluster::Cluster;
use aifs_common::cap::WRITE;
use aifs_common::lease::{Decision, LeaseKind};
use aifs_common::proto::mds::{Degraded, LeaseInfo, RecallReq, RecallResp};
use aifs_common::rpc::{call_on, Peer};
use aifs_common::{Error, InodeId, Result, SessionId};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a waiting request looks again without being woken (expiry is
/// noticed this way).
const POLL: Duration = Duration::from_millis(100);

/// The session a request is served for. An ephemeral one (no live session
/// on the connection) is closed, with its leases, when this is dropped.
pub struct Holder {
    cluster: Arc<Cluster>,
    pub id: SessionId,
    ephemeral: bool,
    /// An admin: looks without taking leases, so that `mdsctl` never
    /// recalls what it is asked to show.
    observer: bool,
}

impl Holder {
    /// The session under which the reply's leases were granted, if any.
    pub fn granted(&self) -> Option<SessionId> {
        (!self.ephemeral).then_some(self.id)
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        if self.ephemeral {
            if let Ok(mut t) = self.cluster.leases.lock() {
                t.close_session(self.id);
            }
            self.cluster.released.notify_waiters();
        }
    }
}

impl Cluster {
    /// Bind a session to the connection it was opened or heartbeated on:
    /// requests on it are served for the session, recalls go over it.
    pub fn bind(&self, peer: &Peer, id: SessionId) {
        peer.bind_session(id);
        if let Some(mut s) = self.sessions.get_mut(&id) {
            s.conn = Some(peer.conn.clone());
        }
    }

    pub fn holder(self: &Arc<Self>, peer: &Peer) -> Holder {
        let observer = peer.role == aifs_common::certs::Role::Admin;
        let bound = self.leases.lock().ok().and_then(|t| peer.session().filter(|b| t.is_live(*b, Instant::now())));
        match bound {
            Some(id) => Holder { cluster: self.clone(), id, ephemeral: false, observer },
            None => self.own_holder(observer),
        }
    }

    /// A session made for one request, closed with its leases when the
    /// holder is dropped.
    pub fn own_holder(self: &Arc<Self>, observer: bool) -> Holder {
        let id = self.new_session_id();
        if let Ok(mut t) = self.leases.lock() {
            t.open_session(id, Instant::now());
        }
        Holder { cluster: self.clone(), id, ephemeral: true, observer }
    }

    /// The holder for a request that only reads `ino` (a lookup in it, a
    /// stat, a listing): `holder`, but one of its own for this request
    /// alone when the bound session holds as many leases as it may
    /// (`SessionLimits`) and none on `ino`: the reply then grants none,
    /// and the client caches nothing of it.
    pub fn reader(self: &Arc<Self>, peer: &Peer, ino: InodeId) -> Holder {
        self.within_limit(self.holder(peer), ino)
    }

    /// `h`, or, if a lease on `ino` would take its session past its
    /// limit, a holder of its own for the rest of the request.
    pub fn within_limit(self: &Arc<Self>, h: Holder, ino: InodeId) -> Holder {
        let full = !h.ephemeral && self.leases.lock().is_ok_and(|t| t.past_limit(h.id, ino, self.limits.max_leases as usize));
        if !full {
            return h;
        }
        tracing::debug!(session = %h.id, "session at its lease limit: answered without a lease");
        self.own_holder(h.observer)
    }

    fn conn_of(&self, session: SessionId) -> Option<quinn::Connection> {
        self.sessions.get(&session).and_then(|s| s.conn.clone())
    }

    fn is_live(&self, session: SessionId) -> bool {
        self.leases.lock().map(|t| t.is_live(session, Instant::now())).unwrap_or(false)
    }

    /// Take `kind` on `ino` for `h`, recalling whoever is in the way.
    pub async fn acquire(self: &Arc<Self>, h: &Holder, ino: InodeId, kind: LeaseKind) -> Result<LeaseKind> {
        if h.observer {
            return Ok(kind);
        }
        // Long enough for every holder in the way to expire, plus slack.
        let deadline = Instant::now() + self.term() * 2 + Duration::from_secs(1);
        loop {
            let woken = self.released.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let d = {
                let mut t = self.leases.lock().map_err(|_| Error::Io("lease table poisoned".into()))?;
                t.acquire(h.id, ino, kind, Instant::now())
            };
            match d {
                Decision::Granted { kind } => return Ok(kind),
                Decision::Wait { recall } => {
                    for r in recall {
                        tokio::spawn(self.clone().revoke(r, ino));
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(Error::Unavailable(format!("lease on {ino:#x} not released by its holders")));
            }
            let _ = tokio::time::timeout(POLL, woken).await;
        }
    }

    /// `inos` no longer exist (deleted, their numbers never used again):
    /// every lease on them goes, and with it its place in its session's
    /// budget (`max_leases`), which a job making and removing files would
    /// otherwise fill.
    pub fn forget_gone(&self, inos: &[InodeId]) {
        if inos.is_empty() {
            return;
        }
        if let Ok(mut t) = self.leases.lock() {
            for ino in inos {
                t.forget(*ino);
            }
        }
        self.released.notify_waiters();
    }

    /// Does `session` hold a lease on `ino` that allows `kind` (a write
    /// lease of either kind allows writing; any lease allows reading)?
    pub fn holds(&self, session: SessionId, ino: InodeId, kind: LeaseKind) -> bool {
        let Ok(t) = self.leases.lock() else { return false };
        t.holders(ino).iter().any(|(s, k)| *s == session && (kind == LeaseKind::Read || *k != LeaseKind::Read))
    }

    /// Does `h`'s session use `ino`: hold a lease on it, or have it open
    /// (for writing, if `write`)? Anyone may, during the grace after a
    /// restart, before sessions have said what they hold.
    pub fn uses(&self, h: &Holder, ino: InodeId, write: bool) -> bool {
        let kind = if write { LeaseKind::Write } else { LeaseKind::Read };
        self.in_grace()
            || h.granted().is_some_and(|s| self.holds(s, ino, kind) || self.open_rights(s, ino).is_some_and(|r| !write || r & WRITE != 0))
    }

    /// Take `kind` on `ino` for `h` only if nobody else is in the way;
    /// recalls nobody. Never for a request without a session of its own.
    pub fn try_acquire(&self, h: &Holder, ino: InodeId, kind: LeaseKind) -> bool {
        if h.ephemeral || h.observer {
            return false;
        }
        self.leases.lock().is_ok_and(|mut t| t.try_acquire(h.id, ino, kind, Instant::now()))
    }

    /// A directory's write lease for a client that takes them, when nobody
    /// else is in the way.
    pub fn try_write_dir(&self, h: &Holder, dir: InodeId) -> bool {
        let wants = self.sessions.get(&h.id).is_some_and(|s| s.dir_leases);
        wants && self.try_acquire(h, dir, LeaseKind::Write)
    }

    /// `h` keeps only a read lease on `ino`.
    pub fn demote(&self, h: &Holder, ino: InodeId) {
        if let Ok(mut t) = self.leases.lock() {
            t.demote(h.id, ino);
        }
        self.released.notify_waiters();
    }

    /// Read leases on several inodes: a listing's entries (their writers
    /// flush first), or directories about to change (a client holding
    /// one's write lease sends its changes there first). Asking twice for
    /// one inode is granted at once.
    pub async fn acquire_read_all(self: &Arc<Self>, h: &Holder, inos: &[InodeId]) -> Result<()> {
        for ino in inos {
            self.acquire(h, *ino, LeaseKind::Read).await?;
        }
        Ok(())
    }

    /// Ask `session` to give its lease on `ino` back; retried while the
    /// session lives (a reconnecting client is reached on its new
    /// connection once it heartbeats).
    async fn revoke(self: Arc<Self>, session: SessionId, ino: InodeId) {
        tracing::debug!(%session, %ino, "revoking lease");
        let Some(r) = self.deliver(session, &RecallReq::Revoke { ino }, None).await else {
            return;
        };
        if let RecallResp::Err(e) = &r {
            // It dropped its caches; the write error stays with the client
            // for its next flush, fsync or close.
            tracing::warn!(%session, %ino, code = e.code, msg = %e.msg, "holder released after a failed flush");
        }
        tracing::debug!(%session, %ino, ?r, "lease given back");
        if let Ok(mut t) = self.leases.lock() {
            match r {
                RecallResp::Demoted => t.demote(session, ino),
                _ => t.release(session, ino),
            }
        }
        self.released.notify_waiters();
    }

    /// Send `req` to `session` over its connection, again every `POLL`
    /// while it fails, until it is answered, the session ends or
    /// `deadline` passes (`None`: only the session's end stops it).
    async fn deliver(&self, session: SessionId, req: &RecallReq, deadline: Option<Instant>) -> Option<RecallResp> {
        while deadline.is_none_or(|d| Instant::now() < d) && self.is_live(session) {
            if let Some(conn) = self.conn_of(session) {
                match call_on::<_, RecallResp>(&conn, req, self.term()).await {
                    Ok(r) => return Some(r),
                    Err(e) => {
                        tracing::debug!(%session, error = %e, "recall not delivered; retrying until the session expires")
                    }
                }
            }
            tokio::time::sleep(POLL).await;
        }
        None
    }

    /// Tell every holder of each `(ino, names)` except `except` to drop what
    /// it caches of it, and wait until each has (or has expired).
    pub async fn invalidate(self: &Arc<Self>, except: Option<SessionId>, changes: Vec<(InodeId, Vec<String>)>) {
        let mut calls = Vec::new();
        for (ino, names) in changes {
            for s in self.holders_but(ino, except) {
                calls.push(self.clone().notify(s, RecallReq::Invalidate { ino, names: names.clone() }));
            }
        }
        futures::future::join_all(calls).await;
    }

    /// Tell every holder of a lease on `ino` except `except` that these of
    /// its replicas are stale, and wait until each knows (or has expired):
    /// a client with the file open reads them no more.
    pub async fn tell_degraded(self: &Arc<Self>, except: Option<SessionId>, ino: InodeId, objs: Vec<Degraded>) {
        let calls = self.holders_but(ino, except).into_iter().map(|s| self.clone().notify(s, RecallReq::Degraded { ino, objs: objs.clone() }));
        futures::future::join_all(calls).await;
    }

    /// Tell every holder of a lease on `ino` how much disk its data now
    /// holds (meter.rs), and wait until each knows (or has expired): its
    /// cached attributes take the figure without asking again.
    pub async fn tell_allocated(self: &Arc<Self>, ino: InodeId, bytes: u64) {
        let calls = self.holders_but(ino, None).into_iter().map(|s| self.clone().notify(s, RecallReq::Allocated { ino, bytes }));
        futures::future::join_all(calls).await;
    }

    /// The clients' sessions that hold a lease on `ino`, but `except`.
    /// The MDS's own holders (`own_holder`: a prepare's read leases held
    /// for an operation coordinated elsewhere) cache nothing and have no
    /// connection to be told on: told, they held each change made
    /// meanwhile until its notice's deadline.
    fn holders_but(&self, ino: InodeId, except: Option<SessionId>) -> Vec<SessionId> {
        match self.leases.lock() {
            Ok(t) => t.holders(ino).into_iter().map(|(s, _)| s).filter(|s| Some(*s) != except && self.sessions.contains_key(s)).collect(),
            Err(_) => Vec::new(),
        }
    }

    async fn notify(self: Arc<Self>, session: SessionId, req: RecallReq) {
        let deadline = Instant::now() + self.term() + Duration::from_secs(1);
        self.deliver(session, &req, Some(deadline)).await;
    }

    /// A client's session that has no connection to be told on: a change
    /// to what it holds a lease on waits for it until the notice's
    /// deadline, or until its holder is dropped, which ends it.
    #[cfg(test)]
    pub(crate) fn unreachable_client(self: &Arc<Self>) -> Holder {
        let h = self.own_holder(false);
        let entry = super::sessions::SessionEntry {
            owner: aifs_common::Owner([0; 32]),
            name: "unreachable".into(),
            addr: String::new(),
            conn: None,
            dir_leases: false,
            load: Default::default(),
        };
        self.sessions.insert(h.id, entry);
        h
    }

    /// Who holds what on `ino` (`mdsctl leases`).
    pub fn lease_infos(&self, ino: InodeId) -> Vec<LeaseInfo> {
        let Ok(t) = self.leases.lock() else {
            return Vec::new();
        };
        let recalled = t.recalled(ino);
        t.holders(ino)
            .into_iter()
            .filter_map(|(s, k)| {
                let name = self.sessions.get(&s)?.name.clone();
                Some(LeaseInfo { session: s, name, mode: k.into(), recalled: recalled.contains(&s) })
            })
            .collect()
    }

    /// Another session holds a write lease on `ino` (a writer to share with).
    pub fn other_writer(&self, session: SessionId, ino: InodeId) -> bool {
        self.leases
            .lock()
            .map(|t| t.holders(ino).iter().any(|(s, k)| *s != session && *k != LeaseKind::Read))
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A change waits for the clients that cache what it changed, not for
    /// the MDS's own holders of leases on it, which have nothing to drop.
    #[tokio::test]
    async fn a_change_is_not_held_up_by_the_mds_own_lease_holders() {
        let c = Arc::new(Cluster::new(Duration::from_secs(1), Duration::from_secs(10)));
        let own = c.own_holder(false);
        let dir = InodeId(1);
        assert_eq!(c.acquire(&own, dir, LeaseKind::Read).await, Ok(LeaseKind::Read));
        let told = tokio::time::timeout(Duration::from_secs(5), c.invalidate(None, vec![(dir, vec!["name".into()])])).await;
        assert!(told.is_ok(), "an invalidation waited for a holder with no connection");
    }
}
