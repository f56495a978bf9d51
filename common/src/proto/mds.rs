//! Metadata service messages (client, OSD and admin to MDS).
use super::frame::message;
use crate::cap::{Cap, CapKey};
use crate::error::WireError;
use crate::ids::{InodeId, OsdId, Owner, SessionId};
use crate::layout::{Layout, LayoutPolicy};
use crate::perm::Cred;
pub use super::status::*;
use rkyv::{Archive, Deserialize, Serialize};

#[derive(Archive, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[rkyv(derive(Debug))]
pub enum FileKind {
    File = 1,
    Dir = 2,
    Symlink = 3,
    /// Special files: an inode, a name and attributes here; what they do
    /// (a pipe, a socket's address, a device) is the local kernel's.
    Fifo = 4,
    Socket = 5,
    CharDev = 6,
    BlockDev = 7,
}

impl FileKind {
    /// The kind of a special file `mknod` makes with `mode` (its
    /// `S_IFMT` bits); `None` for the other kinds.
    pub fn special(mode: u32) -> Option<FileKind> {
        match mode & libc::S_IFMT {
            libc::S_IFIFO => Some(FileKind::Fifo),
            libc::S_IFSOCK => Some(FileKind::Socket),
            libc::S_IFCHR => Some(FileKind::CharDev),
            libc::S_IFBLK => Some(FileKind::BlockDev),
            _ => None,
        }
    }

    /// A device node: it has a device number (`rdev`).
    pub fn is_device(self) -> bool {
        matches!(self, FileKind::CharDev | FileKind::BlockDev)
    }
}

/// Attributes of an inode as the MDS knows them.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub struct Attr {
    pub ino: InodeId,
    pub kind: FileKind,
    /// Permission bits (`mode & 0o7777`).
    pub perm: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub atime_ns: i64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    /// Files: their layout. Directories and symlinks: none.
    pub layout: Option<Layout>,
    /// Number of extended attributes: a client that knows there are none
    /// answers `getxattr` itself within its attribute TTL (`ls -l` asks
    /// for two on every file).
    pub xattrs: u32,
    /// Device nodes: the device number (`st_rdev`); else 0.
    pub rdev: u32,
    /// Files: bytes of disk their data holds on the OSDs (one replica),
    /// as last measured after a change (`st_blocks`); `None` until then.
    pub allocated: Option<u64>,
}

impl Attr {
    /// A new, empty regular file as the MDS records it at create
    /// (`file_rec` in mds/src/namespace.rs; a test there keeps the two
    /// equal): what a client answers itself for a create under a
    /// directory's write lease.
    pub fn new_file(ino: InodeId, mode: u32, uid: u32, gid: u32, layout: Layout, now: i64) -> Attr {
        Attr {
            ino,
            kind: FileKind::File,
            perm: mode & 0o7777,
            nlink: 1,
            uid,
            gid,
            size: 0,
            atime_ns: now,
            mtime_ns: now,
            ctime_ns: now,
            layout: Some(layout),
            xattrs: 0,
            rdev: 0,
            allocated: None,
        }
    }

    /// A new directory's attributes as the MDS records them (`dir_rec` in
    /// mds/src/namespace.rs; a test there keeps the two equal): what a
    /// client answers itself for a mkdir under the parent's write lease.
    pub fn new_dir(ino: InodeId, mode: u32, uid: u32, gid: u32, now: i64) -> Attr {
        Attr {
            ino,
            kind: FileKind::Dir,
            perm: mode & 0o7777,
            nlink: 2,
            uid,
            gid,
            size: 4096,
            atime_ns: now,
            mtime_ns: now,
            ctime_ns: now,
            layout: None,
            xattrs: 0,
            rdev: 0,
            allocated: None,
        }
    }
}

#[derive(Archive, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub enum TimeSet {
    Now,
    At(i64),
}

#[derive(Archive, Serialize, Deserialize, Clone, Default, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<TimeSet>,
    pub mtime: Option<TimeSet>,
}

#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub struct DirEntry {
    pub name: String,
    pub ino: InodeId,
    pub kind: FileKind,
    /// Position to resume after this entry: stays valid while other
    /// entries are added or removed.
    pub cookie: u64,
}

/// `renameat2` flag: fail with EEXIST instead of replacing the target.
pub const RENAME_NOREPLACE: u32 = 1;
/// `renameat2` flag: swap the two names, which must both exist.
pub const RENAME_EXCHANGE: u32 = 2;
/// `setxattr` flags.
pub const XATTR_CREATE: u32 = 1;
pub const XATTR_REPLACE: u32 = 2;

#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub enum MdsReq {
    Lookup { parent: InodeId, name: String },
    GetAttr { ino: InodeId },
    SetAttr { ino: InodeId, set: SetAttr },
    /// A regular file, owned by the caller (`MdsCall::cred`) as its
    /// directory decides (`perm::new_owner`), as is every inode made.
    Create { parent: InodeId, name: String, mode: u32, exclusive: bool },
    Mkdir { parent: InodeId, name: String, mode: u32 },
    Unlink { parent: InodeId, name: String },
    Rmdir { parent: InodeId, name: String },
    Rename { parent: InodeId, name: String, newparent: InodeId, newname: String, flags: u32 },
    Readdir { ino: InodeId, cookie: u64, max: u32 },
    Symlink { parent: InodeId, name: String, target: String },
    Readlink { ino: InodeId },
    Link { ino: InodeId, newparent: InodeId, newname: String },
    Statfs,
    GetXattr { ino: InodeId, name: String },
    SetXattr { ino: InodeId, name: String, value: Vec<u8>, flags: u32 },
    ListXattr { ino: InodeId },
    RemoveXattr { ino: InodeId, name: String },
    /// A writer publishes size and mtime at flush: size is merged as a maximum.
    UpdateSize { ino: InodeId, size: u64, mtime_ns: i64 },
    /// Set a directory's default layout, or an empty file's layout.
    SetStripe { ino: InodeId, policy: LayoutPolicy },
    GetStripe { ino: InodeId },
    /// Admin: start a check of every file's replicas against the OSDs (or
    /// join the one running); `repair` also fixes what it finds.
    Fsck { repair: bool },
    /// Admin: progress and findings of the last check.
    FsckStatus,
    /// Admin: take an OSD out (its replicas move to other OSDs, and it gets
    /// no new data) or back in.
    OsdOut { id: OsdId, out: bool },
    /// A writer could not reach these replicas of a file's objects; the
    /// other replicas have the data. Answered once recorded durably.
    Degraded { ino: InodeId, objs: Vec<Degraded> },
    OsdMap,
    /// `revoked_known`: how many revoked certificates the OSD knows of.
    OsdHeartbeat { id: OsdId, addr: String, usage: OsdUsage, revoked_known: u32 },
    /// `dir_leases`: the client takes directories' write leases (creates
    /// and unlinks answered by itself, sent in batches). After an MDS
    /// restart or a leader change, `previous` are the sessions the client
    /// had (one per MDS process it spoke to), `open` the files it still
    /// has open, counted again as opens of the new session, and `locks`
    /// the locks it held, taken again if one of `previous` is a session
    /// the MDS waits for (`Session::reclaimed`); the MDS holds back
    /// conflicting requests until every session it waits for has come
    /// back or expired. Answered by the process it is sent to, as the
    /// session's heartbeats and close: a client has a session with each
    /// process that leads a shard it uses.
    OpenSession { name: String, dir_leases: bool, previous: Vec<SessionId>, open: Vec<InodeId>, locks: Vec<HeldLock> },
    /// `io`: what the client did since it started (`mdsctl top`).
    SessionHeartbeat { id: SessionId, io: ClientIo },
    CloseSession { id: SessionId },
    Status,
    /// Admin: end a client's session now, dropping its leases.
    EvictSession { id: SessionId },
    /// Readdir with each entry's attributes (`ls -l` in one round trip).
    ReaddirPlus { ino: InodeId, cookie: u64, max: u32 },
    /// Take a lease on a file for reading or for writing (at open, and
    /// again after a recall): answered once conflicting holders released.
    /// `first`: the client's first open handle of the file, counted until
    /// its `Close` (a file unlinked while open lives until then).
    /// `exclusive`: a write lease shared with no other writer (appends).
    Open { ino: InodeId, write: bool, first: bool, exclusive: bool },
    /// Admin: who holds which lease on an inode.
    Leases { ino: InodeId },
    /// The client closed its last handle of a file. Requests that act for
    /// a session name it: the connection they come on may not be bound yet
    /// (after a reconnect).
    Close { ino: InodeId, session: Option<SessionId> },
    /// Test for a lock (`F_GETLK`): the first lock in the way, if any.
    /// Ranges are inclusive; `owner` is the kernel's lock owner on the client.
    GetLock { ino: InodeId, owner: u64, start: u64, end: u64, write: bool, pid: u32, session: Option<SessionId> },
    /// Take (`kind` read or write) or release (unlock) a lock without
    /// waiting: a conflict is `WouldBlock`.
    SetLock { ino: InodeId, owner: u64, start: u64, end: u64, kind: LockKind, pid: u32, session: Option<SessionId> },
    /// The file was read: its access time becomes now (ctime unchanged).
    Accessed { ino: InodeId },
    /// Inode numbers (with their files' layouts) for `count` files to be
    /// made in `dir` by a client that holds the directory's write lease.
    Reserve { dir: InodeId, count: u32 },
    /// Namespace changes a client already answered under a directory's
    /// write lease (and closes), applied in order; one result per change.
    /// `session`: the session they were made under (as in `Close`).
    Apply { session: Option<SessionId>, ops: Vec<DirOp> },
    /// A new capability over a file whose current one nears its end: given
    /// at once to a session that holds a lease on it (one being recalled
    /// too: it may be flushing), else as an `Open` would, taking a lease.
    Cap { ino: InodeId, write: bool },
    /// Admin: refuse the certificate of `owner` (issued as `name`) from now
    /// on, on the MDS and every OSD, and end its connections and sessions.
    Revoke { owner: Owner, name: String },
    /// Admin: the revoked certificates.
    Revoked,
    /// A special file (`FileKind::special`): a FIFO, a socket, or (made by
    /// uid 0 only) a device node with its number `rdev`.
    Mknod { parent: InodeId, name: String, kind: FileKind, mode: u32, rdev: u32 },
    /// Admin: the stale replicas recorded, of one file or of all (at most
    /// `MAX_DEGRADED_LIST`).
    DegradedList { ino: Option<InodeId> },
    /// Admin: forget stale-replica records of a file (all, or those of one
    /// object and/or one OSD), so that those replicas are read again. For
    /// a replica known to hold the file's data after all (restored by
    /// hand, or the last copy left when the healthy ones are lost).
    ClearDegraded { ino: InodeId, index: Option<u32>, osd: Option<OsdId> },
    /// Inode numbers reserved for this client's certificate that it will
    /// not use (the directory's write lease went, or its layout changed),
    /// given back: at most `MAX_UNRESERVE`. Numbers reserved for another
    /// certificate, or used already, are left as they are.
    Unreserve { inos: Vec<InodeId> },
    /// A regular file with no name (`open(O_TMPFILE)`), made with
    /// `parent`'s layout policy and ownership rules and opened for writing
    /// by the caller's session, which must exist: nlink 0 until a `Link`
    /// from that session names it (only if `linkable`: no `O_EXCL`), freed
    /// at its last close if none does. Answered as `Create` is.
    TmpFile { parent: InodeId, mode: u32, linkable: bool },
    /// MDS to MDS: one message of shard `shard`'s Raft group (an append,
    /// a vote, a snapshot chunk): `len` bytes of the MDS's raft codec,
    /// raw after the header. Only another MDS's certificate may send it.
    Raft { shard: u32, len: u64 },
    /// Admin: one step of adding the MDS process at `addr` to every
    /// shard's group: a learner where it is not yet a member, a voter
    /// where it holds the log as far as the leader. `id` 0: the leader
    /// picks a free one. Sent again until the answer says it votes in
    /// every group (`MdsResp::Member`); each step is safe to repeat.
    AddMember { id: u64, addr: String },
    /// Admin: one step of taking MDS process `id` out of every shard's
    /// group; sent again until the answer says it is in none.
    RemoveMember { id: u64 },
    /// The addresses of the MDS processes the shards' groups are made of
    /// (answered by any of them): a client or OSD whose config names
    /// fewer (an MDS grown since) learns where else the leader may be.
    Members,
    /// Where each shard is led, by shard: the leading process's address,
    /// "" where none is known (answered by any member). A client opens a
    /// session with each process it names, so that one taking a shard
    /// over finds the clients that may hold its leases.
    ShardLeaders,
    /// Admin: hand the lead of shard `shard` to MDS process `to` (a voter
    /// in every group), now and whenever it is back after a failure.
    /// While one process leads every shard they move together. Answered
    /// once the wish is recorded; the move follows within seconds
    /// (`Status` shows it).
    MoveShard { shard: u32, to: u64 },
    /// MDS to MDS: one message of an operation over shards led from
    /// different processes, for the leader of shard `shard`
    /// (mds/src/namespace/twophase.rs): `len` bytes rkyv-encoded, raw
    /// after the header. Only another MDS's certificate may send it.
    Shard { shard: u32, len: u64 },
    /// Which MDS process leads, as this one knows (answered by any of
    /// them, `MdsResp::Leader`): a caller whose call goes unanswered at
    /// member `past` asks another, and leaves a member that no longer
    /// leads without waiting for its connection to fall silent. The
    /// answer waits up to `wait_ms` (at most a second) for a leader other
    /// than `past` to be known, so that the caller hears of an election
    /// as it ends.
    Leader { past: String, wait_ms: u32 },
    /// MDS to MDS: shard `shard`'s group's part of an `AddMember` or
    /// `RemoveMember`, sent by shard 0's leader, which takes the steps, to
    /// the leader of a group it does not lead (openraft changes a group's
    /// membership only at its leader). Answered with that one group's
    /// count (`MdsResp::Member`, `shards` 1). Only another MDS's
    /// certificate may send it.
    GroupMember { shard: u32, step: GroupStep },
    /// MDS to MDS: `mdsctl fsck` while shards are led by several
    /// processes. Shard 0's leader has each other process that leads a
    /// shard check the files and objects of the shards it leads (`repair`
    /// Some: start a check there, or join the one running; None: its
    /// progress), and adds the reports up (`MdsResp::Fsck`). Only another
    /// MDS's certificate may send it.
    FsckHere { repair: Option<bool> },
    // New variants go last: the order is the wire's discriminant.
}
message!(MdsReq);

/// One group's step of a membership change (`MdsReq::GroupMember`).
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub enum GroupStep {
    /// Add MDS `id` at `addr` as a learner, or make it a voter once it
    /// holds the log about as far as the leader and `vote` allows.
    Add { id: u64, addr: String, vote: bool },
    /// Take MDS `id` out, as a voter and as a node at once.
    Remove { id: u64 },
    /// Sent by the group's leader to the MDS it took out, once that is
    /// committed at log index `index`: drop the group's copy (its
    /// database and its log), unless it has seen a later membership of
    /// the group (added back since).
    Leave { index: u64 },
}

/// Most stale replicas one `DegradedList` reply names.
pub const MAX_DEGRADED_LIST: usize = 10_000;

/// Names one request of one client: a retry after a lost reply (a broken
/// connection, an MDS restart) is answered from what the first attempt
/// recorded, in the same transaction as its change, instead of being
/// applied again.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[rkyv(derive(Debug))]
pub struct ReqId {
    /// Chosen at random by the client for the life of its mount.
    pub client: u64,
    pub seq: u64,
    /// Every request of this client numbered below this one has been
    /// answered: the MDS may forget their records.
    pub oldest: u64,
    /// Sent before: the first attempt may have been applied.
    pub retry: bool,
}

/// What goes on the wire to the MDS: a request, with its id when applying
/// it twice would differ from once (`MdsReq::carries_id`), and who it acts
/// for: the MDS checks permissions for `cred` (common/src/perm.rs), root
/// squashed if the caller's certificate says so, and admin certificates
/// act as root.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub struct MdsCall {
    pub rid: Option<ReqId>,
    pub cred: Cred,
    pub req: MdsReq,
}
message!(MdsCall, |m| match m.req {
    MdsReq::Raft { len, .. } | MdsReq::Shard { len, .. } => len,
    _ => 0,
});

impl MdsCall {
    pub fn new(req: MdsReq, cred: Cred) -> MdsCall {
        MdsCall { rid: None, cred, req }
    }
}

/// A call made as root: tools, OSDs and tests.
impl From<MdsReq> for MdsCall {
    fn from(req: MdsReq) -> Self {
        MdsCall::new(req, Cred::root())
    }
}

/// A change made by a client under a directory's write lease and sent
/// later in a batch (`MdsReq::Apply`). Applying one again after a lost
/// reply changes nothing.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub enum DirOp {
    /// A regular file with a reserved inode number and its layout, made
    /// at `time_ns` by `cred` (checked and owned as a `Create` would be).
    /// `open`: still open on the client (counted as an open until its
    /// `Close`).
    Create { parent: InodeId, name: String, ino: InodeId, layout: Layout, mode: u32, cred: Cred, time_ns: i64, open: bool },
    /// Remove the name `name`, which the client knows as `ino`, for `cred`.
    Unlink { parent: InodeId, name: String, ino: InodeId, time_ns: i64, cred: Cred },
    /// The client closed its last handle of `ino` (as `MdsReq::Close`).
    Close { ino: InodeId },
    /// A directory with a reserved inode number (of the parent's shard),
    /// made at `time_ns` by `cred` (checked and owned as a `Mkdir` would
    /// be). Its maker holds its write lease.
    Mkdir { parent: InodeId, name: String, ino: InodeId, mode: u32, cred: Cred, time_ns: i64 },
    /// Remove the directory `name`, which the client knows as `ino`, holds
    /// the write lease of and knows to be empty, for `cred`.
    Rmdir { parent: InodeId, name: String, ino: InodeId, time_ns: i64, cred: Cred },
}

impl DirOp {
    /// The directory whose entries the change changes (`None`: a close).
    pub fn parent(&self) -> Option<InodeId> {
        match self {
            DirOp::Create { parent, .. } | DirOp::Unlink { parent, .. } | DirOp::Mkdir { parent, .. } | DirOp::Rmdir { parent, .. } => Some(*parent),
            DirOp::Close { .. } => None,
        }
    }

    /// The inode the change is about.
    pub fn ino(&self) -> InodeId {
        match self {
            DirOp::Create { ino, .. } | DirOp::Unlink { ino, .. } | DirOp::Close { ino } | DirOp::Mkdir { ino, .. } | DirOp::Rmdir { ino, .. } => *ino,
        }
    }
}

/// Most links to one inode (a directory: subdirectories plus two).
pub const LINK_MAX: u32 = 65_000;

/// How many inode numbers a client holds in reserve per directory it
/// holds the write lease of (granted with the lease, refilled by `Reserve`).
pub const RESERVE_BATCH: u32 = 512;

/// Most inode numbers one `Unreserve` gives back.
pub const MAX_UNRESERVE: usize = 4096;

/// A directory's write lease granted with a reply, and the first inode
/// numbers reserved for creates there.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub struct Writable {
    pub dir: InodeId,
    pub reserved: Vec<Reserved>,
}

/// One stale replica of an object: object `index` of a file on `osd`.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Hash, Debug, serde::Serialize)]
#[rkyv(derive(Debug))]
pub struct Degraded {
    pub index: u32,
    pub osd: OsdId,
}

/// A reserved inode number and the layout its file gets.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub struct Reserved {
    pub ino: InodeId,
    pub layout: Layout,
    /// Read and write over the file to be made with this number.
    pub cap: Cap,
}

#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub enum MdsResp {
    Err(WireError),
    Attr(Attr),
    /// A lookup's answer for an inode whose shard another MDS process
    /// leads: its attributes, read there, with no lease on them (a lease
    /// on an inode is granted where its shard is led, which recalls it).
    /// The entry is cached under the directory's lease, the attributes
    /// not at all.
    AttrNoLease(Attr),
    Done,
    Bytes(Vec<u8>),
    Names(Vec<String>),
    Dir { entries: Vec<DirEntry>, eof: bool, parent: InodeId },
    Statfs(Statfs),
    OsdMap { epoch: u64, osds: Vec<OsdInfo> },
    /// `reclaimed`: the previous session's locks are the new one's (the
    /// MDS restarted and waited for this client); otherwise they are lost.
    /// `root_squash`: the (uid, gid) this certificate's root acts as,
    /// for the client's own checks of what it answers itself.
    Session { id: SessionId, heartbeat_ms: u64, reclaimed: bool, root_squash: Option<(u32, u32)> },
    Status(ClusterStatus),
    Stripe { policy: Option<LayoutPolicy>, attr: Attr },
    /// A namespace change: the new inode (if one was made or linked) and
    /// the changed directories' attributes after it, so a client need not
    /// ask for them again within its attribute TTL. `writable`: a
    /// directory this client now holds a write lease on, so it may create
    /// and unlink there itself and send the changes later. `cap`: the
    /// capability over a file made (or opened) by the change.
    Changed { attr: Option<Attr>, dirs: Vec<Attr>, writable: Option<Writable>, cap: Option<Cap> },
    /// `attrs[i]` belongs to `entries[i]`.
    /// `no_lease`: the entries whose inode's shard another MDS process
    /// leads; their attributes come with no lease (`AttrNoLease`).
    DirPlus { entries: Vec<DirEntry>, attrs: Vec<Attr>, eof: bool, parent: InodeId, no_lease: Vec<InodeId> },
    Fsck(FsckReport),
    /// A file lease granted (`None` when the session has none to give).
    /// `degraded`: the file's object replicas that are stale (not to be
    /// read, not written until repaired). `cap`: what the OSDs want to see
    /// for the file's objects (read, or read and write).
    Opened { attr: Attr, lease: LeaseMode, degraded: Vec<Degraded>, cap: Cap },
    Leases(Vec<LeaseInfo>),
    /// `GetLock`: the lock in the way, or none.
    Lock(Option<LockInfo>),
    Reserved(Vec<Reserved>),
    /// `Apply`: per change, `None` if it was applied.
    Applied(Vec<Option<WireError>>),
    /// `Cap`: a renewed capability.
    Cap(Cap),
    /// `OsdHeartbeat`: the keys that authenticate capabilities now, and
    /// every revoked owner if the OSD knows fewer than there are.
    OsdBeat { keys: Vec<CapKey>, revoked: Option<Vec<Owner>> },
    /// `Revoke`: the connections closed and the sessions ended.
    RevokeDone { connections: u32, sessions: u32 },
    /// `Revoked`.
    Revoked(Vec<Revocation>),
    /// `DegradedList`, `ClearDegraded`: stale replicas (listed, or no
    /// longer recorded).
    DegradedList(Vec<(InodeId, Degraded)>),
    /// `Raft`: the group's answer, `len` bytes of the MDS's raft codec raw
    /// after the header.
    Raft { len: u64 },
    /// `AddMember`, `RemoveMember`: where that MDS process stands now.
    Member(MemberChange),
    /// `Members`: the MDS processes' addresses.
    Addrs(Vec<String>),
    /// `Shard`: the answer, `len` bytes raw after the header.
    Shard { len: u64 },
    /// `Leader`: the address of the process that leads shard 0's group
    /// ("" when the one asked knows of none).
    Leader { addr: String },
    // New variants go last: the order is the wire's discriminant.
}

/// Where one MDS process stands in the shards' groups during a change of
/// membership.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug, serde::Serialize)]
#[rkyv(derive(Debug))]
pub struct MemberChange {
    pub id: u64,
    pub addr: String,
    /// Groups it votes in, and groups it only learns in.
    pub voter_in: u32,
    pub learner_in: u32,
    pub shards: u32,
    /// Log entries it lacks, summed over the groups it learns in (for a
    /// removal: that the members taking its seats lack).
    pub behind: u64,
    /// For a removal: groups it left short of voters that are still
    /// short (another member joins each in its place).
    pub refilling: u32,
}

/// A revoked certificate: its owner, the name it was issued as, and when.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub struct Revocation {
    pub owner: Owner,
    pub name: String,
    pub at_ms: u64,
}

#[derive(Archive, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub enum LockKind {
    Read = 0,
    Write = 1,
    Unlock = 2,
}

/// A lock a client holds, sent to take it again after an MDS restart.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub struct HeldLock {
    pub ino: InodeId,
    pub owner: u64,
    pub start: u64,
    pub end: u64,
    pub write: bool,
    pub pid: u32,
}

#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub struct LockInfo {
    pub start: u64,
    pub end: u64,
    pub write: bool,
    /// The holder's pid on its own client.
    pub pid: u32,
}
message!(MdsResp);

/// Every MDS reply. `session` is the client session under which the reply
/// granted read leases, if any (DESIGN.md, "Leases"): under a session,
/// the client holds a read lease on every inode whose attributes the reply
/// carries and on the directory it looked up or listed, and may cache them
/// (and a negative lookup) until the MDS recalls them or the session ends.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub struct MdsReply {
    pub session: Option<SessionId>,
    pub resp: MdsResp,
}
message!(MdsReply, |m| match m.resp {
    MdsResp::Raft { len } | MdsResp::Shard { len } => len,
    _ => 0,
});

impl MdsReply {
    /// The response (an error reply becomes `Err`) and the lease session.
    pub fn into_result(self) -> crate::error::Result<(MdsResp, Option<SessionId>)> {
        match self.resp {
            MdsResp::Err(e) => Err(crate::error::Error::from_wire(e.code, &e.msg)),
            r => Ok((r, self.session)),
        }
    }
}

#[derive(Archive, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug, serde::Serialize)]
#[rkyv(derive(Debug))]
pub enum LeaseMode {
    None = 0,
    Read = 1,
    Write = 2,
    SharedWrite = 3,
}

#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug, serde::Serialize)]
#[rkyv(derive(Debug))]
pub struct LeaseInfo {
    pub session: SessionId,
    pub name: String,
    pub mode: LeaseMode,
    /// Asked to give it back and not yet done.
    pub recalled: bool,
}

/// MDS to client, on a stream the MDS opens (DESIGN.md, "Leases").
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub enum RecallReq {
    /// Something the client caches of `ino` changed (its attributes, or
    /// for a directory the entries `names`): drop it, keep the lease.
    Invalidate { ino: InodeId, names: Vec<String> },
    /// Give the lease on `ino` back: flush dirty data and size, drop every
    /// cache of it, then answer. The holder of a directory's write lease
    /// sends the changes it made there and answers `Demoted`.
    Revoke { ino: InodeId },
    /// These replicas of `ino`'s objects are stale (another client could
    /// not write them, or read bad data from them): never read them, nor
    /// write them until repaired. Keeps the lease.
    Degraded { ino: InodeId, objs: Vec<Degraded> },
    /// `ino`'s data now holds `bytes` of disk on the OSDs (`st_blocks`):
    /// the new figure, for the attributes cached. Keeps the lease.
    Allocated { ino: InodeId, bytes: u64 },
}
message!(RecallReq);

#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub enum RecallResp {
    Err(WireError),
    Done,
    /// The write lease became a read lease: every change made under it has
    /// been applied, and what the client caches is still right.
    Demoted,
}
message!(RecallResp);
