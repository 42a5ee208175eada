//! Platform devices and the address-space buses vCPU exits are routed through.
//!
//! Devices here are plain logic: they see an offset and bytes, and reach the
//! rest of the VMM only through small traits ([`crate::exit::ExitSink`],
//! `vm_superio::Trigger`). No device here knows about KVM or epoll.

pub mod console;
pub mod debug_exit;
pub mod pasid;
pub mod serial;

use std::sync::{Arc, Mutex};

/// A device on a port-I/O or MMIO bus. Accesses arrive with the offset from
/// the start of the range the device was registered at.
pub trait BusDevice: Send + Sync {
    /// Guest read of `data.len()` bytes at `offset`.
    fn read(&self, offset: u64, data: &mut [u8]);
    /// Guest write of `data` at `offset`.
    fn write(&self, offset: u64, data: &[u8]);
}

/// A device whose logic needs `&mut self`, wrapped for the bus.
pub trait MutBusDevice: Send {
    /// Guest read.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Guest write.
    fn write(&mut self, offset: u64, data: &[u8]);
}

impl<T: MutBusDevice> BusDevice for Mutex<T> {
    fn read(&self, offset: u64, data: &mut [u8]) {
        match self.lock() {
            Ok(mut d) => d.read(offset, data),
            Err(p) => p.into_inner().read(offset, data),
        }
    }
    fn write(&self, offset: u64, data: &[u8]) {
        match self.lock() {
            Ok(mut d) => d.write(offset, data),
            Err(p) => p.into_inner().write(offset, data),
        }
    }
}

/// A registration on a bus overlapping an existing one.
#[derive(Debug, thiserror::Error)]
#[error("bus range {base:#x}+{len:#x} overlaps an existing device")]
pub struct BusOverlap {
    /// Start of the refused range.
    pub base: u64,
    /// Its length.
    pub len: u64,
}

struct BusEntry {
    base: u64,
    len: u64,
    dev: Arc<dyn BusDevice>,
}

/// An address space (port I/O or MMIO): ranges mapped to devices. Built once
/// before the vCPUs start, then only read.
#[derive(Default)]
pub struct Bus {
    entries: Vec<BusEntry>,
    unhandled: std::sync::atomic::AtomicU64,
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Map `dev` at `[base, base + len)`.
    pub fn insert(
        &mut self,
        dev: Arc<dyn BusDevice>,
        base: u64,
        len: u64,
    ) -> Result<(), BusOverlap> {
        let end = base.checked_add(len).ok_or(BusOverlap { base, len })?;
        if len == 0
            || self
                .entries
                .iter()
                .any(|e| base < e.base.saturating_add(e.len) && e.base < end)
        {
            return Err(BusOverlap { base, len });
        }
        self.entries.push(BusEntry { base, len, dev });
        self.entries.sort_by_key(|e| e.base);
        Ok(())
    }

    fn find(&self, addr: u64, size: usize) -> Option<(&BusEntry, u64)> {
        let idx = self
            .entries
            .partition_point(|e| e.base <= addr)
            .checked_sub(1)?;
        let e = self.entries.get(idx)?;
        // partition_point put e.base <= addr.
        let off = addr.checked_sub(e.base)?;
        let size = u64::try_from(size).ok()?;
        (off.checked_add(size)? <= e.len).then_some((e, off))
    }

    /// Route a read; unmapped addresses read as all ones (PCI master abort).
    /// Returns false when nothing is mapped there.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((e, off)) => {
                e.dev.read(off, data);
                true
            }
            None => {
                data.fill(0xff);
                self.unhandled
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                false
            }
        }
    }

    /// Route a write; writes to unmapped addresses are dropped.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((e, off)) => {
                e.dev.write(off, data);
                true
            }
            None => {
                self.unhandled
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                false
            }
        }
    }

    /// Accesses that hit no device.
    pub fn unhandled(&self) -> u64 {
        self.unhandled.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Read up to 8 bytes as a little-endian value (bytes past the eighth are ignored).
pub fn le_value(data: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    for (dst, src) in b.iter_mut().zip(data) {
        *dst = *src;
    }
    u64::from_le_bytes(b)
}

/// The low 32 bits of an access (a register narrower than the access takes its low bytes).
pub fn le_u32(data: &[u8]) -> u32 {
    (le_value(data) & 0xffff_ffff) as u32
}

/// The low 16 bits of an access.
pub fn le_u16(data: &[u8]) -> u16 {
    (le_value(data) & 0xffff) as u16
}

/// The low byte of an access.
pub fn le_u8(data: &[u8]) -> u8 {
    (le_value(data) & 0xff) as u8
}

/// Store the low `data.len()` bytes of `value`, little-endian (bytes past the eighth are left
/// as they are).
pub fn put_le_value(data: &mut [u8], value: u64) {
    for (dst, src) in data.iter_mut().zip(value.to_le_bytes()) {
        *dst = src;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo(Mutex<Vec<(u64, Vec<u8>)>>);
    impl BusDevice for Echo {
        fn read(&self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&self, offset: u64, data: &[u8]) {
            self.0.lock().unwrap().push((offset, data.to_vec()));
        }
    }

    #[test]
    fn bus_routes_by_range_and_offset() {
        let mut bus = Bus::new();
        let a = Arc::new(Echo(Mutex::new(vec![])));
        bus.insert(a.clone(), 0x3f8, 8).unwrap();
        let mut d = [0u8; 1];
        assert!(bus.read(0x3fd, &mut d));
        assert_eq!(d, [5]);
        assert!(bus.write(0x3f8, &[0x41]));
        assert_eq!(a.0.lock().unwrap()[0], (0, vec![0x41]));
    }

    #[test]
    fn bus_unmapped_read_is_all_ones_and_counted() {
        let mut bus = Bus::new();
        bus.insert(Arc::new(Echo(Mutex::new(vec![]))), 0x100, 4)
            .unwrap();
        let mut d = [0u8; 4];
        assert!(!bus.read(0x102, &mut d), "straddles the end");
        assert_eq!(d, [0xff; 4]);
        assert!(!bus.write(0x50, &[1]));
        assert_eq!(bus.unhandled(), 2);
    }

    #[test]
    fn bus_overlapping_insert_is_refused() {
        let mut bus = Bus::new();
        bus.insert(Arc::new(Echo(Mutex::new(vec![]))), 0x100, 0x10)
            .unwrap();
        assert!(
            bus.insert(Arc::new(Echo(Mutex::new(vec![]))), 0x10f, 1)
                .is_err()
        );
        assert!(
            bus.insert(Arc::new(Echo(Mutex::new(vec![]))), 0x110, 1)
                .is_ok()
        );
    }
}
