//! Many client sessions on one MDS process: what each request a client
//! node sends costs the MDS, in CPU and in rate, the figures the README's
//! model of 10,000 GPU clients is built from. Each simulated client is a
//! session on a QUIC connection of its own (as a mount is), calling the
//! MDS directly, all of them at once:
//! - the session heartbeat every mount sends (`session_timeout_ms / 4`);
//! - a getattr, the cheapest request that reads the namespace;
//! - a rank file's metadata as a checkpoint writes it through the MDS:
//!   create (durable, opened for writing), the size at close, close;
//! - the same rank files as a mount makes them under its directory's
//!   write lease: a node's files of one checkpoint made in one `Apply`
//!   batch from inode numbers reserved beforehand (`Reserve`), each file's
//!   size at close, and the closes in one more batch.
//!
//! The heartbeat is the floor every other row is compared with. The MDS's
//! CPU per request is the key for the model: one process of the leader's
//! serves `1 s / cost` requests a second per core it is given.
use crate::util::{cpu_secs, median};
use aifs_common::certs::Role;
use aifs_common::ids::InodeId;
use aifs_common::perm::Cred;
use aifs_common::proto::mds::{DirOp, MdsReq, MdsResp, Reserved};
use aifs_common::rpc::{self, Identity, RpcClient};
use aifs_common::SessionId;
use aifs_tests::mds_call;
use aifs_tests::proc::ProcCluster;
use anyhow::{bail, Context, Result};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Simulated client nodes (one certificate may hold 256 sessions).
const CLIENTS: usize = 200;

/// How long each row's load runs.
const RUN_FOR: Duration = Duration::from_secs(3);

/// The model: client nodes, how often they checkpoint, rank files each
/// writes per checkpoint (one per GPU), and how often a mount heartbeats.
const MODEL_CLIENTS: f64 = 10_000.0;
const MODEL_CKPT_EVERY_S: f64 = 600.0;
const MODEL_FILES_PER_CKPT: f64 = 8.0;
const MODEL_HEARTBEAT_S: f64 = 2.5;

/// Inode numbers a simulated node reserves at a time for its leased
/// directory (a mount takes `RESERVE_BATCH`, 512; fewer here keep 200
/// nodes of one certificate within the bench's `max_reserved`).
const RESERVE: u32 = 64;

/// What the bench's MDS lets one certificate hold: its 200 simulated
/// nodes, each with two sessions (one that takes directory leases, one
/// that does not) and reserved numbers, share the one client certificate
/// that real nodes would each have of their own.
fn limits(config: String) -> String {
    config.replace("max_reserved = 16384", "max_reserved = 1000000").replace("max_sessions = 256", "max_sessions = 1024")
}

struct Client {
    rpc: RpcClient,
    session: SessionId,
    dir: InodeId,
    /// The node's directory it holds the write lease of, through a
    /// session of its own that takes directory leases.
    leased: Leased,
}

struct Leased {
    rpc: RpcClient,
    session: SessionId,
    dir: InodeId,
    numbers: tokio::sync::Mutex<Vec<Reserved>>,
}

/// One run of a row: the requests and calls made, over how many seconds,
/// and the MDS's CPU microseconds meanwhile.
#[derive(Clone, Copy)]
struct Row {
    reqs: f64,
    calls: f64,
    secs: f64,
    cpu_us: f64,
}

impl Row {
    fn rate(&self) -> f64 {
        self.reqs / self.secs
    }

    /// The MDS's CPU microseconds per request.
    fn per_req(&self) -> f64 {
        self.cpu_us / self.reqs.max(1.0)
    }

    /// Rank files a second, and the MDS's CPU microseconds each, for
    /// `files` files a call.
    fn files(&self, files: f64) -> (f64, f64) {
        (self.calls * files / self.secs, self.cpu_us / (self.calls * files).max(1.0))
    }
}

async fn connect(cl: &ProcCluster) -> Result<Vec<Arc<Client>>> {
    let id = Identity::load(&aifs_tests::tls(cl.dir.path(), Role::Client))?;
    let ep = rpc::client_endpoint(&id, &cl.transport()?)?;
    // Each node's directories, made by a caller of no session (it holds
    // no lease a simulated client, which answers no recall, would be asked
    // to give back).
    let setup = RpcClient::new(ep.clone(), cl.mds_addr, Role::Mds);
    let mkdir = |name: String| {
        let setup = &setup;
        async move {
            match mds_call(setup, MdsReq::Mkdir { parent: InodeId::ROOT, name, mode: 0o755 }).await? {
                MdsResp::Changed { attr: Some(a), .. } => Ok(a.ino),
                other => bail!("unexpected reply to Mkdir: {other:?}"),
            }
        }
    };
    let mut out = Vec::new();
    for i in 0..CLIENTS {
        let dir = mkdir(format!("node{i}")).await?;
        let (rpc, session) = open_session(&ep, cl, format!("sim{i}"), false).await?;
        let leased = leased_dir(&ep, cl, mkdir(format!("leased{i}")).await?, i).await?;
        out.push(Arc::new(Client { rpc, session, dir, leased }));
    }
    Ok(out)
}

async fn open_session(ep: &quinn::Endpoint, cl: &ProcCluster, name: String, dir_leases: bool) -> Result<(RpcClient, SessionId)> {
    let rpc = RpcClient::new(ep.clone(), cl.mds_addr, Role::Mds);
    let open = MdsReq::OpenSession { name, dir_leases, previous: vec![], open: vec![], locks: vec![] };
    let MdsResp::Session { id, .. } = mds_call(&rpc, open).await? else { bail!("unexpected reply to OpenSession") };
    Ok((rpc, id))
}

/// Node `i`'s second session, which makes a directory in `parent` and
/// holds its write lease, with the inode numbers that came with it.
async fn leased_dir(ep: &quinn::Endpoint, cl: &ProcCluster, parent: InodeId, i: usize) -> Result<Leased> {
    let (rpc, session) = open_session(ep, cl, format!("sim{i}-leased"), true).await?;
    let mkdir = MdsReq::Mkdir { parent, name: "ckpt".into(), mode: 0o755 };
    let (dir, numbers) = match mds_call(&rpc, mkdir).await? {
        MdsResp::Changed { attr: Some(a), writable: Some(w), .. } if w.dir == a.ino => (a.ino, w.reserved),
        other => bail!("no write lease on a new directory: {other:?}"),
    };
    Ok(Leased { rpc, session, dir, numbers: tokio::sync::Mutex::new(numbers) })
}

/// Every session heartbeats every second while the bench runs, as mounts
/// do: the rows that do not heartbeat last longer than a session.
fn keep_alive(clients: &[Arc<Client>]) -> tokio::task::JoinHandle<()> {
    let clients = clients.to_vec();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            for c in &clients {
                let _ = mds_call(&c.rpc, MdsReq::SessionHeartbeat { id: c.session, io: Default::default() }).await;
                let _ = mds_call(&c.leased.rpc, MdsReq::SessionHeartbeat { id: c.leased.session, io: Default::default() }).await;
            }
        }
    })
}

/// Every client runs `op` (given the client and how many it ran before)
/// in a loop for [`RUN_FOR`]; each call returns the requests it sent.
async fn load<F, Fut>(clients: &[Arc<Client>], mds_pid: u32, op: F) -> Result<Row>
where
    F: Fn(Arc<Client>, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<u64>> + Send,
{
    let reqs = Arc::new(AtomicU64::new(0));
    let calls = Arc::new(AtomicU64::new(0));
    let cpu0 = cpu_secs(&[mds_pid]);
    let t = Instant::now();
    let until = t + RUN_FOR;
    let tasks: Vec<_> = clients
        .iter()
        .map(|c| {
            let (c, op, reqs, calls) = (c.clone(), op.clone(), reqs.clone(), calls.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while Instant::now() < until {
                    reqs.fetch_add(op(c.clone(), n).await?, Ordering::Relaxed);
                    calls.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await.context("a simulated client stopped")??;
    }
    let secs = t.elapsed().as_secs_f64();
    let (reqs, calls) = (reqs.load(Ordering::Relaxed) as f64, calls.load(Ordering::Relaxed) as f64);
    let cpu = cpu_secs(&[mds_pid]) - cpu0;
    Ok(Row { reqs, calls, secs, cpu_us: cpu * 1e6 })
}

async fn heartbeat(c: Arc<Client>, _: u64) -> Result<u64> {
    mds_call(&c.rpc, MdsReq::SessionHeartbeat { id: c.session, io: Default::default() }).await?;
    Ok(1)
}

async fn getattr(c: Arc<Client>, _: u64) -> Result<u64> {
    mds_call(&c.rpc, MdsReq::GetAttr { ino: c.dir }).await?;
    Ok(1)
}

/// A rank file's metadata, the `n`th of checkpoint `step`: create, its
/// size at close, close.
async fn rank_file(c: Arc<Client>, step: usize, n: u64) -> Result<u64> {
    let create = MdsReq::Create { parent: c.dir, name: format!("step{step}-rank{n}.pt"), mode: 0o644, exclusive: true };
    let ino = match mds_call(&c.rpc, create).await? {
        MdsResp::Changed { attr: Some(a), .. } | MdsResp::Opened { attr: a, .. } => a.ino,
        other => bail!("unexpected reply to Create: {other:?}"),
    };
    mds_call(&c.rpc, MdsReq::UpdateSize { ino, size: 1 << 30, mtime_ns: 1 }).await?;
    mds_call(&c.rpc, MdsReq::Close { ino, session: Some(c.session) }).await?;
    Ok(3)
}

/// Rank files one node makes per checkpoint (one per GPU).
const NODE_FILES: usize = MODEL_FILES_PER_CKPT as usize;

/// Checkpoint `n` (of run `step`) of one node, as its mount sends it with
/// the directory's write lease: the [`NODE_FILES`] creates in one `Apply`,
/// each file's size at close, the closes in one `Apply`; and a `Reserve`
/// whenever the numbers run out. Returns the requests it sent.
async fn leased_files(c: Arc<Client>, step: usize, n: u64) -> Result<u64> {
    let l = &c.leased;
    let mut sent = 0;
    let mut numbers = l.numbers.lock().await;
    if numbers.len() < NODE_FILES {
        match mds_call(&l.rpc, MdsReq::Reserve { dir: l.dir, count: RESERVE }).await? {
            MdsResp::Reserved(more) => numbers.extend(more),
            other => bail!("unexpected reply to Reserve: {other:?}"),
        }
        sent += 1;
    }
    let taken: Vec<Reserved> = numbers.drain(..NODE_FILES).collect();
    drop(numbers);
    let time_ns = aifs_common::time::now_ns();
    let creates = taken
        .iter()
        .enumerate()
        .map(|(k, r)| DirOp::Create {
            parent: l.dir,
            name: format!("step{step}-{n}-rank{k}.pt"),
            ino: r.ino,
            layout: r.layout.clone(),
            mode: 0o644,
            cred: Cred::root(),
            time_ns,
            open: true,
        })
        .collect();
    apply(l, creates).await?;
    for r in &taken {
        mds_call(&l.rpc, MdsReq::UpdateSize { ino: r.ino, size: 1 << 30, mtime_ns: 1 }).await?;
    }
    apply(l, taken.iter().map(|r| DirOp::Close { ino: r.ino }).collect()).await?;
    Ok(sent + 2 + NODE_FILES as u64)
}

async fn apply(l: &Leased, ops: Vec<DirOp>) -> Result<()> {
    match mds_call(&l.rpc, MdsReq::Apply { session: Some(l.session), ops }).await? {
        MdsResp::Applied(v) if v.iter().all(|e| e.is_none()) => Ok(()),
        other => bail!("a change under the directory lease not applied: {other:?}"),
    }
}

/// The table: medians of `runs` runs, one MDS process, [`CLIENTS`]
/// sessions; then the model those figures give.
pub fn table(runs: usize) -> Result<()> {
    let cl = ProcCluster::start_edited(3, &limits).context("starting a cluster")?;
    let mds_pid = cl.mds_pids().first().copied().context("no MDS process")?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let clients = rt.block_on(connect(&cl))?;
    let alive = {
        let _in = rt.enter();
        keep_alive(&clients)
    };
    // Each row: its name, the rank files one call makes, its runs.
    let mut rows: Vec<(String, f64, Vec<Row>)> = vec![
        ("session heartbeat".into(), 0.0, vec![]),
        ("getattr".into(), 0.0, vec![]),
        ("rank file through the MDS: create, size, close (3 requests)".into(), 1.0, vec![]),
        (format!("rank files under the directory's write lease: {NODE_FILES} in an `Apply`, sizes, closes in an `Apply`"), NODE_FILES as f64, vec![]),
    ];
    for r in 1..=runs {
        eprintln!("clients: run {r}/{runs}, {CLIENTS} sessions");
        rows[0].2.push(rt.block_on(load(&clients, mds_pid, heartbeat))?);
        rows[1].2.push(rt.block_on(load(&clients, mds_pid, getattr))?);
        rows[2].2.push(rt.block_on(load(&clients, mds_pid, move |c, n| rank_file(c, r, n)))?);
        rows[3].2.push(rt.block_on(load(&clients, mds_pid, move |c, n| leased_files(c, r, n)))?);
    }
    alive.abort();
    let med = |v: &[Row], f: &dyn Fn(&Row) -> f64| median(&v.iter().map(f).collect::<Vec<_>>());
    let floor = med(&rows[0].2, &Row::per_req);
    println!();
    println!("| {CLIENTS} sessions on one MDS process | requests/s | MDS CPU µs/request | CPU / heartbeat's | rank files/s | MDS CPU µs/file |");
    println!("|---|---:|---:|---:|---:|---:|");
    // Per row with files: (files a second, MDS CPU µs a file).
    let mut per_file = Vec::new();
    for (name, files, v) in &rows {
        let (rate, cpu) = (med(v, &Row::rate), med(v, &Row::per_req));
        let mut line = format!("| {name} | {rate:.0} | {cpu:.1} | {:.2} |", cpu / floor.max(1e-9));
        if *files > 0.0 {
            let f = (med(v, &|r| r.files(*files).0), med(v, &|r| r.files(*files).1));
            line += &format!(" {:.0} | {:.1} |", f.0, f.1);
            per_file.push(f);
        } else {
            line += " | |";
        }
        println!("{line}");
    }
    let hb_cores = MODEL_CLIENTS / MODEL_HEARTBEAT_S * floor / 1e6;
    let files = MODEL_CLIENTS * MODEL_FILES_PER_CKPT;
    println!();
    println!("model: {MODEL_CLIENTS:.0} clients heartbeating every {MODEL_HEARTBEAT_S} s take {hb_cores:.2} MDS cores");
    for ((how, _, _), (rate, cpu)) in rows[2..].iter().zip(per_file) {
        println!(
            "model: a checkpoint of {MODEL_FILES_PER_CKPT:.0} files per client every {MODEL_CKPT_EVERY_S:.0} s is {files:.0} files; \
             as {how}: {:.1} s of this MDS at the measured rate, {:.3} cores averaged over the interval",
            files / rate.max(1e-9),
            files * cpu / 1e6 / MODEL_CKPT_EVERY_S
        );
    }
    drop(clients);
    Ok(())
}
