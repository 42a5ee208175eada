//! Arm SMMUv3 model.
//!
//! Follows the Arm System Memory Management Unit Architecture Specification,
//! SMMU architecture version 3 (IHI 0070, revision E.a; the model advertises
//! SMMUv3.2 in AIDR for range invalidation). A pure state machine: register
//! accesses ([`Smmu::mmio_read`], [`Smmu::mmio_write`]), DMA translation
//! requests ([`iommu_emulator::Iommu::translate`]) and page requests
//! ([`Smmu::page_request`]), with guest memory passed into each call.
//!
//! Modules mirror the VT-d model (STYLE rule 2):
//! - [`props`]: the device configuration ([`SmmuConfig`], QEMU-like
//!   properties) and the ID registers derived from it;
//! - [`regs`]: register offsets and specifications;
//! - [`structs`]: STE, CD, commands, events and PRI records;
//! - [`config`]: stream-table and CD-table fetch (linear and two-level),
//!   decode, and the STE/CD configuration caches;
//! - [`walk`]: translation (stage 1, stage 2, nested) through the core
//!   VMSAv8-64 walker;
//! - [`tlb`]: the TLB, tagged by StreamWorld, VMID, ASID and address;
//!   cached STEs, CDs and TLB entries are stored packed into whole words
//!   (`packed.rs`, `tlb.rs`) so the translation path reads them back
//!   without store-forwarding stalls;
//! - [`cmdq`], [`eventq`], [`priq`]: the three queues;
//! - [`stall`]: the stall fault model (stalled transactions, STAGs,
//!   CMD_RESUME / CMD_STALL_TERM);
//! - [`acpi`]: the IORT table and a device-tree node;
//! - [`stats`]: counters and their report.
//!
//! Deviations and limits (documented where they apply):
//! - AArch64 little-endian tables only (IDR0.TTF = AArch64, TTENDIAN = LE);
//!   no HTTU; OAS at most 48 bits; no Secure state, no ECMDQ, no
//!   VATOS/ATOS, no MPAM. IDR0.STALL_MODEL comes from the configuration;
//!   stall records are never suppressed as duplicates and stalled
//!   transactions never retry early (both optional, 3.12.2.1-2).
//! - A requester that can hold a transaction uses
//!   [`Smmu::translate_stallable`]; the generic
//!   [`iommu_emulator::Iommu::translate`] returns a stalled transaction as
//!   its fault while the SMMU keeps it stalled until software answers.
//! - F_CFG_CONFLICT, F_TLB_CONFLICT, F_UUT, E_PAGE_REQUEST and F_VMS_FETCH
//!   are never raised (see the README for why).
//! - Every command completes synchronously inside the CMDQ_PROD write, so
//!   CMD_SYNC completes as soon as it is consumed; processing is bounded by
//!   the queue size.
//! - ATC invalidations and PRI responses are delivered to the device model
//!   as [`DeviceMessage`]s that the caller drains with
//!   [`Smmu::take_device_messages`]; the device is assumed to act on them
//!   before the next CMD_SYNC completes.
//! - An MSI (IRQ_CFG registers or CMD_SYNC completion) is a 32-bit write:
//!   to guest RAM when its address is RAM (Linux's CMD_SYNC polling), else
//!   to the [`MsiSink`] (the interrupt controller's doorbell).
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic,
        clippy::arithmetic_side_effects,
        clippy::cast_possible_truncation
    )
)]

pub mod acpi;
pub mod cmdq;
pub mod config;
pub mod eventq;
#[cfg(any(test, feature = "test-utils"))]
pub mod fuzzing;
mod packed;
pub mod priq;
pub mod props;
pub mod regs;
pub mod stall;
pub mod stats;
pub mod structs;
pub mod tlb;
pub mod walk;

use iommu_emulator::endpoint::EndpointPort;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use iommu_emulator::regs::{RegFile, RegWrite};
use iommu_emulator::{Cache, GuestRam, MsiMessage, MsiSink};

pub use props::{PROPERTIES, SmmuConfig, Stages, StallModel};
pub use stall::{Stall, StallResolution, StalledTransaction, TranslateOutcome};
pub use stats::SmmuStats;
pub use structs::event::{Event, EventType, PageRequest};

use config::{CdTag, SteTag};
use regs::{cr0, gbpa, gerror, irq_ctrl, queue};
use structs::Caps;

/// Host and configuration errors (architectural faults are values, see
/// [`EventType`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A property had a bad value.
    #[error("property {key}={value}: {why}")]
    Property {
        /// Key.
        key: String,
        /// Value.
        value: String,
        /// Reason.
        why: String,
    },
    /// A cache geometry was refused.
    #[error("cache configuration: {0}")]
    Cache(#[from] iommu_emulator::cache::CacheConfigError),
}

/// A message for the device model: what the SMMU sends downstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceMessage {
    /// CMD_ATC_INV (IHI 0070 4.5.1): invalidate the device's ATC.
    AtcInvalidate {
        /// StreamID.
        sid: u32,
        /// PASID, when SSV.
        ssid: Option<u32>,
        /// Start address.
        addr: u64,
        /// log2 of the number of 4 KiB pages.
        size: u8,
        /// Global: all PASIDs.
        global: bool,
    },
    /// CMD_PRI_RESP (4.7.1), or the automatic response the SMMU sends
    /// for a discarded last request of a group (8.2).
    PriResponse {
        /// StreamID.
        sid: u32,
        /// PASID, when SSV.
        ssid: Option<u32>,
        /// Page Request Group index.
        grpid: u16,
        /// 0 = invalid request, 1 = response failure, 2 = success.
        resp: u8,
        /// Sent by the SMMU itself (PRI queue overflow or disabled).
        automatic: bool,
    },
    /// A stalled transaction was answered (3.12.2): resumed or terminated
    /// by CMD_RESUME, terminated by CMD_STALL_TERM or by clearing SMMUEN,
    /// or told to retry because its stall record could not be written
    /// (7.2.1). The [`Stall`] handle carries the same news.
    StallResolved {
        /// StreamID.
        sid: u32,
        /// SubstreamID of the transaction.
        ssid: Option<u32>,
        /// STAG of its record (`None`: no record was written).
        stag: Option<u16>,
        /// Input address.
        addr: u64,
        /// Retry (translate again) or abort.
        resolution: StallResolution,
    },
}

impl DeviceMessage {
    /// Delivers the message to an endpoint port (the model-independent seam of
    /// [`iommu_emulator::endpoint`]), with the StreamID as the source: PCI endpoints' StreamIDs
    /// are their requester IDs, so the source is `SourceId::Pci` when the StreamID fits 16
    /// bits.
    pub fn deliver(&self, port: &dyn EndpointPort) {
        use iommu_emulator::endpoint::{
            AtcInvalidation, PageResponse, PageResponseCode, StallResponse,
        };
        let source = |sid: u32| match u16::try_from(sid) {
            Ok(rid) => iommu_emulator::SourceId::Pci(iommu_emulator::Rid(rid)),
            Err(_) => iommu_emulator::SourceId::Stream(sid),
        };
        match *self {
            DeviceMessage::AtcInvalidate {
                sid,
                ssid,
                addr,
                size,
                global,
            } => port.invalidate_atc(&AtcInvalidation {
                source: source(sid),
                pasid: ssid,
                global,
                // 4.5.1: SIZE is log2 of the number of 4 KiB pages, ADDR aligned to it.
                addr,
                size: 4096u64.checked_shl(u32::from(size)).unwrap_or(u64::MAX),
            }),
            DeviceMessage::PriResponse {
                sid,
                ssid,
                grpid,
                resp,
                automatic,
            } => port.page_response(&PageResponse {
                source: source(sid),
                pasid: ssid,
                group: grpid,
                // 4.7.1 RESP: 0b00 Deny (Invalid Request), 0b01 Fail, 0b10 Success.
                code: match resp {
                    2 => PageResponseCode::Success,
                    0 => PageResponseCode::InvalidRequest,
                    _ => PageResponseCode::ResponseFailure,
                },
                automatic,
            }),
            DeviceMessage::StallResolved {
                sid,
                ssid,
                addr,
                resolution,
                ..
            } => port.stall_resolved(&StallResponse {
                source: source(sid),
                pasid: ssid,
                addr,
                retry: resolution == StallResolution::Retry,
            }),
        }
    }
}

/// Largest number of undelivered [`DeviceMessage`]s kept; further ones are
/// dropped and counted.
pub const MAX_DEVICE_MESSAGES: usize = 4096;

/// Register-side state: everything MMIO touches, under one lock.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) regs: RegFile,
    pub(crate) stalls: stall::StallTable,
}

/// Register values the translation path reads without the state lock.
#[derive(Debug, Default)]
pub(crate) struct Control {
    pub(crate) cr0: AtomicU64,
    pub(crate) cr2: AtomicU64,
    pub(crate) gbpa: AtomicU64,
    pub(crate) strtab_base: AtomicU64,
    pub(crate) strtab_cfg: AtomicU64,
}

/// An SMMUv3 instance.
pub struct Smmu {
    pub(crate) config: SmmuConfig,
    pub(crate) caps: Caps,
    pub(crate) msi: Arc<dyn MsiSink>,
    pub(crate) state: Mutex<State>,
    pub(crate) ctrl: Control,
    pub(crate) ste_cache: Cache<SteTag, packed::PackedSte>,
    pub(crate) cd_cache: Cache<CdTag, packed::PackedCd>,
    pub(crate) tlb: tlb::Tlb,
    pub(crate) stats: stats::Stats,
    pub(crate) outbox: Mutex<VecDeque<DeviceMessage>>,
    pub(crate) notifier: std::sync::RwLock<Option<Arc<dyn EndpointPort>>>,
}

impl std::fmt::Debug for Smmu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Smmu")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Smmu {
    /// A reset SMMU with `config`, raising its interrupts through `msi`.
    pub fn new(config: SmmuConfig, msi: Arc<dyn MsiSink>) -> Result<Self, Error> {
        config.validate()?;
        let mut regs = RegFile::new(regs::SPECS);
        regs.set(regs::IDR0, u64::from(config.idr0()));
        regs.set(regs::IDR1, u64::from(config.idr1()));
        regs.set(regs::IDR3, u64::from(config.idr3()));
        regs.set(regs::IDR5, u64::from(config.idr5()));
        // IIDR: implementer 0x43b (Arm's JEP106 code, as QEMU reports).
        regs.set(regs::IIDR, 0x43b);
        // AIDR: SMMUv3.2 (ArchMajorRev 0 = v3, ArchMinorRev 2).
        regs.set(regs::AIDR, 0x2);
        let ctrl = Control::default();
        ctrl.gbpa.store(gbpa::RESET, Ordering::SeqCst);
        Ok(Smmu {
            caps: Caps::from_config(&config),
            ste_cache: Cache::new(config.ste_cache)?,
            cd_cache: Cache::new(config.cd_cache)?,
            tlb: tlb::Tlb::new(config.tlb)?,
            config,
            msi,
            state: Mutex::new(State {
                regs,
                stalls: stall::StallTable::default(),
            }),
            ctrl,
            stats: stats::Stats::default(),
            outbox: Mutex::new(VecDeque::new()),
            notifier: std::sync::RwLock::new(None),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SmmuConfig {
        &self.config
    }

    /// Read `size` (4 or 8) bytes of the register frame at `offset`.
    /// Unknown offsets read as zero (counted).
    pub fn mmio_read(&self, _mem: &dyn GuestRam, offset: u64, size: u8) -> u64 {
        let st = lock(&self.state);
        st.regs.read(regs::canonical_offset(offset), size)
    }

    /// Write `size` (4 or 8) bytes of the register frame at `offset`, with
    /// the register's side effects (IHI 0070 6.3). Unknown offsets are
    /// ignored (counted).
    pub fn mmio_write(&self, mem: &dyn GuestRam, offset: u64, size: u8, value: u64) {
        let mut st = lock(&self.state);
        let offset = regs::canonical_offset(offset);
        let Some(w) = st.regs.write(offset, size, value) else {
            tracing::debug!(
                offset,
                size,
                value,
                "SMMU write to unknown register ignored"
            );
            return;
        };
        self.on_write(&mut st, mem, &w);
    }

    fn restore(st: &mut State, w: &RegWrite) {
        st.regs.set(w.offset, w.old);
    }

    fn on_write(&self, st: &mut State, mem: &dyn GuestRam, w: &RegWrite) {
        let cr0ack = st.regs.value(regs::CR0ACK);
        match w.offset {
            regs::CR0 => self.on_cr0_write(st, mem, w),
            regs::GBPA => self.on_gbpa_write(st, w),
            regs::CR2 => self.ctrl.cr2.store(w.new, Ordering::SeqCst),
            regs::IRQ_CTRL => {
                // 6.3.16: the update is acknowledged in IRQ_CTRLACK.
                st.regs.set(regs::IRQ_CTRLACK, w.new);
            }
            regs::GERRORN => {
                let active_before = (st.regs.value(regs::GERROR) ^ w.old) & gerror::CMDQ_ERR;
                let active_after = (st.regs.value(regs::GERROR) ^ w.new) & gerror::CMDQ_ERR;
                if active_before != 0 && active_after == 0 {
                    // 7.1: the command queue resumes once CMDQ_ERR is
                    // acknowledged; CONS.ERR stays until then.
                    self.process_cmdq(st, mem);
                }
            }
            // 6.3.23-24: ignored while SMMUEN (or its ack) is 1.
            regs::STRTAB_BASE | regs::STRTAB_BASE_CFG => {
                if cr0ack & cr0::SMMUEN != 0 {
                    tracing::warn!("STRTAB_BASE(_CFG) write while SMMUEN=1 ignored");
                    Self::restore(st, w);
                } else {
                    self.ctrl
                        .strtab_base
                        .store(st.regs.value(regs::STRTAB_BASE), Ordering::SeqCst);
                    self.ctrl
                        .strtab_cfg
                        .store(st.regs.value(regs::STRTAB_BASE_CFG), Ordering::SeqCst);
                }
            }
            // 6.3.25-27: base and CONS are ignored while the queue is on.
            regs::CMDQ_BASE | regs::CMDQ_CONS if cr0ack & cr0::CMDQEN != 0 => {
                Self::restore(st, w);
            }
            regs::CMDQ_PROD => self.process_cmdq(st, mem),
            regs::EVENTQ_BASE | regs::EVENTQ_PROD if cr0ack & cr0::EVENTQEN != 0 => {
                Self::restore(st, w);
            }
            regs::PRIQ_BASE | regs::PRIQ_PROD if cr0ack & cr0::PRIQEN != 0 => {
                Self::restore(st, w);
            }
            _ => {}
        }
        // 3.12.2 / 7.2.1: stalls whose record could not be written retry
        // once the event queue is writable again (space freed, queue
        // enabled, EVENTQ_ABT_ERR acknowledged).
        if matches!(w.offset, regs::EVENTQ_CONS | regs::CR0 | regs::GERRORN) {
            self.retry_deferred_stalls(st);
        }
    }

    /// Resolve the stalls whose record is still to be written with Retry
    /// when the event queue is writable.
    fn retry_deferred_stalls(&self, st: &mut State) {
        if st.stalls.unrecorded() == 0 || !self.event_queue_writable(st) {
            return;
        }
        for t in st.stalls.retry_unrecorded() {
            self.stats
                .stalls_deferred_retried
                .fetch_add(1, Ordering::Relaxed);
            self.stall_resolved(&t, StallResolution::Retry);
        }
    }

    /// Tell the device a stalled transaction was answered.
    pub(crate) fn stall_resolved(&self, t: &StalledTransaction, resolution: StallResolution) {
        tracing::debug!(?t, ?resolution, "SMMU stalled transaction resolved");
        self.push_device_message(DeviceMessage::StallResolved {
            sid: t.sid,
            ssid: t.ssid,
            stag: t.stag,
            addr: t.addr,
            resolution,
        });
    }

    /// The transactions stalled now (3.12.2), oldest first.
    pub fn stalled(&self) -> Vec<StalledTransaction> {
        lock(&self.state).stalls.list()
    }

    /// 6.3.9 / 6.3.10: CR0 changes take effect and are acknowledged in
    /// CR0ACK at once.
    fn on_cr0_write(&self, st: &mut State, mem: &dyn GuestRam, w: &RegWrite) {
        st.regs.set(regs::CR0ACK, w.new);
        self.ctrl.cr0.store(w.new, Ordering::SeqCst);
        let enabled = w.new & !w.old;
        if enabled & cr0::SMMUEN != 0 {
            tracing::debug!("SMMU enabled");
        }
        if w.old & !w.new & cr0::SMMUEN != 0 {
            // 6.3.9.6: clearing SMMUEN terminates every stalled
            // transaction with an abort and frees its STAG.
            for t in st.stalls.terminate_all() {
                self.stats.stalls_terminated.fetch_add(1, Ordering::Relaxed);
                self.stall_resolved(&t, StallResolution::Abort);
            }
        }
        if w.new & cr0::CMDQEN != 0 {
            self.process_cmdq(st, mem);
        }
    }

    /// 6.3.14: GBPA fields change only with a write that sets UPDATE; the
    /// SMMU clears UPDATE when the new attributes are in force (here: at
    /// once).
    fn on_gbpa_write(&self, st: &mut State, w: &RegWrite) {
        if w.written & gbpa::UPDATE != 0 {
            let v = w.written & gbpa::FIELDS;
            st.regs.set(regs::GBPA, v);
            self.ctrl.gbpa.store(v, Ordering::SeqCst);
        } else {
            Self::restore(st, w);
        }
    }

    /// Toggle the GERROR bits in `bits` that are not already active and
    /// send the GERROR MSI when enabled (7.2, 6.3.18).
    pub(crate) fn raise_gerror(&self, st: &mut State, mem: &dyn GuestRam, bits: u64) {
        let g = st.regs.value(regs::GERROR);
        let n = st.regs.value(regs::GERRORN);
        let new = bits & !(g ^ n) & gerror::ALL;
        if new == 0 {
            return;
        }
        st.regs.set(regs::GERROR, g ^ new);
        self.stats.gerrors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(bits = new, "SMMU global error");
        if st.regs.value(regs::IRQ_CTRL) & irq_ctrl::GERROR_IRQEN != 0 {
            let addr = st.regs.value(regs::GERROR_IRQ_CFG0) & regs::MSI_ADDR;
            let data = st.regs.value(regs::GERROR_IRQ_CFG1);
            if !self.send_msi(mem, addr, data) {
                self.stats.msi_not_sent.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Send an MSI: a 32-bit write of `data` to `addr` (IHI 0070 3.18).
    /// To guest RAM if `addr` is RAM, else to the MSI sink. Returns false
    /// when MSIs are not implemented or not configured (address 0).
    pub(crate) fn send_msi(&self, mem: &dyn GuestRam, addr: u64, data: u64) -> bool {
        if !self.config.msi || addr == 0 {
            return false;
        }
        let data = u32::try_from(data & 0xffff_ffff).unwrap_or(0);
        self.stats.msis.fetch_add(1, Ordering::Relaxed);
        if mem.write_u32(iommu_emulator::Gpa(addr), data).is_err() {
            self.msi.raise_msi(MsiMessage { addr, data });
        }
        true
    }

    /// True when the queue enable `bit` is set and acknowledged.
    pub(crate) fn queue_enabled(st: &State, bit: u64) -> bool {
        st.regs.value(regs::CR0ACK) & bit != 0
    }

    /// Send [`DeviceMessage`]s to the endpoints' port `n` from now on (as
    /// [`DeviceMessage::deliver`] converts them) instead of keeping them for
    /// [`Smmu::take_device_messages`]. Called with the SMMU's register lock held: the port must
    /// not access the SMMU's registers from inside the call.
    pub fn set_device_notifier(&self, n: Arc<dyn EndpointPort>) {
        let mut g = self
            .notifier
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *g = Some(n);
    }

    /// Deliver a message to the notifier, or queue it for the device
    /// model (bounded).
    pub(crate) fn push_device_message(&self, m: DeviceMessage) {
        let n = self
            .notifier
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Some(n) = n {
            m.deliver(n.as_ref());
            return;
        }
        let mut q = lock(&self.outbox);
        if q.len() >= MAX_DEVICE_MESSAGES {
            self.stats
                .device_messages_dropped
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(?m, "device message dropped: outbox full");
            return;
        }
        q.push_back(m);
    }

    /// Take every undelivered [`DeviceMessage`], oldest first (when no
    /// endpoint port is set).
    pub fn take_device_messages(&self) -> Vec<DeviceMessage> {
        lock(&self.outbox).drain(..).collect()
    }

    /// Number of undelivered device messages (at most
    /// [`MAX_DEVICE_MESSAGES`]).
    pub fn outbox_len(&self) -> usize {
        lock(&self.outbox).len()
    }

    /// Register accesses to unknown offsets so far: (reads, writes).
    pub fn unknown_register_accesses(&self) -> (u64, u64) {
        lock(&self.state).regs.unknown_accesses()
    }

    /// A snapshot of the statistics.
    pub fn stats(&self) -> SmmuStats {
        self.stats.snapshot(self)
    }

    /// The translation statistics per (source, SSID).
    pub fn translation_stats(&self) -> &iommu_emulator::TranslationStats {
        &self.stats.translations
    }
}

/// Overflow flag of a queue pointer register.
pub(crate) const fn ovf(v: u64) -> u64 {
    v & queue::OVF
}

#[cfg(test)]
mod tests {
    use super::*;
    use iommu_emulator::testing::{FakeRam, RecordingMsi};

    fn smmu() -> (Smmu, FakeRam) {
        let s = Smmu::new(SmmuConfig::default(), Arc::new(RecordingMsi::new())).unwrap();
        (s, FakeRam::new(1 << 24))
    }

    // IHI 0070 6.3.1-6: ID registers are read-only and come from the config.
    #[test]
    fn regs_idrs_are_read_only_and_derived() {
        let (s, m) = smmu();
        let idr0 = s.mmio_read(&m, regs::IDR0, 4);
        assert_eq!(idr0, u64::from(SmmuConfig::default().idr0()));
        s.mmio_write(&m, regs::IDR0, 4, 0);
        assert_eq!(s.mmio_read(&m, regs::IDR0, 4), idr0);
        assert_eq!(s.mmio_read(&m, regs::AIDR, 4), 2);
    }

    // 6.3.23: STRTAB_BASE is ignored while SMMUEN is 1.
    #[test]
    fn regs_strtab_base_ignored_while_enabled() {
        let (s, m) = smmu();
        s.mmio_write(&m, regs::STRTAB_BASE, 8, 0x1000);
        s.mmio_write(&m, regs::CR0, 4, cr0::SMMUEN);
        s.mmio_write(&m, regs::STRTAB_BASE, 8, 0x2000);
        assert_eq!(s.mmio_read(&m, regs::STRTAB_BASE, 8), 0x1000);
    }

    // 6.3.25/6.3.28: queue bases are ignored while the queue is enabled.
    #[test]
    fn regs_queue_base_ignored_while_queue_enabled() {
        let (s, m) = smmu();
        s.mmio_write(&m, regs::EVENTQ_BASE, 8, 0x4000 | 3);
        s.mmio_write(&m, regs::CR0, 4, cr0::EVENTQEN);
        s.mmio_write(&m, regs::EVENTQ_BASE, 8, 0x8000 | 3);
        s.mmio_write(&m, regs::EVENTQ_PROD, 4, 5);
        assert_eq!(s.mmio_read(&m, regs::EVENTQ_BASE, 8), 0x4000 | 3);
        assert_eq!(s.mmio_read(&m, regs::EVENTQ_PROD, 4), 0);
    }

    // 6.2: the page-0 aliases of the page-1 queue pointers.
    #[test]
    fn regs_page0_aliases_reach_page1_pointers() {
        let (s, m) = smmu();
        s.mmio_write(&m, 0xac, 4, 3);
        assert_eq!(s.mmio_read(&m, regs::EVENTQ_CONS, 4), 3);
        assert_eq!(s.mmio_read(&m, 0xac, 4), 3);
    }

    #[test]
    fn regs_unknown_offsets_read_zero_and_are_counted() {
        let (s, m) = smmu();
        assert_eq!(s.mmio_read(&m, 0x800, 4), 0);
        s.mmio_write(&m, 0x800, 4, 1);
        assert_eq!(s.unknown_register_accesses(), (1, 1));
    }

    struct Collect(Mutex<Vec<iommu_emulator::endpoint::PageResponse>>);
    impl EndpointPort for Collect {
        fn invalidate_atc(&self, _: &iommu_emulator::endpoint::AtcInvalidation) {}
        fn page_response(&self, r: &iommu_emulator::endpoint::PageResponse) {
            lock(&self.0).push(*r);
        }
    }

    // 4.7.1: PRI_RESP goes to the notifier when one is set.
    #[test]
    fn device_notifier_receives_pri_resp() {
        let (s, m) = smmu();
        let c = Arc::new(Collect(Mutex::new(Vec::new())));
        s.set_device_notifier(c.clone());
        m.write_u64(iommu_emulator::Gpa(0x1_0000), 0x41 | (5u64 << 32))
            .unwrap();
        m.write_u64(iommu_emulator::Gpa(0x1_0008), 7 | (1 << 12))
            .unwrap();
        s.mmio_write(&m, regs::CMDQ_BASE, 8, 0x1_0000 | 2);
        s.mmio_write(&m, regs::CR0, 4, cr0::CMDQEN | cr0::SMMUEN);
        s.mmio_write(&m, regs::CMDQ_PROD, 4, 1);
        assert_eq!(s.mmio_read(&m, regs::CMDQ_CONS, 4), 1);
        let got = lock(&c.0).clone();
        assert_eq!(
            got,
            vec![iommu_emulator::endpoint::PageResponse {
                source: iommu_emulator::SourceId::Pci(iommu_emulator::Rid(5)),
                pasid: None,
                group: 7,
                code: iommu_emulator::endpoint::PageResponseCode::ResponseFailure,
                automatic: false
            }]
        );
        assert!(s.take_device_messages().is_empty());
    }

    // 6.3.9.6: with SMMUEN = 0, CMD_ATC_INV and CMD_PRI_RESP are ignored.
    #[test]
    fn cmdq_ats_commands_ignored_while_smmu_disabled() {
        let (s, m) = smmu();
        m.write_u64(iommu_emulator::Gpa(0x1_0000), 0x41 | (5u64 << 32))
            .unwrap();
        m.write_u64(iommu_emulator::Gpa(0x1_0008), 7 | (1 << 12))
            .unwrap();
        m.write_u64(iommu_emulator::Gpa(0x1_0010), 0x40 | (5u64 << 32))
            .unwrap();
        s.mmio_write(&m, regs::CMDQ_BASE, 8, 0x1_0000 | 2);
        s.mmio_write(&m, regs::CR0, 4, cr0::CMDQEN);
        s.mmio_write(&m, regs::CMDQ_PROD, 4, 2);
        assert_eq!(s.mmio_read(&m, regs::CMDQ_CONS, 4), 2);
        assert!(s.take_device_messages().is_empty());
        assert_eq!(s.stats().ats_commands_ignored, 2);
    }

    // 4.7.1 / 4.7.2: CMD_RESUME and CMD_STALL_TERM are CERROR_ILL with
    // IDR0.STALL_MODEL = 0b01, legal otherwise.
    #[test]
    fn cmdq_resume_illegal_without_stall_model() {
        for (props, err) in [("stall-model=terminate", 1), ("", 0)] {
            let c = SmmuConfig::parse_props(props).unwrap();
            let s = Smmu::new(c, Arc::new(RecordingMsi::new())).unwrap();
            let m = FakeRam::new(1 << 24);
            m.write_u64(iommu_emulator::Gpa(0x1_0000), 0x44 | (1 << 12))
                .unwrap();
            s.mmio_write(&m, regs::CMDQ_BASE, 8, 0x1_0000 | 2);
            s.mmio_write(&m, regs::CR0, 4, cr0::CMDQEN | cr0::SMMUEN);
            s.mmio_write(&m, regs::CMDQ_PROD, 4, 1);
            let cons = s.mmio_read(&m, regs::CMDQ_CONS, 4);
            assert_eq!((cons >> 24) & 0x7f, err, "{props}");
            assert_eq!(s.stats().resumes_unmatched, 1 - err, "{props}");
        }
    }

    // 3.5 / 4.1: a PROD that claims more than a full queue (a software
    // error) is still consumed until CONS meets PROD, bounded by two
    // passes over the ring.
    #[test]
    fn cmdq_overfull_prod_is_consumed_until_pointers_meet() {
        let c = SmmuConfig::parse_props("cmdqs=1").unwrap();
        let s = Smmu::new(c, Arc::new(RecordingMsi::new())).unwrap();
        let m = FakeRam::new(1 << 24);
        for i in 0..2u64 {
            m.write_u64(iommu_emulator::Gpa(0x1_0000 + i * 16), 0x46)
                .unwrap();
        }
        s.mmio_write(&m, regs::CMDQ_BASE, 8, 0x1_0000 | 1);
        s.mmio_write(&m, regs::CMDQ_PROD, 4, 3); // 3 commands in a 2-entry ring
        s.mmio_write(&m, regs::CR0, 4, cr0::CMDQEN);
        assert_eq!(s.mmio_read(&m, regs::CMDQ_CONS, 4), 3);
        assert_eq!(s.stats().syncs, 3);
    }

    // 6.3.26: a command queue larger than IDR1.CMDQS behaves as CMDQS.
    #[test]
    fn cmdq_log2size_is_clamped_to_idr1() {
        let c = SmmuConfig::parse_props("cmdqs=1").unwrap();
        let s = Smmu::new(c, Arc::new(RecordingMsi::new())).unwrap();
        let m = FakeRam::new(1 << 24);
        for i in 0..4u64 {
            m.write_u64(iommu_emulator::Gpa(0x1_0000 + i * 16), 0x46)
                .unwrap();
        }
        s.mmio_write(&m, regs::CMDQ_BASE, 8, 0x1_0000 | 10);
        s.mmio_write(&m, regs::CR0, 4, cr0::CMDQEN);
        // With 2 entries the pointer has 1 index bit and 1 wrap bit: PROD
        // 2 is a full queue (index 0, wrap 1), PROD 3 one more command.
        s.mmio_write(&m, regs::CMDQ_PROD, 4, 2);
        assert_eq!(s.mmio_read(&m, regs::CMDQ_CONS, 4), 2);
        assert_eq!(s.stats().syncs, 2);
        s.mmio_write(&m, regs::CMDQ_PROD, 4, 3);
        assert_eq!(s.mmio_read(&m, regs::CMDQ_CONS, 4), 3);
        assert_eq!(s.stats().syncs, 3);
        // Bits above the ring's pointer width are ignored.
        s.mmio_write(&m, regs::CMDQ_PROD, 4, 0x100);
        assert_eq!(s.mmio_read(&m, regs::CMDQ_CONS, 4), 0);
    }
}
