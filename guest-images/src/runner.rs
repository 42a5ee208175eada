//! The L1 runner image of the nested runner: a Debian kernel with KVM modules, the `iommu-vmm` binary and the L2 images.
