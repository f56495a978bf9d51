//! A cluster of real processes (`aifs-mds`, `aifs-osd`) configured by
//! `mdsctl init`, and real FUSE mounts by `aifs-mount`. Drop stops every
//! process and unmounts, also when the test panics; a failing test prints
//! the tail of each process's log.
use crate::bin_dir;
use aifs_common::certs::Role;
use aifs_common::config::TransportConfig;
use aifs_common::proto::mds::{MdsCall, MdsReply, MdsReq, MdsResp, OsdState};
use aifs_common::rpc::{self, Identity, RpcClient};
use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod mount;
mod netns;
mod spread;
pub use mount::Mount;
pub use netns::{Frozen, NetNs};
pub use spread::Link;

fn spawn_logged(bin: &str, args: &[&str], log: &Path) -> Result<Child> {
    let mut cmd = Command::new(bin_dir().join(bin));
    cmd.args(args);
    logged(cmd, log).with_context(|| format!("spawning {bin} (build with `cargo build --release --bins` first)"))
}

/// Start `cmd` with its output going to the end of `log` (a process
/// started again adds to what it wrote before).
fn logged(mut cmd: Command, log: &Path) -> Result<Child> {
    let f = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    // (the daemons log at info unless RUST_LOG or their config says else)
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env_remove("RUST_LOG");
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(f.try_clone()?)
        .stderr(f)
        .spawn()?;
    Ok(child)
}

fn stop(child: &mut Child, signal: i32, grace: Duration) {
    // SAFETY: kill(2) on a pid we spawned and have not yet reaped.
    unsafe {
        libc::kill(child.id() as i32, signal);
        // a stopped process acts on the signal only once resumed
        libc::kill(child.id() as i32, libc::SIGCONT);
    }
    let t = Instant::now();
    while t.elapsed() < grace {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `n` consecutive ports free for UDP right now (mdsctl init numbers OSD
/// ports from a base), chosen at random so parallel tests rarely collide,
/// and below the kernel's ephemeral range, so that no endpoint another test
/// opens on port 0 can take one between this check and the bind.
fn ports(n: usize) -> Vec<u16> {
    use rand::RngExt;
    let mut rng = rand::rng();
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse::<u16>().ok()))
        .unwrap_or(32_768);
    let top = ephemeral.max(12_000) - n as u16;
    for _ in 0..200 {
        let base: u16 = rng.random_range(10_000..top);
        let held: Vec<_> = (0..n as u16).map_while(|i| std::net::UdpSocket::bind(("127.0.0.1", base + i)).ok()).collect();
        if held.len() == n {
            return (0..n as u16).map(|i| base + i).collect();
        }
    }
    (0..n).map(|_| crate::free_port()).collect()
}

pub struct ProcCluster {
    pub dir: tempfile::TempDir,
    /// The (first) MDS's address.
    pub mds_addr: SocketAddr,
    /// Every MDS member's address: one, or those of a replicated MDS.
    pub mds_addrs: Vec<SocketAddr>,
    pub n_osds: u32,
    /// The MDS processes, by member (member id = index + 1).
    mds: Vec<Option<Child>>,
    /// What each member starts with beyond its config (a member that
    /// joins: `--join`, and its id, address and directory if it is new).
    mds_args: Vec<Vec<String>>,
    osds: Vec<Option<Child>>,
    /// The MDS listens on every address, not only loopback (for OSDs in
    /// network namespaces of their own).
    mds_any: bool,
    /// Each MDS process in a network namespace of its own, behind a relay
    /// (`start_spread`); stopped after the processes.
    spread: Option<spread::Spread>,
}

impl ProcCluster {
    pub fn start(n_osds: u32) -> Result<ProcCluster> {
        Self::start_opts(1, n_osds, false, &|t| t)
    }

    /// A cluster whose every shard is replicated over `n_mds` MDS
    /// processes (configs `mds1.toml`...).
    pub fn start_replicated(n_mds: usize, n_osds: u32) -> Result<ProcCluster> {
        Self::start_opts(n_mds, n_osds, false, &|t| t)
    }

    /// [`ProcCluster::start_replicated`], with `toml` added to every MDS
    /// config (a table of its own, such as `[raft]`).
    pub fn start_replicated_with(n_mds: usize, n_osds: u32, toml: &str) -> Result<ProcCluster> {
        Self::start_opts(n_mds, n_osds, false, &|t| t + toml)
    }

    /// [`ProcCluster::start_replicated`], each MDS config that `mdsctl
    /// init` wrote changed by `edit`.
    pub fn start_replicated_edited(n_mds: usize, n_osds: u32, edit: &dyn Fn(String) -> String) -> Result<ProcCluster> {
        Self::start_opts(n_mds, n_osds, false, edit)
    }

    /// A cluster of one MDS process whose config `mdsctl init` wrote is
    /// changed by `edit` (to set a value of a table it has).
    pub fn start_edited(n_osds: u32, edit: &dyn Fn(String) -> String) -> Result<ProcCluster> {
        Self::start_opts(1, n_osds, false, edit)
    }

    /// A cluster whose MDS also answers on non-loopback addresses, so that
    /// an OSD can be moved into a network namespace (`isolate_osd`).
    pub fn start_routed(n_osds: u32) -> Result<ProcCluster> {
        Self::start_opts(1, n_osds, true, &|t| t)
    }

    fn start_opts(n_mds: usize, n_osds: u32, mds_any: bool, edit: &dyn Fn(String) -> String) -> Result<ProcCluster> {
        // mdsctl init numbers OSD ports from a base: the run after the
        // MDS's ports.
        let p = ports(n_mds + n_osds as usize);
        let mds_addrs: Vec<SocketAddr> = p[..n_mds].iter().map(|port| SocketAddr::from(([127, 0, 0, 1], *port))).collect();
        let mut c = Self::configure(mds_addrs, p[n_mds], n_osds, mds_any, edit, &[])?;
        c.mds_any = mds_any;
        c.start_or_dump()?;
        Ok(c)
    }

    /// A cluster of one MDS process whose daemons serve Prometheus
    /// metrics (`mdsctl init --metrics-port`): the MDS at the port
    /// returned, OSD i at that port + i.
    pub fn start_with_metrics(n_osds: u32) -> Result<(ProcCluster, u16)> {
        let p = ports(1 + n_osds as usize);
        let metrics = ports(1 + n_osds as usize)[0];
        let mds_addrs = vec![SocketAddr::from(([127, 0, 0, 1], p[0]))];
        let mut c = Self::configure(mds_addrs, p[1], n_osds, false, &|t| t, &["--metrics-port", &metrics.to_string()])?;
        c.start_or_dump()?;
        Ok((c, metrics))
    }

    /// Write the configs of a cluster whose MDS members are known at
    /// `mds_addrs` and whose OSDs listen from port `osd_base` on (`mdsctl
    /// init` with `init_args` besides, then `edit` on each MDS config),
    /// and start nothing. With `network`, the transport is set for a
    /// network rather than loopback.
    fn configure(
        mds_addrs: Vec<SocketAddr>,
        osd_base: u16,
        n_osds: u32,
        network: bool,
        edit: &dyn Fn(String) -> String,
        init_args: &[&str],
    ) -> Result<ProcCluster> {
        let dir = tempfile::Builder::new().prefix("aifs-proc-").tempdir()?;
        let n_mds = mds_addrs.len();
        let mds_addr = mds_addrs[0];
        let listed = aifs_common::config::MdsAddrs(mds_addrs.clone()).to_string();
        let st = Command::new(bin_dir().join("mdsctl"))
            .args(["init", "--dir"])
            .arg(dir.path())
            .arg("--ca-dir")
            .arg(dir.path().join("ca"))
            .args(["--mds", &listed, "--osds", &n_osds.to_string(), "--osd-port", &osd_base.to_string()])
            .args(init_args)
            .stdout(Stdio::null())
            .status()
            .context("running mdsctl init")?;
        if !st.success() {
            bail!("mdsctl init failed");
        }
        if network {
            // Processes on veth links: the network init would have
            // configured for, not loopback's.
            network_transport(dir.path())?;
        }
        std::fs::create_dir_all(dir.path().join("logs"))?;
        let mds = (0..n_mds).map(|_| None).collect();
        let mds_args = vec![Vec::new(); n_mds];
        let osds = (0..n_osds).map(|_| None).collect();
        let c = ProcCluster { dir, mds_addr, mds_addrs, n_osds, mds, mds_args, osds, mds_any: false, spread: None };
        for id in 1..=n_mds as u64 {
            let cfg = c.mds_config(id);
            let text = std::fs::read_to_string(&cfg)?;
            std::fs::write(&cfg, edit(text))?;
        }
        Ok(c)
    }

    /// Start every process, or say why not with the logs printed
    /// (a cluster dropped without a panic would not show them).
    fn start_or_dump(&mut self) -> Result<()> {
        let started = self.start_all();
        if started.is_err() {
            self.dump_logs();
        }
        started
    }

    pub fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }

    /// The transport settings the cluster's processes run with, as
    /// `mdsctl init` (and a routed cluster's rewrite) put in its configs.
    pub fn transport(&self) -> Result<TransportConfig> {
        Ok(aifs_common::config::load::<aifs_mds::admin::AdminConfig>(&self.path("admin.toml"))?.transport)
    }

    /// Start the MDS (again, after `kill9_mds`) on its data and address:
    /// every member of a replicated one.
    pub fn start_mds(&mut self) -> Result<()> {
        for id in 1..=self.mds.len() as u64 {
            self.start_mds_member(id)?;
        }
        Ok(())
    }

    /// The config file of MDS member `id` (a member added later starts
    /// from the first one's, with its own id, address and directory).
    pub fn mds_config(&self, id: u64) -> PathBuf {
        match self.mds_addrs.len() {
            1 => self.path("mds.toml"),
            n if id as usize > n => self.path("mds1.toml"),
            _ => self.path(&format!("mds{id}.toml")),
        }
    }

    /// Start member `id` again, on an empty data directory (it was lost),
    /// to wait for `mdsctl mds add` rather than rejoin as configured.
    pub fn start_mds_member_joining(&mut self, id: u64) -> Result<()> {
        self.mds_args[(id - 1) as usize] = vec!["--join".into()];
        self.start_mds_member(id)
    }

    /// Start member `id` again as its config says (no `--join`).
    pub fn start_mds_member_as_configured(&mut self, id: u64) -> Result<()> {
        self.mds_args[(id - 1) as usize].clear();
        self.start_mds_member(id)
    }

    /// Give a one-process MDS a member list naming itself, id 1 at its
    /// address (the first step of growing it; it takes effect when it
    /// starts again).
    pub fn name_solo_mds(&self) -> Result<()> {
        let cfg = self.mds_config(1);
        let text = std::fs::read_to_string(&cfg)?;
        // a top-level key: before the config's first table
        std::fs::write(&cfg, format!("members = [{{ id = 1, addr = \"{}\" }}]\n{text}", self.mds_addr))?;
        Ok(())
    }

    /// Point `mdsctl` at these MDS addresses (as an operator lists the
    /// processes of a grown MDS in admin.toml).
    pub fn set_admin_mds(&self, addrs: &[SocketAddr]) -> Result<()> {
        let path = self.path("admin.toml");
        let text = std::fs::read_to_string(&path)?;
        let listed: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
        let mut out: Vec<String> = text.lines().filter(|l| !l.starts_with("mds = ")).map(str::to_string).collect();
        out.insert(0, format!("mds = [{}]", listed.join(", ")));
        std::fs::write(&path, out.join("\n") + "\n")?;
        Ok(())
    }

    /// Start a new MDS process, to be added with `mdsctl mds add`: its
    /// member id and address.
    pub fn start_new_mds_member(&mut self) -> Result<(u64, SocketAddr)> {
        let id = self.mds.len() as u64 + 1;
        let addr = SocketAddr::from(([127, 0, 0, 1], crate::free_port()));
        let data = self.path(&format!("data/mds{id}"));
        let args = ["--id", &id.to_string(), "--listen", &addr.to_string(), "--data-dir", data.to_str().unwrap_or_default(), "--join"];
        self.mds.push(None);
        self.mds_args.push(args.iter().map(|a| a.to_string()).collect());
        self.start_mds_member(id)?;
        Ok((id, addr))
    }

    /// Start MDS member `id` (1-based; 1 for an MDS of one process).
    pub fn start_mds_member(&mut self, id: u64) -> Result<()> {
        let cfg = self.mds_config(id);
        let log = self.path(&format!("logs/mds{id}.log"));
        let any = format!("0.0.0.0:{}", self.mds_addr.port());
        let mut args = vec!["--config", cfg.to_str().unwrap_or_default()];
        if self.mds_any {
            args.extend(["--listen", any.as_str()]);
        }
        args.extend(self.mds_args[(id - 1) as usize].iter().map(String::as_str));
        let child = match &self.spread {
            Some(s) => logged(s.mds_command(id, &args)?, &log)?,
            None => spawn_logged("aifs-mds", &args, &log)?,
        };
        self.mds[(id - 1) as usize] = Some(child);
        Ok(())
    }

    /// `kill -9` MDS member `id`.
    pub fn kill9_mds_member(&mut self, id: u64) {
        if let Some(mut c) = self.mds.get_mut((id - 1) as usize).and_then(Option::take) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Wait up to `timeout` for MDS member `id` to end by itself: how it
    /// ended, or None if it still runs.
    pub fn wait_mds_member_exit(&mut self, id: u64, timeout: Duration) -> Option<std::process::ExitStatus> {
        let t = Instant::now();
        while t.elapsed() < timeout {
            let child = self.mds.get_mut((id - 1) as usize).and_then(Option::as_mut)?;
            if let Ok(Some(st)) = child.try_wait() {
                self.mds[(id - 1) as usize] = None;
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// The data directory of MDS member `id`, as its config names it.
    pub fn mds_data_dir(&self, id: u64) -> Result<PathBuf> {
        let args = &self.mds_args[(id - 1) as usize];
        if let Some(dir) = args.iter().position(|a| a == "--data-dir").and_then(|i| args.get(i + 1)) {
            return Ok(PathBuf::from(dir));
        }
        Ok(aifs_common::config::load::<aifs_mds::MdsConfig>(&self.mds_config(id))?.data_dir)
    }

    /// The member leading every shard, once one does (`mdsctl shard ls`).
    pub fn mds_leader(&self, timeout: Duration) -> Result<u64> {
        let t = Instant::now();
        loop {
            if let Ok(out) = self.mdsctl(&["--json", "shard", "ls"]) {
                let v: serde_json::Value = serde_json::from_str(&out)?;
                let leaders: Vec<Option<u64>> = v.as_array().context("shard ls is a list")?.iter().map(|s| s["leader"].as_u64()).collect();
                if let Some(Some(l)) = leaders.first() {
                    if leaders.iter().all(|x| *x == Some(*l)) {
                        return Ok(*l);
                    }
                }
            }
            if t.elapsed() > timeout {
                bail!("no MDS member leads every shard after {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Start OSD `i` (1-based) again after `kill9_osd`.
    pub fn start_osd(&mut self, i: u32) -> Result<()> {
        let cfg = self.path(&format!("osd{i}.toml"));
        let log = self.path(&format!("logs/osd{i}.log"));
        self.osds[(i - 1) as usize] = Some(spawn_logged("aifs-osd", &["--config", cfg.to_str().unwrap_or_default()], &log)?);
        Ok(())
    }

    pub fn start_all(&mut self) -> Result<()> {
        self.start_mds()?;
        for i in 1..=self.n_osds {
            self.start_osd(i)?;
        }
        // Several replicated clusters starting at once on two cores have
        // been seen to take about 20 s to elect the first leader of every
        // shard (cause not found; see the README's Tests section).
        let ready = if self.mds_addrs.len() > 1 { Duration::from_secs(45) } else { Duration::from_secs(20) };
        self.wait_ready(ready)
    }

    /// Move OSD `i` (1-based) into a network namespace of its own, joined
    /// to this one by a veth pair, and start it there listening on its end;
    /// the guard cuts and heals the link (a partition of that OSD from the
    /// client and the MDS) and removes both when dropped. Needs root and a
    /// cluster from `start_routed`.
    pub fn isolate_osd(&mut self, i: u32) -> Result<NetNs> {
        anyhow::ensure!(self.mds_any, "isolate_osd needs a cluster from start_routed");
        self.kill9_osd(i);
        let port = read_listen_port(&self.path(&format!("osd{i}.toml")))?;
        let ns = NetNs::make(port)?;
        let (here, there) = (ns.here, ns.there);
        let cfg = self.path(&format!("osd{i}.toml"));
        let log = self.path(&format!("logs/osd{i}.log"));
        let listen = format!("{there}:{port}");
        let mds = format!("{here}:{}", self.mds_addr.port());
        let bin = bin_dir().join("aifs-osd");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns.name]).arg(bin).args(["--config", cfg.to_str().unwrap_or_default(), "--listen", &listen, "--mds", &mds]);
        self.osds[(i - 1) as usize] = Some(logged(cmd, &log)?);
        self.wait_ready(Duration::from_secs(20))?;
        Ok(ns)
    }

    /// `kill -9` OSD `i` (1-based).
    pub fn kill9_osd(&mut self, i: u32) {
        if let Some(mut c) = self.osds.get_mut((i - 1) as usize).and_then(Option::take) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `kill -9` the MDS (every member).
    pub fn kill9_mds(&mut self) {
        for c in self.mds.iter_mut().filter_map(Option::take) {
            let mut c = c;
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `kill -9` the MDS and every OSD.
    pub fn kill9_all(&mut self) {
        for c in self.mds.iter_mut().flatten().chain(self.osds.iter_mut().flatten()) {
            let _ = c.kill();
            let _ = c.wait();
        }
        for m in &mut self.mds {
            *m = None;
        }
        for o in &mut self.osds {
            *o = None;
        }
    }

    /// Stop the MDS (SIGSTOP) until the guard drops: a server that hangs
    /// rather than dies.
    pub fn freeze_mds(&self) -> Frozen<'_> {
        Self::freeze(self.mds.first().and_then(Option::as_ref))
    }

    /// Stop MDS member `id` (SIGSTOP) until the guard drops: a member cut
    /// off from everyone, which then comes back thinking nothing changed.
    pub fn freeze_mds_member(&self, id: u64) -> Frozen<'_> {
        Self::freeze(self.mds.get((id - 1) as usize).and_then(Option::as_ref))
    }

    /// Stop OSD `i` (1-based) until the guard drops.
    pub fn freeze_osd(&self, i: u32) -> Frozen<'_> {
        Self::freeze(self.osds.get((i - 1) as usize).and_then(Option::as_ref))
    }

    fn freeze(c: Option<&Child>) -> Frozen<'_> {
        let pid = c.map_or(0, |c| c.id() as i32);
        if pid != 0 {
            // SAFETY: kill(2) on a pid we spawned and have not yet reaped.
            unsafe {
                libc::kill(pid, libc::SIGSTOP);
            }
        }
        Frozen(pid, std::marker::PhantomData)
    }

    /// Wait until the MDS answers and every OSD is up.
    pub fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let id = Identity::load(&crate::tls(self.dir.path(), Role::Admin))?;
        let n = self.n_osds as usize;
        let addrs = aifs_common::config::MdsAddrs(self.mds_addrs.clone());
        let transport = self.transport()?;
        rt.block_on(async move {
            let ep = rpc::client_endpoint(&id, &transport)?;
            let t = Instant::now();
            loop {
                let c = RpcClient::any_of(ep.clone(), &addrs, Role::Mds);
                if let Ok(MdsReply { resp: MdsResp::OsdMap { osds, .. }, .. }) = rpc::leader::call_leader(&c, &MdsCall::from(MdsReq::OsdMap)).await {
                    if osds.iter().filter(|o| o.state == OsdState::Up).count() >= n {
                        return Ok(());
                    }
                }
                if t.elapsed() > timeout {
                    bail!("cluster not ready after {timeout:?}");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    }

    /// Ask OSD `i` (1-based) for its usage under the certificate `tls`
    /// names: a request any certificate of the cluster may make.
    pub fn osd_usage_as(&self, i: u32, tls: &aifs_common::config::TlsConfig) -> aifs_common::Result<()> {
        use aifs_common::proto::osd::{OsdCall, OsdReq, OsdResp};
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let port = read_listen_port(&self.path(&format!("osd{i}.toml"))).map_err(|e| aifs_common::Error::Io(e.to_string()))?;
        let addr = SocketAddr::new(self.mds_addr.ip(), port);
        let transport = self.transport().map_err(|e| aifs_common::Error::Io(e.to_string()))?;
        rt.block_on(async move {
            let ep = rpc::client_endpoint(&Identity::load(tls)?, &transport)?;
            let c = RpcClient::new(ep, addr, Role::Osd);
            match c.call::<_, OsdResp>(&OsdCall::from(OsdReq::Usage), &[]).await?.0 {
                OsdResp::Err(e) => Err(aifs_common::Error::from_wire(e.code, &e.msg)),
                _ => Ok(()),
            }
        })
    }

    pub fn mount(&self) -> Result<Mount> {
        Mount::new(self)
    }

    /// Run `mdsctl` against this cluster; returns stdout.
    pub fn mdsctl(&self, args: &[&str]) -> Result<String> {
        match self.mdsctl_status(args)? {
            (0, out) => Ok(out),
            (code, _) => bail!("mdsctl {args:?} exited with {code}"),
        }
    }

    /// `mdsctl --json status`.
    pub fn status(&self) -> Result<serde_json::Value> {
        Ok(serde_json::from_str(&self.mdsctl(&["--json", "status"])?)?)
    }

    /// Requests the MDS has served, as `mdsctl status` reports them.
    pub fn mds_requests(&self) -> Result<u64> {
        self.status()?["mds_requests"].as_u64().context("no mds_requests in the status")
    }

    /// Object replicas recorded as degraded over all shards, and bytes
    /// repair has copied since the MDS started.
    pub fn degraded(&self) -> Result<(u64, u64)> {
        let v = self.status()?;
        let shards = v["shards"].as_array().context("no shards in the status")?;
        let stale = shards.iter().map(|s| s["degraded"].as_u64().context("a shard without a degraded count")).sum::<Result<u64>>()?;
        Ok((stale, v["repair"]["bytes"].as_u64().context("no repair bytes in the status")?))
    }

    /// Run `mdsctl`: its exit status (-1: killed by a signal) and stdout.
    pub fn mdsctl_status(&self, args: &[&str]) -> Result<(i32, String)> {
        let (code, out, err) = self.mdsctl_output(args)?;
        if code != 0 {
            eprintln!("mdsctl {args:?}: {err}");
        }
        Ok((code, out))
    }

    /// Run `mdsctl`: its exit status (-1: killed by a signal), stdout and
    /// stderr.
    pub fn mdsctl_output(&self, args: &[&str]) -> Result<(i32, String, String)> {
        let out = Command::new(bin_dir().join("mdsctl"))
            .arg("--config")
            .arg(self.path("admin.toml"))
            .args(args)
            .output()?;
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        Ok((out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr)))
    }

    pub fn dump_logs(&self) {
        if let Ok(rd) = std::fs::read_dir(self.path("logs")) {
            for e in rd.flatten() {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                eprintln!("---- {} (last lines) ----", e.path().display());
                for l in tail.into_iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
    }
}


fn read_listen_port(cfg: &Path) -> Result<u16> {
    let text = std::fs::read_to_string(cfg)?;
    let line = text.lines().find(|l| l.trim_start().starts_with("listen")).context("no listen address")?;
    let addr = line.split('"').nth(1).context("listen address not quoted")?;
    Ok(addr.parse::<SocketAddr>()?.port())
}

/// Rewrite the configs in `dir` from loopback's packet size to the
/// default for a network; fails if none had it to rewrite.
fn network_transport(dir: &Path) -> Result<()> {
    let looped = format!("max_mtu = {}", aifs_common::config::LOOPBACK_MAX_MTU);
    let network = format!("max_mtu = {}", TransportConfig::default().max_mtu);
    let mut rewritten = 0;
    for e in std::fs::read_dir(dir)? {
        let path = e?.path();
        if path.extension().is_some_and(|x| x == "toml") {
            let text = std::fs::read_to_string(&path)?;
            if text.contains(&looped) {
                std::fs::write(&path, text.replace(&looped, &network))?;
                rewritten += 1;
            }
        }
    }
    anyhow::ensure!(rewritten > 0, "no config in {} has `{looped}` to rewrite", dir.display());
    Ok(())
}

impl Drop for ProcCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        for c in self.osds.iter_mut().flatten() {
            stop(c, libc::SIGTERM, Duration::from_secs(3));
        }
        for c in self.mds.iter_mut().flatten() {
            stop(c, libc::SIGTERM, Duration::from_secs(3));
        }
        if let Some(to) = std::env::var_os("AIFS_KEEP_LOGS") {
            self.keep_logs(Path::new(&to));
        }
    }
}

impl ProcCluster {
    /// Copy the processes' logs into a new directory under `to`
    /// (`AIFS_KEEP_LOGS=DIR`: a test's or a bench's run looked at after).
    fn keep_logs(&self, to: &Path) {
        let name = self.dir.path().file_name().unwrap_or_default();
        let dest = to.join(name);
        let copied = std::fs::create_dir_all(&dest).and_then(|()| {
            for e in std::fs::read_dir(self.path("logs"))? {
                let e = e?;
                std::fs::copy(e.path(), dest.join(e.file_name()))?;
            }
            Ok(())
        });
        match copied {
            Ok(()) => eprintln!("logs kept in {}", dest.display()),
            Err(e) => eprintln!("could not keep the logs in {}: {e}", dest.display()),
        }
    }
}

impl ProcCluster {
    /// The MDS processes running, by member.
    pub fn mds_pids(&self) -> Vec<u32> {
        self.mds.iter().flatten().map(|c| c.id()).collect()
    }

    /// Pids of the MDS, the OSDs and a mount's client.
    pub fn pids_with(&self, m: &Mount) -> Vec<u32> {
        let mut v: Vec<u32> = self.mds.iter().flatten().chain(self.osds.iter().flatten()).map(|c| c.id()).collect();
        v.extend(m.child.as_ref().map(|c| c.id()));
        v
    }
}
