//! Boot stress: many short boots of Debian's 6.1 kernel, each reading the disk with O_DIRECT
//! (the moment a rare L2 triple fault was seen twice, with compatibility-format interrupts),
//! in one L1 boot of the nested runner (directly on hosts with hardware KVM). Counts the
//! boots that do not end cleanly, per mode and vCPU count, and prints each failure's full
//! report: the VMM's shutdown report (registers, whether KVM kept them, pending events, the
//! flight recorder's last exits, interrupts and virtio-blk requests) and, where the runner's L1
//! has tracefs, the L1 kernel's KVM trace around the failure with the guest RIP of the shutdown
//! exit named from the kernel's System.map (the guests boot with `nokaslr` for that).
//!
//! Ignored by default (one boot is 15-40 s here). Knobs (environment):
//! - `IOMMU_STRESS_ROUNDS` (default 4): boots per (mode, vCPU count);
//! - `IOMMU_STRESS_MODES` (default `none,ir-off`): of `none` (`--iommu none`), `ir-off`
//!   (`intel-iommu,x-scalable-mode=on,intremap=off`), `ir` (interrupt remapping on), `legacy`
//!   (boot_linux's legacy mode), `legacy-ir-off`, `legacy-nocache` (no IOTLB, no
//!   paging-structure caches);
//! - `IOMMU_STRESS_READS` (default 3): 8 MiB O_DIRECT reads per boot;
//! - `IOMMU_STRESS_SMP` (default `1,2`);
//! - `IOMMU_STRESS_KVM_TRACE=0` leaves L1's KVM tracepoints off;
//! - `IOMMU_STRESS_INIT=payload` runs the image's whole payload (with `--device pasid-test`
//!   under intel-iommu) instead of only the reads: slower, closer to the failed boot tests;
//! - `IOMMU_STRESS_ATTEMPTS` (default 3): L1 boots at most (`RunnerOptions::attempts`); raise
//!   it when measuring the L1 failure rate, so a run survives several L1 failures.
//!
//! The runner's own knobs apply too (`IOMMU_VMM_NESTED_KVM_PARAMS`, `IOMMU_VMM_NESTED_CPU`,
//! `IOMMU_VMM_NESTED_L1_KERNEL`, `IOMMU_VMM_NESTED_IDLE_TIMEOUT`, vmm/nested/README.md).
//! The last line, `boot_stress: SUMMARY ...`, counts the L1 boots, the L2 boots started (jobs
//! that ended plus those cut off by an L1 failure), L1 freezes (idle or outer timeout), L1
//! crashes (QEMU exited early), L2 triple faults, other failed boots, retry boots and the wall
//! time: the L1 failure-rate table in vmm/nested/README.md is made of these lines.
//!
//! `cargo test -p iommu-tests --test boot_stress -- --ignored --nocapture`

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use iommu_nested::{Job, JobOutcome, NestedMode, RunnerOptions, run_batch};

const DISK_BYTES: u64 = 16 << 20;
const READ_BYTES: u64 = 8 << 20;
/// O_DIRECT reads per boot (`IOMMU_STRESS_READS`, default 3).
fn reads() -> u32 {
    std::env::var("IOMMU_STRESS_READS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

/// Loads the image's modules (virtio, virtio-blk; not the payload's test module), reads the
/// disk `reads()` times with the payload's O_DIRECT reader and powers off.
fn init_script() -> String {
    let reads = reads();
    format!(
        r#"#!/bin/busybox sh
/bin/busybox mkdir -p /bin /sbin /usr/bin /usr/sbin /proc /sys /dev /tmp
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
{LOAD_MODULES}dmesg | grep -iE "x2apic|apic routing|DMAR-IR" | sed 's/^/STRESS dmesg /'
echo "STRESS reads start"
i=1
while [ $i -le {reads} ]; do
    echo "STRESS read $i $(/bin/odirect_sha /dev/vda {READ_BYTES})"
    i=$((i + 1))
done
echo "STRESS end"
poweroff -f
"#
    )
}

struct Mode {
    name: &'static str,
    iommu: &'static str,
    append: &'static str,
}

const MODES: &[Mode] = &[
    Mode {
        name: "none",
        iommu: "none",
        append: "quiet nokaslr",
    },
    Mode {
        name: "ir-off",
        iommu: "intel-iommu,x-scalable-mode=on,intremap=off",
        append: "quiet nokaslr intel_iommu=on,sm_on iommu.strict=1",
    },
    Mode {
        name: "ir",
        iommu: "intel-iommu,x-scalable-mode=on",
        append: "quiet nokaslr intel_iommu=on,sm_on iommu.strict=1",
    },
    // boot_linux's legacy mode (interrupt remapping on, strict), where CI saw the fault.
    Mode {
        name: "legacy",
        iommu: "intel-iommu",
        append: "quiet nokaslr intel_iommu=on iommu.strict=1",
    },
    Mode {
        name: "legacy-ir-off",
        iommu: "intel-iommu,intremap=off",
        append: "quiet nokaslr intel_iommu=on iommu.strict=1",
    },
    // No IOTLB and no paging-structure caches: every DMA walks the tables.
    Mode {
        name: "legacy-nocache",
        iommu: "intel-iommu,iotlb-ways=0,pwc-entries=0",
        append: "quiet nokaslr intel_iommu=on iommu.strict=1",
    },
];

fn env_list(var: &str, default: &str) -> Vec<String> {
    std::env::var(var)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn write_disk(path: &Path) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("create disk"));
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..(DISK_BYTES >> 20) {
        for chunk in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&buf).expect("write disk");
    }
    f.flush().expect("flush disk");
}

/// Loads the image's virtio modules and waits for /dev/vda (guest shell snippet).
const LOAD_MODULES: &str = r#"moddir=/lib/modules/$(uname -r)
while read -r m; do
    case "$m" in ""|*iommutest*) continue ;; esac
    insmod "$moddir/$m" 2>/dev/null
done </etc/iommutest/modules
n=0
while [ ! -b /dev/vda ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
"#;

/// Init of the symbol job: the guest kernel's /proc/kallsyms onto its writable disk. Debian's
/// System.map is a stub (the real one is in the -dbg package), and with `nokaslr` every boot
/// of the kernel has these addresses.
fn ksyms_init() -> String {
    format!(
        "#!/bin/busybox sh\n/bin/busybox mkdir -p /bin /sbin /proc /sys /dev\n/bin/busybox --install -s\nexport PATH=/bin:/sbin\nmount -t proc proc /proc\nmount -t sysfs sysfs /sys\nmount -t devtmpfs devtmpfs /dev 2>/dev/null\n{LOAD_MODULES}cat /proc/kallsyms >/dev/vda\nsync\npoweroff -f\n"
    )
}

/// A job that boots the 6.1 kernel with `nokaslr` and writes its kallsyms as text to `out`
/// (L1 shell; the initrd must hold /ksyms-init).
fn kallsyms_job(vmm: &Path, kernel: &Path, initrd: &Path, image_dir: &Path, out: &Path) -> Job {
    let script = format!(
        r#"VMM=/bin/iommu-vmm
[ -x "$VMM" ] || VMM='{vmm}'
IMG=/tmp/ksyms-$$.img
dd if=/dev/zero of=$IMG bs=1M count=16 2>/dev/null
"$VMM" --nested off --kernel '{kernel}' --initrd '{initrd}' --disk "$IMG" -m 512M --append 'quiet nokaslr rdinit=/ksyms-init' >/dev/null
tr -d '\000' <$IMG >'{out}'
rm -f $IMG
grep -c ' [tT] ' '{out}'
"#,
        vmm = vmm.display(),
        kernel = kernel.display(),
        initrd = initrd.display(),
        out = out.display(),
    );
    let dir = out.parent().unwrap_or(Path::new("/"));
    Job::shell(script)
        .with_cwd(dir)
        .with_path(image_dir.to_path_buf())
}

/// Shell line exporting the kallsyms file as the VMM's symbol source when the symbol job
/// produced it.
fn map_export(map: &Path) -> String {
    format!(
        "[ -s '{m}' ] && export IOMMU_VMM_SYSTEM_MAP='{m}'",
        m = map.display()
    )
}

/// L1 machine failures of one run, from each L1 boot's failure reason and console log.
#[derive(Debug, Default)]
struct L1Failures {
    /// The runner declared L1 frozen (idle timeout, outer timeout, boot timeout).
    freezes: usize,
    /// QEMU exited before L1 finished its jobs (an L1 kernel crash with `panic=-1`, or QEMU
    /// itself died).
    crashes: usize,
    /// Jobs that were running when L1 failed (their L2 boot was cut off).
    cut_jobs: usize,
    /// What L1's kernel log said about each failure (first matching line).
    signatures: Vec<String>,
}

impl L1Failures {
    fn count(&mut self, failure: Option<&str>, log: &str) {
        let Some(f) = failure else { return };
        if f.contains("ended before finishing") {
            self.crashes += 1;
        } else if f.contains("stopped answering") || f.contains("did not finish booting") {
            self.freezes += 1;
        } else {
            // "KVM does not work in L1" and the like: an L1 failure all the same.
            self.crashes += 1;
        }
        if log.contains("when L1 was lost") {
            self.cut_jobs += 1;
        }
        let sig = log
            .lines()
            .find(|l| {
                [
                    "BUG:",
                    "Kernel panic",
                    "soft lockup",
                    "rcu_preempt",
                    "general protection",
                ]
                .iter()
                .any(|k| l.contains(k))
            })
            .unwrap_or("(no kernel message)");
        self.signatures.push(format!("{f} [{}]", sig.trim()));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Pass,
    TripleFault,
    Other,
}

#[test]
#[ignore = "long: many nested boots; run on purpose (see the module doc)"]
fn boot_stress_6_1_odirect_reads_never_triple_fault() {
    let cache = guest_images::cache::Cache::from_env().expect("guest image cache");
    let image_dir = image_6_1(&cache);
    let kernel = image_dir.join(guest_images::cache::KERNEL_FILE);
    let dir = iommu_tests::scratch("boot-test-scratch", "stress");
    let map = dir.join("kallsyms-nokaslr.txt");
    let disk = dir.join("disk.img");
    write_disk(&disk);
    let sha = iommu_tests::sha256_prefix(&disk, READ_BYTES);
    let initrd = iommu_tests::initrd_with_files(
        &image_dir.join(guest_images::cache::INITRAMFS_FILE),
        &dir,
        &[
            ("stress-init", init_script().as_bytes()),
            ("ksyms-init", ksyms_init().as_bytes()),
        ],
    );

    let rounds: usize = std::env::var("IOMMU_STRESS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let modes: Vec<&Mode> = env_list("IOMMU_STRESS_MODES", "none,ir-off")
        .iter()
        .map(|n| {
            MODES
                .iter()
                .find(|m| m.name == n)
                .unwrap_or_else(|| panic!("unknown mode {n}"))
        })
        .collect();
    let smps: Vec<u8> = env_list("IOMMU_STRESS_SMP", "1,2")
        .iter()
        .map(|s| s.parse().expect("IOMMU_STRESS_SMP: numbers"))
        .collect();
    let trace = std::env::var("IOMMU_STRESS_KVM_TRACE").map_or(true, |v| v != "0");
    // `payload`: the image's whole payload (/init: modules, PASID device and SVA tests with an
    // IOMMU, then the O_DIRECT read), as the boot tests that failed ran it; else only the reads.
    let payload = std::env::var("IOMMU_STRESS_INIT").is_ok_and(|v| v == "payload");
    let init_args = if payload {
        format!("iommutest.disk_sha={sha} iommutest.disk_len={READ_BYTES}")
    } else {
        "rdinit=/stress-init".to_string()
    };

    let vmm = iommu_tests::release_vmm_binary();
    // Interleaved: round r runs every (mode, smp) once, so load changes hit all alike.
    let mut plan = Vec::new();
    for _ in 0..rounds {
        for m in &modes {
            for &smp in &smps {
                plan.push((*m, smp));
            }
        }
    }
    let map_export = map_export(&map);
    // Job 0 writes the kernel's symbols (for the shutdown reports); the boots follow.
    let mut jobs = vec![kallsyms_job(&vmm, &kernel, &initrd, &image_dir, &map)];
    jobs.extend(plan
        .iter()
        .map(|(m, smp)| {
            let trace_setup = if trace {
                r#"T=/sys/kernel/tracing
[ -e $T/trace ] || mount -t tracefs nodev $T 2>/dev/null
[ -w $T/events/kvm/kvm_exit/enable ] && export IOMMU_VMM_KVM_TRACE=$T
echo "STRESS kvm trace: ${IOMMU_VMM_KVM_TRACE:-off}" >&2"#
            } else {
                ""
            };
            let script = format!(
                r#"VMM=/bin/iommu-vmm
[ -x "$VMM" ] || VMM='{vmm}'
{trace_setup}
{map_export}
LOCAL=/tmp/stress-disk-$$.img
cp '{disk}' "$LOCAL" || exit 97
"$VMM" --nested off --kernel '{kernel}' --initrd '{initrd}' --disk "$LOCAL,readonly=on" --iommu '{iommu}'{device} -m 1G --smp {smp} --stats --append '{append} {init_args}'
rc=$?
rm -f "$LOCAL"
if [ $rc -ne 0 ]; then
    echo "STRESS L1 kernel log (last 30 lines):" >&2
    dmesg | tail -n 30 >&2
fi
exit $rc
"#,
                vmm = vmm.display(),
                disk = disk.display(),
                kernel = kernel.display(),
                initrd = initrd.display(),
                iommu = if payload && m.iommu != "none" {
                    // As `--guest` gives it with the PASID device: the SVA test needs ATS and PRI.
                    format!("{},device-iotlb=on,x-prs=on", m.iommu)
                } else {
                    m.iommu.to_string()
                },
                append = m.append,
                device = if payload && m.iommu != "none" {
                    " --device pasid-test"
                } else {
                    ""
                },
            );
            Job::shell(script)
                .with_cwd(&dir)
                .with_path(image_dir.clone())
        }));
    let attempts = std::env::var("IOMMU_STRESS_ATTEMPTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let opts = RunnerOptions {
        vmm_binary: Some(vmm),
        job_timeout: Duration::from_secs(300),
        stream: false,
        attempts,
        ..RunnerOptions::default()
    };
    let started = std::time::Instant::now();
    let report = run_batch(NestedMode::Auto, &jobs, &opts).expect("the jobs must run");
    let wall = started.elapsed();
    assert_eq!(report.jobs.len(), plan.len() + 1, "one result per job");
    let ksyms = &report.jobs[0];
    eprintln!(
        "boot_stress: kernel symbols for the reports: {:?}, {} text symbols",
        ksyms.outcome,
        ksyms.console.trim()
    );

    let mut failures = Vec::new();
    let mut table: std::collections::BTreeMap<(String, u8), (u32, u32, u32)> = Default::default();
    for (i, ((m, smp), job)) in plan.iter().zip(&report.jobs[1..]).enumerate() {
        let c = &job.console;
        let reads_ok = (1..=reads()).all(|k| {
            c.lines()
                .any(|l| l.trim_end() == format!("STRESS read {k} {sha}"))
        });
        let verdict = match job.outcome {
            JobOutcome::Exited(0) if reads_ok && c.contains("STRESS end") => Verdict::Pass,
            // The payload's own verdicts depend on the mode (without an IOMMU its IOMMU
            // tests fail: status 1); what counts here is a boot that got through the read.
            JobOutcome::Exited(0 | 1)
                if payload
                    && c.lines()
                        .any(|l| l.starts_with("IOMMUTEST disk_read_sha PASS"))
                    && c.lines().any(|l| l.starts_with("IOMMUTEST-SUMMARY")) =>
            {
                Verdict::Pass
            }
            JobOutcome::Exited(4) => Verdict::TripleFault,
            _ => Verdict::Other,
        };
        let e = table.entry((m.name.to_string(), *smp)).or_default();
        match verdict {
            Verdict::Pass => e.0 += 1,
            Verdict::TripleFault => e.1 += 1,
            Verdict::Other => e.2 += 1,
        }
        eprintln!(
            "boot_stress: job {i} {} smp {smp}: {verdict:?} ({:?}, {:.1} s in L1, L1 boot {})",
            m.name, job.outcome, job.l1_secs, job.boot
        );
        if verdict != Verdict::Pass {
            let tail: Vec<&str> = c.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            failures.push(format!(
                "job {i} ({} smp {smp}) {verdict:?}, {:?}; console (last 40 lines):\n{}\nstderr:\n{}",
                m.name,
                job.outcome,
                tail.join("\n"),
                job.stderr
            ));
        }
    }
    for ((mode, smp), (pass, tf, other)) in &table {
        eprintln!(
            "boot_stress: {mode:7} smp {smp}: {pass} pass, {tf} triple faults, {other} other failures"
        );
    }
    let mut l1 = L1Failures::default();
    for b in &report.boots {
        l1.count(b.failure.as_deref(), &b.log);
        eprintln!(
            "boot_stress: L1 boot: QEMU {}, completed {}, {:.0} s, failure {:?}",
            b.qemu_version,
            b.completed,
            b.total.as_secs_f64(),
            b.failure
        );
        for l in b.log.lines().filter(|l| l.starts_with("init: ")) {
            eprintln!("boot_stress: L1 {l}");
        }
        if b.failure.is_some() {
            let tail: Vec<&str> = b.log.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            eprintln!("boot_stress: L1 log (last 40 lines):\n{}", tail.join("\n"));
        }
    }
    let results = report.jobs.iter().filter(|j| j.status().is_some()).count();
    let lost = report.jobs.len() - results;
    let (mut tf, mut other) = (0, 0);
    for (_, t, o) in table.values() {
        tf += t;
        other += o;
    }
    if report.jobs[0].status() != Some(0) {
        other += 1;
    }
    // L2 boots started: every job that ended (job 0, the symbol job, boots L2 too) and every
    // job an L1 failure cut off mid-boot (it runs again in the next L1 boot).
    let l2_boots = results + l1.cut_jobs;
    eprintln!(
        "boot_stress: SUMMARY L1 boots {}, L2 boots {l2_boots} ({results} ended, {} cut off by L1, {lost} lost), \
         L1 freezes {}, L1 crashes {}, L2 triple faults {tf}, other failed L2 boots {other}, \
         retry boots {}, wall {:.0} s, cpu {}, kvm_params {:?}, L1 kernel {}",
        report.boots.len(),
        l1.cut_jobs,
        l1.freezes,
        l1.crashes,
        report.boots.len().saturating_sub(1),
        wall.as_secs_f64(),
        opts.cpu_model,
        opts.kvm_params,
        opts.l1_kernel,
    );
    if !l1.signatures.is_empty() {
        eprintln!(
            "boot_stress: SUMMARY L1 failure signatures: {}",
            l1.signatures.join("; ")
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        failures.is_empty(),
        "{} of {} boots failed:\n\n{}",
        failures.len(),
        plan.len(),
        failures.join("\n\n")
    );
}

/// Entry point of the hand-made ELF kernel of the diagnosis test.
const UD2_ENTRY: u64 = 0x100_0000;

/// A minimal ELF64 x86_64 executable whose only instruction is `ud2`: with the VMM's empty
/// boot IDT the #UD cannot be delivered, which escalates to a triple fault (Intel SDM Vol. 3A
/// §6.15, interrupt 8). (The same kernel as boot_errors'.)
fn triple_fault_elf() -> Vec<u8> {
    let code: &[u8] = &[0x0f, 0x0b];
    let phoff: u64 = 64;
    let code_off: u64 = 64 + 56;
    let mut e = Vec::new();
    e.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    e.extend_from_slice(&[0; 8]);
    e.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    e.extend_from_slice(&0x3eu16.to_le_bytes()); // EM_X86_64
    e.extend_from_slice(&1u32.to_le_bytes());
    e.extend_from_slice(&UD2_ENTRY.to_le_bytes());
    e.extend_from_slice(&phoff.to_le_bytes());
    e.extend_from_slice(&0u64.to_le_bytes());
    e.extend_from_slice(&0u32.to_le_bytes());
    e.extend_from_slice(&64u16.to_le_bytes());
    e.extend_from_slice(&56u16.to_le_bytes());
    e.extend_from_slice(&1u16.to_le_bytes());
    e.extend_from_slice(&64u16.to_le_bytes());
    e.extend_from_slice(&0u16.to_le_bytes());
    e.extend_from_slice(&0u16.to_le_bytes());
    e.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    e.extend_from_slice(&5u32.to_le_bytes()); // R+X
    e.extend_from_slice(&code_off.to_le_bytes());
    e.extend_from_slice(&UD2_ENTRY.to_le_bytes());
    e.extend_from_slice(&UD2_ENTRY.to_le_bytes());
    e.extend_from_slice(&(code.len() as u64).to_le_bytes());
    e.extend_from_slice(&(code.len() as u64).to_le_bytes());
    e.extend_from_slice(&0x1000u64.to_le_bytes());
    e.extend_from_slice(code);
    e
}

/// The shutdown report of a triple fault names the faulting RIP even where KVM erases the
/// vCPU state (AMD): from the registers when KVM kept them, else from the L1 kernel's
/// `kvm_exit` trace of the shutdown exit; it says whether the state was lost and carries
/// the flight recorder's section. Two guests: a two-byte `ud2` kernel, and Debian's 6.1
/// rebooting with `reboot=t` (the kernel invalidates its IDT and executes int3: a triple
/// fault on purpose), whose report must name the function from System.map and find the
/// guest's IDT and page tables intact in the post-mortem. Runs one short nested boot (or
/// directly with hardware KVM; without tracefs there, the registers must hold the RIP).
#[test]
fn boot_stress_triple_fault_report_names_the_faulting_rip() {
    let dir = iommu_tests::scratch("boot-test-scratch", "tf-report");
    let elf = dir.join("ud2.elf");
    std::fs::write(&elf, triple_fault_elf()).expect("write ELF");
    let cache = guest_images::cache::Cache::from_env().expect("guest image cache");
    let image_dir = image_6_1(&cache);
    let map = dir.join("kallsyms-nokaslr.txt");
    let initrd = iommu_tests::initrd_with_files(
        &image_dir.join(guest_images::cache::INITRAMFS_FILE),
        &dir,
        &[
            ("tf-init", b"#!/bin/busybox sh\n/bin/busybox reboot -f\n"),
            ("ksyms-init", ksyms_init().as_bytes()),
        ],
    );

    let vmm = iommu_tests::release_vmm_binary();
    let setup = format!(
        r#"VMM=/bin/iommu-vmm
[ -x "$VMM" ] || VMM='{vmm}'
T=/sys/kernel/tracing
[ -e $T/trace ] || mount -t tracefs nodev $T 2>/dev/null
[ -w $T/events/kvm/kvm_exit/enable ] && export IOMMU_VMM_KVM_TRACE=$T
{map_export}
"#,
        vmm = vmm.display(),
        map_export = map_export(&map),
    );
    let ud2 = format!(
        "{setup}\"$VMM\" --nested off --kernel '{}' -m 256M\n",
        elf.display()
    );
    let linux = format!(
        "{setup}\"$VMM\" --nested off --kernel '{}' --initrd '{}' -m 512M --append 'quiet nokaslr reboot=t rdinit=/tf-init'\n",
        image_dir.join(guest_images::cache::KERNEL_FILE).display(),
        initrd.display()
    );
    let kernel = image_dir.join(guest_images::cache::KERNEL_FILE);
    let linux_job = Job::shell(linux)
        .with_cwd(&dir)
        .with_path(image_dir.clone());
    let opts = RunnerOptions {
        vmm_binary: Some(vmm.clone()),
        job_timeout: Duration::from_secs(240),
        ..RunnerOptions::default()
    };
    let report = run_batch(
        NestedMode::Auto,
        &[
            kallsyms_job(&vmm, &kernel, &initrd, &image_dir, &map),
            Job::shell(ud2).with_cwd(&dir),
            linux_job,
        ],
        &opts,
    )
    .expect("the jobs must run");
    assert_eq!(report.jobs.len(), 3);
    assert_eq!(
        report.jobs[0].outcome,
        JobOutcome::Exited(0),
        "the kernel symbol job: {}\n{}",
        report.jobs[0].console,
        report.jobs[0].stderr
    );
    let mut traced = false;
    for (job, rip) in report.jobs[1..].iter().zip([Some(UD2_ENTRY), None]) {
        let all = format!("{}{}", job.console, job.stderr);
        assert_eq!(job.outcome, JobOutcome::Exited(4), "exit status 4:\n{all}");
        assert!(all.contains("shut down (triple fault)"), "{all}");
        assert!(
            all.contains("State: LOST") || all.contains("State: kept"),
            "no verdict on the vCPU state:\n{all}"
        );
        assert!(
            all.contains("VMM events (exits, interrupts sent, virtio-blk requests)"),
            "no flight recorder section:\n{all}"
        );
        let kept = all.lines().find_map(|l| {
            l.strip_prefix(
                "State: kept (KVM raised the triple fault itself, or the host is Intel). RIP ",
            )
        });
        let shutdown = all
            .lines()
            .find_map(|l| l.strip_prefix("shutdown exit: guest RIP "));
        traced |= shutdown.is_some();
        let named = kept.or(shutdown).unwrap_or_else(|| {
            panic!("the report names the faulting RIP neither from the registers nor from the KVM trace:\n{all}")
        });
        match rip {
            Some(rip) => assert!(named.starts_with(&format!("{rip:#x}")), "{named}\n{all}"),
            None => {
                // Linux 6.1 arch/x86/kernel/reboot.c: BOOT_TRIPLE in
                // native_machine_emergency_restart (inlined helpers keep "restart").
                assert!(named.contains("restart"), "RIP not named: {named}\n{all}");
                for want in [
                    "= idt_table: ok",
                    "present gates, all into kernel text (",
                    ": mapped",
                ] {
                    assert!(all.contains(want), "post-mortem lacks `{want}`:\n{all}");
                }
            }
        }
    }
    eprintln!("boot_stress: triple fault reports checked (from the KVM trace: {traced})");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The 6.1 guest image (built when missing).
fn image_6_1(cache: &guest_images::cache::Cache) -> PathBuf {
    match guest_images::image::image_path(cache, "6.1") {
        Ok(d) if d.join(guest_images::cache::KERNEL_FILE).exists() => d,
        _ => {
            let manifest = guest_images::manifest::Manifest::embedded().expect("manifest");
            guest_images::image::Builder::new(
                cache.clone(),
                manifest,
                guest_images::image::BuildOptions {
                    quiet: true,
                    ..Default::default()
                },
            )
            .build_debian("6.1")
            .expect("the 6.1 guest image must build")
            .dir
        }
    }
}
