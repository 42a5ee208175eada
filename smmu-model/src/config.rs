//! Stream and context configuration: stream-table and CD-table fetch
//! (linear and two-level, IHI 0070 3.3, 5.1, 5.3), decode into validated
//! [`Ste`]/[`Cd`] values, and the configuration caches (STE cache keyed by
//! StreamID, CD cache keyed by StreamID and CD index).
//!
//! Caches follow the ticket protocol of [`iommu_emulator::cache`]: a ticket
//! is taken before the tables are read, so an entry fetched across a
//! CFGI_* is never inserted after it.

use std::ops::Range;
use std::sync::atomic::Ordering;

use iommu_emulator::mem::read_words;
use iommu_emulator::{CachePath, CacheTag, FaultKind, Gpa, GuestRam};

use crate::Smmu;
use crate::packed::{PackedCd, PackedSte};
use crate::regs::{cr2 as regs_cr2, field, strtab_cfg};
use crate::structs::cd::{CD_BYTES, Cd, L1Cd};
use crate::structs::event::{Event, EventType, FaultClass};
use crate::structs::ste::{CdFmt, L1Std, S1Ste, S2Ste, STE_BYTES, Ste};

/// STE cache tag: the StreamID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SteTag(pub u32);

impl CacheTag for SteTag {
    fn set_hash(&self) -> u64 {
        u64::from(self.0)
    }
}

/// CD cache tag: StreamID and CD index (the SubstreamID, or 0 for
/// transactions without one that use CD 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CdTag {
    /// StreamID.
    pub sid: u32,
    /// CD index.
    pub ssid: u32,
}

impl CacheTag for CdTag {
    fn set_hash(&self) -> u64 {
        (u64::from(self.sid) << 20) ^ u64::from(self.ssid)
    }
}

/// Modelled cost and path of one translation so far.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Cost {
    pub(crate) cycles: u64,
    pub(crate) path: CachePath,
    pub(crate) reads: u8,
}

impl Cost {
    pub(crate) fn add(&mut self, c: u64) {
        self.cycles = self.cycles.saturating_add(c);
    }

    pub(crate) fn reads(&mut self, smmu: &Smmu, n: u8) {
        self.reads = self.reads.saturating_add(n);
        self.add(smmu.config.latencies.mem_read.saturating_mul(u64::from(n)));
    }
}

/// Why a transaction ends without a translation: the event to record (if
/// any) and the class of fault for the requester.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Abort {
    pub(crate) event: Option<Event>,
    pub(crate) kind: FaultKind,
    pub(crate) level: Option<u8>,
    /// The faulting stage is configured to stall (5.5 CD.S / STE.S2S) and
    /// the fault is translation-related: the transaction stalls.
    pub(crate) stall: bool,
}

impl Abort {
    pub(crate) fn event(kind: FaultKind, ev: Event) -> Self {
        Abort {
            event: Some(ev),
            kind,
            level: None,
            stall: false,
        }
    }

    pub(crate) fn silent(kind: FaultKind) -> Self {
        Abort {
            event: None,
            kind,
            level: None,
            stall: false,
        }
    }
}

fn addr_at(base: u64, index: u64, size: u64) -> u64 {
    base.saturating_add(index.saturating_mul(size))
}

fn pow2(bits: u32) -> u64 {
    1u64.checked_shl(bits).unwrap_or(u64::MAX)
}

impl Smmu {
    /// The STE of `sid`: from the STE cache, else fetched from the stream
    /// table (3.3.2-3.3.3) and decoded.
    #[inline(always)]
    pub(crate) fn ste(&self, mem: &dyn GuestRam, sid: u32, cost: &mut Cost) -> Result<Ste, Abort> {
        // Both ways end in the packed form, unpacked once after they join
        // (so the hit path does not go through the fetch path's memory).
        let packed = match self.ste_cache.lookup(&SteTag(sid)) {
            Some(p) => {
                cost.add(self.config.latencies.context_hit);
                cost.path |= CachePath::CONTEXT_HIT;
                p
            }
            None => self.ste_fetch(mem, sid, cost)?,
        };
        Ok(packed.unpack())
    }

    /// [`Self::ste`] on an STE-cache miss: fetch, decode, insert.
    #[inline(never)]
    fn ste_fetch(&self, mem: &dyn GuestRam, sid: u32, cost: &mut Cost) -> Result<PackedSte, Abort> {
        let ticket = self.ste_cache.ticket();
        // 6.3.12 CR2.RECINVSID: record C_BAD_STREAMID only when asked.
        let record_invalid = self.ctrl.cr2.load(Ordering::SeqCst) & regs_cr2::RECINVSID != 0;
        let bad_sid = || {
            if record_invalid {
                Abort::event(
                    FaultKind::BadConfig,
                    Event::new(EventType::CBadStreamId, sid, None),
                )
            } else {
                Abort::silent(FaultKind::BadConfig)
            }
        };
        let base = self.ctrl.strtab_base.load(Ordering::SeqCst) & (((1u64 << 52) - 1) & !0x3f);
        let cfg = self.ctrl.strtab_cfg.load(Ordering::SeqCst);
        // 6.3.24: LOG2SIZE above SIDSIZE behaves as SIDSIZE.
        let log2size = u32::try_from(cfg & strtab_cfg::LOG2SIZE)
            .unwrap_or(0)
            .min(u32::from(self.config.sid_bits));
        if u64::from(sid) >= pow2(log2size) {
            return Err(bad_sid());
        }
        let fmt = field(cfg, strtab_cfg::FMT_SHIFT, 2);
        let ste_addr = match fmt {
            0 => addr_at(base, u64::from(sid), STE_BYTES),
            1 if self.config.st_2lvl => {
                // 6.3.24: SPLIT is 6, 8 or 10.
                let split = u32::try_from(field(cfg, strtab_cfg::SPLIT_SHIFT, 5)).unwrap_or(0);
                if ![6, 8, 10].contains(&split) {
                    tracing::warn!(split, "STRTAB_BASE_CFG.SPLIT reserved");
                    return Err(bad_sid());
                }
                let l1_index = u64::from(sid) >> split;
                let l1_addr = addr_at(base, l1_index, 8);
                let raw = mem.read_u64(Gpa(l1_addr)).map_err(|_| {
                    let mut e = Event::new(EventType::FSteFetch, sid, None);
                    e.fetch_addr = l1_addr;
                    Abort::event(FaultKind::WalkAbort, e)
                })?;
                cost.reads(self, 1);
                let l1 = L1Std::decode(raw);
                // 5.1.1: SPAN 0 = no level-2 table; above SPLIT+1 reserved.
                let span = u32::from(l1.span);
                if span == 0 || span > split.saturating_add(1) {
                    return Err(bad_sid());
                }
                let l2_index = u64::from(sid) & pow2(split).saturating_sub(1);
                if l2_index >= pow2(span.saturating_sub(1)) {
                    return Err(bad_sid());
                }
                // 5.1.1: the level-2 array is aligned to its size.
                let l2_bytes = STE_BYTES.saturating_mul(pow2(span.saturating_sub(1)));
                addr_at(l1.l2ptr & !l2_bytes.saturating_sub(1), l2_index, STE_BYTES)
            }
            _ => return Err(bad_sid()),
        };
        let words: [u64; 8] = read_words(mem, Gpa(ste_addr)).map_err(|_| {
            let mut e = Event::new(EventType::FSteFetch, sid, None);
            e.fetch_addr = ste_addr;
            Abort::event(FaultKind::WalkAbort, e)
        })?;
        cost.reads(self, 1);
        let ste = Ste::decode(&words, &self.caps).map_err(|why| {
            tracing::debug!(sid, %why, "C_BAD_STE");
            Abort::event(
                FaultKind::BadConfig,
                Event::new(EventType::CBadSte, sid, None),
            )
        })?;
        let packed = PackedSte::new(&ste);
        self.ste_cache.insert(SteTag(sid), packed, ticket);
        Ok(packed)
    }

    /// CD `index` of the stream: from the CD cache, else fetched (3.3.3,
    /// 5.3) through stage 2 when `s2` is given (a nested stream's CD table
    /// lives in IPA space) and decoded. `ssid` is the transaction's
    /// SubstreamID for event records.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(crate) fn cd(
        &self,
        mem: &dyn GuestRam,
        sid: u32,
        ssid: Option<u32>,
        index: u32,
        s1: &S1Ste,
        s2: Option<&S2Ste>,
        cost: &mut Cost,
    ) -> Result<Cd, Abort> {
        let tag = CdTag { sid, ssid: index };
        let packed = match self.cd_cache.lookup(&tag) {
            Some(p) => {
                cost.add(self.config.latencies.pasid_hit);
                cost.path |= CachePath::PASID_HIT;
                p
            }
            None => self.cd_fetch(mem, sid, ssid, index, s1, s2, cost)?,
        };
        Ok(packed.unpack())
    }

    /// [`Self::cd`] on a CD-cache miss: fetch (through stage 2 when
    /// nested), decode, insert.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn cd_fetch(
        &self,
        mem: &dyn GuestRam,
        sid: u32,
        ssid: Option<u32>,
        index: u32,
        s1: &S1Ste,
        s2: Option<&S2Ste>,
        cost: &mut Cost,
    ) -> Result<PackedCd, Abort> {
        let tag = CdTag { sid, ssid: index };
        let ticket = self.cd_cache.ticket();
        let fetch_fault = |addr: u64| {
            let mut e = Event::new(EventType::FCdFetch, sid, ssid);
            e.fetch_addr = addr;
            Abort::event(FaultKind::WalkAbort, e)
        };
        let cd_ipa = match s1.fmt {
            CdFmt::Linear => addr_at(s1.ctx_ptr, u64::from(index), CD_BYTES),
            fmt => {
                let split = fmt.split();
                let l1_ipa = addr_at(s1.ctx_ptr, u64::from(index) >> split, 8);
                let l1_pa = self.cd_s2(mem, sid, ssid, l1_ipa, s2, cost)?;
                let raw = mem.read_u64(Gpa(l1_pa)).map_err(|_| fetch_fault(l1_pa))?;
                cost.reads(self, 1);
                let l1 = L1Cd::decode(raw);
                // 5.3.1: an invalid L1CD makes the SubstreamID bad.
                if !l1.valid {
                    return Err(Abort::event(
                        FaultKind::BadConfig,
                        Event::new(EventType::CBadSubstreamId, sid, ssid),
                    ));
                }
                let l2_index = u64::from(index) & pow2(split).saturating_sub(1);
                addr_at(l1.l2ptr, l2_index, CD_BYTES)
            }
        };
        let cd_pa = self.cd_s2(mem, sid, ssid, cd_ipa, s2, cost)?;
        let words: [u64; 8] = read_words(mem, Gpa(cd_pa)).map_err(|_| fetch_fault(cd_pa))?;
        cost.reads(self, 1);
        let cd = Cd::decode(&words, &self.caps, s1.stalld).map_err(|why| {
            tracing::debug!(sid, ?ssid, %why, "C_BAD_CD");
            Abort::event(
                FaultKind::BadConfig,
                Event::new(EventType::CBadCd, sid, ssid),
            )
        })?;
        let packed = PackedCd::new(&cd);
        self.cd_cache.insert(tag, packed, ticket);
        Ok(packed)
    }

    /// Translate the IPA of a CD-table access through stage 2 (3.4.1): a
    /// stage-2 fault here is reported with CLASS = CD.
    fn cd_s2(
        &self,
        mem: &dyn GuestRam,
        sid: u32,
        ssid: Option<u32>,
        ipa: u64,
        s2: Option<&S2Ste>,
        cost: &mut Cost,
    ) -> Result<u64, Abort> {
        let Some(s2) = s2 else { return Ok(ipa) };
        self.s2_table_access(mem, s2, ipa, cost).map_err(|e| {
            let mut a = self.walk_abort(
                sid,
                ssid,
                ipa,
                e,
                true,
                FaultClass::Cd,
                (s2.record, s2.stall),
                None,
            );
            if let Some(ev) = a.event.as_mut() {
                ev.ipa = ipa;
            }
            a
        })
    }

    /// Invalidate cached STEs (and their CDs) of StreamIDs in `sids`.
    pub(crate) fn invalidate_stes(&self, sids: Range<u64>) {
        self.ste_cache
            .invalidate_if(|t, _| sids.contains(&u64::from(t.0)));
        self.cd_cache
            .invalidate_if(|t, _| sids.contains(&u64::from(t.sid)));
    }
}
