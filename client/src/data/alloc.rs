//! `fallocate` on the OSDs: reserving space under a file range, punching
//! it to a hole, or zeroing it. Each object the range touches gets one
//! `OsdReq::Allocate` on every replica, as a write would; a replica not
//! reached is recorded as degraded, as for a write.
use super::file::{poisoned, DataCtx, FileState};
use super::io::to_replicas;
use aifs_common::proto::mds::Degraded;
use aifs_common::proto::osd::{AllocMode, OsdReq};
use aifs_common::{Error, ObjectId, Result};
use bytes::Bytes;
use std::sync::atomic::Ordering;
use std::sync::Arc;

impl FileState {
    /// `fallocate` of file range `[off, off + len)`. With `grow`, the
    /// file's size becomes at least the range's end (no `KEEP_SIZE`).
    /// Buffered writes land first: a hole punched must not be filled
    /// again by bytes written before it.
    pub async fn allocate(self: &Arc<Self>, ctx: &Arc<DataCtx>, off: u64, len: u64, mode: AllocMode, grow: bool) -> Result<()> {
        let end = off.checked_add(len).ok_or(Error::FileTooBig)?;
        if len == 0 {
            return Err(Error::InvalidArgument("fallocate of no bytes".into()));
        }
        self.drain(ctx).await?;
        if let Some(e) = self.inner.lock().map_err(|_| poisoned())?.error.clone() {
            return Err(e);
        }
        let ranges = self.layout.object_ranges(off, len);
        let calls = ranges.iter().map(|&(index, obj_off, obj_len)| {
            let req = OsdReq::Allocate { obj: ObjectId { ino: self.ino, index }, off: obj_off, len: obj_len, mode };
            let stale = self.stale_of(index);
            async move { (index, to_replicas(ctx, &self.caps, &self.layout, index, req, Bytes::new(), &stale).await) }
        });
        let mut missed = Vec::new();
        let mut failed = None;
        for (index, r) in futures::future::join_all(calls).await {
            match r {
                Ok(m) => missed.extend(m.into_iter().map(|osd| Degraded { index, osd })),
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        self.degrade(ctx, missed).await?;
        let now = aifs_common::time::now_ns();
        {
            let mut i = self.inner.lock().map_err(|_| poisoned())?;
            // Owed a commit at the next fsync, whatever happened.
            i.written.extend(ranges.iter().map(|r| r.0));
            if let Some(e) = failed {
                return Err(e);
            }
            if grow && end > i.size {
                i.size = end;
                i.meta_dirty = true;
                i.mtime_ns = now;
            } else if mode != AllocMode::Reserve {
                i.meta_dirty = true;
                i.mtime_ns = now;
            }
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.ra_clear();
        Ok(())
    }
}
