//! Stream Table Entries (IHI 0070 5.2) and level-1 stream table
//! descriptors (5.1).

use iommu_emulator::walk::vmsa::{Granule, Stage, WalkConfig};

use super::Caps;
use crate::StallModel;
use crate::props::ps_bits;
use crate::regs::field;

/// Size of an STE in bytes.
pub const STE_BYTES: u64 = 64;

/// A level-1 stream table descriptor (5.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L1Std {
    /// SPAN\[4:0\]: the level-2 table holds `2^(SPAN-1)` STEs; 0 = invalid.
    pub span: u8,
    /// L2Ptr\[51:6\].
    pub l2ptr: u64,
}

impl L1Std {
    /// Decode the 64-bit descriptor.
    pub fn decode(d: u64) -> Self {
        L1Std {
            span: u8::try_from(field(d, 0, 5)).unwrap_or(0),
            l2ptr: d & (((1u64 << 52) - 1) & !0x3f),
        }
    }
}

/// STE.S1DSS (5.2): what a stage-1 stream does with transactions that
/// carry no SubstreamID when substreams are enabled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum S1Dss {
    /// 0b00: terminate with F_STREAM_DISABLED.
    Terminate,
    /// 0b01: bypass stage 1 (stage 2 still applies).
    Bypass,
    /// 0b10: use CD 0; transactions with SubstreamID 0 are then illegal.
    Substream0,
}

/// STE.S1FMT (5.2): the CD table format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CdFmt {
    /// 0b00: a linear array of `2^S1CDMAX` CDs.
    Linear,
    /// 0b01: two levels, 4 KiB level-2 tables of 64 CDs.
    TwoLevel4K,
    /// 0b10: two levels, 64 KiB level-2 tables of 1024 CDs.
    TwoLevel64K,
}

impl CdFmt {
    /// log2 of the number of CDs in a level-2 table (the SSID split).
    pub fn split(self) -> u32 {
        match self {
            CdFmt::Linear => 0,
            CdFmt::TwoLevel4K => 6,
            CdFmt::TwoLevel64K => 10,
        }
    }
}

/// STE.EATS (5.2): how ATS is allowed for the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Eats {
    /// 0b00: ATS translation requests and translated transactions abort.
    Abort,
    /// 0b01: full ATS.
    Full,
    /// 0b10: split-stage ATS (stage-1 only answers, stage 2 checks
    /// translated transactions).
    S1Chk,
}

/// STE.STRW (5.2): the StreamWorld whose TLB tags the stream uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StreamWorld {
    /// 0b00: NS-EL1 (VMID/ASID tagged).
    NsEl1,
    /// 0b10: EL2 (ASID tagged, no VMID), needs IDR0.HYP.
    El2,
}

/// Stage-1 part of an STE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct S1Ste {
    /// S1ContextPtr\[51:6\] (an IPA when stage 2 is also enabled).
    pub ctx_ptr: u64,
    /// S1FMT.
    pub fmt: CdFmt,
    /// S1CDMAX: log2 of the number of CDs; 0 = substreams disabled.
    pub cdmax: u8,
    /// S1DSS.
    pub dss: S1Dss,
    /// S1STALLD: stage-1 stalls disallowed for this stream.
    pub stalld: bool,
}

/// Stage-2 part of an STE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct S2Ste {
    /// The walk configuration (S2T0SZ, S2SL0, S2TG, S2PS, S2TTB, S2AFFD).
    pub walk: WalkConfig,
    /// S2R: record stage-2 faults.
    pub record: bool,
    /// S2S: stage-2 translation-related faults stall (5.5).
    pub stall: bool,
}

/// What the STE does with the stream's transactions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SteConfig {
    /// Config = 0b000: abort, no event (5.2).
    Abort,
    /// Config = 0b100: bypass both stages.
    Bypass,
    /// Config = 0b1x1 / 0b11x: translate by the enabled stages.
    Translate {
        /// Stage 1, when enabled.
        s1: Option<S1Ste>,
        /// Stage 2, when enabled.
        s2: Option<S2Ste>,
    },
}

/// A decoded, validated STE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ste {
    /// Configuration.
    pub config: SteConfig,
    /// EATS.
    pub eats: Eats,
    /// STRW.
    pub strw: StreamWorld,
    /// S2VMID (tags stage-1-only TLB entries too when stage 2 exists).
    pub vmid: u16,
    /// PRIVCFG\[49:48\]: 0b0x use incoming, 0b10 unprivileged, 0b11 privileged.
    pub privcfg: u8,
    /// INSTCFG\[51:50\]: 0b0x use incoming, 0b10 data, 0b11 instruction.
    pub instcfg: u8,
    /// PPAR (bit 82): automatic PRI responses carry the PASID (8.1).
    pub ppar: bool,
}

/// Why an STE is ILLEGAL (reported as C_BAD_STE, 7.3.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SteError {
    /// STE.V = 0.
    #[error("STE not valid")]
    NotValid,
    /// The configuration enables a stage the SMMU does not implement.
    #[error("stage {0} not implemented")]
    StageNotImplemented(u8),
    /// S1FMT reserved or two-level without IDR0.CD2L.
    #[error("bad S1FMT {0}")]
    BadS1Fmt(u64),
    /// S1CDMAX above IDR1.SSIDSIZE.
    #[error("S1CDMAX {0} above SSIDSIZE")]
    BadS1CdMax(u64),
    /// S2VMID\[15:8\] non-zero with 8-bit VMIDs.
    #[error("S2VMID {0:#x} needs 16-bit VMIDs")]
    BadVmid(u64),
    /// EATS = 0b10 (split-stage) without nesting.
    #[error("bad EATS {0}")]
    BadEats(u64),
    /// STRW = 0bx1 (reserved) with IDR0.HYP.
    #[error("bad STRW {0}")]
    BadStrw(u64),
    /// A stage-2 field is invalid (AArch32, big-endian, granule, size).
    #[error("bad stage-2 configuration: {0}")]
    BadS2(&'static str),
    /// S1STALLD = 1 but the stall model is not configurable (5.5).
    #[error("S1STALLD = 1 with IDR0.STALL_MODEL != 0b00")]
    S1Stalld,
    /// S2S (the value given) not allowed by IDR0.STALL_MODEL (5.5).
    #[error("S2S = {0} not allowed by IDR0.STALL_MODEL")]
    S2Stall(bool),
}

fn bit(v: u64, n: u32) -> bool {
    field(v, n, 1) != 0
}

impl Ste {
    /// Decode and validate the eight words of an STE (5.2, 5.2.2
    /// SteIllegal()). Fields the spec says are IGNORED for the
    /// configuration are not checked.
    pub fn decode(w: &[u64; 8], caps: &Caps) -> Result<Ste, SteError> {
        let [w0, w1, w2, w3, ..] = *w;
        if !bit(w0, 0) {
            return Err(SteError::NotValid);
        }
        let cfg = field(w0, 1, 3);
        let (s1_en, s2_en) = match cfg {
            // 5.2 Config: 0b0xx other than 0b000 are reserved and behave
            // as 0b000 (abort, no event).
            0b000..=0b011 => {
                return Ok(Ste {
                    config: SteConfig::Abort,
                    eats: Eats::Abort,
                    strw: StreamWorld::NsEl1,
                    vmid: 0,
                    privcfg: 0,
                    instcfg: 0,
                    ppar: bit(w1, 18),
                });
            }
            0b100 => (false, false),
            0b101 => (true, false),
            0b110 => (false, true),
            _ => (true, true),
        };
        if s1_en && !caps.s1 {
            return Err(SteError::StageNotImplemented(1));
        }
        if s2_en && !caps.s2 {
            return Err(SteError::StageNotImplemented(2));
        }
        // STRW: RES0 without IDR0.HYP, IGNORED (NS-EL1) with stage 2 or
        // without stage 1; 0bx1 is ILLEGAL.
        let strw = if !caps.hyp || s2_en || !s1_en {
            StreamWorld::NsEl1
        } else {
            match field(w1, 30, 2) {
                0 => StreamWorld::NsEl1,
                2 => StreamWorld::El2,
                other => return Err(SteError::BadStrw(other)),
            }
        };
        // EATS: IGNORED without ATS or for bypass (effective 0b00); 0b11
        // behaves as 0b00 without DPT; 0b10 needs Config = 0b111.
        let eats = if !caps.ats || !(s1_en || s2_en) {
            Eats::Abort
        } else {
            match field(w1, 28, 2) {
                1 => Eats::Full,
                2 if s1_en && s2_en => Eats::S1Chk,
                2 => return Err(SteError::BadEats(2)),
                _ => Eats::Abort,
            }
        };
        // S2VMID tags only NS-EL1 translations with stage 2 implemented;
        // its top byte must be 0 with 8-bit VMIDs.
        let vmid_used = caps.s2 && (s1_en || s2_en) && strw == StreamWorld::NsEl1;
        let vmid_raw = field(w2, 0, 16);
        if vmid_used && !caps.vmid16 && vmid_raw > 0xff {
            return Err(SteError::BadVmid(vmid_raw));
        }
        let vmid = if vmid_used {
            u16::try_from(vmid_raw).unwrap_or(0)
        } else {
            0
        };
        let privcfg = u8::try_from(field(w1, 48, 2)).unwrap_or(0);
        let instcfg = u8::try_from(field(w1, 50, 2)).unwrap_or(0);
        let config = if s1_en || s2_en {
            let s1 = if s1_en {
                Some(Self::decode_s1(w0, w1, caps)?)
            } else {
                None
            };
            let s2 = if s2_en {
                Some(Self::decode_s2(w2, w3, caps)?)
            } else {
                None
            };
            SteConfig::Translate { s1, s2 }
        } else {
            SteConfig::Bypass
        };
        Ok(Ste {
            config,
            eats,
            strw,
            vmid,
            privcfg,
            instcfg,
            ppar: bit(w1, 18),
        })
    }

    fn decode_s1(w0: u64, w1: u64, caps: &Caps) -> Result<S1Ste, SteError> {
        // 5.2 S1STALLD, 5.5: with stage 1 enabled, S1STALLD = 1 is ILLEGAL
        // unless the stall model is configurable (IDR0.STALL_MODEL = 0b00).
        let stalld = bit(w1, 27);
        if stalld && caps.stall_model != StallModel::Configurable {
            return Err(SteError::S1Stalld);
        }
        let cdmax = field(w0, 59, 5);
        if cdmax > u64::from(caps.ssid_bits) {
            return Err(SteError::BadS1CdMax(cdmax));
        }
        // S1FMT is IGNORED with S1CDMAX = 0; 0b11 behaves as 0b00; a
        // two-level format without IDR0.CD2L is ILLEGAL.
        let fmt = match (cdmax, field(w0, 4, 2)) {
            (0, _) | (_, 0) | (_, 3) => CdFmt::Linear,
            (_, f) if !caps.cd2l => return Err(SteError::BadS1Fmt(f)),
            (_, 1) => CdFmt::TwoLevel4K,
            _ => CdFmt::TwoLevel64K,
        };
        // S1DSS 0b11 behaves as 0b00.
        let dss = match field(w1, 0, 2) {
            1 => S1Dss::Bypass,
            2 => S1Dss::Substream0,
            _ => S1Dss::Terminate,
        };
        Ok(S1Ste {
            ctx_ptr: w0 & (((1u64 << 52) - 1) & !0x3f),
            fmt,
            cdmax: u8::try_from(cdmax).unwrap_or(0),
            dss,
            // With STALL_MODEL = 0b01 nothing stalls anyway; with 0b10 the
            // bit is 0 (checked above).
            stalld,
        })
    }

    fn decode_s2(w2: u64, w3: u64, caps: &Caps) -> Result<S2Ste, SteError> {
        if !bit(w2, 51) {
            return Err(SteError::BadS2("S2AA64 = 0 (AArch32 tables)"));
        }
        if bit(w2, 52) {
            return Err(SteError::BadS2("S2ENDI = 1 (big-endian tables)"));
        }
        if bit(w2, 55) || bit(w2, 56) {
            return Err(SteError::BadS2("S2HD/S2HA without HTTU"));
        }
        // 5.5: S2S = 1 is ILLEGAL without stalls (STALL_MODEL 0b01), and
        // S2S = 0 is ILLEGAL when stalls are forced (0b10).
        let stall = bit(w2, 57);
        match (caps.stall_model, stall) {
            (StallModel::Terminate, true) | (StallModel::Force, false) => {
                return Err(SteError::S2Stall(stall));
            }
            _ => {}
        }
        let granule = Granule::from_tg0(field(w2, 46, 2))
            .filter(|g| caps.granule_ok(*g))
            .ok_or(SteError::BadS2("S2TG reserved or not implemented"))?;
        // 5.2 S2PS: sizes above the OAS behave as the OAS.
        let ps = ps_bits(field(w2, 48, 3))
            .unwrap_or(caps.oas_bits)
            .min(caps.oas_bits);
        let ttb = w3 & (((1u64 << 52) - 1) & !0xf);
        // 5.2 S2TTB: ILLEGAL outside the effective S2PS.
        if ttb >> ps != 0 {
            return Err(SteError::BadS2("S2TTB outside S2PS"));
        }
        let walk = WalkConfig {
            stage: Stage::Two,
            granule,
            tsz: u8::try_from(field(w2, 32, 6)).unwrap_or(0),
            sl0: u8::try_from(field(w2, 38, 2)).unwrap_or(0),
            oas_bits: ps,
            ttb,
            affd: bit(w2, 53),
        };
        let geo = walk
            .geometry()
            .map_err(|_| SteError::BadS2("S2T0SZ/S2SL0 out of range"))?;
        // 5.2 S2T0SZ: an IPA wider than the IAS (= OAS here) is ILLEGAL.
        if geo.ia_bits > u32::from(caps.oas_bits) {
            return Err(SteError::BadS2("S2T0SZ gives an IPA wider than the OAS"));
        }
        Ok(S2Ste {
            walk,
            record: bit(w2, 58),
            stall,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SmmuConfig;

    fn caps() -> Caps {
        Caps::from_config(&SmmuConfig::default())
    }

    // IHI 0070 5.2: V=0 is C_BAD_STE.
    #[test]
    fn ste_invalid_is_rejected() {
        assert_eq!(Ste::decode(&[0; 8], &caps()), Err(SteError::NotValid));
    }

    // 5.2 Config: 0b001-0b011 are reserved and behave as abort.
    #[test]
    fn ste_reserved_config_behaves_as_abort() {
        let w = [1 | (0b010 << 1), 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(Ste::decode(&w, &caps()).unwrap().config, SteConfig::Abort);
    }

    fn caps_with(m: StallModel) -> Caps {
        Caps {
            stall_model: m,
            ..caps()
        }
    }

    // 5.2 S1STALLD / 5.5: ILLEGAL when the stall model is not
    // configurable; recorded in the STE when it is.
    #[test]
    fn ste_s1stalld_is_illegal_unless_stall_model_configurable() {
        let w = [1 | (0b101 << 1), 1 << 27, 0, 0, 0, 0, 0, 0];
        for m in [StallModel::Terminate, StallModel::Force] {
            assert_eq!(Ste::decode(&w, &caps_with(m)), Err(SteError::S1Stalld));
        }
        let s = Ste::decode(&w, &caps_with(StallModel::Configurable)).unwrap();
        let SteConfig::Translate { s1: Some(s1), .. } = s.config else {
            panic!("{s:?}")
        };
        assert!(s1.stalld);
        // Stage 1 disabled: IGNORED.
        let w = [1 | (0b110 << 1), 1 << 27, 0, 0, 0, 0, 0, 0];
        assert_ne!(
            Ste::decode(&w, &caps_with(StallModel::Terminate)),
            Err(SteError::S1Stalld)
        );
    }

    // 5.5: S2S = 1 is ILLEGAL with STALL_MODEL 0b01, S2S = 0 with 0b10.
    #[test]
    fn ste_s2s_legality_follows_stall_model() {
        let w0 = 1 | (0b110 << 1);
        let w2 = 7 | (24 << 32) | (1 << 38) | (5 << 48) | (1 << 51);
        let ste = |s2s: u64| [w0, 0, w2 | (s2s << 57), 0x8000_0000, 0, 0, 0, 0];
        assert_eq!(
            Ste::decode(&ste(1), &caps_with(StallModel::Terminate)),
            Err(SteError::S2Stall(true))
        );
        assert_eq!(
            Ste::decode(&ste(0), &caps_with(StallModel::Force)),
            Err(SteError::S2Stall(false))
        );
        let s = Ste::decode(&ste(1), &caps_with(StallModel::Configurable)).unwrap();
        let SteConfig::Translate { s2: Some(s2), .. } = s.config else {
            panic!("{s:?}")
        };
        assert!(s2.stall);
    }

    // 5.2 EATS: IGNORED without ATS and for bypass; 0b10 needs nesting.
    #[test]
    fn ste_eats_ignored_or_illegal_per_config() {
        let c = Caps {
            ats: false,
            ..caps()
        };
        let s1 = 1 | (0b101 << 1);
        assert_eq!(
            Ste::decode(&[s1, 1 << 28, 0, 0, 0, 0, 0, 0], &c)
                .unwrap()
                .eats,
            Eats::Abort
        );
        let byp = 1 | (0b100 << 1);
        assert_eq!(
            Ste::decode(&[byp, 1 << 28, 0, 0, 0, 0, 0, 0], &caps())
                .unwrap()
                .eats,
            Eats::Abort
        );
        assert_eq!(
            Ste::decode(&[s1, 2 << 28, 0, 0, 0, 0, 0, 0], &caps()),
            Err(SteError::BadEats(2))
        );
    }

    // 5.2 S2VMID: top byte must be zero with 8-bit VMIDs.
    #[test]
    fn ste_wide_vmid_is_illegal_without_vmid16() {
        let c = Caps {
            vmid16: false,
            ..caps()
        };
        let w0 = 1 | (0b110 << 1);
        let w2 = 0x100 | (24 << 32) | (1 << 38) | (5 << 48) | (1 << 51);
        assert_eq!(
            Ste::decode(&[w0, 0, w2, 0x8000_0000, 0, 0, 0, 0], &c),
            Err(SteError::BadVmid(0x100))
        );
    }

    #[test]
    fn ste_s1_decodes_ctxptr_cdmax_dss() {
        let w0 = 1 | (0b101 << 1) | (2 << 4) | 0x1234_5000 | (8 << 59);
        let w1 = 2 | (1 << 28);
        let s = Ste::decode(&[w0, w1, 0, 0, 0, 0, 0, 0], &caps()).unwrap();
        let SteConfig::Translate {
            s1: Some(s1),
            s2: None,
        } = s.config
        else {
            panic!("{s:?}")
        };
        assert_eq!(s1.ctx_ptr, 0x1234_5000);
        assert_eq!(
            (s1.fmt, s1.cdmax, s1.dss),
            (CdFmt::TwoLevel64K, 8, S1Dss::Substream0)
        );
        assert_eq!(s.eats, Eats::Full);
    }

    // 5.2 S1CDMAX above SSIDSIZE is ILLEGAL.
    #[test]
    fn ste_s1cdmax_above_ssidsize_is_rejected() {
        let c = Caps {
            ssid_bits: 4,
            ..caps()
        };
        let w0 = 1 | (0b101 << 1) | (5 << 59);
        assert_eq!(
            Ste::decode(&[w0, 0, 0, 0, 0, 0, 0, 0], &c),
            Err(SteError::BadS1CdMax(5))
        );
    }

    #[test]
    fn ste_s2_decodes_walk_config() {
        let w0 = 1 | (0b110 << 1);
        // VMID 7, T0SZ 24, SL0 1, TG 4K, PS 48-bit, AA64, S2R.
        let w2 = 7 | (24 << 32) | (1 << 38) | (5 << 48) | (1 << 51) | (1 << 58);
        let s = Ste::decode(&[w0, 0, w2, 0x8000_0000, 0, 0, 0, 0], &caps()).unwrap();
        let SteConfig::Translate {
            s1: None,
            s2: Some(s2),
        } = s.config
        else {
            panic!("{s:?}")
        };
        assert_eq!(s.vmid, 7);
        assert_eq!(s2.walk.ttb, 0x8000_0000);
        assert_eq!((s2.walk.tsz, s2.walk.sl0, s2.walk.oas_bits), (24, 1, 48));
        assert!(s2.record);
        // AArch32 stage 2 is not supported.
        let s = Ste::decode(&[w0, 0, w2 & !(1 << 51), 0, 0, 0, 0, 0], &caps());
        assert!(matches!(s, Err(SteError::BadS2(_))));
    }

    #[test]
    fn ste_stage_not_implemented_is_rejected() {
        let c = Caps {
            s2: false,
            ..caps()
        };
        let w0 = 1 | (0b110 << 1);
        assert_eq!(
            Ste::decode(&[w0, 0, 0, 0, 0, 0, 0, 0], &c),
            Err(SteError::StageNotImplemented(2))
        );
    }

    #[test]
    fn l1std_decodes_span_and_ptr() {
        let d = L1Std::decode(0x4_5678_9040 | 9);
        assert_eq!((d.span, d.l2ptr), (9, 0x4_5678_9040));
    }
}
