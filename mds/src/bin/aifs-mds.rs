//! `aifs-mds`: the metadata server.
use aifs_mds::MdsConfig;
use anyhow::Context;
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "aifs-mds", version, about = "aifs metadata server: namespace shards, layouts, OSD map and sessions")]
struct Args {
    /// TOML config file (see README, "Configuration").
    #[arg(long, short)]
    config: PathBuf,
    /// Override the listen address.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Override the metadata directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Override the number of shards (only when creating a new file system).
    #[arg(long)]
    shards: Option<u32>,
    /// Override this MDS's member id.
    #[arg(long)]
    id: Option<u64>,
    /// Join a replicated MDS that exists already (as a new member, or one
    /// whose data directory was lost): start with empty groups and wait for
    /// `mdsctl mds add ADDR` on the leader.
    #[arg(long)]
    join: bool,
    /// Serve Prometheus metrics over HTTP at this address (overrides the
    /// config's `metrics_listen`).
    #[arg(long)]
    metrics_listen: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut cfg: MdsConfig = aifs_common::config::load(&args.config)?;
    aifs_common::logging::init_with(cfg.log.as_deref(), cfg.log_format)?;
    if let Some(v) = args.listen {
        cfg.listen = v;
    }
    if let Some(v) = args.data_dir {
        cfg.data_dir = v;
    }
    if let Some(v) = args.shards {
        cfg.shards = v;
    }
    if let Some(v) = args.id {
        cfg.id = v;
    }
    cfg.join |= args.join;
    if let Some(v) = args.metrics_listen {
        cfg.metrics_listen = Some(v);
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let h = aifs_mds::start(cfg).await.context("starting MDS")?;
        aifs_common::shutdown::wait_for_signal().await;
        tracing::info!("shutting down");
        h.shutdown();
        anyhow::Ok(())
    })
}
