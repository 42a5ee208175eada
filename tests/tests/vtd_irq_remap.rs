//! Conformance: interrupt remapping (VT-d 5.1, 9.10, 6.5.2.7) driven as
//! Linux's intel_irq_remapping.c (6.1/6.12) drives it: the table written
//! to IRTA with IR_X2APIC_MODE and size 0xf, SIRTP, a global IEC flush, IRE
//! with CFI cleared; each IRTE written (prepare_irte + set_msi_sid /
//! set_ioapic_sid) and followed by an index-selective IEC flush
//! (qi_flush_iec); MSIs in remappable format with SHV and subhandle 0
//! (fill_msi_msg); IOAPIC entries in remappable format; dmar_fault()
//! decoding IR faults with the index in bits 63:48 of the record.

mod vtd_support;

use std::sync::{Arc, Mutex};

use iommu_emulator::{Gpa, GuestRam, Rid};
use vtd_model::regs::*;
use vtd_model::{IecInvalidation, IrNotifier, RemappedMsi};
use vtd_support::*;

const IRTA_EIME: u64 = 1 << 11;

#[derive(Default)]
struct Routes(Mutex<Vec<IecInvalidation>>);

impl IrNotifier for Routes {
    fn interrupt_entries_invalidated(&self, inv: IecInvalidation) {
        self.0.lock().unwrap().push(inv);
    }
}

struct Ir {
    d: Driver,
    irt: u64,
    routes: Arc<Routes>,
}

/// intel_setup_irq_remapping + iommu_set_irq_remapping +
/// iommu_enable_irq_remapping.
fn enable_ir(props: &str, x2apic: bool, size: u64) -> Ir {
    let mut d = Driver::probe(props);
    assert_ne!(d.ecap & (1 << 3), 0, "ECAP.IR");
    let routes = Arc::new(Routes::default());
    d.vtd.set_ir_notifier(routes.clone());
    let irt = d.alloc(256);
    d.wr64(IRTA, irt | if x2apic { IRTA_EIME } else { 0 } | size);
    d.wr32(GCMD, d.gcmd | GCMD_SIRTP as u32);
    assert_ne!(u64::from(d.rd32(GSTS)) & GCMD_SIRTP, 0);
    d.qi_submit(&[[4, 0]]); // qi_global_iec
    d.gcmd |= GCMD_IRE as u32;
    d.gcmd &= !(GCMD_CFI as u32);
    d.wr32(GCMD, d.gcmd);
    assert_ne!(u64::from(d.rd32(GSTS)) & GCMD_IRE, 0);
    assert!(d.vtd.interrupt_remapping_enabled());
    Ir { d, irt, routes }
}

/// prepare_irte + set_msi_sid(SVT_VERIFY_SID_SQ, SQ_ALL_16), then
/// qi_flush_iec(index, 0).
fn set_irte(ir: &mut Ir, index: u16, vector: u8, dest: u32, x2apic: bool, sid: u16) {
    let dst = if x2apic { dest } else { dest << 8 };
    let lo = 1 | (1 << 3) | (u64::from(vector) << 16) | (u64::from(dst) << 32);
    let hi = u64::from(sid) | (1 << 18);
    write_irte(ir, index, lo, hi);
    flush_iec(ir, index);
}

fn write_irte(ir: &Ir, index: u16, lo: u64, hi: u64) {
    let a = ir.irt + u64::from(index) * 16;
    ir.d.ram.write_u64(Gpa(a + 8), hi).unwrap();
    ir.d.ram.write_u64(Gpa(a), lo).unwrap();
}

fn flush_iec(ir: &mut Ir, index: u16) {
    ir.d.qi_submit(&[[4 | (1 << 4) | (u64::from(index) << 32), 0]]);
}

/// fill_msi_msg(): remappable format, SHV, subhandle 0 in data.
fn msi_addr(index: u16) -> u64 {
    0xfee0_0000
        | (1 << 4)
        | (1 << 3)
        | ((u64::from(index) & 0x7fff) << 5)
        | ((u64::from(index) >> 15) << 2)
}

fn remap(ir: &Ir, sid: u16, addr: u64, data: u32) -> Result<RemappedMsi, vtd_model::IrFault> {
    ir.d.vtd.remap_msi(ir.d.ram.as_ref(), Rid(sid), addr, data)
}

/// dmar_fault() for IR faults: reason and index (bits 63:48).
fn ir_faults(d: &Driver) -> Vec<(u8, u16, u16)> {
    let nfr = ((d.cap >> 40) & 0xff) as usize + 1;
    let fro = ((d.cap >> 24) & 0x3ff) * 16;
    let mut out = Vec::new();
    for i in 0..nfr {
        let base = fro + i as u64 * 16;
        let hi = d.rd32(base + 12);
        if hi & (1 << 31) == 0 {
            continue;
        }
        let lo = d.rd64(base);
        let sid = d.rd32(base + 8) & 0xffff;
        out.push(((hi & 0xff) as u8, (lo >> 48) as u16, sid as u16));
        d.wr32(base + 12, 1 << 31);
    }
    d.wr32(FSTS, (FSTS_PFO | FSTS_PPF) as u32);
    out
}

const X2: &str = "intremap=on,eim=on";

// 5.1 / 9.10: an MSI in remappable format is delivered as the IRTE says,
// with 32-bit x2APIC destinations under EIME; the notifier saw SIRTP,
// IRE and each IEC flush.
#[test]
fn ir_x2apic_msi_remapped_through_irte() {
    let mut ir = enable_ir(X2, true, 0xf);
    set_irte(&mut ir, 0x8005, 0x41, 0x1_2345, true, 0x0018);
    let m = remap(&ir, 0x0018, msi_addr(0x8005), 0).unwrap();
    assert_eq!(
        (m.vector, m.dest, m.logical, m.redirection_hint, m.index),
        (0x41, 0x1_2345, false, true, Some(0x8005))
    );
    // KVM's MSI route: dest bits 31:8 in the upper address word.
    let k = m.msi();
    assert_eq!((k.addr >> 32, (k.addr >> 12) & 0xff), (0x1_2300, 0x45));
    assert_eq!(k.data & 0xff, 0x41);
    let seen = ir.routes.0.lock().unwrap().clone();
    assert!(seen.contains(&IecInvalidation::Global));
    assert_eq!(
        seen.last(),
        Some(&IecInvalidation::Range {
            index: 0x8005,
            count: 1
        })
    );
}

// 6.5.2.7: the IEC keeps the old entry until software invalidates it.
#[test]
fn ir_iec_invalidation_makes_new_irte_visible() {
    let mut ir = enable_ir(X2, true, 0xf);
    set_irte(&mut ir, 7, 0x30, 1, true, 0x0018);
    assert_eq!(remap(&ir, 0x18, msi_addr(7), 0).unwrap().vector, 0x30);
    let lo = 1 | (0x31u64 << 16) | (2u64 << 32);
    write_irte(&ir, 7, lo, 0x18 | (1 << 18));
    assert_eq!(remap(&ir, 0x18, msi_addr(7), 0).unwrap().vector, 0x30);
    flush_iec(&mut ir, 7);
    let m = remap(&ir, 0x18, msi_addr(7), 0).unwrap();
    assert_eq!((m.vector, m.dest), (0x31, 2));
    let s = ir.d.vtd.ir_stats();
    assert!(s.iec_hits >= 1 && s.remapped == 3);
}

// 5.1.2.1: with IRE set and CFIS clear (Linux blocks compatibility
// format), a compatibility MSI faults 0x25; with CFIS and xAPIC mode it
// passes; EIME blocks it again.
#[test]
fn ir_compat_format_follows_cfis_and_eime() {
    let mut ir = enable_ir("intremap=on", false, 0x7);
    let f = remap(&ir, 0x18, 0xfee0_1000, 0x41).unwrap_err();
    assert_eq!((f.reason, f.recorded), (0x25, true));
    assert_eq!(ir_faults(&ir.d), vec![(0x25, 0, 0x18)]);
    ir.d.gcmd |= GCMD_CFI as u32;
    ir.d.wr32(GCMD, ir.d.gcmd);
    assert_ne!(u64::from(ir.d.rd32(GSTS)) & GCMD_CFI, 0);
    let m = remap(&ir, 0x18, 0xfee0_1000, 0x41).unwrap();
    assert_eq!((m.vector, m.dest, m.index), (0x41, 1, None));
    let mut ir = enable_ir(X2, true, 0xf);
    ir.d.gcmd |= GCMD_CFI as u32;
    ir.d.wr32(GCMD, ir.d.gcmd);
    assert_eq!(
        remap(&ir, 0x18, 0xfee0_1000, 0x41).unwrap_err().reason,
        0x25
    );
}

// Appendix A 0x21/0x22/0x24/0x26: index beyond IRTA.S, IRTE not present,
// posted format (no CAP.PI), source-id mismatch; each recorded with the
// index where dmar_fault() reads it.
#[test]
fn ir_faults_recorded_with_reason_and_index() {
    let mut ir = enable_ir(X2, true, 0x3); // 16 entries
    assert_eq!(remap(&ir, 0x18, msi_addr(16), 0).unwrap_err().reason, 0x21);
    assert_eq!(remap(&ir, 0x18, msi_addr(2), 0).unwrap_err().reason, 0x22);
    write_irte(&ir, 3, 1 | (1 << 15) | (0x41 << 16), 0);
    flush_iec(&mut ir, 3);
    assert_eq!(remap(&ir, 0x18, msi_addr(3), 0).unwrap_err().reason, 0x24);
    set_irte(&mut ir, 4, 0x42, 0, true, 0x0018);
    assert_eq!(remap(&ir, 0x20, msi_addr(4), 0).unwrap_err().reason, 0x26);
    let mut f = ir_faults(&ir.d);
    f.sort();
    assert_eq!(
        f,
        vec![
            (0x21, 16, 0x18),
            (0x22, 2, 0x18),
            (0x24, 3, 0x18),
            (0x26, 4, 0x20)
        ]
    );
    assert_eq!(ir.d.vtd.ir_stats().faults, 4);
    // FPD in the IRTE suppresses recording.
    write_irte(&ir, 5, 2, 0);
    let e = remap(&ir, 0x18, msi_addr(5), 0).unwrap_err();
    assert_eq!((e.reason, e.recorded), (0x22, false));
    assert!(ir_faults(&ir.d).is_empty());
}

// 5.1.5.1 + Linux's IOAPIC entries in remappable format (index in 63:49
// and bit 11, vector = pin) with set_ioapic_sid (the IOAPIC's scope ff:00.0).
#[test]
fn ir_ioapic_remappable_entry_remapped() {
    let mut ir = enable_ir(X2, true, 0xf);
    set_irte(&mut ir, 0x11, 0x61, 0x300, true, 0xf000);
    let rte = 0x11u64 << 49 | 1 << 48 | 1 << 15 | 2;
    let m =
        ir.d.vtd
            .remap_ioapic(ir.d.ram.as_ref(), Rid(0xf000), rte)
            .unwrap();
    assert_eq!((m.vector, m.dest, m.index), (0x61, 0x300, Some(0x11)));
    assert_eq!(
        ir.d.vtd
            .remap_ioapic(ir.d.ram.as_ref(), Rid(0x0018), rte)
            .unwrap_err()
            .reason,
        0x26
    );
    // SVT=2 (bus range) as for devices behind a PCIe-to-PCI bridge.
    write_irte(&ir, 0x12, 1 | (0x62 << 16), 0x0102 | (2 << 18));
    flush_iec(&mut ir, 0x12);
    assert!(remap(&ir, 0x0200, msi_addr(0x12), 0).is_ok());
    assert_eq!(
        remap(&ir, 0x0300, msi_addr(0x12), 0).unwrap_err().reason,
        0x26
    );
}

// 11.4.4.2: with IRE clear, interrupts pass through unchanged.
#[test]
fn ir_disabled_passes_through() {
    let d = Driver::probe(X2);
    let m = d
        .vtd
        .remap_msi(d.ram.as_ref(), Rid(0x18), 0xfee0_3000, 0x4041)
        .unwrap();
    assert_eq!((m.vector, m.dest, m.delivery_mode), (0x41, 3, 0));
}
