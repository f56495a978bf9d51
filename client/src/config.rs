use aifs_common::config::{TlsConfig, TransportConfig};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Log filter, in `RUST_LOG`'s syntax (`info,aifs_mds=debug`);
    /// `RUST_LOG`, when set, wins. Default: info.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// `text` (default) or `json`: one object a line, for log shippers.
    #[serde(default, skip_serializing_if = "aifs_common::logging::LogFormat::is_text")]
    pub log_format: aifs_common::logging::LogFormat,
    /// The MDS to talk to: one address, or a list of the members of a
    /// replicated MDS (calls go to whichever leads).
    pub mds: aifs_common::config::MdsAddrs,
    /// Where Prometheus metrics are served over HTTP (`127.0.0.1:9600`);
    /// none by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
    /// Name this mount gives its session (shown by `mdsctl status`).
    #[serde(default = "default_name")]
    pub name: String,
    /// FUSE worker threads reading requests from the kernel.
    #[serde(default = "default_fuse_threads")]
    pub fuse_threads: usize,
    /// Serve FUSE over io_uring where the kernel offers it (Linux 6.14 and
    /// later, with `fuse.enable_uring=1`): one queue per CPU, with this
    /// many requests in flight each, each with a payload buffer of 1 MiB
    /// (touched only as large requests use it; entries are reused most
    /// recent first). A request is answered on its caller's CPU. 0:
    /// always `/dev/fuse`.
    #[serde(default = "default_fuse_uring_depth")]
    pub fuse_uring_depth: usize,
    /// Cache metadata under the MDS's leases (and let the kernel cache it
    /// for what is left of them). Off: every lookup, stat and listing asks
    /// the MDS, a baseline for measuring what leases save.
    #[serde(default = "default_true")]
    pub lease_cache: bool,
    /// Take directories' write leases and answer creates and unlinks there
    /// without waiting for the MDS, which gets them in batches within a
    /// round trip (durable at the latest at the next fsync of the file or
    /// the directory). Off: every create and unlink is durable before it
    /// returns, at the MDS's pace.
    #[serde(default = "default_true")]
    pub dir_leases: bool,
    /// Stripe units of one file in flight to the OSDs at once.
    #[serde(default = "default_write_window")]
    pub write_window: usize,
    /// Memory for write-behind data across all files, in MiB.
    #[serde(default = "default_write_budget_mb")]
    pub write_budget_mb: usize,
    /// Partially written stripe units a file may hold before the oldest is
    /// shipped.
    #[serde(default = "default_max_buffered_units")]
    pub max_buffered_units: usize,
    /// Most stripe units read ahead of a sequential reader.
    #[serde(default = "default_readahead_units")]
    pub readahead_units: usize,
    /// The kernel's read-ahead for the mount, in KiB, set after mounting
    /// (its default for FUSE is 128, whatever the file system asks for;
    /// 1024 loads 5-15% faster here). 0 leaves the kernel's value.
    #[serde(default = "default_kernel_readahead_kb")]
    pub kernel_readahead_kb: u32,
    /// How long a metadata request is retried while the MDS cannot be
    /// reached (restarting, say) before it fails with the error.
    #[serde(default = "default_mds_retry_secs")]
    pub mds_retry_secs: u64,
    pub tls: TlsConfig,
    #[serde(default)]
    pub transport: TransportConfig,
}

fn default_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname").map(|s| s.trim().to_string()).unwrap_or_default();
    if host.is_empty() {
        "client".into()
    } else {
        host
    }
}
fn default_fuse_threads() -> usize {
    4
}
fn default_fuse_uring_depth() -> usize {
    16
}
fn default_true() -> bool {
    true
}
fn default_write_window() -> usize {
    16
}
fn default_write_budget_mb() -> usize {
    512
}
fn default_max_buffered_units() -> usize {
    64
}
fn default_mds_retry_secs() -> u64 {
    180
}
fn default_readahead_units() -> usize {
    12
}
fn default_kernel_readahead_kb() -> u32 {
    1024
}
