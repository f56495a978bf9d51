//! Starting the namespace service over the groups a process is to lead
//! (lib.rs's lead loop decides when), with what runs beside it, and
//! letting shards go when they are to be led elsewhere (placing.rs).
use crate::cluster::Cluster;
use crate::front::Active;
use crate::gc::{Gc, OsdClients};
use crate::namespace::Namespace;
use crate::ops;
use crate::records::OsdRec;
use crate::repair::Repair;
use crate::replica::Replica;
use crate::service::MdsService;
use crate::store::{IoResult, META, OSDS};
use crate::MdsConfig;
use aifs_common::Result;
use redb::ReadableTable;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How long a service that lets shards go waits for the requests it
/// began.
const LET_GO_WAIT: Duration = Duration::from_secs(5);

/// A service stopped because shards it still leads go elsewhere: the
/// requests it began finish (for a while), and what they left half done
/// (an intent, whose steps in the shards going were to commit where they
/// were led with no prepared row) is carried over by this namespace, in
/// which those shards are still its own, before their heartbeats stop
/// (`Replica::set_kept`). Carried over by the next service instead, the
/// steps would be sent to the shard's new leader, which, finding no
/// prepared row, would take them for made already.
pub(crate) async fn let_go(a: Arc<Active>) {
    let until = tokio::time::Instant::now() + LET_GO_WAIT;
    // Each request being served holds the service.
    while Arc::strong_count(&a) > 1 && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if Arc::strong_count(&a) > 1 {
        tracing::warn!("requests of the stopped service still run after {LET_GO_WAIT:?}; what they send from now on is refused");
    }
    // On handles of its own: a request still running must not make a
    // commit of its operation again after the roll-forward made it.
    let ns = match a.svc.ns.taken_over().await {
        Ok(ns) => ns,
        Err(e) => return e.log("carrying over what the stopped service left half done"),
    };
    // Bounded: a step for a shard led by a process that is gone waits
    // for its answer far longer (shardnet.rs), and no service runs here
    // meanwhile.
    match tokio::time::timeout(LET_GO_WAIT, ns.roll_forward()).await {
        Ok(Err(e)) => e.log("carrying over what the stopped service left half done"),
        Err(_) => tracing::warn!("carrying over what the stopped service left half done took past {LET_GO_WAIT:?}; the next one does the rest"),
        Ok(Ok(())) => {}
    }
}

/// The namespace over `replica`'s groups: over the ones `led` marks, with
/// the way to the other shards' leaders. Even leading them all, a member
/// of replicated groups settles what the shards hold prepared: a shard
/// may have been led elsewhere since (placing.rs).
async fn namespace_over(cfg: &MdsConfig, replica: &Arc<Replica>, led: &[bool], cluster: Arc<Cluster>) -> Result<Arc<Namespace>> {
    let Some(peers) = replica.members.peers.clone() else {
        return Ok(Arc::new(Namespace::over(replica.stores(), cfg.default_layout.clone(), cluster).await?));
    };
    let r = replica.clone();
    let leader_of: crate::shardnet::LeaderOf = Arc::new(move |shard| r.leading_addr_of(shard).parse().ok());
    // Groups over some of the processes: shard 0's, over all of them,
    // costs each change more copies than the others'.
    let spare_zero = cfg.group_size > 0;
    let links = Arc::new(crate::shardnet::ShardLinks::new(peers, leader_of));
    let remote = crate::namespace::twophase::Remote::new(led.to_vec(), links, spare_zero);
    Namespace::over_led(replica.stores(), cfg.default_layout.clone(), cluster, remote).await
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
pub(crate) async fn serve_namespace(cfg: &MdsConfig, replica: &Arc<Replica>, endpoint: &quinn::Endpoint, gate: &Arc<aifs_common::rpc::Gate>, led: Vec<bool>) -> Result<Active> {
    let mut cluster = Cluster::new(Duration::from_millis(cfg.osd_timeout_ms), Duration::from_millis(cfg.session_timeout_ms));
    cluster.limits = cfg.session_limits.clone();
    let cluster = Arc::new(cluster);
    let ns = namespace_over(cfg, replica, &led, cluster.clone()).await?;
    // What is the cluster's (the OSDs' heartbeats, the map) is kept where
    // shard 0 is led.
    let zero = led[0];
    load_osd_map(&ns, &cluster).await?;
    if !zero {
        cluster.osds.follow_relays();
    }
    // Clients' sessions are with each process: the sessions recorded in
    // the shards led here are those that may hold leases on them.
    cluster.start_grace(ops::stored_sessions(&ns).await?);
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
        replica: replica.clone(),
        session_heartbeat_ms: cfg.session_timeout_ms / 4,
        spread: cfg.spreads(),
        anon: (cfg.anon_uid, cfg.anon_gid),
        requests: Default::default(),
        slowest: Default::default(),
    });
    let gc_task = tokio::spawn(gc.run());
    let repair_task = tokio::spawn(repair.run());
    let meter_task = tokio::spawn(meter.run());
    cluster.begin_serving();
    let ticker = tokio::spawn(tick(svc.clone(), cluster, replica.clone(), zero));
    Ok(Active { svc, tasks: vec![gc_task, repair_task, meter_task, ticker], led })
}

/// The OSDs shard 0 knows, and those taken out, into `cluster`'s map:
/// down until they heartbeat.
async fn load_osd_map(ns: &Namespace, cluster: &Cluster) -> Result<()> {
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
    Ok(())
}

/// What the service does every 500 ms beside requests: sessions that
/// expired, the end of the grace, OSDs gone from placement, purges of
/// unlinked files, reservations and request records of clients gone;
/// without shard 0, the OSD map of its leader.
async fn tick(svc: Arc<MdsService>, cluster: Arc<Cluster>, replica: Arc<Replica>, zero: bool) {
    // Files unlinked while open are freed once nobody has them open:
    // at start, and after sessions end without closing them.
    svc.purge().await;
    let mut n = 0u64;
    let mut placeable = cluster.osds.placeable();
    let mut grace = cluster.in_grace();
    loop {
        if !zero {
            if let Err(e) = follow_osd_map(&replica, &cluster).await {
                tracing::debug!(error = %e, "the OSD map of shard 0's leader could not be had");
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let expired = cluster.tick();
        if !expired.is_empty() {
            if let Err(e) = svc.forget_sessions(&expired).await {
                e.log("forgetting expired sessions failed");
            }
        }
        if grace && !cluster.in_grace() {
            // Sessions of the last run that never came back.
            grace = false;
            let gone: Vec<aifs_common::SessionId> = match ops::stored_sessions(&svc.ns).await {
                Ok(v) => v.into_iter().map(|(id, _)| id).filter(|id| !cluster.sessions.contains_key(id)).collect(),
                Err(e) => {
                    e.log("reading sessions failed");
                    Vec::new()
                }
            };
            if let Err(e) = svc.forget_sessions(&gone).await {
                e.log("forgetting sessions of the last run failed");
            }
        }
        // An OSD that can no longer take data may be in layouts that
        // clients reserved: those go. OSDs joining leave them be.
        let now = cluster.osds.placeable();
        if placeable.iter().any(|o| !now.contains(o)) {
            svc.placement_changed().await;
        }
        placeable = now;
        n += 1;
        if n.is_multiple_of(4) {
            svc.purge().await;
        }
        if n.is_multiple_of(120) && !cluster.in_grace() {
            match svc.ns.drop_reservations(|o| !cluster.sessions_of(o).is_empty()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(numbers = n, "inode numbers reserved by clients that are gone released"),
                Err(e) => e.log("releasing reserved inode numbers failed"),
            }
        }
        if n.is_multiple_of(120) {
            for s in svc.ns.led() {
                if let Err(e) = crate::once::sweep(s).await {
                    e.log("sweeping old request records failed");
                }
            }
        }
    }
}
