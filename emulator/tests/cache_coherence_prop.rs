//! Property: after any sequence of map / unmap+invalidate / invalidate-all
//! operations, a translation served through the cache engine equals an
//! uncached walk of the current tables in guest memory.
//!
//! The tables here are a small two-level radix format (512-entry levels,
//! 4 KiB pages and 2 MiB large pages) written into `FakeRam`, so the
//! property exercises the cache engine (tags of two page sizes, range
//! invalidation, eviction under every replacement policy) independently of
//! either architecture. The architectural walkers have their own property
//! tests against reference walkers in the model crates.

use iommu_emulator::testing::FakeRam;
use iommu_emulator::{Cache, CacheConfig, CacheTag, Gpa, GuestRam, ReplacementPolicy};
use proptest::prelude::*;

const PRESENT: u64 = 1;
const WRITE: u64 = 2;
const LARGE: u64 = 4;
const ADDR: u64 = !0xfff;

/// Level-2 table base; level-1 tables are allocated after it.
const ROOT: u64 = 0x1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Walked {
    out: u64,
    write: bool,
    shift: u8,
}

struct Tables<'a> {
    ram: &'a FakeRam,
}

impl Tables<'_> {
    fn l1_table(&self, i2: u64) -> u64 {
        0x10_0000 + i2 * 0x1000
    }

    fn map_4k(&self, iova: u64, out: u64, write: bool) {
        let i2 = (iova >> 21) & 511;
        let i1 = (iova >> 12) & 511;
        let t = self.l1_table(i2);
        self.ram
            .write_u64(Gpa(ROOT + i2 * 8), t | PRESENT | WRITE)
            .unwrap();
        let e = (out & ADDR) | PRESENT | if write { WRITE } else { 0 };
        self.ram.write_u64(Gpa(t + i1 * 8), e).unwrap();
    }

    fn map_2m(&self, iova: u64, out: u64, write: bool) {
        let i2 = (iova >> 21) & 511;
        let e = (out & !0x1f_ffff) | PRESENT | LARGE | if write { WRITE } else { 0 };
        self.ram.write_u64(Gpa(ROOT + i2 * 8), e).unwrap();
    }

    /// Clear the leaf holding `iova`; returns the range that was mapped.
    fn unmap(&self, iova: u64) -> Option<std::ops::Range<u64>> {
        let i2 = (iova >> 21) & 511;
        let e2 = self.ram.read_u64(Gpa(ROOT + i2 * 8)).unwrap();
        if e2 & PRESENT == 0 {
            return None;
        }
        if e2 & LARGE != 0 {
            self.ram.write_u64(Gpa(ROOT + i2 * 8), 0).unwrap();
            let base = iova & !0x1f_ffff;
            return Some(base..base + (1 << 21));
        }
        let i1 = (iova >> 12) & 511;
        let t = e2 & ADDR;
        self.ram.write_u64(Gpa(t + i1 * 8), 0).unwrap();
        let base = iova & !0xfff;
        Some(base..base + 0x1000)
    }

    /// The uncached reference walk.
    fn walk(&self, iova: u64) -> Option<Walked> {
        let i2 = (iova >> 21) & 511;
        let e2 = self.ram.read_u64(Gpa(ROOT + i2 * 8)).ok()?;
        if e2 & PRESENT == 0 {
            return None;
        }
        if e2 & LARGE != 0 {
            return Some(Walked {
                out: (e2 & !0x1f_ffff) | (iova & 0x1f_ffff),
                write: e2 & WRITE != 0,
                shift: 21,
            });
        }
        let e1 = self
            .ram
            .read_u64(Gpa((e2 & ADDR) + ((iova >> 12) & 511) * 8))
            .ok()?;
        if e1 & PRESENT == 0 {
            return None;
        }
        Some(Walked {
            out: (e1 & ADDR) | (iova & 0xfff),
            write: e1 & WRITE != 0,
            shift: 12,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tag {
    page: u64,
    shift: u8,
}

impl CacheTag for Tag {
    fn set_hash(&self) -> u64 {
        self.page << (self.shift - 12)
    }
    fn addr_range(&self) -> Option<std::ops::Range<u64>> {
        let base = self.page << self.shift;
        Some(base..base + (1u64 << self.shift))
    }
}

/// Translation through the cache: look up both page sizes, else walk and
/// fill (with the ticket protocol).
fn cached(cache: &Cache<Tag, Walked>, t: &Tables<'_>, iova: u64) -> Option<Walked> {
    for shift in [12u8, 21] {
        let tag = Tag {
            page: iova >> shift,
            shift,
        };
        if let Some(w) = cache.lookup(&tag) {
            let mask = (1u64 << shift) - 1;
            return Some(Walked {
                out: (w.out & !mask) | (iova & mask),
                ..w
            });
        }
    }
    let ticket = cache.ticket();
    let w = t.walk(iova)?;
    cache.insert(
        Tag {
            page: iova >> w.shift,
            shift: w.shift,
        },
        w,
        ticket,
    );
    Some(w)
}

#[derive(Clone, Debug)]
enum Op {
    Map4k { page: u64, out: u64, write: bool },
    Map2m { block: u64, out: u64, write: bool },
    Unmap { addr: u64 },
    InvalidateAll,
    Translate { addr: u64 },
}

/// Addresses in the first 8 MiB: 4 large-page slots, 2048 small pages, so
/// maps, unmaps and lookups collide often.
fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u64..2048, 0u64..4096, any::<bool>()).prop_map(|(page, out, write)| Op::Map4k {
            page,
            out: out << 12,
            write
        }),
        (0u64..4, 0u64..64, any::<bool>()).prop_map(|(block, out, write)| Op::Map2m {
            block,
            out: out << 21,
            write
        }),
        (0u64..(8 << 20)).prop_map(|addr| Op::Unmap { addr }),
        Just(Op::InvalidateAll),
        (0u64..(8 << 20)).prop_map(|addr| Op::Translate { addr }),
        (0u64..(8 << 20)).prop_map(|addr| Op::Translate { addr }),
    ]
}

fn policy() -> impl Strategy<Value = ReplacementPolicy> {
    prop_oneof![
        Just(ReplacementPolicy::Lru),
        Just(ReplacementPolicy::TreePlru),
        Just(ReplacementPolicy::Fifo),
        Just(ReplacementPolicy::Random),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn cached_translation_equals_uncached_walk(
        ops in proptest::collection::vec(op(), 1..200),
        sets in prop_oneof![Just(1usize), Just(2), Just(4)],
        ways in prop_oneof![Just(1usize), Just(2), Just(4)],
        policy in policy(),
    ) {
        let ram = FakeRam::new(64 << 20);
        let t = Tables { ram: &ram };
        let cache: Cache<Tag, Walked> =
            Cache::new(CacheConfig::new(sets, ways).with_policy(policy)).unwrap();
        for op in ops {
            match op {
                Op::Map4k { page, out, write } => {
                    // Remapping over a valid entry is an unmap first, as a
                    // driver does; it must invalidate what it replaces.
                    let iova = page << 12;
                    if let Some(r) = t.unmap(iova) {
                        cache.invalidate_range(r, |_, _| true);
                    }
                    t.map_4k(iova, out, write);
                }
                Op::Map2m { block, out, write } => {
                    let iova = block << 21;
                    // Replacing a level-1 table by a block drops all its pages.
                    ram.write_u64(Gpa(ROOT + block * 8), 0).unwrap();
                    cache.invalidate_range(iova..iova + (1 << 21), |_, _| true);
                    t.map_2m(iova, out, write);
                }
                Op::Unmap { addr } => {
                    if let Some(r) = t.unmap(addr) {
                        cache.invalidate_range(r, |_, _| true);
                    }
                }
                Op::InvalidateAll => {
                    cache.invalidate_all();
                }
                Op::Translate { addr } => {
                    prop_assert_eq!(cached(&cache, &t, addr), t.walk(addr), "addr {:#x}", addr);
                }
            }
        }
        // Finally every address agrees.
        for addr in (0..(8u64 << 20)).step_by(0x1000) {
            prop_assert_eq!(cached(&cache, &t, addr + 0x123), t.walk(addr + 0x123));
        }
    }
}
