//! Client sessions: open (and come back after a restart or leader
//! change, with open files and locks), heartbeat, close, evict; and the
//! sessions recorded durably so that a restart waits for them.
use crate::namespace::Namespace;
use crate::service::MdsService;
use crate::store::{IoResult, Txn, SESSIONS};
use super::Call;
use aifs_common::{Error, InodeId, Owner, Result, SessionId};
use aifs_common::proto::mds::{ClientIo, HeldLock, MdsResp};
use redb::ReadableTable;

/// A session open's outcome as its at-most-once record keeps it (two
/// u64s): the id's halves, with `reclaimed` in the top bit, which no
/// session's id has set (`SessionId::random`).
fn pack_session(id: SessionId, reclaimed: bool) -> (u64, u64) {
    let (lo, hi) = id.halves();
    (lo, hi | (reclaimed as u64) << 63)
}

fn unpack_session((lo, hi): (u64, u64)) -> (SessionId, bool) {
    (SessionId::from_halves(lo, hi & !(1 << 63)), hi >> 63 == 1)
}

/// The sessions recorded as open in the shards led here, with their
/// owners: at start, those that may hold leases on these shards' inodes.
/// A process records each session it opens in every shard it leads, so
/// that whichever process leads one of them next waits for its clients.
pub async fn stored_sessions(ns: &Namespace) -> Result<Vec<(SessionId, Owner)>> {
    let mut all = std::collections::BTreeMap::new();
    for shard in ns.led() {
        let found = shard
            .scan(|t| {
                let mut v = Vec::new();
                for r in t.open_table(SESSIONS).io()?.iter().io()? {
                    let (k, val) = r.io()?;
                    let owner = val.value().get(..32).and_then(|o| o.try_into().ok()).map(Owner);
                    match owner {
                        Some(o) => v.push((SessionId(k.value()), o)),
                        None => tracing::warn!(session = %SessionId(k.value()), "stored session has no owner; not waited for"),
                    }
                }
                Ok(v)
            })
            .await?;
        all.extend(found);
    }
    Ok(all.into_iter().collect())
}

/// Record session `id` (`stored`: its owner and name) in every shard led
/// here, all at once (each shard's commit joins the others' of the
/// moment), and drop `previous`, the sessions it replaces; `rid`'s record
/// (the open's at-most-once answer) goes with the first shard's.
async fn store_session(ns: &Namespace, id: SessionId, stored: Vec<u8>, previous: Vec<SessionId>, rid: Option<aifs_common::proto::mds::ReqId>, answer: (u64, u64)) -> Result<()> {
    in_each_led(ns, |k| {
        let (stored, previous) = (stored.clone(), previous.clone());
        move |txn: &Txn| {
            let mut t = txn.open_table(SESSIONS).io()?;
            t.insert(id.0, stored.as_slice()).io()?;
            for p in &previous {
                t.remove(p.0).io()?;
            }
            drop(t);
            match k {
                0 => crate::once::record(txn, rid, answer),
                _ => Ok(()),
            }
        }
    })
    .await
}

/// Commit `change(k)` in the `k`th shard led here, in every one of them
/// at once (each commit joins the others' of the moment).
async fn in_each_led<F>(ns: &Namespace, change: impl Fn(usize) -> F) -> Result<()>
where
    F: Fn(&Txn) -> Result<()> + Send + 'static,
{
    futures::future::try_join_all(ns.led().enumerate().map(|(k, shard)| shard.mutate(change(k)))).await?;
    Ok(())
}

impl MdsService {
    /// Sessions that ended: a restart does not wait for them.
    pub async fn forget_sessions(&self, ids: &[SessionId]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        in_each_led(&self.ns, |_| {
            let ids = ids.to_vec();
            move |txn: &Txn| {
                let mut t = txn.open_table(SESSIONS).io()?;
                for id in &ids {
                    t.remove(id.0).io()?;
                }
                Ok(())
            }
        })
        .await
    }

    pub(crate) async fn open_session(&self, c: &mut Call<'_>, name: String, dir_leases: bool, previous: Vec<SessionId>, open: Vec<InodeId>, locks: Vec<HeldLock>) -> Result<MdsResp> {
        let peer = c.peer;
        let once = c.once;
        let ns = &self.ns;
        let cl = &self.ns.cluster;
        if let Some(done) = once.done {
            let (id, reclaimed) = unpack_session(done);
            // The reply to an earlier attempt was lost: that session
            // is this client's (if this MDS has restarted since, the
            // client's next heartbeat finds it gone and it comes
            // back naming it, with its locks).
            cl.check_owner(peer, id)?;
            if cl.touch_session(id) {
                cl.bind(peer, id);
            }
            return Ok(MdsResp::Session { id, heartbeat_ms: self.session_heartbeat_ms, reclaimed, root_squash: peer.root_squash.then_some(self.anon) });
        }
        for p in &previous {
            cl.check_owner(peer, *p)?;
        }
        // Names as long as a file name at most: `session ls` shows them.
        if name.len() > 255 {
            return Err(Error::NameTooLong);
        }
        let id = cl.open_session(name.clone(), peer, dir_leases)?;
        // The one of `previous` this process waits for, if any: its locks
        // are taken again.
        let back = previous.iter().copied().find(|p| cl.waits_for(*p));
        let mut stored = peer.owner.0.to_vec();
        stored.extend_from_slice(name.as_bytes());
        // Known durably before it is answered: a restart waits for it.
        store_session(ns, id, stored, previous.clone(), once.rid, pack_session(id, back.is_some())).await?;
        // Only what lives in the shards led here counts here.
        let here = |ino: &InodeId| ns.leads(ino.shard());
        for ino in open.iter().filter(|i| here(i)) {
            // with rights unknown: a new check on the next open
            cl.opened(id, *ino, 0);
        }
        let locks: Vec<HeldLock> = locks.into_iter().filter(|l| here(&l.ino)).collect();
        let reclaimed = back.is_some_and(|p| cl.came_back(p, id, &locks));
        // Every other session it names that this process waited for is
        // back too: the same client.
        for p in previous.iter().filter(|p| Some(**p) != back) {
            cl.came_back(*p, id, &[]);
        }
        if let Some(previous) = back {
            tracing::info!(session = %id, %previous, files = open.len(), locks = locks.len(), reclaimed, "client came back");
        }
        cl.bind(peer, id);
        Ok(MdsResp::Session { id, heartbeat_ms: self.session_heartbeat_ms, reclaimed, root_squash: peer.root_squash.then_some(self.anon) })
    }

    pub(crate) async fn session_heartbeat(&self, c: &mut Call<'_>, id: SessionId, io: ClientIo) -> Result<MdsResp> {
        let peer = c.peer;
        let ns = &self.ns;
        let cl = &self.ns.cluster;
        cl.check_owner(peer, id)?;
        if !ns.cluster.touch_session(id) {
            tracing::info!(session = %id, recorded = ns.cluster.sessions.contains_key(&id), "heartbeat for a session that is not live here");
            return Err(Error::Stale);
        }
        ns.cluster.bind(peer, id);
        ns.cluster.report_io(id, io);
        Ok(MdsResp::Done)
    }

    pub(crate) async fn close_session(&self, c: &mut Call<'_>, id: SessionId) -> Result<MdsResp> {
        let peer = c.peer;
        let ns = &self.ns;
        let cl = &self.ns.cluster;
        cl.check_owner(peer, id)?;
        if ns.cluster.close_session(id) {
            self.forget_sessions(&[id]).await?;
        }
        Ok(MdsResp::Done)
    }

    pub(crate) async fn evict_session(&self, c: &mut Call<'_>, id: SessionId) -> Result<MdsResp> {
        let peer = c.peer;
        let ns = &self.ns;
        if !ns.cluster.sessions.contains_key(&id) {
            return Err(Error::NotFound);
        }
        ns.cluster.record_eviction(id, &format!("mdsctl session evict, from {}", peer.addr));
        ns.cluster.close_session(id);
        self.forget_sessions(&[id]).await?;
        Ok(MdsResp::Done)
    }
}
