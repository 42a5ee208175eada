//! The crate's error type: every message is meant to be read by a person at a terminal.

use std::path::PathBuf;

/// What can go wrong while building or looking up a guest image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The host has no `apt-get`: images are built from Debian packages with the host's apt.
    #[error(
        "this host is not Debian-like: `apt-get` was not found. guest-image downloads Debian \
         packages with apt-get; run it on Debian or Ubuntu (or in a Debian container)"
    )]
    NotDebianLike,
    /// A host program the build needs is missing.
    #[error("`{program}` was not found on this host; {hint}")]
    MissingTool {
        /// The program looked for.
        program: String,
        /// What to install.
        hint: String,
    },
    /// The Debian archive keyring is not installed.
    #[error(
        "the Debian archive keyring {0} is missing; install it with \
         `apt-get install debian-archive-keyring` (or run scripts/setup)"
    )]
    NoKeyring(PathBuf),
    /// No Debian mirror address could be found.
    #[error(
        "no Debian archive address was found in the host's apt sources; set \
         IOMMU_EMU_DEBIAN_MIRROR (and IOMMU_EMU_DEBIAN_SECURITY_MIRROR) to the URLs of a Debian \
         archive and its security archive"
    )]
    NoMirror,
    /// `apt-get update` failed: usually the archive cannot be reached.
    #[error(
        "the Debian archive could not be reached (apt-get update for {suites} failed): {detail}"
    )]
    ArchiveUnreachable {
        /// The suites that were being updated.
        suites: String,
        /// apt's own words.
        detail: String,
    },
    /// No complete kernel of the guest's series is left in its suites.
    #[error(
        "no complete kernel of {series} (linux-image-*-amd64 with its headers and kbuild at one \
         version) is in {suites} for guest {guest}: the series is gone from these suites. Name \
         other suites or another series for `{guest}` in guest-images/manifest.toml (or try \
         one with guest-image --manifest PATH)"
    )]
    SeriesGone {
        /// Guest name in the manifest.
        guest: String,
        /// `series 6.1` or `any series`.
        series: String,
        /// The suites searched.
        suites: String,
    },
    /// `--locked` and a recorded version is gone.
    #[error(
        "--locked: {package}, recorded in {recorded_in} for guest {guest}, is gone from \
         {suite}{}. Run `guest-image build {guest}` without --locked to build with what the \
         archive has now (and `guest-image repin {guest}` to record it in the manifest)",
        instead.as_ref().map(|i| format!(" (the archive has {i} now)")).unwrap_or_default()
    )]
    LockedGone {
        /// Guest name in the manifest.
        guest: String,
        /// Debian package name and the recorded version (`name version`).
        package: String,
        /// The suite it left (or the suites searched).
        suite: String,
        /// `the image's lock.toml` or `the manifest`.
        recorded_in: &'static str,
        /// What an unlocked build would take instead.
        instead: Option<String>,
    },
    /// A package the guest needs is in none of its suites.
    #[error(
        "{package} is in none of the suites {suites} of guest {guest}; check the suites in \
         guest-images/manifest.toml"
    )]
    PackageMissing {
        /// Guest name in the manifest.
        guest: String,
        /// Debian package name.
        package: String,
        /// The suites searched.
        suites: String,
    },
    /// A package download failed.
    #[error("downloading {package} failed: {detail}")]
    Download {
        /// Package that failed.
        package: String,
        /// apt's own words.
        detail: String,
    },
    /// No cache folder can be named.
    #[error("no cache folder: set IOMMU_EMU_CACHE, XDG_CACHE_HOME or HOME")]
    NoCache,
    /// The manifest file cannot be used.
    #[error("the manifest is invalid: {0}")]
    Manifest(String),
    /// A guest name that the manifest does not list.
    #[error("there is no guest named `{name}`; known guests: {known}")]
    UnknownGuest {
        /// The name asked for.
        name: String,
        /// Names the manifest lists.
        known: String,
    },
    /// No image with that name is cached.
    #[error("no image named `{0}` is cached; build it with `guest-image build {0}`")]
    NotCached(String),
    /// A kernel tree given with --kernel-tree is not usable.
    #[error("the kernel tree {path} cannot be used: {reason}")]
    KernelTree {
        /// The tree.
        path: PathBuf,
        /// Why not.
        reason: String,
    },
    /// A package's files were not what the builder expected.
    #[error("unexpected package contents: {0}")]
    Contents(String),
    /// A host command failed.
    #[error("`{command}` failed: {detail}")]
    Command {
        /// The command line (shortened).
        command: String,
        /// Its exit status and the tail of its error output.
        detail: String,
    },
    /// A modules.dep file could not be used.
    #[error("module `{0}` is neither in modules.dep nor built into the kernel")]
    ModuleMissing(String),
    /// A file-system operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Adds a context message to I/O errors.
pub trait IoContext<T> {
    /// Wraps an I/O error with `context()`.
    fn ctx<S: Into<String>>(self, context: impl FnOnce() -> S) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx<S: Into<String>>(self, context: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: context().into(),
            source,
        })
    }
}
