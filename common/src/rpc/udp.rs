//! The UDP socket under every QUIC endpoint, with GSO batches that fit.
//!
//! quinn hands the kernel up to ten datagrams in one segmentation-offload
//! send, and one send is one UDP datagram to the kernel: at most 64 KiB.
//! Past 6553-byte packets a full batch no longer fits, the kernel refuses
//! the send, and path-MTU discovery takes the losses for a black hole and
//! falls back to 1200 bytes. A socket here batches only as many packets of
//! `max_mtu` as one send holds, so any `max_mtu` works: 9000-byte jumbo
//! frames go seven to a send, and 64 KiB packets on loopback one at a time.
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, Runtime, UdpPoller};
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// The most bytes one UDP send can carry, headers of the segments aside.
const MAX_SEND: usize = 65_507;

struct BoundedGso {
    inner: Arc<dyn AsyncUdpSocket>,
    segments: usize,
}

/// `sock` ready for quinn, sending at most `MAX_SEND` bytes at a time with
/// packets of up to `max_mtu` bytes.
pub fn wrap(sock: std::net::UdpSocket, max_mtu: u16) -> io::Result<Arc<dyn AsyncUdpSocket>> {
    let inner = quinn::TokioRuntime.wrap_udp_socket(sock)?;
    Ok(Arc::new(BoundedGso { inner, segments: gso_segments(max_mtu) }))
}

/// How many packets of `max_mtu` bytes fit one send (at least one).
/// Endpoints raise a `max_mtu` below QUIC's floor to 1200, and so does this.
fn gso_segments(max_mtu: u16) -> usize {
    (MAX_SEND / usize::from(max_mtu.max(1200))).max(1)
}

impl fmt::Debug for BoundedGso {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundedGso").field("inner", &self.inner).field("segments", &self.segments).finish()
    }
}

impl AsyncUdpSocket for BoundedGso {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        self.inner.try_send(transmit)
    }

    fn poll_recv(&self, cx: &mut Context, bufs: &mut [IoSliceMut<'_>], meta: &mut [RecvMeta]) -> Poll<io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments().min(self.segments)
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use super::gso_segments;

    #[test]
    fn a_full_batch_fits_one_send() {
        assert_eq!(gso_segments(1200), 54);
        assert_eq!(gso_segments(6500), 10);
        assert_eq!(gso_segments(9000), 7);
        assert_eq!(gso_segments(65_000), 1);
        assert_eq!(gso_segments(0), 54, "below QUIC's floor counts as the floor");
    }
}
