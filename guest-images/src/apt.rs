//! A private apt configuration under the cache folder, so that downloads never touch the
//! host's apt setup: its own sources list (signed by the host's Debian archive keyring), its
//! own package lists, cache and state folders, and an empty dpkg status. apt-get is run with
//! `APT_CONFIG` pointing at this configuration and with the same folders given again as `-o`
//! options.

use std::cmp::Ordering;
use std::collections::BTreeMap;
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
/// Environment variable that, set to `1` while the mirrors are local `file:` folders, reads
/// them without signatures (`[trusted=yes]`): for tests that write their own small archive.
/// Ignored for any other kind of mirror.
pub const UNSIGNED_LOCAL_ENV: &str = "IOMMU_EMU_APT_UNSIGNED_LOCAL";
/// apt's helper that prints a package list whatever its compression.
pub const APT_HELPER: &str = "/usr/lib/apt/apt-helper";

/// The archive URLs to download from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirrors {
    /// The Debian archive (path ending in `/debian`).
    pub debian: String,
    /// The security archive (path ending in `/debian-security`).
    pub security: String,
    /// Both are local `file:` folders read without signatures ([`UNSIGNED_LOCAL_ENV`]).
    pub unsigned_local: bool,
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
    Some(Mirrors {
        debian,
        security,
        unsigned_local: false,
    })
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
            let unsigned_local = std::env::var(UNSIGNED_LOCAL_ENV).is_ok_and(|v| v == "1")
                && d.starts_with("file:")
                && s.starts_with("file:");
            return Ok(Self {
                debian: d,
                security: s,
                unsigned_local,
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

/// One version of a package in one suite, as a package list (`Packages` file) gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// The suite (distribution as named in the sources list) whose list holds it.
    pub suite: String,
    /// Exact Debian version.
    pub version: String,
    /// Names of the packages it depends on (every alternative, without versions).
    pub depends: Vec<String>,
}

/// The packages of some suites: name to every version listed, with its suite. Built from
/// package-list text ([`PackageIndex::add_packages_text`]), so the decisions made over it are
/// pure functions that tests can feed with hand-written lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackageIndex {
    packages: BTreeMap<String, Vec<IndexEntry>>,
}

impl PackageIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the stanzas of a `Packages` file of `suite` whose package name passes `keep`.
    pub fn add_packages_text(&mut self, suite: &str, text: &str, keep: &dyn Fn(&str) -> bool) {
        let mut flush =
            |name: &mut Option<String>, ver: &mut Option<String>, deps: &mut Vec<String>| {
                if let (Some(n), Some(v)) = (name.take(), ver.take()) {
                    let list = self.packages.entry(n).or_default();
                    let e = IndexEntry {
                        suite: suite.to_owned(),
                        version: v,
                        depends: std::mem::take(deps),
                    };
                    if !list.contains(&e) {
                        list.push(e);
                    }
                }
                deps.clear();
            };
        let (mut name, mut ver, mut deps) = (None, None, Vec::new());
        for line in text.lines() {
            if line.trim().is_empty() {
                flush(&mut name, &mut ver, &mut deps);
            } else if let Some(n) = line.strip_prefix("Package:") {
                flush(&mut name, &mut ver, &mut deps);
                let n = n.trim();
                if keep(n) {
                    name = Some(n.to_owned());
                }
            } else if name.is_none() {
                continue;
            } else if let Some(v) = line.strip_prefix("Version:") {
                ver = Some(v.trim().to_owned());
            } else if let Some(d) = line
                .strip_prefix("Depends:")
                .or_else(|| line.strip_prefix("Pre-Depends:"))
            {
                deps.extend(parse_depends(d));
            }
        }
        flush(&mut name, &mut ver, &mut deps);
    }

    /// Every listed version of `name` (any suite).
    pub fn entries(&self, name: &str) -> &[IndexEntry] {
        self.packages.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The entry of `name` at exactly `version`, if a suite lists it.
    pub fn find(&self, name: &str, version: &str) -> Option<&IndexEntry> {
        self.entries(name).iter().find(|e| e.version == version)
    }

    /// The newest version of `name` over all suites.
    pub fn newest(&self, name: &str) -> Option<&IndexEntry> {
        self.entries(name)
            .iter()
            .max_by(|a, b| version_cmp(&a.version, &b.version))
    }

    /// Package names starting with `prefix`, sorted.
    pub fn names_with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.packages
            .range(prefix.to_owned()..)
            .map(|(n, _)| n.as_str())
            .take_while(move |n| n.starts_with(prefix))
    }

    /// True when no package is listed.
    pub fn is_empty(&self) -> bool {
        self.packages.is_empty()
    }
}

/// The package names of a `Depends:` field value, every alternative, without version or
/// architecture qualifiers.
pub fn parse_depends(field: &str) -> Vec<String> {
    field
        .split([',', '|'])
        .filter_map(|alt| {
            let n = alt.trim().split([' ', '(', ':']).next()?.trim();
            (!n.is_empty()).then(|| n.to_owned())
        })
        .collect()
}

/// Compares two Debian versions the way dpkg does (epoch, upstream version, revision; `~`
/// sorts before everything, letters before other characters).
pub fn version_cmp(a: &str, b: &str) -> Ordering {
    fn split(v: &str) -> (u64, &str, &str) {
        let (epoch, rest) = match v.split_once(':') {
            Some((e, r)) if e.chars().all(|c| c.is_ascii_digit()) => (e.parse().unwrap_or(0), r),
            _ => (0, v),
        };
        match rest.rsplit_once('-') {
            Some((u, r)) => (epoch, u, r),
            None => (epoch, rest, ""),
        }
    }
    fn order(c: Option<u8>) -> i32 {
        match c {
            None => 0,
            Some(c) if c.is_ascii_digit() => 0,
            Some(c) if c.is_ascii_alphabetic() => i32::from(c),
            Some(b'~') => -1,
            Some(c) => i32::from(c) + 256,
        }
    }
    fn part(a: &[u8], b: &[u8]) -> Ordering {
        let (mut i, mut j) = (0, 0);
        let digit = |s: &[u8], k: usize| s.get(k).is_some_and(u8::is_ascii_digit);
        while i < a.len() || j < b.len() {
            while (i < a.len() && !digit(a, i)) || (j < b.len() && !digit(b, j)) {
                let (ac, bc) = (order(a.get(i).copied()), order(b.get(j).copied()));
                if ac != bc {
                    return ac.cmp(&bc);
                }
                i += 1;
                j += 1;
            }
            while a.get(i) == Some(&b'0') {
                i += 1;
            }
            while b.get(j) == Some(&b'0') {
                j += 1;
            }
            let mut first_diff = Ordering::Equal;
            while digit(a, i) && digit(b, j) {
                if first_diff == Ordering::Equal {
                    first_diff = a[i].cmp(&b[j]);
                }
                i += 1;
                j += 1;
            }
            if digit(a, i) {
                return Ordering::Greater;
            }
            if digit(b, j) {
                return Ordering::Less;
            }
            if first_diff != Ordering::Equal {
                return first_diff;
            }
        }
        Ordering::Equal
    }
    let (ea, ua, ra) = split(a);
    let (eb, ub, rb) = split(b);
    ea.cmp(&eb)
        .then_with(|| part(ua.as_bytes(), ub.as_bytes()))
        .then_with(|| part(ra.as_bytes(), rb.as_bytes()))
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
            if self.mirrors.unsigned_local {
                s.push_str(&format!("deb [trusted=yes] {url} {suite} main\n"));
            } else {
                s.push_str(&format!("deb [signed-by={KEYRING}] {url} {suite} main\n"));
            }
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
        if !self.mirrors.unsigned_local && !Path::new(KEYRING).is_file() {
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

    /// The packages of the current lists whose name passes `keep`, per suite. Empty when no
    /// list was fetched yet.
    pub fn index(&self, keep: &dyn Fn(&str) -> bool) -> Result<PackageIndex> {
        let out = self
            .apt("apt-get")
            .args([
                "indextargets",
                "--format",
                "$(FILENAME)\t$(RELEASE)\t$(CREATED_BY)",
            ])
            .output()
            .ctx(|| "running apt-get indextargets")?;
        let mut index = PackageIndex::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let mut f = line.split('\t');
            let (Some(file), Some(suite), Some("Packages")) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            if !Path::new(file).is_file() {
                continue;
            }
            let text = Command::new(APT_HELPER)
                .args(["cat-file", file])
                .output()
                .ctx(|| format!("running {APT_HELPER} cat-file {file}"))?;
            if !text.status.success() {
                return Err(Error::Command {
                    command: format!("{APT_HELPER} cat-file {file}"),
                    detail: tail("", &String::from_utf8_lossy(&text.stderr)),
                });
            }
            index.add_packages_text(suite, &String::from_utf8_lossy(&text.stdout), keep);
        }
        Ok(index)
    }

    /// The suites of this setup.
    pub fn suites(&self) -> &[String] {
        &self.suites
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
            unsigned_local: false,
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
    fn version_cmp_follows_dpkg_rules() {
        use Ordering::*;
        for (a, b, want) in [
            ("6.1.192-3", "6.1.192-2", Greater),
            ("6.1.192-2", "6.1.192-2", Equal),
            ("7.3.4-1~bpo13+1", "7.3.4-1", Less),
            ("7.3.4-1~bpo13+1", "7.2.13-1", Greater),
            ("1:1.30.1-6", "1.37.0-6", Greater),
            ("1:1.37.0-6+b9", "1:1.37.0-6", Greater),
            ("6.12.10-1", "6.12.9-1", Greater),
            ("1.0~rc1-1", "1.0-1", Less),
            ("1.0a-1", "1.0+-1", Less),
            ("2.38-1", "2.4-1", Greater),
            ("1.001-1", "1.1-1", Equal),
        ] {
            assert_eq!(version_cmp(a, b), want, "{a} vs {b}");
            assert_eq!(version_cmp(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    /// The comparison agrees with dpkg itself on versions seen in the archive.
    #[test]
    fn version_cmp_agrees_with_dpkg() {
        if find_program("dpkg").is_none() {
            return;
        }
        let vs = [
            "6.1.192-2",
            "6.1.192-3",
            "6.1.99-1",
            "7.3.4-1~bpo13+1",
            "7.3.4-1~bpo13+2",
            "7.3.4-1",
            "1:1.35.0-4+deb12u1+b1",
            "1:1.35.0-4+b1",
            "5.10.262-1",
            "6.12.117-1",
            "6.12.117+deb13-1",
        ];
        for a in vs {
            for b in vs {
                assert_eq!(
                    version_cmp(a, b) == Ordering::Greater,
                    version_gt(a, b),
                    "{a} > {b}"
                );
            }
        }
    }

    #[test]
    fn package_index_keeps_versions_per_suite_and_depends() {
        let text = "Package: linux-image-7.3.4+deb13-amd64\nSource: linux-signed-amd64\n\
                    Version: 7.3.4-1~bpo13+1\nDepends: dracut | initramfs-tools (>= 0.120), \
                    linux-binary-7.3.4+deb13-amd64 (= 7.3.4-1~bpo13+1)\n\n\
                    Package: zsh\nVersion: 5.9-8\n\n\
                    Package: busybox-static\nVersion: 1:1.37.0-6+b9\n";
        let mut i = PackageIndex::new();
        i.add_packages_text("trixie-backports", text, &|n| n != "zsh");
        i.add_packages_text(
            "trixie",
            "Package: busybox-static\nVersion: 1:1.37.0-6\n",
            &|_| true,
        );
        let k = i
            .find("linux-image-7.3.4+deb13-amd64", "7.3.4-1~bpo13+1")
            .unwrap();
        assert_eq!(k.suite, "trixie-backports");
        assert_eq!(
            k.depends,
            [
                "dracut",
                "initramfs-tools",
                "linux-binary-7.3.4+deb13-amd64"
            ]
        );
        assert!(i.entries("zsh").is_empty());
        assert_eq!(i.newest("busybox-static").unwrap().version, "1:1.37.0-6+b9");
        assert_eq!(i.entries("busybox-static").len(), 2);
        assert_eq!(
            i.names_with_prefix("linux-").collect::<Vec<_>>(),
            ["linux-image-7.3.4+deb13-amd64"]
        );
    }

    #[test]
    fn print_uris_other_package_line_is_ignored() {
        let line = "'http://m/x_1_amd64.deb' x_1_amd64.deb 1 SHA256:00";
        assert!(parse_print_uris(line, "y").is_none());
    }
}
