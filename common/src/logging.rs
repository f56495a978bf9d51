//! Logging for every binary: tracing-subscriber to stderr, filtered by
//! `RUST_LOG`, else by the config's `log` (the same syntax: `info`,
//! `info,aifs_mds=debug`), else `info`. Coloured only on a terminal, so
//! that a log file or journal holds no escape codes; with
//! `log_format = "json"` in a daemon's config, one JSON object a line for
//! log shippers.
use serde::{Deserialize, Serialize};
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// How a daemon's log lines are written (`log_format` in its config).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Lines for people.
    #[default]
    Text,
    /// One JSON object a line: time, level, target, message and fields.
    Json,
}

impl LogFormat {
    pub fn is_text(&self) -> bool {
        *self == LogFormat::Text
    }
}

/// Logging for a command-line tool: text, the filter from `RUST_LOG`.
pub fn init() {
    // With no filter from a config, only `RUST_LOG` can be wrong; a wrong
    // one falls back to `info` rather than stopping a tool.
    let _ = init_with(None, LogFormat::Text);
}

/// Logging for a daemon, as its config says: `filter` in `RUST_LOG`'s
/// syntax (which, when set, wins), `format`. A filter that does not parse
/// is an error that names it.
pub fn init_with(filter: Option<&str>, format: LogFormat) -> crate::Result<()> {
    raise_fd_limit();
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.trim().is_empty() => EnvFilter::try_new(&env).unwrap_or_else(|_| EnvFilter::new("info")),
        _ => match filter {
            Some(f) => EnvFilter::try_new(f).map_err(|e| crate::Error::InvalidArgument(format!("log filter {f:?}: {e}")))?,
            None => EnvFilter::new("info"),
        },
    };
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => fmt.with_ansi(std::io::stderr().is_terminal()).try_init(),
        LogFormat::Json => fmt.json().with_ansi(false).try_init(),
    };
    Ok(())
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
