//! The [`Iommu`] trait both models implement, and [`DeviceAddressSpace`], the
//! per-device (or per device + PASID) DMA view that plugs a model into
//! rust-vmm's `vm_memory::IommuMemory`.

use std::fmt;
use std::sync::Arc;

use vm_memory::iommu::{Error as VmIommuError, Iotlb, IotlbIterator, IovaRange};
use vm_memory::{GuestAddress, Permissions};

use crate::mem::GuestRam;
use crate::types::{DmaRequest, Fault, Iova, PasidTag, Perm, RequestKind, SourceId, Translation};

/// An IOMMU model: translates one DMA request at a time.
///
/// Implementations are driven concurrently from many device threads; the
/// IOTLB-hit path must not serialise them.
pub trait Iommu: Send + Sync {
    /// Translate the page holding `req.addr`. On a fault the model records it
    /// the way the architecture says (fault recording register, event queue)
    /// before returning it.
    fn translate(&self, mem: &dyn GuestRam, req: &DmaRequest) -> Result<Translation, Fault>;
}

/// Owns the per-call IOTLB handed to vm-memory (see [`DeviceAddressSpace`]).
#[derive(Debug)]
pub struct OwnedIotlb(Iotlb);

impl std::ops::Deref for OwnedIotlb {
    type Target = Iotlb;
    fn deref(&self) -> &Iotlb {
        &self.0
    }
}

/// Upper bound on pages one vm-memory access may span (1 MiB of 4 KiB pages,
/// more than any virtqueue descriptor we serve at once). Larger accesses are
/// refused rather than allocating without bound.
pub const MAX_PAGES_PER_ACCESS: u64 = 256;

/// A device's view of DMA through an IOMMU model.
///
/// Implements [`vm_memory::Iommu`], so
/// `vm_memory::IommuMemory<GuestMemoryMmap, DeviceAddressSpace>` is the memory
/// object a device (a virtio-queue consumer, a test device) reads and writes
/// with: every access is translated by the model, with the device's source
/// ID and optional PASID prefix.
///
/// Design choice: vm-memory wants the translation as an [`Iotlb`]. Rather
/// than keep a long-lived mirror of the model's IOTLB here (which would need
/// its own invalidation protocol and would hide hits from the model's
/// statistics and cycle model), each access builds a small IOTLB holding only
/// the pages it touches, straight from [`Iommu::translate`]. So every DMA is
/// seen and costed by the model, and an invalidation that has completed in
/// the model is effective for the very next access: there is no second cache
/// to go stale.
pub struct DeviceAddressSpace {
    iommu: Arc<dyn Iommu>,
    ram: Arc<dyn GuestRam>,
    source: SourceId,
    pasid: Option<PasidTag>,
}

impl fmt::Debug for DeviceAddressSpace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceAddressSpace")
            .field("source", &self.source)
            .field("pasid", &self.pasid)
            .finish_non_exhaustive()
    }
}

impl DeviceAddressSpace {
    /// The view of device `source` (requests without PASID) through `iommu`,
    /// whose tables live in `ram`.
    pub fn new(iommu: Arc<dyn Iommu>, ram: Arc<dyn GuestRam>, source: SourceId) -> Self {
        DeviceAddressSpace {
            iommu,
            ram,
            source,
            pasid: None,
        }
    }

    /// The same device's view for requests carrying `tag`.
    #[must_use]
    pub fn with_pasid(&self, tag: Option<PasidTag>) -> Self {
        DeviceAddressSpace {
            iommu: Arc::clone(&self.iommu),
            ram: Arc::clone(&self.ram),
            source: self.source,
            pasid: tag,
        }
    }

    /// Requester ID of this view.
    pub fn source(&self) -> SourceId {
        self.source
    }

    /// PASID prefix of this view.
    pub fn pasid(&self) -> Option<PasidTag> {
        self.pasid
    }

    /// Translate one page's worth of a request (helper for devices that do
    /// their own DMA loop, e.g. with an ATC).
    pub fn translate_one(
        &self,
        addr: u64,
        len: u32,
        access: Perm,
        kind: RequestKind,
    ) -> Result<Translation, Fault> {
        let req = DmaRequest {
            source: self.source,
            pasid: self.pasid,
            addr: Iova(addr),
            len,
            access,
            kind,
        };
        self.iommu.translate(self.ram.as_ref(), &req)
    }
}

fn to_perm(access: Permissions) -> Perm {
    match access {
        Permissions::No => Perm::empty(),
        Permissions::Read => Perm::R,
        Permissions::Write => Perm::W,
        Permissions::ReadWrite => Perm::RW,
    }
}

fn to_permissions(perm: Perm) -> Permissions {
    match (perm.contains(Perm::R), perm.contains(Perm::W)) {
        (true, true) => Permissions::ReadWrite,
        (true, false) => Permissions::Read,
        (false, true) => Permissions::Write,
        (false, false) => Permissions::No,
    }
}

impl vm_memory::Iommu for DeviceAddressSpace {
    type IotlbGuard<'a> = OwnedIotlb;

    fn translate(
        &self,
        iova: GuestAddress,
        length: usize,
        access: Permissions,
    ) -> Result<IotlbIterator<OwnedIotlb>, VmIommuError> {
        let range = IovaRange { base: iova, length };
        let len = u64::try_from(length).map_err(|_| VmIommuError::CannotResolve {
            iova_range: range.clone(),
            reason: "length does not fit in 64 bits".into(),
        })?;
        let end = iova
            .0
            .checked_add(len)
            .ok_or_else(|| VmIommuError::CannotResolve {
                iova_range: range.clone(),
                reason: "range wraps the address space".into(),
            })?;
        let perm = to_perm(access);
        let mut tlb = Iotlb::new();
        let mut addr = iova.0;
        let mut pages = 0u64;
        while addr < end {
            pages = pages.saturating_add(1);
            if pages > MAX_PAGES_PER_ACCESS {
                return Err(VmIommuError::CannotResolve {
                    iova_range: range,
                    reason: format!("access spans more than {MAX_PAGES_PER_ACCESS} pages"),
                });
            }
            let chunk = u32::try_from(end.saturating_sub(addr).min(4096)).unwrap_or(4096);
            let t = self
                .translate_one(addr, chunk, perm, RequestKind::Untranslated)
                .map_err(|fault| VmIommuError::CannotResolve {
                    iova_range: range.clone(),
                    reason: format!("{} pasid {:?}: {fault}", self.source, self.pasid),
                })?;
            let page = t.page_size.bytes();
            let page_start = t.page_size.align_down(addr);
            let page_end = page_start.saturating_add(page).min(end);
            let offset = addr.saturating_sub(page_start);
            let out = t.page_base().saturating_add(offset);
            let span = page_end.saturating_sub(addr);
            let span_usize = usize::try_from(span).map_err(|_| VmIommuError::CannotResolve {
                iova_range: range.clone(),
                reason: "page larger than the host address space".into(),
            })?;
            tlb.set_mapping(
                GuestAddress(addr),
                GuestAddress(out),
                span_usize,
                to_permissions(t.perm),
            )?;
            if page_end <= addr {
                break;
            }
            addr = page_end;
        }
        Iotlb::lookup(OwnedIotlb(tlb), iova, length, access).map_err(|fails| {
            VmIommuError::CannotResolve {
                iova_range: range,
                reason: format!(
                    "access denied: {} unmapped and {} forbidden ranges",
                    fails.misses.len(),
                    fails.access_fails.len()
                ),
            }
        })
    }
}
