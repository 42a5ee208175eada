//! Fuzz target: the input is decoded into a configuration and a sequence
//! of register accesses, guest-memory writes and DMA requests (see
//! `vtd_model_fuzz_ops` in the regression test for the same decoder).
//! Invariants after each step: no panic, bounded guest-memory work per
//! call, statistics consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/fuzz_ops/mod.rs"]
mod fuzz_ops;

fuzz_target!(|data: &[u8]| {
    fuzz_ops::run(data);
});
