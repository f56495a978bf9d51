//! Adding and removing MDS processes (`mdsctl mds add`, `mdsctl mds
//! remove`): the leader changes the membership of every shard's group, one
//! step per request, so that a change survives a leader's death half way
//! (the next leader takes the next step) and a lost answer (a step done
//! twice changes nothing).
//!
//! A new process joins each group as a learner, is sent the log or a
//! snapshot, and is made a voter only once it holds the log about as far
//! as the leader: a voter that has nothing would count towards a majority
//! while holding none of what was acknowledged. It votes in shard 0's
//! group last, once it votes in every other: whoever leads shard 0 claims
//! the rest (replica.rs), which a member that does not vote there cannot
//! win. For the same reason a member leaves shard 0's group first, except
//! the leader taking itself out, which leaves it last so that it goes on
//! leading the steps. Shard 0's leader takes every step, and sends the
//! step of a group another process leads (a shard placed apart,
//! placing.rs) to that process: openraft changes a group's membership
//! only at its leader. A process leaves each group as a voter and as a node
//! at once (openraft passes through a joint configuration, so both
//! majorities agree; a joint configuration a dead leader left behind is
//! finished by the next step). One step runs at a time.
//!
//! A process that lost its data directory comes back only this way, as a
//! learner first: holders.rs.
//!
//! A one-process MDS grows the same way once it has an address in its
//! groups: its groups were made with one member, id 1, reached by no one
//! ("local"). Started again with `members` naming it as id 1 at its
//! address, it leads them again by itself, and its leader loop writes
//! that address into each group (`name_myself`); then `mds add` adds
//! processes as to any replicated MDS.
use crate::namespace::Namespace;
use crate::replica::{Group, Replica};
use crate::store::raft::NodeId;
use crate::store::{IoResult, META};
use aifs_common::proto::mds::{GroupStep, MdsCall, MdsReply, MdsReq, MdsResp, MemberChange, MemberInfo};
use aifs_common::{Error, Result};
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, Membership, RaftMetrics};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

/// A learner is made a voter once it lacks at most this many of the
/// leader's entries: a group that keeps taking writes never waits for one
/// that lacks none.
const CATCH_UP_SLACK: u64 = 64;

/// How long a leader taken out of the groups waits to have stepped down.
const STEP_DOWN: Duration = Duration::from_secs(5);

/// How long shard 0's leader waits for another process to take a step in
/// a group it leads (a voter's removal waits for that leader to step down).
const STEP_WITHIN: Duration = Duration::from_secs(20);

type Metrics = RaftMetrics<NodeId, BasicNode>;

fn change_err(e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> Error {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => Error::NotLeader(f.leader_node.map(|n| n.addr).unwrap_or_default()),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => Error::Unavailable(format!("membership change refused: {e}")),
        RaftError::Fatal(e) => Error::Io(format!("shard group stopped: {e}")),
    }
}

/// `addr` as a member's address, or why it is none.
fn address(addr: &str) -> Result<SocketAddr> {
    addr.parse().map_err(|e| Error::InvalidArgument(format!("{addr:?} is not an address (IP:PORT): {e}")))
}

/// `id` votes in the group `membership` describes.
pub(crate) fn votes(membership: &Membership<NodeId, BasicNode>, id: NodeId) -> bool {
    membership.voter_ids().any(|v| v == id)
}

/// The log index of the membership `m` reports (0 for none).
pub(crate) fn membership_index(m: &Metrics) -> u64 {
    m.membership_config.log_id().map_or(0, |l| l.index)
}

/// A joint configuration: a change begun and not finished.
fn joint(membership: &Membership<NodeId, BasicNode>) -> bool {
    membership.get_joint_config().len() > 1
}

/// The index of the last entry member `id` is known to hold, in a group
/// `m` (its leader) reports on; 0 if none.
pub(crate) fn matched(m: &Metrics, id: NodeId) -> u64 {
    m.replication.as_ref().and_then(|r| r.get(&id).cloned().flatten()).map_or(0, |l| l.index)
}

/// How far member `id` is behind the leader in a group `m` reports on.
pub(crate) fn behind(m: &Metrics, id: NodeId) -> u64 {
    m.last_log_index.unwrap_or(0).saturating_sub(matched(m, id))
}

/// The MDS processes of the shards' groups (`groups`, one per shard, as
/// this process, their leader, sees them).
pub async fn member_infos(ns: &Namespace, groups: &[crate::store::GroupState]) -> Result<Vec<MemberInfo>> {
    let Some(first) = groups.first() else { return Ok(Vec::new()) };
    let ids: Vec<NodeId> = first.nodes.iter().map(|(id, _)| *id).collect();
    let held = ns
        .shard(0)
        .read(move |t| {
            let meta = t.open_table(META).io()?;
            crate::holders::held_in(&meta, &ids)
        })
        .await?;
    let infos = first.nodes.iter().zip(held).map(|((id, addr), held)| MemberInfo {
        id: *id,
        addr: addr.clone(),
        leader: first.leader == Some(*id),
        voter: first.members.contains(id),
        held,
        matched: groups
            .iter()
            .map(|g| match g.leader == Some(*id) {
                true => g.last_log,
                false => g.matched.iter().find(|(m, _)| m == id).map_or(0, |(_, i)| *i),
            })
            .collect(),
    });
    Ok(infos.collect())
}

impl Replica {
    /// Write this process's address, as its config gives it, into each
    /// group it leads whose membership names it otherwise: a one-process
    /// MDS's groups name it "local", which no other member can reach.
    /// Changes nothing else about the groups (openraft `SetNodes` of this
    /// member alone).
    pub async fn name_myself(&self) -> Result<()> {
        let me = self.members.me;
        let Some(addr) = self.members.all.get(&me).filter(|_| !self.members.is_solo()) else { return Ok(()) };
        for g in self.held() {
            // Looked at every leader tick: read in place, not cloned.
            let (led, had) = {
                let rx = g.raft.metrics();
                let m = rx.borrow();
                (crate::replica::leads(&m, me), m.membership_config.membership().get_node(&me).map(|n| n.addr.clone()))
            };
            if !led || had.as_deref().is_none_or(|a| a == addr) {
                continue;
            }
            let nodes = BTreeMap::from([(me, BasicNode { addr: addr.clone() })]);
            g.raft.change_membership(ChangeMembers::SetNodes(nodes), false).await.map_err(change_err)?;
            tracing::info!(shard = g.shard, was = ?had, now = %addr, "this MDS's address written into the shard's group");
        }
        Ok(())
    }

    /// The addresses of the members the groups name (none for a
    /// one-process MDS, which no one reaches but at its config's address).
    pub fn addrs(&self) -> Vec<String> {
        self.known().into_values().filter(|a| a.parse::<SocketAddr>().is_ok()).collect()
    }

    /// Every member some group names, with its address (as the first
    /// group naming it has it).
    fn known(&self) -> BTreeMap<NodeId, String> {
        let mut all = BTreeMap::new();
        for g in self.held() {
            for (id, n) in g.raft.metrics().borrow().membership_config.membership().nodes() {
                all.entry(*id).or_insert_with(|| n.addr.clone());
            }
        }
        all
    }

    /// One step of adding the MDS at `addr` as member `id` (0: a free id,
    /// or the one `addr` already has) to every group.
    pub async fn add_member(&self, id: NodeId, addr: &str) -> Result<MemberChange> {
        if self.members.is_solo() {
            return Err(Error::InvalidArgument(
                "this MDS runs alone (no `members` in its config): stop it, add `members = [{ id = 1, addr = \"IP:PORT\" }]` (its own address) to its config, start it again, then add processes".into(),
            ));
        }
        address(addr)?;
        // Held from the choice of id on: two adds at once pick different ones.
        let _one = self.changing.lock().await;
        let known = self.known();
        let id = match (id, known.iter().find(|(_, a)| *a == addr).map(|(id, _)| *id)) {
            (0, Some(had)) => had,
            (0, None) => known.keys().max().copied().unwrap_or(0) + 1,
            (id, Some(had)) if had != id => return Err(Error::InvalidArgument(format!("{addr} is MDS {had}'s address already"))),
            (id, _) => id,
        };
        if let Some(was) = known.get(&id).filter(|a| *a != addr) {
            return Err(Error::InvalidArgument(format!("MDS {id} is a member already, at {was}; `mdsctl mds remove {id}` first")));
        }
        let into = self.groups_to_join(id)?;
        let mut change = MemberChange { id, addr: addr.to_string(), voter_in: 0, learner_in: 0, shards: into.len() as u32 + 1, behind: 0, refilling: 0 };
        let add = |vote| GroupStep::Add { id, addr: addr.to_string(), vote };
        for join in into {
            let one = self.group_step(join.shard, add(true)).await?;
            tally(&mut change, &one);
            // It votes there: the voter whose seat it takes leaves.
            for out in join.evict.iter().filter(|_| one.voter_in == 1) {
                tracing::info!(shard = join.shard, id, out, "the added MDS votes in the shard's group: the member it takes the seat of leaves");
                self.group_step(join.shard, GroupStep::Remove { id: *out }).await?;
            }
        }
        let others_vote = change.voter_in + 1 == change.shards;
        tally(&mut change, &self.group_step(0, add(others_vote)).await?);
        Ok(change)
    }

    /// The groups other than shard 0's that member `id` is added to, and
    /// whom it takes the seat of in each: all of them, taking no one's,
    /// while groups are over every member; else as seats.rs plans.
    fn groups_to_join(&self, id: NodeId) -> Result<Vec<crate::seats::Join>> {
        use crate::seats::Join;
        let size = self.members.group_size;
        if size == 0 {
            return Ok((1..self.shards()).map(|shard| Join { shard, evict: Vec::new() }).collect());
        }
        let now = self.groups_now(Some(id))?;
        let members: BTreeSet<NodeId> = self.zero_voters().into_iter().chain([id]).collect();
        Ok(crate::seats::plan(&now, &members, id, size))
    }

    /// Every group but shard 0's as this process sees it (or as its
    /// members say), `new` marked where it learns or votes already (an
    /// add is taken a step at a time).
    fn groups_now(&self, new: Option<NodeId>) -> Result<Vec<crate::seats::GroupNow>> {
        let mut now = Vec::new();
        for shard in 1..self.shards() {
            let voters = self.voters_of(shard)?;
            let (learners, leader) = match self.group(shard) {
                Some(g) => {
                    let rx = g.raft.metrics();
                    let m = rx.borrow();
                    (m.membership_config.membership().learner_ids().collect(), m.current_leader)
                }
                None => (self.others.learners(shard), self.others.leader(shard)),
            };
            let has_new = new.is_some_and(|id| voters.contains(&id) || learners.contains(&id));
            now.push(crate::seats::GroupNow { shard, voters, learners, has_new, leader });
        }
        Ok(now)
    }

    /// Shard 0's voters: every process of the MDS.
    fn zero_voters(&self) -> BTreeSet<NodeId> {
        self.zero().raft.metrics().borrow().membership_config.membership().voter_ids().collect()
    }

    /// One step of giving each group that a removal left short of voters
    /// (groups of `group_size`) a member in the free seat, as
    /// `seats::refill` picks among the processes that answer: added as a
    /// learner, then made a voter once it has caught up. The groups still
    /// short after the step, and the entries their learners lack.
    async fn refill_step(&self) -> Result<(u32, u64)> {
        if self.members.group_size == 0 {
            return Ok((0, 0));
        }
        let now = self.groups_now(None)?;
        let known = self.known();
        // Those that answer: a seat given to a process that is down too
        // would never be taken.
        let me = self.members.me;
        let live: BTreeSet<NodeId> = self.zero_voters().into_iter().filter(|id| *id == me || self.answers(*id)).collect();
        let mut short = (0, 0);
        for pick in crate::seats::refill(&now, &live, self.members.group_size) {
            let addr = known.get(&pick.id).cloned().ok_or_else(|| Error::Unavailable(format!("MDS {}'s address is not known here", pick.id)))?;
            tracing::info!(shard = pick.shard, id = pick.id, "a group short of voters takes an MDS in the free seat");
            let one = self.group_step(pick.shard, GroupStep::Add { id: pick.id, addr, vote: true }).await?;
            if one.voter_in == 0 || pick.missing > 1 {
                short.0 += 1;
                short.1 += one.behind;
            }
        }
        Ok(short)
    }

    /// One step of taking member `id` out of every group, then of filling
    /// the seats it leaves. Answered for an id in no group too (the step
    /// before may have been the last, its answer lost).
    pub async fn remove_member(&self, id: NodeId) -> Result<MemberChange> {
        let _one = self.changing.lock().await;
        let addr = self.known().remove(&id).unwrap_or_default();
        let mut order: Vec<u32> = (0..self.shards()).collect();
        if id == self.members.me {
            order.reverse();
        }
        let mut change = MemberChange { id, addr, voter_in: 0, learner_in: 0, shards: self.shards(), behind: 0, refilling: 0 };
        for shard in order {
            tally(&mut change, &self.group_step(shard, GroupStep::Remove { id }).await?);
        }
        // Out of every group: the seats it leaves are taken by others, so
        // that each group has its copies again.
        if change.voter_in + change.learner_in == 0 {
            (change.refilling, change.behind) = self.refill_step().await?;
        }
        Ok(change)
    }

    /// Take `step` in shard `shard`'s group: here if this process leads
    /// it, else at the process that does (a group placed apart,
    /// placing.rs, or one this process is not in). That group's count
    /// after the step.
    async fn group_step(&self, shard: u32, step: GroupStep) -> Result<MemberChange> {
        if let Some(g) = self.group(shard).filter(|g| crate::replica::leads(&g.raft.metrics().borrow(), self.members.me)) {
            return self.step_here(&g, &step).await;
        }
        let unknown = || Error::Unavailable(format!("no leader of shard {shard}'s group is known"));
        let at: SocketAddr = self.leader_hint(shard).parse().map_err(|_| unknown())?;
        let peers = self.members.peers.as_ref().ok_or_else(unknown)?;
        let call = MdsCall::from(MdsReq::GroupMember { shard, step });
        let sent = tokio::time::timeout(STEP_WITHIN, peers.to(at).call::<_, MdsReply>(&call, &[])).await;
        let gone = |why: String| Error::Unavailable(format!("shard {shard}'s leader at {at}: {why}"));
        let (reply, _) = sent.map_err(|_| gone(format!("no answer in {STEP_WITHIN:?}")))?.map_err(|e| gone(e.to_string()))?;
        match reply.resp {
            MdsResp::Member(c) => Ok(c),
            // Its lead moved meanwhile: the admin asks shard 0's leader
            // again, not the process named, which takes no steps.
            MdsResp::Err(e) => Err(match Error::from_wire(e.code, &e.msg) {
                Error::NotLeader(_) => gone("no longer leads the group".into()),
                e => e,
            }),
            other => Err(Error::Protocol(format!("a group's membership step answered with {other:?}"))),
        }
    }

    /// Answer `MdsReq::GroupMember`, sent by shard 0's leader: take the
    /// step in shard `shard`'s group if this process leads it.
    pub async fn take_group_step(&self, shard: u32, step: &GroupStep) -> Result<MemberChange> {
        if let GroupStep::Leave { index } = step {
            self.leave_group(shard, *index).await?;
            return Ok(MemberChange { id: self.members.me, addr: String::new(), voter_in: 0, learner_in: 0, shards: 1, behind: 0, refilling: 0 });
        }
        let g = self.group(shard).ok_or_else(|| Error::InvalidArgument(format!("there is no shard {shard}")))?;
        if let GroupStep::Add { addr, .. } = step {
            address(addr)?;
        }
        if !crate::replica::leads(&g.raft.metrics().borrow(), self.members.me) {
            return Err(Error::NotLeader(self.leader_hint(shard)));
        }
        let _one = self.changing.lock().await;
        self.step_here(&g, step).await
    }

    async fn step_here(&self, g: &Group, step: &GroupStep) -> Result<MemberChange> {
        match step {
            GroupStep::Add { id, addr, vote } => add_step(g, *id, addr, *vote).await,
            GroupStep::Remove { id } => self.remove_step(g, *id).await,
            GroupStep::Leave { .. } => Err(Error::Protocol("a group's leader does not leave it this way".into())),
        }
    }

    /// Take member `id` out of `g`'s group, which this process leads.
    async fn remove_step(&self, g: &Group, id: NodeId) -> Result<MemberChange> {
        let (change, was_at) = {
            let m = g.raft.metrics().borrow().clone();
            let membership = m.membership_config.membership();
            let was_at = membership.get_node(&id).map(|n| n.addr.clone());
            let change = if votes(membership, id) {
                if membership.voter_ids().count() == 1 {
                    return Err(Error::InvalidArgument(format!("MDS {id} is shard {}'s only voter", g.shard)));
                }
                Some(ChangeMembers::RemoveVoters(BTreeSet::from([id])))
            } else if membership.get_node(&id).is_some() {
                Some(ChangeMembers::RemoveNodes(BTreeSet::from([id])))
            } else {
                None
            };
            (change, was_at)
        };
        if let Some(change) = change {
            tracing::info!(shard = g.shard, id, "removing MDS from the shard's group");
            g.raft.change_membership(change, false).await.map_err(change_err)?;
        }
        if id != self.members.me && g.shard != 0 {
            self.tell_to_leave(g, id, was_at);
        }
        if id == self.members.me {
            // Taken out, this process steps down once the change is
            // applied; answered before, an operator would see it lead.
            // Then it drops its copy, as another member taken out would
            // when told to (shard 0's excepted: every process holds it).
            let stepped = g.raft.wait(Some(STEP_DOWN)).metrics(|m| m.state != openraft::ServerState::Leader, "stepped down").await;
            match stepped {
                Err(e) => tracing::warn!(shard = g.shard, error = %e, "still leading the shard's group after being taken out"),
                Ok(m) if g.shard != 0 => {
                    if let Err(e) = self.leave_group(g.shard, membership_index(&m)).await {
                        e.log("dropping this MDS's copy of a group it was taken out of");
                    }
                }
                Ok(_) => {}
            }
        }
        Ok(count(g, id, ""))
    }

    /// A vote asked for in `g`'s group by `candidate`. One that is not in
    /// the group as this process has applied it was taken out while down
    /// (the word to leave did not reach it) and stands from the copy it
    /// kept after a restart: it is told again to drop it, by whichever
    /// member it asks (its old group may not include the leader now).
    /// Should it have been added back since, it has seen the later
    /// membership and keeps its copy (`Replica::leave_group`). Only a
    /// membership changed since the group was made can leave anyone out
    /// (index above 0), and only one this process is in is known here: a
    /// process whose copy is not made yet, or is being filled again,
    /// holds none (a candidate told to leave by such a process in a new
    /// cluster dropped a copy it needed).
    pub(crate) fn vote_asked(&self, g: &Group, candidate: NodeId) {
        let outsider = {
            let rx = g.raft.metrics();
            let m = rx.borrow();
            let membership = m.membership_config.membership();
            let index = membership_index(&m);
            let applied = m.last_applied.map_or(0, |l| l.index) >= index;
            let known = index > 0 && membership.get_node(&self.members.me).is_some();
            known && applied && !joint(membership) && membership.get_node(&candidate).is_none()
        };
        if outsider && g.shard != 0 {
            tracing::info!(shard = g.shard, id = candidate, "an MDS taken out of the shard's group stands for election there: telling it to leave");
            self.tell_to_leave(g, candidate, None);
        }
    }

    /// Tell member `id`, taken out of `g`'s group, to drop its copy: at its address as the group named it
    /// (`was_at`), or as shard 0's group does. In the background, as it
    /// may be down (a dead process is taken out so), and again at each
    /// step that finds it out (the first word may be lost).
    fn tell_to_leave(&self, g: &Group, id: NodeId, was_at: Option<String>) {
        let index = membership_index(&g.raft.metrics().borrow());
        let addr = was_at.or_else(|| self.zero().raft.metrics().borrow().membership_config.membership().get_node(&id).map(|n| n.addr.clone()));
        let addr = addr.and_then(|a| a.parse::<SocketAddr>().ok());
        let (Some(addr), Some(peers)) = (addr, self.members.peers.clone()) else { return };
        let call = MdsCall::from(MdsReq::GroupMember { shard: g.shard, step: GroupStep::Leave { index } });
        let shard = g.shard;
        tokio::spawn(async move {
            match tokio::time::timeout(STEP_WITHIN, peers.to(addr).call::<_, MdsReply>(&call, &[])).await {
                Ok(Ok((MdsReply { resp: MdsResp::Member(_), .. }, _))) => tracing::info!(shard, id, "the MDS taken out of the shard's group dropped its copy"),
                Ok(Ok((reply, _))) => tracing::debug!(shard, id, answer = ?reply.resp, "telling an MDS to leave the shard's group"),
                Ok(Err(e)) => tracing::debug!(shard, id, error = %e, "telling an MDS to leave the shard's group"),
                Err(_) => tracing::debug!(shard, id, "telling an MDS to leave the shard's group: no answer"),
            }
        });
    }
}

/// `one`, a group's count, added to `change`'s.
fn tally(change: &mut MemberChange, one: &MemberChange) {
    change.voter_in += one.voter_in;
    change.learner_in += one.learner_in;
    change.behind += one.behind;
}

/// Where member `id` is in `g`'s group: one group's count.
fn count(g: &Group, id: NodeId, addr: &str) -> MemberChange {
    let m = g.raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    let voter = votes(membership, id) && !joint(membership);
    let learner = !voter && membership.get_node(&id).is_some();
    let behind = if learner { behind(&m, id) } else { 0 };
    MemberChange { id, addr: addr.to_string(), voter_in: voter as u32, learner_in: learner as u32, shards: 1, behind, refilling: 0 }
}

/// Add `id` to `g`'s group as a learner, or make it a voter there if it
/// has caught up and `may_vote`. The group's count after the step.
async fn add_step(g: &Group, id: NodeId, addr: &str, may_vote: bool) -> Result<MemberChange> {
    let m = g.raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    if let Some(was) = membership.get_node(&id).filter(|n| n.addr != addr) {
        return Err(Error::InvalidArgument(format!("MDS {id} is at {} in shard {}'s group, not {addr}", was.addr, g.shard)));
    }
    if membership.get_node(&id).is_none() {
        tracing::info!(shard = g.shard, id, addr, "adding MDS as a learner");
        g.raft.add_learner(id, BasicNode::new(addr), false).await.map_err(change_err)?;
        // It holds nothing yet.
        let lacks = m.last_log_index.unwrap_or(0);
        return Ok(MemberChange { id, addr: addr.to_string(), voter_in: 0, learner_in: 1, shards: 1, behind: lacks, refilling: 0 });
    }
    let voter = votes(membership, id) && !joint(membership);
    if !voter && behind(&m, id) <= CATCH_UP_SLACK && may_vote {
        tracing::info!(shard = g.shard, id, "MDS caught up: it votes from now on");
        g.raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), true).await.map_err(change_err)?;
    }
    Ok(count(g, id, addr))
}
