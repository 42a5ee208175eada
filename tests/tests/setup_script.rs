//! `scripts/setup` leaves the host alone: it asks apt-get for exactly the missing packages,
//! with `--no-remove` (apt-get stops rather than remove anything), asks for no version (so
//! nothing is downgraded), installs no QEMU package, says what it installed, and does nothing
//! when everything is there. The host's `apt-get`, `dpkg-query` and `sudo` are replaced by
//! recording fakes on `PATH`, so the test never changes the machine it runs on.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The packages the script needs (kept in step with scripts/setup by the assertions below:
/// a package the script asks for that is not here fails the test).
const NEEDED: &[&str] = &[
    "zstd",
    "xz-utils",
    "gcc",
    "libc6-dev",
    "make",
    "binutils",
    "dpkg",
    "debian-archive-keyring",
    "apt",
];

/// Libraries the script adds on bookworm hosts (the extracted QEMU 10 needs them).
const BOOKWORM_QEMU_LIBS: &[&str] = &[
    "libcapstone4",
    "libfdt1",
    "libslirp0",
    "libpmem1",
    "librdmacm1",
    "libibverbs1",
    "libvdeplug2",
];

/// What the script needs on this host.
fn needed() -> Vec<&'static str> {
    let bookworm = std::fs::read_to_string("/etc/os-release")
        .is_ok_and(|t| t.lines().any(|l| l == "VERSION_CODENAME=bookworm"));
    let mut v = NEEDED.to_vec();
    if bookworm {
        v.extend_from_slice(BOOKWORM_QEMU_LIBS);
    }
    v
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/setup")
}

fn write_exe(dir: &Path, name: &str, text: &str) {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Runs `scripts/setup --packages-only` with fakes: `installed` packages report as installed.
/// Returns (stdout, the apt-get command lines the script ran).
fn run_setup(installed: &[&str]) -> (String, Vec<String>) {
    let dir = tempfile_dir();
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = dir.join("apt.log");
    std::fs::write(dir.join("installed"), installed.join("\n") + "\n").unwrap();
    // dpkg-query -W -f='${Status}' PKG: "install ok installed" for the listed packages.
    write_exe(
        &bin,
        "dpkg-query",
        &format!(
            "#!/bin/sh\nfor last; do :; done\nif grep -qx \"$last\" {}; then printf 'install ok installed'; exit 0; fi\nexit 1\n",
            dir.join("installed").display()
        ),
    );
    write_exe(
        &bin,
        "apt-get",
        &format!("#!/bin/sh\necho \"$*\" >> {}\nexit 0\n", log.display()),
    );
    write_exe(&bin, "sudo", "#!/bin/sh\nexec \"$@\"\n");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg(script())
        .arg("--packages-only")
        .env("PATH", path)
        .output()
        .expect("running scripts/setup");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "setup failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let calls = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    (stdout, calls)
}

fn tempfile_dir() -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "iommu-setup-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn setup_installs_only_missing_packages_with_no_remove() {
    let installed: Vec<&str> = needed()
        .into_iter()
        .filter(|p| !["zstd", "make"].contains(p))
        .collect();
    let (stdout, calls) = run_setup(&installed);
    let install: Vec<&String> = calls.iter().filter(|c| c.contains("install")).collect();
    assert_eq!(install.len(), 1, "one apt-get install: {calls:?}");
    let words: Vec<&str> = install[0].split_whitespace().collect();
    assert!(words.contains(&"--no-remove"), "{words:?}");
    let pkgs: Vec<&str> = words
        .iter()
        .copied()
        .filter(|w| !w.starts_with('-') && *w != "install")
        .collect();
    assert_eq!(pkgs, ["zstd", "make"], "only the missing packages");
    assert!(
        !words.iter().any(|w| w.contains('=')),
        "no version asked for (no downgrade): {words:?}"
    );
    assert!(
        !words.iter().any(|w| w.starts_with("qemu")),
        "no QEMU package: {words:?}"
    );
    assert!(stdout.contains("installed zstd make"), "{stdout}");
}

#[test]
fn setup_with_everything_installed_runs_no_apt_get() {
    let (stdout, calls) = run_setup(&needed());
    assert!(calls.is_empty(), "apt-get ran: {calls:?}");
    assert!(stdout.contains("nothing installed"), "{stdout}");
}
