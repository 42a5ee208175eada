//! CPUID for the guest: KVM's supported set, with the topology and the
//! hypervisor bit filled in per vCPU. Works for Intel and AMD hosts: only
//! leaves both understand are touched, and vendor-specific ones are patched
//! only when present.

use kvm_bindings::kvm_cpuid_entry2;

/// Leaf 1 ECX: hypervisor present.
const ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 1 ECX: TSC deadline timer (KVM emulates it with its in-kernel LAPIC).
const ECX_TSC_DEADLINE: u32 = 1 << 24;
/// Leaf 1 ECX: x2APIC. Taken from KVM's supported set (KVM emulates x2APIC
/// in its local APICs, split irqchip included) and never cleared: Linux
/// enables x2APIC mode with interrupt remapping through EIM (VT-d 5.1.7).
pub const ECX_X2APIC: u32 = 1 << 21;
/// Leaf 1 EDX: hyper-threading / multi-core topology valid.
const EDX_HTT: u32 = 1 << 28;

/// Patch `entries` for vCPU `id` of `count`.
pub fn patch(entries: &mut [kvm_cpuid_entry2], id: u8, count: u8, tsc_deadline: bool) {
    for e in entries.iter_mut() {
        match e.function {
            0x1 => {
                // EBX[31:24] initial APIC ID, EBX[23:16] logical processors.
                e.ebx = (e.ebx & 0x0000_ffff) | (u32::from(id) << 24) | (u32::from(count) << 16);
                e.ecx |= ECX_HYPERVISOR;
                if tsc_deadline {
                    e.ecx |= ECX_TSC_DEADLINE;
                }
                if count > 1 {
                    e.edx |= EDX_HTT;
                } else {
                    e.edx &= !EDX_HTT;
                }
            }
            0xb | 0x1f => {
                // Extended topology: one thread per core, `count` cores.
                e.edx = u32::from(id);
                // leading_zeros() <= 32, so the subtraction does not wrap.
                let shift =
                    u32::BITS.saturating_sub(u32::from(count.saturating_sub(1)).leading_zeros());
                match e.index {
                    0 => {
                        e.eax = 0;
                        e.ebx = 1;
                        e.ecx = (1 << 8) | e.index;
                    }
                    1 => {
                        e.eax = shift;
                        e.ebx = u32::from(count);
                        e.ecx = (2 << 8) | e.index;
                    }
                    _ => {
                        e.eax = 0;
                        e.ebx = 0;
                        e.ecx = e.index;
                    }
                }
            }
            0x4 => {
                // Intel deterministic cache parameters: EAX[31:26] cores - 1.
                e.eax = (e.eax & 0x03ff_ffff) | (u32::from(count.saturating_sub(1)) << 26);
            }
            0x8000_0008 => {
                // AMD: ECX[7:0] number of threads - 1.
                e.ecx = (e.ecx & !0xff) | u32::from(count.saturating_sub(1));
            }
            _ => {}
        }
    }
}

/// KVM's paravirtual feature leaf (EAX: `KVM_FEATURE_*` bits).
pub const KVM_CPUID_FEATURES: u32 = 0x4000_0001;

/// Clears `bits` of the KVM paravirtual feature leaf (EAX of 0x4000_0001), for experiments
/// with the guest's PV paths (`IOMMU_VMM_KVM_PV_CLEAR`, hex, read by the vCPU setup). Bit 4
/// async page faults, 5 steal time, 6 PV EOI, 7 PV unhalt, 9 PV TLB flush, 11 PV IPI, 13 PV
/// sched yield, 14 async-PF interrupt: Linux's `arch/x86/include/uapi/asm/kvm_para.h`.
pub fn clear_kvm_features(entries: &mut [kvm_cpuid_entry2], bits: u32) {
    for e in entries.iter_mut() {
        if e.function == KVM_CPUID_FEATURES {
            e.eax &= !bits;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ebx: 0xdead_beef,
            ..Default::default()
        }
    }

    #[test]
    fn cpuid_kvm_feature_leaf_clears_only_the_given_bits() {
        let mut e = [entry(KVM_CPUID_FEATURES, 0), entry(0x1, 0)];
        e[0].eax = 0x0100_7ef9;
        e[1].eax = 0x7ef0;
        clear_kvm_features(&mut e, 0x7ef0);
        assert_eq!(e[0].eax, 0x0100_0009);
        assert_eq!(e[1].eax, 0x7ef0, "other leaves untouched");
    }

    #[test]
    fn cpuid_leaf1_has_apic_id_and_hypervisor_bit() {
        let mut e = [entry(1, 0)];
        patch(&mut e, 3, 4, true);
        assert_eq!(e[0].ebx >> 24, 3);
        assert_eq!((e[0].ebx >> 16) & 0xff, 4);
        assert_eq!(e[0].ebx & 0xffff, 0xbeef, "brand/clflush bits kept");
        assert_ne!(e[0].ecx & ECX_HYPERVISOR, 0);
        assert_ne!(e[0].ecx & ECX_TSC_DEADLINE, 0);
        assert_ne!(e[0].edx & EDX_HTT, 0);
    }

    #[test]
    fn cpuid_leaf1_keeps_kvms_x2apic_bit() {
        let mut e = [kvm_cpuid_entry2 {
            function: 1,
            ecx: ECX_X2APIC,
            ..Default::default()
        }];
        patch(&mut e, 0, 2, false);
        assert_ne!(e[0].ecx & ECX_X2APIC, 0);
        let mut none = [entry(1, 0)];
        patch(&mut none, 0, 2, false);
        assert_eq!(
            none[0].ecx & ECX_X2APIC,
            0,
            "not invented when KVM lacks it"
        );
    }

    #[test]
    fn cpuid_extended_topology_reports_x2apic_id_and_core_count() {
        let mut e = [entry(0xb, 0), entry(0xb, 1)];
        patch(&mut e, 2, 3, false);
        assert_eq!(e[0].edx, 2);
        assert_eq!(e[1].ebx, 3);
        assert_eq!(e[1].eax, 2, "3 cores need 2 bits");
    }
}
