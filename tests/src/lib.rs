//! Test harness: clusters in-process (`TestCluster`, loopback QUIC with a
//! throwaway CA) and as real processes with real FUSE mounts
//! (`ProcCluster`, `Mount`). Everything started is stopped on drop, also
//! when a test fails.
pub mod pattern;
pub mod proc;
pub mod relay;

use aifs_common::certs::{self, Role};
use aifs_common::config::{TlsConfig, TransportConfig};
use aifs_common::proto::mds::{MdsCall, MdsReply, MdsReq, MdsResp};
use aifs_common::proto::osd::{OsdCall, OsdReq, OsdResp};
use aifs_common::rpc::{self, Identity, RpcClient};
use aifs_common::{Error, LayoutPolicy, Result};
use aifs_mds::{MdsConfig, MdsHandle};
use aifs_osd::{OsdConfig, OsdHandle};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub fn tls(dir: &Path, role: Role) -> TlsConfig {
    TlsConfig::in_dir(dir, role.name())
}

/// An MDS and OSDs running inside the test process.
pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub mds: MdsHandle,
    pub osds: Vec<OsdHandle>,
}

impl TestCluster {
    pub async fn start(osds: u32, shards: u32) -> Result<TestCluster> {
        Self::start_with(osds, shards, |_| {}).await
    }

    /// `start`, with the MDS's settings changed by `tune` first.
    pub async fn start_with(osds: u32, shards: u32, tune: impl FnOnce(&mut MdsConfig)) -> Result<TestCluster> {
        Self::start_limited(osds, shards, tune, aifs_osd::OsdLimits::default()).await
    }

    /// `start_with`, the OSDs held to `limits`.
    pub async fn start_limited(osds: u32, shards: u32, tune: impl FnOnce(&mut MdsConfig), limits: aifs_osd::OsdLimits) -> Result<TestCluster> {
        let dir = tempfile::tempdir()?;
        certs::init_cluster(dir.path(), &dir.path().join("ca"), osds, false)?;
        let mut mcfg = MdsConfig {
            id: 1,
            members: Vec::new(),
            join: false,
            spread: false,
            group_size: 0,
            listen: "127.0.0.1:0".parse().map_err(|_| Error::InvalidArgument("addr".into()))?,
            metrics_listen: None,
            data_dir: dir.path().join("mds"),
            shards,
            default_layout: LayoutPolicy { stripe_size: 1 << 20, stripe_count: 3, replicas: 1 },
            osd_timeout_ms: 3_000,
            session_timeout_ms: 10_000,
            cap_term_ms: 60_000,
            repair_mb_per_s: 200,
            anon_uid: aifs_common::perm::ANON_ID,
            anon_gid: aifs_common::perm::ANON_ID,
            session_limits: Default::default(),
            tls: tls(dir.path(), Role::Mds),
            transport: TransportConfig::default(),
            raft: Default::default(),
            log: None,
            log_format: Default::default(),
        };
        tune(&mut mcfg);
        let mds = aifs_mds::start(mcfg).await?;
        let mut handles = Vec::new();
        for i in 1..=osds {
            let ocfg = OsdConfig {
                id: i,
                listen: "127.0.0.1:0".parse().map_err(|_| Error::InvalidArgument("addr".into()))?,
                metrics_listen: None,
                advertise: None,
                mds: aifs_common::config::MdsAddrs::one(mds.addr),
                data_dir: dir.path().join(format!("osd{i}")),
                heartbeat_ms: 100,
                limits: limits.clone(),
                tls: TlsConfig::in_dir(dir.path(), &format!("osd{i}")),
                transport: TransportConfig::default(),
                log: None,
                log_format: Default::default(),
            };
            handles.push(aifs_osd::start(ocfg).await?);
        }
        let c = TestCluster { dir, mds, osds: handles };
        c.wait_osds_up(osds as usize).await?;
        Ok(c)
    }

    /// The MDS's namespace (this in-process MDS is its only member, and
    /// serves from its start).
    pub fn ns(&self) -> std::sync::Arc<aifs_mds::namespace::Namespace> {
        self.mds.ns().expect("a one-member MDS serves from its start")
    }

    pub async fn wait_osds_up(&self, n: usize) -> Result<()> {
        for _ in 0..100 {
            if self.ns().cluster.osds.up().len() >= n {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(Error::Unavailable(format!("{n} OSDs did not come up")))
    }

    /// An RPC client of each OSD holding `role`'s certificate.
    pub fn osd_clients(&self, role: Role) -> Result<Vec<RpcClient>> {
        let ep = rpc::client_endpoint(&Identity::load(&tls(self.dir.path(), role))?, &TransportConfig::default())?;
        Ok(self.osds.iter().map(|o| RpcClient::new(ep.clone(), o.addr, Role::Osd)).collect())
    }

    /// An MDS client under a certificate of its own, issued for node
    /// `name` by the cluster's CA.
    pub fn mds_client_of_node(&self, role: Role, name: &str) -> Result<RpcClient> {
        self.mds_client_as(certs::Node::new(role, name, None)?)
    }

    /// An MDS client under a certificate issued for `node`.
    pub fn mds_client_as(&self, node: certs::Node) -> Result<RpcClient> {
        let nodes = self.dir.path().join("nodes");
        let name = node.name.clone();
        self.ca()?.issue(&node, &nodes, certs::DEFAULT_DAYS)?;
        let t = aifs_common::config::TlsConfig { ca: self.dir.path().join("ca.pem"), cert: nodes.join(format!("{name}.pem")), key: nodes.join(format!("{name}.key")) };
        let ep = rpc::client_endpoint(&Identity::load(&t)?, &TransportConfig::default())?;
        Ok(RpcClient::new(ep, self.mds.addr, Role::Mds))
    }

    /// The cluster's CA (in `ca/` of its directory).
    pub fn ca(&self) -> Result<certs::Ca> {
        certs::Ca::open(&self.dir.path().join("ca"))
    }

    /// An RPC client of the MDS holding `role`'s certificate.
    pub fn mds_client(&self, role: Role) -> Result<RpcClient> {
        let id = Identity::load(&tls(self.dir.path(), role))?;
        let ep = rpc::client_endpoint(&id, &TransportConfig::default())?;
        Ok(RpcClient::new(ep, self.mds.addr, Role::Mds))
    }
}

/// Bytes the OSDs behind `osds` have read for their clients since they
/// started (`OsdReq::Stats`): a load served from a client's page cache
/// adds nothing.
pub async fn osd_read_bytes(osds: &[RpcClient]) -> Result<u64> {
    let mut sum = 0;
    for o in osds {
        match o.call::<_, OsdResp>(&OsdCall::from(OsdReq::Stats), &[]).await?.0 {
            OsdResp::Stats(s) => sum += s.read_bytes,
            other => return Err(Error::Protocol(format!("unexpected reply to Stats: {other:?}"))),
        }
    }
    Ok(sum)
}

/// Call the MDS (as root); an error reply becomes `Err`.
pub async fn mds_call(c: &RpcClient, req: MdsReq) -> Result<MdsResp> {
    mds_call_as(c, req, aifs_common::perm::Cred::root()).await
}

/// Call the MDS (as root) at whichever member leads it, as `mdsctl`
/// does (`rpc::leader::call_leader`); an error reply becomes `Err`.
pub async fn mds_call_leader(c: &RpcClient, req: MdsReq) -> Result<MdsResp> {
    let call = MdsCall::new(req, aifs_common::perm::Cred::root());
    Ok(rpc::leader::call_leader(c, &call).await?.into_result()?.0)
}

/// How long a leader change may take to show in a test.
pub const ELECTION: Duration = Duration::from_secs(30);

/// Call the MDS for `cred`; an error reply becomes `Err`.
pub async fn mds_call_as(c: &RpcClient, req: MdsReq, cred: aifs_common::perm::Cred) -> Result<MdsResp> {
    Ok(c.call::<_, MdsReply>(&MdsCall::new(req, cred), &[]).await?.0.into_result()?.0)
}

/// Where the workspace's built binaries are: next to the test executable's
/// `deps/` folder.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let mut d = exe.parent().map(|p| p.to_path_buf()).unwrap_or_default();
    if d.ends_with("deps") {
        d.pop();
    }
    d
}

pub fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a: SocketAddr| a.port())
        .unwrap_or(0)
}

/// `flock(2)` on an open file.
pub fn flock(f: &std::fs::File, op: i32) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock(2) on a descriptor the file keeps open.
    if unsafe { libc::flock(f.as_raw_fd(), op) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `fallocate(2)` of `[off, off + len)` on an open file.
pub fn fallocate(f: &std::fs::File, mode: i32, off: u64, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let (Ok(o), Ok(l)) = (libc::off_t::try_from(off), libc::off_t::try_from(len)) else {
        return Err(std::io::Error::from_raw_os_error(libc::EFBIG));
    };
    // SAFETY: fallocate(2) on a descriptor the file keeps open; no memory
    // is passed.
    if unsafe { libc::fallocate(f.as_raw_fd(), mode, o, l) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
