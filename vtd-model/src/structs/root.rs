//! Root entries: legacy (VT-d 9.1) and scalable-mode (VT-d 9.2).

use super::{PTR_MASK, bits, ptr_rsvd};
use crate::fault::FaultReason;

/// A decoded legacy root entry (9.1): present bit and context-table pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RootEntry {
    /// Context-table pointer (CTP, bits 63:12).
    pub ctp: u64,
}

impl RootEntry {
    /// Decode the 128-bit entry `[lo, hi]` of a unit with host address width
    /// `haw`. Legacy fault reasons: 1 (not present), 0xA (reserved bits).
    pub fn decode(w: [u64; 2], haw: u8) -> Result<Self, FaultReason> {
        let [lo, hi] = w;
        if lo & 1 == 0 {
            return Err(FaultReason::ROOT_NOT_PRESENT);
        }
        if lo & (bits(1, 12) | ptr_rsvd(haw)) != 0 || hi != 0 {
            return Err(FaultReason::ROOT_RESERVED);
        }
        Ok(RootEntry { ctp: lo & PTR_MASK })
    }
}

/// A decoded scalable-mode root entry half (9.2): the lower half serves
/// devfn 0-127, the upper half devfn 128-255.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScalableRootEntry {
    /// Context-table pointer for this devfn half.
    pub ctp: u64,
}

impl ScalableRootEntry {
    /// Decode the half of `[lo, hi]` that serves `devfn`. Scalable-mode
    /// reasons: 0x39 (not present), 0x3A (reserved bits).
    pub fn decode(w: [u64; 2], devfn: u8, haw: u8) -> Result<Self, FaultReason> {
        let half = if devfn < 128 { w[0] } else { w[1] };
        if half & 1 == 0 {
            return Err(FaultReason::SM_ROOT_NOT_PRESENT);
        }
        if half & (bits(1, 12) | ptr_rsvd(haw)) != 0 {
            return Err(FaultReason::SM_ROOT_RESERVED);
        }
        Ok(ScalableRootEntry {
            ctp: half & PTR_MASK,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // VT-d 9.1: P=0 -> fault reason 1; reserved bits -> 0xA.
    #[test]
    fn root_entry_not_present_and_reserved() {
        assert_eq!(
            RootEntry::decode([0x1000, 0], 48),
            Err(FaultReason::ROOT_NOT_PRESENT)
        );
        assert_eq!(
            RootEntry::decode([0x1003, 0], 48),
            Err(FaultReason::ROOT_RESERVED)
        );
        assert_eq!(
            RootEntry::decode([0x1001, 1], 48),
            Err(FaultReason::ROOT_RESERVED)
        );
        assert_eq!(
            RootEntry::decode([1 << 50 | 1, 0], 48),
            Err(FaultReason::ROOT_RESERVED)
        );
        assert_eq!(RootEntry::decode([0x1001, 0], 48).unwrap().ctp, 0x1000);
    }

    // VT-d 9.2: devfn >= 128 uses the upper half.
    #[test]
    fn scalable_root_entry_selects_half_by_devfn() {
        let w = [0x1001, 0x2001];
        assert_eq!(ScalableRootEntry::decode(w, 5, 48).unwrap().ctp, 0x1000);
        assert_eq!(ScalableRootEntry::decode(w, 200, 48).unwrap().ctp, 0x2000);
        assert_eq!(
            ScalableRootEntry::decode([0x1001, 0], 128, 48),
            Err(FaultReason::SM_ROOT_NOT_PRESENT)
        );
    }
}
