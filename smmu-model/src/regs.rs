//! Register offsets and specifications (IHI 0070 6.2, 6.3).
//!
//! Page 0 holds everything except the event and PRI queue producer and
//! consumer pointers, which live in page 1 (offset 0x10000). Linux's
//! `PAGE0_REGS_ONLY` option (and QEMU's model) use aliases at the page-0
//! offsets; [`canonical_offset`] folds those onto page 1.

use iommu_emulator::regs::RegSpec;

/// SMMU_IDR0 (6.3.1).
pub const IDR0: u64 = 0x00;
/// SMMU_IDR1 (6.3.2).
pub const IDR1: u64 = 0x04;
/// SMMU_IDR2 (6.3.3).
pub const IDR2: u64 = 0x08;
/// SMMU_IDR3 (6.3.4).
pub const IDR3: u64 = 0x0c;
/// SMMU_IDR4 (6.3.5).
pub const IDR4: u64 = 0x10;
/// SMMU_IDR5 (6.3.6).
pub const IDR5: u64 = 0x14;
/// SMMU_IIDR (6.3.7).
pub const IIDR: u64 = 0x18;
/// SMMU_AIDR (6.3.8).
pub const AIDR: u64 = 0x1c;
/// SMMU_CR0 (6.3.9).
pub const CR0: u64 = 0x20;
/// SMMU_CR0ACK (6.3.10).
pub const CR0ACK: u64 = 0x24;
/// SMMU_CR1 (6.3.11).
pub const CR1: u64 = 0x28;
/// SMMU_CR2 (6.3.12).
pub const CR2: u64 = 0x2c;
/// SMMU_STATUSR (6.3.13).
pub const STATUSR: u64 = 0x40;
/// SMMU_GBPA (6.3.14).
pub const GBPA: u64 = 0x44;
/// SMMU_AGBPA (6.3.15).
pub const AGBPA: u64 = 0x48;
/// SMMU_IRQ_CTRL (6.3.16).
pub const IRQ_CTRL: u64 = 0x50;
/// SMMU_IRQ_CTRLACK (6.3.17).
pub const IRQ_CTRLACK: u64 = 0x54;
/// SMMU_GERROR (6.3.18).
pub const GERROR: u64 = 0x60;
/// SMMU_GERRORN (6.3.19).
pub const GERRORN: u64 = 0x64;
/// SMMU_GERROR_IRQ_CFG0 (6.3.20).
pub const GERROR_IRQ_CFG0: u64 = 0x68;
/// SMMU_GERROR_IRQ_CFG1 (6.3.21).
pub const GERROR_IRQ_CFG1: u64 = 0x70;
/// SMMU_GERROR_IRQ_CFG2 (6.3.22).
pub const GERROR_IRQ_CFG2: u64 = 0x74;
/// SMMU_STRTAB_BASE (6.3.23).
pub const STRTAB_BASE: u64 = 0x80;
/// SMMU_STRTAB_BASE_CFG (6.3.24).
pub const STRTAB_BASE_CFG: u64 = 0x88;
/// SMMU_CMDQ_BASE (6.3.25).
pub const CMDQ_BASE: u64 = 0x90;
/// SMMU_CMDQ_PROD (6.3.26).
pub const CMDQ_PROD: u64 = 0x98;
/// SMMU_CMDQ_CONS (6.3.27).
pub const CMDQ_CONS: u64 = 0x9c;
/// SMMU_EVENTQ_BASE (6.3.28).
pub const EVENTQ_BASE: u64 = 0xa0;
/// SMMU_EVENTQ_IRQ_CFG0 (6.3.31).
pub const EVENTQ_IRQ_CFG0: u64 = 0xb0;
/// SMMU_EVENTQ_IRQ_CFG1 (6.3.32).
pub const EVENTQ_IRQ_CFG1: u64 = 0xb8;
/// SMMU_EVENTQ_IRQ_CFG2 (6.3.33).
pub const EVENTQ_IRQ_CFG2: u64 = 0xbc;
/// SMMU_PRIQ_BASE (6.3.34).
pub const PRIQ_BASE: u64 = 0xc0;
/// SMMU_PRIQ_IRQ_CFG0 (6.3.37).
pub const PRIQ_IRQ_CFG0: u64 = 0xd0;
/// SMMU_PRIQ_IRQ_CFG1 (6.3.38).
pub const PRIQ_IRQ_CFG1: u64 = 0xd8;
/// SMMU_PRIQ_IRQ_CFG2 (6.3.39).
pub const PRIQ_IRQ_CFG2: u64 = 0xdc;
/// SMMU_EVENTQ_PROD, page 1 (6.3.29).
pub const EVENTQ_PROD: u64 = 0x100a8;
/// SMMU_EVENTQ_CONS, page 1 (6.3.30).
pub const EVENTQ_CONS: u64 = 0x100ac;
/// SMMU_PRIQ_PROD, page 1 (6.3.35).
pub const PRIQ_PROD: u64 = 0x100c8;
/// SMMU_PRIQ_CONS, page 1 (6.3.36).
pub const PRIQ_CONS: u64 = 0x100cc;

/// Size of the register frame: two 64 KiB pages.
pub const FRAME_SIZE: u64 = 0x20000;

/// CR0 fields (6.3.9).
pub mod cr0 {
    /// SMMUEN.
    pub const SMMUEN: u64 = 1 << 0;
    /// PRIQEN.
    pub const PRIQEN: u64 = 1 << 1;
    /// EVENTQEN.
    pub const EVENTQEN: u64 = 1 << 2;
    /// CMDQEN.
    pub const CMDQEN: u64 = 1 << 3;
    /// ATSCHK.
    pub const ATSCHK: u64 = 1 << 4;
    /// VMW\[8:6\].
    pub const VMW: u64 = 0x7 << 6;
}

/// CR2 fields (6.3.12).
pub mod cr2 {
    /// E2H.
    pub const E2H: u64 = 1 << 0;
    /// RECINVSID: record C_BAD_STREAMID for out-of-range StreamIDs.
    pub const RECINVSID: u64 = 1 << 1;
    /// PTM: private TLB maintenance (broadcast TLBI ignored).
    pub const PTM: u64 = 1 << 2;
}

/// GBPA fields (6.3.14).
pub mod gbpa {
    /// Update handshake.
    pub const UPDATE: u64 = 1 << 31;
    /// Abort all incoming transactions while SMMUEN = 0.
    pub const ABORT: u64 = 1 << 20;
    /// Attribute fields INSTCFG, PRIVCFG, SHCFG, ALLOCCFG, MTCFG, MemAttr.
    pub const FIELDS: u64 = 0x001f_3f1f;
    /// SHCFG reset value 0b01 (use incoming).
    pub const RESET: u64 = 1 << 12;
}

/// IRQ_CTRL fields (6.3.16).
pub mod irq_ctrl {
    /// GERROR_IRQEN.
    pub const GERROR_IRQEN: u64 = 1 << 0;
    /// PRIQ_IRQEN.
    pub const PRIQ_IRQEN: u64 = 1 << 1;
    /// EVENTQ_IRQEN.
    pub const EVENTQ_IRQEN: u64 = 1 << 2;
}

/// GERROR fields (6.3.18).
pub mod gerror {
    /// CMDQ_ERR.
    pub const CMDQ_ERR: u64 = 1 << 0;
    /// EVENTQ_ABT_ERR.
    pub const EVENTQ_ABT_ERR: u64 = 1 << 2;
    /// PRIQ_ABT_ERR.
    pub const PRIQ_ABT_ERR: u64 = 1 << 3;
    /// MSI_CMDQ_ABT_ERR.
    pub const MSI_CMDQ_ABT_ERR: u64 = 1 << 4;
    /// MSI_EVENTQ_ABT_ERR.
    pub const MSI_EVENTQ_ABT_ERR: u64 = 1 << 5;
    /// MSI_PRIQ_ABT_ERR.
    pub const MSI_PRIQ_ABT_ERR: u64 = 1 << 6;
    /// MSI_GERROR_ABT_ERR.
    pub const MSI_GERROR_ABT_ERR: u64 = 1 << 7;
    /// SFM_ERR.
    pub const SFM_ERR: u64 = 1 << 8;
    /// Every error bit.
    pub const ALL: u64 = 0x1fd;
}

/// STRTAB_BASE_CFG fields (6.3.24).
pub mod strtab_cfg {
    /// LOG2SIZE\[5:0\].
    pub const LOG2SIZE: u64 = 0x3f;
    /// SPLIT\[10:6\].
    pub const SPLIT_SHIFT: u32 = 6;
    /// FMT\[17:16\].
    pub const FMT_SHIFT: u32 = 16;
}

/// Queue base and pointer fields (6.3.25-6.3.36).
pub mod queue {
    /// Q_BASE.ADDR\[51:5\].
    pub const BASE_ADDR: u64 = ((1 << 52) - 1) & !0x1f;
    /// Q_BASE.LOG2SIZE\[4:0\].
    pub const LOG2SIZE: u64 = 0x1f;
    /// Q_BASE.RA (read/write allocate hint).
    pub const RA: u64 = 1 << 62;
    /// Index + wrap bits of a pointer (at most 19 + 1).
    pub const PTR: u64 = 0x000f_ffff;
    /// EVENTQ/PRIQ_PROD.OVFLG, EVENTQ/PRIQ_CONS.OVACKFLG.
    pub const OVF: u64 = 1 << 31;
    /// CMDQ_CONS.ERR\[30:24\].
    pub const ERR_SHIFT: u32 = 24;
    /// CMDQ_CONS.ERR mask.
    pub const ERR: u64 = 0x7f << 24;
}

/// MSI configuration: IRQ_CFG0.ADDR\[51:2\] (6.3.20).
pub const MSI_ADDR: u64 = ((1 << 52) - 1) & !0x3;

const fn q_base(name: &'static str, offset: u64) -> RegSpec {
    RegSpec::rw(
        name,
        offset,
        8,
        queue::RA | queue::BASE_ADDR | queue::LOG2SIZE,
    )
}

/// Every register of the frame, described once.
pub static SPECS: &[RegSpec] = &[
    RegSpec::ro("IDR0", IDR0, 4, 0),
    RegSpec::ro("IDR1", IDR1, 4, 0),
    RegSpec::ro("IDR2", IDR2, 4, 0),
    RegSpec::ro("IDR3", IDR3, 4, 0),
    RegSpec::ro("IDR4", IDR4, 4, 0),
    RegSpec::ro("IDR5", IDR5, 4, 0),
    RegSpec::ro("IIDR", IIDR, 4, 0),
    RegSpec::ro("AIDR", AIDR, 4, 0),
    RegSpec::rw(
        "CR0",
        CR0,
        4,
        cr0::SMMUEN | cr0::PRIQEN | cr0::EVENTQEN | cr0::CMDQEN | cr0::ATSCHK | cr0::VMW,
    ),
    RegSpec::ro("CR0ACK", CR0ACK, 4, 0),
    RegSpec::rw("CR1", CR1, 4, 0xfff),
    RegSpec::rw("CR2", CR2, 4, 0x7),
    RegSpec::ro("STATUSR", STATUSR, 4, 0),
    RegSpec::rw("GBPA", GBPA, 4, gbpa::UPDATE | gbpa::FIELDS).with_reset(gbpa::RESET),
    RegSpec::rw("AGBPA", AGBPA, 4, 0),
    RegSpec::rw("IRQ_CTRL", IRQ_CTRL, 4, 0x7),
    RegSpec::ro("IRQ_CTRLACK", IRQ_CTRLACK, 4, 0),
    RegSpec::ro("GERROR", GERROR, 4, 0),
    RegSpec::rw("GERRORN", GERRORN, 4, gerror::ALL),
    RegSpec::rw("GERROR_IRQ_CFG0", GERROR_IRQ_CFG0, 8, MSI_ADDR),
    RegSpec::rw("GERROR_IRQ_CFG1", GERROR_IRQ_CFG1, 4, 0xffff_ffff),
    RegSpec::rw("GERROR_IRQ_CFG2", GERROR_IRQ_CFG2, 4, 0x3f),
    RegSpec::rw(
        "STRTAB_BASE",
        STRTAB_BASE,
        8,
        (1 << 62) | (((1 << 52) - 1) & !0x3f),
    ),
    RegSpec::rw("STRTAB_BASE_CFG", STRTAB_BASE_CFG, 4, 0x3_07ff),
    q_base("CMDQ_BASE", CMDQ_BASE),
    RegSpec::rw("CMDQ_PROD", CMDQ_PROD, 4, queue::PTR),
    RegSpec::rw("CMDQ_CONS", CMDQ_CONS, 4, queue::PTR),
    q_base("EVENTQ_BASE", EVENTQ_BASE),
    RegSpec::rw("EVENTQ_PROD", EVENTQ_PROD, 4, queue::PTR),
    RegSpec::rw("EVENTQ_CONS", EVENTQ_CONS, 4, queue::PTR | queue::OVF),
    RegSpec::rw("EVENTQ_IRQ_CFG0", EVENTQ_IRQ_CFG0, 8, MSI_ADDR),
    RegSpec::rw("EVENTQ_IRQ_CFG1", EVENTQ_IRQ_CFG1, 4, 0xffff_ffff),
    RegSpec::rw("EVENTQ_IRQ_CFG2", EVENTQ_IRQ_CFG2, 4, 0x3f),
    q_base("PRIQ_BASE", PRIQ_BASE),
    RegSpec::rw("PRIQ_PROD", PRIQ_PROD, 4, queue::PTR),
    RegSpec::rw("PRIQ_CONS", PRIQ_CONS, 4, queue::PTR | queue::OVF),
    RegSpec::rw("PRIQ_IRQ_CFG0", PRIQ_IRQ_CFG0, 8, MSI_ADDR),
    RegSpec::rw("PRIQ_IRQ_CFG1", PRIQ_IRQ_CFG1, 4, 0xffff_ffff),
    RegSpec::rw("PRIQ_IRQ_CFG2", PRIQ_IRQ_CFG2, 4, 0x3f),
];

/// Fold the page-0 aliases of the page-1 queue pointers onto page 1.
pub fn canonical_offset(offset: u64) -> u64 {
    match offset {
        0xa8 | 0xac | 0xc8 | 0xcc => offset | 0x10000,
        o => o,
    }
}

/// The `width`-bit field of `v` starting at bit `shift`.
pub const fn field(v: u64, shift: u32, width: u32) -> u64 {
    let mask = match 1u64.checked_shl(width) {
        Some(m) => m.wrapping_sub(1),
        None => u64::MAX,
    };
    match v.checked_shr(shift) {
        Some(x) => x & mask,
        None => 0,
    }
}
