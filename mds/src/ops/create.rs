//! `Create` and `TmpFile`: a regular file made (or an existing one
//! opened) in its directory's shard, with the maker's write lease and
//! capability, and the directory's write lease when nobody else looks.
use crate::namespace::{add_entry, check_name, choose_layout, file_rec, kind_from, Created, Namespace};
use crate::once::{self, Once};
use crate::service::MdsService;
use crate::store::{get_inode, next_counter, DENTRIES, INODES, IoResult, META};
use super::Call;
use aifs_common::{Error, InodeId, Result};
use aifs_common::cap::{READ, WRITE};
use aifs_common::lease::LeaseKind;
use aifs_common::perm::{self, Cred};
use aifs_common::proto::mds::{Attr, FileKind, MdsResp, RESERVE_BATCH};
use aifs_common::time::now_ns;
use redb::ReadableTable;

pub(crate) fn placeholder_attr() -> Attr {
    Attr {
        ino: InodeId(0),
        kind: FileKind::File,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        size: 0,
        atime_ns: 0,
        mtime_ns: 0,
        ctime_ns: 0,
        layout: None,
        xattrs: 0,
        rdev: 0,
        allocated: None,
    }
}

impl Created {
    /// An existing file found by a non-exclusive create is answered with a
    /// fresh read of its inode, wherever it lives.
    async fn resolve(self, ns: &Namespace) -> Result<Created> {
        if self.created {
            return Ok(self);
        }
        let attr = ns.getattr(self.attr.ino).await?;
        Ok(Created { attr, created: false })
    }
}

impl Namespace {
    /// Create a regular file, or (not exclusive) open the existing one.
    pub async fn create(&self, parent: InodeId, name: &str, mode: u32, cred: &Cred, exclusive: bool, once: &Once<'_>) -> Result<Created> {
        let parent = parent.0;
        check_name(name)?;
        if let Some((ino, _)) = once.done {
            return Ok(Created { attr: self.getattr(InodeId(ino)).await?, created: true });
        }
        let rid = once.rid;
        let up = self.cluster.osds.placeable();
        let name = name.to_string();
        let cred = cred.clone();
        let _g = self.fences.shared(parent).await;
        let shard = self.shard_for(parent)?.clone();
        let sid = shard.id;
        shard
            .mutate(move |txn| {
                let now = now_ns();
                let inodes = txn.open_table(INODES).io()?;
                let p = get_inode(&inodes, parent)?;
                if p.kind != FileKind::Dir {
                    return Err(Error::NotDir);
                }
                perm::access(p.perms(), &cred, perm::X)?;
                let dentries = txn.open_table(DENTRIES).io()?;
                let existing = dentries.get((parent, name.as_str())).io()?.map(|v| v.value());
                if let Some((ino, kind, _)) = existing {
                    if exclusive {
                        return Err(Error::Exists);
                    }
                    return match kind_from(kind)? {
                        FileKind::Dir => Err(Error::IsDir),
                        // The inode may live on another shard (a link or a
                        // rename brought it here): answered from a read.
                        _ => Ok(Created { attr: Attr { ino: InodeId(ino), ..placeholder_attr() }, created: false }),
                    };
                }
                perm::may_create(p.perms(), &cred)?;
                let (uid, gid, mode) = perm::new_owner(p.perms(), &cred, FileKind::File, mode);
                let mut meta = txn.open_table(META).io()?;
                let seq = next_counter(&mut meta, "next_seq", crate::numbers::first_seq(sid))?;
                let ino = InodeId::new(sid, seq).0;
                let layout = choose_layout(p.policy.unwrap_or_default(), &up, ino)?;
                let rec = file_rec(mode, uid, gid, parent, layout, 1, now);
                drop((inodes, dentries, meta));
                add_entry(txn, p, parent, &name, ino, &rec, now)?;
                once::record(txn, rid, (ino, 0))?;
                Ok(Created { attr: rec.attr(ino), created: true })
            })
            .await?
            .resolve(self)
            .await
    }
}

impl MdsService {
    pub(crate) async fn create(&self, c: &mut Call<'_>, parent: InodeId, name: String, mode: u32, exclusive: bool) -> Result<MdsResp> {
        let peer = c.peer;
        let cred = c.cred;
        let once = c.once;
        let ns = &self.ns;
        let cl = &self.ns.cluster;
        let h = cl.holder(peer);
        if let Some(s) = h.granted() {
            cl.may_open_more(s, None)?;
        }
        cl.acquire_read_all(&h, &[parent]).await?;
        let made = ns.create(parent, &name, mode, cred, exclusive, once).await?;
        // An existing file is opened for writing like any other.
        let rights = match (made.created, made.attr.kind) {
            (true, _) => READ | WRITE,
            (false, FileKind::File) => self.rights(&h, made.attr.ino, true, cred).await?,
            (false, _) => 0,
        };
        // Created and opened: counted at once (an unlink elsewhere
        // must find it open), closed by the client later.
        let counted = made.attr.kind == FileKind::File && h.granted().is_some() && cl.counts(once.rid, once.done.is_some());
        if counted {
            cl.opened(h.id, made.attr.ino, rights);
        }
        if made.created {
            cl.invalidate(Some(h.id), vec![(parent, vec![name])]).await;
        }
        // The creator holds a write lease on the file; an existing
        // file is opened for writing like any other.
        let mut a = made.attr;
        if a.kind == FileKind::File {
            if let Err(e) = cl.acquire(&h, a.ino, LeaseKind::Write).await {
                if counted && cl.closed(h.id, a.ino) {
                    self.purge().await;
                }
                return Err(e);
            }
            if !made.created {
                cl.wait_repair(a.ino).await;
                a = ns.getattr(a.ino).await?;
            }
            c.grant = h.granted();
        }
        // Nobody else looks at the directory: this client may go
        // on making files there itself.
        let writable = match made.created && cl.try_write_dir(&h, parent) {
            true => self.writable(&h, parent, peer.owner, RESERVE_BATCH).await,
            false => None,
        };
        let cap = (a.kind == FileKind::File).then(|| self.caps.grant(&a, rights));
        Ok(self.changed_file(Some(a), &[parent], writable, cap).await)
    }

    pub(crate) async fn tmp_file(&self, c: &mut Call<'_>, parent: InodeId, mode: u32, linkable: bool) -> Result<MdsResp> {
        let peer = c.peer;
        let cred = c.cred;
        let once = c.once;
        let ns = &self.ns;
        let cl = &self.ns.cluster;
        let h = cl.holder(peer);
        // Open from birth: without a session it would be freed at once.
        let s = h.granted().ok_or_else(|| Error::InvalidArgument("a file with no name is made by a client session".into()))?;
        cl.may_open_more(s, None)?;
        let a = ns.tmpfile(parent, mode, cred, linkable, s, once).await?;
        // Nobody else can reach it before it has a name, so the
        // maker's write lease is at hand.
        if let Err(e) = cl.acquire(&h, a.ino, LeaseKind::Write).await {
            if cl.closed(s, a.ino) {
                self.purge().await;
            }
            return Err(e);
        }
        c.grant = h.granted();
        let cap = self.caps.grant(&a, READ | WRITE);
        Ok(self.changed_file(Some(a), &[], None, Some(cap)).await)
    }
}
