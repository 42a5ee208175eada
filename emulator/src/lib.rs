//! Model-independent core of the IOMMU emulator.
//!
//! This crate holds what both IOMMU models (Intel VT-d in `vtd-model`, Arm
//! SMMUv3 in `smmu-model`) share and nothing that knows about either
//! architecture's registers:
//!
//! - [`types`]: addresses, IDs, DMA requests, translation results and faults;
//! - [`iommu`]: the [`Iommu`](iommu::Iommu) trait and
//!   [`DeviceAddressSpace`](iommu::DeviceAddressSpace), the per-device view
//!   that implements [`vm_memory::Iommu`] so that
//!   `vm_memory::IommuMemory<GuestMemoryMmap, DeviceAddressSpace>` is the
//!   memory object a device uses for DMA;
//! - [`mem`]: the guest-RAM and MSI traits the models reach the outside through;
//! - [`cache`]: the generic set-associative cache engine with statistics;
//! - [`counters`]: thread-owned event counters for hot paths;
//! - [`timing`]: the cycle model (named latencies) and per-source statistics;
//! - [`ring`] and [`regs`]: queue-ring and register-file helpers;
//! - [`walk`]: the page-table walkers (x86 4/5-level, AArch64 VMSAv8-64);
//! - [`trace`]: the binary translation trace, its reader and offline replay;
//! - `testing` (feature `test-utils`): fakes for tests, fuzzers and benches.
//!
//! Time is always an argument or a modelled cycle count, never a wall clock,
//! so that a run is deterministic and can be replayed.
#![deny(missing_docs)]
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

pub mod cache;
pub mod counters;
pub mod endpoint;
pub mod fuzz;
pub mod iommu;
pub mod mem;
pub mod regs;
pub mod ring;
pub mod timing;
pub mod trace;
pub mod types;
pub mod walk;

#[cfg(any(test, feature = "test-utils"))]
pub mod testing;

pub use cache::{Cache, CacheConfig, CacheStats, CacheTag, ReplacementPolicy};
pub use iommu::{DeviceAddressSpace, Iommu};
pub use mem::{GuestRam, MemError, MsiMessage, MsiSink};
pub use timing::{Latencies, TranslationStats};
pub use types::*;
