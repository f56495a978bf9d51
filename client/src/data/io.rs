//! Reading and writing one object range on the OSDs, with end-to-end
//! crc32c: the client computes block crcs on write (the OSD checks and
//! stores them) and verifies the stored crcs on read.
use super::cap::CapSlot;
use super::file::DataCtx;
use aifs_common::proto::osd::{block_crcs, OsdReq, OsdResp, CRC_BLOCK};
use aifs_common::{Error, Layout, ObjectId, OsdId, Result};
use bytes::{Bytes, BytesMut};

/// Write `data` at `obj_off` of object `index` on each of its replicas not
/// in `stale`, all at once. Returns the replicas that could not be reached
/// (to be recorded as degraded); fails when none took the data or one
/// refused it. `caps`: the file's capability.
pub async fn write_object(ctx: &DataCtx, caps: &CapSlot, layout: &Layout, index: u32, obj_off: u64, data: Bytes, stale: &[OsdId]) -> Result<Vec<OsdId>> {
    let obj = ObjectId { ino: caps.ino, index };
    let len = u32::try_from(data.len()).map_err(|_| Error::InvalidArgument("write too large".into()))?;
    let d = data.clone();
    let crcs = crc_work(d.len(), move || block_crcs(obj_off, &d)).await?;
    let req = OsdReq::Write { obj, off: obj_off, len, crcs };
    to_replicas(ctx, caps, layout, index, req, data, stale).await
}

/// Send a change of object `index` (`req`, with `payload`) to each of its
/// replicas not in `stale`, all at once; as `write_object`.
pub async fn to_replicas(ctx: &DataCtx, caps: &CapSlot, layout: &Layout, index: u32, req: OsdReq, payload: Bytes, stale: &[OsdId]) -> Result<Vec<OsdId>> {
    let obj = ObjectId { ino: caps.ino, index };
    let pool = &ctx.pool;
    let req = caps.request(ctx, req).await?;
    let live: Vec<OsdId> = layout.object_osds(index).iter().copied().filter(|o| !stale.contains(o)).collect();
    if live.is_empty() {
        return Err(Error::Io(format!("object {obj} has no replica left to write")));
    }
    // An OSD the MDS marked down is not waited for, unless it is the last.
    let (up, mut missed): (Vec<OsdId>, Vec<OsdId>) = live.iter().partition(|o| !pool.is_down(**o));
    let targets = if up.is_empty() { std::mem::take(&mut missed) } else { up };
    let calls = targets.iter().map(|&o| {
        let req = &req;
        let payload = [payload.clone()];
        async move { caps.call(ctx, o, req, &payload).await }
    });
    let mut wrote = 0;
    let mut last = None;
    for (o, r) in targets.iter().zip(futures::future::join_all(calls).await) {
        match r {
            Ok(_) => wrote += 1,
            Err(e) if e.unreachable() => {
                tracing::warn!(%obj, osd = o.0, error = %e, "replica not reached by a change");
                missed.push(*o);
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    if wrote == 0 {
        return Err(last.unwrap_or_else(|| Error::Unavailable(format!("no replica of {obj} reached"))));
    }
    Ok(missed)
}

/// Read `[obj_off, obj_off + len)` of object `index`; bytes past the
/// object's end read as zeros (holes and not-yet-written tails). Replicas
/// in `stale` are never read; the others are tried in order, those on OSDs
/// marked down last. One whose data fails its crc is skipped and added to
/// `bad`, for the caller to report as degraded (repair rewrites it).
///
/// A replica that ends before the range does may be right (a hole, the
/// end of the object) or may have lost data (its file gone or cut short
/// on disk): the other replicas are asked too, and the longest answer
/// wins; replicas shorter than it are `bad`.
#[allow(clippy::too_many_arguments)]
pub async fn read_object(
    ctx: &DataCtx,
    caps: &CapSlot,
    layout: &Layout,
    index: u32,
    obj_off: u64,
    len: u64,
    stale: &[OsdId],
    bad: &mut Vec<OsdId>,
) -> Result<Bytes> {
    let obj = ObjectId { ino: caps.ino, index };
    let pool = &ctx.pool;
    let req = caps.request(ctx, read_request(obj, obj_off, len)).await?;
    let mut last = Error::Io(format!("object {obj} has no replica left to read"));
    let mut order: Vec<OsdId> = layout.object_osds(index).iter().copied().filter(|o| !stale.contains(o)).collect();
    order.sort_by_key(|o| pool.is_down(*o));
    // Answers that end before the range does: (end, body, its offset, osd).
    let mut short: Vec<(u64, Bytes, u64, OsdId)> = Vec::new();
    for osd in order {
        let checked = match caps.call(ctx, osd, &req, &[]).await {
            Ok((resp, body)) => checked(resp, body, obj_off, len).await,
            Err(e) => Err(e),
        };
        let (off, body) = match checked {
            Ok(r) => r,
            Err(e) => {
                // A crc mismatch, found here or by the OSD, marks the replica.
                if matches!(e, Error::Checksum(_)) {
                    bad.push(osd);
                }
                tracing::warn!(%obj, osd = osd.0, error = %e, "object read failed; trying another replica");
                last = e;
                continue;
            }
        };
        let end = off + body.len() as u64;
        if end < obj_off + len {
            short.push((end, body, off, osd));
            continue;
        }
        bad.extend(short.iter().map(|s| s.3));
        return Ok(slice_zero_filled(body, off, obj_off, len));
    }
    let Some(longest) = short.iter().map(|s| s.0).max() else { return Err(last) };
    let mut pick = None;
    for (end, body, off, osd) in short {
        if end < longest {
            tracing::warn!(%obj, osd = osd.0, end, longest, "replica shorter than another; reading the longer");
            bad.push(osd);
        } else if pick.is_none() {
            pick = Some((body, off));
        }
    }
    let (body, off) = pick.ok_or(last)?;
    Ok(slice_zero_filled(body, off, obj_off, len))
}

/// Checksum work over `len` bytes: inline when small, on a blocking
/// thread from 256 KiB, where it would hold up the worker's other requests.
async fn crc_work<T: Send + 'static>(len: usize, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    if len >= 256 * 1024 {
        tokio::task::spawn_blocking(f).await.map_err(|e| Error::Io(e.to_string()))
    } else {
        Ok(f())
    }
}

/// `Read` answers with the whole crc blocks around a range, for the client
/// to check end to end; a range much smaller than them (a 4 KiB read
/// would bring 64 KiB) is asked for exactly, and the OSD checks its blocks.
fn read_request(obj: ObjectId, off: u64, len: u64) -> OsdReq {
    let len32 = len.min(u32::MAX as u64) as u32;
    let start = off / CRC_BLOCK * CRC_BLOCK;
    let end = off.saturating_add(len).div_ceil(CRC_BLOCK).saturating_mul(CRC_BLOCK);
    let widened = (end - start).saturating_sub(len);
    if widened.saturating_mul(4) > len {
        OsdReq::ReadRange { obj, off, len: len32 }
    } else {
        OsdReq::Read { obj, off, len: len32 }
    }
}

/// A read reply's body and the object offset it starts at, once its crcs
/// check out: `Data` starts on the block boundary at or before `want` and
/// carries each block's stored crc; `Range` starts at `want`, is at most
/// `len` long and carries the crc of its bytes.
async fn checked(resp: OsdResp, body: Bytes, want: u64, len: u64) -> Result<(u64, Bytes)> {
    let (off, ok) = match resp {
        OsdResp::Data { off, crcs, .. } => {
            if off > want || off % CRC_BLOCK != 0 || want - off >= CRC_BLOCK {
                return Err(Error::Protocol(format!("a read at {want} answered at offset {off}")));
            }
            let b = body.clone();
            (off, crc_work(b.len(), move || block_crcs(off, &b) == crcs).await.unwrap_or(false))
        }
        OsdResp::Range { off, crc, .. } => {
            if off != want || body.len() as u64 > len {
                return Err(Error::Protocol(format!("a read of {len} at {want} answered with {} at {off}", body.len())));
            }
            (off, crc32c::crc32c(&body) == crc)
        }
        _ => return Err(Error::Protocol("unexpected reply to a read".into())),
    };
    if !ok {
        return Err(Error::Checksum(format!("read at {want}: bytes differ from their crc")));
    }
    Ok((off, body))
}

/// Cut `[want, want + len)` out of `body` (which starts at `body_off`),
/// padding with zeros where the body ends early.
fn slice_zero_filled(body: Bytes, body_off: u64, want: u64, len: u64) -> Bytes {
    let skip = want.saturating_sub(body_off) as usize;
    let avail = body.len().saturating_sub(skip);
    if avail as u64 >= len {
        return body.slice(skip..skip + len as usize);
    }
    let mut out = BytesMut::zeroed(len as usize);
    if avail > 0 {
        out[..avail].copy_from_slice(&body[skip..skip + avail]);
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_fill_pads_short_objects() {
        let b = Bytes::from(vec![1u8; 100]);
        let s = slice_zero_filled(b.clone(), 0, 50, 100);
        assert_eq!(&s[..50], &[1u8; 50][..]);
        assert_eq!(&s[50..], &[0u8; 50][..]);
        assert_eq!(slice_zero_filled(b, 0, 10, 20), Bytes::from(vec![1u8; 20]));
        assert_eq!(slice_zero_filled(Bytes::new(), 0, 10, 5), Bytes::from(vec![0u8; 5]));
    }
}
