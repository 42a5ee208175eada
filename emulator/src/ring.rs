//! A queue ring with wrap bits: the producer/consumer form of the SMMU's
//! command, event and PRI queues (IHI 0070 3.5.1: an index of `log2size`
//! bits plus one wrap bit) and of VT-d's invalidation and page-request
//! queues (which use plain offsets: a ring without wrap bit, see
//! [`Ring::offset_index`]).

/// Geometry of a ring of `1 << log2size` entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ring {
    log2size: u8,
}

impl Ring {
    /// Largest ring accepted (2^19 entries: the SMMU architectural maximum
    /// for CMDQ/EVTQ/PRIQ `LOG2SIZE` is 19).
    pub const MAX_LOG2: u8 = 19;

    /// A ring of `1 << log2size` entries; the size is clamped to
    /// [`Ring::MAX_LOG2`] (IHI 0070 6.3.26: larger values behave as the
    /// maximum).
    pub const fn new(log2size: u8) -> Self {
        Ring {
            log2size: if log2size > Self::MAX_LOG2 {
                Self::MAX_LOG2
            } else {
                log2size
            },
        }
    }

    /// log2 of the entry count.
    pub const fn log2size(self) -> u8 {
        self.log2size
    }

    /// Entry count.
    pub const fn len(self) -> u32 {
        1u32 << self.log2size
    }

    /// Always false: a ring has at least one entry.
    pub const fn is_empty(self) -> bool {
        false
    }

    const fn index_mask(self) -> u32 {
        self.len().wrapping_sub(1)
    }

    /// Mask of the meaningful pointer bits (index plus wrap).
    pub const fn ptr_mask(self) -> u32 {
        (self.len() << 1).wrapping_sub(1)
    }

    /// The index part of a pointer.
    pub const fn index(self, ptr: u32) -> u32 {
        ptr & self.index_mask()
    }

    /// The wrap bit of a pointer.
    pub const fn wrap(self, ptr: u32) -> bool {
        ptr & self.len() != 0
    }

    /// True when producer and consumer are equal, wrap bits included.
    pub const fn queue_empty(self, prod: u32, cons: u32) -> bool {
        (prod & self.ptr_mask()) == (cons & self.ptr_mask())
    }

    /// True when indexes are equal and wrap bits differ.
    pub const fn queue_full(self, prod: u32, cons: u32) -> bool {
        self.index(prod) == self.index(cons) && self.wrap(prod) != self.wrap(cons)
    }

    /// Number of entries between consumer and producer.
    pub const fn occupancy(self, prod: u32, cons: u32) -> u32 {
        let p = prod & self.ptr_mask();
        let c = cons & self.ptr_mask();
        p.wrapping_sub(c) & self.ptr_mask()
    }

    /// The pointer after `ptr` (index + 1, toggling the wrap bit on wrap).
    pub const fn next(self, ptr: u32) -> u32 {
        (ptr & self.ptr_mask()).wrapping_add(1) & self.ptr_mask()
    }

    /// For queues addressed by byte offsets (VT-d IQH/IQT, PQH/PQT): the
    /// entry index of `offset` with `entry_size`-byte entries, or `None` when
    /// the offset is misaligned or beyond the ring.
    pub fn offset_index(self, offset: u64, entry_size: u64) -> Option<u32> {
        if entry_size == 0 || !offset.is_multiple_of(entry_size) {
            return None;
        }
        let idx = u32::try_from(offset.checked_div(entry_size)?).ok()?;
        (idx < self.len()).then_some(idx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_empty_when_pointers_equal() {
        let r = Ring::new(2);
        assert!(r.queue_empty(0, 0));
        assert!(!r.queue_full(0, 0));
        assert!(r.queue_empty(5, 5));
    }

    #[test]
    fn ring_full_when_index_equal_and_wrap_differs() {
        let r = Ring::new(2); // 4 entries, ptr mask 0b111
        assert!(r.queue_full(4, 0));
        assert!(r.queue_full(0, 4));
        assert!(!r.queue_full(3, 0));
        assert_eq!(r.occupancy(4, 0), 4);
        assert_eq!(r.occupancy(1, 6), 3);
    }

    #[test]
    fn ring_next_toggles_wrap_at_end() {
        let r = Ring::new(2);
        assert_eq!(r.next(3), 4);
        assert!(r.wrap(4));
        assert_eq!(r.index(4), 0);
        assert_eq!(r.next(7), 0);
    }

    #[test]
    fn ring_size_is_clamped() {
        assert_eq!(Ring::new(40).log2size(), Ring::MAX_LOG2);
    }

    #[test]
    fn ring_offset_index_rejects_misaligned_and_out_of_range() {
        let r = Ring::new(8);
        assert_eq!(r.offset_index(32, 16), Some(2));
        assert_eq!(r.offset_index(33, 16), None);
        assert_eq!(r.offset_index(256 * 16, 16), None);
        assert_eq!(r.offset_index(16, 0), None);
    }
}
