//! Where each shard is led: the placement half of the cluster map
//! (DESIGN.md, "Metadata that survives losing a machine"), kept in shard
//! 0's group as `placed.<shard>` rows of its META table, so that every
//! member reads it from its own copy and it outlives restarts and
//! leader changes.
//!
//! A shard with no placement, and every shard while its placed member is
//! down or no longer votes in its group, is led by whoever leads shard 0
//! (replica.rs). A shard placed on a member is led there: that member
//! stands for election in the shard's group, and shard 0's leader, while
//! the member answers it, neither stands there nor sends heartbeats, so
//! that the member is elected once the group's lease of it lapses.
//!
//! Placing shards other than 0 apart is off unless the MDS config says
//! `spread = true`: clients do not route by shard yet, so a mount sees
//! only what is led with shard 0. `mdsctl shard move N --to ID` then
//! moves every shard, as one process leads them all.
use crate::namespace::Namespace;
use crate::store::raft::NodeId;
use crate::store::{IoResult, META};
use aifs_common::{Error, Result};
use redb::ReadableTable;
use std::collections::BTreeMap;

/// Shard 0's META rows naming the member each placed shard is led by.
const PLACED: &str = "placed.";

/// Shard -> the member placed to lead it.
pub type Placement = BTreeMap<u32, NodeId>;

fn placement_in(meta: &impl ReadableTable<&'static str, u64>) -> Result<Placement> {
    let mut out = Placement::new();
    for row in meta.range(PLACED..).io()? {
        let (k, v) = row.io()?;
        let Some(shard) = k.value().strip_prefix(PLACED) else { break };
        if let Ok(shard) = shard.parse() {
            out.insert(shard, v.value());
        }
    }
    Ok(out)
}

/// The placement in `db`, this member's copy of shard 0 (empty while
/// the group waits to be filled).
pub fn placement_here(db: &redb::Database) -> Result<Placement> {
    Ok(crate::store::with_meta(db, placement_in)?.unwrap_or_default())
}

/// The placement, read through the namespace's shard 0.
pub async fn placement(ns: &Namespace) -> Result<Placement> {
    ns.shard(0).read(|t| placement_in(&t.open_table(META).io()?)).await
}

/// Place `shard` (not 0: shard 0 is handed over, handover.rs) on member
/// `to`, which must vote in its group.
pub async fn place(ns: &Namespace, shard: u32, to: NodeId, voters: &[NodeId]) -> Result<()> {
    if shard == 0 || shard as usize >= ns.shards.len() {
        return Err(Error::InvalidArgument(format!("shard {shard} cannot be placed apart (shards 1 to {})", ns.shards.len().saturating_sub(1))));
    };
    if !voters.contains(&to) {
        return Err(Error::InvalidArgument(format!("MDS {to} does not vote in shard {shard}'s group (see `mdsctl mds ls`)")));
    }
    let key = format!("{PLACED}{shard}");
    ns.shard(0).mutate(move |txn| txn.open_table(META).io()?.insert(key.as_str(), to).io().map(|_| ())).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_placement_is_read_back_and_refused_for_shard_0_or_a_stranger() {
        let tmp = tempfile::tempdir().unwrap();
        let ns = crate::namespace::tests::open_ns(tmp.path()).await;
        assert!(placement(&ns).await.unwrap().is_empty());
        let voters = [crate::store::raft::SELF];
        place(&ns, 2, crate::store::raft::SELF, &voters).await.unwrap();
        place(&ns, 3, crate::store::raft::SELF, &voters).await.unwrap();
        assert_eq!(placement(&ns).await.unwrap(), Placement::from([(2, crate::store::raft::SELF), (3, crate::store::raft::SELF)]));
        assert!(matches!(place(&ns, 0, crate::store::raft::SELF, &voters).await, Err(Error::InvalidArgument(_))));
        assert!(matches!(place(&ns, 9, crate::store::raft::SELF, &voters).await, Err(Error::InvalidArgument(_))));
        assert!(matches!(place(&ns, 1, 77, &voters).await, Err(Error::InvalidArgument(_))));
    }
}
