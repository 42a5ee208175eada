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

/// Config-space offset of each BAR slot (PCI 3.0 §6.2.5.1).
const BAR_OFFSETS: [usize; 6] = [0x10, 0x14, 0x18, 0x1c, 0x20, 0x24];

/// `buf[off..off + len]`, or None when any of it lies outside `buf`.
fn span(buf: &[u8], off: usize, len: usize) -> Option<&[u8]> {
    buf.get(off..off.checked_add(len)?)
}

/// Mutable `buf[off..off + len]`, or None when any of it lies outside `buf`.
fn span_mut(buf: &mut [u8], off: usize, len: usize) -> Option<&mut [u8]> {
    buf.get_mut(off..off.checked_add(len)?)
}

/// Copy `bytes` to `buf` at `off`. Only device-side set-up calls this, with
/// offsets fixed by the device's layout, so an out-of-range offset is a VMM
/// bug: caught in debug builds, ignored (the bytes stay unwritten) otherwise.
fn put(buf: &mut [u8], off: usize, bytes: &[u8]) {
    match span_mut(buf, off, bytes.len()) {
        Some(dst) => dst.copy_from_slice(bytes),
        None => debug_assert!(false, "config-space set-up write at {off:#x} out of range"),
    }
}

/// The low 32 bits of `v` (the high half is written separately).
pub(crate) fn low_u32(v: u64) -> u32 {
    (v & 0xffff_ffff) as u32
}

/// The high 32 bits of `v`.
pub(crate) fn high_u32(v: u64) -> u32 {
    (v >> 32) as u32
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
        let [class_base, class_sub, class_prog] = id.class;
        put(
            &mut c.data,
            0x08,
            &[id.revision, class_prog, class_sub, class_base],
        );
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
        put(&mut c.w1cmask, STATUS + 1, &[0xf9]);
        // Cache line size and latency timer.
        c.set_mask(0x0c, &[0xff, 0xff]);
        c.set_mask(INTERRUPT_LINE, &[0xff]);
        c
    }

    fn set_mask(&mut self, off: usize, mask: &[u8]) {
        put(&mut self.wmask, off, mask);
    }

    fn set_u16(&mut self, off: usize, v: u16) {
        put(&mut self.data, off, &v.to_le_bytes());
    }

    /// Set a read-only u32 (device-side update).
    pub fn set_u32(&mut self, off: usize, v: u32) {
        put(&mut self.data, off, &v.to_le_bytes());
    }

    /// `N` bytes at `off`, or None when any of them lies outside the space.
    fn bytes<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        span(&self.data, off, N)?.try_into().ok()
    }

    /// Read a u16 (device side); zero outside the space.
    pub fn read_u16(&self, off: usize) -> u16 {
        self.bytes(off).map_or(0, u16::from_le_bytes)
    }

    /// Read a u32 (device side); zero outside the space.
    pub fn read_u32(&self, off: usize) -> u32 {
        self.bytes(off).map_or(0, u32::from_le_bytes)
    }

    /// Mark the function as having an interrupt pin (INTA..INTD = 1..4).
    pub fn set_interrupt_pin(&mut self, pin: u8) {
        put(&mut self.data, 0x3d, &[pin]);
    }

    /// Declare BAR `index` of `size` bytes (a power of two, at least 16 for
    /// memory). A 64-bit BAR also uses slot `index + 1`.
    pub fn add_bar(&mut self, index: usize, size: u64, kind: BarKind) {
        let off = BAR_OFFSETS.get(index).copied();
        assert!(size.is_power_of_two() && off.is_some(), "bad BAR {index}");
        let off = off.unwrap_or(BAR0);
        // Two's complement: -size == !(size - 1), the address bits above the size.
        let addr_mask = size.wrapping_neg();
        let (type_bits, low_mask) = match kind {
            BarKind::Mem32 => (0u32, low_u32(addr_mask) & !0xf),
            BarKind::Mem64 => (0b100, low_u32(addr_mask) & !0xf),
            BarKind::Io => (0b1, low_u32(addr_mask) & !0x3),
        };
        self.set_u32(off, type_bits);
        self.set_mask(off, &low_mask.to_le_bytes());
        if kind == BarKind::Mem64 {
            let upper = index.checked_add(1).filter(|&i| i < BAR_OFFSETS.len());
            assert!(upper.is_some(), "64-bit BAR {index} has no upper half");
            self.set_mask(off.saturating_add(4), &high_u32(addr_mask).to_le_bytes());
            if let Some(slot) = upper.and_then(|i| self.bars.get_mut(i)) {
                *slot = None;
            }
        }
        if let Some(slot) = self.bars.get_mut(index) {
            *slot = Some(Bar { size, kind });
        }
    }

    /// Program BAR `index` (firmware-style placement by the VMM).
    pub fn set_bar_addr(&mut self, index: usize, addr: u64) {
        let (Some(Some(bar)), Some(&off)) = (self.bars.get(index).copied(), BAR_OFFSETS.get(index))
        else {
            return;
        };
        let low = (self.read_u32(off) & 0xf) | (low_u32(addr) & !0xf);
        self.set_u32(off, low);
        if bar.kind == BarKind::Mem64 {
            self.set_u32(off.saturating_add(4), high_u32(addr));
        }
    }

    /// Address BAR `index` decodes at, or None when undeclared or when its
    /// space is disabled in the command register.
    pub fn bar_addr(&self, index: usize) -> Option<(u64, u64)> {
        let bar = (*self.bars.get(index)?)?;
        let off = *BAR_OFFSETS.get(index)?;
        let cmd = self.read_u16(COMMAND);
        let low = self.read_u32(off);
        match bar.kind {
            BarKind::Mem32 if cmd & COMMAND_MEMORY != 0 => Some((u64::from(low & !0xf), bar.size)),
            BarKind::Mem64 if cmd & COMMAND_MEMORY != 0 => {
                let high = u64::from(self.read_u32(off.checked_add(4)?));
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
        let end = off.saturating_add(2).saturating_add(body.len());
        // The list lives in the legacy space, so every offset fits the 8-bit pointers.
        let off8 = u8::try_from(off).ok().filter(|_| end <= LEGACY_CONFIG_SIZE);
        assert!(off8.is_some(), "capabilities overflow legacy space");
        let off8 = off8.unwrap_or(0);
        put(&mut self.data, off, &[id, 0]);
        put(&mut self.data, off.saturating_add(2), body);
        if !wmask.is_empty() {
            assert_eq!(wmask.len(), body.len());
            self.set_mask(off.saturating_add(2), wmask);
        }
        let link = match self.last_cap {
            Some(prev) => prev.saturating_add(1),
            None => CAPABILITIES_POINTER,
        };
        put(&mut self.data, link, &[off8]);
        self.last_cap = Some(off);
        // Capabilities are dword aligned (PCI 3.0 §6.7); `end` is at most 256.
        self.next_cap = end.saturating_add(3) & !3;
        let status = self.read_u16(STATUS) | STATUS_CAP_LIST;
        self.set_u16(STATUS, status);
        off
    }

    /// Guest read of `data.len()` bytes (1, 2 or 4) at `off`. Out of range
    /// reads as zero... except that reading past the 4 KiB space reads ones.
    pub fn read(&self, off: usize, data: &mut [u8]) {
        match span(&self.data, off, data.len()) {
            Some(src) => data.copy_from_slice(src),
            None => data.fill(0xff),
        }
    }

    /// Guest write honouring the writable and write-1-to-clear masks. Bytes
    /// past the 4 KiB space are ignored.
    pub fn write(&mut self, off: usize, data: &[u8]) {
        for (i, &v) in data.iter().enumerate() {
            let Some(o) = off.checked_add(i) else { return };
            let (Some(d), Some(&w), Some(&c)) =
                (self.data.get_mut(o), self.wmask.get(o), self.w1cmask.get(o))
            else {
                return;
            };
            *d = ((*d & !w) | (v & w)) & !(v & c);
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
