//! Interrupt remapping (VT-d 5.1).
//!
//! The VMM hands every interrupt a device (or the IOAPIC) sends to
//! [`crate::Vtd::remap_msi`] / [`crate::Vtd::remap_ioapic`]:
//! - with GSTS.IRES clear, interrupts pass through unchanged;
//! - compatibility-format requests (address bit 4 clear) pass through only
//!   while GSTS.CFIS is set and IRTA.EIME is clear, else fault 0x25
//!   (5.1.2.1);
//! - remappable-format requests give an interrupt index (handle, plus the
//!   subhandle when SHV is set, 5.1.2.2), checked against the table size
//!   (0x21), read from the table latched by SIRTP (0x23 when outside guest
//!   RAM), decoded (P clear 0x22; reserved fields, bad SVT/SQ encodings and
//!   posted format without CAP.PI 0x24, 9.10), and the source-id verified
//!   (SVT/SQ/SID, 0x26).
//!
//! Faults are recorded in the fault recording registers (7.2.1, FI = the
//! interrupt index in bits 63:48 of the record) unless the IRTE has FPD
//! set. Decoded IRTEs are cached in the interrupt entry cache (IEC, on the
//! core cache engine), dropped by IEC invalidation descriptors (6.5.2.7,
//! global or index-selective) and by SIRTP. Every IEC invalidation is also
//! reported to the [`IrNotifier`] after the register lock is released, so
//! a VMM can rebuild its interrupt routes (irqfd) from the new entries.
//!
//! Deviations: posted interrupts are not implemented (CAP.PI clear); the
//! IRTE's delivery mode and trigger mode are returned as decoded, without
//! checking them against the IOAPIC entry's.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use iommu_emulator::cache::CacheTag;
use iommu_emulator::{Cache, CacheConfig, Gpa, GuestRam, MsiMessage, Rid};

use crate::Vtd;
use crate::fault::{self, AddrType, FaultReason, FaultRecord, RecordOutcome};

/// IR fault: reserved field in the interrupt request (0x20).
pub const IR_REQUEST_RESERVED: u8 = 0x20;
/// IR fault: interrupt index beyond the table size (0x21).
pub const IR_INDEX_BEYOND: u8 = 0x21;
/// IR fault: IRTE not present (0x22).
pub const IR_NOT_PRESENT: u8 = 0x22;
/// IR fault: IRT access failed (0x23).
pub const IR_TABLE_ACCESS: u8 = 0x23;
/// IR fault: reserved field in the IRTE, including posted format without
/// posted-interrupt support (0x24).
pub const IR_IRTE_RESERVED: u8 = 0x24;
/// IR fault: compatibility-format interrupt blocked (0x25).
pub const IR_COMPAT_BLOCKED: u8 = 0x25;
/// IR fault: source-id verification failed (0x26).
pub const IR_SID_BLOCKED: u8 = 0x26;

/// Entries of the interrupt entry cache.
pub const IEC_CONFIG: CacheConfig = CacheConfig::new(64, 4);

/// IRTA: extended interrupt mode enable (x2APIC, 11.4.10.1).
pub const IRTA_EIME: u64 = 1 << 11;

/// An interrupt remapping fault (the spec's reason, 0x20..0x26).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IrFault {
    /// Fault reason.
    pub reason: u8,
    /// Interrupt index, for remappable requests.
    pub index: Option<u16>,
    /// Whether the fault reached the fault recording registers.
    pub recorded: bool,
}

/// A remapped (or passed-through) interrupt, as the local APICs receive it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemappedMsi {
    /// Vector.
    pub vector: u8,
    /// Destination APIC ID (8 bits in xAPIC mode, 32 in x2APIC mode).
    pub dest: u32,
    /// Logical destination mode.
    pub logical: bool,
    /// Redirection hint.
    pub redirection_hint: bool,
    /// Level-triggered.
    pub level: bool,
    /// Delivery mode (000 fixed, 001 lowest priority, 010 SMI, 100 NMI,
    /// 101 INIT, 111 ExtINT).
    pub delivery_mode: u8,
    /// The IRTE index used, `None` when the interrupt passed through.
    pub index: Option<u16>,
}

impl RemappedMsi {
    /// The interrupt in compatibility MSI format, as KVM's MSI routing
    /// takes it (with KVM_X2APIC_API: destination bits 31:8 in the upper
    /// address word, bits 63:40).
    pub fn msi(&self) -> MsiMessage {
        let lo = 0xfee0_0000u64
            | (u64::from(self.dest & 0xff) << 12)
            | (u64::from(self.redirection_hint) << 3)
            | (u64::from(self.logical) << 2);
        let hi = u64::from(self.dest & 0xffff_ff00) << 32;
        let data = u32::from(self.vector)
            | (u32::from(self.delivery_mode & 7) << 8)
            | (u32::from(self.level) << 15)
            | (1 << 14);
        MsiMessage {
            addr: hi | lo,
            data,
        }
    }

    /// Decode a compatibility-format MSI (address/data as the device sent
    /// them).
    pub fn from_compat(addr: u64, data: u32) -> Self {
        let d8 = u32::try_from((addr >> 12) & 0xff).unwrap_or(0);
        let dhi = u32::try_from((addr >> 32) & 0xffff_ff00).unwrap_or(0);
        RemappedMsi {
            vector: u8::try_from(data & 0xff).unwrap_or(0),
            dest: d8 | dhi,
            logical: addr & (1 << 2) != 0,
            redirection_hint: addr & (1 << 3) != 0,
            level: data & (1 << 15) != 0,
            delivery_mode: u8::try_from((data >> 8) & 7).unwrap_or(0),
            index: None,
        }
    }
}

/// What an IEC invalidation covered (reported to the [`IrNotifier`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IecInvalidation {
    /// Every entry (global IEC invalidation, SIRTP, IRE change).
    Global,
    /// `count` entries from `index`.
    Range {
        /// First index.
        index: u16,
        /// Number of entries (2^IM).
        count: u32,
    },
}

/// Told when interrupt remapping entries may have changed, so the VMM can
/// re-resolve the routes it derived through [`Vtd::remap_msi`]. Called
/// without any model lock held; it may call back into the [`Vtd`].
pub trait IrNotifier: Send + Sync {
    /// Entries were invalidated (or the table or enable state changed).
    fn interrupt_entries_invalidated(&self, inv: IecInvalidation);
}

/// A decoded remappable-format IRTE (9.10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Irte {
    /// Fault processing disable.
    pub fpd: bool,
    /// The interrupt it delivers.
    pub msi: RemappedMsi,
    /// Source validation type.
    pub svt: u8,
    /// Source-id qualifier.
    pub sq: u8,
    /// Source identifier.
    pub sid: u16,
}

/// Why an IRTE does not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IrteError {
    /// Fault reason (0x22 or 0x24).
    pub reason: u8,
    /// FPD as read.
    pub fpd: bool,
}

impl Irte {
    /// Decode the 128-bit entry; `eime` selects the x2APIC destination
    /// format.
    pub fn decode(lo: u64, hi: u64, eime: bool) -> Result<Self, IrteError> {
        let fpd = lo & 2 != 0;
        let err = |reason| IrteError { reason, fpd };
        if lo & 1 == 0 {
            return Err(err(IR_NOT_PRESENT));
        }
        // 9.10: bits 14:12 and 31:24 reserved; IM (15) = posted format,
        // reserved without CAP.PI; bits 127:84 reserved.
        let dst = u32::try_from(lo >> 32).unwrap_or(0);
        let dst_rsvd = if eime { 0 } else { dst & !0xff00 };
        let svt = u8::try_from((hi >> 18) & 3).unwrap_or(0);
        if lo & (0x7 << 12) != 0
            || lo & (1 << 15) != 0
            || lo & (0xff << 24) != 0
            || hi & !0xf_ffff != 0
            || dst_rsvd != 0
            || svt == 3
        {
            return Err(err(IR_IRTE_RESERVED));
        }
        let dest = if eime { dst } else { (dst >> 8) & 0xff };
        Ok(Irte {
            fpd,
            msi: RemappedMsi {
                vector: u8::try_from((lo >> 16) & 0xff).unwrap_or(0),
                dest,
                logical: lo & (1 << 2) != 0,
                redirection_hint: lo & (1 << 3) != 0,
                level: lo & (1 << 4) != 0,
                delivery_mode: u8::try_from((lo >> 5) & 7).unwrap_or(0),
                index: None,
            },
            svt,
            sq: u8::try_from((hi >> 16) & 3).unwrap_or(0),
            sid: u16::try_from(hi & 0xffff).unwrap_or(0),
        })
    }

    /// Source-id verification (9.10 SVT/SQ/SID).
    pub fn source_ok(&self, source: Rid) -> bool {
        let s = source.0;
        match self.svt {
            0 => true,
            1 => {
                let mask: u16 = match self.sq {
                    0 => 0xffff,
                    1 => !0b100,
                    2 => !0b110,
                    _ => !0b111,
                };
                s & mask == self.sid & mask
            }
            2 => {
                let bus = s >> 8;
                let (start, end) = (self.sid >> 8, self.sid & 0xff);
                bus >= start && bus <= end
            }
            _ => false,
        }
    }
}

/// IEC tag: the interrupt index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IecTag(pub u16);

impl CacheTag for IecTag {
    fn set_hash(&self) -> u64 {
        u64::from(self.0)
    }
}

/// Interrupt remapping state of a unit.
pub(crate) struct IrState {
    /// IRTA as latched by the last SIRTP.
    pub(crate) irta: AtomicU64,
    pub(crate) enabled: AtomicBool,
    pub(crate) cfis: AtomicBool,
    pub(crate) iec: Cache<IecTag, Irte>,
    pub(crate) pending: Mutex<Vec<IecInvalidation>>,
    pub(crate) notifier: RwLock<Option<Arc<dyn IrNotifier>>>,
    pub(crate) remapped: AtomicU64,
    pub(crate) passed: AtomicU64,
    pub(crate) faults: AtomicU64,
}

impl IrState {
    pub(crate) fn new() -> Result<Self, iommu_emulator::cache::CacheConfigError> {
        Ok(IrState {
            irta: AtomicU64::new(0),
            enabled: AtomicBool::new(false),
            cfis: AtomicBool::new(false),
            iec: Cache::new(IEC_CONFIG)?,
            pending: Mutex::new(Vec::new()),
            notifier: RwLock::new(None),
            remapped: AtomicU64::new(0),
            passed: AtomicU64::new(0),
            faults: AtomicU64::new(0),
        })
    }

    /// Drop IEC entries and queue a notification.
    pub(crate) fn invalidate(&self, inv: IecInvalidation) {
        match inv {
            IecInvalidation::Global => {
                self.iec.invalidate_all();
            }
            IecInvalidation::Range { index, count } => {
                let start = u32::from(index);
                let end = start.saturating_add(count);
                self.iec
                    .invalidate_if(|t, _| u32::from(t.0) >= start && u32::from(t.0) < end);
            }
        }
        if let Ok(mut p) = self.pending.lock() {
            // Bounded: coalesce into one global notification when long.
            if p.len() >= 64 {
                p.clear();
                p.push(IecInvalidation::Global);
            } else {
                p.push(inv);
            }
        }
    }
}

/// Interrupt remapping counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IrStats {
    /// Interrupts remapped through an IRTE.
    pub remapped: u64,
    /// Interrupts passed through (IR disabled or CFIS).
    pub passed_through: u64,
    /// Interrupts blocked by a fault.
    pub faults: u64,
    /// IEC hits.
    pub iec_hits: u64,
    /// IEC misses.
    pub iec_misses: u64,
}

impl Vtd {
    /// Where IEC invalidations are reported.
    pub fn set_ir_notifier(&self, n: Arc<dyn IrNotifier>) {
        if let Ok(mut g) = self.ir.notifier.write() {
            *g = Some(n);
        }
    }

    /// Deliver queued IEC notifications (called without locks held).
    pub(crate) fn flush_ir_notifications(&self) {
        let pending = match self.ir.pending.lock() {
            Ok(mut p) if !p.is_empty() => std::mem::take(&mut *p),
            _ => return,
        };
        let n = self.ir.notifier.read().ok().and_then(|g| g.clone());
        if let Some(n) = n {
            for inv in pending {
                n.interrupt_entries_invalidated(inv);
            }
        }
    }

    /// Interrupt remapping statistics.
    pub fn ir_stats(&self) -> IrStats {
        let c = self.ir.iec.stats();
        IrStats {
            remapped: self.ir.remapped.load(Ordering::Relaxed),
            passed_through: self.ir.passed.load(Ordering::Relaxed),
            faults: self.ir.faults.load(Ordering::Relaxed),
            iec_hits: c.hits,
            iec_misses: c.misses,
        }
    }

    /// Whether interrupt remapping is enabled (GSTS.IRES).
    pub fn interrupt_remapping_enabled(&self) -> bool {
        self.ir.enabled.load(Ordering::SeqCst)
    }

    fn ir_fault(&self, source: Rid, reason: u8, index: Option<u16>, fpd: bool) -> IrFault {
        self.ir.faults.fetch_add(1, Ordering::Relaxed);
        self.counters.count_fault(reason);
        tracing::debug!(source = %source, reason, ?index, "vtd: interrupt remapping fault");
        if fpd {
            self.counters.fpd_suppressed.fetch_add(1, Ordering::Relaxed);
            return IrFault {
                reason,
                index,
                recorded: false,
            };
        }
        let rec = FaultRecord {
            reason: FaultReason(reason),
            sid: source.0,
            addr: u64::from(index.unwrap_or(0)) << 48,
            write: true,
            at: AddrType::Untranslated,
            pasid: None,
            exec: false,
            privileged: false,
        };
        let (outcome, msi) = {
            let mut regs = self.lock_regs();
            let mut next = self.next_fault.load(Ordering::Relaxed);
            let r = fault::record(&mut regs, self.nfr, &mut next, &rec);
            self.next_fault.store(next, Ordering::Relaxed);
            r
        };
        let recorded = matches!(outcome, RecordOutcome::Recorded(_));
        if recorded {
            self.counters.recorded.fetch_add(1, Ordering::Relaxed);
        } else {
            self.counters
                .overflow_dropped
                .fetch_add(1, Ordering::Relaxed);
        }
        if let Some(m) = msi {
            self.counters.msis.fetch_add(1, Ordering::Relaxed);
            self.msi.raise_msi(m);
        }
        IrFault {
            reason,
            index,
            recorded,
        }
    }

    /// Remap an MSI write (address, data) from `source` (VT-d 5.1). Takes
    /// the register lock only to record a fault; never call it from inside
    /// an endpoint-port callback ([`iommu_emulator::endpoint::EndpointPort`]).
    pub fn remap_msi(
        &self,
        mem: &dyn GuestRam,
        source: Rid,
        addr: u64,
        data: u32,
    ) -> Result<RemappedMsi, IrFault> {
        if !self.ir.enabled.load(Ordering::SeqCst) {
            self.ir.passed.fetch_add(1, Ordering::Relaxed);
            return Ok(RemappedMsi::from_compat(addr, data));
        }
        let irta = self.ir.irta.load(Ordering::SeqCst);
        let eime = irta & IRTA_EIME != 0;
        if addr & (1 << 4) == 0 {
            // 5.1.2.1: compatibility format.
            if self.ir.cfis.load(Ordering::SeqCst) && !eime {
                self.ir.passed.fetch_add(1, Ordering::Relaxed);
                return Ok(RemappedMsi::from_compat(addr, data));
            }
            return Err(self.ir_fault(source, IR_COMPAT_BLOCKED, None, false));
        }
        // 5.1.2.2: remappable format: handle 15 bits in 19:5, bit 15 in 2.
        let handle = ((addr >> 5) & 0x7fff) | (((addr >> 2) & 1) << 15);
        let index = if addr & (1 << 3) != 0 {
            handle.saturating_add(u64::from(data & 0xffff))
        } else {
            handle
        };
        let entries = 2u64 << (irta & 0xf);
        let idx16 = u16::try_from(index).ok();
        if index >= entries || idx16.is_none() {
            return Err(self.ir_fault(
                source,
                IR_INDEX_BEYOND,
                Some(u16::try_from(index & 0xffff).unwrap_or(0)),
                false,
            ));
        }
        let idx = idx16.unwrap_or(0);
        let tag = IecTag(idx);
        let irte = match self.ir.iec.lookup(&tag) {
            Some(e) => e,
            None => {
                let ticket = self.ir.iec.ticket();
                let a = (irta & !0xfff).checked_add(index.saturating_mul(16));
                let words = a.map(|a| iommu_emulator::mem::read_words::<2>(mem, Gpa(a)));
                let Some(Ok([lo, hi])) = words else {
                    return Err(self.ir_fault(source, IR_TABLE_ACCESS, Some(idx), false));
                };
                match Irte::decode(lo, hi, eime) {
                    Ok(e) => {
                        self.ir.iec.insert(tag, e, ticket);
                        e
                    }
                    Err(e) => return Err(self.ir_fault(source, e.reason, Some(idx), e.fpd)),
                }
            }
        };
        if !irte.source_ok(source) {
            return Err(self.ir_fault(source, IR_SID_BLOCKED, Some(idx), irte.fpd));
        }
        self.ir.remapped.fetch_add(1, Ordering::Relaxed);
        Ok(RemappedMsi {
            index: Some(idx),
            ..irte.msi
        })
    }

    /// Remap an IOAPIC redirection table entry (64 bits) of the IOAPIC at
    /// `ioapic_source` (5.1.5.1): remappable format (bit 48) gives the
    /// handle in bits 63:49 and 11, the vector field is the subhandle-free
    /// vector; compatibility format is subject to CFIS.
    pub fn remap_ioapic(
        &self,
        mem: &dyn GuestRam,
        ioapic_source: Rid,
        rte: u64,
    ) -> Result<RemappedMsi, IrFault> {
        let vector = rte & 0xff;
        if rte & (1 << 48) != 0 {
            let handle = ((rte >> 49) & 0x7fff) | (((rte >> 11) & 1) << 15);
            let addr =
                0xfee0_0000u64 | ((handle & 0x7fff) << 5) | (1 << 4) | (((handle >> 15) & 1) << 2);
            let data = u32::try_from(vector).unwrap_or(0);
            self.remap_msi(mem, ioapic_source, addr, data)
        } else {
            let dest = (rte >> 56) & 0xff;
            let addr = 0xfee0_0000u64 | (dest << 12) | (((rte >> 11) & 1) << 2);
            let data = u32::try_from(vector | (rte & 0x700) | (rte & (1 << 15))).unwrap_or(0);
            self.remap_msi(mem, ioapic_source, addr, data)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 9.10: Linux's xAPIC-mode IRTE (dest << 8) decodes to its fields.
    #[test]
    fn irte_decode_xapic_fields() {
        let lo = 1 | (1 << 2) | (1 << 4) | (1 << 5) | (0x41 << 16) | (0x0300u64 << 32);
        let hi = 0x0010 | (1 << 18);
        let e = Irte::decode(lo, hi, false).unwrap();
        assert_eq!(
            (e.msi.vector, e.msi.dest, e.msi.logical, e.msi.level),
            (0x41, 3, true, true)
        );
        assert_eq!((e.msi.delivery_mode, e.svt, e.sid), (1, 1, 0x10));
        assert!(e.source_ok(Rid(0x10)));
        assert!(!e.source_ok(Rid(0x11)));
        // Bits 7:0 of DST are reserved in xAPIC mode, valid with EIME.
        assert_eq!(
            Irte::decode(1 | (0x0301u64 << 32), 0, false)
                .unwrap_err()
                .reason,
            IR_IRTE_RESERVED
        );
        assert_eq!(
            Irte::decode(1 | (0x0301u64 << 32), 0, true)
                .unwrap()
                .msi
                .dest,
            0x301
        );
    }

    // 9.10: posted format (IM=1) without CAP.PI is a reserved-field fault.
    #[test]
    fn irte_posted_format_rejected_0x24() {
        let e = Irte::decode(1 | (1 << 15), 0, true).unwrap_err();
        assert_eq!(e.reason, IR_IRTE_RESERVED);
        assert_eq!(
            Irte::decode(2, 0, true).unwrap_err(),
            IrteError {
                reason: IR_NOT_PRESENT,
                fpd: true
            }
        );
    }

    // 9.10: SQ masks function bits; SVT=2 checks the bus range.
    #[test]
    fn irte_source_validation_sq_and_bus_range() {
        let mut e = Irte::decode(1, 0x0108 | (1 << 18) | (3 << 16), true).unwrap();
        assert!(e.source_ok(Rid(0x010f)));
        assert!(!e.source_ok(Rid(0x0110)));
        e.svt = 2;
        e.sid = 0x0204;
        assert!(e.source_ok(Rid(0x0300)));
        assert!(!e.source_ok(Rid(0x0500)));
        assert!(!e.source_ok(Rid(0x0100)));
    }
}
