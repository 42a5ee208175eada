//! Device tests over FakeRam and MapIommu: registers, descriptors,
//! completion records, faults, PASID tagging, ATC, PRI hooks.

use std::sync::{Arc, Mutex};

use iommu_emulator::testing::{FakeRam, MapIommu};
use iommu_emulator::{DeviceAddressSpace, Gpa, GuestRam, Perm, Rid, SourceId};

use super::atc::{Atc, PageResponse};
use super::desc::{Completion, Descriptor, FLAG_IRQ, FLAG_WRITE, Op, status};
use super::regs::*;
use super::*;

const RID: Rid = Rid(0x20);
const RING: u64 = 0x10_0000; // IOVA
const RING_GPA: u64 = 0x50_0000;
const BUF: u64 = 0x20_0000; // IOVA of 4 pages
const BUF_GPA: u64 = 0x60_0000;
const CPL: u64 = 0x30_0000;
const CPL_GPA: u64 = 0x70_0000;

struct Rig {
    ram: Arc<FakeRam>,
    iommu: Arc<MapIommu>,
    dev: PasidDevice,
}

fn all_on() -> PcieState {
    PcieState {
        bus_master: true,
        pasid_enable: true,
        priv_enable: true,
        ats_enable: true,
        pri_enable: true,
    }
}

fn rig() -> Rig {
    let ram = Arc::new(FakeRam::new(1 << 30));
    let iommu = Arc::new(MapIommu::new());
    let space = DeviceAddressSpace::new(iommu.clone(), ram.clone(), SourceId::Pci(RID));
    let mut dev = PasidDevice::new(space, ram.clone(), Arc::new(Atc::new(RID)));
    dev.set_pcie_state(all_on());
    dev.mmio_write(GCTL, 4, u64::from(GCTL_ENABLE));
    Rig { ram, iommu, dev }
}

fn wq(n: usize, reg: u64) -> u64 {
    WQ_BASE + n as u64 * WQ_STRIDE + reg
}

impl Rig {
    /// Map ring, buffers and completion area for `pasid` at the fixed IOVAs.
    fn map(&self, pasid: Option<u32>, gpa_off: u64) {
        self.iommu
            .map(pasid, RING, RING_GPA + gpa_off, 0x1000, Perm::R);
        self.iommu
            .map(pasid, BUF, BUF_GPA + gpa_off, 0x4000, Perm::RW);
        self.iommu
            .map(pasid, CPL, CPL_GPA + gpa_off, 0x1000, Perm::RW);
    }
    fn setup(&mut self, n: usize, pasid_reg: u32, size: u32) {
        self.dev
            .mmio_write(wq(n, WQ_PASID), 4, u64::from(pasid_reg));
        self.dev.mmio_write(wq(n, WQ_RING_BASE), 8, RING);
        self.dev.mmio_write(wq(n, WQ_RING_SIZE), 4, u64::from(size));
        self.dev
            .mmio_write(wq(n, WQ_CTL), 4, u64::from(WQ_CTL_ENABLE));
    }
    fn put(&self, ring_gpa: u64, idx: u64, d: &Descriptor) {
        self.ram
            .write(Gpa(ring_gpa + idx * 64), &d.encode())
            .unwrap();
    }
    fn rd(&mut self, off: u64) -> u64 {
        self.dev.mmio_read(off, 4).0
    }
    fn cpl(&self, gpa: u64) -> Completion {
        let mut b = [0u8; 32];
        self.ram.read(Gpa(gpa), &mut b).unwrap();
        Completion::decode(&b)
    }
}

fn d(op: Op, len: u32, src: u64, dst: u64, pattern: u64, cpl: u64) -> Descriptor {
    Descriptor {
        op,
        flags: FLAG_IRQ,
        len,
        src,
        dst,
        pattern,
        completion: cpl,
    }
}

#[test]
fn registers_identify_device_and_queue_count() {
    let mut r = rig();
    assert_eq!(r.rd(VERSION), 0x0001_0000);
    assert_eq!(r.rd(NUM_WQ_REG), 8);
    assert_eq!(r.rd(CAPS), 0x1f);
    assert_eq!(r.rd(GSTS), 1);
    assert_eq!(r.rd(0x4000), 0, "unknown offsets read as zero");
    assert_eq!(r.dev.stats().bad_accesses, 1);
}

// Copy, fill and compare across a page boundary, completion records with
// bytes done, interrupts on the queue's vector.
#[test]
fn wq_copy_fill_compare_complete_with_records_and_vector() {
    let mut r = rig();
    r.map(None, 0);
    r.setup(3, 0, 8);
    let src: Vec<u8> = (0..0x1800u32).map(|i| (i * 7) as u8).collect();
    r.ram.write(Gpa(BUF_GPA + 0x800), &src).unwrap();
    r.put(
        RING_GPA,
        0,
        &d(Op::Copy, 0x1800, BUF + 0x800, BUF + 0x2000, 0, CPL),
    );
    r.put(
        RING_GPA,
        1,
        &d(Op::Compare, 0x1800, BUF + 0x800, BUF + 0x2000, 0, CPL + 32),
    );
    r.put(
        RING_GPA,
        2,
        &d(
            Op::Fill,
            100,
            0,
            BUF + 0x2010,
            0x1122_3344_5566_7788,
            CPL + 64,
        ),
    );
    r.put(
        RING_GPA,
        3,
        &d(Op::Compare, 0x1800, BUF + 0x800, BUF + 0x2000, 0, CPL + 96),
    );
    let irqs = r.dev.mmio_write(wq(3, WQ_TAIL), 4, 4);
    assert_eq!(irqs, 1 << 3);
    assert_eq!(r.rd(wq(3, WQ_HEAD)), 4);
    assert_eq!(r.rd(wq(3, WQ_COMPLETED)), 4);
    let mut out = vec![0u8; 0x1800];
    r.ram.read(Gpa(BUF_GPA + 0x2000), &mut out).unwrap();
    assert_eq!(&out[..0x10], &src[..0x10]);
    assert_eq!(&out[0x10..0x18], &0x1122_3344_5566_7788u64.to_le_bytes());
    let c0 = r.cpl(CPL_GPA);
    assert_eq!((c0.status, c0.bytes), (status::SUCCESS, 0x1800));
    assert_eq!(r.cpl(CPL_GPA + 32).status, status::SUCCESS);
    let c3 = r.cpl(CPL_GPA + 96);
    assert_eq!((c3.status, c3.result), (status::COMPARE_MISMATCH, 0x10));
}

// Unmapped destination: the descriptor stops with TRANSLATION_FAULT, the
// queue reports ERROR, WQ_ERROR, WQ_FAULT_ADDR, ERR_STATUS and raises the
// error vector; nothing runs until RESTART.
#[test]
fn wq_unmapped_dst_stops_with_error_and_error_vector() {
    let mut r = rig();
    r.map(None, 0);
    r.setup(1, 0, 4);
    r.put(RING_GPA, 0, &d(Op::Fill, 0x2000, 0, BUF + 0x3000, 1, CPL));
    r.put(RING_GPA, 1, &d(Op::Nop, 0, 0, 0, 0, CPL + 32));
    let irqs = r.dev.mmio_write(wq(1, WQ_TAIL), 4, 2);
    assert_eq!(irqs, 1 << ERROR_VECTOR);
    assert_eq!(r.rd(wq(1, WQ_STATUS)) as u32, WQ_STS_ENABLED | WQ_STS_ERROR);
    assert_eq!(
        r.rd(wq(1, WQ_ERROR)) as u32,
        WqError::TranslationFault as u32
    );
    assert_eq!(r.dev.mmio_read(wq(1, WQ_FAULT_ADDR), 8).0, BUF + 0x4000);
    assert_eq!(r.rd(ERR_STATUS), 1 << 1);
    let c = r.cpl(CPL_GPA);
    assert_eq!(
        (c.status, c.bytes, c.fault_addr),
        (status::TRANSLATION_FAULT, 0x1000, BUF + 0x4000)
    );
    assert_eq!(r.rd(wq(1, WQ_HEAD)), 0);
    // Fix the descriptor, restart: it runs both.
    r.put(RING_GPA, 0, &d(Op::Fill, 0x100, 0, BUF + 0x3000, 1, CPL));
    r.dev.mmio_write(ERR_STATUS, 4, 2);
    assert_eq!(r.rd(ERR_STATUS), 0);
    let irqs = r
        .dev
        .mmio_write(wq(1, WQ_CTL), 4, u64::from(WQ_CTL_ENABLE | WQ_CTL_RESTART));
    assert_eq!(irqs, 1 << 1);
    assert_eq!(r.rd(wq(1, WQ_HEAD)), 2);
    assert_eq!(r.cpl(CPL_GPA + 32).status, status::SUCCESS);
}

// A read-only mapping refuses the write: permission fault.
#[test]
fn wq_write_to_read_only_mapping_faults() {
    let mut r = rig();
    r.map(None, 0);
    r.iommu.map(None, 0x40_0000, 0x80_0000, 0x1000, Perm::R);
    r.setup(0, 0, 2);
    r.put(RING_GPA, 0, &d(Op::Copy, 8, BUF, 0x40_0000, 0, CPL));
    r.dev.mmio_write(wq(0, WQ_TAIL), 4, 1);
    assert_eq!(
        r.rd(wq(0, WQ_ERROR)) as u32,
        WqError::TranslationFault as u32
    );
    assert_eq!(r.cpl(CPL_GPA).status, status::TRANSLATION_FAULT);
    assert_eq!(r.iommu.faults(), 1);
}

// DMA carries the queue's PASID: a queue whose PASID has no mappings
// faults on its ring; two queues with different PASIDs see different
// memory at the same IOVA.
#[test]
fn wq_dma_is_tagged_with_queue_pasid_and_isolated() {
    let mut r = rig();
    r.map(Some(5), 0);
    r.map(Some(6), 0x1_0000);
    r.setup(0, WQ_PASID_EN | 5, 2);
    r.setup(1, WQ_PASID_EN | 6, 2);
    r.setup(2, WQ_PASID_EN | 7, 2);
    r.put(RING_GPA, 0, &d(Op::Fill, 8, 0, BUF, 0x55, CPL));
    r.put(RING_GPA + 0x1_0000, 0, &d(Op::Fill, 8, 0, BUF, 0x66, CPL));
    r.dev.mmio_write(wq(0, WQ_TAIL), 4, 1);
    r.dev.mmio_write(wq(1, WQ_TAIL), 4, 1);
    assert_eq!(r.ram.read_u64(Gpa(BUF_GPA)).unwrap(), 0x55);
    assert_eq!(r.ram.read_u64(Gpa(BUF_GPA + 0x1_0000)).unwrap(), 0x66);
    let irqs = r.dev.mmio_write(wq(2, WQ_TAIL), 4, 1);
    assert_eq!(irqs, 1 << ERROR_VECTOR);
    assert_eq!(r.rd(wq(2, WQ_ERROR)) as u32, WqError::RingReadFault as u32);
    assert_eq!(r.dev.mmio_read(wq(2, WQ_FAULT_ADDR), 8).0, RING);
}

// PCIe 6.0 §7.8.8.3: no PASID prefix unless PASID Enable; privileged
// requests need Privileged Mode Enable. The queue refuses to enable.
#[test]
fn wq_pasid_without_pcie_enable_is_bad_config() {
    let mut r = rig();
    r.dev.set_pcie_state(PcieState {
        pasid_enable: false,
        ..all_on()
    });
    r.setup(0, WQ_PASID_EN | 5, 2);
    assert_eq!(r.rd(wq(0, WQ_STATUS)) as u32, WQ_STS_ERROR);
    assert_eq!(r.rd(wq(0, WQ_ERROR)) as u32, WqError::BadConfig as u32);
    r.dev.set_pcie_state(PcieState {
        priv_enable: false,
        ..all_on()
    });
    r.dev.mmio_write(
        wq(1, WQ_PASID),
        4,
        u64::from(WQ_PASID_EN | WQ_PASID_PRIV | 5),
    );
    r.dev.mmio_write(wq(1, WQ_RING_BASE), 8, RING);
    r.dev.mmio_write(wq(1, WQ_RING_SIZE), 4, 2);
    assert_eq!(r.dev.mmio_write(wq(1, WQ_CTL), 4, 1), 1 << ERROR_VECTOR);
    assert_eq!(r.rd(ERR_STATUS), 0b11);
}

#[test]
fn wq_bad_ring_size_or_tail_is_bad_config() {
    let mut r = rig();
    r.setup(0, 0, 3);
    assert_eq!(r.rd(wq(0, WQ_ERROR)) as u32, WqError::BadConfig as u32);
    r.map(None, 0);
    r.setup(1, 0, 4);
    assert_eq!(r.dev.mmio_write(wq(1, WQ_TAIL), 4, 9), 1 << ERROR_VECTOR);
    assert_eq!(r.rd(wq(1, WQ_ERROR)) as u32, WqError::BadConfig as u32);
}

#[test]
fn wq_bad_descriptor_writes_record_and_stops() {
    let mut r = rig();
    r.map(None, 0);
    r.setup(0, 0, 2);
    let mut raw = d(Op::Nop, 0, 0, 0, 0, CPL).encode();
    raw[0x38] = 1;
    r.ram.write(Gpa(RING_GPA), &raw).unwrap();
    assert_eq!(r.dev.mmio_write(wq(0, WQ_TAIL), 4, 1), 1 << ERROR_VECTOR);
    assert_eq!(r.rd(wq(0, WQ_ERROR)) as u32, WqError::BadDescriptor as u32);
    assert_eq!(r.cpl(CPL_GPA).status, status::BAD_DESCRIPTOR);
}

// Bus master off: the device issues nothing; the queue keeps its work.
#[test]
fn wq_without_bus_master_does_no_dma() {
    let mut r = rig();
    r.map(None, 0);
    r.setup(0, 0, 2);
    r.dev.set_pcie_state(PcieState {
        bus_master: false,
        ..all_on()
    });
    r.put(RING_GPA, 0, &d(Op::Fill, 8, 0, BUF, 9, 0));
    assert_eq!(r.dev.mmio_write(wq(0, WQ_TAIL), 4, 1), 0);
    assert_eq!(r.iommu.translations(), 0);
    r.dev.set_pcie_state(all_on());
    r.dev.mmio_write(wq(0, WQ_TAIL), 4, 1);
    assert_eq!(r.ram.read_u64(Gpa(BUF_GPA)).unwrap(), 9);
}

// TRANSLATE_ACCESS: the first one sends an ATS translation request and
// fills the ATC, the second hits; an invalidation clears the entry.
#[test]
fn translate_access_fills_atc_and_invalidation_clears_it() {
    let mut r = rig();
    r.map(Some(9), 0);
    // MapIommu ignores the request kind: let the translated (AT=10b) access
    // to the output page through as the real model's identity check does.
    r.iommu.map(
        Some(9),
        BUF_GPA + 0x1000,
        BUF_GPA + 0x1000,
        0x1000,
        Perm::RW,
    );
    r.setup(0, WQ_PASID_EN | 9, 4);
    r.ram.write_u64(Gpa(BUF_GPA + 0x1008), 0xfeed).unwrap();
    r.put(
        RING_GPA,
        0,
        &d(Op::TranslateAccess, 8, BUF + 0x1008, BUF + 0x2000, 0, CPL),
    );
    let mut w = d(Op::TranslateAccess, 8, BUF + 0x1010, 0, 0xbeef, CPL + 32);
    w.flags |= FLAG_WRITE;
    r.put(RING_GPA, 1, &w);
    r.dev.mmio_write(wq(0, WQ_TAIL), 4, 2);
    assert_eq!(r.ram.read_u64(Gpa(BUF_GPA + 0x2000)).unwrap(), 0xfeed);
    assert_eq!(r.ram.read_u64(Gpa(BUF_GPA + 0x1010)).unwrap(), 0xbeef);
    assert_eq!(r.cpl(CPL_GPA).result, BUF_GPA + 0x1008);
    let s = r.dev.stats();
    assert_eq!((s.ats_requests, s.atc_hits), (1, 1));
    assert!(r.dev.atc().lookup(Some(9), BUF + 0x1000, Perm::R).is_some());
    r.dev.atc().invalidate(Some(9), false, BUF + 0x1000, 0x1000);
    assert!(r.dev.atc().is_empty());
    assert_eq!(r.rd(ATC_INVALIDATIONS), 1);
}

#[test]
fn translate_access_without_ats_enable_is_bad_descriptor() {
    let mut r = rig();
    r.map(None, 0);
    r.dev.set_pcie_state(PcieState {
        ats_enable: false,
        ..all_on()
    });
    r.setup(0, 0, 2);
    r.put(
        RING_GPA,
        0,
        &d(Op::TranslateAccess, 8, BUF, BUF + 8, 0, CPL),
    );
    r.dev.mmio_write(wq(0, WQ_TAIL), 4, 1);
    assert_eq!(r.rd(wq(0, WQ_ERROR)) as u32, WqError::BadDescriptor as u32);
}

#[derive(Default)]
struct Prq(Mutex<Vec<PageRequest>>);
impl PageRequestPort for Prq {
    fn page_request(&self, req: &PageRequest) -> bool {
        self.0.lock().unwrap().push(*req);
        true
    }
}

// PCIe §10.4: with USE_PRI a fault sends a page request and the queue
// waits; a success response (after the page is mapped) resumes it; a
// failure response stops it with PAGE_REQUEST_FAILED.
#[test]
fn wq_use_pri_fault_sends_page_request_and_resumes_on_response() {
    let mut r = rig();
    let prq = Arc::new(Prq::default());
    r.dev.set_page_request_port(prq.clone());
    r.map(Some(4), 0);
    r.setup(0, WQ_PASID_EN | 4, 4);
    r.dev
        .mmio_write(wq(0, WQ_CTL), 4, u64::from(WQ_CTL_ENABLE | WQ_CTL_USE_PRI));
    r.put(RING_GPA, 0, &d(Op::Fill, 8, 0, 0x90_0000, 7, CPL));
    r.put(RING_GPA, 1, &d(Op::Fill, 8, 0, 0x91_0000, 7, CPL + 32));
    assert_eq!(r.dev.mmio_write(wq(0, WQ_TAIL), 4, 2), 0);
    assert_eq!(
        r.rd(wq(0, WQ_STATUS)) as u32,
        WQ_STS_ENABLED | WQ_STS_WAITING
    );
    let reqs = prq.0.lock().unwrap().clone();
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        (reqs[0].addr, reqs[0].write, reqs[0].last),
        (0x90_0000, true, true)
    );
    assert_eq!(reqs[0].pasid.unwrap().pasid.get(), 4);
    assert_eq!(r.rd(PAGE_REQUESTS), 1);
    r.iommu.map(Some(4), 0x90_0000, 0xa0_0000, 0x1000, Perm::RW);
    r.dev.atc().deliver_response(PageResponse {
        pasid: Some(4),
        prg_index: reqs[0].prg_index,
        code: 0,
    });
    // The response is taken on the next register access; descriptor 1 faults
    // again and sends the second request.
    let (_, irqs) = r.dev.mmio_read(wq(0, WQ_STATUS), 4);
    assert_eq!(irqs, 1);
    assert_eq!(r.ram.read_u64(Gpa(0xa0_0000)).unwrap(), 7);
    assert_eq!(r.rd(wq(0, WQ_HEAD)), 1);
    let second = prq.0.lock().unwrap()[1];
    r.dev.atc().deliver_response(PageResponse {
        pasid: Some(4),
        prg_index: second.prg_index,
        code: 1,
    });
    let (_, irqs) = r.dev.mmio_read(wq(0, WQ_STATUS), 4);
    assert_eq!(irqs, 1 << ERROR_VECTOR);
    assert_eq!(
        r.rd(wq(0, WQ_ERROR)) as u32,
        WqError::PageResponseFailure as u32
    );
    assert_eq!(r.cpl(CPL_GPA + 32).status, status::PAGE_REQUEST_FAILED);
}

#[test]
fn wq_use_pri_without_port_fails_the_descriptor() {
    let mut r = rig();
    r.map(None, 0);
    r.setup(0, 0, 2);
    r.dev
        .mmio_write(wq(0, WQ_CTL), 4, u64::from(WQ_CTL_ENABLE | WQ_CTL_USE_PRI));
    r.put(RING_GPA, 0, &d(Op::Fill, 8, 0, 0x90_0000, 7, CPL));
    assert_eq!(r.dev.mmio_write(wq(0, WQ_TAIL), 4, 1), 1 << ERROR_VECTOR);
    assert_eq!(
        r.rd(wq(0, WQ_ERROR)) as u32,
        WqError::PageResponseFailure as u32
    );
}

#[test]
fn global_reset_disables_queues_and_flushes_atc() {
    let mut r = rig();
    r.map(None, 0);
    r.setup(0, 0, 2);
    r.dev.atc().insert(super::atc::AtcEntry {
        pasid: None,
        iova: 0,
        size: 4096,
        output: 0,
        perm: Perm::R,
    });
    r.dev.mmio_write(GCTL, 4, u64::from(GCTL_RESET));
    assert_eq!(r.rd(wq(0, WQ_STATUS)), 0);
    assert_eq!(r.rd(GSTS), 0);
    assert!(r.dev.atc().is_empty());
}

// A guest writing garbage everywhere never panics.
#[test]
fn garbage_register_writes_do_not_panic() {
    let mut r = rig();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..20_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let off = ((x >> 8) % 0x2000) & !3;
        let size = if x & 1 == 0 { 4 } else { 8 };
        r.dev.mmio_write(off, size, x);
        r.ram
            .write_u64(Gpa(((x >> 20) % (1 << 24)) & !7), x)
            .unwrap();
        r.iommu.map(
            None,
            ((x >> 12) % 0x100) << 12,
            ((x >> 24) % 0x100) << 12,
            0x1000,
            Perm::RW,
        );
        let _ = r.dev.mmio_read(off, size);
    }
}

// Without an IOMMU (`--iommu none`) the VMM's translator answers with the page's base address
// and a 4 KiB page (vmm/src/iommu.rs `NoIommu`); a Translation is valid for the whole page, so
// the device must add the offset inside the page itself. Before it did, the descriptor in ring
// slot 1 (ring + 64) was read from slot 0 and a copy ran the previous fill again: the guest's
// `pasid_dev_dma_api FAIL copy: bytes differ` with `--iommu none`.
#[test]
fn wq_without_iommu_reads_ring_slots_and_buffers_at_their_offset_in_the_page() {
    let ram = Arc::new(FakeRam::new(1 << 24));
    let space = DeviceAddressSpace::new(
        Arc::new(crate::iommu::NoIommu),
        ram.clone(),
        SourceId::Pci(RID),
    );
    let mut dev = PasidDevice::new(space, ram.clone(), Arc::new(Atc::new(RID)));
    dev.set_pcie_state(all_on());
    dev.mmio_write(GCTL, 4, u64::from(GCTL_ENABLE));
    // IOVA = GPA without an IOMMU. Slot 0: fill 4 KiB at BUF; slot 1: copy it to BUF + 0x1800
    // (not page aligned); completion records at CPL and CPL + 32.
    let src = BUF_GPA;
    let dst = BUF_GPA + 0x1800;
    ram.write(
        Gpa(RING_GPA),
        &d(Op::Fill, 0x1000, 0, src, 0x1122_3344_5566_7788, CPL_GPA).encode(),
    )
    .unwrap();
    ram.write(
        Gpa(RING_GPA + 64),
        &d(Op::Copy, 0x1000, src, dst, 0, CPL_GPA + 32).encode(),
    )
    .unwrap();
    dev.mmio_write(wq(0, WQ_PASID), 4, 0);
    dev.mmio_write(wq(0, WQ_RING_BASE), 8, RING_GPA);
    dev.mmio_write(wq(0, WQ_RING_SIZE), 4, 2);
    dev.mmio_write(wq(0, WQ_CTL), 4, u64::from(WQ_CTL_ENABLE));
    dev.mmio_write(wq(0, WQ_TAIL), 4, 1);
    dev.mmio_write(wq(0, WQ_TAIL), 4, 0);
    assert_eq!(
        dev.mmio_read(wq(0, WQ_STATUS), 4).0,
        u64::from(WQ_STS_ENABLED)
    );
    assert_eq!(dev.mmio_read(wq(0, WQ_COMPLETED), 4).0, 2);
    let mut c = [0u8; 32];
    for rec in [CPL_GPA, CPL_GPA + 32] {
        ram.read(Gpa(rec), &mut c).unwrap();
        assert_eq!(Completion::decode(&c).status, status::SUCCESS, "{rec:#x}");
    }
    let mut a = vec![0u8; 0x1000];
    let mut b = vec![0u8; 0x1000];
    ram.read(Gpa(src), &mut a).unwrap();
    ram.read(Gpa(dst), &mut b).unwrap();
    assert_eq!(&a[..8], &0x1122_3344_5566_7788u64.to_le_bytes());
    assert_eq!(a, b, "the copy lands at dst + its offset in the page");
}
