//! The interrupt router of the split irqchip: every device interrupt (the
//! IOAPIC's pins, PCI MSI and MSI-X vectors) becomes an MSI route in KVM's
//! GSI routing table, computed from the message *after* interrupt
//! remapping, and is injected through that route.
//!
//! - GSIs 0..24 are the IOAPIC's pins (KVM reserves them with
//!   KVM_CAP_SPLIT_IRQCHIP and scans their level-triggered routes to know
//!   which vectors' EOIs to report as KVM_EXIT_IOAPIC_EOI). A pin is raised
//!   with KVM_IRQ_LINE on its GSI.
//! - GSIs from [`FIRST_MSI_GSI`] are MSI routes, one per message a PCI
//!   function sends (a vector of MSI-X, or of multi-message MSI: each has
//!   its own address/data), each with its own irqfd. A vector the guest
//!   reprogrammed sends a new message and gets its own route; routes are
//!   reused least recently used first beyond [`MAX_MSI_ROUTES`].
//! - A route is resolved when its interrupt is sent and is then valid
//!   until the IOMMU reports that the interrupt remapping entries it came
//!   from changed (IEC invalidation, a new table, remapping switched on or
//!   off) or, for a pin, until its redirection entry changes. The next
//!   interrupt re-resolves it. This is how hardware behaves with its
//!   interrupt entry cache (VT-d 6.5.2.7): a stale route is a stale IEC
//!   entry, and a remapping fault is recorded when an interrupt arrives
//!   (VT-d 5.1.4.1), not when the guest edits a table.
//! - Remapped interrupts never go through DMA translation.
//!
//! KVM_SIGNAL_MSI is used only when an irqfd cannot be attached.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use iommu_emulator::{GuestRam, MsiMessage, MsiSink, Rid};
use kvm_bindings::{KVM_IRQ_ROUTING_MSI, KvmIrqRouting, kvm_irq_routing_entry, kvm_msi};
use kvm_ioctls::VmFd;
use vmm_sys_util::eventfd::EventFd;

use crate::arch::x86_64::ioapic::{IOAPIC_PINS, IoapicDelivery};
use crate::pci::config::{high_u32, low_u32};

/// First GSI of the MSI routes (after the IOAPIC's pins).
#[allow(clippy::cast_possible_truncation)] // a constant; the assert below makes it exact
pub const FIRST_MSI_GSI: u32 = {
    assert!(IOAPIC_PINS <= 256);
    IOAPIC_PINS as u32
};
/// MSI routes kept at most (bounded whatever the guest programs).
pub const MAX_MSI_ROUTES: usize = 256;
/// The source ID of IOAPIC interrupts (ff:00.0, the DMAR's IOAPIC scope).
pub const IOAPIC_SOURCE: Rid = Rid(0xff00);

/// An interrupt as the local APICs receive it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// Compatibility-format MSI for KVM (with KVM_X2APIC_API, destination
    /// bits 31:8 in the upper address word).
    pub msg: MsiMessage,
    /// The interrupt remapping table index it went through, None when it
    /// was not remapped (no IOMMU, remapping off, or compatibility format
    /// allowed by CFI).
    pub index: Option<u16>,
}

/// The IOMMU side of interrupt remapping.
pub trait InterruptRemapper: Send + Sync {
    /// Remap an MSI write from `source`; None when the IOMMU blocked it
    /// (it recorded the fault).
    fn remap_msi(&self, mem: &dyn GuestRam, source: Rid, msg: MsiMessage) -> Option<Resolved>;
    /// Remap IOAPIC redirection entry `rte` (source [`IOAPIC_SOURCE`]).
    fn remap_ioapic(&self, mem: &dyn GuestRam, rte: u64) -> Option<Resolved>;
}

/// What the router needs from KVM (a fake in tests).
pub trait GsiBackend: Send + Sync {
    /// Replace the GSI routing table with these MSI routes.
    fn set_routes(&self, routes: &[(u32, MsiMessage)]) -> std::io::Result<()>;
    /// An eventfd attached to `gsi` as an irqfd.
    fn attach_irqfd(&self, gsi: u32) -> std::io::Result<EventFd>;
    /// Raise `gsi` (KVM_IRQ_LINE).
    fn raise_line(&self, gsi: u32) -> std::io::Result<()>;
    /// Inject `msg` directly (KVM_SIGNAL_MSI), the fallback.
    fn signal_msi(&self, msg: MsiMessage) -> std::io::Result<()>;
}

/// Where an interrupt came from, for statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum IrqSource {
    /// An IOAPIC pin.
    IoapicPin(u8),
    /// A PCI function's MSI/MSI-X.
    Pci(u16),
}

impl fmt::Display for IrqSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IrqSource::IoapicPin(p) => write!(f, "ioapic pin {p}"),
            IrqSource::Pci(r) => write!(f, "{}", Rid(*r)),
        }
    }
}

/// Interrupts of one source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceCounts {
    /// Delivered through a route resolved by interrupt remapping.
    pub remapped: u64,
    /// Delivered in compatibility format (no remapping).
    pub compat: u64,
    /// Blocked: remapping fault or not an interrupt address.
    pub blocked: u64,
    /// KVM refused the injection.
    pub failed: u64,
}

/// Router statistics (`--stats`).
#[derive(Clone, Debug, Default)]
pub struct RouterStats {
    /// Per source.
    pub sources: BTreeMap<IrqSource, SourceCounts>,
    /// GSI routing table updates (KVM_SET_GSI_ROUTING).
    pub table_updates: u64,
    /// Route resolutions (through the IOMMU when remapping).
    pub resolutions: u64,
    /// Invalidation notifications from the IOMMU.
    pub invalidations: u64,
    /// Interrupts injected with KVM_SIGNAL_MSI (no irqfd).
    pub fallback: u64,
    /// MSI routes in use.
    pub msi_routes: usize,
    /// Interrupts sent through a function's cached route, without the router's lock.
    pub fast_path: u64,
}

impl fmt::Display for RouterStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (s, c) in &self.sources {
            writeln!(
                f,
                "irq {s}: {} remapped, {} compatibility, {} blocked, {} failed",
                c.remapped, c.compat, c.blocked, c.failed
            )?;
        }
        write!(
            f,
            "irq routes: {} MSI routes, {} resolutions, {} routing table updates, {} invalidations, {} KVM_SIGNAL_MSI fallbacks, {} sent on a cached route",
            self.msi_routes,
            self.resolutions,
            self.table_updates,
            self.invalidations,
            self.fallback,
            self.fast_path
        )
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Route {
    /// What KVM's table holds for this GSI.
    installed: Option<MsiMessage>,
    /// Resolution still current (no invalidation since).
    valid: bool,
    /// Remapping index of the current resolution.
    index: Option<u16>,
}

impl Route {
    fn invalidate(&mut self, range: Option<(u16, u32)>) {
        let hit = match (range, self.index) {
            (None, _) => true,
            (Some((start, count)), Some(i)) => {
                u32::from(i) >= u32::from(start)
                    && u32::from(i) < u32::from(start).saturating_add(count)
            }
            (Some(_), None) => false,
        };
        if hit {
            self.valid = false;
        }
    }
}

#[derive(Default)]
struct PinRoute {
    rte: u64,
    route: Route,
}

struct MsiRoute {
    source: Rid,
    msg: MsiMessage,
    gsi: u32,
    fd: Option<EventFd>,
    route: Route,
    last_use: u64,
}

struct State {
    pins: Vec<PinRoute>,
    msis: Vec<MsiRoute>,
    clock: u64,
    stats: RouterStats,
    /// The per-function sinks, for their fast-path counts in [`IrqRouter::stats`].
    sinks: Vec<Weak<DeviceMsi>>,
}

/// The interrupt router.
///
/// Hot path: a PCI function's [`DeviceMsi`] keeps the routes it used (message -> irqfd),
/// tagged with the router's route generation, and sends through them with only its own
/// lock (a function's interrupts come from one device, so no lock is shared by all vCPUs).
/// Anything that can make such a route stale (an IOMMU invalidation, a route reused for
/// another message) bumps the generation under the router's lock, and the next interrupt
/// takes the slow path here, which resolves, installs and counts under that lock.
pub struct IrqRouter {
    backend: Arc<dyn GsiBackend>,
    remapper: Option<Arc<dyn InterruptRemapper>>,
    ram: Arc<dyn GuestRam>,
    state: Mutex<State>,
    generation: AtomicU64,
}

/// The compatibility-format MSI an IOAPIC sends for `rte` (82093AA §3.2.4
/// fields; VT-d 5.1.5.1 compatibility format): destination 63:56 in
/// address 19:12, destination mode in address bit 2, vector, delivery mode
/// and trigger mode in the data.
pub fn ioapic_compat_msi(rte: u64) -> MsiMessage {
    let addr = 0xfee0_0000u64 | (((rte >> 56) & 0xff) << 12) | (((rte >> 11) & 1) << 2);
    let data = (rte & 0xff) | (rte & 0x700) | (rte & (1 << 15)) | (1 << 14);
    MsiMessage {
        addr,
        data: u32::try_from(data).unwrap_or(0),
    }
}

/// Whether `addr` is in the interrupt address range 0xFEEx_xxxx (the low
/// word; Intel SDM Vol. 3A §11.11.1, VT-d 3.14).
fn is_interrupt_address(addr: u64) -> bool {
    addr & 0xfff0_0000 == 0xfee0_0000
}

/// Whether KVM may be given `msg` as an interrupt: its low address word is in 0xFEEx_xxxx
/// and bits 7:0 of the upper word are clear (bits 31:8 carry destination ID bits 31:8 with
/// x2APIC, VT-d 10.4.12 FEUADDR; KVM_X2APIC_API treats bits 7:0 as reserved).
pub fn is_routable_msi(msg: MsiMessage) -> bool {
    is_interrupt_address(msg.addr) && (msg.addr >> 32) & 0xff == 0
}

impl IrqRouter {
    /// A router injecting through `backend`, remapping through `remapper`
    /// (None: no IOMMU or interrupt remapping off), reading remapping
    /// tables from `ram`.
    pub fn new(
        backend: Arc<dyn GsiBackend>,
        remapper: Option<Arc<dyn InterruptRemapper>>,
        ram: Arc<dyn GuestRam>,
    ) -> Self {
        IrqRouter {
            backend,
            remapper,
            ram,
            state: Mutex::new(State {
                pins: (0..IOAPIC_PINS).map(|_| PinRoute::default()).collect(),
                msis: Vec::new(),
                clock: 0,
                stats: RouterStats::default(),
                sinks: Vec::new(),
            }),
            generation: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A copy of the statistics.
    pub fn stats(&self) -> RouterStats {
        let s = self.lock();
        let mut st = s.stats.clone();
        st.msi_routes = s.msis.len();
        for sink in s.sinks.iter().filter_map(Weak::upgrade) {
            let c = st.sources.entry(IrqSource::Pci(sink.source.0)).or_default();
            c.remapped = c
                .remapped
                .saturating_add(sink.fast_remapped.load(Ordering::Relaxed));
            c.compat = c
                .compat
                .saturating_add(sink.fast_compat.load(Ordering::Relaxed));
            st.fast_path = st
                .fast_path
                .saturating_add(sink.fast_remapped.load(Ordering::Relaxed))
                .saturating_add(sink.fast_compat.load(Ordering::Relaxed));
        }
        st
    }

    /// The IOMMU reports that remapping entries changed: `range` is
    /// `(first index, count)`, None for all of them (global IEC
    /// invalidation, new table, remapping enabled or disabled). Routes
    /// resolved through them are re-resolved when next used.
    pub fn invalidate(&self, range: Option<(u16, u32)>) {
        let mut s = self.lock();
        self.generation.fetch_add(1, Ordering::AcqRel);
        s.stats.invalidations = s.stats.invalidations.saturating_add(1);
        for p in &mut s.pins {
            p.route.invalidate(range);
        }
        for m in &mut s.msis {
            m.route.invalidate(range);
        }
    }

    /// The sink of PCI function `source`'s MSI/MSI-X messages.
    pub fn device_sink(self: &Arc<Self>, source: Rid) -> Arc<dyn MsiSink> {
        let sink = Arc::new(DeviceMsi {
            router: self.clone(),
            source,
            routes: Mutex::new(Vec::new()),
            fast_remapped: AtomicU64::new(0),
            fast_compat: AtomicU64::new(0),
        });
        self.lock().sinks.push(Arc::downgrade(&sink));
        sink
    }

    fn count(s: &mut State, src: IrqSource, f: impl FnOnce(&mut SourceCounts)) {
        f(s.stats.sources.entry(src).or_default());
    }

    fn push_table(&self, s: &mut State) -> bool {
        let mut routes: Vec<(u32, MsiMessage)> = Vec::new();
        for (pin, p) in s.pins.iter().enumerate() {
            if let (Some(m), Ok(g)) = (p.route.installed, u32::try_from(pin)) {
                routes.push((g, m));
            }
        }
        for m in &s.msis {
            if let Some(msg) = m.route.installed {
                routes.push((m.gsi, msg));
            }
        }
        s.stats.table_updates = s.stats.table_updates.saturating_add(1);
        match self.backend.set_routes(&routes) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!("KVM_SET_GSI_ROUTING with {} routes: {e}", routes.len());
                false
            }
        }
    }

    /// Resolve `route` if stale; returns the resolution (None: blocked)
    /// and whether KVM's table must change.
    fn resolve(
        &self,
        stats: &mut RouterStats,
        route: &mut Route,
        f: impl FnOnce() -> Option<Resolved>,
    ) -> Option<(Resolved, bool)> {
        if route.valid
            && let Some(msg) = route.installed
        {
            return Some((
                Resolved {
                    msg,
                    index: route.index,
                },
                false,
            ));
        }
        stats.resolutions = stats.resolutions.saturating_add(1);
        let r = f()?;
        // KVM refuses a whole routing table for one route with bits 7:0 of
        // the upper address set under KVM_X2APIC_API (reserved there); a
        // guest's compatibility message must not take the others down.
        if !is_routable_msi(r.msg) {
            tracing::warn!(
                "interrupt message {:#x}/{:#x} is not routable; dropped",
                r.msg.addr,
                r.msg.data
            );
            return None;
        }
        route.valid = true;
        route.index = r.index;
        let changed = route.installed != Some(r.msg);
        route.installed = Some(r.msg);
        Some((r, changed))
    }

    fn deliver_pin(&self, pin: u8, rte: u64) -> Option<u8> {
        let mut s = self.lock();
        let src = IrqSource::IoapicPin(pin);
        let st = &mut *s;
        let p = st.pins.get_mut(usize::from(pin))?;
        if p.rte != rte {
            p.rte = rte;
            p.route.valid = false;
        }
        let res = self.resolve(&mut st.stats, &mut p.route, || match &self.remapper {
            Some(r) => r.remap_ioapic(self.ram.as_ref(), rte),
            None => Some(Resolved {
                msg: ioapic_compat_msi(rte),
                index: None,
            }),
        });
        let Some((r, changed)) = res else {
            Self::count(st, src, |c| c.blocked = c.blocked.saturating_add(1));
            return None;
        };
        if changed && !self.push_table(st) {
            Self::count(st, src, |c| c.failed = c.failed.saturating_add(1));
            return None;
        }
        match self.backend.raise_line(u32::from(pin)) {
            Ok(()) => {
                Self::count(st, src, |c| {
                    if r.index.is_some() {
                        c.remapped = c.remapped.saturating_add(1);
                    } else {
                        c.compat = c.compat.saturating_add(1);
                    }
                });
                u8::try_from(r.msg.data & 0xff).ok()
            }
            Err(e) => {
                tracing::warn!("IOAPIC pin {pin}: KVM_IRQ_LINE: {e}");
                Self::count(st, src, |c| c.failed = c.failed.saturating_add(1));
                None
            }
        }
    }

    /// Send `msg` from PCI function `source` (an MSI or MSI-X vector), resolving its route
    /// under the router's lock. Returns what a [`DeviceMsi`] may cache: the route's irqfd
    /// (a duplicate), whether it was remapped, and the generation it is valid for.
    pub fn fire_msi(&self, source: Rid, msg: MsiMessage) -> Option<CachedRoute> {
        let mut s = self.lock();
        let st = &mut *s;
        let src = IrqSource::Pci(source.0);
        if !is_interrupt_address(msg.addr) {
            tracing::warn!(
                "{source}: MSI to {:#x} is not an interrupt address; dropped",
                msg.addr
            );
            Self::count(st, src, |c| c.blocked = c.blocked.saturating_add(1));
            return None;
        }
        st.clock = st.clock.wrapping_add(1);
        let now = st.clock;
        let idx = match st
            .msis
            .iter()
            .position(|m| m.source == source && m.msg == msg)
        {
            Some(i) => i,
            None => self.new_msi_route(st, source, msg),
        };
        let m = st.msis.get_mut(idx)?;
        m.last_use = now;
        let res = self.resolve(&mut st.stats, &mut m.route, || match &self.remapper {
            Some(r) => r.remap_msi(self.ram.as_ref(), source, msg),
            None => Some(Resolved { msg, index: None }),
        });
        let Some((r, changed)) = res else {
            Self::count(st, src, |c| c.blocked = c.blocked.saturating_add(1));
            return None;
        };
        let pushed = !changed || self.push_table(st);
        let fd_ok = pushed
            && st
                .msis
                .get(idx)
                .and_then(|m| m.fd.as_ref())
                .is_some_and(|fd| fd.write(1).is_ok());
        let ok = if fd_ok {
            true
        } else {
            st.stats.fallback = st.stats.fallback.saturating_add(1);
            self.backend.signal_msi(r.msg).is_ok()
        };
        crate::diag::recorder::record(crate::diag::recorder::Event::Msi {
            rid: source.0,
            addr: msg.addr,
            data: msg.data,
            vector: (r.msg.data & 0xff) as u8,
            remapped: r.index.is_some(),
            ok,
        });
        Self::count(st, src, |c| {
            if !ok {
                c.failed = c.failed.saturating_add(1);
            } else if r.index.is_some() {
                c.remapped = c.remapped.saturating_add(1);
            } else {
                c.compat = c.compat.saturating_add(1);
            }
        });
        // Only a route delivered through its irqfd may be cached: the fallback has no fd.
        if !fd_ok {
            return None;
        }
        let fd = st.msis.get(idx)?.fd.as_ref()?.try_clone().ok()?;
        Some(CachedRoute {
            msg,
            fd,
            remapped: r.index.is_some(),
            vector: (r.msg.data & 0xff) as u8,
            generation: self.generation.load(Ordering::Acquire),
        })
    }

    /// A route for a new message: a new GSI while below the bound, else
    /// the least recently used route's.
    fn new_msi_route(&self, st: &mut State, source: Rid, msg: MsiMessage) -> usize {
        if st.msis.len() < MAX_MSI_ROUTES {
            let gsi = FIRST_MSI_GSI.saturating_add(u32::try_from(st.msis.len()).unwrap_or(0));
            let fd = match self.backend.attach_irqfd(gsi) {
                Ok(fd) => Some(fd),
                Err(e) => {
                    tracing::warn!("irqfd for GSI {gsi}: {e}; using KVM_SIGNAL_MSI");
                    None
                }
            };
            st.msis.push(MsiRoute {
                source,
                msg,
                gsi,
                fd,
                route: Route::default(),
                last_use: 0,
            });
            return st.msis.len().saturating_sub(1);
        }
        let lru = st
            .msis
            .iter()
            .enumerate()
            .min_by_key(|(_, m)| m.last_use)
            .map_or(0, |(i, _)| i);
        // The reused GSI now carries another message: cached routes to it are stale.
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Some(m) = st.msis.get_mut(lru) {
            m.source = source;
            m.msg = msg;
            m.route.valid = false;
            m.route.index = None;
        }
        lru
    }
}

impl IoapicDelivery for IrqRouter {
    fn deliver(&self, pin: u8, rte: u64) -> Option<u8> {
        let vector = self.deliver_pin(pin, rte);
        crate::diag::recorder::record(crate::diag::recorder::Event::IoapicPin { pin, vector });
        vector
    }
}

/// Routes a [`DeviceMsi`] keeps: a function has few vectors (virtio-blk 2, the PASID test
/// device 9); more distinct messages than this evict the oldest.
pub const DEVICE_ROUTE_CACHE: usize = 16;

/// A route a [`DeviceMsi`] may send through without the router's lock.
pub struct CachedRoute {
    msg: MsiMessage,
    fd: EventFd,
    remapped: bool,
    vector: u8,
    generation: u64,
}

/// A PCI function's MSI/MSI-X sink: its messages go through the router with its requester
/// ID; routes it used are cached here (see [`IrqRouter`]).
pub struct DeviceMsi {
    router: Arc<IrqRouter>,
    source: Rid,
    routes: Mutex<Vec<CachedRoute>>,
    fast_remapped: AtomicU64,
    fast_compat: AtomicU64,
}

impl MsiSink for DeviceMsi {
    fn raise_msi(&self, msg: MsiMessage) {
        let generation = self.router.generation.load(Ordering::Acquire);
        let mut routes = self
            .routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(r) = routes
            .iter()
            .find(|r| r.msg == msg && r.generation == generation)
            && r.fd.write(1).is_ok()
        {
            let counter = if r.remapped {
                &self.fast_remapped
            } else {
                &self.fast_compat
            };
            counter.fetch_add(1, Ordering::Relaxed);
            crate::diag::recorder::record(crate::diag::recorder::Event::Msi {
                rid: self.source.0,
                addr: msg.addr,
                data: msg.data,
                vector: r.vector,
                remapped: r.remapped,
                ok: true,
            });
            return;
        }
        routes.retain(|r| r.msg != msg && r.generation == generation);
        if let Some(r) = self.router.fire_msi(self.source, msg) {
            if routes.len() >= DEVICE_ROUTE_CACHE {
                routes.remove(0);
            }
            routes.push(r);
        }
    }
}

/// KVM as the router's backend.
pub struct KvmGsi {
    vm: Arc<VmFd>,
}

impl KvmGsi {
    /// Routes of `vm`.
    pub fn new(vm: Arc<VmFd>) -> Self {
        KvmGsi { vm }
    }
}

fn msi_entry(gsi: u32, msg: MsiMessage) -> kvm_irq_routing_entry {
    let mut e = kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_MSI,
        ..Default::default()
    };
    e.u.msi.address_lo = low_u32(msg.addr);
    e.u.msi.address_hi = high_u32(msg.addr);
    e.u.msi.data = msg.data;
    e
}

impl GsiBackend for KvmGsi {
    fn set_routes(&self, routes: &[(u32, MsiMessage)]) -> std::io::Result<()> {
        let entries: Vec<kvm_irq_routing_entry> =
            routes.iter().map(|&(g, m)| msi_entry(g, m)).collect();
        let table = KvmIrqRouting::from_entries(&entries)
            .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        self.vm
            .set_gsi_routing(&table)
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
    }

    fn attach_irqfd(&self, gsi: u32) -> std::io::Result<EventFd> {
        let fd = EventFd::new(libc::EFD_NONBLOCK)?;
        self.vm
            .register_irqfd(&fd, gsi)
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
        Ok(fd)
    }

    fn raise_line(&self, gsi: u32) -> std::io::Result<()> {
        self.vm
            .set_irq_line(gsi, true)
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
    }

    fn signal_msi(&self, msg: MsiMessage) -> std::io::Result<()> {
        let m = kvm_msi {
            address_lo: low_u32(msg.addr),
            address_hi: high_u32(msg.addr),
            data: msg.data,
            ..Default::default()
        };
        self.vm
            .signal_msi(m)
            .map(|_| ())
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iommu_emulator::testing::FakeRam;

    #[derive(Default)]
    struct FakeKvm {
        tables: Mutex<Vec<Vec<(u32, MsiMessage)>>>,
        fds: Mutex<Vec<(u32, EventFd)>>,
        lines: Mutex<Vec<u32>>,
        signalled: Mutex<Vec<MsiMessage>>,
        no_irqfd: bool,
    }

    impl FakeKvm {
        fn fired(&self, gsi: u32) -> u64 {
            self.fds
                .lock()
                .unwrap()
                .iter()
                .filter(|(g, _)| *g == gsi)
                .map(|(_, f)| f.read().unwrap_or(0))
                .sum()
        }
        fn last_table(&self) -> Vec<(u32, MsiMessage)> {
            self.tables
                .lock()
                .unwrap()
                .last()
                .cloned()
                .unwrap_or_default()
        }
    }

    impl GsiBackend for FakeKvm {
        fn set_routes(&self, routes: &[(u32, MsiMessage)]) -> std::io::Result<()> {
            self.tables.lock().unwrap().push(routes.to_vec());
            Ok(())
        }
        fn attach_irqfd(&self, gsi: u32) -> std::io::Result<EventFd> {
            if self.no_irqfd {
                return Err(std::io::Error::other("no irqfd"));
            }
            let fd = EventFd::new(libc::EFD_NONBLOCK)?;
            self.fds.lock().unwrap().push((gsi, fd.try_clone()?));
            Ok(fd)
        }
        fn raise_line(&self, gsi: u32) -> std::io::Result<()> {
            self.lines.lock().unwrap().push(gsi);
            Ok(())
        }
        fn signal_msi(&self, msg: MsiMessage) -> std::io::Result<()> {
            self.signalled.lock().unwrap().push(msg);
            Ok(())
        }
    }

    /// A remapper that maps index i to vector 0x40 + i (plus `shift`),
    /// blocks indices in `faulting`, and counts calls.
    #[derive(Default)]
    struct FakeRemap {
        shift: Mutex<u8>,
        faulting: Mutex<Vec<u16>>,
        calls: Mutex<u32>,
    }

    impl FakeRemap {
        fn map(&self, index: u16) -> Option<Resolved> {
            *self.calls.lock().unwrap() += 1;
            if self.faulting.lock().unwrap().contains(&index) {
                return None;
            }
            let v = 0x40 + u32::from(index) + u32::from(*self.shift.lock().unwrap());
            Some(Resolved {
                msg: MsiMessage {
                    addr: 0xfee0_0000,
                    data: v,
                },
                index: Some(index),
            })
        }
    }

    impl InterruptRemapper for FakeRemap {
        fn remap_msi(&self, _: &dyn GuestRam, _: Rid, msg: MsiMessage) -> Option<Resolved> {
            self.map(((msg.addr >> 5) & 0x7fff) as u16)
        }
        fn remap_ioapic(&self, _: &dyn GuestRam, rte: u64) -> Option<Resolved> {
            self.map(((rte >> 49) & 0x7fff) as u16)
        }
    }

    fn router(remap: bool) -> (Arc<IrqRouter>, Arc<FakeKvm>, Arc<FakeRemap>) {
        let kvm = Arc::new(FakeKvm::default());
        let rm = Arc::new(FakeRemap::default());
        let r = Arc::new(IrqRouter::new(
            kvm.clone(),
            remap.then(|| rm.clone() as Arc<dyn InterruptRemapper>),
            Arc::new(FakeRam::new(1 << 20)),
        ));
        (r, kvm, rm)
    }

    /// Linux's remappable-format MSI for `index` (VT-d 5.1.2.2).
    fn remappable(index: u16) -> MsiMessage {
        MsiMessage {
            addr: 0xfee0_0000 | (u64::from(index) << 5) | (1 << 4) | (1 << 3),
            data: 0,
        }
    }

    const DEV: Rid = Rid(0x0008);

    #[test]
    fn router_msi_route_holds_the_remapped_message_and_fires_its_irqfd() {
        let (r, kvm, rm) = router(true);
        let sink = r.device_sink(DEV);
        sink.raise_msi(remappable(3));
        sink.raise_msi(remappable(3));
        assert_eq!(
            kvm.last_table(),
            vec![(
                FIRST_MSI_GSI,
                MsiMessage {
                    addr: 0xfee0_0000,
                    data: 0x43
                }
            )]
        );
        assert_eq!(kvm.fired(FIRST_MSI_GSI), 2);
        assert_eq!(*rm.calls.lock().unwrap(), 1, "resolved once, then cached");
        assert_eq!(kvm.tables.lock().unwrap().len(), 1);
        assert_eq!(r.stats().sources[&IrqSource::Pci(DEV.0)].remapped, 2);
    }

    #[test]
    fn router_cached_route_sends_without_the_router_lock() {
        // The hot path: a function's second interrupt on a resolved route takes only the
        // function's own lock. With the router's lock held by another thread it still goes
        // out; a new message (the slow path) waits for the lock.
        let (r, kvm, _) = router(true);
        let sink = r.device_sink(DEV);
        sink.raise_msi(remappable(3));
        let held = r.lock();
        let s2 = sink.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            s2.raise_msi(remappable(3));
            let _ = tx.send(());
        });
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("a cached route must not wait for the router's lock");
        drop(held);
        assert_eq!(kvm.fired(FIRST_MSI_GSI), 2);
        let st = r.stats();
        assert_eq!(st.fast_path, 1);
        assert_eq!(st.sources[&IrqSource::Pci(DEV.0)].remapped, 2);
        // Another function's sink has its own cache: its first interrupt is resolved.
        let other = r.device_sink(Rid(0x0010));
        other.raise_msi(remappable(3));
        assert_eq!(r.stats().fast_path, 1);
    }

    #[test]
    fn router_iec_invalidation_reresolves_only_covered_routes() {
        // VT-d 6.5.2.7: an index-selective IEC invalidation drops the entries
        // it covers; the router re-reads exactly those.
        let (r, kvm, rm) = router(true);
        let sink = r.device_sink(DEV);
        sink.raise_msi(remappable(3));
        sink.raise_msi(remappable(9));
        *rm.shift.lock().unwrap() = 0x10;
        r.invalidate(Some((8, 2)));
        sink.raise_msi(remappable(3));
        sink.raise_msi(remappable(9));
        let t = kvm.last_table();
        assert_eq!(t[0].1.data, 0x43, "index 3 not covered: old route");
        assert_eq!(t[1].1.data, 0x59, "index 9 re-resolved");
        r.invalidate(None);
        sink.raise_msi(remappable(3));
        assert_eq!(kvm.last_table()[0].1.data, 0x53);
        assert_eq!(*rm.calls.lock().unwrap(), 4);
    }

    #[test]
    fn router_unchanged_reresolution_does_not_rewrite_the_table() {
        let (r, kvm, _) = router(true);
        let sink = r.device_sink(DEV);
        sink.raise_msi(remappable(1));
        r.invalidate(None);
        sink.raise_msi(remappable(1));
        assert_eq!(kvm.tables.lock().unwrap().len(), 1);
        assert_eq!(kvm.fired(FIRST_MSI_GSI), 2);
    }

    #[test]
    fn router_blocked_interrupt_is_counted_and_retried_on_next_send() {
        // VT-d 5.1.4.1: a fault is recorded per interrupt request.
        let (r, kvm, rm) = router(true);
        rm.faulting.lock().unwrap().push(5);
        let sink = r.device_sink(DEV);
        sink.raise_msi(remappable(5));
        sink.raise_msi(remappable(5));
        assert_eq!(kvm.fired(FIRST_MSI_GSI), 0);
        assert_eq!(
            *rm.calls.lock().unwrap(),
            2,
            "each interrupt asks the IOMMU"
        );
        rm.faulting.lock().unwrap().clear();
        sink.raise_msi(remappable(5));
        assert_eq!(kvm.fired(FIRST_MSI_GSI), 1);
        let c = r.stats().sources[&IrqSource::Pci(DEV.0)];
        assert_eq!((c.blocked, c.remapped), (2, 1));
    }

    #[test]
    fn router_without_remapping_routes_the_message_as_sent() {
        let (r, kvm, _) = router(false);
        let m = MsiMessage {
            addr: 0xfee0_1000,
            data: 0x4031,
        };
        r.device_sink(DEV).raise_msi(m);
        assert_eq!(kvm.last_table(), vec![(FIRST_MSI_GSI, m)]);
        assert_eq!(r.stats().sources[&IrqSource::Pci(DEV.0)].compat, 1);
    }

    #[test]
    fn router_msi_outside_interrupt_range_is_dropped() {
        let (r, kvm, _) = router(false);
        r.device_sink(DEV).raise_msi(MsiMessage {
            addr: 0x1000,
            data: 1,
        });
        assert!(kvm.tables.lock().unwrap().is_empty());
        assert_eq!(r.stats().sources[&IrqSource::Pci(DEV.0)].blocked, 1);
    }

    #[test]
    fn router_unroutable_upper_address_is_blocked_without_touching_the_table() {
        let (r, kvm, _) = router(false);
        let sink = r.device_sink(DEV);
        sink.raise_msi(MsiMessage {
            addr: 0xfee0_0000,
            data: 0x41,
        });
        sink.raise_msi(MsiMessage {
            addr: (0x17u64 << 32) | 0xfee0_0000,
            data: 0x42,
        });
        assert_eq!(kvm.tables.lock().unwrap().len(), 1);
        let c = r.stats().sources[&IrqSource::Pci(DEV.0)];
        assert_eq!((c.compat, c.blocked), (1, 1));
    }

    #[test]
    fn router_reprogrammed_vector_gets_its_own_route_and_routes_are_bounded() {
        let (r, kvm, _) = router(false);
        let sink = r.device_sink(DEV);
        for v in 0..(MAX_MSI_ROUTES as u32 + 10) {
            sink.raise_msi(MsiMessage {
                addr: 0xfee0_0000,
                data: 0x20 + v,
            });
        }
        assert_eq!(r.stats().msi_routes, MAX_MSI_ROUTES);
        assert_eq!(kvm.last_table().len(), MAX_MSI_ROUTES);
        assert_eq!(kvm.fds.lock().unwrap().len(), MAX_MSI_ROUTES);
        let gsis: std::collections::BTreeSet<u32> = kvm.last_table().iter().map(|e| e.0).collect();
        assert_eq!(gsis.len(), MAX_MSI_ROUTES, "one GSI per route");
    }

    #[test]
    fn router_multi_message_msi_vectors_get_one_gsi_each() {
        // PCI 3.0 §6.8.1.3: with 4 messages enabled the vector is in data
        // bits 1:0, so each vector is its own message and its own route.
        use crate::pci::config::{PciConfig, PciId};
        use crate::pci::msi::Msi;
        let (r, kvm, _) = router(false);
        let mut c = PciConfig::new(PciId {
            vendor: 1,
            device: 2,
            revision: 0,
            class: [0; 3],
            subsystem_vendor: 0,
            subsystem: 0,
        });
        let msi = Msi::new(&mut c, 2, false, false);
        let o = msi.cap_offset();
        c.write(o + 4, &0xfee0_0000u32.to_le_bytes());
        c.write(o + 8, &0x4060u16.to_le_bytes());
        c.write(o + 2, &0x21u16.to_le_bytes()); // MME = 4 vectors, enable
        let sink = r.device_sink(DEV);
        for v in 0..4 {
            if let Some(m) = msi.trigger(&mut c, v) {
                sink.raise_msi(m);
            }
        }
        let t = kvm.last_table();
        let data: Vec<u32> = t.iter().map(|e| e.1.data).collect();
        assert_eq!(data, vec![0x4060, 0x4061, 0x4062, 0x4063]);
        let gsis: std::collections::BTreeSet<u32> = t.iter().map(|e| e.0).collect();
        assert_eq!(gsis.len(), 4);
        for g in gsis {
            assert_eq!(kvm.fired(g), 1);
        }
    }

    #[test]
    fn router_pasid_test_device_error_vector_goes_through_remapping() {
        // The PASID test device's MSI-X (entry 8, the error vector) in
        // remappable format (VT-d 5.1.2.2) reaches KVM as the remapped
        // message, from the device's requester ID.
        use crate::devices::pasid::PasidDevice;
        use crate::devices::pasid::atc::Atc;
        use crate::devices::pasid::pci::PasidPci;
        use crate::devices::pasid::regs::MSIX_TABLE;
        use crate::pci::PciDevice;
        use crate::pci::config::{BAR0, COMMAND, COMMAND_BUS_MASTER, COMMAND_MEMORY};
        use iommu_emulator::testing::MapIommu;
        use iommu_emulator::{DeviceAddressSpace, SourceId};
        let (r, kvm, _) = router(true);
        let ram = Arc::new(FakeRam::new(1 << 24));
        let space =
            DeviceAddressSpace::new(Arc::new(MapIommu::new()), ram.clone(), SourceId::Pci(DEV));
        let dev = PasidDevice::new(space, ram, Arc::new(Atc::new(DEV)));
        let mut p = PasidPci::new(dev, r.device_sink(DEV));
        p.config_write(
            COMMAND,
            &(COMMAND_MEMORY | COMMAND_BUS_MASTER).to_le_bytes(),
        );
        p.config_write(BAR0, &0xc000_0000u32.to_le_bytes());
        let cap = (0x40..0x100)
            .find(|&o| {
                let mut b = [0u8; 1];
                p.config_read(o, &mut b);
                b[0] == 0x11
            })
            .unwrap();
        p.config_write(cap + 2, &[0x08, 0x80]);
        let e = MSIX_TABLE + 8 * 16;
        let m = remappable(2);
        p.bar_write(0, e, &(m.addr as u32).to_le_bytes());
        p.bar_write(0, e + 8, &m.data.to_le_bytes());
        p.bar_write(0, e + 12, &0u32.to_le_bytes());
        p.bar_write(0, 0x0c, &1u32.to_le_bytes());
        p.bar_write(0, 0x1010, &3u32.to_le_bytes()); // ring size 3: bad config
        p.bar_write(0, 0x101c, &1u32.to_le_bytes());
        assert_eq!(kvm.last_table()[0].1.data, 0x42, "IRTE 2's vector");
        assert_eq!(kvm.fired(FIRST_MSI_GSI), 1);
        assert_eq!(r.stats().sources[&IrqSource::Pci(DEV.0)].remapped, 1);
    }

    #[test]
    fn router_ioapic_pin_routes_on_its_gsi_and_follows_rte_changes() {
        let (r, kvm, rm) = router(true);
        let rte = (1 << 48) | (6 << 49) | 4; // remappable, index 6
        assert_eq!(r.deliver(4, rte), Some(0x46));
        assert_eq!(*kvm.lines.lock().unwrap(), vec![4]);
        assert_eq!(kvm.last_table()[0].0, 4, "GSI = pin");
        assert_eq!(r.deliver(4, rte), Some(0x46));
        assert_eq!(*rm.calls.lock().unwrap(), 1);
        let rte2 = (1 << 48) | (7 << 49) | 4;
        assert_eq!(r.deliver(4, rte2), Some(0x47), "new entry, new route");
        assert_eq!(r.stats().sources[&IrqSource::IoapicPin(4)].remapped, 3);
    }

    #[test]
    fn router_ioapic_compat_entry_without_remapping_keeps_level_and_dest() {
        let (r, kvm, _) = router(false);
        let rte = (3u64 << 56) | (1 << 15) | (1 << 11) | 0x30;
        assert_eq!(r.deliver(9, rte), Some(0x30));
        let m = kvm.last_table()[0].1;
        assert_eq!(m.addr, 0xfee0_3004);
        assert_eq!(m.data & 0x80ff, 0x8030, "level trigger for KVM's EOI exit");
    }

    #[test]
    fn router_without_irqfd_falls_back_to_signal_msi() {
        let kvm = Arc::new(FakeKvm {
            no_irqfd: true,
            ..FakeKvm::default()
        });
        let r = Arc::new(IrqRouter::new(
            kvm.clone(),
            None,
            Arc::new(FakeRam::new(1 << 20)),
        ));
        let m = MsiMessage {
            addr: 0xfee0_0000,
            data: 0x41,
        };
        r.device_sink(DEV).raise_msi(m);
        assert_eq!(*kvm.signalled.lock().unwrap(), vec![m]);
        assert_eq!(r.stats().fallback, 1);
    }
}
