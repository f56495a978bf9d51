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
pub mod repair;
pub mod revoked;
pub mod namespace;
pub mod once;
mod ops;
pub mod placing;
pub mod records;
pub mod replica;
pub mod reservations;
pub mod service;
pub mod shardnet;
pub mod slowest;
pub mod store;
pub mod takeover;

use crate::cluster::Cluster;
use crate::front::{Active, Front};
use crate::gc::{Gc, OsdClients};
use crate::replica::Replica;
use crate::repair::Repair;
use crate::namespace::Namespace;
use crate::records::OsdRec;
use crate::service::MdsService;
use crate::store::{IoResult, META, OSDS};
use aifs_common::rpc::{self, Identity};
use aifs_common::Result;
pub use config::MdsConfig;
use redb::ReadableTable;
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
    let members = crate::store::raft::Members { me, all, peers, join: cfg.join };
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
        front.set_active(Some(serve_namespace(&cfg, &replica, &endpoint, &gate, replica.wanted()).await?));
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
    tracing::info!(%addr, id = me, members = replica.members.all.len(), shards = cfg.shards, data = %cfg.data_dir.display(), "MDS serving");
    Ok(MdsHandle { addr, front, endpoint, tasks: vec![serve, lead], metrics: std::sync::Mutex::new(metrics) })
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
        match active {
            Some(a) if !replica.members.is_solo() && (replica.lost_any(&a.led) || a.led != wanted) => {
                let lost = replica.lost_any(&a.led);
                tracing::warn!(lost, leader = %replica.leader_addr(), serving = %shard_list(&a.led), to_lead = %shard_list(&wanted), "the shards led here changed; the namespace stops here");
                front.set_active(None);
                if !lost {
                    let_go(a).await;
                }
                replica.set_kept(vec![false; wanted.len()]);
            }
            Some(_) => {}
            None if replica.ready_for(&wanted) => {
                tracing::info!(shards = %shard_list(&wanted), "leading the shards this MDS is to lead; the namespace starts here");
                match serve_namespace(&cfg, &replica, &endpoint, &gate, wanted.clone()).await {
                    Ok(a) => {
                        front.set_active(Some(a));
                        replica.set_kept(wanted);
                    }
                    Err(e) => e.log("starting the namespace failed"),
                }
            }
            None => {}
        }
    }
}

/// How long a service that lets shards go waits for the requests it
/// began.
const LET_GO_WAIT: Duration = Duration::from_secs(5);

/// A service stopped because shards it still leads go elsewhere: the
/// requests it began finish, and what they left half done (an intent,
/// whose steps in the shards going were to commit where they were led
/// with no prepared row) is carried over by this namespace, in which
/// those shards are still its own, before their heartbeats stop
/// (`Replica::set_kept`). Carried over by the next service instead, the
/// steps would be sent to the shard's new leader, which, finding no
/// prepared row, would take them for made already.
async fn let_go(a: Arc<Active>) {
    let until = tokio::time::Instant::now() + LET_GO_WAIT;
    // Each request being served holds the service.
    while Arc::strong_count(&a) > 1 {
        if tokio::time::Instant::now() >= until {
            tracing::warn!("requests of the service stopped still run after {LET_GO_WAIT:?}; what they leave half done is carried over by the next one");
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if let Err(e) = a.svc.ns.roll_forward().await {
        e.log("carrying over what the stopped service left half done");
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

/// The namespace over `replica`'s groups: over the ones `led` marks, with
/// the way to the other shards' leaders. Even leading them all, a member
/// of replicated groups settles what the shards hold prepared: a shard
/// may have been led elsewhere since (placing.rs).
async fn namespace_over(cfg: &MdsConfig, replica: &Arc<Replica>, led: &[bool], cluster: Arc<Cluster>) -> Result<Arc<Namespace>> {
    let Some(peers) = replica.members.peers.clone() else {
        return Ok(Arc::new(Namespace::over(replica.stores()?, cfg.default_layout.clone(), cluster).await?));
    };
    let r = replica.clone();
    let leader_of: crate::shardnet::LeaderOf = Arc::new(move |shard| r.leading_addr_of(shard).parse().ok());
    let remote = crate::namespace::twophase::Remote::new(led.to_vec(), Arc::new(crate::shardnet::ShardLinks::new(peers, leader_of)));
    Namespace::over_led(replica.stores()?, cfg.default_layout.clone(), cluster, remote).await
}

/// A process that serves shards but not shard 0 takes the OSD map from
/// shard 0's leader, where the OSDs heartbeat.
async fn follow_osd_map(replica: &Replica, cluster: &Cluster) -> Result<()> {
    use aifs_common::proto::mds::{MdsCall, MdsReply, MdsReq, MdsResp};
    use aifs_common::Error;
    let Some(peers) = &replica.members.peers else { return Ok(()) };
    let addr: SocketAddr = replica.leading_addr_of(0).parse().map_err(|_| Error::Unavailable("no leader of shard 0 is known".into()))?;
    let call = MdsCall::from(MdsReq::OsdMap);
    let asked = tokio::time::timeout(Duration::from_secs(2), peers.to(addr).call::<_, MdsReply>(&call, &[])).await;
    let (reply, _) = asked.map_err(|_| Error::Unavailable(format!("shard 0's leader at {addr} gave no OSD map")))??;
    match reply.resp {
        MdsResp::OsdMap { osds, .. } => Ok(cluster.osds.adopt(&osds)),
        MdsResp::Err(e) => Err(Error::from_wire(e.code, &e.msg)),
        other => Err(Error::Protocol(format!("the OSD map asked for, {other:?} came"))),
    }
}

/// The namespace service over the groups `led` marks, which this process
/// leads, with the tasks beside it (GC, repair, metering, the ticker).
async fn serve_namespace(cfg: &MdsConfig, replica: &Arc<Replica>, endpoint: &quinn::Endpoint, gate: &Arc<aifs_common::rpc::Gate>, led: Vec<bool>) -> Result<Active> {
    let mut cluster = Cluster::new(Duration::from_millis(cfg.osd_timeout_ms), Duration::from_millis(cfg.session_timeout_ms));
    cluster.limits = cfg.session_limits.clone();
    let cluster = Arc::new(cluster);
    let ns = namespace_over(cfg, replica, &led, cluster.clone()).await?;
    // What is the cluster's (sessions, the OSDs' heartbeats) is kept where
    // shard 0 is led.
    let zero = led[0];
    let known = ns
        .shard(0)
        .read(|t| {
            let mut v = Vec::new();
            for r in t.open_table(OSDS).io()?.iter().io()? {
                let (k, val) = r.io()?;
                v.push((k.value(), OsdRec::decode(val.value())?));
            }
            Ok(v)
        })
        .await?;
    let outs = ns
        .shard(0)
        .read(|t| {
            let mut v = Vec::new();
            for r in t.open_table(META).io()?.range("osd_out."..).io()? {
                let (k, _) = r.io()?;
                match k.value().strip_prefix("osd_out.") {
                    Some(id) => v.extend(id.parse::<u32>().ok()),
                    None => break,
                }
            }
            Ok(v)
        })
        .await?;
    for (osd, rec) in known {
        cluster.osds.load(osd, rec.addr, rec.capacity, rec.used);
    }
    for id in outs {
        cluster.osds.set_out(id, true);
    }
    if zero {
        cluster.start_grace(ops::stored_sessions(&ns).await?);
    }
    let revoked = crate::revoked::Revocations::open(&ns, gate.clone()).await?;
    let osd_clients = Arc::new(OsdClients::new(endpoint.clone(), cluster.clone()));
    if zero {
        tokio::spawn({
            let (c, ids) = (osd_clients.clone(), cluster.osds.unheard());
            async move { c.ask_to_beat(ids).await }
        });
    }
    let gc = Arc::new(Gc::new(ns.clone(), osd_clients.clone()));
    let repair = Arc::new(Repair::new(ns.clone(), osd_clients.clone(), cfg.repair_mb_per_s));
    let meter = Arc::new(crate::meter::Meter::new(ns.clone(), osd_clients.clone()));
    let fsck = Arc::new(crate::fsck::Fsck::new(ns.clone(), osd_clients, repair.clone()));
    let caps = crate::caps::Caps::open(&ns, cfg.cap_term_ms).await?;
    let svc = Arc::new(MdsService {
        ns: ns.clone(),
        caps,
        revoked,
        gc: gc.clone(),
        meter: meter.clone(),
        repair: repair.clone(),
        fsck,
        session_heartbeat_ms: cfg.session_timeout_ms / 4,
        spread: cfg.spread,
        anon: (cfg.anon_uid, cfg.anon_gid),
        requests: Default::default(),
        slowest: Default::default(),
    });
    let gc_task = tokio::spawn(gc.run());
    let repair_task = tokio::spawn(repair.run());
    let meter_task = tokio::spawn(meter.run());
    let tick_cluster = cluster.clone();
    let tick_svc = svc.clone();
    let tick_replica = replica.clone();
    let ticker = tokio::spawn(async move {
        // Files unlinked while open are freed once nobody has them open:
        // at start, and after sessions end without closing them.
        tick_svc.purge().await;
        let mut n = 0u64;
        let mut placeable = tick_cluster.osds.placeable();
        let mut grace = tick_cluster.in_grace();
        loop {
            if !zero {
                if let Err(e) = follow_osd_map(&tick_replica, &tick_cluster).await {
                    tracing::debug!(error = %e, "the OSD map of shard 0's leader could not be had");
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            let expired = tick_cluster.tick();
            if !expired.is_empty() {
                if let Err(e) = tick_svc.forget_sessions(&expired).await {
                    e.log("forgetting expired sessions failed");
                }
            }
            if grace && !tick_cluster.in_grace() && zero {
                // Sessions of the last run that never came back.
                grace = false;
                let gone: Vec<aifs_common::SessionId> = match ops::stored_sessions(&tick_svc.ns).await {
                    Ok(v) => v.into_iter().map(|(id, _)| id).filter(|id| !tick_cluster.sessions.contains_key(id)).collect(),
                    Err(e) => {
                        e.log("reading sessions failed");
                        Vec::new()
                    }
                };
                if let Err(e) = tick_svc.forget_sessions(&gone).await {
                    e.log("forgetting sessions of the last run failed");
                }
            }
            // An OSD that can no longer take data may be in layouts that
            // clients reserved: those go. OSDs joining leave them be.
            let now = tick_cluster.osds.placeable();
            if placeable.iter().any(|o| !now.contains(o)) {
                tick_svc.placement_changed().await;
            }
            placeable = now;
            n += 1;
            if n.is_multiple_of(4) {
                tick_svc.purge().await;
            }
            if n.is_multiple_of(120) && !tick_cluster.in_grace() {
                match tick_svc.ns.drop_reservations(|o| !tick_cluster.sessions_of(o).is_empty()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(numbers = n, "inode numbers reserved by clients that are gone released"),
                    Err(e) => e.log("releasing reserved inode numbers failed"),
                }
            }
            if n.is_multiple_of(120) {
                for s in tick_svc.ns.led() {
                    if let Err(e) = crate::once::sweep(s).await {
                        e.log("sweeping old request records failed");
                    }
                }
            }
        }
    });
    Ok(Active { svc, tasks: vec![gc_task, repair_task, meter_task, ticker], led })
}
