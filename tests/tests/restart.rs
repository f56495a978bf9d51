//! kill -9 of the MDS and every OSD: after a restart, every fsync'd byte
//! and every acknowledged name is there.
#![cfg(feature = "fuse_tests")]

use aifs_tests::pattern;
use aifs_tests::proc::ProcCluster;
use std::fs::{self, File};
use std::io::Write;

const MIB: usize = 1 << 20;

#[test]
fn fsynced_data_and_acknowledged_names_survive_kill_9() {
    let mut cl = ProcCluster::start(3).unwrap();
    let mut m = cl.mount().unwrap();
    let mut names = Vec::new();
    for a in 0..3 {
        for b in 0..3 {
            let d = format!("tree/a{a}/b{b}");
            fs::create_dir_all(m.p(&d)).unwrap();
            for f in 0..5 {
                let p = format!("{d}/f{f}");
                fs::write(m.p(&p), format!("{p}\n")).unwrap();
                names.push(p);
            }
        }
    }
    fs::rename(m.p("tree/a0"), m.p("tree/renamed")).unwrap();
    names = names.into_iter().map(|n| n.replacen("tree/a0/", "tree/renamed/", 1)).collect();
    {
        let mut f = File::create(m.p("ckpt.bin")).unwrap();
        for i in 0..64 {
            f.write_all(&pattern::bytes(9, (i * MIB) as u64, MIB)).unwrap();
        }
        f.sync_all().unwrap();
    }
    // a node failure: every server dies at once, the client with them
    cl.kill9_all();
    m.kill9();
    cl.start_all().unwrap();
    let m2 = cl.mount().unwrap();
    let got = fs::read(m2.p("ckpt.bin")).unwrap();
    assert_eq!(got.len(), 64 * MIB);
    assert!(got == pattern::bytes(9, 0, 64 * MIB), "fsync'd checkpoint changed after restart");
    for n in &names {
        let body = fs::read_to_string(m2.p(n)).unwrap_or_else(|e| panic!("{n}: {e}"));
        assert!(body.starts_with("tree/"), "{n}");
    }
    assert!(!m2.p("tree/a0").exists());
}
