//! `guest-image build` against a small Debian archive that the test writes itself (a local
//! `file:` repository read without signatures, [`guest_images::apt::UNSIGNED_LOCAL_ENV`]):
//! stand-in kernel, headers, kbuild and busybox packages made with `dpkg-deb --build`, whose
//! headers "build" the payload module with a one-line Makefile. Through the real apt path and
//! the real command: the recorded kernel gone from the archive, a newer ABI in the security
//! suite, `--locked` refusing, a current image that does not follow the archive, an offline
//! rebuild from the cache, and a series that vanished.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// A package of the test archive: name, version, depends, files (path, mode, content).
struct Pkg {
    name: String,
    version: String,
    depends: String,
    files: Vec<(String, u32, Vec<u8>)>,
}

fn pkg(name: &str, version: &str, depends: &str, files: Vec<(String, u32, Vec<u8>)>) -> Pkg {
    Pkg {
        name: name.into(),
        version: version.into(),
        depends: depends.into(),
        files,
    }
}

/// The packages of a stand-in 6.1-style kernel `abi` at `version`.
fn kernel(abi: &str, version: &str) -> Vec<Pkg> {
    let rel = format!("{abi}-amd64");
    let common_makefile = "# Stand-in kbuild: an ELF object named like the module.\n\
                           modules:\n\tgcc -c -x c /dev/null -o $(M)/iommutest.ko\n";
    vec![
        pkg(
            &format!("linux-image-{rel}"),
            version,
            "kmod, linux-base (>= 4.3~)",
            vec![
                (
                    format!("boot/vmlinuz-{rel}"),
                    0o644,
                    format!("stand-in kernel {abi} {version}\n").into_bytes(),
                ),
                (format!("lib/modules/{rel}/modules.builtin"), 0o644, vec![]),
            ],
        ),
        pkg(
            &format!("linux-headers-{rel}"),
            version,
            &format!("linux-headers-{abi}-common (= {version}), linux-kbuild-6.1 (>= {version})"),
            vec![
                (
                    format!("usr/src/linux-headers-{rel}/Makefile"),
                    0o644,
                    b"# stand-in\n".to_vec(),
                ),
                (
                    format!("usr/src/linux-headers-{rel}/include/config/auto.conf"),
                    0o644,
                    b"CONFIG_X86_64=y\n".to_vec(),
                ),
            ],
        ),
        pkg(
            &format!("linux-headers-{abi}-common"),
            version,
            "",
            vec![(
                format!("usr/src/linux-headers-{abi}-common/Makefile"),
                0o644,
                common_makefile.as_bytes().to_vec(),
            )],
        ),
        pkg(
            "linux-kbuild-6.1",
            version,
            "",
            vec![(
                "usr/lib/linux-kbuild-6.1/scripts/README".into(),
                0o644,
                b"stand-in\n".to_vec(),
            )],
        ),
    ]
}

fn busybox(version: &str) -> Pkg {
    // `busybox depmod -b ROOT RELEASE` is all the build runs of it.
    let script = "#!/bin/sh\n# stand-in busybox: depmod writes an empty modules.dep\n\
                  if [ \"$1\" = depmod ]; then mkdir -p \"$3/lib/modules/$4\" && : > \"$3/lib/modules/$4/modules.dep\"; fi\n";
    pkg(
        "busybox-static",
        version,
        "",
        vec![("bin/busybox".into(), 0o755, script.as_bytes().to_vec())],
    )
}

/// A local archive with `debian/` and `debian-security/` trees.
struct Archive {
    root: PathBuf,
}

impl Archive {
    fn new(root: &Path) -> Self {
        Self {
            root: root.to_owned(),
        }
    }

    fn url(&self, base: &str) -> String {
        format!("file:{}", self.root.join(base).display())
    }

    /// Writes `suite` of archive `base` (debian or debian-security) holding exactly `pkgs`.
    fn publish(&self, base: &str, suite: &str, pkgs: &[Pkg]) {
        let top = self.root.join(base);
        let pool = top.join("pool/main");
        std::fs::create_dir_all(&pool).unwrap();
        // The archive keeps only what the suite lists: older files leave the pool.
        let keep: Vec<String> = pkgs
            .iter()
            .map(|p| format!("{}_{}_amd64.deb", p.name, p.version.replace(':', "%3a")))
            .collect();
        for e in std::fs::read_dir(&pool).unwrap() {
            let e = e.unwrap();
            if !keep.contains(&e.file_name().to_string_lossy().into_owned()) {
                std::fs::remove_file(e.path()).unwrap();
            }
        }
        let mut index = String::new();
        for p in pkgs {
            let file = format!("{}_{}_amd64.deb", p.name, p.version.replace(':', "%3a"));
            let deb = pool.join(&file);
            if !deb.exists() {
                build_deb(p, &deb, &self.root.join("build"));
            }
            let bytes = std::fs::read(&deb).unwrap();
            let mut stanza = format!(
                "Package: {}\nVersion: {}\nArchitecture: amd64\nMaintainer: test <t@example.invalid>\n",
                p.name, p.version
            );
            if !p.depends.is_empty() {
                writeln!(stanza, "Depends: {}", p.depends).unwrap();
            }
            write!(
                stanza,
                "Filename: pool/main/{file}\nSize: {}\nSHA256: {}\nDescription: stand-in\n\n",
                bytes.len(),
                hex::encode(Sha256::digest(&bytes))
            )
            .unwrap();
            index.push_str(&stanza);
        }
        let dist = top.join("dists").join(suite);
        let bin = dist.join("main/binary-amd64");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(bin.join("Packages"), &index).unwrap();
        let release = format!(
            "Origin: test\nLabel: test\nSuite: {suite}\nCodename: {suite}\n\
             Date: Thu, 01 Jan 2026 00:00:00 UTC\nArchitectures: amd64\nComponents: main\n\
             SHA256:\n {} {} main/binary-amd64/Packages\n",
            hex::encode(Sha256::digest(index.as_bytes())),
            index.len()
        );
        std::fs::write(dist.join("Release"), release).unwrap();
    }
}

fn build_deb(p: &Pkg, out: &Path, scratch: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch.join(format!("{}_{}", p.name, p.version));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("DEBIAN")).unwrap();
    std::fs::write(
        dir.join("DEBIAN/control"),
        format!(
            "Package: {}\nVersion: {}\nArchitecture: amd64\nMaintainer: test <t@example.invalid>\n\
             Description: stand-in package for guest-image tests\n",
            p.name, p.version
        ),
    )
    .unwrap();
    for (path, mode, data) in &p.files {
        let f = dir.join(path);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(&f, data).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
    let st = Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zgzip", "--build"])
        .arg(&dir)
        .arg(out)
        .output()
        .expect("dpkg-deb is needed for this test");
    assert!(
        st.status.success(),
        "dpkg-deb --build: {}",
        String::from_utf8_lossy(&st.stderr)
    );
}

const MANIFEST: &str = r#"
[[guest]]
name = "t61"
suites = ["bookworm", "bookworm-security"]
series = "6.1"
abi = "6.1.0-56"
version = "6.1.192-2"
kbuild = "linux-kbuild-6.1"
busybox = "1:1.35.0-4+b1"
modules = []
host_libs = []
"#;

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn guest_image(cache: &Path, archive: &Archive, manifest: &Path, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_guest-image"))
        .env("IOMMU_EMU_CACHE", cache)
        .env("IOMMU_EMU_DEBIAN_MIRROR", archive.url("debian"))
        .env(
            "IOMMU_EMU_DEBIAN_SECURITY_MIRROR",
            archive.url("debian-security"),
        )
        .env(guest_images::apt::UNSIGNED_LOCAL_ENV, "1")
        .arg("--manifest")
        .arg(manifest)
        .args(args)
        .output()
        .unwrap();
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn lock(cache: &Path) -> guest_images::lockfile::ImageLock {
    guest_images::lockfile::ImageLock::load(&cache.join("images/t61/lock.toml"))
        .unwrap()
        .expect("lock.toml written")
}

/// The archive of the test: bookworm has busybox and an old kernel, bookworm-security the
/// kernels in `security`.
fn publish(a: &Archive, security: &[(&str, &str)]) {
    let mut rel = kernel("6.1.0-50", "6.1.180-1");
    rel.push(busybox("1:1.35.0-4+b1"));
    a.publish("debian", "bookworm", &rel);
    let sec: Vec<Pkg> = security
        .iter()
        .flat_map(|(abi, v)| kernel(abi, v))
        .collect();
    a.publish("debian-security", "bookworm-security", &sec);
}

#[test]
fn archive_build_moves_off_a_gone_version_keeps_it_and_locked_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let a = Archive::new(&dir.path().join("archive"));
    let manifest = dir.path().join("manifest.toml");
    std::fs::write(&manifest, MANIFEST).unwrap();
    // The recorded 6.1.0-56 is gone; security has 6.1.0-57 (newer than bookworm's -50).
    publish(&a, &[("6.1.0-57", "6.1.192-3")]);

    // --locked on an empty cache: the manifest's record must be there, and is not.
    let fresh = dir.path().join("cache-locked");
    let r = guest_image(&fresh, &a, &manifest, &["build", "t61", "--locked"]);
    assert!(
        !r.ok,
        "--locked built although the record is gone: {}",
        r.stderr
    );
    for want in [
        "--locked: linux-image-6.1.0-56-amd64 6.1.192-2",
        "recorded in the manifest",
        "gone from bookworm-security",
        "6.1.0-57 (6.1.192-3)",
        "without --locked",
        "guest-image repin t61",
    ] {
        assert!(r.stderr.contains(want), "missing {want:?} in {}", r.stderr);
    }
    assert!(!fresh.join("images/t61").exists());

    // Unlocked: moves to 6.1.0-57, says so in one line and records it.
    let cache = dir.path().join("cache");
    let r = guest_image(&cache, &a, &manifest, &["build", "t61"]);
    assert!(r.ok, "build failed: {}", r.stderr);
    let moved = "t61: the manifest records 6.1.0-56 (6.1.192-2), gone from bookworm-security; \
                 using 6.1.0-57 (6.1.192-3)";
    assert_eq!(r.stderr.matches(moved).count(), 1, "{}", r.stderr);
    assert!(r.stdout.trim_end().ends_with("images/t61"), "{}", r.stdout);
    let l = lock(&cache);
    assert_eq!(l.release, "6.1.0-57-amd64");
    let k = l.kernel.clone().unwrap();
    assert_eq!(
        (k.abi.as_str(), k.version.as_str()),
        ("6.1.0-57", "6.1.192-3")
    );
    assert_eq!(k.notes, [moved]);
    let names: Vec<String> = l
        .packages
        .iter()
        .map(|p| format!("{}={}", p.name, p.version))
        .collect();
    assert_eq!(
        names,
        [
            "linux-image-6.1.0-57-amd64=6.1.192-3",
            "linux-headers-6.1.0-57-amd64=6.1.192-3",
            "linux-headers-6.1.0-57-common=6.1.192-3",
            "linux-kbuild-6.1=6.1.192-3",
            "busybox-static=1:1.35.0-4+b1",
        ]
    );
    let kernel = std::fs::read_to_string(cache.join("images/t61/vmlinuz")).unwrap();
    assert_eq!(kernel, "stand-in kernel 6.1.0-57 6.1.192-3\n");

    // --locked now holds to the lock: current, nothing to do.
    let r = guest_image(&cache, &a, &manifest, &["build", "t61", "--locked"]);
    assert!(r.ok && r.stderr.contains("up to date"), "{}", r.stderr);

    // The archive moves on to 6.1.0-58: a current image does not follow (and needs no
    // archive: the mirror is unreachable from here on).
    publish(&a, &[("6.1.0-58", "6.1.193-1")]);
    let gone = Archive::new(&dir.path().join("no-archive"));
    let r = guest_image(&cache, &gone, &manifest, &["build", "t61"]);
    assert!(r.ok && r.stderr.contains("up to date"), "{}", r.stderr);
    // A forced rebuild offline takes the lock's packages from the cache.
    let r = guest_image(&cache, &gone, &manifest, &["build", "t61", "--force"]);
    assert!(r.ok, "offline rebuild failed: {}", r.stderr);
    assert!(
        r.stderr
            .contains("using the lock's packages from the cache"),
        "{}",
        r.stderr
    );
    assert_eq!(lock(&cache).release, "6.1.0-57-amd64");
    assert_eq!(
        lock(&cache).kernel.unwrap().notes,
        [moved],
        "the move stays recorded"
    );

    // With the archive back and the cached .debs gone, the lock's version (gone from the
    // archive) gives way to the newest: 6.1.0-58, said in one line naming the lock.
    std::fs::remove_dir_all(cache.join("debs")).unwrap();
    let r = guest_image(
        &cache,
        &a,
        &manifest,
        &["build", "t61", "--force", "--locked"],
    );
    assert!(!r.ok, "{}", r.stderr);
    assert!(
        r.stderr.contains("recorded in the image's lock.toml")
            && r.stderr.contains("linux-image-6.1.0-57-amd64 6.1.192-3")
            && r.stderr.contains("6.1.0-58 (6.1.193-1)"),
        "{}",
        r.stderr
    );
    let r = guest_image(&cache, &a, &manifest, &["build", "t61", "--force"]);
    assert!(r.ok, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "t61: the image's lock.toml records 6.1.0-57 (6.1.192-3), gone from \
             bookworm-security; using 6.1.0-58 (6.1.193-1)"
        ),
        "{}",
        r.stderr
    );
    assert_eq!(lock(&cache).release, "6.1.0-58-amd64");
}

#[test]
fn archive_build_keeps_the_record_while_the_archive_has_it() {
    let dir = tempfile::tempdir().unwrap();
    let a = Archive::new(&dir.path().join("archive"));
    let manifest = dir.path().join("manifest.toml");
    std::fs::write(&manifest, MANIFEST).unwrap();
    // Both the record and a newer ABI are there: the record wins, nothing is said.
    publish(&a, &[("6.1.0-56", "6.1.192-2"), ("6.1.0-57", "6.1.192-3")]);
    let cache = dir.path().join("cache");
    let r = guest_image(&cache, &a, &manifest, &["build", "t61", "--locked"]);
    assert!(r.ok, "{}", r.stderr);
    assert!(!r.stderr.contains("using"), "{}", r.stderr);
    assert_eq!(lock(&cache).release, "6.1.0-56-amd64");
}

#[test]
fn archive_series_gone_names_the_suites_and_series() {
    let dir = tempfile::tempdir().unwrap();
    let a = Archive::new(&dir.path().join("archive"));
    let manifest = dir.path().join("manifest.toml");
    // Only a 6.12 kernel is left in the suites.
    std::fs::write(&manifest, MANIFEST).unwrap();
    a.publish("debian", "bookworm", &[busybox("1:1.35.0-4+b1")]);
    let mut other = kernel("6.12.1+deb13", "6.12.1-1");
    other.truncate(1);
    a.publish("debian-security", "bookworm-security", &other);
    let r = guest_image(&dir.path().join("cache"), &a, &manifest, &["build", "t61"]);
    assert!(!r.ok);
    assert!(
        r.stderr.contains("series 6.1")
            && r.stderr.contains("bookworm, bookworm-security")
            && r.stderr.contains("manifest.toml"),
        "{}",
        r.stderr
    );
}
