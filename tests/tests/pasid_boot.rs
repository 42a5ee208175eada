//! Boot tests of the PASID test device: Debian 5.10, 6.1 and 6.12 in one L1
//! boot of the nested runner (or directly with hardware KVM), each run as
//! `iommu-vmm --guest NAME --stats` (the device and the scalable-mode IOMMU
//! are `--guest`'s defaults). Every expected payload line is asserted by
//! name and result (guest-images/payload/README.md, "PASID test device
//! tests"), the negative tests must quote the DMAR fault line with the VT-d
//! fault reason each kernel prints, and `--stats` must show translations per
//! PASID for the PASIDs the guest attached.

use std::process::Command;
use std::time::Duration;

use iommu_vmm::nested::{Job, NestedMode, RunnerOptions, run_batch};

fn line<'a>(console: &'a str, name: &str) -> Option<&'a str> {
    let prefix = format!("IOMMUTEST {name} ");
    console.lines().find(|l| l.starts_with(&prefix))
}

/// The lines each kernel must print: (name, text the line must contain after
/// `IOMMUTEST name PASS`).
fn expected(guest: &str) -> Vec<(&'static str, &'static str)> {
    let mut v = vec![
        ("modules_load", ""),
        ("payload_load", ""),
        ("kmod_scalable_mode", "RTADDR.TTM=01"),
        ("pasid_dev_present", "pasid_enabled=1"),
        ("pasid_dev_group", ""),
        ("pasid_dev_dma_api", ""),
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

/// Translations `--stats` reports for the PASID test device (00:01.0) at
/// `pasid` (`None`: requests without PASID).
fn stats_translations(output: &str, pasid: Option<u32>) -> Option<u64> {
    let tag = match pasid {
        Some(p) => format!("source 00:01.0 pasid {p:#x}:"),
        None => "source 00:01.0 pasid -:".to_string(),
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
    let s = "  source 00:01.0 pasid 0x2: 16 translations, 1 faults, mean 83.1 cycles";
    assert_eq!(stats_translations(s, Some(2)), Some(16));
    assert_eq!(stats_translations(s, Some(1)), None);
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
    let jobs: Vec<Job> = guests
        .iter()
        .map(|g| {
            Job::vmm(
                ["--guest", g, "--stats"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<String>>(),
            )
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
            // SKIP only for the disk tests of a run without a disk.
            if l.contains(" SKIP ") && !l.contains("virtio-blk") && !l.contains("vda") {
                failures.push(format!("{g}: unexpected SKIP: {l}"));
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
        for p in pasids {
            match stats_translations(&r.stderr, p) {
                Some(n) if n > 0 => {}
                other => failures.push(format!(
                    "{g}: --stats must show translations of 00:01.0 at PASID {p:?}, got {other:?}"
                )),
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
