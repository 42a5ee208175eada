//! Invalidation: register-based (CCMD 11.4.6, IOTLB registers 11.4.8) and
//! queued (VT-d 6.5.2).
//!
//! The queue is processed inside the IQT write (and when IQE is cleared, or
//! QI is enabled with a non-empty queue), from IQH to IQT, at most one
//! queue's worth of descriptors per call. Each invalidation has removed
//! every entry it covers before the next descriptor is fetched, so a wait
//! descriptor's status write means what Linux expects: nothing cached
//! before the invalidation can be used afterwards. A descriptor that cannot
//! be decoded sets FSTS.IQE and IQERCD and stops the queue with IQH on it
//! (6.5.2.10).

use std::sync::atomic::Ordering;

use iommu_emulator::regs::RegFile;
use iommu_emulator::{Gpa, GuestRam, MsiMessage};

use crate::Vtd;
use crate::config::DevCtx;
use crate::fault;
use crate::iotlb::psi_range;
use crate::regs::*;
use crate::structs::inv_desc::{ContextGran, DescError, InvDesc, IotlbGran, PasidCacheGran};

/// IQERCD.IQEI: tail pointer misaligned or beyond the queue.
pub const IQEI_TAIL: u64 = 1;
/// IQERCD.IQEI: 256-bit descriptors without scalable-mode support.
pub const IQEI_WIDTH: u64 = 4;

/// True when `sid` matches `target` under function mask `fm` (6.5.2.1).
fn sid_matches(sid: u16, target: u16, fm: u8) -> bool {
    let mask: u16 = match fm {
        0 => 0xffff,
        1 => !0b100,
        2 => !0b110,
        _ => !0b111,
    };
    sid & mask == target & mask
}

impl Vtd {
    /// Drop every cached structure.
    pub(crate) fn invalidate_everything(&self) {
        self.context_cache.invalidate_all();
        self.pasid_cache.invalidate_all();
        self.iotlb.cache.invalidate_all();
        self.fl_pwc.invalidate_all();
        self.sl_pwc.invalidate_all();
    }

    /// Context-cache invalidation (6.5.2.1 / CCMD). Cached PASID entries of
    /// the devices concerned go too (allowed over-invalidation: they were
    /// read through the context entry).
    pub fn invalidate_context(&self, gran: ContextGran) {
        match gran {
            ContextGran::Global => {
                self.context_cache.invalidate_all();
                self.pasid_cache.invalidate_all();
            }
            ContextGran::Domain(did) => {
                self.context_cache.invalidate_if(|_, c| match c {
                    DevCtx::Legacy(l) => l.did == did,
                    DevCtx::Scalable(_) => true,
                });
                self.pasid_cache.invalidate_if(|_, p| p.entry.did == did);
            }
            ContextGran::Device { did, sid, fm } => {
                self.context_cache.invalidate_if(|t, c| {
                    sid_matches(t.rid, sid, fm)
                        && match c {
                            DevCtx::Legacy(l) => l.did == did,
                            DevCtx::Scalable(_) => true,
                        }
                });
                self.pasid_cache
                    .invalidate_if(|t, _| sid_matches(t.rid, sid, fm));
            }
        }
    }

    /// IOTLB invalidation (6.5.2.3 / IOTLB registers): IOTLB entries of
    /// every PASID of the domain, and the paging-structure caches (unless
    /// the invalidation hint says only leaves changed).
    pub fn invalidate_iotlb(&self, gran: IotlbGran) {
        match gran {
            IotlbGran::Global => {
                self.iotlb.cache.invalidate_all();
                self.fl_pwc.invalidate_all();
                self.sl_pwc.invalidate_all();
            }
            IotlbGran::Domain(did) => {
                self.iotlb.cache.invalidate_if(|t, _| t.did == did);
                self.fl_pwc.invalidate_if(|t, _| t.did == did);
                self.sl_pwc.invalidate_if(|t, _| t.did == did);
            }
            IotlbGran::Page { did, addr, am, ih } => {
                let r = psi_range(addr, am);
                self.iotlb
                    .cache
                    .invalidate_range(r.clone(), |t, _| t.did == did);
                if !ih {
                    self.fl_pwc.invalidate_range(r.clone(), |t, _| t.did == did);
                    self.sl_pwc.invalidate_range(r, |t, _| t.did == did);
                }
            }
        }
    }

    /// PASID-based IOTLB invalidation (6.5.2.4).
    pub fn invalidate_pasid_iotlb(&self, did: u16, pasid: u32, page: Option<(u64, u8, bool)>) {
        match page {
            None => {
                self.iotlb
                    .cache
                    .invalidate_if(|t, _| t.did == did && t.pasid == pasid);
                self.fl_pwc
                    .invalidate_if(|t, _| t.did == did && t.pasid == pasid);
                self.sl_pwc
                    .invalidate_if(|t, _| t.did == did && t.pasid == pasid);
            }
            Some((addr, am, ih)) => {
                let r = psi_range(addr, am);
                self.iotlb
                    .cache
                    .invalidate_range(r.clone(), |t, _| t.did == did && t.pasid == pasid);
                if !ih {
                    self.fl_pwc
                        .invalidate_range(r.clone(), |t, _| t.did == did && t.pasid == pasid);
                    self.sl_pwc
                        .invalidate_range(r, |t, _| t.did == did && t.pasid == pasid);
                }
            }
        }
    }

    /// PASID-cache invalidation (6.5.2.2).
    pub fn invalidate_pasid_cache(&self, gran: PasidCacheGran) {
        match gran {
            PasidCacheGran::Global => {
                self.pasid_cache.invalidate_all();
            }
            PasidCacheGran::Domain(did) => {
                self.pasid_cache.invalidate_if(|_, p| p.entry.did == did);
            }
            PasidCacheGran::Pasid(did, pasid) => {
                self.pasid_cache
                    .invalidate_if(|t, p| t.pasid == pasid && p.entry.did == did);
            }
        }
    }

    /// CCMD write (11.4.6): ICC=1 performs the invalidation, reports the
    /// actual granularity in CAIG and clears ICC.
    pub(crate) fn on_ccmd_write(&self, regs: &mut RegFile) {
        let v = regs.value(CCMD);
        if v & CCMD_ICC == 0 {
            return;
        }
        let cirg = (v >> CCMD_CIRG_SHIFT) & 3;
        let did = u16::try_from(v & 0xffff).unwrap_or(0);
        let sid = u16::try_from((v >> 16) & 0xffff).unwrap_or(0);
        let fm = u8::try_from((v >> 32) & 3).unwrap_or(0);
        let gran = match cirg {
            1 => Some(ContextGran::Global),
            2 => Some(ContextGran::Domain(did)),
            3 => Some(ContextGran::Device { did, sid, fm }),
            _ => None,
        };
        let caig = match gran {
            Some(g) => {
                self.invalidate_context(g);
                self.counters.count_inval_reg(0);
                cirg
            }
            None => 0,
        };
        let keep = v & !(CCMD_ICC | (3 << CCMD_CAIG_SHIFT));
        regs.set(CCMD, keep | (caig << CCMD_CAIG_SHIFT));
    }

    /// IOTLB register write (11.4.8.1): IVT=1 performs the invalidation,
    /// reports IAIG and clears IVT.
    pub(crate) fn on_iotlb_write(&self, regs: &mut RegFile) {
        let v = regs.value(IOTLB);
        if v & IOTLB_IVT == 0 {
            return;
        }
        let iirg = (v >> IOTLB_IIRG_SHIFT) & 3;
        let did = u16::try_from((v >> 32) & 0xffff).unwrap_or(0);
        let iva = regs.value(IVA);
        let am = u8::try_from(iva & 0x3f).unwrap_or(0);
        let mamv = (regs.value(CAP) >> 48) & 0x3f;
        let gran = match iirg {
            1 => Some(IotlbGran::Global),
            2 => Some(IotlbGran::Domain(did)),
            3 if u64::from(am) <= mamv => Some(IotlbGran::Page {
                did,
                addr: iva & !0xfff,
                am,
                ih: iva & (1 << 6) != 0,
            }),
            _ => None,
        };
        let iaig = match gran {
            Some(g) => {
                self.invalidate_iotlb(g);
                self.counters.count_inval_reg(1);
                iirg
            }
            None => 0,
        };
        let keep = v & !(IOTLB_IVT | (3 << IOTLB_IAIG_SHIFT));
        regs.set(IOTLB, keep | (iaig << IOTLB_IAIG_SHIFT));
    }

    fn queue_error(&self, regs: &mut RegFile, iqei: u64, msis: &mut Vec<MsiMessage>) {
        let v = regs.value(IQERCD) & !0xf;
        regs.set(IQERCD, v | (iqei & 0xf));
        self.counters.iq_errors.fetch_add(1, Ordering::Relaxed);
        msis.extend(fault::set_status(regs, FSTS_IQE));
    }

    /// Process the invalidation queue from IQH to IQT (6.5.2).
    pub(crate) fn process_queue(
        &self,
        regs: &mut RegFile,
        mem: &dyn GuestRam,
        msis: &mut Vec<MsiMessage>,
    ) {
        if regs.value(GSTS) & GCMD_QIE == 0 || regs.value(FSTS) & FSTS_IQE != 0 {
            return;
        }
        let iqa = regs.value(IQA);
        let dw = iqa & IQA_DW != 0;
        if dw && !self.config.scalable_mode {
            tracing::warn!("vtd: 256-bit invalidation descriptors without scalable-mode support");
            self.queue_error(regs, IQEI_WIDTH, msis);
            return;
        }
        let base = iqa & !0xfff;
        let qbytes = 4096u64 << (iqa & IQA_QS_MASK);
        let dsize: u64 = if dw { 32 } else { 16 };
        let tail = regs.value(IQT) & IQ_OFFSET_MASK;
        if tail >= qbytes || !tail.is_multiple_of(dsize) {
            tracing::warn!(
                tail,
                "vtd: invalidation queue tail beyond the queue or misaligned"
            );
            self.queue_error(regs, IQEI_TAIL, msis);
            return;
        }
        let mut head = regs.value(IQH) & IQ_OFFSET_MASK;
        if head >= qbytes || !head.is_multiple_of(dsize) {
            head = 0;
        }
        let max = qbytes.checked_div(dsize).unwrap_or(0);
        for _ in 0..max {
            if head == tail {
                break;
            }
            let Some(addr) = base.checked_add(head) else {
                self.queue_error(regs, 0, msis);
                break;
            };
            let words = iommu_emulator::mem::read_words::<2>(mem, Gpa(addr));
            let Ok([lo, hi]) = words else {
                tracing::warn!(addr, "vtd: invalidation descriptor outside guest RAM");
                self.queue_error(regs, 0, msis);
                break;
            };
            self.counters.queue_cmds.fetch_add(1, Ordering::Relaxed);
            match InvDesc::decode(lo, hi) {
                Ok(d) => self.execute(regs, mem, d, msis),
                Err(e) => {
                    tracing::warn!(
                        lo = format_args!("{lo:#x}"),
                        hi = format_args!("{hi:#x}"),
                        ?e,
                        "vtd: bad invalidation descriptor"
                    );
                    if let DescError::Type(_) = e {
                        self.counters.bad_desc_type.fetch_add(1, Ordering::Relaxed);
                    }
                    self.queue_error(regs, e.iqei(), msis);
                    break;
                }
            }
            head = head.saturating_add(dsize).checked_rem(qbytes).unwrap_or(0);
            regs.set(IQH, head);
        }
    }

    fn execute(
        &self,
        regs: &mut RegFile,
        mem: &dyn GuestRam,
        d: InvDesc,
        msis: &mut Vec<MsiMessage>,
    ) {
        self.counters.count_desc(&d);
        match d {
            InvDesc::Context(g) => self.invalidate_context(g),
            InvDesc::Iotlb(g) => self.invalidate_iotlb(g),
            InvDesc::PasidIotlb { did, pasid, page } => {
                self.invalidate_pasid_iotlb(did, pasid, page)
            }
            InvDesc::PasidCache(g) => self.invalidate_pasid_cache(g),
            InvDesc::Iec { global, index, im } => {
                // 6.5.2.7: global, or 2^IM entries from the index.
                let inv = if global {
                    crate::irq_remap::IecInvalidation::Global
                } else {
                    crate::irq_remap::IecInvalidation::Range {
                        index,
                        count: 1u32.checked_shl(u32::from(im)).unwrap_or(u32::MAX),
                    }
                };
                self.ir.invalidate(inv);
            }
            InvDesc::DevTlb(inv) => {
                let n = self.notifier.read().ok().and_then(|g| g.clone());
                match n {
                    Some(n) => n.invalidate_atc(&inv.to_endpoint()),
                    None => {
                        self.counters.unnotified.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            InvDesc::PageGroupResponse(r) => {
                let n = self.notifier.read().ok().and_then(|g| g.clone());
                match n {
                    Some(n) => n.page_response(&r.to_endpoint()),
                    None => {
                        self.counters.unnotified.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            InvDesc::Wait {
                status,
                interrupt,
                drain,
                ..
            } => {
                if drain {
                    // 6.5.2.8: page requests are queued synchronously (see
                    // `prq`), so every earlier one is already in the queue.
                    self.prq_counters.drains.fetch_add(1, Ordering::Relaxed);
                }
                if let Some((addr, data)) = status
                    && mem.write_u32(Gpa(addr), data).is_err()
                {
                    tracing::warn!(
                        addr,
                        "vtd: wait descriptor status address outside guest RAM"
                    );
                    self.counters
                        .dropped_status_writes
                        .fetch_add(1, Ordering::Relaxed);
                }
                if interrupt {
                    let before = regs.value(ICS);
                    regs.set(ICS, before | ICS_IWC);
                    if before & ICS_IWC == 0 {
                        msis.extend(fault::signal(regs, IECTL));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sid_matches_function_mask() {
        assert!(sid_matches(0x0108, 0x0108, 0));
        assert!(!sid_matches(0x010c, 0x0108, 0));
        assert!(sid_matches(0x010c, 0x0108, 1));
        assert!(sid_matches(0x010f, 0x0108, 3));
        assert!(!sid_matches(0x0110, 0x0108, 3));
    }
}
