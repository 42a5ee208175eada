//! Context Descriptors (IHI 0070 5.4) and level-1 CD table descriptors
//! (5.3).

use iommu_emulator::walk::vmsa::{Granule, Stage, WalkConfig};

use super::Caps;
use crate::StallModel;
use crate::props::ps_bits;
use crate::regs::field;

/// Size of a CD in bytes.
pub const CD_BYTES: u64 = 64;

/// A level-1 CD descriptor (5.3.1): V and L2Ptr\[51:12\].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L1Cd {
    /// V.
    pub valid: bool,
    /// L2Ptr.
    pub l2ptr: u64,
}

impl L1Cd {
    /// Decode the 64-bit descriptor.
    pub fn decode(d: u64) -> Self {
        L1Cd {
            valid: d & 1 != 0,
            l2ptr: d & (((1u64 << 52) - 1) & !0xfff),
        }
    }
}

/// A decoded, validated CD.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cd {
    /// The stage-1 walk (TTB0, T0SZ, TG0, IPS, AFFD); `None` when EPD0 = 1
    /// (every walk through TTB0 is a Translation fault).
    pub walk: Option<WalkConfig>,
    /// ASID.
    pub asid: u16,
    /// R: record faults of this context.
    pub record: bool,
    /// A: abort (rather than RAZ/WI) faulting transactions. Both end the
    /// transaction with an error for the device in this model.
    pub abort: bool,
    /// S: stage-1 translation-related faults stall (5.5).
    pub stall: bool,
}

/// Why a CD is ILLEGAL (C_BAD_CD, 7.3.11).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CdError {
    /// CD.V = 0.
    #[error("CD not valid")]
    NotValid,
    /// AA64 = 0: AArch32 tables are not implemented (IDR0.TTF = AArch64).
    #[error("AArch32 CD")]
    NotAa64,
    /// ENDI = 1: only little-endian tables (IDR0.TTENDIAN).
    #[error("big-endian tables")]
    BigEndian,
    /// TG0 reserved or granule not implemented.
    #[error("TG0 {0} not supported")]
    BadGranule(u64),
    /// T0SZ out of range.
    #[error("T0SZ {0} out of range")]
    BadT0sz(u64),
    /// S (the value given) not allowed by IDR0.STALL_MODEL or STE.S1STALLD
    /// (5.5).
    #[error("S = {0} not allowed (IDR0.STALL_MODEL, STE.S1STALLD)")]
    Stall(bool),
    /// A = 0 with IDR0.TERM_MODEL = 1 (5.4.2).
    #[error("A = 0 with TERM_MODEL = 1")]
    NoAbort,
    /// HA or HD set without HTTU.
    #[error("HA/HD without HTTU")]
    Httu,
    /// ASID\[15:8\] non-zero with 8-bit ASIDs.
    #[error("ASID {0:#x} needs 16-bit ASIDs")]
    WideAsid(u64),
    /// TTB0 outside the effective IPS.
    #[error("TTB0 {0:#x} outside IPS")]
    TtbOutOfRange(u64),
}

fn bit(v: u64, n: u32) -> bool {
    field(v, n, 1) != 0
}

impl Cd {
    /// Decode and validate the eight words of a CD (5.4) reached through
    /// an STE whose S1STALLD is `s1stalld`.
    pub fn decode(w: &[u64; 8], caps: &Caps, s1stalld: bool) -> Result<Cd, CdError> {
        let [w0, w1, ..] = *w;
        if !bit(w0, 31) {
            return Err(CdError::NotValid);
        }
        if !bit(w0, 41) {
            return Err(CdError::NotAa64);
        }
        if bit(w0, 15) {
            return Err(CdError::BigEndian);
        }
        // 5.5: CD.S = 1 is ILLEGAL without stalls (STALL_MODEL 0b01) or
        // through an STE with S1STALLD = 1; CD.S = 0 is ILLEGAL when stalls
        // are forced (0b10).
        let stall = bit(w0, 44);
        let illegal = match caps.stall_model {
            StallModel::Configurable => stall && s1stalld,
            StallModel::Terminate => stall,
            StallModel::Force => !stall,
        };
        if illegal {
            return Err(CdError::Stall(stall));
        }
        // 5.4.2: TERM_MODEL = 1 makes A = 0 ILLEGAL; HTTU = 0 makes HA/HD
        // ILLEGAL; 8-bit ASIDs make ASID[15:8] != 0 ILLEGAL.
        if !bit(w0, 46) {
            return Err(CdError::NoAbort);
        }
        if bit(w0, 42) || bit(w0, 43) {
            return Err(CdError::Httu);
        }
        let asid_raw = field(w0, 48, 16);
        if !caps.asid16 && asid_raw > 0xff {
            return Err(CdError::WideAsid(asid_raw));
        }
        let asid = u16::try_from(asid_raw).unwrap_or(0);
        let epd0 = bit(w0, 14);
        let walk = if epd0 {
            None
        } else {
            let tg = field(w0, 6, 2);
            let granule = Granule::from_tg0(tg)
                .filter(|g| caps.granule_ok(*g))
                .ok_or(CdError::BadGranule(tg))?;
            let tsz = field(w0, 0, 6);
            if !(16..=39).contains(&tsz) {
                return Err(CdError::BadT0sz(tsz));
            }
            // 5.4 IPS: values above the OAS behave as the OAS.
            let ips = ps_bits(field(w0, 32, 3))
                .unwrap_or(caps.oas_bits)
                .min(caps.oas_bits);
            // 5.4 TTB0: ILLEGAL outside the effective IPS.
            let ttb = w1 & (((1u64 << 52) - 1) & !0xf);
            if ttb >> ips != 0 {
                return Err(CdError::TtbOutOfRange(ttb));
            }
            Some(WalkConfig {
                stage: Stage::One,
                granule,
                tsz: u8::try_from(tsz).unwrap_or(0),
                sl0: 0,
                oas_bits: ips,
                ttb,
                affd: bit(w0, 35),
            })
        };
        Ok(Cd {
            walk,
            asid,
            record: bit(w0, 45),
            abort: bit(w0, 46),
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

    fn linux_cd(asid: u64, ttb: u64) -> [u64; 8] {
        // T0SZ 16, TG0 4K, IRGN/ORGN WBWA, SH inner, EPD1, IPS 48, AA64,
        // R, A, ASET, ASID, V.
        let w0 = 16
            | (1 << 8)
            | (1 << 10)
            | (3 << 12)
            | (1 << 30)
            | (1 << 31)
            | (5 << 32)
            | (1 << 41)
            | (1 << 45)
            | (1 << 46)
            | (1 << 47)
            | (asid << 48);
        [w0, ttb, 0, 0, 0, 0, 0, 0]
    }

    #[test]
    fn cd_linux_shape_decodes() {
        let cd = Cd::decode(&linux_cd(0x42, 0x1234_5000), &caps(), false).unwrap();
        let w = cd.walk.unwrap();
        assert_eq!(
            (cd.asid, w.ttb, w.tsz, w.oas_bits),
            (0x42, 0x1234_5000, 16, 48)
        );
        assert_eq!(w.granule, Granule::G4K);
        assert!(cd.record && cd.abort);
    }

    // 5.4: V = 0 is C_BAD_CD.
    #[test]
    fn cd_invalid_is_rejected() {
        let mut w = linux_cd(1, 0);
        w[0] &= !(1 << 31);
        assert_eq!(Cd::decode(&w, &caps(), false), Err(CdError::NotValid));
    }

    #[test]
    fn cd_bad_fields_are_rejected() {
        let mut w = linux_cd(1, 0);
        w[0] = (w[0] & !0x3f) | 8;
        assert_eq!(Cd::decode(&w, &caps(), false), Err(CdError::BadT0sz(8)));
        let mut w = linux_cd(1, 0);
        w[0] |= 3 << 6;
        assert_eq!(Cd::decode(&w, &caps(), false), Err(CdError::BadGranule(3)));
        let mut w = linux_cd(1, 0);
        w[0] &= !(1 << 41);
        assert_eq!(Cd::decode(&w, &caps(), false), Err(CdError::NotAa64));
        let c = Caps {
            granules: [true, false, false],
            ..caps()
        };
        let mut w = linux_cd(1, 0);
        w[0] |= 1 << 6; // 64K
        assert_eq!(Cd::decode(&w, &c, false), Err(CdError::BadGranule(1)));
    }

    // 5.4.2: A = 0 (TERM_MODEL = 1), HA/HD (no HTTU), wide ASIDs and a
    // TTB0 beyond IPS are ILLEGAL.
    #[test]
    fn cd_illegal_combinations_are_rejected() {
        let mut w = linux_cd(1, 0);
        w[0] &= !(1 << 46);
        assert_eq!(Cd::decode(&w, &caps(), false), Err(CdError::NoAbort));
        let mut w = linux_cd(1, 0);
        w[0] |= 1 << 43;
        assert_eq!(Cd::decode(&w, &caps(), false), Err(CdError::Httu));
        let c = Caps {
            asid16: false,
            ..caps()
        };
        assert_eq!(
            Cd::decode(&linux_cd(0x100, 0), &c, false),
            Err(CdError::WideAsid(0x100))
        );
        let mut w = linux_cd(1, 1 << 40);
        w[0] = (w[0] & !(7 << 32)) | (2 << 32); // IPS 40 bits
        assert_eq!(
            Cd::decode(&w, &caps(), false),
            Err(CdError::TtbOutOfRange(1 << 40))
        );
    }

    // 5.5: CD.S legality per IDR0.STALL_MODEL and STE.S1STALLD.
    #[test]
    fn cd_s_legality_follows_stall_model_and_s1stalld() {
        let with = |m| Caps {
            stall_model: m,
            ..caps()
        };
        let mut s = linux_cd(1, 0);
        s[0] |= 1 << 44;
        let ns = linux_cd(1, 0);
        let conf = with(StallModel::Configurable);
        assert!(Cd::decode(&s, &conf, false).unwrap().stall);
        assert_eq!(Cd::decode(&s, &conf, true), Err(CdError::Stall(true)));
        assert!(!Cd::decode(&ns, &conf, true).unwrap().stall);
        let term = with(StallModel::Terminate);
        assert_eq!(Cd::decode(&s, &term, false), Err(CdError::Stall(true)));
        let force = with(StallModel::Force);
        assert_eq!(Cd::decode(&ns, &force, false), Err(CdError::Stall(false)));
        assert!(Cd::decode(&s, &force, false).unwrap().stall);
    }

    #[test]
    fn cd_epd0_disables_walks_and_ips_is_clamped() {
        let mut w = linux_cd(1, 0);
        w[0] |= 1 << 14;
        assert_eq!(Cd::decode(&w, &caps(), false).unwrap().walk, None);
        let c = Caps {
            oas_bits: 40,
            ..caps()
        };
        let cd = Cd::decode(&linux_cd(1, 0), &c, false).unwrap();
        assert_eq!(cd.walk.unwrap().oas_bits, 40);
    }
}
