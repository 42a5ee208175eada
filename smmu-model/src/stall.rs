//! The stall fault model (IHI 0070 3.12.2, 4.7.1, 4.7.2, 5.5, 7.2.1).
//!
//! A translation-related fault (F_TRANSLATION, F_ADDR_SIZE, F_ACCESS,
//! F_PERMISSION) at a stage configured to stall (CD.S for stage 1 through
//! an STE with S1STALLD = 0, STE.S2S for stage 2) does not end the
//! transaction: the SMMU records an event with Stall = 1 and a STAG and
//! holds the transaction until software answers:
//!
//! - CMD_RESUME(StreamID, STAG, Retry): the transaction is retried as
//!   though it had just arrived (the requester translates it again);
//! - CMD_RESUME(StreamID, STAG, Terminate): it ends with an abort
//!   (IDR0.TERM_MODEL = 1, so Ab is IGNORED);
//! - CMD_STALL_TERM(StreamID): every stalled transaction of the stream is
//!   terminated with an abort;
//! - SMMU_CR0.SMMUEN 1 -> 0: every stalled transaction is terminated.
//!
//! A CMD_RESUME whose StreamID and STAG match no stalled transaction has no
//! effect (4.7.1); it is counted. A STAG is not reused until its
//! transaction has been resumed or terminated (3.12.2).
//!
//! When the event queue is not writable (disabled, full, or with an
//! unacknowledged EVENTQ_ABT_ERR) the stall record is not discarded and
//! causes no overflow (7.4): the transaction stays stalled without a
//! record and is retried as though it had just arrived once the queue is
//! writable again (3.12.2, 7.2.1), which records a new event if it still
//! faults.
//!
//! The number of transactions stalled at once is bounded by
//! [`crate::SmmuConfig::max_stalls`] (3.12.2.3: IMPLEMENTATION SPECIFIC).
//! A stall-configured fault beyond it is terminated with an abort and
//! reported with Stall = 0, as 3.12 permits an implementation to treat a
//! stalling configuration as terminating; it is counted.
//!
//! Deviations: duplicate stall records are never suppressed (3.12.2.1 makes
//! suppression optional) and there is no early retry (3.12.2.2).
//!
//! The requester learns about a stall through
//! [`crate::Smmu::translate_stallable`], which returns a [`Stall`] handle
//! whose [`Stall::resolution`] changes from `Pending` to `Retry` or
//! `Abort` when software answers; the same news goes out as a
//! [`crate::DeviceMessage::StallResolved`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use iommu_emulator::{Fault, Translation};

/// What became of a stalled transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StallResolution {
    /// Still stalled: software has not answered.
    Pending,
    /// Retry: translate the transaction again as though it had just
    /// arrived (CMD_RESUME with Retry, or its stall record could not be
    /// written and the event queue is writable again).
    Retry,
    /// Terminated with an abort (CMD_RESUME with Terminate,
    /// CMD_STALL_TERM, or SMMUEN cleared): the device sees the fault.
    Abort,
}

const PENDING: u8 = 0;
const RETRY: u8 = 1;
const ABORT: u8 = 2;

/// The resolution cell shared by the SMMU's stall table and the requester.
#[derive(Debug, Default)]
struct Slot(AtomicU8);

impl Slot {
    fn get(&self) -> StallResolution {
        match self.0.load(Ordering::Acquire) {
            PENDING => StallResolution::Pending,
            RETRY => StallResolution::Retry,
            _ => StallResolution::Abort,
        }
    }

    fn set(&self, r: StallResolution) {
        let v = match r {
            StallResolution::Pending => PENDING,
            StallResolution::Retry => RETRY,
            StallResolution::Abort => ABORT,
        };
        self.0.store(v, Ordering::Release);
    }
}

/// A stalled transaction as its requester holds it.
#[derive(Clone, Debug)]
pub struct Stall {
    /// StreamID.
    pub sid: u32,
    /// SubstreamID, when the transaction had one.
    pub ssid: Option<u32>,
    /// The STAG of its event record; `None` while the record could not be
    /// written (the transaction will be told to retry).
    pub stag: Option<u16>,
    /// The fault that stalled it (what the device sees if it is
    /// terminated).
    pub fault: Fault,
    slot: Arc<Slot>,
}

impl Stall {
    /// What software has decided so far.
    pub fn resolution(&self) -> StallResolution {
        self.slot.get()
    }
}

/// The result of [`crate::Smmu::translate_stallable`].
#[derive(Clone, Debug)]
pub enum TranslateOutcome {
    /// The transaction completed: translated, or terminated with a fault.
    Done(Result<Translation, Fault>),
    /// The transaction is stalled until software resumes or terminates it.
    Stalled(Stall),
}

/// An outstanding stalled transaction, for inspection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StalledTransaction {
    /// StreamID.
    pub sid: u32,
    /// SubstreamID.
    pub ssid: Option<u32>,
    /// STAG; `None` while its record waits for a writable event queue.
    pub stag: Option<u16>,
    /// Input address.
    pub addr: u64,
}

#[derive(Debug)]
struct Entry {
    info: StalledTransaction,
    slot: Arc<Slot>,
}

/// The SMMU's stalled transactions (kept under the register lock).
#[derive(Debug, Default)]
pub(crate) struct StallTable {
    entries: Vec<Entry>,
    next_stag: u16,
}

impl StallTable {
    /// Stalled transactions held.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Transactions whose stall record is still to be written.
    pub(crate) fn unrecorded(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| e.info.stag.is_none())
            .count()
    }

    /// A STAG no held transaction uses (3.12.2: not reused until
    /// acknowledged). Among `len + 1` consecutive candidates one is free.
    pub(crate) fn alloc_stag(&mut self) -> u16 {
        let mut c = self.next_stag;
        for _ in 0..=self.entries.len() {
            if !self.entries.iter().any(|e| e.info.stag == Some(c)) {
                break;
            }
            c = c.wrapping_add(1);
        }
        self.next_stag = c.wrapping_add(1);
        c
    }

    /// Hold a transaction; returns the requester's handle.
    pub(crate) fn insert(&mut self, info: StalledTransaction, fault: Fault) -> Stall {
        let slot = Arc::new(Slot::default());
        self.entries.push(Entry {
            info,
            slot: slot.clone(),
        });
        Stall {
            sid: info.sid,
            ssid: info.ssid,
            stag: info.stag,
            fault,
            slot,
        }
    }

    fn take_where(
        &mut self,
        mut pred: impl FnMut(&StalledTransaction) -> bool,
        r: StallResolution,
    ) -> Vec<StalledTransaction> {
        let mut out = Vec::new();
        self.entries.retain(|e| {
            if pred(&e.info) {
                e.slot.set(r);
                out.push(e.info);
                false
            } else {
                true
            }
        });
        out
    }

    /// CMD_RESUME: resolve the recorded stall of `sid` with `stag`, if any
    /// (4.7.1: no effect otherwise).
    pub(crate) fn resume(
        &mut self,
        sid: u32,
        stag: u16,
        r: StallResolution,
    ) -> Option<StalledTransaction> {
        self.take_where(|t| t.sid == sid && t.stag == Some(stag), r)
            .into_iter()
            .next()
    }

    /// CMD_STALL_TERM: terminate every stall of `sid` (4.7.2).
    pub(crate) fn terminate_stream(&mut self, sid: u32) -> Vec<StalledTransaction> {
        self.take_where(|t| t.sid == sid, StallResolution::Abort)
    }

    /// SMMUEN 1 -> 0: terminate everything (6.3.9.6).
    pub(crate) fn terminate_all(&mut self) -> Vec<StalledTransaction> {
        self.take_where(|_| true, StallResolution::Abort)
    }

    /// The event queue is writable again: retry every stall whose record
    /// was not written (3.12.2, 7.2.1).
    pub(crate) fn retry_unrecorded(&mut self) -> Vec<StalledTransaction> {
        self.take_where(|t| t.stag.is_none(), StallResolution::Retry)
    }

    /// The outstanding stalls.
    pub(crate) fn list(&self) -> Vec<StalledTransaction> {
        self.entries.iter().map(|e| e.info).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iommu_emulator::{Cycles, FaultKind, Iova};

    fn fault() -> Fault {
        Fault {
            kind: FaultKind::NotPresent,
            reason: 0x10,
            addr: Iova(0),
            level: None,
            recorded: true,
            cycles: Cycles(0),
        }
    }

    fn info(sid: u32, stag: Option<u16>) -> StalledTransaction {
        StalledTransaction {
            sid,
            ssid: None,
            stag,
            addr: 0,
        }
    }

    // 3.12.2: a STAG is not reused while its transaction is stalled.
    #[test]
    fn stall_stag_not_reused_until_resumed() {
        let mut t = StallTable::default();
        let a = t.alloc_stag();
        t.insert(info(1, Some(a)), fault());
        t.next_stag = a; // force a collision
        let b = t.alloc_stag();
        assert_ne!(a, b);
        t.insert(info(1, Some(b)), fault());
        assert!(t.resume(1, a, StallResolution::Retry).is_some());
        t.next_stag = a;
        assert_eq!(t.alloc_stag(), a);
    }

    // 4.7.1: StreamID and STAG must both match; otherwise no effect.
    #[test]
    fn stall_resume_needs_matching_sid_and_stag() {
        let mut t = StallTable::default();
        let h = t.insert(info(3, Some(7)), fault());
        assert!(t.resume(4, 7, StallResolution::Retry).is_none());
        assert!(t.resume(3, 8, StallResolution::Retry).is_none());
        assert_eq!(h.resolution(), StallResolution::Pending);
        assert!(t.resume(3, 7, StallResolution::Abort).is_some());
        assert_eq!(h.resolution(), StallResolution::Abort);
        assert_eq!(t.len(), 0);
    }

    // 4.7.2: CMD_STALL_TERM ends only the given stream's stalls.
    #[test]
    fn stall_terminate_stream_aborts_only_that_stream() {
        let mut t = StallTable::default();
        let a = t.insert(info(1, Some(1)), fault());
        let b = t.insert(info(1, None), fault());
        let c = t.insert(info(2, Some(2)), fault());
        assert_eq!(t.terminate_stream(1).len(), 2);
        assert_eq!(a.resolution(), StallResolution::Abort);
        assert_eq!(b.resolution(), StallResolution::Abort);
        assert_eq!(c.resolution(), StallResolution::Pending);
    }

    // 7.2.1: unrecorded stalls retry when the queue is writable again.
    #[test]
    fn stall_retry_unrecorded_leaves_recorded_ones() {
        let mut t = StallTable::default();
        let a = t.insert(info(1, Some(1)), fault());
        let b = t.insert(info(1, None), fault());
        assert_eq!(t.unrecorded(), 1);
        assert_eq!(t.retry_unrecorded().len(), 1);
        assert_eq!(a.resolution(), StallResolution::Pending);
        assert_eq!(b.resolution(), StallResolution::Retry);
    }
}
