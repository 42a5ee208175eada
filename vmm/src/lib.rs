//! `iommu-vmm`: a KVM VMM that boots Linux guests against emulated IOMMUs.
#![deny(missing_docs)]
pub mod nested;
