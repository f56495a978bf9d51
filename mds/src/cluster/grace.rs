//! The grace after a restart: leases lived in the last run's memory, so
//! until its clients are back (or a term is over) the MDS answers nothing
//! that could contradict what they cache.
use super::{wait_until, Cluster};
use aifs_common::locks::Lock;
use aifs_common::{Owner, SessionId};
use aifs_common::proto::mds::HeldLock;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Leases live in memory only: after a restart, a client of the last run
/// may still cache what it leased until it learns its session is gone
/// (and drops its caches) or its lease term runs out. Until then the MDS
/// answers nothing that could contradict those caches.
pub(super) struct Grace {
    pub(super) until: Instant,
    /// With the owner each may come back under.
    pub(super) waiting: HashMap<SessionId, Owner>,
}


impl Cluster {

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
    /// heard from, or for a map relayed from shard 0's leader to name an
    /// OSD up (each until one OSD timeout after start), so new files do
    /// not get layouts without them, or fail with ENOSPC.
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
        let started = self.started.lock().map(|s| *s).unwrap_or(now);
        let early = now.duration_since(started) < self.osds.timeout();
        let osds = early && (self.osds.any_unheard() || self.osds.awaits_relay());
        if !clients && !early {
            self.settled.store(true, Ordering::Release);
        }
        clients || osds
    }


    /// The service answers from now on: the OSDs known from the store
    /// have one OSD timeout from now to be heard before new files get
    /// layouts without them. Counted from the cluster's making instead, a
    /// namespace slow to open (its shards' logs applied, half-done
    /// operations settled) left them no time at all, and the first
    /// creates after a leader change failed with ENOSPC.
    pub fn begin_serving(&self) {
        if let Ok(mut s) = self.started.lock() {
            *s = Instant::now();
        }
    }

    /// Wait for the grace after a restart to end (`in_grace`).
    pub async fn wait_grace(&self) {
        wait_until(&self.grace_over, || !self.in_grace()).await
    }
}

#[cfg(test)]
mod tests {
    use super::Cluster;
    use std::time::Duration;

    #[test]
    fn the_osds_window_to_be_heard_counts_from_when_the_service_answers() {
        let c = Cluster::new(Duration::from_millis(200), Duration::from_secs(10));
        c.osds.load(1, "127.0.0.1:1".into(), 1 << 30, 0);
        // The namespace took longer to open than the whole window.
        std::thread::sleep(Duration::from_millis(250));
        c.begin_serving();
        assert!(c.in_grace(), "new files would get layouts before the OSDs could be heard");
        std::thread::sleep(Duration::from_millis(250));
        assert!(!c.in_grace(), "an OSD that never beats holds the grace past its timeout");
    }

    #[test]
    fn a_map_to_be_relayed_holds_new_files_until_it_names_an_osd_up() {
        use aifs_common::proto::mds::OsdUsage;
        let c = Cluster::new(Duration::from_secs(10), Duration::from_secs(10));
        c.osds.follow_relays();
        c.begin_serving();
        assert!(c.in_grace(), "new files would fail with ENOSPC before the first relay");
        // Shard 0's leader had heard from no OSD yet either.
        c.osds.adopt(&[]);
        assert!(c.in_grace(), "an empty relay ended the wait");
        let leader = crate::cluster::osds::OsdMap::new(Duration::from_secs(10));
        leader.heartbeat(1, "127.0.0.1:1", &OsdUsage::default());
        c.osds.adopt(&leader.infos());
        assert!(!c.in_grace(), "a relay naming an OSD up did not end the wait");
    }
}
