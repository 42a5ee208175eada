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

impl Smmu {
    /// 8.1: the automatic response to a discarded last request: Success
    /// without PASID for requests without one; with one, the STE decides
    /// (PPAR: keep the PASID), and an STE that cannot be checked gives
    /// Failure without PASID. No event is recorded for the STE check
    /// (SMMU_CR2.REC_CFG_ATS is not implemented).
    fn auto_response(&self, mem: &dyn GuestRam, req: &PageRequest) {
        if !req.last {
            return;
        }
        let (ssid, code) = match req.ssid {
            None => (None, resp::SUCCESS),
            Some(pasid) => {
                let smmuen = self.ctrl.cr0.load(Ordering::SeqCst) & cr0::SMMUEN != 0;
                let mut cost = Cost::default();
                match self.ste(mem, req.sid, &mut cost) {
                    Ok(ste) if smmuen => (ste.ppar.then_some(pasid), resp::SUCCESS),
                    _ => (None, resp::FAILURE),
                }
            }
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
        let drop = |why: &str| {
            self.stats.pri_dropped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(?req, why, "page request discarded");
            self.auto_response(mem, req);
            PriOutcome::Dropped
        };
        if !self.config.pri {
            return drop("PRI not implemented");
        }
        if !Self::queue_enabled(&st, cr0::PRIQEN) {
            return drop("PRI queue disabled");
        }
        let (base, ring) = ring_of(st.regs.value(regs::PRIQ_BASE), self.config.priq_log2);
        let prod_reg = st.regs.value(regs::PRIQ_PROD);
        let cons_reg = st.regs.value(regs::PRIQ_CONS);
        // 8.1: an active overflow condition inhibits new entries.
        if ovf(prod_reg) != ovf(cons_reg) {
            return drop("PRI queue overflow not acknowledged");
        }
        let prod = u32::try_from(prod_reg & u64::from(ring.ptr_mask())).unwrap_or(0);
        let cons = u32::try_from(cons_reg & u64::from(ring.ptr_mask())).unwrap_or(0);
        if ring.queue_full(prod, cons) {
            st.regs.set(regs::PRIQ_PROD, prod_reg ^ queue::OVF);
            return drop("PRI queue full");
        }
        let addr = base.saturating_add(u64::from(ring.index(prod)).saturating_mul(PRI_BYTES));
        let [w0, w1] = req.encode();
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&w0.to_le_bytes());
        bytes[8..].copy_from_slice(&w1.to_le_bytes());
        if mem.write(Gpa(addr), &bytes).is_err() {
            self.raise_gerror(&mut st, mem, gerror::PRIQ_ABT_ERR);
            return drop("PRI queue write aborted");
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
