//! `Mkdir`: the entry in the parent's shard, the new directory on the
//! shard its name hashes to (the parent's, when another process leads
//! that one), as steps over both (namespace/steps.rs); the maker gets the
//! new directory's write lease.
use crate::namespace::{check_name, dir_rec, shard_of, LINK_MAX, Namespace};
use crate::once::Once;
use crate::records::Step;
use crate::service::MdsService;
use super::Call;
use aifs_common::{Error, InodeId, Owner, Result};
use aifs_common::lease::LeaseKind;
use aifs_common::perm::{self, Cred};
use aifs_common::proto::mds::{Attr, FileKind, MdsResp, RESERVE_BATCH};
use aifs_common::time::now_ns;

impl Namespace {
    pub async fn mkdir(&self, parent: InodeId, name: &str, mode: u32, cred: &Cred, once: &Once<'_>) -> Result<Attr> {
        let parent = parent.0;
        check_name(name)?;
        if let Some((ino, _)) = once.done {
            return self.getattr(InodeId(ino)).await;
        }
        let rid = once.rid;
        // New directories spread over the shards by their names
        // (`Namespace::dir_shard`), those led by other processes too (their inode numbers come in blocks
        // from those shards' leaders, and the mkdir is a two-phase
        // change): made in one place, they would load only the shards
        // led where they were made. Should that shard's leader not be
        // known or not answer (being elected), the directory goes to its
        // parent's shard, led here: a mkdir does not wait on another
        // shard's election. The number is taken before the checks (one
        // a failed mkdir leaves unused is never given).
        let hashed = self.dir_shard(parent, name);
        let (target, ino) = match self.number_in(hashed).await {
            Ok(ino) => (hashed, ino.0),
            Err(e) if self.elsewhere(hashed).is_some() => {
                tracing::debug!(shard = hashed, error = %e, "no number of the shard a new directory hashes to: made in its parent's");
                (shard_of(parent), self.number_in(shard_of(parent)).await?.0)
            }
            Err(e) => return Err(e),
        };
        let mut held = self.fences.over_shards(parent, &[shard_of(parent), target]).await?;
        let p = self.inode(parent).await?;
        match self.entry_as(parent, name, Some(cred)).await {
            Ok(_) => return Err(Error::Exists),
            Err(Error::NotFound) => {}
            Err(e) => return Err(e),
        }
        perm::may_create(p.perms(), cred)?;
        if p.nlink >= LINK_MAX {
            return Err(Error::TooManyLinks);
        }
        let (uid, gid, mode) = perm::new_owner(p.perms(), cred, FileKind::Dir, mode);
        let rec = dir_rec(mode, uid, gid, parent, p.policy, now_ns());
        let attr = rec.attr(ino);
        self.run_steps(
            &mut held,
            vec![
                Step::CreateInode { ino, rec },
                Step::InsertEntry { dir: parent, name: name.to_string(), ino, kind: FileKind::Dir, dir_delta: (1, 1) },
            ],
            rid,
            (ino, 0),
        )
        .await?;
        Ok(attr)
    }
}

impl MdsService {
    /// How many inode numbers come with a new directory's write lease: a
    /// batch, so that its first creates need no MDS (one that hangs, say),
    /// while the certificate holds under half its `max_reserved`; past
    /// that, none (many directories are made and never filled): the
    /// client asks for them at its first create there.
    pub(crate) fn new_dir_reserve(&self, owner: Owner) -> u32 {
        match self.ns.reserved.held(owner) < self.ns.cluster.limits.max_reserved / 2 {
            true => RESERVE_BATCH,
            false => 0,
        }
    }

    pub(crate) async fn mkdir(&self, c: &mut Call<'_>, parent: InodeId, name: String, mode: u32) -> Result<MdsResp> {
        let (ns, cl, cred, once) = (&self.ns, &self.ns.cluster, c.cred, c.once);
        let h = self.changing(c, &[parent]).await?;
        let a = ns.mkdir(parent, &name, mode, cred, once).await?;
        cl.invalidate(Some(h.id), vec![(parent, vec![name])]).await;
        // The maker holds the new directory's entries: none, and,
        // unless someone else looked already, its write lease. If
        // it changed before the lease was taken, say nothing.
        let writable = cl.try_write_dir(&h, a.ino);
        if !writable {
            cl.acquire(&h, a.ino, LeaseKind::Read).await?;
        }
        let same = ns.getattr(a.ino).await.is_ok_and(|now| now.mtime_ns == a.mtime_ns);
        if same {
            c.grant = h.granted();
        }
        let writable = match writable && same {
            true => self.writable(&h, a.ino, c.peer.owner, self.new_dir_reserve(c.peer.owner)).await,
            false => None,
        };
        Ok(self.changed(Some(a), &[parent], writable).await)
    }
}
