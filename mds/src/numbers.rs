//! Inode numbers for operations that need one before their first commit
//! (mkdir, whose inode may live on another shard than its entry; a nameless
//! file, counted open before it exists): taken from the shard's counter a
//! block at a time and handed out from memory, so that such an operation
//! spends no commit of its own on its number. A restart or a crash skips
//! what was left of a block: a number is never given twice, some are never
//! given.
use crate::store::{next_counter, IoResult, ShardStore, META};
use aifs_common::ids::InodeId;
use aifs_common::Result;
use std::ops::Range;
use std::sync::Mutex;

/// Numbers taken from a shard's counter at once.
const BLOCK: u64 = 256;

/// The first number of a shard: 1 is the root, in shard 0.
pub fn first_seq(shard: u32) -> u64 {
    if shard == 0 {
        2
    } else {
        1
    }
}

/// What is left of each shard's block.
pub struct Numbers(Vec<Mutex<Range<u64>>>);

impl Numbers {
    pub fn new(shards: usize) -> Numbers {
        Numbers((0..shards).map(|_| Mutex::new(0..0)).collect())
    }

    /// A number of `shard` never given before.
    pub async fn take(&self, shard: &ShardStore) -> Result<InodeId> {
        self.take_with(shard.id, block(shard)).await
    }

    /// A number of shard `sid` never given before, from a block `refill`
    /// takes (at that shard's leader, [`block`]) if none is left here.
    pub async fn take_with(&self, sid: u32, refill: impl std::future::Future<Output = Result<u64>>) -> Result<InodeId> {
        let Some(left) = self.0.get(sid as usize) else {
            return Err(aifs_common::Error::Stale);
        };
        if let Some(seq) = left.lock().ok().and_then(|mut r| r.next()) {
            return Ok(InodeId::new(sid, seq));
        }
        let start = refill.await?;
        // Two callers that both found the block empty each took one; the
        // later one's replaces the other's remainder (skipped, not reused).
        if let Ok(mut r) = left.lock() {
            *r = start + 1..start + BLOCK;
        }
        Ok(InodeId::new(sid, start))
    }
}

/// Take a block of [`BLOCK`] numbers from `shard`'s counter (a commit;
/// this process leads the shard): its first number.
pub async fn block(shard: &ShardStore) -> Result<u64> {
    let sid = shard.id;
    shard
        .mutate(move |txn| {
            let mut meta = txn.open_table(META).io()?;
            let cur = next_counter(&mut meta, "next_seq", first_seq(sid))?;
            meta.insert("next_seq", cur + BLOCK).io()?;
            Ok(cur)
        })
        .await
}
