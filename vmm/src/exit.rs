//! Why the VM stopped, and the VMM's exit status.

use std::fmt;
use std::sync::Mutex;

/// The payload's summary line, `IOMMUTEST-SUMMARY pass=N fail=M skip=K`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Tests passed.
    pub pass: u32,
    /// Tests failed.
    pub fail: u32,
    /// Tests skipped.
    pub skip: u32,
}

impl Summary {
    /// Parse a console line holding the summary marker anywhere in it.
    pub fn parse_line(line: &str) -> Option<Summary> {
        let rest = line.split("IOMMUTEST-SUMMARY").nth(1)?;
        let (mut pass, mut fail, mut skip) = (None, None, None);
        for word in rest.split_whitespace() {
            let Some((k, v)) = word.split_once('=') else {
                continue;
            };
            let v: u32 = v.parse().ok()?;
            match k {
                "pass" => pass = Some(v),
                "fail" => fail = Some(v),
                "skip" => skip = Some(v),
                _ => {}
            }
        }
        Some(Summary {
            pass: pass?,
            fail: fail?,
            skip: skip.unwrap_or(0),
        })
    }
}

/// Why the guest stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest wrote `code` to the isa-debug-exit port.
    DebugExit(u8),
    /// ACPI S5 or an equivalent power-off.
    PowerOff,
    /// The guest asked for a reset (i8042 or the ACPI reset register); the
    /// VMM ends instead of rebooting.
    Reset,
    /// A vCPU triple-faulted; the text is a register dump.
    TripleFault(String),
    /// The console showed a kernel panic; the text is that line.
    GuestPanic(String),
    /// The VMM hit an error it cannot go on from.
    Error(String),
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::DebugExit(c) => write!(f, "guest wrote {c:#x} to the debug-exit port"),
            ExitReason::PowerOff => f.write_str("guest powered off"),
            ExitReason::Reset => f.write_str("guest asked for a reset (not rebooting)"),
            ExitReason::TripleFault(dump) => write!(f, "guest triple fault\n{dump}"),
            ExitReason::GuestPanic(line) => write!(f, "guest kernel panic: {line}"),
            ExitReason::Error(e) => write!(f, "VMM error: {e}"),
        }
    }
}

/// Exit status when the guest panicked.
pub const STATUS_GUEST_PANIC: i32 = 3;
/// Exit status when a vCPU triple-faulted.
pub const STATUS_TRIPLE_FAULT: i32 = 4;
/// Exit status on a VMM error.
pub const STATUS_VMM_ERROR: i32 = 2;

/// The VMM's exit status: the debug-exit port wins (`(code << 1) | 1`, as
/// QEMU's isa-debug-exit); else on a clean power-off or reset, the summary
/// line decides (0 when nothing failed, 1 otherwise); no summary means 0.
pub fn exit_status(reason: &ExitReason, summary: Option<Summary>) -> i32 {
    match reason {
        ExitReason::DebugExit(code) => (i32::from(*code) << 1) | 1,
        ExitReason::PowerOff | ExitReason::Reset => match summary {
            Some(s) if s.fail > 0 => 1,
            _ => 0,
        },
        ExitReason::GuestPanic(_) => STATUS_GUEST_PANIC,
        ExitReason::TripleFault(_) => STATUS_TRIPLE_FAULT,
        ExitReason::Error(_) => STATUS_VMM_ERROR,
    }
}

/// Where devices report that the VM should stop.
pub trait ExitSink: Send + Sync {
    /// Ask the VMM to stop; the first reason wins.
    fn request_exit(&self, reason: ExitReason);
    /// Record the payload's summary line.
    fn record_summary(&self, summary: Summary);
}

/// The shared exit state: first reason, summary, and a waker for the main loop.
pub struct ExitControl {
    reason: Mutex<Option<ExitReason>>,
    summary: Mutex<Option<Summary>>,
    waker: Box<dyn Fn() + Send + Sync>,
}

impl ExitControl {
    /// `waker` is called after the first exit request (e.g. writes an eventfd).
    pub fn new(waker: Box<dyn Fn() + Send + Sync>) -> Self {
        ExitControl {
            reason: Mutex::new(None),
            summary: Mutex::new(None),
            waker,
        }
    }

    /// The recorded reason, if any.
    pub fn reason(&self) -> Option<ExitReason> {
        self.reason.lock().map(|r| r.clone()).unwrap_or(None)
    }

    /// The recorded summary, if any.
    pub fn summary(&self) -> Option<Summary> {
        self.summary.lock().map(|s| *s).unwrap_or(None)
    }
}

impl ExitSink for ExitControl {
    fn request_exit(&self, reason: ExitReason) {
        let Ok(mut r) = self.reason.lock() else {
            return;
        };
        if r.is_none() {
            *r = Some(reason);
            drop(r);
            (self.waker)();
        }
    }

    fn record_summary(&self, summary: Summary) {
        if let Ok(mut s) = self.summary.lock() {
            *s = Some(summary);
        }
    }
}

/// A small flight recorder of what the VMM did last: vCPU exits (port and
/// MMIO accesses with their data, EOIs), interrupts it sent into KVM and
/// virtio-blk requests with the guest buffers they wrote. It is printed when
/// a vCPU triple-faults, so a rare failure explains itself (the vCPU's own
/// state is often lost: on AMD, KVM resets the vCPU on a shutdown
/// intercept). Bounded ([`RECORDER_CAPACITY`] events), one short lock per
/// event; every event costs far less than the exit it records.
pub mod recorder {
    use std::collections::VecDeque;
    use std::fmt::Write as _;
    use std::sync::{Mutex, OnceLock};
    use std::time::Instant;

    /// Events kept.
    pub const RECORDER_CAPACITY: usize = 512;

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

    struct Ring {
        start: Instant,
        seq: u64,
        events: VecDeque<(u64, u64, Event)>,
    }

    fn ring() -> &'static Mutex<Ring> {
        static RING: OnceLock<Mutex<Ring>> = OnceLock::new();
        RING.get_or_init(|| {
            Mutex::new(Ring {
                start: Instant::now(),
                seq: 0,
                events: VecDeque::with_capacity(RECORDER_CAPACITY),
            })
        })
    }

    /// Record `event` (the oldest event is dropped when the ring is full).
    pub fn record(event: Event) {
        let Ok(mut r) = ring().lock() else {
            return;
        };
        let us = u64::try_from(r.start.elapsed().as_micros()).unwrap_or(u64::MAX);
        r.seq = r.seq.wrapping_add(1);
        let seq = r.seq;
        if r.events.len() >= RECORDER_CAPACITY {
            r.events.pop_front();
        }
        r.events.push_back((seq, us, event));
    }

    /// The last `n` events, oldest first: `#seq +seconds event` per line.
    pub fn recent(n: usize) -> Vec<(u64, u64, Event)> {
        let Ok(r) = ring().lock() else {
            return Vec::new();
        };
        let skip = r.events.len().saturating_sub(n);
        r.events.iter().skip(skip).copied().collect()
    }

    /// The last `n` events as text, one per line.
    pub fn dump(n: usize) -> String {
        let mut s = String::new();
        for (seq, us, e) in recent(n) {
            let _ = writeln!(s, "  #{seq} +{}.{:06}s {e}", us / 1_000_000, us % 1_000_000);
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn summary_line_parses_with_prefix_and_rejects_garbage() {
        assert_eq!(
            Summary::parse_line("[  3.2] IOMMUTEST-SUMMARY pass=5 fail=1 skip=2\r"),
            Some(Summary {
                pass: 5,
                fail: 1,
                skip: 2
            })
        );
        assert_eq!(Summary::parse_line("IOMMUTEST-SUMMARY pass=x fail=1"), None);
        assert_eq!(Summary::parse_line("IOMMUTEST-SUMMARY fail=1"), None);
        assert_eq!(Summary::parse_line("no marker pass=1 fail=0"), None);
    }

    #[test]
    fn exit_status_debug_exit_follows_qemu_convention() {
        assert_eq!(exit_status(&ExitReason::DebugExit(0), None), 1);
        assert_eq!(exit_status(&ExitReason::DebugExit(0x10), None), 0x21);
        let failing = Some(Summary {
            pass: 1,
            fail: 0,
            skip: 0,
        });
        assert_eq!(exit_status(&ExitReason::DebugExit(3), failing), 7);
    }

    #[test]
    fn exit_status_poweroff_uses_summary() {
        let s = |fail| {
            Some(Summary {
                pass: 2,
                fail,
                skip: 0,
            })
        };
        assert_eq!(exit_status(&ExitReason::PowerOff, s(0)), 0);
        assert_eq!(exit_status(&ExitReason::PowerOff, s(1)), 1);
        assert_eq!(exit_status(&ExitReason::Reset, None), 0);
        assert_eq!(
            exit_status(&ExitReason::GuestPanic("x".into()), s(0)),
            STATUS_GUEST_PANIC
        );
    }

    #[test]
    fn recorder_keeps_the_last_events_in_order_and_is_bounded() {
        use recorder::{Event, RECORDER_CAPACITY, recent, record};
        // Other tests in this binary may record concurrently: look for this test's own
        // events (port 0xbeef from a vCPU index no VM has) only.
        let mine = |e: &Event| matches!(e, Event::Pio { vcpu: 250, .. });
        for i in 0..(RECORDER_CAPACITY as u64 + 10) {
            record(Event::Pio {
                vcpu: 250,
                port: 0xbeef,
                write: true,
                len: 4,
                data: i,
            });
        }
        let all = recent(usize::MAX);
        assert!(all.len() <= RECORDER_CAPACITY);
        let data: Vec<u64> = all
            .iter()
            .filter(|(_, _, e)| mine(e))
            .map(|(_, _, e)| match e {
                Event::Pio { data, .. } => *data,
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(
            data.last(),
            Some(&(RECORDER_CAPACITY as u64 + 9)),
            "newest kept"
        );
        assert!(!data.contains(&0), "oldest dropped");
        assert!(data.windows(2).all(|w| w[0] < w[1]), "in order");
        let seqs: Vec<u64> = all.iter().map(|(s, _, _)| *s).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]));
        assert!(recorder::dump(3).lines().count() <= 3);
        assert_eq!(recorder::value(&[0x34, 0x12]), 0x1234);
    }

    #[test]
    fn exit_control_first_reason_wins_and_wakes_once() {
        let woken = Arc::new(AtomicU32::new(0));
        let w = woken.clone();
        let c = ExitControl::new(Box::new(move || {
            w.fetch_add(1, Ordering::SeqCst);
        }));
        c.request_exit(ExitReason::PowerOff);
        c.request_exit(ExitReason::Reset);
        assert_eq!(c.reason(), Some(ExitReason::PowerOff));
        assert_eq!(woken.load(Ordering::SeqCst), 1);
    }
}
