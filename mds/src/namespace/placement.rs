//! Where new things go: the OSDs of a new file's layout, and the shard of
//! a new directory.
use aifs_common::ids::mix;
use aifs_common::{Error, Layout, LayoutPolicy, OsdId, Result};

pub(crate) fn name_hash(parent: u64, name: &str) -> u64 {
    let mut h = mix(parent);
    for b in name.bytes() {
        h = mix(h ^ b as u64);
    }
    h
}

/// Pick the OSDs of a new file's layout: `replicas` distinct OSDs per
/// object, objects spread from a start point derived from the inode so
/// files spread evenly. Object k's replicas are the `replicas` OSDs from
/// position start + k on (chained declustering): each object's first
/// replica is on its own OSD, and an OSD holds first replicas of one object
/// and later replicas of others, so 3 OSDs carry 3 objects of 2 replicas.
/// With fewer OSDs up than the stripe count asks for, the stripe count
/// shrinks (as Lustre does) rather than doubling up first replicas.
pub fn choose_layout(policy: LayoutPolicy, up: &[u32], ino: u64) -> Result<Layout> {
    policy.validate()?;
    let n = up.len();
    let r = policy.replicas as usize;
    if n == 0 {
        return Err(Error::NoSpace("no OSD is up".into()));
    }
    if n < r {
        return Err(Error::NoSpace(format!("{r} replicas need {r} OSDs; {n} up")));
    }
    let count = (policy.stripe_count as usize).min(n);
    let start = (mix(ino) % n as u64) as usize;
    let osds = (0..count).flat_map(|k| (0..r).map(move |j| OsdId(up[(start + k + j) % n]))).collect();
    Ok(Layout { stripe_size: policy.stripe_size, stripe_count: count as u32, replicas: policy.replicas, osds })
}
