//! Building images: Debian guests from the manifest and guests from a user's kernel tree.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::apt::{AptRepo, Mirrors, ResolvedDeb};
use crate::cache::{Cache, INITRAMFS_FILE, KERNEL_FILE, LOCK_FILE};
use crate::deb;
use crate::error::{Error, IoContext, Result};
use crate::initramfs::Tree;
use crate::lockfile::{FORMAT, ImageLock, LockedKernel, LockedPackage};
use crate::manifest::{GuestSpec, Manifest, Repin, Role};
use crate::modules::{ModuleDb, ModuleFile, plain_path, read_module};
use crate::payload::{self, Kbuild};
use crate::progress::Progress;
use crate::resolve::{Pin, PinSource, Resolution, newest_kernel, resolve};

/// Bumped whenever the builder's output for the same inputs changes.
pub const BUILDER_VERSION: &str = "guest-images/1";

/// Where the payload module sits in the image.
pub const PAYLOAD_MODULE_PATH: &str = "lib/iommutest/iommutest.ko";
/// Load-order list of the kernel modules in the image.
pub const MODULE_LIST_PATH: &str = "etc/iommutest/modules";

/// What a guest is built from: the resolution, and each package with its role, apt's record
/// of it and the local .deb.
pub type Fetched = (Resolution, Vec<(Role, ResolvedDeb, PathBuf)>);

/// Options of a build.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Rebuild even when the cached image is current.
    pub force: bool,
    /// Print only results.
    pub quiet: bool,
    /// Keep the work folder (extracted packages, build trees) after the build.
    pub keep_work: bool,
    /// Refuse to build from anything but the versions in the image's lock (or, without a
    /// lock, the manifest's record), instead of moving to what the archive has now.
    pub locked: bool,
}

/// The result of a build.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// Image name.
    pub name: String,
    /// Image folder.
    pub dir: PathBuf,
    /// The lock record.
    pub lock: ImageLock,
    /// False when the cached image was current and nothing was done.
    pub rebuilt: bool,
}

impl BuiltImage {
    /// Path of the kernel.
    pub fn kernel(&self) -> PathBuf {
        self.dir.join(KERNEL_FILE)
    }
    /// Path of the initramfs.
    pub fn initramfs(&self) -> PathBuf {
        self.dir.join(INITRAMFS_FILE)
    }
}

/// The pieces of an image's initramfs that come from a kernel and a busybox.
#[derive(Debug, Clone)]
pub struct ImageParts {
    /// Kernel release (`uname -r`).
    pub release: String,
    /// The static busybox.
    pub busybox: PathBuf,
    /// Modules folder holding `modules.dep`.
    pub modules_dir: PathBuf,
    /// Modules to load, in order.
    pub modules: Vec<ModuleFile>,
    /// The payload module.
    pub payload_module: PathBuf,
    /// Static programs: name in /bin and host path.
    pub programs: Vec<(String, PathBuf)>,
}

/// Adds busybox, /dev/console and the standard folders to a tree: the base every image
/// (including the nested runner's) starts from.
pub fn base_tree(busybox: &Path) -> Result<Tree> {
    let mut t = Tree::new();
    t.host_file("bin/busybox", 0o755, busybox)?;
    t.symlink("bin/sh", "busybox")?;
    // The kernel opens /dev/console for init before anything is mounted.
    t.char_dev("dev/console", 0o600, 5, 1)?;
    for d in [
        "proc", "sys", "tmp", "root", "sbin", "usr/bin", "usr/sbin", "etc",
    ] {
        t.dir(d, 0o755)?;
    }
    Ok(t)
}

/// Adds kernel modules (decompressed) under `lib/modules/<release>/`, a matching
/// `modules.dep` and the load-order list at [`MODULE_LIST_PATH`].
pub fn add_modules(
    t: &mut Tree,
    release: &str,
    modules_dir: &Path,
    modules: &[ModuleFile],
) -> Result<()> {
    let mut list = String::new();
    let mut dep = String::new();
    for m in modules {
        let plain = plain_path(&m.path);
        let data = read_module(&modules_dir.join(&m.path))?;
        t.file(&format!("lib/modules/{release}/{plain}"), 0o644, data)?;
        list.push_str(&plain);
        list.push('\n');
        dep.push_str(&format!("{plain}:\n"));
    }
    t.file(MODULE_LIST_PATH, 0o644, list)?;
    // A modules.dep naming the modules present, so `modprobe` in the guest finds them
    // (dependencies are loaded explicitly by /init in list order).
    t.file(&format!("lib/modules/{release}/modules.dep"), 0o644, dep)?;
    Ok(())
}

/// Builds the tree of a guest image.
pub fn guest_tree(parts: &ImageParts) -> Result<Tree> {
    let mut t = base_tree(&parts.busybox)?;
    t.file("init", 0o755, payload::init_script())?;
    add_modules(&mut t, &parts.release, &parts.modules_dir, &parts.modules)?;
    t.host_file(PAYLOAD_MODULE_PATH, 0o644, &parts.payload_module)?;
    for (name, path) in &parts.programs {
        t.host_file(&format!("bin/{name}"), 0o755, path)?;
    }
    t.file(
        "etc/iommutest/release",
        0o644,
        format!("{}\n", parts.release),
    )?;
    Ok(t)
}

/// Builds and caches guest images.
#[derive(Debug)]
pub struct Builder {
    cache: Cache,
    manifest: Manifest,
    opts: BuildOptions,
}

fn digest(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Writes the files of a new image into `images/<name>` (replacing the old folder only once
/// the new one is complete) and saves its lock file.
pub fn install_image(
    cache: &Cache,
    name: &str,
    kernel: &Path,
    tree: &Tree,
    mut lock: ImageLock,
) -> Result<BuiltImage> {
    let images = cache.images();
    Cache::ensure(&images)?;
    let staging = images.join(format!(".{name}.new"));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).ctx(|| format!("removing {}", staging.display()))?;
    }
    Cache::ensure(&staging)?;
    std::fs::copy(kernel, staging.join(KERNEL_FILE))
        .ctx(|| format!("copying {}", kernel.display()))?;
    tree.write_gz(&staging.join(INITRAMFS_FILE))?;
    lock.files.clear();
    lock.add_file(&staging, KERNEL_FILE)?;
    lock.add_file(&staging, INITRAMFS_FILE)?;
    lock.save(&staging.join(LOCK_FILE))?;
    let dir = cache.image(name);
    // Move the old image aside first, so the folder is missing only between two renames.
    let old = images.join(format!(".{name}.old"));
    if old.exists() {
        std::fs::remove_dir_all(&old).ctx(|| format!("removing {}", old.display()))?;
    }
    if dir.exists() {
        std::fs::rename(&dir, &old).ctx(|| format!("renaming {}", dir.display()))?;
    }
    std::fs::rename(&staging, &dir).ctx(|| format!("renaming {}", staging.display()))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).ctx(|| format!("removing {}", old.display()))?;
    }
    Ok(BuiltImage {
        name: name.to_owned(),
        dir,
        lock,
        rebuilt: true,
    })
}

impl Builder {
    /// A builder over a cache and a manifest.
    pub fn new(cache: Cache, manifest: Manifest, opts: BuildOptions) -> Self {
        Self {
            cache,
            manifest,
            opts,
        }
    }

    /// The cache.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The private apt setup for a guest's suites.
    pub fn apt_for(&self, spec: &GuestSpec) -> Result<AptRepo> {
        let repo = AptRepo::new(
            self.cache.apt(&spec.suites),
            spec.suites.clone(),
            Mirrors::discover()?,
        );
        repo.prepare()?;
        Ok(repo)
    }

    /// Fingerprint of every input of a Debian guest build: the builder, the guest's entry
    /// (suites, series, modules, host libraries) and record, the packages used (name, version,
    /// SHA-256), the payload sources and the compiler. It depends on what was resolved, not on
    /// the archive, so a current image stays current when the archive moves.
    pub fn debian_inputs(spec: &GuestSpec, packages: &[LockedPackage]) -> Result<String> {
        let used: Vec<String> = packages
            .iter()
            .map(|p| format!("{}={} {}", p.name, p.version, p.sha256))
            .collect();
        Ok(digest(&[
            BUILDER_VERSION,
            &spec.canonical(),
            &spec.record_text(),
            &used.join("\n"),
            &payload::sources_digest(),
            &payload::compiler_id()?,
        ]))
    }

    /// The pins a rebuild keeps while the archive has them, best first: the lock's (when it
    /// was built under the manifest's current record), then the manifest's record.
    pub fn preferences(spec: &GuestSpec, lock: Option<&ImageLock>) -> Vec<(PinSource, Pin)> {
        let record = spec.record();
        let mut prefs = Vec::new();
        if let Some(k) = lock.and_then(|l| l.kernel.as_ref())
            && k.record == spec.record_text()
        {
            prefs.push((
                PinSource::Lock,
                Pin {
                    abi: k.abi.clone(),
                    version: k.version.clone(),
                    busybox: k.busybox.clone(),
                },
            ));
        }
        if prefs.first().is_none_or(|(_, p)| *p != record) {
            prefs.push((PinSource::Manifest, record));
        }
        prefs
    }

    /// Resolves (reading the package lists when they are missing or lack what is wanted) and
    /// downloads the packages of a guest. Returns the resolution and each package with its
    /// role and local .deb path.
    pub fn fetch_packages(
        &self,
        spec: &GuestSpec,
        prefs: &[(PinSource, Pin)],
        progress: &Progress,
    ) -> Result<Fetched> {
        fetch_guest_packages(&self.cache, spec, prefs, self.opts.locked, progress)
    }

    /// The packages of `lock` from the cache's `debs/` folder (each file's SHA-256 checked),
    /// when all are there and the guest's host libraries are the lock's: a rebuild then needs
    /// no archive.
    fn cached_debs(&self, spec: &GuestSpec, lock: &ImageLock) -> Option<Fetched> {
        let k = lock.kernel.as_ref()?;
        let role = |name: &str| {
            if spec.host_libs.iter().any(|h| h == name) {
                Role::HostLib
            } else if name == "busybox-static" {
                Role::Busybox
            } else if name.starts_with("linux-headers-") && name.ends_with("-common") {
                Role::HeadersCommon
            } else if name.starts_with("linux-headers-") {
                Role::Headers
            } else if name.starts_with("linux-kbuild-") {
                Role::Kbuild
            } else {
                Role::Image
            }
        };
        let libs: Vec<&str> = lock
            .packages
            .iter()
            .filter(|p| role(&p.name) == Role::HostLib)
            .map(|p| p.name.as_str())
            .collect();
        if libs.len() != spec.host_libs.len() || lock.packages.is_empty() {
            return None;
        }
        let debs = self.cache.debs();
        let files: Vec<PathBuf> = std::fs::read_dir(&debs)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        let mut out = Vec::new();
        for p in &lock.packages {
            let prefix = format!("{}_{}_", p.name, p.version.replace(':', "%3a"));
            let path = files.iter().find(|f| {
                f.file_name().is_some_and(|n| {
                    let n = n.to_string_lossy();
                    n.starts_with(&prefix) && n.ends_with(".deb")
                }) && crate::initramfs::sha256_file(f).ok().as_deref() == Some(&p.sha256)
            })?;
            let r = ResolvedDeb {
                name: p.name.clone(),
                version: p.version.clone(),
                url: String::new(),
                file_name: path.file_name()?.to_string_lossy().into_owned(),
                size: std::fs::metadata(path).ok()?.len(),
                sha256: p.sha256.clone(),
            };
            out.push((role(&p.name), r, path.clone()));
        }
        let res = Resolution {
            pin: Pin {
                abi: k.abi.clone(),
                version: k.version.clone(),
                busybox: k.busybox.clone(),
            },
            packages: vec![],
            // What the build that chose these said (kept in the new lock).
            notes: k.notes.clone(),
        };
        Some((res, out))
    }

    /// Builds (or finds current) the Debian guest `name` (a manifest name, or the series a
    /// guest is also reachable by). The image's folder is named after the manifest entry.
    pub fn build_debian(&self, name: &str) -> Result<BuiltImage> {
        let spec = self.manifest.guest(name)?.clone();
        let name = spec.name.as_str();
        let _lock = self.cache.lock_build(name)?;
        let progress = Progress::new(name, self.opts.quiet);
        let started = Instant::now();
        payload::check_compiler()?;
        let dir = self.cache.image(name);
        let old = ImageLock::load(&dir.join(LOCK_FILE)).ok().flatten();
        let intact = old.as_ref().is_some_and(|l| {
            l.kind == "debian" && l.is_current(&l.inputs, &dir) && l.kernel.is_some()
        });
        if !self.opts.force
            && intact
            && let Some(lock) = &old
            && lock.inputs == Self::debian_inputs(&spec, &lock.packages)?
        {
            progress.finish(&format!("up to date, nothing to do ({})", dir.display()));
            return Ok(BuiltImage {
                name: name.to_owned(),
                dir,
                lock: lock.clone(),
                rebuilt: false,
            });
        }
        let prefs = Self::preferences(&spec, old.as_ref());
        let offline = match &old {
            Some(lock) if prefs.first().is_some_and(|(s, _)| *s == PinSource::Lock) => {
                self.cached_debs(&spec, lock)
            }
            _ => None,
        };
        let (res, debs) = match offline {
            Some(found) => {
                progress.step("using the lock's packages from the cache");
                found
            }
            None => match self.fetch_packages(&spec, &prefs, &progress) {
                Ok(found) => found,
                // Offline with an image built before: keep using it, and say why.
                Err(e @ Error::ArchiveUnreachable { .. }) if intact && !self.opts.force => {
                    let lock = old.clone().ok_or(e)?;
                    progress.notice(&format!(
                        "the Debian archive cannot be reached and the lock's packages are not \
                         all cached; using the image built before ({}), although its inputs \
                         changed: build again when the archive is reachable",
                        dir.display()
                    ));
                    return Ok(BuiltImage {
                        name: name.to_owned(),
                        dir,
                        lock,
                        rebuilt: false,
                    });
                }
                Err(e) => return Err(e),
            },
        };

        let work = self.cache.work(name);
        if work.exists() {
            std::fs::remove_dir_all(&work).ctx(|| format!("removing {}", work.display()))?;
        }
        let root = work.join("root");
        let host_libs = work.join("host-libs");
        progress.step("unpacking packages");
        for (role, _, path) in &debs {
            let dest = if *role == Role::HostLib {
                &host_libs
            } else {
                &root
            };
            deb::extract(path, dest)?;
        }
        let release = res.release();
        let busybox = deb::busybox_in(&root)?;
        progress.step("resolving the module closure (busybox depmod)");
        deb::depmod(&busybox, &root, &release)?;
        let modules_dir = deb::modules_dir(&root, &release)?;
        let modules = ModuleDb::load(&modules_dir)?.closure(&spec.modules)?;

        progress.step("building the payload module and programs");
        let (headers, notes) = payload::prepare_debian_headers(&root, &res.pin.abi, &host_libs)?;
        for n in &notes {
            progress.step(n);
        }
        let src = work.join("payload");
        payload::write_sources(&src)?;
        let payload_module = payload::build_module(&Kbuild::Debian(headers), &src, &work)?;
        let programs = payload::build_programs(&src)?;

        progress.step("writing the initramfs");
        let kernel = kernel_in(&root, &release)?;
        let tree = guest_tree(&ImageParts {
            release: release.clone(),
            busybox,
            modules_dir,
            modules,
            payload_module,
            programs,
        })?;
        let packages: Vec<LockedPackage> = debs
            .iter()
            .map(|(_, r, _)| LockedPackage {
                name: r.name.clone(),
                version: r.version.clone(),
                sha256: r.sha256.clone(),
            })
            .collect();
        let kernel_note = LockedKernel {
            abi: res.pin.abi.clone(),
            version: res.pin.version.clone(),
            busybox: res.pin.busybox.clone(),
            record: spec.record_text(),
            notes: res.notes.clone(),
        };
        let lock = ImageLock {
            format: FORMAT,
            name: name.to_owned(),
            kind: "debian".into(),
            release,
            inputs: Self::debian_inputs(&spec, &packages)?,
            kernel: Some(kernel_note),
            packages,
            files: vec![],
        };
        self.finish_build(name, &kernel, &tree, lock, &work, &progress, started)
    }

    /// Builds an image from a user's built kernel tree: its bzImage, modules installed from the
    /// tree, the payload built against the tree, and busybox from the `busybox_from` guest's
    /// suite.
    pub fn build_kernel_tree(
        &self,
        tree_path: &Path,
        name: &str,
        busybox_from: &str,
    ) -> Result<BuiltImage> {
        if self.manifest.guest(name).is_ok()
            || name == "runner"
            || name == "all"
            || name.contains('/')
            || name.is_empty()
        {
            return Err(Error::KernelTree {
                path: tree_path.to_owned(),
                reason: format!("`{name}` is a reserved image name; choose another --name"),
            });
        }
        let tree_path = tree_path
            .canonicalize()
            .ctx(|| format!("opening kernel tree {}", tree_path.display()))?;
        let bad = |reason: &str| Error::KernelTree {
            path: tree_path.clone(),
            reason: reason.to_owned(),
        };
        let bzimage = tree_path.join("arch/x86/boot/bzImage");
        if !bzimage.is_file() {
            return Err(bad(
                "arch/x86/boot/bzImage is missing (build the kernel first: make bzImage modules)",
            ));
        }
        let mut release = std::fs::read_to_string(tree_path.join("include/config/kernel.release"))
            .map_err(|_| bad("include/config/kernel.release is missing (not a built tree?)"))?
            .trim()
            .to_owned();
        if !tree_path.join("Module.symvers").is_file() {
            return Err(bad(
                "Module.symvers is missing (run make modules in the tree)",
            ));
        }
        let spec = self.manifest.guest(busybox_from)?.clone();
        let _lock = self.cache.lock_build(name)?;
        let progress = Progress::new(name, self.opts.quiet);
        let started = Instant::now();
        payload::check_compiler()?;
        let kernel_sha = crate::initramfs::sha256_file(&bzimage)?;
        let symvers_sha = crate::initramfs::sha256_file(&tree_path.join("Module.symvers"))?;
        let inputs = digest(&[
            BUILDER_VERSION,
            "kernel-tree",
            &tree_path.display().to_string(),
            &release,
            &kernel_sha,
            &symvers_sha,
            &spec.busybox,
            &payload::sources_digest(),
            &payload::compiler_id()?,
        ]);
        let dir = self.cache.image(name);
        if !self.opts.force
            && let Some(lock) = ImageLock::load(&dir.join(LOCK_FILE))?
            && lock.is_current(&inputs, &dir)
        {
            progress.finish(&format!("up to date, nothing to do ({})", dir.display()));
            return Ok(BuiltImage {
                name: name.to_owned(),
                dir,
                lock,
                rebuilt: false,
            });
        }
        // busybox-static from the Debian suite (the record's, else the suite's newest).
        let repo = self.apt_for(&spec)?;
        if !repo.has_lists() {
            progress.step("reading the package lists");
            repo.update()?;
        }
        let mut bb_spec = spec.clone();
        bb_spec.host_libs.clear();
        let keep = |n: &str| n == "busybox-static";
        let mut bb = None;
        for attempt in 0..2 {
            let index = repo.index(&keep)?;
            let want = index
                .find("busybox-static", &spec.busybox)
                .or_else(|| index.newest("busybox-static"))
                .map(|e| e.version.clone());
            let r = match want {
                Some(v) => repo.resolve(&crate::manifest::PackageRef {
                    name: "busybox-static".into(),
                    version: Some(v),
                })?,
                None => None,
            };
            if r.is_some() || attempt == 1 {
                bb = r;
                break;
            }
            repo.update()?;
        }
        let bb = bb.ok_or_else(|| Error::PackageMissing {
            guest: spec.name.clone(),
            package: "busybox-static".into(),
            suites: spec.suites.join(", "),
        })?;
        progress.step("fetching busybox-static");
        let bb_deb = repo.download(&bb, &self.cache.debs())?;
        let work = self.cache.work(name);
        if work.exists() {
            std::fs::remove_dir_all(&work).ctx(|| format!("removing {}", work.display()))?;
        }
        let root = work.join("root");
        deb::extract(&bb_deb, &root)?;
        let busybox = deb::busybox_in(&root)?;

        // Modules of the tree, installed into the work folder.
        let mut modules = Vec::new();
        let mut modules_dir = root.join("lib/modules").join(&release);
        if tree_path.join("modules.order").is_file() {
            progress.step("installing the tree's modules");
            let mut make = Command::new("make");
            make.arg("-C")
                .arg(&tree_path)
                .arg(format!("INSTALL_MOD_PATH={}", root.display()))
                .arg("DEPMOD=true")
                .arg("INSTALL_MOD_STRIP=1");
            // Sign on install only when the tree has its signing key (a tree built elsewhere,
            // or from packaged headers, has none).
            if !tree_path.join("certs/signing_key.pem").is_file() {
                make.arg("CONFIG_MODULE_SIG_ALL=");
            }
            payload::run(make.arg("modules_install"), "make modules_install")?;
            // The folder modules_install made names the release the kernel reports (a tree
            // may override KERNELRELEASE, as Debian's headers do).
            let installed: Vec<String> = std::fs::read_dir(root.join("lib/modules"))
                .ctx(|| "reading the installed modules")?
                .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect();
            if let [only] = installed.as_slice() {
                release = only.clone();
            }
            deb::depmod(&busybox, &root, &release)?;
            modules_dir = deb::modules_dir(&root, &release)?;
            let db = ModuleDb::load(&modules_dir)?;
            // A user's config may build these in or leave them out: take the ones it has.
            let wanted: Vec<&String> = spec
                .modules
                .iter()
                .filter(|m| db.closure(&[m.as_str()]).is_ok())
                .collect();
            modules = db.closure(&wanted)?;
        }

        progress.step("building the payload module and programs");
        let src = work.join("payload");
        payload::write_sources(&src)?;
        let payload_module = payload::build_module(&Kbuild::Tree(tree_path.clone()), &src, &work)?;
        let programs = payload::build_programs(&src)?;
        progress.step("writing the initramfs");
        let tree = guest_tree(&ImageParts {
            release: release.clone(),
            busybox,
            modules_dir,
            modules,
            payload_module,
            programs,
        })?;
        let lock = ImageLock {
            format: FORMAT,
            name: name.to_owned(),
            kind: "kernel-tree".into(),
            release,
            inputs,
            kernel: None,
            packages: vec![LockedPackage {
                name: bb.name.clone(),
                version: bb.version.clone(),
                sha256: bb.sha256.clone(),
            }],
            files: vec![],
        };
        self.finish_build(name, &bzimage, &tree, lock, &work, &progress, started)
    }

    /// The end of every build: install the image into the cache, drop the
    /// work folder (unless kept), and report time and size.
    #[allow(clippy::too_many_arguments)]
    fn finish_build(
        &self,
        name: &str,
        kernel: &Path,
        tree: &Tree,
        lock: ImageLock,
        work: &Path,
        progress: &Progress,
        started: Instant,
    ) -> Result<BuiltImage> {
        let built = install_image(&self.cache, name, kernel, tree, lock)?;
        if !self.opts.keep_work {
            std::fs::remove_dir_all(work).ctx(|| format!("removing {}", work.display()))?;
        }
        progress.finish(&format!(
            "built in {:.1} s, {:.1} MiB ({})",
            started.elapsed().as_secs_f64(),
            built.lock.total_size() as f64 / 1048576.0,
            built.dir.display()
        ));
        Ok(built)
    }

    /// Finds the newest kernel ABI of a guest's series (complete with headers and kbuild)
    /// and the newest busybox-static in its suites (after reading the lists again).
    pub fn find_repin(&self, name: &str) -> Result<Repin> {
        let spec = self.manifest.guest(name)?.clone();
        let repo = self.apt_for(&spec)?;
        repo.update()?;
        let index = repo.index(&|n: &str| n.starts_with("linux-") || n == "busybox-static")?;
        let set = newest_kernel(&spec, &index).ok_or_else(|| Error::SeriesGone {
            guest: spec.name.clone(),
            series: format!("series {}", spec.series),
            suites: spec.suites.join(", "),
        })?;
        let busybox = index
            .newest("busybox-static")
            .ok_or_else(|| Error::PackageMissing {
                guest: spec.name.clone(),
                package: "busybox-static".into(),
                suites: spec.suites.join(", "),
            })?
            .version
            .clone();
        let kbuild = set
            .packages
            .iter()
            .find(|(r, _)| *r == Role::Kbuild)
            .map(|(_, n)| n.clone())
            .unwrap_or_else(|| spec.kbuild.clone());
        Ok(Repin {
            abi: set.abi,
            version: set.version,
            busybox,
            kbuild,
        })
    }
}

/// Resolves and downloads the packages of guest `spec` through the private apt setup of
/// its suites in `cache` (shared by image builds and the nested runner's L1 image). The
/// package lists are read when missing, and read again once when they lack what is wanted
/// (a recorded version gone, a download that fails). The notes of a moved version are
/// printed as one notice line each.
pub fn fetch_guest_packages(
    cache: &Cache,
    spec: &GuestSpec,
    prefs: &[(PinSource, Pin)],
    locked: bool,
    progress: &Progress,
) -> Result<Fetched> {
    let repo = AptRepo::new(
        cache.apt(&spec.suites),
        spec.suites.clone(),
        Mirrors::discover()?,
    );
    repo.prepare()?;
    let keep = |n: &str| {
        n.starts_with("linux-") || n == "busybox-static" || spec.host_libs.iter().any(|h| h == n)
    };
    let mut updated = false;
    if !repo.has_lists() {
        progress.step(&format!(
            "reading the package lists of {}",
            spec.suites.join(", ")
        ));
        repo.update()?;
        updated = true;
    }
    let mut failed_once = false;
    loop {
        let index = repo.index(&keep)?;
        let res = resolve(spec, prefs, &index, locked);
        let stale = res.as_ref().map_or(true, Resolution::moved);
        if stale && !updated {
            progress
                .step("the cached package lists lack the recorded versions; reading them again");
            repo.update()?;
            updated = true;
            continue;
        }
        let res = res?;
        // apt's own view: the exact file and its SHA-256 from the signed index.
        let mut resolved = Vec::new();
        let mut unresolved = None;
        for (role, pkg) in &res.packages {
            match repo.resolve(pkg)? {
                Some(r) => resolved.push((*role, r)),
                None => {
                    unresolved = Some(pkg.apt_arg());
                    break;
                }
            }
        }
        if let Some(arg) = unresolved {
            if !updated {
                repo.update()?;
                updated = true;
                continue;
            }
            return Err(Error::Download {
                package: arg,
                detail: "apt cannot resolve it although the package lists name it".into(),
            });
        }
        if !failed_once {
            for note in &res.notes {
                progress.notice(note);
            }
        }
        let total: u64 = resolved.iter().map(|(_, r)| r.size).sum();
        let bar = progress.bytes(&format!("fetching {} packages", resolved.len()), total);
        let mut out = Vec::new();
        let mut failed = None;
        for (role, r) in resolved {
            bar.set_message(r.name.clone());
            match repo.download(&r, &cache.debs()) {
                Ok(path) => {
                    bar.inc(r.size);
                    out.push((role, r, path));
                }
                // Lists older than the archive name files that are gone: read them again once.
                Err(Error::Download { .. }) if !updated => {
                    failed = Some(());
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        bar.finish_and_clear();
        if failed.is_some() {
            progress.step("a download failed; reading the package lists again");
            repo.update()?;
            updated = true;
            failed_once = true;
            continue;
        }
        return Ok((res, out));
    }
}

/// The kernel of `release` in an extracted package tree: `boot/vmlinuz-<release>`, or (Debian
/// 7.x, linux-binary-*) `usr/lib/modules/<release>/vmlinuz`.
pub fn kernel_in(root: &Path, release: &str) -> Result<PathBuf> {
    [
        format!("boot/vmlinuz-{release}"),
        format!("usr/lib/modules/{release}/vmlinuz"),
        format!("lib/modules/{release}/vmlinuz"),
    ]
    .iter()
    .map(|p| root.join(p))
    .find(|p| p.is_file())
    .ok_or_else(|| {
        Error::Contents(format!(
            "no kernel for {release} under {} (looked in boot/ and usr/lib/modules/)",
            root.display()
        ))
    })
}

/// Cached images: name and lock record (or `None` when the lock file is unreadable).
pub fn list_images(cache: &Cache) -> Result<Vec<(String, PathBuf, Option<ImageLock>)>> {
    let dir = cache.images();
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Ok(out);
    };
    for e in rd {
        let e = e.ctx(|| format!("reading {}", dir.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !e.path().is_dir() {
            continue;
        }
        let lock = ImageLock::load(&e.path().join(LOCK_FILE)).ok().flatten();
        out.push((name, e.path(), lock));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// The folder of a cached image, if it is complete.
pub fn image_path(cache: &Cache, name: &str) -> Result<PathBuf> {
    let dir = cache.image(name);
    if dir.join(LOCK_FILE).is_file() && dir.join(KERNEL_FILE).is_file() {
        Ok(dir)
    } else {
        Err(Error::NotCached(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_tree_holds_init_busybox_modules_payload() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("busybox"), b"bb").unwrap();
        std::fs::create_dir_all(d.join("mods/kernel")).unwrap();
        std::fs::write(d.join("mods/kernel/a.ko"), b"a").unwrap();
        let mut xz = Vec::new();
        lzma_rs::xz_compress(&mut &b"b-module"[..], &mut xz).unwrap();
        std::fs::write(d.join("mods/kernel/b.ko.xz"), xz).unwrap();
        std::fs::write(d.join("iommutest.ko"), b"p").unwrap();
        std::fs::write(d.join("odirect_sha"), b"x").unwrap();
        let parts = ImageParts {
            release: "6.1.0-1-amd64".into(),
            busybox: d.join("busybox"),
            modules_dir: d.join("mods"),
            modules: vec![
                ModuleFile {
                    name: "a".into(),
                    path: "kernel/a.ko".into(),
                },
                ModuleFile {
                    name: "b".into(),
                    path: "kernel/b.ko.xz".into(),
                },
            ],
            payload_module: d.join("iommutest.ko"),
            programs: vec![("odirect_sha".into(), d.join("odirect_sha"))],
        };
        let t = guest_tree(&parts).unwrap();
        let out = d.join("i.gz");
        t.write_gz(&out).unwrap();
        let entries = crate::initramfs::read_gz(&out).unwrap();
        let get = |n: &str| entries.iter().find(|e| e.name == n).map(|e| e.data.clone());
        assert!(get("init").unwrap().starts_with(b"#!/bin/busybox sh"));
        assert_eq!(get("bin/busybox").unwrap(), b"bb");
        assert_eq!(
            get("lib/modules/6.1.0-1-amd64/kernel/b.ko").unwrap(),
            b"b-module"
        );
        assert_eq!(
            get(MODULE_LIST_PATH).unwrap(),
            b"kernel/a.ko\nkernel/b.ko\n"
        );
        assert_eq!(get(PAYLOAD_MODULE_PATH).unwrap(), b"p");
        assert!(get("bin/odirect_sha").is_some());
        assert!(
            entries
                .iter()
                .any(|e| e.name == "dev/console" && e.rdev == (5, 1))
        );
    }

    #[test]
    fn image_path_of_uncached_image_says_how_to_build() {
        let dir = tempfile::tempdir().unwrap();
        let err = image_path(&Cache::at(dir.path()), "6.1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("guest-image build 6.1"), "{err}");
    }
}
