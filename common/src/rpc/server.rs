//! Serving a `Service`: a task per connection, a task per stream. A bad
//! frame gets an error reply (or a reset stream) and a log line; the
//! connection and everyone else's are served on.
use super::budget::{Budget, ConnBudget};
use super::gate::Gate;
use super::tls::peer_role;
use crate::certs::Role;
use crate::error::{Error, Result};
use crate::ids::{Owner, SessionId};
use crate::proto::frame::{read_header, read_payload, write_frame, Message, MAX_HEADER, MAX_PAYLOAD};
use bytes::Bytes;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tracing::Instrument;

/// A connected, authenticated peer.
pub struct Peer {
    pub role: Role,
    pub addr: SocketAddr,
    pub conn: quinn::Connection,
    /// Who the peer is: its certificate's hash.
    pub owner: Owner,
    /// Its certificate marks a client whose root is squashed
    /// (`certs::ROOT_SQUASH_DNS`).
    pub root_squash: bool,
    /// The client session bound to this connection; the MDS sets it when
    /// a session is opened or heartbeated over the connection.
    session: std::sync::Mutex<Option<SessionId>>,
}

impl Peer {
    pub fn new(role: Role, conn: quinn::Connection) -> Arc<Peer> {
        let owner = super::tls::peer_owner(&conn);
        let root_squash = role == Role::Client && super::tls::peer_root_squashed(&conn);
        Arc::new(Peer { role, addr: conn.remote_address(), conn, owner, root_squash, session: Default::default() })
    }

    /// The client session bound to this connection, if any.
    pub fn session(&self) -> Option<SessionId> {
        self.session.lock().ok().and_then(|s| *s)
    }

    /// Bind `id` to this connection (it opened or heartbeated here).
    pub fn bind_session(&self, id: SessionId) {
        if let Ok(mut s) = self.session.lock() {
            *s = Some(id);
        }
    }
}

pub trait Service: Send + Sync + 'static {
    type Req: Message;
    type Resp: Message;
    /// Answer one request. The returned payload chunks follow the header.
    fn call(&self, peer: &Arc<Peer>, req: Self::Req, payload: Bytes) -> impl Future<Output = (Self::Resp, Vec<Bytes>)> + Send;
    /// The response that carries an error.
    fn error(e: Error) -> Self::Resp;
    /// Roles allowed to connect at all.
    fn accepts(&self, role: Role) -> bool;
    /// The bytes in flight this server allows (budget.rs); none: no bound
    /// beyond the header limit (services whose requests carry no data).
    fn budget(&self) -> Option<&Budget> {
        None
    }
    /// Bytes `req` holds while served: its payload, and the data its
    /// reply carries.
    fn cost(&self, _req: &Self::Req) -> u64 {
        0
    }
    /// What this server counts of the requests it serves (metrics.rs).
    fn metrics(&self) -> Option<&crate::metrics::RpcMetrics> {
        None
    }
    /// The operation `req` asks for, as a metrics label.
    fn op_name(_req: &Self::Req) -> &'static str {
        "request"
    }
    /// The kind of error `resp` carries, if it is one (a metrics label).
    fn error_kind(_resp: &Self::Resp) -> Option<&'static str> {
        None
    }
}

/// Accept connections until the endpoint is closed. `gate` (the one the
/// endpoint's handshake checks) tracks them, to close those of a
/// certificate revoked later.
pub async fn serve<S: Service>(endpoint: quinn::Endpoint, svc: Arc<S>, gate: Arc<Gate>) {
    while let Some(incoming) = endpoint.accept().await {
        let svc = svc.clone();
        let gate = gate.clone();
        let remote = incoming.remote_address();
        tokio::spawn(async move {
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    tracing::info!(peer = %remote, error = %e, "handshake refused");
                    return;
                }
            };
            let Some(role) = peer_role(&conn) else {
                tracing::warn!(peer = %remote, "peer certificate names no aifs role; closing");
                conn.close(1u32.into(), b"no role");
                return;
            };
            if !svc.accepts(role) {
                tracing::warn!(peer = %remote, role = role.name(), "role not served here; closing");
                conn.close(2u32.into(), b"role not allowed");
                return;
            }
            let peer = Peer::new(role, conn.clone());
            if !gate.enter(peer.owner, &conn) {
                // revoked between its handshake and here
                conn.close(super::gate::REVOKED.into(), b"certificate revoked");
                return;
            }
            tracing::debug!(peer = %remote, role = role.name(), "connected");
            serve_conn(svc, peer).instrument(tracing::debug_span!("conn", peer = %remote)).await;
            gate.leave(&conn);
        });
    }
}

/// Serve the streams `peer` opens on its connection until it closes. A
/// client serves its server's recall streams this way.
pub async fn serve_conn<S: Service>(svc: Arc<S>, peer: Arc<Peer>) {
    let share = svc.budget().map(|b| Arc::new(b.for_conn()));
    loop {
        let (send, recv) = match peer.conn.accept_bi().await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "connection ended");
                return;
            }
        };
        let svc = svc.clone();
        let peer = peer.clone();
        let share = share.clone();
        tokio::spawn(async move { serve_stream(svc, peer, share, send, recv).await });
    }
}

/// A request's header and payload, the payload read once the request's
/// bytes are held (`_held`, until the reply is out).
async fn read_request<S: Service>(svc: &S, share: Option<&ConnBudget>, recv: &mut quinn::RecvStream) -> Result<(S::Req, Bytes, Option<super::budget::Held>)> {
    let hdr = read_header(recv).await?;
    let req = S::Req::decode(&hdr)?;
    let held = match (svc.budget(), share) {
        (Some(b), Some(c)) => Some(b.take(c, svc.cost(&req)).await),
        _ => None,
    };
    let body = read_payload(recv, req.payload_len()).await?;
    Ok((req, body, held))
}

/// The encoded reply, or, if it is larger than a frame may be, the error
/// `TooBig` in its place: the peer learns at once that asking again is no
/// use (a dropped stream would be retried).
fn reply_frame<R: Message>(resp: R, payload: Vec<Bytes>, error: fn(Error) -> R) -> Result<(rkyv::util::AlignedVec, Vec<Bytes>)> {
    let header = resp.encode()?;
    let bytes: u64 = payload.iter().map(|p| p.len() as u64).sum();
    if header.len() <= MAX_HEADER as usize && bytes <= MAX_PAYLOAD {
        return Ok((header, payload));
    }
    tracing::warn!(header = header.len(), payload = bytes, "reply larger than a frame; answered with E2BIG");
    Ok((error(Error::TooBig).encode()?, Vec::new()))
}

async fn serve_stream<S: Service>(
    svc: Arc<S>,
    peer: Arc<Peer>,
    share: Option<Arc<ConnBudget>>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let mut _held = None;
    let mut counted = None;
    let (resp, payload) = match read_request(&*svc, share.as_deref(), &mut recv).await {
        Ok((req, body, held)) => {
            _held = held;
            counted = svc.metrics().map(|m| m.start(S::op_name(&req), body.len() as u64));
            svc.call(&peer, req, body).await
        }
        Err(e) => {
            tracing::warn!(peer = %peer.addr, error = %e, "bad request frame");
            if let Some(m) = svc.metrics() {
                m.bad_frame();
            }
            let _ = recv.stop(1u32.into());
            (S::error(e), Vec::new())
        }
    };
    if let Some(call) = counted {
        call.done(S::error_kind(&resp), payload.iter().map(|p| p.len() as u64).sum());
    }
    let (header, payload) = match reply_frame(resp, payload, S::error) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot encode response");
            let _ = send.reset(2u32.into());
            return;
        }
    };
    if let Err(e) = write_frame(&mut send, &header, &payload).await {
        tracing::debug!(peer = %peer.addr, error = %e, "reply not delivered");
        return;
    }
    let _ = send.finish();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::mds::{DirEntry, FileKind, MdsResp};

    /// A reply past the header limit (a listing of 20,000 long names) is
    /// sent as an error that says so, never dropped.
    #[test]
    fn a_reply_too_big_for_a_frame_becomes_an_error() {
        let entry = |i: u64| DirEntry { name: format!("{i:0>250}"), ino: crate::ids::InodeId(i), kind: FileKind::File, cookie: i };
        let err = |e: Error| MdsResp::Err(e.to_wire());
        let small = MdsResp::Dir { entries: (0..10).map(entry).collect(), eof: true, parent: crate::ids::InodeId(1) };
        let (h, _) = reply_frame(small.clone(), vec![], err).unwrap();
        assert_eq!(MdsResp::decode(&h).unwrap(), small);
        let big = MdsResp::Dir { entries: (0..20_000).map(entry).collect(), eof: true, parent: crate::ids::InodeId(1) };
        assert!(big.encode().unwrap().len() > MAX_HEADER as usize);
        let (h, p) = reply_frame(big, vec![], err).unwrap();
        assert!(p.is_empty());
        match MdsResp::decode(&h).unwrap() {
            MdsResp::Err(w) => assert!(matches!(Error::from_wire(w.code, &w.msg), Error::TooBig)),
            other => panic!("{other:?}"),
        }
    }
}
