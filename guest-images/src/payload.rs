//! Builds the guest payload: the `iommutest` kernel module against a kernel's headers (or a
//! kernel tree) and the static test programs, with the host's gcc and make.
//!
//! Debian's extracted headers build out-of-tree modules without being installed, with two
//! host-compatibility fixes applied to the extracted copy when needed:
//! - options the suite's newer compiler has but the host gcc lacks
//!   (`CONFIG_CC_HAS_MIN_FUNCTION_ALIGNMENT`) or tools the host lacks (`pahole` for module BTF)
//!   are turned off in `include/config/auto.conf`;
//! - kbuild programs linked against a newer C library than the host's are run through that
//!   suite's own dynamic loader and libraries (small wrapper scripts).

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::apt::{find_program, tail};
use crate::error::{Error, IoContext, Result};

/// The payload sources, compiled into the binary so that a built `guest-image` is complete.
pub const SOURCES: &[(&str, &str)] = &[
    ("LICENSE", include_str!("../payload/LICENSE")),
    ("init.sh", include_str!("../payload/init.sh")),
    ("kmod/Kbuild", include_str!("../payload/kmod/Kbuild")),
    (
        "kmod/iommutest.c",
        include_str!("../payload/kmod/iommutest.c"),
    ),
    (
        "kmod/iommutest_main.c",
        include_str!("../payload/kmod/iommutest_main.c"),
    ),
    (
        "kmod/iommutest.h",
        include_str!("../payload/kmod/iommutest.h"),
    ),
    (
        "kmod/iommutest_uapi.h",
        include_str!("../payload/kmod/iommutest_uapi.h"),
    ),
    ("kmod/sva.c", include_str!("../payload/kmod/sva.c")),
    (
        "progs/odirect_sha.c",
        include_str!("../payload/progs/odirect_sha.c"),
    ),
    (
        "progs/sva_user.c",
        include_str!("../payload/progs/sva_user.c"),
    ),
    (
        "progs/perfcount.c",
        include_str!("../payload/progs/perfcount.c"),
    ),
];

/// Static programs built from `progs/` (source name without `.c`).
pub const PROGRAMS: &[&str] = &["odirect_sha", "sva_user", "perfcount"];

/// The `/init` script.
pub fn init_script() -> &'static str {
    include_str!("../payload/init.sh")
}

/// SHA-256 over every payload source (names and contents).
pub fn sources_digest() -> String {
    let mut h = Sha256::new();
    for (name, text) in SOURCES {
        h.update(name.as_bytes());
        h.update([0]);
        h.update((text.len() as u64).to_le_bytes());
        h.update(text.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Writes the payload sources into `dir`.
pub fn write_sources(dir: &Path) -> Result<()> {
    for (name, text) in SOURCES {
        let p = dir.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).ctx(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&p, text).ctx(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// Fails with a plain message when gcc or make is missing.
pub fn check_compiler() -> Result<()> {
    for (program, hint) in [
        (
            "gcc",
            "the payload is compiled on this host: install gcc (apt-get install gcc)",
        ),
        (
            "make",
            "the payload module is built with make: install it (apt-get install make)",
        ),
    ] {
        if find_program(program).is_none() {
            return Err(Error::MissingTool {
                program: program.into(),
                hint: hint.into(),
            });
        }
    }
    Ok(())
}

/// `gcc --version`'s first line: part of every image's input fingerprint.
pub fn compiler_id() -> Result<String> {
    let out = run_capture(Command::new("gcc").arg("--version"), "gcc --version")?;
    Ok(out.lines().next().unwrap_or_default().to_owned())
}

fn run_capture(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd.output().ctx(|| format!("running {what}"))?;
    if !out.status.success() {
        return Err(Error::Command {
            command: what.to_owned(),
            detail: format!(
                "{}: {}",
                out.status,
                tail("", &String::from_utf8_lossy(&out.stderr))
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a command, failing with its error output.
pub fn run(cmd: &mut Command, what: &str) -> Result<()> {
    run_capture(cmd, what).map(drop)
}

/// True when the host gcc accepts a C compiler option.
pub fn gcc_accepts(option: &str) -> bool {
    Command::new("gcc")
        .args([option, "-x", "c", "-c", "-o", "/dev/null", "-"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Turns off, in the text of an `auto.conf`, the options this host cannot honour:
/// `CONFIG_CC_HAS_MIN_FUNCTION_ALIGNMENT` when gcc lacks `-fmin-function-alignment`, and
/// `CONFIG_DEBUG_INFO_BTF_MODULES` when there is no `pahole`. Returns the new text and the
/// names of the options removed.
pub fn auto_conf_fixups(
    text: &str,
    has_min_align: bool,
    has_pahole: bool,
) -> (String, Vec<String>) {
    let mut drop = Vec::new();
    if !has_min_align {
        drop.push("CONFIG_CC_HAS_MIN_FUNCTION_ALIGNMENT");
    }
    if !has_pahole {
        drop.push("CONFIG_DEBUG_INFO_BTF_MODULES");
    }
    let mut removed = Vec::new();
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let key = line.split('=').next().unwrap_or_default();
        if drop.contains(&key) && line.contains('=') {
            removed.push(key.to_owned());
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    (out, removed)
}

/// The newest `GLIBC_2.N` symbol version named in an ELF file's bytes (minor number).
pub fn max_glibc_minor(bytes: &[u8]) -> Option<u32> {
    let pat = b"GLIBC_2.";
    let mut best = None;
    let mut i = 0;
    while let Some(off) = bytes
        .get(i..)
        .and_then(|s| s.windows(pat.len()).position(|w| w == pat))
    {
        let start = i + off + pat.len();
        let digits: String = bytes[start..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .map(|b| *b as char)
            .collect();
        if let Ok(n) = digits.parse::<u32>() {
            best = Some(best.map_or(n, |b: u32| b.max(n)));
        }
        i = start;
    }
    best
}

/// The host C library's minor version (`2.N`), from `getconf GNU_LIBC_VERSION`.
pub fn host_glibc_minor() -> Option<u32> {
    let out = Command::new("getconf")
        .arg("GNU_LIBC_VERSION")
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout);
    s.split_whitespace()
        .nth(1)?
        .strip_prefix("2.")?
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// Extracted Debian headers ready for out-of-tree builds.
#[derive(Debug, Clone)]
pub struct DebianHeaders {
    /// `usr/src/linux-headers-<abi>-amd64`.
    pub amd64: PathBuf,
    /// `usr/src/linux-headers-<abi>-common`.
    pub common: PathBuf,
    /// The compiler the kernel was built with, if the host has it; else `gcc`.
    pub cc: String,
    /// True when objtool cannot run here (the module is then built without it).
    pub no_objtool: bool,
    /// True when the amd64 Makefile sets `KBUILD_OUTPUT` to its installed path (Debian 7.x):
    /// the build then passes the extracted folder as `KBUILD_OUTPUT` instead.
    pub kbuild_output: bool,
}

/// Prepares extracted Debian headers under `root` for building on this host. `host_libs` is a
/// folder with the suite's C library (from its `libc6` etc.), used only when needed.
pub fn prepare_debian_headers(
    root: &Path,
    abi: &str,
    host_libs: &Path,
) -> Result<(DebianHeaders, Vec<String>)> {
    let amd64 = root.join(format!("usr/src/linux-headers-{abi}-amd64"));
    let common = root.join(format!("usr/src/linux-headers-{abi}-common"));
    for d in [&amd64, &common] {
        if !d.join("Makefile").is_file() {
            return Err(Error::Contents(format!("{} has no Makefile", d.display())));
        }
    }
    let mut notes = Vec::new();
    // 1. Options the host compiler or tools cannot honour.
    let auto_conf = amd64.join("include/config/auto.conf");
    let text =
        std::fs::read_to_string(&auto_conf).ctx(|| format!("reading {}", auto_conf.display()))?;
    let (fixed, removed) = auto_conf_fixups(
        &text,
        gcc_accepts("-fmin-function-alignment=16"),
        find_program("pahole").is_some(),
    );
    if !removed.is_empty() {
        std::fs::write(&auto_conf, fixed).ctx(|| format!("writing {}", auto_conf.display()))?;
        notes.push(format!("turned off for this host: {}", removed.join(", ")));
    }
    // 2. kbuild programs that need a newer C library than the host's.
    let mut no_objtool = false;
    let host_minor = host_glibc_minor().unwrap_or(u32::MAX);
    let kbuild_dirs: Vec<PathBuf> = std::fs::read_dir(root.join("usr/lib"))
        .ctx(|| format!("reading {}/usr/lib", root.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("linux-kbuild-"))
        })
        .collect();
    let loader = host_libs.join("usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2");
    let loader = if loader.exists() {
        loader
    } else {
        host_libs.join("lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    };
    let mut wrapped = 0;
    for dir in kbuild_dirs {
        for file in walk_files(&dir)? {
            let bytes = std::fs::read(&file).ctx(|| format!("reading {}", file.display()))?;
            if !bytes.starts_with(b"\x7fELF") {
                continue;
            }
            let Some(need) = max_glibc_minor(&bytes) else {
                continue;
            };
            if need <= host_minor {
                continue;
            }
            if !loader.exists() {
                let name = file
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                if name.starts_with("objtool") {
                    no_objtool = true;
                    continue;
                }
                return Err(Error::Contents(format!(
                    "{} needs glibc 2.{need} (host has 2.{host_minor}); list libc6 in the \
                     guest's host_libs in the manifest",
                    file.display()
                )));
            }
            wrap_with_loader(&file, &loader)?;
            wrapped += 1;
        }
    }
    if wrapped > 0 {
        notes.push(format!(
            "{wrapped} kbuild programs run with the suite's C library"
        ));
    }
    // The compiler the headers name (gcc-N), when the host has it.
    let vars = std::fs::read_to_string(amd64.join(".kernelvariables")).unwrap_or_default();
    let cc = vars
        .lines()
        .filter(|l| l.trim_start().starts_with("CC"))
        .find_map(|l| {
            l.split_whitespace()
                .last()
                .map(|w| w.trim_start_matches("$(CROSS_COMPILE)").to_owned())
        })
        .filter(|c| c.starts_with("gcc") && find_program(c).is_some())
        .unwrap_or_else(|| "gcc".to_owned());
    let kbuild_output = std::fs::read_to_string(amd64.join("Makefile"))
        .unwrap_or_default()
        .lines()
        .any(|l| l.trim_start().starts_with("KBUILD_OUTPUT"));
    Ok((
        DebianHeaders {
            amd64,
            common,
            cc,
            no_objtool,
            kbuild_output,
        },
        notes,
    ))
}

fn wrap_with_loader(file: &Path, loader: &Path) -> Result<()> {
    let real = file.with_file_name(format!(
        "{}.glibc-bin",
        file.file_name().unwrap_or_default().to_string_lossy()
    ));
    std::fs::rename(file, &real).ctx(|| format!("renaming {}", file.display()))?;
    let libs = loader.parent().unwrap_or(loader);
    let script = format!(
        "#!/bin/sh\n# guest-image: run with the suite's C library (the host's is older).\nexec '{}' --library-path '{}' '{}' \"$@\"\n",
        loader.display(),
        libs.display(),
        real.display()
    );
    std::fs::write(file, script).ctx(|| format!("writing {}", file.display()))?;
    set_mode(file, 0o755)
}

/// Sets a file's permission bits.
pub fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .ctx(|| format!("setting mode of {}", path.display()))
}

/// Every regular file under `dir` (not following symlinks), sorted.
pub fn walk_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).ctx(|| format!("reading {}", d.display()))? {
            let e = e.ctx(|| format!("reading {}", d.display()))?;
            let ft = e
                .file_type()
                .ctx(|| format!("reading {}", e.path().display()))?;
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// How to invoke kbuild for the payload module.
#[derive(Debug, Clone)]
pub enum Kbuild {
    /// Extracted Debian headers.
    Debian(DebianHeaders),
    /// A built kernel tree.
    Tree(PathBuf),
}

/// Builds `iommutest.ko` from the sources in `src` (written by [`write_sources`]) and returns
/// its path. Paths are mapped to `/iommutest` in the object (`-ffile-prefix-map` of
/// `prefix_root`) and debug info is stripped, so the module's bytes do not depend on where
/// the cache is.
pub fn build_module(kbuild: &Kbuild, src: &Path, prefix_root: &Path) -> Result<PathBuf> {
    let kmod = src.join("kmod");
    let mut cmd = Command::new("make");
    match kbuild {
        Kbuild::Debian(h) => {
            cmd.arg("-C")
                .arg(&h.amd64)
                .arg("-f")
                .arg(h.common.join("Makefile"))
                .arg(format!("CC={}", h.cc));
            if h.no_objtool {
                cmd.arg("IOMMUTEST_NO_OBJTOOL=1");
            }
            if h.kbuild_output {
                cmd.arg(format!("KBUILD_OUTPUT={}", h.amd64.display()));
            }
        }
        Kbuild::Tree(t) => {
            cmd.arg("-C").arg(t);
        }
    }
    cmd.arg(format!("M={}", kmod.display()))
        .arg(format!(
            "KCFLAGS=-ffile-prefix-map={}=/iommutest",
            prefix_root.display()
        ))
        .arg("-j2")
        .arg("modules")
        .env("LC_ALL", "C")
        .env("KBUILD_BUILD_TIMESTAMP", "1970-01-01")
        .env("KBUILD_BUILD_USER", "iommutest")
        .env("KBUILD_BUILD_HOST", "iommutest");
    run(&mut cmd, "make modules (payload module)")?;
    let ko = kmod.join("iommutest.ko");
    if !ko.is_file() {
        return Err(Error::Command {
            command: "make modules".into(),
            detail: "no iommutest.ko was produced".into(),
        });
    }
    run(
        Command::new("strip").arg("--strip-debug").arg(&ko),
        "strip --strip-debug iommutest.ko",
    )?;
    Ok(ko)
}

/// Builds the static programs in `src/progs` into `src/bin` and returns their paths.
pub fn build_programs(src: &Path) -> Result<Vec<(String, PathBuf)>> {
    let bin = src.join("bin");
    std::fs::create_dir_all(&bin).ctx(|| format!("creating {}", bin.display()))?;
    let mut out = Vec::new();
    for name in PROGRAMS {
        let exe = bin.join(name);
        run(
            Command::new("gcc")
                .current_dir(src.join("progs"))
                .args(["-static", "-O2", "-s", "-Wall", "-o"])
                .arg(&exe)
                .arg(format!("{name}.c"))
                .env("LC_ALL", "C"),
            &format!("gcc -static {name}.c (needs libc6-dev)"),
        )?;
        out.push(((*name).to_owned(), exe));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_conf_fixups_remove_only_unsupported_options() {
        let text = "CONFIG_X=y\nCONFIG_CC_HAS_MIN_FUNCTION_ALIGNMENT=y\nCONFIG_DEBUG_INFO_BTF_MODULES=y\nCONFIG_CC_HAS_MIN_FUNCTION_ALIGNMENT_X=y\n";
        let (out, removed) = auto_conf_fixups(text, false, true);
        assert_eq!(removed, ["CONFIG_CC_HAS_MIN_FUNCTION_ALIGNMENT"]);
        assert!(out.contains("CONFIG_DEBUG_INFO_BTF_MODULES=y"));
        assert!(out.contains("CONFIG_CC_HAS_MIN_FUNCTION_ALIGNMENT_X=y"));
        let (out, removed) = auto_conf_fixups(text, true, false);
        assert_eq!(removed, ["CONFIG_DEBUG_INFO_BTF_MODULES"]);
        assert!(out.contains("CONFIG_CC_HAS_MIN_FUNCTION_ALIGNMENT=y"));
    }

    #[test]
    fn max_glibc_minor_finds_newest_version_string() {
        let bytes = b"\0GLIBC_2.2.5\0GLIBC_2.38\0GLIBC_2.34\0";
        assert_eq!(max_glibc_minor(bytes), Some(38));
        assert_eq!(max_glibc_minor(b"no versions"), None);
    }

    #[test]
    fn payload_sources_are_complete_and_gpl() {
        assert!(SOURCES.iter().any(|(n, _)| *n == "kmod/iommutest.c"));
        for (name, text) in SOURCES {
            if name.ends_with(".c") || name.ends_with(".sh") || name.ends_with("Kbuild") {
                assert!(
                    text.contains("SPDX-License-Identifier: GPL-2.0-only"),
                    "{name}"
                );
            }
        }
        assert!(init_script().starts_with("#!/bin/busybox sh"));
        assert!(init_script().contains("IOMMUTEST-SUMMARY pass=$pass fail=$fail skip=$skip"));
        assert_eq!(sources_digest(), sources_digest());
    }

    #[test]
    fn payload_write_sources_lays_out_tree() {
        let dir = tempfile::tempdir().unwrap();
        write_sources(dir.path()).unwrap();
        assert!(dir.path().join("kmod/Kbuild").is_file());
        assert!(dir.path().join("progs/odirect_sha.c").is_file());
    }
}
