//! Cross-crate integration tests: driver-sequence conformance and the boot matrix.
#![deny(missing_docs)]
