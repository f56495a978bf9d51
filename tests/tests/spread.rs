//! MDS processes on hosts of their own: each in a network namespace,
//! reached over a link the harness plays with a delaying relay (the
//! scaling run's setting, `ProcCluster::start_spread`). A mount works
//! across it, every request to the MDS pays the link's delay both ways,
//! and a checkpoint goes on through the leader's death there too. Needs
//! root and /dev/fuse; `make test` enables `fuse_tests`.
#![cfg(feature = "fuse_tests")]

use aifs_common::certs::Role;
use aifs_common::config::MdsAddrs;
use aifs_common::proto::mds::{MdsReq, MdsResp};
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

/// Make files `names` in `dir` (made if missing), each holding its name.
fn make_named(dir: &std::path::Path, names: std::ops::Range<u32>) {
    std::fs::create_dir_all(dir).unwrap();
    for n in names {
        std::fs::write(dir.join(n.to_string()), n.to_string()).unwrap();
    }
}

fn check_named(dir: &std::path::Path, names: std::ops::Range<u32>) {
    for n in names {
        assert_eq!(std::fs::read_to_string(dir.join(n.to_string())).unwrap(), n.to_string(), "{}/{n}", dir.display());
    }
}

/// A client of member `id` alone, which never goes to another.
struct AtMember {
    rt: tokio::runtime::Runtime,
    rpc: RpcClient,
}

impl AtMember {
    fn new(cl: &ProcCluster, id: u64) -> AtMember {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let rpc = rt.block_on(async {
            let who = Identity::load(&aifs_tests::tls(cl.dir.path(), Role::Client)).unwrap();
            let ep = rpc::client_endpoint(&who, &cl.transport().unwrap()).unwrap();
            RpcClient::new(ep, cl.mds_addrs[(id - 1) as usize], Role::Mds)
        });
        AtMember { rt, rpc }
    }

    fn call(&self, req: MdsReq) -> aifs_common::Result<MdsResp> {
        self.rt.block_on(aifs_tests::mds_call(&self.rpc, req))
    }
}

/// A leader parted from the other members but still reached by its
/// clients (its link drops only what passes between it and them). A
/// mutation it took just before its lease ran out cannot commit: its
/// caller is told "not leader" within seconds rather than held until the
/// partition ends. The others elect a leader, and the mount, which could
/// go on calling the old one, goes on through the new one; the old one
/// answers nothing from what it holds; healed, it follows, the mutation
/// it could not commit is nowhere, and nothing made on either side of
/// the cut is lost.
#[test]
fn a_leader_parted_from_the_members_but_not_the_clients_gives_way() {
    let cl = ProcCluster::start_spread(3, 3, Link { delay: Duration::from_millis(1), bytes_per_s: None }, &|t| t).unwrap();
    let m = cl.mount().unwrap();
    let old = cl.mds_leader(aifs_tests::ELECTION).unwrap();
    make_named(&m.p("before"), 0..20);
    let at_old = AtMember::new(&cl, old);
    at_old.call(MdsReq::GetAttr { ino: InodeId::ROOT }).unwrap();
    cl.cut_mds_from_members(old).unwrap();
    // Sent at once, within the lease: taken, and then it cannot commit.
    // A call gives up by itself after 60 s; 30 s is a hang.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(at_old.call(MdsReq::Mkdir { parent: InodeId::ROOT, name: "taken-by-the-parted-leader".into(), mode: 0o755 }));
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Err(aifs_common::Error::NotLeader(_))) => {}
        Ok(other) => panic!("a mutation the parted leader took was answered {other:?}"),
        Err(_) => panic!("a mutation the parted leader took held its caller for 30 s"),
    }
    // The mount must not wait for the partition to end either.
    let during = m.p("during");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        make_named(&during, 0..20);
        let _ = tx.send(());
    });
    rx.recv_timeout(Duration::from_secs(30)).expect("the mount hung while its MDS leader was parted from the other members");
    match AtMember::new(&cl, old).call(MdsReq::Lookup { parent: InodeId::ROOT, name: "during".into() }) {
        Err(aifs_common::Error::NotLeader(_)) => {}
        other => panic!("the parted leader answered {other:?}"),
    }
    cl.heal_mds_links();
    make_named(&m.p("after"), 0..20);
    for d in ["before", "during", "after"] {
        check_named(&m.p(d), 0..20);
    }
    assert!(!m.p("taken-by-the-parted-leader").exists(), "a mutation never acknowledged was applied");
}
