//! Names and attributes: lookups, attributes, creates, removes and
//! renames, listings, xattrs, and the changes made under directories'
//! write leases on their way to the MDS (dirops.rs).
use super::*;
use aifs_common::proto::mds::{LINK_MAX, MAX_UNRESERVE, RENAME_EXCHANGE};

impl ClientFs {
    /// Send the changes made under directory leases, a batch at a time
    /// (changes made while one batch is out go in the next), and reserve
    /// inode numbers for the directories that run low.
    pub(super) async fn send_dirops(weak: Weak<ClientFs>) {
        let mut pause = Duration::from_millis(10);
        loop {
            let Some(ops) = weak.upgrade().map(|fs| fs.dirops.clone()) else {
                return;
            };
            let woken = ops.queued.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let Some(fs) = weak.upgrade() else { return };
            loop {
                // Numbers for directories running low first: without them
                // creates there go to the MDS, behind every queued change.
                fs.unreserve(&ops).await;
                fs.reserve(&ops).await;
                let Some((batch, last)) = ops.take_batch() else {
                    break;
                };
                loop {
                    let req = MdsReq::Apply { session: fs.meta.session(), ops: batch.clone() };
                    match fs.pool.mds(&req).await {
                        Ok(MdsResp::Applied(rs)) => {
                            fs.not_applied(&batch, rs).await;
                            break;
                        }
                        // The MDS is away (restarting, say): the batch goes
                        // again; applying a change twice changes nothing.
                        Err(e) if e.unreachable() => {
                            tracing::warn!(error = %e, changes = batch.len(), "changes not delivered to the MDS; retrying");
                            tokio::time::sleep(pause).await;
                            pause = (pause * 2).min(Duration::from_secs(1));
                        }
                        r => {
                            let e = r.err().unwrap_or_else(|| unexpected("Apply"));
                            fs.not_applied(&batch, vec![Some(e.to_wire()); batch.len()]).await;
                            break;
                        }
                    }
                }
                pause = Duration::from_millis(10);
                ops.answered(last);
            }
            drop(fs);
            woken.await;
        }
    }

    /// Reserve inode numbers for the directories that asked.
    pub(super) async fn reserve(&self, ops: &DirOps) {
        for dir in ops.take_refills() {
            let got = match self.pool.mds(&MdsReq::Reserve { dir, count: RESERVE_BATCH }).await {
                Ok(MdsResp::Reserved(v)) => v,
                Ok(_) => Vec::new(),
                Err(e) => {
                    tracing::debug!(%dir, error = %e, "no inode numbers reserved; creates there go to the MDS");
                    Vec::new()
                }
            };
            ops.refilled(dir, got);
        }
    }

    /// Give back the inode numbers reserved for directories where this
    /// client makes no more files itself (lease recalled or lost, layout
    /// changed): they count against its certificate until then.
    pub(super) async fn unreserve(&self, ops: &DirOps) {
        let mut unused = ops.take_unused();
        // Each shard's to the process that leads it.
        unused.sort_by_key(|i| i.shard());
        for inos in unused.chunk_by(|a, b| a.shard() == b.shard()).flat_map(|s| s.chunks(MAX_UNRESERVE)) {
            if let Err(e) = self.pool.mds(&MdsReq::Unreserve { inos: inos.to_vec() }).await {
                tracing::debug!(numbers = inos.len(), error = %e, "reserved inode numbers not given back; the MDS drops them once this client is gone");
            }
        }
    }

    /// Changes the MDS refused (the lease was lost, and another client
    /// changed the directory meanwhile): said loudly, and forgotten here.
    pub(super) async fn not_applied(&self, batch: &[DirOp], results: Vec<Option<aifs_common::error::WireError>>) {
        for (op, r) in batch.iter().zip(results) {
            let Some(e) = r else { continue };
            let e = Error::from_wire(e.code, &e.msg);
            let (parent, name, ino) = match op {
                DirOp::Create { parent, name, ino, .. } => {
                    tracing::error!(%parent, name, %ino, error = %e, "a file made under a directory lease was refused by the MDS; it does not exist");
                    if let Some(f) = self.files.get(ino) {
                        f.fail(Error::Io(format!("file {name:?} was never created at the MDS: {e}")));
                    }
                    (parent, name, ino)
                }
                DirOp::Unlink { parent, name, ino, .. } => {
                    tracing::error!(%parent, name, %ino, error = %e, "an unlink made under a directory lease was refused by the MDS");
                    (parent, name, ino)
                }
                DirOp::Mkdir { parent, name, ino, .. } => {
                    tracing::error!(%parent, name, %ino, error = %e, "a directory made under its parent's lease was refused by the MDS; it does not exist");
                    self.dirops.revoke(*ino);
                    (parent, name, ino)
                }
                DirOp::Rmdir { parent, name, ino, .. } => {
                    tracing::error!(%parent, name, %ino, error = %e, "an rmdir made under a directory lease was refused by the MDS");
                    (parent, name, ino)
                }
                DirOp::Close { ino } => {
                    tracing::debug!(%ino, error = %e, "close not applied; the session's end releases it");
                    continue;
                }
            };
            self.meta.drop_ino(*ino);
            self.meta.invalidate(*parent, std::slice::from_ref(name));
            self.tell_kernel(*parent, vec![name.clone()], false).await;
        }
    }

    /// A create answered here, under the directory's write lease, with an
    /// inode number reserved there, owned as the MDS will own it
    /// (`perm::new_owner`). `None`: the MDS must answer (no lease, no
    /// number left, the name is not known to be free, or the caller may
    /// not create there: the MDS says why).
    pub(super) fn create_here(&self, parent: InodeId, name: &str, mode: u32, exclusive: bool) -> Option<Result<(Attr, Cap)>> {
        if !self.cache_on() {
            return None;
        }
        let cred = self.caller();
        let dir = Perms::from(&self.meta.attr(parent)?.0);
        perm::may_create(dir, &cred).ok()?;
        let (uid, gid, mode) = perm::new_owner(dir, &cred, FileKind::File, mode);
        self.dirops.local(parent, |l| {
            match self.meta.dentry(parent, name)? {
                None => {}
                Some(_) if exclusive => return Some(Err(Error::Exists)),
                // Opening the file there: the MDS counts the open.
                Some(_) => return None,
            }
            let snap = self.meta.snap();
            let r = l.take()?;
            let now = aifs_common::time::now_ns();
            let a = Attr::new_file(r.ino, mode, uid, gid, r.layout.clone(), now);
            l.push(DirOp::Create {
                parent,
                name: name.to_string(),
                ino: r.ino,
                layout: r.layout,
                mode,
                cred,
                time_ns: now,
                open: true,
            });
            // The creator holds a write lease on the new file.
            self.meta.put_attr(snap, snap.session(), &a, LeaseMode::Write);
            self.meta.local_entry(snap, parent, name, Some(a.ino), false);
            self.meta.touch_dir(parent, now, 0);
            Some(Ok((a, r.cap)))
        })
    }

    /// An unlink answered here, under the directory's write lease, of a
    /// name this client knows. `None`: the MDS must answer.
    pub(super) fn unlink_here(&self, parent: InodeId, name: &str) -> Option<Result<()>> {
        if !self.cache_on() {
            return None;
        }
        let cred = self.caller();
        let dir = Perms::from(&self.meta.attr(parent)?.0);
        self.dirops.local(parent, |l| {
            let Some(ino) = self.meta.dentry(parent, name)? else {
                return Some(Err(Error::NotFound));
            };
            let (a, _) = self.meta.attr(ino)?;
            if a.kind == FileKind::Dir {
                return Some(Err(Error::IsDir));
            }
            perm::may_delete(dir, a.uid, &cred).ok()?;
            let snap = self.meta.snap();
            let now = aifs_common::time::now_ns();
            l.push(DirOp::Unlink { parent, name: name.to_string(), ino, time_ns: now, cred });
            self.meta.local_entry(snap, parent, name, None, false);
            self.meta.forget_attr(ino);
            self.meta.touch_dir(parent, now, 0);
            Some(Ok(()))
        })
    }

    /// A mkdir answered here, under the parent's write lease, with an inode
    /// number reserved there (the directory lives in its parent's shard),
    /// owned as the MDS will own it. The maker holds the new directory's
    /// write lease, and knows it empty. `None`: the MDS must answer.
    pub(super) fn mkdir_here(&self, parent: InodeId, name: &str, mode: u32) -> Option<Result<Attr>> {
        if !self.cache_on() {
            return None;
        }
        let cred = self.caller();
        let (pa, _) = self.meta.attr(parent)?;
        if pa.nlink >= LINK_MAX {
            return None;
        }
        let dir = Perms::from(&pa);
        perm::may_create(dir, &cred).ok()?;
        let (uid, gid, mode) = perm::new_owner(dir, &cred, FileKind::Dir, mode);
        self.dirops.local(parent, |l| {
            if self.meta.dentry(parent, name)?.is_some() {
                return Some(Err(Error::Exists));
            }
            let snap = self.meta.snap();
            let r = l.take()?;
            let now = aifs_common::time::now_ns();
            let a = Attr::new_dir(r.ino, mode, uid, gid, now);
            l.push(DirOp::Mkdir { parent, name: name.to_string(), ino: r.ino, mode, cred, time_ns: now });
            l.made_dir(r.ino);
            self.meta.put_attr(snap, snap.session(), &a, LeaseMode::Read);
            self.meta.new_dir(snap, snap.session(), a.ino, parent);
            self.meta.local_entry(snap, parent, name, Some(a.ino), false);
            self.meta.touch_dir(parent, now, 1);
            Some(Ok(a))
        })
    }

    /// An rmdir answered here, under the parent's write lease, of a
    /// directory this client holds the write lease of and knows empty.
    /// `None`: the MDS must answer.
    pub(super) fn rmdir_here(&self, parent: InodeId, name: &str) -> Option<Result<()>> {
        if !self.cache_on() {
            return None;
        }
        let cred = self.caller();
        let dir = Perms::from(&self.meta.attr(parent)?.0);
        self.dirops.local(parent, |l| {
            let Some(ino) = self.meta.dentry(parent, name)? else {
                return Some(Err(Error::NotFound));
            };
            let (a, _) = self.meta.attr(ino)?;
            if a.kind != FileKind::Dir {
                return Some(Err(Error::NotDir));
            }
            if !l.holds(ino) || !self.meta.known_empty(ino) {
                return None;
            }
            perm::may_delete(dir, a.uid, &cred).ok()?;
            let snap = self.meta.snap();
            let now = aifs_common::time::now_ns();
            l.push(DirOp::Rmdir { parent, name: name.to_string(), ino, time_ns: now, cred });
            l.removed_dir(ino);
            self.meta.local_entry(snap, parent, name, None, false);
            self.meta.drop_ino(ino);
            self.meta.touch_dir(parent, now, -1);
            Some(Ok(()))
        })
    }

    /// The MDS granted `dir`'s write lease in a reply to a request sent at
    /// `snap`: kept unless the lease was recalled meanwhile.
    pub(super) fn writable(&self, snap: Snap, granted: Option<SessionId>, w: Option<Writable>) {
        let Some(w) = w else { return };
        if self.dir_leases && self.meta.granted_now(snap, granted) && self.meta.quiet_since(snap, w.dir) {
            self.dirops.grant(w.dir, w.reserved);
        }
    }

    /// Wait until every change made under directory leases is at the MDS
    /// (`fsync` of a directory).
    pub async fn sync_dirs(&self) {
        self.dirops.barrier().await;
    }

    /// The kernel TTL for `a`: what is left of its lease.
    pub fn ttl(&self, ino: InodeId) -> Duration {
        self.meta.ttl(ino)
    }

    pub(super) fn cache_on(&self) -> bool {
        self.lease_cache
    }

    /// Cache attributes granted under `granted`.
    pub(super) fn keep(&self, snap: Snap, granted: Option<SessionId>, a: &Attr, mode: LeaseMode) {
        if self.cache_on() {
            self.meta.put_attr(snap, granted, a, mode);
        }
    }

    pub(super) fn cached(&self, ino: InodeId) -> Option<(Attr, LeaseMode)> {
        if self.cache_on() {
            self.meta.attr(ino)
        } else {
            None
        }
    }

    /// Attributes as this client sees them: a size it wrote but has not
    /// yet published wins over the MDS's.
    pub(super) fn overlay(&self, mut a: Attr) -> Attr {
        if let Some(f) = self.files.get(&a.ino) {
            if let Some(s) = f.local_size() {
                a.size = s;
            }
        }
        a
    }

    /// Directory attributes that came back with this client's own change.
    pub(super) fn changed_dirs(&self, snap: Snap, dirs: &[Attr]) {
        for d in dirs {
            self.meta.refresh_attr(snap, d);
        }
    }

    pub async fn lookup(self: &Arc<Self>, parent: InodeId, name: &str) -> Result<Attr> {
        if self.cache_on() {
            match self.meta.dentry(parent, name) {
                Some(None) => return Err(Error::NotFound),
                Some(Some(ino)) => {
                    if let Some((a, _)) = self.meta.attr(ino) {
                        return Ok(self.overlay(a));
                    }
                }
                None => {}
            }
            self.looked_up_uncached(parent);
        }
        let snap = self.meta.snap();
        let (r, granted) = self.mds_leased(&MdsReq::Lookup { parent, name: name.to_string() }).await;
        match r {
            Ok(MdsResp::Attr(a)) if a.ino.is_valid() => {
                if self.cache_on() {
                    self.meta.put_dentry(snap, granted, parent, name, Some(a.ino));
                }
                self.keep(snap, granted, &a, LeaseMode::Read);
                Ok(self.overlay(a))
            }
            // An inode whose shard another process leads: its attributes
            // are leased there, by a getattr (which goes to that process).
            Ok(MdsResp::AttrNoLease(a)) if a.ino.is_valid() => {
                if self.cache_on() {
                    self.meta.put_dentry(snap, granted, parent, name, Some(a.ino));
                }
                Ok(self.getattr(a.ino).await.unwrap_or_else(|_| self.overlay(a)))
            }
            Ok(_) => Err(unexpected("Lookup")),
            Err(Error::NotFound) => {
                if self.cache_on() {
                    self.meta.put_dentry(snap, granted, parent, name, None);
                }
                Err(Error::NotFound)
            }
            Err(e) => Err(e),
        }
    }

    /// Kernel TTL for an entry: its directory's and its inode's leases,
    /// if this client holds `name` as `ino`.
    pub fn entry_ttl(&self, parent: InodeId, name: &str, ino: InodeId) -> Duration {
        if self.cache_on() && self.meta.dentry_is(parent, name, ino) {
            self.meta.ttl(ino)
        } else {
            Duration::ZERO
        }
    }

    /// Attributes: from the cache under a lease, else from the MDS.
    pub async fn getattr(&self, ino: InodeId) -> Result<Attr> {
        if let Some((a, _)) = self.cached(ino) {
            return Ok(self.overlay(a));
        }
        let snap = self.meta.snap();
        let (r, granted) = self.mds_leased(&MdsReq::GetAttr { ino }).await;
        match r? {
            MdsResp::Attr(a) if a.ino == ino => {
                self.keep(snap, granted, &a, LeaseMode::Read);
                Ok(self.overlay(a))
            }
            _ => Err(unexpected("GetAttr")),
        }
    }

    pub async fn setattr(&self, ino: InodeId, set: SetAttr) -> Result<Attr> {
        let file = self.files.get(&ino).map(|f| f.clone());
        if let Some(f) = &file {
            if set.size.is_some() || set.mtime.is_some() || set.atime.is_some() {
                // Data written before a truncate must land before it, and a
                // size/mtime published later must not undo an explicit time.
                self.flush_file(f, Others::Wait).await?;
            }
        }
        let size = set.size;
        let snap = self.meta.snap();
        let a = match self.mds(&MdsReq::SetAttr { ino, set }).await {
            Ok(MdsResp::Attr(a)) => a,
            Ok(_) => return Err(unexpected("SetAttr")),
            Err(e) => {
                self.meta.forget_attr(ino);
                return Err(e);
            }
        };
        self.meta.refresh_attr(snap, &a);
        if let (Some(f), Some(s)) = (&file, size) {
            f.set_size(s, true);
        }
        Ok(self.overlay(a))
    }

    /// A namespace change of this client's: the new inode's attributes.
    pub(super) async fn change(&self, snap: Snap, req: MdsReq, what: &str) -> Result<Option<Attr>> {
        match self.mds(&req).await? {
            MdsResp::Changed { attr, dirs, .. } => {
                self.changed_dirs(snap, &dirs);
                Ok(attr)
            }
            MdsResp::Done => Ok(None),
            _ => Err(unexpected(what)),
        }
    }

    pub(super) async fn made(&self, req: MdsReq, parent: InodeId, name: &str, what: &str) -> Result<Attr> {
        let snap = self.meta.snap();
        let a = self.change(snap, req, what).await?.filter(|a| a.ino.is_valid()).ok_or_else(|| unexpected(what))?;
        self.meta.local_entry(snap, parent, name, Some(a.ino), false);
        Ok(a)
    }

    /// A regular file (left closed), or a special file: a FIFO, a socket
    /// (`bind`), a device node.
    pub async fn mknod(&self, parent: InodeId, name: &str, mode: u32, rdev: u32) -> Result<Attr> {
        if let Some(kind) = FileKind::special(mode) {
            let req = MdsReq::Mknod { parent, name: name.to_string(), kind, mode, rdev };
            return self.made(req, parent, name, "Mknod").await;
        }
        if mode & libc::S_IFMT != libc::S_IFREG && mode & libc::S_IFMT != 0 {
            return Err(Error::InvalidArgument(format!("mknod of mode {mode:o}")));
        }
        let req = MdsReq::Create { parent, name: name.to_string(), mode, exclusive: true };
        let a = self.made(req, parent, name, "Create").await?;
        // The MDS counts a create as an open; mknod leaves nothing open.
        self.send_close(a.ino);
        Ok(a)
    }

    /// The new directory comes leased to its maker, known to be empty.
    pub async fn mkdir(&self, parent: InodeId, name: &str, mode: u32) -> Result<Attr> {
        if let Some(r) = self.mkdir_here(parent, name, mode) {
            return r;
        }
        let snap = self.meta.snap();
        let req = MdsReq::Mkdir { parent, name: name.to_string(), mode };
        let (r, granted) = self.mds_leased(&req).await;
        match r? {
            MdsResp::Changed { attr: Some(a), dirs, writable, .. } if a.ino.is_valid() => {
                self.changed_dirs(snap, &dirs);
                self.meta.local_entry(snap, parent, name, Some(a.ino), false);
                if self.cache_on() {
                    self.meta.put_attr(snap, granted, &a, LeaseMode::Read);
                    self.meta.new_dir(snap, granted, a.ino, parent);
                    self.writable(snap, granted, writable);
                }
                Ok(a)
            }
            _ => Err(unexpected("Mkdir")),
        }
    }

    pub async fn symlink(&self, parent: InodeId, name: &str, target: &str) -> Result<Attr> {
        let req = MdsReq::Symlink { parent, name: name.to_string(), target: target.to_string() };
        self.made(req, parent, name, "Symlink").await
    }

    pub async fn link(&self, ino: InodeId, newparent: InodeId, newname: &str) -> Result<Attr> {
        self.meta.forget_attr(ino);
        self.made(MdsReq::Link { ino, newparent, newname: newname.to_string() }, newparent, newname, "Link").await
    }

    /// The inode this client's cache says `name` in `dir` is.
    pub(super) fn cached_child(&self, dir: InodeId, name: &str) -> Option<InodeId> {
        self.meta.dentry(dir, name).flatten()
    }

    pub async fn unlink(&self, parent: InodeId, name: &str) -> Result<()> {
        if let Some(r) = self.unlink_here(parent, name) {
            return r;
        }
        let child = self.cached_child(parent, name);
        let snap = self.meta.snap();
        let r = self.change(snap, MdsReq::Unlink { parent, name: name.to_string() }, "Unlink").await;
        self.meta.local_entry(snap, parent, name, None, r.is_err());
        if let Some(c) = child {
            self.meta.forget_attr(c);
        }
        r.map(|_| ())
    }

    pub async fn rmdir(&self, parent: InodeId, name: &str) -> Result<()> {
        if let Some(r) = self.rmdir_here(parent, name) {
            return r;
        }
        let child = self.cached_child(parent, name);
        let snap = self.meta.snap();
        let r = self.change(snap, MdsReq::Rmdir { parent, name: name.to_string() }, "Rmdir").await;
        self.meta.local_entry(snap, parent, name, None, r.is_err());
        if let Some(c) = child {
            self.meta.drop_ino(c);
            if r.is_ok() {
                // Its write lease, if held, went with it: numbers reserved
                // there go back.
                self.dirops.revoke(c);
            }
        }
        r.map(|_| ())
    }

    pub async fn rename(&self, parent: InodeId, name: &str, newparent: InodeId, newname: &str, flags: u32) -> Result<()> {
        let moved = self.cached_child(parent, name);
        let replaced = self.cached_child(newparent, newname);
        let req = MdsReq::Rename { parent, name: name.to_string(), newparent, newname: newname.to_string(), flags };
        let snap = self.meta.snap();
        let r = self.change(snap, req, "Rename").await;
        let ok = r.is_ok();
        // An exchange leaves the other inode at the old name.
        let left = if flags & RENAME_EXCHANGE != 0 { replaced } else { None };
        self.meta.local_entry(snap, parent, name, left, !ok || (left.is_none() && flags & RENAME_EXCHANGE != 0));
        self.meta.local_entry(snap, newparent, newname, moved, !ok || moved.is_none());
        for ino in [moved, replaced].into_iter().flatten() {
            // A moved directory's `..` changed; a replaced inode lost a
            // link (or, exchanged, its name and perhaps its `..`).
            self.meta.drop_ino(ino);
        }
        r.map(|_| ())
    }

    pub async fn readlink(&self, ino: InodeId) -> Result<Vec<u8>> {
        match self.mds(&MdsReq::Readlink { ino }).await? {
            MdsResp::Bytes(b) => Ok(b),
            _ => Err(unexpected("Readlink")),
        }
    }

    /// Entries after `cookie`, and the directory's parent.
    pub async fn readdir(&self, ino: InodeId, cookie: u64) -> Result<(Vec<DirEntry>, InodeId)> {
        if self.cache_on() {
            if let Some(l) = self.meta.listed(ino, cookie, READDIR_BATCH as usize) {
                return Ok((l.entries, l.parent));
            }
        }
        let snap = self.meta.snap();
        let (r, granted) = self.mds_leased(&MdsReq::Readdir { ino, cookie, max: READDIR_BATCH }).await;
        match r? {
            MdsResp::Dir { entries, parent, eof } => {
                if self.cache_on() {
                    self.meta.put_listing(snap, granted, ino, cookie, &entries, eof, parent);
                }
                Ok((entries, parent))
            }
            _ => Err(unexpected("Readdir")),
        }
    }

    /// Entries after `cookie` with their attributes, and the directory's
    /// parent.
    pub async fn readdirplus(&self, ino: InodeId, cookie: u64) -> Result<(Vec<(DirEntry, Attr)>, InodeId)> {
        if self.cache_on() {
            if let Some(l) = self.meta.listed(ino, cookie, READDIR_BATCH as usize) {
                let mut out = Vec::with_capacity(l.entries.len().min(READDIR_BATCH as usize));
                for e in l.entries {
                    match self.meta.attr(e.ino) {
                        Some((a, _)) => out.push((e, self.overlay(a))),
                        // Its lease was recalled: ask the MDS for the batch.
                        None => {
                            out.clear();
                            break;
                        }
                    }
                }
                if !out.is_empty() {
                    return Ok((out, l.parent));
                }
            }
        }
        let snap = self.meta.snap();
        let (r, granted) = self.mds_leased(&MdsReq::ReaddirPlus { ino, cookie, max: READDIR_BATCH }).await;
        match r? {
            MdsResp::DirPlus { entries, attrs, parent, eof, no_lease } if entries.len() == attrs.len() => {
                if self.cache_on() {
                    for a in attrs.iter().filter(|a| !no_lease.contains(&a.ino)) {
                        self.meta.put_attr(snap, granted, a, LeaseMode::Read);
                    }
                    self.meta.put_listing(snap, granted, ino, cookie, &entries, eof, parent);
                }
                let pairs = entries.into_iter().zip(attrs).map(|(e, a)| (e, self.overlay(a))).collect();
                Ok((pairs, parent))
            }
            _ => Err(unexpected("ReaddirPlus")),
        }
    }

    pub async fn statfs(&self) -> Result<Statfs> {
        match self.mds(&MdsReq::Statfs).await? {
            MdsResp::Statfs(s) => Ok(s),
            _ => Err(unexpected("Statfs")),
        }
    }

    /// The attributes cached under a lease say `ino` has no xattrs.
    pub(super) fn known_without_xattrs(&self, ino: InodeId) -> bool {
        self.cached(ino).is_some_and(|(a, _)| a.xattrs == 0)
    }

    pub async fn getxattr(&self, ino: InodeId, name: &str) -> Result<Vec<u8>> {
        if self.known_without_xattrs(ino) {
            return Err(Error::NoXattr);
        }
        match self.mds(&MdsReq::GetXattr { ino, name: name.to_string() }).await? {
            MdsResp::Bytes(b) => Ok(b),
            _ => Err(unexpected("GetXattr")),
        }
    }

    pub async fn setxattr(&self, ino: InodeId, name: &str, value: Vec<u8>, flags: u32) -> Result<()> {
        let r = self.change(self.meta.snap(), MdsReq::SetXattr { ino, name: name.to_string(), value, flags }, "SetXattr").await;
        self.meta.forget_attr(ino);
        r.map(|_| ())
    }

    pub async fn listxattr(&self, ino: InodeId) -> Result<Vec<String>> {
        if self.known_without_xattrs(ino) {
            return Ok(Vec::new());
        }
        match self.mds(&MdsReq::ListXattr { ino }).await? {
            MdsResp::Names(n) => Ok(n),
            _ => Err(unexpected("ListXattr")),
        }
    }

    pub async fn removexattr(&self, ino: InodeId, name: &str) -> Result<()> {
        let r = self.change(self.meta.snap(), MdsReq::RemoveXattr { ino, name: name.to_string() }, "RemoveXattr").await;
        self.meta.forget_attr(ino);
        r.map(|_| ())
    }
}
