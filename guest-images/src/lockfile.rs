//! The lock file next to each cached image (`lock.toml`): what the image was built from
//! (package versions and SHA-256 of each .deb, the input fingerprint) and the SHA-256 of
//! each output file. A build whose fingerprint matches and whose files still hash the same
//! is a no-op.

use serde::{Deserialize, Serialize};
use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::initramfs::sha256_file;

/// Version of the lock file layout.
pub const FORMAT: u32 = 1;

/// One resolved package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockedPackage {
    /// Debian package name.
    pub name: String,
    /// Exact version.
    pub version: String,
    /// SHA-256 of the .deb file.
    pub sha256: String,
}

/// The kernel and busybox a Debian image was built from, and the manifest record it was
/// built under (a build keeps these while the archive has them; a changed record, after
/// `guest-image repin`, takes precedence).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockedKernel {
    /// Kernel ABI used.
    pub abi: String,
    /// Kernel package version used.
    pub version: String,
    /// busybox-static version used.
    pub busybox: String,
    /// The manifest's record at build time ([`crate::manifest::GuestSpec::record_text`]).
    pub record: String,
    /// What the build said when it did not use the record (a moved kernel or busybox).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// One output file of the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockedFile {
    /// File name inside the image folder.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256.
    pub sha256: String,
}

/// The record of one built image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageLock {
    /// [`FORMAT`].
    pub format: u32,
    /// Image name.
    pub name: String,
    /// `debian`, `kernel-tree` or `runner`.
    pub kind: String,
    /// Kernel release (`uname -r`) in the guest.
    pub release: String,
    /// Fingerprint of every input (manifest entry, the packages used, payload sources,
    /// builder, compiler).
    pub inputs: String,
    /// For Debian images: the kernel and busybox chosen, and the record they were chosen
    /// under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<LockedKernel>,
    /// Packages the image was built from.
    #[serde(default)]
    pub packages: Vec<LockedPackage>,
    /// Output files.
    pub files: Vec<LockedFile>,
}

impl ImageLock {
    /// Reads a lock file; `None` when there is none.
    pub fn load(path: &Path) -> Result<Option<Self>> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text)
                .map(Some)
                .map_err(|e| Error::Manifest(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Io {
                context: format!("reading {}", path.display()),
                source: e,
            }),
        }
    }

    /// Writes the lock file (through a temporary file renamed into place).
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = toml::to_string_pretty(self)
            .map_err(|e| Error::Manifest(format!("cannot write lock file: {e}")))?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).ctx(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).ctx(|| format!("renaming {}", tmp.display()))
    }

    /// Records an output file of `dir`.
    pub fn add_file(&mut self, dir: &Path, name: &str) -> Result<()> {
        let p = dir.join(name);
        let size = std::fs::metadata(&p)
            .ctx(|| format!("reading {}", p.display()))?
            .len();
        self.files.push(LockedFile {
            name: name.to_owned(),
            size,
            sha256: sha256_file(&p)?,
        });
        Ok(())
    }

    /// True when this lock has the given fingerprint and every output file in `dir` still
    /// has its recorded size and SHA-256.
    pub fn is_current(&self, inputs: &str, dir: &Path) -> bool {
        self.format == FORMAT
            && self.inputs == inputs
            && !self.files.is_empty()
            && self.files.iter().all(|f| {
                let p = dir.join(&f.name);
                std::fs::metadata(&p).map(|m| m.len()).ok() == Some(f.size)
                    && sha256_file(&p).ok().as_deref() == Some(f.sha256.as_str())
            })
    }

    /// The recorded SHA-256 of output `name`.
    pub fn file_sha(&self, name: &str) -> Option<&str> {
        self.files
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.sha256.as_str())
    }

    /// Total size of the output files.
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock_with_file(dir: &Path) -> ImageLock {
        std::fs::write(dir.join("vmlinuz"), b"kernel").unwrap();
        let mut l = ImageLock {
            format: FORMAT,
            name: "6.1".into(),
            kind: "debian".into(),
            release: "6.1.0-56-amd64".into(),
            inputs: "abc".into(),
            kernel: None,
            packages: vec![LockedPackage {
                name: "linux-image-6.1.0-56-amd64".into(),
                version: "6.1.192-2".into(),
                sha256: "00".into(),
            }],
            files: vec![],
        };
        l.add_file(dir, "vmlinuz").unwrap();
        l
    }

    #[test]
    fn lock_roundtrip_and_current_when_files_match() {
        let dir = tempfile::tempdir().unwrap();
        let l = lock_with_file(dir.path());
        let p = dir.path().join("lock.toml");
        l.save(&p).unwrap();
        let back = ImageLock::load(&p).unwrap().unwrap();
        assert_eq!(back, l);
        assert!(back.is_current("abc", dir.path()));
        assert!(!back.is_current("abd", dir.path()));
    }

    #[test]
    fn lock_changed_output_is_not_current() {
        let dir = tempfile::tempdir().unwrap();
        let l = lock_with_file(dir.path());
        std::fs::write(dir.path().join("vmlinuz"), b"kernel2").unwrap();
        assert!(!l.is_current("abc", dir.path()));
        std::fs::write(dir.path().join("vmlinuz"), b"kernex").unwrap();
        assert!(!l.is_current("abc", dir.path()));
    }

    #[test]
    fn lock_missing_file_loads_as_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            ImageLock::load(&dir.path().join("nope.toml"))
                .unwrap()
                .is_none()
        );
    }
}
