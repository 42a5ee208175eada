//! The userspace IOAPIC of the split irqchip: an I/O APIC version 0x20 (as
//! the ICH/PCH I/O APICs and QEMU's default), 24 pins, at 0xfec00000.
//!
//! References: Intel 82093AA I/O APIC datasheet §3 (IOREGSEL/IOWIN, ID,
//! version, arbitration, redirection table), Intel 9-series PCH datasheet
//! §13.5 (the EOI register of version 0x20 I/O APICs), VT-d 5.1.5.1
//! (redirection entries in remappable format: bit 48 set, interrupt index
//! in bits 63:49 and 11).
//!
//! The IOAPIC is plain logic: it sees pin levels and register accesses and
//! hands every interrupt it sends to an [`IoapicDelivery`] (the VMM's
//! interrupt router, which remaps the entry through the IOMMU when
//! interrupt remapping is on and injects the resulting MSI into KVM).
//!
//! - Edge-triggered pins: a rising edge sets the pin's IRR; an unmasked
//!   pin sends at once and clears it, a masked one keeps it and sends when
//!   unmasked (as QEMU's IOAPIC does).
//! - Level-triggered pins: while the line is asserted and the pin unmasked
//!   and its Remote IRR clear, the IOAPIC sends and sets Remote IRR; an EOI
//!   for the pin's vector (the local APIC's broadcast, which KVM reports as
//!   KVM_EXIT_IOAPIC_EOI with the vector it delivered, or a write to the
//!   EOI register with the entry's vector field) clears Remote IRR and
//!   sends again if the line is still asserted.
//! - Polarity is not modelled: devices report the logical level.

use std::sync::{Arc, Mutex};

use crate::devices::{BusDevice, le_u8, le_u32, put_le_value};
use crate::pci::config::{high_u32, low_u32};

/// Number of redirection entries (pins).
pub const IOAPIC_PINS: usize = 24;
/// I/O APIC version (82093AA: 0x11; ICH/PCH with the EOI register: 0x20).
pub const IOAPIC_VERSION: u32 = 0x20;
/// Size of the register window on the MMIO bus.
pub const IOAPIC_MMIO_SIZE: u64 = 0x1000;

/// IOREGSEL, the register index (82093AA §3.1.1).
const IOREGSEL: u64 = 0x00;
/// IOWIN, the data window (82093AA §3.1.2).
const IOWIN: u64 = 0x10;
/// EOI register of version 0x20 I/O APICs (PCH §13.5.5).
const IOEOI: u64 = 0x40;

/// Register indices (82093AA §3.2).
const REG_ID: u32 = 0x00;
const REG_VER: u32 = 0x01;
const REG_ARB: u32 = 0x02;
const REG_REDTBL: u32 = 0x10;

/// Redirection entry fields (82093AA §3.2.4).
const RTE_VECTOR: u64 = 0xff;
const RTE_DELIVERY_STATUS: u64 = 1 << 12;
const RTE_REMOTE_IRR: u64 = 1 << 14;
const RTE_LEVEL: u64 = 1 << 15;
const RTE_MASKED: u64 = 1 << 16;
/// Read-only bits: delivery status and Remote IRR.
const RTE_RO: u64 = RTE_DELIVERY_STATUS | RTE_REMOTE_IRR;

/// Where the IOAPIC sends its interrupts.
pub trait IoapicDelivery: Send + Sync {
    /// Send the interrupt of `pin` as redirection entry `rte` describes it.
    /// Returns the vector the local APICs received (after interrupt
    /// remapping), or None when it was not delivered (a remapping fault,
    /// already recorded by the IOMMU).
    fn deliver(&self, pin: u8, rte: u64) -> Option<u8>;
}

#[derive(Clone, Copy, Debug)]
struct Pin {
    rte: u64,
    /// Input line level (level-triggered) or pending edge.
    irr: bool,
    /// Vector of the last delivery, for EOI matching (with interrupt
    /// remapping, the entry's vector field is not the delivered vector).
    delivered: Option<u8>,
}

impl Default for Pin {
    fn default() -> Self {
        Pin {
            rte: RTE_MASKED,
            irr: false,
            delivered: None,
        }
    }
}

struct State {
    regsel: u32,
    id: u32,
    pins: [Pin; IOAPIC_PINS],
}

/// Counters of the IOAPIC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoapicStats {
    /// Interrupts sent (delivery attempts).
    pub sent: u64,
    /// Sends the router refused (remapping faults).
    pub blocked: u64,
    /// EOIs that cleared a Remote IRR.
    pub eois: u64,
}

/// The IOAPIC.
pub struct Ioapic {
    state: Mutex<State>,
    stats: Mutex<IoapicStats>,
    out: Arc<dyn IoapicDelivery>,
}

impl Ioapic {
    /// An IOAPIC with `id` (the MADT's IOAPIC ID) sending through `out`.
    /// Every pin starts masked (82093AA §3.2.4: reset value of the mask bit).
    pub fn new(id: u8, out: Arc<dyn IoapicDelivery>) -> Self {
        Ioapic {
            state: Mutex::new(State {
                regsel: 0,
                id: u32::from(id) << 24,
                pins: [Pin::default(); IOAPIC_PINS],
            }),
            stats: Mutex::new(IoapicStats::default()),
            out,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counters.
    pub fn stats(&self) -> IoapicStats {
        *self
            .stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn count(&self, f: impl FnOnce(&mut IoapicStats)) {
        f(&mut self
            .stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner));
    }

    /// Set the input level of `pin` (out-of-range pins are ignored).
    pub fn set_irq(&self, pin: usize, level: bool) {
        let mut s = self.lock();
        let Some(p) = s.pins.get_mut(pin) else {
            return;
        };
        if p.rte & RTE_LEVEL != 0 {
            p.irr = level;
        } else if level {
            p.irr = true;
        } else {
            return;
        }
        self.service(&mut s, pin);
    }

    /// An edge on `pin` (assert then deassert): what an edge-triggered ISA
    /// device such as the UART signals.
    pub fn pulse(&self, pin: usize) {
        self.set_irq(pin, true);
        self.set_irq(pin, false);
    }

    /// The local APICs signalled the end of interrupt `vector` (KVM's
    /// KVM_EXIT_IOAPIC_EOI): level pins that delivered it drop Remote IRR.
    pub fn end_of_interrupt(&self, vector: u8) {
        let mut s = self.lock();
        for pin in 0..IOAPIC_PINS {
            let hit = s.pins.get(pin).is_some_and(|p| {
                p.rte & RTE_REMOTE_IRR != 0
                    && (p.delivered == Some(vector)
                        || (p.delivered.is_none() && p.rte & RTE_VECTOR == u64::from(vector)))
            });
            if hit {
                self.clear_remote_irr(&mut s, pin);
            }
        }
    }

    /// A write to the EOI register: pins whose vector field is `vector`
    /// drop Remote IRR (PCH §13.5.5; Linux writes the entry's vector
    /// field, the pin number when interrupt remapping is on).
    fn eoi_register(&self, vector: u8) {
        let mut s = self.lock();
        for pin in 0..IOAPIC_PINS {
            let hit = s.pins.get(pin).is_some_and(|p| {
                p.rte & RTE_REMOTE_IRR != 0 && p.rte & RTE_VECTOR == u64::from(vector)
            });
            if hit {
                self.clear_remote_irr(&mut s, pin);
            }
        }
    }

    fn clear_remote_irr(&self, s: &mut State, pin: usize) {
        if let Some(p) = s.pins.get_mut(pin) {
            p.rte &= !RTE_REMOTE_IRR;
        }
        self.count(|c| c.eois = c.eois.saturating_add(1));
        self.service(s, pin);
    }

    /// Send `pin`'s interrupt if its state allows.
    fn service(&self, s: &mut State, pin: usize) {
        let Some(p) = s.pins.get_mut(pin) else {
            return;
        };
        if !p.irr || p.rte & RTE_MASKED != 0 {
            return;
        }
        let level = p.rte & RTE_LEVEL != 0;
        if level && p.rte & RTE_REMOTE_IRR != 0 {
            return;
        }
        let rte = p.rte;
        let Ok(pin8) = u8::try_from(pin) else {
            return;
        };
        if !level {
            p.irr = false;
        }
        let got = self.out.deliver(pin8, rte);
        self.count(|c| {
            c.sent = c.sent.saturating_add(1);
            if got.is_none() {
                c.blocked = c.blocked.saturating_add(1);
            }
        });
        if let Some(p) = s.pins.get_mut(pin) {
            p.delivered = got;
            // A level interrupt waits for its EOI even when remapping
            // blocked it: the line stays asserted, the OS sees a stuck
            // interrupt, as on hardware.
            if level {
                p.rte |= RTE_REMOTE_IRR;
            }
        }
    }

    fn read_reg(&self, s: &State) -> u32 {
        match s.regsel {
            REG_ID | REG_ARB => s.id,
            REG_VER => IOAPIC_VERSION | (u32::try_from(IOAPIC_PINS - 1).unwrap_or(0) << 16),
            r if r >= REG_REDTBL => {
                // Two registers per pin; an index past the last pin reads as zero.
                let idx = usize::try_from(r.saturating_sub(REG_REDTBL) / 2).unwrap_or(usize::MAX);
                match s.pins.get(idx) {
                    Some(p) if r % 2 == 0 => low_u32(p.rte),
                    Some(p) => high_u32(p.rte),
                    None => 0,
                }
            }
            _ => 0,
        }
    }

    fn write_reg(&self, s: &mut State, v: u32) {
        match s.regsel {
            // ID: bits 27:24 (82093AA §3.2.1).
            REG_ID => s.id = v & 0x0f00_0000,
            r if r >= REG_REDTBL => {
                let pin = usize::try_from(r.saturating_sub(REG_REDTBL) / 2).unwrap_or(usize::MAX);
                let Some(p) = s.pins.get_mut(pin) else {
                    return;
                };
                let old = p.rte;
                let new = if r % 2 == 0 {
                    (old & !0xffff_ffff & !RTE_RO) | (u64::from(v) & !RTE_RO) | (old & RTE_RO)
                } else {
                    (old & 0xffff_ffff) | (u64::from(v) << 32)
                };
                p.rte = new;
                // Switching a pin to edge drops a stale Remote IRR (as
                // QEMU and KVM's IOAPICs do).
                if new & RTE_LEVEL == 0 {
                    p.rte &= !RTE_REMOTE_IRR;
                }
                self.service(s, pin);
            }
            _ => {}
        }
    }
}

impl BusDevice for Ioapic {
    fn read(&self, offset: u64, data: &mut [u8]) {
        let s = self.lock();
        let v = match offset {
            IOREGSEL => s.regsel,
            IOWIN => self.read_reg(&s),
            _ => 0,
        };
        put_le_value(data, u64::from(v));
    }

    fn write(&self, offset: u64, data: &[u8]) {
        // All three registers are 32 bits wide; IOEOI takes the vector in its low byte.
        let v = le_u32(data);
        match offset {
            IOREGSEL => self.lock().regsel = v & 0xff,
            IOWIN => {
                let mut s = self.lock();
                self.write_reg(&mut s, v);
            }
            IOEOI => self.eoi_register(le_u8(data)),
            _ => {}
        }
    }
}

/// The UART's interrupt line: an edge on an IOAPIC pin (vm-superio's
/// `Trigger`).
pub struct IoapicLine {
    /// The IOAPIC.
    pub ioapic: Arc<Ioapic>,
    /// Its pin.
    pub pin: usize,
}

impl vm_superio::Trigger for IoapicLine {
    type E = std::convert::Infallible;
    fn trigger(&self) -> Result<(), Self::E> {
        self.ioapic.pulse(self.pin);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records deliveries; refuses pins in `block`; reports `vector_of(rte)`.
    #[derive(Default)]
    struct Out {
        sent: Mutex<Vec<(u8, u64)>>,
        block: Mutex<Vec<u8>>,
        remap_vector: Mutex<Option<u8>>,
    }

    impl IoapicDelivery for Out {
        fn deliver(&self, pin: u8, rte: u64) -> Option<u8> {
            self.sent.lock().unwrap().push((pin, rte));
            if self.block.lock().unwrap().contains(&pin) {
                return None;
            }
            Some(self.remap_vector.lock().unwrap().unwrap_or(rte as u8))
        }
    }

    fn ioapic() -> (Ioapic, Arc<Out>) {
        let out = Arc::new(Out::default());
        (Ioapic::new(0, out.clone()), out)
    }

    fn wr(io: &Ioapic, reg: u32, v: u32) {
        io.write(IOREGSEL, &reg.to_le_bytes());
        io.write(IOWIN, &v.to_le_bytes());
    }

    fn rd(io: &Ioapic, reg: u32) -> u32 {
        io.write(IOREGSEL, &reg.to_le_bytes());
        let mut b = [0u8; 4];
        io.read(IOWIN, &mut b);
        u32::from_le_bytes(b)
    }

    fn set_rte(io: &Ioapic, pin: u32, rte: u64) {
        wr(io, REG_REDTBL + 2 * pin + 1, (rte >> 32) as u32);
        wr(io, REG_REDTBL + 2 * pin, rte as u32);
    }

    #[test]
    fn ioapic_version_register_reports_0x20_and_23_entries() {
        // 82093AA §3.2.2: bits 7:0 version, 23:16 maximum redirection entry.
        let (io, _) = ioapic();
        assert_eq!(rd(&io, REG_VER), 0x0017_0020);
        wr(&io, REG_ID, 0x0500_00ff);
        assert_eq!(rd(&io, REG_ID), 0x0500_0000, "ID in bits 27:24 only");
    }

    #[test]
    fn ioapic_entries_reset_masked_and_read_only_bits_hold() {
        // 82093AA §3.2.4: mask set at reset; delivery status and Remote IRR are RO.
        let (io, _) = ioapic();
        assert_eq!(rd(&io, REG_REDTBL), RTE_MASKED as u32);
        wr(&io, REG_REDTBL, 0xffff_ffff);
        assert_eq!(rd(&io, REG_REDTBL) as u64 & RTE_RO, 0);
        wr(&io, REG_REDTBL + 2 * 23 + 1, 0xff00_0000);
        assert_eq!(rd(&io, REG_REDTBL + 2 * 23 + 1), 0xff00_0000);
        assert_eq!(rd(&io, REG_REDTBL + 2 * 24), 0, "beyond the table");
    }

    #[test]
    fn ioapic_edge_pin_sends_once_per_edge() {
        let (io, out) = ioapic();
        set_rte(&io, 4, 0x31);
        io.pulse(4);
        io.pulse(4);
        assert_eq!(*out.sent.lock().unwrap(), vec![(4, 0x31), (4, 0x31)]);
        assert_eq!(rd(&io, REG_REDTBL + 8) as u64 & RTE_REMOTE_IRR, 0);
    }

    #[test]
    fn ioapic_masked_edge_is_held_until_unmask() {
        let (io, out) = ioapic();
        set_rte(&io, 4, RTE_MASKED | 0x31);
        io.pulse(4);
        assert!(out.sent.lock().unwrap().is_empty());
        set_rte(&io, 4, 0x31);
        assert_eq!(out.sent.lock().unwrap().len(), 1);
        set_rte(&io, 4, 0x32);
        assert_eq!(out.sent.lock().unwrap().len(), 1, "the edge was consumed");
    }

    #[test]
    fn ioapic_level_pin_waits_for_eoi_and_resends_while_asserted() {
        // 82093AA §3.2.4: Remote IRR set when the level interrupt is
        // accepted, cleared by the EOI with the matching vector.
        let (io, out) = ioapic();
        set_rte(&io, 9, RTE_LEVEL | 0x41);
        io.set_irq(9, true);
        io.set_irq(9, true);
        assert_eq!(out.sent.lock().unwrap().len(), 1);
        assert_ne!(rd(&io, REG_REDTBL + 18) as u64 & RTE_REMOTE_IRR, 0);
        io.end_of_interrupt(0x42);
        assert_eq!(out.sent.lock().unwrap().len(), 1, "other vector");
        io.end_of_interrupt(0x41);
        assert_eq!(out.sent.lock().unwrap().len(), 2, "still asserted");
        io.set_irq(9, false);
        io.end_of_interrupt(0x41);
        assert_eq!(out.sent.lock().unwrap().len(), 2);
        assert_eq!(rd(&io, REG_REDTBL + 18) as u64 & RTE_REMOTE_IRR, 0);
        assert_eq!(io.stats().eois, 2);
    }

    #[test]
    fn ioapic_remapped_level_pin_matches_delivered_vector_and_eoi_register() {
        // VT-d 5.1.5.1: with a remappable entry the vector field is not the
        // delivered vector; the LAPIC EOI carries the IRTE's vector, and
        // Linux also writes the entry's vector field to the EOI register.
        let (io, out) = ioapic();
        *out.remap_vector.lock().unwrap() = Some(0x55);
        let rte = RTE_LEVEL | (1 << 48) | (7 << 49) | 9; // index 7, vector field = pin
        set_rte(&io, 9, rte);
        io.set_irq(9, true);
        io.end_of_interrupt(9);
        assert_eq!(
            out.sent.lock().unwrap().len(),
            1,
            "vector field is not the vector"
        );
        io.end_of_interrupt(0x55);
        assert_eq!(out.sent.lock().unwrap().len(), 2);
        io.write(IOEOI, &9u32.to_le_bytes());
        assert_eq!(
            out.sent.lock().unwrap().len(),
            3,
            "EOI register matches the field"
        );
        assert_eq!(out.sent.lock().unwrap()[0], (9, rte));
    }

    #[test]
    fn ioapic_blocked_level_interrupt_is_counted() {
        let (io, out) = ioapic();
        out.block.lock().unwrap().push(3);
        set_rte(&io, 3, RTE_LEVEL | 0x30);
        io.set_irq(3, true);
        assert_eq!(io.stats().blocked, 1);
        assert_eq!(io.stats().sent, 1);
    }

    #[test]
    fn ioapic_switch_to_edge_clears_remote_irr() {
        let (io, _) = ioapic();
        set_rte(&io, 5, RTE_LEVEL | 0x30);
        io.set_irq(5, true);
        assert_ne!(rd(&io, REG_REDTBL + 10) as u64 & RTE_REMOTE_IRR, 0);
        set_rte(&io, 5, RTE_MASKED | 0x30);
        assert_eq!(rd(&io, REG_REDTBL + 10) as u64 & RTE_REMOTE_IRR, 0);
    }

    #[test]
    fn ioapic_out_of_range_pin_and_offsets_are_ignored() {
        let (io, out) = ioapic();
        io.set_irq(24, true);
        io.set_irq(usize::MAX, true);
        let mut b = [0xaau8; 4];
        io.read(0x20, &mut b);
        assert_eq!(b, [0; 4]);
        io.write(0x30, &[1, 2, 3, 4]);
        assert!(out.sent.lock().unwrap().is_empty());
    }
}
