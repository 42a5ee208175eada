//! Builds and caches guest images (kernel + initramfs + IOMMU test payload) from Debian packages.
#![deny(missing_docs)]
pub mod runner;
