//! Changes a client made under directories' write leases (client/src/
//! dirops.rs), applied at the MDS in the order the client made them: the
//! client answered them already, so each is checked again here as the MDS
//! would have checked the request, against the records its commit reads.
//! Applying a change twice (a batch sent again after a lost reply)
//! changes nothing.
use crate::namespace::{add_entry, apply_step, check_name, dir_rec, file_rec, kind_code, shard_of, unlink_here, Namespace, Unlinked, LINK_MAX};
use crate::once::Once;
use crate::records::{InodeRec, Reservation, Step};
use crate::store::{get_inode, IoResult, Txn, DENTRIES, INODES, RESERVED};
use aifs_common::ids::InodeId;
use aifs_common::perm::{self, Cred};
use aifs_common::proto::mds::{DirOp, FileKind};
use aifs_common::time::now_ns;
use aifs_common::{Error, Layout, Owner, Result};
use redb::ReadableTable;
use std::collections::{BTreeMap, HashSet};

/// What applying one change inside its shard's commit came to.
enum Outcome {
    Done(Result<()>),
    /// It touches another shard too: it runs on its own, after this
    /// commit, and the changes after it follow in another.
    Elsewhere,
}

/// Changes numbered by their place in the batch.
type Numbered = Vec<(usize, DirOp)>;

/// What every change in a batch is applied with.
#[derive(Clone)]
struct Batch {
    owner: Owner,
    /// Directories the batch makes and removes again: sent again after a
    /// lost reply, their making finds neither their reservation (used)
    /// nor them (removed), and is this change applied before.
    made_and_removed: HashSet<u64>,
}

impl Namespace {
    /// Apply changes a client made under directories' write leases, in
    /// order; one result each. Changes in one shard commit together. An
    /// unlink of a name whose inode lives on another shard, or an rmdir of
    /// a directory there, runs on its own (two shards) between the commits
    /// of what comes before and after; such an rmdir waits for every
    /// change before it, in any shard (the directory's last names may
    /// have gone in its own shard).
    pub async fn apply(&self, ops: Vec<DirOp>, owner: Owner) -> Vec<Result<()>> {
        let made: Vec<bool> = ops.iter().map(|op| matches!(op, DirOp::Create { .. } | DirOp::Mkdir { .. })).collect();
        let removed: HashSet<u64> = ops.iter().filter_map(|op| if let DirOp::Rmdir { ino, .. } = op { Some(ino.0) } else { None }).collect();
        let made_and_removed = ops.iter().filter_map(|op| if let DirOp::Mkdir { ino, .. } = op { Some(ino.0) } else { None }).filter(|i| removed.contains(i)).collect();
        let batch = Batch { owner, made_and_removed };
        let mut out: Vec<Option<Result<()>>> = (0..ops.len()).map(|_| None).collect();
        let mut phase: Numbered = Vec::new();
        for (i, op) in ops.into_iter().enumerate() {
            match &op {
                DirOp::Rmdir { parent, ino, .. } if ino.shard() != parent.shard() => {
                    self.apply_phase(std::mem::take(&mut phase), &batch, &mut out).await;
                    out[i] = Some(self.apply_alone(&op).await);
                }
                _ => phase.push((i, op)),
            }
        }
        self.apply_phase(phase, &batch, &mut out).await;
        let out: Vec<Result<()>> = out.into_iter().map(|r| r.unwrap_or(Err(Error::Io("change not applied".into())))).collect();
        // (what a change applied again after a lost reply made is counted
        // twice: the next sweep recounts)
        let used = out.iter().zip(&made).filter(|(r, m)| **m && r.is_ok()).count();
        self.reserved.sub(owner, used as u64);
        out
    }

    /// Apply changes with no order between shards: per shard in order,
    /// as few commits as the changes that touch two shards allow.
    async fn apply_phase(&self, ops: Numbered, b: &Batch, out: &mut [Option<Result<()>>]) {
        let mut by_shard: BTreeMap<u32, Numbered> = BTreeMap::new();
        for (i, op) in ops {
            match op.parent() {
                Some(parent) => by_shard.entry(parent.shard()).or_default().push((i, op)),
                // Not a namespace change: nothing to do here.
                None => out[i] = Some(Ok(())),
            }
        }
        for (sh, mut todo) in by_shard {
            while !todo.is_empty() {
                let Some(shard) = self.shards.get(sh as usize).cloned() else {
                    for (i, _) in todo.drain(..) {
                        out[i] = Some(Err(Error::Stale));
                    }
                    break;
                };
                let batch = std::mem::take(&mut todo);
                let idx: Vec<usize> = batch.iter().map(|(i, _)| *i).collect();
                let cluster = self.cluster.clone();
                let b = b.clone();
                let r = {
                    let _g = self.fences.shared_on(sh).await;
                    shard.mutate(move |txn| commit(txn, &batch, &b, &|ino| cluster.is_open(InodeId(ino)))).await
                };
                match r {
                    Ok((done, rest)) => {
                        for (i, r) in done {
                            out[i] = Some(r);
                        }
                        todo = rest;
                        if !todo.is_empty() {
                            let (i, op) = todo.remove(0);
                            out[i] = Some(self.apply_alone(&op).await);
                        }
                    }
                    // Every change in the failed commit fails with it.
                    Err(e) => {
                        for i in idx {
                            out[i] = Some(Err(e.clone()));
                        }
                    }
                }
            }
        }
    }

    /// A change over two shards, as its request would make it.
    async fn apply_alone(&self, op: &DirOp) -> Result<()> {
        match op {
            DirOp::Unlink { parent, name, cred, .. } => self.unlink(*parent, name, cred, &Once::none()).await.map(|_| ()),
            DirOp::Rmdir { parent, name, cred, .. } => match self.rmdir(*parent, name, cred, &Once::none()).await {
                // Removed already: this is the batch sent again.
                Ok(_) | Err(Error::NotFound) => Ok(()),
                Err(e) => Err(e),
            },
            _ => Err(Error::InvalidArgument("a change within one shard".into())),
        }
    }
}

/// Apply changes of one shard in one commit, in order, up to the first
/// that touches another shard: returns the results, and that change and
/// those after it.
fn commit(txn: &Txn, batch: &[(usize, DirOp)], b: &Batch, open: &dyn Fn(u64) -> bool) -> Result<(Vec<(usize, Result<()>)>, Numbered)> {
    let now = now_ns();
    let mut done = Vec::with_capacity(batch.len());
    for (k, (i, op)) in batch.iter().enumerate() {
        let r = match apply_one(txn, op, now, b, open) {
            Outcome::Done(r) => r,
            Outcome::Elsewhere => return Ok((done, batch[k..].to_vec())),
        };
        // A storage error undoes the whole commit.
        if let Err(Error::Io(m)) = &r {
            return Err(Error::Io(m.clone()));
        }
        done.push((*i, r));
    }
    Ok((done, Vec::new()))
}

fn apply_one(txn: &Txn, op: &DirOp, now: i64, b: &Batch, open: &dyn Fn(u64) -> bool) -> Outcome {
    Outcome::Done(match op {
        DirOp::Create { parent, name, ino, layout, mode, cred, time_ns, .. } => {
            create_reserved(txn, parent.0, name, ino.0, layout, *mode, cred, *time_ns, now, b.owner)
        }
        DirOp::Mkdir { parent, name, ino, mode, cred, time_ns } => {
            match mkdir_reserved(txn, parent.0, name, ino.0, *mode, cred, *time_ns, now, b.owner) {
                Err(Error::InvalidArgument(m)) if b.made_and_removed.contains(&ino.0) => match inode_exists(txn, ino.0) {
                    Ok(false) => Ok(()),
                    Ok(true) => Err(Error::InvalidArgument(m)),
                    Err(e) => Err(e),
                },
                r => r,
            }
        }
        DirOp::Unlink { parent, name, ino, time_ns, cred } => {
            match check_name(name).and_then(|_| unlink_here(txn, parent.0, name, Some(ino.0), (*time_ns).max(now), open, cred)) {
                Ok(Unlinked::Done(_)) => Ok(()),
                Ok(Unlinked::Elsewhere) => return Outcome::Elsewhere,
                // Gone already (no one else changes a directory under a
                // write lease): this is the batch sent again.
                Err(Error::NotFound) => Ok(()),
                Err(e) => Err(e),
            }
        }
        DirOp::Rmdir { parent, name, ino, time_ns, cred } => {
            if ino.shard() != parent.shard() {
                return Outcome::Elsewhere;
            }
            check_name(name).and_then(|_| rmdir_here(txn, parent.0, name, ino.0, (*time_ns).max(now), cred))
        }
        DirOp::Close { .. } => Ok(()),
    })
}

fn inode_exists(txn: &Txn, ino: u64) -> Result<bool> {
    Ok(txn.open_table(INODES).io()?.get(ino).io()?.is_some())
}

/// Check that `ino` was reserved in `parent`'s shard for `owner` (with
/// `layout`, for a file) and not used, and that `cred` may make `name`
/// there. Returns the parent's record, or `None` if the change was applied
/// already (a retry after a lost reply).
#[allow(clippy::too_many_arguments)]
fn reserved_for(txn: &Txn, parent: u64, name: &str, ino: u64, layout: Option<&Layout>, cred: &Cred, owner: Owner) -> Result<Option<InodeRec>> {
    check_name(name)?;
    if shard_of(ino) != shard_of(parent) {
        return Err(Error::InvalidArgument(format!("inode {ino:#x} is not of the directory's shard")));
    }
    if let Some(v) = txn.open_table(DENTRIES).io()?.get((parent, name)).io()? {
        // Already applied (a retry after a lost reply), or a clash.
        return if v.value().0 == ino { Ok(None) } else { Err(Error::Exists) };
    }
    let r = match txn.open_table(RESERVED).io()?.get(ino).io()? {
        Some(v) => Reservation::decode(v.value())?,
        None => return Err(Error::InvalidArgument(format!("inode {ino:#x} is not reserved (never, or used already)"))),
    };
    if r.owner != owner.0 {
        return Err(Error::NotPermitted(format!("inode {ino:#x} is reserved for another client")));
    }
    if layout.is_some_and(|l| r.layout != *l) {
        return Err(Error::InvalidArgument(format!("inode {ino:#x} was reserved with another layout")));
    }
    let p = get_inode(&txn.open_table(INODES).io()?, parent)?;
    if p.kind != FileKind::Dir {
        return Err(Error::NotDir);
    }
    perm::access(p.perms(), cred, perm::X)?;
    if txn.open_table(INODES).io()?.get(ino).io()?.is_some() {
        return Err(Error::Exists);
    }
    perm::may_create(p.perms(), cred)?;
    txn.open_table(RESERVED).io()?.remove(ino).io()?;
    Ok(Some(p))
}

/// A file made under a directory's write lease (`DirOp::Create`) by a
/// client under certificate `owner`: its number must be one reserved for
/// that certificate, and its layout the one reserved with it.
#[allow(clippy::too_many_arguments)]
fn create_reserved(txn: &Txn, parent: u64, name: &str, ino: u64, layout: &Layout, mode: u32, cred: &Cred, time_ns: i64, now: i64, owner: Owner) -> Result<()> {
    let Some(p) = reserved_for(txn, parent, name, ino, Some(layout), cred, owner)? else {
        return Ok(());
    };
    let (uid, gid, mode) = perm::new_owner(p.perms(), cred, FileKind::File, mode);
    let rec = file_rec(mode, uid, gid, parent, layout.clone(), 1, time_ns);
    add_entry(txn, p, parent, name, ino, &rec, now)
}

/// A directory made under its parent's write lease (`DirOp::Mkdir`), with
/// a number reserved there as for a file (its layout unused): it lives in
/// its parent's shard.
#[allow(clippy::too_many_arguments)]
fn mkdir_reserved(txn: &Txn, parent: u64, name: &str, ino: u64, mode: u32, cred: &Cred, time_ns: i64, now: i64, owner: Owner) -> Result<()> {
    let Some(mut p) = reserved_for(txn, parent, name, ino, None, cred, owner)? else {
        return Ok(());
    };
    if p.nlink >= LINK_MAX {
        return Err(Error::TooManyLinks);
    }
    let (uid, gid, mode) = perm::new_owner(p.perms(), cred, FileKind::Dir, mode);
    let rec = dir_rec(mode, uid, gid, parent, p.policy, time_ns);
    p.nlink += 1;
    add_entry(txn, p, parent, name, ino, &rec, now)
}

/// Remove the empty directory `name` (known to the client as `ino`, in
/// its parent's shard) from `parent`, checked as the MDS checks an rmdir
/// and then made with the same steps. A name already gone is this change
/// applied before.
fn rmdir_here(txn: &Txn, parent: u64, name: &str, ino: u64, now: i64, cred: &Cred) -> Result<()> {
    {
        let inodes = txn.open_table(INODES).io()?;
        let p = get_inode(&inodes, parent)?;
        if p.kind != FileKind::Dir {
            return Err(Error::NotDir);
        }
        perm::access(p.perms(), cred, perm::X)?;
        let Some((found, kind, _)) = txn.open_table(DENTRIES).io()?.get((parent, name)).io()?.map(|v| v.value()) else {
            return Ok(());
        };
        if found != ino {
            return Err(Error::Stale);
        }
        let d = get_inode(&inodes, ino)?;
        if d.kind != FileKind::Dir || kind != kind_code(FileKind::Dir) {
            return Err(Error::NotDir);
        }
        perm::may_delete(p.perms(), d.uid, cred)?;
        if d.entries > 0 {
            return Err(Error::NotEmpty);
        }
    }
    // A directory is never open: nothing keeps it nameless.
    let open = |_| false;
    apply_step(txn, Step::RemoveEntry { dir: parent, name: name.to_string(), dir_delta: (-1, -1) }, now, &open)?;
    apply_step(txn, Step::DeleteDir { ino }, now, &open)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::namespace::tests::open_ns;
    use aifs_common::proto::mds::Attr;

    /// A batch applied as the client made it: a directory removed after
    /// its last name went (in another shard), one made, one made and
    /// removed; sent again after a lost reply, it changes nothing. A number
    /// used is not used again, and a directory with a name in it is never
    /// removed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn changes_apply_in_the_order_they_were_made() {
        let dir = tempfile::tempdir().unwrap();
        let ns = open_ns(dir.path()).await;
        let (root, me, c, once) = (InodeId::ROOT, Owner([7; 32]), Cred::root(), Once::none());
        // a directory the MDS placed in another shard than the root's
        let mut i = 0;
        let (old, old_name) = loop {
            let name = format!("old{i}");
            let a = ns.mkdir(root, &name, 0o755, &c, &once).await.unwrap();
            if a.ino.shard() != root.shard() {
                break (a.ino, name);
            }
            i += 1;
        };
        let f = ns.create(old, "f", 0o644, &c, true, &once).await.unwrap().attr.ino;
        let nums: Vec<InodeId> = ns.reserve(root, 4, me).await.unwrap().into_iter().map(|(ino, _)| ino).collect();
        assert!(nums.iter().all(|n| n.shard() == root.shard()));
        let links = ns.getattr(root).await.unwrap().nlink;
        let mk = |ino: InodeId, name: &str| DirOp::Mkdir { parent: root, name: name.into(), ino, mode: 0o750, cred: c.clone(), time_ns: 5 };
        let rm = |ino: InodeId, name: &str| DirOp::Rmdir { parent: root, name: name.into(), ino, time_ns: 6, cred: c.clone() };
        let ops = vec![
            DirOp::Unlink { parent: old, name: "f".into(), ino: f, time_ns: 6, cred: c.clone() },
            rm(old, &old_name),
            mk(nums[0], "new"),
            mk(nums[1], "tmp"),
            rm(nums[1], "tmp"),
        ];
        for round in 0..2 {
            let r = ns.apply(ops.clone(), me).await;
            assert!(r.iter().all(|r| r.is_ok()), "round {round}: {r:?}");
        }
        assert_eq!(ns.lookup(root, &old_name, &c).await.map(|a| a.ino), Err(Error::NotFound));
        assert!(ns.getattr(old).await.is_err() && ns.getattr(f).await.is_err());
        assert_eq!(ns.lookup(root, "tmp", &c).await.map(|a| a.ino), Err(Error::NotFound));
        let new = ns.lookup(root, "new", &c).await.unwrap();
        assert_eq!(new, Attr::new_dir(nums[0], 0o750, 0, 0, 5));
        assert_eq!(ns.getattr(root).await.unwrap().nlink, links, "one subdirectory removed, one made");
        // a number used is not used again
        let again = ns.apply(vec![mk(nums[0], "again"), mk(nums[1], "again")], me).await;
        assert!(again.iter().all(|r| r.is_err()), "{again:?}");
        // nor one reserved for another certificate
        assert!(ns.apply(vec![mk(nums[2], "theirs")], Owner([8; 32])).await[0].is_err());
        // a directory with a name in it stays
        ns.create(new.ino, "x", 0o644, &c, true, &once).await.unwrap();
        assert_eq!(ns.apply(vec![rm(new.ino, "new")], me).await, vec![Err(Error::NotEmpty)]);
        assert!(ns.lookup(new.ino, "x", &c).await.is_ok());
    }
}
