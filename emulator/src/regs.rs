//! Registers described as data.
//!
//! Each register is described once ([`RegSpec`]: offset, width, reset value,
//! read-write, write-1-to-clear, read-only and write-only bits); a
//! [`RegFile`] holds the values and applies the masks, and returns a
//! [`RegWrite`] that the model's `on_<reg>_write` hook acts on. Unknown
//! offsets read as zero and ignore writes, and are counted.
//!
//! 32-bit accesses to either half of a 64-bit register are supported, as
//! both VT-d (10.2: software may access 64-bit registers as two 32-bit
//! halves) and the SMMU (IHI 0070 6.2: 64-bit registers are 32-bit
//! accessible) allow.

use std::sync::atomic::{AtomicU64, Ordering};

/// One register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegSpec {
    /// Name as in the spec (for logs).
    pub name: &'static str,
    /// Byte offset in the register page.
    pub offset: u64,
    /// Width in bytes: 4 or 8.
    pub width: u8,
    /// Value after reset.
    pub reset: u64,
    /// Bits software may write (plain read-write).
    pub rw: u64,
    /// Bits cleared by writing 1 (RW1C).
    pub w1c: u64,
    /// Bits software may write that always read as zero (write-only
    /// commands such as GCMD bits, or doorbells).
    pub wo: u64,
}

impl RegSpec {
    /// A read-only register with `reset` value (like CAP/ECAP/IDRn).
    pub const fn ro(name: &'static str, offset: u64, width: u8, reset: u64) -> Self {
        RegSpec {
            name,
            offset,
            width,
            reset,
            rw: 0,
            w1c: 0,
            wo: 0,
        }
    }

    /// A register with read-write bits `rw` and reset value 0.
    pub const fn rw(name: &'static str, offset: u64, width: u8, rw: u64) -> Self {
        RegSpec {
            name,
            offset,
            width,
            reset: 0,
            rw,
            w1c: 0,
            wo: 0,
        }
    }

    /// With write-1-to-clear bits.
    #[must_use]
    pub const fn with_w1c(mut self, w1c: u64) -> Self {
        self.w1c = w1c;
        self
    }

    /// With write-only bits.
    #[must_use]
    pub const fn with_wo(mut self, wo: u64) -> Self {
        self.wo = wo;
        self
    }

    /// With a reset value.
    #[must_use]
    pub const fn with_reset(mut self, reset: u64) -> Self {
        self.reset = reset;
        self
    }
}

/// The effect of a guest write, for the model's side-effect hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegWrite {
    /// Index of the register in the file's spec table.
    pub index: usize,
    /// Offset of the register (not of the access).
    pub offset: u64,
    /// Value before the write.
    pub old: u64,
    /// Value after the write (what reads will now return).
    pub new: u64,
    /// The written bits, positioned in the full register, including
    /// write-only bits (which are not stored); for a half access the other
    /// half is zero.
    pub written: u64,
    /// Mask of the bits the access covered.
    pub access_mask: u64,
}

/// Register values plus counters of accesses to unknown offsets.
#[derive(Debug)]
pub struct RegFile {
    specs: &'static [RegSpec],
    values: Vec<u64>,
    unknown_reads: AtomicU64,
    unknown_writes: AtomicU64,
}

impl RegFile {
    /// A file of `specs`, every register at its reset value.
    pub fn new(specs: &'static [RegSpec]) -> Self {
        RegFile {
            specs,
            values: specs.iter().map(|s| s.reset).collect(),
            unknown_reads: AtomicU64::new(0),
            unknown_writes: AtomicU64::new(0),
        }
    }

    /// Back to reset values.
    pub fn reset(&mut self) {
        for (v, s) in self.values.iter_mut().zip(self.specs) {
            *v = s.reset;
        }
    }

    /// Find the register and the half-shift for an access.
    fn locate(&self, offset: u64, size: u8) -> Option<(usize, u32, u64)> {
        self.specs.iter().enumerate().find_map(|(i, s)| {
            let mask = |bytes: u8| -> u64 {
                if bytes >= 8 {
                    u64::MAX
                } else {
                    (1u64 << (u32::from(bytes) * 8)).wrapping_sub(1)
                }
            };
            if offset == s.offset && size == s.width {
                Some((i, 0, mask(size)))
            } else if s.width == 8 && size == 4 && offset == s.offset {
                Some((i, 0, mask(4)))
            } else if s.width == 8 && size == 4 && Some(offset) == s.offset.checked_add(4) {
                Some((i, 32, mask(4) << 32))
            } else {
                None
            }
        })
    }

    /// Index of the register at `offset`.
    pub fn index_of(&self, offset: u64) -> Option<usize> {
        self.specs.iter().position(|s| s.offset == offset)
    }

    /// Read `size` (4 or 8) bytes at `offset`. Unknown offsets and
    /// unsupported sizes read as zero and are counted.
    pub fn read(&self, offset: u64, size: u8) -> u64 {
        match self.locate(offset, size) {
            Some((i, shift, mask)) => {
                let spec = self.specs.get(i);
                let v = self.values.get(i).copied().unwrap_or(0);
                let wo = spec.map_or(0, |s| s.wo);
                ((v & !wo) & mask) >> shift
            }
            None => {
                self.unknown_reads.fetch_add(1, Ordering::Relaxed);
                0
            }
        }
    }

    /// Write `value` (`size` bytes) at `offset`, applying the masks.
    /// Returns `None` (and counts it) for unknown offsets.
    pub fn write(&mut self, offset: u64, size: u8, value: u64) -> Option<RegWrite> {
        let Some((i, shift, access_mask)) = self.locate(offset, size) else {
            self.unknown_writes.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let spec = *self.specs.get(i)?;
        let written = value.checked_shl(shift).unwrap_or(0) & access_mask;
        let old = *self.values.get(i)?;
        let rw = spec.rw & access_mask;
        let w1c = spec.w1c & access_mask;
        let mut new = (old & !rw) | (written & rw);
        new &= !(written & w1c);
        new &= !spec.wo;
        if let Some(slot) = self.values.get_mut(i) {
            *slot = new;
        }
        Some(RegWrite {
            index: i,
            offset: spec.offset,
            old,
            new,
            written,
            access_mask,
        })
    }

    /// Current value of the register at index `i` (0 when out of range).
    pub fn get(&self, i: usize) -> u64 {
        self.values.get(i).copied().unwrap_or(0)
    }

    /// Current value of the register at `offset` (0 when unknown).
    pub fn value(&self, offset: u64) -> u64 {
        self.index_of(offset).map_or(0, |i| self.get(i))
    }

    /// Set a register's value from the model side (status bits, hardware
    /// pointers), bypassing the guest masks.
    pub fn set(&mut self, offset: u64, value: u64) {
        if let Some(slot) = self.index_of(offset).and_then(|i| self.values.get_mut(i)) {
            *slot = value;
        }
    }

    /// Set bits from the model side.
    pub fn set_bits(&mut self, offset: u64, bits: u64) {
        let v = self.value(offset);
        self.set(offset, v | bits);
    }

    /// Clear bits from the model side.
    pub fn clear_bits(&mut self, offset: u64, bits: u64) {
        let v = self.value(offset);
        self.set(offset, v & !bits);
    }

    /// The spec table.
    pub fn specs(&self) -> &'static [RegSpec] {
        self.specs
    }

    /// Accesses to unknown offsets so far: (reads, writes).
    pub fn unknown_accesses(&self) -> (u64, u64) {
        (
            self.unknown_reads.load(Ordering::Relaxed),
            self.unknown_writes.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static SPECS: &[RegSpec] = &[
        RegSpec::ro("CAP", 0x08, 8, 0x1234_5678_9abc_def0),
        RegSpec::rw("CTRL", 0x10, 4, 0xff).with_wo(0xf0),
        RegSpec::rw("STS", 0x18, 4, 0x0f)
            .with_w1c(0xf0)
            .with_reset(0xf3),
        RegSpec::rw("BASE", 0x20, 8, !0xfff),
    ];

    #[test]
    fn regs_read_only_ignores_writes() {
        let mut f = RegFile::new(SPECS);
        f.write(0x08, 8, 0);
        assert_eq!(f.read(0x08, 8), 0x1234_5678_9abc_def0);
    }

    #[test]
    fn regs_write_only_bits_read_as_zero_but_are_reported() {
        let mut f = RegFile::new(SPECS);
        let w = f.write(0x10, 4, 0xff).unwrap();
        assert_eq!(w.written & 0xf0, 0xf0);
        assert_eq!(f.read(0x10, 4), 0x0f);
    }

    #[test]
    fn regs_w1c_clears_only_written_ones() {
        let mut f = RegFile::new(SPECS);
        assert_eq!(f.read(0x18, 4), 0xf3);
        f.write(0x18, 4, 0x33); // keep the RW low bits, clear 0x30
        assert_eq!(f.read(0x18, 4), 0xc3);
    }

    #[test]
    fn regs_half_access_to_64bit_register() {
        let mut f = RegFile::new(SPECS);
        f.write(0x20, 4, 0xdead_b123);
        f.write(0x24, 4, 0x0000_0012);
        assert_eq!(f.read(0x20, 8), 0x0000_0012_dead_b000);
        assert_eq!(f.read(0x24, 4), 0x12);
        assert_eq!(f.read(0x0c, 4), 0x1234_5678);
    }

    #[test]
    fn regs_unknown_offset_reads_zero_and_is_counted() {
        let mut f = RegFile::new(SPECS);
        assert_eq!(f.read(0x100, 4), 0);
        assert!(f.write(0x100, 4, 1).is_none());
        assert!(f.write(0x10, 2, 1).is_none());
        assert_eq!(f.unknown_accesses(), (1, 2));
    }
}
