//! The PASID test device over the real VT-d model in scalable mode, set up
//! the way Linux's intel-iommu driver does (tests/tests/vtd_support): DMA
//! tagged with each queue's PASID through first-level tables, the VT-d
//! fault reasons the guest would log for the payload's negative cases, and
//! the ATC filled by ATS translation requests and cleared by device-TLB
//! invalidations delivered through `Vtd::set_device_notifier` (the endpoint seam).

mod vtd_support;

use std::sync::Arc;

use iommu_emulator::testing::x86_pt::{Format, X86PageTable};
use iommu_emulator::{DeviceAddressSpace, Gpa, GuestRam, PageSize, Perm, SourceId};
use iommu_vmm::devices::pasid::atc::Atc;
use iommu_vmm::devices::pasid::desc::{Completion, Descriptor, FLAG_IRQ, Op, status};
use iommu_vmm::devices::pasid::regs::*;
use iommu_vmm::devices::pasid::{PasidDevice, PcieState};
use vtd_support::*;

const PROPS: &str = "x-scalable-mode=on,aw-bits=48,device-iotlb=on";
const PASIDE: u64 = 1 << 3;
const DTE: u64 = 1 << 2;
const RING: u64 = 0x10_0000;
const BUF: u64 = 0x20_0000;
const CPL: u64 = 0x30_0000;

struct Rig {
    d: Driver,
    dev: PasidDevice,
    dir: u64,
    /// Per PASID: (table, ring gpa, buf gpa, cpl gpa).
    spaces: Vec<(u32, u64, u64, u64)>,
}

fn wq(n: usize, reg: u64) -> u64 {
    WQ_BASE + n as u64 * WQ_STRIDE + reg
}

fn rig() -> Rig {
    let mut d = Driver::probe(PROPS);
    let r = rid(0, 3, 0);
    let dir = d.set_context_sm(r, PASIDE | DTE);
    let space = DeviceAddressSpace::new(d.vtd.clone(), d.ram.clone(), SourceId::Pci(r));
    let atc = Arc::new(Atc::new(r));
    d.vtd.set_device_notifier(atc.clone());
    let ram: Arc<dyn GuestRam> = d.ram.clone();
    let mut dev = PasidDevice::new(space, ram, atc);
    dev.set_pcie_state(PcieState {
        bus_master: true,
        pasid_enable: true,
        priv_enable: true,
        ats_enable: true,
        pri_enable: false,
    });
    dev.mmio_write(GCTL, 4, 1);
    Rig {
        d,
        dev,
        dir,
        spaces: vec![],
    }
}

impl Rig {
    /// iommu_attach_device_pasid() analogue: a first-level table for
    /// `pasid` (domain `did`) with ring (read-only), 4 buffer pages and a
    /// completion page. Returns the table.
    fn attach(&mut self, pasid: u32, did: u16) -> X86PageTable<'static> {
        let ram: &'static _ = Box::leak(Box::new(self.d.ram.clone()));
        let pt = X86PageTable::new(ram, Format::FirstLevel { levels: 4 });
        let ring = self.d.alloc(1);
        let buf = self.d.alloc(4);
        let cpl = self.d.alloc(1);
        pt.map(RING, ring, PageSize::SIZE_4K, Perm::R).unwrap();
        for i in 0..4 {
            pt.map(
                BUF + i * 0x1000,
                buf + i * 0x1000,
                PageSize::SIZE_4K,
                Perm::RW,
            )
            .unwrap();
        }
        pt.map(CPL, cpl, PageSize::SIZE_4K, Perm::RW).unwrap();
        self.d
            .set_pasid_entry(self.dir, pasid, pasid_fl(did, pt.root().0, false));
        self.spaces.push((pasid, ring, buf, cpl));
        pt
    }
    fn gpas(&self, pasid: u32) -> (u64, u64, u64) {
        let s = self.spaces.iter().find(|s| s.0 == pasid).unwrap();
        (s.1, s.2, s.3)
    }
    fn queue(&mut self, n: usize, pasid: u32) {
        self.dev
            .mmio_write(wq(n, WQ_PASID), 4, u64::from(WQ_PASID_EN | pasid));
        self.dev.mmio_write(wq(n, WQ_RING_BASE), 8, RING);
        self.dev.mmio_write(wq(n, WQ_RING_SIZE), 4, 16);
        self.dev.mmio_write(wq(n, WQ_CTL), 4, 1);
    }
    fn submit(&mut self, n: usize, pasid: u32, descs: &[Descriptor]) -> u32 {
        let (ring, _, _) = self.gpas(pasid);
        let head = self.dev.mmio_read(wq(n, WQ_HEAD), 4).0;
        for (i, desc) in descs.iter().enumerate() {
            let slot = (head + i as u64) % 16;
            self.d
                .ram
                .write(Gpa(ring + slot * 64), &desc.encode())
                .unwrap();
        }
        let tail = (head + descs.len() as u64) % 16;
        self.dev.mmio_write(wq(n, WQ_TAIL), 4, tail)
    }
    fn cpl(&self, pasid: u32, idx: u64) -> Completion {
        let (_, _, cpl) = self.gpas(pasid);
        let mut b = [0u8; 32];
        self.d.ram.read(Gpa(cpl + idx * 32), &mut b).unwrap();
        Completion::decode(&b)
    }
    fn reg(&mut self, off: u64) -> u64 {
        self.dev.mmio_read(off, 4).0
    }
}

fn desc(op: Op, len: u32, src: u64, dst: u64, pattern: u64, cpl_idx: u64) -> Descriptor {
    Descriptor {
        op,
        flags: FLAG_IRQ,
        len,
        src,
        dst,
        pattern,
        completion: CPL + cpl_idx * 32,
    }
}

// The payload's positive flow: copy/fill/compare through a PASID-tagged
// queue, verified in guest memory behind the first-level tables.
#[test]
fn pasid_device_vtd_copy_fill_compare_through_first_level() {
    let mut r = rig();
    r.attach(5, 10);
    r.queue(0, 5);
    let (_, buf, _) = r.gpas(5);
    let data: Vec<u8> = (0..0x2000u32).map(|i| (i % 251) as u8).collect();
    r.d.ram.write(Gpa(buf), &data).unwrap();
    let irqs = r.submit(
        0,
        5,
        &[
            desc(Op::Copy, 0x2000, BUF, BUF + 0x2000, 0, 0),
            desc(Op::Compare, 0x2000, BUF, BUF + 0x2000, 0, 1),
            desc(Op::Fill, 0x100, 0, BUF + 0x3000, 0xa5a5_a5a5_a5a5_a5a5, 2),
        ],
    );
    assert_eq!(irqs, 1);
    let mut out = vec![0u8; 0x1000];
    r.d.ram.read(Gpa(buf + 0x2000), &mut out).unwrap();
    assert_eq!(&out[..], &data[..0x1000]);
    assert_eq!(
        r.d.ram.read_u64(Gpa(buf + 0x3000)).unwrap(),
        0xa5a5_a5a5_a5a5_a5a5
    );
    for i in 0..3 {
        assert_eq!(r.cpl(5, i).status, status::SUCCESS, "descriptor {i}");
    }
    assert!(r.d.handle_fault().is_empty());
}

// Negative cases with the VT-d fault reason the guest's DMAR log shows
// (VT-d Appendix A): unmapped IOVA -> first-level entry not present
// (0x71); write through a read-only first-level mapping -> write not
// allowed (0x85); PASID not attached -> PASID entry not present (0x59).
#[test]
fn pasid_device_vtd_unmapped_iova_records_fl_not_present() {
    let mut r = rig();
    r.attach(5, 10);
    r.queue(0, 5);
    let irqs = r.submit(0, 5, &[desc(Op::Fill, 8, 0, 0x4000_0000, 1, 0)]);
    assert_eq!(irqs, 1 << ERROR_VECTOR);
    assert_eq!(r.reg(wq(0, WQ_ERROR)), WqError::TranslationFault as u64);
    assert_eq!(r.dev.mmio_read(wq(0, WQ_FAULT_ADDR), 8).0, 0x4000_0000);
    assert_eq!(r.cpl(5, 0).status, status::TRANSLATION_FAULT);
    let seen = r.d.handle_fault();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].addr, seen[0].pasid, seen[0].read),
        (0x4000_0000, Some(5), false)
    );
    assert_eq!(seen[0].reason, 0x71, "{seen:?}");
}

#[test]
fn pasid_device_vtd_write_to_read_only_mapping_faults() {
    let mut r = rig();
    r.attach(5, 10);
    r.queue(0, 5);
    // The ring page is mapped read-only: fill it.
    r.submit(0, 5, &[desc(Op::Fill, 8, 0, RING + 0x800, 1, 0)]);
    assert_eq!(r.reg(wq(0, WQ_ERROR)), WqError::TranslationFault as u64);
    let seen = r.d.handle_fault();
    assert_eq!(seen.len(), 1);
    assert!(!seen[0].read);
    assert_eq!(seen[0].reason, 0x85, "{seen:?}");
}

// Two PASIDs stay isolated, and a queue whose PASID is not attached faults
// on its first (ring) read with "PASID entry not present".
#[test]
fn pasid_device_vtd_pasids_isolated_and_unattached_pasid_faults() {
    let mut r = rig();
    r.attach(5, 10);
    r.attach(6, 11);
    r.queue(0, 5);
    r.queue(1, 6);
    r.submit(0, 5, &[desc(Op::Fill, 8, 0, BUF, 0x55, 0)]);
    r.submit(1, 6, &[desc(Op::Fill, 8, 0, BUF, 0x66, 0)]);
    assert_eq!(r.d.ram.read_u64(Gpa(r.gpas(5).1)).unwrap(), 0x55);
    assert_eq!(r.d.ram.read_u64(Gpa(r.gpas(6).1)).unwrap(), 0x66);
    // PASID 7 (same directory page, no entry).
    r.queue(2, 7);
    let (ring5, _, _) = r.gpas(5);
    r.d.ram
        .write(Gpa(ring5), &desc(Op::Nop, 0, 0, 0, 0, 0).encode())
        .unwrap();
    assert_eq!(r.dev.mmio_write(wq(2, WQ_TAIL), 4, 1), 1 << ERROR_VECTOR);
    assert_eq!(r.reg(wq(2, WQ_ERROR)), WqError::RingReadFault as u64);
    let seen = r.d.handle_fault();
    assert_eq!(seen.len(), 1);
    assert_eq!((seen[0].pasid, seen[0].reason), (Some(7), 0x59), "{seen:?}");
}

// Detach (clear the PASID entry, flush the PASID cache and IOTLB as
// intel_pasid_tear_down_entry does): the queue's next DMA faults.
#[test]
fn pasid_device_vtd_detach_makes_next_dma_fault() {
    let mut r = rig();
    r.attach(5, 10);
    r.queue(0, 5);
    assert_eq!(r.submit(0, 5, &[desc(Op::Fill, 8, 0, BUF, 1, 0)]), 1);
    r.d.set_pasid_entry(r.dir, 5, [0; 8]);
    r.d.qi_submit(&[desc_pc_pasid(10, 5), desc_piotlb(10, 5, None)]);
    let irqs = r.submit(0, 5, &[desc(Op::Fill, 8, 0, BUF, 2, 1)]);
    assert_eq!(irqs, 1 << ERROR_VECTOR);
    assert_eq!(r.reg(wq(0, WQ_ERROR)), WqError::RingReadFault as u64);
    let seen = r.d.handle_fault();
    assert_eq!((seen[0].pasid, seen[0].reason), (Some(5), 0x59), "{seen:?}");
}

// ATS: TRANSLATE_ACCESS sends a translation request (the model answers
// with the first-level translation), caches it, and a device-TLB
// invalidation submitted on the invalidation queue clears it before the
// wait descriptor completes (VT-d 6.5.2.5).
#[test]
fn pasid_device_vtd_atc_filled_by_ats_and_cleared_by_devtlb_invalidation() {
    let mut r = rig();
    r.attach(5, 10);
    r.queue(0, 5);
    let (_, buf, _) = r.gpas(5);
    r.d.ram.write_u64(Gpa(buf + 0x1010), 0x1234).unwrap();
    r.submit(
        0,
        5,
        &[
            desc(Op::TranslateAccess, 8, BUF + 0x1010, BUF + 0x2000, 0, 0),
            desc(Op::TranslateAccess, 8, BUF + 0x1018, BUF + 0x2008, 0, 1),
        ],
    );
    assert_eq!(r.cpl(5, 0).status, status::SUCCESS, "{:?}", r.cpl(5, 0));
    assert_eq!(r.cpl(5, 0).result, buf + 0x1010);
    assert_eq!(r.d.ram.read_u64(Gpa(buf + 0x2000)).unwrap(), 0x1234);
    let s = r.dev.stats();
    assert_eq!((s.ats_requests, s.atc_hits), (1, 1));
    assert_eq!(r.dev.atc().len(), 1);
    let sid = rid(0, 3, 0).0;
    r.d.qi_submit(&[desc_dev_iotlb(sid, BUF + 0x1000, false)]);
    assert!(r.dev.atc().is_empty());
    assert_eq!(r.reg(ATC_INVALIDATIONS), 1);
    // Another function's invalidation does not touch this ATC.
    r.submit(0, 5, &[desc(Op::TranslateAccess, 8, BUF + 0x1010, 0, 0, 2)]);
    r.d.qi_submit(&[desc_dev_iotlb(rid(0, 4, 0).0, BUF + 0x1000, false)]);
    assert_eq!(r.dev.atc().len(), 1);
}

// PCIe PRI through the VT-d page request queue (VT-d 7.5): with USE_PRI a
// fault on an unmapped page sends a page request; the driver maps the page
// and answers with a page group response (QI type 9), and the queue
// resumes and completes the descriptor.
#[test]
fn pasid_device_vtd_page_request_resolves_fault_and_resumes() {
    use iommu_vmm::devices::pasid::atc::UnitPageRequests;
    use vtd_model::regs::{PQA, PQH, PQT};
    let mut d =
        Driver::probe("x-scalable-mode=on,aw-bits=48,device-iotlb=on,x-prs=on,x-pasid-mode=on");
    let r = rid(0, 3, 0);
    let dir = d.set_context_sm(r, PASIDE | DTE | (1 << 4));
    let prq = d.alloc(1);
    d.wr64(PQH, 0);
    d.wr64(PQT, 0);
    d.wr64(PQA, prq);
    let ram: &'static _ = Box::leak(Box::new(d.ram.clone()));
    let pt = X86PageTable::new(ram, Format::FirstLevel { levels: 4 });
    let ring = d.alloc(1);
    let cpl = d.alloc(1);
    pt.map(RING, ring, PageSize::SIZE_4K, Perm::R).unwrap();
    pt.map(CPL, cpl, PageSize::SIZE_4K, Perm::RW).unwrap();
    d.set_pasid_entry(dir, 9, pasid_fl(12, pt.root().0, false));
    let space = DeviceAddressSpace::new(d.vtd.clone(), d.ram.clone(), SourceId::Pci(r));
    let atc = Arc::new(Atc::new(r));
    d.vtd.set_device_notifier(atc.clone());
    let gram: Arc<dyn GuestRam> = d.ram.clone();
    let mut dev = PasidDevice::new(space, gram.clone(), atc.clone());
    dev.set_page_request_port(Arc::new(UnitPageRequests {
        sink: d.vtd.clone(),
        ram: gram,
        atc,
    }));
    dev.set_pcie_state(PcieState {
        bus_master: true,
        pasid_enable: true,
        priv_enable: false,
        ats_enable: true,
        pri_enable: true,
    });
    dev.mmio_write(GCTL, 4, 1);
    dev.mmio_write(wq(0, WQ_PASID), 4, u64::from(WQ_PASID_EN | 9));
    dev.mmio_write(wq(0, WQ_RING_BASE), 8, RING);
    dev.mmio_write(wq(0, WQ_RING_SIZE), 4, 16);
    dev.mmio_write(wq(0, WQ_CTL), 4, 3); // ENABLE | USE_PRI
    d.ram
        .write(Gpa(ring), &desc(Op::Fill, 8, 0, BUF, 0x77, 0).encode())
        .unwrap();
    assert_eq!(dev.mmio_write(wq(0, WQ_TAIL), 4, 1), 0);
    assert_eq!(dev.mmio_read(wq(0, WQ_STATUS), 4).0, 1 | 4, "waiting");
    assert_eq!(dev.mmio_read(PAGE_REQUESTS, 4).0, 1);
    // The driver sees the request in the queue, maps the page, responds.
    assert_eq!(d.rd64(PQT), 32, "one descriptor queued");
    let lo = d.ram.read_u64(Gpa(prq)).unwrap();
    let hi = d.ram.read_u64(Gpa(prq + 8)).unwrap();
    assert_eq!((hi & !0xfff, (lo >> 32) & 0xf_ffff), (BUF, 9));
    let page = d.alloc(1);
    pt.map(BUF, page, PageSize::SIZE_4K, Perm::RW).unwrap();
    let prgi = (hi >> 3) & 0x1ff;
    let qw0 = 9 | (1 << 4) | (u64::from(r.0) << 16) | (9u64 << 32);
    d.qi_submit(&[[qw0, (prgi << 3) | (1 << 2)]]);
    d.wr64(PQH, 32);
    let (st, irqs) = dev.mmio_read(wq(0, WQ_STATUS), 4);
    assert_eq!((st, irqs), (1, 1), "resumed and completed");
    assert_eq!(d.ram.read_u64(Gpa(page)).unwrap(), 0x77);
    assert_eq!(dev.mmio_read(PAGE_RESPONSES, 4).0, 1);
}
