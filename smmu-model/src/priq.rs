//! The PRI queue (IHI 0070 8): PCIe page requests from devices are written
//! as 16-byte records; CMD_PRI_RESP answers go back to the device as
//! [`DeviceMessage::PriResponse`].

use std::sync::atomic::Ordering;

use iommu_emulator::{Gpa, GuestRam};

use crate::config::Cost;
use crate::eventq::ring_of;
use crate::regs::{self, cr0, gerror, irq_ctrl, queue};
use crate::structs::event::{PRI_BYTES, PageRequest};
use crate::{DeviceMessage, Smmu, lock, ovf};

/// What happened to a page request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PriOutcome {
    /// Written to the PRI queue; software will answer with CMD_PRI_RESP.
    Queued,
    /// Discarded (PRI not implemented, queue disabled, full or in
    /// overflow, write abort). When it was the last request of its group
    /// the SMMU answered it itself (8.1) with a
    /// [`DeviceMessage::PriResponse`] marked `automatic`.
    Dropped,
}

/// CMD_PRI_RESP-style response codes (4.7.1; PCIe Success / Response
/// Failure).
pub mod resp {
    /// Response Failure.
    pub const FAILURE: u8 = 1;
    /// Success.
    pub const SUCCESS: u8 = 2;
}

/// Why a page request was discarded (8.1, 8.2): decides the automatic
/// response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Discard {
    /// PRI queue overflow: Last requests answered per 8.1.
    Overflow,
    /// Effective PRIQEN = 0, PRIQ_ABT_ERR active, or the write aborted:
    /// every request answered with Response Failure, no PASID (8.2).
    Unavailable,
}

impl Smmu {
    /// 8.1 / 8.2: the automatic response to a discarded request. Stop
    /// Markers (PASID, L/W/R = 1/0/0) never get one.
    fn auto_response(&self, mem: &dyn GuestRam, req: &PageRequest, why: Discard) {
        if req.ssid.is_some() && req.last && !req.read && !req.write {
            return;
        }
        let (ssid, code) = match why {
            Discard::Unavailable => (None, resp::FAILURE),
            // 8.1: only the Last request of a group is answered; without a
            // PASID: Success; with one, the STE decides (PPAR keeps the
            // PASID), and an STE that cannot be checked gives Failure
            // without PASID. No event is recorded for the STE check
            // (SMMU_CR2.REC_CFG_ATS is not implemented).
            Discard::Overflow if !req.last => return,
            Discard::Overflow => match req.ssid {
                None => (None, resp::SUCCESS),
                Some(pasid) => {
                    let smmuen = self.ctrl.cr0.load(Ordering::SeqCst) & cr0::SMMUEN != 0;
                    let mut cost = Cost::default();
                    match self.ste(mem, req.sid, &mut cost) {
                        Ok(ste) if smmuen => (ste.ppar.then_some(pasid), resp::SUCCESS),
                        _ => (None, resp::FAILURE),
                    }
                }
            },
        };
        self.push_device_message(DeviceMessage::PriResponse {
            sid: req.sid,
            ssid,
            grpid: req.prg_index,
            resp: code,
            automatic: true,
        });
    }

    /// A device's page request (PCIe PRI) arriving at the SMMU (8).
    pub fn page_request(&self, mem: &dyn GuestRam, req: &PageRequest) -> PriOutcome {
        let mut st = lock(&self.state);
        let drop = |why: &str, d: Discard| {
            self.stats.pri_dropped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(?req, why, "page request discarded");
            self.auto_response(mem, req, d);
            PriOutcome::Dropped
        };
        if !self.config.pri {
            return drop("PRI not implemented", Discard::Unavailable);
        }
        // 8.2: effective PRIQEN is 0 when SMMUEN = 0 (6.3.9.5).
        if !Self::queue_enabled(&st, cr0::PRIQEN) || !Self::queue_enabled(&st, cr0::SMMUEN) {
            return drop("PRI queue disabled", Discard::Unavailable);
        }
        let gerr = st.regs.value(regs::GERROR) ^ st.regs.value(regs::GERRORN);
        if gerr & gerror::PRIQ_ABT_ERR != 0 {
            return drop("PRIQ_ABT_ERR active", Discard::Unavailable);
        }
        let (base, ring) = ring_of(st.regs.value(regs::PRIQ_BASE), self.config.priq_log2);
        let prod_reg = st.regs.value(regs::PRIQ_PROD);
        let cons_reg = st.regs.value(regs::PRIQ_CONS);
        // 8.1: an active overflow condition inhibits new entries.
        if ovf(prod_reg) != ovf(cons_reg) {
            return drop("PRI queue overflow not acknowledged", Discard::Overflow);
        }
        let prod = u32::try_from(prod_reg & u64::from(ring.ptr_mask())).unwrap_or(0);
        let cons = u32::try_from(cons_reg & u64::from(ring.ptr_mask())).unwrap_or(0);
        if ring.queue_full(prod, cons) {
            st.regs.set(regs::PRIQ_PROD, prod_reg ^ queue::OVF);
            return drop("PRI queue full", Discard::Overflow);
        }
        let addr = base.saturating_add(u64::from(ring.index(prod)).saturating_mul(PRI_BYTES));
        let [w0, w1] = req.encode();
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&w0.to_le_bytes());
        bytes[8..].copy_from_slice(&w1.to_le_bytes());
        if mem.write(Gpa(addr), &bytes).is_err() {
            // 8.2: a synchronous abort answers the request with Failure.
            self.raise_gerror(&mut st, mem, gerror::PRIQ_ABT_ERR);
            return drop("PRI queue write aborted", Discard::Unavailable);
        }
        st.regs
            .set(regs::PRIQ_PROD, u64::from(ring.next(prod)) | ovf(prod_reg));
        self.stats.pri_written.fetch_add(1, Ordering::Relaxed);
        if st.regs.value(regs::IRQ_CTRL) & irq_ctrl::PRIQ_IRQEN != 0 {
            let a = st.regs.value(regs::PRIQ_IRQ_CFG0) & regs::MSI_ADDR;
            let d = st.regs.value(regs::PRIQ_IRQ_CFG1);
            if !self.send_msi(mem, a, d) {
                self.stats.msi_not_sent.fetch_add(1, Ordering::Relaxed);
            }
        }
        PriOutcome::Queued
    }
}

/// The model-independent page request path (the seam of [`iommu_emulator::endpoint`]): the
/// request becomes a PRI queue record (8.1) with the source's StreamID. A discarded last
/// request is answered through the endpoint port (an automatic CMD_PRI_RESP-style response),
/// so the outcome here is only `Queued` or `Dropped`.
impl iommu_emulator::endpoint::PageRequestSink for Smmu {
    fn page_request(
        &self,
        mem: &dyn GuestRam,
        req: &iommu_emulator::endpoint::PageRequest,
    ) -> iommu_emulator::endpoint::PageRequestOutcome {
        let r = PageRequest {
            sid: req.source.stream_id(),
            ssid: req.pasid,
            addr: req.addr,
            read: req.read,
            write: req.write,
            exec: req.exec,
            privileged: req.privileged,
            last: req.last,
            prg_index: req.group,
        };
        match Smmu::page_request(self, mem, &r) {
            PriOutcome::Queued => iommu_emulator::endpoint::PageRequestOutcome::Queued,
            PriOutcome::Dropped => iommu_emulator::endpoint::PageRequestOutcome::Dropped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SmmuConfig;
    use iommu_emulator::testing::{FakeRam, RecordingMsi};
    use std::sync::Arc;

    fn ppr(ssid: Option<u32>, last: bool, read: bool) -> PageRequest {
        PageRequest {
            sid: 1,
            ssid,
            addr: 0x1000,
            read,
            write: false,
            exec: false,
            privileged: false,
            last,
            prg_index: 3,
        }
    }

    // 8.2: with the PRI queue disabled (or SMMUEN = 0) every request, Last
    // or not, is answered with Response Failure and no PASID; Stop Markers
    // get no answer.
    #[test]
    fn priq_disabled_answers_every_request_with_failure() {
        let s = Smmu::new(SmmuConfig::default(), Arc::new(RecordingMsi::new())).unwrap();
        let m = FakeRam::new(1 << 20);
        // PRIQEN without SMMUEN is effectively 0.
        s.mmio_write(&m, regs::PRIQ_BASE, 8, 0x1_0000 | 2);
        s.mmio_write(&m, regs::CR0, 4, cr0::PRIQEN);
        for r in [ppr(None, false, true), ppr(Some(5), true, true)] {
            assert_eq!(s.page_request(&m, &r), PriOutcome::Dropped);
        }
        assert_eq!(
            s.page_request(&m, &ppr(Some(5), true, false)),
            PriOutcome::Dropped
        );
        let fail = DeviceMessage::PriResponse {
            sid: 1,
            ssid: None,
            grpid: 3,
            resp: resp::FAILURE,
            automatic: true,
        };
        assert_eq!(s.take_device_messages(), vec![fail, fail]);
        s.mmio_write(&m, regs::CR0, 4, cr0::PRIQEN | cr0::SMMUEN);
        assert_eq!(
            s.page_request(&m, &ppr(None, false, true)),
            PriOutcome::Queued
        );
    }

    // 8.2: a write abort raises PRIQ_ABT_ERR; until it is acknowledged no
    // entry is written.
    #[test]
    fn priq_abort_error_blocks_queue_until_acknowledged() {
        let s = Smmu::new(SmmuConfig::default(), Arc::new(RecordingMsi::new())).unwrap();
        let m = FakeRam::new(1 << 20);
        s.mmio_write(&m, regs::PRIQ_BASE, 8, (1 << 30) | 2); // outside RAM
        s.mmio_write(&m, regs::CR0, 4, cr0::PRIQEN | cr0::SMMUEN);
        assert_eq!(
            s.page_request(&m, &ppr(None, false, true)),
            PriOutcome::Dropped
        );
        let g = s.mmio_read(&m, regs::GERROR, 4);
        assert_ne!(g & gerror::PRIQ_ABT_ERR, 0);
        s.mmio_write(&m, regs::CR0, 4, cr0::SMMUEN);
        s.mmio_write(&m, regs::PRIQ_BASE, 8, 0x1_0000 | 2);
        s.mmio_write(&m, regs::CR0, 4, cr0::PRIQEN | cr0::SMMUEN);
        assert_eq!(
            s.page_request(&m, &ppr(None, false, true)),
            PriOutcome::Dropped
        );
        s.mmio_write(&m, regs::GERRORN, 4, g);
        assert_eq!(
            s.page_request(&m, &ppr(None, false, true)),
            PriOutcome::Queued
        );
        assert_eq!(s.stats().pri_dropped, 2);
    }
}
