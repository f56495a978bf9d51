//! In-process cluster over loopback QUIC with mTLS, one module a part:
//! every MDS operation and the errors POSIX names for it (`namespace`),
//! object I/O on the OSDs and the capabilities it needs (`objects`), who
//! may speak (`trust`), what one client may hold (`budgets`) and requests
//! sent again (`retries`). Here: the helpers they share.
use aifs_common::certs::Role;
use aifs_common::config::{TlsConfig, TransportConfig};
use aifs_common::ids::InodeId;
use aifs_common::proto::mds::{Attr, FileKind, MdsReq, MdsResp, SetAttr, RENAME_EXCHANGE, RENAME_NOREPLACE, XATTR_CREATE, XATTR_REPLACE};
use aifs_common::cap::Cap;
use aifs_common::proto::osd::{block_crcs, OsdCall, OsdReq, OsdResp};
use aifs_common::rpc::{self, Identity, RpcClient};
use aifs_common::{Error, LayoutPolicy, ObjectId};
use aifs_common::perm::Cred;
use aifs_tests::{mds_call, mds_call_as, TestCluster};
use std::time::Duration;

mod budgets;
mod namespace;
mod objects;
mod retries;
mod trust;

const ROOT: InodeId = InodeId::ROOT;

async fn attr(c: &RpcClient, req: MdsReq) -> Result<Attr, Error> {
    match mds_call(c, req).await? {
        MdsResp::Attr(a) | MdsResp::Changed { attr: Some(a), .. } => Ok(a),
        other => panic!("expected Attr, got {other:?}"),
    }
}

/// A new session named `name` for `c`'s client: its id.
async fn open_session(c: &RpcClient, name: &str, dir_leases: bool) -> aifs_common::SessionId {
    match mds_call(c, MdsReq::OpenSession { name: name.into(), dir_leases, previous: vec![], open: vec![], locks: vec![] }).await.unwrap() {
        MdsResp::Session { id, .. } => id,
        other => panic!("{other:?}"),
    }
}

fn create(parent: InodeId, name: &str) -> MdsReq {
    MdsReq::Create { parent, name: name.into(), mode: 0o644, exclusive: true }
}

fn mkdir(parent: InodeId, name: &str) -> MdsReq {
    MdsReq::Mkdir { parent, name: name.into(), mode: 0o755 }
}

async fn names(c: &RpcClient, ino: InodeId) -> Vec<String> {
    let mut out = Vec::new();
    let mut cookie = 0;
    loop {
        match mds_call(c, MdsReq::Readdir { ino, cookie, max: 3 }).await.unwrap() {
            MdsResp::Dir { entries, eof, .. } => {
                for e in &entries {
                    out.push(e.name.clone());
                    cookie = e.cookie;
                }
                if eof || entries.is_empty() {
                    return out;
                }
            }
            other => panic!("{other:?}"),
        }
    }
}

fn heartbeat(id: u32) -> MdsReq {
    MdsReq::OsdHeartbeat { id: aifs_common::OsdId(id), addr: "127.0.0.1:1".into(), usage: aifs_common::proto::mds::OsdUsage { capacity: 1, ..Default::default() }, revoked_known: 0 }
}

/// The systemd units `make install` puts in place parse and name
/// binaries that are there (`systemd-analyze verify`, where that tool
/// exists: it needs no running systemd).
#[test]
fn the_systemd_units_verify() {
    if std::process::Command::new("systemd-analyze").arg("--version").output().is_err() {
        eprintln!("no systemd-analyze here: the units are not verified");
        return;
    }
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/systemd");
    let dir = tempfile::tempdir().unwrap();
    let bin = aifs_tests::bin_dir();
    let mut units = Vec::new();
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        let text = std::fs::read_to_string(&p).unwrap().replace("@BINDIR@", bin.to_str().unwrap());
        let to = dir.path().join(p.file_name().unwrap());
        std::fs::write(&to, text).unwrap();
        units.push(to);
    }
    assert_eq!(units.len(), 3, "aifs-mds.service, aifs-osd@.service, mnt-ai.mount");
    let out = std::process::Command::new("systemd-analyze").arg("verify").args(&units).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.trim().is_empty(), "systemd-analyze verify: {}: {err}", out.status);
}
