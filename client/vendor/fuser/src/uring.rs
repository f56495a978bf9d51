//! FUSE over io_uring (Linux 6.14 and later, with `fuse.enable_uring=1`).
//!
//! Through `/dev/fuse`, the kernel hands each request to whichever reader
//! thread waited longest, often on another CPU than the caller's: the
//! wake-up of an idle CPU then costs more than the request's work. Over
//! io_uring the kernel keeps one queue per CPU and puts a request on the
//! queue of the CPU its caller runs on. Here each queue is served by one
//! thread pinned to that CPU, so a caller and the thread answering it
//! take turns on one CPU.
//!
//! Each queue registers `depth` entries, each a header block and a payload
//! buffer the kernel copies a request into; the answer goes back in the
//! same buffers with a commit, which also fetches the next request. Only
//! the queue's own thread submits to its ring (the kernel copies a request
//! into the buffers from the context of the thread that fetched it), so
//! an answer given on another thread is handed to it, and an eventfd wakes
//! it. FORGET, INTERRUPT and notifications still travel through
//! `/dev/fuse`.
use std::cell::Cell;
use std::fmt;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use io_uring::{IoUring, opcode, squeue, types};
use log::{error, warn};

use crate::Filesystem;
use crate::request::RequestWithSender;
use crate::session::SessionEventLoop;

/// `struct fuse_uring_req_header`: the in/out header, the operation's own
/// header, and `struct fuse_uring_ent_in_out`.
const HEADER_SZ: usize = 288;
const OP_IN_AT: usize = 128;
const OP_IN_SZ: usize = 128;
const ENT_IN_OUT_AT: usize = 256;
const IN_HEADER_SZ: usize = 40;
const OUT_HEADER_SZ: usize = 16;
const PAGE: usize = 4096;
const CMD_REGISTER: u32 = 1;
const CMD_COMMIT_AND_FETCH: u32 = 2;
/// The `user_data` of the eventfd read; entries use their index.
const WAKE: u64 = u64::MAX;

thread_local! {
    /// The queue this thread serves, if it is a ring thread.
    static SERVING: Cell<Option<u16>> = const { Cell::new(None) };
}

/// One CPU's queue: its entries' buffers, and the answers waiting for
/// their commit.
pub(crate) struct Queue {
    qid: u16,
    depth: usize,
    /// A page for an entry's header block, then its payload buffer.
    stride: usize,
    payload_sz: usize,
    base: *mut u8,
    len: usize,
    /// Per entry, the header block and the payload: what REGISTER names.
    iovecs: Vec<[libc::iovec; 2]>,
    /// Per entry, the request it holds (the commit names it).
    commit_ids: Vec<AtomicU64>,
    answered: Mutex<Vec<u16>>,
    wake: OwnedFd,
    /// The connection ended: the ring thread returns.
    stopped: AtomicBool,
}

// SAFETY: the buffers behind `base` are shared with the kernel; an
// entry's are written by one side at a time: by the kernel until its
// request is fetched, by the one reply of that request until it is
// committed.
unsafe impl Send for Queue {}
// SAFETY: as above.
unsafe impl Sync for Queue {}

impl fmt::Debug for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Queue({})", self.qid)
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        // SAFETY: mapped in `Queue::new` with this length; the kernel has
        // released every entry (the ring thread ended).
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

impl Queue {
    fn new(qid: u16, depth: usize, payload_sz: usize) -> io::Result<Queue> {
        let payload_sz = payload_sz.next_multiple_of(PAGE);
        let stride = PAGE + payload_sz;
        let len = stride * depth;
        // SAFETY: an anonymous private mapping; pages are only touched as
        // requests use them.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = base.cast::<u8>();
        // SAFETY: a new eventfd, owned from here on.
        let wake = unsafe {
            let fd = libc::eventfd(0, libc::EFD_CLOEXEC);
            if fd < 0 {
                libc::munmap(base.cast(), len);
                return Err(io::Error::last_os_error());
            }
            OwnedFd::from_raw_fd(fd)
        };
        let iovecs = (0..depth)
            .map(|e| {
                // SAFETY: within the mapping.
                let header = unsafe { base.add(e * stride) };
                [
                    libc::iovec { iov_base: header.cast(), iov_len: HEADER_SZ },
                    // SAFETY: within the mapping.
                    libc::iovec { iov_base: unsafe { header.add(PAGE) }.cast(), iov_len: payload_sz },
                ]
            })
            .collect();
        Ok(Queue {
            qid,
            depth,
            stride,
            payload_sz,
            base,
            len,
            iovecs,
            commit_ids: (0..depth).map(|_| AtomicU64::new(0)).collect(),
            answered: Mutex::new(Vec::with_capacity(depth)),
            wake,
            stopped: AtomicBool::new(false),
        })
    }

    fn header(&self, ent: u16) -> *mut u8 {
        // SAFETY: `ent < depth`, within the mapping.
        unsafe { self.base.add(ent as usize * self.stride) }
    }

    fn payload(&self, ent: u16) -> *mut u8 {
        // SAFETY: as `header`, one page on.
        unsafe { self.header(ent).add(PAGE) }
    }

    /// The request entry `ent` holds, laid out as `/dev/fuse` gives it
    /// (in header, the operation's header, the rest) without copying the
    /// payload: the first two go just before it, in the entry's header
    /// page. None: a request this side cannot read.
    fn request(&self, ent: u16) -> Option<&[u8]> {
        let h = self.header(ent);
        // SAFETY: the kernel filled the header block before completing
        // the fetch; this thread owns the entry until its commit.
        let (len, commit_id, payload) = unsafe {
            (
                std::ptr::read_unaligned(h.cast::<u32>()) as usize,
                std::ptr::read_unaligned(h.add(ENT_IN_OUT_AT + 8).cast::<u64>()),
                std::ptr::read_unaligned(h.add(ENT_IN_OUT_AT + 16).cast::<u32>()) as usize,
            )
        };
        self.commit_ids[ent as usize].store(commit_id, Ordering::Relaxed);
        let op = len.checked_sub(IN_HEADER_SZ + payload).filter(|op| *op <= OP_IN_SZ && payload <= self.payload_sz)?;
        let start = IN_HEADER_SZ + op;
        // SAFETY: `start` <= 168 bytes before the payload, past the
        // header block (288 bytes) in the entry's header page; the regions
        // copied do not overlap.
        unsafe {
            let at = self.payload(ent).sub(start);
            std::ptr::copy_nonoverlapping(h, at, IN_HEADER_SZ);
            std::ptr::copy_nonoverlapping(h.add(OP_IN_AT), at.add(IN_HEADER_SZ), op);
            Some(std::slice::from_raw_parts(at, len))
        }
    }

    /// The answer to the request entry `ent` holds: into its buffers, and
    /// its commit queued for the ring thread.
    pub(crate) fn answer(&self, ent: u16, bufs: &[IoSlice<'_>]) -> io::Result<()> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let fits = total >= OUT_HEADER_SZ && total - OUT_HEADER_SZ <= self.payload_sz;
        let h = self.header(ent);
        let mut at = 0;
        for b in bufs.iter().filter(|_| fits) {
            let mut b: &[u8] = b;
            // SAFETY (both copies): the out header goes to the header
            // block, the rest to the payload, within their sizes (`fits`);
            // this reply owns the entry until its commit.
            if at < OUT_HEADER_SZ {
                let n = b.len().min(OUT_HEADER_SZ - at);
                unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), h.add(at), n) };
                at += n;
                b = &b[n..];
            }
            if !b.is_empty() {
                unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), self.payload(ent).add(at - OUT_HEADER_SZ), b.len()) };
                at += b.len();
            }
        }
        if !fits {
            error!("a FUSE answer of {total} bytes does not fit a ring entry");
            let oh = self.eio(ent);
            // SAFETY: as above.
            unsafe { std::ptr::copy_nonoverlapping(oh.as_ptr(), h, OUT_HEADER_SZ) };
            at = OUT_HEADER_SZ;
        }
        // SAFETY: as above; `struct fuse_uring_ent_in_out.payload_sz`.
        unsafe { std::ptr::write_unaligned(h.add(ENT_IN_OUT_AT + 16).cast::<u32>(), (at - OUT_HEADER_SZ) as u32) };
        self.answered.lock().unwrap_or_else(|p| p.into_inner()).push(ent);
        if SERVING.get() != Some(self.qid) {
            self.wake();
        }
        Ok(())
    }

    /// An out header failing the request entry `ent` holds with EIO.
    fn eio(&self, ent: u16) -> [u8; OUT_HEADER_SZ] {
        let unique = self.commit_ids[ent as usize].load(Ordering::Relaxed);
        let mut oh = [0u8; OUT_HEADER_SZ];
        oh[..4].copy_from_slice(&(OUT_HEADER_SZ as u32).to_ne_bytes());
        oh[4..8].copy_from_slice(&(-libc::EIO).to_ne_bytes());
        oh[8..].copy_from_slice(&unique.to_ne_bytes());
        oh
    }

    fn wake(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: an 8-byte write to our eventfd.
        unsafe { libc::write(self.wake.as_raw_fd(), one.as_ptr().cast(), 8) };
    }

    /// The connection ended: the ring thread returns.
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.wake();
    }

    fn cmd(&self, commit_id: u64) -> [u8; 80] {
        // `struct fuse_uring_cmd_req`: flags, commit id, queue.
        let mut cmd = [0u8; 80];
        cmd[8..16].copy_from_slice(&commit_id.to_ne_bytes());
        cmd[16..18].copy_from_slice(&self.qid.to_ne_bytes());
        cmd
    }

    fn register(&self, fd: RawFd, ent: u16) -> squeue::Entry128 {
        let iov = self.iovecs[ent as usize].as_ptr() as u64;
        let sqe = opcode::UringCmd80::new(types::Fd(fd), CMD_REGISTER).cmd(self.cmd(0)).addr(Some(iov)).build().user_data(ent as u64);
        // SAFETY: `Entry128` is `repr(C)`: the 128-byte SQE. REGISTER
        // takes its two iovecs' count in `len` (offset 24), which the
        // builder has no setter for.
        let mut raw: [u8; 128] = unsafe { std::mem::transmute(sqe) };
        raw[24..28].copy_from_slice(&2u32.to_ne_bytes());
        // SAFETY: as above.
        unsafe { std::mem::transmute::<[u8; 128], squeue::Entry128>(raw) }
    }

    fn commit(&self, fd: RawFd, ent: u16) -> squeue::Entry128 {
        let id = self.commit_ids[ent as usize].load(Ordering::Relaxed);
        opcode::UringCmd80::new(types::Fd(fd), CMD_COMMIT_AND_FETCH).cmd(self.cmd(id)).build().user_data(ent as u64)
    }
}

/// Where an answer goes: an entry of a queue.
#[derive(Clone, Debug)]
pub(crate) struct Slot {
    pub(crate) queue: Arc<Queue>,
    pub(crate) ent: u16,
}

/// A queue and its ring, made before the kernel hears that this side
/// speaks io_uring: once it does, every request waits until each CPU's
/// queue has an entry registered.
pub(crate) struct Ring {
    queue: Arc<Queue>,
    ring: IoUring<squeue::Entry128>,
}

impl Ring {
    pub(crate) fn queue(&self) -> Arc<Queue> {
        self.queue.clone()
    }

    pub(crate) fn qid(&self) -> u16 {
        self.queue.qid
    }
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.queue.fmt(f)
    }
}

/// One ring per possible CPU, `depth` entries each, payloads of
/// `payload_sz`.
pub(crate) fn rings(depth: usize, payload_sz: usize) -> io::Result<Vec<Ring>> {
    let cpus = possible_cpus()?;
    let depth = depth.clamp(1, u16::MAX as usize - 1);
    (0..cpus)
        .map(|qid| {
            let entries = (depth as u32 + 2).next_power_of_two();
            let ring = IoUring::<squeue::Entry128>::builder().build(entries)?;
            Ok(Ring { queue: Arc::new(Queue::new(qid as u16, depth, payload_sz)?), ring })
        })
        .collect()
}

fn possible_cpus() -> io::Result<usize> {
    let s = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    let last = s.trim().rsplit([',', '-']).next().and_then(|n| n.parse::<usize>().ok());
    last.map(|n| n + 1).ok_or_else(|| io::Error::other(format!("cannot read the possible CPUs from {s:?}")))
}

/// Serve one queue on this thread until the connection ends.
pub(crate) fn serve<FS: Filesystem>(ring: Ring, fd: RawFd, se: &SessionEventLoop<FS>) -> io::Result<()> {
    let Ring { queue: q, mut ring } = ring;
    pin_to(q.qid as usize);
    SERVING.set(Some(q.qid));
    let mut live = q.depth;
    let r = serve_queue(&q, &mut ring, fd, se, &mut live);
    if live > 0 {
        // Entries the kernel may still write to: their buffers stay.
        std::mem::forget(q.clone());
    }
    r
}

fn serve_queue<FS: Filesystem>(q: &Arc<Queue>, ring: &mut IoUring<squeue::Entry128>, fd: RawFd, se: &SessionEventLoop<FS>, live: &mut usize) -> io::Result<()> {
    // The eventfd's counter lands in entry 0's header page, past its
    // header block and before what `request` writes there.
    // SAFETY: within the mapping, 8-aligned.
    let wake_buf = unsafe { q.header(0).add(1024) };
    let wake_read: squeue::Entry128 = opcode::Read::new(types::Fd(q.wake.as_raw_fd()), wake_buf, 8).build().user_data(WAKE).into();
    let mut todo: Vec<squeue::Entry128> = (0..q.depth as u16).map(|e| q.register(fd, e)).collect();
    todo.push(wake_read.clone());
    loop {
        push_all(ring, &mut todo)?;
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return Err(e),
        }
        let done: Vec<(u64, i32)> = ring.completion().map(|c| (c.user_data(), c.result())).collect();
        for (ud, res) in done {
            if ud == WAKE {
                todo.push(wake_read.clone());
                continue;
            }
            let ent = ud as u16;
            if res < 0 {
                // The connection ended (ENOTCONN), or the entry could not
                // be registered: the kernel then falls back to /dev/fuse.
                *live -= 1;
                if res != -libc::ENOTCONN && res != -libc::ECANCELED {
                    warn!("FUSE ring queue {} entry {ent}: {}", q.qid, io::Error::from_raw_os_error(-res));
                }
                continue;
            }
            match q.request(ent).and_then(|data| RequestWithSender::new_ring(se.ch.sender(), Slot { queue: q.clone(), ent }, data)) {
                Some(req) => req.dispatch(se),
                None => {
                    error!("an unreadable FUSE request on ring queue {}", q.qid);
                    q.answer(ent, &[IoSlice::new(&q.eio(ent))])?;
                }
            }
        }
        if *live == 0 || q.stopped.load(Ordering::Acquire) {
            return Ok(());
        }
        let answered = std::mem::take(&mut *q.answered.lock().unwrap_or_else(|p| p.into_inner()));
        todo.extend(answered.into_iter().map(|ent| q.commit(fd, ent)));
    }
}

fn push_all(ring: &mut IoUring<squeue::Entry128>, todo: &mut Vec<squeue::Entry128>) -> io::Result<()> {
    for sqe in todo.drain(..) {
        // SAFETY: every buffer an entry names (the queue's mapping, its
        // iovecs, the eventfd's read buffer) outlives the ring.
        while unsafe { ring.submission().push(&sqe) }.is_err() {
            ring.submit()?;
        }
    }
    Ok(())
}

/// Run this thread on CPU `cpu` only, so a caller there is answered there.
fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET stays within it
    // for cpu < CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if cpu >= libc::CPU_SETSIZE as usize {
            return;
        }
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            warn!("FUSE ring queue {cpu}: cannot run on that CPU alone: {}", io::Error::last_os_error());
        }
    }
}
