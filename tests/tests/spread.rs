//! MDS processes on hosts of their own: each in a network namespace,
//! reached over a link the harness plays with a delaying relay (the
//! scaling run's setting, `ProcCluster::start_spread`). A mount works
//! across it, every request to the MDS pays the link's delay both ways,
//! and a checkpoint goes on through the leader's death there too. Needs
//! root and /dev/fuse; `make test` enables `fuse_tests`.
#![cfg(feature = "fuse_tests")]

use aifs_common::certs::Role;
use aifs_common::config::MdsAddrs;
use aifs_common::proto::mds::MdsReq;
use aifs_common::rpc::{self, Identity, RpcClient};
use aifs_common::InodeId;
use aifs_tests::pattern;
use aifs_tests::proc::{Link, ProcCluster};
use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const DELAY: Duration = Duration::from_millis(5);

/// The fastest of `n` getattrs of the root, straight to the MDS.
fn fastest_getattr(cl: &ProcCluster, n: usize) -> Duration {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let id = Identity::load(&aifs_tests::tls(cl.dir.path(), Role::Client)).unwrap();
        let transport = cl.transport().unwrap();
        let ep = rpc::client_endpoint(&id, &transport).unwrap();
        let c = RpcClient::of_members(ep, &MdsAddrs(cl.mds_addrs.clone()), &id, &transport).unwrap();
        aifs_tests::mds_call_leader(&c, MdsReq::GetAttr { ino: InodeId::ROOT }).await.unwrap();
        let mut best = Duration::MAX;
        for _ in 0..n {
            let t = Instant::now();
            aifs_tests::mds_call_leader(&c, MdsReq::GetAttr { ino: InodeId::ROOT }).await.unwrap();
            best = best.min(t.elapsed());
        }
        best
    })
}

#[test]
fn a_mount_works_across_delayed_links_to_mds_processes_in_namespaces_of_their_own() {
    let mut cl = ProcCluster::start_spread(3, 3, Link { delay: DELAY, bytes_per_s: None }, &|t| t).unwrap();
    let m = cl.mount().unwrap();
    for i in 0..4u64 {
        let mut f = std::fs::File::create(m.p(&format!("rank{i}.pt"))).unwrap();
        f.write_all(&pattern::bytes(i, 0, 3 << 20)).unwrap();
    }
    // Everything to the MDS crosses the leader's link: a request and its
    // answer are each held for the delay.
    let best = fastest_getattr(&cl, 5);
    assert!(best >= DELAY * 2, "a getattr answered in {best:?}, under the link's round trip");
    let links = cl.mds_links();
    assert!(links.iter().all(|l| l.datagrams.load(Ordering::Relaxed) > 0), "a member's link carried nothing");
    // The leader dies; its followers, in their namespaces, elect another.
    let first = cl.mds_leader(Duration::from_secs(30)).unwrap();
    cl.kill9_mds_member(first);
    let mut f = std::fs::File::create(m.p("after.pt")).unwrap();
    f.write_all(&pattern::bytes(9, 0, 1 << 20)).unwrap();
    drop(f);
    assert_ne!(cl.mds_leader(Duration::from_secs(30)).unwrap(), first);
    for i in 0..4u64 {
        assert!(std::fs::read(m.p(&format!("rank{i}.pt"))).unwrap() == pattern::bytes(i, 0, 3 << 20), "rank {i} read back wrong");
    }
    assert!(std::fs::read(m.p("after.pt")).unwrap() == pattern::bytes(9, 0, 1 << 20));
}

/// One MDS process (one-member groups) in a namespace of its own.
#[test]
fn one_mds_process_serves_across_its_link() {
    let cl = ProcCluster::start_spread(1, 3, Link { delay: DELAY, bytes_per_s: None }, &|t| t).unwrap();
    let m = cl.mount().unwrap();
    std::fs::write(m.p("a"), b"across the link").unwrap();
    assert_eq!(std::fs::read(m.p("a")).unwrap(), b"across the link");
    assert!(fastest_getattr(&cl, 3) >= DELAY * 2);
}
