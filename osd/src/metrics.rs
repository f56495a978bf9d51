//! The OSD's Prometheus metrics (`metrics_listen`): its requests by
//! operation, bytes in and out, errors and requests in flight (counted
//! by the RPC server, common/src/metrics.rs), and, sampled at each
//! scrape, the disk space and objects it holds.
use crate::store::ObjectStore;
use aifs_common::metrics::{serve, MetricsServer};
use aifs_common::Result;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::Arc;

/// Serve `reg` at `listen`, with the store's use sampled at each scrape.
pub fn start(listen: &str, mut reg: Registry, store: Arc<dyn ObjectStore>) -> Result<MetricsServer> {
    let capacity = Gauge::<i64>::default();
    let used = Gauge::<i64>::default();
    let objects = Gauge::<i64>::default();
    reg.register("capacity_bytes", "Size of the file system the objects live on", capacity.clone());
    reg.register("used_bytes", "Bytes used on that file system", used.clone());
    reg.register("objects", "Objects stored", objects.clone());
    serve(listen, reg, move || match store.usage() {
        Ok(u) => {
            capacity.set(u.capacity as i64);
            used.set(u.used as i64);
            objects.set(u.objects as i64);
        }
        Err(e) => tracing::warn!(error = %e, "disk usage not sampled for metrics"),
    })
}
