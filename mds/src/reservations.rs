//! Inode numbers reserved for clients (README, "Creates under a directory
//! lease"): a client that holds a directory's write lease makes files there
//! itself, under numbers (each with its layout) the MDS set aside for its
//! certificate in the `RESERVED` table. A create applied later consumes its
//! number (`namespace::create_reserved`); numbers of certificates no client
//! uses any more are forgotten by a periodic sweep.
use crate::namespace::{choose_layout, Namespace};
use crate::records::Reservation;
use crate::store::{get_inode, next_counter, IoResult, INODES, META, RESERVED};
use aifs_common::ids::InodeId;
use aifs_common::proto::mds::FileKind;
use aifs_common::{Error, Layout, Owner, Result};
use redb::ReadableTable;

/// Most inode numbers one `Reserve` hands out.
pub const MAX_RESERVE: u32 = 4096;

impl Namespace {
    /// Reserve `count` inode numbers in `dir`'s shard for files a client
    /// will make there under the directory's write lease, each with the
    /// layout it gets from the directory's default.
    pub async fn reserve(&self, dir: InodeId, count: u32, owner: Owner) -> Result<Vec<(InodeId, Layout)>> {
        let dir = dir.0;
        let count = count.clamp(1, MAX_RESERVE) as u64;
        let up = self.cluster.placeable_osds();
        let shard = self.shard_for(dir)?.clone();
        let sid = shard.id;
        shard
            .mutate(move |txn| {
                let d = get_inode(&txn.open_table(INODES).io()?, dir)?;
                if d.kind != FileKind::Dir {
                    return Err(Error::NotDir);
                }
                let policy = d.policy.unwrap_or_default();
                let mut meta = txn.open_table(META).io()?;
                let first = next_counter(&mut meta, "next_seq", if sid == 0 { 2 } else { 1 })?;
                meta.insert("next_seq", first + count).io()?;
                let mut reserved = txn.open_table(RESERVED).io()?;
                (first..first + count)
                    .map(|seq| {
                        let ino = InodeId::new(sid, seq).0;
                        let layout = choose_layout(policy, &up, ino)?;
                        reserved.insert(ino, Reservation { owner: owner.0, layout: layout.clone() }.encode()?.as_slice()).io()?;
                        Ok((InodeId(ino), layout))
                    })
                    .collect()
            })
            .await
    }

    /// Forget the inode numbers reserved for certificates no client uses
    /// any more (`live` is false for them): numbers a client took and then
    /// dropped (its directory lease recalled) or never used before it went.
    pub async fn drop_reservations(&self, live: impl Fn(Owner) -> bool) -> Result<usize> {
        let mut n = 0;
        for s in &self.shards {
            let rows = s
                .read(|t| {
                    let mut v = Vec::new();
                    for r in t.open_table(RESERVED).io()?.iter().io()? {
                        let (k, val) = r.io()?;
                        v.push((k.value(), Reservation::decode(val.value()).map(|r| Owner(r.owner)).ok()));
                    }
                    Ok(v)
                })
                .await?;
            let gone: Vec<u64> = rows.into_iter().filter(|(_, o)| !o.is_some_and(&live)).map(|(ino, _)| ino).collect();
            if gone.is_empty() {
                continue;
            }
            n += gone.len();
            s.mutate(move |txn| {
                let mut t = txn.open_table(RESERVED).io()?;
                for ino in &gone {
                    t.remove(ino).io()?;
                }
                Ok(())
            })
            .await?;
        }
        Ok(n)
    }
}
