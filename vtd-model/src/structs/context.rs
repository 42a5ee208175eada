//! Context entries: legacy (VT-d 9.3) and scalable-mode (VT-d 9.4).

use super::{PTR_MASK, bits, ptr_rsvd};
use crate::fault::FaultReason;

/// Legacy translation type (context entry TT field, 9.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TranslationType {
    /// 00b: untranslated requests translated through the second level;
    /// translation requests and translated requests blocked.
    Untranslated,
    /// 01b: like 00b, plus ATS translation and translated requests
    /// (device-TLB enabled).
    All,
    /// 10b: pass-through: untranslated requests use the input address.
    PassThrough,
}

/// What a decode needs to know about the unit (from CAP/ECAP).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnitCaps {
    /// Host address width (MGAW + 1).
    pub haw: u8,
    /// Second-level table levels supported (SAGAW): index 3, 4, 5.
    pub sl_levels: [bool; 6],
    /// ECAP.DT.
    pub dt: bool,
    /// ECAP.PT.
    pub pt: bool,
    /// ECAP.PRS.
    pub prs: bool,
    /// ECAP.RPS.
    pub rps: bool,
    /// ECAP.FLTS.
    pub flts: bool,
    /// ECAP.SLTS.
    pub slts: bool,
    /// ECAP.NEST.
    pub nest: bool,
    /// ECAP.SLADS.
    pub slads: bool,
    /// CAP.FL5LP.
    pub fl5lp: bool,
    /// PASID width (ECAP.PSS + 1), 0 when PASIDs are not supported.
    pub pasid_bits: u8,
}

impl UnitCaps {
    /// True when `levels`-level second-level tables are supported.
    pub fn sl_levels_ok(&self, levels: u8) -> bool {
        self.sl_levels
            .get(usize::from(levels))
            .copied()
            .unwrap_or(false)
    }
}

/// A decoded, valid, present legacy context entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ContextEntry {
    /// Fault processing disable.
    pub fpd: bool,
    /// Translation type.
    pub tt: TranslationType,
    /// Second-level page-table pointer.
    pub slptptr: u64,
    /// Second-level levels (AW + 2): 3, 4 or 5 (meaningless for pass-through).
    pub levels: u8,
    /// Domain identifier.
    pub did: u16,
}

/// Why a context entry could not be used, with its FPD bit (which decides
/// whether the fault is recorded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryFault {
    /// Architectural fault reason.
    pub reason: FaultReason,
    /// The entry was present and had FPD set.
    pub fpd: bool,
}

impl ContextEntry {
    /// Decode `[lo, hi]` (9.3). Reasons: 2 not present, 0xB reserved bits,
    /// 3 invalid (TT reserved or not supported, AW not supported).
    pub fn decode(w: [u64; 2], caps: &UnitCaps) -> Result<Self, EntryFault> {
        let [lo, hi] = w;
        if lo & 1 == 0 {
            return Err(EntryFault {
                reason: FaultReason::CONTEXT_NOT_PRESENT,
                fpd: false,
            });
        }
        let fpd = lo & 2 != 0;
        let f = |reason| EntryFault { reason, fpd };
        if lo & (bits(4, 12) | ptr_rsvd(caps.haw)) != 0 || hi & ((1 << 7) | bits(24, 64)) != 0 {
            return Err(f(FaultReason::CONTEXT_RESERVED));
        }
        let tt = match (lo >> 2) & 3 {
            0 => TranslationType::Untranslated,
            1 if caps.dt => TranslationType::All,
            2 if caps.pt => TranslationType::PassThrough,
            _ => return Err(f(FaultReason::CONTEXT_INVALID)),
        };
        let aw = u8::try_from(hi & 7).unwrap_or(0);
        let levels = aw.saturating_add(2);
        if tt != TranslationType::PassThrough && !caps.sl_levels_ok(levels) {
            return Err(f(FaultReason::CONTEXT_INVALID));
        }
        Ok(ContextEntry {
            fpd,
            tt,
            slptptr: lo & PTR_MASK,
            levels,
            did: u16::try_from((hi >> 8) & 0xffff).unwrap_or(0),
        })
    }
}

/// A decoded, valid, present scalable-mode context entry (9.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ScalableContextEntry {
    /// Fault processing disable.
    pub fpd: bool,
    /// Device-TLB enable.
    pub dte: bool,
    /// PASID enable: requests with PASID allowed.
    pub paside: bool,
    /// Page request enable.
    pub pre: bool,
    /// PASID directory size: 2^(PDTS + 7) entries.
    pub pdts: u8,
    /// PASID directory pointer.
    pub pasid_dir: u64,
    /// PASID used for requests without PASID.
    pub rid_pasid: u32,
    /// RID_PRIV: requests without PASID are treated as privileged.
    pub rid_priv: bool,
}

impl ScalableContextEntry {
    /// Decode the 256-bit entry (9.4). Reasons: 0x41 not present, 0x42
    /// reserved bits, 0x43 invalid (DTE/PRE without support), 0x48 RID_PASID
    /// non-zero without ECAP.RPS.
    pub fn decode(w: [u64; 4], caps: &UnitCaps) -> Result<Self, EntryFault> {
        let [w0, w1, w2, w3] = w;
        if w0 & 1 == 0 {
            return Err(EntryFault {
                reason: FaultReason::SM_CONTEXT_NOT_PRESENT,
                fpd: false,
            });
        }
        let fpd = w0 & 2 != 0;
        let f = |reason| EntryFault { reason, fpd };
        if w0 & (bits(5, 9) | ptr_rsvd(caps.haw)) != 0
            || w1 & bits(21, 64) != 0
            || w2 != 0
            || w3 != 0
        {
            return Err(f(FaultReason::SM_CONTEXT_RESERVED));
        }
        let dte = w0 & (1 << 2) != 0;
        let pre = w0 & (1 << 4) != 0;
        if (dte && !caps.dt) || (pre && !caps.prs) {
            return Err(f(FaultReason::SM_CONTEXT_INVALID));
        }
        let rid_pasid = u32::try_from(w1 & 0xf_ffff).unwrap_or(0);
        if rid_pasid != 0 && !caps.rps {
            return Err(f(FaultReason::SM_RID_PASID_ERROR));
        }
        Ok(ScalableContextEntry {
            fpd,
            dte,
            paside: w0 & (1 << 3) != 0,
            pre,
            pdts: u8::try_from((w0 >> 9) & 7).unwrap_or(0),
            pasid_dir: w0 & PTR_MASK,
            rid_pasid,
            rid_priv: w1 & (1 << 20) != 0,
        })
    }

    /// Number of PASID directory entries (2^(PDTS+7)).
    pub fn dir_entries(&self) -> u64 {
        1u64 << (u32::from(self.pdts.min(7)).saturating_add(7))
    }
}

#[cfg(test)]
pub(crate) fn test_caps() -> UnitCaps {
    UnitCaps {
        haw: 48,
        sl_levels: [false, false, false, true, true, false],
        dt: true,
        pt: true,
        prs: false,
        rps: true,
        flts: true,
        slts: true,
        nest: true,
        slads: true,
        fl5lp: false,
        pasid_bits: 20,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // VT-d 9.3: fields decode; TT=11 and unsupported AW are invalid (reason 3).
    #[test]
    fn context_entry_decodes_and_validates() {
        let caps = test_caps();
        let c = ContextEntry::decode([0x5000 | 1, (42 << 8) | 2], &caps).unwrap();
        assert_eq!(
            (c.slptptr, c.levels, c.did, c.tt),
            (0x5000, 4, 42, TranslationType::Untranslated)
        );
        let e = ContextEntry::decode([0x5000 | 0b1101, 2], &caps).unwrap_err();
        assert_eq!(e.reason, FaultReason::CONTEXT_INVALID);
        let e = ContextEntry::decode([0x5000 | 1, 3], &caps).unwrap_err();
        assert_eq!(e.reason, FaultReason::CONTEXT_INVALID);
        // pass-through ignores AW
        assert_eq!(
            ContextEntry::decode([0b1001, 7], &caps).unwrap().tt,
            TranslationType::PassThrough
        );
    }

    // VT-d 9.3: reserved bits -> 0xB, carrying FPD.
    #[test]
    fn context_entry_reserved_bits_carry_fpd() {
        let caps = test_caps();
        let e = ContextEntry::decode([0x5000 | 0x13, 2], &caps).unwrap_err();
        assert_eq!(
            e,
            EntryFault {
                reason: FaultReason::CONTEXT_RESERVED,
                fpd: true
            }
        );
        let e = ContextEntry::decode([0x5001, 2 | (1 << 30)], &caps).unwrap_err();
        assert_eq!(e.reason, FaultReason::CONTEXT_RESERVED);
        let e = ContextEntry::decode([0x5000, 2], &caps).unwrap_err();
        assert_eq!(e.reason, FaultReason::CONTEXT_NOT_PRESENT);
    }

    // VT-d 9.4: scalable context entry fields.
    #[test]
    fn scalable_context_entry_decodes() {
        let caps = test_caps();
        let w0 = 0x7000 | (2 << 9) | (1 << 3) | 1;
        let c =
            ScalableContextEntry::decode([w0, 5, 0, 0], &caps).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            (c.pasid_dir, c.pdts, c.paside, c.rid_pasid),
            (0x7000, 2, true, 5)
        );
        assert_eq!(c.dir_entries(), 512);
        let e = ScalableContextEntry::decode([w0, 0, 1, 0], &caps).unwrap_err();
        assert_eq!(e.reason, FaultReason::SM_CONTEXT_RESERVED);
        let e = ScalableContextEntry::decode([w0 | (1 << 4), 0, 0, 0], &caps).unwrap_err();
        assert_eq!(e.reason, FaultReason::SM_CONTEXT_INVALID);
    }
}
