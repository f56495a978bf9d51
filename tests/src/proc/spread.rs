//! MDS processes spread over hosts of their own: each in a network
//! namespace, reached only through a link that the harness plays with a
//! relay (`crate::relay`), so that the network rather than this machine's
//! two cores can be what limits a run (the scaling run of `aifs-bench
//! --scale-only`).
//!
//! The layout, for member `i` at port `P_i`:
//! - a namespace with a veth pair to this one: its end `there_i`, this
//!   one's `here_i` (`NetNs::make`), and its default route through
//!   `here_i`, so it reaches every address of this namespace;
//! - the MDS process listens at `there_i:P_i`, inside;
//! - the relay listens at `here_i:P_i`, the address the member is known
//!   by in every config, and passes what comes to `there_i:P_i` over the
//!   link. Clients, OSDs, `mdsctl` (all in this namespace) and the other
//!   members (through their default routes) all reach member `i` that way,
//!   so everything into and out of an MDS process crosses its link once.
//!
//! The OSDs listen at the first member's `here` address, in this
//! namespace: their traffic is not what the run measures.
use super::{bin_dir, ports, NetNs, ProcCluster};
use crate::relay::Relays;
pub use crate::relay::{Link, LinkStats};
use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;

pub(super) struct Spread {
    /// Dropped first: the relays, then the namespaces.
    relays: Relays,
    nets: Vec<NetNs>,
    /// Each member's address inside its namespace.
    inside: Vec<SocketAddr>,
}

impl Spread {
    /// The command that starts member `id` with `args`, in its namespace
    /// and listening there.
    pub(super) fn mds_command(&self, id: u64, args: &[&str]) -> Result<Command> {
        let i = (id - 1) as usize;
        let (ns, inside) = self.nets.get(i).zip(self.inside.get(i)).context("no namespace for an MDS member added later")?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns.name]).arg(bin_dir().join("aifs-mds")).args(args).args(["--listen", &inside.to_string()]);
        Ok(cmd)
    }
}

impl ProcCluster {
    /// A cluster of `n_mds` MDS processes (one-member groups for one), each
    /// in a network namespace of its own behind a relay playing `link`,
    /// and `n_osds` OSDs here; `edit` changes each MDS config first. Needs
    /// root.
    pub fn start_spread(n_mds: usize, n_osds: u32, link: Link, edit: &dyn Fn(String) -> String) -> Result<ProcCluster> {
        let p = ports(n_mds + n_osds as usize);
        let nets = p[..n_mds].iter().map(|port| NetNs::make(*port)).collect::<Result<Vec<_>>>()?;
        let known: Vec<SocketAddr> = nets.iter().zip(&p).map(|(ns, port)| SocketAddr::from((ns.here, *port))).collect();
        let inside: Vec<SocketAddr> = nets.iter().zip(&p).map(|(ns, port)| SocketAddr::from((ns.there, *port))).collect();
        let mut relays = Relays::new()?;
        let members: Vec<std::net::IpAddr> = nets.iter().map(|ns| ns.there.into()).collect();
        for (k, i) in known.iter().zip(&inside) {
            let stats = relays.add(*k, *i, link)?;
            *stats.from_members.write().unwrap_or_else(|e| e.into_inner()) = members.clone();
        }
        // Members known at addresses other than loopback's: `mdsctl init`
        // writes the network's transport settings itself.
        let mut c = Self::configure(known, p[n_mds], n_osds, false, edit, &[])?;
        c.spread = Some(Spread { relays, nets, inside });
        c.start_or_dump()?;
        Ok(c)
    }

    /// What each MDS member's link has carried, by member (spread clusters).
    pub fn mds_links(&self) -> Vec<Arc<LinkStats>> {
        self.spread.as_ref().map(|s| s.relays.links.iter().map(|(_, st)| st.clone()).collect()).unwrap_or_default()
    }

    /// Part MDS member `id` from the other members, in both directions,
    /// but not from clients, OSDs or `mdsctl`: its link drops what the
    /// others send it and its answers to them, and theirs drop what it
    /// sends them. `heal_mds_links` ends it.
    pub fn cut_mds_from_members(&self, id: u64) -> Result<()> {
        let s = self.spread.as_ref().context("not a spread cluster")?;
        let i = (id - 1) as usize;
        let peers: Vec<std::net::IpAddr> = s.nets.iter().enumerate().filter(|(k, _)| *k != i).map(|(_, ns)| ns.there.into()).collect();
        let it: std::net::IpAddr = s.nets.get(i).context("no such member")?.there.into();
        for (k, (_, link)) in s.relays.links.iter().enumerate() {
            link.cut_from(if k == i { &peers } else { std::slice::from_ref(&it) });
        }
        Ok(())
    }

    pub fn heal_mds_links(&self) {
        for (_, link) in self.spread.iter().flat_map(|s| &s.relays.links) {
            link.cut_from(&[]);
        }
    }
}
