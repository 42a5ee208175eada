//! The IOTLB and the paging-structure caches (VT-d 6.2.4, 6.2.5), as
//! instances of the core [`Cache`] engine.
//!
//! IOTLB entries are tagged by domain, PASID (requests without PASID use
//! the context's RID_PASID in scalable mode and 0 in legacy mode), page
//! number, page size and the request's privilege (first-level rights depend
//! on it). A lookup probes 4 KiB first, then 2 MiB and 1 GiB only when
//! entries of that size have ever been inserted.
//!
//! The paging-structure caches (one for first-level, one for second-level
//! tables) hold non-leaf entries tagged by domain, PASID, level and the
//! input-address bits that select them; each holds where a walk resumes
//! (the next table and the rights accumulated above it,
//! [`iommu_emulator::walk::x86::WalkStart`]). They are functional: a guest
//! that frees or changes a page table without the invalidation the spec
//! requires (6.5: IOTLB or PASID-based IOTLB invalidation with IH=0
//! covering the range) keeps walking the stale table, as on hardware.
//! Nested walks do not use them.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};

use iommu_emulator::cache::{CacheConfigError, Ticket};
use iommu_emulator::{Cache, CacheConfig, CacheTag, PageSize, Perm};

fn h(parts: &[u64]) -> u64 {
    parts.iter().fold(0xcbf2_9ce4_8422_2325u64, |acc, p| {
        (acc ^ p).wrapping_mul(0x0100_0000_01b3)
    })
}

/// IOTLB tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IotlbTag {
    /// Domain.
    pub did: u16,
    /// PASID (see the module docs).
    pub pasid: u32,
    /// Input address >> page shift.
    pub page: u64,
    /// log2 page size.
    pub shift: u8,
    /// Entry computed for a privileged request.
    pub privileged: bool,
}

impl CacheTag for IotlbTag {
    fn set_hash(&self) -> u64 {
        h(&[
            u64::from(self.did),
            u64::from(self.pasid),
            self.page,
            u64::from(self.shift),
        ])
    }
    fn addr_range(&self) -> Option<Range<u64>> {
        let start = self.page.checked_shl(u32::from(self.shift))?;
        let len = 1u64.checked_shl(u32::from(self.shift))?;
        Some(start..start.saturating_add(len))
    }
}

/// IOTLB entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IotlbEntry {
    /// Output page base.
    pub output: u64,
    /// Page size.
    pub size: PageSize,
    /// Rights.
    pub perm: Perm,
    /// Writes may use this entry without a walk (the dirty bit is already
    /// set, or the translation does not maintain dirty bits).
    pub dirty_ok: bool,
}

/// Which table a paging-structure cache entry belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stage {
    /// First-level tables.
    First,
    /// Second-level tables.
    Second,
}

/// Paging-structure cache tag: the entry at `level` selected by
/// `prefix` (input address >> level shift).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PwcTag {
    /// Domain.
    pub did: u16,
    /// PASID.
    pub pasid: u32,
    /// Level of the cached entry (2..=5).
    pub level: u8,
    /// Input-address bits that select the entry.
    pub prefix: u64,
}

impl PwcTag {
    /// Shift of the address bits that select an entry at `level`.
    pub fn shift(level: u8) -> u32 {
        12u32.saturating_add(9u32.saturating_mul(u32::from(level.saturating_sub(1))))
    }
}

impl CacheTag for PwcTag {
    fn set_hash(&self) -> u64 {
        h(&[
            u64::from(self.did),
            u64::from(self.pasid),
            u64::from(self.level),
            self.prefix,
        ])
    }
    fn addr_range(&self) -> Option<Range<u64>> {
        let s = Self::shift(self.level);
        let start = self.prefix.checked_shl(s)?;
        let len = 1u64.checked_shl(s)?;
        Some(start..start.saturating_add(len))
    }
}

/// The IOTLB plus large-page presence flags.
#[derive(Debug)]
pub struct Iotlb {
    /// The cache.
    pub cache: Cache<IotlbTag, IotlbEntry>,
    has_2m: AtomicBool,
    has_1g: AtomicBool,
}

impl Iotlb {
    /// An empty IOTLB.
    pub fn new(cfg: CacheConfig) -> Result<Self, CacheConfigError> {
        Ok(Iotlb {
            cache: Cache::new(cfg)?,
            has_2m: AtomicBool::new(false),
            has_1g: AtomicBool::new(false),
        })
    }

    /// Look up the page holding `iova`.
    #[inline(always)]
    pub fn lookup(
        &self,
        did: u16,
        pasid: u32,
        iova: u64,
        privileged: bool,
    ) -> Option<(IotlbTag, IotlbEntry)> {
        for (shift, flag) in [
            (12u8, None),
            (21, Some(&self.has_2m)),
            (30, Some(&self.has_1g)),
        ] {
            if flag.is_some_and(|f| !f.load(Ordering::Relaxed)) {
                continue;
            }
            let tag = IotlbTag {
                did,
                pasid,
                page: iova >> shift,
                shift,
                privileged,
            };
            if let Some(e) = self.cache.lookup(&tag) {
                return Some((tag, e));
            }
        }
        None
    }

    /// Insert (see [`Cache::insert`]).
    pub fn insert(&self, tag: IotlbTag, entry: IotlbEntry, ticket: Ticket) -> bool {
        match tag.shift {
            21 => self.has_2m.store(true, Ordering::Relaxed),
            30 => self.has_1g.store(true, Ordering::Relaxed),
            _ => {}
        }
        self.cache.insert(tag, entry, ticket)
    }
}

/// Range `[addr, addr + 2^am pages)` of a page-selective invalidation,
/// with the address aligned down to the range size (6.5.2.3).
pub fn psi_range(addr: u64, am: u8) -> Range<u64> {
    let len = 1u64
        .checked_shl(u32::from(am).saturating_add(12))
        .unwrap_or(0);
    if len == 0 {
        return 0..u64::MAX;
    }
    let start = addr & !len.wrapping_sub(1);
    start..start.saturating_add(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    // 6.2.4: a 2 MiB entry serves every 4 KiB page inside it.
    #[test]
    fn iotlb_lookup_finds_large_page_entries() {
        let t = Iotlb::new(CacheConfig::new(8, 2)).unwrap();
        let tag = IotlbTag {
            did: 1,
            pasid: 0,
            page: 0x4020_0000 >> 21,
            shift: 21,
            privileged: false,
        };
        let e = IotlbEntry {
            output: 0x60_0000,
            size: PageSize::SIZE_2M,
            perm: Perm::RW,
            dirty_ok: true,
        };
        assert!(t.insert(tag, e, t.cache.ticket()));
        assert_eq!(t.lookup(1, 0, 0x4021_2345, false).map(|x| x.1), Some(e));
        assert!(t.lookup(2, 0, 0x4021_2345, false).is_none());
        assert!(t.lookup(1, 0, 0x4041_2345, false).is_none());
    }

    // 6.5.2.3: the address mask selects an aligned 2^am-page range.
    #[test]
    fn psi_range_aligns_to_mask() {
        assert_eq!(psi_range(0x5000, 0), 0x5000..0x6000);
        assert_eq!(psi_range(0x5000, 2), 0x4000..0x8000);
        assert_eq!(psi_range(0x5000, 63), 0..u64::MAX);
    }
}
