//! Boot test of shared virtual addressing (Debian 6.1) and of the VT-d performance counters
//! through Linux's dmar PMU (Debian 6.12): both guests with `--device pasid-test` in one L1
//! boot of the nested runner (or directly with hardware KVM). `--guest` gives the PASID test
//! device ATS and page requests (`device-iotlb=on,x-prs=on`) and 6.12 `x-perfmon=on`.
//!
//! Asserts each payload line by name (guest-images/payload/kmod/sva.c, progs/sva_user.c,
//! progs/perfcount.c) and the figures inside them: one page request and one page group
//! response per untouched user page, the dmar page request interrupt counted, and the IOTLB
//! lookups of the known DMA workload.

use std::process::Command;
use std::time::Duration;

use iommu_nested::{Job, NestedMode, RunnerOptions, run_batch};
use iommu_vmm::exit::STATUS_TRIPLE_FAULT;

fn line<'a>(console: &'a str, name: &str) -> Option<&'a str> {
    let prefix = format!("IOMMUTEST {name} ");
    console.lines().find(|l| l.starts_with(&prefix))
}

/// The number after `key` (`key=123` or `key 123`) in a payload line.
fn number_after(l: &str, key: &str) -> Option<u64> {
    let rest = &l[l.find(key)? + key.len()..];
    let digits: String = rest
        .trim_start_matches(['=', ' '])
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The first number of the detail, and the numbers around "->" (`a -> b`).
fn first_number(l: &str, from: &str) -> Option<u64> {
    let rest = &l[l.find(from)? + from.len()..];
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[test]
#[ignore = "boots two guests through the nested runner (about 2-3 min here); run with --ignored"]
fn sva_perf_boot_61_sva_with_page_requests_and_612_dmar_pmu() {
    let bin = iommu_tests::workspace_binary("iommu-vmm", "iommu-vmm", false);
    let gi = iommu_tests::workspace_binary("guest-images", "guest-image", false);
    let guests = ["6.1", "6.12"];
    for g in guests {
        let out = Command::new(&gi)
            .args(["build", g])
            .output()
            .expect("guest-image");
        assert!(
            out.status.success(),
            "guest-image build {g}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let jobs: Vec<Job> = guests
        .iter()
        .map(|g| {
            Job::vmm(["--guest", g, "--device", "pasid-test", "--stats"])
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
    iommu_tests::report_retries("sva_perf_boot", &guests, &report);
    for (g, r) in guests.iter().zip(&report.jobs) {
        eprintln!(
            "guest {g}: {:?} in {:.1} s\n{}",
            r.outcome,
            r.host_time.as_secs_f64(),
            r.console
        );
    }
    let mut failures = Vec::new();
    let mut want = |g: &str, c: &str, name: &str, result: &str| -> Option<String> {
        match line(c, name) {
            Some(l) if l.starts_with(&format!("IOMMUTEST {name} {result}")) => Some(l.to_string()),
            other => {
                failures.push(format!("{g}: {name} want {result}: {other:?}"));
                None
            }
        }
    };

    let c61 = &report.jobs[0].console;
    assert!(
        c61.contains("IOMMUTEST-SUMMARY"),
        "6.1 did not reach the payload summary"
    );
    want("6.1", c61, "sva_bind_supervisor", "PASS");
    want("6.1", c61, "sva_supervisor_user_request_faults", "PASS");
    want("6.1", c61, "sva_user_bind", "PASS");
    want("6.1", c61, "sva_user_dma", "PASS");
    let pri = want("6.1", c61, "sva_user_pri", "PASS");
    want("6.1", c61, "sva_user_unbind", "PASS");
    let sva_skip = line(c61, "sva_bind").map(str::to_string);

    let c612 = &report.jobs[1].console;
    assert!(
        c612.contains("IOMMUTEST-SUMMARY"),
        "6.12 did not reach the payload summary"
    );
    let pmu = want("6.12", c612, "perf_dmar_pmu", "PASS");
    let iotlb = want("6.12", c612, "perf_iotlb", "PASS");
    let caches = want("6.12", c612, "perf_caches", "PASS");
    want("6.12", c612, "perf_quiet_events", "PASS");
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(sva_skip, None, "the old sva_bind SKIP line is gone");

    // 36 untouched pages (64 KiB filled, 64 KiB copied into, 16 KiB compared): a page request
    // each, each answered, and the dmar page request interrupt moved.
    let pri = pri.unwrap_or_default();
    let requests = first_number(&pri, "PASS").expect("page request count");
    let responses = number_after(&pri, "pages,").expect("response count");
    assert!(requests >= 36, "{pri}");
    assert_eq!(requests, responses, "{pri}");
    let irq_before = number_after(&pri, "prq interrupts").expect("irq count");
    let irq_after = number_after(&pri, "->").expect("irq count after");
    assert!(irq_after > irq_before, "{pri}");

    // The workload: 64 rounds of 11 translated accesses, two fresh IOVAs per round.
    let pmu = pmu.unwrap_or_default();
    for ev in [
        "iotlb_lookup",
        "iotlb_hit",
        "iommu_requests",
        "pg_req_posted",
    ] {
        assert!(pmu.contains(ev), "event {ev} exported: {pmu}");
    }
    let iotlb = iotlb.unwrap_or_default();
    let lookups = number_after(&iotlb, "iotlb_lookup").expect("iotlb_lookup");
    let hits = number_after(&iotlb, "iotlb_hit").expect("iotlb_hit");
    assert!(lookups >= 704, "{iotlb}");
    assert!(hits < lookups && lookups - hits >= 128, "{iotlb}");
    let caches = caches.unwrap_or_default();
    assert!(
        number_after(&caches, "ctxt_cache_lookup").expect("ctxt") >= 64,
        "{caches}"
    );
}

#[test]
fn sva_perf_boot_line_parsing_reads_the_payload_format() {
    let l = "IOMMUTEST sva_user_pri PASS 36 page requests for 36 untouched pages, 36 page group responses, prq interrupts 0 -> 36";
    assert_eq!(first_number(l, "PASS"), Some(36));
    assert_eq!(number_after(l, "pages,"), Some(36));
    assert_eq!(number_after(l, "prq interrupts"), Some(0));
    assert_eq!(number_after(l, "->"), Some(36));
    let l = "IOMMUTEST perf_iotlb PASS 64 rounds (>= 704 accesses): iotlb_lookup=704 iotlb_hit=574 (misses 130)";
    assert_eq!(number_after(l, "iotlb_lookup"), Some(704));
    assert_eq!(number_after(l, "iotlb_hit"), Some(574));
    assert_eq!(number_after(l, "nothing"), None);
}
