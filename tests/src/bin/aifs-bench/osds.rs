//! The OSDs' own count of what they served (`OsdReq::Stats`), asked over
//! QUIC with the admin certificate: a load served from the client's page
//! cache must read nothing on them.
use aifs_common::certs::Role;
use aifs_common::proto::mds::{MdsCall, MdsReply, MdsReq, MdsResp};
use aifs_common::rpc::{self, Identity, RpcClient};
use aifs_common::OsdId;
use aifs_tests::proc::ProcCluster;
use anyhow::{bail, Result};

pub struct OsdCounters {
    rt: tokio::runtime::Runtime,
    osds: Vec<RpcClient>,
}

/// A client of every OSD in the MDS's map, holding `role`'s certificate:
/// (OSD id, client). Runs inside a tokio runtime.
pub async fn osd_clients(cl: &ProcCluster, role: Role) -> Result<Vec<(OsdId, RpcClient)>> {
    let transport = cl.transport()?;
    let admin = rpc::client_endpoint(&Identity::load(&aifs_tests::tls(cl.dir.path(), Role::Admin))?, &transport)?;
    let mds = RpcClient::new(admin, cl.mds_addr, Role::Mds);
    let map = match mds.call::<_, MdsReply>(&MdsCall::from(MdsReq::OsdMap), &[]).await?.0.resp {
        MdsResp::OsdMap { osds, .. } => osds,
        other => bail!("unexpected reply to OsdMap: {other:?}"),
    };
    let ep = rpc::client_endpoint(&Identity::load(&aifs_tests::tls(cl.dir.path(), role))?, &transport)?;
    map.iter().map(|o| Ok((o.id, RpcClient::new(ep.clone(), o.addr.parse()?, Role::Osd)))).collect()
}

impl OsdCounters {
    pub fn new(cl: &ProcCluster) -> Result<OsdCounters> {
        // A worker of its own keeps the connections alive between asks.
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        let osds = rt.block_on(osd_clients(cl, Role::Admin))?.into_iter().map(|(_, c)| c).collect();
        Ok(OsdCounters { rt, osds })
    }

    /// Bytes all OSDs have read for their clients since they started.
    pub fn read_bytes(&self) -> Result<u64> {
        Ok(self.rt.block_on(aifs_tests::osd_read_bytes(&self.osds))?)
    }
}
