//! `mdsctl mds`: the MDS processes every shard is replicated over; listing
//! them, adding one, taking one out. A change goes step by step (each step
//! one request to the leader, safe to send again), with a line a second
//! until it is done.
use aifs_common::proto::mds::{MdsReq, MdsResp, MemberChange, MemberInfo};
use aifs_common::Error;
use aifs_mds::admin::{table, Admin};
use anyhow::bail;
use clap::Subcommand;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[derive(Subcommand)]
pub enum MdsCmd {
    /// List the MDS processes: address, which one leads, which vote and
    /// which still catch up, and per shard the last log entry each is known
    /// to hold.
    Ls,
    /// Add the MDS process serving at ADDR, started with `--join` (or
    /// `join = true`) on an empty data directory: it learns every shard's
    /// log (or a snapshot), then votes. Returns once it votes in every
    /// shard's group, or with groups of `group_size`, in shard 0's, in
    /// those short of voters, and in those it takes a seat in from the
    /// process in the most groups.
    Add {
        addr: SocketAddr,
        /// Its member id (default: the next free one). Give a process
        /// that lost its data directory its old id back, after `mds
        /// remove`.
        #[arg(long)]
        id: Option<u64>,
    },
    /// Take MDS process ID out of every shard's group (it may be down).
    /// Taking out the leader hands leadership to another member. With
    /// groups of `group_size`, each group it leaves short of voters then
    /// takes another process in its place, the one in fewest groups;
    /// returns once each has caught up and votes.
    Remove { id: u64 },
}

/// How long a change goes on without getting any nearer to done.
const STUCK_AFTER: Duration = Duration::from_secs(120);

/// Between steps.
const STEP_PAUSE: Duration = Duration::from_millis(250);

impl MdsCmd {
    pub async fn run(&self, admin: &Admin, json: bool) -> anyhow::Result<()> {
        match self {
            MdsCmd::Ls => {
                let s = admin.status().await?;
                match json {
                    true => println!("{}", serde_json::to_string_pretty(&s.members)?),
                    false => print!("{}", member_table(&s.members)),
                }
            }
            MdsCmd::Add { addr, id } => {
                let mut req = MdsReq::AddMember { id: id.unwrap_or(0), addr: addr.to_string() };
                let c = steps(admin, &mut req, json, |c| (c.shards - c.voter_in, c.behind)).await?;
                if !json {
                    println!("MDS {} at {} votes in all {} shard groups", c.id, c.addr, c.shards);
                }
            }
            MdsCmd::Remove { id } => {
                let mut req = MdsReq::RemoveMember { id: *id };
                let c = steps(admin, &mut req, json, |c| (c.voter_in + c.learner_in + c.refilling, c.behind)).await?;
                if !json {
                    println!("MDS {} is in no shard group now", c.id);
                }
            }
        }
        Ok(())
    }
}

/// Send `req` until what is `left` by its answer (groups, then entries)
/// comes to no group; the first answer fixes the member's id for the steps
/// after it.
async fn steps(admin: &Admin, req: &mut MdsReq, json: bool, left: impl Fn(&MemberChange) -> (u32, u64)) -> anyhow::Result<MemberChange> {
    let mut nearest = (u32::MAX, u64::MAX);
    let mut moved = Instant::now();
    let mut said = Instant::now();
    loop {
        let c = match admin.call(req).await {
            Ok(MdsResp::Member(c)) => c,
            Ok(_) => bail!("unexpected reply to a membership change"),
            // A change still committing, or a leader being elected.
            Err(e @ (Error::Unavailable(_) | Error::NotLeader(_) | Error::Transport(_))) if moved.elapsed() < STUCK_AFTER => {
                tracing::debug!(error = %e, "membership step: trying again");
                tokio::time::sleep(STEP_PAUSE).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if let MdsReq::AddMember { id, .. } = req {
            *id = c.id;
        }
        let left = left(&c);
        if left.0 == 0 {
            if json {
                println!("{}", serde_json::to_string_pretty(&c)?);
            }
            return Ok(c);
        }
        if left < nearest {
            nearest = left;
            moved = Instant::now();
        } else if moved.elapsed() >= STUCK_AFTER {
            bail!("MDS {} at {}: no nearer to done in {STUCK_AFTER:?} (votes in {} of {} shards, learns in {}, {} entries behind)", c.id, c.addr, c.voter_in, c.shards, c.learner_in, c.behind);
        }
        if !json && said.elapsed() >= Duration::from_secs(1) {
            said = Instant::now();
            match req {
                MdsReq::RemoveMember { .. } if c.voter_in + c.learner_in == 0 => {
                    eprintln!("MDS {} is out: {} group(s) still short of voters, their new members {} entries behind", c.id, c.refilling, c.behind)
                }
                _ => eprintln!("MDS {} at {}: votes in {} of {} shards, learns in {}, {} entries behind", c.id, c.addr, c.voter_in, c.shards, c.learner_in, c.behind),
            }
        }
        tokio::time::sleep(STEP_PAUSE).await;
    }
}

fn member_table(members: &[MemberInfo]) -> String {
    let rows: Vec<Vec<String>> = members
        .iter()
        .map(|m| {
            let matched: Vec<String> = m.matched.iter().map(|i| i.to_string()).collect();
            let role = match (m.leader, m.voter) {
                (true, _) => "leader",
                (false, true) => "follower",
                (false, false) => "learner",
            };
            vec![m.id.to_string(), m.addr.clone(), role.into(), matched.join(",")]
        })
        .collect();
    table(&["ID", "ADDR", "ROLE", "LOG HELD (PER SHARD)"], &rows)
}
