//! `Link`: a new name for a file, over two shards when the file lives
//! in another.
use crate::namespace::{check_name, LINK_MAX, Namespace};
use crate::once::Once;
use crate::records::Step;
use crate::service::MdsService;
use super::Call;
use aifs_common::{Error, InodeId, Result};
use aifs_common::perm::{self, Cred};
use aifs_common::proto::mds::{Attr, FileKind, MdsResp};

impl Namespace {
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
        let mut held = self.fences.over(newparent, &[ino, newparent]).await?;
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
            &mut held,
            vec![Step::AddLink { ino }, Step::InsertEntry { dir: newparent, name: newname.to_string(), ino, kind: r.kind, dir_delta: (1, 0) }],
            rid,
            (ino, 0),
        )
        .await?;
        self.getattr(InodeId(ino)).await
    }
}

impl MdsService {
    pub(crate) async fn link(&self, c: &mut Call<'_>, ino: InodeId, newparent: InodeId, newname: String) -> Result<MdsResp> {
        let (ns, cl, cred, once) = (&self.ns, &self.ns.cluster, c.cred, c.once);
        let h = self.changing(c, &[newparent]).await?;
        // (a nameless file is named only by a session that has it open)
        let opened = h.granted().is_some_and(|s| cl.open_rights(s, ino).is_some());
        let a = ns.link(ino, newparent, &newname, cred, opened, once).await?;
        cl.invalidate(Some(h.id), vec![(newparent, vec![newname]), (ino, vec![])]).await;
        Ok(self.changed(Some(a), &[newparent], None).await)
    }
}
