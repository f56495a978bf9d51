//! What an operator watches: every daemon's and the mount's Prometheus
//! endpoint, scraped before and after real work through a FUSE mount, and
//! `mdsctl top` and `status --watch` against a running cluster.
//! Needs root and /dev/fuse; `make test` enables the `fuse_tests` feature.
#![cfg(feature = "fuse_tests")]

use aifs_tests::proc::{Mount, ProcCluster};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

/// One scrape: each sample's value by its name with labels, as written
/// (`aifs_mds_requests_total{op="create"}`).
fn scrape(port: u16) -> HashMap<String, f64> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("metrics at port {port}: {e}"));
    write!(s, "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(text.lines().next().is_some_and(|l| l.ends_with(" 200 OK")), "{text}");
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    assert!(body.trim_end().ends_with("# EOF"), "not OpenMetrics text: {body}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' ').and_then(|(k, v)| Some((k.to_string(), v.parse().ok()?))))
        .collect()
}

/// The sum of the samples of `name` whose labels hold every one of `with`.
fn sum(m: &HashMap<String, f64>, name: &str, with: &[&str]) -> f64 {
    m.iter()
        .filter(|(k, _)| k.as_str() == name || k.starts_with(&format!("{name}{{")))
        .filter(|(k, _)| with.iter().all(|w| k.contains(w)))
        .map(|(_, v)| v)
        .sum()
}

const MIB: usize = 1 << 20;

/// The counters of the MDS, of each OSD and of the mount move with the
/// work done through the mount, and the sampled states are those of the
/// cluster: its sessions, leases, OSDs up.
#[test]
fn every_endpoint_answers_and_moves_with_the_work() {
    let (cl, base) = ProcCluster::start_with_metrics(3).unwrap();
    let client_port = aifs_tests::free_port();
    let a = Mount::with_settings(&cl, &format!("metrics_listen = \"127.0.0.1:{client_port}\"")).unwrap();
    let b = Mount::new(&cl).unwrap();
    let osds = |m: &dyn Fn(u16) -> f64| (1..=3).map(|i| m(base + i)).sum::<f64>();
    let (mds0, client0) = (scrape(base), scrape(client_port));
    let osd_in0 = osds(&|p| sum(&scrape(p), "aifs_osd_received_bytes_total", &[]));
    let osd_out0 = osds(&|p| sum(&scrape(p), "aifs_osd_sent_bytes_total", &[]));

    // b writes what a reads: a has none of it cached.
    let data: Vec<u8> = (0..16 * MIB).map(|i| (i * 7 % 251) as u8).collect();
    let f = std::fs::File::create(b.p("from_b")).unwrap();
    f.write_all_at(&data, 0).unwrap();
    f.sync_all().unwrap();
    drop(f);
    assert_eq!(std::fs::read(a.p("from_b")).unwrap(), data);
    let f = std::fs::File::create(a.p("from_a")).unwrap();
    f.write_all_at(&data, 0).unwrap();
    f.sync_all().unwrap();
    drop(f);
    assert!(std::fs::metadata(a.p("missing")).is_err());

    let (mds, client) = (scrape(base), scrape(client_port));
    let grew = |now: &HashMap<String, f64>, was: &HashMap<String, f64>, name: &str, with: &[&str]| sum(now, name, with) - sum(was, name, with);
    assert!(grew(&mds, &mds0, "aifs_mds_requests_total", &[]) >= 4.0, "MDS requests did not move");
    assert!(grew(&mds, &mds0, "aifs_mds_request_duration_seconds_count", &[]) >= 4.0);
    assert_eq!(sum(&mds, "aifs_mds_leader", &[]), 1.0);
    assert_eq!(sum(&mds, "aifs_mds_sessions", &[]), 2.0);
    assert!(sum(&mds, "aifs_mds_leases", &[]) >= 1.0);
    assert_eq!(sum(&mds, "aifs_mds_osds_up", &[]), 3.0);
    assert_eq!(sum(&mds, "aifs_mds_requests_in_flight", &[]), 0.0);
    // Both files' data went in, a's read came out.
    let osd_in = osds(&|p| sum(&scrape(p), "aifs_osd_received_bytes_total", &[]));
    let osd_out = osds(&|p| sum(&scrape(p), "aifs_osd_sent_bytes_total", &[]));
    assert!(osd_in - osd_in0 >= (32 * MIB) as f64, "OSDs received {}", osd_in - osd_in0);
    assert!(osd_out - osd_out0 >= (16 * MIB) as f64, "OSDs sent {}", osd_out - osd_out0);
    assert!(osds(&|p| sum(&scrape(p), "aifs_osd_objects", &[])) >= 2.0);
    let at_least = |name: &str, with: &[&str], n: f64| {
        let d = grew(&client, &client0, name, with);
        assert!(d >= n, "{name}{with:?} grew by {d}, less than {n}");
    };
    at_least("aifs_client_written_bytes_total", &[], (16 * MIB) as f64);
    at_least("aifs_client_writeback_bytes_total", &[], (16 * MIB) as f64);
    at_least("aifs_client_read_bytes_total", &[], (16 * MIB) as f64);
    at_least("aifs_client_readahead_bytes_total", &[], 1.0);
    at_least("aifs_client_fuse_requests_total", &["op=\"write\""], 16.0);
    at_least("aifs_client_fuse_request_duration_seconds_count", &["op=\"read\""], 1.0);
    at_least("aifs_client_fuse_errors_total", &["op=\"lookup\"", "kind=\"not_found\""], 1.0);
    drop((a, b));
}

/// `mdsctl top --once --json` shows a session writing at its rate, the
/// OSDs taking it, and the slowest requests; `status --watch` refreshes.
#[test]
fn top_shows_who_loads_the_cluster() {
    let cl = ProcCluster::start(3).unwrap();
    let m = Mount::new(&cl).unwrap();
    let _idle = Mount::new(&cl).unwrap();
    // Rewrites 8 MiB in place for a while: rates need two heartbeats of
    // the session (2.5 s apart here) with writes between them.
    let path = m.p("hot");
    let writer = std::thread::spawn(move || {
        let f = std::fs::File::create(&path).unwrap();
        let chunk = vec![7u8; MIB];
        let t = Instant::now();
        let mut i = 0u64;
        while t.elapsed() < Duration::from_secs(8) {
            f.write_all_at(&chunk, (i % 8) * MIB as u64).unwrap();
            f.sync_data().unwrap();
            i += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    std::thread::sleep(Duration::from_secs(6));
    let out = cl.mdsctl(&["--json", "top", "--once"]).unwrap();
    writer.join().unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let sessions = v["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2, "{out}");
    // Busiest first.
    let busy = &sessions[0];
    assert!(busy["written_bytes_per_s"].as_u64().unwrap() > 0, "{out}");
    assert!(busy["ops_per_s"].as_u64().unwrap() > 0, "{out}");
    assert_eq!(sessions[1]["written_bytes_per_s"].as_u64(), Some(0), "{out}");
    let osd_writes: u64 = v["osds"].as_array().unwrap().iter().map(|o| o["write_bytes_per_s"].as_u64().unwrap()).sum();
    assert!(osd_writes > 0, "{out}");
    assert!(!v["slowest"].as_array().unwrap().is_empty(), "{out}");
    // The text view names the session.
    let text = cl.mdsctl(&["top", "--once"]).unwrap();
    assert!(text.contains(busy["name"].as_str().unwrap()) && text.contains("osd.3"), "{text}");

    let mut watch = std::process::Command::new(aifs_tests::bin_dir().join("mdsctl"))
        .arg("--config")
        .arg(cl.path("admin.toml"))
        .args(["status", "--watch", "--interval", "0.3"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let _ = watch.kill();
    let out = watch.wait_with_output().unwrap();
    let screens = String::from_utf8_lossy(&out.stdout).matches("cluster: mds").count();
    assert!(screens >= 3, "status --watch printed {screens} screens");
}
