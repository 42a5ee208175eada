//! Benchmarks of the IOMMU models and the whole-VM benchmark driver.
#![deny(missing_docs)]
