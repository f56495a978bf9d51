//! What `mdsctl top` shows of each session and OSD: what they did as of
//! their last heartbeat, and how much a second between their last two
//! (the MDS's own requests for a session are counted as it serves them).
//! A rate needs two heartbeats at least [`MIN_SPAN`] apart: one sent early
//! (a reconnect) keeps the earlier mark, so the span only grows.
use aifs_common::proto::mds::{ClientIo, SessionRate};
use aifs_common::proto::osd::OsdStats;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The shortest span a rate is taken over.
pub const MIN_SPAN: Duration = Duration::from_millis(500);

/// `later - earlier` a second, over `span`.
pub fn per_sec(later: u64, earlier: u64, span: Duration) -> u64 {
    (later.saturating_sub(earlier) as f64 / span.as_secs_f64().max(1e-3)) as u64
}

/// A rate taken over `span` no longer holds once its source has been
/// silent for three such spans (at least `MIN_SILENT`): it stopped
/// heartbeating, and did nothing we know of since.
fn lapsed(mark: Instant, span: Duration, now: Instant) -> bool {
    now.saturating_duration_since(mark) > (span * 3).max(MIN_SILENT)
}

/// The shortest silence after which a rate is taken as lapsed.
const MIN_SILENT: Duration = Duration::from_secs(5);

/// Counts reported by heartbeats, and their rate (`R`) between the last
/// two marks far enough apart: what sessions and OSDs share.
#[derive(Default, Clone, Copy)]
pub struct Marked<C, R> {
    /// The last heartbeat a rate was taken at, and its counts.
    mark: Option<(Instant, C)>,
    rate: R,
    /// What `rate` was taken over.
    span: Duration,
}

impl<C: Copy, R: Copy + Default> Marked<C, R> {
    /// A heartbeat at `now` with `counts`; `rate_of(now, then, span)`
    /// makes a rate of two marks' counts.
    fn beat(&mut self, counts: C, now: Instant, rate_of: impl Fn(&C, &C, Duration) -> R) {
        match self.mark {
            Some((at, _)) if now.saturating_duration_since(at) < MIN_SPAN => {}
            Some((at, was)) => {
                let span = now.saturating_duration_since(at);
                self.rate = rate_of(&counts, &was, span);
                self.span = span;
                self.mark = Some((now, counts));
            }
            None => self.mark = Some((now, counts)),
        }
    }

    /// The rate, zero once it lapsed.
    fn rate(&self, now: Instant) -> R {
        match self.mark {
            Some((at, _)) if !lapsed(at, self.span, now) => self.rate,
            _ => R::default(),
        }
    }
}

/// A session's load.
#[derive(Default)]
pub struct SessionLoad {
    /// Requests the MDS served for it.
    requests: AtomicU64,
    /// What the client last reported, and its marks: the client's counts
    /// with the requests served by then.
    beats: Mutex<(ClientIo, Marked<(ClientIo, u64), SessionRate>)>,
}

impl SessionLoad {
    pub fn served(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// A heartbeat at `now` reporting `io`.
    pub fn beat(&self, io: ClientIo, now: Instant) {
        let requests = self.requests.load(Ordering::Relaxed);
        let Ok(mut b) = self.beats.lock() else { return };
        b.0 = io;
        b.1.beat((io, requests), now, |(io, req), (was, req_was), span| SessionRate {
            ops: per_sec(io.ops, was.ops, span),
            read_bytes: per_sec(io.read_bytes, was.read_bytes, span),
            written_bytes: per_sec(io.written_bytes, was.written_bytes, span),
            mds_requests: per_sec(*req, *req_was, span),
        });
    }

    /// Requests served, what the client last reported, and the rates
    /// (zero once they lapsed).
    pub fn view(&self, now: Instant) -> (u64, ClientIo, SessionRate) {
        let requests = self.requests.load(Ordering::Relaxed);
        match self.beats.lock() {
            Ok(b) => (requests, b.0, b.1.rate(now)),
            Err(_) => (requests, ClientIo::default(), SessionRate::default()),
        }
    }
}

/// An OSD's load: what it reported, against its last mark.
#[derive(Default, Clone, Copy)]
pub struct OsdLoad(Marked<OsdStats, OsdStats>);

impl OsdLoad {
    pub fn beat(&mut self, served: OsdStats, now: Instant) {
        self.0.beat(served, now, |served, was, span| OsdStats {
            reads: per_sec(served.reads, was.reads, span),
            read_bytes: per_sec(served.read_bytes, was.read_bytes, span),
            writes: per_sec(served.writes, was.writes, span),
            write_bytes: per_sec(served.write_bytes, was.write_bytes, span),
        });
    }

    /// The rate, zero once it lapsed.
    pub fn rate(&self, now: Instant) -> OsdStats {
        self.0.rate(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_taken_between_heartbeats_far_enough_apart() {
        let l = SessionLoad::default();
        let t0 = Instant::now();
        let io = |ops, r, w| ClientIo { ops, read_bytes: r, written_bytes: w };
        l.beat(io(0, 0, 0), t0);
        l.served();
        l.served();
        // Too soon after the mark: reported, no rate yet.
        l.beat(io(5, 0, 0), t0 + Duration::from_millis(100));
        assert_eq!(l.view(t0 + Duration::from_millis(100)), (2, io(5, 0, 0), SessionRate::default()));
        l.beat(io(10, 4 << 20, 2 << 20), t0 + Duration::from_secs(2));
        let (requests, _, rate) = l.view(t0 + Duration::from_secs(2));
        assert_eq!(requests, 2);
        assert_eq!(rate, SessionRate { ops: 5, read_bytes: 2 << 20, written_bytes: 1 << 20, mds_requests: 1 });
        let mut o = OsdLoad::default();
        o.beat(OsdStats { reads: 10, ..Default::default() }, t0);
        o.beat(OsdStats { reads: 30, write_bytes: 1000, ..Default::default() }, t0 + Duration::from_secs(1));
        let at = t0 + Duration::from_secs(1);
        assert_eq!(o.rate(at), OsdStats { reads: 20, write_bytes: 1000, ..Default::default() });
        // Silent since: the rates lapse.
        assert_eq!(o.rate(at + Duration::from_secs(6)), OsdStats::default());
        assert_eq!(l.view(t0 + Duration::from_secs(9)).2, SessionRate::default());
    }
}
