//! `Rename`, with `RENAME_NOREPLACE` and `RENAME_EXCHANGE`: steps over the
//! shards it touches, never a directory into its own subtree.
use crate::namespace::{check_name, Held, LINK_MAX, Namespace};
use crate::once::Once;
use crate::records::{InodeRec, Step};
use crate::service::MdsService;
use super::Call;
use aifs_common::{Error, InodeId, Result};
use aifs_common::perm::{self, Cred};
use aifs_common::proto::mds::{FileKind, MdsResp, RENAME_EXCHANGE, RENAME_NOREPLACE, ReqId};

impl Namespace {
    /// Is `dir` equal to `ancestor` or below it?
    async fn is_within(&self, mut dir: u64, ancestor: u64) -> Result<bool> {
        for _ in 0..4096 {
            if dir == ancestor {
                return Ok(true);
            }
            if dir == InodeId::ROOT.0 {
                return Ok(false);
            }
            dir = self.inode(dir).await?.parent;
        }
        Err(Error::Io("directory tree too deep or looped".into()))
    }

    /// The fences a rename of `parent/name` to `newparent/newname` holds:
    /// the shards of both directories and of the inodes both names lead
    /// to; one that may move a directory to another parent is taken alone.
    async fn fenced_rename(&self, parent: u64, name: &str, newparent: u64, newname: &str) -> Result<Held<'_>> {
        let find = || async move {
            let mut v = self.entry_shards(parent, name).await?;
            v.extend(self.entry_shards(newparent, newname).await?);
            Ok(v)
        };
        self.fences.over_found(parent != newparent, parent, find).await
    }

    /// May `cred` move `ino` out of `parent` into `newparent` (`np`),
    /// replacing `target`? As an unlink from one and a create (or unlink)
    /// in the other; a directory that changes parent must be writable too
    /// (its `..` changes).
    async fn may_rename(&self, parent: u64, ino: u64, newparent: u64, np: &InodeRec, target: Option<u64>, cred: &Cred) -> Result<()> {
        let src = self.inode(ino).await?;
        perm::may_delete(self.inode(parent).await?.perms(), src.uid, cred)?;
        match target {
            Some(t) => perm::may_delete(np.perms(), self.inode(t).await?.uid, cred)?,
            None => perm::may_create(np.perms(), cred)?,
        }
        if src.kind == FileKind::Dir && newparent != parent {
            perm::access(src.perms(), cred, perm::W)?;
        }
        Ok(())
    }

    /// Returns the moved inode and the one its new name replaced, if any.
    pub async fn rename(
        &self,
        parent: InodeId,
        name: &str,
        newparent: InodeId,
        newname: &str,
        flags: u32,
        cred: &Cred,
        once: &Once<'_>,
    ) -> Result<(InodeId, Option<InodeId>)> {
        let (moved, replaced) = self.rename_in(parent.0, name, newparent.0, newname, flags, cred, once).await?;
        Ok((InodeId(moved), replaced.map(InodeId)))
    }

    #[allow(clippy::too_many_arguments)]
    async fn rename_in(&self, parent: u64, name: &str, newparent: u64, newname: &str, flags: u32, cred: &Cred, once: &Once<'_>) -> Result<(u64, Option<u64>)> {
        check_name(name)?;
        check_name(newname)?;
        if let Some((moved, replaced)) = once.done {
            return Ok((moved, (replaced != 0).then_some(replaced)));
        }
        let rid = once.rid;
        if flags == RENAME_EXCHANGE {
            return self.exchange(parent, name, newparent, newname, cred, rid).await;
        }
        if flags & !RENAME_NOREPLACE != 0 {
            return Err(Error::InvalidArgument(format!("rename flags {flags:#x} not supported")));
        }
        let mut held = self.fenced_rename(parent, name, newparent, newname).await?;
        let (ino, kind) = self.entry_as(parent, name, Some(cred)).await?;
        let np = self.inode(newparent).await?;
        if np.kind != FileKind::Dir {
            return Err(Error::NotDir);
        }
        let target = match self.entry_as(newparent, newname, Some(cred)).await {
            Ok(t) => Some(t),
            Err(Error::NotFound) => None,
            Err(e) => return Err(e),
        };
        if parent == newparent && name == newname {
            return Ok((ino, None));
        }
        self.may_rename(parent, ino, newparent, &np, target.map(|t| t.0), cred).await?;
        if kind == FileKind::Dir && parent != newparent && self.is_within(newparent, ino).await? {
            return Err(Error::InvalidArgument("cannot move a directory into itself".into()));
        }
        let is_dir = kind == FileKind::Dir;
        if is_dir && parent != newparent && target.is_none() && np.nlink >= LINK_MAX {
            return Err(Error::TooManyLinks);
        }
        if let Some((tino, tkind)) = target {
            if flags & RENAME_NOREPLACE != 0 {
                return Err(Error::Exists);
            }
            if tino == ino {
                // Two names of one inode: POSIX says do nothing.
                return Ok((ino, None));
            }
            match (is_dir, tkind == FileKind::Dir) {
                (true, false) => return Err(Error::NotDir),
                (false, true) => return Err(Error::IsDir),
                (true, true) => {
                    if self.inode(tino).await?.entries > 0 {
                        return Err(Error::NotEmpty);
                    }
                }
                (false, false) => {}
            }
        }
        let steps = rename_steps((parent, name), (newparent, newname), (ino, kind), target);
        let replaced = target.map(|t| t.0);
        self.run_steps(&mut held, steps, rid, (ino, replaced.unwrap_or(0))).await?;
        Ok((ino, replaced))
    }

    /// `renameat2(RENAME_EXCHANGE)`: `parent/name` and `newparent/newname`
    /// swap inodes, atomically, over shards too (one intent). Each move is
    /// checked as a rename replacing the other; a directory that changes
    /// parent takes its subdirectory link along.
    async fn exchange(&self, parent: u64, name: &str, newparent: u64, newname: &str, cred: &Cred, rid: Option<ReqId>) -> Result<(u64, Option<u64>)> {
        let mut held = self.fenced_rename(parent, name, newparent, newname).await?;
        let (a, akind) = self.entry_as(parent, name, Some(cred)).await?;
        let (b, bkind) = self.entry_as(newparent, newname, Some(cred)).await?;
        if a == b {
            return Ok((a, None));
        }
        let (a_dir, b_dir) = (akind == FileKind::Dir, bkind == FileKind::Dir);
        let np = self.inode(newparent).await?;
        self.may_rename(parent, a, newparent, &np, Some(b), cred).await?;
        if parent != newparent {
            if b_dir {
                perm::access(self.inode(b).await?.perms(), cred, perm::W)?;
            }
            if (a_dir && self.is_within(newparent, a).await?) || (b_dir && self.is_within(parent, b).await?) {
                return Err(Error::InvalidArgument("cannot move a directory into itself".into()));
            }
        }
        // Subdirectory links that cross: +1 where a directory arrives in
        // place of a file, -1 where it leaves one.
        let crossing = if parent == newparent { 0 } else { a_dir as i64 - b_dir as i64 };
        let room = |d: &InodeRec, delta: i64| delta <= 0 || d.nlink < LINK_MAX;
        if !room(&np, crossing) || !room(&self.inode(parent).await?, -crossing) {
            return Err(Error::TooManyLinks);
        }
        // Non-directories hold an extra link while the swap is under way
        // (a crash between shards' commits leaves a leak, never a freed
        // inode that a name still points to, as in rename).
        let files: Vec<u64> = [(a, a_dir), (b, b_dir)].iter().filter(|(_, d)| !d).map(|(i, _)| *i).collect();
        let mut steps: Vec<Step> = files.iter().map(|&ino| Step::AddLink { ino }).collect();
        steps.push(Step::InsertEntry { dir: newparent, name: newname.to_string(), ino: a, kind: akind, dir_delta: (0, crossing) });
        steps.push(Step::InsertEntry { dir: parent, name: name.to_string(), ino: b, kind: bkind, dir_delta: (0, -crossing) });
        if a_dir {
            steps.push(Step::SetParent { ino: a, parent: newparent });
        }
        if b_dir {
            steps.push(Step::SetParent { ino: b, parent });
        }
        steps.extend(files.iter().map(|&ino| Step::DropLink { ino }));
        self.run_steps(&mut held, steps, rid, (a, b)).await?;
        Ok((a, Some(b)))
    }
}

/// The steps of a checked rename of `from` to `to` of `moved` (inode,
/// kind), replacing `target` if there is one.
fn rename_steps(from: (u64, &str), to: (u64, &str), moved: (u64, FileKind), target: Option<(u64, FileKind)>) -> Vec<Step> {
    let ((parent, name), (newparent, newname), (ino, kind)) = (from, to, moved);
    let mut steps = Vec::new();
    let is_dir = kind == FileKind::Dir;
    let moving_dir_across = is_dir && parent != newparent;
    if !is_dir {
        // Hold an extra link while the file has two names, so a crash
        // between the shards' commits leaves a leak, never a name whose
        // unlink frees data the other name still points to.
        steps.push(Step::AddLink { ino });
    }
    if let Some((tino, tkind)) = target {
        // The new name replaces the target: entries unchanged there,
        // one fewer subdirectory if a directory replaced a directory and
        // the moved one came from elsewhere.
        let nl = if is_dir && moving_dir_across { 0 } else if is_dir { -1 } else { 0 };
        steps.push(Step::InsertEntry { dir: newparent, name: newname.to_string(), ino, kind, dir_delta: (0, nl) });
        let src_nl = if moving_dir_across { -1 } else { 0 };
        steps.push(Step::RemoveEntry { dir: parent, name: name.to_string(), dir_delta: (-1, src_nl) });
        if tkind == FileKind::Dir {
            steps.push(Step::DeleteDir { ino: tino });
        } else {
            steps.push(Step::DropLink { ino: tino });
        }
    } else {
        let nl = if moving_dir_across { 1 } else { 0 };
        steps.push(Step::InsertEntry { dir: newparent, name: newname.to_string(), ino, kind, dir_delta: (1, nl) });
        steps.push(Step::RemoveEntry { dir: parent, name: name.to_string(), dir_delta: (-1, -nl) });
    }
    if moving_dir_across {
        steps.push(Step::SetParent { ino, parent: newparent });
    }
    if !is_dir {
        steps.push(Step::DropLink { ino });
    }
    steps
}

impl MdsService {
    pub(crate) async fn rename(&self, c: &mut Call<'_>, parent: InodeId, name: String, newparent: InodeId, newname: String, flags: u32) -> Result<MdsResp> {
        let (ns, cl, cred, once) = (&self.ns, &self.ns.cluster, c.cred, c.once);
        let mut dirs = vec![parent, newparent];
        if let Ok(t) = ns.lookup(newparent, &newname, cred).await {
            if t.kind == FileKind::Dir {
                // A directory replaced must be empty, counting
                // what a client made there under its write lease.
                dirs.push(t.ino);
            }
        }
        let h = self.changing(c, &dirs).await?;
        let (moved, replaced) = ns.rename(parent, &name, newparent, &newname, flags, cred, once).await?;
        self.gc.wake.notify_one();
        let mut changes = vec![(parent, vec![name]), (newparent, vec![newname]), (moved, vec![])];
        changes.extend(replaced.map(|r| (r, vec![])));
        cl.invalidate(Some(h.id), changes).await;
        Ok(self.changed(None, &[parent, newparent], None).await)
    }
}
