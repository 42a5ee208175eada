//! Unpacking .deb files with the host's `dpkg-deb` (present on every Debian-like host).

use std::path::Path;
use std::process::Command;

use crate::apt::find_program;
use crate::error::{Error, Result};
use crate::payload::run;

/// Unpacks the files of a .deb into `dest` (like `dpkg-deb -x`; nothing is installed).
pub fn extract(deb: &Path, dest: &Path) -> Result<()> {
    if find_program("dpkg-deb").is_none() {
        return Err(Error::NotDebianLike);
    }
    std::fs::create_dir_all(dest).map_err(|e| Error::Io {
        context: format!("creating {}", dest.display()),
        source: e,
    })?;
    run(
        Command::new("dpkg-deb").arg("-x").arg(deb).arg(dest),
        &format!("dpkg-deb -x {}", deb.display()),
    )
}

/// Finds the busybox binary in an extracted busybox-static package.
pub fn busybox_in(root: &Path) -> Result<std::path::PathBuf> {
    ["bin/busybox", "usr/bin/busybox"]
        .iter()
        .map(|p| root.join(p))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::Contents(format!("no busybox binary under {}", root.display())))
}

/// The modules folder of `release` in an extracted kernel package
/// (`lib/modules/<release>` or, on merged-/usr suites, `usr/lib/modules/<release>`).
pub fn modules_dir(root: &Path, release: &str) -> Result<std::path::PathBuf> {
    ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|p| root.join(p).join(release))
        .find(|p| p.is_dir())
        .ok_or_else(|| {
            Error::Contents(format!(
                "no modules folder for {release} under {}",
                root.display()
            ))
        })
}

/// Runs `busybox depmod -b ROOT RELEASE`, which writes `modules.dep` (the kernel package
/// ships none; Debian makes it at install time). On merged-/usr trees a `lib` symlink to
/// `usr/lib` is made first, since depmod looks in `ROOT/lib/modules`.
pub fn depmod(busybox: &Path, root: &Path, release: &str) -> Result<()> {
    let lib = root.join("lib");
    if !lib.exists() && root.join("usr/lib/modules").is_dir() {
        std::os::unix::fs::symlink("usr/lib", &lib).map_err(|e| Error::Io {
            context: format!("linking {}", lib.display()),
            source: e,
        })?;
    }
    run(
        Command::new(busybox)
            .arg("depmod")
            .arg("-b")
            .arg(root)
            .arg(release),
        "busybox depmod",
    )
}
