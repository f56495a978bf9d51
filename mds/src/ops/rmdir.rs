//! `Rmdir`: an empty directory's entry and inode, over two shards when
//! they differ.
use crate::namespace::{check_name, Namespace};
use crate::once::Once;
use crate::records::Step;
use crate::service::MdsService;
use super::Call;
use aifs_common::{Error, InodeId, Result};
use aifs_common::perm::{self, Cred};
use aifs_common::proto::mds::{FileKind, MdsResp};

impl Namespace {
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
        let mut held = self.fences.over_found(false, parent, || self.entry_shards(parent, name)).await?;
        let (ino, kind) = self.entry_as(parent, name, Some(cred)).await?;
        if kind != FileKind::Dir {
            return Err(Error::NotDir);
        }
        let d = self.inode(ino).await?;
        perm::may_delete(self.inode(parent).await?.perms(), d.uid, cred)?;
        if d.entries > 0 {
            return Err(Error::NotEmpty);
        }
        self.run_steps(&mut held, vec![Step::RemoveEntry { dir: parent, name: name.to_string(), dir_delta: (-1, -1) }, Step::DeleteDir { ino }], rid, (ino, 0))
            .await?;
        Ok(ino)
    }
}

impl MdsService {
    pub(crate) async fn rmdir(&self, c: &mut Call<'_>, parent: InodeId, name: String) -> Result<MdsResp> {
        let (ns, cl, cred, once) = (&self.ns, &self.ns.cluster, c.cred, c.once);
        // Files made in the directory by a client under its write
        // lease reach the MDS first.
        let mut dirs = vec![parent];
        match ns.lookup(parent, &name, cred).await {
            Ok(child) if child.kind == FileKind::Dir => dirs.push(child.ino),
            Ok(_) => {}
            // Gone: `rmdir` says so, or answers a retry of the
            // request that removed it.
            Err(Error::NotFound) => {}
            Err(e) => return Err(e),
        }
        let h = self.changing(c, &dirs).await?;
        let ino = ns.rmdir(parent, &name, cred, once).await?;
        cl.invalidate(Some(h.id), vec![(parent, vec![name]), (ino, vec![])]).await;
        Ok(self.changed(None, &[parent], None).await)
    }
}
