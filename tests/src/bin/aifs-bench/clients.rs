//! Many client sessions on one MDS process: what each request a client
//! node sends costs the MDS, in CPU and in rate, the figures the README's
//! model of 10,000 GPU clients is built from. Each simulated client is a
//! session on a QUIC connection of its own (as a mount is), calling the
//! MDS directly, all of them at once:
//! - the session heartbeat every mount sends (`session_timeout_ms / 4`);
//! - a getattr, the cheapest request that reads the namespace;
//! - a rank file's metadata as a checkpoint writes it through the MDS:
//!   create (durable, opened for writing), the size at close, close.
//!
//! The heartbeat is the floor every other row is compared with. The MDS's
//! CPU per request is the key for the model: one process of the leader's
//! serves `1 s / cost` requests a second per core it is given.
use crate::util::{cpu_secs, median};
use aifs_common::certs::Role;
use aifs_common::ids::InodeId;
use aifs_common::proto::mds::{MdsReq, MdsResp};
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

struct Client {
    rpc: RpcClient,
    session: SessionId,
    dir: InodeId,
}

/// One row: requests a second, and the MDS's CPU microseconds each.
type Row = (f64, f64);

async fn connect(cl: &ProcCluster) -> Result<Vec<Arc<Client>>> {
    let id = Identity::load(&aifs_tests::tls(cl.dir.path(), Role::Client))?;
    let ep = rpc::client_endpoint(&id, &cl.transport()?)?;
    // Each node's directory, made by a caller of no session (it holds no
    // lease a simulated client, which answers no recall, would be asked
    // to give back).
    let setup = RpcClient::new(ep.clone(), cl.mds_addr, Role::Mds);
    let mut out = Vec::new();
    for i in 0..CLIENTS {
        let mkdir = MdsReq::Mkdir { parent: InodeId::ROOT, name: format!("node{i}"), mode: 0o755 };
        let dir = match mds_call(&setup, mkdir).await? {
            MdsResp::Changed { attr: Some(a), .. } => a.ino,
            other => bail!("unexpected reply to Mkdir: {other:?}"),
        };
        let rpc = RpcClient::new(ep.clone(), cl.mds_addr, Role::Mds);
        let open = MdsReq::OpenSession { name: format!("sim{i}"), dir_leases: false, previous: None, open: vec![], locks: vec![] };
        let MdsResp::Session { id: session, .. } = mds_call(&rpc, open).await? else { bail!("unexpected reply to OpenSession") };
        out.push(Arc::new(Client { rpc, session, dir }));
    }
    Ok(out)
}

/// Every client runs `op` (given the client and how many it ran before)
/// in a loop for [`RUN_FOR`]; each call is `per_call` requests.
async fn load<F, Fut>(clients: &[Arc<Client>], mds_pid: u32, per_call: u64, op: F) -> Result<Row>
where
    F: Fn(Arc<Client>, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let cpu0 = cpu_secs(&[mds_pid]);
    let t = Instant::now();
    let until = t + RUN_FOR;
    let tasks: Vec<_> = clients
        .iter()
        .map(|c| {
            let (c, op, done) = (c.clone(), op.clone(), done.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while Instant::now() < until {
                    op(c.clone(), n).await?;
                    n += 1;
                    done.fetch_add(per_call, Ordering::Relaxed);
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await.context("a simulated client stopped")??;
    }
    let secs = t.elapsed().as_secs_f64();
    let reqs = done.load(Ordering::Relaxed) as f64;
    let cpu = cpu_secs(&[mds_pid]) - cpu0;
    Ok((reqs / secs, cpu * 1e6 / reqs.max(1.0)))
}

async fn heartbeat(c: Arc<Client>, _: u64) -> Result<()> {
    mds_call(&c.rpc, MdsReq::SessionHeartbeat { id: c.session }).await?;
    Ok(())
}

async fn getattr(c: Arc<Client>, _: u64) -> Result<()> {
    mds_call(&c.rpc, MdsReq::GetAttr { ino: c.dir }).await?;
    Ok(())
}

/// A rank file's metadata, the `n`th of checkpoint `step`: create, its
/// size at close, close.
async fn rank_file(c: Arc<Client>, step: usize, n: u64) -> Result<()> {
    let create = MdsReq::Create { parent: c.dir, name: format!("step{step}-rank{n}.pt"), mode: 0o644, exclusive: true };
    let ino = match mds_call(&c.rpc, create).await? {
        MdsResp::Changed { attr: Some(a), .. } | MdsResp::Opened { attr: a, .. } => a.ino,
        other => bail!("unexpected reply to Create: {other:?}"),
    };
    mds_call(&c.rpc, MdsReq::UpdateSize { ino, size: 1 << 30, mtime_ns: 1 }).await?;
    mds_call(&c.rpc, MdsReq::Close { ino, session: Some(c.session) }).await?;
    Ok(())
}

/// The table: medians of `runs` runs, one MDS process, [`CLIENTS`]
/// sessions; then the model those figures give.
pub fn table(runs: usize) -> Result<()> {
    let cl = ProcCluster::start(3).context("starting a cluster")?;
    let mds_pid = cl.mds_pids().first().copied().context("no MDS process")?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let clients = rt.block_on(connect(&cl))?;
    let mut rows: Vec<(&str, Vec<Row>)> = vec![("session heartbeat", vec![]), ("getattr", vec![]), ("rank file: create, size, close (3 requests)", vec![])];
    for r in 1..=runs {
        eprintln!("clients: run {r}/{runs}, {CLIENTS} sessions");
        rows[0].1.push(rt.block_on(load(&clients, mds_pid, 1, heartbeat))?);
        rows[1].1.push(rt.block_on(load(&clients, mds_pid, 1, getattr))?);
        rows[2].1.push(rt.block_on(load(&clients, mds_pid, 3, move |c, n| rank_file(c, r, n)))?);
    }
    let med = |v: &[Row]| (median(&v.iter().map(|r| r.0).collect::<Vec<_>>()), median(&v.iter().map(|r| r.1).collect::<Vec<_>>()));
    let (_, floor) = med(&rows[0].1);
    println!();
    println!("| {CLIENTS} sessions on one MDS process | requests/s | MDS CPU µs/request | CPU / heartbeat's |");
    println!("|---|---:|---:|---:|");
    for (name, v) in &rows {
        let (rate, cpu) = med(v);
        println!("| {name} | {rate:.0} | {cpu:.1} | {:.2} |", cpu / floor.max(1e-9));
    }
    let (ckpt_rate, ckpt_cpu) = med(&rows[2].1);
    let hb_cores = MODEL_CLIENTS / MODEL_HEARTBEAT_S * floor / 1e6;
    let files = MODEL_CLIENTS * MODEL_FILES_PER_CKPT;
    let burst_s = files * 3.0 / ckpt_rate;
    let ckpt_cores = files * 3.0 * ckpt_cpu / 1e6 / MODEL_CKPT_EVERY_S;
    println!();
    println!(
        "model: {MODEL_CLIENTS:.0} clients heartbeating every {MODEL_HEARTBEAT_S} s take {hb_cores:.2} MDS cores; \
         a checkpoint of {MODEL_FILES_PER_CKPT:.0} files per client every {MODEL_CKPT_EVERY_S:.0} s is {files:.0} files, \
         {burst_s:.1} s of this MDS at the measured rate, {ckpt_cores:.3} cores averaged over the interval"
    );
    drop(clients);
    Ok(())
}
