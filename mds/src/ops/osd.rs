//! OSD requests and replica state: the OSD map, OSD heartbeats, taking
//! an OSD out, and stale (degraded) replicas reported and listed.
use crate::cluster::Beat;
use crate::records::OsdRec;
use crate::service::MdsService;
use crate::store::{IoResult, META, OSDS};
use super::Call;
use aifs_common::{Error, InodeId, OsdId, Result};
use aifs_common::proto::mds::{Degraded, FileKind, MdsResp, OsdUsage};

impl MdsService {
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

    pub(crate) async fn osd_map(&self, _c: &mut Call<'_>) -> Result<MdsResp> {
        let ns = &self.ns;
        Ok(MdsResp::OsdMap { epoch: ns.cluster.osds.epoch(), osds: ns.cluster.osds.infos() })
    }

    pub(crate) async fn osd_heartbeat(&self, c: &mut Call<'_>, OsdId(id): OsdId, addr: String, usage: OsdUsage, revoked_known: u32) -> Result<MdsResp> {
        let peer = c.peer;
        let ns = &self.ns;
        if !aifs_common::rpc::tls::peer_is_osd(&peer.conn, id) {
            tracing::warn!(osd = id, peer = %peer.addr, "heartbeat for an OSD id its certificate does not name; refused");
            return Err(Error::Unauthorized(format!("this certificate is not OSD {id}'s")));
        }
        if addr.parse::<std::net::SocketAddr>().is_err() {
            return Err(Error::InvalidArgument(format!("bad OSD address {addr:?}")));
        }
        let beat = ns.cluster.osds.heartbeat(id, &addr, &usage);
        if !matches!(beat, Beat::Same) {
            self.repair.wake.notify_one();
        }
        if let Beat::New = beat {
            let rec = OsdRec { addr, capacity: usage.capacity, used: usage.used };
            let bytes = rec.encode()?;
            ns.shard(0)
                .mutate(move |txn| {
                    txn.open_table(OSDS).io()?.insert(id, bytes.as_slice()).io()?;
                    Ok(())
                })
                .await?;
            self.gc.wake.notify_one();
        }
        Ok(MdsResp::OsdBeat { keys: self.caps.keys(), revoked: self.revoked.for_osd(revoked_known) })
    }

    pub(crate) async fn osd_out(&self, _c: &mut Call<'_>, OsdId(id): OsdId, out: bool) -> Result<MdsResp> {
        let ns = &self.ns;
        if !ns.cluster.osds.knows(id) {
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
        ns.cluster.osds.set_out(id, out);
        tracing::warn!(osd = id, out, "OSD taken {}", if out { "out" } else { "in" });
        if out {
            self.placement_changed().await;
        }
        self.repair.count_to_move().await;
        self.repair.wake.notify_one();
        Ok(MdsResp::Done)
    }

    pub(crate) async fn degraded_list(&self, _c: &mut Call<'_>, ino: Option<InodeId>) -> Result<MdsResp> {
        let ns = &self.ns;
        Ok(MdsResp::DegradedList(ns.list_degraded(ino).await?))
    }

    pub(crate) async fn clear_degraded(&self, _c: &mut Call<'_>, ino: InodeId, index: Option<u32>, osd: Option<OsdId>) -> Result<MdsResp> {
        let ns = &self.ns;
        let gone = ns.clear_degraded(ino, index, osd).await?;
        tracing::warn!(%ino, ?gone, "stale-replica records cleared by an admin");
        Ok(MdsResp::DegradedList(gone))
    }

    pub(crate) async fn degraded(&self, c: &mut Call<'_>, ino: InodeId, objs: Vec<Degraded>) -> Result<MdsResp> {
        let peer = c.peer;
        let ns = &self.ns;
        let cl = &self.ns.cluster;
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
        Ok(MdsResp::Done)
    }
}
