//! `Symlink`, `Mknod` (FIFOs, sockets, device nodes) and `Readlink`:
//! inodes with no data, made in the parent's shard.
use crate::namespace::{add_entry, check_name, Namespace, PATH_MAX};
use crate::once::{self, Once};
use crate::records::InodeRec;
use crate::service::MdsService;
use crate::store::{get_inode, next_counter, DENTRIES, INODES, IoResult, META};
use super::Call;
use aifs_common::{Error, InodeId, Result};
use aifs_common::perm::{self, Cred};
use aifs_common::proto::mds::{Attr, FileKind, MdsResp};
use aifs_common::time::now_ns;
use redb::ReadableTable;

/// What `make_node` makes, and for whom (its owner, as the directory
/// decides: `perm::new_owner`).
pub(crate) struct Node {
    kind: FileKind,
    perm: u32,
    cred: Cred,
    /// Symlinks: the target.
    target: Option<String>,
    /// Device nodes: the device number.
    rdev: u32,
}

impl Namespace {
    pub async fn readlink(&self, ino: InodeId) -> Result<Vec<u8>> {
        let ino = ino.0;
        let r = self.inode(ino).await?;
        match (r.kind, r.target) {
            (FileKind::Symlink, Some(t)) => Ok(t.into_bytes()),
            _ => Err(Error::InvalidArgument("not a symlink".into())),
        }
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
        let _g = self.fences.shared(parent).await;
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
}

impl MdsService {
    pub(crate) async fn symlink(&self, c: &mut Call<'_>, parent: InodeId, name: String, target: String) -> Result<MdsResp> {
        let (ns, cl, cred, once) = (&self.ns, &self.ns.cluster, c.cred, c.once);
        let h = self.changing(c, &[parent]).await?;
        let a = ns.symlink(parent, &name, &target, cred, once).await?;
        cl.invalidate(Some(h.id), vec![(parent, vec![name])]).await;
        Ok(self.changed(Some(a), &[parent], None).await)
    }

    pub(crate) async fn mknod(&self, c: &mut Call<'_>, parent: InodeId, name: String, kind: FileKind, mode: u32, rdev: u32) -> Result<MdsResp> {
        let (ns, cl, cred, once) = (&self.ns, &self.ns.cluster, c.cred, c.once);
        let h = self.changing(c, &[parent]).await?;
        let a = ns.mknod(parent, &name, kind, mode, cred, rdev, once).await?;
        cl.invalidate(Some(h.id), vec![(parent, vec![name])]).await;
        Ok(self.changed(Some(a), &[parent], None).await)
    }

    pub(crate) async fn readlink(&self, _c: &mut Call<'_>, ino: InodeId) -> Result<MdsResp> {
        let ns = &self.ns;
        Ok(MdsResp::Bytes(ns.readlink(ino).await?))
    }
}
