//! `aifs-mount`: mount aifs through FUSE.
use aifs_client::fuse::AifsFuse;
use aifs_client::{ClientConfig, ClientFs};
use anyhow::Context;
use clap::Parser;
use fuser::{Config, MountOption, SessionACL};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "aifs-mount", version, about = "Mount an aifs file system through FUSE")]
struct Args {
    /// TOML config file (see README, "Configuration").
    #[arg(long, short)]
    config: PathBuf,
    /// Where to mount.
    mountpoint: PathBuf,
    /// Override the MDS address.
    #[arg(long)]
    mds: Option<SocketAddr>,
    /// Override the session name.
    #[arg(long)]
    name: Option<String>,
    /// Override the number of FUSE threads.
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    aifs_common::logging::init();
    let args = Args::parse();
    let mut cfg: ClientConfig = aifs_common::config::load(&args.config)?;
    if let Some(v) = args.mds {
        cfg.mds = v;
    }
    if let Some(v) = args.name {
        cfg.name = v;
    }
    if let Some(v) = args.threads {
        cfg.fuse_threads = v;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let fs = rt.block_on(ClientFs::connect(&cfg)).context("connecting to the cluster")?;
    let mut fcfg = Config::default();
    fcfg.mount_options = vec![
        MountOption::FSName("aifs".into()),
        MountOption::Subtype("aifs".into()),
        MountOption::DefaultPermissions,
        MountOption::RW,
        MountOption::NoDev,
    ];
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    fcfg.acl = if root { SessionACL::All } else { SessionACL::Owner };
    fcfg.n_threads = Some(cfg.fuse_threads.max(1));
    fcfg.clone_fd = true;
    let fuse = AifsFuse::new(fs, rt.handle().clone());
    let kernel = fuse.kernel_view();
    let mut session = fuser::Session::new(fuse, &args.mountpoint, &fcfg)
        .with_context(|| format!("mounting at {}", args.mountpoint.display()))?;
    kernel.set_notifier(session.notifier());
    let mut unmounter = session.unmount_callable();
    tracing::info!(mountpoint = %args.mountpoint.display(), mds = %cfg.mds, "mounted");
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let runner = std::thread::Builder::new().name("fuse-session".into()).spawn(move || {
        let r = session.run();
        let _ = done_tx.send(());
        r
    })?;
    rt.block_on(async {
        tokio::select! {
            _ = aifs_common::shutdown::wait_for_signal() => {
                tracing::info!("signal received; unmounting");
                if let Err(e) = unmounter.unmount() {
                    tracing::warn!(error = %e, "unmount failed");
                }
            }
            _ = done_rx => {}
        }
    });
    match runner.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "FUSE session ended with an error"),
        Err(_) => anyhow::bail!("FUSE session thread panicked"),
    }
    tracing::info!("unmounted");
    Ok(())
}
