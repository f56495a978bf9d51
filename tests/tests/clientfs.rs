//! `ClientFs` without a kernel: the client's data path on an in-process
//! cluster (MDS and 3 OSDs on loopback QUIC, stripe 1 MiB x 3), driven
//! with random sequences of writes of any size and offset, truncates,
//! reads, fsyncs, and closes with reopens, and compared byte for byte with
//! the same sequence applied to a file in a plain temp directory.
use aifs_client::{ClientConfig, ClientFs};
use aifs_common::proto::mds::SetAttr;
use aifs_tests::{pattern, TestCluster};
use bytes::Bytes;
use proptest::prelude::*;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

const MIB: u64 = 1 << 20;
const ROOT: aifs_common::InodeId = aifs_common::InodeId::ROOT;

#[derive(Clone, Debug)]
enum Op {
    /// `len` pattern bytes of `seed` at `off`.
    Write { off: u64, len: u64, seed: u64 },
    Truncate { size: u64 },
    Read { off: u64, len: u64 },
    Fsync,
    /// close (flush and release), then open again for writing.
    Reopen,
    /// `fallocate` with one of `FALLOC_MODES`.
    Fallocate { off: u64, len: u64, mode: i32 },
}

/// The modes checkpoint writers use: preallocation (growing the file or
/// not), a punched hole, a zeroed range (growing the file or not).
const FALLOC_MODES: [i32; 5] = [
    0,
    libc::FALLOC_FL_KEEP_SIZE,
    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
    libc::FALLOC_FL_ZERO_RANGE,
    libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
];

/// Offsets near stripe-unit and block edges as often as anywhere else.
fn offset() -> impl Strategy<Value = u64> {
    prop_oneof![
        0..5 * MIB,
        (0..6u64, -3i64..4).prop_map(|(u, d)| (u * MIB).saturating_add_signed(d * 4096)),
        (0..80u64).prop_map(|b| b * 64 * 1024),
    ]
}

fn length() -> impl Strategy<Value = u64> {
    prop_oneof![1..64u64, 1..200_000u64, Just(MIB), 1..(3 * MIB + 17)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (offset(), length(), any::<u64>()).prop_map(|(off, len, seed)| Op::Write { off, len, seed }),
        1 => offset().prop_map(|size| Op::Truncate { size }),
        3 => (offset(), length()).prop_map(|(off, len)| Op::Read { off, len }),
        1 => Just(Op::Fsync),
        1 => Just(Op::Reopen),
        2 => (offset(), length(), 0..FALLOC_MODES.len()).prop_map(|(off, len, m)| Op::Fallocate { off, len, mode: FALLOC_MODES[m] }),
    ]
}

/// The file in the plain directory.
struct Reference(File);

impl Reference {
    fn read(&self, off: u64, len: u64) -> Vec<u8> {
        let size = self.0.metadata().map(|m| m.len()).unwrap_or(0);
        let end = (off + len).min(size);
        if off >= end {
            return Vec::new();
        }
        let mut buf = vec![0u8; (end - off) as usize];
        self.0.read_exact_at(&mut buf, off).expect("reference read");
        buf
    }
}

/// Apply `ops` to a new file through `fs` and to a file in `dir`, checking
/// every read and, at the end, the whole file and its size.
async fn run(fs: &Arc<ClientFs>, dir: &std::path::Path, name: &str, ops: &[Op]) -> Result<(), TestCaseError> {
    let reference = Reference(OpenOptions::new().read(true).write(true).create(true).truncate(true).open(dir.join(name)).expect("reference file"));
    let o = fs.create(ROOT, name, 0o644, true, false).await.map_err(|e| TestCaseError::fail(format!("create: {e}")))?;
    let ino = o.attr.ino;
    let mut fh = o.fh;
    for (i, op) in ops.iter().enumerate() {
        let fail = |e: aifs_common::Error| TestCaseError::fail(format!("op {i} {op:?}: {e}"));
        match *op {
            Op::Write { off, len, seed } => {
                let data = pattern::bytes(seed, off, len as usize);
                reference.0.write_all_at(&data, off).expect("reference write");
                let n = fs.write(fh, off, Bytes::from(data)).await.map_err(fail)?;
                prop_assert_eq!(n as u64, len, "op {}: short write", i);
            }
            Op::Truncate { size } => {
                reference.0.set_len(size).expect("reference truncate");
                let set = SetAttr { size: Some(size), ..Default::default() };
                fs.setattr(ino, set).await.map_err(fail)?;
            }
            Op::Read { off, len } => {
                let want = reference.read(off, len);
                let mut got = Vec::new();
                // The kernel asks at most 1 MiB at a time.
                let mut at = off;
                while at < off + len {
                    let piece = fs.read(fh, at, (off + len - at).min(MIB) as u32).await.map_err(fail)?;
                    if piece.is_empty() {
                        break;
                    }
                    at += piece.len() as u64;
                    got.extend_from_slice(&piece);
                }
                prop_assert!(got == want, "op {}: read of {} at {} gave {} bytes, first difference at {:?}", i, len, off, got.len(),
                    got.iter().zip(&want).position(|(a, b)| a != b));
            }
            Op::Fsync => fs.fsync(fh).await.map_err(fail)?,
            Op::Fallocate { off, len, mode } => {
                let local = aifs_tests::fallocate(&reference.0, mode, off, len);
                prop_assert!(local.is_ok(), "reference fallocate: {:?}", local);
                fs.fallocate(fh, off, len, mode).await.map_err(fail)?;
            }
            Op::Reopen => {
                fs.flush(fh, 0).await.map_err(fail)?;
                fs.release(fh).await.map_err(fail)?;
                fh = fs.open(ino, true, false).await.map_err(fail)?.fh;
            }
        }
    }
    let size = reference.0.metadata().expect("reference size").len();
    fs.flush(fh, 0).await.map_err(|e| TestCaseError::fail(format!("final flush: {e}")))?;
    let a = fs.getattr(ino).await.map_err(|e| TestCaseError::fail(format!("getattr: {e}")))?;
    prop_assert_eq!(a.size, size, "size after the last flush");
    let mut at = 0;
    while at < size {
        let piece = fs.read(fh, at, MIB as u32).await.map_err(|e| TestCaseError::fail(format!("final read: {e}")))?;
        prop_assert!(!piece.is_empty(), "file ends at {} of {}", at, size);
        prop_assert!(piece[..] == reference.read(at, piece.len() as u64)[..], "final read differs at {}", at);
        at += piece.len() as u64;
    }
    fs.release(fh).await.map_err(|e| TestCaseError::fail(format!("release: {e}")))?;
    Ok(())
}

async fn client(c: &TestCluster) -> Arc<ClientFs> {
    let cfg = format!(
        "mds = \"{}\"\nname = \"proptest\"\n[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        c.mds.addr,
        c.dir.path().join("ca.pem").display(),
        c.dir.path().join("client.pem").display(),
        c.dir.path().join("client.key").display()
    );
    let path = c.dir.path().join("client-proptest.toml");
    std::fs::write(&path, cfg).expect("client config");
    let cfg: ClientConfig = aifs_common::config::load(&path).expect("client config");
    ClientFs::connect(&cfg).await.expect("client connects")
}

#[test]
fn clientfs_matches_a_local_file_under_random_writes_truncates_fallocates_and_reopens() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let cluster = rt.block_on(TestCluster::start(3, 2)).expect("cluster");
    let fs = rt.block_on(client(&cluster));
    let local = tempfile::tempdir().expect("temp dir");
    let case = std::sync::atomic::AtomicU32::new(0);
    let cfg = ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() };
    proptest!(cfg, |(ops in proptest::collection::vec(op(), 1..32))| {
        let name = format!("case{}", case.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        rt.block_on(run(&fs, local.path(), &name, &ops))?;
    });
    rt.block_on(fs.shutdown());
}

/// A tensor read whole from the middle of a checkpoint, in the kernel's
/// 128 KiB read-ahead requests, fetches at most as much again past its end
/// (the window grows with the run), not the whole read-ahead window
/// (`readahead_units`, 12 units) after a few requests.
#[test]
fn a_range_read_whole_fetches_at_most_its_own_length_past_its_end() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let cluster = rt.block_on(TestCluster::start(3, 2)).expect("cluster");
    let fs = rt.block_on(client(&cluster));
    rt.block_on(async {
        let o = fs.create(ROOT, "ckpt", 0o644, true, false).await.expect("create");
        let body = pattern::bytes(3, 0, 40 * MIB as usize);
        fs.write(o.fh, 0, Bytes::from(body.clone())).await.expect("write");
        fs.fsync(o.fh).await.expect("fsync");
        let osds = cluster.osd_clients(aifs_common::certs::Role::Admin).expect("OSD clients");
        let before = aifs_tests::osd_read_bytes(&osds).await.expect("OSD stats");
        // units 5 to 11 of the file
        let (start, len) = (5 * MIB + 300 * 1024, 6 * MIB);
        let mut at = start;
        while at < start + len {
            let piece = fs.read(o.fh, at, 128 * 1024).await.expect("read");
            assert!(piece[..] == body[at as usize..at as usize + piece.len()], "read at {at} differs");
            at += piece.len() as u64;
        }
        let fetched = aifs_tests::osd_read_bytes(&osds).await.expect("OSD stats") - before;
        let units = 7;
        assert!(fetched <= (2 * units + 1) * MIB + 128 * 1024, "{fetched} bytes fetched for a {len}-byte range");
        fs.release(o.fh).await.expect("release");
    });
    rt.block_on(fs.shutdown());
}

/// Capabilities live `cap_term_ms` (2 s here): a file kept open longer, and
/// one made from an inode number reserved before its capability ran out,
/// are written, fsync'd and read back under renewed ones. Without renewal
/// the OSDs refuse the second write as stale.
#[test]
fn capabilities_are_renewed_for_files_kept_open_past_their_term() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let cluster = rt.block_on(TestCluster::start_with(3, 2, |m| m.cap_term_ms = 2000)).expect("cluster");
    let fs = rt.block_on(client(&cluster));
    rt.block_on(async {
        let body = pattern::bytes(9, 0, 2 * MIB as usize);
        let held = fs.create(ROOT, "held", 0o644, true, false).await.expect("create");
        fs.write(held.fh, 0, Bytes::copy_from_slice(&body[..MIB as usize])).await.expect("first write");
        fs.fsync(held.fh).await.expect("first fsync");
        tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
        fs.write(held.fh, MIB, Bytes::copy_from_slice(&body[MIB as usize..])).await.expect("write past the term");
        fs.fsync(held.fh).await.expect("fsync past the term");
        // Made here, under the root's write lease, from a number reserved
        // with the first create.
        let later = fs.create(ROOT, "later", 0o644, true, false).await.expect("create from a reserved number");
        fs.write(later.fh, 0, Bytes::copy_from_slice(&body)).await.expect("write of the late file");
        fs.fsync(later.fh).await.expect("fsync of the late file");
        tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
        for (o, what) in [(&held, "held"), (&later, "later")] {
            let mut at = 0;
            while at < 2 * MIB {
                let piece = fs.read(o.fh, at, MIB as u32).await.unwrap_or_else(|e| panic!("read of {what}: {e}"));
                assert!(!piece.is_empty() && piece[..] == body[at as usize..at as usize + piece.len()], "{what} differs at {at}");
                at += piece.len() as u64;
            }
            fs.release(o.fh).await.expect("release");
        }
    });
    rt.block_on(fs.shutdown());
}

/// OSDs that may hold 2 MiB in all and 1 MiB per connection still serve a
/// client whose write window and read-ahead ask for far more at once:
/// requests wait for their bytes (common/src/rpc/budget.rs), none is
/// refused or stuck, and every byte comes back.
#[test]
fn a_checkpoint_passes_through_osds_whose_memory_budget_is_smaller_than_its_window() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let limits = aifs_osd::OsdLimits { inflight_mb: 2, inflight_per_conn_mb: 1 };
    let cluster = rt.block_on(TestCluster::start_limited(3, 2, |_| {}, limits)).expect("cluster");
    let fs = rt.block_on(client(&cluster));
    rt.block_on(async {
        let o = fs.create(ROOT, "ckpt", 0o644, true, false).await.expect("create");
        let body = pattern::bytes(9, 0, 48 * MIB as usize);
        // one 16 MiB write and many small ones
        fs.write(o.fh, 0, Bytes::from(body[..16 * MIB as usize].to_vec())).await.expect("write");
        for (i, chunk) in body[16 * MIB as usize..].chunks(256 * 1024).enumerate() {
            fs.write(o.fh, 16 * MIB + (i as u64) * 256 * 1024, Bytes::from(chunk.to_vec())).await.expect("write");
        }
        fs.fsync(o.fh).await.expect("fsync");
        let mut at = 0;
        while at < body.len() as u64 {
            let piece = fs.read(o.fh, at, 4 * MIB as u32).await.expect("read");
            assert!(!piece.is_empty(), "short read at {at}");
            assert!(piece[..] == body[at as usize..at as usize + piece.len()], "read at {at} differs");
            at += piece.len() as u64;
        }
        fs.release(o.fh).await.expect("release");
    });
    rt.block_on(fs.shutdown());
}
