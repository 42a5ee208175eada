//! A writer for the "newc" cpio format (SVR4 with no CRC), the format the Linux kernel
//! unpacks as an initramfs (Documentation/driver-api/early-userspace/buffer-format.rst).
//!
//! The writer is deterministic: inode numbers are given in write order, and the caller passes
//! every field that could differ between hosts (owner, mtime), so the same entries give the
//! same bytes.

use std::io::{self, Write};

/// Magic of the newc format.
const MAGIC: &[u8; 6] = b"070701";
/// Size of a newc header: magic plus 13 eight-digit hexadecimal fields.
const HEADER_LEN: usize = 110;
/// Name of the entry that ends an archive.
const TRAILER: &str = "TRAILER!!!";

/// File type bits of `st_mode` (see inode(7)).
pub mod mode {
    /// Directory.
    pub const DIR: u32 = 0o040000;
    /// Regular file.
    pub const FILE: u32 = 0o100000;
    /// Symbolic link.
    pub const SYMLINK: u32 = 0o120000;
    /// Character device.
    pub const CHAR: u32 = 0o020000;
}

/// The header fields of one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// File type and permission bits (`st_mode`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Link count.
    pub nlink: u32,
    /// Modification time in seconds since the epoch.
    pub mtime: u32,
    /// Device numbers of a device node.
    pub rdev: (u32, u32),
}

/// Streams newc entries to a writer.
pub struct CpioWriter<W: Write> {
    out: W,
    written: u64,
    next_ino: u32,
}

impl<W: Write> CpioWriter<W> {
    /// Starts an archive.
    pub fn new(out: W) -> Self {
        Self {
            out,
            written: 0,
            next_ino: 1,
        }
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written = self.written.saturating_add(bytes.len() as u64);
        Ok(())
    }

    fn pad4(&mut self) -> io::Result<()> {
        let rem = (self.written % 4) as usize;
        if rem != 0 {
            self.put(&[0u8; 3][..4 - rem])?;
        }
        Ok(())
    }

    fn header(&mut self, name: &str, h: &Header, ino: u32, size: u32) -> io::Result<()> {
        if name.as_bytes().contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "NUL in a cpio name",
            ));
        }
        let namesize = u32::try_from(name.len() + 1)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "cpio name too long"))?;
        let mut hdr = Vec::with_capacity(HEADER_LEN);
        hdr.extend_from_slice(MAGIC);
        for field in [
            ino, h.mode, h.uid, h.gid, h.nlink, h.mtime, size, 0, 0, h.rdev.0, h.rdev.1, namesize,
            0,
        ] {
            hdr.extend_from_slice(format!("{field:08x}").as_bytes());
        }
        debug_assert_eq!(hdr.len(), HEADER_LEN);
        self.put(&hdr)?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad4()
    }

    /// Appends one entry with its data (file contents or symlink target; empty otherwise).
    pub fn entry(&mut self, name: &str, h: &Header, data: &[u8]) -> io::Result<()> {
        let size = u32::try_from(data.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file too large for cpio"))?;
        let ino = self.next_ino;
        self.next_ino = self.next_ino.wrapping_add(1);
        self.header(name, h, ino, size)?;
        self.put(data)?;
        self.pad4()
    }

    /// Writes the trailer and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        let h = Header {
            mode: 0,
            uid: 0,
            gid: 0,
            nlink: 1,
            mtime: 0,
            rdev: (0, 0),
        };
        self.header(TRAILER, &h, 0, 0)?;
        Ok(self.out)
    }
}

/// One entry read back from a newc archive (for tests and `guest-image` checks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadEntry {
    /// Path inside the archive.
    pub name: String,
    /// `st_mode`.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time.
    pub mtime: u32,
    /// Device numbers.
    pub rdev: (u32, u32),
    /// Contents (file data or symlink target).
    pub data: Vec<u8>,
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

/// Parses a whole (uncompressed) newc archive up to its trailer.
pub fn read_all(bytes: &[u8]) -> io::Result<Vec<ReadEntry>> {
    let mut pos = 0usize;
    let mut out = Vec::new();
    let field = |hdr: &[u8], i: usize| -> io::Result<u32> {
        let s = hdr
            .get(6 + i * 8..6 + (i + 1) * 8)
            .ok_or_else(|| invalid("short cpio header"))?;
        let s = std::str::from_utf8(s).map_err(|_| invalid("bad cpio header"))?;
        u32::from_str_radix(s, 16).map_err(|_| invalid("bad cpio header field"))
    };
    let align = |p: usize| p.div_ceil(4) * 4;
    loop {
        let hdr = bytes
            .get(pos..pos + HEADER_LEN)
            .ok_or_else(|| invalid("archive ends without a trailer"))?;
        if &hdr[..6] != MAGIC {
            return Err(invalid("not a newc cpio archive"));
        }
        let namesize = field(hdr, 11)? as usize;
        let size = field(hdr, 6)? as usize;
        let name_start = pos + HEADER_LEN;
        let name = bytes
            .get(name_start..name_start + namesize.saturating_sub(1))
            .ok_or_else(|| invalid("truncated name"))?;
        let name = String::from_utf8(name.to_vec()).map_err(|_| invalid("name not UTF-8"))?;
        let data_start = align(name_start + namesize);
        if name == TRAILER {
            return Ok(out);
        }
        let data = bytes
            .get(data_start..data_start + size)
            .ok_or_else(|| invalid("truncated data"))?;
        out.push(ReadEntry {
            name,
            mode: field(hdr, 1)?,
            uid: field(hdr, 2)?,
            gid: field(hdr, 3)?,
            mtime: field(hdr, 5)?,
            rdev: (field(hdr, 9)?, field(hdr, 10)?),
            data: data.to_vec(),
        });
        pos = align(data_start + size);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(mode_bits: u32) -> Header {
        Header {
            mode: mode::FILE | mode_bits,
            uid: 0,
            gid: 0,
            nlink: 1,
            mtime: 0,
            rdev: (0, 0),
        }
    }

    #[test]
    fn cpio_newc_header_layout_matches_format() {
        let mut w = CpioWriter::new(Vec::new());
        w.entry("init", &file(0o755), b"abc").unwrap();
        let out = w.finish().unwrap();
        // 110-byte header + "init\0" (5) = 115 -> padded to 116, data 3 -> padded to 120.
        assert_eq!(&out[..6], b"070701");
        assert_eq!(&out[6..14], b"00000001"); // ino
        assert_eq!(&out[14..22], b"000081ed"); // mode 0100755
        assert_eq!(&out[54..62], b"00000003"); // filesize
        assert_eq!(&out[94..102], b"00000005"); // namesize
        assert_eq!(&out[110..115], b"init\0");
        assert_eq!(&out[116..119], b"abc");
        assert_eq!(out.len() % 4, 0);
        assert_eq!(&out[120..126], b"070701");
        assert!(out.windows(10).any(|w| w == b"TRAILER!!!"));
    }

    #[test]
    fn cpio_roundtrip_keeps_names_modes_and_data() {
        let mut w = CpioWriter::new(Vec::new());
        let dir = Header {
            mode: mode::DIR | 0o755,
            nlink: 2,
            ..file(0)
        };
        w.entry("bin", &dir, b"").unwrap();
        w.entry(
            "bin/sh",
            &Header {
                mode: mode::SYMLINK | 0o777,
                ..file(0)
            },
            b"busybox",
        )
        .unwrap();
        let console = Header {
            mode: mode::CHAR | 0o600,
            rdev: (5, 1),
            ..file(0)
        };
        w.entry("dev/console", &console, b"").unwrap();
        w.entry("odd-name", &file(0o644), b"12345").unwrap();
        let entries = read_all(&w.finish().unwrap()).unwrap();
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["bin", "bin/sh", "dev/console", "odd-name"]);
        assert_eq!(entries[1].data, b"busybox");
        assert_eq!(entries[2].rdev, (5, 1));
        assert_eq!(entries[3].data, b"12345");
    }

    #[test]
    fn cpio_read_without_trailer_is_an_error() {
        let mut w = CpioWriter::new(Vec::new());
        w.entry("a", &file(0o644), b"x").unwrap();
        let mut out = w.finish().unwrap();
        out.truncate(out.len() - 20);
        assert!(read_all(&out).is_err());
    }

    #[test]
    fn cpio_name_with_nul_is_rejected() {
        let mut w = CpioWriter::new(Vec::new());
        assert!(w.entry("a\0b", &file(0o644), b"").is_err());
    }
}
