//! Nested runner: boots the L2 guest inside a QEMU (TCG, AMD SVM) L1 machine when the host has no KVM usable by stock kernels.
//!
//! Some hosts have a `/dev/kvm` that cannot run a stock kernel: `kvm_pvm` (a page-table based
//! hypervisor without VT-x/AMD-V, the machines this project is developed on), or no KVM at all
//! (many CI runners). There `iommu-vmm` runs itself one level down:
//!
//! ```text
//! host:  iommu-vmm (outer) ── QEMU, TCG, -cpu EPYC -m 4G -smp 2 ──┐
//! L1:    Debian 6.1 kernel, kvm_amd (nested paging), /init        │ serial: framed lines
//!        └─ iommu-vmm --nested off <user's arguments> ── KVM ─────┤ 9p: the host's files
//! L2:    the guest under test, with the emulated IOMMU            │
//! ```
//!
//! L1's CPU model and kernel can be changed for experiments: [`RunnerOptions::cpu_model`]
//! (`IOMMU_VMM_NESTED_CPU`) and [`RunnerOptions::l1_kernel`] (`IOMMU_VMM_NESTED_L1_KERNEL=6.12`).
//!
//! - [`detect_kvm`] decides whether hardware KVM is usable; [`maybe_run_nested`] applies the
//!   `--nested auto|on|off` policy and, when nesting, runs the whole command in L1 and returns
//!   the L2 run's exit status.
//! - [`run_jobs`] runs several `iommu-vmm` invocations (or shell scripts) one after another in a
//!   single L1 boot, each with its own exit status and console: the test matrix uses it.
//! - The L1 image is built and cached by `guest_images::runner` (rebuilt when this binary's
//!   content changes). QEMU comes from [`qemu::find_qemu`].
//! - Files: the host directories the arguments name (and the current directory and the guest
//!   image cache) are exported to L1 over virtio-9p, mounted at the same absolute paths. Disks the
//!   L2 guest writes, traces and statistics land directly in the host's files; nothing is copied
//!   back. Console: the L1 serial port on QEMU's stdout; `/init` frames each job with marker
//!   lines (see [`protocol`]).
//! - QEMU 7.2 hangs the inner machine in about 1 of 20 boots, and a timeout inside L1 cannot
//!   fire then: every L1 boot has an outer wall-clock deadline, and jobs that got no result are
//!   run again in one more L1 boot.
//!
//! This crate (`iommu-nested`) is the runner alone: it starts the `iommu-vmm` binary as a
//! program and does not depend on the VMM library (`iommu_vmm`), which in turn knows nothing of
//! guest images, QEMU or nesting. The `iommu-vmm` command (vmm/cli/) calls [`maybe_run_nested`]
//! and [`nested_check_main`]; the boot tests and the whole-VM benchmark call [`run_batch`].
//! Design, costs and the L1 machine's failure modes: vmm/nested/README.md.
#![deny(missing_docs)]

pub mod bundle;
pub mod detect;
pub mod protocol;
pub mod qemu;
pub mod share;

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub use detect::{CpuVendor, KvmSupport, detect_kvm};
use protocol::{Event, parse_line, shell_quote};
pub use qemu::{Qemu, QemuSource, find_qemu};
use share::{Share, ShareSet};

/// Expected cost of one L2 boot through the runner, told to the user in auto mode.
pub const EXPECTED_COST: &str = "~15-30 s per boot";

/// `--nested auto|on|off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NestedMode {
    /// Nest only when hardware KVM is not usable (the default).
    #[default]
    Auto,
    /// Always nest (also on hosts with hardware KVM: tests the runner itself).
    On,
    /// Never nest; fail with the reason when hardware KVM is not usable.
    Off,
}

impl FromStr for NestedMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(NestedMode::Auto),
            "on" => Ok(NestedMode::On),
            "off" => Ok(NestedMode::Off),
            other => Err(format!(
                "unknown nested mode {other:?} (expected auto, on or off)"
            )),
        }
    }
}

/// Errors of the nested runner.
#[derive(Debug, thiserror::Error)]
pub enum NestedError {
    /// `--nested off` on a host whose KVM cannot run a stock kernel.
    #[error(
        "cannot run here with --nested off: {reason}. \
         Use --nested auto (the default) to boot through the nested runner (QEMU TCG with AMD SVM, {EXPECTED_COST})"
    )]
    NoHardwareKvm {
        /// Why hardware KVM is not usable.
        reason: String,
    },
    /// QEMU is missing or broken.
    #[error("nested runner: {0}")]
    Qemu(String),
    /// The runner image could not be built.
    #[error("nested runner image: {0}")]
    Image(#[from] guest_images::runner::RunnerError),
    /// KVM does not work inside the L1 machine.
    #[error("nested runner: KVM does not work in the L1 machine: {0}")]
    L1Kvm(String),
    /// The L1 machine never produced a result for a job, in every attempt.
    #[error("nested runner: {0}")]
    Lost(String),
    /// A host I/O error (temporary directory, spawning QEMU).
    #[error("nested runner: {0}")]
    Io(#[from] std::io::Error),
}

/// What a job runs in L1.
#[derive(Debug, Clone)]
pub enum JobProgram {
    /// `iommu-vmm` with these arguments (without argv\[0\]); `--nested off` is forced and
    /// paths are mapped into L1.
    Vmm(Vec<OsString>),
    /// A `/bin/sh` script (busybox) run in L1: for checking the runner itself.
    Shell(String),
    /// Any program with arguments, run as given (no `--nested off` added). The program and the
    /// paths in `args` are exported and mapped into L1 as for [`JobProgram::Vmm`]. It must be
    /// able to run in L1, which has only the runner image's files and the shares: a static
    /// binary, or a host binary started through the dynamic loader of a [`bundle::Bundle`].
    Exec {
        /// The program (host path).
        program: PathBuf,
        /// Its arguments (without argv\[0\]).
        args: Vec<OsString>,
    },
}

/// One run in the L1 machine.
#[derive(Debug, Clone)]
pub struct Job {
    /// What to run.
    pub program: JobProgram,
    /// Working directory (host path; exported to L1). Default: the current directory.
    pub cwd: Option<PathBuf>,
    /// More host paths to export (files: their directory).
    pub extra_paths: Vec<PathBuf>,
    /// Exit statuses that make the nested runner run the job once more, in a new L1 boot
    /// (see [`Job::retry_nested_on`]). Never used for direct runs on hardware KVM.
    pub retry_nested_on: Vec<i32>,
}

impl Job {
    /// An `iommu-vmm` run with the user's arguments.
    pub fn vmm<I: IntoIterator<Item = S>, S: Into<OsString>>(args: I) -> Self {
        Job {
            program: JobProgram::Vmm(args.into_iter().map(Into::into).collect()),
            cwd: None,
            extra_paths: Vec::new(),
            retry_nested_on: Vec::new(),
        }
    }
    /// A program with arguments (see [`JobProgram::Exec`]).
    pub fn exec<I: IntoIterator<Item = S>, S: Into<OsString>>(
        program: impl Into<PathBuf>,
        args: I,
    ) -> Self {
        Job {
            program: JobProgram::Exec {
                program: program.into(),
                args: args.into_iter().map(Into::into).collect(),
            },
            cwd: None,
            extra_paths: Vec::new(),
            retry_nested_on: Vec::new(),
        }
    }
    /// A shell script run in L1.
    pub fn shell(script: impl Into<String>) -> Self {
        Job {
            program: JobProgram::Shell(script.into()),
            cwd: None,
            extra_paths: Vec::new(),
            retry_nested_on: Vec::new(),
        }
    }
    /// Sets the working directory.
    pub fn with_cwd(mut self, cwd: impl Into<PathBuf>) -> Self {
        self.cwd = Some(cwd.into());
        self
    }
    /// Exports one more host path to L1.
    pub fn with_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.extra_paths.push(path.into());
        self
    }
    /// Under the nested runner only: when the job ends with exit status `status`, run it once
    /// more in a new L1 boot, and keep the first attempt in [`JobResult::earlier`]. For boot
    /// tests whose guests must not triple-fault (`iommu_vmm::exit::STATUS_TRIPLE_FAULT`): the L1
    /// machine's emulated SVM (QEMU TCG) is itself unreliable here (vmm/nested/README.md:
    /// L1 freezes and crashes in KVM's world switch, and L2 triple faults with the same
    /// signature that no direct run has shown), so
    /// one such ending is retried and reported rather than failing CI. Direct runs on hardware
    /// KVM never retry: there a triple fault fails the test at once.
    pub fn retry_nested_on(mut self, status: i32) -> Self {
        self.retry_nested_on.push(status);
        self
    }
}

/// How to run the L1 machine.
#[derive(Debug, Clone)]
pub struct RunnerOptions {
    /// The `iommu-vmm` binary L1 carries; `None`: this process's own executable.
    pub vmm_binary: Option<PathBuf>,
    /// Time limit of one job (enforced in L1, and from outside with a margin).
    pub job_timeout: Duration,
    /// Time limit from QEMU start to the end of the L1 KVM smoke check.
    pub boot_timeout: Duration,
    /// How long past `job_timeout` the host waits for a job's END line before it declares the
    /// L1 machine frozen (the inner timeout cannot fire then) and kills it.
    pub outer_margin: Duration,
    /// Declare L1 frozen when a running job prints nothing for this long. `None`: 120 s with a
    /// QEMU older than 8 (bookworm's 7.2 loses the timer exit of the inner guest in ~1 of 20
    /// boots), 300 s with newer ones (QEMU 10's L1 also freezes now and then), so a hang costs
    /// minutes rather than `job_timeout`. `IOMMU_VMM_NESTED_IDLE_TIMEOUT` (seconds, 0 = off)
    /// overrides both.
    pub idle_timeout: Option<Duration>,
    /// L1 boots at most (3 = two retries for jobs left without a result: QEMU 10's L1 froze or
    /// crashed 0-4 times in the ~20 L2 boots of a `.ci/run`, though not once in 200 short
    /// boot_stress boots; see vmm/nested/README.md).
    pub attempts: u32,
    /// Print job consoles to stdout (and their stderr to stderr) as they arrive.
    pub stream: bool,
    /// Install QEMU when missing (apt-get as root, or backports extraction).
    pub install_qemu: bool,
    /// A specific QEMU; `None`: [`find_qemu`].
    pub qemu: Option<Qemu>,
    /// Module parameters for L1's kvm_amd (or kvm_intel), comma-separated, e.g. `vgif=0,vls=0`
    /// (default: `IOMMU_VMM_NESTED_KVM_PARAMS`, else none). For experiments with L1's KVM.
    pub kvm_params: String,
    /// QEMU's `-cpu` model for the L1 machine (default: `IOMMU_VMM_NESTED_CPU`, else
    /// [`DEFAULT_L1_CPU`]). It must offer AMD SVM with nested paging (`EPYC`, `max`,
    /// `qemu64,+svm,+npt`), since L1 runs kvm_amd. For experiments with L1's emulated SVM.
    pub cpu_model: String,
    /// The manifest guest whose Debian kernel L1 boots (default: `IOMMU_VMM_NESTED_L1_KERNEL`,
    /// else `guest_images::runner::RUNNER_GUEST`, 6.1): `"6.12"` boots trixie's kernel (and
    /// busybox) instead. For experiments with L1's KVM.
    pub l1_kernel: String,
}

/// The L1 machine's default QEMU CPU model (`RunnerOptions::cpu_model`).
pub const DEFAULT_L1_CPU: &str = "EPYC";

impl Default for RunnerOptions {
    fn default() -> Self {
        let secs = |var: &str, default: u64| {
            std::env::var(var)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        RunnerOptions {
            vmm_binary: None,
            job_timeout: Duration::from_secs(secs("IOMMU_VMM_NESTED_JOB_TIMEOUT", 600)),
            boot_timeout: Duration::from_secs(secs("IOMMU_VMM_NESTED_BOOT_TIMEOUT", 180)),
            outer_margin: Duration::from_secs(60),
            idle_timeout: None,
            attempts: 3,
            stream: false,
            install_qemu: true,
            qemu: None,
            kvm_params: std::env::var("IOMMU_VMM_NESTED_KVM_PARAMS").unwrap_or_default(),
            cpu_model: std::env::var("IOMMU_VMM_NESTED_CPU")
                .ok()
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| DEFAULT_L1_CPU.to_string()),
            l1_kernel: std::env::var("IOMMU_VMM_NESTED_L1_KERNEL")
                .ok()
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| guest_images::runner::RUNNER_GUEST.to_string()),
        }
    }
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// It ran to its end in L1 with this exit status (137: killed by the L1 job timeout).
    Exited(i32),
    /// No L1 boot produced its result (L1 hung, crashed or timed out in every attempt).
    Lost {
        /// What happened to the last attempt.
        reason: String,
    },
}

/// The result of one job.
#[derive(Debug, Clone)]
pub struct JobResult {
    /// How it ended.
    pub outcome: JobOutcome,
    /// Its stdout as it reached the L1 console (for `iommu-vmm`: the L2 console and report).
    pub console: String,
    /// Its stderr.
    pub stderr: String,
    /// Its duration on the L1 clock.
    pub l1_secs: f64,
    /// Its duration on the host clock, from its BEGIN line to its END line.
    pub host_time: Duration,
    /// The L1 boot (index in [`BatchReport::boots`]) that produced this result.
    pub boot: usize,
    /// Earlier attempts of this job that ended with one of its
    /// [`Job::retry_nested_on`] statuses, oldest first (empty when the first attempt counted).
    pub earlier: Vec<JobResult>,
}

impl JobResult {
    /// The exit status, when the job ran to its end.
    pub fn status(&self) -> Option<i32> {
        match self.outcome {
            JobOutcome::Exited(rc) => Some(rc),
            JobOutcome::Lost { .. } => None,
        }
    }
}

/// KVM inside L1, as `/init` and the smoke check saw it.
#[derive(Debug, Clone, Default)]
pub struct L1Kvm {
    /// `kvm_amd`, `kvm_intel` or `none`.
    pub module: String,
    /// `Y` when the module has nested paging (NPT) on.
    pub npt: String,
    /// `1` when nested virtualisation is on.
    pub nested: String,
    /// Whether `/dev/kvm` exists in L1.
    pub dev_kvm: bool,
    /// Exit status of the smoke check (0: a vCPU ran real-mode code to HLT with port I/O exits).
    pub smoke_rc: i32,
    /// Smoke check output line.
    pub smoke: String,
    /// Duration of the smoke check on the L1 clock.
    pub smoke_secs: f64,
}

impl L1Kvm {
    /// True when L1 has a working hardware-style KVM (module with NPT, and the smoke check ran).
    pub fn works(&self) -> bool {
        self.module != "none" && self.dev_kvm && self.smoke_rc == 0 && self.smoke.contains(" ok ")
    }
}

/// How one L1 boot went.
#[derive(Debug, Clone)]
pub struct L1Boot {
    /// The QEMU used.
    pub qemu_version: String,
    /// Host time from starting QEMU to `/init` running.
    pub to_init: Option<Duration>,
    /// L1 uptime when `/init` started.
    pub l1_uptime_at_init: Option<f64>,
    /// Host time from `/init` running to the smoke check's result.
    pub to_smoke: Option<Duration>,
    /// KVM in L1 (absent if L1 never got that far).
    pub kvm: Option<L1Kvm>,
    /// Host time for the whole boot, QEMU start to exit.
    pub total: Duration,
    /// Whether `/init` finished (DONE) and QEMU exited by itself.
    pub completed: bool,
    /// Why it did not complete.
    pub failure: Option<String>,
    /// Console lines outside any job (L1 kernel messages, `/init` warnings): for diagnosis.
    pub log: String,
}

/// The results of [`run_jobs`].
#[derive(Debug, Clone)]
pub struct BatchReport {
    /// One result per job, in the order given.
    pub jobs: Vec<JobResult>,
    /// Each L1 boot made (more than one when a retry was needed).
    pub boots: Vec<L1Boot>,
}

/// Environment variable the runner sets for every job inside the L1 machine.
pub const IN_L1_ENV: &str = "IOMMU_VMM_IN_NESTED_L1";

/// True inside the nested runner's L1 machine: there is no compiler and no network, so guest
/// images must be used as the host built them (never rebuilt).
pub fn in_nested_l1() -> bool {
    std::env::var_os(IN_L1_ENV).is_some_and(|v| !v.is_empty())
}

/// Decides whether to run nested, and if so runs the whole command inside the L1 runner.
///
/// `args` are the user's original arguments (without argv\[0\]). `retry_on` are the VMM's exit
/// statuses after which a nested run is made once more in a new L1 boot (see
/// [`Job::retry_nested_on`]; the `iommu-vmm` command passes its triple-fault status,
/// `iommu_vmm::exit::STATUS_TRIPLE_FAULT`: this crate does not know the VMM's statuses).
/// Returns `Ok(None)` when the caller should run the guest directly on this host,
/// `Ok(Some(status))` with the L2 run's exit status when it ran nested.
pub fn maybe_run_nested(
    mode: NestedMode,
    args: &[OsString],
    retry_on: &[i32],
) -> Result<Option<i32>, NestedError> {
    let support = detect_kvm();
    let reason = match (mode, support) {
        (NestedMode::Off, KvmSupport::Unusable { reason }) => {
            return Err(NestedError::NoHardwareKvm { reason });
        }
        (NestedMode::Off | NestedMode::Auto, KvmSupport::Hardware { .. }) => return Ok(None),
        (NestedMode::Auto, KvmSupport::Unusable { reason }) => reason,
        (NestedMode::On, KvmSupport::Unusable { reason }) => reason,
        (NestedMode::On, KvmSupport::Hardware { vendor }) => {
            format!("--nested on (the host has {vendor})")
        }
    };
    eprintln!(
        "iommu-vmm: {reason}; running nested: the guest boots on KVM inside a QEMU TCG machine with AMD SVM ({EXPECTED_COST})"
    );
    let opts = RunnerOptions {
        stream: true,
        ..RunnerOptions::default()
    };
    // A triple fault under the nested runner gets one more run (see `Job::retry_nested_on`):
    // both attempts' output reaches the user as it arrives.
    let job = retry_on
        .iter()
        .fold(Job::vmm(args.iter().cloned()), |job, &status| {
            job.retry_nested_on(status)
        });
    let report = run_jobs(&[job], &opts)?;
    let Some(job) = report.jobs.into_iter().next() else {
        return Err(NestedError::Lost("no job result".into()));
    };
    match job.outcome {
        JobOutcome::Exited(rc) => Ok(Some(rc)),
        JobOutcome::Lost { reason } => Err(NestedError::Lost(reason)),
    }
}

/// Runs `jobs` where they can run: directly on this host when `mode` and [`detect_kvm`] allow
/// (each job a child process, `--nested off` forced), else all of them in one L1 boot through
/// [`run_jobs`]. The boot matrix in tests/ uses this, so the same tests run directly on hosts with
/// hardware KVM and through the runner elsewhere. `--nested off` (`NestedMode::Off`) on a host
/// without usable KVM is an error, as for the command.
pub fn run_batch(
    mode: NestedMode,
    jobs: &[Job],
    opts: &RunnerOptions,
) -> Result<BatchReport, NestedError> {
    let nest = match (mode, detect_kvm()) {
        (NestedMode::On, _) | (NestedMode::Auto, KvmSupport::Unusable { .. }) => true,
        (NestedMode::Off, KvmSupport::Unusable { reason }) => {
            return Err(NestedError::NoHardwareKvm { reason });
        }
        (NestedMode::Off | NestedMode::Auto, KvmSupport::Hardware { .. }) => false,
    };
    if nest {
        return run_jobs(jobs, opts);
    }
    let vmm = match &opts.vmm_binary {
        Some(b) => b.clone(),
        None => std::env::current_exe()?,
    };
    let mut results = Vec::with_capacity(jobs.len());
    for job in jobs {
        results.push(run_direct(job, &vmm, opts)?);
    }
    Ok(BatchReport {
        jobs: results,
        boots: Vec::new(),
    })
}

/// One job as a child process of this host, with `job_timeout` enforced.
#[allow(clippy::arithmetic_side_effects)] // host-only: nested runner; deadlines from CLI timeouts, 128 + signal
fn run_direct(job: &Job, vmm: &Path, opts: &RunnerOptions) -> Result<JobResult, NestedError> {
    let mut cmd = match &job.program {
        JobProgram::Vmm(args) => {
            let mut c = Command::new(vmm);
            c.args(share::force_nested_off(args));
            c
        }
        JobProgram::Shell(script) => {
            let mut c = Command::new("/bin/sh");
            c.arg("-c").arg(script);
            c
        }
        JobProgram::Exec { program, args } => {
            let mut c = Command::new(program);
            c.args(args);
            c
        }
    };
    if let Some(cwd) = &job.cwd {
        cmd.current_dir(cwd);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn()?;
    let mut pipes = (child.stdout.take(), child.stderr.take());
    let out_reader = pipes.0.take().map(|mut o| {
        let stream = opts.stream;
        std::thread::spawn(move || {
            let mut all = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = std::io::Read::read(&mut o, &mut buf) {
                let Some(chunk) = buf.get(..n).filter(|c| !c.is_empty()) else {
                    break;
                };
                if stream {
                    let mut so = std::io::stdout().lock();
                    let _ = so.write_all(chunk);
                    let _ = so.flush();
                }
                all.extend_from_slice(chunk);
            }
            all
        })
    });
    let err_reader = pipes.1.take().map(|mut e| {
        std::thread::spawn(move || {
            let mut all = Vec::new();
            let _ = std::io::Read::read_to_end(&mut e, &mut all);
            all
        })
    });
    let deadline = start + opts.job_timeout;
    let outcome = loop {
        if let Some(status) = child.try_wait()? {
            // A signal death reads as 128 + signal, as a shell reports it.
            let rc = status.code().unwrap_or_else(|| {
                use std::os::unix::process::ExitStatusExt;
                128 + status.signal().unwrap_or(0)
            });
            break JobOutcome::Exited(rc);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break JobOutcome::Exited(137);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let console = out_reader
        .and_then(|h| h.join().ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let stderr = err_reader
        .and_then(|h| h.join().ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    if opts.stream && !stderr.is_empty() {
        eprint!("{stderr}");
    }
    let host_time = start.elapsed();
    Ok(JobResult {
        outcome,
        console,
        stderr,
        l1_secs: host_time.as_secs_f64(),
        host_time,
        earlier: Vec::new(),
        boot: 0,
    })
}

/// `iommu-vmm nested-check` (hidden): boots the L1 runner once, checks KVM in it and prints the
/// timings. Returns the process exit status (0: the runner works here).
pub fn nested_check_main() -> i32 {
    println!("host KVM: {:?}", detect_kvm());
    let opts = RunnerOptions::default();
    match run_smoke(&opts) {
        Ok(boot) => {
            let kvm = boot.kvm.clone().unwrap_or_default();
            println!("L1 machine: {}", boot.qemu_version);
            println!(
                "L1 boot to /init: {:.1} s host time (L1 uptime {:.2} s)",
                boot.to_init.unwrap_or_default().as_secs_f64(),
                boot.l1_uptime_at_init.unwrap_or(0.0)
            );
            println!(
                "L1 KVM: module={} npt={} nested={} /dev/kvm={}",
                kvm.module, kvm.npt, kvm.nested, kvm.dev_kvm
            );
            println!(
                "smoke check: rc={} in {:.2} s (L1 clock): {}",
                kvm.smoke_rc, kvm.smoke_secs, kvm.smoke
            );
            println!("total: {:.1} s", boot.total.as_secs_f64());
            if kvm.works() && boot.completed {
                0
            } else {
                eprintln!(
                    "iommu-vmm: the nested runner does not work here: {}",
                    boot.failure.unwrap_or_else(|| "KVM in L1 failed".into())
                );
                1
            }
        }
        Err(e) => {
            eprintln!("iommu-vmm: {e}");
            1
        }
    }
}

/// Boots L1 once with no job: proves the runner image boots and KVM works inside it.
pub fn run_smoke(opts: &RunnerOptions) -> Result<L1Boot, NestedError> {
    let report = run_jobs(&[], opts)?;
    report
        .boots
        .into_iter()
        .next()
        .ok_or_else(|| NestedError::Lost("no L1 boot".into()))
}

/// Runs `jobs` one after another in one L1 boot (plus one retry boot for the jobs left without
/// a result when L1 hung or died), and returns each job's result.
///
/// Errors: QEMU or the image cannot be had, or KVM does not work in L1 (then no job could run).
/// A job that ran and failed is an `Ok` result with its exit status.
pub fn run_jobs(jobs: &[Job], opts: &RunnerOptions) -> Result<BatchReport, NestedError> {
    let qemu = match &opts.qemu {
        Some(q) => q.clone(),
        None => find_qemu(opts.install_qemu)?,
    };
    if qemu.major().is_some_and(|m| m < 8) {
        tracing::info!(
            "using {} for the L1 machine: it hangs the inner machine in ~1 of 20 boots; \
             guarded by a timeout and a retry",
            qemu.version
        );
    }
    let vmm_binary = match &opts.vmm_binary {
        Some(b) => Some(b.clone()),
        None if jobs.iter().any(|j| matches!(j.program, JobProgram::Vmm(_))) => {
            Some(std::env::current_exe()?)
        }
        None => None,
    };
    let t_image = Instant::now();
    let image = guest_images::runner::build_runner_for(
        &guest_images::runner::RunnerSpec { vmm_binary },
        &opts.l1_kernel,
    )?;
    if image.built {
        eprintln!(
            "iommu-vmm: built the nested runner's L1 image for this iommu-vmm binary in {:.1} s \
             (cached in {})",
            t_image.elapsed().as_secs_f64(),
            image.initramfs.parent().unwrap_or(Path::new("")).display()
        );
    }
    tracing::info!(
        "runner image {} ready in {:.1} s ({})",
        &image.key.get(..12).unwrap_or(""),
        t_image.elapsed().as_secs_f64(),
        qemu.version
    );

    let mut results: Vec<Option<JobResult>> = vec![None; jobs.len()];
    // Attempts that ended with a status the job asked to retry (Job::retry_nested_on).
    let mut earlier: Vec<Vec<JobResult>> = vec![Vec::new(); jobs.len()];
    let mut boots = Vec::new();
    let attempts = opts.attempts.max(1);
    // One more L1 boot at most for such retries, beyond `attempts`.
    let mut retry_boot_left = true;
    let mut attempt = 0u32;
    loop {
        let pending: Vec<usize> = (0..jobs.len())
            .filter(|&i| results.get(i).is_some_and(Option::is_none))
            .collect();
        let tried = |i: usize| earlier.get(i).is_some_and(|e| !e.is_empty());
        if attempt > 0 && pending.is_empty() {
            break;
        }
        if attempt >= attempts {
            if !retry_boot_left || pending.iter().any(|&i| !tried(i)) {
                break;
            }
            retry_boot_left = false;
        }
        if attempt > 0 && pending.iter().all(|&i| tried(i)) {
            notice(&format!(
                "iommu-vmm: nested runner: running {} job(s) once more in a new L1 boot after \
                 an exit status they retry under the nested runner",
                pending.len()
            ));
        } else if attempt > 0 {
            notice(&format!(
                "iommu-vmm: nested runner: L1 machine failed ({}); retrying {} job(s) in a new L1 boot",
                boots
                    .last()
                    .and_then(|b: &L1Boot| b.failure.clone())
                    .unwrap_or_default(),
                pending.len()
            ));
        }
        let boot_index = boots.len();
        let (boot, got) = boot_once(&qemu, &image, jobs, &pending, opts, boot_index)?;
        for (i, r) in got {
            let retry = jobs
                .get(i)
                .is_some_and(|j| r.status().is_some_and(|rc| j.retry_nested_on.contains(&rc)))
                && earlier.get(i).is_some_and(Vec::is_empty);
            if retry {
                notice(&format!(
                    "iommu-vmm: nested runner: job {i} ended with exit status {} in L1 boot \
                     {boot_index}; it asked for one more run under the nested runner (the \
                     first attempt is kept in JobResult::earlier)",
                    r.status().unwrap_or(-1)
                ));
                if let Some(e) = earlier.get_mut(i) {
                    e.push(r);
                }
            } else if let Some(slot) = results.get_mut(i) {
                *slot = Some(r);
            }
        }
        let kvm_broken = boot.kvm.as_ref().is_some_and(|k| !k.works());
        if kvm_broken {
            let k = boot.kvm.clone().unwrap_or_default();
            return Err(NestedError::L1Kvm(format!(
                "module={} npt={} /dev/kvm={} smoke rc={}: {}\n{}",
                k.module,
                k.npt,
                k.dev_kvm,
                k.smoke_rc,
                k.smoke,
                boot.log.trim_end()
            )));
        }
        tracing::info!(
            "L1 boot {}: /init after {:.1} s, smoke check {:.2} s, total {:.1} s{}",
            boots.len(),
            boot.to_init.unwrap_or_default().as_secs_f64(),
            boot.kvm.as_ref().map_or(0.0, |k| k.smoke_secs),
            boot.total.as_secs_f64(),
            boot.failure
                .as_deref()
                .map(|f| format!(", failed: {f}"))
                .unwrap_or_default()
        );
        let failed = !boot.completed;
        boots.push(boot);
        attempt = attempt.saturating_add(1);
        if !failed && jobs.is_empty() {
            break;
        }
    }
    let last_failure = boots
        .last()
        .and_then(|b| b.failure.clone())
        .unwrap_or_else(|| "no result".into());
    let jobs = results
        .into_iter()
        .zip(earlier)
        .map(|(r, earlier)| {
            let mut r = r.unwrap_or_else(|| JobResult {
                outcome: JobOutcome::Lost {
                    reason: format!("{last_failure} (after {} L1 boot(s))", boots.len()),
                },
                console: String::new(),
                stderr: String::new(),
                l1_secs: 0.0,
                host_time: Duration::ZERO,
                boot: boots.len().saturating_sub(1),
                earlier: Vec::new(),
            });
            r.earlier = earlier;
            r
        })
        .collect();
    Ok(BatchReport { jobs, boots })
}

/// Writes a runner notice to this process's real stderr. Not `eprintln!`: the Rust test
/// harness captures that (and drops it for a passing test), and a retry must never be silent.
fn notice(msg: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "{msg}");
}

/// A random-enough per-boot nonce (no RNG crate needed: time, pid and a std hasher seed).
fn nonce() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

/// Environment variables handed to jobs in L1.
fn job_env(cache_dir: &Path) -> String {
    let mut out = String::new();
    for (k, v) in std::env::vars() {
        let pass = k.starts_with("IOMMU_")
            || k.starts_with("RUST_")
            || ["HOME", "XDG_CACHE_HOME", "NO_COLOR"].contains(&k.as_str());
        if pass && !k.starts_with("IOMMU_VMM_QEMU") {
            let _ = writeln!(out, "export {k}={}", shell_quote(&v));
        }
    }
    let _ = writeln!(
        out,
        "export IOMMU_EMU_CACHE={}",
        shell_quote(&cache_dir.to_string_lossy())
    );
    let _ = writeln!(out, "export {IN_L1_ENV}=1");
    out
}

/// The QEMU command line of the L1 machine (`cpu`: the `-cpu` model, see
/// [`RunnerOptions::cpu_model`]).
pub fn qemu_command(
    qemu: &Qemu,
    cpu: &str,
    kernel: &Path,
    initramfs: &Path,
    append: &str,
    ctl: &Path,
    shares: &[Share],
) -> Command {
    let virtfs = |path: &Path, tag: &str| {
        // QEMU option values escape ',' by doubling it.
        format!(
            "local,path={},mount_tag={tag},security_model=none",
            path.to_string_lossy().replace(',', ",,")
        )
    };
    let mut cmd = Command::new(&qemu.binary);
    for d in &qemu.data_dirs {
        cmd.arg("-L").arg(d);
    }
    // `IOMMU_VMM_NESTED_TCG_THREAD=single|multi` picks QEMU's TCG threading for L1 (QEMU's
    // default on x86 is one thread per vCPU).
    let accel = match std::env::var("IOMMU_VMM_NESTED_TCG_THREAD").as_deref() {
        Ok(t @ ("single" | "multi")) => format!("tcg,thread={t}"),
        _ => "tcg".to_string(),
    };
    cmd.args(["-accel", &accel]);
    cmd.args(["-cpu", cpu]);
    cmd.args([
        "-m",
        "4G",
        "-smp",
        "2",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-monitor",
        "none",
        "-no-reboot",
    ]);
    cmd.arg("-kernel").arg(kernel);
    cmd.arg("-initrd").arg(initramfs);
    cmd.arg("-append").arg(append);
    cmd.arg("-virtfs").arg(virtfs(ctl, "nestedctl"));
    for s in shares {
        cmd.arg("-virtfs").arg(virtfs(&s.host, &s.tag));
    }
    cmd
}

/// What the console reader thread sends.
enum Line {
    Text(String),
    Eof,
}

/// One L1 boot running `pending` (indexes into `jobs`). Returns the boot and the results it got.
#[allow(clippy::arithmetic_side_effects)] // host-only: nested runner; Instant + CLI timeouts
fn boot_once(
    qemu: &Qemu,
    image: &guest_images::runner::RunnerImage,
    jobs: &[Job],
    pending: &[usize],
    opts: &RunnerOptions,
    boot_index: usize,
) -> Result<(L1Boot, Vec<(usize, JobResult)>), NestedError> {
    let nonce = nonce();
    let host_cwd = std::env::current_dir()?;
    let cache = guest_images::runner::cache_dir();
    std::fs::create_dir_all(&cache)?;

    // Shares: every job's cwd and paths, and the image cache.
    let mut set = ShareSet::default();
    set.add_dir(&cache);
    for &i in pending {
        let Some(job) = jobs.get(i) else { continue };
        let cwd = job.cwd.clone().unwrap_or_else(|| host_cwd.clone());
        set.add_dir(&cwd);
        for p in &job.extra_paths {
            set.add_path(&cwd.join(p));
        }
        match &job.program {
            JobProgram::Vmm(args) => share::for_each_path(args, &cwd, |p| {
                set.add_path(p);
            }),
            JobProgram::Exec { program, args } => {
                set.add_path(&cwd.join(program));
                share::for_each_path(args, &cwd, |p| {
                    set.add_path(p);
                });
            }
            JobProgram::Shell(_) => {}
        }
    }
    let shares = set.shares();

    // The control directory: job scripts, mounts, env; job stderr comes back here.
    prune_stale_ctl_dirs();
    let ctl = std::env::temp_dir().join(format!("iommu-vmm-nested-{}-{nonce}", std::process::id()));
    std::fs::create_dir_all(&ctl)?;
    let _cleanup = RemoveOnDrop(ctl.clone());
    let mut mounts = String::new();
    for s in &shares {
        let _ = writeln!(mounts, "{} {} rw", s.tag, s.guest.display());
    }
    std::fs::write(ctl.join("mounts"), mounts)?;
    std::fs::write(
        ctl.join("env"),
        job_env(&share::map_path(&share::resolve(&cache), &shares)),
    )?;
    std::fs::write(ctl.join("jobs"), format!("{}\n", pending.len()))?;
    for (n, &i) in pending.iter().enumerate() {
        let Some(job) = jobs.get(i) else { continue };
        let cwd = job.cwd.clone().unwrap_or_else(|| host_cwd.clone());
        let l1_cwd = share::map_path(&cwd, &shares);
        let mut script = format!(
            "cd {} || exit 125\n",
            shell_quote(&l1_cwd.to_string_lossy())
        );
        match &job.program {
            JobProgram::Vmm(args) => {
                let args = share::rewrite_args(&share::force_nested_off(args), &cwd, &shares);
                script.push_str("exec /bin/iommu-vmm");
                for a in args {
                    script.push(' ');
                    script.push_str(&shell_quote(&a.to_string_lossy()));
                }
                script.push('\n');
            }
            JobProgram::Shell(s) => {
                script.push_str(s);
                script.push('\n');
            }
            JobProgram::Exec { program, args } => {
                let program = share::map_path(&cwd.join(program), &shares);
                script.push_str("exec ");
                script.push_str(&shell_quote(&program.to_string_lossy()));
                for a in share::rewrite_args(args, &cwd, &shares) {
                    script.push(' ');
                    script.push_str(&shell_quote(&a.to_string_lossy()));
                }
                script.push('\n');
            }
        }
        std::fs::write(ctl.join(format!("job-{n}.sh")), script)?;
    }

    let mut append = format!(
        "console=ttyS0 loglevel=1 panic=-1 nested.nonce={nonce} nested.job_timeout={}",
        opts.job_timeout.as_secs().max(1)
    );
    let p = &opts.kvm_params;
    if !p.is_empty() {
        if p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"=,_-".contains(&b))
        {
            append.push_str(&format!(" nested.kvm_params={p}"));
        } else {
            return Err(NestedError::Qemu(format!(
                "L1 KVM module parameters {p:?}: only letters, digits and `=,_-` are allowed"
            )));
        }
    }
    if opts.cpu_model.is_empty()
        || !opts
            .cpu_model
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-_.,=".contains(&b))
    {
        return Err(NestedError::Qemu(format!(
            "L1 CPU model {:?}: a QEMU -cpu value (letters, digits and `+-_.,=`) is needed",
            opts.cpu_model
        )));
    }
    let mut cmd = qemu_command(
        qemu,
        &opts.cpu_model,
        &image.kernel,
        &image.initramfs,
        &append,
        &ctl,
        &shares,
    );
    let qemu_log = ctl.join("qemu.log");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(&qemu_log)?));
    tracing::debug!("L1 machine: {cmd:?}");
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| NestedError::Qemu(format!("cannot start {}: {e}", qemu.binary.display())))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| NestedError::Qemu("no stdout pipe".into()))?;
    let (tx, rx) = mpsc::channel();
    let marker = format!("#NESTED:{nonce}:");
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let s = String::from_utf8_lossy(&buf);
                    let mut s = s.trim_end_matches(['\n', '\r']).to_string();
                    // A marker can land mid-line: the L2 console or an L1 kernel message
                    // may have written part of a line just before `/init` printed it.
                    // The nonce makes it unforgeable wherever it stands, so split there.
                    if let Some(i) = protocol::marker_start(&s, &marker) {
                        let rest = s.split_off(i);
                        if tx.send(Line::Text(s)).is_err() {
                            break;
                        }
                        s = rest;
                    }
                    if tx.send(Line::Text(s)).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = tx.send(Line::Eof);
    });

    let mut boot = L1Boot {
        qemu_version: qemu.version.clone(),
        to_init: None,
        l1_uptime_at_init: None,
        to_smoke: None,
        kvm: None,
        total: Duration::ZERO,
        completed: false,
        failure: None,
        log: String::new(),
    };
    let mut results = Vec::new();
    let mut current: Option<(usize, Instant, String)> = None;
    let mut deadline = start + opts.boot_timeout;
    let job_deadline = opts.job_timeout + opts.outer_margin;
    let idle_limit = match std::env::var("IOMMU_VMM_NESTED_IDLE_TIMEOUT")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        Some(0) => None,
        Some(secs) => Some(Duration::from_secs(secs)),
        // QEMU 7.2 loses the inner guest's timer exit in ~1 of 20 boots: 120 s. QEMU 10 also
        // freezes now and then (an L1 vCPU soft-locked for minutes, seen 2026-11-26): 300 s,
        // longer than any quiet stretch of the boot tests' jobs, shorter than their timeouts.
        None => opts.idle_timeout.or_else(|| {
            Some(Duration::from_secs(
                if qemu.major().is_some_and(|m| m < 8) {
                    120
                } else {
                    300
                },
            ))
        }),
    };
    // While a job runs: the time of its last console line (for `idle_limit`).
    let mut last_output = Instant::now();
    let mut done = false;
    let stdout_lock = std::io::stdout();
    loop {
        let now = Instant::now();
        let idle_deadline = match (&current, idle_limit) {
            (Some(_), Some(limit)) => Some(last_output + limit),
            _ => None,
        };
        if let Some(idle) = idle_deadline
            && now >= idle
        {
            boot.failure = Some(format!(
                "L1 machine stopped answering during job {}: no output for {} s (idle timeout)",
                current
                    .as_ref()
                    .map_or(0, |(n, ..)| pending.get(*n).copied().unwrap_or(*n)),
                idle_limit.unwrap_or_default().as_secs()
            ));
            let _ = child.kill();
            break;
        }
        let next = idle_deadline.map_or(deadline, |i| i.min(deadline));
        let Some(wait) = next.checked_duration_since(now) else {
            boot.failure = Some(match &current {
                Some((n, ..)) => format!(
                    "L1 machine stopped answering during job {} (outer timeout {} s)",
                    pending.get(*n).copied().unwrap_or(*n),
                    job_deadline.as_secs()
                ),
                None => format!(
                    "L1 machine did not finish booting within {} s",
                    opts.boot_timeout.as_secs()
                ),
            });
            let _ = child.kill();
            break;
        };
        let line = match rx.recv_timeout(wait) {
            Ok(Line::Text(l)) => l,
            Ok(Line::Eof) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
        };
        match parse_line(&line, &nonce) {
            None => match current.as_mut() {
                Some((_, _, console)) => {
                    last_output = Instant::now();
                    if opts.stream {
                        let mut out = stdout_lock.lock();
                        let _ = writeln!(out, "{line}");
                        let _ = out.flush();
                    }
                    console.push_str(&line);
                    console.push('\n');
                }
                None => {
                    boot.log.push_str(&line);
                    boot.log.push('\n');
                }
            },
            Some(Event::Booted { uptime }) => {
                boot.to_init = Some(start.elapsed());
                boot.l1_uptime_at_init = Some(uptime);
            }
            Some(Event::Kvm(m)) => {
                let get = |k: &str| m.get(k).cloned().unwrap_or_default();
                boot.kvm = Some(L1Kvm {
                    module: get("module"),
                    npt: get("npt"),
                    nested: get("nested"),
                    dev_kvm: get("dev") == "yes",
                    smoke_rc: -1,
                    ..L1Kvm::default()
                });
            }
            Some(Event::Smoke { rc, secs, text }) => {
                boot.to_smoke = boot.to_init.map(|t| start.elapsed().saturating_sub(t));
                let k = boot.kvm.get_or_insert_with(L1Kvm::default);
                k.smoke_rc = rc;
                k.smoke = text;
                k.smoke_secs = secs;
                if !k.works() {
                    boot.failure = Some("KVM does not work in L1".into());
                    let _ = child.kill();
                    break;
                }
                deadline = Instant::now() + job_deadline;
            }
            Some(Event::Begin(n)) => {
                current = Some((n, Instant::now(), String::new()));
                last_output = Instant::now();
                deadline = Instant::now() + job_deadline;
            }
            Some(Event::End { index, rc, secs }) => {
                let (console, host_time) = match current.take() {
                    Some((n, t, c)) if n == index => (c, t.elapsed()),
                    _ => (String::new(), Duration::ZERO),
                };
                let stderr = std::fs::read_to_string(ctl.join(format!("job-{index}.stderr")))
                    .unwrap_or_default();
                if opts.stream && !stderr.is_empty() {
                    eprint!("{stderr}");
                }
                tracing::info!(
                    "job {index} ended: status {rc}, {:.1} s host time ({secs:.1} s in L1)",
                    host_time.as_secs_f64()
                );
                if let Some(&i) = pending.get(index) {
                    results.push((
                        i,
                        JobResult {
                            outcome: JobOutcome::Exited(rc),
                            console,
                            stderr,
                            l1_secs: secs,
                            host_time,
                            boot: boot_index,
                            earlier: Vec::new(),
                        },
                    ));
                }
                deadline = Instant::now() + job_deadline;
            }
            Some(Event::Done) => {
                done = true;
                // QEMU exits on poweroff; allow it a moment.
                deadline = Instant::now() + Duration::from_secs(30);
            }
            Some(Event::Warn(w)) => {
                let _ = writeln!(boot.log, "init: {w}");
            }
        }
    }
    let status = child.wait()?;
    let _ = reader.join();
    boot.total = start.elapsed();
    boot.completed = done && boot.failure.is_none();
    if boot.failure.is_none() && !done {
        let log = std::fs::read_to_string(&qemu_log).unwrap_or_default();
        let tail: Vec<&str> = log
            .lines()
            .filter(|l| !l.contains("TCG doesn't support requested feature"))
            .collect();
        boot.failure = Some(format!(
            "L1 machine ended before finishing its jobs (QEMU {status}){}{}",
            if tail.is_empty() { "" } else { ": " },
            tail.join(" | ")
        ));
    }
    if let Some((n, t, console)) = current.take() {
        // The job that was running when L1 died: keep what it printed for diagnosis.
        let _ = writeln!(
            boot.log,
            "job {} had run {:.1} s when L1 was lost; its console:\n{console}",
            pending.get(n).copied().unwrap_or(n),
            t.elapsed().as_secs_f64()
        );
    }
    Ok((boot, results))
}

/// Removes control directories left by runs whose process is gone (killed before cleanup).
fn prune_stale_ctl_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("iommu-vmm-nested-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Removes a directory when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_mode_parses_the_three_modes() {
        assert_eq!("auto".parse::<NestedMode>(), Ok(NestedMode::Auto));
        assert_eq!("on".parse::<NestedMode>(), Ok(NestedMode::On));
        assert_eq!("off".parse::<NestedMode>(), Ok(NestedMode::Off));
        assert!("yes".parse::<NestedMode>().is_err());
    }

    #[test]
    fn no_hardware_kvm_error_says_why_and_what_to_do() {
        let e = NestedError::NoHardwareKvm {
            reason: "/dev/kvm is kvm_pvm".into(),
        };
        let s = e.to_string();
        assert!(s.contains("kvm_pvm") && s.contains("--nested auto"), "{s}");
    }

    #[test]
    fn qemu_command_has_epyc_tcg_and_escaped_shares() {
        let q = Qemu {
            binary: "/q/qemu-system-x86_64".into(),
            data_dirs: vec!["/q/share/qemu".into(), "/q/share/seabios".into()],
            version: "QEMU emulator version 10.0.2".into(),
            source: QemuSource::Backports,
        };
        let shares = vec![Share {
            host: "/data/a,b".into(),
            guest: "/data/a,b".into(),
            tag: "nested0".into(),
        }];
        let cmd = qemu_command(
            &q,
            DEFAULT_L1_CPU,
            Path::new("/k"),
            Path::new("/i"),
            "console=ttyS0",
            Path::new("/ctl"),
            &shares,
        );
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let joined = args.join(" ");
        assert!(
            joined.starts_with("-L /q/share/qemu -L /q/share/seabios"),
            "{joined}"
        );
        for want in ["-accel tcg", "-cpu EPYC", "-m 4G", "-smp 2", "-no-reboot"] {
            assert!(joined.contains(want), "missing {want}: {joined}");
        }
        assert!(
            args.contains(
                &"local,path=/data/a,,b,mount_tag=nested0,security_model=none".to_string()
            )
        );
        assert!(
            args.contains(&"local,path=/ctl,mount_tag=nestedctl,security_model=none".to_string())
        );
    }

    #[test]
    fn l1_kvm_works_needs_module_dev_and_smoke() {
        let good = L1Kvm {
            module: "kvm_amd".into(),
            npt: "Y".into(),
            nested: "1".into(),
            dev_kvm: true,
            smoke_rc: 0,
            smoke: "kvm-smoke: ok api=12".into(),
            smoke_secs: 0.3,
        };
        assert!(good.works());
        assert!(
            !L1Kvm {
                smoke_rc: 1,
                ..good.clone()
            }
            .works()
        );
        assert!(
            !L1Kvm {
                dev_kvm: false,
                ..good.clone()
            }
            .works()
        );
        assert!(
            !L1Kvm {
                module: "none".into(),
                ..good
            }
            .works()
        );
    }
}
