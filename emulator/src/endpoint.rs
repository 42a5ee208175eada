//! The seam between an IOMMU model and the endpoints (devices) behind it, the same for VT-d
//! and SMMUv3, so one device model works behind either.
//!
//! Downstream, IOMMU to device ([`EndpointPort`]): address translation cache invalidations
//! (PCIe 6.0 §10.3 ATS Invalidate Request; VT-d 6.5.2.5/6.5.2.6 device-TLB invalidation
//! descriptors, SMMUv3 IHI 0070 4.5.1 CMD_ATC_INV), page request group responses (PCIe §10.4.2
//! PRG Response; VT-d 6.5.2.10 page group response descriptor, SMMUv3 4.7.1 CMD_PRI_RESP and
//! the automatic responses of 8.1) and, for SMMUv3's stall model, the answer to a stalled
//! transaction (3.12.2 CMD_RESUME / CMD_STALL_TERM).
//!
//! Upstream, device to IOMMU: translation requests are [`crate::DmaRequest`]s with
//! [`crate::RequestKind::AtsTranslation`] through [`crate::Iommu::translate`] (a device's
//! [`crate::DeviceAddressSpace`]); page requests go to the unit's [`PageRequestSink`] (VT-d
//! 7.5 page request queue, SMMUv3 8 PRI queue).
//!
//! Both directions are called synchronously with the unit's register lock held (an ATC
//! invalidation must be complete before the wait descriptor or CMD_SYNC after it completes):
//! an [`EndpointPort`] must finish before it returns and must not call back into the unit.

use crate::mem::GuestRam;
use crate::types::SourceId;

/// An ATC invalidation for one endpoint (PCIe §10.3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AtcInvalidation {
    /// The endpoint (requester ID, or StreamID for non-PCI masters).
    pub source: SourceId,
    /// PASID of the entries to invalidate; `None`: entries of every PASID and those without
    /// one (PCIe §10.3.8).
    pub pasid: Option<u32>,
    /// Global invalidation (PCIe §10.3.8, the G bit): every PASID.
    pub global: bool,
    /// Start of the range, aligned to its size.
    pub addr: u64,
    /// Size of the range in bytes (a power of two, at least 4 KiB).
    pub size: u64,
}

/// Response codes of a PRG Response (PCIe §10.4.2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageResponseCode {
    /// The pages are ready: retry the access.
    Success,
    /// The request was invalid: the device should not retry it.
    InvalidRequest,
    /// A catastrophic failure: the device disables its page request interface.
    ResponseFailure,
}

impl PageResponseCode {
    /// The PCIe encoding (0 Success, 1 Invalid Request, 0xf Response Failure), which is also
    /// what VT-d page group response descriptors carry.
    pub const fn pcie(self) -> u8 {
        match self {
            PageResponseCode::Success => 0,
            PageResponseCode::InvalidRequest => 1,
            PageResponseCode::ResponseFailure => 0xf,
        }
    }

    /// Decodes the PCIe encoding; reserved values are Response Failure (the device must not
    /// act on them as a success).
    pub const fn from_pcie(code: u8) -> Self {
        match code {
            0 => PageResponseCode::Success,
            1 => PageResponseCode::InvalidRequest,
            _ => PageResponseCode::ResponseFailure,
        }
    }
}

/// A page request group response for one endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageResponse {
    /// The endpoint.
    pub source: SourceId,
    /// PASID the group's requests carried.
    pub pasid: Option<u32>,
    /// Page request group index.
    pub group: u16,
    /// The response.
    pub code: PageResponseCode,
    /// Sent by the IOMMU itself (its queue was full or disabled), not by software.
    pub automatic: bool,
}

/// The answer to a stalled transaction (SMMUv3 stall model).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StallResponse {
    /// The endpoint.
    pub source: SourceId,
    /// SubstreamID of the transaction.
    pub pasid: Option<u32>,
    /// Input address of the transaction.
    pub addr: u64,
    /// True: translate it again (CMD_RESUME with retry); false: it is aborted.
    pub retry: bool,
}

/// What an IOMMU sends to the endpoints behind it. An implementation receives the messages of
/// every endpoint it was registered for and ignores the ones whose `source` is not its own.
pub trait EndpointPort: Send + Sync {
    /// Invalidate the endpoint's ATC for the range (complete when this returns).
    fn invalidate_atc(&self, inv: &AtcInvalidation);
    /// Deliver a page request group response.
    fn page_response(&self, resp: &PageResponse);
    /// A stalled transaction was answered (units without a stall model never call this).
    fn stall_resolved(&self, _resp: &StallResponse) {}
}

/// One page request (PCIe §10.4.1 Page Request Message).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRequest {
    /// The endpoint.
    pub source: SourceId,
    /// PASID prefix, if any.
    pub pasid: Option<u32>,
    /// Privileged-mode access requested (with a PASID).
    pub privileged: bool,
    /// Execute access requested (with a PASID).
    pub exec: bool,
    /// Page address (bits 11:0 ignored).
    pub addr: u64,
    /// Read access requested.
    pub read: bool,
    /// Write access requested.
    pub write: bool,
    /// Last request of its page request group.
    pub last: bool,
    /// Page request group index (9 bits).
    pub group: u16,
}

/// What became of a page request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageRequestOutcome {
    /// Queued for software, which answers through the [`EndpointPort`].
    Queued,
    /// Not queued; the IOMMU answered at once with this response (the device takes it as the
    /// group's response).
    Responded(PageResponse),
    /// Not queued and no response is due (not the last request of its group).
    Dropped,
}

/// Where an endpoint's page requests go: the unit's page request queue.
pub trait PageRequestSink: Send + Sync {
    /// Submit one page request; the unit writes its queue in `mem`.
    fn page_request(&self, mem: &dyn GuestRam, req: &PageRequest) -> PageRequestOutcome;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_response_code_pcie_encoding_round_trips_reserved_as_failure() {
        for c in [
            PageResponseCode::Success,
            PageResponseCode::InvalidRequest,
            PageResponseCode::ResponseFailure,
        ] {
            assert_eq!(PageResponseCode::from_pcie(c.pcie()), c);
        }
        assert_eq!(
            PageResponseCode::from_pcie(5),
            PageResponseCode::ResponseFailure
        );
    }
}
