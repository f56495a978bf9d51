//! MDS request dispatch: one arm per request, with the role each needs.
use crate::cluster::Beat;
use crate::gc::Gc;
use crate::namespace::Namespace;
use crate::records::OsdRec;
use crate::store::{IoResult, OSDS};
use aifs_common::certs::Role;
use aifs_common::proto::mds::{Attr, ClusterStatus, MdsReq, MdsResp, ShardInfo, Statfs};
use aifs_common::rpc::{Peer, Service};
use aifs_common::{Error, Result};
use bytes::Bytes;
use std::sync::Arc;

pub struct MdsService {
    pub ns: Arc<Namespace>,
    pub gc: Arc<Gc>,
    pub session_heartbeat_ms: u64,
}

fn need(peer: &Peer, roles: &[Role]) -> Result<()> {
    if roles.contains(&peer.role) {
        Ok(())
    } else {
        Err(Error::Unauthorized(format!("a {} certificate cannot do this", peer.role.name())))
    }
}

const NS: &[Role] = &[Role::Client, Role::Admin];
const ADMIN: &[Role] = &[Role::Admin];

impl MdsService {
    /// The reply to a namespace change: the new inode and the directories'
    /// attributes as committed.
    async fn changed(&self, attr: Option<Attr>, dirs: &[u64]) -> MdsResp {
        let mut out = Vec::with_capacity(dirs.len());
        for (i, d) in dirs.iter().enumerate() {
            if dirs[..i].contains(d) {
                continue;
            }
            if let Ok(a) = self.ns.getattr(*d).await {
                out.push(a);
            }
        }
        MdsResp::Changed { attr, dirs: out }
    }

    pub async fn statfs(&self) -> Statfs {
        let osds = self.ns.cluster.osd_infos();
        let total: u64 = osds.iter().map(|o| o.capacity).sum();
        let used: u64 = osds.iter().map(|o| o.used).sum();
        let files = self.ns.shard_counts().await.map(|v| v.iter().map(|c| c.1).sum()).unwrap_or(0);
        Statfs { total_bytes: total, used_bytes: used, avail_bytes: total.saturating_sub(used), files }
    }

    async fn handle(&self, peer: &Arc<Peer>, req: MdsReq) -> Result<MdsResp> {
        let ns = &self.ns;
        Ok(match req {
            MdsReq::Lookup { parent, name } => {
                need(peer, NS)?;
                MdsResp::Attr(ns.lookup(parent, &name).await?)
            }
            MdsReq::GetAttr { ino } => {
                need(peer, NS)?;
                MdsResp::Attr(ns.getattr(ino).await?)
            }
            MdsReq::SetAttr { ino, set } => {
                need(peer, NS)?;
                let gc = self.gc.clone();
                let claim: Box<dyn Fn(u32, u64) + Send> = Box::new(move |shard, id| gc.claim(shard, id));
                let (attr, job) = ns.setattr_with(ino, set, Some(claim)).await?;
                if let Some((shard, id, job)) = job {
                    // Cut the objects before answering, so no later write
                    // can land before the truncate and be cut by it. The
                    // job is claimed: the background pass stays off it.
                    let r = self.gc.apply(&job).await;
                    if r.is_ok() {
                        let _ = self.gc.remove(shard, id).await;
                    }
                    self.gc.unclaim(shard, id);
                    r?;
                }
                MdsResp::Attr(attr)
            }
            MdsReq::Create { parent, name, mode, uid, gid, exclusive } => {
                need(peer, NS)?;
                let a = ns.create(parent, &name, mode, uid, gid, exclusive).await?.attr;
                self.changed(Some(a), &[parent]).await
            }
            MdsReq::Mkdir { parent, name, mode, uid, gid } => {
                need(peer, NS)?;
                let a = ns.mkdir(parent, &name, mode, uid, gid).await?;
                self.changed(Some(a), &[parent]).await
            }
            MdsReq::Unlink { parent, name } => {
                need(peer, NS)?;
                ns.unlink(parent, &name).await?;
                self.gc.wake.notify_one();
                self.changed(None, &[parent]).await
            }
            MdsReq::Rmdir { parent, name } => {
                need(peer, NS)?;
                ns.rmdir(parent, &name).await?;
                self.changed(None, &[parent]).await
            }
            MdsReq::Rename { parent, name, newparent, newname, flags } => {
                need(peer, NS)?;
                ns.rename(parent, &name, newparent, &newname, flags).await?;
                self.gc.wake.notify_one();
                self.changed(None, &[parent, newparent]).await
            }
            MdsReq::Readdir { ino, cookie, max } => {
                need(peer, NS)?;
                let (entries, eof, parent) = ns.readdir(ino, cookie, max).await?;
                MdsResp::Dir { entries, eof, parent }
            }
            MdsReq::ReaddirPlus { ino, cookie, max } => {
                need(peer, NS)?;
                let (pairs, eof, parent) = ns.readdir_plus(ino, cookie, max).await?;
                let (entries, attrs) = pairs.into_iter().unzip();
                MdsResp::DirPlus { entries, attrs, eof, parent }
            }
            MdsReq::Symlink { parent, name, target, uid, gid } => {
                need(peer, NS)?;
                let a = ns.symlink(parent, &name, &target, uid, gid).await?;
                self.changed(Some(a), &[parent]).await
            }
            MdsReq::Readlink { ino } => {
                need(peer, NS)?;
                MdsResp::Bytes(ns.readlink(ino).await?)
            }
            MdsReq::Link { ino, newparent, newname } => {
                need(peer, NS)?;
                let a = ns.link(ino, newparent, &newname).await?;
                self.changed(Some(a), &[newparent]).await
            }
            MdsReq::Statfs => {
                need(peer, NS)?;
                MdsResp::Statfs(self.statfs().await)
            }
            MdsReq::GetXattr { ino, name } => {
                need(peer, NS)?;
                MdsResp::Bytes(ns.getxattr(ino, &name).await?)
            }
            MdsReq::SetXattr { ino, name, value, flags } => {
                need(peer, NS)?;
                ns.setxattr(ino, &name, value, flags).await?;
                MdsResp::Done
            }
            MdsReq::ListXattr { ino } => {
                need(peer, NS)?;
                MdsResp::Names(ns.listxattr(ino).await?)
            }
            MdsReq::RemoveXattr { ino, name } => {
                need(peer, NS)?;
                ns.removexattr(ino, &name).await?;
                MdsResp::Done
            }
            MdsReq::UpdateSize { ino, size, mtime_ns } => {
                need(peer, NS)?;
                MdsResp::Attr(ns.update_size(ino, size, mtime_ns).await?)
            }
            MdsReq::SetStripe { ino, policy } => {
                need(peer, ADMIN)?;
                MdsResp::Attr(ns.set_stripe(ino, policy).await?)
            }
            MdsReq::GetStripe { ino } => {
                need(peer, NS)?;
                let (policy, attr) = ns.get_stripe(ino).await?;
                MdsResp::Stripe { policy, attr }
            }
            MdsReq::OsdMap => {
                need(peer, &[Role::Client, Role::Admin, Role::Osd])?;
                MdsResp::OsdMap { epoch: ns.cluster.epoch(), osds: ns.cluster.osd_infos() }
            }
            MdsReq::OsdHeartbeat { id, addr, capacity, used, objects } => {
                need(peer, &[Role::Osd])?;
                if addr.parse::<std::net::SocketAddr>().is_err() {
                    return Err(Error::InvalidArgument(format!("bad OSD address {addr:?}")));
                }
                if let Beat::New = ns.cluster.heartbeat(id, &addr, capacity, used, objects) {
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
                MdsResp::Done
            }
            MdsReq::OpenSession { name } => {
                need(peer, NS)?;
                let id = ns.cluster.open_session(name, peer.addr.to_string());
                MdsResp::Session { id, heartbeat_ms: self.session_heartbeat_ms }
            }
            MdsReq::SessionHeartbeat { id } => {
                need(peer, NS)?;
                if !ns.cluster.touch_session(id) {
                    return Err(Error::Stale);
                }
                MdsResp::Done
            }
            MdsReq::CloseSession { id } => {
                need(peer, NS)?;
                ns.cluster.close_session(id);
                MdsResp::Done
            }
            MdsReq::EvictSession { id } => {
                need(peer, ADMIN)?;
                if !ns.cluster.close_session(id) {
                    return Err(Error::NotFound);
                }
                tracing::warn!(session = id, by = %peer.addr, "session evicted");
                MdsResp::Done
            }
            MdsReq::Status => {
                need(peer, ADMIN)?;
                let shards = ns
                    .shard_counts()
                    .await?
                    .into_iter()
                    .map(|(id, inodes, dentries, pending_gc)| ShardInfo {
                        id,
                        inodes,
                        dentries,
                        pending_gc,
                        commits: ns.shard(id).stats.commits.load(std::sync::atomic::Ordering::Relaxed),
                    })
                    .collect();
                MdsResp::Status(ClusterStatus {
                    shards,
                    osds: ns.cluster.osd_infos(),
                    sessions: ns.cluster.session_infos(),
                    osd_epoch: ns.cluster.epoch(),
                    statfs: self.statfs().await,
                })
            }
        })
    }
}

impl Service for MdsService {
    type Req = MdsReq;
    type Resp = MdsResp;

    async fn call(&self, peer: &Arc<Peer>, req: MdsReq, _payload: Bytes) -> (MdsResp, Vec<Bytes>) {
        match self.handle(peer, req).await {
            Ok(r) => (r, vec![]),
            Err(e) => {
                e.log("mds request failed");
                (MdsResp::Err(e.to_wire()), vec![])
            }
        }
    }

    fn error(e: Error) -> MdsResp {
        MdsResp::Err(e.to_wire())
    }

    fn accepts(&self, _role: Role) -> bool {
        true
    }
}
