//! Object I/O on the OSDs: checksums, frees after unlink, and the
//! capabilities that open objects; stale replicas reported by users.
use super::*;

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
