//! Runs `iommu-wholevm` once for real: one round, strict mode, a 1 MiB disk read with 64K blocks.
//! Both VMMs must boot the guest to init with the disk in a strict DMA domain and read it
//! (directly on hosts with hardware KVM, else both inside one nested-runner L1 boot).
//! Ignored by default: two guest boots, 3-5 minutes through the nested runner.

use std::process::Command;

#[test]
#[ignore = "boots the guest under iommu-vmm and under QEMU; minutes through the nested runner"]
fn wholevm_one_strict_round_both_vmms_boot_and_read() {
    let out = tempfile::tempdir().expect("temp dir");
    let status = Command::new(env!("CARGO_BIN_EXE_iommu-wholevm"))
        .args([
            "--rounds",
            "1",
            "--modes",
            "strict",
            "--disk-mib",
            "1",
            "--blocks",
            "64K",
            "--out",
        ])
        .arg(out.path())
        .status()
        .expect("run iommu-wholevm");
    assert!(status.success(), "iommu-wholevm failed: {status}");
    let csv = std::fs::read_to_string(out.path().join("wholevm.csv")).expect("wholevm.csv");
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{csv}");
    for (row, vmm) in rows.iter().zip(["iommu-vmm", "qemu"]) {
        assert!(
            row.starts_with(&format!("1,strict,{vmm},1,")) && row.contains(",DMA,"),
            "run under {vmm} did not pass: {row}"
        );
    }
    let md = std::fs::read_to_string(out.path().join("wholevm.md")).expect("wholevm.md");
    assert!(md.contains("| strict | 1/1, 1/1 |"), "{md}");
}
