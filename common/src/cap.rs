//! Capabilities: what lets a client touch a file's objects on an OSD
//! (DESIGN.md, "Trust"). A client certificate alone opens no object.
//!
//! The MDS grants a capability with each open, create, reservation and
//! lease it hands a client: the inode, the rights (read, write or both),
//! how many objects the file's layout has, an expiry and the epoch of the
//! key that authenticates it. The
//! key is HMAC-SHA256 of a master secret that only the MDS holds and the
//! epoch (one epoch per `KEY_PERIOD_S`): keys rotate by themselves, and
//! the MDS hands the OSDs, in each heartbeat reply, the keys of the epochs
//! around now, never the master secret. An OSD checks the capability of
//! every object request from a client: its MAC under the key of its epoch,
//! that it names the object's inode, that the object is one of the
//! layout's, that it grants the rights the request needs, and that it has
//! not expired. So a client makes no objects its file's layout does not
//! have. The mds and admin roles need none.
//!
//! A capability ends with its lease: the MDS renews one (`MdsReq::Cap`)
//! only for a session that still holds a lease on the file, or takes one
//! as an open would. A client that lost its lease therefore loses its
//! access within `term` at the latest, the cap's lifetime.
//!
//! Like `lease.rs`, this core never reads the clock: callers pass `now`
//! (milliseconds since the epoch, as the expiry is stated), so tests step it.
use crate::error::{Error, Result};
use crate::ids::{InodeId, ObjectId};
use ring::hmac;
use rkyv::{Archive, Deserialize, Serialize};
use std::collections::BTreeMap;

/// How long one key signs new capabilities. An OSD is handed the keys of
/// the epochs before, at and after now, so capabilities signed just
/// before a rotation still check, and a clock a little ahead does not
/// make an OSD refuse a fresh one.
pub const KEY_PERIOD_S: u64 = 3600;

/// Rights a capability grants.
pub const READ: u8 = 1;
pub const WRITE: u8 = 2;

/// Bytes of an HMAC-SHA256 tag.
const MAC_LEN: usize = 32;

/// A grant of `rights` over inode `ino`'s `objects` objects until `expires_ms`,
/// authenticated under the key of epoch `key`.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub struct Cap {
    pub ino: InodeId,
    pub rights: u8,
    /// The file's layout has objects `0..objects` (its stripe count).
    pub objects: u32,
    pub expires_ms: u64,
    pub key: u32,
    pub mac: [u8; MAC_LEN],
}

impl Cap {
    /// The bytes the MAC covers: every field but the MAC, in a fixed order.
    fn signed(&self) -> [u8; 25] {
        let mut b = [0u8; 25];
        b[..8].copy_from_slice(&self.ino.0.to_le_bytes());
        b[8] = self.rights;
        b[9..13].copy_from_slice(&self.objects.to_le_bytes());
        b[13..21].copy_from_slice(&self.expires_ms.to_le_bytes());
        b[21..].copy_from_slice(&self.key.to_le_bytes());
        b
    }

    pub fn grants(&self, rights: u8) -> bool {
        self.rights & rights == rights
    }
}

/// One epoch's key, as the MDS hands it to an OSD.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub struct CapKey {
    pub epoch: u32,
    pub key: [u8; 32],
}

fn epoch_at(now_ms: u64) -> u32 {
    u32::try_from(now_ms / 1000 / KEY_PERIOD_S).unwrap_or(u32::MAX)
}

fn mac(key: &[u8; 32], data: &[u8]) -> [u8; MAC_LEN] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data);
    let mut out = [0u8; MAC_LEN];
    out.copy_from_slice(tag.as_ref());
    out
}

/// The MDS side: derives each epoch's key from the master secret and signs.
pub struct Minter {
    master: hmac::Key,
    /// How long a capability lives (and so outlives its lease at most).
    pub term_ms: u64,
}

impl Minter {
    pub fn new(master: &[u8; 32], term_ms: u64) -> Self {
        Minter { master: hmac::Key::new(hmac::HMAC_SHA256, master), term_ms }
    }

    pub fn key(&self, epoch: u32) -> CapKey {
        let mut data = *b"aifs capability key ....";
        data[20..].copy_from_slice(&epoch.to_le_bytes());
        let tag = hmac::sign(&self.master, &data);
        let mut key = [0u8; 32];
        key.copy_from_slice(tag.as_ref());
        CapKey { epoch, key }
    }

    /// The keys an OSD needs at `now_ms`.
    pub fn keys_around(&self, now_ms: u64) -> Vec<CapKey> {
        let e = epoch_at(now_ms);
        [e.saturating_sub(1), e, e.saturating_add(1)].into_iter().map(|e| self.key(e)).collect()
    }

    pub fn grant(&self, ino: InodeId, rights: u8, objects: u32, now_ms: u64) -> Cap {
        let key = epoch_at(now_ms);
        let expires_ms = now_ms.saturating_add(self.term_ms);
        let mut cap = Cap { ino, rights, objects, expires_ms, key, mac: [0; MAC_LEN] };
        cap.mac = mac(&self.key(key).key, &cap.signed());
        cap
    }
}

/// The OSD side: the keys it was handed, and the check.
#[derive(Default)]
pub struct Keyring {
    keys: BTreeMap<u32, hmac::Key>,
}

impl Keyring {
    /// Keys from the MDS; those of epochs older than the oldest given go.
    pub fn install(&mut self, keys: &[CapKey]) {
        for k in keys {
            self.keys.entry(k.epoch).or_insert_with(|| hmac::Key::new(hmac::HMAC_SHA256, &k.key));
        }
        if let Some(oldest) = keys.iter().map(|k| k.epoch).min() {
            self.keys.retain(|e, _| *e >= oldest);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Does `cap` let its bearer do what needs `rights` on object `obj`
    /// at `now_ms`? A forged, altered or foreign capability is
    /// `Unauthorized`; an expired one, or one under a key this OSD does
    /// not have (yet), is `Stale`: the client asks the MDS for a new one.
    pub fn check(&self, cap: Option<&Cap>, obj: ObjectId, rights: u8, now_ms: u64) -> Result<()> {
        let ino = obj.ino;
        let Some(cap) = cap else {
            return Err(Error::Unauthorized("object request without a capability".into()));
        };
        let Some(key) = self.keys.get(&cap.key) else {
            return Err(Error::Stale);
        };
        // Compared in constant time: timing must not tell how much matched.
        if hmac::verify(key, &cap.signed(), &cap.mac).is_err() {
            return Err(Error::Unauthorized("capability does not verify".into()));
        }
        if cap.ino != ino {
            return Err(Error::Unauthorized(format!("capability for {} used on {ino}", cap.ino)));
        }
        if obj.index >= cap.objects {
            return Err(Error::Unauthorized(format!("{obj} is not in its file's layout of {} objects", cap.objects)));
        }
        if !cap.grants(rights) {
            return Err(Error::Unauthorized(format!("capability for {ino} does not grant this")));
        }
        if cap.expires_ms <= now_ms {
            return Err(Error::Stale);
        }
        Ok(())
    }
}

/// `N` bytes from the system's secure random source (secrets, ids that
/// must not be guessed).
pub fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    use ring::rand::SecureRandom;
    let mut b = [0u8; N];
    ring::rand::SystemRandom::new().fill(&mut b).map_err(|_| Error::Io("the system's random source failed".into()))?;
    Ok(b)
}

/// Milliseconds since the epoch, as capabilities state their expiry.
pub fn now_ms() -> u64 {
    u64::try_from(crate::time::now_ns() / 1_000_000).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T0: u64 = 1_790_000_000_000;

    fn osd_of(m: &Minter, now: u64) -> Keyring {
        let mut k = Keyring::default();
        k.install(&m.keys_around(now));
        k
    }

    fn obj(ino: u64) -> ObjectId {
        ObjectId { ino: InodeId(ino), index: 0 }
    }

    #[test]
    fn a_grant_checks_until_it_expires() {
        let m = Minter::new(&[7; 32], 60_000);
        let osd = osd_of(&m, T0);
        let cap = m.grant(InodeId(5), READ | WRITE, 3, T0);
        assert_eq!(osd.check(Some(&cap), obj(5), WRITE, T0 + 59_999), Ok(()));
        assert_eq!(osd.check(Some(&cap), obj(5), READ, T0), Ok(()));
        assert_eq!(osd.check(Some(&cap), obj(5), READ, T0 + 60_000), Err(Error::Stale));
    }

    #[test]
    fn rights_inode_and_secret_are_enforced() {
        let m = Minter::new(&[7; 32], 60_000);
        let osd = osd_of(&m, T0);
        let read = m.grant(InodeId(5), READ, 3, T0);
        assert!(matches!(osd.check(Some(&read), obj(5), WRITE, T0), Err(Error::Unauthorized(_))));
        assert!(matches!(osd.check(Some(&read), obj(6), READ, T0), Err(Error::Unauthorized(_))));
        assert!(matches!(osd.check(None, obj(5), READ, T0), Err(Error::Unauthorized(_))));
        // The layout's objects only: 0, 1 and 2 of three.
        let third = ObjectId { ino: InodeId(5), index: 2 };
        assert_eq!(osd.check(Some(&read), third, READ, T0), Ok(()));
        let fourth = ObjectId { ino: InodeId(5), index: 3 };
        assert!(matches!(osd.check(Some(&read), fourth, READ, T0), Err(Error::Unauthorized(_))));
        // Signed with another master secret: same epoch, wrong key.
        let other = Minter::new(&[8; 32], 60_000).grant(InodeId(5), READ, 3, T0);
        assert!(matches!(osd.check(Some(&other), obj(5), READ, T0), Err(Error::Unauthorized(_))));
    }

    #[test]
    fn keys_rotate_and_old_epochs_go() {
        let m = Minter::new(&[7; 32], 60_000);
        let mut osd = osd_of(&m, T0);
        let cap = m.grant(InodeId(5), READ, 1, T0);
        // Two periods later the OSD holds keys of later epochs only: a cap
        // under a key it dropped is stale, never accepted.
        osd.install(&m.keys_around(T0 + 2 * KEY_PERIOD_S * 1000));
        assert_eq!(osd.check(Some(&cap), obj(5), READ, T0), Err(Error::Stale));
        // Just across a rotation, a cap signed before it still checks.
        let edge = (T0 / 1000 / KEY_PERIOD_S + 1) * KEY_PERIOD_S * 1000;
        let before = m.grant(InodeId(5), READ, 1, edge - 1);
        let osd = osd_of(&m, edge + 1);
        assert_eq!(osd.check(Some(&before), obj(5), READ, edge + 1), Ok(()));
        assert!(Keyring::default().check(Some(&before), obj(5), READ, edge).is_err());
    }

    proptest! {
        /// Any change to any field of a capability makes it fail, except
        /// one that leaves the grant as it was.
        #[test]
        fn altered_caps_never_check(field in 0usize..6, bit in 0u32..64, by in 1u8..=255) {
            let m = Minter::new(&[3; 32], 600_000);
            let osd = osd_of(&m, T0);
            let cap = m.grant(InodeId(0x0100_0000_0000_0042), READ, 1, T0);
            let mut bad = cap;
            match field {
                0 => bad.ino = InodeId(cap.ino.0 ^ (1 << bit)),
                1 => bad.rights ^= by,
                2 => bad.expires_ms ^= 1 << bit,
                3 => bad.key ^= 1 << (bit % 32),
                4 => bad.objects ^= 1 << (bit % 32),
                _ => bad.mac[(bit % MAC_LEN as u32) as usize] ^= by,
            }
            prop_assume!(bad != cap);
            let first = ObjectId { ino: bad.ino, index: 0 };
            prop_assert!(osd.check(Some(&bad), first, bad.rights & (READ | WRITE), T0).is_err());
        }
    }
}
