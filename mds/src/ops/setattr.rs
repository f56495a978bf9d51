//! `SetAttr` (chmod, chown, truncate, utimes), `UpdateSize` (a writer's
//! flush) and `Accessed` (atime).
use crate::namespace::{attr_held, Namespace};
use crate::records::GcJob;
use crate::service::MdsService;
use crate::store::{add_gc, get_inode, put_inode, ALLOCATED, INODES, IoResult};
use super::Call;
use aifs_common::{Error, InodeId, Result};
use aifs_common::lease::LeaseKind;
use aifs_common::perm::{self, Cred};
use aifs_common::proto::mds::{Attr, FileKind, MdsResp, SetAttr, TimeSet};
use aifs_common::time::now_ns;

/// A file's size is an `off_t`: at most `i64::MAX`, whether a truncate
/// or a client's flush sets it.
pub(crate) fn check_size(size: u64) -> Result<()> {
    match size > i64::MAX as u64 {
        true => Err(Error::FileTooBig),
        false => Ok(()),
    }
}

impl Namespace {
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
        let _g = self.fences.shared(ino).await;
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
        let _g = self.fences.shared(ino).await;
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
        let _g = self.fences.shared(ino).await;
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
}

impl MdsService {
    pub(crate) async fn set_attr(&self, c: &mut Call<'_>, ino: InodeId, set: SetAttr) -> Result<MdsResp> {
        let peer = c.peer;
        let cred = c.cred;
        let ns = &self.ns;
        let cl = &self.ns.cluster;
        let h = cl.holder(peer);
        let open_for_write = h.granted().is_some_and(|s| cl.session_writes(s, ino));
        if set.size.is_some() {
            // Checked before the lease is taken: a write lease is
            // held only by those who may write.
            perm::setattr((&ns.getattr(ino).await?).into(), cred, &mut set.clone(), open_for_write)?;
            // Writers elsewhere flush before the size changes under them.
            cl.acquire(&h, ino, LeaseKind::Write).await?;
        }
        // The background GC pass stays off this file's jobs until
        // this request has cut the objects itself.
        let _claim = self.gc.claim(ino);
        let (attr, job) = ns.setattr_with(ino, set, cred, open_for_write).await?;
        cl.invalidate(Some(h.id), vec![(ino, vec![])]).await;
        if let Some((shard, id, job)) = job {
            // Cut the objects before answering, so no later write
            // can land before the truncate and be cut by it.
            self.gc.apply(&job).await?;
            let _ = self.gc.remove(shard, id).await;
            self.meter.changed(ino);
        }
        Ok(MdsResp::Attr(attr))
    }

    pub(crate) async fn update_size(&self, c: &mut Call<'_>, ino: InodeId, size: u64, mtime_ns: i64) -> Result<MdsResp> {
        let peer = c.peer;
        let cred = c.cred;
        let ns = &self.ns;
        let cl = &self.ns.cluster;
        let h = cl.holder(peer);
        // A writer publishes what it wrote (it holds the write
        // lease, or has the file open for writing); anyone else
        // needs the right to write.
        if !cl.uses(&h, ino, true) && !h.granted().is_some_and(|s| cl.session_writes(s, ino)) {
            perm::access((&ns.getattr(ino).await?).into(), cred, perm::W)?;
        }
        let a = ns.update_size(ino, size, mtime_ns).await?;
        self.meter.changed(ino);
        // Normally nobody else holds a lease while a writer does;
        // a writer that lost its session may still flush.
        cl.invalidate(Some(h.id), vec![(ino, vec![])]).await;
        Ok(MdsResp::Attr(a))
    }

    pub(crate) async fn accessed(&self, c: &mut Call<'_>, ino: InodeId) -> Result<MdsResp> {
        let peer = c.peer;
        let ns = &self.ns;
        let cl = &self.ns.cluster;
        let h = cl.holder(peer);
        let a = ns.accessed(ino).await?;
        cl.invalidate(Some(h.id), vec![(ino, vec![])]).await;
        Ok(MdsResp::Attr(a))
    }
}
