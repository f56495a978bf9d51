//! Faults the tests make: a network namespace whose link to this one can
//! be cut and healed, and a process stopped until a guard is dropped.
use super::ProcCluster;
use anyhow::{Context, Result};
use std::process::{Command, Stdio};

fn ip(args: &[&str]) -> Result<()> {
    let st = Command::new("ip").args(args).stdout(Stdio::null()).status().context("running ip")?;
    anyhow::ensure!(st.success(), "ip {} failed", args.join(" "));
    Ok(())
}

/// A network namespace with a veth pair to this one (`isolate_osd`,
/// `start_spread`).
pub struct NetNs {
    pub(super) name: String,
    /// This namespace's end of the pair.
    host: String,
    /// The address of this namespace's end, and of the other's.
    pub here: std::net::Ipv4Addr,
    pub there: std::net::Ipv4Addr,
}

impl NetNs {
    /// A namespace named after `port` (a port this test holds, so that
    /// parallel tests keep apart), its end of the pair up with a /30 of
    /// 198.18.0.0/15 (set aside for benchmarking networks), and the way
    /// to this namespace's other addresses through this one's end.
    pub(super) fn make(port: u16) -> Result<NetNs> {
        let (b, c) = (((port / 64) % 256) as u8, ((port % 64) * 4) as u8);
        let peer = format!("ap{port}");
        let ns = NetNs { name: format!("aifs-n{port}"), host: format!("av{port}"), here: [198, 18, b, c + 1].into(), there: [198, 18, b, c + 2].into() };
        ip(&["netns", "add", &ns.name])?;
        ip(&["link", "add", &ns.host, "type", "veth", "peer", "name", &peer, "netns", &ns.name])?;
        ip(&["addr", "add", &format!("{}/30", ns.here), "dev", &ns.host])?;
        ip(&["link", "set", &ns.host, "up"])?;
        ip(&["-n", &ns.name, "addr", "add", &format!("{}/30", ns.there), "dev", &peer])?;
        ip(&["-n", &ns.name, "link", "set", &peer, "up"])?;
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        ip(&["-n", &ns.name, "route", "add", "default", "via", &ns.here.to_string()])?;
        Ok(ns)
    }

    /// Take the link down: nothing passes either way.
    pub fn cut(&self) -> Result<()> {
        ip(&["link", "set", &self.host, "down"])
    }

    pub fn heal(&self) -> Result<()> {
        ip(&["link", "set", &self.host, "up"])
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.host]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// A stopped process, resumed (SIGCONT) on drop.
pub struct Frozen<'a>(pub(super) i32, pub(super) std::marker::PhantomData<&'a ProcCluster>);

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        if self.0 != 0 {
            // SAFETY: kill(2) on a pid the cluster spawned; the guard
            // borrows the cluster, which reaps it only later.
            unsafe {
                libc::kill(self.0, libc::SIGCONT);
            }
        }
    }
}
