//! `mdsctl degraded`: the object replicas recorded as stale (they missed
//! a write and are read by nobody until repair rewrites them), and
//! forgetting such records by hand.
use aifs_common::proto::mds::{Degraded, MdsReq, MdsResp};
use aifs_common::{InodeId, OsdId};
use aifs_mds::admin::{table, Admin};
use anyhow::bail;
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum DegradedCmd {
    /// List stale replicas: of one file, or of every file.
    Ls { path: Option<PathBuf> },
    /// Forget a file's stale-replica records (all, or those of one object
    /// and/or OSD), so that those replicas are read again. Only for a
    /// replica known to hold the file's data: restored by hand, or the last
    /// copy left once the healthy ones are lost for good.
    Clear {
        path: PathBuf,
        /// Only the replicas of this object (its index in the file).
        #[arg(long)]
        object: Option<u32>,
        /// Only the replicas on this OSD.
        #[arg(long)]
        osd: Option<u32>,
    },
}

impl DegradedCmd {
    pub async fn run(&self, admin: &Admin, json: bool) -> anyhow::Result<()> {
        let (req, what) = match self {
            DegradedCmd::Ls { path } => {
                let ino = match path {
                    Some(p) => Some(admin.resolve(p).await?.1.ino),
                    None => None,
                };
                (MdsReq::DegradedList { ino }, "stale")
            }
            DegradedCmd::Clear { path, object, osd } => {
                let ino = admin.resolve(path).await?.1.ino;
                (MdsReq::ClearDegraded { ino, index: *object, osd: osd.map(OsdId) }, "cleared")
            }
        };
        let list = match admin.call(&req).await? {
            MdsResp::DegradedList(l) => l,
            _ => bail!("unexpected reply to {req:?}"),
        };
        print!("{}", show(&list, what, json)?);
        Ok(())
    }
}

fn show(list: &[(InodeId, Degraded)], what: &str, json: bool) -> anyhow::Result<String> {
    if json {
        let v: Vec<_> = list.iter().map(|(ino, d)| serde_json::json!({"ino": format!("{:#x}", ino.0), "object": d.index, "osd": d.osd.0})).collect();
        return Ok(serde_json::to_string_pretty(&serde_json::json!({ what: v }))? + "\n");
    }
    let rows: Vec<Vec<String>> = list.iter().map(|(ino, d)| vec![format!("{:#x}", ino.0), d.index.to_string(), d.osd.0.to_string()]).collect();
    Ok(format!("{}{} replica(s) {what}\n", table(&["INODE", "OBJECT", "OSD"], &rows), list.len()))
}
