//! `mdsctl repair status`: what the background repair has left (stale
//! replicas recorded over all shards), what it rewrites now, and its rate,
//! from two samples of the cluster's status a second apart; with
//! `--watch`, followed until nothing is left.
use crate::progress::Progress;
use aifs_common::proto::mds::RepairInfo;
use aifs_mds::admin::{human, Admin};
use clap::Subcommand;
use std::time::{Duration, Instant};

#[derive(Subcommand)]
pub enum RepairCmd {
    /// Stale replicas left, replicas being rewritten, what was done since
    /// the MDS started, and the rate now.
    Status {
        /// Follow it until nothing is left: a bar on a terminal, a line
        /// every few seconds otherwise.
        #[arg(long)]
        watch: bool,
    },
}

/// One look at the repair.
#[derive(Clone)]
struct Sample {
    left: u64,
    info: RepairInfo,
    at: Instant,
}

async fn sample(admin: &Admin) -> anyhow::Result<Sample> {
    let s = admin.status().await?;
    Ok(Sample { left: s.shards.iter().map(|x| x.degraded).sum(), info: s.repair, at: Instant::now() })
}

/// What `mdsctl repair status` reports: the latest sample, with the rates
/// since the one before.
#[derive(serde::Serialize)]
struct Report {
    /// Stale replicas recorded, over all shards.
    left: u64,
    /// Replicas on OSDs taken out still to move.
    to_move: u64,
    repairing: u64,
    repaired: u64,
    moved_off_osds_out: u64,
    bytes_copied: u64,
    bytes_per_s: u64,
    replicas_per_s: f64,
}

impl Report {
    fn between(a: &Sample, b: &Sample) -> Report {
        let secs = b.at.duration_since(a.at).as_secs_f64().max(1e-3);
        let done = |s: &Sample| s.info.repaired + s.info.moved;
        Report {
            left: b.left,
            to_move: b.info.to_move,
            repairing: b.info.active,
            repaired: b.info.repaired,
            moved_off_osds_out: b.info.moved,
            bytes_copied: b.info.bytes,
            bytes_per_s: (b.info.bytes.saturating_sub(a.info.bytes) as f64 / secs) as u64,
            replicas_per_s: done(b).saturating_sub(done(a)) as f64 / secs,
        }
    }

    fn line(&self) -> String {
        format!(
            "{} stale replicas left, {} to move off OSDs out, {} being rewritten; {} repaired and {} moved off OSDs out since the MDS started ({} copied); now {}/s, {:.1} replicas/s",
            self.left,
            self.to_move,
            self.repairing,
            self.repaired,
            self.moved_off_osds_out,
            human(self.bytes_copied),
            human(self.bytes_per_s),
            self.replicas_per_s
        )
    }
}

impl RepairCmd {
    pub async fn run(&self, admin: &Admin, json: bool) -> anyhow::Result<()> {
        let RepairCmd::Status { watch } = self;
        let first = sample(admin).await?;
        let mut before = first.clone();
        if !watch {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let r = Report::between(&before, &sample(admin).await?);
            match json {
                true => println!("{}", serde_json::to_string_pretty(&r)?),
                false => println!("{}", r.line()),
            }
            return Ok(());
        }
        let done = |s: &Sample| (s.info.repaired + s.info.moved).saturating_sub(first.info.repaired + first.info.moved);
        let mut shown = Progress::new("repair", "replicas");
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = sample(admin).await?;
            let r = Report::between(&before, &now);
            let left = now.left + now.info.to_move;
            let finished = left == 0 && now.info.active == 0;
            match json {
                true => println!("{}", serde_json::to_string(&r)?),
                false => shown.show(done(&now), done(&now) + left, || format!("{} being rewritten, {}/s", r.repairing, human(r.bytes_per_s))),
            }
            before = now;
            if finished {
                shown.done();
                if !json {
                    println!("{}", r.line());
                }
                return Ok(());
            }
        }
    }
}
