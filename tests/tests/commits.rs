//! The calls checkpoint writers commit with, through a real mount:
//! `fallocate` in each mode a writer uses (preallocation, punch hole, zero
//! range), `st_blocks` from what the OSDs really hold, and
//! `renameat2(RENAME_EXCHANGE)` swapping a "latest" pointer, and
//! `open(O_TMPFILE)` with `linkat` naming a file once it is whole.
//! Needs root and /dev/fuse; `make test` enables the `fuse_tests` feature.
#![cfg(feature = "fuse_tests")]

use aifs_tests::fallocate;
use aifs_tests::proc::ProcCluster;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    let (a, b) = (CString::new(a.as_os_str().as_bytes())?, CString::new(b.as_os_str().as_bytes())?);
    // SAFETY: two NUL-terminated paths we own.
    match unsafe { libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), libc::RENAME_EXCHANGE) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// `open(dir, O_TMPFILE | flags, 0640)`: a file with no name in `dir`.
fn tmpfile(dir: &Path, flags: i32) -> std::io::Result<File> {
    let d = CString::new(dir.as_os_str().as_bytes())?;
    // SAFETY: a NUL-terminated path we own.
    let fd = unsafe { libc::open(d.as_ptr(), libc::O_TMPFILE | flags, 0o640) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a descriptor just opened, owned by nothing else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Name the file `f` has open `to`: `linkat` of its /proc/self/fd link,
/// as any user may (`AT_EMPTY_PATH` needs a capability).
fn link_open(f: &File, to: &Path) -> std::io::Result<()> {
    let from = CString::new(format!("/proc/self/fd/{}", f.as_raw_fd()))?;
    let to = CString::new(to.as_os_str().as_bytes())?;
    // SAFETY: two NUL-terminated paths we own.
    match unsafe { libc::linkat(libc::AT_FDCWD, from.as_ptr(), libc::AT_FDCWD, to.as_ptr(), libc::AT_SYMLINK_FOLLOW) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// `st_blocks` in bytes, once the MDS has measured the file after its
/// last change: polled until `done` holds of it, for at most 20 s.
fn blocks_until(p: &Path, done: impl Fn(u64) -> bool) -> u64 {
    let t = Instant::now();
    loop {
        let b = fs::metadata(p).unwrap().blocks() * 512;
        if done(b) || t.elapsed() > Duration::from_secs(20) {
            return b;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn fallocate_modes_and_st_blocks_follow_what_the_osds_hold() {
    let cl = ProcCluster::start(3).unwrap();
    let a = cl.mount().unwrap();
    let d = a.p("ckpt");
    fs::create_dir(&d).unwrap();
    let path = d.join("rank0.pt");
    let f = OpenOptions::new().create(true).read(true).write(true).open(&path).unwrap();

    // preallocation grows the file (mode 0) or only holds space (KEEP_SIZE)
    fallocate(&f, 0, 0, 8 * MIB).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 8 * MIB);
    fallocate(&f, libc::FALLOC_FL_KEEP_SIZE, 8 * MIB, 4 * MIB).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 8 * MIB);
    let mut want: Vec<u8> = (0..8 * MIB).map(|i| (i % 251 + 1) as u8).collect();
    f.write_all_at(&want, 0).unwrap();
    f.sync_all().unwrap();

    // a hole and a zeroed range read back as zeros, the rest intact
    fallocate(&f, libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, MIB + 7, 2 * MIB).unwrap();
    want[(MIB + 7) as usize..(3 * MIB + 7) as usize].fill(0);
    fallocate(&f, libc::FALLOC_FL_ZERO_RANGE, 5 * MIB - 3, MIB).unwrap();
    want[(5 * MIB - 3) as usize..(6 * MIB - 3) as usize].fill(0);
    let mut got = Vec::new();
    File::open(&path).unwrap().read_to_end(&mut got).unwrap();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "bytes differ from the first at {:?}", got.iter().zip(&want).position(|(a, b)| a != b));
    // zero range without KEEP_SIZE grows the file, as mode 0 does
    fallocate(&f, libc::FALLOC_FL_ZERO_RANGE, 8 * MIB, MIB).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 9 * MIB);
    // modes no checkpoint writer needs are refused as file systems do
    let e = fallocate(&f, libc::FALLOC_FL_COLLAPSE_RANGE, 0, MIB).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EOPNOTSUPP), "{e}");
    drop(f);

    // st_blocks: 12 MiB held (8 written or zeroed, 4 reserved past the
    // end), less the 2 MiB hole
    let held = blocks_until(&path, |b| b < 12 * MIB);
    assert!((9 * MIB..12 * MIB).contains(&held), "{held} bytes held");

    // a 10-byte write at 100 GiB holds a block or so, not 100 GiB
    let sparse = d.join("sparse");
    let s = File::create(&sparse).unwrap();
    s.write_all_at(b"0123456789", 100 << 30).unwrap();
    drop(s);
    let held = blocks_until(&sparse, |b| b < MIB);
    assert!(held > 0 && held < MIB, "{held} bytes held by a 10-byte file");
    assert_eq!(fs::metadata(&sparse).unwrap().len(), (100 << 30) + 10);
}

#[test]
fn rename_exchange_swaps_two_names_through_a_mount() {
    let cl = ProcCluster::start(1).unwrap();
    let a = cl.mount().unwrap();
    let b = cl.mount().unwrap();
    for dir in ["ckpt", "staging"] {
        fs::create_dir(a.p(dir)).unwrap();
    }
    fs::write(a.p("ckpt/latest"), "step 100").unwrap();
    fs::write(a.p("staging/next"), "step 200").unwrap();
    fs::create_dir(a.p("staging/step200")).unwrap();
    File::create(a.p("staging/step200/model.pt")).unwrap().write_all(b"weights").unwrap();
    // the second mount has both names cached before the swap
    assert_eq!(fs::read_to_string(b.p("ckpt/latest")).unwrap(), "step 100");
    assert_eq!(fs::read_to_string(b.p("staging/next")).unwrap(), "step 200");

    exchange(&a.p("ckpt/latest"), &a.p("staging/next")).unwrap();
    for m in [&a, &b] {
        assert_eq!(fs::read_to_string(m.p("ckpt/latest")).unwrap(), "step 200");
        assert_eq!(fs::read_to_string(m.p("staging/next")).unwrap(), "step 100");
    }
    // a directory for a file, across directories
    exchange(&a.p("staging/step200"), &a.p("ckpt/latest")).unwrap();
    assert_eq!(fs::read_to_string(b.p("ckpt/latest/model.pt")).unwrap(), "weights");
    assert_eq!(fs::read_to_string(b.p("staging/step200")).unwrap(), "step 200");
    assert_eq!(fs::metadata(a.p("ckpt")).unwrap().nlink(), 3, "ckpt gained the subdirectory");
    assert_eq!(fs::metadata(a.p("staging")).unwrap().nlink(), 2, "staging lost it");
    // a missing side, and a directory into itself
    let e = exchange(&a.p("ckpt/latest"), &a.p("staging/absent")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
    let e = exchange(&a.p("ckpt"), &a.p("ckpt/latest/model.pt")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
}

/// `open(O_TMPFILE)` and `linkat`: a checkpoint written with no name
/// appears under its name whole, in its own directory or in one on another
/// shard, for another mount too. One made with `O_EXCL` cannot be named,
/// and a nameless file is freed at its last close.
#[test]
fn o_tmpfile_then_linkat_names_a_file_once_it_is_whole() {
    let cl = ProcCluster::start(3).unwrap();
    let a = cl.mount().unwrap();
    let b = cl.mount().unwrap();
    fs::create_dir(a.p("ckpt")).unwrap();
    let shard = |rel: &str| aifs_common::ids::InodeId(fs::metadata(a.p(rel)).unwrap().ino()).shard();
    let other = (0..16)
        .map(|i| format!("step{i}"))
        .find(|d| {
            fs::create_dir(a.p(d)).unwrap();
            shard(d) != shard("ckpt")
        })
        .expect("a directory on another shard");
    let inodes = || -> u64 {
        let s = cl.status().unwrap();
        s["shards"].as_array().unwrap().iter().map(|s| s["inodes"].as_u64().unwrap()).sum()
    };
    let before = inodes();

    let data: Vec<u8> = (0..3 * MIB + 5).map(|i| (i % 253) as u8).collect();
    let mut f = tmpfile(&a.p("ckpt"), libc::O_RDWR).unwrap();
    f.write_all(&data).unwrap();
    let m = f.metadata().unwrap();
    assert_eq!((m.nlink(), m.len(), m.mode() & 0o7777), (0, data.len() as u64, 0o640));
    assert_eq!(fs::read_dir(b.p("ckpt")).unwrap().count(), 0, "a nameless file shows in its directory");
    link_open(&f, &a.p("ckpt/model.pt")).unwrap();
    assert_eq!(f.metadata().unwrap().nlink(), 1);
    assert!(fs::read(b.p("ckpt/model.pt")).unwrap() == data, "the named file is not what was written");
    drop(f);

    // named in a directory on another shard
    let mut g = tmpfile(&a.p("ckpt"), libc::O_WRONLY).unwrap();
    g.write_all(b"step 200").unwrap();
    link_open(&g, &a.p(&format!("{other}/latest"))).unwrap();
    drop(g);
    assert_eq!(fs::read_to_string(b.p(&format!("{other}/latest"))).unwrap(), "step 200");

    // O_EXCL: never to be named; it and one left nameless go at close
    let mut x = tmpfile(&a.p("ckpt"), libc::O_RDWR | libc::O_EXCL).unwrap();
    x.write_all(b"scratch").unwrap();
    assert_eq!(link_open(&x, &a.p("ckpt/x")).unwrap_err().raw_os_error(), Some(libc::ENOENT));
    let mut y = tmpfile(&a.p(&other), libc::O_RDWR).unwrap();
    y.write_all(b"scratch").unwrap();
    y.sync_all().unwrap();
    assert_eq!(inodes(), before + 4, "two named files and two open nameless ones");
    drop((x, y));
    let t = Instant::now();
    while inodes() != before + 2 && t.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(inodes(), before + 2, "a nameless file outlived its last close");
    assert_eq!(fs::read_dir(b.p("ckpt")).unwrap().count(), 1);
}
