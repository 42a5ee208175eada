//! Command line, following QEMU's habits where they map.

use std::path::PathBuf;

use clap::Parser;
use clap::builder::ArgPredicate;

/// `--device` of `--guest` runs: the PASID test device the payload drives.
pub const GUEST_DEVICE: &str = "pasid-test";

/// Default `--iommu` for `--guest` (the base the `iommu-vmm` command's per-kernel defaults add
/// to; `--guest` itself is resolved there, not in this library).
pub const GUEST_DEFAULT_IOMMU: &str = "intel-iommu,x-scalable-mode=on";

/// `iommu-vmm`: boot a Linux guest under KVM against an emulated IOMMU.
#[derive(Clone, Debug, Parser)]
#[command(name = "iommu-vmm", version, about)]
pub struct Args {
    /// Guest kernel: bzImage or ELF vmlinux.
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// Initramfs.
    #[arg(long, value_name = "PATH")]
    pub initrd: Option<PathBuf>,
    /// Kernel command line (the VMM adds the console and its own devices).
    #[arg(long, value_name = "STR")]
    pub append: Option<String>,
    /// IOMMU: `intel-iommu[,prop=value,...]` or `none`. With `--guest` the default is scalable
    /// mode plus what the payload's tests need (the `iommu-vmm` command's `guest_default_iommu`).
    #[arg(long, value_name = "SPEC", value_parser = parse_iommu)]
    pub iommu: Option<IommuSpec>,
    /// Raw disk image for virtio-blk: `PATH[,readonly=on]`.
    #[arg(long, value_name = "SPEC", value_parser = parse_disk)]
    pub disk: Vec<DiskSpec>,
    /// Guest memory, e.g. `1G`, `512M` (plain numbers are MiB).
    #[arg(short = 'm', long = "memory", value_name = "SIZE", default_value = "1G", value_parser = parse_size)]
    pub memory: u64,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=64))]
    pub smp: u8,
    /// Boot a prebuilt guest image by name (built on first use): a guest of
    /// guest-images/manifest.toml (5.10, 6.1, 6.12, latest; `latest` is also named by its
    /// kernel series, e.g. 7.3) or an image made with `guest-image build --kernel-tree`.
    #[arg(long, value_name = "NAME")]
    pub guest: Option<String>,
    /// Print what the IOMMU did on exit.
    #[arg(long)]
    pub stats: bool,
    /// Record the translation trace to FILE.
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// Run inside a QEMU TCG L1 machine when the host KVM cannot boot stock kernels.
    #[arg(long, value_name = "MODE", default_value = "auto", value_parser = ["auto", "on", "off"])]
    pub nested: String,
    /// Extra test device: `pasid-test` (PASID/ATS/PRI DMA engine, vmm/docs/pasid-device.md),
    /// or `none`. With `--guest` the default is `pasid-test`; `--device none` leaves it out.
    #[arg(long = "device", value_name = "NAME", value_parser = ["pasid-test", "none"],
          default_value_if("guest", ArgPredicate::IsPresent, Some(GUEST_DEVICE)))]
    pub device: Vec<String>,
    /// Diagnostics: a `System.map` or `/proc/kallsyms` text of the guest kernel. A triple-fault
    /// report names RIPs with it and checks the guest kernel's IDT and page tables in guest
    /// memory (only with `nokaslr` in the guest). Default: `$IOMMU_VMM_SYSTEM_MAP`.
    #[arg(long, value_name = "FILE", help_heading = "Diagnostics")]
    pub system_map: Option<PathBuf>,
    /// Diagnostics: the host's tracefs directory (e.g. `/sys/kernel/tracing`; root). The VMM
    /// turns on KVM's kvm_exit/entry/inj_virq/inj_exception/page_fault/msi_set_irq/
    /// apic_accept_irq tracepoints and a triple-fault report prints their last lines with the
    /// guest RIP of the shutdown exit. Default: `$IOMMU_VMM_KVM_TRACE`. Through the nested
    /// runner (whose L1 kernel is the one to trace) set the variable instead: the runner shares
    /// the host paths named on the command line into L1.
    #[arg(long, value_name = "DIR", help_heading = "Diagnostics")]
    pub kvm_trace: Option<PathBuf>,
    /// Experiments: clear these bits (hex) of KVM's paravirtual CPUID features (leaf
    /// 0x40000001 EAX: 4 async PF, 5 steal time, 6 PV EOI, 7 PV unhalt, 9 PV TLB flush, 11 PV
    /// IPI, ...), e.g. `7ef0`. Default: `$IOMMU_VMM_KVM_PV_CLEAR`, else none.
    #[arg(long, value_name = "HEX", value_parser = parse_hex_u32, help_heading = "Diagnostics")]
    pub kvm_pv_clear: Option<u32>,
    /// A built-in read-only test disk of this many bytes, generated in memory
    /// ([`crate::vmm::builtin_disk_content`]). Set by `--guest` when no `--disk` is given, so
    /// that the payload's disk tests run; not a command-line option.
    #[arg(skip)]
    pub builtin_disk: Option<usize>,
}

/// Environment variable: default of `--system-map`.
pub const SYSTEM_MAP_ENV: &str = "IOMMU_VMM_SYSTEM_MAP";
/// Environment variable: default of `--kvm-trace`.
pub const KVM_TRACE_ENV: &str = "IOMMU_VMM_KVM_TRACE";
/// Environment variable: default of `--kvm-pv-clear`.
pub const KVM_PV_CLEAR_ENV: &str = "IOMMU_VMM_KVM_PV_CLEAR";

impl Args {
    /// The post-mortem's options: `--system-map` and `--kvm-trace`, else their environment
    /// variables ([`SYSTEM_MAP_ENV`], [`KVM_TRACE_ENV`]; set by scripts that run the VMM inside
    /// the nested runner's L1 machine, e.g. the `boot_stress` test).
    pub fn diag_options(&self) -> crate::diag::postmortem::Options {
        let env = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        crate::diag::postmortem::Options {
            system_map: self.system_map.clone().or_else(|| env(SYSTEM_MAP_ENV)),
            kvm_trace: self.kvm_trace.clone().or_else(|| env(KVM_TRACE_ENV)),
        }
    }

    /// `--kvm-pv-clear`, else [`KVM_PV_CLEAR_ENV`] (hex), else 0. A malformed variable is
    /// ignored with a warning.
    pub fn kvm_pv_clear(&self) -> u32 {
        if let Some(bits) = self.kvm_pv_clear {
            return bits;
        }
        let Ok(v) = std::env::var(KVM_PV_CLEAR_ENV) else {
            return 0;
        };
        parse_hex_u32(&v).unwrap_or_else(|e| {
            tracing::warn!("{KVM_PV_CLEAR_ENV}: {e}; ignored");
            0
        })
    }
}

/// Parse a hexadecimal `u32`, with or without `0x`.
pub fn parse_hex_u32(s: &str) -> Result<u32, String> {
    let t = s.trim();
    u32::from_str_radix(t.strip_prefix("0x").unwrap_or(t), 16)
        .map_err(|_| format!("`{s}` is not a hexadecimal 32-bit number"))
}

/// Which IOMMU the guest gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IommuSpec {
    /// No IOMMU: devices DMA to guest-physical addresses.
    None,
    /// Intel VT-d with QEMU-style properties (`x-scalable-mode=on,aw-bits=48`),
    /// validated by the VT-d model's configuration parser.
    IntelIommu {
        /// The text after `intel-iommu,`, empty for defaults.
        props: String,
    },
}

/// A virtio-blk disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskSpec {
    /// Backing raw file.
    pub path: PathBuf,
    /// Offer the disk read-only (VIRTIO_BLK_F_RO).
    pub readonly: bool,
}

/// Parse `--iommu`.
pub fn parse_iommu(s: &str) -> Result<IommuSpec, String> {
    let (model, props) = match s.split_once(',') {
        Some((m, p)) => (m, p),
        None => (s, ""),
    };
    match model {
        "none" if props.is_empty() => Ok(IommuSpec::None),
        "none" => Err("`none` takes no properties".into()),
        "intel-iommu" => Ok(IommuSpec::IntelIommu {
            props: props.to_string(),
        }),
        other => Err(format!(
            "unknown IOMMU `{other}`: use `intel-iommu[,prop=value,...]` or `none`"
        )),
    }
}

/// Parse `--disk PATH[,readonly=on|off]`.
pub fn parse_disk(s: &str) -> Result<DiskSpec, String> {
    let mut parts = s.split(',');
    let path = parts.next().unwrap_or_default();
    if path.is_empty() {
        return Err("missing disk path".into());
    }
    let mut readonly = false;
    for p in parts {
        match p.split_once('=') {
            Some(("readonly", v)) => readonly = parse_on_off(v)?,
            _ => {
                return Err(format!(
                    "unknown disk property `{p}`: the only one is readonly=on|off"
                ));
            }
        }
    }
    Ok(DiskSpec {
        path: PathBuf::from(path),
        readonly,
    })
}

fn parse_on_off(v: &str) -> Result<bool, String> {
    match v {
        "on" | "true" | "yes" => Ok(true),
        "off" | "false" | "no" => Ok(false),
        _ => Err(format!("`{v}` is not on or off")),
    }
}

/// Parse a memory size: `1G`, `512M`, `2048K`, plain number = MiB (as QEMU's `-m`).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, shift) = if let Some(n) = s.strip_suffix(['G', 'g']) {
        (n, 30)
    } else if let Some(n) = s.strip_suffix(['M', 'm']) {
        (n, 20)
    } else if let Some(n) = s.strip_suffix(['K', 'k']) {
        (n, 10)
    } else {
        (s, 20)
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size like 1G or 512M"))?;
    let bytes = n
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("`{s}` is too large"))?;
    if bytes < (64 << 20) {
        return Err(format!("{s} is too small: give the guest at least 64M"));
    }
    if bytes > (1u64 << 40) {
        return Err(format!("{s} is too large (at most 1T)"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_full_command_line_parses() {
        let a = Args::try_parse_from([
            "iommu-vmm",
            "--kernel",
            "/k",
            "--initrd",
            "/i",
            "--append",
            "quiet",
            "--iommu",
            "intel-iommu,x-scalable-mode=on,aw-bits=48",
            "--disk",
            "/d,readonly=on",
            "-m",
            "2G",
            "--smp",
            "2",
            "--stats",
            "--trace",
            "/t",
            "--nested",
            "off",
        ])
        .expect("parses");
        assert_eq!(a.memory, 2 << 30);
        assert_eq!(a.smp, 2);
        assert_eq!(
            a.iommu,
            Some(IommuSpec::IntelIommu {
                props: "x-scalable-mode=on,aw-bits=48".into()
            })
        );
        assert_eq!(
            a.disk,
            vec![DiskSpec {
                path: "/d".into(),
                readonly: true
            }]
        );
        assert!(a.stats);
        assert_eq!(a.nested, "off");
    }

    #[test]
    fn cli_iommu_none_parses_and_unknown_model_is_rejected() {
        assert_eq!(parse_iommu("none"), Ok(IommuSpec::None));
        let e = parse_iommu("amd-iommu").unwrap_err();
        assert!(e.contains("unknown IOMMU `amd-iommu`"), "{e}");
        assert!(parse_iommu("none,x=1").is_err());
    }

    #[test]
    fn cli_disk_unknown_property_is_rejected() {
        let e = parse_disk("/d,cache=none").unwrap_err();
        assert!(e.contains("readonly"), "{e}");
        assert!(!parse_disk("/d").unwrap().readonly);
        assert!(!parse_disk("/d,readonly=off").unwrap().readonly);
        assert!(parse_disk("/d,readonly=maybe").is_err());
    }

    #[test]
    fn cli_size_units_parse() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("256"), Ok(256 << 20));
        assert!(parse_size("1k").is_err());
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn cli_guest_defaults_to_the_pasid_device() {
        let a = Args::try_parse_from(["iommu-vmm", "--guest", "6.1"]).expect("parses");
        assert_eq!(a.device, vec!["pasid-test".to_string()]);
        assert_eq!(a.iommu, None, "--guest's IOMMU default is resolve_guest's");
    }

    #[test]
    fn cli_guest_device_none_and_explicit_iommu_override_the_defaults() {
        let a = Args::try_parse_from([
            "iommu-vmm",
            "--guest",
            "6.1",
            "--device",
            "none",
            "--iommu",
            "intel-iommu",
        ])
        .expect("parses");
        assert_eq!(a.device, vec!["none".to_string()]);
        assert_eq!(a.iommu, Some(IommuSpec::IntelIommu { props: "".into() }));
    }

    #[test]
    fn cli_without_guest_has_no_device_and_no_iommu_default() {
        let a = Args::try_parse_from(["iommu-vmm", "--kernel", "/k"]).expect("parses");
        assert!(a.device.is_empty());
        assert_eq!(a.iommu, None);
        assert!(Args::try_parse_from(["iommu-vmm", "--device", "bogus"]).is_err());
    }

    #[test]
    fn cli_diagnostics_options_parse_and_win_over_the_environment() {
        let a = Args::try_parse_from([
            "iommu-vmm",
            "--kernel",
            "/k",
            "--system-map",
            "/m",
            "--kvm-trace",
            "/sys/kernel/tracing",
            "--kvm-pv-clear",
            "0x7ef0",
        ])
        .expect("parses");
        let o = a.diag_options();
        assert_eq!(o.system_map.as_deref(), Some(std::path::Path::new("/m")));
        assert_eq!(
            o.kvm_trace.as_deref(),
            Some(std::path::Path::new("/sys/kernel/tracing"))
        );
        assert_eq!(a.kvm_pv_clear(), 0x7ef0);
        assert!(Args::try_parse_from(["iommu-vmm", "--kvm-pv-clear", "zz"]).is_err());
        assert_eq!(parse_hex_u32("7ef0"), Ok(0x7ef0));
    }

    #[test]
    fn cli_help_documents_the_diagnostics_options() {
        use clap::CommandFactory;
        let help = Args::command().render_long_help().to_string();
        for want in [
            "--system-map",
            "IOMMU_VMM_SYSTEM_MAP",
            "--kvm-trace",
            "IOMMU_VMM_KVM_TRACE",
            "--kvm-pv-clear",
            "IOMMU_VMM_KVM_PV_CLEAR",
        ] {
            assert!(help.contains(want), "--help lacks {want}:\n{help}");
        }
    }

    #[test]
    fn cli_bad_nested_mode_is_rejected() {
        assert!(Args::try_parse_from(["iommu-vmm", "--nested", "maybe"]).is_err());
    }
}
