//! Property test: random page tables and requests; the model's translation
//! (caches included) agrees with a small independent reference walker that
//! reads the same guest memory, in legacy mode (second level) and scalable
//! mode (first level), across random remaps followed by the invalidation
//! Linux would issue.

use std::sync::Arc;

use iommu_emulator::testing::x86_pt::{Format, X86PageTable};
use iommu_emulator::testing::{FakeRam, RecordingMsi};
use iommu_emulator::{
    DmaRequest, Gpa, GuestRam, Iommu, PageSize, Pasid, PasidTag, Perm, Rid, SourceId,
};
use proptest::prelude::*;
use vtd_model::regs::*;
use vtd_model::{Vtd, VtdConfig};

/// Reference second-level walk (VT-d 3.7, 9.8), written from the spec
/// independently of the model's walker: Ok(output) or Err(legacy reason).
fn ref_sl(mem: &FakeRam, root: u64, levels: u32, iova: u64, write: bool) -> Result<u64, u8> {
    if iova >> (12 + 9 * levels) != 0 {
        return Err(4);
    }
    let deny = if write { 5 } else { 6 };
    let mut table = root;
    let mut allowed_w = true;
    for level in (1..=levels).rev() {
        let shift = 12 + 9 * (level - 1);
        let e = mem
            .read_u64(Gpa(table + ((iova >> shift) & 511) * 8))
            .map_err(|_| 7)?;
        if e & 3 == 0 {
            return Err(deny);
        }
        allowed_w &= e & 2 != 0;
        let leaf = level == 1 || (level <= 3 && e & 0x80 != 0);
        let addr = e & 0x000f_ffff_ffff_f000;
        if leaf {
            if (write && !allowed_w) || (!write && e & 1 == 0) {
                return Err(deny);
            }
            let mask = (1u64 << shift) - 1;
            return Ok((addr & !mask) | (iova & mask));
        }
        table = addr;
    }
    unreachable!()
}

/// Reference first-level walk (VT-d 3.6, IA-32e rules) for a user or
/// supervisor request; Ok(output) or Err(scalable-mode reason).
fn ref_fl(mem: &FakeRam, root: u64, iova: u64, write: bool, sup: bool) -> Result<u64, u8> {
    let mut table = root;
    let (mut rw, mut us) = (true, true);
    for level in (1..=4u32).rev() {
        let shift = 12 + 9 * (level - 1);
        let e = mem
            .read_u64(Gpa(table + ((iova >> shift) & 511) * 8))
            .map_err(|_| 0x70u8)?;
        if e & 1 == 0 {
            return Err(0x71);
        }
        rw &= e & 2 != 0;
        us &= e & 4 != 0;
        let leaf = level == 1 || (level <= 3 && e & 0x80 != 0);
        let addr = e & 0x000f_ffff_ffff_f000;
        if leaf {
            if !sup && !us {
                return Err(0x81);
            }
            if write && !sup && !rw {
                return Err(0x85);
            }
            let mask = (1u64 << shift) - 1;
            return Ok((addr & !mask) | (iova & mask));
        }
        table = addr;
    }
    unreachable!()
}

#[derive(Clone, Debug)]
struct Map {
    slot: u64,
    size: u8, // 0 4K, 1 2M, 2 1G
    perm: u8, // bit0 R, bit1 W
    out: u64,
    user: bool,
}

fn maps() -> impl Strategy<Value = Vec<Map>> {
    proptest::collection::vec(
        (0u64..64, 0u8..3, 1u8..4, 0u64..64, any::<bool>()).prop_map(
            |(slot, size, perm, out, user)| Map {
                slot,
                size,
                perm,
                out,
                user,
            },
        ),
        1..24,
    )
}

fn page(size: u8) -> PageSize {
    [PageSize::SIZE_4K, PageSize::SIZE_2M, PageSize::SIZE_1G][usize::from(size)]
}

/// Slot `s` of size class `k`: separate regions per class so mappings of
/// different sizes never collide in one table slot.
fn iova_of(m: &Map) -> u64 {
    let base = [0x0u64, 0x40_0000_0000, 0x80_0000_0000][usize::from(m.size)];
    base + m.slot * page(m.size).bytes()
}

fn perm_of(bits: u8) -> Perm {
    let mut p = Perm::empty();
    if bits & 1 != 0 {
        p |= Perm::R;
    }
    if bits & 2 != 0 {
        p |= Perm::W;
    }
    p
}

struct Unit {
    vtd: Vtd,
    ram: Arc<FakeRam>,
    head: u64,
    qbase: u64,
    status: u64,
}

impl Unit {
    fn new(props: &str) -> Self {
        let ram = Arc::new(FakeRam::new(1 << 40));
        let vtd = Vtd::new(
            VtdConfig::parse_props(props).unwrap(),
            Arc::new(RecordingMsi::new()),
        )
        .unwrap();
        let qbase = ram.alloc_pages(2).unwrap().0;
        let status = ram.alloc_pages(1).unwrap().0;
        let sm = vtd.config().scalable_mode;
        let u = Unit {
            vtd,
            ram,
            head: 0,
            qbase,
            status,
        };
        u.w(IQA, qbase | if sm { (1 << 11) | 1 } else { 0 });
        u.w(GCMD, GCMD_QIE);
        u
    }
    fn w(&self, off: u64, v: u64) {
        self.vtd.mmio_write(self.ram.as_ref(), off, 8, v);
    }
    fn enable(&self, root: u64) {
        self.w(RTADDR, root);
        self.vtd
            .mmio_write(self.ram.as_ref(), GCMD, 4, GCMD_QIE | GCMD_SRTP);
        self.vtd
            .mmio_write(self.ram.as_ref(), GCMD, 4, GCMD_QIE | GCMD_TE);
    }
    fn submit(&mut self, d: [u64; 2]) {
        let sz = if self.vtd.config().scalable_mode {
            32
        } else {
            16
        };
        for desc in [d, [5 | (1 << 5) | (1 << 32), self.status]] {
            let a = self.qbase + self.head * sz;
            self.ram.write_u64(Gpa(a), desc[0]).unwrap();
            self.ram.write_u64(Gpa(a + 8), desc[1]).unwrap();
            self.head = (self.head + 1) % 128;
        }
        self.ram.write_u32(Gpa(self.status), 0).unwrap();
        self.w(IQT, self.head * sz);
        assert_eq!(self.ram.read_u32(Gpa(self.status)).unwrap(), 1);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    // Legacy mode, second level: model == reference for random tables,
    // requests and remap+invalidate sequences (VT-d 3.7, 6.5.2.3).
    #[test]
    fn prop_legacy_second_level_matches_reference(
        ms in maps(),
        reqs in proptest::collection::vec((0usize..24, 0u64..0x20_0000, any::<bool>()), 1..40),
        remaps in proptest::collection::vec((0usize..24, 0u64..64, 0u8..4), 0..6),
    ) {
        let mut u = Unit::new("aw-bits=48");
        let root = u.ram.alloc_pages(1).unwrap().0;
        let ctx = u.ram.alloc_pages(1).unwrap().0;
        let ram = u.ram.clone();
        let pt = X86PageTable::new(&ram, Format::SecondLevel { levels: 4 });
        u.ram.write_u64(Gpa(root), ctx | 1).unwrap();
        u.ram.write_u64(Gpa(ctx + 8 * 16 + 8), 2 | (1 << 8)).unwrap();
        u.ram.write_u64(Gpa(ctx + 8 * 16), pt.root().0 | 1).unwrap();
        u.enable(root);
        for m in &ms {
            let _ = pt.map(iova_of(m), (0x1_0000_0000 + m.out * page(m.size).bytes()) & !page(m.size).offset_mask(), page(m.size), perm_of(m.perm));
        }
        let dev = SourceId::Pci(Rid(8));
        let check = |u: &Unit, reqs: &[(usize, u64, bool)]| -> Result<(), TestCaseError> {
            for (i, off, write) in reqs {
                let m = &ms[*i % ms.len()];
                let iova = iova_of(m) + (off & page(m.size).offset_mask());
                let access = if *write { Perm::W } else { Perm::R };
                let got = u.vtd.translate(u.ram.as_ref(), &DmaRequest::new(dev, iova, 4, access));
                let want = ref_sl(&u.ram, pt.root().0, 4, iova, *write);
                match (got, want) {
                    (Ok(t), Ok(o)) => prop_assert_eq!(t.output.0, o, "iova {:#x}", iova),
                    (Err(f), Err(r)) => prop_assert_eq!(f.reason, u16::from(r), "iova {:#x}", iova),
                    (g, w) => prop_assert!(false, "iova {:#x}: model {:?} reference {:?}", iova, g, w),
                }
            }
            Ok(())
        };
        check(&u, &reqs)?;
        let s = u.vtd.stats();
        prop_assert!(s.translations > 0 || s.faults > 0);
        prop_assert_eq!(s.translations + s.faults, reqs.len() as u64);
        for (i, out, perm) in remaps {
            let m = &ms[i % ms.len()];
            let iova = iova_of(m);
            if perm == 0 {
                pt.unmap(iova);
            } else {
                let _ = pt.map(iova, (0x2_0000_0000 + out * page(m.size).bytes()) & !page(m.size).offset_mask(), page(m.size), perm_of(perm));
            }
            let am = [0u8, 9, 18][usize::from(m.size)];
            u.submit([2 | (3 << 4) | (1 << 16), iova | u64::from(am)]);
            check(&u, &reqs)?;
        }
    }

    // Scalable mode, first level, user and supervisor requests with PASID
    // (VT-d 3.6, 6.5.2.4).
    #[test]
    fn prop_scalable_first_level_matches_reference(
        ms in maps(),
        reqs in proptest::collection::vec((0usize..24, 0u64..0x20_0000, any::<bool>(), any::<bool>()), 1..40),
        remaps in proptest::collection::vec((0usize..24, 0u64..64, 0u8..4), 0..6),
    ) {
        let mut u = Unit::new("x-scalable-mode=on");
        let ram = u.ram.clone();
        let root = ram.alloc_pages(1).unwrap().0;
        let ctx = ram.alloc_pages(1).unwrap().0;
        let dir = ram.alloc_pages(1).unwrap().0;
        let ptab = ram.alloc_pages(1).unwrap().0;
        let pt = X86PageTable::new(&ram, Format::FirstLevel { levels: 4 });
        ram.write_u64(Gpa(root), ctx | 1).unwrap();
        ram.write_u64(Gpa(ctx + 8 * 32), dir | (1 << 3) | 1).unwrap();
        ram.write_u64(Gpa(dir), ptab | 1).unwrap();
        let pe = ptab + 7 * 64;
        ram.write_u64(Gpa(pe + 8), 3).unwrap();
        ram.write_u64(Gpa(pe + 16), pt.root().0 | 1).unwrap(); // SRE, no WPE
        ram.write_u64(Gpa(pe), 1 | (2 << 2) | (1 << 6)).unwrap();
        u.enable(root | (1 << 10));
        for m in &ms {
            let _ = pt.map(iova_of(m), (0x1_0000_0000 + m.out * page(m.size).bytes()) & !page(m.size).offset_mask(), page(m.size), perm_of(m.perm | 1));
            if !m.user {
                let _ = pt.set_bits(iova_of(m), 0, 1 << 2);
            }
        }
        let dev = SourceId::Pci(Rid(8));
        let check = |u: &Unit, reqs: &[(usize, u64, bool, bool)]| -> Result<(), TestCaseError> {
            for (i, off, write, sup) in reqs {
                let m = &ms[*i % ms.len()];
                let iova = iova_of(m) + (off & page(m.size).offset_mask());
                let access = if *write { Perm::W } else { Perm::R };
                let tag = PasidTag { pasid: Pasid::new(7).unwrap(), privileged: *sup, exec: false };
                let got = u.vtd.translate(u.ram.as_ref(), &DmaRequest::new(dev, iova, 4, access).with_pasid(tag));
                let want = ref_fl(&u.ram, pt.root().0, iova, *write, *sup);
                match (got, want) {
                    (Ok(t), Ok(o)) => prop_assert_eq!(t.output.0, o, "iova {:#x}", iova),
                    (Err(f), Err(r)) => prop_assert_eq!(f.reason, u16::from(r), "iova {:#x}", iova),
                    (g, w) => prop_assert!(false, "iova {:#x}: model {:?} reference {:?}", iova, g, w),
                }
            }
            Ok(())
        };
        check(&u, &reqs)?;
        for (i, out, perm) in remaps {
            let m = &ms[i % ms.len()];
            let iova = iova_of(m);
            if perm == 0 {
                pt.unmap(iova);
            } else {
                let _ = pt.map(iova, (0x2_0000_0000 + out * page(m.size).bytes()) & !page(m.size).offset_mask(), page(m.size), perm_of(perm | 1));
            }
            let am = [0u8, 9, 18][usize::from(m.size)];
            u.submit([6 | (3 << 4) | (3 << 16) | (7 << 32), iova | u64::from(am)]);
            check(&u, &reqs)?;
        }
    }
}

// The generators produce a useful mix: across many cases both successful
// translations and faults occur (guards against a vacuous property).
#[test]
fn prop_generators_exercise_hits_and_faults() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut ok, mut err) = (0, 0);
    for _ in 0..20 {
        let ms = maps().new_tree(&mut runner).unwrap().current();
        let u = Unit::new("aw-bits=48");
        let root = u.ram.alloc_pages(1).unwrap().0;
        let ctx = u.ram.alloc_pages(1).unwrap().0;
        let ram = u.ram.clone();
        let pt = X86PageTable::new(&ram, Format::SecondLevel { levels: 4 });
        u.ram.write_u64(Gpa(root), ctx | 1).unwrap();
        u.ram
            .write_u64(Gpa(ctx + 8 * 16 + 8), 2 | (1 << 8))
            .unwrap();
        u.ram.write_u64(Gpa(ctx + 8 * 16), pt.root().0 | 1).unwrap();
        u.enable(root);
        for m in &ms {
            let _ = pt.map(
                iova_of(m),
                0x1_0000_0000 + m.out * page(m.size).bytes(),
                page(m.size),
                perm_of(m.perm),
            );
        }
        for m in &ms {
            for write in [false, true] {
                let access = if write { Perm::W } else { Perm::R };
                match u.vtd.translate(
                    u.ram.as_ref(),
                    &DmaRequest::new(SourceId::Pci(Rid(8)), iova_of(m), 4, access),
                ) {
                    Ok(_) => ok += 1,
                    Err(_) => err += 1,
                }
            }
        }
    }
    assert!(ok > 20 && err > 5, "ok {ok} err {err}");
}
