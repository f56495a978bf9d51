//! Lease state machine, pure (DESIGN.md, "Leases"; STYLE.md §1): no clock,
//! no I/O. Every method is given `now`; the MDS drives it from its request
//! handlers and a ticker, tests drive it with a fake clock.
//!
//! Model. A client session heartbeats; a session silent for `term` expires
//! and every lease it held goes with it, so a dead client blocks others for
//! at most one term. A lease is held on an inode by a session:
//! - `Read`: cache attributes, data and (directories) entries;
//! - `Write`: buffer writes, own size and mtime until flushed; exclusive;
//! - `SharedWrite`: several writers of disjoint ranges (the N-to-1
//!   checkpoint); compatible only with other shared writers, and nobody
//!   caches data.
//!
//! `acquire` grants at once when nothing held by another session
//! conflicts; otherwise it marks the conflicting holders recalled and
//! answers `Wait` with the sessions to recall. A recalled holder flushes,
//! invalidates and `release`s; a holder that never answers is dropped when
//! its session expires. A session's own leases never conflict with each
//! other: asking again replaces what it held.
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

pub use crate::ids::{InodeId, SessionId};
pub type Ino = InodeId;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LeaseKind {
    Read,
    Write,
    SharedWrite,
}

impl LeaseKind {
    /// May `a` and `b` be held at once by two different sessions?
    pub fn compatible(a: LeaseKind, b: LeaseKind) -> bool {
        matches!((a, b), (LeaseKind::Read, LeaseKind::Read) | (LeaseKind::SharedWrite, LeaseKind::SharedWrite))
    }
}

impl From<LeaseKind> for crate::proto::mds::LeaseMode {
    fn from(k: LeaseKind) -> Self {
        match k {
            LeaseKind::Read => Self::Read,
            LeaseKind::Write => Self::Write,
            LeaseKind::SharedWrite => Self::SharedWrite,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Held until the session expires or the lease is recalled.
    Granted { kind: LeaseKind },
    /// Ask again after the conflicting holders release or expire. `recall`
    /// lists those this call marked recalled: the caller must ask them to
    /// give their leases back (holders already recalled are not repeated).
    Wait { recall: Vec<SessionId> },
}

#[derive(Clone, Debug)]
struct Session {
    last_heard: Instant,
    /// Inodes where the session holds, waits or was recalled (a superset):
    /// closing the session visits only these.
    touched: BTreeSet<Ino>,
}

#[derive(Clone, Debug, Default)]
struct InodeLeases {
    holders: BTreeMap<SessionId, LeaseKind>,
    /// Holders asked to release, with when they were asked.
    recalled: BTreeMap<SessionId, Instant>,
    /// Requests told to wait, with what they want and since when: a later
    /// conflicting request waits behind them, so a stream of readers cannot
    /// starve a writer.
    waiting: BTreeMap<SessionId, (LeaseKind, Instant)>,
}

impl InodeLeases {
    fn is_empty(&self) -> bool {
        self.holders.is_empty() && self.waiting.is_empty()
    }
}

#[derive(Clone, Debug)]
pub struct LeaseTable {
    term: Duration,
    sessions: BTreeMap<SessionId, Session>,
    inodes: BTreeMap<Ino, InodeLeases>,
    /// Inodes that have had a waiter or a recalled holder since `expire`
    /// last looked (a superset): the only ones its pass visits, so that a
    /// tick costs what is in flight, not every lease held.
    pending: BTreeSet<Ino>,
    /// Sessions expired by a request since `expire` last reported them:
    /// their owner (the MDS) still has to drop what it keeps beside leases.
    reaped: Vec<SessionId>,
    /// Sessions `expire` closed because they left a recall unanswered for
    /// a whole term while still heartbeating, not yet reported.
    unresponsive: Vec<SessionId>,
}

impl LeaseTable {
    pub fn new(term: Duration) -> Self {
        LeaseTable {
            term,
            sessions: BTreeMap::new(),
            inodes: BTreeMap::new(),
            pending: BTreeSet::new(),
            reaped: Vec::new(),
            unresponsive: Vec::new(),
        }
    }

    pub fn term(&self) -> Duration {
        self.term
    }

    pub fn open_session(&mut self, s: SessionId, now: Instant) {
        // An id opened again is a new session: the old one's leases go.
        self.close_session(s);
        self.sessions.insert(s, Session { last_heard: now, touched: BTreeSet::new() });
    }

    /// False when the session is unknown (expired): the client must open a
    /// new one and drop every cache it kept under the old one.
    pub fn heartbeat(&mut self, s: SessionId, now: Instant) -> bool {
        match self.sessions.get_mut(&s) {
            Some(x) => {
                x.last_heard = x.last_heard.max(now);
                true
            }
            None => false,
        }
    }

    pub fn is_live(&self, s: SessionId, now: Instant) -> bool {
        self.sessions.get(&s).is_some_and(|x| now.saturating_duration_since(x.last_heard) < self.term)
    }

    /// Time left on a session's leases: what the kernel may cache for.
    pub fn remaining(&self, s: SessionId, now: Instant) -> Duration {
        self.sessions.get(&s).map(|x| self.term.saturating_sub(now.saturating_duration_since(x.last_heard))).unwrap_or_default()
    }

    /// Drop a session and everything it held (eviction or clean close).
    pub fn close_session(&mut self, s: SessionId) {
        let Some(sess) = self.sessions.remove(&s) else {
            return;
        };
        for ino in sess.touched {
            if let Some(l) = self.inodes.get_mut(&ino) {
                l.holders.remove(&s);
                l.recalled.remove(&s);
                l.waiting.remove(&s);
                if l.is_empty() {
                    self.inodes.remove(&ino);
                }
            }
        }
    }

    /// Close the sessions silent for a whole term; returns them. Cheap
    /// when none has: it looks at sessions only.
    fn expire_sessions(&mut self, now: Instant) -> Vec<SessionId> {
        let dead: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, x)| now.saturating_duration_since(x.last_heard) >= self.term)
            .map(|(s, _)| *s)
            .collect();
        for s in &dead {
            self.close_session(*s);
        }
        self.reaped.extend(&dead);
        dead
    }

    /// Expire every session silent for a whole term, and forget waiters
    /// that stopped asking; returns the expired sessions. The MDS's ticker
    /// runs this; requests run the cheap part.
    pub fn expire(&mut self, now: Instant) -> Vec<SessionId> {
        self.expire_sessions(now);
        let term = self.term;
        // One pass over the inodes with waiters or recalls: a waiter that
        // stopped asking for a whole term has given up; a holder that
        // heartbeats but has not given back a lease it was asked for in a
        // whole term would hold everyone else up for ever, so its session
        // ends as if it had gone silent.
        let mut stuck = BTreeSet::new();
        let inodes = &mut self.inodes;
        self.pending.retain(|ino| {
            let Some(l) = inodes.get_mut(ino) else { return false };
            l.waiting.retain(|_, (_, since)| now.saturating_duration_since(*since) < term);
            stuck.extend(l.recalled.iter().filter(|(_, since)| now.saturating_duration_since(**since) >= term).map(|(s, _)| *s));
            let in_flight = !l.waiting.is_empty() || !l.recalled.is_empty();
            if l.is_empty() {
                inodes.remove(ino);
            }
            in_flight
        });
        for s in &stuck {
            self.close_session(*s);
        }
        self.reaped.extend(&stuck);
        self.unresponsive.extend(&stuck);
        // Every session expired since the last call, here or by a request.
        std::mem::take(&mut self.reaped)
    }

    /// The sessions `expire` closed for leaving a recall unanswered, since
    /// the last call (they are among those `expire` returned).
    pub fn take_unresponsive(&mut self) -> Vec<SessionId> {
        std::mem::take(&mut self.unresponsive)
    }

    /// Ask for `kind` on `ino` for session `s`.
    pub fn acquire(&mut self, s: SessionId, ino: Ino, kind: LeaseKind, now: Instant) -> Decision {
        self.expire_sessions(now);
        let Some(sess) = self.sessions.get_mut(&s) else {
            return Decision::Wait { recall: Vec::new() };
        };
        sess.touched.insert(ino);
        let term = self.term;
        let l = self.inodes.entry(ino).or_default();
        // A waiter that stopped asking for a whole term has given up.
        l.waiting.retain(|_, (_, since)| now.saturating_duration_since(*since) < term);
        if l.recalled.contains_key(&s) {
            // Asked to give the lease back and not yet done: it still holds
            // it (it may be flushing), so it waits for its own release like
            // anyone else, behind those already waiting.
            l.waiting.entry(s).or_insert((kind, now)).0 = kind;
            self.pending.insert(ino);
            return Decision::Wait { recall: Vec::new() };
        }
        if let Some(&held) = l.holders.get(&s) {
            if kind == LeaseKind::Read && held != LeaseKind::Read {
                // A writer reading its own file keeps its write lease.
                l.waiting.remove(&s);
                return Decision::Granted { kind: held };
            }
        }
        let queued_at = l.waiting.get(&s).map(|w| w.1);
        let mut conflicts: Vec<SessionId> =
            l.holders.iter().filter(|(h, k)| **h != s && !LeaseKind::compatible(**k, kind)).map(|(h, _)| *h).collect();
        let behind = l.waiting.iter().any(|(w, (k, since))| {
            *w != s && !LeaseKind::compatible(*k, kind) && queued_at.is_none_or(|mine| *since < mine)
        });
        if conflicts.is_empty() && !behind {
            l.holders.insert(s, kind);
            l.waiting.remove(&s);
            return Decision::Granted { kind };
        }
        // Only holders not already asked: each is asked once per grant.
        conflicts.retain(|c| !l.recalled.contains_key(c));
        for c in &conflicts {
            l.recalled.insert(*c, now);
        }
        l.waiting.entry(s).or_insert((kind, now)).0 = kind;
        self.pending.insert(ino);
        conflicts.sort_unstable();
        Decision::Wait { recall: conflicts }
    }

    /// Grant `kind` only if nothing is in the way (no conflicting holder,
    /// nobody waiting): recalls nobody and queues nothing. A directory's
    /// write lease is taken this way, when no other client looks at it.
    pub fn try_acquire(&mut self, s: SessionId, ino: Ino, kind: LeaseKind, now: Instant) -> bool {
        if !self.is_live(s, now) {
            return false;
        }
        let free = self.inodes.get(&ino).is_none_or(|l| {
            !l.recalled.contains_key(&s)
                && l.waiting.keys().all(|w| *w == s)
                && l.holders.iter().all(|(h, k)| *h == s || LeaseKind::compatible(*k, kind))
        });
        if !free {
            return false;
        }
        if let Some(sess) = self.sessions.get_mut(&s) {
            sess.touched.insert(ino);
        }
        self.inodes.entry(ino).or_default().holders.insert(s, kind);
        true
    }

    /// A recalled writer kept a read lease (a directory whose changes it
    /// sent): it holds `Read` now and is no longer recalled. A recalled
    /// reader gives its lease up, as at `release`.
    pub fn demote(&mut self, s: SessionId, ino: Ino) {
        let held = self.inodes.get(&ino).and_then(|l| l.holders.get(&s).copied());
        match held {
            // A write lease is exclusive: nobody else holds one to clash
            // with a read lease. A shared one is not, and goes.
            Some(LeaseKind::Write) => {
                if let Some(l) = self.inodes.get_mut(&ino) {
                    l.holders.insert(s, LeaseKind::Read);
                    l.recalled.remove(&s);
                }
            }
            _ => self.release(s, ino),
        }
    }

    /// A holder gives its lease on `ino` back (after a recall, or at close).
    pub fn release(&mut self, s: SessionId, ino: Ino) {
        if let Some(l) = self.inodes.get_mut(&ino) {
            l.holders.remove(&s);
            l.recalled.remove(&s);
            let waits = l.waiting.contains_key(&s);
            if l.is_empty() {
                self.inodes.remove(&ino);
            }
            if !waits {
                if let Some(sess) = self.sessions.get_mut(&s) {
                    sess.touched.remove(&ino);
                }
            }
        }
    }

    /// `ino` no longer exists (its number is never used again): every
    /// lease on it goes, and with it its place in each session's budget.
    /// A request still waiting for it is granted at its next look.
    pub fn forget(&mut self, ino: Ino) {
        let Some(l) = self.inodes.remove(&ino) else {
            return;
        };
        for s in l.holders.keys().chain(l.recalled.keys()).chain(l.waiting.keys()) {
            if let Some(sess) = self.sessions.get_mut(s) {
                sess.touched.remove(&ino);
            }
        }
        self.pending.remove(&ino);
    }

    /// A writer closed the file: its write lease becomes a read lease
    /// (nothing of it is buffered any more), so readers elsewhere need not
    /// recall it. A shared-write lease stays (readers conflict with the
    /// other writers anyway), and so does one being recalled.
    pub fn downgrade(&mut self, s: SessionId, ino: Ino) {
        if let Some(l) = self.inodes.get_mut(&ino) {
            if !l.recalled.contains_key(&s) {
                if let Some(k) = l.holders.get_mut(&s) {
                    if *k == LeaseKind::Write {
                        *k = LeaseKind::Read;
                    }
                }
            }
        }
    }

    pub fn holders(&self, ino: Ino) -> Vec<(SessionId, LeaseKind)> {
        self.inodes.get(&ino).map(|l| l.holders.iter().map(|(s, k)| (*s, *k)).collect()).unwrap_or_default()
    }

    /// Inodes someone holds a write lease on.
    pub fn written(&self) -> Vec<Ino> {
        self.inodes.iter().filter(|(_, l)| l.holders.values().any(|k| *k == LeaseKind::Write)).map(|(i, _)| *i).collect()
    }

    pub fn recalled(&self, ino: Ino) -> BTreeSet<SessionId> {
        self.inodes.get(&ino).map(|l| l.recalled.keys().copied().collect()).unwrap_or_default()
    }

    /// Sessions waiting for a lease on `ino`, with the kind each asked for.
    #[cfg(test)]
    fn waiting(&self, ino: Ino) -> Vec<(SessionId, LeaseKind)> {
        self.inodes.get(&ino).map(|l| l.waiting.iter().map(|(s, (k, _))| (*s, *k)).collect()).unwrap_or_default()
    }

    /// Inodes a session holds, waits for or was recalled from: what it
    /// costs the table, in O(1) (`count` is exact).
    pub fn touched(&self, s: SessionId) -> usize {
        self.sessions.get(&s).map(|sess| sess.touched.len()).unwrap_or(0)
    }

    /// Would a lease on `ino` take session `s` past `max` inodes?
    pub fn past_limit(&self, s: SessionId, ino: Ino, max: usize) -> bool {
        self.sessions.get(&s).is_some_and(|sess| sess.touched.len() >= max && !sess.touched.contains(&ino))
    }

    /// Leases a session holds (for `mdsctl session ls`).
    pub fn count(&self, s: SessionId) -> usize {
        let Some(sess) = self.sessions.get(&s) else {
            return 0;
        };
        sess.touched.iter().filter(|i| self.inodes.get(i).is_some_and(|l| l.holders.contains_key(&s))).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SessionId as S;
    use proptest::prelude::*;

    const TERM: Duration = Duration::from_secs(10);

    #[derive(Clone, Debug)]
    enum Op {
        Open(u8),
        Beat(u8),
        Acquire(u8, u8, LeaseKind),
        Release(u8, u8),
        Downgrade(u8, u8),
        TryAcquire(u8, u8, LeaseKind),
        Demote(u8, u8),
        Close(u8),
        Advance(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        let kind = prop_oneof![Just(LeaseKind::Read), Just(LeaseKind::Write), Just(LeaseKind::SharedWrite)];
        prop_oneof![
            1 => (0u8..4).prop_map(Op::Open),
            3 => (0u8..4).prop_map(Op::Beat),
            4 => (0u8..4, 0u8..3, kind.clone()).prop_map(|(s, i, k)| Op::Acquire(s, i, k)),
            2 => (0u8..4, 0u8..3).prop_map(|(s, i)| Op::Release(s, i)),
            1 => (0u8..4, 0u8..3).prop_map(|(s, i)| Op::Downgrade(s, i)),
            2 => (0u8..4, 0u8..3, kind).prop_map(|(s, i, k)| Op::TryAcquire(s, i, k)),
            1 => (0u8..4, 0u8..3).prop_map(|(s, i)| Op::Demote(s, i)),
            1 => (0u8..4).prop_map(Op::Close),
            3 => (0u16..6000).prop_map(Op::Advance),
        ]
    }

    /// No two live sessions hold conflicting leases on one inode.
    fn no_conflicts(t: &LeaseTable) {
        for ino in 0..3 {
            let h = t.holders(InodeId(ino));
            for (i, (a, ka)) in h.iter().enumerate() {
                for (b, kb) in &h[i + 1..] {
                    assert!(a == b || LeaseKind::compatible(*ka, *kb), "ino {ino}: {a}:{ka:?} with {b}:{kb:?}");
                }
            }
        }
    }

    proptest! {
        #[test]
        fn leases_never_conflict_and_recalls_end(ops in proptest::collection::vec(op(), 1..120)) {
            let start = Instant::now();
            let mut now = start;
            let mut t = LeaseTable::new(TERM);
            for op in ops {
                match op {
                    Op::Open(s) => t.open_session(S(s as u128), now),
                    Op::Beat(s) => { t.heartbeat(S(s as u128), now); }
                    Op::Acquire(s, i, k) => {
                        if let Decision::Wait { recall } = t.acquire(S(s as u128), InodeId(i as u64), k, now) {
                            for r in recall {
                                prop_assert!(t.recalled(InodeId(i as u64)).contains(&r));
                            }
                        }
                    }
                    Op::Release(s, i) => t.release(S(s as u128), InodeId(i as u64)),
                    Op::Downgrade(s, i) => t.downgrade(S(s as u128), InodeId(i as u64)),
                    Op::TryAcquire(s, i, k) => { t.try_acquire(S(s as u128), InodeId(i as u64), k, now); }
                    Op::Demote(s, i) => t.demote(S(s as u128), InodeId(i as u64)),
                    Op::Close(s) => t.close_session(S(s as u128)),
                    Op::Advance(ms) => now += Duration::from_millis(ms as u64),
                }
                no_conflicts(&t);
            }
            // Every recall ends as soon as its holders answer, with no time
            // passing: a newcomer asks for a write lease on each inode; every
            // recalled holder gives its lease back, every waiter asks again
            // (as the MDS's waiting requests do), and within a few rounds
            // the newcomer holds the lease.
            t.open_session(S(98), now);
            for ino in (0..3).map(InodeId) {
                let mut granted = false;
                for _ in 0..32 {
                    if let Decision::Granted { .. } = t.acquire(S(98), ino, LeaseKind::Write, now) {
                        granted = true;
                        break;
                    }
                    for h in t.recalled(ino) {
                        t.release(h, ino);
                    }
                    for (w, k) in t.waiting(ino) {
                        if w != S(98) {
                            t.acquire(w, ino, k, now);
                        }
                    }
                }
                prop_assert!(granted, "{:?}: recalls answered, yet no write lease: holders {:?}", ino, t.holders(ino));
                t.release(S(98), ino);
            }
            // And one term of silence later, whoever asks gets the lease,
            // because every holder has expired.
            now += TERM;
            t.open_session(S(99), now);
            for ino in 0..3 {
                prop_assert_eq!(t.acquire(S(99), InodeId(ino), LeaseKind::Write, now), Decision::Granted { kind: LeaseKind::Write });
            }
        }

        #[test]
        fn expiry_frees_everything_a_dead_session_held(kinds in proptest::collection::vec(0u8..3, 1..10)) {
            let mut now = Instant::now();
            let mut t = LeaseTable::new(TERM);
            t.open_session(S(1), now);
            t.open_session(S(2), now);
            for (i, k) in kinds.iter().enumerate() {
                let kind = [LeaseKind::Read, LeaseKind::Write, LeaseKind::SharedWrite][*k as usize];
                prop_assert_eq!(t.acquire(S(1), InodeId(i as u64), kind, now), Decision::Granted { kind });
            }
            // session 2 keeps heartbeating, session 1 goes silent; the
            // MDS's ticker expires sessions
            let mut expired = Vec::new();
            for _ in 0..11 {
                now += Duration::from_secs(1);
                t.heartbeat(S(2), now);
                expired.extend(t.expire(now));
            }
            prop_assert_eq!(expired, vec![S(1)]);
            prop_assert_eq!(t.count(S(1)), 0);
            prop_assert!(!t.is_live(S(1), now));
            for i in 0..kinds.len() {
                prop_assert!(t.holders(InodeId(i as u64)).is_empty());
                prop_assert_eq!(t.acquire(S(2), InodeId(i as u64), LeaseKind::Write, now), Decision::Granted { kind: LeaseKind::Write });
            }
        }
    }

    /// Regression (proptest): opening an id again forgot which inodes the
    /// old session held, so its read lease outlived it.
    #[test]
    fn reopening_a_session_id_drops_what_it_held() {
        let now = Instant::now();
        let mut t = LeaseTable::new(TERM);
        t.open_session(S(0), now);
        assert!(matches!(t.acquire(S(0), InodeId(0), LeaseKind::Read, now), Decision::Granted { .. }));
        t.open_session(S(0), now);
        assert!(t.holders(InodeId(0)).is_empty());
        t.open_session(S(9), now + TERM);
        assert_eq!(t.acquire(S(9), InodeId(0), LeaseKind::Write, now + TERM), Decision::Granted { kind: LeaseKind::Write });
    }

    /// Leases on an inode that is gone leave every session's budget: a
    /// job that makes and removes files all day must not fill it.
    #[test]
    fn a_forgotten_inode_leaves_every_budget_and_the_rest_stays() {
        let now = Instant::now();
        let mut t = LeaseTable::new(TERM);
        let (gone, kept) = (InodeId(7), InodeId(8));
        for s in [S(1), S(2), S(3)] {
            t.open_session(s, now);
        }
        for s in [S(1), S(2)] {
            assert!(matches!(t.acquire(s, gone, LeaseKind::Read, now), Decision::Granted { .. }));
            assert!(matches!(t.acquire(s, kept, LeaseKind::Read, now), Decision::Granted { .. }));
        }
        // A writer waits for the readers of `gone` to give it back.
        assert!(matches!(t.acquire(S(3), gone, LeaseKind::Write, now), Decision::Wait { .. }));
        t.forget(gone);
        assert!(t.holders(gone).is_empty() && t.recalled(gone).is_empty());
        for s in [S(1), S(2)] {
            assert_eq!((t.count(s), t.touched(s)), (1, 1));
            assert!(!t.past_limit(s, InodeId(9), 2));
        }
        assert_eq!(t.touched(S(3)), 0);
        assert_eq!(t.holders(kept).len(), 2);
        assert_eq!(t.acquire(S(3), gone, LeaseKind::Write, now), Decision::Granted { kind: LeaseKind::Write });
    }

    /// Regression: a session expired by a request's acquire was never
    /// reported by `expire`, so the MDS kept its locks and open counts.
    #[test]
    fn expire_reports_sessions_a_request_expired() {
        let now = Instant::now();
        let mut t = LeaseTable::new(TERM);
        t.open_session(S(1), now);
        t.open_session(S(2), now);
        assert!(matches!(t.acquire(S(1), InodeId(3), LeaseKind::Write, now), Decision::Granted { .. }));
        let later = now + TERM;
        t.heartbeat(S(2), later);
        assert!(matches!(t.acquire(S(2), InodeId(3), LeaseKind::Write, later), Decision::Granted { .. }));
        assert_eq!(t.expire(later), vec![S(1)]);
        assert_eq!(t.expire(later), Vec::<SessionId>::new());
    }

    /// A holder that keeps heartbeating but never gives back what it was
    /// asked for is evicted one term after the recall; before that it is
    /// waited for.
    #[test]
    fn a_holder_that_heartbeats_but_never_answers_a_recall_is_evicted_after_a_term() {
        let now = Instant::now();
        let mut t = LeaseTable::new(TERM);
        t.open_session(S(1), now);
        t.open_session(S(2), now);
        let ino = InodeId(5);
        assert!(matches!(t.acquire(S(1), ino, LeaseKind::Write, now), Decision::Granted { .. }));
        assert_eq!(t.acquire(S(2), ino, LeaseKind::Write, now), Decision::Wait { recall: vec![S(1)] });
        let almost = now + TERM - Duration::from_millis(1);
        for s in [S(1), S(2)] {
            assert!(t.heartbeat(s, almost));
        }
        assert!(t.expire(almost).is_empty());
        assert!(t.take_unresponsive().is_empty());
        let later = now + TERM;
        for s in [S(1), S(2)] {
            assert!(t.heartbeat(s, later));
        }
        assert_eq!(t.expire(later), vec![S(1)]);
        assert_eq!(t.take_unresponsive(), vec![S(1)]);
        assert!(t.take_unresponsive().is_empty());
        assert!(!t.heartbeat(S(1), later), "the evicted session lives on");
        assert_eq!(t.acquire(S(2), ino, LeaseKind::Write, later), Decision::Granted { kind: LeaseKind::Write });
    }

    #[test]
    fn a_writer_waits_for_readers_to_release() {
        let now = Instant::now();
        let mut t = LeaseTable::new(TERM);
        for s in 1..=3 {
            t.open_session(S(s), now);
        }
        assert_eq!(t.acquire(S(1), InodeId(7), LeaseKind::Read, now), Decision::Granted { kind: LeaseKind::Read });
        assert_eq!(t.acquire(S(2), InodeId(7), LeaseKind::Read, now), Decision::Granted { kind: LeaseKind::Read });
        assert_eq!(t.acquire(S(3), InodeId(7), LeaseKind::Write, now), Decision::Wait { recall: vec![S(1), S(2)] });
        t.release(S(1), InodeId(7));
        // 2 was asked already
        assert_eq!(t.acquire(S(3), InodeId(7), LeaseKind::Write, now), Decision::Wait { recall: vec![] });
        t.release(S(2), InodeId(7));
        assert_eq!(t.acquire(S(3), InodeId(7), LeaseKind::Write, now), Decision::Granted { kind: LeaseKind::Write });
        // shared writers coexist; a reader must wait for them
        t.release(S(3), InodeId(7));
        assert_eq!(t.acquire(S(1), InodeId(8), LeaseKind::SharedWrite, now), Decision::Granted { kind: LeaseKind::SharedWrite });
        assert_eq!(t.acquire(S(2), InodeId(8), LeaseKind::SharedWrite, now), Decision::Granted { kind: LeaseKind::SharedWrite });
        assert_eq!(t.acquire(S(3), InodeId(8), LeaseKind::Read, now), Decision::Wait { recall: vec![S(1), S(2)] });
    }

    #[test]
    fn readers_cannot_starve_a_waiting_writer() {
        let now = Instant::now();
        let mut t = LeaseTable::new(TERM);
        for s in 1..=3 {
            t.open_session(S(s), now);
        }
        assert!(matches!(t.acquire(S(1), InodeId(5), LeaseKind::Read, now), Decision::Granted { .. }));
        assert_eq!(t.acquire(S(3), InodeId(5), LeaseKind::Write, now), Decision::Wait { recall: vec![S(1)] });
        // a new reader queues behind the writer, and the recalled reader
        // keeps its lease until it releases, but cannot renew it
        assert_eq!(t.acquire(S(2), InodeId(5), LeaseKind::Read, now), Decision::Wait { recall: vec![] });
        assert!(matches!(t.acquire(S(1), InodeId(5), LeaseKind::Read, now), Decision::Wait { .. }));
        assert_eq!(t.holders(InodeId(5)), vec![(S(1), LeaseKind::Read)]);
        assert!(matches!(t.acquire(S(3), InodeId(5), LeaseKind::Write, now), Decision::Wait { .. }));
        t.release(S(1), InodeId(5));
        assert_eq!(t.acquire(S(3), InodeId(5), LeaseKind::Write, now), Decision::Granted { kind: LeaseKind::Write });
        t.release(S(3), InodeId(5));
        assert!(matches!(t.acquire(S(2), InodeId(5), LeaseKind::Read, now), Decision::Granted { .. }));
    }

    #[test]
    fn a_silent_holder_is_waited_for_only_until_its_session_expires() {
        let start = Instant::now();
        let mut t = LeaseTable::new(TERM);
        t.open_session(S(1), start);
        t.open_session(S(2), start);
        assert!(matches!(t.acquire(S(1), InodeId(1), LeaseKind::Write, start), Decision::Granted { .. }));
        let later = start + Duration::from_secs(5);
        t.heartbeat(S(2), later);
        assert_eq!(t.acquire(S(2), InodeId(1), LeaseKind::Read, later), Decision::Wait { recall: vec![S(1)] });
        let after = start + TERM;
        t.heartbeat(S(2), after);
        assert_eq!(t.acquire(S(2), InodeId(1), LeaseKind::Read, after), Decision::Granted { kind: LeaseKind::Read });
        assert_eq!(t.remaining(S(2), after), TERM);
        assert_eq!(t.remaining(S(1), after), Duration::ZERO);
    }

    #[test]
    fn a_directory_writer_is_taken_only_when_nobody_looks_and_demoted_on_recall() {
        let now = Instant::now();
        let mut t = LeaseTable::new(TERM);
        t.open_session(S(1), now);
        t.open_session(S(2), now);
        assert!(t.try_acquire(S(1), InodeId(7), LeaseKind::Write, now));
        // a reader elsewhere recalls it; the writer sends its changes and
        // keeps a read lease, which the reader shares
        assert_eq!(t.acquire(S(2), InodeId(7), LeaseKind::Read, now), Decision::Wait { recall: vec![S(1)] });
        t.demote(S(1), InodeId(7));
        assert_eq!(t.holders(InodeId(7)), vec![(S(1), LeaseKind::Read)]);
        assert!(t.recalled(InodeId(7)).is_empty());
        assert_eq!(t.acquire(S(2), InodeId(7), LeaseKind::Read, now), Decision::Granted { kind: LeaseKind::Read });
        // with another reader there, no write lease is given, and nobody
        // is recalled for trying
        assert!(!t.try_acquire(S(1), InodeId(7), LeaseKind::Write, now));
        assert!(t.recalled(InodeId(7)).is_empty());
        assert_eq!(t.holders(InodeId(7)), vec![(S(1), LeaseKind::Read), (S(2), LeaseKind::Read)]);
        // a demoted reader recalled again gives its lease up
        t.demote(S(2), InodeId(7));
        assert_eq!(t.holders(InodeId(7)), vec![(S(1), LeaseKind::Read)]);
        assert!(t.try_acquire(S(1), InodeId(7), LeaseKind::Write, now));
        // nor is one given to a session that expired
        assert!(!t.try_acquire(S(2), InodeId(8), LeaseKind::Write, now + TERM));
    }
}
