//! Host programs that run inside the L1 machine: a bundle of binaries, their shared libraries and
//! data directories, started through the bundle's own dynamic loader.
//!
//! The runner image carries only `iommu-vmm` and the libraries `ldd` lists for it. A job that
//! needs another dynamically linked host program in L1 (Debian's `qemu-system-x86_64` for the
//! whole-VM benchmark, which runs QEMU with `-accel kvm` on L1's KVM next to `iommu-vmm`) gets a
//! bundle: copies of the binaries, every library `ldd` lists for any of them, and copies of data
//! directories (QEMU's `-L` firmware folders, symbolic links resolved), cached under
//! `<cache>/runner/bundles/<key>/` where the key covers each input's path, size and modification
//! time. The cache directory is exported to L1 at its own path, so the bundle is reachable
//! there with no change to the runner image, and a program starts as
//! `<bundle>/lib/ld-linux-x86-64.so.2 --library-path <bundle>/lib <bundle>/bin/<name> ...`
//! ([`Bundle::command`]): the host's loader with the host's libraries, independent of what the
//! runner image holds. The same command works on the host itself.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use super::NestedError;

/// How many bundles the cache keeps (the most recently used).
const KEEP_BUNDLES: usize = 3;

/// A cached bundle of host programs for L1 (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// The bundle's folder.
    pub dir: PathBuf,
    /// The ELF interpreter (dynamic loader) copied from the host.
    pub loader: PathBuf,
    /// The folder holding every library.
    pub lib_dir: PathBuf,
    /// The copied binaries, in the order given.
    pub bins: Vec<PathBuf>,
    /// The copied data folders, in the order given.
    pub data_dirs: Vec<PathBuf>,
}

impl Bundle {
    /// The program and arguments that start `bin` (one of [`Bundle::bins`]) through the bundle's
    /// loader and libraries, followed by `args`.
    pub fn command(&self, bin: &Path, args: &[OsString]) -> (PathBuf, Vec<OsString>) {
        let mut out: Vec<OsString> = vec![
            "--library-path".into(),
            self.lib_dir.clone().into_os_string(),
            bin.as_os_str().to_owned(),
        ];
        out.extend(args.iter().cloned());
        (self.loader.clone(), out)
    }
}

fn io(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> NestedError + use<> {
    let msg = format!("{what} {}", path.display());
    move |e| NestedError::Qemu(format!("bundle: {msg}: {e}"))
}

/// The cache key of a bundle: every input's path, size and modification time.
pub fn bundle_key(bins: &[PathBuf], data_dirs: &[PathBuf]) -> Result<String, NestedError> {
    use std::os::unix::fs::MetadataExt;
    // FNV-1a (64 bits) over a description of the inputs: a cache key, not a security boundary.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut update = |bytes: &[u8]| {
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    update(b"bundle v1\0");
    for (kind, paths) in [("bin", bins), ("data", data_dirs)] {
        for p in paths {
            let m = fs::metadata(p).map_err(io("stat", p))?;
            update(
                format!(
                    "{kind} {} {} {} {}\0",
                    p.display(),
                    m.len(),
                    m.mtime(),
                    m.mtime_nsec()
                )
                .as_bytes(),
            );
        }
    }
    Ok(format!("{h:016x}"))
}

/// Builds (or finds in the cache) the bundle of `bins` with their libraries and `data_dirs`.
pub fn bundle(bins: &[PathBuf], data_dirs: &[PathBuf]) -> Result<Bundle, NestedError> {
    let key = bundle_key(bins, data_dirs)?;
    let base = guest_images::runner::cache_dir()
        .join("runner")
        .join("bundles");
    let dir = base.join(&key);
    let layout = |root: &Path| -> Result<Bundle, NestedError> {
        let name = |p: &Path| {
            p.file_name()
                .map(PathBuf::from)
                .ok_or_else(|| NestedError::Qemu(format!("bundle: bad path {}", p.display())))
        };
        let mut b = Bundle {
            dir: root.to_path_buf(),
            loader: root.join("lib").join("ld-linux-x86-64.so.2"),
            lib_dir: root.join("lib"),
            bins: Vec::new(),
            data_dirs: Vec::new(),
        };
        for p in bins {
            b.bins.push(root.join("bin").join(name(p)?));
        }
        for i in 0..data_dirs.len() {
            b.data_dirs.push(root.join("data").join(i.to_string()));
        }
        Ok(b)
    };
    if dir.join("complete").is_file() {
        let _ = fs::write(dir.join("complete"), key.as_bytes());
        return layout(&dir);
    }
    fs::create_dir_all(&base).map_err(io("create", &base))?;
    let tmp = base.join(format!(".build-{key}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    let staged = layout(&tmp)?;
    for d in [tmp.join("bin"), tmp.join("lib"), tmp.join("data")] {
        fs::create_dir_all(&d).map_err(io("create", &d))?;
    }
    let mut loader = None;
    for (src, dst) in bins.iter().zip(&staged.bins) {
        fs::copy(src, dst).map_err(io("copy", src))?;
        let libs = guest_images::runner::shared_libraries(src)
            .map_err(|e| NestedError::Qemu(format!("bundle: {e}")))?;
        for lib in libs {
            let Some(file) = lib.file_name() else {
                continue;
            };
            let is_loader = file.to_string_lossy().starts_with("ld-linux");
            let dest = if is_loader {
                loader = Some(lib.clone());
                staged.loader.clone()
            } else {
                staged.lib_dir.join(file)
            };
            if !dest.exists() {
                fs::copy(&lib, &dest).map_err(io("copy", &lib))?;
            }
        }
    }
    if loader.is_none() {
        let _ = fs::remove_dir_all(&tmp);
        return Err(NestedError::Qemu(
            "bundle: no dynamic loader in ldd's output (static binaries need no bundle)".into(),
        ));
    }
    for (src, dst) in data_dirs.iter().zip(&staged.data_dirs) {
        copy_tree(src, dst)?;
    }
    fs::write(tmp.join("complete"), key.as_bytes()).map_err(io("write", &tmp))?;
    match fs::rename(&tmp, &dir) {
        Ok(()) => {}
        // Built at the same time by another process: use theirs.
        Err(_) if dir.join("complete").is_file() => {
            let _ = fs::remove_dir_all(&tmp);
        }
        Err(e) => return Err(io("rename", &dir)(e)),
    }
    prune(&base, &dir);
    layout(&dir)
}

/// Copies a folder recursively, following symbolic links; dangling links are skipped.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<(), NestedError> {
    fs::create_dir_all(dst).map_err(io("create", dst))?;
    for e in fs::read_dir(src).map_err(io("read", src))?.flatten() {
        let from = e.path();
        let to = dst.join(e.file_name());
        // metadata() follows links: a dangling one fails and is skipped.
        let Ok(meta) = fs::metadata(&from) else {
            continue;
        };
        if meta.is_dir() {
            copy_tree(&from, &to)?;
        } else if meta.is_file() {
            fs::copy(&from, &to).map_err(io("copy", &from))?;
        }
    }
    Ok(())
}

/// Keeps the [`KEEP_BUNDLES`] most recently used bundles (`complete` is rewritten on use).
fn prune(base: &Path, keep: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    let mut dirs: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p != keep)
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .filter_map(|p| {
            let t = fs::metadata(p.join("complete"))
                .and_then(|m| m.modified())
                .ok()?;
            Some((t, p))
        })
        .collect();
    dirs.sort();
    dirs.reverse();
    for (_, d) in dirs.into_iter().skip(KEEP_BUNDLES.saturating_sub(1)) {
        let _ = fs::remove_dir_all(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_command_runs_binary_through_loader_with_library_path() {
        let b = Bundle {
            dir: "/c/b".into(),
            loader: "/c/b/lib/ld-linux-x86-64.so.2".into(),
            lib_dir: "/c/b/lib".into(),
            bins: vec!["/c/b/bin/qemu".into()],
            data_dirs: vec![],
        };
        let (prog, args) = b.command(Path::new("/c/b/bin/qemu"), &["-m".into(), "1G".into()]);
        assert_eq!(prog, PathBuf::from("/c/b/lib/ld-linux-x86-64.so.2"));
        let args: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            ["--library-path", "/c/b/lib", "/c/b/bin/qemu", "-m", "1G"]
        );
    }

    #[test]
    fn bundle_key_changes_with_input_and_fails_on_missing_file() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a");
        fs::write(&a, b"one").unwrap();
        let k1 = bundle_key(std::slice::from_ref(&a), &[]).unwrap();
        fs::write(&a, b"longer").unwrap();
        let k2 = bundle_key(std::slice::from_ref(&a), &[]).unwrap();
        assert_ne!(k1, k2);
        assert!(bundle_key(&[d.path().join("missing")], &[]).is_err());
    }

    #[test]
    fn copy_tree_follows_links_and_skips_dangling_ones() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("sub/f"), b"x").unwrap();
        fs::write(d.path().join("target"), b"t").unwrap();
        std::os::unix::fs::symlink(d.path().join("target"), src.join("link")).unwrap();
        std::os::unix::fs::symlink("/nonexistent/x", src.join("dangling")).unwrap();
        let dst = d.path().join("dst");
        copy_tree(&src, &dst).unwrap();
        assert_eq!(fs::read(dst.join("sub/f")).unwrap(), b"x");
        assert_eq!(fs::read(dst.join("link")).unwrap(), b"t");
        assert!(!dst.join("dangling").exists());
    }
}
