//! The device's address translation cache (PCIe ATS, PCIe 6.0 §10.2-10.3)
//! and the inbox for page group responses (PCIe §10.4.2).
//!
//! Both are reached from the IOMMU's invalidation-queue path (with the
//! IOMMU's register lock held), so they have their own small locks and never
//! call back into the IOMMU or take the device's lock: no lock-order cycle
//! with a queue that is translating.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use iommu_emulator::endpoint::{
    AtcInvalidation, EndpointPort, PageRequestOutcome, PageRequestSink,
    PageResponse as EndpointPageResponse,
};
use iommu_emulator::{Perm, Rid, SourceId};

/// ATC entries kept (oldest evicted first).
pub const ATC_ENTRIES: usize = 64;
/// Page group responses held until the device looks at them.
pub const INBOX_DEPTH: usize = 512;

/// One cached translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AtcEntry {
    /// PASID the translation was requested with (None: no prefix).
    pub pasid: Option<u32>,
    /// Untranslated page base.
    pub iova: u64,
    /// Page size in bytes (power of two).
    pub size: u64,
    /// Translated page base.
    pub output: u64,
    /// Rights granted.
    pub perm: Perm,
}

/// A page group response as the device receives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageResponse {
    /// PASID the response carries.
    pub pasid: Option<u32>,
    /// Page request group index.
    pub prg_index: u16,
    /// Response code: 0 success, 1 invalid request, 0xf response failure.
    pub code: u8,
}

/// ATC plus page-response inbox, shared between the device and whatever
/// delivers IOMMU messages to it.
#[derive(Debug)]
pub struct Atc {
    rid: Rid,
    entries: Mutex<VecDeque<AtcEntry>>,
    inbox: Mutex<VecDeque<PageResponse>>,
    invalidations: AtomicU32,
    responses: AtomicU32,
    dropped_responses: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Atc {
    /// An empty cache for the function `rid`.
    pub fn new(rid: Rid) -> Self {
        Atc {
            rid,
            entries: Mutex::new(VecDeque::new()),
            inbox: Mutex::new(VecDeque::new()),
            invalidations: AtomicU32::new(0),
            responses: AtomicU32::new(0),
            dropped_responses: AtomicU64::new(0),
        }
    }

    /// The requester ID messages must carry.
    pub fn rid(&self) -> Rid {
        self.rid
    }

    /// Look up `iova` for `pasid` needing `access`.
    pub fn lookup(&self, pasid: Option<u32>, iova: u64, access: Perm) -> Option<AtcEntry> {
        lock(&self.entries)
            .iter()
            .find(|e| {
                e.pasid == pasid
                    && iova >= e.iova
                    && iova.wrapping_sub(e.iova) < e.size
                    && e.perm.allows(access)
            })
            .copied()
    }

    /// Cache a translation completion.
    pub fn insert(&self, e: AtcEntry) {
        let mut g = lock(&self.entries);
        g.retain(|x| !(x.pasid == e.pasid && x.iova == e.iova));
        if g.len() >= ATC_ENTRIES {
            g.pop_front();
        }
        g.push_back(e);
    }

    /// Entries cached.
    pub fn len(&self) -> usize {
        lock(&self.entries).len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drop everything (function reset).
    pub fn flush(&self) {
        lock(&self.entries).clear();
    }

    /// An invalidation request (PCIe §10.3.1): entries overlapping
    /// `[addr, addr + size)`. Without a PASID it applies to entries of
    /// every PASID (§10.3.8); `global` widens a PASID-tagged one to every
    /// PASID as well (over-invalidation is allowed). Returns the number of
    /// entries removed.
    pub fn invalidate(&self, pasid: Option<u32>, global: bool, addr: u64, size: u64) -> usize {
        self.invalidations.fetch_add(1, Ordering::Relaxed);
        let end = addr.saturating_add(size.max(1));
        let mut g = lock(&self.entries);
        let before = g.len();
        g.retain(|e| {
            let pasid_match = pasid.is_none() || global || e.pasid == pasid;
            let overlap = e.iova < end && addr < e.iova.saturating_add(e.size);
            !(pasid_match && overlap)
        });
        before.saturating_sub(g.len())
    }

    /// Invalidation requests received.
    pub fn invalidations(&self) -> u32 {
        self.invalidations.load(Ordering::Relaxed)
    }

    /// Queue a page group response for the device (dropped and counted when
    /// the inbox is full).
    pub fn deliver_response(&self, r: PageResponse) {
        self.responses.fetch_add(1, Ordering::Relaxed);
        let mut g = lock(&self.inbox);
        if g.len() >= INBOX_DEPTH {
            self.dropped_responses.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("pasid-test: page response inbox full, response dropped");
            return;
        }
        g.push_back(r);
    }

    /// Take the responses waiting.
    pub fn take_responses(&self) -> Vec<PageResponse> {
        lock(&self.inbox).drain(..).collect()
    }

    /// Page group responses received.
    pub fn responses(&self) -> u32 {
        self.responses.load(Ordering::Relaxed)
    }

    /// Responses dropped because the inbox was full.
    pub fn dropped_responses(&self) -> u64 {
        self.dropped_responses.load(Ordering::Relaxed)
    }
}

/// What the IOMMU sends this function (the seam of [`iommu_emulator::endpoint`], the same
/// behind VT-d and SMMUv3): ATC invalidations (VT-d 6.5.2.5/6.5.2.6, SMMUv3 CMD_ATC_INV) and
/// page group responses (VT-d 6.5.2.10, SMMUv3 CMD_PRI_RESP). Messages for other functions
/// are ignored.
impl EndpointPort for Atc {
    fn invalidate_atc(&self, inv: &AtcInvalidation) {
        if inv.source != SourceId::Pci(self.rid) {
            return;
        }
        let n = self.invalidate(inv.pasid, inv.global, inv.addr, inv.size);
        tracing::debug!(
            "pasid-test: ATC invalidation pasid {:?} {:#x}+{:#x}: {n} entries",
            inv.pasid,
            inv.addr,
            inv.size
        );
    }

    fn page_response(&self, resp: &EndpointPageResponse) {
        if resp.source != SourceId::Pci(self.rid) {
            return;
        }
        self.deliver_response(PageResponse {
            pasid: resp.pasid,
            prg_index: resp.group,
            code: resp.code.pcie(),
        });
    }
}

/// Page requests into an IOMMU unit's page request queue (VT-d 7.5, SMMUv3 8) through its
/// [`PageRequestSink`]; answers come back through the [`Atc`] as the endpoint port, or at once
/// when the unit responds itself.
pub struct UnitPageRequests {
    /// The unit's page request path.
    pub sink: std::sync::Arc<dyn PageRequestSink>,
    /// Guest memory the queue lives in.
    pub ram: std::sync::Arc<dyn iommu_emulator::GuestRam>,
    /// The device's ATC and inbox (for its requester ID and immediate responses).
    pub atc: std::sync::Arc<Atc>,
}

impl super::PageRequestPort for UnitPageRequests {
    fn page_request(&self, req: &super::PageRequest) -> bool {
        let r = iommu_emulator::endpoint::PageRequest {
            source: SourceId::Pci(self.atc.rid()),
            pasid: req.pasid.map(|t| t.pasid.get()),
            privileged: req.pasid.is_some_and(|t| t.privileged),
            exec: req.pasid.is_some_and(|t| t.exec),
            addr: req.addr,
            read: req.read,
            write: req.write,
            last: req.last,
            group: req.prg_index,
        };
        match self.sink.page_request(self.ram.as_ref(), &r) {
            PageRequestOutcome::Queued => true,
            PageRequestOutcome::Responded(resp) => {
                self.atc.deliver_response(PageResponse {
                    pasid: resp.pasid,
                    prg_index: resp.group,
                    code: resp.code.pcie(),
                });
                true
            }
            PageRequestOutcome::Dropped => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(pasid: Option<u32>, iova: u64) -> AtcEntry {
        AtcEntry {
            pasid,
            iova,
            size: 4096,
            output: iova + 0x10_0000,
            perm: Perm::RW,
        }
    }

    // PCIe 6.0 §10.3.8: a request without PASID invalidates every PASID's
    // entries in the range; one with a PASID only that PASID's.
    #[test]
    fn atc_invalidate_without_pasid_clears_all_pasids_in_range() {
        let a = Atc::new(Rid(8));
        a.insert(e(Some(1), 0x1000));
        a.insert(e(Some(2), 0x1000));
        a.insert(e(Some(2), 0x9000));
        assert_eq!(a.invalidate(Some(1), false, 0x1000, 4096), 1);
        assert!(a.lookup(Some(2), 0x1008, Perm::R).is_some());
        assert_eq!(a.invalidate(None, false, 0, 0x2000), 1);
        assert!(a.lookup(Some(2), 0x1008, Perm::R).is_none());
        assert!(a.lookup(Some(2), 0x9000, Perm::W).is_some());
        assert_eq!(a.invalidations(), 2);
    }

    #[test]
    fn atc_is_bounded_and_evicts_oldest() {
        let a = Atc::new(Rid(8));
        for i in 0..(ATC_ENTRIES as u64 + 3) {
            a.insert(e(None, i << 12));
        }
        assert_eq!(a.len(), ATC_ENTRIES);
        assert!(a.lookup(None, 0, Perm::R).is_none());
    }

    #[test]
    fn atc_inbox_full_drops_and_counts() {
        let a = Atc::new(Rid(8));
        for i in 0..(INBOX_DEPTH + 2) {
            a.deliver_response(PageResponse {
                pasid: None,
                prg_index: i as u16,
                code: 0,
            });
        }
        assert_eq!(a.dropped_responses(), 2);
        assert_eq!(a.take_responses().len(), INBOX_DEPTH);
    }
}
