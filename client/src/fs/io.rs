//! Reads and writes of open files, under the lease each needs.
use super::*;
use aifs_common::proto::osd::AllocMode;

impl ClientFs {
    pub(super) fn handle_file(&self, fh: FileHandle) -> Result<Arc<FileState>> {
        self.handles.get(&fh).map(|h| h.file.clone()).ok_or(Error::Stale)
    }

    pub(super) fn handle_appends(&self, fh: FileHandle) -> bool {
        self.handles.get(&fh).is_some_and(|h| h.append)
    }

    /// Writes need a write lease: the holder buffers and owns the size. A
    /// recalled one is taken again first (the MDS makes readers elsewhere
    /// drop their caches). Without a session, writes go on unleased.
    /// An `O_APPEND` handle writes at the end of the file, under a write
    /// lease no other client shares (the end is then known here).
    pub async fn write(&self, fh: FileHandle, off: u64, data: Bytes) -> Result<u32> {
        let f = self.handle_file(fh)?;
        let want = Want::of(true, self.handle_appends(fh));
        let n = data.len() as u32;
        let (_g, leased) = self.write_gate(&f, want).await?;
        let at = match want {
            Want::Append if leased => f.append_at(n as u64)?,
            _ => off,
        };
        f.write(&self.ctx, at, data).await?;
        if at != off {
            // The kernel counted on another offset: its idea of the size
            // is wrong now.
            self.forget_kernel_attrs(f.ino);
        }
        self.metrics.written_bytes.inc_by(u64::from(n));
        Ok(n)
    }

    /// `fallocate(2)`. Mode 0 and `KEEP_SIZE` reserve space on the OSDs,
    /// so a later write there cannot fail with ENOSPC; `PUNCH_HOLE` (with
    /// `KEEP_SIZE`, as Linux demands) makes a hole that holds no space;
    /// `ZERO_RANGE` makes zeros with space under them. Other modes
    /// (collapse, insert, unshare) are EOPNOTSUPP, as on file systems
    /// without them.
    pub async fn fallocate(&self, fh: FileHandle, off: u64, len: u64, mode: i32) -> Result<()> {
        let keep = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
        let how = match mode & !libc::FALLOC_FL_KEEP_SIZE {
            0 => AllocMode::Reserve,
            libc::FALLOC_FL_PUNCH_HOLE if keep => AllocMode::Punch,
            libc::FALLOC_FL_ZERO_RANGE => AllocMode::Zero,
            _ => return Err(Error::NotSupported(format!("fallocate mode {mode:#x}"))),
        };
        let f = self.handle_file(fh)?;
        let _g = self.write_gate(&f, Want::Write).await?;
        f.allocate(&self.ctx, off, len, how, !keep).await
    }

    /// Wait until this client may change `f` as `want` asks: with the
    /// lease it needs (taken again if recalled), or unleased without a
    /// session (then `false`). The guard keeps a recall from dropping the
    /// lease until the caller's change is buffered or done.
    pub(super) async fn write_gate<'a>(&self, f: &'a FileState, want: Want) -> Result<(tokio::sync::RwLockReadGuard<'a, ()>, bool)> {
        if self.dirops.unapplied(f.ino) {
            // No objects for a file the MDS does not know yet.
            self.dirops.barrier().await;
        }
        let mut pause = Duration::ZERO;
        loop {
            let g = f.gate.read().await;
            if want.suits(self.meta.mode(f.ino)) {
                return Ok((g, true));
            }
            drop(g);
            if !pause.is_zero() {
                // Granted but not kept (a notice crossed the reply, or the
                // session is being renewed): do not spin on the MDS.
                tokio::time::sleep(pause).await;
            }
            pause = (pause * 2).clamp(Duration::from_millis(1), Duration::from_millis(100));
            let (_, mode, _, _) = self.take_lease(f.ino, want, false).await?;
            if mode == LeaseMode::None {
                return Ok((f.gate.read().await, false));
            }
        }
    }

    /// After a read, set the access time as Linux's default `relatime`
    /// does: when it is not newer than the last change, or a day old. The
    /// kernel leaves atime to FUSE file systems. In the background: a close
    /// does not wait for it.
    pub(super) fn touch_atime(&self, ino: InodeId, (atime, mtime, ctime): (i64, i64, i64)) {
        const DAY_NS: i64 = 86_400 * 1_000_000_000;
        let now = aifs_common::time::now_ns();
        if atime > mtime && atime > ctime && now - atime < DAY_NS {
            return;
        }
        self.post(MdsReq::Accessed { ino }, "access time not set");
        self.meta.forget_attr(ino);
    }

    pub(super) fn forget_kernel_attrs(&self, ino: InodeId) {
        if let Some(k) = self.kernel.get().cloned() {
            tokio::task::spawn_blocking(move || k.forget_inode(ino, false));
        }
    }

    pub async fn read(&self, fh: FileHandle, off: u64, len: u32) -> Result<Bytes> {
        let f = self.handle_file(fh)?;
        if let Some(h) = self.handles.get(&fh) {
            h.read.store(true, Ordering::Relaxed);
        }
        let mut mode = self.meta.mode(f.ino);
        if mode == LeaseMode::None || f.recalled.load(Ordering::Acquire) {
            // Recalled since the open: a writer elsewhere flushes first.
            // Even with a lease back from a lookup or stat, which leaves
            // the open file's size as it was before the recall, the
            // lease is taken again here for the size.
            mode = self.take_lease(f.ino, Want::Read, false).await?.1;
        }
        if f.has_pending() {
            // Read your own writes: land buffered data first.
            f.drain(&self.ctx).await?;
        }
        let data = match mode {
            LeaseMode::SharedWrite => prefetch::read_direct(&self.ctx, &f, off, len as u64, f.size()).await?,
            _ => prefetch::read(&self.ctx, &f, off, len as u64, f.size()).await?,
        };
        self.metrics.read_bytes.inc_by(data.len() as u64);
        Ok(data)
    }
}
