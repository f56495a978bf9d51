//! A file's capability on this client (common/src/cap.rs): what the OSDs
//! want to see with every read and write of its objects.
//!
//! The MDS grants one with each open, create and reservation; the newest
//! that grants at least as much replaces the one held. Before an OSD call
//! the capability is renewed (`MdsReq::Cap`) once past half its life, or
//! when it lacks the rights the call needs. An OSD that still finds it
//! stale (its clock ahead, its keys rotated) gets one call more with a
//! renewed one; any other refusal is the caller's error.
//!
//! A file made under a directory's write lease is not known to the MDS
//! until that change is applied: a renewal sends the queued changes first.
use super::file::DataCtx;
use aifs_common::cap::{now_ms, Cap, READ, WRITE};
use aifs_common::proto::mds::{MdsReq, MdsResp};
use aifs_common::proto::osd::{Needs, OsdCall, OsdReq, OsdResp};
use aifs_common::{Error, InodeId, OsdId, Result};
use bytes::Bytes;
use std::sync::Mutex;

/// However skewed the clocks, a capability is renewed at most this often.
const MIN_RENEW_MS: u64 = 1000;

struct Held {
    cap: Cap,
    /// Local time at which to renew it: halfway to its end.
    renew_at_ms: u64,
}

impl Held {
    fn new(cap: Cap) -> Held {
        let now = now_ms();
        let half = cap.expires_ms.saturating_sub(now) / 2;
        Held { cap, renew_at_ms: now + half.max(MIN_RENEW_MS) }
    }
}

pub struct CapSlot {
    pub ino: InodeId,
    held: Mutex<Option<Held>>,
    /// One renewal at a time; the others wait for it and use its result.
    renewing: tokio::sync::Mutex<()>,
}

impl CapSlot {
    pub fn new(ino: InodeId, cap: Option<Cap>) -> Self {
        CapSlot { ino, held: Mutex::new(cap.map(Held::new)), renewing: tokio::sync::Mutex::new(()) }
    }

    /// A grant from the MDS. It replaces the one held if it grants as
    /// much, or if the one held is due for renewal anyway.
    pub fn set(&self, cap: Cap) {
        if cap.ino != self.ino {
            tracing::warn!(ino = %self.ino, other = %cap.ino, "capability for another file ignored");
            return;
        }
        if let Ok(mut h) = self.held.lock() {
            let keep = h.as_ref().is_some_and(|old| !cap.grants(old.cap.rights) && now_ms() < old.renew_at_ms);
            if !keep {
                *h = Some(Held::new(cap));
            }
        }
    }

    /// The capability held, if it grants `rights` and is not due.
    fn fresh(&self, rights: u8) -> Option<Cap> {
        let h = self.held.lock().ok()?;
        h.as_ref().filter(|h| h.cap.grants(rights) && now_ms() < h.renew_at_ms).map(|h| h.cap)
    }

    /// A capability granting `rights`, renewed first if need be.
    pub async fn get(&self, ctx: &DataCtx, rights: u8) -> Result<Cap> {
        match self.fresh(rights) {
            Some(c) => Ok(c),
            None => self.renew(ctx, rights, None).await,
        }
    }

    /// Ask the MDS for a new capability, unless someone renewed the one
    /// `refused` (or a due one) meanwhile.
    async fn renew(&self, ctx: &DataCtx, rights: u8, refused: Option<&Cap>) -> Result<Cap> {
        let _one = self.renewing.lock().await;
        if let Some(c) = self.fresh(rights).filter(|c| Some(c) != refused) {
            return Ok(c);
        }
        ctx.dirops.barrier().await;
        let write = rights & WRITE != 0;
        match ctx.pool.mds(&MdsReq::Cap { ino: self.ino, write }).await? {
            MdsResp::Cap(c) if c.ino == self.ino && c.grants(rights) => {
                if let Ok(mut h) = self.held.lock() {
                    *h = Some(Held::new(c));
                }
                tracing::debug!(ino = %self.ino, write, "capability renewed");
                Ok(c)
            }
            _ => Err(Error::Protocol("unexpected reply to Cap".into())),
        }
    }

    /// `req` with a capability that allows it, to send to each replica.
    pub async fn request(&self, ctx: &DataCtx, req: OsdReq) -> Result<OsdCall> {
        let cap = self.get(ctx, rights_for(&req)).await?;
        Ok(OsdCall { cap: Some(cap), req })
    }

    /// One OSD call made by `request`; a refusal as stale renews the
    /// capability and tries once more.
    pub async fn call(&self, ctx: &DataCtx, osd: OsdId, call: &OsdCall, payload: &[Bytes]) -> Result<(OsdResp, Bytes)> {
        match ctx.pool.osd_call(osd, call, payload).await {
            Err(Error::Stale) => {
                let cap = self.renew(ctx, rights_for(&call.req), call.cap.as_ref()).await?;
                let again = OsdCall { cap: Some(cap), req: call.req.clone() };
                ctx.pool.osd_call(osd, &again, payload).await
            }
            r => r,
        }
    }
}

/// The rights the OSD will want for `req` (`OsdReq::needs`, the OSD's
/// own table); a request no capability allows is sent with a read one,
/// for the OSD to refuse.
fn rights_for(req: &OsdReq) -> u8 {
    match req.needs() {
        Needs::Cap(_, rights) => rights,
        Needs::Nothing | Needs::Operator => READ,
    }
}
