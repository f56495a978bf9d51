//! Revoked certificates (`mdsctl cert revoke`): kept in shard 0's store, so
//! a revocation outlives restarts, and held in the `Gate` the MDS's
//! handshake checks. OSDs get the list in heartbeat replies and refuse the
//! same owners; the revoked owner's open connections are closed and its
//! sessions ended at once.
use crate::namespace::Namespace;
use crate::store::{IoResult, REVOKED};
use aifs_common::proto::mds::Revocation;
use aifs_common::rpc::Gate;
use aifs_common::{Error, Owner, Result};
use redb::ReadableTable;
use std::sync::Arc;

pub struct Revocations {
    pub gate: Arc<Gate>,
}

fn decode(owner: &[u8], val: &[u8]) -> Result<Revocation> {
    let owner = Owner(owner.try_into().map_err(|_| Error::Io("stored revocation: owner is not 32 bytes".into()))?);
    let (at, name) = val.split_at_checked(8).ok_or_else(|| Error::Io("stored revocation: too short".into()))?;
    let at_ms = u64::from_le_bytes(at.try_into().map_err(|_| Error::Io("stored revocation: time".into()))?);
    Ok(Revocation { owner, name: String::from_utf8_lossy(name).into_owned(), at_ms })
}

impl Revocations {
    /// The list as stored, loaded into `gate` (the one the endpoint's
    /// handshake checks).
    pub async fn open(ns: &Namespace, gate: Arc<Gate>) -> Result<Revocations> {
        gate.revoke(Self::list(ns).await?.into_iter().map(|r| r.owner));
        Ok(Revocations { gate })
    }

    pub async fn list(ns: &Namespace) -> Result<Vec<Revocation>> {
        ns.shard(0)
            .read(|t| {
                let mut v = Vec::new();
                let table = match t.open_table(REVOKED) {
                    Ok(table) => table,
                    Err(redb::TableError::TableDoesNotExist(_)) => return Ok(v),
                    Err(e) => return Err(Error::Io(format!("revoked table: {e}"))),
                };
                for r in table.iter().io()? {
                    let (k, val) = r.io()?;
                    v.push(decode(k.value(), val.value())?);
                }
                Ok(v)
            })
            .await
    }

    /// Record `owner` as revoked (durably), then refuse it and close its
    /// connections; returns how many were closed. Revoking twice is not an
    /// error.
    pub async fn revoke(&self, ns: &Namespace, owner: Owner, name: &str) -> Result<usize> {
        if name.len() > 64 {
            return Err(Error::NameTooLong);
        }
        let mut val = aifs_common::cap::now_ms().to_le_bytes().to_vec();
        val.extend_from_slice(name.as_bytes());
        ns.shard(0)
            .mutate(move |txn| {
                let mut t = txn.open_table(REVOKED).io()?;
                if t.get(&owner.0[..]).io()?.is_none() {
                    t.insert(&owner.0[..], val.as_slice()).io()?;
                }
                Ok(())
            })
            .await?;
        Ok(self.gate.revoke([owner]))
    }

    /// What an OSD that knows `known` revoked owners is sent: all of them,
    /// if it knows fewer than there are (the list only grows).
    pub fn for_osd(&self, known: u32) -> Option<Vec<Owner>> {
        (self.gate.revoked_count() != known as usize).then(|| self.gate.revoked())
    }
}
