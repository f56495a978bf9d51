//! Crash consistency: a fixed run of namespace operations over four
//! shards whose databases are in memory (store/media.rs), with the power
//! cut at each write or sync in turn. After each cut the namespace opens
//! again from what was synced and finishes what a crash left half done
//! (intents, namespace/steps.rs). It must then hold every operation that
//! was answered, and the one cut short either whole or not at all, with
//! every name's inode present and link counts that agree with the names.
use super::tests::test_cluster;
use super::Namespace;
use crate::once::Once;
use crate::store::media::Memory;
use aifs_common::perm::Cred;
use aifs_common::proto::mds::{FileKind, SetAttr};
use aifs_common::{InodeId, LayoutPolicy, Result};
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
}

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
];

/// What each path names after some prefix of the run: a file (with the
/// id of the file it is, so hard links and renames are followed) or a
/// directory.
type Tree = BTreeMap<String, Option<u32>>;

fn split(path: &str) -> (&str, &str) {
    let i = path.rfind('/').unwrap_or(0);
    (if i == 0 { "/" } else { &path[..i] }, &path[i + 1..])
}

/// The tree after the first `n` operations.
fn model(n: usize) -> Tree {
    let mut t = Tree::new();
    let mut next_file = 0;
    for op in &RUN[..n] {
        match *op {
            Op::Mkdir(p) => {
                t.insert(p.into(), None);
            }
            Op::Create(p) => {
                next_file += 1;
                t.insert(p.into(), Some(next_file));
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
        }
    }
    t
}

async fn resolve(ns: &Namespace, path: &str) -> Result<InodeId> {
    let mut ino = InodeId::ROOT;
    for name in path.split('/').filter(|s| !s.is_empty()) {
        ino = ns.lookup(ino, name, &Cred::root()).await?.ino;
    }
    Ok(ino)
}

async fn apply(ns: &Namespace, op: Op) -> Result<()> {
    let (root, once) = (Cred::root(), Once::none());
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
    }
}

/// The tree as the namespace holds it, with each file named by its inode
/// mapped to the model's file ids in the order first met; checks that
/// every name's inode is there and that link counts agree with the names.
async fn walk(ns: &Namespace) -> std::result::Result<BTreeMap<String, Option<InodeId>>, String> {
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

/// Run the operations with the power cut at the `cut`th write or sync;
/// None if the run ended first.
async fn run_cut_at(cut: u64) -> Option<()> {
    let dir = tempfile::tempdir().unwrap();
    let media = Memory::new();
    let ns = open(&media, dir.path()).await.expect("a new namespace opens");
    media.cut_after(cut);
    let mut answered = 0;
    for op in RUN {
        match tokio::time::timeout(Duration::from_secs(10), apply(&ns, *op)).await {
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
    let after = media.after_crash();
    // The shards' writer threads stop their groups a moment after the
    // namespace is dropped; the old groups touch only the old images.
    let ns = open(&after, dir.path()).await.unwrap_or_else(|e| panic!("cut at write {cut}: the namespace does not open again: {e}"));
    let got = walk(&ns).await.unwrap_or_else(|e| panic!("cut at write {cut}, after {answered} answered: {e}"));
    let whole = answered < RUN.len() && same(&got, &model(answered + 1));
    assert!(
        same(&got, &model(answered)) || whole,
        "cut at write {cut}: {answered} operations answered, {:?} cut short; the namespace holds {got:?}",
        RUN.get(answered)
    );
    // and goes on
    apply(&ns, Op::Create("/after")).await.unwrap_or_else(|e| panic!("cut at write {cut}: a create after the restart failed: {e}"));
    Some(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_at_any_write_loses_nothing_answered_and_leaves_no_half_operation() {
    // How many writes and syncs the whole run makes.
    let dir = tempfile::tempdir().unwrap();
    let media = Memory::new();
    let ns = open(&media, dir.path()).await.unwrap();
    let start = media.events();
    for op in RUN {
        apply(&ns, *op).await.unwrap_or_else(|e| panic!("{op:?}: {e}"));
    }
    let got = walk(&ns).await.unwrap();
    assert!(same(&got, &model(RUN.len())), "the run without a crash: {got:?}");
    let total = media.events() - start;
    drop(ns);
    let mut cuts = 0;
    for cut in 1..=total {
        if run_cut_at(cut).await.is_some() {
            cuts += 1;
        }
    }
    assert!(cuts as u64 >= total / 2, "only {cuts} of {total} cuts fell within the run");
}
