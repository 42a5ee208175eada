//! isa-debug-exit compatible port (QEMU's `isa-debug-exit,iobase=0xf4`):
//! a guest write of `code` ends the VMM with status `(code << 1) | 1`.

use std::sync::Arc;

use super::BusDevice;
use crate::exit::{ExitReason, ExitSink};

/// The port QEMU's x86 test setups use.
pub const DEBUG_EXIT_PORT: u16 = 0xf4;

/// The device.
pub struct DebugExit {
    exit: Arc<dyn ExitSink>,
}

impl DebugExit {
    /// A port reporting to `exit`.
    pub fn new(exit: Arc<dyn ExitSink>) -> Self {
        DebugExit { exit }
    }
}

impl BusDevice for DebugExit {
    fn read(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn write(&self, offset: u64, data: &[u8]) {
        if offset == 0 {
            // Only the low byte is meaningful (QEMU takes the written value as is;
            // Linux and test payloads write a byte).
            let code = data.first().copied().unwrap_or(0);
            self.exit.request_exit(ExitReason::DebugExit(code));
        }
    }
}
