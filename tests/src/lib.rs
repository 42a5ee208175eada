//! Cross-crate integration tests: driver-sequence conformance and the boot matrix.
//!
//! This library holds what the boot tests in `tests/` share.
#![deny(missing_docs)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A fresh, empty directory `<target>/<area>/<name>-<pid>` for one test's
/// files (under the target dir: the system temp dir may not be shareable
/// with the nested runner's L1 machine).
pub fn scratch(area: &str, name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join(area)
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Builds binary `bin` of workspace package `package` with cargo, in this
/// test's profile (or release when `release`), into this test's target dir
/// (a no-op when current, so never stale), and returns its path.
pub fn workspace_binary(package: &str, bin: &str, release: bool) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // <target>/<profile>/deps/<test>-<hash>
    let profile_dir = exe.parent().and_then(Path::parent).expect("profile dir");
    let target = profile_dir.parent().expect("target dir");
    // A test built with --release builds (and finds) its binaries in release too: a debug
    // build would land in target/debug while an older binary sat in target/release.
    let release = release || profile_dir.ends_with("release");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-q", "-p", package, "--bin", bin]);
    if release {
        cmd.arg("--release");
    }
    let status = cmd
        .env("CARGO_TARGET_DIR", target)
        .status()
        .expect("run cargo build");
    assert!(
        status.success(),
        "cargo build -p {package} --bin {bin} failed"
    );
    let path = if release {
        target.join("release").join(bin)
    } else {
        target.join("debug").join(bin)
    };
    assert!(path.exists(), "no {bin} binary at {}", path.display());
    path
}

/// The `iommu-vmm` binary, built in release mode now (so never stale): the
/// guest runs at TCG speed in the nested runner, and a debug VMM makes its
/// disk path several times slower still.
pub fn release_vmm_binary() -> PathBuf {
    workspace_binary("iommu-vmm", "iommu-vmm", true)
}

/// Lower-case hex SHA-256 of the first `len` bytes of `path` (through `head` and `sha256sum`,
/// which the boot tests' hosts have): the checksum a guest's O_DIRECT read must reproduce.
pub fn sha256_prefix(path: &Path, len: u64) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("head -c {len} '{}' | sha256sum", path.display()))
        .output()
        .expect("sha256sum");
    assert!(out.status.success(), "sha256sum failed");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("sha256sum output")
        .to_string()
}

/// Prints, for every job of `report` that the nested runner ran a second time (it asked with
/// [`iommu_nested::Job::retry_nested_on`]), how its first attempt ended and the last
/// lines of that attempt's stderr (the VMM's shutdown report), so that a retried boot is
/// never silent. `names[i]` labels job `i`. Returns how many jobs were retried.
pub fn report_retries(test: &str, names: &[&str], report: &iommu_nested::BatchReport) -> usize {
    let mut retried = 0;
    for (i, job) in report.jobs.iter().enumerate() {
        let name = names.get(i).copied().unwrap_or("?");
        for (k, e) in job.earlier.iter().enumerate() {
            retried += 1;
            // Straight to stderr, not `eprintln!`: the test harness would capture it and drop
            // it when the test passes, and a retry must show in every log.
            let _ = writeln!(
                std::io::stderr().lock(),
                "{test}: RETRIED {name}: attempt {} ended with {:?} in L1 boot {} under the nested \
                 runner and was run again (the L1 machine's emulated SVM is unreliable, see \
                 vmm/nested/README.md); that attempt's console tail and report:\n{}\n{}",
                k + 1,
                e.outcome,
                e.boot,
                last_lines(&e.console, 15),
                last_lines(&e.stderr, 80)
            );
        }
    }
    if retried > 0 {
        let _ = writeln!(
            std::io::stderr().lock(),
            "{test}: {retried} job(s) retried under the nested runner"
        );
    }
    retried
}

/// The last `n` lines of `text`.
fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `<dir>/initrd.cpio.gz`: the image's initramfs `image_initramfs` followed by a second archive
/// holding `files` (name, contents; mode 0755), which the kernel unpacks over the first. The
/// boot tests add their own init scripts this way.
pub fn initrd_with_files(image_initramfs: &Path, dir: &Path, files: &[(&str, &[u8])]) -> PathBuf {
    let mut tree = guest_images::initramfs::Tree::new();
    for (name, data) in files {
        tree.file(name, 0o755, data.to_vec())
            .expect("initramfs file");
    }
    let overlay = dir.join("overlay.cpio.gz");
    tree.write_gz(&overlay).expect("write overlay");
    let mut combined = std::fs::read(image_initramfs).expect("read image initramfs");
    combined.extend(std::fs::read(&overlay).expect("read overlay"));
    let initrd = dir.join("initrd.cpio.gz");
    std::fs::write(&initrd, combined).expect("write initrd");
    initrd
}

/// What `iommu-vmm --stats` printed about the VT-d unit, and the checks boot tests make of it
/// per IOMMU mode (one copy for `boot_linux` and `boot_matrix`).
pub mod vtd_stats {
    /// Numbers from `--stats`.
    #[derive(Debug, Default, Clone, Copy)]
    pub struct VtdStats {
        /// A `vt-d:` line was printed (there is a VT-d unit).
        pub present: bool,
        /// Translations.
        pub translations: u64,
        /// Faults (the number after "translations,").
        pub faults: u64,
        /// Invalidation-queue descriptor errors.
        pub queue_errors: u64,
        /// PASID-cache lookups.
        pub pasid_lookups: u64,
        /// First-level paging-structure cache lookups.
        pub fl_lookups: u64,
        /// Second-level paging-structure cache lookups.
        pub sl_lookups: u64,
    }

    fn number_after(line: &str, key: &str) -> Option<u64> {
        let rest = line.split(key).nth(1)?;
        rest.split(|c: char| !c.is_ascii_digit())
            .find(|w| !w.is_empty())?
            .parse()
            .ok()
    }

    impl VtdStats {
        /// Parses the VMM's stderr.
        pub fn parse(stderr: &str) -> Self {
            let mut s = VtdStats::default();
            for l in stderr.lines() {
                let t = l.trim();
                if t.starts_with("vt-d:") {
                    s.present = true;
                    s.translations = number_after(t, "vt-d:").unwrap_or(0);
                    s.faults = number_after(t, "translations,").unwrap_or(0);
                } else if t.starts_with("cache    pasid:") {
                    s.pasid_lookups = number_after(t, "lookups").unwrap_or(0);
                } else if t.starts_with("cache   fl-pwc:") {
                    s.fl_lookups = number_after(t, "lookups").unwrap_or(0);
                } else if t.starts_with("cache   sl-pwc:") {
                    s.sl_lookups = number_after(t, "lookups").unwrap_or(0);
                } else if t.starts_with("queue:") {
                    s.queue_errors = number_after(t, "descriptors,").unwrap_or(0);
                }
            }
            s
        }
    }

    /// The unit translated something.
    pub fn translated(s: &VtdStats) -> Result<(), String> {
        if !s.present {
            return Err("no VT-d statistics in --stats output".into());
        }
        if s.translations == 0 {
            return Err("the VT-d model translated nothing".into());
        }
        Ok(())
    }

    /// Legacy mode: second-level walks, no PASID tables.
    pub fn legacy(s: &VtdStats) -> Result<(), String> {
        translated(s)?;
        if s.pasid_lookups != 0 || s.sl_lookups == 0 {
            return Err(format!(
                "legacy mode must walk second-level tables only: {s:?}"
            ));
        }
        Ok(())
    }

    /// Scalable mode, second level: PASID and second-level walks, no first-level.
    pub fn scalable_sl(s: &VtdStats) -> Result<(), String> {
        translated(s)?;
        if s.pasid_lookups == 0 || s.sl_lookups == 0 || s.fl_lookups != 0 {
            return Err(format!(
                "scalable second-level: PASID and second-level walks, no first-level: {s:?}"
            ));
        }
        Ok(())
    }

    /// Scalable mode, first level: PASID and first-level walks.
    pub fn scalable_fl(s: &VtdStats) -> Result<(), String> {
        translated(s)?;
        if s.pasid_lookups == 0 || s.fl_lookups == 0 {
            return Err(format!(
                "scalable first-level: PASID and first-level walks: {s:?}"
            ));
        }
        Ok(())
    }

    /// Pass-through: a unit is there (it may translate nothing).
    pub fn passthrough(s: &VtdStats) -> Result<(), String> {
        if !s.present {
            return Err("no VT-d statistics in --stats output".into());
        }
        Ok(())
    }

    /// `--iommu none`: no unit.
    pub fn none(s: &VtdStats) -> Result<(), String> {
        if s.present {
            return Err("--iommu none printed VT-d statistics".into());
        }
        Ok(())
    }

    /// Garbage written into the unit's registers produced a fault or a queue error.
    pub fn garbage(s: &VtdStats) -> Result<(), String> {
        passthrough(s)?;
        if s.faults.saturating_add(s.queue_errors) == 0 {
            return Err(
                "garbage in the VT-d registers produced no fault and no queue error".into(),
            );
        }
        Ok(())
    }
}
