//! The triple-fault post-mortem: everything the VMM can say about a vCPU that shut down.
//!
//! Runs only after a triple fault ([`shutdown_report`], called by the vCPU that got
//! KVM_EXIT_SHUTDOWN) or when a caller asks ([`register_dump`] for a failed entry or a KVM
//! internal error); before the vCPUs start, [`prepare_shutdown_report`] only keeps a handle
//! on guest memory and the options, and turns on the host's KVM trace when
//! [`Options::kvm_trace`] asks for it. The guest's symbols ([`Options::system_map`]) are read
//! when a report is written, not before.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use kvm_bindings::{KVM_VCPUEVENT_VALID_TRIPLE_FAULT, kvm_regs};
use kvm_ioctls::VcpuFd;
use vm_memory::GuestMemoryMmap;

use super::recorder;
use crate::kvm::vcpu::lapic_reg;

/// CR0.PG (Intel SDM Vol. 3A §2.5).
const X86_CR0_PG: u64 = 1 << 31;

/// What the post-mortem may use besides the vCPU (the command line's `--system-map` and
/// `--kvm-trace`, [`crate::cli::Args::diag_options`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// A `System.map` (or `/proc/kallsyms` text) of the guest kernel: RIPs in the shutdown
    /// report get symbol names and guest memory is checked (only with `nokaslr` in the guest).
    pub system_map: Option<PathBuf>,
    /// The host's tracefs directory (usually `/sys/kernel/tracing`, mounted; root): the VMM
    /// turns on KVM's [`KVM_TRACE_EVENTS`] tracepoints when it starts and prints the trace's
    /// last lines with a shutdown report. `kvm_exit` carries the guest RIP at the shutdown
    /// exit, which KVM on AMD erases from the vCPU right after (it INITs the vCPU on a
    /// shutdown intercept).
    pub kvm_trace: Option<PathBuf>,
}

/// A register dump for error messages (general registers, control registers, segments).
pub fn register_dump(vcpu: &VcpuFd) -> String {
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
/// The KVM tracepoints turned on with [`Options::kvm_trace`].
pub const KVM_TRACE_EVENTS: &[&str] = &[
    "kvm_exit",
    "kvm_entry",
    "kvm_inj_virq",
    "kvm_inj_exception",
    "kvm_page_fault",
    "kvm_msi_set_irq",
    "kvm_apic_accept_irq",
];

/// Turn on the KVM tracepoints in the tracefs directory `dir` (needs root; failures are
/// logged and ignored).
pub fn start_kvm_trace(dir: &Path) {
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

/// The last `n` lines of the host's KVM trace in `dir`, tracing stopped first so the lines
/// around the failure stay.
fn kvm_trace_tail(dir: &Path, n: usize) -> Option<String> {
    let _ = std::fs::write(dir.join("tracing_on"), "0");
    let text = std::fs::read_to_string(dir.join("trace")).ok()?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    let skip = lines.len().saturating_sub(n);
    Some(lines.get(skip..).unwrap_or_default().join("\n"))
}

/// What the shutdown report may read besides the vCPU: guest memory (which
/// survives the shutdown), whether the guest kernel is at its link address
/// (`nokaslr`), so System.map addresses are its addresses, and the options.
struct PostMortem {
    mem: GuestMemoryMmap,
    nokaslr: bool,
    options: Options,
}

fn post_mortem_context() -> &'static OnceLock<PostMortem> {
    static CTX: OnceLock<PostMortem> = OnceLock::new();
    &CTX
}

/// Set up the shutdown report before the vCPUs run: remember guest memory, the
/// kernel command line (for the post-mortem check of the guest kernel's IDT and
/// page tables) and `options`, and turn on the host's KVM trace when
/// [`Options::kvm_trace`] asks for it. Nothing else of the post-mortem runs before
/// a triple fault.
pub fn prepare_shutdown_report(mem: &GuestMemoryMmap, cmdline: &str, options: &Options) {
    if let Some(dir) = &options.kvm_trace {
        start_kvm_trace(dir);
    }
    let _ = post_mortem_context().set(PostMortem {
        mem: mem.clone(),
        nokaslr: cmdline.split_whitespace().any(|w| w == "nokaslr"),
        options: options.clone(),
    });
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
        // The table address comes from guest memory: wrap rather than panic (the read of a
        // wrapped address then fails as "not RAM").
        let at = table.wrapping_add(idx << 3);
        let e: u64 = mem
            .read_obj(GuestAddress(at))
            .map_err(|_| format!("level {level} entry at {at:#x} is not RAM"))?;
        if e & 1 == 0 {
            return Err(format!(
                "level {level} entry {idx} at {at:#x} not present ({e:#x})"
            ));
        }
        if (level == 3 || level == 2) && e & 0x80 != 0 {
            let offset_mask = (1u64 << shift).wrapping_sub(1); // shift <= 39: never wraps
            return Ok((e & ADDR & !offset_mask) | (va & offset_mask));
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
    let mut in_init = 0u32;
    let mut bad = Vec::new();
    let mut present = 0u32;
    for v in 0..256u64 {
        // The IDT base is the guest's: wrapping addresses fail the reads below as "not RAM".
        let at = GuestAddress(phys(idt).wrapping_add(v << 4));
        let (Ok(lo), Ok(hi)) = (
            mem.read_obj::<u64>(at),
            mem.read_obj::<u64>(GuestAddress(at.0.wrapping_add(8))),
        ) else {
            bad.push(format!("{v:#x}: not RAM"));
            continue;
        };
        if lo & (1 << 47) == 0 {
            continue;
        }
        present = present.saturating_add(1); // at most 256
        let target = (lo & 0xffff) | ((lo >> 32) & 0xffff_0000) | ((hi & 0xffff_ffff) << 32);
        let kind = (lo >> 40) & 0xf;
        let cs = (lo >> 16) & 0xffff;
        let init = init_text.is_some_and(|(a, b)| (a..b).contains(&target));
        if init {
            in_init = in_init.saturating_add(1); // at most 256
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
    let off = addr.checked_sub(a)?; // a <= addr by the search above
    (off < (1 << 20)).then(|| format!("{name}+{off:#x}"))
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
    let ctx = post_mortem_context().get();
    // Read once, here: the symbols are only needed after a triple fault.
    let map = ctx
        .and_then(|c| c.options.system_map.as_ref())
        .and_then(|p| std::fs::read_to_string(p).ok());
    let symbol_of = |addr: u64| map.as_deref().and_then(|m| symbolize(m, addr));
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
                 (--kvm-trace /sys/kernel/tracing)."
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
    s.push_str(&register_dump(vcpu));
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
                    // IRR/ISR: eight 32-bit registers 16 bytes apart; the highest set bit.
                    let w = lapic_reg(&l.regs, base.saturating_add(i << 4));
                    let top = 31usize.saturating_sub(usize::try_from(w.leading_zeros()).ok()?);
                    (w != 0).then_some((i << 5) | top)
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
    let trace = ctx
        .and_then(|c| c.options.kvm_trace.as_deref())
        .and_then(|d| kvm_trace_tail(d, REPORT_TRACE_LINES));
    if let Some(t) = trace {
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
    match (ctx, map.as_deref()) {
        (Some(ctx), Some(map)) if ctx.nokaslr => {
            s.push_str(&post_mortem(&ctx.mem, map, post_mortem_rip))
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
        sr.cr0 = X86_CR0_PG | 1;
        assert!(!looks_reset(&r, &sr), "paging on: not the INIT state");
    }
}
