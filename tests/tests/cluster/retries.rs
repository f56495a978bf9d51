//! Requests sent again after a lost reply: answered from their record,
//! each open and close counted once.
use super::*;

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
