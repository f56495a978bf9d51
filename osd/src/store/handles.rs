//! An open object of the `FileStore` (file.rs): its data file and crc
//! sidecar, the data file again with `O_DIRECT` for large aligned reads
//! and writes, and the sidecar's entries (each stored XOR the store's key,
//! with holes where a large zero range needs none).
use aifs_common::proto::frame::aligned_buffer;
use aifs_common::proto::osd::CRC_BLOCK;
use aifs_common::{Error, Result};
use bytes::{Bytes, BytesMut};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::OnceLock;

/// Crc entries computed and written per batch when a hole is filled.
const CRC_BATCH: u64 = 64 * 1024;
/// Entries of a gap's whole zero blocks left unwritten (a hole in the
/// sidecar) from this many up: a page of them.
const SPARSE_CRC_MIN: u64 = 1024;
/// Alignment of buffer, offset and length that `O_DIRECT` asks for.
pub(super) const DIRECT_ALIGN: usize = aifs_common::proto::frame::PAYLOAD_ALIGN;
/// Writes at least this large, aligned in offset, length and memory (the
/// frame reader lands large payloads aligned), go to the disk with
/// `O_DIRECT`: the copy into the page cache was a quarter of the CPU of a
/// checkpoint write on the OSDs, and a checkpoint is not read back soon.
const DIRECT_WRITE_MIN: usize = 128 * 1024;

/// `pread` of up to `max` bytes at `off`, appended to `buf` in its spare
/// capacity (never beyond it): no zero-fill of memory the disk is about to
/// write.
fn pread_append(f: &File, buf: &mut BytesMut, max: usize, off: u64) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    let spare = buf.spare_capacity_mut();
    let max = max.min(spare.len());
    let off = libc::off_t::try_from(off).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    loop {
        // SAFETY: the pointer and `max` lie within `buf`'s spare capacity,
        // which the kernel may write; nothing reads it before `set_len`.
        let n = unsafe { libc::pread(f.as_raw_fd(), spare.as_mut_ptr().cast(), max, off) };
        if n >= 0 {
            // SAFETY: the kernel initialised the first `n` (<= `max`) bytes
            // of the spare capacity.
            unsafe { buf.set_len(buf.len() + n as usize) };
            return Ok(n as usize);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

pub(super) struct Handles {
    pub(super) data: File,
    pub(super) crc: File,
    /// The data file opened with `O_DIRECT`, once a large read or write
    /// wanted it (`None`: the file system refused it).
    pub(super) direct: OnceLock<Option<File>>,
    pub(super) path: PathBuf,
    /// The store's crc key.
    pub(super) key: u32,
}

impl Handles {
    fn direct(&self) -> Option<&File> {
        use std::os::unix::fs::OpenOptionsExt;
        let f = self.direct.get_or_init(|| match OpenOptions::new().read(true).write(true).custom_flags(libc::O_DIRECT).open(&self.path) {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::debug!(path = %self.path.display(), error = %e, "no O_DIRECT; going through the page cache");
                None
            }
        });
        f.as_ref()
    }

    /// `len` bytes at `start` (aligned to `DIRECT_ALIGN`), read with
    /// `O_DIRECT`; `None` when the file system does not do direct reads.
    pub(super) fn read_direct(&self, start: u64, len: usize) -> Result<Option<Bytes>> {
        let Some(f) = self.direct() else { return Ok(None) };
        // The disk fills an aligned window of a buffer, the reply shares it.
        let span = len.next_multiple_of(DIRECT_ALIGN);
        let (mut buf, pad) = aligned_buffer(span);
        let mut from = f;
        while buf.len() - pad < len {
            let got = buf.len() - pad;
            let n = match pread_append(from, &mut buf, span - got, start + got as u64) {
                Ok(n) => n,
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) && got == 0 => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            if n == 0 {
                return Err(Error::Io(format!("{}: ends before byte {}", self.path.display(), start + len as u64)));
            }
            if n % DIRECT_ALIGN != 0 {
                // A short read is only ever at the end of the file, which
                // is not aligned: go on through the page cache from there.
                from = &self.data;
            }
        }
        Ok(Some(buf.freeze().slice(pad..pad + len)))
    }

    /// Write `data` at `off`, straight to the disk when both are aligned
    /// for `O_DIRECT` (the kernel first writes back and then drops cached
    /// pages of the range, so buffered readers and writers stay coherent),
    /// else through the page cache.
    pub(super) fn write_at(&self, data: &[u8], off: u64) -> Result<()> {
        let aligned = data.len() >= DIRECT_WRITE_MIN
            && data.len().is_multiple_of(DIRECT_ALIGN)
            && off.is_multiple_of(DIRECT_ALIGN as u64)
            && data.as_ptr().align_offset(DIRECT_ALIGN) == 0;
        if aligned {
            if let Some(f) = self.direct() {
                match f.write_all_at(data, off) {
                    Ok(()) => return Ok(()),
                    // Refused before any byte moved: the page cache takes it.
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        self.data.write_all_at(data, off)?;
        Ok(())
    }

    pub(super) fn read_crcs(&self, first: u64, n: u64) -> Result<Vec<u32>> {
        let mut raw = vec![0u8; (n * 4) as usize];
        let mut got = 0usize;
        while got < raw.len() {
            let r = self.crc.read_at(&mut raw[got..], first * 4 + got as u64)?;
            if r == 0 {
                return Err(Error::Checksum(format!("crc table short at block {}", first + got as u64 / 4)));
            }
            got += r;
        }
        Ok(raw.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) ^ self.key).collect())
    }

    pub(super) fn write_crcs(&self, first: u64, crcs: &[u32]) -> Result<()> {
        let mut raw = Vec::with_capacity(crcs.len() * 4);
        for c in crcs {
            raw.extend_from_slice(&(c ^ self.key).to_le_bytes());
        }
        self.crc.write_all_at(&raw, first * 4)?;
        Ok(())
    }

    fn block_crc_from_disk(&self, start: u64, end: u64) -> Result<u32> {
        let mut buf = vec![0u8; (end - start) as usize];
        self.data.read_exact_at(&mut buf, start)?;
        Ok(crc32c::crc32c(&buf))
    }

    /// Recompute the crcs of blocks `[b0, b1)` for an object now `size`
    /// long, where `[gap0, gap1)` is known to be zeros (a hole just made)
    /// and `known(b)` may supply a crc for a block wholly rewritten.
    ///
    /// With keyed crcs, the whole blocks of a large gap get no entries
    /// written: the sidecar gets a hole there (punched where it had
    /// entries, grown past its end), which reads as the zero block's crc.
    pub(super) fn refresh_crcs(
        &self,
        b0: u64,
        b1: u64,
        size: u64,
        gap: (u64, u64),
        known: impl Fn(u64, u64, u64) -> Option<u32>,
    ) -> Result<()> {
        let z0 = gap.0.div_ceil(CRC_BLOCK).clamp(b0, b1);
        let z1 = (gap.1.min(size) / CRC_BLOCK).clamp(z0, b1);
        if self.key != zero_block_crc() || z1 - z0 < SPARSE_CRC_MIN {
            return self.write_crc_range(b0, b1, size, gap, &known);
        }
        self.write_crc_range(b0, z0, size, gap, &known)?;
        let had = self.crc.metadata()?.len();
        if had > z0 * 4 {
            let n = had.min(z1 * 4) - z0 * 4;
            if fallocate(&self.crc, libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, z0 * 4, n).is_err() {
                // No holes here: zero entries written out.
                self.write_crc_range(z0, had.min(z1 * 4) / 4, size, gap, &known)?;
            }
        }
        if had < z1 * 4 {
            self.crc.set_len(z1 * 4)?;
        }
        self.write_crc_range(z1, b1, size, gap, &known)
    }

    /// `refresh_crcs` for `[b0, b1)`, every entry written.
    fn write_crc_range(
        &self,
        b0: u64,
        b1: u64,
        size: u64,
        gap: (u64, u64),
        known: &impl Fn(u64, u64, u64) -> Option<u32>,
    ) -> Result<()> {
        let mut first = b0;
        while first < b1 {
            let last = (first + CRC_BATCH).min(b1);
            let mut out = Vec::with_capacity((last - first) as usize);
            for b in first..last {
                let start = b * CRC_BLOCK;
                let end = ((b + 1) * CRC_BLOCK).min(size);
                let crc = if let Some(c) = known(b, start, end) {
                    c
                } else if start >= gap.0 && end <= gap.1 {
                    crc_of_zeros(end - start)
                } else {
                    self.block_crc_from_disk(start, end)?
                };
                out.push(crc);
            }
            self.write_crcs(first, &out)?;
            first = last;
        }
        Ok(())
    }
}

/// `fallocate(2)` of `[off, off + len)` with `mode`'s flags.
pub(super) fn fallocate(f: &File, mode: libc::c_int, off: u64, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let (Ok(o), Ok(l)) = (libc::off_t::try_from(off), libc::off_t::try_from(len)) else {
        return Err(std::io::Error::from_raw_os_error(libc::EFBIG));
    };
    // SAFETY: fallocate on a descriptor this `File` owns; no memory is
    // passed.
    match unsafe { libc::fallocate(f.as_raw_fd(), mode, o, l) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

pub(super) fn zero_block_crc() -> u32 {
    static C: OnceLock<u32> = OnceLock::new();
    *C.get_or_init(|| crc32c::crc32c(&vec![0u8; CRC_BLOCK as usize]))
}

fn crc_of_zeros(len: u64) -> u32 {
    if len == CRC_BLOCK {
        return zero_block_crc();
    }
    crc32c::crc32c(&vec![0u8; len as usize])
}

pub(super) fn blocks_for(size: u64) -> u64 {
    size.div_ceil(CRC_BLOCK)
}

