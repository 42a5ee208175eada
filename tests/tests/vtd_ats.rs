//! Conformance: ATS (VT-d 4.2, 9.3 TT, 9.4 DTE; PCIe ATS completions) as
//! Linux sets it up: device-TLB translation type (TT=01) in legacy context
//! entries and DTE in scalable-mode context entries when the device has ATS
//! and ECAP.DT is set (iommu_enable_pci_caps / domain_context_mapping_one /
//! intel_pasid_setup_*). A translation request is answered with a
//! completion (output page, size, R/W, Priv) only then; translated
//! requests pass only then.

mod vtd_support;

use iommu_emulator::testing::x86_pt::{Format, X86PageTable};
use iommu_emulator::{DmaRequest, Iommu, PageSize, Perm, RequestKind, Rid, SourceId};
use vtd_support::*;

fn ats(r: Rid, addr: u64, access: Perm) -> DmaRequest {
    DmaRequest::new(SourceId::Pci(r), addr, 4, access).with_kind(RequestKind::AtsTranslation)
}

fn translated(r: Rid, addr: u64) -> DmaRequest {
    DmaRequest::new(SourceId::Pci(r), addr, 4, Perm::W).with_kind(RequestKind::Translated)
}

// 9.3: legacy TT=01 answers translation requests with the page's rights
// and size and lets translated requests through; TT=00 blocks both (0xD).
#[test]
fn ats_legacy_device_tlb_type_completes_translation() {
    let mut d = Driver::probe("device-iotlb=on");
    assert_ne!(d.ecap & (1 << 2), 0, "ECAP.DT");
    let ram = d.ram.clone();
    let pt = X86PageTable::new(&ram, Format::SecondLevel { levels: 4 });
    pt.map(0x20_0000, 0x4000_0000, PageSize::SIZE_2M, Perm::R)
        .unwrap();
    let ats_dev = rid(0, 3, 0);
    let plain = rid(0, 4, 0);
    d.set_context_legacy(ats_dev, 1, pt.root().0, 4, 1);
    d.set_context_legacy(plain, 2, pt.root().0, 4, 0);
    let t = d
        .vtd
        .translate(d.ram.as_ref(), &ats(ats_dev, 0x20_1234, Perm::R))
        .unwrap();
    assert_eq!(t.output.0, 0x4000_1234);
    assert_eq!(t.page_size, PageSize::SIZE_2M);
    assert!(t.perm.contains(Perm::R) && !t.perm.contains(Perm::W));
    assert!(!t.privileged);
    let t = d
        .vtd
        .translate(d.ram.as_ref(), &translated(ats_dev, 0x4000_1000))
        .unwrap();
    assert_eq!(t.output.0, 0x4000_1000);
    for req in [
        ats(plain, 0x20_1234, Perm::R),
        translated(plain, 0x4000_1000),
    ] {
        assert_eq!(
            d.vtd.translate(d.ram.as_ref(), &req).unwrap_err().reason,
            0xd
        );
    }
    // The untranslated path still works for both.
    assert!(d.dma(plain, 0x20_0000, Perm::R).is_ok());
}

// 9.4: without ECAP.DT, DTE in a scalable context entry is invalid (a
// context-entry fault), so no translation request is ever answered.
#[test]
fn ats_scalable_dte_without_ecap_dt_faults() {
    let mut d = Driver::probe("x-scalable-mode=on,aw-bits=48");
    assert_eq!(d.ecap & (1 << 2), 0);
    let r = rid(0, 3, 0);
    d.set_context_sm(r, 1 << 2);
    let f = d
        .vtd
        .translate(d.ram.as_ref(), &ats(r, 0, Perm::R))
        .unwrap_err();
    assert_ne!(f.reason, 0);
    let f2 = d.dma(r, 0, Perm::R).unwrap_err();
    assert_eq!(f.reason, f2.reason, "the context entry itself is bad");
}

// 9.4 + first-level U/S: a supervisor-only page is reported with Priv set
// to a privileged translation request with PASID.
#[test]
fn ats_scalable_first_level_priv_bit() {
    let mut d = Driver::probe("x-scalable-mode=on,aw-bits=48,device-iotlb=on,x-pasid-mode=on");
    let ram = d.ram.clone();
    let pt = X86PageTable::new(&ram, Format::FirstLevel { levels: 4 });
    pt.map(0x1000, 0x9000, PageSize::SIZE_4K, Perm::RW).unwrap();
    let r = rid(0, 3, 0);
    let dir = d.set_context_sm(r, (1 << 2) | (1 << 3));
    d.set_pasid_entry(dir, 5, pasid_fl(3, pt.root().0, true));
    let req = ats(r, 0x1000, Perm::W).with_pasid(iommu_emulator::PasidTag {
        pasid: iommu_emulator::Pasid::new(5).unwrap(),
        privileged: true,
        exec: false,
    });
    let t = d.vtd.translate(d.ram.as_ref(), &req).unwrap();
    assert_eq!((t.output.0, t.page_size), (0x9000, PageSize::SIZE_4K));
    assert!(t.perm.contains(Perm::W));
    assert!(t.privileged, "supervisor mapping: Priv in the completion");
}
