//! A PCI(e) function's configuration space as data: contents plus per-byte
//! writable and write-1-to-clear masks (PCI Local Bus 3.0 §6, PCIe 6.0 §7).
//! BAR sizing falls out of the masks: the address bits below the BAR's size
//! are read-only zero, so writing all ones reads back the size.

/// Configuration space size of a PCIe function (extended space included).
pub const CONFIG_SIZE: usize = 4096;
/// Legacy (PCI-compatible) configuration space size.
pub const LEGACY_CONFIG_SIZE: usize = 256;

/// Command register offset.
pub const COMMAND: usize = 0x04;
/// Status register offset.
pub const STATUS: usize = 0x06;
/// First BAR.
pub const BAR0: usize = 0x10;
/// Capabilities pointer.
pub const CAPABILITIES_POINTER: usize = 0x34;
/// Interrupt line.
pub const INTERRUPT_LINE: usize = 0x3c;

/// Command: memory space enable.
pub const COMMAND_MEMORY: u16 = 1 << 1;
/// Command: I/O space enable.
pub const COMMAND_IO: u16 = 1 << 0;
/// Command: bus master enable.
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
/// Command: INTx disable.
pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;
/// Status: capabilities list present.
pub const STATUS_CAP_LIST: u16 = 1 << 4;

/// Capability IDs (PCI Code and ID Assignment 1.11 §2).
pub mod cap_id {
    /// MSI.
    pub const MSI: u8 = 0x05;
    /// Vendor specific (virtio uses it).
    pub const VENDOR: u8 = 0x09;
    /// PCI Express.
    pub const PCIE: u8 = 0x10;
    /// MSI-X.
    pub const MSIX: u8 = 0x11;
}

/// What a BAR decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    /// 32-bit memory.
    Mem32,
    /// 64-bit memory (takes two BAR slots).
    Mem64,
    /// Port I/O.
    Io,
}

#[derive(Clone, Copy, Debug)]
struct Bar {
    size: u64,
    kind: BarKind,
}

/// Identity of a function: the registers at the start of the header.
#[derive(Clone, Copy, Debug)]
pub struct PciId {
    /// Vendor ID.
    pub vendor: u16,
    /// Device ID.
    pub device: u16,
    /// Revision ID.
    pub revision: u8,
    /// Class code: base class, subclass, programming interface.
    pub class: [u8; 3],
    /// Subsystem vendor ID.
    pub subsystem_vendor: u16,
    /// Subsystem ID.
    pub subsystem: u16,
}

/// One function's configuration space.
#[derive(Clone)]
pub struct PciConfig {
    data: Vec<u8>,
    wmask: Vec<u8>,
    w1cmask: Vec<u8>,
    bars: [Option<Bar>; 6],
    last_cap: Option<usize>,
    next_cap: usize,
}

impl std::fmt::Debug for PciConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PciConfig")
            .field("vendor", &self.read_u16(0))
            .field("device", &self.read_u16(2))
            .finish_non_exhaustive()
    }
}

impl PciConfig {
    /// A type 0 header for `id`.
    pub fn new(id: PciId) -> Self {
        let mut c = PciConfig {
            data: vec![0; CONFIG_SIZE],
            wmask: vec![0; CONFIG_SIZE],
            w1cmask: vec![0; CONFIG_SIZE],
            bars: [None; 6],
            last_cap: None,
            next_cap: 0x40,
        };
        c.set_u16(0x00, id.vendor);
        c.set_u16(0x02, id.device);
        c.data[0x08] = id.revision;
        c.data[0x09] = id.class[2];
        c.data[0x0a] = id.class[1];
        c.data[0x0b] = id.class[0];
        c.set_u16(0x2c, id.subsystem_vendor);
        c.set_u16(0x2e, id.subsystem);
        let cmd_mask = COMMAND_IO
            | COMMAND_MEMORY
            | COMMAND_BUS_MASTER
            | (1 << 6)
            | (1 << 8)
            | COMMAND_INTX_DISABLE;
        c.set_mask(COMMAND, &cmd_mask.to_le_bytes());
        // Status: parity/abort/SERR bits are RW1C (PCI 3.0 §6.2.3).
        c.w1cmask[STATUS + 1] = 0xf9;
        c.wmask[0x0c] = 0xff; // cache line size
        c.wmask[0x0d] = 0xff; // latency timer
        c.wmask[INTERRUPT_LINE] = 0xff;
        c
    }

    fn set_mask(&mut self, off: usize, mask: &[u8]) {
        self.wmask[off..off + mask.len()].copy_from_slice(mask);
    }

    fn set_u16(&mut self, off: usize, v: u16) {
        self.data[off..off + 2].copy_from_slice(&v.to_le_bytes());
    }

    /// Set a read-only u32 (device-side update).
    pub fn set_u32(&mut self, off: usize, v: u32) {
        self.data[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }

    /// Read a u16 (device side).
    pub fn read_u16(&self, off: usize) -> u16 {
        self.data
            .get(off..off + 2)
            .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]))
    }

    /// Read a u32 (device side).
    pub fn read_u32(&self, off: usize) -> u32 {
        self.data
            .get(off..off + 4)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Mark the function as having an interrupt pin (INTA..INTD = 1..4).
    pub fn set_interrupt_pin(&mut self, pin: u8) {
        self.data[0x3d] = pin;
    }

    /// Declare BAR `index` of `size` bytes (a power of two, at least 16 for
    /// memory). A 64-bit BAR also uses slot `index + 1`.
    pub fn add_bar(&mut self, index: usize, size: u64, kind: BarKind) {
        assert!(size.is_power_of_two() && index < 6, "bad BAR {index}");
        let off = BAR0 + index * 4;
        let addr_mask = !(size - 1);
        let (type_bits, low_mask) = match kind {
            BarKind::Mem32 => (0u32, (addr_mask as u32) & !0xf),
            BarKind::Mem64 => (0b100, (addr_mask as u32) & !0xf),
            BarKind::Io => (0b1, (addr_mask as u32) & !0x3),
        };
        self.set_u32(off, type_bits);
        self.set_mask(off, &low_mask.to_le_bytes());
        if kind == BarKind::Mem64 {
            assert!(index < 5, "64-bit BAR {index} has no upper half");
            self.set_mask(off + 4, &((addr_mask >> 32) as u32).to_le_bytes());
            self.bars[index + 1] = None;
        }
        self.bars[index] = Some(Bar { size, kind });
    }

    /// Program BAR `index` (firmware-style placement by the VMM).
    pub fn set_bar_addr(&mut self, index: usize, addr: u64) {
        let Some(bar) = self.bars[index] else { return };
        let off = BAR0 + index * 4;
        let low = (self.read_u32(off) & 0xf) | (addr as u32 & !0xf);
        self.set_u32(off, low);
        if bar.kind == BarKind::Mem64 {
            self.set_u32(off + 4, (addr >> 32) as u32);
        }
    }

    /// Address BAR `index` decodes at, or None when undeclared or when its
    /// space is disabled in the command register.
    pub fn bar_addr(&self, index: usize) -> Option<(u64, u64)> {
        let bar = (*self.bars.get(index)?)?;
        let cmd = self.read_u16(COMMAND);
        let off = BAR0 + index * 4;
        let low = self.read_u32(off);
        match bar.kind {
            BarKind::Mem32 if cmd & COMMAND_MEMORY != 0 => Some((u64::from(low & !0xf), bar.size)),
            BarKind::Mem64 if cmd & COMMAND_MEMORY != 0 => {
                let high = u64::from(self.read_u32(off + 4));
                Some(((high << 32) | u64::from(low & !0xf), bar.size))
            }
            BarKind::Io if cmd & COMMAND_IO != 0 => Some((u64::from(low & !0x3), bar.size)),
            _ => None,
        }
    }

    /// Size and kind of BAR `index`.
    pub fn bar_info(&self, index: usize) -> Option<(u64, BarKind)> {
        self.bars
            .get(index)
            .copied()
            .flatten()
            .map(|b| (b.size, b.kind))
    }

    /// Append a capability to the legacy list: `body` is everything after the
    /// ID and next pointer, `wmask` its writable bits (same length or empty).
    /// Returns the capability's offset.
    pub fn add_capability(&mut self, id: u8, body: &[u8], wmask: &[u8]) -> usize {
        let off = self.next_cap;
        let len = 2 + body.len();
        assert!(
            off + len <= LEGACY_CONFIG_SIZE,
            "capabilities overflow legacy space"
        );
        self.data[off] = id;
        self.data[off + 1] = 0;
        self.data[off + 2..off + len].copy_from_slice(body);
        if !wmask.is_empty() {
            assert_eq!(wmask.len(), body.len());
            self.set_mask(off + 2, wmask);
        }
        match self.last_cap {
            Some(prev) => self.data[prev + 1] = off as u8,
            None => self.data[CAPABILITIES_POINTER] = off as u8,
        }
        self.last_cap = Some(off);
        self.next_cap = (off + len + 3) & !3;
        let status = self.read_u16(STATUS) | STATUS_CAP_LIST;
        self.set_u16(STATUS, status);
        off
    }

    /// Guest read of `data.len()` bytes (1, 2 or 4) at `off`. Out of range
    /// reads as zero... except that reading past the 4 KiB space reads ones.
    pub fn read(&self, off: usize, data: &mut [u8]) {
        match self.data.get(off..off + data.len()) {
            Some(src) => data.copy_from_slice(src),
            None => data.fill(0xff),
        }
    }

    /// Guest write honouring the writable and write-1-to-clear masks.
    pub fn write(&mut self, off: usize, data: &[u8]) {
        for (i, &v) in data.iter().enumerate() {
            let Some(o) = off.checked_add(i).filter(|&o| o < CONFIG_SIZE) else {
                return;
            };
            let w = self.wmask[o];
            let c = self.w1cmask[o];
            self.data[o] = ((self.data[o] & !w) | (v & w)) & !(v & c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> PciConfig {
        PciConfig::new(PciId {
            vendor: 0x1af4,
            device: 0x1042,
            revision: 1,
            class: [0x01, 0x80, 0x00],
            subsystem_vendor: 0x1af4,
            subsystem: 0x0002,
        })
    }

    fn rd32(c: &PciConfig, off: usize) -> u32 {
        let mut b = [0u8; 4];
        c.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    #[test]
    fn config_header_ids_read_back() {
        let c = cfg();
        assert_eq!(rd32(&c, 0), 0x1042_1af4);
        assert_eq!(rd32(&c, 8), 0x0180_0001);
        assert_eq!(rd32(&c, 0x2c), 0x0002_1af4);
    }

    #[test]
    fn config_ids_are_read_only() {
        let mut c = cfg();
        c.write(0, &[0; 4]);
        assert_eq!(rd32(&c, 0), 0x1042_1af4);
    }

    #[test]
    fn bar_sizing_mem32_reads_back_size() {
        // PCI 3.0 §6.2.5.1: write all ones, read back, invert, add one.
        let mut c = cfg();
        c.add_bar(0, 0x8000, BarKind::Mem32);
        c.write(BAR0, &0xffff_ffffu32.to_le_bytes());
        let v = rd32(&c, BAR0);
        assert_eq!(v, 0xffff_8000);
        assert_eq!((!(v & !0xf)).wrapping_add(1), 0x8000);
    }

    #[test]
    fn bar_sizing_mem64_reads_back_size_in_both_halves() {
        let mut c = cfg();
        c.add_bar(2, 1 << 33, BarKind::Mem64);
        c.write(BAR0 + 8, &0xffff_ffffu32.to_le_bytes());
        c.write(BAR0 + 12, &0xffff_ffffu32.to_le_bytes());
        assert_eq!(rd32(&c, BAR0 + 8), 0x0000_0004);
        assert_eq!(rd32(&c, BAR0 + 12), 0xffff_fffe);
    }

    #[test]
    fn bar_addr_needs_memory_enable() {
        let mut c = cfg();
        c.add_bar(0, 0x4000, BarKind::Mem32);
        c.set_bar_addr(0, 0xc000_4000);
        assert_eq!(c.bar_addr(0), None);
        c.write(COMMAND, &COMMAND_MEMORY.to_le_bytes());
        assert_eq!(c.bar_addr(0), Some((0xc000_4000, 0x4000)));
        assert_eq!(c.bar_addr(1), None, "undeclared BAR");
    }

    #[test]
    fn unused_bar_is_read_only_zero() {
        let mut c = cfg();
        c.write(BAR0 + 4, &0xffff_ffffu32.to_le_bytes());
        assert_eq!(rd32(&c, BAR0 + 4), 0);
    }

    #[test]
    fn capability_list_links_and_sets_status() {
        let mut c = cfg();
        let a = c.add_capability(cap_id::VENDOR, &[1, 2], &[]);
        let b = c.add_capability(cap_id::MSIX, &[0; 10], &[]);
        assert_eq!(c.read_u16(STATUS) & STATUS_CAP_LIST, STATUS_CAP_LIST);
        assert_eq!(c.data[CAPABILITIES_POINTER] as usize, a);
        assert_eq!(c.data[a + 1] as usize, b);
        assert_eq!(c.data[b + 1], 0);
        assert_eq!(b % 4, 0);
    }

    #[test]
    fn status_error_bits_are_write_one_to_clear() {
        let mut c = cfg();
        c.data[STATUS + 1] = 0x80 | 0x10;
        c.write(STATUS, &[0, 0x80]);
        assert_eq!(c.data[STATUS + 1], 0x10);
    }

    #[test]
    fn read_past_config_space_is_all_ones() {
        let c = cfg();
        let mut b = [0u8; 4];
        c.read(CONFIG_SIZE - 2, &mut b);
        assert_eq!(b, [0xff; 4]);
    }
}
