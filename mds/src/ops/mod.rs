//! One file per operation: each holds the request's checks and lease
//! steps (`impl MdsService`) and its transaction over the shards
//! (`impl Namespace`). The mechanics they share (placement, records,
//! steps over two shards) are in namespace/; who may send a request and
//! how it is retried is the table in common/src/proto/requests.rs.

use crate::cluster::Holder;
use crate::once::Once;
use crate::service::MdsService;
use aifs_common::perm::Cred;
use aifs_common::proto::mds::ReqId;
use aifs_common::rpc::Peer;
use aifs_common::{InodeId, Result, SessionId};
use std::sync::Arc;

mod admin;
mod apply;
mod close;
mod fsck;
mod create;
mod getattr;
mod locks;
mod open;
mod osd;
mod session;
mod link;
mod lookup;
mod mkdir;
mod readdir;
mod rename;
mod rmdir;
mod setattr;
mod stripe;
mod symlink;
mod unlink;
mod xattr;

pub use session::stored_sessions;

/// One request being served: who sent it, for whom it acts (root
/// squashed where the certificate says so), its at-most-once record, and
/// the session under which its answer grants leases (sent back with the
/// reply, so that the client files them under the right session).
pub(crate) struct Call<'a> {
    pub peer: &'a Arc<Peer>,
    pub cred: &'a Cred,
    pub once: &'a Once<'a>,
    /// A `numbered` request's id (requests.rs).
    pub rid: Option<ReqId>,
    pub grant: Option<SessionId>,
}

impl MdsService {
    /// The caller, as the holder of leases, once it holds read leases on
    /// `dirs`, the directories its change is about to change: a client
    /// holding one's write lease sends what it made there first.
    pub(crate) async fn changing(&self, c: &Call<'_>, dirs: &[InodeId]) -> Result<Holder> {
        let cl = &self.ns.cluster;
        let h = cl.holder(c.peer);
        cl.acquire_read_all(&h, dirs).await?;
        Ok(h)
    }
}
