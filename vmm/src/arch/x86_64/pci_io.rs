//! PCI configuration mechanism #1 (PCI 3.0 §3.2.2.3.2): CONFIG_ADDRESS at port 0xcf8 and
//! CONFIG_DATA at 0xcfc-0xcff, an x86 port-I/O window onto the root bus's configuration space.

use std::sync::{Arc, Mutex};

use crate::devices::{BusDevice, le_u32};
use crate::pci::{PciRoot, decode_cf8};

/// Port I/O 0xcf8..0xcff on the root bus, with its latched CONFIG_ADDRESS.
pub struct PciConfigIo {
    root: Arc<PciRoot>,
    cf8: Mutex<u32>,
}

impl PciConfigIo {
    /// The configuration ports of `root`.
    pub fn new(root: Arc<PciRoot>) -> Self {
        PciConfigIo {
            root,
            cf8: Mutex::new(0),
        }
    }
}

impl BusDevice for PciConfigIo {
    fn read(&self, offset: u64, data: &mut [u8]) {
        let cf8 = *self
            .cf8
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match offset {
            0 if data.len() == 4 => data.copy_from_slice(&cf8.to_le_bytes()),
            4..=7 => match u8::try_from(offset).ok().and_then(|o| decode_cf8(cf8, o)) {
                Some(a) => self.root.config_read(a, data),
                None => data.fill(0xff),
            },
            _ => data.fill(0xff),
        }
    }

    fn write(&self, offset: u64, data: &[u8]) {
        match offset {
            // Only dword accesses reach CONFIG_ADDRESS (PCI 3.0 §3.2.2.3.2).
            0 if data.len() == 4 => {
                let v = le_u32(data);
                *self
                    .cf8
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = v & !3;
            }
            4..=7 => {
                let cf8 = *self
                    .cf8
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if let Some(a) = u8::try_from(offset).ok().and_then(|o| decode_cf8(cf8, o)) {
                    self.root.config_write(a, data);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::CF8_ENABLE;

    #[test]
    fn cf8_roundtrip_and_host_bridge_visible() {
        let root = Arc::new(PciRoot::new());
        let io = PciConfigIo::new(root.clone());
        io.write(0, &(CF8_ENABLE | 3).to_le_bytes());
        let mut d = [0u8; 4];
        io.read(0, &mut d);
        assert_eq!(
            u32::from_le_bytes(d),
            CF8_ENABLE,
            "CF8 bits 1:0 read as zero"
        );
        io.read(4, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x0008_1b36);
        let mut w = [0u8; 2];
        io.read(6, &mut w);
        assert_eq!(u16::from_le_bytes(w), 0x0008, "device ID via CFC+2");
        let mut class = [0u8; 1];
        io.write(0, &(CF8_ENABLE | 0x08).to_le_bytes());
        io.read(7, &mut class);
        assert_eq!(class[0], 0x06, "base class via CFC+3");
    }

    #[test]
    fn cf8_byte_write_does_not_latch_address() {
        let root = Arc::new(PciRoot::new());
        let io = PciConfigIo::new(root.clone());
        io.write(0, &[0x80]);
        let mut d = [0u8; 4];
        io.read(0, &mut d);
        assert_eq!(d, [0; 4]);
    }
}
