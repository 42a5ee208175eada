//! Everything that talks to KVM: the VM (memory slots, split irqchip,
//! ioeventfd/irqfd, GSI routing, MSI injection) and the vCPUs ([`vcpu`]).
//!
//! Interrupts: KVM's split irqchip (KVM_CAP_SPLIT_IRQCHIP): the local APICs
//! are in the kernel; the IOAPIC is in user space
//! ([`crate::arch::x86_64::ioapic`]); there is no PIC and no PIT (the platform is
//! ACPI hardware-reduced, Linux uses the local APIC timer and kvm-clock).
//! Every device interrupt goes through the interrupt router ([`irq`]): MSI
//! routes computed after interrupt remapping, injected with irqfds and
//! KVM_IRQ_LINE. The IOMMU's own interrupts (fault events, invalidation
//! and page request events), which VT-d does not remap (5.1.6), go through
//! [`KvmMsi`] (KVM_SIGNAL_MSI).

pub mod irq;
pub mod vcpu;

use std::sync::Arc;

use iommu_emulator::{MsiMessage, MsiSink};
use kvm_bindings::{
    KVM_CAP_SPLIT_IRQCHIP, KVM_CAP_X2APIC_API, KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK,
    KVM_X2APIC_API_USE_32BIT_IDS, kvm_enable_cap, kvm_msi, kvm_userspace_memory_region,
};
use kvm_ioctls::{Cap, IoEventAddress, Kvm, NoDatamatch, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use crate::error::{Error, Result};
use crate::pci::config::{high_u32, low_u32};

/// Where KVM puts the TSS it needs on Intel (three pages; inside the MMIO hole).
const TSS_ADDRESS: usize = 0xfffb_d000;
/// Identity-map page for real mode on Intel.
const IDENTITY_MAP_ADDRESS: u64 = 0xfffb_c000;

/// Open /dev/kvm, turning the usual failures into plain words.
pub fn open_kvm() -> Result<Kvm> {
    if !std::path::Path::new("/dev/kvm").exists() {
        return Err(Error::KvmAbsent);
    }
    Kvm::new().map_err(|e| match e.errno() {
        libc::EACCES | libc::EPERM => Error::KvmPermission,
        libc::ENOENT | libc::ENODEV | libc::ENXIO => Error::KvmAbsent,
        _ => Error::Kvm {
            what: "opening /dev/kvm",
            source: e,
        },
    })
}

/// A VM with guest memory and the split irqchip.
pub struct Vm {
    /// The KVM system handle.
    pub kvm: Kvm,
    /// The VM handle.
    pub fd: Arc<VmFd>,
    /// KVM_X2APIC_API is on: 32-bit destination IDs in MSI routes (bits
    /// 31:8 in the upper address word), no xAPIC broadcast quirk.
    pub x2apic_api: bool,
}

impl Vm {
    /// Create the VM with a split irqchip (the IOAPIC's pins reserved as
    /// GSIs 0..24) and map `mem`.
    pub fn new(kvm: Kvm, mem: &GuestMemoryMmap) -> Result<Vm> {
        for (cap, name) in [
            (Cap::SplitIrqchip, "a split irqchip (KVM_CAP_SPLIT_IRQCHIP)"),
            (Cap::IrqRouting, "GSI routing"),
            (Cap::Ioeventfd, "ioeventfd"),
            (Cap::Irqfd, "irqfd"),
            (Cap::SignalMsi, "KVM_SIGNAL_MSI"),
            (Cap::UserMemory, "user memory slots"),
        ] {
            if !kvm.check_extension(cap) {
                return Err(Error::KvmCapability(name));
            }
        }
        let fd = kvm.create_vm().map_err(Error::kvm("creating the VM"))?;
        fd.set_tss_address(TSS_ADDRESS)
            .map_err(Error::kvm("setting the TSS address"))?;
        // Only needed (and only accepted) on Intel; AMD ignores it.
        let _ = fd.set_identity_map_address(IDENTITY_MAP_ADDRESS);
        // KVM API 4.1 / 7.23: KVM_CAP_SPLIT_IRQCHIP, args[0] = routes
        // reserved for the userspace IOAPIC; before any vCPU exists.
        let mut split = kvm_enable_cap {
            cap: KVM_CAP_SPLIT_IRQCHIP,
            ..Default::default()
        };
        split.args[0] = crate::arch::x86_64::ioapic::IOAPIC_PINS as u64;
        fd.enable_cap(&split)
            .map_err(Error::kvm("enabling the split irqchip"))?;
        // KVM API 7.22: 32-bit APIC IDs in MSI routes (x2APIC
        // destinations from interrupt remapping), as QEMU does with a
        // split irqchip. Optional: without it destinations are 8 bits.
        let x2apic_flags = KVM_X2APIC_API_USE_32BIT_IDS | KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK;
        let supported = u32::try_from(fd.check_extension_int(Cap::X2ApicApi)).unwrap_or(0);
        let x2apic_api = supported & x2apic_flags == x2apic_flags && {
            let mut c = kvm_enable_cap {
                cap: KVM_CAP_X2APIC_API,
                ..Default::default()
            };
            c.args[0] = u64::from(x2apic_flags);
            match fd.enable_cap(&c) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(
                        "KVM_CAP_X2APIC_API: {e}; x2APIC destinations limited to 8 bits"
                    );
                    false
                }
            }
        };
        for (slot, region) in mem.iter().enumerate() {
            let slot = u32::try_from(slot).map_err(|_| {
                Error::Setup(format!("guest memory region {slot} has no KVM slot number"))
            })?;
            let r = kvm_userspace_memory_region {
                slot,
                flags: 0,
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: region.as_ptr() as u64,
            };
            // SAFETY: the region is a live mmap owned by `mem`, which the VMM
            // keeps alive (it is cloned into every device and never unmapped)
            // until the process exits; the slot range does not overlap others.
            unsafe { fd.set_user_memory_region(r) }.map_err(Error::kvm("mapping guest memory"))?;
        }
        Ok(Vm {
            kvm,
            fd: Arc::new(fd),
            x2apic_api,
        })
    }

    /// Make writes to `addr` (any size) signal `fd` without leaving the kernel.
    pub fn register_ioevent(&self, fd: &EventFd, addr: u64) -> Result<()> {
        self.fd
            .register_ioevent(fd, &IoEventAddress::Mmio(addr), NoDatamatch)
            .map_err(Error::kvm("registering an ioeventfd"))
    }
}

/// Moves ioeventfds when a BAR moves.
pub fn move_ioevents(vm: &VmFd, fds: &[EventFd], stride: u64, old: Option<u64>, new: Option<u64>) {
    // The guest places the BAR: an address that does not fit is skipped (the notification
    // then reaches the device through the MMIO exit instead).
    let at = |base: u64, i: usize| {
        u64::try_from(i)
            .ok()
            .and_then(|i| i.checked_mul(stride))
            .and_then(|off| base.checked_add(off))
    };
    for (i, fd) in fds.iter().enumerate() {
        if let Some(o) = old.and_then(|o| at(o, i)) {
            let _ = vm.unregister_ioevent(fd, &IoEventAddress::Mmio(o), NoDatamatch);
        }
        if let Some(n) = new.and_then(|n| at(n, i))
            && let Err(e) = vm.register_ioevent(fd, &IoEventAddress::Mmio(n), NoDatamatch)
        {
            tracing::warn!("ioeventfd at {n:#x}: {e}");
        }
    }
}

/// The KVM side of the device manager ([`crate::device_manager::VmBackend`]): GSI routes and
/// irqfds for the IRQ router, KVM_SIGNAL_MSI for the IOMMU's own interrupts, ioeventfds for
/// virtqueue notifications.
pub struct KvmBackend {
    vm: Arc<VmFd>,
    msi: Arc<KvmMsi>,
}

impl KvmBackend {
    /// The backend of `vm`.
    pub fn new(vm: Arc<VmFd>) -> Self {
        KvmBackend {
            msi: Arc::new(KvmMsi::new(vm.clone())),
            vm,
        }
    }
}

impl crate::device_manager::VmBackend for KvmBackend {
    fn gsi(&self) -> Arc<dyn irq::GsiBackend> {
        Arc::new(irq::KvmGsi::new(self.vm.clone()))
    }
    fn direct_msi(&self) -> Arc<dyn MsiSink> {
        self.msi.clone()
    }
    fn direct_msi_dropped(&self) -> u64 {
        self.msi.dropped()
    }
    fn move_ioevents(&self, fds: &[EventFd], stride: u64, old: Option<u64>, new: Option<u64>) {
        move_ioevents(&self.vm, fds, stride, old, new)
    }
}

/// MSIs into the VM with KVM_SIGNAL_MSI: the IOMMU's own interrupts, which
/// are not subject to interrupt remapping (VT-d 5.1.6).
pub struct KvmMsi {
    vm: Arc<VmFd>,
    dropped: std::sync::atomic::AtomicU64,
}

impl KvmMsi {
    /// Inject into `vm`.
    pub fn new(vm: Arc<VmFd>) -> Self {
        KvmMsi {
            vm,
            dropped: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// MSIs KVM refused.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl MsiSink for KvmMsi {
    fn raise_msi(&self, msg: MsiMessage) {
        let m = kvm_msi {
            address_lo: low_u32(msg.addr),
            address_hi: high_u32(msg.addr),
            data: msg.data,
            ..Default::default()
        };
        if let Err(e) = self.vm.signal_msi(m) {
            self.dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!("MSI {:#x}/{:#x} not delivered: {e}", msg.addr, msg.data);
        }
    }
}
