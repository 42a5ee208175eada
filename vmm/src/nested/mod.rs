//! Nested runner: boots the L2 guest inside a QEMU (TCG, AMD SVM) L1 machine when the host has no KVM usable by stock kernels.
