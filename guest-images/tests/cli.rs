//! The `guest-image` command's plain-word errors and its listing, without downloads.

use std::path::Path;
use std::process::Command;

fn guest_image(cache: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_guest-image"));
    c.env("IOMMU_EMU_CACHE", cache);
    c
}

fn stderr_of(c: &mut Command) -> (bool, String) {
    let out = c.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_path_of_uncached_image_fails_with_build_hint() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, err) = stderr_of(guest_image(dir.path()).args(["path", "6.1"]));
    assert!(!ok);
    assert!(err.contains("guest-image build 6.1"), "{err}");
}

#[test]
fn cli_unknown_guest_lists_known_guests() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, err) = stderr_of(guest_image(dir.path()).args(["build", "4.19"]));
    assert!(!ok);
    assert!(
        err.contains("4.19") && err.contains("5.10") && err.contains("6.12"),
        "{err}"
    );
}

#[test]
fn cli_list_of_empty_cache_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = guest_image(dir.path()).arg("list").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("no images"));
}

fn path_with(dir: &Path, programs: &[&str]) {
    for p in programs {
        let real = std::env::split_paths(&std::env::var_os("PATH").unwrap())
            .map(|d| d.join(p))
            .find(|p| p.is_file())
            .unwrap_or_else(|| panic!("{p} is needed for this test"));
        std::os::unix::fs::symlink(real, dir.join(p)).unwrap();
    }
}

#[test]
fn cli_build_without_compiler_says_install_gcc() {
    let cache = tempfile::tempdir().unwrap();
    let bin = tempfile::tempdir().unwrap();
    let (ok, err) = stderr_of(
        guest_image(cache.path())
            .env("PATH", bin.path())
            .args(["build", "6.1"]),
    );
    assert!(!ok);
    assert!(
        err.contains("`gcc` was not found") && err.contains("install gcc"),
        "{err}"
    );
}

#[test]
fn cli_build_without_apt_says_not_debian_like() {
    let cache = tempfile::tempdir().unwrap();
    let bin = tempfile::tempdir().unwrap();
    path_with(bin.path(), &["gcc", "make"]);
    let (ok, err) = stderr_of(
        guest_image(cache.path())
            .env("PATH", bin.path())
            .args(["build", "6.1"]),
    );
    assert!(!ok);
    assert!(
        err.contains("not Debian-like") && err.contains("apt-get"),
        "{err}"
    );
}

#[test]
fn cli_unreachable_archive_is_reported_in_plain_words() {
    let cache = tempfile::tempdir().unwrap();
    // A port nothing listens on: apt cannot reach the archive.
    let (ok, err) = stderr_of(
        guest_image(cache.path())
            .env("IOMMU_EMU_DEBIAN_MIRROR", "http://127.0.0.1:9/debian")
            .args(["build", "6.1"]),
    );
    assert!(!ok);
    assert!(err.contains("could not be reached"), "{err}");
}

#[test]
fn cli_kernel_tree_without_bzimage_explains() {
    let cache = tempfile::tempdir().unwrap();
    let tree = tempfile::tempdir().unwrap();
    let (ok, err) = stderr_of(guest_image(cache.path()).args([
        "build",
        "--kernel-tree",
        tree.path().to_str().unwrap(),
        "--name",
        "mine",
    ]));
    assert!(!ok);
    assert!(err.contains("bzImage is missing"), "{err}");
}
