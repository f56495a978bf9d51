//! What every table of `aifs-bench` shares: dropping the page cache, CPU
//! time of processes, progress lines, medians.
use std::fs;
use std::time::{Duration, Instant};

pub const MIB: usize = 1 << 20;

/// Write every dirty page to disk (sync(2)).
pub fn sync() {
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
}

pub fn drop_caches() -> bool {
    sync();
    fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

/// CPU seconds (user + system) used so far by these processes.
pub fn cpu_secs(pids: &[u32]) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    pids.iter()
        .filter_map(|p| fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .filter_map(|s| {
            let rest = s.rsplit_once(')')?.1.to_string();
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / tick)
        })
        .sum()
}

pub struct Progress {
    what: String,
    start: Instant,
    last: Instant,
}

impl Progress {
    pub fn new(what: String) -> Self {
        let now = Instant::now();
        Progress { what, start: now, last: now }
    }
    pub fn tick(&mut self, done: u64, total: u64, unit: &str, scale: f64) {
        if self.last.elapsed() >= Duration::from_secs(1) || done == total {
            self.last = Instant::now();
            let rate = done as f64 / scale / self.start.elapsed().as_secs_f64().max(1e-9);
            eprintln!("  {:<34} {:>5.1}%  {rate:>9.1} {unit}", self.what, done as f64 * 100.0 / total as f64);
        }
    }
}

pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    if s.is_empty() {
        return 0.0;
    }
    s[s.len() / 2]
}


pub fn size_label(mib: usize) -> String {
    if mib >= 1024 && mib % 1024 == 0 {
        format!("{} GiB", mib / 1024)
    } else {
        format!("{mib} MiB")
    }
}
