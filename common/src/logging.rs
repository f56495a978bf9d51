//! Logging for every binary: tracing-subscriber, filtered by `RUST_LOG`
//! (default `info`), to stderr.
use tracing_subscriber::EnvFilter;

pub fn init() {
    raise_fd_limit();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Raise the soft limit on open files to the hard limit: an OSD keeps two
/// descriptors per cached object, a client one socket per server.
pub fn raise_fd_limit() {
    let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return;
    }
    if rl.rlim_cur < rl.rlim_max {
        rl.rlim_cur = rl.rlim_max;
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) } != 0 {
            tracing::debug!("could not raise the open-file limit");
        }
    }
}
