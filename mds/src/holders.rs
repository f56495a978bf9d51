//! A member that lost its data directory lost its votes with it: started
//! again as a voter it could vote twice in one term, and two leaders could
//! be elected in it. So it must come back only through `mdsctl mds remove`
//! and `mdsctl mds add` (membership.rs), as a learner first.
//!
//! To know a lost directory from a new one, shard 0's leader records each
//! member it has seen holding the log ([`record_holders`]). A process that
//! starts with no groups asks the members of its config first
//! ([`Replica::make_groups`]), and answers no other Raft message until it
//! has heard from a majority of them (counting itself): if one says this
//! member held the log and still votes, it refuses to start, naming the
//! way back; if one says it held the log and was taken out since, it
//! refuses to start without `--join` (its id is reused for a new process
//! only through `mdsctl mds add`). The members of a file system being
//! made answer "no", so they make the same first entry each; a process
//! started with `--join` makes none and waits for the leader to add it.
use crate::membership;
use crate::namespace::Namespace;
use crate::replica::Replica;
use crate::store::raft::{self, net, NodeId};
use crate::store::{IoResult, META};
use aifs_common::{Error, Result};
use redb::ReadableTable;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long one question to one member waits.
const ASK_TIMEOUT: Duration = Duration::from_secs(1);

/// Between rounds of questions, and between log lines while waiting.
const ASK_AGAIN: Duration = Duration::from_millis(200);
const SAY_EVERY: Duration = Duration::from_secs(5);

/// Shard 0's META key recording that member `id` has held the log.
fn held_key(id: NodeId) -> String {
    format!("member_held.{id}")
}

/// Which of `ids` shard 0's `meta` table records as having held the log.
pub fn held_in(meta: &impl ReadableTable<&'static str, u64>, ids: &[NodeId]) -> Result<Vec<bool>> {
    ids.iter().map(|id| Ok(meta.get(held_key(*id).as_str()).io()?.is_some())).collect()
}

/// Member `id` is recorded, in `db` (shard 0's database), as having held
/// the log.
pub fn recorded_held(db: &redb::Database, id: NodeId) -> Result<bool> {
    Ok(crate::store::with_meta(db, |meta| held_in(meta, &[id]))?.and_then(|h| h.first().copied()).unwrap_or(false))
}

/// Record, in shard 0, each voter that shard 0's leader (this process)
/// knows to hold its log and `recorded` does not name yet.
pub async fn record_holders(replica: &Replica, ns: &Namespace, recorded: &mut BTreeSet<NodeId>) -> Result<()> {
    let Some(g) = replica.group(0) else { return Ok(()) };
    let m = g.raft.metrics().borrow().clone();
    let me = replica.members.me;
    let holds = |id: &NodeId| *id == me || membership::matched(&m, *id) > 0;
    let new: Vec<NodeId> = m.membership_config.membership().voter_ids().filter(|id| holds(id) && !recorded.contains(id)).collect();
    if new.is_empty() {
        return Ok(());
    }
    let write = new.clone();
    ns.shard(0)
        .mutate(move |txn| {
            let mut meta = txn.open_table(META).io()?;
            for id in &write {
                meta.insert(held_key(*id).as_str(), 1u64).io()?;
            }
            Ok(())
        })
        .await?;
    recorded.extend(new);
    Ok(())
}

impl Replica {
    /// What another member asks of this one: whether member `id` is
    /// recorded as having held the log, and whether it votes in shard 0's
    /// group as this member knows it.
    pub fn standing(&self, id: NodeId) -> Result<(bool, bool)> {
        let Some(g) = self.group(0) else { return Ok((false, false)) };
        let votes = membership::votes(g.raft.metrics().borrow().membership_config.membership(), id);
        Ok((recorded_held(&g.db, id)?, votes))
    }

    /// The groups, new here: made of the config's members (or, joining,
    /// left for the leader to fill) once a majority of those members has
    /// answered and none has said this one lost its data (see the top of
    /// this file).
    pub async fn make_groups(&self) -> Result<()> {
        if !self.unmade() {
            return Ok(());
        }
        if let Some(peers) = &self.members.peers {
            self.ask_members(peers).await?;
        }
        if !self.members.join {
            for g in self.held() {
                raft::make_group(&g.raft, g.shard, &self.members).await?;
            }
        }
        self.set_made();
        Ok(())
    }

    async fn ask_members(&self, peers: &net::PeerClients) -> Result<()> {
        let me = self.members.me;
        let mut left: Vec<(NodeId, SocketAddr)> =
            self.members.all.iter().filter(|(id, _)| **id != me).filter_map(|(id, a)| a.parse().ok().map(|a| (*id, a))).collect();
        // A majority of the config's members, this one among them.
        let mut need = (self.members.all.len() / 2 + 1).saturating_sub(usize::from(self.members.all.contains_key(&me)));
        let started = Instant::now();
        let mut said = Instant::now();
        while need > 0 {
            let mut still = Vec::new();
            for (id, addr) in left {
                match peers.ask(addr, 0, &net::WireReq::Held { member: me }, ASK_TIMEOUT).await {
                    Ok(net::WireResp::Held { held: true, votes: true }) => return Err(lost(me, id, addr)),
                    // Taken out since: made as configured, its groups
                    // would start a second history beside the cluster's.
                    Ok(net::WireResp::Held { held: true, votes: false }) if !self.members.join => return Err(removed(me, id, addr)),
                    Ok(net::WireResp::Held { .. }) => need = need.saturating_sub(1),
                    Ok(other) => return Err(Error::Protocol(format!("MDS {id} ({addr}) answered {other:?}"))),
                    Err(e) => {
                        tracing::debug!(peer = id, error = %e, "asking whether this MDS held the log");
                        still.push((id, addr));
                    }
                }
            }
            left = still;
            if need > 0 {
                if said.elapsed() >= SAY_EVERY {
                    said = Instant::now();
                    tracing::warn!(waited = ?started.elapsed(), answers_needed = need, "this MDS has no groups yet; waiting for a majority of the members in its config to answer");
                }
                tokio::time::sleep(ASK_AGAIN).await;
            }
        }
        Ok(())
    }
}

fn removed(me: NodeId, id: NodeId, addr: SocketAddr) -> Error {
    Error::InvalidArgument(format!(
        "MDS {me} starts with no data and without --join, but MDS {id} ({addr}) says it held the metadata log before \
         and was taken out of the groups since: start it with --join and add it again (`mdsctl mds add ADDR --id {me}`)"
    ))
}

fn lost(me: NodeId, id: NodeId, addr: SocketAddr) -> Error {
    Error::InvalidArgument(format!(
        "MDS {me} starts with no data, but MDS {id} ({addr}) says it held the metadata log before and still votes: \
         its data directory was lost, and with it its votes. Take it out (`mdsctl mds remove {me}`), \
         then start it with --join and add it again (`mdsctl mds add ADDR --id {me}`)"
    ))
}
