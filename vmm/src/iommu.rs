//! Wiring of the IOMMU models into the VMM: their register window on the
//! MMIO bus, their ACPI table, the per-device DMA address spaces, statistics.
//!
//! The VMM sees a model only through [`IommuUnit`], so the VT-d model (and
//! later the SMMU model on arm64 hosts) plug in the same way.

use std::sync::Arc;

use iommu_emulator::trace::{TraceEvent, TraceSink, TranslateEvent};
use iommu_emulator::{
    CachePath, DeviceAddressSpace, DmaRequest, Fault, GuestRam, Iommu, PageSize, Perm, SourceId,
    Translation,
};
use vm_memory::{GuestMemoryMmap, IommuMemory};

use crate::arch::x86_64::vtd;
use crate::cli::IommuSpec;
use crate::devices::{BusDevice, le_value, put_le_value};
use crate::error::{Error, Result};
use crate::virtio::DmaMemory;

/// An IOMMU as the VMM drives it.
pub trait IommuUnit: Send + Sync {
    /// Short name for messages (`intel-iommu`).
    fn name(&self) -> &'static str;
    /// Guest-physical base of the register window.
    fn mmio_base(&self) -> u64;
    /// Size of the register window.
    fn mmio_size(&self) -> u64;
    /// Register read of `size` bytes at `offset`.
    fn mmio_read(&self, mem: &dyn GuestRam, offset: u64, size: u8) -> u64;
    /// Register write.
    fn mmio_write(&self, mem: &dyn GuestRam, offset: u64, size: u8, value: u64);
    /// The translation side.
    fn translator(&self) -> Arc<dyn Iommu>;
    /// The ACPI table describing the unit (DMAR).
    fn acpi_table(&self, ioapic_id: u8) -> Vec<u8>;
    /// What the unit did, for `--stats`.
    fn stats(&self) -> String;
    /// Where ATC invalidations and page group responses go (the PASID test device's ATC,
    /// through the endpoint seam of `iommu_emulator::endpoint`); units without them ignore it.
    fn set_endpoint_port(&self, _n: Arc<dyn iommu_emulator::endpoint::EndpointPort>) {}
    /// The unit's interrupt remapping (None: the unit has none, or it is
    /// switched off in its properties).
    fn interrupt_remapper(&self) -> Option<Arc<dyn crate::kvm::irq::InterruptRemapper>> {
        None
    }
    /// Tell `router` when interrupt remapping entries change.
    fn set_interrupt_router(&self, _router: &Arc<crate::kvm::irq::IrqRouter>) {}
    /// Where endpoints send page requests (None: the unit has no page request path).
    fn page_request_sink(&self) -> Option<Arc<dyn iommu_emulator::endpoint::PageRequestSink>> {
        None
    }
}

/// Identity translation, for `--iommu none` (the `IommuMemory` also has its
/// IOMMU switched off, so this is never asked; it keeps one memory type).
pub struct NoIommu;

impl Iommu for NoIommu {
    fn translate(
        &self,
        _mem: &dyn GuestRam,
        req: &DmaRequest,
    ) -> std::result::Result<Translation, Fault> {
        Ok(Translation {
            output: iommu_emulator::Gpa(PageSize::SIZE_4K.align_down(req.addr.0)),
            page_size: PageSize::SIZE_4K,
            perm: Perm::RW,
            privileged: false,
            cycles: iommu_emulator::Cycles(0),
            path: CachePath::empty(),
            walk_reads: 0,
        })
    }
}

/// Records every translation of the wrapped IOMMU into a trace (the core
/// crate's binary format, `iommu_emulator::trace`), for `--trace FILE`.
///
/// Invalidations are not in the trace: the VMM sees only translations; a
/// model-side hook will add them.
pub struct TracingIommu {
    inner: Arc<dyn Iommu>,
    sink: Arc<dyn TraceSink>,
}

impl TracingIommu {
    /// Trace `inner` into `sink`.
    pub fn new(inner: Arc<dyn Iommu>, sink: Arc<dyn TraceSink>) -> Self {
        TracingIommu { inner, sink }
    }
}

impl Iommu for TracingIommu {
    fn translate(
        &self,
        mem: &dyn GuestRam,
        req: &DmaRequest,
    ) -> std::result::Result<Translation, Fault> {
        let r = self.inner.translate(mem, req);
        let (path, walk_reads, page_shift, cycles, output, fault_reason) = match &r {
            Ok(t) => (
                t.path,
                t.walk_reads,
                t.page_size.shift(),
                t.cycles.0,
                t.output.0,
                0,
            ),
            Err(f) => (CachePath::FAULT, 0, 0, f.cycles.0, 0, f.reason),
        };
        self.sink.record(&TraceEvent::Translate(TranslateEvent {
            source: req.source,
            pasid: req.pasid.map(|p| p.pasid),
            addr: req.addr.0,
            access: req.access,
            kind: req.kind,
            path,
            walk_reads,
            page_shift,
            cycles: u32::try_from(cycles).unwrap_or(u32::MAX),
            output,
            tag: 0,
            fault_reason,
        }));
        r
    }
}

/// The DMA memory of device `source`: through `unit` when there is one
/// (traced into `trace` when given).
pub fn dma_memory(
    mem: &GuestMemoryMmap,
    unit: Option<&Arc<dyn IommuUnit>>,
    source: SourceId,
    trace: Option<&Arc<dyn TraceSink>>,
) -> DmaMemory {
    let ram: Arc<dyn GuestRam> = Arc::new(mem.clone());
    match unit {
        Some(u) => {
            let translator = match trace {
                Some(sink) => Arc::new(TracingIommu::new(u.translator(), sink.clone())),
                None => u.translator(),
            };
            IommuMemory::new(
                mem.clone(),
                DeviceAddressSpace::new(translator, ram, source),
                true,
                (),
            )
        }
        None => IommuMemory::new(
            mem.clone(),
            DeviceAddressSpace::new(Arc::new(NoIommu), ram, source),
            false,
            (),
        ),
    }
}

/// Build the unit `spec` asks for. `msi` carries the unit's own interrupts
/// (fault events, invalidation completion).
pub fn create(
    spec: &IommuSpec,
    msi: Arc<dyn iommu_emulator::MsiSink>,
) -> Result<Option<Arc<dyn IommuUnit>>> {
    match spec {
        IommuSpec::None => Ok(None),
        IommuSpec::IntelIommu { props } => vtd::create(props, msi).map(Some),
    }
}

/// Validate `--iommu` properties before anything else starts (plain error
/// listing the valid properties).
pub fn validate(spec: &IommuSpec) -> Result<()> {
    match spec {
        IommuSpec::None => Ok(()),
        IommuSpec::IntelIommu { props } => vtd::validate(props),
    }
}

/// The register window on the MMIO bus.
pub struct IommuMmio {
    unit: Arc<dyn IommuUnit>,
    mem: GuestMemoryMmap,
}

impl IommuMmio {
    /// `unit`'s registers, with guest RAM for its table and queue accesses.
    pub fn new(unit: Arc<dyn IommuUnit>, mem: GuestMemoryMmap) -> Self {
        IommuMmio { unit, mem }
    }
}

impl BusDevice for IommuMmio {
    // Accesses are 1 to 8 bytes (the bus splits nothing wider); a length that does not fit
    // the models' u8 size reads as zero and its write is ignored.
    fn read(&self, offset: u64, data: &mut [u8]) {
        let v =
            u8::try_from(data.len()).map_or(0, |size| self.unit.mmio_read(&self.mem, offset, size));
        put_le_value(data, v);
    }
    fn write(&self, offset: u64, data: &[u8]) {
        if let Ok(size) = u8::try_from(data.len()) {
            self.unit
                .mmio_write(&self.mem, offset, size, le_value(data));
        }
    }
}

/// Silence unused warnings of the error type in builds without models.
#[allow(dead_code)]
fn _uses(_: Error) {}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestAddress};

    #[cfg(feature = "vtd")]
    #[test]
    fn intel_iommu_defaults_to_interrupt_remapping_with_eim() {
        // QEMU's habit with a split irqchip: intremap=auto -> on, eim=auto
        // -> on; ECAP.IR (bit 3) and ECAP.EIM (bit 4), VT-d 11.4.3.
        let c = vtd::parse_for_test("x-scalable-mode=on").unwrap();
        assert!(c.intremap && c.eim);
        assert_eq!(c.ecap() & 0x18, 0x18);
        let off = vtd::parse_for_test("intremap=off").unwrap();
        assert!(!off.intremap && !off.eim, "eim follows intremap");
        assert_eq!(off.ecap() & 0x18, 0);
        let xapic = vtd::parse_for_test("eim=off").unwrap();
        assert!(xapic.intremap && !xapic.eim);
        assert!(
            vtd::parse_for_test("intremap=off,eim=on").is_err(),
            "explicit contradiction still refused"
        );
    }

    #[cfg(feature = "vtd")]
    #[test]
    fn vtd_router_remaps_after_ire_and_blocks_non_present_irte() {
        // VT-d 5.1: with IRES clear a remappable-format message passes
        // through; enabling IRE (a global IEC change reported to the
        // router) makes the next interrupt go through IRTE 1; IRTE 2 is not
        // present, so its interrupt is blocked and faulted (0x22).
        use crate::kvm::irq::{GsiBackend, IrqRouter, IrqSource};
        use iommu_emulator::testing::{FakeRam, RecordingMsi};
        use iommu_emulator::{Gpa, MsiMessage, Rid};
        use vmm_sys_util::eventfd::EventFd;
        use vtd_model::regs::{GCMD, GCMD_IRE, GCMD_SIRTP, IRTA};

        #[derive(Default)]
        struct Routes(std::sync::Mutex<Vec<Vec<(u32, MsiMessage)>>>);
        impl GsiBackend for Routes {
            fn set_routes(&self, r: &[(u32, MsiMessage)]) -> std::io::Result<()> {
                self.0.lock().unwrap().push(r.to_vec());
                Ok(())
            }
            fn attach_irqfd(&self, _gsi: u32) -> std::io::Result<EventFd> {
                EventFd::new(libc::EFD_NONBLOCK)
            }
            fn raise_line(&self, _gsi: u32) -> std::io::Result<()> {
                Ok(())
            }
            fn signal_msi(&self, _m: MsiMessage) -> std::io::Result<()> {
                Ok(())
            }
        }

        let ram = Arc::new(FakeRam::new(1 << 20));
        let unit = vtd::create_for_test("", Arc::new(RecordingMsi::new()));
        let routes = Arc::new(Routes::default());
        let router = Arc::new(IrqRouter::new(
            routes.clone(),
            unit.interrupt_remapper(),
            ram.clone(),
        ));
        unit.set_interrupt_router(&router);
        let dev = Rid::new(0, 1, 0);
        // IRTE 1: present, vector 0x61, x2APIC destination 1, SVT=1 SID=dev.
        let irt = 0x1_0000u64;
        ram.write_u64(Gpa(irt + 16), 1 | (0x61 << 16) | (1 << 32))
            .unwrap();
        ram.write_u64(Gpa(irt + 24), u64::from(dev.0) | (1 << 18))
            .unwrap();
        let msg = |index: u64| MsiMessage {
            addr: 0xfee0_0000 | (index << 5) | (1 << 4),
            data: 0,
        };
        let sink = router.device_sink(dev);
        sink.raise_msi(msg(1));
        let mem: &dyn GuestRam = ram.as_ref();
        unit.mmio_write(mem, IRTA, 8, irt | (1 << 11) | 7);
        unit.mmio_write(mem, GCMD, 4, GCMD_SIRTP);
        unit.mmio_write(mem, GCMD, 4, GCMD_IRE);
        sink.raise_msi(msg(1));
        sink.raise_msi(msg(2));
        let last = routes.0.lock().unwrap().last().cloned().unwrap();
        assert_eq!(last.len(), 1);
        assert_eq!(last[0].1.data & 0xff, 0x61, "IRTE 1's vector");
        assert_eq!(last[0].1.addr & 0xff000, 0x1000, "IRTE 1's destination");
        let c = router.stats().sources[&IrqSource::Pci(dev.0)];
        assert_eq!((c.compat, c.remapped, c.blocked), (1, 1, 1));
        assert!(unit.stats().contains("1 remapped"), "{}", unit.stats());
        assert!(unit.stats().contains("0x22=1"), "{}", unit.stats());
    }

    #[cfg(feature = "vtd")]
    #[test]
    fn guest_default_iommu_has_interrupt_remapping_with_eim() {
        // `--guest NAME` boots with GUEST_DEFAULT_IOMMU: scalable mode plus
        // the VMM's intremap/eim defaults.
        let spec = crate::cli::parse_iommu(crate::cli::GUEST_DEFAULT_IOMMU).unwrap();
        let IommuSpec::IntelIommu { props } = spec else {
            panic!("{spec:?}")
        };
        let c = vtd::parse_for_test(&props).unwrap();
        assert!(c.scalable_mode && c.intremap && c.eim);
    }

    #[cfg(feature = "vtd")]
    #[test]
    fn intel_iommu_default_dmar_has_intr_remap_and_ioapic_scope() {
        // VT-d 8.1: flags bit 0 INTR_REMAP, bit 1 X2APIC_OPT_OUT (clear);
        // 8.3.1: IOAPIC scope (type 3) with the MADT's IOAPIC ID at ff:00.0.
        let c = vtd::parse_for_test("").unwrap();
        let t = vtd_model::acpi::dmar_table(&c, layout_vtd(), crate::arch::x86_64::acpi::IOAPIC_ID);
        assert_eq!(t[37] & 0b11, 0b01);
        let scope = t
            .windows(8)
            .find(|w| w[0] == 3 && w[1] == 8)
            .expect("IOAPIC device scope");
        assert_eq!(scope[4], crate::arch::x86_64::acpi::IOAPIC_ID);
        assert_eq!(
            (scope[5], scope[6], scope[7]),
            ((crate::kvm::irq::IOAPIC_SOURCE.0 >> 8) as u8, 0, 0)
        );
    }

    #[cfg(feature = "vtd")]
    fn layout_vtd() -> u64 {
        crate::arch::x86_64::layout::VTD_START
    }

    #[test]
    fn dma_memory_without_iommu_reaches_guest_physical() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let dma = dma_memory(
            &mem,
            None,
            SourceId::Pci(iommu_emulator::Rid::new(0, 1, 0)),
            None,
        );
        dma.write_obj(0x1234_5678u32, GuestAddress(0x8000)).unwrap();
        let v: u32 = mem.read_obj(GuestAddress(0x8000)).unwrap();
        assert_eq!(v, 0x1234_5678);
        assert!(
            dma.read_obj::<u32>(GuestAddress(2 << 20)).is_err(),
            "outside RAM fails"
        );
    }
}
