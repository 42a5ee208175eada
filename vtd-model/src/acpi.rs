//! The DMAR ACPI table (VT-d 8): one DRHD for the unit, plus RMRR, ATSR
//! and SATC structures from the configuration.
//!
//! Layout (all little-endian): the 36-byte ACPI header, then host address
//! width (1 byte, HAW - 1), flags (bit 0 INTR_REMAP) and 10 reserved bytes
//! (8.1); then the remapping structures in the order the spec requires:
//! DRHD (8.3), RMRR (8.4), ATSR (8.5), SATC (8.8).
//!
//! The DRHD has INCLUDE_PCI_ALL for segment 0. When interrupt remapping is
//! on it carries an IOAPIC device scope (8.3.1) with enumeration ID
//! `ioapic_id` at the pseudo source-id **ff:00.0** (bus 0xff, device 0,
//! function 0), the same pseudo platform bus QEMU's q35 uses, so interrupt
//! remapping source validation must expect source-id 0xff00 for IOAPIC
//! interrupts. No HPET scope is emitted (the VMM has no HPET).

use crate::props::VtdConfig;

/// DMAR structure types (8.2).
const DRHD: u16 = 0;
const RMRR: u16 = 1;
const ATSR: u16 = 2;
const SATC: u16 = 5;

/// Device scope types (8.3.1).
const SCOPE_ENDPOINT: u8 = 1;
const SCOPE_IOAPIC: u8 = 3;

/// Bus and devfn of the IOAPIC's pseudo source-id.
pub const IOAPIC_BUS: u8 = 0xff;
/// Device and function of the IOAPIC's pseudo source-id (00.0).
pub const IOAPIC_DEVFN: (u8, u8) = (0, 0);

fn scope(kind: u8, enum_id: u8, bus: u8, dev: u8, func: u8) -> Vec<u8> {
    vec![kind, 8, 0, 0, enum_id, bus, dev, func]
}

fn structure(kind: u16, body: &[u8]) -> Vec<u8> {
    let len = u16::try_from(body.len().saturating_add(4)).unwrap_or(u16::MAX);
    let mut v = Vec::with_capacity(usize::from(len));
    v.extend_from_slice(&kind.to_le_bytes());
    v.extend_from_slice(&len.to_le_bytes());
    v.extend_from_slice(body);
    v
}

/// The complete DMAR table (header with checksum) for `config`, with the
/// register page at `reg_base` and the IOAPIC scope named `ioapic_id`.
pub fn dmar_table(config: &VtdConfig, reg_base: u64, ioapic_id: u8) -> Vec<u8> {
    let mut t = Vec::with_capacity(128);
    t.extend_from_slice(b"DMAR");
    t.extend_from_slice(&0u32.to_le_bytes()); // length, patched below
    t.push(1); // revision
    t.push(0); // checksum, patched below
    t.extend_from_slice(b"IOMMUE"); // OEM ID
    t.extend_from_slice(b"VTDMODEL"); // OEM table ID
    t.extend_from_slice(&1u32.to_le_bytes()); // OEM revision
    t.extend_from_slice(b"IOME"); // creator ID
    t.extend_from_slice(&1u32.to_le_bytes()); // creator revision
    t.push(config.aw_bits.saturating_sub(1)); // host address width - 1
    t.push(u8::from(config.intremap)); // flags: INTR_REMAP
    t.extend_from_slice(&[0u8; 10]);

    // DRHD: flags INCLUDE_PCI_ALL, size 0 (one 4 KiB page), segment 0.
    let mut body = vec![1u8, 0];
    body.extend_from_slice(&0u16.to_le_bytes());
    body.extend_from_slice(&reg_base.to_le_bytes());
    if config.intremap {
        body.extend(scope(
            SCOPE_IOAPIC,
            ioapic_id,
            IOAPIC_BUS,
            IOAPIC_DEVFN.0,
            IOAPIC_DEVFN.1,
        ));
    }
    t.extend(structure(DRHD, &body));

    for r in &config.rmrr {
        let mut body = Vec::new();
        body.extend_from_slice(&0u16.to_le_bytes()); // reserved
        body.extend_from_slice(&0u16.to_le_bytes()); // segment
        body.extend_from_slice(&r.base.to_le_bytes());
        body.extend_from_slice(&r.limit.to_le_bytes());
        for (b, d, f) in &r.devices {
            body.extend(scope(SCOPE_ENDPOINT, 0, *b, *d, *f));
        }
        t.extend(structure(RMRR, &body));
    }

    if config.atsr_all_ports || config.device_iotlb {
        // ATSR: flags ALL_PORTS, segment 0 (8.5).
        let mut body = vec![1u8, 0];
        body.extend_from_slice(&0u16.to_le_bytes());
        t.extend(structure(ATSR, &body));
    }

    if !config.satc.is_empty() {
        // SATC: flags ATC_REQUIRED clear, segment 0 (8.8).
        let mut body = vec![0u8, 0];
        body.extend_from_slice(&0u16.to_le_bytes());
        for (b, d, f) in &config.satc {
            body.extend(scope(SCOPE_ENDPOINT, 0, *b, *d, *f));
        }
        t.extend(structure(SATC, &body));
    }

    let len = u32::try_from(t.len()).unwrap_or(u32::MAX);
    if let Some(l) = t.get_mut(4..8) {
        l.copy_from_slice(&len.to_le_bytes());
    }
    let sum = t.iter().fold(0u8, |a, b| a.wrapping_add(*b));
    if let Some(c) = t.get_mut(9) {
        *c = 0u8.wrapping_sub(sum);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::props::Rmrr;

    fn sum(t: &[u8]) -> u8 {
        t.iter().fold(0u8, |a, b| a.wrapping_add(*b))
    }

    // ACPI 5.2.6 / VT-d 8.1: header, length and checksum.
    #[test]
    fn dmar_header_length_and_checksum() {
        let t = dmar_table(&VtdConfig::default(), 0xfed9_0000, 0);
        assert_eq!(&t[0..4], b"DMAR");
        assert_eq!(
            u32::from_le_bytes(t[4..8].try_into().unwrap()) as usize,
            t.len()
        );
        assert_eq!(sum(&t), 0);
        assert_eq!(t[36], 47);
        assert_eq!(t[37], 0);
        // DRHD right after the 48-byte header
        assert_eq!(u16::from_le_bytes([t[48], t[49]]), DRHD);
        assert_eq!(u16::from_le_bytes([t[50], t[51]]), 16);
        assert_eq!(t[52], 1); // INCLUDE_PCI_ALL
        assert_eq!(
            u64::from_le_bytes(t[56..64].try_into().unwrap()),
            0xfed9_0000
        );
        assert_eq!(t.len(), 64);
    }

    // VT-d 8.3.1: IOAPIC scope and INTR_REMAP flag with intremap.
    #[test]
    fn dmar_intremap_adds_ioapic_scope() {
        let c = VtdConfig::parse_props("intremap=on").unwrap();
        let t = dmar_table(&c, 0xfed9_0000, 2);
        assert_eq!(t[37] & 1, 1);
        assert_eq!(&t[64..72], &[SCOPE_IOAPIC, 8, 0, 0, 2, 0xff, 0, 0]);
        assert_eq!(sum(&t), 0);
    }

    // VT-d 8.4, 8.5, 8.8: RMRR, ATSR and SATC follow the DRHD in order.
    #[test]
    fn dmar_rmrr_atsr_satc_in_order() {
        let mut c = VtdConfig::parse_props("device-iotlb=on").unwrap();
        c.rmrr.push(Rmrr {
            base: 0xe000_0000,
            limit: 0xe00f_ffff,
            devices: vec![(0, 2, 0)],
        });
        c.satc.push((0, 3, 0));
        let t = dmar_table(&c, 0xfed9_0000, 0);
        let mut off = 48;
        let mut kinds = Vec::new();
        while off < t.len() {
            kinds.push(u16::from_le_bytes([t[off], t[off + 1]]));
            off += usize::from(u16::from_le_bytes([t[off + 2], t[off + 3]]));
        }
        assert_eq!(off, t.len());
        assert_eq!(kinds, vec![DRHD, RMRR, ATSR, SATC]);
        assert_eq!(sum(&t), 0);
    }
}
