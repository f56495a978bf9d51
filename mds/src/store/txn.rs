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
use super::tables::TABLES;
use super::IoResult;
use aifs_common::proto::frame::encode_any;
use aifs_common::{Error, Result};
use redb::{AccessGuard, Key, Range, ReadableTableMetadata, TableDefinition, TableHandle, TableStats, Value, WriteTransaction};
use rkyv::{Archive, Deserialize, Serialize};
use std::borrow::Borrow;
use std::cell::RefCell;
use std::ops::RangeBounds;

/// One row written (`value` is `Some`) or removed (`None`).
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct Change {
    /// Index into [`TABLES`].
    pub table: u8,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// The rows a batch of mutations changed, in the order they changed them.
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

    /// Write every change into `txn`, in order.
    pub fn apply(&self, txn: &WriteTransaction) -> Result<()> {
        for c in &self.changes {
            let table = TABLES
                .get(c.table as usize)
                .ok_or_else(|| Error::Io(format!("metadata change names table {} of {}", c.table, TABLES.len())))?;
            match &c.value {
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
    log: RefCell<Vec<Change>>,
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

    /// What the transaction changed so far.
    pub fn take_changes(&self) -> ChangeSet {
        ChangeSet { changes: std::mem::take(&mut *self.log.borrow_mut()) }
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
    log: &'t RefCell<Vec<Change>>,
}

fn bytes<T: Value>(v: &T::SelfType<'_>) -> Vec<u8> {
    T::as_bytes(v).as_ref().to_vec()
}

impl<'t, K: Key + 'static, V: Value + 'static> Table<'t, K, V> {
    fn record(&self, key: Vec<u8>, value: Option<Vec<u8>>) {
        self.log.borrow_mut().push(Change { table: self.tag, key, value });
    }

    pub fn insert<'k, 'v>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
        value: impl Borrow<V::SelfType<'v>>,
    ) -> std::result::Result<Option<AccessGuard<'_, V>>, redb::StorageError> {
        let (k, v) = (bytes::<K>(key.borrow()), bytes::<V>(value.borrow()));
        let old = self.inner.insert(key, value)?;
        self.log.borrow_mut().push(Change { table: self.tag, key: k, value: Some(v) });
        Ok(old)
    }

    pub fn remove<'k>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
    ) -> std::result::Result<Option<AccessGuard<'_, V>>, redb::StorageError> {
        let k = bytes::<K>(key.borrow());
        let old = self.inner.remove(key)?;
        if old.is_some() {
            self.log.borrow_mut().push(Change { table: self.tag, key: k, value: None });
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
            self.record(k, None);
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
        let set = ChangeSet { changes: vec![Change { table: 200, key: vec![1], value: None }] };
        let w = a.begin_write().unwrap();
        assert!(matches!(set.apply(&w), Err(Error::Io(_))));
    }
}
