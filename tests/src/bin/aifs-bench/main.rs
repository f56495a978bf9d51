//! `aifs-bench`: the numbers behind `make bench`. Starts a real cluster
//! (processes, QUIC, FUSE) and runs each workload on the aifs mount and on
//! a plain directory of the local disk, `--runs` times, and prints one table
//! of medians with the aifs/local ratio. Progress goes to stderr, a line a
//! second; the table to stdout.
use aifs_tests::pattern;
use aifs_tests::proc::ProcCluster;
use anyhow::{Context, Result};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod ckpt;
mod clients;
mod failover;
mod meta;
mod osds;
mod plan;
mod plot;
mod rawquic;
mod scale;
mod util;
mod worker;

use util::{cpu_secs, drop_caches, median, size_label, Progress, MIB};

struct Args {
    size_mib: usize,
    files: usize,
    runs: usize,
    threads: usize,
    local: PathBuf,
    /// Size of each checkpoint of the pattern table (split over its ranks).
    ckpt_mib: usize,
    /// Only the checkpoint-pattern table.
    ckpt_only: bool,
    /// Only the raw-QUIC rows of that table (the transport's ceiling).
    raw_only: bool,
    /// Directories of the metadata-rates table.
    dirs: usize,
    /// Only the metadata-rates table.
    meta_only: bool,
    /// Only the MDS-leader-failover table.
    failover_only: bool,
    /// Only the many-client-sessions table (and its model).
    clients_only: bool,
    /// Only the scaling run (MDS processes in network namespaces).
    scale_only: bool,
    /// MDS processes every shard is replicated over.
    mds: usize,
    /// Where the checkpoint table's plots go.
    plots: PathBuf,
}

fn parse_args() -> Result<Args> {
    let mut a = Args { size_mib: 4096, files: 10_000, runs: 3, threads: 8, local: std::env::temp_dir(), ckpt_mib: 1024, ckpt_only: false, raw_only: false, dirs: 1000, meta_only: false, failover_only: false, clients_only: false, scale_only: false, mds: 1, plots: PathBuf::from("target/bench") };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().context("missing value");
        match k.as_str() {
            "--size-mib" => a.size_mib = v()?.parse()?,
            "--files" => a.files = v()?.parse()?,
            "--runs" => a.runs = v()?.parse()?,
            "--threads" => a.threads = v()?.parse()?,
            "--local-dir" => a.local = PathBuf::from(v()?),
            "--ckpt-mib" => a.ckpt_mib = v()?.parse()?,
            "--ckpt-only" => a.ckpt_only = true,
            "--raw-only" => a.raw_only = true,
            "--dirs" => a.dirs = v()?.parse()?,
            "--meta-only" => a.meta_only = true,
            "--failover-only" => a.failover_only = true,
            "--clients-only" => a.clients_only = true,
            "--scale-only" => a.scale_only = true,
            "--mds" => a.mds = v()?.parse()?,
            "--plots" => a.plots = PathBuf::from(v()?),
            "-h" | "--help" => {
                println!(
                    "aifs-bench [--size-mib 4096] [--files 10000] [--dirs 1000] [--runs 3] [--threads 8] [--local-dir DIR] [--ckpt-mib 1024] \
                     [--ckpt-only] [--raw-only] [--meta-only] [--failover-only] [--clients-only] [--scale-only] [--mds 1] [--plots target/bench]"
                );
                std::process::exit(0);
            }
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    Ok(a)
}

/// Sequential write in 1 MiB writes, fsync at the end: MB/s.
fn seq_write(path: &Path, size_mib: usize, label: &str) -> Result<f64> {
    let mut p = Progress::new(format!("{label}: write {size_mib} MiB"));
    let mut buf = vec![0u8; MIB];
    pattern::fill(1, 0, &mut buf);
    let t = Instant::now();
    let mut f = File::create(path)?;
    for i in 0..size_mib {
        buf[0..8].copy_from_slice(&(i as u64).to_le_bytes());
        f.write_all(&buf)?;
        p.tick(i as u64 + 1, size_mib as u64, "MB/s", 1e6 / MIB as f64);
    }
    f.sync_all()?;
    drop(f);
    Ok((size_mib * MIB) as f64 / 1e6 / t.elapsed().as_secs_f64())
}

fn seq_read(path: &Path, size_mib: usize, label: &str) -> Result<f64> {
    let mut p = Progress::new(format!("{label}: read {size_mib} MiB"));
    let mut buf = vec![0u8; MIB];
    let t = Instant::now();
    let mut f = File::open(path)?;
    let mut total = 0usize;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n;
        p.tick((total / MIB) as u64, size_mib as u64, "MB/s", 1e6 / MIB as f64);
    }
    anyhow::ensure!(total == size_mib * MIB, "read {total} bytes, wrote {}", size_mib * MIB);
    Ok(total as f64 / 1e6 / t.elapsed().as_secs_f64())
}

/// Run `op(i)` for i in 0..n over `threads` threads: ops/s, timed from
/// the start to the last thread's finish.
fn parallel(n: usize, threads: usize, label: String, op: impl Fn(usize) -> std::io::Result<()> + Sync) -> Result<f64> {
    let done = std::sync::atomic::AtomicUsize::new(0);
    let t = Instant::now();
    let err: std::sync::Mutex<Option<std::io::Error>> = std::sync::Mutex::new(None);
    let end: std::sync::Mutex<Duration> = std::sync::Mutex::new(Duration::ZERO);
    std::thread::scope(|s| {
        for k in 0..threads {
            let (op, done, err, end) = (&op, &done, &err, &end);
            s.spawn(move || {
                let mut i = k;
                while i < n {
                    if let Err(e) = op(i) {
                        if let Ok(mut g) = err.lock() {
                            g.get_or_insert(e);
                        }
                        return;
                    }
                    done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    i += threads;
                }
                if let Ok(mut e) = end.lock() {
                    *e = (*e).max(t.elapsed());
                }
            });
        }
        let mut p = Progress::new(label);
        loop {
            let d = done.load(std::sync::atomic::Ordering::Relaxed);
            p.tick(d as u64, n as u64, "ops/s", 1.0);
            if d >= n || err.lock().map(|g| g.is_some()).unwrap_or(true) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    if let Some(e) = err.lock().ok().and_then(|mut g| g.take()) {
        return Err(e.into());
    }
    let secs = end.lock().map(|e| e.as_secs_f64()).unwrap_or(0.0).max(1e-9);
    Ok(n as f64 / secs)
}

#[derive(Default)]
struct Results {
    rows: Vec<(String, String, Vec<f64>, Vec<f64>)>,
}

impl Results {
    fn add(&mut self, name: &str, unit: &str, local: f64, aifs: f64) {
        match self.rows.iter_mut().find(|r| r.0 == name) {
            Some(r) => {
                r.2.push(local);
                r.3.push(aifs);
            }
            None => self.rows.push((name.to_string(), unit.to_string(), vec![local], vec![aifs])),
        }
    }
}

/// What the aifs pass measures besides its rows.
#[derive(Default)]
struct Extra {
    /// ("write" | "read", CPU seconds per GiB of the aifs processes).
    cpu: Vec<(String, f64)>,
    /// `RawQuic::read` of the same file: (MB/s, CPU seconds per GiB).
    raw: Vec<(f64, f64)>,
}

/// One workload set on one directory: (name, unit, value) rows. On aifs
/// (`aifs`: the cluster and its processes) also the CPU used and the raw
/// QUIC read of the same file.
fn workloads(dir: &Path, a: &Args, label: &str, aifs: Option<(&rawquic::RawQuic, &[u32])>, x: &mut Extra) -> Result<Vec<(String, &'static str, f64)>> {
    let on_aifs = aifs.map(|a| a.1);
    let mut out = Vec::new();
    let file = dir.join("bench.seq");
    let c0 = on_aifs.map(cpu_secs);
    out.push((format!("seq write {}, 1 MiB writes + fsync", size_label(a.size_mib)), "MB/s", seq_write(&file, a.size_mib, label)?));
    if let (Some(p), Some(c0)) = (on_aifs, c0) {
        x.cpu.push(("write".into(), (cpu_secs(p) - c0) / (a.size_mib as f64 / 1024.0)));
    }
    if !drop_caches() {
        eprintln!("  (cannot drop caches: not root; read figures include the page cache)");
    }
    let c0 = on_aifs.map(cpu_secs);
    out.push((format!("seq read {} after drop_caches", size_label(a.size_mib)), "MB/s", seq_read(&file, a.size_mib, label)?));
    if let (Some(p), Some(c0)) = (on_aifs, c0) {
        x.cpu.push(("read".into(), (cpu_secs(p) - c0) / (a.size_mib as f64 / 1024.0)));
    }
    if let Some((raw, _)) = aifs {
        drop_caches();
        let m = raw.read(&file, (a.size_mib * MIB) as u64)?;
        x.raw.push((m.rate, m.cpu_per_gib));
    }
    fs::remove_file(&file)?;
    let md = dir.join("bench.meta");
    fs::create_dir_all(&md)?;
    let n = a.files;
    let name = |i: usize| md.join(format!("rank{i:06}.pt"));
    let th = a.threads;
    out.push((format!("create {n} files, {th} threads"), "ops/s", parallel(n, th, format!("{label}: create"), |i| File::create(name(i)).map(|_| ()))?));
    out.push((format!("stat {n} files, {th} threads"), "ops/s", parallel(n, th, format!("{label}: stat"), |i| fs::metadata(name(i)).map(|_| ()))?));
    out.push((format!("unlink {n} files, {th} threads"), "ops/s", parallel(n, th, format!("{label}: unlink"), |i| fs::remove_file(name(i)))?));
    // The same creates spread over one directory per thread: the kernel
    // serialises creates within a directory, not across directories.
    for k in 0..th {
        fs::create_dir_all(md.join(format!("d{k}")))?;
    }
    let named = |i: usize| md.join(format!("d{}/rank{i:06}.pt", i % th));
    out.push((format!("create {n} files, {th} threads, {th} dirs"), "ops/s", parallel(n, th, format!("{label}: create, dir per thread"), |i| File::create(named(i)).map(|_| ()))?));
    out.push((format!("unlink {n} files, {th} threads, {th} dirs"), "ops/s", parallel(n, th, format!("{label}: unlink, dir per thread"), |i| fs::remove_file(named(i)))?));
    for k in 0..th {
        fs::remove_dir(md.join(format!("d{k}")))?;
    }
    let n1 = n / 5;
    out.push((format!("create {n1} files, 1 thread"), "ops/s", parallel(n1, 1, format!("{label}: create 1 thread"), |i| File::create(name(i)).map(|_| ()))?));
    for i in 0..n1 {
        fs::remove_file(name(i))?;
    }
    fs::remove_dir(&md)?;
    Ok(out)
}

/// Median latency in microseconds of `n` calls of `f`.
fn latency_us(n: usize, mut f: impl FnMut(usize)) -> f64 {
    let mut v: Vec<f64> = (0..n)
        .map(|i| {
            let t = Instant::now();
            f(i);
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

/// Where a metadata operation's time goes: the MDS round trip over QUIC
/// alone, against the same operation through the FUSE mount.
fn latencies(cluster: &ProcCluster, mount: &Path, run: usize) -> Result<Vec<(String, f64, f64)>> {
    use aifs_common::certs::Role;
    use aifs_common::proto::mds::{MdsCall, MdsReply, MdsReq};
    use aifs_common::rpc::{self, Identity, RpcClient};
    let n = 500;
    let dir = mount.join(format!("lat{run}"));
    fs::create_dir(&dir)?;
    let ino = {
        use std::os::unix::fs::MetadataExt;
        aifs_common::InodeId(fs::metadata(&dir)?.ino())
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let id = Identity::load(&aifs_tests::tls(cluster.dir.path(), Role::Client))?;
    let ep = {
        let _g = rt.enter();
        rpc::client_endpoint(&id, &cluster.transport()?)?
    };
    let c = RpcClient::new(ep, cluster.mds_addr, Role::Mds);
    let lookup_rpc = latency_us(n, |i| {
        let _ = rt.block_on(c.call::<_, MdsReply>(&MdsCall::from(MdsReq::Lookup { parent: ino, name: format!("neg{i}") }), &[]));
    });
    let create_rpc = latency_us(n, |i| {
        let req = MdsReq::Create { parent: ino, name: format!("rpc{i}"), mode: 0o644, exclusive: true };
        let _ = rt.block_on(c.call::<_, MdsReply>(&MdsCall::from(req), &[]));
    });
    let lookup_fuse = latency_us(n, |i| {
        let _ = fs::metadata(dir.join(format!("fneg{i}")));
    });
    let create_fuse = latency_us(n, |i| {
        let _ = File::create(dir.join(format!("fuse{i}")));
    });
    for i in 0..n {
        let _ = fs::remove_file(dir.join(format!("rpc{i}")));
        let _ = fs::remove_file(dir.join(format!("fuse{i}")));
    }
    fs::remove_dir(&dir)?;
    Ok(vec![
        ("lookup of a missing name".into(), lookup_rpc, lookup_fuse),
        ("create (durable before the reply)".into(), create_rpc, create_fuse),
    ])
}

/// MB/s per run: [write, read], each [replicas 1, replicas 2].
type ByReplicas = [[Vec<f64>; 2]; 2];

/// Checkpoint throughput with 2 replicas against 1 (MB/s of each, write
/// and read, `runs` times), then one repair: a file of `mib` MiB with 2
/// replicas written while one OSD is dead, timed from the OSD's return until
/// no replica is degraded. Returns the MB/s of each run and (bytes
/// repaired, seconds).
fn replication(cluster: &mut ProcCluster, mount: &Path, mib: usize, runs: usize) -> Result<(ByReplicas, (u64, f64))> {
    let mut rows = ByReplicas::default();
    for r in [1, 2] {
        let dir = mount.join(format!("replicas{r}"));
        fs::create_dir_all(&dir)?;
        cluster.mdsctl(&["setstripe", &format!("/replicas{r}"), "--count", "3", "--replicas", &r.to_string(), "--size", "1M"])?;
        for run in 0..runs {
            let file = dir.join(format!("ckpt{run}"));
            let w = seq_write(&file, mib, &format!("replicas {r}"))?;
            drop_caches();
            let rd = seq_read(&file, mib, &format!("replicas {r}"))?;
            fs::remove_file(&file)?;
            rows[0][r - 1].push(w);
            rows[1][r - 1].push(rd);
        }
    }
    // Repair: the file's layout takes in all three OSDs, then one dies.
    let file = mount.join("replicas2/degraded");
    let mut f = File::create(&file)?;
    cluster.kill9_osd(1);
    eprintln!("  repair: osd.1 killed; writing {mib} MiB with 2 replicas");
    let mut buf = vec![0u8; MIB];
    for i in 0..mib {
        pattern::fill(7, (i * MIB) as u64, &mut buf);
        f.write_all(&buf)?;
    }
    f.sync_all()?;
    drop(f);
    let (stale, bytes0) = cluster.degraded()?;
    cluster.start_osd(1)?;
    let t = Instant::now();
    cluster.wait_ready(Duration::from_secs(30))?;
    let mut last = Instant::now();
    loop {
        let (left, bytes) = cluster.degraded()?;
        if left == 0 {
            let secs = t.elapsed().as_secs_f64();
            eprintln!("  repair: {stale} replicas, {} MiB in {secs:.1} s", (bytes - bytes0) >> 20);
            fs::remove_file(&file)?;
            return Ok((rows, (bytes - bytes0, secs)));
        }
        if last.elapsed() >= Duration::from_secs(1) {
            last = Instant::now();
            eprintln!("  repair: {left} of {stale} replicas left, {} MiB copied", (bytes - bytes0) >> 20);
        }
        anyhow::ensure!(t.elapsed() < Duration::from_secs(600), "repair not done after 600 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `kill -9` of the MDS and an immediate restart while a job makes
/// checkpoint steps (create, write 64 KiB, fsync, rename): the median step
/// before the kill, the longest step across it, and the time from the new
/// MDS's start to the first step finished after it.
fn mds_restart(cluster: &mut ProcCluster, mount: &Path, run: usize) -> Result<(f64, f64, f64)> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = mount.join(format!("restart{run}"));
    fs::create_dir_all(&dir)?;
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let job = {
        let (stop, dir) = (stop.clone(), dir.clone());
        std::thread::spawn(move || -> std::io::Result<Vec<(Instant, Instant)>> {
            let mut steps = Vec::new();
            let body = pattern::bytes(3, 0, 64 << 10);
            for i in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let t = Instant::now();
                let tmp = dir.join(format!(".s{i}.tmp"));
                let mut f = File::create(&tmp)?;
                f.write_all(&body)?;
                f.sync_all()?;
                fs::rename(&tmp, dir.join(format!("s{i}")))?;
                steps.push((t, Instant::now()));
            }
            Ok(steps)
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    let killed = Instant::now();
    cluster.kill9_mds();
    cluster.start_mds()?;
    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(3000));
    stop.store(true, Ordering::Relaxed);
    let steps = job.join().map_err(|_| anyhow::anyhow!("the job panicked"))??;
    let before: Vec<f64> = steps.iter().filter(|s| s.1 < killed).map(|s| (s.1 - s.0).as_secs_f64()).collect();
    let stall = steps.iter().filter(|s| s.1 >= killed).map(|s| (s.1 - s.0).as_secs_f64()).fold(0.0, f64::max);
    let back = steps.iter().find(|s| s.1 >= started).map(|s| (s.1 - started).as_secs_f64());
    let back = back.context("no step finished after the MDS restart")?;
    eprintln!("  MDS restart: {} steps, longest {stall:.2} s, first step done {back:.2} s after the start", steps.len());
    fs::remove_dir_all(&dir)?;
    Ok((median(&before), stall, back))
}

/// One pass of a cached-metadata workload: (ops/s, MDS requests).
fn md_pass(cluster: &ProcCluster, n: usize, label: String, op: impl Fn() -> Result<()>) -> Result<(f64, f64)> {
    let r0 = cluster.mds_requests()?;
    eprintln!("  {label}");
    let t = Instant::now();
    op()?;
    let rate = n as f64 / t.elapsed().as_secs_f64().max(1e-9);
    let r1 = cluster.mds_requests()?;
    Ok((rate, r1.saturating_sub(r0) as f64))
}

/// Stat of `n` files and `ls -l` of their directory, twice each, from a
/// mount that did not make them (another node): the second pass runs on
/// what the first cached under leases. Rows: (name, [pass1, pass2]
/// ops/s, [pass1, pass2] MDS requests).
fn cached_metadata(cluster: &ProcCluster, writer: &Path, n: usize, threads: usize, run: usize) -> Result<Vec<(String, [f64; 4])>> {
    let dir = format!("cached{run}");
    fs::create_dir(writer.join(&dir))?;
    parallel(n, threads, format!("cached metadata: create {n} files"), |i| {
        File::create(writer.join(format!("{dir}/rank{i:06}.pt"))).map(|_| ())
    })?;
    let mut rows = Vec::new();
    for (what, settings) in [("leases", ""), ("no lease cache", "lease_cache = false")] {
        let m = aifs_tests::proc::Mount::with_settings(cluster, settings)?;
        let d = m.p(&dir);
        let mut stat = [0.0; 4];
        let mut ls = [0.0; 4];
        for pass in 0..2 {
            let (rate, reqs) = md_pass(cluster, n, format!("{what}: stat pass {}", pass + 1), || {
                parallel(n, threads, format!("stat pass {}", pass + 1), |i| fs::metadata(d.join(format!("rank{i:06}.pt"))).map(|_| ()))?;
                Ok(())
            })?;
            stat[pass] = rate;
            stat[2 + pass] = reqs;
            let (rate, reqs) = md_pass(cluster, n, format!("{what}: ls -l pass {}", pass + 1), || {
                let mut seen = 0;
                for e in fs::read_dir(&d)? {
                    e?.metadata()?;
                    seen += 1;
                }
                anyhow::ensure!(seen == n, "listed {seen} of {n}");
                Ok(())
            })?;
            ls[pass] = rate;
            ls[2 + pass] = reqs;
        }
        rows.push((format!("stat {n} files, {threads} threads ({what})"), stat));
        rows.push((format!("ls -l of {n} entries ({what})"), ls));
    }
    for i in 0..n {
        fs::remove_file(writer.join(format!("{dir}/rank{i:06}.pt")))?;
    }
    fs::remove_dir(writer.join(&dir))?;
    Ok(rows)
}

fn main() -> Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("worker") {
        return worker::main(&argv[2..]);
    }
    let a = parse_args()?;
    if a.failover_only {
        return failover::table(a.runs);
    }
    if a.clients_only {
        return clients::table(a.runs);
    }
    if a.scale_only {
        return scale::table(a.runs);
    }
    // the other tables name the processes they measure one MDS at a time
    anyhow::ensure!(a.mds == 1 || a.meta_only, "--mds N goes with --meta-only");
    let mut cluster = match a.mds {
        1 => ProcCluster::start(3),
        n => ProcCluster::start_replicated(n, 3),
    }
    .context("starting a 3-OSD cluster")?;
    let mount = cluster.mount()?;
    let pids = cluster.pids_with(&mount);
    let local = tempfile::Builder::new().prefix("aifs-bench-local-").tempdir_in(&a.local)?;
    if a.meta_only {
        return metadata_rates(&cluster, &mount, local.path(), &a);
    }
    let raw = rawquic::RawQuic::new(&cluster, &pids)?;
    checkpoint_patterns(&cluster, &mount, &pids, &raw, local.path(), &a)?;
    if a.ckpt_only || a.raw_only {
        return Ok(());
    }
    metadata_rates(&cluster, &mount, local.path(), &a)?;
    workload_tables(&cluster, &mount, &pids, &raw, local.path(), &a)?;
    replication_table(&mut cluster, &mount, &a)?;
    restart_table(&mut cluster, &mount, &a)?;
    drop(raw);
    drop(mount);
    drop(cluster);
    replicated_metadata_rates(local.path(), &a)?;
    failover::table(a.runs)?;
    clients::table(a.runs)?;
    scale::table(a.runs)
}

/// The workloads on the local disk and on aifs, alternating, `runs`
/// times: their table, the sequential read against raw QUIC, metadata
/// latencies, and cached metadata from a second mount.
fn workload_tables(cluster: &ProcCluster, mount: &aifs_tests::proc::Mount, pids: &[u32], raw: &rawquic::RawQuic, local: &Path, a: &Args) -> Result<()> {
    eprintln!(
        "aifs-bench: {} run(s); aifs at {} (3 OSDs, stripe 1 MiB x 3), local disk at {}",
        a.runs,
        mount.path.display(),
        local.display()
    );
    let mut res = Results::default();
    let mut x = Extra::default();
    let mut lat: Vec<(String, Vec<f64>, Vec<f64>)> = Vec::new();
    let mut md: Vec<(String, Vec<[f64; 4]>)> = Vec::new();
    for r in 1..=a.runs {
        eprintln!("run {r}/{}", a.runs);
        for (name, v) in cached_metadata(cluster, &mount.path, a.files, a.threads, r)? {
            match md.iter_mut().find(|m| m.0 == name) {
                Some(m) => m.1.push(v),
                None => md.push((name, vec![v])),
            }
        }
        for (name, rpc, fuse) in latencies(cluster, &mount.path, r)? {
            match lat.iter_mut().find(|l| l.0 == name) {
                Some(l) => {
                    l.1.push(rpc);
                    l.2.push(fuse);
                }
                None => lat.push((name, vec![rpc], vec![fuse])),
            }
        }
        let l = workloads(local, &a, "local", None, &mut Extra::default())?;
        let f = workloads(&mount.path, &a, "aifs", Some((raw, pids)), &mut x)?;
        for ((name, unit, lv), (_, _, av)) in l.into_iter().zip(f) {
            res.add(&name, unit, lv, av);
        }
    }
    println!();
    println!("| workload | unit | local disk | aifs | aifs/local |");
    println!("|---|---|---:|---:|---:|");
    for (name, unit, l, f) in &res.rows {
        let (ml, mf) = (median(l), median(f));
        println!("| {name} | {unit} | {ml:.0} | {mf:.0} | {:.2} |", if ml > 0.0 { mf / ml } else { 0.0 });
    }
    let cw: Vec<f64> = x.cpu.iter().filter(|c| c.0 == "write").map(|c| c.1).collect();
    let cr: Vec<f64> = x.cpu.iter().filter(|c| c.0 == "read").map(|c| c.1).collect();
    println!();
    println!(
        "median of {} runs each. CPU of all aifs processes (MDS, 3 OSDs, client): {:.2} s per GiB written, {:.2} s per GiB read.",
        a.runs,
        median(&cw),
        median(&cr)
    );
    let read_row = res.rows.iter().find(|r| r.0.starts_with("seq read"));
    if let (Some((name, _, l, f)), false) = (read_row, x.raw.is_empty()) {
        let (ml, mf) = (median(l), median(f));
        let rq = median(&x.raw.iter().map(|r| r.0).collect::<Vec<_>>());
        let rc = median(&x.raw.iter().map(|r| r.1).collect::<Vec<_>>());
        println!();
        println!("| {name}, MB/s | local disk | raw QUIC from the OSDs | aifs | raw QUIC/local | aifs/raw QUIC |");
        println!("|---|---:|---:|---:|---:|---:|");
        println!("| median of {} | {ml:.0} | {rq:.0} | {mf:.0} | {:.2} | {:.2} |", a.runs, rq / ml.max(1e-9), mf / rq.max(1e-9));
        println!();
        println!(
            "raw QUIC: this process reads the file's objects from the OSDs, 1 MiB requests, 16 in flight, no FUSE, no crc check; \
             CPU of the aifs processes and the reader: {rc:.2} s per GiB."
        );
    }
    print_metadata_tables(&lat, &md);
    Ok(())
}

/// The metadata latencies (over QUIC and through FUSE) and the cached
/// metadata passes, each a median over the runs.
fn print_metadata_tables(lat: &[(String, Vec<f64>, Vec<f64>)], md: &[(String, Vec<[f64; 4]>)]) {
    println!();
    println!("| metadata latency (median, µs) | MDS over QUIC | through FUSE | FUSE/QUIC |");
    println!("|---|---:|---:|---:|");
    for (name, rpc, fuse) in lat {
        let (r, f) = (median(rpc), median(fuse));
        println!("| {name} | {r:.0} | {f:.0} | {:.2} |", if r > 0.0 { f / r } else { 0.0 });
    }
    println!();
    println!("| cached metadata, from a second mount | pass 1 ops/s | pass 2 ops/s | pass 2/pass 1 | MDS requests, pass 1 | pass 2 |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, runs) in md {
        let col = |k: usize| median(&runs.iter().map(|v| v[k]).collect::<Vec<_>>());
        let (p1, p2) = (col(0), col(1));
        println!("| {name} | {p1:.0} | {p2:.0} | {:.2} | {:.0} | {:.0} |", if p1 > 0.0 { p2 / p1 } else { 0.0 }, col(2), col(3));
    }
}

/// A checkpoint written and read with 1 and with 2 replicas, and the
/// repair of the replicas a dead OSD missed.
fn replication_table(cluster: &mut ProcCluster, mount: &aifs_tests::proc::Mount, a: &Args) -> Result<()> {
    let mib = a.size_mib.min(1024);
    let (rows, (bytes, secs)) = replication(cluster, &mount.path, mib, a.runs)?;
    println!();
    println!("| checkpoint of {}, stripe 1 MiB x 3, MB/s | replicas 1 | replicas 2 | 2/1 |", size_label(mib));
    println!("|---|---:|---:|---:|");
    for (what, [one, two]) in ["write, 1 MiB writes + fsync", "read after drop_caches"].iter().zip(&rows) {
        let (m1, m2) = (median(one), median(two));
        println!("| {what} | {m1:.0} | {m2:.0} | {:.2} |", if m1 > 0.0 { m2 / m1 } else { 0.0 });
    }
    println!();
    println!(
        "repair: {} MiB of replicas that missed a {} write while osd.1 was dead, rewritten in {secs:.1} s from its return \
         ({:.0} MB/s; limit repair_mb_per_s = 200); 1 GiB at that rate: {:.1} s.",
        bytes >> 20,
        size_label(mib),
        bytes as f64 / 1e6 / secs.max(1e-9),
        secs * (1u64 << 30) as f64 / bytes.max(1) as f64
    );
    Ok(())
}

/// The MDS killed and started again during checkpoint steps, `runs` times.
fn restart_table(cluster: &mut ProcCluster, mount: &aifs_tests::proc::Mount, a: &Args) -> Result<()> {
    let mut restarts = Vec::new();
    for r in 1..=a.runs {
        restarts.push(mds_restart(cluster, &mount.path, r)?);
    }
    let (step, stall, back) = (
        median(&restarts.iter().map(|r| r.0).collect::<Vec<_>>()),
        median(&restarts.iter().map(|r| r.1).collect::<Vec<_>>()),
        median(&restarts.iter().map(|r| r.2).collect::<Vec<_>>()),
    );
    println!();
    println!("| MDS `kill -9` and restart during checkpoint steps (create, 64 KiB, fsync, rename) | one step before | longest step across the restart | longest/before | first step done after the MDS start |");
    println!("|---|---:|---:|---:|---:|");
    println!("| median of {} | {:.1} ms | {:.2} s | {:.0} | {:.2} s |", a.runs, step * 1e3, stall, stall / step.max(1e-9), back);
    Ok(())
}

/// The metadata-rates table (meta.rs), local disk and aifs alternating.
fn metadata_rates(cluster: &ProcCluster, mount: &aifs_tests::proc::Mount, local: &Path, a: &Args) -> Result<()> {
    let mut table = meta::Table::default();
    for run in 1..=a.runs {
        eprintln!("metadata rates, run {run}/{}", a.runs);
        let l = meta::pass(&meta::Side::Local(local), a.files, a.dirs, run)?;
        let f = meta::pass(&meta::Side::Aifs(&mount.path, cluster), a.files, a.dirs, run)?;
        table.add(l, f);
    }
    table.print(a.runs, cluster.mds_addrs.len());
    Ok(())
}

/// The metadata-rates table again over three MDS processes, each commit
/// replicated to a second member before it is answered; the local disk
/// measured beside it again, in the same run.
fn replicated_metadata_rates(local: &Path, a: &Args) -> Result<()> {
    let cluster = ProcCluster::start_replicated(3, 3).context("starting a cluster of 3 MDS processes")?;
    let mount = cluster.mount()?;
    metadata_rates(&cluster, &mount, local, a)
}

/// The checkpoint-pattern table: every pattern on the local disk and on
/// aifs with 1 and 2 replicas, `runs` times, medians with ratios; then the
/// CPU each aifs process spent per GiB, and the random-read latencies.
fn checkpoint_patterns(cluster: &ProcCluster, mount: &aifs_tests::proc::Mount, pids: &[u32], raw: &rawquic::RawQuic, local: &Path, a: &Args) -> Result<()> {
    let names = ["MDS", "osd.1", "osd.2", "osd.3", "client"];
    let procs: Vec<(String, u32)> = names.iter().zip(pids).map(|(n, p)| (n.to_string(), *p)).collect();
    let mut targets = vec![ckpt::Target { label: "local".into(), dir: local.to_path_buf(), procs: vec![], osds: None }];
    for r in [1, 2] {
        let dir = mount.path.join(format!("ckpt-r{r}"));
        fs::create_dir_all(&dir)?;
        cluster.mdsctl(&["setstripe", &format!("/ckpt-r{r}"), "--count", "3", "--replicas", &r.to_string(), "--size", "1M"])?;
        let osds = Some(osds::OsdCounters::new(cluster)?);
        targets.push(ckpt::Target { label: format!("aifs, {r} replica(s)"), dir, procs: procs.clone(), osds });
    }
    let mut table = ckpt::Table::default();
    for run in 1..=a.runs {
        eprintln!("checkpoint patterns, run {run}/{}", a.runs);
        for (i, t) in targets.iter().enumerate().filter(|_| !a.raw_only) {
            table.add(i, targets.len(), ckpt::run(t, a.ckpt_mib, run)?);
        }
        table.add_raw(ckpt::raw_run(raw, &targets[1].dir, a.ckpt_mib, run)?);
    }
    table.print(&names, a.runs, &size_label(a.ckpt_mib));
    if !a.raw_only {
        let labels: Vec<String> = targets.iter().map(|t| t.label.clone()).collect();
        for p in plot::write(&table, &labels, &a.plots, &size_label(a.ckpt_mib))? {
            println!("plot: {}", p.display());
        }
    }
    Ok(())
}
