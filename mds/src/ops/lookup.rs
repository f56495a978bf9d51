//! `Lookup`: a name in a directory, under the directory's read lease (a
//! negative answer is cached under it too).
use crate::namespace::Namespace;
use crate::service::MdsService;
use super::Call;
use aifs_common::{InodeId, Result};
use aifs_common::lease::LeaseKind;
use aifs_common::perm::Cred;
use aifs_common::proto::mds::{Attr, MdsResp};

impl Namespace {
    pub async fn lookup(&self, parent: InodeId, name: &str, cred: &Cred) -> Result<Attr> {
        let parent = parent.0;
        let (ino, _) = self.entry_as(parent, name, Some(cred)).await?;
        self.getattr(InodeId(ino)).await
    }
}

impl MdsService {
    pub(crate) async fn lookup(&self, c: &mut Call<'_>, parent: InodeId, name: String) -> Result<MdsResp> {
        let peer = c.peer;
        let cred = c.cred;
        let ns = &self.ns;
        let cl = &self.ns.cluster;
        let h = cl.reader(peer, parent);
        cl.acquire(&h, parent, LeaseKind::Read).await?;
        // A negative answer is cached under the directory's lease.
        c.grant = h.granted();
        let a = ns.lookup(parent, &name, cred).await?;
        if ns.elsewhere(a.ino.shard()).is_some() {
            // Leased here, the attributes would never be recalled: they
            // change where the inode's shard is led.
            return Ok(MdsResp::AttrNoLease(a));
        }
        let h = cl.within_limit(h, a.ino);
        c.grant = h.granted();
        Ok(MdsResp::Attr(self.read_attr(&h, a.ino).await?))
    }
}
