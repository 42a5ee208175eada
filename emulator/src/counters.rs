//! Thread-owned event counters for hot paths.
//!
//! A translation bumps several counters (cache hits and misses, IOTLB hits,
//! walks...). With one shared atomic per counter every bump is a locked
//! read-modify-write on a cache line that all translating threads write,
//! which costs more than the rest of an IOTLB hit. [`ThreadCounters`]
//! instead gives every thread its own cache-line-sized slot: the owner adds
//! with a relaxed load and a relaxed store (no locked instruction, no line
//! shared with another writer), and readers sum the slots.
//!
//! Slots are handed out per thread from a process-wide pool of
//! [`MAX_THREAD_SLOTS`] indices, claimed on a thread's first bump and given
//! back when the thread exits; a thread that finds the pool empty (or bumps
//! a counter while its thread-local storage is being torn down) uses one
//! shared slot with atomic adds. Counts are never lost: a slot has exactly
//! one writer at a time, and a thread that takes over a released slot
//! continues from the values its previous owner left (the release and the
//! claim are a release/acquire pair).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Threads that get a slot of their own; more threads share one slot.
pub const MAX_THREAD_SLOTS: usize = 64;

/// Index of the shared slot.
const SHARED: usize = MAX_THREAD_SLOTS;

static SLOT_USED: [AtomicBool; MAX_THREAD_SLOTS] =
    [const { AtomicBool::new(false) }; MAX_THREAD_SLOTS];

/// A claimed slot index, released when the owning thread exits.
struct SlotHandle(usize);

impl SlotHandle {
    fn claim() -> Self {
        for (i, used) in SLOT_USED.iter().enumerate() {
            if used
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return SlotHandle(i);
            }
        }
        SlotHandle(SHARED)
    }
}

impl Drop for SlotHandle {
    fn drop(&mut self) {
        // Bumps made later in this thread's teardown use the shared slot.
        let _ = SLOT_INDEX.try_with(|i| i.set(SHARED));
        if let Some(used) = SLOT_USED.get(self.0) {
            // Release: the next owner's claim (acquire) sees every value
            // this thread stored into the slot.
            used.store(false, Ordering::Release);
        }
    }
}

/// Not claimed yet.
const UNCLAIMED: usize = usize::MAX;

thread_local! {
    /// This thread's slot index, read on every bump: a constant-initialised
    /// cell (no lazy-initialisation or destructor state to check).
    static SLOT_INDEX: std::cell::Cell<usize> = const { std::cell::Cell::new(UNCLAIMED) };
    /// Owns the claimed index and gives it back when the thread exits.
    static SLOT: SlotHandle = SlotHandle::claim();
}

/// This thread's slot index ([`SHARED`] when it has none).
#[inline(always)]
fn my_slot() -> usize {
    let i = SLOT_INDEX.try_with(std::cell::Cell::get).unwrap_or(SHARED);
    if i == UNCLAIMED { claim_slot() } else { i }
}

/// First bump on this thread: claim a slot (registering its release).
#[cold]
#[inline(never)]
fn claim_slot() -> usize {
    let i = SLOT.try_with(|s| s.0).unwrap_or(SHARED);
    let _ = SLOT_INDEX.try_with(|c| c.set(i));
    i
}

/// One slot: `N` counters on their own cache line(s).
#[repr(align(64))]
struct Slot<const N: usize>([AtomicU64; N]);

impl<const N: usize> Default for Slot<N> {
    fn default() -> Self {
        Slot(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

/// `N` event counters, each kept per thread (see the module docs).
pub struct ThreadCounters<const N: usize> {
    slots: Box<[Slot<N>]>,
}

impl<const N: usize> Default for ThreadCounters<N> {
    fn default() -> Self {
        ThreadCounters {
            slots: (0..=MAX_THREAD_SLOTS).map(|_| Slot::default()).collect(),
        }
    }
}

impl<const N: usize> std::fmt::Debug for ThreadCounters<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries((0..N).map(|i| self.get(i))).finish()
    }
}

impl<const N: usize> ThreadCounters<N> {
    /// All counters at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add `n` to counter `i` (ignored when `i >= N`).
    #[inline(always)]
    pub fn add(&self, i: usize, n: u64) {
        let s = my_slot();
        let Some(c) = self.slots.get(s).and_then(|slot| slot.0.get(i)) else {
            return;
        };
        if s == SHARED {
            c.fetch_add(n, Ordering::Relaxed);
        } else {
            // Single writer (this thread owns the slot): no locked RMW.
            c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
        }
    }

    /// Add 1 to counter `i`.
    #[inline]
    pub fn bump(&self, i: usize) {
        self.add(i, 1);
    }

    /// The sum of counter `i` over every slot (0 when `i >= N`). Bumps
    /// racing with the sum may or may not be included.
    pub fn get(&self, i: usize) -> u64 {
        self.slots
            .iter()
            .filter_map(|s| s.0.get(i))
            .fold(0u64, |a, c| a.wrapping_add(c.load(Ordering::Relaxed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn thread_counters_sum_over_threads_and_survive_exit() {
        let c = Arc::new(ThreadCounters::<3>::new());
        let hs: Vec<_> = (0..6)
            .map(|t| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        c.bump(0);
                        c.add(2, t);
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(c.get(0), 60_000);
        assert_eq!(c.get(1), 0);
        assert_eq!(c.get(2), 10_000 * (1 + 2 + 3 + 4 + 5));
        c.add(7, 1); // out of range: ignored
        assert_eq!(c.get(7), 0);
    }

    // More live threads than slots: the rest share the atomic slot and no
    // count is lost.
    #[test]
    fn thread_counters_more_threads_than_slots_lose_nothing() {
        let c = Arc::new(ThreadCounters::<1>::new());
        let barrier = Arc::new(std::sync::Barrier::new(MAX_THREAD_SLOTS + 8));
        let hs: Vec<_> = (0..MAX_THREAD_SLOTS + 8)
            .map(|_| {
                let (c, b) = (c.clone(), barrier.clone());
                std::thread::spawn(move || {
                    c.bump(0);
                    // Every thread holds its slot until all have bumped.
                    b.wait();
                    for _ in 0..1000 {
                        c.bump(0);
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(c.get(0), (MAX_THREAD_SLOTS as u64 + 8) * 1001);
    }
}
