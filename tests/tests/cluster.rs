//! In-process cluster over loopback QUIC with mTLS: every MDS operation and
//! the errors POSIX names for it, object I/O on the OSDs, and protocol
//! robustness (malformed frames, missing or foreign certificates).
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_operations_and_their_errors() {
    let cl = TestCluster::start(3, 4).await.unwrap();
    let c = cl.mds_client(Role::Client).unwrap();

    // create, lookup, getattr; a change carries the directory's new attributes
    let before = attr(&c, MdsReq::GetAttr { ino: ROOT }).await.unwrap();
    let f = match mds_call(&c, create(ROOT, "f")).await.unwrap() {
        MdsResp::Changed { attr: Some(a), dirs, .. } => {
            assert_eq!(dirs.len(), 1);
            assert_eq!(dirs[0].ino, ROOT);
            assert!(dirs[0].mtime_ns >= before.mtime_ns && dirs[0].mtime_ns > 0);
            a
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(f.kind, FileKind::File);
    let l = f.layout.clone().unwrap();
    assert_eq!((l.stripe_count, l.replicas, l.osds.len()), (3, 1, 3));
    assert_eq!(f.ino.shard(), 0, "a file takes its directory's shard");
    assert_eq!(attr(&c, MdsReq::Lookup { parent: ROOT, name: "f".into() }).await.unwrap().ino, f.ino);
    assert_eq!(attr(&c, create(ROOT, "f")).await, Err(Error::Exists));
    let again = MdsReq::Create { parent: ROOT, name: "f".into(), mode: 0o644, exclusive: false };
    assert_eq!(attr(&c, again).await.unwrap().ino, f.ino, "non-exclusive create opens the existing file");
    assert_eq!(attr(&c, MdsReq::Lookup { parent: ROOT, name: "nope".into() }).await, Err(Error::NotFound));
    assert_eq!(attr(&c, MdsReq::GetAttr { ino: InodeId(0x77) }).await, Err(Error::NotFound));
    assert_eq!(attr(&c, MdsReq::Lookup { parent: f.ino, name: "x".into() }).await, Err(Error::NotDir));
    assert!(matches!(attr(&c, create(ROOT, "a/b")).await, Err(Error::InvalidArgument(_))));
    assert_eq!(attr(&c, create(ROOT, &"n".repeat(256))).await, Err(Error::NameTooLong));

    // setattr: mode, owner, times, size (truncate records and applies GC)
    let set = SetAttr { mode: Some(0o600), uid: Some(7), gid: Some(8), size: Some(4096), atime: None, mtime: Some(aifs_common::proto::mds::TimeSet::At(1_000_000_000)) };
    let a = attr(&c, MdsReq::SetAttr { ino: f.ino, set }).await.unwrap();
    assert_eq!((a.perm, a.uid, a.gid, a.size, a.mtime_ns), (0o600, 7, 8, 4096, 1_000_000_000));
    let a = attr(&c, MdsReq::SetAttr { ino: f.ino, set: SetAttr { size: Some(10), ..Default::default() } }).await.unwrap();
    assert_eq!(a.size, 10);
    // a flush publishes size as a maximum
    let a = attr(&c, MdsReq::UpdateSize { ino: f.ino, size: 5, mtime_ns: 2 }).await.unwrap();
    assert_eq!(a.size, 10);
    let a = attr(&c, MdsReq::UpdateSize { ino: f.ino, size: 50, mtime_ns: 2 }).await.unwrap();
    assert_eq!(a.size, 50);
    // sizes past off_t are refused, from a flush as from a truncate
    assert_eq!(attr(&c, MdsReq::UpdateSize { ino: f.ino, size: u64::MAX, mtime_ns: 2 }).await, Err(Error::FileTooBig));
    let huge = SetAttr { size: Some(1 << 63), ..Default::default() };
    assert_eq!(attr(&c, MdsReq::SetAttr { ino: f.ino, set: huge }).await, Err(Error::FileTooBig));
    assert_eq!(attr(&c, MdsReq::GetAttr { ino: f.ino }).await.unwrap().size, 50);

    // mkdir on (usually) another shard; files inside take the dir's shard
    let d = attr(&c, mkdir(ROOT, "d")).await.unwrap();
    assert_eq!(d.kind, FileKind::Dir);
    assert_eq!(attr(&c, mkdir(ROOT, "d")).await, Err(Error::Exists));
    assert_eq!(attr(&c, mkdir(f.ino, "x")).await, Err(Error::NotDir));
    let g = attr(&c, create(d.ino, "g")).await.unwrap();
    assert_eq!(g.ino.shard(), d.ino.shard());
    assert_eq!(attr(&c, MdsReq::GetAttr { ino: ROOT }).await.unwrap().nlink, 3);

    // readdir: offsets stay valid while entries come and go
    for i in 0..10 {
        attr(&c, create(d.ino, &format!("e{i}"))).await.unwrap();
    }
    let (first, cookie) = match mds_call(&c, MdsReq::Readdir { ino: d.ino, cookie: 0, max: 4 }).await.unwrap() {
        MdsResp::Dir { entries, eof, .. } => {
            assert!(!eof);
            let last = entries.last().unwrap().cookie;
            (entries.into_iter().map(|e| e.name).collect::<Vec<_>>(), last)
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(first, ["g", "e0", "e1", "e2"]);
    mds_call(&c, MdsReq::Unlink { parent: d.ino, name: "e1".into() }).await.unwrap();
    mds_call(&c, MdsReq::Unlink { parent: d.ino, name: "e5".into() }).await.unwrap();
    attr(&c, create(d.ino, "late")).await.unwrap();
    let rest = match mds_call(&c, MdsReq::Readdir { ino: d.ino, cookie, max: 100 }).await.unwrap() {
        MdsResp::Dir { entries, eof, .. } => {
            assert!(eof);
            entries.into_iter().map(|e| e.name).collect::<Vec<_>>()
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(rest, ["e3", "e4", "e6", "e7", "e8", "e9", "late"], "no entry skipped or repeated");
    assert!(matches!(mds_call(&c, MdsReq::Readdir { ino: f.ino, cookie: 0, max: 4 }).await, Err(Error::NotDir)));

    // unlink / rmdir errors
    assert_eq!(mds_call(&c, MdsReq::Unlink { parent: ROOT, name: "d".into() }).await, Err(Error::IsDir));
    assert_eq!(mds_call(&c, MdsReq::Unlink { parent: ROOT, name: "zz".into() }).await, Err(Error::NotFound));
    assert_eq!(mds_call(&c, MdsReq::Rmdir { parent: ROOT, name: "d".into() }).await, Err(Error::NotEmpty));
    assert_eq!(mds_call(&c, MdsReq::Rmdir { parent: ROOT, name: "f".into() }).await, Err(Error::NotDir));

    // rename: same dir, across dirs, replacing, NOREPLACE, into own subtree
    let sub = attr(&c, mkdir(d.ino, "sub")).await.unwrap();
    let rn = |p: InodeId, n: &str, np: InodeId, nn: &str, flags: u32| MdsReq::Rename { parent: p, name: n.into(), newparent: np, newname: nn.into(), flags };
    mds_call(&c, rn(d.ino, "e0", d.ino, "e0b", 0)).await.unwrap();
    mds_call(&c, rn(d.ino, "e0b", ROOT, "moved", 0)).await.unwrap();
    assert!(names(&c, ROOT).await.contains(&"moved".to_string()));
    assert!(!names(&c, d.ino).await.contains(&"e0b".to_string()));
    // replace an existing file; its inode goes away
    let victim = attr(&c, MdsReq::Lookup { parent: d.ino, name: "e2".into() }).await.unwrap();
    mds_call(&c, rn(ROOT, "moved", d.ino, "e2", 0)).await.unwrap();
    assert_eq!(attr(&c, MdsReq::GetAttr { ino: victim.ino }).await, Err(Error::NotFound));
    assert_eq!(mds_call(&c, rn(d.ino, "e3", d.ino, "e4", RENAME_NOREPLACE)).await, Err(Error::Exists));
    assert!(matches!(mds_call(&c, rn(ROOT, "d", sub.ino, "x", 0)).await, Err(Error::InvalidArgument(_))));
    assert!(matches!(mds_call(&c, rn(ROOT, "d", d.ino, "x", 0)).await, Err(Error::InvalidArgument(_))));
    assert_eq!(mds_call(&c, rn(d.ino, "e3", d.ino, "sub", 0)).await, Err(Error::IsDir));
    attr(&c, create(sub.ino, "inside")).await.unwrap();
    let empty = attr(&c, mkdir(ROOT, "empty")).await.unwrap();
    assert_eq!(mds_call(&c, rn(ROOT, "empty", d.ino, "sub", 0)).await, Err(Error::NotEmpty));
    assert_eq!(mds_call(&c, rn(ROOT, "empty", d.ino, "e3", 0)).await, Err(Error::NotDir));
    // a directory moved across directories: parents' link counts follow
    let root_links = attr(&c, MdsReq::GetAttr { ino: ROOT }).await.unwrap().nlink;
    mds_call(&c, rn(ROOT, "empty", d.ino, "empty2", 0)).await.unwrap();
    assert_eq!(attr(&c, MdsReq::GetAttr { ino: ROOT }).await.unwrap().nlink, root_links - 1);
    assert_eq!(attr(&c, MdsReq::Lookup { parent: d.ino, name: "empty2".into() }).await.unwrap().ino, empty.ino);
    mds_call(&c, MdsReq::Rmdir { parent: d.ino, name: "empty2".into() }).await.unwrap();
    assert_eq!(attr(&c, MdsReq::GetAttr { ino: empty.ino }).await, Err(Error::NotFound));

    // exchange: two names swap inodes, across directories on two shards
    let lookup = |p: InodeId, n: &str| attr(&c, MdsReq::Lookup { parent: p, name: n.into() });
    let mut far = String::new();
    for i in 0..64 {
        far = format!("far{i}");
        if attr(&c, mkdir(ROOT, &far)).await.unwrap().ino.shard() != ROOT.shard() {
            break;
        }
    }
    let fd = attr(&c, MdsReq::Lookup { parent: ROOT, name: far.clone() }).await.unwrap();
    let x = attr(&c, create(ROOT, "x")).await.unwrap();
    let y = attr(&c, create(fd.ino, "y")).await.unwrap();
    assert_ne!(x.ino.shard(), y.ino.shard(), "the swap crosses shards");
    assert_eq!(mds_call(&c, rn(ROOT, "x", fd.ino, "absent", RENAME_EXCHANGE)).await, Err(Error::NotFound));
    assert!(matches!(mds_call(&c, rn(ROOT, "x", fd.ino, "y", RENAME_EXCHANGE | RENAME_NOREPLACE)).await, Err(Error::InvalidArgument(_))));
    mds_call(&c, rn(ROOT, "x", fd.ino, "y", RENAME_EXCHANGE)).await.unwrap();
    assert_eq!((lookup(ROOT, "x").await.unwrap().ino, lookup(fd.ino, "y").await.unwrap().ino), (y.ino, x.ino));
    assert_eq!((lookup(ROOT, "x").await.unwrap().nlink, lookup(fd.ino, "y").await.unwrap().nlink), (1, 1), "no link gained or lost");
    // a directory swapped with a file: its link moves with it, and its `..`
    let xd = attr(&c, mkdir(ROOT, "xd")).await.unwrap();
    let c = &c;
    let links = |i: InodeId| async move { attr(c, MdsReq::GetAttr { ino: i }).await.unwrap().nlink };
    let (root_links, fd_links) = (links(ROOT).await, links(fd.ino).await);
    mds_call(&c, rn(ROOT, "xd", fd.ino, "y", RENAME_EXCHANGE)).await.unwrap();
    assert_eq!((links(ROOT).await, links(fd.ino).await), (root_links - 1, fd_links + 1));
    assert_eq!((lookup(ROOT, "xd").await.unwrap().ino, lookup(fd.ino, "y").await.unwrap().ino), (x.ino, xd.ino));
    match mds_call(&c, MdsReq::Readdir { ino: xd.ino, cookie: 0, max: 4 }).await.unwrap() {
        MdsResp::Dir { parent, .. } => assert_eq!(parent, fd.ino),
        other => panic!("{other:?}"),
    }
    // a directory never lands inside itself
    assert!(matches!(mds_call(&c, rn(ROOT, &far, fd.ino, "y", RENAME_EXCHANGE)).await, Err(Error::InvalidArgument(_))));

    // symlink, readlink
    let s = attr(&c, MdsReq::Symlink { parent: ROOT, name: "s".into(), target: "d/g".into() }).await.unwrap();
    assert_eq!(s.kind, FileKind::Symlink);
    assert_eq!(mds_call(&c, MdsReq::Readlink { ino: s.ino }).await.unwrap(), MdsResp::Bytes(b"d/g".to_vec()));
    assert!(matches!(mds_call(&c, MdsReq::Readlink { ino: f.ino }).await, Err(Error::InvalidArgument(_))));

    // hard links, across shards too
    let h = attr(&c, MdsReq::Link { ino: g.ino, newparent: ROOT, newname: "hl".into() }).await.unwrap();
    assert_eq!(h.nlink, 2);
    assert_eq!(attr(&c, MdsReq::Link { ino: d.ino, newparent: ROOT, newname: "dl".into() }).await, Err(Error::NotPermitted("hard link to a directory".into())));
    assert_eq!(attr(&c, MdsReq::Link { ino: g.ino, newparent: ROOT, newname: "f".into() }).await, Err(Error::Exists));
    mds_call(&c, MdsReq::Unlink { parent: d.ino, name: "g".into() }).await.unwrap();
    assert_eq!(attr(&c, MdsReq::GetAttr { ino: g.ino }).await.unwrap().nlink, 1);
    mds_call(&c, MdsReq::Unlink { parent: ROOT, name: "hl".into() }).await.unwrap();
    assert_eq!(attr(&c, MdsReq::GetAttr { ino: g.ino }).await, Err(Error::NotFound));

    // xattrs
    let sx = |name: &str, v: &[u8], flags: u32| MdsReq::SetXattr { ino: f.ino, name: name.into(), value: v.to_vec(), flags };
    mds_call(&c, sx("user.a", b"1", 0)).await.unwrap();
    assert_eq!(mds_call(&c, sx("user.a", b"2", XATTR_CREATE)).await, Err(Error::Exists));
    assert_eq!(mds_call(&c, sx("user.b", b"2", XATTR_REPLACE)).await, Err(Error::NoXattr));
    mds_call(&c, sx("user.b", b"2", XATTR_CREATE)).await.unwrap();
    assert_eq!(mds_call(&c, MdsReq::GetXattr { ino: f.ino, name: "user.a".into() }).await.unwrap(), MdsResp::Bytes(b"1".to_vec()));
    assert_eq!(mds_call(&c, MdsReq::ListXattr { ino: f.ino }).await.unwrap(), MdsResp::Names(vec!["user.a".into(), "user.b".into()]));
    mds_call(&c, MdsReq::RemoveXattr { ino: f.ino, name: "user.a".into() }).await.unwrap();
    assert_eq!(mds_call(&c, MdsReq::RemoveXattr { ino: f.ino, name: "user.a".into() }).await, Err(Error::NoXattr));
    assert_eq!(mds_call(&c, MdsReq::GetXattr { ino: f.ino, name: "user.a".into() }).await, Err(Error::NoXattr));
    assert_eq!(mds_call(&c, sx("user.big", &vec![0u8; 70_000], 0)).await, Err(Error::TooBig));

    assert_eq!(attr(&c, MdsReq::GetAttr { ino: f.ino }).await.unwrap().xattrs, 1, "xattr count follows set/remove");

    // readdir with attributes: one attr per entry, matching it
    match mds_call(&c, MdsReq::ReaddirPlus { ino: d.ino, cookie: 0, max: 100 }).await.unwrap() {
        MdsResp::DirPlus { entries, attrs, eof, parent, no_lease } => {
            assert!(eof);
            assert!(no_lease.is_empty(), "one process leads every shard: {no_lease:?}");
            assert_eq!(parent, ROOT);
            assert_eq!(entries.len(), attrs.len());
            assert!(!entries.is_empty());
            for (e, a) in entries.iter().zip(&attrs) {
                assert_eq!(e.ino, a.ino);
                assert_eq!(e.kind, a.kind);
            }
        }
        other => panic!("{other:?}"),
    }

    // statfs comes from the OSDs' capacity
    match mds_call(&c, MdsReq::Statfs).await.unwrap() {
        MdsResp::Statfs(s) => {
            assert!(s.total_bytes > 0 && s.avail_bytes <= s.total_bytes);
            assert!(s.files > 5);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layouts_inherit_and_admin_commands_need_the_admin_cert() {
    let cl = TestCluster::start(3, 4).await.unwrap();
    let c = cl.mds_client(Role::Client).unwrap();
    let admin = cl.mds_client(Role::Admin).unwrap();
    let d = attr(&c, mkdir(ROOT, "ckpt")).await.unwrap();
    let p = LayoutPolicy { stripe_size: 4 << 20, stripe_count: 2, replicas: 1 };
    assert!(matches!(mds_call(&c, MdsReq::SetStripe { ino: d.ino, policy: p }).await, Err(Error::Unauthorized(_))));
    assert!(matches!(mds_call(&c, MdsReq::Status).await, Err(Error::Unauthorized(_))));
    mds_call(&admin, MdsReq::SetStripe { ino: d.ino, policy: p }).await.unwrap();
    let bad = LayoutPolicy { stripe_size: 1000, ..p };
    assert!(matches!(mds_call(&admin, MdsReq::SetStripe { ino: d.ino, policy: bad }).await, Err(Error::InvalidArgument(_))));
    // inherited down the tree: a subdirectory made later, and files in it
    let sub = attr(&c, mkdir(d.ino, "step1")).await.unwrap();
    let f = attr(&c, create(sub.ino, "rank0")).await.unwrap();
    let l = f.layout.unwrap();
    assert_eq!((l.stripe_size, l.stripe_count), (4 << 20, 2));
    let other = attr(&c, create(ROOT, "x")).await.unwrap().layout.unwrap();
    assert_eq!((other.stripe_size, other.stripe_count), (1 << 20, 3));
    match mds_call(&admin, MdsReq::Status).await.unwrap() {
        MdsResp::Status(s) => {
            assert_eq!(s.shards.len(), 4);
            assert_eq!(s.osds.len(), 3);
            // each shard a one-member group led here, its log applied
            for x in &s.shards {
                assert_eq!((x.members.as_slice(), x.leader), (&[1u64][..], Some(1)), "shard {}", x.id);
                assert!(x.term >= 1 && x.applied > 0 && x.applied <= x.last_log, "shard {}: {x:?}", x.id);
            }
        }
        other => panic!("{other:?}"),
    }
    // sessions: opened, listed, evicted by the admin only; an evicted
    // session's heartbeat is refused as stale
    let sid = open_session(&c, "gpu7", true).await;
    mds_call(&c, MdsReq::SessionHeartbeat { id: sid, io: Default::default() }).await.unwrap();
    match mds_call(&admin, MdsReq::Status).await.unwrap() {
        MdsResp::Status(s) => assert!(s.sessions.iter().any(|x| x.id == sid && x.name == "gpu7" && x.leases == 0)),
        other => panic!("{other:?}"),
    }
    assert!(matches!(mds_call(&c, MdsReq::EvictSession { id: sid }).await, Err(Error::Unauthorized(_))));
    mds_call(&admin, MdsReq::EvictSession { id: sid }).await.unwrap();
    assert_eq!(mds_call(&admin, MdsReq::EvictSession { id: sid }).await, Err(Error::NotFound));
    assert_eq!(mds_call(&c, MdsReq::SessionHeartbeat { id: sid, io: Default::default() }).await, Err(Error::Stale));

    // OSD heartbeats need the OSD certificate
    assert!(matches!(mds_call(&c, heartbeat(99)).await, Err(Error::Unauthorized(_))));
}

fn heartbeat(id: u32) -> MdsReq {
    MdsReq::OsdHeartbeat { id: aifs_common::OsdId(id), addr: "127.0.0.1:1".into(), usage: aifs_common::proto::mds::OsdUsage { capacity: 1, ..Default::default() }, revoked_known: 0 }
}

/// An OSD's certificate names its id: it cannot heartbeat as another OSD
/// (and so move that OSD's address to itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_osd_certificate_speaks_for_its_own_id_alone() {
    let cl = TestCluster::start(2, 1).await.unwrap();
    let osd1 = Identity::load(&TlsConfig::in_dir(cl.dir.path(), "osd1")).unwrap();
    let c = RpcClient::new(rpc::client_endpoint(&osd1, &TransportConfig::default()).unwrap(), cl.mds.addr, Role::Mds);
    assert!(matches!(mds_call(&c, heartbeat(2)).await, Err(Error::Unauthorized(_))), "osd1 spoke for osd 2");
    assert!(matches!(mds_call(&c, heartbeat(3)).await, Err(Error::Unauthorized(_))), "osd1 registered an osd 3");
    let before = cl.ns().cluster.osds.infos().into_iter().find(|o| o.id.0 == 2).unwrap().addr;
    assert_ne!(before, "127.0.0.1:1", "osd 2's address was moved");
    assert!(matches!(mds_call(&c, heartbeat(1)).await, Ok(MdsResp::OsdBeat { .. })));
}

/// Certificates are valid for a bounded time: an expired one is refused
/// in the handshake. A renewal signs the same key again, so the node stays
/// who it was: its session answers to the renewed certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_certificates_are_refused_and_a_renewal_keeps_the_node_who_it_was() {
    use aifs_common::certs::{Node, DEFAULT_DAYS};
    let cl = TestCluster::start(1, 1).await.unwrap();
    let ca = cl.ca().unwrap();
    let nodes = cl.dir.path().join("nodes");
    let client_as = |stem: &str| {
        let t = TlsConfig { ca: cl.dir.path().join("ca.pem"), cert: nodes.join(format!("{stem}.pem")), key: nodes.join(format!("{stem}.key")) };
        RpcClient::new(rpc::client_endpoint(&Identity::load(&t).unwrap(), &TransportConfig::default()).unwrap(), cl.mds.addr, Role::Mds)
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    ca.issue_until(&Node::new(Role::Client, "old", None).unwrap(), &nodes, now - Duration::from_secs(60)).unwrap();
    assert!(matches!(mds_call(&client_as("old"), MdsReq::Statfs).await, Err(Error::Transport(_))), "an expired certificate was accepted");

    ca.issue(&Node::new(Role::Client, "gpu-x", None).unwrap(), &nodes, 1).unwrap();
    let first = client_as("gpu-x");
    let sid = open_session(&first, "x", false).await;
    let old_pem = std::fs::read(nodes.join("gpu-x.pem")).unwrap();
    ca.renew("gpu-x", &nodes, DEFAULT_DAYS).unwrap();
    assert_ne!(std::fs::read(nodes.join("gpu-x.pem")).unwrap(), old_pem);
    let renewed = client_as("gpu-x");
    assert!(matches!(mds_call(&renewed, MdsReq::SessionHeartbeat { id: sid, io: Default::default() }).await, Ok(MdsResp::Done)), "the renewed certificate lost its session");
}

/// A session answers to the certificate that opened it: another node's
/// client certificate, of the same cluster, can neither heartbeat it,
/// close it, act for it, nor take its place; its id is random.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_answer_only_to_the_certificate_that_opened_them() {
    let cl = TestCluster::start(1, 1).await.unwrap();
    let a = cl.mds_client_of_node(Role::Client, "gpu-a").unwrap();
    let b = cl.mds_client_of_node(Role::Client, "gpu-b").unwrap();
    let open = |previous| MdsReq::OpenSession { name: "n".into(), dir_leases: false, previous, open: vec![], locks: vec![] };
    let session = |r: MdsResp| match r {
        MdsResp::Session { id, .. } => id,
        other => panic!("{other:?}"),
    };
    let sa = session(mds_call(&a, open(vec![])).await.unwrap());
    let sb = session(mds_call(&b, open(vec![])).await.unwrap());
    // Random, not counted up: the ids share no long prefix.
    assert!(sa.0.abs_diff(sb.0) > 1 << 64, "{sa} and {sb} look sequential");
    let refused = |r: Result<MdsResp, Error>| matches!(r, Err(Error::Unauthorized(_)));
    assert!(refused(mds_call(&b, MdsReq::SessionHeartbeat { id: sa, io: Default::default() }).await), "heartbeat of another's session");
    assert!(refused(mds_call(&b, MdsReq::CloseSession { id: sa }).await), "close of another's session");
    assert!(refused(mds_call(&b, open(vec![sa])).await), "taking another's session's place");
    let ino = attr(&a, create(ROOT, "f")).await.unwrap().ino;
    let lock = |session| MdsReq::SetLock { ino, owner: 1, start: 0, end: 9, kind: aifs_common::proto::mds::LockKind::Write, pid: 1, session: Some(session) };
    assert!(refused(mds_call(&b, lock(sa)).await), "a lock under another's session");
    assert!(refused(mds_call(&b, MdsReq::Close { ino, session: Some(sa) }).await), "a close under another's session");
    // Its owner still has it, untouched.
    mds_call(&a, MdsReq::SessionHeartbeat { id: sa, io: Default::default() }).await.unwrap();
    mds_call(&a, lock(sa)).await.unwrap();
    mds_call(&b, MdsReq::SessionHeartbeat { id: sb, io: Default::default() }).await.unwrap();
    mds_call(&a, MdsReq::CloseSession { id: sa }).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_survives_a_restart_of_the_mds() {
    let dir;
    let ino;
    {
        let cl = TestCluster::start(1, 4).await.unwrap();
        let c = cl.mds_client(Role::Client).unwrap();
        let d = attr(&c, mkdir(ROOT, "keep")).await.unwrap();
        ino = attr(&c, create(d.ino, "file")).await.unwrap().ino;
        mds_call(&c, MdsReq::SetXattr { ino, name: "user.x".into(), value: b"v".to_vec(), flags: 0 }).await.unwrap();
        drop(c);
        let TestCluster { dir: d, mds, osds } = cl;
        drop(mds);
        drop(osds);
        dir = d;
    }
    // Reopen the same shard files in a new MDS, once the old one's
    // connection tasks have wound down and released the files.
    let mut ns = None;
    for _ in 0..100 {
        let r = aifs_mds::namespace::Namespace::open(
            &dir.path().join("mds"),
            4,
            LayoutPolicy::default(),
            std::sync::Arc::new(aifs_mds::cluster::Cluster::new(Duration::from_secs(5), Duration::from_secs(5))),
        )
        .await;
        match r {
            Ok(n) => {
                ns = Some(n);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let ns = ns.expect("shards could not be reopened");
    let d = ns.lookup(ROOT, "keep", &Cred::root()).await.unwrap();
    assert_eq!(ns.lookup(d.ino, "file", &Cred::root()).await.unwrap().ino, ino);
    assert_eq!(ns.getxattr(ino, "user.x", &Cred::root()).await.unwrap(), b"v");
    // the shard count is part of the format
    let bad = aifs_mds::namespace::Namespace::open(
        &dir.path().join("mds"),
        2,
        LayoutPolicy::default(),
        std::sync::Arc::new(aifs_mds::cluster::Cluster::new(Duration::from_secs(5), Duration::from_secs(5))),
    )
    .await;
    assert!(bad.is_err());
}

/// Create `name` in the root through `c`: its attributes and the
/// capability that came with the create.
async fn create_with_cap(c: &RpcClient, name: &str) -> (Attr, Cap) {
    match mds_call(c, create(ROOT, name)).await.unwrap() {
        MdsResp::Changed { attr: Some(a), cap: Some(cap), .. } => (a, cap),
        other => panic!("create: {other:?}"),
    }
}

/// An OSD client under `role`'s certificate.
fn osd_client(cl: &TestCluster, role: Role, osd: aifs_common::OsdId) -> RpcClient {
    let id = Identity::load(&aifs_tests::tls(cl.dir.path(), role)).unwrap();
    let ep = rpc::client_endpoint(&id, &TransportConfig::default()).unwrap();
    RpcClient::new(ep, cl.osds[(osd.0 - 1) as usize].addr, Role::Osd)
}

async fn osd_call(c: &RpcClient, cap: Option<Cap>, req: OsdReq, payload: &[bytes::Bytes]) -> (OsdResp, bytes::Bytes) {
    c.call::<_, OsdResp>(&OsdCall { cap, req }, payload).await.unwrap()
}

/// How long since the MDS last heard OSD `id`.
fn last_heard(cl: &TestCluster, id: u32) -> Duration {
    let o = cl.ns().cluster.osds.infos().into_iter().find(|o| o.id.0 == id).expect("the OSD is in the map");
    Duration::from_millis(o.last_seen_ms)
}

/// An OSD asked to heartbeat (`OsdReq::Beat`, as an MDS process that has
/// just taken the lead asks its OSDs, whose heartbeats its grace waits
/// for) beats at once, not at its next period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_osd_asked_to_heartbeat_beats_at_once() {
    let cl = TestCluster::start(1, 1).await.unwrap();
    let nodes = cl.dir.path().join("nodes");
    cl.ca().unwrap().issue(&aifs_common::certs::Node::new(Role::Osd, "osd2", Some(2)).unwrap(), &nodes, 1).unwrap();
    let cfg = aifs_osd::OsdConfig {
        id: 2,
        listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: None,
        advertise: None,
        mds: aifs_common::config::MdsAddrs::one(cl.mds.addr),
        data_dir: cl.dir.path().join("osd2"),
        heartbeat_ms: 3_600_000,
        limits: Default::default(),
        tls: TlsConfig { ca: cl.dir.path().join("ca.pem"), cert: nodes.join("osd2.pem"), key: nodes.join("osd2.key") },
        transport: TransportConfig::default(),
        log: None,
        log_format: Default::default(),
    };
    let osd = aifs_osd::start(cfg).await.unwrap();
    cl.wait_osds_up(2).await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(last_heard(&cl, 2) >= Duration::from_millis(800), "an hour's period, yet it beat again");
    let id = Identity::load(&aifs_tests::tls(cl.dir.path(), Role::Mds)).unwrap();
    let ep = rpc::client_endpoint(&id, &TransportConfig::default()).unwrap();
    let mds_cert = RpcClient::new(ep, osd.addr, Role::Osd);
    assert_eq!(osd_call(&mds_cert, None, OsdReq::Beat, &[]).await.0, OsdResp::Done);
    let t = std::time::Instant::now();
    while last_heard(&cl, 2) >= Duration::from_millis(500) {
        assert!(t.elapsed() < Duration::from_secs(10), "the OSD did not beat when asked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_round_trip_with_checksums_and_are_freed_on_unlink() {
    let cl = TestCluster::start(3, 2).await.unwrap();
    let c = cl.mds_client(Role::Client).unwrap();
    let (f, cap) = create_with_cap(&c, "obj").await;
    let l = f.layout.unwrap();
    let obj = ObjectId { ino: f.ino, index: 0 };
    let osd = osd_client(&cl, Role::Client, l.osds[0]);
    let admin = osd_client(&cl, Role::Admin, l.osds[0]);
    let cap = Some(cap);
    let data = bytes::Bytes::from(aifs_tests::pattern::bytes(1, 0, 300_000));
    let req = OsdReq::Write { obj, off: 5000, len: data.len() as u32, crcs: block_crcs(5000, &data) };
    assert_eq!(osd_call(&osd, cap, req, &[data.clone()]).await.0, OsdResp::Done);
    // a write whose crcs do not match its bytes is refused
    let req = OsdReq::Write { obj, off: 0, len: 10, crcs: vec![1] };
    assert!(matches!(osd_call(&osd, cap, req, &[bytes::Bytes::from_static(&[0u8; 10])]).await.0, OsdResp::Err(e) if e.code == 202));
    let (resp, body) = osd_call(&osd, cap, OsdReq::Read { obj, off: 6000, len: 100 }, &[]).await;
    match resp {
        OsdResp::Data { off, crcs, obj_size, .. } => {
            assert_eq!(off, 0, "reads widen to whole checksum blocks");
            assert_eq!(obj_size, 305_000);
            assert_eq!(block_crcs(off, &body), crcs);
            assert_eq!(&body[6000..6100], &data[1000..1100]);
            assert!(body[..5000].iter().all(|&b| b == 0));
        }
        other => panic!("{other:?}"),
    }
    // a range read brings just its bytes, with their crc
    let (resp, body) = osd_call(&osd, cap, OsdReq::ReadRange { obj, off: 6000, len: 100 }, &[]).await;
    assert_eq!(resp, OsdResp::Range { off: 6000, len: 100, crc: crc32c::crc32c(&data[1000..1100]), obj_size: 305_000 });
    assert_eq!(&body[..], &data[1000..1100]);
    assert_eq!(osd_call(&osd, cap, OsdReq::Commit { objs: vec![obj] }, &[]).await.0, OsdResp::Done);
    let stat = || osd_call(&admin, None, OsdReq::Stat { obj }, &[]);
    assert_eq!(stat().await.0, OsdResp::Stat { exists: true, size: 305_000 });
    // truncate through the MDS cuts the object before answering
    attr(&c, MdsReq::UpdateSize { ino: f.ino, size: 305_000, mtime_ns: 0 }).await.unwrap();
    attr(&c, MdsReq::SetAttr { ino: f.ino, set: SetAttr { size: Some(1000), ..Default::default() } }).await.unwrap();
    assert_eq!(stat().await.0, OsdResp::Stat { exists: true, size: 1000 });
    // unlink frees it in the background
    mds_call(&c, MdsReq::Unlink { parent: ROOT, name: "obj".into() }).await.unwrap();
    let mut gone = false;
    for _ in 0..100 {
        if stat().await.0 == (OsdResp::Stat { exists: false, size: 0 }) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "object not freed after unlink");
}

/// Unlinked files' objects go in batches (one `DeleteMany` per OSD for a
/// pass's jobs): every file's objects, on every OSD, are freed; a batch
/// past the limit is refused and the OSD serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_unlinked_files_are_freed_in_batches() {
    let cl = TestCluster::start(3, 2).await.unwrap();
    let c = cl.mds_client(Role::Client).unwrap();
    let admins: Vec<RpcClient> = (1..=3).map(|o| osd_client(&cl, Role::Admin, aifs_common::OsdId(o))).collect();
    let data = bytes::Bytes::from_static(b"shard");
    let mut objs = Vec::new();
    for i in 0..40 {
        let (f, cap) = create_with_cap(&c, &format!("rank{i}")).await;
        let l = f.layout.unwrap();
        for k in 0..l.stripe_count {
            let obj = ObjectId { ino: f.ino, index: k };
            for osd in l.object_osds(k) {
                let w = osd_client(&cl, Role::Client, *osd);
                let req = OsdReq::Write { obj, off: 0, len: 5, crcs: block_crcs(0, &data) };
                assert_eq!(osd_call(&w, Some(cap), req, &[data.clone()]).await.0, OsdResp::Done);
                objs.push((obj, osd.0));
            }
        }
    }
    assert!(objs.len() >= 40);
    for i in 0..40 {
        mds_call(&c, MdsReq::Unlink { parent: ROOT, name: format!("rank{i}") }).await.unwrap();
    }
    let exists = |obj: ObjectId, osd: u32| {
        let a = &admins[(osd - 1) as usize];
        async move { osd_call(a, None, OsdReq::Stat { obj }, &[]).await.0 != OsdResp::Stat { exists: false, size: 0 } }
    };
    let mut left = objs.len();
    for _ in 0..100 {
        left = 0;
        for &(obj, osd) in &objs {
            left += exists(obj, osd).await as usize;
        }
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(left, 0, "objects of unlinked files left on the OSDs");
    let too_many = vec![objs[0].0; aifs_common::proto::osd::MAX_DELETE_BATCH + 1];
    let (r, _) = osd_call(&admins[0], None, OsdReq::DeleteMany { objs: too_many }, &[]).await;
    assert!(matches!(r, OsdResp::Err(ref e) if e.code == Error::InvalidArgument(String::new()).code()), "{r:?}");
    assert!(matches!(osd_call(&admins[0], None, OsdReq::Usage, &[]).await.0, OsdResp::Usage { .. }));
}

/// Object 0 of a file on OSD 1, as a client certificate reaches it: the
/// requests the capability tests send there, and whether the OSD refused
/// one as unauthorized.
struct ObjectProbe {
    osd: RpcClient,
    obj: ObjectId,
    data: bytes::Bytes,
}

impl ObjectProbe {
    fn new(cl: &TestCluster, ino: InodeId) -> ObjectProbe {
        let osd = osd_client(cl, Role::Client, aifs_common::OsdId(1));
        ObjectProbe { osd, obj: ObjectId { ino, index: 0 }, data: bytes::Bytes::from_static(b"checkpoint") }
    }

    fn write(&self) -> OsdReq {
        OsdReq::Write { obj: self.obj, off: 0, len: 10, crcs: block_crcs(0, &self.data) }
    }

    fn read(&self) -> OsdReq {
        OsdReq::Read { obj: self.obj, off: 0, len: 10 }
    }

    /// `req` under `cap`; a write carries the probe's bytes.
    async fn send(&self, cap: Option<Cap>, req: OsdReq) -> OsdResp {
        let payload = match req {
            OsdReq::Write { .. } => vec![self.data.clone()],
            _ => vec![],
        };
        osd_call(&self.osd, cap, req, &payload).await.0
    }
}

fn refused(r: &OsdResp) -> bool {
    matches!(r, OsdResp::Err(e) if e.code == 304)
}

/// A client certificate alone opens no object: each object request needs
/// a capability from the MDS over that file, granting what it does, and
/// whole-store requests need the mds or admin role.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_alone_opens_no_object() {
    let cl = TestCluster::start(1, 1).await.unwrap();
    let c = cl.mds_client(Role::Client).unwrap();
    let (f, rw) = create_with_cap(&c, "mine").await;
    let (other, _) = create_with_cap(&c, "theirs").await;
    let p = ObjectProbe::new(&cl, f.ino);

    assert!(refused(&p.send(None, p.write()).await), "write without a capability");
    assert!(refused(&p.send(None, p.read()).await), "read without a capability");
    assert_eq!(p.send(Some(rw), p.write()).await, OsdResp::Done);
    // Another file's capability, or this one altered, opens nothing.
    let (_, theirs) = match mds_call(&c, MdsReq::Open { ino: other.ino, write: true, first: false, exclusive: false }).await.unwrap() {
        MdsResp::Opened { attr, cap, .. } => (attr, cap),
        r => panic!("{r:?}"),
    };
    assert!(refused(&p.send(Some(theirs), p.read()).await), "another file's capability");
    let mut forged = theirs;
    forged.ino = f.ino;
    assert!(refused(&p.send(Some(forged), p.read()).await), "a capability altered to name this file");
    let mut longer = rw;
    longer.expires_ms += 3_600_000;
    assert!(refused(&p.send(Some(longer), p.read()).await), "a capability altered to last longer");
    // Objects past the file's layout are not the capability's to make.
    let beyond = ObjectId { ino: f.ino, index: f.layout.as_ref().unwrap().stripe_count };
    let far = OsdReq::Write { obj: beyond, off: 0, len: 10, crcs: block_crcs(0, &p.data) };
    assert!(refused(&p.send(Some(rw), far).await), "a write to an object the layout has not");
    // A read open's capability reads, and does not write.
    let ro = match mds_call(&c, MdsReq::Open { ino: f.ino, write: false, first: false, exclusive: false }).await.unwrap() {
        MdsResp::Opened { cap, .. } => cap,
        r => panic!("{r:?}"),
    };
    assert!(matches!(p.send(Some(ro), p.read()).await, OsdResp::Data { .. }));
    assert!(refused(&p.send(Some(ro), p.write()).await), "write under a read capability");
    // A renewal grants the same.
    match mds_call(&c, MdsReq::Cap { ino: f.ino, write: true }).await.unwrap() {
        MdsResp::Cap(cap) => assert_eq!(p.send(Some(cap), p.write()).await, OsdResp::Done),
        r => panic!("{r:?}"),
    }
    // Whole-store requests are the operator's, capability or not.
    for req in [OsdReq::Beat, OsdReq::Delete { obj: p.obj }, OsdReq::DeleteMany { objs: vec![p.obj] }, OsdReq::Truncate { obj: p.obj, size: 0 }, OsdReq::Stat { obj: p.obj }, OsdReq::Verify { obj: p.obj }, OsdReq::List { after: None, max: 10 }] {
        assert!(refused(&p.send(Some(rw), req.clone()).await), "{req:?} from a client");
    }
    let admin = osd_client(&cl, Role::Admin, aifs_common::OsdId(1));
    assert_eq!(osd_call(&admin, None, OsdReq::Stat { obj: p.obj }, &[]).await.0, OsdResp::Stat { exists: true, size: 10 });
}

/// A capability carries the rights the caller has: a write-only file opened
/// for writing gives no read, and neither a write lease nor a read lease
/// taken by a lookup or a stat yields a read capability by renewal to
/// someone who may not read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capability_carries_only_the_rights_its_caller_has() {
    let cl = TestCluster::start(1, 1).await.unwrap();
    let c = cl.mds_client(Role::Client).unwrap();
    mds_call(&c, MdsReq::OpenSession { name: "n".into(), dir_leases: false, previous: vec![], open: vec![], locks: vec![] }).await.unwrap();
    let (f, _) = create_with_cap(&c, "write-only").await;
    let owner = Cred::user(1000, 100, vec![]);
    let set = SetAttr { mode: Some(0o200), uid: Some(1000), gid: Some(100), ..Default::default() };
    attr(&c, MdsReq::SetAttr { ino: f.ino, set }).await.unwrap();
    // the creator's open ends: its rights go with it
    mds_call(&c, MdsReq::Close { ino: f.ino, session: None }).await.unwrap();

    let p = ObjectProbe::new(&cl, f.ino);
    let denied = |r: Result<MdsResp, Error>| matches!(r, Err(Error::PermissionDenied));

    let open = |write| MdsReq::Open { ino: f.ino, write, first: true, exclusive: false };
    let wo = match mds_call_as(&c, open(true), owner.clone()).await.unwrap() {
        MdsResp::Opened { cap, .. } => cap,
        r => panic!("{r:?}"),
    };
    assert_eq!(p.send(Some(wo), p.write()).await, OsdResp::Done);
    assert!(refused(&p.send(Some(wo), p.read()).await), "a write-only open's capability read");
    assert!(denied(mds_call_as(&c, open(false), owner.clone()).await), "a write-only file opened for reading");
    // The session holds a write lease and a write open: neither reads.
    let renew = |write| MdsReq::Cap { ino: f.ino, write };
    assert!(denied(mds_call_as(&c, renew(false), owner.clone()).await), "a read capability by renewal under a write lease");
    match mds_call_as(&c, renew(true), owner.clone()).await.unwrap() {
        MdsResp::Cap(cap) => assert!(refused(&p.send(Some(cap), p.read()).await), "a renewed write capability read"),
        r => panic!("{r:?}"),
    }
    // A file another user looked at (a read lease) stays closed to them.
    let (g, _) = create_with_cap(&c, "private").await;
    attr(&c, MdsReq::SetAttr { ino: g.ino, set: SetAttr { mode: Some(0o600), ..Default::default() } }).await.unwrap();
    mds_call(&c, MdsReq::Close { ino: g.ino, session: None }).await.unwrap();
    let other = Cred::user(2000, 200, vec![]);
    mds_call_as(&c, MdsReq::GetAttr { ino: g.ino }, other.clone()).await.unwrap();
    assert!(denied(mds_call_as(&c, MdsReq::Cap { ino: g.ino, write: false }, other.clone()).await), "a read capability by renewal under a stat's lease");
    // while its owner (root) reads it
    assert!(matches!(mds_call(&c, MdsReq::Cap { ino: g.ino, write: false }).await, Ok(MdsResp::Cap(_))));
}

/// Open a raw stream to the MDS and send `bytes`; returns what came back.
/// The server may stop reading a bad frame before all of it arrived, so a
/// refused write does not end the exchange: its reply is still read.
async fn raw(ep: &quinn::Endpoint, addr: std::net::SocketAddr, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let conn = ep.connect(addr, "mds.aifs").map_err(|e| e.to_string())?.await.map_err(|e| e.to_string())?;
    let (mut s, mut r) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let _ = s.write_all(bytes).await;
    let _ = s.finish();
    r.read_to_end(1 << 20).await.map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_get_errors_and_the_server_serves_on() {
    let cl = TestCluster::start(1, 1).await.unwrap();
    let id = Identity::load(&aifs_tests::tls(cl.dir.path(), Role::Client)).unwrap();
    let ep = rpc::client_endpoint(&id, &TransportConfig::default()).unwrap();
    let addr = cl.mds.addr;
    let good = aifs_common::proto::Message::encode(&MdsReq::Statfs).unwrap();
    let mut garbage_hdr = (64u32).to_le_bytes().to_vec();
    garbage_hdr.extend_from_slice(&[0xAB; 64]);
    let mut truncated = aifs_common::proto::frame::framed_header(&good).unwrap();
    let promised = u32::from_le_bytes([truncated[0], truncated[1], truncated[2], truncated[3]]) + 10;
    truncated[..4].copy_from_slice(&promised.to_le_bytes());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage header", garbage_hdr),
        ("oversized length", (u32::MAX).to_le_bytes().to_vec()),
        ("zero length", 0u32.to_le_bytes().to_vec()),
        ("truncated header", truncated),
        ("two bytes", vec![1, 2]),
    ];
    for (what, bytes) in cases {
        // Every bad frame is answered with a protocol error.
        let reply = raw(&ep, addr, &bytes).await.unwrap_or_else(|e| panic!("{what}: no reply ({e})"));
        assert!(reply.len() > 4, "{what}: a reply of {} bytes", reply.len());
        let a = aifs_common::proto::frame::unpack(&reply[4..], 1 << 20).unwrap();
        let resp: MdsResp = aifs_common::proto::Message::decode(&a).unwrap();
        assert!(matches!(resp, MdsResp::Err(ref e) if e.code == 302), "{what}: expected a protocol error reply, got {resp:?}");
        // and a well-formed request on a fresh connection still works
        let c = cl.mds_client(Role::Client).unwrap();
        assert!(matches!(mds_call(&c, MdsReq::Statfs).await, Ok(MdsResp::Statfs(_))), "{what}: server stopped serving");
    }
    // a random stream of frames of random garbage, on one connection
    let conn = ep.connect(addr, "mds.aifs").unwrap().await.unwrap();
    for i in 0..50u32 {
        let (mut s, mut r) = conn.open_bi().await.unwrap();
        let junk = aifs_tests::pattern::bytes(i as u64, 0, (i as usize * 37) % 300);
        let _ = s.write_all(&junk).await;
        let _ = s.finish();
        let _ = r.read_to_end(1 << 20).await;
    }
    let c = cl.mds_client(Role::Client).unwrap();
    assert!(matches!(mds_call(&c, MdsReq::Statfs).await, Ok(MdsResp::Statfs(_))));

    // The OSD: a write header announcing more payload than any stripe unit,
    // and one whose payload is cut short. Both get errors; reads go on.
    let osd = cl.osds[0].addr;
    let obj = ObjectId { ino: InodeId(5), index: 0 };
    let huge = OsdReq::Write { obj, off: 0, len: u32::MAX, crcs: vec![] };
    let short = OsdReq::Write { obj, off: 0, len: 1000, crcs: block_crcs(0, &[0u8; 1000]) };
    for req in [huge, short] {
        let h = aifs_common::proto::Message::encode(&OsdCall::from(req.clone())).unwrap();
        let mut frame = aifs_common::proto::frame::framed_header(&h).unwrap();
        frame.extend_from_slice(&[0u8; 10]);
        let conn = ep.connect(osd, "osd.aifs").unwrap().await.unwrap();
        let (mut s, mut r) = conn.open_bi().await.unwrap();
        s.write_all(&frame).await.unwrap();
        s.finish().unwrap();
        let reply = r.read_to_end(1 << 20).await.unwrap();
        let a = aifs_common::proto::frame::unpack(&reply[4..], 1 << 20).unwrap();
        let resp: OsdResp = aifs_common::proto::Message::decode(&a).unwrap();
        assert!(matches!(resp, OsdResp::Err(ref e) if e.code == 302), "{req:?}: {resp:?}");
    }
    let oc = RpcClient::new(ep.clone(), osd, Role::Osd);
    assert!(matches!(oc.call::<_, OsdResp>(&OsdCall::from(OsdReq::Usage), &[]).await.unwrap().0, OsdResp::Usage { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_without_a_cluster_certificate_are_refused() {
    let cl = TestCluster::start(1, 1).await.unwrap();
    // A certificate from another cluster's CA.
    let other = tempfile::tempdir().unwrap();
    aifs_common::certs::init_cluster(other.path(), &other.path().join("ca"), 0, false).unwrap();
    let foreign = TlsConfig {
        ca: cl.dir.path().join("ca.pem"),
        cert: other.path().join("client.pem"),
        key: other.path().join("client.key"),
    };
    let id = Identity::load(&foreign).unwrap();
    let ep = rpc::client_endpoint(&id, &TransportConfig::default()).unwrap();
    let c = RpcClient::new(ep, cl.mds.addr, Role::Mds);
    assert!(matches!(mds_call(&c, MdsReq::Statfs).await, Err(Error::Transport(_))), "foreign certificate accepted");

    // No client certificate at all.
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(cl.dir.path().join("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    // The protocol the servers speak, so that only the missing certificate
    // stands in the way.
    tls.alpn_protocols = vec![aifs_common::rpc::tls::ALPN.to_vec()];
    let qc = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(quinn::ClientConfig::new(std::sync::Arc::new(qc)));
    let c = RpcClient::new(ep, cl.mds.addr, Role::Mds);
    assert!(matches!(mds_call(&c, MdsReq::Statfs).await, Err(Error::Transport(_))), "peer without certificate accepted");

    // The server still serves its own.
    let ok = cl.mds_client(Role::Client).unwrap();
    assert!(matches!(mds_call(&ok, MdsReq::Statfs).await, Ok(MdsResp::Statfs(_))));
}

/// A request sent again with its id after a lost reply is answered as the
/// first attempt was, not applied again; a request without an id, or a
/// new one, is applied (and fails) as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_request_is_answered_from_its_record_not_applied_twice() {
    use aifs_common::proto::mds::{MdsCall, MdsReply, ReqId};
    let cl = TestCluster::start(1, 4).await.unwrap();
    let c = cl.mds_client(Role::Client).unwrap();
    let send = |req: MdsReq, seq: u64, retry: bool| {
        let c = &c;
        async move {
            let rid = (seq != 0).then_some(ReqId { client: 77, seq, oldest: 1, retry });
            c.call::<_, MdsReply>(&MdsCall { rid, ..MdsCall::from(req) }, &[]).await.unwrap().0.into_result().map(|(r, _)| r)
        }
    };
    let ino = |r: Result<MdsResp, Error>| match r {
        Ok(MdsResp::Changed { attr: Some(a), .. }) => a.ino,
        other => panic!("{other:?}"),
    };
    let d = ino(send(mkdir(ROOT, "ckpt"), 1, false).await);
    assert_eq!(ino(send(mkdir(ROOT, "ckpt"), 1, true).await), d);
    assert_eq!(send(mkdir(ROOT, "ckpt"), 2, true).await.unwrap_err(), Error::Exists);
    let f = ino(send(create(d, "tmp"), 3, false).await);
    assert_eq!(ino(send(create(d, "tmp"), 3, true).await), f);
    let mv = MdsReq::Rename { parent: d, name: "tmp".into(), newparent: ROOT, newname: "final".into(), flags: 0 };
    send(mv.clone(), 4, false).await.unwrap();
    send(mv.clone(), 4, true).await.unwrap();
    assert_eq!(send(mv, 0, false).await.unwrap_err(), Error::NotFound);
    assert_eq!(attr(&c, MdsReq::Lookup { parent: ROOT, name: "final".into() }).await.unwrap().ino, f);
    let rm = MdsReq::Unlink { parent: ROOT, name: "final".into() };
    send(rm.clone(), 5, false).await.unwrap();
    send(rm.clone(), 5, true).await.unwrap();
    assert_eq!(send(rm, 6, false).await.unwrap_err(), Error::NotFound);
    // a session open whose reply was lost: the retry gets the same session
    let open = MdsReq::OpenSession { name: "gpu1".into(), dir_leases: false, previous: vec![], open: vec![], locks: vec![] };
    let sid = |r: Result<MdsResp, Error>| match r {
        Ok(MdsResp::Session { id, .. }) => id,
        other => panic!("{other:?}"),
    };
    let s1 = sid(send(open.clone(), 7, false).await);
    assert_eq!(sid(send(open.clone(), 7, true).await), s1);
    assert_ne!(sid(send(open, 8, false).await), s1);
}

/// The MDS decides for itself what mknod may make: device nodes for uid 0
/// alone, special kinds only, and a device node's number is no size a
/// truncate could change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mknod_makes_special_files_and_device_nodes_for_root_alone() {
    let cl = TestCluster::start(1, 2).await.unwrap();
    let c = cl.mds_client(Role::Client).unwrap();
    let node = |name: &str, kind: FileKind| MdsReq::Mknod { parent: ROOT, name: name.into(), kind, mode: 0o640, rdev: 0x0703 };
    let user = Cred::user(1000, 100, vec![]);
    assert!(matches!(mds_call(&c, MdsReq::SetAttr { ino: ROOT, set: SetAttr { mode: Some(0o777), ..Default::default() } }).await, Ok(_)));
    let as_user = |req| mds_call_as(&c, req, user.clone());
    assert!(matches!(as_user(node("dev", FileKind::CharDev)).await, Err(Error::NotPermitted(_))), "a user made a device node");
    assert!(matches!(attr(&c, node("f", FileKind::File)).await, Err(Error::InvalidArgument(_))));
    let fifo = match as_user(node("fifo", FileKind::Fifo)).await.unwrap() {
        MdsResp::Changed { attr: Some(a), .. } => a,
        other => panic!("{other:?}"),
    };
    assert_eq!((fifo.kind, fifo.perm, fifo.uid, fifo.gid, fifo.rdev, fifo.layout), (FileKind::Fifo, 0o640, 1000, 100, 0, None));
    let dev = attr(&c, node("dev", FileKind::BlockDev)).await.unwrap();
    assert_eq!((dev.kind, dev.size, dev.rdev), (FileKind::BlockDev, 0, 0x0703));
    let set = SetAttr { mode: None, uid: None, gid: None, size: Some(5), atime: None, mtime: None };
    assert!(matches!(mds_call(&c, MdsReq::SetAttr { ino: dev.ino, set }).await, Err(Error::InvalidArgument(_))));
    assert_eq!(attr(&c, MdsReq::GetAttr { ino: dev.ino }).await.unwrap().rdev, 0x0703);
    assert!(matches!(mds_call(&c, MdsReq::Open { ino: fifo.ino, write: false, first: true, exclusive: false }).await, Err(_)), "a FIFO opened for data");
}

/// A file with no name (`O_TMPFILE`) is made under a session only, in a
/// directory its caller may write; a name is given to it only by a session
/// that has it open, only if it was made linkable, and only once (named
/// and unlinked again, it is an ordinary orphan). Left with no name, it is
/// freed at its last close. Its name may be in another shard's directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nameless_file_is_named_only_by_a_session_that_has_it_open() {
    let cl = TestCluster::start(1, 4).await.unwrap();
    let c = cl.mds_client_of_node(Role::Client, "maker").unwrap();
    let other = cl.mds_client_of_node(Role::Client, "other").unwrap();
    let tmp = |parent, linkable| MdsReq::TmpFile { parent, mode: 0o640, linkable };
    assert!(matches!(mds_call(&c, tmp(ROOT, true)).await, Err(Error::InvalidArgument(_))), "made outside a session");
    let open = |name: &str| MdsReq::OpenSession { name: name.into(), dir_leases: false, previous: vec![], open: vec![], locks: vec![] };
    let s = match mds_call(&c, open("maker")).await.unwrap() {
        MdsResp::Session { id, .. } => id,
        r => panic!("{r:?}"),
    };
    // (`other` opens no session: it would have to answer recalls)
    let mut dirs = Vec::new();
    for i in 0..8 {
        dirs.push(attr(&c, mkdir(ROOT, &format!("d{i}"))).await.unwrap().ino);
    }
    let d = dirs[0];
    let e = *dirs.iter().find(|x| x.shard() != d.shard()).expect("a directory on another shard");
    let user = Cred::user(1000, 100, vec![]);
    assert!(matches!(mds_call_as(&c, tmp(d, true), user).await, Err(Error::PermissionDenied)), "made in a directory the caller may not write");

    let made = attr(&c, tmp(d, true)).await.unwrap();
    assert_eq!((made.kind, made.nlink, made.perm, made.ino.shard()), (FileKind::File, 0, 0o640, d.shard()));
    assert!(names(&c, d).await.is_empty(), "a nameless file has an entry");
    let link = |ino, dir, name: &str| MdsReq::Link { ino, newparent: dir, newname: name.into() };
    assert!(matches!(mds_call(&other, link(made.ino, e, "stolen")).await, Err(Error::NotFound)), "named by a client without it open");
    let named = attr(&c, link(made.ino, e, "latest")).await.unwrap();
    assert_eq!(named.nlink, 1);
    assert_eq!(attr(&c, MdsReq::Lookup { parent: e, name: "latest".into() }).await.unwrap().ino, made.ino);
    // Named once: unlinked again while open, it cannot be named again.
    mds_call(&c, MdsReq::Unlink { parent: e, name: "latest".into() }).await.unwrap();
    assert!(matches!(mds_call(&c, link(made.ino, e, "again")).await, Err(Error::NotFound)), "an orphan named again");

    let excl = attr(&c, tmp(d, false)).await.unwrap();
    assert!(matches!(mds_call(&c, link(excl.ino, d, "x")).await, Err(Error::NotFound)), "an O_EXCL file named");
    let kept = attr(&c, tmp(d, true)).await.unwrap();
    attr(&c, link(kept.ino, d, "kept")).await.unwrap();
    // Closed: the nameless ones are freed, the named one stays.
    for a in [&made, &excl, &kept] {
        mds_call(&c, MdsReq::Close { ino: a.ino, session: Some(s) }).await.unwrap();
    }
    for a in [&made, &excl] {
        assert!(matches!(attr(&other, MdsReq::GetAttr { ino: a.ino }).await, Err(Error::NotFound)), "a nameless file outlived its last close");
    }
    assert_eq!(attr(&other, MdsReq::GetAttr { ino: kept.ino }).await.unwrap().nlink, 1);
}

/// A holder that keeps its session alive but never answers a recall holds
/// the others up for one lease term, not for ever: then it is evicted, the
/// waiting open is granted, and the eviction is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_ignores_recalls_is_evicted_after_a_term() {
    let cl = TestCluster::start_with(1, 1, |m| m.session_timeout_ms = 2_000).await.unwrap();
    let admin = cl.mds_client(Role::Admin).unwrap();
    let open_session = |name: &str| MdsReq::OpenSession { name: name.into(), dir_leases: false, previous: vec![], open: vec![], locks: vec![] };
    let session = |r: MdsResp| match r {
        MdsResp::Session { id, .. } => id,
        other => panic!("{other:?}"),
    };
    // a raw client: it heartbeats, but serves no recall
    let deaf = std::sync::Arc::new(cl.mds_client_of_node(Role::Client, "deaf").unwrap());
    let sid = session(mds_call(&deaf, open_session("deaf")).await.unwrap());
    let ino = attr(&deaf, create(ROOT, "f")).await.unwrap().ino;
    let open = |ino| MdsReq::Open { ino, write: true, first: true, exclusive: true };
    mds_call(&deaf, open(ino)).await.unwrap();
    // both heartbeat, as a mount does
    let heartbeat = |c: std::sync::Arc<RpcClient>, id| {
        tokio::spawn(async move {
            while mds_call(&c, MdsReq::SessionHeartbeat { id, io: Default::default() }).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let beat = heartbeat(deaf.clone(), sid);
    let other = std::sync::Arc::new(cl.mds_client_of_node(Role::Client, "other").unwrap());
    let other_beat = heartbeat(other.clone(), session(mds_call(&other, open_session("other")).await.unwrap()));
    let t = std::time::Instant::now();
    let r = mds_call(&other, open(ino)).await;
    assert!(matches!(r, Ok(MdsResp::Opened { .. })), "{r:?} after {:?}", t.elapsed());
    assert!(t.elapsed() >= Duration::from_millis(1_500), "granted before the holder was given its term: {:?}", t.elapsed());
    tokio::time::timeout(Duration::from_secs(5), beat).await.expect("the evicted session still heartbeats").unwrap();
    match mds_call(&admin, MdsReq::Status).await.unwrap() {
        MdsResp::Status(s) => {
            assert!(!s.sessions.iter().any(|x| x.id == sid));
            assert!(s.evictions.iter().any(|e| e.id == sid && e.name == "deaf" && e.why.contains("recall")), "{:?}", s.evictions);
        }
        other => panic!("{other:?}"),
    }
    other_beat.abort();
}

/// What one session may hold is bounded: past `max_open_files` an open
/// fails with ENFILE (until a close), past `max_leases` lookups and stats
/// are answered without a lease; and a session's name is a name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_holds_no_more_than_its_limits() {
    use aifs_common::proto::mds::{MdsCall, MdsReply};
    use aifs_mds::cluster::SessionLimits;
    let cl = TestCluster::start_with(1, 1, |m| m.session_limits = SessionLimits { max_leases: 4, max_open_files: 2, max_locks: 3, max_reserved: 16_384, max_sessions: 2 }).await.unwrap();
    // files another client made, before this one holds anything
    for i in 0..2 {
        mds_call(&cl.mds_client(Role::Client).unwrap(), create(ROOT, &format!("other{i}"))).await.unwrap();
    }
    let c = cl.mds_client_of_node(Role::Client, "greedy").unwrap();
    let open_session = |name: String| MdsReq::OpenSession { name, dir_leases: false, previous: vec![], open: vec![], locks: vec![] };
    assert!(matches!(mds_call(&c, open_session("x".repeat(256))).await, Err(Error::NameTooLong)));
    assert!(matches!(mds_call(&c, open_session("bad\nname".into())).await, Err(Error::InvalidArgument(_))));
    let sid = match mds_call(&c, open_session("greedy".into())).await.unwrap() {
        MdsResp::Session { id, .. } => id,
        other => panic!("{other:?}"),
    };
    let a = attr(&c, create(ROOT, "a")).await.unwrap().ino;
    attr(&c, create(ROOT, "b")).await.unwrap();
    assert!(matches!(attr(&c, create(ROOT, "c")).await, Err(Error::TooManyOpen(_))), "a third file opened");
    assert_eq!(aifs_common::errno(&Error::TooManyOpen(String::new())), libc::ENFILE);
    mds_call(&c, MdsReq::Close { ino: a, session: Some(sid) }).await.unwrap();
    let d = attr(&c, create(ROOT, "c")).await.unwrap().ino;
    // leases on ROOT, a, b, c (4): a stat of another file comes without
    // one; of a file it holds, with it
    let granted = |req: MdsReq| {
        let c = &c;
        async move { c.call::<_, MdsReply>(&MdsCall::from(req), &[]).await.unwrap().0.session }
    };
    assert_eq!(granted(MdsReq::GetAttr { ino: d }).await, Some(sid), "a stat of a file it holds lost its lease");
    let other = attr(&c, MdsReq::Lookup { parent: ROOT, name: "other0".into() }).await.unwrap();
    assert_eq!(granted(MdsReq::GetAttr { ino: other.ino }).await, None, "a lease past the session's limit");
    assert_eq!(cl.ns().cluster.leases.lock().unwrap().touched(sid), 4);
    // three lock segments; a fourth, or an unlock that would split one, is ENOLCK
    use aifs_common::proto::mds::LockKind;
    let lock = |start: u64, end: u64, kind: LockKind| MdsReq::SetLock { ino: d, owner: 1, start, end, kind, pid: 7, session: Some(sid) };
    for k in 0..3 {
        mds_call(&c, lock(k * 100, k * 100 + 9, LockKind::Write)).await.unwrap();
    }
    assert!(matches!(mds_call(&c, lock(1000, 1009, LockKind::Write)).await, Err(Error::NoLocks(_))));
    assert!(matches!(mds_call(&c, lock(3, 4, LockKind::Unlock)).await, Err(Error::NoLocks(_))));
    assert_eq!(aifs_common::errno(&Error::NoLocks(String::new())), libc::ENOLCK);
    mds_call(&c, lock(0, 9, LockKind::Unlock)).await.unwrap();
    mds_call(&c, lock(1000, 1009, LockKind::Read)).await.unwrap();
    // two live sessions per certificate (naming a live one as `previous`
    // does not end it); one closed makes room; other certificates have
    // their own
    mds_call(&c, open_session("second".into())).await.unwrap();
    assert!(matches!(mds_call(&c, open_session("third".into())).await, Err(Error::TooManyOpen(_))), "a third session");
    let replace = MdsReq::OpenSession { name: "again".into(), dir_leases: false, previous: vec![sid], open: vec![], locks: vec![] };
    assert!(matches!(mds_call(&c, replace).await, Err(Error::TooManyOpen(_))), "a third session in place of a live one");
    mds_call(&c, MdsReq::CloseSession { id: sid }).await.unwrap();
    mds_call(&c, open_session("third".into())).await.unwrap();
    mds_call(&cl.mds_client(Role::Client).unwrap(), open_session("another certificate".into())).await.unwrap();
}

/// Inode numbers reserved for creates under a directory's write lease are
/// bounded per certificate (`max_reserved`) and freed when the client gives
/// them back: a create under one given back is refused, and the room is
/// there again. Another certificate cannot give back what is not its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_numbers_are_bounded_per_certificate_and_given_back() {
    use aifs_common::proto::mds::{DirOp, Reserved, RESERVE_BATCH};
    use aifs_mds::cluster::SessionLimits;
    let cl = TestCluster::start_with(1, 1, |m| m.session_limits = SessionLimits { max_reserved: 600, ..Default::default() }).await.unwrap();
    let c = cl.mds_client_of_node(Role::Client, "maker").unwrap();
    let other = cl.mds_client_of_node(Role::Client, "other").unwrap();
    let d = attr(&other, mkdir(ROOT, "d")).await.unwrap().ino;
    mds_call(&c, MdsReq::OpenSession { name: "maker".into(), dir_leases: true, previous: vec![], open: vec![], locks: vec![] }).await.unwrap();
    // The first create there brings the directory's write lease and a batch.
    let first = match mds_call(&c, create(d, "first")).await.unwrap() {
        MdsResp::Changed { writable: Some(w), .. } => w.reserved,
        r => panic!("no write lease: {r:?}"),
    };
    assert_eq!(first.len(), RESERVE_BATCH as usize);
    let reserve = |count| MdsReq::Reserve { dir: d, count };
    assert!(matches!(mds_call(&c, reserve(RESERVE_BATCH)).await, Err(Error::TooManyOpen(_))), "reserved past max_reserved");
    let more = match mds_call(&c, reserve(600 - RESERVE_BATCH)).await.unwrap() {
        MdsResp::Reserved(v) => v,
        r => panic!("{r:?}"),
    };
    assert!(matches!(mds_call(&c, reserve(1)).await, Err(Error::TooManyOpen(_))));
    // Given back by another certificate: nothing changes.
    let inos: Vec<InodeId> = first.iter().map(|r| r.ino).collect();
    mds_call(&other, MdsReq::Unreserve { inos: inos.clone() }).await.unwrap();
    assert!(matches!(mds_call(&c, reserve(1)).await, Err(Error::TooManyOpen(_))), "another certificate gave back the maker's numbers");
    // Given back by the maker: gone, and the room is there again.
    mds_call(&c, MdsReq::Unreserve { inos }).await.unwrap();
    let make = |r: &Reserved, name: &str| DirOp::Create { parent: d, name: name.into(), ino: r.ino, layout: r.layout.clone(), mode: 0o644, cred: Cred::root(), time_ns: 0, open: false };
    let ops = vec![make(&first[0], "given-back"), make(&more[0], "kept")];
    match mds_call(&c, MdsReq::Apply { session: None, ops }).await.unwrap() {
        MdsResp::Applied(rs) => {
            assert!(rs[0].is_some(), "a create under a number given back was applied");
            assert!(rs[1].is_none(), "a create under a number held was refused: {:?}", rs[1]);
        }
        r => panic!("{r:?}"),
    }
    assert!(matches!(mds_call(&c, reserve(RESERVE_BATCH)).await, Ok(MdsResp::Reserved(v)) if v.len() == RESERVE_BATCH as usize));
    let too_many = vec![InodeId(1); aifs_common::proto::mds::MAX_UNRESERVE + 1];
    assert!(matches!(mds_call(&c, MdsReq::Unreserve { inos: too_many }).await, Err(Error::InvalidArgument(_))));
}

/// Only a client using a file reports its replicas stale, and never the last
/// healthy replica of an object (a report that would leave none is
/// refused whole). An admin lists the records and clears them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_replicas_come_from_users_of_the_file_and_one_healthy_copy_always_stays() {
    use aifs_common::proto::mds::{Degraded, OsdState};
    let cl = TestCluster::start_with(4, 1, |c| c.osd_timeout_ms = 1_000).await.unwrap();
    let c = cl.mds_client(Role::Client).unwrap();
    let other = cl.mds_client(Role::Client).unwrap();
    let admin = cl.mds_client(Role::Admin).unwrap();
    let d = attr(&other, mkdir(ROOT, "rep")).await.unwrap();
    let p = LayoutPolicy { stripe_size: 1 << 20, stripe_count: 1, replicas: 3 };
    mds_call(&admin, MdsReq::SetStripe { ino: d.ino, policy: p }).await.unwrap();
    // (a session opened after that change: this client serves no recalls)
    let sid = open_session(&c, "writer", false).await;
    let f = attr(&c, create(d.ino, "f")).await.unwrap();
    let r = f.layout.unwrap().object_osds(0).to_vec();
    // Two of the three replicas' OSDs go down, so repair leaves their
    // records alone while the test looks.
    for o in &r[..2] {
        cl.osds[(o.0 - 1) as usize].shutdown();
    }
    let t = std::time::Instant::now();
    loop {
        match mds_call(&admin, MdsReq::Status).await.unwrap() {
            MdsResp::Status(s) if s.osds.iter().filter(|o| r[..2].contains(&o.id) && o.state == OsdState::Down).count() == 2 => break,
            _ => assert!(t.elapsed() < Duration::from_secs(20), "the OSDs are not seen down"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stale = |osds: &[aifs_common::OsdId]| MdsReq::Degraded { ino: f.ino, objs: osds.iter().map(|&osd| Degraded { index: 0, osd }).collect() };
    let listed = |req| {
        let admin = &admin;
        async move {
            match mds_call(admin, req).await.unwrap() {
                MdsResp::DegradedList(l) => l.into_iter().map(|(i, d)| (i, d.osd)).collect::<Vec<_>>(),
                other => panic!("{other:?}"),
            }
        }
    };
    mds_call(&c, MdsReq::SessionHeartbeat { id: sid, io: Default::default() }).await.unwrap();
    // a client that does not use the file: no session with it open
    assert!(matches!(mds_call(&other, stale(&r[..1])).await, Err(Error::NotPermitted(_))));
    // every replica at once: refused, and nothing recorded
    let got = mds_call(&c, stale(&r)).await;
    assert!(matches!(got, Err(Error::Io(_))), "{got:?}");
    assert_eq!(listed(MdsReq::DegradedList { ino: None }).await, vec![]);
    mds_call(&c, stale(&r[..2])).await.unwrap();
    // the last healthy replica
    assert!(matches!(mds_call(&c, stale(&r[2..])).await, Err(Error::Io(_))));
    let mut want = vec![(f.ino, r[0]), (f.ino, r[1])];
    want.sort_by_key(|w| w.1 .0);
    assert_eq!(listed(MdsReq::DegradedList { ino: Some(f.ino) }).await, want);
    assert!(matches!(mds_call(&c, MdsReq::DegradedList { ino: None }).await, Err(Error::Unauthorized(_))));
    assert!(matches!(mds_call(&c, MdsReq::ClearDegraded { ino: f.ino, index: None, osd: None }).await, Err(Error::Unauthorized(_))));
    // the admin forgets one record, then the rest
    assert_eq!(listed(MdsReq::ClearDegraded { ino: f.ino, index: None, osd: Some(r[0]) }).await, vec![(f.ino, r[0])]);
    assert_eq!(listed(MdsReq::DegradedList { ino: None }).await, vec![(f.ino, r[1])]);
    assert_eq!(listed(MdsReq::ClearDegraded { ino: f.ino, index: Some(0), osd: None }).await, vec![(f.ino, r[1])]);
    assert_eq!(listed(MdsReq::DegradedList { ino: None }).await, vec![]);
}

/// One change made under a directory's write lease, applied: its error.
async fn apply(c: &RpcClient, op: aifs_common::proto::mds::DirOp) -> Option<Error> {
    match mds_call(c, MdsReq::Apply { session: None, ops: vec![op] }).await.unwrap() {
        MdsResp::Applied(v) => v[0].clone().map(|e| Error::from_wire(e.code, &e.msg)),
        other => panic!("{other:?}"),
    }
}

/// Files made under a directory's write lease (`Apply`) use inode numbers
/// the MDS reserved for that client's certificate, each with the layout
/// reserved with it: no other unused number, no number another client
/// holds, no layout of the client's choosing, no number used once already.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_made_under_a_directory_lease_take_only_numbers_reserved_for_their_client() {
    use aifs_common::proto::mds::{DirOp, Reserved};
    let cl = TestCluster::start(3, 1).await.unwrap();
    let a = cl.mds_client_of_node(Role::Client, "a").unwrap();
    let b = cl.mds_client_of_node(Role::Client, "b").unwrap();
    // a makes the directory, and so holds its write lease
    mds_call(&a, MdsReq::OpenSession { name: "a".into(), dir_leases: true, previous: vec![], open: vec![], locks: vec![] }).await.unwrap();
    let d = attr(&a, mkdir(ROOT, "d")).await.unwrap();
    let r: Vec<Reserved> = match mds_call(&a, MdsReq::Reserve { dir: d.ino, count: 4 }).await.unwrap() {
        MdsResp::Reserved(v) => v,
        other => panic!("{other:?}"),
    };
    // numbers are for the holder of the directory's write lease alone
    assert!(matches!(mds_call(&b, MdsReq::Reserve { dir: d.ino, count: 4 }).await, Err(Error::NotPermitted(_))));
    let create = |ino: InodeId, name: &str, layout: aifs_common::Layout| DirOp::Create {
        parent: d.ino,
        name: name.into(),
        ino,
        layout,
        mode: 0o644,
        cred: Cred::root(),
        time_ns: 0,
        open: false,
    };
    // a number nobody reserved: the next the counter gives
    let never = InodeId::new(d.ino.shard(), r[3].ino.seq() + 1);
    assert!(matches!(apply(&a, create(never, "x0", r[0].layout.clone())).await, Some(Error::InvalidArgument(_))));
    // a number reserved for another client
    assert!(matches!(apply(&b, create(r[0].ino, "x1", r[0].layout.clone())).await, Some(Error::NotPermitted(_))));
    // a layout other than the one reserved
    let mut other = r[1].layout.clone();
    other.osds.rotate_left(1);
    assert!(matches!(apply(&a, create(r[1].ino, "x2", other)).await, Some(Error::InvalidArgument(_))));
    // as reserved: made, and a retry of it is answered the same
    assert_eq!(apply(&a, create(r[0].ino, "x3", r[0].layout.clone())).await, None);
    assert_eq!(apply(&a, create(r[0].ino, "x3", r[0].layout.clone())).await, None);
    // used once (its delete may still be pending): never again
    mds_call(&a, MdsReq::Unlink { parent: d.ino, name: "x3".into() }).await.unwrap();
    assert!(matches!(apply(&a, create(r[0].ino, "x4", r[0].layout.clone())).await, Some(Error::InvalidArgument(_))));
    assert_eq!(names(&a, d.ino).await, Vec::<String>::new());
    assert_eq!(apply(&a, create(r[1].ino, "x5", r[1].layout.clone())).await, None);
    assert_eq!(names(&a, d.ino).await, vec!["x5".to_string()]);
}

/// A file made open under a directory's write lease counts as open once
/// however often its batch comes: sent again after a lost reply, the
/// create found the file made and counted it open a second time, so the
/// client's one close left it open, and once unlinked its data stayed
/// until the session ended. Here it is freed at that close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_sent_again_counts_its_open_files_once() {
    use aifs_common::proto::mds::{DirOp, Reserved};
    let cl = TestCluster::start(3, 1).await.unwrap();
    let a = cl.mds_client_of_node(Role::Client, "a").unwrap();
    let sid = open_session(&a, "a", true).await;
    let d = attr(&a, mkdir(ROOT, "d")).await.unwrap();
    let r: Reserved = match mds_call(&a, MdsReq::Reserve { dir: d.ino, count: 1 }).await.unwrap() {
        MdsResp::Reserved(mut v) => v.remove(0),
        other => panic!("{other:?}"),
    };
    let batch = |ops: Vec<DirOp>| {
        let a = &a;
        async move {
            match mds_call(a, MdsReq::Apply { session: Some(sid), ops }).await.unwrap() {
                MdsResp::Applied(v) => assert!(v.iter().all(|e| e.is_none()), "{v:?}"),
                other => panic!("{other:?}"),
            }
        }
    };
    let made = DirOp::Create { parent: d.ino, name: "tmp".into(), ino: r.ino, layout: r.layout.clone(), mode: 0o600, cred: Cred::root(), time_ns: 0, open: true };
    batch(vec![made.clone()]).await;
    // the reply was lost: the same batch again
    batch(vec![made]).await;
    batch(vec![DirOp::Unlink { parent: d.ino, name: "tmp".into(), ino: r.ino, time_ns: 0, cred: Cred::root() }]).await;
    assert!(attr(&a, MdsReq::GetAttr { ino: r.ino }).await.is_ok(), "an open file lost its inode at its unlink");
    batch(vec![DirOp::Close { ino: r.ino }]).await;
    let after = attr(&a, MdsReq::GetAttr { ino: r.ino }).await;
    assert!(matches!(after, Err(Error::NotFound)), "the file is still there after its one close: {after:?}");
}

/// `req` sent as request `seq` of client `client` (`retry`: as sent again
/// after a lost reply).
async fn call_numbered(c: &RpcClient, client: u64, req: MdsReq, seq: u64, retry: bool) -> Result<MdsResp, Error> {
    use aifs_common::proto::mds::{MdsCall, MdsReply, ReqId};
    let rid = Some(ReqId { client, seq, oldest: 1, retry });
    c.call::<_, MdsReply>(&MdsCall { rid, ..MdsCall::from(req) }, &[]).await.unwrap().0.into_result().map(|(r, _)| r)
}

/// A create, or a nameless file, sent again after a lost reply to the
/// process that counted its open counts it once: the client's one close
/// frees the file once it has no name. (Counted twice, the file stayed
/// until the session ended.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_sent_again_counts_its_open_once() {
    let cl = TestCluster::start(1, 1).await.unwrap();
    let c = cl.mds_client_of_node(Role::Client, "a").unwrap();
    let sid = open_session(&c, "a", false).await;
    let send = |req: MdsReq, seq: u64, retry: bool| {
        let c = &c;
        async move {
            match call_numbered(c, 78, req, seq, retry).await {
                Ok(MdsResp::Changed { attr: Some(a), .. }) | Ok(MdsResp::Attr(a)) => a.ino,
                other => panic!("{other:?}"),
            }
        }
    };
    let f = send(create(ROOT, "f"), 1, false).await;
    assert_eq!(send(create(ROOT, "f"), 1, true).await, f);
    let tmp = MdsReq::TmpFile { parent: ROOT, mode: 0o600, linkable: false };
    let t = send(tmp.clone(), 2, false).await;
    assert_eq!(send(tmp, 2, true).await, t);
    mds_call(&c, MdsReq::Unlink { parent: ROOT, name: "f".into() }).await.unwrap();
    for ino in [f, t] {
        assert!(attr(&c, MdsReq::GetAttr { ino }).await.is_ok(), "an open file lost its inode before its close");
        mds_call(&c, MdsReq::Close { ino, session: Some(sid) }).await.unwrap();
        let after = attr(&c, MdsReq::GetAttr { ino }).await;
        assert!(matches!(after, Err(Error::NotFound)), "a file without a name is still there after its one close: {after:?}");
    }
}

/// An open or a close sent again after a lost reply to the process that
/// counted it counts once: an open counted twice kept a file with no name
/// until the session ended; a close counted twice freed a file that
/// another of the client's opens still used (one not yet closed when the
/// next began, each a file state of its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_or_a_close_sent_again_counts_once() {
    let cl = TestCluster::start(1, 1).await.unwrap();
    let c = cl.mds_client_of_node(Role::Client, "a").unwrap();
    let sid = open_session(&c, "a", false).await;
    let send = |req: MdsReq, seq: u64, retry: bool| {
        let c = &c;
        async move {
            let r = call_numbered(c, 79, req, seq, retry).await;
            assert!(r.is_ok(), "{r:?}");
        }
    };
    let open = |ino| MdsReq::Open { ino, write: false, first: true, exclusive: false };
    let close = |ino| MdsReq::Close { ino, session: Some(sid) };
    let made = |name: &'static str| {
        let c = &c;
        async move {
            let ino = attr(c, create(ROOT, name)).await.unwrap().ino;
            mds_call(c, close(ino)).await.unwrap();
            ino
        }
    };
    let unlinked = |name: &'static str, ino| {
        let c = &c;
        async move {
            mds_call(c, MdsReq::Unlink { parent: ROOT, name: name.into() }).await.unwrap();
            attr(c, MdsReq::GetAttr { ino }).await.is_ok()
        }
    };
    // One open, sent twice; one close.
    let f = made("f").await;
    send(open(f), 1, false).await;
    send(open(f), 1, true).await;
    send(close(f), 2, false).await;
    assert!(!unlinked("f", f).await, "a file without a name is still there after its one close");
    // Two opens; the first close sent twice.
    let g = made("g").await;
    send(open(g), 3, false).await;
    send(open(g), 4, false).await;
    send(close(g), 5, false).await;
    send(close(g), 5, true).await;
    assert!(unlinked("g", g).await, "a file one open still uses lost its inode at its unlink");
    send(close(g), 6, false).await;
    let after = attr(&c, MdsReq::GetAttr { ino: g }).await;
    assert!(matches!(after, Err(Error::NotFound)), "a file without a name is still there after its last close: {after:?}");
}

/// The two phases' messages between MDS processes (mds/src/shardnet.rs),
/// sent the way a coordinator sends them: answered for an MDS
/// certificate, the namespace's own errors carried through; refused for
/// a client's; bytes that do not decode get an error, and the MDS serves
/// on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_messages_are_answered_for_another_mds_alone() {
    use aifs_common::proto::frame::encode_any;
    use aifs_common::proto::mds::{MdsCall, MdsReply};
    use aifs_mds::namespace::twophase::{Peers, ShardMsg, ShardRead, ShardReply};
    use bytes::Bytes;
    let cl = TestCluster::start(1, 1).await.unwrap();
    let id = Identity::load(&TlsConfig::in_dir(cl.dir.path(), "mds")).unwrap();
    let ep = rpc::client_endpoint(&id, &TransportConfig::default()).unwrap();
    let clients = aifs_mds::store::raft::net::PeerClients::new(ep, rpc::endpoint::member_client_config(&id, &TransportConfig::default()).unwrap());
    let addr = cl.mds.addr;
    let links = aifs_mds::shardnet::ShardLinks::new(clients, std::sync::Arc::new(move |_| Some(addr)));
    let read = ShardMsg::Read { shard: 0, read: ShardRead::Inode(ROOT.0) };
    match links.send(read.clone()).await.unwrap() {
        ShardReply::Inode(rec) => assert_eq!(rec.kind, FileKind::Dir),
        other => panic!("{other:?}"),
    }
    let missing = ShardMsg::Read { shard: 0, read: ShardRead::Entry { dir: ROOT.0, name: "nope".into(), cred: None } };
    assert_eq!(links.send(missing).await, Err(Error::NotFound));
    let send = |c: RpcClient, body: Vec<u8>| async move {
        let call = MdsCall::from(MdsReq::Shard { shard: 0, len: body.len() as u64 });
        c.call::<_, MdsReply>(&call, &[Bytes::from(body)]).await.unwrap().0.into_result()
    };
    let r = send(cl.mds_client(Role::Client).unwrap(), encode_any(&read).unwrap().to_vec()).await;
    assert!(matches!(r, Err(Error::Unauthorized(_))), "a client's certificate sent a shard message: {r:?}");
    let r = send(cl.mds_client(Role::Mds).unwrap(), vec![0xa5; 40]).await;
    assert!(matches!(r, Err(Error::Protocol(_))), "{r:?}");
    assert!(matches!(links.send(read).await, Ok(ShardReply::Inode(_))));
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
