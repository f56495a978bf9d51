//! Namespace changes made under a directory's write lease (DESIGN.md,
//! "Leases"; README, "Creates under a directory lease").
//!
//! A client that holds a directory's write lease is the only one that sees
//! the directory: any other client's lookup, listing or change there
//! recalls the lease first. So this client may answer creates and unlinks
//! there itself, as CephFS does with its asynchronous directory operations:
//! a create (or mkdir) takes an inode number (and the file's layout) the
//! MDS reserved for the directory beforehand, and the change goes to the
//! MDS later, with others, in one `Apply` that commits them together. A
//! directory made here comes with its write lease; one removed here must
//! be known empty under its own write lease.
//!
//! Order. Changes are numbered as they are queued. Before any other MDS
//! request this client waits until every change queued before it was
//! applied (`barrier`), so the MDS never sees a request about a name or a
//! file it does not know yet. A recall of the lease waits the same way
//! before it is answered, so the client that asked sees every change.
//! Data is written to a new file's objects only once its create was
//! applied, so a client that dies leaves no objects without a file.
//!
//! Durability. A change answered here is durable once applied: within one
//! MDS round trip of the batch before it, at the latest at the next
//! `fsync` (of the file or the directory), close of the session, or
//! recall. As on a local file system, a crash before that may lose it.
use aifs_common::InodeId;
use aifs_common::proto::mds::{DirOp, Reserved};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The stock of reserved inode numbers below which more are asked for
/// (`RESERVE_BATCH` at a time).
const RESERVE_LOW: usize = 128;
/// Changes sent in one `Apply`.
pub const MAX_BATCH: usize = 1024;

struct Dir {
    reserved: VecDeque<Reserved>,
    /// A `Reserve` is out for this directory.
    refilling: bool,
    /// When a number was last taken here (or the lease granted).
    used: Instant,
    /// Removed here: nothing more is made here, and a recall still waits
    /// for the removal to reach the MDS.
    gone: bool,
}

impl Default for Dir {
    fn default() -> Dir {
        Dir { reserved: VecDeque::new(), refilling: false, used: Instant::now(), gone: false }
    }
}

#[derive(Default)]
struct Inner {
    /// Number of the last change queued.
    last: u64,
    queue: VecDeque<(u64, DirOp)>,
    /// Directories whose write lease this client holds.
    writable: HashMap<InodeId, Dir>,
    /// Directories that need more inode numbers reserved.
    refills: Vec<InodeId>,
    /// Files and directories whose create (mkdir) is queued or being
    /// applied.
    unapplied: HashSet<InodeId>,
    /// Files and directories whose create is in the batch being applied.
    in_flight: Vec<InodeId>,
    /// Reserved numbers this client will not use: to give back.
    unused: Vec<InodeId>,
    /// Directories removed here, with the number of their removal: their
    /// lease goes once it was applied.
    gone: Vec<(u64, InodeId)>,
}

impl Inner {
    fn give_back(&mut self, reserved: impl IntoIterator<Item = Reserved>) {
        self.unused.extend(reserved.into_iter().map(|r| r.ino));
    }

    /// Ask for more inode numbers for `dir` if it runs low.
    fn want_refill(&mut self, dir: InodeId) -> bool {
        match self.writable.get_mut(&dir) {
            Some(d) if !d.refilling && d.reserved.len() < RESERVE_LOW => {
                d.refilling = true;
                self.refills.push(dir);
                true
            }
            _ => false,
        }
    }
}

/// The queue of changes, and the directories this client may change
/// itself.
#[derive(Default)]
pub struct DirOps {
    inner: Mutex<Inner>,
    /// Number of the last change applied (or given up on).
    applied: AtomicU64,
    /// Woken when a change is queued or inode numbers are wanted.
    pub queued: Notify,
    /// Woken when a batch has been answered.
    done: Notify,
}

/// A directory this client changes itself, while `DirOps::local` runs.
pub struct Local<'a> {
    inner: &'a mut Inner,
    dir: InodeId,
    pushed: bool,
}

impl Local<'_> {
    /// A reserved inode number for a new file here, if one is left.
    pub fn take(&mut self) -> Option<Reserved> {
        let d = self.inner.writable.get_mut(&self.dir)?;
        d.used = Instant::now();
        let r = d.reserved.pop_front();
        self.pushed |= self.inner.want_refill(self.dir);
        r
    }

    /// Does this client hold the write lease of `dir` (another directory
    /// than the one changed)?
    pub fn holds(&self, dir: InodeId) -> bool {
        self.inner.writable.get(&dir).is_some_and(|d| !d.gone)
    }

    /// A directory made here by the change just queued: its maker holds
    /// its write lease (the MDS records it as it applies the change), and
    /// no inode numbers yet (a create there asks for some).
    pub fn made_dir(&mut self, dir: InodeId) {
        self.inner.writable.insert(dir, Dir::default());
    }

    /// The directory `dir`, whose write lease this client holds, was
    /// removed by the change just queued. Its lease stays until the MDS
    /// applied that: a recall meanwhile waits for it.
    pub fn removed_dir(&mut self, dir: InodeId) {
        let Some(d) = self.inner.writable.get_mut(&dir) else { return };
        d.gone = true;
        let left = std::mem::take(&mut d.reserved);
        self.inner.give_back(left);
        let n = self.inner.last;
        self.inner.gone.push((n, dir));
    }

    /// Queue a change.
    pub fn push(&mut self, op: DirOp) {
        self.inner.last += 1;
        let n = self.inner.last;
        if let DirOp::Create { ino, .. } | DirOp::Mkdir { ino, .. } = &op {
            self.inner.unapplied.insert(*ino);
        }
        self.inner.queue.push_back((n, op));
        self.pushed = true;
    }
}

impl DirOps {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere while holding it leaves plain data behind.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The MDS granted this client `dir`'s write lease, with inode numbers
    /// reserved there (a new directory's comes with none: many are made
    /// and never filled). More are asked for when a create takes one and
    /// few are left, or finds none (that create goes to the MDS).
    pub fn grant(&self, dir: InodeId, reserved: Vec<Reserved>) {
        let mut g = self.lock();
        let d = g.writable.entry(dir).or_default();
        d.reserved.extend(reserved);
        d.used = Instant::now();
    }

    /// Give back the numbers of directories no create has taken one from
    /// for `idle`; the leases stay (a create there asks for more). What a
    /// certificate holds is bounded at the MDS: numbers kept by directories
    /// done with would leave none for the next ones.
    pub fn give_back_idle(&self, idle: Duration) {
        let mut g = self.lock();
        let done: Vec<Reserved> = g
            .writable
            .values_mut()
            .filter(|d| !d.refilling && !d.reserved.is_empty() && d.used.elapsed() >= idle)
            .flat_map(|d| std::mem::take(&mut d.reserved))
            .collect();
        if done.is_empty() {
            return;
        }
        g.give_back(done);
        drop(g);
        self.queued.notify_one();
    }

    /// Does this client hold `dir`'s write lease?
    pub fn writable(&self, dir: InodeId) -> bool {
        self.lock().writable.contains_key(&dir)
    }

    /// Run `f` on `dir` if this client holds its write lease; the lease is
    /// not recalled meanwhile (a recall waits for `f`, then for what it
    /// queued).
    pub fn local<R>(&self, dir: InodeId, f: impl FnOnce(&mut Local) -> Option<R>) -> Option<R> {
        let mut g = self.lock();
        if !g.writable.get(&dir).is_some_and(|d| !d.gone) {
            return None;
        }
        let mut l = Local { inner: &mut g, dir, pushed: false };
        let r = f(&mut l);
        let pushed = l.pushed;
        drop(g);
        if pushed {
            self.queued.notify_one();
        }
        r
    }

    /// Directories to reserve inode numbers for: those the MDS knows (a
    /// directory made here waits for its mkdir to be applied).
    pub fn take_refills(&self) -> Vec<InodeId> {
        let mut g = self.lock();
        let (later, now): (Vec<InodeId>, Vec<InodeId>) = std::mem::take(&mut g.refills).into_iter().partition(|d| g.unapplied.contains(d));
        g.refills = later;
        now
    }

    /// Reserved numbers arrived (none: the refill failed).
    pub fn refilled(&self, dir: InodeId, got: Vec<Reserved>) {
        let mut g = self.lock();
        match g.writable.get_mut(&dir) {
            Some(d) => {
                d.refilling = false;
                d.reserved.extend(got);
            }
            // the lease went meanwhile
            None => g.give_back(got),
        }
    }

    /// Reserved numbers to give back to the MDS.
    pub fn take_unused(&self) -> Vec<InodeId> {
        std::mem::take(&mut self.lock().unused)
    }

    /// The MDS recalls `dir`'s write lease: from now on changes there go to
    /// the MDS. Returns the change to wait for before answering, if this
    /// client held the lease.
    pub fn revoke(&self, dir: InodeId) -> Option<u64> {
        let mut g = self.lock();
        let d = g.writable.remove(&dir)?;
        g.give_back(d.reserved);
        let last = g.last;
        drop(g);
        self.queued.notify_one();
        Some(last)
    }

    /// Something about `dir` changed (its default layout, say): the
    /// layouts reserved there may be old.
    pub fn forget_reserved(&self, dir: InodeId) {
        let mut g = self.lock();
        if let Some(d) = g.writable.get_mut(&dir) {
            let old = std::mem::take(&mut d.reserved);
            g.give_back(old);
            g.want_refill(dir);
            drop(g);
            self.queued.notify_one();
        }
    }

    /// The session was lost, and every lease with it.
    pub fn lost_leases(&self) {
        let mut g = self.lock();
        let dirs = std::mem::take(&mut g.writable);
        for (_, d) in dirs {
            g.give_back(d.reserved);
        }
        drop(g);
        self.queued.notify_one();
    }

    /// The last change queued so far.
    pub fn last(&self) -> u64 {
        self.lock().last
    }

    /// Wait until change `n` and all before it were answered by the MDS.
    pub async fn wait(&self, n: u64) {
        loop {
            let done = self.done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            if self.applied.load(Ordering::Acquire) >= n {
                return;
            }
            done.await;
        }
    }

    /// Wait until every change queued so far was answered.
    pub async fn barrier(&self) {
        let n = self.last();
        if self.applied.load(Ordering::Acquire) < n {
            self.wait(n).await;
        }
    }

    /// The last handle of `ino` closed: the MDS is told with the next
    /// batch. If the file's create has not been sent yet, it goes as a
    /// closed file instead.
    pub fn close(&self, ino: InodeId) {
        let mut g = self.lock();
        if g.unapplied.contains(&ino) {
            for (_, op) in g.queue.iter_mut() {
                if let DirOp::Create { ino: i, open, .. } = op {
                    if *i == ino {
                        *open = false;
                        return;
                    }
                }
            }
        }
        g.last += 1;
        let n = g.last;
        g.queue.push_back((n, DirOp::Close { ino }));
        drop(g);
        self.queued.notify_one();
    }

    /// Is `ino`'s create still on its way to the MDS?
    pub fn unapplied(&self, ino: InodeId) -> bool {
        self.lock().unapplied.contains(&ino)
    }

    /// The next batch to send, and the number of its last change.
    pub fn take_batch(&self) -> Option<(Vec<DirOp>, u64)> {
        let mut g = self.lock();
        let n = g.queue.len().min(MAX_BATCH);
        if n == 0 {
            return None;
        }
        let batch: Vec<(u64, DirOp)> = g.queue.drain(..n).collect();
        let last = batch.last().map(|(s, _)| *s).unwrap_or(0);
        let ops: Vec<DirOp> = batch.into_iter().map(|(_, op)| op).collect();
        for op in &ops {
            if let DirOp::Create { ino, .. } | DirOp::Mkdir { ino, .. } = op {
                g.in_flight.push(*ino);
            }
        }
        Some((ops, last))
    }

    /// The batch ending with change `last` was answered.
    pub fn answered(&self, last: u64) {
        {
            let mut g = self.lock();
            let sent = std::mem::take(&mut g.in_flight);
            for ino in sent {
                g.unapplied.remove(&ino);
            }
            let (removed, left): (Vec<_>, Vec<_>) = std::mem::take(&mut g.gone).into_iter().partition(|(n, _)| *n <= last);
            g.gone = left;
            for (_, dir) in removed {
                if g.writable.get(&dir).is_some_and(|d| d.gone) {
                    g.writable.remove(&dir);
                }
            }
        }
        self.applied.fetch_max(last, Ordering::AcqRel);
        self.done.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aifs_common::{Layout, OsdId};
    use aifs_common::perm::Cred;

    fn reserved(ino: u64) -> Reserved {
        let cap = aifs_common::cap::Minter::new(&[1; 32], 60_000).grant(InodeId(ino), aifs_common::cap::READ | aifs_common::cap::WRITE, 1, 0);
        Reserved { ino: InodeId(ino), layout: Layout { stripe_size: 1 << 20, stripe_count: 1, replicas: 1, osds: vec![OsdId(1)] }, cap }
    }

    fn create(parent: InodeId, ino: InodeId) -> DirOp {
        let layout = reserved(ino.0).layout;
        DirOp::Create { parent, name: format!("f{ino}"), ino, layout, mode: 0o644, cred: Cred::root(), time_ns: 0, open: true }
    }

    #[test]
    fn changes_are_made_only_under_the_lease_and_sent_in_order() {
        let d = DirOps::default();
        assert!(d.local(InodeId(5), |_| Some(())).is_none());
        d.grant(InodeId(5), vec![]);
        assert!(d.take_refills().is_empty(), "numbers asked for before a create needs one");
        assert!(d.local(InodeId(5), |l| l.take()).is_none());
        assert_eq!(d.take_refills(), vec![InodeId(5)]);
        d.grant(InodeId(5), vec![]);
        assert!(d.local(InodeId(5), |l| l.take()).is_none());
        assert!(d.take_refills().is_empty(), "a second refill while one is out");
        d.refilled(InodeId(5), vec![reserved(100)]);
        d.grant(InodeId(5), vec![reserved(101)]);
        for _ in 0..2 {
            let made = d.local(InodeId(5), |l| {
                let r = l.take()?;
                l.push(create(InodeId(5), r.ino));
                Some(r.ino)
            });
            assert!(made.is_some());
        }
        assert!(d.local(InodeId(5), |l| l.take()).is_none(), "no numbers left");
        assert!(d.unapplied(InodeId(100)));
        // a close before the create is sent needs no Close of its own
        d.close(InodeId(101));
        let (ops, last) = d.take_batch().expect("a batch");
        assert_eq!(last, 2);
        assert!(matches!(&ops[1], DirOp::Create { ino: InodeId(101), open: false, .. }));
        // already sent: the close goes after it
        d.close(InodeId(100));
        assert!(d.unapplied(InodeId(100)));
        // a recall waits for every change queued before it
        assert_eq!(d.revoke(InodeId(5)), Some(3));
        assert!(d.local(InodeId(5), |_| Some(())).is_none());
        assert_eq!(d.revoke(InodeId(5)), None);
        d.answered(last);
        assert!(!d.unapplied(InodeId(100)));
        let (ops, last) = d.take_batch().expect("the close");
        assert_eq!((ops, last), (vec![DirOp::Close { ino: InodeId(100) }], 3));
    }

    /// Numbers this client will not use are given back: those left when
    /// the lease goes or is lost, those of a layout changed, and a refill
    /// that comes after the lease went; never one a create took.
    #[test]
    fn numbers_left_unused_are_given_back() {
        let d = DirOps::default();
        d.grant(InodeId(5), vec![reserved(100), reserved(101), reserved(102)]);
        d.grant(InodeId(6), vec![reserved(200)]);
        let took = d.local(InodeId(5), |l| l.take()).map(|r| r.ino);
        assert_eq!(took, Some(InodeId(100)));
        d.forget_reserved(InodeId(6));
        assert_eq!(d.take_unused(), vec![InodeId(200)]);
        d.refilled(InodeId(6), vec![reserved(201)]);
        assert!(d.revoke(InodeId(5)).is_some());
        assert_eq!(d.take_unused(), vec![InodeId(101), InodeId(102)]);
        d.refilled(InodeId(5), vec![reserved(103)]);
        assert_eq!(d.take_unused(), vec![InodeId(103)], "a refill after the lease went");
        // a directory no create has taken from for a while: its numbers
        // go back, its lease stays
        d.grant(InodeId(7), vec![reserved(300), reserved(301)]);
        d.give_back_idle(Duration::from_secs(60));
        assert!(d.take_unused().is_empty(), "numbers of a directory just granted given back");
        d.give_back_idle(Duration::ZERO);
        let mut back = d.take_unused();
        back.sort_by_key(|i| i.0);
        assert_eq!(back, vec![InodeId(201), InodeId(300), InodeId(301)]);
        assert!(d.local(InodeId(7), |_| Some(())).is_some(), "the lease went with the numbers");
        d.grant(InodeId(6), vec![reserved(202)]);
        d.lost_leases();
        assert_eq!(d.take_unused(), vec![InodeId(202)]);
        assert!(d.take_unused().is_empty());
    }

    fn mkdir(parent: u64, ino: InodeId) -> DirOp {
        DirOp::Mkdir { parent: InodeId(parent), name: format!("d{ino}"), ino, mode: 0o755, cred: Cred::root(), time_ns: 0 }
    }

    /// A directory made here comes with its write lease, and gets inode
    /// numbers only once the MDS knows it; one removed here makes nothing
    /// more, but its lease (and a recall's wait) lasts until the removal
    /// was applied.
    #[test]
    fn directories_made_and_removed_here() {
        let d = DirOps::default();
        d.grant(InodeId(5), vec![reserved(100), reserved(101)]);
        let make = |d: &DirOps| {
            d.local(InodeId(5), |l| {
                let r = l.take()?;
                l.push(mkdir(5, r.ino));
                l.made_dir(r.ino);
                Some(r.ino)
            })
        };
        let (a, b) = (make(&d).expect("made"), make(&d).expect("made"));
        assert!(d.writable(a) && d.local(a, |l| Some(l.holds(b))) == Some(true));
        assert!(d.local(a, |l| l.take()).is_none(), "numbers before any were reserved");
        assert_eq!(d.take_refills(), vec![InodeId(5)], "numbers asked for a directory the MDS does not know yet");
        let (_, last) = d.take_batch().expect("the mkdirs");
        d.answered(last);
        assert_eq!(d.take_refills(), vec![a]);
        for dir in [a, b] {
            d.local(InodeId(5), |l| {
                l.push(DirOp::Rmdir { parent: InodeId(5), name: format!("d{dir}"), ino: dir, time_ns: 0, cred: Cred::root() });
                l.removed_dir(dir);
                Some(())
            });
        }
        assert!(d.local(a, |_| Some(())).is_none(), "a change in a directory removed here");
        assert!(d.writable(a) && d.writable(b), "the lease went before the removal was applied");
        // a recall waits for the removal
        assert_eq!(d.revoke(b), Some(4));
        let (_, last) = d.take_batch().expect("the rmdirs");
        d.answered(last);
        assert!(!d.writable(a), "the lease of a directory removed stays after the removal");
    }

    #[tokio::test]
    async fn a_barrier_waits_for_what_was_queued_before_it() {
        let d = std::sync::Arc::new(DirOps::default());
        d.grant(InodeId(1), vec![reserved(7)]);
        d.local(InodeId(1), |l| {
            let r = l.take()?;
            l.push(create(InodeId(1), r.ino));
            Some(())
        });
        let waiter = {
            let d = d.clone();
            tokio::spawn(async move { d.barrier().await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        let (_, last) = d.take_batch().expect("a batch");
        d.answered(last);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await.expect("barrier passed").expect("task");
        // nothing queued: no wait
        d.barrier().await;
    }
}
