//! Crash consistency: a fixed run of namespace operations over four
//! shards whose databases are in memory (store/media.rs), with the power
//! cut at each write or sync in turn. After each cut the namespace opens
//! again from what was synced and finishes what a crash left half done
//! (intents, namespace/steps.rs). It must then hold every operation that
//! was answered, and the one cut short either whole or not at all, with
//! every name's inode present and link counts that agree with the names.
//! Then the client's retry of the one cut short (the same request id, or
//! the same batch of changes made under a directory's write lease) must
//! succeed and leave it whole, applied once.
use super::tests::test_cluster;
use super::Namespace;
use crate::store::media::Memory;
use aifs_common::perm::Cred;
use aifs_common::proto::mds::{DirOp, FileKind, ReqId, SetAttr};
use aifs_common::{Error, InodeId, LayoutPolicy, Owner, Result};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// One operation of the run, by path.
#[derive(Clone, Copy, Debug)]
enum Op {
    Mkdir(&'static str),
    Create(&'static str),
    Rename(&'static str, &'static str),
    Link(&'static str, &'static str),
    Unlink(&'static str),
    Rmdir(&'static str),
    Truncate(&'static str, u64),
    /// Changes a client made under directories' write leases (creates,
    /// mkdirs, unlinks and rmdirs), sent in one `Apply` (their new inodes
    /// from numbers reserved before).
    Batch(&'static [Op]),
}

/// The certificate the batches' numbers are reserved for.
const OWNER: Owner = Owner([7; 32]);

/// Directories land on shards by the hash of their names, so the run has
/// operations within one shard and across two, in both orders.
const RUN: &[Op] = &[
    Op::Mkdir("/a"),
    Op::Mkdir("/b"),
    Op::Create("/a/f1"),
    Op::Create("/a/f2"),
    Op::Mkdir("/a/sub"),
    Op::Create("/a/sub/g"),
    Op::Rename("/a/f1", "/b/f1"),
    Op::Link("/b/f1", "/a/f1link"),
    Op::Unlink("/a/f2"),
    Op::Rename("/a/sub", "/b/sub"),
    Op::Truncate("/b/f1", 4096),
    Op::Rename("/b/sub/g", "/a/g2"),
    Op::Mkdir("/c"),
    Op::Rename("/a/g2", "/b/f1"),
    Op::Rmdir("/c"),
    Op::Unlink("/a/f1link"),
    // /a and /b are on different shards: the batch commits once in each.
    Op::Batch(&[Op::Create("/a/r0"), Op::Create("/b/r1"), Op::Mkdir("/a/step"), Op::Create("/a/r2")]),
    Op::Batch(&[Op::Unlink("/a/r0"), Op::Rmdir("/a/step"), Op::Create("/b/r3"), Op::Unlink("/b/r1")]),
];

/// What each path names after some prefix of the run: a file (with the
/// id of the file it is, so hard links and renames are followed) or a
/// directory.
type Tree = BTreeMap<String, Option<u32>>;

pub(super) fn split(path: &str) -> (&str, &str) {
    let i = path.rfind('/').unwrap_or(0);
    (if i == 0 { "/" } else { &path[..i] }, &path[i + 1..])
}

/// The tree after the first `n` operations.
fn model(n: usize) -> Tree {
    let mut t = Tree::new();
    let mut next_file = 0;
    for op in &RUN[..n] {
        model_op(&mut t, &mut next_file, *op);
    }
    t
}

/// `t` after `op`; files made are numbered on from `next_file`.
fn model_op(t: &mut Tree, next_file: &mut u32, op: Op) {
    match op {
        Op::Mkdir(p) => {
            t.insert(p.into(), None);
        }
        Op::Create(p) => {
            *next_file += 1;
            t.insert(p.into(), Some(*next_file));
        }
        Op::Rename(from, to) => {
            let moved: Vec<(String, Option<u32>)> =
                t.iter().filter(|(k, _)| *k == from || k.starts_with(&format!("{from}/"))).map(|(k, v)| (k.clone(), *v)).collect();
            for (k, v) in moved {
                t.remove(&k);
                t.insert(format!("{to}{}", &k[from.len()..]), v);
            }
        }
        Op::Link(from, to) => {
            let f = t[from];
            t.insert(to.into(), f);
        }
        Op::Unlink(p) | Op::Rmdir(p) => {
            t.remove(p);
        }
        Op::Truncate(..) => {}
        Op::Batch(changes) => {
            for c in changes {
                model_op(t, next_file, *c);
            }
        }
    }
}

pub(super) async fn resolve(ns: &Namespace, path: &str) -> Result<InodeId> {
    let mut ino = InodeId::ROOT;
    for name in path.split('/').filter(|s| !s.is_empty()) {
        ino = ns.lookup(ino, name, &Cred::root()).await?.ino;
    }
    Ok(ino)
}

/// How the run sends one operation: the request id it goes with (`retry`
/// when sent again after a crash), and for a batch the changes built for
/// it, kept to be sent again as they were.
#[derive(Default)]
struct Sent {
    seq: u64,
    retry: bool,
    batch: Option<Vec<DirOp>>,
}

async fn apply(ns: &Namespace, op: Op, sent: &mut Sent) -> Result<()> {
    let root = Cred::root();
    let once = ns.once(Some(ReqId { client: 7, seq: sent.seq, oldest: 0, retry: sent.retry })).await?;
    let at = |p: &'static str| async move {
        let (dir, name) = split(p);
        Ok::<_, aifs_common::Error>((resolve(ns, dir).await?, name))
    };
    match op {
        Op::Mkdir(p) => {
            let (d, n) = at(p).await?;
            ns.mkdir(d, n, 0o755, &root, &once).await.map(drop)
        }
        Op::Create(p) => {
            let (d, n) = at(p).await?;
            ns.create(d, n, 0o644, &root, true, &once).await.map(drop)
        }
        Op::Rename(from, to) => {
            let ((d, n), (nd, nn)) = (at(from).await?, at(to).await?);
            ns.rename(d, n, nd, nn, 0, &root, &once).await.map(drop)
        }
        Op::Link(from, to) => {
            let (ino, (nd, nn)) = (resolve(ns, from).await?, at(to).await?);
            ns.link(ino, nd, nn, &root, false, &once).await.map(drop)
        }
        Op::Unlink(p) => {
            let (d, n) = at(p).await?;
            ns.unlink(d, n, &root, &once).await.map(drop)
        }
        Op::Rmdir(p) => {
            let (d, n) = at(p).await?;
            ns.rmdir(d, n, &root, &once).await.map(drop)
        }
        Op::Truncate(p, size) => {
            let ino = resolve(ns, p).await?;
            ns.setattr(ino, SetAttr { size: Some(size), ..Default::default() }, &root).await.map(drop)
        }
        Op::Batch(changes) => {
            if sent.batch.is_none() {
                sent.batch = Some(build(ns, changes).await?);
            }
            let ops = sent.batch.clone().unwrap_or_default();
            ns.apply(ops, OWNER).await.into_iter().collect()
        }
    }
}

/// A batch's changes as a client makes them under the directories' write
/// leases: new inodes from numbers reserved in each parent beforehand.
async fn build(ns: &Namespace, changes: &[Op]) -> Result<Vec<DirOp>> {
    let not_leased = |c: &Op| Error::InvalidArgument(format!("{c:?} is not a change made under a directory lease"));
    let mut numbers: HashMap<InodeId, Vec<(InodeId, aifs_common::Layout)>> = HashMap::new();
    for c in changes {
        if let Op::Create(p) | Op::Mkdir(p) = *c {
            let dir = resolve(ns, split(p).0).await?;
            let got = ns.reserve(dir, 1, OWNER).await?;
            numbers.entry(dir).or_default().extend(got);
        }
    }
    let time_ns = aifs_common::time::now_ns();
    let mut ops = Vec::new();
    for c in changes {
        let cred = Cred::root();
        let (Op::Create(p) | Op::Mkdir(p) | Op::Unlink(p) | Op::Rmdir(p)) = *c else { return Err(not_leased(c)) };
        let (dir, name) = split(p);
        let (parent, name) = (resolve(ns, dir).await?, name.to_string());
        let mut number = || numbers.get_mut(&parent).and_then(|v| v.pop()).ok_or_else(|| Error::Io(format!("no number reserved for {p}")));
        ops.push(match *c {
            Op::Create(_) => {
                let (ino, layout) = number()?;
                DirOp::Create { parent, name, ino, layout, mode: 0o644, cred, time_ns, open: false }
            }
            Op::Mkdir(_) => DirOp::Mkdir { parent, name, ino: number()?.0, mode: 0o755, cred, time_ns },
            Op::Unlink(_) => DirOp::Unlink { parent, name, ino: resolve(ns, p).await?, time_ns, cred },
            Op::Rmdir(_) => DirOp::Rmdir { parent, name, ino: resolve(ns, p).await?, time_ns, cred },
            _ => return Err(not_leased(c)),
        });
    }
    Ok(ops)
}

/// The tree as the namespace holds it, with each file named by its inode
/// mapped to the model's file ids in the order first met; checks that
/// every name's inode is there and that link counts agree with the names.
pub(super) async fn walk(ns: &Namespace) -> std::result::Result<BTreeMap<String, Option<InodeId>>, String> {
    let mut out = BTreeMap::new();
    let mut names: HashMap<InodeId, u32> = HashMap::new();
    let mut dirs = vec![("".to_string(), InodeId::ROOT)];
    while let Some((path, dir)) = dirs.pop() {
        let (mut cookie, mut subdirs) = (0, 0);
        loop {
            let (entries, eof, _) = ns.readdir(dir, cookie, 64, &Cred::root()).await.map_err(|e| format!("readdir {path}/: {e}"))?;
            for e in &entries {
                cookie = e.cookie;
                if e.name == "." || e.name == ".." {
                    continue;
                }
                let p = format!("{path}/{}", e.name);
                let a = ns.getattr(e.ino).await.map_err(|err| format!("{p} names inode {} that is not there: {err}", e.ino))?;
                if a.kind != e.kind {
                    return Err(format!("{p}: entry says {:?}, inode {:?}", e.kind, a.kind));
                }
                match a.kind {
                    FileKind::Dir => {
                        subdirs += 1;
                        dirs.push((p.clone(), e.ino));
                        out.insert(p, None);
                    }
                    _ => {
                        *names.entry(e.ino).or_default() += 1;
                        out.insert(p, Some(e.ino));
                    }
                }
            }
            if eof || entries.is_empty() {
                break;
            }
        }
        let a = ns.getattr(dir).await.map_err(|e| format!("{path}/: {e}"))?;
        if a.nlink != 2 + subdirs {
            return Err(format!("{path}/ has nlink {} with {subdirs} subdirectories", a.nlink));
        }
    }
    for (ino, n) in names {
        let a = ns.getattr(ino).await.map_err(|e| e.to_string())?;
        if a.nlink != n {
            return Err(format!("inode {ino} has nlink {} and {n} names", a.nlink));
        }
    }
    Ok(out)
}

/// Whether `got` is `want`, files matched up to a renaming of ids.
fn same(got: &BTreeMap<String, Option<InodeId>>, want: &Tree) -> bool {
    if got.len() != want.len() {
        return false;
    }
    let (mut fwd, mut back) = (HashMap::new(), HashMap::new());
    got.iter().zip(want.iter()).all(|((gp, g), (wp, w))| {
        gp == wp
            && match (g, w) {
                (None, None) => true,
                (Some(i), Some(f)) => *fwd.entry(*i).or_insert(*f) == *f && *back.entry(*f).or_insert(*i) == *i,
                _ => false,
            }
    })
}

async fn open(media: &Memory, dir: &std::path::Path) -> Result<Namespace> {
    let policy = LayoutPolicy { stripe_count: 1, ..LayoutPolicy::default() };
    Namespace::open_on(media, dir, 4, policy, test_cluster()).await
}

/// Run the operations with the power cut at the `cut`th write or sync,
/// then start from what the disk holds: what was synced, and with `torn`
/// some of the writes since too (whole or torn, picked by `cut`); None if
/// the run ended first.
async fn run_cut_at(cut: u64, torn: bool) -> Option<()> {
    let dir = tempfile::tempdir().unwrap();
    let media = Memory::new();
    let ns = open(&media, dir.path()).await.expect("a new namespace opens");
    media.cut_after(cut);
    let mut answered = 0;
    let mut sent = Sent::default();
    for (seq, op) in RUN.iter().enumerate() {
        sent = Sent { seq: seq as u64 + 1, ..Sent::default() };
        match tokio::time::timeout(Duration::from_secs(10), apply(&ns, *op, &mut sent)).await {
            Ok(Ok(())) => answered += 1,
            Ok(Err(_)) if media.is_off() => break,
            Ok(Err(e)) => panic!("{op:?} failed with the power on: {e}"),
            Err(_) => {
                assert!(media.is_off(), "{op:?} hung with the power on");
                break;
            }
        }
    }
    if !media.is_off() {
        return None;
    }
    drop(ns);
    let after = if torn { media.after_torn_crash(cut) } else { media.after_crash() };
    // The shards' writer threads stop their groups a moment after the
    // namespace is dropped; the old groups touch only the old images.
    let ns = open(&after, dir.path()).await.unwrap_or_else(|e| panic!("cut at write {cut} (torn: {torn}): the namespace does not open again: {e}"));
    let got = walk(&ns).await.unwrap_or_else(|e| panic!("cut at write {cut} (torn: {torn}), after {answered} answered: {e}"));
    let short = RUN.get(answered).copied();
    let whole = short.is_some() && same(&got, &model(answered + 1));
    // A batch commits once per shard: the client sends it again, whole.
    let batch = matches!(short, Some(Op::Batch(_)));
    assert!(
        same(&got, &model(answered)) || whole || batch,
        "cut at write {cut} (torn: {torn}): {answered} operations answered, {short:?} cut short; the namespace holds {got:?}"
    );
    if let Some(op) = short {
        // The client sends it again, as it was.
        sent.retry = true;
        apply(&ns, op, &mut sent).await.unwrap_or_else(|e| panic!("cut at write {cut} (torn: {torn}): {op:?} sent again failed: {e}"));
        let got = walk(&ns).await.unwrap_or_else(|e| panic!("cut at write {cut} (torn: {torn}), {op:?} sent again: {e}"));
        assert!(same(&got, &model(answered + 1)), "cut at write {cut} (torn: {torn}): {op:?} sent again; the namespace holds {got:?}");
    }
    // and goes on
    let mut next = Sent { seq: RUN.len() as u64 + 1, ..Sent::default() };
    apply(&ns, Op::Create("/after"), &mut next).await.unwrap_or_else(|e| panic!("cut at write {cut} (torn: {torn}): a create after the restart failed: {e}"));
    Some(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_at_any_write_loses_nothing_answered_and_leaves_no_half_operation() {
    // How many writes and syncs the whole run makes.
    let dir = tempfile::tempdir().unwrap();
    let media = Memory::new();
    let ns = open(&media, dir.path()).await.unwrap();
    let start = media.events();
    for (seq, op) in RUN.iter().enumerate() {
        let mut sent = Sent { seq: seq as u64 + 1, ..Sent::default() };
        apply(&ns, *op, &mut sent).await.unwrap_or_else(|e| panic!("{op:?}: {e}"));
    }
    let got = walk(&ns).await.unwrap();
    assert!(same(&got, &model(RUN.len())), "the run without a crash: {got:?}");
    let total = media.events() - start;
    drop(ns);
    let mut cuts = 0;
    for cut in 1..=total {
        if run_cut_at(cut, false).await.is_some() {
            cuts += 1;
        }
        run_cut_at(cut, true).await;
    }
    assert!(cuts as u64 >= total / 2, "only {cuts} of {total} cuts fell within the run");
}
