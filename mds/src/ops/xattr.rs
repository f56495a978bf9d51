//! Extended attributes: get, set (`XATTR_CREATE`, `XATTR_REPLACE`), list
//! and remove.
use crate::namespace::{NAME_MAX, Namespace, XATTR_SIZE_MAX};
use crate::once::{self, Once};
use crate::service::MdsService;
use crate::store::{get_inode, put_inode, INODES, IoResult, XATTRS};
use super::Call;
use aifs_common::{Error, InodeId, Result};
use aifs_common::perm::{self, Cred};
use aifs_common::proto::mds::{MdsResp, XATTR_CREATE, XATTR_REPLACE};
use aifs_common::time::now_ns;
use redb::ReadableTable;

impl Namespace {
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
        let _g = self.fences.shared(ino).await;
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
        let _g = self.fences.shared(ino).await;
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
}

impl MdsService {
    pub(crate) async fn get_xattr(&self, c: &mut Call<'_>, ino: InodeId, name: String) -> Result<MdsResp> {
        let cred = c.cred;
        let ns = &self.ns;
        Ok(MdsResp::Bytes(ns.getxattr(ino, &name, cred).await?))
    }

    pub(crate) async fn set_xattr(&self, c: &mut Call<'_>, ino: InodeId, name: String, value: Vec<u8>, flags: u32) -> Result<MdsResp> {
        let peer = c.peer;
        let cred = c.cred;
        let once = c.once;
        let ns = &self.ns;
        let cl = &self.ns.cluster;
        let h = cl.holder(peer);
        ns.setxattr(ino, &name, value, flags, cred, once).await?;
        cl.invalidate(Some(h.id), vec![(ino, vec![])]).await;
        Ok(MdsResp::Done)
    }

    pub(crate) async fn list_xattr(&self, _c: &mut Call<'_>, ino: InodeId) -> Result<MdsResp> {
        let ns = &self.ns;
        Ok(MdsResp::Names(ns.listxattr(ino).await?))
    }

    pub(crate) async fn remove_xattr(&self, c: &mut Call<'_>, ino: InodeId, name: String) -> Result<MdsResp> {
        let peer = c.peer;
        let cred = c.cred;
        let once = c.once;
        let ns = &self.ns;
        let cl = &self.ns.cluster;
        let h = cl.holder(peer);
        ns.removexattr(ino, &name, cred, once).await?;
        cl.invalidate(Some(h.id), vec![(ino, vec![])]).await;
        Ok(MdsResp::Done)
    }
}
