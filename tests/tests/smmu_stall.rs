//! The SMMUv3 stall fault model driven as Linux's arm-smmu-v3 driver
//! drives it for a stall-capable master ("dma-can-stall", IOPF): probe
//! IDR0.STALL_MODEL, STE with S1STALLD = 0, CDs with CD.S = 1; a faulting
//! DMA stalls and records an event with Stall = 1 and a STAG
//! (arm_smmu_handle_evt turns it into an IOPF page request with
//! grpid = STAG); the fault handler maps the page and answers with
//! CMD_RESUME(StreamID, STAG, RETRY) or, when it cannot, RESUME(ABORT)
//! (arm_smmu_page_response). Field positions are written here from
//! IHI 0070 (3.12.2, 4.7.1, 4.7.2, 5.5, 7.2.1, 7.3.13), independently of the
//! model's decoders.

mod smmu_support;

use iommu_emulator::testing::FakeRam;
use iommu_emulator::testing::vmsa_pt::{Leaf, VmsaTables};
use iommu_emulator::{
    DmaRequest, FaultKind, Gpa, GuestRam, Iommu, PageSize, Perm, RequestKind, SourceId,
};
use smmu_model::{DeviceMessage, StallResolution, TranslateOutcome};
use smmu_support::*;

/// Linux's view of an event record (arm_smmu_handle_evt).
struct Evt {
    id: u64,
    sid: u64,
    ssid: Option<u64>,
    stall: bool,
    stag: u64,
    read: bool,
    s2: bool,
    addr: u64,
}

fn parse(e: [u64; 4]) -> Evt {
    Evt {
        id: e[0] & 0xff,
        sid: e[0] >> 32,
        ssid: (e[0] & (1 << 11) != 0).then_some((e[0] >> 12) & 0xf_ffff),
        stall: e[1] & (1 << 31) != 0,
        stag: e[1] & 0xffff,
        read: e[1] & (1 << 35) != 0,
        s2: e[1] & (1 << 39) != 0,
        addr: e[2],
    }
}

fn dma_s(d: &Driver, src: SourceId, ssid: Option<u32>, addr: u64, p: Perm) -> TranslateOutcome {
    let mut r = DmaRequest::new(src, addr, 8, p);
    if let Some(s) = ssid {
        r = r.with_pasid(tag(s));
    }
    d.smmu.translate_stallable(d.ram.as_ref(), &r)
}

fn stalled(o: TranslateOutcome) -> smmu_model::Stall {
    match o {
        TranslateOutcome::Stalled(s) => s,
        TranslateOutcome::Done(r) => panic!("expected a stall, got {r:?}"),
    }
}

fn resume(d: &mut Driver, sid: u32, stag: u64, resp: u64) {
    d.issue(&[[OP_RESUME | (resp << 12) | (u64::from(sid) << 32), stag]]);
}

const SID: u32 = 0x0210; // 02:02.0

/// A stall-enabled master with CDs for SSIDs 0 and 3, and its tables.
fn stall_master<'a>(d: &mut Driver, ram: &'a FakeRam) -> (CdTable, VmsaTables<'a>) {
    let mut pt = VmsaTables::new(ram, s1_cfg()).unwrap();
    pt.map(0x1000_0000, 0x8000_0000, PageSize::SIZE_4K, Leaf::rw())
        .unwrap();
    let cds = CdTable::new(d, 8);
    cds.install_stall(d, SID, 0, 20, pt.config().ttb);
    cds.install_stall(d, SID, 3, 23, pt.config().ttb);
    d.install_ste(SID, cds.ste_stall(8));
    (cds, pt)
}

// IHI 0070 3.12.2, 4.7.1, 7.3.13: the IOPF flow. A fault on a stall
// master stalls with Stall = 1 and a STAG in its event; software maps the
// page and resumes with RETRY; the retried transaction translates.
#[test]
fn smmu_stall_fault_resumed_with_retry_translates() {
    let mut d = Driver::new("");
    d.reset();
    assert_eq!(
        (d.rd(IDR0) >> 24) & 3,
        0,
        "STALL_MODEL: stall and terminate"
    );
    let ram = d.ram.clone();
    let (_cds, mut pt) = stall_master(&mut d, &ram);
    let src = pci(2, 2);
    assert_eq!(
        dma(&d, src, Some(3), 0x1000_0040, Perm::R).unwrap().output,
        Gpa(0x8000_0040)
    );

    // A write to an unmapped page stalls; nothing reaches the device yet.
    let s = stalled(dma_s(&d, src, Some(3), 0x2000_0123, Perm::W));
    assert_eq!(s.resolution(), StallResolution::Pending);
    assert!(s.fault.recorded);
    assert_eq!(s.fault.reason, 0x10);
    let e = parse(d.take_event().expect("stall event"));
    assert_eq!((e.id, e.sid, e.ssid), (0x10, u64::from(SID), Some(3)));
    assert!(e.stall, "Stall = 1");
    assert_eq!(Some(e.stag as u16), s.stag);
    assert!(!e.read && !e.s2);
    assert_eq!(e.addr, 0x2000_0123);
    let msis = d.msi.take();
    assert_eq!(msis.len(), 1);
    assert_eq!((msis[0].addr, msis[0].data), (EVTQ_MSI, 0x101));
    assert_eq!(d.smmu.stalled().len(), 1);

    // The IOPF handler maps the page, then arm_smmu_page_response.
    pt.map(0x2000_0000, 0x9000_0000, PageSize::SIZE_4K, Leaf::rw())
        .unwrap();
    resume(&mut d, SID, e.stag, RESUME_RETRY);
    assert_eq!(s.resolution(), StallResolution::Retry);
    assert_eq!(
        d.smmu.take_device_messages(),
        vec![DeviceMessage::StallResolved {
            sid: SID,
            ssid: Some(3),
            stag: Some(e.stag as u16),
            addr: 0x2000_0123,
            resolution: StallResolution::Retry
        }]
    );
    assert!(d.smmu.stalled().is_empty(), "STAG released");
    // The device retries: translated now (the earlier walk cached nothing).
    let TranslateOutcome::Done(Ok(t)) = dma_s(&d, src, Some(3), 0x2000_0123, Perm::W) else {
        panic!("retry should translate")
    };
    assert_eq!(t.output, Gpa(0x9000_0123));
    assert!(d.take_event().is_none());
    let st = d.smmu.stats();
    assert_eq!((st.stalls, st.stalls_retried), (1, 1));
}

// 4.7.1: RESUME with Terminate/abort ends the transaction with an abort
// to the device; a second stall afterwards gets a usable STAG again.
#[test]
fn smmu_stall_resume_abort_faults_device() {
    let mut d = Driver::new("");
    d.reset();
    let ram = d.ram.clone();
    let _m = stall_master(&mut d, &ram);
    let s = stalled(dma_s(&d, pci(2, 2), None, 0x3000_0000, Perm::R));
    let e = parse(d.take_event().unwrap());
    assert!(e.stall && e.read);
    assert_eq!(e.ssid, None, "no SSID: CD 0 via S1DSS");
    resume(&mut d, SID, e.stag, RESUME_ABORT);
    assert_eq!(s.resolution(), StallResolution::Abort);
    assert_eq!(s.fault.kind, FaultKind::NotPresent);
    assert_eq!(d.smmu.stats().stalls_aborted, 1);
    let s2 = stalled(dma_s(&d, pci(2, 2), None, 0x3000_0000, Perm::R));
    assert!(s2.stag.is_some());
    assert_eq!(
        parse(d.take_event().unwrap()).stag,
        u64::from(s2.stag.unwrap())
    );
}

// 4.7.1: a RESUME whose StreamID or STAG matches no stalled transaction
// has no effect (and is not an illegal command).
#[test]
fn smmu_stall_resume_unknown_stag_is_ignored() {
    let mut d = Driver::new("");
    d.reset();
    let ram = d.ram.clone();
    let _m = stall_master(&mut d, &ram);
    let s = stalled(dma_s(&d, pci(2, 2), None, 0x3000_0000, Perm::R));
    let stag = u64::from(s.stag.unwrap());
    resume(&mut d, SID, stag ^ 1, RESUME_RETRY);
    resume(&mut d, SID + 1, stag, RESUME_RETRY);
    assert_eq!(s.resolution(), StallResolution::Pending);
    assert_eq!((d.rd(CMDQ_CONS) >> 24) & 0x7f, 0, "no CERROR");
    let st = d.smmu.stats();
    assert_eq!((st.resumes_unmatched, st.stalled_now), (2, 1));
    // The right one still works, and only once.
    resume(&mut d, SID, stag, RESUME_ABORT);
    resume(&mut d, SID, stag, RESUME_RETRY);
    assert_eq!(s.resolution(), StallResolution::Abort);
    assert_eq!(d.smmu.stats().resumes_unmatched, 3);
}

// 4.7.2: the stream shutdown sequence: STE Config = abort, CFGI_STE,
// CMD_SYNC, CMD_STALL_TERM; every stall of that stream ends with an
// abort, others stay.
#[test]
fn smmu_stall_term_ends_all_stalls_of_stream() {
    let mut d = Driver::new("");
    d.reset();
    let ram = d.ram.clone();
    let (cds, _pt) = stall_master(&mut d, &ram);
    let other = SID + 1;
    d.install_ste(other, cds.ste_stall(8));
    let a = stalled(dma_s(&d, pci(2, 2), Some(3), 0x4000_0000, Perm::R));
    let b = stalled(dma_s(&d, pci(2, 2), None, 0x4000_1000, Perm::W));
    let c = stalled(dma_s(
        &d,
        pci(2, 2).into_sid_plus(1),
        Some(3),
        0x4000_0000,
        Perm::R,
    ));
    assert_ne!(a.stag, b.stag, "STAGs unique");
    assert_eq!(d.smmu.stalled().len(), 3);
    d.install_ste(SID, [1, 0, 0, 0, 0, 0, 0, 0]); // V, Config = abort
    d.issue(&[[OP_STALL_TERM | (u64::from(SID) << 32), 0]]);
    assert_eq!(a.resolution(), StallResolution::Abort);
    assert_eq!(b.resolution(), StallResolution::Abort);
    assert_eq!(c.resolution(), StallResolution::Pending);
    assert_eq!(d.smmu.stats().stalls_terminated, 2);
    // New traffic on the stream terminates at once.
    assert!(matches!(
        dma_s(&d, pci(2, 2), Some(3), 0x4000_0000, Perm::R),
        TranslateOutcome::Done(Err(_))
    ));
}

// 6.3.9.6: clearing SMMUEN terminates every stalled transaction.
#[test]
fn smmu_stall_smmuen_clear_terminates_all() {
    let mut d = Driver::new("");
    d.reset();
    let ram = d.ram.clone();
    let _m = stall_master(&mut d, &ram);
    let a = stalled(dma_s(&d, pci(2, 2), Some(3), 0x5000_0000, Perm::R));
    let cr0 = d.rd(CR0);
    d.write_sync(CR0, CR0ACK, cr0 & !CR0_SMMUEN);
    assert_eq!(a.resolution(), StallResolution::Abort);
    assert!(d.smmu.stalled().is_empty());
}

// 3.12.2.3 / 3.12: beyond max-stalls a stall-configured fault is
// terminated with an abort and reported with Stall = 0.
#[test]
fn smmu_stall_limit_terminates_excess_with_stall_clear() {
    let mut d = Driver::new("max-stalls=2");
    d.reset();
    let ram = d.ram.clone();
    let _m = stall_master(&mut d, &ram);
    for i in 0..2u64 {
        stalled(dma_s(
            &d,
            pci(2, 2),
            Some(3),
            0x6000_0000 + (i << 12),
            Perm::R,
        ));
        assert!(parse(d.take_event().unwrap()).stall);
    }
    let TranslateOutcome::Done(Err(f)) = dma_s(&d, pci(2, 2), Some(3), 0x6000_2000, Perm::R) else {
        panic!("third fault must terminate")
    };
    assert!(f.recorded);
    let e = parse(d.take_event().unwrap());
    assert_eq!((e.id, e.stall, e.addr), (0x10, false, 0x6000_2000));
    let st = d.smmu.stats();
    assert_eq!((st.stalls, st.stalls_refused, st.stalled_now), (2, 1, 2));
}

// 7.2.1 / 7.4 / 3.12.2: a stall record that finds the event queue full is
// not discarded and causes no overflow; the transaction retries once the
// queue is writable again and then records a new stall.
#[test]
fn smmu_stall_record_deferred_while_eventq_full_then_retried() {
    let mut d = Driver::new("");
    d.reset();
    let ram = d.ram.clone();
    let _m = stall_master(&mut d, &ram);
    // A 2-entry event queue.
    let cr0 = d.rd(CR0);
    d.write_sync(CR0, CR0ACK, cr0 & !CR0_EVTQEN);
    d.wr64(EVTQ_BASE, d.evtq | 1);
    d.wr(EVTQ_PROD, 0);
    d.wr(EVTQ_CONS, 0);
    d.write_sync(CR0, CR0ACK, cr0);
    let a = stalled(dma_s(&d, pci(2, 2), Some(3), 0x7000_0000, Perm::R));
    let b = stalled(dma_s(&d, pci(2, 2), Some(3), 0x7000_1000, Perm::R));
    let c = stalled(dma_s(&d, pci(2, 2), Some(3), 0x7000_2000, Perm::R));
    assert!(a.stag.is_some() && b.stag.is_some());
    assert_eq!(c.stag, None, "no room for the record");
    assert!(!c.fault.recorded);
    assert_eq!(d.rd(EVTQ_PROD) & (1 << 31), 0, "no overflow for stalls");
    let st = d.smmu.stats();
    assert_eq!((st.stalls_deferred, st.events_dropped_overflow), (1, 0));
    // A RESUME cannot reach a transaction with no record.
    assert_eq!(c.resolution(), StallResolution::Pending);
    // The driver consumes one record: the deferred stall is retried.
    let e = parse([
        d.mem64(d.evtq),
        d.mem64(d.evtq + 8),
        d.mem64(d.evtq + 16),
        d.mem64(d.evtq + 24),
    ]);
    assert_eq!(e.stag, u64::from(a.stag.unwrap()));
    d.wr(EVTQ_CONS, 1);
    assert_eq!(c.resolution(), StallResolution::Retry);
    assert_eq!(a.resolution(), StallResolution::Pending);
    let msgs = d.smmu.take_device_messages();
    assert!(matches!(
        msgs.as_slice(),
        [DeviceMessage::StallResolved {
            stag: None,
            resolution: StallResolution::Retry,
            ..
        }]
    ));
    // Its retry stalls again, this time with a record.
    let c2 = stalled(dma_s(&d, pci(2, 2), Some(3), 0x7000_2000, Perm::R));
    assert!(c2.stag.is_some() && c2.fault.recorded);
    assert_eq!(d.smmu.stats().stalls_deferred_retried, 1);
}

// 5.5: CD.S = 1 through an STE with S1STALLD = 1 is ILLEGAL (C_BAD_CD);
// with S = 1 the fault is recorded even when CD.R = 0.
#[test]
fn smmu_stall_cd_legality_and_record_ignores_r() {
    let mut d = Driver::new("");
    d.reset();
    let ram = d.ram.clone();
    let (cds, _pt) = stall_master(&mut d, &ram);
    d.install_ste(SID, cds.ste(8)); // S1STALLD = 1, as for a PCI master
    let f = dma(&d, pci(2, 2), Some(3), 0x1000_0000, Perm::R).unwrap_err();
    assert_eq!(f.reason, 0x0a);
    assert_eq!(parse(d.take_event().unwrap()).id, 0x0a);
    // Back to S1STALLD = 0; clear CD 3's R bit.
    d.install_ste(SID, cds.ste_stall(8));
    let l2 = d.mem64(cds.l1) & !0xfff & ((1 << 52) - 1);
    let at = l2 + 3 * 64;
    let w0 = d.mem64(at);
    d.ram.write_u64(Gpa(at), w0 & !(1 << 45)).unwrap();
    d.issue(&[[OP_CFGI_CD | (3 << 12) | (u64::from(SID) << 32), 1]]);
    let s = stalled(dma_s(&d, pci(2, 2), Some(3), 0x2200_0000, Perm::R));
    assert!(s.fault.recorded);
    assert!(parse(d.take_event().unwrap()).stall);
}

// 5.5 / 3.9.1: CD.S has no effect on ATS Translation Requests: a denied
// request is an answer, never a stall or an event.
#[test]
fn smmu_stall_ats_translation_request_never_stalls() {
    let mut d = Driver::new("");
    d.reset();
    let ram = d.ram.clone();
    let _m = stall_master(&mut d, &ram);
    let req = DmaRequest::new(pci(2, 2), 0x2300_0000, 4096, Perm::R)
        .with_pasid(tag(3))
        .with_kind(RequestKind::AtsTranslation);
    assert!(matches!(
        d.smmu.translate_stallable(d.ram.as_ref(), &req),
        TranslateOutcome::Done(Err(_))
    ));
    assert!(d.take_event().is_none());
    assert!(d.smmu.stalled().is_empty());
}

// The generic Iommu::translate cannot hold a transaction: it sees the
// stall as its fault, while the SMMU keeps it stalled until software
// answers (here with CMD_STALL_TERM).
#[test]
fn smmu_stall_generic_translate_returns_fault_and_keeps_stall() {
    let mut d = Driver::new("");
    d.reset();
    let ram = d.ram.clone();
    let _m = stall_master(&mut d, &ram);
    let req = DmaRequest::new(pci(2, 2), 0x2400_0000, 8, Perm::R).with_pasid(tag(3));
    let f = d.smmu.translate(d.ram.as_ref(), &req).unwrap_err();
    assert_eq!((f.reason, f.recorded), (0x10, true));
    assert!(parse(d.take_event().unwrap()).stall);
    assert_eq!(d.smmu.stalled().len(), 1);
    d.issue(&[[OP_STALL_TERM | (u64::from(SID) << 32), 0]]);
    assert!(d.smmu.stalled().is_empty());
}

// 5.5 / 3.12.5: STE.S2S = 1 stalls stage-2 faults (S2 = 1 in the record);
// Linux's handler leaves those to the hypervisor, which resumes them.
#[test]
fn smmu_stall_stage2_s2s_stalls_and_resumes() {
    let mut d = Driver::new("");
    d.reset();
    let ram = d.ram.clone();
    let s2cfg = iommu_emulator::walk::vmsa::WalkConfig {
        stage: iommu_emulator::walk::vmsa::Stage::Two,
        tsz: 24,
        sl0: 1,
        ..s1_cfg()
    };
    let mut s2 = VmsaTables::new(&ram, s2cfg).unwrap();
    s2.map(0x40_0000, 0x80_0000, PageSize::SIZE_2M, Leaf::rw())
        .unwrap();
    let vtcr = 24u64 | (1 << 6) | (1 << 8) | (1 << 10) | (3 << 12) | (5 << 16);
    let w2 = 5 | (vtcr << 32) | (1 << 51) | (1 << 57) | (1 << 58); // S2S, S2R
    d.install_ste(0x300, [1 | (6 << 1), 0, w2, s2.config().ttb, 0, 0, 0, 0]);
    let s = stalled(dma_s(&d, pci(3, 0), None, 0x60_0000, Perm::W));
    let e = parse(d.take_event().unwrap());
    assert!(e.stall && e.s2);
    s2.map(0x60_0000, 0xa0_0000, PageSize::SIZE_2M, Leaf::rw())
        .unwrap();
    resume(&mut d, 0x300, e.stag, RESUME_RETRY);
    assert_eq!(s.resolution(), StallResolution::Retry);
    let TranslateOutcome::Done(Ok(t)) = dma_s(&d, pci(3, 0), None, 0x60_0010, Perm::W) else {
        panic!("retry should translate")
    };
    assert_eq!(t.output, Gpa(0xa0_0010));
}

// 5.5 with IDR0.STALL_MODEL = 0b10 (forced): Linux sets CD.S for every
// master; a CD with S = 0 is ILLEGAL.
#[test]
fn smmu_stall_forced_model_requires_cd_s() {
    let mut d = Driver::new("stall-model=force");
    d.reset();
    assert_eq!((d.rd(IDR0) >> 24) & 3, 2);
    let ram = d.ram.clone();
    let mut pt = VmsaTables::new(&ram, s1_cfg()).unwrap();
    pt.map(0x1000, 0x5000, PageSize::SIZE_4K, Leaf::rw())
        .unwrap();
    let cds = CdTable::new(&d, 4);
    cds.install(&mut d, 0x40, 1, 1, pt.config().ttb); // forced: S = 1
    cds.install_full(&mut d, 0x40, 2, 2, pt.config().ttb, 0, 16, false);
    d.install_ste(0x40, cds.ste(4)); // no S1STALLD with STALL_FORCE
    assert_eq!(
        dma(&d, pci(0, 8), Some(1), 0x1000, Perm::R).unwrap().output,
        Gpa(0x5000)
    );
    stalled(dma_s(&d, pci(0, 8), Some(1), 0x2000, Perm::R));
    assert!(parse(d.take_event().unwrap()).stall);
    assert_eq!(
        dma(&d, pci(0, 8), Some(2), 0x1000, Perm::R)
            .unwrap_err()
            .reason,
        0x0a
    );
}

// 4.7.1 / 4.7.2 on an SMMU without stalls: CERROR_ILL.
#[test]
fn smmu_stall_commands_illegal_with_terminate_model() {
    let mut d = Driver::new("stall-model=terminate");
    d.reset();
    let n = 1u32 << d.cmdq_log2;
    let p = d.cmdq_prod;
    let slot = d.cmdq + u64::from(p & (n - 1)) * 16;
    d.ram
        .write_u64(Gpa(slot), OP_STALL_TERM | (5 << 32))
        .unwrap();
    d.ram.write_u64(Gpa(slot + 8), 0).unwrap();
    d.wr(CMDQ_PROD, u64::from(p + 1));
    assert_eq!((d.rd(CMDQ_CONS) >> 24) & 0x7f, 1, "CERROR_ILL");
}
