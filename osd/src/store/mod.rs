//! Object storage on the OSD's local disk. `ObjectStore` is the contract the
//! service relies on; `file::FileStore` keeps each object as a data file and a
//! sidecar of crc32c values, one per `CRC_BLOCK` (DESIGN.md, "checksums").
pub mod file;

use aifs_common::{ObjectId, Result};
use bytes::Bytes;

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
    fn delete(&self, obj: ObjectId) -> Result<()>;
    /// `None` when the object does not exist.
    fn stat(&self, obj: ObjectId) -> Result<Option<u64>>;
    fn commit(&self, objs: &[ObjectId]) -> Result<()>;
    fn usage(&self) -> Result<Usage>;
    /// Objects after `after` in `ObjectId` order, with sizes, at most `max`.
    fn list(&self, after: Option<ObjectId>, max: usize) -> Result<Vec<(ObjectId, u64)>>;
    /// (size, blocks whose bytes fail their stored crc); `None` when the
    /// object does not exist.
    fn verify(&self, obj: ObjectId) -> Result<Option<(u64, u64)>>;
}
