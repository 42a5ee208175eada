//! Kernel module closure from `modules.dep` (the format depmod(8) writes: one line per module,
//! `path: dependency-path ...`, dependencies listed transitively), plus `modules.builtin`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::error::{Error, IoContext, Result};

/// The module name of a path: file name without `.ko[.xz|.gz|.zst]`, `-` folded to `_`
/// (the kernel treats both the same in module names).
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = ["ko.xz", "ko.gz", "ko.zst", "ko"]
        .iter()
        .find_map(|ext| file.strip_suffix(&format!(".{ext}")))
        .unwrap_or(file);
    stem.replace('-', "_")
}

/// A parsed modules.dep with the kernel's built-in list.
#[derive(Debug, Default, Clone)]
pub struct ModuleDb {
    /// name -> (path relative to the modules directory, dependency names)
    modules: BTreeMap<String, (String, Vec<String>)>,
    builtin: BTreeSet<String>,
}

/// One module to load: name and path relative to `lib/modules/<release>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleFile {
    /// Module name.
    pub name: String,
    /// Path relative to the modules directory (as in modules.dep).
    pub path: String,
}

impl ModuleDb {
    /// Parses modules.dep text and modules.builtin text.
    pub fn parse(dep: &str, builtin: &str) -> Result<Self> {
        let mut db = Self::default();
        for (n, line) in dep.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (path, deps) = line
                .split_once(':')
                .ok_or_else(|| Error::Contents(format!("modules.dep line {} has no `:`", n + 1)))?;
            let deps = deps.split_whitespace().map(module_name).collect();
            db.modules
                .insert(module_name(path), (path.trim().to_owned(), deps));
        }
        db.builtin = builtin
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(module_name)
            .collect();
        Ok(db)
    }

    /// Reads `modules.dep` and `modules.builtin` (which may be absent) from a modules directory.
    pub fn load(dir: &Path) -> Result<Self> {
        let dep_path = dir.join("modules.dep");
        let dep =
            std::fs::read_to_string(&dep_path).ctx(|| format!("reading {}", dep_path.display()))?;
        let builtin = std::fs::read_to_string(dir.join("modules.builtin")).unwrap_or_default();
        Self::parse(&dep, &builtin)
    }

    /// True when `name` is built into the kernel.
    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&name.replace('-', "_"))
    }

    /// Every module needed to load `wanted`, dependencies before their users, each once.
    /// Built-in names are skipped; an unknown name is an error.
    pub fn closure<S: AsRef<str>>(&self, wanted: &[S]) -> Result<Vec<ModuleFile>> {
        let mut order = Vec::new();
        let mut done = BTreeSet::new();
        let mut active = BTreeSet::new();
        for w in wanted {
            let name = w.as_ref().replace('-', "_");
            if self.is_builtin(&name) {
                continue;
            }
            self.visit(&name, &mut done, &mut active, &mut order)?;
        }
        Ok(order)
    }

    fn visit(
        &self,
        name: &str,
        done: &mut BTreeSet<String>,
        active: &mut BTreeSet<String>,
        order: &mut Vec<ModuleFile>,
    ) -> Result<()> {
        if done.contains(name) || active.contains(name) {
            // `active`: a dependency cycle (depmod refuses those); load what we have.
            return Ok(());
        }
        let (path, deps) = self
            .modules
            .get(name)
            .ok_or_else(|| Error::ModuleMissing(name.to_owned()))?;
        active.insert(name.to_owned());
        for d in deps {
            self.visit(d, done, active, order)?;
        }
        active.remove(name);
        done.insert(name.to_owned());
        order.push(ModuleFile {
            name: name.to_owned(),
            path: path.clone(),
        });
        Ok(())
    }
}

/// Reads a module file, decompressing `.ko.xz` and `.ko.gz` (busybox insmod takes plain `.ko`).
pub fn read_module(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).ctx(|| format!("reading {}", path.display()))?;
    let name = path.to_string_lossy();
    if name.ends_with(".ko.xz") {
        let mut out = Vec::new();
        lzma_rs::xz_decompress(&mut &raw[..], &mut out)
            .map_err(|e| Error::Contents(format!("{}: bad xz data: {e}", path.display())))?;
        Ok(out)
    } else if name.ends_with(".ko.gz") {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&raw[..]), &mut out)
            .ctx(|| format!("decompressing {}", path.display()))?;
        Ok(out)
    } else if name.ends_with(".ko") {
        Ok(raw)
    } else {
        Err(Error::Contents(format!(
            "{}: unsupported module compression",
            path.display()
        )))
    }
}

/// The path a module gets inside the image: the modules.dep path without compression suffix.
pub fn plain_path(path: &str) -> String {
    for ext in [".xz", ".gz", ".zst"] {
        if let Some(p) = path.strip_suffix(ext) {
            return p.to_owned();
        }
    }
    path.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/drivers/virtio/virtio_ring.ko.xz:
kernel/drivers/virtio/virtio.ko.xz: kernel/drivers/virtio/virtio_ring.ko.xz
kernel/drivers/virtio/virtio_pci_modern_dev.ko.xz:
kernel/drivers/virtio/virtio_pci.ko.xz: kernel/drivers/virtio/virtio_pci_modern_dev.ko.xz kernel/drivers/virtio/virtio_ring.ko.xz kernel/drivers/virtio/virtio.ko.xz
kernel/drivers/block/virtio_blk.ko.xz: kernel/drivers/virtio/virtio_ring.ko.xz kernel/drivers/virtio/virtio.ko.xz
kernel/drivers/vfio/vfio.ko.xz: kernel/drivers/vfio/vfio-virqfd.ko.xz
kernel/drivers/vfio/vfio-virqfd.ko.xz:
";

    fn pos(v: &[ModuleFile], n: &str) -> usize {
        v.iter().position(|m| m.name == n).unwrap()
    }

    #[test]
    fn module_name_strips_suffix_and_folds_dash() {
        assert_eq!(module_name("kernel/a/vfio-virqfd.ko.xz"), "vfio_virqfd");
        assert_eq!(module_name("x.ko"), "x");
    }

    #[test]
    fn closure_orders_dependencies_first_each_once() {
        let db = ModuleDb::parse(DEP, "").unwrap();
        let v = db.closure(&["virtio_pci", "virtio_blk"]).unwrap();
        let names: Vec<&str> = v.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names.len(), 5, "{names:?}");
        assert!(pos(&v, "virtio_ring") < pos(&v, "virtio"));
        assert!(pos(&v, "virtio") < pos(&v, "virtio_pci"));
        assert!(pos(&v, "virtio_pci_modern_dev") < pos(&v, "virtio_pci"));
        assert!(pos(&v, "virtio") < pos(&v, "virtio_blk"));
    }

    #[test]
    fn closure_dash_name_resolves_to_underscore_module() {
        let db = ModuleDb::parse(DEP, "").unwrap();
        let v = db.closure(&["vfio"]).unwrap();
        assert_eq!(v[0].name, "vfio_virqfd");
        assert_eq!(v[0].path, "kernel/drivers/vfio/vfio-virqfd.ko.xz");
    }

    #[test]
    fn closure_builtin_module_is_skipped() {
        let db = ModuleDb::parse(DEP, "kernel/drivers/virtio/virtio_pci.ko\n").unwrap();
        let v = db.closure(&["virtio_pci"]).unwrap();
        assert!(v.is_empty());
    }

    #[test]
    fn closure_unknown_module_is_an_error() {
        let db = ModuleDb::parse(DEP, "").unwrap();
        let err = db.closure(&["nope"]).unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn modules_dep_line_without_colon_is_rejected() {
        assert!(ModuleDb::parse("kernel/x.ko\n", "").is_err());
    }

    #[test]
    fn read_module_decompresses_xz() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.ko.xz");
        let mut xz = Vec::new();
        lzma_rs::xz_compress(&mut &b"\x7fELF module"[..], &mut xz).unwrap();
        std::fs::write(&p, xz).unwrap();
        assert_eq!(read_module(&p).unwrap(), b"\x7fELF module");
        assert_eq!(plain_path("kernel/m.ko.xz"), "kernel/m.ko");
    }
}
