//! Who may speak: certificates (expired, foreign, missing, another
//! node's), sessions bound to the certificate that opened them, malformed
//! frames, and the messages between MDS processes.
use super::*;

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
