//! ACPI tables (ACPI 6.5): RSDP, XSDT, FADT (hardware-reduced), DSDT with the
//! PCI host bridge, MADT, MCFG, and an optional DMAR from the VT-d model.
//!
//! Tables are laid out from [`layout::ACPI_START`]
//! (RSDP first, where the BIOS-area scan finds it; the kernel also gets its
//! address in the zero page).

use acpi_tables::Aml;
use acpi_tables::aml;
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;

use super::acpi_pm;
use super::layout;

const OEM_ID: [u8; 6] = *b"IOMMUE";
const OEM_TABLE: [u8; 8] = *b"IOMMUVMM";

/// IOAPIC ID announced in the MADT (and in the DMAR's IOAPIC scope).
pub const IOAPIC_ID: u8 = 0;
/// GSIs of the (userspace, split irqchip) IOAPIC.
#[allow(clippy::cast_possible_truncation)] // a constant; kvm::irq asserts it fits at compile time
pub const IOAPIC_PINS: u32 = super::ioapic::IOAPIC_PINS as u32;

/// What the tables describe.
#[derive(Clone, Debug)]
pub struct AcpiConfig {
    /// Number of vCPUs (LAPIC IDs 0..n).
    pub vcpus: u8,
    /// Extra tables to list in the XSDT (e.g. DMAR), already checksummed.
    pub extra_tables: Vec<Vec<u8>>,
}

/// One table placed in guest memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacedTable {
    /// Guest-physical address.
    pub addr: u64,
    /// Contents.
    pub bytes: Vec<u8>,
}

/// Sum of all bytes modulo 256 (0 for a valid table, ACPI 6.5 §5.2.6).
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b))
}

fn gas_io(port: u16) -> [u8; 12] {
    // Generic Address Structure (§5.2.3.2): system I/O, 8 bits, byte access.
    let mut g = [0u8; 12];
    g[0] = 1;
    g[1] = 8;
    g[3] = 1;
    g[4..12].copy_from_slice(&u64::from(port).to_le_bytes());
    g
}

/// FADT, revision 6.5, hardware-reduced (§5.2.9).
#[allow(clippy::arithmetic_side_effects, clippy::cast_possible_truncation)] // host-only: fixed layout constants, built once before boot
pub fn fadt(dsdt: u64) -> Vec<u8> {
    let mut t = Sdt::new(*b"FACP", 276, 6, OEM_ID, OEM_TABLE, 1);
    // Flags (§5.2.9, Table 5.10): HW_REDUCED_ACPI (20), RESET_REG_SUP (10).
    let flags: u32 = (1 << 20) | (1 << 10);
    t.write_u32(112, flags);
    t.write_bytes(
        116,
        &gas_io(acpi_pm::ACPI_PM_PORT + acpi_pm::RESET_REG as u16),
    );
    t.write_u8(128, acpi_pm::RESET_VALUE);
    t.write_u8(131, 5); // minor version
    // IA-PC boot architecture flags (§5.2.9.3): VGA not present (2), CMOS RTC
    // not present (5): the guest takes wall-clock time from kvm-clock.
    t.write_u16(109, (1 << 2) | (1 << 5));
    t.write_u64(140, dsdt); // X_DSDT
    t.write_bytes(
        244,
        &gas_io(acpi_pm::ACPI_PM_PORT + acpi_pm::SLEEP_CONTROL as u16),
    );
    t.write_bytes(
        256,
        &gas_io(acpi_pm::ACPI_PM_PORT + acpi_pm::SLEEP_STATUS as u16),
    );
    t.write_u64(268, u64::from_le_bytes(*b"IOMMUVMM")); // hypervisor vendor
    t.as_slice().to_vec()
}

/// MADT (§5.2.12): LAPICs, the IOAPIC, LINT1 as NMI.
#[allow(clippy::cast_possible_truncation)] // host-only: LAPIC/IOAPIC bases are 32-bit layout constants
pub fn madt(vcpus: u8) -> Vec<u8> {
    let mut t = Sdt::new(*b"APIC", 44, 5, OEM_ID, OEM_TABLE, 1);
    t.write_u32(36, layout::LAPIC_START as u32);
    // Flags: no PCAT_COMPAT (§5.2.12, Table 5.20): there is no 8259 pair
    // (the split irqchip has no PIC; Linux also skips it on a
    // hardware-reduced platform), so ISA interrupts have no implicit
    // mapping and COM1 takes its GSI from the DSDT.
    t.write_u32(40, 0);
    for id in 0..vcpus {
        // Processor Local APIC (type 0): uid, APIC ID, flags = enabled.
        t.append_slice(&[0, 8, id, id, 1, 0, 0, 0]);
    }
    let mut ioapic = vec![1, 12, IOAPIC_ID, 0];
    ioapic.extend_from_slice(&(layout::IOAPIC_START as u32).to_le_bytes());
    ioapic.extend_from_slice(&0u32.to_le_bytes());
    t.append_slice(&ioapic);
    // Local APIC NMI (type 4): all processors (0xff), LINT1.
    t.append_slice(&[4, 6, 0xff, 0, 0, 1]);
    t.as_slice().to_vec()
}

/// MCFG (PCI Firmware 3.3 §4.1.2): one ECAM window for segment 0.
#[allow(clippy::arithmetic_side_effects, clippy::cast_possible_truncation)] // host-only: fixed layout constants, built once before boot
pub fn mcfg() -> Vec<u8> {
    let mut t = Sdt::new(*b"MCFG", 44, 1, OEM_ID, OEM_TABLE, 1);
    let mut e = Vec::with_capacity(16);
    e.extend_from_slice(&layout::ECAM_START.to_le_bytes());
    e.extend_from_slice(&0u16.to_le_bytes());
    e.push(0);
    e.push((layout::ECAM_BUSES - 1) as u8);
    e.extend_from_slice(&[0; 4]);
    t.append_slice(&e);
    t.as_slice().to_vec()
}

/// DSDT: the PCI host bridge with its resources, and `\_S5`.
#[allow(clippy::arithmetic_side_effects, clippy::cast_possible_truncation)] // host-only: fixed layout constants, built once before boot
pub fn dsdt() -> Vec<u8> {
    let hid = aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0A08"));
    let cid = aml::Name::new("_CID".into(), &aml::EISAName::new("PNP0A03"));
    let adr = aml::Name::new("_ADR".into(), &0u8);
    let seg = aml::Name::new("_SEG".into(), &0u8);
    let uid = aml::Name::new("_UID".into(), &0u8);
    let bbn = aml::Name::new("_BBN".into(), &0u8);
    let bus = aml::AddressSpace::new_bus_number(0u16, (layout::ECAM_BUSES - 1) as u16);
    let cfg_io = aml::IO::new(0xcf8, 0xcf8, 1, 8);
    let io_lo = aml::AddressSpace::new_io(0u16, 0xcf7u16, None);
    let io_hi = aml::AddressSpace::new_io(0xd00u16, 0xffffu16, None);
    let mmio = aml::AddressSpace::new_memory(
        aml::AddressSpaceCacheable::NotCacheable,
        true,
        layout::PCI_MMIO_START as u32,
        (layout::PCI_MMIO_START + layout::PCI_MMIO_SIZE - 1) as u32,
        None,
    );
    let crs_tmpl = aml::ResourceTemplate::new(vec![&bus, &cfg_io, &io_lo, &io_hi, &mmio]);
    let crs = aml::Name::new("_CRS".into(), &crs_tmpl);
    let pci0 = aml::Device::new(
        "_SB_.PCI0".into(),
        vec![&hid, &cid, &adr, &seg, &uid, &bbn, &crs],
    );
    let s5_pkg = aml::Package::new(vec![&acpi_pm::S5_SLEEP_TYPE, &0u8, &0u8, &0u8]);
    let s5 = aml::Name::new("_S5_".into(), &s5_pkg);
    // COM1 (PNP0501) with its GSI, so that Linux maps its interrupt through
    // the IOAPIC: a hardware-reduced platform has no legacy PIC and so no
    // implicit ISA IRQ mappings.
    let com_hid = aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0501"));
    let com_uid = aml::Name::new("_UID".into(), &0u8);
    let com_irq = aml::Interrupt::new(true, true, false, false, crate::devices::serial::COM1_IRQ);
    let com_io = aml::IO::new(
        crate::devices::serial::COM1_PORT,
        crate::devices::serial::COM1_PORT,
        1,
        8,
    );
    let com_tmpl = aml::ResourceTemplate::new(vec![&com_irq, &com_io]);
    let com_crs = aml::Name::new("_CRS".into(), &com_tmpl);
    let com1 = aml::Device::new("_SB_.COM1".into(), vec![&com_hid, &com_uid, &com_crs]);
    let mut body = Vec::new();
    pci0.to_aml_bytes(&mut body);
    com1.to_aml_bytes(&mut body);
    s5.to_aml_bytes(&mut body);
    let mut t = Sdt::new(*b"DSDT", 36, 6, OEM_ID, OEM_TABLE, 1);
    t.append_slice(&body);
    t.as_slice().to_vec()
}

fn xsdt(entries: &[u64]) -> Vec<u8> {
    let mut t = Sdt::new(*b"XSDT", 36, 1, OEM_ID, OEM_TABLE, 1);
    for e in entries {
        t.append_slice(&e.to_le_bytes());
    }
    t.as_slice().to_vec()
}

/// Round up to 16 bytes; saturates, so an overflowing layout fails the ACPI_END check.
fn align(x: u64) -> u64 {
    x.saturating_add(15) & !15
}

/// Build and place every table. The first entry is the RSDP.
pub fn build(config: &AcpiConfig) -> Result<Vec<PlacedTable>, String> {
    let rsdp_addr = layout::ACPI_START;
    let mut next = align(rsdp_addr.saturating_add(36));
    let mut place = |bytes: Vec<u8>| {
        let addr = next;
        let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        next = align(addr.saturating_add(len));
        PlacedTable { addr, bytes }
    };
    let dsdt = place(dsdt());
    let fadt = place(fadt(dsdt.addr));
    let madt = place(madt(config.vcpus));
    let mcfg = place(mcfg());
    let extra: Vec<PlacedTable> = config
        .extra_tables
        .iter()
        .cloned()
        .map(&mut place)
        .collect();
    let mut entries = vec![fadt.addr, madt.addr, mcfg.addr];
    entries.extend(extra.iter().map(|t| t.addr));
    let xsdt = place(xsdt(&entries));
    if next > layout::ACPI_END {
        return Err(format!(
            "ACPI tables need {:#x} bytes, more than the BIOS area",
            next.saturating_sub(rsdp_addr)
        ));
    }
    let mut rsdp_bytes = Vec::new();
    Rsdp::new(OEM_ID, xsdt.addr).to_aml_bytes(&mut rsdp_bytes);
    let mut out = vec![
        PlacedTable {
            addr: rsdp_addr,
            bytes: rsdp_bytes,
        },
        xsdt,
        dsdt,
        fadt,
        madt,
        mcfg,
    ];
    out.extend(extra);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables() -> Vec<PlacedTable> {
        let mut dmar = Sdt::new(*b"DMAR", 48, 1, OEM_ID, OEM_TABLE, 1);
        dmar.write_u8(36, 47);
        build(&AcpiConfig {
            vcpus: 2,
            extra_tables: vec![dmar.as_slice().to_vec()],
        })
        .unwrap()
    }

    fn u32_at(b: &[u8], o: usize) -> u32 {
        u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], o: usize) -> u64 {
        u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
    }

    #[test]
    fn acpi_every_table_checksums_to_zero_and_length_matches() {
        let t = tables();
        let rsdp = &t[0].bytes;
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert_eq!(checksum(&rsdp[..20]), 0, "RSDP v1 checksum");
        assert_eq!(checksum(rsdp), 0, "RSDP extended checksum");
        for table in &t[1..] {
            assert_eq!(checksum(&table.bytes), 0, "{:?}", &table.bytes[..4]);
            assert_eq!(u32_at(&table.bytes, 4) as usize, table.bytes.len());
        }
    }

    #[test]
    fn acpi_xsdt_lists_fadt_madt_mcfg_dmar() {
        let t = tables();
        let xsdt_addr = u64_at(&t[0].bytes, 24);
        let xsdt = t.iter().find(|x| x.addr == xsdt_addr).unwrap();
        assert_eq!(&xsdt.bytes[..4], b"XSDT");
        let sigs: Vec<&[u8]> = (36..xsdt.bytes.len())
            .step_by(8)
            .map(|o| {
                let a = u64_at(&xsdt.bytes, o);
                &t.iter().find(|x| x.addr == a).unwrap().bytes[..4]
            })
            .collect();
        assert_eq!(sigs, vec![b"FACP", b"APIC", b"MCFG", b"DMAR"]);
    }

    #[test]
    fn acpi_fadt_is_hardware_reduced_and_points_to_dsdt() {
        let t = tables();
        let fadt = t.iter().find(|x| &x.bytes[..4] == b"FACP").unwrap();
        let dsdt = t.iter().find(|x| &x.bytes[..4] == b"DSDT").unwrap();
        assert_eq!(fadt.bytes.len(), 276);
        assert_ne!(u32_at(&fadt.bytes, 112) & (1 << 20), 0);
        assert_eq!(u64_at(&fadt.bytes, 140), dsdt.addr);
        assert_eq!(fadt.bytes[244], 1, "sleep control in system I/O");
        assert_eq!(u64_at(&fadt.bytes, 248), u64::from(acpi_pm::ACPI_PM_PORT));
    }

    #[test]
    fn acpi_madt_has_one_lapic_per_vcpu_and_ioapic() {
        let m = madt(3);
        let mut off = 44;
        let (mut lapics, mut ioapics) = (vec![], 0);
        while off < m.len() {
            match m[off] {
                0 => lapics.push(m[off + 3]),
                1 => {
                    ioapics += 1;
                    assert_eq!(u32_at(&m, off + 4) as u64, layout::IOAPIC_START);
                }
                _ => {}
            }
            off += m[off + 1] as usize;
        }
        assert_eq!(lapics, vec![0, 1, 2]);
        assert_eq!(ioapics, 1);
    }

    #[test]
    fn acpi_madt_has_no_pcat_compat_and_ioapic_id_gsi_base_0() {
        // §5.2.12: flags bit 0 PCAT_COMPAT clear; I/O APIC structure (type
        // 1): ID at +2 (the DMAR's IOAPIC scope names it), GSI base at +8.
        let m = madt(2);
        assert_eq!(u32_at(&m, 40), 0);
        let mut off = 44;
        while m[off] != 1 {
            off += m[off + 1] as usize;
        }
        assert_eq!(m[off + 2], IOAPIC_ID);
        assert_eq!(u32_at(&m, off + 8), 0);
    }

    #[test]
    fn acpi_mcfg_points_to_ecam() {
        let m = mcfg();
        assert_eq!(m.len(), 60);
        assert_eq!(u64_at(&m, 44), layout::ECAM_START);
        assert_eq!(m[54], 0, "start bus");
    }

    #[test]
    fn acpi_dsdt_names_host_bridge_and_s5() {
        let d = dsdt();
        let has = |needle: &[u8]| d.windows(needle.len()).any(|w| w == needle);
        assert!(has(b"PCI0"));
        assert!(has(b"_S5_"));
        assert!(has(b"_CRS"));
        assert!(has(b"COM1"));
        // EISAID("PNP0501").
        assert!(has(&0x0105_d041u32.to_le_bytes()));
        // EISAID("PNP0A08") compresses to 0x080ad041.
        assert!(has(&0x080a_d041u32.to_le_bytes()));
    }

    #[test]
    fn acpi_tables_do_not_overlap_and_fit_bios_area() {
        let t = tables();
        for (i, a) in t.iter().enumerate() {
            assert!(a.addr + a.bytes.len() as u64 <= layout::ACPI_END);
            for b in t.iter().skip(i + 1) {
                assert!(
                    a.addr + a.bytes.len() as u64 <= b.addr
                        || b.addr + b.bytes.len() as u64 <= a.addr
                );
            }
        }
    }
}
