//! At most once: requests that would differ if applied twice (create,
//! rename, unlink, …) carry a request id (`ReqId`). The shard transaction
//! that applies one also records its outcome under that id, so a retry
//! after a lost reply (a broken connection, an MDS killed between commit
//! and answer) finds the record and is answered from it. Records go when
//! the client says every earlier request was answered (`ReqId::oldest`),
//! or after `RETAIN` when the client never comes back.
use crate::store::{IoResult, ShardStore, Txn, REQUESTS};
use aifs_common::proto::mds::ReqId;
use aifs_common::Result;
use redb::ReadableTable;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Records older than this are swept: a client stops retrying long before.
pub const RETAIN: Duration = Duration::from_secs(15 * 60);

/// What a request did, in two numbers whose meaning is the request's
/// (the inode made or removed; for a rename the moved and the replaced).
pub type Outcome = (u64, u64);

fn unix_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Record `rid`'s outcome in the transaction applying it, and forget the
/// client's requests it says were answered.
pub fn record(txn: &Txn, rid: Option<ReqId>, out: Outcome) -> Result<()> {
    let Some(rid) = rid else { return Ok(()) };
    let mut t = txn.open_table(REQUESTS).io()?;
    if rid.oldest > 0 {
        t.retain_in((rid.client, 0)..(rid.client, rid.oldest), |_, _| false).io()?;
    }
    t.insert((rid.client, rid.seq), (out.0, out.1, unix_secs())).io()?;
    Ok(())
}

/// Requests with ids being served now: a retry that arrives while its
/// first attempt is still running waits for it instead of running beside it.
#[derive(Default)]
pub struct Running {
    ids: Mutex<HashSet<(u64, u64)>>,
    done: tokio::sync::Notify,
}

/// Held while a request with an id is served.
pub struct Serving<'a> {
    running: &'a Running,
    key: (u64, u64),
}

impl Drop for Serving<'_> {
    fn drop(&mut self) {
        if let Ok(mut ids) = self.running.ids.lock() {
            ids.remove(&self.key);
        }
        self.running.done.notify_waiters();
    }
}

/// A request's id, taken for serving it, and what an earlier attempt of it
/// did (a retry answered from the record).
pub struct Once<'a> {
    pub rid: Option<ReqId>,
    pub done: Option<Outcome>,
    _serving: Option<Serving<'a>>,
}

impl Once<'static> {
    /// A request without an id: applied as it comes.
    pub fn none() -> Self {
        Once { rid: None, done: None, _serving: None }
    }
}

impl Running {
    /// Serve `rid`: wait out an attempt of it still running; for a retry,
    /// or after such a wait, look for the record of one that finished (in
    /// any shard: the record is in the shard of the request's first
    /// commit).
    pub async fn begin<'a>(&'a self, rid: Option<ReqId>, shards: &[Arc<ShardStore>]) -> Result<Once<'a>> {
        let Some(r) = rid else { return Ok(Once { rid, done: None, _serving: None }) };
        let key = (r.client, r.seq);
        let mut waited = false;
        loop {
            let woken = self.done.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let fresh = self.ids.lock().map(|mut ids| ids.insert(key)).unwrap_or(true);
            if fresh {
                break;
            }
            waited = true;
            woken.await;
        }
        let serving = Serving { running: self, key };
        let mut done = None;
        if r.retry || waited {
            for s in shards.iter().filter(|s| s.held()) {
                let found = s.read(move |t| Ok(t.open_table(REQUESTS).io()?.get(key).io()?.map(|v| v.value()))).await?;
                if let Some((a, b, _)) = found {
                    tracing::info!(client = r.client, seq = r.seq, "retried request answered from its record");
                    done = Some((a, b));
                    break;
                }
            }
        }
        Ok(Once { rid, done, _serving: Some(serving) })
    }
}

/// Drop records older than `RETAIN` in one shard (clients gone for good).
pub async fn sweep(shard: &ShardStore) -> Result<()> {
    let cutoff = unix_secs().saturating_sub(RETAIN.as_secs());
    let any_old = shard
        .scan(move |t| {
            for r in t.open_table(REQUESTS).io()?.iter().io()? {
                if r.io()?.1.value().2 < cutoff {
                    return Ok(true);
                }
            }
            Ok(false)
        })
        .await?;
    if any_old {
        shard.mutate(move |txn| txn.open_table(REQUESTS).io()?.retain(|_, v| v.2 >= cutoff).io()).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn one_shard() -> (tempfile::TempDir, Arc<ShardStore>, Vec<Arc<ShardStore>>) {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(ShardStore::open(dir.path(), 0).await.unwrap());
        (dir, s.clone(), vec![s])
    }

    fn rid(seq: u64, oldest: u64) -> Option<ReqId> {
        Some(ReqId { client: 7, seq, oldest, retry: true })
    }

    #[tokio::test]
    async fn a_retry_finds_the_record_and_answered_requests_are_forgotten() {
        let (_dir, s, shards) = one_shard().await;
        let running = Running::default();
        s.mutate(|txn| record(txn, rid(1, 0), (11, 0))).await.unwrap();
        s.mutate(|txn| record(txn, rid(2, 1), (22, 5))).await.unwrap();
        assert_eq!(running.begin(rid(2, 0), &shards).await.unwrap().done, Some((22, 5)));
        assert_eq!(running.begin(rid(1, 0), &shards).await.unwrap().done, Some((11, 0)));
        // The client says everything below 3 was answered: 1 and 2 go.
        s.mutate(|txn| record(txn, rid(3, 3), (33, 0))).await.unwrap();
        assert_eq!(running.begin(rid(1, 0), &shards).await.unwrap().done, None);
        assert_eq!(running.begin(rid(2, 0), &shards).await.unwrap().done, None);
        assert_eq!(running.begin(rid(3, 0), &shards).await.unwrap().done, Some((33, 0)));
        // A first attempt does not look.
        let first = Some(ReqId { client: 7, seq: 3, oldest: 0, retry: false });
        assert_eq!(running.begin(first, &shards).await.unwrap().done, None);
    }

    #[tokio::test]
    async fn a_retry_waits_for_its_first_attempt() {
        let (_dir, s, shards) = one_shard().await;
        let running = Running::default();
        let first = running.begin(rid(9, 0), &shards).await.unwrap();
        let retry = running.begin(rid(9, 0), &shards);
        tokio::pin!(retry);
        assert!(tokio::time::timeout(Duration::from_millis(50), &mut retry).await.is_err(), "the retry ran beside its first attempt");
        s.mutate(|txn| record(txn, rid(9, 0), (99, 0))).await.unwrap();
        drop(first);
        assert_eq!(retry.await.unwrap().done, Some((99, 0)));
    }
}
