//! Records and rows shared by the operations: a new file's and a new
//! directory's records, entering and removing a name, attributes with
//! the space held, stale-replica rows.
use crate::records::InodeRec;
use crate::store::{Txn, get_inode, put_inode, IoResult, COOKIES, DENTRIES, INODES};
use aifs_common::proto::mds::{Attr, Degraded, FileKind};
use aifs_common::perm::{self, Cred};
use aifs_common::{Error, Layout, LayoutPolicy, OsdId, Result};
use redb::ReadableTable;
use super::{FIRST_COOKIE, shard_of, kind_code, kind_from, drop_last_link};

/// `rec`'s attributes, with the disk space its data held on the OSDs
/// when last measured (`held`: the `ALLOCATED` table).
pub(crate) fn attr_held(held: &impl ReadableTable<u64, u64>, rec: &InodeRec, ino: u64) -> Result<Attr> {
    let mut a = rec.attr(ino);
    a.allocated = held.get(ino).io()?.map(|v| v.value());
    Ok(a)
}

/// The stale replicas recorded for file `ino`.
pub(crate) fn degraded_rows(t: &impl ReadableTable<(u64, u32, u32), ()>, ino: u64) -> Result<Vec<Degraded>> {
    let mut out = Vec::new();
    for r in t.range((ino, 0, 0)..=(ino, u32::MAX, u32::MAX)).io()? {
        let (k, _) = r.io()?;
        let (_, index, osd) = k.value();
        out.push(Degraded { index, osd: OsdId(osd) });
    }
    Ok(out)
}

pub(crate) fn dir_rec(perm: u32, uid: u32, gid: u32, parent: u64, policy: Option<LayoutPolicy>, now: i64) -> InodeRec {
    InodeRec {
        kind: FileKind::Dir,
        perm: perm & 0o7777,
        nlink: 2,
        uid,
        gid,
        size: 0,
        atime_ns: now,
        mtime_ns: now,
        ctime_ns: now,
        layout: None,
        policy,
        parent,
        next_cookie: FIRST_COOKIE,
        entries: 0,
        target: None,
        xattrs: 0,
    }
}

/// What `unlink_here` did.
pub(crate) enum Unlinked {
    /// The name is gone (or was already: a change applied again); the
    /// inode it named.
    Done(u64),
    /// The inode lives on another shard: a two-shard unlink is needed.
    Elsewhere,
}

/// Remove `name` from `parent` inside the parent shard's transaction,
/// when its inode lives there too. `expect`: the inode the caller knows
/// the name as; a missing name is then not an error (already applied).
pub(crate) fn unlink_here(
    txn: &Txn,
    parent: u64,
    name: &str,
    expect: Option<u64>,
    now: i64,
    open: &dyn Fn(u64) -> bool,
    cred: &Cred,
) -> Result<Unlinked> {
    let mut inodes = txn.open_table(INODES).io()?;
    let mut p = get_inode(&inodes, parent)?;
    if p.kind != FileKind::Dir {
        return Err(Error::NotDir);
    }
    perm::access(p.perms(), cred, perm::X)?;
    let mut dentries = txn.open_table(DENTRIES).io()?;
    let (ino, kind, cookie) = match (dentries.get((parent, name)).io()?.map(|v| v.value()), expect) {
        (Some(v), _) => v,
        (None, Some(ino)) => return Ok(Unlinked::Done(ino)),
        (None, None) => return Err(Error::NotFound),
    };
    if expect.is_some_and(|e| e != ino) {
        return Err(Error::Stale);
    }
    if kind_from(kind)? == FileKind::Dir {
        return Err(Error::IsDir);
    }
    if shard_of(ino) != shard_of(parent) {
        return Ok(Unlinked::Elsewhere);
    }
    let mut rec = get_inode(&inodes, ino)?;
    perm::may_delete(p.perms(), rec.uid, cred)?;
    dentries.remove((parent, name)).io()?;
    txn.open_table(COOKIES).io()?.remove((parent, cookie)).io()?;
    p.entries = p.entries.saturating_sub(1);
    p.mtime_ns = now;
    p.ctime_ns = now;
    put_inode(&mut inodes, parent, &p)?;
    rec.nlink = rec.nlink.saturating_sub(1);
    rec.ctime_ns = now;
    if rec.nlink == 0 {
        drop(inodes);
        drop(dentries);
        drop_last_link(txn, ino, &rec, open)?;
    } else {
        put_inode(&mut inodes, ino, &rec)?;
    }
    Ok(Unlinked::Done(ino))
}

/// A new regular file's record: with one name, or none (`nlink` 0, a
/// nameless file: nameless.rs).
pub(crate) fn file_rec(mode: u32, uid: u32, gid: u32, parent: u64, layout: Layout, nlink: u32, now: i64) -> InodeRec {
    InodeRec {
        kind: FileKind::File,
        perm: mode & 0o7777,
        nlink,
        uid,
        gid,
        size: 0,
        atime_ns: now,
        mtime_ns: now,
        ctime_ns: now,
        layout: Some(layout),
        policy: None,
        parent,
        next_cookie: 0,
        entries: 0,
        target: None,
        xattrs: 0,
    }
}

/// Enter a new inode `ino` (in the parent's shard) as `name` in `parent`,
/// whose record `p` the caller read and checked.
pub(crate) fn add_entry(txn: &Txn, mut p: InodeRec, parent: u64, name: &str, ino: u64, rec: &InodeRec, now: i64) -> Result<()> {
    let cookie = p.next_cookie;
    p.next_cookie += 1;
    p.entries += 1;
    p.mtime_ns = now;
    p.ctime_ns = now;
    txn.open_table(DENTRIES).io()?.insert((parent, name), (ino, kind_code(rec.kind), cookie)).io()?;
    txn.open_table(COOKIES).io()?.insert((parent, cookie), name).io()?;
    let mut inodes = txn.open_table(INODES).io()?;
    put_inode(&mut inodes, parent, &p)?;
    put_inode(&mut inodes, ino, rec)
}
