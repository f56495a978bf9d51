//! Standing for election in shard 0's group as soon as a dead leader's
//! lease has lapsed, rather than when openraft's timer says.
//!
//! A follower that knew a leader waits, in openraft 0.9, the leader's
//! lease (`ELECTION_MAX_MS`) plus a random election timeout
//! (`ELECTION_MIN_MS` to `ELECTION_MAX_MS`) after the last message it had
//! from it: 0.9-1.2 s, which was most of what a checkpoint stalled when
//! the leader died. Worse, each group's timer fires on its own, so the
//! survivor that did not win shard 0 often won some other group first,
//! and gave it up only after its own lease there (another 0.6 s).
//!
//! The members vote for anyone once their lease has lapsed, so each
//! survivor here stands in shard 0's group once [`LAPSE`] has passed since
//! the leader's last append reached it; the survivors stand one after the
//! other in the order of their ids ([`STAGGER`] apart), so that they do not
//! split the vote, and a survivor whose log is behind is passed over by the
//! next. Shard 0's new leader then claims the other groups at once
//! (replica.rs), before their timers fire. Nothing of this happens while a
//! handover keeps this member from standing.
use crate::membership::votes;
use crate::replica::{leads, Replica};
use crate::store::raft::{NodeId, ELECTION_MAX_MS};
use std::time::{Duration, Instant};

/// After the leader's last append, when the first survivor stands: the
/// members' lease of the leader, and a margin for the appends of one
/// heartbeat reaching the members at different times.
const LAPSE: Duration = Duration::from_millis(ELECTION_MAX_MS + 100);

/// Between the survivors' turns.
const STAGGER: Duration = Duration::from_millis(200);

/// One process's watch over shard 0's leader.
#[derive(Default)]
pub struct Takeover {
    /// When this member last stood here.
    stood: Option<Instant>,
}

impl Takeover {
    /// Stand for election in shard 0's group if its leader has been
    /// silent past this member's turn. `barred`: a handover's window is
    /// open for another member.
    pub async fn tick(&mut self, replica: &Replica, barred: bool) {
        let me = replica.members.me;
        let Some(g0) = replica.group(0) else { return };
        if replica.members.is_solo() || barred {
            return;
        }
        let Some(heard) = g0.heard() else { return };
        let turn = {
            let m = g0.raft.metrics();
            let m = m.borrow();
            if leads(&m, me) || m.state != openraft::ServerState::Follower {
                return;
            }
            let membership = m.membership_config.membership();
            if !votes(membership, me) {
                return;
            }
            turn(membership.voter_ids(), m.current_leader, me)
        };
        let due = LAPSE + STAGGER * turn;
        // Once per silence: a member that stood and lost waits for the
        // next leader's appends, or for openraft's own timer.
        if heard.elapsed() < due || self.stood.is_some_and(|at| at > heard) {
            return;
        }
        self.stood = Some(Instant::now());
        tracing::info!(silent = ?heard.elapsed(), turn, "shard 0's leader is silent past its lease: standing for election");
        if let Err(e) = g0.raft.trigger().elect().await {
            tracing::warn!(error = %e, "could not stand for election in shard 0's group");
        }
    }
}

/// `me`'s place among the voters other than the silent `leader`, in the
/// order of their ids: how many survivors stand before it.
fn turn(voters: impl Iterator<Item = NodeId>, leader: Option<NodeId>, me: NodeId) -> u32 {
    voters.filter(|v| Some(*v) != leader && *v < me).count() as u32
}

#[cfg(test)]
mod tests {
    use super::turn;

    #[test]
    fn the_survivors_stand_one_at_a_time_in_the_order_of_their_ids() {
        let voters = [3, 1, 5, 2];
        let turns: Vec<u32> = [1, 2, 3].iter().map(|me| turn(voters.iter().copied(), Some(5), *me)).collect();
        assert_eq!(turns, vec![0, 1, 2]);
        // The leader's own place is not counted, wherever it is.
        assert_eq!(turn(voters.iter().copied(), Some(1), 2), 0);
        assert_eq!(turn(voters.iter().copied(), Some(1), 5), 2);
        // No leader known: every voter counts.
        assert_eq!(turn(voters.iter().copied(), None, 3), 2);
    }
}
