//! Page request queue (VT-d 7.5, registers 11.4.11).
//!
//! A device with PRI sends page requests through [`crate::Vtd::page_request`].
//! Each request that passes the checks of 7.4 is written as a 256-bit page
//! request descriptor (7.5.1.1) at PQA + PQT, PQT advances and PRS.PPR is
//! set; setting PPR while neither PPR nor PRO was set is an interrupt
//! condition for the page request event (PECTL/PEDATA/PEADDR/PEUADDR, with
//! the usual IM/IP rules, 11.4.11.5).
//!
//! Queue full (PQT + 32 == PQH modulo the queue size) or PRO already set:
//! the request is not queued; the first time PRO is set (an interrupt
//! condition too). A request that needs a response (last page in group, or
//! private data present) is answered by the hardware itself (7.5.1: the
//! auto-generated response for requests that could not be queued) with
//! response code Success, so the device retries the access and asks again
//! once software has drained the queue; other requests are dropped. Both
//! are counted ([`PrqStats`]). Requests that fail the checks (no ECAP.PRS,
//! translation disabled, context not present, PRE clear in the scalable-mode
//! context entry) get an Invalid Request response (7.4.1).
//!
//! Responses the hardware generates are returned to the caller in the
//! [`PageRequestOutcome`] instead of being sent through the
//! the endpoint port ([`iommu_emulator::endpoint::EndpointPort`]), so a device never gets re-entered while it is
//! sending. Responses software writes into the invalidation queue (page
//! group response descriptors, 6.5.2.10) go to the notifier.
//!
//! Drain (6.5.2.8, wait descriptor with PD=1): page requests are queued
//! synchronously inside `page_request`, under the register lock, so every
//! request the IOMMU received before the wait descriptor was fetched is
//! already in the queue when the wait completes; PD therefore needs no
//! extra work and is counted.

use std::sync::atomic::{AtomicU64, Ordering};

use iommu_emulator::regs::RegFile;
use iommu_emulator::{Gpa, GuestRam, MsiMessage, PasidTag, Rid};

use crate::Vtd;
use crate::config::{DevCtx, lookup_context};
use crate::fault;
use crate::regs::*;
use crate::structs::inv_desc::PageGroupResponse;

/// PRS: pending page request (RW1C).
pub const PRS_PPR: u64 = 1 << 0;
/// PRS: page request overflow (RW1C).
pub const PRS_PRO: u64 = 1 << 1;
/// PQA queue size field (2:0): 2^(PQS+7) descriptors.
pub const PQA_PQS_MASK: u64 = 0x7;
/// PQH/PQT offset bits (18:5).
pub const PQ_OFFSET_MASK: u64 = 0x7ffe0;
/// Size of a page request descriptor in bytes.
pub const PRQ_DESC_SIZE: u64 = 32;

/// Page group response code: Success (PCIe PRI 10.4.2.1).
pub const RESP_SUCCESS: u8 = 0;
/// Page group response code: Invalid Request.
pub const RESP_INVALID: u8 = 1;
/// Page group response code: Response Failure.
pub const RESP_FAILURE: u8 = 0xf;

/// A page request from a device (PCIe Page Request Message, VT-d 7.5.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRequest {
    /// Requester ID.
    pub rid: Rid,
    /// PASID prefix (with privileged-mode and execute requested bits).
    pub pasid: Option<PasidTag>,
    /// Page address (bits 11:0 ignored).
    pub addr: u64,
    /// Read access requested.
    pub read: bool,
    /// Write access requested.
    pub write: bool,
    /// Last request in the page request group.
    pub lpig: bool,
    /// Page request group index (9 bits; higher bits ignored).
    pub prg_index: u16,
    /// Private data (descriptor QW2/QW3), if the device attached any.
    pub private_data: Option<[u64; 2]>,
}

impl PageRequest {
    /// Whether the request needs a page group response (7.5.1.1: LPIG or
    /// private data present).
    pub fn needs_response(&self) -> bool {
        self.lpig || self.private_data.is_some()
    }

    /// The response the hardware sends itself with `code`.
    pub fn response(&self, code: u8) -> PageGroupResponse {
        PageGroupResponse {
            rid: self.rid,
            pasid: self.pasid.map(|t| t.pasid.get()),
            code,
            prg_index: self.prg_index & 0x1ff,
            lpig: self.lpig,
            raw: [0, 0],
        }
    }

    /// The 256-bit page request descriptor (7.5.1.1), as Linux's
    /// `struct page_req_dsc` reads it.
    pub fn encode(&self) -> [u64; 4] {
        let mut lo = 1u64; // type 1: page request
        if let Some(t) = self.pasid {
            lo |= 1 << 8; // PP
            lo |= u64::from(t.pasid.get() & 0xf_ffff) << 32;
            if t.exec {
                lo |= 1 << 52; // ERR
            }
            if t.privileged {
                lo |= 1 << 53; // PMR
            }
        }
        if self.private_data.is_some() {
            lo |= 1 << 9; // PDP
        }
        lo |= u64::from(self.rid.0) << 16;
        let mut hi = self.addr & !0xfff;
        hi |= u64::from(self.read);
        hi |= u64::from(self.write) << 1;
        hi |= u64::from(self.lpig) << 2;
        hi |= u64::from(self.prg_index & 0x1ff) << 3;
        let [p0, p1] = self.private_data.unwrap_or([0, 0]);
        [lo, hi, p0, p1]
    }
}

/// What became of a page request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageRequestOutcome {
    /// Written to the page request queue; software will respond through
    /// the invalidation queue (to the endpoint port).
    Queued,
    /// Not queued (queue full or PRO set); the hardware responded itself
    /// (Success: retry later). The device must treat this as the group's
    /// response.
    AutoResponded(PageGroupResponse),
    /// Not queued (queue full or PRO set) and, as the request needs no
    /// response, dropped; the group's last request will be answered.
    Dropped,
    /// The request failed the checks of 7.4; the hardware responded
    /// with Invalid Request (or Response Failure when the descriptor could
    /// not be written). `None` when no response is due.
    Rejected(Option<PageGroupResponse>),
}

/// Page request counters.
#[derive(Debug, Default)]
pub struct PrqCounters {
    pub(crate) received: AtomicU64,
    pub(crate) queued: AtomicU64,
    pub(crate) overflow_auto_responded: AtomicU64,
    pub(crate) overflow_dropped: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) write_failures: AtomicU64,
    pub(crate) drains: AtomicU64,
    pub(crate) events: AtomicU64,
}

/// Snapshot of the page request counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrqStats {
    /// Page requests received.
    pub received: u64,
    /// Written to the queue.
    pub queued: u64,
    /// Not queued (full/PRO), answered by hardware.
    pub overflow_auto_responded: u64,
    /// Not queued (full/PRO), no response due: dropped.
    pub overflow_dropped: u64,
    /// Rejected by the checks of 7.4.
    pub rejected: u64,
    /// Descriptor writes that failed (queue outside guest RAM).
    pub write_failures: u64,
    /// Wait descriptors with page-request drain.
    pub drains: u64,
    /// Page request event interrupt conditions.
    pub events: u64,
}

impl PrqCounters {
    /// Snapshot.
    pub fn snapshot(&self) -> PrqStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        PrqStats {
            received: l(&self.received),
            queued: l(&self.queued),
            overflow_auto_responded: l(&self.overflow_auto_responded),
            overflow_dropped: l(&self.overflow_dropped),
            rejected: l(&self.rejected),
            write_failures: l(&self.write_failures),
            drains: l(&self.drains),
            events: l(&self.events),
        }
    }
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// Set PRS bits; an interrupt condition when neither PPR nor PRO was set
/// before (11.4.11.4/5).
fn set_prs(regs: &mut RegFile, bits: u64) -> (bool, Option<MsiMessage>) {
    let before = regs.value(PRS);
    regs.set(PRS, before | bits);
    if before & (PRS_PPR | PRS_PRO) != 0 {
        return (false, None);
    }
    (true, fault::signal(regs, PECTL))
}

/// After software wrote PRS: with both PPR and PRO clear, a pending
/// (masked) event is withdrawn (PECTL.IP cleared, 11.4.11.5).
pub fn on_prs_write(regs: &mut RegFile) {
    if regs.value(PRS) & (PRS_PPR | PRS_PRO) == 0 {
        regs.clear_bits(PECTL, ECTL_IP);
    }
}

impl Vtd {
    /// A device sends a page request (PCIe PRI; VT-d 7.4, 7.5). Returns at
    /// once; the response comes later through
    /// [`iommu_emulator::endpoint::EndpointPort::page_response`] when the request was
    /// queued, or now in the outcome when the hardware answered itself.
    /// Must not be called from inside an endpoint-port callback.
    pub fn page_request(&self, mem: &dyn GuestRam, req: &PageRequest) -> PageRequestOutcome {
        bump(&self.prq_counters.received);
        let mut msis: Vec<MsiMessage> = Vec::new();
        let outcome = {
            let mut regs = self.lock_regs();
            self.page_request_locked(&mut regs, mem, req, &mut msis)
        };
        for m in msis {
            bump(&self.prq_counters.events);
            self.counters.msis.fetch_add(1, Ordering::Relaxed);
            self.msi.raise_msi(m);
        }
        outcome
    }

    fn reject(&self, req: &PageRequest, code: u8, why: &str) -> PageRequestOutcome {
        bump(&self.prq_counters.rejected);
        tracing::debug!(rid = %req.rid, addr = req.addr, why, "vtd: page request rejected");
        PageRequestOutcome::Rejected(req.needs_response().then(|| req.response(code)))
    }

    fn page_request_locked(
        &self,
        regs: &mut RegFile,
        mem: &dyn GuestRam,
        req: &PageRequest,
        msis: &mut Vec<MsiMessage>,
    ) -> PageRequestOutcome {
        // 7.4: page requests need ECAP.PRS, translation enabled and a
        // scalable-mode context entry with PRE set.
        if !self.caps.prs {
            return self.reject(req, RESP_INVALID, "ECAP.PRS clear");
        }
        if !self.te.load(Ordering::SeqCst) {
            return self.reject(req, RESP_INVALID, "translation disabled");
        }
        let rt = self.root.load(Ordering::SeqCst);
        if rt & RTADDR_TTM_MASK != RTADDR_TTM_SCALABLE {
            return self.reject(req, RESP_INVALID, "not in scalable mode");
        }
        match lookup_context(
            &self.context_cache,
            mem,
            rt & !0xfff,
            true,
            req.rid,
            &self.caps,
        ) {
            Ok((DevCtx::Scalable(c), _, _)) if c.pre => {}
            Ok(_) => return self.reject(req, RESP_INVALID, "context entry PRE clear"),
            Err(_) => return self.reject(req, RESP_INVALID, "context entry not usable"),
        }
        // 7.5.1: queue full or overflow pending.
        let pqa = regs.value(PQA);
        let qbytes = 4096u64 << (pqa & PQA_PQS_MASK);
        let tail = regs.value(PQT) & PQ_OFFSET_MASK;
        let head = regs.value(PQH) & PQ_OFFSET_MASK;
        let tail = if tail >= qbytes { 0 } else { tail };
        let next = tail
            .saturating_add(PRQ_DESC_SIZE)
            .checked_rem(qbytes)
            .unwrap_or(0);
        if regs.value(PRS) & PRS_PRO != 0 || next == head {
            if regs.value(PRS) & PRS_PRO == 0 {
                tracing::warn!(rid = %req.rid, "vtd: page request queue full (PRO)");
                let (_, m) = set_prs(regs, PRS_PRO);
                msis.extend(m);
            }
            return if req.needs_response() {
                bump(&self.prq_counters.overflow_auto_responded);
                PageRequestOutcome::AutoResponded(req.response(RESP_SUCCESS))
            } else {
                bump(&self.prq_counters.overflow_dropped);
                PageRequestOutcome::Dropped
            };
        }
        let base = pqa & !0xfff;
        let words = req.encode();
        let mut ok = true;
        for (i, w) in (0u64..).zip(words) {
            let a = base
                .checked_add(tail)
                .and_then(|a| a.checked_add(i.saturating_mul(8)));
            match a {
                Some(a) if mem.write_u64(Gpa(a), w).is_ok() => {}
                _ => {
                    ok = false;
                    break;
                }
            }
        }
        if !ok {
            tracing::warn!(
                pqa = format_args!("{pqa:#x}"),
                "vtd: page request queue outside guest RAM"
            );
            bump(&self.prq_counters.write_failures);
            return self.reject(req, RESP_FAILURE, "queue write failed");
        }
        regs.set(PQT, next);
        bump(&self.prq_counters.queued);
        let (_, m) = set_prs(regs, PRS_PPR);
        msis.extend(m);
        PageRequestOutcome::Queued
    }

    /// Page request counters.
    pub fn prq_stats(&self) -> PrqStats {
        self.prq_counters.snapshot()
    }
}

/// The model-independent page request path (the seam of [`iommu_emulator::endpoint`]): the
/// request becomes a VT-d page request descriptor for [`Vtd::page_request`] (7.5.1.1). A
/// request whose source is not a PCI requester, or whose PASID does not fit 20 bits, fails the
/// checks of 7.4 and is answered with Invalid Request when it is the last of its group.
impl iommu_emulator::endpoint::PageRequestSink for Vtd {
    fn page_request(
        &self,
        mem: &dyn GuestRam,
        req: &iommu_emulator::endpoint::PageRequest,
    ) -> iommu_emulator::endpoint::PageRequestOutcome {
        use iommu_emulator::endpoint::{PageRequestOutcome as Out, PageResponse, PageResponseCode};
        let pasid = match req.pasid {
            Some(p) => iommu_emulator::Pasid::new(p).map(|pasid| {
                Some(PasidTag {
                    pasid,
                    privileged: req.privileged,
                    exec: req.exec,
                })
            }),
            None => Some(None),
        };
        let (iommu_emulator::SourceId::Pci(rid), Some(pasid)) = (req.source, pasid) else {
            bump(&self.prq_counters.received);
            bump(&self.prq_counters.rejected);
            return if req.last {
                Out::Responded(PageResponse {
                    source: req.source,
                    pasid: req.pasid,
                    group: req.group & 0x1ff,
                    code: PageResponseCode::InvalidRequest,
                    automatic: true,
                })
            } else {
                Out::Dropped
            };
        };
        let r = PageRequest {
            rid,
            pasid,
            addr: req.addr,
            read: req.read,
            write: req.write,
            lpig: req.last,
            prg_index: req.group,
            private_data: None,
        };
        let automatic = |resp: PageGroupResponse| {
            let mut e = resp.to_endpoint();
            e.automatic = true;
            Out::Responded(e)
        };
        match Vtd::page_request(self, mem, &r) {
            PageRequestOutcome::Queued => Out::Queued,
            PageRequestOutcome::AutoResponded(resp) | PageRequestOutcome::Rejected(Some(resp)) => {
                automatic(resp)
            }
            PageRequestOutcome::Dropped | PageRequestOutcome::Rejected(None) => Out::Dropped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iommu_emulator::Pasid;

    // 7.5.1.1: descriptor fields where Linux's page_req_dsc reads them.
    #[test]
    fn page_request_encode_fields_where_linux_reads_them() {
        let r = PageRequest {
            rid: Rid(0x0108),
            pasid: Some(PasidTag {
                pasid: Pasid::new(0x12345).unwrap(),
                privileged: true,
                exec: true,
            }),
            addr: 0x7fff_1234_5678,
            read: true,
            write: true,
            lpig: true,
            prg_index: 0x1a5,
            private_data: Some([0xaa, 0xbb]),
        };
        let [lo, hi, p0, p1] = r.encode();
        assert_eq!(lo & 0xff, 1);
        assert_eq!((lo >> 8) & 3, 3);
        assert_eq!((lo >> 16) & 0xffff, 0x0108);
        assert_eq!((lo >> 32) & 0xf_ffff, 0x12345);
        assert_eq!((lo >> 52) & 3, 3);
        assert_eq!(hi & 7, 7);
        assert_eq!((hi >> 3) & 0x1ff, 0x1a5);
        assert_eq!(hi & !0xfff, 0x7fff_1234_5000);
        assert_eq!((p0, p1), (0xaa, 0xbb));
    }
}
