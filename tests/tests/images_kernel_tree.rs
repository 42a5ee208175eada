//! `guest-image build --kernel-tree`: an image from a user's built kernel tree.
//!
//! Building a kernel here would take too long, so the test assembles a stand-in tree from
//! Debian's 6.1 packages (already in the cache from the 6.1 image): the headers as the tree,
//! the package's bzImage as `arch/x86/boot/bzImage`, and the few modules the guest needs with
//! a `modules.order`, which is what `make modules_install` reads in a real tree.

use std::path::{Path, PathBuf};

use guest_images::cache::Cache;
use guest_images::deb;
use guest_images::image::{BuildOptions, Builder, MODULE_LIST_PATH, PAYLOAD_MODULE_PATH};
use guest_images::initramfs::read_gz;
use guest_images::manifest::Manifest;

fn deb_of(cache: &Cache, name: &str, version: &str) -> PathBuf {
    let prefix = format!("{name}_{}_", version.replace(':', "%3a"));
    std::fs::read_dir(cache.debs())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&prefix)
        })
        .unwrap_or_else(|| panic!("{prefix}*.deb not in the cache"))
}

fn stand_in_tree(dir: &Path) -> (PathBuf, String) {
    let cache = Cache::from_env().unwrap();
    let builder = Builder::new(
        cache.clone(),
        Manifest::embedded().unwrap(),
        BuildOptions {
            quiet: true,
            ..Default::default()
        },
    );
    let img = builder.build_debian("6.1").unwrap();
    // The packages the image was built from (its lock), not the manifest's record: the
    // archive may have moved on.
    let k = img
        .lock
        .kernel
        .clone()
        .expect("a Debian image records its kernel");
    let root = dir.join("root");
    for p in img
        .lock
        .packages
        .iter()
        .filter(|p| p.name.starts_with("linux-"))
    {
        deb::extract(&deb_of(&cache, &p.name, &p.version), &root).unwrap();
    }
    let release = img.lock.release.clone();
    let abi = &k.abi;
    let tree = root.join(format!("usr/src/linux-headers-{abi}-amd64"));
    // The packaged Makefile includes the common headers by their installed path.
    std::fs::write(
        tree.join("Makefile"),
        format!(
            "include {}\n",
            root.join(format!("usr/src/linux-headers-{abi}-common/Makefile"))
                .display()
        ),
    )
    .unwrap();
    std::fs::create_dir_all(tree.join("arch/x86/boot")).unwrap();
    std::fs::copy(
        root.join(format!("boot/vmlinuz-{release}")),
        tree.join("arch/x86/boot/bzImage"),
    )
    .unwrap();
    // The modules the Debian 6.1 image loads, placed where a built tree has them.
    let entries = read_gz(&img.initramfs()).unwrap();
    let list = entries.iter().find(|e| e.name == MODULE_LIST_PATH).unwrap();
    let list = String::from_utf8(list.data.clone()).unwrap();
    let moddir = root.join(format!("lib/modules/{release}"));
    let mut order = String::new();
    for m in list.lines() {
        let rel = m.strip_prefix("kernel/").unwrap();
        std::fs::create_dir_all(tree.join(rel).parent().unwrap()).unwrap();
        std::fs::copy(moddir.join(m), tree.join(rel)).unwrap();
        order.push_str(rel);
        order.push('\n');
    }
    std::fs::write(tree.join("modules.order"), order).unwrap();
    for f in ["modules.builtin", "modules.builtin.modinfo"] {
        std::fs::copy(moddir.join(f), tree.join(f)).unwrap();
    }
    (tree, release)
}

#[test]
fn images_kernel_tree_build_uses_tree_kernel_modules_and_payload() {
    let tmp = std::env::temp_dir().join(format!("iommu-images-tree-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let (tree, release) = stand_in_tree(&tmp);
    let name = format!("test-tree-{}", std::process::id());
    let builder = Builder::new(
        Cache::from_env().unwrap(),
        Manifest::embedded().unwrap(),
        BuildOptions {
            quiet: true,
            ..Default::default()
        },
    );
    let img = builder.build_kernel_tree(&tree, &name, "6.1").unwrap();
    assert_eq!(img.lock.kind, "kernel-tree");
    assert_eq!(img.lock.release, release);
    assert_eq!(
        std::fs::read(img.kernel()).unwrap(),
        std::fs::read(tree.join("arch/x86/boot/bzImage")).unwrap()
    );
    let entries = read_gz(&img.initramfs()).unwrap();
    let get = |p: &str| entries.iter().find(|e| e.name == p);
    let list = String::from_utf8(get(MODULE_LIST_PATH).unwrap().data.clone()).unwrap();
    assert!(list.lines().any(|l| l.ends_with("virtio_blk.ko")), "{list}");
    for m in list.lines() {
        assert!(get(&format!("lib/modules/{release}/{m}")).is_some(), "{m}");
    }
    let payload = &get(PAYLOAD_MODULE_PATH).unwrap().data;
    let vermagic = format!("vermagic={release} ");
    assert!(
        payload
            .windows(vermagic.len())
            .any(|w| w == vermagic.as_bytes())
    );
    // A second build of an unchanged tree does nothing.
    let again = builder.build_kernel_tree(&tree, &name, "6.1").unwrap();
    assert!(!again.rebuilt);
    // A reserved name is refused in plain words.
    let err = builder
        .build_kernel_tree(&tree, "6.1", "6.1")
        .unwrap_err()
        .to_string();
    assert!(err.contains("reserved"), "{err}");
    let _ = std::fs::remove_dir_all(&img.dir);
    let _ = std::fs::remove_dir_all(&tmp);
}
