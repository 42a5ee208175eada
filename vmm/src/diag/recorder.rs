//! The flight recorder: what the VMM did last, kept per thread and read only when a report
//! asks for it.
//!
//! Every thread that records (each vCPU thread, the event-loop thread that serves virtio-blk
//! and sends MSIs, any device worker) owns one ring of [`RING_CAPACITY`] events. A thread
//! claims a free ring from a fixed table of [`MAX_RINGS`] at its first event (one
//! compare-and-swap per ring tried, and the ring's one allocation if the slot was never used
//! before) and gives it back when it exits; the events stay in the ring and merge into the
//! history until a later thread that claims the ring overwrites them.
//!
//! [`record`] is the hot path. It touches only: the calling thread's thread-local ring index,
//! the mutex of the thread's own ring (uncontended: only [`recent`] takes it too, once per
//! report and only long enough to copy the ring out), the monotonic clock (`Instant::now`,
//! the vDSO) and one slot of the ring. No lock or counter is shared between threads, nothing
//! is allocated and nothing is formatted. The recorder's two shared words are written off the
//! hot path only: the start instant once, and the dropped-events counter only when all
//! [`MAX_RINGS`] rings are taken (more recording threads than the VMM creates for 64 vCPUs).
//!
//! [`recent`] merges the rings by timestamp (ties broken by ring and per-ring sequence number,
//! so one thread's events stay in its order), which gives a history consistent with what the
//! threads saw: an event recorded after another thread's event became visible to it (through
//! a lock, a channel, an eventfd) sorts after it (the clock is monotonic across CPUs).

use std::cell::Cell;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Instant;

/// Events kept per ring (per recording thread).
pub const RING_CAPACITY: usize = 256;

/// Rings in the table: 64 vCPUs, the event loop and device workers, with room to spare.
pub const MAX_RINGS: usize = 96;

/// One recorded event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A port access by a vCPU (`data`: the value written or read back).
    Pio {
        /// vCPU index.
        vcpu: u8,
        /// Port.
        port: u16,
        /// Write (else read).
        write: bool,
        /// Access size in bytes.
        len: u8,
        /// Data (little-endian, up to 8 bytes).
        data: u64,
    },
    /// An MMIO access by a vCPU.
    Mmio {
        /// vCPU index.
        vcpu: u8,
        /// Guest-physical address.
        addr: u64,
        /// Write (else read).
        write: bool,
        /// Access size in bytes.
        len: u8,
        /// Data.
        data: u64,
    },
    /// A KVM_EXIT_IOAPIC_EOI.
    Eoi {
        /// vCPU index.
        vcpu: u8,
        /// Vector.
        vector: u8,
    },
    /// Another exit of a vCPU (its name).
    Exit {
        /// vCPU index.
        vcpu: u8,
        /// Exit name.
        what: &'static str,
    },
    /// An MSI the VMM sent for a PCI function (`rid`, as requested by
    /// the device; `remapped`: the message KVM got came from an IRTE).
    Msi {
        /// Requester ID.
        rid: u16,
        /// Address as sent by the device.
        addr: u64,
        /// Data as sent by the device.
        data: u32,
        /// Vector KVM was given.
        vector: u8,
        /// Delivered through an interrupt remapping entry.
        remapped: bool,
        /// KVM took it.
        ok: bool,
    },
    /// An IOAPIC pin raised into KVM.
    IoapicPin {
        /// Pin.
        pin: u8,
        /// Vector KVM was given (None: blocked or refused).
        vector: Option<u8>,
    },
    /// A virtio-blk request completed: the device wrote `written` bytes of
    /// data into buffers spanning `lo..hi` (device addresses: IOVAs with
    /// an IOMMU, guest-physical without) and the status byte at `status_at`.
    Blk {
        /// Head descriptor index.
        head: u16,
        /// Request type (0 read, 1 write, 4 flush, 8 get-id).
        rtype: u32,
        /// First sector.
        sector: u64,
        /// Data descriptors.
        descs: u16,
        /// Lowest data buffer address.
        lo: u64,
        /// End of the highest data buffer.
        hi: u64,
        /// Data bytes written into the guest.
        written: u32,
        /// Address of the status byte.
        status_at: u64,
        /// Status.
        status: u8,
        /// Used ring index after the request was added.
        used_idx: u16,
    },
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rw = |w: bool| if w { "write" } else { "read " };
        match *self {
            Event::Pio {
                vcpu,
                port,
                write,
                len,
                data,
            } => write!(
                f,
                "vcpu{vcpu} pio  {} {port:#06x}/{len} = {data:#x}",
                rw(write)
            ),
            Event::Mmio {
                vcpu,
                addr,
                write,
                len,
                data,
            } => write!(
                f,
                "vcpu{vcpu} mmio {} {addr:#x}/{len} = {data:#x}",
                rw(write)
            ),
            Event::Eoi { vcpu, vector } => {
                write!(f, "vcpu{vcpu} ioapic eoi vector {vector:#x}")
            }
            Event::Exit { vcpu, what } => write!(f, "vcpu{vcpu} exit {what}"),
            Event::Msi {
                rid,
                addr,
                data,
                vector,
                remapped,
                ok,
            } => write!(
                f,
                "msi  {:02x}:{:02x}.{} {addr:#x}/{data:#x} -> vector {vector:#x}{}{}",
                rid >> 8,
                (rid >> 3) & 0x1f,
                rid & 7,
                if remapped { " (remapped)" } else { " (compat)" },
                if ok { "" } else { " NOT DELIVERED" }
            ),
            Event::IoapicPin { pin, vector } => match vector {
                Some(v) => write!(f, "ioapic pin {pin} -> vector {v:#x}"),
                None => write!(f, "ioapic pin {pin} blocked/refused"),
            },
            Event::Blk {
                head,
                rtype,
                sector,
                descs,
                lo,
                hi,
                written,
                status_at,
                status,
                used_idx,
            } => write!(
                f,
                "blk  head {head} type {rtype} sector {sector} {descs} bufs {lo:#x}..{hi:#x} wrote {written} status {status} at {status_at:#x} used_idx {used_idx}"
            ),
        }
    }
}

/// One event of the merged history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    /// Nanoseconds since the recorder's first event.
    pub at_ns: u64,
    /// Ring (recording thread) it came from.
    pub ring: usize,
    /// Its number within the ring (per ring, from 1).
    pub seq: u64,
    /// Name of the thread that recorded it (`vcpu0`, ...; `?` when unnamed).
    pub thread: String,
    /// The event.
    pub event: Event,
}

#[derive(Clone, Copy)]
struct Stamped {
    at: Instant,
    seq: u64,
    event: Event,
}

/// A ring: events in `slots` (allocated at the first claim of the ring, never grown past
/// [`RING_CAPACITY`]), `written` the number of events ever written (the next one goes to
/// `written % RING_CAPACITY`), and the owning thread's name.
struct Ring {
    written: u64,
    slots: Vec<Stamped>,
    thread: String,
}

impl Ring {
    const fn new() -> Ring {
        Ring {
            written: 0,
            slots: Vec::new(),
            thread: String::new(),
        }
    }

    /// The hot path: one store, no allocation once the ring has its capacity.
    fn push(&mut self, at: Instant, event: Event) {
        self.written = self.written.wrapping_add(1);
        let e = Stamped {
            at,
            seq: self.written,
            event,
        };
        if self.slots.len() < RING_CAPACITY {
            self.slots.push(e);
        } else {
            let i = usize::try_from(
                self.written
                    .wrapping_sub(1)
                    .checked_rem(RING_CAPACITY as u64)
                    .unwrap_or(0),
            )
            .unwrap_or(0);
            if let Some(s) = self.slots.get_mut(i) {
                *s = e;
            }
        }
    }
}

struct Slot {
    claimed: AtomicBool,
    ring: Mutex<Ring>,
}

#[allow(clippy::declare_interior_mutable_const)] // only as the array initialiser below
const FREE_SLOT: Slot = Slot {
    claimed: AtomicBool::new(false),
    ring: Mutex::new(Ring::new()),
};

static SLOTS: [Slot; MAX_RINGS] = [FREE_SLOT; MAX_RINGS];
static START: OnceLock<Instant> = OnceLock::new();
static DROPPED: AtomicU64 = AtomicU64::new(0);

fn lock(slot: &Slot) -> MutexGuard<'_, Ring> {
    // A thread that panicked while holding its ring left a ring that is still consistent
    // (every update is one store): go on with it.
    slot.ring.lock().unwrap_or_else(|p| p.into_inner())
}

/// The calling thread's claim on a ring, given back when the thread exits.
struct Claim(Cell<Option<usize>>);

impl Claim {
    /// The thread's ring, claimed at the first call.
    fn ring(&self) -> Option<usize> {
        if let Some(i) = self.0.get() {
            return Some(i);
        }
        let i = SLOTS.iter().position(|s| {
            s.claimed
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        })?;
        if let Some(s) = SLOTS.get(i) {
            let mut r = lock(s);
            if r.slots.capacity() < RING_CAPACITY {
                r.slots.reserve_exact(RING_CAPACITY);
            }
            r.thread.clear();
            r.thread
                .push_str(std::thread::current().name().unwrap_or("?"));
        }
        self.0.set(Some(i));
        Some(i)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(s) = self.0.get().and_then(|i| SLOTS.get(i)) {
            s.claimed.store(false, Ordering::Release);
        }
    }
}

thread_local! {
    static CLAIM: Claim = const { Claim(Cell::new(None)) };
}

/// Record `event` in the calling thread's ring (its oldest event is overwritten when the
/// ring is full). Lock-free towards other threads: see the module documentation.
pub fn record(event: Event) {
    let at = Instant::now();
    START.get_or_init(|| at);
    let ring = CLAIM.try_with(Claim::ring).ok().flatten();
    match ring.and_then(|i| SLOTS.get(i)) {
        Some(s) => lock(s).push(at, event),
        None => {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Events not recorded because every ring was taken (or the thread was exiting).
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// The last `n` events of all rings merged, oldest first. Takes each ring's lock once, for
/// the time of one copy; allocates (report time only).
pub fn recent(n: usize) -> Vec<Recorded> {
    let Some(start) = START.get().copied() else {
        return Vec::new();
    };
    let mut all: Vec<(Instant, usize, u64, Event)> = Vec::new();
    let mut names: Vec<String> = Vec::with_capacity(MAX_RINGS);
    for (i, s) in SLOTS.iter().enumerate() {
        let r = lock(s);
        all.extend(r.slots.iter().map(|e| (e.at, i, e.seq, e.event)));
        names.push(if r.thread.is_empty() {
            "?".into()
        } else {
            r.thread.clone()
        });
    }
    all.sort_unstable_by_key(|&(at, ring, seq, _)| (at, ring, seq));
    let skip = all.len().saturating_sub(n);
    all.into_iter()
        .skip(skip)
        .map(|(at, ring, seq, event)| Recorded {
            at_ns: u64::try_from(at.saturating_duration_since(start).as_nanos())
                .unwrap_or(u64::MAX),
            ring,
            seq,
            thread: names.get(ring).cloned().unwrap_or_default(),
            event,
        })
        .collect()
}

/// The last `n` events as text, one per line: `  +seconds [thread #seq] event`.
pub fn dump(n: usize) -> String {
    let mut s = String::new();
    for r in recent(n) {
        let us = r.at_ns / 1_000;
        let _ = writeln!(
            s,
            "  +{}.{:06}s [{} #{}] {}",
            us / 1_000_000,
            us % 1_000_000,
            r.thread,
            r.seq,
            r.event
        );
    }
    let lost = dropped();
    if lost > 0 {
        let _ = writeln!(
            s,
            "  ({lost} events not recorded: all {MAX_RINGS} rings were taken)"
        );
    }
    s
}

/// Bytes of an access as a little-endian value (up to 8).
pub fn value(data: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    for (d, s) in b.iter_mut().zip(data) {
        *d = *s;
    }
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier, mpsc};
    use std::time::Duration;

    /// This test's own events (other tests of the binary record concurrently): port 0xbeef
    /// from vCPU indices no VM has (240 and up).
    fn mine(base: u8, threads: u8) -> Vec<(u8, u64)> {
        recent(usize::MAX)
            .into_iter()
            .filter_map(|r| match r.event {
                Event::Pio {
                    vcpu,
                    port: 0xbeef,
                    data,
                    ..
                } if (base..base + threads).contains(&vcpu) => Some((vcpu, data)),
                _ => None,
            })
            .collect()
    }

    fn pio(vcpu: u8, data: u64) -> Event {
        Event::Pio {
            vcpu,
            port: 0xbeef,
            write: true,
            len: 4,
            data,
        }
    }

    #[test]
    fn recorder_threads_recording_at_once_merge_into_one_consistent_history() {
        const THREADS: u8 = 4;
        const EACH: u64 = 200;
        const BASE: u8 = 240;
        // Free-running: every thread's events all there, each thread's in its order, the
        // merged list sorted by time. The threads stay alive until the history is read, so
        // no other test's thread takes over their rings in between.
        let start = Arc::new(Barrier::new(usize::from(THREADS) + 1));
        let read = Arc::new(Barrier::new(usize::from(THREADS) + 1));
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (start, read) = (start.clone(), read.clone());
                std::thread::spawn(move || {
                    start.wait();
                    for i in 0..EACH {
                        record(pio(BASE + t, i));
                    }
                    read.wait();
                    read.wait();
                })
            })
            .collect();
        start.wait();
        read.wait();
        let all = recent(usize::MAX);
        assert!(
            all.windows(2)
                .all(|w| (w[0].at_ns, w[0].ring) <= (w[1].at_ns, w[1].ring)),
            "merged by time"
        );
        let got = mine(BASE, THREADS);
        read.wait();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(got.len(), usize::from(THREADS) * EACH as usize, "{got:?}");
        for t in 0..THREADS {
            let seq: Vec<u64> = got
                .iter()
                .filter(|(v, _)| *v == BASE + t)
                .map(|(_, d)| *d)
                .collect();
            assert_eq!(seq, (0..EACH).collect::<Vec<_>>(), "thread {t}");
        }

        // Causally ordered: a token goes round three threads; each records its step while
        // it holds the token. The merged history must give the steps in order.
        const STEPS: u64 = 90;
        const CBASE: u8 = 248;
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..3).map(|_| mpsc::channel::<u64>()).unzip();
        let done = Arc::new(Barrier::new(4));
        let read = Arc::new(Barrier::new(4));
        let mut handles = Vec::new();
        for (t, rx) in rxs.into_iter().enumerate() {
            let next = txs[(t + 1) % 3].clone();
            let (done, read) = (done.clone(), read.clone());
            handles.push(std::thread::spawn(move || {
                while let Ok(step) = rx.recv() {
                    if step >= STEPS {
                        let _ = next.send(step);
                        break;
                    }
                    record(pio(CBASE + t as u8, step));
                    let _ = next.send(step + 1);
                }
                done.wait();
                read.wait();
            }));
        }
        txs[0].send(0).unwrap();
        drop(txs);
        done.wait();
        let got = mine(CBASE, 3);
        read.wait();
        for h in handles {
            h.join().unwrap();
        }
        let steps: Vec<u64> = got.iter().map(|(_, d)| *d).collect();
        assert_eq!(steps, (0..STEPS).collect::<Vec<_>>());
        assert!(
            got.iter()
                .enumerate()
                .all(|(i, (v, _))| *v == CBASE + (i % 3) as u8),
            "each step by the thread that held the token: {got:?}"
        );
    }

    #[test]
    fn recorder_records_while_every_other_ring_is_locked() {
        // The claim of "no lock shared by all vCPUs": two recording threads get rings of
        // their own, and with the lock of every ring but B's held (as if A were in the middle
        // of recording, or each ring were being read for a report), B still records.
        let own_ring = || CLAIM.with(|c| c.0.get()).expect("claimed");
        let (a_tx, a_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let a = std::thread::spawn(move || {
            record(pio(239, 0));
            a_tx.send(own_ring()).unwrap();
            let _ = stop_rx.recv();
        });
        let (b_tx, b_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel();
        let b = std::thread::spawn(move || {
            record(pio(239, 1));
            b_tx.send(own_ring()).unwrap();
            go_rx.recv().unwrap();
            for i in 2..=1000 {
                record(pio(239, i));
            }
            done_tx.send(()).unwrap();
        });
        let (ring_a, ring_b): (usize, usize) = (a_rx.recv().unwrap(), b_rx.recv().unwrap());
        assert_ne!(ring_a, ring_b, "two threads share a ring");
        let held: Vec<_> = SLOTS
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != ring_b)
            .map(|(_, s)| lock(s))
            .collect();
        go_tx.send(()).unwrap();
        let r = done_rx.recv_timeout(Duration::from_secs(20));
        drop(held);
        stop_tx.send(()).unwrap();
        a.join().unwrap();
        b.join().unwrap();
        assert!(r.is_ok(), "recording blocked on another thread's ring");
    }

    #[test]
    fn recorder_ring_is_bounded_and_keeps_the_newest_in_order() {
        let got = std::thread::spawn(|| {
            for i in 0..(RING_CAPACITY as u64 * 3 + 7) {
                record(pio(238, i));
            }
            let own = CLAIM.with(|c| c.0.get()).expect("claimed");
            let r = lock(&SLOTS[own]);
            assert!(r.slots.len() <= RING_CAPACITY);
            assert!(r.slots.capacity() <= RING_CAPACITY * 2, "no growth");
            drop(r);
            mine(238, 1)
        })
        .join()
        .unwrap();
        let data: Vec<u64> = got.iter().map(|(_, d)| *d).collect();
        let last = RING_CAPACITY as u64 * 3 + 6;
        assert_eq!(data.last(), Some(&last), "newest kept");
        assert_eq!(data.len(), RING_CAPACITY, "one ring's worth");
        assert!(data.windows(2).all(|w| w[0] + 1 == w[1]), "in order");
        assert!(dump(3).lines().count() <= 4);
        assert_eq!(value(&[0x34, 0x12]), 0x1234);
    }
}
