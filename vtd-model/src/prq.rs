//! Page request queue (VT-d 7.5): later.
//!
//! The registers (PQH, PQT, PQA, PRS, PECTL, PEDATA, PEADDR, PEUADDR) exist
//! in the register file with their access masks, and PECTL's IM/IP follow
//! the common event rules, but no page request is ever queued yet: page
//! requests arrive with the PASID-services issue. Page group responses
//! from the invalidation queue are already decoded and handed to the
//! [`crate::DeviceNotifier`].
