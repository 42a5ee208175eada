//! The event queue (IHI 0070 7.1-7.4): records written at EVENTQ_PROD,
//! overflow flag semantics, the event-queue MSI, and counters for every
//! event the guest never sees.

use std::sync::atomic::Ordering;

use iommu_emulator::ring::Ring;
use iommu_emulator::{Gpa, GuestRam};

use crate::regs::{self, cr0, gerror, irq_ctrl, queue};
use crate::structs::event::{EVENT_BYTES, Event};
use crate::{Smmu, State, lock, ovf};

/// Geometry of a queue from its BASE register, with LOG2SIZE limited to
/// the IDR1 maximum (6.3.25: larger values behave as the maximum).
pub(crate) fn ring_of(base: u64, max_log2: u8) -> (u64, Ring) {
    let log2 = u8::try_from(base & queue::LOG2SIZE)
        .unwrap_or(0)
        .min(max_log2);
    (base & queue::BASE_ADDR, Ring::new(log2))
}

impl Smmu {
    /// 7.2.1: the event queue is writable when it is enabled, not full and
    /// has no unacknowledged EVENTQ_ABT_ERR.
    pub(crate) fn event_queue_writable(&self, st: &State) -> bool {
        if !Self::queue_enabled(st, cr0::EVENTQEN) || Self::eventq_abort_active(st) {
            return false;
        }
        let (_, ring) = ring_of(st.regs.value(regs::EVENTQ_BASE), self.config.evtq_log2);
        let mask = u64::from(ring.ptr_mask());
        let prod = u32::try_from(st.regs.value(regs::EVENTQ_PROD) & mask).unwrap_or(0);
        let cons = u32::try_from(st.regs.value(regs::EVENTQ_CONS) & mask).unwrap_or(0);
        !ring.queue_full(prod, cons)
    }

    fn eventq_abort_active(st: &State) -> bool {
        (st.regs.value(regs::GERROR) ^ st.regs.value(regs::GERRORN)) & gerror::EVENTQ_ABT_ERR != 0
    }

    /// Record `ev` in the event queue; returns whether the guest can see
    /// it.
    pub(crate) fn record_event(&self, mem: &dyn GuestRam, ev: &Event) -> bool {
        let mut st = lock(&self.state);
        self.push_event(&mut st, mem, ev)
    }

    /// 7.2: write one record, or count why it was lost.
    pub(crate) fn push_event(&self, st: &mut State, mem: &dyn GuestRam, ev: &Event) -> bool {
        self.stats.count_event(ev.kind);
        tracing::debug!(?ev, "SMMU event");
        if !Self::queue_enabled(st, cr0::EVENTQEN) {
            self.stats
                .events_dropped_disabled
                .fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if Self::eventq_abort_active(st) {
            // 7.2.1: not writable until EVENTQ_ABT_ERR is acknowledged;
            // the record is discarded without an overflow.
            self.stats
                .events_dropped_abort
                .fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let (base, ring) = ring_of(st.regs.value(regs::EVENTQ_BASE), self.config.evtq_log2);
        let prod_reg = st.regs.value(regs::EVENTQ_PROD);
        let cons_reg = st.regs.value(regs::EVENTQ_CONS);
        let prod = u32::try_from(prod_reg & u64::from(ring.ptr_mask())).unwrap_or(0);
        let cons = u32::try_from(cons_reg & u64::from(ring.ptr_mask())).unwrap_or(0);
        if ring.queue_full(prod, cons) {
            // 7.4: overflow: PROD.OVFLG is toggled so that it differs from
            // CONS.OVACKFLG; further losses while unacknowledged keep it.
            if ovf(prod_reg) == ovf(cons_reg) {
                st.regs.set(regs::EVENTQ_PROD, prod_reg ^ queue::OVF);
            }
            self.stats
                .events_dropped_overflow
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!("SMMU event queue overflow, event lost");
            return false;
        }
        let addr = base.saturating_add(u64::from(ring.index(prod)).saturating_mul(EVENT_BYTES));
        let words = ev.encode();
        let mut bytes = [0u8; 32];
        for (chunk, w) in bytes.chunks_exact_mut(8).zip(words.iter()) {
            chunk.copy_from_slice(&w.to_le_bytes());
        }
        if mem.write(Gpa(addr), &bytes).is_err() {
            // 7.2: an abort writing the queue is EVENTQ_ABT_ERR.
            self.stats
                .events_dropped_abort
                .fetch_add(1, Ordering::Relaxed);
            self.raise_gerror(st, mem, gerror::EVENTQ_ABT_ERR);
            return false;
        }
        let next = u64::from(ring.next(prod)) | ovf(prod_reg);
        st.regs.set(regs::EVENTQ_PROD, next);
        self.stats.events_written.fetch_add(1, Ordering::Relaxed);
        if st.regs.value(regs::IRQ_CTRL) & irq_ctrl::EVENTQ_IRQEN != 0 {
            let a = st.regs.value(regs::EVENTQ_IRQ_CFG0) & regs::MSI_ADDR;
            let d = st.regs.value(regs::EVENTQ_IRQ_CFG1);
            if !self.send_msi(mem, a, d) {
                self.stats.msi_not_sent.fetch_add(1, Ordering::Relaxed);
            }
        }
        true
    }
}
