//! Files made with no name (`open(O_TMPFILE)`): a writer fills one and
//! then names it with `linkat`, so that the file appears whole or not at
//! all. Such a file is an orphan from birth (nlink 0, in `ORPHANS`), open
//! for writing by the session that made it, and freed at its last close
//! like any file unlinked while open (`Namespace::purge_orphans`). Made
//! without `O_EXCL` it is also `LINKABLE`: one `link` from a session that
//! has it open may give it its first name, in any directory of any shard
//! (`Namespace::link`, a two-shard link when it must).
use crate::cluster::Cluster;
use crate::namespace::{choose_layout, delete_inode, file_rec, Namespace};
use crate::once::{self, Once};
use crate::store::{get_inode, put_inode, IoResult, INODES, LINKABLE, ORPHANS};
use redb::ReadableTable;
use aifs_common::cap::{READ, WRITE};
use aifs_common::ids::{InodeId, SessionId};
use aifs_common::perm::{self, Cred};
use aifs_common::proto::mds::{Attr, FileKind};
use aifs_common::time::now_ns;
use aifs_common::{Error, Result};
use std::sync::Arc;

/// Counts a nameless file open by its maker from before it exists: a purge
/// of orphans (at any other close) that ran between its commit and its
/// open would free it. Dropped without `keep`, it closes it again.
struct Pin {
    cluster: Arc<Cluster>,
    session: SessionId,
    ino: InodeId,
    kept: bool,
}

impl Pin {
    fn new(cluster: &Arc<Cluster>, session: SessionId, ino: InodeId) -> Pin {
        cluster.opened(session, ino, READ | WRITE);
        Pin { cluster: cluster.clone(), session, ino, kept: false }
    }

    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        if !self.kept {
            self.cluster.closed(self.session, self.ino);
        }
    }
}

impl Namespace {
    /// A nameless regular file for `session`, made as a create in `parent`
    /// would make it (permissions, owner, layout), and counted open by it
    /// with read and write rights.
    pub async fn tmpfile(&self, parent: InodeId, mode: u32, cred: &Cred, linkable: bool, session: SessionId, once: &Once<'_>) -> Result<Attr> {
        if let Some((ino, _)) = once.done {
            // Made by a first attempt whose answer was lost: open again,
            // unless that attempt counted it here.
            let ino = InodeId(ino);
            if !self.cluster.counts(once.rid, true) {
                return self.getattr(ino).await;
            }
            let pin = Pin::new(&self.cluster, session, ino);
            let a = self.getattr(ino).await?;
            pin.keep();
            return Ok(a);
        }
        // (remembered as counting, for a retry of this request)
        self.cluster.counts(once.rid, false);
        let parent = parent.0;
        let _g = self.fences.shared(parent).await;
        let shard = self.shard_for(parent)?.clone();
        // A number first, so that it is counted open before the file
        // exists (a crash in between skips a number).
        let ino = self.numbers.take(&shard).await?;
        let pin = Pin::new(&self.cluster, session, ino);
        let up = self.cluster.osds.placeable();
        let (cred, rid) = (cred.clone(), once.rid);
        let a = shard
            .mutate(move |txn| {
                let now = now_ns();
                let p = get_inode(&txn.open_table(INODES).io()?, parent)?;
                if p.kind != FileKind::Dir {
                    return Err(Error::NotDir);
                }
                perm::access(p.perms(), &cred, perm::X)?;
                perm::may_create(p.perms(), &cred)?;
                let (uid, gid, mode) = perm::new_owner(p.perms(), &cred, FileKind::File, mode);
                let layout = choose_layout(p.policy.unwrap_or_default(), &up, ino.0)?;
                let rec = file_rec(mode, uid, gid, parent, layout, 0, now);
                put_inode(&mut txn.open_table(INODES).io()?, ino.0, &rec)?;
                txn.open_table(ORPHANS).io()?.insert(ino.0, ()).io()?;
                if linkable {
                    txn.open_table(LINKABLE).io()?.insert(ino.0, ()).io()?;
                }
                once::record(txn, rid, (ino.0, 0))?;
                Ok(rec.attr(ino.0))
            })
            .await?;
        pin.keep();
        Ok(a)
    }

    /// May a `link` give nameless file `ino` a name?
    pub async fn linkable(&self, ino: u64) -> Result<bool> {
        let shard = crate::namespace::shard_of(ino);
        if let Some(r) = self.elsewhere(shard) {
            return crate::namespace::twophase::expect_flag(r.read(shard, crate::namespace::twophase::ShardRead::Linkable(ino)).await?);
        }
        self.shard_for(ino)?.read(move |t| Ok(t.open_table(LINKABLE).io()?.get(ino).io()?.is_some())).await
    }
}

impl Namespace {
    /// Free the nameless files no client has open any more; returns how
    /// many. Run at the last close of a file, after a session ends, and at
    /// start (when nothing is open).
    pub async fn purge_orphans(&self) -> Result<usize> {
        let mut freed = 0;
        for shard in self.led() {
            let listed = shard
                .scan(|t| {
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
}
