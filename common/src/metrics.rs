//! Prometheus metrics: what every daemon and the client count, and the
//! HTTP endpoint that serves them (`metrics_listen` in each config).
//!
//! The registry and its text exposition are prometheus-client's; the
//! endpoint is a tiny_http server on a thread of its own, so a scrape
//! costs the daemon's runtime nothing while it waits. Figures that are
//! states rather than counts (sessions held, replicas left to repair) are
//! sampled at each scrape by the daemon's `refresh`.
use crate::error::{Error, Result};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// One label: `[("op", "create")]`.
pub type Label = [(&'static str, &'static str); 1];
/// A histogram per label value.
pub type Histograms = Family<Label, Histogram, fn() -> Histogram>;

/// Latency buckets from 25 us to about 13 s, doubling.
pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(25e-6, 2.0, 20))
}

pub fn histograms() -> Histograms {
    Family::new_with_constructor(latency_histogram as fn() -> Histogram)
}

/// What a server counts of the requests it serves (common/src/rpc/server.rs).
pub struct RpcMetrics {
    requests: Family<Label, Counter>,
    latency: Histograms,
    errors: Family<[(&'static str, &'static str); 2], Counter>,
    in_flight: Gauge,
    bytes_in: Counter,
    bytes_out: Counter,
}

impl RpcMetrics {
    /// Registered in `reg` as `requests_total`, `request_duration_seconds`,
    /// `request_errors_total`, `requests_in_flight`, `received_bytes_total`
    /// and `sent_bytes_total`.
    pub fn register(reg: &mut Registry) -> Arc<RpcMetrics> {
        let m = RpcMetrics {
            requests: Family::default(),
            latency: histograms(),
            errors: Family::default(),
            in_flight: Gauge::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
        };
        reg.register("requests", "Requests served, by operation", m.requests.clone());
        reg.register("request_duration_seconds", "Time from a request's arrival to its answer, by operation", m.latency.clone());
        reg.register("request_errors", "Requests answered with an error, by operation and kind", m.errors.clone());
        reg.register("requests_in_flight", "Requests being served now", m.in_flight.clone());
        reg.register("received_bytes", "Payload bytes received with requests", m.bytes_in.clone());
        reg.register("sent_bytes", "Payload bytes sent with answers", m.bytes_out.clone());
        Arc::new(m)
    }

    /// A request of operation `op` with `bytes` of payload arrived; it
    /// counts as in flight until the returned call is done or dropped.
    pub fn start(&self, op: &'static str, bytes: u64) -> RpcCall<'_> {
        self.in_flight.inc();
        self.bytes_in.inc_by(bytes);
        RpcCall { m: self, op, start: Instant::now() }
    }

    /// A request frame that could not be read.
    pub fn bad_frame(&self) {
        self.errors.get_or_create(&[("op", "unreadable"), ("kind", "protocol")]).inc();
    }
}

pub struct RpcCall<'a> {
    m: &'a RpcMetrics,
    op: &'static str,
    start: Instant,
}

impl RpcCall<'_> {
    /// Answered, with `error` if it failed, and `bytes` of payload.
    pub fn done(self, error: Option<&'static str>, bytes: u64) {
        let op = [("op", self.op)];
        self.m.requests.get_or_create(&op).inc();
        self.m.latency.get_or_create(&op).observe(self.start.elapsed().as_secs_f64());
        if let Some(kind) = error {
            self.m.errors.get_or_create(&[("op", self.op), ("kind", kind)]).inc();
        }
        self.m.bytes_out.inc_by(bytes);
    }
}

impl Drop for RpcCall<'_> {
    fn drop(&mut self) {
        self.m.in_flight.dec();
    }
}

/// The HTTP endpoint; stops when dropped.
pub struct MetricsServer {
    server: Arc<tiny_http::Server>,
    pub addr: SocketAddr,
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.server.unblock();
    }
}

/// Serve `reg` at `listen` (`GET /metrics`), calling `refresh` before
/// each scrape to sample what is a state rather than a count.
pub fn serve(listen: &str, reg: Registry, refresh: impl Fn() + Send + 'static) -> Result<MetricsServer> {
    let server = tiny_http::Server::http(listen).map_err(|e| Error::Io(format!("metrics endpoint {listen}: {e}")))?;
    let addr = server.server_addr().to_ip().ok_or_else(|| Error::Io(format!("metrics endpoint {listen}: not an IP address")))?;
    let server = Arc::new(server);
    let serving = server.clone();
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for req in serving.incoming_requests() {
                answer(req, &reg, &refresh);
            }
        })
        .map_err(|e| Error::Io(format!("metrics thread: {e}")))?;
    tracing::info!(%addr, "metrics served at http://{addr}/metrics");
    Ok(MetricsServer { server, addr })
}

fn answer(req: tiny_http::Request, reg: &Registry, refresh: &impl Fn()) {
    let path = req.url().split('?').next().unwrap_or("");
    if *req.method() != tiny_http::Method::Get || !(path == "/metrics" || path == "/") {
        let _ = req.respond(tiny_http::Response::from_string("aifs serves its metrics at /metrics\n").with_status_code(404));
        return;
    }
    refresh();
    let mut body = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut body, reg) {
        tracing::warn!(error = %e, "metrics not encoded");
        let _ = req.respond(tiny_http::Response::from_string("metrics not encoded\n").with_status_code(500));
        return;
    }
    let kind = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    let header = tiny_http::Header::from_bytes("Content-Type", kind).ok();
    let mut resp = tiny_http::Response::from_string(body);
    if let Some(h) = header {
        resp = resp.with_header(h);
    }
    let _ = req.respond(resp);
}

/// The kind of an error as it came over the wire, as a label.
pub fn wire_error_kind(w: &crate::error::WireError) -> &'static str {
    error_kind(&Error::from_wire(w.code, ""))
}

/// The kind of an error, as a label: its variant's name.
pub fn error_kind(e: &Error) -> &'static str {
    match e {
        Error::NotFound => "not_found",
        Error::Exists => "exists",
        Error::NotDir => "not_dir",
        Error::IsDir => "is_dir",
        Error::NotEmpty => "not_empty",
        Error::InvalidArgument(_) => "invalid_argument",
        Error::NameTooLong => "name_too_long",
        Error::NoXattr => "no_xattr",
        Error::Range => "range",
        Error::PermissionDenied => "permission_denied",
        Error::NotPermitted(_) => "not_permitted",
        Error::TooManyLinks => "too_many_links",
        Error::FileTooBig => "file_too_big",
        Error::NotSupported(_) => "not_supported",
        Error::TooBig => "too_big",
        Error::WouldBlock(_) => "would_block",
        Error::TooManyOpen(_) => "too_many_open",
        Error::NoLocks(_) => "no_locks",
        Error::NoSpace(_) => "no_space",
        Error::Checksum(_) => "checksum",
        Error::Io(_) => "io",
        Error::Unavailable(_) => "unavailable",
        Error::Transport(_) => "transport",
        Error::Protocol(_) => "protocol",
        Error::Stale => "stale",
        Error::Unauthorized(_) => "unauthorized",
        Error::NotLeader(_) => "not_leader",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    /// A request counted, timed and its error named; the figures come out
    /// in the text format, sampled states refreshed at each scrape.
    #[test]
    fn requests_are_counted_and_served() {
        let mut reg = Registry::with_prefix("aifs_test");
        let rpc = RpcMetrics::register(&mut reg);
        let sampled = Gauge::<i64>::default();
        reg.register("sampled", "A state sampled at each scrape", sampled.clone());
        let source = Arc::new(std::sync::atomic::AtomicI64::new(7));
        let src = source.clone();
        let srv = serve("127.0.0.1:0", reg, move || {
            sampled.set(src.load(std::sync::atomic::Ordering::Relaxed));
        })
        .unwrap();
        let call = rpc.start("create", 10);
        call.done(Some(error_kind(&Error::Exists)), 3);
        rpc.start("lookup", 0).done(None, 0);
        let body = get(srv.addr, "/metrics");
        assert!(body.lines().next().is_some_and(|l| l.ends_with(" 200 OK")), "{body}");
        assert!(body.contains("aifs_test_requests_total{op=\"create\"} 1"), "{body}");
        assert!(body.contains("aifs_test_request_errors_total{op=\"create\",kind=\"exists\"} 1"), "{body}");
        assert!(body.contains("aifs_test_request_duration_seconds_count{op=\"lookup\"} 1"), "{body}");
        assert!(body.contains("aifs_test_received_bytes_total 10"), "{body}");
        assert!(body.contains("aifs_test_sent_bytes_total 3"), "{body}");
        assert!(body.contains("aifs_test_requests_in_flight 0"), "{body}");
        assert!(body.contains("aifs_test_sampled 7"), "{body}");
        source.store(9, std::sync::atomic::Ordering::Relaxed);
        assert!(get(srv.addr, "/metrics").contains("aifs_test_sampled 9"));
        assert!(get(srv.addr, "/other").lines().next().is_some_and(|l| l.contains(" 404 ")));
    }
}
