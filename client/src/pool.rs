//! Connections from the client to the MDS and the OSDs. The OSD map comes
//! from the MDS and is refreshed when an OSD is unknown or unreachable.
use aifs_common::certs::Role;
use aifs_common::proto::mds::{MdsReply, MdsReq, MdsResp, OsdState};
use aifs_common::proto::osd::{OsdReq, OsdResp};
use aifs_common::rpc::RpcClient;
use aifs_common::{Error, Result};
use bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

pub struct Pool {
    endpoint: quinn::Endpoint,
    pub mds: RpcClient,
    osds: RwLock<HashMap<u32, Arc<RpcClient>>>,
    /// OSDs the MDS marked down in the last map fetched.
    down: RwLock<HashSet<u32>>,
    refresh: tokio::sync::Mutex<()>,
}

impl Pool {
    pub fn new(endpoint: quinn::Endpoint, mds: SocketAddr) -> Self {
        Pool {
            mds: RpcClient::new(endpoint.clone(), mds, Role::Mds),
            endpoint,
            osds: RwLock::new(HashMap::new()),
            down: RwLock::new(HashSet::new()),
            refresh: tokio::sync::Mutex::new(()),
        }
    }

    /// One MDS call; an error reply becomes `Err`.
    pub async fn mds(&self, req: &MdsReq) -> Result<MdsResp> {
        self.mds_leased(req).await.0
    }

    /// One MDS call, with the session its leases were granted under (0:
    /// none). An error reply may carry one too: a negative lookup is cached
    /// under the directory's lease.
    pub async fn mds_leased(&self, req: &MdsReq) -> (Result<MdsResp>, u64) {
        match self.mds.call::<_, MdsReply>(req, &[]).await {
            Ok((MdsReply { session, resp: MdsResp::Err(e) }, _)) => (Err(Error::from_wire(e.code, &e.msg)), session),
            Ok((MdsReply { session, resp }, _)) => (Ok(resp), session),
            Err(e) => (Err(e), 0),
        }
    }

    pub async fn refresh_osds(&self) -> Result<()> {
        let _g = self.refresh.lock().await;
        let MdsResp::OsdMap { osds, .. } = self.mds(&MdsReq::OsdMap).await? else {
            return Err(Error::Protocol("unexpected reply to OsdMap".into()));
        };
        if let Ok(mut d) = self.down.write() {
            *d = osds.iter().filter(|o| o.state != OsdState::Up).map(|o| o.id).collect();
        }
        let mut map = self.osds.write().map_err(|_| Error::Io("lock poisoned".into()))?;
        for o in osds {
            let Ok(addr) = o.addr.parse::<SocketAddr>() else { continue };
            let same = map.get(&o.id).is_some_and(|c| c.addr() == addr);
            if !same {
                map.insert(o.id, Arc::new(RpcClient::new(self.endpoint.clone(), addr, Role::Osd)));
            }
        }
        Ok(())
    }

    /// Marked down in the last OSD map: tried only when nothing else is
    /// left.
    pub fn is_down(&self, id: u32) -> bool {
        self.down.read().is_ok_and(|d| d.contains(&id))
    }

    async fn osd(&self, id: u32) -> Result<Arc<RpcClient>> {
        if let Some(c) = self.osds.read().map_err(|_| Error::Io("lock poisoned".into()))?.get(&id) {
            return Ok(c.clone());
        }
        self.refresh_osds().await?;
        self.osds
            .read()
            .map_err(|_| Error::Io("lock poisoned".into()))?
            .get(&id)
            .cloned()
            .ok_or_else(|| Error::Unavailable(format!("osd.{id} is not in the OSD map")))
    }

    /// One OSD call. Every OSD request is idempotent, so a transport
    /// failure is retried once after refreshing the OSD map (the OSD may
    /// have restarted, possibly elsewhere).
    pub async fn osd_call(&self, id: u32, req: &OsdReq, payload: &[Bytes]) -> Result<(OsdResp, Bytes)> {
        let mut tries = 0;
        loop {
            let c = self.osd(id).await?;
            match c.call::<_, OsdResp>(req, payload).await {
                Ok((OsdResp::Err(e), _)) => return Err(Error::from_wire(e.code, &e.msg)),
                Ok(r) => return Ok(r),
                Err(Error::Transport(m)) if tries == 0 => {
                    tracing::debug!(osd = id, error = %m, "OSD call failed; retrying");
                    tries += 1;
                    let _ = self.refresh_osds().await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}
