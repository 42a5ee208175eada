//! The device manager: the one place where devices are created and wired.
//!
//! Each device gets here its requester ID (the PCI bus/device/function, which is also its
//! StreamID behind an SMMU), its ranges on the port-I/O and MMIO buses, its interrupts (an
//! [`MsiSink`] of the IRQ router, tagged with its requester ID so interrupt remapping sees
//! the right source) and its IOMMU address space ([`DmaMemory`] through the IOMMU unit, traced
//! with `--trace`). Everything that runs later asks the manager for what it needs: the vCPUs
//! for the buses, the event loop for the devices' event subscribers, `--stats` for one line
//! per device ([`VmDevice`]).
//!
//! What is architecture-specific (the legacy x86 ports, the IOAPIC, CF8/CFC) is added by
//! [`crate::arch`] through the same calls ([`DeviceManager::add_pio`],
//! [`DeviceManager::add_mmio`], [`DeviceManager::add_device`]).

use std::sync::{Arc, Mutex};

use event_manager::MutEventSubscriber;
use iommu_emulator::trace::TraceSink;
use iommu_emulator::{MsiSink, Rid, SourceId};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use crate::cli::IommuSpec;
use crate::devices::{Bus, BusDevice};
use crate::error::{Error, Result};
use crate::event_loop::QueueHandler;
use crate::iommu::{self, IommuMmio, IommuUnit};
use crate::kvm::irq::{GsiBackend, IrqRouter};
use crate::pci::{PciEcam, PciMmio, PciRoot};
use crate::virtio::DmaMemory;
use crate::virtio::blk::Blk;
use crate::virtio::pci::{BAR_SIZE, NOTIFY_MULTIPLIER, VirtioPci};

/// What the device manager needs from the hypervisor: KVM in the VMM
/// ([`crate::kvm::KvmBackend`]), a recording fake in tests and fuzzers.
pub trait VmBackend: Send + Sync {
    /// GSI routes and irqfds for the IRQ router.
    fn gsi(&self) -> Arc<dyn GsiBackend>;
    /// Interrupts injected as they are, not remapped: the IOMMU unit's own (VT-d 5.1.6).
    fn direct_msi(&self) -> Arc<dyn MsiSink>;
    /// How many of those the hypervisor refused.
    fn direct_msi_dropped(&self) -> u64;
    /// Moves the ioeventfds `fds` (one per `stride` bytes) from base `old` to base `new`.
    fn move_ioevents(&self, fds: &[EventFd], stride: u64, old: Option<u64>, new: Option<u64>);
}

/// A device as the rest of the VMM sees it once it is wired: a name, statistics, and what it
/// must do when the VM stops.
pub trait VmDevice: Send + Sync {
    /// Name for messages and statistics (`virtio-blk 0`, `ioapic`).
    fn name(&self) -> String;
    /// One line of statistics for `--stats`; `None`: nothing to report.
    fn stats(&self) -> Option<String> {
        None
    }
    /// Called once after the VM stopped: make what the guest wrote durable (a disk's writes).
    fn stop(&self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Where a PCI function was put and how it reaches the rest of the machine.
pub struct PciSlot {
    /// Device/function number on bus 0.
    pub devfn: u8,
    /// Requester ID (bus 0).
    pub rid: Rid,
    /// The DMA source the IOMMU sees (`SourceId::Pci(rid)`).
    pub source: SourceId,
    /// The function's MSI/MSI-X messages, through interrupt remapping with `rid` as source.
    pub msi: Arc<dyn MsiSink>,
}

/// The machine's address-space layout as the device manager needs it (from the architecture).
#[derive(Debug, Clone, Copy)]
pub struct PciWindows {
    /// ECAM base (guest-physical).
    pub ecam_start: u64,
    /// ECAM size.
    pub ecam_size: u64,
    /// Base of the window BARs are placed in.
    pub mmio_start: u64,
    /// Size of that window.
    pub mmio_size: u64,
}

/// Creates and wires the devices of one VM.
pub struct DeviceManager {
    mem: GuestMemoryMmap,
    vm: Arc<dyn VmBackend>,
    windows: PciWindows,
    unit: Option<Arc<dyn IommuUnit>>,
    router: Arc<IrqRouter>,
    trace: Option<Arc<dyn TraceSink>>,
    direct: Arc<DirectMsiFilter>,
    pio: Bus,
    mmio: Bus,
    pci: PciRoot,
    disks: usize,
    devices: Vec<Arc<dyn VmDevice>>,
    subscribers: Vec<Box<dyn MutEventSubscriber + Send>>,
}

/// The wired machine, after [`DeviceManager::seal`]: buses ready for the vCPUs.
pub struct Machine {
    /// Port-I/O bus.
    pub pio: Arc<Bus>,
    /// MMIO bus.
    pub mmio: Arc<Bus>,
    /// The IOMMU unit (None: `--iommu none`).
    pub unit: Option<Arc<dyn IommuUnit>>,
    /// The IRQ router.
    pub router: Arc<IrqRouter>,
    /// The hypervisor side (for the count of refused direct MSIs).
    pub vm: Arc<dyn VmBackend>,
    /// The IOMMU unit's own interrupts on their way to the hypervisor (for its drop count).
    pub direct: Arc<DirectMsiFilter>,
    /// Every device that reports statistics or must stop cleanly, in creation order.
    pub devices: Vec<Arc<dyn VmDevice>>,
    /// Event-loop subscribers of the devices.
    pub subscribers: Vec<Box<dyn MutEventSubscriber + Send>>,
}

impl DeviceManager {
    /// A manager for the VM `vm` with guest memory `mem`: creates the IOMMU unit `spec` asks
    /// for (its own interrupts go straight to KVM, VT-d 5.1.6), the IRQ router (remapping
    /// through the unit) and, when there is a unit, its register window on the MMIO bus.
    pub fn new(
        vm: Arc<dyn VmBackend>,
        mem: GuestMemoryMmap,
        windows: PciWindows,
        spec: &IommuSpec,
        trace: Option<Arc<dyn TraceSink>>,
    ) -> Result<Self> {
        let direct = Arc::new(DirectMsiFilter::new(vm.direct_msi()));
        let unit = iommu::create(spec, direct.clone())?;
        let router = Arc::new(IrqRouter::new(
            vm.gsi(),
            unit.as_ref().and_then(|u| u.interrupt_remapper()),
            Arc::new(mem.clone()),
        ));
        if let Some(u) = &unit {
            u.set_interrupt_router(&router);
        }
        let mut dm = DeviceManager {
            mem,
            vm,
            windows,
            unit,
            router,
            trace,
            direct,
            pio: Bus::new(),
            mmio: Bus::new(),
            pci: PciRoot::new(),
            disks: 0,
            devices: Vec::new(),
            subscribers: Vec::new(),
        };
        if let Some(u) = dm.unit.clone() {
            dm.add_mmio(
                Arc::new(IommuMmio::new(u.clone(), dm.mem.clone())),
                u.mmio_base(),
                u.mmio_size(),
            )?;
        }
        Ok(dm)
    }

    /// Guest memory.
    pub fn mem(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// The IOMMU unit, if any.
    pub fn unit(&self) -> Option<&Arc<dyn IommuUnit>> {
        self.unit.as_ref()
    }

    /// The IRQ router.
    pub fn router(&self) -> &Arc<IrqRouter> {
        &self.router
    }

    /// Maps `dev` at `[base, base + len)` on the port-I/O bus.
    pub fn add_pio(&mut self, dev: Arc<dyn BusDevice>, base: u64, len: u64) -> Result<()> {
        self.pio
            .insert(dev, base, len)
            .map_err(|e| Error::Setup(format!("port I/O: {e}")))
    }

    /// Maps `dev` at `[base, base + len)` on the MMIO bus.
    pub fn add_mmio(&mut self, dev: Arc<dyn BusDevice>, base: u64, len: u64) -> Result<()> {
        self.mmio
            .insert(dev, base, len)
            .map_err(|e| Error::Setup(format!("MMIO: {e}")))
    }

    /// Records a device for statistics and the orderly stop.
    pub fn add_device(&mut self, dev: Arc<dyn VmDevice>) {
        self.devices.push(dev);
    }

    /// Adds an event-loop subscriber.
    pub fn add_subscriber(&mut self, s: Box<dyn MutEventSubscriber + Send>) {
        self.subscribers.push(s);
    }

    /// The next free PCI slot with its requester ID and interrupt sink.
    pub fn pci_slot(&self) -> Result<PciSlot> {
        let devfn = self
            .pci
            .next_devfn()
            .ok_or_else(|| Error::Setup("too many PCI devices".into()))?;
        let rid = Rid::new(0, devfn >> 3, devfn & 7);
        Ok(PciSlot {
            devfn,
            rid,
            source: SourceId::Pci(rid),
            msi: self.router.device_sink(rid),
        })
    }

    /// The DMA memory of `source`: through the IOMMU unit when there is one.
    pub fn dma_memory(&self, source: SourceId) -> DmaMemory {
        iommu::dma_memory(&self.mem, self.unit.as_ref(), source, self.trace.as_ref())
    }

    /// A virtio-blk disk backed by `file` on the next PCI slot: its BAR in the PCI window, its
    /// queue notifications as ioeventfds (moved with the BAR) served by the event loop.
    /// Returns the transport (the fuzzer checks its queues' state; the VMM needs nothing back).
    pub fn add_virtio_blk(
        &mut self,
        file: std::fs::File,
        readonly: bool,
    ) -> Result<Arc<Mutex<VirtioPci>>> {
        let index = self.disks;
        let blk = Blk::new(file, readonly).map_err(|source| Error::Io {
            what: "reading the disk size".into(),
            source,
        })?;
        let slot = self.pci_slot()?;
        let bar0 = u64::try_from(index)
            .ok()
            .and_then(|i| i.checked_mul(BAR_SIZE))
            .and_then(|off| self.windows.mmio_start.checked_add(off))
            .filter(|&a| {
                a < self
                    .windows
                    .mmio_start
                    .saturating_add(self.windows.mmio_size)
            })
            .ok_or_else(|| Error::Setup("no room for another disk's BAR".into()))?;
        let mut dev = VirtioPci::new(Box::new(blk), self.dma_memory(slot.source), slot.msi);
        dev.set_bar0(bar0);
        let io = |what: &'static str| {
            move |source: std::io::Error| Error::Io {
                what: what.into(),
                source,
            }
        };
        let fds: Vec<EventFd> = (0..dev.num_queues())
            .map(|_| EventFd::new(libc::EFD_NONBLOCK))
            .collect::<std::io::Result<_>>()
            .map_err(io("creating an eventfd"))?;
        let hook_fds: Vec<EventFd> = fds
            .iter()
            .map(|f| f.try_clone())
            .collect::<std::io::Result<_>>()
            .map_err(io("cloning an eventfd"))?;
        let vm = self.vm.clone();
        dev.set_notify_moved(Box::new(move |old, new| {
            vm.move_ioevents(&hook_fds, u64::from(NOTIFY_MULTIPLIER), old, new)
        }));
        let dev = Arc::new(Mutex::new(dev));
        self.pci.add(slot.devfn, dev.clone());
        self.subscribers
            .push(Box::new(QueueHandler::new(dev.clone(), fds)));
        self.devices.push(Arc::new(VirtioBlkHandle {
            index,
            dev: dev.clone(),
        }));
        self.disks = index.saturating_add(1);
        tracing::info!(
            "virtio-blk {index} at 00:{:02x}.{} (requester ID {})",
            slot.devfn >> 3,
            slot.devfn & 7,
            slot.source
        );
        Ok(dev)
    }

    /// The PASID test device on the next PCI slot (its BAR at a fixed place in the window).
    pub fn add_pasid_test(&mut self) -> Result<()> {
        let bar0 = self
            .windows
            .mmio_start
            .saturating_add(crate::devices::pasid::pci::BAR0_OFFSET_IN_WINDOW);
        let slot = self.pci_slot()?;
        // plug() takes the next free slot: the one asked for above, whose requester ID is the
        // source of the device's MSI-X messages.
        let source = crate::devices::pasid::pci::plug(
            &mut self.pci,
            &self.mem,
            self.unit.as_ref(),
            self.trace.as_ref(),
            slot.msi,
            bar0,
        )?;
        if source != slot.source {
            return Err(Error::Setup(format!(
                "pasid-test plugged at {source}, expected {}",
                slot.rid
            )));
        }
        Ok(())
    }

    /// Ends the wiring: the PCI root goes on the buses (ECAM, the BAR window, and whatever
    /// `arch_pci` adds, e.g. x86's CF8/CFC ports), and the buses are frozen for the vCPUs.
    pub fn seal(
        mut self,
        arch_pci: impl FnOnce(&mut Self, &Arc<PciRoot>) -> Result<()>,
    ) -> Result<Machine> {
        let root = Arc::new(std::mem::take(&mut self.pci));
        arch_pci(&mut self, &root)?;
        let w = self.windows;
        self.add_mmio(Arc::new(PciEcam(root.clone())), w.ecam_start, w.ecam_size)?;
        self.add_mmio(
            Arc::new(PciMmio {
                root,
                base: w.mmio_start,
            }),
            w.mmio_start,
            w.mmio_size,
        )?;
        Ok(Machine {
            pio: Arc::new(self.pio),
            mmio: Arc::new(self.mmio),
            unit: self.unit,
            router: self.router,
            vm: self.vm,
            direct: self.direct,
            devices: self.devices,
            subscribers: self.subscribers,
        })
    }
}

impl Machine {
    /// Stops every device (flushes disks); errors are printed, not fatal (the guest has ended).
    pub fn stop_devices(&self) {
        for d in &self.devices {
            if let Err(e) = d.stop() {
                eprintln!("iommu-vmm: {}: {e}", d.name());
            }
        }
    }

    /// The `--stats` report of the devices, the IOMMU and the interrupt path.
    pub fn stats_report(&self) -> String {
        let mut out = String::new();
        for d in &self.devices {
            if let Some(s) = d.stats() {
                out.push_str(&format!("{}: {s}\n", d.name()));
            }
        }
        match &self.unit {
            Some(u) => out.push_str(&format!("{} statistics:\n{}\n", u.name(), u.stats())),
            None => out.push_str("no IOMMU (--iommu none): nothing translated\n"),
        }
        out.push_str(&format!(
            "IOMMU MSIs refused by KVM: {}, outside the interrupt range (dropped): {}\n{}\n\
             accesses to unmapped ports: {}, unmapped MMIO: {}",
            self.vm.direct_msi_dropped(),
            self.direct.dropped(),
            self.router.stats(),
            self.pio.unhandled(),
            self.mmio.unhandled()
        ));
        out
    }
}

/// The IOMMU unit's own interrupts (fault events, invalidation completion, page requests) on
/// their way to the hypervisor: only messages to the interrupt range pass. The address comes
/// from a register the guest writes (VT-d 10.4.12 FEADDR: "must be in the range
/// 0xFEEx_xxxx"); KVM_SIGNAL_MSI does not check it and would inject whatever bits 19:12 and
/// the data name, where hardware makes a memory write that is no interrupt. Dropped messages
/// are counted and the first one is logged.
pub struct DirectMsiFilter {
    inner: Arc<dyn MsiSink>,
    dropped: std::sync::atomic::AtomicU64,
}

impl DirectMsiFilter {
    /// Filter in front of `inner`.
    pub fn new(inner: Arc<dyn MsiSink>) -> Self {
        DirectMsiFilter {
            inner,
            dropped: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Messages dropped because their address is no interrupt address.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl MsiSink for DirectMsiFilter {
    fn raise_msi(&self, msg: iommu_emulator::MsiMessage) {
        if crate::kvm::irq::is_routable_msi(msg) {
            self.inner.raise_msi(msg);
            return;
        }
        let n = self
            .dropped
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if n == 0 {
            tracing::warn!(
                "IOMMU interrupt to {:#x} (data {:#x}) is not an interrupt address; dropped \
                 (logged once, counted in --stats)",
                msg.addr,
                msg.data
            );
        }
    }
}

/// A virtio-blk disk as a [`VmDevice`].
struct VirtioBlkHandle {
    index: usize,
    dev: Arc<Mutex<VirtioPci>>,
}

impl VmDevice for VirtioBlkHandle {
    fn name(&self) -> String {
        format!("virtio-blk {}", self.index)
    }

    fn stats(&self) -> Option<String> {
        let d = self.dev.lock().unwrap_or_else(|p| p.into_inner());
        let f = d.faults();
        Some(format!(
            "{}; transport: {} invalid avail index, {} stalled notify passes",
            d.device().stats(),
            f.invalid_avail_idx,
            f.stalled_passes
        ))
    }

    fn stop(&self) -> std::io::Result<()> {
        let d = self.dev.lock().unwrap_or_else(|p| p.into_inner());
        d.device().sync()
    }
}

/// One ioeventfd move seen by [`NullBackend`]: (eventfds, stride, old base, new base).
pub type IoeventMove = (usize, u64, Option<u64>, Option<u64>);

/// A [`VmBackend`] without a hypervisor, for tests and fuzzers: GSI routes, direct MSIs and
/// ioeventfd moves are recorded, irqfds are plain eventfds.
#[derive(Default)]
pub struct NullBackend {
    /// Every MSI injected directly (the IOMMU unit's own).
    pub direct: Mutex<Vec<iommu_emulator::MsiMessage>>,
    /// Every ioeventfd move.
    pub ioevent_moves: Mutex<Vec<IoeventMove>>,
    /// The last GSI routing table.
    pub routes: Mutex<Vec<(u32, iommu_emulator::MsiMessage)>>,
}

impl VmBackend for Arc<NullBackend> {
    fn gsi(&self) -> Arc<dyn GsiBackend> {
        Arc::new(self.clone())
    }
    fn direct_msi(&self) -> Arc<dyn MsiSink> {
        Arc::new(NullDirect(self.clone()))
    }
    fn direct_msi_dropped(&self) -> u64 {
        0
    }
    fn move_ioevents(&self, fds: &[EventFd], stride: u64, old: Option<u64>, new: Option<u64>) {
        self.ioevent_moves
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((fds.len(), stride, old, new));
    }
}

impl GsiBackend for Arc<NullBackend> {
    fn set_routes(&self, routes: &[(u32, iommu_emulator::MsiMessage)]) -> std::io::Result<()> {
        *self.routes.lock().unwrap_or_else(|p| p.into_inner()) = routes.to_vec();
        Ok(())
    }
    fn attach_irqfd(&self, _gsi: u32) -> std::io::Result<EventFd> {
        EventFd::new(libc::EFD_NONBLOCK)
    }
    fn raise_line(&self, _gsi: u32) -> std::io::Result<()> {
        Ok(())
    }
    fn signal_msi(&self, _msg: iommu_emulator::MsiMessage) -> std::io::Result<()> {
        Ok(())
    }
}

/// [`NullBackend`]'s direct MSIs.
struct NullDirect(Arc<NullBackend>);

impl MsiSink for NullDirect {
    fn raise_msi(&self, msg: iommu_emulator::MsiMessage) {
        self.0
            .direct
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(msg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::x86_64::platform::PCI_WINDOWS;
    use crate::pci::config::{BAR0, COMMAND, COMMAND_MEMORY};
    use vm_memory::GuestAddress;

    fn manager(spec: &IommuSpec) -> (DeviceManager, Arc<NullBackend>) {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap();
        let backend = Arc::new(NullBackend::default());
        let dm =
            DeviceManager::new(Arc::new(backend.clone()), mem, PCI_WINDOWS, spec, None).unwrap();
        (dm, backend)
    }

    fn disk() -> std::fs::File {
        let f = tempfile::tempfile().unwrap();
        f.set_len(4096).unwrap();
        f
    }

    fn ecam_read32(m: &Machine, devfn: u64, off: u64) -> u32 {
        let mut d = [0u8; 4];
        m.mmio
            .read(PCI_WINDOWS.ecam_start + (devfn << 12) + off, &mut d);
        u32::from_le_bytes(d)
    }

    #[test]
    fn device_manager_gives_each_function_its_slot_bar_and_stats() {
        let (mut dm, backend) = manager(&IommuSpec::None);
        dm.add_virtio_blk(disk(), true).unwrap();
        dm.add_virtio_blk(disk(), false).unwrap();
        dm.add_pasid_test().unwrap();
        let m = dm.seal(|_, _| Ok(())).unwrap();
        // 00:00.0 host bridge, then 00:01.0 and 00:02.0 virtio-blk, 00:03.0 the PASID device.
        assert_eq!(ecam_read32(&m, 1 << 3, 0), 0x1042_1af4);
        assert_eq!(ecam_read32(&m, 2 << 3, 0), 0x1042_1af4);
        assert_eq!(ecam_read32(&m, 3 << 3, 0), 0x10f7_1af4);
        assert_eq!(ecam_read32(&m, 4 << 3, 0), u32::MAX, "nothing at 00:04.0");
        // BARs placed one virtio window apart from the start of the PCI window.
        assert_eq!(
            ecam_read32(&m, 2 << 3, BAR0 as u64) & !0xf,
            (PCI_WINDOWS.mmio_start + BAR_SIZE) as u32
        );
        // Memory decoding on: the notify base is reported, and moves with the BAR.
        let moves_before = backend.ioevent_moves.lock().unwrap().len();
        let mut w = [0u8; 2];
        w.copy_from_slice(&COMMAND_MEMORY.to_le_bytes());
        m.mmio
            .write(PCI_WINDOWS.ecam_start + (1 << 15) + COMMAND as u64, &w);
        let moves = backend.ioevent_moves.lock().unwrap().clone();
        assert_eq!(moves.len(), moves_before + 1);
        assert_eq!(
            moves.last().unwrap().3,
            Some(PCI_WINDOWS.mmio_start + crate::virtio::pci::NOTIFY_OFFSET)
        );
        let report = m.stats_report();
        assert!(report.contains("virtio-blk 0: "), "{report}");
        assert!(report.contains("virtio-blk 1: "), "{report}");
        assert!(report.contains("no IOMMU"), "{report}");
    }

    #[cfg(feature = "vtd")]
    #[test]
    fn device_manager_maps_the_iommu_window_and_reports_it() {
        let (dm, _) = manager(&IommuSpec::IntelIommu {
            props: String::new(),
        });
        let base = dm.unit().unwrap().mmio_base();
        let m = dm.seal(|_, _| Ok(())).unwrap();
        let mut ver = [0u8; 4];
        assert!(m.mmio.read(base, &mut ver), "VER register mapped");
        assert_ne!(u32::from_le_bytes(ver), 0, "VT-d VER (11.4.1) is not zero");
        assert!(m.stats_report().contains("intel-iommu statistics"));
    }

    // VT-d 10.4.12: FEADDR must be in 0xFEEx_xxxx; a guest that writes anything else gets no
    // interrupt injected for it (found by the device-layer fuzzer).
    #[test]
    fn direct_msi_filter_drops_non_interrupt_addresses_and_counts() {
        let backend = Arc::new(NullBackend::default());
        let f = DirectMsiFilter::new(backend.direct_msi());
        let msg = |addr, data| iommu_emulator::MsiMessage { addr, data };
        f.raise_msi(msg(0xa2a2_a2a0, 0x40));
        f.raise_msi(msg(0, 0));
        f.raise_msi(msg(0x1_fee0_0000, 0x41));
        f.raise_msi(msg(0xfee0_1000, 0x42));
        f.raise_msi(msg(0x100_fee0_0000, 0x43));
        let got: Vec<u32> = backend
            .direct
            .lock()
            .unwrap()
            .iter()
            .map(|m| m.data)
            .collect();
        assert_eq!(
            got,
            vec![0x42, 0x43],
            "interrupt range and x2APIC high word pass"
        );
        assert_eq!(f.dropped(), 3);
    }

    #[test]
    fn device_manager_refuses_overlapping_ranges() {
        let (mut dm, _) = manager(&IommuSpec::None);
        let dev: Arc<dyn BusDevice> = Arc::new(crate::devices::debug_exit::DebugExit::new(
            Arc::new(crate::exit::ExitControl::new(Box::new(|| {}))),
        ));
        dm.add_pio(dev.clone(), 0xf4, 1).unwrap();
        assert!(dm.add_pio(dev, 0xf4, 1).is_err());
    }
}
