//! Builder for AArch64 VMSAv8-64 translation tables in [`super::FakeRam`] (SMMU stage 1 and stage 2).
//!
//! Lays out tables the way the walker in [`crate::walk::vmsa`] reads them
//! (Arm ARM D8.3): tables of one granule each, aligned to the granule; the
//! stage-2 start level concatenated when the configuration asks for it.

use super::FakeRam;
use crate::mem::GuestRam;
use crate::types::{Gpa, PageSize, Perm};
use crate::walk::vmsa::{ConfigError, Geometry, Stage, WalkConfig};

/// Leaf attributes for [`VmsaTables::map`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leaf {
    /// Rights: R/W become AP[2] (stage 1) or S2AP (stage 2); missing X sets
    /// UXN and PXN (stage 1) or XN (stage 2).
    pub perm: Perm,
    /// Stage 1: AP[1], accessible unprivileged (EL0).
    pub unpriv: bool,
    /// Access flag.
    pub af: bool,
    /// Stage 1: set PXN even when X is granted.
    pub pxn: bool,
    /// The contiguous hint.
    pub contiguous: bool,
}

impl Leaf {
    /// Read, write and execute, unprivileged accessible, AF set.
    pub const fn rw() -> Self {
        Leaf {
            perm: Perm::R.union(Perm::W).union(Perm::X),
            unpriv: true,
            af: true,
            pxn: false,
            contiguous: false,
        }
    }

    /// Read and execute only, unprivileged accessible, AF set.
    pub const fn ro() -> Self {
        Leaf {
            perm: Perm::R.union(Perm::X),
            ..Self::rw()
        }
    }
}

/// Builder errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The configuration is not valid.
    #[error("invalid walk configuration: {0}")]
    Config(#[from] ConfigError),
    /// FakeRam has no room for another table.
    #[error("out of fake RAM")]
    OutOfMemory,
    /// The page size is not a leaf size of this granule, or the addresses
    /// are not aligned to it, or the address is outside the input range.
    #[error("bad mapping {iova:#x} -> {pa:#x}")]
    BadMapping {
        /// Input address.
        iova: u64,
        /// Output address.
        pa: u64,
    },
    /// A block is in the way of a smaller mapping.
    #[error("a block already maps {0:#x}")]
    BlockInTheWay(u64),
    /// Nothing maps the address.
    #[error("{0:#x} is not mapped")]
    NotMapped(u64),
    /// A guest-RAM access failed.
    #[error("fake RAM access failed")]
    Mem,
}

/// A set of VMSA tables being built in fake RAM.
#[derive(Debug)]
pub struct VmsaTables<'a> {
    ram: &'a FakeRam,
    cfg: WalkConfig,
    geo: Geometry,
}

fn alloc_aligned(ram: &FakeRam, bytes: u64, align: u64) -> Result<u64, BuildError> {
    let align = align.max(4096);
    let pages = (bytes + align) / 4096 + 1;
    let base = ram.alloc_pages(pages).ok_or(BuildError::OutOfMemory)?.0;
    Ok((base + align - 1) & !(align - 1))
}

impl<'a> VmsaTables<'a> {
    /// Allocate an empty start-level table for `cfg` (its `ttb` is
    /// replaced by the new table's address).
    pub fn new(ram: &'a FakeRam, mut cfg: WalkConfig) -> Result<Self, BuildError> {
        let geo = cfg.geometry()?;
        let bytes = geo.start_table_bytes().max(1 << cfg.granule.shift());
        cfg.ttb = alloc_aligned(ram, bytes, bytes)?;
        Ok(VmsaTables { ram, cfg, geo })
    }

    /// The configuration to walk these tables with.
    pub fn config(&self) -> WalkConfig {
        self.cfg
    }

    /// The start-level geometry.
    pub fn geometry(&self) -> Geometry {
        self.geo
    }

    fn rd(&self, a: u64) -> Result<u64, BuildError> {
        self.ram.read_u64(Gpa(a)).map_err(|_| BuildError::Mem)
    }

    fn wr(&self, a: u64, v: u64) -> Result<(), BuildError> {
        self.ram.write_u64(Gpa(a), v).map_err(|_| BuildError::Mem)
    }

    fn entry_addr(&self, table: u64, level: u8, iova: u64) -> u64 {
        let g = self.cfg.granule;
        let bits = if level == self.geo.start_level {
            self.geo.start_bits
        } else {
            g.stride()
        };
        let idx = (iova >> g.level_shift(level)) & ((1u64 << bits) - 1);
        table + idx * 8
    }

    fn oa_mask(&self) -> u64 {
        ((1u64 << 52) - 1) & !((1u64 << self.cfg.granule.shift()) - 1)
    }

    /// Encode a leaf descriptor.
    pub fn leaf_descriptor(&self, pa: u64, level: u8, leaf: Leaf) -> u64 {
        let mut d = 1 | (pa & self.oa_mask()) | (3 << 8);
        if level == 3 {
            d |= 2;
        }
        if leaf.af {
            d |= 1 << 10;
        }
        if leaf.contiguous {
            d |= 1 << 52;
        }
        match self.cfg.stage {
            Stage::One => {
                if leaf.unpriv {
                    d |= 1 << 6;
                }
                if !leaf.perm.contains(Perm::W) {
                    d |= 1 << 7;
                }
                if !leaf.perm.contains(Perm::X) {
                    d |= (1 << 54) | (1 << 53);
                }
                if leaf.pxn {
                    d |= 1 << 53;
                }
            }
            Stage::Two => {
                d |= 0xf << 2; // MemAttr: normal write-back
                if leaf.perm.contains(Perm::R) {
                    d |= 1 << 6;
                }
                if leaf.perm.contains(Perm::W) {
                    d |= 1 << 7;
                }
                if !leaf.perm.contains(Perm::X) {
                    d |= 1 << 54;
                }
            }
        }
        d
    }

    fn level_for(&self, size: PageSize) -> Option<u8> {
        let g = self.cfg.granule;
        (self.geo.start_level..=3).find(|&l| {
            g.level_shift(l) == u32::from(size.shift()) && (l == 3 || g.block_allowed(l))
        })
    }

    /// Map `[iova, iova + size)` to `pa` with a page or block of `size`.
    /// Creates intermediate tables; replaces an existing leaf.
    pub fn map(
        &mut self,
        iova: u64,
        pa: u64,
        size: PageSize,
        leaf: Leaf,
    ) -> Result<(), BuildError> {
        let bad = BuildError::BadMapping { iova, pa };
        let level = self.level_for(size).ok_or(bad)?;
        if iova & size.offset_mask() != 0
            || pa & size.offset_mask() != 0
            || iova >> self.geo.ia_bits != 0
        {
            return Err(bad);
        }
        let g = self.cfg.granule;
        let mut table = self.cfg.ttb;
        for l in self.geo.start_level..level {
            let ea = self.entry_addr(table, l, iova);
            let d = self.rd(ea)?;
            table = if d & 1 == 0 {
                let t = alloc_aligned(self.ram, 1 << g.shift(), 1 << g.shift())?;
                self.wr(ea, t | 3)?;
                t
            } else if d & 2 == 0 {
                return Err(BuildError::BlockInTheWay(iova));
            } else {
                d & self.oa_mask()
            };
        }
        let ea = self.entry_addr(table, level, iova);
        self.wr(ea, self.leaf_descriptor(pa, level, leaf))
    }

    /// Address of the leaf descriptor that maps `iova`, if any.
    pub fn leaf_addr(&self, iova: u64) -> Option<u64> {
        let g = self.cfg.granule;
        let mut table = self.cfg.ttb;
        for l in self.geo.start_level..=3 {
            let ea = self.entry_addr(table, l, iova);
            let d = self.rd(ea).ok()?;
            if d & 1 == 0 {
                return None;
            }
            if l == 3 || d & 2 == 0 {
                return Some(ea);
            }
            table = d & ((1u64 << 48) - 1) & !((1u64 << g.shift()) - 1);
        }
        None
    }

    /// Remove the leaf that maps `iova` (intermediate tables stay).
    pub fn unmap(&mut self, iova: u64) -> Result<(), BuildError> {
        let ea = self.leaf_addr(iova).ok_or(BuildError::NotMapped(iova))?;
        self.wr(ea, 0)
    }

    /// Set or clear the access flag of the leaf that maps `iova`.
    pub fn set_af(&mut self, iova: u64, af: bool) -> Result<(), BuildError> {
        let ea = self.leaf_addr(iova).ok_or(BuildError::NotMapped(iova))?;
        let d = self.rd(ea)?;
        self.wr(ea, if af { d | (1 << 10) } else { d & !(1 << 10) })
    }

    /// Replace the attributes of the leaf that maps `iova`, keeping its
    /// output address and level.
    pub fn set_leaf(&mut self, iova: u64, leaf: Leaf) -> Result<(), BuildError> {
        let ea = self.leaf_addr(iova).ok_or(BuildError::NotMapped(iova))?;
        let d = self.rd(ea)?;
        let level = if d & 2 != 0 && self.is_level3(iova, ea) {
            3
        } else {
            2
        };
        let pa = d & self.oa_mask();
        let mut nd = self.leaf_descriptor(pa, level, leaf);
        // Keep the page/block type exactly as it was.
        nd = (nd & !2) | (d & 2);
        self.wr(ea, nd)
    }

    fn is_level3(&self, iova: u64, ea: u64) -> bool {
        // Walk again and compare the level-3 entry address.
        let g = self.cfg.granule;
        let mut table = self.cfg.ttb;
        for l in self.geo.start_level..=3 {
            let a = self.entry_addr(table, l, iova);
            if a == ea {
                return l == 3;
            }
            let Ok(d) = self.rd(a) else { return false };
            table = d & ((1u64 << 48) - 1) & !((1u64 << g.shift()) - 1);
        }
        false
    }
}
