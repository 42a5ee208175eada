//! Guest structures: root and context entries, PASID directory and table
//! entries, invalidation descriptors. Each raw entry is decoded once into a
//! validated struct; reserved bits and bad encodings become the spec's
//! fault reason right there (STYLE rule 3).
//!
//! Entries are read as little-endian 64-bit words
//! ([`iommu_emulator::mem::read_words`]), so no `#[repr(C)]` layout is
//! needed: each struct documents its bit positions with the spec section.

pub mod context;
pub mod inv_desc;
pub mod pasid;
pub mod root;

/// Bits 63:12 of a word: a 4 KiB-aligned pointer.
pub const PTR_MASK: u64 = !0xfff;

/// Mask of bits `[lo, hi)` (empty when `lo >= hi`).
pub const fn bits(lo: u32, hi: u32) -> u64 {
    if lo >= hi || lo >= 64 {
        return 0;
    }
    let upper = if hi >= 64 {
        u64::MAX
    } else {
        (1u64 << hi).wrapping_sub(1)
    };
    upper & !((1u64 << lo).wrapping_sub(1))
}

/// Pointer bits at or above the host address width `haw` (and below 64)
/// are reserved in table pointers.
pub const fn ptr_rsvd(haw: u8) -> u64 {
    bits(haw as u32, 64)
}
