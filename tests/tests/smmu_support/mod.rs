//! Shared SMMU driver harness for the smmu_* tests: a small Rust "driver"
//! that programs the model the way Linux's arm-smmu-v3 driver does. Field
//! positions are written here from IHI 0070 (checked against what Linux
//! uses), independently of the model's own decoders.
#![allow(dead_code)]

use std::sync::Arc;

use iommu_emulator::testing::{FakeRam, RecordingMsi};
use iommu_emulator::walk::vmsa::{Granule, Stage, WalkConfig};
use iommu_emulator::{DmaRequest, Gpa, GuestRam, Iommu, Pasid, PasidTag, Perm, Rid, SourceId};
use smmu_model::{Smmu, SmmuConfig};

// Registers (IHI 0070 6.3).
pub const IDR0: u64 = 0x0;
pub const IDR1: u64 = 0x4;
pub const IDR5: u64 = 0x14;
pub const CR0: u64 = 0x20;
pub const CR0ACK: u64 = 0x24;
pub const CR1: u64 = 0x28;
pub const CR2: u64 = 0x2c;
pub const GBPA: u64 = 0x44;
pub const IRQ_CTRL: u64 = 0x50;
pub const IRQ_CTRLACK: u64 = 0x54;
pub const GERROR: u64 = 0x60;
pub const GERRORN: u64 = 0x64;
pub const GERROR_IRQ_CFG0: u64 = 0x68;
pub const GERROR_IRQ_CFG1: u64 = 0x70;
pub const STRTAB_BASE: u64 = 0x80;
pub const STRTAB_BASE_CFG: u64 = 0x88;
pub const CMDQ_BASE: u64 = 0x90;
pub const CMDQ_PROD: u64 = 0x98;
pub const CMDQ_CONS: u64 = 0x9c;
pub const EVTQ_BASE: u64 = 0xa0;
pub const EVTQ_IRQ_CFG0: u64 = 0xb0;
pub const EVTQ_IRQ_CFG1: u64 = 0xb8;
pub const PRIQ_BASE: u64 = 0xc0;
pub const PRIQ_IRQ_CFG0: u64 = 0xd0;
pub const PRIQ_IRQ_CFG1: u64 = 0xd8;
pub const EVTQ_PROD: u64 = 0x100a8;
pub const EVTQ_CONS: u64 = 0x100ac;
pub const PRIQ_PROD: u64 = 0x100c8;
pub const PRIQ_CONS: u64 = 0x100cc;

pub const CR0_SMMUEN: u64 = 1;
pub const CR0_PRIQEN: u64 = 1 << 1;
pub const CR0_EVTQEN: u64 = 1 << 2;
pub const CR0_CMDQEN: u64 = 1 << 3;
pub const CR0_ATSCHK: u64 = 1 << 4;

// Commands (IHI 0070 4).
pub const OP_CFGI_STE: u64 = 0x03;
pub const OP_CFGI_ALL: u64 = 0x04;
pub const OP_CFGI_CD: u64 = 0x05;
pub const OP_TLBI_NH_ASID: u64 = 0x11;
pub const OP_TLBI_NH_VA: u64 = 0x12;
pub const OP_TLBI_S12_VMALL: u64 = 0x28;
pub const OP_TLBI_S2_IPA: u64 = 0x2a;
pub const OP_TLBI_NSNH_ALL: u64 = 0x30;
pub const OP_ATC_INV: u64 = 0x40;
pub const OP_PRI_RESP: u64 = 0x41;
pub const OP_RESUME: u64 = 0x44;
pub const OP_STALL_TERM: u64 = 0x45;
pub const OP_CMD_SYNC: u64 = 0x46;

// CMD_RESUME RESP values as Linux encodes them ([13:12]: Ac, Ab).
pub const RESUME_RETRY: u64 = 1;
pub const RESUME_ABORT: u64 = 2;

// MSI doorbells live outside guest RAM, as an ITS doorbell would.
pub const RAM: u64 = 1 << 32;
pub const GERROR_MSI: u64 = RAM + 0x40;
pub const EVTQ_MSI: u64 = RAM + 0x80;
pub const PRIQ_MSI: u64 = RAM + 0xc0;

pub const SID_BITS: u64 = 16;
pub const SPLIT: u64 = 8;

pub struct Driver {
    pub ram: Arc<FakeRam>,
    pub msi: Arc<RecordingMsi>,
    pub smmu: Arc<Smmu>,
    pub strtab_l1: u64,
    pub cmdq: u64,
    pub cmdq_log2: u32,
    pub cmdq_prod: u32,
    pub evtq: u64,
    pub evtq_cons: u32,
    pub priq: u64,
    pub priq_cons: u32,
}

pub fn alloc(ram: &FakeRam, bytes: u64) -> u64 {
    // Naturally aligned allocation, as dma_alloc_coherent gives.
    let align = bytes.next_power_of_two().max(4096);
    let base = ram.alloc_pages((bytes + align) / 4096 + 1).unwrap().0;
    (base + align - 1) & !(align - 1)
}

impl Driver {
    pub fn new(props: &str) -> Self {
        let ram = Arc::new(FakeRam::new(RAM));
        let msi = Arc::new(RecordingMsi::new());
        let smmu =
            Arc::new(Smmu::new(SmmuConfig::parse_props(props).unwrap(), msi.clone()).unwrap());
        Driver {
            ram,
            msi,
            smmu,
            strtab_l1: 0,
            cmdq: 0,
            cmdq_log2: 8,
            cmdq_prod: 0,
            evtq: 0,
            evtq_cons: 0,
            priq: 0,
            priq_cons: 0,
        }
    }

    pub fn rd(&self, off: u64) -> u64 {
        self.smmu.mmio_read(self.ram.as_ref(), off, 4)
    }

    pub fn wr(&self, off: u64, v: u64) {
        self.smmu.mmio_write(self.ram.as_ref(), off, 4, v);
    }

    pub fn wr64(&self, off: u64, v: u64) {
        self.smmu.mmio_write(self.ram.as_ref(), off, 8, v);
    }

    pub fn mem64(&self, a: u64) -> u64 {
        self.ram.read_u64(Gpa(a)).unwrap()
    }

    /// arm_smmu_write_reg_sync: write, then the ACK register must match.
    pub fn write_sync(&self, off: u64, ack: u64, v: u64) {
        self.wr(off, v);
        assert_eq!(self.rd(ack), v, "ack of register {off:#x}");
    }

    /// arm_smmu_device_reset, with MSIs and a two-level stream table.
    pub fn reset(&mut self) {
        // Probe (arm_smmu_device_hw_probe).
        let idr0 = self.rd(IDR0);
        assert_eq!((idr0 >> 27) & 3, 1, "IDR0.ST_LEVEL two-level");
        assert_eq!((idr0 >> 2) & 3, 2, "IDR0.TTF AArch64");
        assert_ne!(idr0 & (1 << 13), 0, "IDR0.MSI");
        let idr1 = self.rd(IDR1);
        assert_eq!(idr1 & 0x3f, SID_BITS, "IDR1.SIDSIZE");
        let cmdqs = (idr1 >> 21) & 0x1f;
        self.cmdq_log2 = cmdqs.min(8) as u32;
        let idr5 = self.rd(IDR5);
        assert_eq!(idr5 & 7, 5, "IDR5.OAS 48 bits");
        assert_ne!(idr5 & (1 << 4), 0, "IDR5.GRAN4K");

        // Disable everything first.
        self.write_sync(CR0, CR0ACK, 0);
        // Table and queue attributes: inner shareable, write-back.
        let cr1 = (3 << 10) | (1 << 8) | (1 << 6) | (3 << 4) | (1 << 2) | 1;
        self.wr(CR1, cr1);
        self.wr(CR2, 1 << 1); // RECINVSID
        assert_eq!(self.rd(CR1), cr1);

        // Two-level stream table: 2^(16-8) level-1 descriptors.
        let l1_entries = 1u64 << (SID_BITS - SPLIT);
        self.strtab_l1 = alloc(&self.ram, l1_entries * 8);
        self.wr64(STRTAB_BASE, (1 << 62) | self.strtab_l1);
        self.wr(STRTAB_BASE_CFG, (1 << 16) | (SPLIT << 6) | SID_BITS);
        assert_eq!(self.rd(STRTAB_BASE_CFG), (1 << 16) | (8 << 6) | 16);

        // Command queue.
        self.cmdq = alloc(&self.ram, 16 << self.cmdq_log2);
        self.wr64(CMDQ_BASE, (1 << 62) | self.cmdq | u64::from(self.cmdq_log2));
        self.wr(CMDQ_PROD, 0);
        self.wr(CMDQ_CONS, 0);
        let mut enables = CR0_CMDQEN;
        self.write_sync(CR0, CR0ACK, enables);

        // Invalidate any cached configuration and TLB entries.
        self.issue(&[[OP_CFGI_ALL, 31]]);
        self.issue(&[[OP_TLBI_NSNH_ALL, 0]]);

        // Event queue (page-1 pointers).
        self.evtq = alloc(&self.ram, 32 << 7);
        self.wr64(EVTQ_BASE, (1 << 62) | self.evtq | 7);
        self.wr(EVTQ_PROD, 0);
        self.wr(EVTQ_CONS, 0);
        enables |= CR0_EVTQEN;
        self.write_sync(CR0, CR0ACK, enables);

        // PRI queue.
        self.priq = alloc(&self.ram, 16 << 6);
        self.wr64(PRIQ_BASE, (1 << 62) | self.priq | 6);
        self.wr(PRIQ_PROD, 0);
        self.wr(PRIQ_CONS, 0);
        enables |= CR0_PRIQEN;
        self.write_sync(CR0, CR0ACK, enables);
        enables |= CR0_ATSCHK;
        self.write_sync(CR0, CR0ACK, enables);

        // IRQs (arm_smmu_setup_irqs + arm_smmu_setup_msis).
        self.write_sync(IRQ_CTRL, IRQ_CTRLACK, 0);
        self.wr64(GERROR_IRQ_CFG0, GERROR_MSI);
        self.wr(GERROR_IRQ_CFG1, 0x100);
        self.wr64(EVTQ_IRQ_CFG0, EVTQ_MSI);
        self.wr(EVTQ_IRQ_CFG1, 0x101);
        self.wr64(PRIQ_IRQ_CFG0, PRIQ_MSI);
        self.wr(PRIQ_IRQ_CFG1, 0x102);
        self.write_sync(IRQ_CTRL, IRQ_CTRLACK, 0b111);

        enables |= CR0_SMMUEN;
        self.write_sync(CR0, CR0ACK, enables);
    }

    /// arm_smmu_cmdq_issue_cmdlist with sync: commands, then a CMD_SYNC
    /// whose MSI writes 0 over its own first word (MSIADDR = its slot);
    /// then poll that word and CONS.
    pub fn issue(&mut self, cmds: &[[u64; 2]]) {
        let n = 1u32 << self.cmdq_log2;
        let slot = |p: u32| self.cmdq + u64::from(p & (n - 1)) * 16;
        let mut prod = self.cmdq_prod;
        for c in cmds {
            self.ram.write_u64(Gpa(slot(prod)), c[0]).unwrap();
            self.ram.write_u64(Gpa(slot(prod) + 8), c[1]).unwrap();
            prod = (prod + 1) & (2 * n - 1);
        }
        let sync_at = slot(prod);
        // CS=IRQ, MSH=ISH, MSIATTR=OIWB, MSIData=0.
        let sync0 = OP_CMD_SYNC | (1 << 12) | (3 << 22) | (0xf << 24);
        self.ram.write_u64(Gpa(sync_at), sync0).unwrap();
        self.ram.write_u64(Gpa(sync_at + 8), sync_at).unwrap();
        prod = (prod + 1) & (2 * n - 1);
        self.wr(CMDQ_PROD, u64::from(prod));
        self.cmdq_prod = prod;
        assert_eq!(
            self.ram.read_u32(Gpa(sync_at)).unwrap(),
            0,
            "CMD_SYNC MSI wrote 0 over its own entry"
        );
        assert_eq!(
            self.rd(CMDQ_CONS),
            u64::from(prod),
            "CMDQ consumed up to PROD"
        );
    }

    /// Level-2 stream table for the bus of `sid` (arm_smmu_init_l2_strtab):
    /// 256 STEs, initially V=1 Config=abort, then the L1 descriptor.
    pub fn ensure_l2(&mut self, sid: u32) -> u64 {
        let l1 = self.strtab_l1 + u64::from(sid >> SPLIT) * 8;
        let d = self.mem64(l1);
        if d != 0 {
            return d & !0x3f & ((1 << 52) - 1);
        }
        let l2 = alloc(&self.ram, 64 << SPLIT);
        for i in 0..(1u64 << SPLIT) {
            self.ram.write_u64(Gpa(l2 + i * 64), 1).unwrap(); // V, abort
        }
        self.ram.write_u64(Gpa(l1), l2 | (SPLIT + 1)).unwrap();
        l2
    }

    /// arm_smmu_write_entry for a fresh STE: qwords 1.. first, CFGI_STE +
    /// SYNC, then qword 0, CFGI_STE + SYNC.
    pub fn install_ste(&mut self, sid: u32, ste: [u64; 8]) -> u64 {
        let l2 = self.ensure_l2(sid);
        let at = l2 + u64::from(sid & ((1 << SPLIT) - 1)) * 64;
        for (i, w) in ste.iter().enumerate().skip(1) {
            self.ram.write_u64(Gpa(at + i as u64 * 8), *w).unwrap();
        }
        self.issue(&[[OP_CFGI_STE | (u64::from(sid) << 32), 1]]);
        self.ram.write_u64(Gpa(at), ste[0]).unwrap();
        self.issue(&[[OP_CFGI_STE | (u64::from(sid) << 32), 1]]);
        at
    }

    pub fn take_event(&mut self) -> Option<[u64; 4]> {
        let prod = self.rd(EVTQ_PROD) & 0xff;
        if prod == u64::from(self.evtq_cons) {
            return None;
        }
        let at = self.evtq + u64::from(self.evtq_cons & 0x7f) * 32;
        let ev = [
            self.mem64(at),
            self.mem64(at + 8),
            self.mem64(at + 16),
            self.mem64(at + 24),
        ];
        self.evtq_cons = (self.evtq_cons + 1) & 0xff;
        self.wr(EVTQ_CONS, u64::from(self.evtq_cons));
        Some(ev)
    }
}

/// A CD table (two-level, 64K level-2 tables: S1FMT=2) and its CDs.
pub struct CdTable {
    /// IDR0.STALL_MODEL of the SMMU: Linux sets STE.S1STALLD for masters
    /// that cannot stall when it is 0b00 (ARM_SMMU_FEAT_STALLS without
    /// STALL_FORCE), and CD.S for stall-enabled masters.
    pub stall_model: u64,
    pub l1: u64,
    /// The level-2 table holding CDs 0..1024 (CD 0 is what an STE with
    /// S1CDMAX = 0 points at directly).
    pub l2_0: std::cell::Cell<u64>,
}

impl CdTable {
    pub fn new(d: &Driver, ssid_bits: u32) -> Self {
        let l1_entries = (1u64 << ssid_bits) / 1024;
        CdTable {
            stall_model: (d.rd(IDR0) >> 24) & 3,
            l1: alloc(&d.ram, l1_entries.max(1) * 8),
            l2_0: std::cell::Cell::new(0),
        }
    }

    /// arm_smmu_make_s1_cd + arm_smmu_write_cd_entry.
    pub fn install(&self, d: &mut Driver, sid: u32, ssid: u32, asid: u16, ttb: u64) {
        self.install_tcr(d, sid, ssid, asid, ttb, 0, 16);
    }

    /// The same with another TG0 (0 = 4K, 1 = 64K, 2 = 16K) and T0SZ.
    #[allow(clippy::too_many_arguments)]
    pub fn install_tcr(
        &self,
        d: &mut Driver,
        sid: u32,
        ssid: u32,
        asid: u16,
        ttb: u64,
        tg0: u64,
        t0sz: u64,
    ) {
        // Linux: master->stall_enabled is forced with STALL_FORCE.
        let s = self.stall_model == 2;
        self.install_full(d, sid, ssid, asid, ttb, tg0, t0sz, s);
    }

    /// arm_smmu_make_s1_cd for a stall-enabled master (CD.S = 1).
    pub fn install_stall(&self, d: &mut Driver, sid: u32, ssid: u32, asid: u16, ttb: u64) {
        self.install_full(d, sid, ssid, asid, ttb, 0, 16, true);
    }

    #[allow(clippy::too_many_arguments)]
    pub fn install_full(
        &self,
        d: &mut Driver,
        sid: u32,
        ssid: u32,
        asid: u16,
        ttb: u64,
        tg0: u64,
        t0sz: u64,
        stall: bool,
    ) {
        let l1d = self.l1 + u64::from(ssid / 1024) * 8;
        if d.mem64(l1d) & 1 == 0 {
            let l2 = alloc(&d.ram, 1024 * 64);
            d.ram.write_u64(Gpa(l1d), l2 | 1).unwrap();
        }
        let l2 = d.mem64(l1d) & !0xfff & ((1 << 52) - 1);
        if ssid < 1024 {
            self.l2_0.set(l2);
        }
        let at = l2 + u64::from(ssid % 1024) * 64;
        let w0 = t0sz
            | (tg0 << 6)
            | (1 << 8) | (1 << 10) | (3 << 12) // IRGN0/ORGN0 WBWA, SH0 ISH
            | (1 << 30) // EPD1
            | (1 << 31) // V
            | (5 << 32) // IPS 48
            | (1 << 41) | (1 << 45) | (1 << 46) | (1 << 47) // AA64 R A ASET
            | (u64::from(stall) << 44) // S
            | (u64::from(asid) << 48);
        d.ram.write_u64(Gpa(at + 8), ttb).unwrap();
        d.ram
            .write_u64(Gpa(at + 24), 0x0000_0000_0004_ff44)
            .unwrap(); // MAIR
        d.issue(&[[
            OP_CFGI_CD | (u64::from(ssid) << 12) | (u64::from(sid) << 32),
            1,
        ]]);
        d.ram.write_u64(Gpa(at), w0).unwrap();
        d.issue(&[[
            OP_CFGI_CD | (u64::from(ssid) << 12) | (u64::from(sid) << 32),
            1,
        ]]);
    }

    /// arm_smmu_make_cdtable_ste: S1 translate, S1DSS=SSID0, EATS=TRANS;
    /// S1FMT=2 (two-level, 64K leaves) with substreams, or (S1CDMAX = 0,
    /// a master without PASIDs) S1ContextPtr straight at CD 0.
    pub fn ste(&self, cdmax: u64) -> [u64; 8] {
        let mut ste = self.ste_stall(cdmax);
        if self.stall_model == 0 {
            ste[1] |= 1 << 27; // S1STALLD: this master cannot stall
        }
        ste
    }

    /// The same for a stall-enabled master ("dma-can-stall"): S1STALLD = 0.
    pub fn ste_stall(&self, cdmax: u64) -> [u64; 8] {
        let w0 = if cdmax == 0 {
            1 | (5 << 1) | self.l2_0.get()
        } else {
            1 | (5 << 1) | (2 << 4) | self.l1 | (cdmax << 59)
        };
        let w1 = 2 | (1 << 2) | (1 << 4) | (3 << 6) | (1 << 28);
        [w0, w1, 0, 0, 0, 0, 0, 0]
    }
}

pub fn s1_cfg() -> WalkConfig {
    WalkConfig {
        stage: Stage::One,
        granule: Granule::G4K,
        tsz: 16,
        sl0: 0,
        oas_bits: 48,
        ttb: 0,
        affd: false,
    }
}

pub fn pci(bus: u8, dev: u8) -> SourceId {
    SourceId::Pci(Rid::new(bus, dev, 0))
}

pub fn tag(ssid: u32) -> PasidTag {
    PasidTag {
        pasid: Pasid::new(ssid).unwrap(),
        privileged: false,
        exec: false,
    }
}

pub fn dma(
    d: &Driver,
    src: SourceId,
    ssid: Option<u32>,
    addr: u64,
    access: Perm,
) -> Result<iommu_emulator::Translation, iommu_emulator::Fault> {
    let mut r = DmaRequest::new(src, addr, 8, access);
    if let Some(s) = ssid {
        r = r.with_pasid(tag(s));
    }
    d.smmu.translate(d.ram.as_ref(), &r)
}

pub trait SidPlus {
    fn into_sid_plus(self, n: u16) -> SourceId;
}

impl SidPlus for SourceId {
    fn into_sid_plus(self, n: u16) -> SourceId {
        match self {
            SourceId::Pci(r) => SourceId::Pci(Rid(r.0 + n)),
            s => s,
        }
    }
}
