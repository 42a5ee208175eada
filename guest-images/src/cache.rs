//! The cache folder: where downloads, work trees and finished images live.
//!
//! Root: `$IOMMU_EMU_CACHE` if set, else `$XDG_CACHE_HOME/iommu-emulator`, else
//! `~/.cache/iommu-emulator`. Layout:
//!
//! ```text
//! apt/<suites>/      private apt configuration, package lists and state per suite set
//! debs/              downloaded .deb files (kept; checked against their SHA-256)
//! work/<name>/       extraction and build trees (rebuilt on demand, removed after a build)
//! images/<name>/     vmlinuz, initramfs.cpio.gz, lock.toml
//! ```

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// Environment variable that overrides the cache root.
pub const CACHE_ENV: &str = "IOMMU_EMU_CACHE";
/// Folder under the user's cache directory.
pub const PROJECT_DIR: &str = "iommu-emulator";

/// Kernel file name inside an image folder.
pub const KERNEL_FILE: &str = "vmlinuz";
/// Initramfs file name inside an image folder.
pub const INITRAMFS_FILE: &str = "initramfs.cpio.gz";
/// Lock (record) file name inside an image folder.
pub const LOCK_FILE: &str = "lock.toml";

/// The cache root and its sub-folders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cache {
    root: PathBuf,
}

/// Picks the cache root from environment values (pure, for tests).
pub fn root_from(
    override_dir: Option<&str>,
    xdg_cache: Option<&str>,
    home: Option<&str>,
) -> Option<PathBuf> {
    let non_empty = |v: Option<&str>| v.filter(|s| !s.is_empty()).map(PathBuf::from);
    non_empty(override_dir)
        .or_else(|| non_empty(xdg_cache).map(|p| p.join(PROJECT_DIR)))
        .or_else(|| non_empty(home).map(|p| p.join(".cache").join(PROJECT_DIR)))
}

impl Cache {
    /// The cache named by the environment.
    pub fn from_env() -> Result<Self> {
        let get = |k: &str| std::env::var(k).ok();
        let root = root_from(
            get(CACHE_ENV).as_deref(),
            get("XDG_CACHE_HOME").as_deref(),
            get("HOME").as_deref(),
        )
        .ok_or(Error::NoCache)?;
        Ok(Self::at(root))
    }

    /// A cache at an explicit root.
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Folder of downloaded .deb files.
    pub fn debs(&self) -> PathBuf {
        self.root.join("debs")
    }

    /// Private apt folder for a set of suites.
    pub fn apt(&self, suites: &[String]) -> PathBuf {
        self.root.join("apt").join(suites.join("+"))
    }

    /// Work folder of an image build.
    pub fn work(&self, name: &str) -> PathBuf {
        self.root.join("work").join(name)
    }

    /// Folder of all images.
    pub fn images(&self) -> PathBuf {
        self.root.join("images")
    }

    /// Folder of one image.
    pub fn image(&self, name: &str) -> PathBuf {
        self.images().join(name)
    }

    /// Creates a folder and its parents.
    pub fn ensure(dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))
    }

    /// Takes the build lock of image `name`, waiting while another build holds it, so two
    /// builds of one image never write the same files at once. Released on drop.
    pub fn lock_build(&self, name: &str) -> Result<BuildLock> {
        let dir = self.root.join("locks");
        Self::ensure(&dir)?;
        let path = dir.join(format!("{name}.lock"));
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .ctx(|| format!("opening {}", path.display()))?;
        if file.try_lock().is_err() {
            eprintln!("guest-image: waiting for another build of `{name}` to finish");
            file.lock().ctx(|| format!("locking {}", path.display()))?;
        }
        Ok(BuildLock { _file: file })
    }
}

/// An exclusive lock on one image's build (an flock on `locks/<name>.lock`).
#[derive(Debug)]
pub struct BuildLock {
    _file: File,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_root_override_wins() {
        let r = root_from(Some("/x"), Some("/xdg"), Some("/home/u")).unwrap();
        assert_eq!(r, PathBuf::from("/x"));
    }

    #[test]
    fn cache_root_xdg_then_home() {
        let r = root_from(None, Some("/xdg"), Some("/home/u")).unwrap();
        assert_eq!(r, PathBuf::from("/xdg/iommu-emulator"));
        let r = root_from(Some(""), None, Some("/home/u")).unwrap();
        assert_eq!(r, PathBuf::from("/home/u/.cache/iommu-emulator"));
        assert!(root_from(None, None, None).is_none());
    }

    #[test]
    fn cache_build_lock_is_exclusive_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::at(dir.path());
        let held = c.lock_build("6.1").unwrap();
        let f = File::options()
            .write(true)
            .open(dir.path().join("locks/6.1.lock"))
            .unwrap();
        assert!(f.try_lock().is_err());
        drop(held);
        assert!(f.try_lock().is_ok());
    }
}
