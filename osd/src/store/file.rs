//! `FileStore`: objects as files under `<root>/objects/<xx>/<ino>.<index>`,
//! with a sidecar `<...>.crc` holding one little-endian u32 per 64 KiB block.
//!
//! Each crc is stored XOR the crc of a zero block (the store's `key`), so
//! an entry a zero block has is 0, which is what a hole in the sidecar
//! reads as: a hole in an object needs no crcs written, and a 1-byte write
//! 16 TiB into an object writes one entry, not 1 GiB of them. A store made
//! before this (no `crc-format` file beside `objects`) keeps its crcs as
//! they are (key 0) and writes every entry, as then.
//!
//! An open object's files, its direct I/O and its crc entries are in
//! handles.rs.
//!
//! Concurrency: every operation on an object holds that object's lock from a
//! fixed table of striped `RwLock`s (writers exclusive, readers shared), so a
//! reader never sees data newer than its crc. Open file handles are cached
//! (moka); a cached handle holds no state of its own, so an evicted and
//! reopened handle can never disagree with another.
use super::handles::{blocks_for, fallocate, zero_block_crc, Handles};
use super::{ObjectStore, ReadOut, Usage};
use aifs_common::proto::osd::{AllocMode, CRC_BLOCK};
use aifs_common::{Error, InodeId, ObjectId, Result};
use bytes::{Bytes, BytesMut};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

/// Lock stripes: enough that unrelated objects rarely share one.
const LOCK_STRIPES: usize = 1024;
/// Open objects kept in the handle cache (two descriptors each).
const OPEN_CACHE: u64 = 4096;
/// Largest object: 16 TiB. Bounds the crc table (1 GiB at most) that an
/// extending write or a wild offset from the network can make the OSD write.
pub const MAX_OBJECT_SIZE: u64 = 16 << 40;
/// Reads at least this large bypass the page cache (`O_DIRECT`): the disk
/// writes straight into the reply's buffer, with no copy out of the page
/// cache and no page cache to fill; a checkpoint is read once, at restart.
const DIRECT_READ_MIN: u64 = 128 * 1024;

/// Largest read answered in one reply (it travels as one payload).
pub const MAX_READ: u64 = aifs_common::proto::MAX_PAYLOAD - 2 * CRC_BLOCK;

pub struct FileStore {
    root: PathBuf,
    locks: Vec<RwLock<()>>,
    open: moka::sync::Cache<ObjectId, Arc<Handles>>,
    objects: AtomicU64,
    /// XORed into every stored crc (see above).
    key: u32,
    /// Directories that lost names in a delete whose sync failed: the next
    /// delete syncs them, since the names it finds gone may be gone only
    /// in memory.
    unsynced: std::sync::Mutex<std::collections::BTreeSet<PathBuf>>,
}

/// Marks a store whose crcs are keyed (see above).
const CRC_FORMAT_FILE: &str = "crc-format";

/// Where data starts again at or after `off` in `f` (`SEEK_DATA`): `size`
/// when only a hole is left, `off` where the file system cannot tell.
fn next_data(f: &File, off: u64, size: u64) -> Result<u64> {
    use std::os::fd::AsRawFd;
    let Ok(at) = libc::off_t::try_from(off) else { return Ok(off) };
    // SAFETY: lseek on a descriptor this `File` owns; it only moves the
    // offset, which no read here uses (all are positioned).
    let r = unsafe { libc::lseek(f.as_raw_fd(), at, libc::SEEK_DATA) };
    if r >= 0 {
        return Ok((r as u64).min(size));
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::ENXIO) => Ok(size),
        _ => Ok(off),
    }
}

/// An errno from `fallocate` as the error a client should see: a file
/// system that cannot do it says so (EOPNOTSUPP), not "I/O error".
fn fallocate_error(e: std::io::Error) -> Error {
    match e.raw_os_error() {
        Some(libc::EOPNOTSUPP) => Error::NotSupported("the OSD's file system cannot fallocate this way".into()),
        Some(libc::ENOSPC) => Error::NoSpace("OSD disk full".into()),
        Some(libc::EFBIG) => Error::FileTooBig,
        _ => e.into(),
    }
}

/// `<16 hex digits of ino>.<index>`: an object's data file name.
fn parse_object_name(name: &str) -> Option<ObjectId> {
    let (ino, index) = name.split_once('.')?;
    if ino.len() != 16 {
        return None;
    }
    Some(ObjectId { ino: InodeId(u64::from_str_radix(ino, 16).ok()?), index: index.parse().ok()? })
}

impl FileStore {
    pub fn open(root: &Path) -> Result<FileStore> {
        let objdir = root.join("objects");
        let format = root.join(CRC_FORMAT_FILE);
        if !objdir.exists() {
            // A new store: keyed crcs, said durably before any object.
            std::fs::create_dir_all(root)?;
            std::fs::write(&format, "keyed by the zero block's crc\n")?;
            File::open(&format)?.sync_all()?;
            File::open(root)?.sync_all()?;
        }
        let key = if format.exists() { zero_block_crc() } else { 0 };
        std::fs::create_dir_all(&objdir)?;
        // All 256 fan-out directories exist from the start and their names
        // are durable, so a commit only ever has to sync the leaf directory.
        let mut made = false;
        for i in 0..=255u8 {
            let d = objdir.join(format!("{i:02x}"));
            if !d.exists() {
                std::fs::create_dir(&d)?;
                made = true;
            }
        }
        if made {
            File::open(&objdir)?.sync_all()?;
            File::open(root)?.sync_all()?;
        }
        let mut count = 0u64;
        for d in std::fs::read_dir(&objdir)? {
            let d = d?;
            if d.file_type()?.is_dir() {
                for f in std::fs::read_dir(d.path())? {
                    let f = f?;
                    if f.path().extension().is_some_and(|e| e != "crc") {
                        count += 1;
                    }
                }
            }
        }
        Ok(FileStore {
            root: root.to_path_buf(),
            locks: (0..LOCK_STRIPES).map(|_| RwLock::new(())).collect(),
            open: moka::sync::Cache::new(OPEN_CACHE),
            objects: AtomicU64::new(count),
            key,
            unsynced: Default::default(),
        })
    }

    /// Remove each object's files; the directory of every name removed
    /// goes into `dirs`, for the caller to sync, even when a later one
    /// fails.
    fn remove_objects(&self, objs: &[ObjectId], dirs: &mut std::collections::BTreeSet<PathBuf>) -> Result<()> {
        let gone = |p: &Path| match std::fs::remove_file(p) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        };
        for &obj in objs {
            let _g = self.lock(obj).write().map_err(|_| Error::Io("lock poisoned".into()))?;
            self.forget_handles(obj);
            let (dir, data, crc) = self.paths(obj);
            let had_data = gone(&data)?;
            if had_data {
                self.objects.fetch_sub(1, Ordering::Relaxed);
                dirs.insert(dir.clone());
            }
            if gone(&crc)? {
                dirs.insert(dir);
            }
        }
        Ok(())
    }

    fn lock(&self, obj: ObjectId) -> &RwLock<()> {
        let h = obj.ino.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (obj.index as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
        &self.locks[(h >> 32) as usize % LOCK_STRIPES]
    }

    fn paths(&self, obj: ObjectId) -> (PathBuf, PathBuf, PathBuf) {
        let dir = self.root.join("objects").join(format!("{:02x}", obj.ino.0 & 0xff));
        let data = dir.join(format!("{obj}"));
        let crc = dir.join(format!("{obj}.crc"));
        (dir, data, crc)
    }

    /// Drop the cached handles of `obj` now. moka keeps an invalidated
    /// entry until its next housekeeping, and the open descriptors kept a
    /// deleted object's blocks allocated until then: the file system freed
    /// them in the middle of the next checkpoint's writes, which ran at
    /// 0.6-0.7 of the speed of the one after.
    fn forget_handles(&self, obj: ObjectId) {
        self.open.invalidate(&obj);
        self.open.run_pending_tasks();
    }

    /// Cached handles; `create` makes the files when missing.
    fn handles(&self, obj: ObjectId, create: bool) -> Result<Option<Arc<Handles>>> {
        if let Some(h) = self.open.get(&obj) {
            // A file removed behind the OSD's back (by an operator, or a
            // disk being replaced) must not live on in the cache: writes to
            // it would land in a file nobody can find again.
            use std::os::unix::fs::MetadataExt;
            if h.data.metadata()?.nlink() > 0 {
                return Ok(Some(h));
            }
            drop(h);
            self.forget_handles(obj);
        }
        let (dir, data_path, crc_path) = self.paths(obj);
        let existed = data_path.exists();
        if !existed && !create {
            return Ok(None);
        }
        if !existed {
            std::fs::create_dir_all(&dir)?;
        }
        let opts = || {
            let mut o = OpenOptions::new();
            o.read(true).write(true).create(create);
            o
        };
        let data = match opts().open(&data_path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let crc = opts().open(&crc_path)?;
        if !existed {
            self.objects.fetch_add(1, Ordering::Relaxed);
        }
        let h = Arc::new(Handles { data, crc, direct: OnceLock::new(), path: data_path, key: self.key });
        self.open.insert(obj, h.clone());
        Ok(Some(h))
    }

    /// `read`, under the object's lock.
    fn read_locked(&self, obj: ObjectId, off: u64, len: u64) -> Result<ReadOut> {
        if len > MAX_READ {
            return Err(Error::InvalidArgument(format!("read of {len} bytes exceeds {MAX_READ}")));
        }
        // Answers start on a block boundary, also when there is nothing.
        let start = (off / CRC_BLOCK) * CRC_BLOCK;
        let Some(h) = self.handles(obj, false)? else {
            return Ok(ReadOut { off: start, data: Bytes::new(), crcs: Vec::new(), obj_size: 0 });
        };
        let size = h.data.metadata()?.len();
        let want_end = off.saturating_add(len).min(size);
        if start >= want_end {
            return Ok(ReadOut { off: start, data: Bytes::new(), crcs: Vec::new(), obj_size: size });
        }
        let end = (want_end.div_ceil(CRC_BLOCK) * CRC_BLOCK).min(size);
        let len = (end - start) as usize;
        let direct = match end - start >= DIRECT_READ_MIN {
            true => h.read_direct(start, len)?,
            false => None,
        };
        let data = match direct {
            Some(d) => d,
            None => {
                let mut buf = BytesMut::zeroed(len);
                h.data.read_exact_at(&mut buf, start)?;
                buf.freeze()
            }
        };
        let b0 = start / CRC_BLOCK;
        let crcs = h.read_crcs(b0, blocks_for(end) - b0)?;
        Ok(ReadOut { off: start, data, crcs, obj_size: size })
    }
}

impl ObjectStore for FileStore {
    fn write(&self, obj: ObjectId, off: u64, data: &[u8], crcs: &[u32]) -> Result<()> {
        let expect = aifs_common::proto::osd::block_crcs(off, data);
        if expect != crcs {
            return Err(Error::Checksum(format!("object {obj}: write at {off} arrived corrupted")));
        }
        if data.is_empty() {
            return Ok(());
        }
        let end = off.checked_add(data.len() as u64).ok_or(Error::FileTooBig)?;
        if end > MAX_OBJECT_SIZE {
            return Err(Error::FileTooBig);
        }
        let _g = self.lock(obj).write().map_err(|_| Error::Io("lock poisoned".into()))?;
        let h = self.handles(obj, true)?.ok_or(Error::NotFound)?;
        let old = h.data.metadata()?.len();
        h.write_at(data, off)?;
        let size = old.max(end);
        let first = off.min(old) / CRC_BLOCK;
        let last = blocks_for(size).min(blocks_for(end).max(first + 1));
        let gap = if off > old { (old, off) } else { (0, 0) };
        // Map the client's per-piece crcs onto whole blocks it rewrote.
        let first_write_block = off / CRC_BLOCK;
        h.refresh_crcs(first, last, size, gap, |b, start, bend| {
            if start >= off && bend <= end && b >= first_write_block {
                let idx = (b - first_write_block) as usize;
                // A piece equals the block only if it starts at the block
                // start and spans to the block's (clipped) end.
                let piece_end = ((b + 1) * CRC_BLOCK).min(end);
                if piece_end == bend {
                    return crcs.get(idx).copied();
                }
            }
            None
        })
    }

    fn read(&self, obj: ObjectId, off: u64, len: u64) -> Result<ReadOut> {
        let _g = self.lock(obj).read().map_err(|_| Error::Io("lock poisoned".into()))?;
        self.read_locked(obj, off, len)
    }

    fn read_now(&self, obj: ObjectId, off: u64, len: u64) -> Option<Result<ReadOut>> {
        match self.lock(obj).try_read() {
            Ok(_g) => Some(self.read_locked(obj, off, len)),
            Err(std::sync::TryLockError::WouldBlock) => None,
            Err(std::sync::TryLockError::Poisoned(_)) => Some(Err(Error::Io("lock poisoned".into()))),
        }
    }

    fn truncate(&self, obj: ObjectId, size: u64) -> Result<()> {
        let _g = self.lock(obj).write().map_err(|_| Error::Io("lock poisoned".into()))?;
        // Only ever cut: bytes past an object's end read as zeros anyway,
        // and a truncate must never bring back an object a delete removed.
        let Some(h) = self.handles(obj, false)? else {
            return Ok(());
        };
        let old = h.data.metadata()?.len();
        if size >= old {
            return Ok(());
        }
        h.data.set_len(size)?;
        h.crc.set_len(blocks_for(size) * 4)?;
        if size % CRC_BLOCK != 0 {
            let b = size / CRC_BLOCK;
            h.refresh_crcs(b, b + 1, size, (0, 0), |_, _, _| None)?;
        }
        // The MDS forgets its GC job once this answers: make the cut stick.
        h.data.sync_data()?;
        h.crc.sync_data()?;
        Ok(())
    }

    fn delete(&self, objs: &[ObjectId]) -> Result<()> {
        let mut dirs = std::mem::take(&mut *self.unsynced.lock().map_err(|_| Error::Io("lock poisoned".into()))?);
        let removed = self.remove_objects(objs, &mut dirs);
        // The MDS forgets its GC jobs once this answers: make it stick,
        // one sync per directory that lost a name, however many. (Objects
        // never written, most of a burst of unlinked empty files, cost no
        // sync.) What is not synced is tried again by the next delete.
        let mut left = dirs.clone();
        let synced = dirs.iter().try_for_each(|d| {
            File::open(d)?.sync_all()?;
            left.remove(d);
            Ok::<(), std::io::Error>(())
        });
        if !left.is_empty() {
            if let Ok(mut u) = self.unsynced.lock() {
                u.extend(left);
            }
        }
        removed?;
        Ok(synced?)
    }

    fn stat(&self, obj: ObjectId) -> Result<Option<u64>> {
        let _g = self.lock(obj).read().map_err(|_| Error::Io("lock poisoned".into()))?;
        Ok(match self.handles(obj, false)? {
            Some(h) => Some(h.data.metadata()?.len()),
            None => None,
        })
    }

    fn commit(&self, objs: &[ObjectId]) -> Result<()> {
        let mut dirs = std::collections::BTreeSet::new();
        for &obj in objs {
            let _g = self.lock(obj).read().map_err(|_| Error::Io("lock poisoned".into()))?;
            if let Some(h) = self.handles(obj, false)? {
                h.data.sync_data()?;
                h.crc.sync_data()?;
                dirs.insert(self.paths(obj).0);
            }
        }
        // Make newly created object files' names durable too.
        for d in dirs {
            File::open(&d)?.sync_all()?;
        }
        Ok(())
    }

    fn list(&self, after: Option<ObjectId>, max: usize) -> Result<Vec<(ObjectId, u64)>> {
        // One walk of the fan-out directories per page: fsck pages through
        // every object once, so this costs O(objects x pages).
        let mut found = Vec::new();
        for d in std::fs::read_dir(self.root.join("objects"))? {
            let d = d?;
            if !d.file_type()?.is_dir() {
                continue;
            }
            for f in std::fs::read_dir(d.path())? {
                let f = f?;
                let Some(obj) = f.file_name().to_str().and_then(parse_object_name) else { continue };
                if after.is_some_and(|a| obj <= a) {
                    continue;
                }
                found.push((obj, f.metadata()?.len()));
            }
        }
        found.sort_unstable();
        found.truncate(max);
        Ok(found)
    }

    fn verify(&self, obj: ObjectId) -> Result<Option<(u64, u64)>> {
        let Some(h) = self.handles(obj, false)? else { return Ok(None) };
        let mut bad = 0;
        let mut off = 0;
        let step = 64 * CRC_BLOCK;
        // The lock is taken a step at a time: a check of a large object
        // must not hold up its (and its lock stripe's) writes and reads.
        loop {
            let _g = self.lock(obj).read().map_err(|_| Error::Io("lock poisoned".into()))?;
            let size = h.data.metadata()?.len();
            if off >= size {
                return Ok(Some((size, bad)));
            }
            // A hole's whole blocks are zeros: only their crcs are read.
            let hole_end = next_data(&h.data, off, size)? / CRC_BLOCK * CRC_BLOCK;
            if hole_end > off {
                let n = step.min(hole_end - off);
                let stored = h.read_crcs(off / CRC_BLOCK, n / CRC_BLOCK)?;
                bad += stored.iter().filter(|c| **c != zero_block_crc()).count() as u64;
                off += n;
                continue;
            }
            let n = step.min(size - off);
            let mut buf = vec![0u8; n as usize];
            h.data.read_exact_at(&mut buf, off)?;
            let stored = h.read_crcs(off / CRC_BLOCK, blocks_for(n))?;
            let got = aifs_common::proto::osd::block_crcs(off, &buf);
            bad += got.iter().zip(&stored).filter(|(a, b)| a != b).count() as u64;
            off += n;
        }
    }

    fn allocate(&self, obj: ObjectId, off: u64, len: u64, mode: AllocMode) -> Result<()> {
        let end = off.checked_add(len).filter(|e| *e <= MAX_OBJECT_SIZE).ok_or(Error::FileTooBig)?;
        if len == 0 {
            return Err(Error::InvalidArgument("fallocate of no bytes".into()));
        }
        if mode != AllocMode::Punch {
            // More than the disk has fails before it takes anything: a
            // file system may keep what it allocated before running out.
            let u = self.usage()?;
            let free = u.capacity.saturating_sub(u.used);
            if len > free {
                return Err(Error::NoSpace(format!("{len} bytes asked, {free} free")));
            }
        }
        let _g = self.lock(obj).write().map_err(|_| Error::Io("lock poisoned".into()))?;
        // A hole punched in a missing object is there already.
        let Some(h) = self.handles(obj, mode != AllocMode::Punch)? else { return Ok(()) };
        let size = h.data.metadata()?.len();
        // Bytes inside the object become zeros; past its end they read as
        // zeros already, and only space is reserved there.
        let cut_end = end.min(size);
        if mode != AllocMode::Reserve && off < cut_end {
            let zeroed = match mode {
                AllocMode::Zero => fallocate(&h.data, libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE, off, cut_end - off),
                _ => Err(std::io::Error::from_raw_os_error(libc::EOPNOTSUPP)),
            };
            if zeroed.is_err() {
                // Punch (and, for a zero range, reserve again below).
                fallocate(&h.data, libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, off, cut_end - off).map_err(fallocate_error)?;
            }
            h.refresh_crcs(off / CRC_BLOCK, blocks_for(cut_end), size, (off, cut_end), |_, _, _| None)?;
        }
        if mode != AllocMode::Punch {
            // The range's crcs too: a later write there grows the table.
            let b0 = off / CRC_BLOCK;
            fallocate(&h.crc, libc::FALLOC_FL_KEEP_SIZE, b0 * 4, (blocks_for(end) - b0) * 4).map_err(fallocate_error)?;
            fallocate(&h.data, libc::FALLOC_FL_KEEP_SIZE, off, len).map_err(fallocate_error)?;
        }
        Ok(())
    }

    fn allocated(&self, obj: ObjectId) -> Result<u64> {
        use std::os::unix::fs::MetadataExt;
        match std::fs::metadata(self.paths(obj).1) {
            Ok(m) => Ok(m.blocks() * 512),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    fn usage(&self) -> Result<Usage> {
        let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
        let path = std::ffi::CString::new(self.root.as_os_str().as_encoded_bytes())
            .map_err(|_| Error::InvalidArgument("data dir path has a NUL byte".into()))?;
        // SAFETY: `path` is a valid C string and `st` points to writable
        // memory of the right size; statvfs fills it on success.
        let rc = unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        // SAFETY: statvfs returned 0, so it initialised the struct.
        let st = unsafe { st.assume_init() };
        let frsize = st.f_frsize as u64;
        Ok(Usage {
            capacity: st.f_blocks as u64 * frsize,
            used: (st.f_blocks as u64 - st.f_bavail as u64) * frsize,
            objects: self.objects.load(Ordering::Relaxed),
        })
    }
}

#[cfg(test)]
mod tests;
