//! Intel VT-d IOMMU model.
//!
//! Follows the Intel Virtualization Technology for Directed I/O
//! Architecture Specification, revision 4.x (section numbers below refer to
//! it). A pure state machine: register accesses ([`Vtd::mmio_read`],
//! [`Vtd::mmio_write`]), DMA translation requests ([`Iommu::translate`]) and
//! guest memory passed into each call; interrupts leave through an
//! [`MsiSink`], device-TLB invalidations and page group responses through the
//! endpoints' [`EndpointPort`] (the model-independent seam of [`iommu_emulator::endpoint`]),
//! page requests arrive through [`iommu_emulator::endpoint::PageRequestSink`] or
//! [`Vtd::page_request`].
//!
//! What is implemented:
//! - the register file (11.4) with CAP/ECAP derived from [`VtdConfig`];
//! - legacy-mode translation (3.4.2: root and context tables, TT
//!   untranslated / all / pass-through, 3/4/5-level second-level walks with
//!   2 MiB and 1 GiB pages);
//! - scalable-mode translation (3.4.3: scalable root and context entries,
//!   PASID directory and table, PGTT first-level, second-level, nested and
//!   pass-through, RID_PASID, requests with PASID, SRE/ERE checks, A/D
//!   updates);
//! - context cache, PASID cache, IOTLB and first/second-level
//!   paging-structure caches on the core cache engine (6.2);
//! - register-based (CCMD, IOTLB registers) and queued invalidation (6.5)
//!   with every descriptor type Linux issues;
//! - primary fault logging (7.2.1) with the fault event interrupt;
//! - the DMAR ACPI table ([`acpi`]).
//!
//! Deviations and later work: advanced fault logging, protected memory
//! regions and MTRRs are not implemented (their capability bits are clear);
//! nested walks do not use the paging-structure caches; the XD bit is always honoured in
//! first-level entries (rev 4 removed NXE); device-TLB invalidations are
//! delivered synchronously, so they complete before the next descriptor.
//!
//! # Concurrency
//! Register accesses take one register lock; the translation path takes no
//! lock on a hit (the core cache's lookups are lock-free seqlock reads) and
//! counts into per-thread counters. An invalidation (a
//! register command or a descriptor) has completed, with every covered cache
//! entry gone, before the MMIO write that triggered it returns and before
//! a following wait descriptor writes its status (the core cache's ticket
//! protocol keeps racing walks from reinserting stale entries).
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
pub mod config;
pub mod fault;
pub mod inval;
pub mod iotlb;
pub mod irq_remap;
pub mod perfmon;
pub mod props;
pub mod prq;
pub mod regs;
pub mod stats;
pub mod structs;
pub mod walk;

use iommu_emulator::endpoint::EndpointPort;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use iommu_emulator::cache::CacheConfigError;
use iommu_emulator::regs::RegFile;
use iommu_emulator::{
    Cache, DmaRequest, Fault, GuestRam, Iommu, Latencies, MsiMessage, MsiSink, Translation,
    TranslationStats,
};

use crate::config::{CtxTag, DevCtx, PasidCacheTag, PasidCtx};
use crate::iotlb::{Iotlb, PwcTag};
pub use crate::irq_remap::{IecInvalidation, IrFault, IrNotifier, IrStats, RemappedMsi};
pub use crate::props::{ConfigError, Rmrr, VtdConfig};
pub use crate::prq::{PageRequest, PageRequestOutcome, PrqStats};
use crate::regs::*;
use crate::stats::Counters;
pub use crate::stats::VtdStats;
use crate::structs::context::UnitCaps;
pub use crate::structs::inv_desc::{DevTlbInvalidation, PageGroupResponse};
use iommu_emulator::walk::x86::WalkStart;

/// Host-side errors (configuration), distinct from architectural faults.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A cache geometry was rejected.
    #[error("cache configuration: {0}")]
    Cache(#[from] CacheConfigError),
}

/// One emulated VT-d remapping hardware unit.
pub struct Vtd {
    pub(crate) config: VtdConfig,
    pub(crate) caps: UnitCaps,
    pub(crate) nfr: usize,
    pub(crate) msi: Arc<dyn MsiSink>,
    pub(crate) notifier: RwLock<Option<Arc<dyn EndpointPort>>>,
    pub(crate) lat: Latencies,
    pub(crate) regs: Mutex<RegFile>,
    /// GSTS.TES, readable without the register lock.
    pub(crate) te: AtomicBool,
    /// RTADDR as latched by the last SRTP (address and TTM).
    pub(crate) root: AtomicU64,
    /// Internal index of the next fault recording register (7.2.1); only
    /// changed with the register lock held.
    pub(crate) next_fault: AtomicUsize,
    pub(crate) context_cache: Cache<CtxTag, DevCtx>,
    pub(crate) pasid_cache: Cache<PasidCacheTag, PasidCtx>,
    pub(crate) iotlb: Iotlb,
    pub(crate) fl_pwc: Cache<PwcTag, WalkStart>,
    pub(crate) sl_pwc: Cache<PwcTag, WalkStart>,
    pub(crate) counters: Counters,
    pub(crate) prq_counters: prq::PrqCounters,
    pub(crate) ir: irq_remap::IrState,
    pub(crate) pmu: perfmon::Pmu,
    pub(crate) tstats: TranslationStats,
}

impl std::fmt::Debug for Vtd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vtd")
            .field("config", &self.config)
            .field("te", &self.te.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Vtd {
    /// Size of the register page.
    pub const MMIO_SIZE: u64 = 0x1000;

    /// A unit in its reset state, with default latencies.
    pub fn new(config: VtdConfig, msi: Arc<dyn MsiSink>) -> Result<Self, Error> {
        Self::with_latencies(config, msi, Latencies::default())
    }

    /// A unit in its reset state with the given cycle model.
    pub fn with_latencies(
        config: VtdConfig,
        msi: Arc<dyn MsiSink>,
        lat: Latencies,
    ) -> Result<Self, Error> {
        config.validate()?;
        let cap = config.cap();
        let ecap = config.ecap();
        let mut regs = RegFile::new(&SPECS);
        regs.set(VER, config.version());
        regs.set(CAP, cap);
        regs.set(ECAP, ecap);
        let mut sl_levels = [false; 6];
        for l in 3..=5u8 {
            if let Some(s) = sl_levels.get_mut(usize::from(l)) {
                *s = config.sl_levels_supported(l);
            }
        }
        let caps = UnitCaps {
            haw: config.aw_bits,
            sl_levels,
            dt: ecap & (1 << 2) != 0,
            pt: ecap & (1 << 6) != 0,
            prs: ecap & (1 << 29) != 0,
            rps: ecap & (1 << 49) != 0,
            flts: ecap & (1 << 47) != 0,
            slts: ecap & (1 << 46) != 0,
            nest: ecap & (1 << 26) != 0,
            slads: ecap & (1 << 45) != 0,
            fl5lp: cap & (1 << 60) != 0,
            pasid_bits: if ecap & (1 << 40) != 0 {
                config.pasid_bits
            } else {
                0
            },
        };
        Ok(Vtd {
            nfr: usize::from(config.fault_regs),
            caps,
            msi,
            notifier: RwLock::new(None),
            lat,
            regs: Mutex::new(regs),
            te: AtomicBool::new(false),
            root: AtomicU64::new(0),
            next_fault: AtomicUsize::new(0),
            context_cache: Cache::new(config.context_cache)?,
            pasid_cache: Cache::new(config.pasid_cache)?,
            iotlb: Iotlb::new(config.iotlb)?,
            fl_pwc: Cache::new(config.pwc)?,
            sl_pwc: Cache::new(config.pwc)?,
            counters: Counters::default(),
            prq_counters: prq::PrqCounters::default(),
            ir: irq_remap::IrState::new()?,
            pmu: perfmon::Pmu::default(),
            tstats: TranslationStats::new(),
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &VtdConfig {
        &self.config
    }

    /// The cycle model in use.
    pub fn latencies(&self) -> &Latencies {
        &self.lat
    }

    /// Where device-TLB invalidations and page group responses go (the endpoints' side of
    /// [`iommu_emulator::endpoint`]; called synchronously while the invalidation queue is
    /// processed, with the register lock held: the port must finish invalidating before it
    /// returns and must not call back into the [`Vtd`]).
    pub fn set_device_notifier(&self, n: Arc<dyn EndpointPort>) {
        if let Ok(mut g) = self.notifier.write() {
            *g = Some(n);
        }
    }

    pub(crate) fn lock_regs(&self) -> MutexGuard<'_, RegFile> {
        self.regs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Read `size` (4 or 8) bytes at `offset` in the register page. Unknown
    /// offsets and sizes read as zero and are counted.
    pub fn mmio_read(&self, _mem: &dyn GuestRam, offset: u64, size: u8) -> u64 {
        if let Some(v) = self.pmu_read(offset, size) {
            return v;
        }
        let regs = self.lock_regs();
        // Fault recording registers beyond CAP.NFR do not exist.
        if offset >= frcd_offset(self.nfr) && offset < frcd_offset(props::MAX_FAULT_REGS) {
            self.counters.bump_unknown_read();
            return 0;
        }
        regs.read(offset, size)
    }

    /// Write `size` (4 or 8) bytes at `offset`. Side effects (commands,
    /// invalidations, queue processing) complete before this returns; MSIs
    /// are sent after the register lock is released.
    pub fn mmio_write(&self, mem: &dyn GuestRam, offset: u64, size: u8, value: u64) {
        if self.pmu_write(offset, size, value) {
            return;
        }
        let mut msis: Vec<MsiMessage> = Vec::new();
        {
            let mut regs = self.lock_regs();
            if offset >= frcd_offset(self.nfr) && offset < frcd_offset(props::MAX_FAULT_REGS) {
                self.counters.bump_unknown_write();
                return;
            }
            let Some(w) = regs.write(offset, size, value) else {
                tracing::debug!(
                    offset,
                    size,
                    value,
                    "vtd: write to unknown register ignored"
                );
                return;
            };
            match w.offset {
                GCMD => self.on_gcmd_write(&mut regs, mem, w.written, &mut msis),
                CCMD => self.on_ccmd_write(&mut regs),
                IOTLB => self.on_iotlb_write(&mut regs),
                FSTS => {
                    fault::refresh_status(&mut regs, self.nfr);
                    if w.old & FSTS_IQE != 0 && w.new & FSTS_IQE == 0 {
                        // 6.5.2.10: hardware resumes fetching at IQH once IQE is cleared.
                        self.process_queue(&mut regs, mem, &mut msis);
                    }
                }
                PRS => prq::on_prs_write(&mut regs),
                FECTL | IECTL | PECTL => msis.extend(fault::on_ctl_write(&mut regs, w.offset)),
                IQT => self.process_queue(&mut regs, mem, &mut msis),
                ICS if regs.value(ICS) & ICS_IWC == 0 => regs.clear_bits(IECTL, ECTL_IP),
                o if o >= FRO && o < frcd_offset(self.nfr) => {
                    fault::refresh_status(&mut regs, self.nfr)
                }
                _ => {}
            }
        }
        for m in msis {
            self.counters.msis.fetch_add(1, Ordering::Relaxed);
            self.msi.raise_msi(m);
        }
        self.flush_ir_notifications();
    }

    /// GCMD side effects (11.4.4.1): each command bit that differs from its
    /// status bit (or each one-shot bit that is set) is acted on; several
    /// commands in one write are all performed.
    fn on_gcmd_write(
        &self,
        regs: &mut RegFile,
        mem: &dyn GuestRam,
        cmd: u64,
        msis: &mut Vec<MsiMessage>,
    ) {
        let sts = regs.value(GSTS);
        let mut new = sts;
        let ecap = regs.value(ECAP);
        if cmd & GCMD_SRTP != 0 {
            let rt = regs.value(RTADDR);
            self.root.store(rt, Ordering::SeqCst);
            // Over-invalidation is always allowed; software must invalidate
            // globally after SRTP anyway (6.5).
            self.invalidate_everything();
            new |= GCMD_SRTP;
            tracing::debug!(
                rtaddr = format_args!("{rt:#x}"),
                "vtd: root table pointer set"
            );
        }
        let te = cmd & GCMD_TE != 0;
        if te != (sts & GCMD_TE != 0) {
            self.te.store(te, Ordering::SeqCst);
            new ^= GCMD_TE;
            tracing::debug!(te, "vtd: translation enable");
        }
        let qie = cmd & GCMD_QIE != 0;
        if qie != (sts & GCMD_QIE != 0) && ecap & 2 != 0 {
            if qie {
                regs.set(IQH, 0);
                new |= GCMD_QIE;
            } else {
                new &= !GCMD_QIE;
            }
        }
        if ecap & (1 << 3) != 0 {
            // 11.4.4.1 / 5.1: SIRTP latches IRTA (and drops the IEC: software
            // must invalidate it globally anyway); IRE and CFI follow the
            // command; each change is reported to the IrNotifier.
            if cmd & GCMD_SIRTP != 0 {
                let mut irta = regs.value(IRTA);
                if ecap & (1 << 4) == 0 {
                    irta &= !irq_remap::IRTA_EIME;
                }
                self.ir.irta.store(irta, Ordering::SeqCst);
                self.ir.invalidate(irq_remap::IecInvalidation::Global);
                new |= GCMD_SIRTP;
                tracing::debug!(
                    irta = format_args!("{irta:#x}"),
                    "vtd: interrupt remapping table pointer set"
                );
            }
            for bit in [GCMD_IRE, GCMD_CFI] {
                if (cmd & bit != 0) != (sts & bit != 0) {
                    new ^= bit;
                    let on = new & bit != 0;
                    if bit == GCMD_IRE {
                        self.ir.enabled.store(on, Ordering::SeqCst);
                        self.ir.invalidate(irq_remap::IecInvalidation::Global);
                        tracing::debug!(on, "vtd: interrupt remapping enable");
                    } else {
                        self.ir.cfis.store(on, Ordering::SeqCst);
                    }
                }
            }
        }
        regs.set(GSTS, new);
        if new & GCMD_QIE != 0 && sts & GCMD_QIE == 0 {
            self.process_queue(regs, mem, msis);
        }
    }

    /// Statistics snapshot.
    pub fn stats(&self) -> VtdStats {
        self.snapshot_stats()
    }

    /// Per-source / per-PASID translation statistics.
    pub fn translation_stats(&self) -> &TranslationStats {
        &self.tstats
    }
}

impl Iommu for Vtd {
    fn translate(&self, mem: &dyn GuestRam, req: &DmaRequest) -> Result<Translation, Fault> {
        self.translate_request(mem, req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CtxTag;
    use crate::structs::inv_desc::ContextGran;
    use iommu_emulator::testing::x86_pt::{Format, X86PageTable};
    use iommu_emulator::testing::{FakeRam, RecordingMsi};
    use iommu_emulator::{CachePath, Gpa, PageSize, PasidTag, Perm, Rid, SourceId};

    fn unit(props: &str) -> (Vtd, FakeRam, Arc<RecordingMsi>) {
        let msi = Arc::new(RecordingMsi::new());
        let v = Vtd::new(VtdConfig::parse_props(props).unwrap(), msi.clone()).unwrap();
        (v, FakeRam::new(1 << 32), msi)
    }

    // 11.4.4.1: several commands in one GCMD write are all performed, and
    // status bits persist across later writes.
    #[test]
    fn gcmd_several_commands_in_one_write() {
        let (v, ram, _) = unit("");
        v.mmio_write(&ram, RTADDR, 8, 0x5000);
        v.mmio_write(&ram, GCMD, 4, GCMD_SRTP | GCMD_QIE | GCMD_TE);
        let sts = v.mmio_read(&ram, GSTS, 4);
        assert_eq!(sts, GCMD_SRTP | GCMD_QIE | GCMD_TE);
        assert_eq!(v.mmio_read(&ram, GCMD, 4), 0, "GCMD reads as zero");
        v.mmio_write(&ram, GCMD, 4, GCMD_QIE);
        assert_eq!(v.mmio_read(&ram, GSTS, 4), GCMD_SRTP | GCMD_QIE);
        assert!(!v.te.load(Ordering::SeqCst));
        assert_eq!(v.root.load(Ordering::SeqCst), 0x5000);
    }

    // 11.4.4.1: interrupt-remapping commands only with ECAP.IR.
    #[test]
    fn gcmd_interrupt_remapping_bits_follow_ecap_ir() {
        let (v, ram, _) = unit("");
        v.mmio_write(&ram, GCMD, 4, GCMD_IRE | GCMD_SIRTP | GCMD_CFI);
        assert_eq!(v.mmio_read(&ram, GSTS, 4), 0);
        let (v, ram, _) = unit("intremap=on,eim=on");
        assert_ne!(v.mmio_read(&ram, ECAP, 8) & (1 << 4), 0);
        v.mmio_write(&ram, IRTA, 8, 0x9000 | (1 << 11) | 7);
        v.mmio_write(&ram, GCMD, 4, GCMD_SIRTP);
        v.mmio_write(&ram, GCMD, 4, GCMD_IRE);
        assert_eq!(v.mmio_read(&ram, GSTS, 4), GCMD_SIRTP | GCMD_IRE);
        assert_eq!(v.mmio_read(&ram, IRTA, 8), 0x9000 | (1 << 11) | 7);
    }

    // 3.1: with translation disabled, requests pass through untranslated.
    #[test]
    fn translate_with_te_clear_passes_through() {
        let (v, ram, _) = unit("");
        let t = v
            .translate(
                &ram,
                &DmaRequest::new(SourceId::Pci(Rid(8)), 0x1234_5678, 4, Perm::RW),
            )
            .unwrap();
        assert_eq!(t.output, Gpa(0x1234_5678));
        assert!(t.path.contains(CachePath::BYPASS));
        assert_eq!(v.stats().bypass, 1);
    }

    // 11.4.5: TTM 10b/11b are not supported: every request faults 0x30;
    // legacy TTM with a PASID request faults 0x31.
    #[test]
    fn translate_bad_ttm_and_pasid_in_legacy_mode_fault() {
        let (v, ram, _) = unit("x-scalable-mode=on");
        v.mmio_write(&ram, RTADDR, 8, 0x5000 | (2 << 10));
        v.mmio_write(&ram, GCMD, 4, GCMD_SRTP | GCMD_TE);
        let req = DmaRequest::new(SourceId::Pci(Rid(8)), 0, 4, Perm::R);
        assert_eq!(v.translate(&ram, &req).unwrap_err().reason, 0x30);
        let (v, ram, _) = unit("");
        let root = ram.alloc_pages(1).unwrap().0;
        let ctx = ram.alloc_pages(1).unwrap().0;
        ram.write_u64(Gpa(root), ctx | 1).unwrap();
        ram.write_u64(Gpa(ctx + 8 * 16 + 8), 2 | (1 << 8)).unwrap();
        ram.write_u64(Gpa(ctx + 8 * 16), 0x7000 | 1).unwrap();
        v.mmio_write(&ram, RTADDR, 8, root);
        v.mmio_write(&ram, GCMD, 4, GCMD_SRTP | GCMD_TE);
        let req = req.with_pasid(PasidTag {
            pasid: iommu_emulator::Pasid::new(1).unwrap(),
            privileged: false,
            exec: false,
        });
        assert_eq!(v.translate(&ram, &req).unwrap_err().reason, 0x31);
    }

    // 6.5.2: a tail beyond the queue or misaligned for 256-bit descriptors
    // sets IQE with IQEI 1; 256-bit descriptors without SMTS set IQE.
    #[test]
    fn queue_tail_errors_set_iqe() {
        let (v, ram, msi) = unit("x-scalable-mode=on");
        v.mmio_write(&ram, FECTL, 4, 0);
        v.mmio_write(&ram, IQA, 8, 0x10_0000 | IQA_DW);
        v.mmio_write(&ram, GCMD, 4, GCMD_QIE);
        v.mmio_write(&ram, IQT, 8, 0x10);
        assert_eq!(v.mmio_read(&ram, FSTS, 4) & FSTS_IQE, FSTS_IQE);
        assert_eq!(v.mmio_read(&ram, IQERCD, 8) & 0xf, inval::IQEI_TAIL);
        assert_eq!(msi.take().len(), 1);
        let (v, ram, _) = unit("");
        v.mmio_write(&ram, IQA, 8, 0x10_0000 | IQA_DW);
        v.mmio_write(&ram, GCMD, 4, GCMD_QIE);
        v.mmio_write(&ram, IQT, 8, 0x20);
        assert_eq!(v.mmio_read(&ram, FSTS, 4) & FSTS_IQE, FSTS_IQE);
        assert_eq!(v.mmio_read(&ram, IQERCD, 8) & 0xf, inval::IQEI_WIDTH);
    }

    // 6.5.2.1: a device-selective context invalidation drops only that
    // device's context (and PASID) entries.
    #[test]
    fn context_invalidation_device_selective_keeps_others() {
        let (v, ram, _) = unit("");
        let root = ram.alloc_pages(1).unwrap().0;
        let ctx = ram.alloc_pages(1).unwrap().0;
        ram.write_u64(Gpa(root), ctx | 1).unwrap();
        for devfn in [8u64, 16] {
            ram.write_u64(Gpa(ctx + devfn * 16 + 8), 2 | (1 << 8))
                .unwrap();
            ram.write_u64(Gpa(ctx + devfn * 16), 0x7000 | (2 << 2) | 1)
                .unwrap();
        }
        v.mmio_write(&ram, RTADDR, 8, root);
        v.mmio_write(&ram, GCMD, 4, GCMD_SRTP | GCMD_TE);
        for devfn in [8u16, 16] {
            v.translate(
                &ram,
                &DmaRequest::new(SourceId::Pci(Rid(devfn)), 0, 4, Perm::R),
            )
            .unwrap();
        }
        assert_eq!(v.context_cache.len(), 2);
        v.invalidate_context(ContextGran::Device {
            did: 1,
            sid: 8,
            fm: 0,
        });
        assert_eq!(v.context_cache.len(), 1);
        assert!(
            v.context_cache
                .lookup(&CtxTag {
                    rid: 16,
                    scalable: false
                })
                .is_some()
        );
    }

    // Golden timing (STYLE 10): a fixed configuration and trace give exact
    // cycle counts with the default latencies: walk miss, IOTLB hit, and a
    // miss shortened by the paging-structure cache.
    #[test]
    fn golden_timing_legacy_miss_hit_and_pwc() {
        let (v, ram, _) = unit("");
        let root = ram.alloc_pages(1).unwrap().0;
        let ctx = ram.alloc_pages(1).unwrap().0;
        let pt = X86PageTable::new(&ram, Format::SecondLevel { levels: 4 });
        pt.map(0x1000, 0x10_0000, PageSize::SIZE_4K, Perm::RW)
            .unwrap();
        pt.map(0x2000, 0x11_0000, PageSize::SIZE_4K, Perm::RW)
            .unwrap();
        ram.write_u64(Gpa(root), ctx | 1).unwrap();
        ram.write_u64(Gpa(ctx + 8 * 16 + 8), 2 | (1 << 8)).unwrap();
        ram.write_u64(Gpa(ctx + 8 * 16), pt.root().0 | 1).unwrap();
        v.mmio_write(&ram, RTADDR, 8, root);
        v.mmio_write(&ram, GCMD, 4, GCMD_SRTP | GCMD_TE);
        let t = |a| {
            v.translate(&ram, &DmaRequest::new(SourceId::Pci(Rid(8)), a, 4, Perm::R))
                .unwrap()
        };
        // root+context (2 x 100) + IOTLB lookup (2) + miss (1) + 4 reads (400)
        assert_eq!(t(0x1000).cycles.0, 603);
        // context hit (2) + IOTLB hit (2)
        assert_eq!(t(0x1008).cycles.0, 4);
        // context hit 2 + IOTLB 2 + miss 1 + PWC hit 2 + leaf read 100
        assert_eq!(t(0x2000).cycles.0, 107);
        assert_eq!(v.stats().cycles, 603 + 4 + 107);
    }
}
