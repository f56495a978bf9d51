//! Admin requests: the cluster's status, who holds a lease, and revoking
//! a certificate (fsck: fsck.rs).
use crate::service::MdsService;
use super::Call;
use aifs_common::{InodeId, Owner, Result};
use crate::namespace::twophase::{ShardRead, ShardReply};
use crate::store::GroupState;
use aifs_common::proto::mds::{ClusterStatus, MdsResp, RepairInfo, ShardInfo};

/// How long `mdsctl status` waits for a shard's leader elsewhere to give
/// that shard's status before it shows this process's copy.
const STATUS_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl MdsService {
    pub(crate) async fn revoke(&self, c: &mut Call<'_>, owner: Owner, name: String) -> Result<MdsResp> {
        let peer = c.peer;
        let ns = &self.ns;
        let connections = self.revoked.revoke(ns, owner, &name).await?;
        let sessions = ns.cluster.sessions_of(owner);
        for id in &sessions {
            ns.cluster.record_eviction(*id, &format!("certificate {name} revoked"));
            ns.cluster.close_session(*id);
        }
        self.forget_sessions(&sessions).await?;
        tracing::warn!(%owner, name, connections, sessions = sessions.len(), by = %peer.addr, "certificate revoked");
        Ok(MdsResp::RevokeDone { connections: connections as u32, sessions: sessions.len() as u32 })
    }

    pub(crate) async fn revoked(&self, _c: &mut Call<'_>) -> Result<MdsResp> {
        let ns = &self.ns;
        Ok(MdsResp::Revoked(crate::revoked::Revocations::list(ns).await?))
    }

    pub(crate) async fn status(&self, _c: &mut Call<'_>) -> Result<MdsResp> {
        let ns = &self.ns;
        let wanted = crate::handover::wanted(ns).await?.map(|w| w.to);
        let placed = crate::placing::placement(ns).await?;
        // Asked of every shard's leader at once: a status waits
        // `STATUS_WAIT` at most, however many leaders are silent.
        let statuses = futures::future::try_join_all((0..ns.shards.len() as u32).map(|id| self.shard_status(id))).await?;
        let (mut shards, mut groups) = (Vec::new(), Vec::new());
        for (info, matched) in statuses {
            let nodes = ns.shard(info.id).group().nodes;
            let i = &info;
            groups.push(GroupState { members: i.members.clone(), leader: i.leader, term: i.term, last_log: i.last_log, applied: i.applied, snapshot: i.snapshot, nodes, matched });
            shards.push(ShardInfo { wanted: placed.get(&info.id).copied().or(wanted), ..info });
        }
        let members = crate::membership::member_infos(ns, &groups).await?;
        Ok(MdsResp::Status(ClusterStatus {
            shards,
            osds: ns.cluster.osds.infos(),
            sessions: ns.cluster.session_infos(),
            evictions: ns.cluster.evictions(),
            members,
            slowest: self.slowest.list(),
            mds_requests: self.requests.load(std::sync::atomic::Ordering::Relaxed),
            osd_epoch: ns.cluster.osds.epoch(),
            statfs: self.statfs().await,
            repair: RepairInfo {
                repaired: self.repair.stats.repaired.load(std::sync::atomic::Ordering::Relaxed),
                bytes: self.repair.stats.bytes.load(std::sync::atomic::Ordering::Relaxed),
                active: self.repair.stats.active.load(std::sync::atomic::Ordering::Relaxed),
                moved: self.repair.stats.moved.load(std::sync::atomic::Ordering::Relaxed),
                to_move: self.repair.stats.to_move.load(std::sync::atomic::Ordering::Relaxed),
            },
        }))
    }

    /// Shard `id` as its leader has it: asked of that process for a shard
    /// led elsewhere (its commits are counted there, and only it knows
    /// how far the other members hold the log), read here otherwise, or
    /// when that process does not answer.
    async fn shard_status(&self, id: u32) -> Result<(ShardInfo, Vec<(u64, u64)>)> {
        let ns = &self.ns;
        if let Some(remote) = ns.elsewhere(id) {
            match tokio::time::timeout(STATUS_WAIT, remote.read(id, ShardRead::Status)).await {
                Ok(Ok(ShardReply::Status(info, matched))) => return Ok((info, matched)),
                Ok(Ok(other)) => tracing::warn!(shard = id, ?other, "a shard's status answered with something else; showing this process's copy"),
                Ok(Err(e)) => tracing::debug!(shard = id, error = %e, "a shard's leader did not give its status; showing this process's copy"),
                Err(_) => tracing::debug!(shard = id, "a shard's leader gave no status in time; showing this process's copy"),
            }
        }
        if !ns.shard(id).held() {
            return Ok((self.seen_status(id), Vec::new()));
        }
        ns.shard_status(id).await
    }

    /// Shard `id`, whose group has no member here, as its members last
    /// said (others.rs): its voters, leader and inode count.
    fn seen_status(&self, id: u32) -> ShardInfo {
        let seen = self.replica.others.last(id);
        ShardInfo {
            id,
            inodes: seen.as_ref().map_or(0, |g| g.inodes),
            dentries: 0,
            commits: 0,
            pending_gc: 0,
            degraded: 0,
            members: seen.as_ref().map(|g| g.voters.clone()).unwrap_or_default(),
            leader: seen.and_then(|g| g.leader),
            term: 0,
            last_log: 0,
            applied: 0,
            snapshot: 0,
            wanted: None,
        }
    }

    /// `mdsctl shard move`: the wish recorded; the lead loops act on it
    /// (handover.rs).
    /// Shard 0, and every shard while shards are not spread, is handed
    /// over (handover.rs); another is placed (placing.rs).
    pub(crate) async fn move_shard(&self, _c: &mut Call<'_>, shard: u32, to: u64) -> Result<MdsResp> {
        if shard != 0 && self.spread {
            let voters = self.replica.voters_of(shard)?;
            crate::placing::place(&self.ns, shard, to, &voters).await?;
            tracing::info!(shard, to, "shard {shard} placed on MDS {to}");
        } else {
            crate::handover::want(&self.ns, shard, to).await?;
            tracing::info!(shard, to, "MDS {to} is wanted to lead");
        }
        Ok(MdsResp::Done)
    }

    pub(crate) async fn leases(&self, _c: &mut Call<'_>, ino: InodeId) -> Result<MdsResp> {
        let cl = &self.ns.cluster;
        Ok(MdsResp::Leases(cl.lease_infos(ino)))
    }

}
