//! Host speed of the core pieces: the cache engine's hit and miss paths,
//! concurrent lookups, and a DMA access through `DeviceAddressSpace`.
//!
//! Run: `cargo bench -p iommu-benches --bench core`.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use iommu_emulator::testing::MapIommu;
use iommu_emulator::{Cache, CacheConfig, CacheTag, DeviceAddressSpace, Perm, Rid, SourceId};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap, IommuMemory};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tag {
    domain: u16,
    page: u64,
}

impl CacheTag for Tag {
    fn set_hash(&self) -> u64 {
        self.page
    }
}

fn filled(sets: usize, ways: usize) -> Cache<Tag, u64> {
    let c = Cache::new(CacheConfig::new(sets, ways)).expect("cache");
    for p in 0..(sets * ways) as u64 {
        c.insert(Tag { domain: 1, page: p }, p << 12, c.ticket());
    }
    c
}

fn cache_hit(c: &mut Criterion) {
    let cache = filled(64, 8);
    let mut g = c.benchmark_group("cache");
    g.throughput(Throughput::Elements(1));
    let mut p = 0u64;
    g.bench_function("hit_64x8", |b| {
        b.iter(|| {
            p = (p + 1) & 255;
            black_box(cache.lookup(&Tag { domain: 1, page: p }))
        })
    });
    g.bench_function("miss_64x8", |b| {
        b.iter(|| {
            p = (p + 1) & 255;
            black_box(cache.lookup(&Tag { domain: 2, page: p }))
        })
    });
    g.bench_function("insert_64x8", |b| {
        b.iter(|| {
            p = p.wrapping_add(1);
            black_box(cache.insert(Tag { domain: 3, page: p }, p, cache.ticket()))
        })
    });
    g.finish();
}

fn cache_hit_concurrent(c: &mut Criterion) {
    // Lookups on this thread while 1 or 3 other threads hammer other sets
    // and one of them invalidates now and then.
    for others in [1usize, 3] {
        let cache = Arc::new(filled(64, 8));
        let stop = Arc::new(AtomicBool::new(false));
        let hs: Vec<_> = (0..others)
            .map(|i| {
                let (cache, stop) = (cache.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut p = i as u64 * 64;
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        p = (p + 1) & 511;
                        black_box(cache.lookup(&Tag { domain: 1, page: p }));
                        n += 1;
                        if i == 0 && n.is_multiple_of(10_000) {
                            cache.invalidate_if(|t, _| t.page == p);
                        }
                    }
                })
            })
            .collect();
        let mut p = 0u64;
        c.bench_function(&format!("cache/hit_with_{others}_other_threads"), |b| {
            b.iter(|| {
                p = (p + 1) & 255;
                black_box(cache.lookup(&Tag { domain: 1, page: p }))
            })
        });
        stop.store(true, Ordering::Relaxed);
        for h in hs {
            h.join().expect("thread");
        }
    }
}

fn dma_access(c: &mut Criterion) {
    let ram: GuestMemoryMmap<()> =
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 64 << 20)]).expect("ram");
    let iommu = Arc::new(MapIommu::new());
    iommu.map(None, 0x4000_0000, 0x10_0000, 1 << 20, Perm::RW);
    let space = DeviceAddressSpace::new(
        iommu,
        Arc::new(ram.clone()),
        SourceId::Pci(Rid::new(0, 3, 0)),
    );
    let mem = IommuMemory::new(ram, space, true, ());
    let mut g = c.benchmark_group("device_address_space");
    g.throughput(Throughput::Bytes(4096));
    let mut buf = [0u8; 4096];
    g.bench_function("read_4k", |b| {
        b.iter(|| {
            mem.read_slice(&mut buf, GuestAddress(0x4000_0000))
                .expect("read")
        })
    });
    g.throughput(Throughput::Bytes(8));
    g.bench_function("read_u64", |b| {
        b.iter(|| {
            black_box(
                mem.read_obj::<u64>(GuestAddress(0x4000_1008))
                    .expect("read"),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, cache_hit, cache_hit_concurrent, dma_access);
criterion_main!(benches);
