//! A write transaction that keeps a record of what it changed.
//!
//! Every mutation of a shard runs against a [`Txn`]: it reads and writes
//! redb tables as before, and each insert and remove is also written down,
//! as raw key and value bytes, in a [`ChangeSet`]. The change set is what a
//! shard replicates (raft.rs): followers apply the bytes and never run the
//! mutation's logic, which may look at state only the leader has (open
//! files, sessions, the clock).
//!
//! Tables are named in a change by their place in [`TABLES`], the one list
//! of every table a shard has.
//!
//! A change set is what a follower's link carries for every mutation, so
//! it is kept small ([`Txn::take_changes`]): a row changed twice in one
//! set goes once, as it ends; a row made and removed in the set not at
//! all; and a row rewritten at the same length as a patch of its old
//! value. A directory's record, of which a create or an unlink changes
//! four numbers, goes as about 30 bytes rather than 115.
use super::tables::TABLES;
use super::IoResult;
use aifs_common::proto::frame::{encode_any, get_varint, pack, put_varint, unpack};
use aifs_common::{Error, Result};
use redb::{AccessGuard, Key, Range, ReadableTableMetadata, TableDefinition, TableHandle, TableStats, Value, WriteTransaction};
use rkyv::{Archive, Deserialize, Serialize};
use std::borrow::Borrow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::RangeBounds;

/// One row written (`value` is `Some`) or removed (`None`).
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct Change {
    /// Index into [`TABLES`]; with [`PATCHED`] set, `value` is a patch of
    /// the row's old value ([`patch`]), not the new value itself.
    pub table: u8,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// The bit of [`Change::table`] that marks a patch. Tags below it name
/// tables, so a log written before patches existed reads as it did, and
/// a build from before them refuses a patched change as naming no table.
const PATCHED: u8 = 0x80;

/// `new` as a patch of `old`, of the same length: the checksum of `new`,
/// then the two XORed with their runs of zeros left out, as frames pack
/// their headers.
fn patch(old: &[u8], new: &[u8]) -> Vec<u8> {
    let diff: Vec<u8> = old.iter().zip(new).map(|(a, b)| a ^ b).collect();
    let mut out = crc32c::crc32c(new).to_le_bytes().to_vec();
    out.extend(pack(&diff));
    out
}

/// The row `patch` makes of `old`. One that does not give the row the
/// leader had (a member whose copy differs from the leader's) is an
/// error, never applied.
fn unpatch(old: &[u8], patch: &[u8]) -> Result<Vec<u8>> {
    let bad = |why: &str| Error::Io(format!("metadata change: a patch {why}"));
    let (sum, packed) = patch.split_at_checked(4).ok_or_else(|| bad("has no checksum"))?;
    let diff = unpack(packed, old.len()).map_err(|e| bad(&e.to_string()))?;
    if diff.len() != old.len() {
        return Err(bad(&format!("of {} bytes names a row of {}", diff.len(), old.len())));
    }
    let new: Vec<u8> = old.iter().zip(diff.iter()).map(|(a, b)| a ^ b).collect();
    if crc32c::crc32c(&new).to_le_bytes() != sum {
        return Err(bad("does not fit the row it changes"));
    }
    Ok(new)
}

/// What a row held before the first change a transaction made to it.
enum Before {
    Absent,
    Held(Vec<u8>),
    /// It was there; what it held was not kept (removed by `retain`).
    Present,
}

/// A change as the transaction made it, with the row's value before it.
struct Made {
    change: Change,
    before: Before,
}

/// The rows a batch of mutations changed: each once, as the batch left it
/// ([`Txn::take_changes`]).
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug, Default)]
pub struct ChangeSet {
    pub changes: Vec<Change>,
}

impl ChangeSet {
    pub fn encode(&self) -> Result<Vec<u8>> {
        Ok(encode_any(self)?.to_vec())
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        crate::records::decode_stored(bytes)
    }

    /// The set as a log entry holds it, and a follower's link carries it:
    /// `varint count`, then each change as `table | varint key length |
    /// key | varint value length + 1 (0: removed) | value`. An archived
    /// [`Change`] spends about 20 bytes on its lengths and offsets, more
    /// than many of the rows it carries.
    pub fn to_compact(&self) -> Vec<u8> {
        let size: usize = self.changes.iter().map(|c| 8 + c.key.len() + c.value.as_ref().map_or(0, Vec::len)).sum();
        let mut out = Vec::with_capacity(size);
        put_varint(&mut out, self.changes.len());
        for c in &self.changes {
            out.push(c.table);
            put_varint(&mut out, c.key.len());
            out.extend_from_slice(&c.key);
            match &c.value {
                Some(v) => {
                    put_varint(&mut out, v.len() + 1);
                    out.extend_from_slice(v);
                }
                None => put_varint(&mut out, 0),
            }
        }
        out
    }

    /// The set [`Self::to_compact`] wrote; anything malformed is an error.
    pub fn from_compact(bytes: &[u8]) -> Result<Self> {
        let bad = |e: &str| Error::Io(format!("metadata change set: {e}"));
        let take = |at: &mut usize, n: usize| -> Result<Vec<u8>> {
            let s = bytes.get(*at..at.saturating_add(n)).ok_or_else(|| bad("truncated"))?;
            *at += n;
            Ok(s.to_vec())
        };
        let mut at = 0;
        let count = get_varint(bytes, &mut at).map_err(bad)?;
        // Each change takes three bytes at least.
        let mut changes = Vec::with_capacity(count.min(bytes.len() / 3));
        for _ in 0..count {
            let table = take(&mut at, 1)?[0];
            let n = get_varint(bytes, &mut at).map_err(bad)?;
            let key = take(&mut at, n)?;
            let value = match get_varint(bytes, &mut at).map_err(bad)? {
                0 => None,
                n => Some(take(&mut at, n - 1)?),
            };
            changes.push(Change { table, key, value });
        }
        if at != bytes.len() {
            return Err(bad(&format!("{} bytes after its {count} changes", bytes.len() - at)));
        }
        Ok(ChangeSet { changes })
    }

    /// Write every change into `txn`, in order.
    pub fn apply(&self, txn: &WriteTransaction) -> Result<()> {
        for c in &self.changes {
            let table = TABLES
                .get((c.table & !PATCHED) as usize)
                .ok_or_else(|| Error::Io(format!("metadata change names table {} of {}", c.table, TABLES.len())))?;
            match &c.value {
                Some(p) if c.table & PATCHED != 0 => {
                    let old = table.get(txn, &c.key)?.ok_or_else(|| Error::Io(format!("metadata change: a patch of a row {} does not hold", table.name())))?;
                    table.put(txn, &c.key, &unpatch(&old, p)?)?
                }
                Some(v) => table.put(txn, &c.key, v)?,
                None => table.delete(txn, &c.key)?,
            }
        }
        Ok(())
    }
}

/// A redb write transaction that records its changes.
pub struct Txn<'a> {
    inner: &'a WriteTransaction,
    log: RefCell<Vec<Made>>,
}

impl<'a> Txn<'a> {
    pub fn new(inner: &'a WriteTransaction) -> Self {
        Txn { inner, log: RefCell::new(Vec::new()) }
    }

    pub fn open_table<K: Key + 'static, V: Value + 'static>(
        &self,
        def: TableDefinition<K, V>,
    ) -> std::result::Result<Table<'_, K, V>, redb::TableError> {
        let tag = table_tag(def.name());
        Ok(Table { inner: self.inner.open_table(def)?, tag, log: &self.log })
    }

    /// The inodes whose rows this transaction removed and left removed,
    /// made in it or not (a change set leaves out a row made and removed
    /// in it). Read before [`Txn::take_changes`], which takes the record.
    pub fn removed_inodes(&self) -> Vec<u64> {
        let tag = table_tag(TableHandle::name(&super::INODES));
        let log = self.log.borrow();
        let mut last: HashMap<&[u8], bool> = HashMap::new();
        for m in log.iter().filter(|m| m.change.table == tag) {
            last.insert(&m.change.key, m.change.value.is_none());
        }
        last.into_iter().filter(|(_, removed)| *removed).filter_map(|(k, _)| <[u8; 8]>::try_from(k).ok().map(u64::from_le_bytes)).collect()
    }

    /// What the transaction changed so far, as little as says it: each
    /// row once, as the transaction left it (rows are independent, so
    /// their order does not matter); nothing for a row it made and
    /// removed; a patch for a row rewritten at the same length.
    pub fn take_changes(&self) -> ChangeSet {
        let made = std::mem::take(&mut *self.log.borrow_mut());
        let mut last: HashMap<(u8, Vec<u8>), (usize, Before)> = HashMap::with_capacity(made.len());
        let mut kept: Vec<Option<Change>> = Vec::with_capacity(made.len());
        for Made { change, before } in made {
            let row = (change.table, change.key.clone());
            match last.get_mut(&row) {
                Some((at, _)) => {
                    kept[*at] = None;
                    *at = kept.len();
                }
                None => {
                    last.insert(row, (kept.len(), before));
                }
            }
            kept.push(Some(change));
        }
        for (at, before) in last.into_values() {
            let Some(change) = kept[at].as_mut() else { continue };
            match (before, &change.value) {
                (Before::Absent, None) => kept[at] = None,
                (Before::Held(old), Some(new)) if old.len() == new.len() => {
                    let p = patch(&old, new);
                    if p.len() < new.len() {
                        change.table |= PATCHED;
                        change.value = Some(p);
                    }
                }
                _ => {}
            }
        }
        ChangeSet { changes: kept.into_iter().flatten().collect() }
    }
}

/// The place of table `name` in [`TABLES`]. Every table a mutation opens is
/// there (the registry's test checks the list against the definitions).
fn table_tag(name: &str) -> u8 {
    match TABLES.iter().position(|t| t.name() == name) {
        Some(i) => i as u8,
        // A table missing from the registry is a bug in this crate, found
        // by the first test that writes to it.
        None => panic!("table {name} is not in store::tables::TABLES"),
    }
}

/// A table of a [`Txn`]: reads as redb's, and writes are recorded.
pub struct Table<'t, K: Key + 'static, V: Value + 'static> {
    inner: redb::Table<'t, K, V>,
    tag: u8,
    log: &'t RefCell<Vec<Made>>,
}

fn bytes<T: Value>(v: &T::SelfType<'_>) -> Vec<u8> {
    T::as_bytes(v).as_ref().to_vec()
}

impl<'t, K: Key + 'static, V: Value + 'static> Table<'t, K, V> {
    fn record_removed(&self, key: Vec<u8>) {
        self.log.borrow_mut().push(Made { change: Change { table: self.tag, key, value: None }, before: Before::Present });
    }

    pub fn insert<'k, 'v>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
        value: impl Borrow<V::SelfType<'v>>,
    ) -> std::result::Result<Option<AccessGuard<'_, V>>, redb::StorageError> {
        let (k, v) = (bytes::<K>(key.borrow()), bytes::<V>(value.borrow()));
        let old = self.inner.insert(key, value)?;
        let before = old.as_ref().map_or(Before::Absent, |o| Before::Held(bytes::<V>(&o.value())));
        self.log.borrow_mut().push(Made { change: Change { table: self.tag, key: k, value: Some(v) }, before });
        Ok(old)
    }

    pub fn remove<'k>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
    ) -> std::result::Result<Option<AccessGuard<'_, V>>, redb::StorageError> {
        let k = bytes::<K>(key.borrow());
        let old = self.inner.remove(key)?;
        if old.is_some() {
            self.log.borrow_mut().push(Made { change: Change { table: self.tag, key: k, value: None }, before: Before::Present });
        }
        Ok(old)
    }

    /// Keep the rows for which `keep` says true; remove (and record) the rest.
    pub fn retain<F: for<'f> FnMut(K::SelfType<'f>, V::SelfType<'f>) -> bool>(
        &mut self,
        keep: F,
    ) -> std::result::Result<(), redb::StorageError> {
        self.retain_in::<K::SelfType<'_>, F>(.., keep)
    }

    /// Keep the rows in `range` for which `keep` says true; remove (and
    /// record) the rest.
    pub fn retain_in<'a, KR, F: for<'f> FnMut(K::SelfType<'f>, V::SelfType<'f>) -> bool>(
        &mut self,
        range: impl RangeBounds<KR> + 'a,
        mut keep: F,
    ) -> std::result::Result<(), redb::StorageError>
    where
        KR: Borrow<K::SelfType<'a>> + 'a,
    {
        let mut gone = Vec::new();
        self.inner.retain_in(range, |k, v| {
            let kb = bytes::<K>(&k);
            let kept = keep(k, v);
            if !kept {
                gone.push(kb);
            }
            kept
        })?;
        for k in gone {
            self.record_removed(k);
        }
        Ok(())
    }
}

impl<K: Key + 'static, V: Value + 'static> ReadableTableMetadata for Table<'_, K, V> {
    fn stats(&self) -> std::result::Result<TableStats, redb::StorageError> {
        self.inner.stats()
    }

    fn len(&self) -> std::result::Result<u64, redb::StorageError> {
        self.inner.len()
    }
}

impl<K: Key + 'static, V: Value + 'static> redb::ReadableTable<K, V> for Table<'_, K, V> {
    fn get<'a>(&self, key: impl Borrow<K::SelfType<'a>>) -> std::result::Result<Option<AccessGuard<'_, V>>, redb::StorageError> {
        self.inner.get(key)
    }

    fn range<'a, KR>(&self, range: impl RangeBounds<KR> + 'a) -> std::result::Result<Range<'_, K, V>, redb::StorageError>
    where
        KR: Borrow<K::SelfType<'a>> + 'a,
    {
        self.inner.range(range)
    }

    fn first(&self) -> std::result::Result<Option<(AccessGuard<'_, K>, AccessGuard<'_, V>)>, redb::StorageError> {
        self.inner.first()
    }

    fn last(&self) -> std::result::Result<Option<(AccessGuard<'_, K>, AccessGuard<'_, V>)>, redb::StorageError> {
        self.inner.last()
    }
}

/// A table of [`TABLES`], whatever its key and value types: what applying a
/// change and dumping a shard need.
pub trait AnyTable: Sync {
    fn name(&self) -> &str;
    fn create(&self, txn: &WriteTransaction) -> Result<()>;
    fn put(&self, txn: &WriteTransaction, key: &[u8], value: &[u8]) -> Result<()>;
    fn delete(&self, txn: &WriteTransaction, key: &[u8]) -> Result<()>;
    fn get(&self, txn: &WriteTransaction, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Every row, as a change that writes it.
    fn dump(&self, txn: &redb::ReadTransaction, tag: u8, out: &mut dyn FnMut(Change) -> Result<()>) -> Result<()>;
    /// Remove every row.
    fn clear(&self, txn: &WriteTransaction) -> Result<()>;
}

impl<K: Key + Sync + 'static, V: Value + Sync + 'static> AnyTable for TableDefinition<'static, K, V> {
    fn name(&self) -> &str {
        TableHandle::name(self)
    }

    fn create(&self, txn: &WriteTransaction) -> Result<()> {
        txn.open_table(*self).io()?;
        Ok(())
    }

    fn put(&self, txn: &WriteTransaction, key: &[u8], value: &[u8]) -> Result<()> {
        txn.open_table(*self).io()?.insert(K::from_bytes(key), V::from_bytes(value)).io()?;
        Ok(())
    }

    fn delete(&self, txn: &WriteTransaction, key: &[u8]) -> Result<()> {
        txn.open_table(*self).io()?.remove(K::from_bytes(key)).io()?;
        Ok(())
    }

    fn get(&self, txn: &WriteTransaction, key: &[u8]) -> Result<Option<Vec<u8>>> {
        use redb::ReadableTable;
        Ok(txn.open_table(*self).io()?.get(K::from_bytes(key)).io()?.map(|v| bytes::<V>(&v.value())))
    }

    fn dump(&self, txn: &redb::ReadTransaction, tag: u8, out: &mut dyn FnMut(Change) -> Result<()>) -> Result<()> {
        use redb::ReadableTable;
        for row in txn.open_table(*self).io()?.iter().io()? {
            let (k, v) = row.io()?;
            out(Change { table: tag, key: bytes::<K>(&k.value()), value: Some(bytes::<V>(&v.value())) })?;
        }
        Ok(())
    }

    fn clear(&self, txn: &WriteTransaction) -> Result<()> {
        txn.open_table(*self).io()?.retain(|_, _| false).io()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tables::{DENTRIES, INODES, META, ORPHANS};
    use redb::ReadableDatabase;

    fn db(dir: &std::path::Path, name: &str) -> redb::Database {
        let db = redb::Database::create(dir.join(name)).unwrap();
        let t = db.begin_write().unwrap();
        for table in TABLES {
            table.create(&t).unwrap();
        }
        t.commit().unwrap();
        db
    }

    fn dump(db: &redb::Database) -> Vec<Change> {
        let t = db.begin_read().unwrap();
        let mut rows = Vec::new();
        for (tag, table) in TABLES.iter().enumerate() {
            table.dump(&t, tag as u8, &mut |c| Ok(rows.push(c))).unwrap();
        }
        rows
    }

    /// What a transaction records, applied to another store, makes the
    /// same rows: inserts over old values, removes, and retains included.
    #[test]
    fn recorded_changes_applied_elsewhere_give_the_same_rows() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (db(dir.path(), "a.redb"), db(dir.path(), "b.redb"));
        let mut sets = Vec::new();
        for round in 0..3u64 {
            let w = a.begin_write().unwrap();
            let txn = Txn::new(&w);
            {
                let mut inodes = txn.open_table(INODES).unwrap();
                for i in 0..20u64 {
                    inodes.insert(i, format!("inode {i} round {round}").as_bytes()).unwrap();
                }
                inodes.remove(3 + round).unwrap();
                inodes.remove(1000).unwrap();
                let mut d = txn.open_table(DENTRIES).unwrap();
                d.insert((1, format!("name{round}").as_str()), (round, 1, round + 2)).unwrap();
                d.retain(|(_, name), _| name != "name0").unwrap();
                let mut o = txn.open_table(ORPHANS).unwrap();
                o.insert(round, ()).unwrap();
                o.retain_in(0..round, |k, _| k % 2 == 1).unwrap();
                let mut m = txn.open_table(META).unwrap();
                crate::store::next_counter(&mut m, "next", 7).unwrap();
            }
            let set = txn.take_changes();
            w.commit().unwrap();
            sets.push(set.encode().unwrap());
        }
        for bytes in &sets {
            let w = b.begin_write().unwrap();
            ChangeSet::decode(bytes).unwrap().apply(&w).unwrap();
            w.commit().unwrap();
        }
        let (da, db_) = (dump(&a), dump(&b));
        assert!(da.len() > 20, "the rows were written: {}", da.len());
        assert_eq!(da, db_, "the copy differs from the original");
    }

    /// A change that names no table is refused, and nothing of it is kept.
    #[test]
    fn a_change_to_an_unknown_table_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let a = db(dir.path(), "a.redb");
        let set = ChangeSet { changes: vec![Change { table: 100, key: vec![1], value: None }] };
        let w = a.begin_write().unwrap();
        assert!(matches!(set.apply(&w), Err(Error::Io(_))));
    }

    /// What one transaction of `ops` on `db` records: `(key, Some(value))`
    /// writes the inode row, `(key, None)` removes it.
    fn run(db: &redb::Database, ops: &[(u64, Option<Vec<u8>>)]) -> ChangeSet {
        let w = db.begin_write().unwrap();
        let txn = Txn::new(&w);
        {
            let mut inodes = txn.open_table(INODES).unwrap();
            for (k, v) in ops {
                match v {
                    Some(v) => drop(inodes.insert(*k, v.as_slice()).unwrap()),
                    None => drop(inodes.remove(*k).unwrap()),
                }
            }
        }
        let set = txn.take_changes();
        w.commit().unwrap();
        set
    }

    /// A row changed twice in a transaction goes once, as it ends; one made
    /// and removed in it not at all; one rewritten at its length as a
    /// patch smaller than the row.
    #[test]
    fn a_change_set_says_each_row_once_and_patches_rewrites() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (db(dir.path(), "a.redb"), db(dir.path(), "b.redb"));
        let row = |n: u8| Some([vec![7u8; 100], vec![n; 8]].concat());
        let first = run(&a, &[(1, row(1)), (2, row(1))]);
        assert_eq!(first.changes.len(), 2, "{first:?}");
        assert!(first.changes.iter().all(|c| c.table == 0 && c.value.as_ref().is_some_and(|v| v.len() == 108)));
        let second = run(&a, &[(1, row(2)), (1, row(3)), (3, row(1)), (3, None), (2, None)]);
        assert_eq!(second.changes.len(), 2, "row 1 once, row 3 not at all, row 2's removal: {second:?}");
        let patched = second.changes.iter().find(|c| c.key == 1u64.to_le_bytes()).unwrap();
        assert_eq!(patched.table, PATCHED, "row 1 goes as a patch");
        assert!(patched.value.as_ref().unwrap().len() < 20, "{patched:?}");
        for set in [first, second] {
            let w = b.begin_write().unwrap();
            ChangeSet::decode(&set.encode().unwrap()).unwrap().apply(&w).unwrap();
            w.commit().unwrap();
        }
        assert_eq!(dump(&a), dump(&b));
    }

    /// A patch applied to a row other than the one it was made from, or
    /// to no row, is refused, and the row stays as it was.
    #[test]
    fn a_patch_that_does_not_fit_its_row_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (db(dir.path(), "a.redb"), db(dir.path(), "b.redb"));
        let row = |n: u8| Some([vec![7u8; 60], vec![n; 4]].concat());
        run(&a, &[(1, row(1))]);
        let set = run(&a, &[(1, row(2))]);
        assert_eq!(set.changes[0].table, PATCHED);
        let w = b.begin_write().unwrap();
        assert!(matches!(set.apply(&w), Err(Error::Io(e)) if e.contains("does not hold")), "no row to patch");
        drop(w);
        run(&b, &[(1, row(9))]);
        let w = b.begin_write().unwrap();
        assert!(matches!(set.apply(&w), Err(Error::Io(e)) if e.contains("does not fit")), "another row");
        drop(w);
        assert_eq!(dump(&b), vec![Change { table: 0, key: 1u64.to_le_bytes().to_vec(), value: row(9) }]);
        assert!(unpatch(&[1; 8], &[1, 2]).is_err(), "too short for its checksum");
        assert!(unpatch(&[1; 8], &[0, 0, 0, 0, 0, 20, 1]).is_err(), "longer than the row");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Any transactions of writes and removes over a few rows, their
        /// change sets applied in order to another store, give its rows.
        #[test]
        fn compact_change_sets_rebuild_the_rows(
            txns in proptest::collection::vec(
                proptest::collection::vec((0u64..6, proptest::option::of((0u8..4, 1usize..40))), 0..12),
                1..6,
            )
        ) {
            let dir = tempfile::tempdir().unwrap();
            let (a, b) = (db(dir.path(), "a.redb"), db(dir.path(), "b.redb"));
            for ops in txns {
                let ops: Vec<(u64, Option<Vec<u8>>)> =
                    ops.into_iter().map(|(k, v)| (k, v.map(|(byte, len)| [vec![9u8; 30], vec![byte; len]].concat()))).collect();
                let set = run(&a, &ops);
                let w = b.begin_write().unwrap();
                set.apply(&w).unwrap();
                w.commit().unwrap();
                proptest::prop_assert_eq!(dump(&a), dump(&b));
            }
        }
    }
}
