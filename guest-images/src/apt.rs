//! A private apt configuration under the cache folder, so that downloads never touch the
//! host's apt setup: its own sources list (signed by the host's Debian archive keyring), its
//! own package lists, cache and state folders, and an empty dpkg status. apt-get is run with
//! `APT_CONFIG` pointing at this configuration and with the same folders given again as `-o`
//! options.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, IoContext, Result};
use crate::manifest::PackageRef;

/// Keyring that signs the Debian archive (package debian-archive-keyring).
pub const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// Environment variable naming the Debian archive URL.
pub const MIRROR_ENV: &str = "IOMMU_EMU_DEBIAN_MIRROR";
/// Environment variable naming the Debian security archive URL.
pub const SECURITY_MIRROR_ENV: &str = "IOMMU_EMU_DEBIAN_SECURITY_MIRROR";

/// The archive URLs to download from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirrors {
    /// The Debian archive (path ending in `/debian`).
    pub debian: String,
    /// The security archive (path ending in `/debian-security`).
    pub security: String,
}

/// Finds the Debian archive URLs in apt source files (one-line `deb` format and deb822
/// `.sources`). `None` when there is no Debian archive among them.
pub fn mirrors_from_sources(texts: &[String]) -> Option<Mirrors> {
    let mut debian = None;
    let mut security = None;
    for text in texts {
        for line in text.lines() {
            let line = line.trim();
            let uris: Vec<&str> = if let Some(rest) = line.strip_prefix("URIs:") {
                rest.split_whitespace().collect()
            } else if line.starts_with("deb ") {
                line.split_whitespace()
                    .skip(1)
                    .skip_while(|w| w.starts_with('['))
                    .skip_while(|w| !w.contains("://"))
                    .take(1)
                    .collect()
            } else {
                continue;
            };
            for uri in uris {
                let u = uri.trim_end_matches('/');
                if u.ends_with("/debian-security") {
                    security.get_or_insert_with(|| u.to_owned());
                } else if u.ends_with("/debian") {
                    debian.get_or_insert_with(|| u.to_owned());
                }
            }
        }
    }
    let debian: String = debian?;
    let security = security.unwrap_or_else(|| format!("{debian}-security"));
    Some(Mirrors { debian, security })
}

impl Mirrors {
    /// The mirrors from the environment, or else from the host's apt sources.
    pub fn discover() -> Result<Self> {
        if let Ok(d) = std::env::var(MIRROR_ENV)
            && !d.is_empty()
        {
            let d = d.trim_end_matches('/').to_owned();
            let s = std::env::var(SECURITY_MIRROR_ENV)
                .ok()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| format!("{d}-security"));
            return Ok(Self {
                debian: d,
                security: s,
            });
        }
        let mut texts = Vec::new();
        let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
        if let Ok(rd) = std::fs::read_dir("/etc/apt/sources.list.d") {
            let mut more: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "list" || e == "sources"))
                .collect();
            more.sort();
            files.extend(more);
        }
        for f in files {
            if let Ok(t) = std::fs::read_to_string(&f) {
                texts.push(t);
            }
        }
        mirrors_from_sources(&texts).ok_or(Error::NoMirror)
    }
}

/// Checks that `program` is on PATH.
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// One package as apt resolved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedDeb {
    /// Package name.
    pub name: String,
    /// Exact version.
    pub version: String,
    /// URL in the archive.
    pub url: String,
    /// File name apt gives it.
    pub file_name: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 from the signed index.
    pub sha256: String,
}

/// Parses one line of `apt-get download --print-uris`:
/// `'URL' FILE SIZE SHA256:HEX`.
pub fn parse_print_uris(line: &str, name: &str) -> Option<ResolvedDeb> {
    let mut it = line.split_whitespace();
    let url = it.next()?.trim_matches('\'').to_owned();
    let file_name = it.next()?.to_owned();
    let size = it.next()?.parse().ok()?;
    let sha256 = it.next()?.strip_prefix("SHA256:")?.to_ascii_lowercase();
    // FILE is `name_version_arch.deb` with `:` escaped as `%3a`.
    let version = file_name
        .strip_prefix(&format!("{name}_"))?
        .rsplit_once('_')?
        .0
        .replace("%3a", ":");
    Some(ResolvedDeb {
        name: name.to_owned(),
        version,
        url,
        file_name,
        size,
        sha256,
    })
}

/// A private apt setup for one set of suites.
#[derive(Debug, Clone)]
pub struct AptRepo {
    dir: PathBuf,
    suites: Vec<String>,
    mirrors: Mirrors,
}

impl AptRepo {
    /// An apt setup in `dir` for `suites` (a `*-security` suite uses the security archive).
    pub fn new(dir: PathBuf, suites: Vec<String>, mirrors: Mirrors) -> Self {
        Self {
            dir,
            suites,
            mirrors,
        }
    }

    /// The sources.list text.
    pub fn sources_text(&self) -> String {
        let mut s = String::from("# Written by guest-image; private to this cache folder.\n");
        for suite in &self.suites {
            let url = if suite.ends_with("-security") {
                &self.mirrors.security
            } else {
                &self.mirrors.debian
            };
            s.push_str(&format!("deb [signed-by={KEYRING}] {url} {suite} main\n"));
        }
        s
    }

    fn etc(&self) -> PathBuf {
        self.dir.join("etc")
    }
    fn state(&self) -> PathBuf {
        self.dir.join("state")
    }
    fn cache(&self) -> PathBuf {
        self.dir.join("cache")
    }

    /// The apt.conf text: every folder apt uses points into this setup.
    pub fn config_text(&self, sandbox_user: &str) -> String {
        let d = |p: PathBuf| p.display().to_string();
        let etc = d(self.etc());
        format!(
            "// Written by guest-image; private to this cache folder.\n\
             Dir::Etc \"{etc}\";\n\
             Dir::Etc::main \"{etc}/apt.conf\";\n\
             Dir::Etc::parts \"{etc}/apt.conf.d\";\n\
             Dir::Etc::sourcelist \"{etc}/sources.list\";\n\
             Dir::Etc::sourceparts \"{etc}/sources.list.d\";\n\
             Dir::Etc::preferences \"{etc}/preferences\";\n\
             Dir::Etc::preferencesparts \"{etc}/preferences.d\";\n\
             Dir::Etc::trusted \"{etc}/trusted.gpg\";\n\
             Dir::Etc::trustedparts \"{etc}/trusted.gpg.d\";\n\
             Dir::State \"{state}\";\n\
             Dir::State::status \"{state}/status\";\n\
             Dir::Cache \"{cache}\";\n\
             APT::Architecture \"amd64\";\n\
             APT::Architectures {{ \"amd64\"; }};\n\
             Acquire::Languages \"none\";\n\
             Acquire::GzipIndexes \"true\";\n\
             APT::Sandbox::User \"{sandbox_user}\";\n",
            state = d(self.state()),
            cache = d(self.cache()),
        )
    }

    /// Writes the configuration and creates the folders.
    pub fn prepare(&self) -> Result<()> {
        if find_program("apt-get").is_none() {
            return Err(Error::NotDebianLike);
        }
        if !Path::new(KEYRING).is_file() {
            return Err(Error::NoKeyring(PathBuf::from(KEYRING)));
        }
        for sub in [
            self.etc().join("apt.conf.d"),
            self.etc().join("sources.list.d"),
            self.etc().join("preferences.d"),
            self.etc().join("trusted.gpg.d"),
            self.state().join("lists/partial"),
            self.cache().join("archives/partial"),
        ] {
            std::fs::create_dir_all(&sub).ctx(|| format!("creating {}", sub.display()))?;
        }
        // apt drops privileges to `_apt` when run as root; the private folders belong to the
        // user running us, so keep that user.
        let user = if is_root() { "root" } else { "" };
        write_if_changed(&self.etc().join("apt.conf"), &self.config_text(user))?;
        write_if_changed(&self.etc().join("sources.list"), &self.sources_text())?;
        let status = self.state().join("status");
        if !status.exists() {
            std::fs::write(&status, "").ctx(|| format!("writing {}", status.display()))?;
        }
        Ok(())
    }

    fn apt(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("APT_CONFIG", self.etc().join("apt.conf"))
            .env("LC_ALL", "C")
            .arg("-o")
            .arg(format!("Dir::Etc={}", self.etc().display()))
            .arg("-o")
            .arg(format!("Dir::State={}", self.state().display()))
            .arg("-o")
            .arg(format!("Dir::Cache={}", self.cache().display()));
        c
    }

    /// True when the package lists were fetched before.
    pub fn has_lists(&self) -> bool {
        std::fs::read_dir(self.state().join("lists"))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .any(|e| e.file_name().to_string_lossy().contains("_Packages"))
            })
            .unwrap_or(false)
    }

    /// `apt-get update` in the private setup.
    pub fn update(&self) -> Result<()> {
        let out = self
            .apt("apt-get")
            .args(["-q", "update"])
            .output()
            .ctx(|| "running apt-get update")?;
        let err = String::from_utf8_lossy(&out.stderr);
        // apt-get update exits 0 even when a source failed; its error lines start with E: or W:.
        let failed = err
            .lines()
            .filter(|l| l.starts_with("E:") || l.starts_with("W: Failed") || l.starts_with("Err:"))
            .collect::<Vec<_>>();
        if !out.status.success() || !failed.is_empty() || !self.has_lists() {
            return Err(Error::ArchiveUnreachable {
                suites: self.suites.join(", "),
                detail: tail(&failed.join("\n"), &err),
            });
        }
        Ok(())
    }

    /// Resolves a package to the exact file apt would download; `Ok(None)` when the archive
    /// (as of the last update) has no such package or version.
    pub fn resolve(&self, pkg: &PackageRef) -> Result<Option<ResolvedDeb>> {
        let out = self
            .apt("apt-get")
            .args(["-q", "download", "--print-uris", &pkg.apt_arg()])
            .output()
            .ctx(|| "running apt-get download --print-uris")?;
        if !out.status.success() {
            return Ok(None);
        }
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text.lines().find_map(|l| parse_print_uris(l, &pkg.name)))
    }

    /// Downloads a resolved package into `dir` unless a file with its SHA-256 is there.
    /// Returns the path of the .deb.
    pub fn download(&self, deb: &ResolvedDeb, dir: &Path) -> Result<PathBuf> {
        std::fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
        let path = dir.join(&deb.file_name);
        if path.is_file() && crate::initramfs::sha256_file(&path)? == deb.sha256 {
            return Ok(path);
        }
        let arg = format!("{}={}", deb.name, deb.version);
        let out = self
            .apt("apt-get")
            .current_dir(dir)
            .args(["-q", "download", &arg])
            .output()
            .ctx(|| "running apt-get download")?;
        if !out.status.success() || !path.is_file() {
            return Err(Error::Download {
                package: arg,
                detail: tail("", &String::from_utf8_lossy(&out.stderr)),
            });
        }
        let got = crate::initramfs::sha256_file(&path)?;
        if got != deb.sha256 {
            let _ = std::fs::remove_file(&path);
            return Err(Error::Download {
                package: arg,
                detail: format!(
                    "SHA-256 {got} does not match the archive index {}",
                    deb.sha256
                ),
            });
        }
        Ok(path)
    }

    /// Package names that start with `prefix` in the current lists.
    pub fn package_names(&self, prefix: &str) -> Result<Vec<String>> {
        let out = self
            .apt("apt-cache")
            .args(["pkgnames", prefix])
            .output()
            .ctx(|| "running apt-cache pkgnames")?;
        let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        v.sort();
        Ok(v)
    }

    /// The newest version of `name` in the current lists.
    pub fn candidate(&self, name: &str) -> Result<Option<String>> {
        let out = self
            .apt("apt-cache")
            .args(["policy", name])
            .output()
            .ctx(|| "running apt-cache policy")?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.trim().strip_prefix("Candidate:"))
            .map(|v| v.trim().to_owned())
            .filter(|v| v != "(none)"))
    }
}

/// Compares two Debian versions with `dpkg --compare-versions a gt b`.
pub fn version_gt(a: &str, b: &str) -> bool {
    Command::new("dpkg")
        .args(["--compare-versions", a, "gt", b])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn is_root() -> bool {
    // Without libc: the effective uid is in /proc/self/status ("Uid: real effective ...").
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn write_if_changed(path: &Path, text: &str) -> Result<()> {
    if std::fs::read_to_string(path).ok().as_deref() == Some(text) {
        return Ok(());
    }
    std::fs::write(path, text).ctx(|| format!("writing {}", path.display()))
}

/// The last few lines of a command's error output, for messages.
pub fn tail(preferred: &str, all: &str) -> String {
    let src = if preferred.trim().is_empty() {
        all
    } else {
        preferred
    };
    let lines: Vec<&str> = src.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(4);
    lines[start..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mirrors() -> Mirrors {
        Mirrors {
            debian: "http://mirror.example/debian".into(),
            security: "http://mirror.example/debian-security".into(),
        }
    }

    #[test]
    fn mirrors_from_deb822_sources() {
        let text = "Types: deb\nURIs: http://m.example/debian\nSuites: bookworm\n\n\
                    Types: deb\nURIs: http://m.example/debian-security/\nSuites: bookworm-security\n";
        let m = mirrors_from_sources(&[text.to_owned()]).unwrap();
        assert_eq!(m.debian, "http://m.example/debian");
        assert_eq!(m.security, "http://m.example/debian-security");
    }

    #[test]
    fn mirrors_from_one_line_sources_with_options() {
        let text = "# comment\ndeb [arch=amd64 signed-by=/k.gpg] http://x.example/debian bookworm main\n\
                    deb https://other.example/apt stable main\n";
        let m = mirrors_from_sources(&[text.to_owned()]).unwrap();
        assert_eq!(m.debian, "http://x.example/debian");
        assert_eq!(m.security, "http://x.example/debian-security");
    }

    #[test]
    fn mirrors_without_debian_archive_is_none() {
        let text = "deb http://archive.example/ubuntu jammy main\n";
        assert!(mirrors_from_sources(&[text.to_owned()]).is_none());
    }

    #[test]
    fn apt_sources_use_keyring_and_security_archive() {
        let r = AptRepo::new(
            "/c/apt/x".into(),
            vec!["trixie".into(), "trixie-security".into()],
            mirrors(),
        );
        let s = r.sources_text();
        assert!(s.contains(&format!(
            "deb [signed-by={KEYRING}] http://mirror.example/debian trixie main"
        )));
        assert!(s.contains("http://mirror.example/debian-security trixie-security main"));
    }

    #[test]
    fn apt_config_points_every_folder_into_the_cache() {
        let r = AptRepo::new("/c/apt/x".into(), vec!["bookworm".into()], mirrors());
        let c = r.config_text("root");
        for key in [
            "Dir::Etc \"/c/apt/x/etc\"",
            "Dir::Etc::parts \"/c/apt/x/etc/apt.conf.d\"",
            "Dir::Etc::trustedparts \"/c/apt/x/etc/trusted.gpg.d\"",
            "Dir::State \"/c/apt/x/state\"",
            "Dir::State::status \"/c/apt/x/state/status\"",
            "Dir::Cache \"/c/apt/x/cache\"",
            "APT::Architecture \"amd64\"",
        ] {
            assert!(c.contains(key), "missing {key} in\n{c}");
        }
        assert!(!c.contains("\"/etc/apt"), "host apt folder in\n{c}");
    }

    #[test]
    fn print_uris_line_parses_version_with_epoch() {
        let line = "'http://m.example/debian/pool/main/b/busybox/busybox-static_1%3a1.35.0-4+b1_amd64.deb' \
                    busybox-static_1%3a1.35.0-4+b1_amd64.deb 928188 SHA256:ABCDEF";
        let d = parse_print_uris(line, "busybox-static").unwrap();
        assert_eq!(d.version, "1:1.35.0-4+b1");
        assert_eq!(d.size, 928188);
        assert_eq!(d.sha256, "abcdef");
        assert_eq!(d.file_name, "busybox-static_1%3a1.35.0-4+b1_amd64.deb");
    }

    #[test]
    fn print_uris_other_package_line_is_ignored() {
        let line = "'http://m/x_1_amd64.deb' x_1_amd64.deb 1 SHA256:00";
        assert!(parse_print_uris(line, "y").is_none());
    }
}
