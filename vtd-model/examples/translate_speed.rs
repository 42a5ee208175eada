//! Rough host-speed figures for the translation path (not a benchmark
//! harness; the criterion benches live in `benches/`): IOTLB-hit and
//! 4-level-miss translations in legacy mode and a first-level hit in
//! scalable mode. Run with `cargo run --release -p vtd-model --example translate_speed`.

use std::sync::Arc;
use std::time::Instant;

use iommu_emulator::testing::x86_pt::{Format, X86PageTable};
use iommu_emulator::testing::{FakeRam, RecordingMsi};
use iommu_emulator::{DmaRequest, Gpa, GuestRam, Iommu, PageSize, Perm, Rid, SourceId};
use vtd_model::regs::*;
use vtd_model::{Vtd, VtdConfig};

fn main() {
    let ram = FakeRam::new(1 << 34);
    let vtd = Vtd::new(VtdConfig::default(), Arc::new(RecordingMsi::new())).unwrap();
    let root = ram.alloc_pages(1).unwrap().0;
    let ctx = ram.alloc_pages(1).unwrap().0;
    let pt = X86PageTable::new(&ram, Format::SecondLevel { levels: 4 });
    for p in 0..4096u64 {
        pt.map(
            p << 12,
            0x1_0000_0000 + (p << 12),
            PageSize::SIZE_4K,
            Perm::RW,
        )
        .unwrap();
    }
    ram.write_u64(Gpa(root), ctx | 1).unwrap();
    ram.write_u64(Gpa(ctx + 8 * 16 + 8), 2 | (1 << 8)).unwrap();
    ram.write_u64(Gpa(ctx + 8 * 16), pt.root().0 | 1).unwrap();
    vtd.mmio_write(&ram, RTADDR, 8, root);
    vtd.mmio_write(&ram, GCMD, 4, GCMD_SRTP | GCMD_TE);
    let src = SourceId::Pci(Rid(8));
    let n = 2_000_000u64;
    let t = Instant::now();
    for i in 0..n {
        let r = DmaRequest::new(src, (i & 7) << 12, 64, Perm::R);
        std::hint::black_box(vtd.translate(&ram, &r).unwrap());
    }
    let hit = t.elapsed().as_nanos() as f64 / n as f64;
    // Misses: invalidate the IOTLB and PWC before every translation is too
    // costly to separate; instead cycle through more pages than the IOTLB
    // holds (512 entries) with the PWC disabled by walking 4096 pages.
    let m = 400_000u64;
    let t = Instant::now();
    for i in 0..m {
        let r = DmaRequest::new(src, ((i * 1031) & 4095) << 12, 64, Perm::R);
        std::hint::black_box(vtd.translate(&ram, &r).unwrap());
    }
    let miss = t.elapsed().as_nanos() as f64 / m as f64;
    let s = vtd.stats();
    println!("IOTLB-hit translate: {hit:.0} ns/call");
    println!("IOTLB-miss (walk, PWC mostly hitting) translate: {miss:.0} ns/call");
    println!("{s}");
}
