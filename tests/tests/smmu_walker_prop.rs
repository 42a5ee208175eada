//! Property test: the core VMSAv8-64 walker against a small independent
//! reference walker (Arm ARM D8), for the three granules and both stages,
//! on random descriptors (invalid, table, block, page, reserved encodings,
//! addresses beyond the OAS or outside RAM) along the path of a random
//! input address.

use iommu_emulator::testing::FakeRam;
use iommu_emulator::walk::vmsa::{Granule, Stage, WalkConfig, WalkRequest, walk};
use iommu_emulator::{FaultKind, Gpa, GuestRam, Perm};
use proptest::prelude::*;

const RAM: u64 = 1 << 33;

/// The reference: tables of the Arm ARM rather than formulas where it can.
mod reference {
    use super::*;

    pub struct Geo {
        pub page_shift: u32,
        pub ia_bits: u32,
        pub start: u32,
        /// Index bits at the start level.
        pub start_bits: u32,
    }

    /// Bit position of the lowest input bit an entry at `level` resolves.
    pub fn low_bit(page_shift: u32, level: u32) -> u32 {
        // 4K: 39/30/21/12; 16K: 47/36/25/14; 64K: -/42/29/16.
        match (page_shift, level) {
            (12, 0) => 39,
            (12, 1) => 30,
            (12, 2) => 21,
            (12, 3) => 12,
            (14, 0) => 47,
            (14, 1) => 36,
            (14, 2) => 25,
            (14, 3) => 14,
            (16, 1) => 42,
            (16, 2) => 29,
            (16, 3) => 16,
            _ => 64,
        }
    }

    pub fn geometry(stage2: bool, page_shift: u32, tsz: u32, sl0: u32) -> Option<Geo> {
        if !(16..=39).contains(&tsz) {
            return None;
        }
        let ia = 64 - tsz;
        let start = if !stage2 {
            // The level whose entries resolve the top input bit.
            (0..=3u32).find(|&l| {
                low_bit(page_shift, l) < ia
                    && (l == 0
                        || low_bit(page_shift, l - 1) >= ia
                        || low_bit(page_shift, l - 1) == 64)
            })?
        } else {
            match (page_shift, sl0) {
                (12, 0) => 2,
                (12, 1) => 1,
                (12, 2) => 0,
                (14 | 16, 0) => 3,
                (14 | 16, 1) => 2,
                (14 | 16, 2) => 1,
                _ => return None,
            }
        };
        let low = low_bit(page_shift, start);
        if low >= ia {
            return None;
        }
        let bits = ia - low;
        let per_level = page_shift - 3;
        let max = if stage2 { per_level + 4 } else { per_level };
        if bits > max {
            return None;
        }
        Some(Geo {
            page_shift,
            ia_bits: ia,
            start,
            start_bits: bits,
        })
    }

    pub fn block_ok(page_shift: u32, level: u32) -> bool {
        matches!((page_shift, level), (12, 1) | (12, 2) | (14, 2) | (16, 2))
    }

    #[derive(Debug, PartialEq, Eq)]
    pub enum Out {
        Ok {
            output: u64,
            size_shift: u32,
            perm: Perm,
        },
        Fault {
            kind: FaultKind,
            level: u32,
        },
        BadConfig,
    }

    pub fn entry_addr(g: &Geo, table: u64, level: u32, addr: u64) -> u64 {
        let low = low_bit(g.page_shift, level);
        let bits = if level == g.start {
            g.start_bits
        } else {
            g.page_shift - 3
        };
        table + ((addr >> low) & ((1 << bits) - 1)) * 8
    }

    #[allow(clippy::too_many_arguments)]
    pub fn walk(
        mem: &FakeRam,
        stage2: bool,
        page_shift: u32,
        tsz: u32,
        sl0: u32,
        oas: u32,
        ttb: u64,
        affd: bool,
        addr: u64,
        access: Perm,
        privileged: bool,
    ) -> Out {
        if !(32..=48).contains(&oas) {
            return Out::BadConfig;
        }
        let Some(g) = geometry(stage2, page_shift, tsz, sl0) else {
            return Out::BadConfig;
        };
        let fault = |kind, level| Out::Fault { kind, level };
        if g.ia_bits < 64 && addr >> g.ia_bits != 0 {
            return fault(FaultKind::NotPresent, g.start);
        }
        let table_bytes = 8u64 << g.start_bits;
        let mut table = ttb & ((1 << 52) - 1) & !(table_bytes.max(8) - 1);
        if table >> oas != 0 {
            return fault(FaultKind::AddressSize, g.start);
        }
        let (mut no_el0, mut ro, mut uxn_t, mut pxn_t) = (false, false, false, false);
        let mut level = g.start;
        loop {
            let ea = entry_addr(&g, table, level, addr);
            let Ok(d) = mem.read_u64(Gpa(ea)) else {
                return fault(FaultKind::WalkAbort, level);
            };
            let bit = |n: u32| (d >> n) & 1 == 1;
            if !bit(0) {
                return fault(FaultKind::NotPresent, level);
            }
            let oa_all = d & ((1 << 52) - 1) & !((1 << page_shift) - 1);
            if level < 3 && bit(1) {
                if oa_all >> oas != 0 {
                    return fault(FaultKind::AddressSize, level);
                }
                if !stage2 {
                    no_el0 |= bit(61);
                    ro |= bit(62);
                    uxn_t |= bit(60);
                    pxn_t |= bit(59);
                }
                table = oa_all;
                level += 1;
                continue;
            }
            let is_leaf = (level == 3 && bit(1)) || (level < 3 && block_ok(page_shift, level));
            if !is_leaf {
                return fault(FaultKind::NotPresent, level);
            }
            let low = low_bit(page_shift, level);
            let oa = oa_all & !((1u64 << low) - 1);
            if oa >> oas != 0 {
                return fault(FaultKind::AddressSize, level);
            }
            if !bit(10) && !affd {
                return fault(FaultKind::AccessFlag, level);
            }
            let mut perm = Perm::empty();
            if stage2 {
                perm.set(Perm::R, bit(6));
                perm.set(Perm::W, bit(7));
                perm.set(Perm::X, !bit(54));
            } else {
                let user = bit(6) && !no_el0;
                let read_only = bit(7) || ro;
                if privileged {
                    perm.set(Perm::R, true);
                    perm.set(Perm::W, !read_only);
                    let user_writable = user && !read_only;
                    perm.set(Perm::X, !bit(53) && !pxn_t && !user_writable);
                } else {
                    perm.set(Perm::R, user);
                    perm.set(Perm::W, user && !read_only);
                    perm.set(Perm::X, !bit(54) && !uxn_t);
                }
            }
            if !perm.contains(access) {
                return fault(FaultKind::Permission, level);
            }
            return Out::Ok {
                output: oa | (addr & ((1u64 << low) - 1)),
                size_shift: low,
                perm,
            };
        }
    }
}

#[derive(Debug, Clone)]
struct Case {
    granule: usize,
    stage2: bool,
    tsz: u8,
    sl0: u8,
    oas: u8,
    affd: bool,
    addr: u64,
    access: u8,
    privileged: bool,
    /// Per level along the path: (kind, attribute bits, OA choice).
    descs: Vec<(u8, u64, u64)>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        0usize..3,
        any::<bool>(),
        14u8..42,
        0u8..4,
        prop::sample::select(vec![32u8, 36, 40, 42, 44, 48]),
        prop::bool::weighted(0.2),
        any::<u64>(),
        0u8..8,
        any::<bool>(),
        prop::collection::vec((0u8..8, any::<u64>(), any::<u64>()), 4),
    )
        .prop_map(
            |(granule, stage2, tsz, sl0, oas, affd, addr, access, privileged, descs)| Case {
                granule,
                stage2,
                tsz,
                sl0,
                oas,
                affd,
                addr,
                access,
                privileged,
                descs,
            },
        )
}

fn run(c: &Case) -> Result<reference::Out, TestCaseError> {
    let granule = Granule::ALL[c.granule];
    let ps = granule.shift();
    let ram = FakeRam::new(RAM);
    // Tables: the start table (up to 16 concatenated) and three more.
    let tsize = 1u64 << ps;
    let start_table = {
        let b = ram.alloc_pages(2 * 16 * tsize / 4096).unwrap().0;
        (b + 16 * tsize - 1) & !(16 * tsize - 1)
    };
    let mut tables = vec![start_table];
    for _ in 0..3 {
        let b = ram.alloc_pages(2 * tsize / 4096).unwrap().0;
        tables.push((b + tsize - 1) & !(tsize - 1));
    }
    // Keep most addresses inside the input range so walks go deep.
    let ia = 64 - u32::from(c.tsz.clamp(16, 39));
    let addr = if c.descs[0].0 == 7 {
        c.addr
    } else {
        c.addr & ((1u64 << ia) - 1)
    };
    let access = Perm::from_bits_truncate(c.access);
    if let Some(g) = reference::geometry(c.stage2, ps, u32::from(c.tsz), u32::from(c.sl0)) {
        let mut table = start_table;
        for (i, level) in (g.start..=3).enumerate() {
            let (kind, attrs, oa_pick) = c.descs[i];
            let attr_mask = (0xfffu64 << 52) | 0xffc;
            let mut d = attrs & attr_mask;
            let next = tables.get(i + 1).copied().unwrap_or(0);
            let oa = match oa_pick % 8 {
                0 => oa_pick & ((1 << 52) - 1) & !0xfff,     // anything
                1 => ((oa_pick % RAM) & !0xfff) | (1 << 40), // above 40-bit OAS
                _ => (oa_pick % (1 << 32)) & !0xfff,
            };
            d |= match kind {
                0 => 0,                      // invalid
                1 | 2 => 3 | next,           // table (page at level 3)
                3 => 3 | oa,                 // table/page anywhere
                4 | 5 => 1 | oa | (1 << 10), // block with AF
                6 => 1 | oa,                 // block, AF from attrs
                _ => 3 | next | (1 << 10),
            };
            if kind == 1 || kind == 2 {
                d |= 1 << 10;
            }
            ram.write_u64(Gpa(reference::entry_addr(&g, table, level, addr)), d)
                .unwrap();
            if d & 3 != 3 || level == 3 {
                break;
            }
            table = d & ((1 << 52) - 1) & !((1u64 << ps) - 1);
            if table != next {
                break;
            }
        }
    }
    let cfg = WalkConfig {
        stage: if c.stage2 { Stage::Two } else { Stage::One },
        granule,
        tsz: c.tsz,
        sl0: c.sl0,
        oas_bits: c.oas,
        ttb: start_table,
        affd: c.affd,
    };
    let req = WalkRequest {
        addr,
        access,
        privileged: c.privileged,
    };
    let want = reference::walk(
        &ram,
        c.stage2,
        ps,
        u32::from(c.tsz),
        u32::from(c.sl0),
        u32::from(c.oas),
        start_table,
        c.affd,
        addr,
        access,
        c.privileged,
    );
    let got = match walk(&ram, &cfg, &req) {
        Ok(o) => reference::Out::Ok {
            output: o.output,
            size_shift: u32::from(o.page_size.shift()),
            perm: o.perm,
        },
        Err(e) if e.kind == FaultKind::BadConfig => reference::Out::BadConfig,
        Err(e) => reference::Out::Fault {
            kind: e.kind,
            level: u32::from(e.level),
        },
    };
    prop_assert_eq!(&got, &want);
    Ok(want)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    // Arm ARM D8: every walk outcome (output, size, rights or fault kind
    // and level) equals the reference's.
    #[test]
    fn vmsa_walk_matches_reference(c in case()) {
        run(&c)?;
    }
}

// The generator reaches every outcome class for every granule and stage,
// so the property above is not vacuous.
#[test]
fn vmsa_reference_outcomes_are_all_reached() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut seen = std::collections::BTreeSet::new();
    let mut runner = TestRunner::deterministic();
    for _ in 0..20000 {
        let c = case().new_tree(&mut runner).unwrap().current();
        let out = run(&c).unwrap();
        let class = match out {
            reference::Out::Ok { .. } => "ok",
            reference::Out::BadConfig => "bad-config",
            reference::Out::Fault {
                kind: FaultKind::NotPresent,
                ..
            } => "translation",
            reference::Out::Fault {
                kind: FaultKind::AddressSize,
                ..
            } => "address-size",
            reference::Out::Fault {
                kind: FaultKind::AccessFlag,
                ..
            } => "access",
            reference::Out::Fault {
                kind: FaultKind::Permission,
                ..
            } => "permission",
            reference::Out::Fault { .. } => "other",
        };
        seen.insert((c.granule, c.stage2, class));
    }
    for granule in 0..3 {
        for stage2 in [false, true] {
            for class in [
                "ok",
                "translation",
                "address-size",
                "access",
                "permission",
                "bad-config",
            ] {
                assert!(
                    seen.contains(&(granule, stage2, class)),
                    "{granule} {stage2} {class}"
                );
            }
        }
    }
}
