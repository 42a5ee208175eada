//! Guest-physical memory layout and the e820 map handed to the kernel.
//!
//! ```text
//! 0x0000_0000  low RAM (real-mode trampoline, zero page, page tables)
//! 0x0009_fc00  reserved: EBDA, VGA hole, BIOS area (ACPI tables at 0xe0000)
//! 0x0010_0000  RAM (kernel at 16 MiB, initrd at the top of low RAM)
//! 0xc000_0000  PCI 32-bit MMIO window (BARs)                    } hole
//! 0xe000_0000  PCIe ECAM (MCFG), 256 buses x 1 MiB               } below
//! 0xfec0_0000  IOAPIC                                            } 4 GiB
//! 0xfed9_0000  VT-d remapping unit registers                     }
//! 0xfee0_0000  LAPIC                                             }
//! 0x1_0000_0000  RAM above 4 GiB (whatever did not fit below the hole)
//! ```

/// Start of the BIOS/EBDA area below 1 MiB that is not RAM.
pub const EBDA_START: u64 = 0x9_fc00;
/// Start of RAM above the legacy area.
pub const HIGH_RAM_START: u64 = 0x10_0000;
/// Where the kernel's zero page (`boot_params`) goes.
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Where the kernel command line goes.
pub const CMDLINE_START: u64 = 0x2_0000;
/// Maximum kernel command line length (boot protocol 2.06+ default).
pub const CMDLINE_MAX_SIZE: usize = 4096;
/// Initial stack pointer of the boot vCPU.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Boot GDT.
pub const BOOT_GDT_START: u64 = 0x500;
/// Boot IDT.
pub const BOOT_IDT_START: u64 = 0x520;
/// Boot page tables: PML4, PDPT and one page directory (identity map of the first 1 GiB).
pub const PML4_START: u64 = 0x9000;
/// Page-directory-pointer table.
pub const PDPTE_START: u64 = 0xa000;
/// Page directory.
pub const PDE_START: u64 = 0xb000;
/// ACPI tables: RSDP at the start, the others after it (inside the BIOS area).
pub const ACPI_START: u64 = 0xe_0000;
/// End of the ACPI area.
pub const ACPI_END: u64 = 0x10_0000;
/// Physical address the kernel is loaded at (the bzImage's preferred address).
pub const KERNEL_START: u64 = 0x100_0000;

/// Start of the 32-bit hole below 4 GiB (no RAM from here to 4 GiB).
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
/// PCI 32-bit memory window for BARs.
pub const PCI_MMIO_START: u64 = 0xc000_0000;
/// Size of the PCI 32-bit memory window.
pub const PCI_MMIO_SIZE: u64 = 0x1000_0000;
/// PCIe enhanced configuration access mechanism (PCIe 6.0 §7.2.2).
pub const ECAM_START: u64 = 0xe000_0000;
/// Buses covered by ECAM (the root bus only has devices, but the window is the standard size).
pub const ECAM_BUSES: u64 = 1;
/// ECAM size: 1 MiB per bus.
pub const ECAM_SIZE: u64 = ECAM_BUSES << 20;
/// IOAPIC registers.
pub const IOAPIC_START: u64 = 0xfec0_0000;
/// VT-d remapping hardware unit registers.
pub const VTD_START: u64 = 0xfed9_0000;
/// LAPIC registers.
pub const LAPIC_START: u64 = 0xfee0_0000;
/// End of 32-bit space.
pub const FOUR_GIB: u64 = 0x1_0000_0000;

/// e820 entry types (ACPI 6.5 §15.1, Table 15.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum E820Type {
    /// Usable RAM.
    Ram = 1,
    /// Reserved: the OS must not use it.
    Reserved = 2,
}

/// One e820 map entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    /// Start address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// Type.
    pub kind: E820Type,
}

/// The RAM regions (start, size) for `mem_size` bytes of guest memory:
/// below the hole and, for what does not fit, above 4 GiB.
pub fn ram_regions(mem_size: u64) -> Vec<(u64, u64)> {
    if mem_size <= MMIO_HOLE_START {
        vec![(0, mem_size)]
    } else {
        vec![
            (0, MMIO_HOLE_START),
            (FOUR_GIB, mem_size.saturating_sub(MMIO_HOLE_START)),
        ]
    }
}

/// The e820 map for `mem_size` bytes of RAM: the legacy area below 1 MiB and
/// the ECAM window are reserved (Linux checks that MCFG's window is reserved
/// in e820 before it uses it).
pub fn e820_map(mem_size: u64) -> Vec<E820Entry> {
    let mut map = vec![
        E820Entry {
            addr: 0,
            size: EBDA_START,
            kind: E820Type::Ram,
        },
        E820Entry {
            addr: EBDA_START,
            size: HIGH_RAM_START - EBDA_START,
            kind: E820Type::Reserved,
        },
    ];
    for (start, size) in ram_regions(mem_size) {
        let (start, size) = if start == 0 {
            (HIGH_RAM_START, size.saturating_sub(HIGH_RAM_START))
        } else {
            (start, size)
        };
        if size > 0 {
            map.push(E820Entry {
                addr: start,
                size,
                kind: E820Type::Ram,
            });
        }
    }
    map.push(E820Entry {
        addr: ECAM_START,
        size: ECAM_SIZE,
        kind: E820Type::Reserved,
    });
    map.sort_by_key(|e| e.addr);
    map
}

/// Highest address of RAM below the hole, where the initrd is placed below.
pub fn low_ram_end(mem_size: u64) -> u64 {
    mem_size.min(MMIO_HOLE_START)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlaps(a: &E820Entry, b: &E820Entry) -> bool {
        a.addr < b.addr + b.size && b.addr < a.addr + a.size
    }

    #[test]
    fn e820_small_memory_has_no_ram_above_4g() {
        let map = e820_map(1 << 30);
        assert!(map.iter().all(|e| e.addr + e.size <= FOUR_GIB));
        let ram: u64 = map
            .iter()
            .filter(|e| e.kind == E820Type::Ram)
            .map(|e| e.size)
            .sum();
        assert_eq!(ram, (1 << 30) - (HIGH_RAM_START - EBDA_START));
    }

    #[test]
    fn e820_large_memory_splits_around_hole() {
        let mem = 4u64 << 30;
        let map = e820_map(mem);
        let high = map
            .iter()
            .find(|e| e.addr == FOUR_GIB)
            .expect("RAM above 4G");
        assert_eq!(high.size, mem - MMIO_HOLE_START);
        for e in &map {
            if e.kind == E820Type::Ram {
                assert!(
                    e.addr + e.size <= MMIO_HOLE_START || e.addr >= FOUR_GIB,
                    "RAM in the hole: {e:?}"
                );
            }
        }
    }

    #[test]
    fn e820_entries_do_not_overlap_and_ecam_reserved() {
        let map = e820_map(3 << 30);
        for (i, a) in map.iter().enumerate() {
            for b in map.iter().skip(i + 1) {
                assert!(!overlaps(a, b), "{a:?} overlaps {b:?}");
            }
        }
        assert!(
            map.iter()
                .any(|e| e.addr == ECAM_START && e.kind == E820Type::Reserved)
        );
    }

    #[test]
    fn layout_mmio_regions_inside_hole_and_disjoint() {
        let regions = [
            (PCI_MMIO_START, PCI_MMIO_SIZE),
            (ECAM_START, ECAM_SIZE),
            (IOAPIC_START, 0x1000),
            (VTD_START, 0x1000),
            (LAPIC_START, 0x1000),
        ];
        for (i, &(a, asz)) in regions.iter().enumerate() {
            assert!(a >= MMIO_HOLE_START && a + asz <= FOUR_GIB);
            for &(b, bsz) in regions.iter().skip(i + 1) {
                assert!(a + asz <= b || b + bsz <= a);
            }
        }
    }
}
