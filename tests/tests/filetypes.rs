//! Every file type through a real mount: FIFOs, sockets and device nodes
//! made with mknod, mkfifo and bind, with the stat, chmod, chown, rename,
//! link and unlink of any inode, kept across a remount and an MDS restart.
//! Needs root and /dev/fuse; `make test` enables the `fuse_tests` feature.
#![cfg(feature = "fuse_tests")]

use aifs_tests::proc::ProcCluster;
use std::ffi::CString;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

fn mknod(p: &Path, mode: u32, dev: libc::dev_t) -> std::io::Result<()> {
    let c = CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: a NUL-terminated path we own.
    match unsafe { libc::mknod(c.as_ptr(), mode, dev) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// What a file's `stat` says of its type, mode, owner and device number.
fn kind_of(p: &Path) -> (String, u32, u32, u32, u64) {
    let m = fs::symlink_metadata(p).unwrap();
    let t = m.file_type();
    let kind = [(t.is_fifo(), "fifo"), (t.is_socket(), "socket"), (t.is_char_device(), "char"), (t.is_block_device(), "block"), (t.is_file(), "file")]
        .iter()
        .find(|(is, _)| *is)
        .map(|(_, k)| k.to_string())
        .unwrap_or_default();
    (kind, m.mode() & 0o7777, m.uid(), m.gid(), m.rdev())
}

#[test]
fn fifos_sockets_and_device_nodes_are_files_like_any_other() {
    let mut cl = ProcCluster::start(1).unwrap();
    let a = cl.mount().unwrap();
    let d = a.p("work");
    fs::create_dir(&d).unwrap();

    // mkfifo, and a pipe through it between two threads of this node
    mknod(&d.join("pipe"), libc::S_IFIFO | 0o640, 0).unwrap();
    let pipe = d.join("pipe");
    let writer = std::thread::spawn(move || fs::OpenOptions::new().write(true).open(pipe).unwrap().write_all(b"through the fifo").unwrap());
    let mut got = String::new();
    fs::File::open(d.join("pipe")).unwrap().read_to_string(&mut got).unwrap();
    writer.join().unwrap();
    assert_eq!(got, "through the fifo");

    // bind of a UNIX socket, and a connection to it
    let listener = std::os::unix::net::UnixListener::bind(d.join("sock")).unwrap();
    let mut c = std::os::unix::net::UnixStream::connect(d.join("sock")).unwrap();
    c.write_all(b"hi").unwrap();
    let (mut s, _) = listener.accept().unwrap();
    let mut two = [0u8; 2];
    s.read_exact(&mut two).unwrap();
    assert_eq!(&two, b"hi");

    // device nodes (root only) with their numbers
    let null = libc::makedev(1, 3);
    let loop7 = libc::makedev(7, 7);
    mknod(&d.join("null"), libc::S_IFCHR | 0o666, null).unwrap();
    mknod(&d.join("loop7"), libc::S_IFBLK | 0o600, loop7).unwrap();
    // aifs mounts with nodev: a device node on it names a device, and
    // opens none
    let e = fs::OpenOptions::new().write(true).open(d.join("null")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}");
    // exclusive creation as any other name
    assert_eq!(mknod(&d.join("pipe"), libc::S_IFIFO | 0o600, 0).unwrap_err().raw_os_error(), Some(libc::EEXIST));

    // chmod, chown, rename, link, unlink
    fs::set_permissions(d.join("pipe"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(d.join("null"), Some(1234), Some(5678)).unwrap();
    fs::rename(d.join("loop7"), a.p("loop7-moved")).unwrap();
    fs::hard_link(d.join("pipe"), a.p("pipe-link")).unwrap();
    assert_eq!(fs::symlink_metadata(a.p("pipe-link")).unwrap().nlink(), 2);
    drop((listener, c, s));
    fs::remove_file(d.join("sock")).unwrap();
    assert!(fs::symlink_metadata(d.join("sock")).is_err());
    let names: Vec<String> = fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    let mut names = names;
    names.sort();
    assert_eq!(names, ["null", "pipe"]);

    // SAFETY: umask(2) read back and restored at once.
    let umask = unsafe {
        let m = libc::umask(0);
        libc::umask(m);
        m
    };
    let expect = vec![
        (d.join("pipe"), ("fifo".to_string(), 0o600, 0, 0, 0)),
        (a.p("pipe-link"), ("fifo".to_string(), 0o600, 0, 0, 0)),
        (d.join("null"), ("char".to_string(), 0o666 & !umask, 1234, 5678, null)),
        (a.p("loop7-moved"), ("block".to_string(), 0o600, 0, 0, loop7)),
    ];
    let check = |mount: &aifs_tests::proc::Mount, when: &str| {
        for (p, want) in &expect {
            let p = mount.p(p.strip_prefix(&a.path).unwrap().to_str().unwrap());
            assert_eq!(&kind_of(&p), want, "{} {when}", p.display());
        }
    };
    check(&a, "on the mount that made them");
    let b = cl.mount().unwrap();
    check(&b, "on another mount");
    drop(b);
    // an MDS restart keeps them, and a new mount sees them
    cl.kill9_mds();
    cl.start_mds().unwrap();
    cl.wait_ready(Duration::from_secs(20)).unwrap();
    let c2 = cl.mount().unwrap();
    check(&c2, "after an MDS restart");
    // unlinking one name of a FIFO leaves the other
    fs::remove_file(c2.p("work/pipe")).unwrap();
    assert_eq!(kind_of(&c2.p("pipe-link")).0, "fifo", "the other link went with the first");
}
