//! What one client may hold: recalls it ignores, a session's limits, and
//! the inode numbers reserved for creates under a directory's write lease.
use super::*;

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
