//! Translation of one transaction (IHI 0070 3.2-3.4, 3.9): STE, then the
//! CD selected by the SubstreamID, then the TLB, then the stage-1 and/or
//! stage-2 walks through the core VMSAv8-64 walker.
//!
//! Lookup order, as in gem5's SMMUv3 model: configuration caches (STE,
//! CD), TLB (its tags need the ASID/VMID the configuration gives), walk.
//! Every latency comes from [`iommu_emulator::Latencies`].

use std::sync::atomic::Ordering;

use iommu_emulator::walk::WalkError;
use iommu_emulator::walk::vmsa::{self, WalkRequest};
use iommu_emulator::{
    CachePath, Cycles, DmaRequest, Fault, FaultKind, Gpa, GuestRam, Iommu, PageSize, Pasid, Perm,
    RequestKind, Translation,
};

use crate::config::{Abort, Cost};
use crate::regs::{self, cr0, gbpa};
use crate::stall::{StalledTransaction, TranslateOutcome};
use crate::structs::event::{Event, EventType, FaultClass};
use crate::structs::ste::{Eats, S1Dss, S2Ste, SteConfig};
use crate::tlb::{TlbEntry, TlbKey, TlbKind};
use crate::{Smmu, lock};

/// Attributes of the transaction that event records carry.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AccessInfo {
    pub(crate) privileged: bool,
    pub(crate) instruction: bool,
    pub(crate) read: bool,
}

fn event_for(kind: FaultKind) -> EventType {
    match kind {
        FaultKind::AddressSize => EventType::FAddrSize,
        FaultKind::AccessFlag => EventType::FAccess,
        FaultKind::Permission => EventType::FPermission,
        FaultKind::WalkAbort => EventType::FWalkEabt,
        _ => EventType::FTranslation,
    }
}

fn identity(addr: u64, cost: &Cost) -> Translation {
    Translation {
        output: Gpa(addr),
        page_size: PageSize::SIZE_4K,
        perm: Perm::RW | Perm::X,
        privileged: false,
        cycles: Cycles(cost.cycles),
        path: cost.path | CachePath::BYPASS,
        walk_reads: cost.reads,
    }
}

/// Descriptor reads a failed walk made: one per level from the start level
/// to the level at fault, when the faulting descriptor was read (or its
/// read was attempted); none for faults found before the first read
/// (input range, TTB address size).
fn failed_walk_reads(cfg: &vmsa::WalkConfig, e: &WalkError) -> u8 {
    if e.entry.is_none() && e.kind != FaultKind::WalkAbort {
        return 0;
    }
    let start = cfg.geometry().map_or(e.level, |g| g.start_level);
    e.level.saturating_sub(start).saturating_add(1)
}

impl Smmu {
    /// Walk stage 2 for a table or CD access at `ipa` (a read).
    pub(crate) fn s2_table_access(
        &self,
        mem: &dyn GuestRam,
        s2: &S2Ste,
        ipa: u64,
        cost: &mut Cost,
    ) -> Result<u64, WalkError> {
        let r = vmsa::walk(
            mem,
            &s2.walk,
            &WalkRequest {
                addr: ipa,
                access: Perm::R,
                privileged: false,
            },
        );
        match r {
            Ok(o) => {
                cost.reads(self, o.reads);
                Ok(o.output)
            }
            Err(e) => {
                cost.reads(self, failed_walk_reads(&s2.walk, &e));
                Err(e)
            }
        }
    }

    /// Turn a walk error into an abort with its event (7.3.10-7.3.15).
    /// `(record, stall)` is (CD.R, CD.S) or (STE.S2R, STE.S2S): a
    /// translation-related fault (F_TRANSLATION, F_ADDR_SIZE, F_ACCESS,
    /// F_PERMISSION) stalls when `stall`, and is then always recorded
    /// (5.5); otherwise it is recorded only when `record`. External aborts
    /// never stall and are always recorded.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn walk_abort(
        &self,
        sid: u32,
        ssid: Option<u32>,
        input: u64,
        e: WalkError,
        s2: bool,
        class: FaultClass,
        (record, stall): (bool, bool),
        access: Option<AccessInfo>,
    ) -> Abort {
        let ty = event_for(e.kind);
        let kind = if e.kind == FaultKind::BadConfig {
            FaultKind::NotPresent
        } else {
            e.kind
        };
        let stall = stall && ty.can_stall();
        let mut abort = Abort {
            event: None,
            kind,
            level: Some(e.level),
            stall,
        };
        if ty != EventType::FWalkEabt && !record && !stall {
            self.stats.events_suppressed.fetch_add(1, Ordering::Relaxed);
            return abort;
        }
        let mut ev = Event::new(ty, sid, ssid);
        ev.input_addr = input;
        ev.s2 = s2;
        ev.class = class;
        if let Some(a) = access {
            ev.privileged = a.privileged;
            ev.instruction = a.instruction;
            ev.read = a.read;
        }
        if ty == EventType::FWalkEabt {
            ev.fetch_addr = e.entry_addr;
        }
        abort.event = Some(ev);
        abort
    }

    /// A stage-2 fault while fetching a CD of an ATS Translation Request
    /// does not stall (5.5, 3.9.1); without S2R it is not recorded either.
    fn no_stall_for_ats(&self, mut a: Abort, ats: bool, s2: Option<&S2Ste>) -> Abort {
        if ats && a.stall {
            a.stall = false;
            if !s2.is_some_and(|s| s.record) {
                a.event = None;
                self.stats.events_suppressed.fetch_add(1, Ordering::Relaxed);
            }
        }
        a
    }

    fn fault(&self, mem: &dyn GuestRam, req: &DmaRequest, a: Abort, cost: &Cost) -> Fault {
        let mut recorded = false;
        let mut cycles = cost.cycles;
        let mut reason = 0u16;
        if let Some(ev) = a.event {
            reason = u16::from(ev.kind.code());
            recorded = self.record_event(mem, &ev);
            cycles = cycles.saturating_add(self.config.latencies.record_write);
        }
        Fault {
            kind: a.kind,
            reason,
            addr: req.addr,
            level: a.level,
            recorded,
            cycles: Cycles(cycles),
        }
    }

    /// End a faulting transaction: terminate it with its event, or stall
    /// it (3.12.2) when its stage is configured to stall.
    fn fault_or_stall(
        &self,
        mem: &dyn GuestRam,
        req: &DmaRequest,
        a: Abort,
        cost: &Cost,
    ) -> TranslateOutcome {
        let ev = match a.event {
            Some(ev) if a.stall => ev,
            _ => return TranslateOutcome::Done(Err(self.fault(mem, req, a, cost))),
        };
        let mut ev = ev;
        let record_cost = self.config.latencies.record_write;
        let mut fault = Fault {
            kind: a.kind,
            reason: u16::from(ev.kind.code()),
            addr: req.addr,
            level: a.level,
            recorded: false,
            cycles: Cycles(cost.cycles),
        };
        let mut st = lock(&self.state);
        let smmuen = st.regs.value(regs::CR0ACK) & cr0::SMMUEN != 0;
        let limit = usize::try_from(self.config.max_stalls).unwrap_or(usize::MAX);
        if !smmuen || st.stalls.len() >= limit {
            // 3.12.2.3: stall resources are exhausted; 3.12 lets such a
            // fault be terminated with an abort and reported with Stall = 0.
            // (SMMUEN cleared meanwhile: 6.3.9.6, nothing new stalls.)
            if smmuen {
                self.stats.stalls_refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(sid = ev.sid, limit, "stall limit reached, fault terminated");
            }
            fault.recorded = self.push_event(&mut st, mem, &ev);
            fault.cycles = Cycles(cost.cycles.saturating_add(record_cost));
            return TranslateOutcome::Done(Err(fault));
        }
        self.stats.stalls.fetch_add(1, Ordering::Relaxed);
        let mut stag = None;
        if self.event_queue_writable(&st) {
            let tag = st.stalls.alloc_stag();
            ev.stall = true;
            ev.stag = tag;
            if self.push_event(&mut st, mem, &ev) {
                stag = Some(tag);
                fault.recorded = true;
            }
            fault.cycles = Cycles(cost.cycles.saturating_add(record_cost));
        } else {
            // 7.2.1 / 7.4: a stall record is never discarded and causes no
            // overflow; the transaction retries when the queue is writable.
            self.stats.count_event(ev.kind);
        }
        if stag.is_none() {
            self.stats.stalls_deferred.fetch_add(1, Ordering::Relaxed);
        }
        let info = StalledTransaction {
            sid: ev.sid,
            ssid: ev.ssid,
            stag,
            addr: req.addr.0,
        };
        tracing::debug!(?info, "SMMU transaction stalled");
        TranslateOutcome::Stalled(st.stalls.insert(info, fault))
    }

    /// Translate one transaction, letting it stall (3.12.2) when its
    /// configuration asks for it: a [`TranslateOutcome::Stalled`] carries
    /// a [`crate::Stall`] handle whose resolution software decides with
    /// CMD_RESUME / CMD_STALL_TERM. On `Retry` the requester translates
    /// the same request again; on `Abort` the device sees the fault.
    pub fn translate_stallable(&self, mem: &dyn GuestRam, req: &DmaRequest) -> TranslateOutcome {
        let mut cost = Cost::default();
        match self.translate_inner(mem, req, &mut cost) {
            Ok(t) => {
                self.record_ok(req, &t);
                TranslateOutcome::Done(Ok(t))
            }
            Err(a) => self.fault_path(mem, req, a, &cost),
        }
    }

    /// The statistics key of a request: (source, SubstreamID).
    #[inline(always)]
    fn stats_key(req: &DmaRequest) -> (iommu_emulator::SourceId, Option<Pasid>) {
        let ssid = req.pasid.map(|t| t.pasid);
        (req.source, ssid.and_then(|p| Pasid::new(p.get())))
    }

    #[inline(always)]
    fn record_ok(&self, req: &DmaRequest, t: &Translation) {
        self.stats
            .translations
            .record(Self::stats_key(req), t.cycles, false);
    }

    /// A transaction that ends without a translation: its event, the stall
    /// (when configured) and its statistics. Out of line: the success path
    /// stays small.
    #[cold]
    #[inline(never)]
    fn fault_path(
        &self,
        mem: &dyn GuestRam,
        req: &DmaRequest,
        a: Abort,
        cost: &Cost,
    ) -> TranslateOutcome {
        let out = self.fault_or_stall(mem, req, a, cost);
        let key = Self::stats_key(req);
        match &out {
            TranslateOutcome::Done(Ok(t)) => self.stats.translations.record(key, t.cycles, false),
            TranslateOutcome::Done(Err(f)) => {
                let ssid = req.pasid.map(|t| t.pasid);
                tracing::debug!(source = %req.source, ?ssid, %f, "SMMU translation fault");
                self.stats.translations.record(key, f.cycles, true);
            }
            TranslateOutcome::Stalled(s) => {
                self.stats.translations.record(key, s.fault.cycles, true);
            }
        }
        out
    }

    #[inline(always)]
    fn translate_inner(
        &self,
        mem: &dyn GuestRam,
        req: &DmaRequest,
        cost: &mut Cost,
    ) -> Result<Translation, Abort> {
        let lat = &self.config.latencies;
        let sid = req.source.stream_id();
        let ssid = req.pasid.map(|t| t.pasid.get());
        let addr = req.addr.0;
        let cr0v = self.ctrl.cr0.load(Ordering::SeqCst);
        if cr0v & cr0::SMMUEN == 0 {
            // 6.3.9.6: with SMMUEN = 0 ATS Translated transactions are
            // terminated with an abort.
            if req.kind == RequestKind::Translated {
                return Err(Abort::silent(FaultKind::Blocked));
            }
            // 3.13 / 6.3.14: with SMMUEN = 0, GBPA decides; no events.
            if self.ctrl.gbpa.load(Ordering::SeqCst) & gbpa::ABORT != 0 {
                return Err(Abort::silent(FaultKind::Blocked));
            }
            if req.kind == RequestKind::AtsTranslation {
                return Err(Abort::silent(FaultKind::Unsupported));
            }
            return Ok(identity(addr, cost));
        }
        // 3.9.2: with CR0.ATSCHK = 0, translated (ATS) transactions bypass
        // the SMMU without any check.
        let translated = req.kind == RequestKind::Translated;
        if translated && cr0v & cr0::ATSCHK == 0 {
            return Ok(identity(addr, cost));
        }
        let ats_req = req.kind == RequestKind::AtsTranslation;
        let ste = match self.ste(mem, sid, cost) {
            Ok(ste) => ste,
            // 5.2 V: ATS Translation Requests to an invalid or ILLEGAL STE
            // complete with CA and no event; translated traffic checked by
            // ATSCHK is aborted without an event too.
            Err(a)
                if translated
                    || (ats_req && a.event.is_some_and(|e| e.kind == EventType::CBadSte)) =>
            {
                self.stats.events_suppressed.fetch_add(1, Ordering::Relaxed);
                return Err(Abort::silent(a.kind));
            }
            Err(a) => return Err(a),
        };
        // 5.2: Config = abort terminates all traffic, translated or not,
        // without an event.
        if ste.config == SteConfig::Abort {
            return Err(Abort::silent(FaultKind::Blocked));
        }

        // ATS (3.9, 5.2 EATS): translation requests and translated
        // transactions need EATS (effective 0b00 for bypass streams).
        let ats_ok = ste.eats != Eats::Abort;
        match req.kind {
            RequestKind::AtsTranslation if !ats_ok => {
                let mut e = Event::new(EventType::FBadAtsTreq, sid, ssid);
                e.input_addr = addr;
                return Err(Abort::event(FaultKind::Unsupported, e));
            }
            RequestKind::Translated => {
                if !ats_ok {
                    let mut e = Event::new(EventType::FTranslForbidden, sid, ssid);
                    e.input_addr = addr;
                    e.read = !req.access.contains(Perm::W);
                    return Err(Abort::event(FaultKind::Blocked, e));
                }
                // The address is already a PA (EATS full); S1CHK split-stage
                // translated transactions are not modelled separately.
                return Ok(identity(addr, cost));
            }
            _ => {}
        }

        let (s1, s2) = match ste.config {
            // 5.2: Config abort terminates without an event.
            SteConfig::Abort => return Err(Abort::silent(FaultKind::Blocked)),
            SteConfig::Bypass => return Ok(identity(addr, cost)),
            SteConfig::Translate { s1, s2 } => (s1, s2),
        };
        // 5.2 PRIVCFG / INSTCFG override the incoming attributes.
        let privileged = match ste.privcfg {
            2 => false,
            3 => true,
            _ => req.pasid.is_some_and(|t| t.privileged),
        };
        let instruction = match ste.instcfg {
            2 => false,
            3 => true,
            _ => req.pasid.is_some_and(|t| t.exec) || req.access.contains(Perm::X),
        };
        let ats = req.kind == RequestKind::AtsTranslation;
        let mut access = req.access;
        if instruction {
            access |= Perm::X;
        }
        if ats {
            // An ATS request asks what is granted; a denial is an answer
            // (3.9.1), never a fault record.
            access = Perm::empty();
        }
        let info = AccessInfo {
            privileged,
            instruction,
            read: !req.access.contains(Perm::W),
        };

        // Select the CD (3.3.3, 5.2 S1CDMAX / S1DSS).
        let cd = match s1 {
            None => {
                if ssid.is_some() {
                    // 3.3.3: a SubstreamID on a stream without stage 1.
                    return Err(Abort::event(
                        FaultKind::BadConfig,
                        Event::new(EventType::CBadSubstreamId, sid, ssid),
                    ));
                }
                None
            }
            Some(s1) => {
                let bad_ssid = || {
                    Abort::event(
                        FaultKind::BadConfig,
                        Event::new(EventType::CBadSubstreamId, sid, ssid),
                    )
                };
                let index = match ssid {
                    Some(_) if s1.cdmax == 0 => return Err(bad_ssid()),
                    Some(x) if u64::from(x) >= 1u64 << s1.cdmax => return Err(bad_ssid()),
                    // 5.2 S1DSS = 0b10: SubstreamID 0 is reserved for
                    // traffic without one; with one it is F_STREAM_DISABLED.
                    Some(0) if s1.dss == S1Dss::Substream0 => {
                        return Err(Abort::event(
                            FaultKind::Blocked,
                            Event::new(EventType::FStreamDisabled, sid, ssid),
                        ));
                    }
                    Some(x) => Some(x),
                    None if s1.cdmax == 0 => Some(0),
                    None => match s1.dss {
                        // 5.2 S1DSS = 0b00: F_STREAM_DISABLED; an ATS
                        // Translation Request is denied without an event.
                        S1Dss::Terminate if ats => return Err(Abort::silent(FaultKind::Blocked)),
                        S1Dss::Terminate => {
                            return Err(Abort::event(
                                FaultKind::Blocked,
                                Event::new(EventType::FStreamDisabled, sid, None),
                            ));
                        }
                        S1Dss::Bypass => None,
                        S1Dss::Substream0 => Some(0),
                    },
                };
                match index {
                    Some(i) => Some(
                        self.cd(mem, sid, ssid, i, &s1, s2.as_ref(), cost)
                            .map_err(|a| self.no_stall_for_ats(a, ats, s2.as_ref()))?,
                    ),
                    None => None,
                }
            }
        };

        let kind = match (&cd, &s2) {
            (Some(_), None) => TlbKind::S1,
            (None, Some(_)) => TlbKind::S2,
            (Some(_), Some(_)) => TlbKind::Nested,
            (None, None) => return Ok(identity(addr, cost)),
        };
        let key = TlbKey {
            world: ste.strw,
            vmid: if self.caps.s2 { ste.vmid } else { 0 },
            asid: cd.map(|c| c.asid),
            kind,
        };

        // TLB.
        if let Some((base, shift, e)) = self.tlb.lookup(&key, addr) {
            let perm = if privileged {
                e.perm_priv
            } else {
                e.perm_unpriv
            };
            if perm.allows(access) {
                cost.add(lat.iotlb_hit);
                cost.path |= CachePath::IOTLB_HIT;
                let size = PageSize::from_shift(shift).unwrap_or(PageSize::SIZE_4K);
                return Ok(Translation {
                    output: Gpa(e.out_base | (addr.wrapping_sub(base))),
                    page_size: size,
                    perm,
                    privileged: e.priv_only,
                    cycles: Cycles(cost.cycles),
                    path: cost.path,
                    walk_reads: 0,
                });
            }
            // Not enough rights in the cached entry: walk again so the
            // fault comes out with the exact stage and level.
        }
        cost.add(lat.iotlb_miss);
        cost.path |= CachePath::WALK;
        let ticket = self.tlb.ticket();
        let wreq = WalkRequest {
            addr,
            access,
            privileged,
        };
        let s1_out = match &cd {
            Some(cd) => {
                // 5.5: CD.S has no effect on ATS Translation Requests.
                let s1_fcfg = (cd.record && !ats, cd.stall && !ats);
                let Some(cfg) = cd.walk else {
                    // 5.4 EPD0: walks through TTB0 are disabled.
                    let e = WalkError {
                        kind: FaultKind::NotPresent,
                        level: 0,
                        entry_addr: 0,
                        entry: None,
                    };
                    return Err(self.walk_abort(
                        sid,
                        ssid,
                        addr,
                        e,
                        false,
                        FaultClass::In,
                        s1_fcfg,
                        Some(info),
                    ));
                };
                let mut s2_err: Option<(WalkError, u64)> = None;
                let mut s2_cost = Cost::default();
                let r = vmsa::walk_with(mem, &cfg, &wreq, &mut |ipa| match &s2 {
                    None => Ok(ipa),
                    Some(s2) => self
                        .s2_table_access(mem, s2, ipa, &mut s2_cost)
                        .inspect_err(|e| {
                            s2_err = Some((*e, ipa));
                        }),
                });
                cost.add(s2_cost.cycles);
                cost.reads = cost.reads.saturating_add(s2_cost.reads);
                match r {
                    Ok(o) => {
                        cost.reads(self, o.reads);
                        Some(o)
                    }
                    Err(e) => {
                        if let Some((e2, ipa)) = s2_err {
                            // 3.4.1: a stage-2 fault on a stage-1 table
                            // fetch, CLASS = TT.
                            let fcfg = s2
                                .as_ref()
                                .map_or((false, false), |s| (s.record && !ats, s.stall && !ats));
                            let mut a = self.walk_abort(
                                sid,
                                ssid,
                                addr,
                                e2,
                                true,
                                FaultClass::Tt,
                                fcfg,
                                Some(info),
                            );
                            if let Some(ev) = a.event.as_mut() {
                                ev.ipa = ipa;
                            }
                            return Err(a);
                        }
                        cost.reads(self, failed_walk_reads(&cfg, &e));
                        return Err(self.walk_abort(
                            sid,
                            ssid,
                            addr,
                            e,
                            false,
                            FaultClass::In,
                            s1_fcfg,
                            Some(info),
                        ));
                    }
                }
            }
            None => None,
        };
        let (ipa, s1_size, s1_perm_u, s1_perm_p, priv_only) = match &s1_out {
            Some(o) => (
                o.output,
                o.page_size,
                o.perm_unpriv,
                o.perm_priv,
                o.privileged_only,
            ),
            None => (
                addr,
                PageSize::from_shift(52).unwrap_or(PageSize::SIZE_4T),
                Perm::all(),
                Perm::all(),
                false,
            ),
        };
        let (out, size, perm_u, perm_p, ipa_range) = match &s2 {
            Some(s2) => {
                let r = vmsa::walk(
                    mem,
                    &s2.walk,
                    &WalkRequest {
                        addr: ipa,
                        access,
                        privileged,
                    },
                );
                match r {
                    Ok(o) => {
                        cost.reads(self, o.reads);
                        let size = o.page_size.min(s1_size);
                        (
                            o.output,
                            size,
                            s1_perm_u & o.perm,
                            s1_perm_p & o.perm,
                            cd.is_some().then(|| (size.align_down(ipa), size.shift())),
                        )
                    }
                    Err(e) => {
                        cost.reads(self, failed_walk_reads(&s2.walk, &e));
                        let fcfg = (s2.record && !ats, s2.stall && !ats);
                        let mut a = self.walk_abort(
                            sid,
                            ssid,
                            addr,
                            e,
                            true,
                            FaultClass::In,
                            fcfg,
                            Some(info),
                        );
                        if let Some(ev) = a.event.as_mut() {
                            ev.ipa = ipa;
                        }
                        return Err(a);
                    }
                }
            }
            None => (ipa, s1_size, s1_perm_u, s1_perm_p, None),
        };
        let perm = if privileged { perm_p } else { perm_u };
        let entry = TlbEntry {
            out_base: size.align_down(out),
            perm_unpriv: perm_u,
            perm_priv: perm_p,
            priv_only,
            ipa_range,
        };
        self.tlb
            .insert(&key, size.align_down(addr), size.shift(), entry, ticket);
        Ok(Translation {
            output: Gpa(out),
            page_size: size,
            perm,
            privileged: priv_only,
            cycles: Cycles(cost.cycles),
            path: cost.path,
            walk_reads: cost.reads,
        })
    }
}

impl Iommu for Smmu {
    /// Translate one transaction (IHI 0070 3.2). A fault is recorded in the
    /// event queue as the architecture says before it is returned. A
    /// caller of this generic entry point cannot hold a transaction: a
    /// transaction that stalls (3.12.2) is returned as its fault here while
    /// the SMMU keeps it stalled until software answers (see
    /// [`Smmu::translate_stallable`] for requesters that can wait).
    fn translate(&self, mem: &dyn GuestRam, req: &DmaRequest) -> Result<Translation, Fault> {
        // translate_stallable, with the success path kept free of the
        // outcome enum.
        let mut cost = Cost::default();
        match self.translate_inner(mem, req, &mut cost) {
            Ok(t) => {
                self.record_ok(req, &t);
                Ok(t)
            }
            Err(a) => match self.fault_path(mem, req, a, &cost) {
                TranslateOutcome::Done(r) => r,
                TranslateOutcome::Stalled(s) => Err(s.fault),
            },
        }
    }
}
