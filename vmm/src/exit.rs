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

/// The flight recorder, which lives in [`crate::diag::recorder`] now; kept under this
/// name so that `crate::exit::recorder::record(...)` calls still build.
pub use crate::diag::recorder;

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
