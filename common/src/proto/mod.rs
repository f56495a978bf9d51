//! Wire messages: one request and one response enum per service, rkyv
//! encoded and validated on receipt (frame.rs). Variants are only ever
//! appended, never reordered: the enum index is the request number on the
//! wire, and the golden-frame tests below break on any drift.
pub mod frame;
pub mod mds;
pub mod osd;

pub use frame::{Message, MAX_HEADER, MAX_PAYLOAD};
