//! The generic set-associative cache engine.
//!
//! Every translation cache of both models is an instance of [`Cache`]: the
//! VT-d IOTLB, context cache, PASID cache and paging-structure caches, the
//! SMMU TLB and its STE/CD configuration caches.
//!
//! # Concurrency and the invalidation guarantee
//!
//! Each set has its own lock, so lookups that fall in different sets never
//! wait for each other (the hit path takes one uncontended set lock and no
//! global lock). Counters live in each set, under its lock, so the hit
//! path writes no cache line shared with other sets.
//!
//! **Guarantee:** once an `invalidate_*` call has returned, no lookup that
//! starts afterwards can hit an entry that the invalidation covered, and no
//! entry produced by a walk that *started* before the invalidation returned
//! can be inserted afterwards. The second half is what makes the first hold
//! under concurrency: a walker calls [`Cache::ticket`] before reading the
//! tables and hands the ticket to [`Cache::insert`]; every invalidation bumps
//! the generation *before* it sweeps the sets, and `insert` checks the
//! generation under the set lock, so an insert racing an invalidation either
//! lands before the sweep reaches its set (and is swept) or is refused.
//! An insert refused this way is counted in [`CacheStats::stale_inserts`].

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

/// What a cache key must provide.
pub trait CacheTag: Eq + Clone + Send {
    /// A hash of the fields that select the set. Entries that a single
    /// lookup must find have to hash equally; it need not be uniform (the
    /// engine mixes it).
    fn set_hash(&self) -> u64;

    /// The input-address range this entry covers, for range invalidation.
    /// `None` for entries that are not address based (context entries...).
    fn addr_range(&self) -> Option<Range<u64>> {
        None
    }
}

/// Which way to evict when a set is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReplacementPolicy {
    /// True least-recently-used (per-way age stamps).
    Lru,
    /// Tree pseudo-LRU (needs a power-of-two way count; other counts fall
    /// back to LRU).
    TreePlru,
    /// First-in first-out.
    Fifo,
    /// Pseudo-random with a fixed seed (xorshift per set): deterministic.
    Random,
}

impl std::str::FromStr for ReplacementPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "lru" => Ok(ReplacementPolicy::Lru),
            "plru" | "tree-plru" => Ok(ReplacementPolicy::TreePlru),
            "fifo" => Ok(ReplacementPolicy::Fifo),
            "random" => Ok(ReplacementPolicy::Random),
            other => Err(format!(
                "unknown replacement policy '{other}' (valid: lru, plru, fifo, random)"
            )),
        }
    }
}

impl std::fmt::Display for ReplacementPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReplacementPolicy::Lru => "lru",
            ReplacementPolicy::TreePlru => "plru",
            ReplacementPolicy::Fifo => "fifo",
            ReplacementPolicy::Random => "random",
        })
    }
}

/// Geometry and policy of a cache. `sets * ways == 0` makes a cache that
/// holds nothing (every lookup misses): a way to model "no such cache".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CacheConfig {
    /// Number of sets.
    pub sets: usize,
    /// Ways per set.
    pub ways: usize,
    /// Replacement policy.
    pub policy: ReplacementPolicy,
    /// Seed for [`ReplacementPolicy::Random`].
    pub seed: u64,
}

impl CacheConfig {
    /// Largest total entry count accepted (keeps a configuration typo from
    /// allocating gigabytes).
    pub const MAX_ENTRIES: usize = 1 << 20;

    /// `sets` x `ways` with LRU.
    pub const fn new(sets: usize, ways: usize) -> Self {
        CacheConfig {
            sets,
            ways,
            policy: ReplacementPolicy::Lru,
            seed: 0x9e37_79b9_7f4a_7c15,
        }
    }

    /// A fully associative cache of `entries` entries.
    pub const fn fully_associative(entries: usize) -> Self {
        Self::new(1, entries)
    }

    /// The same geometry with another policy.
    #[must_use]
    pub const fn with_policy(mut self, policy: ReplacementPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Total entries.
    pub const fn entries(&self) -> usize {
        self.sets.saturating_mul(self.ways)
    }
}

/// Configuration errors.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CacheConfigError {
    /// Too many entries.
    #[error("cache of {sets} sets x {ways} ways exceeds the limit of {max} entries")]
    TooLarge {
        /// Requested sets.
        sets: usize,
        /// Requested ways.
        ways: usize,
        /// The limit.
        max: usize,
    },
}

/// A snapshot of a cache's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups made.
    pub lookups: u64,
    /// Lookups that hit.
    pub hits: u64,
    /// Lookups that missed.
    pub misses: u64,
    /// Entries inserted.
    pub inserts: u64,
    /// Valid entries evicted to make room.
    pub evictions: u64,
    /// Entries removed by invalidation.
    pub invalidated: u64,
    /// Inserts refused because an invalidation ran during the walk.
    pub stale_inserts: u64,
}

impl CacheStats {
    /// Hits / lookups, or 0 with no lookups.
    pub fn hit_rate(&self) -> f64 {
        if self.lookups == 0 {
            0.0
        } else {
            // Precision loss is irrelevant for a ratio.
            #[allow(clippy::cast_precision_loss)]
            let r = self.hits as f64 / self.lookups as f64;
            r
        }
    }
}

/// Counters for what has no set to live in (a cache of zero entries).
#[derive(Default)]
struct Counters {
    misses: AtomicU64,
}

fn inc(c: &mut u64) {
    *c = c.wrapping_add(1);
}

struct Way<T, E> {
    slot: Option<(T, E)>,
    /// LRU: last-use stamp. FIFO: insertion stamp.
    stamp: u64,
}

struct Set<T, E> {
    ways: Vec<Way<T, E>>,
    /// Counters kept under the set lock: no shared cache line is written
    /// on the hit path, so threads hitting different sets never contend.
    stats: CacheStats,
    clock: u64,
    /// Tree-PLRU bits (node i has children 2i+1, 2i+2), or xorshift state.
    plru: u64,
    rng: u64,
}

impl<T: CacheTag, E> Set<T, E> {
    fn new(ways: usize, seed: u64) -> Self {
        let mut v = Vec::with_capacity(ways);
        v.resize_with(ways, || Way {
            slot: None,
            stamp: 0,
        });
        Set {
            ways: v,
            stats: CacheStats::default(),
            clock: 0,
            plru: 0,
            rng: seed | 1,
        }
    }

    fn tick(&mut self) -> u64 {
        self.clock = self.clock.wrapping_add(1);
        self.clock
    }

    /// Tree-PLRU: point every node on the path to `way` away from it.
    fn plru_touch(&mut self, way: usize) {
        let n = self.ways.len();
        if !n.is_power_of_two() || n < 2 {
            return;
        }
        let levels = n.trailing_zeros();
        let mut node = 0usize;
        for level in (0..levels).rev() {
            let bit = (way >> level) & 1;
            // bit 1 in the tree means "the victim is on the right".
            if node < 64 {
                if bit == 0 {
                    self.plru |= 1u64 << node;
                } else {
                    self.plru &= !(1u64 << node);
                }
            }
            node = node.wrapping_mul(2).wrapping_add(1).wrapping_add(bit);
        }
    }

    fn plru_victim(&self) -> usize {
        let n = self.ways.len();
        let levels = n.trailing_zeros();
        let mut node = 0usize;
        let mut way = 0usize;
        for _ in 0..levels {
            let right = node < 64 && (self.plru >> node) & 1 == 1;
            let bit = usize::from(right);
            way = (way << 1) | bit;
            node = node.wrapping_mul(2).wrapping_add(1).wrapping_add(bit);
        }
        way
    }

    fn touch(&mut self, way: usize, policy: ReplacementPolicy) {
        match policy {
            ReplacementPolicy::Lru => {
                let t = self.tick();
                if let Some(w) = self.ways.get_mut(way) {
                    w.stamp = t;
                }
            }
            ReplacementPolicy::TreePlru => {
                if self.ways.len().is_power_of_two() {
                    self.plru_touch(way);
                } else {
                    let t = self.tick();
                    if let Some(w) = self.ways.get_mut(way) {
                        w.stamp = t;
                    }
                }
            }
            ReplacementPolicy::Fifo | ReplacementPolicy::Random => {}
        }
    }

    fn victim(&mut self, policy: ReplacementPolicy) -> usize {
        if let Some(i) = self.ways.iter().position(|w| w.slot.is_none()) {
            return i;
        }
        let oldest = |ways: &[Way<T, E>]| {
            ways.iter()
                .enumerate()
                .min_by_key(|(_, w)| w.stamp)
                .map_or(0, |(i, _)| i)
        };
        match policy {
            ReplacementPolicy::Lru | ReplacementPolicy::Fifo => oldest(&self.ways),
            ReplacementPolicy::TreePlru => {
                if self.ways.len().is_power_of_two() {
                    self.plru_victim()
                } else {
                    oldest(&self.ways)
                }
            }
            ReplacementPolicy::Random => {
                // xorshift64
                let mut x = self.rng;
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                self.rng = x;
                let n = u64::try_from(self.ways.len()).unwrap_or(1).max(1);
                usize::try_from(x.checked_rem(n).unwrap_or(0)).unwrap_or(0)
            }
        }
    }
}

/// A set-associative cache from `T` tags to `E` entries.
pub struct Cache<T, E> {
    sets: Box<[Mutex<Set<T, E>>]>,
    config: CacheConfig,
    generation: AtomicU64,
    counters: Counters,
}

impl<T: CacheTag, E: Clone> std::fmt::Debug for Cache<T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish()
    }
}

/// A ticket from [`Cache::ticket`]: the cache generation when a walk began.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket(u64);

fn mix(h: u64) -> u64 {
    // splitmix64 finaliser
    let mut z = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn lock<S>(m: &Mutex<S>) -> MutexGuard<'_, S> {
    // A panic while holding a set lock cannot leave a set inconsistent in a
    // way that matters (worst case a stale stamp), so recover from poison.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<T: CacheTag, E: Clone> Cache<T, E> {
    /// A cache with the given geometry.
    pub fn new(config: CacheConfig) -> Result<Self, CacheConfigError> {
        if config
            .sets
            .checked_mul(config.ways)
            .is_none_or(|n| n > CacheConfig::MAX_ENTRIES)
        {
            return Err(CacheConfigError::TooLarge {
                sets: config.sets,
                ways: config.ways,
                max: CacheConfig::MAX_ENTRIES,
            });
        }
        let nsets = if config.ways == 0 { 0 } else { config.sets };
        let sets = (0..nsets)
            .map(|i| {
                let seed = mix(config.seed ^ u64::try_from(i).unwrap_or(0));
                Mutex::new(Set::new(config.ways, seed))
            })
            .collect::<Vec<_>>()
            .into_boxed_slice();
        Ok(Cache {
            sets,
            config,
            generation: AtomicU64::new(0),
            counters: Counters::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> CacheConfig {
        self.config
    }

    fn set_of(&self, tag: &T) -> Option<&Mutex<Set<T, E>>> {
        let n = u64::try_from(self.sets.len()).ok()?;
        if n == 0 {
            return None;
        }
        let i = usize::try_from(mix(tag.set_hash()).checked_rem(n)?).ok()?;
        self.sets.get(i)
    }

    /// Look `tag` up; a hit refreshes the replacement state.
    pub fn lookup(&self, tag: &T) -> Option<E> {
        self.lookup_by(tag, |t, _| t == tag)
    }

    /// Look up in `tag`'s set the first entry for which `matches` holds (for
    /// lookups whose tags are not plain equality, e.g. an address within a
    /// large page). Counts one lookup.
    pub fn lookup_by(&self, tag: &T, mut matches: impl FnMut(&T, &E) -> bool) -> Option<E> {
        let Some(set) = self.set_of(tag) else {
            self.counters.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let mut set = lock(set);
        let found = set
            .ways
            .iter()
            .position(|w| w.slot.as_ref().is_some_and(|(t, e)| matches(t, e)));
        match found {
            Some(i) => {
                set.touch(i, self.config.policy);
                let e = set
                    .ways
                    .get(i)
                    .and_then(|w| w.slot.as_ref())
                    .map(|(_, e)| e.clone());
                inc(&mut set.stats.hits);
                e
            }
            None => {
                inc(&mut set.stats.misses);
                None
            }
        }
    }

    /// Take a ticket before walking the tables whose result will be inserted.
    pub fn ticket(&self) -> Ticket {
        Ticket(self.generation.load(Ordering::SeqCst))
    }

    /// Insert `entry` under `tag` unless an invalidation has run since
    /// `ticket` was taken. Replaces an existing entry with an equal tag.
    /// Returns whether the entry was inserted.
    pub fn insert(&self, tag: T, entry: E, ticket: Ticket) -> bool {
        let Some(set) = self.set_of(&tag) else {
            return false;
        };
        let mut set = lock(set);
        if self.generation.load(Ordering::SeqCst) != ticket.0 {
            inc(&mut set.stats.stale_inserts);
            return false;
        }
        let policy = self.config.policy;
        let idx = match set
            .ways
            .iter()
            .position(|w| w.slot.as_ref().is_some_and(|(t, _)| *t == tag))
        {
            Some(i) => i,
            None => {
                let v = set.victim(policy);
                if set.ways.get(v).is_some_and(|w| w.slot.is_some()) {
                    inc(&mut set.stats.evictions);
                }
                v
            }
        };
        let stamp = set.tick();
        if let Some(w) = set.ways.get_mut(idx) {
            w.slot = Some((tag, entry));
            w.stamp = stamp;
        }
        set.touch(idx, policy);
        inc(&mut set.stats.inserts);
        true
    }

    /// Remove every entry for which `pred` holds. See the module docs for
    /// the guarantee that holds once this returns. Returns how many went.
    pub fn invalidate_if(&self, mut pred: impl FnMut(&T, &E) -> bool) -> usize {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let mut removed = 0usize;
        for set in self.sets.iter() {
            let mut set = lock(set);
            let mut here = 0u64;
            for w in set.ways.iter_mut() {
                if w.slot.as_ref().is_some_and(|(t, e)| pred(t, e)) {
                    w.slot = None;
                    here = here.wrapping_add(1);
                }
            }
            set.stats.invalidated = set.stats.invalidated.wrapping_add(here);
            removed = removed.saturating_add(usize::try_from(here).unwrap_or(usize::MAX));
        }
        removed
    }

    /// Remove entries whose address range overlaps `range` and for which
    /// `pred` holds (domain, ASID, PASID...).
    pub fn invalidate_range(
        &self,
        range: Range<u64>,
        mut pred: impl FnMut(&T, &E) -> bool,
    ) -> usize {
        self.invalidate_if(|t, e| {
            t.addr_range()
                .is_some_and(|r| r.start < range.end && range.start < r.end)
                && pred(t, e)
        })
    }

    /// Remove everything.
    pub fn invalidate_all(&self) -> usize {
        self.invalidate_if(|_, _| true)
    }

    /// Number of valid entries (walks every set; for tests and statistics).
    pub fn len(&self) -> usize {
        self.sets
            .iter()
            .map(|s| lock(s).ways.iter().filter(|w| w.slot.is_some()).count())
            .sum()
    }

    /// True when no entry is valid.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counters so far.
    pub fn stats(&self) -> CacheStats {
        let mut t = CacheStats {
            misses: self.counters.misses.load(Ordering::Relaxed),
            ..CacheStats::default()
        };
        for set in self.sets.iter() {
            let s = lock(set).stats;
            t.hits = t.hits.wrapping_add(s.hits);
            t.misses = t.misses.wrapping_add(s.misses);
            t.inserts = t.inserts.wrapping_add(s.inserts);
            t.evictions = t.evictions.wrapping_add(s.evictions);
            t.invalidated = t.invalidated.wrapping_add(s.invalidated);
            t.stale_inserts = t.stale_inserts.wrapping_add(s.stale_inserts);
        }
        t.lookups = t.hits.wrapping_add(t.misses);
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Clone, Debug, PartialEq, Eq)]
    struct Page {
        domain: u16,
        page: u64,
    }

    impl CacheTag for Page {
        fn set_hash(&self) -> u64 {
            self.page
        }
        fn addr_range(&self) -> Option<Range<u64>> {
            Some(self.page << 12..(self.page + 1) << 12)
        }
    }

    fn tag(domain: u16, page: u64) -> Page {
        Page { domain, page }
    }

    fn fill(c: &Cache<Page, u64>, d: u16, p: u64) -> bool {
        c.insert(tag(d, p), p * 10, c.ticket())
    }

    #[test]
    fn cache_insert_then_lookup_hits() {
        let c = Cache::new(CacheConfig::new(4, 2)).unwrap();
        assert!(fill(&c, 1, 7));
        assert_eq!(c.lookup(&tag(1, 7)), Some(70));
        assert_eq!(c.lookup(&tag(2, 7)), None);
        let s = c.stats();
        assert_eq!((s.lookups, s.hits, s.misses, s.inserts), (2, 1, 1, 1));
    }

    #[test]
    fn cache_zero_ways_always_misses() {
        let c = Cache::new(CacheConfig::new(4, 0)).unwrap();
        assert!(!fill(&c, 1, 1));
        assert_eq!(c.lookup(&tag(1, 1)), None);
        assert_eq!(c.stats().misses, 1);
    }

    #[test]
    fn cache_too_large_is_rejected() {
        assert!(Cache::<Page, u64>::new(CacheConfig::new(1 << 20, 8)).is_err());
        assert!(Cache::<Page, u64>::new(CacheConfig::new(usize::MAX, 2)).is_err());
    }

    #[test]
    fn cache_lru_evicts_least_recently_used() {
        let c = Cache::new(CacheConfig::fully_associative(2)).unwrap();
        fill(&c, 0, 1);
        fill(&c, 0, 2);
        assert!(c.lookup(&tag(0, 1)).is_some()); // 2 is now LRU
        fill(&c, 0, 3);
        assert!(c.lookup(&tag(0, 1)).is_some());
        assert!(c.lookup(&tag(0, 2)).is_none());
        assert!(c.lookup(&tag(0, 3)).is_some());
        assert_eq!(c.stats().evictions, 1);
    }

    #[test]
    fn cache_fifo_evicts_oldest_insert_despite_use() {
        let c = Cache::new(CacheConfig::fully_associative(2).with_policy(ReplacementPolicy::Fifo))
            .unwrap();
        fill(&c, 0, 1);
        fill(&c, 0, 2);
        assert!(c.lookup(&tag(0, 1)).is_some());
        fill(&c, 0, 3);
        assert!(c.lookup(&tag(0, 1)).is_none());
        assert!(c.lookup(&tag(0, 2)).is_some());
    }

    #[test]
    fn cache_tree_plru_protects_recent_way() {
        let c =
            Cache::new(CacheConfig::fully_associative(4).with_policy(ReplacementPolicy::TreePlru))
                .unwrap();
        for p in 0..4 {
            fill(&c, 0, p);
        }
        // Touch 0: the PLRU victim must not be 0.
        assert!(c.lookup(&tag(0, 0)).is_some());
        fill(&c, 0, 9);
        assert!(c.lookup(&tag(0, 0)).is_some());
        assert!(c.lookup(&tag(0, 9)).is_some());
        assert_eq!(c.len(), 4);
    }

    #[test]
    fn cache_tree_plru_cycles_through_all_ways() {
        // With no hits, PLRU replacement visits every way before reusing one.
        let c =
            Cache::new(CacheConfig::fully_associative(4).with_policy(ReplacementPolicy::TreePlru))
                .unwrap();
        for p in 0..4 {
            fill(&c, 0, p);
        }
        for p in 10..14 {
            fill(&c, 0, p);
        }
        for p in 10..14 {
            assert!(c.lookup(&tag(0, p)).is_some(), "page {p}");
        }
    }

    #[test]
    fn cache_random_is_deterministic_for_a_seed() {
        let run = || {
            let c = Cache::new(
                CacheConfig::fully_associative(4).with_policy(ReplacementPolicy::Random),
            )
            .unwrap();
            for p in 0..64 {
                fill(&c, 0, p);
            }
            (0..64)
                .filter(|p| c.lookup(&tag(0, *p)).is_some())
                .collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a.len(), 4);
        assert_eq!(a, run());
    }

    #[test]
    fn cache_invalidate_by_predicate_removes_only_matches() {
        let c = Cache::new(CacheConfig::new(8, 4)).unwrap();
        for p in 0..8 {
            fill(&c, 1, p);
            fill(&c, 2, p);
        }
        assert_eq!(c.invalidate_if(|t, _| t.domain == 1), 8);
        assert!(c.lookup(&tag(1, 3)).is_none());
        assert!(c.lookup(&tag(2, 3)).is_some());
        assert_eq!(c.stats().invalidated, 8);
    }

    #[test]
    fn cache_invalidate_range_removes_overlapping_pages() {
        let c = Cache::new(CacheConfig::new(8, 4)).unwrap();
        for p in 0..8 {
            fill(&c, 1, p);
        }
        // pages 2 and 3 overlap [0x2fff, 0x3001)
        assert_eq!(c.invalidate_range(0x2fff..0x3001, |_, _| true), 2);
        assert!(c.lookup(&tag(1, 1)).is_some());
        assert!(c.lookup(&tag(1, 2)).is_none());
        assert!(c.lookup(&tag(1, 3)).is_none());
        assert!(c.lookup(&tag(1, 4)).is_some());
    }

    #[test]
    fn cache_insert_with_stale_ticket_is_refused() {
        let c: Cache<Page, u64> = Cache::new(CacheConfig::new(8, 4)).unwrap();
        let t = c.ticket();
        c.invalidate_all();
        assert!(!c.insert(tag(1, 1), 1, t));
        assert!(c.lookup(&tag(1, 1)).is_none());
        assert_eq!(c.stats().stale_inserts, 1);
    }

    #[test]
    fn cache_concurrent_invalidation_never_leaves_old_value() {
        // Writers insert value = generation they saw; after invalidate
        // returns, a fresh lookup must not return an older generation.
        let c: Arc<Cache<Page, u64>> = Arc::new(Cache::new(CacheConfig::new(16, 4)).unwrap());
        let version = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut hs = Vec::new();
        for _ in 0..3 {
            let (c, v, s) = (c.clone(), version.clone(), stop.clone());
            hs.push(std::thread::spawn(move || {
                while !s.load(Ordering::SeqCst) {
                    for p in 0..32 {
                        let t = c.ticket();
                        // "walk": read the current version of the tables
                        let seen = v.load(Ordering::SeqCst);
                        c.insert(tag(0, p), seen, t);
                    }
                }
            }));
        }
        for round in 1..200u64 {
            version.store(round, Ordering::SeqCst);
            c.invalidate_all();
            for p in 0..32 {
                if let Some(seen) = c.lookup(&tag(0, p)) {
                    assert!(seen >= round, "stale entry {seen} after round {round}");
                }
            }
        }
        stop.store(true, Ordering::SeqCst);
        for h in hs {
            h.join().unwrap();
        }
    }
}
