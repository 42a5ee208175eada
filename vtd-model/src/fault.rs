//! Fault reasons (VT-d Appendix A / 7.1.3) and primary fault logging into
//! the fault recording registers (VT-d 7.2.1, 11.4.7).
//!
//! Recording (7.2.1): hardware keeps an internal index of the register the
//! next fault goes to. If that register still holds an unserviced fault
//! (F=1), or if FSTS.PFO is already set, the fault is dropped and PFO is
//! set; otherwise the record is written, F set and the index advanced
//! (wrapping at CAP.NFR). When PPF goes from 0 to 1, FSTS.FRI is set to the
//! index of that first pending record (11.4.7.1). Setting a
//! status bit while no other FSTS status bit was set is an interrupt
//! condition (11.4.7.2): the fault-event MSI is sent when FECTL.IM is clear,
//! else FECTL.IP stays set until software clears IM.

use iommu_emulator::regs::RegFile;
use iommu_emulator::{FaultKind, MsiMessage};

use crate::regs::{
    ECTL_IM, ECTL_IP, FECTL, FRCD_F, FSTS, FSTS_EVENT_BITS, FSTS_FRI_MASK, FSTS_FRI_SHIFT,
    FSTS_PFO, FSTS_PPF, frcd_offset,
};

/// A VT-d non-recoverable fault reason code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FaultReason(pub u8);

impl FaultReason {
    /// 1: root entry present bit clear.
    pub const ROOT_NOT_PRESENT: Self = Self(0x1);
    /// 2: context entry present bit clear.
    pub const CONTEXT_NOT_PRESENT: Self = Self(0x2);
    /// 3: invalid context entry programming.
    pub const CONTEXT_INVALID: Self = Self(0x3);
    /// 4: input address beyond MGAW / AGAW.
    pub const ADDR_BEYOND_MGAW: Self = Self(0x4);
    /// 5: write to a page without write permission.
    pub const WRITE: Self = Self(0x5);
    /// 6: read from a page without read permission.
    pub const READ: Self = Self(0x6);
    /// 7: error accessing a second-level paging entry.
    pub const PAGING_ENTRY_ACCESS: Self = Self(0x7);
    /// 8: error accessing the root entry.
    pub const ROOT_ACCESS: Self = Self(0x8);
    /// 9: error accessing the context entry.
    pub const CONTEXT_ACCESS: Self = Self(0x9);
    /// 0xA: reserved bits set in the root entry.
    pub const ROOT_RESERVED: Self = Self(0xa);
    /// 0xB: reserved bits set in the context entry.
    pub const CONTEXT_RESERVED: Self = Self(0xb);
    /// 0xC: reserved bits set in a paging entry.
    pub const PAGING_ENTRY_RESERVED: Self = Self(0xc);
    /// 0xD: translation / translated request blocked by the context TT.
    pub const CONTEXT_TT_BLOCKED: Self = Self(0xd);
    /// 0xE: output address in the interrupt address range.
    pub const INTERRUPT_ADDR: Self = Self(0xe);
    /// 0x30: invalid root table address / TTM.
    pub const SM_INVALID_RTADDR: Self = Self(0x30);
    /// 0x31: request with PASID while TTM is legacy.
    pub const SM_TTM0_PASID: Self = Self(0x31);
    /// 0x38: error accessing a scalable-mode root entry.
    pub const SM_ROOT_ACCESS: Self = Self(0x38);
    /// 0x39: scalable root entry present bit clear.
    pub const SM_ROOT_NOT_PRESENT: Self = Self(0x39);
    /// 0x3A: reserved bits in a scalable root entry.
    pub const SM_ROOT_RESERVED: Self = Self(0x3a);
    /// 0x40: error accessing a scalable context entry.
    pub const SM_CONTEXT_ACCESS: Self = Self(0x40);
    /// 0x41: scalable context entry present bit clear.
    pub const SM_CONTEXT_NOT_PRESENT: Self = Self(0x41);
    /// 0x42: reserved bits in a scalable context entry.
    pub const SM_CONTEXT_RESERVED: Self = Self(0x42);
    /// 0x43: invalid scalable context entry.
    pub const SM_CONTEXT_INVALID: Self = Self(0x43);
    /// 0x44: translation/translated request while DTE is clear.
    pub const SM_DTE_CLEAR: Self = Self(0x44);
    /// 0x45: request with PASID while PASIDE is clear.
    pub const SM_PASIDE_CLEAR: Self = Self(0x45);
    /// 0x46: PASID beyond the PASID directory size.
    pub const SM_PASID_TOO_LARGE: Self = Self(0x46);
    /// 0x48: RID_PASID field error.
    pub const SM_RID_PASID_ERROR: Self = Self(0x48);
    /// 0x50: error accessing a PASID directory entry.
    pub const SM_PASID_DIR_ACCESS: Self = Self(0x50);
    /// 0x51: PASID directory entry present bit clear.
    pub const SM_PASID_DIR_NOT_PRESENT: Self = Self(0x51);
    /// 0x52: reserved bits in a PASID directory entry.
    pub const SM_PASID_DIR_RESERVED: Self = Self(0x52);
    /// 0x58: error accessing a PASID table entry.
    pub const SM_PASID_ACCESS: Self = Self(0x58);
    /// 0x59: PASID table entry present bit clear.
    pub const SM_PASID_NOT_PRESENT: Self = Self(0x59);
    /// 0x5A: reserved bits in a PASID table entry.
    pub const SM_PASID_RESERVED: Self = Self(0x5a);
    /// 0x5B: invalid PASID table entry.
    pub const SM_PASID_INVALID: Self = Self(0x5b);
    /// 0x5C: execute request while ERE is clear.
    pub const SM_ERE_CLEAR: Self = Self(0x5c);
    /// 0x5D: supervisor request while SRE is clear.
    pub const SM_SRE_CLEAR: Self = Self(0x5d);
    /// 0x70: error accessing a first-level paging entry.
    pub const SM_FL_ACCESS: Self = Self(0x70);
    /// 0x71: first-level paging entry present bit clear.
    pub const SM_FL_NOT_PRESENT: Self = Self(0x71);
    /// 0x72: reserved bits in a first-level paging entry.
    pub const SM_FL_RESERVED: Self = Self(0x72);
    /// 0x78: error accessing a second-level paging entry.
    pub const SM_SL_ACCESS: Self = Self(0x78);
    /// 0x79: second-level entry with R=W=0 (not present).
    pub const SM_SL_NOT_PRESENT: Self = Self(0x79);
    /// 0x7A: reserved bits in a second-level paging entry.
    pub const SM_SL_RESERVED: Self = Self(0x7a);
    /// 0x80: non-canonical first-level input address.
    pub const SM_NON_CANONICAL: Self = Self(0x80);
    /// 0x81: user request to a supervisor page.
    pub const SM_USER_PRIV: Self = Self(0x81);
    /// 0x82: execute request without execute permission.
    pub const SM_NO_EXEC: Self = Self(0x82);
    /// 0x83: input address beyond the hardware maximum.
    pub const SM_ADDR_BEYOND_MAX: Self = Self(0x83);
    /// 0x85: write request without write permission.
    pub const SM_WRITE: Self = Self(0x85);
    /// 0x86: read request without read permission.
    pub const SM_READ: Self = Self(0x86);
    /// 0x87: output address in the interrupt range.
    pub const SM_INTERRUPT_ADDR: Self = Self(0x87);

    /// The model-independent class.
    pub fn kind(self) -> FaultKind {
        match self.0 {
            0x1 | 0x2 | 0x39 | 0x41 | 0x51 | 0x59 | 0x71 | 0x79 => FaultKind::NotPresent,
            0x5 | 0x6 | 0x81 | 0x82 | 0x85 | 0x86 => FaultKind::Permission,
            0x4 | 0x80 | 0x83 => FaultKind::AddressSize,
            0xa | 0xb | 0xc | 0x3a | 0x42 | 0x52 | 0x5a | 0x72 | 0x7a => FaultKind::ReservedBits,
            0x7 | 0x8 | 0x9 | 0x38 | 0x40 | 0x50 | 0x58 | 0x70 | 0x78 => FaultKind::WalkAbort,
            0xd | 0x31 | 0x44 | 0x45 | 0x5c | 0x5d | 0xe | 0x87 => FaultKind::Blocked,
            _ => FaultKind::BadConfig,
        }
    }

    /// A short description (spec wording, abridged).
    pub fn describe(self) -> &'static str {
        match self.0 {
            0x1 => "root entry not present",
            0x2 => "context entry not present",
            0x3 => "invalid context entry",
            0x4 => "address beyond MGAW",
            0x5 => "write not permitted",
            0x6 => "read not permitted",
            0x7 => "error accessing paging entry",
            0x8 => "error accessing root entry",
            0x9 => "error accessing context entry",
            0xa => "root entry reserved bits",
            0xb => "context entry reserved bits",
            0xc => "paging entry reserved bits",
            0xd => "request blocked by translation type",
            0xe => "output in interrupt range",
            0x30 => "SM: invalid root table address",
            0x31 => "SM: TTM 0 for request with PASID",
            0x38 => "SM: error accessing root entry",
            0x39 => "SM: root entry not present",
            0x3a => "SM: root entry reserved bits",
            0x40 => "SM: error accessing context entry",
            0x41 => "SM: context entry not present",
            0x42 => "SM: context entry reserved bits",
            0x43 => "SM: invalid context entry",
            0x44 => "SM: DTE clear",
            0x45 => "SM: PASIDE clear",
            0x46 => "SM: PASID beyond directory",
            0x48 => "SM: RID_PASID error",
            0x50 => "SM: error accessing PASID directory entry",
            0x51 => "SM: PASID directory entry not present",
            0x52 => "SM: PASID directory entry reserved bits",
            0x58 => "SM: error accessing PASID entry",
            0x59 => "SM: PASID entry not present",
            0x5a => "SM: PASID entry reserved bits",
            0x5b => "SM: invalid PASID entry",
            0x5c => "SM: ERE clear",
            0x5d => "SM: SRE clear",
            0x70 => "SM: error accessing first-level entry",
            0x71 => "SM: first-level entry not present",
            0x72 => "SM: first-level entry reserved bits",
            0x78 => "SM: error accessing second-level entry",
            0x79 => "SM: second-level entry not present",
            0x7a => "SM: second-level entry reserved bits",
            0x80 => "SM: non-canonical address",
            0x81 => "SM: user request to supervisor page",
            0x82 => "SM: execute not permitted",
            0x83 => "SM: address beyond hardware max",
            0x85 => "SM: write not permitted",
            0x86 => "SM: read not permitted",
            0x87 => "SM: output in interrupt range",
            _ => "unknown",
        }
    }
}

impl std::fmt::Display for FaultReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#04x} ({})", self.0, self.describe())
    }
}

/// Address type of the faulting request (fault record AT field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddrType {
    /// 00b untranslated.
    Untranslated = 0,
    /// 01b translation request.
    TranslationRequest = 1,
    /// 10b translated.
    Translated = 2,
}

/// One primary fault record (VT-d 11.4.7.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultRecord {
    /// Fault reason.
    pub reason: FaultReason,
    /// Requester ID.
    pub sid: u16,
    /// Faulting address (the page address is recorded).
    pub addr: u64,
    /// Type: true for a write (T=0), false for a read (T=1).
    pub write: bool,
    /// Address type.
    pub at: AddrType,
    /// PASID, when the request carried one.
    pub pasid: Option<u32>,
    /// Execute requested.
    pub exec: bool,
    /// Privileged mode requested.
    pub privileged: bool,
}

impl FaultRecord {
    /// The two 64-bit halves of the record (F bit set).
    pub fn encode(&self) -> [u64; 2] {
        let lo = self.addr & !0xfff;
        let mut hi = u64::from(self.sid);
        if let Some(p) = self.pasid {
            hi |= 1 << 31; // PP
            hi |= u64::from(p & 0xf_ffff) << 40; // PV (bits 123:104)
            if self.exec {
                hi |= 1 << 30;
            }
            if self.privileged {
                hi |= 1 << 29;
            }
        }
        hi |= u64::from(self.reason.0) << 32; // FR (103:96)
        hi |= (self.at as u64) << 60; // AT (125:124)
        if !self.write {
            hi |= 1 << 62; // T1: read
        }
        [lo, hi | FRCD_F]
    }
}

/// What happened to a fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordOutcome {
    /// Written to recording register `index`.
    Recorded(usize),
    /// Dropped: the register at FRI was still in use (PFO now set).
    Overflow,
    /// Dropped: PFO was already set.
    OverflowPending,
}

/// Record `rec` in `regs` with `nfr` recording registers. Returns the
/// outcome and the MSI to send, if this was a new interrupt condition and
/// the event is unmasked.
pub fn record(
    regs: &mut RegFile,
    nfr: usize,
    next: &mut usize,
    rec: &FaultRecord,
) -> (RecordOutcome, Option<MsiMessage>) {
    let fsts = regs.value(FSTS);
    if fsts & FSTS_PFO != 0 {
        return (RecordOutcome::OverflowPending, None);
    }
    let fri = if *next >= nfr { 0 } else { *next };
    let off = frcd_offset(fri);
    let hi_off = off.saturating_add(8);
    if regs.value(hi_off) & FRCD_F != 0 {
        let msi = set_status(regs, FSTS_PFO);
        return (RecordOutcome::Overflow, msi);
    }
    let [lo, hi] = rec.encode();
    regs.set(off, lo);
    regs.set(hi_off, hi);
    *next = fri.saturating_add(1).checked_rem(nfr).unwrap_or(0);
    if fsts & FSTS_PPF == 0 {
        let fsts = fsts & !FSTS_FRI_MASK;
        regs.set(FSTS, fsts | ((fri as u64) << FSTS_FRI_SHIFT));
    }
    let msi = set_status(regs, FSTS_PPF);
    (RecordOutcome::Recorded(fri), msi)
}

/// Set FSTS status bits; if none of the event bits was set before, this is
/// a new interrupt condition for the fault event (11.4.7.2).
pub fn set_status(regs: &mut RegFile, bits: u64) -> Option<MsiMessage> {
    let before = regs.value(FSTS);
    regs.set(FSTS, before | bits);
    if before & FSTS_EVENT_BITS != 0 {
        return None;
    }
    signal(regs, FECTL)
}

/// An interrupt condition on the event whose control register is at
/// `ctl` (data, address and upper address follow at +4, +8, +12): returns
/// the message when unmasked, else sets IP.
pub fn signal(regs: &mut RegFile, ctl: u64) -> Option<MsiMessage> {
    let c = regs.value(ctl);
    if c & ECTL_IM != 0 {
        regs.set(ctl, c | ECTL_IP);
        None
    } else {
        regs.set(ctl, c & !ECTL_IP);
        Some(message(regs, ctl))
    }
}

/// The MSI an event control register at `ctl` describes.
pub fn message(regs: &RegFile, ctl: u64) -> MsiMessage {
    let data = regs.value(ctl.saturating_add(4));
    let lo = regs.value(ctl.saturating_add(8));
    let hi = regs.value(ctl.saturating_add(12));
    MsiMessage {
        addr: (hi << 32) | (lo & 0xffff_fffc),
        data: u32::try_from(data & 0xffff_ffff).unwrap_or(0),
    }
}

/// After software wrote the event control register: clearing IM with IP
/// set sends the pending message (11.4.7.2).
pub fn on_ctl_write(regs: &mut RegFile, ctl: u64) -> Option<MsiMessage> {
    let c = regs.value(ctl);
    if c & ECTL_IM == 0 && c & ECTL_IP != 0 {
        regs.set(ctl, c & !ECTL_IP);
        return Some(message(regs, ctl));
    }
    None
}

/// Recompute FSTS.PPF from the F bits (it is read-only and reflects
/// whether any recording register holds a fault), and clear FECTL.IP when
/// every status bit has been serviced.
pub fn refresh_status(regs: &mut RegFile, nfr: usize) {
    let any = (0..nfr).any(|i| regs.value(frcd_offset(i).saturating_add(8)) & FRCD_F != 0);
    let fsts = regs.value(FSTS);
    let fsts = if any {
        fsts | FSTS_PPF
    } else {
        fsts & !FSTS_PPF
    };
    regs.set(FSTS, fsts);
    if fsts & FSTS_EVENT_BITS == 0 {
        regs.clear_bits(FECTL, ECTL_IP);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::regs::SPECS;

    fn rec(sid: u16) -> FaultRecord {
        FaultRecord {
            reason: FaultReason::READ,
            sid,
            addr: 0x1234_5678,
            write: false,
            at: AddrType::Untranslated,
            pasid: None,
            exec: false,
            privileged: false,
        }
    }

    // 11.4.7.6: field positions as Linux's dmar_fault() reads them.
    #[test]
    fn fault_record_encodes_fields_where_linux_reads_them() {
        let r = FaultRecord {
            pasid: Some(0x12345),
            write: true,
            ..rec(0x0108)
        };
        let [lo, hi] = r.encode();
        assert_eq!(lo, 0x1234_5000);
        let hi32 = (hi >> 32) as u32; // offset +12
        let mid32 = hi as u32; // offset +8
        assert_eq!(hi32 & 0xff, 6);
        assert_eq!((hi32 >> 8) & 0xf_ffff, 0x12345);
        assert_eq!((hi32 >> 30) & 1, 0); // write
        assert_ne!(hi32 & (1 << 31), 0);
        assert_eq!(mid32 & 0xffff, 0x0108);
        assert_ne!(mid32 & (1 << 31), 0);
    }

    // 7.2.1: records fill FRI order, then overflow sets PFO and later faults are dropped.
    #[test]
    fn fault_recording_overflow_sets_pfo() {
        let mut regs = RegFile::new(&SPECS);
        let mut next = 0;
        regs.clear_bits(FECTL, ECTL_IM);
        let (o, msi) = record(&mut regs, 2, &mut next, &rec(1));
        assert_eq!(o, RecordOutcome::Recorded(0));
        assert!(msi.is_some());
        let (o, msi) = record(&mut regs, 2, &mut next, &rec(2));
        assert_eq!(o, RecordOutcome::Recorded(1));
        assert!(msi.is_none(), "PPF already set: no new interrupt condition");
        assert_eq!(
            (regs.value(FSTS) & FSTS_FRI_MASK) >> 8,
            0,
            "FRI: first pending"
        );
        assert_eq!(next, 0);
        assert_eq!(
            record(&mut regs, 2, &mut next, &rec(3)).0,
            RecordOutcome::Overflow
        );
        assert_ne!(regs.value(FSTS) & FSTS_PFO, 0);
        assert_eq!(
            record(&mut regs, 2, &mut next, &rec(4)).0,
            RecordOutcome::OverflowPending
        );
    }

    // 11.4.7.2: masked event sets IP; unmasking delivers it.
    #[test]
    fn fault_event_masked_sets_ip_and_unmask_delivers() {
        let mut regs = RegFile::new(&SPECS);
        let mut next = 0;
        regs.set(crate::regs::FEDATA, 0x41);
        regs.set(crate::regs::FEADDR, 0xfee0_0000);
        let (_, msi) = record(&mut regs, 8, &mut next, &rec(1));
        assert!(msi.is_none());
        assert_ne!(regs.value(FECTL) & ECTL_IP, 0);
        regs.clear_bits(FECTL, ECTL_IM);
        let m = on_ctl_write(&mut regs, FECTL).unwrap();
        assert_eq!((m.addr, m.data), (0xfee0_0000, 0x41));
        assert_eq!(regs.value(FECTL) & ECTL_IP, 0);
    }
}
