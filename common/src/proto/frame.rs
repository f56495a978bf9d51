//! Framing of one request or response on a QUIC stream:
//! `u32 little-endian length | packed rkyv header | raw payload bytes`.
//! The header is checked with bytecheck (`rkyv::from_bytes`, never the
//! unchecked accessors) before anything reads it; the payload length comes
//! from the validated header and is bounded.
//!
//! Packed: an archived enum is as large as its largest variant, so a
//! request or an answer of a few fields is mostly zeros (a Raft append's
//! call header: 169 of 176 bytes; a small answer: 270 of 272). On the
//! wire the header's runs of zeros are left out ([`pack`], [`unpack`]):
//! a sequence of `varint zeros | varint n | n bytes`, which cuts a small
//! call's header and answer from about 450 bytes to about 20.
use crate::error::{Error, Result};
use bytes::{Bytes, BytesMut};
use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

/// Largest header accepted. Big enough for a readdir batch or a 64 KiB
/// xattr value, small enough that a hostile length cannot balloon memory.
pub const MAX_HEADER: u32 = 4 << 20;
/// Largest raw payload on one stream: a stripe unit is at most 64 MiB.
pub const MAX_PAYLOAD: u64 = 64 << 20;

/// What packing may add to a header with no runs of zeros to leave out:
/// the first run's two lengths.
const PACK_SLACK: u32 = 16;

/// Runs of zeros shorter than this stay in the bytes around them: leaving
/// one out costs up to this many bytes of lengths.
const MIN_RUN: usize = 4;

/// A packed header read from a peer may unpack to at most this many
/// times its size, plus [`UNPACK_FREE`]: a peer makes this side hold
/// little more memory than it sends. The free part holds the largest
/// header of zeros a request may rightly carry (an xattr value of 64 KiB),
/// so that one is answered for what it is (E2BIG past the xattr limit),
/// not refused as malformed.
const UNPACK_RATIO: usize = 64;
const UNPACK_FREE: usize = 128 << 10;

/// `n` in 7-bit groups, low first, the high bit set on all but the last.
pub fn put_varint(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// The number [`put_varint`] wrote at `at` in `bytes`; `at` moves past it.
/// At most five groups (35 bits). The error says what was wrong, for the
/// caller to name what it was reading.
pub fn get_varint(bytes: &[u8], at: &mut usize) -> std::result::Result<usize, &'static str> {
    let mut n: usize = 0;
    for shift in (0..35).step_by(7) {
        let b = *bytes.get(*at).ok_or("truncated length")?;
        *at += 1;
        n |= ((b & 0x7f) as usize) << shift;
        if b & 0x80 == 0 {
            return Ok(n);
        }
    }
    Err("length too long")
}

/// `bytes` with its runs of [`MIN_RUN`] zeros or more left out.
pub fn pack(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() / 4 + 8);
    pack_into(&mut out, bytes);
    out
}

fn pack_into(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut i = 0;
    while i < bytes.len() {
        let zeros = bytes[i..].iter().take_while(|b| **b == 0).count();
        let start = i + zeros;
        // The literal bytes run to the next run of MIN_RUN zeros.
        let mut end = start;
        while end < bytes.len() {
            let run = bytes[end..].iter().take(MIN_RUN).take_while(|b| **b == 0).count();
            if run == MIN_RUN || end + run == bytes.len() && run > 0 {
                break;
            }
            end += run.max(1);
        }
        put_varint(out, zeros);
        put_varint(out, end - start);
        out.extend_from_slice(&bytes[start..end]);
        i = end;
    }
}

/// The bytes `packed` was made from, into aligned memory: at most `limit`
/// of them. Malformed input is an error, never a panic.
pub fn unpack(packed: &[u8], limit: usize) -> Result<AlignedVec> {
    let mut out = AlignedVec::<16>::with_capacity(packed.len().min(limit));
    let mut at = 0;
    let varint = |at: &mut usize| get_varint(packed, at).map_err(|e| Error::Protocol(format!("packed header: {e}")));
    while at < packed.len() {
        let zeros = varint(&mut at)?;
        let n = varint(&mut at)?;
        let literal = packed.get(at..at.saturating_add(n)).ok_or_else(|| Error::Protocol("packed header: truncated bytes".into()))?;
        at += n;
        if out.len().saturating_add(zeros).saturating_add(n) > limit {
            return Err(Error::Protocol(format!("packed header unpacks past {limit} bytes")));
        }
        out.resize(out.len() + zeros, 0);
        out.extend_from_slice(literal);
    }
    Ok(out)
}

/// A wire message. `payload_len` is the number of raw bytes that follow the
/// header on the same stream.
pub trait Message: Sized + Send + 'static {
    fn encode(&self) -> Result<AlignedVec>;
    fn decode(bytes: &[u8]) -> Result<Self>;
    fn payload_len(&self) -> u64 {
        0
    }
}

pub fn encode_any<T>(v: &T) -> Result<AlignedVec>
where
    T: for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>,
{
    rkyv::to_bytes::<rancor::Error>(v).map_err(|e| Error::Protocol(format!("encode: {e}")))
}

/// Validate and deserialize. `bytes` must be 16-byte aligned (an `AlignedVec`).
pub fn decode_any<T>(bytes: &[u8]) -> Result<T>
where
    T: Archive,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>> + Deserialize<T, HighDeserializer<rancor::Error>>,
{
    rkyv::from_bytes::<T, rancor::Error>(bytes).map_err(|e| Error::Protocol(format!("malformed header: {e}")))
}

/// A header as it goes on the wire: the 4-byte length of the packed
/// header, then the packed header.
pub fn framed_header(header: &[u8]) -> Result<Vec<u8>> {
    if header.len() > MAX_HEADER as usize {
        return Err(Error::Protocol(format!("header of {} bytes exceeds {MAX_HEADER}", header.len())));
    }
    let mut out = Vec::with_capacity(4 + header.len() / 4 + 8);
    out.extend_from_slice(&[0; 4]);
    pack_into(&mut out, header);
    let n = (out.len() - 4) as u32;
    out[..4].copy_from_slice(&n.to_le_bytes());
    Ok(out)
}

/// Read one length-prefixed packed header from a stream, unpacked into
/// aligned memory.
pub async fn read_header(recv: &mut quinn::RecvStream) -> Result<AlignedVec> {
    let mut len = [0u8; 4];
    recv.read_exact(&mut len).await.map_err(|e| Error::Protocol(format!("truncated frame length: {e}")))?;
    let n = u32::from_le_bytes(len);
    if n == 0 || n > MAX_HEADER + PACK_SLACK {
        return Err(Error::Protocol(format!("header length {n} out of range 1..={}", MAX_HEADER + PACK_SLACK)));
    }
    // Grow with the bytes that actually arrive: a peer that announces a
    // large header and sends nothing pins no memory.
    let mut buf = Vec::with_capacity((n as usize).min(64 * 1024));
    while buf.len() < n as usize {
        match recv.read_chunk(n as usize - buf.len(), true).await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
            Ok(None) => return Err(Error::Protocol(format!("truncated header: {} of {n} bytes", buf.len()))),
            Err(e) => return Err(Error::Protocol(format!("truncated header: {e}"))),
        }
    }
    unpack(&buf, (MAX_HEADER as usize).min(buf.len() * UNPACK_RATIO + UNPACK_FREE))
}

/// Payloads at least this large land 4 KiB-aligned in memory, so that an
/// OSD can hand them to the disk with `O_DIRECT` as they are.
pub const ALIGNED_PAYLOAD_MIN: u64 = 64 * 1024;
/// The alignment `O_DIRECT` asks of a buffer.
pub const PAYLOAD_ALIGN: usize = 4096;

/// Read exactly `len` payload bytes.
pub async fn read_payload(recv: &mut quinn::RecvStream, len: u64) -> Result<Bytes> {
    if len > MAX_PAYLOAD {
        return Err(Error::Protocol(format!("payload of {len} bytes exceeds {MAX_PAYLOAD}")));
    }
    if len == 0 {
        return Ok(Bytes::new());
    }
    if len >= ALIGNED_PAYLOAD_MIN {
        return read_aligned(recv, len as usize).await;
    }
    // Append into spare capacity: no zero-fill of a buffer about to be
    // overwritten, one copy out of quinn's reassembly buffers.
    let mut buf = BytesMut::with_capacity(len as usize);
    while (buf.len() as u64) < len {
        let want = len as usize - buf.len();
        match recv.read_chunk(want, true).await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
            Ok(None) => return Err(Error::Protocol(format!("truncated payload: {} of {len} bytes", buf.len()))),
            Err(e) => return Err(Error::Protocol(format!("truncated payload: {e}"))),
        }
    }
    Ok(buf.freeze())
}

/// An empty buffer whose next byte lies on a `PAYLOAD_ALIGN` boundary in
/// memory, with uninitialised room for `len` bytes from there: `(buffer,
/// pad)`, the buffer holding `pad` bytes of padding. Filled by appending
/// within its capacity (so it never moves), the window is
/// `buffer.freeze().slice(pad..pad + len)`. Not zeroed: each byte is
/// written once, by whatever fills it (a zeroed buffer cost the client
/// 7-8% of its CPU on loads, as glibc reuses freed memory and memsets it).
pub fn aligned_buffer(len: usize) -> (BytesMut, usize) {
    let mut buf = BytesMut::with_capacity(len + PAYLOAD_ALIGN);
    let pad = buf.as_ptr().align_offset(PAYLOAD_ALIGN);
    buf.resize(pad, 0);
    (buf, pad)
}

/// `read_payload` into an `aligned_buffer`: each byte is copied once out
/// of quinn's reassembly buffers. `read_chunk` never returns more than
/// asked, so the buffer stays within its capacity and the window aligned.
async fn read_aligned(recv: &mut quinn::RecvStream, len: usize) -> Result<Bytes> {
    let (mut buf, pad) = aligned_buffer(len);
    while buf.len() - pad < len {
        match recv.read_chunk(len - (buf.len() - pad), true).await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
            Ok(None) => return Err(Error::Protocol(format!("truncated payload: {} of {len} bytes", buf.len() - pad))),
            Err(e) => return Err(Error::Protocol(format!("truncated payload: {e}"))),
        }
    }
    let payload = buf.freeze().slice(pad..);
    debug_assert_eq!(payload.as_ptr().align_offset(PAYLOAD_ALIGN), 0);
    Ok(payload)
}

/// Write a header frame, then the payload chunks, on a send stream.
pub async fn write_frame(send: &mut quinn::SendStream, header: &[u8], payload: &[Bytes]) -> Result<()> {
    let mut chunks = Vec::with_capacity(1 + payload.len());
    chunks.push(Bytes::from(framed_header(header)?));
    chunks.extend(payload.iter().filter(|b| !b.is_empty()).cloned());
    send.write_all_chunks(&mut chunks).await.map_err(|e| Error::Transport(format!("send: {e}")))?;
    Ok(())
}

macro_rules! message {
    ($t:ty) => {
        message!($t, |_m| 0);
    };
    ($t:ty, $payload:expr) => {
        impl $crate::proto::frame::Message for $t {
            fn encode(&self) -> $crate::error::Result<rkyv::util::AlignedVec> {
                $crate::proto::frame::encode_any(self)
            }
            fn decode(bytes: &[u8]) -> $crate::error::Result<Self> {
                $crate::proto::frame::decode_any(bytes)
            }
            fn payload_len(&self) -> u64 {
                let f: fn(&$t) -> u64 = $payload;
                f(self)
            }
        }
    };
}
pub(crate) use message;
