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
mod tests {
    use super::*;
    use crate::store::handles::DIRECT_ALIGN;
    use aifs_common::proto::frame::aligned_buffer;
    use aifs_common::proto::osd::block_crcs;

    fn obj(i: u32) -> ObjectId {
        ObjectId { ino: InodeId(42), index: i }
    }

    fn check_all(s: &FileStore, o: ObjectId) {
        let r = s.read(o, 0, MAX_READ).unwrap();
        assert_eq!(block_crcs(r.off, &r.data), r.crcs, "stored crcs must match bytes");
    }

    /// One delete of many objects over several fan-out directories,
    /// some never written: all go, the count follows, and the others stay.
    #[test]
    fn a_delete_of_many_objects_removes_each_and_only_them() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStore::open(dir.path()).unwrap();
        let d = vec![3u8; 5000];
        let objs: Vec<ObjectId> = (0..6).flat_map(|ino| (0..2).map(move |index| ObjectId { ino: InodeId(ino * 97), index })).collect();
        for &o in &objs {
            s.write(o, 0, &d, &block_crcs(0, &d)).unwrap();
        }
        assert_eq!(s.usage().unwrap().objects, 12);
        let missing = ObjectId { ino: InodeId(5), index: 0 };
        let mut gone: Vec<ObjectId> = objs[..8].to_vec();
        gone.push(missing);
        s.delete(&gone).unwrap();
        for o in &objs[..8] {
            assert_eq!(s.stat(*o).unwrap(), None, "{o} deleted");
        }
        for o in &objs[8..] {
            assert_eq!(s.stat(*o).unwrap(), Some(5000), "{o} kept");
        }
        assert_eq!(s.usage().unwrap().objects, 4);
        s.delete(&[]).unwrap();
    }

    #[test]
    fn crcs_follow_writes_holes_and_truncates() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStore::open(dir.path()).unwrap();
        let o = obj(0);
        let d: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        s.write(o, 0, &d, &block_crcs(0, &d)).unwrap();
        check_all(&s, o);
        // unaligned overwrite in the middle
        let p = vec![7u8; 1000];
        s.write(o, 70_000, &p, &block_crcs(70_000, &p)).unwrap();
        check_all(&s, o);
        // write past the end leaves a hole
        s.write(o, 1_000_000, &p, &block_crcs(1_000_000, &p)).unwrap();
        check_all(&s, o);
        let r = s.read(o, 500_000, 10).unwrap();
        assert!(r.data.iter().all(|&b| b == 0));
        s.truncate(o, 150_001).unwrap();
        check_all(&s, o);
        assert_eq!(s.stat(o).unwrap(), Some(150_001));
        // truncate only cuts: growing is a no-op (the tail reads as zeros)
        s.truncate(o, 3_000_000).unwrap();
        check_all(&s, o);
        assert_eq!(s.stat(o).unwrap(), Some(150_001));
        s.delete(&[o]).unwrap();
        assert_eq!(s.stat(o).unwrap(), None);
        // and never brings a deleted object back
        s.truncate(o, 10).unwrap();
        assert_eq!(s.stat(o).unwrap(), None);
    }

    #[test]
    fn fallocate_reserves_punches_and_zeroes_and_the_crcs_follow() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStore::open(dir.path()).unwrap();
        let o = obj(0);
        let d: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251 + 1) as u8).collect();
        s.write(o, 0, &d, &block_crcs(0, &d)).unwrap();
        let held = s.allocated(o).unwrap();
        assert!(held >= 1_000_000, "{held}");
        // an unaligned hole: zeros there, the rest unchanged, crcs right
        s.allocate(o, 70_001, 600_000, AllocMode::Punch).unwrap();
        check_all(&s, o);
        let r = s.read(o, 0, MAX_READ).unwrap();
        assert!(r.data[70_001..670_001].iter().all(|&b| b == 0));
        assert_eq!((&r.data[..70_001], &r.data[670_001..]), (&d[..70_001], &d[670_001..]));
        assert!(s.allocated(o).unwrap() <= held - 500_000, "the hole gave its space back");
        assert_eq!(s.stat(o).unwrap(), Some(1_000_000));
        // zeros over the end: the size stays, space is held past it
        s.allocate(o, 900_000, 4_000_000, AllocMode::Zero).unwrap();
        check_all(&s, o);
        assert!(s.read(o, 900_000, 100_000).unwrap().data[..].iter().skip(900_000 % CRC_BLOCK as usize).all(|&b| b == 0));
        assert_eq!(s.stat(o).unwrap(), Some(1_000_000));
        assert!(s.allocated(o).unwrap() >= 4_000_000);
        // space for a missing object; a hole in one makes none
        s.allocate(obj(1), 0, 8 << 20, AllocMode::Reserve).unwrap();
        assert_eq!(s.stat(obj(1)).unwrap(), Some(0));
        assert!(s.allocated(obj(1)).unwrap() >= 8 << 20);
        s.allocate(obj(2), 0, 4096, AllocMode::Punch).unwrap();
        assert_eq!((s.stat(obj(2)).unwrap(), s.allocated(obj(2)).unwrap()), (None, 0));
        assert_eq!(s.allocate(o, MAX_OBJECT_SIZE, 1, AllocMode::Reserve), Err(Error::FileTooBig));
        assert!(matches!(s.allocate(o, 0, 0, AllocMode::Reserve), Err(Error::InvalidArgument(_))));
        // more than the disk holds takes nothing
        assert!(matches!(s.allocate(obj(3), 0, MAX_OBJECT_SIZE, AllocMode::Reserve), Err(Error::NoSpace(_))));
        assert_eq!(s.stat(obj(3)).unwrap(), None);
    }

    /// Disk bytes `obj`'s crc sidecar holds.
    fn crc_disk(s: &FileStore, o: ObjectId) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(s.paths(o).2).unwrap().blocks() * 512
    }

    #[test]
    fn a_far_write_leaves_a_hole_in_the_crcs_not_a_gigabyte_of_them() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStore::open(dir.path()).unwrap();
        let o = obj(9);
        s.write(o, 0, b"head", &block_crcs(0, b"head")).unwrap();
        // (ext4 files end 4 KiB short of 16 TiB; 4 TiB held 256 MiB of crcs)
        let far = (4 << 40) - 1;
        s.write(o, far, b"x", &block_crcs(far, b"x")).unwrap();
        assert!(crc_disk(&s, o) < 1 << 20, "{} bytes of crcs for two blocks", crc_disk(&s, o));
        for at in [0, CRC_BLOCK, 2 << 40, far - 10] {
            let r = s.read(o, at, 100).unwrap();
            assert_eq!(block_crcs(r.off, &r.data), r.crcs, "crcs at {at}");
        }
        assert_eq!(&s.read(o, far, 1).unwrap().data[..][(far % CRC_BLOCK) as usize..], b"x");
        // a hole punched over written blocks reads as zeros with their crcs
        let d = vec![3u8; 40 * CRC_BLOCK as usize];
        s.write(o, CRC_BLOCK, &d, &block_crcs(CRC_BLOCK, &d)).unwrap();
        s.allocate(o, 0, 1 << 30, AllocMode::Punch).unwrap();
        let r = s.read(o, 0, 41 * CRC_BLOCK).unwrap();
        assert!(r.data.iter().all(|&b| b == 0));
        assert_eq!(block_crcs(r.off, &r.data), r.crcs);
    }

    #[test]
    fn a_store_made_before_keyed_crcs_keeps_them_as_they_were() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("objects")).unwrap();
        let s = FileStore::open(dir.path()).unwrap();
        let o = obj(10);
        let d = vec![9u8; 100_000];
        s.write(o, 0, &d, &block_crcs(0, &d)).unwrap();
        check_all(&s, o);
        let raw = std::fs::read(s.paths(o).2).unwrap();
        let stored: Vec<u32> = raw.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        assert_eq!(stored, block_crcs(0, &d));
        drop(s);
        // and a new store says it keys them, durably, from the start
        let fresh = tempfile::tempdir().unwrap();
        FileStore::open(fresh.path()).unwrap();
        assert!(fresh.path().join(CRC_FORMAT_FILE).exists());
    }

    #[test]
    fn wild_offsets_and_lengths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStore::open(dir.path()).unwrap();
        let d = vec![1u8; 10];
        assert_eq!(s.write(obj(3), 1 << 50, &d, &block_crcs(1 << 50, &d)), Err(Error::FileTooBig));
        assert!(matches!(s.read(obj(3), 0, u32::MAX as u64), Err(Error::InvalidArgument(_))));
    }

    #[test]
    fn corrupted_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStore::open(dir.path()).unwrap();
        let d = vec![1u8; 4096];
        let mut c = block_crcs(0, &d);
        c[0] ^= 1;
        assert!(matches!(s.write(obj(1), 0, &d, &c), Err(Error::Checksum(_))));
    }

    #[test]
    fn flipped_byte_on_disk_is_caught_by_crc() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStore::open(dir.path()).unwrap();
        let o = obj(2);
        let d = vec![9u8; 100_000];
        s.write(o, 0, &d, &block_crcs(0, &d)).unwrap();
        let (_, path, _) = s.paths(o);
        let f = OpenOptions::new().write(true).open(path).unwrap();
        f.write_all_at(&[0xff], 5).unwrap();
        let r = s.read(o, 0, 10).unwrap();
        assert_ne!(block_crcs(r.off, &r.data), r.crcs);
        // an exact range read checks the whole block, not just its bytes
        assert!(matches!(s.read_range(o, 4096, 4096), Err(Error::Checksum(_))));
        let r = s.read_range(o, 70_000, 4096).unwrap();
        assert_eq!((&r.data[..], r.crc, r.obj_size), (&d[70_000..74_096], crc32c::crc32c(&d[70_000..74_096]), 100_000));
    }

    #[test]
    fn range_reads_send_just_the_asked_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStore::open(dir.path()).unwrap();
        let o = obj(5);
        let d: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        s.write(o, 0, &d, &block_crcs(0, &d)).unwrap();
        for (off, len, want) in [(0, 4096, 0..4096), (65_000, 2_000, 65_000..67_000), (199_000, 4096, 199_000..200_000), (300_000, 10, 0..0)] {
            let r = s.read_range(o, off, len).unwrap();
            assert_eq!(&r.data[..], &d[want], "read_range({off}, {len})");
            assert_eq!(r.crc, crc32c::crc32c(&r.data));
        }
        let none = s.read_range(obj(6), 100, 10).unwrap();
        assert_eq!((none.data.len(), none.obj_size), (0, 0));
    }

    #[test]
    fn large_reads_bypass_the_page_cache_and_see_every_write() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStore::open(dir.path()).unwrap();
        let o = obj(4);
        // an end that is aligned to nothing
        let mut d: Vec<u8> = (0..(700_000u32 + 123)).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        s.write(o, 0, &d, &block_crcs(0, &d)).unwrap();
        let whole = s.read(o, 0, MAX_READ).unwrap();
        assert!(whole.data == d, "a direct read returned other bytes");
        assert_eq!(block_crcs(0, &whole.data), whole.crcs);
        // an overwrite still in the page cache is what the next read sees
        let p = vec![0xa5u8; 300_000];
        s.write(o, 131_072, &p, &block_crcs(131_072, &p)).unwrap();
        d[131_072..431_072].copy_from_slice(&p);
        let r = s.read(o, 196_608, 500_000).unwrap();
        assert_eq!(r.off, 196_608);
        assert!(r.data[..] == d[196_608..], "read after an overwrite returned other bytes");
        assert_eq!(block_crcs(r.off, &r.data), r.crcs);
        // the reads went the direct way (ext4, xfs and tmpfs since Linux
        // 6.6 take it; elsewhere the handle records the refusal)
        let h = s.handles(o, false).unwrap().unwrap();
        assert!(h.direct.get().is_some(), "large reads did not try O_DIRECT");
    }

    /// An aligned buffer of `len` pattern bytes, as the frame reader
    /// lands large payloads.
    fn aligned(len: usize, seed: u8) -> Bytes {
        let (mut buf, pad) = aligned_buffer(len);
        buf.extend((0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)));
        buf.freeze().slice(pad..)
    }

    /// Descriptors of this process open on deleted files under `dir`.
    fn deleted_open(dir: &Path) -> usize {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|t| t.starts_with(dir) && t.to_string_lossy().ends_with(" (deleted)"))
            .count()
    }

    /// Regression: a deleted object's handles stayed in the cache until its
    /// next housekeeping, and with them its blocks, freed only in the middle
    /// of the next checkpoint's writes.
    #[test]
    fn a_deleted_object_keeps_no_descriptor_open() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStore::open(dir.path()).unwrap();
        let d = vec![7u8; 1 << 20];
        for i in 0..3 {
            s.write(obj(i), 0, &d, &block_crcs(0, &d)).unwrap();
            assert!(s.read(obj(i), 0, 1 << 20).unwrap().data == d);
        }
        for i in 0..3 {
            s.delete(&[obj(i)]).unwrap();
        }
        assert_eq!(deleted_open(dir.path()), 0, "deleted objects are still open");
    }

    /// Regression (found by the ClientFs property test): a read of an
    /// object never written, at an offset inside a block, answered at that
    /// offset instead of the block's start, and the client took the reply
    /// for a protocol error: a read of a hole in a sparse file gave EIO.
    /// A read on an async worker never waits for an object's lock: while a
    /// write or check holds it exclusively, `read_now` declines (the
    /// service then reads on a blocking thread), and it reads once free.
    /// (The fuzzer found OSD workers stuck behind a check of a 40 GB
    /// sparse object, and the whole OSD with them.)
    #[test]
    fn a_read_now_never_waits_for_the_object() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStore::open(dir.path()).unwrap();
        let o = obj(7);
        let d = vec![3u8; 10_000];
        s.write(o, 0, &d, &block_crcs(0, &d)).unwrap();
        {
            let _held = s.lock(o).write().unwrap();
            assert!(s.read_now(o, 0, 100).is_none(), "a read waited for a held lock");
        }
        let r = s.read_now(o, 0, 100).expect("the object is free").unwrap();
        assert_eq!(&r.data[..100], &d[..100]);
    }

    /// A check reads a sparse object's data, not its holes, and still
    /// finds a bad crc in a hole.
    #[test]
    fn a_check_skips_holes_and_still_checks_their_crcs() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStore::open(dir.path()).unwrap();
        let o = obj(8);
        let d = vec![5u8; 70_000];
        s.write(o, 0, &d, &block_crcs(0, &d)).unwrap();
        let far = 64 << 30;
        s.write(o, far, &d, &block_crcs(far, &d)).unwrap();
        let t = std::time::Instant::now();
        assert_eq!(s.verify(o).unwrap(), Some((far + 70_000, 0)));
        assert!(t.elapsed() < std::time::Duration::from_secs(20), "a 64 GiB hole was read: {:?}", t.elapsed());
        // a crc inside the hole damaged
        let h = s.handles(o, false).unwrap().unwrap();
        h.write_crcs(1000, &[1]).unwrap();
        assert_eq!(s.verify(o).unwrap(), Some((far + 70_000, 1)));
    }

    #[test]
    fn a_read_of_a_missing_object_answers_at_the_block_start() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStore::open(dir.path()).unwrap();
        let r = s.read(obj(6), 534_015, 98_366).unwrap();
        assert_eq!(r.off, 534_015 / CRC_BLOCK * CRC_BLOCK);
        assert!(r.data.is_empty() && r.crcs.is_empty());
    }

    #[test]
    fn aligned_writes_go_direct_and_mix_with_buffered_ones() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStore::open(dir.path()).unwrap();
        let o = obj(5);
        // a buffered partial write first, then an aligned unit over it and
        // past it, then a buffered write inside the aligned one
        let small = vec![9u8; 5000];
        s.write(o, 1000, &small, &block_crcs(1000, &small)).unwrap();
        let unit = aligned(1 << 20, 1);
        assert_eq!(unit.as_ptr().align_offset(DIRECT_ALIGN), 0);
        s.write(o, 0, &unit, &block_crcs(0, &unit)).unwrap();
        let h = s.handles(o, false).unwrap().unwrap();
        assert!(h.direct.get().is_some(), "an aligned write did not try O_DIRECT");
        let mut want = unit.to_vec();
        let patch = vec![0x5au8; 70_000];
        s.write(o, 300_001, &patch, &block_crcs(300_001, &patch)).unwrap();
        want[300_001..370_001].copy_from_slice(&patch);
        // a second aligned unit extends the object
        let next = aligned(1 << 20, 2);
        s.write(o, 1 << 20, &next, &block_crcs(1 << 20, &next)).unwrap();
        want.extend_from_slice(&next);
        for (off, len) in [(0u64, 2u64 << 20), (4096, 100), (290_000, 90_000), ((1 << 20) - 10, 20)] {
            let r = s.read(o, off, len).unwrap();
            let skip = (off - r.off) as usize;
            assert!(r.data[skip..skip + len as usize] == want[off as usize..(off + len) as usize], "read of {len} at {off} differs");
            assert_eq!(block_crcs(r.off, &r.data), r.crcs);
        }
        assert_eq!(s.verify(o).unwrap(), Some((2 << 20, 0)));
    }

    #[test]
    fn list_pages_in_order_and_verify_finds_bad_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStore::open(dir.path()).unwrap();
        let d = vec![3u8; 200_000];
        for (ino, index) in [(0x200, 1), (0x100, 0), (0x200, 0)] {
            s.write(ObjectId { ino: InodeId(ino), index }, 0, &d, &block_crcs(0, &d)).unwrap();
        }
        let all = s.list(None, 10).unwrap();
        let ids: Vec<ObjectId> = all.iter().map(|o| o.0).collect();
        assert_eq!(ids, vec![ObjectId { ino: InodeId(0x100), index: 0 }, ObjectId { ino: InodeId(0x200), index: 0 }, ObjectId { ino: InodeId(0x200), index: 1 }]);
        assert!(all.iter().all(|o| o.1 == 200_000));
        assert_eq!(s.list(Some(ids[0]), 1).unwrap().iter().map(|o| o.0).collect::<Vec<_>>(), vec![ids[1]]);
        assert!(s.list(Some(ids[2]), 10).unwrap().is_empty());
        assert_eq!(s.verify(ids[0]).unwrap(), Some((200_000, 0)));
        let (_, path, _) = s.paths(ids[0]);
        OpenOptions::new().write(true).open(path).unwrap().write_all_at(&[9], 70_000).unwrap();
        assert_eq!(s.verify(ids[0]).unwrap(), Some((200_000, 1)));
        assert_eq!(s.verify(obj(77)).unwrap(), None);
    }

    #[test]
    fn an_object_removed_behind_the_store_is_not_written_through_a_stale_handle() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStore::open(dir.path()).unwrap();
        let o = obj(5);
        let d = vec![1u8; 1000];
        s.write(o, 0, &d, &block_crcs(0, &d)).unwrap();
        let (_, path, crc) = s.paths(o);
        std::fs::remove_file(&path).unwrap();
        std::fs::remove_file(&crc).unwrap();
        assert_eq!(s.stat(o).unwrap(), None);
        s.write(o, 0, &d, &block_crcs(0, &d)).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), d);
    }
}
