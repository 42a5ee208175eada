//! Intel VT-d through `vtd_model`: the x86 platform's IOMMU unit (registers at
//! [`layout::VTD_START`], the DMAR table, interrupt remapping for the IRQ router).

use std::sync::Arc;

use std::sync::Weak;

use iommu_emulator::{GuestRam, Iommu, MsiMessage, MsiSink, Rid};
use vtd_model::{IecInvalidation, IrNotifier, Vtd, VtdConfig};

use super::layout;
use crate::error::{Error, Result};
use crate::iommu::IommuUnit;
use crate::kvm::irq::{IOAPIC_SOURCE, InterruptRemapper, IrqRouter, Resolved};

/// VT-d interrupt remapping (5.1) for the router.
struct VtdRemapper(Arc<Vtd>);

impl InterruptRemapper for VtdRemapper {
    fn remap_msi(&self, mem: &dyn GuestRam, source: Rid, msg: MsiMessage) -> Option<Resolved> {
        self.0
            .remap_msi(mem, source, msg.addr, msg.data)
            .ok()
            .map(|r| Resolved {
                msg: r.msi(),
                index: r.index,
            })
    }
    fn remap_ioapic(&self, mem: &dyn GuestRam, rte: u64) -> Option<Resolved> {
        self.0
            .remap_ioapic(mem, IOAPIC_SOURCE, rte)
            .ok()
            .map(|r| Resolved {
                msg: r.msi(),
                index: r.index,
            })
    }
}

/// IEC invalidations (and IR table/enable changes) to the router.
struct RouterNotifier(Weak<IrqRouter>);

impl IrNotifier for RouterNotifier {
    fn interrupt_entries_invalidated(&self, inv: IecInvalidation) {
        if let Some(r) = self.0.upgrade() {
            r.invalidate(match inv {
                IecInvalidation::Global => None,
                IecInvalidation::Range { index, count } => Some((index, count)),
            });
        }
    }
}

struct VtdUnit {
    vtd: Arc<Vtd>,
    config: VtdConfig,
}

/// QEMU's habits for the properties the VMM defaults differently from
/// the model: with a split irqchip (always, here) QEMU's intel-iommu
/// turns interrupt remapping on (`intremap=auto`) and, with it, x2APIC
/// support through EIM (`eim=auto`). Explicit values win.
pub fn with_vmm_defaults(props: &str) -> String {
    let names: Vec<&str> = props
        .split(',')
        .map(|i| i.split_once('=').map_or(i, |(n, _)| n).trim())
        .collect();
    let mut pre = String::new();
    let ir_given = names.contains(&"intremap");
    if !ir_given {
        pre.push_str("intremap=on,");
    }
    let ir_on = !ir_given || VtdConfig::parse_props(props).is_ok_and(|c| c.intremap);
    if !names.contains(&"eim") && ir_on {
        pre.push_str("eim=on,");
    }
    pre + props
}

/// Defaults as the VMM applies them, for the error message.
const VMM_DEFAULTS: &[(&str, &str)] = &[("intremap", "on"), ("eim", "on with intremap")];

fn parse(props: &str) -> Result<VtdConfig> {
    VtdConfig::parse_props(&with_vmm_defaults(props)).map_err(|e| {
        let valid: Vec<String> = VtdConfig::PROPERTIES
            .iter()
            .map(|(name, default, help)| {
                let default = VMM_DEFAULTS
                    .iter()
                    .find(|(n, _)| n == name)
                    .map_or(*default, |(_, d)| *d);
                format!("  {name} (default {default}): {help}")
            })
            .collect();
        Error::IommuConfig(format!(
            "--iommu intel-iommu: {e}\nvalid properties:\n{}",
            valid.join("\n")
        ))
    })
}

pub fn validate(props: &str) -> Result<()> {
    parse(props).map(|_| ())
}

#[cfg(test)]
pub(crate) fn parse_for_test(props: &str) -> Result<VtdConfig> {
    parse(props)
}

#[cfg(test)]
pub(crate) fn create_for_test(props: &str, msi: Arc<dyn MsiSink>) -> Arc<dyn IommuUnit> {
    create(props, msi).unwrap()
}

pub fn create(props: &str, msi: Arc<dyn MsiSink>) -> Result<Arc<dyn IommuUnit>> {
    let config = parse(props)?;
    let vtd = Vtd::new(config.clone(), msi)
        .map_err(|e| Error::IommuConfig(format!("intel-iommu: {e}")))?;
    Ok(Arc::new(VtdUnit {
        vtd: Arc::new(vtd),
        config,
    }))
}

impl IommuUnit for VtdUnit {
    fn name(&self) -> &'static str {
        "intel-iommu"
    }
    fn mmio_base(&self) -> u64 {
        layout::VTD_START
    }
    fn mmio_size(&self) -> u64 {
        Vtd::MMIO_SIZE
    }
    fn mmio_read(&self, mem: &dyn GuestRam, offset: u64, size: u8) -> u64 {
        self.vtd.mmio_read(mem, offset, size)
    }
    fn mmio_write(&self, mem: &dyn GuestRam, offset: u64, size: u8, value: u64) {
        self.vtd.mmio_write(mem, offset, size, value)
    }
    fn translator(&self) -> Arc<dyn Iommu> {
        self.vtd.clone()
    }
    fn acpi_table(&self, ioapic_id: u8) -> Vec<u8> {
        vtd_model::acpi::dmar_table(&self.config, layout::VTD_START, ioapic_id)
    }
    fn stats(&self) -> String {
        let ir = self.vtd.ir_stats();
        format!(
            "{}  interrupt remapping: {} remapped, {} passed through, {} faults; IEC {} hits, {} misses\n",
            self.vtd.stats(),
            ir.remapped,
            ir.passed_through,
            ir.faults,
            ir.iec_hits,
            ir.iec_misses
        )
    }
    fn interrupt_remapper(&self) -> Option<Arc<dyn InterruptRemapper>> {
        self.config
            .intremap
            .then(|| Arc::new(VtdRemapper(self.vtd.clone())) as Arc<dyn InterruptRemapper>)
    }
    fn set_interrupt_router(&self, router: &Arc<IrqRouter>) {
        self.vtd
            .set_ir_notifier(Arc::new(RouterNotifier(Arc::downgrade(router))));
    }
    fn set_endpoint_port(&self, n: Arc<dyn iommu_emulator::endpoint::EndpointPort>) {
        self.vtd.set_device_notifier(n);
    }
    fn page_request_sink(&self) -> Option<Arc<dyn iommu_emulator::endpoint::PageRequestSink>> {
        Some(self.vtd.clone())
    }
}
