//! Intel VT-d IOMMU model.
//!
//! Follows the Intel Virtualization Technology for Directed I/O Architecture
//! Specification, revision 4.x/5.x. A pure state machine: register accesses,
//! DMA translation requests and guest memory passed into each call.
#![deny(missing_docs)]
