//! Translation speed of the SMMU model: TLB hit, and a TLB miss with a
//! 4-level stage-1 walk (configuration caches hit), on FakeRam.
//! `cargo bench -p smmu-model --bench translate`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use iommu_emulator::mem::NoMsi;
use iommu_emulator::testing::FakeRam;
use iommu_emulator::testing::vmsa_pt::{Leaf, VmsaTables};
use iommu_emulator::walk::vmsa::{Granule, Stage, WalkConfig};
use iommu_emulator::{DmaRequest, Gpa, GuestRam, Iommu, PageSize, Perm, SourceId};
use smmu_model::{Smmu, SmmuConfig, regs};

fn setup(props: &str) -> (Smmu, FakeRam) {
    let ram = FakeRam::new(1 << 32);
    let smmu = Smmu::new(SmmuConfig::parse_props(props).unwrap(), Arc::new(NoMsi)).unwrap();
    let cfg = WalkConfig {
        stage: Stage::One,
        granule: Granule::G4K,
        tsz: 16,
        sl0: 0,
        oas_bits: 48,
        ttb: 0,
        affd: false,
    };
    let mut pt = VmsaTables::new(&ram, cfg).unwrap();
    for p in 0..64u64 {
        pt.map(
            p << 12,
            0x8000_0000 + (p << 12),
            PageSize::SIZE_4K,
            Leaf::rw(),
        )
        .unwrap();
    }
    let (strtab, cd) = (0x100_0000u64, 0x200_0000u64);
    // STE 0: V, S1 translate, linear CD table of one CD.
    ram.write_u64(Gpa(strtab), 1 | (5 << 1) | cd).unwrap();
    let w0 = 16 | (1 << 30) | (1 << 31) | (5 << 32) | (1 << 41) | (1 << 45) | (1 << 46) | (1 << 48);
    ram.write_u64(Gpa(cd), w0).unwrap();
    ram.write_u64(Gpa(cd + 8), pt.config().ttb).unwrap();
    smmu.mmio_write(&ram, regs::STRTAB_BASE, 8, strtab);
    smmu.mmio_write(&ram, regs::STRTAB_BASE_CFG, 4, 4);
    smmu.mmio_write(&ram, regs::CR0, 4, 1);
    (smmu, ram)
}

fn bench(c: &mut Criterion) {
    let (smmu, ram) = setup("");
    let req = DmaRequest::new(SourceId::Stream(0), 0x3008, 8, Perm::R);
    smmu.translate(&ram, &req).unwrap();
    c.bench_function("smmu_translate_tlb_hit", |b| {
        b.iter(|| black_box(smmu.translate(&ram, black_box(&req)).unwrap()))
    });
    let (smmu, ram) = setup("tlb-ways=0");
    smmu.translate(&ram, &req).unwrap();
    c.bench_function("smmu_translate_tlb_miss_4_level_walk", |b| {
        b.iter(|| black_box(smmu.translate(&ram, black_box(&req)).unwrap()))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
