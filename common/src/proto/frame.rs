//! Framing of one request or response on a QUIC stream:
//! `u32 little-endian header length | rkyv header | raw payload bytes`.
//! The header is checked with bytecheck (`rkyv::from_bytes`, never the
//! unchecked accessors) before anything reads it; the payload length comes
//! from the validated header and is bounded.
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

/// The 4-byte length prefix for a header.
pub fn prefix(header: &[u8]) -> Result<[u8; 4]> {
    let n = u32::try_from(header.len()).map_err(|_| Error::Protocol("header too large".into()))?;
    if n > MAX_HEADER {
        return Err(Error::Protocol(format!("header of {n} bytes exceeds {MAX_HEADER}")));
    }
    Ok(n.to_le_bytes())
}

/// Read one length-prefixed header from a stream into aligned memory.
pub async fn read_header(recv: &mut quinn::RecvStream) -> Result<AlignedVec> {
    let mut len = [0u8; 4];
    recv.read_exact(&mut len).await.map_err(|e| Error::Protocol(format!("truncated frame length: {e}")))?;
    let n = u32::from_le_bytes(len);
    if n == 0 || n > MAX_HEADER {
        return Err(Error::Protocol(format!("header length {n} out of range 1..={MAX_HEADER}")));
    }
    // Grow with the bytes that actually arrive: a peer that announces a
    // large header and sends nothing pins no memory.
    let mut buf = AlignedVec::<16>::with_capacity((n as usize).min(64 * 1024));
    while buf.len() < n as usize {
        match recv.read_chunk(n as usize - buf.len(), true).await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
            Ok(None) => return Err(Error::Protocol(format!("truncated header: {} of {n} bytes", buf.len()))),
            Err(e) => return Err(Error::Protocol(format!("truncated header: {e}"))),
        }
    }
    Ok(buf)
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
    let p = prefix(header)?;
    let mut chunks = Vec::with_capacity(2 + payload.len());
    chunks.push(Bytes::copy_from_slice(&p));
    chunks.push(Bytes::copy_from_slice(header));
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
