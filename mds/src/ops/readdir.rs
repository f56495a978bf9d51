//! `Readdir` and `ReaddirPlus`: a directory's entries by cookie, under
//! its read lease, with each entry's attributes for the second.
use crate::namespace::twophase::{self, ShardRead};
use crate::namespace::{attr_held, kind_from, Namespace};
use crate::service::MdsService;
use crate::store::{get_inode, ALLOCATED, COOKIES, DENTRIES, INODES, IoResult};
use super::Call;
use aifs_common::{Error, InodeId, Result};
use aifs_common::lease::LeaseKind;
use aifs_common::perm::{self, Cred};
use aifs_common::proto::mds::{Attr, DirEntry, FileKind, MdsResp};

impl Namespace {
    pub async fn readdir(&self, ino: InodeId, cookie: u64, max: u32, cred: &Cred) -> Result<(Vec<DirEntry>, bool, InodeId)> {
        let ino = ino.0;
        let max = max.clamp(1, 4096) as usize;
        let cred = cred.clone();
        self.shard_for(ino)?
            .read(move |t| {
                let d = get_inode(&t.open_table(INODES).io()?, ino)?;
                if d.kind != FileKind::Dir {
                    return Err(Error::NotDir);
                }
                perm::access(d.perms(), &cred, perm::R)?;
                let cookies = t.open_table(COOKIES).io()?;
                let dentries = t.open_table(DENTRIES).io()?;
                let mut out = Vec::new();
                let mut eof = true;
                for r in cookies.range((ino, cookie.saturating_add(1))..=(ino, u64::MAX)).io()? {
                    let (k, v) = r.io()?;
                    if out.len() >= max {
                        eof = false;
                        break;
                    }
                    let name = v.value().to_string();
                    if let Some(e) = dentries.get((ino, name.as_str())).io()? {
                        let (child, kind, _) = e.value();
                        out.push(DirEntry { name, ino: InodeId(child), kind: kind_from(kind)?, cookie: k.value().1 });
                    }
                }
                Ok((out, eof, InodeId(d.parent)))
            })
            .await
    }

    /// Entries of a readdir with their attributes: one read per shard the
    /// inodes live on, made where the shard is led. An entry whose inode
    /// vanished in between is left out.
    pub async fn with_attrs(&self, entries: Vec<DirEntry>) -> Result<Vec<(DirEntry, Attr)>> {
        let mut by_shard: std::collections::BTreeMap<u32, Vec<u64>> = std::collections::BTreeMap::new();
        for e in &entries {
            by_shard.entry(e.ino.shard()).or_default().push(e.ino.0);
        }
        let mut attrs: std::collections::HashMap<InodeId, Attr> = std::collections::HashMap::new();
        for (sh, inos) in by_shard {
            let got = match self.elsewhere(sh) {
                // (this process's copy of that shard may lag its leader's)
                Some(r) => twophase::expect_attrs(r.read(sh, ShardRead::Attrs(inos)).await?)?,
                None => self.attrs_here(sh, inos).await?,
            };
            attrs.extend(got.into_iter().map(|a| (a.ino, a)));
        }
        Ok(entries.into_iter().filter_map(|e| attrs.get(&e.ino).cloned().map(|a| (e, a))).collect())
    }

    /// The attributes of `inos`, all in shard `sh`, read from this
    /// process's copy; those not found are left out.
    pub(crate) async fn attrs_here(&self, sh: u32, inos: Vec<u64>) -> Result<Vec<Attr>> {
        let Some(shard) = self.shards.get(sh as usize) else { return Ok(Vec::new()) };
        shard
            .read(move |t| {
                let table = t.open_table(INODES).io()?;
                let held = t.open_table(ALLOCATED).io()?;
                let mut v = Vec::with_capacity(inos.len());
                for i in inos {
                    match get_inode(&table, i) {
                        Ok(r) => v.push(attr_held(&held, &r, i)?),
                        Err(Error::NotFound) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(v)
            })
            .await
    }
}

impl MdsService {
    pub(crate) async fn readdir(&self, c: &mut Call<'_>, ino: InodeId, cookie: u64, max: u32) -> Result<MdsResp> {
        let peer = c.peer;
        let cred = c.cred;
        let ns = &self.ns;
        let cl = &self.ns.cluster;
        let h = cl.reader(peer, ino);
        cl.acquire(&h, ino, LeaseKind::Read).await?;
        let (entries, eof, parent) = ns.readdir(ino, cookie, max, cred).await?;
        c.grant = h.granted();
        Ok(MdsResp::Dir { entries, eof, parent })
    }

    pub(crate) async fn readdir_plus(&self, c: &mut Call<'_>, ino: InodeId, cookie: u64, max: u32) -> Result<MdsResp> {
        let peer = c.peer;
        let cred = c.cred;
        let ns = &self.ns;
        let cl = &self.ns.cluster;
        let h = cl.reader(peer, ino);
        cl.acquire(&h, ino, LeaseKind::Read).await?;
        // Leases on the entries before their attributes are read:
        // writers of them flush first. Entries changed after the
        // read reach this client as invalidations of the directory.
        let (entries, eof, parent) = ns.readdir(ino, cookie, max, cred).await?;
        // (no lease here on an inode whose shard another process leads:
        // its changes are made there, which would not recall it)
        let (here, no_lease): (Vec<InodeId>, Vec<InodeId>) = entries.iter().map(|e| e.ino).partition(|i| ns.elsewhere(i.shard()).is_none());
        cl.acquire_read_all(&h, &here).await?;
        let (entries, attrs): (Vec<DirEntry>, Vec<Attr>) = ns.with_attrs(entries).await?.into_iter().unzip();
        c.grant = h.granted();
        Ok(MdsResp::DirPlus { entries, attrs, eof, parent, no_lease })
    }
}
