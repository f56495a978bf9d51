//! QUIC endpoints: UDP sockets with large buffers, transport settings from
//! `TransportConfig`.
use super::gate::Gate;
use super::tls::Identity;
use crate::config::TransportConfig;
use crate::error::{Error, Result};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub fn transport(cfg: &TransportConfig) -> Result<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    let var = |v: u64| quinn::VarInt::from_u64(v).map_err(|e| Error::InvalidArgument(format!("transport: {e}")));
    t.initial_mtu(cfg.initial_mtu.max(1200));
    let mut mtud = quinn::MtuDiscoveryConfig::default();
    mtud.upper_bound(cfg.max_mtu.max(cfg.initial_mtu).max(1200));
    t.mtu_discovery_config(Some(mtud));
    t.stream_receive_window(var(cfg.stream_window)?);
    t.receive_window(var(cfg.conn_window)?);
    t.send_window(cfg.send_window);
    t.max_concurrent_bidi_streams(var(cfg.max_streams as u64)?);
    t.max_concurrent_uni_streams(0u32.into());
    let idle = quinn::IdleTimeout::try_from(Duration::from_millis(cfg.idle_timeout_ms))
        .map_err(|e| Error::InvalidArgument(format!("idle timeout: {e}")))?;
    t.max_idle_timeout(Some(idle));
    t.keep_alive_interval(Some(Duration::from_millis(cfg.keepalive_ms)));
    Ok(t)
}

fn set_buffer(sock: &socket2::Socket, size: usize) {
    use std::os::fd::AsRawFd;
    if size == 0 {
        return;
    }
    let v = size.min(i32::MAX as usize) as libc::c_int;
    for (force, plain) in [(libc::SO_RCVBUFFORCE, libc::SO_RCVBUF), (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF)] {
        // SAFETY: setsockopt on an open socket we own, with a pointer to a
        // live c_int and its exact size.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                force,
                &v as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            // Not privileged: the kernel caps the plain option at rmem_max.
            // SAFETY: as above.
            unsafe {
                libc::setsockopt(
                    sock.as_raw_fd(),
                    libc::SOL_SOCKET,
                    plain,
                    &v as *const libc::c_int as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
    }
}

fn udp_socket(addr: SocketAddr, cfg: &TransportConfig) -> Result<std::net::UdpSocket> {
    let sock = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    set_buffer(&sock, cfg.socket_buffer);
    sock.bind(&addr.into()).map_err(|e| Error::Io(format!("bind {addr}: {e}")))?;
    Ok(sock.into())
}

/// The largest datagram this endpoint accepts is what it tells peers, and
/// it caps their path-MTU discovery: without raising it from quinn's 1472
/// bytes, `max_mtu` would never be reached.
///
/// A server's connection ids and stateless resets are keyed by a secret
/// that survives its restarts (`Identity::restart_secret`): started again
/// on its address, it recognises the ids its previous run handed out and
/// answers their packets with a reset the peer accepts, so the peer drops
/// the dead connection at once instead of waiting out the idle timeout.
fn endpoint_config(cfg: &TransportConfig, restart_secret: Option<[u8; 32]>) -> Result<quinn::EndpointConfig> {
    let mut c = match restart_secret {
        Some(s) => {
            let mut c = quinn::EndpointConfig::new(Arc::new(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &s)));
            let cid_key = u64::from_le_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]);
            c.cid_generator(move || Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key)));
            c
        }
        None => quinn::EndpointConfig::default(),
    };
    c.max_udp_payload_size(cfg.max_mtu.max(1200))
        .map_err(|e| Error::InvalidArgument(format!("transport: max_mtu {}: {e}", cfg.max_mtu)))?;
    Ok(c)
}

/// An endpoint that accepts connections (and can also make them).
/// `gate` holds the revoked certificates the handshake refuses.
pub fn server_endpoint(addr: SocketAddr, id: &Identity, cfg: &TransportConfig, gate: Arc<Gate>) -> Result<quinn::Endpoint> {
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(id.server_crypto(gate)?));
    server.transport_config(Arc::new(transport(cfg)?));
    let sock = udp_socket(addr, cfg)?;
    let mut ep = quinn::Endpoint::new_with_abstract_socket(
        endpoint_config(cfg, Some(id.restart_secret()))?,
        Some(server),
        super::udp::wrap(sock, cfg.max_mtu)?,
        Arc::new(quinn::TokioRuntime),
    )?;
    ep.set_default_client_config(client_config(id, cfg)?);
    Ok(ep)
}

pub fn client_config(id: &Identity, cfg: &TransportConfig) -> Result<quinn::ClientConfig> {
    let mut c = quinn::ClientConfig::new(Arc::new(id.client_crypto()?));
    c.transport_config(Arc::new(transport(cfg)?));
    Ok(c)
}

/// How soon a silent member of a replicated MDS is taken for dead, and how
/// often keepalives go to it: a leader that died is left after this, not
/// after the whole `idle_timeout_ms`, so a call goes to the next leader
/// about as soon as it is elected (an election takes about a second).
pub const MEMBER_IDLE: Duration = Duration::from_millis(1_500);
pub const MEMBER_KEEPALIVE: Duration = Duration::from_millis(250);

/// The client side of connections to a member of a replicated MDS:
/// `client_config`'s, with [`MEMBER_IDLE`] and [`MEMBER_KEEPALIVE`].
pub fn member_client_config(id: &Identity, cfg: &TransportConfig) -> Result<quinn::ClientConfig> {
    let mut t = transport(cfg)?;
    let idle = quinn::IdleTimeout::try_from(MEMBER_IDLE.min(Duration::from_millis(cfg.idle_timeout_ms)))
        .map_err(|e| Error::InvalidArgument(format!("idle timeout: {e}")))?;
    t.max_idle_timeout(Some(idle));
    t.keep_alive_interval(Some(MEMBER_KEEPALIVE.min(Duration::from_millis(cfg.keepalive_ms))));
    let mut c = quinn::ClientConfig::new(Arc::new(id.client_crypto()?));
    c.transport_config(Arc::new(t));
    Ok(c)
}

/// An endpoint that only makes connections, bound to an ephemeral port.
pub fn client_endpoint(id: &Identity, cfg: &TransportConfig) -> Result<quinn::Endpoint> {
    let addr: SocketAddr = SocketAddr::from(([0, 0, 0, 0], 0));
    let sock = udp_socket(addr, cfg)?;
    let mut ep = quinn::Endpoint::new_with_abstract_socket(
        endpoint_config(cfg, None)?,
        None,
        super::udp::wrap(sock, cfg.max_mtu)?,
        Arc::new(quinn::TokioRuntime),
    )?;
    ep.set_default_client_config(client_config(id, cfg)?);
    Ok(ep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::{init_cluster, Role};
    use crate::config::TlsConfig;

    /// Sends `bytes` from a client to a server on loopback, both allowing
    /// packets of `max_mtu`, and returns the path MTU the client reached.
    async fn mtu_after_sending(max_mtu: u16, bytes: usize) -> u16 {
        let dir = tempfile::tempdir().expect("temp dir");
        init_cluster(dir.path(), &dir.path().join("ca"), 1, false).expect("certificates");
        let id = |stem: &str| Identity::load(&TlsConfig::in_dir(dir.path(), stem)).expect("identity");
        let cfg = TransportConfig { max_mtu, ..TransportConfig::default() };
        let server = server_endpoint(SocketAddr::from(([127, 0, 0, 1], 0)), &id("osd1"), &cfg, Default::default()).expect("server");
        let addr = server.local_addr().expect("server address");
        let sink = tokio::spawn(async move {
            let conn = server.accept().await.expect("incoming").await.expect("accepted");
            let (mut tx, mut rx) = conn.accept_bi().await.expect("stream");
            let got = rx.read_to_end(usize::MAX).await.expect("read").len();
            tx.write_all(&got.to_le_bytes()).await.expect("reply");
            tx.finish().expect("finish");
            conn.closed().await;
        });
        let client = client_endpoint(&id("client"), &cfg).expect("client");
        let conn = client.connect(addr, Role::Osd.dns_name()).expect("connect").await.expect("handshake");
        let (mut tx, mut rx) = conn.open_bi().await.expect("stream");
        let chunk = vec![7u8; 1 << 20];
        for _ in 0..bytes / chunk.len() {
            tx.write_all(&chunk).await.expect("write");
        }
        tx.finish().expect("finish");
        let got = rx.read_to_end(8).await.expect("reply");
        assert_eq!(got, (bytes / chunk.len() * chunk.len()).to_le_bytes());
        let mtu = conn.stats().path.current_mtu;
        conn.close(0u32.into(), b"done");
        sink.await.expect("server task");
        mtu
    }

    /// Packets bigger than a tenth of a GSO send used to overflow quinn's
    /// ten-packet batches; the losses sent discovery back to 1200 bytes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn packets_grow_to_max_mtus_past_a_tenth_of_a_gso_send() {
        for max_mtu in [9000, crate::config::LOOPBACK_MAX_MTU] {
            let mtu = mtu_after_sending(max_mtu, 64 << 20).await;
            assert!(mtu > 6500 && mtu <= max_mtu, "max_mtu {max_mtu}: packets reached {mtu} bytes");
        }
    }
}
