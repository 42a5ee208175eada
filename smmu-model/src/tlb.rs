//! The SMMU TLB (IHI 0070 3.17 TLB tagging): entries tagged by StreamWorld,
//! VMID, ASID, the kind of translation (stage 1, stage 2, nested) and the
//! input page; an instance of the core cache engine.
//!
//! Pages of any size live in one cache. A lookup probes only the page
//! sizes that have ever been inserted (a bitmask), smallest first, so a
//! workload of 4 KiB pages costs one probe. Nested entries combine both
//! stages (their size is the smaller of the two) and remember the IPA page
//! so CMD_TLBI_S2_IPA can remove them.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

use iommu_emulator::cache::{CacheConfigError, Ticket};
use iommu_emulator::{Cache, CacheConfig, CacheStats, CacheTag, Perm};

use crate::structs::ste::StreamWorld;

/// Which stages produced an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TlbKind {
    /// Stage 1 only (VA to PA).
    S1,
    /// Stage 2 only (IPA to PA).
    S2,
    /// Both (VA to PA through IPA).
    Nested,
}

/// The part of a tag that comes from the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TlbKey {
    /// StreamWorld.
    pub world: StreamWorld,
    /// VMID (0 when stage 2 is not implemented).
    pub vmid: u16,
    /// ASID for stage-1 and nested entries.
    pub asid: Option<u16>,
    /// Kind.
    pub kind: TlbKind,
}

/// A TLB tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TlbTag {
    /// Configuration part.
    pub key: TlbKey,
    /// Input page base.
    pub base: u64,
    /// log2 of the page size.
    pub shift: u8,
}

impl CacheTag for TlbTag {
    fn set_hash(&self) -> u64 {
        let page = self.base.checked_shr(u32::from(self.shift)).unwrap_or(0);
        page ^ (u64::from(self.key.asid.unwrap_or(0)) << 40)
            ^ (u64::from(self.key.vmid) << 24)
            ^ u64::from(self.shift)
    }

    fn addr_range(&self) -> Option<Range<u64>> {
        let size = 1u64.checked_shl(u32::from(self.shift)).unwrap_or(u64::MAX);
        Some(self.base..self.base.saturating_add(size))
    }
}

/// A TLB entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlbEntry {
    /// Output page base.
    pub out_base: u64,
    /// Rights for unprivileged accesses (both stages combined).
    pub perm_unpriv: Perm,
    /// Rights for privileged accesses.
    pub perm_priv: Perm,
    /// Stage 1 said privileged-only.
    pub priv_only: bool,
    /// Nested entries: the IPA page (base, log2 size).
    pub ipa_range: Option<(u64, u8)>,
}

/// The TLB.
#[derive(Debug)]
pub struct Tlb {
    cache: Cache<TlbTag, TlbEntry>,
    shifts: AtomicU64,
}

fn overlaps(a: &Range<u64>, b: &Range<u64>) -> bool {
    a.start < b.end && b.start < a.end
}

impl Tlb {
    /// A TLB of the given geometry.
    pub fn new(config: CacheConfig) -> Result<Self, CacheConfigError> {
        Ok(Tlb {
            cache: Cache::new(config)?,
            shifts: AtomicU64::new(0),
        })
    }

    /// Look up `addr` under `key`: (page base, log2 size, entry).
    pub fn lookup(&self, key: &TlbKey, addr: u64) -> Option<(u64, u8, TlbEntry)> {
        let mut shifts = self.shifts.load(Ordering::Relaxed);
        while shifts != 0 {
            let s = u8::try_from(shifts.trailing_zeros()).unwrap_or(63);
            shifts &= shifts.wrapping_sub(1);
            let mask = 1u64
                .checked_shl(u32::from(s))
                .map_or(u64::MAX, |v| v.wrapping_sub(1));
            let tag = TlbTag {
                key: *key,
                base: addr & !mask,
                shift: s,
            };
            if let Some(e) = self.cache.lookup(&tag) {
                return Some((tag.base, s, e));
            }
        }
        None
    }

    /// A ticket to take before walking.
    pub fn ticket(&self) -> Ticket {
        self.cache.ticket()
    }

    /// Insert an entry for the page at `base` of size `1 << shift`.
    pub fn insert(&self, key: &TlbKey, base: u64, shift: u8, e: TlbEntry, ticket: Ticket) -> bool {
        // Set the size bit only when it is new: no locked read-modify-write
        // on this shared word for every miss.
        if shift < 64 && self.shifts.load(Ordering::Relaxed) & (1u64 << shift) == 0 {
            self.shifts.fetch_or(1u64 << shift, Ordering::Relaxed);
        }
        self.cache.insert(
            TlbTag {
                key: *key,
                base,
                shift,
            },
            e,
            ticket,
        )
    }

    /// Remove entries for which `pred` holds; returns how many.
    pub fn invalidate_if(&self, mut pred: impl FnMut(&TlbTag, &TlbEntry) -> bool) -> usize {
        self.cache.invalidate_if(|t, e| pred(t, e))
    }

    /// Remove entries whose input range overlaps `range` and `pred` holds.
    pub fn invalidate_range(
        &self,
        range: Range<u64>,
        mut pred: impl FnMut(&TlbTag) -> bool,
    ) -> usize {
        self.cache
            .invalidate_if(|t, _| t.addr_range().is_some_and(|r| overlaps(&r, &range)) && pred(t))
    }

    /// Remove stage-2 entries of `vmid` covering IPAs in `range`, and
    /// nested entries built from such IPAs (4.4.13).
    pub fn invalidate_ipa(&self, vmid: u16, range: Range<u64>) -> usize {
        self.cache.invalidate_if(|t, e| {
            if t.key.vmid != vmid || t.key.world != StreamWorld::NsEl1 {
                return false;
            }
            match t.key.kind {
                TlbKind::S2 => t.addr_range().is_some_and(|r| overlaps(&r, &range)),
                TlbKind::Nested => e.ipa_range.is_some_and(|(b, s)| {
                    let size = 1u64.checked_shl(u32::from(s)).unwrap_or(u64::MAX);
                    overlaps(&(b..b.saturating_add(size)), &range)
                }),
                TlbKind::S1 => false,
            }
        })
    }

    /// Valid entries.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    /// Counters.
    pub fn stats(&self) -> CacheStats {
        self.cache.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(asid: u16) -> TlbKey {
        TlbKey {
            world: StreamWorld::NsEl1,
            vmid: 1,
            asid: Some(asid),
            kind: TlbKind::S1,
        }
    }

    fn entry(out: u64) -> TlbEntry {
        TlbEntry {
            out_base: out,
            perm_unpriv: Perm::RW,
            perm_priv: Perm::RW,
            priv_only: false,
            ipa_range: None,
        }
    }

    #[test]
    fn tlb_finds_block_and_page_entries() {
        let t = Tlb::new(CacheConfig::new(16, 4)).unwrap();
        t.insert(&key(1), 0x20_0000, 21, entry(0x4000_0000), t.ticket());
        t.insert(&key(1), 0x1000, 12, entry(0x9000), t.ticket());
        assert_eq!(
            t.lookup(&key(1), 0x2f_f123).unwrap().2.out_base,
            0x4000_0000
        );
        assert_eq!(t.lookup(&key(1), 0x1fff).unwrap().0, 0x1000);
        assert!(t.lookup(&key(2), 0x1fff).is_none());
    }

    // 4.4.3-4.4.4: ASID and VA invalidation remove only what they cover.
    #[test]
    fn tlb_invalidate_range_by_asid() {
        let t = Tlb::new(CacheConfig::new(16, 4)).unwrap();
        for p in 0..4u64 {
            t.insert(&key(1), p << 12, 12, entry(p << 20), t.ticket());
            t.insert(&key(2), p << 12, 12, entry(p << 20), t.ticket());
        }
        assert_eq!(
            t.invalidate_range(0x1000..0x3000, |tag| tag.key.asid == Some(1)),
            2
        );
        assert!(t.lookup(&key(1), 0x1000).is_none());
        assert!(t.lookup(&key(1), 0x3000).is_some());
        assert!(t.lookup(&key(2), 0x1000).is_some());
    }

    #[test]
    fn tlb_ipa_invalidation_hits_nested_entries() {
        let t = Tlb::new(CacheConfig::new(16, 4)).unwrap();
        let k = TlbKey {
            kind: TlbKind::Nested,
            ..key(1)
        };
        let e = TlbEntry {
            ipa_range: Some((0x8000, 12)),
            ..entry(0x1_0000)
        };
        t.insert(&k, 0x1000, 12, e, t.ticket());
        assert_eq!(t.invalidate_ipa(1, 0x9000..0xa000), 0);
        assert_eq!(t.invalidate_ipa(1, 0x8000..0x8001), 1);
        assert!(t.is_empty());
    }
}
