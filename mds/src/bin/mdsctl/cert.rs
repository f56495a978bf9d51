//! `mdsctl cert`: certificates of single nodes, signed by the cluster CA
//! (`certs::Ca`, kept in a directory apart from the configs), and their
//! revocation.
use aifs_common::certs::{self, Ca, Issued, Node, Role};
use aifs_common::config::{to_toml, TlsConfig};
use aifs_common::proto::mds::{MdsReq, MdsResp, Revocation};
use aifs_mds::admin::{table, Admin, AdminConfig};
use anyhow::{anyhow, bail, Context};
use clap::Subcommand;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct CertArgs {
    /// The CA's directory (`ca.key`, `issued/`). Default: the directory of
    /// the admin config's `ca.pem`, with `-ca` added (as `init` makes it).
    #[arg(long, global = true)]
    ca_dir: Option<PathBuf>,
    #[command(subcommand)]
    cmd: CertCmd,
}

#[derive(Subcommand)]
enum CertCmd {
    /// Sign a certificate of its own for one node, and write OUT/NAME.pem,
    /// OUT/NAME.key and a config OUT/NAME.toml for it. A session a client
    /// opens under it answers to it alone; an OSD's claims its id alone.
    Issue {
        /// client, osd or admin.
        #[arg(long)]
        role: String,
        /// The node's name: letters, digits, '-', '_', '.'.
        #[arg(long)]
        name: String,
        #[arg(long)]
        out: PathBuf,
        /// An OSD's id (the only one its certificate lets it claim).
        #[arg(long)]
        id: Option<u32>,
        /// An OSD's address, where clients and the MDS reach it.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// An OSD's data directory (default /var/lib/aifs/osd<ID>).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Where an OSD serves its Prometheus metrics (none by default).
        #[arg(long)]
        metrics_listen: Option<String>,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = certs::DEFAULT_DAYS)]
        days: u32,
        /// A client whose root the MDS treats as nobody (uid and gid 0
        /// become the MDS's anon_uid and anon_gid, 65534 by default).
        #[arg(long)]
        root_squash: bool,
    },
    /// A new certificate over the same key for NAME, valid for DAYS from
    /// now, into OUT/NAME.pem: put it in place of the node's old one and
    /// restart the node. Its sessions and identity stay the same.
    Renew {
        name: String,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = certs::DEFAULT_DAYS)]
        days: u32,
    },
    /// Refuse NAME's certificate from now on, on the MDS and on every OSD
    /// (within a heartbeat): its connections are closed, its sessions end,
    /// and it cannot connect again.
    Revoke { name: String },
    /// Every certificate the CA issued, with its expiry and whether it is
    /// revoked.
    Ls,
}

/// The CA directory `init` makes beside a config directory.
pub fn default_ca_dir(config_dir: &Path) -> PathBuf {
    let mut name = config_dir.file_name().map(|n| n.to_os_string()).unwrap_or_else(|| "aifs".into());
    name.push("-ca");
    config_dir.with_file_name(name)
}

impl CertArgs {
    fn ca(&self, cfg: &AdminConfig) -> anyhow::Result<Ca> {
        let dir = match &self.ca_dir {
            Some(d) => d.clone(),
            None => default_ca_dir(cfg.tls.ca.parent().ok_or_else(|| anyhow!("the admin config's CA path has no directory"))?),
        };
        Ca::open(&dir).with_context(|| format!("opening the cluster CA in {} (pass --ca-dir where it is kept)", dir.display()))
    }

    pub async fn run(&self, cfg: &AdminConfig, json: bool) -> anyhow::Result<()> {
        match &self.cmd {
            CertCmd::Issue { role, name, out, id, listen, data, metrics_listen, days, root_squash } => {
                let role = Role::parse(role).filter(|r| *r != Role::Mds).ok_or_else(|| anyhow!("unknown role {role:?}: client, osd or admin"))?;
                let node = Node::new(role, name, *id)?;
                let node = if *root_squash { node.root_squashed()? } else { node };
                let osd = match role {
                    Role::Osd => Some(OsdPlace {
                        listen: listen.ok_or_else(|| anyhow!("an OSD needs --listen ADDR"))?,
                        data: data.clone(),
                        metrics_listen: metrics_listen.clone(),
                    }),
                    _ => None,
                };
                issue(&self.ca(cfg)?, cfg, &node, out, *days, osd)
            }
            CertCmd::Renew { name, out, days } => {
                let rec = self.ca(cfg)?.renew(name, out, *days)?;
                println!("renewed {name} until {} (same key): {}", expiry(&rec), out.join(format!("{name}.pem")).display());
                println!("put it in place of the node's certificate, and restart the node");
                Ok(())
            }
            CertCmd::Revoke { name } => revoke(&self.ca(cfg)?, cfg, name).await,
            CertCmd::Ls => ls(&self.ca(cfg)?, cfg, json).await,
        }
    }
}

struct OsdPlace {
    listen: SocketAddr,
    data: Option<PathBuf>,
    metrics_listen: Option<String>,
}

fn issue(ca: &Ca, cfg: &AdminConfig, node: &Node, out: &Path, days: u32, osd: Option<OsdPlace>) -> anyhow::Result<()> {
    let rec = ca.issue(node, out, days)?;
    let out = out.canonicalize()?;
    let name = &node.name;
    let tls = TlsConfig { ca: cfg.tls.ca.clone(), cert: out.join(format!("{name}.pem")), key: out.join(format!("{name}.key")) };
    let text = match (node.role, osd, node.osd) {
        (Role::Client, ..) => format!("name = \"{name}\"\n{}", crate::aifs_client_config(&cfg.mds, tls, &cfg.transport)?),
        (Role::Osd, Some(place), Some(id)) => to_toml(&aifs_osd::OsdConfig {
            id,
            listen: place.listen,
            metrics_listen: place.metrics_listen,
            advertise: None,
            mds: cfg.mds.clone(),
            data_dir: place.data.unwrap_or_else(|| PathBuf::from(format!("/var/lib/aifs/osd{id}"))),
            heartbeat_ms: 1000,
            limits: Default::default(),
            tls,
            transport: cfg.transport.clone(),
            log: None,
            log_format: Default::default(),
        })?,
        _ => to_toml(&AdminConfig { mds: cfg.mds.clone(), tls, transport: cfg.transport.clone() })?,
    };
    let conf = out.join(format!("{name}.toml"));
    std::fs::write(&conf, text)?;
    println!("issued a {} certificate for {name}, valid until {}: {}", node.role.name(), expiry(&rec), out.join(format!("{name}.pem")).display());
    let user = match node.role {
        Role::Client => "aifs-mount --config",
        Role::Osd => "aifs-osd --config",
        _ => "mdsctl --config",
    };
    println!("config: {} ({user})", conf.display());
    Ok(())
}

async fn revoke(ca: &Ca, cfg: &AdminConfig, name: &str) -> anyhow::Result<()> {
    let rec = ca.lookup(name)?;
    if rec.role == Role::Mds.name() {
        bail!("{name} is the MDS's certificate: revoking it would cut the MDS off from every OSD; make a new cluster CA instead");
    }
    let admin = Admin::connect(cfg)?;
    match admin.call(&MdsReq::Revoke { owner: rec.owner()?, name: name.to_string() }).await? {
        MdsResp::RevokeDone { connections, sessions } => {
            println!("revoked {name}: {connections} connection(s) to the MDS closed, {sessions} session(s) ended");
            println!("OSDs refuse it from their next heartbeat on");
            Ok(())
        }
        _ => bail!("unexpected reply to Revoke"),
    }
}

async fn ls(ca: &Ca, cfg: &AdminConfig, json: bool) -> anyhow::Result<()> {
    let issued = ca.issued()?;
    let revoked: Vec<Revocation> = match Admin::connect(cfg)?.call(&MdsReq::Revoked).await {
        Ok(MdsResp::Revoked(v)) => v,
        Ok(_) => bail!("unexpected reply to Revoked"),
        Err(e) => bail!("asking the MDS which certificates are revoked: {e}"),
    };
    let now = aifs_common::cap::now_ms() / 1000;
    let state = |i: &Issued| {
        if revoked.iter().any(|r| r.owner.to_string() == i.owner) {
            "revoked"
        } else if i.not_after_s <= now {
            "expired"
        } else {
            "valid"
        }
    };
    if json {
        let v: Vec<_> = issued
            .iter()
            .map(|i| {
                serde_json::json!({"name": i.name, "role": i.role, "osd": i.osd, "root_squash": i.root_squash,
                                   "not_after_s": i.not_after_s, "owner": i.owner, "state": state(i)})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = issued
        .iter()
        .map(|i| {
            let role = if i.root_squash { format!("{} (root squashed)", i.role) } else { i.role.clone() };
            let osd = i.osd.map(|o| o.to_string()).unwrap_or_else(|| "-".into());
            vec![i.name.clone(), role, osd, expiry(i), state(i).into(), i.owner.get(..16).unwrap_or(&i.owner).to_string()]
        })
        .collect();
    print!("{}", table(&["NAME", "ROLE", "OSD", "EXPIRES", "STATE", "OWNER"], &rows));
    Ok(())
}

/// When a certificate ends, as days from now.
fn expiry(i: &Issued) -> String {
    let now = aifs_common::cap::now_ms() / 1000;
    match i.not_after_s.checked_sub(now) {
        Some(left) => format!("in {} days", left / 86_400),
        None => format!("{} days ago", (now - i.not_after_s) / 86_400),
    }
}
