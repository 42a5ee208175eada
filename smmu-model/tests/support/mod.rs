//! A programmed SMMU with one stream of each translation kind, shared by
//! the modelled-cycles test and the SMMU benches (`benches/benches/smmu.rs`
//! includes this file). Field positions from IHI 0070 5.2 (STE), 5.4 (CD),
//! 4.1-4.4 (commands).
#![allow(dead_code)]

use std::sync::Arc;

use iommu_emulator::mem::NoMsi;
use iommu_emulator::testing::FakeRam;
use iommu_emulator::testing::vmsa_pt::{Leaf, VmsaTables};
use iommu_emulator::walk::vmsa::{Granule, Stage, WalkConfig};
use iommu_emulator::{DmaRequest, Gpa, GuestRam, PageSize, Pasid, PasidTag, Perm, SourceId};
use smmu_model::{Smmu, SmmuConfig, regs};

/// StreamID of the stage-1 stream without substreams (S1CDMAX = 0).
pub const SID_S1: u32 = 0;
/// StreamID of the stage-1 stream with 16 substreams (S1DSS = SSID0).
pub const SID_S1_SSID: u32 = 1;
/// StreamID of the stage-2-only stream.
pub const SID_S2: u32 = 2;
/// StreamID of the nested stream with 16 substreams.
pub const SID_NESTED: u32 = 3;
/// Pages mapped at [`VA`] in every stage-1 table (the last 16 read-only).
pub const PAGES: u64 = 64;
/// First input address of the stage-1 mappings.
pub const VA: u64 = 0x10_0000;
/// IPA window that stage 2 maps with 4 KiB pages (stage-1 outputs land in
/// it), to [`PA`].
pub const IPA_4K: u64 = 0x400_0000;
/// Where stage 2 sends [`IPA_4K`].
pub const PA: u64 = 0x9000_0000;
/// ASID of CD `i` of a stream with substreams: `ASID_BASE + i`.
pub const ASID_BASE: u16 = 0x10;

/// The SMMU, its guest RAM and the command queue producer.
pub struct Rig {
    pub smmu: Arc<Smmu>,
    pub ram: Arc<FakeRam>,
    cmdq: u64,
    prod: u32,
}

const CMDQ_LOG2: u32 = 8;

fn alloc(ram: &FakeRam, bytes: u64) -> u64 {
    let align = bytes.next_power_of_two().max(4096);
    let base = ram.alloc_pages((bytes + align) / 4096 + 1).unwrap().0;
    (base + align - 1) & !(align - 1)
}

fn s1_cfg() -> WalkConfig {
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

/// CD (5.4): T0SZ 16, 4K granule, EPD1, V, IPS 48 bits, AA64, R, A, ASET.
fn write_cd(ram: &FakeRam, at: u64, asid: u16, ttb: u64) {
    let w0 = 16
        | (1 << 30)
        | (1 << 31)
        | (5 << 32)
        | (1 << 41)
        | (1 << 45)
        | (1 << 46)
        | (1 << 47)
        | (u64::from(asid) << 48);
    ram.write_u64(Gpa(at + 8), ttb).unwrap();
    ram.write_u64(Gpa(at), w0).unwrap();
}

impl Rig {
    /// An enabled SMMU with `props`, a linear stream table of 16 STEs, the
    /// command and event queues on, and streams [`SID_S1`],
    /// [`SID_S1_SSID`], [`SID_S2`] and [`SID_NESTED`].
    pub fn new(props: &str) -> Self {
        let ram = Arc::new(FakeRam::new(1 << 32));
        let smmu =
            Arc::new(Smmu::new(SmmuConfig::parse_props(props).unwrap(), Arc::new(NoMsi)).unwrap());
        let m: &dyn GuestRam = ram.as_ref();

        // Stage-1 tables: A maps VA + p to IPA_4K + p, B to IPA_4K + 64 + p.
        let mut a = VmsaTables::new(&ram, s1_cfg()).unwrap();
        let mut b = VmsaTables::new(&ram, s1_cfg()).unwrap();
        for p in 0..PAGES {
            let leaf = if p >= PAGES - 16 {
                Leaf::ro()
            } else {
                Leaf::rw()
            };
            a.map(VA + (p << 12), IPA_4K + (p << 12), PageSize::SIZE_4K, leaf)
                .unwrap();
            b.map(
                VA + (p << 12),
                IPA_4K + ((PAGES + p) << 12),
                PageSize::SIZE_4K,
                leaf,
            )
            .unwrap();
        }
        // Stage 2 (IPA 40 bits, start level 1): IPA [0, 1G) in 2M blocks
        // except IPA_4K's block, mapped page by page to PA; [1G, 4G) in 1G
        // blocks; identity elsewhere, so tables and CDs (allocated from
        // FakeRam) are reachable by IPA = PA.
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
        for blk in 0..512u64 {
            if blk << 21 != IPA_4K {
                s2.map(blk << 21, blk << 21, PageSize::SIZE_2M, Leaf::rw())
                    .unwrap();
            }
        }
        for p in 0..2 * PAGES {
            s2.map(
                IPA_4K + (p << 12),
                PA + (p << 12),
                PageSize::SIZE_4K,
                Leaf::rw(),
            )
            .unwrap();
        }
        for g in 1..4u64 {
            s2.map(g << 30, g << 30, PageSize::SIZE_1G, Leaf::rw())
                .unwrap();
        }

        // CDs: one for SID_S1 (ASID 1, table A); 16 for each stream with
        // substreams (ASID_BASE + i, table A for even i, B for odd).
        let cd0 = alloc(&ram, 64);
        write_cd(&ram, cd0, 1, a.config().ttb);
        let cd_ssid = alloc(&ram, 16 * 64);
        let cd_nested = alloc(&ram, 16 * 64);
        for i in 0..16u64 {
            let ttb = if i.is_multiple_of(2) {
                a.config().ttb
            } else {
                b.config().ttb
            };
            write_cd(&ram, cd_ssid + i * 64, ASID_BASE + i as u16, ttb);
            write_cd(&ram, cd_nested + i * 64, ASID_BASE + i as u16, ttb);
        }

        // STEs (5.2). Word 1: S1DSS = SSID0, CIR/COR/CSH, EATS off.
        let strtab = alloc(&ram, 16 * 64);
        let w1 = 2 | (1 << 2) | (1 << 4) | (3 << 6);
        // VTCR: S2T0SZ 24, S2SL0 1, IR/OR WB, ISH, 4K, S2PS 48.
        let vtcr: u64 = 24 | (1 << 6) | (1 << 8) | (1 << 10) | (3 << 12) | (5 << 16);
        let w2 = |vmid: u64| vmid | (vtcr << 32) | (1 << 51) | (1 << 58);
        let s2ttb = s2.config().ttb;
        let stes: [(u32, [u64; 4]); 4] = [
            (SID_S1, [1 | (5 << 1) | cd0, w1, 0, 0]),
            (SID_S1_SSID, [1 | (5 << 1) | cd_ssid | (4 << 59), w1, 0, 0]),
            (SID_S2, [1 | (6 << 1), 0, w2(3), s2ttb]),
            (
                SID_NESTED,
                [1 | (7 << 1) | cd_nested | (4 << 59), w1, w2(4), s2ttb],
            ),
        ];
        for (sid, words) in stes {
            for (i, w) in words.iter().enumerate() {
                ram.write_u64(Gpa(strtab + u64::from(sid) * 64 + i as u64 * 8), *w)
                    .unwrap();
            }
        }
        smmu.mmio_write(m, regs::STRTAB_BASE, 8, strtab);
        smmu.mmio_write(m, regs::STRTAB_BASE_CFG, 4, 4);
        let cmdq = alloc(&ram, 16 << CMDQ_LOG2);
        smmu.mmio_write(m, regs::CMDQ_BASE, 8, cmdq | u64::from(CMDQ_LOG2));
        let evtq = alloc(&ram, 32 << 8);
        smmu.mmio_write(m, regs::EVENTQ_BASE, 8, evtq | 8);
        // CR0: SMMUEN, EVENTQEN, CMDQEN.
        smmu.mmio_write(m, regs::CR0, 4, 1 | (1 << 2) | (1 << 3));
        Rig {
            smmu,
            ram,
            cmdq,
            prod: 0,
        }
    }

    /// Issue commands (each two words) at CMDQ_PROD and move PROD past them.
    pub fn issue(&mut self, cmds: &[[u64; 2]]) {
        let n = 1u32 << CMDQ_LOG2;
        for c in cmds {
            let at = self.cmdq + u64::from(self.prod & (n - 1)) * 16;
            self.ram.write_u64(Gpa(at), c[0]).unwrap();
            self.ram.write_u64(Gpa(at + 8), c[1]).unwrap();
            self.prod = (self.prod + 1) & (2 * n - 1);
        }
        self.smmu
            .mmio_write(self.ram.as_ref(), regs::CMDQ_PROD, 4, u64::from(self.prod));
    }

    /// Drop the event records written so far (EVENTQ_CONS = PROD), so the
    /// queue never fills.
    pub fn drain_events(&self) {
        let m: &dyn GuestRam = self.ram.as_ref();
        let prod = self.smmu.mmio_read(m, regs::EVENTQ_PROD, 4);
        self.smmu.mmio_write(m, regs::EVENTQ_CONS, 4, prod & 0x1ff);
    }
}

/// A request from `sid` (with SubstreamID `ssid`) to page `page` of the
/// stage-1 window; for [`SID_S2`] the address is in [`IPA_4K`].
pub fn request(sid: u32, ssid: Option<u32>, page: u64, access: Perm) -> DmaRequest {
    let addr = if sid == SID_S2 { IPA_4K } else { VA } + (page << 12) + 0x18;
    let mut r = DmaRequest::new(SourceId::Stream(sid), addr, 8, access);
    if let Some(s) = ssid {
        r = r.with_pasid(PasidTag {
            pasid: Pasid::new(s).unwrap(),
            privileged: false,
            exec: false,
        });
    }
    r
}
