//! Shards led by different MDS processes (`spread = true`,
//! mds/src/placing.rs): three real `aifs-mds` processes, a shard placed
//! on a member that does not lead shard 0, requests sent by an admin
//! client that follows "not leader" answers as every caller does, and
//! changes over two shards led from two processes, their two phases over
//! the MDS's own QUIC endpoint.
use aifs_common::proto::mds::{Attr, MdsReq, MdsResp};
use aifs_common::{Error, InodeId};
use aifs_mds::admin::{Admin, AdminConfig};
use aifs_tests::proc::ProcCluster;
use aifs_tests::ELECTION;
use std::time::{Duration, Instant};

const PLACED: u32 = 2;

fn attr_of(r: MdsResp) -> Attr {
    match r {
        MdsResp::Attr(a) | MdsResp::AttrNoLease(a) => a,
        MdsResp::Changed { attr: Some(a), .. } => a,
        other => panic!("no attributes in {other:?}"),
    }
}

struct Caller {
    rt: tokio::runtime::Runtime,
    admin: Admin,
}

impl Caller {
    fn new(cl: &ProcCluster) -> Caller {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let cfg: AdminConfig = aifs_common::config::load(&cl.path("admin.toml")).unwrap();
        let admin = rt.block_on(async { Admin::connect(&cfg) }).unwrap();
        Caller { rt, admin }
    }

    fn call(&self, req: MdsReq) -> aifs_common::Result<MdsResp> {
        self.rt.block_on(self.admin.call(&req))
    }

    fn mkdir(&self, parent: InodeId, name: &str) -> Attr {
        attr_of(self.call(MdsReq::Mkdir { parent, name: name.into(), mode: 0o755 }).unwrap())
    }

    fn create(&self, parent: InodeId, name: &str) -> Attr {
        attr_of(self.call(MdsReq::Create { parent, name: name.into(), mode: 0o644, exclusive: true }).unwrap())
    }

    fn lookup(&self, parent: InodeId, name: &str) -> aifs_common::Result<Attr> {
        self.call(MdsReq::Lookup { parent, name: name.into() }).map(attr_of)
    }

    /// [`Caller::lookup`], asked again while the answer is neither the
    /// entry nor its absence (a leader just elected may not serve yet).
    fn lookup_surely(&self, parent: InodeId, name: &str) -> aifs_common::Result<Attr> {
        let t = Instant::now();
        loop {
            match self.lookup(parent, name) {
                Err(e) if !matches!(e, Error::NotFound) && t.elapsed() < ELECTION => eprintln!("lookup of {name}: {e}; asking again"),
                r => return r,
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Until MDS `id` serves `shard`: a getattr there of a number no
    /// inode has finds nothing, rather than "not leader" or "starting".
    fn wait_serving(&self, cl: &ProcCluster, id: u64, shard: u32) {
        let t = Instant::now();
        loop {
            match self.ask_only(cl, id, MdsReq::GetAttr { ino: InodeId::new(shard, u64::MAX >> 9) }) {
                Err(Error::NotFound) => return,
                r => assert!(t.elapsed() < ELECTION, "MDS {id} does not serve shard {shard}: {r:?}"),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn rename(&self, parent: InodeId, name: &str, newparent: InodeId, newname: &str) {
        self.call(MdsReq::Rename { parent, name: name.into(), newparent, newname: newname.into(), flags: 0 }).unwrap();
    }

    /// Ask only the member at `addr`; "not leader" comes back as an error.
    fn ask_only(&self, cl: &ProcCluster, id: u64, req: MdsReq) -> aifs_common::Result<MdsResp> {
        use aifs_common::certs::Role;
        use aifs_common::proto::mds::{MdsCall, MdsReply};
        let only = aifs_common::rpc::RpcClient::new(self.admin.endpoint.clone(), cl.mds_addrs[(id - 1) as usize], Role::Mds);
        let (reply, _) = self.rt.block_on(only.call::<_, MdsReply>(&MdsCall::from(req), &[]))?;
        reply.into_result().map(|(r, _)| r)
    }
}

/// Three MDS processes with `spread = true`; shard 0's leader, and the
/// member the tests place shard [`PLACED`] on (one that does not lead
/// shard 0).
fn spread_cluster() -> (ProcCluster, u64, u64) {
    let cl = ProcCluster::start_replicated_edited(3, 3, &|t| format!("spread = true\n{t}")).unwrap();
    let first = cl.mds_leader(ELECTION).unwrap();
    let to = if first == 3 { 2 } else { 3 };
    (cl, first, to)
}

/// Each shard's leader, as `mdsctl shard ls` says (asked again while no
/// one answers it, as between two leaders of shard 0).
fn leaders(cl: &ProcCluster) -> Vec<Option<u64>> {
    let t = Instant::now();
    loop {
        match cl.mdsctl(&["--json", "shard", "ls"]) {
            Ok(out) => {
                let v: serde_json::Value = serde_json::from_str(&out).unwrap();
                return v.as_array().unwrap().iter().map(|s| s["leader"].as_u64()).collect();
            }
            Err(e) => assert!(t.elapsed() < ELECTION, "mdsctl shard ls: {e}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Until every shard's voters (`mdsctl shard ls --json`) pass `ok`,
/// as `what` says (a follower's view of a group may lag its leader's).
fn wait_voters(cl: &ProcCluster, ok: impl Fn(&[u64]) -> bool, what: &str) {
    let t = Instant::now();
    loop {
        let v: serde_json::Value = serde_json::from_str(&cl.mdsctl(&["--json", "shard", "ls"]).unwrap()).unwrap();
        let voters: Vec<Vec<u64>> = v.as_array().unwrap().iter().map(|s| s["members"].as_array().unwrap().iter().filter_map(|m| m.as_u64()).collect()).collect();
        if voters.iter().all(|v| ok(v)) {
            return;
        }
        assert!(t.elapsed() < ELECTION, "{what} after {ELECTION:?}: voters per shard {voters:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Until shard `shard` is led by a member `ok` accepts; that member.
fn wait_led(cl: &ProcCluster, shard: usize, ok: impl Fn(u64) -> bool, what: &str) -> u64 {
    let t = Instant::now();
    loop {
        let now = leaders(cl);
        if let Some(Some(l)) = now.get(shard).copied() {
            if ok(l) {
                return l;
            }
        }
        assert!(t.elapsed() < ELECTION, "shard {shard}: {what} after {ELECTION:?}; leaders {now:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A shard placed on a member that does not lead shard 0 is led and
/// served there: its requests, sent to shard 0's leader, are sent on;
/// renames between it and shard 0 go both ways; with its member killed,
/// shard 0's leader leads it and nothing is lost; back, the member leads
/// it again.
#[test]
fn a_shard_placed_apart_is_served_where_placed_and_comes_back_with_its_member() {
    let (mut cl, first, to) = spread_cluster();
    let c = Caller::new(&cl);
    // Directories made while one process leads all land on every shard.
    let dirs: Vec<Attr> = (0..16).map(|i| c.mkdir(InodeId::ROOT, &format!("d{i}"))).collect();
    let d = dirs.iter().find(|a| a.ino.shard() == PLACED).expect("no directory landed on the shard to place").clone();
    let d_name = format!("d{}", dirs.iter().position(|a| a.ino == d.ino).unwrap());
    c.create(d.ino, "before");
    c.create(InodeId::ROOT, "x");

    let out = cl.mdsctl(&["shard", "move", &PLACED.to_string(), "--to", &to.to_string()]).unwrap();
    assert!(out.contains(&format!("MDS {to} leads shard {PLACED}")), "{out}");
    let led = leaders(&cl);
    for (shard, l) in led.iter().enumerate() {
        let want = if shard as u32 == PLACED { to } else { first };
        assert_eq!(*l, Some(want), "shard {shard}: {led:?}");
    }
    let shards: serde_json::Value = serde_json::from_str(&cl.mdsctl(&["--json", "shard", "ls"]).unwrap()).unwrap();
    assert_eq!(shards[PLACED as usize]["wanted"].as_u64(), Some(to), "{shards}");

    // Served where placed, and only there.
    let f = c.create(d.ino, "made-there");
    assert_eq!(f.ino.shard(), PLACED);
    assert!(c.ask_only(&cl, to, MdsReq::GetAttr { ino: f.ino }).is_ok());
    match c.ask_only(&cl, first, MdsReq::GetAttr { ino: f.ino }) {
        Err(Error::NotLeader(hint)) => assert_eq!(hint, cl.mds_addrs[(to - 1) as usize].to_string()),
        other => panic!("shard 0's leader answered a request for shard {PLACED} with {other:?}"),
    }
    match c.ask_only(&cl, to, MdsReq::GetAttr { ino: InodeId::ROOT }) {
        Err(Error::NotLeader(hint)) => assert_eq!(hint, cl.mds_addrs[(first - 1) as usize].to_string()),
        other => panic!("the placed member answered a request for shard 0 with {other:?}"),
    }
    // A heartbeat for the session a client has with shard 0's leader,
    // sent to the placed member (as a pool sent on by a "not leader" that
    // named no one sends it): told where to go, not that it is gone.
    let open = MdsReq::OpenSession { name: "home".into(), dir_leases: false, previous: vec![], open: vec![], locks: vec![] };
    let Ok(MdsResp::Session { id, .. }) = c.ask_only(&cl, first, open) else { panic!("no session opened at shard 0's leader") };
    let beat = || MdsReq::SessionHeartbeat { id, io: Default::default() };
    match c.ask_only(&cl, to, beat()) {
        Err(Error::NotLeader(hint)) => assert_eq!(hint, cl.mds_addrs[(first - 1) as usize].to_string()),
        other => panic!("the placed member answered a heartbeat for a session it does not hold with {other:?}"),
    }
    assert_eq!(c.ask_only(&cl, first, beat()), Ok(MdsResp::Done));
    // Across the two processes, coordinated by each side in turn.
    c.rename(InodeId::ROOT, "x", d.ino, "x");
    assert!(matches!(c.lookup(InodeId::ROOT, "x"), Err(Error::NotFound)));
    let x = c.lookup(d.ino, "x").unwrap();
    c.rename(d.ino, "before", InodeId::ROOT, "from-there");
    assert!(matches!(c.lookup(d.ino, "before"), Err(Error::NotFound)));
    c.lookup(InodeId::ROOT, "from-there").unwrap();
    // Directories made in the placed shard's directory spread over the
    // shards by name, those led by shard 0's leader too.
    let sub = c.mkdir(d.ino, "sub");
    let subs: std::collections::BTreeSet<u32> = (0..8).map(|i| c.mkdir(d.ino, &format!("sub{i}")).ino.shard()).chain([sub.ino.shard()]).collect();
    assert!(subs.iter().any(|s| *s != PLACED), "every directory made in shard {PLACED}'s directory is on it: {subs:?}");

    // Its member dies: shard 0's leader leads the shard meanwhile.
    cl.kill9_mds_member(to);
    wait_led(&cl, PLACED as usize, |l| l != to, "still led by the dead member");
    assert_eq!(c.lookup(d.ino, "x").unwrap().ino, x.ino);
    assert_eq!(c.lookup(d.ino, "made-there").unwrap().ino, f.ino);
    assert_eq!(c.lookup(InodeId::ROOT, &d_name).unwrap().ino, d.ino);
    c.create(d.ino, "while-away");

    // Back, it leads its shard again, and holds what was made meanwhile.
    cl.start_mds_member(to).unwrap();
    wait_led(&cl, PLACED as usize, |l| l == to, "not led by its member again");
    assert_eq!(leaders(&cl)[0], Some(first));
    for name in ["x", "made-there", "while-away", "sub"] {
        c.lookup(d.ino, name).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    assert!(c.ask_only(&cl, to, MdsReq::Lookup { parent: d.ino, name: "while-away".into() }).is_ok());
}

/// Renames between shard 0 and a shard placed apart, made all along
/// while that shard moves to its member, loses it to a `kill -9` and
/// comes back to it: every file is afterwards in exactly one of the two
/// directories, the inode it was made as, with one link.
#[test]
fn renames_across_two_processes_keep_every_file_through_moves_and_a_death() {
    const FILES: usize = 12;
    let (mut cl, _, to) = spread_cluster();
    let c = Caller::new(&cl);
    let d = (0..16).map(|i| c.mkdir(InodeId::ROOT, &format!("d{i}"))).find(|a| a.ino.shard() == PLACED).expect("no directory on the shard to place");
    let made: Vec<InodeId> = (0..FILES).map(|i| c.create(InodeId::ROOT, &format!("f{i}")).ino).collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let renamer = {
        let (r, stop, dir) = (Caller::new(&cl), stop.clone(), d.ino);
        std::thread::spawn(move || {
            let (mut done, mut failed) = (0u32, 0u32);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for i in 0..FILES {
                    let name = format!("f{i}");
                    // Where it is now decides where it goes: an answer
                    // lost to a leader change leaves the caller unsure.
                    let (from, to) = match r.lookup(InodeId::ROOT, &name) {
                        Ok(_) => (InodeId::ROOT, dir),
                        Err(_) => (dir, InodeId::ROOT),
                    };
                    match r.call(MdsReq::Rename { parent: from, name: name.clone(), newparent: to, newname: name, flags: 0 }) {
                        Ok(_) => done += 1,
                        Err(_) => failed += 1,
                    }
                }
            }
            (done, failed)
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    cl.mdsctl(&["shard", "move", &PLACED.to_string(), "--to", &to.to_string()]).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    cl.kill9_mds_member(to);
    wait_led(&cl, PLACED as usize, |l| l != to, "still led by the dead member");
    std::thread::sleep(Duration::from_millis(1000));
    cl.start_mds_member(to).unwrap();
    wait_led(&cl, PLACED as usize, |l| l == to, "not led by its member again");
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (done, failed) = renamer.join().unwrap();
    eprintln!("{done} renames across the two processes, {failed} answered with an error");
    assert!(done > FILES as u32, "too few renames were made to tell anything: {done}");
    for (i, ino) in made.iter().enumerate() {
        let name = format!("f{i}");
        let looked: Vec<aifs_common::Result<Attr>> = [InodeId::ROOT, d.ino].iter().map(|dir| c.lookup_surely(*dir, &name)).collect();
        let found: Vec<Attr> = looked.iter().filter_map(|r| r.as_ref().ok().cloned()).collect();
        assert_eq!(found.len(), 1, "{name} is in {} directories: {looked:?}; its inode: {:?}", found.len(), c.call(MdsReq::GetAttr { ino: *ino }));
        assert_eq!((found[0].ino, found[0].nlink), (*ino, 1), "{name}");
    }
}

/// A mount over a shard placed apart: its requests for that shard go to
/// the process that leads it, under a session of the mount's there (the
/// leases and locks it holds are that process's), while everything else
/// goes to shard 0's leader. The placed member killed, the mount goes on
/// through shard 0's leader, which takes the lock back with the session;
/// with the member back, the mount follows the shard to it again.
#[cfg(feature = "fuse_tests")]
#[test]
fn a_mount_speaks_to_the_process_that_leads_a_shard_and_keeps_its_lock_through_moves() {
    use aifs_common::proto::mds::LeaseMode;
    use aifs_tests::flock;
    use std::os::unix::fs::MetadataExt;
    let (mut cl, _, to) = spread_cluster();
    let (m, other) = (cl.mount().unwrap(), cl.mount().unwrap());
    let d = placed_dir(&m);
    std::fs::write(d.join("before"), b"made before the move").unwrap();
    cl.mdsctl(&["shard", "move", &PLACED.to_string(), "--to", &to.to_string()]).unwrap();
    wait_led(&cl, PLACED as usize, |l| l == to, "not led by the member placed");

    // Made, written and read through the placed process.
    let data = aifs_tests::pattern::bytes(7, 0, 3 << 20);
    std::fs::write(d.join("after"), &data).unwrap();
    assert!(std::fs::read(d.join("after")).unwrap() == data);
    assert_eq!(std::fs::read(d.join("before")).unwrap(), b"made before the move");
    let f = std::fs::OpenOptions::new().read(true).write(true).open(d.join("after")).unwrap();
    let ino = InodeId(f.metadata().unwrap().ino());
    assert_eq!(ino.shard(), PLACED);
    flock(&f, libc::LOCK_EX).unwrap();
    let c = Caller::new(&cl);
    let held = match c.call(MdsReq::Leases { ino }).unwrap() {
        MdsResp::Leases(v) => v,
        other => panic!("{other:?}"),
    };
    assert!(held.iter().any(|l| l.mode == LeaseMode::Write), "the placed process granted the mount no write lease on a file it has open for writing: {held:?}");
    let theirs = std::fs::File::open(other.p(&format!("{}/after", d.file_name().unwrap().to_str().unwrap()))).unwrap();
    let busy = |f: &std::fs::File| flock(f, libc::LOCK_EX | libc::LOCK_NB).is_err();
    assert!(busy(&theirs), "a lock held through the placed process is not seen by another mount");
    // Shard 0's leader's entries are still its own.
    std::fs::write(m.p("at-the-root"), b"root").unwrap();

    // The placed member dies: the shard's requests go back to shard 0's
    // leader, which takes the session and the lock back.
    cl.kill9_mds_member(to);
    wait_led(&cl, PLACED as usize, |l| l != to, "still led by the dead member");
    std::fs::write(d.join("while-away"), b"made while its member was dead").unwrap();
    assert!(std::fs::read(d.join("after")).unwrap() == data);
    assert!(busy(&theirs), "the lock was lost when its shard's leader died");

    cl.start_mds_member(to).unwrap();
    wait_led(&cl, PLACED as usize, |l| l == to, "not led by its member again");
    std::fs::write(d.join("back"), b"made with its member back").unwrap();
    let mut names: Vec<String> = std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["after", "back", "before", "while-away"]);
    assert_eq!(std::fs::read(m.p("at-the-root")).unwrap(), b"root");
    assert!(busy(&theirs), "the lock was lost when its shard went back to its member");
    flock(&f, libc::LOCK_UN).unwrap();
    let t = Instant::now();
    while busy(&theirs) {
        assert!(t.elapsed() < ELECTION, "a lock given back is still held");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A directory made through `m` in the shard to place.
#[cfg(feature = "fuse_tests")]
fn placed_dir(m: &aifs_tests::proc::Mount) -> std::path::PathBuf {
    use std::os::unix::fs::MetadataExt;
    (0..16)
        .map(|i| {
            let p = m.p(&format!("d{i}"));
            std::fs::create_dir(&p).unwrap();
            p
        })
        .find(|p| InodeId(std::fs::metadata(p).unwrap().ino()).shard() == PLACED)
        .expect("no directory on the shard to place")
}

/// `mdsctl fsck` while a shard is placed apart: shard 0's leader checks
/// the shards it leads and has the placed member check its own, where
/// their rows are current and their objects held against its repair's
/// moves. A replica lost and an object of no file, both of the placed
/// shard, are found there; `--repair` rewrites the one and deletes the
/// other. Before, fsck refused to run while shards were spread.
#[cfg(feature = "fuse_tests")]
#[test]
fn fsck_checks_a_shard_placed_apart_where_it_is_led() {
    use std::os::unix::fs::MetadataExt;
    let (cl, _, to) = spread_cluster();
    let m = cl.mount().unwrap();
    let d = placed_dir(&m);
    let dname = d.file_name().unwrap().to_str().unwrap().to_string();
    cl.mdsctl(&["setstripe", &format!("/{dname}"), "--count", "2", "--replicas", "2", "--size", "1M"]).unwrap();
    cl.mdsctl(&["shard", "move", &PLACED.to_string(), "--to", &to.to_string()]).unwrap();
    wait_led(&cl, PLACED as usize, |l| l == to, "not led by the member placed");
    let body = aifs_tests::pattern::bytes(11, 0, (3 << 20) + 5);
    std::fs::write(d.join("opt.pt"), &body).unwrap();
    std::fs::File::open(d.join("opt.pt")).unwrap().sync_all().unwrap();
    std::fs::write(m.p("at-the-root"), b"root").unwrap();
    let (code, out) = cl.mdsctl_status(&["fsck"]).unwrap();
    assert_eq!(code, 0, "a healthy file system over spread shards is not clean:\n{out}");

    let path = format!("/{dname}/opt.pt");
    let v: serde_json::Value = serde_json::from_str(&cl.mdsctl(&["--json", "getstripe", &path]).unwrap()).unwrap();
    let objs = v["objects"].as_array().unwrap();
    let on_disk = |osd: &serde_json::Value, name: &str| cl.path(&format!("data/osd{osd}/objects/{}/{name}", &name[14..16]));
    let lost = on_disk(&objs[0]["osd"], objs[0]["object"].as_str().unwrap());
    std::fs::remove_file(&lost).unwrap();
    let ino = std::fs::metadata(d.join("opt.pt")).unwrap().ino();
    assert_eq!(InodeId(ino).shard(), PLACED);
    let orphan = on_disk(&objs[1]["osd"], &format!("{:016x}.0", ino + 0x900));
    std::fs::create_dir_all(orphan.parent().unwrap()).unwrap();
    std::fs::write(&orphan, b"left behind").unwrap();
    let (code, out) = cl.mdsctl_status(&["--json", "fsck"]).unwrap();
    assert_eq!(code, 4, "fsck found nothing:\n{out}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((r["missing"].as_u64(), r["corrupt"].as_u64(), r["orphans"].as_u64()), (Some(1), Some(0), Some(1)), "{out}");

    assert_eq!(cl.mdsctl_status(&["fsck", "--repair"]).unwrap().0, 1);
    let t = Instant::now();
    while !lost.exists() || orphan.exists() || cl.degraded().unwrap().0 > 0 {
        assert!(t.elapsed() < Duration::from_secs(60), "not repaired after 60 s: lost replica back {}, orphan gone {}", lost.exists(), !orphan.exists());
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, out) = cl.mdsctl_status(&["fsck"]).unwrap();
    assert_eq!(code, 0, "not clean after repair:\n{out}");
    assert!(std::fs::read(cl.mount().unwrap().p(&format!("{dname}/opt.pt"))).unwrap() == body);
}

/// Renames coordinated by another process that name a directory of a
/// shard placed apart are seen by a mount that caches that directory
/// under the placed process's leases: a file moved in is found after the
/// mount listed the directory, and while it holds the directory's write
/// lease (it answers creates there itself) a create of the name moved in
/// finds the file; a file moved out is gone. The renames come from an
/// admin client, which holds no leases, so no lookup of its own at the
/// placed process recalls anything first, as a mount's would.
#[cfg(feature = "fuse_tests")]
#[test]
fn a_rename_into_a_shard_placed_apart_reaches_the_mounts_that_cache_its_directory() {
    let (cl, _, to) = spread_cluster();
    let c = Caller::new(&cl);
    let d = (0..16).map(|i| c.mkdir(InodeId::ROOT, &format!("d{i}"))).find(|a| a.ino.shard() == PLACED).expect("no directory on the shard to place");
    let name = (0..16).map(|i| format!("d{i}")).find(|n| c.lookup(InodeId::ROOT, n).is_ok_and(|a| a.ino == d.ino)).unwrap();
    let (ename, e) = (0..16).map(|i| format!("e{i}")).map(|n| (n.clone(), c.mkdir(InodeId::ROOT, &n))).find(|(_, a)| a.ino.shard() == PLACED).unwrap();
    cl.mdsctl(&["shard", "move", &PLACED.to_string(), "--to", &to.to_string()]).unwrap();
    wait_led(&cl, PLACED as usize, |l| l == to, "not led by the member placed");
    let other = cl.mount().unwrap();
    let theirs = other.p(&name);
    let listed = |dir: &std::path::Path| {
        let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        v.sort();
        v
    };
    // Moved in from the root, whose shard shard 0's leader leads: two
    // processes, in two phases.
    let move_in = |file: &str| {
        c.create(InodeId::ROOT, file);
        c.rename(InodeId::ROOT, file, d.ino, file);
    };

    c.create(d.ino, "before");
    assert_eq!(listed(&theirs), ["before"]);
    assert!(std::fs::metadata(theirs.join("moved")).is_err());
    move_in("moved");
    assert!(std::fs::metadata(theirs.join("moved")).is_ok(), "a mount that listed the directory does not see the file moved in");
    assert_eq!(listed(&theirs), ["before", "moved"]);

    // The mount makes files there under the directory's write lease.
    std::fs::write(theirs.join("lease"), b"under the write lease").unwrap();
    std::fs::write(theirs.join("lease2"), b"under the write lease").unwrap();
    move_in("second");
    let made = std::fs::OpenOptions::new().write(true).create_new(true).open(theirs.join("second"));
    assert!(made.is_err(), "a mount made a file over the name of one moved in through another process");
    assert_eq!(listed(&theirs), ["before", "lease", "lease2", "moved", "second"]);
    assert_eq!(c.lookup(d.ino, "second").unwrap().size, 0);
    // The mount moves a file in itself while it holds the write lease:
    // the prepare takes the lease back from the very client waiting for
    // the rename, which gives it back at once.
    std::fs::write(theirs.join("third"), b"under the write lease").unwrap();
    std::fs::write(other.p("own"), b"moved in by the lease holder").unwrap();
    let t = Instant::now();
    std::fs::rename(other.p("own"), theirs.join("own")).unwrap();
    assert!(t.elapsed() < Duration::from_secs(3), "a rename by the write lease's holder waited {:?}", t.elapsed());
    assert_eq!(std::fs::read(theirs.join("own")).unwrap(), b"moved in by the lease holder");
    std::fs::remove_file(theirs.join("own")).unwrap();
    std::fs::remove_file(theirs.join("third")).unwrap();

    // Moved out again: gone from the mount's view.
    c.rename(d.ino, "moved", InodeId::ROOT, "away");
    assert!(std::fs::metadata(theirs.join("moved")).is_err(), "a mount still sees a file moved out through another process");
    assert_eq!(listed(&theirs), ["before", "lease", "lease2", "second"]);

    // A directory of the shard placed apart, looked up in the root at
    // shard 0's leader: its attributes change where its shard is led, and
    // are leased there, so a change made there reaches the mount (leased
    // with the lookup, they were never recalled).
    let nlink = |p: &std::path::Path| std::os::unix::fs::MetadataExt::nlink(&std::fs::metadata(p).unwrap());
    let before = nlink(&other.p(&ename));
    c.mkdir(e.ino, "sub");
    assert_eq!(nlink(&other.p(&ename)), before + 1, "a mount kept the attributes of a directory changed where its shard is led");
}

/// `mdsctl mds add` and `mds remove` while a shard is placed apart: the
/// step of the placed shard's group is taken by the process leading it,
/// the only one openraft lets change it. A new process comes to vote in
/// every group; the member leading the placed shard is taken out of every
/// group, another leads that shard, and nothing made there is lost.
#[test]
fn members_join_and_leave_every_group_while_a_shard_is_placed_apart() {
    let (mut cl, _, to) = spread_cluster();
    let c = Caller::new(&cl);
    let d = (0..16).map(|i| c.mkdir(InodeId::ROOT, &format!("d{i}"))).find(|a| a.ino.shard() == PLACED).expect("no directory on the shard to place");
    cl.mdsctl(&["shard", "move", &PLACED.to_string(), "--to", &to.to_string()]).unwrap();
    wait_led(&cl, PLACED as usize, |l| l == to, "not led by the member placed");
    let f = c.create(d.ino, "made-there");

    let (new, addr) = cl.start_new_mds_member().unwrap();
    let out = cl.mdsctl(&["--json", "mds", "add", &addr.to_string()]).unwrap();
    let added: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(added["id"].as_u64(), Some(new), "{out}");
    wait_voters(&cl, |v| v.contains(&new), &format!("MDS {new} does not vote in every group"));
    assert_eq!(leaders(&cl)[PLACED as usize], Some(to));
    // How far it holds the placed group's log is known at that group's
    // leader, and `mds ls` (answered by shard 0's leader) says it.
    let t = Instant::now();
    loop {
        let v: serde_json::Value = serde_json::from_str(&cl.mdsctl(&["--json", "mds", "ls"]).unwrap()).unwrap();
        let held = v.as_array().unwrap().iter().find(|m| m["id"].as_u64() == Some(new)).and_then(|m| m["matched"][PLACED as usize].as_u64());
        if held.is_some_and(|i| i > 0) {
            break;
        }
        assert!(t.elapsed() < ELECTION, "mds ls shows none of shard {PLACED}'s log held by MDS {new}: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
    c.create(d.ino, "with-four");

    // Taken out, the member leading the placed shard leaves every group
    // (its own step there included), and another leads the shard.
    cl.mdsctl(&["mds", "remove", &to.to_string()]).unwrap();
    wait_voters(&cl, |v| !v.contains(&to) && v.len() == 3, &format!("MDS {to} still votes somewhere"));
    wait_led(&cl, PLACED as usize, |l| l != to, "still led by the member taken out");
    cl.kill9_mds_member(to);
    assert_eq!(c.lookup_surely(d.ino, "made-there").unwrap().ino, f.ino);
    c.lookup(d.ino, "with-four").unwrap();
    c.create(d.ino, "after");
    c.lookup(d.ino, "after").unwrap();
}

/// Each shard's voters, as `mdsctl shard ls --json` says.
fn voters(cl: &ProcCluster) -> Vec<Vec<u64>> {
    let v: serde_json::Value = serde_json::from_str(&cl.mdsctl(&["--json", "shard", "ls"]).unwrap()).unwrap();
    v.as_array().unwrap().iter().map(|s| s["members"].as_array().unwrap().iter().filter_map(|m| m.as_u64()).collect()).collect()
}

/// Until each shard's voters pass `ok` (shard, its voters).
fn wait_groups(cl: &ProcCluster, ok: impl Fn(usize, &[u64]) -> bool, what: &str) -> Vec<Vec<u64>> {
    let t = Instant::now();
    loop {
        let now = voters(cl);
        if now.iter().enumerate().all(|(s, v)| ok(s, v)) {
            return now;
        }
        assert!(t.elapsed() < ELECTION, "{what} after {ELECTION:?}: voters per shard {now:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Four MDS processes with `group_size = 3`: shard 0's group is over all
/// four, every other over three, and each process keeps the databases of
/// its own groups only. New directories spread over every shard but
/// shard 0 (whose group is the widest), those led apart from shard 0's
/// leader too, and the files made in them are all there
/// after a `kill -9` of shard 0's leader. Taking the dead member out
/// gives each group it leaves one of the three left in its place (the
/// three then hold every group's database); a new process added takes
/// seats from them (opening those groups as their leaders send to it),
/// and still nothing is lost.
#[test]
fn groups_over_three_of_four_processes_lose_nothing_when_one_dies_and_is_replaced() {
    // `mdsctl init` makes groups of three over more than three processes.
    let mut cl = ProcCluster::start_replicated(4, 3).unwrap();
    assert!(std::fs::read_to_string(cl.mds_config(1)).unwrap().contains("group_size = 3\n"));
    let dead = wait_led(&cl, 0, |_| true, "no leader");
    let groups = wait_groups(&cl, |s, v| v.len() == if s == 0 { 4 } else { 3 }, "groups not over 4 and 3 members");
    for (shard, v) in groups.iter().enumerate() {
        for id in 1..=4u64 {
            let db = cl.path(&format!("data/mds{id}/shard-{shard}.redb"));
            assert_eq!(db.exists(), v.contains(&id), "MDS {id}, shard {shard}'s database: groups {groups:?}");
        }
    }
    // Every shard led, by a member of its group, whose namespace serves
    // it (until then, a mkdir puts the directory in its parent's shard).
    let c = Caller::new(&cl);
    for s in 0..groups.len() {
        let l = wait_led(&cl, s, |l| groups[s].contains(&l), "not led by a member");
        c.wait_serving(&cl, l, s as u32);
    }
    let made = |prefix: &str| -> Vec<Attr> {
        let dirs: Vec<Attr> = (0..16).map(|i| c.mkdir(InodeId::ROOT, &format!("{prefix}{i}"))).collect();
        for (i, d) in dirs.iter().enumerate() {
            c.create(d.ino, &format!("f{i}"));
        }
        dirs
    };
    let before = made("d");
    let on: std::collections::BTreeSet<u32> = before.iter().map(|d| d.ino.shard()).collect();
    assert_eq!(on, (1..groups.len() as u32).collect(), "directories on shards {on:?}");

    cl.kill9_mds_member(dead);
    for s in 0..groups.len() {
        wait_led(&cl, s, |l| l != dead && groups[s].contains(&l), "not led by a member left");
    }
    for (i, d) in before.iter().enumerate() {
        c.lookup_surely(d.ino, &format!("f{i}")).unwrap_or_else(|e| panic!("d{i}/f{i} on shard {}: {e}", d.ino.shard()));
        c.create(d.ino, &format!("g{i}"));
    }
    let after = made("e");

    cl.mdsctl(&["mds", "remove", &dead.to_string()]).unwrap();
    // Shard 0's leader hears of the groups it is not in within moments.
    let left = wait_groups(&cl, |_, v| !v.contains(&dead) && v.len() == 3, "groups not over the three left");
    for shard in 0..left.len() {
        for id in (1..=4u64).filter(|id| *id != dead) {
            assert!(cl.path(&format!("data/mds{id}/shard-{shard}.redb")).exists(), "MDS {id} holds no shard {shard}: {left:?}");
        }
    }
    let (new, addr) = cl.start_new_mds_member().unwrap();
    cl.mdsctl(&["mds", "add", &addr.to_string(), "--id", &new.to_string()]).unwrap();
    let now = wait_groups(&cl, |s, v| v.len() == if s == 0 { 4 } else { 3 }, "groups not back to 4 and 3 members");
    let seats = now[1..].iter().filter(|v| v.contains(&new)).count();
    assert_eq!(seats, 2, "MDS {new} took a seat from each process in three groups but one: {left:?} then {now:?}");
    for (shard, v) in now.iter().enumerate() {
        assert_eq!(cl.path(&format!("data/mds{new}/shard-{shard}.redb")).exists(), v.contains(&new), "MDS {new}, shard {shard}: groups {now:?}");
    }
    for (i, d) in before.iter().enumerate() {
        for name in [format!("f{i}"), format!("g{i}")] {
            c.lookup_surely(d.ino, &name).unwrap_or_else(|e| panic!("d{i}/{name}: {e}"));
        }
    }
    for (i, d) in after.iter().enumerate() {
        c.lookup_surely(d.ino, &format!("f{i}")).unwrap_or_else(|e| panic!("e{i}/f{i}: {e}"));
    }
}

/// Four MDS processes in groups of three: of the three groups besides
/// shard 0's, one process votes in three and the others in two. A fifth,
/// added with `mds add`, takes a seat from the one in three, which drops
/// its copy of that shard (database and log) once it is out; every file
/// is still there, and the shard whose group changed takes new files.
#[test]
fn a_process_added_to_full_groups_takes_a_seat_and_the_one_that_gave_it_drops_its_copy() {
    seat_moves(false);
}

/// As above, with the process in three groups killed before the fifth
/// is added: taken out of a group while down, it keeps its copy until it
/// starts again, stands for election there from that copy, and is told
/// by the group's leader to drop it.
#[test]
fn a_process_down_while_its_seat_moves_drops_its_copy_when_it_starts_again() {
    seat_moves(true);
}

fn seat_moves(down: bool) {
    let mut cl = ProcCluster::start_replicated(4, 3).unwrap();
    let groups = wait_groups(&cl, |s, v| v.len() == if s == 0 { 4 } else { 3 }, "groups not over 4 and 3 members");
    let seats = |g: &[Vec<u64>], id: u64| g[1..].iter().filter(|v| v.contains(&id)).count();
    let busiest = (1..=4).max_by_key(|id| seats(&groups, *id)).unwrap();
    assert_eq!(seats(&groups, busiest), 3, "groups {groups:?}");
    let c = Caller::new(&cl);
    for s in 0..groups.len() {
        let l = wait_led(&cl, s, |l| groups[s].contains(&l), "not led by a member");
        c.wait_serving(&cl, l, s as u32);
    }
    let dirs: Vec<Attr> = (0..16).map(|i| c.mkdir(InodeId::ROOT, &format!("d{i}"))).collect();
    for (i, d) in dirs.iter().enumerate() {
        c.create(d.ino, &format!("f{i}"));
    }

    if down {
        cl.kill9_mds_member(busiest);
        for s in 0..groups.len() {
            wait_led(&cl, s, |l| l != busiest && groups[s].contains(&l), "not led by a member left");
        }
    }
    let (new, addr) = cl.start_new_mds_member().unwrap();
    cl.mdsctl(&["mds", "add", &addr.to_string(), "--id", &new.to_string()]).unwrap();
    // Shard 0's leader hears of the groups it is not in within moments.
    let t = Instant::now();
    let now = loop {
        let now = voters(&cl);
        let sized = now.iter().enumerate().all(|(s, v)| v.len() == if s == 0 { 5 } else { 3 });
        if sized && seats(&now, new) == 1 {
            break now;
        }
        assert!(t.elapsed() < ELECTION, "the added MDS votes in no group, or groups are not over 5 and 3: {groups:?} then {now:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(seats(&now, busiest), 2, "MDS {busiest} gave up a seat: {groups:?} then {now:?}");
    let moved = (1..now.len()).find(|s| now[*s].contains(&new)).unwrap();
    assert!(groups[moved].contains(&busiest) && !now[moved].contains(&busiest), "shard {moved}: {groups:?} then {now:?}");
    // The one that left drops its copy (once it runs again, if it was
    // down); the one that joined holds one.
    let gone = cl.path(&format!("data/mds{busiest}/shard-{moved}.redb"));
    if down {
        assert!(gone.exists(), "{} went while its process was down", gone.display());
        cl.start_mds_member_as_configured(busiest).unwrap();
    }
    let t = Instant::now();
    while gone.exists() {
        assert!(t.elapsed() < ELECTION, "{} is still there", gone.display());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(cl.path(&format!("data/mds{new}/shard-{moved}.redb")).exists());
    for (i, d) in dirs.iter().enumerate() {
        c.lookup_surely(d.ino, &format!("f{i}")).unwrap_or_else(|e| panic!("d{i}/f{i} on shard {}: {e}", d.ino.shard()));
    }
    let on_moved: Vec<&Attr> = dirs.iter().filter(|d| d.ino.shard() as usize == moved).collect();
    assert!(!on_moved.is_empty(), "no directory on shard {moved}");
    for d in on_moved {
        let t = Instant::now();
        // Asked again while the group elects; made by a lost try, it exists.
        loop {
            match c.call(MdsReq::Create { parent: d.ino, name: "after".into(), mode: 0o644, exclusive: true }) {
                Ok(_) | Err(Error::Exists) => break,
                Err(e) => assert!(t.elapsed() < ELECTION, "a create on shard {moved} after the move: {e}"),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
