//! Test data as a function of (seed, offset): any range can be generated
//! or checked without keeping a copy.

use aifs_common::ids::mix;

/// Fill `buf` with the pattern bytes of `[off, off + buf.len())`.
pub fn fill(seed: u64, off: u64, buf: &mut [u8]) {
    let mut i = 0;
    while i < buf.len() {
        let pos = off + i as u64;
        let word = mix(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (pos / 8));
        let bytes = word.to_le_bytes();
        let k = (pos % 8) as usize;
        let n = (8 - k).min(buf.len() - i);
        buf[i..i + n].copy_from_slice(&bytes[k..k + n]);
        i += n;
    }
}

pub fn bytes(seed: u64, off: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    fill(seed, off, &mut v);
    v
}

/// Where the file at `path` first differs from `len` bytes of the pattern
/// of `seed` (its length counts), read in pieces: `None` when it is the
/// same. For files too large to hold twice in memory.
pub fn first_difference(path: &std::path::Path, seed: u64, len: u64) -> std::io::Result<Option<u64>> {
    use std::io::Read;
    const PIECE: usize = 8 << 20;
    let mut f = std::fs::File::open(path)?;
    let (mut got, mut want) = (vec![0u8; PIECE], vec![0u8; PIECE]);
    let mut off = 0u64;
    loop {
        let n = f.read(&mut got)?;
        if n == 0 {
            return Ok((off != len).then_some(off));
        }
        let want_n = (len.saturating_sub(off) as usize).min(n);
        fill(seed, off, &mut want[..want_n]);
        if let Some(i) = (0..n).find(|&i| i >= want_n || got[i] != want[i]) {
            return Ok(Some(off + i as u64));
        }
        off += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_slice_matches_the_whole() {
        let whole = bytes(7, 0, 1000);
        for off in [0usize, 1, 7, 8, 9, 500] {
            assert_eq!(bytes(7, off as u64, 100), whole[off..off + 100].to_vec());
        }
        assert_ne!(bytes(7, 0, 64), bytes(8, 0, 64));
    }
}
