//! The MDS's Prometheus metrics (`metrics_listen`): its requests by
//! operation (counted by the RPC server, common/src/metrics.rs), and,
//! sampled at each scrape, what this process holds while it serves the
//! namespace: sessions, leases, replicas recorded stale, being repaired
//! and repaired. A member that does not lead reports `leader 0` and no
//! namespace figures.
use crate::front::Front;
use aifs_common::metrics::{serve, MetricsServer, RpcMetrics};
use aifs_common::Result;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// How long a scrape waits for the shards' counts.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Default, Clone)]
struct Sampled {
    leader: Gauge,
    sessions: Gauge,
    leases: Gauge,
    degraded: Gauge,
    repairing: Gauge,
    repaired: Gauge,
    repaired_bytes: Gauge,
    moved: Gauge,
    to_move: Gauge,
    osds_up: Gauge,
}

impl Sampled {
    /// Every gauge, with its name and help: registered, and zeroed where
    /// nothing is served, from this one list.
    fn all(&self) -> [(&'static str, &'static str, &Gauge); 10] {
        [
            ("leader", "1 while this process serves the namespace", &self.leader),
            ("sessions", "Client sessions open", &self.sessions),
            ("leases", "Leases the sessions hold", &self.leases),
            ("replicas_degraded", "Replicas recorded stale, left to repair", &self.degraded),
            ("replicas_repairing", "Replicas being rewritten now", &self.repairing),
            ("replicas_repaired", "Replicas rewritten since this process began to lead", &self.repaired),
            ("repaired_bytes", "Bytes copied by repair since this process began to lead", &self.repaired_bytes),
            ("replicas_moved", "Replicas moved off OSDs taken out since this process began to lead", &self.moved),
            ("replicas_to_move", "Replicas on OSDs taken out still to move", &self.to_move),
            ("osds_up", "OSDs that answer their heartbeats", &self.osds_up),
        ]
    }

    fn register(&self, reg: &mut Registry) {
        for (name, help, g) in self.all() {
            reg.register(name, help, g.clone());
        }
    }

    /// Read what `front` serves now; zeros where it serves nothing.
    fn refresh(&self, front: &Front, rt: &tokio::runtime::Handle) {
        let Some(active) = front.active() else {
            for (_, _, g) in self.all() {
                g.set(0);
            }
            return;
        };
        let svc = &active.svc;
        let ns = &svc.ns;
        self.leader.set(1);
        let sessions = ns.cluster.session_infos();
        self.sessions.set(sessions.len() as i64);
        self.leases.set(sessions.iter().map(|s| s.leases as i64).sum());
        let counts = rt.block_on(async { tokio::time::timeout(SAMPLE_TIMEOUT, ns.shard_counts()).await });
        if let Ok(Ok(counts)) = counts {
            // The shards led here, whose repair runs here: over several
            // processes, each shard is counted by one.
            self.degraded.set(counts.iter().filter(|c| ns.leads(c.0)).map(|c| c.4 as i64).sum());
        }
        let stats = &svc.repair.stats;
        self.repairing.set(stats.active.load(Ordering::Relaxed) as i64);
        self.repaired.set(stats.repaired.load(Ordering::Relaxed) as i64);
        self.repaired_bytes.set(stats.bytes.load(Ordering::Relaxed) as i64);
        self.moved.set(stats.moved.load(Ordering::Relaxed) as i64);
        self.to_move.set(stats.to_move.load(Ordering::Relaxed) as i64);
        let up = ns.cluster.osds.infos().iter().filter(|o| o.state == aifs_common::proto::mds::OsdState::Up).count();
        self.osds_up.set(up as i64);
    }
}

/// The registry with the request counters the front fills.
pub fn registry() -> (Registry, Arc<RpcMetrics>) {
    let mut reg = Registry::with_prefix("aifs_mds");
    let rpc = RpcMetrics::register(&mut reg);
    (reg, rpc)
}

/// Serve `reg` at `listen`, sampling `front` at each scrape.
pub fn start(listen: &str, mut reg: Registry, front: Arc<Front>) -> Result<MetricsServer> {
    let sampled = Sampled::default();
    sampled.register(&mut reg);
    let rt = tokio::runtime::Handle::current();
    serve(listen, reg, move || sampled.refresh(&front, &rt))
}
