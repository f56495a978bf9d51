//! The one table of MDS requests: for each, its name (logs and metrics),
//! the certificate roles that may send it, and four promises that the
//! client and the MDS keep alike:
//!
//! - `once`: applying it twice differs from applying it once (a second
//!   create fails with `EEXIST`, a second rename with `ENOENT`, a second
//!   session open finds the locks the first took back). The client sends
//!   it with a request id (`ReqId`), and the MDS answers a retry from the
//!   record of the first attempt (mds/src/once.rs).
//! - `numbered`: it carries a request id too, with no record kept: what
//!   it changes lives in the memory of the process that served it (an
//!   open or a close counts the session's opens of a file there), and
//!   that process tells a retry from a first attempt it served.
//! - `grace`: answered during the grace after an MDS restart or leader
//!   change, while sessions of the last run come back: it grants no lease
//!   and changes nothing a client caches. Every other request waits for
//!   the grace to end.
//! - `retried`: the client sends it again while the MDS cannot be
//!   reached. A heartbeat and a session close are not: their senders want
//!   to know at once.
//! - `counted`: served work, counted in `mdsctl status`; heartbeats are
//!   not.
//!
//! A new request gets its row here, in the one `match` with no `_` arm,
//! so it cannot be added without choosing each of these.

use super::mds::MdsReq;
use crate::certs::Role;
use crate::{InodeId, SessionId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub name: &'static str,
    pub roles: &'static [Role],
    pub once: bool,
    pub numbered: bool,
    pub grace: bool,
    pub retried: bool,
    pub counted: bool,
}

/// Namespace requests: clients, and admins (who act as root).
const NS: &[Role] = &[Role::Client, Role::Admin];
const CLIENT: &[Role] = &[Role::Client];
const ADMIN: &[Role] = &[Role::Admin];
const OSD: &[Role] = &[Role::Osd];
const MDS: &[Role] = &[Role::Mds];
/// The OSD map and who leads: an MDS process that does not lead shard 0
/// follows the OSD map of the one that does.
const MAP_READERS: &[Role] = &[Role::Client, Role::Admin, Role::Osd, Role::Mds];

/// A request applied as often as it is sent, retried, counted, and held
/// back during the grace: the common case, refined below.
const fn row(name: &'static str, roles: &'static [Role]) -> Rule {
    Rule { name, roles, once: false, numbered: false, grace: false, retried: true, counted: true }
}

impl Rule {
    const fn once(mut self) -> Self {
        self.once = true;
        self
    }

    const fn numbered(mut self) -> Self {
        self.numbered = true;
        self
    }

    const fn in_grace(mut self) -> Self {
        self.grace = true;
        self
    }

    const fn not_retried(mut self) -> Self {
        self.retried = false;
        self
    }

    const fn uncounted(mut self) -> Self {
        self.counted = false;
        self
    }

    /// Whether a certificate of `role` may send the request.
    pub fn allows(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

impl MdsReq {
    /// This request's row of the table.
    pub fn rule(&self) -> Rule {
        use MdsReq::*;
        match self {
            Lookup { .. } => row("lookup", NS),
            GetAttr { .. } => row("getattr", NS),
            SetAttr { .. } => row("setattr", NS),
            Create { .. } => row("create", NS).once(),
            TmpFile { .. } => row("tmpfile", NS).once(),
            Mkdir { .. } => row("mkdir", NS).once(),
            Unlink { .. } => row("unlink", NS).once(),
            Rmdir { .. } => row("rmdir", NS).once(),
            Rename { .. } => row("rename", NS).once(),
            Link { .. } => row("link", NS).once(),
            Symlink { .. } => row("symlink", NS).once(),
            Mknod { .. } => row("mknod", NS).once(),
            Readlink { .. } => row("readlink", NS),
            Readdir { .. } => row("readdir", NS),
            ReaddirPlus { .. } => row("readdirplus", NS),
            Statfs => row("statfs", NS),
            GetXattr { .. } => row("getxattr", NS),
            ListXattr { .. } => row("listxattr", NS),
            SetXattr { .. } => row("setxattr", NS).once(),
            RemoveXattr { .. } => row("removexattr", NS).once(),
            UpdateSize { .. } => row("update_size", NS),
            Accessed { .. } => row("accessed", NS),
            GetStripe { .. } => row("getstripe", NS),
            SetStripe { .. } => row("setstripe", ADMIN),
            Open { .. } => row("open", NS).numbered(),
            Close { .. } => row("close", NS).numbered(),
            GetLock { .. } => row("getlock", NS),
            SetLock { .. } => row("setlock", NS),
            Cap { .. } => row("cap", CLIENT),
            Reserve { .. } => row("reserve", CLIENT),
            Unreserve { .. } => row("unreserve", CLIENT),
            Apply { .. } => row("apply", CLIENT),
            Degraded { .. } => row("degraded", CLIENT).in_grace(),
            // A second session would leave the first, and the locks it
            // took back, to expire.
            OpenSession { .. } => row("open_session", NS).once().in_grace(),
            SessionHeartbeat { .. } => row("session_heartbeat", NS).in_grace().not_retried().uncounted(),
            CloseSession { .. } => row("close_session", NS).in_grace().not_retried(),
            OsdMap => row("osd_map", MAP_READERS).in_grace(),
            OsdHeartbeat { .. } => row("osd_heartbeat", OSD).in_grace().uncounted(),
            Status => row("status", ADMIN).in_grace(),
            EvictSession { .. } => row("evict_session", ADMIN).in_grace(),
            Leases { .. } => row("leases", ADMIN).in_grace(),
            Fsck { .. } => row("fsck", ADMIN),
            FsckStatus => row("fsck_status", ADMIN).in_grace(),
            OsdOut { .. } => row("osd_out", ADMIN),
            DegradedList { .. } => row("degraded_list", ADMIN).in_grace(),
            ClearDegraded { .. } => row("clear_degraded", ADMIN).in_grace(),
            Revoke { .. } => row("revoke", ADMIN).in_grace(),
            Revoked => row("revoked", ADMIN).in_grace(),
            // Answered by the front (mds/src/front.rs), never by the
            // namespace service: Raft, Members and Leader by every member,
            // membership changes by shard 0's leader (their steps for a
            // group led elsewhere by that group's leader), a shard message of
            // the two phases by the namespace served there.
            Raft { .. } => row("raft", MDS).in_grace().uncounted(),
            Shard { .. } => row("shard", MDS).in_grace(),
            AddMember { .. } => row("add_member", ADMIN).in_grace(),
            RemoveMember { .. } => row("remove_member", ADMIN).in_grace(),
            Members => row("members", MAP_READERS).in_grace().uncounted(),
            ShardLeaders => row("shard_leaders", MAP_READERS).in_grace().uncounted(),
            Leader { .. } => row("leader", MAP_READERS).in_grace().uncounted(),
            MoveShard { .. } => row("move_shard", ADMIN).in_grace(),
            GroupMember { .. } => row("group_member", MDS).in_grace(),
            FsckHere { .. } => row("fsck_here", MDS),
        }
    }

    /// The inode whose shard's leader answers this request; None: shard
    /// 0's leader, which keeps what is the cluster's (the OSD map, admin
    /// state), unless it is `per_process`. A change over two directories goes to the
    /// leader of the one whose entry it names first, its coordinator
    /// (mds/src/namespace/twophase.rs).
    pub fn routed_by(&self) -> Option<InodeId> {
        use MdsReq::*;
        match self {
            Lookup { parent, .. } | Create { parent, .. } | TmpFile { parent, .. } | Mkdir { parent, .. } => Some(*parent),
            Unlink { parent, .. } | Rmdir { parent, .. } | Rename { parent, .. } | Symlink { parent, .. } | Mknod { parent, .. } => Some(*parent),
            Link { newparent, .. } => Some(*newparent),
            GetAttr { ino } | SetAttr { ino, .. } | Readlink { ino } | Readdir { ino, .. } | ReaddirPlus { ino, .. } => Some(*ino),
            GetXattr { ino, .. } | ListXattr { ino } | SetXattr { ino, .. } | RemoveXattr { ino, .. } => Some(*ino),
            UpdateSize { ino, .. } | Accessed { ino } | GetStripe { ino } | SetStripe { ino, .. } | Open { ino, .. } | Close { ino, .. } => Some(*ino),
            GetLock { ino, .. } | SetLock { ino, .. } | Cap { ino, .. } | Degraded { ino, .. } | Leases { ino } | ClearDegraded { ino, .. } => Some(*ino),
            Reserve { dir, .. } => Some(*dir),
            Unreserve { inos } => inos.first().copied(),
            Apply { ops, .. } => ops.first().map(|o| o.parent().unwrap_or_else(|| o.ino())),
            DegradedList { ino } => *ino,
            Statfs | OpenSession { .. } | SessionHeartbeat { .. } | CloseSession { .. } | OsdMap | OsdHeartbeat { .. } => None,
            Status | EvictSession { .. } | Fsck { .. } | FsckStatus | OsdOut { .. } | Revoke { .. } | Revoked => None,
            Raft { .. } | Shard { .. } | AddMember { .. } | RemoveMember { .. } | Members | ShardLeaders | Leader { .. } | MoveShard { .. } => None,
            GroupMember { .. } | FsckHere { .. } => None,
        }
    }

    /// Answered by the MDS process it is sent to, if that process serves
    /// any shard: a client's session is with each process it speaks to,
    /// and each checks the files of the shards it leads.
    pub fn per_process(&self) -> bool {
        matches!(self, MdsReq::OpenSession { .. } | MdsReq::SessionHeartbeat { .. } | MdsReq::CloseSession { .. } | MdsReq::FsckHere { .. })
    }

    /// Name `session` as the one this request is made under, for a
    /// request that names one (a close, a lock, applied directory
    /// changes): the client's session with the process it goes to.
    pub fn set_session(&mut self, id: SessionId) {
        use MdsReq::*;
        match self {
            Close { session, .. } | GetLock { session, .. } | SetLock { session, .. } | Apply { session, .. } => *session = Some(id),
            _ => {}
        }
    }

    /// Applying this request twice differs from applying it once: the
    /// MDS answers a retry from its record (`Rule::once`).
    pub fn once_only(&self) -> bool {
        self.rule().once
    }

    /// It carries a request id (`Rule::once` or `Rule::numbered`).
    pub fn carries_id(&self) -> bool {
        let r = self.rule();
        r.once || r.numbered
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::mds::GroupStep;

    #[test]
    fn the_table_keeps_the_promises_the_wire_relies_on() {
        let create = MdsReq::Create { parent: InodeId(1), name: "f".into(), mode: 0o644, exclusive: false };
        assert!(create.once_only() && !create.rule().grace && create.rule().allows(Role::Client));
        assert!(!create.rule().allows(Role::Osd));
        let beat = MdsReq::SessionHeartbeat { id: crate::SessionId(0), io: Default::default() };
        assert!(beat.rule().grace && !beat.rule().retried && !beat.rule().counted);
        let raft = MdsReq::Raft { shard: 0, len: 0 };
        assert!(raft.rule().allows(Role::Mds) && !raft.rule().allows(Role::Admin));
        let shard = MdsReq::Shard { shard: 0, len: 0 };
        assert!(shard.rule().allows(Role::Mds) && !shard.rule().allows(Role::Client) && !shard.rule().allows(Role::Admin));
        let step = MdsReq::GroupMember { shard: 1, step: GroupStep::Remove { id: 2 } };
        assert!(step.rule().allows(Role::Mds) && !step.rule().allows(Role::Admin), "an admin changes membership through shard 0's leader");
        assert!(!MdsReq::GetAttr { ino: InodeId(1) }.once_only());
        assert!(!MdsReq::GetAttr { ino: InodeId(1) }.carries_id());
        let open = MdsReq::Open { ino: InodeId(1), write: false, first: true, exclusive: false };
        assert!(open.carries_id() && !open.once_only(), "a retried open is told from a first one, and has no record");
        assert!(create.carries_id());
        let link = MdsReq::Link { ino: InodeId(1), newparent: InodeId(2), newname: "l".into() };
        assert_eq!(link.routed_by(), Some(InodeId(2)), "a link is coordinated where its new name goes");
        assert_eq!(MdsReq::OsdMap.routed_by(), None);
    }
}
