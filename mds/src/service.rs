//! The namespace service: a request from the front (front.rs), whose
//! role the front checked against the one table of requests
//! (common/src/proto/requests.rs), waits out the grace when the table
//! says so, is given its at-most-once record, and goes to the operation
//! in ops/ that answers it.
use crate::gc::Gc;
use crate::namespace::Namespace;
use crate::ops::Call;
use aifs_common::cap::Cap;
use aifs_common::certs::Role;
use aifs_common::perm::Cred;
use aifs_common::proto::mds::{Attr, MdsCall, MdsReply, MdsReq, MdsResp, Writable};
use aifs_common::rpc::{Peer, Service};
use aifs_common::{Error, InodeId, Result};
use bytes::Bytes;
use std::sync::Arc;

pub struct MdsService {
    pub ns: Arc<Namespace>,
    pub caps: crate::caps::Caps,
    pub revoked: crate::revoked::Revocations,
    pub gc: Arc<Gc>,
    /// Measures files' disk use after they change (`st_blocks`).
    pub meter: Arc<crate::meter::Meter>,
    pub repair: Arc<crate::repair::Repair>,
    pub fsck: Arc<crate::fsck::Fsck>,
    /// The groups, their members and who leads them.
    pub replica: Arc<crate::replica::Replica>,
    pub session_heartbeat_ms: u64,
    /// Shards other than 0 may be placed apart (placing.rs).
    pub spread: bool,
    /// What a squashed root becomes: (uid, gid).
    pub anon: (u32, u32),
    /// Requests served, heartbeats not counted (`mdsctl status`; the
    /// cached-metadata benchmark counts what leases save).
    pub requests: std::sync::atomic::AtomicU64,
    /// The slowest requests of the last minute (`mdsctl top`).
    pub slowest: crate::slowest::Slowest,
}

impl MdsService {
    /// The reply to a namespace change: the new inode and the directories'
    /// attributes as committed.
    pub(crate) async fn changed(&self, attr: Option<Attr>, dirs: &[InodeId], writable: Option<Writable>) -> MdsResp {
        self.changed_file(attr, dirs, writable, None).await
    }

    /// `changed`, for a change that made or opened a file: with its
    /// capability.
    pub(crate) async fn changed_file(&self, attr: Option<Attr>, dirs: &[InodeId], writable: Option<Writable>, cap: Option<Cap>) -> MdsResp {
        let mut out = Vec::with_capacity(dirs.len());
        for (i, d) in dirs.iter().enumerate() {
            if dirs[..i].contains(d) {
                continue;
            }
            if let Ok(a) = self.ns.getattr(*d).await {
                out.push(a);
            }
        }
        MdsResp::Changed { attr, dirs: out, writable, cap }
    }

    /// Who a request from `peer` acts for: the credentials it sent, root
    /// squashed where its certificate says so. Admin certificates (and
    /// OSDs, which touch no namespace) act as root.
    fn cred(&self, peer: &Peer, sent: Cred) -> Result<Cred> {
        sent.check()?;
        Ok(match peer.role {
            Role::Client if peer.root_squash => sent.squash(self.anon.0, self.anon.1),
            Role::Client => sent,
            Role::Admin | Role::Osd | Role::Mds => Cred::root(),
        })
    }

    /// One request, to the operation in ops/ that answers it.
    async fn handle(&self, c: &mut Call<'_>, req: MdsReq) -> Result<MdsResp> {
        use MdsReq::*;
        match req {
            Lookup { parent, name } => self.lookup(c, parent, name).await,
            GetAttr { ino } => self.get_attr(c, ino).await,
            SetAttr { ino, set } => self.set_attr(c, ino, set).await,
            Create { parent, name, mode, exclusive } => self.create(c, parent, name, mode, exclusive).await,
            TmpFile { parent, mode, linkable } => self.tmp_file(c, parent, mode, linkable).await,
            Mkdir { parent, name, mode } => self.mkdir(c, parent, name, mode).await,
            Unlink { parent, name } => self.unlink(c, parent, name).await,
            Rmdir { parent, name } => self.rmdir(c, parent, name).await,
            Rename { parent, name, newparent, newname, flags } => self.rename(c, parent, name, newparent, newname, flags).await,
            Readdir { ino, cookie, max } => self.readdir(c, ino, cookie, max).await,
            ReaddirPlus { ino, cookie, max } => self.readdir_plus(c, ino, cookie, max).await,
            Symlink { parent, name, target } => self.symlink(c, parent, name, target).await,
            Mknod { parent, name, kind, mode, rdev } => self.mknod(c, parent, name, kind, mode, rdev).await,
            Readlink { ino } => self.readlink(c, ino).await,
            Link { ino, newparent, newname } => self.link(c, ino, newparent, newname).await,
            Statfs => Ok(MdsResp::Statfs(self.statfs().await)),
            GetXattr { ino, name } => self.get_xattr(c, ino, name).await,
            SetXattr { ino, name, value, flags } => self.set_xattr(c, ino, name, value, flags).await,
            ListXattr { ino } => self.list_xattr(c, ino).await,
            RemoveXattr { ino, name } => self.remove_xattr(c, ino, name).await,
            UpdateSize { ino, size, mtime_ns } => self.update_size(c, ino, size, mtime_ns).await,
            SetStripe { ino, policy } => self.set_stripe(c, ino, policy).await,
            GetStripe { ino } => self.get_stripe(c, ino).await,
            OsdMap => self.osd_map(c).await,
            OsdHeartbeat { id, addr, usage, revoked_known } => self.osd_heartbeat(c, id, addr, usage, revoked_known).await,
            Revoke { owner, name } => self.revoke(c, owner, name).await,
            Revoked => self.revoked(c).await,
            OpenSession { name, dir_leases, previous, open, locks } => self.open_session(c, name, dir_leases, previous, open, locks).await,
            SessionHeartbeat { id, io } => self.session_heartbeat(c, id, io).await,
            CloseSession { id } => self.close_session(c, id).await,
            EvictSession { id } => self.evict_session(c, id).await,
            Status => self.status(c).await,
            Open { ino, write, first, exclusive } => self.open(c, ino, write, first, exclusive).await,
            Close { ino, session } => self.close(c, ino, session).await,
            GetLock { ino, owner, start, end, write, pid, session } => self.get_lock(c, ino, owner, start, end, write, pid, session).await,
            SetLock { ino, owner, start, end, kind, pid, session } => self.set_lock(c, ino, owner, start, end, kind, pid, session).await,
            Accessed { ino } => self.accessed(c, ino).await,
            Leases { ino } => self.leases(c, ino).await,
            Fsck { repair } => self.fsck(c, repair).await,
            FsckHere { repair } => self.fsck_here(c, repair).await,
            OsdOut { id, out } => self.osd_out(c, id, out).await,
            // Answered by the MDS's front (front.rs) before they come here.
            Raft { .. } | Shard { .. } | AddMember { .. } | RemoveMember { .. } | GroupMember { .. } | Members | ShardLeaders | Leader { .. } => Err(Error::Protocol(format!("{} reached the namespace service", req.rule().name))),
            DegradedList { ino } => self.degraded_list(c, ino).await,
            ClearDegraded { ino, index, osd } => self.clear_degraded(c, ino, index, osd).await,
            FsckStatus => self.fsck_status(c).await,
            Degraded { ino, objs } => self.degraded(c, ino, objs).await,
            Reserve { dir, count } => self.reserve(c, dir, count).await,
            Unreserve { inos } => self.unreserve(c, inos).await,
            Apply { session, ops } => Ok(self.apply(c.peer, session, ops).await),
            Cap { ino, write } => self.renew_cap(c.peer, ino, write, c.cred).await,
            MoveShard { shard, to } => self.move_shard(c, shard, to).await,
        }
    }
}

impl Service for MdsService {
    type Req = MdsCall;
    type Resp = MdsReply;

    async fn call(&self, peer: &Arc<Peer>, call: MdsCall, _payload: Bytes) -> (MdsReply, Vec<Bytes>) {
        let MdsCall { rid, cred, req } = call;
        let cred = match self.cred(peer, cred) {
            Ok(c) => c,
            Err(e) => return (Self::error(e), vec![]),
        };
        let rule = req.rule();
        let arrived = std::time::Instant::now();
        // (a mutex: read only for the requests counted)
        let session = rule.counted.then(|| peer.session()).flatten();
        if rule.counted {
            self.requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Some(id) = session {
                self.ns.cluster.count_request(id);
            }
        }
        // Held from arrival to answer: a retry that comes while this attempt
        // is still served (waiting out the grace or a recall) waits for it
        // and is then answered from its record.
        let once = match self.ns.once(rid.filter(|_| rule.once)).await {
            Ok(o) => o,
            Err(e) => return (Self::error(e), vec![]),
        };
        if !rule.grace {
            self.ns.cluster.wait_grace().await;
        }
        let mut c = Call { peer, cred: &cred, once: &once, rid: rid.filter(|_| rule.numbered), grant: None };
        let resp = match self.handle(&mut c, req).await {
            Ok(r) => r,
            Err(e) => {
                e.log("mds request failed");
                MdsResp::Err(e.to_wire())
            }
        };
        if rule.counted {
            self.slowest.record(rule.name, session, arrived.elapsed());
        }
        (MdsReply { session: c.grant, resp }, vec![])
    }

    fn error(e: Error) -> MdsReply {
        MdsReply { session: None, resp: MdsResp::Err(e.to_wire()) }
    }

    fn accepts(&self, _role: Role) -> bool {
        true
    }
}
