//! The only `impl fuser::Filesystem`: thin glue over `ClientFs`. Each
//! callback owns its arguments, hands the work to tokio and returns at once
//! (STYLE.md §4); the reply travels into the task and is sent exactly once.
//! Work that needs no waiting (an answer from the lease caches, a create
//! under a directory lease) is finished on the FUSE thread by polling it
//! once (`run`): moving it to a tokio worker and back would cost two
//! thread wake-ups, more than the work itself.
use crate::cred::Caller;
use crate::fs::{ClientFs, KernelCache, Opened};
use aifs_common::proto::mds::{Attr, FileKind, LockKind, SetAttr, TimeSet, RENAME_EXCHANGE, RENAME_NOREPLACE, XATTR_CREATE, XATTR_REPLACE};
use aifs_common::{errno, Error, InodeId};
use bytes::Bytes;
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLock, ReplyOpen,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

/// Largest write the kernel sends in one request: one default stripe unit.
pub const MAX_WRITE: u32 = 1 << 20;
/// Kernel read-ahead per file.
pub const MAX_READAHEAD: u32 = 1 << 20;
/// Requests the kernel may have outstanding in the background (async reads
/// and writes); more than the writeback window so pipelines stay full.
pub const MAX_BACKGROUND: u16 = 64;

pub struct AifsFuse {
    fs: Arc<ClientFs>,
    rt: tokio::runtime::Handle,
    kernel: Arc<KernelView>,
}

/// The kernel's caches, reached through the FUSE session's notifier: a
/// recall from the MDS makes the kernel forget entries, attributes and
/// pages (fs.rs, `KernelCache`).
#[derive(Default)]
pub struct KernelView {
    notifier: std::sync::OnceLock<fuser::Notifier>,
}

impl KernelView {
    pub fn set_notifier(&self, n: fuser::Notifier) {
        let _ = self.notifier.set(n);
    }
}

impl KernelCache for KernelView {
    fn forget_entry(&self, parent: InodeId, name: &str) {
        if let Some(n) = self.notifier.get() {
            // ENOENT: the kernel had no such entry cached.
            let _ = n.inval_entry(INodeNo(parent.0), OsStr::new(name));
        }
    }

    fn forget_inode(&self, ino: InodeId, data: bool) {
        if let Some(n) = self.notifier.get() {
            // Offset -1: attributes only; 0 with length 0: and every page.
            let _ = n.inval_inode(INodeNo(ino.0), if data { 0 } else { -1 }, 0);
        }
    }
}

impl AifsFuse {
    pub fn new(fs: Arc<ClientFs>, rt: tokio::runtime::Handle) -> Self {
        let kernel = Arc::new(KernelView::default());
        fs.set_kernel(kernel.clone());
        AifsFuse { fs, rt, kernel }
    }

    /// Run `work`, FUSE operation `op`, for the caller of `req`
    /// (client/src/cred.rs) to its end, timed (metrics.rs): here, if it
    /// finishes without waiting, else on tokio. Polling never blocks: a
    /// future that would wait registers its waker and returns, and tokio
    /// polls it again (with its own waker) once spawned.
    fn run(&self, op: &'static str, req: &Request, work: impl std::future::Future<Output = ()> + Send + 'static) {
        let caller = Caller { uid: req.uid(), gid: req.gid(), pid: req.pid() };
        let mut work = Box::pin(crate::cred::scope(caller, self.fs.metrics.timed(op, work)));
        let _rt = self.rt.enter();
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        if std::future::Future::poll(work.as_mut(), &mut cx).is_pending() {
            self.rt.spawn(work);
        }
    }

    /// Shared view for handing the session's notifier in after mounting.
    pub fn kernel_view(&self) -> Arc<KernelView> {
        self.kernel.clone()
    }
}

/// The errno a FUSE operation answers with, counted.
fn err(e: &Error) -> Errno {
    crate::metrics::count_error(e);
    Errno::from_i32(errno(e))
}

/// Parse a name once at the edge: UTF-8, checked again by the MDS.
fn valid_name(name: &OsStr) -> Result<String, Errno> {
    match name.to_str() {
        Some(s) if s.len() > 255 => Err(Errno::ENAMETOOLONG),
        Some(s) => Ok(s.to_string()),
        None => Err(Errno::EINVAL),
    }
}

/// The kernel's inode number as the file system's: the same number (the
/// root is 1 in both).
fn id(n: INodeNo) -> InodeId {
    InodeId(n.0)
}

fn file_type(k: FileKind) -> FileType {
    match k {
        FileKind::File => FileType::RegularFile,
        FileKind::Dir => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
        FileKind::CharDev => FileType::CharDevice,
        FileKind::BlockDev => FileType::BlockDevice,
    }
}

pub fn file_attr(a: &Attr) -> FileAttr {
    let kind = file_type(a.kind);
    FileAttr {
        ino: INodeNo(a.ino.0),
        size: a.size,
        // What the OSDs hold, once measured after a change; till then the
        // size (holes and all).
        blocks: a.allocated.unwrap_or(a.size).div_ceil(512),
        atime: aifs_common::time::from_ns(a.atime_ns),
        mtime: aifs_common::time::from_ns(a.mtime_ns),
        ctime: aifs_common::time::from_ns(a.ctime_ns),
        crtime: aifs_common::time::from_ns(a.ctime_ns),
        kind,
        perm: (a.perm & 0o7777) as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: a.layout.as_ref().map(|l| l.stripe_size).unwrap_or(4096),
        flags: 0,
    }
}

fn time_set(t: Option<TimeOrNow>) -> Option<TimeSet> {
    t.map(|t| match t {
        TimeOrNow::Now => TimeSet::Now,
        TimeOrNow::SpecificTime(s) => TimeSet::At(aifs_common::time::to_ns(s)),
    })
}

macro_rules! spawn_entry {
    ($self:ident, $op:literal, $req:ident, $reply:ident, $parent:expr, $name:expr, $fut:expr) => {{
        let fs = $self.fs.clone();
        let parent = $parent;
        let name = $name.clone();
        $self.run($op, $req, async move {
            match $fut.await {
                Ok(a) => $reply.entry(&fs.entry_ttl(parent, &name, a.ino), &file_attr(&a), Generation(0)),
                Err(e) => $reply.error(err(&e)),
            }
        });
    }};
}

macro_rules! spawn_empty {
    ($self:ident, $op:literal, $req:ident, $reply:ident, $fut:expr) => {{
        $self.run($op, $req, async move {
            match $fut.await {
                Ok(()) => $reply.ok(),
                Err(e) => $reply.error(err(&e)),
            }
        });
    }};
}

impl Filesystem for AifsFuse {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(MAX_WRITE);
        let _ = config.set_max_readahead(MAX_READAHEAD);
        let _ = config.set_max_background(MAX_BACKGROUND);
        let _ = config.set_congestion_threshold(MAX_BACKGROUND * 3 / 4);
        // `ls -l`: entries and attributes in one request per batch.
        let _ = config.add_capabilities(InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO);
        // fcntl and flock locks go to the MDS, so they hold across clients.
        let _ = config.add_capabilities(InitFlags::FUSE_POSIX_LOCKS | InitFlags::FUSE_FLOCK_LOCKS);
        // Lookups and readdirs in one directory run side by side (ranks
        // opening their shards in one checkpoint directory): without it
        // the kernel takes a mutex of the directory's around each.
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        Ok(())
    }

    fn destroy(&mut self) {
        let fs = self.fs.clone();
        self.rt.block_on(async move { fs.shutdown().await });
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = match valid_name(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let fs = self.fs.clone();
        spawn_entry!(self, "lookup", req, reply, id(parent), name, fs.lookup(id(parent), &name));
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let fs = self.fs.clone();
        self.run("getattr", req, async move {
            match fs.getattr(id(ino)).await {
                Ok(a) => reply.attr(&fs.ttl(a.ino), &file_attr(&a)),
                Err(e) => reply.error(err(&e)),
            }
        });
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let fs = self.fs.clone();
        let set = SetAttr { mode, uid, gid, size, atime: time_set(atime), mtime: time_set(mtime) };
        self.run("setattr", req, async move {
            match fs.setattr(id(ino), set).await {
                Ok(a) => reply.attr(&fs.ttl(a.ino), &file_attr(&a)),
                Err(e) => reply.error(err(&e)),
            }
        });
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        let fs = self.fs.clone();
        self.run("readlink", req, async move {
            match fs.readlink(id(ino)).await {
                Ok(t) => reply.data(&t),
                Err(e) => reply.error(err(&e)),
            }
        });
    }

    fn mknod(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, rdev: u32, reply: ReplyEntry) {
        let name = match valid_name(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let fs = self.fs.clone();
        spawn_entry!(self, "mknod", req, reply, id(parent), name, fs.mknod(id(parent), &name, mode & !umask, rdev));
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let name = match valid_name(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let fs = self.fs.clone();
        spawn_entry!(self, "mkdir", req, reply, id(parent), name, fs.mkdir(id(parent), &name, mode & !umask));
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = match valid_name(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let fs = self.fs.clone();
        spawn_empty!(self, "unlink", req, reply, fs.unlink(id(parent), &name));
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = match valid_name(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let fs = self.fs.clone();
        spawn_empty!(self, "rmdir", req, reply, fs.rmdir(id(parent), &name));
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        let name = match valid_name(link_name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let Some(target) = target.to_str().map(|s| s.to_string()) else {
            return reply.error(Errno::EINVAL);
        };
        let fs = self.fs.clone();
        spawn_entry!(self, "symlink", req, reply, id(parent), name, fs.symlink(id(parent), &name, &target));
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (name, newname) = match (valid_name(name), valid_name(newname)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => return reply.error(e),
        };
        let mut f = 0;
        if flags.contains(RenameFlags::RENAME_NOREPLACE) {
            f |= RENAME_NOREPLACE;
        }
        if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            f |= RENAME_EXCHANGE;
        }
        if !(flags - RenameFlags::RENAME_NOREPLACE - RenameFlags::RENAME_EXCHANGE).is_empty() || f == RENAME_NOREPLACE | RENAME_EXCHANGE {
            return reply.error(Errno::EINVAL);
        }
        let fs = self.fs.clone();
        spawn_empty!(self, "rename", req, reply, fs.rename(id(parent), &name, id(newparent), &newname, f));
    }

    fn link(&self, req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        let name = match valid_name(newname) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let fs = self.fs.clone();
        spawn_entry!(self, "link", req, reply, id(newparent), name, fs.link(id(ino), id(newparent), &name));
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let fs = self.fs.clone();
        let write = flags.0 & libc::O_ACCMODE != libc::O_RDONLY;
        let append = flags.0 & libc::O_APPEND != 0;
        self.run("open", req, async move {
            match fs.open(id(ino), write, append).await {
                Ok(o) => reply.opened(o.fh.into(), fopen_flags(&o)),
                Err(e) => reply.error(err(&e)),
            }
        });
    }

    fn read(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let fs = self.fs.clone();
        self.run("read", req, async move {
            match fs.read(fh.into(), offset, size).await {
                Ok(b) => reply.data(&b),
                Err(e) => reply.error(err(&e)),
            }
        });
    }

    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let fs = self.fs.clone();
        let data = Bytes::copy_from_slice(data);
        self.run("write", req, async move {
            match fs.write(fh.into(), offset, data).await {
                Ok(n) => reply.written(n),
                Err(e) => reply.error(err(&e)),
            }
        });
    }

    fn fallocate(&self, req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, length: u64, mode: i32, reply: ReplyEmpty) {
        let fs = self.fs.clone();
        spawn_empty!(self, "fallocate", req, reply, fs.fallocate(fh.into(), offset, length, mode));
    }

    fn flush(&self, req: &Request, _ino: INodeNo, fh: FileHandle, lock_owner: LockOwner, reply: ReplyEmpty) {
        let fs = self.fs.clone();
        spawn_empty!(self, "flush", req, reply, fs.flush(fh.into(), lock_owner.0));
    }

    fn getlk(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        reply: ReplyLock,
    ) {
        let fs = self.fs.clone();
        let write = typ == libc::F_WRLCK;
        self.run("getlk", req, async move {
            match fs.getlk(id(ino), lock_owner.0, start, end, write, pid).await {
                Ok(Some(l)) => reply.locked(l.start, l.end, if l.write { libc::F_WRLCK } else { libc::F_RDLCK }, l.pid),
                Ok(None) => reply.locked(start, end, libc::F_UNLCK, 0),
                Err(e) => reply.error(err(&e)),
            }
        });
    }

    fn setlk(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        let kind = match typ {
            libc::F_RDLCK => LockKind::Read,
            libc::F_WRLCK => LockKind::Write,
            libc::F_UNLCK => LockKind::Unlock,
            _ => return reply.error(Errno::EINVAL),
        };
        let fs = self.fs.clone();
        spawn_empty!(self, "setlk", req, reply, fs.setlk(id(ino), lock_owner.0, start, end, kind, pid, sleep));
    }

    fn release(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let fs = self.fs.clone();
        // With a lock owner: the last close of an open file that took
        // `flock` locks, which go with it.
        let flock_owner = lock_owner.map(|o| o.0);
        spawn_empty!(self, "release", req, reply, async move {
            if let Some(o) = flock_owner {
                fs.unlock_owner(id(ino), o).await?;
            }
            fs.release(fh.into()).await
        });
    }

    fn fsync(&self, req: &Request, _ino: INodeNo, fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        let fs = self.fs.clone();
        spawn_empty!(self, "fsync", req, reply, fs.fsync(fh.into()));
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let fs = self.fs.clone();
        self.run("opendir", req, async move {
            match fs.getattr(id(ino)).await {
                Ok(a) if a.kind == FileKind::Dir => reply.opened(FileHandle(0), FopenFlags::empty()),
                Ok(_) => reply.error(Errno::ENOTDIR),
                Err(e) => reply.error(err(&e)),
            }
        });
    }

    fn readdir(&self, req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let fs = self.fs.clone();
        self.run("readdir", req, async move {
            // Offsets 1 and 2 are `.` and `..`; entries carry their MDS
            // cookie, which stays valid while the directory changes.
            let (entries, parent) = match fs.readdir(id(ino), offset.max(2)).await {
                Ok(r) => r,
                Err(e) => return reply.error(err(&e)),
            };
            if offset < 1 && reply.add(ino, 1, FileType::Directory, ".") {
                return reply.ok();
            }
            if offset < 2 && reply.add(INodeNo(parent.0), 2, FileType::Directory, "..") {
                return reply.ok();
            }
            for e in entries {
                if reply.add(INodeNo(e.ino.0), e.cookie, file_type(e.kind), &e.name) {
                    break;
                }
            }
            reply.ok();
        });
    }

    fn readdirplus(&self, req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        let fs = self.fs.clone();
        self.run("readdirplus", req, async move {
            let (entries, parent) = match fs.readdirplus(id(ino), offset.max(2)).await {
                Ok(r) => r,
                Err(e) => return reply.error(err(&e)),
            };
            if offset < 2 {
                // The kernel takes no attributes from `.` and `..`.
                let me = match fs.getattr(id(ino)).await {
                    Ok(a) => a,
                    Err(e) => return reply.error(err(&e)),
                };
                let fa = file_attr(&me);
                let ttl = fs.ttl(id(ino));
                if offset < 1 && reply.add(ino, 1, ".", &ttl, &fa, Generation(0)) {
                    return reply.ok();
                }
                if reply.add(INodeNo(parent.0), 2, "..", &ttl, &fa, Generation(0)) {
                    return reply.ok();
                }
            }
            for (e, a) in entries {
                let ttl = fs.entry_ttl(id(ino), &e.name, e.ino);
                if reply.add(INodeNo(e.ino.0), e.cookie, &e.name, &ttl, &file_attr(&a), Generation(0)) {
                    break;
                }
            }
            reply.ok();
        });
    }

    fn fsyncdir(&self, req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        // Changes the MDS answered are durable; those made here under a
        // directory lease are once applied.
        let fs = self.fs.clone();
        self.run("fsyncdir", req, async move {
            fs.sync_dirs().await;
            reply.ok();
        });
    }

    fn statfs(&self, req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let fs = self.fs.clone();
        self.run("statfs", req, async move {
            match fs.statfs().await {
                Ok(s) => {
                    const BS: u64 = 4096;
                    let free_inodes = u32::MAX as u64;
                    reply.statfs(
                        s.total_bytes / BS,
                        s.avail_bytes / BS,
                        s.avail_bytes / BS,
                        s.files + free_inodes,
                        free_inodes,
                        BS as u32,
                        255,
                        BS as u32,
                    )
                }
                Err(e) => reply.error(err(&e)),
            }
        });
    }

    fn setxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, value: &[u8], flags: i32, _position: u32, reply: ReplyEmpty) {
        let name = match valid_name(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let mut f = 0;
        if flags & libc::XATTR_CREATE != 0 {
            f |= XATTR_CREATE;
        }
        if flags & libc::XATTR_REPLACE != 0 {
            f |= XATTR_REPLACE;
        }
        let value = value.to_vec();
        let fs = self.fs.clone();
        spawn_empty!(self, "setxattr", req, reply, fs.setxattr(id(ino), &name, value, f));
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let name = match valid_name(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let fs = self.fs.clone();
        self.run("getxattr", req, async move {
            match fs.getxattr(id(ino), &name).await {
                Ok(v) => xattr_reply(reply, size, &v),
                Err(e) => reply.error(err(&e)),
            }
        });
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let fs = self.fs.clone();
        self.run("listxattr", req, async move {
            match fs.listxattr(id(ino)).await {
                Ok(names) => {
                    let mut buf = Vec::new();
                    for n in names {
                        buf.extend_from_slice(n.as_bytes());
                        buf.push(0);
                    }
                    xattr_reply(reply, size, &buf)
                }
                Err(e) => reply.error(err(&e)),
            }
        });
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = match valid_name(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let fs = self.fs.clone();
        spawn_empty!(self, "removexattr", req, reply, fs.removexattr(id(ino), &name));
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        // default_permissions: the kernel checks modes itself.
        reply.ok();
    }

    fn create(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, flags: i32, reply: ReplyCreate) {
        let name = match valid_name(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let fs = self.fs.clone();
        let exclusive = flags & libc::O_EXCL != 0;
        let append = flags & libc::O_APPEND != 0;
        self.run("create", req, async move {
            let o = fs.create(id(parent), &name, mode & !umask, exclusive, append).await;
            reply_created(&fs, reply, id(parent), &name, o)
        });
    }

    /// `open(O_TMPFILE)`: a file with no name, which `linkat` can name
    /// unless `O_EXCL` was given.
    fn tmpfile(&self, req: &Request, parent: INodeNo, mode: u32, umask: u32, flags: i32, reply: ReplyCreate) {
        let fs = self.fs.clone();
        let linkable = flags & libc::O_EXCL == 0;
        let append = flags & libc::O_APPEND != 0;
        self.run("tmpfile", req, async move {
            // no name: the kernel caches no entry (ttl 0)
            let o = fs.tmpfile(id(parent), mode & !umask, linkable, append).await;
            reply_created(&fs, reply, id(parent), "", o)
        });
    }
}

/// Answer a create or tmpfile that opened `o` (named `name` in `parent`).
fn reply_created(fs: &ClientFs, reply: ReplyCreate, parent: InodeId, name: &str, o: Result<Opened, Error>) {
    match o {
        Ok(o) => {
            let ttl = fs.entry_ttl(parent, name, o.attr.ino);
            reply.created(&ttl, &file_attr(&o.attr), Generation(0), o.fh.into(), fopen_flags(&o))
        }
        Err(e) => reply.error(err(&e)),
    }
}

fn fopen_flags(o: &Opened) -> FopenFlags {
    let mut f = FopenFlags::empty();
    if o.keep_cache {
        f |= FopenFlags::FOPEN_KEEP_CACHE;
    }
    if o.direct_io {
        f |= FopenFlags::FOPEN_DIRECT_IO;
    }
    f
}

fn xattr_reply(reply: ReplyXattr, size: u32, v: &[u8]) {
    if size == 0 {
        reply.size(v.len() as u32);
    } else if v.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(v);
    }
}
