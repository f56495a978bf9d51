//! The checkpoint patterns of the frameworks, each row run on the local
//! disk and on aifs (1 and 2 replicas) in the same run: ranks saving a
//! file each, ranks writing one shared file, loads in file order, shuffled,
//! from several ranks and across ranks' files, mmap loads, a re-load on the
//! same mount, and 4 KiB random reads. Every rank is a process of its own
//! (worker.rs); the parent starts them, lets them go at once and times
//! them together, with the CPU time each aifs process spent meanwhile.
use crate::plan::Plan;
use crate::rawquic::{RawMeasure, RawQuic};
use crate::util::{cpu_secs, drop_caches, median, sync, MIB};
use crate::worker::{Load, Op};
use anyhow::{bail, Context, Result};
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Where one column of the table runs.
pub struct Target {
    pub label: String,
    pub dir: PathBuf,
    /// The aifs processes: (name, pid); none for the local disk.
    pub procs: Vec<(String, u32)>,
    /// The OSDs' served-bytes counters; none for the local disk.
    pub osds: Option<crate::osds::OsdCounters>,
}

/// One row's figures on one target in one run.
#[derive(Clone, Default)]
pub struct Measure {
    /// MB/s, or IOPS for random reads.
    pub rate: f64,
    /// Random reads: median and 99th percentile latency, µs.
    pub p50: f64,
    pub p99: f64,
    /// Random reads: (percentile, µs) at each of `worker::LATENCY_PCTS`.
    pub pcts: Vec<(f64, f64)>,
    /// MB/s the ranks moved, each tenth of a second: (seconds, MB/s).
    pub trace: Vec<(f64, f64)>,
    /// CPU seconds per GiB moved, per process of `Target::procs`.
    pub cpu: Vec<f64>,
    /// Bytes the OSDs read while the row ran (re-load: none wanted).
    pub osd_read: Option<u64>,
}

/// Random-read rows carry IOPS and latencies instead of MB/s.
pub fn is_random(row: &str) -> bool {
    row.starts_with("4 KiB")
}

/// Workers started and waiting for the word.
struct Ranks(Vec<(Child, BufReader<std::process::ChildStdout>)>);

impl Ranks {
    fn start(ops: &[Op]) -> Result<Ranks> {
        let exe = std::env::current_exe()?;
        let mut v = Vec::new();
        for op in ops {
            let mut c = Command::new(&exe).arg("worker").args(op.args()).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
            let out = BufReader::new(c.stdout.take().context("worker stdout")?);
            v.push((c, out));
        }
        let mut r = Ranks(v);
        for line in r.lines()? {
            if line != "ready" {
                bail!("worker said {line:?} instead of ready");
            }
        }
        Ok(r)
    }

    fn lines(&mut self) -> Result<Vec<String>> {
        let mut v = Vec::new();
        for (c, out) in &mut self.0 {
            let mut line = String::new();
            out.read_line(&mut line)?;
            if line.is_empty() {
                let st = c.wait()?;
                bail!("a worker exited with {st} (see its stderr above)");
            }
            v.push(line.trim().to_string());
        }
        Ok(v)
    }

    /// Let every worker go; their `done` lines (without the word), and
    /// the MB/s they moved each `TRACE_EVERY` (`Measure::trace`).
    fn go(mut self, label: &str) -> Result<(Vec<Vec<u64>>, Vec<(f64, f64)>)> {
        for (c, _) in &mut self.0 {
            c.stdin.as_mut().context("worker stdin")?.write_all(b"go\n")?;
        }
        let pids: Vec<u32> = self.0.iter().map(|(c, _)| c.id()).collect();
        let stop = AtomicBool::new(false);
        let (lines, trace) = std::thread::scope(|s| {
            let tracer = s.spawn(|| {
                let t = Instant::now();
                let mut last = Instant::now();
                let mut trace = Vec::new();
                let mut moved = io_bytes(&pids);
                let mut at = 0.0;
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(TRACE_EVERY);
                    let (now, bytes) = (t.elapsed().as_secs_f64(), io_bytes(&pids));
                    // A worker that ended takes its count with it: no point.
                    if bytes >= moved {
                        trace.push((now, (bytes - moved) as f64 / 1e6 / (now - at)));
                    }
                    (moved, at) = (bytes, now);
                    if last.elapsed() >= Duration::from_secs(1) {
                        last = Instant::now();
                        eprintln!("  {label}: {:.0} s", now);
                    }
                }
                trace
            });
            let r = self.lines();
            stop.store(true, Ordering::Relaxed);
            (r, tracer.join().unwrap_or_default())
        });
        let lines = lines?;
        for (c, _) in &mut self.0 {
            c.wait()?;
        }
        let said = lines
            .iter()
            .map(|l| match l.split_whitespace().collect::<Vec<_>>().split_first() {
                Some((&"done", rest)) => rest.iter().map(|v| v.parse::<u64>().map_err(Into::into)).collect(),
                _ => bail!("worker said {l:?} instead of done"),
            })
            .collect::<Result<_>>()?;
        Ok((said, trace))
    }
}

impl Drop for Ranks {
    fn drop(&mut self) {
        for (c, _) in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Target {
    fn cpu(&self) -> Vec<f64> {
        self.procs.iter().map(|p| cpu_secs(&[p.1])).collect()
    }

    /// Run `ops` as ranks at once (`then` after they finish, inside the
    /// timing): what it cost, and the workers' reports.
    fn time(&self, label: &str, ops: &[Op], then: impl FnOnce() -> Result<()>) -> Result<(Timed, Vec<Vec<u64>>)> {
        let ranks = Ranks::start(ops)?;
        let osd0 = self.osds.as_ref().map(|o| o.read_bytes()).transpose()?;
        let c0 = self.cpu();
        let t = Instant::now();
        let (said, trace) = ranks.go(&format!("{}: {label}", self.label))?;
        then()?;
        let secs = t.elapsed().as_secs_f64().max(1e-9);
        let cpu = self.cpu().iter().zip(c0).map(|(a, b)| a - b).collect();
        let osd_read = match (&self.osds, osd0) {
            (Some(o), Some(r0)) => Some(o.read_bytes()?.saturating_sub(r0)),
            _ => None,
        };
        Ok((Timed { label: format!("{}: {label}", self.label), secs, cpu, osd_read, trace }, said))
    }
}

/// One timed step: wall seconds, CPU seconds per process, OSD bytes read.
struct Timed {
    label: String,
    secs: f64,
    cpu: Vec<f64>,
    osd_read: Option<u64>,
    trace: Vec<(f64, f64)>,
}

impl Timed {
    /// The figures with `bytes` moved.
    fn measure(self, bytes: u64) -> Measure {
        let gib = (bytes as f64 / (1u64 << 30) as f64).max(1e-9);
        let rate = bytes as f64 / 1e6 / self.secs;
        eprintln!("  {}: {rate:.0} MB/s", self.label);
        Measure { rate, cpu: self.cpu.iter().map(|c| c / gib).collect(), osd_read: self.osd_read, trace: self.trace, ..Default::default() }
    }
}

/// How often `Ranks::go` samples what the ranks moved.
const TRACE_EVERY: Duration = Duration::from_millis(100);

/// Bytes `pids` passed through read and write calls so far (`rchar` and
/// `wchar` of /proc/PID/io; pages an mmap load touches are not counted).
fn io_bytes(pids: &[u32]) -> u64 {
    let one = |pid: &u32| -> u64 {
        let text = fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with("rchar:") || l.starts_with("wchar:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum()
    };
    pids.iter().map(one).sum()
}

/// Bytes the workers said they read.
fn read_by(said: &[Vec<u64>]) -> u64 {
    said.iter().map(|d| d.first().copied().unwrap_or(0)).sum()
}

fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Write the checkpoint's metadata file as the frameworks do: to a
/// temporary name, fsync, rename into place.
fn commit_metadata(dir: &Path) -> Result<()> {
    let tmp = dir.join(".metadata.tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(&vec![7u8; 16 << 10])?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(".metadata"))?;
    Ok(())
}

/// Every pattern once on `t`, with checkpoints of `mib` MiB (split over
/// the ranks): (row, measure) in table order.
pub fn run(t: &Target, mib: usize, run: usize) -> Result<Vec<(String, Measure)>> {
    let bytes = (mib * MIB) as u64;
    let root = t.dir.join(format!("ckpt{run}"));
    let mut rows = Vec::new();
    let rank_file = |n: usize, i: usize| root.join(format!("s{n}/rank{i}.distcp"));
    let seed = |n: usize, i: usize| (100 * n + i) as u64;
    for n in [1, 2, 4] {
        let dir = root.join(format!("s{n}"));
        fs::create_dir_all(&dir)?;
        let ops: Vec<Op> = (0..n).map(|i| Op::Save { path: path(&rank_file(n, i)), seed: seed(n, i), bytes: bytes / n as u64, base: 0, fresh: true }).collect();
        let moved = (0..n).map(|i| Plan::new(seed(n, i), bytes / n as u64).size).sum();
        let (cost, _) = t.time(&format!("save, {n} rank(s)"), &ops, || commit_metadata(&dir))?;
        rows.push((format!("save: {n} rank(s), a file each, fsync, metadata file renamed in"), cost.measure(moved)));
    }
    for n in [2, 4] {
        let file = root.join(format!("shared{n}.distcp"));
        File::create(&file)?;
        let plans: Vec<Plan> = (0..n).map(|i| Plan::new(seed(n, i) + 50, bytes / n as u64)).collect();
        let slot = plans.iter().map(|p| p.size).max().unwrap_or(0).next_multiple_of(MIB as u64);
        let ops: Vec<Op> = (0..n)
            .map(|i| Op::Save { path: path(&file), seed: seed(n, i) + 50, bytes: bytes / n as u64, base: i as u64 * slot, fresh: false })
            .collect();
        let moved = plans.iter().map(|p| p.size).sum();
        let (cost, _) = t.time(&format!("N-to-1, {n} ranks"), &ops, || Ok(()))?;
        rows.push((format!("N-to-1: {n} ranks write disjoint ranges of one file, fsync"), cost.measure(moved)));
        fs::remove_file(&file)?;
    }
    let one = || (vec![path(&rank_file(1, 0))], vec![seed(1, 0)]);
    let loads: [(&str, Load, usize); 7] = [
        ("load: 1 process, sequential 4 MiB reads", Load::Sequential, 1),
        ("load: 1 process, tensor ranges in file order", Load::Ranges, 1),
        ("load: 1 process, tensor ranges shuffled", Load::Shuffled, 1),
        ("load: 4 ranks, each its file's tensors shuffled", Load::Shuffled, 4),
        ("load: 1 process re-sharding, ranges across 4 ranks' files", Load::Ranges, 0),
        ("mmap load: every page, in file order", Load::Mmap, 1),
        ("mmap load: every page, tensors shuffled", Load::MmapShuffled, 1),
    ];
    for (name, how, ranks) in loads {
        let ops: Vec<Op> = match ranks {
            1 => {
                let (paths, seeds) = one();
                vec![Op::Load { paths, seeds, bytes, how }]
            }
            0 => vec![Op::Load { paths: (0..4).map(|i| path(&rank_file(4, i))).collect(), seeds: (0..4).map(|i| seed(4, i)).collect(), bytes: bytes / 4, how }],
            n => (0..n).map(|i| Op::Load { paths: vec![path(&rank_file(n, i))], seeds: vec![seed(n, i)], bytes: bytes / n as u64, how }).collect(),
        };
        drop_caches();
        let (cost, said) = t.time(name, &ops, || Ok(()))?;
        rows.push((name.to_string(), cost.measure(read_by(&said))));
    }
    // A restarted job loads the same file again on the same mount.
    drop_caches();
    let (paths, seeds) = one();
    t.time("first load", &[Op::Load { paths: paths.clone(), seeds: seeds.clone(), bytes, how: Load::Ranges }], || Ok(()))?;
    let (cost, said) = t.time("re-load", &[Op::Load { paths, seeds, bytes, how: Load::Ranges }], || Ok(()))?;
    rows.push(("re-load: the same file again on the same mount (page cache)".to_string(), cost.measure(read_by(&said))));
    let size = Plan::new(seed(1, 0), bytes).size;
    for (qd, ops) in [(1usize, 4000usize), (16, 16000)] {
        drop_caches();
        let op = Op::Random { path: path(&rank_file(1, 0)), size, qd, ops };
        let (cost, said) = t.time(&format!("4 KiB random reads, QD{qd}"), &[op], || Ok(()))?;
        let r = said.first().context("no report from the random reader")?;
        let pcts: Vec<(f64, f64)> = crate::worker::LATENCY_PCTS.iter().zip(r.iter().skip(1)).map(|(q, v)| (*q, *v as f64)).collect();
        let at = |q: f64| pcts.iter().find(|p| p.0 == q).map_or(0, |p| p.1 as u64);
        let (n, p50, p99) = (r.first().copied().unwrap_or(0), at(50.0), at(99.0));
        let mut m = cost.measure(n * 4096);
        m.rate *= 1e6 / 4096.0;
        m.p50 = p50 as f64;
        m.p99 = p99 as f64;
        m.pcts = pcts;
        rows.push((format!("4 KiB random reads, QD{qd}"), m));
    }
    fs::remove_dir_all(&root)?;
    settle();
    Ok(rows)
}

/// The raw-QUIC rows of one run, on the 1-replica directory `dir`: a
/// checkpoint's bytes written and read back straight from the OSDs, and
/// the random reads, as (raw row, measure); `raw_row` names the raw row an
/// aifs row compares with.
pub fn raw_run(raw: &RawQuic, dir: &Path, mib: usize, run: usize) -> Result<Vec<(String, RawMeasure)>> {
    let bytes = (mib * MIB) as u64;
    let file = dir.join(format!("raw{run}.bin"));
    // The size goes to the MDS first, so that the delete frees the objects.
    File::create(&file)?.set_len(bytes)?;
    let mut rows = vec![("write".to_string(), raw.write(&file, bytes)?)];
    drop_caches();
    rows.push(("read".to_string(), raw.read(&file, bytes)?));
    for (qd, ops) in [(1usize, 4000usize), (16, 16000)] {
        // With and without a capability to check, alternately: the
        // difference is what checking one costs each request.
        for capped in [true, false] {
            drop_caches();
            let m = raw.random(&file, bytes, qd, ops, capped)?;
            let name = format!("4 KiB random reads, QD{qd}{}", if capped { "" } else { NO_CAP });
            eprintln!("  raw QUIC: {name}: {:.0} IOPS, p50 {:.0} µs, p99 {:.0} µs", m.rate, m.p50, m.p99);
            rows.push((name, m));
        }
    }
    fs::remove_file(&file)?;
    settle();
    Ok(rows)
}

/// Names the raw random-read rows made without a capability to check.
const NO_CAP: &str = ", no capability";

/// The raw-QUIC row an aifs row is held against: writes against the raw
/// write, loads against the raw read, random reads against raw random
/// reads; none for the re-load, which should not reach the OSDs at all.
pub fn raw_row(row: &str) -> Option<&str> {
    if row.starts_with("save") || row.starts_with("N-to-1") {
        Some("write")
    } else if row.starts_with("load") || row.starts_with("mmap load") {
        Some("read")
    } else if is_random(row) {
        Some(row)
    } else {
        None
    }
}

/// Let the deletes of a run's files finish before the next target's rows:
/// aifs frees objects in the background after the unlink answers, and no
/// row should pay for another's cleanup. (Saves on aifs still run slower
/// after its OSDs deleted objects, also after waiting 40 s with no discard
/// pending: not explained yet; README, "Checkpoint patterns".)
fn settle() {
    sync();
    std::thread::sleep(Duration::from_secs(5));
    sync();
}

/// Rows across runs and targets: name -> per target -> per run; the raw
/// QUIC rows: name -> per run.
#[derive(Default)]
pub struct Table {
    pub rows: Vec<(String, Vec<Vec<Measure>>)>,
    pub raw: Vec<(String, Vec<RawMeasure>)>,
}

impl Table {
    pub fn add(&mut self, target: usize, targets: usize, rows: Vec<(String, Measure)>) {
        for (name, m) in rows {
            let i = match self.rows.iter().position(|r| r.0 == name) {
                Some(i) => i,
                None => {
                    self.rows.push((name, vec![Vec::new(); targets]));
                    self.rows.len() - 1
                }
            };
            self.rows[i].1[target].push(m);
        }
    }

    pub fn add_raw(&mut self, rows: Vec<(String, RawMeasure)>) {
        for (name, m) in rows {
            match self.raw.iter_mut().find(|r| r.0 == name) {
                Some(r) => r.1.push(m),
                None => self.raw.push((name, vec![m])),
            }
        }
    }

    /// The median of one figure of the raw row `row` compares with.
    fn raw_med(&self, row: &str, f: impl Fn(&RawMeasure) -> f64) -> Option<f64> {
        let want = raw_row(row)?;
        let runs = &self.raw.iter().find(|r| r.0 == want)?.1;
        Some(median(&runs.iter().map(f).collect::<Vec<_>>()))
    }

    /// The tables, medians of `runs` runs: rates with ratios against the
    /// local disk and against raw QUIC, random-read latencies, and the CPU
    /// each process (`names`, as in `Target::procs`) spent per GiB.
    pub fn print(&self, names: &[&str], runs: usize, size: &str) {
        let ratio = |a: f64, b: f64| if b > 0.0 { format!("{:.2}", a / b) } else { "-".into() };
        println!();
        println!("| checkpoint pattern, {size} per checkpoint, stripe 1 MiB x 3 | unit | local disk | aifs, 1 replica | 1 replica/local | aifs, 2 replicas | 2 replicas/local | raw QUIC | 1 replica/raw QUIC |");
        println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
        for (name, t) in &self.rows {
            let rate: Vec<f64> = t.iter().map(|runs| med(runs, |m| m.rate)).collect();
            let unit = if is_random(name) { "IOPS" } else { "MB/s" };
            let raw = self.raw_med(name, |m| m.rate);
            let raw_col = raw.map_or("-".into(), |r| format!("{r:.0}"));
            println!(
                "| {name} | {unit} | {:.0} | {:.0} | {} | {:.0} | {} | {raw_col} | {} |",
                rate[0],
                rate[1],
                ratio(rate[1], rate[0]),
                rate[2],
                ratio(rate[2], rate[0]),
                ratio(rate[1], raw.unwrap_or(0.0))
            );
        }
        println!();
        println!("| 4 KiB random reads, µs | local p50 | local p99 | aifs 1 replica p50 | p99 | aifs 2 replicas p50 | p99 | raw QUIC p50 | p99 |");
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for (name, t) in self.rows.iter().filter(|r| is_random(&r.0)) {
            let mut l: Vec<f64> = t.iter().flat_map(|runs| [med(runs, |m| m.p50), med(runs, |m| m.p99)]).collect();
            l.extend([self.raw_med(name, |m| m.p50).unwrap_or(0.0), self.raw_med(name, |m| m.p99).unwrap_or(0.0)]);
            let l: Vec<String> = l.iter().map(|v| format!("{v:.0}")).collect();
            println!("| {name} | {} |", l.join(" | "));
        }
        println!();
        println!("| CPU seconds per GiB moved | {} | all aifs, 1 replica | all aifs, 2 replicas | raw QUIC, with the bench process |", names.join(" | "));
        println!("|---|{}---:|---:|---:|", "---:|".repeat(names.len()));
        for (name, t) in self.rows.iter().filter(|r| !is_random(&r.0)) {
            let per: Vec<String> = (0..names.len()).map(|k| format!("{:.2}", med(&t[1], |m| m.cpu.get(k).copied().unwrap_or(0.0)))).collect();
            let all = |i: usize| med(&t[i], |m| m.cpu.iter().sum());
            let raw = self.raw_med(name, |m| m.cpu_per_gib).map_or("-".into(), |c| format!("{c:.2}"));
            println!("| {name} | {} | {:.2} | {:.2} | {raw} |", per.join(" | "), all(1), all(2));
        }
        println!();
        print!("median of {runs} runs. Per-process CPU columns are for 1 replica. ");
        println!(
            "raw QUIC: the bench process writes (then commits) and reads a checkpoint's bytes straight from the OSDs of the 1-replica directory, \
             a stripe unit per request, {} in flight, no FUSE and no caches; random reads are ReadRange requests.",
            crate::rawquic::IN_FLIGHT
        );
        self.print_cap_cost();
        if let Some((_, t)) = self.rows.iter().find(|r| r.0.starts_with("re-load")) {
            let osd = |i: usize| med(&t[i], |m| m.osd_read.unwrap_or(0) as f64);
            println!("re-load: bytes the OSDs read during the second load: {:.0} (1 replica), {:.0} (2 replicas).", osd(1), osd(2));
        }
    }
}

impl Table {
    /// What checking a capability costs an OSD request: raw QUIC random
    /// reads with one (client certificate) against the same without
    /// (admin certificate), run alternately.
    fn print_cap_cost(&self) {
        let raw = |name: &str| self.raw.iter().find(|r| r.0 == name).map(|r| &r.1);
        let rows: Vec<_> = self.raw.iter().filter_map(|(name, with)| Some((name, with, raw(&format!("{name}{NO_CAP}"))?))).collect();
        if rows.is_empty() {
            return;
        }
        println!();
        println!("| capability check, raw QUIC | IOPS with | IOPS without | with/without | p50 µs with | without | p99 µs with | without |");
        println!("|---|---:|---:|---:|---:|---:|---:|---:|");
        for (name, with, without) in rows {
            let m = |v: &Vec<RawMeasure>, f: fn(&RawMeasure) -> f64| median(&v.iter().map(f).collect::<Vec<_>>());
            let (a, b) = (m(with, |x| x.rate), m(without, |x| x.rate));
            println!(
                "| {name} | {a:.0} | {b:.0} | {:.3} | {:.0} | {:.0} | {:.0} | {:.0} |",
                if b > 0.0 { a / b } else { 0.0 },
                m(with, |x| x.p50),
                m(without, |x| x.p50),
                m(with, |x| x.p99),
                m(without, |x| x.p99)
            );
        }
    }
}

/// Median of one figure of a target's runs.
pub fn med(runs: &[Measure], f: impl Fn(&Measure) -> f64) -> f64 {
    median(&runs.iter().map(f).collect::<Vec<_>>())
}
