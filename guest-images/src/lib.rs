//! Builds and caches guest images (kernel + initramfs + IOMMU test payload) from Debian packages.
//!
//! - [`manifest`]: the guest kernels (`manifest.toml`);
//! - [`resolve`]: which package versions a guest is built from (lock, record, newest);
//! - [`apt`]: a private apt configuration under the cache folder, resolution and download;
//! - [`deb`]: unpacking packages, depmod;
//! - [`modules`]: module closure from modules.dep;
//! - [`cpio`] and [`initramfs`]: reproducible newc archives, gzip-compressed;
//! - [`payload`]: the GPL-2.0 test payload (kernel module, static programs, /init) and its build;
//! - [`cache`] and [`lockfile`]: the cache folder, build locks and the lock file of each image;
//! - [`image`]: building Debian guests and guests from a user's kernel tree;
//! - [`runner`]: the nested runner's L1 image.
#![deny(missing_docs)]

pub mod apt;
pub mod cache;
pub mod cpio;
pub mod deb;
pub mod error;
pub mod image;
pub mod initramfs;
pub mod lockfile;
pub mod manifest;
pub mod modules;
pub mod payload;
pub mod progress;
pub mod resolve;
pub mod runner;

pub use error::{Error, Result};
