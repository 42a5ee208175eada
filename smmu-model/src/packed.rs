//! The stored forms of cached STEs and CDs: a decoded [`Ste`] or [`Cd`]
//! packed losslessly into whole 64-bit words.
//!
//! The core cache engine copies an entry out word by word; an entry made
//! of words is then read back with loads of the width it was stored with,
//! and unpacked in registers. (A struct of mixed-width fields is instead
//! moved with wider loads that straddle those stores, which the CPU cannot
//! forward: a stall on every translation.) Packing is a bijection on the
//! values the decoders produce, so the model behaves exactly as it would
//! with the decoded values in the cache.

use iommu_emulator::walk::vmsa::{Granule, Stage, WalkConfig};

use crate::structs::cd::Cd;
use crate::structs::ste::{CdFmt, Eats, S1Dss, S1Ste, S2Ste, Ste, SteConfig, StreamWorld};

fn byte(w: u64, i: u32) -> u8 {
    u8::try_from(w.checked_shr(i.wrapping_mul(8)).unwrap_or(0) & 0xff).unwrap_or(0)
}

fn put(v: u8, i: u32) -> u64 {
    u64::from(v).checked_shl(i.wrapping_mul(8)).unwrap_or(0)
}

fn stage_code(s: Stage) -> u8 {
    match s {
        Stage::One => 0,
        Stage::Two => 1,
    }
}

fn stage_of(c: u8) -> Stage {
    if c == 0 { Stage::One } else { Stage::Two }
}

fn granule_code(g: Granule) -> u8 {
    match g {
        Granule::G4K => 0,
        Granule::G16K => 1,
        Granule::G64K => 2,
    }
}

fn granule_of(c: u8) -> Granule {
    match c {
        0 => Granule::G4K,
        1 => Granule::G16K,
        _ => Granule::G64K,
    }
}

/// A walk configuration without its TTB in one word: stage (byte 0 bit 0),
/// AFFD (byte 0 bit 1), granule, TxSZ, SL0, OAS (bytes 1-4).
fn pack_walk(w: &WalkConfig) -> u64 {
    u64::from(stage_code(w.stage))
        | (u64::from(w.affd) << 1)
        | put(granule_code(w.granule), 1)
        | put(w.tsz, 2)
        | put(w.sl0, 3)
        | put(w.oas_bits, 4)
}

#[inline(always)]
fn unpack_walk(w: u64, ttb: u64) -> WalkConfig {
    WalkConfig {
        stage: stage_of(byte(w, 0) & 1),
        granule: granule_of(byte(w, 1)),
        tsz: byte(w, 2),
        sl0: byte(w, 3),
        oas_bits: byte(w, 4),
        ttb,
        affd: w & 2 != 0,
    }
}

/// A cached STE: S1ContextPtr, S2TTB, the stage-2 walk fields (with S2R,
/// S2S), and the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PackedSte {
    ctx_ptr: u64,
    s2_ttb: u64,
    /// [`pack_walk`] of stage 2; S2R bit 48, S2S bit 49.
    s2: u64,
    /// Byte 0: config (0 abort, 1 bypass, 2 translate), bit 2 stage 1
    /// present, bit 3 stage 2 present, bit 4 S1STALLD, bit 5 PPAR. Bytes:
    /// 1 S1FMT, 2 S1CDMAX, 3 S1DSS, 4 EATS, 5 STRW, 6 PRIVCFG, 7 INSTCFG.
    flags: u64,
    /// VMID.
    vmid: u64,
}

impl PackedSte {
    pub(crate) fn new(s: &Ste) -> Self {
        let (config, s1, s2) = match s.config {
            SteConfig::Abort => (0u8, None, None),
            SteConfig::Bypass => (1, None, None),
            SteConfig::Translate { s1, s2 } => (2, s1, s2),
        };
        let mut flags = u64::from(config)
            | (u64::from(s1.is_some()) << 2)
            | (u64::from(s2.is_some()) << 3)
            | (u64::from(s.ppar) << 5)
            | put(
                match s.eats {
                    Eats::Abort => 0,
                    Eats::Full => 1,
                    Eats::S1Chk => 2,
                },
                4,
            )
            | put(
                match s.strw {
                    StreamWorld::NsEl1 => 0,
                    StreamWorld::El2 => 1,
                },
                5,
            )
            | put(s.privcfg, 6)
            | put(s.instcfg, 7);
        let mut ctx_ptr = 0;
        if let Some(s1) = s1 {
            ctx_ptr = s1.ctx_ptr;
            flags |= (u64::from(s1.stalld) << 4)
                | put(
                    match s1.fmt {
                        CdFmt::Linear => 0,
                        CdFmt::TwoLevel4K => 1,
                        CdFmt::TwoLevel64K => 2,
                    },
                    1,
                )
                | put(s1.cdmax, 2)
                | put(
                    match s1.dss {
                        S1Dss::Terminate => 0,
                        S1Dss::Bypass => 1,
                        S1Dss::Substream0 => 2,
                    },
                    3,
                );
        }
        let (s2_ttb, s2w) = s2.map_or((0, 0), |s2| {
            (
                s2.walk.ttb,
                pack_walk(&s2.walk) | (u64::from(s2.record) << 48) | (u64::from(s2.stall) << 49),
            )
        });
        PackedSte {
            ctx_ptr,
            s2_ttb,
            s2: s2w,
            flags,
            vmid: u64::from(s.vmid),
        }
    }

    #[inline(always)]
    pub(crate) fn unpack(&self) -> Ste {
        let f = self.flags;
        let s1 = (f & (1 << 2) != 0).then(|| S1Ste {
            ctx_ptr: self.ctx_ptr,
            fmt: match byte(f, 1) {
                0 => CdFmt::Linear,
                1 => CdFmt::TwoLevel4K,
                _ => CdFmt::TwoLevel64K,
            },
            cdmax: byte(f, 2),
            dss: match byte(f, 3) {
                0 => S1Dss::Terminate,
                1 => S1Dss::Bypass,
                _ => S1Dss::Substream0,
            },
            stalld: f & (1 << 4) != 0,
        });
        let s2 = (f & (1 << 3) != 0).then(|| S2Ste {
            walk: unpack_walk(self.s2, self.s2_ttb),
            record: self.s2 & (1 << 48) != 0,
            stall: self.s2 & (1 << 49) != 0,
        });
        Ste {
            config: match f & 3 {
                0 => SteConfig::Abort,
                1 => SteConfig::Bypass,
                _ => SteConfig::Translate { s1, s2 },
            },
            eats: match byte(f, 4) {
                0 => Eats::Abort,
                1 => Eats::Full,
                _ => Eats::S1Chk,
            },
            strw: if byte(f, 5) == 0 {
                StreamWorld::NsEl1
            } else {
                StreamWorld::El2
            },
            vmid: u16::try_from(self.vmid & 0xffff).unwrap_or(0),
            privcfg: byte(f, 6),
            instcfg: byte(f, 7),
            ppar: f & (1 << 5) != 0,
        }
    }
}

/// A cached CD: TTB0 and the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PackedCd {
    ttb: u64,
    /// [`pack_walk`]; bit 40 walk present (EPD0 = 0), bit 41 R, bit 42 A,
    /// bit 43 S, ASID in bits 48-63.
    flags: u64,
}

impl PackedCd {
    pub(crate) fn new(c: &Cd) -> Self {
        let (ttb, walk) = c
            .walk
            .map_or((0, 0), |w| (w.ttb, pack_walk(&w) | (1 << 40)));
        PackedCd {
            ttb,
            flags: walk
                | (u64::from(c.record) << 41)
                | (u64::from(c.abort) << 42)
                | (u64::from(c.stall) << 43)
                | (u64::from(c.asid) << 48),
        }
    }

    #[inline(always)]
    pub(crate) fn unpack(&self) -> Cd {
        let f = self.flags;
        Cd {
            walk: (f & (1 << 40) != 0).then(|| unpack_walk(f, self.ttb)),
            asid: u16::try_from(f >> 48).unwrap_or(0),
            record: f & (1 << 41) != 0,
            abort: f & (1 << 42) != 0,
            stall: f & (1 << 43) != 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(stage: Stage, granule: Granule, affd: bool) -> WalkConfig {
        WalkConfig {
            stage,
            granule,
            tsz: 0xfe,
            sl0: 0xfd,
            oas_bits: 48,
            ttb: 0x000f_ffff_ffff_fff0,
            affd,
        }
    }

    // Packing is lossless for every shape of STE the decoder produces
    // (IHI 0070 5.2 fields), so the STE cache behaves as before.
    #[test]
    fn packed_ste_round_trips() {
        let mut stes = Vec::new();
        for fmt in [CdFmt::Linear, CdFmt::TwoLevel4K, CdFmt::TwoLevel64K] {
            for dss in [S1Dss::Terminate, S1Dss::Bypass, S1Dss::Substream0] {
                for (g, affd) in [
                    (Granule::G4K, true),
                    (Granule::G16K, false),
                    (Granule::G64K, true),
                ] {
                    let s1 = S1Ste {
                        ctx_ptr: 0x000f_ffff_ffff_ffc0,
                        fmt,
                        cdmax: 20,
                        dss,
                        stalld: affd,
                    };
                    let s2 = S2Ste {
                        walk: walk(Stage::Two, g, affd),
                        record: !affd,
                        stall: affd,
                    };
                    for (a, b) in [(true, true), (true, false), (false, true)] {
                        stes.push(SteConfig::Translate {
                            s1: a.then_some(s1),
                            s2: b.then_some(s2),
                        });
                    }
                }
            }
        }
        stes.push(SteConfig::Abort);
        stes.push(SteConfig::Bypass);
        for (i, config) in stes.into_iter().enumerate() {
            for eats in [Eats::Abort, Eats::Full, Eats::S1Chk] {
                for strw in [StreamWorld::NsEl1, StreamWorld::El2] {
                    let ste = Ste {
                        config,
                        eats,
                        strw,
                        vmid: 0xffff - u16::try_from(i).unwrap(),
                        privcfg: 3,
                        instcfg: 2,
                        ppar: i % 2 == 0,
                    };
                    assert_eq!(PackedSte::new(&ste).unpack(), ste);
                }
            }
        }
    }

    // The same for CDs (5.4 fields), with and without EPD0.
    #[test]
    fn packed_cd_round_trips() {
        for g in [Granule::G4K, Granule::G16K, Granule::G64K] {
            for bits in 0..16u8 {
                let cd = Cd {
                    walk: (bits & 8 == 0).then(|| walk(Stage::One, g, bits & 1 != 0)),
                    asid: 0xfedc,
                    record: bits & 1 != 0,
                    abort: bits & 2 != 0,
                    stall: bits & 4 != 0,
                };
                assert_eq!(PackedCd::new(&cd).unpack(), cd);
            }
        }
    }
}
