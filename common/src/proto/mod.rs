//! Wire messages: one request and one response enum per service, rkyv
//! encoded and validated on receipt (frame.rs). Variants are only ever
//! appended, never reordered: the enum index is the request number on the
//! wire, and the golden-frame tests below break on any drift.
pub mod frame;
pub mod mds;
pub mod osd;
pub mod requests;
pub mod status;

pub use frame::{Message, MAX_HEADER, MAX_PAYLOAD};

#[cfg(test)]
mod tests {
    use super::frame::{framed_header, pack, unpack, Message, MAX_HEADER};
    use super::mds::{MdsCall, MdsReq, MdsResp};
    use crate::perm::Cred;
    use super::osd::{OsdReq, OsdResp};
    use crate::ids::{InodeId, ObjectId};
    use proptest::prelude::*;
    use rkyv::util::AlignedVec;

    fn aligned(b: &[u8]) -> AlignedVec {
        let mut a = AlignedVec::new();
        a.extend_from_slice(b);
        a
    }

    /// Golden frames: these bytes are the wire format. A change here breaks
    /// every deployed peer; bump the ALPN id when it must change.
    #[test]
    fn golden_lookup_frame() {
        let req = MdsReq::Lookup { parent: InodeId::ROOT, name: "ckpt".into() };
        let bytes = req.encode().unwrap();
        assert_eq!(bytes.as_slice(), GOLDEN_LOOKUP, "MdsReq::Lookup encoding drifted: {:?}", bytes.as_slice());
        assert_eq!(MdsReq::decode(&aligned(GOLDEN_LOOKUP)).unwrap(), req);
    }

    #[test]
    fn golden_write_frame() {
        let req = OsdReq::Write { obj: ObjectId { ino: InodeId(0x0200_0000_0000_0005), index: 2 }, off: 65536, len: 4096, crcs: vec![0xDEAD_BEEF] };
        let bytes = req.encode().unwrap();
        assert_eq!(bytes.as_slice(), GOLDEN_WRITE, "OsdReq::Write encoding drifted: {:?}", bytes.as_slice());
        assert_eq!(req.payload_len(), 4096);
        assert_eq!(OsdReq::decode(&aligned(GOLDEN_WRITE)).unwrap(), req);
    }

    /// Tag 0 (Lookup), parent = 1, name "ckpt" inline, padded to the
    /// largest request variant (16-byte aligned: session ids are u128).
    const GOLDEN_LOOKUP: &[u8] = &[
        0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0,
        99, 107, 112, 116, 255, 255, 255, 255, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    /// The crc array, then tag 0 (Write), object, offset, length and the
    /// relative pointer to the crcs.
    const GOLDEN_WRITE: &[u8] = &[
        239, 190, 173, 222, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        5, 0, 0, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 1, 0, 0, 0, 0, 0, 0, 16, 0, 0, 212, 255, 255, 255,
        1, 0, 0, 0, 0, 0, 0, 0,
    ];

    #[test]
    fn oversized_headers_are_refused() {
        assert!(framed_header(&vec![0u8; MAX_HEADER as usize + 1]).is_err());
        assert_eq!(framed_header(&[1, 2, 3]).unwrap(), [5, 0, 0, 0, 0, 3, 1, 2, 3]);
    }

    /// The golden Lookup header as it goes on the wire: its length, then
    /// runs of zeros left out (`zeros | n | n bytes`). 112 bytes in 15.
    #[test]
    fn golden_packed_lookup_frame() {
        let framed = framed_header(GOLDEN_LOOKUP).unwrap();
        assert_eq!(framed, [15, 0, 0, 0, 8, 1, 1, 7, 8, 99, 107, 112, 116, 255, 255, 255, 255, 88, 0]);
        assert_eq!(unpack(&framed[4..], MAX_HEADER as usize).unwrap().as_slice(), GOLDEN_LOOKUP);
    }

    #[test]
    fn malformed_packed_headers_fail_cleanly() {
        let limit = MAX_HEADER as usize;
        // A length cut short, bytes promised and not there, a length
        // that never ends.
        assert!(unpack(&[0x80], limit).is_err());
        assert!(unpack(&[0, 5, 1, 2], limit).is_err());
        assert!(unpack(&[0xff; 8], limit).is_err());
        // Past the limit.
        assert!(unpack(&[100, 0], 99).is_err());
        assert_eq!(unpack(&[100, 0], 100).unwrap().len(), 100);
        assert_eq!(unpack(&[], limit).unwrap().len(), 0);
    }

    /// The sizes that made packing worth it: a call and an answer of the
    /// largest enums, with a few fields each.
    #[test]
    fn small_calls_and_answers_pack_to_a_few_bytes() {
        let call = MdsCall::new(MdsReq::GetAttr { ino: InodeId(0x0100_0000_0000_0005) }, Cred::user(1000, 1000, vec![]));
        let answer = MdsResp::Done;
        for bytes in [call.encode().unwrap(), answer.encode().unwrap()] {
            let packed = pack(&bytes);
            assert!(packed.len() * 5 < bytes.len(), "{} bytes packed to {}", bytes.len(), packed.len());
        }
    }

    /// What a damaged header decodes to, if anything, is a well-formed
    /// request: checked on decode, it encodes and decodes back to itself.
    fn refused_or_well_formed(bytes: &[u8]) -> bool {
        match MdsReq::decode(&aligned(bytes)) {
            Err(_) => true,
            Ok(req) => {
                let again = req.encode().expect("a decoded request encodes");
                assert_eq!(MdsReq::decode(&again).expect("and decodes again"), req);
                false
            }
        }
    }

    #[test]
    fn truncated_and_garbage_headers_fail_cleanly() {
        let good = MdsReq::Rename { parent: InodeId(1), name: "a".into(), newparent: InodeId(2), newname: "b".into(), flags: 0 }.encode().unwrap();
        let refused_cuts = (0..good.len()).filter(|&cut| refused_or_well_formed(&good[..cut])).count();
        assert!(MdsReq::decode(&aligned(&good[..good.len() / 2])).is_err());
        assert!(refused_cuts > good.len() / 2, "only {refused_cuts} of {} truncations refused", good.len());
        // Every byte flipped every way: refused, or still a valid request.
        let mut refused_flips = 0;
        for at in 0..good.len() {
            for mask in [0x01u8, 0x80, 0xff] {
                let mut bad = good.to_vec();
                bad[at] ^= mask;
                refused_flips += usize::from(refused_or_well_formed(&bad));
            }
        }
        assert!(refused_flips > 0, "no flipped byte was caught by validation");
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let a = aligned(&bytes);
            let _ = MdsReq::decode(&a);
            let _ = MdsResp::decode(&a);
            let _ = OsdReq::decode(&a);
            let _ = OsdResp::decode(&a);
        }

        #[test]
        fn requests_round_trip(parent in any::<u64>(), name in "[a-z0-9._-]{1,255}", mode in any::<u32>(), excl in any::<bool>(),
                               uid in any::<u32>(), groups in proptest::collection::vec(any::<u32>(), 0..64)) {
            let req = MdsReq::Create { parent: InodeId(parent), name, mode, exclusive: excl };
            let call = MdsCall::new(req, Cred::user(uid, uid ^ 1, groups));
            let enc = call.encode().unwrap();
            prop_assert_eq!(MdsCall::decode(&enc).unwrap(), call);
        }

        /// Any bytes unpack to themselves, whatever their zeros.
        #[test]
        fn packing_round_trips(bytes in proptest::collection::vec(prop_oneof![Just(0u8), Just(0u8), any::<u8>()], 0..2048)) {
            let packed = pack(&bytes);
            prop_assert!(packed.len() <= bytes.len() + 8);
            let unpacked = unpack(&packed, MAX_HEADER as usize).unwrap();
            prop_assert_eq!(unpacked.as_slice(), &bytes[..]);
        }

        #[test]
        fn random_packed_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = unpack(&bytes, MAX_HEADER as usize);
        }

        #[test]
        fn object_requests_round_trip(ino in any::<u64>(), index in any::<u32>(), off in any::<u64>(), crcs in proptest::collection::vec(any::<u32>(), 0..32)) {
            let req = OsdReq::Write { obj: ObjectId { ino: InodeId(ino), index }, off, len: crcs.len() as u32, crcs };
            let enc = req.encode().unwrap();
            prop_assert_eq!(OsdReq::decode(&enc).unwrap(), req);
        }
    }
}
