//! Arm SMMUv3 model.
//!
//! Follows the Arm System Memory Management Unit Architecture Specification,
//! SMMU architecture version 3 (IHI 0070). A pure state machine: register
//! accesses, DMA translation requests and guest memory passed into each call.
#![deny(missing_docs)]
