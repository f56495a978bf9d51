//! Which groups a process added to the MDS votes in, when each shard's
//! group but shard 0's is over `group_size` of the processes
//! (membership.rs). A group with fewer voters takes it in. So does a
//! full group whose busiest voter is in two groups more than the new
//! process would be: the new process joins there and that voter leaves
//! once it votes, so that an added process takes its share of the
//! groups (the Raft traffic, the applying, the leading) rather than
//! voting in shard 0's group alone.
//!
//! The plan is made again at each step of the add from the groups as
//! they are, so it must come out the same half way through: a group the
//! new process already learns or votes in counts as one of its seats,
//! and a group it votes in that is over the size counts as giving up a
//! voter already. A seat moves from a group its giver does not lead
//! when it can: taking a group's leader out costs that group an
//! election.
//!
//! A process taken out of every group (`mds remove`) leaves seats free;
//! [`refill`] gives each to a remaining process, the one in fewest
//! groups.
use crate::store::raft::NodeId;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

/// A group other than shard 0's, as shard 0's leader sees it.
pub struct GroupNow {
    pub shard: u32,
    pub voters: Vec<NodeId>,
    /// Members that learn there and do not vote yet.
    pub learners: Vec<NodeId>,
    /// The process being added is a member there already (a learner,
    /// or a voter).
    pub has_new: bool,
    /// Its leader, if one is known.
    pub leader: Option<NodeId>,
}

/// A group the process added is to vote in, and the voters to take out
/// of it once it does.
#[derive(Debug, PartialEq, Eq)]
pub struct Join {
    pub shard: u32,
    pub evict: Vec<NodeId>,
}

/// Where process `new` is to vote among `groups` of `size` voters each,
/// `members` being every process (shard 0's voters). A voter that is no
/// member holds no seat: it is being taken out of every group (shard
/// 0's first), or a group not held here is seen as it was before.
pub fn plan(groups: &[GroupNow], members: &BTreeSet<NodeId>, new: NodeId, size: usize) -> Vec<Join> {
    let mut seats: BTreeMap<u32, BTreeSet<NodeId>> = groups
        .iter()
        .map(|g| {
            let mut v: BTreeSet<NodeId> = g.voters.iter().copied().filter(|m| members.contains(m)).collect();
            if g.has_new || v.len() < size {
                v.insert(new);
            }
            (g.shard, v)
        })
        .collect();
    let count = |seats: &BTreeMap<u32, BTreeSet<NodeId>>, m: NodeId| seats.values().filter(|v| v.contains(&m)).count();
    // Groups the new process is in beyond their size give up their
    // busiest voters.
    let over: Vec<u32> = seats.iter().filter(|(_, v)| v.contains(&new) && v.len() > size).map(|(s, _)| *s).collect();
    for shard in over {
        while seats[&shard].len() > size {
            let others: Vec<NodeId> = seats[&shard].iter().copied().filter(|m| *m != new).collect();
            let Some(busiest) = others.into_iter().max_by_key(|m| (count(&seats, *m), Reverse(*m))) else { break };
            seats.entry(shard).or_default().remove(&busiest);
        }
    }
    // Then seats move from the busiest process while it is in two groups
    // more than the new one.
    loop {
        let mine = count(&seats, new);
        let busiest = members.iter().copied().filter(|m| *m != new).max_by_key(|m| (count(&seats, *m), Reverse(*m)));
        let Some(from) = busiest.filter(|m| count(&seats, *m) > mine + 1) else { break };
        let leads = |shard: u32| groups.iter().any(|g| g.shard == shard && g.leader == Some(from));
        let open = seats.iter().filter(|(_, v)| v.contains(&from) && !v.contains(&new)).map(|(s, _)| *s);
        let Some(shard) = open.min_by_key(|s| (leads(*s), *s)) else { break };
        let v = seats.entry(shard).or_default();
        v.remove(&from);
        v.insert(new);
    }
    groups
        .iter()
        .filter(|g| seats[&g.shard].contains(&new))
        .map(|g| Join { shard: g.shard, evict: g.voters.iter().copied().filter(|m| !seats[&g.shard].contains(m)).collect() })
        .collect()
}

/// A member to take a free seat in a group.
#[derive(Debug, PartialEq, Eq)]
pub struct Refill {
    pub shard: u32,
    pub id: NodeId,
    /// Voters the group lacks before it.
    pub missing: usize,
}

/// After a process is taken out of every group: for each of `groups`
/// short of `size` voters among `members`, the member to take one free
/// seat. The one learning there already, so that the plan comes out the
/// same at the next step; else the member in fewest groups (voting or
/// learning, and counting the picks before), the lowest id among equals.
pub fn refill(groups: &[GroupNow], members: &BTreeSet<NodeId>, size: usize) -> Vec<Refill> {
    let mut seats: BTreeMap<NodeId, usize> = members.iter().map(|m| (*m, 0)).collect();
    for m in groups.iter().flat_map(|g| g.voters.iter().chain(&g.learners)) {
        if let Some(n) = seats.get_mut(m) {
            *n += 1;
        }
    }
    let mut picks = Vec::new();
    for g in groups {
        let voting: BTreeSet<NodeId> = g.voters.iter().copied().filter(|v| members.contains(v)).collect();
        if voting.len() >= size {
            continue;
        }
        let learning = g.learners.iter().copied().find(|l| members.contains(l));
        let fewest = || members.iter().copied().filter(|m| !voting.contains(m)).min_by_key(|m| (seats[m], *m));
        let Some(id) = learning.or_else(fewest) else { continue };
        if learning.is_none() {
            *seats.entry(id).or_default() += 1;
        }
        picks.push(Refill { shard: g.shard, id, missing: size - voting.len() });
    }
    picks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(voters: &[&[NodeId]], new: NodeId) -> Vec<GroupNow> {
        voters.iter().enumerate().map(|(i, v)| GroupNow { shard: i as u32 + 1, voters: v.to_vec(), learners: vec![], has_new: v.contains(&new), leader: None }).collect()
    }

    fn seats_after(now: &[GroupNow], joins: &[Join], new: NodeId) -> Vec<BTreeSet<NodeId>> {
        now.iter()
            .map(|g| {
                let mut v: BTreeSet<NodeId> = g.voters.iter().copied().collect();
                if let Some(j) = joins.iter().find(|j| j.shard == g.shard) {
                    v.insert(new);
                    j.evict.iter().for_each(|e| {
                        v.remove(e);
                    });
                }
                v
            })
            .collect()
    }

    /// Four processes in groups of three over three shards (3, 2, 2, 2
    /// seats): a fifth takes one seat, from the process that had three.
    #[test]
    fn an_added_process_takes_a_seat_from_the_busiest() {
        let now = groups(&[&[1, 2, 3], &[2, 3, 4], &[3, 4, 1]], 5);
        let members = BTreeSet::from([1, 2, 3, 4, 5]);
        let joins = plan(&now, &members, 5, 3);
        assert_eq!(joins, vec![Join { shard: 1, evict: vec![3] }]);
        let after = seats_after(&now, &joins, 5);
        assert!(after.iter().all(|v| v.len() == 3), "{after:?}");
        // The same plan half way: a learner there, then a voter with the
        // busiest still in, then the busiest gone: nothing more moves.
        let mut learning = groups(&[&[1, 2, 3], &[2, 3, 4], &[3, 4, 1]], 5);
        learning[0].has_new = true;
        assert_eq!(plan(&learning, &members, 5, 3), joins);
        let voting = groups(&[&[1, 2, 3, 5], &[2, 3, 4], &[3, 4, 1]], 5);
        assert_eq!(plan(&voting, &members, 5, 3), joins);
        let done = groups(&[&[1, 2, 5], &[2, 3, 4], &[3, 4, 1]], 5);
        assert_eq!(plan(&done, &members, 5, 3), vec![Join { shard: 1, evict: vec![] }]);
    }

    /// Groups short of voters take the new process first; a seat moves
    /// from the busiest only while it is in two groups more than the new
    /// process (the lowest id first among equals), and no further.
    #[test]
    fn short_groups_first_then_seats_move_only_from_a_process_two_ahead() {
        let members = BTreeSet::from([1, 2, 3, 4]);
        let now = groups(&[&[1, 2], &[2, 3, 1], &[3, 1]], 4);
        let joins = plan(&now, &members, 4, 3);
        assert_eq!(joins, vec![Join { shard: 1, evict: vec![] }, Join { shard: 3, evict: vec![] }]);
        // A process taken out of shard 0's group (being removed), still
        // seen in another: its seat there is free.
        let removing = groups(&[&[1, 2, 3], &[2, 3, 9], &[3, 1]], 4);
        assert_eq!(plan(&removing, &members, 4, 3), vec![Join { shard: 2, evict: vec![9] }, Join { shard: 3, evict: vec![] }]);
        let two_each = groups(&[&[1, 2, 3], &[2, 3, 1]], 4);
        assert_eq!(plan(&two_each, &members, 4, 3), vec![Join { shard: 1, evict: vec![1] }]);
        let one_each = groups(&[&[1, 2, 3]], 4);
        assert_eq!(plan(&one_each, &members, 4, 3), vec![]);
    }

    /// The busiest process gives up a seat in a group it does not lead,
    /// the lowest such shard; only where it leads every one of its
    /// groups, in the lowest shard. Half way, the plan stays.
    #[test]
    fn a_seat_moves_from_a_group_its_giver_does_not_lead() {
        let members = BTreeSet::from([1, 2, 3, 4, 5]);
        let mut now = groups(&[&[1, 2, 3], &[2, 3, 4], &[3, 4, 1]], 5);
        now[0].leader = Some(3);
        now[1].leader = Some(3);
        let joins = plan(&now, &members, 5, 3);
        assert_eq!(joins, vec![Join { shard: 3, evict: vec![3] }]);
        now[2].has_new = true;
        now[2].leader = Some(3);
        assert_eq!(plan(&now, &members, 5, 3), joins, "half way, with the giver leading there now");
        let mut all_led = groups(&[&[1, 2, 3], &[2, 3, 4], &[3, 4, 1]], 5);
        all_led.iter_mut().for_each(|g| g.leader = Some(3));
        assert_eq!(plan(&all_led, &members, 5, 3), vec![Join { shard: 1, evict: vec![3] }]);
    }

    /// Process 4 taken out of four in groups of three: each group it was
    /// in takes the member in fewest groups, one each, and counts the
    /// picks before; half way (a learner there) the same member; full
    /// groups, and a group that only a non-member would fill, take none.
    #[test]
    fn seats_left_by_a_removed_process_go_to_the_members_in_fewest_groups() {
        let members = BTreeSet::from([1, 2, 3]);
        let now = groups(&[&[1, 2, 4], &[2, 3, 4], &[3, 4, 1]], 0);
        let picks = refill(&now, &members, 3);
        let pick = |shard, id| Refill { shard, id, missing: 1 };
        assert_eq!(picks, vec![pick(1, 3), pick(2, 1), pick(3, 2)]);
        let mut learning = groups(&[&[1, 2], &[2, 3, 1], &[3, 1, 2]], 0);
        learning[0].learners = vec![3];
        assert_eq!(refill(&learning, &members, 3), vec![pick(1, 3)]);
        let full = groups(&[&[1, 2, 3], &[2, 3, 1]], 0);
        assert_eq!(refill(&full, &members, 3), vec![]);
        let two = BTreeSet::from([1, 2]);
        assert_eq!(refill(&groups(&[&[1, 2]], 0), &two, 3), vec![]);
        assert_eq!(refill(&groups(&[&[1]], 0), &two, 3), vec![Refill { shard: 1, id: 2, missing: 2 }]);
    }
}
