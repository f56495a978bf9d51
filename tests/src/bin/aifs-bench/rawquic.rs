//! The transport's ceiling: a file's objects written and read straight
//! from the OSDs over QUIC by the bench process itself, with the client's
//! certificate and a capability from the MDS, as many requests in flight as the client keeps, and no
//! FUSE, no kernel page cache and no client cache between. Each aifs row
//! can then be read against what the same OSDs, network stack and TLS give
//! on the same two cores in the same run.
use crate::osds;
use crate::plan::shuffle;
use crate::util::{cpu_secs, Progress, MIB};
use aifs_common::certs::Role;
use aifs_common::layout::Layout;
use aifs_common::proto::mds::{MdsCall, MdsReply, MdsReq, MdsResp};
use aifs_common::cap::Cap;
use aifs_common::proto::osd::{block_crcs, OsdCall, OsdReq, OsdResp};
use aifs_common::rpc::{self, Identity, RpcClient};
use aifs_common::{InodeId, ObjectId};
use aifs_tests::proc::ProcCluster;
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use futures::StreamExt;
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// Requests in flight, as the client's write-behind and prefetch keep them.
pub const IN_FLIGHT: usize = 16;

pub struct RawQuic {
    rt: tokio::runtime::Runtime,
    mds: RpcClient,
    /// The MDS as a client: capabilities come from it.
    mds_client: RpcClient,
    osds: HashMap<u32, Arc<RpcClient>>,
    /// The same OSDs under the admin certificate, which needs no
    /// capability: what checking one costs is the difference.
    admin_osds: HashMap<u32, Arc<RpcClient>>,
    /// The aifs processes and this one, whose CPU a step is charged.
    pids: Vec<u32>,
}

/// One raw step: MB/s (or IOPS), and CPU seconds per GiB of the aifs
/// processes and this one; latencies in µs for random reads.
#[derive(Clone, Copy, Default)]
pub struct RawMeasure {
    pub rate: f64,
    pub cpu_per_gib: f64,
    pub p50: f64,
    pub p99: f64,
}

/// A file on the mount, as the OSDs know it.
struct Objects {
    ino: InodeId,
    layout: Layout,
    cap: Cap,
}

impl Objects {
    /// Where file offset `off` lives: the object and the offset in it, and
    /// the first replica's OSD.
    fn place(&self, off: u64) -> (ObjectId, u64, u32) {
        let (index, obj_off) = self.layout.locate(off);
        let osd = self.layout.object_osds(index).first().map_or(u32::MAX, |o| o.0);
        (ObjectId { ino: self.ino, index }, obj_off, osd)
    }

    fn call(&self, req: OsdReq) -> OsdCall {
        OsdCall { cap: Some(self.cap), req }
    }
}

impl RawQuic {
    /// Connections to the MDS (admin) and to every OSD (client), made
    /// before any step is timed.
    pub fn new(cl: &ProcCluster, aifs_pids: &[u32]) -> Result<RawQuic> {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        let (mds, mds_client, osds, admin_osds) = rt.block_on(async {
            let admin = rpc::client_endpoint(&Identity::load(&aifs_tests::tls(cl.dir.path(), Role::Admin))?, &cl.transport()?)?;
            let mds = RpcClient::new(admin, cl.mds_addr, Role::Mds);
            let client = rpc::client_endpoint(&Identity::load(&aifs_tests::tls(cl.dir.path(), Role::Client))?, &cl.transport()?)?;
            let mds_client = RpcClient::new(client, cl.mds_addr, Role::Mds);
            let osds: HashMap<u32, Arc<RpcClient>> = osds::osd_clients(cl, Role::Client).await?.into_iter().map(|(id, c)| (id.0, Arc::new(c))).collect();
            let admin_osds: HashMap<u32, Arc<RpcClient>> = osds::osd_clients(cl, Role::Admin).await?.into_iter().map(|(id, c)| (id.0, Arc::new(c))).collect();
            for c in osds.values().chain(admin_osds.values()) {
                c.connection().await?;
            }
            anyhow::Ok((mds, mds_client, osds, admin_osds))
        })?;
        let mut pids = aifs_pids.to_vec();
        pids.push(std::process::id());
        Ok(RawQuic { rt, mds, mds_client, osds, admin_osds, pids })
    }

    fn objects(&self, path: &Path) -> Result<Objects> {
        let ino = InodeId(std::fs::metadata(path)?.ino());
        let resp = self.rt.block_on(self.mds.call::<_, MdsReply>(&MdsCall::from(MdsReq::GetStripe { ino }), &[]))?.0.resp;
        let layout = match resp {
            MdsResp::Stripe { attr, .. } => attr.layout.context("the file has no layout")?,
            other => bail!("unexpected reply to GetStripe: {other:?}"),
        };
        let call = MdsCall::from(MdsReq::Cap { ino, write: true });
        match self.rt.block_on(self.mds_client.call::<_, MdsReply>(&call, &[]))?.0.resp {
            MdsResp::Cap(cap) => Ok(Objects { ino, layout, cap }),
            other => bail!("unexpected reply to Cap: {other:?}"),
        }
    }

    fn osd(&self, id: u32) -> Result<Arc<RpcClient>> {
        self.osds.get(&id).cloned().with_context(|| format!("osd.{id} is not in the map"))
    }

    /// Run `step`, charging it the CPU of every process: its result and
    /// the CPU seconds spent.
    fn charged<T>(&self, step: impl std::future::Future<Output = Result<T>>) -> Result<(T, f64, f64)> {
        let c0 = cpu_secs(&self.pids);
        let t = Instant::now();
        let out = self.rt.block_on(step)?;
        Ok((out, t.elapsed().as_secs_f64().max(1e-9), cpu_secs(&self.pids) - c0))
    }

    /// Write `bytes` into `path`'s objects, a stripe unit per request with
    /// its block crcs as the client sends them, then commit (fsync) them.
    /// The file (on the mount) must have its size set already, so that its
    /// delete frees the objects.
    pub fn write(&self, path: &Path, bytes: u64) -> Result<RawMeasure> {
        let objs = self.objects(path)?;
        let su = objs.layout.stripe_size as u64;
        let unit = Bytes::from((0..su).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
        let mut p = Progress::new("raw QUIC: write".into());
        let step = async {
            let writes = futures::stream::iter(0..bytes.div_ceil(su))
                .map(|u| {
                    let (obj, off, osd) = objs.place(u * su);
                    let (c, unit, objs) = (self.osd(osd), unit.clone(), &objs);
                    async move {
                        let crcs = block_crcs(off, &unit);
                        let req = objs.call(OsdReq::Write { obj, off, len: unit.len() as u32, crcs });
                        match c?.call::<_, OsdResp>(&req, &[unit]).await? {
                            (OsdResp::Done, _) => Ok::<_, anyhow::Error>((obj, osd, su)),
                            (other, _) => bail!("unexpected reply to Write: {other:?}"),
                        }
                    }
                })
                .buffer_unordered(IN_FLIGHT);
            tokio::pin!(writes);
            let mut written: HashMap<u32, Vec<ObjectId>> = HashMap::new();
            let mut total = 0;
            while let Some(w) = writes.next().await {
                let (obj, osd, n) = w?;
                let objs = written.entry(osd).or_default();
                if !objs.contains(&obj) {
                    objs.push(obj);
                }
                total += n;
                p.tick(total / MIB as u64, bytes / MIB as u64, "MB/s", 1e6 / MIB as f64);
            }
            for (osd, list) in written {
                match self.osd(osd)?.call::<_, OsdResp>(&objs.call(OsdReq::Commit { objs: list }), &[]).await? {
                    (OsdResp::Done, _) => {}
                    (other, _) => bail!("unexpected reply to Commit: {other:?}"),
                }
            }
            Ok(total)
        };
        let (total, secs, cpu) = self.charged(step)?;
        Ok(per_gib(total, secs, cpu))
    }

    /// Read `bytes` of `path`'s objects back, a stripe unit per request
    /// (crcs not checked).
    pub fn read(&self, path: &Path, bytes: u64) -> Result<RawMeasure> {
        let objs = self.objects(path)?;
        let su = objs.layout.stripe_size as u64;
        let mut p = Progress::new("raw QUIC: read".into());
        let step = async {
            let reads = futures::stream::iter(0..bytes.div_ceil(su))
                .map(|u| {
                    let (obj, off, osd) = objs.place(u * su);
                    let (c, objs) = (self.osd(osd), &objs);
                    async move {
                        match c?.call::<_, OsdResp>(&objs.call(OsdReq::Read { obj, off, len: su as u32 }), &[]).await? {
                            (OsdResp::Data { .. }, body) => Ok::<_, anyhow::Error>(body.len() as u64),
                            (other, _) => bail!("unexpected reply to Read: {other:?}"),
                        }
                    }
                })
                .buffer_unordered(IN_FLIGHT);
            tokio::pin!(reads);
            let mut total = 0;
            while let Some(n) = reads.next().await {
                total += n?;
                p.tick(total / MIB as u64, bytes / MIB as u64, "MB/s", 1e6 / MIB as f64);
            }
            anyhow::ensure!(total == bytes, "read {total} bytes of {bytes}");
            Ok(total)
        };
        let (total, secs, cpu) = self.charged(step)?;
        Ok(per_gib(total, secs, cpu))
    }

    /// `ops` 4 KiB reads at distinct random offsets of the first `size`
    /// bytes, `qd` at a time, each a `ReadRange` as the client sends it:
    /// IOPS and latency percentiles. `capped`: with the client's
    /// certificate and a capability, as the client sends them; else under
    /// the admin certificate, which the OSD checks no capability for.
    pub fn random(&self, path: &Path, size: u64, qd: usize, ops: usize, capped: bool) -> Result<RawMeasure> {
        let objs = self.objects(path)?;
        let osds = if capped { &self.osds } else { &self.admin_osds };
        let cap = capped.then_some(objs.cap);
        let offs: Vec<u64> = shuffle((size / 4096) as usize, size ^ qd as u64 ^ 0x5a).into_iter().take(ops).map(|b| b as u64 * 4096).collect();
        let step = async {
            let reads = futures::stream::iter(offs)
                .map(|off| {
                    let (obj, obj_off, osd) = objs.place(off);
                    let c = osds.get(&osd).cloned().with_context(|| format!("osd.{osd} is not in the map"));
                    async move {
                        let t = Instant::now();
                        let call = OsdCall { cap, req: OsdReq::ReadRange { obj, off: obj_off, len: 4096 } };
                        match c?.call::<_, OsdResp>(&call, &[]).await? {
                            (OsdResp::Range { .. }, _) => Ok::<_, anyhow::Error>(t.elapsed().as_secs_f64() * 1e6),
                            (other, _) => bail!("unexpected reply to ReadRange: {other:?}"),
                        }
                    }
                })
                .buffer_unordered(qd);
            tokio::pin!(reads);
            let mut lat = Vec::with_capacity(ops);
            while let Some(us) = reads.next().await {
                lat.push(us?);
            }
            Ok(lat)
        };
        let (mut lat, secs, cpu) = self.charged(step)?;
        lat.sort_by(f64::total_cmp);
        let pick = |q: f64| lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1))).copied().unwrap_or(0.0);
        let m = per_gib(lat.len() as u64 * 4096, secs, cpu);
        Ok(RawMeasure { rate: lat.len() as f64 / secs, p50: pick(0.5), p99: pick(0.99), ..m })
    }
}

fn per_gib(bytes: u64, secs: f64, cpu: f64) -> RawMeasure {
    let gib = (bytes as f64 / (1u64 << 30) as f64).max(1e-9);
    RawMeasure { rate: bytes as f64 / 1e6 / secs, cpu_per_gib: cpu / gib, ..Default::default() }
}
