//! PCIe root complex: host bridge, legacy CF8/CFC and ECAM configuration
//! access, BAR decoding, MSI and MSI-X, the PCIe capability.
//!
//! Every function on the root bus has a requester ID (`00:dd.f`), which is
//! the source ID of all its DMA through its IOMMU address space.

pub mod config;
pub mod msi;
pub mod msix;

use std::sync::{Arc, Mutex};

use iommu_emulator::{Rid, SourceId};

use crate::devices::BusDevice;
use config::{BarKind, PciConfig, PciId, cap_id};

/// A function on the root bus.
pub trait PciDevice: Send {
    /// Its configuration space.
    fn config(&self) -> &PciConfig;
    /// Guest write to configuration space (the device may react: BAR moves,
    /// MSI-X enable, bus master off).
    fn config_write(&mut self, offset: usize, data: &[u8]);
    /// Guest read of configuration space (a device with registers that have
    /// side effects, such as virtio's PCI configuration access window,
    /// overrides it).
    fn config_read(&mut self, offset: usize, data: &mut [u8]) {
        self.config().read(offset, data);
    }
    /// Guest read in BAR `bar` at `offset`.
    fn bar_read(&mut self, bar: usize, offset: u64, data: &mut [u8]);
    /// Guest write in BAR `bar` at `offset`.
    fn bar_write(&mut self, bar: usize, offset: u64, data: &[u8]);
}

/// PCI Express capability, device/port types (PCIe 6.0 §7.5.3.2).
pub const PCIE_TYPE_ENDPOINT: u8 = 0x0;
/// Root Complex Integrated Endpoint.
pub const PCIE_TYPE_RCIEP: u8 = 0x9;
/// Root Complex Event Collector... not used; host bridge is a root port-less root complex.
pub const PCIE_TYPE_ROOT_PORT: u8 = 0x4;

/// Add a PCI Express capability structure, version 2 (PCIe 6.0 §7.5.3),
/// for a function of `device_type` without link registers (an RCiEP).
pub fn add_pcie_capability(config: &mut PciConfig, device_type: u8) -> usize {
    // 0x3c bytes in total; body starts at +2 (PCIe Capabilities register).
    let mut body = [0u8; 0x3a];
    let caps: u16 = 2 | (u16::from(device_type & 0xf) << 4);
    body[0..2].copy_from_slice(&caps.to_le_bytes());
    // Device Capabilities (+4): max payload 128 bytes, role-based error reporting.
    body[2..6].copy_from_slice(&(1u32 << 15).to_le_bytes());
    let mut wmask = [0u8; 0x3a];
    // Device Control (+8): error reporting enables, relaxed ordering, max
    // payload/read request, no-snoop are read-write (§7.5.3.4).
    wmask[6..8].copy_from_slice(&0x7fffu16.to_le_bytes());
    // Device Control 2 (+0x28): completion timeout, ARI, IDO etc.
    wmask[0x26..0x28].copy_from_slice(&0xffffu16.to_le_bytes());
    // Device Capabilities 2 (+0x24): completion timeout disable supported.
    body[0x22..0x26].copy_from_slice(&(1u32 << 4).to_le_bytes());
    config.add_capability(cap_id::PCIE, &body, &wmask)
}

/// The host bridge at 00:00.0.
pub struct HostBridge {
    config: PciConfig,
}

impl HostBridge {
    /// A PCIe host bridge (class 06:00:00).
    pub fn new() -> Self {
        let mut config = PciConfig::new(PciId {
            vendor: 0x1b36, // Red Hat, as QEMU's generic PCIe host bridge
            device: 0x0008,
            revision: 0,
            class: [0x06, 0x00, 0x00],
            subsystem_vendor: 0x1b36,
            subsystem: 0x0008,
        });
        add_pcie_capability(&mut config, PCIE_TYPE_RCIEP);
        HostBridge { config }
    }
}

impl Default for HostBridge {
    fn default() -> Self {
        Self::new()
    }
}

impl PciDevice for HostBridge {
    fn config(&self) -> &PciConfig {
        &self.config
    }
    fn config_write(&mut self, offset: usize, data: &[u8]) {
        self.config.write(offset, data);
    }
    fn bar_read(&mut self, _bar: usize, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn bar_write(&mut self, _bar: usize, _offset: u64, _data: &[u8]) {}
}

/// A configuration address: bus 0 only, device, function, register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigAddress {
    /// Bus number.
    pub bus: u8,
    /// Device and function (`dev << 3 | func`).
    pub devfn: u8,
    /// Byte offset in configuration space (0..4096).
    pub offset: usize,
}

/// CONFIG_ADDRESS enable bit (PCI 3.0 §3.2.2.3.2).
pub const CF8_ENABLE: u32 = 1 << 31;

/// Decode a legacy access: `cf8` is the latched CONFIG_ADDRESS, `port_offset`
/// the byte within CONFIG_DATA (0xcfc..0xcff). The register number comes from
/// CF8 bits 7:2 and the low two offset bits from the CFC port, as on real
/// chipsets; CF8's own bits 1:0 are reserved and read as zero. Returns None
/// when the enable bit is clear.
pub fn decode_cf8(cf8: u32, port_offset: u8) -> Option<ConfigAddress> {
    if cf8 & CF8_ENABLE == 0 {
        return None;
    }
    Some(ConfigAddress {
        bus: ((cf8 >> 16) & 0xff) as u8,
        devfn: ((cf8 >> 8) & 0xff) as u8,
        offset: (cf8 & 0xfc) as usize | usize::from(port_offset & 3),
    })
}

/// Decode an ECAM offset (PCIe 6.0 §7.2.2, Table 7-1).
pub fn decode_ecam(offset: u64) -> ConfigAddress {
    ConfigAddress {
        bus: ((offset >> 20) & 0xff) as u8,
        devfn: ((offset >> 12) & 0xff) as u8,
        offset: (offset & 0xfff) as usize,
    }
}

type SharedDevice = Arc<Mutex<dyn PciDevice>>;

/// The root bus: functions by devfn, the CF8 latch, BAR routing.
pub struct PciRoot {
    devices: Vec<(u8, SharedDevice)>,
}

impl PciRoot {
    /// A root bus with the host bridge at 00:00.0.
    pub fn new() -> Self {
        PciRoot {
            devices: vec![(0, Arc::new(Mutex::new(HostBridge::new())))],
        }
    }

    /// The next free device number (function 0).
    pub fn next_devfn(&self) -> Option<u8> {
        (1u8..32)
            .map(|d| d << 3)
            .find(|df| self.devices.iter().all(|(x, _)| x != df))
    }

    /// Plug `dev` at `devfn`; returns its requester ID.
    pub fn add(&mut self, devfn: u8, dev: SharedDevice) -> SourceId {
        self.devices.push((devfn, dev));
        SourceId::Pci(Rid::new(0, devfn >> 3, devfn & 7))
    }

    fn device(&self, bus: u8, devfn: u8) -> Option<&SharedDevice> {
        if bus != 0 {
            return None;
        }
        self.devices
            .iter()
            .find(|(d, _)| *d == devfn)
            .map(|(_, dev)| dev)
    }

    /// Configuration read; absent functions read as all ones.
    pub fn config_read(&self, addr: ConfigAddress, data: &mut [u8]) {
        match self.device(addr.bus, addr.devfn) {
            Some(dev) => lock(dev).config_read(addr.offset, data),
            None => data.fill(0xff),
        }
    }

    /// Configuration write; absent functions ignore it.
    pub fn config_write(&self, addr: ConfigAddress, data: &[u8]) {
        if addr.offset.saturating_add(data.len()) > config::CONFIG_SIZE {
            return;
        }
        if let Some(dev) = self.device(addr.bus, addr.devfn) {
            lock(dev).config_write(addr.offset, data);
        }
    }

    /// Find the BAR decoding `addr`: device, BAR index, offset.
    fn bar_at(&self, addr: u64, len: usize, io: bool) -> Option<(&SharedDevice, usize, u64)> {
        for (_, dev) in &self.devices {
            let d = lock(dev);
            for bar in 0..6 {
                let is_io = matches!(d.config().bar_info(bar), Some((_, BarKind::Io)));
                if is_io != io {
                    continue;
                }
                if let Some((base, size)) = d.config().bar_addr(bar) {
                    let off = addr.wrapping_sub(base);
                    if addr >= base && off.saturating_add(len as u64) <= size {
                        return Some((dev, bar, off));
                    }
                }
            }
        }
        None
    }

    /// MMIO read in the PCI window (BARs).
    pub fn mmio_read(&self, addr: u64, data: &mut [u8]) {
        match self.bar_at(addr, data.len(), false) {
            Some((dev, bar, off)) => lock(dev).bar_read(bar, off, data),
            None => data.fill(0xff),
        }
    }

    /// MMIO write in the PCI window.
    pub fn mmio_write(&self, addr: u64, data: &[u8]) {
        if let Some((dev, bar, off)) = self.bar_at(addr, data.len(), false) {
            lock(dev).bar_write(bar, off, data);
        }
    }
}

impl Default for PciRoot {
    fn default() -> Self {
        Self::new()
    }
}

fn lock(dev: &SharedDevice) -> std::sync::MutexGuard<'_, dyn PciDevice + 'static> {
    dev.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The ECAM window on the MMIO bus.
pub struct PciEcam(pub Arc<PciRoot>);

impl BusDevice for PciEcam {
    fn read(&self, offset: u64, data: &mut [u8]) {
        self.0.config_read(decode_ecam(offset), data);
    }
    fn write(&self, offset: u64, data: &[u8]) {
        self.0.config_write(decode_ecam(offset), data);
    }
}

/// The PCI memory window on the MMIO bus (BAR accesses).
pub struct PciMmio {
    /// The root bus.
    pub root: Arc<PciRoot>,
    /// Where the window starts (offsets are relative to it).
    pub base: u64,
}

impl BusDevice for PciMmio {
    fn read(&self, offset: u64, data: &mut [u8]) {
        self.root.mmio_read(self.base.wrapping_add(offset), data);
    }
    fn write(&self, offset: u64, data: &[u8]) {
        self.root.mmio_write(self.base.wrapping_add(offset), data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cf8_decode_takes_byte_offset_from_cfc_port() {
        let cf8 = CF8_ENABLE | (0x08 << 8) | 0x44;
        assert_eq!(
            decode_cf8(cf8, 2),
            Some(ConfigAddress {
                bus: 0,
                devfn: 8,
                offset: 0x46
            })
        );
        assert_eq!(decode_cf8(cf8 & !CF8_ENABLE, 0), None);
    }

    #[test]
    fn ecam_decode_splits_bus_devfn_register() {
        let a = decode_ecam((3 << 20) | (0x0a << 12) | 0x104);
        assert_eq!(
            a,
            ConfigAddress {
                bus: 3,
                devfn: 0x0a,
                offset: 0x104
            }
        );
    }

    #[test]
    fn absent_function_reads_all_ones() {
        let root = PciRoot::new();
        let mut d = [0u8; 4];
        root.config_read(decode_ecam(5 << 15), &mut d);
        assert_eq!(d, [0xff; 4]);
        root.config_read(decode_ecam(1 << 20), &mut d);
        assert_eq!(d, [0xff; 4], "bus 1 does not exist");
    }

    #[test]
    fn pcie_capability_is_rciep_version_2() {
        let root = PciRoot::new();
        let mut d = [0u8; 4];
        root.config_read(decode_ecam(0x34), &mut d);
        let cap = d[0] as u64;
        root.config_read(decode_ecam(cap), &mut d);
        assert_eq!(d[0], cap_id::PCIE);
        let caps = u16::from_le_bytes([d[2], d[3]]);
        assert_eq!(caps & 0xf, 2);
        assert_eq!((caps >> 4) & 0xf, u16::from(PCIE_TYPE_RCIEP));
    }

    #[test]
    fn ecam_extended_space_reads_zero_header() {
        let root = PciRoot::new();
        let mut d = [0xaau8; 4];
        root.config_read(decode_ecam(0x100), &mut d);
        assert_eq!(
            d, [0; 4],
            "no extended capabilities: header 0 ends the list"
        );
    }
}
