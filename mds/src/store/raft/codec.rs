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
    /// Written by builds before [`DiskPayload::Compact`]; read still.
    Changes(ChangeSet),
    Membership(DiskMembership),
    /// A change set as `ChangeSet::to_compact` writes it (no larger an
    /// archive than the variants before it, so older entries read as
    /// they did).
    Compact(Vec<u8>),
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
            EntryPayload::Normal(c) => DiskPayload::Compact(c.to_compact()),
            EntryPayload::Membership(m) => DiskPayload::Membership(m.into()),
        };
        DiskEntry { log_id: (&e.log_id).into(), payload }
    }
}

impl TryFrom<DiskEntry> for Entry<Cfg> {
    type Error = aifs_common::Error;

    fn try_from(e: DiskEntry) -> Result<Self> {
        let payload = match e.payload {
            DiskPayload::Blank => EntryPayload::Blank,
            DiskPayload::Changes(c) => EntryPayload::Normal(c),
            DiskPayload::Compact(bytes) => EntryPayload::Normal(ChangeSet::from_compact(&bytes)?),
            DiskPayload::Membership(m) => EntryPayload::Membership((&m).into()),
        };
        Ok(Entry { log_id: (&e.log_id).into(), payload })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::txn::Change;

    fn entry(payload: DiskPayload) -> DiskEntry {
        DiskEntry { log_id: DiskLogId { term: 3, node: 2, index: 9 }, payload }
    }

    fn set() -> ChangeSet {
        ChangeSet {
            changes: vec![
                Change { table: 0, key: 7u64.to_le_bytes().to_vec(), value: Some(vec![1; 115]) },
                Change { table: 1, key: b"dir\0name".to_vec(), value: None },
                Change { table: 0x80, key: vec![], value: Some(vec![]) },
            ],
        }
    }

    /// An entry is written in the compact form, much smaller than the
    /// archived set, and reads back as the same set; an entry archived
    /// by a build from before the compact form still reads.
    #[test]
    fn entries_read_back_in_either_form() {
        let e = Entry::<Cfg> { log_id: LogId::new(CommittedLeaderId::new(3, 2), 9), payload: EntryPayload::Normal(set()) };
        let disk = DiskEntry::from(&e);
        let DiskPayload::Compact(bytes) = &disk.payload else { panic!("written as {:?}", disk.payload) };
        let archived = set().encode().unwrap();
        assert!(bytes.len() + 3 * 20 <= archived.len(), "{} against {}", bytes.len(), archived.len());
        let back = Entry::<Cfg>::try_from(decode::<DiskEntry>(&encode(&disk).unwrap()).unwrap()).unwrap();
        assert!(matches!(back.payload, EntryPayload::Normal(c) if c == set()));
        let older = Entry::<Cfg>::try_from(decode::<DiskEntry>(&encode(&entry(DiskPayload::Changes(set()))).unwrap()).unwrap()).unwrap();
        assert!(matches!(older.payload, EntryPayload::Normal(c) if c == set()));
    }

    /// A malformed compact set is an error, never a panic.
    #[test]
    fn a_malformed_compact_set_is_an_error() {
        let bytes = set().to_compact();
        for cut in 1..bytes.len() {
            if let Ok(s) = ChangeSet::from_compact(&bytes[..cut]) {
                panic!("{cut} of {} bytes read as {s:?}", bytes.len());
            }
        }
        assert!(ChangeSet::from_compact(&[1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(ChangeSet::from_compact(&[[1, 0, 0, 0].as_slice(), &bytes].concat()).is_err(), "bytes after the changes");
        assert!(Entry::<Cfg>::try_from(entry(DiskPayload::Compact(vec![0, 9]))).is_err());
    }

    proptest::proptest! {
        /// Any bytes read as a compact set give an error or a set that
        /// writes back as the same bytes.
        #[test]
        fn compact_sets_read_any_bytes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            if let Ok(s) = ChangeSet::from_compact(&bytes) {
                let again = ChangeSet::from_compact(&s.to_compact()).unwrap();
                proptest::prop_assert_eq!(again, s);
            }
        }
    }
}
