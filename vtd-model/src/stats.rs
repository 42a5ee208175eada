//! Statistics: per-cache counters, faults by reason, invalidations by type,
//! modelled cycles (per source and PASID through
//! [`iommu_emulator::TranslationStats`]).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use iommu_emulator::CacheStats;
use iommu_emulator::counters::ThreadCounters;
use iommu_emulator::timing::{CountersSnapshot, StatsKey};

use crate::Vtd;
use crate::structs::inv_desc::InvDesc;

/// Names of the invalidation counters, by index.
pub const INVAL_NAMES: [&str; 11] = [
    "ccmd-register",
    "iotlb-register",
    "context-cache",
    "iotlb",
    "device-tlb",
    "iec",
    "wait",
    "pasid-iotlb",
    "pasid-cache",
    "pasid-device-tlb",
    "page-group-response",
];

/// Translation-path counters, kept per thread ([`ThreadCounters`]): a
/// translation bumps them without a locked instruction or a cache line
/// shared with other translating threads.
pub(crate) mod hot {
    /// IOTLB hits.
    pub const IOTLB_HITS: usize = 0;
    /// IOTLB misses.
    pub const IOTLB_MISSES: usize = 1;
    /// Page walks.
    pub const WALKS: usize = 2;
    /// Table reads made by walks.
    pub const WALK_READS: usize = 3;
    /// A/D updates.
    pub const AD_UPDATES: usize = 4;
    /// Requests that bypassed translation.
    pub const BYPASS: usize = 5;
    /// Number of counters.
    pub const N: usize = 6;
}

/// Live counters: per-thread ones for the translation path ([`hot`]),
/// relaxed atomics for the rest (faults, invalidations, registers).
#[derive(Debug)]
pub struct Counters {
    pub(crate) hot: ThreadCounters<{ hot::N }>,
    pub(crate) faults: AtomicU64,
    pub(crate) by_reason: [AtomicU64; 256],
    pub(crate) recorded: AtomicU64,
    pub(crate) fpd_suppressed: AtomicU64,
    pub(crate) overflow_dropped: AtomicU64,
    pub(crate) inval: [AtomicU64; 11],
    pub(crate) queue_cmds: AtomicU64,
    pub(crate) iq_errors: AtomicU64,
    pub(crate) bad_desc_type: AtomicU64,
    pub(crate) unnotified: AtomicU64,
    pub(crate) dropped_status_writes: AtomicU64,
    pub(crate) msis: AtomicU64,
    pub(crate) unknown_reads: AtomicU64,
    pub(crate) unknown_writes: AtomicU64,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            hot: ThreadCounters::new(),
            faults: AtomicU64::new(0),
            by_reason: std::array::from_fn(|_| AtomicU64::new(0)),
            recorded: AtomicU64::new(0),
            fpd_suppressed: AtomicU64::new(0),
            overflow_dropped: AtomicU64::new(0),
            inval: std::array::from_fn(|_| AtomicU64::new(0)),
            queue_cmds: AtomicU64::new(0),
            iq_errors: AtomicU64::new(0),
            bad_desc_type: AtomicU64::new(0),
            unnotified: AtomicU64::new(0),
            dropped_status_writes: AtomicU64::new(0),
            msis: AtomicU64::new(0),
            unknown_reads: AtomicU64::new(0),
            unknown_writes: AtomicU64::new(0),
        }
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn bump_unknown_read(&self) {
        bump(&self.unknown_reads);
    }
    pub(crate) fn bump_unknown_write(&self) {
        bump(&self.unknown_writes);
    }
    /// Register-based invalidation: 0 CCMD, 1 IOTLB.
    pub(crate) fn count_inval_reg(&self, i: usize) {
        if let Some(c) = self.inval.get(i) {
            bump(c);
        }
    }
    pub(crate) fn count_desc(&self, d: &InvDesc) {
        let name = d.name();
        if let Some(i) = INVAL_NAMES.iter().position(|n| *n == name)
            && let Some(c) = self.inval.get(i)
        {
            bump(c);
        }
    }
    pub(crate) fn count_fault(&self, reason: u8) {
        bump(&self.faults);
        if let Some(c) = self.by_reason.get(usize::from(reason)) {
            bump(c);
        }
    }
}

/// A snapshot of the unit's statistics. `Display` prints a report.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VtdStats {
    /// Successful translations.
    pub translations: u64,
    /// Faulting requests.
    pub faults: u64,
    /// Faults by reason code (non-zero entries only).
    pub faults_by_reason: Vec<(u8, u64)>,
    /// Faults written to a fault recording register.
    pub faults_recorded: u64,
    /// Faults not recorded because FPD was set.
    pub faults_fpd_suppressed: u64,
    /// Faults dropped because the recording registers overflowed (PFO).
    pub faults_overflow_dropped: u64,
    /// IOTLB hits / misses (one per translation that looked it up).
    pub iotlb_hits: u64,
    /// IOTLB misses.
    pub iotlb_misses: u64,
    /// Page walks made.
    pub walks: u64,
    /// Table reads made by walks.
    pub walk_reads: u64,
    /// A/D updates written.
    pub ad_updates: u64,
    /// Requests that bypassed translation (TE=0, pass-through).
    pub bypass: u64,
    /// Modelled cycles over every request.
    pub cycles: u64,
    /// Invalidations by type ([`INVAL_NAMES`]).
    pub invalidations: Vec<(&'static str, u64)>,
    /// Invalidation descriptors fetched.
    pub queue_cmds: u64,
    /// Invalidation queue errors (IQE).
    pub iq_errors: u64,
    /// Device-TLB invalidations / page group responses with no device notifier.
    pub unnotified: u64,
    /// Wait-descriptor status writes that failed (address outside RAM).
    pub dropped_status_writes: u64,
    /// MSIs sent.
    pub msis: u64,
    /// Register accesses to unknown offsets: (reads, writes).
    pub unknown_accesses: (u64, u64),
    /// Raw cache counters: context, PASID, IOTLB, first-level PWC, second-level PWC.
    pub caches: Vec<(&'static str, CacheStats)>,
    /// Per (source, PASID) requests, faults, cycles and latency histogram,
    /// busiest first (from [`iommu_emulator::TranslationStats`]).
    pub sources: Vec<(StatsKey, CountersSnapshot)>,
}

impl Vtd {
    pub(crate) fn snapshot_stats(&self) -> VtdStats {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (ur, uw) = self.lock_regs().unknown_accesses();
        let total = self.tstats.total();
        VtdStats {
            translations: total.translations,
            faults: l(&c.faults),
            faults_by_reason: c
                .by_reason
                .iter()
                .enumerate()
                .filter_map(|(i, n)| {
                    let n = l(n);
                    (n > 0).then(|| (u8::try_from(i).unwrap_or(0), n))
                })
                .collect(),
            faults_recorded: l(&c.recorded),
            faults_fpd_suppressed: l(&c.fpd_suppressed),
            faults_overflow_dropped: l(&c.overflow_dropped),
            iotlb_hits: c.hot.get(hot::IOTLB_HITS),
            iotlb_misses: c.hot.get(hot::IOTLB_MISSES),
            walks: c.hot.get(hot::WALKS),
            walk_reads: c.hot.get(hot::WALK_READS),
            ad_updates: c.hot.get(hot::AD_UPDATES),
            bypass: c.hot.get(hot::BYPASS),
            cycles: total.cycles,
            invalidations: INVAL_NAMES
                .iter()
                .zip(c.inval.iter())
                .map(|(n, v)| (*n, l(v)))
                .collect(),
            queue_cmds: l(&c.queue_cmds),
            iq_errors: l(&c.iq_errors),
            unnotified: l(&c.unnotified),
            dropped_status_writes: l(&c.dropped_status_writes),
            msis: l(&c.msis),
            unknown_accesses: (
                ur.saturating_add(l(&c.unknown_reads)),
                uw.saturating_add(l(&c.unknown_writes)),
            ),
            sources: {
                let mut v = self.tstats.snapshot();
                v.sort_by_key(|(_, s)| std::cmp::Reverse(s.translations.saturating_add(s.faults)));
                v
            },
            caches: vec![
                ("context", self.context_cache.stats()),
                ("pasid", self.pasid_cache.stats()),
                ("iotlb", self.iotlb.cache.stats()),
                ("fl-pwc", self.fl_pwc.stats()),
                ("sl-pwc", self.sl_pwc.stats()),
            ],
        }
    }
}

impl VtdStats {
    /// Invalidations of the named type.
    pub fn invalidations_of(&self, name: &str) -> u64 {
        self.invalidations
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, v)| *v)
    }

    /// Faults with reason `r`.
    pub fn faults_with_reason(&self, r: u8) -> u64 {
        self.faults_by_reason
            .iter()
            .find(|(x, _)| *x == r)
            .map_or(0, |(_, v)| *v)
    }
}

impl fmt::Display for VtdStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.iotlb_hits.saturating_add(self.iotlb_misses);
        #[allow(clippy::cast_precision_loss)]
        let rate = if total == 0 {
            0.0
        } else {
            self.iotlb_hits as f64 * 100.0 / total as f64
        };
        writeln!(
            f,
            "vt-d: {} translations, {} faults, {} bypassed, {} cycles",
            self.translations, self.faults, self.bypass, self.cycles
        )?;
        writeln!(
            f,
            "  iotlb: {} hits, {} misses ({rate:.1}% hit rate)",
            self.iotlb_hits, self.iotlb_misses
        )?;
        writeln!(
            f,
            "  walks: {} ({} table reads, {} A/D updates)",
            self.walks, self.walk_reads, self.ad_updates
        )?;
        for (name, s) in &self.caches {
            writeln!(
                f,
                "  cache {name:>8}: lookups {} hits {} ({:.1}%) inserts {} evictions {} invalidated {}",
                s.lookups,
                s.hits,
                s.hit_rate() * 100.0,
                s.inserts,
                s.evictions,
                s.invalidated
            )?;
        }
        write!(f, "  faults by reason:")?;
        for (r, n) in &self.faults_by_reason {
            write!(f, " {r:#04x}={n}")?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "  faults recorded {}, suppressed by FPD {}, dropped on overflow {}",
            self.faults_recorded, self.faults_fpd_suppressed, self.faults_overflow_dropped
        )?;
        write!(f, "  invalidations:")?;
        for (n, v) in &self.invalidations {
            if *v > 0 {
                write!(f, " {n}={v}")?;
            }
        }
        writeln!(f)?;
        writeln!(
            f,
            "  queue: {} descriptors, {} errors; {} MSIs; unknown register accesses {}r/{}w",
            self.queue_cmds,
            self.iq_errors,
            self.msis,
            self.unknown_accesses.0,
            self.unknown_accesses.1
        )?;
        for ((source, pasid), s) in self.sources.iter().take(8) {
            let pasid = pasid.map_or_else(|| "-".to_string(), |p| p.to_string());
            writeln!(
                f,
                "  source {source} pasid {pasid}: {} translations, {} faults, mean {:.1} cycles, p50 <{} p99 <{}",
                s.translations,
                s.faults,
                s.mean_cycles(),
                s.quantile(0.5),
                s.quantile(0.99)
            )?;
        }
        Ok(())
    }
}
