//! `Open` and `Cap`: a lease on a file for reading or writing, and the
//! capability over its objects that the OSDs check.
use crate::cluster::Holder;
use crate::service::MdsService;
use super::Call;
use aifs_common::{Error, InodeId, Result};
use aifs_common::cap::{READ, WRITE};
use aifs_common::lease::LeaseKind;
use aifs_common::perm::{self, Cred};
use aifs_common::proto::mds::{FileKind, LeaseMode, MdsResp};
use aifs_common::rpc::Peer;
use std::sync::Arc;

impl MdsService {
    /// A new capability over `ino` for a client whose current one nears its
    /// end, or lacks a right. A session that holds a write lease gets write
    /// at once, even while the lease is being recalled (it may need it to
    /// flush): a write lease is granted after a permission check. Read
    /// comes from the session's opens or a check (a read lease is also
    /// held by whoever looked the file up). A session without a lease that
    /// suits takes it first, as `Open` does.
    pub(crate) async fn renew_cap(&self, peer: &Arc<Peer>, ino: InodeId, write: bool, cred: &Cred) -> Result<MdsResp> {
        let cl = &self.ns.cluster;
        let h = cl.holder(peer);
        let want = if write { LeaseKind::Write } else { LeaseKind::Read };
        let held = h.granted().is_some_and(|s| cl.holds(s, ino, want));
        let rights = match held && write {
            true => WRITE | h.granted().and_then(|s| cl.open_rights(s, ino)).unwrap_or(0),
            false => self.rights(&h, ino, write, cred).await?,
        };
        if !held {
            let want = if write && cl.other_writer(h.id, ino) { LeaseKind::SharedWrite } else { want };
            cl.acquire(&h, ino, want).await?;
        }
        let a = self.ns.getattr(ino).await?;
        if a.kind != FileKind::File {
            return Err(Error::InvalidArgument(format!("{ino} is not a file")));
        }
        Ok(MdsResp::Cap(self.caps.grant(&a, rights)))
    }

    /// May `cred` open `ino` (read, or `write`), and with which rights over
    /// its data does a capability for this caller come? Those `h`'s session
    /// was granted when it opened the file, without a new check (after a
    /// recall it takes its lease again, and an open descriptor outlives a
    /// chmod); write (if `write`) or read (if not), which the file's mode
    /// must allow the caller, else the error; and read on a write open if
    /// the caller may read. So a write-only file opened for writing gives
    /// no read.
    pub(crate) async fn rights(&self, h: &Holder, ino: InodeId, write: bool, cred: &Cred) -> Result<u8> {
        let held = h.granted().and_then(|s| self.ns.cluster.open_rights(s, ino)).unwrap_or(0);
        let need = if write { WRITE } else { READ };
        if held & (need | READ) == need | READ {
            return Ok(held);
        }
        let a = self.ns.getattr(ino).await?;
        if held & need == 0 {
            perm::access((&a).into(), cred, if write { perm::W } else { perm::R })?;
        }
        let read = held & READ != 0 || perm::access((&a).into(), cred, perm::R).is_ok();
        Ok(held | need | if read { READ } else { 0 })
    }

    pub(crate) async fn open(&self, c: &mut Call<'_>, ino: InodeId, write: bool, first: bool, exclusive: bool) -> Result<MdsResp> {
        let peer = c.peer;
        let cred = c.cred;
        let ns = &self.ns;
        let cl = &self.ns.cluster;
        let h = cl.holder(peer);
        let rights = self.rights(&h, ino, write, cred).await?;
        // (an open sent again after a lost reply counts once)
        let counts = first && h.granted().is_some() && cl.counts(c.rid, c.rid.is_some_and(|r| r.retry));
        if counts {
            if let Err(e) = cl.may_open_more(h.id, Some(ino)) {
                cl.uncount(c.rid);
                return Err(e);
            }
            cl.opened(h.id, ino, rights);
        }
        cl.wait_repair(ino).await;
        let want = match write {
            false => LeaseKind::Read,
            // Several writers of one file share it, and cache no data.
            true if !exclusive && cl.other_writer(h.id, ino) => LeaseKind::SharedWrite,
            true => LeaseKind::Write,
        };
        let got = match cl.acquire(&h, ino, want).await {
            // only a regular file is opened here, and gets a
            // capability over objects (the kernel opens the others)
            Ok(k) => ns.getattr(ino).await.and_then(|a| match a.kind {
                FileKind::File => Ok((k, a)),
                FileKind::Dir => Err(Error::IsDir),
                other => Err(Error::InvalidArgument(format!("open of a {other:?} for data"))),
            }),
            Err(e) => Err(e),
        };
        let (kind, attr) = match got {
            Ok(x) => x,
            Err(e) => {
                if counts {
                    cl.uncount(c.rid);
                    if cl.closed(h.id, ino) {
                        self.purge().await;
                    }
                }
                return Err(e);
            }
        };
        c.grant = h.granted();
        let lease = if h.granted().is_none() { LeaseMode::None } else { kind.into() };
        let degraded = if attr.kind == FileKind::File { ns.degraded(ino).await? } else { Vec::new() };
        let cap = self.caps.grant(&attr, rights);
        Ok(MdsResp::Opened { attr, lease, degraded, cap })
    }
}
