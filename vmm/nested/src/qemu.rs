//! Finding (and when missing, fetching into the cache) the QEMU that provides the L1 machine.
//!
//! Preference order: `$IOMMU_VMM_QEMU`; else QEMU 10.0 from Debian's packages extracted with
//! `dpkg-deb -x` into the cache (on bookworm from bookworm-backports: it runs with bookworm's
//! libraries and needs seabios >= 1.16.3 from the same suite, passed with `-L`; on trixie and
//! newer from the host's own suite), because bookworm's QEMU 7.2 hangs the inner machine in
//! about 1 of 20 inner boots (see `README.md` beside this file); then the host's
//! `qemu-system-x86_64`; else an error giving the exact command. Nothing is installed on the
//! host: the extracted copy lives in the cache only, so the user's packages (say qemu-utils 10
//! from backports, which bookworm's qemu-system-x86 7.2 would remove) are left alone.

use std::path::{Path, PathBuf};
use std::process::Command;

use guest_images::runner as images;

use super::NestedError;

/// Packages extracted into the cache for the L1 machine.
const BACKPORTS_PACKAGES: &[&str] = &["qemu-system-x86", "qemu-system-data", "seabios"];

/// Where a QEMU came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QemuSource {
    /// `$IOMMU_VMM_QEMU`.
    Environment,
    /// Extracted from Debian's packages (bookworm-backports on bookworm, the host's suite on
    /// newer releases) into the cache.
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

/// The Debian suite whose QEMU (10.0 or newer) runs with the libraries of a host release:
/// bookworm's own is 7.2, so bookworm takes bookworm-backports; trixie (10.0) and later releases
/// take their own suite. `None` for hosts that are not Debian (or older than bookworm).
pub fn qemu_suite_for(codename: &str) -> Option<String> {
    match codename {
        "bookworm" => Some("bookworm-backports".into()),
        "" | "buster" | "bullseye" => None,
        other if other.chars().all(|c| c.is_ascii_lowercase()) => Some(other.into()),
        _ => None,
    }
}

/// Downloads QEMU and seabios from `suite` (guest-images' private apt setup) and extracts them
/// into the cache (in a private directory first; the first concurrent caller's rename wins).
fn fetch_backports(suite: &str) -> Result<Qemu, NestedError> {
    let base = backports_root();
    let root = base.join("root");
    eprintln!(
        "iommu-vmm: fetching QEMU and seabios from {suite} for the nested runner \
         (once, into {}; nothing is installed on the host)",
        base.display()
    );
    let files = images::fetch_suite_packages(suite, BACKPORTS_PACKAGES)?;
    let staged = base.join(format!(".work-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staged);
    for f in &files {
        guest_images::deb::extract(f, &staged).map_err(images::RunnerError::from)?;
    }
    if backports_qemu(&staged).is_none() {
        let missing = missing_libraries(&staged.join("usr/bin/qemu-system-x86_64"));
        let _ = std::fs::remove_dir_all(&staged);
        return Err(NestedError::Qemu(does_not_start(&missing)));
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

/// The shared libraries `binary` needs that the host lacks (`ldd`'s "not found" lines).
fn missing_libraries(binary: &Path) -> Vec<String> {
    Command::new("ldd")
        .arg(binary)
        .output()
        .map(|o| parse_ldd_missing(&String::from_utf8_lossy(&o.stdout)))
        .unwrap_or_default()
}

/// Sonames `ldd` reports as "not found".
pub fn parse_ldd_missing(ldd: &str) -> Vec<String> {
    ldd.lines()
        .filter(|l| l.contains("=> not found"))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// The Debian package that ships soname `lib`: Debian's policy names a library package after
/// its soname (`libfdt.so.1` -> `libfdt1`, `libnl-3.so.200` -> `libnl-3-200`).
pub fn package_for_soname(soname: &str) -> Option<String> {
    let (base, ver) = soname.split_once(".so.")?;
    let sep = if base.ends_with(|c: char| c.is_ascii_digit()) {
        "-"
    } else {
        ""
    };
    Some(format!("{}{sep}{ver}", base.to_ascii_lowercase()))
}

/// The error for an extracted QEMU that does not start, naming what to install.
fn does_not_start(missing: &[String]) -> String {
    if missing.is_empty() {
        return "the extracted QEMU does not start (run it by hand to see why)".into();
    }
    let pkgs: Vec<String> = missing
        .iter()
        .filter_map(|m| package_for_soname(m))
        .collect();
    format!(
        "the extracted QEMU does not start: the host lacks {} (./scripts/setup installs them on \
         bookworm; else: sudo apt-get install --no-remove {})",
        missing.join(", "),
        pkgs.join(" ")
    )
}

fn system_qemu() -> Option<Qemu> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("qemu-system-x86_64"))
        .find(|p| p.is_file())
        .and_then(|p| probe(&p, Vec::new(), QemuSource::System))
}

/// The QEMU to use; when none is cached and `install` is true, QEMU 10 is fetched from Debian's
/// packages into the cache (never installed on the host).
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
    let cached = backports_root().join("root/usr/bin/qemu-system-x86_64");
    if cached.is_file() {
        // Extracted before but it does not start now (libraries removed since?): say why.
        let missing = missing_libraries(&cached);
        if !missing.is_empty() {
            return Err(NestedError::Qemu(does_not_start(&missing)));
        }
    }
    let suite = images::host_codename().and_then(|c| qemu_suite_for(&c));
    if let (Some(suite), true) = (&suite, install) {
        match fetch_backports(suite) {
            Ok(q) => return Ok(q),
            Err(e) => tracing::warn!(
                "could not fetch QEMU from {suite} ({e}); falling back to the host's QEMU"
            ),
        }
    }
    if let Some(q) = system_qemu() {
        return Ok(q);
    }
    let has_apt = Command::new("apt-get").arg("--version").output().is_ok();
    Err(NestedError::Qemu(match (&suite, has_apt) {
        (Some(suite), _) => format!(
            "no QEMU for the nested runner: fetching it from {suite} into the cache failed (see \
             the warning above; check the network and the host's apt sources) and the host has \
             no qemu-system-x86_64. Set IOMMU_VMM_QEMU to a QEMU 10 binary, or install one \
             without removing anything: sudo apt-get install --no-remove qemu-system-x86"
        ),
        (None, true) => "QEMU is not installed; install it without removing anything: \
                         sudo apt-get install --no-remove qemu-system-x86 (QEMU 10 or newer \
                         recommended), or set IOMMU_VMM_QEMU to its path"
            .into(),
        (None, false) => "QEMU is not installed: install qemu-system-x86_64 (Debian/Ubuntu \
                          package qemu-system-x86) or set IOMMU_VMM_QEMU to its path"
            .into(),
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

    #[test]
    fn ldd_not_found_lines_name_debian_packages() {
        let ldd = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibcapstone.so.4 => not found\n\
                   \tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f)\n\
                   \tlibnl-3.so.200 => not found\n";
        let missing = parse_ldd_missing(ldd);
        assert_eq!(missing, ["libcapstone.so.4", "libnl-3.so.200"]);
        let pkgs: Vec<String> = missing
            .iter()
            .filter_map(|m| package_for_soname(m))
            .collect();
        assert_eq!(pkgs, ["libcapstone4", "libnl-3-200"]);
        assert!(does_not_start(&missing).contains("apt-get install --no-remove libcapstone4"));
    }

    #[test]
    fn qemu_suite_for_bookworm_is_backports_newer_releases_their_own() {
        assert_eq!(
            qemu_suite_for("bookworm").as_deref(),
            Some("bookworm-backports")
        );
        assert_eq!(qemu_suite_for("trixie").as_deref(), Some("trixie"));
        assert_eq!(qemu_suite_for("forky").as_deref(), Some("forky"));
        assert_eq!(qemu_suite_for("bullseye"), None);
        assert_eq!(qemu_suite_for("jammy 22.04"), None);
    }
}
