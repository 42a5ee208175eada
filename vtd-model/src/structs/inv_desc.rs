//! Invalidation descriptors (VT-d 6.5.2): 128-bit, or 256-bit when
//! IQA.DW=1 (the upper 128 bits are then reserved for every type Linux
//! issues). The type is bits 3:0 plus bits 11:9 as type bits 6:4.

use iommu_emulator::Rid;

/// Context-cache invalidation granularity (6.5.2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContextGran {
    /// Every context entry.
    Global,
    /// Entries of domain `did`.
    Domain(u16),
    /// Entries of device `sid` (with function mask `fm`) in domain `did`.
    Device {
        /// Domain.
        did: u16,
        /// Source ID.
        sid: u16,
        /// Function mask: 0 none, 1 ignore bit 2 of the function, 2 bits
        /// 2:1, 3 all function bits.
        fm: u8,
    },
}

/// IOTLB invalidation granularity (6.5.2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IotlbGran {
    /// Every entry.
    Global,
    /// Entries of domain `did`.
    Domain(u16),
    /// Pages of domain `did`.
    Page {
        /// Domain.
        did: u16,
        /// Address (4 KiB aligned).
        addr: u64,
        /// Address mask: 2^am pages.
        am: u8,
        /// Invalidation hint: only leaf entries changed.
        ih: bool,
    },
}

/// PASID-cache invalidation granularity (6.5.2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PasidCacheGran {
    /// All PASIDs of domain `did`.
    Domain(u16),
    /// One PASID of domain `did`.
    Pasid(u16, u32),
    /// Everything.
    Global,
}

/// A device-TLB invalidation (6.5.2.5 / 6.5.2.6): handed to the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DevTlbInvalidation {
    /// The endpoint to invalidate.
    pub sid: Rid,
    /// Physical function source ID (for VFs).
    pub pfsid: u16,
    /// PASID, for PASID-based device-TLB invalidations (type 8).
    pub pasid: Option<u32>,
    /// Global: all PASIDs (type 8, G bit).
    pub global: bool,
    /// Start of the range (4 KiB aligned).
    pub addr: u64,
    /// Size of the range in bytes (from the S bit encoding, PCIe ATS 2.3).
    pub size: u64,
}

/// A page group response (6.5.2.10 / 6.5.2.11): handed to the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageGroupResponse {
    /// Requester.
    pub rid: Rid,
    /// PASID, when the request carried one.
    pub pasid: Option<u32>,
    /// Response code (0 success, 1 invalid request, 0xf response failure).
    pub code: u8,
    /// Page request group index.
    pub prg_index: u16,
    /// Last page in group.
    pub lpig: bool,
    /// The raw descriptor (low, high).
    pub raw: [u64; 2],
}

impl DevTlbInvalidation {
    /// The model-independent form the endpoint receives (the PFSID of a VF is VT-d's own
    /// routing detail and is not part of PCIe's ATS Invalidate Request).
    pub fn to_endpoint(&self) -> iommu_emulator::endpoint::AtcInvalidation {
        iommu_emulator::endpoint::AtcInvalidation {
            source: iommu_emulator::SourceId::Pci(self.sid),
            pasid: self.pasid,
            global: self.global,
            addr: self.addr,
            size: self.size,
        }
    }
}

impl PageGroupResponse {
    /// The model-independent form the endpoint receives.
    pub fn to_endpoint(&self) -> iommu_emulator::endpoint::PageResponse {
        iommu_emulator::endpoint::PageResponse {
            source: iommu_emulator::SourceId::Pci(self.rid),
            pasid: self.pasid,
            group: self.prg_index,
            code: iommu_emulator::endpoint::PageResponseCode::from_pcie(self.code),
            automatic: false,
        }
    }
}

/// A decoded invalidation descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvDesc {
    /// Type 1: context-cache invalidation.
    Context(ContextGran),
    /// Type 2: IOTLB invalidation (also drains paging-structure caches).
    Iotlb(IotlbGran),
    /// Type 3 and 8: device-TLB invalidation.
    DevTlb(DevTlbInvalidation),
    /// Type 4: interrupt entry cache invalidation (global or index range).
    Iec {
        /// Global.
        global: bool,
        /// First index.
        index: u16,
        /// Index mask (2^im entries).
        im: u8,
    },
    /// Type 5: invalidation wait.
    Wait {
        /// Status write: (address, data).
        status: Option<(u64, u32)>,
        /// Interrupt flag.
        interrupt: bool,
        /// Fence.
        fence: bool,
        /// Page request drain.
        drain: bool,
    },
    /// Type 6: PASID-based IOTLB invalidation; `page` is None for
    /// "all non-global mappings of the PASID".
    PasidIotlb {
        /// Domain.
        did: u16,
        /// PASID.
        pasid: u32,
        /// (address, am, ih) for page-selective invalidation.
        page: Option<(u64, u8, bool)>,
    },
    /// Type 7: PASID-cache invalidation.
    PasidCache(PasidCacheGran),
    /// Type 9: page group response.
    PageGroupResponse(PageGroupResponse),
}

/// Why a descriptor was rejected; the value is the IQERCD.IQEI code this
/// model reports (VT-d 11.4.9.9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DescError {
    /// Unknown or unsupported descriptor type (IQEI 2).
    Type(u8),
    /// A field holds a reserved encoding (IQEI 3).
    Reserved,
}

impl DescError {
    /// The IQEI code.
    pub const fn iqei(self) -> u64 {
        match self {
            DescError::Type(_) => 2,
            DescError::Reserved => 3,
        }
    }
}

fn u16_at(v: u64, shift: u32) -> u16 {
    u16::try_from(v.checked_shr(shift).unwrap_or(0) & 0xffff).unwrap_or(0)
}

fn pasid_at(v: u64, shift: u32) -> u32 {
    u32::try_from(v.checked_shr(shift).unwrap_or(0) & 0xf_ffff).unwrap_or(0)
}

/// Size in bytes of a device-TLB invalidation of `addr` with the S bit
/// (PCIe ATS 2.3.2: the lowest clear address bit above bit 11 gives the size).
fn ats_size(addr: u64, s: bool) -> u64 {
    if !s {
        return 4096;
    }
    let ones = (addr >> 12).trailing_ones();
    1u64.checked_shl(ones.saturating_add(13))
        .unwrap_or(u64::MAX)
}

/// Start of the range a device-TLB invalidation covers (the address with
/// the size-encoding bits cleared).
fn ats_base(addr: u64, s: bool) -> u64 {
    addr & !ats_size(addr, s).wrapping_sub(1)
}

impl InvDesc {
    /// The descriptor type of `lo`.
    pub fn type_of(lo: u64) -> u8 {
        u8::try_from((lo & 0xf) | (((lo >> 9) & 0x7) << 4)).unwrap_or(0xff)
    }

    /// Decode a descriptor (low 128 bits; the upper half of a 256-bit
    /// descriptor is ignored).
    pub fn decode(lo: u64, hi: u64) -> Result<Self, DescError> {
        let ty = Self::type_of(lo);
        let g = (lo >> 4) & 3;
        match ty {
            1 => Ok(InvDesc::Context(match g {
                1 => ContextGran::Global,
                2 => ContextGran::Domain(u16_at(lo, 16)),
                3 => ContextGran::Device {
                    did: u16_at(lo, 16),
                    sid: u16_at(lo, 32),
                    fm: u8::try_from((lo >> 48) & 3).unwrap_or(0),
                },
                _ => return Err(DescError::Reserved),
            })),
            2 => Ok(InvDesc::Iotlb(match g {
                1 => IotlbGran::Global,
                2 => IotlbGran::Domain(u16_at(lo, 16)),
                3 => IotlbGran::Page {
                    did: u16_at(lo, 16),
                    addr: hi & !0xfff,
                    am: u8::try_from(hi & 0x3f).unwrap_or(0),
                    ih: hi & (1 << 6) != 0,
                },
                _ => return Err(DescError::Reserved),
            })),
            3 => Ok(InvDesc::DevTlb(DevTlbInvalidation {
                sid: Rid(u16_at(lo, 32)),
                pfsid: u16::try_from(((lo >> 12) & 0xf) | (((lo >> 52) & 0xfff) << 4)).unwrap_or(0),
                pasid: None,
                global: false,
                addr: ats_base(hi & !0xfff, hi & 1 != 0),
                size: ats_size(hi & !0xfff, hi & 1 != 0),
            })),
            4 => Ok(InvDesc::Iec {
                global: lo & (1 << 4) == 0,
                index: u16_at(lo, 32),
                im: u8::try_from((lo >> 27) & 0x1f).unwrap_or(0),
            }),
            5 => Ok(InvDesc::Wait {
                status: (lo & (1 << 5) != 0)
                    .then_some((hi & !0x3, u32::try_from(lo >> 32).unwrap_or(0))),
                interrupt: lo & (1 << 4) != 0,
                fence: lo & (1 << 6) != 0,
                drain: lo & (1 << 7) != 0,
            }),
            6 => {
                let did = u16_at(lo, 16);
                let pasid = pasid_at(lo, 32);
                let page = match g {
                    2 => None,
                    3 => Some((
                        hi & !0xfff,
                        u8::try_from(hi & 0x3f).unwrap_or(0),
                        hi & (1 << 6) != 0,
                    )),
                    _ => return Err(DescError::Reserved),
                };
                Ok(InvDesc::PasidIotlb { did, pasid, page })
            }
            7 => Ok(InvDesc::PasidCache(match g {
                0 => PasidCacheGran::Domain(u16_at(lo, 16)),
                1 => PasidCacheGran::Pasid(u16_at(lo, 16), pasid_at(lo, 32)),
                3 => PasidCacheGran::Global,
                _ => return Err(DescError::Reserved),
            })),
            8 => Ok(InvDesc::DevTlb(DevTlbInvalidation {
                sid: Rid(u16_at(lo, 16)),
                pfsid: u16::try_from(((lo >> 12) & 0xf) | (((lo >> 52) & 0xfff) << 4)).unwrap_or(0),
                pasid: Some(pasid_at(lo, 32)),
                global: hi & 1 != 0,
                addr: ats_base(hi & !0xfff, hi & (1 << 11) != 0),
                size: ats_size(hi & !0xfff, hi & (1 << 11) != 0),
            })),
            9 => Ok(InvDesc::PageGroupResponse(PageGroupResponse {
                rid: Rid(u16_at(lo, 16)),
                pasid: (lo & (1 << 4) != 0).then_some(pasid_at(lo, 32)),
                code: u8::try_from((lo >> 12) & 0xf).unwrap_or(0),
                prg_index: u16::try_from((hi >> 3) & 0x1ff).unwrap_or(0),
                lpig: hi & (1 << 2) != 0,
                raw: [lo, hi],
            })),
            other => Err(DescError::Type(other)),
        }
    }

    /// Short name for statistics.
    pub fn name(&self) -> &'static str {
        match self {
            InvDesc::Context(_) => "context-cache",
            InvDesc::Iotlb(_) => "iotlb",
            InvDesc::DevTlb(d) if d.pasid.is_some() => "pasid-device-tlb",
            InvDesc::DevTlb(_) => "device-tlb",
            InvDesc::Iec { .. } => "iec",
            InvDesc::Wait { .. } => "wait",
            InvDesc::PasidIotlb { .. } => "pasid-iotlb",
            InvDesc::PasidCache(_) => "pasid-cache",
            InvDesc::PageGroupResponse(_) => "page-group-response",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 6.5.2.1 / 6.5.2.3: Linux's encodings of context and IOTLB descriptors.
    #[test]
    fn inv_desc_context_and_iotlb_decode() {
        assert_eq!(
            InvDesc::decode(0x11, 0),
            Ok(InvDesc::Context(ContextGran::Global))
        );
        let lo = 1 | (3 << 4) | (5 << 16) | (0x0018 << 32) | (1 << 48);
        assert_eq!(
            InvDesc::decode(lo, 0),
            Ok(InvDesc::Context(ContextGran::Device {
                did: 5,
                sid: 0x18,
                fm: 1
            }))
        );
        let lo = 2 | (3 << 4) | (9 << 16) | (1 << 6) | (1 << 7);
        assert_eq!(
            InvDesc::decode(lo, 0x1234_5000 | 2 | (1 << 6)),
            Ok(InvDesc::Iotlb(IotlbGran::Page {
                did: 9,
                addr: 0x1234_5000,
                am: 2,
                ih: true
            }))
        );
        assert_eq!(InvDesc::decode(2, 0), Err(DescError::Reserved));
    }

    // 6.5.2.8: wait descriptor with status write, fence and interrupt.
    #[test]
    fn inv_desc_wait_decodes_status() {
        let lo = 5 | (1 << 4) | (1 << 5) | (1 << 6) | (1u64 << 32);
        assert_eq!(
            InvDesc::decode(lo, 0x8000_0004),
            Ok(InvDesc::Wait {
                status: Some((0x8000_0004, 1)),
                interrupt: true,
                fence: true,
                drain: false
            })
        );
    }

    // Type bits 11:9 extend the type; unknown types are rejected.
    #[test]
    fn inv_desc_unknown_type_rejected() {
        assert_eq!(InvDesc::decode(0xe, 0), Err(DescError::Type(0xe)));
        assert_eq!(InvDesc::decode(1 << 9, 0), Err(DescError::Type(0x10)));
        assert_eq!(InvDesc::decode(0, 0), Err(DescError::Type(0)));
    }

    // 6.5.2.6 / PCIe ATS: S bit size encoding.
    #[test]
    fn inv_desc_dev_tlb_size_from_s_bit() {
        let lo = 3 | (0x0100u64 << 32);
        let InvDesc::DevTlb(d) = InvDesc::decode(lo, 0x7000 | 1).unwrap() else {
            panic!()
        };
        assert_eq!((d.sid, d.addr, d.size), (Rid(0x100), 0, 0x8000 * 2));
        let InvDesc::DevTlb(d) = InvDesc::decode(lo, 0x2000).unwrap() else {
            panic!()
        };
        assert_eq!(d.size, 4096);
    }
}
