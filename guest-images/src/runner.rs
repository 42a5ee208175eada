//! The L1 runner image of the nested runner: a Debian kernel with KVM modules, the `iommu-vmm` binary and the L2 images.
//!
//! On hosts whose `/dev/kvm` cannot run a stock kernel (kvm_pvm, no VT-x/AMD-V, or no KVM at all),
//! `iommu-vmm` boots itself inside an L1 machine: QEMU in TCG mode with an AMD EPYC CPU model, so the
//! L1 kernel has SVM with nested paging and loads `kvm_amd`. This module builds what that L1 machine
//! boots, and caches it:
//!
//! - the kernel of Debian's `linux-image-6.1.0-*-amd64` package, chosen for guest
//!   [`RUNNER_GUEST`] of `manifest.toml` the way image builds choose it ([`crate::resolve`]:
//!   the manifest's record while the archive has it, else the newest ABI of the series;
//!   fetched and checked by [`crate::apt`]);
//! - an uncompressed newc initramfs holding `/init` (`guest-images/runner/init`, a busybox shell
//!   script), a static busybox, the kernel modules for KVM (`irqbypass`, `kvm`, `ccp`, `kvm_amd`) and
//!   for 9p over virtio (how the L1 machine sees the host's files), the static `kvm-smoke` check
//!   (`guest-images/runner/kvm-smoke.c`, compiled here with gcc), and the `iommu-vmm` binary with the
//!   shared libraries `ldd` names for it.
//!
//! The image is cached under [`cache_dir`]`/runner/images/<key>/` where the key hashes everything that goes
//! in (the `iommu-vmm` binary's content included), so a rebuilt binary gets a new image automatically.
//! The L2 guest images and disks are not copied in: the nested runner shares the host directories
//! that hold them over 9p (see `iommu_nested`), which also brings written disks and traces back.
//!
//! Packages come through the crate's private apt setup ([`crate::apt`], [`crate::cache`]) and
//! the initramfs is written by [`crate::initramfs::Tree`] (uncompressed: L1 boots faster).

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs;
use std::io::{self, BufWriter, Read};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::apt::{AptRepo, Mirrors};
use crate::cache::Cache;
use crate::manifest::{Manifest, PackageRef, Role};

/// The guest of `manifest.toml` whose kernel and busybox the L1 runner uses by default
/// (bookworm's 6.1: its kvm_amd runs nested under QEMU's EPYC model; measured facts in
/// `vmm/nested/README.md`).
/// [`build_runner_for`] takes another one (`IOMMU_VMM_NESTED_L1_KERNEL` in `iommu_nested`).
pub const RUNNER_GUEST: &str = "6.1";
/// Modules `/init` loads (their dependencies are found and loaded first): virtio-pci and 9p for
/// the host's files, then KVM for AMD (the L1 CPU model is EPYC).
pub const RUNNER_MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p", "kvm_amd"];

/// The runner's `/init` script, embedded so the image only depends on the crate's source.
pub const INIT_SCRIPT: &str = include_str!("../runner/init");
/// Source of the static `/dev/kvm` smoke check run by `/init` before any job.
pub const KVM_SMOKE_SOURCE: &str = include_str!("../runner/kvm-smoke.c");

/// Bumped whenever the image layout changes, so old cached images are not reused.
const FORMAT_VERSION: u32 = 2;
/// How many runner images to keep in the cache (each binary change makes a new one).
const KEEP_IMAGES: usize = 3;

/// Errors while fetching packages or building the runner image.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// A file system operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// An external tool (gcc, ldd) failed or is missing.
    #[error("{tool} failed: {detail}")]
    Tool {
        /// The command that failed.
        tool: String,
        /// Its error output or the reason it could not start.
        detail: String,
    },
    /// Something expected in a package or on the host was not found.
    #[error("{0}")]
    Missing(String),
    /// Fetching or unpacking Debian packages failed (the guest-image machinery's error).
    #[error(transparent)]
    Images(#[from] crate::Error),
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> RunnerError + use<> {
    let path = path.to_path_buf();
    move |source| RunnerError::Io { what, path, source }
}

/// The project's cache directory ([`Cache::from_env`]: `$IOMMU_EMU_CACHE`, else
/// `$XDG_CACHE_HOME/iommu-emulator`, else `~/.cache/iommu-emulator`), or a directory under the
/// system temp dir when none of those is set.
pub fn cache_dir() -> PathBuf {
    Cache::from_env()
        .map(|c| c.root().to_path_buf())
        .unwrap_or_else(|_| std::env::temp_dir().join("iommu-emulator-cache"))
}

fn run_tool(cmd: &mut Command) -> Result<std::process::Output, RunnerError> {
    let tool = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| RunnerError::Tool {
        tool: tool.clone(),
        detail: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(RunnerError::Tool {
            tool,
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(out)
}

/// The host's Debian release codename (`VERSION_CODENAME` of /etc/os-release).
pub fn host_codename() -> Option<String> {
    let text = fs::read_to_string("/etc/os-release").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|c| c.trim_matches('"').to_string())
        .filter(|c| !c.is_empty())
}

/// Downloads the newest version of each package in `suite` (through a private apt setup in the
/// cache, same mirror as the host's) into the cache's `debs/` and returns the `.deb` paths.
/// Used for QEMU from bookworm-backports.
pub fn fetch_suite_packages(suite: &str, names: &[&str]) -> Result<Vec<PathBuf>, RunnerError> {
    let cache = Cache::from_env()?;
    let suites = vec![suite.to_string()];
    let repo = AptRepo::new(cache.apt(&suites), suites, Mirrors::discover()?);
    repo.prepare()?;
    let mut updated = false;
    if !repo.has_lists() {
        repo.update()?;
        updated = true;
    }
    let mut out = Vec::new();
    for name in names {
        let pkg = PackageRef {
            name: (*name).to_string(),
            version: None,
        };
        let mut r = repo.resolve(&pkg)?;
        if r.is_none() && !updated {
            repo.update()?;
            updated = true;
            r = repo.resolve(&pkg)?;
        }
        let r = r.ok_or_else(|| RunnerError::Missing(format!("{name} is not in {suite}")))?;
        out.push(repo.download(&r, &cache.debs())?);
    }
    Ok(out)
}

/// Extracts `deb` once into `<cache>/runner/pkgs/<deb file stem>` and returns that folder.
/// Concurrent callers each extract into a private folder; the first rename wins.
pub fn extracted_package(deb: &Path) -> Result<PathBuf, RunnerError> {
    let stem = deb
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .ok_or_else(|| RunnerError::Missing(format!("bad .deb path {}", deb.display())))?;
    let base = cache_dir().join("runner").join("pkgs");
    let root = base.join(&stem);
    if root.is_dir() {
        return Ok(root);
    }
    let staged = base.join(format!(".{stem}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&staged);
    crate::deb::extract(deb, &staged)?;
    match fs::rename(&staged, &root) {
        Ok(()) => Ok(root),
        Err(_) if root.is_dir() => {
            let _ = fs::remove_dir_all(&staged);
            Ok(root)
        }
        Err(e) => Err(io_err("rename", &root)(e)),
    }
}

/// The extracted kernel and busybox packages of [`RUNNER_GUEST`]: (kernel package root,
/// busybox binary, kernel release). The versions are resolved like an image build's
/// ([`crate::image::fetch_guest_packages`]: the manifest's record while the archive has it,
/// else the newest ABI of the series, said in one line). Apt runs only the first time for a
/// given manifest entry; afterwards a stamp in the cache names the extracted folders and the
/// release, so the runner works offline.
fn runner_packages(guest: &str) -> Result<(PathBuf, PathBuf, String), RunnerError> {
    let cache = Cache::from_env()?;
    let manifest = Manifest::embedded()?;
    let spec = manifest.guest(guest)?.clone();
    let stamp = cache.root().join("runner").join(format!(
        "packages-{}.txt",
        hex_digest(&[&spec.canonical(), &spec.record_text()])
    ));
    if let Ok(text) = fs::read_to_string(&stamp) {
        let mut lines = text.lines();
        if let (Some(k), Some(b), Some(r)) = (lines.next(), lines.next(), lines.next()) {
            let (k, b) = (PathBuf::from(k), PathBuf::from(b));
            if k.is_dir() && b.is_file() && !r.is_empty() {
                return Ok((k, b, r.to_owned()));
            }
        }
    }
    let progress = crate::progress::Progress::new("runner", true);
    let prefs = [(crate::resolve::PinSource::Manifest, spec.record())];
    let mut runner_spec = spec.clone();
    runner_spec.host_libs.clear();
    let (res, debs) =
        crate::image::fetch_guest_packages(&cache, &runner_spec, &prefs, false, &progress)?;
    let release = res.release();
    let mut kernel_debs = Vec::new();
    let mut busybox = None;
    for (role, _, path) in &debs {
        match role {
            Role::Image => kernel_debs.push(path.clone()),
            Role::Busybox => busybox = Some(crate::deb::busybox_in(&extracted_package(path)?)?),
            _ => {}
        }
    }
    let kernel_root = match kernel_debs.as_slice() {
        [one] => extracted_package(one)?,
        _ => {
            return Err(RunnerError::Missing(format!(
                "the runner takes a kernel packaged as one linux-image .deb; {release} comes \
                 in {} packages",
                kernel_debs.len()
            )));
        }
    };
    let Some(b) = busybox else {
        return Err(RunnerError::Missing(
            "the resolution named no busybox-static".into(),
        ));
    };
    if let Some(dir) = stamp.parent() {
        fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    }
    fs::write(
        &stamp,
        format!("{}\n{}\n{release}\n", kernel_root.display(), b.display()),
    )
    .map_err(io_err("write", &stamp))?;
    Ok((kernel_root, b, release))
}

fn hex_digest(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize())
}

/// A built runner image: what QEMU boots as the L1 machine.
#[derive(Debug, Clone)]
pub struct RunnerImage {
    /// The L1 kernel (bzImage).
    pub kernel: PathBuf,
    /// The L1 initramfs (uncompressed newc cpio).
    pub initramfs: PathBuf,
    /// Kernel release of the L1 kernel.
    pub kernel_release: String,
    /// Path of `iommu-vmm` inside the L1 machine, when the image carries one.
    pub vmm_path_in_l1: Option<String>,
    /// The cache key (hex) of this image.
    pub key: String,
    /// True when this call built the image (false: it was cached).
    pub built: bool,
}

/// What goes into a runner image besides the fixed parts.
#[derive(Debug, Clone, Default)]
pub struct RunnerSpec {
    /// The `iommu-vmm` binary to carry (normally `std::env::current_exe()`), with its libraries.
    pub vmm_binary: Option<PathBuf>,
}

/// The `iommu-vmm` binary built beside the running executable (same target directory), for
/// `guest-image build runner` when no binary is named.
pub fn default_vmm_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [dir.join("iommu-vmm"), dir.parent()?.join("iommu-vmm")]
        .into_iter()
        .find(|p| p.is_file())
}

/// Builds the runner image with the kernel of [`RUNNER_GUEST`], or returns the cached one when
/// nothing that goes in changed.
pub fn build_runner(spec: &RunnerSpec) -> Result<RunnerImage, RunnerError> {
    build_runner_for(spec, RUNNER_GUEST)
}

/// [`build_runner`] with the kernel and busybox of another manifest guest (`"6.12"`): an
/// x86_64 Debian kernel with kvm_amd and 9p as modules (plain or `.ko.xz`; modules the kernel
/// has built in, such as 6.12's virtio_pci, are skipped).
pub fn build_runner_for(spec: &RunnerSpec, guest: &str) -> Result<RunnerImage, RunnerError> {
    let (kernel_root, busybox, release) = runner_packages(guest)?;
    let kernel = kernel_root.join("boot").join(format!("vmlinuz-{release}"));
    if !kernel.exists() {
        return Err(RunnerError::Missing(format!(
            "the kernel package has no {}",
            kernel.display()
        )));
    }
    // Boot the uncompressed ELF through its PVH entry when it can be had: QEMU then skips
    // SeaBIOS' bzImage path and the xz decompression, which under TCG cost ~7 s per L1 boot.
    let kernel = match pvh_vmlinux(&kernel) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("guest-image [runner] booting the compressed kernel (no PVH vmlinux: {e})");
            kernel
        }
    };
    let modules_dir = crate::deb::modules_dir(&kernel_root, &release)?;
    let modules = module_closure(&modules_dir, RUNNER_MODULES)?;

    let libs = match &spec.vmm_binary {
        Some(bin) => shared_libraries(bin)?,
        None => Vec::new(),
    };

    // The cache key covers every input.
    let mut key = Sha256::new();
    let mut add = |bytes: &[u8]| {
        key.update((bytes.len() as u64).to_le_bytes());
        key.update(bytes);
    };
    add(format!("format {FORMAT_VERSION} release {release}").as_bytes());
    add(INIT_SCRIPT.as_bytes());
    add(KVM_SMOKE_SOURCE.as_bytes());
    for f in [&kernel, &busybox] {
        add(file_digest(f)?.as_bytes());
    }
    for (rel, _) in &modules {
        add(rel.as_bytes());
    }
    if let Some(bin) = &spec.vmm_binary {
        add(file_digest(bin)?.as_bytes());
    }
    for lib in &libs {
        add(lib.to_string_lossy().as_bytes());
        add(file_digest(lib)?.as_bytes());
    }
    let key = hex::encode(key.finalize());

    let images = cache_dir().join("runner").join("images");
    let dir = images.join(&key);
    let initramfs = dir.join("initramfs.cpio");
    let image = RunnerImage {
        kernel: kernel.clone(),
        initramfs: initramfs.clone(),
        kernel_release: release.clone(),
        vmm_path_in_l1: spec
            .vmm_binary
            .as_ref()
            .map(|_| "/bin/iommu-vmm".to_string()),
        key: key.clone(),
        built: false,
    };
    if initramfs.exists() {
        // Touch so cache pruning keeps recently used images.
        let _ = fs::File::options()
            .append(true)
            .open(&initramfs)
            .and_then(|f| f.set_modified(std::time::SystemTime::now()));
        return Ok(image);
    }

    // Build in a private directory and rename it into place, so concurrent builders never see a
    // half-written image.
    fs::create_dir_all(&images).map_err(io_err("create", &images))?;
    let tmp = images.join(format!(".build-{key}-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io_err("remove", &tmp))?;
    }
    fs::create_dir_all(&tmp).map_err(io_err("create", &tmp))?;

    let smoke = tmp.join("kvm-smoke");
    compile_smoke(&tmp, &smoke)?;

    let mut t = crate::image::base_tree(&busybox)?;
    for d in ["dev", "ctl", "host"] {
        t.dir(d, 0o755)?;
    }
    t.file("init", 0o755, INIT_SCRIPT)?;
    t.host_file("bin/kvm-smoke", 0o755, &smoke)?;
    let mut load_list = String::new();
    for (rel, path) in &modules {
        // Without the compression suffix: busybox insmod takes plain `.ko` files.
        let dest = format!("lib/modules/{release}/{}", crate::modules::plain_path(rel));
        if rel.ends_with(".ko") {
            t.host_file(&dest, 0o644, path)?;
        } else {
            t.file(&dest, 0o644, crate::modules::read_module(path)?)?;
        }
        load_list.push_str(&format!("/{dest}\n"));
    }
    t.file("etc/runner-modules", 0o644, load_list)?;
    if let Some(bin) = &spec.vmm_binary {
        t.host_file("bin/iommu-vmm", 0o755, &stripped_binary(bin, &tmp))?;
        for lib in &libs {
            let rel = lib.to_string_lossy();
            t.host_file(rel.trim_start_matches('/'), 0o755, lib)?;
        }
    }
    let cpio_path = tmp.join("initramfs.cpio");
    let file = fs::File::create(&cpio_path).map_err(io_err("create", &cpio_path))?;
    t.write_cpio(BufWriter::new(file))?
        .into_inner()
        .map_err(|e| io_err("write", &cpio_path)(e.into_error()))?
        .sync_all()
        .map_err(io_err("write", &cpio_path))?;
    let _ = fs::remove_file(&smoke);
    let _ = fs::remove_file(tmp.join("iommu-vmm.stripped"));
    fs::write(
        tmp.join("manifest.txt"),
        format!(
            "kernel {}\nvmm {}\nmodules {}\n",
            kernel.display(),
            spec.vmm_binary
                .as_ref()
                .map_or("-".into(), |b| b.display().to_string()),
            modules.len()
        ),
    )
    .map_err(io_err("write", &tmp))?;
    match fs::rename(&tmp, &dir) {
        Ok(()) => {}
        // Another process built the same image at the same time: use theirs.
        Err(_) if initramfs.exists() => {
            let _ = fs::remove_dir_all(&tmp);
        }
        Err(e) => return Err(io_err("rename", &dir)(e)),
    }
    prune_images(&images, &key);
    Ok(RunnerImage {
        built: true,
        ..image
    })
}

/// The ELF `vmlinux` inside a bzImage compressed with xz (Debian's x86 kernels, which also have
/// `CONFIG_PVH=y`, so QEMU can start the ELF directly), extracted once next to the bzImage.
pub fn pvh_vmlinux(bzimage: &Path) -> Result<PathBuf, RunnerError> {
    let out = bzimage.with_file_name(format!(
        "{}.pvh-vmlinux",
        bzimage
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    if out.is_file() {
        return Ok(out);
    }
    let data = fs::read(bzimage).map_err(io_err("read", bzimage))?;
    let magic = b"\xfd7zXZ\x00";
    let start = data
        .windows(magic.len())
        .position(|w| w == magic)
        .ok_or_else(|| RunnerError::Missing("no xz stream in the bzImage".into()))?;
    // The kernel's xz stream uses the x86 BCJ filter (which lzma-rs lacks): the host's `xz`
    // decodes it; `--single-stream` ignores the rest of the bzImage after the stream.
    let mut child = Command::new("xz")
        .args(["-dc", "--single-stream"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| RunnerError::Tool {
            tool: "xz".into(),
            detail: format!("{e} (apt-get install xz-utils)"),
        })?;
    let mut stdin = child.stdin.take();
    let payload = data.get(start..).unwrap_or_default().to_vec();
    let writer = std::thread::spawn(move || {
        if let Some(w) = stdin.as_mut() {
            let _ = std::io::Write::write_all(w, &payload);
        }
    });
    let output = child.wait_with_output().map_err(|e| RunnerError::Tool {
        tool: "xz".into(),
        detail: e.to_string(),
    })?;
    let _ = writer.join();
    let elf = output.stdout;
    if !elf.starts_with(b"\x7fELF") {
        return Err(RunnerError::Missing("the xz stream is not an ELF".into()));
    }
    let tmp = out.with_extension(format!("tmp-{}", std::process::id()));
    fs::write(&tmp, &elf).map_err(io_err("write", &tmp))?;
    fs::rename(&tmp, &out).map_err(io_err("rename", &out))?;
    Ok(out)
}

/// SHA-256 (hex) of a file's content, remembered in the cache per (path, size, mtime, inode) so
/// an unchanged 60 MB debug binary is not hashed again on every nested run.
fn file_digest(path: &Path) -> Result<String, RunnerError> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(path).map_err(io_err("stat", path))?;
    let id = hex_digest(&[
        &path.to_string_lossy(),
        &meta.len().to_string(),
        &meta.mtime().to_string(),
        &meta.mtime_nsec().to_string(),
        &meta.ino().to_string(),
    ]);
    let memo = cache_dir().join("runner").join("digests").join(id);
    if let Ok(d) = fs::read_to_string(&memo)
        && d.len() == 64
    {
        return Ok(d);
    }
    let d = hash_file(path)?;
    if let Some(dir) = memo.parent()
        && fs::create_dir_all(dir).is_ok()
    {
        let _ = fs::write(&memo, &d);
    }
    Ok(d)
}

fn hash_file(path: &Path) -> Result<String, RunnerError> {
    let mut f = fs::File::open(path).map_err(io_err("open", path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io_err("read", path))?;
        if n == 0 {
            break;
        }
        h.update(buf.get(..n).unwrap_or_default());
    }
    Ok(hex::encode(h.finalize()))
}

/// Keeps the [`KEEP_IMAGES`] most recently used images.
fn prune_images(images: &Path, keep: &str) {
    let Ok(entries) = fs::read_dir(images) else {
        return;
    };
    let mut dirs: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter(|e| e.file_name() != OsStr::new(keep))
        .filter_map(|e| {
            let m = fs::metadata(e.path().join("initramfs.cpio"))
                .and_then(|m| m.modified())
                .ok()?;
            Some((m, e.path()))
        })
        .collect();
    dirs.sort();
    dirs.reverse();
    for (_, d) in dirs.into_iter().skip(KEEP_IMAGES.saturating_sub(1)) {
        let _ = fs::remove_dir_all(d);
    }
}

/// Compiles the static smoke check with the host's gcc.
fn compile_smoke(tmp: &Path, out: &Path) -> Result<(), RunnerError> {
    let src = tmp.join("kvm-smoke.c");
    fs::write(&src, KVM_SMOKE_SOURCE).map_err(io_err("write", &src))?;
    run_tool(
        Command::new("gcc")
            .args(["-static", "-O2", "-Wall", "-o"])
            .arg(out)
            .arg(&src),
    )
    .map_err(|e| match e {
        RunnerError::Tool { tool, detail } => RunnerError::Tool {
            tool,
            detail: format!(
                "{detail} (the runner needs gcc and libc6-dev: apt-get install gcc libc6-dev)"
            ),
        },
        other => other,
    })?;
    let _ = fs::remove_file(&src);
    Ok(())
}

/// The binary without its debug sections (less for the L1 kernel to unpack), or the binary
/// itself when objcopy is missing or fails.
fn stripped_binary(bin: &Path, tmp: &Path) -> PathBuf {
    let out = tmp.join("iommu-vmm.stripped");
    let ok = Command::new("objcopy")
        .arg("--strip-debug")
        .arg(bin)
        .arg(&out)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok { out } else { bin.to_path_buf() }
}

/// The shared libraries (and the ELF interpreter) `ldd` lists for `bin`, as absolute paths.
/// A statically linked binary has none.
pub fn shared_libraries(bin: &Path) -> Result<Vec<PathBuf>, RunnerError> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .map_err(|e| RunnerError::Tool {
            tool: "ldd".into(),
            detail: e.to_string(),
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        if text.contains("not a dynamic executable")
            || String::from_utf8_lossy(&out.stderr).contains("not a dynamic executable")
        {
            return Ok(Vec::new());
        }
        return Err(RunnerError::Tool {
            tool: format!("ldd {}", bin.display()),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    parse_ldd(&text)
}

/// Parses `ldd` output into absolute library paths; a library `ldd` could not find is an error.
pub fn parse_ldd(text: &str) -> Result<Vec<PathBuf>, RunnerError> {
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.contains("=> not found") {
            return Err(RunnerError::Missing(format!(
                "ldd cannot find a library: {line}"
            )));
        }
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

/// Resolves module names to their files and all their dependencies (from each module's `.modinfo`
/// `depends=` field), returned in load order: every module after the modules it depends on.
/// Entries are (path relative to the modules dir, absolute path).
pub fn module_closure(
    modules_dir: &Path,
    wanted: &[&str],
) -> Result<Vec<(String, PathBuf)>, RunnerError> {
    let mut index: HashMap<String, PathBuf> = HashMap::new();
    let mut stack = vec![modules_dir.join("kernel")];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).map_err(io_err("read", &dir))?.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Some(name) = path.file_name().and_then(OsStr::to_str)
                && [".ko", ".ko.xz", ".ko.gz"]
                    .iter()
                    .any(|e| name.ends_with(e))
            {
                // 6.12 and later ship `.ko.xz`: read (and put in the image) decompressed.
                index.insert(crate::modules::module_name(name), path);
            }
        }
    }
    // Modules built into the kernel (6.12 has virtio_pci built in): nothing to load.
    let builtin: Vec<String> = fs::read_to_string(modules_dir.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .map(crate::modules::module_name)
        .collect();
    let mut order: Vec<String> = Vec::new();
    let mut state: BTreeMap<String, bool> = BTreeMap::new(); // false: visiting, true: done
    fn visit(
        name: &str,
        index: &HashMap<String, PathBuf>,
        state: &mut BTreeMap<String, bool>,
        order: &mut Vec<String>,
    ) -> Result<(), RunnerError> {
        let name = name.replace('-', "_");
        match state.get(&name) {
            Some(true) => return Ok(()),
            Some(false) => {
                return Err(RunnerError::Missing(format!(
                    "module dependency cycle at {name}"
                )));
            }
            None => {}
        }
        state.insert(name.clone(), false);
        let path = index
            .get(&name)
            .ok_or_else(|| RunnerError::Missing(format!("kernel module {name} not found")))?;
        let bytes = crate::modules::read_module(path)?;
        for dep in modinfo_depends(&bytes) {
            visit(&dep, index, state, order)?;
        }
        state.insert(name.clone(), true);
        order.push(name);
        Ok(())
    }
    for w in wanted {
        let name = w.replace('-', "_");
        if !index.contains_key(&name) && builtin.contains(&name) {
            continue;
        }
        visit(w, &index, &mut state, &mut order)?;
    }
    let mut out = Vec::new();
    for name in order {
        if let Some(path) = index.get(&name) {
            let rel = path
                .strip_prefix(modules_dir)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            out.push((rel, path.clone()));
        }
    }
    Ok(out)
}

/// The module names in a `.ko`'s `depends=` modinfo string (empty when it has none).
pub fn modinfo_depends(ko: &[u8]) -> Vec<String> {
    let needle = b"depends=";
    let mut i = 0;
    while let Some(pos) = ko
        .get(i..)
        .and_then(|rest| rest.windows(needle.len()).position(|w| w == needle))
    {
        let start = i + pos;
        // modinfo strings are NUL separated: the key must start right after a NUL.
        let at_boundary = start == 0 || ko.get(start - 1) == Some(&0);
        let value_start = start + needle.len();
        if at_boundary {
            let value: Vec<u8> = ko
                .get(value_start..)
                .unwrap_or_default()
                .iter()
                .take_while(|b| **b != 0)
                .copied()
                .collect();
            return String::from_utf8_lossy(&value)
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
        }
        i = value_start;
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_ldd_lists_libraries_and_interpreter() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x1)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x2)\n\t/lib64/ld-linux-x86-64.so.2 (0x3)\n";
        let libs = parse_ldd(text).unwrap();
        assert_eq!(
            libs,
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }

    #[test]
    fn parse_ldd_missing_library_is_error() {
        let text = "\tlibfoo.so.1 => not found\n";
        assert!(parse_ldd(text).is_err());
    }

    #[test]
    fn module_closure_reads_xz_modules_and_skips_built_ins() {
        let d = tempfile::tempdir().unwrap();
        let k = d.path().join("kernel/arch/x86/kvm");
        fs::create_dir_all(&k).unwrap();
        let mut xz = Vec::new();
        lzma_rs::xz_compress(&mut &b"\0depends=kvm\0name=kvm_amd\0"[..], &mut xz).unwrap();
        fs::write(k.join("kvm-amd.ko.xz"), xz).unwrap();
        fs::write(k.join("kvm.ko"), b"\0depends=\0name=kvm\0").unwrap();
        fs::write(
            d.path().join("modules.builtin"),
            "kernel/drivers/virtio/virtio_pci.ko\n",
        )
        .unwrap();
        let got = module_closure(d.path(), &["virtio_pci", "kvm_amd"]).unwrap();
        let rels: Vec<&str> = got.iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(
            rels,
            [
                "kernel/arch/x86/kvm/kvm.ko",
                "kernel/arch/x86/kvm/kvm-amd.ko.xz"
            ]
        );
        // A module neither present nor built in is still an error.
        assert!(module_closure(d.path(), &["9p"]).is_err());
    }

    #[test]
    fn modinfo_depends_reads_nul_delimited_field() {
        let ko =
            b"\x7fELF junk depends=notthis\0license=GPL\0depends=kvm,irqbypass,ccp\0name=kvm_amd\0";
        assert_eq!(modinfo_depends(ko), vec!["kvm", "irqbypass", "ccp"]);
        assert!(modinfo_depends(b"\0depends=\0name=x\0").is_empty());
        assert!(modinfo_depends(b"no field here").is_empty());
    }
}
