//! 8250 UART (vm-superio) at COM1, and the i8042 controller's reset line.

use std::io::Write;
use std::sync::Arc;

use vm_superio::{I8042Device, Serial, Trigger};

use super::MutBusDevice;
use crate::exit::{ExitReason, ExitSink};

/// COM1 base port.
pub const COM1_PORT: u16 = 0x3f8;
/// COM1's ISA interrupt.
pub const COM1_IRQ: u32 = 4;
/// i8042 data port; the command port is 4 bytes above it.
pub const I8042_PORT: u16 = 0x60;

/// COM1 on the port bus.
pub struct SerialDevice<T: Trigger, W: Write + Send> {
    serial: Serial<T, vm_superio::serial::NoEvents, W>,
}

impl<T: Trigger, W: Write + Send> SerialDevice<T, W> {
    /// A UART raising `irq` and writing to `out`.
    pub fn new(irq: T, out: W) -> Self {
        SerialDevice {
            serial: Serial::new(irq, out),
        }
    }

    /// Queue host input for the guest (bounded by the UART's FIFO).
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        self.serial.enqueue_raw_bytes(bytes).unwrap_or(0)
    }
}

impl<T: Trigger + Send, W: Write + Send> MutBusDevice for SerialDevice<T, W> {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let v = u8::try_from(offset).map_or(0xff, |o| self.serial.read(o));
        data.fill(0);
        if let Some(b) = data.first_mut() {
            *b = v;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (Ok(o), Some(&v)) = (u8::try_from(offset), data.first())
            && let Err(e) = self.serial.write(o, v)
        {
            tracing::warn!("serial: {e:?}");
        }
    }
}

/// The reset line of the i8042: asks the VMM to stop.
pub struct ResetTrigger(pub Arc<dyn ExitSink>);

impl Trigger for ResetTrigger {
    type E = std::convert::Infallible;
    fn trigger(&self) -> Result<(), Self::E> {
        self.0.request_exit(ExitReason::Reset);
        Ok(())
    }
}

/// i8042 keyboard controller (only the CPU reset command, 0xfe at 0x64).
pub struct I8042(pub I8042Device<ResetTrigger>);

impl MutBusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let v = u8::try_from(offset).map_or(0, |o| self.0.read(o));
        data.fill(0);
        if let Some(b) = data.first_mut() {
            *b = v;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (Ok(o), Some(&v)) = (u8::try_from(offset), data.first()) {
            let _ = self.0.write(o, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::ExitControl;

    #[test]
    fn i8042_reset_command_requests_reset() {
        let c = Arc::new(ExitControl::new(Box::new(|| {})));
        let mut dev = I8042(I8042Device::new(ResetTrigger(c.clone())));
        dev.write(4, &[0xfe]);
        assert_eq!(c.reason(), Some(ExitReason::Reset));
    }

    struct NoIrq;
    impl Trigger for NoIrq {
        type E = ();
        fn trigger(&self) -> Result<(), ()> {
            Ok(())
        }
    }

    #[test]
    fn serial_thr_write_reaches_output() {
        let mut dev = SerialDevice::new(NoIrq, Vec::new());
        dev.write(0, b"A");
        assert_eq!(dev.serial.writer(), b"A");
        let mut lsr = [0u8];
        dev.read(5, &mut lsr);
        assert_ne!(lsr[0] & 0x20, 0, "THR empty after write");
    }
}
