//! The payload over a matrix of IOMMU configurations (issue 14, item 3): `iommu-vmm --guest
//! 6.1` with the PASID test device under no IOMMU, VT-d in legacy mode (strict and
//! pass-through), in scalable mode with second-level and first-level tables, without page
//! requests and ATS, with 5-level tables (`aw-bits=57`) and with a 5-bit PASID space, and the
//! newest Debian kernel (`--guest latest`, 7.3) with `--guest`'s defaults, all in one
//! batch of the nested runner (one L1 boot unless it has to retry; directly on hardware KVM).
//!
//! For each configuration the table below names EXACTLY which payload tests PASS and which
//! SKIP: a name missing, extra or in the wrong set fails, as does any FAIL line, a summary
//! other than `fail=0`, or a non-zero exit. A SKIP must give its reason, and the SKIPs that
//! the configured hardware causes must name the property that enables the test (checked by
//! substring). `--stats` is checked per configuration too (which VT-d tables were walked),
//! as `boot_linux` does for its disk modes.
//!
//! The guests are quiet (`--guest`'s default command line) and use the built-in 1 MiB disk
//! whose checksum the payload verifies, so each run is one 6.1 boot with its payload (11-20 s
//! under the nested runner here).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use iommu_nested::{Job, NestedMode, RunnerOptions, run_batch};
use iommu_tests::vtd_stats::{self, VtdStats};
use iommu_vmm::exit::STATUS_TRIPLE_FAULT;

/// One configuration of the matrix.
struct Config {
    name: &'static str,
    guest: &'static str,
    /// `--iommu` ("": `--guest`'s default for the kernel).
    iommu: &'static str,
    /// More guest kernel parameters (after `--guest`'s defaults).
    append: &'static str,
    /// The tests that must PASS, as slices to concatenate.
    pass: &'static [&'static [&'static str]],
    /// The tests that must SKIP.
    skip: &'static [&'static str],
    /// (SKIP test, text its reason must contain).
    reasons: &'static [(&'static str, &'static str)],
    /// Check of the `--stats` report.
    stats: fn(&VtdStats) -> Result<(), String>,
}

/// Every 6.1 run: boot, payload, disk, the kernel-side basics.
const BASE: &[&str] = &[
    "modules_load",
    "payload_load",
    "kmod_api",
    "kmod_dma_map",
    "disk_read_sha",
    "pasid_dev_present",
    "pasid_dev_dma_api",
    "pasid_dev_msix",
];
/// With a VT-d unit translating.
const VTD: &[&str] = &[
    "iommu_present",
    "iommu_groups",
    "virtio_blk_group",
    "kmod_translation_enabled",
    "kmod_dev_iommu_mapped",
    "kmod_iommu_group",
    "kmod_default_domain",
    "pasid_dev_group",
];
/// Scalable mode: the RID-level unmanaged domain and the PASID negative cases (6.1).
const SCALABLE: &[&str] = &[
    "kmod_scalable_mode",
    "pasid_neg_unmapped_iova",
    "unmanaged_attach",
    "unmanaged_dma",
    "pasid_neg_readonly",
    "pasid_neg_not_attached",
];
/// Shared virtual addressing (6.1: supervisor PASID and a user process with page requests).
const SVA: &[&str] = &[
    "sva_bind_supervisor",
    "sva_supervisor_user_request_faults",
    "sva_user_bind",
    "sva_user_dma",
    "sva_user_pri",
    "sva_user_unbind",
];

/// The 6.12+ mdev flow: two mdevs, each a work queue with a paging domain attached at a PASID.
const MDEV: &[&str] = &[
    "kmod_scalable_mode",
    "pasid_neg_unmapped_iova",
    "pasid_neg_readonly",
    "pasid_neg_not_attached",
    "mdev_parent",
    "mdev_create",
    "mdev_attach",
    "mdev_domain_for_mdev",
    "mdev_domain_for_parent",
    "mdev_dma_0",
    "mdev_dma_1",
    "mdev_isolation",
    "mdev_detach_faults",
    "mdev_other_after_detach",
    "mdev_remove",
];
/// The dmar PMU around a DMA workload (6.3+, `x-perfmon=on`: `--guest`'s default there).
const PERF: &[&str] = &[
    "perf_dmar_pmu",
    "perf_iotlb",
    "perf_caches",
    "perf_quiet_events",
];

/// The iommufd test SKIPs on every Debian kernel (none sets CONFIG_IOMMUFD).
const IOMMUFD: (&str, &str) = ("iommufd_pasid", "kernel has no CONFIG_IOMMUFD");
const PRS_ATS: &str = "needs ECAP.PRS and ATS (ECAP.DT): --iommu ...,device-iotlb=on,x-prs=on";

const CONFIGS: &[Config] = &[
    Config {
        name: "none",
        guest: "6.1",
        iommu: "none",
        append: "",
        pass: &[BASE],
        skip: &[
            "iommu_present",
            "iommu_groups",
            "virtio_blk_group",
            "kmod_translation_enabled",
            "kmod_scalable_mode",
            "kmod_dev_iommu_mapped",
            "kmod_iommu_group",
            "kmod_default_domain",
            "pasid_dev_group",
            "pasid_neg_unmapped_iova",
            "iommufd_pasid",
            "pasid_flows",
            "sva_user",
        ],
        reasons: &[
            ("iommu_present", "--iommu intel-iommu"),
            ("kmod_dev_iommu_mapped", "--iommu intel-iommu"),
            ("pasid_dev_group", "--iommu intel-iommu"),
            ("pasid_neg_unmapped_iova", "--iommu intel-iommu"),
            ("pasid_flows", "x-scalable-mode=on"),
            ("sva_user", "device-iotlb=on,x-prs=on"),
            IOMMUFD,
        ],
        stats: vtd_stats::none,
    },
    Config {
        name: "legacy-strict",
        guest: "6.1",
        iommu: "intel-iommu",
        append: "",
        pass: &[BASE, VTD, &["pasid_neg_unmapped_iova"]],
        skip: &[
            "kmod_scalable_mode",
            "iommufd_pasid",
            "pasid_flows",
            "sva_user",
        ],
        reasons: &[
            ("kmod_scalable_mode", "x-scalable-mode=on"),
            ("pasid_flows", "x-scalable-mode=on"),
            ("sva_user", "x-scalable-mode=on"),
            IOMMUFD,
        ],
        stats: vtd_stats::legacy,
    },
    Config {
        name: "legacy-pt",
        guest: "6.1",
        iommu: "intel-iommu",
        append: "iommu=pt",
        pass: &[BASE, VTD],
        skip: &[
            "kmod_scalable_mode",
            "pasid_neg_unmapped_iova",
            "iommufd_pasid",
            "pasid_flows",
            "sva_user",
        ],
        reasons: &[
            ("kmod_scalable_mode", "x-scalable-mode=on"),
            ("pasid_neg_unmapped_iova", "identity (pass-through"),
            ("pasid_flows", "x-scalable-mode=on"),
            IOMMUFD,
        ],
        stats: vtd_stats::passthrough,
    },
    Config {
        name: "scalable-sl",
        guest: "6.1",
        iommu: "intel-iommu,x-scalable-mode=on,x-flts=off,device-iotlb=on,x-prs=on",
        append: "",
        pass: &[BASE, VTD, SCALABLE],
        skip: &["iommufd_pasid", "sva_bind_supervisor", "sva_user"],
        reasons: &[
            ("sva_bind_supervisor", "x-flts=on"),
            ("sva_user", "x-flts=on"),
            IOMMUFD,
        ],
        stats: vtd_stats::scalable_sl,
    },
    Config {
        name: "scalable-fl",
        guest: "6.1",
        iommu: "intel-iommu,x-scalable-mode=on,device-iotlb=on,x-prs=on",
        append: "",
        pass: &[BASE, VTD, SCALABLE, SVA],
        skip: &["iommufd_pasid"],
        reasons: &[IOMMUFD],
        stats: vtd_stats::scalable_fl,
    },
    Config {
        name: "scalable-no-prs-ats",
        guest: "6.1",
        iommu: "intel-iommu,x-scalable-mode=on",
        append: "",
        pass: &[BASE, VTD, SCALABLE],
        skip: &["iommufd_pasid", "sva_bind_supervisor", "sva_user"],
        reasons: &[
            ("sva_bind_supervisor", PRS_ATS),
            ("sva_user", PRS_ATS),
            IOMMUFD,
        ],
        stats: vtd_stats::scalable_fl,
    },
    Config {
        name: "5-level",
        guest: "6.1",
        iommu: "intel-iommu,x-scalable-mode=on,aw-bits=57,device-iotlb=on,x-prs=on",
        append: "",
        pass: &[BASE, VTD, SCALABLE, SVA],
        skip: &["iommufd_pasid"],
        reasons: &[IOMMUFD],
        stats: vtd_stats::scalable_fl,
    },
    Config {
        name: "pasid-5-bits",
        guest: "6.1",
        iommu: "intel-iommu,x-scalable-mode=on,pasid-bits=5,device-iotlb=on,x-prs=on",
        append: "",
        pass: &[BASE, VTD, SCALABLE, SVA],
        skip: &["iommufd_pasid"],
        reasons: &[IOMMUFD],
        stats: vtd_stats::scalable_fl,
    },
    Config {
        name: "latest-default",
        guest: "latest",
        iommu: "",
        append: "",
        pass: &[BASE, VTD, MDEV, PERF],
        skip: &["iommufd_pasid"],
        reasons: &[IOMMUFD],
        stats: vtd_stats::scalable_fl,
    },
];

/// `IOMMUTEST <name> <result> <detail>` lines of a console: name -> (result, detail), and
/// the names seen more than once.
fn results(console: &str) -> (BTreeMap<String, (String, String)>, Vec<String>) {
    let mut m = BTreeMap::new();
    let mut dup = Vec::new();
    for l in console.lines() {
        let l = l.trim_end_matches('\r');
        let Some(i) = l.find("IOMMUTEST ") else {
            continue;
        };
        let mut w = l[i + "IOMMUTEST ".len()..].splitn(3, ' ');
        let (Some(name), Some(result)) = (w.next(), w.next()) else {
            continue;
        };
        let detail = w.next().unwrap_or("").trim().to_string();
        if m.insert(name.to_string(), (result.to_string(), detail))
            .is_some()
        {
            dup.push(name.to_string());
        }
    }
    (m, dup)
}

/// Every mismatch between what `c` expects and what its console shows.
fn check(c: &Config, console: &str) -> Vec<String> {
    let mut bad = Vec::new();
    let (got, dup) = results(console);
    for d in dup {
        bad.push(format!("{d} reported more than once"));
    }
    let want_pass: Vec<&str> = c.pass.iter().flat_map(|s| s.iter().copied()).collect();
    for (name, (result, detail)) in &got {
        let want = if want_pass.contains(&name.as_str()) {
            "PASS"
        } else if c.skip.contains(&name.as_str()) {
            "SKIP"
        } else {
            bad.push(format!("unexpected test {name}: {result} {detail}"));
            continue;
        };
        if result != want {
            bad.push(format!("{name}: want {want}, got {result} {detail}"));
        }
        if result == "SKIP" && detail.is_empty() {
            bad.push(format!("{name}: SKIP without a reason"));
        }
    }
    for name in want_pass.iter().chain(c.skip) {
        if !got.contains_key(*name) {
            bad.push(format!("{name}: no line"));
        }
    }
    for (name, text) in c.reasons {
        match got.get(*name) {
            Some((r, d)) if r == "SKIP" && d.contains(text) => {}
            other => bad.push(format!("{name}: want SKIP with {text:?}, got {other:?}")),
        }
    }
    let (p, s) = (want_pass.len(), c.skip.len());
    let summary = format!("IOMMUTEST-SUMMARY pass={p} fail=0 skip={s}");
    if !console.contains(&summary) {
        bad.push(format!("no `{summary}` line"));
    }
    bad
}

#[test]
fn boot_matrix_tables_are_consistent_and_the_checker_can_fail() {
    for c in CONFIGS {
        let pass: Vec<&str> = c.pass.iter().flat_map(|s| s.iter().copied()).collect();
        for s in c.skip {
            assert!(!pass.contains(s), "{}: {s} in both sets", c.name);
        }
        for (n, _) in c.reasons {
            assert!(c.skip.contains(n), "{}: reason for {n}, not a SKIP", c.name);
        }
    }
    // A console that matches "scalable-fl" exactly, then one test missing, one FAIL and an
    // extra line: each must be caught.
    let c = CONFIGS.iter().find(|c| c.name == "scalable-fl").unwrap();
    let pass: Vec<&str> = c.pass.iter().flat_map(|s| s.iter().copied()).collect();
    let mut lines: Vec<String> = pass
        .iter()
        .map(|n| format!("IOMMUTEST {n} PASS ok"))
        .collect();
    lines.push(format!("IOMMUTEST {} SKIP {}", IOMMUFD.0, IOMMUFD.1));
    lines.push(format!(
        "IOMMUTEST-SUMMARY pass={} fail=0 skip=1",
        pass.len()
    ));
    let good = lines.join("\n");
    assert_eq!(check(c, &good), Vec::<String>::new());
    let missing = good.replace("IOMMUTEST sva_user_pri PASS ok\n", "");
    assert!(
        check(c, &missing)
            .iter()
            .any(|e| e.contains("sva_user_pri: no line"))
    );
    let failed = good.replace("sva_user_pri PASS", "sva_user_pri FAIL");
    assert!(check(c, &failed).iter().any(|e| e.contains("want PASS")));
    let extra = format!("{good}\nIOMMUTEST surprise SKIP why");
    assert!(
        check(c, &extra)
            .iter()
            .any(|e| e.contains("unexpected test surprise"))
    );
    let quiet_skip = good.replace(IOMMUFD.1, "");
    assert!(!check(c, &quiet_skip).is_empty());
}

#[test]
fn boot_matrix_payload_pass_and_skip_sets_per_iommu_configuration() {
    let t0 = Instant::now();
    let cache = guest_images::cache::Cache::from_env().expect("guest image cache");
    let manifest = guest_images::manifest::Manifest::embedded().expect("embedded manifest");
    let builder = guest_images::image::Builder::new(
        cache,
        manifest,
        guest_images::image::BuildOptions {
            quiet: true,
            ..Default::default()
        },
    );
    let mut guests: Vec<&str> = CONFIGS.iter().map(|c| c.guest).collect();
    guests.sort_unstable();
    guests.dedup();
    for g in &guests {
        builder
            .build_debian(g)
            .unwrap_or_else(|e| panic!("the {g} guest image must build: {e}"));
    }
    let vmm = iommu_tests::release_vmm_binary();
    let jobs: Vec<Job> = CONFIGS
        .iter()
        .map(|c| {
            let mut args = vec!["--guest", c.guest, "--stats"];
            if !c.iommu.is_empty() {
                args.extend(["--iommu", c.iommu]);
            }
            if !c.append.is_empty() {
                args.extend(["--append", c.append]);
            }
            Job::vmm(args).retry_nested_on(STATUS_TRIPLE_FAULT)
        })
        .collect();
    let opts = RunnerOptions {
        vmm_binary: Some(vmm),
        job_timeout: Duration::from_secs(300),
        // L1 freezes and crashes happen (vmm/nested/README.md): retry up to four.
        attempts: 5,
        idle_timeout: Some(Duration::from_secs(150)),
        ..RunnerOptions::default()
    };
    let report = run_batch(NestedMode::Auto, &jobs, &opts).expect("the matrix must run");
    assert_eq!(
        report.jobs.len(),
        CONFIGS.len(),
        "one result per configuration"
    );
    let names: Vec<&str> = CONFIGS.iter().map(|c| c.name).collect();
    iommu_tests::report_retries("boot_matrix", &names, &report);

    let mut failures = Vec::new();
    let mut table = Vec::new();
    for (c, job) in CONFIGS.iter().zip(&report.jobs) {
        let (got, _) = results(&job.console);
        let count = |r: &str| got.values().filter(|(x, _)| x == r).count();
        table.push(format!(
            "{:<20} {:<5} pass {:>2} skip {:>2} fail {:>2}  {:>6.1} s  {:?}",
            c.name,
            c.guest,
            count("PASS"),
            count("SKIP"),
            count("FAIL"),
            job.host_time.as_secs_f64(),
            job.outcome
        ));
        for (name, (r, d)) in &got {
            if r == "SKIP" {
                table.push(format!("      {name} SKIP {d}"));
            }
        }
        let mut bad = check(c, &job.console);
        if job.status() != Some(0) {
            bad.push(format!("exit status {:?}", job.outcome));
        }
        if let Err(e) = (c.stats)(&VtdStats::parse(&job.stderr)) {
            bad.push(format!("--stats: {e}"));
        }
        if !bad.is_empty() {
            failures.push(format!(
                "{} (--guest {} --iommu {} {}):\n  {}\nconsole:\n{}\nstderr:\n{}",
                c.name,
                c.guest,
                c.iommu,
                c.append,
                bad.join("\n  "),
                job.console,
                job.stderr
            ));
        }
    }
    eprintln!(
        "boot_matrix: {} configurations in {:.1} s ({} L1 boot(s)):",
        CONFIGS.len(),
        t0.elapsed().as_secs_f64(),
        report.boots.len()
    );
    for row in &table {
        eprintln!("  {row}");
    }
    assert!(
        failures.is_empty(),
        "boot matrix failures:\n{}",
        failures.join("\n\n")
    );
}
