//! Every table a shard has, and the one list of them ([`TABLES`]) that
//! replication, snapshots and opening a store go by.
use super::txn::AnyTable;
use redb::TableDefinition;

pub const INODES: TableDefinition<u64, &[u8]> = TableDefinition::new("inodes");
/// (dir, name) -> (ino, kind, cookie)
pub const DENTRIES: TableDefinition<(u64, &str), (u64, u8, u64)> = TableDefinition::new("dentries");
/// (dir, cookie) -> name: readdir order, stable under inserts and removes.
pub const COOKIES: TableDefinition<(u64, u64), &str> = TableDefinition::new("cookies");
pub const XATTRS: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("xattrs");
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub const GC: TableDefinition<u64, &[u8]> = TableDefinition::new("gc");
pub const OSDS: TableDefinition<u32, &[u8]> = TableDefinition::new("osds");
/// Secrets of the cluster (shard 0): "cap_master", from which the keys
/// that authenticate capabilities come (mds/src/caps.rs).
pub const SECRETS: TableDefinition<&str, &[u8]> = TableDefinition::new("secrets");
/// Revoked certificates (shard 0): owner (32 bytes) -> when (unix ms, 8
/// bytes LE) and the name it was issued as (mds/src/revoked.rs).
pub const REVOKED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("revoked");
/// Files with no name left that some client still had open: freed at the
/// last close (or at start, when no client has anything open).
pub const ORPHANS: TableDefinition<u64, ()> = TableDefinition::new("orphans");
/// Nameless files made by `open(O_TMPFILE)` without `O_EXCL`: a `link`
/// may still name them (an orphan that lost its names may not be named
/// again). Cleared by that link, or when the file is freed.
pub const LINKABLE: TableDefinition<u64, ()> = TableDefinition::new("linkable");
/// Object replicas that missed writes: (file inode, object index, OSD).
/// Such a replica is stale; nobody reads it until repair rewrites it.
pub const DEGRADED: TableDefinition<(u64, u32, u32), ()> = TableDefinition::new("degraded");
/// Requests that must not be applied twice, as answered: (client, request
/// number) -> (outcome, outcome, unix seconds when recorded). Written in
/// the request's own transaction (mds/src/once.rs).
pub const REQUESTS: TableDefinition<(u64, u64), (u64, u64, u64)> = TableDefinition::new("requests");
/// Client sessions (shard 0) -> their owner (the hash of the certificate
/// that opened them, 32 bytes) and the client's name. After a restart
/// the MDS waits for these to come back, each under its own certificate,
/// before answering anything that could contradict what they cached.
pub const SESSIONS: TableDefinition<u128, &[u8]> = TableDefinition::new("client_sessions");
/// Changes over several shards whose later commits may not have happened
/// yet, kept in the shard of the first commit: rolled forward at start.
pub const INTENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("intents");
/// Which later commits of an intent were made in this shard: (the
/// intent's shard, its id, the commit's number).
pub const INTENT_DONE: TableDefinition<(u32, u64, u32), ()> = TableDefinition::new("intent_done");
/// Operations coordinated by another shard's leader that this shard is
/// prepared for, its fence held (namespace/twophase.rs): (home shard,
/// operation) -> unix seconds when prepared.
pub const PREPARED: TableDefinition<(u32, u64), u64> = TableDefinition::new("prepared");

/// Inode numbers reserved for creates a client answers itself under a
/// directory's write lease (`MdsReq::Reserve`) -> the reservation
/// (records.rs): who holds it and the layout the file must have. Taken
/// by the create that uses the number.
pub const RESERVED: TableDefinition<u64, &[u8]> = TableDefinition::new("reserved");
/// Files: bytes of disk their data holds on the OSDs, as last measured
/// (meter.rs); what `st_blocks` reports.
pub const ALLOCATED: TableDefinition<u64, u64> = TableDefinition::new("allocated");

/// Every table, in the order whose index names a table in a replicated
/// change (txn.rs): add new tables at the end, never reorder.
pub static TABLES: [&dyn AnyTable; 19] = [
    &INODES, &DENTRIES, &COOKIES, &XATTRS, &META, &GC, &OSDS, &SECRETS, &REVOKED, &ORPHANS, &LINKABLE, &DEGRADED,
    &REQUESTS, &SESSIONS, &INTENTS, &INTENT_DONE, &RESERVED, &ALLOCATED, &PREPARED,
];

#[cfg(test)]
mod tests {
    use super::*;

    /// A table defined here but missing from the list would be neither
    /// replicated nor dumped: every definition must be listed, once.
    #[test]
    fn every_table_is_listed_once() {
        let src = include_str!("tables.rs");
        let defined = src.lines().filter(|l| l.starts_with("pub const ") && l.contains("TableDefinition")).count();
        let mut names: Vec<&str> = TABLES.iter().map(|t| t.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), TABLES.len(), "a table is listed twice");
        assert_eq!(defined, TABLES.len(), "a table is defined but not listed");
    }
}
