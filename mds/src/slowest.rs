//! The slowest requests of the last minute (`mdsctl top`): a handful,
//! kept as they are answered. A request faster than every one kept, with
//! the list full and none of it too old, costs one atomic load.
use aifs_common::proto::mds::SlowOp;
use aifs_common::SessionId;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How many are kept.
pub const KEPT: usize = 10;
/// How long one is kept.
pub const WINDOW: Duration = Duration::from_secs(60);

pub struct Slowest {
    ops: Mutex<Vec<Kept>>,
    /// The fastest kept, in microseconds, while the list is full: a
    /// request no slower is not looked at. Zero: look at every one.
    floor: AtomicU64,
    /// Until when the floor holds (ms since `since`): the oldest kept
    /// then ages out, and a faster request may take its place.
    floor_until: AtomicU64,
    since: Instant,
}

impl Default for Slowest {
    fn default() -> Self {
        Slowest { ops: Mutex::default(), floor: AtomicU64::new(0), floor_until: AtomicU64::new(0), since: Instant::now() }
    }
}

#[derive(Clone, Copy)]
struct Kept {
    op: &'static str,
    session: Option<SessionId>,
    took: Duration,
    at: Instant,
}

impl Slowest {
    /// `op` for `session` took `took`, answered now.
    pub fn record(&self, op: &'static str, session: Option<SessionId>, took: Duration) {
        self.record_at(op, session, took, Instant::now())
    }

    fn record_at(&self, op: &'static str, session: Option<SessionId>, took: Duration, now: Instant) {
        let micros = took.as_micros() as u64;
        let now_ms = now.saturating_duration_since(self.since).as_millis() as u64;
        if micros <= self.floor.load(Ordering::Relaxed) && now_ms < self.floor_until.load(Ordering::Relaxed) {
            return;
        }
        let Ok(mut ops) = self.ops.lock() else { return };
        ops.retain(|k| now.saturating_duration_since(k.at) < WINDOW);
        ops.push(Kept { op, session, took, at: now });
        ops.sort_by(|a, b| b.took.cmp(&a.took));
        ops.truncate(KEPT);
        // Full: only a slower one gets in, until the oldest kept ages out.
        let floor = match ops.len() == KEPT {
            true => ops.iter().map(|k| k.took.as_micros() as u64).min().unwrap_or(0),
            false => 0,
        };
        let oldest = ops.iter().map(|k| k.at).min().unwrap_or(now);
        let until = (oldest + WINDOW).saturating_duration_since(self.since).as_millis() as u64;
        self.floor.store(floor, Ordering::Relaxed);
        self.floor_until.store(until, Ordering::Relaxed);
    }

    /// The slowest of the last minute, slowest first.
    pub fn list(&self) -> Vec<SlowOp> {
        self.list_at(Instant::now())
    }

    fn list_at(&self, now: Instant) -> Vec<SlowOp> {
        let Ok(mut ops) = self.ops.lock() else { return Vec::new() };
        ops.retain(|k| now.saturating_duration_since(k.at) < WINDOW);
        ops.iter()
            .map(|k| SlowOp {
                op: k.op.to_string(),
                session: k.session,
                micros: k.took.as_micros() as u64,
                ago_ms: now.saturating_duration_since(k.at).as_millis() as u64,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slowest_are_kept_slowest_first() {
        let s = Slowest::default();
        for i in 0..50u64 {
            s.record("lookup", None, Duration::from_micros(100 + i));
        }
        s.record("create", Some(SessionId(7)), Duration::from_millis(30));
        let l = s.list();
        assert_eq!(l.len(), KEPT);
        assert_eq!((l[0].op.as_str(), l[0].session, l[0].micros), ("create", Some(SessionId(7)), 30_000));
        assert_eq!(l[1].micros, 149);
        assert_eq!(l[KEPT - 1].micros, 141);
        // Faster than every one kept: not taken.
        s.record("getattr", None, Duration::from_micros(120));
        assert!(s.list().iter().all(|k| k.op != "getattr"));
    }

    /// Once the slow ones of a minute ago aged out, faster ones are kept
    /// again: the floor they set does not outlive them.
    #[test]
    fn the_floor_goes_with_the_requests_that_set_it() {
        let s = Slowest::default();
        let t0 = Instant::now();
        for _ in 0..KEPT {
            s.record_at("fsck", None, Duration::from_millis(500), t0);
        }
        let later = t0 + WINDOW + Duration::from_secs(1);
        s.record_at("lookup", None, Duration::from_millis(100), later);
        let l = s.list_at(later);
        assert_eq!(l.len(), 1, "{l:?}");
        assert_eq!((l[0].op.as_str(), l[0].micros), ("lookup", 100_000));
    }
}
