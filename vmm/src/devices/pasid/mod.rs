//! PASID-capable DMA test device ("mdev parent"), as pure logic.
//!
//! A PCIe function with PASID, ATS and PRI whose BAR0 exposes
//! [`regs::NUM_WQ`] independent work queues; each queue tags its DMA with
//! its own PASID, so each can be wrapped by a mediated device and given its
//! own IOMMU domain. The register layout is documented for guest driver
//! writers in `vmm/docs/pasid-device.md`.
//!
//! - [`PasidDevice`]: registers, work queues and descriptor execution. All
//!   DMA goes through an [`iommu_emulator::DeviceAddressSpace`] (untranslated
//!   requests, ATS translation requests and translated requests) tagged
//!   with the queue's PASID; data moves at the addresses the IOMMU returns.
//! - [`atc::Atc`]: the address translation cache and the page-response
//!   inbox; implements the endpoint port of `iommu_emulator::endpoint` (either IOMMU model).
//! - Interrupts leave as a bit mask of MSI-X vectors returned by each
//!   register access, so the device needs no interrupt object; page requests
//!   leave through [`PageRequestPort`].
//!
//! Execution is synchronous: a TAIL write runs the queue from HEAD to TAIL
//! inside the MMIO exit, bounded by the ring size and
//! [`regs::DOORBELL_BYTE_BUDGET`].
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

pub mod atc;
pub mod desc;
mod device;
pub mod pci;
pub mod regs;

#[cfg(test)]
mod tests;

pub use device::{PageRequest, PageRequestPort, PasidDevice, PasidDeviceStats, PcieState, Vectors};
