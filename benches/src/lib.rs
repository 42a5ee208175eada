//! Benchmarks of the IOMMU models: criterion benches (`benches/`), the
//! cycle-model sweep with its synthetic trace generator, and (later) the
//! whole-VM comparison driver.
#![deny(missing_docs)]

pub mod sweep;
pub mod synth;
