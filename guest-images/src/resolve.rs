//! Which Debian packages a guest is built from, decided over a [`PackageIndex`].
//!
//! The archive keeps only the newest build of a package in a suite, so an exact version
//! recorded today is gone within weeks. A guest therefore names suites and a kernel series,
//! and its build takes, in this order, the first of these that the suites still have in full
//! (kernel, its headers and kbuild at one version):
//!
//! 1. the version in the image's `lock.toml` (when the image was built under the manifest's
//!    current record),
//! 2. the version the manifest records,
//! 3. the newest ABI of the series (plain `-amd64` flavour, not `-rt` or `-cloud`), or of any
//!    series when the guest's series is [`crate::manifest::NEWEST_SERIES`].
//!
//! busybox-static falls back the same way to the suites' newest; the build tools' host
//! libraries are always the newest. With `locked`, only the first choice counts and a gone
//! version is an error that says what to run. [`resolve`] is a pure function; the builder
//! feeds it the index of the private apt lists.

use crate::apt::{PackageIndex, version_cmp};
use crate::error::{Error, Result};
use crate::manifest::{GuestSpec, NEWEST_SERIES, PackageRef, Role};

/// A kernel ABI with its package version and the busybox-static version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    /// Kernel ABI (`6.1.0-57`, `7.3.4+deb13`): `linux-image-<abi>-amd64`.
    pub abi: String,
    /// Debian version of the kernel packages.
    pub version: String,
    /// Version of busybox-static.
    pub busybox: String,
}

/// Where a [`Pin`] comes from (for messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinSource {
    /// The `lock.toml` of the image built before.
    Lock,
    /// The guest's entry in `manifest.toml`.
    Manifest,
}

impl PinSource {
    /// The words naming it in a message.
    pub fn words(self) -> &'static str {
        match self {
            PinSource::Lock => "the image's lock.toml",
            PinSource::Manifest => "the manifest",
        }
    }
}

/// The packages of one kernel ABI at one version, all present in the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelSet {
    /// Kernel ABI.
    pub abi: String,
    /// Debian version of every package of the set.
    pub version: String,
    /// Package names with their role (the kernel and what it depends on, the headers, their
    /// common part, kbuild).
    pub packages: Vec<(Role, String)>,
    /// The suite that lists the kernel package.
    pub suite: String,
}

/// The first package of a kernel set that the index lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// Package name.
    pub package: String,
    /// The version looked for.
    pub version: String,
    /// The suite that lists the newest other version of the package (where the version
    /// looked for was replaced), if any does.
    pub newest_in: Option<String>,
}

/// What a guest is built from, and what was said about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// The kernel and busybox chosen.
    pub pin: Pin,
    /// Every package to fetch, each at an exact version.
    pub packages: Vec<(Role, PackageRef)>,
    /// One line per choice that differs from the first preference (a moved kernel or
    /// busybox), for the progress output.
    pub notes: Vec<String>,
}

impl Resolution {
    /// The kernel release (`uname -r`) of the chosen kernel.
    pub fn release(&self) -> String {
        format!("{}-amd64", self.pin.abi)
    }

    /// True when something other than the first preference was chosen.
    pub fn moved(&self) -> bool {
        !self.notes.is_empty()
    }
}

fn image_name(abi: &str) -> String {
    format!("linux-image-{abi}-amd64")
}

/// The complete package set of kernel `abi` at `version`, or the first package missing.
/// The kernel package's own dependencies of the same ABI (Debian 7.x: linux-binary-*,
/// linux-modules-*, linux-base-*) come with it; the headers bring their `-common` part and
/// the kbuild package they name (`kbuild_hint`, with the old ABI replaced, when they name
/// none).
pub fn kernel_set(
    index: &PackageIndex,
    abi: &str,
    version: &str,
    kbuild_hint: &str,
) -> std::result::Result<KernelSet, Missing> {
    let missing = |name: &str| Missing {
        package: name.to_owned(),
        version: version.to_owned(),
        newest_in: index.newest(name).map(|e| e.suite.clone()),
    };
    let same_abi = |dep: &str| {
        dep.starts_with("linux-")
            && (dep.ends_with(&format!("-{abi}-amd64")) || dep.ends_with(&format!("-{abi}-common")))
    };
    let image = image_name(abi);
    let entry = index.find(&image, version).ok_or_else(|| missing(&image))?;
    let suite = entry.suite.clone();
    let mut packages = vec![(Role::Image, image.clone())];
    let headers = format!("linux-headers-{abi}-amd64");
    let common = format!("linux-headers-{abi}-common");
    for dep in &entry.depends {
        if same_abi(dep) && *dep != headers && !packages.iter().any(|(_, n)| n == dep) {
            packages.push((Role::Image, dep.clone()));
        }
    }
    let h = index
        .find(&headers, version)
        .ok_or_else(|| missing(&headers))?;
    packages.push((Role::Headers, headers.clone()));
    packages.push((Role::HeadersCommon, common.clone()));
    let mut kbuild = None;
    for dep in &h.depends {
        if dep.starts_with("linux-kbuild-") {
            kbuild.get_or_insert_with(|| dep.clone());
        } else if same_abi(dep) && !packages.iter().any(|(_, n)| n == dep) {
            packages.push((Role::Image, dep.clone()));
        }
    }
    let kbuild = kbuild.unwrap_or_else(|| kbuild_hint.to_owned());
    packages.push((Role::Kbuild, kbuild));
    for (_, name) in &packages {
        if index.find(name, version).is_none() {
            return Err(missing(name));
        }
    }
    Ok(KernelSet {
        abi: abi.to_owned(),
        version: version.to_owned(),
        packages,
        suite,
    })
}

/// True when `abi` is a plain amd64 kernel of `series` (any series for [`NEWEST_SERIES`]):
/// the same flavour rules as `repin` (not `-rt`, not `-cloud`).
pub fn abi_in_series(abi: &str, series: &str) -> bool {
    if !abi.starts_with(|c: char| c.is_ascii_digit())
        || abi.contains("-rt")
        || abi.contains("cloud")
    {
        return false;
    }
    if series == NEWEST_SERIES {
        return true;
    }
    abi.strip_prefix(series)
        .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('-') || rest.starts_with('+'))
}

/// The newest complete kernel set of the guest's series in the index.
pub fn newest_kernel(spec: &GuestSpec, index: &PackageIndex) -> Option<KernelSet> {
    let mut candidates: Vec<(String, String)> = index
        .names_with_prefix("linux-image-")
        .filter_map(|n| {
            let abi = n.strip_prefix("linux-image-")?.strip_suffix("-amd64")?;
            abi_in_series(abi, &spec.series).then(|| abi.to_owned())
        })
        .flat_map(|abi| {
            index
                .entries(&image_name(&abi))
                .iter()
                .map(move |e| (abi.clone(), e.version.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    candidates.sort_by(|a, b| version_cmp(&b.1, &a.1).then_with(|| b.0.cmp(&a.0)));
    candidates
        .iter()
        .find_map(|(abi, version)| kernel_set(index, abi, version, &spec.kbuild).ok())
}

fn series_words(spec: &GuestSpec) -> String {
    if spec.series == NEWEST_SERIES {
        "any series".to_owned()
    } else {
        format!("series {}", spec.series)
    }
}

/// Decides what guest `spec` is built from. `prefs` are the pins to keep while the index has
/// them, best first (the lock's, then the manifest's). With `locked`, the first pin must be
/// there in full, or this fails naming the package, version and suite.
pub fn resolve(
    spec: &GuestSpec,
    prefs: &[(PinSource, Pin)],
    index: &PackageIndex,
    locked: bool,
) -> Result<Resolution> {
    let suites = spec.suites.join(", ");
    let mut notes = Vec::new();
    let mut first_miss: Option<(PinSource, &Pin, Missing)> = None;
    let mut chosen = None;
    for (src, pin) in prefs {
        match kernel_set(index, &pin.abi, &pin.version, &spec.kbuild) {
            Ok(set) => {
                chosen = Some(set);
                break;
            }
            Err(m) => {
                if first_miss.is_none() {
                    first_miss = Some((*src, pin, m));
                }
                if locked {
                    break;
                }
            }
        }
    }
    let newest = || newest_kernel(spec, index);
    let gone_from = |m: &Missing, instead: Option<&KernelSet>| -> String {
        if let Some(s) = &m.newest_in {
            s.clone()
        } else if let Some(s) = instead {
            s.suite.clone()
        } else {
            suites.clone()
        }
    };
    let set = match (chosen, &first_miss) {
        (Some(set), None) => set,
        (chosen, Some((src, pin, m))) => {
            let instead = match chosen {
                Some(s) if !locked => Some(s),
                _ => newest(),
            };
            if locked {
                return Err(Error::LockedGone {
                    guest: spec.name.clone(),
                    package: format!("{} {}", m.package, m.version),
                    suite: gone_from(m, instead.as_ref()),
                    recorded_in: src.words(),
                    instead: instead
                        .as_ref()
                        .map(|s| format!("{} ({})", s.abi, s.version)),
                });
            }
            let Some(set) = instead else {
                return Err(Error::SeriesGone {
                    guest: spec.name.clone(),
                    series: series_words(spec),
                    suites,
                });
            };
            let what = if m.package == image_name(&pin.abi) {
                String::new()
            } else {
                format!(" but its {} {} is", m.package, m.version)
            };
            notes.push(format!(
                "{}: {} records {} ({}),{what} gone from {}; using {} ({})",
                spec.name,
                src.words(),
                pin.abi,
                pin.version,
                gone_from(m, Some(&set)),
                set.abi,
                set.version
            ));
            set
        }
        (None, None) => match newest() {
            Some(set) => set,
            None => {
                return Err(Error::SeriesGone {
                    guest: spec.name.clone(),
                    series: series_words(spec),
                    suites,
                });
            }
        },
    };
    // busybox-static: the pin's, else the suites' newest.
    let want_bb = prefs
        .first()
        .map(|(_, p)| p.busybox.clone())
        .unwrap_or_default();
    let busybox = if index.find("busybox-static", &want_bb).is_some() {
        want_bb
    } else {
        let newest_bb = index.newest("busybox-static");
        if locked {
            return Err(Error::LockedGone {
                guest: spec.name.clone(),
                package: format!("busybox-static {want_bb}"),
                suite: newest_bb.map_or(suites.clone(), |e| e.suite.clone()),
                recorded_in: prefs
                    .first()
                    .map_or(PinSource::Manifest, |(s, _)| *s)
                    .words(),
                instead: newest_bb.map(|e| e.version.clone()),
            });
        }
        let e = newest_bb.ok_or_else(|| Error::PackageMissing {
            guest: spec.name.clone(),
            package: "busybox-static".into(),
            suites: suites.clone(),
        })?;
        if !want_bb.is_empty() {
            notes.push(format!(
                "{}: busybox-static {want_bb} is gone from {}; using {}",
                spec.name, e.suite, e.version
            ));
        }
        e.version.clone()
    };
    let mut packages: Vec<(Role, PackageRef)> = set
        .packages
        .iter()
        .map(|(role, name)| {
            (
                *role,
                PackageRef {
                    name: name.clone(),
                    version: Some(set.version.clone()),
                },
            )
        })
        .collect();
    packages.push((
        Role::Busybox,
        PackageRef {
            name: "busybox-static".into(),
            version: Some(busybox.clone()),
        },
    ));
    for lib in &spec.host_libs {
        let e = index.newest(lib).ok_or_else(|| Error::PackageMissing {
            guest: spec.name.clone(),
            package: lib.clone(),
            suites: suites.clone(),
        })?;
        packages.push((
            Role::HostLib,
            PackageRef {
                name: lib.clone(),
                version: Some(e.version.clone()),
            },
        ));
    }
    Ok(Resolution {
        pin: Pin {
            abi: set.abi,
            version: set.version,
            busybox,
        },
        packages,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Manifest;

    /// A 6.1-style kernel (one linux-image package) in `suite`.
    fn old_layout(suite_text: &mut String, abi: &str, version: &str) {
        suite_text.push_str(&format!(
            "Package: linux-image-{abi}-amd64\nVersion: {version}\n\
             Depends: kmod, linux-base (>= 4.3~), initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool\n\n\
             Package: linux-headers-{abi}-amd64\nVersion: {version}\n\
             Depends: linux-headers-{abi}-common (= {version}), linux-kbuild-6.1 (>= {version}), linux-compiler-gcc-12-x86\n\n\
             Package: linux-headers-{abi}-common\nVersion: {version}\n\n\
             Package: linux-image-{abi}-rt-amd64\nVersion: {version}\n\n\
             Package: linux-image-{abi}-cloud-amd64\nVersion: {version}\n\n"
        ));
    }

    fn kbuild(suite_text: &mut String, version: &str) {
        suite_text.push_str(&format!(
            "Package: linux-kbuild-6.1\nVersion: {version}\n\n"
        ));
    }

    fn busybox(suite_text: &mut String, version: &str) {
        suite_text.push_str(&format!("Package: busybox-static\nVersion: {version}\n\n"));
    }

    fn spec_6_1() -> GuestSpec {
        Manifest::parse(
            r#"
[[guest]]
name = "g61"
suites = ["bookworm", "bookworm-security"]
series = "6.1"
abi = "6.1.0-56"
version = "6.1.192-2"
kbuild = "linux-kbuild-6.1"
busybox = "1:1.35.0-4+b1"
modules = []
host_libs = []
"#,
        )
        .unwrap()
        .guest("g61")
        .unwrap()
        .clone()
    }

    fn pin(abi: &str, version: &str, bb: &str) -> Pin {
        Pin {
            abi: abi.into(),
            version: version.into(),
            busybox: bb.into(),
        }
    }

    fn index(release: &str, security: &str) -> PackageIndex {
        let mut i = PackageIndex::new();
        i.add_packages_text("bookworm", release, &|_| true);
        i.add_packages_text("bookworm-security", security, &|_| true);
        i
    }

    /// bookworm has 6.1.0-50, security has `sec` (abi, version); busybox in bookworm.
    fn archive(sec: &[(&str, &str)]) -> PackageIndex {
        let mut rel = String::new();
        old_layout(&mut rel, "6.1.0-50", "6.1.180-1");
        kbuild(&mut rel, "6.1.180-1");
        busybox(&mut rel, "1:1.35.0-4+b1");
        let mut s = String::new();
        for (abi, v) in sec {
            old_layout(&mut s, abi, v);
            kbuild(&mut s, v);
        }
        index(&rel, &s)
    }

    fn names(r: &Resolution) -> Vec<String> {
        r.packages.iter().map(|(_, p)| p.apt_arg()).collect()
    }

    #[test]
    fn resolve_keeps_the_recorded_version_while_it_is_there() {
        let spec = spec_6_1();
        let i = archive(&[("6.1.0-56", "6.1.192-2"), ("6.1.0-57", "6.1.192-3")]);
        let prefs = [(
            PinSource::Manifest,
            pin("6.1.0-56", "6.1.192-2", "1:1.35.0-4+b1"),
        )];
        let r = resolve(&spec, &prefs, &i, false).unwrap();
        assert_eq!(r.pin, prefs[0].1);
        assert!(!r.moved(), "{:?}", r.notes);
        assert_eq!(
            names(&r),
            [
                "linux-image-6.1.0-56-amd64=6.1.192-2",
                "linux-headers-6.1.0-56-amd64=6.1.192-2",
                "linux-headers-6.1.0-56-common=6.1.192-2",
                "linux-kbuild-6.1=6.1.192-2",
                "busybox-static=1:1.35.0-4+b1",
            ]
        );
        // --locked agrees when nothing moves.
        assert_eq!(resolve(&spec, &prefs, &i, true).unwrap(), r);
    }

    #[test]
    fn resolve_gone_version_moves_to_the_newest_abi_in_the_security_suite_and_says_so() {
        let spec = spec_6_1();
        let i = archive(&[("6.1.0-57", "6.1.192-3")]);
        let prefs = [(
            PinSource::Manifest,
            pin("6.1.0-56", "6.1.192-2", "1:1.35.0-4+b1"),
        )];
        let r = resolve(&spec, &prefs, &i, false).unwrap();
        assert_eq!(r.pin.abi, "6.1.0-57");
        assert_eq!(r.pin.version, "6.1.192-3");
        assert_eq!(r.release(), "6.1.0-57-amd64");
        assert_eq!(
            r.notes,
            [
                "g61: the manifest records 6.1.0-56 (6.1.192-2), gone from bookworm-security; \
              using 6.1.0-57 (6.1.192-3)"
            ]
        );
        assert!(names(&r).contains(&"linux-kbuild-6.1=6.1.192-3".to_owned()));
    }

    #[test]
    fn resolve_kernel_kept_but_kbuild_replaced_moves_and_names_kbuild() {
        // What bookworm-security did: the old kernel package stays, the one linux-kbuild-6.1
        // package moves to the new version.
        let spec = spec_6_1();
        let mut s = String::new();
        old_layout(&mut s, "6.1.0-56", "6.1.192-2");
        old_layout(&mut s, "6.1.0-57", "6.1.192-3");
        kbuild(&mut s, "6.1.192-3");
        let mut rel = String::new();
        kbuild(&mut rel, "6.1.176-1");
        busybox(&mut rel, "1:1.35.0-4+b1");
        let i = index(&rel, &s);
        let prefs = [(
            PinSource::Manifest,
            pin("6.1.0-56", "6.1.192-2", "1:1.35.0-4+b1"),
        )];
        let r = resolve(&spec, &prefs, &i, false).unwrap();
        assert_eq!(r.pin.abi, "6.1.0-57");
        assert_eq!(
            r.notes,
            [
                "g61: the manifest records 6.1.0-56 (6.1.192-2), but its linux-kbuild-6.1 \
              6.1.192-2 is gone from bookworm-security; using 6.1.0-57 (6.1.192-3)"
            ]
        );
        let err = resolve(&spec, &prefs, &i, true).unwrap_err().to_string();
        assert!(
            err.contains("linux-kbuild-6.1 6.1.192-2")
                && err.contains("gone from bookworm-security"),
            "{err}"
        );
    }

    #[test]
    fn resolve_newer_abi_in_security_beats_the_release_suite() {
        let spec = spec_6_1();
        // No pin at all (a guest new to this machine with an empty record is not possible,
        // but a gone pin reaches the same search): the release suite's 6.1.0-50 is older.
        let i = archive(&[("6.1.0-58", "6.1.200-1")]);
        let prefs = [(
            PinSource::Manifest,
            pin("6.1.0-1", "6.1.1-1", "1:1.35.0-4+b1"),
        )];
        let r = resolve(&spec, &prefs, &i, false).unwrap();
        assert_eq!(
            (r.pin.abi.as_str(), r.pin.version.as_str()),
            ("6.1.0-58", "6.1.200-1")
        );
    }

    #[test]
    fn resolve_lock_wins_over_manifest_and_falls_back_to_it() {
        let spec = spec_6_1();
        let i = archive(&[("6.1.0-56", "6.1.192-2"), ("6.1.0-57", "6.1.192-3")]);
        let lock = pin("6.1.0-57", "6.1.192-3", "1:1.35.0-4+b1");
        let manifest = pin("6.1.0-56", "6.1.192-2", "1:1.35.0-4+b1");
        let prefs = [
            (PinSource::Lock, lock.clone()),
            (PinSource::Manifest, manifest.clone()),
        ];
        assert_eq!(resolve(&spec, &prefs, &i, false).unwrap().pin, lock);
        let prefs = [
            (
                PinSource::Lock,
                pin("6.1.0-55", "6.1.190-1", "1:1.35.0-4+b1"),
            ),
            (PinSource::Manifest, manifest.clone()),
        ];
        let r = resolve(&spec, &prefs, &i, false).unwrap();
        assert_eq!(r.pin, manifest);
        assert!(
            r.notes[0].contains("the image's lock.toml records 6.1.0-55"),
            "{:?}",
            r.notes
        );
    }

    #[test]
    fn resolve_incomplete_abi_is_skipped() {
        let spec = spec_6_1();
        // 6.1.0-58 has a kernel but its headers left: 6.1.0-57 is the newest complete one.
        let mut s = String::new();
        old_layout(&mut s, "6.1.0-57", "6.1.192-3");
        kbuild(&mut s, "6.1.192-3");
        s.push_str("Package: linux-image-6.1.0-58-amd64\nVersion: 6.1.193-1\n\n");
        let mut rel = String::new();
        busybox(&mut rel, "1:1.35.0-4+b1");
        let i = index(&rel, &s);
        let prefs = [(
            PinSource::Manifest,
            pin("6.1.0-56", "6.1.192-2", "1:1.35.0-4+b1"),
        )];
        assert_eq!(
            resolve(&spec, &prefs, &i, false).unwrap().pin.abi,
            "6.1.0-57"
        );
    }

    #[test]
    fn resolve_vanished_series_names_suites_and_series() {
        let spec = spec_6_1();
        let mut rel = String::new();
        busybox(&mut rel, "1:1.35.0-4+b1");
        // Only other series and flavours are left.
        rel.push_str("Package: linux-image-6.12.1+deb13-amd64\nVersion: 6.12.1-1\n\n");
        rel.push_str("Package: linux-image-6.1.0-60-rt-amd64\nVersion: 6.1.300-1\n\n");
        let i = index(&rel, "");
        let prefs = [(
            PinSource::Manifest,
            pin("6.1.0-56", "6.1.192-2", "1:1.35.0-4+b1"),
        )];
        let err = resolve(&spec, &prefs, &i, false).unwrap_err().to_string();
        assert!(
            err.contains("series 6.1") && err.contains("bookworm, bookworm-security"),
            "{err}"
        );
        assert!(err.contains("manifest.toml"), "{err}");
    }

    #[test]
    fn resolve_locked_refuses_to_move_and_says_what_to_run() {
        let spec = spec_6_1();
        let i = archive(&[("6.1.0-57", "6.1.192-3")]);
        let prefs = [
            (
                PinSource::Lock,
                pin("6.1.0-56", "6.1.192-2", "1:1.35.0-4+b1"),
            ),
            (
                PinSource::Manifest,
                pin("6.1.0-57", "6.1.192-3", "1:1.35.0-4+b1"),
            ),
        ];
        let err = resolve(&spec, &prefs, &i, true).unwrap_err().to_string();
        for want in [
            "linux-image-6.1.0-56-amd64 6.1.192-2",
            "bookworm-security",
            "lock.toml",
            "6.1.0-57 (6.1.192-3)",
            "without --locked",
            "guest-image repin g61",
        ] {
            assert!(err.contains(want), "missing {want:?} in {err}");
        }
    }

    #[test]
    fn resolve_busybox_falls_back_to_the_newest_and_locked_refuses() {
        let spec = spec_6_1();
        let i = archive(&[("6.1.0-56", "6.1.192-2")]);
        let prefs = [(
            PinSource::Manifest,
            pin("6.1.0-56", "6.1.192-2", "1:1.35.0-4"),
        )];
        let r = resolve(&spec, &prefs, &i, false).unwrap();
        assert_eq!(r.pin.busybox, "1:1.35.0-4+b1");
        assert_eq!(
            r.notes,
            ["g61: busybox-static 1:1.35.0-4 is gone from bookworm; using 1:1.35.0-4+b1"]
        );
        let err = resolve(&spec, &prefs, &i, true).unwrap_err().to_string();
        assert!(err.contains("busybox-static 1:1.35.0-4"), "{err}");
    }

    #[test]
    fn resolve_debian_7_layout_takes_binary_modules_base_and_newest_series() {
        let mut spec = spec_6_1();
        spec.series = NEWEST_SERIES.into();
        spec.suites = vec!["trixie".into(), "trixie-backports".into()];
        spec.kbuild = "linux-kbuild-7.2.1+deb13".into();
        let seven = |abi: &str, v: &str, headers: bool| {
            let mut t = format!(
                "Package: linux-image-{abi}-amd64\nVersion: {v}\n\
                 Depends: dracut | initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool, \
                 linux-base-{abi}-amd64 (= {v}), linux-binary-{abi}-amd64 (= {v}), \
                 linux-modules-{abi}-amd64 (= {v})\n\n"
            );
            for p in ["base", "binary", "modules"] {
                t.push_str(&format!("Package: linux-{p}-{abi}-amd64\nVersion: {v}\n\n"));
            }
            if headers {
                t.push_str(&format!(
                    "Package: linux-headers-{abi}-amd64\nVersion: {v}\n\
                     Depends: gcc-14-for-host, linux-base (>= 4.12~), linux-base-{abi}-amd64 (= {v}), \
                     linux-headers-{abi}-common (= {v}), linux-kbuild-{abi}\n\n\
                     Package: linux-headers-{abi}-common\nVersion: {v}\n\n\
                     Package: linux-kbuild-{abi}\nVersion: {v}\n\n"
                ));
            }
            t
        };
        let mut bpo = seven("7.3.4+deb13", "7.3.4-1~bpo13+1", true);
        bpo.push_str(&seven("7.2.12+deb13", "7.2.12-1~bpo13+1", true));
        // Old images stay in backports without their headers: not a candidate.
        bpo.push_str(&seven("7.4.0+deb13", "7.4.0-1~bpo13+1", false));
        let mut rel = String::new();
        old_layout(&mut rel, "6.12.118+deb13", "6.12.118-1");
        busybox(&mut rel, "1:1.37.0-6+b9");
        let mut i = PackageIndex::new();
        i.add_packages_text("trixie", &rel, &|_| true);
        i.add_packages_text("trixie-backports", &bpo, &|_| true);
        let prefs = [(
            PinSource::Manifest,
            pin("7.2.1+deb13", "7.2.1-1~bpo13+1", "1:1.37.0-6+b9"),
        )];
        let r = resolve(&spec, &prefs, &i, false).unwrap();
        assert_eq!(r.pin.abi, "7.3.4+deb13");
        assert_eq!(r.release(), "7.3.4+deb13-amd64");
        let v = "7.3.4-1~bpo13+1";
        let want: Vec<String> = [
            "linux-image-7.3.4+deb13-amd64",
            "linux-base-7.3.4+deb13-amd64",
            "linux-binary-7.3.4+deb13-amd64",
            "linux-modules-7.3.4+deb13-amd64",
            "linux-headers-7.3.4+deb13-amd64",
            "linux-headers-7.3.4+deb13-common",
            "linux-kbuild-7.3.4+deb13",
        ]
        .iter()
        .map(|n| format!("{n}={v}"))
        .chain(["busybox-static=1:1.37.0-6+b9".to_owned()])
        .collect();
        assert_eq!(names(&r), want);
        assert_eq!(r.packages[4].0, Role::Headers);
        assert_eq!(r.packages[6].0, Role::Kbuild);
    }

    #[test]
    fn abi_in_series_follows_repin_flavour_rules() {
        assert!(abi_in_series("6.1.0-57", "6.1"));
        assert!(!abi_in_series("6.12.1+deb13", "6.1"));
        assert!(abi_in_series("6.12.118+deb13", "6.12"));
        assert!(!abi_in_series("6.1.0-57-rt", "6.1"));
        assert!(!abi_in_series("6.1.0-57-cloud", "6.1"));
        assert!(abi_in_series("7.3.4+deb13", NEWEST_SERIES));
        assert!(!abi_in_series("amd64", NEWEST_SERIES));
    }
}
