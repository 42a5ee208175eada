//! Benchmarks of the IOMMU models: criterion benches (`benches/`), the
//! cycle-model sweep with its synthetic trace generator, and the whole-VM
//! comparison against QEMU (`iommu-wholevm`, [`wholevm`]).
#![deny(missing_docs)]

pub mod sweep;
pub mod synth;
pub mod wholevm;

/// One timed round of the "translators against an invalidator" benches: `workers` threads each
/// call `translate(thread, i)` for `i` in `0..iters` while one more thread calls `invalidate`
/// back to back until they are done. Returns the workers' wall time (what criterion's
/// `iter_custom` wants).
pub fn contended_round(
    workers: usize,
    iters: u64,
    mut invalidate: impl FnMut() + Send,
    translate: impl Fn(usize, u64) + Sync,
) -> std::time::Duration {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = AtomicBool::new(false);
    std::thread::scope(|sc| {
        let inv = sc.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                invalidate();
            }
        });
        let start = std::time::Instant::now();
        let handles: Vec<_> = (0..workers)
            .map(|t| {
                let translate = &translate;
                sc.spawn(move || {
                    for i in 0..iters {
                        translate(t, i);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("translator thread");
        }
        let elapsed = start.elapsed();
        stop.store(true, Ordering::Relaxed);
        inv.join().expect("invalidator thread");
        elapsed
    })
}
