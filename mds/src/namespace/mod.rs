//! Namespace operations over the shards (DESIGN.md, "Metadata").
//!
//! Placement: a directory's entries live in the directory's shard; a file
//! created in D gets its inode from D's shard; a new directory goes to the
//! shard `hash(parent, name) % shards`, unless a client made it under
//! the parent's write lease (applied.rs): then it takes a number reserved
//! in the parent's shard, like a file. So create, lookup, getattr,
//! setattr, unlink and readdir in one directory touch one shard and run as
//! one group-committed job, holding that shard's fence shared
//! (fences.rs).
//!
//! Operations that may touch two shards (mkdir, rmdir, rename, link, and
//! unlink of a name whose inode lives elsewhere) hold the fences of the
//! shards they touch exclusively, check everything first, then apply a
//! list of primitive `Step`s grouped per shard, one commit per shard, in
//! an order chosen so that a crash between commits leaves at worst an
//! extra link (a leak a scan reclaims), never a lost file: counts go up
//! before entries appear, entries go away before counts go down, and a
//! renamed entry appears at its new name before it leaves the old one.
//!
//! Permissions are checked inside the transaction that makes the change,
//! against the records it reads (common/src/perm.rs), for the `Cred` the
//! request acts for: a chmod between check and change cannot slip in.
//!
//! Inode numbers are typed (`InodeId`) in every method others call; the
//! tables key by the bare number, so each such method unwraps its ids
//! first, and the private helpers below them work on numbers.
//!
//! Each operation's transaction is in ops/, in the file named after it.
//! Here are what they share: the `Namespace` over the shard stores,
//! lookups of records and entries, placement (placement.rs), the records
//! and rows every change writes (rows.rs), the steps of a change over two
//! shards and their roll-forward (steps.rs), and replica records
//! (replicas.rs).
use crate::cluster::Cluster;
use crate::once::{self, Once};
use crate::records::InodeRec;
use crate::store::{get_inode, put_inode, IoResult, ShardStore, DEGRADED, DENTRIES, GC, INODES, ALLOCATED};
use aifs_common::ids::InodeId;
use aifs_common::proto::mds::{Attr, FileKind, ReqId};
use aifs_common::perm::{self, Cred};
use aifs_common::time::now_ns;
use aifs_common::{Error, LayoutPolicy, Result};
use redb::{ReadableTable, ReadableTableMetadata};
use std::sync::Arc;

#[cfg(test)]
mod across;
#[cfg(test)]
mod crash;
mod fences;
mod placement;
#[cfg(test)]
mod races;
mod replicas;
mod rows;
mod steps;
pub mod twophase;

pub(crate) use fences::Held;
pub use placement::choose_layout;
pub(crate) use placement::name_hash;
pub(crate) use rows::{add_entry, attr_held, degraded_rows, dir_rec, file_rec, unlink_here, Unlinked};
pub(crate) use steps::{apply_step, delete_inode, drop_last_link};

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

pub(crate) fn kind_code(k: FileKind) -> u8 {
    k as u8
}

pub(crate) fn kind_from(c: u8) -> Result<FileKind> {
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

/// Result of a create: the attributes and whether this call made the file.
pub struct Created {
    pub attr: Attr,
    pub created: bool,
}

pub struct Namespace {
    pub shards: Vec<Arc<ShardStore>>,
    /// What keeps a change's checks true until it commits (fences.rs).
    pub(crate) fences: fences::Fences,
    pub cluster: Arc<Cluster>,
    /// Requests with ids being served (once.rs).
    running: once::Running,
    /// Inode numbers reserved per certificate (reservations.rs).
    pub reserved: crate::reservations::Counts,
    /// Inode numbers handed out ahead of a commit (numbers.rs).
    pub(crate) numbers: crate::numbers::Numbers,
    /// The shards other processes lead, if any, and the way to them.
    pub(crate) remote: Option<Arc<twophase::Remote>>,
    /// Fences held here for operations coordinated elsewhere.
    pub(crate) holding: twophase::Holding,
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
        Self::open_on(&crate::store::media::Disk, dir, nshards, root_policy, cluster).await
    }

    /// [`Namespace::open`], with the shards' databases on `media`.
    pub async fn open_on(media: &dyn crate::store::media::Media, dir: &std::path::Path, nshards: u32, root_policy: LayoutPolicy, cluster: Arc<Cluster>) -> Result<Self> {
        check_shard_count(dir, nshards)?;
        let snapshot_after = crate::store::raft::LogUpkeep::default().snapshot_after_bytes;
        let logs = crate::store::raft::Logs::open(media, dir)?;
        let mut shards = Vec::new();
        for i in 0..nshards {
            shards.push(Arc::new(ShardStore::open_on(media, &logs, dir, i, snapshot_after).await?));
        }
        // the names of store files just made
        crate::store::sync_dir(dir)?;
        Self::over(shards, root_policy, cluster).await
    }

    /// The namespace over shard stores already open (and led here): makes
    /// the root directory if missing, and finishes what a crash left half
    /// done.
    pub async fn over(shards: Vec<Arc<ShardStore>>, root_policy: LayoutPolicy, cluster: Arc<Cluster>) -> Result<Self> {
        Self::start(shards, root_policy, cluster, None).await
    }

    /// [`Namespace::over`] the shards led here, where `remote` names the
    /// others: what a crash left prepared for operations coordinated
    /// elsewhere is settled in the background, each such shard fenced
    /// until it is (twophase.rs).
    pub async fn over_led(shards: Vec<Arc<ShardStore>>, root_policy: LayoutPolicy, cluster: Arc<Cluster>, remote: Arc<twophase::Remote>) -> Result<Arc<Self>> {
        let ns = Arc::new(Self::start(shards, root_policy, cluster, Some(remote)).await?);
        ns.settle_all().await;
        Ok(ns)
    }

    async fn start(shards: Vec<Arc<ShardStore>>, root_policy: LayoutPolicy, cluster: Arc<Cluster>, remote: Option<Arc<twophase::Remote>>) -> Result<Self> {
        root_policy.validate()?;
        // Every lease on an inode goes with its row: a job that makes and
        // removes files would otherwise fill its session's budget
        // (`max_leases`) with leases on files long gone.
        for s in &shards {
            let cl = Arc::downgrade(&cluster);
            s.when_gone(Arc::new(move |inos: &[u64]| {
                if let Some(cl) = cl.upgrade() {
                    cl.forget_gone(&inos.iter().map(|i| InodeId(*i)).collect::<Vec<_>>());
                }
            }));
        }
        let ns = Self::bare(shards, cluster, remote);
        ns.after_earlier_services().await?;
        if ns.elsewhere(0).is_none() {
            ns.make_root(root_policy).await?;
        }
        ns.roll_forward().await?;
        ns.count_reservations().await?;
        Ok(ns)
    }

    /// A namespace over `shards`, with nothing held, reserved or running.
    fn bare(shards: Vec<Arc<ShardStore>>, cluster: Arc<Cluster>, remote: Option<Arc<twophase::Remote>>) -> Self {
        Namespace {
            numbers: crate::numbers::Numbers::new(shards.len()),
            fences: fences::Fences::new(shards.len(), remote.clone()),
            shards,
            cluster,
            running: Default::default(),
            reserved: Default::default(),
            remote,
            holding: Default::default(),
        }
    }

    /// This namespace over new handles on its shards' writers, which
    /// refuse from now on what this one's requests still send
    /// (store/mod.rs): for a service that lets shards go to carry over
    /// what its requests left half done although some still run
    /// (serving.rs, `let_go`), with none of them making a commit again
    /// after the roll-forward dropped its marks.
    pub(crate) async fn taken_over(&self) -> Result<Namespace> {
        let shards = self.shards.iter().map(|s| Arc::new(s.successor())).collect();
        let ns = Self::bare(shards, self.cluster.clone(), self.remote.clone());
        ns.after_earlier_services().await?;
        Ok(ns)
    }

    async fn make_root(&self, root_policy: LayoutPolicy) -> Result<()> {
        self.shard(0)
            .mutate(move |txn| {
                let mut inodes = txn.open_table(INODES).io()?;
                if inodes.get(InodeId::ROOT.0).io()?.is_none() {
                    let rec = dir_rec(0o755, 0, 0, InodeId::ROOT.0, Some(root_policy), now_ns());
                    put_inode(&mut inodes, InodeId::ROOT.0, &rec)?;
                    tracing::info!("created root directory");
                }
                Ok(())
            })
            .await
    }

    /// Serve a request that must not be applied twice (once.rs): held
    /// from its arrival to its answer.
    pub async fn once(&self, rid: Option<ReqId>) -> Result<Once<'_>> {
        self.running.begin(rid, &self.shards).await
    }

    /// The shards led here: all of them unless shards are spread over
    /// processes. Background work (GC, repair, purges, sweeps) changes
    /// these only.
    pub fn led(&self) -> impl Iterator<Item = &Arc<ShardStore>> {
        self.shards.iter().filter(|s| self.elsewhere(s.id).is_none())
    }

    /// Shard `shard` exists and is led here.
    pub fn leads(&self, shard: u32) -> bool {
        (shard as usize) < self.shards.len() && self.elsewhere(shard).is_none()
    }

    /// Every shard is led here.
    pub fn leads_all(&self) -> bool {
        self.led().count() == self.shards.len()
    }

    pub fn shard(&self, id: u32) -> &Arc<ShardStore> {
        // Inode numbers from the wire may name a shard that does not exist;
        // those are routed to shard 0, where the inode will not be found.
        self.shards.get(id as usize).unwrap_or(&self.shards[0])
    }

    pub fn shard_for(&self, ino: u64) -> Result<&Arc<ShardStore>> {
        self.shards.get(shard_of(ino) as usize).ok_or(Error::Stale)
    }

    /// The shard a new directory `name` in `parent` goes to, by its
    /// name's hash: any shard, or any but shard 0 when that one's group
    /// is the wider (`Remote::spare_zero`). Shard 0 keeps the root, the
    /// cluster's records and its share of the old directories.
    pub(crate) fn dir_shard(&self, parent: u64, name: &str) -> u32 {
        let n = self.shards.len() as u64;
        let first = u64::from(n > 1 && self.remote.as_ref().is_some_and(|r| r.spare_zero));
        (first + name_hash(parent, name) % (n - first)) as u32
    }

    pub async fn getattr(&self, ino: InodeId) -> Result<Attr> {
        let ino = ino.0;
        if let Some(r) = self.elsewhere(shard_of(ino)) {
            return twophase::expect_attr(r.read(shard_of(ino), twophase::ShardRead::Attr(ino)).await?);
        }
        self.shard_for(ino)?
            .read(move |t| attr_held(&t.open_table(ALLOCATED).io()?, &get_inode(&t.open_table(INODES).io()?, ino)?, ino))
            .await
    }

    /// The record of `ino`, read where its shard is led.
    pub(crate) async fn inode(&self, ino: u64) -> Result<InodeRec> {
        if let Some(r) = self.elsewhere(shard_of(ino)) {
            return twophase::expect_inode(r.read(shard_of(ino), twophase::ShardRead::Inode(ino)).await?);
        }
        self.shard_for(ino)?.read(move |t| get_inode(&t.open_table(INODES).io()?, ino)).await
    }

    /// `dir` and the inode its entry `name` leads to, if there is one:
    /// what a change of that entry touches (fences.rs).
    pub(crate) async fn entry_shards(&self, dir: u64, name: &str) -> Result<Vec<u64>> {
        let mut v = vec![dir];
        if let Ok((ino, _)) = self.entry_as(dir, name, None).await {
            v.push(ino);
        }
        Ok(v)
    }

    /// The entry `name` in `parent`: (ino, kind). ENOTDIR if parent is not a
    /// directory; for `cred`, when given, EACCES if it may not search it.
    pub(crate) async fn entry_as(&self, parent: u64, name: &str, cred: Option<&Cred>) -> Result<(u64, FileKind)> {
        check_name(name)?;
        let name = name.to_string();
        let cred = cred.cloned();
        if let Some(r) = self.elsewhere(shard_of(parent)) {
            return twophase::expect_entry(r.read(shard_of(parent), twophase::ShardRead::Entry { dir: parent, name, cred }).await?);
        }
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


    /// Inode, entry, pending-GC and stale-replica counts of each shard
    /// whose group has a member here.
    pub async fn shard_counts(&self) -> Result<Vec<(u32, u64, u64, u64, u64)>> {
        let mut out = Vec::new();
        for s in self.shards.iter().filter(|s| s.held()) {
            let (inodes, dentries, gc, degraded) = counts_of(s).await?;
            out.push((s.id, inodes, dentries, gc, degraded));
        }
        Ok(out)
    }

    /// Shard `id` as this process holds it: its counts and commits, its
    /// group as the member here reports it (`wanted` left to the caller),
    /// and, while this process leads it, how far each other member holds
    /// its log.
    pub async fn shard_status(&self, id: u32) -> Result<(aifs_common::proto::status::ShardInfo, Vec<(u64, u64)>)> {
        let s = self.shard(id);
        let (inodes, dentries, pending_gc, degraded) = counts_of(s).await?;
        let g = s.group();
        let commits = s.stats.commits.load(std::sync::atomic::Ordering::Relaxed);
        let info = aifs_common::proto::status::ShardInfo {
            id,
            inodes,
            dentries,
            commits,
            pending_gc,
            degraded,
            members: g.members,
            leader: g.leader,
            term: g.term,
            last_log: g.last_log,
            applied: g.applied,
            snapshot: g.snapshot,
            wanted: None,
        };
        Ok((info, g.matched))
    }
}

/// A shard's inodes, entries, files awaiting GC and stale replicas.
async fn counts_of(s: &ShardStore) -> Result<(u64, u64, u64, u64)> {
    s.read(|t| {
        Ok((
            t.open_table(INODES).io()?.len().io()?,
            t.open_table(DENTRIES).io()?.len().io()?,
            t.open_table(GC).io()?.len().io()?,
            t.open_table(DEGRADED).io()?.len().io()?,
        ))
    })
    .await
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

    /// A cluster with one OSD up, for layouts.
    pub(crate) fn test_cluster() -> Arc<Cluster> {
        let cluster = Arc::new(Cluster::new(std::time::Duration::from_secs(60), std::time::Duration::from_secs(60)));
        cluster.osds.heartbeat(1, "127.0.0.1:1", &aifs_common::proto::mds::OsdUsage { capacity: 1 << 40, ..Default::default() });
        cluster
    }

    pub(crate) async fn open_ns(dir: &std::path::Path) -> Namespace {
        let cluster = test_cluster();
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

    #[test]
    fn directories_spread_over_shards() {
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..64 {
            seen.insert(name_hash(1, &format!("step{i}")) % 4);
        }
        assert_eq!(seen.len(), 4);
    }
}
