//! `make fuzz`: random frames, and frames mutated from real requests,
//! thrown at the MDS and at an OSD of an in-process cluster (real QUIC,
//! real mTLS, real stores on disk), under every certificate role, and at
//! a client's recall handler (a `ClientFs` of that cluster, with files
//! open, serving recalls on a connection the fuzzer makes as the MDS). It
//! checks that nothing panics, that both servers keep answering a
//! well-formed request within a few seconds all along, and that the
//! process's memory stays bounded: its live heap (every allocation, counted)
//! peaks no higher in the second half of the run than in the first, give
//! or take `HEAP_SLACK`, and its resident memory never grows past
//! `RSS_SLACK`. It prints a line a second and a summary.
//!
//! `aifs-fuzz [--frames N] [--seed S] [--streams K]`: N frames in all
//! (default 10,000,000), K in flight (default 64).
use aifs_common::certs::Role;
use aifs_common::config::{TlsConfig, TransportConfig};
use aifs_common::perm::Cred;
use aifs_common::proto::mds::{DirOp, MdsCall, MdsReq, MdsResp, SetAttr};
use aifs_common::proto::osd::{block_crcs, OsdCall, OsdReq, OsdResp};
use aifs_common::proto::Message;
use aifs_common::rpc::{self, Identity, RpcClient};
use aifs_common::{InodeId, Layout, ObjectId, OsdId};
use aifs_tests::TestCluster;
use anyhow::{bail, Context, Result};
use std::alloc::{GlobalAlloc, Layout as AllocLayout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A well-formed request must be answered within this, all along.
const HEALTH_DEADLINE: Duration = Duration::from_secs(10);
/// Growth of resident memory over the run that counts as unbounded.
const RSS_SLACK: u64 = 1 << 30;
/// How much higher the live heap may peak in the second half of the run
/// than in the first before it counts as still growing.
const HEAP_SLACK: u64 = 32 << 20;

/// The system allocator, counting the bytes allocated and not yet freed.
struct Counting;

static LIVE: AtomicU64 = AtomicU64::new(0);

// SAFETY: each call forwards to the system allocator with the same
// arguments; the counter only follows what it hands out and takes back.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: AllocLayout) -> *mut u8 {
        // SAFETY: as the caller promised for `l`.
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            LIVE.fetch_add(l.size() as u64, Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, l: AllocLayout) -> *mut u8 {
        // SAFETY: as the caller promised for `l`.
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            LIVE.fetch_add(l.size() as u64, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, l: AllocLayout) {
        // SAFETY: `p` came from this allocator with `l`.
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size() as u64, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, p: *mut u8, l: AllocLayout, size: usize) -> *mut u8 {
        // SAFETY: `p` came from this allocator with `l`.
        let q = unsafe { System.realloc(p, l, size) };
        if !q.is_null() {
            LIVE.fetch_add(size as u64, Ordering::Relaxed);
            LIVE.fetch_sub(l.size() as u64, Ordering::Relaxed);
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Memory over a run: the live heap and resident memory at the start, and
/// their peaks (the heap's in each half of the run).
struct Memory {
    rss0: u64,
    heap0: u64,
    rss_peak: u64,
    heap_peaks: [u64; 2],
}

impl Memory {
    fn start() -> Memory {
        let (rss0, heap0) = (rss(), LIVE.load(Ordering::Relaxed));
        Memory { rss0, heap0, rss_peak: rss0, heap_peaks: [heap0; 2] }
    }

    /// A sample taken in the first or (`late`) the second half of the run.
    fn sample(&mut self, late: bool) -> (u64, u64) {
        let (r, h) = (rss(), LIVE.load(Ordering::Relaxed));
        self.rss_peak = self.rss_peak.max(r);
        let half = &mut self.heap_peaks[late as usize];
        *half = (*half).max(h);
        (r, h)
    }

    fn report(&self) {
        let [early, late] = self.heap_peaks.map(|b| b >> 20);
        println!("  resident memory: {} MiB at start, {} MiB at peak", self.rss0 >> 20, self.rss_peak >> 20);
        println!("  live heap: {} MiB at start, peak {early} MiB in the first half of the run, {late} MiB in the second", self.heap0 >> 20);
    }

    fn check(&self) -> Result<()> {
        if self.rss_peak > self.rss0 + RSS_SLACK {
            bail!("resident memory grew by {} MiB", (self.rss_peak - self.rss0) >> 20);
        }
        let [early, late] = self.heap_peaks;
        if late > early + HEAP_SLACK {
            bail!("the live heap was still growing: its peak rose by {} MiB from the first half to the second", (late - early) >> 20);
        }
        Ok(())
    }
}

static PANICS: AtomicU64 = AtomicU64::new(0);

/// splitmix64: deterministic for a seed, and all the randomness needed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A frame as the wire carries it: length prefix, packed header, payload.
fn frame(header: &[u8], payload: &[u8]) -> Result<Vec<u8>> {
    let mut f = aifs_common::proto::frame::framed_header(header)?;
    f.extend_from_slice(payload);
    Ok(f)
}

/// Real requests to each server, to mutate.
fn mds_corpus() -> Result<Vec<Vec<u8>>> {
    let (root, f) = (InodeId::ROOT, InodeId(0x0100_0000_0000_0005));
    let layout = Layout { stripe_size: 1 << 20, stripe_count: 1, replicas: 1, osds: vec![OsdId(1)] };
    let reqs = vec![
        MdsReq::Lookup { parent: root, name: "a".into() },
        MdsReq::GetAttr { ino: f },
        MdsReq::Readdir { ino: root, cookie: 0, max: 64 },
        MdsReq::Create { parent: root, name: "fz".into(), mode: 0o644, exclusive: false },
        MdsReq::Mkdir { parent: root, name: "dz".into(), mode: 0o755 },
        MdsReq::Unlink { parent: root, name: "fz".into() },
        MdsReq::Rename { parent: root, name: "fz".into(), newparent: root, newname: "gz".into(), flags: 0 },
        MdsReq::SetAttr { ino: f, set: SetAttr { size: Some(4096), mode: Some(0o600), ..Default::default() } },
        MdsReq::Open { ino: f, write: true, first: true, exclusive: false },
        MdsReq::UpdateSize { ino: f, size: 1 << 20, mtime_ns: 1 },
        MdsReq::Reserve { dir: root, count: 8 },
        MdsReq::Unreserve { inos: vec![f] },
        MdsReq::TmpFile { parent: root, mode: 0o600, linkable: true },
        MdsReq::Link { ino: f, newparent: root, newname: "lz".into() },
        MdsReq::Apply {
            session: None,
            ops: vec![DirOp::Create { parent: root, name: "r".into(), ino: f, layout, mode: 0o644, cred: Cred::root(), time_ns: 0, open: false }],
        },
        MdsReq::OpenSession { name: "fuzz".into(), dir_leases: true, previous: vec![], open: vec![], locks: vec![] },
        MdsReq::Statfs,
        MdsReq::Status,
        MdsReq::DegradedList { ino: None },
    ];
    reqs.into_iter().map(|r| frame(&MdsCall::new(r, Cred::user(1000, 1000, vec![10, 20])).encode()?, &[])).collect()
}

fn recall_corpus(inos: &[InodeId]) -> Result<Vec<Vec<u8>>> {
    use aifs_common::proto::mds::{Degraded, RecallReq};
    let mut out = Vec::new();
    for &ino in inos {
        for r in [
            RecallReq::Invalidate { ino, names: vec!["a".into(), "f0".into()] },
            RecallReq::Invalidate { ino, names: vec![] },
            RecallReq::Revoke { ino },
            RecallReq::Degraded { ino, objs: vec![Degraded { index: 0, osd: OsdId(1) }] },
        ] {
            out.push(frame(&r.encode()?, &[])?);
        }
    }
    Ok(out)
}

fn osd_corpus() -> Result<Vec<Vec<u8>>> {
    let obj = ObjectId { ino: InodeId(0x0100_0000_0000_0005), index: 0 };
    let data = vec![7u8; 3000];
    let write = OsdReq::Write { obj, off: 100, len: data.len() as u32, crcs: block_crcs(100, &data) };
    let mut out = vec![frame(&OsdCall::from(write).encode()?, &data)?];
    for r in [
        OsdReq::Read { obj, off: 0, len: 65536 },
        OsdReq::Stat { obj },
        OsdReq::Truncate { obj, size: 10 },
        OsdReq::Commit { objs: vec![obj] },
        OsdReq::List { after: None, max: 100 },
        OsdReq::Verify { obj },
        OsdReq::Usage,
        // (Not `Allocate`: a mutated length would reserve real disk under
        // the operator's certificate, up to all of it.)
        OsdReq::Allocated { objs: vec![obj] },
    ] {
        out.push(frame(&OsdCall::from(r).encode()?, &[])?);
    }
    Ok(out)
}

/// One frame to send: random bytes, random bytes behind a fitting length,
/// or a real request mutated (bits flipped, bytes overwritten, cut short,
/// spliced with another, its length prefix changed).
fn make_frame(rng: &mut Rng, corpus: &[Vec<u8>]) -> Vec<u8> {
    let pick = |rng: &mut Rng| corpus[rng.below(corpus.len() as u64) as usize].clone();
    match rng.below(8) {
        0 => {
            let n = rng.below(600) as usize;
            rng.bytes(n)
        }
        1 => {
            let n = rng.below(600) as usize;
            // (Under the header limit: never refused.)
            frame(&rng.bytes(n), &[]).unwrap_or_default()
        }
        2 => {
            let mut f = pick(rng);
            let cut = rng.below(f.len() as u64) as usize;
            f.truncate(cut);
            f
        }
        3 => {
            let (mut a, b) = (pick(rng), pick(rng));
            let at = rng.below(a.len() as u64) as usize;
            a.truncate(at);
            a.extend_from_slice(&b[rng.below(b.len() as u64) as usize..]);
            a
        }
        4 => {
            let mut f = pick(rng);
            let n = rng.next() as u32 % 4096;
            f[..4].copy_from_slice(&n.to_le_bytes());
            f
        }
        _ => {
            let mut f = pick(rng);
            for _ in 0..1 + rng.below(4) {
                let at = 4 + rng.below((f.len() - 4) as u64) as usize;
                match rng.below(3) {
                    0 => f[at] ^= 1 << rng.below(8),
                    1 => f[at] = rng.next() as u8,
                    _ => f[at] = [0, 0xff, 0x7f, 0x80][rng.below(4) as usize],
                }
            }
            f
        }
    }
}

#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    errors: AtomicU64,
    answered: AtomicU64,
    cut: AtomicU64,
}

struct Target {
    name: &'static str,
    addr: SocketAddr,
    server: Role,
    corpus: Vec<Vec<u8>>,
}

/// Send `n` frames to `t` under `ep`'s certificate, `k` at once, each on a
/// stream of its own over one connection (a new one if it is closed).
async fn throw(t: Arc<Target>, ep: quinn::Endpoint, seed: u64, n: u64, k: usize, tally: Arc<Tally>) -> Result<()> {
    let mut conn = ep.connect(t.addr, t.server.dns_name())?.await?;
    let mut rng = Rng(seed);
    let mut inflight = futures::stream::FuturesUnordered::new();
    let mut i = 0;
    use futures::StreamExt;
    while i < n || !inflight.is_empty() {
        while i < n && inflight.len() < k {
            if conn.close_reason().is_some() {
                conn = ep.connect(t.addr, t.server.dns_name())?.await?;
            }
            let f = make_frame(&mut rng, &t.corpus);
            let c = conn.clone();
            let tally = tally.clone();
            inflight.push(async move {
                tally.sent.fetch_add(1, Ordering::Relaxed);
                let Ok((mut s, mut r)) = c.open_bi().await else { return };
                let _ = s.write_all(&f).await;
                let _ = s.finish();
                match tokio::time::timeout(HEALTH_DEADLINE, r.read_to_end(1 << 24)).await {
                    Ok(Ok(reply)) if reply.len() > 4 => {
                        tally.answered.fetch_add(1, Ordering::Relaxed);
                        if is_error_reply(&reply) {
                            tally.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    _ => {
                        tally.cut.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
            i += 1;
        }
        inflight.next().await;
    }
    Ok(())
}

fn is_error_reply(reply: &[u8]) -> bool {
    // An error reply has no payload: the packed header runs to the end.
    let Some(a) = reply.get(4..).and_then(|h| aifs_common::proto::frame::unpack(h, 1 << 20).ok()) else { return false };
    use aifs_common::proto::mds::RecallResp;
    matches!(MdsResp::decode(&a), Ok(MdsResp::Err(_)))
        || matches!(OsdResp::decode(&a), Ok(OsdResp::Err(_)))
        || matches!(RecallResp::decode(&a), Ok(RecallResp::Err(_)))
}

fn rss() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = s.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok());
    kb.unwrap_or(0) * 1024
}

/// What each target was sent and answered.
fn report(targets: &[Arc<Target>], tallies: &[Arc<Tally>]) {
    for (t, y) in targets.iter().zip(tallies) {
        println!(
            "  {}: {} sent, {} answered ({} with an error), {} streams closed without an answer",
            t.name,
            y.sent.load(Ordering::Relaxed),
            y.answered.load(Ordering::Relaxed),
            y.errors.load(Ordering::Relaxed),
            y.cut.load(Ordering::Relaxed)
        );
    }
}

/// A client of `cl` with files open and written, serving recalls on every
/// connection made to the returned address (under the MDS certificate):
/// the client, the inodes it uses, the address.
async fn recall_target(cl: &TestCluster) -> Result<(Arc<aifs_client::fs::ClientFs>, Vec<InodeId>, SocketAddr)> {
    let dir = cl.dir.path();
    let cfg = format!(
        "mds = \"{}\"\nname = \"fuzz\"\n[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        cl.mds.addr,
        dir.join("ca.pem").display(),
        dir.join("client.pem").display(),
        dir.join("client.key").display()
    );
    let path = dir.join("client-fuzz.toml");
    std::fs::write(&path, cfg)?;
    let cfg: aifs_client::config::ClientConfig = aifs_common::config::load(&path)?;
    let fs = aifs_client::fs::ClientFs::connect(&cfg).await?;
    let mut inos = vec![InodeId::ROOT];
    for i in 0..3 {
        let o = fs.create(InodeId::ROOT, &format!("f{i}"), 0o644, false, false).await?;
        fs.write(o.fh, 0, bytes::Bytes::from(vec![i as u8; 100_000])).await?;
        inos.push(o.attr.ino);
    }
    let id = Identity::load(&TlsConfig::in_dir(dir, "client"))?;
    let ep = rpc::server_endpoint("127.0.0.1:0".parse()?, &id, &TransportConfig::default(), Arc::default())?;
    let addr = ep.local_addr()?;
    let serving = fs.clone();
    tokio::spawn(async move {
        while let Some(incoming) = ep.accept().await {
            if let Ok(conn) = incoming.await {
                serving.serve_recalls(conn);
            }
        }
    });
    Ok((fs, inos, addr))
}

/// Both servers answer a well-formed request within `HEALTH_DEADLINE`.
async fn healthy(mds: &RpcClient, osd: &RpcClient) -> Result<Duration> {
    let t = Instant::now();
    let m = tokio::time::timeout(HEALTH_DEADLINE, mds.call::<_, MdsResp>(&MdsCall::new(MdsReq::Statfs, Cred::root()), &[])).await;
    if !matches!(m, Ok(Ok((MdsResp::Statfs(_), _)))) {
        bail!("the MDS stopped answering: {m:?}");
    }
    let o = tokio::time::timeout(HEALTH_DEADLINE, osd.call::<_, OsdResp>(&OsdCall::from(OsdReq::Usage), &[])).await;
    if !matches!(o, Ok(Ok((OsdResp::Usage { .. }, _)))) {
        bail!("the OSD stopped answering: {o:?}");
    }
    Ok(t.elapsed())
}

fn arg(args: &[String], name: &str, default: u64) -> Result<u64> {
    match args.iter().position(|a| a == name) {
        Some(i) => args.get(i + 1).context(format!("{name} needs a value"))?.replace('_', "").parse().context(format!("{name}: not a number")),
        None => Ok(default),
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let frames = arg(&args, "--frames", 10_000_000)?;
    let seed = arg(&args, "--seed", 1)?;
    let streams = arg(&args, "--streams", 64)? as usize;
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |p| {
        PANICS.fetch_add(1, Ordering::Relaxed);
        hook(p);
    }));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(run(frames, seed, streams))
}

async fn run(frames: u64, seed: u64, streams: usize) -> Result<()> {
    let cl = TestCluster::start(3, 4).await?;
    let dir = cl.dir.path();
    let targets = [
        Arc::new(Target { name: "mds", addr: cl.mds.addr, server: Role::Mds, corpus: mds_corpus()? }),
        Arc::new(Target { name: "osd", addr: cl.osds[0].addr, server: Role::Osd, corpus: osd_corpus()? }),
    ];
    // Every role's certificate, at every server.
    let certs = ["client", "admin", "mds", "osd2"];
    let mds = cl.mds_client(Role::Admin)?;
    let osd = RpcClient::new(rpc::client_endpoint(&Identity::load(&aifs_tests::tls(dir, Role::Admin))?, &TransportConfig::default())?, cl.osds[0].addr, Role::Osd);
    healthy(&mds, &osd).await?;
    let (fs, inos, recall_addr) = recall_target(&cl).await?;
    let targets = [
        targets[0].clone(),
        targets[1].clone(),
        Arc::new(Target { name: "recall", addr: recall_addr, server: Role::Client, corpus: recall_corpus(&inos)? }),
    ];
    let mut mem = Memory::start();
    let tallies: Vec<Arc<Tally>> = targets.iter().map(|_| Arc::new(Tally::default())).collect();
    let per = frames / (targets.len() * certs.len()) as u64;
    let mut jobs = Vec::new();
    for (ti, t) in targets.iter().enumerate() {
        for (ci, name) in certs.iter().enumerate() {
            let id = Identity::load(&TlsConfig::in_dir(dir, name))?;
            let ep = rpc::client_endpoint(&id, &TransportConfig::default())?;
            let s = seed.wrapping_mul(1000).wrapping_add((ti * 10 + ci) as u64);
            let k = (streams / (targets.len() * certs.len())).max(1);
            jobs.push(tokio::spawn(throw(t.clone(), ep, s, per, k, tallies[ti].clone())));
        }
    }
    let start = Instant::now();
    let mut slowest = Duration::ZERO;
    let total = per * jobs.len() as u64;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        slowest = slowest.max(healthy(&mds, &osd).await?);
        if let Err(e) = tokio::time::timeout(HEALTH_DEADLINE, fs.getattr(inos[1])).await.map_err(|_| aifs_common::Error::Io("timed out".into())).and_then(|r| r) {
            bail!("the client stopped answering: {e}");
        }
        let sent: u64 = tallies.iter().map(|t| t.sent.load(Ordering::Relaxed)).sum();
        let (rss, heap) = mem.sample(sent >= total / 2);
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{sent:>10} of {total} frames  {:>7.0}/s  rss {} MiB  heap {} MiB  sessions {}  slowest health check {} ms  panics {}",
            sent as f64 / secs,
            rss >> 20,
            heap >> 20,
            cl.ns().cluster.sessions.len(),
            slowest.as_millis(),
            PANICS.load(Ordering::Relaxed)
        );
        if jobs.iter().all(|j| j.is_finished()) {
            break;
        }
    }
    for j in jobs {
        j.await??;
    }
    let secs = start.elapsed().as_secs_f64();
    println!("\nfuzz: {total} frames in {secs:.0} s ({:.0}/s), seed {seed}", total as f64 / secs);
    report(&targets, &tallies);
    mem.report();
    println!("  slowest health check {} ms", slowest.as_millis());
    let panics = PANICS.load(Ordering::Relaxed);
    println!("  panics: {panics}");
    if panics > 0 {
        bail!("{panics} panics");
    }
    mem.check()?;
    healthy(&mds, &osd).await?;
    Ok(())
}
