//! The serial console's output side: bytes go to the host (stdout), and
//! complete lines are scanned for the payload's summary and for a kernel panic.

use std::io::{self, Write};
use std::sync::Arc;

use crate::exit::{ExitReason, ExitSink, Summary};

/// Longest line kept for scanning; longer lines are scanned truncated.
pub const MAX_LINE: usize = 4096;

/// Marker Linux prints when it panics (kernel/panic.c).
pub const PANIC_MARKER: &str = "Kernel panic - not syncing";

/// A `Write` that forwards to `out` and scans lines.
pub struct ConsoleOut<W: Write> {
    out: W,
    line: Vec<u8>,
    exit: Arc<dyn ExitSink>,
}

impl<W: Write> ConsoleOut<W> {
    /// Forward to `out`, report to `exit`.
    pub fn new(out: W, exit: Arc<dyn ExitSink>) -> Self {
        ConsoleOut {
            out,
            line: Vec::with_capacity(256),
            exit,
        }
    }

    /// The inner writer.
    pub fn inner(&self) -> &W {
        &self.out
    }

    fn end_line(&mut self) {
        let text = String::from_utf8_lossy(&self.line);
        if let Some(s) = Summary::parse_line(&text) {
            self.exit.record_summary(s);
        }
        if text.contains(PANIC_MARKER) {
            let line = text.trim().to_string();
            self.exit.request_exit(ExitReason::GuestPanic(line));
        }
        self.line.clear();
    }
}

impl<W: Write> Write for ConsoleOut<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for &b in buf {
            if b == b'\n' {
                self.end_line();
            } else if self.line.len() < MAX_LINE {
                self.line.push(b);
            }
        }
        // A console the host cannot write to must not stop the guest.
        let _ = self.out.write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::ExitControl;

    #[test]
    fn console_summary_split_across_writes_is_recorded() {
        let c = Arc::new(ExitControl::new(Box::new(|| {})));
        let mut con = ConsoleOut::new(Vec::new(), c.clone());
        con.write_all(b"boot\nIOMMUTEST-SUMM").unwrap();
        assert_eq!(c.summary(), None);
        con.write_all(b"ARY pass=3 fail=0 skip=1\r\n").unwrap();
        assert_eq!(
            c.summary(),
            Some(Summary {
                pass: 3,
                fail: 0,
                skip: 1
            })
        );
        assert_eq!(con.inner().len(), 45);
        assert_eq!(c.reason(), None);
    }

    #[test]
    fn console_panic_line_requests_exit() {
        let c = Arc::new(ExitControl::new(Box::new(|| {})));
        let mut con = ConsoleOut::new(io::sink(), c.clone());
        con.write_all(b"[ 1.0] Kernel panic - not syncing: VFS: Unable to mount root fs\n")
            .unwrap();
        match c.reason() {
            Some(ExitReason::GuestPanic(l)) => assert!(l.contains("VFS"), "{l}"),
            r => panic!("expected panic, got {r:?}"),
        }
    }

    #[test]
    fn console_overlong_line_is_bounded() {
        let c = Arc::new(ExitControl::new(Box::new(|| {})));
        let mut con = ConsoleOut::new(io::sink(), c);
        con.write_all(&vec![b'x'; MAX_LINE * 3]).unwrap();
        assert_eq!(con.line.len(), MAX_LINE);
    }
}
