//! MSI capability (PCI Local Bus 3.0 §6.8.1; PCIe 6.0 §7.7.1): message
//! address and data in configuration space, multiple messages (the low
//! data bits carry the vector), optional 64-bit address and per-vector
//! masking with pending bits.
//!
//! Layout after the ID and next pointer (§6.8.1.1-6.8.1.7):
//! `+2` Message Control, `+4` Message Address, then with a 64-bit address
//! `+8` Message Upper Address and `+0xc` Message Data, else `+8` Message
//! Data; with per-vector masking, Mask Bits and Pending Bits follow at
//! `+0x10`/`+0x14` (64-bit) or `+0xc`/`+0x10` (32-bit).
//!
//! The device signals a vector with [`Msi::trigger`] and sends the message
//! it returns through its interrupt sink; a masked vector sets its pending
//! bit and is sent by [`Msi::take_deliverable`] once unmasked (§6.8.1.8).

use iommu_emulator::MsiMessage;

use super::config::{PciConfig, cap_id};

/// Message Control: MSI Enable.
const MC_ENABLE: u16 = 1;
/// Message Control: 64-bit address capable.
const MC_64BIT: u16 = 1 << 7;
/// Message Control: per-vector masking capable.
const MC_PVM: u16 = 1 << 8;

/// A function's MSI capability.
#[derive(Debug)]
pub struct Msi {
    cap_offset: usize,
    /// log2 of the vectors the function asks for (Multiple Message Capable).
    mmc: u8,
    is64: bool,
    pvm: bool,
}

impl Msi {
    /// Add an MSI capability asking for `1 << mmc` vectors (`mmc` at most
    /// 5: 32 vectors), with a 64-bit address when `is64` and per-vector
    /// masking when `pvm`.
    pub fn new(config: &mut PciConfig, mmc: u8, is64: bool, pvm: bool) -> Self {
        let mmc = mmc.min(5);
        // Control 2, address 4, upper address 4 (64-bit), data 2, then with
        // per-vector masking 2 reserved, mask bits 4, pending bits 4.
        // The body (after ID and next pointer) is at most 8 + 4 + 10 = 22 bytes.
        let (data, len): (usize, usize) = match (is64, pvm) {
            (false, false) => (6, 8),
            (true, false) => (10, 12),
            (false, true) => (6, 18),
            (true, true) => (10, 22),
        };
        let mut body = [0u8; 22];
        let mut wmask = [0u8; 22];
        let mc =
            (u16::from(mmc) << 1) | if is64 { MC_64BIT } else { 0 } | if pvm { MC_PVM } else { 0 };
        body[0..2].copy_from_slice(&mc.to_le_bytes());
        // Enable and Multiple Message Enable (bits 6:4) are read-write.
        wmask[0] = 0x71;
        // Message Address: bits 1:0 reserved (§6.8.1.4).
        wmask[2..6].copy_from_slice(&0xffff_fffcu32.to_le_bytes());
        if is64 {
            wmask[6..10].fill(0xff);
        }
        // `data` is 6 or 10, so these ranges lie inside the 22-byte arrays.
        if let Some(w) = wmask.get_mut(data..data.saturating_add(2)) {
            w.fill(0xff);
        }
        if pvm {
            // Mask Bits: one per vector the function can have (1 << mmc <= 32).
            let mask = u32::MAX
                .checked_shr(32u32.saturating_sub(1u32 << mmc))
                .unwrap_or(0);
            if let Some(w) = wmask.get_mut(data.saturating_add(4)..data.saturating_add(8)) {
                w.copy_from_slice(&mask.to_le_bytes());
            }
        }
        let cap_offset = config.add_capability(
            cap_id::MSI,
            body.get(..len).unwrap_or(&body),
            wmask.get(..len).unwrap_or(&wmask),
        );
        Msi {
            cap_offset,
            mmc,
            is64,
            pvm,
        }
    }

    /// Offset of the capability in configuration space.
    pub fn cap_offset(&self) -> usize {
        self.cap_offset
    }

    fn control(&self, config: &PciConfig) -> u16 {
        config.read_u16(self.cap_offset.saturating_add(2))
    }

    fn data_offset(&self) -> usize {
        // The capability lies in the 256-byte legacy space: no offset here overflows.
        self.cap_offset
            .saturating_add(if self.is64 { 0xc } else { 8 })
    }

    fn mask_offset(&self) -> usize {
        self.data_offset().saturating_add(4)
    }

    fn pending_offset(&self) -> usize {
        self.data_offset().saturating_add(8)
    }

    /// MSI enabled.
    pub fn enabled(&self, config: &PciConfig) -> bool {
        self.control(config) & MC_ENABLE != 0
    }

    /// Vectors the function may use: `2^MME`, at most what it asked for
    /// (§6.8.1.3: software must not enable more; a larger value is
    /// clamped).
    pub fn vectors(&self, config: &PciConfig) -> u32 {
        let mme = ((self.control(config) >> 4) & 7).min(u16::from(self.mmc));
        1 << mme
    }

    /// The message of `vector`: the programmed data with its low bits
    /// replaced by the vector number (§6.8.1.3, Multiple Message Enable).
    pub fn message(&self, config: &PciConfig, vector: u32) -> MsiMessage {
        let lo = u64::from(config.read_u32(self.cap_offset.saturating_add(4)));
        let hi = if self.is64 {
            u64::from(config.read_u32(self.cap_offset.saturating_add(8)))
        } else {
            0
        };
        // n = 2^MME >= 1, so n - 1 is the mask of the vector bits.
        let vector_bits = self.vectors(config).saturating_sub(1);
        let data = u32::from(config.read_u16(self.data_offset()));
        MsiMessage {
            addr: (hi << 32) | lo,
            data: (data & !vector_bits) | (vector & vector_bits),
        }
    }

    fn masked(&self, config: &PciConfig, vector: u32) -> bool {
        self.pvm && config.read_u32(self.mask_offset()) & (1 << vector) != 0
    }

    fn set_pending(&self, config: &mut PciConfig, vector: u32, on: bool) {
        if !self.pvm {
            return;
        }
        let p = config.read_u32(self.pending_offset());
        let p = if on {
            p | (1 << vector)
        } else {
            p & !(1 << vector)
        };
        config.set_u32(self.pending_offset(), p);
    }

    /// The device signals `vector`: the message to send, or None when MSI
    /// is off, the vector is not enabled, or it is masked (its pending bit
    /// is then set, §6.8.1.8).
    pub fn trigger(&self, config: &mut PciConfig, vector: u32) -> Option<MsiMessage> {
        if !self.enabled(config) || vector >= self.vectors(config) {
            return None;
        }
        if self.masked(config, vector) {
            self.set_pending(config, vector, true);
            return None;
        }
        Some(self.message(config, vector))
    }

    /// After a configuration write: messages of pending vectors that are no
    /// longer masked (their pending bits cleared).
    pub fn take_deliverable(&self, config: &mut PciConfig) -> Vec<MsiMessage> {
        if !self.pvm || !self.enabled(config) {
            return Vec::new();
        }
        let pending = config.read_u32(self.pending_offset());
        let mut out = Vec::new();
        for v in 0..self.vectors(config) {
            if pending & (1 << v) != 0 && !self.masked(config, v) {
                self.set_pending(config, v, false);
                out.push(self.message(config, v));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::config::{CAPABILITIES_POINTER, PciId};

    fn cfg() -> PciConfig {
        PciConfig::new(PciId {
            vendor: 0x1af4,
            device: 0x10f0,
            revision: 0,
            class: [0xff, 0, 0],
            subsystem_vendor: 0,
            subsystem: 0,
        })
    }

    fn rd(c: &PciConfig, off: usize, len: usize) -> u32 {
        let mut b = [0u8; 4];
        c.read(off, &mut b[..len]);
        u32::from_le_bytes(b)
    }

    /// What Linux's __pci_write_msi_msg / msi_capability_init do: address,
    /// upper address, data, then MME and enable.
    fn program(c: &mut PciConfig, m: &Msi, addr: u64, data: u16, mme: u16) {
        let o = m.cap_offset();
        c.write(o + 4, &(addr as u32).to_le_bytes());
        if m.is64 {
            c.write(o + 8, &((addr >> 32) as u32).to_le_bytes());
        }
        c.write(m.data_offset(), &data.to_le_bytes());
        c.write(o + 2, &((mme << 4) | MC_ENABLE).to_le_bytes());
    }

    #[test]
    fn msi_capability_is_in_the_list_with_its_control_bits() {
        // §6.8.1.3: MMC in bits 3:1, 64-bit capable bit 7, PVM bit 8.
        let mut c = cfg();
        let m = Msi::new(&mut c, 2, true, true);
        let p = rd(&c, CAPABILITIES_POINTER, 1) as usize;
        assert_eq!(p, m.cap_offset());
        assert_eq!(rd(&c, p, 1) as u8, cap_id::MSI);
        let mc = rd(&c, p + 2, 2) as u16;
        assert_eq!((mc >> 1) & 7, 2);
        assert_ne!(mc & MC_64BIT, 0);
        assert_ne!(mc & MC_PVM, 0);
        c.write(p + 2, &0xffffu16.to_le_bytes());
        assert_eq!(
            rd(&c, p + 2, 2) as u16 & !0x71,
            mc,
            "only enable and MME are writable"
        );
    }

    #[test]
    fn msi_address_low_bits_are_reserved_and_data_is_16_bits() {
        // §6.8.1.4: Message Address bits 1:0 read as zero.
        let mut c = cfg();
        let m = Msi::new(&mut c, 0, false, false);
        let o = m.cap_offset();
        c.write(o + 4, &0xfee0_1003u32.to_le_bytes());
        assert_eq!(rd(&c, o + 4, 4), 0xfee0_1000);
        c.write(o + 8, &0xdead_4041u32.to_le_bytes());
        assert_eq!(rd(&c, o + 8, 4), 0x4041);
    }

    #[test]
    fn msi_disabled_sends_nothing_and_enabled_sends_the_programmed_message() {
        let mut c = cfg();
        let m = Msi::new(&mut c, 0, true, false);
        assert_eq!(m.trigger(&mut c, 0), None);
        program(&mut c, &m, 0x0000_0001_fee0_2000, 0x4031, 0);
        assert_eq!(
            m.trigger(&mut c, 0),
            Some(MsiMessage {
                addr: 0x0000_0001_fee0_2000,
                data: 0x4031
            })
        );
        assert_eq!(m.trigger(&mut c, 1), None, "one vector enabled");
    }

    #[test]
    fn msi_multiple_messages_put_the_vector_in_the_low_data_bits() {
        // §6.8.1.3: with MME = 2 (4 vectors) the function modifies data bits 1:0.
        let mut c = cfg();
        let m = Msi::new(&mut c, 3, false, false);
        program(&mut c, &m, 0xfee0_0000, 0x4060, 2);
        assert_eq!(m.vectors(&c), 4);
        let data: Vec<u32> = (0..5)
            .filter_map(|v| m.trigger(&mut c, v))
            .map(|msg| msg.data)
            .collect();
        assert_eq!(data, vec![0x4060, 0x4061, 0x4062, 0x4063]);
        // More than asked for is clamped to MMC (8 vectors).
        program(&mut c, &m, 0xfee0_0000, 0x4060, 5);
        assert_eq!(m.vectors(&c), 8);
    }

    #[test]
    fn msi_masked_vector_sets_pending_and_is_sent_on_unmask() {
        // §6.8.1.8: a masked vector's message is held as pending.
        let mut c = cfg();
        let m = Msi::new(&mut c, 1, true, true);
        program(&mut c, &m, 0xfee0_0000, 0x4050, 1);
        c.write(m.mask_offset(), &2u32.to_le_bytes());
        assert_eq!(m.trigger(&mut c, 1), None);
        assert_eq!(rd(&c, m.pending_offset(), 4), 2);
        c.write(m.pending_offset(), &0u32.to_le_bytes());
        assert_eq!(
            rd(&c, m.pending_offset(), 4),
            2,
            "pending bits are read-only"
        );
        assert!(m.take_deliverable(&mut c).is_empty(), "still masked");
        c.write(m.mask_offset(), &0u32.to_le_bytes());
        assert_eq!(
            m.take_deliverable(&mut c),
            vec![MsiMessage {
                addr: 0xfee0_0000,
                data: 0x4051
            }]
        );
        assert_eq!(rd(&c, m.pending_offset(), 4), 0);
        c.write(m.mask_offset(), &0xffff_ffffu32.to_le_bytes());
        assert_eq!(
            rd(&c, m.mask_offset(), 4),
            3,
            "mask bits only for 2 vectors"
        );
    }
}
