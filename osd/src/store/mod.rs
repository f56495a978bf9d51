//! Object storage on the OSD's local disk. `ObjectStore` is the contract the
//! service relies on; `file::FileStore` keeps each object as a data file and a
//! sidecar of crc32c values, one per `CRC_BLOCK` (DESIGN.md, "checksums").
pub mod file;
mod handles;

use aifs_common::proto::osd::{block_crcs, AllocMode};
use aifs_common::{Error, ObjectId, Result};
use bytes::Bytes;

/// Exactly the asked bytes of an object (`ObjectStore::read_range`).
pub struct RangeOut {
    pub data: Bytes,
    /// crc32c of `data`.
    pub crc: u32,
    pub obj_size: u64,
}

/// Data read from an object: `data` starts at block-aligned object offset
/// `off`; `crcs[i]` is the stored crc32c of block `off / CRC_BLOCK + i`
/// (clipped to the object's end).
pub struct ReadOut {
    pub off: u64,
    pub data: Bytes,
    pub crcs: Vec<u32>,
    pub obj_size: u64,
}

pub struct Usage {
    pub capacity: u64,
    pub used: u64,
    pub objects: u64,
}

/// Blocking object store; callers run it on blocking threads.
///
/// Contract: `write` stores `data` at `off` only if `crcs` match it (else
/// `Error::Checksum`), and afterwards every block of the object has a stored
/// crc that matches its bytes. `read` never returns data whose stored crc
/// it did not also return. `commit` makes every prior write and truncate of
/// the named objects durable. Missing objects read as empty.
pub trait ObjectStore: Send + Sync + 'static {
    fn write(&self, obj: ObjectId, off: u64, data: &[u8], crcs: &[u32]) -> Result<()>;
    fn read(&self, obj: ObjectId, off: u64, len: u64) -> Result<ReadOut>;
    fn truncate(&self, obj: ObjectId, size: u64) -> Result<()>;
    /// Remove objects (those already gone are fine), durably once it
    /// returns.
    fn delete(&self, objs: &[ObjectId]) -> Result<()>;
    /// `None` when the object does not exist.
    fn stat(&self, obj: ObjectId) -> Result<Option<u64>>;
    fn commit(&self, objs: &[ObjectId]) -> Result<()>;
    fn usage(&self) -> Result<Usage>;
    /// Objects after `after` in `ObjectId` order, with sizes, at most `max`.
    fn list(&self, after: Option<ObjectId>, max: usize) -> Result<Vec<(ObjectId, u64)>>;
    /// (size, blocks whose bytes fail their stored crc); `None` when the
    /// object does not exist.
    fn verify(&self, obj: ObjectId) -> Result<Option<(u64, u64)>>;
    /// `fallocate` of `[off, off + len)` (`AllocMode`); the object's size
    /// stays, and its stored crcs follow any bytes zeroed.
    fn allocate(&self, obj: ObjectId, off: u64, len: u64, mode: AllocMode) -> Result<()>;
    /// Bytes of disk the object's data holds (0 if it does not exist).
    fn allocated(&self, obj: ObjectId) -> Result<u64>;

    /// `[off, off + len)` as far as the object extends, after checking the
    /// whole blocks around it against their stored crcs (a mismatch is
    /// `Error::Checksum`), with the crc32c of just these bytes: a small read
    /// costs the wire its own length, not its blocks'.
    fn read_range(&self, obj: ObjectId, off: u64, len: u64) -> Result<RangeOut> {
        range_of(obj, self.read(obj, off, len)?, off, len)
    }

    /// `read`, if it can run without waiting for the object (a write,
    /// truncate or check of it in progress): `None` if it would wait. For
    /// callers on an async worker, which must never block on a lock.
    fn read_now(&self, _obj: ObjectId, _off: u64, _len: u64) -> Option<Result<ReadOut>> {
        None
    }
}

/// `[off, off + len)` of what `read` gave (`ObjectStore::read_range`).
pub fn range_of(obj: ObjectId, out: ReadOut, off: u64, len: u64) -> Result<RangeOut> {
    if block_crcs(out.off, &out.data) != out.crcs {
        return Err(Error::Checksum(format!("object {obj}: a stored block around [{off}, +{len}) fails its crc")));
    }
    let skip = usize::try_from(off.saturating_sub(out.off)).unwrap_or(usize::MAX).min(out.data.len());
    let end = skip.saturating_add(usize::try_from(len).unwrap_or(usize::MAX)).min(out.data.len());
    let data = out.data.slice(skip..end);
    Ok(RangeOut { crc: crc32c::crc32c(&data), data, obj_size: out.obj_size })
}
