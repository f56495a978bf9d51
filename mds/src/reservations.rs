//! Inode numbers reserved for clients (README, "Creates under a directory
//! lease"): a client that holds a directory's write lease makes files there
//! itself, under numbers (each with its layout) the MDS set aside for its
//! certificate in the `RESERVED` table. A create applied later consumes its
//! number (`applied::create_reserved`). A client gives back the numbers
//! it will not use (`Unreserve`: the directory's lease went, or its layout
//! changed), and a periodic sweep forgets those of certificates no client
//! uses any more. What one certificate holds is bounded
//! (`SessionLimits::max_reserved`).
use crate::namespace::{choose_layout, Namespace};
use crate::records::Reservation;
use crate::store::{get_inode, next_counter, IoResult, ShardStore, INODES, META, RESERVED};
use aifs_common::ids::InodeId;
use aifs_common::proto::mds::FileKind;
use aifs_common::{Error, Layout, Owner, Result};
use dashmap::DashMap;
use redb::ReadableTable;
use std::collections::HashMap;

/// Most inode numbers one `Reserve` hands out.
pub const MAX_RESERVE: u32 = 4096;

/// Numbers reserved per certificate and not yet used or given back: up
/// with each reservation, down with each create and release, and counted
/// again from the store at start and by each sweep (so a create applied
/// twice, or a race between two reservations, is off until then only).
#[derive(Default)]
pub struct Counts(DashMap<Owner, u64>);

impl Counts {
    pub fn held(&self, owner: Owner) -> u64 {
        self.0.get(&owner).map_or(0, |n| *n)
    }

    fn add(&self, owner: Owner, n: u64) {
        *self.0.entry(owner).or_default() += n;
    }

    pub fn sub(&self, owner: Owner, n: u64) {
        if let Some(mut c) = self.0.get_mut(&owner) {
            *c = c.saturating_sub(n);
        }
    }

    fn reset(&self, counted: HashMap<Owner, u64>) {
        self.0.retain(|o, _| counted.contains_key(o));
        for (o, n) in counted {
            self.0.insert(o, n);
        }
    }
}

/// Every reservation in `shard`: its number, and its certificate if the
/// record reads.
async fn rows(shard: &ShardStore) -> Result<Vec<(u64, Option<Owner>)>> {
    shard
        .scan(|t| {
            let mut v = Vec::new();
            for r in t.open_table(RESERVED).io()?.iter().io()? {
                let (k, val) = r.io()?;
                v.push((k.value(), Reservation::decode(val.value()).map(|r| Owner(r.owner)).ok()));
            }
            Ok(v)
        })
        .await
}

impl Namespace {
    /// Reserve `count` inode numbers in `dir`'s shard for files a client
    /// will make there under the directory's write lease, each with the
    /// layout it gets from the directory's default.
    pub async fn reserve(&self, dir: InodeId, count: u32, owner: Owner) -> Result<Vec<(InodeId, Layout)>> {
        let dir = dir.0;
        let count = count.clamp(1, MAX_RESERVE) as u64;
        let held = self.reserved.held(owner);
        if held + count > self.cluster.limits.max_reserved {
            return Err(Error::TooManyOpen(format!("{held} inode numbers reserved by this client's certificate (max_reserved)")));
        }
        let up = self.cluster.osds.placeable();
        let shard = self.shard_for(dir)?.clone();
        let sid = shard.id;
        let got: Vec<(InodeId, Layout)> = shard
            .mutate(move |txn| {
                let d = get_inode(&txn.open_table(INODES).io()?, dir)?;
                if d.kind != FileKind::Dir {
                    return Err(Error::NotDir);
                }
                let policy = d.policy.unwrap_or_default();
                let mut meta = txn.open_table(META).io()?;
                let first = next_counter(&mut meta, "next_seq", crate::numbers::first_seq(sid))?;
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
            .await?;
        self.reserved.add(owner, got.len() as u64);
        Ok(got)
    }

    /// Give back `owner`'s reservations of `inos`; others' are left.
    pub async fn unreserve(&self, inos: &[InodeId], owner: Owner) -> Result<()> {
        let mut by_shard: HashMap<u32, Vec<u64>> = HashMap::new();
        for ino in inos {
            by_shard.entry(ino.shard()).or_default().push(ino.0);
        }
        for (sh, inos) in by_shard {
            let Some(shard) = self.shards.get(sh as usize) else { continue };
            let n = shard
                .mutate(move |txn| {
                    let mut t = txn.open_table(RESERVED).io()?;
                    let mut n = 0u64;
                    for ino in &inos {
                        let mine = match t.get(ino).io()? {
                            Some(v) => Reservation::decode(v.value()).is_ok_and(|r| r.owner == owner.0),
                            None => false,
                        };
                        if mine {
                            t.remove(ino).io()?;
                            n += 1;
                        }
                    }
                    Ok(n)
                })
                .await?;
            self.reserved.sub(owner, n);
        }
        Ok(())
    }

    /// Count what each certificate holds, from the store (a row that does
    /// not read goes, as in the sweep).
    pub async fn count_reservations(&self) -> Result<()> {
        self.drop_reservations(|_| true).await.map(|_| ())
    }

    /// Forget the inode numbers reserved for certificates no client uses
    /// any more (`live` is false for them): numbers a client took and then
    /// dropped (its directory lease recalled) or never used before it went.
    /// The numbers each certificate keeps are counted again.
    pub async fn drop_reservations(&self, live: impl Fn(Owner) -> bool) -> Result<usize> {
        let mut n = 0;
        let mut kept: HashMap<Owner, u64> = HashMap::new();
        for s in self.led() {
            let mut gone = Vec::new();
            for (ino, owner) in rows(s).await? {
                match owner.filter(|o| live(*o)) {
                    Some(o) => *kept.entry(o).or_default() += 1,
                    None => gone.push(ino),
                }
            }
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
        self.reserved.reset(kept);
        Ok(n)
    }
}
