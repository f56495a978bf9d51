//! `aifs-mount`: mount aifs through FUSE.
use aifs_client::fuse::AifsFuse;
use aifs_client::{ClientConfig, ClientFs};
use anyhow::Context;
use clap::Parser;
use fuser::{Config, MountOption, SessionACL};
use std::path::PathBuf;

/// The other ways to mount, for `--help`.
const MOUNT_FORMS: &str = "\
aifs-mount runs in the foreground until the file system is unmounted.
Installed (make install), mount(8) and fstab mount it in the background:
  mount -t fuse.aifs /etc/aifs/client.toml /mnt/ai [-o ro,name=gpu7]
  /etc/fstab:  /etc/aifs/client.toml /mnt/ai fuse.aifs _netdev,allow_other 0 0
  umount /mnt/ai    flushes what is written and ends the client";

#[derive(Parser)]
#[command(name = "aifs-mount", version, about = "Mount an aifs file system through FUSE", after_help = MOUNT_FORMS)]
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
    /// Serve Prometheus metrics over HTTP at this address (overrides the
    /// config's `metrics_listen`).
    #[arg(long)]
    metrics_listen: Option<String>,
    /// Mount options, comma-separated, as mount(8) passes them: `ro`,
    /// `rw`, `allow_other`, `name=NAME`, `threads=N`. Those meant for
    /// mount(8), systemd or the kernel that aifs always applies or that
    /// have no meaning here (`defaults`, `_netdev`, `noauto`, `nofail`,
    /// `x-systemd.*`, `nodev`, `default_permissions`, ...) are accepted;
    /// any other is refused, named.
    #[arg(short = 'o', long = "options", value_delimiter = ',')]
    options: Vec<String>,
}

/// What `-o` sets beyond the config.
#[derive(Default)]
struct Options {
    read_only: bool,
    allow_other: bool,
}

/// Apply mount(8)-style options to `cfg`.
fn mount_options(opts: &[String], cfg: &mut ClientConfig) -> anyhow::Result<Options> {
    // Taken as given: aifs always mounts nodev with the kernel checking
    // permissions; the rest are for mount(8), systemd, or the user's
    // fstab bookkeeping.
    const ACCEPTED: [&str; 15] =
        ["defaults", "_netdev", "auto", "noauto", "nofail", "user", "nouser", "users", "owner", "nodev", "suid", "nosuid", "exec", "noexec", "default_permissions"];
    let mut o = Options::default();
    for opt in opts.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        match opt.split_once('=') {
            Some(("name", v)) => cfg.name = v.to_string(),
            Some(("threads", v)) => cfg.fuse_threads = v.parse().with_context(|| format!("mount option {opt}: not a number"))?,
            Some(("comment", _)) => {}
            _ if opt == "ro" => o.read_only = true,
            _ if opt == "rw" => o.read_only = false,
            _ if opt == "allow_other" => o.allow_other = true,
            _ if opt.starts_with("x-") || ACCEPTED.contains(&opt) => {}
            _ => anyhow::bail!("mount option {opt:?} is not one aifs knows (see aifs-mount --help)"),
        }
    }
    Ok(o)
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
    if let Some(v) = args.metrics_listen {
        cfg.metrics_listen = Some(v);
    }
    let opts = mount_options(&args.options, &mut cfg)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let fs = rt.block_on(ClientFs::connect(&cfg)).context("connecting to the cluster")?;
    // Served until the mount ends.
    let _metrics = match &cfg.metrics_listen {
        Some(listen) => Some(fs.metrics.serve(listen).context("serving metrics")?),
        None => None,
    };
    let mut fcfg = Config::default();
    fcfg.mount_options = vec![
        MountOption::FSName("aifs".into()),
        MountOption::Subtype("aifs".into()),
        MountOption::DefaultPermissions,
        if opts.read_only { MountOption::RO } else { MountOption::RW },
        MountOption::NoDev,
    ];
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    fcfg.acl = if root || opts.allow_other { SessionACL::All } else { SessionACL::Owner };
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
