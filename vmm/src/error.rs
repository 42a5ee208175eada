//! Errors a user gets, in plain words.

use std::path::PathBuf;

/// Host and configuration errors of the VMM (guest behaviour is an
/// [`ExitReason`](crate::exit::ExitReason), not an error).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No `--kernel` and no `--guest`.
    #[error("no kernel given: pass --kernel PATH (a bzImage or vmlinux) or --guest NAME")]
    MissingKernel,
    /// The kernel file cannot be read.
    #[error("cannot read the kernel {path}: {source}")]
    KernelUnreadable {
        /// Path given.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The kernel file is neither a bzImage nor an ELF vmlinux.
    #[error("{path} is not a bootable x86_64 kernel (bzImage or ELF vmlinux): {reason}")]
    KernelFormat {
        /// Path given.
        path: PathBuf,
        /// Loader's complaint.
        reason: String,
    },
    /// The initrd cannot be read.
    #[error("cannot read the initrd {path}: {source}")]
    InitrdUnreadable {
        /// Path given.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The initrd does not fit in guest memory.
    #[error(
        "the initrd ({size} bytes) does not fit in guest memory below {limit:#x}; give the guest more memory with -m"
    )]
    InitrdTooLarge {
        /// Its size.
        size: u64,
        /// Highest usable address.
        limit: u64,
    },
    /// The disk image cannot be opened.
    #[error("cannot open the disk {path}: {source}")]
    DiskUnreadable {
        /// Path given.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// /dev/kvm does not exist.
    #[error(
        "/dev/kvm does not exist: this host has no KVM (load kvm_intel or kvm_amd, or use --nested on)"
    )]
    KvmAbsent,
    /// /dev/kvm exists but may not be opened.
    #[error(
        "/dev/kvm is not accessible to this user: add yourself to the kvm group or run as root"
    )]
    KvmPermission,
    /// Another KVM failure.
    #[error("KVM: {what}: {source}")]
    Kvm {
        /// What was being done.
        what: &'static str,
        /// errno.
        source: kvm_ioctls::Error,
    },
    /// A KVM capability the VMM needs is missing.
    #[error("this KVM lacks {0}, which iommu-vmm needs")]
    KvmCapability(&'static str),
    /// The `--iommu` specification was refused by the model.
    #[error("{0}")]
    IommuConfig(String),
    /// Guest memory could not be set up.
    #[error("cannot set up {size} bytes of guest memory: {reason}")]
    Memory {
        /// Requested size.
        size: u64,
        /// Why.
        reason: String,
    },
    /// The command line is too long or malformed.
    #[error("kernel command line: {0}")]
    Cmdline(String),
    /// Something else in the host setup failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// An internal setup step failed.
    #[error("{0}")]
    Setup(String),
}

impl Error {
    /// Wrap a KVM ioctl error.
    pub fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> Error {
        move |source| Error::Kvm { what, source }
    }
}

/// Result with the VMM's error.
pub type Result<T> = std::result::Result<T, Error>;
