//! The calls checkpoint writers commit with, through a real mount:
//! `fallocate` in each mode a writer uses (preallocation, punch hole, zero
//! range), `st_blocks` from what the OSDs really hold, and
//! `renameat2(RENAME_EXCHANGE)` swapping a "latest" pointer.
//! Needs root and /dev/fuse; `make test` enables the `fuse_tests` feature.
#![cfg(feature = "fuse_tests")]

use aifs_tests::fallocate;
use aifs_tests::proc::ProcCluster;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
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
