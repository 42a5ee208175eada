//! The cycle model: named latencies and per-source translation statistics.
//!
//! A translation's `cycles` is the sum of the latencies along the path it
//! actually took (which caches it looked up, which hit, how many table reads
//! the walk made). Latencies are a table of named values with defaults; each
//! default says where it comes from. Nothing here reads a clock.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::types::{Cycles, Pasid, SourceId};

macro_rules! latencies {
    ($( $(#[$doc:meta])* $name:ident = $default:expr, $source:expr; )*) => {
        /// Modelled latencies in cycles of the IOMMU clock.
        ///
        /// Change one with [`Latencies::set`] (the CLI's `--timing name=value`).
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub struct Latencies {
            $( $(#[$doc])* pub $name: u64, )*
        }

        impl Default for Latencies {
            fn default() -> Self {
                Latencies { $( $name: $default, )* }
            }
        }

        impl Latencies {
            /// Every latency: (name, default, where the default comes from).
            pub const TABLE: &'static [(&'static str, u64, &'static str)] = &[
                $( (stringify!($name), $default, $source), )*
            ];

            /// Set a latency by name.
            pub fn set(&mut self, name: &str, value: u64) -> Result<(), String> {
                match name {
                    $( stringify!($name) => { self.$name = value; Ok(()) } )*
                    other => Err(format!(
                        "unknown latency '{other}'; valid names: {}",
                        Self::TABLE.iter().map(|t| t.0).collect::<Vec<_>>().join(", ")
                    )),
                }
            }

            /// Read a latency by name.
            pub fn get(&self, name: &str) -> Option<u64> {
                match name {
                    $( stringify!($name) => Some(self.$name), )*
                    _ => None,
                }
            }
        }
    };
}

latencies! {
    /// Lookup that hits the IOTLB / SMMU TLB.
    iotlb_hit = 2, "gem5 SMMUv3 `tlbLat` default 3 cycles with 1-cycle micro-TLB (src/dev/arm/SMMUv3.py); we take 2 for the combined lookup";
    /// Extra cost of an IOTLB miss detected (before the walk starts).
    iotlb_miss = 1, "one tag-compare cycle, as gem5's micro-TLB miss";
    /// Lookup that hits the context cache / SMMU STE cache.
    context_hit = 2, "gem5 SMMUv3 `configLat` 3 minus the shared tag cycle";
    /// Lookup that hits the PASID cache / SMMU CD cache.
    pasid_hit = 2, "same structure size class as the context cache";
    /// Lookup that hits a paging-structure (walk) cache.
    pwc_hit = 2, "gem5 SMMUv3 `walkCacheLat` 4 for a 4-level hierarchy shared by levels; per level 2";
    /// One guest-memory read made by a page walk or configuration fetch.
    mem_read = 100, "~100 ns DRAM access at 1 GHz IOMMU clock (Amit et al., 'IOMMU: Strategies for Mitigating the IOTLB Bottleneck', WIOSCA 2010, and gem5 `walkLat`-class DRAM reads)";
    /// One atomic read-modify-write of a table entry (A/D bit update).
    mem_atomic = 150, "a DRAM read plus an atomic write-back, 1.5 x mem_read";
    /// Processing of one invalidation descriptor / SMMU command.
    queue_cmd = 20, "gem5 SMMUv3 `cmdQueueLat`-class per-command cost (order of tens of cycles)";
    /// Writing one fault record / event / page request to memory.
    record_write = 100, "one memory write, as mem_read";
    /// Sending one MSI.
    msi_write = 100, "one posted memory write, as mem_read";
}

impl Latencies {
    /// A human-readable table of the current values and their sources.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        for (name, default, source) in Self::TABLE {
            let cur = self.get(name).unwrap_or(*default);
            let _ = writeln!(s, "{name:>14} = {cur:>5}  (default {default}: {source})");
        }
        s
    }
}

/// Log2 buckets of the latency histogram: bucket `i` counts translations of
/// `[2^i, 2^(i+1))` cycles (bucket 0 also holds 0 and 1).
pub const HIST_BUCKETS: usize = 24;

/// Counters for one (source, PASID) pair.
#[derive(Debug, Default)]
pub struct Counters {
    translations: AtomicU64,
    faults: AtomicU64,
    cycles: AtomicU64,
    hist: [AtomicU64; HIST_BUCKETS],
}

/// A snapshot of [`Counters`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CountersSnapshot {
    /// Successful translations.
    pub translations: u64,
    /// Faulting requests.
    pub faults: u64,
    /// Sum of modelled cycles over both.
    pub cycles: u64,
    /// Latency histogram (see [`HIST_BUCKETS`]).
    pub hist: [u64; HIST_BUCKETS],
}

impl CountersSnapshot {
    /// Mean cycles per request.
    pub fn mean_cycles(&self) -> f64 {
        let n = self.translations.saturating_add(self.faults);
        if n == 0 {
            0.0
        } else {
            #[allow(clippy::cast_precision_loss)]
            let m = self.cycles as f64 / n as f64;
            m
        }
    }

    /// The approximate `q` quantile (0..=1) from the histogram: the upper
    /// bound of the bucket it falls in.
    pub fn quantile(&self, q: f64) -> u64 {
        let total: u64 = self.hist.iter().sum();
        if total == 0 {
            return 0;
        }
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss
        )]
        let want = ((total as f64) * q.clamp(0.0, 1.0)).ceil() as u64;
        let mut acc = 0u64;
        for (i, n) in self.hist.iter().enumerate() {
            acc = acc.saturating_add(*n);
            if acc >= want.max(1) {
                return 1u64
                    .checked_shl(u32::try_from(i).unwrap_or(63).saturating_add(1))
                    .unwrap_or(u64::MAX);
            }
        }
        u64::MAX
    }
}

fn bucket(cycles: u64) -> usize {
    let b = 63u32.saturating_sub(cycles.max(1).leading_zeros());
    usize::try_from(b)
        .unwrap_or(0)
        .min(HIST_BUCKETS.saturating_sub(1))
}

impl Counters {
    fn record(&self, cycles: Cycles, fault: bool) {
        if fault {
            self.faults.fetch_add(1, Ordering::Relaxed);
        } else {
            self.translations.fetch_add(1, Ordering::Relaxed);
        }
        self.cycles.fetch_add(cycles.0, Ordering::Relaxed);
        if let Some(h) = self.hist.get(bucket(cycles.0)) {
            h.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn snapshot(&self) -> CountersSnapshot {
        let mut hist = [0u64; HIST_BUCKETS];
        for (d, s) in hist.iter_mut().zip(self.hist.iter()) {
            *d = s.load(Ordering::Relaxed);
        }
        CountersSnapshot {
            translations: self.translations.load(Ordering::Relaxed),
            faults: self.faults.load(Ordering::Relaxed),
            cycles: self.cycles.load(Ordering::Relaxed),
            hist,
        }
    }
}

/// Key of the per-source statistics.
pub type StatsKey = (SourceId, Option<Pasid>);

/// Upper bound on distinct (source, PASID) keys tracked; requests beyond it
/// are folded into an overflow bucket so a guest cycling PASIDs cannot make
/// the map grow without bound.
pub const MAX_STATS_KEYS: usize = 4096;

/// Translation statistics per source and per PASID.
///
/// The hot path takes a shared read lock and bumps relaxed atomics; the
/// write lock is taken only the first time a key is seen.
#[derive(Debug, Default)]
pub struct TranslationStats {
    map: RwLock<HashMap<StatsKey, Arc<Counters>>>,
    overflow: Counters,
}

impl TranslationStats {
    /// Empty statistics.
    pub fn new() -> Self {
        Self::default()
    }

    /// Count one request.
    pub fn record(&self, key: StatsKey, cycles: Cycles, fault: bool) {
        {
            let map = self
                .map
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(c) = map.get(&key) {
                c.record(cycles, fault);
                return;
            }
        }
        let mut map = self
            .map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= MAX_STATS_KEYS && !map.contains_key(&key) {
            self.overflow.record(cycles, fault);
            return;
        }
        map.entry(key).or_default().record(cycles, fault);
    }

    /// Snapshot of every key, sorted.
    pub fn snapshot(&self) -> Vec<(StatsKey, CountersSnapshot)> {
        let map = self
            .map
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut v: Vec<_> = map.iter().map(|(k, c)| (*k, c.snapshot())).collect();
        v.sort_by_key(|(k, _)| *k);
        v
    }

    /// Requests counted in the overflow bucket.
    pub fn overflow(&self) -> CountersSnapshot {
        self.overflow.snapshot()
    }

    /// Totals over every key and the overflow bucket.
    pub fn total(&self) -> CountersSnapshot {
        let mut t = self.overflow.snapshot();
        for (_, s) in self.snapshot() {
            t.translations = t.translations.saturating_add(s.translations);
            t.faults = t.faults.saturating_add(s.faults);
            t.cycles = t.cycles.saturating_add(s.cycles);
            for (a, b) in t.hist.iter_mut().zip(s.hist.iter()) {
                *a = a.saturating_add(*b);
            }
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Rid;

    #[test]
    fn latencies_set_by_name_and_reject_unknown() {
        let mut l = Latencies::default();
        l.set("mem_read", 7).unwrap();
        assert_eq!(l.mem_read, 7);
        assert_eq!(l.get("mem_read"), Some(7));
        let e = l.set("bogus", 1).unwrap_err();
        assert!(e.contains("iotlb_hit"), "{e}");
    }

    #[test]
    fn latencies_every_default_has_a_source() {
        for (name, _, source) in Latencies::TABLE {
            assert!(source.len() > 10, "{name} lacks a source");
        }
        assert!(Latencies::default().describe().contains("mem_read"));
    }

    #[test]
    fn stats_count_per_source_and_pasid() {
        let s = TranslationStats::new();
        let a = (SourceId::Pci(Rid::new(0, 3, 0)), None);
        let b = (SourceId::Pci(Rid::new(0, 3, 0)), Pasid::new(5));
        s.record(a, Cycles(2), false);
        s.record(a, Cycles(300), false);
        s.record(b, Cycles(100), true);
        let snap = s.snapshot();
        assert_eq!(snap.len(), 2);
        let sa = &snap.iter().find(|(k, _)| *k == a).unwrap().1;
        assert_eq!((sa.translations, sa.faults, sa.cycles), (2, 0, 302));
        assert_eq!(sa.hist[1], 1); // 2 cycles
        assert_eq!(sa.hist[8], 1); // 300 in [256, 512)
        assert_eq!(sa.quantile(0.5), 4);
        assert_eq!(sa.quantile(1.0), 512);
        let t = s.total();
        assert_eq!((t.translations, t.faults), (2, 1));
    }

    #[test]
    fn stats_keys_are_bounded() {
        let s = TranslationStats::new();
        for p in 0..(MAX_STATS_KEYS as u32 + 10) {
            s.record((SourceId::Stream(0), Pasid::new(p)), Cycles(1), false);
        }
        assert_eq!(s.snapshot().len(), MAX_STATS_KEYS);
        assert_eq!(s.overflow().translations, 10);
    }
}
