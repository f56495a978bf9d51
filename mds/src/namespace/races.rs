//! Changes racing each other: tasks on several threads make, move, link
//! and remove names among a few directories over four shards, each change
//! checked and committed under the fences it holds (fences.rs), moves of
//! directories into each other's subtrees included. Whatever they did,
//! the tree must then hold together: every name's inode there, link and
//! subdirectory counts that agree with the names, and every directory
//! reachable from the root (none moved below itself).
use super::crash::{resolve, split, walk};
use super::tests::open_ns;
use super::Namespace;
use crate::once::Once;
use crate::store::INODES;
use crate::store::IoResult;
use aifs_common::perm::Cred;
use aifs_common::InodeId;
use aifs_common::proto::mds::FileKind;
use redb::ReadableTable;
use std::sync::Arc;

const DIRS: usize = 3;
const NAMES: usize = 3;

/// A path of the run: a top directory, or a name one or two levels below
/// one (so that two moves of directories into each other's subtrees can
/// touch no shard in common).
fn path(r: u64) -> String {
    let mut p = format!("/d{}", r % DIRS as u64);
    for level in 0..(r >> 8) % 3 {
        p += &format!("/n{}", (r >> (12 + 4 * level)) % NAMES as u64);
    }
    p
}

/// One change picked by `r`, sent to the namespace that `to` says leads
/// the change's home directory; its errors are the races' expected losers.
async fn change(to: &(dyn Fn(InodeId) -> Arc<Namespace> + Send + Sync), r: u64) {
    let (a, b) = (path(r >> 4), path(r >> 20));
    let ((ad, an), (bd, bn)) = (split(&a), split(&b));
    let any = to(InodeId::ROOT);
    let (Ok(ap), Ok(bp)) = (resolve(&any, ad).await, resolve(&any, bd).await) else { return };
    let ns = to(if r % 7 == 4 { bp } else { ap });
    let (c, o) = (Cred::root(), Once::none());
    let _ = match r % 7 {
        0 => ns.mkdir(ap, an, 0o755, &c, &o).await.map(|_| ()),
        1 => ns.create(ap, an, 0o644, &c, false, &o).await.map(|_| ()),
        2 => ns.rmdir(ap, an, &c, &o).await.map(|_| ()),
        3 => ns.unlink(ap, an, &c, &o).await.map(|_| ()),
        4 => match ns.lookup(ap, an, &c).await {
            Ok(f) => ns.link(f.ino, bp, bn, &c, false, &o).await.map(|_| ()),
            Err(e) => Err(e),
        },
        _ => ns.rename(ap, an, bp, bn, 0, &c, &o).await.map(|_| ()),
    };
}

fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_changes_over_shards_leave_a_tree_that_holds_together() {
    let dir = tempfile::tempdir().unwrap();
    let ns = Arc::new(open_ns(dir.path()).await);
    let to: Route = {
        let ns = ns.clone();
        Arc::new(move |_| ns.clone())
    };
    for round in 0..6u64 {
        race_round(&to, 0x9E37_79B9_7F4A_7C15, round, 60).await;
        holds_together(&ns, &format!("round {round}")).await;
    }
}

/// The namespace that serves a change whose home directory is given.
pub(super) type Route = Arc<dyn Fn(InodeId) -> Arc<Namespace> + Send + Sync>;

/// One round of the race: the top directories made again where they
/// went, then eight tasks of `changes` changes each, drawn from `seed`
/// and `round`, each sent where `to` says; a minute at most.
pub(super) async fn race_round(to: &Route, seed: u64, round: u64, changes: usize) {
    let c = Cred::root();
    for d in 0..DIRS {
        let _ = to(InodeId::ROOT).mkdir(InodeId::ROOT, &format!("d{d}"), 0o755, &c, &Once::none()).await;
    }
    let tasks: Vec<_> = (0..8u64)
        .map(|t| {
            let to = to.clone();
            tokio::spawn(async move {
                let mut x = seed ^ (round << 32) ^ (t + 1);
                for _ in 0..changes {
                    change(&*to, next(&mut x)).await;
                }
            })
        })
        .collect();
    for t in tasks {
        tokio::time::timeout(std::time::Duration::from_secs(60), t).await.expect("racing changes stuck").unwrap();
    }
}

/// Every name's inode there, counts that agree, and every directory
/// stored reachable from the root.
pub(super) async fn holds_together(ns: &Namespace, when: &str) {
    let tree = walk(ns).await.unwrap_or_else(|e| panic!("{when}: {e}"));
    let reachable = tree.values().filter(|v| v.is_none()).count() + 1;
    let mut stored = 0;
    for s in &ns.shards {
        stored += s
            .read(|t| {
                let mut n = 0;
                for r in t.open_table(INODES).io()?.iter().io()? {
                    let (_, v) = r.io()?;
                    n += (crate::records::InodeRec::decode(v.value())?.kind == FileKind::Dir) as usize;
                }
                Ok(n)
            })
            .await
            .unwrap();
    }
    assert_eq!(stored, reachable, "{when}: directories stored but not reachable from the root: {tree:?}");
}
