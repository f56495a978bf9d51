//! POSIX permissions, decided by the server that makes the change.
//!
//! Every MDS request carries the credentials of the process it acts for
//! (`Cred`: fsuid, fsgid and supplementary groups, as the client's kernel
//! reported them); the MDS checks them against the inodes involved with
//! the rules here, the ones Linux applies in `fs/namei.c`, `fs/attr.c`,
//! `fs/xattr.c` and `inode_init_owner`. The client's kernel checks the
//! same rules first (`default_permissions`) and answers from its caches;
//! the MDS's check is the one that holds when a client lies or its
//! caches are stale. An identity whose root is squashed has uid and gid 0
//! mapped to the anonymous ids before any check (`Cred::squash`).
//!
//! Pure functions over `Perms` (an inode's kind, mode and owner) and a
//! `Cred`: no clock, no I/O, so the tests below cover each rule.
use crate::error::{Error, Result};
use crate::proto::mds::{Attr, FileKind, SetAttr, TimeSet};
use rkyv::{Archive, Deserialize, Serialize};

/// Read, write and execute (search, for a directory), as in `access(2)`.
pub const R: u32 = 4;
pub const W: u32 = 2;
pub const X: u32 = 1;

const S_ISUID: u32 = 0o4000;
const S_ISGID: u32 = 0o2000;
const S_ISVTX: u32 = 0o1000;
const S_IXGRP: u32 = 0o010;

/// Supplementary groups kept per request: Linux's `NGROUPS_MAX` is 65536,
/// but a request that names more than this many is refused rather than
/// carried (the wire has a header limit).
pub const MAX_GROUPS: usize = 1024;

/// The uid and gid a squashed root becomes (`nobody`/`nogroup`).
pub const ANON_ID: u32 = 65534;

/// Who a request acts for.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub struct Cred {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the primary `gid` need not be listed).
    pub groups: Vec<u32>,
}

impl Cred {
    pub fn root() -> Cred {
        Cred { uid: 0, gid: 0, groups: Vec::new() }
    }

    pub fn user(uid: u32, gid: u32, groups: Vec<u32>) -> Cred {
        Cred { uid, gid, groups }
    }

    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }

    /// Root squashed: uid 0 becomes `anon_uid`, gid 0 (primary or
    /// supplementary) `anon_gid`.
    pub fn squash(mut self, anon_uid: u32, anon_gid: u32) -> Cred {
        if self.uid == 0 {
            self.uid = anon_uid;
        }
        if self.gid == 0 {
            self.gid = anon_gid;
        }
        for g in &mut self.groups {
            if *g == 0 {
                *g = anon_gid;
            }
        }
        self
    }

    /// Refuses a request naming more groups than a request may carry.
    pub fn check(&self) -> Result<()> {
        match self.groups.len() > MAX_GROUPS {
            true => Err(Error::InvalidArgument(format!("{} supplementary groups (at most {MAX_GROUPS})", self.groups.len()))),
            false => Ok(()),
        }
    }
}

/// What the rules look at in an inode.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Perms {
    pub kind: FileKind,
    /// `mode & 0o7777`.
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
}

impl From<&Attr> for Perms {
    fn from(a: &Attr) -> Perms {
        Perms { kind: a.kind, perm: a.perm, uid: a.uid, gid: a.gid }
    }
}

impl Perms {
    fn is_dir(&self) -> bool {
        self.kind == FileKind::Dir
    }

    fn owned_by(&self, c: &Cred) -> bool {
        c.uid == self.uid
    }
}

/// May `c` read, write or execute (`mask` of R, W, X) the inode? The owner
/// class, else the group class, else other decides; root may read and
/// write anything, search any directory, and execute a file with any
/// execute bit set. `EACCES` if not.
pub fn access(p: Perms, c: &Cred, mask: u32) -> Result<()> {
    let ok = if c.is_root() {
        mask & X == 0 || p.is_dir() || p.perm & 0o111 != 0
    } else {
        let bits = if p.owned_by(c) {
            p.perm >> 6
        } else if c.in_group(p.gid) {
            p.perm >> 3
        } else {
            p.perm
        };
        bits & mask & 0o7 == mask & 0o7
    };
    match ok {
        true => Ok(()),
        false => Err(Error::PermissionDenied),
    }
}

/// May `c` add a name to directory `dir`?
pub fn may_create(dir: Perms, c: &Cred) -> Result<()> {
    if !dir.is_dir() {
        return Err(Error::NotDir);
    }
    access(dir, c, W | X)
}

/// May `c` remove (or rename away) the name of an inode owned by
/// `victim_uid` from `dir`? Write and search on the directory, and in a
/// sticky directory (`/tmp`) only the file's or the directory's owner, or
/// root: `EPERM` for anyone else.
pub fn may_delete(dir: Perms, victim_uid: u32, c: &Cred) -> Result<()> {
    may_create(dir, c)?;
    if dir.perm & S_ISVTX != 0 && !c.is_root() && c.uid != victim_uid && !dir.owned_by(c) {
        return Err(Error::NotPermitted("sticky directory: only the owner removes a name".into()));
    }
    Ok(())
}

/// The owner, group and mode of a new inode made by `c` in `dir` with
/// the requested `mode` (umask applied): the group is the directory's
/// when it is setgid, and a new directory stays setgid too; a file that
/// would be setgid for a group its maker is not in loses that bit.
pub fn new_owner(dir: Perms, c: &Cred, kind: FileKind, mode: u32) -> (u32, u32, u32) {
    let mut perm = mode & 0o7777;
    if dir.perm & S_ISGID == 0 {
        return (c.uid, c.gid, perm);
    }
    let gid = dir.gid;
    if kind == FileKind::Dir {
        perm |= S_ISGID;
    } else if perm & (S_ISGID | S_IXGRP) == S_ISGID | S_IXGRP && !c.in_group(gid) && !c.is_root() {
        perm &= !S_ISGID;
    }
    (c.uid, gid, perm)
}

/// The setuid and setgid bits a write by anyone clears: setuid always,
/// setgid where group execute makes it mean "run as group".
pub fn after_write(perm: u32) -> u32 {
    let mut p = perm & !S_ISUID;
    if p & (S_ISGID | S_IXGRP) == S_ISGID | S_IXGRP {
        p &= !S_ISGID;
    }
    p
}

/// Check a setattr by `c` on an inode and adjust it as the kernel does:
/// - chmod: the owner or root; a setgid bit for a group the caller is not
///   in is dropped. Anyone who may write the file may clear its setuid
///   and setgid bits alone (a write makes the client's kernel do that).
/// - chown: the uid changes for root only; the group changes for root, or
///   for the owner to a group it is in. A file (not a directory) loses
///   its setuid bit, and setgid with group execute, on any chown.
/// - times: explicit times for the owner or root; "now" also for anyone
///   who may write it.
/// - size: anyone who may write it, or `open_for_write` (an `ftruncate`
///   on a handle opened for writing before a chmod).
pub fn setattr(p: Perms, c: &Cred, set: &mut SetAttr, open_for_write: bool) -> Result<()> {
    let owner = c.is_root() || p.owned_by(c);
    let writable = || access(p, c, W).is_ok() || open_for_write;
    if set.size.is_some() && !writable() {
        return Err(Error::PermissionDenied);
    }
    let chown = set.uid.is_some_and(|u| u != p.uid) || set.gid.is_some_and(|g| g != p.gid);
    if let Some(u) = set.uid {
        if u != p.uid && !c.is_root() {
            return Err(Error::NotPermitted("only root gives a file away".into()));
        }
    }
    if let Some(g) = set.gid {
        if g != p.gid && !c.is_root() && !(p.owned_by(c) && c.in_group(g)) {
            return Err(Error::NotPermitted(format!("not the owner, or not in group {g}")));
        }
    }
    if let Some(m) = set.mode {
        let m = m & 0o7777;
        let clears_privs_only = m == p.perm & !(S_ISUID | S_ISGID) || m == after_write(p.perm);
        if !owner && !(clears_privs_only && writable()) {
            return Err(Error::NotPermitted("only the owner changes the mode".into()));
        }
        let gid = set.gid.unwrap_or(p.gid);
        let mut m = m;
        if m & S_ISGID != 0 && !c.is_root() && !c.in_group(gid) {
            m &= !S_ISGID;
        }
        set.mode = Some(m);
    }
    if chown && p.kind != FileKind::Dir {
        let base = set.mode.unwrap_or(p.perm);
        set.mode = Some(after_write(base));
    }
    for t in [set.atime, set.mtime].into_iter().flatten() {
        match t {
            TimeSet::Now if owner || writable() => {}
            TimeSet::Now => return Err(Error::PermissionDenied),
            TimeSet::At(_) if owner => {}
            TimeSet::At(_) => return Err(Error::NotPermitted("only the owner sets a file's times".into())),
        }
    }
    Ok(())
}

/// May `c` read (`write` false) or set and remove (`write` true) the
/// extended attribute `name`? `user.` attributes follow the file's read
/// and write permission (and exist on files and directories alone);
/// `trusted.` ones are root's; `security.` and `system.` ones are set by
/// the owner or root and read by anyone.
pub fn xattr(p: Perms, c: &Cred, name: &str, write: bool) -> Result<()> {
    if name.starts_with("user.") {
        if !matches!(p.kind, FileKind::File | FileKind::Dir) {
            return Err(if write { Error::NotPermitted("user attributes on a special file".into()) } else { Error::NoXattr });
        }
        return access(p, c, if write { W } else { R });
    }
    if name.starts_with("trusted.") {
        return match c.is_root() {
            true => Ok(()),
            false => Err(if write { Error::NotPermitted("trusted attributes are root's".into()) } else { Error::NoXattr }),
        };
    }
    match !write || c.is_root() || p.owned_by(c) {
        true => Ok(()),
        false => Err(Error::NotPermitted(format!("only the owner sets {name}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(perm: u32, uid: u32, gid: u32) -> Perms {
        Perms { kind: FileKind::File, perm, uid, gid }
    }
    fn dir(perm: u32, uid: u32, gid: u32) -> Perms {
        Perms { kind: FileKind::Dir, perm, uid, gid }
    }
    fn user(uid: u32, gid: u32) -> Cred {
        Cred::user(uid, gid, vec![])
    }
    fn denied(r: Result<()>) -> bool {
        matches!(r, Err(Error::PermissionDenied))
    }
    fn eperm(r: Result<()>) -> bool {
        matches!(r, Err(Error::NotPermitted(_)))
    }

    #[test]
    fn the_first_class_that_matches_decides() {
        // The owner is refused by its own bits even where others may.
        let p = file(0o077, 1000, 100);
        assert!(denied(access(p, &user(1000, 100), R)));
        assert!(access(p, &user(2000, 100), R | W | X).is_ok());
        assert!(access(p, &user(2000, 200), R).is_ok());
        // A supplementary group counts as the group class.
        let p = file(0o640, 1000, 100);
        assert!(access(p, &Cred::user(2000, 200, vec![100]), R).is_ok());
        assert!(denied(access(p, &Cred::user(2000, 200, vec![100]), W)));
        assert!(denied(access(p, &user(2000, 200), R)));
    }

    #[test]
    fn root_reads_and_writes_all_but_executes_only_what_is_executable() {
        let p = file(0o000, 1000, 100);
        assert!(access(p, &Cred::root(), R | W).is_ok());
        assert!(denied(access(p, &Cred::root(), X)));
        assert!(access(file(0o001, 1, 1), &Cred::root(), X).is_ok());
        assert!(access(dir(0o000, 1, 1), &Cred::root(), X).is_ok());
    }

    #[test]
    fn a_squashed_root_is_nobody() {
        let c = Cred::user(0, 0, vec![0, 5]).squash(ANON_ID, ANON_ID);
        assert_eq!(c, Cred::user(ANON_ID, ANON_ID, vec![ANON_ID, 5]));
        assert!(denied(access(file(0o600, 0, 0), &c, R)));
        let c = user(1000, 100).squash(ANON_ID, ANON_ID);
        assert_eq!(c, user(1000, 100));
    }

    #[test]
    fn a_sticky_directory_keeps_others_names() {
        let tmp = dir(0o1777, 0, 0);
        assert!(may_delete(tmp, 1000, &user(1000, 100)).is_ok());
        assert!(eperm(may_delete(tmp, 1000, &user(2000, 100))));
        assert!(may_delete(tmp, 1000, &Cred::root()).is_ok());
        // The directory's owner removes anyone's.
        assert!(may_delete(dir(0o1777, 3000, 0), 1000, &user(3000, 1)).is_ok());
        // Without the sticky bit, write on the directory is enough.
        assert!(may_delete(dir(0o777, 0, 0), 1000, &user(2000, 100)).is_ok());
        assert!(denied(may_delete(dir(0o755, 0, 0), 1000, &user(1000, 100))));
        assert!(matches!(may_create(file(0o777, 0, 0), &Cred::root()), Err(Error::NotDir)));
    }

    #[test]
    fn a_setgid_directory_hands_down_its_group() {
        let d = dir(0o2775, 0, 50);
        assert_eq!(new_owner(d, &user(1000, 100), FileKind::File, 0o644), (1000, 50, 0o644));
        assert_eq!(new_owner(d, &user(1000, 100), FileKind::Dir, 0o755), (1000, 50, 0o2755));
        // setgid-executable for a group the maker is not in: dropped.
        assert_eq!(new_owner(d, &user(1000, 100), FileKind::File, 0o2755), (1000, 50, 0o755));
        assert_eq!(new_owner(d, &Cred::user(1000, 100, vec![50]), FileKind::File, 0o2755), (1000, 50, 0o2755));
        assert_eq!(new_owner(dir(0o775, 0, 50), &user(1000, 100), FileKind::File, 0o2755), (1000, 100, 0o2755));
    }

    #[test]
    fn chmod_and_chown_follow_the_owner_rules() {
        let p = file(0o6755, 1000, 100);
        let me = user(1000, 100);
        let other = user(2000, 100);
        let mut s = SetAttr { mode: Some(0o700), ..Default::default() };
        assert!(eperm(setattr(p, &other, &mut s, false)));
        assert!(setattr(p, &me, &mut s, false).is_ok());
        // setgid for a group the owner is not in is dropped.
        let mut s = SetAttr { mode: Some(0o2755), ..Default::default() };
        assert!(setattr(file(0o755, 1000, 300), &me, &mut s, false).is_ok());
        assert_eq!(s.mode, Some(0o755));
        // Only root gives a file away; the owner moves it to its groups.
        assert!(eperm(setattr(p, &me, &mut SetAttr { uid: Some(2000), ..Default::default() }, false)));
        assert!(eperm(setattr(p, &me, &mut SetAttr { gid: Some(300), ..Default::default() }, false)));
        let mut s = SetAttr { gid: Some(300), ..Default::default() };
        assert!(setattr(p, &Cred::user(1000, 100, vec![300]), &mut s, false).is_ok());
        // and a chown of a file clears setuid and executable setgid.
        assert_eq!(s.mode, Some(0o755));
        let mut s = SetAttr { uid: Some(5), ..Default::default() };
        assert!(setattr(p, &Cred::root(), &mut s, false).is_ok());
        assert_eq!(s.mode, Some(0o755));
        // A chown to the same owner is no chown.
        let mut s = SetAttr { uid: Some(1000), gid: Some(100), ..Default::default() };
        assert!(setattr(p, &me, &mut s, false).is_ok());
        assert_eq!(s.mode, None);
    }

    #[test]
    fn a_writer_may_clear_setuid_but_not_chmod() {
        let p = file(0o6775, 1000, 100);
        let writer = user(2000, 100);
        let mut s = SetAttr { mode: Some(0o0775), ..Default::default() };
        assert!(setattr(p, &writer, &mut s, false).is_ok());
        assert!(eperm(setattr(p, &writer, &mut SetAttr { mode: Some(0o777), ..Default::default() }, false)));
        assert!(eperm(setattr(p, &user(3000, 300), &mut SetAttr { mode: Some(0o0775), ..Default::default() }, false)));
        assert_eq!(after_write(0o6755), 0o755);
        assert_eq!(after_write(0o2745), 0o2745);
    }

    #[test]
    fn truncate_and_times_need_write_or_ownership() {
        let p = file(0o644, 1000, 100);
        let other = user(2000, 100);
        assert!(denied(setattr(p, &other, &mut SetAttr { size: Some(0), ..Default::default() }, false)));
        assert!(setattr(p, &other, &mut SetAttr { size: Some(0), ..Default::default() }, true).is_ok());
        assert!(denied(setattr(p, &other, &mut SetAttr { mtime: Some(TimeSet::Now), ..Default::default() }, false)));
        assert!(setattr(file(0o666, 1000, 100), &other, &mut SetAttr { mtime: Some(TimeSet::Now), ..Default::default() }, false).is_ok());
        assert!(eperm(setattr(file(0o666, 1000, 100), &other, &mut SetAttr { mtime: Some(TimeSet::At(5)), ..Default::default() }, false)));
        assert!(setattr(p, &user(1000, 1), &mut SetAttr { atime: Some(TimeSet::At(5)), ..Default::default() }, false).is_ok());
    }

    #[test]
    fn xattr_namespaces_have_their_own_rules() {
        let p = file(0o644, 1000, 100);
        assert!(xattr(p, &user(2000, 1), "user.a", false).is_ok());
        assert!(denied(xattr(p, &user(2000, 1), "user.a", true)));
        assert!(xattr(p, &user(1000, 1), "user.a", true).is_ok());
        assert!(matches!(xattr(p, &user(1000, 1), "trusted.a", false), Err(Error::NoXattr)));
        assert!(xattr(p, &Cred::root(), "trusted.a", true).is_ok());
        assert!(eperm(xattr(p, &user(2000, 1), "security.a", true)));
        assert!(xattr(p, &user(2000, 1), "security.a", false).is_ok());
        let fifo = Perms { kind: FileKind::Fifo, perm: 0o666, uid: 1000, gid: 100 };
        assert!(eperm(xattr(fifo, &user(1000, 1), "user.a", true)));
    }
}
