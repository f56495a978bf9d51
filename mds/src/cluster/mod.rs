//! What the MDS knows about the rest of the cluster, in memory: the OSD
//! map (osds.rs), client sessions (sessions.rs) and the leases they hold
//! (leases.rs), the files they have open (opens.rs), their locks, and the
//! grace after a restart (grace.rs).
use aifs_common::lease::LeaseTable;
use aifs_common::proto::mds::EvictionInfo;
use aifs_common::{InodeId, SessionId};
use dashmap::DashMap;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::{Duration, Instant};

mod grace;
mod leases;
pub mod load;
mod opens;
mod osds;
mod sessions;

use grace::Grace;
pub use leases::Holder;
use opens::OpenCount;
pub use osds::{Beat, OsdEntry, OsdMap};
pub use sessions::{SessionEntry, SessionLimits};

pub struct Cluster {
    pub osds: OsdMap,
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
    /// The requests (by client, its numbers) that changed the open counts
    /// here: see `Cluster::counts`.
    counted: Mutex<HashMap<u64, std::collections::BTreeSet<u64>>>,
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
    /// When the service began to answer (`begin_serving`): the OSDs'
    /// window to be heard counts from then.
    started: Mutex<Instant>,
    /// The grace is over for good: `in_grace` answers without looking.
    settled: std::sync::atomic::AtomicBool,
    /// The latest sessions ended by the MDS rather than by their clients
    /// (`mdsctl session ls`), newest last.
    evictions: Mutex<std::collections::VecDeque<EvictionInfo>>,
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

impl Cluster {
    pub fn new(osd_timeout: Duration, session_timeout: Duration) -> Self {
        Cluster {
            osds: OsdMap::new(osd_timeout),
            sessions: DashMap::new(),
            next_ephemeral: AtomicU64::new(1),
            leases: Mutex::new(LeaseTable::new(session_timeout)),
            released: tokio::sync::Notify::new(),
            opens: Mutex::new(HashMap::new()),
            counted: Mutex::new(HashMap::new()),
            open_files: DashMap::new(),
            limits: SessionLimits::default(),
            locks: Mutex::new(Default::default()),
            repairing: Mutex::new(Default::default()),
            repaired: tokio::sync::Notify::new(),
            grace: Mutex::new(None),
            grace_over: tokio::sync::Notify::new(),
            started: Mutex::new(Instant::now()),
            settled: std::sync::atomic::AtomicBool::new(false),
            evictions: Mutex::new(Default::default()),
        }
    }

    /// Mark OSDs that missed heartbeats down and drop expired sessions;
    /// returns the sessions dropped.
    pub fn tick(&self) -> Vec<SessionId> {
        let now = Instant::now();
        self.osds.mark_silent_down(now);
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

    pub fn term(&self) -> Duration {
        self.leases.lock().map(|t| t.term()).unwrap_or(Duration::from_secs(10))
    }
}
