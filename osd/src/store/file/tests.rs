//! FileStore against real files in a temp dir: crcs, holes, direct I/O,
//! deletes, listing and verification.
use super::*;
use crate::store::handles::DIRECT_ALIGN;
use aifs_common::proto::frame::aligned_buffer;
use aifs_common::proto::osd::block_crcs;

fn obj(i: u32) -> ObjectId {
    ObjectId { ino: InodeId(42), index: i }
}

fn check_all(s: &FileStore, o: ObjectId) {
    let r = s.read(o, 0, MAX_READ).unwrap();
    assert_eq!(block_crcs(r.off, &r.data), r.crcs, "stored crcs must match bytes");
}

/// One delete of many objects over several fan-out directories,
/// some never written: all go, the count follows, and the others stay.
#[test]
fn a_delete_of_many_objects_removes_each_and_only_them() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStore::open(dir.path()).unwrap();
    let d = vec![3u8; 5000];
    let objs: Vec<ObjectId> = (0..6).flat_map(|ino| (0..2).map(move |index| ObjectId { ino: InodeId(ino * 97), index })).collect();
    for &o in &objs {
        s.write(o, 0, &d, &block_crcs(0, &d)).unwrap();
    }
    assert_eq!(s.usage().unwrap().objects, 12);
    let missing = ObjectId { ino: InodeId(5), index: 0 };
    let mut gone: Vec<ObjectId> = objs[..8].to_vec();
    gone.push(missing);
    s.delete(&gone).unwrap();
    for o in &objs[..8] {
        assert_eq!(s.stat(*o).unwrap(), None, "{o} deleted");
    }
    for o in &objs[8..] {
        assert_eq!(s.stat(*o).unwrap(), Some(5000), "{o} kept");
    }
    assert_eq!(s.usage().unwrap().objects, 4);
    s.delete(&[]).unwrap();
}

#[test]
fn crcs_follow_writes_holes_and_truncates() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStore::open(dir.path()).unwrap();
    let o = obj(0);
    let d: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    s.write(o, 0, &d, &block_crcs(0, &d)).unwrap();
    check_all(&s, o);
    // unaligned overwrite in the middle
    let p = vec![7u8; 1000];
    s.write(o, 70_000, &p, &block_crcs(70_000, &p)).unwrap();
    check_all(&s, o);
    // write past the end leaves a hole
    s.write(o, 1_000_000, &p, &block_crcs(1_000_000, &p)).unwrap();
    check_all(&s, o);
    let r = s.read(o, 500_000, 10).unwrap();
    assert!(r.data.iter().all(|&b| b == 0));
    s.truncate(o, 150_001).unwrap();
    check_all(&s, o);
    assert_eq!(s.stat(o).unwrap(), Some(150_001));
    // truncate only cuts: growing is a no-op (the tail reads as zeros)
    s.truncate(o, 3_000_000).unwrap();
    check_all(&s, o);
    assert_eq!(s.stat(o).unwrap(), Some(150_001));
    s.delete(&[o]).unwrap();
    assert_eq!(s.stat(o).unwrap(), None);
    // and never brings a deleted object back
    s.truncate(o, 10).unwrap();
    assert_eq!(s.stat(o).unwrap(), None);
}

#[test]
fn fallocate_reserves_punches_and_zeroes_and_the_crcs_follow() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStore::open(dir.path()).unwrap();
    let o = obj(0);
    let d: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251 + 1) as u8).collect();
    s.write(o, 0, &d, &block_crcs(0, &d)).unwrap();
    let held = s.allocated(o).unwrap();
    assert!(held >= 1_000_000, "{held}");
    // an unaligned hole: zeros there, the rest unchanged, crcs right
    s.allocate(o, 70_001, 600_000, AllocMode::Punch).unwrap();
    check_all(&s, o);
    let r = s.read(o, 0, MAX_READ).unwrap();
    assert!(r.data[70_001..670_001].iter().all(|&b| b == 0));
    assert_eq!((&r.data[..70_001], &r.data[670_001..]), (&d[..70_001], &d[670_001..]));
    assert!(s.allocated(o).unwrap() <= held - 500_000, "the hole gave its space back");
    assert_eq!(s.stat(o).unwrap(), Some(1_000_000));
    // zeros over the end: the size stays, space is held past it
    s.allocate(o, 900_000, 4_000_000, AllocMode::Zero).unwrap();
    check_all(&s, o);
    assert!(s.read(o, 900_000, 100_000).unwrap().data[..].iter().skip(900_000 % CRC_BLOCK as usize).all(|&b| b == 0));
    assert_eq!(s.stat(o).unwrap(), Some(1_000_000));
    assert!(s.allocated(o).unwrap() >= 4_000_000);
    // space for a missing object; a hole in one makes none
    s.allocate(obj(1), 0, 8 << 20, AllocMode::Reserve).unwrap();
    assert_eq!(s.stat(obj(1)).unwrap(), Some(0));
    assert!(s.allocated(obj(1)).unwrap() >= 8 << 20);
    s.allocate(obj(2), 0, 4096, AllocMode::Punch).unwrap();
    assert_eq!((s.stat(obj(2)).unwrap(), s.allocated(obj(2)).unwrap()), (None, 0));
    assert_eq!(s.allocate(o, MAX_OBJECT_SIZE, 1, AllocMode::Reserve), Err(Error::FileTooBig));
    assert!(matches!(s.allocate(o, 0, 0, AllocMode::Reserve), Err(Error::InvalidArgument(_))));
    // more than the disk holds takes nothing
    assert!(matches!(s.allocate(obj(3), 0, MAX_OBJECT_SIZE, AllocMode::Reserve), Err(Error::NoSpace(_))));
    assert_eq!(s.stat(obj(3)).unwrap(), None);
}

/// Disk bytes `obj`'s crc sidecar holds.
fn crc_disk(s: &FileStore, o: ObjectId) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(s.paths(o).2).unwrap().blocks() * 512
}

#[test]
fn a_far_write_leaves_a_hole_in_the_crcs_not_a_gigabyte_of_them() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStore::open(dir.path()).unwrap();
    let o = obj(9);
    s.write(o, 0, b"head", &block_crcs(0, b"head")).unwrap();
    // (ext4 files end 4 KiB short of 16 TiB; 4 TiB held 256 MiB of crcs)
    let far = (4 << 40) - 1;
    s.write(o, far, b"x", &block_crcs(far, b"x")).unwrap();
    assert!(crc_disk(&s, o) < 1 << 20, "{} bytes of crcs for two blocks", crc_disk(&s, o));
    for at in [0, CRC_BLOCK, 2 << 40, far - 10] {
        let r = s.read(o, at, 100).unwrap();
        assert_eq!(block_crcs(r.off, &r.data), r.crcs, "crcs at {at}");
    }
    assert_eq!(&s.read(o, far, 1).unwrap().data[..][(far % CRC_BLOCK) as usize..], b"x");
    // a hole punched over written blocks reads as zeros with their crcs
    let d = vec![3u8; 40 * CRC_BLOCK as usize];
    s.write(o, CRC_BLOCK, &d, &block_crcs(CRC_BLOCK, &d)).unwrap();
    s.allocate(o, 0, 1 << 30, AllocMode::Punch).unwrap();
    let r = s.read(o, 0, 41 * CRC_BLOCK).unwrap();
    assert!(r.data.iter().all(|&b| b == 0));
    assert_eq!(block_crcs(r.off, &r.data), r.crcs);
}

#[test]
fn a_store_made_before_keyed_crcs_keeps_them_as_they_were() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("objects")).unwrap();
    let s = FileStore::open(dir.path()).unwrap();
    let o = obj(10);
    let d = vec![9u8; 100_000];
    s.write(o, 0, &d, &block_crcs(0, &d)).unwrap();
    check_all(&s, o);
    let raw = std::fs::read(s.paths(o).2).unwrap();
    let stored: Vec<u32> = raw.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    assert_eq!(stored, block_crcs(0, &d));
    drop(s);
    // and a new store says it keys them, durably, from the start
    let fresh = tempfile::tempdir().unwrap();
    FileStore::open(fresh.path()).unwrap();
    assert!(fresh.path().join(CRC_FORMAT_FILE).exists());
}

#[test]
fn wild_offsets_and_lengths_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStore::open(dir.path()).unwrap();
    let d = vec![1u8; 10];
    assert_eq!(s.write(obj(3), 1 << 50, &d, &block_crcs(1 << 50, &d)), Err(Error::FileTooBig));
    assert!(matches!(s.read(obj(3), 0, u32::MAX as u64), Err(Error::InvalidArgument(_))));
}

#[test]
fn corrupted_write_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStore::open(dir.path()).unwrap();
    let d = vec![1u8; 4096];
    let mut c = block_crcs(0, &d);
    c[0] ^= 1;
    assert!(matches!(s.write(obj(1), 0, &d, &c), Err(Error::Checksum(_))));
}

#[test]
fn flipped_byte_on_disk_is_caught_by_crc() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStore::open(dir.path()).unwrap();
    let o = obj(2);
    let d = vec![9u8; 100_000];
    s.write(o, 0, &d, &block_crcs(0, &d)).unwrap();
    let (_, path, _) = s.paths(o);
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&[0xff], 5).unwrap();
    let r = s.read(o, 0, 10).unwrap();
    assert_ne!(block_crcs(r.off, &r.data), r.crcs);
    // an exact range read checks the whole block, not just its bytes
    assert!(matches!(s.read_range(o, 4096, 4096), Err(Error::Checksum(_))));
    let r = s.read_range(o, 70_000, 4096).unwrap();
    assert_eq!((&r.data[..], r.crc, r.obj_size), (&d[70_000..74_096], crc32c::crc32c(&d[70_000..74_096]), 100_000));
}

#[test]
fn range_reads_send_just_the_asked_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStore::open(dir.path()).unwrap();
    let o = obj(5);
    let d: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    s.write(o, 0, &d, &block_crcs(0, &d)).unwrap();
    for (off, len, want) in [(0, 4096, 0..4096), (65_000, 2_000, 65_000..67_000), (199_000, 4096, 199_000..200_000), (300_000, 10, 0..0)] {
        let r = s.read_range(o, off, len).unwrap();
        assert_eq!(&r.data[..], &d[want], "read_range({off}, {len})");
        assert_eq!(r.crc, crc32c::crc32c(&r.data));
    }
    let none = s.read_range(obj(6), 100, 10).unwrap();
    assert_eq!((none.data.len(), none.obj_size), (0, 0));
}

#[test]
fn large_reads_bypass_the_page_cache_and_see_every_write() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStore::open(dir.path()).unwrap();
    let o = obj(4);
    // an end that is aligned to nothing
    let mut d: Vec<u8> = (0..(700_000u32 + 123)).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    s.write(o, 0, &d, &block_crcs(0, &d)).unwrap();
    let whole = s.read(o, 0, MAX_READ).unwrap();
    assert!(whole.data == d, "a direct read returned other bytes");
    assert_eq!(block_crcs(0, &whole.data), whole.crcs);
    // an overwrite still in the page cache is what the next read sees
    let p = vec![0xa5u8; 300_000];
    s.write(o, 131_072, &p, &block_crcs(131_072, &p)).unwrap();
    d[131_072..431_072].copy_from_slice(&p);
    let r = s.read(o, 196_608, 500_000).unwrap();
    assert_eq!(r.off, 196_608);
    assert!(r.data[..] == d[196_608..], "read after an overwrite returned other bytes");
    assert_eq!(block_crcs(r.off, &r.data), r.crcs);
    // the reads went the direct way (ext4, xfs and tmpfs since Linux
    // 6.6 take it; elsewhere the handle records the refusal)
    let h = s.handles(o, false).unwrap().unwrap();
    assert!(h.direct.get().is_some(), "large reads did not try O_DIRECT");
}

/// An aligned buffer of `len` pattern bytes, as the frame reader
/// lands large payloads.
fn aligned(len: usize, seed: u8) -> Bytes {
    let (mut buf, pad) = aligned_buffer(len);
    buf.extend((0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)));
    buf.freeze().slice(pad..)
}

/// Descriptors of this process open on deleted files under `dir`.
fn deleted_open(dir: &Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|t| t.starts_with(dir) && t.to_string_lossy().ends_with(" (deleted)"))
        .count()
}

/// Regression: a deleted object's handles stayed in the cache until its
/// next housekeeping, and with them its blocks, freed only in the middle
/// of the next checkpoint's writes.
#[test]
fn a_deleted_object_keeps_no_descriptor_open() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStore::open(dir.path()).unwrap();
    let d = vec![7u8; 1 << 20];
    for i in 0..3 {
        s.write(obj(i), 0, &d, &block_crcs(0, &d)).unwrap();
        assert!(s.read(obj(i), 0, 1 << 20).unwrap().data == d);
    }
    for i in 0..3 {
        s.delete(&[obj(i)]).unwrap();
    }
    assert_eq!(deleted_open(dir.path()), 0, "deleted objects are still open");
}

/// Regression (found by the ClientFs property test): a read of an
/// object never written, at an offset inside a block, answered at that
/// offset instead of the block's start, and the client took the reply
/// for a protocol error: a read of a hole in a sparse file gave EIO.
/// A read on an async worker never waits for an object's lock: while a
/// write or check holds it exclusively, `read_now` declines (the
/// service then reads on a blocking thread), and it reads once free.
/// (The fuzzer found OSD workers stuck behind a check of a 40 GB
/// sparse object, and the whole OSD with them.)
#[test]
fn a_read_now_never_waits_for_the_object() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStore::open(dir.path()).unwrap();
    let o = obj(7);
    let d = vec![3u8; 10_000];
    s.write(o, 0, &d, &block_crcs(0, &d)).unwrap();
    {
        let _held = s.lock(o).write().unwrap();
        assert!(s.read_now(o, 0, 100).is_none(), "a read waited for a held lock");
    }
    let r = s.read_now(o, 0, 100).expect("the object is free").unwrap();
    assert_eq!(&r.data[..100], &d[..100]);
}

/// A check reads a sparse object's data, not its holes, and still
/// finds a bad crc in a hole.
#[test]
fn a_check_skips_holes_and_still_checks_their_crcs() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStore::open(dir.path()).unwrap();
    let o = obj(8);
    let d = vec![5u8; 70_000];
    s.write(o, 0, &d, &block_crcs(0, &d)).unwrap();
    let far = 64 << 30;
    s.write(o, far, &d, &block_crcs(far, &d)).unwrap();
    let t = std::time::Instant::now();
    assert_eq!(s.verify(o).unwrap(), Some((far + 70_000, 0)));
    assert!(t.elapsed() < std::time::Duration::from_secs(20), "a 64 GiB hole was read: {:?}", t.elapsed());
    // a crc inside the hole damaged
    let h = s.handles(o, false).unwrap().unwrap();
    h.write_crcs(1000, &[1]).unwrap();
    assert_eq!(s.verify(o).unwrap(), Some((far + 70_000, 1)));
}

#[test]
fn a_read_of_a_missing_object_answers_at_the_block_start() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStore::open(dir.path()).unwrap();
    let r = s.read(obj(6), 534_015, 98_366).unwrap();
    assert_eq!(r.off, 534_015 / CRC_BLOCK * CRC_BLOCK);
    assert!(r.data.is_empty() && r.crcs.is_empty());
}

#[test]
fn aligned_writes_go_direct_and_mix_with_buffered_ones() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStore::open(dir.path()).unwrap();
    let o = obj(5);
    // a buffered partial write first, then an aligned unit over it and
    // past it, then a buffered write inside the aligned one
    let small = vec![9u8; 5000];
    s.write(o, 1000, &small, &block_crcs(1000, &small)).unwrap();
    let unit = aligned(1 << 20, 1);
    assert_eq!(unit.as_ptr().align_offset(DIRECT_ALIGN), 0);
    s.write(o, 0, &unit, &block_crcs(0, &unit)).unwrap();
    let h = s.handles(o, false).unwrap().unwrap();
    assert!(h.direct.get().is_some(), "an aligned write did not try O_DIRECT");
    let mut want = unit.to_vec();
    let patch = vec![0x5au8; 70_000];
    s.write(o, 300_001, &patch, &block_crcs(300_001, &patch)).unwrap();
    want[300_001..370_001].copy_from_slice(&patch);
    // a second aligned unit extends the object
    let next = aligned(1 << 20, 2);
    s.write(o, 1 << 20, &next, &block_crcs(1 << 20, &next)).unwrap();
    want.extend_from_slice(&next);
    for (off, len) in [(0u64, 2u64 << 20), (4096, 100), (290_000, 90_000), ((1 << 20) - 10, 20)] {
        let r = s.read(o, off, len).unwrap();
        let skip = (off - r.off) as usize;
        assert!(r.data[skip..skip + len as usize] == want[off as usize..(off + len) as usize], "read of {len} at {off} differs");
        assert_eq!(block_crcs(r.off, &r.data), r.crcs);
    }
    assert_eq!(s.verify(o).unwrap(), Some((2 << 20, 0)));
}

#[test]
fn list_pages_in_order_and_verify_finds_bad_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStore::open(dir.path()).unwrap();
    let d = vec![3u8; 200_000];
    for (ino, index) in [(0x200, 1), (0x100, 0), (0x200, 0)] {
        s.write(ObjectId { ino: InodeId(ino), index }, 0, &d, &block_crcs(0, &d)).unwrap();
    }
    let all = s.list(None, 10).unwrap();
    let ids: Vec<ObjectId> = all.iter().map(|o| o.0).collect();
    assert_eq!(ids, vec![ObjectId { ino: InodeId(0x100), index: 0 }, ObjectId { ino: InodeId(0x200), index: 0 }, ObjectId { ino: InodeId(0x200), index: 1 }]);
    assert!(all.iter().all(|o| o.1 == 200_000));
    assert_eq!(s.list(Some(ids[0]), 1).unwrap().iter().map(|o| o.0).collect::<Vec<_>>(), vec![ids[1]]);
    assert!(s.list(Some(ids[2]), 10).unwrap().is_empty());
    assert_eq!(s.verify(ids[0]).unwrap(), Some((200_000, 0)));
    let (_, path, _) = s.paths(ids[0]);
    OpenOptions::new().write(true).open(path).unwrap().write_all_at(&[9], 70_000).unwrap();
    assert_eq!(s.verify(ids[0]).unwrap(), Some((200_000, 1)));
    assert_eq!(s.verify(obj(77)).unwrap(), None);
}

#[test]
fn an_object_removed_behind_the_store_is_not_written_through_a_stale_handle() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStore::open(dir.path()).unwrap();
    let o = obj(5);
    let d = vec![1u8; 1000];
    s.write(o, 0, &d, &block_crcs(0, &d)).unwrap();
    let (_, path, crc) = s.paths(o);
    std::fs::remove_file(&path).unwrap();
    std::fs::remove_file(&crc).unwrap();
    assert_eq!(s.stat(o).unwrap(), None);
    s.write(o, 0, &d, &block_crcs(0, &d)).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), d);
}
