//! Sequential read-ahead (DESIGN.md, "Data"). A reader that keeps reading
//! near where it left off is sequential: whole stripe units ahead of it are
//! fetched from all OSDs of the layout at once, the window as many units as
//! the run has covered, up to `readahead_units`. Units behind the reader
//! are dropped. A random reader gets exactly the bytes it asked for and no
//! read-ahead.
use super::io::read_object;
use super::file::{DataCtx, FileState, UnitFuture};
use aifs_common::proto::mds::Degraded;
use aifs_common::{Error, Result};
use bytes::{Bytes, BytesMut};
use futures::future::FutureExt;
use std::sync::Arc;

/// Fetch `[start, end)` of the file (end clipped to size by the caller),
/// one future per extent, all at once.
async fn fetch_range(ctx: &DataCtx, f: &FileState, start: u64, end: u64) -> Result<Bytes> {
    let exts = f.layout.extents(start, end - start);
    let reads = exts.iter().map(|e| async move {
        let mut bad = Vec::new();
        let r = read_object(ctx, &f.caps, &f.layout, e.object, e.obj_off, e.len, &f.stale_of(e.object), &mut bad).await;
        (r, bad.into_iter().map(|osd| Degraded { index: e.object, osd }).collect::<Vec<_>>())
    });
    let mut parts = Vec::with_capacity(exts.len());
    let mut bad = Vec::new();
    let mut failed = None;
    for (r, b) in futures::future::join_all(reads).await {
        bad.extend(b);
        match r {
            Ok(p) => parts.push(p),
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    // Replicas that failed their crc are recorded as degraded: nobody
    // reads them again, and repair rewrites them from a good one.
    if !bad.is_empty() {
        if let Err(e) = f.degrade(ctx, bad).await {
            tracing::warn!(ino = %f.ino, error = %e, "could not record replicas that failed their checksum");
        }
    }
    if let Some(e) = failed {
        return Err(e);
    }
    if parts.len() == 1 {
        return Ok(parts.into_iter().next().unwrap_or_default());
    }
    let mut out = BytesMut::with_capacity((end - start) as usize);
    for p in parts {
        out.extend_from_slice(&p);
    }
    Ok(out.freeze())
}

fn unit_future(ctx: &Arc<DataCtx>, f: &Arc<FileState>, unit: u64, size: u64) -> UnitFuture {
    let su = f.layout.stripe_size as u64;
    let start = unit * su;
    let end = (start + su).min(size);
    let ctx = ctx.clone();
    let f = f.clone();
    let h = tokio::spawn(async move { fetch_range(&ctx, &f, start, end).await });
    async move { h.await.map_err(|e| Error::Io(format!("read task: {e}")))? }.boxed().shared()
}

/// Exactly `[off, off + len)` (clipped to `size`) from the OSDs, with no
/// read-ahead and no cache: for a file several clients write at once.
pub async fn read_direct(ctx: &DataCtx, f: &FileState, off: u64, len: u64, size: u64) -> Result<Bytes> {
    if off >= size || len == 0 {
        return Ok(Bytes::new());
    }
    fetch_range(ctx, f, off, off.saturating_add(len).min(size)).await
}

/// Read `[off, off + len)` of a file `size` bytes long.
pub async fn read(ctx: &Arc<DataCtx>, f: &Arc<FileState>, off: u64, len: u64, size: u64) -> Result<Bytes> {
    if off >= size || len == 0 {
        return Ok(Bytes::new());
    }
    let end = off.saturating_add(len).min(size);
    let su = f.layout.stripe_size as u64;
    let first = off / su;
    let last = (end - 1) / su;
    let futs: Option<Vec<(u64, UnitFuture)>> = {
        let mut ra = f.ra.lock().map_err(|_| Error::Io("read-ahead lock poisoned".into()))?;
        let generation = f.generation.load(std::sync::atomic::Ordering::Acquire);
        if ra.generation != generation {
            // A write (or a landed ship) since these units were fetched.
            ra.cache.clear();
            ra.generation = generation;
        }
        let sequential = match ra.last_unit {
            None => off == 0,
            Some(u) => first + 1 >= u && first <= u + ra.window as u64 + 1,
        };
        if sequential {
            // As long as the run so far: what is fetched past the end of a
            // range (a tensor) read whole is at most what was read of it.
            let run = (last.saturating_sub(ra.run_start) + 1).min(usize::MAX as u64) as usize;
            ra.window = run.clamp(1, ctx.readahead_units.max(1));
        } else {
            ra.clear();
            ra.run_start = first;
        }
        ra.last_unit = Some(last);
        if sequential {
            ra.cache.retain(|&u, _| u + 1 >= first);
            let horizon = (last + ra.window as u64).min((size - 1) / su);
            for u in first..=horizon {
                if !ra.cache.contains_key(&u) {
                    ra.cache.insert(u, unit_future(ctx, f, u, size));
                    if u > last {
                        ctx.metrics.readahead_bytes.inc_by((size - u * su).min(su));
                    }
                }
            }
            Some((first..=last).filter_map(|u| ra.cache.get(&u).map(|fu| (u, fu.clone()))).collect())
        } else {
            None
        }
    };
    let Some(futs) = futs else {
        return fetch_range(ctx, f, off, end).await;
    };
    let mut out = BytesMut::with_capacity((end - off) as usize);
    for (u, fu) in futs {
        let data = match fu.await {
            Ok(d) => d,
            Err(e) => {
                // Do not keep a failure around for the next reader.
                if let Ok(mut ra) = f.ra.lock() {
                    ra.clear();
                }
                return Err(e);
            }
        };
        let ustart = u * su;
        let a = off.max(ustart) - ustart;
        let want = end.min(ustart + su) - ustart;
        if (data.len() as u64) < want {
            // Fetched when the file was shorter: not usable for this range.
            if let Ok(mut ra) = f.ra.lock() {
                ra.clear();
            }
            return fetch_range(ctx, f, off, end).await;
        }
        if a < want {
            if out.is_empty() && u == last {
                return Ok(data.slice(a as usize..want as usize));
            }
            out.extend_from_slice(&data[a as usize..want as usize]);
        }
    }
    Ok(out.freeze())
}
