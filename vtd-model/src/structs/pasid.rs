//! PASID directory entries (VT-d 9.5) and scalable-mode PASID table entries
//! (VT-d 9.6).

use super::context::{EntryFault, UnitCaps};
use super::{PTR_MASK, bits, ptr_rsvd};
use crate::fault::FaultReason;

/// A decoded, present PASID directory entry (9.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PasidDirEntry {
    /// Fault processing disable.
    pub fpd: bool,
    /// Scalable-mode PASID table pointer.
    pub table: u64,
}

impl PasidDirEntry {
    /// Decode (9.5). Reasons: 0x51 not present, 0x52 reserved bits.
    pub fn decode(w: u64, haw: u8) -> Result<Self, EntryFault> {
        if w & 1 == 0 {
            return Err(EntryFault {
                reason: FaultReason::SM_PASID_DIR_NOT_PRESENT,
                fpd: false,
            });
        }
        let fpd = w & 2 != 0;
        if w & (bits(2, 12) | ptr_rsvd(haw)) != 0 {
            return Err(EntryFault {
                reason: FaultReason::SM_PASID_DIR_RESERVED,
                fpd,
            });
        }
        Ok(PasidDirEntry {
            fpd,
            table: w & PTR_MASK,
        })
    }
}

/// PASID granular translation type (PASID entry PGTT, 9.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pgtt {
    /// 001b: first-level translation only.
    FirstLevel,
    /// 010b: second-level translation only.
    SecondLevel,
    /// 011b: nested (first level, then second level).
    Nested,
    /// 100b: pass-through.
    PassThrough,
}

/// A decoded, valid, present scalable-mode PASID table entry (9.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PasidEntry {
    /// Fault processing disable.
    pub fpd: bool,
    /// Translation type.
    pub pgtt: Pgtt,
    /// Domain identifier.
    pub did: u16,
    /// Second-level levels (AW + 2).
    pub sl_levels: u8,
    /// Second-level table pointer.
    pub slptptr: u64,
    /// Second-level execute enable.
    pub slee: bool,
    /// Second-level A/D enable.
    pub slade: bool,
    /// First-level table pointer.
    pub flptptr: u64,
    /// First-level levels: 4 or 5 (FLPM).
    pub fl_levels: u8,
    /// Supervisor requests enable.
    pub sre: bool,
    /// Execute requests enable.
    pub ere: bool,
    /// Write protect enable.
    pub wpe: bool,
    /// No-execute enable.
    pub nxe: bool,
    /// Supervisor-mode execute prevention.
    pub smep: bool,
}

impl PasidEntry {
    /// Decode the 512-bit entry (9.6). Reasons: 0x59 not present, 0x5A
    /// reserved bits, 0x5B invalid (PGTT reserved or unsupported, AW or
    /// FLPM unsupported, SLADE without SLADS).
    pub fn decode(w: [u64; 8], caps: &UnitCaps) -> Result<Self, EntryFault> {
        let w0 = w[0];
        let w1 = w[1];
        let w2 = w[2];
        if w0 & 1 == 0 {
            return Err(EntryFault {
                reason: FaultReason::SM_PASID_NOT_PRESENT,
                fpd: false,
            });
        }
        let fpd = w0 & 2 != 0;
        let f = |reason| EntryFault { reason, fpd };
        let rest_nonzero = w.iter().skip(3).any(|x| *x != 0);
        if w0 & bits(10, 12) != 0 || w2 & bits(8, 12) != 0 || rest_nonzero {
            return Err(f(FaultReason::SM_PASID_RESERVED));
        }
        let pgtt = match (w0 >> 6) & 7 {
            1 if caps.flts => Pgtt::FirstLevel,
            2 if caps.slts => Pgtt::SecondLevel,
            3 if caps.nest => Pgtt::Nested,
            4 if caps.pt => Pgtt::PassThrough,
            _ => return Err(f(FaultReason::SM_PASID_INVALID)),
        };
        let sl_levels = u8::try_from((w0 >> 2) & 7).unwrap_or(0).saturating_add(2);
        let uses_sl = matches!(pgtt, Pgtt::SecondLevel | Pgtt::Nested);
        let uses_fl = matches!(pgtt, Pgtt::FirstLevel | Pgtt::Nested);
        if uses_sl && (!caps.sl_levels_ok(sl_levels) || w0 & ptr_rsvd(caps.haw) != 0) {
            return Err(f(FaultReason::SM_PASID_INVALID));
        }
        let slade = w0 & (1 << 9) != 0;
        if slade && !caps.slads {
            return Err(f(FaultReason::SM_PASID_INVALID));
        }
        let fl_levels = match (w2 >> 2) & 3 {
            0 => 4,
            1 if caps.fl5lp => 5,
            _ if uses_fl => return Err(f(FaultReason::SM_PASID_INVALID)),
            _ => 4,
        };
        if uses_fl && w2 & ptr_rsvd(caps.haw) != 0 {
            return Err(f(FaultReason::SM_PASID_RESERVED));
        }
        Ok(PasidEntry {
            fpd,
            pgtt,
            did: u16::try_from(w1 & 0xffff).unwrap_or(0),
            sl_levels,
            slptptr: w0 & PTR_MASK,
            slee: w0 & (1 << 5) != 0,
            slade,
            flptptr: w2 & PTR_MASK,
            fl_levels,
            sre: w2 & 1 != 0,
            ere: w2 & 2 != 0,
            wpe: w2 & (1 << 4) != 0,
            nxe: w2 & (1 << 5) != 0,
            smep: w2 & (1 << 6) != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::structs::context::test_caps;

    // VT-d 9.5: directory entry.
    #[test]
    fn pasid_dir_entry_decodes() {
        assert_eq!(PasidDirEntry::decode(0x9001, 48).unwrap().table, 0x9000);
        assert_eq!(
            PasidDirEntry::decode(0x9000, 48).unwrap_err().reason,
            FaultReason::SM_PASID_DIR_NOT_PRESENT
        );
        assert_eq!(
            PasidDirEntry::decode(0x9007, 48).unwrap_err(),
            EntryFault {
                reason: FaultReason::SM_PASID_DIR_RESERVED,
                fpd: true
            }
        );
    }

    // VT-d 9.6: first-level entry as Linux writes it (PGTT=001, SRE, WPE, FLPTPTR).
    #[test]
    fn pasid_entry_first_level_decodes() {
        let mut w = [0u64; 8];
        w[0] = 1 | (2 << 2) | (1 << 6);
        w[1] = 7 | (1 << 23);
        w[2] = 0xa000 | 1 | (1 << 4);
        let e = PasidEntry::decode(w, &test_caps()).unwrap();
        assert_eq!(
            (e.pgtt, e.did, e.flptptr, e.fl_levels, e.sre, e.wpe),
            (Pgtt::FirstLevel, 7, 0xa000, 4, true, true)
        );
    }

    // VT-d 9.6: reserved PGTT, unsupported FLPM and reserved words.
    #[test]
    fn pasid_entry_invalid_encodings_fault() {
        let caps = test_caps();
        let mut w = [0u64; 8];
        w[0] = 1 | (5 << 6);
        assert_eq!(
            PasidEntry::decode(w, &caps).unwrap_err().reason,
            FaultReason::SM_PASID_INVALID
        );
        w[0] = 1 | (1 << 6);
        w[2] = 1 << 2; // 5-level without FL5LP
        assert_eq!(
            PasidEntry::decode(w, &caps).unwrap_err().reason,
            FaultReason::SM_PASID_INVALID
        );
        w[2] = 0;
        w[5] = 1;
        assert_eq!(
            PasidEntry::decode(w, &caps).unwrap_err().reason,
            FaultReason::SM_PASID_RESERVED
        );
        w[5] = 0;
        w[0] = 1 | (2 << 6) | (3 << 2); // SL with 5 levels, unsupported
        assert_eq!(
            PasidEntry::decode(w, &caps).unwrap_err().reason,
            FaultReason::SM_PASID_INVALID
        );
        w[0] = 0;
        assert_eq!(
            PasidEntry::decode(w, &caps).unwrap_err().reason,
            FaultReason::SM_PASID_NOT_PRESENT
        );
    }
}
