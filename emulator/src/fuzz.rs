//! Helpers the fuzz targets and their regression tests share: a little-endian reader over a
//! fuzzer's input ([`ByteCursor`]) and the decoder of inputs saved as hex text
//! ([`decode_hex`]). Small and dependency-free, so the models' and the VMM's fuzz
//! interpreters can use them outside tests.

/// Reads a fuzzer's input front to back; every read returns `None` once the input is used up.
#[derive(Debug, Clone, Copy)]
pub struct ByteCursor<'a>(&'a [u8]);

impl<'a> ByteCursor<'a> {
    /// A cursor at the start of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        ByteCursor(data)
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.0.len()
    }

    /// One byte.
    pub fn u8(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }

    /// A little-endian `u16`.
    pub fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.u8()?, self.u8()?]))
    }

    /// A little-endian `u32`.
    pub fn u32(&mut self) -> Option<u32> {
        Some(u32::from(self.u16()?) | (u32::from(self.u16()?) << 16))
    }

    /// A little-endian `u64`.
    pub fn u64(&mut self) -> Option<u64> {
        Some(u64::from(self.u32()?) | (u64::from(self.u32()?) << 32))
    }

    /// The next `n` bytes, or `None` (and nothing consumed) when fewer are left.
    pub fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let (b, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(b)
    }
}

/// The bytes of an input saved as hex text (whitespace ignored); an error names the input and
/// the first bad byte.
pub fn decode_hex(name: &str, text: &str) -> Result<Vec<u8>, String> {
    let hex: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if hex.is_empty() || !hex.len().is_multiple_of(2) {
        return Err(format!("{name}: not whole hex bytes"));
    }
    hex.chunks(2)
        .enumerate()
        .map(|(i, pair)| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|s| u8::from_str_radix(s, 16).ok())
                .ok_or_else(|| format!("{name}: byte {i} is not hex"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_cursor_reads_little_endian_and_stops_at_the_end() {
        let mut c = ByteCursor::new(&[1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(c.u16(), Some(0x0201));
        assert_eq!(c.u32(), Some(0x0605_0403));
        assert_eq!(c.bytes(2), None, "only one byte left: nothing consumed");
        assert_eq!(c.u8(), Some(7));
        assert_eq!(c.u8(), None);
        assert_eq!(c.remaining(), 0);
    }

    #[test]
    fn decode_hex_ignores_whitespace_and_names_bad_input() {
        assert_eq!(decode_hex("a", "0a ff\n10"), Ok(vec![0x0a, 0xff, 0x10]));
        assert!(decode_hex("b", "0").unwrap_err().contains("b: not whole"));
        assert!(decode_hex("c", "zz").unwrap_err().contains("c: byte 0"));
        assert!(decode_hex("d", "").is_err());
    }
}
