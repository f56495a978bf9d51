//! `mdsctl`: run an aifs cluster. Talks to the MDS with the admin
//! certificate; without `--config` it uses the local cluster that
//! `make run` started.
use aifs_common::certs::{self, Role};
use aifs_common::config::{local_state_dir, to_toml, MdsAddrs, TlsConfig, TransportConfig};
use aifs_common::proto::mds::{LeaseMode, MdsReq, MdsResp, OsdInfo, OsdState, SessionInfo};
use aifs_common::proto::osd::{OsdCall, OsdReq, OsdResp};
use aifs_common::rpc::RpcClient;
use aifs_common::{InodeId, LayoutPolicy, ObjectId, OsdId};
use aifs_mds::admin::{human, parse_size, table, use_pct, Admin, AdminConfig};
use aifs_mds::config::Member;
use aifs_mds::MdsConfig;
use anyhow::{anyhow, bail, Context};
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

mod cert;
mod degraded;
mod members;
mod progress;
mod repair;
mod shards;
mod top;

/// What `mdsctl --help` says of its exit status.
const EXIT_STATUS: &str = "\
Exit status:
  0  done
  1  an error, named on standard error (fsck: every problem found was fixed)
  2  a command line it does not understand
  4  fsck: problems left
  8  fsck: it could not run or finish (an error, named on standard error)";

#[derive(Parser)]
#[command(name = "mdsctl", version, about = "Administer an aifs cluster", after_help = EXIT_STATUS)]
struct Args {
    /// Admin config (MDS address and admin certificate). Default: the local
    /// cluster of `make run`, $AIFS_HOME/local/admin.toml or ~/.aifs/local/admin.toml.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a cluster CA, certificates for every role, and config files.
    Init(InitArgs),
    /// Shards, OSDs and client sessions.
    Status {
        /// Refresh every `--interval` seconds until interrupted.
        #[arg(long)]
        watch: bool,
        /// Seconds between refreshes with --watch.
        #[arg(long, default_value_t = 2.0)]
        interval: f64,
    },
    /// A live view of the load: operations and bytes a second per client
    /// session, each OSD's load, the slowest MDS requests.
    Top(top::TopArgs),
    /// OSD commands.
    Osd {
        #[command(subcommand)]
        cmd: OsdCmd,
    },
    /// Shard commands.
    Shard {
        #[command(subcommand)]
        cmd: shards::ShardCmd,
    },
    /// MDS process commands (the members every shard is replicated over).
    Mds {
        #[command(subcommand)]
        cmd: members::MdsCmd,
    },
    /// Client session commands.
    Session {
        #[command(subcommand)]
        cmd: SessionCmd,
    },
    /// Certificates of single nodes: issue, renew, revoke, list.
    Cert(cert::CertArgs),
    /// Capacity and use, per OSD and in total.
    Df,
    /// Set the default layout of a directory, or the layout of an empty file.
    Setstripe {
        path: PathBuf,
        /// Stripe unit, e.g. 1M, 4M, 256k.
        #[arg(long)]
        size: Option<String>,
        /// Number of objects (OSDs) a file is striped over.
        #[arg(long)]
        count: Option<u32>,
        /// Copies of each object.
        #[arg(long)]
        replicas: Option<u32>,
    },
    /// Show the layout of a file or directory, and a file's objects.
    Getstripe { path: PathBuf },
    /// Check every file's replicas against the OSDs (missing replicas,
    /// blocks failing their crc, objects of no file). Exit status: 0 clean,
    /// 1 everything found was fixed, 4 problems left, 8 it could not run.
    Fsck {
        /// Hand missing and corrupt replicas to repair, delete orphans.
        #[arg(long)]
        repair: bool,
    },
    /// Show which client sessions hold which lease on a file or directory.
    Leases { path: PathBuf },
    /// Stale object replicas: list them, or forget their records.
    Degraded {
        #[command(subcommand)]
        cmd: degraded::DegradedCmd,
    },
    /// The background repair of stale replicas and moves off OSDs taken out.
    Repair {
        #[command(subcommand)]
        cmd: repair::RepairCmd,
    },
}

#[derive(clap::Args)]
struct InitArgs {
    /// Directory for certificates and configs.
    #[arg(long)]
    dir: PathBuf,
    /// Directory for the CA's key and the record of what it signs
    /// (default: DIR with `-ca` added); keep it apart, offline if you
    /// can: `mdsctl cert` needs it, no daemon does.
    #[arg(long)]
    ca_dir: Option<PathBuf>,
    /// MDS address written into the configs. Several, comma-separated,
    /// make a replicated MDS: one config per member (mds1.toml, ...),
    /// each shard a Raft group over them (see --group-size).
    #[arg(long, default_value = "127.0.0.1:7000")]
    mds: MdsAddrs,
    /// How many of the MDS processes each shard's group but shard 0's is
    /// made of (shard 0's has all of them), when there are more; 0: all
    /// of them. A replicated MDS made over this many processes or fewer
    /// has every group over all of them, and `mdsctl mds add` grows each.
    #[arg(long, default_value_t = 3)]
    group_size: usize,
    /// Number of OSD configs to write.
    #[arg(long, default_value_t = 3)]
    osds: u32,
    /// First OSD port; OSD i listens on this + i - 1.
    #[arg(long, default_value_t = 7101)]
    osd_port: u16,
    /// Root of the daemons' data directories (default: DIR/data).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Replace an existing CA.
    #[arg(long)]
    force: bool,
    /// Serve Prometheus metrics from every daemon: the MDS at this port
    /// (members 2, 3, ... at the ports below it), OSD i at this port + i,
    /// on the MDS's address.
    #[arg(long)]
    metrics_port: Option<u16>,
}

#[derive(Subcommand)]
enum OsdCmd {
    /// List OSDs with state and capacity.
    Ls,
    /// Take an OSD out: it gets no new data, and its replicas move to the
    /// other OSDs in the background (progress in `mdsctl repair status`).
    Out {
        id: u32,
        /// Follow the move until nothing is left, as `repair status --watch`.
        #[arg(long)]
        watch: bool,
    },
    /// Bring an OSD taken out back in.
    In { id: u32 },
}


#[derive(Subcommand)]
enum SessionCmd {
    /// List client sessions.
    Ls,
    /// End a client's session now (its mount must open a new one). ID as
    /// `session ls` shows it (32 hex digits).
    Evict { id: aifs_common::SessionId },
}

fn main() {
    // Output piped into `head` and the like ends quietly when the reader
    // closes the pipe, as with other command-line tools, instead of
    // panicking on the failed write.
    // SAFETY: called first in main, before any other thread exists; it
    // sets the disposition of one signal to its default.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    aifs_common::logging::init();
    let args = Args::parse();
    // fsck's own codes, as fsck(8)'s: 1 and 4 say what it found, so that
    // it could not run says 8.
    let failed = if matches!(args.cmd, Cmd::Fsck { .. }) { 8 } else { 1 };
    if let Err(e) = real_main(args) {
        eprintln!("mdsctl: {e:#}");
        std::process::exit(failed);
    }
}

fn real_main(args: Args) -> anyhow::Result<()> {
    if let Cmd::Init(init_args) = &args.cmd {
        return init(init_args);
    }
    let cfg_path = args.config.clone().unwrap_or_else(|| local_state_dir().join("admin.toml"));
    let cfg: AdminConfig = aifs_common::config::load(&cfg_path).with_context(|| {
        format!("no admin config at {}; pass --config, or start a local cluster with `make run`", cfg_path.display())
    })?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    if let Cmd::Cert(cert) = &args.cmd {
        return rt.block_on(cert.run(&cfg, args.json));
    }
    rt.block_on(run(args, cfg))
}


fn init(args: &InitArgs) -> anyhow::Result<()> {
    let InitArgs { mds, osds, osd_port, force, group_size, .. } = args;
    let (osds, osd_port) = (*osds, *osd_port);
    std::fs::create_dir_all(&args.dir)?;
    let dir = args.dir.canonicalize()?;
    let ca_dir = args.ca_dir.clone().unwrap_or_else(|| cert::default_ca_dir(&dir));
    // A metrics endpoint on `ip` at `port`: MDS member k at the base - (k - 1),
    // OSD i at the base + i, so that they part on one host as on several.
    let metrics_at = |ip: std::net::IpAddr, port: Option<u16>| port.map(|p| SocketAddr::new(ip, p).to_string());
    let base = args.metrics_port;
    certs::init_cluster(&dir, &ca_dir, osds, *force).map_err(|e| match e {
        aifs_common::Error::Exists => anyhow!("{} already holds a cluster CA (use --force to replace it)", ca_dir.display()),
        e => anyhow!(e),
    })?;
    let data = args.data.clone().unwrap_or_else(|| dir.join("data"));
    let tls = |r: Role| TlsConfig::in_dir(&dir, r.name());
    let transport = TransportConfig::for_cluster_at(mds.first().ip());
    let replicated = mds.0.len() > 1;
    let members: Vec<Member> = if replicated { mds.0.iter().zip(1..).map(|(a, id)| Member { id, addr: *a }).collect() } else { Vec::new() };
    let mut mcfg = MdsConfig {
        id: 1,
        members,
        join: false,
        spread: false,
        group_size: if mds.0.len() > *group_size { *group_size } else { 0 },
        listen: mds.first(),
        metrics_listen: metrics_at(mds.first().ip(), base),
        data_dir: data.join("mds"),
        shards: 4,
        default_layout: LayoutPolicy::default(),
        osd_timeout_ms: 5_000,
        session_timeout_ms: 10_000,
        cap_term_ms: 60_000,
        repair_mb_per_s: 200,
        anon_uid: aifs_common::perm::ANON_ID,
        anon_gid: aifs_common::perm::ANON_ID,
        session_limits: Default::default(),
        tls: tls(Role::Mds),
        transport: transport.clone(),
        raft: Default::default(),
        log: None,
        log_format: Default::default(),
    };
    if replicated {
        for m in mcfg.members.clone() {
            mcfg.id = m.id;
            mcfg.listen = m.addr;
            mcfg.metrics_listen = metrics_at(m.addr.ip(), base.and_then(|p| p.checked_sub((m.id - 1) as u16)));
            mcfg.data_dir = data.join(format!("mds{}", m.id));
            std::fs::write(dir.join(format!("mds{}.toml", m.id)), to_toml(&mcfg)?)?;
        }
    } else {
        std::fs::write(dir.join("mds.toml"), to_toml(&mcfg)?)?;
    }
    for i in 1..=osds {
        let port = osd_port.checked_add((i - 1) as u16).ok_or_else(|| anyhow!("OSD port out of range"))?;
        let ocfg = aifs_osd::OsdConfig {
            id: i,
            listen: SocketAddr::new(mds.first().ip(), port),
            metrics_listen: metrics_at(mds.first().ip(), base.and_then(|p| p.checked_add(i as u16))),
            advertise: None,
            mds: mds.clone(),
            data_dir: data.join(format!("osd{i}")),
            heartbeat_ms: 1000,
            limits: Default::default(),
            tls: TlsConfig::in_dir(&dir, &format!("osd{i}")),
            transport: transport.clone(),
            log: None,
            log_format: Default::default(),
        };
        std::fs::write(dir.join(format!("osd{i}.toml")), to_toml(&ocfg)?)?;
    }
    let ccfg = aifs_client_config(mds, tls(Role::Client), &transport)?;
    std::fs::write(dir.join("client.toml"), ccfg)?;
    let acfg = AdminConfig { mds: mds.clone(), tls: tls(Role::Admin), transport };
    std::fs::write(dir.join("admin.toml"), to_toml(&acfg)?)?;
    let osd_names = |ext: &str| if osds == 0 { String::new() } else { format!("osd1..{osds}{ext}, ") };
    println!("created certificates for mds, {}client, admin in {}", osd_names(""), dir.display());
    println!("the cluster CA's key is in {}: keep it apart from the nodes; `mdsctl cert` needs it", ca_dir.display());
    let mds_configs = if replicated { format!("mds1..{}.toml", mds.0.len()) } else { "mds.toml".into() };
    println!("configs: {mds_configs}, {}client.toml, admin.toml", osd_names(".toml"));
    Ok(())
}

/// The client config, written as text so mdsctl need not link the client;
/// its transport section only where it differs from the defaults.
pub(crate) fn aifs_client_config(mds: &MdsAddrs, tls: TlsConfig, transport: &TransportConfig) -> anyhow::Result<String> {
    #[derive(serde::Serialize)]
    struct Mds<'a> {
        mds: &'a MdsAddrs,
    }
    let mut text = format!(
        "{}\n[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        to_toml(&Mds { mds })?,
        tls.ca.display(),
        tls.cert.display(),
        tls.key.display()
    );
    if *transport != TransportConfig::default() {
        text.push_str(&format!("\n[transport]\n{}", to_toml(transport)?));
    }
    Ok(text)
}

fn osd_rows(osds: &[OsdInfo]) -> Vec<Vec<String>> {
    osds.iter()
        .map(|o| {
            vec![
                o.id.to_string(),
                match (o.state, o.out) {
                    (OsdState::Up, false) => "up".into(),
                    (OsdState::Down, false) => "down".into(),
                    (OsdState::Up, true) => "up,out".into(),
                    (OsdState::Down, true) => "down,out".into(),
                },
                o.addr.clone(),
                human(o.capacity),
                human(o.used),
                use_pct(o.used, o.capacity),
                o.objects.to_string(),
                if o.last_seen_ms == u64::MAX { "never".into() } else { format!("{:.1}s", o.last_seen_ms as f64 / 1000.0) },
            ]
        })
        .collect()
}

/// Print a listing: `v` as JSON with `--json`, else the table `text` makes.
fn show<T: serde::Serialize>(json: bool, v: &T, text: impl FnOnce() -> String) -> anyhow::Result<()> {
    match json {
        true => println!("{}", serde_json::to_string_pretty(v)?),
        false => print!("{}", text()),
    }
    Ok(())
}

fn session_table(sessions: &[SessionInfo]) -> String {
    let rows: Vec<Vec<String>> = sessions
        .iter()
        .map(|x| {
            vec![x.id.to_string(), x.name.clone(), x.addr.clone(), x.leases.to_string(), format!("{:.1}s", x.last_seen_ms as f64 / 1000.0)]
        })
        .collect();
    table(&["SESSION", "NAME", "ADDRESS", "LEASES", "LAST HEARD"], &rows)
}

fn eviction_table(evictions: &[aifs_common::proto::mds::EvictionInfo]) -> String {
    let now = aifs_common::cap::now_ms();
    let rows: Vec<Vec<String>> = evictions
        .iter()
        .map(|e| vec![e.id.to_string(), e.name.clone(), format!("{:.0}s ago", now.saturating_sub(e.at_ms) as f64 / 1000.0), e.why.clone()])
        .collect();
    table(&["EVICTED SESSION", "NAME", "WHEN", "WHY"], &rows)
}

/// What `mdsctl status` prints.
fn status_text(s: &aifs_common::proto::mds::ClusterStatus, mds: &MdsAddrs) -> String {
    let up = s.osds.iter().filter(|o| o.state == OsdState::Up).count();
    let degraded: u64 = s.shards.iter().map(|x| x.degraded).sum();
    let (shards, osds, sessions) = (s.shards.len(), s.osds.len(), s.sessions.len());
    let fs = &s.statfs;
    let (used, total, avail) = (human(fs.used_bytes), human(fs.total_bytes), human(fs.avail_bytes));
    let r = &s.repair;
    format!(
        "cluster: mds {mds}  osd map epoch {}\n  \
         shards: {shards}   osds: {up} up / {osds} total   sessions: {sessions}\n  \
         capacity: {used} used of {total} ({avail} available), {} inodes\n\n  \
         requests served: {}\n  \
         degraded object replicas: {degraded}   repairing: {}   repaired: {}   moved off OSDs out: {} ({} copied), {} to move\n\n\
         {}\n{}\n{}",
        s.osd_epoch,
        fs.files,
        s.mds_requests,
        r.active,
        r.repaired,
        r.moved,
        human(r.bytes),
        r.to_move,
        shards::shard_table(&s.shards),
        table(&OSD_HEADER, &osd_rows(&s.osds)),
        session_table(&s.sessions)
    )
}

const OSD_HEADER: [&str; 8] = ["OSD", "STATE", "ADDRESS", "SIZE", "USED", "USE%", "OBJECTS", "LAST HEARD"];

async fn run(args: Args, cfg: AdminConfig) -> anyhow::Result<()> {
    let admin = Admin::connect(&cfg)?;
    match args.cmd {
        Cmd::Init(_) | Cmd::Cert(_) => unreachable!("handled before connecting"),
        Cmd::Status { watch: true, interval } => {
            let every = top::interval(interval)?;
            let look = || async {
                let s = admin.status().await?;
                match args.json {
                    true => Ok(serde_json::to_string(&s)? + "\n"),
                    false => Ok(status_text(&s, &cfg.mds)),
                }
            };
            top::watch(every, args.json, look).await?;
        }
        Cmd::Status { watch: false, .. } => {
            let s = admin.status().await?;
            show(args.json, &s, || status_text(&s, &cfg.mds))?;
        }
        Cmd::Top(ref top_args) => top::top(&admin, top_args, args.json).await?,
        Cmd::Osd { cmd: OsdCmd::Ls } => {
            let s = admin.status().await?;
            show(args.json, &s.osds, || table(&OSD_HEADER, &osd_rows(&s.osds)))?;
        }
        Cmd::Shard { cmd } => cmd.run(&admin, args.json).await?,
        Cmd::Mds { cmd } => cmd.run(&admin, args.json).await?,
        Cmd::Session { cmd: SessionCmd::Ls } => {
            let s = admin.status().await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&serde_json::json!({"sessions": s.sessions, "evictions": s.evictions}))?);
            } else {
                print!("{}", session_table(&s.sessions));
                if !s.evictions.is_empty() {
                    print!("\n{}", eviction_table(&s.evictions));
                }
            }
        }
        Cmd::Session { cmd: SessionCmd::Evict { id } } => {
            admin.call(&MdsReq::EvictSession { id }).await.map_err(|e| match e {
                aifs_common::Error::NotFound => anyhow!("no session {id}"),
                e => anyhow!(e),
            })?;
            println!("evicted session {id}");
        }
        Cmd::Df => df(&admin, args.json).await?,
        Cmd::Setstripe { path, size, count, replicas } => setstripe(&admin, args.json, &path, size, count, replicas).await?,
        Cmd::Osd { cmd: OsdCmd::Out { id, .. } } | Cmd::Osd { cmd: OsdCmd::In { id } } => {
            let (out, watch) = match args.cmd {
                Cmd::Osd { cmd: OsdCmd::Out { watch, .. } } => (true, watch),
                _ => (false, false),
            };
            match admin.call(&MdsReq::OsdOut { id: OsdId(id), out }).await {
                Ok(MdsResp::Done) if args.json => println!("{}", serde_json::json!({"osd": id, "out": out})),
                Ok(MdsResp::Done) => println!("osd.{id} {}", if out { "out: its replicas move to the other OSDs" } else { "in" }),
                Err(aifs_common::Error::NotFound) => bail!("there is no OSD {id} (`mdsctl osd ls` lists them)"),
                Err(e) => return Err(e.into()),
                Ok(_) => bail!("unexpected reply to OsdOut"),
            }
            if watch {
                repair::RepairCmd::Status { watch: true }.run(&admin, args.json).await?;
            }
        }
        Cmd::Fsck { repair } => fsck(&admin, args.json, repair).await?,
        Cmd::Degraded { cmd } => cmd.run(&admin, args.json).await?,
        Cmd::Repair { cmd } => cmd.run(&admin, args.json).await?,
        Cmd::Leases { path } => leases(&admin, args.json, &path).await?,
        Cmd::Getstripe { path } => getstripe(&admin, args.json, &path).await?,
    }
    Ok(())
}

/// `mdsctl df`: capacity and use per OSD and in total.
async fn df(admin: &Admin, json: bool) -> anyhow::Result<()> {
    let s = admin.status().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"total": s.statfs, "osds": s.osds}))?);
        return Ok(());
    }
    let mut rows: Vec<Vec<String>> = s
        .osds
        .iter()
        .map(|o| {
            vec![
                o.id.to_string(),
                human(o.capacity),
                human(o.used),
                human(o.capacity.saturating_sub(o.used)),
                use_pct(o.used, o.capacity),
            ]
        })
        .collect();
    let t = &s.statfs;
    rows.push(vec![
        "total".into(),
        human(t.total_bytes),
        human(t.used_bytes),
        human(t.avail_bytes),
        use_pct(t.used_bytes, t.total_bytes),
    ]);
    print!("{}", table(&["OSD", "SIZE", "USED", "AVAIL", "USE%"], &rows));
    Ok(())
}

/// `mdsctl setstripe`: a directory's default layout, or an empty file's.
async fn setstripe(admin: &Admin, json: bool, path: &std::path::Path, size: Option<String>, count: Option<u32>, replicas: Option<u32>) -> anyhow::Result<()> {
    let (p, attr) = admin.resolve(path).await?;
    let current = match admin.call(&MdsReq::GetStripe { ino: attr.ino }).await? {
        MdsResp::Stripe { policy, .. } => policy.unwrap_or_default(),
        _ => bail!("unexpected reply to GetStripe"),
    };
    let mut policy = current;
    if let Some(s) = size {
        policy.stripe_size = u32::try_from(parse_size(&s)?).map_err(|_| anyhow!("stripe size too large"))?;
    }
    if let Some(c) = count {
        policy.stripe_count = c;
    }
    if let Some(r) = replicas {
        policy.replicas = r;
    }
    admin.call(&MdsReq::SetStripe { ino: attr.ino, policy }).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"path": p, "layout": policy}))?);
    } else {
        println!(
            "{p}: stripe_size {} stripe_count {} replicas {}",
            policy.stripe_size, policy.stripe_count, policy.replicas
        );
    }
    Ok(())
}

/// `mdsctl fsck`: started on the MDS and followed to its end; exits 1 or 4 as fsck(8) does when it found problems.
async fn fsck(admin: &Admin, json: bool, repair: bool) -> anyhow::Result<()> {
    let MdsResp::Fsck(mut r) = admin.call(&MdsReq::Fsck { repair }).await? else {
        bail!("unexpected reply to Fsck");
    };
    let mut shown = progress::Progress::new("fsck", "files");
    while r.running {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let MdsResp::Fsck(now) = admin.call(&MdsReq::FsckStatus).await? else {
            bail!("unexpected reply to FsckStatus");
        };
        r = now;
        if !json {
            let detail = || format!("{} replicas verified; {} missing, {} corrupt, {} orphans", r.replicas_verified, r.missing, r.corrupt, r.orphans);
            shown.show(r.files_done, r.files, detail);
        }
    }
    shown.done();
    if let Some(e) = &r.error {
        bail!("fsck stopped: {e}");
    }
    let problems = r.missing + r.corrupt + r.orphans;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "fsck: {} files checked ({} open, left out), {} replicas verified",
            r.files_done, r.files_skipped, r.replicas_verified
        );
        if !r.osds_skipped.is_empty() {
            println!("  OSDs down, not checked: {}", r.osds_skipped.iter().map(|o| o.to_string()).collect::<Vec<_>>().join(", "));
        }
        println!("  missing replicas: {}   corrupt replicas: {}   orphan objects: {}", r.missing, r.corrupt, r.orphans);
        if r.repair {
            println!("  fixed: {} (replicas handed to repair: see mdsctl status)", r.fixed);
        }
        if !r.findings.is_empty() {
            println!();
            let rows: Vec<Vec<String>> = r
                .findings
                .iter()
                .map(|f| vec![format!("{:?}", f.kind).to_lowercase(), ObjectId { ino: InodeId(f.ino), index: f.index }.to_string(), f.osd.to_string()])
                .collect();
            print!("{}", table(&["FINDING", "OBJECT", "OSD"], &rows));
        }
    }
    if problems > 0 {
        std::process::exit(if r.repair && r.fixed == problems { 1 } else { 4 });
    }
    Ok(())
}

/// `mdsctl leases`: which session holds which lease on a path.
async fn leases(admin: &Admin, json: bool, path: &std::path::Path) -> anyhow::Result<()> {
    let (p, attr) = admin.resolve(path).await?;
    let leases = match admin.call(&MdsReq::Leases { ino: attr.ino }).await? {
        MdsResp::Leases(l) => l,
        _ => bail!("unexpected reply to Leases"),
    };
    if json {
        let v = serde_json::json!({"path": p, "ino": format!("{:#x}", attr.ino), "leases": leases});
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("{p} (inode {:#x})", attr.ino);
    let rows: Vec<Vec<String>> = leases
        .iter()
        .map(|l| {
            let mode = match l.mode {
                LeaseMode::None => "none",
                LeaseMode::Read => "read",
                LeaseMode::Write => "write",
                LeaseMode::SharedWrite => "shared-write",
            };
            vec![l.session.to_string(), l.name.clone(), mode.to_string(), if l.recalled { "recalling" } else { "" }.to_string()]
        })
        .collect();
    print!("{}", table(&["SESSION", "NAME", "LEASE", "STATE"], &rows));
    Ok(())
}

/// `mdsctl getstripe`: a path's layout, and a file's objects with their sizes on the OSDs.
async fn getstripe(admin: &Admin, json: bool, path: &std::path::Path) -> anyhow::Result<()> {
    let (p, attr) = admin.resolve(path).await?;
    let (policy, attr) = match admin.call(&MdsReq::GetStripe { ino: attr.ino }).await? {
        MdsResp::Stripe { policy, attr } => (policy, attr),
        _ => bail!("unexpected reply to GetStripe"),
    };
    let osds = match admin.call(&MdsReq::OsdMap).await? {
        MdsResp::OsdMap { osds, .. } => osds,
        _ => bail!("unexpected reply to OsdMap"),
    };
    let mut objects = Vec::new();
    if let Some(l) = &attr.layout {
        for k in 0..l.stripe_count {
            for (r, osd) in l.object_osds(k).iter().enumerate() {
                let obj = ObjectId { ino: attr.ino, index: k };
                let info = osds.iter().find(|o| o.id == *osd);
                let size = match info.and_then(|o| o.addr.parse::<SocketAddr>().ok()) {
                    Some(addr) => {
                        let c = RpcClient::new(admin.endpoint.clone(), addr, Role::Osd);
                        match c.call::<_, OsdResp>(&OsdCall::from(OsdReq::Stat { obj }), &[]).await {
                            Ok((OsdResp::Stat { exists: true, size }, _)) => Some(size),
                            Ok((OsdResp::Stat { exists: false, .. }, _)) => None,
                            _ => None,
                        }
                    }
                    None => None,
                };
                objects.push((k, r, osd.0, obj.to_string(), size));
            }
        }
    }
    if json {
        let objs: Vec<_> = objects
            .iter()
            .map(|(k, r, o, name, size)| serde_json::json!({"index": k, "replica": r, "osd": o, "object": name, "size": size}))
            .collect();
        let v = serde_json::json!({
            "path": p, "ino": format!("{:#x}", attr.ino), "size": attr.size,
            "layout": policy, "objects": objs,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("{p}");
    println!("  inode:        {:#x} (shard {})", attr.ino, attr.ino.shard());
    if let Some(pol) = policy {
        let what = if attr.layout.is_some() { "" } else { " (default for new files)" };
        println!("  stripe_size:  {}{what}", pol.stripe_size);
        println!("  stripe_count: {}", pol.stripe_count);
        println!("  replicas:     {}", pol.replicas);
    }
    if attr.layout.is_some() {
        println!("  size:         {} ({})\n", attr.size, human(attr.size));
        let rows: Vec<Vec<String>> = objects
            .iter()
            .map(|(k, r, o, name, size)| {
                vec![k.to_string(), r.to_string(), format!("osd.{o}"), name.clone(), size.map(|s| s.to_string()).unwrap_or_else(|| "-".into())]
            })
            .collect();
        print!("{}", table(&["OBJ", "REPLICA", "OSD", "OBJECT", "BYTES"], &rows));
    }
    Ok(())
}
