//! Conformance: performance monitoring (VT-d 4.x chapter 12, registers
//! 11.4.13-15) driven as Linux 6.12's perfmon.c does: alloc_iommu_pmu()
//! checks ECAP.PMS, CAP.ECMDS, ECCAP word 3 (enable, disable, freeze,
//! unfreeze), PERFCAP (counters, width, groups, interrupt), reads the
//! event capabilities and the counter/config/overflow offsets; an event is
//! added by writing its config (group << 8, select << 32, INT) to the
//! counter's config register; start reads the counter and submits ECMD
//! enable (ecmd_submit_sync: ECRSP.IP clear, ECEO, ECMD, poll ECRSP);
//! pmu_enable/disable unfreeze/freeze; the count is the counter delta.

mod vtd_support;

use iommu_emulator::testing::x86_pt::{Format, X86PageTable};
use iommu_emulator::{PageSize, Pasid, PasidTag, Perm};
use vtd_model::perfmon::*;
use vtd_model::regs::{CAP, PQA, PQH, PQT};
use vtd_model::{PageRequest, PageRequestOutcome};
use vtd_support::*;

struct Pmu {
    cfg: u64,
    cntr: u64,
    stride: u64,
    width: u32,
    evcap: Vec<u64>,
}

fn ecmd(d: &Driver, cmd: u64, oa: u64) -> u64 {
    assert_eq!(d.rd64(ECRSP) & 1, 0, "ECRSP.IP");
    d.wr64(ECEO, 0);
    d.wr64(ECMD, cmd | (oa << 16));
    let r = d.rd64(ECRSP);
    assert_eq!(r & 1, 0, "command completes at once");
    (r & 0xff) >> 1
}

fn alloc_pmu(d: &Driver) -> Pmu {
    assert_ne!(d.ecap & (1 << 51), 0, "ECAP.PMS");
    assert_ne!(d.rd64(CAP) & (1 << 61), 0, "CAP.ECMDS");
    let eccap: Vec<u64> = (0..4).map(|i| d.rd64(ECCAP + 8 * i)).collect();
    let ess = (1u64 << 48) | (1 << 49) | (1 << 52) | (1 << 53);
    assert_eq!(eccap[3] & ess, ess, "ecmd_has_pmu_essential");
    let p = d.rd64(PERFCAP);
    let num_cntr = p & 0xffff;
    let num_eg = (p >> 24) & 0x1f;
    assert!(num_cntr >= 1 && num_eg >= 1);
    assert_ne!((p >> 50) & 1, 0, "pcap_interrupt");
    let evcap = (0..num_eg)
        .map(|g| d.rd64(PERFEVNTCAP + 8 * g) & 0xfff_ffff)
        .collect();
    let cfg = u64::from(d.rd32(PERFCFGOFF));
    let cntr = u64::from(d.rd32(PERFCNTROFF));
    let ovf = u64::from(d.rd32(PERFOVFOFF));
    assert!(cfg > 0 && cntr > 0 && ovf > 0);
    for i in 0..num_cntr {
        // No per-counter capabilities: every counter takes every event.
        assert_eq!(d.rd32(cfg + i * 0x100 + 0x80) & 1, 0);
    }
    Pmu {
        cfg,
        cntr,
        stride: 1 << (((p >> 52) & 7) + 10),
        width: ((p >> 16) & 0x7f) as u32,
        evcap,
    }
}

/// iommu_pmu_add + iommu_pmu_start: returns prev_count.
fn start(d: &Driver, pmu: &Pmu, idx: u64, group: u64, select: u64) -> u64 {
    assert_ne!(pmu.evcap[group as usize] & select, 0, "event advertised");
    d.wr64(pmu.cfg + idx * 0x100, (select << 32) | (group << 8) | 2);
    let prev = d.rd64(pmu.cntr + idx * pmu.stride);
    assert_eq!(ecmd(d, ECMD_ENABLE, idx), 0);
    prev
}

fn delta(d: &Driver, pmu: &Pmu, idx: u64, prev: u64) -> u64 {
    let now = d.rd64(pmu.cntr + idx * pmu.stride);
    let shift = 64 - pmu.width;
    ((now << shift).wrapping_sub(prev << shift)) >> shift
}

// 12 / Linux perf stat: lookups and hits of the IOTLB and the context
// cache move as a known DMA workload dictates (1 miss then 3 hits on one
// page); freeze stops counting, disable keeps the value.
#[test]
fn perfmon_counts_iotlb_and_context_cache_around_dma() {
    let mut d = Driver::probe("x-perfmon=on");
    let pmu = alloc_pmu(&d);
    let ram = d.ram.clone();
    let pt = X86PageTable::new(&ram, Format::SecondLevel { levels: 4 });
    pt.map(0x1000, 0x10_0000, PageSize::SIZE_4K, Perm::RW)
        .unwrap();
    let dev = rid(0, 3, 0);
    d.set_context_legacy(dev, 1, pt.root().0, 4, 0);
    d.dma(dev, 0x5000, Perm::R).unwrap_err(); // unrelated traffic before
    let p0 = start(&d, &pmu, 0, 3, 0x1); // iotlb_lookup
    let p1 = start(&d, &pmu, 1, 3, 0x2); // iotlb_hit
    let p2 = start(&d, &pmu, 2, 2, 0x3); // ctxt_cache_lookup + hit
    assert_eq!(ecmd(&d, ECMD_UNFREEZE, 0), 0);
    for a in [0x1000, 0x1008, 0x1010, 0x1ff8] {
        d.dma(dev, a, Perm::R).unwrap();
    }
    assert_eq!(ecmd(&d, ECMD_FREEZE, 0), 0);
    d.dma(dev, 0x1000, Perm::R).unwrap(); // frozen: not counted
    assert_eq!(delta(&d, &pmu, 0, p0), 4, "iotlb lookups");
    assert_eq!(delta(&d, &pmu, 1, p1), 3, "iotlb hits");
    // context: 4 lookups + 4 hits (cached since the earlier fault).
    assert_eq!(delta(&d, &pmu, 2, p2), 8);
    assert_eq!(ecmd(&d, ECMD_UNFREEZE, 0), 0);
    d.dma(dev, 0x1000, Perm::R).unwrap();
    assert_eq!(ecmd(&d, ECMD_DISABLE, 1), 0);
    d.dma(dev, 0x1000, Perm::R).unwrap();
    assert_eq!(delta(&d, &pmu, 0, p0), 6);
    assert_eq!(
        delta(&d, &pmu, 1, p1),
        4,
        "disabled counter keeps its value"
    );
    // Unknown enhanced command: failure status, nothing changes.
    assert_ne!(ecmd(&d, 0x33, 0), 0);
}

// 11.4.3: without x-perfmon, PMS/ECMDS are clear and the registers read 0.
#[test]
fn perfmon_absent_by_default() {
    let d = Driver::probe("");
    assert_eq!(d.ecap & (1 << 51), 0);
    assert_eq!(d.rd64(PERFCAP), 0);
    assert_eq!(d.rd64(CAP) & (1 << 61), 0);
}

// 12 + 7.5.1 / Linux perf stat around SVA traffic (the 6.1 guest's path):
// requests with a PASID through a first-level PASID entry count a PASID-cache
// lookup each (pasid_cache_lookup, group 2 bit 2) and walk first-level
// non-leaf entries on the IOTLB miss (fs_nonleaf_lookup, group 2 bit 6);
// every page request queued in the page request queue counts once in
// pg_req_posted (group 1 bit 6), a request refused with a fault does not.
#[test]
fn perfmon_counts_pasid_cache_first_level_walks_and_page_requests() {
    let mut d = Driver::probe(
        "x-scalable-mode=on,aw-bits=48,x-pasid-mode=on,x-prs=on,device-iotlb=on,x-perfmon=on",
    );
    let pmu = alloc_pmu(&d);
    let ram = d.ram.clone();
    let pt = X86PageTable::new(&ram, Format::FirstLevel { levels: 4 });
    pt.map(0x7000, 0x20_0000, PageSize::SIZE_4K, Perm::RW)
        .unwrap();
    let dev = rid(0, 3, 0);
    // Scalable context entry with PASIDE, DTE and PRE (what Linux sets for PRI).
    let dir = d.set_context_sm(dev, (1 << 3) | (1 << 2) | (1 << 4));
    d.flush_context_global();
    d.set_pasid_entry(dir, 5, pasid_fl(3, pt.root().0, false));
    // intel_svm_enable_prq: PQH = PQT = 0, PQA with order 0.
    let prq = d.alloc(1);
    d.wr64(PQH, 0);
    d.wr64(PQT, 0);
    d.wr64(PQA, prq);
    let p0 = start(&d, &pmu, 0, 2, 0x4); // pasid_cache_lookup
    let p1 = start(&d, &pmu, 1, 2, 0x40); // fs_nonleaf_lookup
    let p2 = start(&d, &pmu, 2, 1, 0x40); // pg_req_posted
    assert_eq!(ecmd(&d, ECMD_UNFREEZE, 0), 0);
    for a in [0x7000, 0x7008] {
        d.dma_pasid(dev, 5, false, a, Perm::R).unwrap();
    }
    // A page the tables do not map: the translation faults, the device asks
    // for it with page requests (one per untouched page).
    d.dma_pasid(dev, 5, false, 0x9000, Perm::W).unwrap_err();
    let tag = PasidTag {
        pasid: Pasid::new(5).unwrap(),
        privileged: false,
        exec: false,
    };
    for (i, a) in [0x9000u64, 0xa000, 0xb000].into_iter().enumerate() {
        let req = PageRequest {
            rid: dev,
            pasid: Some(tag),
            addr: a,
            read: false,
            write: true,
            lpig: true,
            prg_index: i as u16,
            private_data: None,
        };
        assert_eq!(
            d.vtd.page_request(ram.as_ref(), &req),
            PageRequestOutcome::Queued
        );
    }
    assert_eq!(ecmd(&d, ECMD_FREEZE, 0), 0);
    assert_eq!(d.rd64(PQT), 3 * 32, "three descriptors queued");
    assert_eq!(
        delta(&d, &pmu, 0, p0),
        3,
        "one PASID-cache lookup per request"
    );
    assert!(delta(&d, &pmu, 1, p1) >= 1, "first-level walk on the miss");
    assert_eq!(delta(&d, &pmu, 2, p2), 3, "page requests posted");
}
