//! Changes a client made under directories' write leases (client/src/
//! dirops.rs), applied at the MDS in the order the client made them: the
//! client answered them already, so each is checked again here as the MDS
//! would have checked the request, against the records its commit reads.
use crate::namespace::{add_entry, check_name, file_rec, shard_of, unlink_here, Namespace, Unlinked};
use crate::once::Once;
use crate::records::Reservation;
use crate::store::{get_inode, IoResult, Txn, DENTRIES, INODES, RESERVED};
use aifs_common::ids::InodeId;
use aifs_common::perm;
use aifs_common::proto::mds::{DirOp, FileKind};
use aifs_common::time::now_ns;
use aifs_common::{Error, Owner, Result};
use redb::ReadableTable;

impl Namespace {
    /// Apply changes a client made under directories' write leases, in
    /// order; one result each. Changes in one shard commit together; an
    /// unlink of a name whose inode lives on another shard runs on its own
    /// (two shards), between the commits of what comes before and after.
    pub async fn apply(&self, ops: Vec<DirOp>, owner: Owner) -> Vec<Result<()>> {
        let n = ops.len();
        let creates: Vec<bool> = ops.iter().map(|op| matches!(op, DirOp::Create { .. })).collect();
        let mut out: Vec<Option<Result<()>>> = (0..n).map(|_| None).collect();
        let mut by_shard: std::collections::BTreeMap<u32, Vec<(usize, DirOp)>> = std::collections::BTreeMap::new();
        for (i, op) in ops.into_iter().enumerate() {
            let parent = match &op {
                DirOp::Create { parent, .. } | DirOp::Unlink { parent, .. } => *parent,
                // Not a namespace change: nothing to do here.
                DirOp::Close { .. } => {
                    out[i] = Some(Ok(()));
                    continue;
                }
            };
            by_shard.entry(parent.shard()).or_default().push((i, op));
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
                let r = {
                    let _g = self.topo.read().await;
                    shard
                        .mutate(move |txn| {
                            let now = now_ns();
                            let open = |ino| cluster.is_open(InodeId(ino));
                            let mut done = Vec::new();
                            let mut rest = Vec::new();
                            let mut it = batch.iter().cloned();
                            for (i, op) in it.by_ref() {
                                let r = match &op {
                                    DirOp::Create { .. } => create_reserved(txn, &op, now, owner),
                                    DirOp::Close { .. } => Ok(()),
                                    DirOp::Unlink { parent, name, ino, time_ns, cred } => {
                                        match check_name(name)
                                            .and_then(|_| unlink_here(txn, parent.0, name, Some(ino.0), (*time_ns).max(now), &open, cred))
                                        {
                                            Ok(Unlinked::Done(_)) => Ok(()),
                                            Ok(Unlinked::Elsewhere) => {
                                                // Runs outside this commit; the rest after it.
                                                rest.push((i, op));
                                                break;
                                            }
                                            Err(e) => Err(e),
                                        }
                                    }
                                };
                                // A storage error undoes the whole commit.
                                if let Err(Error::Io(m)) = &r {
                                    return Err(Error::Io(m.clone()));
                                }
                                done.push((i, r));
                            }
                            rest.extend(it);
                            Ok((done, rest))
                        })
                        .await
                };
                match r {
                    Ok((done, rest)) => {
                        for (i, r) in done {
                            out[i] = Some(r);
                        }
                        todo = rest;
                        if let Some((i, DirOp::Unlink { parent, name, cred, .. })) = todo.first() {
                            out[*i] = Some(self.unlink(*parent, name, cred, &Once::none()).await.map(|_| ()));
                            todo.remove(0);
                        }
                    }
                    Err(e) => {
                        // Every change in the failed commit fails with it.
                        for i in idx {
                            out[i] = Some(Err(e.clone()));
                        }
                    }
                }
            }
        }
        let out: Vec<Result<()>> = out.into_iter().map(|r| r.unwrap_or(Err(Error::Io("change not applied".into())))).collect();
        // (a create applied again after a lost reply is counted twice: the
        // next sweep recounts)
        let used = out.iter().zip(&creates).filter(|(r, c)| **c && r.is_ok()).count();
        self.reserved.sub(owner, used as u64);
        out
    }
}

/// Apply one `DirOp::Create` in the parent shard's transaction. The inode
/// number must have been reserved there and not used yet.
/// A file made under a directory's write lease (`DirOp::Create`) by a
/// client under certificate `owner`: its number must be one reserved for
/// that certificate, and its layout the one reserved with it.
fn create_reserved(txn: &Txn, op: &DirOp, now: i64, owner: Owner) -> Result<()> {
    let DirOp::Create { parent, name, ino, layout, mode, cred, time_ns, .. } = op else {
        return Err(Error::InvalidArgument("not a create".into()));
    };
    let (parent, ino) = (parent.0, ino.0);
    check_name(name)?;
    if shard_of(ino) != shard_of(parent) {
        return Err(Error::InvalidArgument(format!("inode {ino:#x} is not of the directory's shard")));
    }
    if let Some(v) = txn.open_table(DENTRIES).io()?.get((parent, name.as_str())).io()? {
        // Already applied (a retry after a lost reply), or a clash.
        return if v.value().0 == ino { Ok(()) } else { Err(Error::Exists) };
    }
    let r = match txn.open_table(RESERVED).io()?.get(ino).io()? {
        Some(v) => Reservation::decode(v.value())?,
        None => return Err(Error::InvalidArgument(format!("inode {ino:#x} is not reserved (never, or used already)"))),
    };
    if r.owner != owner.0 {
        return Err(Error::NotPermitted(format!("inode {ino:#x} is reserved for another client")));
    }
    if r.layout != *layout {
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
    let (uid, gid, mode) = perm::new_owner(p.perms(), cred, FileKind::File, *mode);
    let rec = file_rec(mode, uid, gid, parent, layout.clone(), 1, *time_ns);
    txn.open_table(RESERVED).io()?.remove(ino).io()?;
    add_entry(txn, p, parent, name, ino, &rec, now)
}
