//! Builder for AArch64 VMSAv8-64 translation tables in [`super::FakeRam`] (SMMU stage 1 and stage 2).
