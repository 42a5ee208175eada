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

// A recorded version gone from the archive, `--locked` and a vanished series are tested
// against an archive the test writes itself: tests/archive.rs.

/// A guest is also reachable by its recorded kernel series, and the unknown-guest message
/// lists that alias (manifest written here, so no version string of the shipped one matters).
#[test]
fn cli_series_alias_names_the_guest() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("manifest.toml");
    std::fs::write(
        &manifest,
        r#"
[[guest]]
name = "newest-one"
suites = ["trixie"]
series = "newest"
abi = "9.9.1+deb99"
version = "9.9.1-1"
kbuild = "linux-kbuild-9.9.1+deb99"
busybox = "1:1"
modules = []
host_libs = []
"#,
    )
    .unwrap();
    let (ok, err) = stderr_of(
        guest_image(dir.path())
            .arg("--manifest")
            .arg(&manifest)
            .args(["path", "9.9"]),
    );
    assert!(!ok);
    assert!(err.contains("guest-image build newest-one"), "{err}");
    let (ok, err) = stderr_of(
        guest_image(dir.path())
            .arg("--manifest")
            .arg(&manifest)
            .args(["build", "9.8"]),
    );
    assert!(!ok);
    assert!(err.contains("newest-one (9.9)"), "{err}");
}

/// `repin --dry-run` finds the newest ABI of the series and leaves the manifest alone
/// (network: reads the trixie package lists).
#[test]
fn cli_repin_dry_run_finds_abi_in_series_and_writes_nothing() {
    let cache = tempfile::tempdir().unwrap();
    let manifest = cache.path().join("manifest.toml");
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("manifest.toml"))
        .unwrap();
    std::fs::write(&manifest, &text).unwrap();
    let out = guest_image(cache.path())
        .arg("--manifest")
        .arg(&manifest)
        .args(["repin", "6.12", "--dry-run"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("6.12: abi 6.12.") && stdout.contains("+deb13"),
        "{stdout}"
    );
    assert_eq!(std::fs::read_to_string(&manifest).unwrap(), text);
}
