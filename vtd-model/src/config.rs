//! Per-device configuration: root and context entries (legacy and
//! scalable), PASID directory and table entries, decoded and validated once
//! and kept in the context cache and the PASID cache (VT-d 6.2.1, 6.2.2).
//!
//! Both caches follow the core cache's ticket protocol: a ticket is taken
//! before the tables are read, so an entry decoded from tables that an
//! invalidation has since covered is never inserted.

use iommu_emulator::mem::read_words;
use iommu_emulator::{Cache, CacheTag, Gpa, GuestRam, Rid};

use crate::fault::FaultReason;
use crate::structs::context::{ContextEntry, EntryFault, ScalableContextEntry, UnitCaps};
use crate::structs::pasid::{PasidDirEntry, PasidEntry};
use crate::structs::root::{RootEntry, ScalableRootEntry};

/// A device's decoded context entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DevCtx {
    /// Legacy mode.
    Legacy(ContextEntry),
    /// Scalable mode.
    Scalable(ScalableContextEntry),
}

impl DevCtx {
    /// Fault processing disabled by the context entry.
    pub fn fpd(&self) -> bool {
        match self {
            DevCtx::Legacy(c) => c.fpd,
            DevCtx::Scalable(c) => c.fpd,
        }
    }
}

/// Context-cache tag: the requester and the table mode it was read in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CtxTag {
    /// Requester ID.
    pub rid: u16,
    /// Read from scalable-mode tables.
    pub scalable: bool,
}

impl CacheTag for CtxTag {
    fn set_hash(&self) -> u64 {
        u64::from(self.rid)
    }
}

/// PASID-cache tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PasidCacheTag {
    /// Requester ID (PASID tables are per device).
    pub rid: u16,
    /// PASID.
    pub pasid: u32,
}

impl CacheTag for PasidCacheTag {
    fn set_hash(&self) -> u64 {
        (u64::from(self.rid) << 20) ^ u64::from(self.pasid)
    }
}

/// A PASID-cache entry: the decoded PASID entry plus the combined FPD of
/// the directory and table entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PasidCtx {
    /// The entry.
    pub entry: PasidEntry,
    /// FPD of the directory entry or of the PASID entry.
    pub fpd: bool,
}

/// A configuration fault: the reason, whether it may be recorded (FPD),
/// and how many table reads were made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CfgFault {
    /// Reason.
    pub reason: FaultReason,
    /// Fault processing disabled.
    pub fpd: bool,
    /// Guest-memory reads made before the fault.
    pub reads: u8,
}

impl CfgFault {
    fn new(reason: FaultReason, fpd: bool, reads: u8) -> Self {
        CfgFault { reason, fpd, reads }
    }
    fn from_entry(e: EntryFault, reads: u8) -> Self {
        CfgFault::new(e.reason, e.fpd, reads)
    }
}

/// The outcome of a lookup: the value, whether a cache hit served it, and
/// the table reads made.
pub type Looked<T> = (T, bool, u8);

/// Look up (or read and decode) the context entry of `rid` in the root
/// table at `rta` (VT-d 3.4.2, 3.4.3).
#[inline(always)]
pub fn lookup_context(
    cache: &Cache<CtxTag, DevCtx>,
    mem: &dyn GuestRam,
    rta: u64,
    scalable: bool,
    rid: Rid,
    caps: &UnitCaps,
) -> Result<Looked<DevCtx>, CfgFault> {
    let tag = CtxTag {
        rid: rid.0,
        scalable,
    };
    if let Some(c) = cache.lookup(&tag) {
        return Ok((c, true, 0));
    }
    let ticket = cache.ticket();
    let root_addr = rta.checked_add(u64::from(rid.bus()) * 16);
    let (access_root, access_ctx) = if scalable {
        (FaultReason::SM_ROOT_ACCESS, FaultReason::SM_CONTEXT_ACCESS)
    } else {
        (FaultReason::ROOT_ACCESS, FaultReason::CONTEXT_ACCESS)
    };
    let root_w: [u64; 2] = root_addr
        .and_then(|a| read_words::<2>(mem, Gpa(a)).ok())
        .ok_or(CfgFault::new(access_root, false, 1))?;
    let ctx = if scalable {
        let r = ScalableRootEntry::decode(root_w, rid.devfn(), caps.haw)
            .map_err(|reason| CfgFault::new(reason, false, 1))?;
        let a = r
            .ctp
            .checked_add(u64::from(rid.devfn() & 0x7f) * 32)
            .ok_or(CfgFault::new(access_ctx, false, 2))?;
        let w = read_words::<4>(mem, Gpa(a)).map_err(|_| CfgFault::new(access_ctx, false, 2))?;
        DevCtx::Scalable(
            ScalableContextEntry::decode(w, caps).map_err(|e| CfgFault::from_entry(e, 2))?,
        )
    } else {
        let r = RootEntry::decode(root_w, caps.haw)
            .map_err(|reason| CfgFault::new(reason, false, 1))?;
        let a = r
            .ctp
            .checked_add(u64::from(rid.devfn()) * 16)
            .ok_or(CfgFault::new(access_ctx, false, 2))?;
        let w = read_words::<2>(mem, Gpa(a)).map_err(|_| CfgFault::new(access_ctx, false, 2))?;
        DevCtx::Legacy(ContextEntry::decode(w, caps).map_err(|e| CfgFault::from_entry(e, 2))?)
    };
    cache.insert(tag, ctx, ticket);
    Ok((ctx, false, 2))
}

/// Look up (or read and decode) the PASID entry of `pasid` for a device
/// with scalable context `ctx` (VT-d 3.4.3, 9.5, 9.6).
#[inline(always)]
pub fn lookup_pasid(
    cache: &Cache<PasidCacheTag, PasidCtx>,
    mem: &dyn GuestRam,
    ctx: &ScalableContextEntry,
    rid: Rid,
    pasid: u32,
    caps: &UnitCaps,
) -> Result<Looked<PasidCtx>, CfgFault> {
    let tag = PasidCacheTag { rid: rid.0, pasid };
    if let Some(p) = cache.lookup(&tag) {
        return Ok((p, true, 0));
    }
    let ticket = cache.ticket();
    let dir_index = u64::from(pasid >> 6);
    if dir_index >= ctx.dir_entries() {
        return Err(CfgFault::new(FaultReason::SM_PASID_TOO_LARGE, ctx.fpd, 0));
    }
    let dir_addr = ctx
        .pasid_dir
        .checked_add(dir_index * 8)
        .ok_or(CfgFault::new(FaultReason::SM_PASID_DIR_ACCESS, ctx.fpd, 1))?;
    let dw = mem
        .read_u64(Gpa(dir_addr))
        .map_err(|_| CfgFault::new(FaultReason::SM_PASID_DIR_ACCESS, ctx.fpd, 1))?;
    let dir = PasidDirEntry::decode(dw, caps.haw)
        .map_err(|e| CfgFault::new(e.reason, e.fpd || ctx.fpd, 1))?;
    let fpd = ctx.fpd || dir.fpd;
    let pe_addr = dir
        .table
        .checked_add(u64::from(pasid & 0x3f) * 64)
        .ok_or(CfgFault::new(FaultReason::SM_PASID_ACCESS, fpd, 2))?;
    let w = read_words::<8>(mem, Gpa(pe_addr))
        .map_err(|_| CfgFault::new(FaultReason::SM_PASID_ACCESS, fpd, 2))?;
    let entry =
        PasidEntry::decode(w, caps).map_err(|e| CfgFault::new(e.reason, e.fpd || fpd, 2))?;
    let p = PasidCtx {
        entry,
        fpd: fpd || entry.fpd,
    };
    cache.insert(tag, p, ticket);
    Ok((p, false, 2))
}
