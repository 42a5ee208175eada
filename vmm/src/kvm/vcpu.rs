//! vCPU setup (64-bit boot state for the BSP; CPUID, MSRs, LAPIC for all)
//! and the run loop that routes exits to the buses.

use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};

use kvm_bindings::{
    KVM_CAP_X86_TRIPLE_FAULT_EVENT, KVM_MAX_CPUID_ENTRIES, KVM_VCPUEVENT_VALID_TRIPLE_FAULT, Msrs,
    kvm_enable_cap, kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment,
};
use kvm_ioctls::{Cap, Kvm, VcpuExit, VcpuFd, VmFd};
use vm_memory::GuestMemoryMmap;

use super::cpuid;
use crate::boot::BOOT_GDT;
use crate::devices::Bus;
use crate::devices::ioapic::Ioapic;
use crate::error::{Error, Result};
use crate::exit::recorder::{self, Event};
use crate::exit::{ExitReason, ExitSink};
use crate::layout;

const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
/// MISC_ENABLE: fast string operations.
const MISC_ENABLE_FAST_STRING: u64 = 1;
/// MTRRdefType: MTRRs enabled, default type write-back.
const MTRR_ENABLE_WB: u64 = (1 << 11) | 6;

const X86_CR0_PE: u64 = 1;
const X86_CR0_PG: u64 = 1 << 31;
const X86_CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// LAPIC register offsets and delivery modes (Intel SDM Vol. 3A §11.5.1).
const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

fn segment_from_gdt(entry: u64, index: u8) -> kvm_segment {
    let g = ((entry >> 55) & 1) as u8;
    let raw_limit = ((entry & 0xffff) | ((entry >> 32) & 0xf_0000)) as u32;
    let present = ((entry >> 47) & 1) as u8;
    kvm_segment {
        base: ((entry >> 16) & 0xff_ffff) | (((entry >> 56) & 0xff) << 24),
        limit: if g == 1 {
            (raw_limit << 12) | 0xfff
        } else {
            raw_limit
        },
        selector: u16::from(index) * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        padding: 0,
        unusable: u8::from(present == 0),
    }
}

fn lapic_reg(regs: &[std::os::raw::c_char; 1024], off: usize) -> u32 {
    let b = |i: usize| regs[off + i] as u8;
    u32::from_le_bytes([b(0), b(1), b(2), b(3)])
}

fn set_lapic_reg(regs: &mut [std::os::raw::c_char; 1024], off: usize, v: u32) {
    for (i, b) in v.to_le_bytes().iter().enumerate() {
        regs[off + i] = *b as std::os::raw::c_char;
    }
}

/// Create vCPU `id` of `count` with CPUID, MSRs and LAPIC set up.
pub fn create(kvm: &Kvm, vm: &VmFd, id: u8, count: u8) -> Result<VcpuFd> {
    if id == 0 {
        // KVM API 7.30: a triple fault KVM itself raises (KVM_REQ_TRIPLE_FAULT) shows in
        // KVM_GET_VCPU_EVENTS, so the shutdown report can tell it from one the CPU raised.
        // Optional (Linux 5.19+); before any vCPU exists.
        let mut c = kvm_enable_cap {
            cap: KVM_CAP_X86_TRIPLE_FAULT_EVENT,
            ..Default::default()
        };
        c.args[0] = 1;
        if vm.check_extension_raw(u64::from(KVM_CAP_X86_TRIPLE_FAULT_EVENT)) > 0
            && let Err(e) = vm.enable_cap(&c)
        {
            tracing::debug!("KVM_CAP_X86_TRIPLE_FAULT_EVENT: {e}");
        }
    }
    let vcpu = vm
        .create_vcpu(u64::from(id))
        .map_err(Error::kvm("creating a vCPU"))?;
    let mut cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(Error::kvm("reading supported CPUID"))?;
    let tsc_deadline = kvm.check_extension(Cap::TscDeadlineTimer);
    cpuid::patch(cpuid.as_mut_slice(), id, count, tsc_deadline);
    if let Some(bits) = std::env::var("IOMMU_VMM_KVM_PV_CLEAR")
        .ok()
        .and_then(|v| u32::from_str_radix(v.trim_start_matches("0x"), 16).ok())
    {
        cpuid::clear_kvm_features(cpuid.as_mut_slice(), bits);
    }
    vcpu.set_cpuid2(&cpuid)
        .map_err(Error::kvm("setting CPUID"))?;

    let entries: Vec<kvm_msr_entry> = [
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        (MSR_MTRR_DEF_TYPE, MTRR_ENABLE_WB),
    ]
    .iter()
    .map(|&(index, data)| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    })
    .collect();
    let msrs =
        Msrs::from_entries(&entries).map_err(|e| Error::Setup(format!("MSR list: {e:?}")))?;
    let set = vcpu.set_msrs(&msrs).map_err(Error::kvm("setting MSRs"))?;
    if set != entries.len() {
        let missing = entries.get(set).map_or(0, |e| e.index);
        tracing::warn!(
            "KVM accepted {set} of {} boot MSRs (stopped at {missing:#x})",
            entries.len()
        );
    }

    let mut lapic = vcpu.get_lapic().map_err(Error::kvm("reading the LAPIC"))?;
    let lvt0 = lapic_reg(&lapic.regs, APIC_LVT0);
    set_lapic_reg(
        &mut lapic.regs,
        APIC_LVT0,
        (lvt0 & !0x700) | (APIC_MODE_EXTINT << 8),
    );
    let lvt1 = lapic_reg(&lapic.regs, APIC_LVT1);
    set_lapic_reg(
        &mut lapic.regs,
        APIC_LVT1,
        (lvt1 & !0x700) | (APIC_MODE_NMI << 8),
    );
    vcpu.set_lapic(&lapic)
        .map_err(Error::kvm("setting the LAPIC"))?;
    Ok(vcpu)
}

/// Put the boot vCPU in 64-bit mode at `entry` with the zero page in RSI.
pub fn setup_boot_cpu(vcpu: &VcpuFd, entry: u64) -> Result<()> {
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(Error::kvm("setting the FPU"))?;
    let regs = kvm_regs {
        rflags: 0x2,
        rip: entry,
        rsp: layout::BOOT_STACK_POINTER,
        rbp: layout::BOOT_STACK_POINTER,
        rsi: layout::ZERO_PAGE_START,
        ..Default::default()
    };
    vcpu.set_regs(&regs)
        .map_err(Error::kvm("setting registers"))?;
    let mut sregs = vcpu.get_sregs().map_err(Error::kvm("reading sregs"))?;
    let code = segment_from_gdt(BOOT_GDT[1], 1);
    let data = segment_from_gdt(BOOT_GDT[2], 2);
    let tss = segment_from_gdt(BOOT_GDT[3], 3);
    sregs.gdt.base = layout::BOOT_GDT_START;
    sregs.gdt.limit = (BOOT_GDT.len() * 8 - 1) as u16;
    sregs.idt.base = layout::BOOT_IDT_START;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;
    sregs.cr0 |= X86_CR0_PE | X86_CR0_PG;
    sregs.cr3 = layout::PML4_START;
    sregs.cr4 |= X86_CR4_PAE;
    sregs.efer |= EFER_LME | EFER_LMA;
    vcpu.set_sregs(&sregs).map_err(Error::kvm("setting sregs"))
}

/// A register dump for error messages.
pub fn dump(vcpu: &VcpuFd) -> String {
    let mut s = String::new();
    if let Ok(r) = vcpu.get_regs() {
        let _ = writeln!(
            s,
            "RIP={:016x} RSP={:016x} RFLAGS={:08x}\nRAX={:016x} RBX={:016x} RCX={:016x} RDX={:016x}\nRSI={:016x} RDI={:016x} RBP={:016x}\nR8 ={:016x} R9 ={:016x} R10={:016x} R11={:016x}\nR12={:016x} R13={:016x} R14={:016x} R15={:016x}",
            r.rip,
            r.rsp,
            r.rflags,
            r.rax,
            r.rbx,
            r.rcx,
            r.rdx,
            r.rsi,
            r.rdi,
            r.rbp,
            r.r8,
            r.r9,
            r.r10,
            r.r11,
            r.r12,
            r.r13,
            r.r14,
            r.r15
        );
    }
    if let Ok(sr) = vcpu.get_sregs() {
        if sr.cs.base == 0xffff_0000 && vcpu.get_regs().is_ok_and(|r| r.rip == 0xfff0) {
            // AMD (SVM): KVM reinitialises the VMCB on a shutdown intercept, so the
            // state at the triple fault is gone.
            let _ = writeln!(
                s,
                "(these are reset values: on AMD hosts KVM resets the vCPU when it shuts down; the faulting state is lost)"
            );
        }
        let _ = writeln!(
            s,
            "CR0={:016x} CR2={:016x} CR3={:016x} CR4={:016x} EFER={:x}\nCS={:04x} base={:x} DS={:04x} SS={:04x} GDT={:x}/{:x} IDT={:x}/{:x}",
            sr.cr0,
            sr.cr2,
            sr.cr3,
            sr.cr4,
            sr.efer,
            sr.cs.selector,
            sr.cs.base,
            sr.ds.selector,
            sr.ss.selector,
            sr.gdt.base,
            sr.gdt.limit,
            sr.idt.base,
            sr.idt.limit
        );
    }
    s
}

/// Events of the flight recorder printed with a shutdown report.
const REPORT_EVENTS: usize = 64;
/// Lines of the host kernel's KVM trace printed with a shutdown report.
const REPORT_TRACE_LINES: usize = 120;
/// Environment variable naming a `System.map` of the guest kernel: RIPs in the
/// shutdown report get symbol names (only right with `nokaslr` in the guest).
pub const SYSTEM_MAP_ENV: &str = "IOMMU_VMM_SYSTEM_MAP";
/// Environment variable naming the host's tracefs directory (usually
/// `/sys/kernel/tracing`, mounted): the VMM turns on KVM's `kvm_exit`,
/// `kvm_entry`, `kvm_inj_virq`, `kvm_inj_exception`, `kvm_page_fault`,
/// `kvm_msi_set_irq` and `kvm_apic_accept_irq` tracepoints when it starts and
/// prints the trace's last lines with a shutdown report. `kvm_exit` carries
/// the guest RIP at the shutdown exit, which KVM on AMD erases from the vCPU
/// right after (it INITs the vCPU on a shutdown intercept).
pub const KVM_TRACE_ENV: &str = "IOMMU_VMM_KVM_TRACE";
/// The KVM tracepoints turned on with [`KVM_TRACE_ENV`].
pub const KVM_TRACE_EVENTS: &[&str] = &[
    "kvm_exit",
    "kvm_entry",
    "kvm_inj_virq",
    "kvm_inj_exception",
    "kvm_page_fault",
    "kvm_msi_set_irq",
    "kvm_apic_accept_irq",
];

/// Turn on the KVM tracepoints when [`KVM_TRACE_ENV`] names a tracefs
/// directory (needs root; failures are logged and ignored).
pub fn start_kvm_trace() {
    let Some(dir) = std::env::var_os(KVM_TRACE_ENV) else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let w = |rel: &str, v: &str| {
        if let Err(e) = std::fs::write(dir.join(rel), v) {
            tracing::warn!("{}: {e}", dir.join(rel).display());
        }
    };
    w("tracing_on", "0");
    w("buffer_size_kb", "4096");
    w("trace", "");
    for ev in KVM_TRACE_EVENTS {
        w(&format!("events/kvm/{ev}/enable"), "1");
    }
    w("tracing_on", "1");
}

/// The last `n` lines of the host's KVM trace ([`KVM_TRACE_ENV`]), tracing
/// stopped first so the lines around the failure stay.
fn kvm_trace_tail(n: usize) -> Option<String> {
    let dir = std::path::PathBuf::from(std::env::var_os(KVM_TRACE_ENV)?);
    let _ = std::fs::write(dir.join("tracing_on"), "0");
    let text = std::fs::read_to_string(dir.join("trace")).ok()?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    let skip = lines.len().saturating_sub(n);
    Some(lines.get(skip..).unwrap_or_default().join("\n"))
}

/// What the shutdown report may read besides the vCPU: guest memory (which
/// survives the shutdown) and whether the guest kernel is at its link address
/// (`nokaslr`), so System.map addresses are its addresses.
struct PostMortem {
    mem: GuestMemoryMmap,
    nokaslr: bool,
}

fn post_mortem_context() -> &'static OnceLock<PostMortem> {
    static CTX: OnceLock<PostMortem> = OnceLock::new();
    &CTX
}

/// Set up the shutdown report before the vCPUs run: remember guest memory and
/// the kernel command line (for the post-mortem check of the guest kernel's
/// IDT and page tables), and turn on the host's KVM trace when
/// [`KVM_TRACE_ENV`] asks for it.
pub fn prepare_shutdown_report(mem: &GuestMemoryMmap, cmdline: &str) {
    let _ = post_mortem_context().set(PostMortem {
        mem: mem.clone(),
        nokaslr: cmdline.split_whitespace().any(|w| w == "nokaslr"),
    });
    start_kvm_trace();
}

/// Linux x86-64: virtual base of the kernel image mapping (`__START_KERNEL_map`);
/// with `nokaslr` and the kernel at 16 MiB, physical = virtual - this.
const START_KERNEL_MAP: u64 = 0xffff_ffff_8000_0000;
/// Linux x86-64 (4-level paging): the read-only IDT alias the CPU's IDTR points at
/// (`CPU_ENTRY_AREA_RO_IDT`, arch/x86/include/asm/pgtable_areas.h).
const CEA_RO_IDT: u64 = 0xffff_fe00_0000_0000;

/// Guest-physical address of `va` through the 4-level page tables at `root`
/// (Intel SDM Vol. 3A §4.5; large pages at the PDPT and PD levels), or where
/// the walk stopped.
pub fn walk(mem: &GuestMemoryMmap, root: u64, va: u64) -> std::result::Result<u64, String> {
    use vm_memory::{Bytes, GuestAddress};
    const ADDR: u64 = 0x000f_ffff_ffff_f000;
    let mut table = root & ADDR;
    for (level, shift) in [(4u32, 39u32), (3, 30), (2, 21), (1, 12)] {
        let idx = (va >> shift) & 0x1ff;
        let at = table + idx * 8;
        let e: u64 = mem
            .read_obj(GuestAddress(at))
            .map_err(|_| format!("level {level} entry at {at:#x} is not RAM"))?;
        if e & 1 == 0 {
            return Err(format!(
                "level {level} entry {idx} at {at:#x} not present ({e:#x})"
            ));
        }
        if (level == 3 || level == 2) && e & 0x80 != 0 {
            let size = 1u64 << shift;
            return Ok((e & ADDR & !(size - 1)) | (va & (size - 1)));
        }
        table = e & ADDR;
    }
    Ok(table | (va & 0xfff))
}

fn symbol_addr(map: &str, name: &str) -> Option<u64> {
    map.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        let (a, _, n) = (w.next()?, w.next()?, w.next()?);
        (n == name).then(|| u64::from_str_radix(a, 16).ok())?
    })
}

/// After a shutdown the guest's memory is intact: check what a triple fault
/// needs to be broken (Intel SDM Vol. 3A §6.15 interrupt 8: the #DF itself
/// could not be delivered). Through the kernel's own page tables
/// (`init_top_pgt`; the kernel half is shared by every process): is the IDT
/// alias mapped and does every present gate of `idt_table` point into kernel
/// text; is `rip` mapped. Needs System.map and `nokaslr`.
pub fn post_mortem(mem: &GuestMemoryMmap, map: &str, rip: Option<u64>) -> String {
    use vm_memory::{Bytes, GuestAddress};
    let mut s = String::new();
    let sym = |n: &str| symbol_addr(map, n);
    let (Some(pgt), Some(idt), Some(stext), Some(etext)) = (
        sym("init_top_pgt"),
        sym("idt_table"),
        sym("_stext"),
        sym("_etext"),
    ) else {
        return "post-mortem: System.map lacks init_top_pgt/idt_table/_stext/_etext\n".into();
    };
    let phys = |va: u64| va.wrapping_sub(START_KERNEL_MAP);
    let root = phys(pgt);
    let _ = writeln!(
        s,
        "post-mortem (guest memory after the shutdown, kernel page tables at {root:#x}):"
    );
    match walk(mem, root, CEA_RO_IDT) {
        Ok(pa) if pa == phys(idt) => {
            let _ = writeln!(s, "  IDT alias {CEA_RO_IDT:#x} -> {pa:#x} = idt_table: ok");
        }
        Ok(pa) => {
            let _ = writeln!(
                s,
                "  IDT alias {CEA_RO_IDT:#x} -> {pa:#x}, but idt_table is at {:#x}: WRONG",
                phys(idt)
            );
        }
        Err(e) => {
            let _ = writeln!(s, "  IDT alias {CEA_RO_IDT:#x} not mapped: {e}");
        }
    }
    // Linux leaves the reserved vectors (0x14-0x1f) on its early handlers in init text.
    let init_text = sym("_sinittext").zip(sym("_einittext"));
    let mut in_init = 0;
    let mut bad = Vec::new();
    let mut present = 0;
    for v in 0..256u64 {
        let at = GuestAddress(phys(idt) + v * 16);
        let (Ok(lo), Ok(hi)) = (
            mem.read_obj::<u64>(at),
            mem.read_obj::<u64>(GuestAddress(at.0 + 8)),
        ) else {
            bad.push(format!("{v:#x}: not RAM"));
            continue;
        };
        if lo & (1 << 47) == 0 {
            continue;
        }
        present += 1;
        let target = (lo & 0xffff) | ((lo >> 32) & 0xffff_0000) | ((hi & 0xffff_ffff) << 32);
        let kind = (lo >> 40) & 0xf;
        let cs = (lo >> 16) & 0xffff;
        let init = init_text.is_some_and(|(a, b)| (a..b).contains(&target));
        if init {
            in_init += 1;
        }
        if !((stext..etext).contains(&target) || init) || !matches!(kind, 0xe | 0xf) || cs != 0x10 {
            bad.push(format!(
                "{v:#x}: target {target:#x} type {kind:#x} cs {cs:#x}"
            ));
        }
    }
    if bad.is_empty() {
        let _ = writeln!(
            s,
            "  idt_table: {present} present gates, all into kernel text ({in_init} into init text): ok"
        );
    } else {
        let _ = writeln!(
            s,
            "  idt_table: {present} present gates, BAD: {}",
            bad.join("; ")
        );
    }
    if let Some(rip) = rip {
        match walk(mem, root, rip) {
            Ok(pa) => {
                let _ = writeln!(s, "  RIP {rip:#x} -> {pa:#x}: mapped");
            }
            Err(e) => {
                let _ = writeln!(s, "  RIP {rip:#x}: {e}");
            }
        }
    }
    s
}

/// `symbol+0xoff` for `addr` from System.map text (text symbols only).
pub fn symbolize(map: &str, addr: u64) -> Option<String> {
    let mut best: Option<(u64, &str)> = None;
    for line in map.lines() {
        let mut w = line.split_whitespace();
        let (Some(a), Some(kind), Some(name)) = (w.next(), w.next(), w.next()) else {
            continue;
        };
        if !matches!(kind, "t" | "T" | "w" | "W") {
            continue;
        }
        let Ok(a) = u64::from_str_radix(a, 16) else {
            continue;
        };
        if a <= addr && best.is_none_or(|(b, _)| a > b) {
            best = Some((a, name));
        }
    }
    let (a, name) = best?;
    // Beyond 1 MiB from the nearest symbol it is not that symbol (user space,
    // modules, or a randomised kernel base).
    (addr - a < (1 << 20)).then(|| format!("{name}+{:#x}", addr - a))
}

fn symbol_of(addr: u64) -> Option<String> {
    let path = std::env::var_os(SYSTEM_MAP_ENV)?;
    let map = std::fs::read_to_string(path).ok()?;
    symbolize(&map, addr)
}

/// Whether KVM reset the vCPU before handing back the shutdown: the INIT
/// values (CS base 0xffff0000, RIP 0xfff0, paging off).
fn looks_reset(regs: &kvm_regs, sregs: &kvm_bindings::kvm_sregs) -> bool {
    sregs.cs.base == 0xffff_0000 && regs.rip == 0xfff0 && sregs.cr0 & X86_CR0_PG == 0
}

/// Everything the VMM can say about a vCPU that shut down (triple fault):
/// whether its state survived, registers, pending events, the LAPIC, the
/// flight recorder's last events and, when set up, the host's KVM trace.
pub fn shutdown_report(vcpu: &VcpuFd, id: u8) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "vCPU {id} shut down (triple fault).");
    let regs = vcpu.get_regs();
    let sregs = vcpu.get_sregs();
    match (&regs, &sregs) {
        (Ok(r), Ok(sr)) if looks_reset(r, sr) => {
            let _ = writeln!(
                s,
                "State: LOST. KVM returned INIT values: on AMD (SVM) KVM INITs the vCPU on a shutdown \
                 intercept (the VMCB is undefined after it), so the registers below are not the \
                 faulting ones. The CPU (here: the outer machine's SVM) raised the triple fault, not \
                 KVM. The guest RIP at the shutdown exit is in the host's kvm_exit trace \
                 ({KVM_TRACE_ENV}=/sys/kernel/tracing)."
            );
        }
        (Ok(r), Ok(_)) => {
            let sym = symbol_of(r.rip)
                .map(|n| format!(" ({n})"))
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "State: kept (KVM raised the triple fault itself, or the host is Intel). RIP {:#x}{sym}",
                r.rip
            );
        }
        _ => {
            let _ = writeln!(s, "State: KVM_GET_REGS/SREGS failed");
        }
    }
    s.push_str(&dump(vcpu));
    if let Ok(ev) = vcpu.get_vcpu_events() {
        let _ = writeln!(
            s,
            "events: exception injected={} pending={} nr={} error_code={:?}; interrupt injected={} nr={:#x} shadow={}; nmi injected={} pending={} masked={}; triple fault pending={}",
            ev.exception.injected,
            ev.exception.pending,
            ev.exception.nr,
            (ev.exception.has_error_code != 0).then_some(ev.exception.error_code),
            ev.interrupt.injected,
            ev.interrupt.nr,
            ev.interrupt.shadow,
            ev.nmi.injected,
            ev.nmi.pending,
            ev.nmi.masked,
            if ev.flags & KVM_VCPUEVENT_VALID_TRIPLE_FAULT != 0 {
                ev.triple_fault.pending.to_string()
            } else {
                "(not reported)".into()
            },
        );
    }
    if let Ok(mp) = vcpu.get_mp_state() {
        let _ = writeln!(s, "mp_state {}", mp.mp_state);
    }
    if let Ok(l) = vcpu.get_lapic() {
        let highest = |base: usize| {
            (0..8usize)
                .rev()
                .find_map(|i| {
                    let w = lapic_reg(&l.regs, base + i * 0x10);
                    (w != 0).then(|| i * 32 + (31 - w.leading_zeros() as usize))
                })
                .map_or("none".to_string(), |v| format!("{v:#x}"))
        };
        let _ = writeln!(
            s,
            "lapic: TPR {:#x}, highest ISR {}, highest IRR {}, LVT timer {:#x}, SVR {:#x}",
            lapic_reg(&l.regs, 0x80),
            highest(0x100),
            highest(0x200),
            lapic_reg(&l.regs, 0x320),
            lapic_reg(&l.regs, 0xf0),
        );
    }
    let _ = writeln!(
        s,
        "last {REPORT_EVENTS} VMM events (exits, interrupts sent, virtio-blk requests):"
    );
    s.push_str(&recorder::dump(REPORT_EVENTS));
    let mut post_mortem_rip = match (&regs, &sregs) {
        (Ok(r), Ok(sr)) if !looks_reset(r, sr) => Some(r.rip),
        _ => None,
    };
    if let Some(t) = kvm_trace_tail(REPORT_TRACE_LINES) {
        let _ = writeln!(s, "host KVM trace, last {REPORT_TRACE_LINES} lines:\n{t}");
        let shutdown = shutdown_exit(&t);
        post_mortem_rip = shutdown.map(|(rip, _)| rip);
        match shutdown {
            Some((rip, intr_info)) => {
                let sym = symbol_of(rip)
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default();
                let _ = writeln!(
                    s,
                    "shutdown exit: guest RIP {rip:#x}{sym}; event being delivered: {}",
                    describe_intr_info(intr_info)
                );
            }
            None => {
                let _ = writeln!(s, "(no shutdown exit in the KVM trace)");
            }
        }
    }
    let map = std::env::var_os(SYSTEM_MAP_ENV).and_then(|p| std::fs::read_to_string(p).ok());
    match (post_mortem_context().get(), map) {
        (Some(ctx), Some(map)) if ctx.nokaslr => {
            s.push_str(&post_mortem(&ctx.mem, &map, post_mortem_rip))
        }
        (Some(_), Some(_)) => {
            let _ = writeln!(
                s,
                "(no post-mortem of guest memory: the guest runs without nokaslr)"
            );
        }
        _ => {}
    }
    s
}

/// The guest RIP and the exit's `intr_info` (the event the CPU was delivering, SVM
/// EXITINTINFO) of the last `kvm_exit` with reason shutdown in a KVM trace.
pub fn shutdown_exit(trace: &str) -> Option<(u64, u32)> {
    let hex = |l: &str, key: &str| {
        let after = l.split(key).nth(1)?;
        let v = after.split_whitespace().next()?.trim_start_matches("0x");
        u64::from_str_radix(v, 16).ok()
    };
    trace
        .lines()
        .rev()
        .filter(|l| l.contains("kvm_exit") && l.to_ascii_lowercase().contains("shutdown"))
        .find_map(|l| {
            let rip = hex(l, " rip ")?;
            let info = hex(l, " intr_info ").unwrap_or(0);
            Some((rip, u32::try_from(info).unwrap_or(0)))
        })
}

/// SVM EXITINTINFO / VMX IDT-vectoring info in words (AMD APM Vol. 2 §15.7.2: bit 31 valid,
/// bits 10:8 type, bit 11 error code valid, bits 7:0 vector).
pub fn describe_intr_info(info: u32) -> String {
    if info & (1 << 31) == 0 {
        return "none".into();
    }
    let vector = info & 0xff;
    let kind = match (info >> 8) & 7 {
        0 => "external interrupt",
        2 => "NMI",
        3 => "exception",
        4 => "software interrupt",
        _ => "event",
    };
    let err = if info & (1 << 11) != 0 {
        " with error code"
    } else {
        ""
    };
    format!("{kind} vector {vector:#x}{err}")
}

/// KVM_SYSTEM_EVENT types.
const SYSTEM_EVENT_SHUTDOWN: u32 = 1;
const SYSTEM_EVENT_RESET: u32 = 2;

/// Run `vcpu` until the VM stops, routing exits to the buses and EOIs of
/// level-triggered IOAPIC interrupts (KVM_EXIT_IOAPIC_EOI, split irqchip)
/// to `ioapic`.
pub fn run(
    mut vcpu: VcpuFd,
    id: u8,
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
    ioapic: Arc<Ioapic>,
    exit: Arc<dyn ExitSink>,
) {
    loop {
        let r = vcpu.run();
        match r {
            Ok(VcpuExit::IoIn(port, data)) => {
                pio.read(u64::from(port), data);
                recorder::record(Event::Pio {
                    vcpu: id,
                    port,
                    write: false,
                    len: data.len() as u8,
                    data: recorder::value(data),
                });
            }
            Ok(VcpuExit::IoOut(port, data)) => {
                recorder::record(Event::Pio {
                    vcpu: id,
                    port,
                    write: true,
                    len: data.len() as u8,
                    data: recorder::value(data),
                });
                pio.write(u64::from(port), data);
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                mmio.read(addr, data);
                recorder::record(Event::Mmio {
                    vcpu: id,
                    addr,
                    write: false,
                    len: data.len() as u8,
                    data: recorder::value(data),
                });
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                recorder::record(Event::Mmio {
                    vcpu: id,
                    addr,
                    write: true,
                    len: data.len() as u8,
                    data: recorder::value(data),
                });
                mmio.write(addr, data);
            }
            Ok(VcpuExit::IoapicEoi(vector)) => {
                recorder::record(Event::Eoi { vcpu: id, vector });
                ioapic.end_of_interrupt(vector)
            }
            Ok(VcpuExit::Hlt) => recorder::record(Event::Exit {
                vcpu: id,
                what: "hlt",
            }),
            Ok(VcpuExit::Intr) | Ok(VcpuExit::IrqWindowOpen) => {}
            Ok(VcpuExit::Shutdown) => {
                exit.request_exit(ExitReason::TripleFault(shutdown_report(&vcpu, id)));
                return;
            }
            Ok(VcpuExit::SystemEvent(kind, _)) => {
                exit.request_exit(match kind {
                    SYSTEM_EVENT_SHUTDOWN => ExitReason::PowerOff,
                    SYSTEM_EVENT_RESET => ExitReason::Reset,
                    k => ExitReason::Error(format!("vCPU {id}: system event {k}")),
                });
                return;
            }
            Ok(VcpuExit::FailEntry(reason, cpu)) => {
                exit.request_exit(ExitReason::Error(format!(
                    "vCPU {id}: KVM could not enter the guest (hardware reason {reason:#x}, cpu {cpu})\n{}",
                    dump(&vcpu)
                )));
                return;
            }
            Ok(VcpuExit::InternalError) => {
                exit.request_exit(ExitReason::Error(format!(
                    "vCPU {id}: KVM internal error (KVM could not emulate an instruction)\n{}",
                    dump(&vcpu)
                )));
                return;
            }
            Ok(other) => {
                exit.request_exit(ExitReason::Error(format!(
                    "vCPU {id}: unexpected exit {other:?}"
                )));
                return;
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {}
            Err(e) => {
                exit.request_exit(ExitReason::Error(format!("vCPU {id}: KVM_RUN failed: {e}")));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbolize_picks_the_nearest_text_symbol_below() {
        let map = "ffffffff81000000 T _text\nffffffff81001000 t do_thing\nffffffff81002000 D some_data\nffffffff81003000 T other\n";
        assert_eq!(
            symbolize(map, 0xffff_ffff_8100_1010).as_deref(),
            Some("do_thing+0x10")
        );
        assert_eq!(
            symbolize(map, 0xffff_ffff_8100_2800).as_deref(),
            Some("do_thing+0x1800"),
            "data symbols are skipped"
        );
        assert_eq!(symbolize(map, 0x1000), None, "below every symbol");
        assert_eq!(symbolize(map, 0xffff_ffff_9000_0000), None, "too far away");
    }

    #[test]
    fn shutdown_exit_reads_the_last_shutdown_exit_of_a_kvm_trace() {
        // Linux 6.1 kvm_exit format on SVM, as an L1 kernel printed it for a #UD that
        // could not be delivered: "vcpu %u reason %s rip 0x%lx info1 .. intr_info ..".
        let t = "vcpu0-142 [000] ..... 6.483739: kvm_exit: vcpu 0 reason UD excp rip 0x1000000 info1 0x0000000000000000 info2 0x0000000000000000 intr_info 0x00000000 error_code 0x00000000\n\
                 vcpu0-142 [000] ..... 6.484822: kvm_exit: vcpu 0 reason shutdown rip 0xffffffff81abcdef info1 0x0000000000000000 info2 0x0000000000000000 intr_info 0x80000306 error_code 0x00000000\n\
                 vcpu1-143 [001] ..... 6.5: kvm_exit: vcpu 1 reason hlt rip 0xffffffff81000020 info1 0x0 info2 0x0 intr_info 0x0 error_code 0x0";
        assert_eq!(shutdown_exit(t), Some((0xffff_ffff_81ab_cdef, 0x8000_0306)));
        assert_eq!(
            shutdown_exit("kvm_exit: vcpu 0 reason hlt rip 0x10 intr_info 0x0"),
            None
        );
        assert_eq!(describe_intr_info(0x8000_0306), "exception vector 0x6");
        assert_eq!(
            describe_intr_info(0x8000_0b0e),
            "exception vector 0xe with error code"
        );
        assert_eq!(
            describe_intr_info(0x8000_0022),
            "external interrupt vector 0x22"
        );
        assert_eq!(describe_intr_info(0x22), "none");
    }

    /// A 64-bit interrupt gate (Intel SDM Vol. 3A §6.14.1) to `target` with selector 0x10.
    fn gate(target: u64) -> (u64, u64) {
        let lo = (target & 0xffff) | (0x10 << 16) | (0x8e << 40) | ((target & 0xffff_0000) << 32);
        (lo, target >> 32)
    }

    #[test]
    fn post_mortem_checks_idt_alias_gates_and_rip_through_kernel_tables() {
        use vm_memory::{Bytes, GuestAddress};
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 32 << 20)]).unwrap();
        let k = START_KERNEL_MAP;
        let map = format!(
            "{:016x} D init_top_pgt\n{:016x} D idt_table\n{:016x} T _stext\n{:016x} T _etext\n",
            k + 0x10_0000,
            k + 0x20_0000,
            k + 0x100_0000,
            k + 0x180_0000
        );
        let w = |a: u64, v: u64| mem.write_obj(v, GuestAddress(a)).unwrap();
        // PML4 at 1 MiB: the IDT alias through a 4 KiB page, kernel text through a 2 MiB page.
        w(0x10_0000 + 0x1fc * 8, 0x10_1000 | 3);
        w(0x10_1000, 0x10_2000 | 3);
        w(0x10_2000, 0x10_3000 | 3);
        w(0x10_3000, 0x20_0000 | 1);
        w(0x10_0000 + 511 * 8, 0x10_4000 | 3);
        w(0x10_4000 + 510 * 8, 0x10_5000 | 3);
        w(0x10_5000 + 8 * 8, 0x100_0000 | 0x83);
        let (lo, hi) = gate(k + 0x100_0010);
        w(0x20_0000, lo);
        w(0x20_0008, hi);
        let rip = 0xffff_ffff_8100_1234;
        assert_eq!(walk(&mem, 0x10_0000, rip), Ok(0x100_1234));
        let r = post_mortem(&mem, &map, Some(rip));
        assert!(r.contains("= idt_table: ok"), "{r}");
        assert!(
            r.contains("1 present gates, all into kernel text (0 into init text): ok"),
            "{r}"
        );
        assert!(r.contains("-> 0x1001234: mapped"), "{r}");
        // A corrupted gate and a torn-down mapping show.
        let (lo, hi) = gate(0x4141_4141_4141);
        w(0x20_0000 + 0xe * 16, lo);
        w(0x20_0000 + 0xe * 16 + 8, hi);
        w(0x10_5000 + 8 * 8, 0);
        let r = post_mortem(&mem, &map, Some(rip));
        assert!(r.contains("BAD: 0xe: target 0x414141414141"), "{r}");
        assert!(
            r.contains("level 2 entry 8") && r.contains("not present"),
            "{r}"
        );
        w(0x10_3000, 0x30_0000 | 1);
        assert!(post_mortem(&mem, &map, None).contains("WRONG"));
    }

    #[test]
    fn init_state_is_recognised_as_reset() {
        let mut sr = kvm_bindings::kvm_sregs::default();
        sr.cs.base = 0xffff_0000;
        let r = kvm_regs {
            rip: 0xfff0,
            ..Default::default()
        };
        assert!(looks_reset(&r, &sr));
        sr.cr0 = X86_CR0_PG | X86_CR0_PE;
        assert!(!looks_reset(&r, &sr), "paging on: not the INIT state");
    }

    #[test]
    fn gdt_segments_decode_to_flat_long_mode() {
        let cs = segment_from_gdt(BOOT_GDT[1], 1);
        assert_eq!(
            (cs.selector, cs.l, cs.present, cs.limit),
            (8, 1, 1, 0xffff_ffff)
        );
        let ds = segment_from_gdt(BOOT_GDT[2], 2);
        assert_eq!((ds.selector, ds.db, ds.type_), (16, 1, 3));
        let null = segment_from_gdt(BOOT_GDT[0], 0);
        assert_eq!(null.unusable, 1);
    }
}
