//! MDS request dispatch: one arm per request. Who may send each, and how
//! it is retried and held during the grace, is the table in
//! common/src/proto/requests.rs, checked by the front (front.rs).
use crate::cluster::Beat;
use crate::gc::Gc;
use crate::namespace::Namespace;
use crate::once::Once;
use crate::records::OsdRec;
use crate::store::{IoResult, META, OSDS, SESSIONS};
use redb::ReadableTable;
use aifs_common::certs::Role;
use crate::leases::Holder;
use aifs_common::locks::{Lock, Refused};
use aifs_common::lease::LeaseKind;
use aifs_common::proto::mds::{Attr, ClusterStatus, DirEntry, DirOp, FileKind, LeaseMode, LockInfo, LockKind, MdsCall, MdsReply, MdsReq, MdsResp, RepairInfo, Reserved, ShardInfo, Statfs, Writable, MAX_UNRESERVE, RESERVE_BATCH};
use aifs_common::rpc::{Peer, Service};
use aifs_common::cap::{Cap, READ, WRITE};
use aifs_common::perm::{self, Cred};
use aifs_common::{Error, InodeId, OsdId, Owner, Result, SessionId};
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
    pub session_heartbeat_ms: u64,
    /// What a squashed root becomes: (uid, gid).
    pub anon: (u32, u32),
    /// Requests served, heartbeats not counted (`mdsctl status`; the
    /// cached-metadata benchmark counts what leases save).
    pub requests: std::sync::atomic::AtomicU64,
}


/// A session open's outcome as its at-most-once record keeps it (two
/// u64s): the id's halves, with `reclaimed` in the top bit, which no
/// session's id has set (`SessionId::random`).
fn pack_session(id: SessionId, reclaimed: bool) -> (u64, u64) {
    let (lo, hi) = id.halves();
    (lo, hi | (reclaimed as u64) << 63)
}

fn unpack_session((lo, hi): (u64, u64)) -> (SessionId, bool) {
    (SessionId::from_halves(lo, hi & !(1 << 63)), hi >> 63 == 1)
}

/// The sessions recorded as open (shard 0), with their owners: those of
/// the last run, at start.
pub async fn stored_sessions(ns: &Namespace) -> Result<Vec<(SessionId, Owner)>> {
    ns.shard(0)
        .read(|t| {
            let mut v = Vec::new();
            for r in t.open_table(SESSIONS).io()?.iter().io()? {
                let (k, val) = r.io()?;
                let owner = val.value().get(..32).and_then(|o| o.try_into().ok()).map(Owner);
                match owner {
                    Some(o) => v.push((SessionId(k.value()), o)),
                    None => tracing::warn!(session = %SessionId(k.value()), "stored session has no owner; not waited for"),
                }
            }
            Ok(v)
        })
        .await
}


impl MdsService {
    /// The reply to a namespace change: the new inode and the directories'
    /// attributes as committed.
    async fn changed(&self, attr: Option<Attr>, dirs: &[InodeId], writable: Option<Writable>) -> MdsResp {
        self.changed_file(attr, dirs, writable, None).await
    }

    /// `changed`, for a change that made or opened a file: with its
    /// capability.
    async fn changed_file(&self, attr: Option<Attr>, dirs: &[InodeId], writable: Option<Writable>, cap: Option<Cap>) -> MdsResp {
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

    /// `dir`'s write lease, granted to `h`: sent with inode numbers to
    /// create there. Without them (the reservation failed) the lease goes
    /// back at once; the client then creates through the MDS.
    async fn writable(&self, h: &Holder, dir: InodeId, owner: Owner, count: u32) -> Option<Writable> {
        if count == 0 {
            return Some(Writable { dir, reserved: Vec::new() });
        }
        match self.reserve(dir, count, owner).await {
            Ok(reserved) => Some(Writable { dir, reserved }),
            Err(e) => {
                tracing::warn!(%dir, error = %e, "no inode numbers reserved; directory write lease given back");
                self.ns.cluster.demote(h, dir);
                None
            }
        }
    }

    /// How many inode numbers come with a new directory's write lease: a
    /// batch, so that its first creates need no MDS (one that hangs, say),
    /// while the certificate holds under half its `max_reserved`; past
    /// that, none (many directories are made and never filled): the
    /// client asks for them at its first create there.
    fn new_dir_reserve(&self, owner: Owner) -> u32 {
        match self.ns.reserved.held(owner) < self.ns.cluster.limits.max_reserved / 2 {
            true => RESERVE_BATCH,
            false => 0,
        }
    }

    /// Inode numbers for files to be made in `dir`, each with its layout
    /// and the capability to write it.
    async fn reserve(&self, dir: InodeId, count: u32, owner: Owner) -> Result<Vec<Reserved>> {
        let v = self.ns.reserve(dir, count, owner).await?;
        Ok(v.into_iter().map(|(ino, layout)| Reserved { ino, cap: self.caps.grant_new(ino, &layout), layout }).collect())
    }

    /// An OSD went down or out: clients holding directories' write leases
    /// drop the inode numbers reserved there, whose layouts may name it,
    /// and reserve new ones.
    pub async fn placement_changed(&self) {
        let held = match self.ns.cluster.leases.lock() {
            Ok(t) => t.written(),
            Err(_) => return,
        };
        let mut dirs = Vec::new();
        for ino in held {
            if self.ns.getattr(ino).await.is_ok_and(|a| a.kind == FileKind::Dir) {
                dirs.push((ino, vec![]));
            }
        }
        if !dirs.is_empty() {
            self.ns.cluster.invalidate(None, dirs).await;
        }
    }

    /// Sessions that ended: a restart does not wait for them.
    pub async fn forget_sessions(&self, ids: &[SessionId]) -> Result<()> {
        let ids = ids.to_vec();
        self.ns
            .shard(0)
            .mutate(move |txn| {
                let mut t = txn.open_table(SESSIONS).io()?;
                for id in &ids {
                    t.remove(id.0).io()?;
                }
                Ok(())
            })
            .await
    }

    pub async fn statfs(&self) -> Statfs {
        let osds = self.ns.cluster.osd_infos();
        let total: u64 = osds.iter().map(|o| o.capacity).sum();
        let used: u64 = osds.iter().map(|o| o.used).sum();
        let files = self.ns.shard_counts().await.map(|v| v.iter().map(|c| c.1).sum()).unwrap_or(0);
        Statfs { total_bytes: total, used_bytes: used, avail_bytes: total.saturating_sub(used), files }
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

    /// May `cred` open `ino` (read, or `write`), and with which rights over
    /// its data does a capability for this caller come? Those `h`'s session
    /// was granted when it opened the file, without a new check (after a
    /// recall it takes its lease again, and an open descriptor outlives a
    /// chmod); write (if `write`) or read (if not), which the file's mode
    /// must allow the caller, else the error; and read on a write open if
    /// the caller may read. So a write-only file opened for writing gives
    /// no read.
    async fn rights(&self, h: &Holder, ino: InodeId, write: bool, cred: &Cred) -> Result<u8> {
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

    async fn handle(&self, peer: &Arc<Peer>, req: MdsReq, cred: &Cred, once: &Once<'_>, grant: &mut Option<SessionId>) -> Result<MdsResp> {
        let ns = &self.ns;
        let cl = &ns.cluster;
        Ok(match req {
            MdsReq::Lookup { parent, name } => {
                let h = cl.reader(peer, parent);
                cl.acquire(&h, parent, LeaseKind::Read).await?;
                // A negative answer is cached under the directory's lease.
                *grant = h.granted();
                let a = ns.lookup(parent, &name, cred).await?;
                let h = cl.within_limit(h, a.ino);
                *grant = h.granted();
                MdsResp::Attr(self.read_attr(&h, a.ino).await?)
            }
            MdsReq::GetAttr { ino } => {
                let h = cl.reader(peer, ino);
                let a = self.read_attr(&h, ino).await?;
                *grant = h.granted();
                MdsResp::Attr(a)
            }
            MdsReq::SetAttr { ino, set } => {
                let h = cl.holder(peer);
                let open_for_write = h.granted().is_some_and(|s| cl.session_writes(s, ino));
                if set.size.is_some() {
                    // Checked before the lease is taken: a write lease is
                    // held only by those who may write.
                    perm::setattr((&ns.getattr(ino).await?).into(), cred, &mut set.clone(), open_for_write)?;
                    // Writers elsewhere flush before the size changes under them.
                    cl.acquire(&h, ino, LeaseKind::Write).await?;
                }
                // The background GC pass stays off this file's jobs until
                // this request has cut the objects itself.
                let _claim = self.gc.claim(ino);
                let (attr, job) = ns.setattr_with(ino, set, cred, open_for_write).await?;
                cl.invalidate(Some(h.id), vec![(ino, vec![])]).await;
                if let Some((shard, id, job)) = job {
                    // Cut the objects before answering, so no later write
                    // can land before the truncate and be cut by it.
                    self.gc.apply(&job).await?;
                    let _ = self.gc.remove(shard, id).await;
                    self.meter.changed(ino);
                }
                MdsResp::Attr(attr)
            }
            MdsReq::Create { parent, name, mode, exclusive } => {
                let h = cl.holder(peer);
                if let Some(s) = h.granted() {
                    cl.may_open_more(s, None)?;
                }
                cl.acquire_read_all(&h, &[parent]).await?;
                let c = ns.create(parent, &name, mode, cred, exclusive, once).await?;
                // An existing file is opened for writing like any other.
                let rights = match (c.created, c.attr.kind) {
                    (true, _) => READ | WRITE,
                    (false, FileKind::File) => self.rights(&h, c.attr.ino, true, cred).await?,
                    (false, _) => 0,
                };
                // Created and opened: counted at once (an unlink elsewhere
                // must find it open), closed by the client later.
                let counted = c.attr.kind == FileKind::File && h.granted().is_some();
                if counted {
                    cl.opened(h.id, c.attr.ino, rights);
                }
                if c.created {
                    cl.invalidate(Some(h.id), vec![(parent, vec![name])]).await;
                }
                // The creator holds a write lease on the file; an existing
                // file is opened for writing like any other.
                let mut a = c.attr;
                if a.kind == FileKind::File {
                    if let Err(e) = cl.acquire(&h, a.ino, LeaseKind::Write).await {
                        if counted && cl.closed(h.id, a.ino) {
                            self.purge().await;
                        }
                        return Err(e);
                    }
                    if !c.created {
                        cl.wait_repair(a.ino).await;
                        a = ns.getattr(a.ino).await?;
                    }
                    *grant = h.granted();
                }
                // Nobody else looks at the directory: this client may go
                // on making files there itself.
                let writable = match c.created && cl.try_write_dir(&h, parent) {
                    true => self.writable(&h, parent, peer.owner, RESERVE_BATCH).await,
                    false => None,
                };
                let cap = (a.kind == FileKind::File).then(|| self.caps.grant(&a, rights));
                self.changed_file(Some(a), &[parent], writable, cap).await
            }
            MdsReq::TmpFile { parent, mode, linkable } => {
                let h = cl.holder(peer);
                // Open from birth: without a session it would be freed at once.
                let s = h.granted().ok_or_else(|| Error::InvalidArgument("a file with no name is made by a client session".into()))?;
                cl.may_open_more(s, None)?;
                let a = ns.tmpfile(parent, mode, cred, linkable, s, once).await?;
                // Nobody else can reach it before it has a name, so the
                // maker's write lease is at hand.
                if let Err(e) = cl.acquire(&h, a.ino, LeaseKind::Write).await {
                    if cl.closed(s, a.ino) {
                        self.purge().await;
                    }
                    return Err(e);
                }
                *grant = h.granted();
                let cap = self.caps.grant(&a, READ | WRITE);
                self.changed_file(Some(a), &[], None, Some(cap)).await
            }
            MdsReq::Mkdir { parent, name, mode } => {
                let h = cl.holder(peer);
                cl.acquire_read_all(&h, &[parent]).await?;
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
                    *grant = h.granted();
                }
                let writable = match writable && same {
                    true => self.writable(&h, a.ino, peer.owner, self.new_dir_reserve(peer.owner)).await,
                    false => None,
                };
                self.changed(Some(a), &[parent], writable).await
            }
            MdsReq::Unlink { parent, name } => {
                let h = cl.holder(peer);
                cl.acquire_read_all(&h, &[parent]).await?;
                let ino = ns.unlink(parent, &name, cred, once).await?;
                self.gc.wake.notify_one();
                cl.invalidate(Some(h.id), vec![(parent, vec![name]), (ino, vec![])]).await;
                self.changed(None, &[parent], None).await
            }
            MdsReq::Rmdir { parent, name } => {
                let h = cl.holder(peer);
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
                cl.acquire_read_all(&h, &dirs).await?;
                let ino = ns.rmdir(parent, &name, cred, once).await?;
                cl.invalidate(Some(h.id), vec![(parent, vec![name]), (ino, vec![])]).await;
                self.changed(None, &[parent], None).await
            }
            MdsReq::Rename { parent, name, newparent, newname, flags } => {
                let h = cl.holder(peer);
                let mut dirs = vec![parent, newparent];
                if let Ok(t) = ns.lookup(newparent, &newname, cred).await {
                    if t.kind == FileKind::Dir {
                        // A directory replaced must be empty, counting
                        // what a client made there under its write lease.
                        dirs.push(t.ino);
                    }
                }
                cl.acquire_read_all(&h, &dirs).await?;
                let (moved, replaced) = ns.rename(parent, &name, newparent, &newname, flags, cred, once).await?;
                self.gc.wake.notify_one();
                let mut changes = vec![(parent, vec![name]), (newparent, vec![newname]), (moved, vec![])];
                changes.extend(replaced.map(|r| (r, vec![])));
                cl.invalidate(Some(h.id), changes).await;
                self.changed(None, &[parent, newparent], None).await
            }
            MdsReq::Readdir { ino, cookie, max } => {
                let h = cl.reader(peer, ino);
                cl.acquire(&h, ino, LeaseKind::Read).await?;
                let (entries, eof, parent) = ns.readdir(ino, cookie, max, cred).await?;
                *grant = h.granted();
                MdsResp::Dir { entries, eof, parent }
            }
            MdsReq::ReaddirPlus { ino, cookie, max } => {
                let h = cl.reader(peer, ino);
                cl.acquire(&h, ino, LeaseKind::Read).await?;
                // Leases on the entries before their attributes are read:
                // writers of them flush first. Entries changed after the
                // read reach this client as invalidations of the directory.
                let (entries, eof, parent) = ns.readdir(ino, cookie, max, cred).await?;
                let inos: Vec<InodeId> = entries.iter().map(|e| e.ino).collect();
                cl.acquire_read_all(&h, &inos).await?;
                let (entries, attrs): (Vec<DirEntry>, Vec<Attr>) = ns.with_attrs(entries).await?.into_iter().unzip();
                *grant = h.granted();
                MdsResp::DirPlus { entries, attrs, eof, parent }
            }
            MdsReq::Symlink { parent, name, target } => {
                let h = cl.holder(peer);
                cl.acquire_read_all(&h, &[parent]).await?;
                let a = ns.symlink(parent, &name, &target, cred, once).await?;
                cl.invalidate(Some(h.id), vec![(parent, vec![name])]).await;
                self.changed(Some(a), &[parent], None).await
            }
            MdsReq::Mknod { parent, name, kind, mode, rdev } => {
                let h = cl.holder(peer);
                cl.acquire_read_all(&h, &[parent]).await?;
                let a = ns.mknod(parent, &name, kind, mode, cred, rdev, once).await?;
                cl.invalidate(Some(h.id), vec![(parent, vec![name])]).await;
                self.changed(Some(a), &[parent], None).await
            }
            MdsReq::Readlink { ino } => {
                MdsResp::Bytes(ns.readlink(ino).await?)
            }
            MdsReq::Link { ino, newparent, newname } => {
                let h = cl.holder(peer);
                cl.acquire_read_all(&h, &[newparent]).await?;
                // (a nameless file is named only by a session that has it open)
                let opened = h.granted().is_some_and(|s| cl.open_rights(s, ino).is_some());
                let a = ns.link(ino, newparent, &newname, cred, opened, once).await?;
                cl.invalidate(Some(h.id), vec![(newparent, vec![newname]), (ino, vec![])]).await;
                self.changed(Some(a), &[newparent], None).await
            }
            MdsReq::Statfs => {
                MdsResp::Statfs(self.statfs().await)
            }
            MdsReq::GetXattr { ino, name } => {
                MdsResp::Bytes(ns.getxattr(ino, &name, cred).await?)
            }
            MdsReq::SetXattr { ino, name, value, flags } => {
                let h = cl.holder(peer);
                ns.setxattr(ino, &name, value, flags, cred, once).await?;
                cl.invalidate(Some(h.id), vec![(ino, vec![])]).await;
                MdsResp::Done
            }
            MdsReq::ListXattr { ino } => {
                MdsResp::Names(ns.listxattr(ino).await?)
            }
            MdsReq::RemoveXattr { ino, name } => {
                let h = cl.holder(peer);
                ns.removexattr(ino, &name, cred, once).await?;
                cl.invalidate(Some(h.id), vec![(ino, vec![])]).await;
                MdsResp::Done
            }
            MdsReq::UpdateSize { ino, size, mtime_ns } => {
                let h = cl.holder(peer);
                // A writer publishes what it wrote (it holds the write
                // lease, or has the file open for writing); anyone else
                // needs the right to write.
                if !cl.uses(&h, ino, true) && !h.granted().is_some_and(|s| cl.session_writes(s, ino)) {
                    perm::access((&ns.getattr(ino).await?).into(), cred, perm::W)?;
                }
                let a = ns.update_size(ino, size, mtime_ns).await?;
                self.meter.changed(ino);
                // Normally nobody else holds a lease while a writer does;
                // a writer that lost its session may still flush.
                cl.invalidate(Some(h.id), vec![(ino, vec![])]).await;
                MdsResp::Attr(a)
            }
            MdsReq::SetStripe { ino, policy } => {
                let a = ns.set_stripe(ino, policy).await?;
                cl.invalidate(None, vec![(ino, vec![])]).await;
                MdsResp::Attr(a)
            }
            MdsReq::GetStripe { ino } => {
                let (policy, attr) = ns.get_stripe(ino).await?;
                MdsResp::Stripe { policy, attr }
            }
            MdsReq::OsdMap => {
                MdsResp::OsdMap { epoch: ns.cluster.epoch(), osds: ns.cluster.osd_infos() }
            }
            MdsReq::OsdHeartbeat { id: OsdId(id), addr, capacity, used, objects, revoked_known } => {
                if !aifs_common::rpc::tls::peer_is_osd(&peer.conn, id) {
                    tracing::warn!(osd = id, peer = %peer.addr, "heartbeat for an OSD id its certificate does not name; refused");
                    return Err(Error::Unauthorized(format!("this certificate is not OSD {id}'s")));
                }
                if addr.parse::<std::net::SocketAddr>().is_err() {
                    return Err(Error::InvalidArgument(format!("bad OSD address {addr:?}")));
                }
                let beat = ns.cluster.heartbeat(id, &addr, capacity, used, objects);
                if !matches!(beat, Beat::Same) {
                    self.repair.wake.notify_one();
                }
                if let Beat::New = beat {
                    let rec = OsdRec { addr, capacity, used };
                    let bytes = rec.encode()?;
                    ns.shard(0)
                        .mutate(move |txn| {
                            txn.open_table(OSDS).io()?.insert(id, bytes.as_slice()).io()?;
                            Ok(())
                        })
                        .await?;
                    self.gc.wake.notify_one();
                }
                MdsResp::OsdBeat { keys: self.caps.keys(), revoked: self.revoked.for_osd(revoked_known) }
            }
            MdsReq::Revoke { owner, name } => {
                let connections = self.revoked.revoke(ns, owner, &name).await?;
                let sessions = ns.cluster.sessions_of(owner);
                for id in &sessions {
                    ns.cluster.record_eviction(*id, &format!("certificate {name} revoked"));
                    ns.cluster.close_session(*id);
                }
                self.forget_sessions(&sessions).await?;
                tracing::warn!(%owner, name, connections, sessions = sessions.len(), by = %peer.addr, "certificate revoked");
                MdsResp::RevokeDone { connections: connections as u32, sessions: sessions.len() as u32 }
            }
            MdsReq::Revoked => {
                MdsResp::Revoked(crate::revoked::Revocations::list(ns).await?)
            }
            MdsReq::OpenSession { name, dir_leases, previous, open, locks } => {
                if let Some(done) = once.done {
                    let (id, reclaimed) = unpack_session(done);
                    // The reply to an earlier attempt was lost: that session
                    // is this client's (if this MDS has restarted since, the
                    // client's next heartbeat finds it gone and it comes
                    // back naming it, with its locks).
                    cl.check_owner(peer, id)?;
                    if cl.touch_session(id) {
                        cl.bind(peer, id);
                    }
                    return Ok(MdsResp::Session { id, heartbeat_ms: self.session_heartbeat_ms, reclaimed, root_squash: peer.root_squash.then_some(self.anon) });
                }
                if let Some(p) = previous {
                    cl.check_owner(peer, p)?;
                }
                // Names as long as a file name at most: `session ls` shows them.
                if name.len() > 255 {
                    return Err(Error::NameTooLong);
                }
                let id = cl.open_session(name.clone(), peer, dir_leases)?;
                let rid = once.rid;
                let reclaims = previous.is_some_and(|p| cl.waits_for(p));
                let mut stored = peer.owner.0.to_vec();
                stored.extend_from_slice(name.as_bytes());
                // Known durably before it is answered: a restart waits for it.
                ns.shard(0)
                    .mutate(move |txn| {
                        let mut t = txn.open_table(SESSIONS).io()?;
                        t.insert(id.0, stored.as_slice()).io()?;
                        if let Some(previous) = previous {
                            t.remove(previous.0).io()?;
                        }
                        drop(t);
                        crate::once::record(txn, rid, pack_session(id, reclaims))
                    })
                    .await?;
                for ino in &open {
                    // with rights unknown: a new check on the next open
                    cl.opened(id, *ino, 0);
                }
                let reclaimed = previous.is_some_and(|p| cl.came_back(p, id, &locks));
                if let Some(previous) = previous {
                    tracing::info!(session = %id, %previous, files = open.len(), locks = locks.len(), reclaimed, "client came back");
                }
                cl.bind(peer, id);
                MdsResp::Session { id, heartbeat_ms: self.session_heartbeat_ms, reclaimed, root_squash: peer.root_squash.then_some(self.anon) }
            }
            MdsReq::SessionHeartbeat { id } => {
                cl.check_owner(peer, id)?;
                if !ns.cluster.touch_session(id) {
                    return Err(Error::Stale);
                }
                ns.cluster.bind(peer, id);
                MdsResp::Done
            }
            MdsReq::CloseSession { id } => {
                cl.check_owner(peer, id)?;
                if ns.cluster.close_session(id) {
                    self.forget_sessions(&[id]).await?;
                }
                MdsResp::Done
            }
            MdsReq::EvictSession { id } => {
                if !ns.cluster.sessions.contains_key(&id) {
                    return Err(Error::NotFound);
                }
                ns.cluster.record_eviction(id, &format!("mdsctl session evict, from {}", peer.addr));
                ns.cluster.close_session(id);
                self.forget_sessions(&[id]).await?;
                MdsResp::Done
            }
            MdsReq::Status => {
                let groups: Vec<_> = ns.shards.iter().map(|s| s.group()).collect();
                let members = crate::membership::member_infos(ns, &groups).await?;
                let shards = ns
                    .shard_counts()
                    .await?
                    .into_iter()
                    .map(|(id, inodes, dentries, pending_gc, degraded)| {
                        let g = groups.get(id as usize).cloned().unwrap_or_else(|| ns.shard(id).group());
                        ShardInfo {
                            id,
                            inodes,
                            dentries,
                            pending_gc,
                            degraded,
                            commits: ns.shard(id).stats.commits.load(std::sync::atomic::Ordering::Relaxed),
                            members: g.members,
                            leader: g.leader,
                            term: g.term,
                            last_log: g.last_log,
                            applied: g.applied,
                            snapshot: g.snapshot,
                        }
                    })
                    .collect();
                MdsResp::Status(ClusterStatus {
                    shards,
                    osds: ns.cluster.osd_infos(),
                    sessions: ns.cluster.session_infos(),
                    evictions: ns.cluster.evictions(),
                    members,
                    mds_requests: self.requests.load(std::sync::atomic::Ordering::Relaxed),
                    osd_epoch: ns.cluster.epoch(),
                    statfs: self.statfs().await,
                    repair: RepairInfo {
                        repaired: self.repair.stats.repaired.load(std::sync::atomic::Ordering::Relaxed),
                        bytes: self.repair.stats.bytes.load(std::sync::atomic::Ordering::Relaxed),
                        active: self.repair.stats.active.load(std::sync::atomic::Ordering::Relaxed),
                        moved: self.repair.stats.moved.load(std::sync::atomic::Ordering::Relaxed),
                    },
                })
            }
            MdsReq::Open { ino, write, first, exclusive } => {
                let h = cl.holder(peer);
                let rights = self.rights(&h, ino, write, cred).await?;
                if first && h.granted().is_some() {
                    cl.may_open_more(h.id, Some(ino))?;
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
                        if first && h.granted().is_some() && cl.closed(h.id, ino) {
                            self.purge().await;
                        }
                        return Err(e);
                    }
                };
                *grant = h.granted();
                let lease = if h.granted().is_none() { LeaseMode::None } else { kind.into() };
                let degraded = if attr.kind == FileKind::File { ns.degraded(ino).await? } else { Vec::new() };
                let cap = self.caps.grant(&attr, rights);
                MdsResp::Opened { attr, lease, degraded, cap }
            }
            MdsReq::Close { ino, session } => {
                let s = cl.session_for(peer, session)?;
                if s.is_some_and(|s| cl.session_writes(s, ino)) {
                    // Closing a file written: fallocate changes no size.
                    self.meter.changed(ino);
                }
                if s.is_some_and(|s| cl.closed(s, ino)) {
                    self.purge().await;
                }
                MdsResp::Done
            }
            MdsReq::GetLock { ino, owner, start, end, write, pid, session } => {
                // Without a session, a fresh id that owns no lock: every
                // lock in the way conflicts.
                let session = cl.session_for(peer, session)?.unwrap_or_else(|| cl.new_session_id());
                let want = Lock { session, owner, start, end, write, pid };
                let t = cl.locks.lock().map_err(|_| Error::Io("lock table poisoned".into()))?;
                MdsResp::Lock(t.conflict(ino, &want).map(|l| LockInfo { start: l.start, end: l.end, write: l.write, pid: l.pid }))
            }
            MdsReq::SetLock { ino, owner, start, end, kind, pid, session } => {
                // Locks live as long as the session: without one there is
                // no owner to give them back when the client dies.
                let Some(session) = cl.session_for(peer, session)? else {
                    return Err(Error::Unavailable("no session to hold locks".into()));
                };
                let mut t = cl.locks.lock().map_err(|_| Error::Io("lock table poisoned".into()))?;
                let max = cl.limits.max_locks;
                let r = match kind {
                    LockKind::Unlock => t.unlock_within(ino, session, owner, start, end, max),
                    k => t.set_within(ino, Lock { session, owner, start, end, write: k == LockKind::Write, pid }, max),
                };
                match r {
                    Ok(()) => MdsResp::Done,
                    Err(Refused::Conflict(c)) => return Err(Error::WouldBlock(format!("held by pid {} on another owner", c.pid))),
                    Err(Refused::TooMany) => {
                        tracing::warn!(%session, held = t.count(session), "session at its limit of lock segments");
                        return Err(Error::NoLocks(format!("{} lock segments held by this client (max_locks)", t.count(session))));
                    }
                }
            }
            MdsReq::Accessed { ino } => {
                let h = cl.holder(peer);
                let a = ns.accessed(ino).await?;
                cl.invalidate(Some(h.id), vec![(ino, vec![])]).await;
                MdsResp::Attr(a)
            }
            MdsReq::Leases { ino } => {
                MdsResp::Leases(cl.lease_infos(ino))
            }
            MdsReq::Fsck { repair } => {
                MdsResp::Fsck(self.fsck.start(repair))
            }
            MdsReq::OsdOut { id: OsdId(id), out } => {
                if !ns.cluster.osds.contains_key(&id) {
                    return Err(Error::NotFound);
                }
                ns.shard(0)
                    .mutate(move |txn| {
                        let mut meta = txn.open_table(META).io()?;
                        let key = format!("osd_out.{id}");
                        match out {
                            true => meta.insert(key.as_str(), 1u64).io()?,
                            false => meta.remove(key.as_str()).io()?,
                        };
                        Ok(())
                    })
                    .await?;
                ns.cluster.set_out(id, out);
                tracing::warn!(osd = id, out, "OSD taken {}", if out { "out" } else { "in" });
                if out {
                    self.placement_changed().await;
                }
                self.repair.wake.notify_one();
                MdsResp::Done
            }
            // Answered by the MDS's front (front.rs) before they come here.
            MdsReq::Raft { .. } | MdsReq::AddMember { .. } | MdsReq::RemoveMember { .. } => {
                return Err(Error::Protocol(format!("{} reached the namespace service", req.rule().name)));
            }
            MdsReq::DegradedList { ino } => {
                MdsResp::DegradedList(ns.list_degraded(ino).await?)
            }
            MdsReq::ClearDegraded { ino, index, osd } => {
                let gone = ns.clear_degraded(ino, index, osd).await?;
                tracing::warn!(%ino, ?gone, "stale-replica records cleared by an admin");
                MdsResp::DegradedList(gone)
            }
            MdsReq::FsckStatus => {
                MdsResp::Fsck(self.fsck.status())
            }
            MdsReq::Degraded { ino, objs } => {
                // Only a client that uses the file reports its replicas: a
                // writer those it missed, a reader those failing their crcs.
                if !cl.uses(&cl.holder(peer), ino, false) {
                    tracing::warn!(%ino, peer = %peer.addr, "degraded replicas reported by a client that does not use the file; refused");
                    return Err(Error::NotPermitted("only a client with the file open reports its replicas degraded".into()));
                }
                tracing::warn!(%ino, ?objs, "object replicas degraded");
                ns.mark_degraded(ino, objs.clone()).await?;
                cl.tell_degraded(Some(cl.holder(peer).id), ino, objs).await;
                self.repair.wake.notify_one();
                MdsResp::Done
            }
            MdsReq::Reserve { dir, count } => {
                // Numbers are for creates under the directory's write lease.
                if !cl.holder(peer).granted().is_some_and(|s| cl.holds(s, dir, LeaseKind::Write)) {
                    return Err(Error::NotPermitted("inode numbers are reserved for the holder of the directory's write lease".into()));
                }
                MdsResp::Reserved(self.reserve(dir, count, peer.owner).await?)
            }
            MdsReq::Unreserve { inos } => {
                if inos.len() > MAX_UNRESERVE {
                    return Err(Error::InvalidArgument(format!("{} numbers given back at once (at most {MAX_UNRESERVE})", inos.len())));
                }
                ns.unreserve(&inos, peer.owner).await?;
                MdsResp::Done
            }
            MdsReq::Apply { session, ops } => {
                self.apply(peer, session, ops).await
            }
            MdsReq::Cap { ino, write } => {
                self.renew_cap(peer, ino, write, cred).await?
            }
        })
    }

    /// Changes a client made under directories' write leases. A file made
    /// and still open there counts as open and comes with a write lease
    /// (a read lease if already closed), as a `Create` would.
    async fn apply(&self, peer: &Arc<Peer>, session: Option<SessionId>, ops: Vec<DirOp>) -> MdsResp {
        let cl = &self.ns.cluster;
        let h = cl.holder(peer);
        let s = match cl.session_for(peer, session) {
            Ok(s) => s,
            Err(e) => return MdsResp::Err(e.to_wire()),
        };
        let results = self.ns.apply(ops.clone(), peer.owner).await;
        let mut changes: Vec<(InodeId, Vec<String>)> = Vec::new();
        let mut unlinked = false;
        let mut purge = false;
        for (op, r) in ops.into_iter().zip(&results) {
            match r {
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(?op, error = %e, "change made under a directory lease not applied");
                    continue;
                }
            }
            match op {
                DirOp::Create { parent, name, ino, open, .. } => {
                    if let Some(s) = s.filter(|_| open) {
                        cl.opened(s, ino, READ | WRITE);
                    }
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

    /// A new capability over `ino` for a client whose current one nears its
    /// end, or lacks a right. A session that holds a write lease gets write
    /// at once, even while the lease is being recalled (it may need it to
    /// flush): a write lease is granted after a permission check. Read
    /// comes from the session's opens or a check (a read lease is also
    /// held by whoever looked the file up). A session without a lease that
    /// suits takes it first, as `Open` does.
    async fn renew_cap(&self, peer: &Arc<Peer>, ino: InodeId, write: bool, cred: &Cred) -> Result<MdsResp> {
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

    /// Free nameless files nobody has open any more.
    pub async fn purge(&self) {
        match self.ns.purge_orphans().await {
            Ok(0) => {}
            Ok(n) => {
                tracing::debug!(files = n, "freed files unlinked while open");
                self.gc.wake.notify_one();
            }
            Err(e) => e.log("freeing unlinked files failed"),
        }
    }

    /// Attributes read under a read lease: a writer elsewhere flushes its
    /// size first.
    async fn read_attr(&self, h: &Holder, ino: InodeId) -> Result<Attr> {
        self.ns.cluster.acquire(h, ino, LeaseKind::Read).await?;
        self.ns.getattr(ino).await
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
        if rule.counted {
            self.requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
        let mut session = None;
        let resp = match self.handle(peer, req, &cred, &once, &mut session).await {
            Ok(r) => r,
            Err(e) => {
                e.log("mds request failed");
                MdsResp::Err(e.to_wire())
            }
        };
        (MdsReply { session, resp }, vec![])
    }

    fn error(e: Error) -> MdsReply {
        MdsReply { session: None, resp: MdsResp::Err(e.to_wire()) }
    }

    fn accepts(&self, _role: Role) -> bool {
        true
    }
}
