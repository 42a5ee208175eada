//! Which host directories the L1 machine sees (over 9p), and where.
//!
//! A directory is mounted in L1 at the same absolute path it has on the host, so the user's
//! arguments, the guest image cache and every path the inner `iommu-vmm` prints stay valid on the
//! host. Only directories that would cover the runner's own files (`/bin`, `/lib`, `/usr`, ...) are
//! mounted under `/host/<n>` instead, and paths into them are rewritten.

use std::ffi::{OsStr, OsString};
use std::path::{Component, Path, PathBuf};

/// Top-level directories of the runner's initramfs (and kernel file systems) that a share must
/// not cover.
const RESERVED: &[&str] = &[
    "/bin", "/lib", "/lib64", "/usr", "/etc", "/dev", "/proc", "/sys", "/ctl", "/host", "/init",
    "/sbin", "/run",
];

/// One host directory exported to L1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// The directory on the host.
    pub host: PathBuf,
    /// Where L1 mounts it.
    pub guest: PathBuf,
    /// The 9p mount tag.
    pub tag: String,
}

/// The set of shares for a run, built from the paths the jobs refer to.
#[derive(Debug, Clone, Default)]
pub struct ShareSet {
    dirs: Vec<PathBuf>,
}

/// Lexically normalises an absolute path (`.` and `..` removed) without touching the file system.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::RootDir | Component::Prefix(_) | Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
        }
    }
    out
}

/// The path with symbolic links resolved, so the directory exported is the real one (9p shows
/// a link as a link, and its target may lie outside every share). For a path that does not
/// exist yet, its parent is resolved. Falls back to [`normalize`].
pub fn resolve(path: &Path) -> PathBuf {
    let norm = normalize(path);
    if let Ok(p) = std::fs::canonicalize(&norm) {
        return p;
    }
    match (norm.parent(), norm.file_name()) {
        (Some(parent), Some(name)) => std::fs::canonicalize(parent)
            .map(|p| p.join(name))
            .unwrap_or(norm),
        _ => norm,
    }
}

fn is_reserved(dir: &Path) -> bool {
    RESERVED.iter().any(|r| dir.starts_with(r))
}

impl ShareSet {
    /// Adds a directory to export (absolute; normalised). `/` itself is never exported.
    pub fn add_dir(&mut self, dir: &Path) {
        let dir = resolve(dir);
        if dir != Path::new("/") {
            self.dirs.push(dir);
        }
    }

    /// Adds what `path` needs: the directory itself, or for a file (existing or about to be
    /// created) its parent directory. Paths in `/dev`, `/proc` and `/sys` need nothing. Returns
    /// whether `path` is covered.
    pub fn add_path(&mut self, path: &Path) -> bool {
        let path = resolve(path);
        if ["/dev", "/proc", "/sys"]
            .iter()
            .any(|p| path.starts_with(p))
        {
            return false;
        }
        if path.is_dir() {
            self.add_dir(&path);
            return true;
        }
        match path.parent() {
            Some(parent) if parent != Path::new("/") && parent.is_dir() => {
                self.add_dir(parent);
                true
            }
            _ => false,
        }
    }

    /// The final shares: nested directories folded into their ancestor, each with a mount point.
    pub fn shares(&self) -> Vec<Share> {
        let mut dirs = self.dirs.clone();
        dirs.sort();
        dirs.dedup();
        let mut kept: Vec<PathBuf> = Vec::new();
        for d in dirs {
            if !kept.iter().any(|k| d.starts_with(k)) {
                kept.push(d);
            }
        }
        kept.into_iter()
            .enumerate()
            .map(|(i, host)| {
                let guest = if is_reserved(&host) {
                    PathBuf::from(format!("/host/{i}"))
                } else {
                    host.clone()
                };
                Share {
                    host,
                    guest,
                    tag: format!("nested{i}"),
                }
            })
            .collect()
    }
}

/// Maps a host path (symbolic links resolved) to its L1 path through `shares`; `None` when no
/// share covers it.
pub fn try_map_path(path: &Path, shares: &[Share]) -> Option<PathBuf> {
    let real = resolve(path);
    shares.iter().find_map(|s| {
        real.strip_prefix(&s.host).ok().map(|rest| {
            if rest.as_os_str().is_empty() {
                s.guest.clone()
            } else {
                s.guest.join(rest)
            }
        })
    })
}

/// Maps a host path to its L1 path through `shares` (unchanged when no share covers it).
pub fn map_path(path: &Path, shares: &[Share]) -> PathBuf {
    try_map_path(path, shares).unwrap_or_else(|| path.to_path_buf())
}

/// The path-like pieces of one argument: the whole argument, or the values of `--opt=value`
/// and of comma-separated `key=value` lists (QEMU-style `path=/x,readonly=on`).
fn pieces(arg: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    // `--opt=value`: the value starts after the first '='.
    if arg.starts_with('-') {
        match arg.find('=') {
            Some(eq) => start = eq.saturating_add(1), // '=' is one byte
            None => return out,
        }
    }
    let mut pos = start;
    for part in arg.get(start..).unwrap_or("").split(',') {
        let (value_off, _) = match part.find('=') {
            Some(eq) if !part.starts_with('/') => (eq.saturating_add(1), ()),
            _ => (0, ()),
        };
        // Offsets into `arg`, so none of these sums exceeds arg.len() + 1.
        let b = pos.saturating_add(value_off);
        let e = pos.saturating_add(part.len());
        if b < e {
            out.push((b, e));
        }
        pos = e.saturating_add(1);
    }
    out
}

/// Calls `f` on each absolute path (or relative path that exists under `cwd`) in `args`.
pub fn for_each_path(args: &[OsString], cwd: &Path, mut f: impl FnMut(&Path)) {
    for arg in args {
        let Some(arg) = arg.to_str() else { continue };
        for (b, e) in pieces(arg) {
            let Some(piece) = arg.get(b..e) else { continue };
            if piece.starts_with('/') {
                f(Path::new(piece));
            } else if !piece.is_empty() && cwd.join(piece).exists() {
                f(&cwd.join(piece));
            }
        }
    }
}

/// Rewrites the absolute paths in `args` into their L1 paths (only paths under a share that is
/// not mounted at its host path change), and relative paths that leave `cwd` into absolute ones.
pub fn rewrite_args(args: &[OsString], cwd: &Path, shares: &[Share]) -> Vec<OsString> {
    args.iter()
        .map(|arg| {
            let Some(s) = arg.to_str() else {
                return arg.clone();
            };
            let mut out = String::new();
            let mut last = 0;
            for (b, e) in pieces(s) {
                let Some(piece) = s.get(b..e) else { continue };
                let mapped = if piece.starts_with('/') {
                    try_map_path(Path::new(piece), shares)
                } else if piece.contains("..") && cwd.join(piece).exists() {
                    try_map_path(&cwd.join(piece), shares)
                } else {
                    None
                };
                if let Some(m) = mapped {
                    out.push_str(s.get(last..b).unwrap_or(""));
                    out.push_str(&m.to_string_lossy());
                    last = e;
                }
            }
            out.push_str(s.get(last..).unwrap_or(""));
            OsString::from(out)
        })
        .collect()
}

/// Removes `--nested <mode>` / `--nested=<mode>` from `args` and puts `--nested off` first, so
/// the inner `iommu-vmm` runs its guest directly on L1's KVM.
pub fn force_nested_off(args: &[OsString]) -> Vec<OsString> {
    let mut out: Vec<OsString> = vec!["--nested".into(), "off".into()];
    let mut skip = false;
    for a in args {
        if skip {
            skip = false;
            continue;
        }
        if a == OsStr::new("--nested") {
            skip = true;
            continue;
        }
        if a.to_str().is_some_and(|s| s.starts_with("--nested=")) {
            continue;
        }
        out.push(a.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn shares_fold_nested_dirs_and_move_reserved_ones() {
        let mut s = ShareSet::default();
        s.add_dir(Path::new("/work/main"));
        s.add_dir(Path::new("/work/main/target/../disks"));
        s.add_dir(Path::new("/usr/src/linux"));
        s.add_dir(Path::new("/"));
        let shares = s.shares();
        assert_eq!(shares.len(), 2, "{shares:?}");
        assert_eq!(shares[0].host, PathBuf::from("/usr/src/linux"));
        assert_eq!(shares[0].guest, PathBuf::from("/host/0"));
        assert_eq!(shares[1].host, PathBuf::from("/work/main"));
        assert_eq!(shares[1].guest, PathBuf::from("/work/main"));
        assert_ne!(shares[0].tag, shares[1].tag);
    }

    #[test]
    fn rewrite_args_maps_reserved_paths_inside_options() {
        let shares = vec![
            Share {
                host: "/usr/src/linux".into(),
                guest: "/host/0".into(),
                tag: "nested0".into(),
            },
            Share {
                host: "/work".into(),
                guest: "/work".into(),
                tag: "nested1".into(),
            },
        ];
        let args = os(&[
            "--kernel",
            "/usr/src/linux/arch/x86/boot/bzImage",
            "--disk=/usr/src/linux/d.img,readonly=on",
            "--disk",
            "path=/usr/src/linux/e.img,format=raw",
            "--initrd",
            "/work/i.cpio",
            "-m",
            "1G",
        ]);
        let out = rewrite_args(&args, Path::new("/work"), &shares);
        assert_eq!(
            out,
            os(&[
                "--kernel",
                "/host/0/arch/x86/boot/bzImage",
                "--disk=/host/0/d.img,readonly=on",
                "--disk",
                "path=/host/0/e.img,format=raw",
                "--initrd",
                "/work/i.cpio",
                "-m",
                "1G",
            ])
        );
    }

    #[test]
    fn for_each_path_finds_option_values_and_existing_relative_paths() {
        let dir = std::env::temp_dir();
        let mut seen = Vec::new();
        for_each_path(
            &os(&[
                "--trace=/a/b.bin",
                "--disk",
                "path=/c/d.img,ro=on",
                "6.1",
                "--x",
            ]),
            &dir,
            |p| seen.push(p.to_path_buf()),
        );
        assert_eq!(
            seen,
            vec![PathBuf::from("/a/b.bin"), PathBuf::from("/c/d.img")]
        );
    }

    #[test]
    fn force_nested_off_replaces_every_form() {
        assert_eq!(
            force_nested_off(&os(&["--nested", "on", "--guest", "6.1", "--nested=auto"])),
            os(&["--nested", "off", "--guest", "6.1"])
        );
    }

    #[test]
    fn symlinked_paths_share_and_map_the_real_directory() {
        let base = std::env::temp_dir().join(format!("nested-share-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("real")).unwrap();
        std::fs::write(base.join("real/disk.img"), b"x").unwrap();
        std::os::unix::fs::symlink(base.join("real"), base.join("link")).unwrap();
        let real = std::fs::canonicalize(base.join("real")).unwrap();
        let mut set = ShareSet::default();
        let arg = format!("{}/link/disk.img,readonly=on", base.display());
        for_each_path(&os(&["--disk", &arg]), Path::new("/"), |p| {
            set.add_path(p);
        });
        let shares = set.shares();
        assert_eq!(shares.len(), 1, "{shares:?}");
        assert_eq!(shares[0].host, real);
        let out = rewrite_args(&os(&["--disk", &arg]), Path::new("/"), &shares);
        assert_eq!(
            out,
            os(&[
                "--disk",
                &format!("{}/disk.img,readonly=on", real.display())
            ])
        );
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn map_path_outside_shares_is_unchanged() {
        assert_eq!(map_path(Path::new("/opt/x"), &[]), PathBuf::from("/opt/x"));
    }
}
