//! Host speed of the VT-d model through its public API, programmed the way
//! Linux's intel-iommu driver does it (the conformance tests' driver
//! harness, tests/tests/vtd_support, is reused as is): IOTLB hits in every
//! translation mode, IOTLB misses with 3/4/5-level walks, paging-structure
//! cache hits, queued-invalidation cost, and translation throughput with
//! 1/2/4/8 threads while another thread invalidates.
//!
//! Run: `cargo bench -p iommu-benches --bench vtd`. Criterion prints the
//! time per translation and, as `thrpt`, millions of translations per
//! second (`Melem/s`).

#[path = "../../tests/tests/vtd_support/mod.rs"]
mod vtd_support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use iommu_emulator::testing::x86_pt::{Format, X86PageTable};
use iommu_emulator::{DmaRequest, Gpa, GuestRam, Iommu, PageSize, Pasid, PasidTag, Perm, SourceId};
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vtd_model::regs::{GCMD, GCMD_QIE, IQH, IQT};
use vtd_support::*;

/// Scalable-context flag: requests with PASID allowed (VT-d 9.4).
const PASIDE: u64 = 1 << 3;
/// The PASID used by the "with PASID" cases.
const PASID: u32 = 0x42;
/// Pages mapped in every address space (the hit benches cycle over 8).
const PAGES: u64 = 256;
/// Input addresses start here.
const IOVA: u64 = 0x10_0000;
/// Output addresses start here.
const OUT: u64 = 0x8_0000_0000;

/// The translation mode of one bench case.
#[derive(Clone, Copy)]
enum Mode {
    /// Legacy context entry with a second-level table of `levels`.
    Legacy(u8),
    /// Scalable mode, first-level (PGTT=001) table of `levels`.
    First(u8),
    /// Scalable mode, second-level (PGTT=010) table of `levels`.
    Second(u8),
    /// Scalable mode, nested (PGTT=011), 4-level first and second level.
    Nested,
}

/// One programmed unit, device 00:02.0, and the request to translate.
struct Setup {
    d: Driver,
    did: u16,
    pasid: Option<u32>,
    reqs: Vec<DmaRequest>,
}

fn props(mode: Mode, extra: &str) -> String {
    let base = match mode {
        Mode::Legacy(5) => "aw-bits=57".to_string(),
        Mode::Legacy(_) => "aw-bits=48".to_string(),
        Mode::First(5) | Mode::Second(5) => "x-scalable-mode=on,aw-bits=57".to_string(),
        _ => "x-scalable-mode=on,aw-bits=48".to_string(),
    };
    if extra.is_empty() {
        base
    } else {
        format!("{base},{extra}")
    }
}

/// Program a unit for `mode`: map PAGES pages, attach device 00:02.0,
/// build one request per page (tagged with PASID when `with_pasid`).
fn setup(mode: Mode, with_pasid: bool, extra: &str) -> Setup {
    let mut d = Driver::probe(&props(mode, extra));
    let dev = rid(0, 2, 0);
    let ram = d.ram.clone();
    let did = 7u16;
    let pasid_no = if with_pasid { PASID } else { 0 };
    let ctx_flags = if with_pasid { PASIDE } else { 0 };
    match mode {
        Mode::Legacy(levels) => {
            let pt = X86PageTable::new(&ram, Format::SecondLevel { levels });
            map_pages(&pt, Perm::RW);
            d.set_context_legacy(dev, did, pt.root().0, levels, 0);
        }
        Mode::First(levels) => {
            let pt = X86PageTable::new(&ram, Format::FirstLevel { levels });
            map_pages(&pt, Perm::RW);
            let dir = d.set_context_sm(dev, ctx_flags);
            let mut w = pasid_fl(did, pt.root().0, false);
            if levels == 5 {
                w[2] |= 1 << 2; // FLPM: 5-level paging (VT-d 9.6)
            }
            d.set_pasid_entry(dir, pasid_no, w);
        }
        Mode::Second(levels) => {
            let pt = X86PageTable::new(&ram, Format::SecondLevel { levels });
            map_pages(&pt, Perm::RW);
            let dir = d.set_context_sm(dev, ctx_flags);
            d.set_pasid_entry(dir, pasid_no, pasid_sl(did, pt.root().0, levels));
        }
        Mode::Nested => {
            let flt = X86PageTable::new(&ram, Format::FirstLevel { levels: 4 });
            let slt = X86PageTable::new(&ram, Format::SecondLevel { levels: 4 });
            // First level: IOVA -> guest-physical 0x4000_0000 + page.
            for p in 0..PAGES {
                flt.map(
                    IOVA + (p << 12),
                    0x4000_0000 + (p << 12),
                    PageSize::SIZE_4K,
                    Perm::RW,
                )
                .unwrap();
            }
            // Second level: identity for the first-level table pages (VT-d
            // 3.8: first-level table reads are translated by the second
            // level), guest-physical output -> OUT.
            let mut tables = std::collections::BTreeSet::new();
            for p in 0..PAGES {
                let mut t = flt.root().0;
                tables.insert(t);
                for level in (2..=4u32).rev() {
                    let iova = IOVA + (p << 12);
                    let idx = (iova >> (12 + 9 * (level - 1))) & 0x1ff;
                    let e = ram.read_u64(Gpa(t + idx * 8)).unwrap();
                    t = e & 0x000f_ffff_ffff_f000;
                    tables.insert(t);
                }
            }
            for t in tables {
                slt.map(t, t, PageSize::SIZE_4K, Perm::RW).unwrap();
            }
            for p in 0..PAGES {
                slt.map(
                    0x4000_0000 + (p << 12),
                    OUT + (p << 12),
                    PageSize::SIZE_4K,
                    Perm::RW,
                )
                .unwrap();
            }
            let dir = d.set_context_sm(dev, ctx_flags);
            d.set_pasid_entry(
                dir,
                pasid_no,
                pasid_nested(did, flt.root().0, slt.root().0, 4),
            );
        }
    }
    let reqs = (0..PAGES)
        .map(|p| {
            let r = DmaRequest::new(SourceId::Pci(dev), IOVA + (p << 12) + 0x40, 64, Perm::R);
            if with_pasid {
                r.with_pasid(PasidTag {
                    pasid: Pasid::new(PASID).unwrap(),
                    privileged: false,
                    exec: false,
                })
            } else {
                r
            }
        })
        .collect::<Vec<_>>();
    let s = Setup {
        d,
        did,
        pasid: with_pasid.then_some(PASID),
        reqs,
    };
    // Every request must translate to its mapped page: a bench of faults
    // would measure the fault path.
    for (p, r) in s.reqs.iter().enumerate() {
        let t = s.d.vtd.translate(s.d.ram.as_ref(), r).unwrap();
        assert_eq!(t.output.0, OUT + ((p as u64) << 12) + 0x40);
    }
    s
}

/// The tables of `s` copied into a `GuestMemoryMmap`, the memory backend
/// the VMM gives the model (FakeRam, the harness's sparse RAM, takes a
/// mutex and a map lookup per read).
fn mmap_copy(s: &Setup) -> GuestMemoryMmap<()> {
    let mm = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 256 << 20)]).unwrap();
    s.d.ram.copy_to(&mm).unwrap();
    mm
}

fn map_pages(pt: &X86PageTable<'_>, perm: Perm) {
    for p in 0..PAGES {
        pt.map(IOVA + (p << 12), OUT + (p << 12), PageSize::SIZE_4K, perm)
            .unwrap();
    }
}

/// IOTLB hits: 8 hot pages, all resident after the first pass.
fn iotlb_hit(c: &mut Criterion) {
    let mut g = c.benchmark_group("vtd_iotlb_hit");
    g.throughput(Throughput::Elements(1));
    let cases: [(&str, Mode, bool); 7] = [
        ("legacy_sl4", Mode::Legacy(4), false),
        ("sm_fl4", Mode::First(4), false),
        ("sm_fl4_pasid", Mode::First(4), true),
        ("sm_sl4", Mode::Second(4), false),
        ("sm_sl4_pasid", Mode::Second(4), true),
        ("sm_nested", Mode::Nested, false),
        ("sm_nested_pasid", Mode::Nested, true),
    ];
    for (name, mode, pasid) in cases {
        let s = setup(mode, pasid, "");
        let ram = s.d.ram.as_ref();
        let mut i = 0usize;
        g.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) & 7;
                black_box(s.d.vtd.translate(ram, black_box(&s.reqs[i])))
            })
        });
    }
    // A hit reads no guest memory; the same with the VMM's backend, to show it.
    let s = setup(Mode::Legacy(4), false, "");
    let mm = mmap_copy(&s);
    let mut i = 0usize;
    g.bench_function("legacy_sl4_mmap", |b| {
        b.iter(|| {
            i = (i + 1) & 7;
            black_box(s.d.vtd.translate(&mm, black_box(&s.reqs[i])))
        })
    });
    g.finish();
}

/// IOTLB misses with a full walk: IOTLB and paging-structure caches off
/// (`iotlb-ways=0,pwc-entries=0`), context and PASID caches on, so each
/// translation reads every level of the table from guest memory.
fn iotlb_miss(c: &mut Criterion) {
    let mut g = c.benchmark_group("vtd_iotlb_miss");
    g.throughput(Throughput::Elements(1));
    let cases: [(&str, Mode); 7] = [
        ("legacy_sl3", Mode::Legacy(3)),
        ("legacy_sl4", Mode::Legacy(4)),
        ("legacy_sl5", Mode::Legacy(5)),
        ("sm_fl4", Mode::First(4)),
        ("sm_fl5", Mode::First(5)),
        ("sm_sl4", Mode::Second(4)),
        ("sm_nested4x4", Mode::Nested),
    ];
    for (name, mode) in cases {
        let s = setup(mode, false, "iotlb-ways=0,pwc-entries=0");
        let ram = s.d.ram.as_ref();
        let mut i = 0usize;
        g.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) % PAGES as usize;
                black_box(s.d.vtd.translate(ram, black_box(&s.reqs[i])))
            })
        });
    }
    // The same walks reading the tables from a GuestMemoryMmap (what the
    // VMM passes in) instead of the harness's FakeRam.
    let mmap_cases: [(&str, Mode); 3] = [
        ("legacy_sl4_mmap", Mode::Legacy(4)),
        ("sm_fl4_mmap", Mode::First(4)),
        ("sm_sl4_mmap", Mode::Second(4)),
    ];
    for (name, mode) in mmap_cases {
        let s = setup(mode, false, "iotlb-ways=0,pwc-entries=0");
        let mm = mmap_copy(&s);
        let mut i = 0usize;
        g.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) % PAGES as usize;
                black_box(s.d.vtd.translate(&mm, black_box(&s.reqs[i])))
            })
        });
    }
    g.finish();
}

/// IOTLB misses whose upper levels hit the paging-structure caches: IOTLB
/// off, PWC at its default size, so only the leaf entry is read.
fn pwc_hit(c: &mut Criterion) {
    let mut g = c.benchmark_group("vtd_pwc_hit");
    g.throughput(Throughput::Elements(1));
    let cases: [(&str, Mode); 3] = [
        ("legacy_sl4", Mode::Legacy(4)),
        ("sm_fl4", Mode::First(4)),
        ("sm_sl4", Mode::Second(4)),
    ];
    for (name, mode) in cases {
        let s = setup(mode, false, "iotlb-ways=0");
        let ram = s.d.ram.as_ref();
        let mut i = 0usize;
        g.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) % PAGES as usize;
                black_box(s.d.vtd.translate(ram, black_box(&s.reqs[i])))
            })
        });
    }
    g.finish();
}

/// Queued-invalidation cost: one invalidation descriptor plus the wait
/// descriptor Linux's qi_submit_sync() appends, the IQT doorbell and the
/// status check, with the IOTLB refilled (all PAGES pages) before each.
fn invalidation(c: &mut Criterion) {
    let mut g = c.benchmark_group("vtd_qi_invalidate");
    g.throughput(Throughput::Elements(1));
    let mut legacy = setup(Mode::Legacy(4), false, "");
    let mut sm = setup(Mode::First(4), true, "");
    let did = legacy.did;
    type Desc = fn(u16, u32) -> [u64; 2];
    let cases: [(&str, bool, Desc); 4] = [
        ("page", false, |did, _| desc_iotlb_psi(did, IOVA, 0, false)),
        ("domain", false, |did, _| desc_iotlb_dsi(did)),
        ("pasid", true, |did, pasid| desc_piotlb(did, pasid, None)),
        ("global", false, |_, _| {
            [2 | (1 << 4) | (1 << 6) | (1 << 7), 0]
        }),
    ];
    for (name, scalable, desc) in cases {
        let s = if scalable { &mut sm } else { &mut legacy };
        let pasid = s.pasid.unwrap_or(0);
        let d = desc(did, pasid);
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    for r in &s.reqs {
                        let _ = s.d.vtd.translate(s.d.ram.as_ref(), r);
                    }
                    rewind_queue(&mut s.d);
                    let t = Instant::now();
                    s.d.qi_submit(black_box(&[d]));
                    total += t.elapsed();
                }
                total
            })
        });
    }
    g.finish();
}

/// Keep the harness's queue index away from its wrap point: with 256-bit
/// descriptors the harness wraps at 128 entries while its two-page queue
/// (IQA.QS=1) holds 256, so restart the queue at 0 by disabling and
/// re-enabling queued invalidation (VT-d 10.4.4: clearing QIE clears
/// IQH), outside the timed region.
fn rewind_queue(d: &mut Driver) {
    if d.free_head < 100 {
        return;
    }
    d.wr32(GCMD, d.gcmd & !(GCMD_QIE as u32));
    d.wr64(IQT, 0);
    d.free_head = 0;
    d.wr32(GCMD, d.gcmd);
    assert_eq!(d.rd64(IQH), 0);
}

/// N threads translating IOTLB-resident pages (each its own 8 of them)
/// while one more thread submits page-selective invalidations of a page
/// no translator uses, back to back. Throughput counts all N threads.
fn threads(c: &mut Criterion) {
    let mut g = c.benchmark_group("vtd_threads_with_invalidator");
    let mut s = setup(Mode::Legacy(4), false, "");
    let did = s.did;
    for n in [1usize, 2, 4, 8] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("{n}_threads"), |b| {
            b.iter_custom(|iters| {
                let vtd = s.d.vtd.clone();
                let ram = s.d.ram.clone();
                let reqs = &s.reqs;
                let d = &mut s.d;
                iommu_benches::contended_round(
                    n,
                    iters,
                    // A page outside every translator's hot set.
                    || d.qi_submit(&[desc_iotlb_psi(did, IOVA + ((PAGES - 1) << 12), 0, false)]),
                    |t, i| {
                        let base = (t * 8) % (PAGES as usize - 8);
                        let r = &reqs[base + (i as usize & 7)];
                        black_box(vtd.translate(ram.as_ref(), black_box(r)).ok());
                    },
                )
            })
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1000))
}

criterion_group! {
    name = vtd;
    config = config();
    targets = iotlb_hit, iotlb_miss, pwc_hit, invalidation, threads
}
criterion_main!(vtd);
