//! The scaling run: metadata from many clients over many directories,
//! with the MDS processes on hosts of their own (`ProcCluster::
//! start_spread`), so that what limits the rate is the network rather
//! than this machine's two shared cores. Each MDS host's link carries a
//! set number of bytes a second, both ways together, after a delay each
//! way; a rate can grow with the MDS processes only as far as the work
//! is spread over their links.
//!
//! Each of [`CLIENTS`] simulated nodes, on QUIC connections of its own as
//! a mount's, makes files in a directory of its own through the MDS, one
//! after another: create (durable, opened), stat, close, unlink; four
//! requests a file. Two tables, each row against the one process of its
//! table in the same run:
//! - shards over processes, with no copies: 1, 2 and 4 processes, each
//!   shard's group but shard 0's one process ([`Groups::One`]), on
//!   [`SHARDED_LINK`]s;
//! - groups of three: 1, 2, 3 and 4 processes (every group over all of
//!   them up to three), and four with every group over all four, on
//!   [`LINK`]s.
//!
//! With several processes, the [`SHARDS`] shards'
//! leadership is spread evenly over the processes (`spread = true`,
//! `mdsctl shard move`), and each node sends each request to the process
//! that leads its shard, with a session there, through the mount's own
//! routing (`aifs_client::pool::Pool`, client/src/route.rs).
use crate::util::{cpu_secs, median};
use aifs_common::certs::Role;
use aifs_common::config::MdsAddrs;
use aifs_common::ids::InodeId;
use aifs_common::proto::mds::{MdsReq, MdsResp, RecallReq, RecallResp};
use aifs_common::rpc::{self, Identity, RpcClient};
use aifs_common::SessionId;
use aifs_tests::mds_call_leader as mds_call;
use aifs_tests::proc::{Link, ProcCluster};
use aifs_client::pool::Pool;
use aifs_client::route::SessionKeeper;
use anyhow::{bail, Context, Result};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Simulated client nodes, each with a directory of its own.
const CLIENTS: usize = 64;

/// How long each run's load goes on.
const RUN_FOR: Duration = Duration::from_secs(4);

/// Load before the runs, not measured.
const WARM_UP: Duration = Duration::from_secs(2);

/// An MDS host's link in the table of groups of three: 1 ms each way,
/// and 1.0 MB/s (8 Mbit/s) both ways together. A file's four requests
/// and their answers take about 0.9 KB on the wire (packed headers), so
/// one link carries about 1,000 files a second, at about 1.2 cores of one
/// MDS process's CPU on this machine. (At 1.5 MB/s one process used 1.4
/// cores at 80% of its link, the cores the limit again.)
const LINK: Link = Link { delay: Duration::from_millis(1), bytes_per_s: Some(1_000_000) };

/// An MDS host's link in the table of shards over processes with no
/// copies: a fifth of [`LINK`], so that four processes running their
/// links full (about 200 files a second each) stay within the two cores
/// with the 64 sessions and the relays, and the links, not the cores,
/// are what limits every row. (At 0.25 MB/s the four processes' links
/// ran at 0.19-0.24 MB/s, the cores short again.)
const SHARDED_LINK: Link = Link { delay: Duration::from_millis(1), bytes_per_s: Some(200_000) };

/// Shards: shard 0 and a multiple of every row's process count, so that
/// each process can lead as many of the shards new directories go to
/// (all but shard 0 where groups are over some of the processes,
/// `Namespace::dir_shard`).
const SHARDS: u32 = 13;

struct Client {
    pool: Pool,
    /// Its session with shard 0's leader, opened again when lost there.
    session: std::sync::Mutex<SessionId>,
    dir: InodeId,
    /// The pool's sessions with other processes: a name, nothing else.
    keeper: Arc<dyn SessionKeeper>,
}

/// A simulated node keeps sessions with no files open and no locks, and
/// caches nothing: it gives back at once every lease the MDS recalls. (It
/// once left recalls unanswered: a lease its session with one process
/// held, carried to the next leader of the shard, then stood in the way
/// of its requests through another for the whole wait, and the run
/// failed with "not released by its holders".)
struct Bare(String);

struct NothingCached;

impl rpc::Service for NothingCached {
    type Req = RecallReq;
    type Resp = RecallResp;

    async fn call(&self, _: &Arc<rpc::Peer>, _: RecallReq, _: bytes::Bytes) -> (RecallResp, Vec<bytes::Bytes>) {
        (RecallResp::Done, vec![])
    }

    fn error(e: aifs_common::Error) -> RecallResp {
        RecallResp::Err(e.to_wire())
    }

    fn accepts(&self, role: Role) -> bool {
        role == Role::Mds
    }
}

impl SessionKeeper for Bare {
    fn open_request(&self, previous: Vec<SessionId>) -> MdsReq {
        MdsReq::OpenSession { name: self.0.clone(), dir_leases: false, previous, open: vec![], locks: vec![] }
    }
    fn opened(&self, _: SessionId, _: Instant) {}
    fn renewed(&self, _: SessionId, _: Instant) {}
    fn lost(&self, _: SessionId) {}
    fn connected(self: Arc<Self>, conn: quinn::Connection) {
        tokio::spawn(rpc::serve_conn(Arc::new(NothingCached), rpc::Peer::new(Role::Mds, conn)));
    }
}

/// One run: files made, over how many seconds, the MDS processes' CPU
/// seconds, the bytes of the busiest link, the share of the links' bytes
/// exchanged between MDS processes (Raft), and the share of datagrams the
/// links dropped (a full queue).
struct Run {
    files: f64,
    secs: f64,
    cpu: f64,
    busiest: f64,
    between: f64,
    dropped: f64,
}

async fn connect(cl: &ProcCluster) -> Result<Vec<Arc<Client>>> {
    let id = Identity::load(&aifs_tests::tls(cl.dir.path(), Role::Client))?;
    let transport = cl.transport()?;
    let members = MdsAddrs(cl.mds_addrs.clone());
    // The directories are made by a caller of no session: it holds no
    // lease that a simulated client, which answers no recall, would be
    // asked to give back.
    let setup = RpcClient::of_members(rpc::client_endpoint(&id, &transport)?, &members, &id, &transport)?;
    // Spread over every shard by their names (a mkdir takes a number of
    // a shard led elsewhere from its leader).
    let mut dirs = Vec::new();
    for i in 0..CLIENTS {
        match mds_call(&setup, MdsReq::Mkdir { parent: InodeId::ROOT, name: format!("node{i}"), mode: 0o755 }).await? {
            MdsResp::Changed { attr: Some(a), .. } => dirs.push(a.ino),
            other => bail!("unexpected reply to Mkdir: {other:?}"),
        }
    }
    spread_shards(cl)?;
    // All at once, as nodes start a job.
    let nodes = dirs.into_iter().enumerate().map(|(i, dir)| {
        let (id, transport, members) = (&id, &transport, &members);
        async move {
            // An endpoint each: a socket each, as nodes have.
            let endpoint = rpc::client_endpoint(id, transport)?;
            let rpc = RpcClient::of_members(endpoint.clone(), members, id, transport)?;
            let pool = Pool::new(endpoint, rpc, Duration::from_secs(60));
            let _ = pool.routes.config.set(rpc::endpoint::member_client_config(id, transport)?);
            let keeper: Arc<dyn SessionKeeper> = Arc::new(Bare(format!("scale{i}")));
            let _ = pool.routes.keeper.set(Arc::downgrade(&keeper));
            let open = MdsReq::OpenSession { name: format!("scale{i}"), dir_leases: false, previous: vec![], open: vec![], locks: vec![] };
            let MdsResp::Session { id: session, .. } = pool.mds(&open).await? else { bail!("unexpected reply to OpenSession") };
            pool.learn_shards().await;
            let client = Arc::new(Client { pool, session: std::sync::Mutex::new(session), dir, keeper });
            tokio::spawn(Client::beat(Arc::downgrade(&client)));
            anyhow::Ok(client)
        }
    });
    futures::future::try_join_all(nodes).await
}

/// Each shard led by a voter of its group, as many by each process as
/// the groups allow: shard k by the voter leading fewest so far, the
/// `k mod N`th process counted from shard 0's leader first among equals
/// (with groups over every process, shard k by that one).
fn spread_shards(cl: &ProcCluster) -> Result<()> {
    let n = cl.mds_addrs.len() as u64;
    if n < 2 {
        return Ok(());
    }
    let groups = shard_groups(cl)?;
    let leader = groups.first().and_then(|g| g.0).context("shard 0 has no leader")?;
    let mut load = vec![0usize; n as usize + 1];
    load[leader as usize] += 1;
    let mut places = vec![leader];
    for (k, (_, voters)) in groups.iter().enumerate().skip(1) {
        let first = (leader - 1 + k as u64) % n + 1;
        let from = |id: u64| (id + n - first) % n;
        let p = *voters.iter().min_by_key(|id| (load[**id as usize], from(**id))).context("a shard's group has no voters")?;
        load[p as usize] += 1;
        places.push(p);
    }
    let placed = |k: u32| places[k as usize];
    for k in 1..SHARDS {
        if placed(k) != leader {
            cl.mdsctl(&["shard", "move", &k.to_string(), "--to", &placed(k).to_string()])?;
        }
    }
    let t = Instant::now();
    loop {
        let v: serde_json::Value = serde_json::from_str(&cl.mdsctl(&["--json", "shard", "ls"])?)?;
        let led: Vec<Option<u64>> = v.as_array().context("shard ls")?.iter().map(|s| s["leader"].as_u64()).collect();
        if led.iter().enumerate().all(|(k, l)| *l == Some(placed(k as u32))) {
            // Each process starts its service over the shards it leads
            // now, after a grace with no sessions to wait for.
            std::thread::sleep(Duration::from_secs(2));
            return Ok(());
        }
        if t.elapsed() > Duration::from_secs(60) {
            bail!("shards not led where placed after 60 s: {led:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Each shard's leader and voters (`mdsctl shard ls`), once every shard
/// has a leader.
fn shard_groups(cl: &ProcCluster) -> Result<Vec<(Option<u64>, Vec<u64>)>> {
    let t = Instant::now();
    loop {
        let v: serde_json::Value = serde_json::from_str(&cl.mdsctl(&["--json", "shard", "ls"])?)?;
        let groups: Vec<(Option<u64>, Vec<u64>)> = v
            .as_array()
            .context("shard ls")?
            .iter()
            .map(|s| (s["leader"].as_u64(), s["members"].as_array().map(|m| m.iter().filter_map(|i| i.as_u64()).collect()).unwrap_or_default()))
            .collect();
        if groups.iter().all(|g| g.0.is_some()) {
            return Ok(groups);
        }
        if t.elapsed() > aifs_tests::ELECTION {
            bail!("shards without a leader after {:?}: {groups:?}", aifs_tests::ELECTION);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

impl Client {
    fn session(&self) -> SessionId {
        *self.session.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Heartbeat each second while the node lives, as a mount does, on a
    /// timer of its own, whatever its requests wait for (the first
    /// sessions would lapse while the last nodes connect over a slow
    /// link).
    async fn beat(me: std::sync::Weak<Client>) {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let Some(c) = me.upgrade() else { return };
            if let Err(e) = c.heartbeat().await {
                tracing::warn!(error = %e, "a simulated node's heartbeat failed");
            }
        }
    }

    /// Heartbeat its sessions, as a mount does: one lost with shard 0's
    /// leader (its service started again) is opened again, naming it; a
    /// heartbeat that fails otherwise (a leader being elected) is tried
    /// again at the next.
    async fn heartbeat(&self) -> Result<()> {
        let id = self.session();
        match self.pool.mds(&MdsReq::SessionHeartbeat { id, io: Default::default() }).await {
            Ok(_) => {}
            Err(aifs_common::Error::Stale) => {
                let open = self.keeper.open_request(vec![id]);
                let MdsResp::Session { id, .. } = self.pool.mds(&open).await? else { bail!("unexpected reply to OpenSession") };
                *self.session.lock().unwrap_or_else(|e| e.into_inner()) = id;
            }
            Err(e) => tracing::warn!(error = %e, "session heartbeat failed"),
        }
        self.pool.beat_procs(Default::default()).await;
        self.pool.learn_shards().await;
        Ok(())
    }
}

/// One file's metadata: create, stat, close, unlink.
async fn file(c: &Client, name: String) -> Result<()> {
    let create = MdsReq::Create { parent: c.dir, name: name.clone(), mode: 0o644, exclusive: true };
    let ino = match c.pool.mds(&create).await? {
        MdsResp::Changed { attr: Some(a), .. } | MdsResp::Opened { attr: a, .. } => a.ino,
        other => bail!("unexpected reply to Create: {other:?}"),
    };
    c.pool.mds(&MdsReq::GetAttr { ino }).await?;
    c.pool.mds(&MdsReq::Close { ino, session: Some(c.session()) }).await?;
    c.pool.mds(&MdsReq::Unlink { parent: c.dir, name }).await?;
    Ok(())
}

/// Every client makes files for `time`.
async fn load(clients: &[Arc<Client>], run: usize, time: Duration) -> Result<(f64, f64)> {
    let files = Arc::new(AtomicU64::new(0));
    let t = Instant::now();
    let until = t + time;
    let tasks: Vec<_> = clients
        .iter()
        .map(|c| {
            let (c, files) = (c.clone(), files.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < until {
                    file(&c, format!("run{run}-{n}")).await?;
                    files.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await.context("a simulated client stopped")??;
    }
    Ok((files.load(Ordering::Relaxed) as f64, t.elapsed().as_secs_f64()))
}

/// What each shard's group but shard 0's is made of in a row.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Groups {
    /// `mdsctl init`'s default: three processes once there are more.
    Three,
    /// Every process.
    All,
    /// One process: shards over processes, with no copies.
    One,
}

/// `runs` runs over `n` MDS processes, their groups made as `groups`.
fn measure(n: usize, groups: Groups, link: Link, runs: usize) -> Result<Vec<Run>> {
    let edit = |t: String| {
        let t = t.replace("shards = 4\n", &format!("shards = {SHARDS}\n"));
        let t = t.replace("group_size = 3\n", "");
        let size = match groups {
            Groups::Three if n > 3 => "group_size = 3\n",
            Groups::One if n > 1 => "group_size = 1\n",
            _ => "",
        };
        format!("spread = true\n{size}{t}")
    };
    let cl = ProcCluster::start_spread(n, 3, link, &edit).with_context(|| format!("starting {n} MDS processes in namespaces of their own"))?;
    let out = runs_over(&cl, n, runs);
    if out.is_err() {
        cl.dump_logs();
    }
    out
}

fn runs_over(cl: &ProcCluster, n: usize, runs: usize) -> Result<Vec<Run>> {
    let pids = cl.mds_pids();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let clients = rt.block_on(connect(cl))?;
    // Not measured: each node's first requests to each process open a
    // connection and a session there.
    rt.block_on(load(&clients, 0, WARM_UP))?;
    let mut out = Vec::new();
    for r in 1..=runs {
        eprintln!("scale: {n} MDS process(es), run {r}/{runs}, {CLIENTS} sessions");
        let links = cl.mds_links();
        let before: Vec<u64> = links.iter().map(|l| l.bytes.load(Ordering::Relaxed)).collect();
        let total = || links.iter().map(|l| (l.bytes.load(Ordering::Relaxed), l.member_bytes.load(Ordering::Relaxed))).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        let (all0, between0) = total();
        let counts = || links.iter().map(|l| (l.datagrams.load(Ordering::Relaxed), l.dropped.load(Ordering::Relaxed))).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        let (sent0, dropped0) = counts();
        let cpu0 = cpu_secs(&pids);
        let (files, secs) = rt.block_on(load(&clients, r, RUN_FOR))?;
        let cpu = cpu_secs(&pids) - cpu0;
        let each: Vec<String> = links.iter().zip(&before).map(|(l, b)| format!("{:.2}", (l.bytes.load(Ordering::Relaxed) - b) as f64 / secs / 1e6)).collect();
        eprintln!("scale: {:.0} files/s, links {} MB/s", files / secs, each.join(" "));
        let busiest = links.iter().zip(&before).map(|(l, b)| l.bytes.load(Ordering::Relaxed) - b).max().unwrap_or(0) as f64;
        let (sent, dropped) = counts();
        let dropped = (dropped - dropped0) as f64 / ((sent - sent0) + (dropped - dropped0)).max(1) as f64;
        let (all, between) = total();
        let between = (between - between0) as f64 / (all - all0).max(1) as f64;
        out.push(Run { files, secs, cpu, busiest, between, dropped });
    }
    drop(clients);
    Ok(out)
}

/// The two tables: each row the median of `runs` runs, against the one
/// process of its own table.
pub fn table(runs: usize) -> Result<()> {
    let one = |n| (n, Groups::One);
    let sharded = rows(&[one(1), one(2), one(4)], SHARDED_LINK, runs)?;
    let three = |n| (n, Groups::Three);
    let copied = rows(&[three(1), three(2), three(3), three(4), (4, Groups::All)], LINK, runs)?;
    print_table("shards over processes, no copies", SHARDED_LINK, &sharded);
    print_table("groups of three", LINK, &copied);
    Ok(())
}

type Row = (usize, Groups, Vec<Run>);

fn rows(plan: &[(usize, Groups)], link: Link, runs: usize) -> Result<Vec<Row>> {
    plan.iter().map(|(n, g)| Ok((*n, *g, measure(*n, *g, link, runs)?))).collect()
}

fn print_table(what: &str, link: Link, rows: &[Row]) {
    let med = |v: &[Run], f: &dyn Fn(&Run) -> f64| median(&v.iter().map(f).collect::<Vec<_>>());
    let one = rows.first().map(|r| med(&r.2, &|r| r.files / r.secs)).unwrap_or(0.0);
    let link_mb = link.bytes_per_s.unwrap_or(0) as f64 / 1e6;
    println!();
    println!(
        "| {CLIENTS} sessions, a directory each; {what}; MDS hosts on links of {link_mb:.2} MB/s, {} ms each way | files/s (4 requests each) | / 1 process | target 0.8 x N | busiest link MB/s | links' bytes between MDS processes | datagrams dropped | MDS CPU µs/file |",
        link.delay.as_millis()
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (n, groups, v) in rows {
        let rate = med(v, &|r| r.files / r.secs);
        let groups = match groups {
            Groups::All if *n > 1 => ", every group over all",
            Groups::One if *n > 1 => ", groups of one",
            _ => "",
        };
        println!(
            "| {n} MDS process(es){groups} | {rate:.0} | {:.2} | {:.1} | {:.2} | {:.0}% | {:.2}% | {:.0} |",
            rate / one.max(1e-9),
            0.8 * *n as f64,
            med(v, &|r| r.busiest / r.secs / 1e6),
            med(v, &|r| r.between * 100.0),
            med(v, &|r| r.dropped * 100.0),
            med(v, &|r| r.cpu * 1e6 / r.files.max(1.0)),
        );
    }
}
