//! The device configuration: which SMMUv3 features exist, queue and table
//! limits, cache geometry and latencies. The ID registers (IHI 0070 6.3.1-6)
//! are derived from it, and so are the IORT node and device-tree node.
//!
//! Property names follow QEMU's habits (`key=value,...`, `on`/`off`), so a
//! user can present exactly the hardware a patch needs.

use iommu_emulator::{CacheConfig, Latencies, ReplacementPolicy};

use crate::Error;

/// Stages a configuration implements (IDR0.S1P / IDR0.S2P).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stages {
    /// Stage 1 only.
    S1,
    /// Stage 2 only.
    S2,
    /// Both, so nested STEs are possible.
    Nested,
}

/// Fault models offered (IDR0.STALL_MODEL, IHI 0070 3.12, 6.3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StallModel {
    /// 0b00: stall and terminate models; software picks per stream
    /// (STE.S1STALLD, CD.S, STE.S2S). Arm's recommendation (3.12).
    Configurable,
    /// 0b01: terminate model only; CD.S, STE.S2S and STE.S1STALLD are
    /// ILLEGAL when set, CMD_RESUME and CMD_STALL_TERM are CERROR_ILL.
    Terminate,
    /// 0b10: stall model forced; CD.S = 0, STE.S2S = 0 (with stage 2) and
    /// STE.S1STALLD = 1 are ILLEGAL.
    Force,
}

impl StallModel {
    /// The IDR0.STALL_MODEL encoding.
    pub const fn encoding(self) -> u32 {
        match self {
            StallModel::Configurable => 0b00,
            StallModel::Terminate => 0b01,
            StallModel::Force => 0b10,
        }
    }

    /// True when transactions can stall at all.
    pub const fn stalls(self) -> bool {
        !matches!(self, StallModel::Terminate)
    }
}

/// Largest `max-stalls` a configuration may ask for.
pub const MAX_STALLS_LIMIT: u32 = 4096;

/// An SMMUv3 instance's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmmuConfig {
    /// Guest-physical base of the 128 KiB register frame (IORT/DT only).
    pub base: u64,
    /// Stages implemented.
    pub stages: Stages,
    /// StreamID width (IDR1.SIDSIZE), 1..=32.
    pub sid_bits: u8,
    /// SubstreamID width (IDR1.SSIDSIZE), 0..=20.
    pub ssid_bits: u8,
    /// Output address size in bits (IDR5.OAS): 32, 36, 40, 42, 44 or 48.
    pub oas_bits: u8,
    /// 4K granule (IDR5.GRAN4K).
    pub gran4k: bool,
    /// 16K granule (IDR5.GRAN16K).
    pub gran16k: bool,
    /// 64K granule (IDR5.GRAN64K).
    pub gran64k: bool,
    /// ATS (IDR0.ATS).
    pub ats: bool,
    /// PRI and the PRI queue (IDR0.PRI).
    pub pri: bool,
    /// MSIs (IDR0.MSI).
    pub msi: bool,
    /// Two-level stream tables (IDR0.ST_LEVEL = 1).
    pub st_2lvl: bool,
    /// Two-level CD tables (IDR0.CD2L).
    pub cd_2lvl: bool,
    /// Range invalidation (IDR3.RIL).
    pub ril: bool,
    /// EL2 StreamWorld and TLBI_EL2_* (IDR0.HYP).
    pub hyp: bool,
    /// 16-bit ASIDs (IDR0.ASID16).
    pub asid16: bool,
    /// 16-bit VMIDs (IDR0.VMID16).
    pub vmid16: bool,
    /// Coherent table and queue access (IDR0.COHACC).
    pub coherent: bool,
    /// Fault models (IDR0.STALL_MODEL).
    pub stall_model: StallModel,
    /// Transactions that can be stalled at once (3.12.2.3: an
    /// IMPLEMENTATION SPECIFIC number); a stall-configured fault beyond it
    /// is terminated with an abort and reported with Stall = 0 (3.12).
    pub max_stalls: u32,
    /// log2 of the largest command queue (IDR1.CMDQS), at most 19.
    pub cmdq_log2: u8,
    /// log2 of the largest event queue (IDR1.EVTQS), at most 19.
    pub evtq_log2: u8,
    /// log2 of the largest PRI queue (IDR1.PRIQS), at most 19.
    pub priq_log2: u8,
    /// TLB geometry.
    pub tlb: CacheConfig,
    /// STE (configuration) cache geometry.
    pub ste_cache: CacheConfig,
    /// CD cache geometry.
    pub cd_cache: CacheConfig,
    /// Latencies for the cycle model.
    pub latencies: Latencies,
    /// GSIV of the event-queue wired interrupt (IORT/DT; 0 = MSI only).
    pub event_gsiv: u32,
    /// GSIV of the PRI-queue wired interrupt.
    pub pri_gsiv: u32,
    /// GSIV of the global-error wired interrupt.
    pub gerr_gsiv: u32,
    /// GSIV of the CMD_SYNC wired interrupt.
    pub sync_gsiv: u32,
}

impl Default for SmmuConfig {
    fn default() -> Self {
        SmmuConfig {
            base: 0x0900_0000,
            stages: Stages::Nested,
            sid_bits: 16,
            ssid_bits: 20,
            oas_bits: 48,
            gran4k: true,
            gran16k: true,
            gran64k: true,
            ats: true,
            pri: true,
            msi: true,
            st_2lvl: true,
            cd_2lvl: true,
            ril: true,
            hyp: false,
            asid16: true,
            vmid16: true,
            coherent: true,
            stall_model: StallModel::Configurable,
            max_stalls: 64,
            cmdq_log2: 19,
            evtq_log2: 19,
            priq_log2: 19,
            tlb: CacheConfig::new(64, 8),
            ste_cache: CacheConfig::new(16, 4),
            cd_cache: CacheConfig::new(16, 4),
            latencies: Latencies::default(),
            event_gsiv: 0,
            pri_gsiv: 0,
            gerr_gsiv: 0,
            sync_gsiv: 0,
        }
    }
}

/// Every property [`SmmuConfig::parse_props`] accepts, with its meaning.
pub const PROPERTIES: &[(&str, &str)] = &[
    ("base", "register frame base address (IORT/DT)"),
    ("stage", "1, 2 or nested: stages implemented (IDR0.S1P/S2P)"),
    ("sid-bits", "StreamID bits (IDR1.SIDSIZE), 1-32"),
    ("ssid-bits", "SubstreamID bits (IDR1.SSIDSIZE), 0-20"),
    (
        "oas",
        "output address bits (IDR5.OAS): 32, 36, 40, 42, 44, 48",
    ),
    ("gran4k", "on/off: 4K granule (IDR5.GRAN4K)"),
    ("gran16k", "on/off: 16K granule (IDR5.GRAN16K)"),
    ("gran64k", "on/off: 64K granule (IDR5.GRAN64K)"),
    ("ats", "on/off: ATS (IDR0.ATS)"),
    ("pri", "on/off: PRI and the PRI queue (IDR0.PRI)"),
    ("msi", "on/off: MSIs (IDR0.MSI)"),
    ("st-2lvl", "on/off: two-level stream tables (IDR0.ST_LEVEL)"),
    ("cd-2lvl", "on/off: two-level CD tables (IDR0.CD2L)"),
    ("ril", "on/off: range invalidation (IDR3.RIL)"),
    ("hyp", "on/off: EL2 StreamWorld and TLBI_EL2_* (IDR0.HYP)"),
    ("asid16", "on/off: 16-bit ASIDs (IDR0.ASID16)"),
    ("vmid16", "on/off: 16-bit VMIDs (IDR0.VMID16)"),
    ("coherent", "on/off: coherent access (IDR0.COHACC)"),
    (
        "stall-model",
        "fault models (IDR0.STALL_MODEL): configurable (0), terminate (1), force (2)",
    ),
    (
        "max-stalls",
        "transactions that can be stalled at once, 0-4096 (beyond: terminated, counted)",
    ),
    (
        "cmdqs",
        "log2 of the largest command queue (IDR1.CMDQS), 0-19",
    ),
    (
        "evtqs",
        "log2 of the largest event queue (IDR1.EVTQS), 0-19",
    ),
    ("priqs", "log2 of the largest PRI queue (IDR1.PRIQS), 0-19"),
    ("tlb-sets", "TLB sets"),
    ("tlb-ways", "TLB ways"),
    ("tlb-policy", "TLB replacement: lru, plru, fifo, random"),
    ("ste-cache-sets", "STE cache sets"),
    ("ste-cache-ways", "STE cache ways"),
    ("cd-cache-sets", "CD cache sets"),
    ("cd-cache-ways", "CD cache ways"),
    (
        "timing.<name>",
        "a latency of the cycle model (see Latencies::TABLE)",
    ),
];

fn bad(key: &str, value: &str, why: &str) -> Error {
    Error::Property {
        key: key.to_string(),
        value: value.to_string(),
        why: why.to_string(),
    }
}

fn onoff(key: &str, v: &str) -> Result<bool, Error> {
    match v {
        "on" | "true" | "1" | "yes" => Ok(true),
        "off" | "false" | "0" | "no" => Ok(false),
        _ => Err(bad(key, v, "expected on or off")),
    }
}

fn number<T: TryFrom<u64>>(key: &str, v: &str, lo: u64, hi: u64) -> Result<T, Error> {
    let n = if let Some(h) = v.strip_prefix("0x") {
        u64::from_str_radix(h, 16)
    } else {
        v.parse::<u64>()
    }
    .map_err(|_| bad(key, v, "expected a number"))?;
    if n < lo || n > hi {
        return Err(bad(key, v, &format!("expected {lo}..={hi}")));
    }
    T::try_from(n).map_err(|_| bad(key, v, "out of range"))
}

impl SmmuConfig {
    /// Apply a QEMU-like property list `key=value,key=value` (see
    /// [`PROPERTIES`]) to the defaults.
    pub fn parse_props(props: &str) -> Result<Self, Error> {
        let mut c = SmmuConfig::default();
        for item in props.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| bad(item, "", "expected key=value"))?;
            c.set(k.trim(), v.trim())?;
        }
        c.validate()?;
        Ok(c)
    }

    /// Set one property.
    pub fn set(&mut self, k: &str, v: &str) -> Result<(), Error> {
        const MAXC: u64 = CacheConfig::MAX_ENTRIES as u64;
        match k {
            "base" => self.base = number(k, v, 0, u64::MAX)?,
            "stage" => {
                self.stages = match v {
                    "1" => Stages::S1,
                    "2" => Stages::S2,
                    "nested" | "both" => Stages::Nested,
                    _ => return Err(bad(k, v, "expected 1, 2 or nested")),
                }
            }
            "sid-bits" => self.sid_bits = number(k, v, 1, 32)?,
            "ssid-bits" => self.ssid_bits = number(k, v, 0, 20)?,
            "oas" => {
                self.oas_bits = number(k, v, 32, 48)?;
                if oas_encoding(self.oas_bits).is_none() {
                    return Err(bad(k, v, "expected 32, 36, 40, 42, 44 or 48"));
                }
            }
            "gran4k" => self.gran4k = onoff(k, v)?,
            "gran16k" => self.gran16k = onoff(k, v)?,
            "gran64k" => self.gran64k = onoff(k, v)?,
            "ats" => self.ats = onoff(k, v)?,
            "pri" => self.pri = onoff(k, v)?,
            "msi" => self.msi = onoff(k, v)?,
            "st-2lvl" => self.st_2lvl = onoff(k, v)?,
            "cd-2lvl" => self.cd_2lvl = onoff(k, v)?,
            "ril" => self.ril = onoff(k, v)?,
            "hyp" => self.hyp = onoff(k, v)?,
            "asid16" => self.asid16 = onoff(k, v)?,
            "vmid16" => self.vmid16 = onoff(k, v)?,
            "coherent" => self.coherent = onoff(k, v)?,
            "stall-model" => {
                self.stall_model = match v {
                    "configurable" | "both" | "0" => StallModel::Configurable,
                    "terminate" | "1" => StallModel::Terminate,
                    "force" | "stall" | "2" => StallModel::Force,
                    _ => return Err(bad(k, v, "expected configurable, terminate or force")),
                }
            }
            "max-stalls" => self.max_stalls = number(k, v, 0, u64::from(MAX_STALLS_LIMIT))?,
            "cmdqs" => self.cmdq_log2 = number(k, v, 0, 19)?,
            "evtqs" => self.evtq_log2 = number(k, v, 0, 19)?,
            "priqs" => self.priq_log2 = number(k, v, 0, 19)?,
            "tlb-sets" => self.tlb.sets = number(k, v, 0, MAXC)?,
            "tlb-ways" => self.tlb.ways = number(k, v, 0, MAXC)?,
            "tlb-policy" => {
                self.tlb.policy = v.parse::<ReplacementPolicy>().map_err(|e| bad(k, v, &e))?;
            }
            "ste-cache-sets" => self.ste_cache.sets = number(k, v, 0, MAXC)?,
            "ste-cache-ways" => self.ste_cache.ways = number(k, v, 0, MAXC)?,
            "cd-cache-sets" => self.cd_cache.sets = number(k, v, 0, MAXC)?,
            "cd-cache-ways" => self.cd_cache.ways = number(k, v, 0, MAXC)?,
            _ => {
                if let Some(name) = k.strip_prefix("timing.") {
                    let n = number(k, v, 0, u64::from(u32::MAX))?;
                    self.latencies.set(name, n).map_err(|e| bad(k, v, &e))?;
                } else {
                    let known: Vec<&str> = PROPERTIES.iter().map(|p| p.0).collect();
                    return Err(bad(
                        k,
                        v,
                        &format!("unknown property; valid: {}", known.join(", ")),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Check cross-property rules.
    pub fn validate(&self) -> Result<(), Error> {
        if !(self.gran4k || self.gran16k || self.gran64k) {
            return Err(bad("gran4k", "off", "at least one granule is needed"));
        }
        if self.pri && !self.ats {
            return Err(bad("pri", "on", "PRI needs ATS"));
        }
        if oas_encoding(self.oas_bits).is_none() {
            return Err(bad("oas", &self.oas_bits.to_string(), "unsupported"));
        }
        if self.max_stalls > MAX_STALLS_LIMIT {
            return Err(bad("max-stalls", &self.max_stalls.to_string(), "too large"));
        }
        for (name, c) in [
            ("tlb", self.tlb),
            ("ste-cache", self.ste_cache),
            ("cd-cache", self.cd_cache),
        ] {
            if c.sets
                .checked_mul(c.ways)
                .is_none_or(|n| n > CacheConfig::MAX_ENTRIES)
            {
                return Err(bad(name, &format!("{}x{}", c.sets, c.ways), "too large"));
            }
        }
        Ok(())
    }

    /// Stage 1 implemented.
    pub fn s1(&self) -> bool {
        matches!(self.stages, Stages::S1 | Stages::Nested)
    }

    /// Stage 2 implemented.
    pub fn s2(&self) -> bool {
        matches!(self.stages, Stages::S2 | Stages::Nested)
    }

    /// SMMU_IDR0 (IHI 0070 6.3.1).
    pub fn idr0(&self) -> u32 {
        let mut v = 0u32;
        let bit = |b: bool, n: u32| if b { 1u32 << n } else { 0 };
        v |= bit(self.s2(), 0) | bit(self.s1(), 1);
        v |= 2 << 2; // TTF: AArch64 tables only
        v |= bit(self.coherent, 4);
        v |= bit(self.hyp, 9) | bit(self.ats, 10) | bit(self.asid16, 12);
        v |= bit(self.msi, 13) | (1 << 14); // SEV
        v |= bit(self.pri, 16) | bit(self.vmid16, 18) | bit(self.cd_2lvl, 19);
        v |= 2 << 21; // TTENDIAN: little-endian only
        v |= self.stall_model.encoding() << 24; // STALL_MODEL
        v |= 1 << 26; // TERM_MODEL: aborted transactions are always aborted
        v |= bit(self.st_2lvl, 27); // ST_LEVEL
        v
    }

    /// SMMU_IDR1 (IHI 0070 6.3.2).
    pub fn idr1(&self) -> u32 {
        u32::from(self.sid_bits & 0x3f)
            | (u32::from(self.ssid_bits & 0x1f) << 6)
            | (u32::from(if self.pri { self.priq_log2 } else { 0 } & 0x1f) << 11)
            | (u32::from(self.evtq_log2 & 0x1f) << 16)
            | (u32::from(self.cmdq_log2 & 0x1f) << 21)
    }

    /// SMMU_IDR3 (IHI 0070 6.3.4).
    pub fn idr3(&self) -> u32 {
        if self.ril { 1 << 10 } else { 0 }
    }

    /// SMMU_IDR5 (IHI 0070 6.3.6).
    pub fn idr5(&self) -> u32 {
        let bit = |b: bool, n: u32| if b { 1u32 << n } else { 0 };
        u32::from(oas_encoding(self.oas_bits).unwrap_or(5))
            | bit(self.gran4k, 4)
            | bit(self.gran16k, 5)
            | bit(self.gran64k, 6)
    }
}

/// IDR5.OAS / CD.IPS / STE.S2PS encoding of an address size (IHI 0070
/// 6.3.6).
pub fn oas_encoding(bits: u8) -> Option<u8> {
    match bits {
        32 => Some(0),
        36 => Some(1),
        40 => Some(2),
        42 => Some(3),
        44 => Some(4),
        48 => Some(5),
        _ => None,
    }
}

/// The address size of an IPS/S2PS/OAS encoding; `None` for encodings above
/// 48 bits (52-bit addresses are not modelled).
pub fn ps_bits(enc: u64) -> Option<u8> {
    match enc {
        0 => Some(32),
        1 => Some(36),
        2 => Some(40),
        3 => Some(42),
        4 => Some(44),
        5 => Some(48),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn props_parse_sets_fields_and_idrs() {
        let c = SmmuConfig::parse_props("stage=1,ssid-bits=8,oas=40,gran16k=off,ats=off,pri=off,tlb-sets=4,tlb-ways=2,timing.mem_read=7")
            .unwrap();
        assert_eq!(c.idr0() & 3, 2);
        assert_eq!(c.idr0() & (1 << 10), 0);
        assert_eq!((c.idr1() >> 6) & 0x1f, 8);
        assert_eq!(c.idr5() & 7, 2);
        assert_eq!(c.idr5() & (1 << 5), 0);
        assert_eq!(c.tlb.entries(), 8);
        assert_eq!(c.latencies.mem_read, 7);
    }

    // IHI 0070 6.3.1: IDR0.STALL_MODEL comes from `stall-model`.
    #[test]
    fn props_stall_model_sets_idr0_field() {
        let field = |p: &str| (SmmuConfig::parse_props(p).unwrap().idr0() >> 24) & 3;
        assert_eq!(field(""), 0b00);
        assert_eq!(field("stall-model=terminate"), 0b01);
        assert_eq!(field("stall-model=force"), 0b10);
        assert!(SmmuConfig::parse_props("stall-model=maybe").is_err());
        assert!(SmmuConfig::parse_props("max-stalls=5000").is_err());
        assert_eq!(
            SmmuConfig::parse_props("max-stalls=3").unwrap().max_stalls,
            3
        );
    }

    #[test]
    fn props_unknown_key_lists_valid_ones() {
        let e = SmmuConfig::parse_props("bogus=1").unwrap_err().to_string();
        assert!(e.contains("ssid-bits"), "{e}");
        assert!(SmmuConfig::parse_props("oas=41").is_err());
        assert!(SmmuConfig::parse_props("pri=on,ats=off").is_err());
        assert!(SmmuConfig::parse_props("gran4k=off,gran16k=off,gran64k=off").is_err());
    }

    // IHI 0070 6.3.1: defaults advertise what Linux needs for SVA-style use.
    #[test]
    fn props_default_idr0_has_two_level_tables_and_aarch64() {
        let c = SmmuConfig::default();
        let i = c.idr0();
        assert_eq!((i >> 27) & 3, 1);
        assert_ne!(i & (1 << 19), 0);
        assert_eq!((i >> 2) & 3, 2);
        assert_eq!((i >> 21) & 3, 2);
    }
}
