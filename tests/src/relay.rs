//! A UDP relay that plays a network link: every datagram is held for a set
//! delay before it goes on, and, if the link has a rate, waits its turn
//! behind the bytes already on the wire, as on a wire of that many bytes
//! a second. This kernel has no netem qdisc, so the scaling run
//! (`ProcCluster::start_spread`, `aifs-bench --scale-only`) puts one of
//! these in front of each MDS process to make the network, not this
//! machine's two cores, the limit.
//!
//! Data flow. The relay listens at the address its MDS is known by. A
//! datagram from a new source gets a socket of its own towards the target
//! (so the target tells sources apart by that socket's port), and what the
//! target sends back to that socket goes to the source from the listening
//! socket. Both directions share one queue: the link is one wire, with
//! its rate shared by what goes in and what comes out. The delay is the
//! same for every datagram, so the queue is in order of departure.
//! A link with a rate holds at most [`QUEUE_TIME`] of its bytes waiting,
//! and drops what arrives beyond that, as a router's queue does; QUIC
//! sends it again. A link can also be cut for some sources
//! only (`LinkStats::cut_from`): what they send, and what goes back to
//! them, is dropped, while everyone else gets through (a partition that
//! parts an MDS from the other members but not from its clients).
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The most a link with a rate keeps waiting, in time on its wire: about
/// what a router's port buffers. (A queue of seconds would hold every
/// exchange behind the bulk traffic for that long, and no Raft group
/// could keep a leader over it.)
const QUEUE_TIME: Duration = Duration::from_millis(50);

/// Largest datagram relayed (UDP's own limit).
const MAX_DATAGRAM: usize = 65_535;

/// How one link behaves.
#[derive(Clone, Copy, Debug)]
pub struct Link {
    /// Each datagram is held this long, each way.
    pub delay: Duration,
    /// Bytes a second the link carries, both ways together; None: no limit.
    pub bytes_per_s: Option<u64>,
}

/// What a link has carried and dropped, and whom it no longer carries.
#[derive(Default, Debug)]
pub struct LinkStats {
    pub datagrams: AtomicU64,
    pub bytes: AtomicU64,
    pub dropped: AtomicU64,
    /// Of `bytes`, those of exchanges with the sources of `from_members`.
    pub member_bytes: AtomicU64,
    /// Sources that are other MDS members (`ProcCluster::start_spread`).
    pub from_members: std::sync::RwLock<Vec<IpAddr>>,
    /// Bytes waiting for the wire.
    queued: AtomicU64,
    cut: std::sync::RwLock<Vec<IpAddr>>,
}

impl LinkStats {
    /// Drop everything from and to these sources (none: heal the link).
    pub fn cut_from(&self, sources: &[IpAddr]) {
        *self.cut.write().unwrap_or_else(|e| e.into_inner()) = sources.to_vec();
    }

    fn is_cut(&self, source: IpAddr) -> bool {
        self.cut.read().unwrap_or_else(|e| e.into_inner()).contains(&source)
    }
}

/// A datagram waiting for its time on the wire.
struct Held {
    due: Instant,
    from: Arc<UdpSocket>,
    to: SocketAddr,
    bytes: Vec<u8>,
    /// From or to another MDS member.
    member: bool,
}

/// Relays running on a thread of their own; stopped on drop.
pub struct Relays {
    rt: Option<tokio::runtime::Runtime>,
    pub links: Vec<(SocketAddr, Arc<LinkStats>)>,
}

impl Relays {
    pub fn new() -> std::io::Result<Relays> {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).thread_name("relay").enable_all().build()?;
        Ok(Relays { rt: Some(rt), links: Vec::new() })
    }

    /// Relay what arrives at `listen` to `target` and back, over `link`.
    pub fn add(&mut self, listen: SocketAddr, target: SocketAddr, link: Link) -> std::io::Result<Arc<LinkStats>> {
        let Some(rt) = &self.rt else { return Err(std::io::Error::other("relays stopped")) };
        let sock = Arc::new(rt.block_on(async { UdpSocket::bind(listen).await })?);
        let stats = Arc::new(LinkStats::default());
        let (tx, rx) = mpsc::unbounded_channel();
        rt.spawn(wire(rx, link, stats.clone()));
        rt.spawn(listen_side(sock, target, link, tx, stats.clone()));
        self.links.push((listen, stats.clone()));
        Ok(stats)
    }
}

impl Drop for Relays {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Put `bytes`, from or to the source `peer`, on the link's queue, unless
/// the queue is full or the link is cut for that source.
fn hold(tx: &mpsc::UnboundedSender<Held>, stats: &LinkStats, link: Link, from: &Arc<UdpSocket>, to: SocketAddr, peer: IpAddr, bytes: &[u8]) {
    let room = link.bytes_per_s.map_or(u64::MAX, |r| (r as f64 * QUEUE_TIME.as_secs_f64()) as u64);
    if stats.queued.load(Ordering::Relaxed) + bytes.len() as u64 > room || stats.is_cut(peer) {
        stats.dropped.fetch_add(1, Ordering::Relaxed);
        return;
    }
    stats.queued.fetch_add(bytes.len() as u64, Ordering::Relaxed);
    let member = stats.from_members.read().unwrap_or_else(|e| e.into_inner()).contains(&peer);
    let _ = tx.send(Held { due: Instant::now() + link.delay, from: from.clone(), to, bytes: bytes.to_vec(), member });
}

/// The listening side: datagrams from sources towards the target, each
/// source through a socket of its own.
async fn listen_side(sock: Arc<UdpSocket>, target: SocketAddr, link: Link, tx: mpsc::UnboundedSender<Held>, stats: Arc<LinkStats>) {
    let mut towards: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let bind = SocketAddr::new(sock.local_addr().map(|a| a.ip()).unwrap_or([0, 0, 0, 0].into()), 0);
    loop {
        let Ok((n, src)) = sock.recv_from(&mut buf).await else { continue };
        let up = match towards.get(&src) {
            Some(u) => u.clone(),
            None => {
                let Ok(u) = UdpSocket::bind(bind).await.map(Arc::new) else { continue };
                tokio::spawn(target_side(u.clone(), sock.clone(), src, link, tx.clone(), stats.clone()));
                towards.insert(src, u.clone());
                u
            }
        };
        hold(&tx, &stats, link, &up, target, src.ip(), &buf[..n]);
    }
}

/// What the target sends back to one source's socket goes to the source.
async fn target_side(up: Arc<UdpSocket>, down: Arc<UdpSocket>, src: SocketAddr, link: Link, tx: mpsc::UnboundedSender<Held>, stats: Arc<LinkStats>) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let Ok(n) = up.recv(&mut buf).await else { continue };
        hold(&tx, &stats, link, &down, src, src.ip(), &buf[..n]);
    }
}

/// The wire: each datagram leaves once its delay is over and the bytes
/// before it have gone at the link's rate.
async fn wire(mut rx: mpsc::UnboundedReceiver<Held>, link: Link, stats: Arc<LinkStats>) {
    let mut free_at = Instant::now();
    while let Some(h) = rx.recv().await {
        let mut leave = h.due;
        if let Some(rate) = link.bytes_per_s {
            leave = leave.max(free_at);
            free_at = leave + Duration::from_secs_f64(h.bytes.len() as f64 / rate.max(1) as f64);
        }
        tokio::time::sleep_until(leave).await;
        stats.queued.fetch_sub(h.bytes.len() as u64, Ordering::Relaxed);
        // Counted as it goes on the wire: its receiver may look at the
        // counts as soon as it has it.
        stats.datagrams.fetch_add(1, Ordering::Relaxed);
        stats.bytes.fetch_add(h.bytes.len() as u64, Ordering::Relaxed);
        if h.member {
            stats.member_bytes.fetch_add(h.bytes.len() as u64, Ordering::Relaxed);
        }
        let _ = h.from.send_to(&h.bytes, h.to).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo() -> (std::net::UdpSocket, SocketAddr) {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let a = s.local_addr().unwrap();
        let e = s.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = e.recv_from(&mut buf) {
                let _ = e.send_to(&buf[..n], from);
            }
        });
        (s, a)
    }

    fn free_udp() -> SocketAddr {
        std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
    }

    /// A round trip through the relay takes the delay twice, each source
    /// gets its own answers, and a rate spaces datagrams out.
    #[test]
    fn datagrams_are_held_for_the_delay_each_way_and_answered_to_their_source() {
        let (_keep, target) = echo();
        let mut relays = Relays::new().unwrap();
        let listen = free_udp();
        let listen_first = listen;
        let delay = Duration::from_millis(30);
        let stats = relays.add(listen, target, Link { delay, bytes_per_s: None }).unwrap();
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let t = std::time::Instant::now();
        a.send_to(b"from a", listen).unwrap();
        b.send_to(b"from b", listen).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = a.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"from a"[..], listen));
        let n = b.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"from b");
        assert!(t.elapsed() >= delay * 2, "answered after {:?}", t.elapsed());
        assert_eq!(stats.datagrams.load(Ordering::Relaxed), 4);

        // 10 round trips of 1,000 bytes at 20,000 bytes a second: 20,000
        // bytes on the wire take a second.
        let listen = free_udp();
        let slow = relays.add(listen, target, Link { delay: Duration::ZERO, bytes_per_s: Some(20_000) }).unwrap();
        let t = std::time::Instant::now();
        let mut big = [0u8; 2048];
        for _ in 0..10 {
            a.send_to(&[7u8; 1000], listen).unwrap();
            assert_eq!(a.recv(&mut big).unwrap(), 1000);
        }
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(900), "10 round trips of 1,000 bytes took {took:?}");
        // 10 at once: the queue holds 50 ms of the wire, 1,000 bytes, so
        // all but the first (or the first two, if the first has left
        // before the second comes) are dropped.
        for _ in 0..10 {
            a.send_to(&[7u8; 1000], listen).unwrap();
        }
        a.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let mut answered = 0;
        while a.recv(&mut big).is_ok() {
            answered += 1;
        }
        assert!((1..=2).contains(&answered), "{answered} of 10 datagrams sent at once got through a queue of one");
        assert!(slow.dropped.load(Ordering::Relaxed) >= 8);

        // Cut for one source only: the other still gets through, and the
        // cut one again once healed.
        stats.cut_from(&[b.local_addr().unwrap().ip()]);
        b.send_to(b"cut", listen_first).unwrap();
        b.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        assert!(b.recv(&mut buf).is_err(), "a cut source was answered");
        let other = std::net::UdpSocket::bind("127.0.0.2:0").unwrap();
        other.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        other.send_to(b"not cut", listen_first).unwrap();
        let n = other.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"not cut");
        stats.cut_from(&[]);
        b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        b.send_to(b"healed", listen_first).unwrap();
        let n = b.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"healed");
    }
}
