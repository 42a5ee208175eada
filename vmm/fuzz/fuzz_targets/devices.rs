//! Fuzz target: the device layer without KVM. The input is decoded by
//! `iommu_vmm::fuzzing` into a configuration byte (the VT-d properties) and a
//! sequence of port and MMIO accesses, guest-memory writes (raw and structured:
//! virtqueues, VT-d tables and queues, PASID device descriptors) and ticks
//! against the real devices; the invariants are checked after each step and a
//! broken one panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    iommu_vmm::fuzzing::fuzz(data);
});
