//! Striping math, pure. RAID-0 as in Lustre (DESIGN.md, "Data"): stripe unit
//! `u = off / stripe_size` lives in object `u % stripe_count` at object offset
//! `(u / stripe_count) * stripe_size + off % stripe_size`. Object `i` is kept
//! on the `replicas` OSDs `osds[i * replicas .. (i + 1) * replicas]`.
use crate::error::{Error, Result};
use crate::ids::OsdId;
use rkyv::{Archive, Deserialize, Serialize};

/// Smallest stripe unit: one checksum block, so every unit holds whole blocks.
pub const MIN_STRIPE_SIZE: u32 = 64 * 1024;
/// Largest stripe unit. Units are the client's write-behind granule and are
/// held in memory whole, so 64 MiB bounds one file's buffer at a sane size.
pub const MAX_STRIPE_SIZE: u32 = 64 * 1024 * 1024;
/// Most objects one file may be striped over.
pub const MAX_STRIPE_COUNT: u32 = 256;
/// Most copies of an object.
pub const MAX_REPLICAS: u32 = 8;

/// A directory's default layout: what new files below it get.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
#[rkyv(derive(Debug))]
pub struct LayoutPolicy {
    pub stripe_size: u32,
    pub stripe_count: u32,
    pub replicas: u32,
}

impl Default for LayoutPolicy {
    /// 1 MiB units (one FUSE write) over 3 OSDs, one copy: a checkpoint's
    /// sequential write keeps three OSDs busy with whole-unit writes.
    fn default() -> Self {
        LayoutPolicy { stripe_size: 1 << 20, stripe_count: 3, replicas: 1 }
    }
}

impl LayoutPolicy {
    pub fn validate(&self) -> Result<()> {
        if self.stripe_size < MIN_STRIPE_SIZE
            || self.stripe_size > MAX_STRIPE_SIZE
            || self.stripe_size % MIN_STRIPE_SIZE != 0
        {
            return Err(Error::InvalidArgument(format!(
                "stripe size {} must be a multiple of {} between {} and {}",
                self.stripe_size, MIN_STRIPE_SIZE, MIN_STRIPE_SIZE, MAX_STRIPE_SIZE
            )));
        }
        if self.stripe_count == 0 || self.stripe_count > MAX_STRIPE_COUNT {
            return Err(Error::InvalidArgument(format!(
                "stripe count {} must be 1..={}",
                self.stripe_count, MAX_STRIPE_COUNT
            )));
        }
        if self.replicas == 0 || self.replicas > MAX_REPLICAS {
            return Err(Error::InvalidArgument(format!(
                "replicas {} must be 1..={}",
                self.replicas, MAX_REPLICAS
            )));
        }
        Ok(())
    }
}

/// A file's layout, fixed at create.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub struct Layout {
    pub stripe_size: u32,
    pub stripe_count: u32,
    pub replicas: u32,
    /// `stripe_count * replicas` OSDs, object-major.
    pub osds: Vec<OsdId>,
}

/// A piece of a file range that falls in one stripe unit of one object.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Extent {
    pub object: u32,
    pub obj_off: u64,
    pub file_off: u64,
    pub len: u64,
}

impl Layout {
    pub fn policy(&self) -> LayoutPolicy {
        LayoutPolicy {
            stripe_size: self.stripe_size,
            stripe_count: self.stripe_count,
            replicas: self.replicas,
        }
    }

    pub fn validate(&self) -> Result<()> {
        self.policy().validate()?;
        if self.osds.len() as u64 != self.stripe_count as u64 * self.replicas as u64 {
            return Err(Error::InvalidArgument("layout OSD list does not match stripe count x replicas".into()));
        }
        Ok(())
    }

    fn su(&self) -> u64 {
        self.stripe_size as u64
    }

    /// Where file byte `off` lives: (object, offset in object).
    pub fn locate(&self, off: u64) -> (u32, u64) {
        let su = self.su();
        let count = self.stripe_count as u64;
        let unit = off / su;
        ((unit % count) as u32, (unit / count) * su + off % su)
    }

    /// The file offset of byte `obj_off` of object `object`: inverse of `locate`.
    pub fn file_offset(&self, object: u32, obj_off: u64) -> u64 {
        let su = self.su();
        let count = self.stripe_count as u64;
        let row = obj_off / su;
        (row * count + object as u64) * su + obj_off % su
    }

    /// Stripe unit holding file byte `off`.
    pub fn unit_of(&self, off: u64) -> u64 {
        off / self.su()
    }

    /// File range `[start, end)` of stripe unit `unit`.
    pub fn unit_range(&self, unit: u64) -> (u64, u64) {
        let su = self.su();
        (unit * su, unit * su + su)
    }

    /// Split `[off, off + len)` at stripe-unit boundaries, in file order.
    pub fn extents(&self, off: u64, len: u64) -> Vec<Extent> {
        let su = self.su();
        let mut out = Vec::with_capacity((len / su + 2) as usize);
        let end = off.saturating_add(len);
        let mut pos = off;
        while pos < end {
            let unit_end = (pos / su + 1) * su;
            let piece = unit_end.min(end) - pos;
            let (object, obj_off) = self.locate(pos);
            out.push(Extent { object, obj_off, file_off: pos, len: piece });
            pos += piece;
        }
        out
    }

    /// Size object `object` has when the file is `file_size` bytes long and
    /// fully written: what a truncate leaves in each object.
    pub fn object_size(&self, file_size: u64, object: u32) -> u64 {
        let su = self.su();
        let count = self.stripe_count as u64;
        let full_units = file_size / su;
        let rem = file_size % su;
        let k = object as u64;
        let mut units = full_units / count;
        if k < full_units % count {
            units += 1;
        }
        let mut size = units * su;
        if rem > 0 && full_units % count == k {
            size += rem;
        }
        size
    }

    /// The part of `[off, off + len)` in each object: (object, object
    /// offset, length). A file range is one range in each object it
    /// touches, since an object holds its units in file order.
    pub fn object_ranges(&self, off: u64, len: u64) -> Vec<(u32, u64, u64)> {
        let Some(last) = off.checked_add(len).and_then(|e| e.checked_sub(1)).filter(|_| len > 0) else {
            return Vec::new();
        };
        let (su, count) = (self.su(), self.stripe_count as u64);
        let (u0, u1) = (off / su, last / su);
        let mut out = Vec::with_capacity(count.min(u1 - u0 + 1) as usize);
        for k in 0..count {
            // This object's first and last units in [u0, u1].
            let first = u0 + (k + count - u0 % count) % count;
            if first > u1 {
                continue;
            }
            let end_unit = u1 - (u1 % count + count - k) % count;
            let start = if first == u0 { self.locate(off).1 } else { first / count * su };
            let end = if end_unit == u1 { self.locate(last).1 + 1 } else { end_unit / count * su + su };
            out.push((k as u32, start, end - start));
        }
        out
    }

    /// The OSDs holding object `object`, first replica first.
    pub fn object_osds(&self, object: u32) -> &[OsdId] {
        let r = self.replicas as usize;
        let start = object as usize * r;
        self.osds.get(start..start + r).unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn layout(su_blocks: u32, count: u32) -> Layout {
        Layout {
            stripe_size: su_blocks * MIN_STRIPE_SIZE,
            stripe_count: count,
            replicas: 1,
            osds: (0..count).map(OsdId).collect(),
        }
    }

    proptest! {
        #[test]
        fn locate_round_trips(su in 1u32..32, count in 1u32..9, off in 0u64..(1u64 << 40)) {
            let l = layout(su, count);
            let (obj, obj_off) = l.locate(off);
            prop_assert!(obj < count);
            prop_assert_eq!(l.file_offset(obj, obj_off), off);
        }

        #[test]
        fn object_ranges_cover_what_the_extents_put_in_each_object(su in 1u32..8, count in 1u32..6, off in 0u64..(1 << 26), len in 0u64..(1 << 24)) {
            let l = layout(su, count);
            let mut want: std::collections::BTreeMap<u32, (u64, u64)> = Default::default();
            for e in l.extents(off, len) {
                let r = want.entry(e.object).or_insert((e.obj_off, e.obj_off));
                prop_assert_eq!(r.1, e.obj_off, "an object's part is contiguous");
                r.1 = e.obj_off + e.len;
            }
            let want: Vec<(u32, u64, u64)> = want.into_iter().map(|(k, (s, e))| (k, s, e - s)).collect();
            prop_assert_eq!(l.object_ranges(off, len), want);
        }

        #[test]
        fn extents_tile_the_range(su in 1u32..8, count in 1u32..6, off in 0u64..(1 << 26), len in 0u64..(1 << 24)) {
            let l = layout(su, count);
            let ext = l.extents(off, len);
            let mut pos = off;
            for e in &ext {
                prop_assert_eq!(e.file_off, pos, "gap or overlap");
                prop_assert!(e.len > 0);
                // every byte of the extent maps back to the same file offsets
                prop_assert_eq!(l.file_offset(e.object, e.obj_off), e.file_off);
                prop_assert_eq!(l.file_offset(e.object, e.obj_off + e.len - 1), e.file_off + e.len - 1);
                // and stays inside one stripe unit
                prop_assert_eq!(l.unit_of(e.file_off), l.unit_of(e.file_off + e.len - 1));
                pos += e.len;
            }
            prop_assert_eq!(pos, off + len);
        }

        #[test]
        fn object_sizes_sum_to_file_size(su in 1u32..8, count in 1u32..6, size in 0u64..(1 << 28)) {
            let l = layout(su, count);
            let total: u64 = (0..count).map(|k| l.object_size(size, k)).sum();
            prop_assert_eq!(total, size);
            // the last byte of the file lies inside its object's size
            if size > 0 {
                let (obj, obj_off) = l.locate(size - 1);
                prop_assert_eq!(l.object_size(size, obj), obj_off + 1);
            }
        }
    }

    #[test]
    fn lustre_example() {
        // 1 MiB units over 3 objects: unit 4 goes to object 1, second row.
        let l = layout(16, 3);
        assert_eq!(l.locate(4 << 20), (1, 1 << 20));
        assert_eq!(l.locate((4 << 20) + 5), (1, (1 << 20) + 5));
    }

    #[test]
    fn policy_rejects_bad_values() {
        let mut p = LayoutPolicy::default();
        p.stripe_size = 1000;
        assert!(p.validate().is_err());
        p = LayoutPolicy { stripe_count: 0, ..LayoutPolicy::default() };
        assert!(p.validate().is_err());
        p = LayoutPolicy { replicas: 0, ..LayoutPolicy::default() };
        assert!(p.validate().is_err());
        assert!(LayoutPolicy::default().validate().is_ok());
    }
}
