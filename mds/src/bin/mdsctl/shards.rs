//! `mdsctl shard`: the metadata shards, each a Raft group; listing them,
//! and handing a shard's lead to a chosen MDS process.
use aifs_common::proto::mds::{ClusterStatus, MdsReq, ShardInfo};
use aifs_mds::admin::{table, Admin};
use anyhow::bail;
use clap::Subcommand;
use std::time::{Duration, Instant};

#[derive(Subcommand)]
pub enum ShardCmd {
    /// List metadata shards: members, leader and the member wanted to
    /// lead, log positions and counts.
    Ls,
    /// Hand the lead of SHARD to MDS process ID (a voter in every group,
    /// see `mds ls`), now and whenever ID is back after a failure. While
    /// one process leads every shard, they all move; with `spread = true`
    /// in the MDS config, a shard other than 0 moves alone. Returns once
    /// ID leads it.
    Move {
        shard: u32,
        #[arg(long)]
        to: u64,
    },
}

/// How long a move may take before mdsctl gives up waiting (the MDS goes
/// on trying every 30 s while the wanted member answers and holds the
/// log).
const MOVE_WAIT: Duration = Duration::from_secs(30);

impl ShardCmd {
    pub async fn run(&self, admin: &Admin, json: bool) -> anyhow::Result<()> {
        match self {
            ShardCmd::Ls => {
                let s = admin.status().await?;
                match json {
                    true => println!("{}", serde_json::to_string_pretty(&s.shards)?),
                    false => print!("{}", shard_table(&s.shards)),
                }
            }
            ShardCmd::Move { shard, to } => {
                let started = Instant::now();
                admin.call(&MdsReq::MoveShard { shard: *shard, to: *to }).await?;
                let s = wait_moved(admin, *shard, *to, json).await?;
                match json {
                    true => println!("{}", serde_json::to_string_pretty(&s.shards)?),
                    false => println!("MDS {to} leads shard {shard}, after {:.1}s", started.elapsed().as_secs_f64()),
                }
            }
        }
        Ok(())
    }
}

/// Ask for the status, a line a second, until MDS `to` answers it as the
/// leader of `shard`.
async fn wait_moved(admin: &Admin, shard: u32, to: u64, json: bool) -> anyhow::Result<ClusterStatus> {
    let started = Instant::now();
    let mut said = Instant::now();
    loop {
        // Between leaders no one answers for a moment: asked again.
        let s = admin.status().await;
        let led = s.as_ref().ok().and_then(|s| s.shards.iter().find(|x| x.id == shard)).and_then(|x| x.leader);
        if let (Ok(s), Some(l)) = (&s, led) {
            if l == to {
                return Ok(s.clone());
            }
        }
        if started.elapsed() >= MOVE_WAIT {
            bail!("MDS {to} does not lead shard {shard} after {MOVE_WAIT:?}: is it up, and does it hold the log (`mdsctl mds ls`)? The MDS goes on trying");
        }
        if !json && said.elapsed() >= Duration::from_secs(1) {
            said = Instant::now();
            match (&s, led) {
                (Ok(_), Some(l)) => eprintln!("shard {shard}: led by MDS {l}, being handed to MDS {to}"),
                _ => eprintln!("shard {shard}: a leader is being elected"),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn shard_table(shards: &[ShardInfo]) -> String {
    let rows: Vec<Vec<String>> = shards
        .iter()
        .map(|x| {
            let members: Vec<String> = x.members.iter().map(|m| m.to_string()).collect();
            vec![
                x.id.to_string(),
                members.join(","),
                x.leader.map(|l| l.to_string()).unwrap_or_else(|| "-".into()),
                x.wanted.map(|l| l.to_string()).unwrap_or_else(|| "-".into()),
                x.term.to_string(),
                format!("{}/{}", x.applied, x.last_log),
                x.snapshot.to_string(),
                x.inodes.to_string(),
                x.dentries.to_string(),
                x.commits.to_string(),
                x.pending_gc.to_string(),
                x.degraded.to_string(),
            ]
        })
        .collect();
    table(&["SHARD", "MEMBERS", "LEADER", "WANTED", "TERM", "APPLIED/LOG", "SNAPSHOT", "INODES", "ENTRIES", "COMMITS", "GC PENDING", "DEGRADED"], &rows)
}
