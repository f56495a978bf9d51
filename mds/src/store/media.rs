//! Where the MDS's databases live: each shard's store (`shard-N.redb`)
//! and the shards' Raft logs (`raft-log.redb`). `Disk` keeps them in
//! files, as every MDS does. `Memory` keeps each as two images, what was written and what
//! was synced, so that a test can cut the power at any write or sync of
//! any of them (`Memory::cut_after`) and start again from what a disk
//! would still hold: the synced images, every write since the last sync
//! lost (`Memory::after_crash`), or with some of those writes on the disk
//! after all, whole or torn at a sector (`Memory::after_torn_crash`), as
//! a disk that writes back in any order leaves them.
//!
//! Snapshot files and the shard-count marker are written beside them in
//! the directory given, always on disk.
use super::IoResult;
use aifs_common::Result;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Makes or opens the database at `path`.
///
/// Contract: a database opened again at the same path sees every
/// transaction committed durably before (synced), and may or may not see
/// those committed without durability since.
pub trait Media: Send + Sync {
    fn database(&self, path: &Path) -> Result<redb::Database>;
}

/// Files on disk.
pub struct Disk;

impl Media for Disk {
    fn database(&self, path: &Path) -> Result<redb::Database> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        redb::Database::create(path).io()
    }
}

/// In memory, with a power switch shared by every database it holds.
#[derive(Default)]
pub struct Memory {
    images: Mutex<HashMap<PathBuf, Arc<Image>>>,
    power: Arc<Power>,
}

/// One database's bytes: as written, and as of its last sync, with the
/// changes made since that sync in the order they were made.
#[derive(Default)]
struct Image {
    live: Mutex<Vec<u8>>,
    synced: Mutex<Vec<u8>>,
    unsynced: Mutex<Vec<Change>>,
}

#[derive(Clone)]
enum Change {
    Write(usize, Vec<u8>),
    SetLen(usize),
}

/// The unit a disk writes whole: a write cut by the power keeps a prefix
/// of its sectors.
const SECTOR: usize = 512;

/// A small deterministic generator (xorshift64*), so that a failing cut
/// comes out the same again.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

impl Image {
    /// The synced bytes with some of the changes since, chosen by `dice`:
    /// each kept whole, lost, or (a write) kept in its first sectors only.
    fn torn(&self, dice: &mut Dice) -> Vec<u8> {
        let mut bytes = self.synced.lock().map(|s| s.clone()).unwrap_or_default();
        let changes = self.unsynced.lock().map(|c| c.clone()).unwrap_or_default();
        for c in changes {
            match (c, dice.next() % 3) {
                (_, 0) => {}
                (Change::SetLen(len), _) => bytes.resize(len, 0),
                (Change::Write(at, data), how) => {
                    let keep = match how {
                        1 => data.len(),
                        _ => (dice.next() as usize % data.len().div_ceil(SECTOR).max(1)) * SECTOR,
                    };
                    let data = &data[..keep.min(data.len())];
                    if bytes.len() < at + data.len() {
                        bytes.resize(at + data.len(), 0);
                    }
                    bytes[at..at + data.len()].copy_from_slice(data);
                }
            }
        }
        bytes
    }
}

/// Counts writes and syncs, and fails every one from the cut on.
#[derive(Default)]
struct Power {
    /// Writes and syncs done so far, across every database.
    events: AtomicU64,
    /// The event that finds the power off (0: never).
    cut_at: AtomicU64,
    off: AtomicBool,
}

impl Power {
    /// One more write or sync: false (and the power off from now on) if
    /// it is the one the cut falls on, or after.
    fn event(&self) -> bool {
        if self.off.load(Ordering::Acquire) {
            return false;
        }
        let n = self.events.fetch_add(1, Ordering::AcqRel) + 1;
        let cut = self.cut_at.load(Ordering::Acquire);
        if cut != 0 && n >= cut {
            self.off.store(true, Ordering::Release);
            return false;
        }
        true
    }
}

impl Memory {
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes and syncs done so far, across every database.
    pub fn events(&self) -> u64 {
        self.power.events.load(Ordering::Acquire)
    }

    /// The power goes off at the `n`th write or sync from now (1: the
    /// next): it and every one after fail.
    pub fn cut_after(&self, n: u64) {
        self.power.cut_at.store(self.events() + n.max(1), Ordering::Release);
    }

    /// Whether the power went off.
    pub fn is_off(&self) -> bool {
        self.power.off.load(Ordering::Acquire)
    }

    /// What a disk holds after the crash: each database as of its last
    /// sync, with the power on.
    pub fn after_crash(&self) -> Memory {
        self.after(|img| img.synced.lock().map(|s| s.clone()).unwrap_or_default())
    }

    /// What a disk that writes back in any order may hold after the crash:
    /// each database as of its last sync, with some of the writes since
    /// on it too, whole or in their first sectors, as `seed` picks.
    pub fn after_torn_crash(&self, seed: u64) -> Memory {
        let mut dice = Dice(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        self.after(|img| img.torn(&mut dice))
    }

    fn after(&self, mut bytes: impl FnMut(&Image) -> Vec<u8>) -> Memory {
        let mut images: Vec<(PathBuf, Arc<Image>)> = self.images.lock().map(|m| m.clone()).unwrap_or_default().into_iter().collect();
        // The same seed tears the same databases the same way.
        images.sort_by(|a, b| a.0.cmp(&b.0));
        let disk = images
            .into_iter()
            .map(|(path, img)| {
                let b = bytes(&img);
                (path, Arc::new(Image { live: Mutex::new(b.clone()), synced: Mutex::new(b), unsynced: Mutex::default() }))
            })
            .collect();
        Memory { images: Mutex::new(disk), power: Arc::default() }
    }
}

impl Media for Memory {
    fn database(&self, path: &Path) -> Result<redb::Database> {
        let image = {
            let mut m = self.images.lock().map_err(|_| aifs_common::Error::Io("memory media poisoned".into()))?;
            m.entry(path.to_path_buf()).or_default().clone()
        };
        redb::Builder::new().create_with_backend(Backend { image, power: self.power.clone() }).io()
    }
}

struct Backend {
    image: Arc<Image>,
    power: Arc<Power>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("memory media")
    }
}

fn off() -> std::io::Error {
    std::io::Error::other("the power is off")
}

fn range() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, "past the end of the image")
}

fn lock<T>(m: &Mutex<T>) -> std::io::Result<std::sync::MutexGuard<'_, T>> {
    m.lock().map_err(|_| std::io::Error::other("image poisoned"))
}

impl redb::StorageBackend for Backend {
    fn len(&self) -> std::io::Result<u64> {
        Ok(lock(&self.image.live)?.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        let live = lock(&self.image.live)?;
        let start = usize::try_from(offset).map_err(|_| range())?;
        let src = live.get(start..start + out.len()).ok_or_else(range)?;
        out.copy_from_slice(src);
        Ok(())
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        if !self.power.event() {
            return Err(off());
        }
        let len = usize::try_from(len).map_err(|_| range())?;
        lock(&self.image.live)?.resize(len, 0);
        lock(&self.image.unsynced)?.push(Change::SetLen(len));
        Ok(())
    }

    fn sync_data(&self) -> std::io::Result<()> {
        if !self.power.event() {
            return Err(off());
        }
        let live = lock(&self.image.live)?.clone();
        *lock(&self.image.synced)? = live;
        lock(&self.image.unsynced)?.clear();
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        if !self.power.event() {
            return Err(off());
        }
        let mut live = lock(&self.image.live)?;
        let start = usize::try_from(offset).map_err(|_| range())?;
        live.get_mut(start..start + data.len()).ok_or_else(range)?.copy_from_slice(data);
        lock(&self.image.unsynced)?.push(Change::Write(start, data.to_vec()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{ReadableDatabase, TableDefinition};

    const T: TableDefinition<u64, u64> = TableDefinition::new("t");

    fn put(db: &redb::Database, k: u64, durable: bool) -> std::result::Result<(), redb::Error> {
        let mut w = db.begin_write()?;
        if !durable {
            w.set_durability(redb::Durability::None)?;
        }
        w.open_table(T)?.insert(k, k)?;
        w.commit()?;
        Ok(())
    }

    fn keys(db: &redb::Database) -> Vec<u64> {
        let r = db.begin_read().unwrap();
        let Ok(t) = r.open_table(T) else { return Vec::new() };
        redb::ReadableTable::iter(&t).unwrap().map(|e| e.unwrap().0.value()).collect()
    }

    #[test]
    fn a_crash_keeps_what_was_synced_and_nothing_after() {
        let m = Memory::new();
        let p = Path::new("/nowhere/db.redb");
        let db = m.database(p).unwrap();
        put(&db, 1, true).unwrap();
        put(&db, 2, false).unwrap();
        m.cut_after(1);
        assert!(put(&db, 3, true).is_err(), "a commit with the power off succeeded");
        assert!(m.is_off());
        drop(db);
        let after = m.after_crash();
        let db = after.database(p).unwrap();
        assert_eq!(keys(&db), vec![1], "the crash kept more, or less, than was synced");
        put(&db, 4, true).unwrap();
        assert_eq!(keys(&db), vec![1, 4]);
    }

    /// Whatever part of an unsynced commit reaches the disk, the database
    /// opens with every synced commit and none that was cut.
    #[test]
    fn a_torn_crash_keeps_what_was_synced_and_opens() {
        let p = Path::new("/nowhere/db.redb");
        let mut differed = 0;
        for seed in 0..64 {
            let m = Memory::new();
            let db = m.database(p).unwrap();
            put(&db, 1, true).unwrap();
            put(&db, 2, false).unwrap();
            m.cut_after(3);
            let _ = put(&db, 3, true);
            drop(db);
            let clean = m.after_crash();
            let torn = m.after_torn_crash(seed);
            let image = |m: &Memory| m.images.lock().unwrap().get(p).map(|i| i.live.lock().unwrap().clone());
            differed += usize::from(image(&clean) != image(&torn));
            let db = torn.database(p).unwrap_or_else(|e| panic!("seed {seed}: a torn image does not open: {e}"));
            let k = keys(&db);
            assert!(k == vec![1] || k == vec![1, 2], "seed {seed}: the torn image holds {k:?}");
        }
        assert!(differed > 0, "no seed kept any unsynced write");
    }
}
