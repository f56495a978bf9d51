//! The MDS's side of capabilities (common/src/cap.rs, DESIGN.md "Trust"):
//! the master secret, made once at random and kept in shard 0's store so
//! that a restart keeps every capability granted before it valid, and the
//! grants that go with opens, creates, reservations and renewals.
use crate::namespace::Namespace;
use crate::store::{IoResult, SECRETS};
use redb::ReadableTable;
use aifs_common::cap::{self, Cap, CapKey, Minter, READ, WRITE};
use aifs_common::proto::mds::Attr;
use aifs_common::{Error, InodeId, Layout, Result};

const MASTER: &str = "cap_master";

/// The master secret in `t`, if made.
fn stored(t: &impl ReadableTable<&'static str, &'static [u8]>) -> Result<Option<[u8; 32]>> {
    match t.get(MASTER).io()? {
        Some(v) => Ok(Some(v.value().try_into().map_err(|_| Error::Io("stored capability secret is not 32 bytes".into()))?)),
        None => Ok(None),
    }
}

pub struct Caps {
    minter: Minter,
}

impl Caps {
    /// The cluster's master secret, made on the first start.
    pub async fn open(ns: &Namespace, term_ms: u64) -> Result<Caps> {
        let fresh: [u8; 32] = cap::random_bytes()?;
        let master = match ns.elsewhere(0) {
            // Shard 0's leader makes the secret; the others read it from
            // their copy of shard 0.
            Some(_) => ns
                .shard(0)
                .read(|t| match t.open_table(SECRETS) {
                    Ok(t) => stored(&t)?.ok_or_else(|| Error::Unavailable("shard 0's leader has not made the capability secret yet".into())),
                    Err(e) => Err(Error::Unavailable(format!("no capability secret yet: {e}"))),
                })
                .await?,
            None => {
                ns.shard(0)
                    .mutate(move |txn| {
                        let mut t = txn.open_table(SECRETS).io()?;
                        match stored(&t)? {
                            Some(m) => Ok(m),
                            None => {
                                t.insert(MASTER, &fresh[..]).io()?;
                                Ok(fresh)
                            }
                        }
                    })
                    .await?
            }
        };
        Ok(Caps { minter: Minter::new(&master, term_ms.max(1000)) })
    }

    /// `rights` (`READ`, `WRITE`) over file `a`'s objects: those of its
    /// layout (none without one).
    pub fn grant(&self, a: &Attr, rights: u8) -> Cap {
        let objects = a.layout.as_ref().map_or(0, |l| l.stripe_count);
        self.minter.grant(a.ino, rights, objects, cap::now_ms())
    }

    /// Read and write over a file to be made as `ino` with `layout`, for
    /// its maker.
    pub fn grant_new(&self, ino: InodeId, layout: &Layout) -> Cap {
        self.minter.grant(ino, READ | WRITE, layout.stripe_count, cap::now_ms())
    }

    /// What OSDs are handed with each heartbeat reply.
    pub fn keys(&self) -> Vec<CapKey> {
        self.minter.keys_around(cap::now_ms())
    }
}
