//! Every namespace operation and the errors POSIX names for it, layouts
//! and admin commands, special and nameless files, and a restart.
use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_operations_and_their_errors() {
    let cl = TestCluster::start(3, 4).await.unwrap();
    let c = cl.mds_client(Role::Client).unwrap();
    let f = files_and_their_errors(&c).await;
    let (d, g) = directories_and_readdir(&c, &f).await;
    renames(&c, &d).await;
    exchanges(&c).await;
    links_and_xattrs(&c, &f, &d, &g).await;
    listings_and_statfs(&c, &d).await;
}

/// A rename of `n` in `p` to `nn` in `np`.
fn rn(p: InodeId, n: &str, np: InodeId, nn: &str, flags: u32) -> MdsReq {
    MdsReq::Rename { parent: p, name: n.into(), newparent: np, newname: nn.into(), flags }
}

/// File `f` in the root: made, looked up, its attributes set; the file.
async fn files_and_their_errors(c: &RpcClient) -> Attr {
    // create, lookup, getattr; a change carries the directory's new attributes
    let before = attr(c, MdsReq::GetAttr { ino: ROOT }).await.unwrap();
    let f = match mds_call(c, create(ROOT, "f")).await.unwrap() {
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
    assert_eq!(attr(c, MdsReq::Lookup { parent: ROOT, name: "f".into() }).await.unwrap().ino, f.ino);
    assert_eq!(attr(c, create(ROOT, "f")).await, Err(Error::Exists));
    let again = MdsReq::Create { parent: ROOT, name: "f".into(), mode: 0o644, exclusive: false };
    assert_eq!(attr(c, again).await.unwrap().ino, f.ino, "non-exclusive create opens the existing file");
    assert_eq!(attr(c, MdsReq::Lookup { parent: ROOT, name: "nope".into() }).await, Err(Error::NotFound));
    assert_eq!(attr(c, MdsReq::GetAttr { ino: InodeId(0x77) }).await, Err(Error::NotFound));
    assert_eq!(attr(c, MdsReq::Lookup { parent: f.ino, name: "x".into() }).await, Err(Error::NotDir));
    assert!(matches!(attr(c, create(ROOT, "a/b")).await, Err(Error::InvalidArgument(_))));
    assert_eq!(attr(c, create(ROOT, &"n".repeat(256))).await, Err(Error::NameTooLong));

    // setattr: mode, owner, times, size (truncate records and applies GC)
    let set = SetAttr { mode: Some(0o600), uid: Some(7), gid: Some(8), size: Some(4096), atime: None, mtime: Some(aifs_common::proto::mds::TimeSet::At(1_000_000_000)) };
    let a = attr(c, MdsReq::SetAttr { ino: f.ino, set }).await.unwrap();
    assert_eq!((a.perm, a.uid, a.gid, a.size, a.mtime_ns), (0o600, 7, 8, 4096, 1_000_000_000));
    let a = attr(c, MdsReq::SetAttr { ino: f.ino, set: SetAttr { size: Some(10), ..Default::default() } }).await.unwrap();
    assert_eq!(a.size, 10);
    // a flush publishes size as a maximum
    let a = attr(c, MdsReq::UpdateSize { ino: f.ino, size: 5, mtime_ns: 2 }).await.unwrap();
    assert_eq!(a.size, 10);
    let a = attr(c, MdsReq::UpdateSize { ino: f.ino, size: 50, mtime_ns: 2 }).await.unwrap();
    assert_eq!(a.size, 50);
    // sizes past off_t are refused, from a flush as from a truncate
    assert_eq!(attr(c, MdsReq::UpdateSize { ino: f.ino, size: u64::MAX, mtime_ns: 2 }).await, Err(Error::FileTooBig));
    let huge = SetAttr { size: Some(1 << 63), ..Default::default() };
    assert_eq!(attr(c, MdsReq::SetAttr { ino: f.ino, set: huge }).await, Err(Error::FileTooBig));
    assert_eq!(attr(c, MdsReq::GetAttr { ino: f.ino }).await.unwrap().size, 50);
    f
}

/// Directory `d` in the root with `g` in it, read while it changes.
async fn directories_and_readdir(c: &RpcClient, f: &Attr) -> (Attr, Attr) {
    // mkdir on (usually) another shard; files inside take the dir's shard
    let d = attr(c, mkdir(ROOT, "d")).await.unwrap();
    assert_eq!(d.kind, FileKind::Dir);
    assert_eq!(attr(c, mkdir(ROOT, "d")).await, Err(Error::Exists));
    assert_eq!(attr(c, mkdir(f.ino, "x")).await, Err(Error::NotDir));
    let g = attr(c, create(d.ino, "g")).await.unwrap();
    assert_eq!(g.ino.shard(), d.ino.shard());
    assert_eq!(attr(c, MdsReq::GetAttr { ino: ROOT }).await.unwrap().nlink, 3);

    // readdir: offsets stay valid while entries come and go
    for i in 0..10 {
        attr(c, create(d.ino, &format!("e{i}"))).await.unwrap();
    }
    let (first, cookie) = match mds_call(c, MdsReq::Readdir { ino: d.ino, cookie: 0, max: 4 }).await.unwrap() {
        MdsResp::Dir { entries, eof, .. } => {
            assert!(!eof);
            let last = entries.last().unwrap().cookie;
            (entries.into_iter().map(|e| e.name).collect::<Vec<_>>(), last)
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(first, ["g", "e0", "e1", "e2"]);
    mds_call(c, MdsReq::Unlink { parent: d.ino, name: "e1".into() }).await.unwrap();
    mds_call(c, MdsReq::Unlink { parent: d.ino, name: "e5".into() }).await.unwrap();
    attr(c, create(d.ino, "late")).await.unwrap();
    let rest = match mds_call(c, MdsReq::Readdir { ino: d.ino, cookie, max: 100 }).await.unwrap() {
        MdsResp::Dir { entries, eof, .. } => {
            assert!(eof);
            entries.into_iter().map(|e| e.name).collect::<Vec<_>>()
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(rest, ["e3", "e4", "e6", "e7", "e8", "e9", "late"], "no entry skipped or repeated");
    assert!(matches!(mds_call(c, MdsReq::Readdir { ino: f.ino, cookie: 0, max: 4 }).await, Err(Error::NotDir)));

    // unlink / rmdir errors
    assert_eq!(mds_call(c, MdsReq::Unlink { parent: ROOT, name: "d".into() }).await, Err(Error::IsDir));
    assert_eq!(mds_call(c, MdsReq::Unlink { parent: ROOT, name: "zz".into() }).await, Err(Error::NotFound));
    assert_eq!(mds_call(c, MdsReq::Rmdir { parent: ROOT, name: "d".into() }).await, Err(Error::NotEmpty));
    assert_eq!(mds_call(c, MdsReq::Rmdir { parent: ROOT, name: "f".into() }).await, Err(Error::NotDir));
    (d, g)
}

async fn renames(c: &RpcClient, d: &Attr) {
    // rename: same dir, across dirs, replacing, NOREPLACE, into own subtree
    let sub = attr(c, mkdir(d.ino, "sub")).await.unwrap();
    mds_call(c, rn(d.ino, "e0", d.ino, "e0b", 0)).await.unwrap();
    mds_call(c, rn(d.ino, "e0b", ROOT, "moved", 0)).await.unwrap();
    assert!(names(c, ROOT).await.contains(&"moved".to_string()));
    assert!(!names(c, d.ino).await.contains(&"e0b".to_string()));
    // replace an existing file; its inode goes away
    let victim = attr(c, MdsReq::Lookup { parent: d.ino, name: "e2".into() }).await.unwrap();
    mds_call(c, rn(ROOT, "moved", d.ino, "e2", 0)).await.unwrap();
    assert_eq!(attr(c, MdsReq::GetAttr { ino: victim.ino }).await, Err(Error::NotFound));
    assert_eq!(mds_call(c, rn(d.ino, "e3", d.ino, "e4", RENAME_NOREPLACE)).await, Err(Error::Exists));
    assert!(matches!(mds_call(c, rn(ROOT, "d", sub.ino, "x", 0)).await, Err(Error::InvalidArgument(_))));
    assert!(matches!(mds_call(c, rn(ROOT, "d", d.ino, "x", 0)).await, Err(Error::InvalidArgument(_))));
    assert_eq!(mds_call(c, rn(d.ino, "e3", d.ino, "sub", 0)).await, Err(Error::IsDir));
    attr(c, create(sub.ino, "inside")).await.unwrap();
    let empty = attr(c, mkdir(ROOT, "empty")).await.unwrap();
    assert_eq!(mds_call(c, rn(ROOT, "empty", d.ino, "sub", 0)).await, Err(Error::NotEmpty));
    assert_eq!(mds_call(c, rn(ROOT, "empty", d.ino, "e3", 0)).await, Err(Error::NotDir));
    // a directory moved across directories: parents' link counts follow
    let root_links = attr(c, MdsReq::GetAttr { ino: ROOT }).await.unwrap().nlink;
    mds_call(c, rn(ROOT, "empty", d.ino, "empty2", 0)).await.unwrap();
    assert_eq!(attr(c, MdsReq::GetAttr { ino: ROOT }).await.unwrap().nlink, root_links - 1);
    assert_eq!(attr(c, MdsReq::Lookup { parent: d.ino, name: "empty2".into() }).await.unwrap().ino, empty.ino);
    mds_call(c, MdsReq::Rmdir { parent: d.ino, name: "empty2".into() }).await.unwrap();
    assert_eq!(attr(c, MdsReq::GetAttr { ino: empty.ino }).await, Err(Error::NotFound));
}

async fn exchanges(c: &RpcClient) {
    // exchange: two names swap inodes, across directories on two shards
    let lookup = |p: InodeId, n: &str| attr(c, MdsReq::Lookup { parent: p, name: n.into() });
    let mut far = String::new();
    for i in 0..64 {
        far = format!("far{i}");
        if attr(c, mkdir(ROOT, &far)).await.unwrap().ino.shard() != ROOT.shard() {
            break;
        }
    }
    let fd = attr(c, MdsReq::Lookup { parent: ROOT, name: far.clone() }).await.unwrap();
    let x = attr(c, create(ROOT, "x")).await.unwrap();
    let y = attr(c, create(fd.ino, "y")).await.unwrap();
    assert_ne!(x.ino.shard(), y.ino.shard(), "the swap crosses shards");
    assert_eq!(mds_call(c, rn(ROOT, "x", fd.ino, "absent", RENAME_EXCHANGE)).await, Err(Error::NotFound));
    assert!(matches!(mds_call(c, rn(ROOT, "x", fd.ino, "y", RENAME_EXCHANGE | RENAME_NOREPLACE)).await, Err(Error::InvalidArgument(_))));
    mds_call(c, rn(ROOT, "x", fd.ino, "y", RENAME_EXCHANGE)).await.unwrap();
    assert_eq!((lookup(ROOT, "x").await.unwrap().ino, lookup(fd.ino, "y").await.unwrap().ino), (y.ino, x.ino));
    assert_eq!((lookup(ROOT, "x").await.unwrap().nlink, lookup(fd.ino, "y").await.unwrap().nlink), (1, 1), "no link gained or lost");
    // a directory swapped with a file: its link moves with it, and its `..`
    let xd = attr(c, mkdir(ROOT, "xd")).await.unwrap();
    let links = |i: InodeId| async move { attr(c, MdsReq::GetAttr { ino: i }).await.unwrap().nlink };
    let (root_links, fd_links) = (links(ROOT).await, links(fd.ino).await);
    mds_call(c, rn(ROOT, "xd", fd.ino, "y", RENAME_EXCHANGE)).await.unwrap();
    assert_eq!((links(ROOT).await, links(fd.ino).await), (root_links - 1, fd_links + 1));
    assert_eq!((lookup(ROOT, "xd").await.unwrap().ino, lookup(fd.ino, "y").await.unwrap().ino), (x.ino, xd.ino));
    match mds_call(c, MdsReq::Readdir { ino: xd.ino, cookie: 0, max: 4 }).await.unwrap() {
        MdsResp::Dir { parent, .. } => assert_eq!(parent, fd.ino),
        other => panic!("{other:?}"),
    }
    // a directory never lands inside itself
    assert!(matches!(mds_call(c, rn(ROOT, &far, fd.ino, "y", RENAME_EXCHANGE)).await, Err(Error::InvalidArgument(_))));
}

async fn links_and_xattrs(c: &RpcClient, f: &Attr, d: &Attr, g: &Attr) {
    // symlink, readlink
    let s = attr(c, MdsReq::Symlink { parent: ROOT, name: "s".into(), target: "d/g".into() }).await.unwrap();
    assert_eq!(s.kind, FileKind::Symlink);
    assert_eq!(mds_call(c, MdsReq::Readlink { ino: s.ino }).await.unwrap(), MdsResp::Bytes(b"d/g".to_vec()));
    assert!(matches!(mds_call(c, MdsReq::Readlink { ino: f.ino }).await, Err(Error::InvalidArgument(_))));

    // hard links, across shards too
    let h = attr(c, MdsReq::Link { ino: g.ino, newparent: ROOT, newname: "hl".into() }).await.unwrap();
    assert_eq!(h.nlink, 2);
    assert_eq!(attr(c, MdsReq::Link { ino: d.ino, newparent: ROOT, newname: "dl".into() }).await, Err(Error::NotPermitted("hard link to a directory".into())));
    assert_eq!(attr(c, MdsReq::Link { ino: g.ino, newparent: ROOT, newname: "f".into() }).await, Err(Error::Exists));
    mds_call(c, MdsReq::Unlink { parent: d.ino, name: "g".into() }).await.unwrap();
    assert_eq!(attr(c, MdsReq::GetAttr { ino: g.ino }).await.unwrap().nlink, 1);
    mds_call(c, MdsReq::Unlink { parent: ROOT, name: "hl".into() }).await.unwrap();
    assert_eq!(attr(c, MdsReq::GetAttr { ino: g.ino }).await, Err(Error::NotFound));

    // xattrs
    let sx = |name: &str, v: &[u8], flags: u32| MdsReq::SetXattr { ino: f.ino, name: name.into(), value: v.to_vec(), flags };
    mds_call(c, sx("user.a", b"1", 0)).await.unwrap();
    assert_eq!(mds_call(c, sx("user.a", b"2", XATTR_CREATE)).await, Err(Error::Exists));
    assert_eq!(mds_call(c, sx("user.b", b"2", XATTR_REPLACE)).await, Err(Error::NoXattr));
    mds_call(c, sx("user.b", b"2", XATTR_CREATE)).await.unwrap();
    assert_eq!(mds_call(c, MdsReq::GetXattr { ino: f.ino, name: "user.a".into() }).await.unwrap(), MdsResp::Bytes(b"1".to_vec()));
    assert_eq!(mds_call(c, MdsReq::ListXattr { ino: f.ino }).await.unwrap(), MdsResp::Names(vec!["user.a".into(), "user.b".into()]));
    mds_call(c, MdsReq::RemoveXattr { ino: f.ino, name: "user.a".into() }).await.unwrap();
    assert_eq!(mds_call(c, MdsReq::RemoveXattr { ino: f.ino, name: "user.a".into() }).await, Err(Error::NoXattr));
    assert_eq!(mds_call(c, MdsReq::GetXattr { ino: f.ino, name: "user.a".into() }).await, Err(Error::NoXattr));
    assert_eq!(mds_call(c, sx("user.big", &vec![0u8; 70_000], 0)).await, Err(Error::TooBig));

    assert_eq!(attr(c, MdsReq::GetAttr { ino: f.ino }).await.unwrap().xattrs, 1, "xattr count follows set/remove");
}

async fn listings_and_statfs(c: &RpcClient, d: &Attr) {
    // readdir with attributes: one attr per entry, matching it
    match mds_call(c, MdsReq::ReaddirPlus { ino: d.ino, cookie: 0, max: 100 }).await.unwrap() {
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
    match mds_call(c, MdsReq::Statfs).await.unwrap() {
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
