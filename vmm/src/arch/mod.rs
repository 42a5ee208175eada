//! What differs between guest architectures. Everything else (PCI, MSI-X, virtio, the PASID
//! test device, the console, the event loop, the device manager) is shared.
//!
//! Today only x86_64 guests exist; an `aarch64` module (GICv3/ITS, PSCI, FDT, the SMMUv3
//! unit) sits beside [`x86_64`] with the same shape.

pub mod x86_64;
