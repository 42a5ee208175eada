//! Conformance: the VT-d model in scalable mode (RTADDR.TTM=01) driven as
//! Linux 6.1+ drives it: scalable root/context entries, PASID directory
//! and table, PGTT first-level (DMA-API domains), second-level (unmanaged
//! domains), pass-through and nested, requests with and without PASID,
//! 256-bit queued invalidation with PASID-based descriptors.

mod vtd_support;

use std::sync::{Arc, Mutex};

use iommu_emulator::SourceId;
use iommu_emulator::endpoint::{AtcInvalidation, EndpointPort, PageResponse};
use iommu_emulator::testing::x86_pt::{Format, X86PageTable};
use iommu_emulator::walk::x86::fl;
use iommu_emulator::{CachePath, FaultKind, Gpa, GuestRam, PageSize, Perm};
use vtd_model::regs::*;
use vtd_support::*;

const SM: &str = "x-scalable-mode=on,aw-bits=48";
const PASIDE: u64 = 1 << 3;
const DTE: u64 = 1 << 2;

// VT-d 11.4.3 + Linux 6.1 probe in scalable mode: 256-bit descriptors
// (IQA.DW, QS=1), SMT in RTADDR, PASID-cache flush during root setup.
#[test]
fn scalable_probe_uses_256bit_queue_and_smt_root() {
    let d = Driver::probe(SM);
    assert!(d.sm && d.dw);
    for (bit, name) in [
        (1, "QI"),
        (6, "PT"),
        (31, "SRS"),
        (40, "PASID"),
        (43, "SMTS"),
        (46, "SLTS"),
        (47, "FLTS"),
        (48, "SMPWC"),
    ] {
        assert_ne!(d.ecap & (1 << bit), 0, "ECAP.{name}");
    }
    assert_eq!((d.ecap >> 35) & 0x1f, 19, "PSS");
    assert_eq!(d.rd64(RTADDR), d.root | (1 << 10));
    assert_eq!(d.rd64(IQA), d.qi_base | IQA_DW | 1);
    // context + wait, pasid-cache + wait, iotlb + wait: six 32-byte descriptors.
    assert_eq!(d.rd64(IQT), 6 * 32);
    assert_eq!(d.rd64(IQH), 6 * 32);
    assert_eq!(d.vtd.stats().invalidations_of("pasid-cache"), 1);
    assert_eq!(d.rd32(0x00), 0x30);
}

// VT-d 3.6 + Linux 6.1 DMA-API domain: first-level table for RID_PASID,
// A/D set by the walk, unmap + PASID-based IOTLB invalidation, stale DMA
// faults with 0x71 and the record carries no PASID.
// 6.5.2 / 11.4.9.3: the invalidation queue wraps at its size (2^QS
// pages: 256 entries of 256 bits with QS=1); submissions that run over the
// end keep completing.
#[test]
fn scalable_invalidation_queue_wraps_after_its_size() {
    let mut d = Driver::probe(SM);
    assert!(d.dw);
    for _ in 0..300 {
        d.flush_iotlb_global();
    }
    assert_ne!(d.rd64(IQH), 0, "the queue moved");
    assert_eq!(u64::from(d.rd32(FSTS)) & FSTS_IQE, 0);
}

#[test]
fn scalable_first_level_rid_pasid_cycle() {
    let mut d = Driver::probe(SM);
    let dev = rid(0, 2, 0);
    let ram = d.ram.clone();
    let pt = X86PageTable::new(&ram, Format::FirstLevel { levels: 4 });
    let dir = d.set_context_sm(dev, PASIDE);
    d.set_pasid_entry(dir, 0, pasid_fl(3, pt.root().0, false));
    pt.map(0xffff_f000, 0x30_0000, PageSize::SIZE_4K, Perm::RW)
        .unwrap();
    pt.map(0x8000_0000, 0x4000_0000, PageSize::SIZE_1G, Perm::RW)
        .unwrap();
    let leaf = pt.leaf_entry_addr(0xffff_f000).unwrap();

    let t = d.dma(dev, 0xffff_f010, Perm::R).unwrap();
    assert_eq!(t.output.0, 0x30_0010);
    assert_eq!(
        t.walk_reads,
        2 + 2 + 4,
        "root+context, dir+pasid entry, 4 levels"
    );
    assert_eq!(d.ram.read_u64(leaf).unwrap() & (fl::A | fl::D), fl::A);
    // A write through the read-filled IOTLB entry walks again to set D.
    let t = d.dma(dev, 0xffff_f020, Perm::W).unwrap();
    assert!(t.path.contains(CachePath::WALK));
    assert_eq!(
        d.ram.read_u64(leaf).unwrap() & (fl::A | fl::D),
        fl::A | fl::D
    );
    let t = d.dma(dev, 0xffff_f020, Perm::W).unwrap();
    assert!(
        t.path
            .contains(CachePath::IOTLB_HIT | CachePath::PASID_HIT | CachePath::CONTEXT_HIT)
    );
    let t = d.dma(dev, 0xbfff_fff0, Perm::W).unwrap();
    assert_eq!((t.output.0, t.page_size), (0x7fff_fff0, PageSize::SIZE_1G));

    assert!(pt.unmap(0xffff_f000));
    d.qi_submit(&[desc_piotlb(3, 0, Some((0xffff_f000, 0, true)))]);
    let f = d.dma(dev, 0xffff_f010, Perm::R).unwrap_err();
    assert_eq!(
        (f.reason, f.kind, f.level),
        (0x71, FaultKind::NotPresent, Some(1))
    );
    assert_eq!(d.fault_msis(), 1);
    assert_eq!(
        d.handle_fault(),
        vec![SeenFault {
            reason: 0x71,
            sid: dev.0,
            addr: 0xffff_f000,
            read: true,
            pasid: None
        }]
    );
    // The 1G mapping is still cached (other page).
    assert!(
        d.dma(dev, 0x8000_0000, Perm::R)
            .unwrap()
            .path
            .contains(CachePath::IOTLB_HIT)
    );
    assert_eq!(d.vtd.stats().invalidations_of("pasid-iotlb"), 1);
}

// VT-d 3.7 in scalable mode (unmanaged domain): PGTT=010, stale DMA after
// unmap + IOTLB PSI faults with 0x79.
#[test]
fn scalable_second_level_cycle() {
    let mut d = Driver::probe(SM);
    let dev = rid(0, 3, 0);
    let ram = d.ram.clone();
    let pt = X86PageTable::new(&ram, Format::SecondLevel { levels: 4 });
    let dir = d.set_context_sm(dev, 0);
    d.set_pasid_entry(dir, 0, pasid_sl(9, pt.root().0, 4));
    pt.map(0x20_0000, 0x60_0000, PageSize::SIZE_2M, Perm::RW)
        .unwrap();
    assert_eq!(d.dma(dev, 0x21_0000, Perm::W).unwrap().output.0, 0x61_0000);
    let f = d.dma(dev, 0x40_0000, Perm::R).unwrap_err();
    assert_eq!(f.reason, 0x79);
    assert!(pt.unmap(0x20_0000));
    assert!(
        d.dma(dev, 0x21_0000, Perm::W).is_ok(),
        "cached until invalidated"
    );
    d.qi_submit(&[desc_iotlb_psi(9, 0x20_0000, 9, false)]);
    assert_eq!(d.dma(dev, 0x21_0000, Perm::W).unwrap_err().reason, 0x79);
    let seen = d.handle_fault();
    assert_eq!(
        seen.iter().map(|f| (f.reason, f.read)).collect::<Vec<_>>(),
        vec![(0x79, true), (0x79, false)]
    );
}

// PGTT=100 pass-through (identity domain).
#[test]
fn scalable_pass_through_is_identity() {
    let mut d = Driver::probe(SM);
    let dev = rid(0, 4, 0);
    let dir = d.set_context_sm(dev, 0);
    d.set_pasid_entry(dir, 0, pasid_pt());
    let t = d.dma(dev, 0x1234_5678, Perm::RW).unwrap();
    assert_eq!(t.output.0, 0x1234_5678);
    assert!(t.path.contains(CachePath::BYPASS));
}

// VT-d 3.8 nested: first-level tables and output are guest-physical,
// translated by the second level.
#[test]
fn scalable_nested_composes_first_and_second_level() {
    let mut d = Driver::probe(SM);
    let dev = rid(0, 5, 0);
    let ram = d.ram.clone();
    let flt = X86PageTable::new(&ram, Format::FirstLevel { levels: 4 });
    let slt = X86PageTable::new(&ram, Format::SecondLevel { levels: 4 });
    flt.map(0x1000, 0x4000_0000, PageSize::SIZE_4K, Perm::RW)
        .unwrap();
    // Second level: identity for the first-level table pages, and the
    // guest-physical output page 0x4000_0000 -> 0x9000_0000.
    let mut table_pages = vec![flt.root().0];
    let mut t = flt.root().0;
    for level in (2..=4u32).rev() {
        let idx = (0x1000u64 >> (12 + 9 * (level - 1))) & 0x1ff;
        let e = d.ram.read_u64(Gpa(t + idx * 8)).unwrap();
        t = e & 0x000f_ffff_ffff_f000;
        table_pages.push(t);
    }
    for p in &table_pages {
        slt.map(*p, *p, PageSize::SIZE_4K, Perm::RW).unwrap();
    }
    slt.map(0x4000_0000, 0x9000_0000, PageSize::SIZE_4K, Perm::R)
        .unwrap();
    let dir = d.set_context_sm(dev, 0);
    d.set_pasid_entry(dir, 0, pasid_nested(4, flt.root().0, slt.root().0, 4));
    let t = d.dma(dev, 0x1abc, Perm::R).unwrap();
    assert_eq!(t.output.0, 0x9000_0abc);
    assert!(
        t.walk_reads >= 4 + 4 * 4,
        "FL reads plus SL walks: {}",
        t.walk_reads
    );
    // Stage-2 read-only output: the write is refused by the second level.
    let f = d.dma(dev, 0x1abc, Perm::W).unwrap_err();
    assert_eq!(f.reason, 0x85);
    // Removing the second-level mapping of the FL root breaks the walk.
    slt.unmap(flt.root().0);
    d.qi_submit(&[desc_iotlb_dsi(4)]);
    assert_eq!(d.dma(dev, 0x1abc, Perm::R).unwrap_err().reason, 0x79);
}

// VT-d 3.4.3 / 9.6: requests with PASID; SRE gates supervisor requests;
// PASIDE gates requests with PASID; PASID-cache invalidation picks up a
// changed PASID entry.
#[test]
fn scalable_requests_with_pasid() {
    let mut d = Driver::probe(SM);
    let dev = rid(0, 6, 0);
    let ram = d.ram.clone();
    let pt = X86PageTable::new(&ram, Format::FirstLevel { levels: 4 });
    pt.map(0x7000, 0x5_0000, PageSize::SIZE_4K, Perm::RW)
        .unwrap();
    let dir = d.set_context_sm(dev, PASIDE);
    let pa = d.set_pasid_entry(dir, 0x123, pasid_fl(11, pt.root().0, false));
    let t = d.dma_pasid(dev, 0x123, false, 0x7008, Perm::R).unwrap();
    assert_eq!(t.output.0, 0x5_0008);
    // Supervisor request without SRE: 0x5D, recorded with PASID and PRIV.
    let f = d.dma_pasid(dev, 0x123, true, 0x7008, Perm::R).unwrap_err();
    assert_eq!(f.reason, 0x5d);
    let seen = d.handle_fault();
    assert_eq!(seen[0].pasid, Some(0x123));
    let priv_bit = (d.rd32(FRO + 8) >> 29) & 1;
    assert_eq!(priv_bit, 1);
    // Turn SRE on, invalidate the PASID cache the way Linux does.
    d.ram
        .write_u64(Gpa(pa + 16), pt.root().0 | 1 | (1 << 4))
        .unwrap();
    assert_eq!(
        d.dma_pasid(dev, 0x123, true, 0x7008, Perm::R)
            .unwrap_err()
            .reason,
        0x5d,
        "cached entry"
    );
    d.qi_submit(&[desc_pc_pasid(11, 0x123), desc_piotlb(11, 0x123, None)]);
    assert!(
        d.dma_pasid(dev, 0x123, true, 0x7008, Perm::W)
            .unwrap()
            .privileged
    );
    // User request to a supervisor-only page: 0x81.
    pt.set_bits(0x7000, 0, fl::US).unwrap();
    d.qi_submit(&[desc_piotlb(11, 0x123, Some((0x7000, 0, false)))]);
    assert_eq!(
        d.dma_pasid(dev, 0x123, false, 0x7008, Perm::R)
            .unwrap_err()
            .reason,
        0x81
    );
    // Unconfigured PASID: directory entry not present (0x51) / PASID entry
    // not present (0x59) / beyond the 128-entry directory (0x46).
    assert_eq!(
        d.dma_pasid(dev, 0x1000, false, 0, Perm::R)
            .unwrap_err()
            .reason,
        0x51
    );
    assert_eq!(
        d.dma_pasid(dev, 0x4000, false, 0, Perm::R)
            .unwrap_err()
            .reason,
        0x46
    );
    assert_eq!(
        d.dma_pasid(dev, 0x124, false, 0, Perm::R)
            .unwrap_err()
            .reason,
        0x59
    );
    // Device without PASIDE: 0x45.
    let dev2 = rid(0, 7, 0);
    d.set_context_sm(dev2, 0);
    assert_eq!(
        d.dma_pasid(dev2, 1, false, 0, Perm::R).unwrap_err().reason,
        0x45
    );
}

// VT-d 6.5.2.10: a bad descriptor sets IQE and IQERCD and stops the queue
// at it; Linux's qi_check_fault() overwrites it with the wait descriptor
// and clears IQE, and the queue resumes.
#[test]
fn scalable_bad_descriptor_sets_iqe_and_linux_recovers() {
    let mut d = Driver::probe(SM);
    let head = d.rd64(IQH);
    let bad_index = d.free_head;
    let idx = d.queue(&[[0xe, 0]]);
    d.wr64(IQT, d.free_head * 32);
    let fsts = u64::from(d.rd32(FSTS));
    assert_eq!(fsts & FSTS_IQE, FSTS_IQE);
    assert_eq!(d.rd64(IQH), head, "IQH stays on the bad descriptor");
    assert_eq!(d.rd64(IQERCD) & 0xf, 2);
    assert_eq!(d.fault_msis(), 1);
    assert_eq!(d.ram.read_u32(Gpa(d.status + idx * 4)).unwrap(), QI_IN_USE);
    // qi_check_fault(): copy the wait descriptor over the bad one, clear IQE.
    let wait_lo = d
        .ram
        .read_u64(Gpa(d.qi_base + (bad_index + 1) * 32))
        .unwrap();
    let wait_hi = d
        .ram
        .read_u64(Gpa(d.qi_base + (bad_index + 1) * 32 + 8))
        .unwrap();
    d.ram
        .write_u64(Gpa(d.qi_base + bad_index * 32), wait_lo)
        .unwrap();
    d.ram
        .write_u64(Gpa(d.qi_base + bad_index * 32 + 8), wait_hi)
        .unwrap();
    d.wr32(FSTS, FSTS_IQE as u32);
    assert_eq!(d.ram.read_u32(Gpa(d.status + idx * 4)).unwrap(), QI_DONE);
    assert_eq!(d.rd64(IQH), d.rd64(IQT));
    assert_eq!(d.rd32(FSTS), 0);
    assert_eq!(d.vtd.stats().iq_errors, 1);
}

// VT-d 6.5.2.8: IF sets ICS.IWC and raises the invalidation event once;
// clearing IWC re-arms it.
#[test]
fn scalable_wait_interrupt_sets_iwc_and_raises_event() {
    let mut d = Driver::probe(SM);
    d.msi.take();
    d.put_desc(desc_wait(0, 0, true));
    d.wr64(IQT, d.free_head * 32);
    assert_eq!(u64::from(d.rd32(ICS)), ICS_IWC);
    let m = d.msi.take();
    assert_eq!(m.len(), 1);
    assert_eq!((m[0].data, m[0].addr), (IE_DATA, u64::from(FE_ADDR)));
    d.put_desc(desc_wait(0, 0, true));
    d.wr64(IQT, d.free_head * 32);
    assert!(d.msi.take().is_empty(), "IWC still set");
    d.wr32(ICS, 1);
    assert_eq!(d.rd32(ICS), 0);
    d.put_desc(desc_wait(0, 0, true));
    d.wr64(IQT, d.free_head * 32);
    assert_eq!(d.msi.take().len(), 1);
}

#[derive(Default)]
struct Atc {
    invs: Mutex<Vec<AtcInvalidation>>,
    resps: Mutex<Vec<PageResponse>>,
}

impl EndpointPort for Atc {
    fn invalidate_atc(&self, inv: &AtcInvalidation) {
        self.invs.lock().unwrap().push(*inv);
    }
    fn page_response(&self, resp: &PageResponse) {
        self.resps.lock().unwrap().push(*resp);
    }
}

// VT-d 6.5.2.5/6/10: device-TLB invalidations and page group responses go
// to the device before the wait descriptor completes; ATS needs DTE.
#[test]
fn scalable_device_tlb_invalidation_reaches_device() {
    let mut d = Driver::probe("x-scalable-mode=on,device-iotlb=on");
    let atc = Arc::new(Atc::default());
    d.vtd.set_device_notifier(atc.clone());
    let dev = rid(0, 8, 0);
    d.qi_submit(&[desc_dev_iotlb(dev.0, 0x7000, true)]);
    let pgrp = [
        9 | (1 << 4) | (u64::from(dev.0) << 16) | (5u64 << 32),
        (3 << 3) | (1 << 2),
    ];
    d.qi_submit(&[pgrp]);
    let invs = atc.invs.lock().unwrap().clone();
    assert_eq!(invs.len(), 1);
    assert_eq!(
        (invs[0].source, invs[0].addr, invs[0].size, invs[0].pasid),
        (SourceId::Pci(dev), 0, 0x10000, None)
    );
    let r = atc.resps.lock().unwrap().clone();
    assert_eq!(
        (r[0].source, r[0].pasid, r[0].group, r[0].automatic),
        (SourceId::Pci(dev), Some(5), 3, false)
    );

    // ATS translation request: blocked without DTE (0x44), answered with it.
    let ram = d.ram.clone();
    let pt = X86PageTable::new(&ram, Format::SecondLevel { levels: 4 });
    pt.map(0, 0x9000, PageSize::SIZE_4K, Perm::R).unwrap();
    let dir = d.set_context_sm(dev, 0);
    d.set_pasid_entry(dir, 0, pasid_sl(2, pt.root().0, 4));
    let ats = |r| {
        iommu_emulator::DmaRequest::new(iommu_emulator::SourceId::Pci(r), 0, 4, Perm::R)
            .with_kind(iommu_emulator::RequestKind::AtsTranslation)
    };
    use iommu_emulator::Iommu;
    assert_eq!(
        d.vtd
            .translate(d.ram.as_ref(), &ats(dev))
            .unwrap_err()
            .reason,
        0x44
    );
    let dev2 = rid(0, 9, 0);
    let dir = d.set_context_sm(dev2, DTE);
    d.set_pasid_entry(dir, 0, pasid_sl(2, pt.root().0, 4));
    assert_eq!(
        d.vtd
            .translate(d.ram.as_ref(), &ats(dev2))
            .unwrap()
            .output
            .0,
        0x9000
    );
}

// Invalidation guarantee under load (DESIGN: concurrency): once the wait
// descriptor after an invalidation has completed, no translation that
// starts afterwards returns the old mapping, while other threads keep
// translating (and refilling the IOTLB) concurrently. Each racing thread
// checks every one of its own translations: it reads which round last
// completed an invalidation of the page before it starts, and the result
// must be that round's mapping or a newer one.
#[test]
fn scalable_invalidation_is_complete_under_concurrent_translation() {
    use std::sync::atomic::{AtomicU64, Ordering};
    const PAGES: u64 = 16;
    const ROUNDS: u64 = 40;
    const THREADS: usize = 2;
    let initial = |p: u64| 0x100_0000 + (p << 12);
    let remapped = |round: u64| 0x200_0000 + (round << 12);
    let mut d = Driver::probe(SM);
    let dev = rid(0, 10, 0);
    let ram = d.ram.clone();
    let pt = X86PageTable::new(&ram, Format::FirstLevel { levels: 4 });
    let dir = d.set_context_sm(dev, 0);
    d.set_pasid_entry(dir, 0, pasid_fl(5, pt.root().0, false));
    for p in 0..PAGES {
        pt.map(p << 12, initial(p), PageSize::SIZE_4K, Perm::RW)
            .unwrap();
    }
    // completed[p]: the last round whose invalidation of page p has completed (0: none).
    let completed: Arc<Vec<AtomicU64>> = Arc::new((0..PAGES).map(|_| AtomicU64::new(0)).collect());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    /// What one racing thread ran and saw.
    #[derive(Default, Debug)]
    struct Seen {
        issued: u64,
        checked: u64,
        after_an_invalidation: u64,
        bad: Vec<String>,
    }
    let mut hs = Vec::new();
    for _ in 0..THREADS {
        let (vtd, ram, stop, done, completed) = (
            d.vtd.clone(),
            d.ram.clone(),
            stop.clone(),
            done.clone(),
            completed.clone(),
        );
        hs.push(std::thread::spawn(move || {
            use iommu_emulator::Iommu;
            let mut seen = Seen::default();
            while !stop.load(Ordering::Relaxed) {
                for p in 0..PAGES {
                    let req = iommu_emulator::DmaRequest::new(
                        iommu_emulator::SourceId::Pci(dev),
                        p << 12,
                        4,
                        Perm::R,
                    );
                    // Read before the translation starts: it starts after that completion.
                    let round = completed[p as usize].load(Ordering::Acquire);
                    let got = vtd.translate(ram.as_ref(), &req);
                    seen.issued += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                    let out = match got {
                        Ok(t) => t.output.0,
                        Err(f) => {
                            seen.bad.push(format!("page {p}: fault {:#x}", f.reason));
                            continue;
                        }
                    };
                    // The round whose mapping this is (0: the initial one).
                    let of = if out == initial(p) {
                        Some(0)
                    } else {
                        out.checked_sub(remapped(0))
                            .map(|o| o >> 12)
                            .filter(|r| (1..=ROUNDS).contains(r) && r % PAGES == p)
                    };
                    match of {
                        Some(r) if r >= round => {}
                        _ => seen.bad.push(format!(
                            "page {p}: {out:#x} after round {round}'s invalidation completed"
                        )),
                    }
                    seen.checked += 1;
                    if round > 0 {
                        seen.after_an_invalidation += 1;
                    }
                }
            }
            seen
        }));
    }
    // Let the translating threads get going before invalidating under them, and after each
    // round until they have translated again.
    let wait_for = |n: u64| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while done.load(Ordering::Relaxed) < n && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
    };
    wait_for(64);
    for round in 1..=ROUNDS {
        let p = round % PAGES;
        pt.map(p << 12, remapped(round), PageSize::SIZE_4K, Perm::RW)
            .unwrap();
        d.qi_submit(&[desc_piotlb(5, 0, Some((p << 12, 0, true)))]);
        completed[p as usize].store(round, Ordering::Release);
        let t = d.dma(dev, p << 12, Perm::R).unwrap();
        assert_eq!(
            t.output.0,
            remapped(round),
            "round {round}: stale translation after invalidation"
        );
        wait_for(done.load(Ordering::Relaxed) + 2 * PAGES);
    }
    stop.store(true, Ordering::Relaxed);
    let seen: Vec<Seen> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    for (i, s) in seen.iter().enumerate() {
        assert!(
            s.bad.is_empty(),
            "thread {i}: {:?}",
            &s.bad[..s.bad.len().min(10)]
        );
        assert_eq!(s.checked, s.issued, "thread {i}: every translation checked");
        assert!(
            s.after_an_invalidation > 0,
            "thread {i} never translated after an invalidation: {s:?}"
        );
    }
    let issued: u64 = seen.iter().map(|s| s.issued).sum();
    assert_eq!(
        issued,
        done.load(Ordering::Relaxed),
        "results of all that ran"
    );
}

// aw-bits=57: CAP.SAGAW bit 3, CAP.FL5LP; 5-level first-level (FLPM=01)
// and second-level (AW=3) tables translate 57-bit addresses.
#[test]
fn scalable_five_level_tables_with_aw57() {
    let mut d = Driver::probe("x-scalable-mode=on,aw-bits=57");
    assert_eq!((d.cap >> 8) & 0x1f, 0b1110);
    assert_ne!(d.cap & (1 << 60), 0, "FL5LP");
    let ram = d.ram.clone();
    let iova = 0x00ab_cdef_1234_5000u64;
    let flt = X86PageTable::new(&ram, Format::FirstLevel { levels: 5 });
    flt.map(iova, 0x7000, PageSize::SIZE_4K, Perm::RW).unwrap();
    let dev = rid(0, 2, 0);
    let dir = d.set_context_sm(dev, 0);
    let mut w = pasid_fl(1, flt.root().0, false);
    w[2] |= 1 << 2; // FLPM = 5-level
    d.set_pasid_entry(dir, 0, w);
    let t = d.dma(dev, iova | 0x18, Perm::R).unwrap();
    assert_eq!((t.output.0, t.walk_reads), (0x7018, 2 + 2 + 5));
    let slt = X86PageTable::new(&ram, Format::SecondLevel { levels: 5 });
    slt.map(iova, 0x8000, PageSize::SIZE_4K, Perm::R).unwrap();
    let dev2 = rid(0, 3, 0);
    let dir = d.set_context_sm(dev2, 0);
    d.set_pasid_entry(dir, 0, pasid_sl(2, slt.root().0, 5));
    assert_eq!(d.dma(dev2, iova | 0x20, Perm::R).unwrap().output.0, 0x8020);
    // Beyond 57 bits: second-level address fault 0x83.
    assert_eq!(d.dma(dev2, 1 << 57, Perm::R).unwrap_err().reason, 0x83);
    // A 5-level first-level entry on a 48-bit unit is invalid (0x5B).
    let mut d48 = Driver::probe(SM);
    let dir = d48.set_context_sm(dev, 0);
    d48.set_pasid_entry(dir, 0, w);
    assert_eq!(d48.dma(dev, 0, Perm::R).unwrap_err().reason, 0x5b);
}
