//! `Unlink`: a name removed, and its inode when that was the last link
//! and nobody has the file open; over two shards when the inode lives
//! elsewhere.
use crate::namespace::{check_name, unlink_here, Namespace, Unlinked};
use crate::once::{self, Once};
use crate::records::Step;
use crate::service::MdsService;
use super::Call;
use aifs_common::{Error, InodeId, Result};
use aifs_common::perm::{self, Cred};
use aifs_common::proto::mds::{FileKind, MdsResp};
use aifs_common::time::now_ns;

impl Namespace {
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
            let _g = self.fences.shared(parent).await;
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
        let mut held = self.fences.over_found(false, parent, || self.entry_shards(parent, name)).await?;
        let (ino, kind) = self.entry_as(parent, name, Some(cred)).await?;
        if kind == FileKind::Dir {
            return Err(Error::IsDir);
        }
        perm::may_delete(self.inode(parent).await?.perms(), self.inode(ino).await?.uid, cred)?;
        self.run_steps(&mut held, vec![Step::RemoveEntry { dir: parent, name: name.to_string(), dir_delta: (-1, 0) }, Step::DropLink { ino }], rid, (ino, 0))
            .await?;
        Ok(ino)
    }
}

impl MdsService {
    pub(crate) async fn unlink(&self, c: &mut Call<'_>, parent: InodeId, name: String) -> Result<MdsResp> {
        let (ns, cl, cred, once) = (&self.ns, &self.ns.cluster, c.cred, c.once);
        let h = self.changing(c, &[parent]).await?;
        let ino = ns.unlink(parent, &name, cred, once).await?;
        self.gc.wake.notify_one();
        cl.invalidate(Some(h.id), vec![(parent, vec![name]), (ino, vec![])]).await;
        Ok(self.changed(None, &[parent], None).await)
    }
}
