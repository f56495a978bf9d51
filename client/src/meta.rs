//! Metadata cached under leases (DESIGN.md, "Leases").
//!
//! What is kept, and for how long:
//! - attributes of inodes the client holds a lease on, with the lease's
//!   mode (read, write, shared write);
//! - for directories it holds a read lease on: names looked up (positive
//!   and negative), and the listing read so far in cookie order;
//! - everything only while the session is certainly alive at the MDS: the
//!   send time of the last answered heartbeat plus most of the term. A
//!   session that may have expired has lost its leases, so nothing here
//!   counts past that instant, and the kernel is never given a TTL that
//!   outlives it. With shards led by several MDS processes the client has
//!   a session with each it uses, and the cache counts on the one that
//!   lapses first.
//!
//! Races. A reply is cached only if it was granted under the current
//! session and no notice (invalidation, revoke, local drop) about the
//! inodes it carries arrived while the request was out: a reply computed
//! before a change may arrive after the notice of that change. Notices are
//! numbered and the latest `NOTICE_LOG` kept with their inode, so a busy
//! directory elsewhere does not stop this client from caching.
use aifs_common::proto::mds::{Attr, DirEntry, LeaseMode};
use aifs_common::{InodeId, SessionId};
use dashmap::DashMap;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Share of the session term the client counts on: the rest covers the
/// heartbeat's flight time and timer slack.
const TERM_SHARE: f64 = 0.9;
/// Cached attributes past which the cache is emptied (about 200 bytes each).
const MAX_ATTRS: usize = 1 << 20;
/// Listing entries kept per directory.
const MAX_LISTING: usize = 1 << 20;
/// Recent notices remembered; a reply older than all of them is not cached.
const NOTICE_LOG: usize = 4096;

/// What a notice in the log is about.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Noticed {
    Inode(InodeId),
    /// Everything (the session was lost).
    All,
}

/// A point to check replies against.
#[derive(Clone, Copy, Debug)]
pub struct Snap {
    seq: u64,
    session: Option<SessionId>,
}

impl Snap {
    /// The session current when the snapshot was taken.
    pub fn session(&self) -> Option<SessionId> {
        self.session
    }
}

#[derive(Default)]
struct DirCache {
    names: HashMap<String, Option<InodeId>>,
    /// `names` holds every entry of the directory: a name not in it does
    /// not exist (a lookup of a missing name needs no round trip).
    all_names: bool,
    /// Entries in cookie order from the start of the directory.
    listing: Vec<DirEntry>,
    /// The listing reaches the end of the directory.
    complete: bool,
    /// Known from a listing, or from making the directory here.
    parent: Option<InodeId>,
}

/// Entries of a directory from a cookie on, from the cache.
pub struct Listed {
    pub entries: Vec<DirEntry>,
    pub parent: InodeId,
}

pub struct MetaCache {
    /// The current session's id (with the process that leads shard 0).
    session: Mutex<Option<SessionId>>,
    base: Instant,
    /// Nanoseconds after `base` until which the session is certainly live.
    valid_until: AtomicU64,
    /// The sessions with other MDS processes (shards led apart), each
    /// with its own `valid_until`.
    others: Mutex<HashMap<SessionId, u64>>,
    seq: AtomicU64,
    /// (notice number, inode, from this client's own change) of the
    /// latest notices.
    log: Mutex<VecDeque<(u64, Noticed, bool)>>,
    /// Attributes, good while their inode's lease holds and no notice
    /// about them came.
    attrs: DashMap<InodeId, Attr>,
    /// Leases held on files and directories. An invalidation drops the
    /// attributes and keeps the lease; a revoke drops both.
    modes: DashMap<InodeId, LeaseMode>,
    dirs: DashMap<InodeId, DirCache>,
}

impl Default for MetaCache {
    fn default() -> Self {
        Self::new()
    }
}

impl MetaCache {
    pub fn new() -> Self {
        MetaCache {
            session: Mutex::new(None),
            base: Instant::now(),
            valid_until: AtomicU64::new(0),
            others: Mutex::new(HashMap::new()),
            seq: AtomicU64::new(0),
            log: Mutex::new(VecDeque::with_capacity(NOTICE_LOG)),
            attrs: DashMap::new(),
            modes: DashMap::new(),
            dirs: DashMap::new(),
        }
    }

    fn nanos(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.base).as_nanos() as u64
    }

    pub fn session(&self) -> Option<SessionId> {
        self.session.lock().ok().and_then(|s| *s)
    }

    /// A (new) session: whatever was cached under another one is gone.
    pub fn set_session(&self, id: SessionId, sent_at: Instant, term: Duration) {
        let before = self.session.lock().map(|mut s| s.replace(id)).unwrap_or(None);
        if before != Some(id) {
            self.clear();
            self.valid_until.store(0, Ordering::Release);
        }
        self.renewed(sent_at, term);
    }

    /// A heartbeat sent at `sent_at` was answered.
    pub fn renewed(&self, sent_at: Instant, term: Duration) {
        let until = self.nanos(sent_at) + term.mul_f64(TERM_SHARE).as_nanos() as u64;
        self.valid_until.fetch_max(until, Ordering::AcqRel);
    }

    /// A session with another MDS process, opened with a request sent at
    /// `sent_at`: what it leases counts for as long as it is renewed.
    pub fn add_other(&self, id: SessionId, sent_at: Instant, term: Duration) {
        if let Ok(mut o) = self.others.lock() {
            o.insert(id, 0);
        }
        self.renew_other(id, sent_at, term);
    }

    /// A heartbeat of session `id` with another process, sent at
    /// `sent_at`, was answered.
    pub fn renew_other(&self, id: SessionId, sent_at: Instant, term: Duration) {
        let until = self.nanos(sent_at) + term.mul_f64(TERM_SHARE).as_nanos() as u64;
        if let Ok(mut o) = self.others.lock() {
            if let Some(v) = o.get_mut(&id) {
                *v = (*v).max(until);
            }
        }
    }

    /// Session `id` with another process is over (lost there, or that
    /// process leads nothing this client uses): what it leased is gone,
    /// and this client does not tell the leases of one process from
    /// another's, so nothing cached counts any more.
    pub fn drop_other(&self, id: SessionId) {
        let had = self.others.lock().ok().and_then(|mut o| o.remove(&id)).is_some();
        if had {
            self.clear();
        }
    }

    /// This client's sessions with other processes.
    pub fn others(&self) -> Vec<SessionId> {
        self.others.lock().map(|o| o.keys().copied().collect()).unwrap_or_default()
    }

    /// Granted under one of this client's current sessions.
    fn is_current(&self, granted: Option<SessionId>) -> bool {
        let Some(g) = granted else { return false };
        self.session() == Some(g) || self.others.lock().is_ok_and(|o| o.contains_key(&g))
    }

    /// `granted` is one of this client's sessions, and the one with shard
    /// 0's leader is still that of `snap`.
    pub fn granted_now(&self, snap: Snap, granted: Option<SessionId>) -> bool {
        self.is_current(granted) && self.session() == snap.session
    }

    /// How much longer the session's leases certainly last (the soonest
    /// to lapse of this client's sessions').
    pub fn remaining(&self) -> Duration {
        let now = self.nanos(Instant::now());
        let mut until = self.valid_until.load(Ordering::Acquire);
        if let Ok(o) = self.others.lock() {
            until = o.values().fold(until, |u, v| u.min(*v));
        }
        Duration::from_nanos(until.saturating_sub(now))
    }

    fn live(&self) -> bool {
        !self.remaining().is_zero()
    }

    pub fn snap(&self) -> Snap {
        Snap { seq: self.seq.load(Ordering::Acquire), session: self.session() }
    }

    /// A notice from the MDS (or a loss of the session).
    fn notice(&self, ino: InodeId) {
        self.log_notice(Noticed::Inode(ino), false);
    }

    /// A notice of this client's own change: replies still out are stale,
    /// but nobody else changed anything.
    fn notice_own(&self, ino: InodeId) {
        self.log_notice(Noticed::Inode(ino), true);
    }

    fn log_notice(&self, what: Noticed, own: bool) {
        if let Ok(mut l) = self.log.lock() {
            let seq = self.seq.fetch_add(1, Ordering::AcqRel) + 1;
            if l.len() >= NOTICE_LOG {
                l.pop_front();
            }
            l.push_back((seq, what, own));
        }
    }

    /// May a reply about `inos` granted under `granted`, to a request sent
    /// at `snap`, be cached? With `others_only`, notices of this client's
    /// own changes do not count.
    fn no_notice(&self, snap: Snap, granted: Option<SessionId>, inos: &[InodeId], others_only: bool) -> bool {
        if !self.is_current(granted) || self.session() != snap.session || !self.live() {
            return false;
        }
        let Ok(l) = self.log.lock() else { return false };
        if self.seq.load(Ordering::Acquire) == snap.seq {
            return true;
        }
        // The log no longer reaches back to the request: assume the worst.
        if l.front().is_none_or(|(first, _, _)| *first > snap.seq + 1) {
            return false;
        }
        !l.iter().any(|(seq, what, own)| {
            *seq > snap.seq
                && !(others_only && *own)
                && match what {
                    Noticed::All => true,
                    Noticed::Inode(ino) => inos.contains(ino),
                }
        })
    }

    fn usable(&self, snap: Snap, granted: Option<SessionId>, inos: &[InodeId]) -> bool {
        self.no_notice(snap, granted, inos, false)
    }

    /// Nobody else changed `ino` since `snap` (and the session is the
    /// same): this client's own changes since then do not count.
    pub fn quiet_since(&self, snap: Snap, ino: InodeId) -> bool {
        self.no_notice(snap, snap.session, &[ino], true)
    }

    /// Leased attributes of `ino` and the lease's mode.
    pub fn attr(&self, ino: InodeId) -> Option<(Attr, LeaseMode)> {
        if !self.live() {
            return None;
        }
        let a = self.attrs.get(&ino)?.clone();
        Some((a, self.mode(ino)))
    }

    /// The lease this client holds on `ino`.
    pub fn mode(&self, ino: InodeId) -> LeaseMode {
        if !self.live() {
            return LeaseMode::None;
        }
        self.modes.get(&ino).map(|m| *m).unwrap_or(LeaseMode::None)
    }

    /// Kernel TTL for `ino`: what is left of its lease, zero without one.
    pub fn ttl(&self, ino: InodeId) -> Duration {
        if self.attrs.contains_key(&ino) {
            self.remaining()
        } else {
            Duration::ZERO
        }
    }

    /// Attributes granted with a lease of `mode`. A write lease is not
    /// lowered by a read grant (the MDS keeps it too).
    pub fn put_attr(&self, snap: Snap, granted: Option<SessionId>, a: &Attr, mode: LeaseMode) {
        if mode == LeaseMode::None || !self.usable(snap, granted, &[a.ino]) {
            return;
        }
        if self.modes.len() >= MAX_ATTRS {
            self.clear();
        }
        self.attrs.insert(a.ino, a.clone());
        let mut m = self.modes.entry(a.ino).or_insert(mode);
        if mode != LeaseMode::Read {
            *m = mode;
        }
    }

    /// New attributes of an inode already leased, from this client's own
    /// change sent at `snap` (the MDS notifies everyone else). Replies to
    /// this client's other requests still out predate the change: the
    /// notice makes them be dropped. If something else changed the inode
    /// meanwhile, the attributes are forgotten instead.
    pub fn refresh_attr(&self, snap: Snap, a: &Attr) {
        let fresh = self.usable(snap, snap.session, &[a.ino]);
        self.notice_own(a.ino);
        if fresh && self.modes.contains_key(&a.ino) {
            self.attrs.insert(a.ino, a.clone());
        } else {
            self.attrs.remove(&a.ino);
        }
    }

    /// What the cache knows of `name` in `dir`: `Some(None)` is a cached
    /// negative entry.
    pub fn dentry(&self, dir: InodeId, name: &str) -> Option<Option<InodeId>> {
        if !self.live() {
            return None;
        }
        let d = self.dirs.get(&dir)?;
        match d.names.get(name) {
            Some(v) => Some(*v),
            None if d.all_names => Some(None),
            None => None,
        }
    }

    /// A directory this client just made, leased to it: empty.
    pub fn new_dir(&self, snap: Snap, granted: Option<SessionId>, dir: InodeId, parent: InodeId) {
        if !self.usable(snap, granted, &[dir]) {
            return;
        }
        self.dirs.insert(dir, DirCache { all_names: true, complete: true, parent: Some(parent), ..Default::default() });
    }

    /// Does this client hold `name` in `dir` as `ino`, under the
    /// directory's lease?
    pub fn dentry_is(&self, dir: InodeId, name: &str, ino: InodeId) -> bool {
        self.live() && self.dirs.get(&dir).is_some_and(|d| d.names.get(name) == Some(&Some(ino)))
    }

    /// A lookup's answer, under the directory's lease.
    pub fn put_dentry(&self, snap: Snap, granted: Option<SessionId>, dir: InodeId, name: &str, ino: Option<InodeId>) {
        if !self.usable(snap, granted, &[dir, ino.unwrap_or(dir)]) {
            return;
        }
        self.dirs.entry(dir).or_default().names.insert(name.to_string(), ino);
    }

    /// This client's own change of `name` in `dir`, sent at `snap`: now
    /// names `ino` (`None`: nothing), or unknown (`forget`). If another
    /// client changed the directory while the request was out, the name is
    /// forgotten: that change may be the newer one.
    pub fn local_entry(&self, snap: Snap, dir: InodeId, name: &str, ino: Option<InodeId>, forget: bool) {
        let forget = forget || !self.quiet_since(snap, dir);
        self.notice_own(dir);
        if let Some(mut d) = self.dirs.get_mut(&dir) {
            if forget {
                d.names.remove(name);
                d.all_names = false;
            } else {
                d.names.insert(name.to_string(), ino);
            }
            d.listing.clear();
            d.complete = false;
        }
    }

    /// Up to `max` entries after `cookie` from the cached listing, when it
    /// covers them.
    pub fn listed(&self, dir: InodeId, cookie: u64, max: usize) -> Option<Listed> {
        if !self.live() {
            return None;
        }
        let d = self.dirs.get(&dir)?;
        let at = d.listing.partition_point(|e| e.cookie <= cookie);
        if at == d.listing.len() && !d.complete {
            return None;
        }
        let end = d.listing.len().min(at.saturating_add(max));
        Some(Listed { entries: d.listing[at..end].to_vec(), parent: d.parent? })
    }

    /// A batch of entries read from the MDS after `cookie`: appended when
    /// it continues the cached listing.
    pub fn put_listing(&self, snap: Snap, granted: Option<SessionId>, dir: InodeId, cookie: u64, entries: &[DirEntry], eof: bool, parent: InodeId) {
        let mut inos: Vec<InodeId> = entries.iter().map(|e| e.ino).collect();
        inos.push(dir);
        if !self.usable(snap, granted, &inos) {
            return;
        }
        let mut d = self.dirs.entry(dir).or_default();
        d.parent = Some(parent);
        let end = d.listing.last().map(|e| e.cookie).unwrap_or(2);
        if cookie != end || d.complete || d.listing.len() + entries.len() > MAX_LISTING {
            return;
        }
        for e in entries {
            d.names.insert(e.name.clone(), Some(e.ino));
        }
        d.listing.extend_from_slice(entries);
        d.complete = eof;
        if eof {
            d.all_names = true;
        }
    }

    /// The MDS says `ino` changed: drop its attributes and, for a
    /// directory, the named entries and the listing (all of it if no names
    /// are given). The lease stays.
    pub fn invalidate(&self, ino: InodeId, names: &[String]) {
        self.notice(ino);
        self.attrs.remove(&ino);
        if names.is_empty() {
            self.dirs.remove(&ino);
        } else if let Some(mut d) = self.dirs.get_mut(&ino) {
            for n in names {
                d.names.remove(n);
            }
            d.all_names = false;
            d.listing.clear();
            d.complete = false;
        }
    }

    /// A directory's write lease was recalled and became a read lease:
    /// what is cached stays right, but replies still out about it may
    /// not be (a grant of the lease that crossed the recall, say).
    pub fn demoted(&self, dir: InodeId) {
        self.notice(dir);
    }

    /// Is `ino` a directory this client caches something of?
    pub fn knows_dir(&self, ino: InodeId) -> bool {
        self.dirs.contains_key(&ino) || self.attrs.get(&ino).is_some_and(|a| a.kind == aifs_common::proto::mds::FileKind::Dir)
    }

    /// This client changed an entry of `dir` itself at `now_ns` (under
    /// the directory's write lease), adding `links` subdirectories: its
    /// cached times and link count follow.
    pub fn touch_dir(&self, dir: InodeId, now_ns: i64, links: i32) {
        if let Some(mut a) = self.attrs.get_mut(&dir) {
            a.mtime_ns = a.mtime_ns.max(now_ns);
            a.ctime_ns = a.ctime_ns.max(now_ns);
            a.nlink = a.nlink.saturating_add_signed(links);
        }
    }

    /// Does the cache hold every name of `dir`, and none?
    pub fn known_empty(&self, dir: InodeId) -> bool {
        self.live() && self.dirs.get(&dir).is_some_and(|d| d.all_names && d.names.values().all(|v| v.is_none()))
    }

    /// The lease on `ino` is gone: forget everything about it.
    pub fn drop_ino(&self, ino: InodeId) {
        self.invalidate(ino, &[]);
        self.modes.remove(&ino);
    }

    /// A write lease this client gives up at close becomes a read lease.
    pub fn downgrade(&self, ino: InodeId) {
        if let Some(mut m) = self.modes.get_mut(&ino) {
            if *m == LeaseMode::Write {
                *m = LeaseMode::Read;
            }
        }
    }

    /// This client changed `ino`'s attributes (its xattrs): ask again.
    /// The disk `ino`'s data holds, as the MDS measured it: the cached
    /// attributes take it (`st_blocks`).
    pub fn set_allocated(&self, ino: InodeId, bytes: u64) {
        if let Some(mut a) = self.attrs.get_mut(&ino) {
            a.allocated = Some(bytes);
        }
    }

    pub fn forget_attr(&self, ino: InodeId) {
        self.notice_own(ino);
        self.attrs.remove(&ino);
    }

    pub fn clear(&self) {
        self.log_notice(Noticed::All, false);
        self.attrs.clear();
        self.modes.clear();
        self.dirs.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aifs_common::proto::mds::FileKind;

    fn attr(ino: u64) -> Attr {
        Attr {
            ino: InodeId(ino),
            kind: FileKind::File,
            perm: 0o644,
            nlink: 1,
            uid: 0,
            gid: 0,
            size: 0,
            atime_ns: 0,
            mtime_ns: 0,
            ctime_ns: 0,
            layout: None,
            xattrs: 0,
            rdev: 0,
            allocated: None,
        }
    }

    fn live_cache() -> MetaCache {
        let m = MetaCache::new();
        m.set_session(SessionId(7), Instant::now(), Duration::from_secs(10));
        m
    }

    #[test]
    fn a_reply_that_raced_with_a_notice_is_not_cached() {
        let m = live_cache();
        let before = m.snap();
        m.invalidate(InodeId(5), &[]);
        m.put_attr(before, Some(SessionId(7)), &attr(5), LeaseMode::Read);
        assert!(m.attr(InodeId(5)).is_none());
        let after = m.snap();
        m.put_attr(after, Some(SessionId(7)), &attr(5), LeaseMode::Read);
        assert!(m.attr(InodeId(5)).is_some());
        // granted under another session, or under none
        m.put_attr(after, None, &attr(6), LeaseMode::Read);
        m.put_attr(after, Some(SessionId(8)), &attr(6), LeaseMode::Read);
        assert!(m.attr(InodeId(6)).is_none());
        // a notice about another inode does not spoil the reply
        let s = m.snap();
        m.invalidate(InodeId(9), &[]);
        m.put_attr(s, Some(SessionId(7)), &attr(6), LeaseMode::Read);
        assert!(m.attr(InodeId(6)).is_some());
    }

    #[test]
    fn an_invalidation_drops_attributes_and_keeps_the_lease() {
        let m = live_cache();
        m.put_attr(m.snap(), Some(SessionId(7)), &attr(5), LeaseMode::Write);
        m.invalidate(InodeId(5), &[]);
        assert!(m.attr(InodeId(5)).is_none());
        assert_eq!(m.ttl(InodeId(5)), Duration::ZERO);
        assert_eq!(m.mode(InodeId(5)), LeaseMode::Write);
        m.drop_ino(InodeId(5));
        assert_eq!(m.mode(InodeId(5)), LeaseMode::None);
    }

    #[test]
    fn own_changes_are_not_taken_for_someone_elses() {
        let m = live_cache();
        let s = m.snap();
        m.local_entry(s, InodeId(1), "a", Some(InodeId(10)), false);
        assert!(m.quiet_since(s, InodeId(1)), "an own create looked like another client's");
        // but a reply about the directory sent before it is not kept
        m.put_dentry(s, Some(SessionId(7)), InodeId(1), "b", None);
        assert_eq!(m.dentry(InodeId(1), "b"), None);
        m.invalidate(InodeId(1), &["c".into()]);
        assert!(!m.quiet_since(s, InodeId(1)));
    }

    #[test]
    fn a_read_grant_does_not_lower_a_write_lease() {
        let m = live_cache();
        m.put_attr(m.snap(), Some(SessionId(7)), &attr(5), LeaseMode::Write);
        m.put_attr(m.snap(), Some(SessionId(7)), &attr(5), LeaseMode::Read);
        assert_eq!(m.mode(InodeId(5)), LeaseMode::Write);
    }

    #[test]
    fn nothing_counts_once_the_session_may_have_expired() {
        let m = MetaCache::new();
        let long_ago = Instant::now();
        m.set_session(SessionId(7), long_ago, Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(5));
        let s = m.snap();
        m.put_attr(s, Some(SessionId(7)), &attr(5), LeaseMode::Read);
        assert!(m.attr(InodeId(5)).is_none());
        assert_eq!(m.remaining(), Duration::ZERO);
    }

    #[test]
    fn listings_are_served_only_where_they_are_known() {
        let m = live_cache();
        let e = |n: u64| DirEntry { name: format!("f{n}"), ino: InodeId(100 + n), kind: FileKind::File, cookie: 10 + n };
        m.put_listing(m.snap(), Some(SessionId(7)), InodeId(1), 2, &[e(0), e(1)], false, InodeId(1));
        assert_eq!(m.listed(InodeId(1), 2, 100).map(|l| l.entries.len()), Some(2));
        assert_eq!(m.listed(InodeId(1), 10, 100).map(|l| l.entries.len()), Some(1));
        assert_eq!(m.listed(InodeId(1), 2, 1).map(|l| l.entries.len()), Some(1));
        // past the end of an incomplete listing: ask the MDS
        assert!(m.listed(InodeId(1), 11, 100).is_none());
        m.put_listing(m.snap(), Some(SessionId(7)), InodeId(1), 11, &[e(2)], true, InodeId(1));
        assert_eq!(m.listed(InodeId(1), 12, 100).map(|l| l.entries.len()), Some(0));
        assert_eq!(m.dentry(InodeId(1), "f2"), Some(Some(InodeId(102))));
        // the whole directory is known: a missing name needs no lookup
        assert_eq!(m.dentry(InodeId(1), "nope"), Some(None));
        m.local_entry(m.snap(), InodeId(1), "mine", Some(InodeId(200)), false);
        assert_eq!(m.dentry(InodeId(1), "mine"), Some(Some(InodeId(200))));
        assert_eq!(m.dentry(InodeId(1), "nope"), Some(None));
        m.invalidate(InodeId(1), &["f1".to_string()]);
        assert_eq!(m.dentry(InodeId(1), "nope"), None);
        assert!(m.listed(InodeId(1), 2, 100).is_none());
        assert_eq!(m.dentry(InodeId(1), "f1"), None);
        assert_eq!(m.dentry(InodeId(1), "f0"), Some(Some(InodeId(100))));
    }
}
