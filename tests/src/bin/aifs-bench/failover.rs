//! The MDS leader's death, as a checkpointing job sees it: a cluster of
//! three MDS processes (every shard a Raft group over them), four ranks
//! each writing their files of a checkpoint (create, 4 MiB in 1 MiB
//! writes, fsync), and the leader killed with `kill -9` a third of the
//! way through. Each run also writes the same checkpoint with no fault,
//! the baseline, and once more with the lead handed to another member
//! (`mdsctl shard move`) a third of the way through, as an operator
//! empties a host; the killed member is started again between runs, and
//! is handed the lead back (it was the one wanted).
use crate::util::{median, MIB};
use aifs_tests::pattern;
use aifs_tests::proc::ProcCluster;
use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

const RANKS: usize = 4;
const FILES: usize = 24;
const FILE_MIB: usize = 4;

/// One checkpoint: its wall time and each file's time (create to fsync).
fn checkpoint(root: &Path, tag: &str, kill: Option<&mut dyn FnMut()>) -> Result<(f64, Vec<f64>)> {
    let t = Instant::now();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let times = std::thread::scope(|s| -> Result<Vec<f64>> {
        let ranks: Vec<_> = (0..RANKS)
            .map(|r| {
                let dir = root.join(format!("{tag}/rank{r}"));
                let done = &done;
                s.spawn(move || -> Result<Vec<f64>> {
                    std::fs::create_dir_all(&dir)?;
                    let mut buf = vec![0u8; MIB];
                    let mut times = Vec::new();
                    for f in 0..FILES {
                        let t = Instant::now();
                        let mut out = std::fs::File::create(dir.join(format!("part{f}")))?;
                        for i in 0..FILE_MIB {
                            pattern::fill((r * FILES + f) as u64, (i * MIB) as u64, &mut buf);
                            out.write_all(&buf)?;
                        }
                        out.sync_all()?;
                        times.push(t.elapsed().as_secs_f64());
                        done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Ok(times)
                })
            })
            .collect();
        if let Some(kill) = kill {
            while done.load(std::sync::atomic::Ordering::Relaxed) < RANKS * FILES / 3 {
                std::thread::sleep(Duration::from_millis(5));
            }
            kill();
        }
        let mut all = Vec::new();
        for r in ranks {
            all.extend(r.join().map_err(|_| anyhow::anyhow!("a rank panicked"))??);
        }
        Ok(all)
    })?;
    Ok((t.elapsed().as_secs_f64(), times))
}

/// Rows of the failover table, medians of `runs`.
pub fn table(runs: usize) -> Result<()> {
    let mut cl = ProcCluster::start_replicated(3, 3).context("starting a cluster of 3 MDS processes")?;
    let m = cl.mount()?;
    let (mut base_job, mut kill_job, mut base_worst, mut kill_worst, mut base_file) = (vec![], vec![], vec![], vec![], vec![]);
    let (mut move_job, mut move_worst) = (vec![], vec![]);
    for run in 1..=runs {
        eprintln!("failover run {run}/{runs}: a checkpoint with no fault");
        let (job, times) = checkpoint(&m.path, &format!("calm{run}"), None)?;
        base_job.push(job);
        base_worst.push(times.iter().cloned().fold(0.0, f64::max));
        base_file.push(median(&times));
        let from = cl.mds_leader(Duration::from_secs(30))?;
        let to = from % 3 + 1;
        eprintln!("failover run {run}/{runs}: the same checkpoint, the lead moved from MDS {from} to MDS {to} a third of the way in");
        let mut moved = Ok(String::new());
        let mut hand_over = || moved = cl.mdsctl(&["shard", "move", "0", "--to", &to.to_string()]);
        let (job, times) = checkpoint(&m.path, &format!("move{run}"), Some(&mut hand_over))?;
        moved.context("mdsctl shard move")?;
        move_job.push(job);
        move_worst.push(times.iter().cloned().fold(0.0, f64::max));
        let leader = cl.mds_leader(Duration::from_secs(30))?;
        eprintln!("failover run {run}/{runs}: the same checkpoint, MDS {leader} (the leader) killed a third of the way in");
        let mut kill = || cl.kill9_mds_member(leader);
        let (job, times) = checkpoint(&m.path, &format!("fault{run}"), Some(&mut kill))?;
        kill_job.push(job);
        kill_worst.push(times.iter().cloned().fold(0.0, f64::max));
        cl.start_mds_member(leader)?;
        // Back, the member killed (the one wanted) is handed the lead
        // again before the next run.
        let t = Instant::now();
        while cl.mds_leader(Duration::from_secs(30))? != leader {
            anyhow::ensure!(t.elapsed() < Duration::from_secs(60), "MDS {leader}, back, was not handed the lead again");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let ckpt = format!("{RANKS} ranks x {FILES} files of {FILE_MIB} MiB, fsync each");
    println!();
    println!("| MDS leader killed or lead moved, 3 MDS processes ({ckpt}) | no fault | leader killed | lead moved | killed/no fault | moved/no fault |");
    println!("|---|---:|---:|---:|---:|---:|");
    let row = |what: &str, a: &[f64], b: &[f64], c: &[f64]| {
        let (ma, mb, mc) = (median(a), median(b), median(c));
        let ratio = |x: f64| if ma > 0.0 { x / ma } else { 0.0 };
        println!("| {what} | {ma:.2} | {mb:.2} | {mc:.2} | {:.2} | {:.2} |", ratio(mb), ratio(mc));
    };
    row("checkpoint, s", &base_job, &kill_job, &move_job);
    row("slowest file, s", &base_worst, &kill_worst, &move_worst);
    println!();
    println!(
        "median of {runs} runs; stall (slowest file less the median file with no fault, {:.2} s): {:.2} s with the leader killed, {:.2} s with the lead moved",
        median(&base_file),
        median(&kill_worst) - median(&base_file),
        median(&move_worst) - median(&base_file)
    );
    Ok(())
}
