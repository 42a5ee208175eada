//! AArch64 VMSAv8-64 translation table walks (Arm ARM D8) for SMMU stage 1
//! and stage 2, 4K/16K/64K granules.
