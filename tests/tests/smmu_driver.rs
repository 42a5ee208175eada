//! Driver-sequence conformance for the SMMUv3 model: a small Rust "driver"
//! that programs the model step by step the way Linux's arm-smmu-v3 driver
//! does (probe, reset, queues, two-level stream table, STEs, CDs for
//! several SSIDs, map, DMA, unmap + TLBI + CMD_SYNC, fault in the event
//! queue, PRI request answered by PRI_RESP), asserting the memory and
//! register effects at every step. Field positions are written here from
//! IHI 0070 (and checked against what Linux's driver uses), independently
//! of the model's own decoders.

mod smmu_support;

use iommu_emulator::testing::vmsa_pt::{Leaf, VmsaTables};
use iommu_emulator::walk::vmsa::{Granule, Stage, WalkConfig};
use iommu_emulator::{
    CachePath, DmaRequest, FaultKind, Gpa, GuestRam, Iommu, PageSize, Perm, RequestKind,
};
use smmu_model::{DeviceMessage, PageRequest};
use smmu_support::*;
use std::sync::Arc;

// The whole Linux flow: probe, reset, STE + CDs for SSIDs 0, 1, 5 and 1030
// (second level-2 CD table), map, DMA with and without SSID, unmap + TLBI
// + CMD_SYNC, F_TRANSLATION in the event queue with its MSI, ATC_INV.
#[test]
fn smmu_linux_flow_maps_translates_invalidates_and_faults() {
    let mut d = Driver::new("");
    d.reset();
    assert_eq!(
        d.rd(CR0ACK),
        CR0_SMMUEN | CR0_CMDQEN | CR0_EVTQEN | CR0_PRIQEN | CR0_ATSCHK
    );
    assert!(d.msi.messages().is_empty());

    let sid: u32 = 0x0108; // 01:01.0
    let cds = CdTable::new(&d, 20);
    // Page tables for three address spaces.
    let ram = d.ram.clone();
    let mut pt0 = VmsaTables::new(&ram, s1_cfg()).unwrap();
    let mut pt1 = VmsaTables::new(&ram, s1_cfg()).unwrap();
    let mut pt5 = VmsaTables::new(&ram, s1_cfg()).unwrap();
    pt0.map(0x1000_0000, 0x8000_0000, PageSize::SIZE_4K, Leaf::rw())
        .unwrap();
    pt1.map(0x1000_0000, 0x8100_0000, PageSize::SIZE_4K, Leaf::rw())
        .unwrap();
    pt1.map(0x4000_0000, 0xc000_0000, PageSize::SIZE_2M, Leaf::ro())
        .unwrap();
    pt5.map(0x1000_0000, 0x8500_0000, PageSize::SIZE_4K, Leaf::rw())
        .unwrap();
    cds.install(&mut d, sid, 0, 10, pt0.config().ttb);
    cds.install(&mut d, sid, 1, 11, pt1.config().ttb);
    cds.install(&mut d, sid, 5, 15, pt5.config().ttb);
    cds.install(&mut d, sid, 1030, 16, pt5.config().ttb);
    let ste_at = d.install_ste(sid, cds.ste(20));
    assert_eq!(d.mem64(ste_at) & 0xf, 0b1011, "STE V + S1 translate");

    // DMA without SSID uses CD 0 (S1DSS=SSID0); with SSIDs their own CDs.
    let t = dma(&d, pci(1, 1), None, 0x1000_0123, Perm::W).unwrap();
    assert_eq!(t.output, Gpa(0x8000_0123));
    assert!(t.path.contains(CachePath::WALK));
    assert_eq!(
        t.walk_reads,
        2 + 2 + 4,
        "L1STD + STE, L1CD + CD, 4 table levels"
    );
    let t = dma(&d, pci(1, 1), Some(1), 0x1000_0008, Perm::R).unwrap();
    assert_eq!(t.output, Gpa(0x8100_0008));
    let t = dma(&d, pci(1, 1), Some(1), 0x4012_3456, Perm::R).unwrap();
    assert_eq!(
        (t.output, t.page_size),
        (Gpa(0xc012_3456), PageSize::SIZE_2M)
    );
    assert_eq!(
        dma(&d, pci(1, 1), Some(5), 0x1000_0000, Perm::R)
            .unwrap()
            .output,
        Gpa(0x8500_0000)
    );
    assert_eq!(
        dma(&d, pci(1, 1), Some(1030), 0x1000_0010, Perm::R)
            .unwrap()
            .output,
        Gpa(0x8500_0010)
    );
    // Second access hits the TLB and the configuration caches.
    let t = dma(&d, pci(1, 1), Some(1), 0x1000_0010, Perm::R).unwrap();
    assert!(
        t.path
            .contains(CachePath::IOTLB_HIT | CachePath::CONTEXT_HIT | CachePath::PASID_HIT)
    );
    assert_eq!(t.walk_reads, 0);
    assert!(d.take_event().is_none(), "no events so far");

    // Write to a read-only 2M block: F_PERMISSION with SSV and RnW=0.
    let f = dma(&d, pci(1, 1), Some(1), 0x4000_0040, Perm::W).unwrap_err();
    assert_eq!(
        (f.kind, f.reason, f.recorded),
        (FaultKind::Permission, 0x13, true)
    );
    let ev = d.take_event().expect("F_PERMISSION record");
    assert_eq!(ev[0], 0x13 | (1 << 11) | (1 << 12) | (u64::from(sid) << 32));
    assert_eq!(ev[1] & (1 << 35), 0, "RnW = write");
    assert_eq!((ev[1] >> 40) & 3, 2, "CLASS = IN");
    assert_eq!(ev[2], 0x4000_0040);
    let msgs = d.msi.take();
    assert_eq!(msgs.len(), 1);
    assert_eq!((msgs[0].addr, msgs[0].data), (EVTQ_MSI, 0x101));

    // SSID 0 with S1DSS=SSID0 is F_STREAM_DISABLED (5.2 S1DSS); CD 2 has
    // no valid CD: C_BAD_CD.
    let f = dma(&d, pci(1, 1), Some(0), 0x1000_0000, Perm::R).unwrap_err();
    assert_eq!(f.reason, 0x06);
    assert_eq!(
        d.take_event().unwrap()[0],
        0x06 | (1 << 11) | (u64::from(sid) << 32)
    );
    let f = dma(&d, pci(1, 1), Some(2), 0x1000_0000, Perm::R).unwrap_err();
    assert_eq!(f.reason, 0x0a);
    let ev = d.take_event().unwrap();
    assert_eq!(ev[0], 0x0a | (1 << 11) | (2 << 12) | (u64::from(sid) << 32));
    // A level-2 CD table that does not exist: L1CD.V=0.
    let f = dma(&d, pci(1, 1), Some(5000), 0x1000_0000, Perm::R).unwrap_err();
    assert_eq!(f.reason, 0x08);
    d.take_event().unwrap();

    // Unmap SSID 1's page: the stale TLB entry still translates until the
    // TLBI (architecturally allowed), then the walk faults.
    pt1.unmap(0x1000_0000).unwrap();
    assert_eq!(
        dma(&d, pci(1, 1), Some(1), 0x1000_0000, Perm::R)
            .unwrap()
            .output,
        Gpa(0x8100_0000)
    );
    // arm_smmu_tlb_inv_range_asid with RIL: TG=4K, SCALE=0, NUM=0, TTL=3.
    let va = OP_TLBI_NH_VA | (11u64 << 48);
    d.issue(&[[va, 0x1000_0000 | (1 << 10) | (3 << 8) | 1]]);
    // ATS enabled for the master: ATC invalidation follows.
    d.issue(&[[
        OP_ATC_INV | (1 << 11) | (1 << 12) | (u64::from(sid) << 32),
        0x1000_0000,
    ]]);
    assert_eq!(
        d.smmu.take_device_messages(),
        vec![DeviceMessage::AtcInvalidate {
            sid,
            ssid: Some(1),
            addr: 0x1000_0000,
            size: 0,
            global: false
        }]
    );
    let f = dma(&d, pci(1, 1), Some(1), 0x1000_0000, Perm::R).unwrap_err();
    assert_eq!((f.kind, f.level), (FaultKind::NotPresent, Some(3)));
    let ev = d.take_event().expect("F_TRANSLATION record");
    assert_eq!(ev[0], 0x10 | (1 << 11) | (1 << 12) | (u64::from(sid) << 32));
    assert_ne!(ev[1] & (1 << 35), 0, "RnW = read");
    assert_eq!(ev[2], 0x1000_0000);
    // Other address spaces are untouched by SSID 1's invalidation.
    let t = dma(&d, pci(1, 1), None, 0x1000_0000, Perm::R).unwrap();
    assert!(t.path.contains(CachePath::IOTLB_HIT));

    // Remap elsewhere, invalidate the whole ASID, translate again.
    pt1.map(0x1000_0000, 0x8200_0000, PageSize::SIZE_4K, Leaf::rw())
        .unwrap();
    d.issue(&[[OP_TLBI_NH_ASID | (11u64 << 48), 0]]);
    assert_eq!(
        dma(&d, pci(1, 1), Some(1), 0x1000_0000, Perm::R)
            .unwrap()
            .output,
        Gpa(0x8200_0000)
    );

    // Statistics saw all of it.
    let s = d.smmu.stats();
    assert_eq!(s.events_written, 5);
    assert_eq!(s.events_lost(), 0);
    assert!(s.commands_of(0x46) >= 10);
    assert_eq!(s.commands_of(0x12), 1);
    assert!(s.tlb.hits >= 2);
    let report = s.to_string();
    assert!(report.contains("F_PERMISSION"), "{report}");
}

// IHI 0070 3.9: ATS translation requests are answered for EATS streams;
// a denied one is not an event; without EATS it is F_BAD_ATS_TREQ.
#[test]
fn smmu_ats_translation_answers_and_bad_treq() {
    let mut d = Driver::new("");
    d.reset();
    let ram = d.ram.clone();
    let mut pt = VmsaTables::new(&ram, s1_cfg()).unwrap();
    pt.map(0x2000, 0x9000, PageSize::SIZE_4K, Leaf::ro())
        .unwrap();
    let cds = CdTable::new(&d, 10);
    cds.install(&mut d, 0x10, 0, 1, pt.config().ttb);
    d.install_ste(0x10, cds.ste(10));
    let req =
        DmaRequest::new(pci(0, 2), 0x2000, 4096, Perm::RW).with_kind(RequestKind::AtsTranslation);
    let t = d.smmu.translate(d.ram.as_ref(), &req).unwrap();
    assert_eq!((t.output, t.perm & Perm::RW), (Gpa(0x9000), Perm::R));
    let req =
        DmaRequest::new(pci(0, 2), 0x5000, 4096, Perm::R).with_kind(RequestKind::AtsTranslation);
    let f = d.smmu.translate(d.ram.as_ref(), &req).unwrap_err();
    assert!(!f.recorded);
    assert!(d.take_event().is_none());
    // Same stream with EATS=0.
    let mut ste = cds.ste(10);
    ste[1] &= !(3 << 28);
    d.install_ste(0x10, ste);
    let req =
        DmaRequest::new(pci(0, 2), 0x2000, 4096, Perm::R).with_kind(RequestKind::AtsTranslation);
    assert_eq!(
        d.smmu.translate(d.ram.as_ref(), &req).unwrap_err().reason,
        0x05
    );
    assert_eq!(d.take_event().unwrap()[0] & 0xff, 0x05);
}

// IHI 0070 8: a page request lands in the PRI queue with its MSI; the
// driver answers with CMD_PRI_RESP, which reaches the device.
#[test]
fn smmu_pri_request_answered_by_pri_resp() {
    let mut d = Driver::new("");
    d.reset();
    let req = PageRequest {
        sid: 0x108,
        ssid: Some(7),
        addr: 0x7777_7000,
        read: true,
        write: true,
        exec: false,
        privileged: false,
        last: true,
        prg_index: 0x33,
    };
    assert_eq!(
        d.smmu.page_request(d.ram.as_ref(), &req),
        smmu_model::priq::PriOutcome::Queued
    );
    assert_eq!(d.rd(PRIQ_PROD), 1);
    let w0 = d.mem64(d.priq);
    let w1 = d.mem64(d.priq + 8);
    // arm_smmu_handle_ppr's view of the record.
    assert_eq!(w0 & 0xffff_ffff, 0x108);
    assert_eq!((w0 >> 32) & 0xf_ffff, 7);
    assert_ne!(w0 & (1 << 63), 0, "SSID_V");
    assert_ne!(w0 & (1 << 62), 0, "PRG_LAST");
    assert_ne!(w0 & (1 << 60), 0, "READ");
    assert_ne!(w0 & (1 << 61), 0, "WRITE");
    assert_eq!((w1 & 0x1ff, w1 & !0xfff), (0x33, 0x7777_7000));
    assert_eq!(
        d.msi
            .take()
            .iter()
            .map(|m| (m.addr, m.data))
            .collect::<Vec<_>>(),
        vec![(PRIQ_MSI, 0x102)]
    );
    d.priq_cons = 1;
    d.wr(PRIQ_CONS, u64::from(d.priq_cons));
    d.issue(&[[
        OP_PRI_RESP | (1 << 11) | (7 << 12) | (0x108u64 << 32),
        0x33 | (2 << 12),
    ]]);
    assert_eq!(
        d.smmu.take_device_messages(),
        vec![DeviceMessage::PriResponse {
            sid: 0x108,
            ssid: Some(7),
            grpid: 0x33,
            resp: 2,
            automatic: false
        }]
    );
}

// IHI 0070 4.1.3 / 7.1: an illegal command stops the queue with
// CERROR_ILL; Linux replaces it with CMD_SYNC and acknowledges GERRORN.
#[test]
fn smmu_illegal_command_halts_queue_until_gerrorn() {
    let mut d = Driver::new("");
    d.reset();
    let n = 1u32 << d.cmdq_log2;
    let base = d.cmdq;
    let p = d.cmdq_prod;
    let slot = |x: u32| base + u64::from(x & (n - 1)) * 16;
    d.ram.write_u64(Gpa(slot(p)), 0x7f).unwrap(); // reserved opcode
    d.ram.write_u64(Gpa(slot(p) + 8), 0).unwrap();
    d.ram.write_u64(Gpa(slot(p + 1)), OP_TLBI_NSNH_ALL).unwrap();
    d.ram.write_u64(Gpa(slot(p + 1) + 8), 0).unwrap();
    d.wr(CMDQ_PROD, u64::from(p + 2));
    let cons = d.rd(CMDQ_CONS);
    assert_eq!(
        cons & 0xfffff,
        u64::from(p),
        "CONS stops at the bad command"
    );
    assert_eq!((cons >> 24) & 0x7f, 1, "CERROR_ILL");
    let gerror = d.rd(GERROR);
    assert_eq!((gerror ^ d.rd(GERRORN)) & 1, 1, "CMDQ_ERR active");
    assert_eq!(
        d.msi
            .take()
            .iter()
            .map(|m| (m.addr, m.data))
            .collect::<Vec<_>>(),
        vec![(GERROR_MSI, 0x100)]
    );
    // Writing PROD again does nothing while the error is active.
    d.wr(CMDQ_PROD, u64::from(p + 2));
    assert_eq!(d.rd(CMDQ_CONS) & 0xfffff, u64::from(p));
    // __arm_smmu_cmdq_skip_err: overwrite with CMD_SYNC (CS=NONE), ack.
    d.ram.write_u64(Gpa(slot(p)), OP_CMD_SYNC).unwrap();
    d.wr(GERRORN, gerror);
    assert_eq!(
        d.rd(CMDQ_CONS) & 0xfffff,
        u64::from(p + 2),
        "resumed to PROD"
    );
    d.cmdq_prod = p + 2;
    assert_eq!(d.smmu.stats().commands_illegal, 1);
    d.issue(&[[OP_TLBI_NSNH_ALL, 0]]);
}

// IHI 0070 7.4: a full event queue toggles EVENTQ_PROD.OVFLG and counts
// the lost event; acknowledging with CONS.OVACKFLG rearms it.
#[test]
fn smmu_event_queue_overflow_sets_ovflg_and_counts() {
    let mut d = Driver::new("");
    d.reset();
    // Shrink the event queue to 2 entries.
    let cr0 = d.rd(CR0);
    d.write_sync(CR0, CR0ACK, cr0 & !CR0_EVTQEN);
    d.wr64(EVTQ_BASE, d.evtq | 1);
    d.wr(EVTQ_PROD, 0);
    d.wr(EVTQ_CONS, 0);
    d.write_sync(CR0, CR0ACK, cr0);
    // StreamIDs with no level-2 table: C_BAD_STREAMID each.
    for i in 0..3 {
        let f = dma(&d, pci(0x40, i), None, 0, Perm::R).unwrap_err();
        assert_eq!(f.reason, 0x02);
        assert_eq!(f.recorded, i < 2);
    }
    let prod = d.rd(EVTQ_PROD);
    assert_eq!(prod & 0x3, 2, "index 0 with wrap bit");
    assert_ne!(prod & (1 << 31), 0, "OVFLG");
    let s = d.smmu.stats();
    assert_eq!((s.events_written, s.events_dropped_overflow), (2, 1));
    // Consume both and acknowledge the overflow.
    d.wr(EVTQ_CONS, 2 | (1 << 31));
    assert!(
        dma(&d, pci(0x40, 9), None, 0, Perm::R)
            .unwrap_err()
            .recorded
    );
    assert_eq!(d.rd(EVTQ_PROD), 3 | (1 << 31));
}

// IHI 0070 6.3.14: GBPA needs the UPDATE handshake; with SMMUEN=0 it
// decides between bypass and abort.
#[test]
fn smmu_gbpa_update_handshake_controls_bypass() {
    let d = Driver::new("");
    assert_eq!(
        dma(&d, pci(0, 1), None, 0x1234, Perm::R).unwrap().output,
        Gpa(0x1234)
    );
    d.wr(GBPA, 1 << 20); // no UPDATE: ignored
    assert_eq!(d.rd(GBPA) & (1 << 20), 0);
    d.wr(GBPA, (1 << 31) | (1 << 20));
    assert_eq!(d.rd(GBPA), 1 << 20, "UPDATE cleared, ABORT set");
    let f = dma(&d, pci(0, 1), None, 0x1234, Perm::R).unwrap_err();
    assert_eq!((f.kind, f.recorded), (FaultKind::Blocked, false));
}

// IHI 0070 5.2: stage-2 STE and a nested STE whose CD and stage-1 tables
// live in IPA space; TLBI_S2_IPA and TLBI_S12_VMALL.
#[test]
fn smmu_stage2_and_nested_translate_and_invalidate() {
    let mut d = Driver::new("");
    d.reset();
    let ram = d.ram.clone();
    let s2cfg = WalkConfig {
        stage: Stage::Two,
        granule: Granule::G4K,
        tsz: 24,
        sl0: 1,
        oas_bits: 48,
        ttb: 0,
        affd: false,
    };
    let mut s2 = VmsaTables::new(&ram, s2cfg).unwrap();
    // Identity-map 64 MiB of IPA with 2M blocks, except one 4K page.
    for b in 0..32u64 {
        if b != 8 {
            s2.map(b << 21, b << 21, PageSize::SIZE_2M, Leaf::rw())
                .unwrap();
        }
    }
    // The rest of guest RAM the tables use (builder allocations) is
    // identity-mapped too, with 1G blocks.
    for g in 1..4u64 {
        s2.map(g << 30, g << 30, PageSize::SIZE_1G, Leaf::rw())
            .unwrap();
    }
    s2.map(0x100_0000, 0x5000, PageSize::SIZE_4K, Leaf::rw())
        .unwrap();
    let vtcr = 24 | (1 << 6) | (1 << 8) | (1 << 10) | (3 << 12) | (5 << 16);
    let s2ttb = s2.config().ttb;
    let ste_s2 = |vmid: u64| -> [u64; 8] {
        let w2 = vmid | (vtcr << 32) | (1 << 51) | (1 << 58);
        [1 | (6 << 1), 0, w2, s2ttb, 0, 0, 0, 0]
    };
    d.install_ste(0x200, ste_s2(3));
    let t = dma(&d, pci(2, 0), None, 0x40_1234, Perm::W).unwrap();
    assert_eq!((t.output, t.page_size), (Gpa(0x40_1234), PageSize::SIZE_2M));
    let t = dma(&d, pci(2, 0), None, 0x100_0010, Perm::W).unwrap();
    assert_eq!(t.output, Gpa(0x5010));
    // Remap the 4K page; TLBI_S2_IPA makes it visible.
    s2.map(0x100_0000, 0x6000, PageSize::SIZE_4K, Leaf::rw())
        .unwrap();
    assert_eq!(
        dma(&d, pci(2, 0), None, 0x100_0010, Perm::W)
            .unwrap()
            .output,
        Gpa(0x5010)
    );
    d.issue(&[[OP_TLBI_S2_IPA | (3u64 << 32), 0x100_0000]]);
    assert_eq!(
        dma(&d, pci(2, 0), None, 0x100_0010, Perm::W)
            .unwrap()
            .output,
        Gpa(0x6010)
    );

    // Nested: stage 1 tables (and the CD) addressed by IPA = PA here
    // except for the remapped page.
    let mut pt = VmsaTables::new(&ram, s1_cfg()).unwrap();
    pt.map(0x7000_0000, 0x100_0000, PageSize::SIZE_4K, Leaf::rw())
        .unwrap();
    let cds = CdTable::new(&d, 4);
    cds.install(&mut d, 0x201, 0, 9, pt.config().ttb);
    let mut ste = cds.ste(0);
    ste[0] = (ste[0] & !(7 << 1)) | (7 << 1);
    ste[2] = ste_s2(3)[2];
    ste[3] = s2ttb;
    d.install_ste(0x201, ste);
    let t = dma(&d, pci(2, 0).into_sid_plus(1), None, 0x7000_0044, Perm::R).unwrap();
    assert_eq!(t.output, Gpa(0x6044));
    // A stage-2 fault on the final IPA: unmap IPA page, S12_VMALL.
    s2.unmap(0x100_0000).unwrap();
    d.issue(&[[OP_TLBI_S12_VMALL | (3u64 << 32), 0]]);
    let f = dma(&d, pci(2, 0).into_sid_plus(1), None, 0x7000_0044, Perm::R).unwrap_err();
    assert_eq!(f.reason, 0x10);
    let ev = d.take_event().unwrap();
    assert_ne!(ev[1] & (1 << 39), 0, "S2 = 1");
    assert_eq!(ev[3], 0x100_0000, "IPA");
    assert_eq!(ev[2], 0x7000_0044);
}

// IHI 0070 5.2: an invalid STE is C_BAD_STE; an abort STE aborts silently.
#[test]
fn smmu_bad_and_abort_ste() {
    let mut d = Driver::new("");
    d.reset();
    // ensure_l2 fills abort STEs: silent abort.
    d.ensure_l2(0x300);
    let f = dma(&d, pci(3, 0), None, 0, Perm::R).unwrap_err();
    assert_eq!((f.kind, f.recorded), (FaultKind::Blocked, false));
    // Translated (ATS) traffic is aborted silently too.
    let req = DmaRequest::new(pci(3, 0), 0x1000, 8, Perm::R).with_kind(RequestKind::Translated);
    let f = d.smmu.translate(d.ram.as_ref(), &req).unwrap_err();
    assert_eq!((f.kind, f.recorded), (FaultKind::Blocked, false));
    assert!(d.take_event().is_none());
    // Reserved Config 0b010 behaves as abort.
    d.install_ste(0x300, [1 | (2 << 1), 0, 0, 0, 0, 0, 0, 0]);
    let f = dma(&d, pci(3, 0), None, 0, Perm::R).unwrap_err();
    assert_eq!((f.kind, f.recorded), (FaultKind::Blocked, false));
    // S1STALLD on an SMMU without configurable stalls is ILLEGAL:
    // C_BAD_STE (5.5).
    let mut t = Driver::new("stall-model=terminate");
    t.reset();
    t.install_ste(0x300, [1 | (5 << 1), 1 << 27, 0, 0, 0, 0, 0, 0]);
    let f = dma(&t, pci(3, 0), None, 0, Perm::R).unwrap_err();
    assert_eq!(f.reason, 0x04);
    assert_eq!(t.take_event().unwrap()[0], 0x04 | (0x300u64 << 32));
    // Bypass STE.
    d.install_ste(0x300, [1 | (4 << 1), 1 << 44, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        dma(&d, pci(3, 0), None, 0xabc, Perm::R).unwrap().output,
        Gpa(0xabc)
    );
}

// DESIGN "Concurrency" / IHI 0070 4.7.3: once TLBI + CMD_SYNC completes,
// no translation that starts afterwards returns the old mapping, while
// other threads keep walking and refilling the TLB.
#[test]
fn smmu_sync_completion_hides_old_mapping_under_load() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let mut d = Driver::new("tlb-sets=4,tlb-ways=2");
    d.reset();
    let ram = d.ram.clone();
    let mut pt = VmsaTables::new(&ram, s1_cfg()).unwrap();
    let base = 0x9000_0000u64;
    pt.map(0x1000_0000, base, PageSize::SIZE_4K, Leaf::rw())
        .unwrap();
    let cds = CdTable::new(&d, 4);
    cds.install(&mut d, 0x20, 0, 3, pt.config().ttb);
    d.install_ste(0x20, cds.ste(0));
    let version = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for _ in 0..2 {
        let (smmu, ram, version, stop, done) = (
            d.smmu.clone(),
            d.ram.clone(),
            version.clone(),
            stop.clone(),
            done.clone(),
        );
        threads.push(std::thread::spawn(move || {
            let mut checked = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let v = version.load(Ordering::SeqCst);
                let req = DmaRequest::new(pci(0, 4), 0x1000_0010, 8, Perm::R);
                let t = smmu.translate(ram.as_ref(), &req).unwrap();
                let seen = (t.output.0 - base - 0x10) / 0x1000;
                assert!(
                    seen >= v,
                    "stale translation: version {seen} after {v} completed"
                );
                checked += 1;
                done.fetch_add(1, Ordering::SeqCst);
            }
            checked
        }));
    }
    for k in 1..100u64 {
        pt.map(
            0x1000_0000,
            base + k * 0x1000,
            PageSize::SIZE_4K,
            Leaf::rw(),
        )
        .unwrap();
        d.issue(&[[OP_TLBI_NH_VA | (3u64 << 48), 0x1000_0000]]);
        version.store(k, Ordering::SeqCst);
        // Let the translating threads run against every version.
        let target = done.load(Ordering::SeqCst) + 4;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while done.load(Ordering::SeqCst) < target && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
    }
    stop.store(true, Ordering::SeqCst);
    let checked: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(checked > 0);
}

// Golden timing (STYLE rule 10): with a fixed configuration and trace the
// modelled cycles are exact sums of the latency table along the path.
#[test]
fn smmu_golden_cycles_for_miss_hit_and_fault() {
    let mut d = Driver::new("timing.mem_read=50,timing.iotlb_miss=3,timing.record_write=7");
    d.reset();
    let ram = d.ram.clone();
    let mut pt = VmsaTables::new(&ram, s1_cfg()).unwrap();
    pt.map(0x1000, 0x9000, PageSize::SIZE_4K, Leaf::rw())
        .unwrap();
    pt.map(0x2000, 0xa000, PageSize::SIZE_4K, Leaf::rw())
        .unwrap();
    let cds = CdTable::new(&d, 8);
    cds.install(&mut d, 0x30, 1, 5, pt.config().ttb);
    d.install_ste(0x30, cds.ste(8));
    let c = |addr| {
        dma(&d, pci(0, 6), Some(1), addr, Perm::R)
            .map(|t| t.cycles.0)
            .map_err(|f| f.cycles.0)
    };
    // L1STD + STE + L1CD + CD + 4 levels = 8 reads, plus the TLB miss.
    assert_eq!(c(0x1000), Ok(8 * 50 + 3));
    // STE, CD and TLB hits: 2 + 2 + 2.
    assert_eq!(c(0x1008), Ok(6));
    // Config hits, TLB miss, 4 reads.
    assert_eq!(c(0x2000), Ok(2 + 2 + 3 + 4 * 50));
    // Fault at level 3 after 4 reads, plus the event record.
    assert_eq!(c(0x3000), Err(2 + 2 + 3 + 4 * 50 + 7));
}

// IHI 0070 5.4 TG0: the three granules through CDs, with pages and blocks.
#[test]
fn smmu_cd_granules_4k_16k_64k_translate() {
    let mut d = Driver::new("");
    d.reset();
    let ram = d.ram.clone();
    let cds = CdTable::new(&d, 8);
    for (i, (g, tg0)) in [(Granule::G4K, 0u64), (Granule::G16K, 2), (Granule::G64K, 1)]
        .into_iter()
        .enumerate()
    {
        let cfg = WalkConfig {
            granule: g,
            tsz: 20,
            ..s1_cfg()
        };
        let mut pt = VmsaTables::new(&ram, cfg).unwrap();
        let page = g.page_size();
        let block = PageSize::from_shift(u8::try_from(g.level_shift(2)).unwrap()).unwrap();
        pt.map(0x40_0000_0000 >> 4, 0x1_0000_0000, page, Leaf::rw())
            .unwrap();
        pt.map(4 * block.bytes(), 8 * block.bytes(), block, Leaf::ro())
            .unwrap();
        let ssid = i as u32 + 1;
        cds.install_tcr(
            &mut d,
            0x28,
            ssid,
            20 + ssid as u16,
            pt.config().ttb,
            tg0,
            20,
        );
        if i == 0 {
            d.install_ste(0x28, cds.ste(8));
        }
        let t = dma(
            &d,
            pci(0, 5),
            Some(ssid),
            (0x40_0000_0000 >> 4) + 0x88,
            Perm::W,
        )
        .unwrap();
        assert_eq!((t.output, t.page_size), (Gpa(0x1_0000_0088), page), "{g:?}");
        let t = dma(&d, pci(0, 5), Some(ssid), 5 * block.bytes() - 8, Perm::R).unwrap();
        assert_eq!(t.output, Gpa(9 * block.bytes() - 8), "{g:?}");
        assert_eq!(t.page_size, block, "{g:?}");
        let f = dma(&d, pci(0, 5), Some(ssid), 4 * block.bytes(), Perm::W).unwrap_err();
        assert_eq!(f.kind, FaultKind::Permission, "{g:?}");
        d.take_event().unwrap();
    }
}

// IHI 0070 4.4.1: a range TLBI (TG, SCALE, NUM) removes exactly the pages
// in its range.
#[test]
fn smmu_range_tlbi_removes_only_its_range() {
    let mut d = Driver::new("");
    d.reset();
    let ram = d.ram.clone();
    let mut pt = VmsaTables::new(&ram, s1_cfg()).unwrap();
    for p in 0..16u64 {
        pt.map(
            p << 12,
            0x10_0000_0000 + (p << 12),
            PageSize::SIZE_4K,
            Leaf::rw(),
        )
        .unwrap();
    }
    let cds = CdTable::new(&d, 4);
    cds.install(&mut d, 0x38, 0, 4, pt.config().ttb);
    d.install_ste(0x38, cds.ste(0));
    for p in 0..16u64 {
        dma(&d, pci(0, 7), None, p << 12, Perm::R).unwrap();
    }
    for p in 0..16u64 {
        pt.map(
            p << 12,
            0x20_0000_0000 + (p << 12),
            PageSize::SIZE_4K,
            Leaf::rw(),
        )
        .unwrap();
    }
    // Pages 4..12: NUM = 3, SCALE = 1 -> (3 + 1) * 2 = 8 pages of 4K.
    let w0 = OP_TLBI_NH_VA | (3 << 12) | (1 << 20) | (4u64 << 48);
    d.issue(&[[w0, (4 << 12) | (1 << 10) | 1]]);
    for p in 0..16u64 {
        let out = dma(&d, pci(0, 7), None, p << 12, Perm::R).unwrap().output.0;
        let new = (4..12).contains(&p);
        let want = if new { 0x20_0000_0000 } else { 0x10_0000_0000 } + (p << 12);
        assert_eq!(out, want, "page {p}");
    }
}

// IHI 0070 4.3.3: a changed CD is used only after CMD_CFGI_CD.
#[test]
fn smmu_cfgi_cd_picks_up_changed_cd() {
    let mut d = Driver::new("");
    d.reset();
    let ram = d.ram.clone();
    let mut a = VmsaTables::new(&ram, s1_cfg()).unwrap();
    let mut b = VmsaTables::new(&ram, s1_cfg()).unwrap();
    a.map(0x5000, 0xa000, PageSize::SIZE_4K, Leaf::rw())
        .unwrap();
    b.map(0x5000, 0xb000, PageSize::SIZE_4K, Leaf::rw())
        .unwrap();
    let cds = CdTable::new(&d, 4);
    cds.install(&mut d, 0x48, 3, 30, a.config().ttb);
    d.install_ste(0x48, cds.ste(4));
    assert_eq!(
        dma(&d, pci(0, 9), Some(3), 0x5000, Perm::R).unwrap().output,
        Gpa(0xa000)
    );
    // Rewrite TTB0 and the ASID in memory without CFGI_CD: still cached.
    let l2 = d.mem64(cds.l1) & !0xfff;
    let at = l2 + 3 * 64;
    d.ram.write_u64(Gpa(at + 8), b.config().ttb).unwrap();
    let w0 = d.mem64(at);
    d.ram
        .write_u64(Gpa(at), (w0 & 0xffff_ffff_ffff) | (31 << 48))
        .unwrap();
    assert_eq!(
        dma(&d, pci(0, 9), Some(3), 0x5000, Perm::R).unwrap().output,
        Gpa(0xa000)
    );
    d.issue(&[[OP_CFGI_CD | (3 << 12) | (0x48u64 << 32), 1]]);
    let t = dma(&d, pci(0, 9), Some(3), 0x5000, Perm::R).unwrap();
    assert_eq!(t.output, Gpa(0xb000));
    assert!(!t.path.contains(CachePath::PASID_HIT));
}

// IHI 0070 5.2 S1DSS and S1CDMAX: what happens to traffic without a
// SubstreamID, and SubstreamIDs on a stream without substreams.
#[test]
fn smmu_s1dss_and_cdmax_rules() {
    let mut d = Driver::new("");
    d.reset();
    let ram = d.ram.clone();
    let mut pt = VmsaTables::new(&ram, s1_cfg()).unwrap();
    pt.map(0x6000, 0xe000, PageSize::SIZE_4K, Leaf::rw())
        .unwrap();
    let cds = CdTable::new(&d, 4);
    cds.install(&mut d, 0x58, 0, 40, pt.config().ttb);
    cds.install(&mut d, 0x58, 2, 42, pt.config().ttb);
    let src = pci(0, 0xb);
    // S1DSS = terminate: F_STREAM_DISABLED for traffic without SSID.
    let mut ste = cds.ste(4);
    ste[1] &= !3;
    d.install_ste(0x58, ste);
    let f = dma(&d, src, None, 0x6000, Perm::R).unwrap_err();
    assert_eq!((f.kind, f.reason), (FaultKind::Blocked, 0x06));
    assert_eq!(d.take_event().unwrap()[0], 0x06 | (0x58u64 << 32));
    assert_eq!(
        dma(&d, src, Some(2), 0x6000, Perm::R).unwrap().output,
        Gpa(0xe000)
    );
    // S1DSS = bypass: stage 1 skipped for traffic without SSID.
    ste[1] |= 1;
    d.install_ste(0x58, ste);
    assert_eq!(
        dma(&d, src, None, 0x6000, Perm::R).unwrap().output,
        Gpa(0x6000)
    );
    // SSID beyond S1CDMAX: C_BAD_SUBSTREAMID.
    let f = dma(&d, src, Some(16), 0x6000, Perm::R).unwrap_err();
    assert_eq!(f.reason, 0x08);
    assert_eq!(
        d.take_event().unwrap()[0],
        0x08 | (1 << 11) | (16 << 12) | (0x58u64 << 32)
    );
    // S1CDMAX = 0: substreams disabled, CD 0 for all, any SSID is bad.
    d.install_ste(0x58, cds.ste(0));
    assert_eq!(
        dma(&d, src, None, 0x6000, Perm::R).unwrap().output,
        Gpa(0xe000)
    );
    assert_eq!(
        dma(&d, src, Some(2), 0x6000, Perm::R).unwrap_err().reason,
        0x08
    );
    d.take_event().unwrap();
}

// IHI 0070 5.2 EATS / 6.3.9 ATSCHK / 6.3.12 RECINVSID: bypass streams have
// no ATS; translated traffic is checked only with ATSCHK; out-of-range
// StreamIDs are recorded only with RECINVSID.
#[test]
fn smmu_ats_checks_and_recinvsid() {
    let mut d = Driver::new("");
    d.reset();
    d.install_ste(0x68, [1 | (4 << 1), 1 << 28, 0, 0, 0, 0, 0, 0]); // bypass, EATS set
    let src = pci(0, 0xd);
    let treq = DmaRequest::new(src, 0x4000, 8, Perm::R).with_kind(RequestKind::AtsTranslation);
    assert_eq!(
        d.smmu.translate(d.ram.as_ref(), &treq).unwrap_err().reason,
        0x05
    );
    assert_eq!(d.take_event().unwrap()[0] & 0xff, 0x05);
    let tr = DmaRequest::new(src, 0x4000, 8, Perm::W).with_kind(RequestKind::Translated);
    assert_eq!(
        d.smmu.translate(d.ram.as_ref(), &tr).unwrap_err().reason,
        0x07
    );
    let ev = d.take_event().unwrap();
    assert_eq!(ev[0] & 0xff, 0x07);
    assert_eq!(ev[2], 0x4000);
    // ATSCHK off: translated traffic passes unchecked.
    let cr0 = d.rd(CR0);
    d.write_sync(CR0, CR0ACK, cr0 & !CR0_ATSCHK);
    assert_eq!(
        d.smmu.translate(d.ram.as_ref(), &tr).unwrap().output,
        Gpa(0x4000)
    );
    // RECINVSID off: C_BAD_STREAMID is not recorded.
    d.wr(CR2, 0);
    let f = dma(&d, pci(0x50, 0), None, 0, Perm::R).unwrap_err();
    assert_eq!((f.kind, f.recorded), (FaultKind::BadConfig, false));
    assert!(d.take_event().is_none());
    d.wr(CR2, 1 << 1);
    assert!(
        dma(&d, pci(0x50, 0), None, 0, Perm::R)
            .unwrap_err()
            .recorded
    );
    assert_eq!(d.take_event().unwrap()[0], 0x02 | (0x5000u64 << 32));
}

// IHI 0070 8.1: a full PRI queue toggles OVFLG; while the overflow is not
// acknowledged new requests are discarded, and last requests get an
// automatic response (Success; with a PASID the STE decides: PPAR keeps
// the PASID, an invalid STE gives Failure).
#[test]
fn smmu_priq_overflow_inhibits_and_auto_responds() {
    let mut d = Driver::new("priqs=1");
    d.reset();
    // The harness asked for 2^6 entries; IDR1.PRIQS = 1 limits it to 2.
    let ppr = |ssid: Option<u32>, last: bool, grp: u16| PageRequest {
        sid: 0x108,
        ssid,
        addr: 0x1000,
        read: true,
        write: false,
        exec: false,
        privileged: false,
        last,
        prg_index: grp,
    };
    use smmu_model::priq::PriOutcome::{Dropped, Queued};
    assert_eq!(
        d.smmu.page_request(d.ram.as_ref(), &ppr(None, false, 1)),
        Queued
    );
    assert_eq!(
        d.smmu.page_request(d.ram.as_ref(), &ppr(None, true, 1)),
        Queued
    );
    // Full: overflow, auto-response Success without PASID.
    assert_eq!(
        d.smmu.page_request(d.ram.as_ref(), &ppr(None, true, 2)),
        Dropped
    );
    assert_ne!(d.rd(PRIQ_PROD) & (1 << 31), 0, "OVFLG");
    // Consume one entry but do not acknowledge: still inhibited.
    d.wr(PRIQ_CONS, 1);
    assert_eq!(
        d.smmu.page_request(d.ram.as_ref(), &ppr(None, false, 3)),
        Dropped
    );
    // With a PASID and STE 0x108 not valid (no L2 table): Failure, no PASID.
    assert_eq!(
        d.smmu.page_request(d.ram.as_ref(), &ppr(Some(4), true, 4)),
        Dropped
    );
    // A valid STE with PPAR: Success with the PASID.
    let cds = CdTable::new(&d, 8);
    let mut ste = cds.ste(8);
    ste[1] |= 1 << 18; // PPAR
    d.install_ste(0x108, ste);
    assert_eq!(
        d.smmu.page_request(d.ram.as_ref(), &ppr(Some(4), true, 5)),
        Dropped
    );
    let auto = |ssid, grpid, resp| DeviceMessage::PriResponse {
        sid: 0x108,
        ssid,
        grpid,
        resp,
        automatic: true,
    };
    assert_eq!(
        d.smmu.take_device_messages(),
        vec![auto(None, 2, 2), auto(None, 4, 1), auto(Some(4), 5, 2)]
    );
    // Acknowledge: consume everything and copy OVFLG into OVACKFLG.
    d.wr(PRIQ_CONS, 2 | (1 << 31));
    assert_eq!(
        d.smmu.page_request(d.ram.as_ref(), &ppr(None, true, 6)),
        Queued
    );
    assert_eq!(d.rd(PRIQ_PROD), 3 | (1 << 31));
    assert_eq!(d.smmu.stats().pri_dropped, 4);
}

// IHI 0070 7.2.1 / 7.2.2: an abort writing the event queue raises
// GERROR.EVENTQ_ABT_ERR; until software acknowledges it the queue is not
// writable and events are discarded (counted), without an overflow.
#[test]
fn smmu_eventq_abort_error_blocks_queue_until_gerrorn() {
    let mut d = Driver::new("");
    d.reset();
    let cr0 = d.rd(CR0);
    d.write_sync(CR0, CR0ACK, cr0 & !CR0_EVTQEN);
    d.wr64(EVTQ_BASE, (RAM + 0x10_0000) | 7); // outside guest RAM
    d.write_sync(CR0, CR0ACK, cr0);
    let f = dma(&d, pci(0x40, 1), None, 0, Perm::R).unwrap_err();
    assert!(!f.recorded);
    let gerror = d.rd(GERROR);
    assert_ne!((gerror ^ d.rd(GERRORN)) & (1 << 2), 0, "EVENTQ_ABT_ERR");
    assert_eq!(
        d.msi
            .take()
            .iter()
            .map(|m| (m.addr, m.data))
            .collect::<Vec<_>>(),
        vec![(GERROR_MSI, 0x100)]
    );
    // Point the queue back at RAM: still not writable while unacknowledged.
    d.write_sync(CR0, CR0ACK, cr0 & !CR0_EVTQEN);
    d.wr64(EVTQ_BASE, (1 << 62) | d.evtq | 7);
    d.write_sync(CR0, CR0ACK, cr0);
    assert!(
        !dma(&d, pci(0x40, 2), None, 0, Perm::R)
            .unwrap_err()
            .recorded
    );
    assert_eq!(d.rd(EVTQ_PROD) & (1 << 31), 0, "no overflow");
    d.wr(GERRORN, gerror);
    assert!(
        dma(&d, pci(0x40, 3), None, 0, Perm::R)
            .unwrap_err()
            .recorded
    );
    assert_eq!(d.take_event().unwrap()[0], 0x02 | (0x4018u64 << 32));
    let s = d.smmu.stats();
    assert_eq!((s.events_dropped_abort, s.events_written), (2, 1));
}

// IHI 0070 6.3.9.6: with SMMUEN = 0, ATS translated transactions are
// terminated with an abort whatever GBPA says; untranslated ones bypass.
#[test]
fn smmu_disabled_aborts_translated_traffic() {
    let d = Driver::new("");
    let tr = DmaRequest::new(pci(0, 1), 0x4000, 8, Perm::R).with_kind(RequestKind::Translated);
    let f = d.smmu.translate(d.ram.as_ref(), &tr).unwrap_err();
    assert_eq!((f.kind, f.recorded), (FaultKind::Blocked, false));
    assert_eq!(
        dma(&d, pci(0, 1), None, 0x4000, Perm::R).unwrap().output,
        Gpa(0x4000)
    );
}

// The endpoint seam (iommu_emulator::endpoint): the PASID test device's ATC and page-request
// path, the same code that runs behind VT-d, behind the SMMU. CMD_ATC_INV (4.5.1) reaches the
// ATC before CMD_SYNC completes and removes only that SubstreamID's range; a page request goes
// to the PRI queue (8.1) and CMD_PRI_RESP (4.7.1) lands in the device's inbox as a PCIe
// Success (PCIe 6.0 §10.4.2.1).
#[test]
fn smmu_endpoint_seam_drives_the_pasid_device_atc_and_pri() {
    use iommu_emulator::Rid;
    use iommu_vmm::devices::pasid::PageRequestPort;
    use iommu_vmm::devices::pasid::atc::{Atc, AtcEntry, UnitPageRequests};
    let mut d = Driver::new("");
    d.reset();
    let atc = Arc::new(Atc::new(Rid(0x108)));
    d.smmu.set_device_notifier(atc.clone());
    let entry = |pasid, iova| AtcEntry {
        pasid: Some(pasid),
        iova,
        size: 4096,
        output: 0x8000_0000 + iova,
        perm: Perm::RW,
    };
    atc.insert(entry(7, 0x1000_0000));
    atc.insert(entry(7, 0x2000_0000));
    atc.insert(entry(8, 0x1000_0000));
    d.issue(&[[
        OP_ATC_INV | (1 << 11) | (7 << 12) | (0x108u64 << 32),
        0x1000_0000,
    ]]);
    assert!(
        atc.lookup(Some(7), 0x1000_0000, Perm::R).is_none(),
        "invalidated"
    );
    assert!(
        atc.lookup(Some(7), 0x2000_0000, Perm::R).is_some(),
        "outside the range"
    );
    assert!(
        atc.lookup(Some(8), 0x1000_0000, Perm::R).is_some(),
        "other SSID"
    );
    assert_eq!(atc.invalidations(), 1);
    // Another StreamID's invalidation does not touch this function.
    d.issue(&[[
        OP_ATC_INV | (1 << 11) | (8 << 12) | (0x109u64 << 32),
        0x1000_0000,
    ]]);
    assert!(atc.lookup(Some(8), 0x1000_0000, Perm::R).is_some());

    let port = UnitPageRequests {
        sink: d.smmu.clone(),
        ram: d.ram.clone(),
        atc: atc.clone(),
    };
    assert!(port.page_request(&iommu_vmm::devices::pasid::PageRequest {
        pasid: Some(tag(7)),
        addr: 0x7777_7000,
        read: true,
        write: false,
        last: true,
        prg_index: 0x33,
    }));
    assert_eq!(d.rd(PRIQ_PROD), 1);
    let w0 = d.mem64(d.priq);
    assert_eq!((w0 & 0xffff_ffff, (w0 >> 32) & 0xf_ffff), (0x108, 7));
    d.priq_cons = 1;
    d.wr(PRIQ_CONS, u64::from(d.priq_cons));
    d.issue(&[[
        OP_PRI_RESP | (1 << 11) | (7 << 12) | (0x108u64 << 32),
        0x33 | (2 << 12),
    ]]);
    let r = atc.take_responses();
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!((r[0].pasid, r[0].prg_index, r[0].code), (Some(7), 0x33, 0));
    assert!(
        d.smmu.take_device_messages().is_empty(),
        "delivered, not queued"
    );
}
