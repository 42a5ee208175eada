//! The x86 platform devices on the buses: the userspace IOAPIC, COM1 (its interrupt on IOAPIC
//! pin 4), the i8042 reset line, the ACPI PM ports, the test-exit port, and PCI configuration
//! through CF8/CFC. The PCI functions themselves are the device manager's (shared with other
//! architectures).

use std::sync::{Arc, Mutex};

use super::acpi;
use super::acpi_pm::{ACPI_PM_LEN, ACPI_PM_PORT, AcpiPm};
use super::ioapic::{IOAPIC_MMIO_SIZE, Ioapic, IoapicLine};
use super::layout;
use super::pci_io::PciConfigIo;
use crate::device_manager::{DeviceManager, PciWindows, VmDevice};
use crate::devices::console::ConsoleOut;
use crate::devices::debug_exit::{DEBUG_EXIT_PORT, DebugExit};
use crate::devices::serial::{COM1_IRQ, COM1_PORT, I8042, I8042_PORT, ResetTrigger, SerialDevice};
use crate::error::Result;
use crate::exit::ExitSink;
use crate::pci::PciRoot;

/// The x86 guest's console: COM1 raising IOAPIC pin 4, printing to stdout.
pub type Console = ConsoleTo<std::io::Stdout>;

/// COM1 raising IOAPIC pin 4, printing to `W` (stdout in the VMM, a sink in the fuzzer).
pub type ConsoleTo<W> = SerialDevice<IoapicLine, ConsoleOut<W>>;

/// The PCI windows of the x86 layout.
pub const PCI_WINDOWS: PciWindows = PciWindows {
    ecam_start: layout::ECAM_START,
    ecam_size: layout::ECAM_SIZE,
    mmio_start: layout::PCI_MMIO_START,
    mmio_size: layout::PCI_MMIO_SIZE,
};

/// The platform devices other parts of the VMM talk to.
pub struct Platform<W: std::io::Write + Send = std::io::Stdout> {
    /// The IOAPIC (vCPUs deliver EOIs to it).
    pub ioapic: Arc<Ioapic>,
    /// COM1 (the event loop feeds it host input).
    pub console: Arc<Mutex<ConsoleTo<W>>>,
}

/// Adds the IOAPIC and the legacy port devices to `dm`, the console printing to stdout.
pub fn add_devices(dm: &mut DeviceManager, exit: &Arc<dyn ExitSink>) -> Result<Platform> {
    add_devices_with_console(dm, exit, std::io::stdout())
}

/// [`add_devices`] with the console printing to `out` (the fuzzer gives it a sink).
pub fn add_devices_with_console<W: std::io::Write + Send + 'static>(
    dm: &mut DeviceManager,
    exit: &Arc<dyn ExitSink>,
    out: W,
) -> Result<Platform<W>> {
    let ioapic = Arc::new(Ioapic::new(acpi::IOAPIC_ID, dm.router().clone()));
    dm.add_mmio(ioapic.clone(), layout::IOAPIC_START, IOAPIC_MMIO_SIZE)?;
    dm.add_device(Arc::new(IoapicHandle(ioapic.clone())));
    let console: Arc<Mutex<ConsoleTo<W>>> = Arc::new(Mutex::new(SerialDevice::new(
        IoapicLine {
            ioapic: ioapic.clone(),
            pin: COM1_IRQ as usize,
        },
        ConsoleOut::new(out, exit.clone()),
    )));
    dm.add_pio(console.clone(), u64::from(COM1_PORT), 8)?;
    dm.add_pio(
        Arc::new(Mutex::new(I8042(vm_superio::I8042Device::new(
            ResetTrigger(exit.clone()),
        )))),
        u64::from(I8042_PORT),
        5,
    )?;
    dm.add_pio(
        Arc::new(AcpiPm::new(exit.clone())),
        u64::from(ACPI_PM_PORT),
        u64::from(ACPI_PM_LEN),
    )?;
    dm.add_pio(
        Arc::new(DebugExit::new(exit.clone())),
        u64::from(DEBUG_EXIT_PORT),
        1,
    )?;
    Ok(Platform { ioapic, console })
}

/// PCI configuration mechanism #1 on ports 0xcf8-0xcff (for [`DeviceManager::seal`]).
pub fn add_pci_ports(dm: &mut DeviceManager, root: &Arc<PciRoot>) -> Result<()> {
    dm.add_pio(Arc::new(PciConfigIo::new(root.clone())), 0xcf8, 8)
}

/// The IOAPIC's statistics line.
struct IoapicHandle(Arc<Ioapic>);

impl VmDevice for IoapicHandle {
    fn name(&self) -> String {
        "ioapic".into()
    }

    fn stats(&self) -> Option<String> {
        let s = self.0.stats();
        Some(format!(
            "{} sent, {} blocked by remapping, {} EOIs",
            s.sent, s.blocked, s.eois
        ))
    }
}
