//! Virtio devices over modern virtio-pci (Virtio 1.2 §4.1), with every DMA
//! (rings and buffers) through the device's IOMMU address space.

pub mod blk;
pub mod pci;

use virtio_queue::Queue;
use vm_memory::{GuestMemoryMmap, IommuMemory};

use iommu_emulator::DeviceAddressSpace;

/// The memory object devices DMA through: guest RAM seen through the
/// device's IOMMU address space (translation off for `--iommu none`).
pub type DmaMemory = IommuMemory<GuestMemoryMmap, DeviceAddressSpace>;

/// VIRTIO_F_VERSION_1 (§6).
pub const F_VERSION_1: u64 = 1 << 32;
/// VIRTIO_F_ACCESS_PLATFORM (§6): the device's DMA goes through the
/// platform's IOMMU, so the driver maps buffers with the DMA API.
pub const F_ACCESS_PLATFORM: u64 = 1 << 33;
/// VIRTIO_RING_F_EVENT_IDX (§2.7.10).
pub const F_RING_EVENT_IDX: u64 = 1 << 29;

/// Device status bits (§2.1).
pub mod status {
    /// ACKNOWLEDGE.
    pub const ACKNOWLEDGE: u8 = 1;
    /// DRIVER.
    pub const DRIVER: u8 = 2;
    /// DRIVER_OK.
    pub const DRIVER_OK: u8 = 4;
    /// FEATURES_OK.
    pub const FEATURES_OK: u8 = 8;
    /// DEVICE_NEEDS_RESET.
    pub const NEEDS_RESET: u8 = 0x40;
    /// FAILED.
    pub const FAILED: u8 = 0x80;
}

/// A virtio device's own logic, behind the transport.
pub trait VirtioDevice: Send {
    /// Virtio device ID (§5).
    fn device_type(&self) -> u16;
    /// Feature bits offered (transport bits are added by the transport).
    fn features(&self) -> u64;
    /// Maximum size of each queue.
    fn queue_max_sizes(&self) -> &[u16];
    /// Read the device configuration space.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Write the device configuration space.
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// Serve available buffers of queue `index`. Returns true when used
    /// buffers were added (the transport then decides about interrupting).
    fn process_queue(&mut self, index: usize, queue: &mut Queue, mem: &DmaMemory) -> bool;
    /// The driver reset the device.
    fn reset(&mut self) {}
    /// Make completed writes durable (called when the VMM stops).
    fn sync(&self) -> std::io::Result<()> {
        Ok(())
    }
    /// One line of statistics for `--stats`.
    fn stats(&self) -> String {
        String::new()
    }
}
