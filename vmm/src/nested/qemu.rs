//! Finding (and when missing, installing) the QEMU that provides the L1 machine.
//!
//! Preference order, from MACHINE-NOTES.md: QEMU 10.0 from bookworm-backports, extracted with
//! `dpkg-deb -x` into the cache (it runs with bookworm's libraries and needs seabios >= 1.16.3
//! from the same suite, passed with `-L`), because bookworm's QEMU 7.2 hangs the inner machine
//! in about 1 of 20 inner boots; then the host's `qemu-system-x86_64`; then `apt-get install
//! qemu-system-x86` when root; else an error giving the exact command.

use std::path::{Path, PathBuf};
use std::process::Command;

use guest_images::runner as images;

use super::NestedError;

/// Packages extracted from bookworm-backports for the L1 machine.
const BACKPORTS_PACKAGES: &[&str] = &["qemu-system-x86", "qemu-system-data", "seabios"];

/// Where a QEMU came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QemuSource {
    /// `$IOMMU_VMM_QEMU`.
    Environment,
    /// Extracted from bookworm-backports into the cache.
    Backports,
    /// The host's installed package.
    System,
}

/// A QEMU binary able to run the L1 machine.
#[derive(Debug, Clone)]
pub struct Qemu {
    /// `qemu-system-x86_64`.
    pub binary: PathBuf,
    /// Firmware directories, each passed as `-L` (empty: QEMU's built-in default).
    pub data_dirs: Vec<PathBuf>,
    /// First line of `--version`.
    pub version: String,
    /// Where it came from.
    pub source: QemuSource,
}

impl Qemu {
    /// Major version (7 for bookworm's 7.2), when `--version` says.
    pub fn major(&self) -> Option<u32> {
        self.version
            .split_whitespace()
            .find_map(|w| w.split('.').next()?.parse().ok())
    }
}

fn probe(binary: &Path, data_dirs: Vec<PathBuf>, source: QemuSource) -> Option<Qemu> {
    let out = Command::new(binary).arg("--version").output().ok()?;
    if !out.status.success() {
        return None;
    }
    let version = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    Some(Qemu {
        binary: binary.to_path_buf(),
        data_dirs,
        version,
        source,
    })
}

fn backports_root() -> PathBuf {
    images::cache_dir().join("qemu-backports")
}

fn backports_qemu(root: &Path) -> Option<Qemu> {
    probe(
        &root.join("usr/bin/qemu-system-x86_64"),
        vec![root.join("usr/share/qemu"), root.join("usr/share/seabios")],
        QemuSource::Backports,
    )
}

fn cached_backports() -> Option<Qemu> {
    let root = backports_root().join("root");
    if root.is_dir() {
        backports_qemu(&root)
    } else {
        None
    }
}

/// Downloads bookworm-backports' QEMU and seabios (guest-images' private apt setup) and
/// extracts them into the cache (in a private directory first; the first concurrent caller's
/// rename wins).
fn fetch_backports() -> Result<Qemu, NestedError> {
    let base = backports_root();
    let root = base.join("root");
    eprintln!(
        "iommu-vmm: fetching QEMU 10.0 and seabios from bookworm-backports for the nested runner \
         (once, into {})",
        base.display()
    );
    let files = images::fetch_suite_packages("bookworm-backports", BACKPORTS_PACKAGES)?;
    let staged = base.join(format!(".work-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staged);
    for f in &files {
        guest_images::deb::extract(f, &staged).map_err(images::RunnerError::from)?;
    }
    if backports_qemu(&staged).is_none() {
        let _ = std::fs::remove_dir_all(&staged);
        return Err(NestedError::Qemu(
            "the extracted backports QEMU does not start".into(),
        ));
    }
    let renamed = std::fs::rename(&staged, &root);
    let _ = std::fs::remove_dir_all(&staged);
    if renamed.is_err() && !root.is_dir() {
        return Err(NestedError::Qemu(format!(
            "cannot move the extracted QEMU to {}",
            root.display()
        )));
    }
    backports_qemu(&root)
        .ok_or_else(|| NestedError::Qemu("the extracted backports QEMU does not start".into()))
}

fn system_qemu() -> Option<Qemu> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("qemu-system-x86_64"))
        .find(|p| p.is_file())
        .and_then(|p| probe(&p, Vec::new(), QemuSource::System))
}

fn is_root() -> bool {
    // The effective uid from /proc (std has no getuid); "Uid: real effective saved fs".
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// The QEMU to use, installing one when none is found and `install` is true.
pub fn find_qemu(install: bool) -> Result<Qemu, NestedError> {
    if let Some(bin) = std::env::var_os("IOMMU_VMM_QEMU").filter(|v| !v.is_empty()) {
        let data = std::env::var_os("IOMMU_VMM_QEMU_DATA")
            .map(|d| std::env::split_paths(&d).collect())
            .unwrap_or_default();
        return probe(Path::new(&bin), data, QemuSource::Environment).ok_or_else(|| {
            NestedError::Qemu(format!(
                "IOMMU_VMM_QEMU={} does not run",
                Path::new(&bin).display()
            ))
        });
    }
    if let Some(q) = cached_backports() {
        return Ok(q);
    }
    let bookworm = images::host_codename().is_some_and(|c| c == "bookworm");
    if bookworm && install {
        match fetch_backports() {
            Ok(q) => return Ok(q),
            Err(e) => tracing::warn!(
                "could not fetch QEMU from bookworm-backports ({e}); falling back to the host's QEMU"
            ),
        }
    }
    if let Some(q) = system_qemu() {
        return Ok(q);
    }
    let command = "apt-get install -y qemu-system-x86";
    let has_apt = Command::new("apt-get").arg("--version").output().is_ok();
    if install && has_apt && is_root() {
        eprintln!("iommu-vmm: installing QEMU for the nested runner: {command}");
        let status = Command::new("apt-get")
            .args(["install", "-y", "-q", "qemu-system-x86"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map_err(NestedError::Io)?;
        if status.success()
            && let Some(q) = system_qemu()
        {
            return Ok(q);
        }
    }
    Err(NestedError::Qemu(if has_apt {
        format!("QEMU is not installed; install it with: sudo {command}")
    } else {
        "QEMU is not installed: install qemu-system-x86_64 (Debian/Ubuntu package qemu-system-x86) \
         or set IOMMU_VMM_QEMU to its path"
            .into()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn major_reads_version_line() {
        let q = Qemu {
            binary: "/x".into(),
            data_dirs: vec![],
            version: "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)".into(),
            source: QemuSource::Backports,
        };
        assert_eq!(q.major(), Some(10));
        let q7 = Qemu {
            version: "QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u18)".into(),
            ..q
        };
        assert_eq!(q7.major(), Some(7));
    }
}
