//! The client's Prometheus metrics (`metrics_listen`): each FUSE
//! operation's count, latency and errors, the bytes readers and writers
//! moved, and what write-back shipped to the OSDs and read-ahead fetched
//! before it was asked for. The same counts go to the MDS in each session
//! heartbeat (`mdsctl top`).
//!
//! The FUSE glue runs each callback's work in `timed`, which records its
//! latency at its end; an error it answers with is counted by
//! `count_error`, which finds the operation in the task-local scope.
//! Until the metrics are served (no `metrics_listen`), only the count of
//! all operations is kept, for the heartbeat.
use aifs_common::metrics::{error_kind, histograms, serve, Histograms, Label, MetricsServer};
use aifs_common::proto::mds::ClientIo;
use aifs_common::{Error, Result};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub struct ClientMetrics {
    ops: Family<Label, Counter>,
    latency: Histograms,
    errors: Family<[(&'static str, &'static str); 2], Counter>,
    /// Every FUSE operation, whatever its kind (the heartbeat's count).
    all_ops: Counter,
    pub read_bytes: Counter,
    pub written_bytes: Counter,
    pub writeback_bytes: Counter,
    pub readahead_bytes: Counter,
    /// Until `serve` takes it.
    registry: Mutex<Option<Registry>>,
    /// `serve` was called: operations are timed and errors counted.
    served: AtomicBool,
}

tokio::task_local! {
    static OP: (&'static str, Arc<ClientMetrics>);
}

impl ClientMetrics {
    pub fn new() -> Arc<ClientMetrics> {
        let mut reg = Registry::with_prefix("aifs_client");
        let m = ClientMetrics {
            ops: Family::default(),
            latency: histograms(),
            errors: Family::default(),
            all_ops: Counter::default(),
            read_bytes: Counter::default(),
            written_bytes: Counter::default(),
            writeback_bytes: Counter::default(),
            readahead_bytes: Counter::default(),
            registry: Mutex::new(None),
            served: AtomicBool::new(false),
        };
        reg.register("fuse_requests", "FUSE operations answered, by operation", m.ops.clone());
        reg.register("fuse_request_duration_seconds", "Time from a FUSE operation's arrival to its answer", m.latency.clone());
        reg.register("fuse_errors", "FUSE operations answered with an error, by operation and kind", m.errors.clone());
        reg.register("read_bytes", "Bytes returned to readers", m.read_bytes.clone());
        reg.register("written_bytes", "Bytes taken from writers", m.written_bytes.clone());
        reg.register("writeback_bytes", "File bytes write-back shipped to the OSDs and saw land (once, whatever the replicas)", m.writeback_bytes.clone());
        reg.register("readahead_bytes", "File bytes asked of the OSDs ahead of sequential readers", m.readahead_bytes.clone());
        if let Ok(mut r) = m.registry.lock() {
            *r = Some(reg);
        }
        Arc::new(m)
    }

    /// Serve the metrics at `listen` (once).
    pub fn serve(&self, listen: &str) -> Result<MetricsServer> {
        let reg = self.registry.lock().ok().and_then(|mut r| r.take());
        let reg = reg.ok_or_else(|| Error::InvalidArgument("the client's metrics are served already".into()))?;
        let server = serve(listen, reg, || {})?;
        self.served.store(true, Ordering::Release);
        Ok(server)
    }

    /// Run `work`, FUSE operation `op`, timing it.
    pub fn timed<F: Future>(self: &Arc<Self>, op: &'static str, work: F) -> impl Future<Output = F::Output> {
        let m = self.clone();
        OP.scope((op, self.clone()), async move {
            if !m.served.load(Ordering::Acquire) {
                let out = work.await;
                m.all_ops.inc();
                return out;
            }
            let start = Instant::now();
            let out = work.await;
            let label = [("op", op)];
            m.ops.get_or_create(&label).inc();
            m.all_ops.inc();
            m.latency.get_or_create(&label).observe(start.elapsed().as_secs_f64());
            out
        })
    }

    /// What the client did, for the session heartbeat.
    pub fn io(&self) -> ClientIo {
        ClientIo { ops: self.all_ops.get(), read_bytes: self.read_bytes.get(), written_bytes: self.written_bytes.get() }
    }
}

/// The FUSE operation running now answers with `e`.
pub fn count_error(e: &Error) {
    let _ = OP.try_with(|(op, m)| {
        if m.served.load(Ordering::Acquire) {
            m.errors.get_or_create(&[("op", op), ("kind", error_kind(e))]).inc();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn operations_are_timed_and_their_errors_counted() {
        let m = ClientMetrics::new();
        // Not served: counted for the heartbeat only.
        m.timed("lookup", async { count_error(&Error::NotFound) }).await;
        assert_eq!(m.io().ops, 1);
        assert_eq!(m.ops.get_or_create(&[("op", "lookup")]).get(), 0);
        let _server = m.serve("127.0.0.1:0").unwrap();
        assert!(m.serve("127.0.0.1:0").is_err());
        m.timed("lookup", async { count_error(&Error::NotFound) }).await;
        m.timed("read", async {}).await;
        // Outside an operation: not counted, no panic.
        count_error(&Error::NotFound);
        assert_eq!(m.io().ops, 3);
        assert_eq!(m.errors.get_or_create(&[("op", "lookup"), ("kind", "not_found")]).get(), 1);
        assert_eq!(m.ops.get_or_create(&[("op", "read")]).get(), 1);
    }
}
