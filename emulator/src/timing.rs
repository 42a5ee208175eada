//! The cycle model: named latencies and per-source translation statistics.
//!
//! A translation's `cycles` is the sum of the latencies along the path it
//! actually took (which caches it looked up, which hit, how many table reads
//! the walk made). Latencies are a table of named values with defaults; each
//! default says where it comes from. Nothing here reads a clock.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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

/// A fast, non-cryptographic hasher for the statistics map: keys are
/// small (a source ID and a PASID) and chosen by the guest only within a
/// bounded key space ([`MAX_STATS_KEYS`]), so flooding is not a concern and
/// SipHash's cost on every translation is not worth paying.
#[derive(Default, Clone, Copy)]
pub struct FastHasher(u64);

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        // Final avalanche so the low bits hashbrown uses are well mixed.
        let mut z = self.0;
        z = (z ^ (z >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
        z ^ (z >> 33)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }
    fn write_u16(&mut self, i: u16) {
        self.write_u64(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    fn write_usize(&mut self, i: usize) {
        self.write_u64(u64::try_from(i).unwrap_or(u64::MAX));
    }
}

type FastBuild = BuildHasherDefault<FastHasher>;

/// Counters with a single writer thread: the owner adds with a relaxed
/// load and store (no locked read-modify-write), anyone may read.
#[derive(Debug, Default)]
struct OwnedCounters {
    translations: AtomicU64,
    faults: AtomicU64,
    cycles: AtomicU64,
    hist: [AtomicU64; HIST_BUCKETS],
}

fn owner_add(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

impl OwnedCounters {
    fn record(&self, cycles: Cycles, fault: bool) {
        owner_add(
            if fault {
                &self.faults
            } else {
                &self.translations
            },
            1,
        );
        owner_add(&self.cycles, cycles.0);
        if let Some(h) = self.hist.get(bucket(cycles.0)) {
            owner_add(h, 1);
        }
    }

    fn add_to(&self, t: &mut CountersSnapshot) {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        t.translations = t.translations.wrapping_add(l(&self.translations));
        t.faults = t.faults.wrapping_add(l(&self.faults));
        t.cycles = t.cycles.wrapping_add(l(&self.cycles));
        for (d, s) in t.hist.iter_mut().zip(self.hist.iter()) {
            *d = d.wrapping_add(l(s));
        }
    }
}

/// Entries a thread keeps in its local index before starting afresh (the
/// counts stay in the shared registry; only the index is rebuilt).
const LOCAL_INDEX_MAX: usize = 1 << 16;

/// Shards (one per thread and key) a statistics object registers at most;
/// beyond that, requests are counted in the overflow bucket.
const MAX_SHARDS: usize = MAX_STATS_KEYS * 16;

static NEXT_STATS_ID: AtomicU64 = AtomicU64::new(1);

/// A thread's index of its shards.
#[derive(Default)]
struct Local {
    /// The shard used last (most requests come from the device that sent
    /// the previous one): checked before the map.
    last: Option<((u64, StatsKey), Arc<OwnedCounters>)>,
    /// (statistics object, key) -> counters this thread owns.
    map: HashMap<(u64, StatsKey), Arc<OwnedCounters>, FastBuild>,
}

thread_local! {
    /// This thread's shards.
    static LOCAL: std::cell::RefCell<Local> = std::cell::RefCell::new(Local::default());
}

#[derive(Debug, Default)]
struct Registry {
    keys: HashMap<StatsKey, Vec<Arc<OwnedCounters>>, FastBuild>,
    shards: usize,
}

/// Translation statistics per source and per PASID.
///
/// Design for the hot path: each thread owns its own counters per key
/// (found through a thread-local index) and bumps them with plain relaxed
/// stores, so concurrent translations neither take a lock nor execute a
/// locked read-modify-write, and never write a cache line another thread
/// writes. A shared registry (a mutex taken only the first time a thread
/// sees a key, and by readers) holds every thread's shards, so nothing is
/// lost when a thread exits; snapshots sum the shards.
#[derive(Debug)]
pub struct TranslationStats {
    id: u64,
    registry: Mutex<Registry>,
    overflow: Counters,
}

impl Default for TranslationStats {
    fn default() -> Self {
        TranslationStats {
            id: NEXT_STATS_ID.fetch_add(1, Ordering::Relaxed),
            registry: Mutex::new(Registry::default()),
            overflow: Counters::default(),
        }
    }
}

impl TranslationStats {
    /// Empty statistics.
    pub fn new() -> Self {
        Self::default()
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Count one request.
    #[inline]
    pub fn record(&self, key: StatsKey, cycles: Cycles, fault: bool) {
        let done = LOCAL
            .try_with(|local| {
                let Ok(mut local) = local.try_borrow_mut() else {
                    return false;
                };
                let id = (self.id, key);
                if let Some((k, c)) = &local.last
                    && *k == id
                {
                    c.record(cycles, fault);
                    return true;
                }
                self.record_slow(&mut local, id, cycles, fault)
            })
            .unwrap_or(false);
        if !done {
            self.overflow.record(cycles, fault);
        }
    }

    /// [`Self::record`] for a key other than the thread's last one.
    fn record_slow(
        &self,
        local: &mut Local,
        id: (u64, StatsKey),
        cycles: Cycles,
        fault: bool,
    ) -> bool {
        if let Some(c) = local.map.get(&id) {
            c.record(cycles, fault);
            local.last = Some((id, Arc::clone(c)));
            return true;
        }
        let c = {
            let mut reg = self.registry();
            let known = reg.keys.contains_key(&id.1);
            if reg.shards >= MAX_SHARDS || (!known && reg.keys.len() >= MAX_STATS_KEYS) {
                return false;
            }
            let c = Arc::new(OwnedCounters::default());
            reg.keys.entry(id.1).or_default().push(Arc::clone(&c));
            reg.shards = reg.shards.saturating_add(1);
            c
        };
        if local.map.len() >= LOCAL_INDEX_MAX {
            local.map.clear();
        }
        c.record(cycles, fault);
        local.last = Some((id, Arc::clone(&c)));
        local.map.insert(id, c);
        true
    }

    /// Snapshot of every key, sorted.
    pub fn snapshot(&self) -> Vec<(StatsKey, CountersSnapshot)> {
        let reg = self.registry();
        let mut v: Vec<_> = reg
            .keys
            .iter()
            .map(|(k, shards)| {
                let mut t = CountersSnapshot::default();
                for s in shards {
                    s.add_to(&mut t);
                }
                (*k, t)
            })
            .collect();
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
    fn stats_threads_sum_into_one_key() {
        let s = std::sync::Arc::new(TranslationStats::new());
        let key = (SourceId::Pci(Rid::new(0, 3, 0)), None);
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        s.record(key, Cycles(3), false);
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        // Threads have exited; their counts are kept.
        let snap = s.snapshot();
        assert_eq!(snap.len(), 1);
        assert_eq!(snap[0].1.translations, 4000);
        assert_eq!(snap[0].1.cycles, 12000);
        assert_eq!(snap[0].1.hist[1], 4000);
    }

    #[test]
    fn stats_two_instances_do_not_share_counts() {
        let a = TranslationStats::new();
        let b = TranslationStats::new();
        let key = (SourceId::Stream(1), None);
        a.record(key, Cycles(1), false);
        b.record(key, Cycles(1), true);
        assert_eq!(a.total().translations, 1);
        assert_eq!(a.total().faults, 0);
        assert_eq!(b.total().faults, 1);
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
