//! What a shard stores, rkyv-encoded and validated on every read from disk.
use aifs_common::proto::frame::{decode_any, encode_any};
use aifs_common::proto::mds::{Attr, FileKind};
use aifs_common::{InodeId, Layout, LayoutPolicy, Result};
use rkyv::{Archive, Deserialize, Serialize};

/// Validate and decode a record read from redb, which hands out unaligned
/// slices: copied into aligned memory first.
pub(crate) fn decode_stored<T>(bytes: &[u8]) -> Result<T>
where
    T: Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>>
        + rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rkyv::rancor::Error>>,
{
    let mut a = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
    a.extend_from_slice(bytes);
    decode_any(&a)
}

#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct InodeRec {
    pub kind: FileKind,
    pub perm: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub atime_ns: i64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    /// Files: where the data lives.
    pub layout: Option<Layout>,
    /// Directories: the default layout for new files below, inherited at mkdir.
    pub policy: Option<LayoutPolicy>,
    /// Directories: the parent directory (for `..` and the rename loop check).
    pub parent: u64,
    /// Directories: the next readdir cookie to hand out.
    pub next_cookie: u64,
    /// Directories: number of entries.
    pub entries: u64,
    /// Symlinks: the target.
    pub target: Option<String>,
    /// Number of extended attributes.
    pub xattrs: u32,
}

impl InodeRec {
    /// What permission checks look at (common/src/perm.rs).
    pub fn perms(&self) -> aifs_common::perm::Perms {
        aifs_common::perm::Perms { kind: self.kind, perm: self.perm, uid: self.uid, gid: self.gid }
    }

    /// Device nodes keep their device number in `size` (they have no
    /// data), which keeps the record's layout as it was before they came.
    pub fn attr(&self, ino: u64) -> Attr {
        Attr {
            ino: InodeId(ino),
            kind: self.kind,
            perm: self.perm,
            nlink: self.nlink,
            uid: self.uid,
            gid: self.gid,
            size: match self.kind {
                FileKind::File => self.size,
                FileKind::Dir => 4096,
                FileKind::Symlink => self.target.as_ref().map(|t| t.len() as u64).unwrap_or(0),
                FileKind::Fifo | FileKind::Socket | FileKind::CharDev | FileKind::BlockDev => 0,
            },
            atime_ns: self.atime_ns,
            mtime_ns: self.mtime_ns,
            ctime_ns: self.ctime_ns,
            layout: self.layout.clone(),
            xattrs: self.xattrs,
            rdev: if self.kind.is_device() { self.size as u32 } else { 0 },
            allocated: None,
        }
    }

    pub fn encode(&self) -> Result<Vec<u8>> {
        Ok(encode_any(self)?.to_vec())
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        decode_stored(bytes)
    }
}

/// Object space to give back on the OSDs, recorded in the same transaction
/// as the unlink or truncate that frees it, so nothing leaks across a crash.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct GcJob {
    pub ino: u64,
    pub layout: Layout,
    /// `None`: delete every object. `Some(size)`: cut the objects to what a
    /// file of `size` bytes holds.
    pub truncate_to: Option<u64>,
}

impl GcJob {
    pub fn encode(&self) -> Result<Vec<u8>> {
        Ok(encode_any(self)?.to_vec())
    }
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        decode_stored(bytes)
    }
}

/// An inode number reserved for a client (`store::RESERVED`): only a create
/// under the same certificate, with this layout, may use it.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct Reservation {
    pub owner: [u8; 32],
    pub layout: Layout,
}

impl Reservation {
    pub fn encode(&self) -> Result<Vec<u8>> {
        Ok(encode_any(self)?.to_vec())
    }
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        decode_stored(bytes)
    }
}

/// An OSD the MDS has heard from, persisted so a restarted MDS knows it.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct OsdRec {
    pub addr: String,
    pub capacity: u64,
    pub used: u64,
}

impl OsdRec {
    pub fn encode(&self) -> Result<Vec<u8>> {
        Ok(encode_any(self)?.to_vec())
    }
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        decode_stored(bytes)
    }
}

/// One primitive change of an operation over several shards (namespace.rs).
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub enum Step {
    InsertEntry { dir: u64, name: String, ino: u64, kind: FileKind, dir_delta: (i64, i64) },
    RemoveEntry { dir: u64, name: String, dir_delta: (i64, i64) },
    CreateInode { ino: u64, rec: InodeRec },
    SetParent { ino: u64, parent: u64 },
    AddLink { ino: u64 },
    DropLink { ino: u64 },
    DeleteDir { ino: u64 },
}

/// The commits an operation over several shards still has to make after
/// its first: (shard, steps) each, in order. Recorded in the first
/// commit, so a crash before the last is rolled forward at start.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct Intent {
    pub rest: Vec<(u32, Vec<Step>)>,
}

impl Intent {
    pub fn encode(&self) -> Result<Vec<u8>> {
        Ok(encode_any(self)?.to_vec())
    }
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        decode_stored(bytes)
    }
}
