//! Reproducible initramfs archives: a file tree held in memory (or by host path), written as a
//! sorted newc cpio with fixed owners and times, compressed with gzip at a fixed level.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::{Compression, GzBuilder};
use sha2::{Digest, Sha256};

use crate::cpio::{self, CpioWriter, Header};
use crate::error::{Error, IoContext, Result};

/// Modification time of every entry (the epoch): the archive never depends on when it was built.
pub const FIXED_MTIME: u32 = 0;
/// gzip level used for every image.
pub const GZIP_LEVEL: u32 = 9;

/// Where a file's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Bytes held in memory.
    Bytes(Vec<u8>),
    /// A host file read when the archive is written.
    Host(PathBuf),
}

/// One node of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A directory with its permission bits.
    Dir(u32),
    /// A regular file with its permission bits.
    File(u32, Source),
    /// A symbolic link to the target.
    Symlink(String),
    /// A character device node (permission bits, major, minor).
    CharDev(u32, u32, u32),
}

/// A file tree to be written as an initramfs. Paths are relative, `/`-separated, without `.`
/// or `..` parts; parent directories are created as needed (mode 0755).
#[derive(Debug, Default, Clone)]
pub struct Tree {
    nodes: BTreeMap<String, Node>,
}

fn clean(path: &str) -> Result<String> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() || parts.iter().any(|p| *p == "." || *p == "..") {
        return Err(Error::Contents(format!("bad initramfs path `{path}`")));
    }
    Ok(parts.join("/"))
}

impl Tree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    fn insert(&mut self, path: &str, node: Node) -> Result<()> {
        let path = clean(path)?;
        let mut parent = String::new();
        for part in path
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map(|(_, p)| p)
            .unwrap_or(&[])
        {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            match self.nodes.get(&parent) {
                None => {
                    self.nodes.insert(parent.clone(), Node::Dir(0o755));
                }
                Some(Node::Dir(_)) => {}
                Some(_) => {
                    return Err(Error::Contents(format!(
                        "initramfs path `{parent}` is not a directory"
                    )));
                }
            }
        }
        self.nodes.insert(path, node);
        Ok(())
    }

    /// Adds a directory.
    pub fn dir(&mut self, path: &str, perm: u32) -> Result<()> {
        self.insert(path, Node::Dir(perm & 0o7777))
    }

    /// Adds a file from bytes.
    pub fn file(&mut self, path: &str, perm: u32, data: impl Into<Vec<u8>>) -> Result<()> {
        self.insert(path, Node::File(perm & 0o7777, Source::Bytes(data.into())))
    }

    /// Adds a file whose bytes are read from the host when the archive is written.
    pub fn host_file(&mut self, path: &str, perm: u32, host: &Path) -> Result<()> {
        self.insert(
            path,
            Node::File(perm & 0o7777, Source::Host(host.to_owned())),
        )
    }

    /// Adds a symbolic link.
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<()> {
        self.insert(path, Node::Symlink(target.to_owned()))
    }

    /// Adds a character device node.
    pub fn char_dev(&mut self, path: &str, perm: u32, major: u32, minor: u32) -> Result<()> {
        self.insert(path, Node::CharDev(perm & 0o7777, major, minor))
    }

    /// Every path in the tree, sorted.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.nodes.keys().map(String::as_str)
    }

    /// The node at `path`.
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    /// Writes the tree as an uncompressed newc archive, entries in byte order of their paths.
    pub fn write_cpio<W: Write>(&self, out: W) -> Result<W> {
        let mut w = CpioWriter::new(out);
        for (path, node) in &self.nodes {
            let base = Header {
                mode: 0,
                uid: 0,
                gid: 0,
                nlink: 1,
                mtime: FIXED_MTIME,
                rdev: (0, 0),
            };
            let io = |e| Error::Io {
                context: format!("writing initramfs entry {path}"),
                source: e,
            };
            match node {
                Node::Dir(perm) => {
                    let h = Header {
                        mode: cpio::mode::DIR | perm,
                        nlink: 2,
                        ..base
                    };
                    w.entry(path, &h, b"").map_err(io)?;
                }
                Node::File(perm, src) => {
                    let h = Header {
                        mode: cpio::mode::FILE | perm,
                        ..base
                    };
                    match src {
                        Source::Bytes(b) => w.entry(path, &h, b).map_err(io)?,
                        Source::Host(p) => {
                            let b = std::fs::read(p).ctx(|| format!("reading {}", p.display()))?;
                            w.entry(path, &h, &b).map_err(io)?;
                        }
                    }
                }
                Node::Symlink(t) => {
                    let h = Header {
                        mode: cpio::mode::SYMLINK | 0o777,
                        ..base
                    };
                    w.entry(path, &h, t.as_bytes()).map_err(io)?;
                }
                Node::CharDev(perm, major, minor) => {
                    let h = Header {
                        mode: cpio::mode::CHAR | perm,
                        rdev: (*major, *minor),
                        ..base
                    };
                    w.entry(path, &h, b"").map_err(io)?;
                }
            }
        }
        w.finish().ctx(|| "finishing the initramfs")
    }

    /// Writes the tree as a gzip-compressed newc archive to `path` (through a temporary file
    /// renamed into place) and returns the SHA-256 of the written file.
    pub fn write_gz(&self, path: &Path) -> Result<String> {
        let tmp = path.with_extension("tmp");
        let file = std::fs::File::create(&tmp).ctx(|| format!("creating {}", tmp.display()))?;
        let hashing = HashingWriter {
            inner: std::io::BufWriter::new(file),
            hash: Sha256::new(),
        };
        // GzBuilder writes mtime 0 and no file name: the header is the same on every host.
        let gz = GzBuilder::new().write(hashing, Compression::new(GZIP_LEVEL));
        let gz = self.write_cpio(gz)?;
        let mut hashing = gz
            .finish()
            .ctx(|| format!("compressing {}", tmp.display()))?;
        hashing
            .inner
            .flush()
            .ctx(|| format!("writing {}", tmp.display()))?;
        let digest = hex::encode(hashing.hash.finalize());
        std::fs::rename(&tmp, path).ctx(|| format!("renaming {}", tmp.display()))?;
        Ok(digest)
    }
}

struct HashingWriter<W> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Reads a gzip-compressed newc archive back (for checks and tests).
pub fn read_gz(path: &Path) -> Result<Vec<cpio::ReadEntry>> {
    let bytes = std::fs::read(path).ctx(|| format!("reading {}", path.display()))?;
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut raw)
        .ctx(|| format!("decompressing {}", path.display()))?;
    cpio::read_all(&raw).ctx(|| format!("parsing {}", path.display()))
}

/// SHA-256 of a file, in hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).ctx(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n =
            std::io::Read::read(&mut f, &mut buf).ctx(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Tree {
        let mut t = Tree::new();
        t.file("init", 0o755, b"#!/bin/sh\n".to_vec()).unwrap();
        t.file("lib/modules/x.ko", 0o644, vec![1, 2, 3]).unwrap();
        t.symlink("bin/sh", "busybox").unwrap();
        t.char_dev("dev/console", 0o600, 5, 1).unwrap();
        t
    }

    #[test]
    fn tree_parents_are_created_and_sorted() {
        let t = sample();
        let paths: Vec<&str> = t.paths().collect();
        assert_eq!(
            paths,
            [
                "bin",
                "bin/sh",
                "dev",
                "dev/console",
                "init",
                "lib",
                "lib/modules",
                "lib/modules/x.ko"
            ]
        );
    }

    #[test]
    fn tree_dotdot_path_is_rejected() {
        assert!(Tree::new().file("../etc/passwd", 0o644, vec![]).is_err());
    }

    #[test]
    fn tree_file_under_file_is_rejected() {
        let mut t = Tree::new();
        t.file("a", 0o644, vec![]).unwrap();
        assert!(t.file("a/b", 0o644, vec![]).is_err());
    }

    #[test]
    fn initramfs_same_tree_gives_same_bytes_in_any_insert_order() {
        let dir = tempfile::tempdir().unwrap();
        let a = sample().write_gz(&dir.path().join("a.gz")).unwrap();
        let mut t = Tree::new();
        t.char_dev("dev/console", 0o600, 5, 1).unwrap();
        t.symlink("bin/sh", "busybox").unwrap();
        t.file("lib/modules/x.ko", 0o644, vec![1, 2, 3]).unwrap();
        t.file("init", 0o755, b"#!/bin/sh\n".to_vec()).unwrap();
        let b = t.write_gz(&dir.path().join("b.gz")).unwrap();
        assert_eq!(a, b);
        assert_eq!(a, sha256_file(&dir.path().join("a.gz")).unwrap());
    }

    #[test]
    fn initramfs_entries_have_root_owner_and_fixed_mtime() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("i.gz");
        sample().write_gz(&p).unwrap();
        let entries = read_gz(&p).unwrap();
        assert_eq!(entries.len(), 8);
        assert!(
            entries
                .iter()
                .all(|e| e.uid == 0 && e.gid == 0 && e.mtime == FIXED_MTIME)
        );
        let init = entries.iter().find(|e| e.name == "init").unwrap();
        assert_eq!(init.mode, cpio::mode::FILE | 0o755);
    }

    #[test]
    fn initramfs_content_change_changes_hash() {
        let dir = tempfile::tempdir().unwrap();
        let a = sample().write_gz(&dir.path().join("a.gz")).unwrap();
        let mut t = sample();
        t.file("init", 0o755, b"#!/bin/sh -e\n".to_vec()).unwrap();
        assert_ne!(a, t.write_gz(&dir.path().join("b.gz")).unwrap());
    }
}
