//! Guest-visible structures: decoded once into validated Rust values
//! (STYLE rule 3). Raw words come from guest memory as little-endian u64s.
//!
//! - [`ste`]: Stream Table Entries and level-1 stream table descriptors
//!   (IHI 0070 5.1, 5.2);
//! - [`cd`]: Context Descriptors and level-1 CD descriptors (5.3, 5.4);
//! - [`cmd`]: command queue entries (4.1-4.7);
//! - [`event`]: event records (7.3) and PRI queue records (8.1).

pub mod cd;
pub mod cmd;
pub mod event;
pub mod ste;

use iommu_emulator::walk::vmsa::Granule;

use crate::{SmmuConfig, StallModel};

/// What the implementation supports, as STE/CD validation needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    /// Stage 1 implemented.
    pub s1: bool,
    /// Stage 2 implemented.
    pub s2: bool,
    /// OAS in bits.
    pub oas_bits: u8,
    /// Granules: 4K, 16K, 64K.
    pub granules: [bool; 3],
    /// SubstreamID bits.
    pub ssid_bits: u8,
    /// Two-level CD tables.
    pub cd2l: bool,
    /// ATS.
    pub ats: bool,
    /// EL2 StreamWorld.
    pub hyp: bool,
    /// 16-bit VMIDs.
    pub vmid16: bool,
    /// 16-bit ASIDs.
    pub asid16: bool,
    /// Fault models (IDR0.STALL_MODEL).
    pub stall_model: StallModel,
}

impl Caps {
    /// The capabilities of `c`.
    pub fn from_config(c: &SmmuConfig) -> Self {
        Caps {
            s1: c.s1(),
            s2: c.s2(),
            oas_bits: c.oas_bits,
            granules: [c.gran4k, c.gran16k, c.gran64k],
            ssid_bits: c.ssid_bits,
            cd2l: c.cd_2lvl,
            ats: c.ats,
            hyp: c.hyp,
            vmid16: c.vmid16,
            asid16: c.asid16,
            stall_model: c.stall_model,
        }
    }

    /// True when `g` is implemented (IDR5.GRANxx).
    pub fn granule_ok(&self, g: Granule) -> bool {
        match g {
            Granule::G4K => self.granules[0],
            Granule::G16K => self.granules[1],
            Granule::G64K => self.granules[2],
        }
    }
}
