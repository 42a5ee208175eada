//! BAR0 register offsets and bit fields of the PASID test device.
//!
//! The layout is the contract in `vmm/docs/pasid-device.md`; every constant
//! here has a row there.

/// Number of work queues.
pub const NUM_WQ: usize = 8;
/// MSI-X vectors: one per work queue plus the error vector.
pub const NUM_VECTORS: u16 = 9;
/// The error vector (after the per-queue vectors).
pub const ERROR_VECTOR: u16 = 8;
/// BAR0 size.
pub const BAR0_SIZE: u64 = 0x1_0000;
/// MSI-X table offset in BAR0.
pub const MSIX_TABLE: u64 = 0x8000;
/// MSI-X PBA offset in BAR0.
pub const MSIX_PBA: u64 = 0x9000;

/// VERSION (RO u32).
pub const VERSION: u64 = 0x00;
/// NUM_WQ (RO u32).
pub const NUM_WQ_REG: u64 = 0x04;
/// CAPS (RO u32).
pub const CAPS: u64 = 0x08;
/// GCTL (RW u32).
pub const GCTL: u64 = 0x0c;
/// GSTS (RO u32).
pub const GSTS: u64 = 0x10;
/// ERR_STATUS (RW1C u32).
pub const ERR_STATUS: u64 = 0x14;
/// ATC_INVALIDATIONS (RO u32).
pub const ATC_INVALIDATIONS: u64 = 0x18;
/// PAGE_REQUESTS (RO u32).
pub const PAGE_REQUESTS: u64 = 0x1c;
/// PAGE_RESPONSES (RO u32): page group responses received.
pub const PAGE_RESPONSES: u64 = 0x20;

/// Value of VERSION: 1.0.
pub const VERSION_VALUE: u32 = 0x0001_0000;
/// CAPS: PASID.
pub const CAPS_PASID: u32 = 1 << 0;
/// CAPS: ATS.
pub const CAPS_ATS: u32 = 1 << 1;
/// CAPS: PRI.
pub const CAPS_PRI: u32 = 1 << 2;
/// CAPS: privileged requests.
pub const CAPS_PRIV: u32 = 1 << 3;
/// CAPS: execute requests.
pub const CAPS_EXEC: u32 = 1 << 4;
/// GCTL.ENABLE.
pub const GCTL_ENABLE: u32 = 1 << 0;
/// GCTL.RESET (write 1).
pub const GCTL_RESET: u32 = 1 << 1;
/// GSTS.ENABLED.
pub const GSTS_ENABLED: u32 = 1 << 0;

/// First work queue's registers.
pub const WQ_BASE: u64 = 0x1000;
/// Stride between work queues.
pub const WQ_STRIDE: u64 = 0x100;

/// WQ_PASID (RW u32).
pub const WQ_PASID: u64 = 0x00;
/// WQ_RING_BASE (RW u64).
pub const WQ_RING_BASE: u64 = 0x08;
/// WQ_RING_SIZE (RW u32).
pub const WQ_RING_SIZE: u64 = 0x10;
/// WQ_HEAD (RO u32).
pub const WQ_HEAD: u64 = 0x14;
/// WQ_TAIL (RW u32, doorbell).
pub const WQ_TAIL: u64 = 0x18;
/// WQ_CTL (RW u32).
pub const WQ_CTL: u64 = 0x1c;
/// WQ_STATUS (RO u32).
pub const WQ_STATUS: u64 = 0x20;
/// WQ_ERROR (RO u32).
pub const WQ_ERROR: u64 = 0x24;
/// WQ_FAULT_ADDR (RO u64).
pub const WQ_FAULT_ADDR: u64 = 0x28;
/// WQ_COMPLETED (RO u32).
pub const WQ_COMPLETED: u64 = 0x30;

/// WQ_PASID: PASID field mask.
pub const WQ_PASID_MASK: u32 = 0xf_ffff;
/// WQ_PASID.PRIV.
pub const WQ_PASID_PRIV: u32 = 1 << 30;
/// WQ_PASID.PASID_EN.
pub const WQ_PASID_EN: u32 = 1 << 31;
/// WQ_CTL.ENABLE.
pub const WQ_CTL_ENABLE: u32 = 1 << 0;
/// WQ_CTL.USE_PRI.
pub const WQ_CTL_USE_PRI: u32 = 1 << 1;
/// WQ_CTL.RESTART (write 1).
pub const WQ_CTL_RESTART: u32 = 1 << 2;
/// WQ_STATUS.ENABLED.
pub const WQ_STS_ENABLED: u32 = 1 << 0;
/// WQ_STATUS.ERROR.
pub const WQ_STS_ERROR: u32 = 1 << 1;
/// WQ_STATUS.WAITING_PAGE_RESPONSE.
pub const WQ_STS_WAITING: u32 = 1 << 2;

/// Largest ring.
pub const MAX_RING_SIZE: u32 = 4096;
/// Largest descriptor length.
pub const MAX_LEN: u32 = 1 << 20;
/// Bytes one doorbell may move before the queue pauses (a later doorbell
/// continues), so one MMIO exit stays bounded.
pub const DOORBELL_BYTE_BUDGET: u64 = 64 << 20;

/// WQ_ERROR codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum WqError {
    /// No error.
    None = 0,
    /// A DMA was refused by the IOMMU (no PRI, or PRI not in use).
    TranslationFault = 1,
    /// A descriptor had a bad opcode, length, alignment or reserved field.
    BadDescriptor = 2,
    /// Bad ring size/base, or PASID/privileged mode used without the PCIe
    /// PASID capability enabling it, or TAIL beyond the ring.
    BadConfig = 3,
    /// Reading the descriptor ring faulted.
    RingReadFault = 4,
    /// Writing the completion record faulted.
    CompletionWriteFault = 5,
    /// A page request was answered with a failure (or could not be sent).
    PageResponseFailure = 6,
}
