//! `--guest NAME`: a prebuilt guest image turned into kernel, initramfs, IOMMU and command line.
//!
//! The command's business, not the VMM library's: it needs `guest-images` (which builds images
//! from Debian's packages). The library's `vmm::run` and `vmm::preflight` get the result.

use guest_images::image::{BuildOptions, Builder, image_path};
use iommu_vmm::cli::{Args, GUEST_DEFAULT_IOMMU, IommuSpec, parse_iommu};
use iommu_vmm::error::{Error, Result};
use iommu_vmm::vmm::builtin_disk_content;

/// Default `--iommu` for `--guest NAME` with `devices`: [`GUEST_DEFAULT_IOMMU`], plus ATS and
/// page requests (`device-iotlb=on,x-prs=on`, which Linux needs for PRI and SVA) with the
/// PASID test device, plus `x-perfmon=on` for kernels with the IOMMU perf driver (6.3+).
/// `name` is the guest's kernel release (`7.3.4+deb13-amd64`) or version (`6.12`).
pub fn guest_default_iommu(name: &str, devices: &[String]) -> String {
    let mut s = GUEST_DEFAULT_IOMMU.to_string();
    if devices.iter().any(|d| d == "pasid-test") {
        s.push_str(",device-iotlb=on,x-prs=on");
    }
    let mut v = name.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    if (v.next().unwrap_or(0), v.next().unwrap_or(0)) >= (6, 3) {
        s.push_str(",x-perfmon=on");
    }
    s
}

/// Length of the built-in disk `--guest` adds when no `--disk` is given (the payload's default
/// `iommutest.disk_len`).
pub const GUEST_DISK_LEN: usize = 1 << 20;

/// Lower-case hex SHA-256 of `data`.
fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Default kernel command line of `--guest` images (before `--append`).
pub fn guest_cmdline(iommu: &IommuSpec) -> &'static str {
    match iommu {
        IommuSpec::IntelIommu { .. } => "quiet intel_iommu=on,sm_on iommu.strict=1",
        IommuSpec::None => "quiet",
    }
}

/// Turn `--guest NAME` into kernel, initrd, default IOMMU and command line, plus the built-in
/// read-only disk (and its checksum on the command line) when no `--disk` is given.
/// With `build`, the image is built (or checked current) first; without,
/// a cached image is used as it is and built only when missing (inside the
/// nested runner's L1 machine there is no compiler or network, and the
/// host has built it already).
pub fn resolve_guest(args: &Args, name: &str, build: bool) -> Result<Args> {
    let err = |e: guest_images::Error| Error::Setup(format!("--guest {name}: {e}"));
    let cache = guest_images::cache::Cache::from_env().map_err(err)?;
    let manifest = guest_images::manifest::Manifest::embedded().map_err(err)?;
    // A guest's kernel series names it too (`7.3` for `latest`); an image that is not in the
    // manifest (`guest-image build --kernel-tree`) is used as it is.
    let guest = manifest.guest(name).map(|g| g.name.clone()).ok();
    let dir = match (image_path(&cache, guest.as_deref().unwrap_or(name)), &guest) {
        (Ok(dir), _) if !build => dir,
        (Ok(dir), None) => dir,
        (Err(e), None) => return Err(err(e)),
        (_, Some(guest)) => {
            let opts = BuildOptions {
                quiet: true,
                ..BuildOptions::default()
            };
            Builder::new(cache, manifest, opts)
                .build_debian(guest)
                .map_err(err)?
                .dir
        }
    };
    // Per-kernel defaults follow the image's kernel release (its lock), not its name.
    let release =
        guest_images::lockfile::ImageLock::load(&dir.join(guest_images::cache::LOCK_FILE))
            .ok()
            .flatten()
            .map(|l| l.release)
            .unwrap_or_else(|| name.to_owned());
    let mut out = args.clone();
    out.guest = None;
    out.kernel = Some(dir.join(guest_images::cache::KERNEL_FILE));
    out.initrd = Some(dir.join(guest_images::cache::INITRAMFS_FILE));
    let iommu = args.iommu.clone().unwrap_or_else(|| {
        parse_iommu(&guest_default_iommu(&release, &args.device)).unwrap_or(IommuSpec::None)
    });
    let mut append = guest_cmdline(&iommu).to_string();
    // Without a disk of the user's, a built-in one whose checksum the payload verifies.
    if args.disk.is_empty() && args.builtin_disk.is_none() {
        out.builtin_disk = Some(GUEST_DISK_LEN);
        let sha = sha256_hex(&builtin_disk_content(GUEST_DISK_LEN));
        append.push_str(&format!(
            " iommutest.disk_sha={sha} iommutest.disk_len={GUEST_DISK_LEN}"
        ));
    }
    if let Some(a) = &args.append {
        append.push(' ');
        append.push_str(a);
    }
    out.iommu = Some(iommu);
    out.append = Some(append);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_default_iommu_adds_pri_with_the_pasid_device_and_perfmon_from_6_3() {
        let pasid = vec!["pasid-test".to_string()];
        assert_eq!(guest_default_iommu("6.1", &[]), GUEST_DEFAULT_IOMMU);
        let s = guest_default_iommu("6.1", &pasid);
        assert!(s.ends_with(",device-iotlb=on,x-prs=on"), "{s}");
        assert!(guest_default_iommu("6.12", &[]).ends_with(",x-perfmon=on"));
        assert!(!guest_default_iommu("5.10", &pasid).contains("perfmon"));
        // Kernel releases as the image locks give them: 7.x and trixie's ABIs too.
        assert!(guest_default_iommu("7.3.4+deb13-amd64", &[]).ends_with(",x-perfmon=on"));
        assert!(!guest_default_iommu("6.1.0-57-amd64", &[]).contains("perfmon"));
        for name in ["5.10", "6.1", "6.12", "kt-test", "7.3.4+deb13-amd64"] {
            let s = guest_default_iommu(name, &pasid);
            assert!(parse_iommu(&s).is_ok(), "{s}");
        }
    }

    #[test]
    fn guest_cmdline_turns_on_scalable_mode_with_intel_iommu() {
        let spec = parse_iommu(GUEST_DEFAULT_IOMMU).unwrap();
        assert!(guest_cmdline(&spec).contains("intel_iommu=on,sm_on"));
        assert!(!guest_cmdline(&IommuSpec::None).contains("intel_iommu"));
    }

    #[test]
    fn builtin_disk_checksum_is_the_sha256_of_its_bytes() {
        // The payload checks the disk against `iommutest.disk_sha`: SHA-256 in lower-case hex.
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(sha256_hex(&builtin_disk_content(GUEST_DISK_LEN)).len(), 64);
    }
}
