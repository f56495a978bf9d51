//! Two namespaces, as two MDS processes leading two shards each, joined
//! by messages that go through their wire encoding: operations over
//! shards led from both, and each crash point of the two phases
//! (twophase.rs).
use super::tests::test_cluster;
use super::twophase::{OpId, Peers, Remote, ShardMsg, ShardReply};
use super::*;
use crate::records::Step;
use aifs_common::lease::LeaseKind;
use crate::store::media::Disk;
use crate::store::{INTENTS, PREPARED};
use aifs_common::proto::frame::{decode_any, encode_any};
use futures::future::BoxFuture;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Weak};
use std::time::Duration;

/// Routes each message to the side that leads its shard, encoded and
/// decoded on the way as the wire would; a side that is down answers
/// nothing.
#[derive(Default)]
struct Link(Mutex<Vec<(Vec<bool>, Weak<Namespace>)>>);

impl Link {
    fn join(&self, led: Vec<bool>, ns: &Arc<Namespace>) {
        let mut sides = self.0.lock().unwrap();
        sides.retain(|(l, _)| *l != led);
        sides.push((led, Arc::downgrade(ns)));
    }
}

impl Peers for Link {
    fn send(&self, msg: ShardMsg) -> BoxFuture<'static, Result<ShardReply>> {
        let shard = msg.shard() as usize;
        let to = self.0.lock().unwrap().iter().find(|(l, _)| l[shard]).and_then(|(_, w)| w.upgrade());
        Box::pin(async move {
            let Some(ns) = to else { return Err(Error::Unavailable("that shard's leader is down".into())) };
            let msg: ShardMsg = decode_any(&encode_any(&msg)?)?;
            let reply = ns.answer_shard(msg).await?;
            decode_any(&encode_any(&reply)?)
        })
    }
}

const A: [bool; 4] = [true, true, false, false];
const B: [bool; 4] = [false, false, true, true];

/// Two processes' directories: each holds the stores of the shards its
/// side leads (and stale ones of the others, never read).
struct Cluster2 {
    _tmp: tempfile::TempDir,
    dirs: [PathBuf; 2],
    link: Arc<Link>,
}

impl Cluster2 {
    /// Shards 0 and 1 led by `a`, 2 and 3 by `b`, over a tree made
    /// while one process led them all: the root, and `d2`, `d3` (on
    /// shards 2 and 3) each with a file `f`, and `/f` on shard 0.
    async fn new() -> (Cluster2, Arc<Namespace>, Arc<Namespace>, [InodeId; 2]) {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = [tmp.path().join("a"), tmp.path().join("b")];
        let ns = super::tests::open_ns(&dirs[0]).await;
        let mut d = Vec::new();
        for shard in [2u32, 3] {
            let name = (0..).map(|i| format!("d{i}")).find(|n| name_hash(InodeId::ROOT.0, n) % 4 == shard as u64).unwrap();
            let a = ns.mkdir(InodeId::ROOT, &name, 0o755, &Cred::root(), &Once::none()).await.unwrap();
            ns.rename(InodeId::ROOT, &name, InodeId::ROOT, &format!("d{shard}"), 0, &Cred::root(), &Once::none()).await.unwrap();
            ns.create(a.ino, "f", 0o644, &Cred::root(), true, &Once::none()).await.unwrap();
            assert_eq!(a.ino.shard(), shard);
            d.push(a.ino);
        }
        ns.create(InodeId::ROOT, "f", 0o644, &Cred::root(), true, &Once::none()).await.unwrap();
        drop(ns);
        // b's own directory holds the stores of the shards it leads.
        std::fs::create_dir_all(&dirs[1]).unwrap();
        for shard in [2, 3] {
            move_shard(&dirs[0], &dirs[1], shard).await;
        }
        let c = Cluster2 { _tmp: tmp, dirs, link: Arc::default() };
        let (a, b) = (c.side(A).await, c.side(B).await);
        (c, a, b, [d[0], d[1]])
    }

    /// Open (again) the side that leads `led`.
    async fn side(&self, led: [bool; 4]) -> Arc<Namespace> {
        let dir: &Path = if led == A { &self.dirs[0] } else { &self.dirs[1] };
        let policy = LayoutPolicy { stripe_count: 1, ..LayoutPolicy::default() };
        for _ in 0..100 {
            if let Ok(ns) = self.open(dir, led, policy).await {
                self.link.join(led.to_vec(), &ns);
                return ns;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("a side does not open again");
    }

    async fn open(&self, dir: &Path, led: [bool; 4], policy: LayoutPolicy) -> Result<Arc<Namespace>> {
        open_side(dir, Remote::new(led.to_vec(), self.link.clone(), false), policy).await
    }
}

/// A namespace over the four shards' stores in `dir`, leading those
/// `remote` says.
async fn open_side(dir: &Path, remote: Arc<Remote>, policy: LayoutPolicy) -> Result<Arc<Namespace>> {
    let logs = crate::store::raft::Logs::open(&Disk, dir)?;
    let snapshot_after = crate::store::raft::LogUpkeep::default().snapshot_after_bytes;
    let mut shards = Vec::new();
    for i in 0..4 {
        shards.push(Arc::new(ShardStore::open_on(&Disk, &logs, dir, i, snapshot_after).await?));
    }
    Namespace::over_led(shards, policy, test_cluster(), remote).await
}

/// With groups over some of the processes, shard 0's is over all of
/// them: new directories go to every other shard and not to it; with
/// groups over all, to every shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_directories_spare_shard_zero_when_its_group_is_the_widest() {
    let tmp = tempfile::tempdir().unwrap();
    for spare in [false, true] {
        let remote = Remote::new(vec![true; 4], Arc::new(Link::default()), spare);
        let ns = open_side(&tmp.path().join(spare.to_string()), remote, LayoutPolicy::default()).await.unwrap();
        let mut on = std::collections::BTreeSet::new();
        for i in 0..32 {
            on.insert(ns.mkdir(InodeId::ROOT, &format!("d{i}"), 0o755, &Cred::root(), &Once::none()).await.unwrap().ino.shard());
        }
        let every: std::collections::BTreeSet<u32> = (u32::from(spare)..4).collect();
        assert_eq!(on, every, "sparing shard 0: {spare}");
    }
}

/// Move shard `shard`'s store and log from directory `from` to `to`, once
/// the groups of a namespace dropped just before let go of the files.
async fn move_shard(from: &Path, to: &Path, shard: u32) {
    for tries in 0.. {
        match crate::store::raft::log::move_log(from, to, shard) {
            Ok(()) => break,
            Err(e) if tries < 100 => {
                tracing::debug!(error = %e, "not yet");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("shard {shard}'s log does not move: {e}"),
        }
    }
    for entry in std::fs::read_dir(from).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.starts_with(&format!("shard-{shard}.")) {
            std::fs::rename(from.join(&name), to.join(&name)).unwrap();
        }
    }
}

/// Rows prepared and intents in `ns`'s shards `shards`.
async fn leftovers(ns: &Namespace, shards: &[u32]) -> (u64, u64) {
    let (mut p, mut i) = (0, 0);
    for s in shards {
        let (a, b) = ns.shard(*s).read(|t| Ok((t.open_table(PREPARED).io()?.len().io()?, t.open_table(INTENTS).io()?.len().io()?))).await.unwrap();
        p += a;
        i += b;
    }
    (p, i)
}

/// Does a create in `dir` (on a shard `ns` leads) get through within a
/// second, or does a held fence stop it?
async fn can_create(ns: &Namespace, dir: InodeId, name: &str) -> bool {
    let (cred, once) = (Cred::root(), Once::none());
    let create = ns.create(dir, name, 0o644, &cred, true, &once);
    tokio::time::timeout(Duration::from_secs(1), create).await.is_ok_and(|r| r.is_ok())
}

fn root() -> Cred {
    Cred::root()
}

/// A holder at `b` of the write lease on `d2` (it never answers a
/// recall), and `/f` being renamed to `d2/g` by `a`.
async fn rename_into_a_leased_directory(a: &Arc<Namespace>, b: &Arc<Namespace>, d2: InodeId) -> (crate::cluster::Holder, tokio::task::JoinHandle<Result<(InodeId, Option<InodeId>)>>) {
    let writer = b.cluster.own_holder(false);
    assert_eq!(b.cluster.acquire(&writer, d2, LeaseKind::Write).await, Ok(LeaseKind::Write));
    let a = a.clone();
    let rename = tokio::spawn(async move { a.rename(InodeId::ROOT, "f", d2, "g", 0, &root(), &Once::none()).await });
    (writer, rename)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_over_shards_led_from_two_processes_happen_whole() {
    let (_c, a, b, [d2, _]) = Cluster2::new().await;
    let r = InodeId::ROOT;
    let f = a.lookup(r, "f", &root()).await.unwrap().ino;
    // rename /f -> /d2/g, coordinated by a (the home: the root's shard).
    a.rename(r, "f", d2, "g", 0, &root(), &Once::none()).await.unwrap();
    assert_eq!(b.lookup(d2, "g", &root()).await.unwrap().ino, f);
    assert_eq!(a.lookup(r, "f", &root()).await.map(|x| x.ino), Err(Error::NotFound));
    assert_eq!(a.getattr(f).await.unwrap().nlink, 1);
    // link /d2/h to the same file (on a's shard), coordinated by b.
    b.link(f, d2, "h", &root(), false, &Once::none()).await.unwrap();
    assert_eq!(a.getattr(f).await.unwrap().nlink, 2);
    // unlink /d2/g: the entry at b, the inode at a.
    b.unlink(d2, "g", &root(), &Once::none()).await.unwrap();
    assert_eq!(a.getattr(f).await.unwrap().nlink, 1);
    // rmdir /d2, not empty: refused, and b's shard is free again at once.
    assert_eq!(a.rmdir(r, "d2", &root(), &Once::none()).await, Err(Error::NotEmpty));
    assert!(can_create(&b, d2, "late").await, "the refused rmdir left b's shard fenced");
    for n in ["h", "f", "late"] {
        b.unlink(d2, n, &root(), &Once::none()).await.unwrap();
    }
    assert_eq!(a.getattr(f).await.map(|x| x.ino), Err(Error::NotFound), "the last name went");
    a.rmdir(r, "d2", &root(), &Once::none()).await.unwrap();
    assert_eq!(b.getattr(d2).await.map(|x| x.ino), Err(Error::NotFound));
    assert_eq!(a.inode(InodeId::ROOT.0).await.unwrap().entries, 1, "only d3 is left");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(leftovers(&a, &[0, 1]).await, (0, 0));
    assert_eq!(leftovers(&b, &[2, 3]).await, (0, 0));
}

/// A change coordinated by one process takes back the write leases the
/// other granted on the directories it names there before it reads
/// them: a client holding one answers creates there itself, and the
/// change's checks must see what it made. Here the holder never answers,
/// so the rename into its directory waits until it is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_from_another_process_waits_for_write_leases_on_its_directories() {
    let (_c, a, b, [d2, _]) = Cluster2::new().await;
    let (writer, rename) = rename_into_a_leased_directory(&a, &b, d2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!rename.is_finished(), "the rename went ahead while another client held the directory's write lease");
    assert!(can_create(&b, d2, "meanwhile").await, "the shard was fenced while its write lease was taken back");
    drop(writer);
    let moved = tokio::time::timeout(Duration::from_secs(5), rename).await.expect("the rename still waits after the lease went").unwrap();
    assert!(moved.is_ok(), "{moved:?}");
    assert!(b.lookup(d2, "g", &root()).await.is_ok());
    // Its read lease went with it: the write lease is there to take again.
    let again = tokio::time::timeout(Duration::from_secs(1), b.cluster.acquire(&b.cluster.own_holder(false), d2, LeaseKind::Write)).await;
    assert_eq!(again, Ok(Ok(LeaseKind::Write)), "the prepare's read lease outlived the rename");
}

/// A client gives a directory's write lease back only once its queued
/// changes are applied, and one of them may be for a shard that the
/// coordinator of a change over two processes fences: the coordinator
/// must not hold its fences while the prepare waits for that lease. Here
/// the holder first makes a file in the root (shard 0, the rename's home,
/// fenced by its coordinator), and only then lets the lease go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_lets_its_fences_go_while_a_lease_it_needs_waits_on_them() {
    let (_c, a, b, [d2, _]) = Cluster2::new().await;
    let (writer, rename) = rename_into_a_leased_directory(&a, &b, d2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (cred, once) = (root(), Once::none());
    let queued = tokio::time::timeout(Duration::from_secs(10), a.create(InodeId::ROOT, "queued", 0o644, &cred, true, &once)).await;
    assert!(queued.is_ok_and(|r| r.is_ok()), "the coordinator held its fence on the root while the lease was on its way back");
    drop(writer);
    let moved = tokio::time::timeout(Duration::from_secs(5), rename).await.expect("the rename still waits after the lease went").unwrap();
    assert!(moved.is_ok(), "{moved:?}");
    assert!(b.lookup(d2, "g", &root()).await.is_ok());
    assert!(a.lookup(InodeId::ROOT, "queued", &root()).await.is_ok());
}

/// A listing with attributes made by one process reads those of inodes
/// in the other's shards where they are led, not in its own copy of
/// those shards (which lags the leader's; here, left as it was when the
/// other process took them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_reads_attributes_where_their_shard_is_led() {
    let (_c, a, b, [d2, _]) = Cluster2::new().await;
    b.mkdir(d2, "sub", 0o755, &root(), &Once::none()).await.unwrap();
    let (entries, _, _) = a.readdir(InodeId::ROOT, 0, 100, &root()).await.unwrap();
    let listed = a.with_attrs(entries).await.unwrap();
    let nlink = listed.iter().find(|(e, _)| e.ino == d2).map(|(_, at)| at.nlink);
    assert_eq!(nlink, Some(3), "the attributes of a directory led elsewhere came from a stale copy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_moves_between_processes_and_never_below_itself() {
    let (_c, a, b, [d2, d3]) = Cluster2::new().await;
    // /d3 -> /d2/d3: the home is the root's shard (a); both directories at b.
    a.rename(InodeId::ROOT, "d3", d2, "d3", 0, &root(), &Once::none()).await.unwrap();
    assert_eq!(b.inode(d3.0).await.unwrap().parent, d2.0);
    assert_eq!(b.inode(d2.0).await.unwrap().nlink, 3);
    // /d2 -> /d2/d3/x: below itself, refused.
    let r = a.rename(InodeId::ROOT, "d2", d3, "x", 0, &root(), &Once::none()).await;
    assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
    // exchange /d2/d3/f and /f, over all four shards' leaders.
    b.rename(d3, "f", InodeId::ROOT, "f", aifs_common::proto::mds::RENAME_EXCHANGE, &root(), &Once::none()).await.unwrap();
    assert_eq!(b.lookup(d3, "f", &root()).await.unwrap().ino.shard(), 0);
    assert_eq!(a.lookup(InodeId::ROOT, "f", &root()).await.unwrap().ino.shard(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_changes_from_two_processes_leave_a_tree_that_holds_together() {
    let (c, a, b, _) = Cluster2::new().await;
    let to: super::races::Route = {
        let (a, b) = (a.clone(), b.clone());
        Arc::new(move |dir: InodeId| if A[dir.shard() as usize % 4] { a.clone() } else { b.clone() })
    };
    for round in 0..4u64 {
        super::races::race_round(&to, 0xD1B5_4A32_D192_ED03, round, 40).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(leftovers(&a, &[0, 1]).await, (0, 0));
    assert_eq!(leftovers(&b, &[2, 3]).await, (0, 0));
    // Gathered in one process again, the tree holds together.
    drop((a, b, to));
    for shard in [2, 3] {
        move_shard(&c.dirs[1], &c.dirs[0], shard).await;
    }
    let one = super::tests::open_ns(&c.dirs[0]).await;
    super::races::holds_together(&one, "after the races").await;
}

/// The operation of the crash tests below: `/d2/f` renamed to `/g`,
/// coordinated by `a` from the root's shard, with its fences and prepare
/// taken; returns what `run_steps` would commit.
async fn prepared_rename(a: &Namespace, d2: InodeId) -> (OpId, Vec<(u32, Vec<Step>)>, u64) {
    let f = a.entry_as(d2.0, "f", None).await.unwrap().0;
    let mut held = a.fences.over(InodeId::ROOT.0, &[InodeId::ROOT.0, d2.0, f]).await.unwrap();
    let op = held.prepared.as_ref().unwrap().op;
    // as a crash would leave it: nothing sent after this
    held.prepared.as_mut().unwrap().open.clear();
    std::mem::forget(held);
    let steps = vec![
        (0, vec![Step::InsertEntry { dir: InodeId::ROOT.0, name: "g".into(), ino: f, kind: FileKind::File, dir_delta: (1, 0) }]),
        (2, vec![Step::RemoveEntry { dir: d2.0, name: "f".into(), dir_delta: (-1, 0) }]),
    ];
    (op, steps, f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_that_dies_before_deciding_leaves_nothing_changed() {
    let (c, a, b, [d2, _]) = Cluster2::new().await;
    let (op, _, _) = prepared_rename(&a, d2).await;
    assert_eq!(leftovers(&b, &[2]).await.0, 1);
    assert!(!can_create(&b, d2, "x").await, "a prepared shard is fenced");
    drop(a);
    let a = c.side(A).await;
    // b, prepared too long (PREPARED_FOR), asks by itself; the new
    // leader of the home shard records the operation aborted and b lets
    // its fence go.
    let started = std::time::Instant::now();
    while !can_create(&b, d2, "x").await {
        assert!(started.elapsed() < super::twophase::PREPARED_FOR * 3, "b never asked how {op:?} ended");
    }
    assert!(b.lookup(d2, "f", &root()).await.is_ok());
    assert_eq!(a.lookup(InodeId::ROOT, "g", &root()).await.map(|x| x.ino), Err(Error::NotFound));
    assert_eq!(leftovers(&b, &[2]).await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_made_before_the_coordinator_died_is_carried_out_at_its_next_start() {
    let (c, a, b, [d2, _]) = Cluster2::new().await;
    let (op, mut steps, f) = prepared_rename(&a, d2).await;
    let (first, s) = steps.remove(0);
    a.first_commit(first, s, &steps, None, (f, 0), Some(op.id)).await.unwrap();
    drop(a);
    let a = c.side(A).await;
    // The start rolled the intent forward, b's half included.
    assert_eq!(b.lookup(d2, "f", &root()).await.map(|x| x.ino), Err(Error::NotFound));
    assert_eq!(a.lookup(InodeId::ROOT, "g", &root()).await.unwrap().ino.0, f);
    assert!(can_create(&b, d2, "x").await, "the last commit let b's fence go");
    assert_eq!(leftovers(&b, &[2]).await, (0, 0));
    assert_eq!(leftovers(&a, &[0]).await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_shard_that_restarts_learns_the_decision_and_applies_it() {
    let (c, a, b, [d2, _]) = Cluster2::new().await;
    let (op, mut steps, f) = prepared_rename(&a, d2).await;
    drop(b);
    let (first, s) = steps.remove(0);
    a.first_commit(first, s, &steps, None, (f, 0), Some(op.id)).await.unwrap();
    // b comes back and settles at its start, its shard fenced until then.
    let b = c.side(B).await;
    assert!(can_create(&b, d2, "x").await);
    assert_eq!(b.lookup(d2, "f", &root()).await.map(|x| x.ino), Err(Error::NotFound));
    assert_eq!(leftovers(&b, &[2]).await, (0, 0));
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_after_the_prepared_shard_gave_up_is_refused() {
    let (_c, a, b, [d2, _]) = Cluster2::new().await;
    let (op, mut steps, f) = prepared_rename(&a, d2).await;
    assert_eq!(b.settle(2, Some(op)).await.unwrap(), 1);
    let (first, s) = steps.remove(0);
    let r = a.first_commit(first, s, &steps, None, (f, 0), Some(op.id)).await;
    assert!(matches!(r, Err(Error::Unavailable(_))), "{r:?}");
    assert_eq!(a.lookup(InodeId::ROOT, "g", &root()).await.map(|x| x.ino), Err(Error::NotFound));
    assert!(b.lookup(d2, "f", &root()).await.is_ok());
}

/// A prepared shard that settles by itself an operation its coordinator
/// decided before falling silent tells the clients caching what the
/// settle changes, as it does for a commit sent to it. The one caching
/// the directory here has no connection, so the settle waits for it
/// until it is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settling_tells_the_clients_that_cache_what_it_changes() {
    let (_c, a, b, [d2, _]) = Cluster2::new().await;
    let reader = b.cluster.unreachable_client();
    assert_eq!(b.cluster.acquire(&reader, d2, LeaseKind::Read).await, Ok(LeaseKind::Read));
    let (op, mut steps, f) = prepared_rename(&a, d2).await;
    let (first, s) = steps.remove(0);
    a.first_commit(first, s, &steps, None, (f, 0), Some(op.id)).await.unwrap();
    let settle = {
        let b = b.clone();
        tokio::spawn(async move { b.settle(2, Some(op)).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!settle.is_finished(), "the settle changed the directory without telling the client caching it");
    drop(reader);
    let settled = tokio::time::timeout(Duration::from_secs(5), settle).await.expect("the settle still waits after the client went").unwrap();
    assert_eq!(settled, Ok(1));
    assert_eq!(b.lookup(d2, "f", &root()).await.map(|x| x.ino), Err(Error::NotFound));
}
