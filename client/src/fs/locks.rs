//! POSIX and flock locks, held at the MDS; this client keeps a copy to
//! take them again after an MDS restart.
use super::*;

/// The session of every lock in this client's own copy (`held_locks`):
/// they are all this client's, whatever its session at the MDS is now.
const OWN: SessionId = SessionId(0);

impl ClientFs {
    /// Release `owner`'s locks on `ino`, if it ever took one here.
    pub async fn unlock_owner(&self, ino: InodeId, owner: u64) -> Result<()> {
        if !self.lockers.contains_key(&(ino, owner)) {
            return Ok(());
        }
        let session = self.meta.session();
        let req = MdsReq::SetLock { ino, owner, start: 0, end: u64::MAX, kind: LockKind::Unlock, pid: 0, session };
        self.mds(&req).await?;
        self.lockers.remove(&(ino, owner));
        if let Ok(mut t) = self.held_locks.lock() {
            t.unlock(ino, OWN, owner, 0, u64::MAX);
        }
        Ok(())
    }

    /// `F_GETLK`: the lock in the way of `[start, end]`, if any.
    pub async fn getlk(&self, ino: InodeId, owner: u64, start: u64, end: u64, write: bool, pid: u32) -> Result<Option<LockInfo>> {
        let session = self.meta.session();
        match self.mds(&MdsReq::GetLock { ino, owner, start, end, write, pid, session }).await? {
            MdsResp::Lock(l) => Ok(l),
            _ => Err(unexpected("GetLock")),
        }
    }

    /// `F_SETLK` / `F_SETLKW` (and `flock`). A waiting lock asks again
    /// with a growing pause until it is granted.
    pub async fn setlk(&self, ino: InodeId, owner: u64, start: u64, end: u64, kind: LockKind, pid: u32, wait: bool) -> Result<()> {
        let mut pause = LOCK_RETRY_MIN;
        loop {
            if kind != LockKind::Unlock {
                self.lockers.insert((ino, owner), ());
            }
            let session = self.meta.session();
            match self.mds(&MdsReq::SetLock { ino, owner, start, end, kind, pid, session }).await {
                Ok(_) => {
                    if let Ok(mut t) = self.held_locks.lock() {
                        match kind {
                            LockKind::Unlock => t.unlock(ino, OWN, owner, start, end),
                            k => {
                                let l = aifs_common::locks::Lock { session: OWN, owner, start, end, write: k == LockKind::Write, pid };
                                t.force(ino, l);
                            }
                        }
                    }
                    return Ok(());
                }
                Err(Error::WouldBlock(_)) if wait => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(LOCK_RETRY_MAX);
                }
                Err(e) => return Err(e),
            }
        }
    }
}
