//! Hardware-reduced ACPI power management: the FADT's sleep control/status
//! registers (ACPI 6.5 §4.8.3.7) and reset register (§4.8.3.6), in port I/O.

use std::sync::Arc;

use crate::devices::BusDevice;
use crate::exit::{ExitReason, ExitSink};

/// First port of the block: sleep control at +0, sleep status at +1, reset at +2.
pub const ACPI_PM_PORT: u16 = 0x600;
/// Ports the block covers.
pub const ACPI_PM_LEN: u16 = 3;
/// Offset of the sleep control register.
pub const SLEEP_CONTROL: u64 = 0;
/// Offset of the sleep status register.
pub const SLEEP_STATUS: u64 = 1;
/// Offset of the reset register.
pub const RESET_REG: u64 = 2;
/// The value the FADT tells the OS to write into the reset register.
pub const RESET_VALUE: u8 = 0x1;
/// `\_S5` sleep type the DSDT announces.
pub const S5_SLEEP_TYPE: u8 = 5;

/// SLP_EN, bit 5 of the sleep control register (ACPI 6.5 §4.8.3.7).
const SLP_EN: u8 = 1 << 5;
/// SLP_TYP, bits 4:2.
const SLP_TYP_SHIFT: u8 = 2;
const SLP_TYP_MASK: u8 = 0x7 << SLP_TYP_SHIFT;

/// The device.
pub struct AcpiPm {
    exit: Arc<dyn ExitSink>,
}

impl AcpiPm {
    /// A block reporting to `exit`.
    pub fn new(exit: Arc<dyn ExitSink>) -> Self {
        AcpiPm { exit }
    }
}

impl BusDevice for AcpiPm {
    fn read(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&self, offset: u64, data: &[u8]) {
        let v = data.first().copied().unwrap_or(0);
        match offset {
            SLEEP_CONTROL if v & SLP_EN != 0 => {
                if (v & SLP_TYP_MASK) >> SLP_TYP_SHIFT == S5_SLEEP_TYPE {
                    self.exit.request_exit(ExitReason::PowerOff);
                } else {
                    tracing::warn!("guest asked for sleep state {:#x}: ignored", v);
                }
            }
            RESET_REG if v == RESET_VALUE => self.exit.request_exit(ExitReason::Reset),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::{ExitControl, Summary};

    fn control() -> Arc<ExitControl> {
        Arc::new(ExitControl::new(Box::new(|| {})))
    }

    #[test]
    fn acpi_pm_s5_with_slp_en_powers_off() {
        let c = control();
        let pm = AcpiPm::new(c.clone());
        pm.write(SLEEP_CONTROL, &[S5_SLEEP_TYPE << 2]);
        assert_eq!(c.reason(), None, "SLP_EN clear: no transition");
        pm.write(SLEEP_CONTROL, &[(S5_SLEEP_TYPE << 2) | SLP_EN]);
        assert_eq!(c.reason(), Some(ExitReason::PowerOff));
    }

    #[test]
    fn acpi_pm_reset_register_requests_reset() {
        let c = control();
        AcpiPm::new(c.clone()).write(RESET_REG, &[RESET_VALUE]);
        assert_eq!(c.reason(), Some(ExitReason::Reset));
    }

    #[test]
    fn debug_exit_write_records_code() {
        let c = control();
        let d = crate::devices::debug_exit::DebugExit::new(c.clone());
        d.write(0, &[0x21]);
        assert_eq!(c.reason(), Some(ExitReason::DebugExit(0x21)));
        c.record_summary(Summary {
            pass: 1,
            fail: 0,
            skip: 0,
        });
        assert_eq!(
            crate::exit::exit_status(&c.reason().unwrap(), c.summary()),
            0x43
        );
    }
}
