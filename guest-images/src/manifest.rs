//! The manifest of guest kernels (`guest-images/manifest.toml`).
//!
//! Each guest names Debian suites and a kernel series; its kernel ABI, package version and
//! busybox version are a record of what was last chosen, kept while the archive has them
//! (see [`crate::resolve`]). The manifest is compiled into the binary, so `guest-image` works
//! from any directory; the `--manifest` option (or [`Manifest::load`]) reads another copy.
//! `guest-image repin` rewrites the record in the source tree with [`repin_text`].

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// The manifest shipped with this source tree.
pub const EMBEDDED: &str = include_str!("../manifest.toml");

/// The `series` of a guest that follows the newest kernel series of its suites.
pub const NEWEST_SERIES: &str = "newest";

/// Where the manifest lives in the source tree this binary was built from.
pub fn source_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("manifest.toml")
}

/// All pinned guests.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// One entry per guest kernel, in the order `build all` builds them.
    pub guest: Vec<GuestSpec>,
}

/// One Debian guest kernel.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GuestSpec {
    /// The name used on the command line (`5.10`, `6.1`, `6.12`, `latest`).
    pub name: String,
    /// Debian suites to read; the first is the release, `*-security` entries use the security
    /// archive.
    pub suites: Vec<String>,
    /// Kernel series (`6.1`): builds fall back to, and `repin` picks, the newest ABI that
    /// starts with it; [`NEWEST_SERIES`] takes the newest kernel of any series.
    pub series: String,
    /// Recorded kernel ABI: `linux-image-<abi>-amd64`.
    pub abi: String,
    /// Recorded Debian version of the kernel, headers and kbuild packages.
    pub version: String,
    /// Recorded name of the kbuild package (used when the headers name none).
    pub kbuild: String,
    /// Recorded version of busybox-static.
    pub busybox: String,
    /// Modules the guest loads (their dependencies follow from modules.dep).
    pub modules: Vec<String>,
    /// Libraries from the suite that run its build tools when the host's C library is older.
    pub host_libs: Vec<String>,
}

/// A package to download: a name and, when pinned, an exact version.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PackageRef {
    /// Debian package name.
    pub name: String,
    /// Exact version, or `None` for the suite's newest.
    pub version: Option<String>,
}

impl PackageRef {
    /// The `name=version` form apt-get takes.
    pub fn apt_arg(&self) -> String {
        match &self.version {
            Some(v) => format!("{}={}", self.name, v),
            None => self.name.clone(),
        }
    }
}

/// The role a package plays in an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// linux-image and the packages of the same ABI it depends on (Debian 7.x:
    /// linux-binary-*, linux-modules-*, linux-base-*): kernel and modules.
    Image,
    /// linux-headers-*-amd64.
    Headers,
    /// linux-headers-*-common.
    HeadersCommon,
    /// linux-kbuild-*.
    Kbuild,
    /// busybox-static.
    Busybox,
    /// A library for the build tools.
    HostLib,
}

impl Manifest {
    /// Parses manifest text and checks it.
    pub fn parse(text: &str) -> Result<Self> {
        let m: Manifest = toml::from_str(text).map_err(|e| Error::Manifest(e.to_string()))?;
        m.validate()?;
        Ok(m)
    }

    /// The manifest compiled into this binary.
    pub fn embedded() -> Result<Self> {
        Self::parse(EMBEDDED)
    }

    /// Reads a manifest file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).ctx(|| format!("reading {}", path.display()))?;
        Self::parse(&text)
    }

    fn validate(&self) -> Result<()> {
        let mut seen = std::collections::BTreeSet::new();
        for g in &self.guest {
            if !seen.insert(g.name.as_str()) {
                return Err(Error::Manifest(format!(
                    "guest `{}` is listed twice",
                    g.name
                )));
            }
            if g.name == "all" || g.name == "runner" || g.name.contains('/') || g.name.is_empty() {
                return Err(Error::Manifest(format!(
                    "`{}` cannot be a guest name",
                    g.name
                )));
            }
            if g.suites.is_empty() {
                return Err(Error::Manifest(format!(
                    "guest `{}` names no suite",
                    g.name
                )));
            }
            if !crate::resolve::abi_in_series(&g.abi, &g.series) {
                return Err(Error::Manifest(format!(
                    "guest `{}`: ABI {} is not a plain kernel of series {}",
                    g.name, g.abi, g.series
                )));
            }
            for field in [&g.abi, &g.version, &g.kbuild, &g.busybox] {
                if field.is_empty() || field.chars().any(|c| c.is_whitespace()) {
                    return Err(Error::Manifest(format!(
                        "guest `{}` has an empty or blank field",
                        g.name
                    )));
                }
            }
        }
        Ok(())
    }

    /// The guest named `name`, or else the one whose recorded kernel is of series `name`
    /// (`7.3` finds `latest` while it records a 7.3 kernel).
    pub fn guest(&self, name: &str) -> Result<&GuestSpec> {
        self.guest
            .iter()
            .find(|g| g.name == name)
            .or_else(|| self.guest.iter().find(|g| g.recorded_series() == name))
            .ok_or_else(|| Error::UnknownGuest {
                name: name.to_owned(),
                known: self.names_with_aliases().join(", "),
            })
    }

    /// Every guest name, in manifest order.
    pub fn names(&self) -> Vec<String> {
        self.guest.iter().map(|g| g.name.clone()).collect()
    }

    /// Every guest name, with the series it is also reachable by when that differs
    /// (`latest (7.3)`).
    pub fn names_with_aliases(&self) -> Vec<String> {
        self.guest
            .iter()
            .map(|g| {
                let s = g.recorded_series();
                if s == g.name {
                    g.name.clone()
                } else {
                    format!("{} ({s})", g.name)
                }
            })
            .collect()
    }
}

impl GuestSpec {
    /// The kernel release (`uname -r`) of the recorded kernel (a build may use another:
    /// the image's `lock.toml` has the one it used).
    pub fn release(&self) -> String {
        format!("{}-amd64", self.abi)
    }

    /// `major.minor` of the recorded kernel ABI (`7.3` for `7.3.4+deb13`).
    pub fn recorded_series(&self) -> String {
        self.abi
            .split(|c: char| !c.is_ascii_digit())
            .take(2)
            .collect::<Vec<_>>()
            .join(".")
    }

    /// The recorded kernel and busybox.
    pub fn record(&self) -> crate::resolve::Pin {
        crate::resolve::Pin {
            abi: self.abi.clone(),
            version: self.version.clone(),
            busybox: self.busybox.clone(),
        }
    }

    /// The record as one line, kept in the lock so that a `repin` is noticed.
    pub fn record_text(&self) -> String {
        format!(
            "{} {} {} {}",
            self.abi, self.version, self.kbuild, self.busybox
        )
    }

    /// A stable text form of what the build depends on besides the record (suites, series,
    /// modules, host libraries): part of the image's input fingerprint.
    pub fn canonical(&self) -> String {
        let mut g = self.clone();
        for f in [&mut g.abi, &mut g.version, &mut g.kbuild, &mut g.busybox] {
            f.clear();
        }
        // Serialising a struct with only strings and lists of strings cannot fail.
        toml::to_string(&g).unwrap_or_else(|_| format!("{g:?}"))
    }
}

/// New pins for one guest, as found by `repin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repin {
    /// New kernel ABI.
    pub abi: String,
    /// New kernel package version.
    pub version: String,
    /// New busybox-static version.
    pub busybox: String,
    /// New kbuild package name.
    pub kbuild: String,
}

/// Rewrites the entry `name` of a manifest text with new pins, keeping comments and layout.
pub fn repin_text(text: &str, name: &str, new: &Repin) -> Result<String> {
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| Error::Manifest(e.to_string()))?;
    let guests = doc
        .get_mut("guest")
        .and_then(|g| g.as_array_of_tables_mut())
        .ok_or_else(|| Error::Manifest("no [[guest]] entries".to_owned()))?;
    let entry = guests
        .iter_mut()
        .find(|t| t.get("name").and_then(|n| n.as_str()) == Some(name))
        .ok_or_else(|| Error::Manifest(format!("no guest `{name}` in the manifest")))?;
    entry["abi"] = toml_edit::value(new.abi.as_str());
    entry["version"] = toml_edit::value(new.version.as_str());
    entry["busybox"] = toml_edit::value(new.busybox.as_str());
    entry["kbuild"] = toml_edit::value(new.kbuild.as_str());
    let out = doc.to_string();
    Manifest::parse(&out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-guest manifest; `name`, `series` and `abi` vary per test.
    fn one(name: &str, series: &str, abi: &str) -> String {
        format!(
            r#"
[[guest]]
name = "{name}"
suites = ["bookworm"]
series = "{series}"
abi = "{abi}"
version = "6.1.1-1"
kbuild = "linux-kbuild-6.1"
busybox = "1:1"
modules = []
host_libs = []
"#
        )
    }

    #[test]
    fn manifest_embedded_parses_debian_guests_and_latest() {
        let m = Manifest::embedded().unwrap();
        assert_eq!(m.names(), ["5.10", "6.1", "6.12", "latest"]);
        let g = m.guest("6.1").unwrap();
        assert_eq!(g.release(), format!("{}-amd64", g.abi));
        assert!(g.modules.iter().any(|m| m == "virtio_blk"));
        assert_eq!(m.guest("latest").unwrap().series, NEWEST_SERIES);
    }

    #[test]
    fn manifest_unknown_guest_lists_known_names() {
        let m = Manifest::embedded().unwrap();
        let err = m.guest("4.19").unwrap_err().to_string();
        assert!(
            err.contains("4.19") && err.contains("6.12") && err.contains("latest ("),
            "{err}"
        );
    }

    #[test]
    fn manifest_duplicate_name_is_rejected() {
        let one = one("x", "6.1", "6.1.0-1");
        assert!(Manifest::parse(&one).is_ok());
        let two = format!("{one}{one}");
        assert!(
            Manifest::parse(&two)
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
    }

    #[test]
    fn manifest_abi_outside_series_is_rejected() {
        assert!(Manifest::parse(&one("x", "6.1", "6.1.0-9")).is_ok());
        for abi in ["5.4.0-1", "6.12.1+deb13", "6.1.0-9-rt"] {
            let err = Manifest::parse(&one("x", "6.1", abi))
                .unwrap_err()
                .to_string();
            assert!(err.contains(abi) && err.contains("series 6.1"), "{err}");
        }
        // The newest series takes any plain ABI.
        assert!(Manifest::parse(&one("x", NEWEST_SERIES, "7.3.4+deb13")).is_ok());
    }

    #[test]
    fn manifest_series_name_reaches_a_guest_named_otherwise() {
        let text = format!(
            "{}{}",
            one("6.1", "6.1", "6.1.0-9"),
            one("latest", NEWEST_SERIES, "7.3.4+deb13")
        );
        let m = Manifest::parse(&text).unwrap();
        assert_eq!(m.guest("7.3").unwrap().name, "latest");
        assert_eq!(m.guest("latest").unwrap().name, "latest");
        assert_eq!(m.guest("6.1").unwrap().name, "6.1");
        assert!(m.guest("7.2").is_err());
        assert_eq!(m.names_with_aliases(), ["6.1", "latest (7.3)"]);
    }

    #[test]
    fn manifest_fingerprint_text_leaves_out_the_record() {
        let a = Manifest::parse(&one("x", "6.1", "6.1.0-9")).unwrap();
        let b = Manifest::parse(&one("x", "6.1", "6.1.0-10")).unwrap();
        let (a, b) = (a.guest("x").unwrap(), b.guest("x").unwrap());
        assert_eq!(a.canonical(), b.canonical());
        assert_ne!(a.record_text(), b.record_text());
        let mut c = a.clone();
        c.modules.push("vfio".into());
        assert_ne!(a.canonical(), c.canonical());
    }

    #[test]
    fn repin_text_rewrites_only_that_guest_and_keeps_comments() {
        let new = Repin {
            abi: "6.12.200+deb13".into(),
            version: "6.12.200-1".into(),
            busybox: "1:1.37.0-7".into(),
            kbuild: "linux-kbuild-6.12.200+deb13".into(),
        };
        let out = repin_text(EMBEDDED, "6.12", &new).unwrap();
        let m = Manifest::parse(&out).unwrap();
        let g = m.guest("6.12").unwrap();
        assert_eq!(g.abi, "6.12.200+deb13");
        assert_eq!(g.kbuild, "linux-kbuild-6.12.200+deb13");
        assert_eq!(g.busybox, "1:1.37.0-7");
        assert_eq!(
            m.guest("6.1").unwrap(),
            Manifest::embedded().unwrap().guest("6.1").unwrap()
        );
        assert!(out.contains("# Guest kernels"));
    }
}
