//! Host speed of the SMMUv3 model through its public API: TLB hits and
//! TLB misses (full walks) for stage 1 with and without SubstreamIDs,
//! stage 2 and nested; invalidation commands; and translation throughput
//! with 1/2/4/8 threads while another thread invalidates. The programmed
//! SMMU (one stream of each kind) is the one smmu-model's modelled-cycles
//! test uses (`smmu-model/tests/support`).
//!
//! Run: `cargo bench -p iommu-benches --bench smmu`. Criterion prints the
//! time per translation and, as `thrpt`, millions of translations per
//! second (`Melem/s`).

#[path = "../../smmu-model/tests/support/mod.rs"]
mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use iommu_emulator::{DmaRequest, GuestRam, Iommu, Perm};
use support::*;
use vm_memory::{GuestAddress, GuestMemoryMmap};

/// SubstreamID of the "with SSID" cases.
const SSID: u32 = 3;

/// The translation kinds: (name, StreamID, SubstreamID).
const CASES: [(&str, u32, Option<u32>); 5] = [
    ("s1", SID_S1, None),
    ("s1_ssid", SID_S1_SSID, Some(SSID)),
    ("s2", SID_S2, None),
    ("nested", SID_NESTED, None),
    ("nested_ssid", SID_NESTED, Some(SSID)),
];

/// One request per mapped read-write page of `sid`.
fn requests(sid: u32, ssid: Option<u32>) -> Vec<DmaRequest> {
    (0..PAGES - 16)
        .map(|p| request(sid, ssid, p, Perm::R))
        .collect()
}

/// The rig's tables copied into a `GuestMemoryMmap`, the memory backend
/// the VMM gives the model (FakeRam takes a mutex and a map lookup per
/// read).
fn mmap_copy(rig: &Rig) -> GuestMemoryMmap<()> {
    let mm = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 512 << 20)]).unwrap();
    rig.ram.copy_to(&mm).unwrap();
    mm
}

/// TLB hits: 8 hot pages, resident after the first pass (STE, CD and TLB
/// all hit).
fn tlb_hit(c: &mut Criterion) {
    let mut g = c.benchmark_group("smmu_tlb_hit");
    g.throughput(Throughput::Elements(1));
    let rig = Rig::new("");
    let ram: &dyn GuestRam = rig.ram.as_ref();
    for (name, sid, ssid) in CASES {
        let reqs = requests(sid, ssid);
        let mut i = 0usize;
        g.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) & 7;
                black_box(rig.smmu.translate(ram, black_box(&reqs[i])))
            })
        });
    }
    g.finish();
}

/// TLB misses: TLB off (`tlb-ways=0`), STE and CD caches on, so every
/// translation walks: 4 levels for stage 1, 3 for stage 2 (40-bit IPA),
/// 4 x 3 + 3 (the 2M blocks make some stage-2 walks 2 levels) for nested.
fn tlb_miss(c: &mut Criterion) {
    let mut g = c.benchmark_group("smmu_tlb_miss");
    g.throughput(Throughput::Elements(1));
    let rig = Rig::new("tlb-ways=0");
    let mm = mmap_copy(&rig);
    for (name, sid, ssid) in CASES {
        let reqs = requests(sid, ssid);
        let n = reqs.len();
        for (suffix, mem) in [
            ("", rig.ram.as_ref() as &dyn GuestRam),
            ("_mmap", &mm as &dyn GuestRam),
        ] {
            let mut i = 0usize;
            g.bench_function(format!("{name}{suffix}"), |b| {
                b.iter(|| {
                    i = (i + 1) % n;
                    black_box(rig.smmu.translate(mem, black_box(&reqs[i])))
                })
            });
        }
    }
    g.finish();
}

/// Invalidation cost: one command plus CMD_SYNC through the command queue
/// (the PROD write consumes both), with the TLB refilled (every stream,
/// 48 pages) before each.
fn invalidation(c: &mut Criterion) {
    let mut g = c.benchmark_group("smmu_invalidate");
    g.throughput(Throughput::Elements(1));
    let mut rig = Rig::new("");
    let asid = u64::from(ASID_BASE) + u64::from(SSID);
    let sync = [0x46, 0];
    let cases: [(&str, [u64; 2]); 5] = [
        // CMD_TLBI_NH_VA (Leaf): one page of one ASID.
        ("page", [0x12 | (asid << 48), (VA + 0x1000) | 1]),
        // CMD_TLBI_NH_ASID: the ASID (Linux's domain flush).
        ("asid", [0x11 | (asid << 48), 0]),
        // CMD_CFGI_CD: one SubstreamID's CD (PASID teardown).
        (
            "cd",
            [
                0x05 | (u64::from(SID_S1_SSID) << 32) | (u64::from(SSID) << 12),
                1,
            ],
        ),
        // CMD_TLBI_S2_IPA: one IPA page of VMID 4.
        ("s2_ipa", [0x2a | (4 << 32), IPA_4K]),
        // CMD_TLBI_NSNH_ALL: everything.
        ("global", [0x30, 0]),
    ];
    let all: Vec<DmaRequest> = CASES
        .iter()
        .flat_map(|(_, sid, ssid)| requests(*sid, *ssid))
        .collect();
    for (name, cmd) in cases {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    for r in &all {
                        let _ = rig.smmu.translate(rig.ram.as_ref(), r);
                    }
                    let t = Instant::now();
                    rig.issue(black_box(&[cmd, sync]));
                    total += t.elapsed();
                }
                total
            })
        });
    }
    g.finish();
}

/// N threads translating TLB-resident pages (thread t: SubstreamID t of
/// the stage-1 stream, its own 8 pages) while one more thread issues
/// CMD_TLBI_NH_VA + CMD_SYNC for a page of an ASID no translator uses,
/// back to back. Throughput counts all N threads.
fn threads(c: &mut Criterion) {
    let mut g = c.benchmark_group("smmu_threads_with_invalidator");
    let mut rig = Rig::new("");
    let smmu = rig.smmu.clone();
    let ram = rig.ram.clone();
    let per_thread: Vec<Vec<DmaRequest>> = (0..8u32)
        .map(|t| {
            (0..8)
                .map(|p| request(SID_S1_SSID, Some(t + 1), u64::from(t) * 4 + p, Perm::R))
                .collect()
        })
        .collect();
    let unused_asid = u64::from(ASID_BASE) + 15;
    for n in [1usize, 2, 4, 8] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("{n}_threads"), |b| {
            b.iter_custom(|iters| {
                let (smmu, ram, rig) = (&smmu, &ram, &mut rig);
                iommu_benches::contended_round(
                    n,
                    iters,
                    || rig.issue(&[[0x12 | (unused_asid << 48), (VA + 0x1000) | 1], [0x46, 0]]),
                    |t, i| {
                        let r = &per_thread[t][i as usize & 7];
                        black_box(smmu.translate(ram.as_ref(), black_box(r)).ok());
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
    name = smmu;
    config = config();
    targets = tlb_hit, tlb_miss, invalidation, threads
}
criterion_main!(smmu);
