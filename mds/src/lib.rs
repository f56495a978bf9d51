//! The metadata server: N shards, each a Raft group of one or several MDS
//! processes (DESIGN.md, "Metadata"), the OSD map, client sessions and
//! object GC; plus the `mdsctl` admin tool's client side.
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod admin;
pub mod applied;
pub mod caps;
pub mod cluster;
pub mod config;
pub mod front;
pub mod fsck;
pub mod gc;
pub mod handover;
pub mod holders;
pub mod membership;
pub mod meter;
pub mod metrics;
pub mod nameless;
pub mod numbers;
pub mod others;
pub mod repair;
pub mod revoked;
pub mod seats;
pub mod namespace;
pub mod once;
mod ops;
pub mod placing;
pub mod records;
pub mod replica;
pub mod reservations;
pub mod service;
mod serving;
pub mod shardnet;
pub mod slowest;
pub mod store;
pub mod takeover;

use crate::front::Front;
use crate::replica::Replica;
use crate::namespace::Namespace;
use aifs_common::rpc::{self, Identity};
use aifs_common::Result;
pub use config::MdsConfig;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// A running MDS.
pub struct MdsHandle {
    pub addr: SocketAddr,
    pub front: Arc<Front>,
    endpoint: quinn::Endpoint,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The metrics endpoint, if configured; stops at shutdown.
    metrics: std::sync::Mutex<Option<aifs_common::metrics::MetricsServer>>,
}

impl MdsHandle {
    /// The namespace, while this process leads and serves it.
    pub fn ns(&self) -> Option<Arc<Namespace>> {
        self.front.active().map(|a| a.svc.ns.clone())
    }

    pub fn shutdown(&self) {
        if let Ok(mut m) = self.metrics.lock() {
            m.take();
        }
        self.endpoint.close(0u32.into(), b"shutdown");
        for t in &self.tasks {
            t.abort();
        }
        self.front.set_active(None);
        // The groups stop too (and let go of their files), if a runtime
        // is there to run that.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let replica = self.front.replica.clone();
            rt.spawn(async move { replica.shutdown().await });
        }
    }
}

/// How often leadership is looked at while the namespace runs here.
const LEAD_TICK: Duration = Duration::from_millis(50);

/// And while it does not: a process just elected in shard 0 claims the
/// other groups, then starts its namespace, each at a tick.
const FOLLOW_TICK: Duration = Duration::from_millis(20);

/// Failed starts of the namespace in a row. Each try waits twice as long
/// as the one before (from [`FOLLOW_TICK`] to about a second), unless
/// shard 0's copy here has applied something since the last one, and a
/// failure is logged as a warning once every [`SAY_AGAIN`]: a process
/// leading a group apart from shard 0's leader may find shard 0 not
/// ready yet (no capability secret in a new file system) for a second
/// or more, and starts as soon as the secret reaches it.
#[derive(Default)]
struct Starts {
    failed: u32,
    last: Option<std::time::Instant>,
    said: Option<std::time::Instant>,
    /// Shard 0's last applied index here at the last failure.
    zero_at: Option<u64>,
}

const SAY_AGAIN: Duration = Duration::from_secs(5);

impl Starts {
    fn due(&self, zero_applied: Option<u64>) -> bool {
        self.last.is_none_or(|at| zero_applied != self.zero_at || at.elapsed() >= FOLLOW_TICK * (1 << self.failed.min(6)))
    }

    fn failed(&mut self, e: &aifs_common::Error, zero_applied: Option<u64>) {
        self.failed += 1;
        self.last = Some(std::time::Instant::now());
        self.zero_at = zero_applied;
        match self.said.is_none_or(|at| at.elapsed() >= SAY_AGAIN) {
            true => {
                self.said = self.last;
                e.log("starting the namespace failed");
            }
            false => tracing::debug!(error = %e, tries = self.failed, "starting the namespace failed again"),
        }
    }
}

/// Every this many ticks of a serving leader the members that hold the
/// log are recorded.
const RECORD_HOLDERS_EVERY: u64 = 20;

/// Start the MDS: its endpoint, its groups, and the namespace service
/// whenever this process leads them. A one-member MDS serves when this
/// returns; a member of several serves once it is elected.
pub async fn start(cfg: MdsConfig) -> Result<MdsHandle> {
    let id = Identity::load(&cfg.tls)?;
    // Revoked certificates are loaded into it when the namespace starts.
    let gate = Arc::new(aifs_common::rpc::Gate::default());
    let endpoint = rpc::server_endpoint(cfg.listen, &id, &cfg.transport, gate.clone())?;
    let addr = endpoint.local_addr()?;
    let (me, all) = cfg.group_members()?;
    let solo = cfg.is_solo();
    let peers = match solo {
        true => None,
        false => Some(crate::store::raft::net::PeerClients::new(endpoint.clone(), rpc::endpoint::member_client_config(&id, &cfg.transport)?)),
    };
    let members = crate::store::raft::Members { me, all, peers, join: cfg.join, group_size: cfg.group_size };
    let replica = Arc::new(Replica::open(&cfg.data_dir, cfg.shards, members, &cfg.raft).await?);
    let (registry, rpc_metrics) = crate::metrics::registry();
    let counted = cfg.metrics_listen.as_ref().map(|_| rpc_metrics);
    let front = Arc::new(Front::new(replica.clone(), counted));
    let metrics = match cfg.metrics_listen.as_ref().map(|l| crate::metrics::start(l, registry, front.clone())) {
        Some(Err(e)) => {
            replica.shutdown().await;
            return Err(e);
        }
        started => started.transpose()?,
    };
    if solo {
        front.set_active(Some(serving::serve_namespace(&cfg, &replica, &endpoint, &gate, replica.wanted()).await?));
    }
    let serve = tokio::spawn(rpc::serve(endpoint.clone(), front.clone(), gate.clone()));
    // Served first: the others ask this process the same question.
    if let Err(e) = replica.make_groups().await {
        endpoint.close(0u32.into(), b"not started");
        serve.abort();
        replica.shutdown().await;
        return Err(e);
    }
    let lead = tokio::spawn(lead(cfg.clone(), front.clone(), endpoint.clone(), gate));
    let others = tokio::spawn(replica.clone().watch_others());
    tracing::info!(%addr, id = me, members = replica.members.all.len(), shards = cfg.shards, data = %cfg.data_dir.display(), "MDS serving");
    Ok(MdsHandle { addr, front, endpoint, tasks: vec![serve, lead, others], metrics: std::sync::Mutex::new(metrics) })
}

/// Start the namespace service whenever this process is ready to lead
/// every group it is to lead (replica.rs), and stop it when it loses one
/// or the groups it is to lead change: the service then starts as after
/// a restart, with a grace for the clients to come back.
async fn lead(cfg: MdsConfig, front: Arc<Front>, endpoint: quinn::Endpoint, gate: Arc<aifs_common::rpc::Gate>) {
    let replica = front.replica.clone();
    let mut holders = std::collections::BTreeSet::new();
    let mut handover = crate::handover::Handover::default();
    let mut takeover = crate::takeover::Takeover::default();
    let mut starts = Starts::default();
    let mut tick = 0u64;
    loop {
        tokio::time::sleep(if front.active().is_some() { LEAD_TICK } else { FOLLOW_TICK }).await;
        tick += 1;
        handover.tick(&replica, &front).await;
        takeover.tick(&replica, handover.barred()).await;
        replica.claim().await;
        if let Err(e) = replica.name_myself().await {
            e.log("writing this MDS's address into its groups");
        }
        let active = front.active();
        if let Some(a) = active.as_ref().filter(|a| a.serves(0) && tick % RECORD_HOLDERS_EVERY == 0) {
            // Bounded: a shard 0 that cannot commit must not hold up the
            // loop that notices it lost the lead.
            match tokio::time::timeout(LEAD_TICK * 10, crate::holders::record_holders(&replica, &a.svc.ns, &mut holders)).await {
                Ok(Err(e)) => e.log("recording the members that hold the log"),
                Err(_) => tracing::debug!("recording the members that hold the log: no commit in time"),
                Ok(Ok(())) => {}
            }
        }
        let wanted = replica.wanted();
        let lost = active.as_ref().is_some_and(|a| replica.lost_any(&a.led));
        match active {
            Some(a) if !replica.members.is_solo() && (lost || a.led != wanted) => {
                tracing::warn!(lost, leader = %replica.leader_addr(), serving = %shard_list(&a.led), to_lead = %shard_list(&wanted), "the shards led here changed; the namespace stops here");
                front.set_active(None);
                // Only shards given up need what the service left half done
                // carried over here; one that takes shards on leads them
                // itself next.
                let gives_up = a.led.iter().zip(&wanted).any(|(had, to)| *had && !*to);
                if !lost && gives_up {
                    serving::let_go(a).await;
                }
                replica.set_kept(vec![false; wanted.len()]);
            }
            Some(_) => {}
            None if replica.ready_for(&wanted) && starts.due(replica.zero_applied()) => {
                tracing::info!(shards = %shard_list(&wanted), "leading the shards this MDS is to lead; the namespace starts here");
                match serving::serve_namespace(&cfg, &replica, &endpoint, &gate, wanted.clone()).await {
                    Ok(a) => {
                        starts = Starts::default();
                        front.set_active(Some(a));
                        replica.set_kept(wanted);
                    }
                    Err(e) => starts.failed(&e, replica.zero_applied()),
                }
            }
            None => {}
        }
    }
}

/// The shards `led` marks, as "0,2,3".
fn shard_list(led: &[bool]) -> String {
    let ids: Vec<String> = led.iter().enumerate().filter(|(_, l)| **l).map(|(i, _)| i.to_string()).collect();
    ids.join(",")
}

impl Drop for MdsHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}
