//! The MDS checks POSIX permissions itself, for the credentials each
//! request carries, whatever the client's kernel decided: requests are
//! sent here raw, as a client that skips its own checks would send them.
use aifs_common::certs::{Node, Role};
use aifs_common::ids::InodeId;
use aifs_common::perm::{Cred, ANON_ID};
use aifs_common::proto::mds::{Attr, MdsReq, MdsResp, SetAttr};
use aifs_common::rpc::RpcClient;
use aifs_common::Error;
use aifs_tests::{mds_call_as, TestCluster};

const ROOT: InodeId = InodeId::ROOT;

fn user(uid: u32, gid: u32, groups: &[u32]) -> Cred {
    Cred::user(uid, gid, groups.to_vec())
}

/// `req` for `cred`: the inode made or read, or the error.
async fn as_(c: &RpcClient, cred: &Cred, req: MdsReq) -> Result<Option<Attr>, Error> {
    match mds_call_as(c, req, cred.clone()).await? {
        MdsResp::Attr(a) | MdsResp::Changed { attr: Some(a), .. } | MdsResp::Opened { attr: a, .. } => Ok(Some(a)),
        _ => Ok(None),
    }
}

async fn made(c: &RpcClient, cred: &Cred, req: MdsReq) -> Attr {
    match as_(c, cred, req).await {
        Ok(Some(a)) => a,
        other => panic!("expected an inode, got {other:?}"),
    }
}

fn mkdir(parent: InodeId, name: &str, mode: u32) -> MdsReq {
    MdsReq::Mkdir { parent, name: name.into(), mode }
}

fn create(parent: InodeId, name: &str, mode: u32) -> MdsReq {
    MdsReq::Create { parent, name: name.into(), mode, exclusive: true }
}

fn chmod(ino: InodeId, mode: u32) -> MdsReq {
    MdsReq::SetAttr { ino, set: SetAttr { mode: Some(mode), ..Default::default() } }
}

fn denied(r: Result<Option<Attr>, Error>) -> bool {
    matches!(r, Err(Error::PermissionDenied))
}

fn eperm(r: Result<Option<Attr>, Error>) -> bool {
    matches!(r, Err(Error::NotPermitted(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mds_checks_modes_for_the_credentials_sent() {
    let cl = TestCluster::start(1, 4).await.unwrap();
    let c = cl.mds_client(Role::Client).unwrap();
    let root = Cred::root();
    let alice = user(1000, 100, &[]);
    let bob = user(2000, 100, &[]);
    made(&c, &root, chmod(ROOT, 0o755)).await;

    // A private directory: no search, no listing, no names made there.
    let private = made(&c, &root, mkdir(ROOT, "private", 0o700)).await;
    made(&c, &root, create(private.ino, "secret", 0o644)).await;
    assert!(denied(as_(&c, &alice, MdsReq::Lookup { parent: private.ino, name: "secret".into() }).await));
    assert!(denied(as_(&c, &alice, MdsReq::Readdir { ino: private.ino, cookie: 0, max: 10 }).await));
    assert!(denied(as_(&c, &alice, create(private.ino, "mine", 0o644)).await));
    assert!(denied(as_(&c, &alice, mkdir(ROOT, "top", 0o755)).await), "made a name in a 0755 root-owned directory");

    // What a user makes is its own, with the group it names.
    let home = made(&c, &root, mkdir(ROOT, "home", 0o777)).await;
    let f = made(&c, &alice, create(home.ino, "notes", 0o600)).await;
    assert_eq!((f.uid, f.gid, f.perm), (1000, 100, 0o600));
    // Its mode keeps others out, and only its owner changes the mode.
    assert!(denied(as_(&c, &bob, MdsReq::Open { ino: f.ino, write: false, first: true, exclusive: false }).await));
    assert!(denied(as_(&c, &bob, MdsReq::Open { ino: f.ino, write: true, first: true, exclusive: false }).await));
    assert!(as_(&c, &alice, MdsReq::Open { ino: f.ino, write: true, first: true, exclusive: false }).await.is_ok());
    assert!(eperm(as_(&c, &bob, chmod(f.ino, 0o666)).await));
    assert!(denied(as_(&c, &bob, MdsReq::SetAttr { ino: f.ino, set: SetAttr { size: Some(0), ..Default::default() } }).await));
    assert!(denied(as_(&c, &bob, MdsReq::SetXattr { ino: f.ino, name: "user.tag".into(), value: b"x".to_vec(), flags: 0 }).await));
    // Giving a file away is root's; a group change the owner's, to its own groups.
    assert!(eperm(as_(&c, &alice, MdsReq::SetAttr { ino: f.ino, set: SetAttr { uid: Some(2000), ..Default::default() } }).await));
    assert!(eperm(as_(&c, &alice, MdsReq::SetAttr { ino: f.ino, set: SetAttr { gid: Some(300), ..Default::default() } }).await));
    let alice300 = user(1000, 100, &[300]);
    let g = made(&c, &alice300, MdsReq::SetAttr { ino: f.ino, set: SetAttr { gid: Some(300), ..Default::default() } }).await;
    assert_eq!(g.gid, 300);
    // Root may do all of it.
    assert!(as_(&c, &root, MdsReq::Open { ino: f.ino, write: true, first: true, exclusive: false }).await.is_ok());
    assert_eq!(made(&c, &root, MdsReq::SetAttr { ino: f.ino, set: SetAttr { uid: Some(2000), ..Default::default() } }).await.uid, 2000);

    // A setuid program loses its bit when chown'd, and when written.
    let prog = made(&c, &alice, create(home.ino, "prog", 0o4755)).await;
    assert_eq!(prog.perm, 0o4755);
    let after = made(&c, &alice, MdsReq::UpdateSize { ino: prog.ino, size: 10, mtime_ns: 1 }).await;
    assert_eq!(after.perm, 0o755, "a write left setuid on");
    // Publishing a size is for writers: bob may not grow alice's file.
    assert!(denied(as_(&c, &bob, MdsReq::UpdateSize { ino: prog.ino, size: 1 << 30, mtime_ns: 2 }).await));
    assert_eq!(made(&c, &alice, MdsReq::GetAttr { ino: prog.ino }).await.size, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_and_setgid_directories_behave_as_on_linux() {
    let cl = TestCluster::start(1, 4).await.unwrap();
    let c = cl.mds_client(Role::Client).unwrap();
    let root = Cred::root();
    let alice = user(1000, 100, &[]);
    let bob = user(2000, 200, &[]);

    // /tmp: anyone makes names, only their owners remove or move them.
    let tmp = made(&c, &root, mkdir(ROOT, "tmp", 0o1777)).await;
    assert_eq!(tmp.perm, 0o1777);
    made(&c, &alice, create(tmp.ino, "a", 0o644)).await;
    made(&c, &bob, mkdir(tmp.ino, "bobs", 0o755)).await;
    let unlink = |name: &str| MdsReq::Unlink { parent: tmp.ino, name: name.into() };
    assert!(eperm(as_(&c, &bob, unlink("a")).await));
    assert!(eperm(as_(&c, &bob, MdsReq::Rename { parent: tmp.ino, name: "a".into(), newparent: tmp.ino, newname: "b".into(), flags: 0 }).await));
    assert!(eperm(as_(&c, &alice, MdsReq::Rmdir { parent: tmp.ino, name: "bobs".into() }).await));
    as_(&c, &alice, unlink("a")).await.unwrap();
    as_(&c, &root, MdsReq::Rmdir { parent: tmp.ino, name: "bobs".into() }).await.unwrap();

    // A setgid project directory hands its group down, and stays setgid
    // below; a member's setgid file keeps its bit, a stranger's loses it.
    let proj = made(&c, &root, mkdir(ROOT, "proj", 0o2777)).await;
    made(&c, &root, MdsReq::SetAttr { ino: proj.ino, set: SetAttr { gid: Some(50), ..Default::default() } }).await;
    let member = user(1000, 100, &[50]);
    let sub = made(&c, &member, mkdir(proj.ino, "sub", 0o755)).await;
    assert_eq!((sub.uid, sub.gid, sub.perm), (1000, 50, 0o2755));
    let f = made(&c, &member, create(sub.ino, "f", 0o2755)).await;
    assert_eq!((f.gid, f.perm), (50, 0o2755));
    let s = made(&c, &bob, create(proj.ino, "s", 0o2755)).await;
    assert_eq!((s.uid, s.gid, s.perm), (2000, 50, 0o755));
    let link = made(&c, &bob, MdsReq::Symlink { parent: proj.ino, name: "l".into(), target: "s".into() }).await;
    assert_eq!(link.gid, 50);

    // A directory moved to another parent must be writable by the mover.
    let shared = made(&c, &root, mkdir(ROOT, "shared", 0o777)).await;
    let ro = made(&c, &alice, mkdir(shared.ino, "ro", 0o555)).await;
    assert_eq!(ro.perm, 0o555);
    let mv = MdsReq::Rename { parent: shared.ino, name: "ro".into(), newparent: ROOT, newname: "ro".into(), flags: 0 };
    assert!(denied(as_(&c, &bob, mv).await));
}

/// A certificate issued with --root-squash makes its uid 0 nobody: it
/// cannot touch what root owns, and what it makes belongs to nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_squashed_certificate_acts_as_nobody() {
    let cl = TestCluster::start(1, 4).await.unwrap();
    let c = cl.mds_client(Role::Client).unwrap();
    let squashed = cl.mds_client_as(Node::new(Role::Client, "gpu-untrusted", None).unwrap().root_squashed().unwrap()).unwrap();
    let root = Cred::root();
    made(&c, &root, chmod(ROOT, 0o755)).await;
    let f = made(&c, &root, create(ROOT, "etc-passwd", 0o644)).await;
    assert!(denied(as_(&squashed, &root, create(ROOT, "x", 0o644)).await));
    assert!(denied(as_(&squashed, &root, MdsReq::Open { ino: f.ino, write: true, first: true, exclusive: false }).await));
    assert!(eperm(as_(&squashed, &root, chmod(f.ino, 0o666)).await));
    assert!(eperm(as_(&squashed, &root, MdsReq::Mknod { parent: ROOT, name: "sda".into(), kind: aifs_common::proto::mds::FileKind::BlockDev, mode: 0o600, rdev: 8 }).await));
    // It may still read what others may, and make files where others may.
    assert!(as_(&squashed, &root, MdsReq::Open { ino: f.ino, write: false, first: true, exclusive: false }).await.is_ok());
    let pub_ = made(&c, &root, mkdir(ROOT, "pub", 0o777)).await;
    let mine = made(&squashed, &root, create(pub_.ino, "mine", 0o644)).await;
    assert_eq!((mine.uid, mine.gid), (ANON_ID, ANON_ID));
    // The same credentials over an unsquashed certificate are root.
    assert!(as_(&c, &root, MdsReq::Open { ino: f.ino, write: true, first: true, exclusive: false }).await.is_ok());
}
