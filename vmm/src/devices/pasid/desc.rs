//! Descriptors (64 bytes) and completion records (32 bytes).

use super::regs::MAX_LEN;

/// Size of a descriptor.
pub const DESC_SIZE: u64 = 64;
/// Size of a completion record.
pub const COMPLETION_SIZE: usize = 32;

/// Descriptor flag: raise the queue's vector on completion.
pub const FLAG_IRQ: u8 = 1 << 0;
/// Descriptor flag: TRANSLATE_ACCESS writes instead of reading.
pub const FLAG_WRITE: u8 = 1 << 1;
/// Descriptor flags that are defined.
const FLAGS_DEFINED: u8 = FLAG_IRQ | FLAG_WRITE;

/// Completion status codes.
pub mod status {
    /// Success.
    pub const SUCCESS: u8 = 1;
    /// COMPARE found a difference.
    pub const COMPARE_MISMATCH: u8 = 2;
    /// A DMA faulted (see fault address).
    pub const TRANSLATION_FAULT: u8 = 0x10;
    /// A page request got a failure response.
    pub const PAGE_REQUEST_FAILED: u8 = 0x11;
    /// The descriptor was malformed.
    pub const BAD_DESCRIPTOR: u8 = 0x20;
}

/// Operation of a descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Nothing (still writes a completion record).
    Nop,
    /// Copy `len` bytes from `src` to `dst`.
    Copy,
    /// Fill `len` bytes at `dst` with the 8-byte pattern.
    Fill,
    /// Compare `len` bytes at `src` and `dst`.
    Compare,
    /// ATS translation request for `src`, then a translated 8-byte read
    /// (stored at `dst` through untranslated DMA) or write of `pattern`.
    TranslateAccess,
}

/// A decoded, validated descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Descriptor {
    /// Operation.
    pub op: Op,
    /// Flags.
    pub flags: u8,
    /// Length in bytes.
    pub len: u32,
    /// Source IOVA.
    pub src: u64,
    /// Destination IOVA.
    pub dst: u64,
    /// Fill pattern / value to write.
    pub pattern: u64,
    /// Completion record IOVA (0: none).
    pub completion: u64,
}

fn word(raw: &[u8; 64], off: usize) -> u64 {
    let mut b = [0u8; 8];
    if let Some(s) = raw.get(off..off.saturating_add(8)) {
        b.copy_from_slice(s);
    }
    u64::from_le_bytes(b)
}

impl Descriptor {
    /// Decode raw bytes. `Err` carries the completion address (if it could be
    /// read) so that a BAD_DESCRIPTOR record can still be written.
    pub fn decode(raw: &[u8; 64]) -> Result<Descriptor, u64> {
        let w0 = word(raw, 0);
        let completion = word(raw, 0x20);
        let opcode = (w0 & 0xff) as u8;
        let flags = ((w0 >> 8) & 0xff) as u8;
        let len = (w0 >> 32) as u32;
        let op = match opcode {
            0 => Op::Nop,
            1 => Op::Copy,
            2 => Op::Fill,
            3 => Op::Compare,
            4 => Op::TranslateAccess,
            _ => return Err(completion),
        };
        let reserved_mid = (w0 >> 16) & 0xffff;
        let reserved_tail = word(raw, 0x28) | word(raw, 0x30) | word(raw, 0x38);
        if flags & !FLAGS_DEFINED != 0
            || reserved_mid != 0
            || reserved_tail != 0
            || len > MAX_LEN
            || !completion.is_multiple_of(32)
        {
            return Err(completion);
        }
        Ok(Descriptor {
            op,
            flags,
            len,
            src: word(raw, 0x08),
            dst: word(raw, 0x10),
            pattern: word(raw, 0x18),
            completion,
        })
    }

    /// Encode (used by tests and drivers written in Rust).
    pub fn encode(&self) -> [u8; 64] {
        let opcode: u64 = match self.op {
            Op::Nop => 0,
            Op::Copy => 1,
            Op::Fill => 2,
            Op::Compare => 3,
            Op::TranslateAccess => 4,
        };
        let w0 = opcode | (u64::from(self.flags) << 8) | (u64::from(self.len) << 32);
        let mut out = [0u8; 64];
        for (i, w) in [w0, self.src, self.dst, self.pattern, self.completion]
            .iter()
            .enumerate()
        {
            let off = i.saturating_mul(8);
            if let Some(s) = out.get_mut(off..off.saturating_add(8)) {
                s.copy_from_slice(&w.to_le_bytes());
            }
        }
        out
    }
}

/// A completion record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Completion {
    /// Status code ([`status`]).
    pub status: u8,
    /// Bytes completed.
    pub bytes: u32,
    /// Faulting IOVA (0 if none).
    pub fault_addr: u64,
    /// COMPARE: offset of the first mismatch; TRANSLATE_ACCESS: translated
    /// address.
    pub result: u64,
}

impl Completion {
    /// The 32 bytes written to memory.
    pub fn encode(&self) -> [u8; COMPLETION_SIZE] {
        let w0 = u64::from(self.status) | (u64::from(self.bytes) << 32);
        let mut out = [0u8; COMPLETION_SIZE];
        for (i, w) in [w0, self.fault_addr, self.result].iter().enumerate() {
            let off = i.saturating_mul(8);
            if let Some(s) = out.get_mut(off..off.saturating_add(8)) {
                s.copy_from_slice(&w.to_le_bytes());
            }
        }
        out
    }

    /// Decode 32 bytes.
    pub fn decode(raw: &[u8; COMPLETION_SIZE]) -> Completion {
        let mut w = [0u64; 3];
        for (i, x) in w.iter_mut().enumerate() {
            let off = i.saturating_mul(8);
            let mut b = [0u8; 8];
            if let Some(s) = raw.get(off..off.saturating_add(8)) {
                b.copy_from_slice(s);
            }
            *x = u64::from_le_bytes(b);
        }
        let [w0, fault_addr, result] = w;
        Completion {
            status: (w0 & 0xff) as u8,
            bytes: (w0 >> 32) as u32,
            fault_addr,
            result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_roundtrip_decodes_fields() {
        let d = Descriptor {
            op: Op::Fill,
            flags: FLAG_IRQ,
            len: 4096,
            src: 0,
            dst: 0x1000,
            pattern: 0xaabb,
            completion: 0x2020,
        };
        assert_eq!(Descriptor::decode(&d.encode()), Ok(d));
    }

    #[test]
    fn descriptor_reserved_or_oversized_is_refused() {
        let d = Descriptor {
            op: Op::Copy,
            flags: 0,
            len: 8,
            src: 0,
            dst: 0,
            pattern: 0,
            completion: 0x40,
        };
        let mut raw = d.encode();
        raw[0x30] = 1;
        assert_eq!(Descriptor::decode(&raw), Err(0x40));
        let mut big = d;
        big.len = MAX_LEN + 1;
        assert!(Descriptor::decode(&big.encode()).is_err());
        let mut raw = d.encode();
        raw[0] = 9;
        assert!(Descriptor::decode(&raw).is_err(), "unknown opcode");
        let mut mis = d;
        mis.completion = 0x44;
        assert!(
            Descriptor::decode(&mis.encode()).is_err(),
            "unaligned record"
        );
    }
}
