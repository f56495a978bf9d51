//! The two phases' messages (namespace/twophase.rs) between MDS
//! processes: `MdsReq::Shard` on the MDS's own QUIC endpoint with mTLS,
//! the message rkyv-encoded raw after the header, sent to the process
//! that leads the shard it names. Only an MDS certificate may send it
//! (the request table); a message that does not decode gets an error
//! reply and the endpoint serves on.
use crate::namespace::twophase::{Peers, ShardMsg, ShardReply};
use crate::namespace::Namespace;
use crate::records::decode_stored;
use crate::store::raft::net::PeerClients;
use aifs_common::proto::frame::encode_any;
use aifs_common::proto::mds::{MdsCall, MdsReply, MdsReq, MdsResp};
use aifs_common::{Error, Result};
use bytes::Bytes;
use futures::future::BoxFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How long a message waits for its answer: a prepare waits for the
/// shard's fence, which changes hold for a few commits.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// Where the leader of a shard is, as this process last heard.
pub type LeaderOf = Arc<dyn Fn(u32) -> Option<SocketAddr> + Send + Sync>;

/// The way to the other shards' leaders.
pub struct ShardLinks {
    clients: PeerClients,
    leader_of: LeaderOf,
}

impl ShardLinks {
    pub fn new(clients: PeerClients, leader_of: LeaderOf) -> Self {
        ShardLinks { clients, leader_of }
    }
}

impl Peers for ShardLinks {
    fn send(&self, msg: ShardMsg) -> BoxFuture<'static, Result<ShardReply>> {
        let shard = msg.shard();
        let client = (self.leader_of)(shard).map(|a| self.clients.to(a));
        Box::pin(async move {
            let client = client.ok_or_else(|| Error::Unavailable(format!("no leader of shard {shard} is known")))?;
            let body = encode_any(&msg)?.to_vec();
            let call = MdsCall::from(MdsReq::Shard { shard, len: body.len() as u64 });
            let sent = tokio::time::timeout(ANSWER_WITHIN, client.call::<_, MdsReply>(&call, &[Bytes::from(body)])).await;
            let (reply, bytes) = sent.map_err(|_| Error::Unavailable(format!("shard {shard}'s leader gave no answer in {ANSWER_WITHIN:?}")))??;
            match reply.resp {
                MdsResp::Shard { .. } => decode_stored(&bytes),
                MdsResp::Err(e) => Err(Error::from_wire(e.code, &e.msg)),
                other => Err(Error::Protocol(format!("a shard message answered with {other:?}"))),
            }
        })
    }
}

/// Answer one message with the namespace served here.
pub async fn answer(ns: &Arc<Namespace>, payload: &[u8]) -> Result<(MdsReply, Vec<Bytes>)> {
    let msg: ShardMsg = decode_stored(payload).map_err(|e| Error::Protocol(format!("a shard message that does not decode: {e}")))?;
    let reply = ns.answer_shard(msg).await?;
    let out = encode_any(&reply)?.to_vec();
    Ok((MdsReply { session: None, resp: MdsResp::Shard { len: out.len() as u64 } }, vec![Bytes::from(out)]))
}
