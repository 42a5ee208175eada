//! MSI-X capability and table (PCI Local Bus 3.0 §6.8.2).

use iommu_emulator::MsiMessage;

use super::config::{PciConfig, cap_id};

/// Size of one table entry.
pub const ENTRY_SIZE: u64 = 16;
/// Vector Control: mask bit.
const VECTOR_MASKED: u32 = 1;
/// Message Control: function mask.
const MC_FUNCTION_MASK: u16 = 1 << 14;
/// Message Control: MSI-X enable.
const MC_ENABLE: u16 = 1 << 15;

#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    addr_lo: u32,
    addr_hi: u32,
    data: u32,
    ctrl: u32,
}

/// The table, the pending bits and where the capability sits.
#[derive(Debug)]
pub struct Msix {
    entries: Vec<Entry>,
    pending: Vec<bool>,
    cap_offset: usize,
}

/// `buf[off..off + len]`, or None when any of it lies outside `buf`.
fn span(buf: &[u8], off: usize, len: usize) -> Option<&[u8]> {
    buf.get(off..off.checked_add(len)?)
}

impl Msix {
    /// Add an MSI-X capability with `vectors` entries whose table is at
    /// `table_offset` and PBA at `pba_offset` in BAR `bir`.
    pub fn new(
        config: &mut PciConfig,
        vectors: u16,
        bir: u8,
        table_offset: u32,
        pba_offset: u32,
    ) -> Self {
        assert!((1..=2048).contains(&vectors));
        let mut body = [0u8; 10];
        // Table Size is N - 1 (vectors >= 1 asserted above).
        body[0..2].copy_from_slice(&vectors.saturating_sub(1).to_le_bytes());
        body[2..6].copy_from_slice(&(table_offset | u32::from(bir)).to_le_bytes());
        body[6..10].copy_from_slice(&(pba_offset | u32::from(bir)).to_le_bytes());
        let mut wmask = [0u8; 10];
        wmask[1] = 0xc0; // enable + function mask
        let cap_offset = config.add_capability(cap_id::MSIX, &body, &wmask);
        Msix {
            entries: vec![
                Entry {
                    ctrl: VECTOR_MASKED,
                    ..Entry::default()
                };
                usize::from(vectors)
            ],
            pending: vec![false; usize::from(vectors)],
            cap_offset,
        }
    }

    /// Number of vectors.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Always false: a table has at least one vector.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn control(&self, config: &PciConfig) -> u16 {
        config.read_u16(self.cap_offset.saturating_add(2))
    }

    /// MSI-X enabled in the capability.
    pub fn enabled(&self, config: &PciConfig) -> bool {
        self.control(config) & MC_ENABLE != 0
    }

    /// Guest read in the table (`offset` from the table start).
    pub fn read_table(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let (Ok(idx), Ok(field)) = (
            usize::try_from(offset / ENTRY_SIZE),
            usize::try_from(offset % ENTRY_SIZE),
        ) else {
            return;
        };
        let Some(e) = self.entries.get(idx) else {
            return;
        };
        let mut raw = [0u8; 16];
        raw[0..4].copy_from_slice(&e.addr_lo.to_le_bytes());
        raw[4..8].copy_from_slice(&e.addr_hi.to_le_bytes());
        raw[8..12].copy_from_slice(&e.data.to_le_bytes());
        raw[12..16].copy_from_slice(&e.ctrl.to_le_bytes());
        if let Some(src) = span(&raw, field, data.len()) {
            data.copy_from_slice(src);
        }
    }

    /// Guest write in the table. Returns a message to send when the write
    /// unmasked a vector with its pending bit set (§6.8.2.9).
    pub fn write_table(
        &mut self,
        config: &PciConfig,
        offset: u64,
        data: &[u8],
    ) -> Option<MsiMessage> {
        let idx = usize::try_from(offset / ENTRY_SIZE).ok()?;
        let field = usize::try_from(offset % ENTRY_SIZE).ok()?;
        let e = self.entries.get_mut(idx)?;
        let mut raw = [0u8; 16];
        raw[0..4].copy_from_slice(&e.addr_lo.to_le_bytes());
        raw[4..8].copy_from_slice(&e.addr_hi.to_le_bytes());
        raw[8..12].copy_from_slice(&e.data.to_le_bytes());
        raw[12..16].copy_from_slice(&e.ctrl.to_le_bytes());
        raw.get_mut(field..field.checked_add(data.len())?)?
            .copy_from_slice(data);
        let word = |i: usize| {
            raw.get(i..)
                .and_then(|r| r.first_chunk::<4>())
                .map_or(0, |w| u32::from_le_bytes(*w))
        };
        e.addr_lo = word(0);
        e.addr_hi = word(4);
        e.data = word(8);
        e.ctrl = word(12) & VECTOR_MASKED;
        if self.pending.get(idx).copied().unwrap_or(false) && self.can_send(config, idx) {
            if let Some(p) = self.pending.get_mut(idx) {
                *p = false;
            }
            return self.message(idx);
        }
        None
    }

    /// Guest read of the pending bit array; bits past the last vector read as zero.
    pub fn read_pba(&self, offset: u64, data: &mut [u8]) {
        let pending = |bit: Option<usize>| {
            bit.and_then(|b| self.pending.get(b))
                .copied()
                .unwrap_or(false)
        };
        for (i, b) in data.iter_mut().enumerate() {
            let base = usize::try_from(offset)
                .ok()
                .and_then(|o| o.checked_add(i))
                .and_then(|o| o.checked_mul(8));
            *b = (0..8)
                .filter(|&bit| pending(base.and_then(|base| base.checked_add(bit))))
                .fold(0u8, |acc, bit| acc | (1 << bit));
        }
    }

    fn can_send(&self, config: &PciConfig, idx: usize) -> bool {
        let mc = self.control(config);
        mc & MC_ENABLE != 0
            && mc & MC_FUNCTION_MASK == 0
            && self
                .entries
                .get(idx)
                .is_some_and(|e| e.ctrl & VECTOR_MASKED == 0)
    }

    fn message(&self, idx: usize) -> Option<MsiMessage> {
        let e = self.entries.get(idx)?;
        Some(MsiMessage {
            addr: (u64::from(e.addr_hi) << 32) | u64::from(e.addr_lo),
            data: e.data,
        })
    }

    /// The device wants to signal `vector`: the message to send, or None when
    /// masked (then the pending bit is set) or MSI-X is off.
    pub fn trigger(&mut self, config: &PciConfig, vector: u16) -> Option<MsiMessage> {
        let idx = usize::from(vector);
        if idx >= self.entries.len() || self.control(config) & MC_ENABLE == 0 {
            return None;
        }
        if self.can_send(config, idx) {
            self.message(idx)
        } else {
            if let Some(p) = self.pending.get_mut(idx) {
                *p = true;
            }
            None
        }
    }

    /// Messages for every pending vector that may now be sent (after the
    /// function mask was cleared or MSI-X enabled, §6.8.2.9); their pending
    /// bits are cleared.
    pub fn take_deliverable(&mut self, config: &PciConfig) -> Vec<MsiMessage> {
        let mut out = Vec::new();
        for idx in 0..self.entries.len() {
            if self.pending.get(idx).copied().unwrap_or(false) && self.can_send(config, idx) {
                if let Some(m) = self.message(idx) {
                    out.push(m);
                }
                if let Some(p) = self.pending.get_mut(idx) {
                    *p = false;
                }
            }
        }
        out
    }

    /// Mask everything and clear pending bits (function reset).
    pub fn reset(&mut self) {
        for e in &mut self.entries {
            *e = Entry {
                ctrl: VECTOR_MASKED,
                ..Entry::default()
            };
        }
        self.pending.fill(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::config::PciId;

    fn setup() -> (PciConfig, Msix) {
        let mut c = PciConfig::new(PciId {
            vendor: 1,
            device: 2,
            revision: 0,
            class: [0; 3],
            subsystem_vendor: 0,
            subsystem: 0,
        });
        let m = Msix::new(&mut c, 4, 0, 0x4000, 0x5000);
        (c, m)
    }

    fn enable(c: &mut PciConfig, m: &Msix) {
        c.write(m.cap_offset + 3, &[0x80]);
    }

    #[test]
    fn msix_cap_reports_table_size_and_location() {
        let (c, m) = setup();
        assert_eq!(c.read_u16(m.cap_offset + 2) & 0x7ff, 3);
        assert_eq!(c.read_u32(m.cap_offset + 4), 0x4000);
        assert_eq!(c.read_u32(m.cap_offset + 8), 0x5000);
    }

    #[test]
    fn msix_masked_vector_sets_pending_and_unmask_delivers() {
        let (mut c, mut m) = setup();
        enable(&mut c, &m);
        m.write_table(&c, 16, &0xfee0_0000u32.to_le_bytes());
        m.write_table(&c, 16 + 8, &0x41u32.to_le_bytes());
        assert_eq!(m.trigger(&c, 1), None, "vectors start masked");
        let mut pba = [0u8];
        m.read_pba(0, &mut pba);
        assert_eq!(pba[0], 0b10);
        let msg = m.write_table(&c, 16 + 12, &0u32.to_le_bytes());
        assert_eq!(
            msg,
            Some(MsiMessage {
                addr: 0xfee0_0000,
                data: 0x41
            })
        );
        m.read_pba(0, &mut pba);
        assert_eq!(pba[0], 0);
        assert_eq!(
            m.trigger(&c, 1),
            Some(MsiMessage {
                addr: 0xfee0_0000,
                data: 0x41
            })
        );
    }

    #[test]
    fn msix_function_unmask_delivers_pending_vector() {
        // PCI 3.0 §6.8.2.9: a pending message is sent once nothing masks it.
        let (mut c, mut m) = setup();
        c.write(m.cap_offset + 3, &[0xc0]); // enable + function mask
        m.write_table(&c, 8, &0x33u32.to_le_bytes());
        m.write_table(&c, 12, &0u32.to_le_bytes());
        assert_eq!(m.trigger(&c, 0), None);
        assert!(m.take_deliverable(&c).is_empty(), "still function-masked");
        c.write(m.cap_offset + 3, &[0x80]);
        let msgs = m.take_deliverable(&c);
        assert_eq!(
            msgs,
            vec![MsiMessage {
                addr: 0,
                data: 0x33
            }]
        );
        assert!(m.take_deliverable(&c).is_empty(), "pending bit cleared");
    }

    #[test]
    fn msix_disabled_or_function_masked_sends_nothing() {
        let (mut c, mut m) = setup();
        m.write_table(&c, 12, &0u32.to_le_bytes());
        assert_eq!(m.trigger(&c, 0), None, "MSI-X disabled");
        c.write(m.cap_offset + 3, &[0xc0]);
        assert_eq!(m.trigger(&c, 0), None, "function masked");
        assert_eq!(m.trigger(&c, 9), None, "out-of-range vector");
    }

    #[test]
    fn msix_table_out_of_range_access_is_ignored() {
        let (c, mut m) = setup();
        assert_eq!(m.write_table(&c, 4 * 16 + 4, &[1, 2, 3, 4]), None);
        let mut d = [0xaau8; 4];
        m.read_table(1 << 40, &mut d);
        assert_eq!(d, [0; 4]);
        m.read_table(14, &mut d);
        assert_eq!(d, [0; 4], "straddles the entry end");
    }
}
