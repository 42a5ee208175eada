//! PCI glue for the PASID test device: configuration space (PCIe
//! capability, PASID/ATS/PRI extended capabilities, MSI-X), BAR0 routing
//! and interrupt delivery. The only file here that knows about PCI.

use std::sync::Arc;

use iommu_emulator::MsiSink;

use super::device::{PasidDevice, PcieState, Vectors};
use super::regs::{BAR0_SIZE, MSIX_PBA, MSIX_TABLE, NUM_VECTORS};

/// End of the PBA page in BAR 0.
const MSIX_PBA_END: u64 = MSIX_PBA + 0x1000;
use crate::devices::{le_value, put_le_value};
use crate::pci::config::{BarKind, COMMAND, COMMAND_BUS_MASTER, PciConfig, PciId};
use crate::pci::msix::Msix;
use crate::pci::{PCIE_TYPE_RCIEP, PciDevice, add_pcie_capability};

/// PCI vendor ID (Red Hat / virtio).
pub const VENDOR_ID: u16 = 0x1af4;
/// PCI device ID: in 0x10f0..=0x10ff, set aside for experiments.
pub const DEVICE_ID: u16 = 0x10f7;

/// Start of extended configuration space.
const EXT: usize = 0x100;
/// PASID extended capability (PCIe 6.0 §7.8.8).
pub const PASID_CAP: usize = 0x100;
/// ATS extended capability (§7.8.7).
pub const ATS_CAP: usize = 0x108;
/// PRI extended capability (§7.8.10).
pub const PRI_CAP: usize = 0x110;
/// Intel Scalable IOV DVSEC (PCIe DVSEC, ID 0x0023, vendor 0x8086, DVSEC
/// ID 5; Intel Scalable I/O Virtualization spec 3.7): Linux 5.10 offers
/// IOMMU_DEV_FEAT_AUX only on functions that have it.
pub const SIOV_DVSEC: usize = 0x120;
const EXT_END: usize = 0x138;

/// The device as a PCI function.
pub struct PasidPci {
    config: PciConfig,
    ext: [u8; EXT_END - EXT],
    ext_wmask: [u8; EXT_END - EXT],
    ext_w1c: [u8; EXT_END - EXT],
    msix: Msix,
    msi: Arc<dyn MsiSink>,
    dev: PasidDevice,
}

fn ext_header(id: u16, next: usize) -> u32 {
    u32::from(id) | (1 << 16) | ((u32::try_from(next).unwrap_or(0) & 0xfff) << 20)
}

impl PasidPci {
    /// Wrap `dev`; interrupts go to `msi`.
    pub fn new(dev: PasidDevice, msi: Arc<dyn MsiSink>) -> Self {
        let mut config = PciConfig::new(PciId {
            vendor: VENDOR_ID,
            device: DEVICE_ID,
            revision: 1,
            class: [0x08, 0x80, 0x00],
            subsystem_vendor: VENDOR_ID,
            subsystem: DEVICE_ID,
        });
        config.add_bar(0, BAR0_SIZE, BarKind::Mem64);
        let pcie = add_pcie_capability(&mut config, PCIE_TYPE_RCIEP);
        // DEVCAP2 (+0x24): End-End TLP Prefix Supported (bit 21), Max
        // End-End TLP Prefixes = 1 (bits 23:22 = 01b), PCIe §7.5.3.15.
        let devcap2_at = pcie.saturating_add(0x24); // inside the legacy space
        let devcap2 = config.read_u32(devcap2_at) | (1 << 21) | (1 << 22);
        config.set_u32(devcap2_at, devcap2);
        let msix = Msix::new(
            &mut config,
            NUM_VECTORS,
            0,
            u32::try_from(MSIX_TABLE).unwrap_or(0),
            u32::try_from(MSIX_PBA).unwrap_or(0),
        );
        let mut p = PasidPci {
            config,
            ext: [0; EXT_END - EXT],
            ext_wmask: [0; EXT_END - EXT],
            ext_w1c: [0; EXT_END - EXT],
            msix,
            msi,
            dev,
        };
        // PASID: capability u16 at +4 (bit1 Execute Permission Supported,
        // bit2 Privileged Mode Supported, 12:8 Max PASID Width), control at
        // +6 (bit0 PASID Enable, bit1 Execute, bit2 Privileged Mode Enable).
        p.set32(PASID_CAP, ext_header(0x1b, ATS_CAP), 0, 0);
        p.set32(PASID_CAP + 4, (1 << 1) | (1 << 2) | (20 << 8), 0x7 << 16, 0);
        // ATS: capability u16 at +4 (4:0 Invalidate Queue Depth 0, bit5
        // Page Aligned Request), control at +6 (4:0 STU, bit15 Enable).
        p.set32(ATS_CAP, ext_header(0x0f, PRI_CAP), 0, 0);
        p.set32(ATS_CAP + 4, 1 << 5, (0x801f) << 16, 0);
        // PRI: control u16 at +4 (bit0 Enable, bit1 Reset), status at +6
        // (bit0 RF, bit1 UPRGI W1C; bit8 Stopped; bit15 PRG Response PASID
        // Required), capacity at +8, allocation at +0xc.
        p.set32(PRI_CAP, ext_header(0x13, SIOV_DVSEC), 0, 0);
        p.set32(PRI_CAP + 4, (1 << 8 | 1 << 15) << 16, 0x3, 0x3 << 16);
        p.set32(PRI_CAP + 8, 512, 0, 0);
        p.set32(PRI_CAP + 0xc, 0, 0xffff_ffff, 0);
        // DVSEC header 1: vendor 0x8086, revision 0, length 0x18; header 2:
        // DVSEC ID 5. The SIOV fields after it read as zero.
        p.set32(SIOV_DVSEC, ext_header(0x23, 0), 0, 0);
        p.set32(SIOV_DVSEC + 4, 0x8086 | (0x18 << 20), 0, 0);
        p.set32(SIOV_DVSEC + 8, 5, 0, 0);
        p
    }

    fn set32(&mut self, off: usize, v: u32, wmask: u32, w1c: u32) {
        let i = off.saturating_sub(EXT);
        for (arr, val) in [
            (&mut self.ext, v),
            (&mut self.ext_wmask, wmask),
            (&mut self.ext_w1c, w1c),
        ] {
            if let Some(s) = arr.get_mut(i..i.saturating_add(4)) {
                s.copy_from_slice(&val.to_le_bytes());
            }
        }
    }

    fn ext16(&self, off: usize) -> u16 {
        let i = off.saturating_sub(EXT);
        let lo = self.ext.get(i).copied().unwrap_or(0);
        let hi = self.ext.get(i.saturating_add(1)).copied().unwrap_or(0);
        u16::from_le_bytes([lo, hi])
    }

    /// What configuration space enables now.
    pub fn pcie_state(&self) -> PcieState {
        let pasid = self.ext16(PASID_CAP + 6);
        PcieState {
            bus_master: self.config.read_u16(COMMAND) & COMMAND_BUS_MASTER != 0,
            pasid_enable: pasid & 1 != 0,
            priv_enable: pasid & 1 != 0 && pasid & 4 != 0,
            ats_enable: self.ext16(ATS_CAP + 6) & (1 << 15) != 0,
            pri_enable: self.ext16(PRI_CAP + 4) & 1 != 0,
        }
    }

    /// The device logic.
    pub fn device(&self) -> &PasidDevice {
        &self.dev
    }

    fn raise(&mut self, vectors: Vectors) {
        for v in 0..NUM_VECTORS {
            if vectors & (1 << v) != 0
                && let Some(msg) = self.msix.trigger(&self.config, v)
            {
                self.msi.raise_msi(msg);
            }
        }
    }

    fn sync_state(&mut self) {
        // PRI: Stopped reads 1 while disabled (§7.8.10.3).
        let pri_on = self.ext16(PRI_CAP + 4) & 1 != 0;
        let i = PRI_CAP + 7 - EXT;
        if let Some(b) = self.ext.get_mut(i) {
            *b = if pri_on { *b & !1 } else { *b | 1 };
        }
        let s = self.pcie_state();
        self.dev.set_pcie_state(s);
    }
}

impl PciDevice for PasidPci {
    fn config(&self) -> &PciConfig {
        &self.config
    }

    fn config_write(&mut self, offset: usize, data: &[u8]) {
        if offset >= EXT {
            for (k, &b) in data.iter().enumerate() {
                let i = offset.saturating_add(k).saturating_sub(EXT);
                let (Some(m), Some(c)) = (self.ext_wmask.get(i), self.ext_w1c.get(i)) else {
                    continue;
                };
                let (m, c) = (*m, *c);
                if let Some(x) = self.ext.get_mut(i) {
                    *x = (*x & !m) | (b & m);
                    *x &= !(b & c);
                }
            }
        } else {
            self.config.write(offset, data);
        }
        for msg in self.msix.take_deliverable(&self.config) {
            self.msi.raise_msi(msg);
        }
        self.sync_state();
    }

    fn config_read(&mut self, offset: usize, data: &mut [u8]) {
        if offset >= EXT {
            let i = offset.saturating_sub(EXT);
            match self.ext.get(i..i.saturating_add(data.len())) {
                Some(s) => data.copy_from_slice(s),
                None if offset.saturating_add(data.len()) <= crate::pci::config::CONFIG_SIZE => {
                    data.fill(0)
                }
                None => data.fill(0xff),
            }
            return;
        }
        self.config.read(offset, data);
    }

    fn bar_read(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
        if bar != 0 {
            data.fill(0xff);
            return;
        }
        match offset {
            o if (MSIX_TABLE..MSIX_PBA).contains(&o) => {
                self.msix.read_table(o.saturating_sub(MSIX_TABLE), data)
            }
            o if (MSIX_PBA..MSIX_PBA_END).contains(&o) => {
                self.msix.read_pba(o.saturating_sub(MSIX_PBA), data)
            }
            o => {
                let size = u8::try_from(data.len()).unwrap_or(0);
                let (v, irqs) = self.dev.mmio_read(o, size);
                put_le_value(data, v);
                self.raise(irqs);
            }
        }
    }

    fn bar_write(&mut self, bar: usize, offset: u64, data: &[u8]) {
        if bar != 0 {
            return;
        }
        match offset {
            o if (MSIX_TABLE..MSIX_PBA).contains(&o) => {
                // The guard puts o at or above MSIX_TABLE.
                let o = o.saturating_sub(MSIX_TABLE);
                if let Some(msg) = self.msix.write_table(&self.config, o, data) {
                    self.msi.raise_msi(msg);
                }
            }
            o if (MSIX_PBA..MSIX_PBA + 0x1000).contains(&o) => {}
            o => {
                let size = u8::try_from(data.len()).unwrap_or(0);
                let irqs = self.dev.mmio_write(o, size, le_value(data));
                self.raise(irqs);
            }
        }
    }
}

/// Where the VMM places BAR0 in the PCI MMIO window (64 KiB aligned, clear
/// of the virtio BARs at the start of the window).
pub const BAR0_OFFSET_IN_WINDOW: u64 = 0x0800_0000;

/// Plug the device into `root` at the next free slot, BAR0 at `bar0`, DMA
/// through `unit` (traced into `trace` when given), interrupts to `msi`;
/// the unit's device notifier becomes the device's ATC.
pub fn plug(
    root: &mut crate::pci::PciRoot,
    mem: &vm_memory::GuestMemoryMmap,
    unit: Option<&Arc<dyn crate::iommu::IommuUnit>>,
    trace: Option<&Arc<dyn iommu_emulator::trace::TraceSink>>,
    msi: Arc<dyn MsiSink>,
    bar0: u64,
) -> crate::error::Result<iommu_emulator::SourceId> {
    use iommu_emulator::{DeviceAddressSpace, GuestRam, Iommu, Rid, SourceId};
    let devfn = root
        .next_devfn()
        .ok_or_else(|| crate::error::Error::Setup("too many PCI devices".into()))?;
    let rid = Rid::new(0, devfn >> 3, devfn & 7);
    let source = SourceId::Pci(rid);
    let translator: Arc<dyn Iommu> = match unit {
        Some(u) => match trace {
            Some(sink) => Arc::new(crate::iommu::TracingIommu::new(
                u.translator(),
                sink.clone(),
            )),
            None => u.translator(),
        },
        None => Arc::new(crate::iommu::NoIommu),
    };
    let ram: Arc<dyn GuestRam> = Arc::new(mem.clone());
    let space = DeviceAddressSpace::new(translator, ram.clone(), source);
    let atc = Arc::new(super::atc::Atc::new(rid));
    if let Some(u) = unit {
        u.set_endpoint_port(atc.clone());
    }
    let mut dev = PasidDevice::new(space, ram.clone(), atc.clone());
    if let Some(sink) = unit.and_then(|u| u.page_request_sink()) {
        dev.set_page_request_port(Arc::new(super::atc::UnitPageRequests { sink, ram, atc }));
    }
    let mut p = PasidPci::new(dev, msi);
    p.config.set_bar_addr(0, bar0);
    root.add(devfn, Arc::new(std::sync::Mutex::new(p)));
    tracing::info!(
        "pasid-test at 00:{:02x}.{} (requester ID {source}), BAR0 {bar0:#x}",
        devfn >> 3,
        devfn & 7
    );
    Ok(source)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::pasid::atc::Atc;
    use crate::pci::config::{BAR0, COMMAND_MEMORY};
    use iommu_emulator::testing::{FakeRam, MapIommu, RecordingMsi};
    use iommu_emulator::{DeviceAddressSpace, Rid, SourceId};

    fn pci() -> (PasidPci, Arc<RecordingMsi>) {
        let ram = Arc::new(FakeRam::new(1 << 24));
        let space = DeviceAddressSpace::new(
            Arc::new(MapIommu::new()),
            ram.clone(),
            SourceId::Pci(Rid(8)),
        );
        let dev = PasidDevice::new(space, ram, Arc::new(Atc::new(Rid(8))));
        let msi = Arc::new(RecordingMsi::new());
        (PasidPci::new(dev, msi.clone()), msi)
    }

    fn rd32(p: &mut PasidPci, off: usize) -> u32 {
        let mut b = [0u8; 4];
        p.config_read(off, &mut b);
        u32::from_le_bytes(b)
    }

    // Linux's pci_find_ext_capability walks from 0x100 by the next field;
    // pci_pasid_features/pci_max_pasids read the PASID capability.
    #[test]
    fn pasid_pci_extended_capabilities_chain_and_report_features() {
        let (mut p, _) = pci();
        assert_eq!(rd32(&mut p, 0), 0x10f7_1af4);
        let mut off = 0x100usize;
        let mut ids = vec![];
        while off != 0 {
            let h = rd32(&mut p, off);
            ids.push((h & 0xffff, off));
            off = (h >> 20) as usize;
        }
        assert_eq!(
            ids,
            vec![(0x1b, 0x100), (0x0f, 0x108), (0x13, 0x110), (0x23, 0x120)]
        );
        assert_eq!(rd32(&mut p, SIOV_DVSEC + 4) & 0xffff, 0x8086);
        assert_eq!(rd32(&mut p, SIOV_DVSEC + 8) & 0xffff, 5);
        let pasid_cap = rd32(&mut p, PASID_CAP + 4) & 0xffff;
        assert_eq!((pasid_cap >> 8) & 0x1f, 20);
        assert_eq!(pasid_cap & 0x6, 0x6);
        assert_eq!(rd32(&mut p, ATS_CAP + 4) & (1 << 5), 1 << 5);
        assert_eq!(rd32(&mut p, PRI_CAP + 4) >> 16 & 0x8100, 0x8100);
        assert_eq!(rd32(&mut p, PRI_CAP + 8), 512);
        assert_eq!(rd32(&mut p, 0x200), 0, "unused extended space reads 0");
    }

    #[test]
    fn pasid_pci_enables_reach_the_device() {
        let (mut p, _) = pci();
        assert_eq!(p.pcie_state(), PcieState::default());
        p.config_write(PASID_CAP + 6, &[0x05, 0]);
        p.config_write(ATS_CAP + 6, &[0x00, 0x80]);
        p.config_write(PRI_CAP + 4, &[0x01, 0]);
        p.config_write(
            COMMAND,
            &(COMMAND_MEMORY | COMMAND_BUS_MASTER).to_le_bytes(),
        );
        let s = p.pcie_state();
        assert!(s.pasid_enable && s.priv_enable && s.ats_enable && s.pri_enable && s.bus_master);
        assert_eq!(rd32(&mut p, PRI_CAP + 4) >> 24 & 1, 0, "PRI running");
        p.config_write(PASID_CAP + 4, &[0, 0, 0, 0]);
        assert_eq!(
            rd32(&mut p, PASID_CAP + 4) & 0xffff,
            0x1406,
            "RO capability kept"
        );
    }

    // The error vector of a queue enable refused for BAD_CONFIG goes out
    // through MSI-X entry 8.
    #[test]
    fn pasid_pci_error_vector_goes_through_msix_entry() {
        let (mut p, msi) = pci();
        p.config_write(
            COMMAND,
            &(COMMAND_MEMORY | COMMAND_BUS_MASTER).to_le_bytes(),
        );
        p.config_write(BAR0, &0xc000_0000u32.to_le_bytes());
        let cap = (0x40..0x100)
            .find(|&o| rd32(&mut p, o) & 0xff == 0x11)
            .unwrap();
        p.config_write(cap + 2, &[0x08, 0x80]);
        // Entry 8: address, data, unmask.
        let e = MSIX_TABLE + 8 * 16;
        p.bar_write(0, e, &0xfee0_0000u32.to_le_bytes());
        p.bar_write(0, e + 8, &0x4055u32.to_le_bytes());
        p.bar_write(0, e + 12, &0u32.to_le_bytes());
        p.bar_write(0, 0x0c, &1u32.to_le_bytes());
        p.bar_write(0, 0x1010, &3u32.to_le_bytes()); // ring size 3: bad
        p.bar_write(0, 0x101c, &1u32.to_le_bytes());
        let m = msi.take();
        assert_eq!(m.len(), 1);
        assert_eq!((m[0].addr, m[0].data), (0xfee0_0000, 0x4055));
        let mut b = [0u8; 4];
        p.bar_read(0, 0x14, &mut b);
        assert_eq!(u32::from_le_bytes(b), 1);
    }
}
