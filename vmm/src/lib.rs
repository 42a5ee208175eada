//! `iommu-vmm`: a KVM VMM that boots Linux guests against emulated IOMMUs.
//!
//! Layout: [`layout`] (guest-physical map, e820), [`boot`] (kernel, initrd,
//! boot parameters), [`acpi`] (tables), [`pci`] (root complex, config space,
//! MSI-X), [`virtio`] (virtio-pci transport and virtio-blk), [`devices`]
//! (serial, i8042, ACPI PM, debug-exit), [`iommu`] (wiring of the IOMMU
//! models), [`kvm`] (VM, vCPUs, interrupts: the only place that touches
//! KVM), [`event_loop`] (the only place that knows epoll), [`vmm`] (puts it
//! all together), [`cli`] and [`exit`]; [`diag`] (flight recorder and
//! triple-fault post-mortem, off the hot paths).
//!
//! Unsafe code lives only in [`kvm`] and carries `// SAFETY:` notes.
#![deny(missing_docs)]

pub mod acpi;
pub mod boot;
pub mod cli;
pub mod devices;
pub mod diag;
pub mod error;
pub mod event_loop;
pub mod exit;
pub mod iommu;
pub mod kvm;
pub mod layout;
pub mod nested;
pub mod pci;
pub mod virtio;
pub mod vmm;
