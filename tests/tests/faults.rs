//! Faults with real processes and real mounts: OSDs killed while a
//! checkpoint is written, with two replicas (nothing lost, nothing stale
//! ever read) and with one (EIO, never zeros). Needs root and /dev/fuse;
//! `make test` enables the `fuse_tests` feature.
#![cfg(feature = "fuse_tests")]

use aifs_tests::{flock, pattern};
use aifs_tests::proc::ProcCluster;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;

/// Wait (a minute at most) until repair leaves no replica degraded.
fn wait_repaired(cl: &ProcCluster) {
    let t = Instant::now();
    while cl.degraded().unwrap().0 > 0 {
        assert!(t.elapsed() < Duration::from_secs(60), "replicas still degraded after 60 s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `mdsctl repair status --watch`, until it ends by itself when nothing
/// is left (a minute at most): its last line.
fn watch_repair(cl: &ProcCluster) -> String {
    watch_until_done(cl, &["repair", "status", "--watch"])
}

/// `mdsctl ARGS` that watches until nothing is left (a minute at most):
/// its last line.
fn watch_until_done(cl: &ProcCluster, args: &[&str]) -> String {
    let mut child = std::process::Command::new(aifs_tests::bin_dir().join("mdsctl"))
        .arg("--config")
        .arg(cl.path("admin.toml"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("mdsctl {args:?} still watching after 60 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().to_string()
}

/// Whether a degraded replica was recorded: it still is, or repair (which
/// can be quicker than the test's look, once every OSD is up) has already
/// rewritten it from the record.
fn reported_degraded(cl: &ProcCluster) -> bool {
    let (stale, repaired_bytes) = cl.degraded().unwrap();
    stale > 0 || repaired_bytes > 0
}

/// MiB `range` of the pattern of `seed`, in 1 MiB writes.
fn write_mib(f: &mut File, seed: u64, range: std::ops::Range<usize>) {
    let mut buf = vec![0u8; MIB];
    for i in range {
        pattern::fill(seed, (i * MIB) as u64, &mut buf);
        f.write_all(&buf).unwrap();
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Fault {
    /// `kill -9`, started again after the write.
    Kill,
    /// SIGSTOP, resumed after the write.
    Stop,
    /// The OSD's network link cut (it runs in a network namespace of its
    /// own), healed after the write.
    Partition,
}

/// Write a checkpoint of `size_mib` MiB with replicas 2 over 3 OSDs, with
/// one OSD (chosen by `seed`) failing part-way through.
fn checkpoint_through_an_osd_failure(seed: u64, fault: Fault, size_mib: usize) {
    let victim = 1 + (seed % 3) as u32;
    let mut cl = match fault {
        Fault::Partition => ProcCluster::start_routed(3).unwrap(),
        _ => ProcCluster::start(3).unwrap(),
    };
    let net = match fault {
        Fault::Partition => Some(cl.isolate_osd(victim).unwrap()),
        _ => None,
    };
    let a = cl.mount().unwrap();
    fs::create_dir(a.p("ckpt")).unwrap();
    cl.mdsctl(&["setstripe", "/ckpt", "--count", "3", "--replicas", "2", "--size", "1M"]).unwrap();
    let fail_at = size_mib / 10 + (seed as usize * 37 * size_mib / 160) % (size_mib / 2);
    let mut f = File::create(a.p("ckpt/rank0.pt")).unwrap();
    write_mib(&mut f, seed, 0..fail_at);
    // the rest of the write and its fsync succeed on the surviving replicas
    match fault {
        Fault::Kill => {
            cl.kill9_osd(victim);
            write_mib(&mut f, seed, fail_at..size_mib);
            f.sync_all().unwrap();
        }
        Fault::Stop => {
            let _stopped = cl.freeze_osd(victim);
            write_mib(&mut f, seed, fail_at..size_mib);
            f.sync_all().unwrap();
        }
        Fault::Partition => {
            let net = net.as_ref().unwrap();
            net.cut().unwrap();
            write_mib(&mut f, seed, fail_at..size_mib);
            f.sync_all().unwrap();
            net.heal().unwrap();
        }
    }
    drop(f);
    eprintln!("{}", cl.mdsctl(&["getstripe", "/ckpt/rank0.pt"]).unwrap());
    assert!(reported_degraded(&cl), "replicas that missed writes were not recorded");
    let len = (size_mib * MIB) as u64;
    let differs = |path: std::path::PathBuf| pattern::first_difference(&path, seed, len).unwrap();
    // another node reads the checkpoint back whole
    let b = cl.mount().unwrap();
    assert_eq!(differs(b.p("ckpt/rank0.pt")), None, "read back other bytes than were written (seed {seed})");
    // the OSD returns with replicas that missed writes: they are never read
    if fault == Fault::Kill {
        cl.start_osd(victim).unwrap();
    }
    cl.wait_ready(Duration::from_secs(20)).unwrap();
    let c = cl.mount().unwrap();
    assert_eq!(differs(c.p("ckpt/rank0.pt")), None, "a stale replica was read (seed {seed})");
    drop(c);
    // and repair rewrites them from the healthy replicas
    wait_repaired(&cl);
    // two copies of everything again: with any other OSD gone, the
    // repaired replicas serve the whole checkpoint
    cl.kill9_osd(1 + victim % 3);
    let d = cl.mount().unwrap();
    assert_eq!(differs(d.p("ckpt/rank0.pt")), None, "a repaired replica differs (seed {seed})");
}

/// The checkpoint size the fault tests were asked for.
const FULL_MIB: usize = 2048;

#[test]
fn replicated_2_gib_checkpoint_survives_kill_9_of_an_osd_seed_1() {
    checkpoint_through_an_osd_failure(1, Fault::Kill, FULL_MIB);
}

#[test]
fn replicated_checkpoint_survives_kill_9_of_an_osd_seed_2() {
    checkpoint_through_an_osd_failure(2, Fault::Kill, 160);
}

#[test]
fn replicated_2_gib_checkpoint_survives_a_stopped_osd_seed_3() {
    checkpoint_through_an_osd_failure(3, Fault::Stop, FULL_MIB);
}

#[test]
fn replicated_checkpoint_survives_a_network_partition_of_an_osd_seed_4() {
    checkpoint_through_an_osd_failure(4, Fault::Partition, 160);
}

#[test]
fn replicated_checkpoint_survives_a_stopped_osd_seed_5() {
    checkpoint_through_an_osd_failure(5, Fault::Stop, 160);
}

#[test]
fn replicated_checkpoint_survives_a_network_partition_of_an_osd_seed_6() {
    checkpoint_through_an_osd_failure(6, Fault::Partition, 160);
}

#[test]
fn with_one_replica_a_lost_osd_is_eio_for_reader_and_writer() {
    let mut cl = ProcCluster::start(3).unwrap();
    let a = cl.mount().unwrap();
    fs::create_dir(a.p("r1")).unwrap();
    cl.mdsctl(&["setstripe", "/r1", "--count", "3", "--replicas", "1", "--size", "1M"]).unwrap();
    // 12 units over 3 objects: every OSD holds one object of the file
    let body = pattern::bytes(5, 0, 12 * MIB);
    fs::write(a.p("r1/f"), &body).unwrap();
    File::open(a.p("r1/f")).unwrap().sync_all().unwrap();
    let w = OpenOptions::new().write(true).open(a.p("r1/f")).unwrap();
    cl.kill9_osd(1);
    // a reader on another node gets EIO, never a short or zero-filled file
    let b = cl.mount().unwrap();
    let e = fs::read(b.p("r1/f")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "read: {e}");
    // the writer gets EIO at its next write, flush or fsync
    let r = w.write_all_at(&body[..3 * MIB], 0).and_then(|_| w.sync_all());
    let e = r.expect_err("a write to a lost object succeeded");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "write: {e}");
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Damage {
    /// One byte flipped.
    Flip,
    /// The object's file deleted (a lost disk block, a wiped file).
    Delete,
    /// The object's file cut short.
    Truncate,
}

/// The replica a reader asks first of object `seed % 3` damaged on disk,
/// at an offset chosen by `seed`; the reader reads the whole file.
fn a_damaged_replica_is_served_from_the_other_and_repaired(seed: u64, damage: Damage) {
    damaged_replica(seed, damage, false)
}

/// As above; with `page_read` the reader reads only the 4 KiB page around
/// the damage, at random (which the OSD answers with exactly those bytes,
/// after checking the block around them itself).
fn damaged_replica(seed: u64, damage: Damage, page_read: bool) {
    let cl = ProcCluster::start(3).unwrap();
    let a = cl.mount().unwrap();
    fs::create_dir(a.p("ckpt")).unwrap();
    cl.mdsctl(&["setstripe", "/ckpt", "--count", "3", "--replicas", "2", "--size", "1M"]).unwrap();
    let body = pattern::bytes(11, 0, 6 * MIB);
    fs::write(a.p("ckpt/model.pt"), &body).unwrap();
    File::open(a.p("ckpt/model.pt")).unwrap().sync_all().unwrap();
    // object 0's first replica, the one a reader asks first, on its disk
    let v: serde_json::Value = serde_json::from_str(&cl.mdsctl(&["--json", "getstripe", "/ckpt/model.pt"]).unwrap()).unwrap();
    let index = seed % 3;
    let first = v["objects"].as_array().unwrap().iter().find(|o| o["index"] == index && o["replica"] == 0).unwrap().clone();
    let name = first["object"].as_str().unwrap();
    let on_disk = cl.path(&format!("data/osd{}/objects/{}/{name}", first["osd"], &name[14..16]));
    let good = fs::read(&on_disk).unwrap();
    // each object holds 2 MiB of the file
    let at = (300_000 + seed * 777_777) % (2 * MIB as u64);
    match damage {
        Damage::Flip => OpenOptions::new().write(true).open(&on_disk).unwrap().write_all_at(&[good[at as usize] ^ 0x40], at).unwrap(),
        Damage::Delete => fs::remove_file(&on_disk).unwrap(),
        Damage::Truncate => OpenOptions::new().write(true).open(&on_disk).unwrap().set_len(at).unwrap(),
    }
    // another node reads the right bytes, from the other replica
    let b = cl.mount().unwrap();
    if page_read {
        // object offset `at` of object `index`: 1 MiB units, 3 objects
        let unit = at / MIB as u64 * 3 + index;
        let page = (unit * MIB as u64 + at % MIB as u64) / 4096 * 4096;
        let f = File::open(b.p("ckpt/model.pt")).unwrap();
        // SAFETY: advice on a descriptor we own.
        unsafe { libc::posix_fadvise(std::os::fd::AsRawFd::as_raw_fd(&f), 0, 0, libc::POSIX_FADV_RANDOM) };
        let mut got = vec![0u8; 4096];
        f.read_exact_at(&mut got, page).unwrap();
        assert!(got[..] == body[page as usize..page as usize + 4096], "a damaged replica was served to a 4 KiB read");
    } else {
        assert!(fs::read(b.p("ckpt/model.pt")).unwrap() == body, "a damaged replica was served ({damage:?})");
    }
    drop(b);
    assert!(reported_degraded(&cl), "the damaged replica was not reported ({damage:?})");
    // repair rewrites it
    wait_repaired(&cl);
    assert!(fs::read(&on_disk).unwrap() == good, "the repaired replica differs from what was written");
}

#[test]
fn a_flipped_byte_on_one_replica_is_served_from_the_other_and_repaired_seed_1() {
    a_damaged_replica_is_served_from_the_other_and_repaired(1, Damage::Flip);
}

#[test]
fn a_flipped_byte_on_one_replica_is_served_from_the_other_and_repaired_seed_2() {
    a_damaged_replica_is_served_from_the_other_and_repaired(2, Damage::Flip);
}

#[test]
fn a_flipped_byte_on_one_replica_is_served_from_the_other_and_repaired_seed_3() {
    a_damaged_replica_is_served_from_the_other_and_repaired(3, Damage::Flip);
}

#[test]
fn a_flipped_byte_under_a_4k_read_is_caught_by_the_osd_and_served_from_the_other_seed_6() {
    damaged_replica(6, Damage::Flip, true);
}

#[test]
fn a_replica_deleted_on_disk_is_served_from_the_other_and_repaired_seed_4() {
    a_damaged_replica_is_served_from_the_other_and_repaired(4, Damage::Delete);
}

#[test]
fn a_replica_cut_short_on_disk_is_served_from_the_other_and_repaired_seed_5() {
    a_damaged_replica_is_served_from_the_other_and_repaired(5, Damage::Truncate);
}

#[test]
fn fsck_finds_missing_corrupt_and_orphan_objects_and_repair_fixes_them() {
    let cl = ProcCluster::start(3).unwrap();
    let a = cl.mount().unwrap();
    fs::create_dir(a.p("ckpt")).unwrap();
    cl.mdsctl(&["setstripe", "/ckpt", "--count", "3", "--replicas", "2", "--size", "1M"]).unwrap();
    let body = pattern::bytes(13, 0, 6 * MIB + 7);
    fs::write(a.p("ckpt/opt.pt"), &body).unwrap();
    File::open(a.p("ckpt/opt.pt")).unwrap().sync_all().unwrap();
    assert_eq!(cl.mdsctl_status(&["fsck"]).unwrap().0, 0, "a healthy file system is not clean");
    let v: serde_json::Value = serde_json::from_str(&cl.mdsctl(&["--json", "getstripe", "/ckpt/opt.pt"]).unwrap()).unwrap();
    let objs = v["objects"].as_array().unwrap();
    let disk = |o: &serde_json::Value| {
        let name = o["object"].as_str().unwrap().to_string();
        cl.path(&format!("data/osd{}/objects/{}/{name}", o["osd"], &name[14..16]))
    };
    // one replica lost behind the OSD's back, one with a flipped byte, and
    // an object of no file
    let lost = disk(&objs[0]);
    fs::remove_file(&lost).unwrap();
    let flipped = disk(&objs[3]);
    let good = fs::read(&flipped).unwrap();
    OpenOptions::new().write(true).open(&flipped).unwrap().write_all_at(&[good[1000] ^ 1], 1000).unwrap();
    let orphan = cl.path("data/osd1/objects/99/0300000000000999.0");
    fs::write(&orphan, b"left behind").unwrap();
    let (code, out) = cl.mdsctl_status(&["--json", "fsck"]).unwrap();
    assert_eq!(code, 4, "fsck found nothing:\n{out}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((r["missing"].as_u64(), r["corrupt"].as_u64(), r["orphans"].as_u64()), (Some(1), Some(1), Some(1)), "{out}");
    // --repair hands the replicas to repair and deletes the orphan
    assert_eq!(cl.mdsctl_status(&["fsck", "--repair"]).unwrap().0, 1);
    wait_repaired(&cl);
    assert!(!orphan.exists(), "the orphan object is still there");
    assert!(fs::read(&flipped).unwrap() == good, "the corrupt replica was not rewritten");
    assert!(lost.exists(), "the lost replica was not rewritten");
    assert_eq!(cl.mdsctl_status(&["fsck"]).unwrap().0, 0, "not clean after repair");
    let b = cl.mount().unwrap();
    assert!(fs::read(b.p("ckpt/opt.pt")).unwrap() == body);
}

/// The OSDs holding a replica of a file, from `mdsctl getstripe`.
fn holders(cl: &ProcCluster, path: &str) -> Vec<u64> {
    let v: serde_json::Value = serde_json::from_str(&cl.mdsctl(&["--json", "getstripe", path]).unwrap()).unwrap();
    v["objects"].as_array().unwrap().iter().map(|o| o["osd"].as_u64().unwrap()).collect()
}

#[test]
fn an_osd_taken_out_has_its_replicas_moved_away_and_gets_no_new_data() {
    let mut cl = ProcCluster::start(4).unwrap();
    let a = cl.mount().unwrap();
    fs::create_dir(a.p("ckpt")).unwrap();
    cl.mdsctl(&["setstripe", "/ckpt", "--count", "3", "--replicas", "2", "--size", "1M"]).unwrap();
    let body = pattern::bytes(17, 0, 24 * MIB + 5);
    fs::write(a.p("ckpt/w.pt"), &body).unwrap();
    File::open(a.p("ckpt/w.pt")).unwrap().sync_all().unwrap();
    let out = holders(&cl, "/ckpt/w.pt")[0];
    // Followed until nothing is left to move: it counted what there was.
    let last = watch_until_done(&cl, &["osd", "out", &out.to_string(), "--watch"]);
    assert!(last.contains(", 0 to move off OSDs out") && !last.contains(" 0 moved off"), "{last}");
    let t = Instant::now();
    while holders(&cl, "/ckpt/w.pt").contains(&out) {
        assert!(t.elapsed() < Duration::from_secs(60), "replicas still on osd.{out} after 60 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(holders(&cl, "/ckpt/w.pt").len() == 6, "a replica was dropped instead of moved");
    // new files go elsewhere
    fs::write(a.p("ckpt/new.pt"), b"fresh").unwrap();
    assert!(!holders(&cl, "/ckpt/new.pt").contains(&out));
    // the OSD can go: the file reads back whole without it, and fsck (which
    // skips it) finds every replica in place
    cl.kill9_osd(out as u32);
    let b = cl.mount().unwrap();
    assert!(fs::read(b.p("ckpt/w.pt")).unwrap() == body, "moved replicas differ");
    let (code, report) = cl.mdsctl_status(&["--json", "fsck"]).unwrap();
    assert_eq!(code, 0, "{report}");
}

/// What the training job below had acknowledged: a step is done once its
/// directory was moved under `done/` and `latest` names it.
fn checkpoint_steps(root: std::path::PathBuf, steps: u64, seed: u64, acked: std::sync::mpsc::Sender<u64>) -> std::io::Result<()> {
    fs::create_dir(root.join("done"))?;
    for i in 0..steps {
        // mkdir, then per rank: write a temporary file, fsync, rename it into
        // place (as torch.save to a temporary name and a rename do)
        let step = root.join(format!("step{i}"));
        fs::create_dir(&step)?;
        for r in 0..2u64 {
            let tmp = step.join(format!(".rank{r}.tmp"));
            let mut f = File::create(&tmp)?;
            let mut buf = vec![0u8; MIB];
            for m in 0..3 {
                pattern::fill(seed * 1000 + i * 10 + r, (m * MIB) as u64, &mut buf);
                f.write_all(&buf)?;
            }
            f.sync_all()?;
            fs::rename(&tmp, step.join(format!("rank{r}.pt")))?;
        }
        // the finished step moves under done/ (a directory renamed across
        // directories), and `latest` is replaced by a rename
        fs::rename(&step, root.join(format!("done/step{i}")))?;
        fs::write(root.join("latest.tmp"), i.to_string())?;
        File::open(root.join("latest.tmp"))?.sync_all()?;
        fs::rename(root.join("latest.tmp"), root.join("latest"))?;
        File::open(&root)?.sync_all()?;
        let _ = acked.send(i);
    }
    Ok(())
}

/// `kill -9` the MDS while a job writes checkpoint steps (mkdir, creates,
/// writes, fsyncs, renames of files and directories); start it again
/// after a pause. The job sees no error, and every step it finished is
/// there, byte for byte, with nothing half-renamed. What the client held
/// across the restart holds after it: a lock, and a file it has open
/// after unlinking it.
fn checkpoints_survive_kill_9_of_the_mds(seed: u64) {
    let steps = 8;
    let mut cl = ProcCluster::start(3).unwrap();
    let a = cl.mount().unwrap();
    fs::create_dir(a.p("job")).unwrap();
    cl.mdsctl(&["setstripe", "/job", "--count", "3", "--replicas", "2", "--size", "1M"]).unwrap();
    let lock = File::create(a.p("job.lock")).unwrap();
    flock(&lock, libc::LOCK_EX).unwrap();
    let scratch = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(a.p("scratch")).unwrap();
    scratch.write_all_at(&pattern::bytes(seed + 50, 0, MIB), 0).unwrap();
    scratch.sync_all().unwrap();
    fs::remove_file(a.p("scratch")).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let root = a.p("job");
    let job = std::thread::spawn(move || checkpoint_steps(root, steps, seed, tx));
    // kill it part-way: after 1 to 3 finished steps, and a moment into the next
    let kill_after = 1 + seed % 3;
    let mut done = 0;
    while done < kill_after {
        done = rx.recv_timeout(Duration::from_secs(60)).expect("the job made no progress") + 1;
    }
    std::thread::sleep(Duration::from_millis(50 + 90 * seed));
    cl.kill9_mds();
    let down = Instant::now();
    std::thread::sleep(Duration::from_millis(500 + 400 * seed));
    cl.start_mds().unwrap();
    eprintln!("MDS killed after step {}, down for {:?}", done - 1, down.elapsed());
    let r = job.join().unwrap();
    r.expect("the job saw an error across the MDS restart");
    // every step, read from another node
    let b = cl.mount().unwrap();
    // the lock is still the first client's
    let other = File::open(b.p("job.lock")).unwrap();
    let e = flock(&other, libc::LOCK_EX | libc::LOCK_NB).expect_err("a lock held across the MDS restart was lost");
    assert_eq!(e.raw_os_error(), Some(libc::EWOULDBLOCK), "{e}");
    // the unlinked file, still open, was not freed (the MDS frees such
    // files every 2 s once nobody has them open)
    std::thread::sleep(Duration::from_millis(2500));
    // read from the OSDs, not the kernel's cache of what was written
    fs::write("/proc/sys/vm/drop_caches", "1").unwrap();
    let mut got = vec![0u8; MIB];
    scratch.read_exact_at(&mut got, 0).unwrap();
    assert!(got == pattern::bytes(seed + 50, 0, MIB), "an open, unlinked file lost its data across the MDS restart");
    drop(lock);
    let t = Instant::now();
    while flock(&other, libc::LOCK_EX | libc::LOCK_NB).is_err() {
        assert!(t.elapsed() < Duration::from_secs(3), "the lock was not released");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(fs::read_to_string(b.p("job/latest")).unwrap(), (steps - 1).to_string());
    let mut names: Vec<String> = fs::read_dir(b.p("job")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["done", "latest"], "half-done renames left behind");
    let mut top: Vec<String> = fs::read_dir(b.p("")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    top.sort();
    assert_eq!(top, ["job", "job.lock"]);
    for i in 0..steps {
        let mut ranks: Vec<String> =
            fs::read_dir(b.p(&format!("job/done/step{i}"))).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        ranks.sort();
        assert_eq!(ranks, ["rank0.pt", "rank1.pt"], "step {i}");
        for r in 0..2u64 {
            let got = fs::read(b.p(&format!("job/done/step{i}/rank{r}.pt"))).unwrap();
            assert!(got == pattern::bytes(seed * 1000 + i * 10 + r, 0, 3 * MIB), "step {i} rank {r} differs (seed {seed})");
        }
    }
    // and the metadata and the OSDs agree: no object lost or left over
    let (code, out) = cl.mdsctl_status(&["fsck"]).unwrap();
    assert_eq!(code, 0, "fsck after the restart:\n{out}");
}

#[test]
fn checkpoints_survive_kill_9_of_the_mds_seed_1() {
    checkpoints_survive_kill_9_of_the_mds(1);
}

#[test]
fn checkpoints_survive_kill_9_of_the_mds_seed_2() {
    checkpoints_survive_kill_9_of_the_mds(2);
}

#[test]
fn checkpoints_survive_kill_9_of_the_mds_seed_3() {
    checkpoints_survive_kill_9_of_the_mds(3);
}

/// Two nodes write one file (shared-write, the N-to-1 checkpoint); one
/// OSD dies while the first overwrites a region, so its replica of that
/// object misses the write. The second node, which had the file open all
/// along, is told: after the OSD returns, it reads the new bytes, not the
/// old ones that replica still holds (their crcs are right).
#[test]
fn a_replica_degraded_by_one_writer_is_not_read_by_another_that_has_the_file_open() {
    let mut cl = ProcCluster::start(3).unwrap();
    let a = cl.mount().unwrap();
    let b = cl.mount().unwrap();
    fs::create_dir(a.p("ckpt")).unwrap();
    cl.mdsctl(&["setstripe", "/ckpt", "--count", "3", "--replicas", "2", "--size", "1M"]).unwrap();
    fs::write(a.p("ckpt/shared.pt"), pattern::bytes(21, 0, 6 * MIB)).unwrap();
    File::open(a.p("ckpt/shared.pt")).unwrap().sync_all().unwrap();
    // object 0's first replica: the one a reader asks first
    let v: serde_json::Value = serde_json::from_str(&cl.mdsctl(&["--json", "getstripe", "/ckpt/shared.pt"]).unwrap()).unwrap();
    let first = v["objects"].as_array().unwrap().iter().find(|o| o["index"] == 0 && o["replica"] == 0).unwrap().clone();
    let victim = first["osd"].as_u64().unwrap() as u32;
    let wa = OpenOptions::new().read(true).write(true).open(a.p("ckpt/shared.pt")).unwrap();
    // B has the file open too, and has not read it (it learns nothing of
    // the OSD's death by itself). A few writes on both sides (the same
    // bytes again) leave both holding shared-write leases, which nothing
    // below recalls.
    let wb = OpenOptions::new().read(true).write(true).open(b.p("ckpt/shared.pt")).unwrap();
    let unit = |k: usize| pattern::bytes(21, (k * MIB) as u64, MIB);
    wa.write_all_at(&unit(1), MIB as u64).unwrap();
    wb.write_all_at(&unit(2), 2 * MIB as u64).unwrap();
    wa.write_all_at(&unit(1), MIB as u64).unwrap();
    wb.sync_all().unwrap();
    // A overwrites the first stripe unit (object 0) while its first
    // replica's OSD is dead
    cl.kill9_osd(victim);
    let new = pattern::bytes(22, 0, MIB);
    wa.write_all_at(&new, 0).unwrap();
    wa.sync_all().unwrap();
    assert!(cl.degraded().unwrap().0 > 0, "the replica that missed the write was not recorded");
    // the operator sees which (its OSD is dead: repair cannot take it yet)
    let v: serde_json::Value = serde_json::from_str(&cl.mdsctl(&["--json", "degraded", "ls", "/ckpt/shared.pt"]).unwrap()).unwrap();
    let stale = v["stale"].as_array().unwrap();
    assert!(stale.iter().any(|s| s["object"] == 0 && s["osd"] == victim), "mdsctl degraded ls: {v}");
    cl.start_osd(victim).unwrap();
    cl.wait_ready(Duration::from_secs(20)).unwrap();
    let mut got = vec![0u8; MIB];
    wb.read_exact_at(&mut got, 0).unwrap();
    assert!(got == new, "a node with the file open read a replica that missed another node's write");
}

/// A file cut short while one OSD is dead: the truncate succeeds, the
/// replica it could not cut is recorded as degraded, and once the OSD is
/// back the bytes cut off never reappear (the file grown again reads
/// zeros there), and repair cuts that replica too.
#[test]
fn a_truncate_while_an_osd_is_dead_never_brings_back_the_bytes_cut_off() {
    let mut cl = ProcCluster::start(3).unwrap();
    let a = cl.mount().unwrap();
    fs::create_dir(a.p("ckpt")).unwrap();
    cl.mdsctl(&["setstripe", "/ckpt", "--count", "3", "--replicas", "2", "--size", "1M"]).unwrap();
    fs::write(a.p("ckpt/t.pt"), pattern::bytes(31, 0, 6 * MIB)).unwrap();
    File::open(a.p("ckpt/t.pt")).unwrap().sync_all().unwrap();
    let v: serde_json::Value = serde_json::from_str(&cl.mdsctl(&["--json", "getstripe", "/ckpt/t.pt"]).unwrap()).unwrap();
    let first = v["objects"].as_array().unwrap().iter().find(|o| o["index"] == 0 && o["replica"] == 0).unwrap().clone();
    let victim = first["osd"].as_u64().unwrap() as u32;
    cl.kill9_osd(victim);
    let f = OpenOptions::new().write(true).open(a.p("ckpt/t.pt")).unwrap();
    f.set_len(100_000).unwrap();
    f.set_len(6 * MIB as u64).unwrap();
    f.sync_all().unwrap();
    drop(f);
    assert!(cl.degraded().unwrap().0 > 0, "the replica the truncate missed was not recorded");
    cl.start_osd(victim).unwrap();
    cl.wait_ready(Duration::from_secs(20)).unwrap();
    let mut want = pattern::bytes(31, 0, 100_000);
    want.resize(6 * MIB, 0);
    let b = cl.mount().unwrap();
    assert!(fs::read(b.p("ckpt/t.pt")).unwrap() == want, "bytes cut off came back");
    drop(b);
    // The operator follows the repair to its end.
    let last = watch_repair(&cl);
    assert!(last.starts_with("0 stale replicas left, 0 to move off OSDs out, 0 being rewritten; ") && !last.contains("; 0 repaired"), "{last}");
    let v: serde_json::Value = serde_json::from_str(&cl.mdsctl(&["--json", "repair", "status"]).unwrap()).unwrap();
    assert!(v["left"] == 0 && v["repaired"].as_u64().unwrap() > 0, "{v}");
    cl.kill9_osd(1 + victim % 3);
    let c = cl.mount().unwrap();
    assert!(fs::read(c.p("ckpt/t.pt")).unwrap() == want, "the repaired replica differs");
}
