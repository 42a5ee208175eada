//! Register offsets, field bits and the register table (VT-d 11.4).
//!
//! Every register is described once in [`SPECS`] (width, reset value,
//! read-write, write-1-to-clear and write-only bits); side effects live in
//! the `on_<reg>_write` functions of the device ([`crate::Vtd`]).

use iommu_emulator::regs::RegSpec;

use crate::props::MAX_FAULT_REGS;

/// Version register (11.4.1).
pub const VER: u64 = 0x00;
/// Capability register (11.4.2).
pub const CAP: u64 = 0x08;
/// Extended capability register (11.4.3).
pub const ECAP: u64 = 0x10;
/// Global command register (11.4.4.1).
pub const GCMD: u64 = 0x18;
/// Global status register (11.4.4.2).
pub const GSTS: u64 = 0x1c;
/// Root table address register (11.4.5).
pub const RTADDR: u64 = 0x20;
/// Context command register (11.4.6).
pub const CCMD: u64 = 0x28;
/// Fault status register (11.4.7.1).
pub const FSTS: u64 = 0x34;
/// Fault event control register (11.4.7.2).
pub const FECTL: u64 = 0x38;
/// Fault event data register (11.4.7.3).
pub const FEDATA: u64 = 0x3c;
/// Fault event address register (11.4.7.4).
pub const FEADDR: u64 = 0x40;
/// Fault event upper address register (11.4.7.5).
pub const FEUADDR: u64 = 0x44;
/// Invalidation queue head (11.4.9.1).
pub const IQH: u64 = 0x80;
/// Invalidation queue tail (11.4.9.2).
pub const IQT: u64 = 0x88;
/// Invalidation queue address (11.4.9.3).
pub const IQA: u64 = 0x90;
/// Invalidation completion status (11.4.9.4).
pub const ICS: u64 = 0x9c;
/// Invalidation event control (11.4.9.5).
pub const IECTL: u64 = 0xa0;
/// Invalidation event data (11.4.9.6).
pub const IEDATA: u64 = 0xa4;
/// Invalidation event address (11.4.9.7).
pub const IEADDR: u64 = 0xa8;
/// Invalidation event upper address (11.4.9.8).
pub const IEUADDR: u64 = 0xac;
/// Invalidation queue error record (11.4.9.9).
pub const IQERCD: u64 = 0xb0;
/// Interrupt remapping table address (11.4.10.1).
pub const IRTA: u64 = 0xb8;
/// Page request queue head (11.4.11.1).
pub const PQH: u64 = 0xc0;
/// Page request queue tail (11.4.11.2).
pub const PQT: u64 = 0xc8;
/// Page request queue address (11.4.11.3).
pub const PQA: u64 = 0xd0;
/// Page request status (11.4.11.4).
pub const PRS: u64 = 0xdc;
/// Page request event control (11.4.11.5).
pub const PECTL: u64 = 0xe0;
/// Page request event data (11.4.11.6).
pub const PEDATA: u64 = 0xe4;
/// Page request event address (11.4.11.7).
pub const PEADDR: u64 = 0xe8;
/// Page request event upper address (11.4.11.8).
pub const PEUADDR: u64 = 0xec;
/// IOTLB registers offset (ECAP.IRO): IVA at IRO, IOTLB at IRO + 8 (11.4.8).
pub const IRO: u64 = 0x200;
/// Invalidate address register (11.4.8.2).
pub const IVA: u64 = IRO;
/// IOTLB invalidate register (11.4.8.1).
pub const IOTLB: u64 = IRO + 8;
/// Fault recording registers offset (CAP.FRO): 16 bytes each (11.4.7.6).
pub const FRO: u64 = 0x220;

/// GCMD/GSTS bits (11.4.4): translation enable / status.
pub const GCMD_TE: u64 = 1 << 31;
/// Set root table pointer / root table pointer status.
pub const GCMD_SRTP: u64 = 1 << 30;
/// Set fault log (advanced fault logging; not supported).
pub const GCMD_SFL: u64 = 1 << 29;
/// Enable advanced fault logging (not supported).
pub const GCMD_EAFL: u64 = 1 << 28;
/// Write buffer flush.
pub const GCMD_WBF: u64 = 1 << 27;
/// Queued invalidation enable.
pub const GCMD_QIE: u64 = 1 << 26;
/// Interrupt remapping enable.
pub const GCMD_IRE: u64 = 1 << 25;
/// Set interrupt remap table pointer.
pub const GCMD_SIRTP: u64 = 1 << 24;
/// Compatibility format interrupt.
pub const GCMD_CFI: u64 = 1 << 23;
/// Every GCMD command bit.
pub const GCMD_ALL: u64 = 0xff80_0000;

/// RTADDR translation table mode field (bits 11:10): 00 legacy, 01 scalable.
pub const RTADDR_TTM_MASK: u64 = 0b11 << 10;
/// RTADDR.TTM = scalable mode.
pub const RTADDR_TTM_SCALABLE: u64 = 0b01 << 10;

/// CCMD: invalidate context cache (63).
pub const CCMD_ICC: u64 = 1 << 63;
/// CCMD request granularity shift (62:61).
pub const CCMD_CIRG_SHIFT: u32 = 61;
/// CCMD actual granularity shift (60:59).
pub const CCMD_CAIG_SHIFT: u32 = 59;

/// IOTLB register: invalidate IOTLB (63).
pub const IOTLB_IVT: u64 = 1 << 63;
/// IOTLB request granularity shift (61:60).
pub const IOTLB_IIRG_SHIFT: u32 = 60;
/// IOTLB actual granularity shift (58:57).
pub const IOTLB_IAIG_SHIFT: u32 = 57;

/// FSTS bits (11.4.7.1).
pub const FSTS_PFO: u64 = 1 << 0;
/// Primary pending fault (RO: some F bit set).
pub const FSTS_PPF: u64 = 1 << 1;
/// Advanced fault overflow.
pub const FSTS_AFO: u64 = 1 << 2;
/// Advanced pending fault.
pub const FSTS_APF: u64 = 1 << 3;
/// Invalidation queue error.
pub const FSTS_IQE: u64 = 1 << 4;
/// Invalidation completion error.
pub const FSTS_ICE: u64 = 1 << 5;
/// Invalidation time-out error.
pub const FSTS_ITE: u64 = 1 << 6;
/// Fault record index field (15:8).
pub const FSTS_FRI_SHIFT: u32 = 8;
/// FRI mask (in place).
pub const FSTS_FRI_MASK: u64 = 0xff << 8;
/// The FSTS bits whose setting is an interrupt condition.
pub const FSTS_EVENT_BITS: u64 =
    FSTS_PFO | FSTS_PPF | FSTS_AFO | FSTS_APF | FSTS_IQE | FSTS_ICE | FSTS_ITE;

/// Event control: interrupt mask (31).
pub const ECTL_IM: u64 = 1 << 31;
/// Event control: interrupt pending (30).
pub const ECTL_IP: u64 = 1 << 30;

/// IQA: 256-bit descriptors (11).
pub const IQA_DW: u64 = 1 << 11;
/// IQA queue size field (2:0).
pub const IQA_QS_MASK: u64 = 0x7;
/// IQH/IQT offset bits (18:4).
pub const IQ_OFFSET_MASK: u64 = 0x7fff0;
/// ICS: invalidation wait descriptor complete.
pub const ICS_IWC: u64 = 1;

/// High 64 bits of a fault record: F (127 overall).
pub const FRCD_F: u64 = 1 << 63;

const fn base_specs() -> [RegSpec; 31] {
    [
        RegSpec::ro("VER", VER, 4, 0),
        RegSpec::ro("CAP", CAP, 8, 0),
        RegSpec::ro("ECAP", ECAP, 8, 0),
        RegSpec::rw("GCMD", GCMD, 4, 0).with_wo(GCMD_ALL),
        RegSpec::ro("GSTS", GSTS, 4, 0),
        RegSpec::rw("RTADDR", RTADDR, 8, !0xfff | RTADDR_TTM_MASK),
        // ICC, CIRG, FM, SID, DID; CAIG is hardware-written.
        RegSpec::rw(
            "CCMD",
            CCMD,
            8,
            CCMD_ICC | (0b11 << CCMD_CIRG_SHIFT) | (0b11 << 32) | 0xffff_ffff,
        ),
        RegSpec::rw("FSTS", FSTS, 4, 0)
            .with_w1c(FSTS_PFO | FSTS_AFO | FSTS_APF | FSTS_IQE | FSTS_ICE | FSTS_ITE),
        RegSpec::rw("FECTL", FECTL, 4, ECTL_IM).with_reset(ECTL_IM),
        RegSpec::rw("FEDATA", FEDATA, 4, 0xffff_ffff),
        RegSpec::rw("FEADDR", FEADDR, 4, 0xffff_fffc),
        RegSpec::rw("FEUADDR", FEUADDR, 4, 0xffff_ffff),
        RegSpec::ro("IQH", IQH, 8, 0),
        RegSpec::rw("IQT", IQT, 8, IQ_OFFSET_MASK),
        RegSpec::rw("IQA", IQA, 8, !0xfff | IQA_DW | IQA_QS_MASK),
        RegSpec::rw("ICS", ICS, 4, 0).with_w1c(ICS_IWC),
        RegSpec::rw("IECTL", IECTL, 4, ECTL_IM).with_reset(ECTL_IM),
        RegSpec::rw("IEDATA", IEDATA, 4, 0xffff_ffff),
        RegSpec::rw("IEADDR", IEADDR, 4, 0xffff_fffc),
        RegSpec::rw("IEUADDR", IEUADDR, 4, 0xffff_ffff),
        RegSpec::ro("IQERCD", IQERCD, 8, 0),
        RegSpec::rw("IRTA", IRTA, 8, !0xfff | (1 << 11) | 0xf),
        RegSpec::rw("PQH", PQH, 8, 0x7ffe0),
        RegSpec::ro("PQT", PQT, 8, 0),
        RegSpec::rw("PQA", PQA, 8, !0xfff | 0x7),
        RegSpec::rw("PRS", PRS, 4, 0).with_w1c(0b11),
        RegSpec::rw("PECTL", PECTL, 4, ECTL_IM).with_reset(ECTL_IM),
        RegSpec::rw("PEDATA", PEDATA, 4, 0xffff_ffff),
        RegSpec::rw("PEADDR", PEADDR, 4, 0xffff_fffc),
        RegSpec::rw("PEUADDR", PEUADDR, 4, 0xffff_ffff),
        // IVA: address 63:12, IH 6, AM 5:0.
        RegSpec::rw("IVA", IVA, 8, !0xfff | 0x7f),
    ]
}

const BASE_LEN: usize = 32;
/// Number of entries in [`SPECS`].
pub const SPECS_LEN: usize = BASE_LEN + 2 * MAX_FAULT_REGS;

#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation
)]
const fn all_specs() -> [RegSpec; SPECS_LEN] {
    let base = base_specs();
    let mut out = [RegSpec::ro("", 0xffff_ffff, 4, 0); SPECS_LEN];
    let mut i = 0;
    while i < base.len() {
        out[i] = base[i];
        i += 1;
    }
    // IOTLB: IVT, IIRG, DR, DW, DID; IAIG is hardware-written.
    out[i] = RegSpec::rw(
        "IOTLB",
        IOTLB,
        8,
        IOTLB_IVT | (0b11 << IOTLB_IIRG_SHIFT) | (0b11 << 48) | (0xffff << 32),
    );
    let mut r = 0;
    while r < MAX_FAULT_REGS {
        let off = FRO + 16 * r as u64;
        out[BASE_LEN + 2 * r] = RegSpec::ro("FRCD_LO", off, 8, 0);
        out[BASE_LEN + 2 * r + 1] = RegSpec::rw("FRCD_HI", off + 8, 8, 0).with_w1c(FRCD_F);
        r += 1;
    }
    out
}

/// Every register of the unit. Fault recording registers beyond CAP.NFR
/// are present in the table but read as zero and are never written by the
/// model.
pub static SPECS: [RegSpec; SPECS_LEN] = all_specs();

/// Offset of fault recording register `i`, low and high halves.
pub const fn frcd_offset(i: usize) -> u64 {
    FRO.saturating_add((i as u64).saturating_mul(16))
}

/// Extract `width` bits at `shift`.
pub const fn field(v: u64, shift: u32, width: u32) -> u64 {
    v.wrapping_shr(shift) & !u64::MAX.wrapping_shl(width)
}
