//! `mdsctl fsck`, asked of shard 0's leader. Each process that leads
//! shards checks the files of those shards and the objects whose inodes
//! are theirs (fsck.rs): it reads its own copies as their leader, and
//! knows which of their files are open. Shard 0's leader starts its own
//! check and those of the other processes that lead a shard
//! (`MdsReq::FsckHere`), and adds their reports up.
use super::Call;
use crate::service::MdsService;
use aifs_common::proto::mds::{FsckReport, MdsCall, MdsReply, MdsReq, MdsResp};
use aifs_common::{Error, Result};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// How long a process that leads shards is given to answer.
const PART_WAIT: Duration = Duration::from_secs(5);

impl MdsService {
    pub(crate) async fn fsck(&self, _c: &mut Call<'_>, repair: bool) -> Result<MdsResp> {
        let here = self.fsck.start(repair);
        Ok(MdsResp::Fsck(self.with_the_other_parts(here, Some(repair)).await))
    }

    pub(crate) async fn fsck_status(&self, _c: &mut Call<'_>) -> Result<MdsResp> {
        Ok(MdsResp::Fsck(self.with_the_other_parts(self.fsck.status(), None).await))
    }

    /// The check of the shards this process leads, for shard 0's leader.
    pub(crate) async fn fsck_here(&self, _c: &mut Call<'_>, repair: Option<bool>) -> Result<MdsResp> {
        Ok(MdsResp::Fsck(match repair {
            Some(repair) => self.fsck.start(repair),
            None => self.fsck.status(),
        }))
    }

    /// `report`, with the checks of the shards led by other processes
    /// added, each asked `repair` (as `MdsReq::FsckHere`). A process that
    /// does not answer leaves an error in the report: its shards are not
    /// checked.
    async fn with_the_other_parts(&self, mut report: FsckReport, repair: Option<bool>) -> FsckReport {
        let parts = self.other_leaders().into_iter().map(|(addr, shards)| async move {
            let part = self.fsck_part(&addr, repair).await;
            part.map_err(|e| match addr.is_empty() {
                true => format!("no MDS is known to lead shards {shards:?}, which are not checked"),
                false => format!("the MDS at {addr}, which leads shards {shards:?}, gave no fsck report: {e}"),
            })
        });
        for part in futures::future::join_all(parts).await {
            match part {
                Ok(part) => report.add(part),
                Err(e) => {
                    report.error.get_or_insert(e);
                }
            }
        }
        report
    }

    /// The processes that lead the shards not led here, with those shards.
    fn other_leaders(&self) -> BTreeMap<String, Vec<u32>> {
        let mut out: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for s in (0..self.ns.shards.len() as u32).filter(|s| !self.ns.leads(*s)) {
            out.entry(self.replica.leading_addr_of(s)).or_default().push(s);
        }
        out
    }

    async fn fsck_part(&self, addr: &str, repair: Option<bool>) -> Result<FsckReport> {
        let at: SocketAddr = addr.parse().map_err(|_| Error::Unavailable("no leader is known".into()))?;
        let peers = self.replica.members.peers.as_ref().ok_or_else(|| Error::Unavailable("this MDS has no other members".into()))?;
        let call = MdsCall::from(MdsReq::FsckHere { repair });
        let sent = tokio::time::timeout(PART_WAIT, peers.to(at).call::<_, MdsReply>(&call, &[])).await;
        let (reply, _) = sent.map_err(|_| Error::Unavailable(format!("no answer in {PART_WAIT:?}")))??;
        match reply.resp {
            MdsResp::Fsck(r) => Ok(r),
            MdsResp::Err(e) => Err(Error::from_wire(e.code, &e.msg)),
            other => Err(Error::Protocol(format!("a check of shards answered with {other:?}"))),
        }
    }
}
