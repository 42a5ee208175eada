//! Addresses, identifiers, DMA requests, translation results and faults.
//!
//! These are the nouns every model shares. Architectural fault codes stay in
//! the models: a [`Fault`] carries a model-independent [`FaultKind`] plus the
//! model's own spec reason code (a VT-d fault reason, an SMMU event type).

use std::fmt;

use bitflags::bitflags;

macro_rules! newtype_u64 {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub u64);

        impl fmt::LowerHex for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::LowerHex::fmt(&self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#x}", self.0)
            }
        }
    };
}

newtype_u64!(
    /// An I/O virtual address: what a device puts on the bus.
    Iova
);
newtype_u64!(
    /// A guest-physical address: the output of translation, and where the
    /// models read their tables and queues.
    Gpa
);

macro_rules! newtype_id {
    ($(#[$m:meta])* $name:ident, $ty:ty) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub $ty);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

newtype_id!(
    /// A VT-d domain identifier (context/PASID entry DID field).
    DomainId,
    u16
);
newtype_id!(
    /// An SMMU stage-1 address-space identifier (CD.ASID).
    Asid,
    u16
);
newtype_id!(
    /// An SMMU stage-2 virtual-machine identifier (STE.S2VMID).
    Vmid,
    u16
);

/// A Process Address Space ID (VT-d) or SubstreamID (SMMU): at most 20 bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pasid(u32);

impl Pasid {
    /// Largest architectural PASID/SSID width in bits (PCIe PASID TLP prefix).
    pub const MAX_BITS: u32 = 20;
    /// The largest valid value.
    pub const MAX: u32 = (1 << Self::MAX_BITS) - 1;

    /// A PASID, or `None` when `value` does not fit in 20 bits.
    pub const fn new(value: u32) -> Option<Self> {
        if value <= Self::MAX {
            Some(Pasid(value))
        } else {
            None
        }
    }

    /// The raw value.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Pasid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// A PCI requester ID: bus, device, function packed as in the TLP header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rid(pub u16);

impl Rid {
    /// Build from bus, device (0-31) and function (0-7); excess bits are masked.
    pub const fn new(bus: u8, dev: u8, func: u8) -> Self {
        Rid(((bus as u16) << 8) | (((dev & 0x1f) as u16) << 3) | ((func & 0x7) as u16))
    }
    /// Bus number.
    pub const fn bus(self) -> u8 {
        (self.0 >> 8) as u8
    }
    /// Device and function together (the index into a VT-d context table).
    pub const fn devfn(self) -> u8 {
        (self.0 & 0xff) as u8
    }
    /// Device number.
    pub const fn dev(self) -> u8 {
        ((self.0 >> 3) & 0x1f) as u8
    }
    /// Function number.
    pub const fn func(self) -> u8 {
        (self.0 & 0x7) as u8
    }
}

impl fmt::Display for Rid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus(), self.dev(), self.func())
    }
}

/// Who issued a DMA request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SourceId {
    /// A PCI(e) requester ID (VT-d source-id, SMMU StreamID derived from it).
    Pci(Rid),
    /// An SMMU StreamID for non-PCI masters.
    Stream(u32),
}

impl SourceId {
    /// The value used as an SMMU StreamID: the RID for PCI, else the raw ID.
    pub const fn stream_id(self) -> u32 {
        match self {
            SourceId::Pci(rid) => rid.0 as u32,
            SourceId::Stream(sid) => sid,
        }
    }
}

impl fmt::Display for SourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceId::Pci(rid) => write!(f, "{rid}"),
            SourceId::Stream(sid) => write!(f, "sid {sid:#x}"),
        }
    }
}

/// The PASID TLP prefix of a request (VT-d spec 3.4.3; PCIe PASID prefix):
/// the PASID plus the privileged-mode and execute-requested bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PasidTag {
    /// PASID / SubstreamID.
    pub pasid: Pasid,
    /// Privileged (supervisor) mode requested.
    pub privileged: bool,
    /// Execute requested.
    pub exec: bool,
}

bitflags! {
    /// Access rights: what a request asks for, or what a mapping allows.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct Perm: u8 {
        /// Read.
        const R = 1 << 0;
        /// Write.
        const W = 1 << 1;
        /// Instruction fetch / execute.
        const X = 1 << 2;
        /// Read and write.
        const RW = Self::R.bits() | Self::W.bits();
    }
}

impl Perm {
    /// True when every right in `request` is granted by `self`.
    pub const fn allows(self, request: Perm) -> bool {
        self.contains(request)
    }
}

/// What kind of transaction a request is (PCIe Address Type field).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// An untranslated memory request (AT=00b): the IOMMU translates it.
    Untranslated,
    /// An ATS translation request (AT=01b): the device asks for a translation
    /// to cache in its ATC; no data moves.
    AtsTranslation,
    /// A translated request (AT=10b): the address came from the device's ATC.
    Translated,
}

/// One DMA request as it arrives at the IOMMU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DmaRequest {
    /// Requester.
    pub source: SourceId,
    /// PASID prefix, if any.
    pub pasid: Option<PasidTag>,
    /// Input address (IOVA, or a translated address for `Translated`).
    pub addr: Iova,
    /// Length in bytes (at least 1). Models translate the page holding `addr`;
    /// callers split requests that cross a page.
    pub len: u32,
    /// Rights the request needs.
    pub access: Perm,
    /// Transaction type.
    pub kind: RequestKind,
}

impl DmaRequest {
    /// An untranslated request without PASID.
    pub const fn new(source: SourceId, addr: u64, len: u32, access: Perm) -> Self {
        DmaRequest {
            source,
            pasid: None,
            addr: Iova(addr),
            len,
            access,
            kind: RequestKind::Untranslated,
        }
    }

    /// The same request carrying a PASID prefix.
    pub const fn with_pasid(mut self, tag: PasidTag) -> Self {
        self.pasid = Some(tag);
        self
    }

    /// The same request with another transaction type.
    pub const fn with_kind(mut self, kind: RequestKind) -> Self {
        self.kind = kind;
        self
    }
}

/// A page (or block) size, held as its log2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PageSize(u8);

impl PageSize {
    /// 4 KiB.
    pub const SIZE_4K: PageSize = PageSize(12);
    /// 16 KiB (AArch64 16K granule).
    pub const SIZE_16K: PageSize = PageSize(14);
    /// 64 KiB (AArch64 64K granule).
    pub const SIZE_64K: PageSize = PageSize(16);
    /// 2 MiB.
    pub const SIZE_2M: PageSize = PageSize(21);
    /// 32 MiB (16K granule level 2 block).
    pub const SIZE_32M: PageSize = PageSize(25);
    /// 512 MiB (64K granule level 2 block).
    pub const SIZE_512M: PageSize = PageSize(29);
    /// 1 GiB.
    pub const SIZE_1G: PageSize = PageSize(30);
    /// 4 TiB (64K granule level 1 block with 52-bit OA).
    pub const SIZE_4T: PageSize = PageSize(42);

    /// A page size of `1 << shift` bytes; `None` outside 12..=52.
    pub const fn from_shift(shift: u8) -> Option<Self> {
        if shift >= 12 && shift <= 52 {
            Some(PageSize(shift))
        } else {
            None
        }
    }

    /// log2 of the size.
    pub const fn shift(self) -> u8 {
        self.0
    }

    /// The size in bytes.
    pub const fn bytes(self) -> u64 {
        1u64 << self.0
    }

    /// Mask of the offset bits inside a page.
    pub const fn offset_mask(self) -> u64 {
        self.bytes().wrapping_sub(1)
    }

    /// `addr` rounded down to this page size.
    pub const fn align_down(self, addr: u64) -> u64 {
        addr & !self.offset_mask()
    }
}

impl fmt::Display for PageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.bytes();
        if b >= 1 << 40 {
            write!(f, "{}T", b >> 40)
        } else if b >= 1 << 30 {
            write!(f, "{}G", b >> 30)
        } else if b >= 1 << 20 {
            write!(f, "{}M", b >> 20)
        } else {
            write!(f, "{}K", b >> 10)
        }
    }
}

/// A number of modelled hardware cycles.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cycles(pub u64);

impl Cycles {
    /// Saturating sum.
    #[must_use]
    pub const fn plus(self, other: u64) -> Cycles {
        Cycles(self.0.saturating_add(other))
    }
}

bitflags! {
    /// Which structures a translation touched: recorded in traces and used by
    /// replay and statistics.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct CachePath: u8 {
        /// The IOTLB (SMMU TLB) held the translation.
        const IOTLB_HIT = 1 << 0;
        /// The context cache (SMMU STE cache) held the device's configuration.
        const CONTEXT_HIT = 1 << 1;
        /// The PASID cache (SMMU CD cache) held the PASID's configuration.
        const PASID_HIT = 1 << 2;
        /// A paging-structure (walk) cache shortened the walk.
        const PWC_HIT = 1 << 3;
        /// A page walk read guest memory.
        const WALK = 1 << 4;
        /// Translation bypassed (pass-through, translation disabled, bypass STE).
        const BYPASS = 1 << 5;
        /// The request faulted.
        const FAULT = 1 << 6;
    }
}

/// The result of a successful translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Translation {
    /// Output (guest-physical) address for the request's `addr`.
    pub output: Gpa,
    /// Size of the page (or block) the translation came from; the output is
    /// valid for every address in the same page.
    pub page_size: PageSize,
    /// Rights the mapping grants (may exceed what was asked).
    pub perm: Perm,
    /// For ATS: the mapping is privileged-only (PCIe ATS completion `Priv`).
    pub privileged: bool,
    /// Modelled cost of this translation.
    pub cycles: Cycles,
    /// Structures touched on the way.
    pub path: CachePath,
    /// Guest-memory reads the walk made (0 on an IOTLB hit).
    pub walk_reads: u8,
}

impl Translation {
    /// Output address of the start of the page holding the request.
    pub const fn page_base(&self) -> u64 {
        self.page_size.align_down(self.output.0)
    }
}

/// Model-independent class of a translation fault. Each model maps its
/// architectural reason codes (VT-d fault reasons, SMMU event types) onto one
/// of these for statistics and logs; the exact code travels in
/// [`Fault::reason`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// The translation structures had no valid entry (not-present).
    NotPresent,
    /// A valid entry denied the requested access.
    Permission,
    /// The address was beyond the input or output address size.
    AddressSize,
    /// The access flag was clear and hardware update is not enabled (SMMU).
    AccessFlag,
    /// Reserved bits were set or a field held an invalid encoding.
    ReservedBits,
    /// The device's configuration (context/PASID entry, STE/CD) was invalid.
    BadConfig,
    /// Reading or updating a table in guest memory failed.
    WalkAbort,
    /// The configuration blocks the request (abort STE, PASID not enabled, ...).
    Blocked,
    /// The request type is not supported in this configuration.
    Unsupported,
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            FaultKind::NotPresent => "not-present",
            FaultKind::Permission => "permission",
            FaultKind::AddressSize => "address-size",
            FaultKind::AccessFlag => "access-flag",
            FaultKind::ReservedBits => "reserved-bits",
            FaultKind::BadConfig => "bad-config",
            FaultKind::WalkAbort => "walk-abort",
            FaultKind::Blocked => "blocked",
            FaultKind::Unsupported => "unsupported",
        };
        f.write_str(s)
    }
}

/// A translation fault as returned to the requester.
///
/// The model has already recorded it (fault recording register, event queue)
/// or counted why it could not; `recorded` says which.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fault {
    /// Class of the fault.
    pub kind: FaultKind,
    /// The model's architectural code: VT-d fault reason (Appendix A of the
    /// VT-d spec) or SMMU event type (IHI 0070 7.3).
    pub reason: u16,
    /// The faulting input address.
    pub addr: Iova,
    /// Walk level at which the fault arose, when it came from a walk.
    pub level: Option<u8>,
    /// True when the guest can see a record of it.
    pub recorded: bool,
    /// Modelled cost spent before the fault was found.
    pub cycles: Cycles,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} fault (reason {:#x}) at {}",
            self.kind, self.reason, self.addr
        )?;
        if let Some(level) = self.level {
            write!(f, " level {level}")?;
        }
        Ok(())
    }
}
