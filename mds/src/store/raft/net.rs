//! Raft between MDS processes: openraft's three messages (append, vote,
//! snapshot chunk) as rkyv structs of the codec's plain types, carried as
//! `MdsReq::Raft` over the MDS's own QUIC endpoint with mTLS. The sender
//! is the RPC client of one peer MDS ([`Peers`]); the receiver is
//! [`serve`], which the MDS calls only for a caller whose certificate is
//! an MDS's.
use super::codec::{decode, encode, DiskEntry, DiskLogId, DiskStoredMembership, DiskVote};
use super::{Cfg, NodeId, ShardRaft};
use aifs_common::certs::Role;
use aifs_common::proto::frame::{pack, unpack};
use aifs_common::proto::mds::{MdsCall, MdsReply, MdsReq, MdsResp};
use aifs_common::proto::MAX_PAYLOAD;
use aifs_common::rpc::RpcClient;
use aifs_common::{Error, Result};
use bytes::Bytes;
use dashmap::DashMap;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest, VoteResponse};
use openraft::{BasicNode, LogId, SnapshotMeta};
use rkyv::{Archive, Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;

/// One message to a member of a group.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub enum WireReq {
    Append { vote: DiskVote, prev: Option<DiskLogId>, entries: Vec<DiskEntry>, commit: Option<DiskLogId> },
    Vote { vote: DiskVote, last: Option<DiskLogId> },
    Snapshot { vote: DiskVote, last: Option<DiskLogId>, membership: DiskStoredMembership, id: String, offset: u64, data: Vec<u8>, done: bool },
    /// Has `member` been recorded as holding the log, and does it vote in
    /// shard 0's group? A member starting with no groups asks, to learn
    /// whether it lost its data (holders.rs).
    Held { member: NodeId },
    /// Which groups does the member hold, and who leads them as it sees
    /// it? Asked by the members outside some groups (others.rs).
    Groups,
}

/// A group as one of its members sees it (`WireResp::Groups`).
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct GroupSeen {
    pub shard: u32,
    /// The member that answers leads the group, within its lease.
    pub leads: bool,
    /// The leader it knows, and its address ("" if it knows none that
    /// is not silent).
    pub leader: Option<NodeId>,
    pub leader_addr: String,
    /// The voting members.
    pub voters: Vec<NodeId>,
    /// The members that do not vote yet (being added).
    pub learners: Vec<NodeId>,
    /// The inodes in the member's copy of the shard (for statfs).
    pub inodes: u64,
}

/// Its answer.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub enum WireResp {
    Appended(Appended),
    Voted { vote: DiskVote, granted: bool, last: Option<DiskLogId> },
    Installed { vote: DiskVote },
    /// The member could not take it (its group stopped, a snapshot chunk
    /// out of order): why, in words.
    Refused(String),
    Held { held: bool, votes: bool },
    Groups(Vec<GroupSeen>),
}

#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub enum Appended {
    Success,
    Partial(Option<DiskLogId>),
    Conflict,
    HigherVote(DiskVote),
}

fn log_id(l: &Option<LogId<NodeId>>) -> Option<DiskLogId> {
    l.as_ref().map(DiskLogId::from)
}

fn from_disk(l: &Option<DiskLogId>) -> Option<LogId<NodeId>> {
    l.as_ref().map(LogId::from)
}

/// Answer `req` as shard group `raft`'s member; `standing`, whether a
/// member has been recorded as holding the log and votes. A group not
/// `made` yet answers only that. `heard` is called when an append from
/// the leader of this member's term is taken; `asked` with the candidate
/// of a vote request; `report` says what this process holds
/// (`WireReq::Groups`).
pub async fn serve(
    raft: &ShardRaft,
    req: &[u8],
    made: bool,
    standing: impl FnOnce(NodeId) -> Result<(bool, bool)>,
    heard: impl FnOnce(),
    asked: impl FnOnce(NodeId),
    report: impl FnOnce() -> Vec<GroupSeen>,
) -> Result<Vec<u8>> {
    let resp = match decode::<WireReq>(&unpack(req, MAX_PAYLOAD as usize)?)? {
        WireReq::Held { member } => {
            let (held, votes) = standing(member)?;
            WireResp::Held { held, votes }
        }
        WireReq::Groups => WireResp::Groups(report()),
        _ if !made => WireResp::Refused("this MDS is starting: its groups are not made yet".into()),
        WireReq::Append { vote, prev, entries, commit } => {
            let rpc = AppendEntriesRequest::<Cfg> {
                vote: (&vote).into(),
                prev_log_id: from_disk(&prev),
                entries: entries.into_iter().map(TryInto::try_into).collect::<Result<_>>()?,
                leader_commit: from_disk(&commit),
            };
            let resp = match raft.append_entries(rpc).await {
                Ok(AppendEntriesResponse::Success) => WireResp::Appended(Appended::Success),
                Ok(AppendEntriesResponse::PartialSuccess(l)) => WireResp::Appended(Appended::Partial(log_id(&l))),
                Ok(AppendEntriesResponse::Conflict) => WireResp::Appended(Appended::Conflict),
                Ok(AppendEntriesResponse::HigherVote(v)) => return packed(&WireResp::Appended(Appended::HigherVote((&v).into()))),
                Err(e) => return packed(&WireResp::Refused(e.to_string())),
            };
            heard();
            resp
        }
        WireReq::Vote { vote, last } => {
            asked(vote.node);
            match raft.vote(VoteRequest { vote: (&vote).into(), last_log_id: from_disk(&last) }).await {
                Ok(r) => WireResp::Voted { vote: (&r.vote).into(), granted: r.vote_granted, last: log_id(&r.last_log_id) },
                Err(e) => WireResp::Refused(e.to_string()),
            }
        }
        WireReq::Snapshot { vote, last, membership, id, offset, data, done } => {
            let rpc = InstallSnapshotRequest::<Cfg> {
                vote: (&vote).into(),
                meta: SnapshotMeta { last_log_id: from_disk(&last), last_membership: (&membership).into(), snapshot_id: id },
                offset,
                data,
                done,
            };
            match raft.install_snapshot(rpc).await {
                Ok(r) => WireResp::Installed { vote: (&r.vote).into() },
                Err(e) => WireResp::Refused(e.to_string()),
            }
        }
    };
    packed(&resp)
}

/// A Raft message as it crosses the network: rkyv, its runs of zeros
/// left out as a frame's header's are (most of a small message is the
/// padding of its enums; a follower's bytes a file are what limits the
/// scaling run).
fn packed<T>(v: &T) -> Result<Vec<u8>>
where
    T: for<'a> rkyv::Serialize<rkyv::api::high::HighSerializer<rkyv::util::AlignedVec, rkyv::ser::allocator::ArenaHandle<'a>, rkyv::rancor::Error>>,
{
    Ok(pack(&encode(v)?))
}

/// One RPC client per peer MDS, shared by every group's network.
#[derive(Clone)]
pub struct PeerClients {
    endpoint: quinn::Endpoint,
    /// Connections leave a silent peer soon (`member_client_config`).
    config: quinn::ClientConfig,
    clients: Arc<DashMap<SocketAddr, Arc<RpcClient>>>,
    /// When each peer last answered a Raft message of any group.
    answered: Answered,
}

type Answered = Arc<DashMap<SocketAddr, std::time::Instant>>;

impl PeerClients {
    pub fn new(endpoint: quinn::Endpoint, config: quinn::ClientConfig) -> Self {
        PeerClients { endpoint, config, clients: Default::default(), answered: Default::default() }
    }

    /// The peer at `addr` answered a Raft message within `within`: a
    /// leader sends its members one at least every heartbeat.
    pub fn answers(&self, addr: SocketAddr, within: std::time::Duration) -> bool {
        self.answered.get(&addr).is_some_and(|at| at.elapsed() < within)
    }

    pub(crate) fn to(&self, addr: SocketAddr) -> Arc<RpcClient> {
        let new = || Arc::new(RpcClient::new(self.endpoint.clone(), addr, Role::Mds).with_config(self.config.clone()));
        self.clients.entry(addr).or_insert_with(new).clone()
    }

    /// Send `req` for shard `shard`'s group to the MDS at `addr`; its
    /// answer within `limit`.
    pub async fn ask(&self, addr: SocketAddr, shard: u32, req: &WireReq, limit: std::time::Duration) -> Result<WireResp> {
        exchange(&self.to(addr), shard, req, limit).await
    }
}

/// Send `req` for shard `shard`'s group over `client`; the answer within
/// `limit` (a late one is an I/O error, not the peer unreachable).
async fn exchange(client: &RpcClient, shard: u32, req: &WireReq, limit: std::time::Duration) -> Result<WireResp> {
    let body = packed(req)?;
    let call = MdsCall::from(MdsReq::Raft { shard, len: body.len() as u64 });
    let sent = tokio::time::timeout(limit, client.call::<_, MdsReply>(&call, &[Bytes::from(body)])).await;
    let (reply, bytes) = sent.map_err(|_| Error::Io(format!("no answer in {limit:?}")))??;
    match reply.resp {
        MdsResp::Raft { .. } => decode::<WireResp>(&unpack(&bytes, MAX_PAYLOAD as usize)?),
        // The peer's own error: it answered, so not "unreachable".
        MdsResp::Err(e) => Err(Error::Io(format!("refused: {}", Error::from_wire(e.code, &e.msg)))),
        other => Err(Error::Protocol(format!("unexpected answer {other:?}"))),
    }
}

/// The network of shard `shard`'s group: members are reached at the
/// address their membership entry names.
pub struct Peers {
    pub shard: u32,
    /// None: a one-member group, which never sends.
    pub clients: Option<PeerClients>,
}

/// The way to one member of one group.
pub struct Peer {
    shard: u32,
    target: NodeId,
    client: std::result::Result<Arc<RpcClient>, String>,
    answered: Option<Answered>,
}

impl RaftNetworkFactory<Cfg> for Peers {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        let client = match &self.clients {
            None => Err(format!("MDS {target} cannot be reached: this MDS holds one-member groups only")),
            Some(c) => node.addr.parse::<SocketAddr>().map(|a| c.to(a)).map_err(|e| format!("MDS {target} has a bad address {:?}: {e}", node.addr)),
        };
        let answered = self.clients.as_ref().map(|c| c.answered.clone());
        Peer { shard: self.shard, target, client, answered }
    }
}

type RpcResult<T, E = openraft::error::Infallible> = std::result::Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

fn unreachable<E: std::error::Error>(why: String) -> RPCError<NodeId, BasicNode, E> {
    RPCError::Unreachable(Unreachable::new(&std::io::Error::other(why)))
}

fn refused<E: std::error::Error>(why: String) -> RPCError<NodeId, BasicNode, E> {
    RPCError::Network(NetworkError::new(&std::io::Error::other(why)))
}

impl Peer {
    /// Send `req`; its answer, or why there is none as openraft wants it:
    /// unreachable (back off) or a network error (try again).
    async fn send<E: std::error::Error>(&self, req: &WireReq, option: &RPCOption) -> std::result::Result<WireResp, RPCError<NodeId, BasicNode, E>> {
        let client = self.client.as_ref().map_err(|e| unreachable(e.clone()))?;
        let target = self.target;
        let answer = exchange(client, self.shard, req, option.hard_ttl()).await;
        if let (Ok(_), Some(a)) = (&answer, &self.answered) {
            a.insert(client.addr(), std::time::Instant::now());
        }
        match answer {
            Ok(WireResp::Refused(why)) => Err(refused(format!("MDS {target}: {why}"))),
            Ok(r) => Ok(r),
            Err(e) if e.unreachable() => Err(unreachable(format!("MDS {target}: {e}"))),
            Err(e) => Err(refused(format!("MDS {target}: {e}"))),
        }
    }
}

fn unexpected<E: std::error::Error>(target: NodeId, r: WireResp) -> RPCError<NodeId, BasicNode, E> {
    refused(format!("MDS {target}: answer of another kind: {r:?}"))
}

impl RaftNetwork<Cfg> for Peer {
    async fn append_entries(&mut self, rpc: AppendEntriesRequest<Cfg>, option: RPCOption) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let req = WireReq::Append {
            vote: (&rpc.vote).into(),
            prev: log_id(&rpc.prev_log_id),
            entries: rpc.entries.iter().map(DiskEntry::from).collect(),
            commit: log_id(&rpc.leader_commit),
        };
        match self.send(&req, &option).await? {
            WireResp::Appended(a) => Ok(match a {
                Appended::Success => AppendEntriesResponse::Success,
                Appended::Partial(l) => AppendEntriesResponse::PartialSuccess(from_disk(&l)),
                Appended::Conflict => AppendEntriesResponse::Conflict,
                Appended::HigherVote(v) => AppendEntriesResponse::HigherVote((&v).into()),
            }),
            other => Err(unexpected(self.target, other)),
        }
    }

    async fn install_snapshot(&mut self, rpc: InstallSnapshotRequest<Cfg>, option: RPCOption) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        let req = WireReq::Snapshot {
            vote: (&rpc.vote).into(),
            last: log_id(&rpc.meta.last_log_id),
            membership: (&rpc.meta.last_membership).into(),
            id: rpc.meta.snapshot_id,
            offset: rpc.offset,
            data: rpc.data,
            done: rpc.done,
        };
        match self.send(&req, &option).await? {
            WireResp::Installed { vote } => Ok(InstallSnapshotResponse { vote: (&vote).into() }),
            other => Err(unexpected(self.target, other)),
        }
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, option: RPCOption) -> RpcResult<VoteResponse<NodeId>> {
        let req = WireReq::Vote { vote: (&rpc.vote).into(), last: log_id(&rpc.last_log_id) };
        match self.send(&req, &option).await? {
            WireResp::Voted { vote, granted, last } => Ok(VoteResponse { vote: (&vote).into(), vote_granted: granted, last_log_id: from_disk(&last) }),
            other => Err(unexpected(self.target, other)),
        }
    }
}
