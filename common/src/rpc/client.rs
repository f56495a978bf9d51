//! Making calls: one cached connection per server, one stream per call.
use crate::certs::Role;
use crate::error::{Error, Result};
use crate::proto::frame::{read_header, read_payload, write_frame, Message};
use bytes::Bytes;
use std::net::SocketAddr;
use std::time::Duration;

/// How long a connection attempt may take before the call fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one call may wait for its answer once sent. Generous: an OSD
/// fsync of a large object or a GC pass may take seconds; a server that is
/// stuck longer than this is treated as gone.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Called with each new connection (to serve the streams the server opens
/// on it, such as lease recalls).
pub type OnConnect = Box<dyn Fn(quinn::Connection) + Send + Sync>;

/// A client of one server (an MDS or one OSD), or of whichever of several
/// serves (the members of a replicated MDS): calls go to one address at a
/// time, and move to the next when it cannot be reached (here, once per
/// failure of that address) or says another leads
/// ([`RpcClient::redirect`]).
pub struct RpcClient {
    endpoint: quinn::Endpoint,
    /// The config's addresses, and members named by redirects since (an
    /// MDS process added after the config was written).
    addrs: std::sync::RwLock<Vec<SocketAddr>>,
    /// Index in `addrs` of the one calls go to.
    at: std::sync::atomic::AtomicUsize,
    role: Role,
    conn: tokio::sync::Mutex<Option<quinn::Connection>>,
    /// The last failed connection attempt and the address it was to: calls
    /// queued behind it fail at once instead of each waiting out its own
    /// connect timeout.
    failed: std::sync::Mutex<Option<(std::time::Instant, Error, SocketAddr)>>,
    /// A member left because another named a different leader, and when:
    /// a redirect that names no one skips it for `LEFT_FOR` (it is most
    /// likely dead, and a connection to a dead host waits out a handshake).
    left: std::sync::Mutex<Option<(std::time::Instant, SocketAddr)>>,
    on_connect: std::sync::OnceLock<OnConnect>,
    /// Connections are made with this instead of the endpoint's default.
    config: Option<quinn::ClientConfig>,
    /// Or with this, once there are several addresses (members of a
    /// replicated MDS, named by the config or learned since).
    member_config: Option<quinn::ClientConfig>,
    /// Who leads, as another member last said (leader.rs, `watched`).
    pub(super) probe: super::leader::Probe,
}

/// After a failed connect, how long further calls fail without trying.
const RECONNECT_BACKOFF: Duration = Duration::from_secs(1);
/// How long a member left for another leader is skipped by redirects that
/// name no one: an election's worth and more.
const LEFT_FOR: Duration = Duration::from_secs(5);

impl RpcClient {
    /// `role` is the role the server must prove (its certificate's name).
    pub fn new(endpoint: quinn::Endpoint, addr: SocketAddr, role: Role) -> Self {
        Self::any_of(endpoint, &crate::config::MdsAddrs::one(addr), role)
    }

    /// A client of whichever of `addrs` serves; the first is tried first.
    pub fn any_of(endpoint: quinn::Endpoint, addrs: &crate::config::MdsAddrs, role: Role) -> Self {
        RpcClient {
            endpoint,
            addrs: std::sync::RwLock::new(addrs.0.clone()),
            at: Default::default(),
            role,
            conn: tokio::sync::Mutex::new(None),
            failed: std::sync::Mutex::new(None),
            left: std::sync::Mutex::new(None),
            on_connect: std::sync::OnceLock::new(),
            config: None,
            member_config: None,
            probe: Default::default(),
        }
    }

    /// A client of whichever of `addrs` (members of a replicated MDS)
    /// serves, holding identity `id`: with more than one address, its
    /// connections leave a silent member sooner
    /// (`endpoint::member_client_config`).
    pub fn of_members(endpoint: quinn::Endpoint, addrs: &crate::config::MdsAddrs, id: &super::Identity, transport: &crate::config::TransportConfig) -> Result<Self> {
        let mut c = Self::any_of(endpoint, addrs, Role::Mds);
        c.member_config = Some(super::endpoint::member_client_config(id, transport)?);
        Ok(c)
    }

    /// Add the members in `addrs` this client does not know yet (an MDS
    /// grown since its config was written), so that it goes to them when
    /// the one it calls fails. Calls go where they went.
    pub fn learn(&self, addrs: &[SocketAddr]) {
        let mut known = self.addrs.write().unwrap_or_else(|e| e.into_inner());
        for a in addrs {
            if !known.contains(a) {
                tracing::info!(addr = %a, "learned of another MDS process");
                known.push(*a);
            }
        }
    }

    /// Calls that go unanswered this long ask another member who leads
    /// (leader.rs; `BEAT_CHECK` for heartbeats).
    pub fn with_first_check(mut self, wait: Duration) -> Self {
        self.probe.first_check = wait;
        self
    }

    /// Make connections with `config` instead of the endpoint's default.
    pub fn with_config(mut self, config: quinn::ClientConfig) -> Self {
        self.config = Some(config);
        self
    }

    /// Set once, before the first call: run `f` on every new connection.
    pub fn on_connect(&self, f: OnConnect) {
        let _ = self.on_connect.set(f);
    }

    pub(super) fn addr_list(&self) -> Vec<SocketAddr> {
        self.addrs.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The address calls go to now.
    pub fn addr(&self) -> SocketAddr {
        let addrs = self.addr_list();
        addrs[self.at.load(std::sync::atomic::Ordering::Relaxed) % addrs.len()]
    }

    /// How many addresses this client may call.
    pub fn members(&self) -> usize {
        self.addr_list().len()
    }

    /// Every address, as a config would list them.
    pub fn addrs(&self) -> crate::config::MdsAddrs {
        crate::config::MdsAddrs(self.addr_list())
    }

    /// Calls go to another address from now on: `hint` if it is one of
    /// this client's, else the next. The connection to the old one is
    /// closed. Nothing changes for a client of one address.
    pub async fn redirect(&self, hint: &str) {
        let hint = hint.parse::<SocketAddr>().ok();
        let (addrs, to) = {
            let mut addrs = self.addrs.write().unwrap_or_else(|e| e.into_inner());
            if addrs.len() < 2 && hint.is_none_or(|h| addrs.contains(&h)) {
                return;
            }
            let was = self.at.load(std::sync::atomic::Ordering::Relaxed);
            let to = match hint.map(|h| (h, addrs.iter().position(|a| *a == h))) {
                Some((_, Some(i))) => i,
                // A member the config does not name: added since.
                Some((h, None)) => {
                    addrs.push(h);
                    addrs.len() - 1
                }
                None => {
                    let left = self.left.lock().ok().and_then(|l| *l).filter(|(at, _)| at.elapsed() < LEFT_FOR).map(|(_, a)| a);
                    let next = (was + 1) % addrs.len();
                    match left {
                        Some(a) if addrs[next] == a && addrs.len() > 2 => (next + 1) % addrs.len(),
                        _ => next,
                    }
                }
            };
            if to == was % addrs.len() {
                return;
            }
            self.at.store(to, std::sync::atomic::Ordering::Relaxed);
            (addrs.clone(), to)
        };
        tracing::debug!(to = %addrs[to], "calls go to another server");
        if let Some(c) = self.conn.lock().await.take() {
            c.close(0u32.into(), b"redirected");
        }
    }

    /// Calls leave member `addr` for `leader`, which another member names.
    pub(super) async fn leave_for(&self, addr: SocketAddr, leader: SocketAddr) {
        if let Ok(mut l) = self.left.lock() {
            *l = Some((std::time::Instant::now(), addr));
        }
        self.redirect(&leader.to_string()).await;
    }

    /// Calls go past `addr`, a member that could not be reached, to the
    /// next address; unless they go elsewhere already (another call that
    /// failed with it, or a redirect, moved them), so that every call
    /// failing at once moves them one step, not one each.
    fn move_past(&self, addr: SocketAddr) {
        let addrs = self.addr_list();
        let n = addrs.len();
        if let Some(i) = addrs.iter().position(|a| *a == addr).filter(|_| n > 1) {
            let _ = self.at.compare_exchange(i, (i + 1) % n, std::sync::atomic::Ordering::Relaxed, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// A connection of its own to member `addr` (not the one calls use),
    /// for a question to it alone.
    pub(super) async fn connect_member(&self, addr: SocketAddr) -> Result<quinn::Connection> {
        let config = self.member_config.clone().ok_or_else(|| Error::InvalidArgument("not a client of MDS members".into()))?;
        self.dial(addr, Some(config)).await
    }

    /// A new connection to `addr` with `config` (the endpoint's default if
    /// none), given up after [`CONNECT_TIMEOUT`].
    async fn dial(&self, addr: SocketAddr, config: Option<quinn::ClientConfig>) -> Result<quinn::Connection> {
        let connecting = match config {
            Some(c) => self.endpoint.connect_with(c, addr, self.role.dns_name()),
            None => self.endpoint.connect(addr, self.role.dns_name()),
        }
        .map_err(|e| Error::Transport(format!("connect {addr}: {e}")))?;
        tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| Error::Transport(format!("connect {addr}: timed out")))?
            .map_err(|e| lost(addr, &e))
    }

    /// The live connection, made anew if there is none or it was lost.
    pub async fn connection(&self) -> Result<quinn::Connection> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            if c.close_reason().is_none() {
                return Ok(c.clone());
            }
        }
        let addr = self.addr();
        if let Ok(f) = self.failed.lock() {
            if let Some((at, why, to)) = f.as_ref() {
                if *to == addr && at.elapsed() < RECONNECT_BACKOFF {
                    return Err(why.clone());
                }
            }
        }
        let member = self.member_config.as_ref().filter(|_| self.members() > 1);
        match self.dial(addr, self.config.as_ref().or(member).cloned()).await {
            Ok(conn) => {
                if let Ok(mut f) = self.failed.lock() {
                    *f = None;
                }
                *guard = Some(conn.clone());
                if let Some(f) = self.on_connect.get() {
                    f(conn.clone());
                }
                Ok(conn)
            }
            Err(e) => {
                if let Ok(mut f) = self.failed.lock() {
                    *f = Some((std::time::Instant::now(), e.clone(), addr));
                }
                self.move_past(addr);
                Err(e)
            }
        }
    }

    /// Send `req` (and `payload` raw after it), wait for the response and
    /// its payload. A stream that cannot be opened on a cached connection is
    /// retried once on a new one: nothing was sent, so this is safe for
    /// every request.
    pub async fn call<Req: Message, Resp: Message>(&self, req: &Req, payload: &[Bytes]) -> Result<(Resp, Bytes)> {
        let header = req.encode()?;
        let mut attempt = 0;
        let (conn, (mut send, mut recv)) = loop {
            let conn = self.connection().await?;
            match conn.open_bi().await {
                Ok(s) => break (conn, s),
                Err(e) if attempt == 0 && !revoked(&e) => {
                    tracing::debug!(addr = %conn.remote_address(), error = %e, "stream open failed; reconnecting");
                    self.forget(&conn).await;
                    attempt += 1;
                }
                Err(e) => {
                    self.move_past(conn.remote_address());
                    return Err(lost(conn.remote_address(), &e));
                }
            }
        };
        let addr = conn.remote_address();
        let exchanged = exchange(&mut send, &mut recv, &header, payload, addr, CALL_TIMEOUT);
        let r = match self.member_config.is_some() && self.members() > 1 {
            true => super::leader::watched(self, addr, exchanged).await,
            false => exchanged.await,
        };
        if let Err(Error::Transport(_)) = &r {
            let refused = conn.close_reason().filter(revoked);
            // Only this call's connection: another call may already have
            // replaced it with a healthy one.
            self.forget(&conn).await;
            self.move_past(addr);
            if let Some(e) = refused {
                return Err(lost(addr, &e));
            }
        }
        r
    }

    /// Drop `conn` from the cache if it is still the cached one.
    async fn forget(&self, conn: &quinn::Connection) {
        let mut g = self.conn.lock().await;
        if g.as_ref().is_some_and(|c| c.stable_id() == conn.stable_id()) {
            if let Some(c) = g.take() {
                c.close(0u32.into(), b"reconnecting");
            }
        }
    }

    pub fn close(&self) {
        if let Ok(mut g) = self.conn.try_lock() {
            if let Some(c) = g.take() {
                c.close(0u32.into(), b"bye");
            }
        }
    }
}

/// The server refused this node's certificate as revoked: in the handshake
/// (TLS alert 44, certificate_revoked) or by closing a live connection.
fn revoked(e: &quinn::ConnectionError) -> bool {
    match e {
        quinn::ConnectionError::ApplicationClosed(c) => c.error_code == quinn::VarInt::from_u32(super::gate::REVOKED),
        quinn::ConnectionError::ConnectionClosed(c) => c.error_code == quinn::TransportErrorCode::crypto(44),
        quinn::ConnectionError::TransportError(t) => t.code == quinn::TransportErrorCode::crypto(44),
        _ => false,
    }
}

/// A lost or refused connection to `addr` as an error: a revoked
/// certificate is `Unauthorized`, which no caller retries; anything else
/// is a transport failure.
fn lost(addr: SocketAddr, e: &quinn::ConnectionError) -> Error {
    if revoked(e) {
        Error::Unauthorized(format!("{addr} refuses this node's certificate: it is revoked"))
    } else {
        Error::Transport(format!("connection to {addr}: {e}"))
    }
}

/// Send one request on an open stream pair and read the answer, within
/// `limit`. A response that cannot be read is a transport failure of
/// `addr`.
async fn exchange<Resp: Message>(
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    header: &[u8],
    payload: &[Bytes],
    addr: SocketAddr,
    limit: Duration,
) -> Result<(Resp, Bytes)> {
    let run = async {
        write_frame(send, header, payload).await?;
        send.finish().map_err(|e| Error::Transport(format!("finish: {e}")))?;
        let resp_hdr = read_header(recv).await.map_err(|e| match e {
            Error::Protocol(m) => Error::Transport(format!("{addr}: {m}")),
            other => other,
        })?;
        let resp = Resp::decode(&resp_hdr)?;
        let body = read_payload(recv, resp.payload_len()).await?;
        Ok((resp, body))
    };
    match tokio::time::timeout(limit, run).await {
        Ok(r) => r,
        Err(_) => Err(Error::Transport(format!("{addr}: no answer in {limit:?}"))),
    }
}

/// One call on a connection the caller already has, in either direction:
/// the MDS uses it to send lease recalls on a client's connection. Opening
/// the stream is bounded by `limit` too: a peer that takes none of the
/// streams opened to it runs out of stream credit, and a call that waited
/// for more would wait as long as the connection lives.
pub async fn call_on<Req: Message, Resp: Message>(conn: &quinn::Connection, req: &Req, limit: Duration) -> Result<Resp> {
    let header = req.encode()?;
    let addr = conn.remote_address();
    let opened = tokio::time::timeout(limit, conn.open_bi())
        .await
        .map_err(|_| Error::Transport(format!("{addr} took no new stream in {limit:?}")))?;
    let (mut send, mut recv) = opened.map_err(|e| Error::Transport(format!("open stream to {addr}: {e}")))?;
    Ok(exchange::<Resp>(&mut send, &mut recv, &header, &[], addr, limit).await?.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::init_cluster;
    use crate::config::{TlsConfig, TransportConfig};
    use crate::proto::mds::{MdsReq, MdsResp};
    use crate::rpc::{client_endpoint, server_endpoint, Identity};

    /// A peer that allows one stream at a time and takes none: every call
    /// to it ends within its limit, the second and later ones too, which
    /// find no stream credit left.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_to_a_peer_that_takes_no_streams_end_within_their_limit() {
        let dir = tempfile::tempdir().expect("temp dir");
        init_cluster(dir.path(), &dir.path().join("ca"), 1, false).expect("certificates");
        let id = |stem: &str| Identity::load(&TlsConfig::in_dir(dir.path(), stem)).expect("identity");
        let server = server_endpoint(SocketAddr::from(([127, 0, 0, 1], 0)), &id("mds"), &TransportConfig::default(), Default::default()).expect("server");
        let addr = server.local_addr().expect("server address");
        let srv = server.clone();
        let accepted = tokio::spawn(async move { srv.accept().await.expect("incoming").await.expect("accepted") });
        let deaf = client_endpoint(&id("client"), &TransportConfig { max_streams: 1, ..TransportConfig::default() }).expect("client");
        let _held = deaf.connect(addr, Role::Mds.dns_name()).expect("connect").await.expect("handshake");
        let conn = accepted.await.expect("server task");
        let limit = Duration::from_millis(300);
        for i in 0..3 {
            let t = std::time::Instant::now();
            let r = tokio::time::timeout(Duration::from_secs(10), call_on::<_, MdsResp>(&conn, &MdsReq::Statfs, limit)).await;
            assert!(matches!(r, Ok(Err(Error::Transport(_)))), "call {i}: {r:?}");
            assert!(t.elapsed() < limit * 3, "call {i} took {:?}", t.elapsed());
        }
    }
}
