//! How openraft's records are written to disk: rkyv structs of plain
//! numbers and bytes, mapped to and from openraft's types here and
//! nowhere else.
use super::{Cfg, NodeId};
use crate::store::txn::ChangeSet;
use aifs_common::proto::frame::encode_any;
use aifs_common::Result;
use openraft::{BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, Membership, StoredMembership, Vote};
use rkyv::{Archive, Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

pub(crate) use crate::records::decode_stored as decode;

pub fn encode<T>(v: &T) -> Result<Vec<u8>>
where
    T: for<'a> rkyv::Serialize<rkyv::api::high::HighSerializer<rkyv::util::AlignedVec, rkyv::ser::allocator::ArenaHandle<'a>, rkyv::rancor::Error>>,
{
    Ok(encode_any(v)?.to_vec())
}

#[derive(Archive, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
pub struct DiskLogId {
    pub term: u64,
    pub node: u64,
    pub index: u64,
}

impl From<&LogId<NodeId>> for DiskLogId {
    fn from(l: &LogId<NodeId>) -> Self {
        DiskLogId { term: l.leader_id.term, node: l.leader_id.node_id, index: l.index }
    }
}

impl From<&DiskLogId> for LogId<NodeId> {
    fn from(l: &DiskLogId) -> Self {
        LogId::new(CommittedLeaderId::new(l.term, l.node), l.index)
    }
}

#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct DiskMembership {
    /// Each voter set (two while a change is joint).
    pub configs: Vec<Vec<u64>>,
    /// Every member, voter or learner, with its address.
    pub nodes: Vec<(u64, String)>,
}

impl From<&Membership<NodeId, BasicNode>> for DiskMembership {
    fn from(m: &Membership<NodeId, BasicNode>) -> Self {
        DiskMembership {
            configs: m.get_joint_config().iter().map(|c| c.iter().copied().collect()).collect(),
            nodes: m.nodes().map(|(id, n)| (*id, n.addr.clone())).collect(),
        }
    }
}

impl From<&DiskMembership> for Membership<NodeId, BasicNode> {
    fn from(m: &DiskMembership) -> Self {
        let configs: Vec<BTreeSet<u64>> = m.configs.iter().map(|c| c.iter().copied().collect()).collect();
        let nodes: BTreeMap<u64, BasicNode> = m.nodes.iter().map(|(id, a)| (*id, BasicNode::new(a))).collect();
        Membership::new(configs, nodes)
    }
}

/// A membership and the entry that made it.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct DiskStoredMembership {
    pub log_id: Option<DiskLogId>,
    pub membership: DiskMembership,
}

impl From<&StoredMembership<NodeId, BasicNode>> for DiskStoredMembership {
    fn from(m: &StoredMembership<NodeId, BasicNode>) -> Self {
        DiskStoredMembership { log_id: m.log_id().as_ref().map(DiskLogId::from), membership: m.membership().into() }
    }
}

impl From<&DiskStoredMembership> for StoredMembership<NodeId, BasicNode> {
    fn from(m: &DiskStoredMembership) -> Self {
        StoredMembership::new(m.log_id.as_ref().map(LogId::from), (&m.membership).into())
    }
}

#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub enum DiskPayload {
    Blank,
    Changes(ChangeSet),
    Membership(DiskMembership),
}

#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct DiskEntry {
    pub log_id: DiskLogId,
    pub payload: DiskPayload,
}

impl From<&Entry<Cfg>> for DiskEntry {
    fn from(e: &Entry<Cfg>) -> Self {
        let payload = match &e.payload {
            EntryPayload::Blank => DiskPayload::Blank,
            EntryPayload::Normal(c) => DiskPayload::Changes(c.clone()),
            EntryPayload::Membership(m) => DiskPayload::Membership(m.into()),
        };
        DiskEntry { log_id: (&e.log_id).into(), payload }
    }
}

impl From<DiskEntry> for Entry<Cfg> {
    fn from(e: DiskEntry) -> Self {
        let payload = match e.payload {
            DiskPayload::Blank => EntryPayload::Blank,
            DiskPayload::Changes(c) => EntryPayload::Normal(c),
            DiskPayload::Membership(m) => EntryPayload::Membership((&m).into()),
        };
        Entry { log_id: (&e.log_id).into(), payload }
    }
}

#[derive(Archive, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
pub struct DiskVote {
    pub term: u64,
    pub node: u64,
    pub committed: bool,
}

impl From<&Vote<NodeId>> for DiskVote {
    fn from(v: &Vote<NodeId>) -> Self {
        DiskVote { term: v.leader_id.term, node: v.leader_id.node_id, committed: v.committed }
    }
}

impl From<&DiskVote> for Vote<NodeId> {
    fn from(v: &DiskVote) -> Self {
        if v.committed {
            Vote::new_committed(v.term, v.node)
        } else {
            Vote::new(v.term, v.node)
        }
    }
}

/// The first frame of a snapshot file: what it holds.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct SnapshotHeader {
    pub id: String,
    pub last_log_id: Option<DiskLogId>,
    pub membership: DiskStoredMembership,
}
