//! Cross-crate integration tests: driver-sequence conformance and the boot matrix.
//!
//! This library holds what the boot tests in `tests/` share.
#![deny(missing_docs)]

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

/// The `iommu-vmm` binary, built in release mode now (so never stale): the
/// guest runs at TCG speed in the nested runner, and a debug VMM makes its
/// disk path several times slower still.
pub fn release_vmm_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let target = exe
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .expect("target dir");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "-q",
            "--release",
            "-p",
            "iommu-vmm",
            "--bin",
            "iommu-vmm",
        ])
        .env("CARGO_TARGET_DIR", target)
        .status()
        .expect("run cargo build");
    assert!(
        status.success(),
        "cargo build --release -p iommu-vmm failed"
    );
    let bin = target.join("release").join("iommu-vmm");
    assert!(bin.exists(), "no iommu-vmm binary at {}", bin.display());
    bin
}
