//! What the MDS knows about the rest of the cluster: the OSD map (from
//! registrations and heartbeats) and client sessions.
use aifs_common::cap::WRITE;
use aifs_common::locks::Lock;
use aifs_common::rpc::Peer;
use aifs_common::{Error, InodeId, OsdId, Owner, Result, SessionId};
use aifs_common::proto::mds::{EvictionInfo, HeldLock, OsdInfo, OsdState, SessionInfo};
use dashmap::DashMap;
use aifs_common::lease::LeaseTable;
use std::sync::atomic::{AtomicU64, Ordering};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct OsdEntry {
    pub addr: String,
    pub capacity: u64,
    pub used: u64,
    pub objects: u64,
    /// None until the OSD is heard from after an MDS start.
    pub last_seen: Option<Instant>,
    pub up: bool,
    /// Taken out by the operator: no new data, its replicas move away.
    pub out: bool,
}

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
}

/// A session's opens of one file: how many (one per client-side file
/// state), and the rights over its data (`cap::READ`, `cap::WRITE`) they
/// were granted after a permission check, so that the session takes its
/// lease and capability again (after a recall, near a capability's end)
/// without a new check, as an open descriptor outlives a chmod.
#[derive(Default, Clone, Copy)]
struct OpenCount {
    n: u32,
    rights: u8,
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

pub struct Cluster {
    pub osds: DashMap<u32, OsdEntry>,
    epoch: AtomicU64,
    osd_timeout: Duration,
    /// Who each session is; liveness and leases live in `leases`.
    pub sessions: DashMap<SessionId, SessionEntry>,
    /// Numbers the ids of requests served without a session.
    next_ephemeral: AtomicU64,
    /// Sessions and the leases they hold (the pure core, common/src/lease.rs).
    pub leases: Mutex<LeaseTable>,
    /// Woken whenever leases are given back or sessions end.
    pub released: tokio::sync::Notify,
    /// Files each session has open (counted per client, not per handle):
    /// a file that loses its last name while open is kept until the last
    /// close. In memory: after an MDS restart nothing is open.
    opens: Mutex<HashMap<InodeId, HashMap<SessionId, OpenCount>>>,
    /// Files each session has open (the number of its entries in `opens`),
    /// held to `limits.max_open_files`; updated under `opens`' lock.
    open_files: DashMap<SessionId, u32>,
    /// What one session may hold.
    pub limits: SessionLimits,
    /// Advisory locks across clients (common/src/locks.rs).
    pub locks: Mutex<aifs_common::locks::LockTable>,
    /// Files whose replicas are being rewritten (mds/src/repair.rs); opens
    /// wait for them.
    repairing: Mutex<std::collections::HashSet<InodeId>>,
    repaired: tokio::sync::Notify,
    /// After a restart, the clients of the last run that have not come
    /// back yet (see `in_grace`).
    grace: Mutex<Option<Grace>>,
    grace_over: tokio::sync::Notify,
    started: Instant,
    /// The grace is over for good: `in_grace` answers without looking.
    settled: std::sync::atomic::AtomicBool,
    /// The latest sessions ended by the MDS rather than by their clients
    /// (`mdsctl session ls`), newest last.
    evictions: Mutex<std::collections::VecDeque<EvictionInfo>>,
}

/// Evictions `mdsctl session ls` shows.
const EVICTIONS_KEPT: usize = 32;

/// Leases live in memory only: after a restart, a client of the last run
/// may still cache what it leased until it learns its session is gone
/// (and drops its caches) or its lease term runs out. Until then the MDS
/// answers nothing that could contradict those caches.
struct Grace {
    until: Instant,
    /// With the owner each may come back under.
    waiting: HashMap<SessionId, Owner>,
}

/// Wait until `done()`, looking again whenever `changed` is notified and
/// every 100 ms (a condition that turns true with time, or a notice lost
/// to a poisoned lock, is still seen).
async fn wait_until(changed: &tokio::sync::Notify, done: impl Fn() -> bool) {
    loop {
        let woken = changed.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        if done() {
            return;
        }
        let _ = tokio::time::timeout(Duration::from_millis(100), woken).await;
    }
}

/// What a heartbeat changed.
pub enum Beat {
    /// First time heard of this id, or its address changed: persist it.
    New,
    /// Came back up.
    Up,
    Same,
}

impl Cluster {
    pub fn new(osd_timeout: Duration, session_timeout: Duration) -> Self {
        Cluster {
            osds: DashMap::new(),
            epoch: AtomicU64::new(1),
            osd_timeout,
            sessions: DashMap::new(),
            next_ephemeral: AtomicU64::new(1),
            leases: Mutex::new(LeaseTable::new(session_timeout)),
            released: tokio::sync::Notify::new(),
            opens: Mutex::new(HashMap::new()),
            open_files: DashMap::new(),
            limits: SessionLimits::default(),
            locks: Mutex::new(Default::default()),
            repairing: Mutex::new(Default::default()),
            repaired: tokio::sync::Notify::new(),
            grace: Mutex::new(None),
            grace_over: tokio::sync::Notify::new(),
            started: Instant::now(),
            settled: std::sync::atomic::AtomicBool::new(false),
            evictions: Mutex::new(Default::default()),
        }
    }

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

    /// At start: wait (at most one lease term) for the sessions the last
    /// run had to come back.
    pub fn start_grace(&self, previous: Vec<(SessionId, Owner)>) {
        if previous.is_empty() {
            return;
        }
        let term = self.term();
        tracing::info!(sessions = previous.len(), ?term, "waiting for the clients of the last run to come back");
        if let Ok(mut g) = self.grace.lock() {
            *g = Some(Grace { until: Instant::now() + term, waiting: previous.into_iter().collect() });
        }
    }

    /// Is `previous` a session of the last run not back yet?
    pub fn waits_for(&self, previous: SessionId) -> bool {
        self.grace.lock().is_ok_and(|g| g.as_ref().is_some_and(|gr| gr.waiting.contains_key(&previous)))
    }

    /// Session `previous` of the last run came back as `session`, holding
    /// `locks`: they are its again. False (and nothing taken) when
    /// `previous` is not a session the grace waits for: its locks were
    /// dropped when it ended, and may be someone else's now.
    pub fn came_back(&self, previous: SessionId, session: SessionId, locks: &[HeldLock]) -> bool {
        let Ok(mut g) = self.grace.lock() else { return false };
        let Some(gr) = g.as_mut() else { return false };
        if gr.waiting.remove(&previous).is_none() {
            return false;
        }
        if let Ok(mut t) = self.locks.lock() {
            for h in locks {
                let l = Lock { session, owner: h.owner, start: h.start, end: h.end, write: h.write, pid: h.pid };
                if let Err(c) = t.set(h.ino, l) {
                    tracing::error!(ino = %h.ino, ?l, held_by = ?c, "a lock taken again after the restart conflicts with another; not taken");
                }
            }
        }
        if gr.waiting.is_empty() {
            tracing::info!("every client of the last run came back");
            *g = None;
            self.grace_over.notify_waiters();
        }
        true
    }

    /// Still waiting: for clients of the last run (until they are all back
    /// or the term is over), or for the OSDs known from the store to be
    /// heard from (until one OSD timeout after start), so new files do not
    /// get layouts without them.
    pub fn in_grace(&self) -> bool {
        if self.settled.load(Ordering::Acquire) {
            return false;
        }
        let now = Instant::now();
        let clients = match self.grace.lock() {
            Ok(mut g) => match g.as_ref() {
                Some(gr) if now >= gr.until => {
                    tracing::warn!(missing = gr.waiting.len(), "clients of the last run did not come back; their leases are over");
                    *g = None;
                    self.grace_over.notify_waiters();
                    false
                }
                Some(_) => true,
                None => false,
            },
            Err(_) => false,
        };
        let early = now.duration_since(self.started) < self.osd_timeout;
        let osds = early && self.osds.iter().any(|e| e.last_seen.is_none());
        if !clients && !early {
            self.settled.store(true, Ordering::Release);
        }
        clients || osds
    }

    /// Wait for the grace after a restart to end (`in_grace`).
    pub async fn wait_grace(&self) {
        wait_until(&self.grace_over, || !self.in_grace()).await
    }

    /// Start repairing `ino` unless a client has it open. Marked before the
    /// open count is read, and an open counts itself before it looks for the
    /// mark (`wait_repair`): one of the two always sees the other.
    pub fn begin_repair(&self, ino: InodeId) -> bool {
        let Ok(mut r) = self.repairing.lock() else { return false };
        r.insert(ino);
        drop(r);
        if self.is_open(ino) {
            self.end_repair(ino);
            return false;
        }
        true
    }

    pub fn end_repair(&self, ino: InodeId) {
        if let Ok(mut r) = self.repairing.lock() {
            r.remove(&ino);
        }
        self.repaired.notify_waiters();
    }

    /// An open of `ino` (already counted) waits for a repair in progress.
    pub async fn wait_repair(&self, ino: InodeId) {
        wait_until(&self.repaired, || !self.repairing.lock().is_ok_and(|r| r.contains(&ino))).await
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

    /// Does any client have `ino` open? During the grace after a restart
    /// any file may be: the clients of the last run have not said yet.
    pub fn is_open(&self, ino: InodeId) -> bool {
        self.in_grace() || self.opens.lock().map(|o| o.contains_key(&ino)).unwrap_or(true)
    }

    /// Does any client have `ino` open for writing (or may it, during the
    /// grace after a restart)?
    pub fn any_writer(&self, ino: InodeId) -> bool {
        self.in_grace() || self.opens.lock().map(|o| o.get(&ino).is_some_and(|by| by.values().any(|c| c.rights & WRITE != 0))).unwrap_or(true)
    }

    /// A session opened `ino` (its first handle on that client), granted
    /// `rights` over its data.
    pub fn opened(&self, session: SessionId, ino: InodeId, rights: u8) {
        if let Ok(mut o) = self.opens.lock() {
            let c = o.entry(ino).or_default().entry(session).or_default();
            if c.n == 0 {
                *self.open_files.entry(session).or_default() += 1;
            }
            c.n += 1;
            c.rights |= rights;
            tracing::debug!(%session, %ino, opens = c.n, rights, "opened");
        }
    }

    /// May `session` open one more file (`limits.max_open_files`): `ino`,
    /// or a new one (`None`)? One it has open already always.
    pub fn may_open_more(&self, session: SessionId, ino: Option<InodeId>) -> Result<()> {
        let n = self.open_files.get(&session).map(|n| *n).unwrap_or(0);
        if n < self.limits.max_open_files || ino.is_some_and(|i| self.open_rights(session, i).is_some()) {
            return Ok(());
        }
        tracing::warn!(%session, open = n, "session at its limit of open files");
        Err(Error::TooManyOpen(format!("{n} files open by this client (max_open_files)")))
    }

    /// Has `session` `ino` open, with which rights over its data?
    pub fn open_rights(&self, session: SessionId, ino: InodeId) -> Option<u8> {
        let o = self.opens.lock().ok()?;
        o.get(&ino)?.get(&session).map(|c| c.rights)
    }

    /// Has `session` `ino` open for writing?
    pub fn session_writes(&self, session: SessionId, ino: InodeId) -> bool {
        self.open_rights(session, ino).is_some_and(|r| r & WRITE != 0)
    }

    /// A session closed its last handle of `ino`; true when no session has
    /// it open any more. A session that has it open no more keeps a read
    /// lease where it had a write lease (see `LeaseTable::downgrade`).
    pub fn closed(&self, session: SessionId, ino: InodeId) -> bool {
        let Ok(mut o) = self.opens.lock() else { return false };
        tracing::debug!(%session, %ino, "closed");
        if let Some(by) = o.get_mut(&ino) {
            if let Some(c) = by.get_mut(&session) {
                c.n = c.n.saturating_sub(1);
                if c.n == 0 {
                    by.remove(&session);
                    if let Some(mut n) = self.open_files.get_mut(&session) {
                        *n = n.saturating_sub(1);
                    }
                    if let Ok(mut l) = self.leases.lock() {
                        l.downgrade(session, ino);
                    }
                }
            }
            if by.is_empty() {
                o.remove(&ino);
                return true;
            }
        }
        false
    }

    /// What a session held besides leases: open counts and locks.
    fn drop_opens(&self, session: SessionId) {
        if let Ok(mut l) = self.locks.lock() {
            l.drop_session(session);
        }
        if let Ok(mut o) = self.opens.lock() {
            o.retain(|_, by| {
                by.remove(&session);
                !by.is_empty()
            });
            self.open_files.remove(&session);
        }
    }

    pub fn term(&self) -> Duration {
        self.leases.lock().map(|t| t.term()).unwrap_or(Duration::from_secs(10))
    }

    /// An id for one request served without a session of its own.
    pub fn new_session_id(&self) -> SessionId {
        SessionId::ephemeral(self.next_ephemeral.fetch_add(1, Ordering::Relaxed))
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Relaxed)
    }

    /// An OSD known from the store, down until it heartbeats.
    pub fn load_osd(&self, id: u32, addr: String, capacity: u64, used: u64) {
        self.osds.insert(id, OsdEntry { addr, capacity, used, objects: 0, last_seen: None, up: false, out: false });
    }

    pub fn heartbeat(&self, id: u32, addr: &str, capacity: u64, used: u64, objects: u64) -> Beat {
        let now = Instant::now();
        let mut beat = Beat::Same;
        let mut e = self.osds.entry(id).or_insert_with(|| {
            beat = Beat::New;
            OsdEntry { addr: addr.to_string(), capacity, used, objects, last_seen: None, up: false, out: false }
        });
        if e.addr != addr {
            e.addr = addr.to_string();
            beat = Beat::New;
        }
        e.capacity = capacity;
        e.used = used;
        e.objects = objects;
        e.last_seen = Some(now);
        if !e.up {
            e.up = true;
            if matches!(beat, Beat::Same) {
                beat = Beat::Up;
            }
            tracing::info!(osd = id, addr, "OSD up");
        }
        drop(e);
        if !matches!(beat, Beat::Same) {
            self.epoch.fetch_add(1, Ordering::Relaxed);
        }
        beat
    }

    /// Mark OSDs that missed heartbeats down and drop expired sessions;
    /// returns the sessions dropped.
    pub fn tick(&self) -> Vec<SessionId> {
        let now = Instant::now();
        let mut changed = false;
        for mut e in self.osds.iter_mut() {
            let fresh = e.last_seen.is_some_and(|t| now.duration_since(t) < self.osd_timeout);
            if e.up && !fresh {
                e.up = false;
                changed = true;
                tracing::warn!(osd = *e.key(), "OSD missed heartbeats; marked down");
            }
        }
        if changed {
            self.epoch.fetch_add(1, Ordering::Relaxed);
        }
        let (expired, unresponsive) = match self.leases.lock() {
            Ok(mut l) => (l.expire(now), l.take_unresponsive()),
            Err(_) => Default::default(),
        };
        for id in unresponsive {
            self.record_eviction(id, "left a lease recall unanswered for a whole term while heartbeating");
        }
        if !expired.is_empty() {
            self.released.notify_waiters();
        }
        for id in &expired {
            self.drop_opens(*id);
        }
        for id in &expired {
            if let Some((_, s)) = self.sessions.remove(id) {
                tracing::info!(session = %id, name = %s.name, "session expired");
            }
        }
        expired
    }

    pub fn up_osds(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.osds.iter().filter(|e| e.up).map(|e| *e.key()).collect();
        v.sort_unstable();
        v
    }

    /// OSDs new data may go to: up and not taken out.
    pub fn placeable_osds(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.osds.iter().filter(|e| e.up && !e.out).map(|e| *e.key()).collect();
        v.sort_unstable();
        v
    }

    pub fn out_osds(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.osds.iter().filter(|e| e.out).map(|e| *e.key()).collect();
        v.sort_unstable();
        v
    }

    /// Take an OSD out (or back in); false when it is unknown.
    pub fn set_out(&self, id: u32, out: bool) -> bool {
        match self.osds.get_mut(&id) {
            Some(mut e) => {
                e.out = out;
                drop(e);
                self.epoch.fetch_add(1, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    pub fn osd_addr(&self, id: u32) -> Option<String> {
        self.osds.get(&id).map(|e| e.addr.clone())
    }

    pub fn osd_infos(&self) -> Vec<OsdInfo> {
        let now = Instant::now();
        let mut v: Vec<OsdInfo> = self
            .osds
            .iter()
            .map(|e| OsdInfo {
                id: OsdId(*e.key()),
                addr: e.addr.clone(),
                state: if e.up { OsdState::Up } else { OsdState::Down },
                capacity: e.capacity,
                used: e.used,
                objects: e.objects,
                last_seen_ms: e.last_seen.map(|t| now.duration_since(t).as_millis() as u64).unwrap_or(u64::MAX),
                out: e.out,
            })
            .collect();
        v.sort_by_key(|o| o.id);
        v
    }

    /// A new session for `peer`'s certificate, with a random id.
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
        self.sessions.insert(id, SessionEntry { owner: peer.owner, name, addr, conn: None, dir_leases });
        Ok(id)
    }

    /// False when the session is unknown (expired, evicted, or the MDS
    /// restarted).
    pub fn touch_session(&self, id: SessionId) -> bool {
        let now = Instant::now();
        self.leases.lock().map(|mut l| l.is_live(id, now) && l.heartbeat(id, now)).unwrap_or(false)
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
            .map(|s| SessionInfo {
                id: *s.key(),
                name: s.name.clone(),
                addr: s.addr.clone(),
                last_seen_ms: (l.term().saturating_sub(l.remaining(*s.key(), now))).as_millis() as u64,
                leases: l.count(*s.key()) as u64,
            })
            .collect();
        v.sort_by_key(|s| s.id);
        v
    }
}
