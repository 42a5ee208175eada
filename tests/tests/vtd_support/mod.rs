//! A driver harness that programs the VT-d model the way Linux's
//! intel-iommu driver does (drivers/iommu/intel/{dmar.c,iommu.c,pasid.c}
//! in 5.10-6.12): the same registers in the same order, the same queued
//! invalidation protocol (descriptors followed by a wait descriptor with a
//! status write, then an IQT write and a poll of the status), the same
//! fault handler. Facts from the driver, not its code.
#![allow(dead_code)]

use std::sync::Arc;

use iommu_emulator::testing::{FakeRam, RecordingMsi};
use iommu_emulator::{
    DmaRequest, Fault, Gpa, GuestRam, Iommu, Pasid, PasidTag, Perm, Rid, SourceId, Translation,
};
use vtd_model::regs::*;
use vtd_model::{Vtd, VtdConfig};

/// Value Linux's QI code polls for in the wait descriptor's status.
pub const QI_DONE: u32 = 1;
/// Value written before submission.
pub const QI_IN_USE: u32 = 0;
/// Fault event MSI the harness programs (vector 0x41 on APIC 0).
pub const FE_DATA: u32 = 0x4041;
/// Fault event MSI address.
pub const FE_ADDR: u32 = 0xfee0_0000;
/// Invalidation event MSI data.
pub const IE_DATA: u32 = 0x4042;

/// One fault as Linux's dmar_fault() decodes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeenFault {
    pub reason: u8,
    pub sid: u16,
    pub addr: u64,
    /// Linux: `type ? "DMA Read" : "DMA Write"`.
    pub read: bool,
    pub pasid: Option<u32>,
}

pub struct Driver {
    pub vtd: Arc<Vtd>,
    pub ram: Arc<FakeRam>,
    pub msi: Arc<RecordingMsi>,
    pub cap: u64,
    pub ecap: u64,
    pub sm: bool,
    pub qi: bool,
    pub gcmd: u32,
    pub qi_base: u64,
    pub dw: bool,
    pub free_head: u64,
    pub status: u64,
    pub root: u64,
    ctx_tables: std::collections::BTreeMap<(u8, bool), u64>,
}

pub fn rid(bus: u8, dev: u8, func: u8) -> Rid {
    Rid::new(bus, dev, func)
}

impl Driver {
    pub fn rd32(&self, off: u64) -> u32 {
        self.vtd.mmio_read(self.ram.as_ref(), off, 4) as u32
    }
    pub fn rd64(&self, off: u64) -> u64 {
        self.vtd.mmio_read(self.ram.as_ref(), off, 8)
    }
    pub fn wr32(&self, off: u64, v: u32) {
        self.vtd.mmio_write(self.ram.as_ref(), off, 4, u64::from(v));
    }
    pub fn wr64(&self, off: u64, v: u64) {
        self.vtd.mmio_write(self.ram.as_ref(), off, 8, v);
    }

    pub fn alloc(&self, pages: u64) -> u64 {
        self.ram.alloc_pages(pages).unwrap().0
    }

    /// IOMMU_WAIT_OP on GSTS: the bit must be set (or clear) right away,
    /// since the model completes commands inside the write.
    fn wait_sts(&self, bit: u64, set: bool) {
        let v = u64::from(self.rd32(GSTS));
        assert_eq!(v & bit != 0, set, "GSTS {v:#x} bit {bit:#x}");
    }

    /// Probe and enable as intel_iommu_init()/init_dmars() do: fault
    /// interrupt, clear old faults, QI, root table (+global flushes), TE.
    pub fn probe(props: &str) -> Self {
        let cfg = VtdConfig::parse_props(props).unwrap();
        let msi = Arc::new(RecordingMsi::new());
        let ram = Arc::new(FakeRam::new(1 << 36));
        let vtd = Arc::new(Vtd::new(cfg, msi.clone()).unwrap());
        let mut d = Driver {
            vtd,
            ram,
            msi,
            cap: 0,
            ecap: 0,
            sm: false,
            qi: false,
            gcmd: 0,
            qi_base: 0,
            dw: false,
            free_head: 0,
            status: 0,
            root: 0,
            ctx_tables: Default::default(),
        };
        let _ver = d.rd32(VER);
        d.cap = d.rd64(CAP);
        d.ecap = d.rd64(ECAP);
        d.sm = d.ecap & (1 << 43) != 0;
        // dmar_set_interrupt -> dmar_msi_write + unmask
        d.wr32(FEDATA, FE_DATA);
        d.wr32(FEADDR, FE_ADDR);
        d.wr32(FEUADDR, 0);
        d.wr32(FECTL, 0);
        let _ = d.rd32(FECTL);
        // enable_drhd_fault_handling: clear previous faults
        d.handle_fault();
        let f = d.rd32(FSTS);
        d.wr32(FSTS, f);
        // dmar_enable_qi / __dmar_enable_qi
        if d.ecap & 2 != 0 {
            d.wait_sts(GCMD_QIE, false);
            d.dw = d.ecap & (1 << 43) != 0;
            d.qi_base = d.alloc(2);
            d.status = d.alloc(1);
            d.wr64(IQT, 0);
            let iqa = d.qi_base | if d.dw { (1 << 11) | 1 } else { 0 };
            d.wr64(IQA, iqa);
            d.gcmd |= GCMD_QIE as u32;
            d.wr32(GCMD, d.gcmd);
            d.wait_sts(GCMD_QIE, true);
            d.qi = true;
            // invalidation completion event MSI
            d.wr32(IEDATA, IE_DATA);
            d.wr32(IEADDR, FE_ADDR);
            d.wr32(IEUADDR, 0);
            d.wr32(IECTL, 0);
        }
        // iommu_set_root_entry
        d.root = d.alloc(1);
        let rta = d.root | if d.sm { 1 << 10 } else { 0 };
        d.wr64(RTADDR, rta);
        d.wr32(GCMD, d.gcmd | GCMD_SRTP as u32);
        d.wait_sts(GCMD_SRTP, true);
        d.flush_context_global();
        if d.sm {
            d.qi_submit(&[desc_pc_global()]);
        }
        d.flush_iotlb_global();
        // iommu_enable_translation
        d.gcmd |= GCMD_TE as u32;
        d.wr32(GCMD, d.gcmd);
        d.wait_sts(GCMD_TE, true);
        d
    }

    pub fn desc_size(&self) -> u64 {
        if self.dw { 32 } else { 16 }
    }

    /// qi_submit_sync(): descriptors, then a wait descriptor with status
    /// write and fence, then the IQT write; the status must read QI_DONE
    /// and the queue must be empty with no error.
    pub fn qi_submit(&mut self, descs: &[[u64; 2]]) {
        let idx = self.queue(descs);
        self.wr64(IQT, self.free_head * self.desc_size());
        let st = self.ram.read_u32(Gpa(self.status + idx * 4)).unwrap();
        assert_eq!(st, QI_DONE, "wait descriptor status not written");
        assert_eq!(self.rd64(IQH), self.rd64(IQT), "queue not drained");
        assert_eq!(
            u64::from(self.rd32(FSTS)) & (FSTS_IQE | FSTS_ITE | FSTS_ICE),
            0
        );
    }

    /// Place `descs` plus a wait descriptor in the queue without ringing
    /// the doorbell; returns the status slot index.
    pub fn queue(&mut self, descs: &[[u64; 2]]) -> u64 {
        for d in descs {
            self.put_desc(*d);
        }
        let idx = self.free_head % 64;
        let st = self.status + idx * 4;
        self.ram.write_u32(Gpa(st), QI_IN_USE).unwrap();
        self.put_desc(desc_wait(st, QI_DONE, false));
        idx
    }

    pub fn put_desc(&mut self, d: [u64; 2]) {
        // IQA.QS: 2 pages with 256-bit descriptors (DW), 1 page of 128-bit
        // ones: 256 entries either way (VT-d 11.4.9.3).
        let n = 256;
        let a = self.qi_base + (self.free_head % n) * self.desc_size();
        self.ram.write_u64(Gpa(a), d[0]).unwrap();
        self.ram.write_u64(Gpa(a + 8), d[1]).unwrap();
        if self.dw {
            self.ram.write_u64(Gpa(a + 16), 0).unwrap();
            self.ram.write_u64(Gpa(a + 24), 0).unwrap();
        }
        self.free_head = (self.free_head + 1) % n;
    }

    pub fn flush_context_global(&mut self) {
        if self.qi {
            self.qi_submit(&[[1 | (1 << 4), 0]]);
        } else {
            self.ccmd(CCMD_ICC | (1 << CCMD_CIRG_SHIFT));
        }
    }

    pub fn flush_iotlb_global(&mut self) {
        if self.qi {
            self.qi_submit(&[[2 | (1 << 4) | (1 << 6) | (1 << 7), 0]]);
        } else {
            self.iotlb_reg(1 << IOTLB_IIRG_SHIFT, 0);
        }
    }

    /// __iommu_flush_context(): write CCMD, poll ICC clear.
    pub fn ccmd(&self, val: u64) -> u64 {
        self.wr64(CCMD, val);
        let v = self.rd64(CCMD);
        assert_eq!(v & CCMD_ICC, 0, "ICC must clear");
        (v >> CCMD_CAIG_SHIFT) & 3
    }

    /// __iommu_flush_iotlb(): IVA for PSI, then the IOTLB register with
    /// IVT (+ drain bits), poll IVT clear; returns IAIG.
    pub fn iotlb_reg(&self, gran: u64, iva: u64) -> u64 {
        if iva != 0 {
            self.wr64(IVA, iva);
        }
        self.wr64(IOTLB, IOTLB_IVT | gran | (1 << 49) | (1 << 48));
        let v = self.rd64(IOTLB);
        assert_eq!(v & IOTLB_IVT, 0, "IVT must clear");
        (v >> IOTLB_IAIG_SHIFT) & 3
    }

    /// iommu_flush_iotlb_psi() in legacy mode / second-level domains.
    pub fn flush_iotlb_psi(&mut self, did: u16, addr: u64, am: u8, ih: bool) {
        if self.qi {
            self.qi_submit(&[desc_iotlb_psi(did, addr, am, ih)]);
        } else {
            let iaig = self.iotlb_reg(
                (3 << IOTLB_IIRG_SHIFT) | (u64::from(did) << 32),
                addr | (u64::from(ih) << 6) | u64::from(am),
            );
            assert_eq!(iaig, 3);
        }
    }

    fn context_table(&mut self, bus: u8, upper: bool) -> u64 {
        if let Some(t) = self.ctx_tables.get(&(bus, upper)) {
            return *t;
        }
        let t = self.alloc(1);
        self.ctx_tables.insert((bus, upper), t);
        let ra = self.root + u64::from(bus) * 16 + if upper { 8 } else { 0 };
        let old = self.ram.read_u64(Gpa(ra)).unwrap();
        assert_eq!(old, 0);
        self.ram.write_u64(Gpa(ra), t | 1).unwrap();
        t
    }

    /// domain_context_mapping_one() in legacy mode: lo = SLPTPTR | TT | P,
    /// hi = AW | DID.
    pub fn set_context_legacy(&mut self, r: Rid, did: u16, slptr: u64, levels: u8, tt: u64) {
        let t = self.context_table(r.bus(), false);
        let a = t + u64::from(r.devfn()) * 16;
        self.ram
            .write_u64(Gpa(a + 8), u64::from(levels - 2) | (u64::from(did) << 8))
            .unwrap();
        self.ram.write_u64(Gpa(a), slptr | (tt << 2) | 1).unwrap();
    }

    pub fn legacy_context_addr(&mut self, r: Rid) -> u64 {
        self.context_table(r.bus(), false) + u64::from(r.devfn()) * 16
    }

    /// Scalable context entry: PASID directory pointer, PDTS, PASIDE/DTE
    /// flags, RID_PASID 0. Returns the PASID directory address.
    pub fn set_context_sm(&mut self, r: Rid, lo_flags: u64) -> u64 {
        let t = self.context_table(r.bus(), r.devfn() >= 128);
        let a = t + u64::from(r.devfn() & 0x7f) * 32;
        let dir = self.alloc(1); // PDTS 0: 128 entries
        self.ram.write_u64(Gpa(a + 8), 0).unwrap();
        self.ram.write_u64(Gpa(a), dir | lo_flags | 1).unwrap();
        dir
    }

    /// Write a PASID table entry (allocating the PASID table on demand).
    pub fn set_pasid_entry(&mut self, dir: u64, pasid: u32, w: [u64; 8]) -> u64 {
        let da = dir + u64::from(pasid >> 6) * 8;
        let mut de = self.ram.read_u64(Gpa(da)).unwrap();
        if de & 1 == 0 {
            de = self.alloc(1) | 1;
            self.ram.write_u64(Gpa(da), de).unwrap();
        }
        let pa = (de & !0xfff) + u64::from(pasid & 0x3f) * 64;
        for (i, x) in w.iter().enumerate().rev() {
            self.ram.write_u64(Gpa(pa + 8 * i as u64), *x).unwrap();
        }
        pa
    }

    /// dmar_fault(): read FSTS, walk the records from FRI while F is set,
    /// clear each F at +12, then write PFO|PPF|PRO to FSTS.
    pub fn handle_fault(&self) -> Vec<SeenFault> {
        let mut out = Vec::new();
        let fsts = self.rd32(FSTS);
        if fsts & FSTS_PPF as u32 == 0 {
            return out;
        }
        let nfr = ((self.cap >> 40) & 0xff) as usize + 1;
        let fro = ((self.cap >> 24) & 0x3ff) * 16;
        let mut idx = ((fsts >> 8) & 0xff) as usize;
        for _ in 0..nfr {
            let base = fro + idx as u64 * 16;
            let hi = self.rd32(base + 12);
            if hi & (1 << 31) == 0 {
                break;
            }
            let mid = self.rd32(base + 8);
            let lo = self.rd64(base);
            out.push(SeenFault {
                reason: (hi & 0xff) as u8,
                sid: (mid & 0xffff) as u16,
                addr: lo & !0xfff,
                read: hi & (1 << 30) != 0,
                pasid: (mid & (1 << 31) != 0).then_some((hi >> 8) & 0xf_ffff),
            });
            self.wr32(base + 12, 1 << 31);
            idx = (idx + 1) % nfr;
        }
        self.wr32(FSTS, (FSTS_PFO | FSTS_PPF | (1 << 7)) as u32);
        out
    }

    pub fn dma(&self, r: Rid, addr: u64, access: Perm) -> Result<Translation, Fault> {
        let req = DmaRequest::new(SourceId::Pci(r), addr, 4, access);
        self.vtd.translate(self.ram.as_ref(), &req)
    }

    pub fn dma_pasid(
        &self,
        r: Rid,
        pasid: u32,
        privileged: bool,
        addr: u64,
        access: Perm,
    ) -> Result<Translation, Fault> {
        let req = DmaRequest::new(SourceId::Pci(r), addr, 4, access).with_pasid(PasidTag {
            pasid: Pasid::new(pasid).unwrap(),
            privileged,
            exec: false,
        });
        self.vtd.translate(self.ram.as_ref(), &req)
    }

    /// The fault-event MSIs raised so far (and clear the record).
    pub fn fault_msis(&self) -> usize {
        self.msi
            .take()
            .iter()
            .filter(|m| m.data == FE_DATA && m.addr == u64::from(FE_ADDR))
            .count()
    }
}

pub fn desc_wait(status: u64, data: u32, interrupt: bool) -> [u64; 2] {
    [
        5 | (1 << 5) | (1 << 6) | (u64::from(interrupt) << 4) | (u64::from(data) << 32),
        status,
    ]
}

pub fn desc_iotlb_psi(did: u16, addr: u64, am: u8, ih: bool) -> [u64; 2] {
    [
        2 | (3 << 4) | (1 << 6) | (1 << 7) | (u64::from(did) << 16),
        addr | (u64::from(ih) << 6) | u64::from(am),
    ]
}

pub fn desc_iotlb_dsi(did: u16) -> [u64; 2] {
    [
        2 | (2 << 4) | (1 << 6) | (1 << 7) | (u64::from(did) << 16),
        0,
    ]
}

pub fn desc_pc_global() -> [u64; 2] {
    [7 | (3 << 4), 0]
}

/// pasid_cache_invalidation_with_pasid(): PASID-selective within domain.
pub fn desc_pc_pasid(did: u16, pasid: u32) -> [u64; 2] {
    [
        7 | (1 << 4) | (u64::from(did) << 16) | (u64::from(pasid) << 32),
        0,
    ]
}

/// qi_flush_piotlb(): page-selective within PASID (npages = 2^am), or all
/// non-globals of the PASID.
pub fn desc_piotlb(did: u16, pasid: u32, page: Option<(u64, u8, bool)>) -> [u64; 2] {
    match page {
        Some((addr, am, ih)) => [
            6 | (3 << 4) | (u64::from(did) << 16) | (u64::from(pasid) << 32),
            addr | (u64::from(ih) << 6) | u64::from(am),
        ],
        None => [
            6 | (2 << 4) | (u64::from(did) << 16) | (u64::from(pasid) << 32),
            0,
        ],
    }
}

/// qi_flush_dev_iotlb(): device-TLB invalidation of `sid`.
pub fn desc_dev_iotlb(sid: u16, addr: u64, size_bit: bool) -> [u64; 2] {
    [
        3 | (u64::from(sid) << 32) | (32 << 16),
        addr | u64::from(size_bit),
    ]
}

/// PASID table entry words as intel_pasid_setup_first_level() writes them.
pub fn pasid_fl(did: u16, flptr: u64, supervisor: bool) -> [u64; 8] {
    let mut w = [0u64; 8];
    w[0] = 1 | (2 << 2) | (1 << 6); // P, AW=48-bit, PGTT=001
    w[1] = u64::from(did) | (1 << 23); // DID, PWSNP (SMPWC)
    w[2] = flptr | if supervisor { 1 | (1 << 4) } else { 0 }; // SRE, WPE
    w
}

/// intel_pasid_setup_second_level().
pub fn pasid_sl(did: u16, slptr: u64, levels: u8) -> [u64; 8] {
    let mut w = [0u64; 8];
    w[0] = 1 | (u64::from(levels - 2) << 2) | (2 << 6) | slptr;
    w[1] = u64::from(did) | (1 << 23);
    w
}

/// intel_pasid_setup_pass_through() (DID 1, FLPT_DEFAULT_DID).
pub fn pasid_pt() -> [u64; 8] {
    let mut w = [0u64; 8];
    w[0] = 1 | (2 << 2) | (4 << 6);
    w[1] = 1 | (1 << 23);
    w
}

/// intel_pasid_setup_nested(): PGTT=011, first-level and second-level pointers.
pub fn pasid_nested(did: u16, flptr: u64, slptr: u64, levels: u8) -> [u64; 8] {
    let mut w = [0u64; 8];
    w[0] = 1 | (u64::from(levels - 2) << 2) | (3 << 6) | slptr;
    w[1] = u64::from(did) | (1 << 23);
    w[2] = flptr;
    w
}
