//! Open files: leases taken at open, one `FileState` per file shared by
//! its handles, and flush, fsync and release publishing size and mtime.
use super::*;

impl ClientFs {
    /// The file's state for one more open handle, made from `a` if this
    /// client has none. The MDS counted this open (`Open` with `first`, or
    /// `Create`); if another handle's state won the race to be made, that
    /// count is given back, so the MDS counts one open per state. `cap`:
    /// the capability granted with the open, kept by the state.
    pub(super) fn file_state(&self, a: &Attr, cap: Cap) -> Result<Arc<FileState>> {
        let layout = a.layout.clone().ok_or_else(|| Error::Io(format!("file {:#x} has no layout", a.ino)))?;
        layout.validate()?;
        let mut made = false;
        let f = self.files.entry(a.ino).or_insert_with(|| {
            made = true;
            Arc::new(FileState::new(a.ino, layout, Some(cap), a.size, &self.ctx))
        });
        if !made {
            f.caps.set(cap);
        }
        // Counted while the map entry is held, so a release of another
        // handle cannot drop the state in between.
        f.opens.fetch_add(1, Ordering::AcqRel);
        let f = f.clone();
        if !made {
            self.send_close(a.ino);
        }
        Ok(f)
    }

    /// The state of a file this client already has open, with one more
    /// handle counted; `None` if it has none, or if its lease was recalled
    /// since (the MDS then has the size).
    pub(super) fn reopen(&self, ino: InodeId) -> Option<Arc<FileState>> {
        let f = self.files.get(&ino).filter(|f| !f.recalled.load(Ordering::Acquire))?;
        f.opens.fetch_add(1, Ordering::AcqRel);
        Some(f.clone())
    }

    /// Tell the MDS this client closed its last handle of `ino` (a file
    /// unlinked meanwhile is freed once no client has it open).
    pub(super) fn send_close(&self, ino: InodeId) {
        // With the next batch of changes: closes come in bursts too.
        self.dirops.close(ino);
    }

    /// Send `req` to the MDS in the background; a failure is only logged
    /// (`what`), nothing waits for the answer.
    pub(super) fn post(&self, req: MdsReq, what: &'static str) {
        let pool = self.pool.clone();
        let dirops = self.dirops.clone();
        tokio::spawn(async move {
            dirops.barrier().await;
            if let Err(e) = pool.mds(&req).await {
                tracing::debug!(?req, error = %e, "{what}");
            }
        });
    }

    pub(super) fn new_handle(&self, f: &Arc<FileState>, append: bool, a: &Attr) -> FileHandle {
        let fh = FileHandle(self.next_fh.fetch_add(1, Ordering::Relaxed));
        let times = (a.atime_ns, a.mtime_ns, a.ctime_ns);
        self.handles.insert(fh, Handle { file: f.clone(), append, read: Default::default(), times });
        fh
    }

    /// Take a lease on a file from the MDS (waiting while conflicting
    /// holders flush and release). `first`: this open is counted by the
    /// MDS until a `Close`. Mode `None`: no session, no lease. The
    /// capability granted with it goes to the file's state, if any, and
    /// is returned.
    pub(super) async fn take_lease(&self, ino: InodeId, write: Want, first: bool) -> Result<(Attr, LeaseMode, Vec<Degraded>, Cap)> {
        let snap = self.meta.snap();
        let req = MdsReq::Open { ino, write: write != Want::Read, first, exclusive: write == Want::Append };
        let (r, granted) = self.mds_leased(&req).await;
        match r? {
            MdsResp::Opened { attr, lease, degraded, cap } if attr.ino == ino => {
                // The lease is recorded even with caching off: writes and
                // reads check it.
                self.meta.put_attr(snap, granted, &attr, lease);
                if let Some(f) = self.files.get(&ino) {
                    // Whoever wrote before us has flushed: their size counts.
                    f.set_size(attr.size, false);
                    f.recalled.store(false, Ordering::Release);
                    f.add_stale(&degraded);
                    f.caps.set(cap);
                }
                Ok((attr, lease, degraded, cap))
            }
            _ => Err(unexpected("Open")),
        }
    }

    /// Open: close-to-open consistency. A file this client already has
    /// open, under a lease that suits, opens at once. Otherwise the MDS
    /// counts the open and grants a lease (recalling writers or readers in
    /// the way); the kernel keeps its pages if the lease this client held
    /// before was never recalled meanwhile.
    pub async fn open(&self, ino: InodeId, write: bool, append: bool) -> Result<Opened> {
        let want = Want::of(write, append);
        let held = self.meta.attr(ino).filter(|(a, m)| want.suits(*m) && a.kind == FileKind::File);
        if let Some((a, m)) = &held {
            if let Some(f) = self.reopen(ino) {
                let attr = self.overlay(a.clone());
                let keep = *m != LeaseMode::SharedWrite && !append;
                return Ok(Opened { fh: self.new_handle(&f, append, &attr), attr, keep_cache: keep, direct_io: !keep });
            }
        }
        // The lease, not the attributes, says whether the pages are still
        // good: an access-time update forgets the attributes alone.
        let leased = want.suits(self.meta.mode(ino));
        let snap = self.meta.snap();
        let (a, mode, degraded, cap) = self.take_lease(ino, want, true).await?;
        match a.kind {
            FileKind::File => {}
            kind => {
                self.send_close(ino);
                return Err(if kind == FileKind::Dir { Error::IsDir } else { Error::InvalidArgument("open of a symlink".into()) });
            }
        }
        let quiet = self.meta.quiet_since(snap, ino);
        let keep = leased && quiet && mode != LeaseMode::SharedWrite && !append;
        tracing::debug!(%ino, leased, quiet, ?mode, keep, "open: the kernel keeps its pages?");
        let f = self.file_state(&a, cap)?;
        f.add_stale(&degraded);
        if !keep {
            f.set_size(a.size, false);
        }
        let attr = self.overlay(a);
        // Appends pick their own offset: the kernel's page cache and its
        // idea of the end of the file stay out of it.
        let direct_io = mode == LeaseMode::SharedWrite || append;
        Ok(Opened { fh: self.new_handle(&f, append, &attr), attr, keep_cache: keep, direct_io })
    }

    pub async fn create(&self, parent: InodeId, name: &str, mode: u32, exclusive: bool, append: bool) -> Result<Opened> {
        if let Some(r) = self.create_here(parent, name, mode, exclusive) {
            let (a, cap) = r?;
            let f = self.file_state(&a, cap)?;
            return Ok(Opened { fh: self.new_handle(&f, append, &a), attr: a, keep_cache: false, direct_io: append });
        }
        let req = MdsReq::Create { parent, name: name.to_string(), mode, exclusive };
        let snap = self.meta.snap();
        let (r, granted) = self.mds_leased(&req).await;
        let (a, cap) = match r? {
            MdsResp::Changed { attr: Some(a), dirs, writable, cap: Some(cap) } if a.ino.is_valid() => {
                self.changed_dirs(snap, &dirs);
                self.writable(snap, granted, writable);
                (a, cap)
            }
            // A name that was there already and is no file: no capability.
            MdsResp::Changed { attr: Some(a), .. } if a.kind != FileKind::File => return Err(Error::IsDir),
            _ => return Err(unexpected("Create")),
        };
        // The creator holds a write lease on the new file.
        self.meta.put_attr(snap, granted, &a, LeaseMode::Write);
        self.meta.local_entry(snap, parent, name, Some(a.ino), false);
        let f = self.file_state(&a, cap)?;
        f.set_size(a.size, false);
        Ok(Opened { fh: self.new_handle(&f, append, &a), attr: a, keep_cache: false, direct_io: append })
    }

    /// A file with no name in `parent` (`open(O_TMPFILE)`), made by the
    /// MDS and open for writing here. `linkable` (no `O_EXCL`): a `link`
    /// from this client may name it; else, and if none does, the MDS frees
    /// it at its last close.
    pub async fn tmpfile(&self, parent: InodeId, mode: u32, linkable: bool, append: bool) -> Result<Opened> {
        let req = MdsReq::TmpFile { parent, mode, linkable };
        let snap = self.meta.snap();
        let (r, granted) = self.mds_leased(&req).await;
        let (a, cap) = match r? {
            MdsResp::Changed { attr: Some(a), cap: Some(cap), .. } if a.ino.is_valid() && a.kind == FileKind::File => (a, cap),
            _ => return Err(unexpected("TmpFile")),
        };
        // The maker holds a write lease on it, as on a file it created.
        self.meta.put_attr(snap, granted, &a, LeaseMode::Write);
        let f = self.file_state(&a, cap)?;
        f.set_size(a.size, false);
        Ok(Opened { fh: self.new_handle(&f, append, &a), attr: a, keep_cache: false, direct_io: append })
    }

    /// Land buffered data and publish size and mtime. A write error stays
    /// for the application's next flush, fsync or close.
    pub(super) async fn publish(&self, f: &Arc<FileState>, others: Others) -> Result<()> {
        f.drain(&self.ctx).await?;
        let _one_at_a_time = match others {
            Others::Wait => Some(f.publishing.lock().await),
            Others::Pass => f.publishing.try_lock().ok(),
        };
        if let Some((size, mtime_ns)) = f.take_meta() {
            let req = MdsReq::UpdateSize { ino: f.ino, size, mtime_ns };
            let snap = self.meta.snap();
            match self.mds(&req).await {
                // The writer's own cached attributes follow what it published.
                Ok(MdsResp::Attr(a)) => self.meta.refresh_attr(snap, &a),
                Ok(_) => return Err(unexpected("UpdateSize")),
                Err(e) => {
                    f.restore_meta(size, mtime_ns);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Land buffered data and publish size and mtime; report the first
    /// write error since the last report.
    pub(super) async fn flush_file(&self, f: &Arc<FileState>, others: Others) -> Result<()> {
        let r = self.publish(f, others).await;
        if let Some(e) = f.take_error() {
            return Err(e);
        }
        r
    }

    /// A close of one descriptor by `lock_owner`: POSIX drops every lock
    /// the owner holds on the file, whichever descriptor took it.
    pub async fn flush(&self, fh: FileHandle, lock_owner: u64) -> Result<()> {
        let f = self.handle_file(fh)?;
        let r = self.flush_file(&f, Others::Pass).await;
        self.unlock_owner(f.ino, lock_owner).await?;
        r
    }

    pub async fn fsync(&self, fh: FileHandle) -> Result<()> {
        let f = self.handle_file(fh)?;
        // The file's name too, if it was made under a directory lease.
        self.dirops.barrier().await;
        self.flush_file(&f, Others::Wait).await?;
        f.commit(&self.ctx).await
    }

    pub async fn release(&self, fh: FileHandle) -> Result<()> {
        let Some((_, h)) = self.handles.remove(&fh) else {
            return Ok(());
        };
        let f = h.file;
        if h.read.load(Ordering::Relaxed) {
            self.touch_atime(f.ino, h.times);
        }
        // The kernel sends RELEASE in the background, once no process
        // holds the open file any more: waiting holds nobody up.
        let res = self.flush_file(&f, Others::Wait).await;
        if f.opens.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Keep the state while anything is unpublished: the next open,
            // close or the unmount publishes it.
            let gone = self.files.remove_if(&f.ino, |_, v| v.opens.load(Ordering::Acquire) == 0 && !v.has_pending() && !v.meta_dirty());
            if gone.is_some() {
                // Nothing of it is buffered: the MDS lowers the write lease
                // to a read lease at this close (this client may think it
                // holds less than the MDS says, never more).
                self.meta.downgrade(f.ino);
                self.send_close(f.ino);
            }
        }
        res
    }
}
