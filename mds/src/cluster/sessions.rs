//! Client sessions: who opened each (its certificate), their limits, the
//! request's session (named or bound to its connection), and the ones the
//! MDS ended itself.
use super::Cluster;
use aifs_common::rpc::Peer;
use aifs_common::{Error, Owner, Result, SessionId};
use aifs_common::proto::mds::{ClientIo, EvictionInfo, SessionInfo};
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Evictions `mdsctl session ls` shows.
const EVICTIONS_KEPT: usize = 32;

pub struct SessionEntry {
    /// The certificate that opened it: only it may act for the session.
    pub owner: Owner,
    pub name: String,
    pub addr: String,
    /// The connection recalls go over: the latest one the session was
    /// opened or heartbeated on.
    pub conn: Option<quinn::Connection>,
    /// The client takes directories' write leases.
    pub dir_leases: bool,
    /// What it does (`mdsctl top`).
    pub load: super::load::SessionLoad,
}

/// What one client session may hold at the MDS (mds.toml
/// `[session_limits]`): a client that caches a huge tree, or opens files
/// without end, costs the MDS a bounded amount of memory.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SessionLimits {
    /// Leases (and waits and recalls) on distinct inodes. Past this,
    /// lookups, stats and listings are answered without a lease (the
    /// client does not cache what they return) until it gives some back.
    #[serde(default = "default_max_leases")]
    pub max_leases: u32,
    /// Distinct files open (one count per file, however many handles the
    /// client has): an open past this fails with ENFILE.
    #[serde(default = "default_max_open_files")]
    pub max_open_files: u32,
    /// Byte-range lock segments held (a lock split by an unlock counts
    /// twice): a lock, or an unlock that splits one, past this fails with
    /// ENOLCK.
    #[serde(default = "default_max_locks")]
    pub max_locks: usize,
    /// Inode numbers reserved for one certificate (all its sessions) and
    /// neither used by a create nor given back: a `Reserve` past this
    /// fails, and the client creates through the MDS instead.
    #[serde(default = "default_max_reserved")]
    pub max_reserved: u64,
    /// Live sessions of one certificate (one node's mounts): an
    /// `OpenSession` past this fails with ENFILE until one closes or
    /// expires (one that comes back after a lost session or an MDS restart
    /// counts only itself: the session it names is live no more).
    #[serde(default = "default_max_sessions")]
    pub max_sessions: u32,
}

/// Far more mounts than one node runs; each costs a lease table entry.
fn default_max_sessions() -> u32 {
    256
}

/// 32 directories' worth of numbers (`RESERVE_BATCH`), about 2 MB of store.
fn default_max_reserved() -> u64 {
    16_384
}

fn default_max_locks() -> usize {
    100_000
}

/// About 20 MB of lease table for one session.
fn default_max_leases() -> u32 {
    100_000
}

fn default_max_open_files() -> u32 {
    100_000
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            max_leases: default_max_leases(),
            max_open_files: default_max_open_files(),
            max_locks: default_max_locks(),
            max_reserved: default_max_reserved(),
            max_sessions: default_max_sessions(),
        }
    }
}


impl Cluster {

    /// Record that session `id` was ended by the MDS, and why.
    pub fn record_eviction(&self, id: SessionId, why: &str) {
        let name = self.sessions.get(&id).map(|s| s.name.clone()).unwrap_or_default();
        tracing::warn!(session = %id, name, why, "session evicted");
        if let Ok(mut e) = self.evictions.lock() {
            if e.len() == EVICTIONS_KEPT {
                e.pop_front();
            }
            e.push_back(EvictionInfo { id, name, why: why.to_string(), at_ms: aifs_common::cap::now_ms() });
        }
    }


    pub fn evictions(&self) -> Vec<EvictionInfo> {
        self.evictions.lock().map(|e| e.iter().cloned().collect()).unwrap_or_default()
    }


    /// The session a request acts for: the one it names if that is live,
    /// else the one bound to its connection, if live. Naming a session
    /// another certificate opened is refused.
    pub fn session_for(&self, peer: &Peer, named: Option<SessionId>) -> Result<Option<SessionId>> {
        if let Some(n) = named {
            self.check_owner(peer, n)?;
        }
        let now = Instant::now();
        let live = |s: &SessionId| self.leases.lock().map(|t| t.is_live(*s, now)).unwrap_or(false);
        Ok(named.filter(live).or_else(|| peer.session().filter(live)))
    }


    /// May `peer` act for session `id`? Yes if its certificate opened it,
    /// or if no such session is known (what it asks then finds nothing).
    /// A session of the last run, not back yet, answers to the
    /// certificate that opened it then.
    pub fn check_owner(&self, peer: &Peer, id: SessionId) -> Result<()> {
        let owner = match self.sessions.get(&id) {
            Some(s) => Some(s.owner),
            None => self.grace.lock().ok().and_then(|g| g.as_ref().and_then(|gr| gr.waiting.get(&id).copied())),
        };
        match owner {
            Some(o) if o != peer.owner => {
                tracing::warn!(session = %id, peer = %peer.addr, "request names a session another certificate opened; refused");
                Err(Error::Unauthorized(format!("session {id} is not this certificate's")))
            }
            _ => Ok(()),
        }
    }


    /// An id for one request served without a session of its own.
    pub fn new_session_id(&self) -> SessionId {
        SessionId::ephemeral(self.next_ephemeral.fetch_add(1, Ordering::Relaxed))
    }

    /// A new session for `peer`'s certificate, within `limits.max_sessions`.
    pub fn open_session(&self, name: String, peer: &Peer, dir_leases: bool) -> Result<SessionId> {
        // Shown in tables and logs (its length is checked with the request).
        if name.is_empty() || name.chars().any(char::is_control) {
            return Err(Error::InvalidArgument("a session's name is not empty and has no control characters".into()));
        }
        let live = self.live_sessions_of(peer.owner).len();
        if live >= self.limits.max_sessions as usize {
            tracing::warn!(owner = %peer.owner, %name, live, "certificate at its limit of sessions");
            return Err(Error::TooManyOpen(format!("{live} sessions open under this certificate (max_sessions)")));
        }
        let id = SessionId::random()?;
        let addr = peer.addr.to_string();
        tracing::info!(session = %id, %name, %addr, "session opened");
        if let Ok(mut l) = self.leases.lock() {
            l.open_session(id, Instant::now());
        }
        self.sessions.insert(id, SessionEntry { owner: peer.owner, name, addr, conn: None, dir_leases, load: Default::default() });
        Ok(id)
    }


    /// False when the session is unknown (expired, evicted, or the MDS
    /// restarted).
    pub fn touch_session(&self, id: SessionId) -> bool {
        let now = Instant::now();
        self.leases.lock().map(|mut l| l.is_live(id, now) && l.heartbeat(id, now)).unwrap_or(false)
    }


    /// A request served for `id`.
    pub fn count_request(&self, id: SessionId) {
        if let Some(s) = self.sessions.get(&id) {
            s.load.served();
        }
    }

    /// `id`'s client reported `io` in a heartbeat.
    pub fn report_io(&self, id: SessionId, io: ClientIo) {
        if let Some(s) = self.sessions.get(&id) {
            s.load.beat(io, Instant::now());
        }
    }

    /// The sessions `owner` opened.
    pub fn sessions_of(&self, owner: Owner) -> Vec<SessionId> {
        self.sessions.iter().filter(|s| s.owner == owner).map(|s| *s.key()).collect()
    }


    /// The sessions `owner` opened that have not expired (the sweep
    /// forgets expired ones a little later).
    fn live_sessions_of(&self, owner: Owner) -> Vec<SessionId> {
        let mut ids = self.sessions_of(owner);
        let now = Instant::now();
        if let Ok(l) = self.leases.lock() {
            ids.retain(|s| l.is_live(*s, now));
        }
        ids
    }


    /// End a session (clean close or eviction) and drop its leases; false
    /// when there was no such session.
    pub fn close_session(&self, id: SessionId) -> bool {
        if let Ok(mut l) = self.leases.lock() {
            l.close_session(id);
        }
        let known = self.sessions.remove(&id).is_some();
        self.drop_opens(id);
        self.released.notify_waiters();
        if known {
            tracing::info!(session = %id, "session closed");
        }
        known
    }


    pub fn session_infos(&self) -> Vec<SessionInfo> {
        let now = Instant::now();
        let Ok(l) = self.leases.lock() else { return Vec::new() };
        let mut v: Vec<SessionInfo> = self
            .sessions
            .iter()
            .map(|s| {
                let (requests, io, rate) = s.load.view(now);
                SessionInfo {
                    id: *s.key(),
                    name: s.name.clone(),
                    addr: s.addr.clone(),
                    last_seen_ms: (l.term().saturating_sub(l.remaining(*s.key(), now))).as_millis() as u64,
                    leases: l.count(*s.key()) as u64,
                    requests,
                    io,
                    rate,
                }
            })
            .collect();
        v.sort_by_key(|s| s.id);
        v
    }
}
