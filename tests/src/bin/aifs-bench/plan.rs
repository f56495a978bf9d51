//! What a checkpoint file looks like to the file system: the writes a
//! serializer emits and the tensor ranges a loader reads back, made from a
//! seed so that the writer, the loaders and the checks agree without
//! sharing anything but `(seed, bytes)`.
//!
//! A rank file is laid out as `torch.save` and `torch.distributed.checkpoint`
//! lay theirs out: a small file header, then per tensor a small record
//! header (name, dtype, shape) and the tensor's bytes, then an index at the
//! end. Tensor sizes are a mix: many small ones (biases, norms, scalars,
//! 4 B to 64 KiB), medium ones (1-D and small 2-D weights, 64 KiB to
//! 8 MiB) and large ones (embeddings, MLP weights, 8 to 128 MiB), drawn
//! log-uniformly in each class. A 1 GiB file holds about a hundred tensors.
use aifs_common::ids::mix;

pub const MAX_TENSOR: u64 = 128 << 20;

/// One rank file.
pub struct Plan {
    /// Every write, in the order the serializer emits it: (offset, length).
    pub writes: Vec<(u64, u64)>,
    /// The tensors' data ranges, in file order.
    pub tensors: Vec<(u64, u64)>,
    pub size: u64,
}

/// A number in `[0, 1)` from `(seed, i)`.
fn unit(seed: u64, i: u64) -> f64 {
    (mix(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i) >> 11) as f64 / (1u64 << 53) as f64
}

fn log_uniform(u: f64, lo: u64, hi: u64) -> u64 {
    let (a, b) = ((lo as f64).ln(), (hi as f64).ln());
    (a + u * (b - a)).exp() as u64
}

/// The size of tensor `i`.
fn tensor_size(seed: u64, i: u64) -> u64 {
    let class = unit(seed, 3 * i);
    let u = unit(seed, 3 * i + 1);
    if class < 0.45 {
        log_uniform(u, 4, 64 << 10)
    } else if class < 0.80 {
        log_uniform(u, 64 << 10, 8 << 20)
    } else {
        log_uniform(u, 8 << 20, MAX_TENSOR)
    }
}

/// Record header size of tensor `i`: a name, a dtype, a shape.
fn header_size(seed: u64, i: u64) -> u64 {
    30 + (unit(seed, 3 * i + 2) * 90.0) as u64
}

impl Plan {
    /// A rank file of about `bytes` bytes (the tensors fill it; headers
    /// and the index come on top).
    pub fn new(seed: u64, bytes: u64) -> Plan {
        let mut writes = vec![(0, 64)];
        let mut tensors = Vec::new();
        let mut off = 64;
        let mut data = 0;
        let mut i = 0;
        while data < bytes {
            let h = header_size(seed, i);
            writes.push((off, h));
            off += h;
            let n = tensor_size(seed, i).min(bytes - data).max(1);
            writes.push((off, n));
            tensors.push((off, n));
            off += n;
            data += n;
            i += 1;
        }
        let index = 50 * tensors.len() as u64;
        writes.push((off, index));
        Plan { writes, tensors, size: off + index }
    }
}

/// `0..n` shuffled (Fisher-Yates) by `seed`.
pub fn shuffle(n: usize, seed: u64) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (mix(seed ^ (i as u64).wrapping_mul(0xA24B_AED4_963E_E407)) % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    v
}

/// The stamp at the start of tensor `i` of the file of `seed`: a loader
/// that reads the wrong range sees another.
pub fn stamp(seed: u64, i: usize) -> [u8; 8] {
    mix(seed << 20 ^ i as u64).to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_tile_the_file_and_tensors_are_among_them() {
        for seed in 0..20 {
            let p = Plan::new(seed, 256 << 20);
            let mut at = 0;
            for &(o, n) in &p.writes {
                assert_eq!(o, at);
                at += n;
            }
            assert_eq!(at, p.size);
            let data: u64 = p.tensors.iter().map(|t| t.1).sum();
            assert_eq!(data, 256 << 20);
            assert!(p.tensors.iter().all(|t| p.writes.contains(t) && t.1 <= MAX_TENSOR));
            let mut s = shuffle(p.tensors.len(), seed);
            s.sort_unstable();
            assert_eq!(s, (0..p.tensors.len()).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_gib_holds_about_a_hundred_tensors_from_bytes_to_large() {
        let p = Plan::new(1, 1 << 30);
        assert!((30..400).contains(&p.tensors.len()), "{} tensors", p.tensors.len());
        assert!(p.tensors.iter().any(|t| t.1 < 4096));
        assert!(p.tensors.iter().any(|t| t.1 > 8 << 20));
    }
}
