//! What a user sees when the guest goes wrong, under KVM (issue 7): a triple fault ends the
//! VMM with a register dump, and a kernel panic seen on the console ends it with the panic
//! line. Both jobs run in one boot of the nested runner where the host has no usable KVM.
//! Each assertion needs the guest to have actually run: an exit status from anything else
//! (a VMM error, a lost job) fails with the job's output.

use std::time::Duration;

use iommu_nested::{Job, JobOutcome, NestedMode, RunnerOptions, run_batch};
use iommu_vmm::exit::{STATUS_GUEST_PANIC, STATUS_TRIPLE_FAULT};

/// Entry point of the hand-made ELF kernel.
const ENTRY: u64 = 0x100_0000;

/// A minimal ELF64 x86_64 executable whose only instruction is `ud2`: with the VMM's empty
/// boot IDT the #UD cannot be delivered, which escalates to a triple fault (Intel SDM Vol. 3A
/// §6.15, interrupt 8).
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
    e.extend_from_slice(&ENTRY.to_le_bytes());
    e.extend_from_slice(&phoff.to_le_bytes());
    e.extend_from_slice(&0u64.to_le_bytes()); // no section headers
    e.extend_from_slice(&0u32.to_le_bytes());
    e.extend_from_slice(&64u16.to_le_bytes());
    e.extend_from_slice(&56u16.to_le_bytes());
    e.extend_from_slice(&1u16.to_le_bytes());
    e.extend_from_slice(&64u16.to_le_bytes());
    e.extend_from_slice(&0u16.to_le_bytes());
    e.extend_from_slice(&0u16.to_le_bytes());
    assert_eq!(e.len(), 64);
    e.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    e.extend_from_slice(&5u32.to_le_bytes()); // R+X
    e.extend_from_slice(&code_off.to_le_bytes());
    e.extend_from_slice(&ENTRY.to_le_bytes());
    e.extend_from_slice(&ENTRY.to_le_bytes());
    e.extend_from_slice(&(code.len() as u64).to_le_bytes());
    e.extend_from_slice(&(code.len() as u64).to_le_bytes());
    e.extend_from_slice(&0x1000u64.to_le_bytes());
    assert_eq!(e.len() as u64, code_off);
    e.extend_from_slice(code);
    e
}

#[test]
fn boot_errors_triple_fault_dumps_registers_and_panic_is_reported() {
    let dir = iommu_tests::scratch("boot-test-scratch", "errors");
    let elf = dir.join("ud2.elf");
    std::fs::write(&elf, triple_fault_elf()).expect("write ELF");
    let image = guest_images::image::Builder::new(
        guest_images::cache::Cache::from_env().expect("guest image cache"),
        guest_images::manifest::Manifest::embedded().expect("embedded manifest"),
        guest_images::image::BuildOptions {
            quiet: true,
            ..Default::default()
        },
    )
    .build_debian("6.1")
    .expect("the 6.1 guest image must build (guest-images)");

    let jobs = vec![
        Job::vmm([
            "--kernel".into(),
            elf.clone().into_os_string(),
            "-m".into(),
            "256M".into(),
        ])
        .with_cwd(&dir),
        // No initrd and no root device: Linux panics in mount_root.
        Job::vmm([
            "--kernel".into(),
            image.kernel().into_os_string(),
            "-m".into(),
            "512M".into(),
            "--append".into(),
            "quiet root=/dev/nonexistent".into(),
        ])
        .with_cwd(&dir)
        .with_path(image.dir.clone()),
    ];
    let opts = RunnerOptions {
        vmm_binary: Some(iommu_tests::release_vmm_binary()),
        job_timeout: Duration::from_secs(240),
        ..RunnerOptions::default()
    };
    let report = run_batch(NestedMode::Auto, &jobs, &opts).expect("the jobs must run");
    assert_eq!(report.jobs.len(), 2);

    let tf = &report.jobs[0];
    assert_eq!(
        tf.outcome,
        JobOutcome::Exited(STATUS_TRIPLE_FAULT),
        "triple fault job: stdout:\n{}\nstderr:\n{}",
        tf.console,
        tf.stderr
    );
    let all = format!("{}{}", tf.console, tf.stderr);
    assert!(
        all.contains("guest triple fault"),
        "no plain message:\n{all}"
    );
    // Intel keeps the faulting state (RIP at the ud2); AMD's KVM resets the vCPU on the
    // shutdown intercept, and the dump says so.
    assert!(
        all.contains(&format!("RIP={ENTRY:016x}")) || all.contains("these are reset values"),
        "register dump has neither the faulting RIP nor the AMD reset note:\n{all}"
    );
    assert!(
        all.contains("CR0="),
        "no control registers in the dump:\n{all}"
    );

    let panic = &report.jobs[1];
    let all = format!("{}{}", panic.console, panic.stderr);
    assert_eq!(
        panic.outcome,
        JobOutcome::Exited(STATUS_GUEST_PANIC),
        "panic job:\n{all}"
    );
    assert!(
        all.contains("guest kernel panic"),
        "no plain message:\n{all}"
    );
    assert!(all.contains("VFS"), "the panic line is not quoted:\n{all}");
}
