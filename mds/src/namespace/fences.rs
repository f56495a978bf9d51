//! Fences: what keeps a change's checks true until it commits.
//!
//! A change confined to one shard checks and writes in one transaction of
//! that shard's writer, so it needs nothing more than the shard's fence
//! held shared, to stay out of the way of a change over several shards.
//! Such a change (mkdir, rmdir, rename, link, an unlink whose inode lives
//! elsewhere) reads first and commits after, one shard at a time: it holds
//! the fence of every shard it reads or writes exclusively, taken in shard
//! order so that two of them never wait on each other. Changes over
//! different shards go on side by side; one shard's fence is the unit a
//! change led from another process will take (DESIGN.md, "Metadata").
//!
//! Which shards a change touches may depend on the entries it looks up
//! (the inode a name leads to), which can change until the fences are
//! held: [`Fences::over_found`] looks again under them and starts over
//! when the answer moved.
//!
//! A directory moved to another parent must not land below itself, which
//! is checked by walking up from the new parent through shards no fence
//! covers; only such a move changes a directory's parent, so such moves
//! are taken one at a time ([`Fences::moves`], before any fence). When
//! other processes lead some shards, such a move also holds shard 0's
//! fence, wherever it is led, so that moves coordinated from different
//! processes are taken one at a time too.
//!
//! A shard led by another process is fenced there, by a prepare
//! (twophase.rs), in the same order as the fences held here. A prepare
//! first takes back the write leases granted there on the directories
//! the change names, and a client gives one back only once its queued
//! changes are applied, some of which may be for a shard fenced here: so
//! a prepare that waits too long for them answers `WouldBlock`, and the
//! change lets every fence go, pauses while the client's queue drains,
//! and takes them all again ([`Fences::take`]).
use super::shard_of;
use super::twophase::{OpId, Prepared, Remote, ShardMsg};
use aifs_common::{Error, Result};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, MutexGuard, OwnedRwLockWriteGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// How long a change whose prepares keep finding write leases on their
/// way back takes its fences again before it fails.
const BUSY_FOR: Duration = Duration::from_secs(20);
/// The first pause between two tries; each doubles it, up to
/// [`BUSY_PAUSE_MAX`].
const BUSY_PAUSE: Duration = Duration::from_millis(20);
const BUSY_PAUSE_MAX: Duration = Duration::from_secs(1);

pub(crate) struct Fences {
    shards: Vec<Arc<RwLock<()>>>,
    moves: Mutex<()>,
    /// The shards other processes lead, and the way to them.
    remote: Option<Arc<Remote>>,
}

/// Fences held exclusively, released on drop; with the shards prepared
/// at other processes, if any.
pub(crate) struct Held<'a> {
    _moves: Option<MutexGuard<'a, ()>>,
    _fences: Vec<RwLockWriteGuard<'a, ()>>,
    pub(crate) prepared: Option<Prepared>,
}

impl Fences {
    pub(crate) fn new(nshards: usize, remote: Option<Arc<Remote>>) -> Self {
        Fences { shards: (0..nshards.max(1)).map(|_| Arc::new(RwLock::new(()))).collect(), moves: Mutex::new(()), remote }
    }

    /// The fence of the shard `ino` lives on (shard 0's for a number that
    /// names no shard here: such an inode is found nowhere anyway).
    fn of(&self, shard: u32) -> &Arc<RwLock<()>> {
        self.shards.get(shard as usize).unwrap_or(&self.shards[0])
    }

    /// Shard `shard`'s fence, held exclusively for an operation
    /// coordinated elsewhere (twophase.rs).
    pub(crate) async fn owned(&self, shard: u32) -> OwnedRwLockWriteGuard<()> {
        self.of(shard).clone().write_owned().await
    }

    /// For a change confined to `ino`'s shard.
    pub(crate) async fn shared(&self, ino: u64) -> RwLockReadGuard<'_, ()> {
        self.of(shard_of(ino)).read().await
    }

    /// For a change confined to shard `shard`.
    pub(crate) async fn shared_on(&self, shard: u32) -> RwLockReadGuard<'_, ()> {
        self.of(shard).read().await
    }

    /// For a change over the shards of `inos`, all known beforehand,
    /// whose home is the directory `home` (twophase.rs).
    pub(crate) async fn over(&self, home: u64, inos: &[u64]) -> Result<Held<'_>> {
        self.take(false, shard_of(home), shards(inos), inos).await
    }

    /// For a change over `shards`, all known beforehand.
    pub(crate) async fn over_shards(&self, home: u64, shards: &[u32]) -> Result<Held<'_>> {
        self.take(false, shard_of(home), in_order(shards.to_vec()), &[]).await
    }

    /// For a change over shards found by `find`, which names the inodes
    /// it will touch: taken, then `find` asked again under them until it
    /// names no other shard. `moves`: the change may move a directory to
    /// another parent.
    pub(crate) async fn over_found<F, Fut>(&self, moves: bool, home: u64, find: F) -> Result<Held<'_>>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Vec<u64>>>,
    {
        let mut inos = find().await?;
        loop {
            let held = self.take(moves, shard_of(home), shards(&inos), &inos).await?;
            let now = find().await?;
            if shards(&now).iter().all(|s| shards(&inos).contains(s)) {
                return Ok(held);
            }
            drop(held);
            inos = now;
        }
    }

    /// `shards` sorted, each once: the ones led here fenced here, the
    /// others prepared at their leaders, in that one order, each told
    /// which of `inos` (what the change names) live there. A prepare
    /// whose directories' write leases are still on their way back
    /// (`WouldBlock`) may wait on a client whose queued changes wait on a
    /// fence held here: every fence is let go (the prepared shards
    /// aborted), and taken again after a pause, for up to [`BUSY_FOR`].
    async fn take(&self, moves: bool, home: u32, shards: Vec<u32>, inos: &[u64]) -> Result<Held<'_>> {
        let until = Instant::now() + BUSY_FOR;
        let mut pause = BUSY_PAUSE;
        loop {
            match self.take_once(moves, home, shards.clone(), inos).await {
                Err(Error::WouldBlock(why)) if Instant::now() + pause < until => {
                    tracing::debug!(%why, ?pause, "a prepare waits for write leases; fences let go until they are back");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(BUSY_PAUSE_MAX);
                }
                Err(Error::WouldBlock(why)) => return Err(Error::Unavailable(why)),
                r => return r,
            }
        }
    }

    /// One try of [`Fences::take`].
    async fn take_once(&self, moves: bool, home: u32, mut shards: Vec<u32>, inos: &[u64]) -> Result<Held<'_>> {
        let remote = self.remote.as_ref().filter(|r| shards.iter().any(|s| r.elsewhere(*s)) || (moves && r.elsewhere(0)));
        if let Some(r) = remote {
            if r.elsewhere(home) {
                return Err(Error::NotLeader(String::new()));
            }
            if moves {
                shards = in_order([shards, vec![0]].concat());
            }
        }
        let moves = match moves {
            true => Some(self.moves.lock().await),
            false => None,
        };
        let mut held = Held { _moves: moves, _fences: Vec::new(), prepared: None };
        for s in shards {
            match remote.filter(|r| r.elsewhere(s)) {
                Some(r) => {
                    let p = held.prepared.get_or_insert_with(|| Prepared { op: OpId::new(home), open: Vec::new(), decided: false, remote: r.clone() });
                    // (listed first: a prepare whose answer was lost is
                    // aborted all the same)
                    p.open.push(s);
                    let inos = inos.iter().copied().filter(|i| shard_of(*i) == s).collect();
                    r.ask(ShardMsg::Prepare { shard: s, op: p.op, inos }).await?;
                }
                None => held._fences.push(self.of(s).write().await),
            }
        }
        Ok(held)
    }
}

/// The shards of `inos`, each once, in order (the order fences are taken
/// in; a number that names no shard here counts as shard 0, as `of` does).
fn shards(inos: &[u64]) -> Vec<u32> {
    in_order(inos.iter().map(|i| shard_of(*i)).collect())
}

/// `v` sorted, each once: the order fences are taken in.
fn in_order(mut v: Vec<u32>) -> Vec<u32> {
    v.sort_unstable();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use aifs_common::InodeId;
    use std::sync::Arc;
    use std::time::Duration;

    fn ino(shard: u32) -> u64 {
        InodeId::new(shard, 7).0
    }

    #[tokio::test]
    async fn a_change_over_two_shards_waits_only_for_changes_on_those_shards() {
        let f = Arc::new(Fences::new(4, None));
        let held = f.over(ino(1), &[ino(1), ino(2)]).await.unwrap();
        // Shards 0 and 3 go on.
        let _a = tokio::time::timeout(Duration::from_secs(5), f.shared(ino(0))).await.expect("shard 0 is free");
        let _b = tokio::time::timeout(Duration::from_secs(5), f.over(ino(0), &[ino(3), ino(0)])).await;
        assert!(_b.is_err(), "shard 0 is held shared above");
        drop(_a);
        let _b = tokio::time::timeout(Duration::from_secs(5), f.over(ino(0), &[ino(3), ino(0)])).await.expect("shards 0 and 3 are free").unwrap();
        // Shard 2 waits until the change lets go.
        assert!(tokio::time::timeout(Duration::from_millis(100), f.shared(ino(2))).await.is_err());
        drop(held);
        let _c = tokio::time::timeout(Duration::from_secs(5), f.shared(ino(2))).await.expect("shard 2 is free again");
    }

    #[tokio::test]
    async fn fences_are_taken_again_when_the_change_found_another_shard() {
        let f = Fences::new(4, None);
        let calls = std::sync::atomic::AtomicU32::new(0);
        // The first look says shard 1; the name then leads to shard 3.
        let held = f
            .over_found(false, ino(0), || {
                let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move { Ok(vec![ino(0), ino(if n == 0 { 1 } else { 3 })]) }
            })
            .await
            .unwrap();
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
        assert!(tokio::time::timeout(Duration::from_millis(100), f.shared(ino(3))).await.is_err(), "shard 3 is held");
        drop(held);
    }
}
