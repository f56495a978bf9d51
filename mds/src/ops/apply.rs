//! Changes a client answered itself under directories' write leases
//! (applied.rs holds their transaction), and the inode numbers reserved
//! for them: `Apply`, `Reserve`, `Unreserve`.
use crate::cluster::Holder;
use crate::service::MdsService;
use super::Call;
use aifs_common::{Error, InodeId, Owner, Result, SessionId};
use aifs_common::cap::{READ, WRITE};
use aifs_common::lease::LeaseKind;
use aifs_common::proto::mds::{DirOp, MAX_UNRESERVE, MdsResp, Reserved, Writable};
use aifs_common::rpc::Peer;
use std::sync::Arc;

impl MdsService {
    /// Inode numbers for files to be made in `dir`, each with its layout
    /// and the capability to write it.
    pub(crate) async fn reserve_numbers(&self, dir: InodeId, count: u32, owner: Owner) -> Result<Vec<Reserved>> {
        let v = self.ns.reserve(dir, count, owner).await?;
        Ok(v.into_iter().map(|(ino, layout)| Reserved { ino, cap: self.caps.grant_new(ino, &layout), layout }).collect())
    }

    /// `dir`'s write lease, granted to `h`: sent with inode numbers to
    /// create there. Without them (the reservation failed) the lease goes
    /// back at once; the client then creates through the MDS.
    pub(crate) async fn writable(&self, h: &Holder, dir: InodeId, owner: Owner, count: u32) -> Option<Writable> {
        if count == 0 {
            return Some(Writable { dir, reserved: Vec::new() });
        }
        match self.reserve_numbers(dir, count, owner).await {
            Ok(reserved) => Some(Writable { dir, reserved }),
            Err(e) => {
                tracing::warn!(%dir, error = %e, "no inode numbers reserved; directory write lease given back");
                self.ns.cluster.demote(h, dir);
                None
            }
        }
    }

    /// Changes a client made under directories' write leases. A file made
    /// and still open there counts as open and comes with a write lease
    /// (a read lease if already closed), as a `Create` would.
    ///
    /// It counts as open from before the batch is applied: a file made
    /// and unlinked in one batch while its maker still has it open (a
    /// temporary file: open, unlink, then write and read through the
    /// descriptor) must stay, nameless, until the last close, as any
    /// file unlinked while open does. Counted only after, the unlink
    /// found it closed and removed it with its data, and the descriptor's
    /// next fsync failed with ENOENT.
    pub(crate) async fn apply(&self, peer: &Arc<Peer>, session: Option<SessionId>, ops: Vec<DirOp>) -> MdsResp {
        let cl = &self.ns.cluster;
        let h = cl.holder(peer);
        let s = match cl.session_for(peer, session) {
            Ok(s) => s,
            Err(e) => return MdsResp::Err(e.to_wire()),
        };
        // The opens this batch counted (not those an earlier attempt of
        // it, or the session's reopen, counted already).
        let made_open: Vec<(usize, InodeId)> = match s {
            Some(s) => ops.iter().enumerate().filter(|(_, op)| matches!(op, DirOp::Create { open: true, .. }) && cl.made_open(s, op.ino(), READ | WRITE)).map(|(i, op)| (i, op.ino())).collect(),
            None => Vec::new(),
        };
        let results = self.ns.apply(ops.clone(), peer.owner).await;
        // A change that could not commit here (this process lost its
        // shard's lead meanwhile) was not refused: the whole batch is
        // sent elsewhere, as a request that found no leader is (applying
        // a change twice changes nothing). Answered as refused, the
        // client would drop a file it already told its caller was made.
        let unreachable = results.iter().filter_map(|r| r.as_ref().err()).find(|e| e.unreachable()).cloned();
        if let Some(s) = s {
            for (i, ino) in &made_open {
                if unreachable.is_some() || results.get(*i).is_none_or(|r| r.is_err()) {
                    cl.closed(s, *ino);
                }
            }
        }
        if let Some(e) = unreachable {
            return MdsResp::Err(e.to_wire());
        }
        let mut changes: Vec<(InodeId, Vec<String>)> = Vec::new();
        let mut unlinked = false;
        let mut purge = false;
        // Made and removed in this batch, and not kept open: gone before
        // a lease could be granted on it, and its commit already forgot
        // the leases on it (the store's gone hook, namespace/mod.rs).
        let removed: std::collections::HashSet<InodeId> =
            ops.iter().zip(&results).filter(|(op, r)| r.is_ok() && matches!(op, DirOp::Unlink { .. } | DirOp::Rmdir { .. })).map(|(op, _)| op.ino()).collect();
        let gone = |ino: InodeId, open: bool| removed.contains(&ino) && !(open && s.is_some());
        for (op, r) in ops.into_iter().zip(&results) {
            match r {
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(?op, error = %e, "change made under a directory lease not applied");
                    continue;
                }
            }
            match op {
                DirOp::Create { parent, name, ino, open, .. } if gone(ino, open) => changes.push((parent, vec![name])),
                DirOp::Mkdir { parent, name, ino, .. } if gone(ino, false) => changes.push((parent, vec![name])),
                DirOp::Create { parent, name, ino, open, .. } => {
                    cl.try_acquire(&h, ino, if open { LeaseKind::Write } else { LeaseKind::Read });
                    changes.push((parent, vec![name]));
                }
                DirOp::Mkdir { parent, name, ino, .. } => {
                    // Nobody else has seen it: its maker's write lease is
                    // at hand, as the client already took it.
                    if !cl.try_write_dir(&h, ino) {
                        tracing::warn!(%ino, "the write lease of a directory made under its parent's write lease was not granted");
                        cl.try_acquire(&h, ino, LeaseKind::Read);
                    }
                    changes.push((parent, vec![name]));
                }
                DirOp::Unlink { parent, name, ino, .. } | DirOp::Rmdir { parent, name, ino, .. } => {
                    unlinked = true;
                    changes.push((parent, vec![name]));
                    changes.push((ino, vec![]));
                }
                DirOp::Close { ino } => purge |= s.is_some_and(|s| cl.closed(s, ino)),
            }
        }
        if unlinked {
            self.gc.wake.notify_one();
        }
        if purge {
            self.purge().await;
        }
        cl.invalidate(Some(h.id), changes).await;
        MdsResp::Applied(results.into_iter().map(|r| r.err().map(|e| e.to_wire())).collect())
    }

    pub(crate) async fn reserve(&self, c: &mut Call<'_>, dir: InodeId, count: u32) -> Result<MdsResp> {
        let peer = c.peer;
        let cl = &self.ns.cluster;
        // Numbers are for creates under the directory's write lease.
        if !cl.holder(peer).granted().is_some_and(|s| cl.holds(s, dir, LeaseKind::Write)) {
            return Err(Error::NotPermitted("inode numbers are reserved for the holder of the directory's write lease".into()));
        }
        Ok(MdsResp::Reserved(self.reserve_numbers(dir, count, peer.owner).await?))
    }

    pub(crate) async fn unreserve(&self, c: &mut Call<'_>, inos: Vec<InodeId>) -> Result<MdsResp> {
        let peer = c.peer;
        let _once = c.once;
        let ns = &self.ns;
        if inos.len() > MAX_UNRESERVE {
            return Err(Error::InvalidArgument(format!("{} numbers given back at once (at most {MAX_UNRESERVE})", inos.len())));
        }
        ns.unreserve(&inos, peer.owner).await?;
        Ok(MdsResp::Done)
    }
}
