//! The OSD map: every OSD known (from the store and from registrations),
//! up or down by its heartbeats, in or out by the operator, and an epoch
//! that moves with each change.
use aifs_common::OsdId;
use aifs_common::proto::mds::{OsdInfo, OsdState, OsdUsage};
use aifs_common::proto::osd::OsdStats;
use dashmap::DashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct OsdEntry {
    pub addr: String,
    pub capacity: u64,
    pub used: u64,
    pub objects: u64,
    /// What it has served since it started, as of its last heartbeat.
    pub served: OsdStats,
    pub load: super::load::OsdLoad,
    /// None until the OSD is heard from after an MDS start.
    pub last_seen: Option<Instant>,
    pub up: bool,
    /// Taken out by the operator: no new data, its replicas move away.
    pub out: bool,
}

/// What a heartbeat changed.
pub enum Beat {
    /// First time heard of this id, or its address changed: persist it.
    New,
    /// Came back up.
    Up,
    Same,
}

pub struct OsdMap {
    osds: DashMap<u32, OsdEntry>,
    epoch: AtomicU64,
    /// Silent this long, an OSD is marked down.
    timeout: Duration,
    /// The map is shard 0's leader's, relayed (`adopt`): who is up is
    /// what it says, not how late its relays come. Set from the start of
    /// a namespace that does not lead shard 0, where no OSD heartbeats
    /// ([`OsdMap::follow_relays`]), or at the first relay.
    relayed: std::sync::atomic::AtomicBool,
}

impl OsdMap {
    pub fn new(timeout: Duration) -> Self {
        OsdMap { osds: DashMap::new(), epoch: AtomicU64::new(1), timeout, relayed: Default::default() }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Relaxed)
    }

    fn changed(&self) {
        self.epoch.fetch_add(1, Ordering::Relaxed);
    }

    pub fn knows(&self, id: u32) -> bool {
        self.osds.contains_key(&id)
    }

    /// Is an OSD known from the store not heard from since the start?
    pub fn any_unheard(&self) -> bool {
        self.osds.iter().any(|e| e.last_seen.is_none())
    }

    /// The OSDs known from the store not heard from since the start.
    pub fn unheard(&self) -> Vec<u32> {
        self.osds.iter().filter(|e| e.last_seen.is_none()).map(|e| *e.key()).collect()
    }

    /// The map is to come relayed from shard 0's leader ([`OsdMap::adopt`]).
    pub fn follow_relays(&self) {
        self.relayed.store(true, Ordering::Release);
    }

    /// A map to come relayed has no OSD up yet: the first relay has not
    /// come, or came from a shard 0's leader that had heard from none
    /// (it started as this process did, in a new cluster).
    pub fn awaits_relay(&self) -> bool {
        self.relayed.load(Ordering::Acquire) && !self.osds.iter().any(|e| e.up)
    }

    /// An OSD known from the store, down until it heartbeats.
    pub fn load(&self, id: u32, addr: String, capacity: u64, used: u64) {
        self.osds.insert(id, OsdEntry { addr, capacity, used, objects: 0, served: OsdStats::default(), load: Default::default(), last_seen: None, up: false, out: false });
    }

    pub fn heartbeat(&self, id: u32, addr: &str, u: &OsdUsage) -> Beat {
        let now = Instant::now();
        let mut beat = Beat::Same;
        let mut e = self.osds.entry(id).or_insert_with(|| {
            beat = Beat::New;
            OsdEntry { addr: addr.to_string(), capacity: u.capacity, used: u.used, objects: u.objects, served: u.served, load: Default::default(), last_seen: None, up: false, out: false }
        });
        if e.addr != addr {
            e.addr = addr.to_string();
            beat = Beat::New;
        }
        e.capacity = u.capacity;
        e.used = u.used;
        e.objects = u.objects;
        e.served = u.served;
        e.load.beat(u.served, now);
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
            self.changed();
        }
        beat
    }

    /// The map of shard 0's leader, where the OSDs heartbeat, taken here
    /// as their heartbeats relayed: an OSD up there is heard from now,
    /// one down there is down here. From the first on, this map no longer
    /// marks OSDs down by itself: relays late on a busy link are not
    /// OSDs missing heartbeats (with every OSD marked down so, new files
    /// failed with ENOSPC in the scaling run).
    pub fn adopt(&self, infos: &[OsdInfo]) {
        self.relayed.store(true, Ordering::Release);
        let mut changed = false;
        for o in infos {
            if o.state == OsdState::Up {
                let usage = OsdUsage { capacity: o.capacity, used: o.used, objects: o.objects, served: o.served };
                self.heartbeat(o.id.0, &o.addr, &usage);
            } else if let Some(mut e) = self.osds.get_mut(&o.id.0) {
                if e.up {
                    e.up = false;
                    changed = true;
                    tracing::warn!(osd = o.id.0, "OSD down in shard 0's leader's map; marked down");
                }
            }
            self.set_out(o.id.0, o.out);
        }
        if changed {
            self.changed();
        }
    }

    /// Mark the OSDs that missed their heartbeats down.
    pub fn mark_silent_down(&self, now: Instant) {
        if self.relayed.load(Ordering::Acquire) {
            return;
        }
        let mut changed = false;
        for mut e in self.osds.iter_mut() {
            let fresh = e.last_seen.is_some_and(|t| now.duration_since(t) < self.timeout);
            if e.up && !fresh {
                e.up = false;
                changed = true;
                tracing::warn!(osd = *e.key(), "OSD missed heartbeats; marked down");
            }
        }
        if changed {
            self.changed();
        }
    }

    fn sorted(&self, keep: impl Fn(&OsdEntry) -> bool) -> Vec<u32> {
        let mut v: Vec<u32> = self.osds.iter().filter(|e| keep(e.value())).map(|e| *e.key()).collect();
        v.sort_unstable();
        v
    }

    pub fn up(&self) -> Vec<u32> {
        self.sorted(|e| e.up)
    }

    /// OSDs new data may go to: up and not taken out.
    pub fn placeable(&self) -> Vec<u32> {
        self.sorted(|e| e.up && !e.out)
    }

    /// OSDs that take new data once up: every one known and not taken
    /// out, down ones included (they come back).
    pub fn taking_data(&self) -> Vec<u32> {
        self.sorted(|e| !e.out)
    }

    pub fn taken_out(&self) -> Vec<u32> {
        self.sorted(|e| e.out)
    }

    /// Take an OSD out (or back in); false when it is unknown.
    pub fn set_out(&self, id: u32, out: bool) -> bool {
        match self.osds.get_mut(&id) {
            Some(mut e) => {
                e.out = out;
                drop(e);
                self.changed();
                true
            }
            None => false,
        }
    }

    pub fn addr(&self, id: u32) -> Option<String> {
        self.osds.get(&id).map(|e| e.addr.clone())
    }

    pub fn infos(&self) -> Vec<OsdInfo> {
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
                served: e.served,
                rate: if e.up { e.load.rate(now) } else { Default::default() },
            })
            .collect();
        v.sort_by_key(|o| o.id);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relayed_map_follows_shard_0s_leader_and_not_its_own_clock() {
        let leader = OsdMap::new(Duration::from_secs(60));
        leader.heartbeat(1, "127.0.0.1:1", &OsdUsage::default());
        leader.heartbeat(2, "127.0.0.1:2", &OsdUsage::default());
        let here = OsdMap::new(Duration::from_millis(20));
        here.adopt(&leader.infos());
        assert_eq!(here.up(), vec![1, 2]);
        // The next relay is late: the OSDs are still up here.
        std::thread::sleep(Duration::from_millis(40));
        here.mark_silent_down(Instant::now());
        assert_eq!(here.up(), vec![1, 2], "OSDs marked down for a relay that came late");
        // Down at the leader: down here.
        leader.mark_silent_down(Instant::now() + Duration::from_secs(61));
        here.adopt(&leader.infos());
        assert!(here.up().is_empty());
    }
}
