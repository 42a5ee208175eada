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

/// The set-selection hash of a tag (the same function for [`TlbTag`] and
/// its packed form, so both pick the same set).
fn tag_hash(base: u64, shift: u8, asid: Option<u16>, vmid: u16) -> u64 {
    let page = base.checked_shr(u32::from(shift)).unwrap_or(0);
    page ^ (u64::from(asid.unwrap_or(0)) << 40) ^ (u64::from(vmid) << 24) ^ u64::from(shift)
}

fn page_range(base: u64, shift: u8) -> Range<u64> {
    let size = 1u64.checked_shl(u32::from(shift)).unwrap_or(u64::MAX);
    base..base.saturating_add(size)
}

impl CacheTag for TlbTag {
    fn set_hash(&self) -> u64 {
        tag_hash(self.base, self.shift, self.key.asid, self.key.vmid)
    }

    fn addr_range(&self) -> Option<Range<u64>> {
        Some(page_range(self.base, self.shift))
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

/// [`TlbKey`] and log2 page size in one word: world (bit 0), kind (bits
/// 1-2), ASID valid (bit 3), shift (bits 8-15), ASID (bits 16-31), VMID
/// (bits 32-47). A bijection, so packed tags are equal exactly when the
/// tags are.
fn pack_key(key: &TlbKey, shift: u8) -> u64 {
    let world = match key.world {
        StreamWorld::NsEl1 => 0,
        StreamWorld::El2 => 1,
    };
    let kind = match key.kind {
        TlbKind::S1 => 0u64,
        TlbKind::S2 => 1,
        TlbKind::Nested => 2,
    };
    let asid = key.asid.map_or(0, |a| (1u64 << 3) | (u64::from(a) << 16));
    world | (kind << 1) | asid | (u64::from(shift) << 8) | (u64::from(key.vmid) << 32)
}

fn unpack_key(w: u64) -> (TlbKey, u8) {
    let field = |shift: u32, bits: u32| (w >> shift) & (1u64 << bits).wrapping_sub(1);
    let kind = match field(1, 2) {
        0 => TlbKind::S1,
        1 => TlbKind::S2,
        _ => TlbKind::Nested,
    };
    let key = TlbKey {
        world: if w & 1 == 0 {
            StreamWorld::NsEl1
        } else {
            StreamWorld::El2
        },
        vmid: u16::try_from(field(32, 16)).unwrap_or(0),
        asid: (w & (1 << 3) != 0).then(|| u16::try_from(field(16, 16)).unwrap_or(0)),
        kind,
    };
    (key, u8::try_from(field(8, 8)).unwrap_or(0))
}

/// The stored form of a tag: two words, so the cache engine copies and
/// compares it with two loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PackedTag {
    key: u64,
    base: u64,
}

impl PackedTag {
    fn new(key: &TlbKey, base: u64, shift: u8) -> Self {
        PackedTag {
            key: pack_key(key, shift),
            base,
        }
    }

    fn unpack(&self) -> TlbTag {
        let (key, shift) = unpack_key(self.key);
        TlbTag {
            key,
            base: self.base,
            shift,
        }
    }
}

impl CacheTag for PackedTag {
    #[inline(always)]
    fn set_hash(&self) -> u64 {
        // tag_hash on the packed fields (the ASID bits are 0 without one).
        let shift = (self.key >> 8) & 0xff;
        let page = self
            .base
            .checked_shr(u32::try_from(shift).unwrap_or(64))
            .unwrap_or(0);
        let asid = (self.key >> 16) & 0xffff;
        let vmid = (self.key >> 32) & 0xffff;
        page ^ (asid << 40) ^ (vmid << 24) ^ shift
    }

    fn addr_range(&self) -> Option<Range<u64>> {
        let (_, shift) = unpack_key(self.key);
        Some(page_range(self.base, shift))
    }
}

/// Low bits of a page base free for flags (pages are at least 4 KiB).
const PAGE_LOW: u64 = 0xfff;
const IPA_VALID: u64 = 1 << 7;

/// The stored form of an entry: the output page base with the rights in
/// its low bits (unprivileged bits 0-2, privileged bits 3-5, privileged-only
/// bit 6), and the IPA page base with its log2 size in bits 0-6 and a
/// valid bit 7.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PackedEntry {
    out: u64,
    ipa: u64,
}

impl PackedEntry {
    /// `None` when a base has bits in the flag area (never for page-sized
    /// bases of 4 KiB or more; such an entry is not cached).
    fn new(e: &TlbEntry) -> Option<Self> {
        if e.out_base & PAGE_LOW != 0 {
            return None;
        }
        let ipa = match e.ipa_range {
            None => 0,
            Some((b, s)) if b & PAGE_LOW == 0 && s < 64 => b | u64::from(s) | IPA_VALID,
            Some(_) => return None,
        };
        let out = e.out_base
            | u64::from(e.perm_unpriv.bits() & 7)
            | (u64::from(e.perm_priv.bits() & 7) << 3)
            | (u64::from(e.priv_only) << 6);
        Some(PackedEntry { out, ipa })
    }

    #[inline(always)]
    fn unpack(&self) -> TlbEntry {
        let perm = |bits: u64| Perm::from_bits_truncate(u8::try_from(bits & 7).unwrap_or(0));
        TlbEntry {
            out_base: self.out & !PAGE_LOW,
            perm_unpriv: perm(self.out),
            perm_priv: perm(self.out >> 3),
            priv_only: self.out & (1 << 6) != 0,
            ipa_range: (self.ipa & IPA_VALID != 0).then(|| {
                (
                    self.ipa & !PAGE_LOW,
                    u8::try_from(self.ipa & 0x7f).unwrap_or(0),
                )
            }),
        }
    }
}

/// The TLB.
#[derive(Debug)]
pub struct Tlb {
    cache: Cache<PackedTag, PackedEntry>,
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
    #[inline(always)]
    pub fn lookup(&self, key: &TlbKey, addr: u64) -> Option<(u64, u8, TlbEntry)> {
        let mut shifts = self.shifts.load(Ordering::Relaxed);
        if shifts == 0 {
            return None;
        }
        let key0 = pack_key(key, 0);
        while shifts != 0 {
            let s = u8::try_from(shifts.trailing_zeros()).unwrap_or(63);
            shifts &= shifts.wrapping_sub(1);
            let mask = 1u64
                .checked_shl(u32::from(s))
                .map_or(u64::MAX, |v| v.wrapping_sub(1));
            let tag = PackedTag {
                key: key0 | (u64::from(s) << 8),
                base: addr & !mask,
            };
            if let Some(e) = self.cache.lookup(&tag) {
                return Some((tag.base, s, e.unpack()));
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
        let Some(packed) = PackedEntry::new(&e) else {
            tracing::warn!(?e, "TLB entry with an unaligned page base not cached");
            return false;
        };
        self.cache
            .insert(PackedTag::new(key, base, shift), packed, ticket)
    }

    /// Remove entries for which `pred` holds; returns how many.
    pub fn invalidate_if(&self, mut pred: impl FnMut(&TlbTag, &TlbEntry) -> bool) -> usize {
        self.cache
            .invalidate_if(|t, e| pred(&t.unpack(), &e.unpack()))
    }

    /// Remove entries whose input range overlaps `range` and `pred` holds.
    pub fn invalidate_range(
        &self,
        range: Range<u64>,
        mut pred: impl FnMut(&TlbTag) -> bool,
    ) -> usize {
        self.cache.invalidate_if(|t, _| {
            let t = t.unpack();
            t.addr_range().is_some_and(|r| overlaps(&r, &range)) && pred(&t)
        })
    }

    /// Remove stage-2 entries of `vmid` covering IPAs in `range`, and
    /// nested entries built from such IPAs (4.4.13).
    pub fn invalidate_ipa(&self, vmid: u16, range: Range<u64>) -> usize {
        self.cache.invalidate_if(|t, e| {
            let (t, e) = (t.unpack(), e.unpack());
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

    // The packed forms are a bijection and select the same set as the
    // plain tag (3.17: the tag is StreamWorld, VMID, ASID, kind, page).
    #[test]
    fn tlb_packed_tag_and_entry_round_trip() {
        for world in [StreamWorld::NsEl1, StreamWorld::El2] {
            for kind in [TlbKind::S1, TlbKind::S2, TlbKind::Nested] {
                for asid in [None, Some(0), Some(0xffff)] {
                    for (base, shift) in [(0x1000, 12), (0xffff_ffe0_0000, 21), (0, 39)] {
                        let t = TlbTag {
                            key: TlbKey {
                                world,
                                vmid: 0xfffe,
                                asid,
                                kind,
                            },
                            base,
                            shift,
                        };
                        let p = PackedTag::new(&t.key, base, shift);
                        assert_eq!(p.unpack(), t);
                        assert_eq!(p.set_hash(), t.set_hash());
                        assert_eq!(p.addr_range(), t.addr_range());
                    }
                }
            }
        }
        let e = TlbEntry {
            out_base: 0xffff_ffff_f000,
            perm_unpriv: Perm::R,
            perm_priv: Perm::RW | Perm::X,
            priv_only: true,
            ipa_range: Some((0x4000_0000, 30)),
        };
        assert_eq!(PackedEntry::new(&e).unwrap().unpack(), e);
        let e = TlbEntry {
            ipa_range: None,
            priv_only: false,
            ..e
        };
        assert_eq!(PackedEntry::new(&e).unwrap().unpack(), e);
        // A base that is not page aligned cannot be packed (never made).
        let bad = TlbEntry {
            out_base: 0x1001,
            ..e
        };
        assert!(PackedEntry::new(&bad).is_none());
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
