//! Boot tests of the nested runner (`iommu_nested`): each one boots the real L1 machine
//! (QEMU TCG, `-cpu EPYC`, Debian 6.1 kernel with kvm_amd; one test each for the `-cpu qemu64`
//! and 6.12 kernel options) and fails loudly when it does not boot.
//!
//! They need QEMU and the Debian packages of the runner image: on a Debian host as root they are
//! fetched on first use (QEMU 10.0 from bookworm-backports into the cache, or apt-get install);
//! elsewhere the error names the command to run. Each L1 boot takes ~8-15 s here; the tests run
//! one at a time (a lock) so they do not fight over the 2 cores.

use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use iommu_nested::{
    Job, JobOutcome, KvmSupport, NestedError, NestedMode, RunnerOptions, detect_kvm, run_batch,
    run_jobs, run_smoke,
};

/// One L1 machine at a time.
static L1: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    L1.lock().unwrap_or_else(|e| e.into_inner())
}

fn opts() -> RunnerOptions {
    RunnerOptions {
        job_timeout: Duration::from_secs(120),
        ..RunnerOptions::default()
    }
}

#[test]
fn nested_l1_boot_kvm_amd_with_npt_runs_smoke_vcpu() {
    let _g = lock();
    let boot = run_smoke(&opts()).expect("the L1 runner machine must boot");
    eprintln!("{boot:#?}");
    let to_init = boot.to_init.expect("L1 /init never started");
    let kvm = boot.kvm.as_ref().expect("L1 /init never reported KVM");
    assert_eq!(kvm.module, "kvm_amd", "L1 must load kvm_amd: {kvm:?}");
    assert_eq!(kvm.npt, "Y", "kvm_amd must have nested paging: {kvm:?}");
    assert!(kvm.dev_kvm, "/dev/kvm missing in L1");
    assert_eq!(kvm.smoke_rc, 0, "smoke check failed: {}", kvm.smoke);
    assert!(
        kvm.smoke
            .starts_with("kvm-smoke: ok api=12 io_exits=1003 hlt=1"),
        "a vCPU in L1 must run the real-mode program to HLT: {}",
        kvm.smoke
    );
    assert!(boot.completed, "L1 did not finish: {:?}", boot.failure);
    eprintln!(
        "nested runner: L1 to /init {:.1} s (L1 uptime {:.2} s), smoke {:.2} s (L1 clock), total {:.1} s, {}",
        to_init.as_secs_f64(),
        boot.l1_uptime_at_init.unwrap_or(0.0),
        kvm.smoke_secs,
        boot.total.as_secs_f64(),
        boot.qemu_version
    );
}

#[test]
fn nested_batch_jobs_one_boot_each_status_console_and_files() {
    let _g = lock();
    let dir = iommu_tests::scratch("nested-test-scratch", "batch");
    let jobs = vec![
        Job::shell("echo first job console; exit 0"),
        Job::shell("echo 'written in L1' > out.txt; echo second; exit 7").with_cwd(&dir),
        Job::shell("echo to stderr >&2; echo third; exit 3"),
        Job::shell("cat out.txt; exit 0").with_cwd(&dir),
    ];
    let report = run_jobs(&jobs, &opts()).expect("runner must boot");
    assert_eq!(
        report.boots.len(),
        1,
        "all jobs in one L1 boot: {:?}",
        report.boots
    );
    let status: Vec<Option<i32>> = report.jobs.iter().map(|j| j.status()).collect();
    assert_eq!(status, [Some(0), Some(7), Some(3), Some(0)], "{report:#?}");
    assert_eq!(report.jobs[0].console, "first job console\n");
    assert_eq!(report.jobs[1].console, "second\n");
    assert_eq!(report.jobs[2].console, "third\n");
    assert_eq!(report.jobs[2].stderr, "to stderr\n");
    // Job 3 read in L1 what job 1 wrote; the host sees it too (9p share, written in place).
    assert_eq!(report.jobs[3].console, "written in L1\n");
    assert_eq!(
        std::fs::read_to_string(dir.join("out.txt"))
            .expect("file written in L1 must be on the host"),
        "written in L1\n"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn nested_vmm_jobs_same_status_and_output_as_direct_run() {
    let _g = lock();
    let bin = iommu_tests::workspace_binary("iommu-vmm", "iommu-vmm", false);
    // Arguments that need no KVM, so the direct run on this host is the reference.
    let cases: Vec<Vec<&str>> = vec![vec!["--help"], vec!["--no-such-option-for-test"]];
    let jobs: Vec<Job> = cases.iter().map(|a| Job::vmm(a.iter().copied())).collect();
    let report = run_jobs(
        &jobs,
        &RunnerOptions {
            vmm_binary: Some(bin.clone()),
            ..opts()
        },
    )
    .expect("runner must boot");
    assert_eq!(report.boots.len(), 1);
    for (case, got) in cases.iter().zip(&report.jobs) {
        let mut args = vec!["--nested", "off"];
        args.extend(case.iter().copied());
        let direct = Command::new(&bin)
            .args(&args)
            .output()
            .expect("run iommu-vmm");
        assert_eq!(
            got.status(),
            direct.status.code(),
            "{case:?}: L1 {got:#?} vs host {direct:?}"
        );
        assert_eq!(
            got.console,
            String::from_utf8_lossy(&direct.stdout),
            "{case:?}: stdout differs"
        );
        assert_eq!(
            got.stderr,
            String::from_utf8_lossy(&direct.stderr),
            "{case:?}: stderr differs"
        );
    }
}

#[test]
fn nested_frozen_l1_outer_timeout_then_retry_succeeds() {
    let _g = lock();
    let dir = iommu_tests::scratch("nested-test-scratch", "retry");
    // First attempt: `halt -f` stops L1's CPUs without powering off, like the QEMU 7.2 hang:
    // nothing inside L1 can report any more, only the outer deadline ends it. Second attempt
    // (new L1 boot) finds the marker on the host share and exits 5.
    let job =
        Job::shell("if [ ! -e marker ]; then touch marker; sync; halt -f; sleep 100; fi; exit 5")
            .with_cwd(&dir);
    let report = run_jobs(
        &[job],
        &RunnerOptions {
            job_timeout: Duration::from_secs(10),
            outer_margin: Duration::from_secs(5),
            ..RunnerOptions::default()
        },
    )
    .expect("runner must boot");
    assert_eq!(report.boots.len(), 2, "{:#?}", report.boots);
    let first = &report.boots[0];
    assert!(!first.completed);
    assert!(
        first
            .failure
            .as_deref()
            .is_some_and(|f| f.contains("stopped answering")),
        "first boot must end by the outer timeout: {:?}",
        first.failure
    );
    assert!(report.boots[1].completed, "{:?}", report.boots[1].failure);
    assert_eq!(report.jobs[0].outcome, JobOutcome::Exited(5));
    assert_eq!(report.jobs[0].boot, 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn nested_retry_status_reruns_job_once_in_new_l1_boot_and_keeps_first_attempt() {
    let _g = lock();
    let dir = iommu_tests::scratch("nested-test-scratch", "retry-status");
    // Job 0 asks for a retry on status 4 and ends with 4 only the first time (a marker on the
    // host share). Job 1 ends with 4 every time and does not ask: its 4 stands. Job 2 asks,
    // but ends with 0: no retry.
    let once =
        "if [ ! -e marker ]; then touch marker; sync; echo first; exit 4; fi; echo second; exit 0";
    let jobs = vec![
        Job::shell(once).with_cwd(&dir).retry_nested_on(4),
        Job::shell("echo always; exit 4"),
        Job::shell("echo fine; exit 0").retry_nested_on(4),
    ];
    let report = run_jobs(&jobs, &opts()).expect("runner must boot");
    assert_eq!(report.boots.len(), 2, "one retry boot: {:#?}", report.boots);
    let j0 = &report.jobs[0];
    assert_eq!(j0.outcome, JobOutcome::Exited(0), "{report:#?}");
    assert_eq!(j0.console, "second\n");
    assert_eq!(j0.boot, 1);
    assert_eq!(j0.earlier.len(), 1, "{report:#?}");
    assert_eq!(j0.earlier[0].outcome, JobOutcome::Exited(4));
    assert_eq!(j0.earlier[0].console, "first\n");
    assert_eq!(j0.earlier[0].boot, 0);
    assert_eq!(report.jobs[1].outcome, JobOutcome::Exited(4));
    assert!(report.jobs[1].earlier.is_empty());
    assert_eq!(report.jobs[1].boot, 0);
    assert_eq!(report.jobs[2].outcome, JobOutcome::Exited(0));
    assert!(report.jobs[2].earlier.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn nested_kvm_params_reach_l1_kvm_amd_module() {
    let _g = lock();
    // A plain boolean whose default is N and that no missing CPU feature clears (unlike
    // pause_filter_count, which kvm_amd sets to 0 itself on QEMU's EPYC model: no PAUSE filter).
    let job = Job::shell("cat /sys/module/kvm_amd/parameters/dump_invalid_vmcb");
    let report = run_jobs(
        &[job],
        &RunnerOptions {
            kvm_params: "dump_invalid_vmcb=1".into(),
            ..opts()
        },
    )
    .expect("runner must boot with kvm_amd parameters");
    assert_eq!(report.jobs[0].outcome, JobOutcome::Exited(0), "{report:#?}");
    assert_eq!(report.jobs[0].console.trim(), "Y", "{report:#?}");
}

#[test]
fn nested_cpu_model_option_sets_l1_cpu_and_kvm_amd_still_has_npt() {
    let _g = lock();
    let job = Job::shell("grep -m1 '^model name' /proc/cpuinfo");
    let report = run_jobs(
        &[job],
        &RunnerOptions {
            cpu_model: "qemu64,+svm,+npt".into(),
            ..opts()
        },
    )
    .expect("runner must boot with -cpu qemu64,+svm,+npt");
    assert_eq!(report.jobs[0].outcome, JobOutcome::Exited(0), "{report:#?}");
    // The default model (EPYC) says "AMD EPYC Processor".
    assert!(
        report.jobs[0].console.contains("QEMU Virtual CPU"),
        "L1 must run on the qemu64 model: {report:#?}"
    );
    let kvm = report.boots[0].kvm.clone().unwrap_or_default();
    assert_eq!((kvm.module.as_str(), kvm.npt.as_str()), ("kvm_amd", "Y"));
    let bad = run_jobs(
        &[],
        &RunnerOptions {
            cpu_model: "EPYC;reboot".into(),
            ..opts()
        },
    );
    assert!(matches!(bad, Err(NestedError::Qemu(_))), "{bad:?}");
}

#[test]
fn nested_l1_kernel_option_boots_trixie_6_12_with_nested_kvm_amd() {
    let _g = lock();
    let job = Job::shell("uname -r; cat /sys/module/kvm_amd/parameters/nested");
    let report = run_jobs(
        &[job],
        &RunnerOptions {
            l1_kernel: "6.12".into(),
            ..opts()
        },
    )
    .expect("runner must boot the 6.12 L1 kernel");
    assert_eq!(report.jobs[0].outcome, JobOutcome::Exited(0), "{report:#?}");
    let console = &report.jobs[0].console;
    assert!(console.starts_with("6.12."), "L1 must run 6.12: {console}");
    assert!(
        console.lines().nth(1) == Some("1"),
        "nested kvm_amd: {console}"
    );
    let kvm = report.boots[0].kvm.clone().unwrap_or_default();
    assert!(kvm.works(), "KVM in the 6.12 L1: {kvm:?}");
}

#[test]
fn nested_run_batch_runs_directly_or_through_runner_per_host() {
    let _g = lock();
    let jobs = [Job::shell("echo batch; exit 4")];
    let report = run_batch(NestedMode::Auto, &jobs, &opts()).expect("batch must run");
    assert_eq!(report.jobs[0].status(), Some(4), "{report:#?}");
    assert_eq!(report.jobs[0].console, "batch\n");
    match detect_kvm() {
        KvmSupport::Hardware { .. } => {
            assert!(report.boots.is_empty(), "hardware KVM: no L1 boot");
        }
        KvmSupport::Unusable { reason } => {
            assert_eq!(
                report.boots.len(),
                1,
                "no usable KVM ({reason}): one L1 boot"
            );
            let off = run_batch(NestedMode::Off, &jobs, &opts());
            assert!(
                matches!(off, Err(NestedError::NoHardwareKvm { .. })),
                "--nested off must refuse here: {off:?}"
            );
        }
    }
}

#[test]
fn nested_silent_job_idle_timeout_then_retry_succeeds() {
    let _g = lock();
    let dir = iommu_tests::scratch("nested-test-scratch", "idle");
    // First attempt: the job goes silent far longer than the idle limit (as a job frozen by the
    // QEMU 7.2 hang would); the host kills L1 and retries; the second attempt exits 6.
    let job = Job::shell("if [ ! -e marker ]; then touch marker; sync; sleep 300; fi; exit 6")
        .with_cwd(&dir);
    let report = run_jobs(
        &[job],
        &RunnerOptions {
            job_timeout: Duration::from_secs(400),
            idle_timeout: Some(Duration::from_secs(5)),
            ..RunnerOptions::default()
        },
    )
    .expect("runner must boot");
    assert_eq!(report.boots.len(), 2, "{:#?}", report.boots);
    assert!(
        report.boots[0]
            .failure
            .as_deref()
            .is_some_and(|f| f.contains("idle timeout")),
        "first boot must end by the idle timeout: {:?}",
        report.boots[0].failure
    );
    assert!(
        report.boots[0].total < Duration::from_secs(200),
        "the idle timeout, not the job timeout, must end the first boot: {:?}",
        report.boots[0].total
    );
    assert_eq!(report.jobs[0].outcome, JobOutcome::Exited(6));
    let _ = std::fs::remove_dir_all(&dir);
}
