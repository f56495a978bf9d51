//! Client side of `mdsctl`: admin config, path resolution and output.
use aifs_common::config::{TlsConfig, TransportConfig};
use aifs_common::ids::InodeId;
use aifs_common::proto::mds::{Attr, ClusterStatus, MdsCall, MdsReq, MdsResp};
use aifs_common::rpc::{self, Identity, RpcClient};
use aifs_common::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Component, Path, PathBuf};

#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// The MDS: one address, or the members of a replicated MDS.
    pub mds: aifs_common::config::MdsAddrs,
    pub tls: TlsConfig,
    #[serde(default)]
    pub transport: TransportConfig,
}

pub struct Admin {
    pub mds: RpcClient,
    pub endpoint: quinn::Endpoint,
}

impl Admin {
    pub fn connect(cfg: &AdminConfig) -> Result<Admin> {
        let id = Identity::load(&cfg.tls)?;
        let endpoint = rpc::client_endpoint(&id, &cfg.transport)?;
        Ok(Admin { mds: RpcClient::of_members(endpoint.clone(), &cfg.mds, &id, &cfg.transport)?, endpoint })
    }

    pub async fn call(&self, req: &MdsReq) -> Result<MdsResp> {
        Ok(rpc::leader::call_leader(&self.mds, &MdsCall::from(req.clone())).await?.into_result()?.0)
    }

    /// The cluster's status, as the leader answers it.
    pub async fn status(&self) -> Result<ClusterStatus> {
        match self.call(&MdsReq::Status).await? {
            MdsResp::Status(s) => Ok(s),
            _ => Err(Error::Protocol("unexpected reply to Status".into())),
        }
    }

    /// Resolve a path inside the file system ("/ckpt/step1", or a path
    /// under a local aifs mount point) to its attributes; an error names
    /// the path, and says so when it is a local one outside any mount.
    pub async fn resolve(&self, path: &Path) -> anyhow::Result<(String, Attr)> {
        match self.resolve_in(path).await {
            Err(Error::NotFound) if !on_a_mount(path) && path.exists() => Err(anyhow::anyhow!(
                "{} is not on an aifs mount: name a path under one, or one from the file system's root (such as /ckpt/step1)",
                path.display()
            )),
            Err(Error::NotFound) => Err(anyhow::anyhow!("{}: no such file or directory in aifs", path.display())),
            Err(Error::NotDir) => Err(anyhow::anyhow!("{}: a component of the path is not a directory", path.display())),
            r => r.map_err(|e| anyhow::anyhow!("{}: {e}", path.display())),
        }
    }

    async fn resolve_in(&self, path: &Path) -> Result<(String, Attr)> {
        let rel = fs_path(path);
        let mut attr = match self.call(&MdsReq::GetAttr { ino: InodeId::ROOT }).await? {
            MdsResp::Attr(a) => a,
            _ => return Err(Error::Protocol("unexpected reply".into())),
        };
        for c in rel.components() {
            let Component::Normal(name) = c else { continue };
            let name = name.to_str().ok_or_else(|| Error::InvalidArgument("path is not UTF-8".into()))?;
            attr = match self.call(&MdsReq::Lookup { parent: attr.ino, name: name.to_string() }).await? {
                // No lease: an inode of a shard led by another process
                // than its directory's.
                MdsResp::Attr(a) | MdsResp::AttrNoLease(a) => a,
                _ => return Err(Error::Protocol("unexpected reply".into())),
            };
        }
        Ok((format!("/{}", rel.display()), attr))
    }
}

/// Mount points of aifs on this machine.
fn aifs_mounts() -> Vec<PathBuf> {
    aifs_common::mounts::mounts()
        .into_iter()
        .filter(|m| m.fstype == "fuse.aifs" || (m.fstype == "fuse" && m.source == "aifs"))
        .map(|m| m.point)
        .collect()
}

/// `path`, absolute (relative ones from the working directory).
fn absolute(path: &Path) -> PathBuf {
    match path.is_absolute() {
        true => path.to_path_buf(),
        false => std::env::current_dir().map(|d| d.join(path)).unwrap_or_else(|_| path.to_path_buf()),
    }
}

/// The aifs mount point `abs` lies under, the deepest if several.
fn mount_of(abs: &Path) -> Option<PathBuf> {
    let mut best: Option<PathBuf> = None;
    for m in aifs_mounts() {
        if abs.starts_with(&m) && best.as_ref().is_none_or(|b| m.as_os_str().len() > b.as_os_str().len()) {
            best = Some(m);
        }
    }
    best
}

/// Does `path` lie under a local aifs mount point?
pub fn on_a_mount(path: &Path) -> bool {
    mount_of(&absolute(path)).is_some()
}

/// A path relative to the file system root: strips a local mount point
/// prefix when the path lies under one.
pub fn fs_path(path: &Path) -> PathBuf {
    let abs = absolute(path);
    let p = match mount_of(&abs) {
        Some(m) => abs.strip_prefix(&m).map(|p| p.to_path_buf()).unwrap_or_default(),
        None => path.strip_prefix("/").map(|p| p.to_path_buf()).unwrap_or_else(|_| path.to_path_buf()),
    };
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// Bytes as a person reads them: 1.5 GiB.
pub fn human(n: u64) -> String {
    const U: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

/// Share of `total` in use, as "12.3%" (0% of nothing).
pub fn use_pct(used: u64, total: u64) -> String {
    let pct = if total > 0 { used as f64 * 100.0 / total as f64 } else { 0.0 };
    format!("{pct:.1}%")
}

/// Parse "1M", "64k", "4MiB", "1048576".
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| Error::InvalidArgument(format!("bad size {s:?}")))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(Error::InvalidArgument(format!("bad size unit {other:?}"))),
    };
    n.checked_mul(mult).ok_or_else(|| Error::InvalidArgument(format!("size {s:?} too large")))
}

/// A plain-text table with aligned columns.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < w.len() {
                w[i] = w[i].max(c.len());
            }
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{:<width$}  ", c, width = w[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(|s| s.as_str()).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!(parse_size("1M").unwrap(), 1 << 20);
        assert_eq!(parse_size("64k").unwrap(), 64 << 10);
        assert_eq!(parse_size("4MiB").unwrap(), 4 << 20);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("x").is_err());
        assert!(parse_size("1T").is_err());
        assert_eq!(human(1536 << 20), "1.5 GiB");
        assert_eq!(human(10), "10 B");
    }

    #[test]
    fn paths_are_relative_to_the_fs_root() {
        assert_eq!(fs_path(Path::new("/a/b/../c")), PathBuf::from("a/c"));
        assert_eq!(fs_path(Path::new("/")), PathBuf::new());
    }
}
