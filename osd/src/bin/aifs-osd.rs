//! `aifs-osd`: the object storage daemon.
use aifs_osd::OsdConfig;
use anyhow::Context;
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "aifs-osd", version, about = "aifs object storage daemon: stores striped file objects, checksummed, on local disk")]
struct Args {
    /// TOML config file (see README, "Configuration").
    #[arg(long, short)]
    config: PathBuf,
    /// Override the OSD id.
    #[arg(long)]
    id: Option<u32>,
    /// Override the listen address.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Override the MDS address (several, comma-separated, for a
    /// replicated MDS).
    #[arg(long)]
    mds: Option<aifs_common::config::MdsAddrs>,
    /// Override the data directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Serve Prometheus metrics over HTTP at this address (overrides the
    /// config's `metrics_listen`).
    #[arg(long)]
    metrics_listen: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut cfg: OsdConfig = aifs_common::config::load(&args.config)?;
    aifs_common::logging::init_with(cfg.log.as_deref(), cfg.log_format)?;
    if let Some(v) = args.id {
        cfg.id = v;
    }
    if let Some(v) = args.listen {
        cfg.listen = v;
    }
    if let Some(v) = args.mds {
        cfg.mds = v;
    }
    if let Some(v) = args.data_dir {
        cfg.data_dir = v;
    }
    if let Some(v) = args.metrics_listen {
        cfg.metrics_listen = Some(v);
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let h = aifs_osd::start(cfg).await.context("starting OSD")?;
        aifs_common::shutdown::wait_for_signal().await;
        tracing::info!("shutting down");
        h.shutdown();
        anyhow::Ok(())
    })
}
