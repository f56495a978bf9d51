//! Operations over two shards as lists of primitive steps, one commit per
//! shard, with an intent record in the first so that a crash between
//! commits is finished at start (`roll_forward`).
use crate::once::{self, Outcome};
use crate::records::{GcJob, InodeRec, Intent, Step};
use crate::store::{Txn, add_gc, get_inode, next_counter, put_inode, IoResult, ShardStore, COOKIES, DEGRADED, DENTRIES, INODES, INTENTS, INTENT_DONE, META, LINKABLE, ORPHANS, XATTRS, ALLOCATED};
use aifs_common::ids::InodeId;
use aifs_common::proto::mds::{FileKind, ReqId};
use aifs_common::time::now_ns;
use aifs_common::Result;
use redb::ReadableTable;
use std::sync::Arc;
use super::{shard_of, kind_code, Namespace, degraded_rows, Held};
use super::twophase::{OpId, ShardMsg};
use aifs_common::Error;

/// How long a new service waits for the commits the one before it left
/// running (`after_earlier_services`).
const EARLIER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl Step {
    fn shard(&self) -> u32 {
        match self {
            Step::InsertEntry { dir, .. } | Step::RemoveEntry { dir, .. } => shard_of(*dir),
            Step::CreateInode { ino, .. }
            | Step::SetParent { ino, .. }
            | Step::AddLink { ino }
            | Step::DropLink { ino }
            | Step::DeleteDir { ino } => shard_of(*ino),
        }
    }
}

pub(crate) fn adjust(v: u64, d: i64) -> u64 {
    if d >= 0 {
        v.saturating_add(d as u64)
    } else {
        v.saturating_sub(d.unsigned_abs())
    }
}

/// Apply one step inside a write transaction. Steps are checked before they
/// are built, so the only errors here are storage errors.
pub(crate) fn apply_step(txn: &Txn, step: Step, now: i64, open: &dyn Fn(u64) -> bool) -> Result<()> {
    let mut inodes = txn.open_table(INODES).io()?;
    match step {
        Step::InsertEntry { dir, name, ino, kind, dir_delta } => {
            let mut d = get_inode(&inodes, dir)?;
            let mut dentries = txn.open_table(DENTRIES).io()?;
            let mut cookies = txn.open_table(COOKIES).io()?;
            if let Some(old) = dentries.remove((dir, name.as_str())).io()? {
                let (_, _, c) = old.value();
                cookies.remove((dir, c)).io()?;
            }
            let cookie = d.next_cookie;
            d.next_cookie += 1;
            dentries.insert((dir, name.as_str()), (ino, kind_code(kind), cookie)).io()?;
            cookies.insert((dir, cookie), name.as_str()).io()?;
            d.entries = adjust(d.entries, dir_delta.0);
            d.nlink = adjust(d.nlink as u64, dir_delta.1) as u32;
            d.mtime_ns = now;
            d.ctime_ns = now;
            put_inode(&mut inodes, dir, &d)?;
        }
        Step::RemoveEntry { dir, name, dir_delta } => {
            let mut d = get_inode(&inodes, dir)?;
            let mut dentries = txn.open_table(DENTRIES).io()?;
            let mut cookies = txn.open_table(COOKIES).io()?;
            if let Some(old) = dentries.remove((dir, name.as_str())).io()? {
                let (_, _, c) = old.value();
                cookies.remove((dir, c)).io()?;
            }
            d.entries = adjust(d.entries, dir_delta.0);
            d.nlink = adjust(d.nlink as u64, dir_delta.1) as u32;
            d.mtime_ns = now;
            d.ctime_ns = now;
            put_inode(&mut inodes, dir, &d)?;
        }
        Step::CreateInode { ino, rec } => put_inode(&mut inodes, ino, &rec)?,
        Step::SetParent { ino, parent } => {
            let mut r = get_inode(&inodes, ino)?;
            r.parent = parent;
            r.ctime_ns = now;
            put_inode(&mut inodes, ino, &r)?;
        }
        Step::AddLink { ino } => {
            let mut r = get_inode(&inodes, ino)?;
            if r.nlink == 0 {
                // A nameless file (O_TMPFILE) gets its first name.
                txn.open_table(ORPHANS).io()?.remove(ino).io()?;
                txn.open_table(LINKABLE).io()?.remove(ino).io()?;
            }
            r.nlink += 1;
            r.ctime_ns = now;
            put_inode(&mut inodes, ino, &r)?;
        }
        Step::DropLink { ino } => {
            let mut r = get_inode(&inodes, ino)?;
            r.nlink = r.nlink.saturating_sub(1);
            r.ctime_ns = now;
            if r.nlink == 0 || r.kind == FileKind::Dir {
                drop(inodes);
                drop_last_link(txn, ino, &r, open)?;
            } else {
                put_inode(&mut inodes, ino, &r)?;
            }
        }
        Step::DeleteDir { ino } => {
            let r = get_inode(&inodes, ino)?;
            drop(inodes);
            delete_inode(txn, ino, &r)?;
        }
    }
    Ok(())
}

/// An inode lost its last name: removed, unless a client has it open (a
/// file only); then it stays, nameless, until the last close.
pub(crate) fn drop_last_link(txn: &Txn, ino: u64, rec: &InodeRec, open: &dyn Fn(u64) -> bool) -> Result<()> {
    if rec.kind == FileKind::File && open(ino) {
        let mut r = rec.clone();
        r.nlink = 0;
        put_inode(&mut txn.open_table(INODES).io()?, ino, &r)?;
        txn.open_table(ORPHANS).io()?.insert(ino, ()).io()?;
        return Ok(());
    }
    delete_inode(txn, ino, rec)
}

/// Remove an inode, its xattrs, and queue its objects for deletion.
pub(crate) fn delete_inode(txn: &Txn, ino: u64, rec: &InodeRec) -> Result<()> {
    txn.open_table(INODES).io()?.remove(ino).io()?;
    txn.open_table(ALLOCATED).io()?.remove(ino).io()?;
    txn.open_table(LINKABLE).io()?.remove(ino).io()?;
    let mut x = txn.open_table(XATTRS).io()?;
    let names: Vec<String> = x
        .range((ino, "")..)
        .io()?
        .map_while(|r| r.ok())
        .take_while(|(k, _)| k.value().0 == ino)
        .map(|(k, _)| k.value().1.to_string())
        .collect();
    for n in names {
        x.remove((ino, n.as_str())).io()?;
    }
    if let Some(layout) = &rec.layout {
        add_gc(txn, &GcJob { ino, layout: layout.clone(), truncate_to: None })?;
        let mut d = txn.open_table(DEGRADED).io()?;
        for k in degraded_rows(&d, ino)? {
            d.remove((ino, k.index, k.osd.0)).io()?;
        }
    }
    Ok(())
}

/// Drop the marks of intent `id` of shard `coord` in this shard.
pub(super) fn drop_marks(txn: &Txn, coord: u32, id: u64) -> Result<()> {
    txn.open_table(INTENT_DONE).io()?.retain_in((coord, id, 0)..=(coord, id, u32::MAX), |_, _| false).io()
}

/// Steps grouped by shard, in order: a group per run of one shard's steps.
fn by_shard(steps: Vec<Step>) -> Vec<(u32, Vec<Step>)> {
    let mut groups: Vec<(u32, Vec<Step>)> = Vec::new();
    for s in steps {
        let sh = s.shard();
        // Merge only into the last group, so the order across shards holds.
        match groups.last_mut() {
            Some((g, v)) if *g == sh => v.push(s),
            _ => groups.push((sh, vec![s])),
        }
    }
    groups
}

impl Namespace {
    /// Run steps grouped by shard, one commit per shard, shards in the order
    /// they first appear; the first commit records `rid`'s outcome. With
    /// more than one commit, the first also records the rest (an `Intent`)
    /// and each later one marks itself done in its own shard, so a crash in
    /// between is rolled forward at start (`roll_forward`): the operation
    /// happens whole, and a retry of it is answered from the record.
    ///
    /// With shards prepared at other processes (`held`), the first commit
    /// is made in the home shard (one with no steps, if the first steps
    /// are elsewhere): it is the decision (twophase.rs).
    pub(crate) async fn run_steps(&self, held: &mut Held<'_>, steps: Vec<Step>, rid: Option<ReqId>, out: Outcome) -> Result<()> {
        let mut groups = by_shard(steps);
        let op = held.prepared.as_ref().map(|p| p.op);
        if let Some(op) = op {
            if groups.first().map(|g| g.0) != Some(op.coord) {
                groups.insert(0, (op.coord, Vec::new()));
            }
        }
        // Every shard led elsewhere that the steps change was prepared.
        let open = held.prepared.as_ref().map(|p| p.open.as_slice()).unwrap_or(&[]);
        if let Some((sh, _)) = groups.iter().find(|(sh, _)| self.elsewhere(*sh).is_some() && !open.contains(sh)) {
            return Err(Error::Io(format!("shard {sh}, led elsewhere, would change without a prepare")));
        }
        let mut groups = groups.into_iter();
        let Some((first, steps)) = groups.next() else { return Ok(()) };
        let rest: Vec<(u32, Vec<Step>)> = groups.collect();
        let id = self.first_commit(first, steps, &rest, rid, out, op.map(|o| o.id)).await?;
        if let Some(p) = held.prepared.as_mut() {
            // Decided: a shard with steps to make is never aborted now,
            // only those with none are let go (when `held` drops).
            p.decided = true;
            p.open.retain(|s| !rest.iter().any(|(r, _)| r == s));
        }
        let mut local = Vec::new();
        for (k, (sh, steps)) in rest.iter().enumerate() {
            let Some(p) = held.prepared.as_ref().filter(|p| p.remote.elsewhere(*sh)) else {
                local.push(*sh);
                self.intent_commit(first, id, k as u32, *sh, steps.clone(), false).await?;
                continue;
            };
            let last = !rest[k + 1..].iter().any(|(s, _)| s == sh);
            let msg = ShardMsg::Commit { shard: *sh, op: p.op, k: k as u32, steps: steps.clone(), last };
            // Should this fail, the shard asks how the operation ended,
            // and the intent stays until the next start here.
            p.remote.ask(msg).await?;
        }
        if id != 0 {
            self.forget_intent(first, id, local);
        }
        Ok(())
    }

    /// The first commit of `run_steps`, in shard `first`, with the commits
    /// still to make (`rest`) as its intent; returns the intent's id (0:
    /// none needed). `decided`: the id of an operation over processes,
    /// refused if the home shard's leader was asked how it ended first.
    pub(super) async fn first_commit(&self, first: u32, steps: Vec<Step>, rest: &[(u32, Vec<Step>)], rid: Option<ReqId>, out: Outcome, decided: Option<u64>) -> Result<u64> {
        let intent = match rest.is_empty() {
            true => None,
            false => Some(Intent { rest: rest.to_vec() }.encode()?),
        };
        let cluster = self.cluster.clone();
        self.shard(first)
            .mutate(move |txn| {
                if let Some(id) = decided {
                    if txn.open_table(INTENTS).io()?.get(id).io()?.is_some() {
                        return Err(Error::Unavailable("the operation was given up while it waited; try again".into()));
                    }
                }
                let now = now_ns();
                let open = |ino| cluster.is_open(InodeId(ino));
                for s in steps.iter().cloned() {
                    apply_step(txn, s, now, &open)?;
                }
                once::record(txn, rid, out)?;
                let Some(bytes) = &intent else { return Ok(0) };
                let id = match decided {
                    Some(id) => id,
                    None => next_counter(&mut txn.open_table(META).io()?, "next_intent", 1)?,
                };
                txn.open_table(INTENTS).io()?.insert(id, bytes.as_slice()).io()?;
                Ok(id)
            })
            .await
    }

    /// Commit `k` after the first of intent `id` (of shard `coord`): its
    /// steps and the mark that it is done, unless the mark is there already.
    /// When rolling forward after a crash (`replay`), every file counts as
    /// open: one that loses its last name stays until after the clients of
    /// the last run have had the chance to say they have it open.
    async fn intent_commit(&self, coord: u32, id: u64, k: u32, sh: u32, steps: Vec<Step>, replay: bool) -> Result<()> {
        let cluster = self.cluster.clone();
        self.shard(sh)
            .mutate(move |txn| {
                let mut marks = txn.open_table(INTENT_DONE).io()?;
                if marks.get((coord, id, k)).io()?.is_some() {
                    return Ok(());
                }
                marks.insert((coord, id, k), ()).io()?;
                drop(marks);
                let now = now_ns();
                let open = |ino| replay || cluster.is_open(InodeId(ino));
                for s in steps.iter().cloned() {
                    apply_step(txn, s, now, &open)?;
                }
                Ok(())
            })
            .await
    }

    /// Every commit of intent `id` is made: drop it, then its marks (in
    /// that order: marks without an intent are only clutter, an intent
    /// without its marks would be applied again).
    fn forget_intent(&self, coord: u32, id: u64, mut shards: Vec<u32>) {
        shards.sort_unstable();
        shards.dedup();
        let c = self.shard(coord).clone();
        // Marks in shards led elsewhere stay (twophase.rs, `forget_here`).
        let others: Vec<Arc<ShardStore>> = shards.iter().filter(|s| self.elsewhere(**s).is_none()).map(|s| self.shard(*s).clone()).collect();
        // Refused once the next service over these shards began (store/mod.rs):
        // its start rolled the intent forward and dropped its marks.
        let failed = |e: Error, what: &str| match e {
            Error::Unavailable(_) => tracing::debug!(error = %e, "{what}: left to the next service"),
            e => e.log(what),
        };
        tokio::spawn(async move {
            if let Err(e) = c.mutate(move |txn| txn.open_table(INTENTS).io()?.remove(id).io().map(|_| ())).await {
                return failed(e, "dropping a finished intent failed");
            }
            for s in others {
                let r = s.mutate(move |txn| drop_marks(txn, coord, id));
                if let Err(e) = r.await {
                    failed(e, "dropping an intent's marks failed");
                }
            }
        });
    }

    /// At start, before anything is read: wait for what a service before
    /// this one over the same groups had its shards' writers running
    /// (store/mod.rs, `ShardStore::successor`), so that an intent its
    /// request just made is found by `roll_forward`. Bounded: a commit
    /// stuck at a leader parted from its group fails the start, which
    /// the lead loop tries again.
    pub(super) async fn after_earlier_services(&self) -> Result<()> {
        for s in self.led_shards() {
            let flushed = tokio::time::timeout(EARLIER_WAIT, self.shard(s).mutate(|_| Ok(())));
            flushed.await.map_err(|_| Error::Unavailable(format!("shard {s} still commits what the last service sent")))??;
        }
        Ok(())
    }

    /// At start: finish every operation over several shards that a crash
    /// cut short after its first commit, then drop every mark of those.
    /// The intents of shards led here only; an aborted operation's record
    /// (an empty intent, twophase.rs) is dropped: no decision from before
    /// this lead can commit now.
    pub(crate) async fn roll_forward(&self) -> Result<()> {
        let mut kept = std::collections::HashSet::new();
        for coord in self.led_shards() {
            let intents = self
                .shard(coord)
                .scan(|t| {
                    let mut v = Vec::new();
                    for r in t.open_table(INTENTS).io()?.iter().io()? {
                        let (k, val) = r.io()?;
                        let bytes = val.value();
                        v.push((k.value(), (!bytes.is_empty()).then(|| Intent::decode(bytes))));
                    }
                    Ok(v)
                })
                .await?;
            for (id, intent) in intents {
                let finished = match intent {
                    Some(Ok(intent)) => self.finish(coord, id, intent).await,
                    Some(Err(e)) => {
                        e.log("an unreadable intent is dropped");
                        true
                    }
                    None => true,
                };
                match finished {
                    true => self.shard(coord).mutate(move |txn| txn.open_table(INTENTS).io()?.remove(id).io().map(|_| ())).await?,
                    false => _ = kept.insert((coord, id)),
                }
            }
        }
        // Marks of operations coordinated elsewhere stay until their last
        // commit here (twophase.rs), as do those of an intent kept.
        let led: Vec<bool> = (0..self.shards.len() as u32).map(|c| self.elsewhere(c).is_none()).collect();
        for s in self.led_shards() {
            let (led, kept) = (led.clone(), kept.clone());
            self.shard(s)
                .mutate(move |txn| {
                    let ours = |c: u32| led.get(c as usize).copied().unwrap_or(false);
                    txn.open_table(INTENT_DONE).io()?.retain(|(c, id, _), _| !ours(c) || kept.contains(&(c, id))).io()
                })
                .await?;
        }
        Ok(())
    }

    /// Make intent `id`'s later commits, in shards led here and at the
    /// leaders of the others; false if one could not be made (a shard
    /// led elsewhere then asks how the operation ended).
    async fn finish(&self, coord: u32, id: u64, intent: Intent) -> bool {
        tracing::warn!(shard = coord, intent = id, commits = intent.rest.len(), "finishing an operation over several shards that a crash cut short");
        let mut all = true;
        for (k, (sh, steps)) in intent.rest.iter().enumerate() {
            let r = match self.elsewhere(*sh) {
                None => self.intent_commit(coord, id, k as u32, *sh, steps.clone(), true).await,
                Some(remote) => {
                    let last = !intent.rest[k + 1..].iter().any(|(s, _)| s == sh);
                    let op = OpId { coord, id };
                    remote.ask(ShardMsg::Commit { shard: *sh, op, k: k as u32, steps: steps.clone(), last }).await.map(|_| ())
                }
            };
            if let Err(e) = r {
                e.log("rolling an intent forward failed");
                all = false;
            }
        }
        all
    }

    /// The shards this process leads.
    pub(crate) fn led_shards(&self) -> Vec<u32> {
        (0..self.shards.len() as u32).filter(|s| self.elsewhere(*s).is_none()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::namespace::name_hash;
    use crate::namespace::tests::open_ns;
    use crate::once::Once;
    use aifs_common::perm::Cred;
    use aifs_common::Error;

    /// rename /f -> /d/g as `rename` builds it, stopped after the first of
    /// its three commits as a crash, or a service that stops, would stop it.
    struct Cut {
        ns: Namespace,
        d: InodeId,
        f: InodeId,
        first: u32,
        id: u64,
        rest: Vec<(u32, Vec<Step>)>,
    }

    async fn rename_cut_short(dir: &std::path::Path, rid: Option<ReqId>) -> Cut {
        let root = InodeId::ROOT;
        let ns = open_ns(dir).await;
        let name = (0..).map(|i| format!("d{i}")).find(|n| name_hash(root.0, n) % 4 != 0).unwrap();
        let d = ns.mkdir(root, &name, 0o755, &Cred::root(), &Once::none()).await.unwrap().ino;
        let f = ns.create(root, "f", 0o644, &Cred::root(), true, &Once::none()).await.unwrap().attr.ino;
        assert_ne!(d.shard(), f.shard());
        let steps = vec![
            Step::AddLink { ino: f.0 },
            Step::InsertEntry { dir: d.0, name: "g".into(), ino: f.0, kind: FileKind::File, dir_delta: (1, 0) },
            Step::RemoveEntry { dir: root.0, name: "f".into(), dir_delta: (-1, 0) },
            Step::DropLink { ino: f.0 },
        ];
        let mut rest = by_shard(steps);
        let (first, steps) = rest.remove(0);
        let id = ns.first_commit(first, steps, &rest, rid, (f.0, 0), None).await.unwrap();
        assert!(id != 0 && rest.len() == 2);
        assert_eq!(ns.getattr(f).await.unwrap().nlink, 2);
        Cut { ns, d, f, first, id, rest }
    }

    /// The rename is whole in `ns`: /d/g is the file `f`, with one link,
    /// and /f is gone.
    async fn renamed(ns: &Namespace, d: InodeId, f: InodeId) {
        assert_eq!(ns.getattr(f).await.unwrap().nlink, 1);
        assert_eq!(ns.lookup(d, "g", &Cred::root()).await.unwrap().ino, f);
        assert_eq!(ns.lookup(InodeId::ROOT, "f", &Cred::root()).await.map(|a| a.ino), Err(Error::NotFound));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_operation_over_shards_cut_short_by_a_crash_is_finished_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let rid = ReqId { client: 5, seq: 1, oldest: 1, retry: false };
        let Cut { ns, d, f, .. } = rename_cut_short(dir.path(), Some(rid)).await;
        let root = InodeId::ROOT;
        drop(ns);
        let ns = open_ns(dir.path()).await;
        renamed(&ns, d, f).await;
        // The client's retry is answered from the record.
        let retry = ns.once(Some(ReqId { retry: true, ..rid })).await.unwrap();
        assert_eq!(ns.rename(root, "f", d, "g", 0, &Cred::root(), &retry).await, Ok((f, None)));
        drop(retry);
        // Rolled forward once only: another start changes nothing.
        drop(ns);
        let ns = open_ns(dir.path()).await;
        assert_eq!(ns.getattr(f).await.unwrap().nlink, 1);
        let (entries, _, _) = ns.readdir(d, 0, 100, &Cred::root()).await.unwrap();
        assert_eq!(entries.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), vec!["g"]);
    }

    /// After `next` rolled the cut rename forward (and dropped its marks),
    /// the later commits the old namespace's request would still make are
    /// refused; made, they would apply the steps again, and a second
    /// DropLink would take the file's last link, and the file with it.
    async fn old_commits_refused(cut: &Cut, next: &Namespace) {
        renamed(next, cut.d, cut.f).await;
        for (k, (sh, steps)) in cut.rest.iter().enumerate() {
            let r = cut.ns.intent_commit(cut.first, cut.id, k as u32, *sh, steps.clone(), false).await;
            assert!(matches!(r, Err(Error::Unavailable(_))), "commit {k} of the stopped service: {r:?}");
        }
        renamed(next, cut.d, cut.f).await;
        next.create(cut.d, "h", 0o644, &Cred::root(), true, &Once::none()).await.unwrap();
    }

    /// A service stops while a request of its own is between the commits
    /// of an operation over shards, and the next service over the same
    /// groups starts at once (lib.rs's lead loop, when this process takes
    /// a shard on) and finishes the operation.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stopped_service_cannot_make_again_what_the_next_one_finished() {
        let dir = tempfile::tempdir().unwrap();
        let cut = rename_cut_short(dir.path(), None).await;
        let stores = cut.ns.shards.iter().map(|s| Arc::new(s.successor())).collect();
        let policy = aifs_common::LayoutPolicy { stripe_count: 1, ..Default::default() };
        let next = Namespace::over(stores, policy, cut.ns.cluster.clone()).await.unwrap();
        old_commits_refused(&cut, &next).await;
    }

    /// A service that lets shards go rolls forward what a request of its
    /// own still runs through (serving.rs, `let_go`, once its wait is up).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_service_letting_shards_go_refuses_its_requests_once_it_rolled_forward() {
        let dir = tempfile::tempdir().unwrap();
        let cut = rename_cut_short(dir.path(), None).await;
        let over = cut.ns.taken_over().await.unwrap();
        over.roll_forward().await.unwrap();
        old_commits_refused(&cut, &over).await;
    }
}
