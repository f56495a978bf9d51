//! The metadata rates table: what a job does to one directory when it lays
//! out and cleans up a checkpoint tree (mkdir and rmdir of step
//! directories, create and unlink of rank files) and what a restarted job
//! does first (stat of files no cache holds), from 1 and from 2 threads,
//! on the local disk and on aifs in the same run.
use crate::util::{drop_caches, median};
use crate::parallel;
use aifs_tests::proc::{Mount, ProcCluster};
use anyhow::Result;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

/// Where the pass runs.
pub enum Side<'a> {
    Local(&'a Path),
    /// The mount that makes the files, and the cluster, for a second
    /// mount that has never seen them (the cold stat).
    Aifs(&'a Path, &'a ProcCluster),
}

impl Side<'_> {
    fn root(&self) -> &Path {
        match self {
            Side::Local(p) | Side::Aifs(p, _) => p,
        }
    }

    /// `rel` as seen by a reader that has nothing of it cached: the local
    /// disk after dropping the kernel's caches; on aifs, a new mount (a
    /// restarted job's node), kept alive by the `Mount` returned.
    fn cold(&self, rel: &str) -> Result<(PathBuf, Option<Mount>)> {
        match self {
            Side::Local(p) => {
                drop_caches();
                Ok((p.join(rel), None))
            }
            Side::Aifs(_, cluster) => {
                let m = Mount::new(cluster)?;
                Ok((m.p(rel), Some(m)))
            }
        }
    }

    fn label(&self) -> &'static str {
        match self {
            Side::Local(_) => "local",
            Side::Aifs(..) => "aifs",
        }
    }
}

/// One pass: rows of (name, ops/s), for 1 and 2 threads in one directory.
pub fn pass(side: &Side, files: usize, dirs: usize, run: usize) -> Result<Vec<(String, f64)>> {
    let label = side.label();
    let mut rows = Vec::new();
    for th in [1, 2] {
        let rel = format!("meta{run}-{th}");
        let d = side.root().join(&rel);
        fs::create_dir(&d)?;
        let sub = |i: usize| d.join(format!("step{i:05}"));
        let file = |i: usize| d.join(format!("rank{i:06}.pt"));
        let t = format!("{th} thread(s)");
        rows.push((format!("mkdir {dirs}, {t}"), parallel(dirs, th, format!("{label}: mkdir, {t}"), |i| fs::create_dir(sub(i)))?));
        rows.push((format!("rmdir {dirs}, {t}"), parallel(dirs, th, format!("{label}: rmdir, {t}"), |i| fs::remove_dir(sub(i)))?));
        let create = |i: usize| File::create(file(i)).map(|_| ());
        rows.push((format!("create {files}, {t}"), parallel(files, th, format!("{label}: create, {t}"), create)?));
        rows.push((format!("unlink {files}, {t}"), parallel(files, th, format!("{label}: unlink, {t}"), |i| fs::remove_file(file(i)))?));
        // Made again for the reader, which then keeps leases on them: the
        // maker's changes there would wait on it (another table's rows).
        parallel(files, th, format!("{label}: create again, {t}"), create)?;
        {
            let (cold, _reader) = side.cold(&rel)?;
            let at = |i: usize| cold.join(format!("rank{i:06}.pt"));
            rows.push((format!("stat {files}, cold, {t}"), parallel(files, th, format!("{label}: cold stat, {t}"), |i| fs::metadata(at(i)).map(|_| ()))?));
        }
        for i in 0..files {
            fs::remove_file(file(i))?;
        }
        fs::remove_dir(&d)?;
    }
    Ok(rows)
}

/// Runs of both sides, as (name, local ops/s per run, aifs ops/s per run).
#[derive(Default)]
pub struct Table(Vec<(String, Vec<f64>, Vec<f64>)>);

impl Table {
    pub fn add(&mut self, local: Vec<(String, f64)>, aifs: Vec<(String, f64)>) {
        for ((name, l), (_, a)) in local.into_iter().zip(aifs) {
            match self.0.iter_mut().find(|r| r.0 == name) {
                Some(r) => {
                    r.1.push(l);
                    r.2.push(a);
                }
                None => self.0.push((name, vec![l], vec![a])),
            }
        }
    }

    /// The table; `mds`: how many MDS processes the aifs column had.
    pub fn print(&self, runs: usize, mds: usize) {
        println!();
        let over = if mds == 1 { "1 MDS process".to_string() } else { format!("{mds} MDS processes") };
        println!("| metadata in one directory, ops/s (median of {runs}) | local disk | aifs, {over} | aifs/local |");
        println!("|---|---:|---:|---:|");
        for (name, l, a) in &self.0 {
            let (ml, ma) = (median(l), median(a));
            println!("| {name} | {ml:.0} | {ma:.0} | {:.2} |", if ml > 0.0 { ma / ml } else { 0.0 });
        }
        println!();
        println!("cold stat: on the local disk after drop_caches; on aifs from a new mount, which holds nothing of the directory.");
    }
}
