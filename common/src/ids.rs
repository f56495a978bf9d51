//! Identifier newtypes. An inode number carries its owning shard in the top
//! bits (DESIGN.md, "Metadata"), so any node can route a request by number.
use rkyv::{Archive, Deserialize, Serialize};
use std::fmt;

/// splitmix64's finaliser: a cheap, well-spread 64-bit hash of a number
/// (placement of inodes and names, ids made from clocks, test patterns).
pub fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Bits of an inode number that name its shard. 8 bits allow 256 shards,
/// far more than one metadata process needs, and leave 2^56 inodes a shard.
pub const SHARD_BITS: u32 = 8;
const SEQ_BITS: u32 = 64 - SHARD_BITS;
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;
/// Most shards a cluster may have.
pub const MAX_SHARDS: u32 = 1 << SHARD_BITS;

#[derive(Archive, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[rkyv(derive(Debug))]
pub struct InodeId(pub u64);

impl InodeId {
    /// The root directory: shard 0, sequence 1. FUSE names the root 1 too,
    /// so inode numbers pass to the kernel unchanged.
    pub const ROOT: InodeId = InodeId(1);

    pub fn new(shard: u32, seq: u64) -> Self {
        debug_assert!(shard < MAX_SHARDS && seq <= SEQ_MASK);
        InodeId(((shard as u64) << SEQ_BITS) | (seq & SEQ_MASK))
    }
    pub fn shard(self) -> u32 {
        (self.0 >> SEQ_BITS) as u32
    }
    pub fn seq(self) -> u64 {
        self.0 & SEQ_MASK
    }
    /// Numbering starts at the root, 1: 0 names no inode, and a reply
    /// that carries it is malformed.
    pub fn is_valid(self) -> bool {
        self.0 != 0
    }
}

impl fmt::Debug for InodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ino:{}/{}", self.shard(), self.seq())
    }
}
impl fmt::Display for InodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}
/// `{:x}` and `{:#x}` as for the number.
impl fmt::LowerHex for InodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.0, f)
    }
}

/// One object of a striped file: object `index` of inode `ino`.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
#[rkyv(derive(Debug))]
pub struct ObjectId {
    pub ino: InodeId,
    pub index: u32,
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}.{}", self.ino, self.index)
    }
}

#[derive(Archive, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, serde::Serialize)]
#[rkyv(derive(Debug))]
#[serde(transparent)]
pub struct OsdId(pub u32);

impl fmt::Display for OsdId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "osd.{}", self.0)
    }
}

/// A client's session at the MDS: what its leases, opens and locks belong
/// to. Random (`SessionId::random`): knowing one's own says nothing of
/// another's. A reply made under no session is told apart by `Option`.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
#[rkyv(derive(Debug))]
pub struct SessionId(pub u128);

/// In JSON as its hex string: a 128-bit number does not survive most JSON
/// readers.
impl serde::Serialize for SessionId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl SessionId {
    /// Set in ids made for one request's leases (no session of its own),
    /// never in a session's: the two cannot meet.
    const EPHEMERAL: u128 = 1 << 127;

    /// A new session's id: 127 random bits, so that no client can guess
    /// another's (a session is also bound to its certificate).
    pub fn random() -> crate::Result<SessionId> {
        Ok(SessionId(u128::from_le_bytes(crate::cap::random_bytes()?) & !Self::EPHEMERAL))
    }

    /// The `n`th id for a request without a session.
    pub fn ephemeral(n: u64) -> SessionId {
        SessionId(Self::EPHEMERAL | n as u128)
    }

    /// The id's two halves, low first, for stores that keep u64s.
    pub fn halves(self) -> (u64, u64) {
        (self.0 as u64, (self.0 >> 64) as u64)
    }

    pub fn from_halves(lo: u64, hi: u64) -> SessionId {
        SessionId(((hi as u128) << 64) | lo as u128)
    }
}

/// 32 hex digits, as `mdsctl session ls` shows it and `session evict`
/// takes it.
impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl std::str::FromStr for SessionId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        u128::from_str_radix(s, 16).map(SessionId)
    }
}

/// Who a peer is: the SHA-256 of its certificate's public key (so a
/// renewed certificate, same key, is the same owner). A session belongs to
/// the owner that opened it; a revocation names owners.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Archive, Serialize, Deserialize)]
#[rkyv(derive(Debug))]
pub struct Owner(pub [u8; 32]);

/// Bytes as lower-case hex, two digits each.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes `hex` wrote; `None` for anything else.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 || !s.is_ascii() {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}

/// 64 hex digits, as `mdsctl cert ls` shows it.
impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl std::str::FromStr for Owner {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        let bytes = unhex(s).and_then(|v| <[u8; 32]>::try_from(v).ok());
        bytes.map(Owner).ok_or_else(|| crate::Error::InvalidArgument(format!("{s:?} is not 64 hex digits")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn shard_and_seq_round_trip(shard in 0u32..MAX_SHARDS, seq in 0u64..=SEQ_MASK) {
            let id = InodeId::new(shard, seq);
            prop_assert_eq!(id.shard(), shard);
            prop_assert_eq!(id.seq(), seq);
        }
    }

    #[test]
    fn root_is_fuse_root_on_shard_zero() {
        assert_eq!(InodeId::ROOT.0, 1);
        assert_eq!(InodeId::ROOT.shard(), 0);
    }
}
