//! Performance monitoring (VT-d 4.x chapter 12 / registers 11.4.14-15) and
//! the enhanced command interface it is driven through (11.4.13), as
//! Linux's perfmon.c (INTEL_IOMMU_PERF_EVENTS, 6.3+) reads them.
//!
//! Present with `x-perfmon=on` (ECAP.PMS, CAP.ECMDS). Layout inside the
//! 4 KiB register page (the offsets are discovered by software through
//! PERFCFGOFF/PERFCNTROFF/PERFOVFOFF):
//!
//! | what | offset |
//! |---|---|
//! | PERFCAP | 0x300: 3 counters, 48 bits wide, 5 event groups, no filters, overflow interrupt, counter stride 1 KiB |
//! | PERFCFGOFF / PERFFRZOFF / PERFOVFOFF / PERFCNTROFF | 0x310 / 0x314 / 0x318 / 0x31c |
//! | PERFINTRSTS, PERFINTRCTL (+data, address, upper address) | 0x324, 0x328..0x337 |
//! | PERFEVNTCAP[g] | 0x380 + 8 g |
//! | ECMD, ECEO, ECRSP, ECCAP[0..4] | 0x400, 0x408, 0x410, 0x430 + 8 i |
//! | overflow status | 0x3f0 |
//! | counter i configuration (event group 11:8, event select 59:32, interrupt 1) | 0x500 + 0x100 i (capability at +0x80 reads 0: no per-counter capabilities) |
//! | counter i value | 0x7c0 + 0x400 i |
//!
//! Events (group, select bit), with Linux's names: 0/0x2 `iommu_requests`
//! (translation requests), 1/0x40 `pg_req_posted` (page requests queued),
//! 2/0x1,0x2 `ctxt_cache_lookup`/`hit`, 2/0x4,0x8 `pasid_cache_lookup`/`hit`,
//! 2/0x10,0x20 `ss_nonleaf_lookup`/`hit` and 2/0x40,0x80 `fs_nonleaf_*`
//! (second/first-level paging-structure caches), 3/0x1,0x2
//! `iotlb_lookup`/`hit`, 4/0x1,0x2 `int_cache_lookup`/`hit_nonposted`.
//! Counts come from the model's cache statistics: a counter is the sum of
//! its selected events since it was enabled (ECMD 0xf0), stopped by
//! disable (0xf1) and by freeze (0xf4) until unfreeze (0xf5). 48-bit
//! counters do not overflow in practice, so the overflow interrupt is
//! never raised (the registers exist and read as zero).

use std::sync::Mutex;

use crate::Vtd;

/// PERFCAP (11.4.14.1).
pub const PERFCAP: u64 = 0x300;
/// PERFCFGOFF: offset of the counter configuration registers.
pub const PERFCFGOFF: u64 = 0x310;
/// PERFFRZOFF: offset of the freeze registers (unused by Linux).
pub const PERFFRZOFF: u64 = 0x314;
/// PERFOVFOFF: offset of the overflow status register.
pub const PERFOVFOFF: u64 = 0x318;
/// PERFCNTROFF: offset of the counters.
pub const PERFCNTROFF: u64 = 0x31c;
/// PERFINTRSTS: perfmon interrupt status.
pub const PERFINTRSTS: u64 = 0x324;
/// PERFINTRCTL: perfmon interrupt control (data, address, upper follow).
pub const PERFINTRCTL: u64 = 0x328;
/// PERFEVNTCAP: event capability of group g at +8 g.
pub const PERFEVNTCAP: u64 = 0x380;
/// ECMD: enhanced command (11.4.13).
pub const ECMD: u64 = 0x400;
/// ECEO: enhanced command operand B.
pub const ECEO: u64 = 0x408;
/// ECRSP: enhanced command response (IP bit 0, status 7:1).
pub const ECRSP: u64 = 0x410;
/// ECCAP: enhanced command capability, four 64-bit words.
pub const ECCAP: u64 = 0x430;
/// Where the overflow status register is placed.
pub const OVF_REG: u64 = 0x3f0;
/// Where the freeze register is placed.
pub const FRZ_REG: u64 = 0x3f8;
/// Base of the counter configuration registers.
pub const CFG_BASE: u64 = 0x500;
/// Stride of the configuration registers (Linux's IOMMU_PMU_CFG_OFFSET).
pub const CFG_STRIDE: u64 = 0x100;
/// Base of the counters.
pub const CNTR_BASE: u64 = 0x7c0;
/// Counter stride (PERFCAP.CS = 0: 1 KiB).
pub const CNTR_STRIDE: u64 = 0x400;
/// Number of counters.
pub const NUM_CNTR: usize = 3;
/// Counter width in bits.
pub const CNTR_WIDTH: u32 = 48;
/// Number of event groups.
pub const NUM_EG: usize = 5;
/// Event select bits supported per group.
pub const EVCAP: [u64; NUM_EG] = [0x2, 0x40, 0xff, 0x3, 0x3];

/// ECMD: enable counter (operand A = counter index).
pub const ECMD_ENABLE: u64 = 0xf0;
/// ECMD: disable counter.
pub const ECMD_DISABLE: u64 = 0xf1;
/// ECMD: freeze all counters.
pub const ECMD_FREEZE: u64 = 0xf4;
/// ECMD: unfreeze all counters.
pub const ECMD_UNFREEZE: u64 = 0xf5;
/// ECCAP word 3: ECNTS, DCNTS, FCNTS, UFCNTS.
pub const ECCAP3: u64 = (1 << 48) | (1 << 49) | (1 << 52) | (1 << 53);
/// ECRSP status: invalid command (reported in bits 7:1).
pub const ECRSP_INVALID: u64 = 1;

#[derive(Clone, Copy, Debug, Default)]
struct Counter {
    config: u64,
    enabled: bool,
    /// Value accumulated while running before the last stop.
    acc: u64,
    /// Source total when it last started running.
    start: u64,
}

/// Perfmon state of a unit.
#[derive(Debug, Default)]
pub(crate) struct Pmu {
    inner: Mutex<PmuInner>,
}

#[derive(Debug, Default)]
struct PmuInner {
    counters: [Counter; NUM_CNTR],
    frozen: bool,
    ecrsp: u64,
    eceo: u64,
    intr_ctl: [u32; 4],
}

/// The PERFCAP value.
pub const fn perfcap() -> u64 {
    (NUM_CNTR as u64) | ((CNTR_WIDTH as u64) << 16) | ((NUM_EG as u64) << 24) | (1 << 50)
}

fn mask() -> u64 {
    (1u64 << CNTR_WIDTH).wrapping_sub(1)
}

impl Vtd {
    /// The current total of the events selected by a counter config.
    fn pmu_source(&self, config: u64) -> u64 {
        let group = (config >> 8) & 0xf;
        let select = (config >> 32) & 0xfff_ffff;
        let cs = |c: iommu_emulator::CacheStats| (c.lookups, c.hits);
        let pick: &[(u64, u64)] = &match group {
            0 => {
                let t = self.tstats.total();
                [(0x2, t.translations.saturating_add(t.faults))].to_vec()
            }
            1 => [(0x40, self.prq_stats().queued)].to_vec(),
            2 => {
                let (cl, ch) = cs(self.context_cache.stats());
                let (pl, ph) = cs(self.pasid_cache.stats());
                let (sl, sh) = cs(self.sl_pwc.stats());
                let (fl, fh) = cs(self.fl_pwc.stats());
                [
                    (0x1, cl),
                    (0x2, ch),
                    (0x4, pl),
                    (0x8, ph),
                    (0x10, sl),
                    (0x20, sh),
                    (0x40, fl),
                    (0x80, fh),
                ]
                .to_vec()
            }
            3 => {
                let (l, h) = cs(self.iotlb.cache.stats());
                [(0x1, l), (0x2, h)].to_vec()
            }
            4 => {
                let (l, h) = cs(self.ir.iec.stats());
                [(0x1, l), (0x2, h)].to_vec()
            }
            _ => Vec::new(),
        };
        pick.iter()
            .filter(|(bit, _)| select & bit != 0)
            .fold(0u64, |a, (_, v)| a.wrapping_add(*v))
    }

    fn counter_value(&self, c: &Counter, frozen: bool) -> u64 {
        let running = if c.enabled && !frozen {
            self.pmu_source(c.config).wrapping_sub(c.start)
        } else {
            0
        };
        c.acc.wrapping_add(running) & mask()
    }

    fn stop(&self, c: &mut Counter) {
        let now = self.pmu_source(c.config);
        c.acc = c.acc.wrapping_add(now.wrapping_sub(c.start));
    }

    /// The aligned 64-bit perfmon register at `off8`, if it is one.
    /// Callers pass offsets below 0x1000; every bound is a constant.
    #[allow(clippy::arithmetic_side_effects)]
    fn pmu_reg64(&self, p: &PmuInner, off8: u64) -> Option<u64> {
        let lo_hi = |lo: u64, hi: u64| lo | (hi << 32);
        Some(match off8 {
            PERFCAP => perfcap(),
            0x308 => 0,
            PERFCFGOFF => lo_hi(CFG_BASE, FRZ_REG),
            PERFOVFOFF => lo_hi(OVF_REG, CNTR_BASE),
            0x320 => 0, // PERFINTRSTS in the upper half
            0x328 => lo_hi(u64::from(p.intr_ctl[0]), u64::from(p.intr_ctl[1])),
            0x330 => lo_hi(u64::from(p.intr_ctl[2]), u64::from(p.intr_ctl[3])),
            o if (PERFEVNTCAP..PERFEVNTCAP + 8 * NUM_EG as u64).contains(&o) => {
                let g = usize::try_from((o - PERFEVNTCAP) / 8).unwrap_or(0);
                EVCAP.get(g).copied().unwrap_or(0)
            }
            ECMD => 0,
            ECEO => p.eceo,
            ECRSP => p.ecrsp,
            o if (ECCAP..ECCAP + 32).contains(&o) => {
                if o == ECCAP + 24 {
                    ECCAP3
                } else {
                    0
                }
            }
            OVF_REG | FRZ_REG => 0,
            o if o >= CNTR_BASE
                && (o - CNTR_BASE).is_multiple_of(CNTR_STRIDE)
                && (o - CNTR_BASE) / CNTR_STRIDE < NUM_CNTR as u64 =>
            {
                let i = usize::try_from((o - CNTR_BASE) / CNTR_STRIDE).unwrap_or(0);
                p.counters
                    .get(i)
                    .map_or(0, |c| self.counter_value(c, p.frozen))
            }
            o if (CFG_BASE..CFG_BASE + CFG_STRIDE * NUM_CNTR as u64).contains(&o) => {
                let rel = o - CFG_BASE;
                let i = usize::try_from(rel / CFG_STRIDE).unwrap_or(0);
                if rel.is_multiple_of(CFG_STRIDE) {
                    p.counters.get(i).map_or(0, |c| c.config)
                } else {
                    0
                }
            }
            _ => return None,
        })
    }

    /// A perfmon register read, or None when `offset` is not one.
    #[allow(clippy::arithmetic_side_effects)] // offsets are < 0x1000
    pub(crate) fn pmu_read(&self, offset: u64, size: u8) -> Option<u64> {
        if !self.config.perfmon || offset >= 0x1000 {
            return None;
        }
        let p = self.pmu.inner.lock().unwrap_or_else(|e| e.into_inner());
        let v = self.pmu_reg64(&p, offset & !7)?;
        Some(match (size, offset & 7) {
            (8, 0) => v,
            (4, 0) => v & 0xffff_ffff,
            (4, 4) => v >> 32,
            _ => 0,
        })
    }

    /// A perfmon register write; false when `offset` is not one.
    #[allow(clippy::arithmetic_side_effects)] // offsets are < 0x1000
    pub(crate) fn pmu_write(&self, offset: u64, size: u8, value: u64) -> bool {
        if !self.config.perfmon || offset >= 0x1000 {
            return false;
        }
        let mut guard = self.pmu.inner.lock().unwrap_or_else(|e| e.into_inner());
        let p = &mut *guard;
        if self.pmu_reg64(p, offset & !7).is_none() {
            return false;
        }
        let v32 = u32::try_from(value & 0xffff_ffff).unwrap_or(0);
        match (offset, size) {
            (ECMD, 8) | (ECMD, 4) => {
                let cmd = value & 0xff;
                let oa = value >> 16;
                let idx = usize::try_from(oa).ok().filter(|i| *i < NUM_CNTR);
                let frozen = p.frozen;
                let status = match (cmd, idx) {
                    (ECMD_ENABLE, Some(i)) => {
                        let src = p.counters.get(i).map(|c| self.pmu_source(c.config));
                        if let (Some(c), Some(src)) = (p.counters.get_mut(i), src)
                            && !c.enabled
                        {
                            // The value carries on from where it stopped
                            // (Linux reads it before enabling).
                            c.enabled = true;
                            c.start = src;
                        }
                        0
                    }
                    (ECMD_DISABLE, Some(i)) => {
                        if let Some(mut c) = p.counters.get(i).copied()
                            && c.enabled
                        {
                            if !frozen {
                                self.stop(&mut c);
                            }
                            c.enabled = false;
                            if let Some(slot) = p.counters.get_mut(i) {
                                *slot = c;
                            }
                        }
                        0
                    }
                    (ECMD_FREEZE, _) => {
                        if !p.frozen {
                            for i in 0..NUM_CNTR {
                                if let Some(mut c) = p.counters.get(i).copied()
                                    && c.enabled
                                {
                                    self.stop(&mut c);
                                    if let Some(slot) = p.counters.get_mut(i) {
                                        *slot = c;
                                    }
                                }
                            }
                            p.frozen = true;
                        }
                        0
                    }
                    (ECMD_UNFREEZE, _) => {
                        if p.frozen {
                            for i in 0..NUM_CNTR {
                                let src = p.counters.get(i).map(|c| self.pmu_source(c.config));
                                if let (Some(c), Some(src)) = (p.counters.get_mut(i), src) {
                                    c.start = src;
                                }
                            }
                            p.frozen = false;
                        }
                        0
                    }
                    _ => {
                        tracing::debug!(value, "vtd: unsupported enhanced command");
                        ECRSP_INVALID
                    }
                };
                p.ecrsp = status << 1;
            }
            (ECEO, 8) => p.eceo = value,
            (o, _) if (0x328..0x338).contains(&o) && size == 4 => {
                let i = usize::try_from((o - 0x328) / 4).unwrap_or(0);
                if let Some(r) = p.intr_ctl.get_mut(i) {
                    *r = v32;
                }
            }
            (o, 8)
                if (CFG_BASE..CFG_BASE + CFG_STRIDE * NUM_CNTR as u64).contains(&o)
                    && (o - CFG_BASE).is_multiple_of(CFG_STRIDE) =>
            {
                let i = usize::try_from((o - CFG_BASE) / CFG_STRIDE).unwrap_or(0);
                let frozen = p.frozen;
                if let Some(mut c) = p.counters.get(i).copied() {
                    // Reprogramming a running counter restarts its source.
                    if c.enabled && !frozen {
                        self.stop(&mut c);
                    }
                    c.config = value;
                    c.start = self.pmu_source(value);
                    if let Some(slot) = p.counters.get_mut(i) {
                        *slot = c;
                    }
                }
            }
            _ => {}
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Linux's pcap_* decoding of PERFCAP.
    #[test]
    fn perfcap_fields_decode_as_linux_reads_them() {
        let p = perfcap();
        assert_eq!(p & 0xffff, 3);
        assert_eq!((p >> 16) & 0x7f, 48);
        assert_eq!((p >> 24) & 0x1f, 5);
        assert_eq!((p >> 32) & 0x1f, 0);
        assert_eq!((p >> 50) & 1, 1);
        assert_eq!(1u64 << (((p >> 52) & 7) + 10), CNTR_STRIDE);
    }
}
