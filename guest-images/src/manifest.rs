//! The manifest of pinned guest kernels (`guest-images/manifest.toml`).
//!
//! The manifest is compiled into the binary, so `guest-image` works from any directory; the
//! `--manifest` option (or [`Manifest::load`]) reads another copy. `guest-image repin` rewrites
//! the file in the source tree with [`repin_text`].

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// The manifest shipped with this source tree.
pub const EMBEDDED: &str = include_str!("../manifest.toml");

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

/// One pinned Debian guest kernel.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GuestSpec {
    /// The name used on the command line (`5.10`, `6.1`, `6.12`).
    pub name: String,
    /// Debian suites to read; the first is the release, `*-security` entries use the security
    /// archive.
    pub suites: Vec<String>,
    /// Kernel series (`6.1`): `repin` picks the newest ABI that starts with it.
    pub series: String,
    /// Kernel ABI: `linux-image-<abi>-amd64`.
    pub abi: String,
    /// Debian version of the kernel, headers and kbuild packages.
    pub version: String,
    /// Name of the kbuild package (its version is `version`).
    pub kbuild: String,
    /// Version of busybox-static.
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
    /// linux-image: kernel and modules.
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
            if !g.abi.starts_with(&g.series) {
                return Err(Error::Manifest(format!(
                    "guest `{}`: ABI {} is not in series {}",
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

    /// The guest named `name`.
    pub fn guest(&self, name: &str) -> Result<&GuestSpec> {
        self.guest
            .iter()
            .find(|g| g.name == name)
            .ok_or_else(|| Error::UnknownGuest {
                name: name.to_owned(),
                known: self.names().join(", "),
            })
    }

    /// Every guest name, in manifest order.
    pub fn names(&self) -> Vec<String> {
        self.guest.iter().map(|g| g.name.clone()).collect()
    }
}

impl GuestSpec {
    /// The kernel release string (`uname -r`) of this guest.
    pub fn release(&self) -> String {
        format!("{}-amd64", self.abi)
    }

    /// The packages this guest needs, with their role.
    pub fn packages(&self) -> Vec<(Role, PackageRef)> {
        let pinned = |name: String, version: &str| PackageRef {
            name,
            version: Some(version.to_owned()),
        };
        let mut v = vec![
            (
                Role::Image,
                pinned(format!("linux-image-{}-amd64", self.abi), &self.version),
            ),
            (
                Role::Headers,
                pinned(format!("linux-headers-{}-amd64", self.abi), &self.version),
            ),
            (
                Role::HeadersCommon,
                pinned(format!("linux-headers-{}-common", self.abi), &self.version),
            ),
            (Role::Kbuild, pinned(self.kbuild.clone(), &self.version)),
            (
                Role::Busybox,
                pinned("busybox-static".to_owned(), &self.busybox),
            ),
        ];
        v.extend(self.host_libs.iter().map(|name| {
            (
                Role::HostLib,
                PackageRef {
                    name: name.clone(),
                    version: None,
                },
            )
        }));
        v
    }

    /// A stable text form of the entry, part of the image's input fingerprint.
    pub fn canonical(&self) -> String {
        // Serialising a struct with only strings and lists of strings cannot fail.
        toml::to_string(self).unwrap_or_else(|_| format!("{self:?}"))
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
    let old_abi = entry
        .get("abi")
        .and_then(|a| a.as_str())
        .unwrap_or_default()
        .to_owned();
    let kbuild = entry
        .get("kbuild")
        .and_then(|a| a.as_str())
        .unwrap_or_default()
        .replace(&old_abi, &new.abi);
    entry["abi"] = toml_edit::value(new.abi.as_str());
    entry["version"] = toml_edit::value(new.version.as_str());
    entry["busybox"] = toml_edit::value(new.busybox.as_str());
    entry["kbuild"] = toml_edit::value(kbuild);
    let out = doc.to_string();
    Manifest::parse(&out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_embedded_parses_three_debian_guests() {
        let m = Manifest::embedded().unwrap();
        assert_eq!(m.names(), ["5.10", "6.1", "6.12"]);
        let g = m.guest("6.1").unwrap();
        assert_eq!(g.release(), format!("{}-amd64", g.abi));
        assert!(g.modules.iter().any(|m| m == "virtio_blk"));
    }

    #[test]
    fn manifest_unknown_guest_lists_known_names() {
        let m = Manifest::embedded().unwrap();
        let err = m.guest("4.19").unwrap_err().to_string();
        assert!(err.contains("4.19") && err.contains("6.12"), "{err}");
    }

    #[test]
    fn manifest_duplicate_name_is_rejected() {
        let one = r#"
[[guest]]
name = "x"
suites = ["bookworm"]
series = "6.1"
abi = "6.1.0-1"
version = "6.1.1-1"
kbuild = "linux-kbuild-6.1"
busybox = "1:1"
modules = []
host_libs = []
"#;
        assert!(Manifest::parse(one).is_ok());
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
        let text = EMBEDDED.replace("abi = \"6.1.0-56\"", "abi = \"5.4.0-1\"");
        assert!(Manifest::parse(&text).is_err());
    }

    #[test]
    fn manifest_packages_pin_kernel_headers_kbuild_busybox() {
        let m = Manifest::embedded().unwrap();
        let g = m.guest("6.12").unwrap();
        let pkgs = g.packages();
        let args: Vec<String> = pkgs.iter().map(|(_, p)| p.apt_arg()).collect();
        assert!(args.contains(&format!("linux-image-{}-amd64={}", g.abi, g.version)));
        assert!(args.contains(&format!("linux-headers-{}-common={}", g.abi, g.version)));
        assert!(args.contains(&format!("busybox-static={}", g.busybox)));
        // Host libraries follow the suite (not part of the image).
        assert!(
            pkgs.iter()
                .any(|(r, p)| *r == Role::HostLib && p.version.is_none())
        );
    }

    #[test]
    fn repin_text_rewrites_only_that_guest_and_keeps_comments() {
        let new = Repin {
            abi: "6.12.200+deb13".into(),
            version: "6.12.200-1".into(),
            busybox: "1:1.37.0-7".into(),
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
        assert!(out.contains("# Pinned guest kernels"));
    }
}
