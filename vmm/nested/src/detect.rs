//! Is hardware KVM usable for stock kernels here? (`/dev/kvm` opens, the CPU has `vmx` or `svm`,
//! and no page-table based PVM hypervisor stands in for KVM.)

use std::fmt;
use std::path::Path;

/// The vendor of the host's hardware virtualisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuVendor {
    /// Intel VT-x (`vmx` CPU flag).
    Intel,
    /// AMD-V (`svm` CPU flag).
    Amd,
}

impl fmt::Display for CpuVendor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CpuVendor::Intel => "Intel VT-x",
            CpuVendor::Amd => "AMD-V",
        })
    }
}

/// What the host's KVM can do for a stock Linux guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvmSupport {
    /// `/dev/kvm` is backed by hardware virtualisation: guests run directly.
    Hardware {
        /// VT-x or AMD-V.
        vendor: CpuVendor,
    },
    /// A stock kernel cannot run on this host's KVM; the reason says why in plain words.
    Unusable {
        /// E.g. "/dev/kvm is kvm_pvm ...".
        reason: String,
    },
}

/// Probes the host: `/dev/kvm` opens read-write, no `kvm_pvm` module is loaded, and the CPU flags
/// have `vmx` or `svm`.
pub fn detect_kvm() -> KvmSupport {
    let modules = std::fs::read_to_string("/proc/modules").unwrap_or_default();
    let pvm_loaded = Path::new("/sys/module/kvm_pvm").exists();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let open = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map(drop);
    classify(&modules, pvm_loaded, &cpuinfo, open)
}

/// The decision of [`detect_kvm`] from what it read (separate so it can be tested).
pub fn classify(
    proc_modules: &str,
    pvm_in_sysfs: bool,
    cpuinfo: &str,
    dev_kvm: std::io::Result<()>,
) -> KvmSupport {
    let pvm = pvm_in_sysfs
        || proc_modules
            .lines()
            .any(|l| l.split_whitespace().next() == Some("kvm_pvm"));
    let flags: Vec<&str> = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, f)| f.split_whitespace().collect())
        .unwrap_or_default();
    let vendor = if flags.contains(&"vmx") {
        Some(CpuVendor::Intel)
    } else if flags.contains(&"svm") {
        Some(CpuVendor::Amd)
    } else {
        None
    };
    if pvm {
        return KvmSupport::Unusable {
            reason: format!(
                "/dev/kvm is kvm_pvm (a page-table based hypervisor that only runs kernels built as PVM guests{}); \
                 a stock kernel dies in it",
                if vendor.is_none() {
                    ", and the CPU flags have neither vmx nor svm"
                } else {
                    ""
                }
            ),
        };
    }
    if let Err(e) = dev_kvm {
        return KvmSupport::Unusable {
            reason: format!("/dev/kvm cannot be opened read-write: {e}"),
        };
    }
    match vendor {
        Some(vendor) => KvmSupport::Hardware { vendor },
        None => KvmSupport::Unusable {
            reason: "the CPU flags have neither vmx (Intel VT-x) nor svm (AMD-V): \
                     /dev/kvm has no hardware virtualisation under it"
                .into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTEL: &str = "processor\t: 0\nflags\t\t: fpu vme vmx sse2\n";
    const AMD: &str = "processor\t: 0\nflags\t\t: fpu svm npt\n";
    const NONE: &str = "processor\t: 0\nflags\t\t: fpu hypervisor cx16\n";

    #[test]
    fn classify_vmx_without_pvm_is_hardware_intel() {
        assert_eq!(
            classify("kvm_intel 1 0\nkvm 2 1\n", false, INTEL, Ok(())),
            KvmSupport::Hardware {
                vendor: CpuVendor::Intel
            }
        );
    }

    #[test]
    fn classify_svm_is_hardware_amd() {
        assert_eq!(
            classify("", false, AMD, Ok(())),
            KvmSupport::Hardware {
                vendor: CpuVendor::Amd
            }
        );
    }

    #[test]
    fn classify_pvm_module_is_unusable_even_with_flags() {
        let r = classify("kvm_pvm 1 0 - Live\n", false, INTEL, Ok(()));
        assert!(matches!(r, KvmSupport::Unusable { ref reason } if reason.contains("kvm_pvm")));
        let r = classify("", true, NONE, Ok(()));
        assert!(
            matches!(r, KvmSupport::Unusable { ref reason } if reason.contains("kvm_pvm") && reason.contains("neither vmx nor svm"))
        );
    }

    #[test]
    fn classify_no_flags_is_unusable() {
        let r = classify("", false, NONE, Ok(()));
        assert!(matches!(r, KvmSupport::Unusable { ref reason } if reason.contains("neither vmx")));
    }

    #[test]
    fn classify_unopenable_dev_kvm_is_unusable() {
        let err = std::io::Error::from(std::io::ErrorKind::NotFound);
        let r = classify("", false, INTEL, Err(err));
        assert!(matches!(r, KvmSupport::Unusable { ref reason } if reason.contains("/dev/kvm")));
    }
}
