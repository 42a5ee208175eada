//! Everything that talks to KVM: the VM (memory slots, in-kernel irqchip,
//! ioeventfd/irqfd, MSI injection) and the vCPUs ([`vcpu`]).
//!
//! Interrupts: the irqchip (LAPICs, IOAPIC, PIC, PIT) is in the kernel for
//! now. Device MSIs are injected with KVM_SIGNAL_MSI through [`KvmMsi`], the
//! same [`MsiSink`] the IOMMU model uses for its own interrupts, so a split
//! irqchip with a userspace IOAPIC and interrupt remapping can later be put
//! in between without touching devices.

pub mod cpuid;
pub mod vcpu;

use std::sync::Arc;

use iommu_emulator::{MsiMessage, MsiSink};
use kvm_bindings::{KVM_PIT_SPEAKER_DUMMY, kvm_msi, kvm_pit_config, kvm_userspace_memory_region};
use kvm_ioctls::{Cap, IoEventAddress, Kvm, NoDatamatch, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use crate::error::{Error, Result};

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

/// A VM with guest memory and the in-kernel irqchip.
pub struct Vm {
    /// The KVM system handle.
    pub kvm: Kvm,
    /// The VM handle.
    pub fd: Arc<VmFd>,
}

impl Vm {
    /// Create the VM, the irqchip and the PIT, and map `mem`.
    pub fn new(kvm: Kvm, mem: &GuestMemoryMmap) -> Result<Vm> {
        for (cap, name) in [
            (Cap::Irqchip, "an in-kernel irqchip"),
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
        fd.create_irq_chip()
            .map_err(Error::kvm("creating the irqchip"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        fd.create_pit2(pit)
            .map_err(Error::kvm("creating the PIT"))?;
        for (slot, region) in mem.iter().enumerate() {
            let r = kvm_userspace_memory_region {
                slot: slot as u32,
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
        })
    }

    /// Make writes to `addr` (any size) signal `fd` without leaving the kernel.
    pub fn register_ioevent(&self, fd: &EventFd, addr: u64) -> Result<()> {
        self.fd
            .register_ioevent(fd, &IoEventAddress::Mmio(addr), NoDatamatch)
            .map_err(Error::kvm("registering an ioeventfd"))
    }

    /// Make `fd` raise IOAPIC/PIC line `gsi`.
    pub fn register_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<()> {
        self.fd
            .register_irqfd(fd, gsi)
            .map_err(Error::kvm("registering an irqfd"))
    }
}

/// Moves ioeventfds when a BAR moves.
pub fn move_ioevents(vm: &VmFd, fds: &[EventFd], stride: u64, old: Option<u64>, new: Option<u64>) {
    for (i, fd) in fds.iter().enumerate() {
        let off = i as u64 * stride;
        if let Some(o) = old {
            let _ = vm.unregister_ioevent(fd, &IoEventAddress::Mmio(o + off), NoDatamatch);
        }
        if let Some(n) = new
            && let Err(e) = vm.register_ioevent(fd, &IoEventAddress::Mmio(n + off), NoDatamatch)
        {
            tracing::warn!("ioeventfd at {:#x}: {e}", n + off);
        }
    }
}

/// MSIs into the VM with KVM_SIGNAL_MSI (device and IOMMU interrupts).
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
            address_lo: msg.addr as u32,
            address_hi: (msg.addr >> 32) as u32,
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

/// vm-superio's interrupt line for the UART: an irqfd.
pub struct EventFdTrigger(pub EventFd);

impl vm_superio::Trigger for EventFdTrigger {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}
