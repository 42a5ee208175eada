//! Benchmarks of the IOMMU models: criterion benches (`benches/`), the
//! cycle-model sweep with its synthetic trace generator, and the whole-VM
//! comparison against QEMU (`iommu-wholevm`, [`wholevm`]).
#![deny(missing_docs)]

pub mod sweep;
pub mod synth;
pub mod wholevm;
