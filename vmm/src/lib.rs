//! `iommu_vmm` (package `iommu-vmm-lib`): a KVM VMM that boots Linux guests against emulated
//! IOMMUs, as a library.
//!
//! The `iommu-vmm` command is its own package (vmm/cli/): it turns `--guest NAME` into a kernel,
//! initramfs and defaults with `guest-images`, and runs itself inside an L1 machine through the
//! nested runner (`iommu-nested`, vmm/nested/) where the host's KVM cannot boot stock kernels.
//! This library depends on neither: [`vmm::run`] and [`vmm::preflight`] take resolved
//! arguments and refuse `--guest`.
//!
//! Layout: [`arch`] (what differs per guest architecture; today [`arch::x86_64`]: layout and
//! e820, boot protocol, ACPI, CPUID, IOAPIC, ACPI PM, CF8/CFC, the VT-d unit, the platform's
//! legacy devices), [`device_manager`] (the one place where devices are created and given
//! their requester ID, bus ranges, interrupts and IOMMU address space), [`pci`] (root complex,
//! config space, MSI, MSI-X), [`virtio`] (virtio-pci transport and virtio-blk), [`devices`]
//! (buses, serial, console, debug-exit, the PASID test device), [`iommu`] (wiring of the
//! IOMMU models), [`kvm`] (VM, vCPUs, interrupts: the only place that talks to KVM),
//! [`event_loop`] (the only place that knows epoll), [`vmm`] (the run as a short sequence of
//! steps), [`cli`], [`exit`], [`fuzzing`] (the device-layer fuzzer's interpreter) and [`diag`]
//! (flight recorder and triple-fault post-mortem, off the hot paths).
//!
//! Unsafe code carries `// SAFETY:` notes; it is in [`kvm`] (KVM ioctls, guest memory for
//! vCPU state) and in [`vmm`] (the built-in disk's memfd).
#![deny(missing_docs)]
// STYLE rule 8: never panic on guest input. Host-only setup code may opt out per item with
// `#[allow(clippy::...)]` and a "host-only: ..." reason beside it; guest-driven paths may not.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic,
        clippy::arithmetic_side_effects,
        clippy::cast_possible_truncation
    )
)]

pub mod arch;
pub mod cli;
pub mod device_manager;
pub mod devices;
pub mod diag;
pub mod error;
pub mod event_loop;
pub mod exit;
pub mod fuzzing;
pub mod iommu;
pub mod kvm;
pub mod pci;
pub mod virtio;
pub mod vmm;
