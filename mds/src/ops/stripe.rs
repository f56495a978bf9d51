//! `SetStripe` and `GetStripe`: a directory's default layout policy, or
//! an empty file's layout.
use crate::namespace::{choose_layout, Namespace};
use crate::records::GcJob;
use crate::service::MdsService;
use crate::store::{add_gc, get_inode, put_inode, INODES, IoResult};
use super::Call;
use aifs_common::{Error, InodeId, LayoutPolicy, Result};
use aifs_common::proto::mds::{Attr, FileKind, MdsResp};
use aifs_common::time::now_ns;

impl Namespace {
    /// Refuse a policy the cluster cannot place: each object's copies on
    /// different OSDs, and a stripe's objects on different OSDs, among
    /// those that take data (down ones count: they come back). Accepted,
    /// such a policy would fail every create under it with ENOSPC.
    fn placeable(&self, p: LayoutPolicy) -> Result<()> {
        let n = self.cluster.osds.taking_data().len();
        if p.replicas as usize > n {
            return Err(Error::InvalidArgument(format!("{} replicas need {} OSDs that take data; the cluster has {n}", p.replicas, p.replicas)));
        }
        if p.stripe_count as usize > n {
            return Err(Error::InvalidArgument(format!(
                "a stripe over {} objects needs {} OSDs that take data; the cluster has {n}",
                p.stripe_count, p.stripe_count
            )));
        }
        Ok(())
    }

    pub async fn set_stripe(&self, ino: InodeId, policy: LayoutPolicy) -> Result<Attr> {
        let ino = ino.0;
        policy.validate()?;
        self.placeable(policy)?;
        let up = self.cluster.osds.placeable();
        let _g = self.fences.shared(ino).await;
        self.shard_for(ino)?
            .mutate(move |txn| {
                let mut inodes = txn.open_table(INODES).io()?;
                let mut r = get_inode(&inodes, ino)?;
                match r.kind {
                    FileKind::Dir => r.policy = Some(policy),
                    FileKind::File => {
                        if r.size != 0 {
                            return Err(Error::InvalidArgument("layout of a file with data cannot change".into()));
                        }
                        let new = choose_layout(policy, &up, ino)?;
                        if let Some(old) = r.layout.replace(new) {
                            // Whatever the old objects hold (empty files
                            // left by a truncate) goes back.
                            drop(inodes);
                            add_gc(txn, &GcJob { ino, layout: old, truncate_to: None })?;
                            inodes = txn.open_table(INODES).io()?;
                        }
                    }
                    other => return Err(Error::InvalidArgument(format!("a {other:?} has no layout"))),
                }
                r.ctime_ns = now_ns();
                put_inode(&mut inodes, ino, &r)?;
                Ok(r.attr(ino))
            })
            .await
    }

    pub async fn get_stripe(&self, ino: InodeId) -> Result<(Option<LayoutPolicy>, Attr)> {
        let ino = ino.0;
        let r = self.inode(ino).await?;
        let policy = match r.kind {
            FileKind::Dir => r.policy,
            _ => r.layout.as_ref().map(|l| l.policy()),
        };
        Ok((policy, r.attr(ino)))
    }
}

impl MdsService {
    pub(crate) async fn set_stripe(&self, _c: &mut Call<'_>, ino: InodeId, policy: LayoutPolicy) -> Result<MdsResp> {
        let ns = &self.ns;
        let cl = &self.ns.cluster;
        let a = ns.set_stripe(ino, policy).await?;
        cl.invalidate(None, vec![(ino, vec![])]).await;
        Ok(MdsResp::Attr(a))
    }

    pub(crate) async fn get_stripe(&self, _c: &mut Call<'_>, ino: InodeId) -> Result<MdsResp> {
        let ns = &self.ns;
        let (policy, attr) = ns.get_stripe(ino).await?;
        Ok(MdsResp::Stripe { policy, attr })
    }
}
