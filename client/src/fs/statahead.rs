//! Statahead. A job that stats many names of a directory this node has
//! nothing of cached (a restarted job finding its rank files, a loader
//! checking a checkpoint's shards) would pay one MDS round trip per name.
//! After a few lookups in one directory miss the cache, the client lists
//! the directory with its attributes (`ReaddirPlus`, a batch at a time) in
//! the background, under the leases that come with the listing, and the
//! lookups after it are answered from the cache (Lustre's statahead does
//! the same for `ls -l` and `stat` scans). A lookup never waits for the
//! listing: until its batch arrives, it asks the MDS as before.
use super::{ClientFs, READDIR_BATCH};
use aifs_common::InodeId;
use dashmap::DashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Lookups that miss in one directory before it is listed.
const MISSES: u32 = 8;
/// A directory is listed at most this often: one that keeps changing
/// under another writer would otherwise be listed over and over.
const EVERY: Duration = Duration::from_secs(5);
/// Directories remembered: past this, those neither being listed nor
/// listed within `EVERY` are forgotten (their misses start again).
const MAX_DIRS: usize = 4096;
/// Most entries listed ahead at once (128 batches), so that the
/// session's lease budget (`max_leases`) is not spent on a directory the
/// job may want a few names of. Lookups that go on missing past them
/// (a scan of a larger directory) list the next window at once, from
/// where the last stopped.
const MAX_ENTRIES: usize = 1 << 16;

#[derive(Default)]
pub(super) struct Statahead(DashMap<InodeId, Scan>);

#[derive(Default)]
struct Scan {
    misses: u32,
    running: bool,
    last: Option<Instant>,
    /// The cookie the last listing stopped at, its window full: the
    /// directory goes on past it.
    resume: Option<u64>,
}

impl Statahead {
    /// A lookup in `dir` missed the cache: the cookie to list `dir` from
    /// when it is time to (the caller then does, and says when it is
    /// `done`): the start, or where the last window stopped.
    fn missed(&self, dir: InodeId) -> Option<u64> {
        if self.0.len() >= MAX_DIRS && !self.0.contains_key(&dir) {
            self.0.retain(|_, s| s.running || s.last.is_some_and(|t| t.elapsed() < EVERY));
        }
        let mut s = self.0.entry(dir).or_default();
        s.misses += 1;
        let rested = s.resume.is_some() || s.last.is_none_or(|t| t.elapsed() >= EVERY);
        if s.misses < MISSES || s.running || !rested {
            return None;
        }
        s.running = true;
        // (cookies 1 and 2 are `.` and `..`)
        Some(s.resume.unwrap_or(2))
    }

    /// The listing of `dir` ended; `resume`: it stopped with its window
    /// full, at that cookie.
    fn done(&self, dir: InodeId, resume: Option<u64>) {
        if let Some(mut s) = self.0.get_mut(&dir) {
            *s = Scan { misses: 0, running: false, last: Some(Instant::now()), resume };
        }
    }
}

impl ClientFs {
    /// A lookup in `dir` missed the cache: list `dir` ahead if lookups
    /// there keep missing.
    pub(super) fn looked_up_uncached(self: &Arc<Self>, dir: InodeId) {
        if !self.cache_on() {
            return;
        }
        let Some(mut cookie) = self.statahead.missed(dir) else { return };
        let fs = self.clone();
        tokio::spawn(async move {
            let mut seen = 0;
            let resume = loop {
                match fs.readdirplus(dir, cookie).await {
                    Ok((batch, _)) => {
                        seen += batch.len();
                        match batch.last() {
                            Some((e, _)) if batch.len() == READDIR_BATCH as usize => {
                                cookie = e.cookie;
                                if seen >= MAX_ENTRIES {
                                    break Some(cookie);
                                }
                            }
                            _ => break None,
                        }
                    }
                    Err(e) => {
                        tracing::debug!(%dir, error = %e, "statahead stopped");
                        break None;
                    }
                }
            };
            fs.statahead.done(dir, resume);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_listed_after_its_misses_once_at_a_time_and_the_record_stays_bounded() {
        let s = Statahead::default();
        let d = InodeId(7);
        for _ in 1..MISSES {
            assert_eq!(s.missed(d), None);
        }
        assert_eq!(s.missed(d), Some(2), "not listed from the start after {MISSES} misses");
        for _ in 0..2 * MISSES {
            assert_eq!(s.missed(d), None, "listed again while a listing is out");
        }
        s.done(d, None);
        for _ in 0..2 * MISSES {
            assert_eq!(s.missed(d), None, "listed again within {EVERY:?}");
        }
        // A listing that stopped with its window full goes on from its
        // last cookie as soon as lookups miss again, then rests.
        let big = InodeId(9);
        for _ in 1..MISSES {
            s.missed(big);
        }
        assert_eq!(s.missed(big), Some(2));
        s.done(big, Some(70_000));
        for _ in 1..MISSES {
            assert_eq!(s.missed(big), None);
        }
        assert_eq!(s.missed(big), Some(70_000), "the next window is not listed from where the last stopped");
        s.done(big, None);
        for _ in 0..2 * MISSES {
            assert_eq!(s.missed(big), None, "listed again within {EVERY:?} after its end");
        }
        // Lookups that miss once each in many directories: forgotten
        // past MAX_DIRS, but not the one being listed.
        let busy = InodeId(8);
        for _ in 0..MISSES {
            s.missed(busy);
        }
        for i in 0..3 * MAX_DIRS as u64 {
            s.missed(InodeId(1_000 + i));
        }
        assert!(s.0.len() <= MAX_DIRS + 1, "{} directories remembered", s.0.len());
        assert!(s.0.get(&busy).is_some_and(|b| b.running));
    }
}
