//! One rank of a checkpoint pattern, as its own process
//! (`aifs-bench worker OP ...`): it prepares, prints `ready`, waits for a
//! line on stdin, does its part and prints `done` with what it measured.
//! The parent starts every rank, lets them go at once and times them
//! together (ckpt.rs).
use crate::plan::{shuffle, stamp, Plan, MAX_TENSOR};
use aifs_tests::pattern;
use anyhow::{bail, ensure, Context, Result};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, Read, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::time::Instant;

/// What a worker is told to do.
pub enum Op {
    /// Write the rank file of `(seed, bytes)` at `base` of `path` (a file
    /// of its own when `base` is 0 and `fresh`, else a shared one), fsync.
    Save { path: String, seed: u64, bytes: u64, base: u64, fresh: bool },
    /// Read the files' tensors back, checking each stamp.
    Load { paths: Vec<String>, seeds: Vec<u64>, bytes: u64, how: Load },
    /// 4 KiB reads at distinct random offsets, `qd` threads at once.
    Random { path: String, size: u64, qd: usize, ops: usize },
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Load {
    /// `read` of 4 MiB pieces from start to end.
    Sequential,
    /// `pread` of each tensor whole, in file order.
    Ranges,
    /// `pread` of each tensor whole, shuffled.
    Shuffled,
    /// The file mapped, every page touched, in file order.
    Mmap,
    /// The file mapped, each tensor's pages touched, tensors shuffled.
    MmapShuffled,
}

impl Load {
    pub fn name(self) -> &'static str {
        match self {
            Load::Sequential => "seq",
            Load::Ranges => "ranges",
            Load::Shuffled => "shuffled",
            Load::Mmap => "mmap",
            Load::MmapShuffled => "mmap-shuffled",
        }
    }

    fn parse(s: &str) -> Result<Load> {
        Ok(match s {
            "seq" => Load::Sequential,
            "ranges" => Load::Ranges,
            "shuffled" => Load::Shuffled,
            "mmap" => Load::Mmap,
            "mmap-shuffled" => Load::MmapShuffled,
            other => bail!("unknown load {other}"),
        })
    }
}

impl Op {
    /// The worker's command line.
    pub fn args(&self) -> Vec<String> {
        let s = |v: &dyn ToString| v.to_string();
        match self {
            Op::Save { path, seed, bytes, base, fresh } => vec![s(&"save"), s(path), s(seed), s(bytes), s(base), s(fresh)],
            Op::Load { paths, seeds, bytes, how } => {
                let mut v = vec![s(&"load"), s(&how.name()), s(bytes)];
                for (p, seed) in paths.iter().zip(seeds) {
                    v.push(s(p));
                    v.push(s(seed));
                }
                v
            }
            Op::Random { path, size, qd, ops } => vec![s(&"random"), s(path), s(size), s(qd), s(ops)],
        }
    }

    fn parse(a: &[String]) -> Result<Op> {
        let arg = |i: usize| a.get(i).map(String::as_str).context("worker: missing argument");
        let num = |i: usize| -> Result<u64> { Ok(arg(i)?.parse()?) };
        Ok(match arg(0)? {
            "save" => Op::Save { path: arg(1)?.into(), seed: num(2)?, bytes: num(3)?, base: num(4)?, fresh: arg(5)? == "true" },
            "load" => {
                let (mut paths, mut seeds) = (Vec::new(), Vec::new());
                for pair in a[3..].chunks(2) {
                    ensure!(pair.len() == 2, "worker: a path without its seed");
                    paths.push(pair[0].clone());
                    seeds.push(pair[1].parse()?);
                }
                Op::Load { paths, seeds, bytes: num(2)?, how: Load::parse(arg(1)?)? }
            }
            "random" => Op::Random { path: arg(1)?.into(), size: num(2)?, qd: num(3)? as usize, ops: num(4)? as usize },
            other => bail!("worker: unknown op {other}"),
        })
    }
}

/// The latency percentiles a random reader reports, in this order.
pub const LATENCY_PCTS: [f64; 5] = [50.0, 90.0, 99.0, 99.9, 100.0];

/// `aifs-bench worker ...`: run one rank and report on stdout.
pub fn main(args: &[String]) -> Result<()> {
    let op = Op::parse(args)?;
    let mut out = std::io::stdout().lock();
    match op {
        Op::Save { path, seed, bytes, base, fresh } => {
            let plan = Plan::new(seed, bytes);
            let mut buf = vec![0u8; MAX_TENSOR.min(plan.size) as usize];
            pattern::fill(seed, 0, &mut buf);
            let f = if fresh { File::create(&path)? } else { OpenOptions::new().write(true).open(&path)? };
            go(&mut out)?;
            save(&f, &plan, seed, base, &mut buf)?;
            writeln!(out, "done")?;
        }
        Op::Load { paths, seeds, bytes, how } => {
            let plans: Vec<Plan> = seeds.iter().map(|&s| Plan::new(s, bytes)).collect();
            let files = paths.iter().map(File::open).collect::<std::io::Result<Vec<_>>>()?;
            go(&mut out)?;
            let n = match how {
                Load::Mmap | Load::MmapShuffled => mmap_load(&files, &plans, &seeds, how)?,
                _ => load(&files, &plans, &seeds, how)?,
            };
            writeln!(out, "done {n}")?;
        }
        Op::Random { path, size, qd, ops } => {
            let f = File::open(&path)?;
            // As fio does for random jobs: no read-ahead wasted on them.
            // SAFETY: posix_fadvise on a descriptor we own; only advice.
            unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
            go(&mut out)?;
            let mut lat = random_reads(&f, size, qd, ops)?;
            lat.sort_unstable();
            let pick = |q: f64| lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1))).copied().unwrap_or(0);
            // After the count: the percentiles of `LATENCY_PCTS`, µs.
            let pcts: Vec<String> = LATENCY_PCTS.iter().map(|q| pick(q / 100.0).to_string()).collect();
            writeln!(out, "done {} {}", lat.len(), pcts.join(" "))?;
        }
    }
    Ok(())
}

/// Say `ready` and wait for the parent's word.
fn go(out: &mut impl Write) -> Result<()> {
    writeln!(out, "ready")?;
    out.flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(())
}

fn save(f: &File, plan: &Plan, seed: u64, base: u64, buf: &mut [u8]) -> Result<()> {
    let mut t = 0;
    for &(off, len) in &plan.writes {
        let piece = &mut buf[..len as usize];
        if plan.tensors.get(t) == Some(&(off, len)) {
            let s = stamp(seed, t);
            let k = s.len().min(piece.len());
            piece[..k].copy_from_slice(&s[..k]);
            t += 1;
        }
        f.write_all_at(piece, base + off)?;
    }
    f.sync_all()?;
    Ok(())
}

/// Tensor `t` (`len` bytes) starts with its stamp in `data`.
fn check(seed: u64, t: usize, len: u64, data: &[u8]) -> Result<()> {
    let s = stamp(seed, t);
    let k = s.len().min(len as usize);
    ensure!(data[..k] == s[..k], "tensor {t} of the file of seed {seed} read back wrong");
    Ok(())
}

/// The tensors to read, as (file, tensor), in the order `how` reads them:
/// with several files, tensor by tensor across all of them (re-sharding
/// takes a piece of every rank's file).
fn order(plans: &[Plan], how: Load, seed: u64) -> Vec<(usize, usize)> {
    let most = plans.iter().map(|p| p.tensors.len()).max().unwrap_or(0);
    let mut all: Vec<(usize, usize)> = (0..most).flat_map(|t| (0..plans.len()).filter(move |&f| t < plans[f].tensors.len()).map(move |f| (f, t))).collect();
    if matches!(how, Load::Shuffled | Load::MmapShuffled) {
        let perm = shuffle(all.len(), seed);
        all = perm.into_iter().map(|i| all[i]).collect();
    }
    all
}

fn load(files: &[File], plans: &[Plan], seeds: &[u64], how: Load) -> Result<u64> {
    let mut buf = vec![0u8; 4 << 20];
    let mut total = 0u64;
    if how == Load::Sequential {
        for (f, (plan, &seed)) in files.iter().zip(plans.iter().zip(seeds)) {
            let mut f = f;
            let mut at = 0u64;
            let mut t = 0;
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                // Stamps that start inside this piece.
                while let Some(&(o, len)) = plan.tensors.get(t) {
                    if o + 8 > at + n as u64 {
                        break;
                    }
                    if o >= at {
                        check(seed, t, len, &buf[(o - at) as usize..n])?;
                    }
                    t += 1;
                }
                at += n as u64;
            }
            ensure!(at == plan.size, "read {at} bytes of {}", plan.size);
            total += at;
        }
        return Ok(total);
    }
    buf.resize(MAX_TENSOR as usize, 0);
    for (fi, t) in order(plans, how, seeds.iter().sum()) {
        let (off, len) = plans[fi].tensors[t];
        let piece = &mut buf[..len as usize];
        files[fi].read_exact_at(piece, off)?;
        check(seeds[fi], t, len, piece)?;
        total += len;
    }
    Ok(total)
}

/// Map each file and touch every page of each tensor.
fn mmap_load(files: &[File], plans: &[Plan], seeds: &[u64], how: Load) -> Result<u64> {
    let mut maps = Vec::new();
    for (f, p) in files.iter().zip(plans) {
        // SAFETY: a fresh shared read-only mapping of a file we hold open;
        // only read through `data`, and unmapped below.
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), p.size as usize, libc::PROT_READ, libc::MAP_SHARED, f.as_raw_fd(), 0) };
        ensure!(ptr != libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
        maps.push((ptr, p.size as usize));
    }
    let mut total = 0u64;
    let mut sum = 0u64;
    let how = if how == Load::MmapShuffled { Load::Shuffled } else { Load::Ranges };
    for (fi, t) in order(plans, how, seeds.iter().sum()) {
        let (off, len) = plans[fi].tensors[t];
        // SAFETY: `[off, off + len)` lies inside the mapping of file `fi`
        // (the plan's size), which stays mapped until the end.
        let data = unsafe { std::slice::from_raw_parts((maps[fi].0 as *const u8).add(off as usize), len as usize) };
        check(seeds[fi], t, len, data)?;
        for page in data.chunks(4096) {
            // SAFETY: a read of a byte of the mapping, volatile so each
            // page is faulted in.
            sum = sum.wrapping_add(unsafe { std::ptr::read_volatile(page.as_ptr()) } as u64);
        }
        total += len;
    }
    for (ptr, len) in maps {
        // SAFETY: unmapping what mmap gave above; no slice of it remains.
        unsafe { libc::munmap(ptr, len) };
    }
    std::hint::black_box(sum);
    Ok(total)
}

/// Latencies in microseconds of `ops` 4 KiB reads at distinct random
/// offsets, over `qd` threads.
fn random_reads(f: &File, size: u64, qd: usize, ops: usize) -> Result<Vec<u64>> {
    let blocks = size / 4096;
    let offs: Vec<u64> = shuffle(blocks as usize, size ^ qd as u64).into_iter().take(ops).map(|b| b as u64 * 4096).collect();
    let lat = std::sync::Mutex::new(Vec::with_capacity(ops));
    let failed = std::sync::Mutex::new(None);
    std::thread::scope(|s| {
        for k in 0..qd {
            let (offs, lat, failed) = (&offs, &lat, &failed);
            s.spawn(move || {
                let mut buf = [0u8; 4096];
                let mut mine = Vec::new();
                for off in offs.iter().skip(k).step_by(qd) {
                    let t = Instant::now();
                    if let Err(e) = f.read_exact_at(&mut buf, *off) {
                        if let Ok(mut g) = failed.lock() {
                            *g = Some(e);
                        }
                        return;
                    }
                    mine.push(t.elapsed().as_micros() as u64);
                }
                if let Ok(mut g) = lat.lock() {
                    g.extend(mine);
                }
            });
        }
    });
    if let Some(e) = failed.into_inner().ok().flatten() {
        return Err(e.into());
    }
    lat.into_inner().map_err(|_| anyhow::anyhow!("latency list poisoned"))
}
