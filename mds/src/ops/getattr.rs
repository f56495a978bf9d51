//! `GetAttr` under a read lease, and `Statfs`.
use crate::cluster::Holder;
use crate::service::MdsService;
use super::Call;
use aifs_common::{InodeId, Result};
use aifs_common::lease::LeaseKind;
use aifs_common::proto::mds::{Attr, MdsResp, Statfs};

impl MdsService {
    pub async fn statfs(&self) -> Statfs {
        let osds = self.ns.cluster.osds.infos();
        let total: u64 = osds.iter().map(|o| o.capacity).sum();
        let used: u64 = osds.iter().map(|o| o.used).sum();
        let here: u64 = self.ns.shard_counts().await.map(|v| v.iter().map(|c| c.1).sum()).unwrap_or(0);
        // Shards not held here, as their members last counted them.
        let elsewhere: u64 = (0..self.replica.shards()).filter(|s| self.replica.group(*s).is_none()).filter_map(|s| self.replica.others.last(s)).map(|g| g.inodes).sum();
        let files = here + elsewhere;
        Statfs { total_bytes: total, used_bytes: used, avail_bytes: total.saturating_sub(used), files }
    }

    /// Attributes read under a read lease: a writer elsewhere flushes its
    /// size first.
    pub(crate) async fn read_attr(&self, h: &Holder, ino: InodeId) -> Result<Attr> {
        self.ns.cluster.acquire(h, ino, LeaseKind::Read).await?;
        self.ns.getattr(ino).await
    }

    pub(crate) async fn get_attr(&self, c: &mut Call<'_>, ino: InodeId) -> Result<MdsResp> {
        let peer = c.peer;
        let cl = &self.ns.cluster;
        let h = cl.reader(peer, ino);
        let a = self.read_attr(&h, ino).await?;
        c.grant = h.granted();
        Ok(MdsResp::Attr(a))
    }
}
