//! The L1 runner image of the nested runner: a Debian kernel with KVM modules, the `iommu-vmm` binary and the L2 images.
//!
//! On hosts whose `/dev/kvm` cannot run a stock kernel (kvm_pvm, no VT-x/AMD-V, or no KVM at all),
//! `iommu-vmm` boots itself inside an L1 machine: QEMU in TCG mode with an AMD EPYC CPU model, so the
//! L1 kernel has SVM with nested paging and loads `kvm_amd`. This module builds what that L1 machine
//! boots, and caches it:
//!
//! - the kernel of Debian's `linux-image-6.1.0-*-amd64` package ([`RUNNER_KERNEL_PACKAGE`]);
//! - an uncompressed newc initramfs holding `/init` (`guest-images/runner/init`, a busybox shell
//!   script), a static busybox, the kernel modules for KVM (`irqbypass`, `kvm`, `ccp`, `kvm_amd`) and
//!   for 9p over virtio (how the L1 machine sees the host's files), the static `kvm-smoke` check
//!   (`guest-images/runner/kvm-smoke.c`, compiled here with gcc), and the `iommu-vmm` binary with the
//!   shared libraries `ldd` names for it.
//!
//! The image is cached under [`cache_dir`]`/runner/<key>/` where the key hashes everything that goes
//! in (the `iommu-vmm` binary's content included), so a rebuilt binary gets a new image automatically.
//! The L2 guest images and disks are not copied in: the nested runner shares the host directories
//! that hold them over 9p (see `iommu_vmm::nested`), which also brings written disks and traces back.
//!
//! Until the guest-image crate's own Debian download and cache API exists, the small pieces this
//! needs (cache directory, `apt-get download`, `dpkg-deb -x`, a newc writer) live here.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsStr;
use std::fs;
use std::hash::Hasher;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian package that provides the L1 runner's kernel (bookworm, see MACHINE-NOTES.md).
pub const RUNNER_KERNEL_PACKAGE: &str = "linux-image-6.1.0-56-amd64";
/// Kernel release inside [`RUNNER_KERNEL_PACKAGE`] (its `/lib/modules/<release>` directory).
pub const RUNNER_KERNEL_RELEASE: &str = "6.1.0-56-amd64";
/// Debian package that provides the static busybox of the runner's initramfs.
pub const BUSYBOX_PACKAGE: &str = "busybox-static";
/// Modules `/init` loads, in this order, with their dependencies first: virtio-pci and 9p for the
/// host's files, then KVM for AMD (the L1 CPU model is EPYC) and Intel (for completeness).
pub const RUNNER_MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p", "kvm_amd"];

/// The runner's `/init` script, embedded so the image only depends on the crate's source.
pub const INIT_SCRIPT: &str = include_str!("../runner/init");
/// Source of the static `/dev/kvm` smoke check run by `/init` before any job.
pub const KVM_SMOKE_SOURCE: &str = include_str!("../runner/kvm-smoke.c");

/// Bumped whenever the image layout changes, so old cached images are not reused.
const FORMAT_VERSION: u32 = 1;
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
    /// An external tool (apt-get, dpkg-deb, gcc, ldd) failed or is missing.
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
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> RunnerError + use<> {
    let path = path.to_path_buf();
    move |source| RunnerError::Io { what, path, source }
}

/// The project's cache directory: `$IOMMU_EMU_CACHE`, else `$XDG_CACHE_HOME/iommu-emulator`,
/// else `$HOME/.cache/iommu-emulator`, else a directory under the system temp dir.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("IOMMU_EMU_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("iommu-emulator");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join(".cache").join("iommu-emulator");
    }
    std::env::temp_dir().join("iommu-emulator-cache")
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

/// Reads the Debian mirror URI and the release codename from the host's apt configuration, so a
/// private apt configuration for another suite (bookworm-backports) uses the same mirror.
pub fn host_debian_mirror() -> Option<(String, String)> {
    let os_release = fs::read_to_string("/etc/os-release").ok()?;
    let codename = os_release
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))?
        .trim_matches('"')
        .to_string();
    let mut texts = Vec::new();
    if let Ok(t) = fs::read_to_string("/etc/apt/sources.list") {
        texts.push(t);
    }
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut names: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
        names.sort();
        for p in names {
            if (p.extension() == Some(OsStr::new("sources"))
                || p.extension() == Some(OsStr::new("list")))
                && let Ok(t) = fs::read_to_string(&p)
            {
                texts.push(t);
            }
        }
    }
    for text in &texts {
        // deb822 stanzas.
        for stanza in text.split("\n\n") {
            let field = |name: &str| {
                stanza.lines().find_map(|l| {
                    l.strip_prefix(name)
                        .and_then(|r| r.strip_prefix(':'))
                        .map(str::trim)
                })
            };
            if let (Some(uris), Some(suites)) = (field("URIs"), field("Suites"))
                && suites.split_whitespace().any(|s| s == codename)
                && let Some(uri) = uris.split_whitespace().next()
            {
                return Some((uri.to_string(), codename));
            }
        }
        // One-line format: deb [options] URI suite components.
        for line in text.lines() {
            let words: Vec<&str> = line
                .split_whitespace()
                .filter(|w| !w.starts_with('['))
                .collect();
            if words.len() >= 3
                && words.first() == Some(&"deb")
                && words.get(2) == Some(&&*codename)
                && let Some(uri) = words.get(1)
            {
                return Some(((*uri).to_string(), codename));
            }
        }
    }
    None
}

/// Downloads Debian packages (`name` or `name/suite`) into `dest` with `apt-get download`.
///
/// `extra_suite`, when given, is added through a private apt configuration under
/// [`cache_dir`]`/nested-apt-<suite>` (same mirror as the host's, see [`host_debian_mirror`]), so no file of
/// the host's apt configuration changes and no root is needed. Returns the downloaded `.deb` files.
pub fn apt_download(
    packages: &[&str],
    extra_suite: Option<&str>,
    dest: &Path,
) -> Result<Vec<PathBuf>, RunnerError> {
    fs::create_dir_all(dest).map_err(io_err("create", dest))?;
    let mut opts: Vec<String> = vec!["-o".into(), "APT::Sandbox::User=root".into()];
    if let Some(suite) = extra_suite {
        let (mirror, _) = host_debian_mirror().ok_or_else(|| {
            RunnerError::Missing(
                "no Debian mirror found in /etc/apt (needed for the extra suite)".into(),
            )
        })?;
        let apt = cache_dir().join(format!("nested-apt-{suite}"));
        let lists = apt.join("lists");
        let archives = apt.join("cache/archives/partial");
        fs::create_dir_all(lists.join("partial")).map_err(io_err("create", &lists))?;
        fs::create_dir_all(&archives).map_err(io_err("create", &archives))?;
        let sources = apt.join("extra.sources");
        let text = format!(
            "Types: deb\nURIs: {mirror}\nSuites: {suite}\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        );
        fs::write(&sources, text).map_err(io_err("write", &sources))?;
        opts.extend(
            [
                format!("Dir::Etc::SourceList={}", sources.display()),
                "Dir::Etc::SourceParts=/nonexistent".into(),
                format!("Dir::State::Lists={}", lists.display()),
                format!("Dir::Cache={}", apt.join("cache").display()),
                "Debug::NoLocking=1".into(),
            ]
            .into_iter()
            .flat_map(|o| ["-o".to_string(), o]),
        );
        run_tool(Command::new("apt-get").args(&opts).args(["-q", "update"]))?;
    }
    let before: BTreeSet<PathBuf> = list_debs(dest)?;
    let download = run_tool(
        Command::new("apt-get")
            .args(&opts)
            .arg("download")
            .args(packages)
            .current_dir(dest),
    );
    if download.is_err() && extra_suite.is_none() {
        // The host's package lists may be missing or stale: refresh once (needs root) and retry.
        run_tool(Command::new("apt-get").args(["-q", "update"]))?;
        run_tool(
            Command::new("apt-get")
                .args(&opts)
                .arg("download")
                .args(packages)
                .current_dir(dest),
        )?;
    } else {
        download?;
    }
    let after = list_debs(dest)?;
    let mut found = Vec::new();
    for pkg in packages {
        let name = pkg.split('/').next().unwrap_or(pkg);
        let prefix = format!("{name}_");
        let deb = after
            .iter()
            .filter(|p| {
                p.file_name()
                    .and_then(OsStr::to_str)
                    .is_some_and(|f| f.starts_with(&prefix))
            })
            // Prefer the file this call downloaded.
            .max_by_key(|p| (!before.contains(*p), p.to_path_buf()))
            .ok_or_else(|| RunnerError::Missing(format!("apt-get download gave no {name}")))?;
        found.push(deb.clone());
    }
    Ok(found)
}

fn list_debs(dir: &Path) -> Result<BTreeSet<PathBuf>, RunnerError> {
    Ok(fs::read_dir(dir)
        .map_err(io_err("read", dir))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension() == Some(OsStr::new("deb")))
        .collect())
}

/// Extracts a `.deb` into `dest` with `dpkg-deb -x` (no maintainer scripts, no root needed).
pub fn extract_deb(deb: &Path, dest: &Path) -> Result<(), RunnerError> {
    fs::create_dir_all(dest).map_err(io_err("create", dest))?;
    run_tool(Command::new("dpkg-deb").arg("-x").arg(deb).arg(dest))?;
    Ok(())
}

/// Downloads (once) and extracts (once) a package into `cache_dir()/debs/<name>/root`.
/// Concurrent callers each work in a private directory and the first rename wins.
fn cached_package(name: &str) -> Result<PathBuf, RunnerError> {
    let base = cache_dir().join("debs").join(name);
    let root = base.join("root");
    if root.is_dir() {
        return Ok(root);
    }
    let work = base.join(format!(".work-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    let debs = apt_download(&[name], None, &work)?;
    let deb = debs
        .first()
        .ok_or_else(|| RunnerError::Missing(format!("no .deb for {name}")))?;
    let staged = work.join("root");
    extract_deb(deb, &staged)?;
    let renamed = fs::rename(&staged, &root);
    let _ = fs::remove_dir_all(&work);
    match renamed {
        Ok(()) => Ok(root),
        Err(_) if root.is_dir() => Ok(root),
        Err(e) => Err(io_err("rename", &root)(e)),
    }
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

/// Builds the runner image, or returns the cached one when nothing that goes in changed.
pub fn build_runner(spec: &RunnerSpec) -> Result<RunnerImage, RunnerError> {
    let kernel_root = cached_package(RUNNER_KERNEL_PACKAGE)?;
    let busybox_root = cached_package(BUSYBOX_PACKAGE)?;
    let kernel = kernel_root
        .join("boot")
        .join(format!("vmlinuz-{RUNNER_KERNEL_RELEASE}"));
    if !kernel.exists() {
        return Err(RunnerError::Missing(format!(
            "{} has no {}",
            RUNNER_KERNEL_PACKAGE,
            kernel.display()
        )));
    }
    let busybox = busybox_root.join("bin/busybox");
    let modules_dir = kernel_root.join("lib/modules").join(RUNNER_KERNEL_RELEASE);
    let modules = module_closure(&modules_dir, RUNNER_MODULES)?;

    let libs = match &spec.vmm_binary {
        Some(bin) => shared_libraries(bin)?,
        None => Vec::new(),
    };

    // The cache key covers every input.
    let mut key = ContentHasher::default();
    key.add_str(&format!("format {FORMAT_VERSION} {RUNNER_KERNEL_PACKAGE}"));
    key.add_str(INIT_SCRIPT);
    key.add_str(KVM_SMOKE_SOURCE);
    key.add_file(&kernel)?;
    key.add_file(&busybox)?;
    for (rel, _) in &modules {
        key.add_str(rel);
    }
    if let Some(bin) = &spec.vmm_binary {
        key.add_file(bin)?;
    }
    for lib in &libs {
        key.add_str(&lib.display().to_string());
        key.add_file(lib)?;
    }
    let key = key.hex();

    let images = cache_dir().join("runner");
    let dir = images.join(&key);
    let initramfs = dir.join("initramfs.cpio");
    let image = RunnerImage {
        kernel: kernel.clone(),
        initramfs: initramfs.clone(),
        kernel_release: RUNNER_KERNEL_RELEASE.to_string(),
        vmm_path_in_l1: spec
            .vmm_binary
            .as_ref()
            .map(|_| "/bin/iommu-vmm".to_string()),
        key: key.clone(),
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

    let cpio_path = tmp.join("initramfs.cpio");
    let file = fs::File::create(&cpio_path).map_err(io_err("create", &cpio_path))?;
    let mut cpio = CpioWriter::new(BufWriter::new(file));
    let cpio_err = io_err("write", &cpio_path);
    (|| -> io::Result<()> {
        for d in ["dev", "proc", "sys", "tmp", "ctl", "host", "etc", "bin"] {
            cpio.dir(d)?;
        }
        cpio.file("init", 0o755, INIT_SCRIPT.as_bytes())?;
        cpio.file("bin/busybox", 0o755, &fs::read(&busybox)?)?;
        cpio.symlink("bin/sh", "busybox")?;
        cpio.file("bin/kvm-smoke", 0o755, &fs::read(&smoke)?)?;
        let mut load_list = String::new();
        for (rel, path) in &modules {
            let dest = format!("lib/modules/{RUNNER_KERNEL_RELEASE}/{rel}");
            cpio.file(&dest, 0o644, &fs::read(path)?)?;
            load_list.push_str(&format!("/{dest}\n"));
        }
        cpio.file("etc/runner-modules", 0o644, load_list.as_bytes())?;
        if let Some(bin) = &spec.vmm_binary {
            cpio.file("bin/iommu-vmm", 0o755, &stripped_binary(bin, &tmp)?)?;
            for lib in &libs {
                let rel = lib.to_string_lossy();
                let rel = rel.trim_start_matches('/');
                cpio.file(rel, 0o755, &fs::read(lib)?)?;
            }
        }
        cpio.finish()
    })()
    .map_err(cpio_err)?;
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
    Ok(image)
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

/// The binary without its debug sections (less for the L1 kernel to unpack), or as is when
/// objcopy is missing.
fn stripped_binary(bin: &Path, tmp: &Path) -> io::Result<Vec<u8>> {
    let out = tmp.join("iommu-vmm.stripped");
    let ok = Command::new("objcopy")
        .arg("--strip-debug")
        .arg(bin)
        .arg(&out)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok { fs::read(&out) } else { fs::read(bin) }
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
                && let Some(stem) = name.strip_suffix(".ko")
            {
                index.insert(stem.replace('-', "_"), path);
            }
        }
    }
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
        let bytes = fs::read(path).map_err(io_err("read", path))?;
        for dep in modinfo_depends(&bytes) {
            visit(&dep, index, state, order)?;
        }
        state.insert(name.clone(), true);
        order.push(name);
        Ok(())
    }
    for w in wanted {
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

/// A content hash for cache keys (two SipHash-1-3 lanes with different keys: 128 bits).
#[derive(Default)]
struct ContentHasher {
    a: std::hash::DefaultHasher,
    b: std::hash::DefaultHasher,
    started: bool,
}

impl ContentHasher {
    fn add(&mut self, bytes: &[u8]) {
        if !self.started {
            self.b.write(b"second lane");
            self.started = true;
        }
        self.a.write(bytes);
        self.b.write(bytes);
    }
    fn add_str(&mut self, s: &str) {
        self.add(&(s.len() as u64).to_le_bytes());
        self.add(s.as_bytes());
    }
    fn add_file(&mut self, path: &Path) -> Result<(), RunnerError> {
        let mut f = fs::File::open(path).map_err(io_err("open", path))?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).map_err(io_err("read", path))?;
            if n == 0 {
                break;
            }
            self.add(buf.get(..n).unwrap_or_default());
        }
        Ok(())
    }
    fn hex(&self) -> String {
        format!("{:016x}{:016x}", self.a.finish(), self.b.finish())
    }
}

/// A writer for the newc (SVR4 "070701") cpio format the Linux initramfs unpacker reads.
/// Parent directories are created automatically; all entries are owned by root.
pub struct CpioWriter<W: Write> {
    out: W,
    ino: u32,
    dirs: BTreeSet<String>,
}

impl<W: Write> CpioWriter<W> {
    /// Starts an archive written to `out`.
    pub fn new(out: W) -> Self {
        Self {
            out,
            ino: 1,
            dirs: BTreeSet::new(),
        }
    }

    fn header(&mut self, name: &str, mode: u32, size: usize) -> io::Result<()> {
        let size = u32::try_from(size)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "cpio entry over 4 GiB"))?;
        let name_len = name.len() + 1;
        let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
        write!(
            self.out,
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, name_len, 0
        )?;
        self.ino = self.ino.wrapping_add(1);
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        // Header (110 bytes) + name is padded to a multiple of 4.
        self.pad(110 + name_len)
    }

    fn pad(&mut self, len: usize) -> io::Result<()> {
        let n = (4 - len % 4) % 4;
        self.out.write_all(&[0u8; 3][..n])
    }

    fn parents(&mut self, path: &str) -> io::Result<()> {
        let mut prefix = String::new();
        let parts: Vec<&str> = path.split('/').collect();
        for part in parts.iter().take(parts.len().saturating_sub(1)) {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            if !self.dirs.contains(&prefix) {
                let p = prefix.clone();
                self.dir(&p)?;
            }
        }
        Ok(())
    }

    /// Adds a directory (path relative to the archive root, no leading slash).
    pub fn dir(&mut self, path: &str) -> io::Result<()> {
        if self.dirs.contains(path) {
            return Ok(());
        }
        self.parents(path)?;
        self.dirs.insert(path.to_string());
        self.header(path, 0o040755, 0)
    }

    /// Adds a regular file with permission bits `perm`.
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        self.parents(path)?;
        self.header(path, 0o100000 | (perm & 0o7777), data.len())?;
        self.out.write_all(data)?;
        self.pad(data.len())
    }

    /// Adds a symbolic link to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        self.parents(path)?;
        self.header(path, 0o120777, target.len())?;
        self.out.write_all(target.as_bytes())?;
        self.pad(target.len())
    }

    /// Writes the trailer and flushes.
    pub fn finish(mut self) -> io::Result<()> {
        self.header("TRAILER!!!", 0, 0)?;
        self.out.flush()
    }
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
    fn modinfo_depends_reads_nul_delimited_field() {
        let ko =
            b"\x7fELF junk depends=notthis\0license=GPL\0depends=kvm,irqbypass,ccp\0name=kvm_amd\0";
        assert_eq!(modinfo_depends(ko), vec!["kvm", "irqbypass", "ccp"]);
        assert!(modinfo_depends(b"\0depends=\0name=x\0").is_empty());
        assert!(modinfo_depends(b"no field here").is_empty());
    }

    #[test]
    fn cpio_writer_entries_are_aligned_and_parseable() {
        let mut buf = Vec::new();
        let mut w = CpioWriter::new(&mut buf);
        w.file("a/b/c.txt", 0o644, b"hello").unwrap();
        w.symlink("a/link", "b/c.txt").unwrap();
        w.finish().unwrap();
        // Walk the archive the way the kernel does.
        let mut names = Vec::new();
        let mut off = 0usize;
        loop {
            let hdr = std::str::from_utf8(&buf[off..off + 110]).unwrap();
            assert_eq!(&hdr[..6], "070701", "magic at {off}");
            let field = |i: usize| u32::from_str_radix(&hdr[6 + i * 8..14 + i * 8], 16).unwrap();
            let mode = field(1);
            let size = field(6) as usize;
            let namesize = field(11) as usize;
            let name = std::str::from_utf8(&buf[off + 110..off + 110 + namesize - 1]).unwrap();
            names.push((name.to_string(), mode));
            let data = (off + 110 + namesize).div_ceil(4) * 4;
            if name == "TRAILER!!!" {
                break;
            }
            if name == "a/b/c.txt" {
                assert_eq!(&buf[data..data + size], b"hello");
            }
            off = (data + size).div_ceil(4) * 4;
        }
        let names: Vec<&str> = names.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "a/b", "a/b/c.txt", "a/link", "TRAILER!!!"]);
        assert_eq!(buf.len() % 4, 0);
    }

    #[test]
    fn content_hasher_depends_on_content_and_order() {
        let h = |parts: &[&str]| {
            let mut c = ContentHasher::default();
            for p in parts {
                c.add_str(p);
            }
            c.hex()
        };
        assert_eq!(h(&["a", "b"]), h(&["a", "b"]));
        assert_ne!(h(&["a", "b"]), h(&["b", "a"]));
        assert_ne!(h(&["ab"]), h(&["a", "b"]));
        assert_eq!(h(&["x"]).len(), 32);
    }
}
