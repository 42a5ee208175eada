//! Fuzz the SMMU's register + memory + queue + DMA surface. The input is a
//! sequence of API calls (see `smmu_model::fuzzing`); invariants are
//! checked after each step. Run with
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run mmio_dma` from `smmu-model/`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    smmu_model::fuzzing::run(data);
});
