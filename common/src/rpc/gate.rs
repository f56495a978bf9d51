//! Who may stay connected: the revoked certificates' owners, which the
//! handshake refuses (`tls::Identity::server_crypto`), and the live
//! connections, so that a revocation also closes the ones already made.
//! The MDS keeps the list (`mdsctl cert revoke`); OSDs get it in heartbeat
//! replies.
use crate::ids::Owner;
use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, RwLock};

/// The QUIC close code a revoked peer's connection ends with.
pub const REVOKED: u32 = 3;

#[derive(Default, Debug)]
pub struct Gate {
    revoked: RwLock<HashSet<Owner>>,
    /// Live connections by `stable_id`, with their owners.
    live: Mutex<HashMap<usize, (Owner, quinn::Connection)>>,
}

impl Gate {
    pub fn is_revoked(&self, owner: &Owner) -> bool {
        self.revoked.read().map(|r| r.contains(owner)).unwrap_or(true)
    }

    /// How many owners are revoked (the list only grows, so an OSD that
    /// knows as many knows them all).
    pub fn revoked_count(&self) -> usize {
        self.revoked.read().map(|r| r.len()).unwrap_or(0)
    }

    /// The revoked owners.
    pub fn revoked(&self) -> Vec<Owner> {
        self.revoked.read().map(|r| r.iter().copied().collect()).unwrap_or_default()
    }

    /// Track `conn` until `leave`; false (and not tracked) if its owner is
    /// revoked.
    pub fn enter(&self, owner: Owner, conn: &quinn::Connection) -> bool {
        let Ok(mut live) = self.live.lock() else { return false };
        // checked under the live lock: a revocation either sees this
        // connection in `live` or is seen here
        if self.is_revoked(&owner) {
            return false;
        }
        live.insert(conn.stable_id(), (owner, conn.clone()));
        true
    }

    pub fn leave(&self, conn: &quinn::Connection) {
        if let Ok(mut live) = self.live.lock() {
            live.remove(&conn.stable_id());
        }
    }

    /// Refuse `owners` from now on and close their live connections;
    /// returns how many were closed.
    pub fn revoke(&self, owners: impl IntoIterator<Item = Owner>) -> usize {
        let added: Vec<Owner> = match self.revoked.write() {
            Ok(mut r) => owners.into_iter().filter(|o| r.insert(*o)).collect(),
            Err(_) => return 0,
        };
        if added.is_empty() {
            return 0;
        }
        let Ok(live) = self.live.lock() else { return 0 };
        let mut closed = 0;
        for (owner, conn) in live.values() {
            if added.contains(owner) {
                conn.close(REVOKED.into(), b"certificate revoked");
                closed += 1;
            }
        }
        closed
    }
}
