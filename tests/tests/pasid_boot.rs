//! Boot tests of the PASID test device: Debian 5.10, 6.1 and 6.12 in one L1
//! boot of the nested runner (or directly with hardware KVM), each run as
//! `iommu-vmm --guest NAME --stats` with a read-only disk whose SHA-256 the
//! guest checks (the PASID device and the scalable-mode IOMMU are `--guest`'s
//! defaults); no line may be FAIL or SKIP but `iommufd_pasid` (no Debian kernel sets
//! CONFIG_IOMMUFD). Every expected payload line is asserted by
//! name and result (guest-images/payload/README.md, "PASID test device
//! tests"), the negative tests must quote the DMAR fault line with the VT-d
//! fault reason each kernel prints, and `--stats` must show translations per
//! PASID for the PASIDs the guest attached.

use std::process::Command;
use std::time::Duration;

use iommu_nested::{Job, NestedMode, RunnerOptions, run_batch};
use iommu_vmm::exit::STATUS_TRIPLE_FAULT;

fn line<'a>(console: &'a str, name: &str) -> Option<&'a str> {
    let prefix = format!("IOMMUTEST {name} ");
    console.lines().find(|l| l.starts_with(&prefix))
}

/// The lines each kernel must print: (name, text the line must contain after
/// `IOMMUTEST name PASS`).
fn expected(guest: &str) -> Vec<(&'static str, &'static str)> {
    let mut v = vec![
        ("modules_load", ""),
        ("kmod_dma_map", ""),
        ("disk_read_sha", ""),
        ("payload_load", ""),
        ("kmod_scalable_mode", "RTADDR.TTM=01"),
        ("pasid_dev_present", "pasid_enabled=1"),
        ("pasid_dev_group", ""),
        ("pasid_dev_dma_api", ""),
        ("pasid_dev_msix", "MSI-X vector 0"),
    ];
    // The negative cases: device error and the kernel's DMAR line (5.10
    // prints the reason in decimal, 6.x in hex).
    let (np_fl, ro, pasid_np) = if guest == "5.10" {
        (
            "[fault reason 113]",
            "[fault reason 133]",
            "[fault reason 89]",
        )
    } else {
        (
            "[fault reason 0x71]",
            "[fault reason 0x85]",
            "[fault reason 0x59]",
        )
    };
    v.extend([
        ("pasid_neg_unmapped_iova", np_fl),
        ("pasid_neg_readonly", ro),
        ("pasid_neg_not_attached", pasid_np),
    ]);
    match guest {
        "6.1" => v.extend([
            ("unmanaged_attach", ""),
            ("unmanaged_dma", ""),
            ("sva_bind_supervisor", ""),
            ("sva_supervisor_user_request_faults", ""),
            ("sva_user_bind", ""),
            ("sva_user_dma", ""),
            ("sva_user_pri", ""),
        ]),
        _ => {
            if guest == "5.10" {
                v.push(("aux_enable", "IOMMU_DEV_FEAT_AUX"));
                v.push(("mdev_parent", "mdev_register_device"));
                v.push(("mdev_attach", "iommu_aux_get_pasid"));
                v.push(("mdev_isolation", "[fault reason 113]"));
            } else {
                v.push(("mdev_parent", "mdev_register_parent"));
                v.push(("mdev_attach", "iommu_attach_device_pasid"));
                v.push(("mdev_isolation", "[fault reason 0x79]"));
            }
            v.extend([
                ("mdev_create", "iommutest_wq"),
                ("mdev_domain_for_mdev", "iommu_get_domain_for_dev(mdev)="),
                (
                    "mdev_domain_for_parent",
                    "iommu_get_domain_for_dev(parent)=dma",
                ),
                ("mdev_dma_0", "bytes verified"),
                ("mdev_dma_1", "bytes verified"),
                ("mdev_detach_faults", pasid_np),
                ("mdev_other_after_detach", ""),
                ("mdev_remove", "2 mdevs removed"),
            ]);
        }
    }
    v
}

/// The PASIDs of mdev 0 and 1 from the mdev_attach line (5.10 prints them in
/// decimal after `iommu_aux_get_pasid = `, 6.12 after `parent, `).
fn mdev_pasids(console: &str) -> Vec<u32> {
    let Some(l) = line(console, "mdev_attach") else {
        return Vec::new();
    };
    let tail = l
        .split_once("iommu_aux_get_pasid = ")
        .or_else(|| l.split_once("iommu_attach_device_pasid(parent, "))
        .map(|(_, t)| t)
        .unwrap_or("");
    tail.split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .take(2)
        .filter_map(|w| w.parse().ok())
        .collect()
}

/// The PASID test device's bus:device.function from the pasid_dev_present
/// line (`0000:00:02.0` -> `00:02.0`).
fn device_bdf(console: &str) -> Option<String> {
    let l = line(console, "pasid_dev_present")?;
    let name = l.split_whitespace().nth(3)?;
    Some(name.strip_prefix("0000:").unwrap_or(name).to_string())
}

/// Translations `--stats` reports for requester `bdf` at `pasid` (`None`:
/// requests without PASID).
fn stats_translations(output: &str, bdf: &str, pasid: Option<u32>) -> Option<u64> {
    let tag = match pasid {
        Some(p) => format!("source {bdf} pasid {p:#x}:"),
        None => format!("source {bdf} pasid -:"),
    };
    let rest = output
        .lines()
        .find_map(|l| l.trim_start().strip_prefix(tag.as_str()))?;
    rest.split_whitespace().next()?.parse().ok()
}

#[test]
fn pasid_boot_expected_lines_cover_both_mdev_kernels() {
    // The list itself must name the mdev tests and the fault reasons per
    // kernel format, or the boot test below would check nothing new.
    let e510 = expected("5.10");
    assert!(e510.contains(&("mdev_detach_faults", "[fault reason 89]")));
    assert!(e510.iter().any(|(n, _)| *n == "aux_enable"));
    let e612 = expected("6.12");
    assert!(e612.contains(&("pasid_neg_not_attached", "[fault reason 0x59]")));
    assert!(!e612.iter().any(|(n, _)| *n == "aux_enable"));
    let c = "IOMMUTEST mdev_attach PASS mdevs a (WQ1) and b (WQ2): iommu_domain_alloc + \
             iommu_aux_attach_device(parent) + iommu_aux_get_pasid = 1 and 2 + mdev_set_iommu_device";
    assert_eq!(mdev_pasids(c), vec![1, 2]);
    let s = "  source 00:02.0 pasid 0x2: 16 translations, 1 faults, mean 83.1 cycles";
    assert_eq!(stats_translations(s, "00:02.0", Some(2)), Some(16));
    assert_eq!(stats_translations(s, "00:02.0", Some(1)), None);
    assert_eq!(stats_translations(s, "00:01.0", Some(2)), None);
    let p = "IOMMUTEST pasid_dev_present PASS 0000:00:02.0 PASID@0x100 ATS@0x108";
    assert_eq!(device_bdf(p).as_deref(), Some("00:02.0"));
}

#[test]
#[ignore = "boots three guests through the nested runner (about 4-5 min here); run with --ignored"]
fn pasid_boot_three_kernels_device_flows() {
    let bin = iommu_tests::workspace_binary("iommu-vmm", "iommu-vmm", false);
    let gi = iommu_tests::workspace_binary("guest-images", "guest-image", false);
    let guests = ["5.10", "6.1", "6.12"];
    for g in guests {
        let out = Command::new(&gi)
            .args(["build", g])
            .output()
            .expect("guest-image");
        assert!(out.status.success(), "guest-image build {g}");
    }
    // A read-only disk whose SHA-256 the guest checks, so the virtio-blk
    // and disk tests run too and no line may be SKIP.
    let dir = iommu_tests::scratch("pasid-boot-scratch", "disk");
    let disk = dir.join("disk.img");
    let data: Vec<u8> = (0u32..(1 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    std::fs::write(&disk, &data).expect("write disk");
    let sha = Command::new("sha256sum")
        .arg(&disk)
        .output()
        .expect("sha256sum");
    let sha = String::from_utf8_lossy(&sha.stdout)
        .split_whitespace()
        .next()
        .expect("sha256sum output")
        .to_string();
    let jobs: Vec<Job> = guests
        .iter()
        .map(|g| {
            Job::vmm(vec![
                "--guest".to_string(),
                g.to_string(),
                "--stats".to_string(),
                "--disk".to_string(),
                format!("{},readonly=on", disk.display()),
                "--append".to_string(),
                format!("iommutest.disk_sha={sha} iommutest.disk_len={}", data.len()),
            ])
            .retry_nested_on(STATUS_TRIPLE_FAULT)
        })
        .collect();
    let report = run_batch(
        NestedMode::Auto,
        &jobs,
        &RunnerOptions {
            vmm_binary: Some(bin),
            job_timeout: Duration::from_secs(300),
            ..RunnerOptions::default()
        },
    )
    .expect("the batch must run");
    iommu_tests::report_retries("pasid_boot", &guests, &report);
    for (g, r) in guests.iter().zip(&report.jobs) {
        eprintln!(
            "guest {g}: {:?} in {:.1} s\n{}",
            r.outcome,
            r.host_time.as_secs_f64(),
            r.console
        );
    }
    let mut failures = Vec::new();
    for (g, r) in guests.iter().zip(&report.jobs) {
        let c = &r.console;
        if r.status() != Some(0) {
            failures.push(format!("{g}: exit status {:?}", r.status()));
        }
        for l in c.lines().filter(|l| l.starts_with("IOMMUTEST ")) {
            if l.contains(" FAIL ") {
                failures.push(format!("{g}: {l}"));
            }
            if l.contains(" SKIP ")
                && !l.starts_with("IOMMUTEST iommufd_pasid SKIP kernel has no CONFIG_IOMMUFD")
            {
                failures.push(format!("{g}: SKIP: {l}"));
            }
        }
        for (name, detail) in expected(g) {
            let ok = line(c, name).is_some_and(|l| {
                l.starts_with(&format!("IOMMUTEST {name} PASS")) && l.contains(detail)
            });
            if !ok {
                failures.push(format!(
                    "{g}: {name} want PASS with {detail:?}: {:?}",
                    line(c, name)
                ));
            }
        }
        // --stats (on the job's stderr): translations per PASID, for the
        // DMA-API queue without PASID and for each attached PASID.
        let mut pasids: Vec<Option<u32>> = vec![None];
        match *g {
            "6.1" => {}
            _ => {
                let p = mdev_pasids(c);
                if p.len() != 2 {
                    failures.push(format!(
                        "{g}: no two mdev PASIDs in {:?}",
                        line(c, "mdev_attach")
                    ));
                }
                pasids.extend(p.into_iter().map(Some));
            }
        }
        let bdf = device_bdf(c).unwrap_or_default();
        for p in pasids {
            match stats_translations(&r.stderr, &bdf, p) {
                Some(n) if n > 0 => {}
                other => failures.push(format!(
                    "{g}: --stats must show translations of {bdf:?} at PASID {p:?}, got {other:?}:\n{}",
                    r.stderr
                )),
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{failures:#?}");
}
