//! The device logic: registers, work queues, descriptor execution, DMA.

use std::sync::Arc;

use iommu_emulator::{
    DeviceAddressSpace, Fault, Gpa, GuestRam, Pasid, PasidTag, Perm, RequestKind,
};

use super::atc::{Atc, AtcEntry};
use super::desc::{self, Completion, DESC_SIZE, Descriptor, Op, status};
use super::regs::*;

/// What the PCIe configuration space currently enables (the PCI wrapper
/// keeps it in step with guest config writes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PcieState {
    /// Command.Bus Master Enable: without it the device issues no DMA.
    pub bus_master: bool,
    /// PASID Control: PASID Enable (PCIe 6.0 §7.8.8.3).
    pub pasid_enable: bool,
    /// PASID Control: Privileged Mode Enable.
    pub priv_enable: bool,
    /// ATS Control: Enable (§7.8.7.3).
    pub ats_enable: bool,
    /// PRI Control: Enable (§7.8.10.2).
    pub pri_enable: bool,
}

/// A page request the device sends (PCIe §10.4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRequest {
    /// PASID prefix, if the queue tags its DMA.
    pub pasid: Option<PasidTag>,
    /// Page address (4 KiB aligned).
    pub addr: u64,
    /// Read access requested.
    pub read: bool,
    /// Write access requested.
    pub write: bool,
    /// Last request in the group (always: one page per group here).
    pub last: bool,
    /// Page request group index (9 bits).
    pub prg_index: u16,
}

/// Where page requests go (the IOMMU's page request path). Returns false
/// when the request could not be delivered.
pub trait PageRequestPort: Send + Sync {
    /// Send one page request.
    fn page_request(&self, req: &PageRequest) -> bool;
}

/// Interrupt vectors to raise, as a bit mask (bit n = MSI-X vector n).
pub type Vectors = u32;

#[derive(Clone, Copy, Debug, Default)]
struct Waiting {
    prg_index: u16,
    pasid: Option<u32>,
}

#[derive(Clone, Debug, Default)]
struct Wq {
    pasid_reg: u32,
    ring_base: u64,
    ring_size: u32,
    head: u32,
    tail: u32,
    ctl: u32,
    status: u32,
    error: u32,
    fault_addr: u64,
    completed: u32,
    waiting: Option<Waiting>,
}

/// Result of one descriptor.
enum Outcome {
    Done(Completion),
    Fault { addr: u64, access: Perm, bytes: u32 },
    Bad,
}

/// A DMA that did not complete.
#[derive(Clone, Copy, Debug)]
struct DmaFault {
    addr: u64,
    access: Perm,
}

/// Counters for `--stats` and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PasidDeviceStats {
    /// Descriptors completed (any status).
    pub descriptors: u64,
    /// Bytes moved or compared.
    pub bytes: u64,
    /// DMA faults seen.
    pub faults: u64,
    /// ATS translation requests sent.
    pub ats_requests: u64,
    /// ATC hits.
    pub atc_hits: u64,
    /// Page requests sent.
    pub page_requests: u32,
    /// Page responses that matched no waiting queue.
    pub stray_responses: u64,
    /// Register accesses at unknown offsets or sizes.
    pub bad_accesses: u64,
}

/// The PASID-capable DMA test device (registers + work queues), without any
/// PCI or bus glue. DMA goes through `space` (the function's IOMMU view);
/// data moves in `ram` at the addresses the IOMMU returns.
pub struct PasidDevice {
    space: DeviceAddressSpace,
    ram: Arc<dyn GuestRam>,
    atc: Arc<Atc>,
    pri: Option<Arc<dyn PageRequestPort>>,
    pcie: PcieState,
    gctl: u32,
    err_status: u32,
    wqs: Vec<Wq>,
    next_prg: u16,
    stats: PasidDeviceStats,
}

impl std::fmt::Debug for PasidDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasidDevice")
            .field("source", &self.space.source())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn pasid_tag(reg: u32) -> Option<PasidTag> {
    (reg & WQ_PASID_EN != 0).then(|| PasidTag {
        pasid: Pasid::new(reg & WQ_PASID_MASK).unwrap_or_default(),
        privileged: reg & WQ_PASID_PRIV != 0,
        exec: false,
    })
}

fn page_chunk(addr: u64, remaining: u64) -> u64 {
    let to_page_end = 0x1000u64.saturating_sub(addr & 0xfff);
    remaining.min(to_page_end)
}

impl PasidDevice {
    /// A device doing DMA through `space` (the function's view without
    /// PASID; queues derive their PASID views from it).
    pub fn new(space: DeviceAddressSpace, ram: Arc<dyn GuestRam>, atc: Arc<Atc>) -> Self {
        PasidDevice {
            space,
            ram,
            atc,
            pri: None,
            pcie: PcieState::default(),
            gctl: 0,
            err_status: 0,
            wqs: vec![Wq::default(); NUM_WQ],
            next_prg: 0,
            stats: PasidDeviceStats::default(),
        }
    }

    /// Connect the page request path.
    pub fn set_page_request_port(&mut self, port: Arc<dyn PageRequestPort>) {
        self.pri = Some(port);
    }

    /// The ATC (hand it to the IOMMU as the device notifier).
    pub fn atc(&self) -> &Arc<Atc> {
        &self.atc
    }

    /// Update what configuration space enables.
    pub fn set_pcie_state(&mut self, s: PcieState) {
        if self.pcie.ats_enable && !s.ats_enable {
            // PCIe §10.5.1.3: clearing ATS Enable invalidates the ATC.
            self.atc.flush();
        }
        self.pcie = s;
    }

    /// Counters.
    pub fn stats(&self) -> PasidDeviceStats {
        self.stats
    }

    fn wq_index(offset: u64) -> Option<(usize, u64)> {
        let rel = offset.checked_sub(WQ_BASE)?;
        let n = usize::try_from(rel / WQ_STRIDE).ok()?;
        (n < NUM_WQ).then_some((n, rel % WQ_STRIDE))
    }

    /// Guest read of `size` (4 or 8) bytes at `offset` in BAR0 (outside the
    /// MSI-X table). Also delivers page responses that arrived since the
    /// last access, so the returned vectors must be raised.
    pub fn mmio_read(&mut self, offset: u64, size: u8) -> (u64, Vectors) {
        let irqs = self.service();
        let v = match Self::wq_index(offset) {
            Some((n, reg)) => self.wq_read(n, reg, size),
            None => match (offset, size) {
                (VERSION, 4) => Some(u64::from(VERSION_VALUE)),
                (NUM_WQ_REG, 4) => Some(NUM_WQ as u64),
                (CAPS, 4) => Some(u64::from(
                    CAPS_PASID | CAPS_ATS | CAPS_PRI | CAPS_PRIV | CAPS_EXEC,
                )),
                (GCTL, 4) => Some(u64::from(self.gctl & GCTL_ENABLE)),
                (GSTS, 4) => Some(u64::from(self.gctl & GCTL_ENABLE)),
                (ERR_STATUS, 4) => Some(u64::from(self.err_status)),
                (ATC_INVALIDATIONS, 4) => Some(u64::from(self.atc.invalidations())),
                (PAGE_REQUESTS, 4) => Some(u64::from(self.stats.page_requests)),
                (PAGE_RESPONSES, 4) => Some(u64::from(self.atc.responses())),
                _ => None,
            },
        };
        (
            v.unwrap_or_else(|| {
                self.stats.bad_accesses = self.stats.bad_accesses.saturating_add(1);
                0
            }),
            irqs,
        )
    }

    fn wq_read(&self, n: usize, reg: u64, size: u8) -> Option<u64> {
        let q = self.wqs.get(n)?;
        let v = match (reg, size) {
            (WQ_PASID, 4) => u64::from(q.pasid_reg),
            (WQ_RING_BASE, 8) => q.ring_base,
            (WQ_RING_BASE, 4) => q.ring_base & 0xffff_ffff,
            (0x0c, 4) => q.ring_base >> 32,
            (WQ_RING_SIZE, 4) => u64::from(q.ring_size),
            (WQ_HEAD, 4) => u64::from(q.head),
            (WQ_TAIL, 4) => u64::from(q.tail),
            (WQ_CTL, 4) => u64::from(q.ctl & (WQ_CTL_ENABLE | WQ_CTL_USE_PRI)),
            (WQ_STATUS, 4) => u64::from(q.status),
            (WQ_ERROR, 4) => u64::from(q.error),
            (WQ_FAULT_ADDR, 8) => q.fault_addr,
            (WQ_FAULT_ADDR, 4) => q.fault_addr & 0xffff_ffff,
            (0x2c, 4) => q.fault_addr >> 32,
            (WQ_COMPLETED, 4) => u64::from(q.completed),
            _ => return None,
        };
        Some(v)
    }

    /// Guest write. Returns the vectors to raise.
    pub fn mmio_write(&mut self, offset: u64, size: u8, value: u64) -> Vectors {
        let mut irqs = self.service();
        let v32 = (value & 0xffff_ffff) as u32;
        match Self::wq_index(offset) {
            Some((n, reg)) => irqs |= self.wq_write(n, reg, size, value),
            None => match (offset, size) {
                (GCTL, 4) => {
                    if v32 & GCTL_RESET != 0 {
                        self.reset();
                    }
                    self.gctl = v32 & GCTL_ENABLE;
                }
                (ERR_STATUS, 4) => self.err_status &= !v32,
                _ => self.stats.bad_accesses = self.stats.bad_accesses.saturating_add(1),
            },
        }
        irqs
    }

    /// GCTL.RESET / function reset: every queue disabled and cleared, ATC
    /// flushed.
    pub fn reset(&mut self) {
        self.wqs = vec![Wq::default(); NUM_WQ];
        self.err_status = 0;
        self.gctl = 0;
        self.atc.flush();
        let _ = self.atc.take_responses();
    }

    fn wq_write(&mut self, n: usize, reg: u64, size: u8, value: u64) -> Vectors {
        let v32 = (value & 0xffff_ffff) as u32;
        let Some(q) = self.wqs.get_mut(n) else {
            return 0;
        };
        let enabled = q.status & WQ_STS_ENABLED != 0;
        match (reg, size) {
            // Configuration registers are latched only while disabled.
            (WQ_PASID, 4) if !enabled => {
                q.pasid_reg = v32 & (WQ_PASID_MASK | WQ_PASID_PRIV | WQ_PASID_EN)
            }
            (WQ_RING_BASE, 8) if !enabled => q.ring_base = value,
            (WQ_RING_BASE, 4) if !enabled => {
                q.ring_base = (q.ring_base & !0xffff_ffff) | u64::from(v32);
            }
            (0x0c, 4) if !enabled => {
                q.ring_base = (q.ring_base & 0xffff_ffff) | (u64::from(v32) << 32);
            }
            (WQ_RING_SIZE, 4) if !enabled => q.ring_size = v32,
            (WQ_TAIL, 4) => {
                q.tail = v32;
                return self.run(n);
            }
            (WQ_CTL, 4) => return self.ctl_write(n, v32),
            (WQ_PASID | WQ_RING_BASE | 0x0c | WQ_RING_SIZE, 4 | 8) => {
                tracing::debug!("pasid-test: WQ {n} config write while enabled ignored");
                self.stats.bad_accesses = self.stats.bad_accesses.saturating_add(1);
            }
            _ => self.stats.bad_accesses = self.stats.bad_accesses.saturating_add(1),
        }
        0
    }

    fn ctl_write(&mut self, n: usize, v: u32) -> Vectors {
        let pcie = self.pcie;
        let Some(q) = self.wqs.get_mut(n) else {
            return 0;
        };
        let was = q.status & WQ_STS_ENABLED != 0;
        let on = v & WQ_CTL_ENABLE != 0;
        q.ctl = v & (WQ_CTL_ENABLE | WQ_CTL_USE_PRI);
        if !on {
            let keep = (q.pasid_reg, q.ring_base, q.ring_size);
            *q = Wq::default();
            (q.pasid_reg, q.ring_base, q.ring_size) = keep;
            self.err_status &= !(1u32 << n);
            return 0;
        }
        if !was {
            q.head = 0;
            q.tail = 0;
            q.completed = 0;
            q.error = WqError::None as u32;
            q.fault_addr = 0;
            q.waiting = None;
            let size_ok = q.ring_size.is_power_of_two() && q.ring_size <= MAX_RING_SIZE;
            let base_ok = q.ring_base % DESC_SIZE == 0;
            let pasid_ok = q.pasid_reg & WQ_PASID_EN == 0 || pcie.pasid_enable;
            let priv_ok = q.pasid_reg & WQ_PASID_PRIV == 0
                || (q.pasid_reg & WQ_PASID_EN != 0 && pcie.priv_enable);
            if !(size_ok && base_ok && pasid_ok && priv_ok) {
                tracing::info!(
                    "pasid-test: WQ {n} enable refused (size {} base {:#x} pasid {:#x}, PCIe {:?})",
                    q.ring_size,
                    q.ring_base,
                    q.pasid_reg,
                    pcie
                );
                q.ctl &= !WQ_CTL_ENABLE;
                q.status = WQ_STS_ERROR;
                q.error = WqError::BadConfig as u32;
                self.err_status |= 1u32 << n;
                return 1 << ERROR_VECTOR;
            }
            q.status = WQ_STS_ENABLED;
            return 0;
        }
        if v & WQ_CTL_RESTART != 0 && q.status & WQ_STS_ERROR != 0 {
            q.status &= !(WQ_STS_ERROR | WQ_STS_WAITING);
            q.waiting = None;
            q.error = WqError::None as u32;
            self.err_status &= !(1u32 << n);
            return self.run(n);
        }
        0
    }

    /// Deliver page responses that have arrived: a waiting queue resumes on
    /// success, stops with PAGE_REQUEST_FAILED otherwise (PCIe §10.4.2.1).
    pub fn service(&mut self) -> Vectors {
        let mut irqs = 0;
        for r in self.atc.take_responses() {
            let hit = self.wqs.iter().position(|q| {
                q.waiting
                    .is_some_and(|w| w.prg_index == r.prg_index && w.pasid == r.pasid)
            });
            let Some(n) = hit else {
                self.stats.stray_responses = self.stats.stray_responses.saturating_add(1);
                tracing::debug!("pasid-test: page response {r:?} matches no waiting queue");
                continue;
            };
            if let Some(q) = self.wqs.get_mut(n) {
                q.waiting = None;
                q.status &= !WQ_STS_WAITING;
            }
            if r.code == 0 {
                irqs |= self.run(n);
            } else {
                irqs |= self.fail_current(
                    n,
                    status::PAGE_REQUEST_FAILED,
                    WqError::PageResponseFailure,
                    None,
                );
            }
        }
        irqs
    }

    fn view(&self, n: usize) -> DeviceAddressSpace {
        let reg = self.wqs.get(n).map_or(0, |q| q.pasid_reg);
        self.space.with_pasid(pasid_tag(reg))
    }

    /// Execute descriptors of queue `n` from HEAD to TAIL.
    fn run(&mut self, n: usize) -> Vectors {
        let mut irqs: Vectors = 0;
        let mut budget = DOORBELL_BYTE_BUDGET;
        let view = self.view(n);
        for _ in 0..MAX_RING_SIZE {
            let Some(q) = self.wqs.get(n) else {
                return irqs;
            };
            if self.gctl & GCTL_ENABLE == 0
                || !self.pcie.bus_master
                || q.status != WQ_STS_ENABLED
                || q.head == q.tail
                || budget == 0
            {
                return irqs;
            }
            if q.tail >= q.ring_size {
                return irqs | self.stop(n, WqError::BadConfig, 0);
            }
            let slot = q
                .ring_base
                .wrapping_add(u64::from(q.head).wrapping_mul(DESC_SIZE));
            let mut raw = [0u8; 64];
            if let Err(f) = self.dma_read(&view, slot, &mut raw) {
                return irqs | self.stop(n, WqError::RingReadFault, f.addr);
            }
            let outcome = match Descriptor::decode(&raw) {
                Ok(d) => {
                    budget = budget.saturating_sub(u64::from(d.len));
                    let o = self.execute(n, &view, &d);
                    (o, d.completion, d.flags)
                }
                Err(completion) => (Outcome::Bad, completion, 0),
            };
            irqs |= self.finish(n, &view, outcome);
        }
        irqs
    }

    /// Record the outcome of the descriptor at HEAD.
    fn finish(&mut self, n: usize, view: &DeviceAddressSpace, o: (Outcome, u64, u8)) -> Vectors {
        let (outcome, completion, flags) = o;
        match outcome {
            Outcome::Done(c) => {
                if completion != 0 && self.dma_write(view, completion, &c.encode()).is_err() {
                    return self.stop(n, WqError::CompletionWriteFault, completion);
                }
                self.stats.descriptors = self.stats.descriptors.saturating_add(1);
                self.stats.bytes = self.stats.bytes.saturating_add(u64::from(c.bytes));
                if let Some(q) = self.wqs.get_mut(n) {
                    q.head = q.head.wrapping_add(1) & q.ring_size.wrapping_sub(1);
                    q.completed = q.completed.wrapping_add(1);
                }
                if flags & desc::FLAG_IRQ != 0 {
                    1 << n
                } else {
                    0
                }
            }
            Outcome::Bad => {
                let c = Completion {
                    status: status::BAD_DESCRIPTOR,
                    ..Completion::default()
                };
                if completion != 0 && completion.is_multiple_of(32) {
                    let _ = self.dma_write(view, completion, &c.encode());
                }
                self.stop(n, WqError::BadDescriptor, 0)
            }
            Outcome::Fault {
                addr,
                access,
                bytes,
            } => {
                self.stats.faults = self.stats.faults.saturating_add(1);
                let use_pri = self.wqs.get(n).is_some_and(|q| q.ctl & WQ_CTL_USE_PRI != 0);
                if use_pri && self.pcie.pri_enable {
                    return self.page_request(n, view, addr, access, completion);
                }
                let c = Completion {
                    status: status::TRANSLATION_FAULT,
                    bytes,
                    fault_addr: addr,
                    result: 0,
                };
                if completion != 0 {
                    let _ = self.dma_write(view, completion, &c.encode());
                }
                self.stop(n, WqError::TranslationFault, addr)
            }
        }
    }

    fn page_request(
        &mut self,
        n: usize,
        view: &DeviceAddressSpace,
        addr: u64,
        access: Perm,
        completion: u64,
    ) -> Vectors {
        let prg_index = self.next_prg;
        self.next_prg = self.next_prg.wrapping_add(1) & 0x1ff;
        let req = PageRequest {
            pasid: view.pasid(),
            addr: addr & !0xfff,
            read: access.contains(Perm::R),
            write: access.contains(Perm::W),
            last: true,
            prg_index,
        };
        let sent = self.pri.as_ref().is_some_and(|p| p.page_request(&req));
        if !sent {
            tracing::info!("pasid-test: WQ {n} page request for {addr:#x} could not be sent");
            let c = Completion {
                status: status::PAGE_REQUEST_FAILED,
                fault_addr: addr,
                ..Completion::default()
            };
            if completion != 0 {
                let _ = self.dma_write(view, completion, &c.encode());
            }
            return self.stop(n, WqError::PageResponseFailure, addr);
        }
        self.stats.page_requests = self.stats.page_requests.wrapping_add(1);
        if let Some(q) = self.wqs.get_mut(n) {
            q.status |= WQ_STS_WAITING;
            q.fault_addr = addr;
            q.waiting = Some(Waiting {
                prg_index,
                pasid: req.pasid.map(|t| t.pasid.get()),
            });
        }
        0
    }

    /// Stop the descriptor at HEAD after a failed page request.
    fn fail_current(&mut self, n: usize, st: u8, err: WqError, _c: Option<u64>) -> Vectors {
        let view = self.view(n);
        let addr = self.wqs.get(n).map_or(0, |q| q.fault_addr);
        if let Some(q) = self.wqs.get(n) {
            let slot = q
                .ring_base
                .wrapping_add(u64::from(q.head).wrapping_mul(DESC_SIZE));
            let mut raw = [0u8; 64];
            if self.dma_read(&view, slot, &mut raw).is_ok()
                && let Ok(d) = Descriptor::decode(&raw)
                && d.completion != 0
            {
                let c = Completion {
                    status: st,
                    fault_addr: addr,
                    ..Completion::default()
                };
                let _ = self.dma_write(&view, d.completion, &c.encode());
            }
        }
        self.stop(n, err, addr)
    }

    /// Stop queue `n` with `err`: WQ_STATUS.ERROR, WQ_ERROR, WQ_FAULT_ADDR,
    /// ERR_STATUS bit n, error vector.
    fn stop(&mut self, n: usize, err: WqError, addr: u64) -> Vectors {
        tracing::info!("pasid-test: WQ {n} stopped: {err:?} at {addr:#x}");
        if let Some(q) = self.wqs.get_mut(n) {
            q.status |= WQ_STS_ERROR;
            q.error = err as u32;
            q.fault_addr = addr;
        }
        self.err_status |= 1u32 << n;
        1 << ERROR_VECTOR
    }

    fn execute(&mut self, n: usize, view: &DeviceAddressSpace, d: &Descriptor) -> Outcome {
        let len = u64::from(d.len);
        let fault = |f: DmaFault, done: u64| Outcome::Fault {
            addr: f.addr,
            access: f.access,
            bytes: u32::try_from(done).unwrap_or(u32::MAX),
        };
        let ok = |result| {
            Outcome::Done(Completion {
                status: status::SUCCESS,
                bytes: d.len,
                fault_addr: 0,
                result,
            })
        };
        match d.op {
            Op::Nop => ok(0),
            Op::Copy | Op::Fill | Op::Compare => {
                let mut done = 0u64;
                let mut a = [0u8; 4096];
                let mut b = [0u8; 4096];
                let pattern = d.pattern.to_le_bytes();
                while done < len {
                    let src = d.src.wrapping_add(done);
                    let dst = d.dst.wrapping_add(done);
                    let mut chunk = page_chunk(dst, len.saturating_sub(done));
                    if d.op != Op::Fill {
                        chunk = page_chunk(src, chunk);
                    }
                    let c = usize::try_from(chunk).unwrap_or(0).min(4096);
                    let (Some(abuf), Some(bbuf)) = (a.get_mut(..c), b.get_mut(..c)) else {
                        return Outcome::Bad;
                    };
                    match d.op {
                        Op::Copy => {
                            if let Err(f) = self.dma_read(view, src, abuf) {
                                return fault(f, done);
                            }
                            if let Err(f) = self.dma_write(view, dst, abuf) {
                                return fault(f, done);
                            }
                        }
                        Op::Fill => {
                            for (i, x) in abuf.iter_mut().enumerate() {
                                let k =
                                    usize::try_from(done.wrapping_add(i as u64) % 8).unwrap_or(0);
                                *x = pattern.get(k).copied().unwrap_or(0);
                            }
                            if let Err(f) = self.dma_write(view, dst, abuf) {
                                return fault(f, done);
                            }
                        }
                        _ => {
                            if let Err(f) = self.dma_read(view, src, abuf) {
                                return fault(f, done);
                            }
                            if let Err(f) = self.dma_read(view, dst, bbuf) {
                                return fault(f, done);
                            }
                            if let Some(i) = abuf.iter().zip(bbuf.iter()).position(|(x, y)| x != y)
                            {
                                let off = done.wrapping_add(i as u64);
                                return Outcome::Done(Completion {
                                    status: status::COMPARE_MISMATCH,
                                    bytes: u32::try_from(off).unwrap_or(u32::MAX),
                                    fault_addr: 0,
                                    result: off,
                                });
                            }
                        }
                    }
                    done = done.wrapping_add(chunk);
                    if chunk == 0 {
                        return Outcome::Bad;
                    }
                }
                ok(0)
            }
            Op::TranslateAccess => self.translate_access(n, view, d),
        }
    }

    /// TRANSLATE_ACCESS: ATC lookup, ATS translation request on a miss (PCIe
    /// §10.2.2), then a translated (AT=10b) 8-byte access at the result.
    fn translate_access(
        &mut self,
        _n: usize,
        view: &DeviceAddressSpace,
        d: &Descriptor,
    ) -> Outcome {
        if !self.pcie.ats_enable {
            return Outcome::Bad;
        }
        let write = d.flags & desc::FLAG_WRITE != 0;
        let access = if write { Perm::W } else { Perm::R };
        let pasid = view.pasid().map(|t| t.pasid.get());
        let entry = match self.atc.lookup(pasid, d.src, access) {
            Some(e) => {
                self.stats.atc_hits = self.stats.atc_hits.saturating_add(1);
                e
            }
            None => {
                self.stats.ats_requests = self.stats.ats_requests.saturating_add(1);
                let t = match view.translate_one(d.src, 8, access, RequestKind::AtsTranslation) {
                    Ok(t) => t,
                    Err(f) => return Self::fault_outcome(&f, access),
                };
                let size = t.page_size.bytes();
                let e = AtcEntry {
                    pasid,
                    iova: d.src & !(size.wrapping_sub(1)),
                    size,
                    output: t.page_base(),
                    perm: t.perm,
                };
                self.atc.insert(e);
                e
            }
        };
        let out = entry.output.wrapping_add(d.src.wrapping_sub(entry.iova));
        if let Err(f) = view.translate_one(out, 8, access, RequestKind::Translated) {
            return Self::fault_outcome(&f, access);
        }
        let mut buf = d.pattern.to_le_bytes();
        let gpa = Gpa(out);
        if write {
            if self.ram.write(gpa, &buf).is_err() {
                return Outcome::Fault {
                    addr: d.src,
                    access,
                    bytes: 0,
                };
            }
        } else {
            if self.ram.read(gpa, &mut buf).is_err() {
                return Outcome::Fault {
                    addr: d.src,
                    access,
                    bytes: 0,
                };
            }
            if d.dst != 0
                && let Err(f) = self.dma_write(view, d.dst, &buf)
            {
                return Outcome::Fault {
                    addr: f.addr,
                    access: f.access,
                    bytes: 0,
                };
            }
        }
        Outcome::Done(Completion {
            status: status::SUCCESS,
            bytes: 8,
            fault_addr: 0,
            result: out,
        })
    }

    fn fault_outcome(f: &Fault, access: Perm) -> Outcome {
        Outcome::Fault {
            addr: f.addr.0,
            access,
            bytes: 0,
        }
    }

    /// Untranslated DMA read of `buf.len()` bytes at `iova`, page by page.
    fn dma_read(
        &self,
        view: &DeviceAddressSpace,
        iova: u64,
        buf: &mut [u8],
    ) -> Result<(), DmaFault> {
        self.dma(view, iova, buf.len(), Perm::R, |ram, gpa, off, c| {
            let s = buf.get_mut(off..off.saturating_add(c)).ok_or(())?;
            ram.read(gpa, s).map_err(|_| ())
        })
    }

    /// Untranslated DMA write of `data` at `iova`.
    fn dma_write(&self, view: &DeviceAddressSpace, iova: u64, data: &[u8]) -> Result<(), DmaFault> {
        self.dma(view, iova, data.len(), Perm::W, |ram, gpa, off, c| {
            let s = data.get(off..off.saturating_add(c)).ok_or(())?;
            ram.write(gpa, s).map_err(|_| ())
        })
    }

    fn dma(
        &self,
        view: &DeviceAddressSpace,
        iova: u64,
        len: usize,
        access: Perm,
        mut f: impl FnMut(&dyn GuestRam, Gpa, usize, usize) -> Result<(), ()>,
    ) -> Result<(), DmaFault> {
        let mut off = 0usize;
        while off < len {
            let addr = iova.wrapping_add(off as u64);
            let fault = DmaFault { addr, access };
            let chunk = page_chunk(addr, (len.saturating_sub(off)) as u64);
            let c = usize::try_from(chunk).map_err(|_| fault)?;
            let len32 = u32::try_from(chunk).map_err(|_| fault)?;
            let t = view
                .translate_one(addr, len32, access, RequestKind::Untranslated)
                .map_err(|e| {
                    tracing::debug!(
                        "pasid-test: DMA {access:?} {addr:#x} pasid {:?}: {e}",
                        view.pasid()
                    );
                    fault
                })?;
            // A translation holds for its whole page: the data is at the page's output base
            // plus this address's offset in the page (some translators, `NoIommu` among
            // them, answer with the page base alone).
            let in_page = addr & t.page_size.bytes().wrapping_sub(1);
            let gpa = Gpa(t.page_base().wrapping_add(in_page));
            f(self.ram.as_ref(), gpa, off, c).map_err(|()| fault)?;
            if c == 0 {
                return Err(fault);
            }
            off = off.saturating_add(c);
        }
        Ok(())
    }
}
