//! Files open per session (a file that loses its last name while open is
//! kept until the last close), and the files being repaired, which opens
//! wait for.
use super::{wait_until, Cluster};
use aifs_common::cap::WRITE;
use aifs_common::proto::mds::ReqId;
use aifs_common::{Error, InodeId, Result, SessionId};

/// Clients whose counted requests are remembered (`Cluster::counts`).
const MAX_COUNTING_CLIENTS: usize = 100_000;
/// Counted requests remembered per client: more than it has unanswered.
const MAX_COUNTED_PER_CLIENT: usize = 4096;

/// A session's opens of one file: how many (one per client-side file
/// state), and the rights over its data (`cap::READ`, `cap::WRITE`) they
/// were granted after a permission check, so that the session takes its
/// lease and capability again (after a recall, near a capability's end)
/// without a new check, as an open descriptor outlives a chmod.
#[derive(Default, Clone, Copy)]
pub(super) struct OpenCount {
    n: u32,
    rights: u8,
}


impl Cluster {

    /// Start repairing `ino` unless a client has it open. Marked before the
    /// open count is read, and an open counts itself before it looks for the
    /// mark (`wait_repair`): one of the two always sees the other.
    pub fn begin_repair(&self, ino: InodeId) -> bool {
        let Ok(mut r) = self.repairing.lock() else { return false };
        r.insert(ino);
        drop(r);
        if self.is_open(ino) {
            self.end_repair(ino);
            return false;
        }
        true
    }


    pub fn end_repair(&self, ino: InodeId) {
        if let Ok(mut r) = self.repairing.lock() {
            r.remove(&ino);
        }
        self.repaired.notify_waiters();
    }


    /// An open of `ino` (already counted) waits for a repair in progress.
    pub async fn wait_repair(&self, ino: InodeId) {
        wait_until(&self.repaired, || !self.repairing.lock().is_ok_and(|r| r.contains(&ino))).await
    }


    /// Does any client have `ino` open? During the grace after a restart
    /// any file may be: the clients of the last run have not said yet.
    pub fn is_open(&self, ino: InodeId) -> bool {
        self.in_grace() || self.opens.lock().map(|o| o.contains_key(&ino)).unwrap_or(true)
    }


    /// Does any client have `ino` open for writing (or may it, during the
    /// grace after a restart)?
    pub fn any_writer(&self, ino: InodeId) -> bool {
        self.in_grace() || self.opens.lock().map(|o| o.get(&ino).is_some_and(|by| by.values().any(|c| c.rights & WRITE != 0))).unwrap_or(true)
    }


    /// A session opened `ino` (its first handle on that client), granted
    /// `rights` over its data.
    pub fn opened(&self, session: SessionId, ino: InodeId, rights: u8) {
        self.count_open(session, ino, rights, false);
    }


    /// A session made `ino` under a directory's write lease and has it
    /// open (`DirOp::Create`, one client-side file state): counted once,
    /// however often the change comes. It comes again in a batch sent
    /// again after a lost reply, and after the client's new session
    /// already named it open; counted each time, the session's one close
    /// left it open for good, and an unlinked file's data stayed until
    /// the session ended. True if this call counted it.
    pub fn made_open(&self, session: SessionId, ino: InodeId, rights: u8) -> bool {
        self.count_open(session, ino, rights, true)
    }


    /// Should request `rid` (an open, a close, a create or nameless file
    /// that opens what it makes) change the open counts here? Not when it
    /// is sent again after a lost reply (`retried`) and an attempt of it
    /// changed them here already: an open counted twice, the client's one
    /// close left the file open until the session ended (and an unlinked
    /// file's data stayed); a close counted twice closed another open of
    /// the file. An attempt that ran at a process since dead, or before a
    /// restart, changed nothing here, and the retry does. The requests are
    /// kept until the client says they were answered (`ReqId::oldest`).
    pub fn counts(&self, rid: Option<ReqId>, retried: bool) -> bool {
        let Some(rid) = rid else { return true };
        let Ok(mut counted) = self.counted.lock() else { return true };
        if counted.len() >= MAX_COUNTING_CLIENTS && !counted.contains_key(&rid.client) {
            // Clients gone for good leave a few numbers each.
            counted.clear();
        }
        let seqs = counted.entry(rid.client).or_default();
        *seqs = seqs.split_off(&rid.oldest);
        if retried && seqs.contains(&rid.seq) {
            return false;
        }
        seqs.insert(rid.seq);
        if seqs.len() > MAX_COUNTED_PER_CLIENT {
            seqs.pop_first();
        }
        true
    }


    /// Request `rid` changed the open counts and then undid its change (an
    /// open that failed): a retry of it changes them again.
    pub fn uncount(&self, rid: Option<ReqId>) {
        let Some(rid) = rid else { return };
        if let Ok(mut counted) = self.counted.lock() {
            if let Some(seqs) = counted.get_mut(&rid.client) {
                seqs.remove(&rid.seq);
            }
        }
    }


    /// Count an open of `ino` by `session` (with `once`, only if it has
    /// none); true if counted.
    fn count_open(&self, session: SessionId, ino: InodeId, rights: u8, once: bool) -> bool {
        let Ok(mut o) = self.opens.lock() else { return false };
        let c = o.entry(ino).or_default().entry(session).or_default();
        c.rights |= rights;
        if once && c.n > 0 {
            return false;
        }
        if c.n == 0 {
            *self.open_files.entry(session).or_default() += 1;
        }
        c.n += 1;
        tracing::debug!(%session, %ino, opens = c.n, rights, "opened");
        true
    }


    /// May `session` open one more file (`limits.max_open_files`): `ino`,
    /// or a new one (`None`)? One it has open already always.
    pub fn may_open_more(&self, session: SessionId, ino: Option<InodeId>) -> Result<()> {
        let n = self.open_files.get(&session).map(|n| *n).unwrap_or(0);
        if n < self.limits.max_open_files || ino.is_some_and(|i| self.open_rights(session, i).is_some()) {
            return Ok(());
        }
        tracing::warn!(%session, open = n, "session at its limit of open files");
        Err(Error::TooManyOpen(format!("{n} files open by this client (max_open_files)")))
    }


    /// Has `session` `ino` open, with which rights over its data?
    pub fn open_rights(&self, session: SessionId, ino: InodeId) -> Option<u8> {
        let o = self.opens.lock().ok()?;
        o.get(&ino)?.get(&session).map(|c| c.rights)
    }


    /// Has `session` `ino` open for writing?
    pub fn session_writes(&self, session: SessionId, ino: InodeId) -> bool {
        self.open_rights(session, ino).is_some_and(|r| r & WRITE != 0)
    }


    /// A session closed its last handle of `ino`; true when no session has
    /// it open any more. A session that has it open no more keeps a read
    /// lease where it had a write lease (see `LeaseTable::downgrade`).
    pub fn closed(&self, session: SessionId, ino: InodeId) -> bool {
        let Ok(mut o) = self.opens.lock() else { return false };
        tracing::debug!(%session, %ino, "closed");
        if let Some(by) = o.get_mut(&ino) {
            if let Some(c) = by.get_mut(&session) {
                c.n = c.n.saturating_sub(1);
                if c.n == 0 {
                    by.remove(&session);
                    if let Some(mut n) = self.open_files.get_mut(&session) {
                        *n = n.saturating_sub(1);
                    }
                    if let Ok(mut l) = self.leases.lock() {
                        l.downgrade(session, ino);
                    }
                }
            }
            if by.is_empty() {
                o.remove(&ino);
                return true;
            }
        }
        false
    }


    /// What a session held besides leases: open counts and locks.
    pub(super) fn drop_opens(&self, session: SessionId) {
        if let Ok(mut l) = self.locks.lock() {
            l.drop_session(session);
        }
        if let Ok(mut o) = self.opens.lock() {
            o.retain(|_, by| {
                by.remove(&session);
                !by.is_empty()
            });
            self.open_files.remove(&session);
        }
    }
}
