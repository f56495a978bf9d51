//! Permissions through real mounts, as root and as other uids (run with
//! `setpriv`): what a user makes is its own, setgid directories hand their
//! group down, sticky directories keep others' names, modes keep users
//! out; and a mount whose certificate squashes root is nobody. Needs root
//! and /dev/fuse; `make test` enables the `fuse_tests` feature.
#![cfg(feature = "fuse_tests")]

use aifs_tests::proc::{Mount, ProcCluster};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

/// Run `script` with `sh -c` as `uid`:`gid` with supplementary `groups`;
/// its exit status and stderr.
fn as_user(uid: u32, gid: u32, groups: &[u32], script: &str) -> (bool, String) {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}")).arg(format!("--regid={gid}"));
    match groups {
        [] => cmd.arg("--clear-groups"),
        g => cmd.arg(format!("--groups={}", g.iter().map(|g| g.to_string()).collect::<Vec<_>>().join(","))),
    };
    let out = cmd.args(["sh", "-c", script]).output().expect("setpriv runs");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn owner(p: &Path) -> (u32, u32, u32) {
    let m = fs::symlink_metadata(p).unwrap();
    (m.uid(), m.gid(), m.mode() & 0o7777)
}

/// Let other uids reach the mount: its temp parent is root's, mode 0700.
fn open_to_all(m: &Mount) {
    if let Some(parent) = m.path.parent() {
        fs::set_permissions(parent, fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[test]
fn other_uids_get_what_posix_gives_them_through_a_mount() {
    let cl = ProcCluster::start(1).unwrap();
    let a = cl.mount().unwrap();
    let b = cl.mount().unwrap();
    open_to_all(&a);
    fs::set_permissions(&a.path, fs::Permissions::from_mode(0o755)).unwrap();
    let q = |p: &Path| p.to_str().unwrap().to_string();

    // A user's files are its own; root's keep it out.
    fs::create_dir(a.p("home")).unwrap();
    fs::set_permissions(a.p("home"), fs::Permissions::from_mode(0o777)).unwrap();
    fs::write(a.p("root-file"), b"root's").unwrap();
    let (ok, err) = as_user(1000, 100, &[], &format!("echo mine > {0}/notes && chmod 600 {0}/notes", q(&a.p("home"))));
    assert!(ok, "{err}");
    assert_eq!(owner(&b.p("home/notes")), (1000, 100, 0o600));
    let (ok, err) = as_user(1000, 100, &[], &format!("echo x >> {}", q(&a.p("root-file"))));
    assert!(!ok && err.contains("Permission denied"), "a user wrote root's file: {err}");
    let (ok, _) = as_user(2000, 200, &[], &format!("cat {}", q(&a.p("home/notes"))));
    assert!(!ok, "another user read a 0600 file");
    let (ok, _) = as_user(1000, 100, &[], &format!("mkdir {}", q(&a.p("top"))));
    assert!(!ok, "a user made a name in root's 0755 directory");
    // A write-only file takes writes, on each mount, from a capability
    // that reads nothing; its owner cannot read it, root can.
    let (ok, err) = as_user(1000, 100, &[], &format!("printf abc > {0}/wo && chmod 200 {0}/wo && printf def >> {0}/wo", q(&b.p("home"))));
    assert!(ok, "{err}");
    let (ok, err) = as_user(1000, 100, &[], &format!("printf ghi >> {}", q(&a.p("home/wo"))));
    assert!(ok, "{err}");
    let (ok, _) = as_user(1000, 100, &[], &format!("cat {}", q(&a.p("home/wo"))));
    assert!(!ok, "the owner read a 0200 file");
    assert_eq!(fs::read(b.p("home/wo")).unwrap(), b"abcdefghi");

    // A setgid directory hands its group down, on this mount and the other.
    fs::create_dir(a.p("proj")).unwrap();
    std::os::unix::fs::chown(a.p("proj"), None, Some(50)).unwrap();
    fs::set_permissions(a.p("proj"), fs::Permissions::from_mode(0o2775)).unwrap();
    let (ok, err) = as_user(1000, 100, &[50], &format!("mkdir {0}/sub && touch {0}/sub/f {0}/g", q(&a.p("proj"))));
    assert!(ok, "{err}");
    assert_eq!(owner(&b.p("proj/sub")), (1000, 50, 0o2755));
    assert_eq!(owner(&b.p("proj/sub/f")).1, 50);
    assert_eq!(owner(&a.p("proj/g")).1, 50);

    // A sticky directory keeps others' names.
    fs::create_dir(a.p("tmp")).unwrap();
    fs::set_permissions(a.p("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    let (ok, err) = as_user(1000, 100, &[], &format!("touch {}", q(&a.p("tmp/a"))));
    assert!(ok, "{err}");
    let (ok, _) = as_user(2000, 200, &[], &format!("rm -f {}", q(&b.p("tmp/a"))));
    assert!(!ok, "another user removed a name in a sticky directory");
    assert!(a.p("tmp/a").exists());
    let (ok, err) = as_user(1000, 100, &[], &format!("rm {}", q(&b.p("tmp/a"))));
    assert!(ok, "{err}");
}

/// A node whose certificate is issued with --root-squash: its root may
/// not write what root owns, and what it makes belongs to nobody.
#[test]
fn a_root_squashed_mount_is_nobody() {
    let cl = ProcCluster::start(1).unwrap();
    let admin_side = cl.mount().unwrap();
    fs::set_permissions(&admin_side.path, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(admin_side.p("config"), b"root's").unwrap();
    fs::create_dir(admin_side.p("pub")).unwrap();
    fs::set_permissions(admin_side.p("pub"), fs::Permissions::from_mode(0o777)).unwrap();
    let nodes = cl.path("nodes");
    let ca = cl.path("ca");
    let issue = ["cert", "--ca-dir", ca.to_str().unwrap(), "issue", "--role", "client", "--name", "gpu-sq", "--root-squash", "--out"];
    let mut args = issue.to_vec();
    args.push(nodes.to_str().unwrap());
    cl.mdsctl(&args).unwrap();
    let ls = cl.mdsctl(&["cert", "--ca-dir", ca.to_str().unwrap(), "ls"]).unwrap();
    assert!(ls.lines().any(|l| l.contains("gpu-sq") && l.contains("root squashed")), "{ls}");
    let sq = Mount::with_config(&cl, &cl.path("nodes/gpu-sq.toml")).unwrap();

    assert_eq!(fs::read(sq.p("config")).unwrap(), b"root's", "a squashed root cannot read what others may");
    let e = fs::OpenOptions::new().append(true).open(sq.p("config")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}");
    assert_eq!(fs::write(sq.p("new"), b"x").unwrap_err().raw_os_error(), Some(libc::EACCES));
    fs::write(sq.p("pub/mine"), b"x").unwrap();
    assert_eq!(owner(&admin_side.p("pub/mine")).0, aifs_common::perm::ANON_ID);
    assert_eq!(fs::read(admin_side.p("config")).unwrap(), b"root's");
}
