//! A client's last close of a file, and freeing the nameless files
//! nobody has open any more.
use crate::service::MdsService;
use super::Call;
use aifs_common::{InodeId, Result, SessionId};
use aifs_common::proto::mds::MdsResp;

impl MdsService {
    /// Free nameless files nobody has open any more.
    pub async fn purge(&self) {
        match self.ns.purge_orphans().await {
            Ok(0) => {}
            Ok(n) => {
                tracing::debug!(files = n, "freed files unlinked while open");
                self.gc.wake.notify_one();
            }
            Err(e) => e.log("freeing unlinked files failed"),
        }
    }

    pub(crate) async fn close(&self, c: &mut Call<'_>, ino: InodeId, session: Option<SessionId>) -> Result<MdsResp> {
        let peer = c.peer;
        let cl = &self.ns.cluster;
        let s = cl.session_for(peer, session)?;
        if s.is_some_and(|s| cl.session_writes(s, ino)) {
            // Closing a file written: fallocate changes no size.
            self.meter.changed(ino);
        }
        // (a close sent again after a lost reply counts once)
        let counted = s.filter(|_| cl.counts(c.rid, c.rid.is_some_and(|r| r.retry)));
        if counted.is_some_and(|s| cl.closed(s, ino)) {
            self.purge().await;
        }
        Ok(MdsResp::Done)
    }
}
