//! `mdsctl top`: a live view of who loads the cluster, as `ceph fs top`
//! gives. Per client session: file system operations, bytes read and
//! written (what its mount reports in each heartbeat, as a rate between
//! its last two) and MDS requests (counted by the MDS, between two looks
//! here); per OSD: requests and bytes served; and the slowest MDS
//! requests of the last minute. Refreshed every `--interval` seconds;
//! `--once` prints one sample (taken over a second), `--json` as JSON.
//!
//! `watch` also serves `mdsctl status --watch`.
use aifs_common::proto::mds::{ClusterStatus, OsdState};
use aifs_common::SessionId;
use aifs_mds::admin::{human, table, Admin};
use std::collections::HashMap;
use std::future::Future;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct TopArgs {
    /// Print one sample and exit.
    #[arg(long)]
    once: bool,
    /// Seconds between refreshes.
    #[arg(long, default_value_t = 2.0)]
    interval: f64,
}

/// One sample: rates between two looks at the cluster's status.
#[derive(serde::Serialize)]
struct Sample {
    /// Seconds between the two looks.
    span_s: f64,
    mds_requests_per_s: u64,
    sessions: Vec<SessionLoad>,
    osds: Vec<OsdLoad>,
    slowest: Vec<Slow>,
}

#[derive(serde::Serialize)]
struct SessionLoad {
    id: SessionId,
    name: String,
    addr: String,
    ops_per_s: u64,
    read_bytes_per_s: u64,
    written_bytes_per_s: u64,
    mds_requests_per_s: u64,
    leases: u64,
}

#[derive(serde::Serialize)]
struct OsdLoad {
    id: u32,
    up: bool,
    reads_per_s: u64,
    read_bytes_per_s: u64,
    writes_per_s: u64,
    write_bytes_per_s: u64,
    used: u64,
    capacity: u64,
}

#[derive(serde::Serialize)]
struct Slow {
    op: String,
    session: Option<SessionId>,
    session_name: Option<String>,
    micros: u64,
    ago_ms: u64,
}

/// `later - earlier` a second over `span` seconds.
fn rate(later: u64, earlier: u64, span: f64) -> u64 {
    aifs_mds::cluster::load::per_sec(later, earlier, Duration::from_secs_f64(span.max(0.0)))
}

/// `--interval`'s seconds, refused unless positive.
pub fn interval(secs: f64) -> anyhow::Result<Duration> {
    match secs > 0.0 && secs.is_finite() {
        true => Ok(Duration::from_secs_f64(secs)),
        false => anyhow::bail!("--interval must be a positive number of seconds"),
    }
}

impl Sample {
    fn between(before: &ClusterStatus, now: &ClusterStatus, span: f64) -> Sample {
        let requests_before: HashMap<SessionId, u64> = before.sessions.iter().map(|s| (s.id, s.requests)).collect();
        let mut sessions: Vec<SessionLoad> = now
            .sessions
            .iter()
            .map(|s| SessionLoad {
                id: s.id,
                name: s.name.clone(),
                addr: s.addr.clone(),
                ops_per_s: s.rate.ops,
                read_bytes_per_s: s.rate.read_bytes,
                written_bytes_per_s: s.rate.written_bytes,
                // Counted by the MDS as it serves them: between these two
                // looks when the session was there at both.
                mds_requests_per_s: match requests_before.get(&s.id) {
                    Some(r) => rate(s.requests, *r, span),
                    None => s.rate.mds_requests,
                },
                leases: s.leases,
            })
            .collect();
        sessions.sort_by_key(|s| {
            std::cmp::Reverse((s.read_bytes_per_s.saturating_add(s.written_bytes_per_s), s.ops_per_s.saturating_add(s.mds_requests_per_s)))
        });
        let osds = now
            .osds
            .iter()
            .map(|o| OsdLoad {
                id: o.id.0,
                up: o.state == OsdState::Up,
                reads_per_s: o.rate.reads,
                read_bytes_per_s: o.rate.read_bytes,
                writes_per_s: o.rate.writes,
                write_bytes_per_s: o.rate.write_bytes,
                used: o.used,
                capacity: o.capacity,
            })
            .collect();
        let names: HashMap<SessionId, &str> = now.sessions.iter().map(|s| (s.id, s.name.as_str())).collect();
        let slowest = now
            .slowest
            .iter()
            .map(|k| Slow {
                op: k.op.clone(),
                session: k.session,
                session_name: k.session.and_then(|id| names.get(&id).map(|n| n.to_string())),
                micros: k.micros,
                ago_ms: k.ago_ms,
            })
            .collect();
        Sample { span_s: span, mds_requests_per_s: rate(now.mds_requests, before.mds_requests, span), sessions, osds, slowest }
    }

    fn text(&self) -> String {
        let per_s = |b: u64| format!("{}/s", human(b));
        let mut out = format!("aifs top: {} MDS requests/s   {} sessions   {} OSDs\n\n", self.mds_requests_per_s, self.sessions.len(), self.osds.len());
        let rows: Vec<Vec<String>> = self
            .sessions
            .iter()
            .map(|s| {
                vec![
                    s.name.clone(),
                    s.addr.clone(),
                    s.ops_per_s.to_string(),
                    per_s(s.read_bytes_per_s),
                    per_s(s.written_bytes_per_s),
                    s.mds_requests_per_s.to_string(),
                    s.leases.to_string(),
                ]
            })
            .collect();
        out += &table(&["SESSION", "ADDRESS", "OPS/S", "READ", "WRITE", "MDS REQ/S", "LEASES"], &rows);
        let rows: Vec<Vec<String>> = self
            .osds
            .iter()
            .map(|o| {
                vec![
                    format!("osd.{}", o.id),
                    if o.up { "up".into() } else { "down".into() },
                    o.reads_per_s.to_string(),
                    per_s(o.read_bytes_per_s),
                    o.writes_per_s.to_string(),
                    per_s(o.write_bytes_per_s),
                    aifs_mds::admin::use_pct(o.used, o.capacity),
                ]
            })
            .collect();
        out += "\n";
        out += &table(&["OSD", "STATE", "READS/S", "READ", "WRITES/S", "WRITE", "USE%"], &rows);
        let rows: Vec<Vec<String>> = self
            .slowest
            .iter()
            .map(|k| {
                vec![
                    k.op.clone(),
                    k.session_name.clone().unwrap_or_else(|| "-".into()),
                    format!("{:.1} ms", k.micros as f64 / 1000.0),
                    format!("{}s ago", k.ago_ms / 1000),
                ]
            })
            .collect();
        out += "\nslowest MDS requests of the last minute\n";
        out += &table(&["REQUEST", "SESSION", "TOOK", "WHEN"], &rows);
        out
    }
}

pub async fn top(admin: &Admin, args: &TopArgs, json: bool) -> anyhow::Result<()> {
    let every = interval(args.interval)?;
    let mut before = admin.status().await?;
    let mut at = Instant::now();
    let first = Duration::from_secs_f64(if args.once { 1.0 } else { args.interval.min(1.0) });
    tokio::time::sleep(first).await;
    loop {
        let now = admin.status().await?;
        let span = at.elapsed().as_secs_f64();
        at = Instant::now();
        let sample = Sample::between(&before, &now, span);
        match (json, args.once) {
            (true, true) => println!("{}", serde_json::to_string_pretty(&sample)?),
            (true, false) => println!("{}", serde_json::to_string(&sample)?),
            (false, _) => show(&sample.text(), !args.once, false),
        }
        if args.once {
            return Ok(());
        }
        before = now;
        tokio::time::sleep(every).await;
    }
}

/// Print `text` as the new screen: on a terminal in place of the last
/// (`refresh`), else after it with the time; `json` lines as they are.
fn show(text: &str, refresh: bool, json: bool) {
    let mut out = std::io::stdout().lock();
    let _ = match (refresh && !json, out.is_terminal()) {
        (true, true) => write!(out, "\x1b[H\x1b[2J{text}"),
        (true, false) => write!(out, "--- {}\n{text}\n", aifs_common::time::now_ns() / 1_000_000_000),
        (false, _) => write!(out, "{text}"),
    };
    let _ = out.flush();
}

/// Print what `look` renders every `interval` (`json`: a line each), until
/// interrupted.
pub async fn watch<F, Fut>(interval: Duration, json: bool, look: F) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: Future<Output = anyhow::Result<String>>,
{
    loop {
        show(&look().await?, true, json);
        tokio::time::sleep(interval).await;
    }
}
