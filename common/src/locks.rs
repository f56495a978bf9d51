//! Advisory byte-range locks (`fcntl` F_SETLK/F_GETLK, and `flock`, which
//! the kernel sends as a whole-file lock of its own owner), held at the MDS
//! so that they hold across clients; each client keeps a copy of its own,
//! to take them again from an MDS that restarted. Pure: no clock, no I/O.
//!
//! A lock belongs to an owner: the client session and the kernel's lock
//! owner on that client (a process for POSIX locks, an open file for
//! flock). Two locks conflict when their owners differ, their ranges
//! overlap and either is a write lock. Setting a lock replaces the owner's
//! own locks on that range, splitting them where the range cuts them, as
//! POSIX says; unlocking a range is the same with nothing put back. A
//! session that ends loses every lock it held. A session holds at most as
//! many lock segments as its limit: a set, or an unlock that splits one,
//! that would take it past is refused (`ENOLCK`), and leaves all as it was.
use crate::ids::{InodeId, SessionId};
use std::collections::HashMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lock {
    pub session: SessionId,
    pub owner: u64,
    /// Inclusive range, as the kernel gives it (`end` = u64::MAX: to EOF).
    pub start: u64,
    pub end: u64,
    pub write: bool,
    pub pid: u32,
}

impl Lock {
    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.start <= end && start <= self.end
    }

    fn same_owner(&self, session: SessionId, owner: u64) -> bool {
        self.session == session && self.owner == owner
    }
}

#[derive(Default)]
pub struct LockTable {
    by_ino: HashMap<InodeId, Vec<Lock>>,
    /// Segments held per session.
    counts: HashMap<SessionId, usize>,
}

/// Why a lock was not set.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Another owner's lock in the way.
    Conflict(Lock),
    /// The session would hold more segments than its limit.
    TooMany,
}

/// `v` without `owner`'s locks on `[start, end]`: the parts outside the
/// range stay, so a lock cut in the middle becomes two.
fn cut(v: &[Lock], session: SessionId, owner: u64, start: u64, end: u64) -> Vec<Lock> {
    let mut kept = Vec::with_capacity(v.len() + 1);
    for l in v.iter().copied() {
        if !l.same_owner(session, owner) || !l.overlaps(start, end) {
            kept.push(l);
            continue;
        }
        if l.start < start {
            kept.push(Lock { end: start - 1, ..l });
        }
        if l.end > end {
            kept.push(Lock { start: end + 1, ..l });
        }
    }
    kept
}

impl LockTable {
    /// Lock segments `session` holds.
    pub fn count(&self, session: SessionId) -> usize {
        self.counts.get(&session).copied().unwrap_or(0)
    }

    /// Make `v` the locks on `ino` if `session` then holds at most `max`.
    fn store(&mut self, ino: InodeId, session: SessionId, v: Vec<Lock>, max: usize) -> Result<(), Refused> {
        let mine = |v: &[Lock]| v.iter().filter(|l| l.session == session).count();
        let before = self.by_ino.get(&ino).map(|o| mine(o)).unwrap_or(0);
        let after = self.count(session) - before + mine(&v);
        if after > max && mine(&v) > before {
            return Err(Refused::TooMany);
        }
        // Other sessions' counts change only through `force`.
        let mut delta: HashMap<SessionId, isize> = HashMap::new();
        for l in self.by_ino.get(&ino).into_iter().flatten() {
            *delta.entry(l.session).or_default() -= 1;
        }
        for l in &v {
            *delta.entry(l.session).or_default() += 1;
        }
        for (s, d) in delta {
            let n = self.counts.entry(s).or_default();
            *n = n.saturating_add_signed(d);
            if *n == 0 {
                self.counts.remove(&s);
            }
        }
        if v.is_empty() {
            self.by_ino.remove(&ino);
        } else {
            self.by_ino.insert(ino, v);
        }
        Ok(())
    }

    /// The first lock another owner holds that `want` conflicts with.
    pub fn conflict(&self, ino: InodeId, want: &Lock) -> Option<Lock> {
        self.by_ino.get(&ino)?.iter().copied().find(|l| {
            !l.same_owner(want.session, want.owner) && l.overlaps(want.start, want.end) && (l.write || want.write)
        })
    }

    /// Take `lock`, or return the lock in the way.
    pub fn set(&mut self, ino: InodeId, lock: Lock) -> Result<(), Lock> {
        self.set_within(ino, lock, usize::MAX).map_err(|r| match r {
            Refused::Conflict(c) => c,
            Refused::TooMany => unreachable!("no limit"),
        })
    }

    /// Take `lock` if its session then holds at most `max` segments.
    pub fn set_within(&mut self, ino: InodeId, lock: Lock, max: usize) -> Result<(), Refused> {
        if let Some(c) = self.conflict(ino, &lock) {
            return Err(Refused::Conflict(c));
        }
        let mut v = cut(self.by_ino.get(&ino).map(Vec::as_slice).unwrap_or(&[]), lock.session, lock.owner, lock.start, lock.end);
        v.push(lock);
        self.store(ino, lock.session, v, max)
    }

    /// Record `lock` as held whatever this table has in its way: a copy
    /// of grants made elsewhere, which may come in another order than they
    /// were made (one owner's unlock after another's grant). What it
    /// overlaps of other owners' locks goes.
    pub fn force(&mut self, ino: InodeId, lock: Lock) {
        while let Some(c) = self.conflict(ino, &lock) {
            self.unlock(ino, c.session, c.owner, lock.start.max(c.start), lock.end.min(c.end));
        }
        let _ = self.set(ino, lock);
    }

    /// Release the owner's locks on `[start, end]`.
    pub fn unlock(&mut self, ino: InodeId, session: SessionId, owner: u64, start: u64, end: u64) {
        let _ = self.unlock_within(ino, session, owner, start, end, usize::MAX);
    }

    /// `unlock`, refused if it splits a lock and the session would then
    /// hold more than `max` segments.
    pub fn unlock_within(&mut self, ino: InodeId, session: SessionId, owner: u64, start: u64, end: u64, max: usize) -> Result<(), Refused> {
        let Some(v) = self.by_ino.get(&ino) else { return Ok(()) };
        let kept = cut(v, session, owner, start, end);
        self.store(ino, session, kept, max)
    }

    /// A session ended: every lock it held goes.
    pub fn drop_session(&mut self, session: SessionId) {
        self.by_ino.retain(|_, v| {
            v.retain(|l| l.session != session);
            !v.is_empty()
        });
        self.counts.remove(&session);
    }

    pub fn held(&self, ino: InodeId) -> Vec<Lock> {
        self.by_ino.get(&ino).cloned().unwrap_or_default()
    }

    /// Every lock held, with its file.
    pub fn all(&self) -> Vec<(InodeId, Lock)> {
        self.by_ino.iter().flat_map(|(ino, v)| v.iter().map(move |l| (*ino, *l))).collect()
    }

    pub fn clear(&mut self) {
        self.by_ino.clear();
        self.counts.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lk(session: u64, owner: u64, start: u64, end: u64, write: bool) -> Lock {
        Lock { session: SessionId(session.into()), owner, start, end, write, pid: 0 }
    }

    #[test]
    fn readers_share_writers_exclude_and_owners_never_conflict_with_themselves() {
        let mut t = LockTable::default();
        assert!(t.set(InodeId(1), lk(1, 1, 0, 99, false)).is_ok());
        assert!(t.set(InodeId(1), lk(2, 1, 50, 149, false)).is_ok());
        assert_eq!(t.set(InodeId(1), lk(2, 1, 0, 9, true)), Err(lk(1, 1, 0, 99, false)));
        // same session, other owner (another process on that client)
        assert!(t.set(InodeId(1), lk(1, 2, 10, 10, true)).is_err());
        // upgrading its own lock on a range no one else holds
        assert!(t.set(InodeId(1), lk(1, 1, 0, 9, true)).is_ok());
        assert!(t.set(InodeId(1), lk(3, 1, 200, u64::MAX, true)).is_ok());
        assert!(t.set(InodeId(1), lk(1, 1, 300, 300, false)).is_err());
    }

    #[test]
    fn a_forced_lock_takes_the_place_of_what_was_in_its_way() {
        let mut t = LockTable::default();
        t.set(InodeId(3), lk(0, 1, 0, 99, true)).unwrap();
        t.force(InodeId(3), lk(0, 2, 50, 59, true));
        let mut held = t.held(InodeId(3));
        held.sort_by_key(|l| l.start);
        assert_eq!(held, vec![lk(0, 1, 0, 49, true), lk(0, 2, 50, 59, true), lk(0, 1, 60, 99, true)]);
    }

    #[test]
    fn unlocking_the_middle_splits_a_lock() {
        let mut t = LockTable::default();
        t.set(InodeId(7), lk(1, 1, 0, 99, true)).unwrap();
        t.unlock(InodeId(7), SessionId(1), 1, 40, 59);
        let mut held = t.held(InodeId(7));
        held.sort_by_key(|l| l.start);
        assert_eq!(held, vec![lk(1, 1, 0, 39, true), lk(1, 1, 60, 99, true)]);
        assert!(t.set(InodeId(7), lk(2, 1, 40, 59, true)).is_ok());
        t.drop_session(SessionId(1));
        assert_eq!(t.held(InodeId(7)), vec![lk(2, 1, 40, 59, true)]);
    }

    #[test]
    fn a_session_holds_no_more_segments_than_its_limit() {
        let mut t = LockTable::default();
        let s = SessionId(1);
        for i in 0..3 {
            t.set_within(InodeId(i), lk(1, 1, 0, 99, true), 4).unwrap();
        }
        t.set_within(InodeId(0), lk(1, 1, 200, 299, true), 4).unwrap();
        assert_eq!(t.count(s), 4);
        // a fifth segment, on any file: refused, nothing changed
        assert_eq!(t.set_within(InodeId(3), lk(1, 1, 0, 9, true), 4), Err(Refused::TooMany));
        // an unlock that splits one in two: refused too (ENOLCK)
        assert_eq!(t.unlock_within(InodeId(1), s, 1, 40, 59, 4), Err(Refused::TooMany));
        assert_eq!(t.held(InodeId(1)), vec![lk(1, 1, 0, 99, true)]);
        // replacing a lock, or trimming one, takes nothing more
        t.set_within(InodeId(1), lk(1, 1, 0, 99, false), 4).unwrap();
        t.unlock_within(InodeId(1), s, 1, 0, 49, 4).unwrap();
        assert_eq!(t.count(s), 4);
        t.unlock_within(InodeId(2), s, 1, 0, u64::MAX, 4).unwrap();
        assert_eq!(t.count(s), 3);
        t.set_within(InodeId(3), lk(1, 1, 0, 9, true), 4).unwrap();
        // other sessions are counted apart
        t.set_within(InodeId(3), lk(2, 1, 10, 19, true), 4).unwrap();
        assert_eq!((t.count(s), t.count(SessionId(2))), (4, 1));
        t.drop_session(s);
        assert_eq!((t.count(s), t.count(SessionId(2))), (0, 1));
    }

    proptest! {
        /// Whatever is set and unlocked, no two owners ever hold
        /// conflicting locks, and each owner's locks never overlap.
        #[test]
        fn held_locks_never_conflict(ops in proptest::collection::vec((0u64..3, 0u64..2, 0u64..40, 0u64..10, 0u8..3), 1..80)) {
            let mut t = LockTable::default();
            for (s, o, start, len, kind) in ops {
                let end = start + len;
                match kind {
                    0 | 1 => { let _ = t.set_within(InodeId(0), lk(s, o, start, end, kind == 1), 6); }
                    _ => { let _ = t.unlock_within(InodeId(0), SessionId(s.into()), o, start, end, 6); }
                }
                let h = t.held(InodeId(0));
                for s in 0..3u64 {
                    let n = h.iter().filter(|l| l.session == SessionId(s.into())).count();
                    prop_assert_eq!(t.count(SessionId(s.into())), n, "counted segments differ from those held");
                }
                for (i, a) in h.iter().enumerate() {
                    for b in &h[i + 1..] {
                        if a.overlaps(b.start, b.end) {
                            prop_assert!(!a.same_owner(b.session, b.owner), "one owner's locks overlap: {a:?} {b:?}");
                            prop_assert!(!a.write && !b.write, "conflicting locks held: {a:?} {b:?}");
                        }
                    }
                }
            }
        }
    }
}
