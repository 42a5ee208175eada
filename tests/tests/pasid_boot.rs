//! Boot tests of the PASID test device: Debian 5.10, 6.1 and 6.12 in one L1
//! boot of the nested runner (or directly with hardware KVM), each with
//! `--device pasid-test --stats`, asserting every payload line of the
//! device's tests (guest-images/payload/kmod/iommutest.c, test_pasid_device).

use std::process::Command;
use std::time::Duration;

use iommu_vmm::nested::{Job, NestedMode, RunnerOptions, run_batch};

fn line<'a>(console: &'a str, name: &str) -> Option<&'a str> {
    let prefix = format!("IOMMUTEST {name} ");
    console.lines().find(|l| l.starts_with(&prefix))
}

fn assert_result(guest: &str, console: &str, name: &str, want: &str) {
    let l = line(console, name)
        .unwrap_or_else(|| panic!("guest {guest}: no line for {name}:\n{console}"));
    assert!(
        l.starts_with(&format!("IOMMUTEST {name} {want}")),
        "guest {guest}: {l}"
    );
}

#[test]
#[ignore = "boots three guests through the nested runner (about 3-4 min here); run with --ignored"]
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
                ["--guest", g, "--device", "pasid-test", "--stats"]
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
        let mut expect: Vec<(&str, &str)> = vec![
            ("pasid_dev_present", "PASS"),
            ("pasid_dev_group", "PASS"),
            ("pasid_dev_dma_api", "PASS"),
            ("pasid_neg_unmapped_iova", "PASS"),
            ("pasid_neg_readonly", "PASS"),
            ("pasid_neg_not_attached", "PASS"),
        ];
        match *g {
            "6.12" => expect.extend([
                ("pasid_attach", "PASS"),
                ("pasid_dma_0", "PASS"),
                ("pasid_dma_1", "PASS"),
                ("pasid_isolation", "PASS"),
                ("pasid_detach_faults", "PASS"),
                ("pasid_mdev", "SKIP"),
            ]),
            "6.1" => expect.extend([
                ("unmanaged_attach", "PASS"),
                ("unmanaged_dma", "PASS"),
                ("sva_bind_supervisor", "PASS"),
            ]),
            _ => expect.extend([
                ("aux_enable", "PASS"),
                ("aux_attach", "PASS"),
                ("aux_domain_for_parent", "PASS"),
                ("aux_dma_0", "PASS"),
                ("aux_dma_1", "PASS"),
                ("pasid_isolation", "PASS"),
                ("pasid_detach_faults", "PASS"),
                ("aux_mdev", "SKIP"),
            ]),
        }
        for (name, want) in expect {
            let ok =
                line(c, name).is_some_and(|l| l.starts_with(&format!("IOMMUTEST {name} {want}")));
            if !ok {
                failures.push(format!("{g}: {name} want {want}: {:?}", line(c, name)));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    let _ = assert_result;
}
