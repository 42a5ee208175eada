//! x86_64 guests: the guest-physical layout and e820 map ([`layout`]), the Linux boot protocol
//! ([`boot`]), ACPI tables ([`acpi`]), CPUID ([`cpuid`]), the userspace IOAPIC ([`ioapic`]),
//! the ACPI power-management ports ([`acpi_pm`]), PCI configuration through ports CF8/CFC
//! ([`pci_io`]) and the VT-d unit (`vtd`), plus [`platform`], which puts the legacy
//! devices on the buses.

pub mod acpi;
pub mod acpi_pm;
pub mod boot;
pub mod cpuid;
pub mod ioapic;
pub mod layout;
pub mod pci_io;
pub mod platform;
#[cfg(feature = "vtd")]
pub(crate) mod vtd;
#[cfg(not(feature = "vtd"))]
#[path = "vtd_disabled.rs"]
pub(crate) mod vtd;

use std::path::Path;
use std::sync::Arc;

use vm_memory::{GuestAddress, GuestMemoryMmap};

use crate::error::{Error, Result};
use crate::iommu::IommuUnit;

/// Command line the VMM always gives an x86 kernel: console on COM1, no port 0x80 delays
/// (every port access is an exit), reboot through ACPI, reboot (which ends the VMM) on panic.
pub const BASE_CMDLINE: &str = "console=ttyS0 io_delay=none reboot=acpi panic=-1 pci=realloc=off";

/// What the guest boots.
#[derive(Debug, Clone, Copy)]
pub struct GuestBoot<'a> {
    /// bzImage or ELF vmlinux.
    pub kernel: &'a Path,
    /// Initramfs.
    pub initrd: Option<&'a Path>,
    /// Appended to [`BASE_CMDLINE`].
    pub append: Option<&'a str>,
    /// RAM size in bytes.
    pub memory: u64,
    /// vCPU count (for the MADT).
    pub vcpus: u8,
}

/// A loaded guest: where the boot CPU starts and the command line it got.
#[derive(Debug, Clone)]
pub struct LoadedGuest {
    /// 64-bit entry point (guest-physical).
    pub entry: u64,
    /// The whole kernel command line.
    pub cmdline: String,
}

/// Writes the guest's memory contents: the kernel, the initramfs, the ACPI tables (with the
/// IOMMU unit's table, DMAR, when there is one) and the boot parameters (zero page, e820,
/// command line) and boot page tables.
pub fn load_guest(
    mem: &GuestMemoryMmap,
    g: &GuestBoot<'_>,
    unit: Option<&Arc<dyn IommuUnit>>,
) -> Result<LoadedGuest> {
    let kernel = boot::load_kernel(mem, g.kernel)?;
    let initrd = match g.initrd {
        Some(p) => Some(boot::load_initrd(
            mem,
            g.memory,
            p,
            boot::initrd_addr_max(&kernel),
            kernel.end,
        )?),
        None => None,
    };
    let extra_tables = unit
        .map(|u| vec![u.acpi_table(acpi::IOAPIC_ID)])
        .unwrap_or_default();
    let tables = acpi::build(&acpi::AcpiConfig {
        vcpus: g.vcpus,
        extra_tables,
    })
    .map_err(Error::Setup)?;
    for t in &tables {
        vm_memory::Bytes::write_slice(mem, &t.bytes, GuestAddress(t.addr))
            .map_err(|e| Error::Setup(format!("writing ACPI tables: {e}")))?;
    }
    let cmdline = boot::build_cmdline(BASE_CMDLINE, g.append)?;
    boot::write_boot_params(mem, g.memory, &kernel, &cmdline, initrd, layout::ACPI_START)?;
    boot::write_boot_tables(mem)?;
    Ok(LoadedGuest {
        entry: kernel.entry,
        cmdline: cmdline
            .as_cstring()
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_default(),
    })
}
