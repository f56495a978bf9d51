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
//! session that ends loses every lock it held.
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
}

impl LockTable {
    /// The first lock another owner holds that `want` conflicts with.
    pub fn conflict(&self, ino: InodeId, want: &Lock) -> Option<Lock> {
        self.by_ino.get(&ino)?.iter().copied().find(|l| {
            !l.same_owner(want.session, want.owner) && l.overlaps(want.start, want.end) && (l.write || want.write)
        })
    }

    /// Take `lock`, or return the lock in the way.
    pub fn set(&mut self, ino: InodeId, lock: Lock) -> Result<(), Lock> {
        if let Some(c) = self.conflict(ino, &lock) {
            return Err(c);
        }
        self.unlock(ino, lock.session, lock.owner, lock.start, lock.end);
        self.by_ino.entry(ino).or_default().push(lock);
        Ok(())
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
        let Some(v) = self.by_ino.get_mut(&ino) else { return };
        let mut kept = Vec::with_capacity(v.len() + 1);
        for l in v.drain(..) {
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
        if kept.is_empty() {
            self.by_ino.remove(&ino);
        } else {
            *v = kept;
        }
    }

    /// A session ended: every lock it held goes.
    pub fn drop_session(&mut self, session: SessionId) {
        self.by_ino.retain(|_, v| {
            v.retain(|l| l.session != session);
            !v.is_empty()
        });
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

    proptest! {
        /// Whatever is set and unlocked, no two owners ever hold
        /// conflicting locks, and each owner's locks never overlap.
        #[test]
        fn held_locks_never_conflict(ops in proptest::collection::vec((0u64..3, 0u64..2, 0u64..40, 0u64..10, 0u8..3), 1..80)) {
            let mut t = LockTable::default();
            for (s, o, start, len, kind) in ops {
                let end = start + len;
                match kind {
                    0 | 1 => { let _ = t.set(InodeId(0), lk(s, o, start, end, kind == 1)); }
                    _ => t.unlock(InodeId(0), SessionId(s.into()), o, start, end),
                }
                let h = t.held(InodeId(0));
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
