//! Guest images built from Debian packages (issue 6): contents and reproducibility.
//!
//! These tests download Debian packages the first time (into the normal cache folder, so a
//! later run, `scripts/setup` and the boot tests reuse them) and are no-ops afterwards except
//! for the forced rebuild of the reproducibility test (about 15 s).

use guest_images::cache::Cache;
use guest_images::image::{
    BuildOptions, Builder, BuiltImage, MODULE_LIST_PATH, PAYLOAD_MODULE_PATH,
};
use guest_images::initramfs::{read_gz, sha256_file};
use guest_images::manifest::Manifest;

/// Held by the tests that read or rebuild the 6.1 image, so a forced rebuild never replaces
/// the image while another test reads it.
static IMAGE_6_1: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn builder(force: bool) -> Builder {
    Builder::new(
        Cache::from_env().unwrap(),
        Manifest::embedded().unwrap(),
        BuildOptions {
            force,
            quiet: true,
            ..Default::default()
        },
    )
}

fn build(name: &str) -> BuiltImage {
    builder(false)
        .build_debian(name)
        .unwrap_or_else(|e| panic!("building guest {name}: {e}"))
}

fn check_contents(name: &str) {
    let img = build(name);
    // The kernel used is the lock's (the manifest's record, or what replaced it when the
    // archive moved on): no check here depends on the manifest's version strings.
    let kernel_used = img
        .lock
        .kernel
        .clone()
        .expect("a Debian image records its kernel");
    let release = format!("{}-amd64", kernel_used.abi);
    assert_eq!(img.lock.release, release);
    // The kernel is a bzImage (boot protocol magic "HdrS" at 0x202).
    let kernel = std::fs::read(img.kernel()).unwrap();
    assert_eq!(
        &kernel[0x202..0x206],
        b"HdrS",
        "{name}: vmlinuz is not a bzImage"
    );

    let entries = read_gz(&img.initramfs()).unwrap();
    let get = |p: &str| entries.iter().find(|e| e.name == p);
    let init = get("init").expect("/init");
    assert!(init.data.starts_with(b"#!/bin/busybox sh"));
    assert_eq!(init.mode & 0o111, 0o111, "/init is executable");
    let busybox = get("bin/busybox").expect("busybox");
    assert!(busybox.data.starts_with(b"\x7fELF"));
    assert!(get("dev/console").is_some_and(|e| e.rdev == (5, 1)));
    assert!(get("bin/odirect_sha").is_some_and(|e| e.data.starts_with(b"\x7fELF")));

    // Modules: virtio_blk always comes as a module in Debian's kernels; every listed module
    // is present, uncompressed, and the load list names only modules present.
    let list = String::from_utf8(get(MODULE_LIST_PATH).expect("module list").data.clone()).unwrap();
    assert!(
        list.lines().any(|l| l.ends_with("/virtio_blk.ko")),
        "{name}: {list}"
    );
    for m in list.lines() {
        let e = get(&format!("lib/modules/{release}/{m}"))
            .unwrap_or_else(|| panic!("{name}: {m} listed but absent"));
        assert!(
            e.data.starts_with(b"\x7fELF"),
            "{name}: {m} is not an uncompressed ELF module"
        );
    }
    // The payload module is built for exactly this kernel.
    let payload = &get(PAYLOAD_MODULE_PATH).expect("payload module").data;
    let vermagic = format!("vermagic={release} ");
    assert!(
        payload
            .windows(vermagic.len())
            .any(|w| w == vermagic.as_bytes()),
        "{name}: iommutest.ko was not built for {release}"
    );
    assert!(payload.windows(12).any(|w| w == b"license=GPL\0"));
    // The lock file records every package with its SHA-256.
    assert!(
        img.lock
            .packages
            .iter()
            .any(|p| p.name == format!("linux-image-{release}") && p.version == kernel_used.version)
    );
    assert!(img.lock.packages.iter().all(|p| p.sha256.len() == 64));
}

#[test]
fn images_5_10_initramfs_has_init_busybox_modules_payload() {
    check_contents("5.10");
}

#[test]
fn images_6_1_initramfs_has_init_busybox_modules_payload() {
    let _g = IMAGE_6_1.lock().unwrap_or_else(|e| e.into_inner());
    check_contents("6.1");
}

#[test]
fn images_6_12_initramfs_has_init_busybox_modules_payload() {
    check_contents("6.12");
}

/// The newest kernel Debian ships (trixie-backports; 7.x packaging: kernel under
/// /usr/lib/modules/<release>/vmlinuz, modules in linux-modules-*), also named by its series.
#[test]
fn images_latest_initramfs_has_init_busybox_modules_payload() {
    check_contents("latest");
    let m = Manifest::embedded().unwrap();
    let series = m.guest("latest").unwrap().recorded_series();
    assert_eq!(m.guest(&series).unwrap().name, "latest");
    let img = build(&series);
    assert_eq!(img.name, "latest");
    assert!(!img.rebuilt, "the series name builds the same image");
}

/// Issue 6: the same inputs give the same initramfs bytes, and a second build is a no-op.
#[test]
fn images_6_1_rebuild_gives_same_sha256_and_second_build_is_noop() {
    let _g = IMAGE_6_1.lock().unwrap_or_else(|e| e.into_inner());
    let first = build("6.1");
    let before = sha256_file(&first.initramfs()).unwrap();
    let forced = builder(true).build_debian("6.1").unwrap();
    assert!(forced.rebuilt);
    assert_eq!(
        sha256_file(&forced.initramfs()).unwrap(),
        before,
        "initramfs is not reproducible"
    );
    assert_eq!(
        forced.lock.file_sha("initramfs.cpio.gz"),
        Some(before.as_str())
    );
    let again = build("6.1");
    assert!(
        !again.rebuilt,
        "a second build of a current image must be a no-op"
    );
}
