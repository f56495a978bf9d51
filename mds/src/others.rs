//! The groups a process is not a member of (replica.rs: with
//! `group_size`, each shard's group but shard 0's is a subset of the
//! processes). Their Raft state is not here, so who leads them is learnt
//! by asking: every [`ASK_EVERY`] each process asks the others which
//! groups they hold and who leads them (`WireReq::Groups`), and keeps
//! each answer for a group it does not hold. A member's word that it
//! leads the group within its lease wins over a member's word on who
//! leads; either is forgotten after [`KEPT`].
//!
//! A process in every group (all of them while groups are over every
//! member) asks nothing.
use crate::replica::Replica;
use crate::store::raft::net::{GroupSeen, WireReq, WireResp};
use crate::store::raft::NodeId;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How often the others are asked.
const ASK_EVERY: Duration = Duration::from_millis(300);

/// How long one question waits.
const ASK_WITHIN: Duration = Duration::from_millis(500);

/// How long an answer is believed.
const KEPT: Duration = Duration::from_millis(1500);

/// What was last heard of the groups not held here.
#[derive(Default)]
pub struct Others {
    seen: Mutex<BTreeMap<u32, Seen>>,
}

struct Seen {
    group: GroupSeen,
    at: Instant,
}

impl Others {
    /// Keep `group`, as a member reported it, unless what is kept came
    /// from its leader and is still believed and this does not.
    fn heard(&self, group: GroupSeen) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let kept = seen.get(&group.shard).is_some_and(|s| s.group.leads && !group.leads && s.at.elapsed() < KEPT);
        if !kept {
            seen.insert(group.shard, Seen { group, at: Instant::now() });
        }
    }

    fn believed(&self, shard: u32) -> Option<GroupSeen> {
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.get(&shard).filter(|s| s.at.elapsed() < KEPT).map(|s| s.group.clone())
    }

    /// The address of shard `shard`'s leader as its members say ("" if
    /// none is known).
    pub fn leader_addr(&self, shard: u32) -> String {
        self.believed(shard).map(|g| g.leader_addr).unwrap_or_default()
    }

    /// The leader of shard `shard`'s group as its members say.
    pub fn leader(&self, shard: u32) -> Option<NodeId> {
        self.believed(shard).and_then(|g| g.leader)
    }

    /// The voters of shard `shard`'s group as its members say.
    pub fn voters(&self, shard: u32) -> Option<Vec<NodeId>> {
        self.believed(shard).map(|g| g.voters)
    }

    /// The members of shard `shard`'s group that do not vote yet, as its
    /// members say.
    pub fn learners(&self, shard: u32) -> Vec<NodeId> {
        self.believed(shard).map(|g| g.learners).unwrap_or_default()
    }

    /// What its members last said of shard `shard`'s group, believed or
    /// not: its leader, voters and inode count.
    pub fn last(&self, shard: u32) -> Option<GroupSeen> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner).get(&shard).map(|s| s.group.clone())
    }
}

/// The inodes in `db`, a shard's database (a table's length is kept in
/// its root: no scan).
fn inode_count(db: &redb::Database) -> aifs_common::Result<u64> {
    use crate::store::IoResult;
    use redb::{ReadableDatabase, ReadableTableMetadata};
    db.begin_read().io()?.open_table(crate::store::INODES).io()?.len().io()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(shard: u32, leads: bool, leader: NodeId) -> GroupSeen {
        GroupSeen { shard, leads, leader: Some(leader), leader_addr: format!("10.0.0.{leader}:7000"), voters: vec![1, 2, 3], learners: vec![], inodes: 7 }
    }

    /// A member's word that it leads is not overturned by another's
    /// older view while it is believed; a newer leader's word is taken.
    #[test]
    fn a_leaders_own_word_wins_over_a_members_hint() {
        let o = Others::default();
        assert_eq!(o.leader_addr(2), "");
        o.heard(seen(2, false, 1));
        assert_eq!(o.leader_addr(2), "10.0.0.1:7000");
        o.heard(seen(2, true, 3));
        o.heard(seen(2, false, 1));
        assert_eq!(o.leader_addr(2), "10.0.0.3:7000", "a stale hint replaced the leader's word");
        o.heard(seen(2, true, 2));
        assert_eq!(o.leader_addr(2), "10.0.0.2:7000");
        assert_eq!(o.voters(2), Some(vec![1, 2, 3]));
        assert_eq!(o.last(2).map(|g| g.inodes), Some(7));
        assert_eq!(o.voters(1), None);
    }
}

impl Replica {
    /// The voters of shard `shard`'s group: as this process's member of
    /// it sees them, or as its members last said ("unavailable" if none
    /// did lately).
    pub fn voters_of(&self, shard: u32) -> aifs_common::Result<Vec<NodeId>> {
        match self.group(shard) {
            Some(g) => Ok(g.raft.metrics().borrow().membership_config.membership().voter_ids().collect()),
            None => self.others.voters(shard).ok_or_else(|| aifs_common::Error::Unavailable(format!("shard {shard}'s members are not known here yet; try again"))),
        }
    }

    /// The groups held here as this process sees them: what it answers
    /// `WireReq::Groups` with. A group it was taken out of (its database
    /// stays, and is opened again at a restart) is left out: what it
    /// knows of it is old.
    pub fn report(&self) -> Vec<GroupSeen> {
        let me = self.members.me;
        self.held()
            .iter()
            .filter_map(|g| {
                let m = g.raft.metrics().borrow().clone();
                m.membership_config.membership().get_node(&me)?;
                Some(GroupSeen {
                    shard: g.shard,
                    leads: self.leads_shard(g.shard),
                    leader: m.current_leader,
                    leader_addr: self.leading_addr_of(g.shard),
                    voters: m.membership_config.membership().voter_ids().collect(),
                    learners: m.membership_config.membership().learner_ids().collect(),
                    inodes: inode_count(&g.db).unwrap_or(0),
                })
            })
            .collect()
    }

    /// Ask the others, every [`ASK_EVERY`] while some group is not held
    /// here, which groups they hold and who leads them; ends with the
    /// process.
    pub async fn watch_others(self: Arc<Self>) {
        let Some(peers) = self.members.peers.clone() else { return };
        let mut tick = tokio::time::interval(ASK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.held().len() as u32 == self.shards() {
                continue;
            }
            let me = self.members.me;
            let addrs: Vec<SocketAddr> = {
                let m = self.zero().raft.metrics().borrow().clone();
                m.membership_config.membership().nodes().filter(|(id, _)| **id != me).filter_map(|(_, n)| n.addr.parse().ok()).collect()
            };
            let asked = addrs.iter().map(|a| peers.ask(*a, 0, &WireReq::Groups, ASK_WITHIN));
            for (addr, answer) in addrs.iter().zip(futures::future::join_all(asked).await) {
                match answer {
                    Ok(WireResp::Groups(groups)) => groups.into_iter().filter(|g| self.group(g.shard).is_none()).for_each(|g| self.others.heard(g)),
                    Ok(other) => tracing::debug!(%addr, answer = ?other, "asked which groups an MDS holds"),
                    Err(e) => tracing::debug!(%addr, error = %e, "asking which groups an MDS holds"),
                }
            }
        }
    }
}
