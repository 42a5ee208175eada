//! Page-table walkers shared by the models.
//!
//! - [`x86`]: the x86-64 4/5-level paging format that VT-d first-level
//!   translation uses (VT-d 3.6 / 9.7), and VT-d's second-level format
//!   (VT-d 3.7 / 9.8) which has the same shape.
//! - [`vmsa`]: the AArch64 VMSAv8-64 translation table format (Arm ARM
//!   D8) with 4K/16K/64K granules, for SMMU stage 1 and stage 2.
//!
//! Walkers read guest memory through [`crate::GuestRam`], never panic on
//! table contents, and return a [`WalkError`] (kind, level, address) that
//! the model turns into its architectural fault record.

pub mod vmsa;
pub mod x86;

use crate::types::FaultKind;

/// Why a walk stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalkError {
    /// Class of the failure.
    pub kind: FaultKind,
    /// Level at which it was found (architecture numbering of each walker).
    pub level: u8,
    /// Guest-physical address of the entry involved (or of the failed read).
    pub entry_addr: u64,
    /// The entry's raw value, when it was read.
    pub entry: Option<u64>,
}
