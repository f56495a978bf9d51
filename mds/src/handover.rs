//! Handing the lead to a chosen member (`mdsctl shard move`): an operator
//! empties a host before its maintenance, or puts the lead back where the
//! clients are nearest.
//!
//! The wish is a record in shard 0 (`leader_wanted`), so it outlives
//! restarts and leader changes: whichever process leads hands the lead
//! to the wanted member whenever that member answers and holds the log
//! as far as the leader, less [`CAUGHT_UP`] entries, in every group; a
//! wanted member that is down or behind is simply not handed anything.
//! While one process leads every shard (replica.rs), they all move.
//!
//! A handover is a round, numbered in shard 0 (`leader_round`):
//! 1. The leader commits the next round number, then stops its
//!    heartbeats in every group ([`Replica::set_yielding`]).
//! 2. Every member sees the new round in its copy of shard 0. For
//!    [`WINDOW`], or until the wanted member leads, the others stand for
//!    no election, and the wanted member stands in shard 0's group as
//!    soon as its members' lease of the old leader lets them vote.
//!    Elected there, it claims the other groups as any shard 0 leader
//!    does; the old leader, which no longer leads shard 0, lets them go.
//! 3. Should the wanted member not be elected within the window (it died
//!    meanwhile), the old leader takes its heartbeats back, or any member
//!    is elected as after a failure, and the next try waits
//!    [`RETRY_AFTER`].
//!
//! The clients see what they see when a leader dies, shorter: "not
//! leader" answers, then the new leader's grace.
use crate::front::Front;
use crate::membership::{behind, votes};
use crate::namespace::Namespace;
use crate::replica::{leads, Replica};
use crate::store::raft::{net, NodeId};
use crate::store::{IoResult, META};
use aifs_common::{Error, Result};
use redb::ReadableTable;
use std::time::{Duration, Instant};

/// Shard 0's META keys: the member wanted to lead, and the last round of
/// handing the lead to it.
const WANTED: &str = "leader_wanted";
const ROUND: &str = "leader_round";

/// How long a round may take: the old leader's lease to lapse (under a
/// second), an election, and the claims of the other groups.
pub const WINDOW: Duration = Duration::from_secs(3);

/// After a round that did not hand the lead over, before the next.
const RETRY_AFTER: Duration = Duration::from_secs(30);

/// Between looks at whether the wanted member answers and holds the log.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// How long the wanted member has to answer that look.
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);

/// Log entries the wanted member may lack, in each group, and be handed
/// the lead: it is elected only once it holds what the others do, and
/// a few entries catch up in a heartbeat.
pub const CAUGHT_UP: u64 = 64;

/// Between the wanted member's calls for election in a round.
const STAND_EVERY: Duration = Duration::from_millis(150);

/// The wish as shard 0 holds it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Wanted {
    pub to: NodeId,
    pub round: u64,
}

fn wanted_in(meta: &impl ReadableTable<&'static str, u64>) -> Result<Option<Wanted>> {
    let to = meta.get(WANTED).io()?.map(|v| v.value());
    let round = meta.get(ROUND).io()?.map_or(0, |v| v.value());
    Ok(to.map(|to| Wanted { to, round }))
}

/// The wish in `db`, this member's copy of shard 0.
pub fn wanted_here(db: &redb::Database) -> Result<Option<Wanted>> {
    Ok(crate::store::with_meta(db, wanted_in)?.flatten())
}

/// The wish, read through the namespace's shard 0.
pub async fn wanted(ns: &Namespace) -> Result<Option<Wanted>> {
    ns.shard(0).read(|t| wanted_in(&t.open_table(META).io()?)).await
}

/// Record that member `to` is wanted to lead (`mdsctl shard move`). It
/// must vote in shard 0's group: a leader must be one. It takes with it
/// the other groups led here that it votes in (the others stay led here,
/// `ready_to_lead`).
pub async fn want(ns: &Namespace, shard: u32, to: NodeId) -> Result<()> {
    if shard as usize >= ns.shards.len() {
        return Err(Error::InvalidArgument(format!("there is no shard {shard} (shards 0 to {})", ns.shards.len() - 1)));
    }
    if !ns.shard(0).group().members.contains(&to) {
        return Err(Error::InvalidArgument(format!("MDS {to} does not vote in shard 0's group (see `mdsctl mds ls`)")));
    }
    ns.shard(0).mutate(move |txn| txn.open_table(META).io()?.insert(WANTED, to).io().map(|_| ())).await
}

/// One process's part in handovers, looked at every tick of its lead loop.
#[derive(Default)]
pub struct Handover {
    /// The last round seen in this member's copy of shard 0 (0: none
    /// yet), and when; None until the first look.
    seen: Option<(u64, Instant)>,
    /// Elections are off here for the window of a round for another.
    elect_off: bool,
    /// When this member last stood for election in a round for it.
    stood: Option<Instant>,
    /// This process leads and stopped its heartbeats for a round, since.
    yielding: Option<Instant>,
    /// No look at the wanted member, nor round, before this.
    not_before: Option<Instant>,
}

impl Handover {
    /// A round's window is open for another member: this one stands for
    /// no election.
    pub fn barred(&self) -> bool {
        self.elect_off
    }

    pub async fn tick(&mut self, replica: &Replica, front: &Front) {
        if replica.members.is_solo() {
            return;
        }
        let Some(g0) = replica.group(0) else { return };
        let want = match wanted_here(&g0.db) {
            Ok(w) => w,
            Err(e) => return e.log("reading which MDS is wanted to lead"),
        };
        self.follow_round(replica, want).await;
        if self.yielding.is_some() {
            self.finish_yielding(replica);
        } else if let Some(w) = want.filter(|w| w.to != replica.members.me) {
            self.maybe_yield(replica, front, w).await;
        }
    }

    /// A member's part in each round: seen once, then for its window the
    /// wanted member stands for election and the others do not.
    async fn follow_round(&mut self, replica: &Replica, want: Option<Wanted>) {
        let now = Instant::now();
        let round = want.map_or(0, |w| w.round);
        match self.seen {
            Some((r, _)) if r == round => {}
            // A round from before this process started is over.
            None => self.seen = Some((round, now.checked_sub(WINDOW).unwrap_or(now))),
            Some(_) => {
                tracing::info!(round, "the lead is being handed to MDS {}", want.map_or(0, |w| w.to));
                self.seen = Some((round, now));
            }
        }
        // The round is over once the wanted member leads: should it die
        // then, the others must be free to stand at once (takeover.rs).
        let taken = want.is_some_and(|w| g0_raft(replica).metrics().borrow().current_leader == Some(w.to));
        if taken {
            self.seen = Some((round, now.checked_sub(WINDOW).unwrap_or(now)));
        }
        let open = self.seen.is_some_and(|(_, at)| at.elapsed() < WINDOW);
        let mine = want.is_some_and(|w| w.to == replica.members.me);
        let off = open && !mine;
        if off != self.elect_off {
            for g in replica.held() {
                g.raft.runtime_config().elect(!off);
            }
            self.elect_off = off;
        }
        // It stands once the old leader's appends have stopped for the
        // members' lease: an append still on its way (a commit made just
        // before the round) has reached it by then, where a member already
        // standing, with its higher term, would refuse it, and then lack
        // an entry the others hold and lose every vote of the window.
        let stand = open && mine && !replica.leads_zero() && replica.leader_silent();
        if stand && self.stood.is_none_or(|at| at.elapsed() >= STAND_EVERY) {
            self.stood = Some(now);
            if let Err(e) = g0_raft(replica).trigger().elect().await {
                tracing::warn!(error = %e, "could not stand for election in shard 0's group");
            }
        }
    }

    /// The leader that stopped its heartbeats: done once another leads
    /// shard 0; past the window, it leads on.
    fn finish_yielding(&mut self, replica: &Replica) {
        let Some(since) = self.yielding else { return };
        if !replica.leads_zero() {
            tracing::info!(took = ?since.elapsed(), "handed the lead over");
            self.yielding = None;
            replica.set_yielding(false);
        } else if since.elapsed() >= WINDOW {
            tracing::warn!("the wanted MDS did not take the lead in {WINDOW:?}; leading on, trying again in {RETRY_AFTER:?}");
            self.yielding = None;
            self.not_before = Some(Instant::now() + RETRY_AFTER);
            replica.set_yielding(false);
        }
    }

    /// The serving leader starts a round for `w` once it answers and
    /// holds the log.
    async fn maybe_yield(&mut self, replica: &Replica, front: &Front, w: Wanted) {
        let now = Instant::now();
        if !replica.leads_zero() || self.not_before.is_some_and(|t| now < t) {
            return;
        }
        let Some(active) = front.active() else { return };
        self.not_before = Some(now + LOOK_EVERY);
        if !is_member(replica, w.to) {
            // Taken out (`mdsctl mds remove`): the wish goes with it.
            let r = active.svc.ns.shard(0).mutate(|txn| txn.open_table(META).io()?.remove(WANTED).io().map(|_| ())).await;
            match r {
                Ok(()) => tracing::info!(to = w.to, "MDS {} is no longer a member: no member is wanted to lead", w.to),
                Err(e) => e.log("forgetting which MDS was wanted to lead"),
            }
            return;
        }
        if !ready_to_lead(replica, w.to) || !answers(replica, w.to).await {
            return;
        }
        let next = w.round + 1;
        let r = active.svc.ns.shard(0).mutate(move |txn| txn.open_table(META).io()?.insert(ROUND, next).io().map(|_| ())).await;
        if let Err(e) = r {
            return e.log("starting to hand the lead over");
        }
        tracing::info!(to = w.to, round = next, "handing the lead to MDS {}: heartbeats and commits stop here", w.to);
        self.yielding = Some(Instant::now());
        replica.set_yielding(true);
        // Nothing may be sent to the members now, or they would keep
        // their lease of this leader and vote for nobody else: the
        // service stops, and starts again if the round fails.
        drop(active);
        front.set_active(None);
        // Nor does it hold on to any group once the round ends: the next
        // leader carries over what the service left half done, and a
        // group still led here with heartbeats going would never fall
        // silent for the wanted member to stand in.
        replica.set_kept(vec![false; replica.shards() as usize]);
        replica.claim().await;
    }
}

fn g0_raft(replica: &Replica) -> &crate::store::raft::ShardRaft {
    &replica.zero().raft
}

/// `id` is in shard 0's group, voting or learning.
fn is_member(replica: &Replica, id: NodeId) -> bool {
    g0_raft(replica).metrics().borrow().membership_config.membership().get_node(&id).is_some()
}

/// `to` votes in shard 0's group, and holds the log of each group this
/// leader leads and it votes in as far as it, less [`CAUGHT_UP`]
/// entries (the groups of shards placed elsewhere stay where they are,
/// placing.rs, and those it is not in stay led here).
fn ready_to_lead(replica: &Replica, to: NodeId) -> bool {
    votes(replica.zero().raft.metrics().borrow().membership_config.membership(), to)
        && replica.held().iter().all(|g| {
            let m = g.raft.metrics().borrow().clone();
            !leads(&m, replica.members.me) || !votes(m.membership_config.membership(), to) || behind(&m, to) <= CAUGHT_UP
        })
}

/// `to` answers a question over the members' network now.
async fn answers(replica: &Replica, to: NodeId) -> bool {
    let Some(peers) = &replica.members.peers else { return false };
    let m = g0_raft(replica).metrics().borrow().clone();
    let Some(addr) = m.membership_config.membership().get_node(&to).and_then(|n| n.addr.parse().ok()) else { return false };
    match peers.ask(addr, 0, &net::WireReq::Held { member: to }, PROBE_TIMEOUT).await {
        Ok(_) => true,
        Err(e) => {
            tracing::debug!(to, error = %e, "the MDS wanted to lead does not answer");
            false
        }
    }
}
