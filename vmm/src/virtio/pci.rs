//! Modern virtio-pci transport (Virtio 1.2 §4.1): vendor capabilities
//! pointing into BAR 0, common configuration, ISR, notifications, MSI-X.
//!
//! BAR 0 layout (32 KiB, 32-bit memory):
//! `0x0000` common config, `0x1000` ISR, `0x2000` device config,
//! `0x3000` notify (queue `n` at `n * 4`), `0x4000` MSI-X table, `0x5000` PBA.

use std::num::Wrapping;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use iommu_emulator::MsiSink;
use virtio_queue::{Queue, QueueT};

use super::{DmaMemory, F_ACCESS_PLATFORM, F_RING_EVENT_IDX, F_VERSION_1, VirtioDevice, status};
use crate::devices::{le_u8, le_u16, le_u32, put_le_value};
use crate::pci::config::{BarKind, COMMAND, COMMAND_BUS_MASTER, PciConfig, PciId, cap_id, low_u32};
use crate::pci::msix::Msix;
use crate::pci::{PCIE_TYPE_RCIEP, PciDevice, add_pcie_capability};

/// BAR 0 size.
pub const BAR_SIZE: u64 = 0x8000;
/// Common configuration offset in BAR 0.
pub const COMMON_OFFSET: u64 = 0x0000;
/// Common configuration length (`struct virtio_pci_common_cfg` up to queue_device).
pub const COMMON_LEN: u64 = 0x38;
/// ISR offset.
pub const ISR_OFFSET: u64 = 0x1000;
/// Device configuration offset.
pub const DEVICE_OFFSET: u64 = 0x2000;
/// Device configuration length exposed.
pub const DEVICE_LEN: u64 = 0x1000;
/// Notification area offset.
pub const NOTIFY_OFFSET: u64 = 0x3000;
/// Bytes between queue notification addresses.
pub const NOTIFY_MULTIPLIER: u32 = 4;
/// MSI-X table offset.
pub const MSIX_TABLE_OFFSET: u64 = 0x4000;
/// MSI-X PBA offset.
pub const MSIX_PBA_OFFSET: u64 = 0x5000;
/// Length of the notification area.
pub const NOTIFY_LEN: u64 = 0x1000;
/// MSI-X table length in BAR 0 (up to the PBA).
const MSIX_TABLE_LEN: u64 = MSIX_PBA_OFFSET - MSIX_TABLE_OFFSET;
/// "No vector" (§4.1.5.1.2).
pub const NO_VECTOR: u16 = 0xffff;

/// Virtio PCI capability types (§4.1.4).
mod cfg_type {
    pub const COMMON: u8 = 1;
    pub const NOTIFY: u8 = 2;
    pub const ISR: u8 = 3;
    pub const DEVICE: u8 = 4;
    pub const PCI_CFG: u8 = 5;
}

struct QueueSlot {
    queue: Queue,
    vector: u16,
}

/// Called when BAR 0 moves, with the old and new notification base address
/// (the event loop re-registers its ioeventfds).
pub type NotifyMoved = Box<dyn Fn(Option<u64>, Option<u64>) + Send>;

/// A virtio device on PCI.
pub struct VirtioPci {
    config: PciConfig,
    msix: Msix,
    dev: Box<dyn VirtioDevice>,
    device_feature_select: u32,
    driver_feature_select: u32,
    driver_features: u64,
    msix_config: u16,
    status: u8,
    generation: u8,
    queue_select: u16,
    queues: Vec<QueueSlot>,
    isr: u8,
    mem: DmaMemory,
    msi: Arc<dyn MsiSink>,
    notify_moved: Option<NotifyMoved>,
    notify_base: Option<u64>,
    pci_cfg_cap: usize,
    faults: TransportFaults,
}

/// What the driver got wrong on this transport, counted (each kind is logged once).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TransportFaults {
    /// Notifications whose avail index was more than the queue size ahead of the device
    /// (Virtio 1.2 §2.7.13.3: the driver must not do that); each set DEVICE_NEEDS_RESET.
    pub invalid_avail_idx: u64,
    /// Notify passes stopped because buffers were announced but none could be taken (the avail
    /// ring or a descriptor was unreadable, e.g. an IOMMU fault) or because the pass bound
    /// (queue size) was reached.
    pub stalled_passes: u64,
}

/// The device's view of one split virtqueue (Virtio 1.2 §2.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueState {
    /// Queue size the driver set.
    pub size: u16,
    /// queue_enable.
    pub ready: bool,
    /// Next avail ring index the device will take.
    pub next_avail: u16,
    /// Next used ring index the device will write (the used idx it published).
    pub next_used: u16,
}

impl VirtioPci {
    /// Wrap `dev`; its DMA goes through `mem`, its interrupts to `msi`.
    pub fn new(dev: Box<dyn VirtioDevice>, mem: DmaMemory, msi: Arc<dyn MsiSink>) -> Self {
        let mut config = PciConfig::new(PciId {
            vendor: 0x1af4,
            // §4.1.2: 0x1040 plus the virtio device ID (all IDs are below 0x40).
            device: 0x1040u16.saturating_add(dev.device_type()),
            revision: 1,
            class: class_for(dev.device_type()),
            subsystem_vendor: 0x1af4,
            subsystem: 0x40,
        });
        config.add_bar(0, BAR_SIZE, BarKind::Mem32);
        add_vendor_cap(
            &mut config,
            cfg_type::COMMON,
            COMMON_OFFSET,
            COMMON_LEN,
            None,
        );
        add_vendor_cap(
            &mut config,
            cfg_type::NOTIFY,
            NOTIFY_OFFSET,
            NOTIFY_LEN,
            Some(NOTIFY_MULTIPLIER),
        );
        add_vendor_cap(&mut config, cfg_type::ISR, ISR_OFFSET, 1, None);
        add_vendor_cap(
            &mut config,
            cfg_type::DEVICE,
            DEVICE_OFFSET,
            DEVICE_LEN,
            None,
        );
        // VIRTIO_PCI_CAP_PCI_CFG (§4.1.4.9): bar, offset, length and the
        // data window are written by the driver.
        let mut body = [0u8; 18];
        body[0] = 20;
        body[1] = cfg_type::PCI_CFG;
        let mut wmask = [0u8; 18];
        wmask[2] = 0xff; // bar
        wmask[6..18].fill(0xff); // offset, length, pci_cfg_data
        let pci_cfg_cap = config.add_capability(cap_id::VENDOR, &body, &wmask);
        let nq = dev.queue_max_sizes().len();
        // One vector per queue plus the configuration vector.
        let vectors = nq
            .checked_add(1)
            .and_then(|n| u16::try_from(n).ok())
            .unwrap_or(1);
        let msix = Msix::new(
            &mut config,
            vectors,
            0,
            low_u32(MSIX_TABLE_OFFSET),
            low_u32(MSIX_PBA_OFFSET),
        );
        add_pcie_capability(&mut config, PCIE_TYPE_RCIEP);
        let queues = dev
            .queue_max_sizes()
            .iter()
            // A size virtio-queue refuses (zero, not a power of two, over 32768) becomes 256,
            // which it accepts, so no queue is dropped.
            .filter_map(|&max| Queue::new(max).or_else(|_| Queue::new(256)).ok())
            .map(|queue| QueueSlot {
                queue,
                vector: NO_VECTOR,
            })
            .collect();
        VirtioPci {
            config,
            msix,
            dev,
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            msix_config: NO_VECTOR,
            status: 0,
            generation: 0,
            queue_select: 0,
            queues,
            isr: 0,
            mem,
            msi,
            notify_moved: None,
            notify_base: None,
            pci_cfg_cap,
            faults: TransportFaults::default(),
        }
    }

    /// Place BAR 0 (firmware-style assignment before boot).
    pub fn set_bar0(&mut self, addr: u64) {
        self.config.set_bar_addr(0, addr);
    }

    /// Register the BAR-move hook and report the current notify base.
    pub fn set_notify_moved(&mut self, hook: NotifyMoved) {
        self.notify_moved = Some(hook);
        self.update_notify_base();
    }

    /// Number of queues.
    pub fn num_queues(&self) -> usize {
        self.queues.len()
    }

    /// The device's logic (for statistics).
    pub fn device(&self) -> &dyn VirtioDevice {
        self.dev.as_ref()
    }

    /// The driver errors this transport counted.
    pub fn faults(&self) -> TransportFaults {
        self.faults
    }

    /// The device status register (§2.1).
    pub fn status(&self) -> u8 {
        self.status
    }

    /// The device's side of each queue (for tests and the fuzzer's invariants).
    pub fn queue_states(&self) -> Vec<QueueState> {
        self.queues
            .iter()
            .map(|q| QueueState {
                size: q.queue.size(),
                ready: q.queue.ready(),
                next_avail: q.queue.next_avail(),
                next_used: q.queue.next_used(),
            })
            .collect()
    }

    fn offered_features(&self) -> u64 {
        self.dev.features() | F_VERSION_1 | F_ACCESS_PLATFORM | F_RING_EVENT_IDX
    }

    fn update_notify_base(&mut self) {
        let new = self
            .config
            .bar_addr(0)
            .and_then(|(base, _)| base.checked_add(NOTIFY_OFFSET));
        if new != self.notify_base {
            if let Some(hook) = &self.notify_moved {
                hook(self.notify_base, new);
            }
            self.notify_base = new;
        }
    }

    /// Serve queue `index` (its notification arrived) and interrupt the
    /// driver if it asked for it.
    pub fn queue_notify(&mut self, index: usize) {
        // A device that needs a reset serves nothing until the driver resets it (§2.1.1).
        if self.status & status::DRIVER_OK == 0
            || self.status & status::NEEDS_RESET != 0
            || self.config.read_u16(COMMAND) & COMMAND_BUS_MASTER == 0
        {
            return;
        }
        let event_idx = self.driver_features & F_RING_EVENT_IDX != 0;
        let Some(slot) = self.queues.get_mut(index) else {
            return;
        };
        if !slot.queue.ready() {
            return;
        }
        // With EVENT_IDX the pass repeats while buffers arrived during it (§2.7.10), but every
        // pass must take at least one buffer and there are at most `size` passes: a driver that
        // announces buffers the device cannot take (an avail index far ahead, a ring behind an
        // IOMMU fault) cannot keep this thread, and the device's lock, forever.
        let max_passes = u32::from(slot.queue.size()).max(1);
        let mut passes = 0u32;
        let mut stalled = false;
        let mut used = false;
        loop {
            if event_idx && slot.queue.disable_notification(&self.mem).is_err() {
                break;
            }
            let before = slot.queue.next_avail();
            used |= self.dev.process_queue(index, &mut slot.queue, &self.mem);
            if !event_idx {
                break;
            }
            passes = passes.saturating_add(1);
            let progressed = slot.queue.next_avail() != before;
            match slot.queue.enable_notification(&self.mem) {
                Ok(true) if progressed && passes < max_passes => continue,
                Ok(true) => {
                    stalled = true;
                    break;
                }
                _ => break,
            }
        }
        if used {
            let notify = slot.queue.needs_notification(&self.mem).unwrap_or(true);
            let vector = slot.vector;
            if notify {
                self.isr |= 1;
                if vector != NO_VECTOR
                    && let Some(msg) = self.msix.trigger(&self.config, vector)
                {
                    self.msi.raise_msi(msg);
                }
            }
        }
        if stalled {
            self.queue_stalled(index);
        }
    }

    /// A notify pass stopped with buffers announced but not taken: an avail index more than
    /// the queue size ahead is a driver error that sets DEVICE_NEEDS_RESET (§2.1.2, with a
    /// configuration change notification, §4.1.5.3); anything else is left for the next
    /// notification.
    fn queue_stalled(&mut self, index: usize) {
        let Some(slot) = self.queues.get(index) else {
            return;
        };
        let size = slot.queue.size();
        let next = Wrapping(slot.queue.next_avail());
        let pending = slot
            .queue
            .avail_idx(&self.mem, Ordering::Acquire)
            .map(|idx| (idx - next).0);
        match pending {
            Ok(n) if n > size => {
                self.faults.invalid_avail_idx = self.faults.invalid_avail_idx.saturating_add(1);
                if self.faults.invalid_avail_idx == 1 {
                    tracing::warn!(
                        "virtio: queue {index}: avail index {n} entries ahead of the device, \
                         more than the queue size {size}; DEVICE_NEEDS_RESET set (logged once, \
                         counted in the transport's faults)"
                    );
                }
                self.needs_reset();
            }
            _ => {
                self.faults.stalled_passes = self.faults.stalled_passes.saturating_add(1);
                if self.faults.stalled_passes == 1 {
                    tracing::warn!(
                        "virtio: queue {index}: buffers announced but none could be taken (avail \
                         ring or descriptors unreadable) or the pass bound was reached; the \
                         queue waits for the next notification (logged once, counted)"
                    );
                }
            }
        }
    }

    /// Sets DEVICE_NEEDS_RESET and notifies the driver of a configuration change (§2.1.2:
    /// "the device MUST send a device configuration change notification" when DRIVER_OK is set).
    fn needs_reset(&mut self) {
        if self.status & status::NEEDS_RESET != 0 {
            return;
        }
        self.status |= status::NEEDS_RESET;
        if self.status & status::DRIVER_OK != 0 {
            self.isr |= 2;
            if self.msix_config != NO_VECTOR
                && let Some(msg) = self.msix.trigger(&self.config, self.msix_config)
            {
                self.msi.raise_msi(msg);
            }
        }
    }

    fn reset(&mut self) {
        self.driver_features = 0;
        self.device_feature_select = 0;
        self.driver_feature_select = 0;
        self.msix_config = NO_VECTOR;
        self.status = 0;
        self.queue_select = 0;
        self.isr = 0;
        for q in &mut self.queues {
            q.queue.reset();
            q.vector = NO_VECTOR;
        }
        self.dev.reset();
    }

    fn write_status(&mut self, v: u8) {
        if v == 0 {
            self.reset();
            return;
        }
        // DEVICE_NEEDS_RESET is the device's to set and stays until a reset (§2.1.1).
        let mut v = (v & !status::NEEDS_RESET) | (self.status & status::NEEDS_RESET);
        if v & status::FEATURES_OK != 0 && self.status & status::FEATURES_OK == 0 {
            // §3.1.1: accept only subsets of what was offered, with VERSION_1.
            let ok = self.driver_features & !self.offered_features() == 0
                && self.driver_features & F_VERSION_1 != 0;
            if !ok {
                tracing::warn!(
                    "virtio: driver features {:#x} not acceptable",
                    self.driver_features
                );
                v &= !status::FEATURES_OK;
            }
        }
        if v & status::DRIVER_OK != 0 && self.status & status::DRIVER_OK == 0 {
            let event_idx = self.driver_features & F_RING_EVENT_IDX != 0;
            for (i, q) in self.queues.iter_mut().enumerate() {
                q.queue.set_event_idx(event_idx);
                if q.queue.ready() && !q.queue.is_valid(&self.mem) {
                    tracing::warn!("virtio: queue {i} rings are not valid DMA addresses");
                }
            }
        }
        self.status = v;
    }

    fn common_read(&self, off: u64, data: &mut [u8]) {
        let q = self.queues.get(usize::from(self.queue_select));
        let v: u64 = match off {
            0x00 => u64::from(self.device_feature_select),
            0x04 => match self.device_feature_select {
                0 => self.offered_features() & 0xffff_ffff,
                1 => self.offered_features() >> 32,
                _ => 0,
            },
            0x08 => u64::from(self.driver_feature_select),
            0x0c => match self.driver_feature_select {
                0 => self.driver_features & 0xffff_ffff,
                1 => self.driver_features >> 32,
                _ => 0,
            },
            0x10 => u64::from(self.msix_config),
            0x12 => u64::try_from(self.queues.len()).unwrap_or(0),
            0x14 => u64::from(self.status),
            0x15 => u64::from(self.generation),
            0x16 => u64::from(self.queue_select),
            0x18 => q.map_or(0, |q| u64::from(q.queue.size())),
            0x1a => q.map_or(u64::from(NO_VECTOR), |q| u64::from(q.vector)),
            0x1c => q.map_or(0, |q| u64::from(q.queue.ready())),
            0x1e => u64::from(self.queue_select),
            0x20 => q.map_or(0, |q| q.queue.desc_table()),
            0x24 => q.map_or(0, |q| q.queue.desc_table() >> 32),
            0x28 => q.map_or(0, |q| q.queue.avail_ring()),
            0x2c => q.map_or(0, |q| q.queue.avail_ring() >> 32),
            0x30 => q.map_or(0, |q| q.queue.used_ring()),
            0x34 => q.map_or(0, |q| q.queue.used_ring() >> 32),
            _ => 0,
        };
        put_le_value(data, v);
    }

    fn common_write(&mut self, off: u64, data: &[u8]) {
        // Each register takes the low bytes of the access (§4.1.3.1: the driver accesses a
        // field with its own width).
        let v32 = le_u32(data);
        let v16 = le_u16(data);
        let running = self.status & status::DRIVER_OK != 0;
        let qi = usize::from(self.queue_select);
        match off {
            0x00 => self.device_feature_select = v32,
            0x08 => self.driver_feature_select = v32,
            0x0c if self.status & status::FEATURES_OK == 0 => match self.driver_feature_select {
                0 => self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(v32),
                1 => {
                    self.driver_features =
                        (self.driver_features & 0xffff_ffff) | (u64::from(v32) << 32)
                }
                _ => {}
            },
            0x10 => {
                self.msix_config = if usize::from(v16) < self.msix.len() {
                    v16
                } else {
                    NO_VECTOR
                }
            }
            0x14 => self.write_status(le_u8(data)),
            0x16 => self.queue_select = v16,
            _ => {
                let nvec = self.msix.len();
                let Some(q) = self.queues.get_mut(qi) else {
                    return;
                };
                // Queue registers are fixed once the queue is enabled (§4.1.4.3.2).
                let enabled = q.queue.ready();
                match off {
                    0x18 if !enabled && !running => q.queue.set_size(v16),
                    0x1a => {
                        q.vector = if usize::from(v16) < nvec {
                            v16
                        } else {
                            NO_VECTOR
                        }
                    }
                    0x1c if v16 == 1 => q.queue.set_ready(true),
                    0x20 if !enabled => q.queue.set_desc_table_address(Some(v32), None),
                    0x24 if !enabled => q.queue.set_desc_table_address(None, Some(v32)),
                    0x28 if !enabled => q.queue.set_avail_ring_address(Some(v32), None),
                    0x2c if !enabled => q.queue.set_avail_ring_address(None, Some(v32)),
                    0x30 if !enabled => q.queue.set_used_ring_address(Some(v32), None),
                    0x34 if !enabled => q.queue.set_used_ring_address(None, Some(v32)),
                    _ => {}
                }
            }
        }
    }
}

impl VirtioPci {
    /// Offset of `pci_cfg_data` in configuration space.
    fn pci_cfg_data(&self) -> usize {
        self.pci_cfg_cap.saturating_add(16)
    }

    /// The BAR access the PCI configuration access capability describes,
    /// when the access to its data field is at least as wide as `cap.length`
    /// and the window is valid (§4.1.4.9.1: length 1, 2 or 4, aligned offset).
    fn pci_cfg_window(&self, access: usize) -> Option<(usize, u64, usize)> {
        // The capability sits in the legacy space, so these offsets do not overflow.
        let c = self.pci_cfg_cap;
        let [bar, _] = self.config.read_u16(c.saturating_add(4)).to_le_bytes();
        let bar = usize::from(bar);
        let off = u64::from(self.config.read_u32(c.saturating_add(8)));
        let len32 = self.config.read_u32(c.saturating_add(12));
        let len = usize::try_from(len32).ok()?;
        let ok = bar == 0
            && matches!(len, 1 | 2 | 4)
            && len <= access
            && off.checked_rem(u64::from(len32)) == Some(0)
            && off.checked_add(u64::from(len32))? <= BAR_SIZE;
        ok.then_some((bar, off, len))
    }
}

/// `offset - base` when `offset` lies in `[base, base + len)`.
fn within(offset: u64, base: u64, len: u64) -> Option<u64> {
    offset.checked_sub(base).filter(|&o| o < len)
}

fn class_for(device_type: u16) -> [u8; 3] {
    match device_type {
        super::blk::VIRTIO_ID_BLOCK => [0x01, 0x80, 0x00],
        _ => [0xff, 0x00, 0x00],
    }
}

fn add_vendor_cap(config: &mut PciConfig, kind: u8, offset: u64, len: u64, mult: Option<u32>) {
    // struct virtio_pci_cap (§4.1.4): cap_len, cfg_type, bar, id, padding[2],
    // offset, length (after cap_vndr and cap_next).
    // `offset` and `len` are BAR 0 offsets (below BAR_SIZE), so their low halves are them.
    let mut body = [0u8; 18];
    body[0] = if mult.is_some() { 20 } else { 16 };
    body[1] = kind;
    body[2] = 0; // BAR 0
    body[6..10].copy_from_slice(&low_u32(offset).to_le_bytes());
    body[10..14].copy_from_slice(&low_u32(len).to_le_bytes());
    let body_len = match mult {
        Some(m) => {
            body[14..18].copy_from_slice(&m.to_le_bytes());
            18
        }
        None => 14,
    };
    config.add_capability(cap_id::VENDOR, body.get(..body_len).unwrap_or(&body), &[]);
}

impl PciDevice for VirtioPci {
    fn config(&self) -> &PciConfig {
        &self.config
    }

    fn config_write(&mut self, offset: usize, data: &[u8]) {
        self.config.write(offset, data);
        if offset == self.pci_cfg_data()
            && let Some((bar, off, len)) = self.pci_cfg_window(data.len())
        {
            let bytes = self.config.read_u32(self.pci_cfg_data()).to_le_bytes();
            if let Some(bytes) = bytes.get(..len) {
                self.bar_write(bar, off, bytes);
            }
        }
        for msg in self.msix.take_deliverable(&self.config) {
            self.msi.raise_msi(msg);
        }
        self.update_notify_base();
    }

    fn config_read(&mut self, offset: usize, data: &mut [u8]) {
        if offset == self.pci_cfg_data()
            && let Some((bar, off, len)) = self.pci_cfg_window(data.len())
        {
            // The window checked len <= data.len() <= ... and len <= 4.
            let mut bytes = [0u8; 4];
            data.fill(0);
            if let (Some(window), Some(dst)) = (bytes.get_mut(..len), data.get_mut(..len)) {
                self.bar_read(bar, off, window);
                dst.copy_from_slice(window);
            }
            return;
        }
        self.config.read(offset, data);
    }

    fn bar_read(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
        if bar != 0 {
            data.fill(0xff);
            return;
        }
        if let Some(o) = within(offset, COMMON_OFFSET, COMMON_LEN) {
            self.common_read(o, data);
        } else if offset == ISR_OFFSET {
            // Reading the ISR clears it (§4.1.4.5).
            put_le_value(data, u64::from(self.isr));
            self.isr = 0;
        } else if let Some(o) = within(offset, DEVICE_OFFSET, DEVICE_LEN) {
            self.dev.read_config(o, data);
        } else if let Some(o) = within(offset, MSIX_TABLE_OFFSET, MSIX_TABLE_LEN) {
            self.msix.read_table(o, data);
        } else if let Some(o) = offset.checked_sub(MSIX_PBA_OFFSET) {
            self.msix.read_pba(o, data);
        } else {
            data.fill(0);
        }
    }

    fn bar_write(&mut self, bar: usize, offset: u64, data: &[u8]) {
        if bar != 0 {
            return;
        }
        if let Some(o) = within(offset, COMMON_OFFSET, COMMON_LEN) {
            self.common_write(o, data);
        } else if let Some(o) = within(offset, DEVICE_OFFSET, DEVICE_LEN) {
            self.dev.write_config(o, data);
        } else if let Some(o) = within(offset, NOTIFY_OFFSET, NOTIFY_LEN) {
            // A notification that did not go through an ioeventfd. The area is 4 KiB, so
            // the queue index fits any usize.
            let q = o.checked_div(u64::from(NOTIFY_MULTIPLIER)).unwrap_or(0);
            if let Ok(q) = usize::try_from(q) {
                self.queue_notify(q);
            }
        } else if let Some(o) = within(offset, MSIX_TABLE_OFFSET, MSIX_TABLE_LEN)
            && let Some(msg) = self.msix.write_table(&self.config, o, data)
        {
            self.msi.raise_msi(msg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::config::{CAPABILITIES_POINTER, COMMAND_MEMORY};
    use crate::virtio::blk::Blk;
    use iommu_emulator::testing::RecordingMsi;
    use iommu_emulator::{Rid, SourceId};
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    fn device() -> (VirtioPci, tempfile::NamedTempFile) {
        let (d, disk, _, _) = device_with_mem();
        (d, disk)
    }

    /// The device with its guest memory (1 MiB, no IOMMU) and interrupt recorder.
    fn device_with_mem() -> (
        VirtioPci,
        tempfile::NamedTempFile,
        GuestMemoryMmap,
        Arc<RecordingMsi>,
    ) {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let dma = crate::iommu::dma_memory(&mem, None, SourceId::Pci(Rid::new(0, 1, 0)), None);
        let disk = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(disk.path(), vec![0u8; 4096]).unwrap();
        let blk = Blk::new(std::fs::File::open(disk.path()).unwrap(), true).unwrap();
        let msi = Arc::new(RecordingMsi::new());
        let dev = VirtioPci::new(Box::new(blk), dma, msi.clone());
        (dev, disk, mem, msi)
    }

    fn cfg_read(d: &mut VirtioPci, off: usize, len: usize) -> u32 {
        let mut b = [0u8; 4];
        d.config_read(off, &mut b[..len]);
        u32::from_le_bytes(b)
    }

    fn common_write(d: &mut VirtioPci, off: u64, v: u32) {
        d.bar_write(0, off, &v.to_le_bytes());
    }

    fn common_read(d: &mut VirtioPci, off: u64, len: usize) -> u32 {
        let mut b = [0u8; 4];
        d.bar_read(0, off, &mut b[..len]);
        u32::from_le_bytes(b)
    }

    /// Offsets of the vendor capabilities by cfg_type.
    fn vendor_caps(d: &mut VirtioPci) -> Vec<(u8, usize)> {
        let mut out = vec![];
        let mut p = cfg_read(d, CAPABILITIES_POINTER, 1) as usize;
        while p != 0 {
            if cfg_read(d, p, 1) as u8 == cap_id::VENDOR {
                out.push((cfg_read(d, p + 3, 1) as u8, p));
            }
            p = cfg_read(d, p + 1, 1) as usize;
        }
        out
    }

    #[test]
    fn virtio_pci_ids_and_capabilities_follow_modern_layout() {
        // Virtio 1.2 §4.1.2: device ID 0x1040 + type, revision >= 1; §4.1.4: one
        // capability per configuration structure.
        let (mut d, _disk) = device();
        assert_eq!(cfg_read(&mut d, 0, 4), 0x1042_1af4);
        let types: Vec<u8> = vendor_caps(&mut d).iter().map(|c| c.0).collect();
        for t in [1, 2, 3, 4, 5] {
            assert!(types.contains(&t), "cfg_type {t} missing: {types:?}");
        }
    }

    #[test]
    fn virtio_pci_offers_version_1_and_access_platform() {
        let (mut d, _disk) = device();
        common_write(&mut d, 0x00, 1);
        let hi = common_read(&mut d, 0x04, 4);
        assert_ne!(hi & 1, 0, "VIRTIO_F_VERSION_1");
        assert_ne!(hi & 2, 0, "VIRTIO_F_ACCESS_PLATFORM");
        common_write(&mut d, 0x00, 0);
        assert_ne!(
            common_read(&mut d, 0x04, 4) & (1 << 5),
            0,
            "VIRTIO_BLK_F_RO"
        );
        assert_eq!(common_read(&mut d, 0x12, 2), 1, "num_queues");
    }

    #[test]
    fn virtio_pci_features_without_version_1_refuse_features_ok() {
        // §3.1.1 / §6.1: a modern device must not accept a driver without VERSION_1.
        let (mut d, _disk) = device();
        common_write(&mut d, 0x08, 0);
        common_write(&mut d, 0x0c, 1 << 9);
        d.bar_write(
            0,
            0x14,
            &[status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK],
        );
        assert_eq!(common_read(&mut d, 0x14, 1) as u8 & status::FEATURES_OK, 0);
        d.bar_write(0, 0x14, &[0]);
        common_write(&mut d, 0x08, 1);
        common_write(&mut d, 0x0c, 1);
        d.bar_write(
            0,
            0x14,
            &[status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK],
        );
        assert_ne!(common_read(&mut d, 0x14, 1) as u8 & status::FEATURES_OK, 0);
    }

    #[test]
    fn virtio_pci_cfg_window_reads_and_writes_bar0() {
        // §4.1.4.9: pci_cfg_data accesses BAR `bar` at `offset` for `length` bytes.
        let (mut d, _disk) = device();
        let cap = vendor_caps(&mut d).iter().find(|c| c.0 == 5).unwrap().1;
        d.config_write(cap + 4, &[0]);
        d.config_write(cap + 8, &0x16u32.to_le_bytes()); // queue_select
        d.config_write(cap + 12, &2u32.to_le_bytes());
        d.config_write(cap + 16, &[0x05, 0x00]);
        assert_eq!(
            common_read(&mut d, 0x16, 2),
            5,
            "write went to queue_select"
        );
        d.config_write(cap + 8, &0x12u32.to_le_bytes()); // num_queues
        assert_eq!(cfg_read(&mut d, cap + 16, 2), 1);
        d.config_write(cap + 8, &0x13u32.to_le_bytes()); // misaligned for length 2
        assert_eq!(
            cfg_read(&mut d, cap + 16, 2),
            5,
            "invalid window: the raw field, no BAR access"
        );
    }

    /// Drives the device as a driver would up to DRIVER_OK with EVENT_IDX, queue 0's rings at
    /// `desc`/`avail`/`used` (guest-physical: no IOMMU in [`device`]), config vector 0.
    fn start_with_event_idx(d: &mut VirtioPci, desc: u64, avail: u64, used: u64, size: u16) {
        d.config_write(
            COMMAND,
            &(COMMAND_MEMORY | COMMAND_BUS_MASTER).to_le_bytes(),
        );
        d.bar_write(0, 0x14, &[status::ACKNOWLEDGE | status::DRIVER]);
        common_write(d, 0x08, 0);
        common_write(d, 0x0c, F_RING_EVENT_IDX as u32);
        common_write(d, 0x08, 1);
        common_write(d, 0x0c, ((F_VERSION_1 | F_ACCESS_PLATFORM) >> 32) as u32);
        d.bar_write(
            0,
            0x14,
            &[status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK],
        );
        // MSI-X enabled with vector 0 unmasked, so the config change interrupt is raised.
        let mut p = cfg_read(d, CAPABILITIES_POINTER, 1) as usize;
        while p != 0 && cfg_read(d, p, 1) as u8 != cap_id::MSIX {
            p = cfg_read(d, p + 1, 1) as usize;
        }
        assert_ne!(p, 0, "MSI-X capability");
        d.config_write(p + 3, &[0x80]);
        d.bar_write(0, MSIX_TABLE_OFFSET, &0xfee0_0000u32.to_le_bytes());
        d.bar_write(0, MSIX_TABLE_OFFSET + 8, &0x41u32.to_le_bytes());
        d.bar_write(0, MSIX_TABLE_OFFSET + 12, &0u32.to_le_bytes());
        d.bar_write(0, 0x10, &0u16.to_le_bytes());
        d.bar_write(0, 0x16, &0u16.to_le_bytes());
        d.bar_write(0, 0x18, &size.to_le_bytes());
        for (off, a) in [(0x20, desc), (0x28, avail), (0x30, used)] {
            common_write(d, off, a as u32);
            common_write(d, off + 4, (a >> 32) as u32);
        }
        d.bar_write(0, 0x1c, &1u16.to_le_bytes());
        d.bar_write(
            0,
            0x14,
            &[status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK],
        );
    }

    /// Runs `queue_notify(0)` on another thread; panics if it has not returned in 20 s (the
    /// hang this guards against spun forever).
    fn notify_returns(d: VirtioPci) -> VirtioPci {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut d = d;
            d.queue_notify(0);
            let _ = tx.send(d);
        });
        rx.recv_timeout(std::time::Duration::from_secs(20))
            .expect("queue_notify did not return: the notify loop spins")
    }

    #[test]
    fn virtio_pci_avail_idx_beyond_queue_size_sets_needs_reset_and_returns() {
        // §2.7.13.3: the driver must not make avail.idx more than the queue size ahead; the
        // device sets DEVICE_NEEDS_RESET (§2.1.2) and sends a config change interrupt.
        let (mut d, _disk, mem, msi) = device_with_mem();
        let q = virtio_queue::mock::MockSplitQueue::create(&mem, GuestAddress(0x1_0000), 256);
        start_with_event_idx(
            &mut d,
            q.desc_table_addr().0,
            q.avail_addr().0,
            q.used_addr().0,
            256,
        );
        q.avail().idx().store(257);
        let raised_before = msi.messages().len();
        let d = notify_returns(d);
        let mut d = d;
        assert_ne!(
            common_read(&mut d, 0x14, 1) as u8 & status::NEEDS_RESET,
            0,
            "DEVICE_NEEDS_RESET"
        );
        assert_eq!(d.faults().invalid_avail_idx, 1);
        assert_eq!(msi.messages().len(), raised_before + 1, "config change MSI");
        assert_ne!(common_read(&mut d, ISR_OFFSET, 1) & 2, 0, "ISR config bit");
        // The driver cannot clear the bit; the device serves nothing until a reset.
        d.bar_write(0, 0x14, &[0x0f]);
        assert_ne!(common_read(&mut d, 0x14, 1) as u8 & status::NEEDS_RESET, 0);
        let d = notify_returns(d);
        assert_eq!(d.faults().invalid_avail_idx, 1, "not served again");
        let mut d = d;
        d.bar_write(0, 0x14, &[0]);
        assert_eq!(common_read(&mut d, 0x14, 1), 0, "reset clears it");
    }

    #[test]
    fn virtio_pci_unreadable_avail_ring_stops_notify_pass() {
        // The avail index is readable but the ring entry behind it is not (here: past the end
        // of RAM; in a VM: an IOMMU fault): the pass takes nothing and stops.
        let (d, _disk, mem, _msi) = device_with_mem();
        let q = virtio_queue::mock::MockSplitQueue::create(&mem, GuestAddress(0x1_0000), 16);
        let avail = (1u64 << 20) - 4; // flags and idx in RAM, ring[0] outside it
        let mut d = d;
        start_with_event_idx(&mut d, q.desc_table_addr().0, avail, q.used_addr().0, 16);
        mem.write_obj(3u16, GuestAddress(avail + 2)).unwrap();
        let d = notify_returns(d);
        assert_eq!(d.faults().stalled_passes, 1);
        assert_eq!(d.faults().invalid_avail_idx, 0, "a valid index: no reset");
    }

    #[test]
    fn virtio_pci_event_idx_pass_serves_every_announced_buffer() {
        // The bound does not cut a well-formed pass short: three requests, three used entries.
        let (d, _disk, mem, _msi) = device_with_mem();
        let mut q = virtio_queue::mock::MockSplitQueue::create(&mem, GuestAddress(0x1_0000), 16);
        let mut d = d;
        start_with_event_idx(
            &mut d,
            q.desc_table_addr().0,
            q.avail_addr().0,
            q.used_addr().0,
            16,
        );
        for _ in 0..3 {
            q.add_chain(2).unwrap();
        }
        let d = notify_returns(d);
        assert_eq!(q.used().idx().load(), 3);
        assert_eq!(d.faults(), TransportFaults::default());
    }

    #[test]
    fn virtio_pci_notify_moves_with_bar_and_memory_enable() {
        let (mut d, _disk) = device();
        let seen = Arc::new(std::sync::Mutex::new(vec![]));
        let s = seen.clone();
        d.set_bar0(0xc000_0000);
        d.set_notify_moved(Box::new(move |old, new| s.lock().unwrap().push((old, new))));
        assert!(seen.lock().unwrap().is_empty(), "memory decoding still off");
        d.config_write(COMMAND, &COMMAND_MEMORY.to_le_bytes());
        d.config_write(crate::pci::config::BAR0, &0xc001_0000u32.to_le_bytes());
        let v = seen.lock().unwrap().clone();
        assert_eq!(
            v,
            vec![
                (None, Some(0xc000_0000 + NOTIFY_OFFSET)),
                (
                    Some(0xc000_0000 + NOTIFY_OFFSET),
                    Some(0xc001_0000 + NOTIFY_OFFSET)
                )
            ]
        );
    }
}
