//! vCPU setup (64-bit boot state for the BSP; CPUID, MSRs, LAPIC for all)
//! and the run loop that routes exits to the buses.

use std::sync::Arc;

use kvm_bindings::{
    KVM_CAP_X86_TRIPLE_FAULT_EVENT, KVM_MAX_CPUID_ENTRIES, Msrs, kvm_enable_cap, kvm_fpu,
    kvm_msr_entry, kvm_regs, kvm_segment,
};
use kvm_ioctls::{Cap, Kvm, VcpuExit, VcpuFd, VmFd};

use crate::arch::x86_64::boot::BOOT_GDT;
use crate::arch::x86_64::cpuid;
use crate::arch::x86_64::ioapic::Ioapic;
use crate::arch::x86_64::layout;
use crate::devices::Bus;
use crate::diag::postmortem::{register_dump, shutdown_report};
use crate::diag::recorder::{self, Event};
use crate::error::{Error, Result};
use crate::exit::{ExitReason, ExitSink};
use crate::pci::config::low_u32;

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
    let raw_limit = low_u32((entry & 0xffff) | ((entry >> 32) & 0xf_0000));
    let present = ((entry >> 47) & 1) as u8;
    kvm_segment {
        base: ((entry >> 16) & 0xff_ffff) | (((entry >> 56) & 0xff) << 24),
        limit: if g == 1 {
            (raw_limit << 12) | 0xfff
        } else {
            raw_limit
        },
        // index is a GDT slot (< 8192), so the selector fits.
        selector: u16::from(index).saturating_mul(8),
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

/// LAPIC register at `off` of a KVM_GET_LAPIC page.
/// Offsets are the VMM's register constants; bytes past the page read as zero.
pub(crate) fn lapic_reg(regs: &[std::os::raw::c_char; 1024], off: usize) -> u32 {
    let b = |i: usize| {
        off.checked_add(i)
            .and_then(|o| regs.get(o))
            .map_or(0, |&c| c as u8)
    };
    u32::from_le_bytes([b(0), b(1), b(2), b(3)])
}

/// Bytes past the page are dropped.
fn set_lapic_reg(regs: &mut [std::os::raw::c_char; 1024], off: usize, v: u32) {
    let dst = regs.iter_mut().skip(off);
    for (r, b) in dst.zip(v.to_le_bytes()) {
        *r = b as std::os::raw::c_char;
    }
}

/// Create vCPU `id` of `count` with CPUID, MSRs and LAPIC set up; `kvm_pv_clear` bits of
/// KVM's paravirtual feature leaf are cleared (`--kvm-pv-clear`, 0 for none).
pub fn create(kvm: &Kvm, vm: &VmFd, id: u8, count: u8, kvm_pv_clear: u32) -> Result<VcpuFd> {
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
    if kvm_pv_clear != 0 {
        cpuid::clear_kvm_features(cpuid.as_mut_slice(), kvm_pv_clear);
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
    // The limit is the table's size in bytes less one (SDM Vol. 3A §3.5.1).
    sregs.gdt.limit =
        u16::try_from(std::mem::size_of_val(&BOOT_GDT)).map_or(u16::MAX, |n| n.saturating_sub(1));
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

/// An exit's access length for the flight recorder (KVM's accesses are at most 8 bytes).
fn access_len(data: &[u8]) -> u8 {
    u8::try_from(data.len()).unwrap_or(u8::MAX)
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
                    len: access_len(data),
                    data: recorder::value(data),
                });
            }
            Ok(VcpuExit::IoOut(port, data)) => {
                recorder::record(Event::Pio {
                    vcpu: id,
                    port,
                    write: true,
                    len: access_len(data),
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
                    len: access_len(data),
                    data: recorder::value(data),
                });
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                recorder::record(Event::Mmio {
                    vcpu: id,
                    addr,
                    write: true,
                    len: access_len(data),
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
                    register_dump(&vcpu)
                )));
                return;
            }
            Ok(VcpuExit::InternalError) => {
                exit.request_exit(ExitReason::Error(format!(
                    "vCPU {id}: KVM internal error (KVM could not emulate an instruction)\n{}",
                    register_dump(&vcpu)
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
