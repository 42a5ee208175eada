//! The hardware configuration: which VT-d features the emulated unit has,
//! with QEMU's `intel-iommu` property names where QEMU has one, and the
//! capability registers derived from it (VT-d 11.4.2 CAP_REG, 11.4.3
//! ECAP_REG).

use iommu_emulator::{CacheConfig, ReplacementPolicy};

use crate::regs::{FRO, IRO};

/// Largest number of fault recording registers (they must fit in the
/// register page after [`FRO`]).
pub const MAX_FAULT_REGS: usize = 128;

/// A configuration error (bad property list or impossible combination).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Unknown property name.
    #[error("unknown intel-iommu property '{name}'; valid properties: {valid}")]
    UnknownProperty {
        /// The name given.
        name: String,
        /// Comma-separated list of valid names.
        valid: String,
    },
    /// A value could not be parsed or is out of range.
    #[error("bad value '{value}' for intel-iommu property '{name}': {why}")]
    BadValue {
        /// Property.
        name: String,
        /// Value given.
        value: String,
        /// What is accepted.
        why: String,
    },
    /// The combination of properties is not valid.
    #[error("invalid intel-iommu configuration: {0}")]
    Invalid(String),
}

/// Configuration of one emulated VT-d remapping unit.
///
/// Build with [`VtdConfig::default`] (what a Linux 5.10-6.12 guest expects
/// from a plain `intel-iommu`) or [`VtdConfig::parse_props`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VtdConfig {
    /// Guest address width in bits: 39, 48 or 57 (`aw-bits`). Sets
    /// CAP.MGAW = aw-1 and CAP.SAGAW (3-level always, 4-level from 48, 5-level at 57).
    pub aw_bits: u8,
    /// Scalable-mode translation (`x-scalable-mode`): ECAP.SMTS.
    pub scalable_mode: bool,
    /// First-level translation in scalable mode (`x-flts`): ECAP.FLTS.
    pub flts: bool,
    /// Second-level translation in scalable mode (`x-slts`): ECAP.SLTS.
    pub slts: bool,
    /// Nested translation (`x-nested`): ECAP.NEST (needs FLTS and SLTS).
    pub nested: bool,
    /// Requests with PASID (`x-pasid-mode`): ECAP.PASID.
    pub pasid: bool,
    /// PASID width in bits, 1..=20 (`pasid-bits`): ECAP.PSS = bits - 1.
    pub pasid_bits: u8,
    /// Caching mode (`caching-mode`): CAP.CM.
    pub caching_mode: bool,
    /// Device-TLB / ATS (`device-iotlb`): ECAP.DT.
    pub device_iotlb: bool,
    /// Performance monitoring (`x-perfmon`): ECAP.PMS and CAP.ECMDS with
    /// the perfmon and enhanced command registers ([`crate::perfmon`]).
    pub perfmon: bool,
    /// Snoop control (`snoop-control`): ECAP.SC.
    pub snoop_control: bool,
    /// Interrupt remapping (`intremap`): ECAP.IR. (Remapping itself is a
    /// later issue; the registers exist.)
    pub intremap: bool,
    /// Extended interrupt mode, x2APIC (`eim`): ECAP.EIM.
    pub eim: bool,
    /// Pass-through translation type (`pt`): ECAP.PT.
    pub pt: bool,
    /// Queued invalidation (`qi`): ECAP.QI.
    pub qi: bool,
    /// Page requests (`x-prs`): ECAP.PRS and ECAP.PDS. Page-request queue
    /// behaviour is a later issue.
    pub prs: bool,
    /// DMA read/write draining (`dma-drain`): CAP.DRD/DWD.
    pub dma_drain: bool,
    /// Second-level A/D bits (`x-slads`): ECAP.SLADS.
    pub slads: bool,
    /// 1 GiB first-level pages (`fl1gp`): CAP.FL1GP.
    pub fl1gp: bool,
    /// Second-level large pages (`sllps`): 0 none, 1 2M, 2 2M+1G.
    pub sllps: u8,
    /// Number of fault recording registers, 1..=128 (`fault-regs`).
    pub fault_regs: u16,
    /// IOTLB geometry (`iotlb-sets`, `iotlb-ways`).
    pub iotlb: CacheConfig,
    /// Context cache geometry (`context-cache-entries`, fully associative).
    pub context_cache: CacheConfig,
    /// PASID cache geometry (`pasid-cache-entries`).
    pub pasid_cache: CacheConfig,
    /// Each paging-structure cache (first and second level) (`pwc-entries`).
    pub pwc: CacheConfig,
    /// DMAR table: emit an ATSR with ALL_PORTS (default: with device-iotlb).
    pub atsr_all_ports: bool,
    /// DMAR table: reserved memory regions (RMRR): (base, end inclusive,
    /// devices as (bus, dev, func)).
    pub rmrr: Vec<Rmrr>,
    /// DMAR table: SATC entries for these devices (bus, dev, func).
    pub satc: Vec<(u8, u8, u8)>,
}

/// One RMRR of the DMAR table (VT-d 8.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rmrr {
    /// Base address (4 KiB aligned).
    pub base: u64,
    /// Last byte (inclusive).
    pub limit: u64,
    /// Devices (bus, device, function) the region belongs to.
    pub devices: Vec<(u8, u8, u8)>,
}

impl Default for VtdConfig {
    fn default() -> Self {
        VtdConfig {
            aw_bits: 48,
            scalable_mode: false,
            flts: true,
            slts: true,
            nested: true,
            pasid: true,
            pasid_bits: 20,
            caching_mode: false,
            device_iotlb: false,
            perfmon: false,
            snoop_control: false,
            intremap: false,
            eim: false,
            pt: true,
            qi: true,
            prs: false,
            dma_drain: true,
            slads: true,
            fl1gp: true,
            sllps: 2,
            fault_regs: 8,
            iotlb: CacheConfig::new(64, 8),
            context_cache: CacheConfig::fully_associative(32),
            pasid_cache: CacheConfig::new(16, 4),
            pwc: CacheConfig::new(16, 4),
            atsr_all_ports: false,
            rmrr: Vec::new(),
            satc: Vec::new(),
        }
    }
}

fn parse_bool(name: &str, v: &str) -> Result<bool, ConfigError> {
    match v {
        "on" | "true" | "yes" | "1" | "modern" | "auto" => Ok(true),
        "off" | "false" | "no" | "0" | "legacy" => Ok(false),
        _ => Err(ConfigError::BadValue {
            name: name.into(),
            value: v.into(),
            why: "expected on/off".into(),
        }),
    }
}

fn parse_num(name: &str, v: &str, lo: u64, hi: u64) -> Result<u64, ConfigError> {
    let n = if let Some(h) = v.strip_prefix("0x") {
        u64::from_str_radix(h, 16).ok()
    } else {
        v.parse::<u64>().ok()
    };
    match n {
        Some(n) if (lo..=hi).contains(&n) => Ok(n),
        _ => Err(ConfigError::BadValue {
            name: name.into(),
            value: v.into(),
            why: format!("expected a number in {lo}..={hi}"),
        }),
    }
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

impl VtdConfig {
    /// Every property: (name, default, help).
    pub const PROPERTIES: &'static [(&'static str, &'static str, &'static str)] = &[
        (
            "aw-bits",
            "48",
            "guest address width: 39, 48 or 57 (CAP.MGAW/SAGAW)",
        ),
        (
            "x-scalable-mode",
            "off",
            "scalable-mode translation (ECAP.SMTS)",
        ),
        (
            "x-flts",
            "on",
            "first-level translation in scalable mode (ECAP.FLTS)",
        ),
        (
            "x-slts",
            "on",
            "second-level translation in scalable mode (ECAP.SLTS)",
        ),
        ("x-nested", "on", "nested translation (ECAP.NEST)"),
        (
            "x-pasid-mode",
            "on",
            "requests with PASID in scalable mode (ECAP.PASID)",
        ),
        ("pasid-bits", "20", "PASID width 1..20 (ECAP.PSS)"),
        ("caching-mode", "off", "caching mode (CAP.CM)"),
        ("device-iotlb", "off", "device-TLB / ATS support (ECAP.DT)"),
        (
            "x-perfmon",
            "off",
            "performance monitoring (ECAP.PMS, CAP.ECMDS)",
        ),
        ("snoop-control", "off", "snoop control (ECAP.SC)"),
        ("intremap", "off", "interrupt remapping registers (ECAP.IR)"),
        ("eim", "off", "extended interrupt mode / x2APIC (ECAP.EIM)"),
        ("pt", "on", "pass-through translation type (ECAP.PT)"),
        ("qi", "on", "queued invalidation (ECAP.QI)"),
        ("x-prs", "off", "page requests (ECAP.PRS, PDS)"),
        ("dma-drain", "on", "DMA read/write draining (CAP.DRD/DWD)"),
        (
            "x-slads",
            "on",
            "second-level accessed/dirty bits (ECAP.SLADS)",
        ),
        ("fl1gp", "on", "1 GiB first-level pages (CAP.FL1GP)"),
        (
            "sllps",
            "2",
            "second-level large pages: 0 none, 1 2M, 2 2M+1G (CAP.SLLPS)",
        ),
        (
            "fault-regs",
            "8",
            "number of fault recording registers 1..128 (CAP.NFR)",
        ),
        ("iotlb-sets", "64", "IOTLB sets"),
        ("iotlb-ways", "8", "IOTLB ways"),
        (
            "context-cache-entries",
            "32",
            "context-cache entries (fully associative)",
        ),
        ("pasid-cache-entries", "64", "PASID-cache entries (4-way)"),
        (
            "pwc-entries",
            "64",
            "entries of each paging-structure cache (4-way)",
        ),
        (
            "cache-policy",
            "lru",
            "replacement policy of every cache: lru, plru, fifo, random",
        ),
        (
            "atsr",
            "off",
            "DMAR table: ATSR with ALL_PORTS (forced on by device-iotlb)",
        ),
    ];

    fn valid_names() -> String {
        Self::PROPERTIES
            .iter()
            .map(|p| p.0)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Parse a QEMU-style property list, e.g.
    /// `x-scalable-mode=on,aw-bits=48,caching-mode=off` (the part after
    /// `intel-iommu,`). A bare name means `name=on`. Unknown names are an
    /// error listing the valid ones.
    pub fn parse_props(props: &str) -> Result<Self, ConfigError> {
        let mut c = VtdConfig::default();
        let mut policy = None;
        for item in props.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, value) = item.split_once('=').unwrap_or((item, "on"));
            let (name, value) = (name.trim(), value.trim());
            match name {
                "aw-bits" => {
                    let n = parse_num(name, value, 39, 57)?;
                    if !matches!(n, 39 | 48 | 57) {
                        return Err(ConfigError::BadValue {
                            name: name.into(),
                            value: value.into(),
                            why: "expected 39, 48 or 57".into(),
                        });
                    }
                    c.aw_bits = u8::try_from(n).unwrap_or(48);
                }
                "x-scalable-mode" => c.scalable_mode = parse_bool(name, value)?,
                "x-flts" => c.flts = parse_bool(name, value)?,
                "x-slts" => c.slts = parse_bool(name, value)?,
                "x-nested" => c.nested = parse_bool(name, value)?,
                "x-pasid-mode" => c.pasid = parse_bool(name, value)?,
                "pasid-bits" => {
                    c.pasid_bits = u8::try_from(parse_num(name, value, 1, 20)?).unwrap_or(20);
                }
                "caching-mode" => c.caching_mode = parse_bool(name, value)?,
                "device-iotlb" => c.device_iotlb = parse_bool(name, value)?,
                "x-perfmon" => c.perfmon = parse_bool(name, value)?,
                "snoop-control" => c.snoop_control = parse_bool(name, value)?,
                "intremap" => c.intremap = parse_bool(name, value)?,
                "eim" => c.eim = parse_bool(name, value)?,
                "pt" => c.pt = parse_bool(name, value)?,
                "qi" => c.qi = parse_bool(name, value)?,
                "x-prs" => c.prs = parse_bool(name, value)?,
                "dma-drain" => c.dma_drain = parse_bool(name, value)?,
                "x-slads" => c.slads = parse_bool(name, value)?,
                "fl1gp" => c.fl1gp = parse_bool(name, value)?,
                "sllps" => c.sllps = u8::try_from(parse_num(name, value, 0, 2)?).unwrap_or(2),
                "fault-regs" => {
                    c.fault_regs = u16::try_from(parse_num(name, value, 1, 128)?).unwrap_or(8);
                }
                "iotlb-sets" => c.iotlb.sets = to_usize(parse_num(name, value, 1, 1 << 16)?),
                "iotlb-ways" => c.iotlb.ways = to_usize(parse_num(name, value, 0, 64)?),
                "context-cache-entries" => {
                    c.context_cache =
                        CacheConfig::fully_associative(to_usize(parse_num(name, value, 0, 4096)?));
                }
                "pasid-cache-entries" => {
                    let n = to_usize(parse_num(name, value, 0, 1 << 16)?);
                    c.pasid_cache =
                        CacheConfig::new(n.div_ceil(4).max(1), if n == 0 { 0 } else { 4 });
                }
                "pwc-entries" => {
                    let n = to_usize(parse_num(name, value, 0, 1 << 16)?);
                    c.pwc = CacheConfig::new(n.div_ceil(4).max(1), if n == 0 { 0 } else { 4 });
                }
                "cache-policy" => {
                    policy = Some(value.parse::<ReplacementPolicy>().map_err(|why| {
                        ConfigError::BadValue {
                            name: name.into(),
                            value: value.into(),
                            why,
                        }
                    })?);
                }
                "atsr" => c.atsr_all_ports = parse_bool(name, value)?,
                _ => {
                    return Err(ConfigError::UnknownProperty {
                        name: name.into(),
                        valid: Self::valid_names(),
                    });
                }
            }
        }
        if let Some(p) = policy {
            c.iotlb.policy = p;
            c.context_cache.policy = p;
            c.pasid_cache.policy = p;
            c.pwc.policy = p;
        }
        c.validate()?;
        Ok(c)
    }

    /// Check combinations.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !matches!(self.aw_bits, 39 | 48 | 57) {
            return Err(ConfigError::Invalid(format!(
                "aw-bits must be 39, 48 or 57, not {}",
                self.aw_bits
            )));
        }
        if self.perfmon && self.fault_regs > 14 {
            // The perfmon registers start at 0x300, after the fault
            // recording registers (crate::perfmon).
            return Err(ConfigError::Invalid(
                "x-perfmon=on needs fault-regs <= 14".into(),
            ));
        }
        if self.eim && !self.intremap {
            return Err(ConfigError::Invalid("eim=on needs intremap=on".into()));
        }
        if self.scalable_mode && !self.qi {
            // VT-d 6.5: scalable-mode invalidation needs the queue (PASID-cache
            // and PASID-based IOTLB invalidations have no register form).
            return Err(ConfigError::Invalid(
                "x-scalable-mode=on needs qi=on".into(),
            ));
        }
        if self.scalable_mode && !self.flts && !self.slts {
            return Err(ConfigError::Invalid(
                "scalable mode needs x-flts or x-slts".into(),
            ));
        }
        if !(1..=20).contains(&self.pasid_bits) {
            return Err(ConfigError::Invalid("pasid-bits must be 1..20".into()));
        }
        if self.fault_regs == 0 || usize::from(self.fault_regs) > MAX_FAULT_REGS {
            return Err(ConfigError::Invalid(format!(
                "fault-regs must be 1..={MAX_FAULT_REGS}"
            )));
        }
        for (n, c) in [
            ("iotlb", self.iotlb),
            ("context cache", self.context_cache),
            ("pasid cache", self.pasid_cache),
            ("pwc", self.pwc),
        ] {
            if c.sets
                .checked_mul(c.ways)
                .is_none_or(|e| e > CacheConfig::MAX_ENTRIES)
            {
                return Err(ConfigError::Invalid(format!("{n} too large")));
            }
        }
        Ok(())
    }

    /// Number of second-level page-table levels supported (SAGAW bits):
    /// true for 3, 4, 5 levels.
    pub fn sl_levels_supported(&self, levels: u8) -> bool {
        match levels {
            3 => true,
            4 => self.aw_bits >= 48,
            5 => self.aw_bits >= 57,
            _ => false,
        }
    }

    /// Nested translation actually advertised.
    pub fn nested_enabled(&self) -> bool {
        self.scalable_mode && self.nested && self.flts && self.slts
    }

    /// The capability register (VT-d 11.4.2).
    pub fn cap(&self) -> u64 {
        let mut c = 0u64;
        c |= 6; // ND: 2^16 domain ids
        if self.perfmon {
            c |= 1 << 61; // ECMDS
        }
        if self.caching_mode {
            c |= 1 << 7;
        }
        let mut sagaw = 0b0010u64; // 39-bit, 3-level
        if self.aw_bits >= 48 {
            sagaw |= 0b0100;
        }
        if self.aw_bits >= 57 {
            sagaw |= 0b1000;
        }
        c |= sagaw << 8;
        c |= u64::from(self.aw_bits.saturating_sub(1)) << 16; // MGAW
        c |= 1 << 22; // ZLR
        c |= (FRO / 16) << 24; // FRO
        let sllps = match self.sllps {
            0 => 0,
            1 => 1,
            _ => 3,
        };
        c |= sllps << 34;
        c |= 1 << 39; // PSI
        c |= u64::from(self.fault_regs.saturating_sub(1)) << 40; // NFR
        c |= 18 << 48; // MAMV
        if self.dma_drain {
            c |= (1 << 54) | (1 << 55); // DWD, DRD
        }
        if self.fl1gp {
            c |= 1 << 56;
        }
        if self.aw_bits >= 57 {
            c |= 1 << 60; // FL5LP
        }
        c
    }

    /// The extended capability register (VT-d 11.4.3).
    pub fn ecap(&self) -> u64 {
        let mut e = 0u64;
        e |= 1; // C: page-walk coherency
        if self.qi {
            e |= 1 << 1;
        }
        if self.device_iotlb {
            e |= 1 << 2;
        }
        if self.perfmon {
            e |= 1 << 51; // PMS
        }
        if self.intremap {
            e |= 1 << 3;
        }
        if self.eim {
            e |= 1 << 4;
        }
        if self.pt {
            e |= 1 << 6;
        }
        if self.snoop_control {
            e |= 1 << 7;
        }
        e |= (IRO / 16) << 8; // IRO
        e |= 0xf << 20; // MHMV
        if self.scalable_mode {
            if self.nested_enabled() {
                e |= 1 << 26;
            }
            if self.prs {
                e |= 1 << 29;
                e |= 1 << 42; // PDS
            }
            e |= 1 << 31; // SRS
            e |= u64::from(self.pasid_bits.saturating_sub(1)) << 35; // PSS
            if self.pasid {
                e |= 1 << 40;
            }
            e |= 1 << 43; // SMTS
            if self.slads && self.slts {
                e |= 1 << 45;
            }
            if self.slts {
                e |= 1 << 46;
            }
            if self.flts {
                e |= 1 << 47;
            }
            e |= 1 << 48; // SMPWC
            e |= 1 << 49; // RPS
        }
        e
    }

    /// The version register: 1.0 for legacy-only units, 3.0 with scalable mode (as QEMU).
    pub fn version(&self) -> u64 {
        if self.scalable_mode { 0x30 } else { 0x10 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // VT-d 11.4.2: SAGAW bit 2 (4-level) with MGAW 47 for aw-bits=48.
    #[test]
    fn cap_aw48_has_sagaw_4level_and_mgaw_47() {
        let c = VtdConfig::default().cap();
        assert_eq!((c >> 8) & 0x1f, 0b0110);
        assert_eq!((c >> 16) & 0x3f, 47);
        assert_eq!((c >> 40) & 0xff, 7);
        assert_eq!(((c >> 24) & 0x3ff) * 16, FRO);
    }

    // VT-d 11.4.3: what Linux 6.1 needs for scalable mode.
    #[test]
    fn ecap_scalable_mode_advertises_linux_needs() {
        let c = VtdConfig::parse_props("x-scalable-mode=on").unwrap();
        let e = c.ecap();
        for (bit, name) in [
            (1, "QI"),
            (6, "PT"),
            (31, "SRS"),
            (40, "PASID"),
            (43, "SMTS"),
            (46, "SLTS"),
            (47, "FLTS"),
            (48, "SMPWC"),
        ] {
            assert_ne!(e & (1 << bit), 0, "{name}");
        }
        assert_eq!((e >> 35) & 0x1f, 19);
        assert_eq!(((e >> 8) & 0x3ff) * 16, IRO);
        assert_eq!(VtdConfig::default().ecap() & (1 << 43), 0);
    }

    #[test]
    fn parse_props_unknown_lists_valid_names() {
        let e = VtdConfig::parse_props("aw-bits=48,bogus=1").unwrap_err();
        let s = e.to_string();
        assert!(s.contains("bogus") && s.contains("x-scalable-mode"), "{s}");
    }

    #[test]
    fn parse_props_values_apply_and_bad_values_fail() {
        let c = VtdConfig::parse_props("aw-bits=57,caching-mode=on,fault-regs=4,cache-policy=fifo")
            .unwrap();
        assert_eq!(c.aw_bits, 57);
        assert_ne!(c.cap() & (1 << 7), 0);
        assert_eq!((c.cap() >> 8) & 0x1f, 0b1110);
        assert_eq!(c.iotlb.policy, ReplacementPolicy::Fifo);
        assert!(VtdConfig::parse_props("aw-bits=40").is_err());
        assert!(VtdConfig::parse_props("fault-regs=0").is_err());
        assert!(VtdConfig::parse_props("x-scalable-mode=on,qi=off").is_err());
        assert!(VtdConfig::parse_props("eim=on").is_err());
    }

    #[test]
    fn properties_table_names_every_parsed_property() {
        for (name, default, _) in VtdConfig::PROPERTIES {
            let s = format!("{name}={default}");
            VtdConfig::parse_props(&s).unwrap_or_else(|e| panic!("{s}: {e}"));
        }
    }
}
