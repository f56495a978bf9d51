//! Byte-range locks (`F_GETLK`, `F_SETLK`): held per session, never
//! waited for at the MDS.
use crate::service::MdsService;
use super::Call;
use aifs_common::{Error, InodeId, Result, SessionId};
use aifs_common::locks::{Lock, Refused};
use aifs_common::proto::mds::{LockInfo, LockKind, MdsResp};

impl MdsService {
    pub(crate) async fn get_lock(&self, c: &mut Call<'_>, ino: InodeId, owner: u64, start: u64, end: u64, write: bool, pid: u32, session: Option<SessionId>) -> Result<MdsResp> {
        let peer = c.peer;
        let cl = &self.ns.cluster;
        // Without a session, a fresh id that owns no lock: every
        // lock in the way conflicts.
        let session = cl.session_for(peer, session)?.unwrap_or_else(|| cl.new_session_id());
        let want = Lock { session, owner, start, end, write, pid };
        let t = cl.locks.lock().map_err(|_| Error::Io("lock table poisoned".into()))?;
        Ok(MdsResp::Lock(t.conflict(ino, &want).map(|l| LockInfo { start: l.start, end: l.end, write: l.write, pid: l.pid })))
    }

    pub(crate) async fn set_lock(&self, c: &mut Call<'_>, ino: InodeId, owner: u64, start: u64, end: u64, kind: LockKind, pid: u32, session: Option<SessionId>) -> Result<MdsResp> {
        let peer = c.peer;
        let cl = &self.ns.cluster;
        // Locks live as long as the session: without one there is
        // no owner to give them back when the client dies.
        let Some(session) = cl.session_for(peer, session)? else {
            return Err(Error::Unavailable("no session to hold locks".into()));
        };
        let mut t = cl.locks.lock().map_err(|_| Error::Io("lock table poisoned".into()))?;
        let max = cl.limits.max_locks;
        let r = match kind {
            LockKind::Unlock => t.unlock_within(ino, session, owner, start, end, max),
            k => t.set_within(ino, Lock { session, owner, start, end, write: k == LockKind::Write, pid }, max),
        };
        match r {
            Ok(()) => Ok(MdsResp::Done),
            Err(Refused::Conflict(held)) => Err(Error::WouldBlock(format!("held by pid {} on another owner", held.pid))),
            Err(Refused::TooMany) => {
                tracing::warn!(%session, held = t.count(session), "session at its limit of lock segments");
                Err(Error::NoLocks(format!("{} lock segments held by this client (max_locks)", t.count(session))))
            }
        }
    }
}
