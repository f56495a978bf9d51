//! Real FUSE mounts of a real cluster (processes, QUIC, files on disk).
//! Needs root and /dev/fuse; `make test` enables the `fuse_tests` feature.
#![cfg(feature = "fuse_tests")]

use aifs_tests::pattern;
use aifs_tests::proc::ProcCluster;
use rand::{RngExt, SeedableRng};
use std::collections::BTreeSet;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

const MIB: usize = 1 << 20;

fn assert_same_file(a: &Path, b: &Path) {
    let x = fs::read(a).unwrap();
    let y = fs::read(b).unwrap();
    assert_eq!(x.len(), y.len(), "sizes differ: {} vs {}", a.display(), b.display());
    if let Some(i) = x.iter().zip(&y).position(|(p, q)| p != q) {
        panic!("first difference at byte {i}");
    }
}

#[test]
fn one_gib_striped_checkpoint_round_trips() {
    let cl = ProcCluster::start(3).unwrap();
    let m = cl.mount().unwrap();
    fs::create_dir(m.p("ckpt")).unwrap();
    cl.mdsctl(&["setstripe", "/ckpt", "--count", "3", "--size", "1M"]).unwrap();
    let path = m.p("ckpt/model.pt");
    let seed = 42;
    let total = 1024 * MIB;
    {
        let mut f = File::create(&path).unwrap();
        let mut buf = vec![0u8; MIB];
        for i in 0..total / MIB {
            pattern::fill(seed, (i * MIB) as u64, &mut buf);
            f.write_all(&buf).unwrap();
        }
        f.sync_all().unwrap();
    }
    assert_eq!(fs::metadata(&path).unwrap().len(), total as u64);
    let stripe = cl.mdsctl(&["getstripe", "/ckpt/model.pt", "--json"]).unwrap();
    for obj in ["\"index\": 0", "\"index\": 1", "\"index\": 2"] {
        assert!(stripe.contains(obj), "object missing from getstripe: {stripe}");
    }
    // 1024 units over 3 objects: 342, 341 and 341 MiB.
    assert_eq!(stripe.matches("\"size\": 358612992").count(), 1, "{stripe}");
    assert_eq!(stripe.matches("\"size\": 357564416").count(), 2, "{stripe}");
    // the mount set its kernel read-ahead (the default config asks 1 MiB;
    // only root may set it)
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        let dev = fs::metadata(m.p("")).unwrap().dev();
        let knob = format!("/sys/class/bdi/{}:{}/read_ahead_kb", libc::major(dev), libc::minor(dev));
        assert_eq!(fs::read_to_string(&knob).unwrap().trim(), "1024", "{knob}");
    }
    let mut f = File::open(&path).unwrap();
    let mut got = vec![0u8; MIB];
    let mut want = vec![0u8; MIB];
    for i in 0..total / MIB {
        f.read_exact(&mut got).unwrap();
        pattern::fill(seed, (i * MIB) as u64, &mut want);
        assert!(got == want, "mismatch in MiB {i}");
    }
    let mut rest = Vec::new();
    assert_eq!(f.read_to_end(&mut rest).unwrap(), 0);
}

#[test]
fn random_writes_match_a_local_file() {
    let cl = ProcCluster::start(3).unwrap();
    let m = cl.mount().unwrap();
    let local_dir = tempfile::tempdir().unwrap();
    let lp = local_dir.path().join("ref");
    let ap = m.p("rand.bin");
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for round in 0..3 {
        let a = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&ap).unwrap();
        let l = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&lp).unwrap();
        for i in 0..300 {
            let off = rng.random_range(0..12 * MIB as u64);
            let len = rng.random_range(1..300_000usize);
            let data = pattern::bytes(round * 1000 + i, off, len);
            a.write_all_at(&data, off).unwrap();
            l.write_all_at(&data, off).unwrap();
            if i % 25 == 0 {
                // read your own writes before any flush
                let roff = rng.random_range(0..12 * MIB as u64);
                let mut x = vec![0u8; 100_000];
                let mut y = vec![0u8; 100_000];
                let nx = a.read_at(&mut x, roff).unwrap();
                let ny = l.read_at(&mut y, roff).unwrap();
                assert_eq!(nx, ny);
                assert!(x[..nx] == y[..ny], "read-after-write differs at {roff}");
            }
        }
        drop(a);
        drop(l);
        assert_same_file(&ap, &lp);
    }
}

/// Temporary files (made, unlinked at once, then written and read back
/// through the descriptor, as Python's `tempfile.TemporaryFile` does)
/// keep their data until closed. The mount answers the create and the
/// unlink itself under the directory's write lease and sends both to the
/// MDS in one batch, which must count the file open before it applies
/// the unlink.
#[test]
fn files_unlinked_while_open_keep_their_data_until_closed() {
    let cl = ProcCluster::start(3).unwrap();
    let m = cl.mount().unwrap();
    fs::create_dir(m.p("tmp")).unwrap();
    for i in 0..20u64 {
        let p = m.p(&format!("tmp/t{i}"));
        let mut f = OpenOptions::new().read(true).write(true).create_new(true).open(&p).unwrap();
        fs::remove_file(&p).unwrap();
        let data = pattern::bytes(i, 0, MIB + 4096 * i as usize);
        f.write_all(&data).unwrap();
        f.sync_all().unwrap_or_else(|e| panic!("temporary file {i}: fsync after the unlink: {e}"));
        let mut back = Vec::new();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.read_to_end(&mut back).unwrap();
        assert!(back == data, "temporary file {i}: read back {} bytes, not what was written", back.len());
    }
    assert!(listing(&m.p("tmp")).is_empty());
}

#[test]
fn sparse_files_and_truncation() {
    let cl = ProcCluster::start(3).unwrap();
    let m = cl.mount().unwrap();
    let local_dir = tempfile::tempdir().unwrap();
    let lp = local_dir.path().join("ref");
    let ap = m.p("sparse");
    let ops: Vec<Box<dyn Fn(&File)>> = vec![
        Box::new(|f| f.write_all_at(&pattern::bytes(1, 0, 4096), 10 * MIB as u64 + 7).unwrap()),
        Box::new(|f| f.set_len(5 * MIB as u64 + 123).unwrap()),
        Box::new(|f| f.write_all_at(&pattern::bytes(2, 0, 3 * MIB), MIB as u64 / 2).unwrap()),
        Box::new(|f| f.set_len(20 * MIB as u64).unwrap()),
        Box::new(|f| f.write_all_at(b"tail", 20 * MIB as u64 - 2).unwrap()),
        Box::new(|f| f.set_len(MIB as u64 + 1).unwrap()),
        Box::new(|f| f.set_len(9 * MIB as u64).unwrap()),
        Box::new(|f| f.set_len(0).unwrap()),
        Box::new(|f| f.write_all_at(b"again", 3 * MIB as u64).unwrap()),
    ];
    for (i, op) in ops.iter().enumerate() {
        let a = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&ap).unwrap();
        let l = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&lp).unwrap();
        op(&a);
        op(&l);
        assert_eq!(a.metadata().unwrap().len(), l.metadata().unwrap().len(), "size after op {i}");
        drop(a);
        drop(l);
        assert_same_file(&ap, &lp);
    }
    // the hole before the data reads as zeros
    let mut f = File::open(&ap).unwrap();
    let mut b = vec![1u8; 1000];
    f.seek(SeekFrom::Start(1000)).unwrap();
    f.read_exact(&mut b).unwrap();
    assert!(b.iter().all(|&x| x == 0));
    // O_TRUNC on open
    File::create(&ap).unwrap();
    assert_eq!(fs::metadata(&ap).unwrap().len(), 0);
}

fn listing(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                out.insert(format!("{rel}/"));
                stack.push(e.path());
            } else {
                out.insert(format!("{rel} {}", fs::metadata(e.path()).unwrap().len()));
            }
        }
    }
    out
}

#[test]
fn directory_trees_behave_like_a_local_file_system() {
    let cl = ProcCluster::start(3).unwrap();
    let m = cl.mount().unwrap();
    let local = tempfile::tempdir().unwrap();
    let roots = [m.path.clone(), local.path().to_path_buf()];
    for r in &roots {
        for step in 0..4 {
            fs::create_dir_all(r.join(format!("run/step{step}/shards"))).unwrap();
            for rank in 0..8 {
                fs::write(r.join(format!("run/step{step}/shards/rank{rank}.pt")), pattern::bytes(rank, 0, 1000 + rank as usize)).unwrap();
            }
        }
        fs::rename(r.join("run/step0"), r.join("run/old0")).unwrap();
        fs::rename(r.join("run/step1/shards"), r.join("run/moved_shards")).unwrap();
        fs::rename(r.join("run/step2/shards/rank0.pt"), r.join("run/latest.pt")).unwrap();
        fs::rename(r.join("run/step3/shards/rank1.pt"), r.join("run/latest.pt")).unwrap();
        fs::remove_file(r.join("run/step2/shards/rank2.pt")).unwrap();
        let e = fs::remove_dir(r.join("run/step2")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTEMPTY));
        let e = fs::rename(r.join("run"), r.join("run/old0/inside")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
        fs::remove_dir(r.join("run/step1")).unwrap();
        let e = fs::remove_dir(r.join("run/nope")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        let e = fs::create_dir(r.join("run/old0")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
        // replace an empty directory with a directory
        fs::create_dir(r.join("run/emptydir")).unwrap();
        fs::rename(r.join("run/moved_shards"), r.join("run/emptydir")).unwrap();
        // directory with many entries, listed in batches
        fs::create_dir(r.join("many")).unwrap();
        for i in 0..1500 {
            File::create(r.join(format!("many/f{i:05}"))).unwrap();
        }
        for i in (0..1500).step_by(3) {
            fs::remove_file(r.join(format!("many/f{i:05}"))).unwrap();
        }
    }
    assert_eq!(listing(&roots[0]), listing(&roots[1]));
    assert_eq!(fs::read_dir(m.p("many")).unwrap().count(), 1000);
    // link counts of directories
    let md = fs::metadata(m.p("run")).unwrap();
    let ld = fs::metadata(local.path().join("run")).unwrap();
    assert_eq!(md.nlink(), ld.nlink());
}

fn xattr_get(p: &Path, name: &str) -> Result<Vec<u8>, i32> {
    let cp = CString::new(p.as_os_str().as_bytes()).unwrap();
    let cn = CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid C strings and a buffer of the stated length.
    let n = unsafe { libc::getxattr(cp.as_ptr(), cn.as_ptr(), buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
    if n < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    buf.truncate(n as usize);
    Ok(buf)
}

fn xattr_set(p: &Path, name: &str, v: &[u8], flags: i32) -> Result<(), i32> {
    let cp = CString::new(p.as_os_str().as_bytes()).unwrap();
    let cn = CString::new(name).unwrap();
    // SAFETY: valid C strings and a value buffer of the stated length.
    let r = unsafe { libc::setxattr(cp.as_ptr(), cn.as_ptr(), v.as_ptr() as *const libc::c_void, v.len(), flags) };
    if r < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    Ok(())
}

#[test]
fn symlinks_hard_links_xattrs_and_statfs() {
    let cl = ProcCluster::start(3).unwrap();
    let m = cl.mount().unwrap();
    fs::write(m.p("target"), b"data").unwrap();
    std::os::unix::fs::symlink("target", m.p("link")).unwrap();
    assert_eq!(fs::read_link(m.p("link")).unwrap(), Path::new("target"));
    assert_eq!(fs::read(m.p("link")).unwrap(), b"data");
    assert!(fs::symlink_metadata(m.p("link")).unwrap().file_type().is_symlink());
    fs::create_dir(m.p("sub")).unwrap();
    fs::hard_link(m.p("target"), m.p("sub/hard")).unwrap();
    assert_eq!(fs::metadata(m.p("target")).unwrap().nlink(), 2);
    assert_eq!(fs::metadata(m.p("target")).unwrap().ino(), fs::metadata(m.p("sub/hard")).unwrap().ino());
    fs::remove_file(m.p("target")).unwrap();
    assert_eq!(fs::read(m.p("sub/hard")).unwrap(), b"data");
    assert_eq!(fs::metadata(m.p("sub/hard")).unwrap().nlink(), 1);
    assert!(fs::read(m.p("link")).is_err(), "dangling symlink");

    let p = m.p("sub/hard");
    xattr_set(&p, "user.step", b"1000", 0).unwrap();
    assert_eq!(xattr_get(&p, "user.step").unwrap(), b"1000");
    assert_eq!(xattr_set(&p, "user.step", b"x", libc::XATTR_CREATE), Err(libc::EEXIST));
    assert_eq!(xattr_set(&p, "user.none", b"x", libc::XATTR_REPLACE), Err(libc::ENODATA));
    assert_eq!(xattr_get(&p, "user.none"), Err(libc::ENODATA));
    let cp = CString::new(p.as_os_str().as_bytes()).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid C string and buffer of the stated length.
    let n = unsafe { libc::listxattr(cp.as_ptr(), buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    assert_eq!(&buf[..n as usize], b"user.step\0");
    let cn = CString::new("user.step").unwrap();
    // SAFETY: valid C strings.
    assert_eq!(unsafe { libc::removexattr(cp.as_ptr(), cn.as_ptr()) }, 0);
    assert_eq!(xattr_get(&p, "user.step"), Err(libc::ENODATA));

    // df through statfs: the OSDs' capacity
    let cm = CString::new(m.path.as_os_str().as_bytes()).unwrap();
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: valid C string and a pointer to writable statvfs memory.
    assert_eq!(unsafe { libc::statvfs(cm.as_ptr(), st.as_mut_ptr()) }, 0);
    // SAFETY: statvfs returned 0 and filled the struct.
    let st = unsafe { st.assume_init() };
    assert!(st.f_blocks > 0 && st.f_bavail <= st.f_blocks);
    assert_eq!(st.f_namemax, 255);
    let df = std::process::Command::new("df").arg(&m.path).output().unwrap();
    assert!(df.status.success() && String::from_utf8_lossy(&df.stdout).contains("aifs"));
    let out = cl.mdsctl(&["df"]).unwrap();
    assert!(out.contains("total") && out.contains("osd.3"), "{out}");
    let out = cl.mdsctl(&["status"]).unwrap();
    assert!(out.contains("3 up / 3 total") && out.contains("sessions: 1"), "{out}");
    let out = cl.mdsctl(&["osd", "ls", "--json"]).unwrap();
    assert_eq!(out.matches("\"Up\"").count(), 3, "{out}");
}

/// `mdsctl cert issue` gives a node a certificate and a config of its
/// own: a mount under it works beside one under the shared certificate,
/// and its session shows under its name. Bad names and roles are refused.
#[test]
fn a_node_with_its_own_certificate_mounts_with_the_config_issued_for_it() {
    let cl = ProcCluster::start(1).unwrap();
    let nodes = cl.path("nodes");
    let nodes = nodes.to_str().unwrap();
    let ca = cl.path("ca");
    let ca = ca.to_str().unwrap();
    let out = cl.mdsctl(&["cert", "--ca-dir", ca, "issue", "--role", "client", "--name", "gpu-node-7", "--out", nodes]).unwrap();
    assert!(out.contains("gpu-node-7.pem"), "{out}");
    let own = aifs_tests::proc::Mount::with_config(&cl, &cl.path("nodes/gpu-node-7.toml")).unwrap();
    fs::write(own.p("ckpt"), b"rank 0").unwrap();
    let shared = cl.mount().unwrap();
    assert_eq!(fs::read(shared.p("ckpt")).unwrap(), b"rank 0");
    let ls = cl.mdsctl(&["session", "ls"]).unwrap();
    assert!(ls.contains("gpu-node-7"), "{ls}");
    for (role, name) in [("client", "../escape"), ("osd", "osd-9"), ("root", "x")] {
        assert!(cl.mdsctl(&["cert", "--ca-dir", ca, "issue", "--role", role, "--name", name, "--out", nodes]).is_err(), "{role} {name}");
    }
}

/// `mdsctl cert revoke`: the node's mount is cut off at its next request
/// to the MDS (EACCES), it cannot mount again, OSDs refuse it within a
/// heartbeat, and all of that outlives an MDS restart. Other nodes go on.
#[test]
fn a_revoked_certificate_is_refused_by_every_server_and_its_mount_cut_off() {
    let mut cl = ProcCluster::start(1).unwrap();
    let (ca, nodes) = (cl.path("ca"), cl.path("nodes"));
    let cert = |args: &[&str]| {
        let mut all = vec!["cert", "--ca-dir", ca.to_str().unwrap()];
        all.extend_from_slice(args);
        cl.mdsctl(&all)
    };
    cert(&["issue", "--role", "client", "--name", "gpu-r", "--out", nodes.to_str().unwrap()]).unwrap();
    let cfg = cl.path("nodes/gpu-r.toml");
    let tls = aifs_common::config::TlsConfig { ca: cl.path("ca.pem"), cert: cl.path("nodes/gpu-r.pem"), key: cl.path("nodes/gpu-r.key") };
    let own = aifs_tests::proc::Mount::with_config(&cl, &cfg).unwrap();
    let body = pattern::bytes(3, 0, 2 << 20);
    fs::write(own.p("ckpt"), &body).unwrap();
    File::open(own.p("ckpt")).unwrap().sync_all().unwrap();
    cl.osd_usage_as(1, &tls).unwrap();
    let shared = cl.mount().unwrap();

    let out = cert(&["revoke", "gpu-r"]).unwrap();
    assert!(out.contains("revoked gpu-r") && out.contains("1 session(s) ended"), "{out}");
    let ls = cert(&["ls"]).unwrap();
    let state = |name: &str| ls.lines().find(|l| l.starts_with(&format!("{name} "))).map(|l| l.split_whitespace().nth(6).unwrap_or("").to_string());
    assert_eq!(state("gpu-r").as_deref(), Some("revoked"), "{ls}");
    assert_eq!(state("client").as_deref(), Some("valid"), "{ls}");

    // the revoked mount: its next question to the MDS is refused (once
    // what it cached under its leases, which it can no longer renew, ends)
    fs::write(shared.p("after"), b"x").unwrap();
    let t = std::time::Instant::now();
    loop {
        match fs::metadata(own.p("after")) {
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => break,
            r => assert!(t.elapsed() < std::time::Duration::from_secs(15), "a revoked node still reached the MDS: {r:?}"),
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(aifs_tests::proc::Mount::with_config(&cl, &cfg).is_err(), "a revoked certificate mounted");
    // the OSD refuses it once its next heartbeat brings the list
    let t = std::time::Instant::now();
    loop {
        match cl.osd_usage_as(1, &tls) {
            Err(aifs_common::Error::Unauthorized(m)) if m.contains("revoked") => break,
            r => assert!(t.elapsed() < std::time::Duration::from_secs(10), "the OSD still serves a revoked certificate: {r:?}"),
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(fs::read(shared.p("ckpt")).unwrap() == body, "another node lost its way");

    // a restarted MDS, and the OSDs it tells, still refuse it
    cl.kill9_mds();
    cl.start_mds().unwrap();
    cl.wait_ready(std::time::Duration::from_secs(20)).unwrap();
    assert!(aifs_tests::proc::Mount::with_config(&cl, &cfg).is_err(), "a revoked certificate mounted after an MDS restart");
    let again = cl.mount().unwrap();
    assert!(fs::read(again.p("ckpt")).unwrap() == body);
}

#[test]
fn unmount_by_signal_and_by_fusermount_is_clean() {
    let cl = ProcCluster::start(1).unwrap();
    // fusermount3 -u: the client flushes, closes its session and exits
    let mut m = cl.mount().unwrap();
    fs::write(m.p("a"), b"x").unwrap();
    m.unmount();
    assert!(!m.is_mounted());
    // SIGTERM with a file still open and unflushed: data lands, mount goes
    let mut m2 = cl.mount().unwrap();
    assert_eq!(fs::read(m2.p("a")).unwrap(), b"x");
    let mut f = File::create(m2.p("b")).unwrap();
    f.write_all(b"written before SIGTERM").unwrap();
    drop(f);
    assert!(m2.terminate(std::time::Duration::from_secs(10)), "client did not exit on SIGTERM");
    assert!(!m2.is_mounted(), "mount left behind after SIGTERM");
    let m3 = cl.mount().unwrap();
    assert_eq!(fs::read(m3.p("b")).unwrap(), b"written before SIGTERM");
    let out = cl.mdsctl(&["session", "ls"]).unwrap();
    assert_eq!(out.lines().count(), 2, "closed sessions must go away: {out}");
    // an evicted mount opens a new session at its next heartbeat and goes on
    let id = out.lines().nth(1).and_then(|l| l.split_whitespace().next()).unwrap().to_string();
    cl.mdsctl(&["session", "evict", &id]).unwrap();
    std::thread::sleep(std::time::Duration::from_secs(4));
    let out = cl.mdsctl(&["session", "ls"]).unwrap();
    let (live, evicted) = out.split_once("\n\n").unwrap_or((&out, ""));
    assert_eq!(live.lines().count(), 2, "{out}");
    assert!(!live.contains(&id), "evicted session still listed: {out}");
    assert!(evicted.lines().any(|l| l.starts_with(&id) && l.contains("mdsctl session evict")), "the eviction is not shown: {out}");
    fs::write(m3.p("after-evict"), b"ok").unwrap();
    assert_eq!(fs::read(m3.p("after-evict")).unwrap(), b"ok");
}

#[test]
fn ranks_write_disjoint_shard_files_in_parallel() {
    let cl = ProcCluster::start(3).unwrap();
    let m = cl.mount().unwrap();
    fs::create_dir(m.p("step")).unwrap();
    let mut hs = Vec::new();
    for rank in 0..8u64 {
        let p = m.p(&format!("step/rank{rank}.pt"));
        hs.push(std::thread::spawn(move || {
            let mut f = File::create(&p).unwrap();
            for i in 0..16 {
                f.write_all(&pattern::bytes(rank, (i * MIB) as u64, MIB)).unwrap();
            }
            f.sync_all().unwrap();
        }));
    }
    for h in hs {
        h.join().unwrap();
    }
    for rank in 0..8u64 {
        let got = fs::read(m.p(&format!("step/rank{rank}.pt"))).unwrap();
        assert!(got == pattern::bytes(rank, 0, 16 * MIB), "rank {rank}");
    }
}

#[test]
fn write_behind_memory_is_bounded_and_drains() {
    let cl = ProcCluster::start(3).unwrap();
    // 16 MiB of budget for 48 files with two partial 1 MiB units each:
    // writers must ship their own buffers and wait rather than grow.
    let m = aifs_tests::proc::Mount::with_settings(&cl, "write_budget_mb = 16").unwrap();
    fs::create_dir(m.p("many")).unwrap();
    let mut files = Vec::new();
    for i in 0..48u64 {
        let f = File::create(m.p(&format!("many/f{i}"))).unwrap();
        f.write_all_at(&pattern::bytes(i, 0, 100_000), 0).unwrap();
        f.write_all_at(&pattern::bytes(i, 3 * MIB as u64, 100_000), 3 * MIB as u64).unwrap();
        files.push(f);
    }
    // A partial unit left alone is shipped by the background flusher even
    // while its file stays open.
    std::thread::sleep(std::time::Duration::from_secs(7));
    // (Both units live in object 0: units 0 and 3 of a 3-object layout.)
    let stripe = cl.mdsctl(&["getstripe", "/many/f47", "--json"]).unwrap();
    assert!(stripe.contains(&format!("\"size\": {}", MIB + 100_000)), "partial units not flushed while open: {stripe}");
    drop(files);
    for i in 0..48u64 {
        let got = fs::read(m.p(&format!("many/f{i}"))).unwrap();
        assert_eq!(got.len(), 3 * MIB + 100_000);
        assert!(got[..100_000] == pattern::bytes(i, 0, 100_000)[..]);
        assert!(got[100_000..3 * MIB].iter().all(|&b| b == 0));
        assert!(got[3 * MIB..] == pattern::bytes(i, 3 * MIB as u64, 100_000)[..]);
    }
}

#[test]
fn close_to_open_across_two_mounts() {
    let cl = ProcCluster::start(3).unwrap();
    let a = cl.mount().unwrap();
    let b = cl.mount().unwrap();
    fs::write(a.p("latest"), b"step 100").unwrap();
    // B reads (and its kernel caches attributes and pages) ...
    assert_eq!(fs::read(b.p("latest")).unwrap(), b"step 100");
    for step in [200u64, 3000, 40000] {
        // ... A rewrites and closes; B's next open sees all of it, at once.
        let body = pattern::bytes(step, 0, step as usize * 10);
        fs::write(a.p("latest"), &body).unwrap();
        assert!(fs::read(b.p("latest")).unwrap() == body, "B read stale contents after A closed (step {step})");
    }
    // a shrink made on A is seen by B's next open too, even with B holding
    // the file open meanwhile
    let held = File::open(b.p("latest")).unwrap();
    fs::write(a.p("latest"), b"short").unwrap();
    assert_eq!(fs::read(b.p("latest")).unwrap(), b"short");
    drop(held);
}

/// mdsctl says what is wrong and names its object: a layout the cluster
/// cannot place is refused (not accepted, to fail every create under it
/// with ENOSPC), a local path outside any mount is said to be one, an
/// OSD that does not exist is named, and `--help` lists the exit codes.
#[test]
fn mdsctl_refuses_what_cannot_be_placed_and_names_what_is_wrong() {
    let cl = ProcCluster::start(3).unwrap();
    let m = cl.mount().unwrap();
    fs::create_dir(m.p("ckpt")).unwrap();
    let refused = |args: &[&str], says: &str| {
        let (code, _, err) = cl.mdsctl_output(args).unwrap();
        assert_eq!(code, 1, "mdsctl {args:?}: {err}");
        assert!(err.contains(says), "mdsctl {args:?} said {err:?}, not {says:?}");
    };
    refused(&["setstripe", "/ckpt", "--replicas", "5"], "5 replicas need 5 OSDs that take data; the cluster has 3");
    refused(&["setstripe", "/ckpt", "--count", "99"], "a stripe over 99 objects needs 99 OSDs that take data; the cluster has 3");
    // What fits is taken, through the mount's path as through the root's.
    let mount_path = m.p("ckpt");
    cl.mdsctl(&["setstripe", mount_path.to_str().unwrap(), "--count", "3", "--replicas", "3"]).unwrap();
    assert!(cl.mdsctl(&["getstripe", "/ckpt"]).unwrap().contains("replicas:     3"));
    // An OSD taken out takes no new data: three copies no longer fit.
    cl.mdsctl(&["osd", "out", "3"]).unwrap();
    refused(&["setstripe", "/ckpt", "--replicas", "3"], "3 replicas need 3 OSDs that take data; the cluster has 2");
    cl.mdsctl(&["osd", "in", "3"]).unwrap();
    refused(&["getstripe", "/tmp"], "/tmp is not on an aifs mount");
    refused(&["getstripe", "/no-such-dir"], "/no-such-dir: no such file or directory in aifs");
    refused(&["osd", "out", "9"], "there is no OSD 9");
    let (code, help, _) = cl.mdsctl_output(&["--help"]).unwrap();
    assert_eq!(code, 0);
    assert!(help.contains("Exit status:") && help.contains("8  fsck: it could not run"), "{help}");
}

/// Daemon logs an operator can use: an MDS whose config says
/// `log_format = "json"` writes one JSON object a line, filtered as its
/// `log` says; the others, logging to files, write no colour codes; a
/// filter that does not parse stops the daemon with its name.
#[test]
fn daemon_logs_follow_their_config_and_carry_no_colour_into_files() {
    if std::env::var_os("RUST_LOG").is_some() {
        eprintln!("RUST_LOG is set and wins over the configs: skipped");
        return;
    }
    let json = |t: String| format!("log = \"warn,aifs_mds=info\"\nlog_format = \"json\"\n{t}");
    let cl = ProcCluster::start_edited(3, &json).unwrap();
    let m = cl.mount().unwrap();
    fs::create_dir(m.p("d")).unwrap();
    drop(m);
    let mut mds_lines = 0;
    for e in fs::read_dir(cl.path("logs")).unwrap() {
        let path = e.unwrap().path();
        let text = fs::read_to_string(&path).unwrap();
        assert!(!text.contains('\u{1b}'), "{} holds colour codes", path.display());
        if !path.file_name().unwrap().to_str().unwrap().starts_with("mds") {
            continue;
        }
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?} in {} is not JSON: {e}", path.display()));
            let (level, target) = (v["level"].as_str().unwrap(), v["target"].as_str().unwrap());
            assert!(v["fields"]["message"].is_string(), "{line}");
            assert!(target.starts_with("aifs_mds") || level == "WARN" || level == "ERROR", "the filter let through {line}");
            mds_lines += 1;
        }
    }
    assert!(mds_lines > 0, "the MDS logged nothing");
    // A filter that does not parse: the MDS does not start, and says why.
    let text = fs::read_to_string(cl.mds_config(1)).unwrap().replace("warn,aifs_mds=info", "aifs_mds=loud");
    fs::write(cl.path("bad.toml"), text).unwrap();
    let out = std::process::Command::new(aifs_tests::bin_dir().join("aifs-mds")).arg("--config").arg(cl.path("bad.toml")).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("log filter \"aifs_mds=loud\""), "{}: {err}", out.status);
}

/// Unmounts (lazily) a mount the test made itself, even when it fails.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The helper mount(8) runs for type fuse.aifs (`mount -t fuse.aifs
/// CONFIG DIR`, an fstab line), called the way mount(8) calls it: it
/// returns once the file system is there, the options applied (`ro`) or
/// accepted (`_netdev`, `x-systemd.automount`); `umount` ends the client
/// process; an option aifs does not know is refused, named, with
/// mount(8)'s failure code.
#[test]
fn the_mount_helper_mounts_as_mount_8_calls_it_and_umount_ends_the_client() {
    let cl = ProcCluster::start(3).unwrap();
    let m = cl.mount().unwrap();
    fs::write(m.p("before"), b"made elsewhere").unwrap();
    drop(m);
    let dir = tempfile::tempdir().unwrap();
    let mp = dir.path().join("ai");
    fs::create_dir(&mp).unwrap();
    let helper = |opts: &str| {
        std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/mount.fuse.aifs"))
            .arg(cl.path("client.toml"))
            .arg(&mp)
            .args(["-o", opts])
            .env("AIFS_MOUNT", aifs_tests::bin_dir().join("aifs-mount"))
            .env("AIFS_LOG_DIR", cl.path("logs"))
            .output()
            .unwrap()
    };
    let out = helper("ro,_netdev,x-systemd.automount,name=helper");
    let _guard = Unmount(mp.clone());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let here = aifs_common::mounts::mounts().into_iter().any(|x| x.point == mp && x.fstype == "fuse.aifs");
    assert!(here, "the helper returned before the mount was there");
    assert_eq!(fs::read(mp.join("before")).unwrap(), b"made elsewhere");
    let e = fs::write(mp.join("x"), b"no").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "a mount with -o ro took a write");
    let client = || {
        let out = std::process::Command::new("pgrep").args(["-f", &format!("aifs-mount.*{}", mp.display())]).output().unwrap();
        !out.stdout.is_empty()
    };
    assert!(client(), "no aifs-mount process serves the mount");
    assert!(std::process::Command::new("umount").arg(&mp).status().unwrap().success());
    let t = std::time::Instant::now();
    while client() {
        assert!(t.elapsed() < std::time::Duration::from_secs(10), "aifs-mount still runs 10 s after umount");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = helper("rw,frobnicate");
    assert_eq!(out.status.code(), Some(32));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"frobnicate\" is not one aifs knows"), "{err}");
}

/// Removes the helper a test put into /sbin, even when it fails.
struct Uninstall(std::path::PathBuf);

impl Drop for Uninstall {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// An fstab line of type fuse.aifs, through mount(8) itself: `mount -a`
/// over an fstab naming only it (`-T`) finds the helper in /sbin, as
/// `make install` puts it, and mounts; `umount` ends the client. The
/// helper is linked into /sbin for the test and taken away after; a
/// machine that has one installed already keeps it, and the test uses it.
#[test]
fn an_fstab_line_mounts_with_mount_a() {
    let sbin = std::path::PathBuf::from("/sbin/mount.fuse.aifs");
    let _installed = match sbin.symlink_metadata().is_ok() {
        true => None,
        false => {
            std::os::unix::fs::symlink(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/mount.fuse.aifs"), &sbin).unwrap();
            Some(Uninstall(sbin))
        }
    };
    let cl = ProcCluster::start(3).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mp = dir.path().join("ai");
    fs::create_dir(&mp).unwrap();
    let fstab = dir.path().join("fstab");
    fs::write(&fstab, format!("# aifs\n{} {} fuse.aifs _netdev,nofail,name=fstab 0 0\n", cl.path("client.toml").display(), mp.display())).unwrap();
    let out = std::process::Command::new("mount")
        .arg("-a")
        .arg("-T")
        .arg(&fstab)
        .env("AIFS_MOUNT", aifs_tests::bin_dir().join("aifs-mount"))
        .env("AIFS_LOG_DIR", cl.path("logs"))
        .output()
        .unwrap();
    let _guard = Unmount(mp.clone());
    assert!(out.status.success(), "mount -a: {}", String::from_utf8_lossy(&out.stderr));
    let here = aifs_common::mounts::mounts().into_iter().any(|x| x.point == mp && x.fstype == "fuse.aifs");
    assert!(here, "mount -a returned without aifs mounted at {}", mp.display());
    fs::write(mp.join("through-fstab"), b"yes").unwrap();
    let v: serde_json::Value = serde_json::from_str(&cl.mdsctl(&["--json", "session", "ls"]).unwrap()).unwrap();
    assert!(v["sessions"].as_array().unwrap().iter().any(|s| s["name"] == "fstab"), "the fstab line's name= was not applied: {v}");
    assert!(std::process::Command::new("umount").arg(&mp).status().unwrap().success());
    let m = cl.mount().unwrap();
    assert_eq!(fs::read(m.p("through-fstab")).unwrap(), b"yes");
}
