//! `aifs-mount`: mount aifs through FUSE.
use aifs_client::fuse::AifsFuse;
use aifs_client::{ClientConfig, ClientFs};
use anyhow::Context;
use clap::Parser;
use fuser::{Config, MountOption, SessionACL};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "aifs-mount", version, about = "Mount an aifs file system through FUSE")]
struct Args {
    /// TOML config file (see README, "Configuration").
    #[arg(long, short)]
    config: PathBuf,
    /// Where to mount.
    mountpoint: PathBuf,
    /// Override the MDS address (several, comma-separated, for a
    /// replicated MDS).
    #[arg(long)]
    mds: Option<aifs_common::config::MdsAddrs>,
    /// Override the session name.
    #[arg(long)]
    name: Option<String>,
    /// Override the number of FUSE threads.
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut cfg: ClientConfig = aifs_common::config::load(&args.config)?;
    aifs_common::logging::init_with(cfg.log.as_deref(), cfg.log_format)?;
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
    fcfg.uring_depth = cfg.fuse_uring_depth;
    // Resolved before mounting: after it, a lookup of the mount point
    // would wait on the FUSE session.
    let mountpoint = std::fs::canonicalize(&args.mountpoint).with_context(|| format!("resolving {}", args.mountpoint.display()))?;
    let fuse = AifsFuse::new(fs, rt.handle().clone());
    let kernel = fuse.kernel_view();
    let mut session = fuser::Session::new(fuse, &args.mountpoint, &fcfg)
        .with_context(|| format!("mounting at {}", args.mountpoint.display()))?;
    kernel.set_notifier(session.notifier());
    let mut unmounter = session.unmount_callable();
    tracing::info!(mountpoint = %args.mountpoint.display(), mds = %cfg.mds, "mounted");
    if cfg.kernel_readahead_kb > 0 {
        if let Err(e) = set_kernel_readahead(&mountpoint, cfg.kernel_readahead_kb) {
            tracing::info!(error = %e, "kernel read-ahead left as it was");
        }
    }
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

/// Set the kernel's read-ahead (KiB) of the FUSE mount at `mountpoint`
/// (resolved), through its backing device's sysfs entry (root only). The
/// device is found in the mount table, not by `stat`, which would wait on
/// the FUSE session this thread has not started yet.
fn set_kernel_readahead(mountpoint: &std::path::Path, kb: u32) -> anyhow::Result<()> {
    // The last mount there is the one on top.
    let dev = aifs_common::mounts::mounts()
        .into_iter()
        .rev()
        .find(|m| m.point == mountpoint)
        .map(|m| m.dev)
        .with_context(|| format!("{} is not in /proc/self/mountinfo", mountpoint.display()))?;
    let knob = format!("/sys/class/bdi/{dev}/read_ahead_kb");
    std::fs::write(&knob, kb.to_string()).with_context(|| format!("writing {knob}"))?;
    tracing::debug!(%knob, kb, "kernel read-ahead set");
    Ok(())
}
