//! A shard's state machine: the shard's own redb database, changed only
//! by applying the change sets of committed entries. Applying does not
//! sync: the log is what is durable, and after a crash the entries past
//! the last synced commit are applied again. A snapshot syncs the
//! database first, so the log it lets openraft purge is never needed.
//!
//! A snapshot is a file of frames (a u32 length, then rkyv bytes): a
//! [`SnapshotHeader`], then the shard's rows as change sets.
use super::codec::{decode, encode, DiskLogId, DiskStoredMembership, SnapshotHeader};
use super::{Cfg, NodeId};
use crate::store::tables::TABLES;
use crate::store::txn::{Change, ChangeSet};
use crate::store::IoResult;
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot};
use openraft::{BasicNode, Entry, EntryPayload, LogId, OptionalSend, SnapshotMeta, StorageError, StorageIOError, StoredMembership};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// "last" -> DiskLogId, "membership" -> DiskStoredMembership. Not in
/// TABLES: it is the replica's own, never replicated or dumped.
const APPLIED: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_applied");

/// Rows per change set in a snapshot file.
const CHUNK: usize = 4096;

type StResult<T> = Result<T, StorageError<NodeId>>;

fn sm_err(e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::write_state_machine(&std::io::Error::other(e.to_string())).into()
}

fn snap_err(e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::write_snapshot(None, &std::io::Error::other(e.to_string())).into()
}

use super::log::blocking;

#[derive(Clone)]
pub struct Machine {
    db: Arc<Database>,
    /// The current snapshot: `shard-N.snapshot` beside the database.
    snapshot: PathBuf,
    shard: u32,
}

fn write_frame(out: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    out.write_all(&(bytes.len() as u32).to_le_bytes())?;
    out.write_all(bytes)
}

/// The next frame, or None at the end of the file.
fn read_frame(inp: &mut impl Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match inp.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut buf = vec![0u8; u32::from_le_bytes(len) as usize];
    inp.read_exact(&mut buf)?;
    Ok(Some(buf))
}

fn read_header(inp: &mut impl Read) -> StResult<SnapshotHeader> {
    let bytes = read_frame(inp).map_err(snap_err)?.ok_or_else(|| snap_err("snapshot file is empty"))?;
    decode::<SnapshotHeader>(&bytes).map_err(snap_err)
}

fn meta_of(h: &SnapshotHeader) -> SnapshotMeta<NodeId, BasicNode> {
    SnapshotMeta {
        last_log_id: h.last_log_id.as_ref().map(LogId::from),
        last_membership: (&h.membership).into(),
        snapshot_id: h.id.clone(),
    }
}

impl Machine {
    pub fn new(db: Arc<Database>, dir: &Path, shard: u32) -> aifs_common::Result<Machine> {
        let t = db.begin_write().io()?;
        t.open_table(APPLIED).io()?;
        t.commit().io()?;
        Ok(Machine { db, snapshot: dir.join(format!("shard-{shard}.snapshot")), shard })
    }

    fn applied<T: redb::ReadableTable<&'static str, &'static [u8]>>(
        t: &T,
    ) -> StResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>)> {
        let last = match t.get("last").map_err(sm_err)? {
            Some(v) => Some(LogId::from(&decode::<DiskLogId>(v.value()).map_err(sm_err)?)),
            None => None,
        };
        let membership = match t.get("membership").map_err(sm_err)? {
            Some(v) => (&decode::<DiskStoredMembership>(v.value()).map_err(sm_err)?).into(),
            None => StoredMembership::default(),
        };
        Ok((last, membership))
    }

    /// Write the shard's rows, as of one read, to the snapshot file.
    fn build(&self) -> StResult<Snapshot<Cfg>> {
        let read = self.db.begin_read().map_err(snap_err)?;
        let (last, membership) = Self::applied(&read.open_table(APPLIED).map_err(snap_err)?)?;
        // Make every commit so far durable (the read's among them), so no
        // entry this snapshot covers is needed from the log again.
        let w = self.db.begin_write().map_err(snap_err)?;
        {
            let mut t = w.open_table(APPLIED).map_err(snap_err)?;
            let cur = t.get("last").map_err(snap_err)?.map(|v| v.value().to_vec());
            if let Some(cur) = cur {
                t.insert("last", cur.as_slice()).map_err(snap_err)?;
            }
        }
        w.commit().map_err(snap_err)?;
        let id = match &last {
            Some(l) => format!("shard{}-{}-{}-{}", self.shard, l.leader_id.term, l.index, aifs_common::time::now_ns() / 1_000_000),
            None => format!("shard{}-empty-{}", self.shard, aifs_common::time::now_ns() / 1_000_000),
        };
        let header = SnapshotHeader { id, last_log_id: last.as_ref().map(DiskLogId::from), membership: (&membership).into() };
        let tmp = self.snapshot.with_extension("snapshot.tmp");
        let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(snap_err)?);
        write_frame(&mut out, &encode(&header).map_err(snap_err)?).map_err(snap_err)?;
        let mut chunk = Vec::with_capacity(CHUNK);
        for (tag, table) in TABLES.iter().enumerate() {
            table
                .dump(&read, tag as u8, &mut |c: Change| {
                    chunk.push(c);
                    if chunk.len() == CHUNK {
                        let set = ChangeSet { changes: std::mem::take(&mut chunk) };
                        write_frame(&mut out, &set.encode()?)?;
                    }
                    Ok(())
                })
                .map_err(snap_err)?;
        }
        if !chunk.is_empty() {
            write_frame(&mut out, &ChangeSet { changes: chunk }.encode().map_err(snap_err)?).map_err(snap_err)?;
        }
        let f = out.into_inner().map_err(snap_err)?;
        f.sync_all().map_err(snap_err)?;
        std::fs::rename(&tmp, &self.snapshot).map_err(snap_err)?;
        if let Some(dir) = self.snapshot.parent() {
            crate::store::sync_dir(dir).map_err(snap_err)?;
        }
        let file = std::fs::File::open(&self.snapshot).map_err(snap_err)?;
        Ok(Snapshot { meta: meta_of(&header), snapshot: Box::new(tokio::fs::File::from_std(file)) })
    }

    /// Replace every row with the snapshot's, in one durable commit.
    fn install(&self, meta: &SnapshotMeta<NodeId, BasicNode>, received: &Path) -> StResult<()> {
        let mut inp = std::io::BufReader::new(std::fs::File::open(received).map_err(snap_err)?);
        read_header(&mut inp)?;
        let w = self.db.begin_write().map_err(snap_err)?;
        for table in TABLES {
            table.clear(&w).map_err(snap_err)?;
        }
        while let Some(frame) = read_frame(&mut inp).map_err(snap_err)? {
            ChangeSet::decode(&frame).map_err(snap_err)?.apply(&w).map_err(snap_err)?;
        }
        {
            let mut t = w.open_table(APPLIED).map_err(snap_err)?;
            match &meta.last_log_id {
                Some(l) => t.insert("last", encode(&DiskLogId::from(l)).map_err(snap_err)?.as_slice()),
                None => t.remove("last"),
            }
            .map_err(snap_err)?;
            let m = DiskStoredMembership::from(&meta.last_membership);
            t.insert("membership", encode(&m).map_err(snap_err)?.as_slice()).map_err(snap_err)?;
        }
        w.commit().map_err(snap_err)?;
        std::fs::rename(received, &self.snapshot).map_err(snap_err)?;
        Ok(())
    }
}

impl RaftSnapshotBuilder<Cfg> for Machine {
    async fn build_snapshot(&mut self) -> StResult<Snapshot<Cfg>> {
        let m = self.clone();
        blocking(move || m.build()).await
    }
}

impl RaftStateMachine<Cfg> for Machine {
    type SnapshotBuilder = Machine;

    async fn applied_state(&mut self) -> StResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>)> {
        let db = self.db.clone();
        blocking(move || Self::applied(&db.begin_read().map_err(sm_err)?.open_table(APPLIED).map_err(sm_err)?)).await
    }

    async fn apply<I>(&mut self, entries: I) -> StResult<Vec<()>>
    where
        I: IntoIterator<Item = Entry<Cfg>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry<Cfg>> = entries.into_iter().collect();
        let db = self.db.clone();
        blocking(move || {
            let mut w = db.begin_write().map_err(sm_err)?;
            w.set_durability(Durability::None).map_err(sm_err)?;
            let mut membership = None;
            for e in &entries {
                match &e.payload {
                    EntryPayload::Blank => {}
                    EntryPayload::Normal(changes) => changes.apply(&w).map_err(sm_err)?,
                    EntryPayload::Membership(m) => membership = Some(StoredMembership::new(Some(e.log_id), m.clone())),
                }
            }
            {
                let mut t = w.open_table(APPLIED).map_err(sm_err)?;
                if let Some(last) = entries.last() {
                    t.insert("last", encode(&DiskLogId::from(&last.log_id)).map_err(sm_err)?.as_slice()).map_err(sm_err)?;
                }
                if let Some(m) = membership {
                    t.insert("membership", encode(&DiskStoredMembership::from(&m)).map_err(sm_err)?.as_slice()).map_err(sm_err)?;
                }
            }
            w.commit().map_err(sm_err)?;
            Ok(vec![(); entries.len()])
        })
        .await
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StResult<Box<tokio::fs::File>> {
        let path = self.snapshot.with_extension("snapshot.recv");
        let f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path).map_err(snap_err)?;
        Ok(Box::new(tokio::fs::File::from_std(f)))
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta<NodeId, BasicNode>, snapshot: Box<tokio::fs::File>) -> StResult<()> {
        let mut data = snapshot.into_std().await;
        let (m, meta) = (self.clone(), meta.clone());
        blocking(move || {
            // Copy what was received (whatever file holds it) beside the
            // database, durably, then install from there.
            let copy = m.snapshot.with_extension("snapshot.tmp");
            data.seek(std::io::SeekFrom::Start(0)).map_err(snap_err)?;
            let mut out = std::fs::File::create(&copy).map_err(snap_err)?;
            std::io::copy(&mut data, &mut out).map_err(snap_err)?;
            out.sync_all().map_err(snap_err)?;
            let _ = std::fs::remove_file(m.snapshot.with_extension("snapshot.recv"));
            m.install(&meta, &copy)
        })
        .await
    }

    async fn get_current_snapshot(&mut self) -> StResult<Option<Snapshot<Cfg>>> {
        let path = self.snapshot.clone();
        blocking(move || {
            let mut f = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(snap_err(e)),
            };
            let header = read_header(&mut std::io::BufReader::new(&mut f))?;
            let f = std::fs::File::open(&path).map_err(snap_err)?;
            Ok(Some(Snapshot { meta: meta_of(&header), snapshot: Box::new(tokio::fs::File::from_std(f)) }))
        })
        .await
    }
}
