//! Per-file replica records: disk space held, stale (degraded) replicas,
//! and replicas moved off an OSD taken out.
use crate::store::{get_inode, put_inode, IoResult, DEGRADED, INODES, ALLOCATED};
use aifs_common::ids::InodeId;
use aifs_common::proto::mds::{Degraded, MAX_DEGRADED_LIST};
use aifs_common::{Error, OsdId, Result};
use redb::ReadableTable;
use super::{Namespace, degraded_rows};

impl Namespace {
    /// Record that `ino`'s data holds `bytes` of disk on the OSDs (a file
    /// gone since is left alone).
    pub async fn set_allocated(&self, ino: InodeId, bytes: u64) -> Result<()> {
        let ino = ino.0;
        let _g = self.fences.shared(ino).await;
        self.shard_for(ino)?
            .mutate(move |txn| {
                match get_inode(&txn.open_table(INODES).io()?, ino) {
                    Ok(_) => {}
                    Err(Error::NotFound) => return Ok(()),
                    Err(e) => return Err(e),
                }
                txn.open_table(ALLOCATED).io()?.insert(ino, bytes).io()?;
                Ok(())
            })
            .await
    }

    /// Record replicas of `ino`'s objects as stale. Each must be one of
    /// its object's replicas in the file's layout, and each object keeps
    /// one replica not recorded: a report that would leave none (every
    /// copy missed the write, so the write failed) is refused whole.
    pub async fn mark_degraded(&self, ino: InodeId, objs: Vec<Degraded>) -> Result<()> {
        let ino = ino.0;
        self.shard_for(ino)?
            .mutate(move |txn| {
                let rec = get_inode(&txn.open_table(INODES).io()?, ino)?;
                let layout = rec.layout.ok_or(Error::IsDir)?;
                let mut d = txn.open_table(DEGRADED).io()?;
                for o in &objs {
                    if o.index >= layout.stripe_count || !layout.object_osds(o.index).contains(&o.osd) {
                        return Err(Error::InvalidArgument(format!("{} holds no replica of object {} of inode {ino}", o.osd, o.index)));
                    }
                    d.insert((ino, o.index, o.osd.0), ()).io()?;
                }
                let stale = degraded_rows(&d, ino)?;
                for o in &objs {
                    let replicas = layout.object_osds(o.index);
                    if replicas.iter().all(|r| stale.contains(&Degraded { index: o.index, osd: *r })) {
                        return Err(Error::Io(format!("object {} of inode {ino:#x} would have no healthy replica left", o.index)));
                    }
                }
                Ok(())
            })
            .await
    }

    /// Stale replicas recorded: of `ino`, or of every file (the first
    /// `MAX_DEGRADED_LIST`).
    pub async fn list_degraded(&self, ino: Option<InodeId>) -> Result<Vec<(InodeId, Degraded)>> {
        let shards = match ino {
            Some(i) => vec![self.shard_for(i.0)?.clone()],
            None => self.shards.clone(),
        };
        let mut out = Vec::new();
        for s in shards {
            let left = MAX_DEGRADED_LIST.saturating_sub(out.len());
            out.extend(
                s.scan(move |t| {
                    let d = t.open_table(DEGRADED).io()?;
                    let mut v = Vec::new();
                    let rows = match ino {
                        Some(i) => d.range((i.0, 0, 0)..=(i.0, u32::MAX, u32::MAX)).io()?,
                        None => d.iter().io()?,
                    };
                    for r in rows.take(left) {
                        let (ino, index, osd) = r.io()?.0.value();
                        v.push((InodeId(ino), Degraded { index, osd: OsdId(osd) }));
                    }
                    Ok(v)
                })
                .await?,
            );
        }
        Ok(out)
    }

    /// Forget the stale-replica records of `ino` (those of object `index`
    /// and/or on `osd` if given); returns those forgotten.
    pub async fn clear_degraded(&self, ino: InodeId, index: Option<u32>, osd: Option<OsdId>) -> Result<Vec<(InodeId, Degraded)>> {
        let i = ino.0;
        self.shard_for(i)?
            .mutate(move |txn| {
                get_inode(&txn.open_table(INODES).io()?, i)?;
                let mut d = txn.open_table(DEGRADED).io()?;
                let gone: Vec<Degraded> = degraded_rows(&d, i)?
                    .into_iter()
                    .filter(|g| index.is_none_or(|k| g.index == k) && osd.is_none_or(|o| g.osd == o))
                    .collect();
                for g in &gone {
                    d.remove((i, g.index, g.osd.0)).io()?;
                }
                Ok(gone.into_iter().map(|g| (ino, g)).collect())
            })
            .await
    }

    /// Object `index` of file `ino` now lives on `to` instead of `from`
    /// (which was taken out), once `to` holds a durable copy. False when the
    /// layout no longer has `from` there (changed meanwhile).
    pub async fn move_replica(&self, ino: InodeId, index: u32, from: u32, to: u32) -> Result<bool> {
        let ino = ino.0;
        self.shard_for(ino)?
            .mutate(move |txn| {
                let mut inodes = txn.open_table(INODES).io()?;
                let mut rec = get_inode(&inodes, ino)?;
                let Some(layout) = rec.layout.as_mut() else { return Ok(false) };
                let r = layout.replicas as usize;
                let slots = index as usize * r..(index as usize + 1) * r;
                let Some(pos) = slots.clone().find(|&i| layout.osds.get(i) == Some(&OsdId(from))) else { return Ok(false) };
                if layout.osds[slots].contains(&OsdId(to)) {
                    return Ok(false);
                }
                layout.osds[pos] = OsdId(to);
                put_inode(&mut inodes, ino, &rec)?;
                txn.open_table(DEGRADED).io()?.remove((ino, index, from)).io()?;
                Ok(true)
            })
            .await
    }

    /// The stale replicas of file `ino`'s objects.
    pub async fn degraded(&self, ino: InodeId) -> Result<Vec<Degraded>> {
        let ino = ino.0;
        self.shard_for(ino)?.read(move |t| degraded_rows(&t.open_table(DEGRADED).io()?, ino)).await
    }
}
