//! A replicated MDS: every shard a Raft group over three `aifs-mds`
//! processes, real OSDs and a real mount. Losing any one MDS process
//! (`kill -9`, or its whole data directory) loses no acknowledged
//! metadata, and a checkpoint being written goes on through the leader's
//! death. Needs root and /dev/fuse; `make test` enables `fuse_tests`.
#![cfg(feature = "fuse_tests")]

use aifs_tests::pattern;
use aifs_tests::proc::ProcCluster;
use aifs_tests::ELECTION;
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

const MIB: usize = 1 << 20;

/// Write `mib` MiB of the pattern of `seed` to `path`, in 1 MiB writes,
/// and fsync it.
fn write_file(path: &Path, seed: u64, mib: usize) {
    let mut f = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    let mut buf = vec![0u8; MIB];
    for i in 0..mib {
        pattern::fill(seed, (i * MIB) as u64, &mut buf);
        f.write_all(&buf).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
    f.sync_all().unwrap_or_else(|e| panic!("fsync {}: {e}", path.display()));
}

fn check_file(path: &Path, seed: u64, mib: usize) {
    let len = fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display())).len();
    assert_eq!(len, (mib * MIB) as u64, "{} has the wrong size", path.display());
    let diff = pattern::first_difference(path, seed, len).unwrap();
    assert_eq!(diff, None, "{} differs from what was written", path.display());
}

/// Files `names` made in `dir`, each holding its own name, fsynced with
/// the directory.
fn make_named(dir: &Path, names: std::ops::Range<u32>) {
    fs::create_dir_all(dir).unwrap();
    for i in names {
        fs::write(dir.join(format!("f{i}")), format!("{i}")).unwrap();
    }
    File::open(dir).unwrap().sync_all().unwrap();
}

fn check_named(dir: &Path, names: std::ops::Range<u32>) {
    for i in names {
        let p = dir.join(format!("f{i}"));
        assert_eq!(fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display())), format!("{i}"));
    }
}

/// `mdsctl mds ls --json`: each member's id, whether it leads, and the
/// log it holds per shard.
fn members(cl: &ProcCluster) -> Vec<(u64, bool, Vec<u64>)> {
    let v: serde_json::Value = serde_json::from_str(&cl.mdsctl(&["--json", "mds", "ls"]).unwrap()).unwrap();
    let list = v.as_array().expect("mds ls is a list");
    list.iter()
        .map(|m| {
            let matched = m["matched"].as_array().expect("matched").iter().map(|i| i.as_u64().expect("an index")).collect();
            (m["id"].as_u64().expect("an id"), m["leader"].as_bool().expect("leader"), matched)
        })
        .collect()
}

/// The members that vote, as `mdsctl mds ls --json` shows them.
fn voters(cl: &ProcCluster) -> Vec<u64> {
    let v: serde_json::Value = serde_json::from_str(&cl.mdsctl(&["--json", "mds", "ls"]).unwrap()).unwrap();
    let list = v.as_array().expect("mds ls is a list");
    list.iter().filter(|m| m["voter"].as_bool().expect("voter")).map(|m| m["id"].as_u64().expect("an id")).collect()
}

/// Per shard, the index of the last entry in the leader's snapshot
/// (`mdsctl shard ls --json`).
fn snapshots(cl: &ProcCluster) -> Vec<u64> {
    let v: serde_json::Value = serde_json::from_str(&cl.mdsctl(&["--json", "shard", "ls"]).unwrap()).unwrap();
    v.as_array().expect("shard ls is a list").iter().map(|s| s["snapshot"].as_u64().expect("snapshot")).collect()
}

/// Wait until member `id` is recorded as having held the log.
fn wait_held(cl: &ProcCluster, id: u64) {
    let t = std::time::Instant::now();
    loop {
        let v: serde_json::Value = serde_json::from_str(&cl.mdsctl(&["--json", "mds", "ls"]).unwrap()).unwrap();
        let list = v.as_array().expect("mds ls is a list");
        if list.iter().any(|m| m["id"].as_u64() == Some(id) && m["held"].as_bool() == Some(true)) {
            return;
        }
        assert!(t.elapsed() < ELECTION, "MDS {id} is not recorded as holding the log: {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Wait until the leader knows `id` holds every shard's log as far as it
/// does itself.
fn wait_caught_up(cl: &ProcCluster, id: u64) {
    let t = std::time::Instant::now();
    loop {
        let ms = members(cl);
        let leader = ms.iter().find(|m| m.1).map(|m| m.2.clone());
        let it = ms.iter().find(|m| m.0 == id).map(|m| m.2.clone());
        if leader.is_some() && leader == it {
            return;
        }
        assert!(t.elapsed() < ELECTION, "MDS {id} did not catch up: {ms:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The leader is killed while four ranks write their shards of a
/// checkpoint: every write and fsync succeeds, a new leader takes over,
/// and every byte reads back; the old leader comes back as a follower,
/// and the next leader's death loses nothing either.
#[test]
fn a_checkpoint_goes_on_through_the_mds_leaders_death() {
    let mut cl = ProcCluster::start_replicated(3, 3).unwrap();
    let m = cl.mount().unwrap();
    let first = cl.mds_leader(ELECTION).unwrap();
    let ms = members(&cl);
    assert_eq!(ms.iter().map(|m| m.0).collect::<Vec<_>>(), vec![1, 2, 3], "{ms:?}");
    assert_eq!(ms.iter().filter(|m| m.1).map(|m| m.0).collect::<Vec<_>>(), vec![first], "{ms:?}");
    make_named(&m.p("before"), 0..50);
    let root = m.path.clone();
    let ranks: Vec<_> = (0..4u64)
        .map(|r| {
            let root = root.clone();
            std::thread::spawn(move || {
                let dir = root.join(format!("step1/rank{r}"));
                fs::create_dir_all(&dir).unwrap();
                for part in 0..6u64 {
                    write_file(&dir.join(format!("part{part}")), r * 100 + part, 4);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    cl.kill9_mds_member(first);
    for r in ranks {
        r.join().expect("a rank's writes failed through the leader's death");
    }
    let second = cl.mds_leader(ELECTION).unwrap();
    assert_ne!(second, first, "the killed member still leads");
    for r in 0..4u64 {
        for part in 0..6u64 {
            check_file(&m.p(&format!("step1/rank{r}/part{part}")), r * 100 + part, 4);
        }
    }
    check_named(&m.p("before"), 0..50);
    // The old leader rejoins as a follower; then the new one dies too.
    cl.start_mds_member(first).unwrap();
    make_named(&m.p("after"), 0..50);
    wait_caught_up(&cl, first);
    cl.kill9_mds_member(second);
    let third = cl.mds_leader(ELECTION).unwrap();
    assert!(third != second, "the killed member still leads");
    check_named(&m.p("before"), 0..50);
    check_named(&m.p("after"), 0..50);
    check_file(&m.p("step1/rank3/part5"), 305, 4);
}

/// A member whose data directory is lost is taken out (`mdsctl mds
/// remove`), comes back empty with `--join`, and is added again (`mdsctl
/// mds add`): it catches up as a learner before it votes. With the third
/// member down it then forms the majority that takes new metadata, and it
/// leads with everything, the metadata from before its loss among it.
#[test]
fn a_member_with_a_wiped_data_directory_catches_up_and_holds_everything() {
    let mut cl = ProcCluster::start_replicated(3, 3).unwrap();
    let m = cl.mount().unwrap();
    let leader = cl.mds_leader(ELECTION).unwrap();
    let others: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    let (wiped, other) = (others[0], others[1]);
    make_named(&m.p("old"), 0..100);
    write_file(&m.p("old/data"), 7, 8);
    wait_held(&cl, wiped);
    cl.kill9_mds_member(wiped);
    let dir = cl.mds_data_dir(wiped).unwrap();
    fs::remove_dir_all(&dir).unwrap();
    // Started again as configured, it would vote having forgotten its
    // votes: it refuses, and says what to do.
    cl.start_mds_member(wiped).unwrap();
    let ended = cl.wait_mds_member_exit(wiped, Duration::from_secs(20));
    assert!(ended.is_some_and(|st| !st.success()), "a member with a lost data directory started as configured: {ended:?}");
    let log = fs::read_to_string(cl.path(&format!("logs/mds{wiped}.log"))).unwrap();
    assert!(log.contains("mdsctl mds remove"), "{log}");
    // Nor does --join let it back in while it still votes.
    cl.start_mds_member_joining(wiped).unwrap();
    let ended = cl.wait_mds_member_exit(wiped, Duration::from_secs(20));
    assert!(ended.is_some_and(|st| !st.success()), "a member with a lost data directory joined while still a voter: {ended:?}");
    cl.mdsctl(&["mds", "remove", &wiped.to_string()]).unwrap();
    assert!(members(&cl).iter().all(|m| m.0 != wiped), "{:?}", members(&cl));
    // Taken out, started as configured it would make groups of a history
    // of its own: it refuses, and names --join.
    cl.start_mds_member_as_configured(wiped).unwrap();
    let ended = cl.wait_mds_member_exit(wiped, Duration::from_secs(20));
    assert!(ended.is_some_and(|st| !st.success()), "a member taken out started as configured: {ended:?}");
    let log = fs::read_to_string(cl.path(&format!("logs/mds{wiped}.log"))).unwrap();
    assert!(log.contains("taken out of the groups since"), "{log}");
    make_named(&m.p("while-out"), 0..20);
    cl.start_mds_member_joining(wiped).unwrap();
    let addr = cl.mds_addrs[(wiped - 1) as usize].to_string();
    cl.mdsctl(&["mds", "add", &addr, "--id", &wiped.to_string()]).unwrap();
    assert!(voters(&cl).contains(&wiped), "{:?}", members(&cl));
    wait_caught_up(&cl, wiped);
    // Without `other`, nothing commits unless the wiped member acks it.
    cl.kill9_mds_member(other);
    make_named(&m.p("new"), 0..100);
    write_file(&m.p("new/data"), 8, 8);
    // The leader dies and `other` comes back, behind: only the member
    // that was wiped holds the newest entries, so it must lead.
    cl.kill9_mds_member(leader);
    cl.start_mds_member(other).unwrap();
    let now = cl.mds_leader(ELECTION).unwrap();
    assert_eq!(now, wiped, "the member holding the newest entries leads");
    check_named(&m.p("old"), 0..100);
    check_named(&m.p("while-out"), 0..20);
    check_named(&m.p("new"), 0..100);
    check_file(&m.p("old/data"), 7, 8);
    check_file(&m.p("new/data"), 8, 8);
}

/// A new MDS process joins a running replicated MDS (`mdsctl mds add`)
/// from the shards' snapshots, their logs purged past what it lacks, and
/// then votes: once the leader is taken out (`mdsctl mds remove`) and
/// another member killed, it is one of the two left, a majority, that go
/// on taking metadata, and nothing is lost.
#[test]
fn an_mds_added_from_snapshots_votes_and_taking_out_the_leader_loses_nothing() {
    let purge_soon = "\n[raft]\nsnapshot_after_bytes = 1\nkeep_behind_snapshot = 4\n";
    let mut cl = ProcCluster::start_replicated_with(3, 3, purge_soon).unwrap();
    let m = cl.mount().unwrap();
    let mut made = 0;
    let t = std::time::Instant::now();
    while !snapshots(&cl).iter().any(|s| *s > 4) {
        assert!(t.elapsed() < Duration::from_secs(120), "no shard took a snapshot: {:?}", snapshots(&cl));
        make_named(&m.p("old"), made..made + 200);
        made += 200;
    }
    let snapped: Vec<usize> = snapshots(&cl).iter().enumerate().filter(|(_, s)| **s > 4).map(|(i, _)| i).collect();
    let (new, addr) = cl.start_new_mds_member().unwrap();
    assert_eq!(new, 4);
    let out = cl.mdsctl(&["--json", "mds", "add", &addr.to_string()]).unwrap();
    let added: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(added["id"].as_u64(), Some(4), "{out}");
    assert_eq!(voters(&cl), vec![1, 2, 3, 4]);
    let dir = cl.mds_data_dir(new).unwrap();
    for shard in snapped {
        assert!(dir.join(format!("shard-{shard}.snapshot")).exists(), "shard {shard}'s snapshot was not sent to the new MDS");
    }
    let leader = cl.mds_leader(ELECTION).unwrap();
    // Wanted to lead, and then taken out: the wish goes with it.
    cl.mdsctl(&["shard", "move", "0", "--to", &leader.to_string()]).unwrap();
    cl.mdsctl(&["mds", "remove", &leader.to_string()]).unwrap();
    let next = cl.mds_leader(ELECTION).unwrap();
    assert_ne!(next, leader, "the member taken out still leads");
    assert!(members(&cl).iter().all(|m| m.0 != leader), "{:?}", members(&cl));
    let t = std::time::Instant::now();
    loop {
        let shards: serde_json::Value = serde_json::from_str(&cl.mdsctl(&["--json", "shard", "ls"]).unwrap()).unwrap();
        if shards[0]["wanted"].is_null() {
            break;
        }
        assert!(t.elapsed() < ELECTION, "MDS {leader}, taken out, is still wanted to lead: {shards}");
        std::thread::sleep(Duration::from_millis(200));
    }
    cl.kill9_mds_member(leader);
    make_named(&m.p("after"), 0..50);
    wait_caught_up(&cl, new);
    // Of the three voters left, kill one that is neither the new member
    // nor the leader: the new member is half of the majority now.
    let victim = voters(&cl).into_iter().find(|id| *id != new && *id != next).expect("a third voter");
    cl.kill9_mds_member(victim);
    make_named(&m.p("with-the-new-one"), 0..50);
    check_named(&m.p("old"), 0..made);
    check_named(&m.p("after"), 0..50);
    check_named(&m.p("with-the-new-one"), 0..50);
}

/// A leader cut off from the others (stopped, so that it hears nothing
/// and says nothing) while they elect another and take new metadata
/// never answers from what it holds when it comes back: asked directly,
/// it says where the leader is, and the name made without it is found
/// through the mount.
#[test]
fn a_leader_cut_off_never_answers_from_stale_metadata() {
    use aifs_common::certs::Role;
    use aifs_common::proto::mds::{MdsCall, MdsReply, MdsReq, MdsResp};
    use aifs_common::rpc::{self, Identity, RpcClient};
    let cl = ProcCluster::start_replicated(3, 3).unwrap();
    let m = cl.mount().unwrap();
    let old = cl.mds_leader(ELECTION).unwrap();
    make_named(&m.p("before"), 0..10);
    let frozen = cl.freeze_mds_member(old);
    let new = cl.mds_leader(ELECTION).unwrap();
    assert_ne!(new, old);
    make_named(&m.p("made-without-it"), 0..10);
    drop(frozen);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let answer = rt.block_on(async {
        let id = Identity::load(&aifs_tests::tls(cl.dir.path(), Role::Admin)).unwrap();
        let ep = rpc::client_endpoint(&id, &cl.transport().unwrap()).unwrap();
        let only_old = RpcClient::new(ep, cl.mds_addrs[(old - 1) as usize], Role::Mds);
        let ask = MdsCall::from(MdsReq::Lookup { parent: aifs_common::InodeId::ROOT, name: "made-without-it".into() });
        only_old.call::<_, MdsReply>(&ask, &[]).await.unwrap().0.resp
    });
    match answer {
        MdsResp::Err(e) => {
            let e = aifs_common::Error::from_wire(e.code, &e.msg);
            assert!(matches!(e, aifs_common::Error::NotLeader(_)), "the old leader answered {e:?}");
        }
        other => panic!("the old leader answered {other:?}"),
    }
    check_named(&m.p("made-without-it"), 0..10);
    check_named(&m.p("before"), 0..10);
}

/// Files a mount made under its directory's write lease, whose changes
/// reach the leader just as it loses its majority, are sent again to
/// whichever member leads next, not dropped: the leader answers "not
/// leader" for the batch, not a refusal of each change in it.
#[test]
fn changes_made_under_a_lease_outlive_the_leader_losing_its_majority() {
    let cl = ProcCluster::start_replicated(3, 3).unwrap();
    let m = cl.mount().unwrap();
    let leader = cl.mds_leader(ELECTION).unwrap();
    // The first files take the directory's write lease and its numbers.
    let dir = m.p("leased");
    make_named(&dir, 0..20);
    let frozen: Vec<_> = (1..=3).filter(|id| *id != leader).map(|id| cl.freeze_mds_member(id)).collect();
    // Answered by the mount; their batch reaches the leader within its
    // lease, and its commit waits for members that do not answer.
    let maker = {
        let dir = dir.clone();
        std::thread::spawn(move || (20..25).map(|i| fs::write(dir.join(format!("f{i}")), format!("{i}"))).collect::<Vec<_>>())
    };
    std::thread::sleep(Duration::from_secs(4));
    drop(frozen);
    for (i, r) in (20..).zip(maker.join().unwrap()) {
        r.unwrap_or_else(|e| panic!("f{i}: {e}"));
    }
    File::open(&dir).unwrap().sync_all().unwrap();
    check_named(&dir, 0..25);
}

/// A one-process MDS (what `make run` starts) grows into a replicated
/// one: `mds add` refuses it alone and says how; started again with
/// `members` naming itself, it writes its address into its groups, takes
/// two processes with `mds add`, and the mount, whose config names only
/// the first, learns of them: when the first is killed, a new leader
/// serves it and nothing made before or after is lost.
#[test]
fn a_one_process_mds_grows_to_three_and_loses_nothing_when_the_first_dies() {
    let mut cl = ProcCluster::start(3).unwrap();
    let m = cl.mount().unwrap();
    make_named(&m.p("alone"), 0..100);
    let (code, _) = cl.mdsctl_status(&["mds", "add", "127.0.0.1:1"]).unwrap();
    assert_ne!(code, 0, "a one-process MDS took a member without a member list");
    cl.kill9_mds_member(1);
    cl.name_solo_mds().unwrap();
    cl.start_mds_member(1).unwrap();
    assert_eq!(cl.mds_leader(ELECTION).unwrap(), 1);
    let mut addrs = vec![cl.mds_addr];
    for want in [2, 3] {
        let (id, addr) = cl.start_new_mds_member().unwrap();
        assert_eq!(id, want);
        cl.mdsctl(&["mds", "add", &addr.to_string()]).unwrap();
        addrs.push(addr);
    }
    assert_eq!(voters(&cl), vec![1, 2, 3]);
    let v: serde_json::Value = serde_json::from_str(&cl.mdsctl(&["--json", "mds", "ls"]).unwrap()).unwrap();
    let first = v.as_array().unwrap().iter().find(|m| m["id"].as_u64() == Some(1)).cloned().unwrap();
    assert_eq!(first["addr"].as_str(), Some(cl.mds_addr.to_string().as_str()), "the first process's address is not in its groups: {v}");
    make_named(&m.p("grown"), 0..50);
    wait_caught_up(&cl, 2);
    wait_caught_up(&cl, 3);
    // The mount asks for the members every 10 s.
    std::thread::sleep(aifs_common::rpc::leader::LEARN_EVERY + Duration::from_secs(3));
    cl.set_admin_mds(&addrs).unwrap();
    cl.kill9_mds_member(1);
    let next = cl.mds_leader(ELECTION).unwrap();
    assert_ne!(next, 1, "the killed process still leads");
    make_named(&m.p("without-the-first"), 0..50);
    check_named(&m.p("alone"), 0..100);
    check_named(&m.p("grown"), 0..50);
    check_named(&m.p("without-the-first"), 0..50);
}

/// `mdsctl shard move` hands the lead to the member asked for while a
/// mount makes files, and nothing is lost; the wish outlives that
/// member's death: another member leads meanwhile, and the wanted one is
/// handed the lead again once it is back. A shard or member that does
/// not exist is refused, naming it.
#[test]
fn the_lead_moves_to_the_member_asked_for_and_back_to_it_after_its_restart() {
    let mut cl = ProcCluster::start_replicated(3, 3).unwrap();
    let m = cl.mount().unwrap();
    let first = cl.mds_leader(ELECTION).unwrap();
    let to = if first == 3 { 2 } else { 3 };
    let (code, _) = cl.mdsctl_status(&["shard", "move", "9", "--to", &to.to_string()]).unwrap();
    assert_ne!(code, 0, "a move of shard 9 of 4 was accepted");
    let (code, _) = cl.mdsctl_status(&["shard", "move", "0", "--to", "7"]).unwrap();
    assert_ne!(code, 0, "a move to MDS 7, which is not a member, was accepted");
    // A mount makes files all along; the longest wait for one is the
    // stall the move costs it.
    let dir = m.p("during");
    fs::create_dir_all(&dir).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let maker = {
        let (dir, stop) = (dir.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut n, mut longest) = (0u32, Duration::ZERO);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = std::time::Instant::now();
                fs::write(dir.join(format!("f{n}")), format!("{n}")).unwrap();
                longest = longest.max(t.elapsed());
                n += 1;
            }
            (n, longest)
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let out = cl.mdsctl(&["shard", "move", "0", "--to", &to.to_string()]).unwrap();
    assert!(out.contains(&format!("MDS {to} leads shard 0")), "{out}");
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (made, longest) = maker.join().expect("the mount's creates failed through the move");
    eprintln!("{made} files made through the move; the longest create took {longest:?}");
    assert_eq!(cl.mds_leader(ELECTION).unwrap(), to);
    let shards: serde_json::Value = serde_json::from_str(&cl.mdsctl(&["--json", "shard", "ls"]).unwrap()).unwrap();
    for s in shards.as_array().unwrap() {
        assert_eq!((s["leader"].as_u64(), s["wanted"].as_u64()), (Some(to), Some(to)), "{s}");
    }
    check_named(&dir, 0..made);
    // The wanted member dies: another leads. Back, it leads again.
    cl.kill9_mds_member(to);
    let other = cl.mds_leader(ELECTION).unwrap();
    assert_ne!(other, to);
    make_named(&m.p("after"), 0..20);
    cl.start_mds_member(to).unwrap();
    let t = std::time::Instant::now();
    while cl.mds_leader(ELECTION).unwrap() != to {
        assert!(t.elapsed() < ELECTION * 2, "MDS {to}, back, was not handed the lead again");
        std::thread::sleep(Duration::from_millis(200));
    }
    check_named(&dir, 0..made);
    check_named(&m.p("after"), 0..20);
}
