//! Translation glue: from a DMA request to a translation or a recorded
//! fault (VT-d 3.4 to 3.9), using the architecture-pure walkers of
//! [`iommu_emulator::walk::x86`] and turning their errors into the spec's
//! fault reasons.
//!
//! Lookup order: translation enable, context cache (or root and context
//! tables), PASID cache (or PASID directory and table, scalable mode),
//! IOTLB, paging-structure caches (cost only, see [`crate::iotlb`]), walk.
//! Modelled cycles are the sum of the latencies along that path.

use std::sync::atomic::Ordering;

use iommu_emulator::cache::Ticket;
use iommu_emulator::walk::WalkError;
use iommu_emulator::walk::x86::{
    Denial, FlOptions, SlOptions, WalkOutput, WalkStart, walk_first_level_classified,
    walk_first_level_from, walk_second_level_classified, walk_second_level_from,
};
use iommu_emulator::{
    Cache, CachePath, Cycles, DmaRequest, Fault, FaultKind, Gpa, GuestRam, PageSize, Perm,
    RequestKind, Rid, SourceId, Translation,
};

use crate::Vtd;
use crate::config::{CfgFault, DevCtx, lookup_context, lookup_pasid};
use crate::fault::{self, AddrType, FaultReason, FaultRecord, RecordOutcome};
use crate::iotlb::{IotlbEntry, IotlbTag, PwcTag};
use crate::regs::{RTADDR_TTM_MASK, RTADDR_TTM_SCALABLE};
use crate::stats::hot;
use crate::structs::context::TranslationType;
use crate::structs::pasid::{PasidEntry, Pgtt};

/// Interrupt address range (VT-d 3.14: 0xFEEx_xxxx is never DMA).
const INTERRUPT_RANGE: std::ops::Range<u64> = 0xfee0_0000..0xfef0_0000;

/// A translation failure before it is recorded.
#[derive(Clone, Copy, Debug)]
struct Failure {
    reason: FaultReason,
    fpd: bool,
    level: Option<u8>,
}

impl Failure {
    fn new(reason: FaultReason, fpd: bool) -> Self {
        Failure {
            reason,
            fpd,
            level: None,
        }
    }
}

/// Where a walk came from, for fault-reason mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WalkKind {
    LegacySecond,
    ScalableSecond,
    ScalableFirst,
}

fn map_walk_error(kind: WalkKind, e: &WalkError, d: Option<Denial>, write: bool) -> FaultReason {
    use FaultReason as R;
    match kind {
        WalkKind::LegacySecond => match e.kind {
            FaultKind::WalkAbort => R::PAGING_ENTRY_ACCESS,
            FaultKind::ReservedBits => R::PAGING_ENTRY_RESERVED,
            FaultKind::AddressSize => R::ADDR_BEYOND_MGAW,
            FaultKind::BadConfig => R::CONTEXT_INVALID,
            // 3.7: a not-present entry blocks the request: reported as a
            // read or write permission fault.
            _ => match d {
                Some(Denial::Write) => R::WRITE,
                Some(_) => R::READ,
                None if write => R::WRITE,
                None => R::READ,
            },
        },
        WalkKind::ScalableSecond => match e.kind {
            FaultKind::WalkAbort => R::SM_SL_ACCESS,
            FaultKind::ReservedBits => R::SM_SL_RESERVED,
            FaultKind::AddressSize => R::SM_ADDR_BEYOND_MAX,
            FaultKind::NotPresent => R::SM_SL_NOT_PRESENT,
            FaultKind::BadConfig => R::SM_PASID_INVALID,
            _ => match d {
                Some(Denial::Write) => R::SM_WRITE,
                Some(Denial::Execute) => R::SM_NO_EXEC,
                _ => R::SM_READ,
            },
        },
        WalkKind::ScalableFirst => match e.kind {
            FaultKind::WalkAbort => R::SM_FL_ACCESS,
            FaultKind::ReservedBits => R::SM_FL_RESERVED,
            FaultKind::AddressSize => R::SM_NON_CANONICAL,
            FaultKind::NotPresent => R::SM_FL_NOT_PRESENT,
            FaultKind::BadConfig => R::SM_PASID_INVALID,
            _ => match d {
                Some(Denial::User) => R::SM_USER_PRIV,
                Some(Denial::Write) => R::SM_WRITE,
                Some(Denial::Execute) => R::SM_NO_EXEC,
                _ => R::SM_READ,
            },
        },
    }
}

/// Running cost and path of one request.
#[derive(Default)]
struct Acc {
    cycles: Cycles,
    path: CachePath,
    reads: u8,
}

impl Acc {
    fn add(&mut self, c: u64) {
        self.cycles = self.cycles.plus(c);
    }
}

fn rid_of(source: SourceId) -> Rid {
    match source {
        SourceId::Pci(r) => r,
        SourceId::Stream(s) => Rid(u16::try_from(s & 0xffff).unwrap_or(0)),
    }
}

/// What a successful walk hands back to the translation: the leaf only.
/// (A walker's [`WalkOutput`] also carries the non-leaf entries it read;
/// they fill the paging-structure cache where the walk ran and are not
/// moved further, which keeps the miss path free of large copies.)
#[derive(Clone, Copy, Debug)]
struct Leaf {
    output: u64,
    page_size: PageSize,
    perm: Perm,
}

impl Leaf {
    fn of(o: &WalkOutput) -> Self {
        Leaf {
            output: o.output,
            page_size: o.page_size,
            perm: o.perm,
        }
    }

    fn page_base(&self) -> u64 {
        self.page_size.align_down(self.output)
    }
}

/// What to walk for a request once the configuration is known.
struct WalkPlan {
    kind: WalkKind,
    did: u16,
    pasid: u32,
    privileged: bool,
    entry: Option<PasidEntry>,
    /// Fault processing disabled by any configuration entry on the path.
    fpd: bool,
    legacy_levels: u8,
    legacy_root: u64,
}

impl Vtd {
    pub(crate) fn translate_request(
        &self,
        mem: &dyn GuestRam,
        req: &DmaRequest,
    ) -> Result<Translation, Fault> {
        let mut acc = Acc::default();
        let res = self.translate_inner(mem, req, &mut acc);
        let key = (req.source, req.pasid.map(|t| t.pasid));
        match res {
            Ok(mut t) => {
                t.cycles = acc.cycles;
                t.path = acc.path;
                // Totals (translations, cycles) come from the per-source
                // statistics: one record per request on the hot path.
                self.tstats.record(key, acc.cycles, false);
                Ok(t)
            }
            Err(f) => {
                let recorded = self.report_fault(req, &f, &mut acc);
                self.tstats.record(key, acc.cycles, true);
                Err(Fault {
                    kind: f.reason.kind(),
                    reason: u16::from(f.reason.0),
                    addr: req.addr,
                    level: f.level,
                    recorded,
                    cycles: acc.cycles,
                })
            }
        }
    }

    /// Record a fault (7.2.1) unless FPD; returns whether the guest sees it.
    fn report_fault(&self, req: &DmaRequest, f: &Failure, acc: &mut Acc) -> bool {
        self.counters.count_fault(f.reason.0);
        acc.path |= CachePath::FAULT;
        tracing::debug!(source = %req.source, addr = %req.addr, reason = %f.reason, fpd = f.fpd, "vtd: translation fault");
        if f.fpd {
            self.counters.fpd_suppressed.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let rec = FaultRecord {
            reason: f.reason,
            sid: rid_of(req.source).0,
            addr: req.addr.0,
            write: req.access.contains(Perm::W),
            at: match req.kind {
                RequestKind::Untranslated => AddrType::Untranslated,
                RequestKind::AtsTranslation => AddrType::TranslationRequest,
                RequestKind::Translated => AddrType::Translated,
            },
            pasid: req.pasid.map(|t| t.pasid.get()),
            exec: req.pasid.is_some_and(|t| t.exec),
            privileged: req.pasid.is_some_and(|t| t.privileged),
        };
        let (outcome, msi) = {
            let mut regs = self.lock_regs();
            let mut next = self.next_fault.load(Ordering::Relaxed);
            let r = fault::record(&mut regs, self.nfr, &mut next, &rec);
            self.next_fault.store(next, Ordering::Relaxed);
            r
        };
        let recorded = match outcome {
            RecordOutcome::Recorded(_) => {
                self.counters.recorded.fetch_add(1, Ordering::Relaxed);
                acc.add(self.lat.record_write);
                true
            }
            RecordOutcome::Overflow | RecordOutcome::OverflowPending => {
                tracing::warn!(reason = %f.reason, "vtd: fault dropped, fault recording registers full (PFO)");
                self.counters
                    .overflow_dropped
                    .fetch_add(1, Ordering::Relaxed);
                false
            }
        };
        if let Some(m) = msi {
            acc.add(self.lat.msi_write);
            self.counters.msis.fetch_add(1, Ordering::Relaxed);
            self.msi.raise_msi(m);
        }
        recorded
    }

    fn identity(&self, req: &DmaRequest, acc: &mut Acc) -> Translation {
        acc.path |= CachePath::BYPASS;
        self.counters.hot.bump(hot::BYPASS);
        Translation {
            output: Gpa(req.addr.0),
            page_size: PageSize::SIZE_4K,
            perm: Perm::R | Perm::W | Perm::X,
            privileged: false,
            cycles: Cycles(0),
            path: CachePath::empty(),
            walk_reads: 0,
        }
    }

    fn cfg<T>(
        &self,
        r: Result<(T, bool, u8), CfgFault>,
        hit: CachePath,
        hit_cost: u64,
        acc: &mut Acc,
    ) -> Result<T, Failure> {
        match r {
            Ok((v, true, _)) => {
                acc.path |= hit;
                acc.add(hit_cost);
                Ok(v)
            }
            Ok((v, false, reads)) => {
                acc.add(self.lat.mem_read.saturating_mul(u64::from(reads)));
                acc.reads = acc.reads.saturating_add(reads);
                Ok(v)
            }
            Err(e) => {
                acc.add(self.lat.mem_read.saturating_mul(u64::from(e.reads)));
                Err(Failure::new(e.reason, e.fpd))
            }
        }
    }

    fn translate_inner(
        &self,
        mem: &dyn GuestRam,
        req: &DmaRequest,
        acc: &mut Acc,
    ) -> Result<Translation, Failure> {
        if !self.te.load(Ordering::SeqCst) {
            // 3.1 / 11.4.4.2: with translation disabled requests pass through.
            return Ok(self.identity(req, acc));
        }
        let rt = self.root.load(Ordering::SeqCst);
        let scalable = match rt & RTADDR_TTM_MASK {
            0 => false,
            RTADDR_TTM_SCALABLE if self.config.scalable_mode => true,
            _ => return Err(Failure::new(FaultReason::SM_INVALID_RTADDR, false)),
        };
        let rid = rid_of(req.source);
        let ctx = self.cfg(
            lookup_context(
                &self.context_cache,
                mem,
                rt & !0xfff,
                scalable,
                rid,
                &self.caps,
            ),
            CachePath::CONTEXT_HIT,
            self.lat.context_hit,
            acc,
        )?;
        let write = req.access.contains(Perm::W);
        let plan = match ctx {
            DevCtx::Legacy(c) => {
                if req.pasid.is_some() {
                    return Err(Failure::new(FaultReason::SM_TTM0_PASID, c.fpd));
                }
                let ats = matches!(
                    req.kind,
                    RequestKind::AtsTranslation | RequestKind::Translated
                );
                if ats && c.tt != TranslationType::All {
                    return Err(Failure::new(FaultReason::CONTEXT_TT_BLOCKED, c.fpd));
                }
                if req.kind == RequestKind::Translated || c.tt == TranslationType::PassThrough {
                    return Ok(self.identity(req, acc));
                }
                // 3.7: input addresses above MGAW fault with reason 4.
                if req.addr.0 >> self.caps.haw != 0 {
                    return Err(Failure::new(FaultReason::ADDR_BEYOND_MGAW, c.fpd));
                }
                WalkPlan {
                    kind: WalkKind::LegacySecond,
                    did: c.did,
                    pasid: 0,
                    privileged: false,
                    entry: None,
                    fpd: c.fpd,
                    legacy_levels: c.levels,
                    legacy_root: c.slptptr,
                }
            }
            DevCtx::Scalable(c) => {
                let (pasid, privileged, exec) = match req.pasid {
                    Some(tag) => {
                        if !c.paside || self.caps.pasid_bits == 0 {
                            return Err(Failure::new(FaultReason::SM_PASIDE_CLEAR, c.fpd));
                        }
                        if u64::from(tag.pasid.get()) >> self.caps.pasid_bits != 0 {
                            return Err(Failure::new(FaultReason::SM_PASID_TOO_LARGE, c.fpd));
                        }
                        (tag.pasid.get(), tag.privileged, tag.exec)
                    }
                    // RID_PRIV is honoured only with ECAP.RPRIVS, which this
                    // model does not advertise (older Linux kernels set the
                    // bit anyway): requests without PASID are user requests.
                    None => (c.rid_pasid, false, false),
                };
                let ats = matches!(
                    req.kind,
                    RequestKind::AtsTranslation | RequestKind::Translated
                );
                if ats && !c.dte {
                    return Err(Failure::new(FaultReason::SM_DTE_CLEAR, c.fpd));
                }
                if req.kind == RequestKind::Translated {
                    return Ok(self.identity(req, acc));
                }
                let p = self.cfg(
                    lookup_pasid(&self.pasid_cache, mem, &c, rid, pasid, &self.caps),
                    CachePath::PASID_HIT,
                    self.lat.pasid_hit,
                    acc,
                )?;
                let e = p.entry;
                if privileged && !e.sre {
                    return Err(Failure::new(FaultReason::SM_SRE_CLEAR, p.fpd));
                }
                if exec && !e.ere {
                    return Err(Failure::new(FaultReason::SM_ERE_CLEAR, p.fpd));
                }
                let kind = match e.pgtt {
                    Pgtt::PassThrough => return Ok(self.identity(req, acc)),
                    Pgtt::SecondLevel => WalkKind::ScalableSecond,
                    Pgtt::FirstLevel | Pgtt::Nested => WalkKind::ScalableFirst,
                };
                WalkPlan {
                    kind,
                    did: e.did,
                    pasid,
                    privileged: privileged && e.pgtt != Pgtt::SecondLevel,
                    entry: Some(e),
                    fpd: c.fpd || p.fpd,
                    legacy_levels: 0,
                    legacy_root: 0,
                }
            }
        };
        let fpd = plan.fpd;
        let mut access = req.access;
        if req.pasid.is_some_and(|t| t.exec) {
            access |= Perm::X;
        }
        // IOTLB.
        let iova = req.addr.0;
        acc.add(self.lat.iotlb_hit);
        if let Some((tag, e)) = self
            .iotlb
            .lookup(plan.did, plan.pasid, iova, plan.privileged)
            && e.perm.allows(access)
            && (!write || e.dirty_ok)
        {
            acc.path |= CachePath::IOTLB_HIT;
            self.counters.hot.bump(hot::IOTLB_HITS);
            let out = e.output | (iova & tag_offset_mask(&tag));
            return self.finish(req, plan.kind, fpd, out, e.size, e.perm, acc);
        }
        self.counters.hot.bump(hot::IOTLB_MISSES);
        acc.add(self.lat.iotlb_miss);
        let ticket = self.iotlb.cache.ticket();
        acc.path |= CachePath::WALK;
        self.counters.hot.bump(hot::WALKS);
        let (out, dirty_ok) = self.walk(mem, &plan, iova, access, acc).map_err(|mut f| {
            f.fpd = fpd;
            f
        })?;
        let size = out.page_size;
        let tag = IotlbTag {
            did: plan.did,
            pasid: plan.pasid,
            page: iova >> size.shift(),
            shift: size.shift(),
            privileged: plan.privileged,
        };
        self.iotlb.insert(
            tag,
            IotlbEntry {
                output: out.page_base(),
                size,
                perm: out.perm,
                dirty_ok,
            },
            ticket,
        );
        self.finish(req, plan.kind, fpd, out.output, size, out.perm, acc)
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        req: &DmaRequest,
        kind: WalkKind,
        fpd: bool,
        output: u64,
        size: PageSize,
        perm: Perm,
        acc: &mut Acc,
    ) -> Result<Translation, Failure> {
        let base = size.align_down(output);
        let end = base.saturating_add(size.bytes());
        if base < INTERRUPT_RANGE.end && INTERRUPT_RANGE.start < end {
            let reason = if kind == WalkKind::LegacySecond {
                FaultReason::INTERRUPT_ADDR
            } else {
                FaultReason::SM_INTERRUPT_ADDR
            };
            return Err(Failure::new(reason, fpd));
        }
        Ok(Translation {
            output: Gpa(output),
            page_size: size,
            perm,
            privileged: req.pasid.is_some_and(|t| t.privileged),
            cycles: Cycles(0),
            path: CachePath::empty(),
            walk_reads: acc.reads,
        })
    }

    fn sl_opts(&self, e: Option<&PasidEntry>) -> SlOptions {
        SlOptions {
            allow_2m: self.config.sllps >= 1,
            allow_1g: self.config.sllps >= 2,
            exec: e.is_some_and(|e| e.slee),
            update_ad: e.is_some_and(|e| e.slade),
            oaw: self.caps.haw,
        }
    }

    /// Probe the paging-structure cache for the deepest cached non-leaf
    /// entry covering `iova` (VT-d 6.2.5): the walk resumes below it.
    fn pwc_lookup(
        &self,
        cache: &Cache<PwcTag, WalkStart>,
        did: u16,
        pasid: u32,
        levels: u8,
        iova: u64,
        acc: &mut Acc,
    ) -> Option<WalkStart> {
        let mut k = 2u8;
        while k <= levels {
            let tag = PwcTag {
                did,
                pasid,
                level: k,
                prefix: iova.checked_shr(PwcTag::shift(k)).unwrap_or(0),
            };
            if let Some(s) = cache.lookup(&tag) {
                acc.path |= CachePath::PWC_HIT;
                acc.add(self.lat.pwc_hit);
                return Some(s);
            }
            k = k.saturating_add(1);
        }
        None
    }

    /// Account a successful walk and fill the paging-structure cache with
    /// the non-leaf entries it read (unless an invalidation ran meanwhile).
    #[allow(clippy::too_many_arguments)]
    fn pwc_fill(
        &self,
        cache: &Cache<PwcTag, WalkStart>,
        ticket: Ticket,
        did: u16,
        pasid: u32,
        out: &WalkOutput,
        iova: u64,
        acc: &mut Acc,
    ) {
        acc.add(self.lat.mem_read.saturating_mul(u64::from(out.reads)));
        acc.add(
            self.lat
                .mem_atomic
                .saturating_mul(u64::from(out.ad_updates)),
        );
        acc.reads = acc.reads.saturating_add(out.reads);
        self.counters.hot.add(hot::WALK_READS, u64::from(out.reads));
        self.counters
            .hot
            .add(hot::AD_UPDATES, u64::from(out.ad_updates));
        for (k, start) in out.nonleaf.iter().enumerate() {
            let (Some(start), Ok(level)) = (start, u8::try_from(k)) else {
                continue;
            };
            cache.insert(
                PwcTag {
                    did,
                    pasid,
                    level,
                    prefix: iova.checked_shr(PwcTag::shift(level)).unwrap_or(0),
                },
                *start,
                ticket,
            );
        }
    }

    fn charge_failed_walk(&self, start_level: u8, e: &WalkError, acc: &mut Acc) {
        // A failed walk read the levels from its start down to the failing one.
        let reads = u64::from(start_level.saturating_sub(e.level).saturating_add(1));
        acc.add(self.lat.mem_read.saturating_mul(reads));
    }

    /// A second-level walk (legacy or scalable) through the second-level
    /// paging-structure cache.
    #[allow(clippy::too_many_arguments)]
    fn walk_sl_cached(
        &self,
        mem: &dyn GuestRam,
        plan: &WalkPlan,
        root: u64,
        levels: u8,
        o: &SlOptions,
        iova: u64,
        access: Perm,
        acc: &mut Acc,
    ) -> Result<Leaf, Failure> {
        let write = access.contains(Perm::W);
        let ticket = self.sl_pwc.ticket();
        let start = self
            .pwc_lookup(&self.sl_pwc, plan.did, plan.pasid, levels, iova, acc)
            .unwrap_or(WalkStart::second_level_root(root, levels));
        let out =
            walk_second_level_from(mem, start, levels, iova, access, o).map_err(|(e, d)| {
                self.charge_failed_walk(start.level, &e, acc);
                Failure {
                    reason: map_walk_error(plan.kind, &e, d, write),
                    fpd: false,
                    level: Some(e.level),
                }
            })?;
        self.pwc_fill(&self.sl_pwc, ticket, plan.did, plan.pasid, &out, iova, acc);
        Ok(Leaf::of(&out))
    }

    /// Walk the tables for `plan`; returns the output and whether writes may
    /// use the resulting IOTLB entry without another walk.
    fn walk(
        &self,
        mem: &dyn GuestRam,
        plan: &WalkPlan,
        iova: u64,
        access: Perm,
        acc: &mut Acc,
    ) -> Result<(Leaf, bool), Failure> {
        let write = access.contains(Perm::W);
        match (plan.kind, plan.entry) {
            (WalkKind::LegacySecond, _) => {
                let o = self.sl_opts(None);
                let out = self.walk_sl_cached(
                    mem,
                    plan,
                    plan.legacy_root,
                    plan.legacy_levels,
                    &o,
                    iova,
                    access,
                    acc,
                )?;
                Ok((out, true))
            }
            (WalkKind::ScalableSecond, Some(e)) => {
                let o = self.sl_opts(Some(&e));
                let out =
                    self.walk_sl_cached(mem, plan, e.slptptr, e.sl_levels, &o, iova, access, acc)?;
                Ok((out, !e.slade || write))
            }
            (WalkKind::ScalableFirst, Some(e)) => {
                let fo = FlOptions {
                    privileged: plan.privileged,
                    wpe: e.wpe,
                    nxe: true,
                    smep: e.smep,
                    allow_1g: self.config.fl1gp,
                    oaw: self.caps.haw,
                    update_ad: true,
                };
                if e.pgtt == Pgtt::Nested {
                    return self.walk_nested(mem, plan, &e, &fo, iova, access, acc);
                }
                let ticket = self.fl_pwc.ticket();
                let start = self
                    .pwc_lookup(&self.fl_pwc, plan.did, plan.pasid, e.fl_levels, iova, acc)
                    .unwrap_or(WalkStart::first_level_root(e.flptptr, e.fl_levels));
                let out = walk_first_level_from(mem, start, e.fl_levels, iova, access, &fo, None)
                    .map_err(|(er, d)| {
                    self.charge_failed_walk(start.level, &er, acc);
                    Failure {
                        reason: map_walk_error(plan.kind, &er, d, write),
                        fpd: false,
                        level: Some(er.level),
                    }
                })?;
                self.pwc_fill(&self.fl_pwc, ticket, plan.did, plan.pasid, &out, iova, acc);
                Ok((Leaf::of(&out), write))
            }
            _ => Err(Failure::new(FaultReason::SM_PASID_INVALID, false)),
        }
    }

    /// Nested translation (3.8): every first-level table address and the
    /// first-level output are guest-physical addresses translated by the
    /// second level.
    #[allow(clippy::too_many_arguments)]
    fn walk_nested(
        &self,
        mem: &dyn GuestRam,
        plan: &WalkPlan,
        e: &PasidEntry,
        fo: &FlOptions,
        iova: u64,
        access: Perm,
        acc: &mut Acc,
    ) -> Result<(Leaf, bool), Failure> {
        let so = self.sl_opts(Some(e));
        let write = access.contains(Perm::W);
        let mut sl_reads = 0u64;
        let mut sl_fail: Option<Failure> = None;
        let mut xlate = |gpa: u64, w: bool| -> Result<u64, WalkError> {
            let a = if w { Perm::RW } else { Perm::R };
            match walk_second_level_classified(mem, e.slptptr, e.sl_levels, gpa, a, &so) {
                Ok(o) => {
                    sl_reads = sl_reads.saturating_add(u64::from(o.reads));
                    Ok(o.output)
                }
                Err((er, d)) => {
                    sl_fail = Some(Failure {
                        reason: map_walk_error(WalkKind::ScalableSecond, &er, d, w),
                        fpd: false,
                        level: Some(er.level),
                    });
                    Err(er)
                }
            }
        };
        let fl = walk_first_level_classified(
            mem,
            e.flptptr,
            e.fl_levels,
            iova,
            access,
            fo,
            Some(&mut xlate),
        );
        acc.add(self.lat.mem_read.saturating_mul(sl_reads));
        let fl = match fl {
            Ok(o) => o,
            Err((er, d)) => {
                self.charge_failed_walk(e.fl_levels, &er, acc);
                return Err(sl_fail.unwrap_or(Failure {
                    reason: map_walk_error(WalkKind::ScalableFirst, &er, d, write),
                    fpd: false,
                    level: Some(er.level),
                }));
            }
        };
        acc.add(self.lat.mem_read.saturating_mul(u64::from(fl.reads)));
        acc.add(self.lat.mem_atomic.saturating_mul(u64::from(fl.ad_updates)));
        let sl = walk_second_level_classified(mem, e.slptptr, e.sl_levels, fl.output, access, &so)
            .map_err(|(er, d)| {
                self.charge_failed_walk(e.sl_levels, &er, acc);
                Failure {
                    reason: map_walk_error(WalkKind::ScalableSecond, &er, d, write),
                    fpd: false,
                    level: Some(er.level),
                }
            })?;
        acc.add(self.lat.mem_read.saturating_mul(u64::from(sl.reads)));
        let total_reads = u64::from(fl.reads)
            .saturating_add(sl_reads)
            .saturating_add(u64::from(sl.reads));
        acc.reads = acc
            .reads
            .saturating_add(u8::try_from(total_reads).unwrap_or(u8::MAX));
        self.counters.hot.add(hot::WALK_READS, total_reads);
        let size = fl.page_size.min(sl.page_size);
        let _ = plan;
        Ok((
            Leaf {
                output: sl.output,
                page_size: size,
                perm: fl.perm & sl.perm,
            },
            write,
        ))
    }
}

fn tag_offset_mask(tag: &IotlbTag) -> u64 {
    1u64.checked_shl(u32::from(tag.shift))
        .unwrap_or(0)
        .wrapping_sub(1)
}
