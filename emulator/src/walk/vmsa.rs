//! AArch64 VMSAv8-64 translation table walks (Arm ARM D8) for SMMU stage 1
//! and stage 2, 4K/16K/64K granules.
//!
//! The walker is architecture-pure: no caches, no knowledge of STEs or CDs.
//! The SMMU model decodes a CD (stage 1) or an STE (stage 2) into a
//! [`WalkConfig`], checks it with [`WalkConfig::geometry`] (an invalid
//! configuration is the model's C_BAD_CD / C_BAD_STE, IHI 0070 5.2 / 5.4),
//! and calls [`walk`] (or [`walk_with`] for a stage-1 walk whose table
//! addresses are IPAs that stage 2 must translate, IHI 0070 3.4.1).
//!
//! What is modelled (Arm ARM D8.1-D8.4):
//! - granules 4K, 16K, 64K; input size from TxSZ (16..=39); stage-1 start
//!   level derived from TxSZ; stage-2 start level from SL0 with
//!   concatenated start-level tables (up to 16, D8.2.7);
//! - table, block and page descriptors; blocks only at the levels the
//!   granule allows without FEAT_LPA/LPA2 (4K: levels 1-2, 16K: level 2,
//!   64K: level 2); a block at another level, or bits[1:0] = 0b01 at level 3,
//!   is a Translation fault;
//! - output address size checks against the configured OAS (table, block,
//!   page and TTB addresses) giving Address size faults; the descriptor
//!   output-address field is bits[51:granule] (bits 51:48 must be zero with
//!   an OAS of 48 bits or less);
//! - access flag (AF, bit 10) with an AFFD-style "no fault" switch;
//! - stage-1 permissions: AP[2:1], UXN/PXN, hierarchical APTable, UXNTable
//!   and PXNTable, and the rule that a location writable at EL0 is never
//!   privileged-executable (D8.4.1.2); stage-2 permissions: S2AP and XN
//!   (bit 54; FEAT_XNX's bit 53 is ignored).
//!
//! Not modelled: hardware update of AF/dirty (HTTU), 52-bit addresses
//! (FEAT_LPA/LPA2), TTB1 (the upper VA range), the contiguous hint beyond
//! reporting it (a TLB may ignore it), WXN, PAN, and the ignored nG bit.
//!
//! Fault priority follows D8.14: Translation, then Address size, then Access
//! flag, then Permission. The returned [`WalkError::level`] is the level of
//! the descriptor at fault (the start level for TTB checks).

use super::WalkError;
use crate::mem::GuestRam;
use crate::types::{FaultKind, Gpa, PageSize, Perm};

/// A translation granule (Arm ARM D8.1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Granule {
    /// 4 KiB pages, 9 bits resolved per level.
    G4K,
    /// 16 KiB pages, 11 bits per level.
    G16K,
    /// 64 KiB pages, 13 bits per level.
    G64K,
}

impl Granule {
    /// All granules.
    pub const ALL: [Granule; 3] = [Granule::G4K, Granule::G16K, Granule::G64K];

    /// log2 of the page size.
    pub const fn shift(self) -> u32 {
        match self {
            Granule::G4K => 12,
            Granule::G16K => 14,
            Granule::G64K => 16,
        }
    }

    /// Bits resolved per level (shift - 3).
    pub const fn stride(self) -> u32 {
        self.shift().saturating_sub(3)
    }

    /// The page size.
    pub const fn page_size(self) -> PageSize {
        match self {
            Granule::G4K => PageSize::SIZE_4K,
            Granule::G16K => PageSize::SIZE_16K,
            Granule::G64K => PageSize::SIZE_64K,
        }
    }

    /// Decode a TCR.TG0-style field (CD.TG0, STE.S2TG; IHI 0070 5.4 and
    /// 5.2): 0 = 4K, 1 = 64K, 2 = 16K, 3 = reserved.
    pub const fn from_tg0(tg: u64) -> Option<Granule> {
        match tg {
            0 => Some(Granule::G4K),
            1 => Some(Granule::G64K),
            2 => Some(Granule::G16K),
            _ => None,
        }
    }

    /// The TG0 encoding of this granule.
    pub const fn tg0(self) -> u64 {
        match self {
            Granule::G4K => 0,
            Granule::G64K => 1,
            Granule::G16K => 2,
        }
    }

    /// True when a block descriptor is allowed at `level` (D8.3.1, without
    /// FEAT_LPA/LPA2).
    pub const fn block_allowed(self, level: u8) -> bool {
        matches!(
            (self, level),
            (Granule::G4K, 1) | (Granule::G4K, 2) | (Granule::G16K, 2) | (Granule::G64K, 2)
        )
    }

    /// log2 of the region an entry at `level` maps.
    pub const fn level_shift(self, level: u8) -> u32 {
        let below = 3u32.saturating_sub(level as u32);
        self.shift()
            .saturating_add(self.stride().saturating_mul(below))
    }
}

/// Which translation regime a walk is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Stage 1 (CD: TTB0, T0SZ, TG0, IPS; EL1&0 descriptor permissions).
    One,
    /// Stage 2 (STE: S2TTB, S2T0SZ, S2SL0, S2TG, S2PS; S2AP/XN permissions).
    Two,
}

/// Inputs of one walk: what a CD (stage 1) or STE (stage 2) selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WalkConfig {
    /// Stage.
    pub stage: Stage,
    /// Granule.
    pub granule: Granule,
    /// T0SZ / S2T0SZ: the input size is `64 - tsz` bits.
    pub tsz: u8,
    /// S2SL0 (stage 2 only; ignored for stage 1).
    pub sl0: u8,
    /// Effective output address size in bits (min of IPS/S2PS and the
    /// SMMU's OAS, IHI 0070 3.4.3), at most 48.
    pub oas_bits: u8,
    /// Translation table base (TTB0 / S2TTB).
    pub ttb: u64,
    /// Access flag fault disable (CD.AFFD / STE.S2AFFD): an entry with AF=0
    /// is used as if AF were 1.
    pub affd: bool,
}

/// Why a [`WalkConfig`] cannot be used (the model reports C_BAD_CD or
/// C_BAD_STE).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// TxSZ outside 16..=39.
    #[error("TxSZ {0} outside 16..=39")]
    TszOutOfRange(u8),
    /// Stage-2 SL0 encoding reserved for this granule.
    #[error("S2SL0 {0} is reserved for this granule")]
    BadSl0(u8),
    /// SL0 and T0SZ need more than 16 concatenated tables, or resolve no
    /// bit at the start level (D8.2.7).
    #[error("starting level {level} cannot resolve {ia_bits} input bits")]
    BadStartLevel {
        /// The start level SL0 chose.
        level: u8,
        /// Input address size.
        ia_bits: u32,
    },
    /// Output size outside 32..=48 bits.
    #[error("output address size {0} bits not supported")]
    BadOas(u8),
}

/// What a valid [`WalkConfig`] implies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Geometry {
    /// Input address size in bits.
    pub ia_bits: u32,
    /// Level of the first lookup.
    pub start_level: u8,
    /// Index bits resolved at the start level (more than the stride for
    /// concatenated stage-2 tables).
    pub start_bits: u32,
}

impl Geometry {
    /// Size in bytes of the start-level table (all concatenated tables).
    pub const fn start_table_bytes(&self) -> u64 {
        8u64 << self.start_bits
    }
}

impl WalkConfig {
    /// Check the configuration and derive the start level (D8.2.6 for
    /// stage 1, D8.2.7 / VTCR_EL2.SL0 for stage 2).
    pub fn geometry(&self) -> Result<Geometry, ConfigError> {
        if !(16..=39).contains(&self.tsz) {
            return Err(ConfigError::TszOutOfRange(self.tsz));
        }
        if !(32..=48).contains(&self.oas_bits) {
            return Err(ConfigError::BadOas(self.oas_bits));
        }
        let g = self.granule;
        let ia_bits = 64u32.saturating_sub(u32::from(self.tsz));
        let start_level = match self.stage {
            Stage::One => {
                // Levels needed = ceil((ia - shift) / stride).
                let bits = ia_bits.saturating_sub(g.shift());
                let levels = bits.div_ceil(g.stride());
                let levels = u8::try_from(levels).unwrap_or(4).min(4);
                4u8.saturating_sub(levels)
            }
            Stage::Two => match (g, self.sl0) {
                (Granule::G4K, 0) => 2,
                (Granule::G4K, 1) => 1,
                (Granule::G4K, 2) => 0,
                (Granule::G16K | Granule::G64K, 0) => 3,
                (Granule::G16K | Granule::G64K, 1) => 2,
                (Granule::G16K | Granule::G64K, 2) => 1,
                _ => return Err(ConfigError::BadSl0(self.sl0)),
            },
        };
        let below = g.level_shift(start_level);
        let start_bits = ia_bits.saturating_sub(below);
        let max = match self.stage {
            Stage::One => g.stride(),
            // Up to 16 concatenated tables (D8.2.7).
            Stage::Two => g.stride().saturating_add(4),
        };
        if ia_bits <= below || start_bits > max {
            return Err(ConfigError::BadStartLevel {
                level: start_level,
                ia_bits,
            });
        }
        Ok(Geometry {
            ia_bits,
            start_level,
            start_bits,
        })
    }
}

/// One access to translate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WalkRequest {
    /// Input address (VA for stage 1, IPA for stage 2).
    pub addr: u64,
    /// Rights needed (may be empty: just report what is granted).
    pub access: Perm,
    /// Privileged (EL1) rather than unprivileged (EL0) access; stage 1 only.
    pub privileged: bool,
}

/// A successful walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WalkOutput {
    /// Output address for `addr` (page base plus offset).
    pub output: u64,
    /// Size of the page or block.
    pub page_size: PageSize,
    /// Rights granted at the request's privilege.
    pub perm: Perm,
    /// Rights granted to an unprivileged access (same as `perm_priv` for
    /// stage 2); lets a TLB serve both privilege levels from one entry.
    pub perm_unpriv: Perm,
    /// Rights granted to a privileged access.
    pub perm_priv: Perm,
    /// Stage 1: the mapping is not accessible unprivileged (AP[1] = 0 or
    /// APTable[0] set). Always false for stage 2.
    pub privileged_only: bool,
    /// Level of the leaf descriptor.
    pub level: u8,
    /// Descriptor reads made.
    pub reads: u8,
    /// Stage 1 AttrIndx[2:0]; stage 2 MemAttr[3:0].
    pub attrs: u8,
    /// Shareability SH[1:0].
    pub sh: u8,
    /// The contiguous hint (bit 52).
    pub contiguous: bool,
    /// The leaf descriptor.
    pub descriptor: u64,
}

/// Descriptor bits (Arm ARM D8.3).
mod desc {
    pub const VALID: u64 = 1 << 0;
    pub const TABLE_OR_PAGE: u64 = 1 << 1;
    pub const AP1: u64 = 1 << 6; // stage 1 EL0 access; stage 2 S2AP[0] read
    pub const AP2: u64 = 1 << 7; // stage 1 read-only; stage 2 S2AP[1] write
    pub const AF: u64 = 1 << 10;
    pub const CONTIGUOUS: u64 = 1 << 52;
    pub const PXN: u64 = 1 << 53;
    pub const UXN: u64 = 1 << 54; // stage 2: XN
    pub const PXN_TABLE: u64 = 1 << 59;
    pub const UXN_TABLE: u64 = 1 << 60;
    pub const AP_TABLE0: u64 = 1 << 61; // no EL0 access below
    pub const AP_TABLE1: u64 = 1 << 62; // no write below
    /// Output address field bits [51:12]; the granule trims the bottom.
    pub const OA_MASK: u64 = ((1 << 52) - 1) & !0xfff;
}

fn mask_below(bits: u32) -> u64 {
    1u64.checked_shl(bits)
        .map_or(u64::MAX, |v| v.wrapping_sub(1))
}

fn err(kind: FaultKind, level: u8, entry_addr: u64, entry: Option<u64>) -> WalkError {
    WalkError {
        kind,
        level,
        entry_addr,
        entry,
    }
}

/// Walk the tables of `cfg` for `req`, reading descriptors from `mem` at
/// their (physical) addresses.
pub fn walk(
    mem: &dyn GuestRam,
    cfg: &WalkConfig,
    req: &WalkRequest,
) -> Result<WalkOutput, WalkError> {
    walk_with(mem, cfg, req, &mut Ok)
}

/// Walk like [`walk`], passing every table address through `table_addr`
/// first (for a nested stage-1 walk: the stage-2 translation of the IPA of
/// each descriptor, IHI 0070 3.4.1). An error from `table_addr` ends the
/// walk as is.
pub fn walk_with(
    mem: &dyn GuestRam,
    cfg: &WalkConfig,
    req: &WalkRequest,
    table_addr: &mut dyn FnMut(u64) -> Result<u64, WalkError>,
) -> Result<WalkOutput, WalkError> {
    let geo = cfg
        .geometry()
        .map_err(|_| err(FaultKind::BadConfig, 0, cfg.ttb, None))?;
    let g = cfg.granule;
    let stage1 = cfg.stage == Stage::One;
    let oas_limit = mask_below(u32::from(cfg.oas_bits));
    let mut level = geo.start_level;

    // Input address range (D8.2.4): beyond 2^ia_bits is a Translation fault
    // at the start level.
    if req.addr & !mask_below(geo.ia_bits) != 0 {
        return Err(err(FaultKind::NotPresent, level, cfg.ttb, None));
    }
    // TTB: aligned to the start table size; above the OAS is an Address
    // size fault (D8.2.5).
    let align = geo.start_table_bytes().max(8);
    let mut table = cfg.ttb & !(align.wrapping_sub(1)) & mask_below(52);
    if table & !oas_limit != 0 {
        return Err(err(FaultKind::AddressSize, level, cfg.ttb, None));
    }

    let mut reads: u8 = 0;
    // Hierarchical stage-1 attributes collected from table descriptors.
    let (mut ap_table0, mut ap_table1, mut uxn_table, mut pxn_table) = (false, false, false, false);
    let mut index_bits = geo.start_bits;
    loop {
        let shift = g.level_shift(level);
        let index = (req.addr >> shift) & mask_below(index_bits);
        let ipa = table.wrapping_add(index.wrapping_mul(8));
        let pa = table_addr(ipa)?;
        let d = mem
            .read_u64(Gpa(pa))
            .map_err(|_| err(FaultKind::WalkAbort, level, pa, None))?;
        reads = reads.saturating_add(1);

        if d & desc::VALID == 0 {
            return Err(err(FaultKind::NotPresent, level, pa, Some(d)));
        }
        let is_table = d & desc::TABLE_OR_PAGE != 0;
        let oa = d & desc::OA_MASK & !mask_below(g.shift());
        if level < 3 && is_table {
            if oa & !oas_limit != 0 {
                return Err(err(FaultKind::AddressSize, level, pa, Some(d)));
            }
            if stage1 {
                ap_table0 |= d & desc::AP_TABLE0 != 0;
                ap_table1 |= d & desc::AP_TABLE1 != 0;
                uxn_table |= d & desc::UXN_TABLE != 0;
                pxn_table |= d & desc::PXN_TABLE != 0;
            }
            table = oa;
            level = level.saturating_add(1);
            index_bits = g.stride();
            continue;
        }
        // A leaf: a page at level 3, a block above it where allowed.
        let leaf_ok = if level == 3 {
            is_table
        } else {
            g.block_allowed(level)
        };
        if !leaf_ok || level > 3 {
            return Err(err(FaultKind::NotPresent, level, pa, Some(d)));
        }
        let oa = oa & !mask_below(shift);
        if oa & !oas_limit != 0 {
            return Err(err(FaultKind::AddressSize, level, pa, Some(d)));
        }
        if d & desc::AF == 0 && !cfg.affd {
            return Err(err(FaultKind::AccessFlag, level, pa, Some(d)));
        }
        let tables = (ap_table0, ap_table1, uxn_table, pxn_table);
        let (perm_unpriv, perm_priv, privileged_only) = if stage1 {
            let (u, only) = stage1_perm(d, false, tables);
            let (p, _) = stage1_perm(d, true, tables);
            (u, p, only)
        } else {
            (stage2_perm(d), stage2_perm(d), false)
        };
        let perm = if req.privileged {
            perm_priv
        } else {
            perm_unpriv
        };
        if !perm.allows(req.access) {
            return Err(err(FaultKind::Permission, level, pa, Some(d)));
        }
        let page_size =
            PageSize::from_shift(u8::try_from(shift).unwrap_or(12)).unwrap_or(g.page_size());
        let attrs_field = if stage1 {
            (d >> 2) & 0x7
        } else {
            (d >> 2) & 0xf
        };
        return Ok(WalkOutput {
            output: oa | (req.addr & mask_below(shift)),
            page_size,
            perm,
            perm_unpriv,
            perm_priv,
            privileged_only,
            level,
            reads,
            attrs: u8::try_from(attrs_field).unwrap_or(0),
            sh: u8::try_from((d >> 8) & 3).unwrap_or(0),
            contiguous: d & desc::CONTIGUOUS != 0,
            descriptor: d,
        });
    }
}

/// Stage-1 EL1&0 permissions (Arm ARM D8.4.1: AP[2:1], UXN, PXN and the
/// hierarchical table controls).
fn stage1_perm(
    d: u64,
    privileged: bool,
    (ap_table0, ap_table1, uxn_table, pxn_table): (bool, bool, bool, bool),
) -> (Perm, bool) {
    let el0 = d & desc::AP1 != 0 && !ap_table0;
    let read_only = d & desc::AP2 != 0 || ap_table1;
    let mut p = Perm::empty();
    if privileged {
        p |= Perm::R;
        if !read_only {
            p |= Perm::W;
        }
        // A location writable at EL0 is never executable at EL1.
        let el0_writable = el0 && !read_only;
        if d & desc::PXN == 0 && !pxn_table && !el0_writable {
            p |= Perm::X;
        }
    } else {
        if el0 {
            p |= Perm::R;
            if !read_only {
                p |= Perm::W;
            }
        }
        if d & desc::UXN == 0 && !uxn_table {
            p |= Perm::X;
        }
    }
    (p, !el0)
}

/// Stage-2 permissions (Arm ARM D8.4.2: S2AP[1:0], XN).
fn stage2_perm(d: u64) -> Perm {
    let mut p = Perm::empty();
    if d & desc::AP1 != 0 {
        p |= Perm::R;
    }
    if d & desc::AP2 != 0 {
        p |= Perm::W;
    }
    if d & desc::UXN == 0 {
        p |= Perm::X;
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeRam;
    use crate::testing::vmsa_pt::{Leaf, VmsaTables};

    fn s1(g: Granule, tsz: u8) -> WalkConfig {
        WalkConfig {
            stage: Stage::One,
            granule: g,
            tsz,
            sl0: 0,
            oas_bits: 48,
            ttb: 0,
            affd: false,
        }
    }

    fn s2(g: Granule, tsz: u8, sl0: u8) -> WalkConfig {
        WalkConfig {
            stage: Stage::Two,
            sl0,
            ..s1(g, tsz)
        }
    }

    fn req(addr: u64, access: Perm) -> WalkRequest {
        WalkRequest {
            addr,
            access,
            privileged: false,
        }
    }

    // D8.2.6: a 48-bit stage-1 input starts at level 0 (4K, 16K), 1 (64K).
    #[test]
    fn geometry_stage1_48bit_start_levels() {
        assert_eq!(s1(Granule::G4K, 16).geometry().unwrap().start_level, 0);
        assert_eq!(s1(Granule::G16K, 16).geometry().unwrap().start_bits, 1);
        let g = s1(Granule::G64K, 16).geometry().unwrap();
        assert_eq!((g.start_level, g.start_bits), (1, 6));
        let g = s1(Granule::G4K, 39).geometry().unwrap();
        assert_eq!((g.start_level, g.start_bits), (2, 4));
    }

    // D8.2.7: stage 2 concatenates at most 16 start tables.
    #[test]
    fn geometry_stage2_concatenation_limits() {
        // 4K, SL0=1 (level 1), 40-bit IPA: 10 bits at level 1 = 2 tables.
        let g = s2(Granule::G4K, 24, 1).geometry().unwrap();
        assert_eq!((g.start_level, g.start_bits), (1, 10));
        assert_eq!(g.start_table_bytes(), 8192);
        // 4K, SL0=0 (level 2), 40-bit IPA: 19 bits > 9+4.
        assert!(matches!(
            s2(Granule::G4K, 24, 0).geometry(),
            Err(ConfigError::BadStartLevel { .. })
        ));
        assert_eq!(
            s2(Granule::G4K, 24, 3).geometry(),
            Err(ConfigError::BadSl0(3))
        );
        assert_eq!(
            s1(Granule::G4K, 40).geometry(),
            Err(ConfigError::TszOutOfRange(40))
        );
    }

    #[test]
    fn walk_4k_page_translates_with_offset() {
        let ram = FakeRam::new(1 << 32);
        let mut t = VmsaTables::new(&ram, s1(Granule::G4K, 16)).unwrap();
        t.map(0x1234_5000, 0x8000_0000, PageSize::SIZE_4K, Leaf::rw())
            .unwrap();
        let o = walk(&ram, &t.config(), &req(0x1234_5abc, Perm::RW)).unwrap();
        assert_eq!(o.output, 0x8000_0abc);
        assert_eq!(o.page_size, PageSize::SIZE_4K);
        assert_eq!((o.level, o.reads), (3, 4));
        assert_eq!(o.perm, Perm::RW | Perm::X);
    }

    #[test]
    fn walk_every_granule_page_and_block() {
        for g in Granule::ALL {
            let ram = FakeRam::new(1 << 34);
            let mut t = VmsaTables::new(&ram, s1(g, 16)).unwrap();
            let page = g.page_size();
            let block = PageSize::from_shift(u8::try_from(g.level_shift(2)).unwrap()).unwrap();
            let va_b = 4 * block.bytes();
            t.map(0x40_0000_0000, 0x1_0000_0000, page, Leaf::rw())
                .unwrap();
            t.map(va_b, 2 * block.bytes(), block, Leaf::rw()).unwrap();
            let o = walk(&ram, &t.config(), &req(0x40_0000_0000 + 8, Perm::R)).unwrap();
            assert_eq!((o.output, o.page_size), (0x1_0000_0008, page), "{g:?}");
            let o = walk(&ram, &t.config(), &req(va_b + page.bytes() + 4, Perm::W)).unwrap();
            assert_eq!(o.output, 2 * block.bytes() + page.bytes() + 4, "{g:?}");
            assert_eq!((o.page_size, o.level), (block, 2), "{g:?}");
        }
    }

    // D8.3.1: no level-0 block with the 4K granule.
    #[test]
    fn walk_block_at_forbidden_level_is_translation_fault() {
        let ram = FakeRam::new(1 << 32);
        let t = VmsaTables::new(&ram, s1(Granule::G4K, 16)).unwrap();
        // Hand-write a level-0 block descriptor.
        ram.write_u64(Gpa(t.config().ttb), 0x0000_0000_0000_0401)
            .unwrap();
        let e = walk(&ram, &t.config(), &req(0x10, Perm::R)).unwrap_err();
        assert_eq!((e.kind, e.level), (FaultKind::NotPresent, 0));
        assert_eq!(e.entry, Some(0x401));
    }

    // D8.3.2: bits[1:0] = 0b01 at level 3 is reserved: Translation fault.
    #[test]
    fn walk_level3_block_encoding_is_translation_fault() {
        let ram = FakeRam::new(1 << 32);
        let mut t = VmsaTables::new(&ram, s1(Granule::G4K, 16)).unwrap();
        t.map(0x5000, 0x9000, PageSize::SIZE_4K, Leaf::rw())
            .unwrap();
        let o = walk(&ram, &t.config(), &req(0x5000, Perm::R)).unwrap();
        let leaf_addr = t.leaf_addr(0x5000).unwrap();
        ram.write_u64(Gpa(leaf_addr), o.descriptor & !2).unwrap();
        let e = walk(&ram, &t.config(), &req(0x5000, Perm::R)).unwrap_err();
        assert_eq!(
            (e.kind, e.level, e.entry_addr),
            (FaultKind::NotPresent, 3, leaf_addr)
        );
    }

    #[test]
    fn walk_unmapped_reports_level_of_invalid_entry() {
        let ram = FakeRam::new(1 << 32);
        let mut t = VmsaTables::new(&ram, s1(Granule::G4K, 16)).unwrap();
        t.map(0x20_0000, 0x9000, PageSize::SIZE_4K, Leaf::rw())
            .unwrap();
        let e = walk(&ram, &t.config(), &req(0x20_1000, Perm::R)).unwrap_err();
        assert_eq!((e.kind, e.level), (FaultKind::NotPresent, 3));
        let e = walk(&ram, &t.config(), &req(0x80_0000_0000, Perm::R)).unwrap_err();
        assert_eq!((e.kind, e.level), (FaultKind::NotPresent, 0));
        t.unmap(0x20_0000).unwrap();
        let e = walk(&ram, &t.config(), &req(0x20_0000, Perm::R)).unwrap_err();
        assert_eq!(e.kind, FaultKind::NotPresent);
    }

    // D8.2.4: an input address above 2^(64-T0SZ) is a Translation fault.
    #[test]
    fn walk_input_beyond_t0sz_is_translation_fault() {
        let ram = FakeRam::new(1 << 32);
        let t = VmsaTables::new(&ram, s1(Granule::G4K, 25)).unwrap();
        let e = walk(&ram, &t.config(), &req(1 << 39, Perm::R)).unwrap_err();
        assert_eq!((e.kind, e.level), (FaultKind::NotPresent, 1));
        assert_eq!(ram.reads(), 0);
    }

    // D8.3.3: output address above the OAS is an Address size fault.
    #[test]
    fn walk_output_beyond_oas_is_address_size_fault() {
        let ram = FakeRam::new(1 << 32);
        let mut cfg = s1(Granule::G4K, 16);
        cfg.oas_bits = 40;
        let mut t = VmsaTables::new(&ram, cfg).unwrap();
        t.map(0x1000, 1 << 41, PageSize::SIZE_4K, Leaf::rw())
            .unwrap();
        let e = walk(&ram, &t.config(), &req(0x1000, Perm::R)).unwrap_err();
        assert_eq!((e.kind, e.level), (FaultKind::AddressSize, 3));
        let mut bad = t.config();
        bad.ttb = 1 << 44;
        let e = walk(&ram, &bad, &req(0x1000, Perm::R)).unwrap_err();
        assert_eq!((e.kind, e.level), (FaultKind::AddressSize, 0));
    }

    // D8.4.3: AF = 0 faults unless AFFD.
    #[test]
    fn walk_access_flag_clear_faults_unless_affd() {
        let ram = FakeRam::new(1 << 32);
        let mut t = VmsaTables::new(&ram, s1(Granule::G16K, 20)).unwrap();
        t.map(
            0x4000,
            0x8000,
            PageSize::SIZE_16K,
            Leaf {
                af: false,
                ..Leaf::rw()
            },
        )
        .unwrap();
        let e = walk(&ram, &t.config(), &req(0x4000, Perm::R)).unwrap_err();
        assert_eq!(e.kind, FaultKind::AccessFlag);
        let mut c = t.config();
        c.affd = true;
        assert_eq!(
            walk(&ram, &c, &req(0x4000, Perm::R)).unwrap().output,
            0x8000
        );
        t.set_af(0x4000, true).unwrap();
        assert!(walk(&ram, &t.config(), &req(0x4000, Perm::R)).is_ok());
    }

    // D8.4.1.2: AP[2:1].
    #[test]
    fn walk_stage1_ap_bits_control_el0_and_write() {
        let ram = FakeRam::new(1 << 32);
        let mut t = VmsaTables::new(&ram, s1(Granule::G4K, 16)).unwrap();
        t.map(0x1000, 0x8000, PageSize::SIZE_4K, Leaf::ro())
            .unwrap();
        t.map(
            0x2000,
            0x9000,
            PageSize::SIZE_4K,
            Leaf {
                unpriv: false,
                ..Leaf::rw()
            },
        )
        .unwrap();
        let e = walk(&ram, &t.config(), &req(0x1000, Perm::W)).unwrap_err();
        assert_eq!((e.kind, e.level), (FaultKind::Permission, 3));
        assert!(walk(&ram, &t.config(), &req(0x1000, Perm::R)).is_ok());
        let e = walk(&ram, &t.config(), &req(0x2000, Perm::R)).unwrap_err();
        assert_eq!(e.kind, FaultKind::Permission);
        let priv_req = WalkRequest {
            privileged: true,
            ..req(0x2000, Perm::RW)
        };
        let o = walk(&ram, &t.config(), &priv_req).unwrap();
        assert!(o.privileged_only);
        assert!(o.perm.contains(Perm::X));
    }

    // D8.4.1.2: UXN/PXN, and EL0-writable implies privileged execute-never.
    #[test]
    fn walk_stage1_execute_never_bits() {
        let ram = FakeRam::new(1 << 32);
        let mut t = VmsaTables::new(&ram, s1(Granule::G4K, 16)).unwrap();
        t.map(
            0x1000,
            0x8000,
            PageSize::SIZE_4K,
            Leaf {
                perm: Perm::R,
                ..Leaf::ro()
            },
        )
        .unwrap(); // UXN and PXN set
        t.map(0x2000, 0x9000, PageSize::SIZE_4K, Leaf::rw())
            .unwrap(); // EL0 RW, X
        let e = walk(&ram, &t.config(), &req(0x1000, Perm::R | Perm::X)).unwrap_err();
        assert_eq!(e.kind, FaultKind::Permission);
        assert!(walk(&ram, &t.config(), &req(0x2000, Perm::X)).is_ok());
        let p = WalkRequest {
            privileged: true,
            ..req(0x2000, Perm::X)
        };
        assert_eq!(
            walk(&ram, &t.config(), &p).unwrap_err().kind,
            FaultKind::Permission
        );
    }

    // D8.4.1.3: APTable[1] makes everything below read-only.
    #[test]
    fn walk_stage1_aptable_restricts_lower_levels() {
        let ram = FakeRam::new(1 << 32);
        let mut t = VmsaTables::new(&ram, s1(Granule::G4K, 16)).unwrap();
        t.map(0x1000, 0x8000, PageSize::SIZE_4K, Leaf::rw())
            .unwrap();
        let l0 = t.config().ttb;
        let d = ram.read_u64(Gpa(l0)).unwrap();
        ram.write_u64(Gpa(l0), d | desc::AP_TABLE1).unwrap();
        let e = walk(&ram, &t.config(), &req(0x1000, Perm::W)).unwrap_err();
        assert_eq!(e.kind, FaultKind::Permission);
        assert_eq!(
            walk(&ram, &t.config(), &req(0x1000, Perm::R)).unwrap().perm,
            Perm::R | Perm::X
        );
    }

    // D8.4.2: S2AP and XN.
    #[test]
    fn walk_stage2_s2ap_and_xn() {
        let ram = FakeRam::new(1 << 32);
        let mut t = VmsaTables::new(&ram, s2(Granule::G4K, 24, 1)).unwrap();
        t.map(
            0x3000,
            0x7000,
            PageSize::SIZE_4K,
            Leaf {
                perm: Perm::W,
                ..Leaf::rw()
            },
        )
        .unwrap();
        let o = walk(&ram, &t.config(), &req(0x3008, Perm::W)).unwrap();
        assert_eq!((o.output, o.perm), (0x7008, Perm::W));
        assert_eq!(o.reads, 3);
        let e = walk(&ram, &t.config(), &req(0x3008, Perm::R)).unwrap_err();
        assert_eq!(e.kind, FaultKind::Permission);
    }

    // D8.2.7: the second concatenated start table is used for high IPAs.
    #[test]
    fn walk_stage2_concatenated_start_tables() {
        let ram = FakeRam::new(1 << 34);
        let mut t = VmsaTables::new(&ram, s2(Granule::G4K, 24, 1)).unwrap();
        let ipa = (1 << 39) + 0x4000; // index 512 at level 1: second table
        t.map(ipa, 0x1_2345_6000, PageSize::SIZE_4K, Leaf::rw())
            .unwrap();
        let o = walk(&ram, &t.config(), &req(ipa + 1, Perm::R)).unwrap();
        assert_eq!(o.output, 0x1_2345_6001);
        let first = ram.read_u64(Gpa(t.config().ttb + 512 * 8)).unwrap();
        assert_ne!(first & 1, 0, "entry 512 lives in the second table");
    }

    #[test]
    fn walk_read_outside_ram_is_walk_abort() {
        let ram = FakeRam::new(1 << 20);
        let mut c = s1(Granule::G4K, 16);
        c.ttb = 1 << 30;
        let e = walk(&ram, &c, &req(0, Perm::R)).unwrap_err();
        assert_eq!((e.kind, e.entry_addr), (FaultKind::WalkAbort, 1 << 30));
    }

    #[test]
    fn walk_with_translates_table_addresses() {
        let ram = FakeRam::new(1 << 32);
        let mut t = VmsaTables::new(&ram, s1(Granule::G4K, 16)).unwrap();
        t.map(0x1000, 0x8000, PageSize::SIZE_4K, Leaf::rw())
            .unwrap();
        let mut seen = Vec::new();
        let o = walk_with(&ram, &t.config(), &req(0x1000, Perm::R), &mut |a| {
            seen.push(a);
            Ok(a)
        })
        .unwrap();
        assert_eq!(o.output, 0x8000);
        assert_eq!(seen.len(), 4);
        let e = walk_with(&ram, &t.config(), &req(0x1000, Perm::R), &mut |a| {
            Err(err(FaultKind::Permission, 2, a, None))
        })
        .unwrap_err();
        assert_eq!((e.kind, e.level), (FaultKind::Permission, 2));
    }

    #[test]
    fn walk_invalid_config_is_bad_config() {
        let ram = FakeRam::new(1 << 20);
        let e = walk(&ram, &s1(Granule::G4K, 10), &req(0, Perm::R)).unwrap_err();
        assert_eq!(e.kind, FaultKind::BadConfig);
    }
}
