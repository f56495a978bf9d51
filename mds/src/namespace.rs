//! Namespace operations over the shards (DESIGN.md, "Metadata").
//!
//! Placement: a directory's entries live in the directory's shard; a file
//! created in D gets its inode from D's shard; a new directory goes to the
//! shard `hash(parent, name) % shards`, unless a client made it under
//! the parent's write lease (applied.rs): then it takes a number reserved
//! in the parent's shard, like a file. So create, lookup, getattr,
//! setattr, unlink and readdir in one directory touch one shard and run as
//! one group-committed job, under the shared side of `topo`.
//!
//! Operations that may touch two shards (mkdir, rmdir, rename, link, and
//! unlink of a name whose inode lives elsewhere) take `topo` exclusively,
//! check everything first, then apply a list of primitive `Step`s grouped
//! per shard, one commit per shard, in an order chosen so that a crash
//! between commits leaves at worst an extra link (a leak a scan reclaims),
//! never a lost file: counts go up before entries appear, entries go away
//! before counts go down, and a renamed entry appears at its new name
//! before it leaves the old one.
//!
//! Permissions are checked inside the transaction that makes the change,
//! against the records it reads (common/src/perm.rs), for the `Cred` the
//! request acts for: a chmod between check and change cannot slip in.
//!
//! Inode numbers are typed (`InodeId`) in every method others call; the
//! tables key by the bare number, so each such method unwraps its ids
//! first, and the private helpers below them work on numbers.
use crate::cluster::Cluster;
use crate::once::{self, Once, Outcome};
use crate::records::{GcJob, InodeRec, Intent, Step};
use crate::store::{Txn, 
    add_gc, get_inode, next_counter, put_inode, IoResult, ShardStore, COOKIES, DEGRADED, DENTRIES, GC, INODES, INTENTS, INTENT_DONE, META,
    LINKABLE, ORPHANS, XATTRS, ALLOCATED,
};
use aifs_common::ids::{mix, InodeId};
use aifs_common::proto::mds::{Attr, Degraded, DirEntry, FileKind, ReqId, SetAttr, TimeSet, MAX_DEGRADED_LIST, RENAME_EXCHANGE, RENAME_NOREPLACE, XATTR_CREATE, XATTR_REPLACE};
use aifs_common::perm::{self, Cred};
use aifs_common::time::now_ns;
use aifs_common::{Error, Layout, LayoutPolicy, OsdId, Result};
use redb::{ReadableTable, ReadableTableMetadata};
use std::sync::Arc;

/// Longest name in a directory, as in most Linux file systems.
pub const NAME_MAX: usize = 255;
/// Longest symlink target.
pub const PATH_MAX: usize = 4096;
/// Largest extended attribute value (Linux's XATTR_SIZE_MAX).
pub const XATTR_SIZE_MAX: usize = 64 * 1024;
/// First readdir cookie for real entries: 1 and 2 are `.` and `..`.
pub const FIRST_COOKIE: u64 = 3;
pub use aifs_common::proto::mds::LINK_MAX;

pub fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(Error::InvalidArgument(format!("bad file name {name:?}")));
    }
    if name.len() > NAME_MAX {
        return Err(Error::NameTooLong);
    }
    Ok(())
}

pub(crate) fn shard_of(ino: u64) -> u32 {
    InodeId(ino).shard()
}

/// What `make_node` makes, and for whom (its owner, as the directory
/// decides: `perm::new_owner`).
struct Node {
    kind: FileKind,
    perm: u32,
    cred: Cred,
    /// Symlinks: the target.
    target: Option<String>,
    /// Device nodes: the device number.
    rdev: u32,
}

pub(crate) fn kind_code(k: FileKind) -> u8 {
    k as u8
}

fn kind_from(c: u8) -> Result<FileKind> {
    match c {
        1 => Ok(FileKind::File),
        2 => Ok(FileKind::Dir),
        3 => Ok(FileKind::Symlink),
        4 => Ok(FileKind::Fifo),
        5 => Ok(FileKind::Socket),
        6 => Ok(FileKind::CharDev),
        7 => Ok(FileKind::BlockDev),
        other => Err(Error::Io(format!("metadata store: bad file kind {other}"))),
    }
}

fn name_hash(parent: u64, name: &str) -> u64 {
    let mut h = mix(parent);
    for b in name.bytes() {
        h = mix(h ^ b as u64);
    }
    h
}

/// Pick the OSDs of a new file's layout: `replicas` distinct OSDs per
/// object, objects spread from a start point derived from the inode so
/// files spread evenly. Object k's replicas are the `replicas` OSDs from
/// position start + k on (chained declustering): each object's first
/// replica is on its own OSD, and an OSD holds first replicas of one object
/// and later replicas of others, so 3 OSDs carry 3 objects of 2 replicas.
/// With fewer OSDs up than the stripe count asks for, the stripe count
/// shrinks (as Lustre does) rather than doubling up first replicas.
pub fn choose_layout(policy: LayoutPolicy, up: &[u32], ino: u64) -> Result<Layout> {
    policy.validate()?;
    let n = up.len();
    let r = policy.replicas as usize;
    if n == 0 {
        return Err(Error::NoSpace("no OSD is up".into()));
    }
    if n < r {
        return Err(Error::NoSpace(format!("{r} replicas need {r} OSDs; {n} up")));
    }
    let count = (policy.stripe_count as usize).min(n);
    let start = (mix(ino) % n as u64) as usize;
    let osds = (0..count).flat_map(|k| (0..r).map(move |j| OsdId(up[(start + k + j) % n]))).collect();
    Ok(Layout { stripe_size: policy.stripe_size, stripe_count: count as u32, replicas: policy.replicas, osds })
}

impl Step {
    fn shard(&self) -> u32 {
        match self {
            Step::InsertEntry { dir, .. } | Step::RemoveEntry { dir, .. } => shard_of(*dir),
            Step::CreateInode { ino, .. }
            | Step::SetParent { ino, .. }
            | Step::AddLink { ino }
            | Step::DropLink { ino }
            | Step::DeleteDir { ino } => shard_of(*ino),
        }
    }
}

fn adjust(v: u64, d: i64) -> u64 {
    if d >= 0 {
        v.saturating_add(d as u64)
    } else {
        v.saturating_sub(d.unsigned_abs())
    }
}

/// Apply one step inside a write transaction. Steps are checked before they
/// are built, so the only errors here are storage errors.
pub(crate) fn apply_step(txn: &Txn, step: Step, now: i64, open: &dyn Fn(u64) -> bool) -> Result<()> {
    let mut inodes = txn.open_table(INODES).io()?;
    match step {
        Step::InsertEntry { dir, name, ino, kind, dir_delta } => {
            let mut d = get_inode(&inodes, dir)?;
            let mut dentries = txn.open_table(DENTRIES).io()?;
            let mut cookies = txn.open_table(COOKIES).io()?;
            if let Some(old) = dentries.remove((dir, name.as_str())).io()? {
                let (_, _, c) = old.value();
                cookies.remove((dir, c)).io()?;
            }
            let cookie = d.next_cookie;
            d.next_cookie += 1;
            dentries.insert((dir, name.as_str()), (ino, kind_code(kind), cookie)).io()?;
            cookies.insert((dir, cookie), name.as_str()).io()?;
            d.entries = adjust(d.entries, dir_delta.0);
            d.nlink = adjust(d.nlink as u64, dir_delta.1) as u32;
            d.mtime_ns = now;
            d.ctime_ns = now;
            put_inode(&mut inodes, dir, &d)?;
        }
        Step::RemoveEntry { dir, name, dir_delta } => {
            let mut d = get_inode(&inodes, dir)?;
            let mut dentries = txn.open_table(DENTRIES).io()?;
            let mut cookies = txn.open_table(COOKIES).io()?;
            if let Some(old) = dentries.remove((dir, name.as_str())).io()? {
                let (_, _, c) = old.value();
                cookies.remove((dir, c)).io()?;
            }
            d.entries = adjust(d.entries, dir_delta.0);
            d.nlink = adjust(d.nlink as u64, dir_delta.1) as u32;
            d.mtime_ns = now;
            d.ctime_ns = now;
            put_inode(&mut inodes, dir, &d)?;
        }
        Step::CreateInode { ino, rec } => put_inode(&mut inodes, ino, &rec)?,
        Step::SetParent { ino, parent } => {
            let mut r = get_inode(&inodes, ino)?;
            r.parent = parent;
            r.ctime_ns = now;
            put_inode(&mut inodes, ino, &r)?;
        }
        Step::AddLink { ino } => {
            let mut r = get_inode(&inodes, ino)?;
            if r.nlink == 0 {
                // A nameless file (O_TMPFILE) gets its first name.
                txn.open_table(ORPHANS).io()?.remove(ino).io()?;
                txn.open_table(LINKABLE).io()?.remove(ino).io()?;
            }
            r.nlink += 1;
            r.ctime_ns = now;
            put_inode(&mut inodes, ino, &r)?;
        }
        Step::DropLink { ino } => {
            let mut r = get_inode(&inodes, ino)?;
            r.nlink = r.nlink.saturating_sub(1);
            r.ctime_ns = now;
            if r.nlink == 0 || r.kind == FileKind::Dir {
                drop(inodes);
                drop_last_link(txn, ino, &r, open)?;
            } else {
                put_inode(&mut inodes, ino, &r)?;
            }
        }
        Step::DeleteDir { ino } => {
            let r = get_inode(&inodes, ino)?;
            drop(inodes);
            delete_inode(txn, ino, &r)?;
        }
    }
    Ok(())
}

/// An inode lost its last name: removed, unless a client has it open (a
/// file only); then it stays, nameless, until the last close.
fn drop_last_link(txn: &Txn, ino: u64, rec: &InodeRec, open: &dyn Fn(u64) -> bool) -> Result<()> {
    if rec.kind == FileKind::File && open(ino) {
        let mut r = rec.clone();
        r.nlink = 0;
        put_inode(&mut txn.open_table(INODES).io()?, ino, &r)?;
        txn.open_table(ORPHANS).io()?.insert(ino, ()).io()?;
        return Ok(());
    }
    delete_inode(txn, ino, rec)
}

/// `rec`'s attributes, with the disk space its data held on the OSDs
/// when last measured (`held`: the `ALLOCATED` table).
fn attr_held(held: &impl ReadableTable<u64, u64>, rec: &InodeRec, ino: u64) -> Result<Attr> {
    let mut a = rec.attr(ino);
    a.allocated = held.get(ino).io()?.map(|v| v.value());
    Ok(a)
}

/// Remove an inode, its xattrs, and queue its objects for deletion.
fn delete_inode(txn: &Txn, ino: u64, rec: &InodeRec) -> Result<()> {
    txn.open_table(INODES).io()?.remove(ino).io()?;
    txn.open_table(ALLOCATED).io()?.remove(ino).io()?;
    txn.open_table(LINKABLE).io()?.remove(ino).io()?;
    let mut x = txn.open_table(XATTRS).io()?;
    let names: Vec<String> = x
        .range((ino, "")..)
        .io()?
        .map_while(|r| r.ok())
        .take_while(|(k, _)| k.value().0 == ino)
        .map(|(k, _)| k.value().1.to_string())
        .collect();
    for n in names {
        x.remove((ino, n.as_str())).io()?;
    }
    if let Some(layout) = &rec.layout {
        add_gc(txn, &GcJob { ino, layout: layout.clone(), truncate_to: None })?;
        let mut d = txn.open_table(DEGRADED).io()?;
        for k in degraded_rows(&d, ino)? {
            d.remove((ino, k.index, k.osd.0)).io()?;
        }
    }
    Ok(())
}

/// The stale replicas recorded for file `ino`.
fn degraded_rows(t: &impl ReadableTable<(u64, u32, u32), ()>, ino: u64) -> Result<Vec<Degraded>> {
    let mut out = Vec::new();
    for r in t.range((ino, 0, 0)..=(ino, u32::MAX, u32::MAX)).io()? {
        let (k, _) = r.io()?;
        let (_, index, osd) = k.value();
        out.push(Degraded { index, osd: OsdId(osd) });
    }
    Ok(out)
}

pub(crate) fn dir_rec(perm: u32, uid: u32, gid: u32, parent: u64, policy: Option<LayoutPolicy>, now: i64) -> InodeRec {
    InodeRec {
        kind: FileKind::Dir,
        perm: perm & 0o7777,
        nlink: 2,
        uid,
        gid,
        size: 0,
        atime_ns: now,
        mtime_ns: now,
        ctime_ns: now,
        layout: None,
        policy,
        parent,
        next_cookie: FIRST_COOKIE,
        entries: 0,
        target: None,
        xattrs: 0,
    }
}

/// What `unlink_here` did.
pub(crate) enum Unlinked {
    /// The name is gone (or was already: a change applied again); the
    /// inode it named.
    Done(u64),
    /// The inode lives on another shard: a two-shard unlink is needed.
    Elsewhere,
}

/// Remove `name` from `parent` inside the parent shard's transaction,
/// when its inode lives there too. `expect`: the inode the caller knows
/// the name as; a missing name is then not an error (already applied).
pub(crate) fn unlink_here(
    txn: &Txn,
    parent: u64,
    name: &str,
    expect: Option<u64>,
    now: i64,
    open: &dyn Fn(u64) -> bool,
    cred: &Cred,
) -> Result<Unlinked> {
    let mut inodes = txn.open_table(INODES).io()?;
    let mut p = get_inode(&inodes, parent)?;
    if p.kind != FileKind::Dir {
        return Err(Error::NotDir);
    }
    perm::access(p.perms(), cred, perm::X)?;
    let mut dentries = txn.open_table(DENTRIES).io()?;
    let (ino, kind, cookie) = match (dentries.get((parent, name)).io()?.map(|v| v.value()), expect) {
        (Some(v), _) => v,
        (None, Some(ino)) => return Ok(Unlinked::Done(ino)),
        (None, None) => return Err(Error::NotFound),
    };
    if expect.is_some_and(|e| e != ino) {
        return Err(Error::Stale);
    }
    if kind_from(kind)? == FileKind::Dir {
        return Err(Error::IsDir);
    }
    if shard_of(ino) != shard_of(parent) {
        return Ok(Unlinked::Elsewhere);
    }
    let mut rec = get_inode(&inodes, ino)?;
    perm::may_delete(p.perms(), rec.uid, cred)?;
    dentries.remove((parent, name)).io()?;
    txn.open_table(COOKIES).io()?.remove((parent, cookie)).io()?;
    p.entries = p.entries.saturating_sub(1);
    p.mtime_ns = now;
    p.ctime_ns = now;
    put_inode(&mut inodes, parent, &p)?;
    rec.nlink = rec.nlink.saturating_sub(1);
    rec.ctime_ns = now;
    if rec.nlink == 0 {
        drop(inodes);
        drop(dentries);
        drop_last_link(txn, ino, &rec, open)?;
    } else {
        put_inode(&mut inodes, ino, &rec)?;
    }
    Ok(Unlinked::Done(ino))
}

/// A new regular file's record: with one name, or none (`nlink` 0, a
/// nameless file: nameless.rs).
pub(crate) fn file_rec(mode: u32, uid: u32, gid: u32, parent: u64, layout: Layout, nlink: u32, now: i64) -> InodeRec {
    InodeRec {
        kind: FileKind::File,
        perm: mode & 0o7777,
        nlink,
        uid,
        gid,
        size: 0,
        atime_ns: now,
        mtime_ns: now,
        ctime_ns: now,
        layout: Some(layout),
        policy: None,
        parent,
        next_cookie: 0,
        entries: 0,
        target: None,
        xattrs: 0,
    }
}

/// Enter a new inode `ino` (in the parent's shard) as `name` in `parent`,
/// whose record `p` the caller read and checked.
pub(crate) fn add_entry(txn: &Txn, mut p: InodeRec, parent: u64, name: &str, ino: u64, rec: &InodeRec, now: i64) -> Result<()> {
    let cookie = p.next_cookie;
    p.next_cookie += 1;
    p.entries += 1;
    p.mtime_ns = now;
    p.ctime_ns = now;
    txn.open_table(DENTRIES).io()?.insert((parent, name), (ino, kind_code(rec.kind), cookie)).io()?;
    txn.open_table(COOKIES).io()?.insert((parent, cookie), name).io()?;
    let mut inodes = txn.open_table(INODES).io()?;
    put_inode(&mut inodes, parent, &p)?;
    put_inode(&mut inodes, ino, rec)
}

/// Result of a create: the attributes and whether this call made the file.
pub struct Created {
    pub attr: Attr,
    pub created: bool,
}

pub struct Namespace {
    pub shards: Vec<Arc<ShardStore>>,
    pub(crate) topo: tokio::sync::RwLock<()>,
    pub cluster: Arc<Cluster>,
    /// Requests with ids being served (once.rs).
    running: once::Running,
    /// Inode numbers reserved per certificate (reservations.rs).
    pub reserved: crate::reservations::Counts,
    /// Inode numbers handed out ahead of a commit (numbers.rs).
    pub(crate) numbers: crate::numbers::Numbers,
}

/// The shard count is part of the on-disk format (inode numbers name
/// shards): `dir` remembers the one it was made with, and refuses another.
pub fn check_shard_count(dir: &std::path::Path, nshards: u32) -> Result<()> {
    if nshards == 0 || nshards > aifs_common::ids::MAX_SHARDS {
        return Err(Error::InvalidArgument(format!("shards must be 1..={}", aifs_common::ids::MAX_SHARDS)));
    }
    let marker = dir.join("shards");
    std::fs::create_dir_all(dir)?;
    match std::fs::read_to_string(&marker) {
        Ok(s) => {
            let have: u32 = s.trim().parse().map_err(|_| Error::Io(format!("{} is corrupt", marker.display())))?;
            if have != nshards {
                return Err(Error::InvalidArgument(format!(
                    "metadata in {} was made with {have} shards, config says {nshards}",
                    dir.display()
                )));
            }
        }
        // only a marker that is not there is made; one that cannot be
        // read is an error, never overwritten
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            crate::store::write_durably(&marker, format!("{nshards}\n").as_bytes())?
        }
        Err(e) => return Err(Error::Io(format!("{}: {e}", marker.display()))),
    }
    Ok(())
}

impl Namespace {
    /// Open (or create) the shards and make the root directory if missing.
    pub async fn open(dir: &std::path::Path, nshards: u32, root_policy: LayoutPolicy, cluster: Arc<Cluster>) -> Result<Self> {
        check_shard_count(dir, nshards)?;
        let mut shards = Vec::new();
        for i in 0..nshards {
            shards.push(Arc::new(ShardStore::open(dir, i).await?));
        }
        // the names of store files just made
        crate::store::sync_dir(dir)?;
        Self::over(shards, root_policy, cluster).await
    }

    /// The namespace over shard stores already open (and led here): makes
    /// the root directory if missing, and finishes what a crash left half
    /// done.
    pub async fn over(shards: Vec<Arc<ShardStore>>, root_policy: LayoutPolicy, cluster: Arc<Cluster>) -> Result<Self> {
        root_policy.validate()?;
        let numbers = crate::numbers::Numbers::new(shards.len());
        let ns = Namespace { shards, topo: tokio::sync::RwLock::new(()), cluster, running: Default::default(), reserved: Default::default(), numbers };
        ns.shard(0)
            .mutate(move |txn| {
                let mut inodes = txn.open_table(INODES).io()?;
                if inodes.get(InodeId::ROOT.0).io()?.is_none() {
                    let rec = dir_rec(0o755, 0, 0, InodeId::ROOT.0, Some(root_policy), now_ns());
                    put_inode(&mut inodes, InodeId::ROOT.0, &rec)?;
                    tracing::info!("created root directory");
                }
                Ok(())
            })
            .await?;
        ns.roll_forward().await?;
        ns.count_reservations().await?;
        Ok(ns)
    }

    /// Serve a request that must not be applied twice (once.rs): held
    /// from its arrival to its answer.
    pub async fn once(&self, rid: Option<ReqId>) -> Result<Once<'_>> {
        self.running.begin(rid, &self.shards).await
    }

    pub fn shard(&self, id: u32) -> &Arc<ShardStore> {
        // Inode numbers from the wire may name a shard that does not exist;
        // those are routed to shard 0, where the inode will not be found.
        self.shards.get(id as usize).unwrap_or(&self.shards[0])
    }

    pub fn shard_for(&self, ino: u64) -> Result<&Arc<ShardStore>> {
        self.shards.get(shard_of(ino) as usize).ok_or(Error::Stale)
    }

    pub async fn getattr(&self, ino: InodeId) -> Result<Attr> {
        let ino = ino.0;
        self.shard_for(ino)?
            .read(move |t| attr_held(&t.open_table(ALLOCATED).io()?, &get_inode(&t.open_table(INODES).io()?, ino)?, ino))
            .await
    }

    /// Record that `ino`'s data holds `bytes` of disk on the OSDs (a file
    /// gone since is left alone).
    pub async fn set_allocated(&self, ino: InodeId, bytes: u64) -> Result<()> {
        let ino = ino.0;
        let _g = self.topo.read().await;
        self.shard_for(ino)?
            .mutate(move |txn| {
                match get_inode(&txn.open_table(INODES).io()?, ino) {
                    Ok(_) => {}
                    Err(Error::NotFound) => return Ok(()),
                    Err(e) => return Err(e),
                }
                txn.open_table(ALLOCATED).io()?.insert(ino, bytes).io()?;
                Ok(())
            })
            .await
    }

    /// Record replicas of `ino`'s objects as stale. Each must be one of
    /// its object's replicas in the file's layout, and each object keeps
    /// one replica not recorded: a report that would leave none (every
    /// copy missed the write, so the write failed) is refused whole.
    pub async fn mark_degraded(&self, ino: InodeId, objs: Vec<Degraded>) -> Result<()> {
        let ino = ino.0;
        self.shard_for(ino)?
            .mutate(move |txn| {
                let rec = get_inode(&txn.open_table(INODES).io()?, ino)?;
                let layout = rec.layout.ok_or(Error::IsDir)?;
                let mut d = txn.open_table(DEGRADED).io()?;
                for o in &objs {
                    if o.index >= layout.stripe_count || !layout.object_osds(o.index).contains(&o.osd) {
                        return Err(Error::InvalidArgument(format!("{} holds no replica of object {} of inode {ino}", o.osd, o.index)));
                    }
                    d.insert((ino, o.index, o.osd.0), ()).io()?;
                }
                let stale = degraded_rows(&d, ino)?;
                for o in &objs {
                    let replicas = layout.object_osds(o.index);
                    if replicas.iter().all(|r| stale.contains(&Degraded { index: o.index, osd: *r })) {
                        return Err(Error::Io(format!("object {} of inode {ino:#x} would have no healthy replica left", o.index)));
                    }
                }
                Ok(())
            })
            .await
    }

    /// Stale replicas recorded: of `ino`, or of every file (the first
    /// `MAX_DEGRADED_LIST`).
    pub async fn list_degraded(&self, ino: Option<InodeId>) -> Result<Vec<(InodeId, Degraded)>> {
        let shards = match ino {
            Some(i) => vec![self.shard_for(i.0)?.clone()],
            None => self.shards.clone(),
        };
        let mut out = Vec::new();
        for s in shards {
            let left = MAX_DEGRADED_LIST.saturating_sub(out.len());
            out.extend(
                s.read(move |t| {
                    let d = t.open_table(DEGRADED).io()?;
                    let mut v = Vec::new();
                    let rows = match ino {
                        Some(i) => d.range((i.0, 0, 0)..=(i.0, u32::MAX, u32::MAX)).io()?,
                        None => d.iter().io()?,
                    };
                    for r in rows.take(left) {
                        let (ino, index, osd) = r.io()?.0.value();
                        v.push((InodeId(ino), Degraded { index, osd: OsdId(osd) }));
                    }
                    Ok(v)
                })
                .await?,
            );
        }
        Ok(out)
    }

    /// Forget the stale-replica records of `ino` (those of object `index`
    /// and/or on `osd` if given); returns those forgotten.
    pub async fn clear_degraded(&self, ino: InodeId, index: Option<u32>, osd: Option<OsdId>) -> Result<Vec<(InodeId, Degraded)>> {
        let i = ino.0;
        self.shard_for(i)?
            .mutate(move |txn| {
                get_inode(&txn.open_table(INODES).io()?, i)?;
                let mut d = txn.open_table(DEGRADED).io()?;
                let gone: Vec<Degraded> = degraded_rows(&d, i)?
                    .into_iter()
                    .filter(|g| index.is_none_or(|k| g.index == k) && osd.is_none_or(|o| g.osd == o))
                    .collect();
                for g in &gone {
                    d.remove((i, g.index, g.osd.0)).io()?;
                }
                Ok(gone.into_iter().map(|g| (ino, g)).collect())
            })
            .await
    }

    /// Object `index` of file `ino` now lives on `to` instead of `from`
    /// (which was taken out), once `to` holds a durable copy. False when the
    /// layout no longer has `from` there (changed meanwhile).
    pub async fn move_replica(&self, ino: InodeId, index: u32, from: u32, to: u32) -> Result<bool> {
        let ino = ino.0;
        self.shard_for(ino)?
            .mutate(move |txn| {
                let mut inodes = txn.open_table(INODES).io()?;
                let mut rec = get_inode(&inodes, ino)?;
                let Some(layout) = rec.layout.as_mut() else { return Ok(false) };
                let r = layout.replicas as usize;
                let slots = index as usize * r..(index as usize + 1) * r;
                let Some(pos) = slots.clone().find(|&i| layout.osds.get(i) == Some(&OsdId(from))) else { return Ok(false) };
                if layout.osds[slots].contains(&OsdId(to)) {
                    return Ok(false);
                }
                layout.osds[pos] = OsdId(to);
                put_inode(&mut inodes, ino, &rec)?;
                txn.open_table(DEGRADED).io()?.remove((ino, index, from)).io()?;
                Ok(true)
            })
            .await
    }

    /// The stale replicas of file `ino`'s objects.
    pub async fn degraded(&self, ino: InodeId) -> Result<Vec<Degraded>> {
        let ino = ino.0;
        self.shard_for(ino)?.read(move |t| degraded_rows(&t.open_table(DEGRADED).io()?, ino)).await
    }

    async fn inode(&self, ino: u64) -> Result<InodeRec> {
        self.shard_for(ino)?.read(move |t| get_inode(&t.open_table(INODES).io()?, ino)).await
    }

    /// The entry `name` in `parent`: (ino, kind). ENOTDIR if parent is not a
    /// directory; for `cred`, when given, EACCES if it may not search it.
    async fn entry_as(&self, parent: u64, name: &str, cred: Option<&Cred>) -> Result<(u64, FileKind)> {
        check_name(name)?;
        let name = name.to_string();
        let cred = cred.cloned();
        self.shard_for(parent)?
            .read(move |t| {
                let p = get_inode(&t.open_table(INODES).io()?, parent)?;
                if p.kind != FileKind::Dir {
                    return Err(Error::NotDir);
                }
                if let Some(c) = &cred {
                    perm::access(p.perms(), c, perm::X)?;
                }
                match t.open_table(DENTRIES).io()?.get((parent, name.as_str())).io()? {
                    Some(v) => {
                        let (ino, k, _) = v.value();
                        Ok((ino, kind_from(k)?))
                    }
                    None => Err(Error::NotFound),
                }
            })
            .await
    }

    pub async fn lookup(&self, parent: InodeId, name: &str, cred: &Cred) -> Result<Attr> {
        let parent = parent.0;
        let (ino, _) = self.entry_as(parent, name, Some(cred)).await?;
        self.getattr(InodeId(ino)).await
    }

    pub async fn readdir(&self, ino: InodeId, cookie: u64, max: u32, cred: &Cred) -> Result<(Vec<DirEntry>, bool, InodeId)> {
        let ino = ino.0;
        let max = max.clamp(1, 4096) as usize;
        let cred = cred.clone();
        self.shard_for(ino)?
            .read(move |t| {
                let d = get_inode(&t.open_table(INODES).io()?, ino)?;
                if d.kind != FileKind::Dir {
                    return Err(Error::NotDir);
                }
                perm::access(d.perms(), &cred, perm::R)?;
                let cookies = t.open_table(COOKIES).io()?;
                let dentries = t.open_table(DENTRIES).io()?;
                let mut out = Vec::new();
                let mut eof = true;
                for r in cookies.range((ino, cookie.saturating_add(1))..=(ino, u64::MAX)).io()? {
                    let (k, v) = r.io()?;
                    if out.len() >= max {
                        eof = false;
                        break;
                    }
                    let name = v.value().to_string();
                    if let Some(e) = dentries.get((ino, name.as_str())).io()? {
                        let (child, kind, _) = e.value();
                        out.push(DirEntry { name, ino: InodeId(child), kind: kind_from(kind)?, cookie: k.value().1 });
                    }
                }
                Ok((out, eof, InodeId(d.parent)))
            })
            .await
    }

    /// Entries of a readdir with their attributes: one read per shard the
    /// inodes live on. An entry whose inode vanished in between is left out.
    pub async fn with_attrs(&self, entries: Vec<DirEntry>) -> Result<Vec<(DirEntry, Attr)>> {
        let mut by_shard: std::collections::BTreeMap<u32, Vec<u64>> = std::collections::BTreeMap::new();
        for e in &entries {
            by_shard.entry(e.ino.shard()).or_default().push(e.ino.0);
        }
        let mut attrs: std::collections::HashMap<InodeId, Attr> = std::collections::HashMap::new();
        for (sh, inos) in by_shard {
            let Some(shard) = self.shards.get(sh as usize) else {
                continue;
            };
            let got = shard
                .read(move |t| {
                    let table = t.open_table(INODES).io()?;
                    let held = t.open_table(ALLOCATED).io()?;
                    let mut v = Vec::with_capacity(inos.len());
                    for i in inos {
                        match get_inode(&table, i) {
                            Ok(r) => v.push(attr_held(&held, &r, i)?),
                            Err(Error::NotFound) => {}
                            Err(e) => return Err(e),
                        }
                    }
                    Ok(v)
                })
                .await?;
            attrs.extend(got.into_iter().map(|a| (a.ino, a)));
        }
        Ok(entries.into_iter().filter_map(|e| attrs.get(&e.ino).cloned().map(|a| (e, a))).collect())
    }

    /// Free the nameless files no client has open any more; returns how
    /// many. Run at the last close of a file, after a session ends, and at
    /// start (when nothing is open).
    pub async fn purge_orphans(&self) -> Result<usize> {
        let mut freed = 0;
        for shard in &self.shards {
            let listed = shard
                .read(|t| {
                    let mut v = Vec::new();
                    for r in t.open_table(ORPHANS).io()?.iter().io()? {
                        v.push(r.io()?.0.value());
                    }
                    Ok(v)
                })
                .await?;
            let done: Vec<u64> = listed.into_iter().filter(|i| !self.cluster.is_open(InodeId(*i))).collect();
            if done.is_empty() {
                continue;
            }
            freed += done.len();
            let cluster = self.cluster.clone();
            shard
                .mutate(move |txn| {
                    for &ino in &done {
                        if cluster.is_open(InodeId(ino)) {
                            continue;
                        }
                        txn.open_table(ORPHANS).io()?.remove(ino).io()?;
                        let rec = match get_inode(&txn.open_table(INODES).io()?, ino) {
                            Ok(r) if r.nlink == 0 => r,
                            Ok(_) | Err(Error::NotFound) => continue,
                            Err(e) => return Err(e),
                        };
                        delete_inode(txn, ino, &rec)?;
                    }
                    Ok(())
                })
                .await?;
        }
        Ok(freed)
    }

    pub async fn readlink(&self, ino: InodeId) -> Result<Vec<u8>> {
        let ino = ino.0;
        let r = self.inode(ino).await?;
        match (r.kind, r.target) {
            (FileKind::Symlink, Some(t)) => Ok(t.into_bytes()),
            _ => Err(Error::InvalidArgument("not a symlink".into())),
        }
    }

    /// Create a regular file, or (not exclusive) open the existing one.
    pub async fn create(&self, parent: InodeId, name: &str, mode: u32, cred: &Cred, exclusive: bool, once: &Once<'_>) -> Result<Created> {
        let parent = parent.0;
        check_name(name)?;
        if let Some((ino, _)) = once.done {
            return Ok(Created { attr: self.getattr(InodeId(ino)).await?, created: true });
        }
        let rid = once.rid;
        let up = self.cluster.placeable_osds();
        let name = name.to_string();
        let cred = cred.clone();
        let _g = self.topo.read().await;
        let shard = self.shard_for(parent)?.clone();
        let sid = shard.id;
        shard
            .mutate(move |txn| {
                let now = now_ns();
                let inodes = txn.open_table(INODES).io()?;
                let p = get_inode(&inodes, parent)?;
                if p.kind != FileKind::Dir {
                    return Err(Error::NotDir);
                }
                perm::access(p.perms(), &cred, perm::X)?;
                let dentries = txn.open_table(DENTRIES).io()?;
                let existing = dentries.get((parent, name.as_str())).io()?.map(|v| v.value());
                if let Some((ino, kind, _)) = existing {
                    if exclusive {
                        return Err(Error::Exists);
                    }
                    return match kind_from(kind)? {
                        FileKind::Dir => Err(Error::IsDir),
                        // The inode may live on another shard (a link or a
                        // rename brought it here): answered from a read.
                        _ => Ok(Created { attr: Attr { ino: InodeId(ino), ..placeholder_attr() }, created: false }),
                    };
                }
                perm::may_create(p.perms(), &cred)?;
                let (uid, gid, mode) = perm::new_owner(p.perms(), &cred, FileKind::File, mode);
                let mut meta = txn.open_table(META).io()?;
                let seq = next_counter(&mut meta, "next_seq", crate::numbers::first_seq(sid))?;
                let ino = InodeId::new(sid, seq).0;
                let layout = choose_layout(p.policy.unwrap_or_default(), &up, ino)?;
                let rec = file_rec(mode, uid, gid, parent, layout, 1, now);
                drop((inodes, dentries, meta));
                add_entry(txn, p, parent, &name, ino, &rec, now)?;
                once::record(txn, rid, (ino, 0))?;
                Ok(Created { attr: rec.attr(ino), created: true })
            })
            .await?
            .resolve(self)
            .await
    }


    pub async fn symlink(&self, parent: InodeId, name: &str, target: &str, cred: &Cred, once: &Once<'_>) -> Result<Attr> {
        if target.is_empty() {
            return Err(Error::NotFound);
        }
        if target.len() > PATH_MAX {
            return Err(Error::NameTooLong);
        }
        let node = Node { kind: FileKind::Symlink, perm: 0o777, cred: cred.clone(), target: Some(target.to_string()), rdev: 0 };
        self.make_node(parent, name, node, once).await
    }

    /// A special file (FIFO, socket, device node) of `kind`; device nodes
    /// for root alone.
    #[allow(clippy::too_many_arguments)]
    pub async fn mknod(&self, parent: InodeId, name: &str, kind: FileKind, mode: u32, cred: &Cred, rdev: u32, once: &Once<'_>) -> Result<Attr> {
        if !matches!(kind, FileKind::Fifo | FileKind::Socket | FileKind::CharDev | FileKind::BlockDev) {
            return Err(Error::InvalidArgument(format!("mknod makes special files, not {kind:?}")));
        }
        if kind.is_device() && !cred.is_root() {
            return Err(Error::NotPermitted("only root makes device nodes".into()));
        }
        let rdev = if kind.is_device() { rdev } else { 0 };
        let node = Node { kind, perm: mode & 0o7777, cred: cred.clone(), target: None, rdev };
        self.make_node(parent, name, node, once).await
    }

    /// A new inode of no data (a symlink, a special file) named `name` in
    /// `parent`.
    async fn make_node(&self, parent: InodeId, name: &str, node: Node, once: &Once<'_>) -> Result<Attr> {
        let parent = parent.0;
        check_name(name)?;
        if let Some((ino, _)) = once.done {
            return self.getattr(InodeId(ino)).await;
        }
        let rid = once.rid;
        let name = name.to_string();
        let _g = self.topo.read().await;
        let shard = self.shard_for(parent)?.clone();
        let sid = shard.id;
        shard
            .mutate(move |txn| {
                let now = now_ns();
                let p = get_inode(&txn.open_table(INODES).io()?, parent)?;
                if p.kind != FileKind::Dir {
                    return Err(Error::NotDir);
                }
                perm::access(p.perms(), &node.cred, perm::X)?;
                if txn.open_table(DENTRIES).io()?.get((parent, name.as_str())).io()?.is_some() {
                    return Err(Error::Exists);
                }
                perm::may_create(p.perms(), &node.cred)?;
                let (uid, gid, perm) = perm::new_owner(p.perms(), &node.cred, node.kind, node.perm);
                let mut meta = txn.open_table(META).io()?;
                let seq = next_counter(&mut meta, "next_seq", crate::numbers::first_seq(sid))?;
                let ino = InodeId::new(sid, seq).0;
                let rec = InodeRec {
                    kind: node.kind,
                    perm,
                    nlink: 1,
                    uid,
                    gid,
                    // a device node's number (records.rs)
                    size: u64::from(node.rdev),
                    atime_ns: now,
                    mtime_ns: now,
                    ctime_ns: now,
                    layout: None,
                    policy: None,
                    parent,
                    next_cookie: 0,
                    entries: 0,
                    target: node.target.clone(),
                    xattrs: 0,
                };
                add_entry(txn, p, parent, &name, ino, &rec, now)?;
                once::record(txn, rid, (ino, 0))?;
                Ok(rec.attr(ino))
            })
            .await
    }

    /// Run steps grouped by shard, one commit per shard, shards in the order
    /// they first appear; the first commit records `rid`'s outcome. With
    /// more than one commit, the first also records the rest (an `Intent`)
    /// and each later one marks itself done in its own shard, so a crash in
    /// between is rolled forward at start (`roll_forward`): the operation
    /// happens whole, and a retry of it is answered from the record.
    async fn run_steps(&self, steps: Vec<Step>, rid: Option<ReqId>, out: Outcome) -> Result<()> {
        let (first, id, rest) = self.first_commit(steps, rid, out).await?;
        let shards: Vec<u32> = rest.iter().map(|(sh, _)| *sh).collect();
        for (k, (sh, steps)) in rest.into_iter().enumerate() {
            self.intent_commit(first, id, k as u32, sh, steps, false).await?;
        }
        if id != 0 {
            self.forget_intent(first, id, shards);
        }
        Ok(())
    }

    /// The first commit of `run_steps`: its shard, the intent's id (0:
    /// none needed) and the commits still to make.
    async fn first_commit(&self, steps: Vec<Step>, rid: Option<ReqId>, out: Outcome) -> Result<(u32, u64, Vec<(u32, Vec<Step>)>)> {
        let mut groups: Vec<(u32, Vec<Step>)> = Vec::new();
        for s in steps {
            let sh = s.shard();
            // Merge only into the last group, so the order across shards holds.
            match groups.last_mut() {
                Some((g, v)) if *g == sh => v.push(s),
                _ => groups.push((sh, vec![s])),
            }
        }
        let mut groups = groups.into_iter();
        let Some((first, steps)) = groups.next() else { return Ok((0, 0, Vec::new())) };
        let rest: Vec<(u32, Vec<Step>)> = groups.collect();
        let intent = match rest.is_empty() {
            true => None,
            false => Some(Intent { rest: rest.clone() }.encode()?),
        };
        let cluster = self.cluster.clone();
        let id = self
            .shard(first)
            .mutate(move |txn| {
                let now = now_ns();
                let open = |ino| cluster.is_open(InodeId(ino));
                for s in steps.iter().cloned() {
                    apply_step(txn, s, now, &open)?;
                }
                once::record(txn, rid, out)?;
                let Some(bytes) = &intent else { return Ok(0) };
                let id = next_counter(&mut txn.open_table(META).io()?, "next_intent", 1)?;
                txn.open_table(INTENTS).io()?.insert(id, bytes.as_slice()).io()?;
                Ok(id)
            })
            .await?;
        Ok((first, id, rest))
    }

    /// Commit `k` after the first of intent `id` (of shard `coord`): its
    /// steps and the mark that it is done, unless the mark is there already.
    /// When rolling forward after a crash (`replay`), every file counts as
    /// open: one that loses its last name stays until after the clients of
    /// the last run have had the chance to say they have it open.
    async fn intent_commit(&self, coord: u32, id: u64, k: u32, sh: u32, steps: Vec<Step>, replay: bool) -> Result<()> {
        let cluster = self.cluster.clone();
        self.shard(sh)
            .mutate(move |txn| {
                let mut marks = txn.open_table(INTENT_DONE).io()?;
                if marks.get((coord, id, k)).io()?.is_some() {
                    return Ok(());
                }
                marks.insert((coord, id, k), ()).io()?;
                drop(marks);
                let now = now_ns();
                let open = |ino| replay || cluster.is_open(InodeId(ino));
                for s in steps.iter().cloned() {
                    apply_step(txn, s, now, &open)?;
                }
                Ok(())
            })
            .await
    }

    /// Every commit of intent `id` is made: drop it, then its marks (in
    /// that order: marks without an intent are only clutter, an intent
    /// without its marks would be applied again).
    fn forget_intent(&self, coord: u32, id: u64, mut shards: Vec<u32>) {
        shards.sort_unstable();
        shards.dedup();
        let c = self.shard(coord).clone();
        let others: Vec<Arc<ShardStore>> = shards.iter().map(|s| self.shard(*s).clone()).collect();
        tokio::spawn(async move {
            if let Err(e) = c.mutate(move |txn| txn.open_table(INTENTS).io()?.remove(id).io().map(|_| ())).await {
                e.log("dropping a finished intent failed");
                return;
            }
            for s in others {
                let r = s.mutate(move |txn| txn.open_table(INTENT_DONE).io()?.retain_in((coord, id, 0)..=(coord, id, u32::MAX), |_, _| false).io());
                if let Err(e) = r.await {
                    e.log("dropping an intent's marks failed");
                }
            }
        });
    }

    /// At start: finish every operation over several shards that a crash
    /// cut short after its first commit, then drop every mark.
    async fn roll_forward(&self) -> Result<()> {
        for coord in 0..self.shards.len() as u32 {
            let intents = self
                .shard(coord)
                .read(|t| {
                    let mut v = Vec::new();
                    for r in t.open_table(INTENTS).io()?.iter().io()? {
                        let (k, val) = r.io()?;
                        v.push((k.value(), Intent::decode(val.value())));
                    }
                    Ok(v)
                })
                .await?;
            for (id, intent) in intents {
                match intent {
                    Ok(intent) => {
                        tracing::warn!(shard = coord, intent = id, commits = intent.rest.len(), "finishing an operation over several shards that a crash cut short");
                        for (k, (sh, steps)) in intent.rest.into_iter().enumerate() {
                            if let Err(e) = self.intent_commit(coord, id, k as u32, sh, steps, true).await {
                                e.log("rolling an intent forward failed");
                            }
                        }
                    }
                    Err(e) => e.log("an unreadable intent is dropped"),
                }
                self.shard(coord).mutate(move |txn| txn.open_table(INTENTS).io()?.remove(id).io().map(|_| ())).await?;
            }
        }
        for s in &self.shards {
            s.mutate(|txn| txn.open_table(INTENT_DONE).io()?.retain(|_, _| false).io()).await?;
        }
        Ok(())
    }

    pub async fn mkdir(&self, parent: InodeId, name: &str, mode: u32, cred: &Cred, once: &Once<'_>) -> Result<Attr> {
        let parent = parent.0;
        check_name(name)?;
        if let Some((ino, _)) = once.done {
            return self.getattr(InodeId(ino)).await;
        }
        let rid = once.rid;
        let _g = self.topo.write().await;
        let p = self.inode(parent).await?;
        match self.entry_as(parent, name, Some(cred)).await {
            Ok(_) => return Err(Error::Exists),
            Err(Error::NotFound) => {}
            Err(e) => return Err(e),
        }
        perm::may_create(p.perms(), cred)?;
        if p.nlink >= LINK_MAX {
            return Err(Error::TooManyLinks);
        }
        let target = (name_hash(parent, name) % self.shards.len() as u64) as u32;
        let ino = self.numbers.take(self.shard(target)).await?.0;
        let (uid, gid, mode) = perm::new_owner(p.perms(), cred, FileKind::Dir, mode);
        let rec = dir_rec(mode, uid, gid, parent, p.policy, now_ns());
        let attr = rec.attr(ino);
        self.run_steps(
            vec![
                Step::CreateInode { ino, rec },
                Step::InsertEntry { dir: parent, name: name.to_string(), ino, kind: FileKind::Dir, dir_delta: (1, 1) },
            ],
            rid,
            (ino, 0),
        )
        .await?;
        Ok(attr)
    }

    /// Returns the unlinked inode.
    pub async fn unlink(&self, parent: InodeId, name: &str, cred: &Cred, once: &Once<'_>) -> Result<InodeId> {
        self.unlink_in(parent.0, name, cred, once).await.map(InodeId)
    }

    async fn unlink_in(&self, parent: u64, name: &str, cred: &Cred, once: &Once<'_>) -> Result<u64> {
        check_name(name)?;
        if let Some((ino, _)) = once.done {
            return Ok(ino);
        }
        let rid = once.rid;
        {
            // Fast path: the entry and its inode share the directory's shard.
            let _g = self.topo.read().await;
            let name = name.to_string();
            let cluster = self.cluster.clone();
            let c = cred.clone();
            let r = self
                .shard_for(parent)?
                .mutate(move |txn| match unlink_here(txn, parent, &name, None, now_ns(), &|i| cluster.is_open(InodeId(i)), &c)? {
                    Unlinked::Done(ino) => once::record(txn, rid, (ino, 0)).map(|_| Some(ino)),
                    Unlinked::Elsewhere => Ok(None),
                })
                .await?;
            if let Some(ino) = r {
                return Ok(ino);
            }
        }
        let _g = self.topo.write().await;
        let (ino, kind) = self.entry_as(parent, name, Some(cred)).await?;
        if kind == FileKind::Dir {
            return Err(Error::IsDir);
        }
        perm::may_delete(self.inode(parent).await?.perms(), self.inode(ino).await?.uid, cred)?;
        self.run_steps(vec![Step::RemoveEntry { dir: parent, name: name.to_string(), dir_delta: (-1, 0) }, Step::DropLink { ino }], rid, (ino, 0))
            .await?;
        Ok(ino)
    }

    /// Returns the removed directory.
    pub async fn rmdir(&self, parent: InodeId, name: &str, cred: &Cred, once: &Once<'_>) -> Result<InodeId> {
        self.rmdir_in(parent.0, name, cred, once).await.map(InodeId)
    }

    async fn rmdir_in(&self, parent: u64, name: &str, cred: &Cred, once: &Once<'_>) -> Result<u64> {
        check_name(name)?;
        if let Some((ino, _)) = once.done {
            return Ok(ino);
        }
        let rid = once.rid;
        let _g = self.topo.write().await;
        let (ino, kind) = self.entry_as(parent, name, Some(cred)).await?;
        if kind != FileKind::Dir {
            return Err(Error::NotDir);
        }
        let d = self.inode(ino).await?;
        perm::may_delete(self.inode(parent).await?.perms(), d.uid, cred)?;
        if d.entries > 0 {
            return Err(Error::NotEmpty);
        }
        self.run_steps(vec![Step::RemoveEntry { dir: parent, name: name.to_string(), dir_delta: (-1, -1) }, Step::DeleteDir { ino }], rid, (ino, 0))
            .await?;
        Ok(ino)
    }

    /// A new name for `ino`. A nameless file gets one only if it was made
    /// linkable (`O_TMPFILE` without `O_EXCL`) and the caller has it open
    /// (`opened`); otherwise ENOENT, as Linux answers.
    pub async fn link(&self, ino: InodeId, newparent: InodeId, newname: &str, cred: &Cred, opened: bool, once: &Once<'_>) -> Result<Attr> {
        let (ino, newparent) = (ino.0, newparent.0);
        check_name(newname)?;
        if once.done.is_some() {
            return self.getattr(InodeId(ino)).await;
        }
        let rid = once.rid;
        let _g = self.topo.write().await;
        let r = self.inode(ino).await?;
        if r.kind == FileKind::Dir {
            return Err(Error::NotPermitted("hard link to a directory".into()));
        }
        if r.nlink >= LINK_MAX {
            return Err(Error::TooManyLinks);
        }
        if r.nlink == 0 && !(opened && self.linkable(ino).await?) {
            return Err(Error::NotFound);
        }
        match self.entry_as(newparent, newname, Some(cred)).await {
            Ok(_) => return Err(Error::Exists),
            Err(Error::NotFound) => {}
            Err(e) => return Err(e),
        }
        perm::may_create(self.inode(newparent).await?.perms(), cred)?;
        self.run_steps(
            vec![Step::AddLink { ino }, Step::InsertEntry { dir: newparent, name: newname.to_string(), ino, kind: r.kind, dir_delta: (1, 0) }],
            rid,
            (ino, 0),
        )
        .await?;
        self.getattr(InodeId(ino)).await
    }

    /// Is `dir` equal to `ancestor` or below it?
    async fn is_within(&self, mut dir: u64, ancestor: u64) -> Result<bool> {
        for _ in 0..4096 {
            if dir == ancestor {
                return Ok(true);
            }
            if dir == InodeId::ROOT.0 {
                return Ok(false);
            }
            dir = self.inode(dir).await?.parent;
        }
        Err(Error::Io("directory tree too deep or looped".into()))
    }

    /// May `cred` move `ino` out of `parent` into `newparent` (`np`),
    /// replacing `target`? As an unlink from one and a create (or unlink)
    /// in the other; a directory that changes parent must be writable too
    /// (its `..` changes).
    async fn may_rename(&self, parent: u64, ino: u64, newparent: u64, np: &InodeRec, target: Option<u64>, cred: &Cred) -> Result<()> {
        let src = self.inode(ino).await?;
        perm::may_delete(self.inode(parent).await?.perms(), src.uid, cred)?;
        match target {
            Some(t) => perm::may_delete(np.perms(), self.inode(t).await?.uid, cred)?,
            None => perm::may_create(np.perms(), cred)?,
        }
        if src.kind == FileKind::Dir && newparent != parent {
            perm::access(src.perms(), cred, perm::W)?;
        }
        Ok(())
    }

    /// Returns the moved inode and the one its new name replaced, if any.
    pub async fn rename(
        &self,
        parent: InodeId,
        name: &str,
        newparent: InodeId,
        newname: &str,
        flags: u32,
        cred: &Cred,
        once: &Once<'_>,
    ) -> Result<(InodeId, Option<InodeId>)> {
        let (moved, replaced) = self.rename_in(parent.0, name, newparent.0, newname, flags, cred, once).await?;
        Ok((InodeId(moved), replaced.map(InodeId)))
    }

    #[allow(clippy::too_many_arguments)]
    async fn rename_in(&self, parent: u64, name: &str, newparent: u64, newname: &str, flags: u32, cred: &Cred, once: &Once<'_>) -> Result<(u64, Option<u64>)> {
        check_name(name)?;
        check_name(newname)?;
        if let Some((moved, replaced)) = once.done {
            return Ok((moved, (replaced != 0).then_some(replaced)));
        }
        let rid = once.rid;
        if flags == RENAME_EXCHANGE {
            return self.exchange(parent, name, newparent, newname, cred, rid).await;
        }
        if flags & !RENAME_NOREPLACE != 0 {
            return Err(Error::InvalidArgument(format!("rename flags {flags:#x} not supported")));
        }
        let _g = self.topo.write().await;
        let (ino, kind) = self.entry_as(parent, name, Some(cred)).await?;
        let np = self.inode(newparent).await?;
        if np.kind != FileKind::Dir {
            return Err(Error::NotDir);
        }
        let target = match self.entry_as(newparent, newname, Some(cred)).await {
            Ok(t) => Some(t),
            Err(Error::NotFound) => None,
            Err(e) => return Err(e),
        };
        if parent == newparent && name == newname {
            return Ok((ino, None));
        }
        self.may_rename(parent, ino, newparent, &np, target.map(|t| t.0), cred).await?;
        if kind == FileKind::Dir && parent != newparent && self.is_within(newparent, ino).await? {
            return Err(Error::InvalidArgument("cannot move a directory into itself".into()));
        }
        let mut steps = Vec::new();
        let is_dir = kind == FileKind::Dir;
        let moving_dir_across = is_dir && parent != newparent;
        if moving_dir_across && target.is_none() && np.nlink >= LINK_MAX {
            return Err(Error::TooManyLinks);
        }
        if !is_dir {
            // Hold an extra link while the file has two names, so a crash
            // between the shards' commits leaves a leak, never a name whose
            // unlink frees data the other name still points to.
            steps.push(Step::AddLink { ino });
        }
        if let Some((tino, tkind)) = target {
            if flags & RENAME_NOREPLACE != 0 {
                return Err(Error::Exists);
            }
            if tino == ino {
                // Two names of one inode: POSIX says do nothing.
                return Ok((ino, None));
            }
            match (is_dir, tkind == FileKind::Dir) {
                (true, false) => return Err(Error::NotDir),
                (false, true) => return Err(Error::IsDir),
                (true, true) => {
                    if self.inode(tino).await?.entries > 0 {
                        return Err(Error::NotEmpty);
                    }
                }
                (false, false) => {}
            }
            // The new name replaces the target: entries unchanged there,
            // one fewer subdirectory if a directory replaced a directory and
            // the moved one came from elsewhere.
            let nl = if is_dir && moving_dir_across { 0 } else if is_dir { -1 } else { 0 };
            steps.push(Step::InsertEntry { dir: newparent, name: newname.to_string(), ino, kind, dir_delta: (0, nl) });
            let src_nl = if moving_dir_across { -1 } else { 0 };
            steps.push(Step::RemoveEntry { dir: parent, name: name.to_string(), dir_delta: (-1, src_nl) });
            if tkind == FileKind::Dir {
                steps.push(Step::DeleteDir { ino: tino });
            } else {
                steps.push(Step::DropLink { ino: tino });
            }
        } else {
            let nl = if moving_dir_across { 1 } else { 0 };
            steps.push(Step::InsertEntry { dir: newparent, name: newname.to_string(), ino, kind, dir_delta: (1, nl) });
            steps.push(Step::RemoveEntry { dir: parent, name: name.to_string(), dir_delta: (-1, -nl) });
        }
        if moving_dir_across {
            steps.push(Step::SetParent { ino, parent: newparent });
        }
        if !is_dir {
            steps.push(Step::DropLink { ino });
        }
        let replaced = target.map(|t| t.0);
        self.run_steps(steps, rid, (ino, replaced.unwrap_or(0))).await?;
        Ok((ino, replaced))
    }

    /// `renameat2(RENAME_EXCHANGE)`: `parent/name` and `newparent/newname`
    /// swap inodes, atomically, over shards too (one intent). Each move is
    /// checked as a rename replacing the other; a directory that changes
    /// parent takes its subdirectory link along.
    async fn exchange(&self, parent: u64, name: &str, newparent: u64, newname: &str, cred: &Cred, rid: Option<ReqId>) -> Result<(u64, Option<u64>)> {
        let _g = self.topo.write().await;
        let (a, akind) = self.entry_as(parent, name, Some(cred)).await?;
        let (b, bkind) = self.entry_as(newparent, newname, Some(cred)).await?;
        if a == b {
            return Ok((a, None));
        }
        let (a_dir, b_dir) = (akind == FileKind::Dir, bkind == FileKind::Dir);
        let np = self.inode(newparent).await?;
        self.may_rename(parent, a, newparent, &np, Some(b), cred).await?;
        if parent != newparent {
            if b_dir {
                perm::access(self.inode(b).await?.perms(), cred, perm::W)?;
            }
            if (a_dir && self.is_within(newparent, a).await?) || (b_dir && self.is_within(parent, b).await?) {
                return Err(Error::InvalidArgument("cannot move a directory into itself".into()));
            }
        }
        // Subdirectory links that cross: +1 where a directory arrives in
        // place of a file, -1 where it leaves one.
        let crossing = if parent == newparent { 0 } else { a_dir as i64 - b_dir as i64 };
        let room = |d: &InodeRec, delta: i64| delta <= 0 || d.nlink < LINK_MAX;
        if !room(&np, crossing) || !room(&self.inode(parent).await?, -crossing) {
            return Err(Error::TooManyLinks);
        }
        // Non-directories hold an extra link while the swap is under way
        // (a crash between shards' commits leaves a leak, never a freed
        // inode that a name still points to, as in rename).
        let files: Vec<u64> = [(a, a_dir), (b, b_dir)].iter().filter(|(_, d)| !d).map(|(i, _)| *i).collect();
        let mut steps: Vec<Step> = files.iter().map(|&ino| Step::AddLink { ino }).collect();
        steps.push(Step::InsertEntry { dir: newparent, name: newname.to_string(), ino: a, kind: akind, dir_delta: (0, crossing) });
        steps.push(Step::InsertEntry { dir: parent, name: name.to_string(), ino: b, kind: bkind, dir_delta: (0, -crossing) });
        if a_dir {
            steps.push(Step::SetParent { ino: a, parent: newparent });
        }
        if b_dir {
            steps.push(Step::SetParent { ino: b, parent });
        }
        steps.extend(files.iter().map(|&ino| Step::DropLink { ino }));
        self.run_steps(steps, rid, (a, b)).await?;
        Ok((a, Some(b)))
    }

    /// setattr; returns the new attributes and, for a shrinking truncate,
    /// the GC job (id, job) that cuts the objects, which the caller runs
    /// before answering.
    pub async fn setattr(&self, ino: InodeId, set: SetAttr, cred: &Cred) -> Result<(Attr, Option<(u32, u64, GcJob)>)> {
        self.setattr_with(ino, set, cred, false).await
    }

    /// setattr by `cred` (`perm::setattr`; `open_for_write`: the caller's
    /// session has the file open for writing).
    pub async fn setattr_with(
        &self,
        ino: InodeId,
        set: SetAttr,
        cred: &Cred,
        open_for_write: bool,
    ) -> Result<(Attr, Option<(u32, u64, GcJob)>)> {
        let ino = ino.0;
        let cred = cred.clone();
        let _g = self.topo.read().await;
        let shard = self.shard_for(ino)?.clone();
        let sid = shard.id;
        shard
            .mutate(move |txn| {
                let now = now_ns();
                let mut inodes = txn.open_table(INODES).io()?;
                let mut r = get_inode(&inodes, ino)?;
                let mut set = set.clone();
                perm::setattr(r.perms(), &cred, &mut set, open_for_write)?;
                let mut job = None;
                if let Some(size) = set.size {
                    match r.kind {
                        FileKind::Dir => return Err(Error::IsDir),
                        FileKind::File => {}
                        // (a device node's `size` is its number)
                        other => return Err(Error::InvalidArgument(format!("truncate of a {other:?}"))),
                    }
                    check_size(size)?;
                }
                if let Some(m) = set.mode {
                    r.perm = m & 0o7777;
                }
                if let Some(u) = set.uid {
                    r.uid = u;
                }
                if let Some(g) = set.gid {
                    r.gid = g;
                }
                if let Some(size) = set.size {
                    if size < r.size {
                        if let Some(layout) = &r.layout {
                            let j = GcJob { ino, layout: layout.clone(), truncate_to: Some(size) };
                            drop(inodes);
                            let id = add_gc(txn, &j)?;
                            inodes = txn.open_table(INODES).io()?;
                            job = Some((sid, id, j));
                        }
                    }
                    r.size = size;
                    r.mtime_ns = now;
                }
                match set.atime {
                    Some(TimeSet::Now) => r.atime_ns = now,
                    Some(TimeSet::At(t)) => r.atime_ns = t,
                    None => {}
                }
                match set.mtime {
                    Some(TimeSet::Now) => r.mtime_ns = now,
                    Some(TimeSet::At(t)) => r.mtime_ns = t,
                    None => {}
                }
                r.ctime_ns = now;
                put_inode(&mut inodes, ino, &r)?;
                Ok((attr_held(&txn.open_table(ALLOCATED).io()?, &r, ino)?, job))
            })
            .await
    }

    /// A read happened: atime becomes now. Unlike a setattr this is not
    /// a change of the inode, so ctime stays.
    pub async fn accessed(&self, ino: InodeId) -> Result<Attr> {
        let ino = ino.0;
        let _g = self.topo.read().await;
        self.shard_for(ino)?
            .mutate(move |txn| {
                let mut inodes = txn.open_table(INODES).io()?;
                let mut r = get_inode(&inodes, ino)?;
                r.atime_ns = r.atime_ns.max(now_ns());
                put_inode(&mut inodes, ino, &r)?;
                attr_held(&txn.open_table(ALLOCATED).io()?, &r, ino)
            })
            .await
    }

    /// A writer's flush: size grows to at least `size`, mtime is set, and
    /// setuid (and executable setgid) are cleared, as a write clears them.
    pub async fn update_size(&self, ino: InodeId, size: u64, mtime_ns: i64) -> Result<Attr> {
        let ino = ino.0;
        let _g = self.topo.read().await;
        self.shard_for(ino)?
            .mutate(move |txn| {
                let mut inodes = txn.open_table(INODES).io()?;
                let mut r = get_inode(&inodes, ino)?;
                if r.kind != FileKind::File {
                    return Err(Error::InvalidArgument("size update on a non-file".into()));
                }
                check_size(size)?;
                r.size = r.size.max(size);
                r.perm = perm::after_write(r.perm);
                r.mtime_ns = r.mtime_ns.max(mtime_ns);
                r.ctime_ns = r.ctime_ns.max(mtime_ns);
                put_inode(&mut inodes, ino, &r)?;
                attr_held(&txn.open_table(ALLOCATED).io()?, &r, ino)
            })
            .await
    }

    pub async fn set_stripe(&self, ino: InodeId, policy: LayoutPolicy) -> Result<Attr> {
        let ino = ino.0;
        policy.validate()?;
        let up = self.cluster.placeable_osds();
        let _g = self.topo.read().await;
        self.shard_for(ino)?
            .mutate(move |txn| {
                let mut inodes = txn.open_table(INODES).io()?;
                let mut r = get_inode(&inodes, ino)?;
                match r.kind {
                    FileKind::Dir => r.policy = Some(policy),
                    FileKind::File => {
                        if r.size != 0 {
                            return Err(Error::InvalidArgument("layout of a file with data cannot change".into()));
                        }
                        let new = choose_layout(policy, &up, ino)?;
                        if let Some(old) = r.layout.replace(new) {
                            // Whatever the old objects hold (empty files
                            // left by a truncate) goes back.
                            drop(inodes);
                            add_gc(txn, &GcJob { ino, layout: old, truncate_to: None })?;
                            inodes = txn.open_table(INODES).io()?;
                        }
                    }
                    other => return Err(Error::InvalidArgument(format!("a {other:?} has no layout"))),
                }
                r.ctime_ns = now_ns();
                put_inode(&mut inodes, ino, &r)?;
                Ok(r.attr(ino))
            })
            .await
    }

    pub async fn get_stripe(&self, ino: InodeId) -> Result<(Option<LayoutPolicy>, Attr)> {
        let ino = ino.0;
        let r = self.inode(ino).await?;
        let policy = match r.kind {
            FileKind::Dir => r.policy,
            _ => r.layout.as_ref().map(|l| l.policy()),
        };
        Ok((policy, r.attr(ino)))
    }

    pub async fn getxattr(&self, ino: InodeId, name: &str, cred: &Cred) -> Result<Vec<u8>> {
        let ino = ino.0;
        let name = name.to_string();
        let cred = cred.clone();
        self.shard_for(ino)?
            .read(move |t| {
                let r = get_inode(&t.open_table(INODES).io()?, ino)?;
                perm::xattr(r.perms(), &cred, &name, false)?;
                match t.open_table(XATTRS).io()?.get((ino, name.as_str())).io()? {
                    Some(v) => Ok(v.value().to_vec()),
                    None => Err(Error::NoXattr),
                }
            })
            .await
    }

    pub async fn listxattr(&self, ino: InodeId) -> Result<Vec<String>> {
        let ino = ino.0;
        self.shard_for(ino)?
            .read(move |t| {
                get_inode(&t.open_table(INODES).io()?, ino)?;
                let x = t.open_table(XATTRS).io()?;
                let mut out = Vec::new();
                for r in x.range((ino, "")..).io()? {
                    let (k, _) = r.io()?;
                    let (i, n) = k.value();
                    if i != ino {
                        break;
                    }
                    out.push(n.to_string());
                }
                Ok(out)
            })
            .await
    }

    pub async fn setxattr(&self, ino: InodeId, name: &str, value: Vec<u8>, flags: u32, cred: &Cred, once: &Once<'_>) -> Result<()> {
        let ino = ino.0;
        if name.is_empty() || name.len() > NAME_MAX {
            return Err(Error::Range);
        }
        if value.len() > XATTR_SIZE_MAX {
            return Err(Error::TooBig);
        }
        if once.done.is_some() {
            return Ok(());
        }
        let rid = once.rid;
        let name = name.to_string();
        let cred = cred.clone();
        let _g = self.topo.read().await;
        self.shard_for(ino)?
            .mutate(move |txn| {
                let mut inodes = txn.open_table(INODES).io()?;
                let mut r = get_inode(&inodes, ino)?;
                perm::xattr(r.perms(), &cred, &name, true)?;
                let mut x = txn.open_table(XATTRS).io()?;
                let exists = x.get((ino, name.as_str())).io()?.is_some();
                if flags & XATTR_CREATE != 0 && exists {
                    return Err(Error::Exists);
                }
                if flags & XATTR_REPLACE != 0 && !exists {
                    return Err(Error::NoXattr);
                }
                x.insert((ino, name.as_str()), value.as_slice()).io()?;
                if !exists {
                    r.xattrs += 1;
                }
                r.ctime_ns = now_ns();
                put_inode(&mut inodes, ino, &r)?;
                once::record(txn, rid, (ino, 0))
            })
            .await
    }

    pub async fn removexattr(&self, ino: InodeId, name: &str, cred: &Cred, once: &Once<'_>) -> Result<()> {
        let ino = ino.0;
        if once.done.is_some() {
            return Ok(());
        }
        let rid = once.rid;
        let name = name.to_string();
        let cred = cred.clone();
        let _g = self.topo.read().await;
        self.shard_for(ino)?
            .mutate(move |txn| {
                let mut inodes = txn.open_table(INODES).io()?;
                let mut r = get_inode(&inodes, ino)?;
                perm::xattr(r.perms(), &cred, &name, true)?;
                let mut x = txn.open_table(XATTRS).io()?;
                if x.get((ino, name.as_str())).io()?.is_none() {
                    return Err(Error::NoXattr);
                }
                x.remove((ino, name.as_str())).io()?;
                r.xattrs = r.xattrs.saturating_sub(1);
                r.ctime_ns = now_ns();
                put_inode(&mut inodes, ino, &r)?;
                once::record(txn, rid, (ino, 0))
            })
            .await
    }

    /// Inode, entry, pending-GC and stale-replica counts of each shard.
    pub async fn shard_counts(&self) -> Result<Vec<(u32, u64, u64, u64, u64)>> {
        let mut out = Vec::new();
        for s in &self.shards {
            let id = s.id;
            let c = s
                .read(move |t| {
                    Ok((
                        id,
                        t.open_table(INODES).io()?.len().io()?,
                        t.open_table(DENTRIES).io()?.len().io()?,
                        t.open_table(GC).io()?.len().io()?,
                        t.open_table(DEGRADED).io()?.len().io()?,
                    ))
                })
                .await?;
            out.push(c);
        }
        Ok(out)
    }
}

/// A file's size is an `off_t`: at most `i64::MAX`, whether a truncate
/// or a client's flush sets it.
fn check_size(size: u64) -> Result<()> {
    match size > i64::MAX as u64 {
        true => Err(Error::FileTooBig),
        false => Ok(()),
    }
}

fn placeholder_attr() -> Attr {
    Attr {
        ino: InodeId(0),
        kind: FileKind::File,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        size: 0,
        atime_ns: 0,
        mtime_ns: 0,
        ctime_ns: 0,
        layout: None,
        xattrs: 0,
        rdev: 0,
        allocated: None,
    }
}

impl Created {
    /// An existing file found by a non-exclusive create is answered with a
    /// fresh read of its inode, wherever it lives.
    async fn resolve(self, ns: &Namespace) -> Result<Created> {
        if self.created {
            return Ok(self);
        }
        let attr = ns.getattr(self.attr.ino).await?;
        Ok(Created { attr, created: false })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn layout_spreads_and_never_repeats_a_replica() {
        let up: Vec<u32> = (1..=5).collect();
        for ino in 0..200u64 {
            let p = LayoutPolicy { stripe_size: 1 << 20, stripe_count: 2, replicas: 2 };
            let l = choose_layout(p, &up, ino).unwrap();
            assert_eq!(l.osds.len(), 4);
            for k in 0..l.stripe_count {
                let o = l.object_osds(k);
                assert_ne!(o[0], o[1]);
            }
        }
        // 3 objects of 2 replicas on 3 OSDs: every OSD first for one
        let p3 = LayoutPolicy { stripe_size: 1 << 20, stripe_count: 3, replicas: 2 };
        for ino in 0..20u64 {
            let l = choose_layout(p3, &[1, 2, 3], ino).unwrap();
            assert_eq!(l.stripe_count, 3);
            let firsts: std::collections::BTreeSet<_> = (0..3).map(|k| l.object_osds(k)[0]).collect();
            assert_eq!(firsts.len(), 3);
            assert!((0..3).all(|k| l.object_osds(k)[0] != l.object_osds(k)[1]));
        }
        let p = LayoutPolicy { stripe_size: 1 << 20, stripe_count: 8, replicas: 1 };
        assert_eq!(choose_layout(p, &[1, 2, 3], 7).unwrap().stripe_count, 3);
        assert!(choose_layout(p, &[], 7).is_err());
        let p2 = LayoutPolicy { replicas: 4, ..p };
        assert!(choose_layout(p2, &[1, 2, 3], 7).is_err());
    }

    #[test]
    fn a_client_builds_a_new_file_or_directory_as_the_mds_records_it() {
        let l = choose_layout(LayoutPolicy { stripe_size: 1 << 20, stripe_count: 2, replicas: 2 }, &[1, 2, 3], 9).unwrap();
        let ino = InodeId::new(1, 77);
        let now = 1_700_000_000_123_456_789;
        assert_eq!(file_rec(0o100640, 5, 6, 2, l.clone(), 1, now).attr(ino.0), Attr::new_file(ino, 0o100640, 5, 6, l, now));
        assert_eq!(dir_rec(0o42750, 5, 6, 2, None, now).attr(ino.0), Attr::new_dir(ino, 0o42750, 5, 6, now));
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("a").is_ok());
        for bad in ["", ".", "..", "a/b", "a\0b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(check_name(&"x".repeat(256)), Err(Error::NameTooLong));
    }

    pub(crate) async fn open_ns(dir: &std::path::Path) -> Namespace {
        let cluster = Arc::new(Cluster::new(std::time::Duration::from_secs(60), std::time::Duration::from_secs(60)));
        cluster.heartbeat(1, "127.0.0.1:1", 1 << 40, 0, 0);
        let policy = LayoutPolicy { stripe_count: 1, ..LayoutPolicy::default() };
        // The shards' writer threads of a dropped namespace close their
        // databases a moment later.
        for _ in 0..100 {
            if let Ok(ns) = Namespace::open(dir, 4, policy, cluster.clone()).await {
                return ns;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("the namespace does not open again");
    }

    /// The shard count marker is part of the on-disk format: one that is
    /// there but cannot be read stops the MDS, and is left as it was.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unreadable_shard_marker_is_refused_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("shards");
        std::fs::write(&marker, [0xff, 0xfe, b'\n']).unwrap();
        let cluster = Arc::new(Cluster::new(std::time::Duration::from_secs(60), std::time::Duration::from_secs(60)));
        let r = Namespace::open(dir.path(), 4, LayoutPolicy::default(), cluster).await;
        assert!(r.is_err(), "opened over a marker it could not read");
        assert_eq!(std::fs::read(&marker).unwrap(), [0xff, 0xfe, b'\n']);
        // a missing one is made, whole
        let fresh = tempfile::tempdir().unwrap();
        drop(open_ns(fresh.path()).await);
        assert_eq!(std::fs::read_to_string(fresh.path().join("shards")).unwrap(), "4\n");
        assert!(!fresh.path().join("shards.tmp").exists());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_operation_over_shards_cut_short_by_a_crash_is_finished_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let root = InodeId::ROOT;
        let ns = open_ns(dir.path()).await;
        let name = (0..).map(|i| format!("d{i}")).find(|n| name_hash(root.0, n) % 4 != 0).unwrap();
        let d = ns.mkdir(root, &name, 0o755, &Cred::root(), &Once::none()).await.unwrap().ino;
        let f = ns.create(root, "f", 0o644, &Cred::root(), true, &Once::none()).await.unwrap().attr.ino;
        assert_ne!(d.shard(), f.shard());
        // rename /f -> /d/g as `rename` builds it, stopped after the first
        // of its three commits as a crash would stop it.
        let steps = vec![
            Step::AddLink { ino: f.0 },
            Step::InsertEntry { dir: d.0, name: "g".into(), ino: f.0, kind: FileKind::File, dir_delta: (1, 0) },
            Step::RemoveEntry { dir: root.0, name: "f".into(), dir_delta: (-1, 0) },
            Step::DropLink { ino: f.0 },
        ];
        let rid = ReqId { client: 5, seq: 1, oldest: 1, retry: false };
        let (_, id, rest) = ns.first_commit(steps, Some(rid), (f.0, 0)).await.unwrap();
        assert!(id != 0 && rest.len() == 2);
        assert_eq!(ns.getattr(f).await.unwrap().nlink, 2);
        drop(ns);
        let ns = open_ns(dir.path()).await;
        assert_eq!(ns.lookup(d, "g", &Cred::root()).await.unwrap().ino, f);
        assert_eq!(ns.lookup(root, "f", &Cred::root()).await.map(|a| a.ino), Err(Error::NotFound));
        assert_eq!(ns.getattr(f).await.unwrap().nlink, 1);
        // The client's retry is answered from the record.
        let retry = ns.once(Some(ReqId { retry: true, ..rid })).await.unwrap();
        assert_eq!(ns.rename(root, "f", d, "g", 0, &Cred::root(), &retry).await, Ok((f, None)));
        drop(retry);
        // Rolled forward once only: another start changes nothing.
        drop(ns);
        let ns = open_ns(dir.path()).await;
        assert_eq!(ns.getattr(f).await.unwrap().nlink, 1);
        let (entries, _, _) = ns.readdir(d, 0, 100, &Cred::root()).await.unwrap();
        assert_eq!(entries.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), vec!["g"]);
    }

    #[test]
    fn directories_spread_over_shards() {
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..64 {
            seen.insert(name_hash(1, &format!("step{i}")) % 4);
        }
        assert_eq!(seen.len(), 4);
    }
}
