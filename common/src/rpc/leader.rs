//! Calls to a replicated MDS: only the process that leads the shards'
//! groups serves; the others answer "not leader", naming the leader when
//! they know it. A call follows those answers, and moves on from a member
//! it cannot reach, until one serves or an election has had time to end.
//! A call that goes unanswered for a while asks another member who leads
//! (`watched`): a leader that died or was cut off is left as soon as
//! another is elected, not once its connection falls silent.
use super::RpcClient;
use crate::error::{Error, Result};
use crate::proto::mds::{MdsCall, MdsReply, MdsReq, MdsResp};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long a call looks for the leader: a few elections' worth.
pub const FIND_LEADER: Duration = Duration::from_secs(10);

/// How often a client or an OSD asks for the MDS processes' addresses
/// (`learn_members`): an MDS grown since its config was written is known
/// before the process it calls dies.
pub const LEARN_EVERY: Duration = Duration::from_secs(10);

/// The pause before asking again when no member knows a leader yet.
const NO_LEADER_PAUSE: Duration = Duration::from_millis(100);

/// After this long without an answer from a member, a call asks another
/// member who leads. The member holds the question up to `LEADER_WAIT`
/// for a leader other than the one the call waits at, so the caller hears
/// of an election as it ends; the call asks again `QUESTION_GAP` after
/// each answer, `STEADY_CHECKS` times in all (an election takes about a
/// second), then at doubling intervals from `LEADER_CHECK` up to
/// `LEADER_CHECK_MAX` (a call that waits out a recall or a grace asks a
/// few times, not every tick). A leader that died is left as soon as
/// another is elected, before its connection falls silent
/// (`endpoint::MEMBER_IDLE`), which stays the backstop.
const LEADER_CHECK: Duration = Duration::from_millis(400);
const LEADER_WAIT: Duration = Duration::from_millis(600);
const QUESTION_GAP: Duration = Duration::from_millis(50);
const STEADY_CHECKS: u32 = 5;
const LEADER_CHECK_MAX: Duration = Duration::from_secs(4);
/// How long one such question may take, its wait at the member included.
const PROBE_LIMIT: Duration = Duration::from_millis(LEADER_WAIT.as_millis() as u64 + 400);
/// An answer this fresh is shared by the calls that wanted it meanwhile.
const SHARED_ANSWER: Duration = Duration::from_millis(100);

/// The first question's delay for a client whose calls are all answered
/// in milliseconds (an OSD's heartbeats, `RpcClient::with_first_check`):
/// the sooner an OSD beats at a new leader, the sooner that leader's
/// grace ends (mds/src/cluster/grace.rs waits for the OSDs).
pub const BEAT_CHECK: Duration = Duration::from_millis(100);

/// The last answer to `Leader` a client had from another member: its
/// calls share it, and one question is out at a time, on a connection
/// kept to that member (a question is then a stream, not a handshake:
/// every client of a large cluster asks at once when a leader dies).
pub struct Probe {
    /// How long a call waits for its answer before it first asks.
    pub(super) first_check: Duration,
    last: tokio::sync::Mutex<Asked>,
    /// Which other member is asked, in turn: the next once one fails to
    /// answer.
    turn: std::sync::atomic::AtomicUsize,
    /// Calls that have asked and not ended: the connection is closed when
    /// the last ends, so that an idle client keeps none open.
    asking: std::sync::atomic::AtomicUsize,
}

impl Default for Probe {
    fn default() -> Self {
        Probe { first_check: LEADER_CHECK, last: Default::default(), turn: Default::default(), asking: Default::default() }
    }
}

/// A call that asked who leads; the last to end closes the connection.
struct Asking<'a>(&'a Probe);

impl<'a> Asking<'a> {
    fn new(p: &'a Probe) -> Self {
        p.asking.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Asking(p)
    }
}

impl Drop for Asking<'_> {
    fn drop(&mut self) {
        if self.0.asking.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
            if let Ok(mut last) = self.0.last.try_lock() {
                if let Some(c) = last.conn.take() {
                    c.close(0u32.into(), b"done asking");
                }
            }
        }
    }
}

#[derive(Default)]
struct Asked {
    answer: Option<(Instant, Option<SocketAddr>)>,
    conn: Option<quinn::Connection>,
}

/// Run `work`, a call to member `addr` of `mds`. While it goes unanswered,
/// ask another member who leads (after `Probe::first_check`, and later);
/// if it names another process, calls go to the one named and this one
/// ends as if `addr` had answered "not leader" naming it (its caller
/// sends it again at once, with the same request id).
pub(super) async fn watched<T>(mds: &RpcClient, addr: SocketAddr, work: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::pin!(work);
    let mut wait = mds.probe.first_check;
    let mut asking = None;
    let mut asked = 0u32;
    loop {
        tokio::select! {
            r = &mut work => return r,
            _ = tokio::time::sleep(wait) => {}
        }
        asking.get_or_insert_with(|| Asking::new(&mds.probe));
        asked += 1;
        wait = match asked {
            n if n < STEADY_CHECKS => QUESTION_GAP,
            n if n == STEADY_CHECKS => LEADER_CHECK,
            _ => (wait * 2).min(LEADER_CHECK_MAX),
        };
        let named = tokio::select! {
            r = &mut work => return r,
            named = leader_elsewhere(mds, addr) => named,
        };
        if let Some(leader) = named {
            tracing::info!(%addr, %leader, "a call waits at an MDS process that no longer leads; going to the one that does");
            mds.leave_for(addr, leader).await;
            // As if `addr` had answered "not leader" naming the leader:
            // its caller sends the call there at once.
            return Err(Error::NotLeader(leader.to_string()));
        }
    }
}

/// The leader another member of `mds` names, if it is not `addr`: asked
/// now, or the answer another call had less than `SHARED_ANSWER` ago.
async fn leader_elsewhere(mds: &RpcClient, addr: SocketAddr) -> Option<SocketAddr> {
    let mut last = mds.probe.last.lock().await;
    let named = match last.answer {
        Some((at, named)) if at.elapsed() < SHARED_ANSWER => named,
        _ => {
            let others: Vec<SocketAddr> = mds.addr_list().into_iter().filter(|a| *a != addr).collect();
            let turn = &mds.probe.turn;
            let other = *others.get(turn.load(std::sync::atomic::Ordering::Relaxed) % others.len().max(1))?;
            let asked = tokio::time::timeout(PROBE_LIMIT, ask_leader(mds, &mut last.conn, other, addr)).await;
            let named = match asked {
                Ok(Ok(named)) => named,
                _ => {
                    // Ask the next member next time.
                    turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    last.conn = None;
                    None
                }
            };
            last.answer = Some((Instant::now(), named));
            named
        }
    };
    named.filter(|l| *l != addr)
}

/// Member `other`'s answer to `Leader` (the address it names, if any,
/// once it is not `past` or `LEADER_WAIT` has passed), on the connection
/// kept for these questions, made anew if it is to another member or was
/// lost.
async fn ask_leader(mds: &RpcClient, conn: &mut Option<quinn::Connection>, other: SocketAddr, past: SocketAddr) -> Result<Option<SocketAddr>> {
    let kept = conn.take().filter(|c| c.remote_address() == other && c.close_reason().is_none());
    let c = match kept {
        Some(c) => c,
        None => mds.connect_member(other).await?,
    };
    let req = MdsReq::Leader { past: past.to_string(), wait_ms: LEADER_WAIT.as_millis() as u32 };
    let r = super::client::call_on::<_, MdsReply>(&c, &MdsCall::from(req), PROBE_LIMIT).await?;
    *conn = Some(c);
    match r {
        MdsReply { resp: MdsResp::Leader { addr }, .. } => Ok(addr.parse().ok()),
        other => Err(Error::Protocol(format!("unexpected reply to Leader: {other:?}"))),
    }
}

/// What to do after an answer (or none) from one member.
pub enum Next {
    /// Use this outcome.
    Done(Result<MdsReply>),
    /// Ask again, after `pause`: another member was chosen.
    Again(Duration),
}

/// Look at one attempt's outcome and, if another member should be asked,
/// point `mds` at it.
pub async fn follow(mds: &RpcClient, r: Result<MdsReply>) -> Next {
    // "Not leader", answered by the member or concluded while the call
    // waited there (`watched`), with the leader's address if one is known.
    let named = match &r {
        Ok(MdsReply { resp: MdsResp::Err(e), .. }) if e.code == Error::NotLeader(String::new()).code() => e.msg.clone(),
        Err(Error::NotLeader(hint)) => hint.clone(),
        // The client has moved past the member it could not reach.
        Err(e) if e.unreachable() && mds.members() > 1 => return Next::Again(NO_LEADER_PAUSE),
        _ => return Next::Done(r),
    };
    mds.redirect(&named).await;
    Next::Again(if named.is_empty() { NO_LEADER_PAUSE } else { Duration::ZERO })
}

/// One call to whichever member of `mds` leads, for up to [`FIND_LEADER`].
pub async fn call_leader(mds: &RpcClient, call: &MdsCall) -> Result<MdsReply> {
    let started = Instant::now();
    loop {
        let r = mds.call::<_, MdsReply>(call, &[]).await.map(|(reply, _)| reply);
        match follow(mds, r).await {
            Next::Done(r) => return r,
            Next::Again(_) if started.elapsed() >= FIND_LEADER => {
                return Err(Error::Unavailable(format!("no MDS of {} leads (looked for {FIND_LEADER:?})", mds.addrs())))
            }
            Next::Again(pause) => tokio::time::sleep(pause).await,
        }
    }
}

/// Ask whichever member `mds` calls for the MDS processes' addresses, and
/// add those it does not know (`RpcClient::learn`), if `LEARN_EVERY` has
/// passed since `last` (or it never asked). A failure is only logged: it
/// asks again next time.
pub async fn learn_members_when_due(mds: &RpcClient, last: &mut Option<Instant>) {
    if !learn_due(last) {
        return;
    }
    if let Err(e) = learn_members(mds).await {
        tracing::debug!(error = %e, "asking for the MDS processes' addresses failed");
    }
}

async fn learn_members(mds: &RpcClient) -> Result<()> {
    let (reply, _) = mds.call::<_, MdsReply>(&MdsCall::from(MdsReq::Members), &[]).await?;
    match reply.resp {
        MdsResp::Addrs(addrs) => {
            let addrs: Vec<SocketAddr> = addrs.iter().filter_map(|a| a.parse().ok()).collect();
            mds.learn(&addrs);
            Ok(())
        }
        MdsResp::Err(e) => Err(Error::from_wire(e.code, &e.msg)),
        other => Err(Error::Protocol(format!("unexpected reply to Members: {other:?}"))),
    }
}

/// Whether `learn_members` is due: never asked, or not for `LEARN_EVERY`;
/// marks it asked now when it is.
fn learn_due(last: &mut Option<Instant>) -> bool {
    let due = last.is_none_or(|t| t.elapsed() >= LEARN_EVERY);
    if due {
        *last = Some(Instant::now());
    }
    due
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::{init_cluster, Role};
    use crate::config::{MdsAddrs, TlsConfig, TransportConfig};
    use crate::rpc::{client_endpoint, server_endpoint, serve, Identity, Peer, Service};
    use bytes::Bytes;
    use std::sync::Arc;

    /// A member of a replicated MDS as a caller sees it: one that took
    /// the call and never answers (a leader cut off from its group, whose
    /// connection still answers keepalives), or one that leads and says so.
    struct Member {
        leads: Option<SocketAddr>,
        served: std::sync::atomic::AtomicUsize,
        /// The member each question of who leads said the caller waits at.
        asked_past: std::sync::Mutex<Vec<String>>,
    }

    impl Service for Member {
        type Req = MdsCall;
        type Resp = MdsReply;

        async fn call(&self, _peer: &Arc<Peer>, call: MdsCall, _payload: Bytes) -> (MdsReply, Vec<Bytes>) {
            let Some(me) = self.leads else {
                return std::future::pending().await;
            };
            let resp = match call.req {
                MdsReq::Leader { past, .. } => {
                    self.asked_past.lock().expect("lock").push(past);
                    MdsResp::Leader { addr: me.to_string() }
                }
                _ => {
                    self.served.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    MdsResp::Done
                }
            };
            (MdsReply { session: None, resp }, vec![])
        }

        fn error(e: Error) -> MdsReply {
            MdsReply { session: None, resp: MdsResp::Err(e.to_wire()) }
        }

        fn accepts(&self, _role: Role) -> bool {
            true
        }
    }

    fn member(dir: &std::path::Path, leads: bool) -> (SocketAddr, Arc<Member>, quinn::Endpoint) {
        let id = Identity::load(&TlsConfig::in_dir(dir, "mds")).expect("identity");
        let ep = server_endpoint(SocketAddr::from(([127, 0, 0, 1], 0)), &id, &TransportConfig::default(), Default::default()).expect("server");
        let addr = ep.local_addr().expect("address");
        let m = Arc::new(Member { leads: leads.then_some(addr), served: Default::default(), asked_past: Default::default() });
        tokio::spawn(serve(ep.clone(), m.clone(), Default::default()));
        (addr, m, ep)
    }

    /// A call that waits at a member that no longer leads goes to the
    /// leader another member names, although the first one's connection
    /// stays alive (without the question it would wait out the call's
    /// whole limit, a minute).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_call_stuck_at_a_member_that_no_longer_leads_goes_to_the_leader() {
        let dir = tempfile::tempdir().expect("temp dir");
        init_cluster(dir.path(), &dir.path().join("ca"), 1, false).expect("certificates");
        let (stuck, _, _a) = member(dir.path(), false);
        let (leader, led, _b) = member(dir.path(), true);
        let id = Identity::load(&TlsConfig::in_dir(dir.path(), "client")).expect("identity");
        let ep = client_endpoint(&id, &TransportConfig::default()).expect("client");
        let c = RpcClient::of_members(ep, &MdsAddrs(vec![stuck, leader]), &id, &TransportConfig::default()).expect("client");
        assert_eq!(c.addr(), stuck);
        let call = MdsCall::from(MdsReq::Statfs);
        let r = tokio::time::timeout(Duration::from_secs(20), call_leader(&c, &call)).await;
        assert!(matches!(r, Ok(Ok(MdsReply { resp: MdsResp::Done, .. }))), "{r:?}");
        assert_eq!(c.addr(), leader, "calls did not move to the leader");
        assert_eq!(led.served.load(std::sync::atomic::Ordering::Relaxed), 1);
        // The question named the member the call waited at, so that the
        // one asked can hold it until another leads.
        assert_eq!(*led.asked_past.lock().expect("lock"), vec![stuck.to_string()]);
    }
}
