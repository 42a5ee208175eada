//! The same logical mappings reached through VT-d scalable-mode
//! first-level translation with a PASID (VT-d 3.6, 9.6) and through SMMU
//! stage 1 with the same SubstreamID (IHI 0070 3.3.3, 5.4) translate to
//! the same outputs, and fault on the same addresses and accesses.

mod smmu_support;
#[path = "vtd_support/mod.rs"]
mod vtd_support;

use iommu_emulator::testing::vmsa_pt::{Leaf, VmsaTables};
use iommu_emulator::testing::x86_pt::{Format, X86PageTable};
use iommu_emulator::{PageSize, Perm};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const PASID: u32 = 0x42;
/// Context entry PASIDE (VT-d 9.4).
const PASIDE: u64 = 1 << 3;

#[derive(Clone, Copy, Debug)]
struct Mapping {
    iova: u64,
    pa: u64,
    size: PageSize,
    writable: bool,
}

fn mappings() -> impl Strategy<Value = Vec<Mapping>> {
    prop::collection::vec(
        (
            0u64..512,
            0u64..4096,
            any::<bool>(),
            prop::bool::weighted(0.15),
        ),
        1..24,
    )
    .prop_map(|v| {
        let mut out: Vec<Mapping> = Vec::new();
        for (slot, frame, writable, big) in v {
            // 4K pages in the first 1 GiB, 2M pages above it: no overlap
            // between sizes; duplicates of a slot keep the first.
            let (iova, pa, size) = if big {
                (
                    (1 << 30) + slot * (2 << 20),
                    (frame % 512) * (2 << 20) + (1 << 31),
                    PageSize::SIZE_2M,
                )
            } else {
                (
                    slot * 0x1_0000,
                    0x8000_0000 + frame * 0x1000,
                    PageSize::SIZE_4K,
                )
            };
            if !out.iter().any(|m| m.iova == iova) {
                out.push(Mapping {
                    iova,
                    pa,
                    size,
                    writable,
                });
            }
        }
        out
    })
}

#[test]
fn smmu_vtd_same_mappings_same_translations() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let (oks, faults) = (AtomicU64::new(0), AtomicU64::new(0));
    let mut runner = TestRunner::new(Config {
        cases: 24,
        ..Config::default()
    });
    runner
        .run(
            &(
                mappings(),
                prop::collection::vec((0u64..600, 0u64..0x2_0000, any::<bool>()), 32),
            ),
            |(maps, probes)| {
                // VT-d: scalable mode, first-level table for PASID 0x42.
                let mut v = vtd_support::Driver::probe("x-scalable-mode=on,aw-bits=48");
                let dev = vtd_support::rid(0, 3, 0);
                let vram = v.ram.clone();
                let fl = X86PageTable::new(&vram, Format::FirstLevel { levels: 4 });
                // SMMU: stage-1 CD at SSID 0x42.
                let mut s = smmu_support::Driver::new("");
                s.reset();
                let sram = s.ram.clone();
                let mut pt = VmsaTables::new(&sram, smmu_support::s1_cfg()).unwrap();
                for m in &maps {
                    let perm = if m.writable { Perm::RW } else { Perm::R };
                    fl.map(m.iova, m.pa, m.size, perm).unwrap();
                    let leaf = if m.writable { Leaf::rw() } else { Leaf::ro() };
                    pt.map(m.iova, m.pa, m.size, leaf).unwrap();
                }
                let dir = v.set_context_sm(dev, PASIDE);
                v.set_pasid_entry(dir, PASID, vtd_support::pasid_fl(7, fl.root().0, false));
                let cds = smmu_support::CdTable::new(&s, 8);
                cds.install(&mut s, 0x18, PASID, 7, pt.config().ttb);
                s.install_ste(0x18, cds.ste(8));

                for (slot, off, write) in probes {
                    // Half the probes on mapped pages, the rest anywhere.
                    let addr = if slot < 300 {
                        let m = maps[(slot as usize) % maps.len()];
                        m.iova + off % m.size.bytes()
                    } else {
                        (slot - 300) * 0x1_0000 + off
                    };
                    let access = if write { Perm::W } else { Perm::R };
                    let a = v.dma_pasid(dev, PASID, false, addr, access);
                    let b =
                        smmu_support::dma(&s, smmu_support::pci(0, 3), Some(PASID), addr, access);
                    match (&a, &b) {
                        (Ok(x), Ok(y)) => {
                            prop_assert_eq!(x.output, y.output, "{:#x}", addr);
                            prop_assert_eq!(x.page_size, y.page_size);
                            oks.fetch_add(1, Ordering::Relaxed);
                        }
                        (Err(x), Err(y)) => {
                            prop_assert_eq!(x.kind, y.kind, "{:#x}", addr);
                            faults.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => prop_assert!(false, "{addr:#x} {access:?}: VT-d {a:?} SMMU {b:?}"),
                    }
                }
                Ok(())
            },
        )
        .unwrap();
    // Both outcomes were compared, so the property is not vacuous.
    assert!(oks.load(Ordering::Relaxed) > 100, "{oks:?}");
    assert!(faults.load(Ordering::Relaxed) > 100, "{faults:?}");
}
