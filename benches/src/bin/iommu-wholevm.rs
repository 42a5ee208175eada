//! `iommu-wholevm`: boots the same Debian kernel, initramfs workload and disk under `iommu-vmm`
//! and under Debian's QEMU (`-accel kvm -machine q35 -device intel-iommu,...`), alternately on
//! the same KVM, per IOMMU mode (strict, lazy, pass-through, absent), and prints medians and
//! ratios of boot-to-init time and O_DIRECT read MiB/s (4K and 64K blocks). Writes
//! `wholevm.csv` (every run) and `wholevm.md` (the table) to `--out`.
//!
//! On hosts without hardware KVM (kvm_pvm, no VT-x/AMD-V) every boot runs inside one nested
//! runner L1 machine (QEMU TCG with AMD SVM): both VMMs use L1's KVM. See
//! `iommu_benches::wholevm` for what is measured and how.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::{Args as ClapArgs, Parser, Subcommand};
use iommu_benches::wholevm::{
    BootSpec, GuestEvent, Mode, RunResult, Vmm, block_label, ensure_disk, guest_append, judge,
    our_args, parse_block, parse_guest_line, parse_modes, qemu_args, render_table, schedule,
    to_csv,
};
use iommu_nested::{self as nested, Job, KvmSupport, NestedMode, RunnerOptions};

#[derive(Parser, Debug)]
#[command(
    name = "iommu-wholevm",
    about = "Whole-VM comparison of iommu-vmm against QEMU's intel-iommu (boot to init, O_DIRECT reads)",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    opts: HostOpts,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// One boot (run by the driver, in L1 or directly); prints one WHOLEVM-RESULT line.
    #[command(hide = true)]
    RunOne(RunOne),
}

#[derive(ClapArgs, Debug, Clone)]
struct HostOpts {
    /// Rounds: each round boots every mode once under each VMM (A B A B ...).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    rounds: u32,
    /// IOMMU modes: strict, lazy, pt (pass-through), none (no IOMMU).
    #[arg(long, default_value = "strict,lazy,pt,none", value_parser = parse_modes)]
    modes: Modes,
    /// Guest image (kernel and payload initramfs) to boot: 5.10, 6.1 or 6.12.
    #[arg(long, default_value = "6.1")]
    kernel: String,
    /// Disk size in MiB; the guest reads all of it once per block size.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=4096))]
    disk_mib: u64,
    /// O_DIRECT block sizes.
    #[arg(long, value_delimiter = ',', default_value = "4K,64K", value_parser = parse_block)]
    blocks: Vec<u64>,
    /// Folder for wholevm.csv and wholevm.md.
    #[arg(long, default_value = "target/wholevm")]
    out: PathBuf,
    /// auto: run inside the nested runner when the host's KVM cannot boot stock kernels.
    #[arg(long, default_value = "auto", value_parser = ["auto", "on", "off"])]
    nested: String,
    /// The iommu-vmm binary (default: the release build next to this program, built when run
    /// through cargo).
    #[arg(long)]
    vmm: Option<PathBuf>,
    /// Time limit of one boot, seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

/// A parsed mode list: an alias, so clap hands the whole comma-separated value to `parse_modes`
/// instead of treating `Vec` as a repeated option.
type Modes = Vec<Mode>;

#[derive(ClapArgs, Debug, Clone)]
struct RunOne {
    #[arg(long)]
    round: u32,
    #[arg(long)]
    mode: Mode,
    #[arg(long = "vmm-kind")]
    vmm_kind: Vmm,
    #[arg(long)]
    kernel: PathBuf,
    #[arg(long)]
    initrd: PathBuf,
    #[arg(long)]
    disk: PathBuf,
    #[arg(long, value_delimiter = ',', value_parser = parse_block)]
    blocks: Vec<u64>,
    /// Bytes the guest reads per block size.
    #[arg(long)]
    disk_len: u64,
    /// iommu-vmm binary (default inside the nested runner: /bin/iommu-vmm of the L1 image).
    #[arg(long)]
    iommu_vmm: Option<PathBuf>,
    /// QEMU binary (direct runs).
    #[arg(long)]
    qemu: Option<PathBuf>,
    /// QEMU firmware folders (`-L`).
    #[arg(long)]
    qemu_data: Vec<PathBuf>,
    /// A QEMU bundle folder (iommu_nested::bundle layout) to run QEMU from.
    #[arg(long)]
    qemu_bundle: Option<PathBuf>,
    /// Copy kernel, initramfs, disk and QEMU bundle into L1's RAM first (nested runs).
    #[arg(long)]
    stage: bool,
    /// Seconds before the boot is killed.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Progress label, e.g. 3/24.
    #[arg(long, default_value = "")]
    label: String,
}

/// Where nested runs stage their inputs (L1's RAM-backed root file system).
const STAGE_DIR: &str = "/tmp/iommu-wholevm";

fn stage_file(src: &Path) -> Result<PathBuf, String> {
    let name = src
        .file_name()
        .ok_or_else(|| format!("bad path {}", src.display()))?;
    let dst = Path::new(STAGE_DIR).join(name);
    let len = std::fs::metadata(src)
        .map_err(|e| format!("{}: {e}", src.display()))?
        .len();
    if std::fs::metadata(&dst).is_ok_and(|m| m.len() == len) {
        return Ok(dst);
    }
    std::fs::create_dir_all(STAGE_DIR).map_err(|e| format!("{STAGE_DIR}: {e}"))?;
    let tmp = dst.with_extension("staging");
    std::fs::copy(src, &tmp).map_err(|e| format!("copy {}: {e}", src.display()))?;
    std::fs::rename(&tmp, &dst).map_err(|e| format!("{}: {e}", dst.display()))?;
    Ok(dst)
}

fn stage_dir(src: &Path) -> Result<PathBuf, String> {
    let name = src
        .file_name()
        .ok_or_else(|| format!("bad path {}", src.display()))?;
    let dst = Path::new(STAGE_DIR).join(name);
    if dst.join("complete").is_file() {
        return Ok(dst);
    }
    let tmp = dst.with_extension("staging");
    let _ = std::fs::remove_dir_all(&tmp);
    nested::bundle::copy_tree(src, &tmp).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, &dst).map_err(|e| format!("{}: {e}", dst.display()))?;
    Ok(dst)
}

/// One boot: start the VMM, timestamp its console lines, judge the result.
fn run_one(a: RunOne) -> Result<RunResult, String> {
    let (mut kernel, mut initrd, mut disk, mut bundle) =
        (a.kernel, a.initrd, a.disk, a.qemu_bundle);
    if a.stage {
        let t = Instant::now();
        kernel = stage_file(&kernel)?;
        initrd = stage_file(&initrd)?;
        disk = stage_file(&disk)?;
        if let Some(b) = &bundle {
            bundle = Some(stage_dir(b)?);
        }
        let secs = t.elapsed().as_secs_f64();
        if secs > 0.5 {
            eprintln!("iommu-wholevm: staged the inputs in L1's RAM in {secs:.1} s");
        }
    }
    let disk_len = a.disk_len;
    let spec = BootSpec {
        kernel,
        initrd,
        disk,
        append: guest_append(a.mode, &a.blocks, disk_len),
        mode: a.mode,
    };
    let mut cmd = match a.vmm_kind {
        Vmm::Ours => {
            let bin = a
                .iommu_vmm
                .clone()
                .or_else(|| nested::in_nested_l1().then(|| PathBuf::from("/bin/iommu-vmm")))
                .ok_or("--iommu-vmm is needed outside the nested runner")?;
            let mut c = Command::new(bin);
            c.args(our_args(&spec));
            c
        }
        Vmm::Qemu => match &bundle {
            Some(b) => {
                let mut data: Vec<PathBuf> = Vec::new();
                for i in 0.. {
                    let d = b.join("data").join(i.to_string());
                    if !d.is_dir() {
                        break;
                    }
                    data.push(d);
                }
                let mut c = Command::new(b.join("lib").join("ld-linux-x86-64.so.2"));
                c.arg("--library-path")
                    .arg(b.join("lib"))
                    .arg(b.join("bin").join("qemu-system-x86_64"))
                    .args(qemu_args(&spec, &data));
                c
            }
            None => {
                let q = a.qemu.clone().ok_or("--qemu or --qemu-bundle is needed")?;
                let mut c = Command::new(q);
                c.args(qemu_args(&spec, &a.qemu_data));
                c
            }
        },
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))?;
    let (tx, rx) = mpsc::channel::<(f64, String)>();
    let out = child.stdout.take().ok_or("no stdout")?;
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(out);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf).into_owned();
                    if tx.send((start.elapsed().as_secs_f64(), line)).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut err = child.stderr.take().ok_or("no stderr")?;
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut err, &mut v);
        String::from_utf8_lossy(&v).into_owned()
    });
    let deadline = start + Duration::from_secs(a.timeout);
    let mut events = Vec::new();
    let mut tail: Vec<String> = Vec::new();
    let mut timed_out = false;
    loop {
        let Some(wait) = deadline.checked_duration_since(Instant::now()) else {
            timed_out = true;
            let _ = child.kill();
            break;
        };
        match rx.recv_timeout(wait) {
            Ok((t, line)) => {
                if let Some(e) = parse_guest_line(&line) {
                    events.push((t, e));
                }
                tail.push(line.trim_end().to_string());
                if tail.len() > 40 {
                    tail.remove(0);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    let total = start.elapsed().as_secs_f64();
    let _ = reader.join();
    let stderr = err_reader.join().unwrap_or_default();
    let exit = if timed_out {
        None
    } else {
        Some(status.code().unwrap_or(128))
    };
    let r = judge(
        (a.round, a.mode, a.vmm_kind),
        &events,
        exit,
        total,
        &a.blocks,
    );
    if !r.ok {
        eprintln!(
            "iommu-wholevm: round {} {} under {} failed ({}); last console lines:\n{}\nstderr:\n{}",
            a.round,
            a.mode.name(),
            a.vmm_kind.name(),
            r.note,
            tail.join("\n"),
            stderr
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    if events.iter().all(|(_, e)| !matches!(e, GuestEvent::Done)) && r.ok {
        eprintln!("iommu-wholevm: note: the guest never said done");
    }
    Ok(r)
}

/// The release `iommu-vmm` next to this program, built first when running under cargo.
fn vmm_binary(given: Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(p) = given {
        return Ok(p);
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let profile_dir = exe.parent().ok_or("no exe dir")?;
    let target = profile_dir.parent().ok_or("no target dir")?;
    let path = target.join("release").join("iommu-vmm");
    if let Some(cargo) = std::env::var_os("CARGO") {
        eprintln!(
            "iommu-wholevm: building the release iommu-vmm (cargo build --release -p iommu-vmm)"
        );
        let ok = Command::new(cargo)
            .args([
                "build",
                "--release",
                "-q",
                "-p",
                "iommu-vmm",
                "--bin",
                "iommu-vmm",
            ])
            .env("CARGO_TARGET_DIR", target)
            .status()
            .map_err(|e| e.to_string())?
            .success();
        if !ok {
            return Err("cargo build --release -p iommu-vmm failed".into());
        }
    }
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "no iommu-vmm at {}: build it with cargo build --release -p iommu-vmm, or pass --vmm",
            path.display()
        ))
    }
}

fn host(o: HostOpts) -> Result<(), String> {
    let mode: NestedMode = o.nested.parse()?;
    let blocks = o.blocks.clone();
    let disk_len = o.disk_mib << 20;
    if let Some(b) = blocks.iter().find(|b| !disk_len.is_multiple_of(**b)) {
        return Err(format!("block {b} does not divide the disk size"));
    }
    let t0 = Instant::now();
    eprintln!(
        "iommu-wholevm: guest image {} (built on first use)",
        o.kernel
    );
    let img = guest_images::image::Builder::new(
        guest_images::cache::Cache::from_env().map_err(|e| e.to_string())?,
        guest_images::manifest::Manifest::embedded().map_err(|e| e.to_string())?,
        guest_images::image::BuildOptions {
            quiet: true,
            ..Default::default()
        },
    )
    .build_debian(&o.kernel)
    .map_err(|e| format!("guest image {}: {e}", o.kernel))?;
    let cache = guest_images::runner::cache_dir();
    let disk = cache
        .join("wholevm")
        .join(format!("disk-{}m.img", o.disk_mib));
    ensure_disk(&disk, disk_len).map_err(|e| format!("{}: {e}", disk.display()))?;
    let vmm = vmm_binary(o.vmm.clone())?;
    let nest = match (mode, nested::detect_kvm()) {
        (NestedMode::On, _) | (NestedMode::Auto, KvmSupport::Unusable { .. }) => true,
        (NestedMode::Off, KvmSupport::Unusable { reason }) => {
            return Err(format!("--nested off: {reason}"));
        }
        (_, KvmSupport::Hardware { .. }) => false,
    };
    let qemu = nested::find_qemu(true).map_err(|e| e.to_string())?;
    let mut data = qemu.data_dirs.clone();
    if data.is_empty() {
        data = ["/usr/share/qemu", "/usr/share/seabios"]
            .iter()
            .map(PathBuf::from)
            .filter(|d| d.is_dir())
            .collect();
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let plan = schedule(o.rounds, &o.modes);
    let common = |(round, m, v): (u32, Mode, Vmm), i: usize| -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        for s in [
            "run-one".to_string(),
            "--round".into(),
            round.to_string(),
            "--mode".into(),
            m.name().into(),
            "--vmm-kind".into(),
            v.name().into(),
            "--blocks".into(),
            blocks
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(","),
            "--disk-len".into(),
            disk_len.to_string(),
            "--timeout".into(),
            o.timeout.to_string(),
            "--label".into(),
            format!("{}/{}", i + 1, plan.len()),
        ] {
            a.push(s.into());
        }
        for (k, p) in [
            ("--kernel", img.kernel()),
            ("--initrd", img.initramfs()),
            ("--disk", disk.clone()),
        ] {
            a.push(k.into());
            a.push(p.into_os_string());
        }
        a
    };
    let mut jobs = Vec::new();
    if nest {
        let b = nested::bundle::bundle(&[qemu.binary.clone(), exe.clone()], &data)
            .map_err(|e| e.to_string())?;
        let worker = b.bins.get(1).cloned().ok_or("bundle without worker")?;
        for (i, &s) in plan.iter().enumerate() {
            let mut args = common(s, i);
            args.extend([
                "--stage".into(),
                "--qemu-bundle".into(),
                b.dir.clone().into_os_string(),
            ]);
            let (prog, full) = b.command(&worker, &args);
            jobs.push(Job::exec(prog, full));
        }
    } else {
        for (i, &s) in plan.iter().enumerate() {
            let mut args = common(s, i);
            args.extend(["--iommu-vmm".into(), vmm.clone().into_os_string()]);
            args.extend(["--qemu".into(), qemu.binary.clone().into_os_string()]);
            for d in &data {
                args.extend(["--qemu-data".into(), d.clone().into_os_string()]);
            }
            jobs.push(Job::exec(exe.clone(), args));
        }
    }
    eprintln!(
        "iommu-wholevm: {} boots ({} round(s) x {} mode(s) x iommu-vmm, QEMU) of guest {} with a {} MiB disk, {}; QEMU: {}",
        plan.len(),
        o.rounds,
        o.modes.len(),
        o.kernel,
        o.disk_mib,
        if nest {
            "all in one nested-runner L1 boot (QEMU TCG with AMD SVM; both VMMs on L1's KVM), ~20-60 s per boot"
        } else {
            "directly on this host's KVM"
        },
        qemu.version
    );
    let opts = RunnerOptions {
        vmm_binary: Some(vmm.clone()),
        job_timeout: Duration::from_secs(o.timeout + 120),
        // A worker may print nothing until its boot's result line: only the job timeout counts.
        idle_timeout: Some(Duration::from_secs(o.timeout + 120)),
        stream: true,
        ..RunnerOptions::default()
    };
    let report = nested::run_batch(mode, &jobs, &opts).map_err(|e| e.to_string())?;
    let mut results = Vec::new();
    for (&(round, m, v), job) in plan.iter().zip(&report.jobs) {
        let parsed = job.console.lines().find_map(RunResult::parse);
        results.push(parsed.unwrap_or_else(|| {
            let why = match &job.outcome {
                nested::JobOutcome::Exited(rc) => format!("no result line (worker exit {rc})"),
                nested::JobOutcome::Lost { reason } => format!("lost: {reason}"),
            };
            let mut r = judge(
                (round, m, v),
                &[],
                None,
                job.host_time.as_secs_f64(),
                &blocks,
            );
            r.note = why.replace(char::is_whitespace, "_");
            r
        }));
    }
    let table = render_table(&results, &o.modes, &blocks);
    let csv = to_csv(&results, &blocks);
    std::fs::create_dir_all(&o.out).map_err(|e| format!("{}: {e}", o.out.display()))?;
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let header = format!(
        "iommu-wholevm {}\nguest {} ({}), disk {} MiB, blocks {}, {} round(s), {}; QEMU: {}; {} L1 boot(s); total {:.0} s\n\
         Medians over the runs that passed (guest reached init, the disk had the expected IOMMU domain type, every read ran, VMM exit 0).\n\
         Ratios are iommu-vmm / QEMU: below 1 is faster for boot to init, above 1 is faster for MiB/s.\n",
        argv.join(" "),
        o.kernel,
        img.kernel().display(),
        o.disk_mib,
        blocks
            .iter()
            .map(|b| block_label(*b))
            .collect::<Vec<_>>()
            .join(","),
        o.rounds,
        if nest {
            "nested runner (L1: QEMU TCG, -cpu EPYC; both VMMs on L1's kvm_amd)"
        } else {
            "host KVM"
        },
        qemu.version,
        report.boots.len(),
        t0.elapsed().as_secs_f64()
    );
    let csv_path = o.out.join("wholevm.csv");
    let md_path = o.out.join("wholevm.md");
    std::fs::write(&csv_path, &csv).map_err(|e| format!("{}: {e}", csv_path.display()))?;
    std::fs::write(&md_path, format!("{header}\n{table}"))
        .map_err(|e| format!("{}: {e}", md_path.display()))?;
    println!("\n{header}\n{table}");
    println!("wrote {} and {}", csv_path.display(), md_path.display());
    let failed = results.iter().filter(|r| !r.ok).count();
    if failed > 0 {
        eprintln!(
            "iommu-wholevm: {failed} of {} runs failed (see the note column of the CSV)",
            results.len()
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Some(Cmd::RunOne(a)) => {
            let label = a.label.clone();
            run_one(a).map(|r| {
                let prefix = if label.is_empty() {
                    String::new()
                } else {
                    format!("[{label}] ")
                };
                println!("{prefix}{}", r.to_line());
            })
        }
        None => host(cli.opts),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("iommu-wholevm: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_defaults_are_all_modes_4k_64k_three_rounds() {
        let c = Cli::try_parse_from(["iommu-wholevm"]).unwrap();
        assert!(c.cmd.is_none());
        assert_eq!(c.opts.rounds, 3);
        assert_eq!(c.opts.modes, Mode::ALL.to_vec());
        assert_eq!(c.opts.blocks, vec![4096, 65536]);
        assert_eq!(c.opts.kernel, "6.1");
        assert_eq!(c.opts.disk_mib, 16);
    }

    #[test]
    fn cli_takes_rounds_modes_kernel_disk() {
        let c = Cli::try_parse_from([
            "iommu-wholevm",
            "--rounds",
            "2",
            "--modes",
            "strict,none",
            "--kernel",
            "6.12",
            "--disk-mib",
            "8",
            "--blocks",
            "4K",
        ])
        .unwrap();
        assert_eq!(c.opts.rounds, 2);
        assert_eq!(c.opts.modes, vec![Mode::Strict, Mode::None]);
        assert_eq!(c.opts.kernel, "6.12");
        assert_eq!(c.opts.disk_mib, 8);
        assert_eq!(c.opts.blocks, vec![4096]);
    }

    #[test]
    fn cli_rejects_bad_values() {
        for bad in [
            &["iommu-wholevm", "--rounds", "0"][..],
            &["iommu-wholevm", "--modes", "fast"],
            &["iommu-wholevm", "--blocks", "1000"],
            &["iommu-wholevm", "--nested", "maybe"],
            &["iommu-wholevm", "--disk-mib", "0"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cli_run_one_parses_worker_arguments() {
        let c = Cli::try_parse_from([
            "iommu-wholevm",
            "run-one",
            "--round",
            "2",
            "--mode",
            "lazy",
            "--vmm-kind",
            "qemu",
            "--kernel",
            "/k",
            "--initrd",
            "/i",
            "--disk",
            "/d",
            "--blocks",
            "4096,65536",
            "--disk-len",
            "1048576",
            "--qemu-bundle",
            "/b",
            "--stage",
        ])
        .unwrap();
        let Some(Cmd::RunOne(a)) = c.cmd else {
            panic!("not run-one")
        };
        assert_eq!(a.mode, Mode::Lazy);
        assert_eq!(a.vmm_kind, Vmm::Qemu);
        assert_eq!(a.blocks, vec![4096, 65536]);
        assert!(a.stage);
        assert_eq!(a.qemu_bundle, Some(PathBuf::from("/b")));
    }
}
