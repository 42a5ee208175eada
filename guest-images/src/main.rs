//! The `guest-image` command: builds, lists and locates cached guest images.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use guest_images::cache::{Cache, INITRAMFS_FILE, KERNEL_FILE};
use guest_images::image::{BuildOptions, Builder, image_path, list_images};
use guest_images::manifest::{self, Manifest};
use guest_images::{Error, Result};

/// Builds and caches bootable guest images (kernel + initramfs + IOMMU test payload) from
/// Debian packages or from your own kernel tree.
#[derive(Debug, Parser)]
#[command(name = "guest-image", version)]
struct Cli {
    /// Manifest of guest kernels (default: the one built into this binary).
    #[arg(long, global = true)]
    manifest: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Build images: guest names from the manifest (5.10, 6.1, 6.12, latest; a guest's kernel
    /// series names it too, e.g. 7.3), `all`, `runner` (the nested runner's L1 image), or a
    /// kernel tree. A guest keeps the kernel of its lock.toml (else the manifest's record)
    /// while the archive has it, else takes the newest of its series and says so.
    Build {
        /// Guests to build; `all` builds every manifest guest.
        names: Vec<String>,
        /// Refuse to move: build only from the versions in the image's lock.toml (without one,
        /// the manifest's record), failing when the archive no longer has them.
        #[arg(long)]
        locked: bool,
        /// Build from your own built kernel tree (bzImage, Module.symvers) instead.
        #[arg(long, requires = "name", conflicts_with = "names")]
        kernel_tree: Option<PathBuf>,
        /// Name of the image built with --kernel-tree.
        #[arg(long)]
        name: Option<String>,
        /// The `iommu-vmm` binary the runner image carries (default: the one built beside
        /// this program).
        #[arg(long)]
        vmm_binary: Option<PathBuf>,
        /// Guest whose Debian suite provides busybox for a --kernel-tree image.
        #[arg(long, default_value = "6.1")]
        busybox_from: String,
        /// Rebuild even when the cached image is current.
        #[arg(long)]
        force: bool,
        /// Keep the work folder (unpacked packages, build trees) for inspection.
        #[arg(long)]
        keep_work: bool,
        /// Print only errors.
        #[arg(long, short)]
        quiet: bool,
    },
    /// List cached images.
    List,
    /// Print the folder of a cached image (or its kernel / initramfs).
    Path {
        /// Image name.
        name: String,
        /// Print the kernel's path.
        #[arg(long, conflicts_with = "initramfs")]
        kernel: bool,
        /// Print the initramfs's path.
        #[arg(long)]
        initramfs: bool,
    },
    /// Record the newest kernel ABI of a guest's series in manifest.toml (the record builds
    /// keep while the archive has it).
    Repin {
        /// Guest name.
        name: String,
        /// Print the new pins without writing the manifest.
        #[arg(long)]
        dry_run: bool,
    },
}

fn run(cli: Cli) -> Result<()> {
    let manifest = match &cli.manifest {
        Some(p) => Manifest::load(p)?,
        None => Manifest::embedded()?,
    };
    let cache = Cache::from_env()?;
    match cli.command {
        Cmd::Build {
            names,
            locked,
            kernel_tree,
            name,
            busybox_from,
            vmm_binary,
            force,
            keep_work,
            quiet,
        } => {
            let opts = BuildOptions {
                force,
                quiet,
                keep_work,
                locked,
            };
            let builder = Builder::new(cache, manifest.clone(), opts);
            if let Some(tree) = kernel_tree {
                let name = name.unwrap_or_default();
                let img = builder.build_kernel_tree(&tree, &name, &busybox_from)?;
                println!("{}", img.dir.display());
                return Ok(());
            }
            if names.is_empty() {
                return Err(Error::UnknownGuest {
                    name: String::new(),
                    known: format!("{}, all", manifest.names_with_aliases().join(", ")),
                });
            }
            let mut list = Vec::new();
            for n in names {
                if n == "all" {
                    list.extend(manifest.names());
                } else if n == "runner" {
                    build_runner(vmm_binary.clone())?;
                } else {
                    list.push(manifest.guest(&n)?.name.clone());
                }
            }
            let mut seen = std::collections::BTreeSet::new();
            list.retain(|n| seen.insert(n.clone()));
            for n in list {
                let img = builder.build_debian(&n)?;
                println!("{}", img.dir.display());
            }
            Ok(())
        }
        Cmd::List => {
            let images = list_images(&cache)?;
            if images.is_empty() {
                println!("no images in {}", cache.images().display());
            }
            for (name, dir, lock) in images {
                match lock {
                    Some(l) => println!(
                        "{name:<10} {:<12} {:<24} {:>7.1} MiB  {}",
                        l.kind,
                        l.release,
                        l.total_size() as f64 / 1048576.0,
                        dir.display()
                    ),
                    None => println!("{name:<10} (incomplete)  {}", dir.display()),
                }
            }
            Ok(())
        }
        Cmd::Path {
            name,
            kernel,
            initramfs,
        } => {
            // A guest's series names it too (`7.3` for `latest`).
            let name = manifest
                .guest(&name)
                .map(|g| g.name.clone())
                .unwrap_or(name);
            let dir = image_path(&cache, &name)?;
            let p = if kernel {
                dir.join(KERNEL_FILE)
            } else if initramfs {
                dir.join(INITRAMFS_FILE)
            } else {
                dir
            };
            println!("{}", p.display());
            Ok(())
        }
        Cmd::Repin { name, dry_run } => {
            let builder = Builder::new(cache, manifest, BuildOptions::default());
            let new = builder.find_repin(&name)?;
            println!(
                "{name}: abi {} version {} busybox-static {}",
                new.abi, new.version, new.busybox
            );
            if !dry_run {
                let path = cli.manifest.unwrap_or_else(manifest::source_path);
                let text = std::fs::read_to_string(&path).map_err(|e| Error::Io {
                    context: format!("reading {} (pass --manifest)", path.display()),
                    source: e,
                })?;
                let out = manifest::repin_text(&text, &name, &new)?;
                std::fs::write(&path, out).map_err(|e| Error::Io {
                    context: format!("writing {}", path.display()),
                    source: e,
                })?;
                println!("wrote {}; rebuild guest-image to use it", path.display());
            }
            Ok(())
        }
    }
}

/// Builds (or finds current) the nested runner's L1 image and prints its files.
fn build_runner(vmm_binary: Option<PathBuf>) -> Result<()> {
    let spec = guest_images::runner::RunnerSpec {
        vmm_binary: vmm_binary.or_else(guest_images::runner::default_vmm_binary),
    };
    if spec.vmm_binary.is_none() {
        eprintln!(
            "guest-image [runner] no iommu-vmm binary found beside this program; the image \
             carries none (pass --vmm-binary)"
        );
    }
    let img = guest_images::runner::build_runner(&spec)
        .map_err(|e| Error::Contents(format!("runner image: {e}")))?;
    println!("{}", img.kernel.display());
    println!("{}", img.initramfs.display());
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("guest-image: {e}");
            ExitCode::FAILURE
        }
    }
}
