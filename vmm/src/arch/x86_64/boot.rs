//! Direct Linux boot (x86 boot protocol 2.x, Documentation/arch/x86/boot.rst):
//! kernel (bzImage or ELF vmlinux) and initrd through linux-loader, the zero
//! page with the e820 map and the RSDP address, the command line, and the
//! 64-bit entry state (identity-mapped first GiB, flat GDT).

use std::fs::File;
use std::io::Read;
use std::path::Path;

use linux_loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::cmdline::Cmdline;
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::{BzImage, Elf, KernelLoader, load_cmdline};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{self, E820Type};
use crate::error::{Error, Result};

/// `HdrS` magic of the setup header.
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448;
/// Boot flag magic.
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
/// "Undefined" boot loader ID.
const KERNEL_LOADER_OTHER: u8 = 0xff;
/// Kernel alignment for a relocatable kernel (2 MiB is what x86_64 wants).
const KERNEL_MIN_ALIGNMENT: u32 = 0x0100_0000;
/// Offset of the 64-bit entry point in a bzImage's protected-mode code.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;

/// Where the kernel went and how to enter it.
#[derive(Clone, Copy, Debug)]
pub struct LoadedKernel {
    /// 64-bit entry point (RIP).
    pub entry: u64,
    /// Setup header of a bzImage (None for ELF).
    pub header: Option<linux_loader::bootparam::setup_header>,
    /// First byte after the kernel image.
    pub end: u64,
}

/// Load `path` (bzImage first, then ELF) into `mem`.
pub fn load_kernel(mem: &GuestMemoryMmap, path: &Path) -> Result<LoadedKernel> {
    let mut f = File::open(path).map_err(|source| Error::KernelUnreadable {
        path: path.to_path_buf(),
        source,
    })?;
    let high = Some(GuestAddress(layout::HIGH_RAM_START));
    match BzImage::load(mem, None, &mut f, high) {
        Ok(r) => Ok(LoadedKernel {
            entry: r
                .kernel_load
                .0
                .checked_add(BZIMAGE_64BIT_ENTRY_OFFSET)
                .ok_or_else(|| Error::Setup("bzImage loaded at the top of memory".into()))?,
            header: r.setup_header,
            end: r.kernel_end,
        }),
        Err(bz_err) => match Elf::load(mem, None, &mut f, high) {
            Ok(r) => Ok(LoadedKernel {
                entry: r.kernel_load.0,
                header: None,
                end: r.kernel_end,
            }),
            Err(elf_err) => Err(Error::KernelFormat {
                path: path.to_path_buf(),
                reason: format!("as bzImage: {bz_err}; as ELF: {elf_err}"),
            }),
        },
    }
}

/// Place the initrd at the top of low RAM (page aligned). Returns (address, size).
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    mem_size: u64,
    path: &Path,
    addr_max: u64,
    kernel_end: u64,
) -> Result<(u64, u64)> {
    let unreadable = |source| Error::InitrdUnreadable {
        path: path.to_path_buf(),
        source,
    };
    let mut f = File::open(path).map_err(unreadable)?;
    let mut data = Vec::new();
    f.read_to_end(&mut data).map_err(unreadable)?;
    let size = data.len() as u64;
    let limit = layout::low_ram_end(mem_size).min(addr_max.saturating_add(1));
    let addr =
        initrd_address(limit, size, kernel_end).ok_or(Error::InitrdTooLarge { size, limit })?;
    mem.write_slice(&data, GuestAddress(addr))
        .map_err(|e| Error::Setup(format!("writing the initrd: {e}")))?;
    Ok((addr, size))
}

/// Highest page-aligned address below `limit` for `size` bytes, above the kernel.
pub fn initrd_address(limit: u64, size: u64, kernel_end: u64) -> Option<u64> {
    let addr = limit.checked_sub(size)? & !0xfff;
    (addr >= kernel_end).then_some(addr)
}

/// Build the kernel command line.
pub fn build_cmdline(base: &str, extra: Option<&str>) -> Result<Cmdline> {
    let mut c =
        Cmdline::new(layout::CMDLINE_MAX_SIZE).map_err(|e| Error::Cmdline(e.to_string()))?;
    c.insert_str(base)
        .map_err(|e| Error::Cmdline(e.to_string()))?;
    if let Some(x) = extra.filter(|x| !x.trim().is_empty()) {
        c.insert_str(x.trim())
            .map_err(|e| Error::Cmdline(e.to_string()))?;
    }
    Ok(c)
}

/// Write the command line and the zero page.
pub fn write_boot_params(
    mem: &GuestMemoryMmap,
    mem_size: u64,
    kernel: &LoadedKernel,
    cmdline: &Cmdline,
    initrd: Option<(u64, u64)>,
    rsdp: u64,
) -> Result<()> {
    load_cmdline(mem, GuestAddress(layout::CMDLINE_START), cmdline)
        .map_err(|e| Error::Cmdline(e.to_string()))?;
    let len = cmdline
        .as_cstring()
        .map_err(|e| Error::Cmdline(e.to_string()))?
        .as_bytes()
        .len();
    let len = u32::try_from(len).map_err(|_| Error::Cmdline("command line too long".into()))?;
    let params = zero_page(mem_size, kernel, len, initrd, rsdp)?;
    let bp = BootParams::new::<boot_params>(&params, GuestAddress(layout::ZERO_PAGE_START));
    LinuxBootConfigurator::write_bootparams::<GuestMemoryMmap>(&bp, mem)
        .map_err(|e| Error::Setup(format!("writing the zero page: {e}")))
}

/// The zero page contents.
pub fn zero_page(
    mem_size: u64,
    kernel: &LoadedKernel,
    cmdline_len: u32,
    initrd: Option<(u64, u64)>,
    rsdp: u64,
) -> Result<boot_params> {
    let mut p = boot_params::default();
    if let Some(h) = kernel.header {
        p.hdr = h;
    }
    p.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    p.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    p.hdr.header = KERNEL_HDR_MAGIC;
    let below_4g = |what: &str, v: u64| {
        u32::try_from(v).map_err(|_| Error::Setup(format!("{what} {v:#x} is not below 4 GiB")))
    };
    p.hdr.cmd_line_ptr = below_4g("command line at", layout::CMDLINE_START)?;
    p.hdr.cmdline_size = cmdline_len;
    p.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT;
    if let Some((addr, size)) = initrd {
        p.hdr.ramdisk_image = below_4g("initrd at", addr)?;
        p.hdr.ramdisk_size = below_4g("initrd size", size)?;
    }
    p.acpi_rsdp_addr = rsdp;
    let map = layout::e820_map(mem_size);
    for (slot, e) in p.e820_table.iter_mut().zip(&map) {
        *slot = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            r#type: match e.kind {
                E820Type::Ram => 1,
                E820Type::Reserved => 2,
            },
        };
    }
    // The table has 128 slots.
    p.e820_entries = u8::try_from(map.len().min(p.e820_table.len())).unwrap_or(u8::MAX);
    Ok(p)
}

/// Initial initrd address limit from the header (boot protocol 2.03+).
pub fn initrd_addr_max(kernel: &LoadedKernel) -> u64 {
    match kernel.header {
        Some(h) if h.initrd_addr_max != 0 => u64::from(h.initrd_addr_max),
        _ => 0x7fff_ffff,
    }
}

/// A GDT entry from flags, base and limit (Intel SDM Vol. 3A §3.4.5).
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    (((base as u64) & 0xff00_0000) << (56 - 24))
        | (((flags as u64) & 0x0000_f0ff) << 40)
        | (((limit as u64) & 0x000f_0000) << (48 - 16))
        | (((base as u64) & 0x00ff_ffff) << 16)
        | ((limit as u64) & 0x0000_ffff)
}

/// The boot GDT: null, 64-bit code, data, TSS.
pub const BOOT_GDT: [u64; 4] = [
    gdt_entry(0, 0, 0),
    gdt_entry(0xa09b, 0, 0xfffff),
    gdt_entry(0xc093, 0, 0xfffff),
    gdt_entry(0x808b, 0, 0xfffff),
];

/// Write the GDT, an empty IDT and identity page tables for the first GiB
/// (2 MiB pages).
pub fn write_boot_tables(mem: &GuestMemoryMmap) -> Result<()> {
    let err = |e: vm_memory::GuestMemoryError| Error::Setup(format!("writing boot tables: {e}"));
    for (e, addr) in BOOT_GDT.iter().zip((layout::BOOT_GDT_START..).step_by(8)) {
        mem.write_obj(*e, GuestAddress(addr)).map_err(err)?;
    }
    mem.write_obj(0u64, GuestAddress(layout::BOOT_IDT_START))
        .map_err(err)?;
    mem.write_obj(layout::PDPTE_START | 0x3, GuestAddress(layout::PML4_START))
        .map_err(err)?;
    mem.write_obj(layout::PDE_START | 0x3, GuestAddress(layout::PDPTE_START))
        .map_err(err)?;
    for (i, addr) in (0..512u64).zip((layout::PDE_START..).step_by(8)) {
        mem.write_obj((i << 21) | 0x83, GuestAddress(addr))
            .map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdt_code_segment_is_64bit_present_ring0() {
        let e = BOOT_GDT[1];
        assert_eq!((e >> 47) & 1, 1, "present");
        assert_eq!((e >> 53) & 1, 1, "long mode");
        assert_eq!((e >> 45) & 3, 0, "DPL 0");
        assert_eq!((e >> 40) & 0xf, 0xb, "execute/read, accessed");
    }

    #[test]
    fn initrd_goes_to_top_page_aligned_and_above_kernel() {
        assert_eq!(
            initrd_address(0x4000_0000, 0x1234, 0x200_0000),
            Some(0x3fff_e000)
        );
        assert_eq!(initrd_address(0x300_0000, 0x200_0000, 0x200_0000), None);
        assert_eq!(initrd_address(0x1000, 0x2000, 0), None);
    }

    #[test]
    fn zero_page_carries_e820_cmdline_initrd_rsdp() {
        let k = LoadedKernel {
            entry: 0x100_0200,
            header: None,
            end: 0x200_0000,
        };
        let p = zero_page(1 << 30, &k, 42, Some((0x3000_0000, 0x1000)), 0xe0000).unwrap();
        let hdr = p.hdr;
        assert_eq!({ hdr.header }, KERNEL_HDR_MAGIC);
        assert_eq!({ hdr.cmd_line_ptr }, layout::CMDLINE_START as u32);
        assert_eq!({ hdr.cmdline_size }, 42);
        assert_eq!({ hdr.ramdisk_image }, 0x3000_0000);
        assert_eq!({ p.acpi_rsdp_addr }, 0xe0000);
        let n = p.e820_entries as usize;
        assert_eq!(n, layout::e820_map(1 << 30).len());
        let first = p.e820_table[0];
        assert_eq!(({ first.addr }, { first.r#type }), (0, 1));
    }

    #[test]
    fn boot_page_tables_identity_map_first_gib() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap();
        write_boot_tables(&mem).unwrap();
        let pml4: u64 = mem.read_obj(GuestAddress(layout::PML4_START)).unwrap();
        assert_eq!(pml4 & !0xfff, layout::PDPTE_START);
        let pde: u64 = mem
            .read_obj(GuestAddress(layout::PDE_START + 511 * 8))
            .unwrap();
        assert_eq!(pde, (511 << 21) | 0x83);
    }

    #[test]
    fn kernel_missing_file_is_plain_error() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap();
        let e = load_kernel(&mem, Path::new("/nonexistent/bzImage")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot read the kernel /nonexistent/bzImage"),
            "{e}"
        );
    }

    #[test]
    fn kernel_garbage_file_is_format_error() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap();
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), vec![0x5a; 8192]).unwrap();
        let e = load_kernel(&mem, f.path()).unwrap_err();
        assert!(
            e.to_string().contains("is not a bootable x86_64 kernel"),
            "{e}"
        );
    }
}
