//! Conformance: the VT-d model driven as Linux's intel-iommu driver drives
//! it in legacy mode (RTADDR.TTM=00): probe, root/context setup, map, DMA,
//! unmap + invalidation + wait, stale DMA faulting with the spec's reason,
//! fault MSI, fault record cleared by the driver.

mod vtd_support;

use iommu_emulator::testing::x86_pt::{Format, X86PageTable};
use iommu_emulator::{CachePath, FaultKind, Gpa, GuestRam, PageSize, Perm, RequestKind};
use vtd_model::regs::*;
use vtd_support::*;

// VT-d 10.4.4 / Linux init_dmars(): after probe the unit has QI on, a root
// table latched and translation enabled, and the probe's invalidations ran
// through the queue with their wait descriptors.
#[test]
fn legacy_probe_enables_qi_root_and_translation() {
    let d = Driver::probe("aw-bits=48");
    assert!(!d.sm);
    let gsts = u64::from(d.rd32(GSTS));
    assert_eq!(
        gsts & (GCMD_TE | GCMD_QIE | GCMD_SRTP),
        GCMD_TE | GCMD_QIE | GCMD_SRTP
    );
    assert_eq!(gsts & (GCMD_IRE | GCMD_CFI), 0);
    assert_eq!(d.rd64(RTADDR), d.root);
    assert_eq!(d.rd64(IQA), d.qi_base);
    // context flush + wait, iotlb flush + wait: 4 descriptors of 16 bytes
    assert_eq!(d.rd64(IQT), 4 * 16);
    assert_eq!(d.rd64(IQH), 4 * 16);
    assert_eq!(d.rd32(FSTS), 0);
    assert_eq!(d.rd32(FECTL), 0);
    let s = d.vtd.stats();
    assert_eq!(s.invalidations_of("context-cache"), 1);
    assert_eq!(s.invalidations_of("iotlb"), 1);
    assert_eq!(s.invalidations_of("wait"), 2);
    // CAP as Linux reads it: SAGAW 39+48, MGAW 47, 8 fault records, PSI.
    assert_eq!((d.cap >> 8) & 0x1f, 0b0110);
    assert_eq!((d.cap >> 16) & 0x3f, 47);
    assert_eq!((d.cap >> 40) & 0xff, 7);
    assert_ne!(d.cap & (1 << 39), 0);
}

// The whole Linux DMA-API cycle in legacy mode (VT-d 3.4.2, 3.7, 6.5.2.3, 7.2.1).
#[test]
fn legacy_map_dma_unmap_invalidate_stale_dma_faults() {
    let mut d = Driver::probe("aw-bits=48");
    let dev = rid(0, 3, 0);
    let ram = d.ram.clone();
    let pt = X86PageTable::new(&ram, Format::SecondLevel { levels: 4 });
    d.set_context_legacy(dev, 1, pt.root().0, 4, 0);
    pt.map(0x1000, 0x20_0000, PageSize::SIZE_4K, Perm::RW)
        .unwrap();
    pt.map(0x4000_0000, 0x8000_0000, PageSize::SIZE_2M, Perm::R)
        .unwrap();

    // First DMA walks (context miss, IOTLB miss), second hits the IOTLB.
    let t = d.dma(dev, 0x1234, Perm::R).unwrap();
    assert_eq!(t.output.0, 0x20_0234);
    assert_eq!(t.page_size, PageSize::SIZE_4K);
    assert!(t.path.contains(CachePath::WALK));
    assert_eq!(t.walk_reads, 2 + 4);
    let t2 = d.dma(dev, 0x1ff8, Perm::W).unwrap();
    assert_eq!(t2.output.0, 0x20_0ff8);
    assert!(
        t2.path
            .contains(CachePath::IOTLB_HIT | CachePath::CONTEXT_HIT)
    );
    assert!(t2.cycles < t.cycles);
    let t3 = d.dma(dev, 0x4012_3456, Perm::R).unwrap();
    assert_eq!(
        (t3.output.0, t3.page_size),
        (0x8012_3456, PageSize::SIZE_2M)
    );

    // Write to the read-only 2M page: fault reason 5, recorded, MSI raised.
    let f = d.dma(dev, 0x4000_0010, Perm::W).unwrap_err();
    assert_eq!(
        (f.reason, f.kind, f.recorded),
        (5, FaultKind::Permission, true)
    );
    assert_eq!(d.fault_msis(), 1);
    let fsts = u64::from(d.rd32(FSTS));
    assert_eq!(fsts & FSTS_PPF, FSTS_PPF);
    assert_eq!((fsts >> 8) & 0xff, 0, "FRI: first pending record");
    let seen = d.handle_fault();
    assert_eq!(
        seen,
        vec![SeenFault {
            reason: 5,
            sid: dev.0,
            addr: 0x4000_0000,
            read: false,
            pasid: None
        }]
    );
    assert_eq!(d.rd32(FSTS) & 0xff, 0, "PPF clear once F cleared");
    assert_eq!(d.rd32(FECTL), 0);

    // Unmap: until the IOTLB is invalidated, the cached translation may
    // still be used (6.5: software must invalidate).
    assert!(pt.unmap(0x1000));
    assert_eq!(d.dma(dev, 0x1234, Perm::R).unwrap().output.0, 0x20_0234);
    d.flush_iotlb_psi(1, 0x1000, 0, true);
    let f = d.dma(dev, 0x1234, Perm::R).unwrap_err();
    assert_eq!((f.reason, f.kind), (6, FaultKind::Permission));
    let f = d.dma(dev, 0x1238, Perm::W).unwrap_err();
    assert_eq!(f.reason, 5);
    // Faults pend in the records: one MSI for the first (FSTS was clear), none for the second.
    assert_eq!(d.fault_msis(), 1);
    let seen = d.handle_fault();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        (seen[0].reason, seen[0].read, seen[0].addr),
        (6, true, 0x1000)
    );
    assert_eq!((seen[1].reason, seen[1].read), (5, false));
    // The 2M mapping of the same domain survived the page-selective flush.
    assert!(
        d.dma(dev, 0x4000_0000, Perm::R)
            .unwrap()
            .path
            .contains(CachePath::IOTLB_HIT)
    );

    let s = d.vtd.stats();
    assert_eq!(s.faults_with_reason(5), 2);
    assert_eq!(s.faults_with_reason(6), 1);
    assert_eq!(s.faults_recorded, 3);
    assert!(
        s.to_string().contains("faults by reason: 0x05=2 0x06=1"),
        "{s}"
    );
    let (key, per) = &s.sources[0];
    assert_eq!(key.0, iommu_emulator::SourceId::Pci(dev));
    assert_eq!((per.faults, per.translations), (3, 5));
    assert!(
        s.to_string()
            .contains("source 00:03.0 pasid -: 5 translations, 3 faults"),
        "{s}"
    );
}

// VT-d 9.3: TT=10 passes through; TT=00 blocks ATS translation and
// translated requests with reason 0xD; TT=01 needs ECAP.DT (else reason 3).
#[test]
fn legacy_translation_types() {
    let mut d = Driver::probe("device-iotlb=on");
    let pt_dev = rid(0, 4, 0);
    d.set_context_legacy(pt_dev, 2, 0, 4, 2);
    let t = d.dma(pt_dev, 0x1234_5678, Perm::RW).unwrap();
    assert_eq!(t.output.0, 0x1234_5678);
    assert!(t.path.contains(CachePath::BYPASS));

    let dev = rid(0, 5, 0);
    let ram = d.ram.clone();
    let pt = X86PageTable::new(&ram, Format::SecondLevel { levels: 4 });
    pt.map(0x1000, 0x9000, PageSize::SIZE_4K, Perm::R).unwrap();
    d.set_context_legacy(dev, 3, pt.root().0, 4, 0);
    let req =
        iommu_emulator::DmaRequest::new(iommu_emulator::SourceId::Pci(dev), 0x1000, 4, Perm::R)
            .with_kind(RequestKind::AtsTranslation);
    use iommu_emulator::Iommu;
    let f = d.vtd.translate(d.ram.as_ref(), &req).unwrap_err();
    assert_eq!(f.reason, 0xd);
    // With TT=01 the ATS translation request is answered.
    let ats_dev = rid(0, 6, 0);
    d.set_context_legacy(ats_dev, 3, pt.root().0, 4, 1);
    let req =
        iommu_emulator::DmaRequest::new(iommu_emulator::SourceId::Pci(ats_dev), 0x1000, 4, Perm::R)
            .with_kind(RequestKind::AtsTranslation);
    assert_eq!(
        d.vtd.translate(d.ram.as_ref(), &req).unwrap().output.0,
        0x9000
    );

    let mut d2 = Driver::probe("device-iotlb=off");
    d2.set_context_legacy(dev, 3, pt.root().0, 4, 1);
    assert_eq!(d2.dma(dev, 0x1000, Perm::R).unwrap_err().reason, 3);
}

// VT-d 3.4.2 / Appendix A: root and context faults.
#[test]
fn legacy_missing_root_and_context_entries_fault() {
    let mut d = Driver::probe("");
    // No root entry for bus 7: reason 1.
    assert_eq!(d.dma(rid(7, 0, 0), 0, Perm::R).unwrap_err().reason, 1);
    // Root present, context not: reason 2.
    let a = d.legacy_context_addr(rid(0, 9, 0));
    assert_eq!(d.dma(rid(0, 9, 0), 0, Perm::R).unwrap_err().reason, 2);
    // Reserved bits in the context entry: 0xB; AW not supported: 3.
    d.ram.write_u64(Gpa(a + 8), 2 | (1 << 40)).unwrap();
    d.ram.write_u64(Gpa(a), 0x10_0000 | 1).unwrap();
    assert_eq!(d.dma(rid(0, 9, 0), 0, Perm::R).unwrap_err().reason, 0xb);
    d.set_context_legacy(rid(0, 10, 0), 1, 0x10_0000, 5, 0);
    assert_eq!(d.dma(rid(0, 10, 0), 0, Perm::R).unwrap_err().reason, 3);
    // Address beyond MGAW (48 bits): 4.
    d.set_context_legacy(rid(0, 11, 0), 1, 0x10_0000, 4, 0);
    assert_eq!(
        d.dma(rid(0, 11, 0), 1 << 48, Perm::R).unwrap_err().reason,
        4
    );
    // Reserved bit in a paging entry: 0xC.
    let ram = d.ram.clone();
    let pt = X86PageTable::new(&ram, Format::SecondLevel { levels: 4 });
    pt.map(0, 0x5000, PageSize::SIZE_4K, Perm::R).unwrap();
    pt.set_bits(0, 1 << 50, 0).unwrap();
    d.set_context_legacy(rid(0, 12, 0), 1, pt.root().0, 4, 0);
    assert_eq!(d.dma(rid(0, 12, 0), 0, Perm::R).unwrap_err().reason, 0xc);
    // Output in the interrupt range: 0xE.
    pt.map(0x2000, 0xfee0_0000, PageSize::SIZE_4K, Perm::RW)
        .unwrap();
    assert_eq!(
        d.dma(rid(0, 12, 0), 0x2000, Perm::W).unwrap_err().reason,
        0xe
    );
    let seen = d.handle_fault();
    let reasons: Vec<u8> = seen.iter().map(|f| f.reason).collect();
    assert_eq!(reasons, vec![1, 2, 0xb, 3, 4, 0xc, 0xe]);
}

// VT-d 9.3 FPD: faults are not recorded, but still returned and counted.
#[test]
fn legacy_fpd_suppresses_fault_recording() {
    let mut d = Driver::probe("");
    let dev = rid(0, 3, 0);
    let ram = d.ram.clone();
    let pt = X86PageTable::new(&ram, Format::SecondLevel { levels: 4 });
    d.set_context_legacy(dev, 1, pt.root().0, 4, 0);
    let a = d.legacy_context_addr(dev);
    let lo = d.ram.read_u64(Gpa(a)).unwrap();
    d.ram.write_u64(Gpa(a), lo | 2).unwrap();
    let f = d.dma(dev, 0x1000, Perm::R).unwrap_err();
    assert_eq!((f.reason, f.recorded), (6, false));
    assert_eq!(d.rd32(FSTS), 0);
    assert_eq!(d.fault_msis(), 0);
    assert_eq!(d.vtd.stats().faults_fpd_suppressed, 1);
}

// VT-d 7.2.1: with every record in use the next fault sets PFO and is
// dropped (counted); once the driver clears records and PFO, recording resumes.
#[test]
fn legacy_fault_overflow_sets_pfo_and_counts_dropped() {
    let d = Driver::probe("fault-regs=2");
    for bus in 1..=4u8 {
        let f = d.dma(rid(bus, 0, 0), 0, Perm::R).unwrap_err();
        assert_eq!(f.recorded, bus <= 2, "bus {bus}");
    }
    let fsts = u64::from(d.rd32(FSTS));
    assert_eq!(fsts & (FSTS_PFO | FSTS_PPF), FSTS_PFO | FSTS_PPF);
    assert_eq!(d.vtd.stats().faults_overflow_dropped, 2);
    assert_eq!(d.fault_msis(), 1);
    let seen = d.handle_fault();
    assert_eq!(
        seen.iter().map(|f| f.sid >> 8).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(d.rd32(FSTS) & 0x3, 0);
    assert!(d.dma(rid(5, 0, 0), 0, Perm::R).unwrap_err().recorded);
    assert_eq!(d.fault_msis(), 1);
}

// VT-d 11.4.7.2: a masked fault event sets IP; unmasking delivers it once.
#[test]
fn legacy_fault_event_masked_until_unmasked() {
    let d = Driver::probe("");
    d.wr32(FECTL, ECTL_IM as u32);
    d.dma(rid(1, 0, 0), 0, Perm::R).unwrap_err();
    assert_eq!(d.fault_msis(), 0);
    assert_eq!(u64::from(d.rd32(FECTL)), ECTL_IM | ECTL_IP);
    d.wr32(FECTL, 0);
    assert_eq!(d.fault_msis(), 1);
    assert_eq!(d.rd32(FECTL), 0);
    // Masked again with the fault serviced: IP cleared by servicing.
    d.wr32(FECTL, ECTL_IM as u32);
    d.dma(rid(1, 0, 0), 0, Perm::R).unwrap_err();
    d.handle_fault();
    assert_eq!(u64::from(d.rd32(FECTL)), ECTL_IM);
}

// Register-based invalidation (11.4.6, 11.4.8) as Linux uses it without QI.
#[test]
fn legacy_register_based_invalidation() {
    let mut d = Driver::probe("qi=off");
    assert!(!d.qi);
    assert_eq!(u64::from(d.rd32(GSTS)) & GCMD_QIE, 0);
    let dev = rid(0, 3, 0);
    let ram = d.ram.clone();
    let pt = X86PageTable::new(&ram, Format::SecondLevel { levels: 3 });
    d.set_context_legacy(dev, 7, pt.root().0, 3, 0);
    pt.map(0x3000, 0x7000, PageSize::SIZE_4K, Perm::RW).unwrap();
    assert_eq!(d.dma(dev, 0x3000, Perm::R).unwrap().output.0, 0x7000);
    pt.map(0x3000, 0x8000, PageSize::SIZE_4K, Perm::RW).unwrap();
    assert_eq!(
        d.dma(dev, 0x3000, Perm::R).unwrap().output.0,
        0x7000,
        "stale until flushed"
    );
    d.flush_iotlb_psi(7, 0x3000, 0, false);
    assert_eq!(d.dma(dev, 0x3000, Perm::R).unwrap().output.0, 0x8000);
    // Domain-selective flush reports IAIG=2; device-selective context flush CAIG=3.
    assert_eq!(d.iotlb_reg((2 << IOTLB_IIRG_SHIFT) | (7 << 32), 0), 2);
    assert_eq!(
        d.ccmd(CCMD_ICC | (3 << CCMD_CIRG_SHIFT) | (u64::from(dev.0) << 16) | 7),
        3
    );
    // Reserved granularity: CAIG 0 reports the failure.
    assert_eq!(d.ccmd(CCMD_ICC), 0);
    let s = d.vtd.stats();
    assert_eq!(s.invalidations_of("iotlb-register"), 3);
    assert_eq!(s.invalidations_of("ccmd-register"), 2);
}

// Unknown offsets read as zero, ignore writes and are counted.
#[test]
fn unknown_register_offsets_read_zero_and_are_counted() {
    let d = Driver::probe("fault-regs=2");
    assert_eq!(d.rd64(0x300), 0); // beyond the two fault records
    d.wr64(0x300, 0xffff);
    assert_eq!(d.rd64(0x300), 0);
    assert_eq!(d.rd32(0xf00), 0);
    d.wr32(0x50, 1);
    let (r, w) = d.vtd.stats().unknown_accesses;
    assert_eq!((r, w), (3, 2));
    // Read-only registers ignore writes.
    let cap = d.rd64(CAP);
    d.wr64(CAP, 0);
    assert_eq!(d.rd64(CAP), cap);
}

// VT-d 6.2.5 / 6.5.2.3: paging-structure caches keep non-leaf entries, so
// a driver that frees a page table must invalidate with IH=0. With IH=1
// (only leaves changed) the cached pointer to the freed table is still
// used, as on hardware; with IH=0 the walk sees the cleared entry.
#[test]
fn legacy_freed_page_table_needs_ih_clear() {
    let mut d = Driver::probe("");
    let dev = rid(0, 3, 0);
    let ram = d.ram.clone();
    let pt = X86PageTable::new(&ram, Format::SecondLevel { levels: 4 });
    d.set_context_legacy(dev, 1, pt.root().0, 4, 0);
    pt.map(0x1000, 0x20_0000, PageSize::SIZE_4K, Perm::RW)
        .unwrap();
    assert_eq!(d.dma(dev, 0x1000, Perm::R).unwrap().output.0, 0x20_0000);
    // Find and clear the level-2 entry (PDE) covering 0..2M: Linux's
    // dma_pte_free_level() unhooking a page table.
    let pml4e = d.ram.read_u64(pt.root()).unwrap();
    let pdpte = d.ram.read_u64(Gpa(pml4e & !0xfff)).unwrap();
    let pde_addr = Gpa(pdpte & !0xfff);
    assert_ne!(d.ram.read_u64(pde_addr).unwrap() & 3, 0);
    d.ram.write_u64(pde_addr, 0).unwrap();
    d.flush_iotlb_psi(1, 0, 9, true);
    let t = d.dma(dev, 0x1000, Perm::R).unwrap();
    assert_eq!(
        t.output.0, 0x20_0000,
        "stale page-table pointer still cached"
    );
    assert!(t.path.contains(CachePath::PWC_HIT));
    assert_eq!(t.walk_reads, 1);
    d.flush_iotlb_psi(1, 0, 9, false);
    let f = d.dma(dev, 0x1000, Perm::R).unwrap_err();
    assert_eq!((f.reason, f.level), (6, Some(2)));
}
