//! Calls to a replicated MDS: only the process that leads the shards'
//! groups serves; the others answer "not leader", naming the leader when
//! they know it. A call follows those answers, and moves on from a member
//! it cannot reach, until one serves or an election has had time to end.
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
    match r {
        Ok(MdsReply { resp: MdsResp::Err(e), .. }) if e.code == Error::NotLeader(String::new()).code() => {
            mds.redirect(&e.msg).await;
            Next::Again(if e.msg.is_empty() { NO_LEADER_PAUSE } else { Duration::ZERO })
        }
        // The client has moved past the member it could not reach.
        Err(e) if e.unreachable() && mds.members() > 1 => Next::Again(NO_LEADER_PAUSE),
        other => Next::Done(other),
    }
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
