//! Leases across clients: two `aifs-mount` processes of one cluster, as two
//! GPU nodes would mount it, checked through the real mounts. Needs root
//! and /dev/fuse; `make test` enables the `fuse_tests` feature.
#![cfg(feature = "fuse_tests")]

use aifs_tests::{flock, pattern};
use aifs_tests::proc::{Mount, ProcCluster};
use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt};
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;

/// Does `worker` finish within `limit` (polled)? For work that must not
/// wait on a stopped MDS.
fn finishes_within<T>(worker: &std::thread::JoinHandle<T>, limit: Duration) -> bool {
    let t = Instant::now();
    while !worker.is_finished() && t.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(10));
    }
    worker.is_finished()
}

fn names(dir: &std::path::Path) -> BTreeSet<String> {
    fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
}

#[test]
fn stat_on_one_mount_sees_the_size_of_unflushed_writes_on_another() {
    let cl = ProcCluster::start(3).unwrap();
    let a = cl.mount().unwrap();
    let b = cl.mount().unwrap();
    let mut f = File::create(a.p("ckpt")).unwrap();
    // B caches the empty file first
    assert_eq!(fs::metadata(b.p("ckpt")).unwrap().len(), 0);
    let chunk = 3 * MIB + 17;
    let mut size = 0u64;
    for step in 0..3u64 {
        f.write_all(&pattern::bytes(5, size, chunk)).unwrap();
        size += chunk as u64;
        // A has neither closed nor fsync'd: the MDS recalls A's write
        // lease, A flushes, and B's stat sees every byte A wrote
        assert_eq!(fs::metadata(b.p("ckpt")).unwrap().len(), size, "step {step}");
    }
    // and B reads them while A still holds the file open
    let got = fs::read(b.p("ckpt")).unwrap();
    assert!(got == pattern::bytes(5, 0, size as usize), "B read other bytes than A wrote");
    // A writes on (taking its lease back) and B sees that too
    f.write_all(b"tail").unwrap();
    assert_eq!(fs::metadata(b.p("ckpt")).unwrap().len(), size + 4);
    drop(f);
    assert_eq!(fs::metadata(a.p("ckpt")).unwrap().len(), size + 4);
    // who holds what is visible to the operator
    let _w = OpenOptions::new().write(true).open(a.p("ckpt")).unwrap();
    let leases = cl.mdsctl(&["leases", a.p("ckpt").to_str().unwrap()]).unwrap();
    assert!(leases.contains("write"), "mdsctl leases shows no write lease:\n{leases}");
}

#[test]
fn namespace_changes_in_a_listed_directory_are_seen_at_once() {
    let cl = ProcCluster::start(3).unwrap();
    let a = cl.mount().unwrap();
    let b = cl.mount().unwrap();
    fs::create_dir(a.p("step")).unwrap();
    let mut expect = BTreeSet::new();
    assert_eq!(names(&b.p("step")), expect);
    for i in 0..20 {
        let n = format!("rank{i}");
        // B looks first: its kernel and its client now cache a negative entry
        assert_eq!(fs::metadata(b.p(&format!("step/{n}"))).unwrap_err().kind(), ErrorKind::NotFound);
        fs::write(a.p(&format!("step/{n}")), n.as_bytes()).unwrap();
        expect.insert(n.clone());
        assert_eq!(fs::read(b.p(&format!("step/{n}"))).unwrap(), n.as_bytes(), "B does not see {n}");
        assert_eq!(names(&b.p("step")), expect, "B's listing after creating {n}");
    }
    // B's caches are warm; A renames, replaces, unlinks, makes and removes
    fs::rename(a.p("step/rank0"), a.p("step/latest")).unwrap();
    assert!(!b.p("step/rank0").exists());
    assert_eq!(fs::read(b.p("step/latest")).unwrap(), b"rank0");
    fs::rename(a.p("step/rank1"), a.p("step/latest")).unwrap();
    assert_eq!(fs::read(b.p("step/latest")).unwrap(), b"rank1");
    fs::remove_file(a.p("step/rank2")).unwrap();
    assert!(!b.p("step/rank2").exists());
    fs::create_dir(a.p("step/sub")).unwrap();
    assert!(b.p("step/sub").is_dir());
    fs::rename(a.p("step/rank3"), a.p("step/sub/moved")).unwrap();
    assert_eq!(fs::read(b.p("step/sub/moved")).unwrap(), b"rank3");
    for n in ["rank0", "rank1", "rank2", "rank3"] {
        expect.remove(n);
    }
    expect.insert("latest".into());
    expect.insert("sub".into());
    assert_eq!(names(&b.p("step")), expect);
    // and the other way round, with attributes: chmod on B, seen by A
    fs::set_permissions(b.p("step/latest"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(fs::metadata(a.p("step/latest")).unwrap().permissions().mode() & 0o777, 0o600);
}

#[test]
fn four_writers_on_two_mounts_fill_one_file() {
    const REGION: usize = 64 * MIB;
    let cl = ProcCluster::start(3).unwrap();
    let a = cl.mount().unwrap();
    let b = cl.mount().unwrap();
    File::create(a.p("n21")).unwrap();
    let writers: Vec<(usize, std::path::PathBuf)> =
        (0..4).map(|r| (r, if r % 2 == 0 { a.p("n21") } else { b.p("n21") })).collect();
    std::thread::scope(|s| {
        for (rank, path) in &writers {
            s.spawn(move || {
                let f = OpenOptions::new().write(true).open(path).unwrap();
                let base = (*rank * REGION) as u64;
                for off in (0..REGION).step_by(MIB) {
                    let at = base + off as u64;
                    f.write_all_at(&pattern::bytes(21, at, MIB), at).unwrap();
                }
                f.sync_all().unwrap();
            });
        }
    });
    for m in [&a, &b] {
        let got = fs::read(m.p("n21")).unwrap();
        assert_eq!(got.len(), 4 * REGION, "size seen on {}", m.path.display());
        for r in 0..4 {
            let want = pattern::bytes(21, (r * REGION) as u64, REGION);
            assert!(got[r * REGION..(r + 1) * REGION] == want[..], "region {r} differs on {}", m.path.display());
        }
    }
}

#[test]
fn a_killed_writer_holds_others_up_only_until_its_session_expires() {
    let cl = ProcCluster::start(3).unwrap();
    let mut a = cl.mount().unwrap();
    let b = cl.mount().unwrap();
    let f = File::create(a.p("dead")).unwrap();
    f.write_all_at(&pattern::bytes(9, 0, 8 * MIB), 0).unwrap();
    f.sync_all().unwrap();
    // more bytes, buffered and never flushed: lost with the client
    f.write_all_at(&pattern::bytes(9, 8 * MIB as u64, 100), 8 * MIB as u64).unwrap();
    // and a lock, which must not outlive the client either
    flock(&File::open(a.p("dead")).unwrap(), libc::LOCK_EX).unwrap();
    a.kill9();
    let t = Instant::now();
    let w = OpenOptions::new().read(true).write(true).open(b.p("dead")).unwrap();
    let waited = t.elapsed();
    // the session term is 10 s; B waits for the dead holder at most that
    // long after its last heartbeat, plus a margin
    assert!(waited < Duration::from_secs(14), "B waited {waited:?} for a dead writer's lease");
    let mut got = vec![0u8; 8 * MIB];
    w.read_exact_at(&mut got, 0).unwrap();
    assert!(got == pattern::bytes(9, 0, 8 * MIB), "fsync'd bytes of the dead writer differ");
    w.write_all_at(b"alive", 0).unwrap();
    drop(w);
    assert_eq!(&fs::read(b.p("dead")).unwrap()[..5], b"alive");
    // the dead client's lock went with its session (the MDS's ticker
    // reaps what a request found expired within half a second)
    let g = File::open(b.p("dead")).unwrap();
    let t = Instant::now();
    while let Err(e) = flock(&g, libc::LOCK_EX | libc::LOCK_NB) {
        assert!(t.elapsed() < Duration::from_secs(3), "a dead client's flock outlived its session: {e}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// stat every file, then `ls -l` the directory, twice on one mount; the
/// MDS requests of each pass.
fn two_passes(cl: &ProcCluster, m: &Mount, n: usize) -> [(u64, u64); 2] {
    let mut out = [(0, 0); 2];
    for pass in &mut out {
        let before = cl.mds_requests().unwrap();
        for i in 0..n {
            fs::metadata(m.p(&format!("many/f{i}"))).unwrap();
        }
        let mid = cl.mds_requests().unwrap();
        let mut seen = 0;
        for e in fs::read_dir(m.p("many")).unwrap() {
            e.unwrap().metadata().unwrap();
            seen += 1;
        }
        assert_eq!(seen, n);
        let after = cl.mds_requests().unwrap();
        *pass = (mid - before - 1, after - mid - 1);
    }
    out
}

/// A mount that never saw the files lists their directory ahead after a
/// few stats miss (statahead), so the first pass asks the MDS far fewer
/// times than there are names; the second pass asks (nearly) nothing.
/// Without the lease cache, every pass asks for every name.
#[test]
fn cached_metadata_is_served_without_asking_the_mds_again() {
    const N: usize = 400;
    let cl = ProcCluster::start(3).unwrap();
    let w = cl.mount().unwrap();
    fs::create_dir(w.p("many")).unwrap();
    for i in 0..N {
        fs::write(w.p(&format!("many/f{i}")), b"x").unwrap();
    }
    let leased = cl.mount().unwrap();
    let [first, second] = two_passes(&cl, &leased, N);
    assert!(first.0 <= N as u64 / 4, "first stat pass asked the MDS {} times for {N} names: no statahead", first.0);
    assert!(second.0 + second.1 <= 10, "second pass still asked the MDS {second:?} times (first {first:?})");
    // the same without the lease cache: every pass asks again
    let plain = Mount::with_settings(&cl, "lease_cache = false").unwrap();
    let [p1, p2] = two_passes(&cl, &plain, N);
    assert!(p2.0 >= p1.0 / 2 && p2.0 >= N as u64 / 2, "without leases: first {p1:?}, second {p2:?}");
}

#[test]
fn appends_from_two_mounts_never_overwrite_each_other() {
    const PER: usize = 200;
    let cl = ProcCluster::start(3).unwrap();
    let a = cl.mount().unwrap();
    let b = cl.mount().unwrap();
    File::create(a.p("log")).unwrap();
    std::thread::scope(|s| {
        for (tag, m) in [(b'a', &a), (b'b', &b)] {
            s.spawn(move || {
                let mut f = OpenOptions::new().append(true).open(m.p("log")).unwrap();
                for i in 0..PER {
                    // one record per write(2): tag, sequence number, newline
                    let rec = format!("{}{:05}\n", tag as char, i);
                    f.write_all(rec.as_bytes()).unwrap();
                }
            });
        }
    });
    for m in [&a, &b] {
        let text = String::from_utf8(fs::read(m.p("log")).unwrap()).unwrap();
        let recs: Vec<&str> = text.lines().collect();
        for tag in ["a", "b"] {
            // Which records went says how: a run of one mount's overwritten
            // by the other's, or a tail never published.
            let seq: Vec<usize> = recs.iter().filter(|r| r.starts_with(tag)).map(|r| r[1..].parse().unwrap()).collect();
            assert_eq!(seq, (0..PER).collect::<Vec<_>>(), "records of {tag} lost or reordered, seen on {}", m.path.display());
        }
        assert_eq!(recs.len(), 2 * PER, "records seen on {}", m.path.display());
    }
}

#[test]
fn exclusive_creates_race_to_exactly_one_winner() {
    let cl = ProcCluster::start(3).unwrap();
    let a = cl.mount().unwrap();
    let b = cl.mount().unwrap();
    for round in 0..10 {
        let name = format!("lock{round}");
        let wins: Vec<bool> = std::thread::scope(|s| {
            let hs: Vec<_> = [&a, &b, &a, &b]
                .into_iter()
                .map(|m| {
                    let p = m.p(&name);
                    s.spawn(move || match OpenOptions::new().write(true).create_new(true).open(&p) {
                        Ok(_) => true,
                        Err(e) if e.kind() == ErrorKind::AlreadyExists => false,
                        Err(e) => panic!("create_new: {e}"),
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(wins.iter().filter(|w| **w).count(), 1, "round {round}: {wins:?}");
    }
}

#[test]
fn unlinked_and_replaced_files_stay_readable_until_the_last_close() {
    let cl = ProcCluster::start(3).unwrap();
    let a = cl.mount().unwrap();
    let b = cl.mount().unwrap();
    let body = pattern::bytes(3, 0, 3 * MIB + 5);
    fs::write(a.p("old"), &body).unwrap();
    let held = File::open(b.p("old")).unwrap();
    fs::remove_file(a.p("old")).unwrap();
    assert!(!b.p("old").exists());
    let mut got = vec![0u8; body.len()];
    held.read_exact_at(&mut got, 0).unwrap();
    assert!(got == body, "an unlinked file read back other bytes while open");
    // rename over a file another mount has open
    fs::write(a.p("ckpt"), b"version 1").unwrap();
    let v1 = File::open(b.p("ckpt")).unwrap();
    fs::write(a.p("ckpt.tmp"), b"version 2").unwrap();
    fs::rename(a.p("ckpt.tmp"), a.p("ckpt")).unwrap();
    assert_eq!(fs::read(b.p("ckpt")).unwrap(), b"version 2");
    let mut old = [0u8; 9];
    v1.read_exact_at(&mut old, 0).unwrap();
    assert_eq!(&old, b"version 1");
    // after the last close, the objects go
    let objects = |cl: &ProcCluster| -> usize { object_files(&cl.path("data")) };
    let before = objects(&cl);
    drop(held);
    drop(v1);
    let t = Instant::now();
    while objects(&cl) >= before && t.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(objects(&cl) < before, "objects of closed unlinked files were not freed");
}

/// Object files (not checksum sidecars) under every OSD's data directory.
fn object_files(dir: &std::path::Path) -> usize {
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    rd.flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                object_files(&p)
            } else {
                let objects_dir = p.parent().and_then(|d| d.parent()).is_some_and(|d| d.ends_with("objects"));
                usize::from(objects_dir && p.extension().is_none_or(|x| x != "crc"))
            }
        })
        .sum()
}

fn fcntl_lock(f: &File, typ: i32, start: i64, len: i64, wait: bool) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a zeroed flock is a valid value; every field the call reads
    // is set below.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = typ as i16;
    fl.l_whence = libc::SEEK_SET as i16;
    fl.l_start = start;
    fl.l_len = len;
    let cmd = if wait { libc::F_SETLKW } else { libc::F_SETLK };
    // SAFETY: a valid descriptor and a pointer to a live flock.
    let r = unsafe { libc::fcntl(f.as_raw_fd(), cmd, &mut fl) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}


#[test]
fn fcntl_and_flock_locks_conflict_across_mounts() {
    let cl = ProcCluster::start(3).unwrap();
    let a = cl.mount().unwrap();
    let b = cl.mount().unwrap();
    fs::write(a.p("locked"), b"0123456789").unwrap();
    let fa = OpenOptions::new().read(true).write(true).open(a.p("locked")).unwrap();
    let fb = OpenOptions::new().read(true).write(true).open(b.p("locked")).unwrap();
    fcntl_lock(&fa, libc::F_WRLCK, 0, 5, false).unwrap();
    let e = fcntl_lock(&fb, libc::F_WRLCK, 4, 2, false).unwrap_err();
    assert!(matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)), "{e}");
    // disjoint ranges and shared read locks coexist
    fcntl_lock(&fb, libc::F_WRLCK, 5, 5, false).unwrap();
    fcntl_lock(&fb, libc::F_UNLCK, 5, 5, false).unwrap();
    fcntl_lock(&fa, libc::F_RDLCK, 0, 5, false).unwrap();
    fcntl_lock(&fb, libc::F_RDLCK, 0, 5, false).unwrap();
    fcntl_lock(&fb, libc::F_UNLCK, 0, 0, false).unwrap();
    // a waiting lock is granted when the holder closes its descriptor
    fcntl_lock(&fa, libc::F_WRLCK, 0, 0, false).unwrap();
    let t = Instant::now();
    std::thread::scope(|s| {
        let w = s.spawn(|| fcntl_lock(&fb, libc::F_WRLCK, 0, 0, true));
        std::thread::sleep(Duration::from_millis(300));
        drop(fa);
        w.join().unwrap().unwrap();
    });
    assert!(t.elapsed() >= Duration::from_millis(300));
    drop(fb);
    // flock: exclusive across mounts, released by close
    let ga = File::open(a.p("locked")).unwrap();
    let gb = File::open(b.p("locked")).unwrap();
    flock(&ga, libc::LOCK_EX).unwrap();
    let e = flock(&gb, libc::LOCK_EX | libc::LOCK_NB).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EWOULDBLOCK), "{e}");
    drop(ga);
    // FUSE sends the unlock of a flock with the release of the file, which
    // the kernel sends after close(2) returns: allow it a moment.
    let t = Instant::now();
    while let Err(e) = flock(&gb, libc::LOCK_EX | libc::LOCK_NB) {
        assert!(t.elapsed() < Duration::from_secs(5), "flock never released: {e}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A reader whose lease was recalled while it held the file open, and
/// that learns the new size from a stat (which grants a read lease of its
/// own) before it reads on through the old handle, reads every byte the
/// writer added: the open file's state took the size again.
#[test]
fn a_reader_holding_a_file_open_reads_what_another_mount_appended() {
    let cl = ProcCluster::start(3).unwrap();
    let a = cl.mount().unwrap();
    let b = cl.mount().unwrap();
    let first = 2 * MIB + 5;
    fs::write(a.p("grows"), pattern::bytes(8, 0, first)).unwrap();
    let r = File::open(b.p("grows")).unwrap();
    let mut got = vec![0u8; first];
    r.read_exact_at(&mut got, 0).unwrap();
    assert!(got == pattern::bytes(8, 0, first));
    for step in 1..4usize {
        let end = first * (step + 1);
        let mut w = OpenOptions::new().append(true).open(a.p("grows")).unwrap();
        w.write_all(&pattern::bytes(8, (end - first) as u64, first)).unwrap();
        drop(w);
        assert_eq!(fs::metadata(b.p("grows")).unwrap().len(), end as u64, "step {step}");
        let mut tail = vec![0u8; first];
        r.read_exact_at(&mut tail, (end - first) as u64).unwrap_or_else(|e| panic!("step {step}: reading the appended bytes: {e}"));
        assert!(tail == pattern::bytes(8, (end - first) as u64, first), "step {step}: other bytes than appended");
    }
}

#[test]
fn o_trunc_on_one_mount_is_seen_by_the_other() {
    let cl = ProcCluster::start(3).unwrap();
    let a = cl.mount().unwrap();
    let b = cl.mount().unwrap();
    fs::write(a.p("t"), pattern::bytes(4, 0, 2 * MIB)).unwrap();
    assert_eq!(fs::read(b.p("t")).unwrap().len(), 2 * MIB);
    let mut f = OpenOptions::new().write(true).truncate(true).open(b.p("t")).unwrap();
    assert_eq!(fs::metadata(a.p("t")).unwrap().len(), 0);
    f.write_all(b"new").unwrap();
    drop(f);
    assert_eq!(fs::read(a.p("t")).unwrap(), b"new");
}

#[test]
fn times_change_as_posix_says_and_every_mount_sees_them() {
    use std::os::unix::fs::PermissionsExt;
    let cl = ProcCluster::start(3).unwrap();
    let a = cl.mount().unwrap();
    let b = cl.mount().unwrap();
    fs::write(a.p("t"), b"first").unwrap();
    let m0 = fs::metadata(b.p("t")).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    // a read sets atime (relatime: it was not newer than mtime), not ctime
    assert_eq!(fs::read(b.p("t")).unwrap(), b"first");
    let t = Instant::now();
    let m1 = loop {
        let m = fs::metadata(a.p("t")).unwrap();
        if m.atime_nsec() != m0.atime_nsec() || m.atime() != m0.atime() || t.elapsed() > Duration::from_secs(5) {
            break m;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!((m1.atime(), m1.atime_nsec()) > (m0.mtime(), m0.mtime_nsec()), "atime not set by a read");
    assert_eq!((m1.ctime(), m1.ctime_nsec()), (m0.ctime(), m0.ctime_nsec()), "a read changed ctime");
    // chmod changes ctime only
    std::thread::sleep(Duration::from_millis(20));
    fs::set_permissions(a.p("t"), fs::Permissions::from_mode(0o640)).unwrap();
    let m2 = fs::metadata(b.p("t")).unwrap();
    assert!((m2.ctime(), m2.ctime_nsec()) > (m1.ctime(), m1.ctime_nsec()));
    assert_eq!((m2.mtime(), m2.mtime_nsec()), (m1.mtime(), m1.mtime_nsec()));
    // a write changes mtime and ctime
    std::thread::sleep(Duration::from_millis(20));
    OpenOptions::new().write(true).open(b.p("t")).unwrap().write_all(b"second").unwrap();
    let m3 = fs::metadata(a.p("t")).unwrap();
    assert!((m3.mtime(), m3.mtime_nsec()) > (m2.mtime(), m2.mtime_nsec()));
    assert!((m3.ctime(), m3.ctime_nsec()) > (m2.ctime(), m2.ctime_nsec()));
    assert_eq!(m3.len(), 6);
}

#[test]
fn creates_under_a_directory_lease_are_batched_and_seen_by_the_next_look_elsewhere() {
    let cl = ProcCluster::start(3).unwrap();
    let a = cl.mount().unwrap();
    let b = cl.mount().unwrap();
    // A made the directory and nobody else looked: A holds its write lease,
    // which came with inode numbers to create there. A answers creates and
    // unlinks itself, even while the MDS hangs, and sends them in batches.
    fs::create_dir(a.p("step")).unwrap();
    let n = 400;
    let before = cl.mds_requests().unwrap();
    {
        let _frozen = cl.freeze_mds();
        let dir = a.p("step");
        let worker = std::thread::spawn(move || -> std::io::Result<()> {
            for i in 0..n {
                fs::write(dir.join(format!("rank{i:04}")), [])?;
            }
            for i in 0..n / 4 {
                fs::remove_file(dir.join(format!("rank{i:04}")))?;
            }
            Ok(())
        });
        assert!(finishes_within(&worker, Duration::from_secs(30)), "creates and unlinks under the lease waited for the stopped MDS");
        worker.join().unwrap().unwrap();
    }
    // fsync of the directory: everything A did there is at the MDS
    File::open(a.p("step")).unwrap().sync_all().unwrap();
    // the batch out when the MDS stopped, a refill of inode numbers, the
    // batch of what queued meanwhile, and session heartbeats
    let asked = cl.mds_requests().unwrap() - before - 1;
    assert!(asked <= 10, "{n} creates and {} unlinks cost {asked} MDS requests", n / 4);
    // B's first look recalls the lease: every change A made is there
    let expect: BTreeSet<String> = (n / 4..n).map(|i| format!("rank{i:04}")).collect();
    assert_eq!(names(&b.p("step")), expect);
    assert!(!b.p("step/rank0000").exists());
    assert_eq!(fs::metadata(b.p("step/rank0399")).unwrap().len(), 0);
    // from now on both go through the MDS, and see each other's changes
    fs::write(b.p("step/from_b"), b"b").unwrap();
    assert_eq!(fs::read(a.p("step/from_b")).unwrap(), b"b");
    fs::write(a.p("step/from_a"), b"a").unwrap();
    assert_eq!(fs::read(b.p("step/from_a")).unwrap(), b"a");
    fs::remove_file(a.p("step/rank0100")).unwrap();
    assert!(!b.p("step/rank0100").exists());
    // a directory with creates still on their way is not empty to anyone
    fs::create_dir(a.p("next")).unwrap();
    fs::write(a.p("next/x"), b"x").unwrap();
    assert_eq!(fs::remove_dir(b.p("next")).unwrap_err().raw_os_error(), Some(libc::ENOTEMPTY));
    // data written to a file made under the lease reads back elsewhere
    fs::create_dir(a.p("data")).unwrap();
    let body = pattern::bytes(9, 0, 3 * MIB + 5);
    let mut f = File::create(a.p("data/shard0")).unwrap();
    f.write_all(&body).unwrap();
    f.sync_all().unwrap();
    drop(f);
    assert!(fs::read(b.p("data/shard0")).unwrap() == body, "B read other bytes than A wrote");
    // the operator sees who holds the lease
    let leases = cl.mdsctl(&["leases", a.p("step").to_str().unwrap()]).unwrap();
    assert!(leases.contains("read"), "mdsctl leases:\n{leases}");
}

#[test]
fn creates_under_a_directory_lease_survive_kill_9_once_the_directory_is_fsynced() {
    let mut cl = ProcCluster::start(3).unwrap();
    let mut a = cl.mount().unwrap();
    fs::create_dir(a.p("ckpt")).unwrap();
    for i in 0..50 {
        fs::write(a.p(&format!("ckpt/rank{i}")), format!("{i}")).unwrap();
    }
    for i in 0..10 {
        fs::create_dir(a.p(&format!("ckpt/sub{i}"))).unwrap();
    }
    for i in 0..3 {
        fs::remove_dir(a.p(&format!("ckpt/sub{i}"))).unwrap();
    }
    // fsync of the directory: every change made under its lease is durable
    File::open(a.p("ckpt")).unwrap().sync_all().unwrap();
    // then the node fails: servers and client die at once
    cl.kill9_all();
    a.kill9();
    cl.start_all().unwrap();
    let b = cl.mount().unwrap();
    let expect: BTreeSet<String> = (0..50).map(|i| format!("rank{i}")).chain((3..10).map(|i| format!("sub{i}"))).collect();
    assert_eq!(names(&b.p("ckpt")), expect);
    assert_eq!(fs::metadata(b.p("ckpt")).unwrap().nlink(), 2 + 7);
}

/// Directories made and removed under their parent's write lease are
/// answered by the client, even while the MDS hangs, owned and counted as
/// the MDS records them once the parent is fsynced; another mount sees
/// them all, and a directory with a name in it is removed by no one.
#[test]
fn directories_made_and_removed_under_the_parents_lease_are_seen_elsewhere() {
    let cl = ProcCluster::start(1).unwrap();
    let a = cl.mount().unwrap();
    let b = cl.mount().unwrap();
    fs::create_dir(a.p("ckpt")).unwrap();
    let n = 200;
    {
        let _frozen = cl.freeze_mds();
        let dir = a.p("ckpt");
        let worker = std::thread::spawn(move || -> std::io::Result<()> {
            for i in 0..n {
                fs::DirBuilder::new().mode(0o750).create(dir.join(format!("step{i:03}")))?;
            }
            for i in 0..n / 4 {
                fs::remove_dir(dir.join(format!("step{i:03}")))?;
            }
            fs::create_dir(dir.join("tmp"))?;
            fs::remove_dir(dir.join("tmp"))
        });
        assert!(finishes_within(&worker, Duration::from_secs(30)), "mkdirs and rmdirs under the lease waited for the stopped MDS");
        worker.join().unwrap().unwrap();
        assert_eq!(fs::metadata(a.p("ckpt")).unwrap().nlink(), 2 + 150);
    }
    File::open(a.p("ckpt")).unwrap().sync_all().unwrap();
    let expect: BTreeSet<String> = (n / 4..n).map(|i| format!("step{i:03}")).collect();
    assert_eq!(names(&b.p("ckpt")), expect);
    assert_eq!(fs::metadata(b.p("ckpt")).unwrap().nlink(), 2 + 150);
    for name in ["ckpt/step050", "ckpt/step199"] {
        let (ma, mb) = (fs::metadata(a.p(name)).unwrap(), fs::metadata(b.p(name)).unwrap());
        assert!(mb.is_dir() && mb.mode() & 0o7777 == 0o750 && mb.nlink() == 2, "{name}: {mb:?}");
        assert_eq!((ma.ino(), ma.mode(), ma.uid(), ma.gid()), (mb.ino(), mb.mode(), mb.uid(), mb.gid()));
    }
    // a name made elsewhere, or made here in a directory made here,
    // keeps the directory
    fs::write(b.p("ckpt/step100/from_b"), b"b").unwrap();
    assert_eq!(fs::remove_dir(a.p("ckpt/step100")).unwrap_err().raw_os_error(), Some(libc::ENOTEMPTY));
    fs::write(a.p("ckpt/step101/from_a"), b"a").unwrap();
    assert_eq!(fs::remove_dir(b.p("ckpt/step101")).unwrap_err().raw_os_error(), Some(libc::ENOTEMPTY));
    assert_eq!(fs::read(b.p("ckpt/step101/from_a")).unwrap(), b"a");
    fs::remove_dir(b.p("ckpt/step102")).unwrap();
    assert!(!a.p("ckpt/step102").exists());
}

/// The share of the first `len` bytes of `f` in the kernel's page cache.
fn cached_share(f: &File, len: usize) -> f64 {
    let fd = std::os::fd::AsRawFd::as_raw_fd(f);
    let pages = len.div_ceil(4096);
    let mut v = vec![0u8; pages];
    // SAFETY: a read-only shared mapping of a file we hold open, mapped
    // and unmapped here; mincore fills one byte per page of it.
    let r = unsafe {
        let p = libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, fd, 0);
        assert_ne!(p, libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
        let r = libc::mincore(p, len, v.as_mut_ptr());
        libc::munmap(p, len);
        r
    };
    assert_eq!(r, 0, "mincore: {}", std::io::Error::last_os_error());
    v.iter().filter(|b| **b & 1 == 1).count() as f64 / pages as f64
}

/// Turns the kernel's FUSE-over-io_uring switch on (where the kernel has
/// it and we may), and back as it was when dropped. Only mounts that ask
/// for it (`fuse_uring_depth`) use it.
struct UringSwitch(Option<String>);

impl UringSwitch {
    const KNOB: &str = "/sys/module/fuse/parameters/enable_uring";

    fn on() -> UringSwitch {
        let was = fs::read_to_string(Self::KNOB).ok().map(|s| s.trim().to_string());
        if was.as_deref() == Some("N") && fs::write(Self::KNOB, "Y").is_ok() {
            return UringSwitch(was);
        }
        UringSwitch(None)
    }
}

impl Drop for UringSwitch {
    fn drop(&mut self) {
        if let Some(was) = &self.0 {
            let _ = fs::write(Self::KNOB, was);
        }
    }
}

/// A checkpoint saved and then loaded twice on one mount: the second open
/// keeps the pages the first load left in the page cache, under the read
/// lease, so the reload comes from them. The first load sets the access
/// time (relatime), which made the client forget the file's attributes
/// and open it the second time without its cached pages. Measured as the
/// share of the file cached right after the second open: the machine's
/// own reclaim may take some pages meanwhile (this one runs a DAMON
/// `pageout` scheme), an open that drops the cache takes them all. Over
/// `/dev/fuse`, and over io_uring where the kernel has it.
#[test]
fn a_reload_after_the_access_time_update_comes_from_the_page_cache() {
    let cl = ProcCluster::start(3).unwrap();
    let _uring = UringSwitch::on();
    for (i, settings) in ["fuse_uring_depth = 0", "fuse_uring_depth = 8"].into_iter().enumerate() {
        let a = Mount::with_settings(&cl, settings).unwrap();
        let name = format!("model{i}.pt");
        let body = pattern::bytes(21, 0, 6 * MIB);
        fs::write(a.p(&name), &body).unwrap();
        let f = File::open(a.p(&name)).unwrap();
        f.sync_all().unwrap();
        // the pages the writes left in the page cache go, so the first
        // load reads from the OSDs, as after a restart
        // SAFETY: advice on a descriptor we own.
        assert_eq!(unsafe { libc::posix_fadvise(std::os::fd::AsRawFd::as_raw_fd(&f), 0, 0, libc::POSIX_FADV_DONTNEED) }, 0);
        drop(f);
        assert!(fs::read(a.p(&name)).unwrap() == body);
        // the access-time update is posted in the background
        std::thread::sleep(Duration::from_millis(300));
        let f = File::open(a.p(&name)).unwrap();
        let share = cached_share(&f, body.len());
        assert!(share > 0.5, "{settings:?}: the second open left {:.0}% of the file cached", share * 100.0);
        let mut back = vec![0u8; body.len()];
        f.read_exact_at(&mut back, 0).unwrap();
        assert!(back == body, "{settings:?}: the re-load differs");
    }
}

/// Many directories made, none filled, do not use up the inode numbers a
/// certificate may hold (`max_reserved`): a directory made after dozens of
/// others still takes its files under its write lease, after at most one
/// create through the MDS, and so does an old one. Under the lease, the
/// creates are answered while the MDS hangs; without it, each would wait.
#[test]
fn directories_made_in_bulk_leave_numbers_for_the_files_made_later() {
    let cl = ProcCluster::start(1).unwrap();
    let a = cl.mount().unwrap();
    fs::create_dir(a.p("ckpt")).unwrap();
    // 64 directories of a batch (512) each would be twice max_reserved
    for i in 0..64 {
        fs::create_dir(a.p(&format!("ckpt/step{i:02}"))).unwrap();
    }
    for dir in ["ckpt/step63", "ckpt/step40", "ckpt/step01"] {
        // the first create may go to the MDS, and bring the lease
        File::create(a.p(&format!("{dir}/first"))).unwrap();
        File::open(a.p(dir)).unwrap().sync_all().unwrap();
        let _frozen = cl.freeze_mds();
        let d = a.p(dir);
        let worker = std::thread::spawn(move || -> std::io::Result<()> {
            for i in 0..200 {
                File::create(d.join(format!("rank{i:03}")))?;
            }
            Ok(())
        });
        assert!(finishes_within(&worker, Duration::from_secs(30)), "creates in {dir} waited for the stopped MDS: no write lease with numbers");
        worker.join().unwrap().unwrap();
    }
    assert_eq!(fs::read_dir(a.p("ckpt/step63")).unwrap().count(), 201);
}

/// A job that makes and removes files all day (checkpoints rotated
/// out) holds leases only on what exists: leases on removed files,
/// symlinks (unlinked, or replaced by a rename, as `ln -sfn` does) and
/// directories leave its session's budget (`max_leases`),
/// which would otherwise fill, leaving the mount nothing it may cache,
/// and make each create cost the MDS more (the table grew by a lease a
/// file).
#[test]
fn leases_on_removed_files_and_directories_leave_the_sessions_budget() {
    const LIMIT: usize = 200;
    let cl = ProcCluster::start_edited(3, &|t| t.replace("max_leases = 100000", &format!("max_leases = {LIMIT}"))).unwrap();
    let m = cl.mount().unwrap();
    fs::create_dir(m.p("ckpt")).unwrap();
    for round in 0..3 {
        let step = m.p(&format!("ckpt/step{round}"));
        fs::create_dir(&step).unwrap();
        for i in 0..LIMIT {
            File::create(step.join(format!("rank{i}"))).unwrap();
        }
        // links to the latest step, as some jobs keep
        for i in 0..20 {
            std::os::unix::fs::symlink(format!("rank{i}"), step.join(format!("latest{i}"))).unwrap();
            assert_eq!(fs::read_link(step.join(format!("latest{i}"))).unwrap().to_str(), Some(format!("rank{i}").as_str()));
        }
        // a link to the newest rank moved along, each new one renamed over the last
        for i in 0..20 {
            std::os::unix::fs::symlink(format!("rank{i}"), step.join("next")).unwrap();
            fs::rename(step.join("next"), step.join("newest")).unwrap();
        }
        assert_eq!(fs::read_link(step.join("newest")).unwrap().to_str(), Some("rank19"));
        for i in 0..LIMIT {
            fs::remove_file(step.join(format!("rank{i}"))).unwrap();
        }
        for i in 0..20 {
            fs::remove_file(step.join(format!("latest{i}"))).unwrap();
        }
        fs::remove_file(step.join("newest")).unwrap();
        fs::remove_dir(&step).unwrap();
    }
    let held = || -> u64 {
        let out = cl.mdsctl(&["--json", "session", "ls"]).unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["sessions"].as_array().unwrap().iter().map(|s| s["leases"].as_u64().unwrap()).sum()
    };
    // The MDS forgets the leases once the unlinks reach it, which the
    // mount sends in batches behind the calls.
    let t = Instant::now();
    let mut n = held();
    while n > 4 && t.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(200));
        n = held();
    }
    assert!(n <= 4, "the session still holds {n} leases with nothing but `ckpt` left");
    // and what exists is still cached under a lease
    fs::write(m.p("ckpt/latest"), b"step2").unwrap();
    assert_eq!(fs::read(m.p("ckpt/latest")).unwrap(), b"step2");
    assert!(held() >= 1);
}
