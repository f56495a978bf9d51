//! Object service messages (client and MDS to OSD). Object bytes travel raw
//! after the header, never through rkyv.
use super::frame::message;
use crate::error::WireError;
use crate::cap::{Cap, READ, WRITE};
use crate::ids::ObjectId;
use rkyv::{Archive, Deserialize, Serialize};

/// Checksum granule: one crc32c per 64 KiB block of an object. The stripe
/// unit is a multiple of it, so a whole-unit write carries whole blocks and
/// the OSD never has to read back to checksum it.
pub const CRC_BLOCK: u64 = 64 * 1024;

/// crc32c of each `CRC_BLOCK`-aligned piece of `data`, which starts at
/// object offset `off`. A piece is cut at block boundaries.
pub fn block_crcs(off: u64, data: &[u8]) -> Vec<u32> {
    let mut out = Vec::with_capacity(data.len() / CRC_BLOCK as usize + 2);
    let mut pos = 0usize;
    let mut o = off;
    while pos < data.len() {
        let room = (CRC_BLOCK - o % CRC_BLOCK) as usize;
        let n = room.min(data.len() - pos);
        out.push(crc32c::crc32c(&data[pos..pos + n]));
        pos += n;
        o += n as u64;
    }
    out
}

#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub enum OsdReq {
    /// `len` bytes follow; `crcs` holds `block_crcs(off, data)`.
    Write { obj: ObjectId, off: u64, len: u32, crcs: Vec<u32> },
    /// Read `[off, off + len)`; the OSD widens it to whole blocks.
    Read { obj: ObjectId, off: u64, len: u32 },
    Truncate { obj: ObjectId, size: u64 },
    Delete { obj: ObjectId },
    Stat { obj: ObjectId },
    /// fsync these objects.
    Commit { objs: Vec<ObjectId> },
    Usage,
    /// The objects stored, in `ObjectId` order, after `after` (none: from
    /// the first), at most `max` (fsck).
    List { after: Option<ObjectId>, max: u32 },
    /// Read an object whole and check each block against its stored crc
    /// (fsck's deep scrub).
    Verify { obj: ObjectId },
    /// What this OSD has served since it started (benchmarks: a load
    /// served from the client's page cache reads nothing here).
    Stats,
    /// Read exactly `[off, off + len)`: the OSD checks the whole blocks
    /// around it against their stored crcs and sends only the asked bytes
    /// (`OsdResp::Range`). For reads much smaller than a block, which
    /// `Read` would widen to 64 KiB on the wire.
    ReadRange { obj: ObjectId, off: u64, len: u32 },
    /// `fallocate` of `[off, off + len)` of an object; its size never
    /// changes (the file's size is the MDS's).
    Allocate { obj: ObjectId, off: u64, len: u64, mode: AllocMode },
    /// The bytes of disk each object holds (`OsdResp::Allocated`), for
    /// the MDS's `st_blocks`; at most `MAX_ALLOCATED_QUERY` objects.
    Allocated { objs: Vec<ObjectId> },
    /// Delete these objects, at most `MAX_DELETE_BATCH` (the MDS's GC:
    /// one request and one directory sync for many files' objects).
    DeleteMany { objs: Vec<ObjectId> },
    /// Heartbeat to the MDS now, not at the next period: an MDS process
    /// that has just taken the lead asks its OSDs, whose heartbeats its
    /// grace waits for (mds/src/cluster/grace.rs).
    Beat,
    // New variants go last: the order is the wire's discriminant.
}
impl OsdReq {
    /// The request's name, for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            OsdReq::Write { .. } => "write",
            OsdReq::Read { .. } => "read",
            OsdReq::Truncate { .. } => "truncate",
            OsdReq::Delete { .. } => "delete",
            OsdReq::Stat { .. } => "stat",
            OsdReq::Commit { .. } => "commit",
            OsdReq::Usage => "usage",
            OsdReq::List { .. } => "list",
            OsdReq::Verify { .. } => "verify",
            OsdReq::Stats => "stats",
            OsdReq::ReadRange { .. } => "read_range",
            OsdReq::Allocate { .. } => "allocate",
            OsdReq::Allocated { .. } => "allocated",
            OsdReq::DeleteMany { .. } => "delete_many",
            OsdReq::Beat => "beat",
        }
    }
}

/// Objects one `OsdReq::Allocated` may name.
pub const MAX_ALLOCATED_QUERY: usize = 4096;

/// Objects one `OsdReq::DeleteMany` may name.
pub const MAX_DELETE_BATCH: usize = 4096;

/// What an `OsdReq::Allocate` does to its range.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub enum AllocMode {
    /// Reserve disk space, so that later writes there cannot fail for
    /// lack of it; the bytes are unchanged.
    Reserve,
    /// Make the range a hole: zeros, and no disk space held.
    Punch,
    /// Make the range zeros, with disk space reserved under it.
    Zero,
}

message!(OsdReq, |m| match m {
    OsdReq::Write { len, .. } => *len as u64,
    _ => 0,
});

/// Who may ask for a request, and what a client needs for it.
pub enum Needs {
    /// A capability over the object's file granting these rights (for
    /// several objects of one file: the one with the highest index).
    Cap(ObjectId, u8),
    /// Nothing: counters that name no object.
    Nothing,
    /// The mds or admin role: whole-store scans, deletes, truncates.
    Operator,
}

impl OsdReq {
    pub fn needs(&self) -> Needs {
        match self {
            OsdReq::Write { obj, .. } | OsdReq::Allocate { obj, .. } => Needs::Cap(*obj, WRITE),
            OsdReq::Read { obj, .. } | OsdReq::ReadRange { obj, .. } => Needs::Cap(*obj, READ),
            // One file's objects, as a client's fsync sends them; a commit
            // of several files' objects is the operator's.
            OsdReq::Commit { objs } => match objs.first() {
                Some(o) if objs.iter().all(|x| x.ino == o.ino) => {
                    let last = objs.iter().max_by_key(|x| x.index).unwrap_or(o);
                    Needs::Cap(*last, WRITE)
                }
                Some(_) => Needs::Operator,
                None => Needs::Nothing,
            },
            OsdReq::Usage | OsdReq::Stats => Needs::Nothing,
            OsdReq::Truncate { .. }
            | OsdReq::Delete { .. }
            | OsdReq::DeleteMany { .. }
            | OsdReq::Beat
            | OsdReq::Stat { .. }
            | OsdReq::List { .. }
            | OsdReq::Verify { .. }
            | OsdReq::Allocated { .. } => {
                Needs::Operator
            }
        }
    }
}

/// What goes on the wire to an OSD: a request, with the capability that
/// allows it when it comes from a client (`OsdReq::needs`).
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub struct OsdCall {
    pub cap: Option<Cap>,
    pub req: OsdReq,
}
message!(OsdCall, |m| m.req.payload_len());

impl From<OsdReq> for OsdCall {
    fn from(req: OsdReq) -> Self {
        OsdCall { cap: None, req }
    }
}

#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub enum OsdResp {
    Err(WireError),
    Done,
    /// `len` bytes follow, starting at object offset `off` (block aligned);
    /// `crcs[i]` covers block `off / CRC_BLOCK + i` as far as the object
    /// extends. Bytes past the object's end are not sent.
    Data { off: u64, len: u32, crcs: Vec<u32>, obj_size: u64 },
    Stat { exists: bool, size: u64 },
    Usage { capacity: u64, used: u64, objects: u64 },
    /// `List`: objects with their sizes; fewer than `max` at the end.
    Objects(Vec<(ObjectId, u64)>),
    /// `Verify`: the object's size and how many of its blocks fail their
    /// crc (`exists` false: no such object).
    Verified { exists: bool, size: u64, bad_blocks: u64 },
    Stats(OsdStats),
    /// `ReadRange`: `len` bytes follow, the asked range from `off` as far
    /// as the object extends, each block around them checked against its
    /// stored crc; `crc` is the crc32c of the bytes sent.
    Range { off: u64, len: u32, crc: u32, obj_size: u64 },
    /// `Allocated`: disk bytes held by each object asked, in order (0 for
    /// one that does not exist).
    Allocated(Vec<u64>),
    // New variants go last: the order is the wire's discriminant.
}

/// Requests and bytes an OSD has served since it started.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Default, PartialEq, Eq, Debug, serde::Serialize)]
#[rkyv(derive(Debug))]
pub struct OsdStats {
    pub reads: u64,
    pub read_bytes: u64,
    pub writes: u64,
    pub write_bytes: u64,
}
message!(OsdResp, |m| match m {
    OsdResp::Data { len, .. } | OsdResp::Range { len, .. } => *len as u64,
    _ => 0,
});
