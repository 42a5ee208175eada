//! Builder for x86-64 first-level and VT-d second-level page tables in [`super::FakeRam`].
//!
//! ```
//! use iommu_emulator::testing::FakeRam;
//! use iommu_emulator::testing::x86_pt::{Format, X86PageTable};
//! use iommu_emulator::{PageSize, Perm};
//!
//! let ram = FakeRam::new(1 << 30);
//! let pt = X86PageTable::new(&ram, Format::SecondLevel { levels: 4 });
//! pt.map(0x1000, 0x20_0000, PageSize::SIZE_4K, Perm::RW).unwrap();
//! let root = pt.root(); // SLPTPTR / FLPTPTR for a context or PASID entry
//! # let _ = root;
//! ```
//!
//! First-level mappings are user-accessible (U/S=1 at every level), writable
//! when `perm` has W, and carry XD when `perm` lacks X. Non-leaf entries
//! grant everything (first level: P|R/W|U/S; second level: R|W|X). A/D bits
//! start clear. Tables come from the RAM's page allocator
//! ([`FakeRam::alloc_pages`]).

use super::FakeRam;
use crate::mem::GuestRam;
use crate::types::{Gpa, PageSize, Perm};
use crate::walk::x86::{ADDR_MASK, fl, sl};

/// Which table format to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// x86-64 IA-32e paging (VT-d first level), 4 or 5 levels.
    FirstLevel {
        /// 4 or 5.
        levels: u8,
    },
    /// VT-d second-level paging, 3, 4 or 5 levels.
    SecondLevel {
        /// 3, 4 or 5.
        levels: u8,
    },
}

impl Format {
    /// Number of levels.
    pub const fn levels(self) -> u8 {
        match self {
            Format::FirstLevel { levels } | Format::SecondLevel { levels } => levels,
        }
    }
}

/// Why a builder operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The fake RAM's page allocator is exhausted.
    #[error("fake RAM exhausted")]
    OutOfMemory,
    /// Address or size not supported by the format (misaligned, 1G with a
    /// second-level table of fewer levels, ...).
    #[error("bad address or page size")]
    BadArgument,
    /// A larger or smaller mapping already covers the range.
    #[error("conflicting mapping at level {0}")]
    Conflict(u8),
    /// Nothing is mapped there.
    #[error("not mapped")]
    NotMapped,
    /// A guest-RAM access failed.
    #[error("RAM access failed")]
    Ram,
}

/// A page table under construction in a [`FakeRam`].
#[derive(Debug)]
pub struct X86PageTable<'a> {
    ram: &'a FakeRam,
    format: Format,
    root: Gpa,
}

fn shift(level: u8) -> u32 {
    12u32.saturating_add(9u32.saturating_mul(u32::from(level.saturating_sub(1))))
}

fn idx(iova: u64, level: u8) -> u64 {
    iova.checked_shr(shift(level)).unwrap_or(0) & 0x1ff
}

impl<'a> X86PageTable<'a> {
    /// An empty table (one zeroed root page).
    ///
    /// # Panics
    /// When `ram` has no free page left or `format` has an unsupported level
    /// count (test helper only).
    #[allow(clippy::panic)]
    pub fn new(ram: &'a FakeRam, format: Format) -> Self {
        let ok = match format {
            Format::FirstLevel { levels } => matches!(levels, 4 | 5),
            Format::SecondLevel { levels } => matches!(levels, 3..=5),
        };
        if !ok {
            panic!("unsupported format {format:?}");
        }
        let Some(root) = ram.alloc_pages(1) else {
            panic!("fake RAM exhausted");
        };
        X86PageTable { ram, format, root }
    }

    /// Root table address (for SLPTPTR / FLPTPTR).
    pub fn root(&self) -> Gpa {
        self.root
    }

    /// The format.
    pub fn format(&self) -> Format {
        self.format
    }

    fn nonleaf_bits(&self) -> u64 {
        match self.format {
            Format::FirstLevel { .. } => fl::P | fl::RW | fl::US,
            Format::SecondLevel { .. } => sl::R | sl::W | sl::X,
        }
    }

    fn present(&self, e: u64) -> bool {
        match self.format {
            Format::FirstLevel { .. } => e & fl::P != 0,
            Format::SecondLevel { .. } => e & (sl::R | sl::W | sl::X) != 0,
        }
    }

    fn ps_bit(&self) -> u64 {
        match self.format {
            Format::FirstLevel { .. } => fl::PS,
            Format::SecondLevel { .. } => sl::PS,
        }
    }

    /// Leaf bits for `perm` (without address).
    fn leaf_bits(&self, perm: Perm, large: bool) -> u64 {
        match self.format {
            Format::FirstLevel { .. } => {
                let mut b = fl::P | fl::US;
                if perm.contains(Perm::W) {
                    b |= fl::RW;
                }
                if !perm.contains(Perm::X) {
                    b |= fl::XD;
                }
                if large {
                    b |= fl::PS;
                }
                b
            }
            Format::SecondLevel { .. } => {
                let mut b = 0;
                if perm.contains(Perm::R) {
                    b |= sl::R;
                }
                if perm.contains(Perm::W) {
                    b |= sl::W;
                }
                if perm.contains(Perm::X) {
                    b |= sl::X;
                }
                if large {
                    b |= sl::PS;
                }
                b
            }
        }
    }

    fn level_of(size: PageSize) -> Option<u8> {
        match size.shift() {
            12 => Some(1),
            21 => Some(2),
            30 => Some(3),
            _ => None,
        }
    }

    fn entry_addr(table: u64, iova: u64, level: u8) -> Gpa {
        Gpa(table.saturating_add(idx(iova, level).saturating_mul(8)))
    }

    fn read(&self, a: Gpa) -> Result<u64, BuildError> {
        self.ram.read_u64(a).map_err(|_| BuildError::Ram)
    }

    fn write(&self, a: Gpa, v: u64) -> Result<(), BuildError> {
        self.ram.write_u64(a, v).map_err(|_| BuildError::Ram)
    }

    /// Walk to the entry for `iova` at `level`, creating tables on the way
    /// when `create`.
    fn slot(&self, iova: u64, level: u8, create: bool) -> Result<Gpa, BuildError> {
        let mut table = self.root.0;
        let mut l = self.format.levels();
        while l > level {
            let a = Self::entry_addr(table, iova, l);
            let e = self.read(a)?;
            if self.present(e) {
                if e & self.ps_bit() != 0 && l <= 3 {
                    return Err(BuildError::Conflict(l));
                }
                table = e & ADDR_MASK;
            } else if create {
                let t = self.ram.alloc_pages(1).ok_or(BuildError::OutOfMemory)?;
                self.write(a, t.0 | self.nonleaf_bits())?;
                table = t.0;
            } else {
                return Err(BuildError::NotMapped);
            }
            l = l.saturating_sub(1);
        }
        Ok(Self::entry_addr(table, iova, level))
    }

    /// Map the page of `size` at `iova` to `gpa` with `perm`. Both must be
    /// aligned to `size`. An existing leaf of the same size is replaced.
    pub fn map(&self, iova: u64, gpa: u64, size: PageSize, perm: Perm) -> Result<(), BuildError> {
        let level = Self::level_of(size).ok_or(BuildError::BadArgument)?;
        if iova & size.offset_mask() != 0
            || gpa & size.offset_mask() != 0
            || level >= self.format.levels()
        {
            return Err(BuildError::BadArgument);
        }
        let a = self.slot(iova, level, true)?;
        let old = self.read(a)?;
        if level > 1 && self.present(old) && old & self.ps_bit() == 0 {
            return Err(BuildError::Conflict(level));
        }
        self.write(a, (gpa & ADDR_MASK) | self.leaf_bits(perm, level > 1))
    }

    /// Address of the leaf entry that maps `iova` (any page size).
    pub fn leaf_entry_addr(&self, iova: u64) -> Option<Gpa> {
        let mut table = self.root.0;
        let mut l = self.format.levels();
        loop {
            let a = Self::entry_addr(table, iova, l);
            let e = self.read(a).ok()?;
            if !self.present(e) {
                return None;
            }
            if l == 1 || (l <= 3 && e & self.ps_bit() != 0) {
                return Some(a);
            }
            table = e & ADDR_MASK;
            l = l.saturating_sub(1);
        }
    }

    /// Clear the leaf that maps `iova`. Returns whether there was one.
    pub fn unmap(&self, iova: u64) -> bool {
        match self.leaf_entry_addr(iova) {
            Some(a) => self.write(a, 0).is_ok(),
            None => false,
        }
    }

    /// Change the rights of the leaf that maps `iova`, keeping its address,
    /// size and A/D bits.
    pub fn set_perm(&self, iova: u64, perm: Perm) -> Result<(), BuildError> {
        let a = self.leaf_entry_addr(iova).ok_or(BuildError::NotMapped)?;
        let e = self.read(a)?;
        let large = e & self.ps_bit() != 0;
        let keep = match self.format {
            Format::FirstLevel { .. } => e & !(fl::RW | fl::XD | fl::P),
            Format::SecondLevel { .. } => e & !(sl::R | sl::W | sl::X),
        };
        let new = keep | self.leaf_bits(perm, large);
        self.write(a, new)
    }

    /// Set bits `set` and clear bits `clear` in the leaf that maps `iova`
    /// (for tests of reserved bits, U/S, A/D...).
    pub fn set_bits(&self, iova: u64, set: u64, clear: u64) -> Result<(), BuildError> {
        let a = self.leaf_entry_addr(iova).ok_or(BuildError::NotMapped)?;
        let e = self.read(a)?;
        self.write(a, (e & !clear) | set)
    }
}
