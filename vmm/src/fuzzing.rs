//! The device-layer fuzzer's interpreter: a whole x86 machine without KVM, driven by an input
//! decoded into a sequence of guest actions, with invariants checked after each step.
//!
//! The machine is the one `iommu-vmm` builds, through [`DeviceManager`] over a [`NullBackend`]:
//! the VT-d model (properties chosen by the input's first byte: legacy or scalable mode,
//! interrupt remapping, device-TLB, page requests, caching mode, address width), two virtio-blk
//! disks on memfds (the first read-only), the PASID test device, the IOAPIC, COM1 (printing to
//! a sink), the i8042, ACPI PM and test-exit ports, and PCI configuration through CF8/CFC and
//! ECAM. Everything runs synchronously inside the access that starts it (a virtio notify write
//! runs the queue through `VirtioPci::bar_write`, a PASID work-queue doorbell runs the queue,
//! a VT-d IQT write runs the invalidation queue), so a "tick" is a register read that lets the
//! PASID device take page responses.
//!
//! Input: byte 0 selects the configuration ([`config_props`]); then each step is an opcode
//! byte and its operands ([`Op`] lists them): port and MMIO reads and writes of any size at
//! chosen regions (ECAM, each BAR's virtio common/ISR/device/notify/MSI-X table/PBA ranges,
//! the PASID device's registers and MSI-X, the IOAPIC and VT-d windows, or any address),
//! raw guest-memory writes, and structured writes that make coverage go deep: a virtio
//! driver bring-up and well-formed block requests, VT-d root/context/PASID entries, page-table
//! words, invalidation descriptors and interrupt remapping entries, a VT-d bring-up, MSI-X
//! entries, and PASID device work queues and descriptors. Used by `vmm/fuzz` (target
//! `devices`) and by `vmm/tests/fuzz_regressions.rs`, which replays every input the fuzzer
//! found.
//!
//! Invariants after every step ([`Violation`] names each): no panic (the fuzzer catches
//! those), a step ends within [`STEP_TIME_LIMIT`] (every guest-driven loop is bounded; a
//! deadlock or unbounded loop shows as libFuzzer's timeout), every MSI the machine injects
//! (routes given to the hypervisor and the IOMMU's own direct messages) is addressed to the
//! interrupt range 0xFEEx_xxxx, the VT-d Primary Pending Fault bit agrees with the fault
//! recording registers (VT-d 10.4.9, 10.4.14), each virtqueue's used index is never ahead of
//! its avail index nor behind it by more than the queue size, and the transports' fault
//! counters only grow. Guest RAM is a `GuestMemoryMmap`, so no device can reach outside it:
//! an access there fails and the device reports it to the guest.
//!
//! Test tooling, not device code: the arithmetic here is on the fuzzer's own small constants.
//!
//! Test tooling, not guest-facing code: the arithmetic, indexing and casts here are on the
//! fuzzer's own small constants and decoded operands, so the crate's no-panic lints are
//! relaxed for this module (a panic here is a finding in the harness, caught by the fuzzer).
#![allow(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::arch::x86_64::{layout, platform};
use crate::cli::IommuSpec;
use crate::device_manager::{DeviceManager, Machine, NullBackend};
use crate::devices::pasid::regs as pasid_regs;
use crate::exit::{ExitControl, ExitSink};
use crate::pci::CF8_ENABLE;
use crate::pci::config::{CAPABILITIES_POINTER, COMMAND, COMMAND_BUS_MASTER, COMMAND_MEMORY};
use crate::virtio::pci::{
    BAR_SIZE, COMMON_OFFSET, DEVICE_OFFSET, ISR_OFFSET, MSIX_PBA_OFFSET, MSIX_TABLE_OFFSET,
    NOTIFY_OFFSET, VirtioPci,
};
use crate::virtio::status;
use vtd_model::regs as vtd_regs;

/// Guest RAM of a fuzzed machine: small, so that guessed pointers land in it.
pub const RAM: u64 = 4 << 20;
/// Size of each virtio-blk disk (128 sectors).
pub const DISK_SIZE: u64 = 64 << 10;
/// Most steps one input runs.
pub const MAX_STEPS: usize = 512;
/// Wall-clock bound for one step. Every step is bounded by queue sizes and budgets (a virtio
/// notify pass: queue-size chains over a 64 KiB disk; a PASID doorbell: 64 MiB; an IQT write:
/// the invalidation queue); this is generous enough for a sanitizer build on a loaded machine.
pub const STEP_TIME_LIMIT: Duration = Duration::from_secs(5);

/// Where the harness's structured writes put guest structures (guest-physical).
pub mod addrs {
    /// VT-d root table.
    pub const ROOT: u64 = 0x1_0000;
    /// Context table of bus 0 (scalable mode: lower half here, upper half at +0x1000).
    pub const CONTEXT: u64 = 0x1_1000;
    /// PASID directory.
    pub const PASID_DIR: u64 = 0x1_3000;
    /// PASID table.
    pub const PASID_TABLE: u64 = 0x1_4000;
    /// Page-table pages: [`PT_PAGES`] pages from here.
    pub const PT: u64 = 0x2_0000;
    /// Number of page-table pages.
    pub const PT_PAGES: u64 = 16;
    /// VT-d invalidation queue (one 4 KiB page, 256 descriptors).
    pub const IQ: u64 = 0x3_0000;
    /// VT-d page request queue.
    pub const PRQ: u64 = 0x3_1000;
    /// VT-d interrupt remapping table (256 entries).
    pub const IRT: u64 = 0x3_2000;
    /// Invalidation wait status words.
    pub const INV_STATUS: u64 = 0x3_3000;
    /// Virtio disk `d`'s rings: descriptor table at `VQ + d * VQ_STRIDE`, avail ring at +0x1000,
    /// used ring at +0x2000, request headers at +0x4000, status bytes at +0x6000, data at
    /// +0x8000.
    pub const VQ: u64 = 0x4_0000;
    /// Stride between the disks' ring areas.
    pub const VQ_STRIDE: u64 = 0x2_0000;
    /// PASID device work queue `n`'s descriptor ring: `WQ_RING + n * 0x1000`.
    pub const WQ_RING: u64 = 0x8_0000;
    /// PASID device completion records (32 bytes each).
    pub const WQ_COMPLETION: u64 = 0x9_0000;
    /// Data buffers (DMA sources and destinations): 256 KiB from here.
    pub const DATA: u64 = 0xa_0000;
}

/// The VT-d properties of a configuration byte: bit 0 scalable mode, bit 1 interrupt
/// remapping, bit 2 device-TLB, bit 3 page requests (scalable only), bit 4 caching mode,
/// bits 5-6 address width (39, 48, 57, 48), bit 7 one fault recording register.
pub fn config_props(sel: u8) -> String {
    let on = |b: u8| if sel & (1 << b) != 0 { "on" } else { "off" };
    let scalable = sel & 1 != 0;
    let mut p = format!(
        "x-scalable-mode={},intremap={},device-iotlb={},caching-mode={},aw-bits={}",
        on(0),
        on(1),
        on(2),
        on(4),
        [39, 48, 57, 48][usize::from((sel >> 5) & 3)]
    );
    if scalable {
        p.push_str(&format!(",x-prs={}", on(3)));
    }
    if sel & 0x80 != 0 {
        p.push_str(",fault-regs=1");
    }
    p
}

/// An invariant the machine broke; the fuzzer turns it into a crash (a panic).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// A step took longer than [`STEP_TIME_LIMIT`].
    SlowStep {
        /// Step index.
        step: usize,
        /// Opcode.
        op: u8,
        /// How long it took.
        elapsed: Duration,
    },
    /// The hypervisor was given an MSI route or a direct MSI outside 0xFEEx_xxxx.
    MsiOutsideInterruptRange {
        /// Message address.
        addr: u64,
        /// Message data.
        data: u32,
        /// Whether it was a direct (IOMMU) message rather than a route.
        direct: bool,
    },
    /// FSTS.PPF disagrees with the F bits of the fault recording registers.
    PendingFaultMismatch {
        /// FSTS.
        fsts: u64,
        /// Fault records with F set.
        records: usize,
    },
    /// A virtqueue's used index is ahead of its avail index or behind by more than its size.
    UsedAheadOfAvail {
        /// Disk.
        disk: usize,
        /// Queue size.
        size: u16,
        /// Next avail index.
        next_avail: u16,
        /// Next used index.
        next_used: u16,
    },
    /// A transport fault counter went down.
    FaultCounterDecreased {
        /// Disk.
        disk: usize,
    },
    /// The machine could not be built (host resources: memfd, mmap, eventfds). Not the
    /// input's doing, but a run that silently tests nothing must not pass: e.g. descriptors
    /// leaked by earlier runs.
    Setup(String),
}

/// What an input reached, for tests that check a seed does what it says.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    /// Steps executed.
    pub steps: usize,
    /// Per disk: used entries the device published on queue 0 (its used index).
    pub virtio_used: Vec<u16>,
    /// Per disk: its device status register.
    pub virtio_status: Vec<u8>,
    /// Per disk: the transport's counted driver errors (invalid avail index, stalled passes).
    pub virtio_faults: Vec<(u64, u64)>,
    /// VT-d FSTS at the end.
    pub vtd_fsts: u64,
    /// VT-d fault records with F set at the end.
    pub vtd_fault_records: usize,
    /// VT-d GSTS at the end.
    pub vtd_gsts: u64,
    /// Direct MSIs (the IOMMU's own) the backend received.
    pub direct_msis: usize,
    /// MSI routes in the last routing table.
    pub msi_routes: usize,
    /// PASID device: WQ_COMPLETED of each work queue (read through BAR0 where the VMM put it).
    pub pasid_completed: Vec<u32>,
    /// PASID device: WQ_STATUS of each work queue.
    pub pasid_status: Vec<u32>,
    /// The statistics report of the machine (`--stats`).
    pub stats: String,
}

/// A fuzzed machine: the wired devices and what the harness watches.
pub struct FuzzMachine {
    machine: Machine,
    backend: Arc<NullBackend>,
    mem: GuestMemoryMmap,
    disks: Vec<Arc<Mutex<VirtioPci>>>,
    scalable: bool,
    last_faults: Vec<(u64, u64)>,
    /// Next slot the structured virtio request helper uses, per disk.
    next_desc: [u16; 2],
}

/// Devfns the device manager gives the functions: host bridge, disk 0, disk 1, PASID device.
pub const DEVFNS: [u8; 4] = [0, 1 << 3, 2 << 3, 3 << 3];
/// Where the device manager puts the PASID device's BAR0.
pub const PASID_BAR: u64 =
    layout::PCI_MMIO_START + crate::devices::pasid::pci::BAR0_OFFSET_IN_WINDOW;

/// Where the device manager puts disk `d`'s BAR0.
pub fn disk_bar(d: usize) -> u64 {
    layout::PCI_MMIO_START + (d as u64) * BAR_SIZE
}

/// MMIO regions an access may target: (base, length). Offsets are taken modulo the length.
fn regions() -> [(u64, u64); 20] {
    let v = |d: usize, off: u64, len: u64| (disk_bar(d) + off, len);
    [
        (layout::ECAM_START, 0x4000),
        v(0, COMMON_OFFSET, 0x38),
        v(0, ISR_OFFSET, 4),
        v(0, DEVICE_OFFSET, 0x40),
        v(0, NOTIFY_OFFSET, 8),
        v(0, MSIX_TABLE_OFFSET, 0x30),
        v(0, MSIX_PBA_OFFSET, 8),
        v(1, COMMON_OFFSET, 0x38),
        v(1, ISR_OFFSET, 4),
        v(1, DEVICE_OFFSET, 0x40),
        v(1, NOTIFY_OFFSET, 8),
        v(1, MSIX_TABLE_OFFSET, 0x30),
        (PASID_BAR, 0x40),
        (PASID_BAR + pasid_regs::WQ_BASE, 8 * pasid_regs::WQ_STRIDE),
        (PASID_BAR + pasid_regs::MSIX_TABLE, 9 * 16),
        (PASID_BAR + pasid_regs::MSIX_PBA, 8),
        (layout::IOAPIC_START, 0x50),
        (layout::VTD_START, 0x1000),
        (layout::PCI_MMIO_START, 0x1000_0000),
        (layout::ECAM_START, 0x10_0000),
    ]
}

/// Ports a port access may target (CF8/CFC, COM1, i8042, ACPI PM, test exit, unmapped).
const PORTS: [u16; 16] = [
    0xcf8, 0xcf9, 0xcfc, 0xcfd, 0xcfe, 0xcff, 0x3f8, 0x3f9, 0x3fb, 0x3fd, 0x60, 0x64, 0x600, 0x604,
    0xf4, 0x80,
];

/// The steps an input decodes into (the opcode byte modulo the number of kinds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    /// `port:u8 size:u8` port read (port from [`PORTS`], size 1/2/4).
    PioRead = 0,
    /// `port:u8 size:u8 value:u32` port write.
    PioWrite,
    /// `addr:u32` CF8 write with the enable bit set (then use CFC ports).
    Cf8,
    /// `region:u8 offset:u32 size:u8` MMIO read (size 1..=8).
    MmioRead,
    /// `region:u8 offset:u32 size:u8 value:u64` MMIO write.
    MmioWrite,
    /// `addr:u32 len:u8 bytes` raw guest-memory write.
    MemWrite,
    /// `addr:u32 value:u64` guest-memory u64 write.
    MemWrite64,
    /// `fn:u8` enable memory decoding and bus mastering, and MSI-X, of a function.
    PciEnable,
    /// `disk:u8 features:u32 size:u16` virtio driver bring-up of a disk.
    VirtioInit,
    /// `disk:u8 type:u8 sector:u16 len:u16 flags:u8` a block request, published and notified.
    VirtioRequest,
    /// `disk:u8 bump:u16` avail index moved by `bump` (0: +1) and a notify.
    VirtioKick,
    /// `fn:u8 vector:u8 addr:u32 data:u32` an MSI-X table entry, unmasked.
    MsixEntry,
    /// `flags:u8` VT-d bring-up: root table, queued invalidation, interrupt remapping,
    /// page request queue, fault event address, translation.
    VtdEnable,
    /// `bus:u8 lo:u16 hi:u16` a root entry pointing at the context table.
    VtdRoot,
    /// `devfn:u8 lo:u16 hi:u32 ptr:u8` a context entry.
    VtdContext,
    /// `index:u16 w0:u16 w1:u32 w2:u16 ptr:u8` a PASID directory and table entry.
    VtdPasid,
    /// `page:u8 index:u16 flags:u16 target:u8` a page-table word.
    VtdPte,
    /// `lo:u64 hi:u64` an invalidation descriptor, queued (IQT moved past it).
    VtdQi,
    /// `index:u8 lo:u64 hi:u32` an interrupt remapping entry.
    VtdIrte,
    /// `reg:u8 value:u64` a VT-d register write (8 bytes, offset from a list).
    VtdReg,
    /// `caps:u8` PASID device: PCIe PASID/ATS/PRI enables and GCTL.ENABLE.
    PasidCaps,
    /// `wq:u8 pasid:u32 size:u8 ctl:u8` PASID device: a work queue configured and enabled.
    PasidWq,
    /// `wq:u8 slot:u8 opcode:u8 flags:u8 len:u32 src:u16 dst:u16 pattern:u64 kick:u8` a
    /// descriptor in a work queue's ring, then the doorbell.
    PasidDesc,
    /// `pin:u8 rte:u64` an IOAPIC redirection entry.
    IoapicRte,
    /// A tick: read every work queue's status (the PASID device takes page responses).
    Tick,
    /// (Opcode bytes 0xf0..=0xfe.) `type:u8 mask:u8 lo:u64 hi:u64` a typed invalidation
    /// descriptor (context, IOTLB, device-TLB, IEC, wait, PASID-IOTLB, PASID-cache, PASID
    /// device-TLB, page group response) with sparse or full operand bits, queued.
    VtdQiTyped,
    /// (Opcode bytes 0xf0..=0xfe.) Like [`Op::VirtioRequest`], the chain behind one indirect
    /// descriptor (Virtio 1.2 §2.7.5.3).
    VirtioIndirect,
}

const OPS: [Op; 25] = [
    Op::PioRead,
    Op::PioWrite,
    Op::Cf8,
    Op::MmioRead,
    Op::MmioWrite,
    Op::MemWrite,
    Op::MemWrite64,
    Op::PciEnable,
    Op::VirtioInit,
    Op::VirtioRequest,
    Op::VirtioKick,
    Op::MsixEntry,
    Op::VtdEnable,
    Op::VtdRoot,
    Op::VtdContext,
    Op::VtdPasid,
    Op::VtdPte,
    Op::VtdQi,
    Op::VtdIrte,
    Op::VtdReg,
    Op::PasidCaps,
    Op::PasidWq,
    Op::PasidDesc,
    Op::IoapicRte,
    Op::Tick,
];

/// Steps of opcode bytes 0xf0..=0xfe (added later: the bytes below keep the meaning saved
/// inputs were found with).
const EXT_OPS: [Op; 2] = [Op::VtdQiTyped, Op::VirtioIndirect];

/// The opcode byte of `op` (the first one that decodes to it).
pub fn opcode(op: Op) -> u8 {
    match EXT_OPS.iter().position(|&e| e == op) {
        Some(i) => 0xf0 + i as u8,
        None => op as u8,
    }
}

fn decode_op(b: u8) -> Op {
    match b {
        0xf0..=0xfe => EXT_OPS[usize::from(b - 0xf0) % EXT_OPS.len()],
        _ => OPS[usize::from(b) % OPS.len()],
    }
}

/// VT-d registers [`Op::VtdReg`] writes.
const VTD_REGS: [u64; 20] = [
    vtd_regs::GCMD,
    vtd_regs::RTADDR,
    vtd_regs::CCMD,
    vtd_regs::FSTS,
    vtd_regs::FECTL,
    vtd_regs::FEDATA,
    vtd_regs::FEADDR,
    vtd_regs::IQT,
    vtd_regs::IQA,
    vtd_regs::ICS,
    vtd_regs::IECTL,
    vtd_regs::IEADDR,
    vtd_regs::IRTA,
    vtd_regs::PQH,
    vtd_regs::PQA,
    vtd_regs::PRS,
    vtd_regs::PECTL,
    vtd_regs::PEADDR,
    vtd_regs::IOTLB,
    vtd_regs::FRO + 8,
];

use iommu_emulator::fuzz::ByteCursor as Cursor;

/// A table pointer chosen by `sel`: one of the harness's structures or data pages.
fn table_ptr(sel: u8) -> u64 {
    match sel % 24 {
        0 => addrs::ROOT,
        1 => addrs::CONTEXT,
        2 => addrs::PASID_DIR,
        3 => addrs::PASID_TABLE,
        4 => addrs::IQ,
        5 => RAM,
        6 => RAM - 0x1000,
        7 => addrs::DATA,
        n => addrs::PT + (u64::from(n) - 8) * 0x1000,
    }
}

impl FuzzMachine {
    /// Builds the machine for configuration byte `sel` ([`config_props`]).
    pub fn new(sel: u8) -> crate::error::Result<Self> {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), RAM as usize)])
            .map_err(|e| crate::error::Error::Setup(format!("guest memory: {e}")))?;
        let backend = Arc::new(NullBackend::default());
        let mut dm = DeviceManager::new(
            Arc::new(backend.clone()),
            mem.clone(),
            platform::PCI_WINDOWS,
            &IommuSpec::IntelIommu {
                props: config_props(sel),
            },
            None,
        )?;
        let exit: Arc<dyn ExitSink> = Arc::new(ExitControl::new(Box::new(|| {})));
        platform::add_devices_with_console(&mut dm, &exit, std::io::sink())?;
        let io = |source| crate::error::Error::Io {
            what: "creating a fuzz disk".into(),
            source,
        };
        let mut disks = Vec::new();
        for readonly in [true, false] {
            let content: Vec<u8> = (0..DISK_SIZE).map(|i| (i / 512) as u8).collect();
            let f = crate::vmm::memfd_with(&content).map_err(io)?;
            disks.push(dm.add_virtio_blk(f, readonly)?);
        }
        dm.add_pasid_test()?;
        let machine = dm.seal(platform::add_pci_ports)?;
        let n = disks.len();
        Ok(FuzzMachine {
            machine,
            backend,
            mem,
            disks,
            scalable: sel & 1 != 0,
            last_faults: vec![(0, 0); n],
            next_desc: [0; 2],
        })
    }

    /// The wired machine (buses, IOMMU unit, router).
    pub fn machine(&self) -> &Machine {
        &self.machine
    }

    /// Guest memory.
    pub fn mem(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// A guest MMIO write of the low `size` (1..=8) bytes of `v` at `addr`.
    pub fn mmio_write(&self, addr: u64, size: usize, v: u64) {
        let b = v.to_le_bytes();
        self.machine.mmio.write(addr, &b[..size.clamp(1, 8)]);
    }

    /// A guest MMIO read of `size` (1..=8) bytes at `addr`.
    pub fn mmio_read(&self, addr: u64, size: usize) -> u64 {
        let mut b = [0u8; 8];
        self.machine.mmio.read(addr, &mut b[..size.clamp(1, 8)]);
        u64::from_le_bytes(b)
    }

    fn vtd_read(&self, off: u64, size: u8) -> u64 {
        match self.machine.unit.as_ref() {
            Some(u) => u.mmio_read(&self.mem, off, size),
            None => 0,
        }
    }

    /// A VT-d register write at the register's width (VT-d 10.4: 32- or 64-bit registers).
    fn vtd_write(&self, off: u64, v: u64) {
        let wide = [
            vtd_regs::RTADDR,
            vtd_regs::CCMD,
            vtd_regs::IQT,
            vtd_regs::IQA,
            vtd_regs::IRTA,
            vtd_regs::PQH,
            vtd_regs::PQT,
            vtd_regs::PQA,
            vtd_regs::IOTLB,
            vtd_regs::IVA,
            vtd_regs::FRO + 8,
        ];
        let size = if wide.contains(&off) { 8 } else { 4 };
        self.mmio_write(layout::VTD_START + off, size, v);
    }

    fn ecam(devfn: u8, off: u64) -> u64 {
        layout::ECAM_START + (u64::from(devfn) << 12) + off
    }

    fn write_mem(&self, addr: u64, data: &[u8]) {
        // Out of RAM: the write fails, as a guest's would.
        let _ = self.mem.write_slice(data, GuestAddress(addr));
    }

    fn write_u64(&self, addr: u64, v: u64) {
        self.write_mem(addr, &v.to_le_bytes());
    }

    fn read_u16(&self, addr: u64) -> u16 {
        self.mem.read_obj(GuestAddress(addr)).unwrap_or(0)
    }

    /// The MSI-X capability's offset of a function, found the way a driver finds it.
    fn msix_cap(&self, devfn: u8) -> Option<u64> {
        let mut off = self.mmio_read(Self::ecam(devfn, CAPABILITIES_POINTER as u64), 1) & 0xfc;
        for _ in 0..48 {
            if off == 0 || off == 0xfc {
                return None;
            }
            let hdr = self.mmio_read(Self::ecam(devfn, off), 2);
            if hdr & 0xff == 0x11 {
                return Some(off);
            }
            off = (hdr >> 8) & 0xfc;
        }
        None
    }

    fn pci_enable(&self, devfn: u8) {
        self.mmio_write(
            Self::ecam(devfn, COMMAND as u64),
            2,
            u64::from(COMMAND_MEMORY | COMMAND_BUS_MASTER),
        );
        if let Some(cap) = self.msix_cap(devfn) {
            self.mmio_write(Self::ecam(devfn, cap + 2), 2, 0x8000);
        }
    }

    fn vq_base(d: usize) -> u64 {
        addrs::VQ + (d as u64) * addrs::VQ_STRIDE
    }

    fn virtio_init(&self, d: usize, features: u32, size: u16) {
        let c = disk_bar(d) + COMMON_OFFSET;
        let w = |off: u64, sz: usize, v: u64| self.mmio_write(c + off, sz, v);
        self.pci_enable(DEVFNS[d + 1]);
        w(0x14, 1, 0);
        w(0x14, 1, u64::from(status::ACKNOWLEDGE | status::DRIVER));
        // Low word: what the device offers, masked by the input (bit 29: EVENT_IDX);
        // high word: VERSION_1 and, unless the input says otherwise, ACCESS_PLATFORM.
        w(0x00, 4, 0);
        let offered = self.mmio_read(c + 0x04, 4);
        w(0x08, 4, 0);
        w(0x0c, 4, offered & u64::from(features | 0x2000_0000));
        w(0x08, 4, 1);
        w(0x0c, 4, if features & 1 != 0 { 1 } else { 3 });
        w(
            0x14,
            1,
            u64::from(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK),
        );
        w(0x10, 2, 0);
        w(0x16, 2, 0);
        if size != 0 {
            w(0x18, 2, u64::from(size));
        }
        w(0x1a, 2, 1);
        let b = Self::vq_base(d);
        w(0x20, 4, b);
        w(0x24, 4, 0);
        w(0x28, 4, b + 0x1000);
        w(0x2c, 4, 0);
        w(0x30, 4, b + 0x2000);
        w(0x34, 4, 0);
        w(0x1c, 2, 1);
        w(
            0x14,
            1,
            u64::from(
                status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
            ),
        );
        // Both vectors routed to the interrupt range.
        for v in 0..2u64 {
            let e = disk_bar(d) + MSIX_TABLE_OFFSET + v * 16;
            self.mmio_write(e, 4, 0xfee0_0000);
            self.mmio_write(e + 4, 4, 0);
            self.mmio_write(e + 8, 4, 0x30 + v);
            self.mmio_write(e + 12, 4, 0);
        }
    }

    fn queue_size(&self, d: usize) -> u16 {
        self.disks
            .get(d)
            .and_then(|q| {
                let q = q.lock().unwrap_or_else(|p| p.into_inner());
                q.queue_states().first().map(|s| s.size)
            })
            .unwrap_or(256)
            .max(1)
    }

    fn virtio_request(&mut self, d: usize, rtype: u8, sector: u16, len: u16, flags: u8) {
        self.virtio_chain(d, rtype, sector, len, flags, false)
    }

    fn virtio_chain(
        &mut self,
        d: usize,
        rtype: u8,
        sector: u16,
        len: u16,
        flags: u8,
        indirect: bool,
    ) {
        let b = Self::vq_base(d);
        let size = self.queue_size(d);
        let slot = self.next_desc[d] % size;
        self.next_desc[d] = self.next_desc[d].wrapping_add(3);
        let head = slot;
        let data_i = (slot + 1) % size;
        let status_i = (slot + 2) % size;
        let hdr = b + 0x4000 + u64::from(slot % 64) * 16;
        let status_a = b + 0x6000 + u64::from(slot);
        let data = b + 0x8000 + u64::from(slot % 16) * 0x1000;
        let rtype = u32::from(match rtype % 6 {
            0 | 1 => 0, // IN
            2 => 1,     // OUT
            3 => 4,     // FLUSH
            4 => 8,     // GET_ID
            _ => rtype,
        });
        let mut h = [0u8; 16];
        h[..4].copy_from_slice(&rtype.to_le_bytes());
        h[8..].copy_from_slice(&u64::from(sector % 160).to_le_bytes());
        self.write_mem(hdr, &h);
        self.write_mem(status_a, &[0xff]);
        let len = u32::from(len % 0x1001).max(1);
        let is_read = rtype != 1;
        // Descriptor flags: NEXT 1, WRITE 2, INDIRECT 4 (flag bit 0: no data descriptor).
        // An indirect chain lives in a table in the data page's last 64 bytes, indices 0..3.
        let table = if indirect { data + 0xfc0 } else { b };
        let (hi, di, si) = if indirect {
            (0, 1, 2)
        } else {
            (head, data_i, status_i)
        };
        let desc = |i: u16, addr: u64, l: u32, fl: u16, next: u16| {
            let mut e = [0u8; 16];
            e[..8].copy_from_slice(&addr.to_le_bytes());
            e[8..12].copy_from_slice(&l.to_le_bytes());
            e[12..14].copy_from_slice(&fl.to_le_bytes());
            e[14..].copy_from_slice(&next.to_le_bytes());
            self.write_mem(table + u64::from(i) * 16, &e);
        };
        let len = if indirect { len.min(0xfc0) } else { len };
        if flags & 1 != 0 {
            desc(hi, hdr, 16, 1, si);
        } else {
            desc(hi, hdr, 16, 1, di);
            desc(di, data, len, 1 | if is_read { 2 } else { 0 }, si);
        }
        desc(si, status_a, 1, 2, 0);
        if indirect {
            let n = if flags & 1 != 0 { 2 } else { 3 };
            let mut e = [0u8; 16];
            e[..8].copy_from_slice(&table.to_le_bytes());
            e[8..12].copy_from_slice(&(n * 16u32).to_le_bytes());
            e[12..14].copy_from_slice(&4u16.to_le_bytes());
            self.write_mem(b + u64::from(head) * 16, &e);
        }
        let avail = b + 0x1000;
        let idx = self.read_u16(avail + 2);
        self.write_mem(avail + 4 + u64::from(idx % size) * 2, &head.to_le_bytes());
        self.write_mem(avail + 2, &idx.wrapping_add(1).to_le_bytes());
        if flags & 2 == 0 {
            self.mmio_write(disk_bar(d) + NOTIFY_OFFSET, 2, 0);
        }
    }

    fn vtd_enable(&self, flags: u8) {
        let gcmd = |extra: u64| {
            let st = self.vtd_read(vtd_regs::GSTS, 4) & vtd_regs::GCMD_ALL;
            let keep = st & !(vtd_regs::GCMD_SRTP | vtd_regs::GCMD_SIRTP);
            self.mmio_write(layout::VTD_START + vtd_regs::GCMD, 4, keep | extra);
        };
        let ttm = if self.scalable {
            vtd_regs::RTADDR_TTM_SCALABLE
        } else {
            0
        };
        self.vtd_write(vtd_regs::RTADDR, addrs::ROOT | ttm);
        gcmd(vtd_regs::GCMD_SRTP);
        self.vtd_write(vtd_regs::FEADDR, 0xfee0_0000);
        self.vtd_write(vtd_regs::FEDATA, 0x40);
        self.vtd_write(vtd_regs::FECTL, 0);
        if flags & 1 != 0 {
            // Queued invalidation, 4 KiB queue (256 descriptors of 128 bits).
            self.vtd_write(vtd_regs::IQT, 0);
            self.vtd_write(vtd_regs::IQA, addrs::IQ);
            gcmd(vtd_regs::GCMD_QIE);
        } else {
            // Register-based global context and IOTLB invalidation.
            self.vtd_write(vtd_regs::CCMD, vtd_regs::CCMD_ICC | (1 << 61));
            self.vtd_write(vtd_regs::IOTLB, vtd_regs::IOTLB_IVT | (1 << 60));
        }
        if flags & 2 != 0 {
            // Interrupt remapping: 256 entries, x2APIC mode per the input.
            let eime = if flags & 8 != 0 { 1 << 11 } else { 0 };
            self.vtd_write(vtd_regs::IRTA, addrs::IRT | eime | 7);
            gcmd(vtd_regs::GCMD_SIRTP);
            gcmd(vtd_regs::GCMD_IRE);
        }
        if flags & 4 != 0 {
            self.vtd_write(vtd_regs::PQA, addrs::PRQ);
            self.vtd_write(vtd_regs::PEADDR, 0xfee0_0000);
            self.vtd_write(vtd_regs::PECTL, 0);
        }
        if flags & 16 == 0 {
            gcmd(vtd_regs::GCMD_TE);
        }
    }

    fn vtd_qi(&self, lo: u64, hi: u64) {
        let tail = self.vtd_read(vtd_regs::IQT, 8) & 0xff0;
        // A wait descriptor's status address is pointed at the harness's status page.
        let hi = if lo & 0xf == 5 {
            addrs::INV_STATUS + (hi & 0xff8)
        } else {
            hi
        };
        self.write_u64(addrs::IQ + tail, lo);
        self.write_u64(addrs::IQ + tail + 8, hi);
        self.vtd_write(vtd_regs::IQT, (tail + 16) & 0xff0);
    }

    fn pasid_caps(&self, caps: u8) {
        use crate::devices::pasid::pci::{ATS_CAP, PASID_CAP, PRI_CAP};
        let df = DEVFNS[3];
        self.pci_enable(df);
        self.mmio_write(Self::ecam(df, PASID_CAP as u64 + 6), 2, u64::from(caps & 7));
        let ats = if caps & 8 != 0 { 0x8000 } else { 0 };
        self.mmio_write(Self::ecam(df, ATS_CAP as u64 + 6), 2, ats);
        self.mmio_write(
            Self::ecam(df, PRI_CAP as u64 + 4),
            2,
            u64::from((caps >> 4) & 1),
        );
        self.mmio_write(PASID_BAR + pasid_regs::GCTL, 4, 1);
        for v in 0..9u64 {
            let e = PASID_BAR + pasid_regs::MSIX_TABLE + v * 16;
            self.mmio_write(e, 4, 0xfee0_0000);
            self.mmio_write(e + 8, 4, 0x50 + v);
            self.mmio_write(e + 12, 4, 0);
        }
    }

    fn wq_reg(n: u8, reg: u64) -> u64 {
        PASID_BAR + pasid_regs::WQ_BASE + u64::from(n % 8) * pasid_regs::WQ_STRIDE + reg
    }

    fn pasid_wq(&self, n: u8, pasid: u32, size: u8, ctl: u8) {
        self.mmio_write(Self::wq_reg(n, 0x1c), 4, 0);
        self.mmio_write(Self::wq_reg(n, 0x00), 4, u64::from(pasid));
        self.mmio_write(
            Self::wq_reg(n, 0x08),
            8,
            addrs::WQ_RING + u64::from(n % 8) * 0x1000,
        );
        self.mmio_write(Self::wq_reg(n, 0x10), 4, 1 << (size % 7));
        self.mmio_write(Self::wq_reg(n, 0x1c), 4, u64::from(ctl & 3) | 1);
    }

    #[allow(clippy::too_many_arguments)]
    fn pasid_desc(&self, n: u8, slot: u8, d: [u64; 6], kick: u8) {
        let [opcode, flags, len, src, dst, pattern] = d;
        let ring = addrs::WQ_RING + u64::from(n % 8) * 0x1000;
        let slot = u64::from(slot % 64);
        let mut e = [0u8; 64];
        e[0] = (opcode % 6) as u8;
        e[1] = (flags & 0x7) as u8;
        let len = u32::try_from(len % 0x2_0000).unwrap_or(0);
        e[4..8].copy_from_slice(&len.to_le_bytes());
        e[8..16].copy_from_slice(&(addrs::DATA + (src % 0x4_0000)).to_le_bytes());
        e[16..24].copy_from_slice(&(addrs::DATA + (dst % 0x4_0000)).to_le_bytes());
        e[24..32].copy_from_slice(&pattern.to_le_bytes());
        let comp = if flags & 8 != 0 {
            0
        } else {
            addrs::WQ_COMPLETION + u64::from(n % 8) * 0x800 + slot * 32
        };
        e[32..40].copy_from_slice(&comp.to_le_bytes());
        self.write_mem(ring + slot * 64, &e);
        if kick & 1 == 0 {
            let size = self.mmio_read(Self::wq_reg(n, 0x10), 4).max(1);
            self.mmio_write(Self::wq_reg(n, 0x18), 4, (slot + 1) % size);
        }
    }

    /// Runs one step; None when the input ended inside its operands.
    fn step(&mut self, op: Op, c: &mut Cursor<'_>) -> Option<()> {
        match op {
            Op::PioRead => {
                let port = PORTS[usize::from(c.u8()?) % PORTS.len()];
                let size = [1, 2, 4][usize::from(c.u8()? % 3)];
                let mut b = [0u8; 4];
                self.machine.pio.read(u64::from(port), &mut b[..size]);
            }
            Op::PioWrite => {
                let port = PORTS[usize::from(c.u8()?) % PORTS.len()];
                let size = [1, 2, 4][usize::from(c.u8()? % 3)];
                let v = c.u32()?.to_le_bytes();
                self.machine.pio.write(u64::from(port), &v[..size]);
            }
            Op::Cf8 => {
                let a = c.u32()? | CF8_ENABLE;
                self.machine.pio.write(0xcf8, &a.to_le_bytes());
            }
            Op::MmioRead | Op::MmioWrite => {
                let regions = regions();
                let (base, len) = regions[usize::from(c.u8()?) % regions.len()];
                let off = u64::from(c.u32()?) % len;
                let size = usize::from(c.u8()? % 8) + 1;
                if op == Op::MmioRead {
                    let _ = self.mmio_read(base + off, size);
                } else {
                    let v = c.u64()?;
                    self.mmio_write(base + off, size, v);
                }
            }
            Op::MemWrite => {
                let a = u64::from(c.u32()?) % (RAM + 0x1000);
                let n = usize::from(c.u8()? % 64);
                let b = c.bytes(n)?;
                self.write_mem(a, b);
            }
            Op::MemWrite64 => {
                let a = u64::from(c.u32()?) % (RAM + 0x1000);
                let v = c.u64()?;
                self.write_u64(a & !7, v);
            }
            Op::PciEnable => {
                let f = DEVFNS[usize::from(c.u8()?) % DEVFNS.len()];
                self.pci_enable(f);
            }
            Op::VirtioInit => {
                let d = usize::from(c.u8()? % 2);
                let features = c.u32()?;
                let size = c.u16()?;
                let size = if size & 0x8000 != 0 { size & 0x1ff } else { 0 };
                self.next_desc[d] = 0;
                self.virtio_init(d, features, size);
            }
            Op::VirtioRequest => {
                let d = usize::from(c.u8()? % 2);
                let (t, sector, len, flags) = (c.u8()?, c.u16()?, c.u16()?, c.u8()?);
                self.virtio_request(d, t, sector, len, flags);
            }
            Op::VirtioKick => {
                let d = usize::from(c.u8()? % 2);
                let bump = c.u16()?;
                let avail = Self::vq_base(d) + 0x1000;
                let idx = self.read_u16(avail + 2);
                let n = if bump == 0 { 1 } else { bump };
                self.write_mem(avail + 2, &idx.wrapping_add(n).to_le_bytes());
                self.mmio_write(disk_bar(d) + NOTIFY_OFFSET, 2, 0);
            }
            Op::MsixEntry => {
                let f = usize::from(c.u8()?) % 3;
                let vector = u64::from(c.u8()?);
                let addr = c.u32()?;
                let data = c.u32()?;
                let (table, n) = match f {
                    0 | 1 => (disk_bar(f) + MSIX_TABLE_OFFSET, 2),
                    _ => (PASID_BAR + pasid_regs::MSIX_TABLE, 9),
                };
                let e = table + (vector % n) * 16;
                // Mostly interrupt addresses, sometimes anything.
                let addr = if addr & 1 == 0 {
                    0xfee0_0000 | (addr & 0xf_fffc)
                } else {
                    addr
                };
                self.mmio_write(e, 4, u64::from(addr));
                self.mmio_write(e + 4, 4, 0);
                self.mmio_write(e + 8, 4, u64::from(data));
                self.mmio_write(e + 12, 4, 0);
            }
            Op::VtdEnable => {
                let flags = c.u8()?;
                self.vtd_enable(flags);
            }
            Op::VtdRoot => {
                let bus = u64::from(c.u8()?);
                let lo = u64::from(c.u16()?);
                let hi = u64::from(c.u16()?);
                let ctp = addrs::CONTEXT;
                self.write_u64(addrs::ROOT + bus * 16, (lo & 0xfff) | ctp | 1);
                let upper = if self.scalable { (ctp + 0x1000) | 1 } else { 0 };
                self.write_u64(addrs::ROOT + bus * 16 + 8, (hi & 0xfff) | upper);
            }
            Op::VtdContext => {
                let devfn = u64::from(c.u8()?);
                let lo = u64::from(c.u16()?);
                let hi = u64::from(c.u32()?);
                let ptr = table_ptr(c.u8()?);
                // Scalable entries are 256 bits, 128 of them per half-table.
                let at = if self.scalable {
                    addrs::CONTEXT + (devfn & 0x7f) * 32 + (devfn & 0x80) * 0x20
                } else {
                    addrs::CONTEXT + devfn * 16
                };
                self.write_u64(at, (lo & 0xfff) | ptr);
                self.write_u64(at + 8, hi);
            }
            Op::VtdPasid => {
                let index = u64::from(c.u16()?);
                let w0 = u64::from(c.u16()?);
                let w1 = u64::from(c.u32()?);
                let w2 = u64::from(c.u16()?);
                let ptr = table_ptr(c.u8()?);
                // Directory entry for PASIDs (index >> 6) << 6 .. +64 and the table entry.
                self.write_u64(
                    addrs::PASID_DIR + ((index >> 6) % 512) * 8,
                    addrs::PASID_TABLE | 1,
                );
                let e = addrs::PASID_TABLE + (index % 64) * 64;
                self.write_u64(e, (w0 & 0xfff) | ptr);
                self.write_u64(e + 8, w1);
                self.write_u64(e + 16, (w2 & 0xfff) | table_ptr((w2 >> 12) as u8));
            }
            Op::VtdPte => {
                let page = u64::from(c.u8()?) % addrs::PT_PAGES;
                let index = u64::from(c.u16()?) % 512;
                let flags = u64::from(c.u16()?);
                let target = c.u8()?;
                let out = if flags & 0x8000 != 0 {
                    // Leaf to a data page (or a large page at 0 / 2 MiB).
                    match target % 4 {
                        0 => 0,
                        1 => 0x20_0000,
                        _ => addrs::DATA + (u64::from(target) % 64) * 0x1000,
                    }
                } else {
                    table_ptr(target)
                };
                self.write_u64(addrs::PT + page * 0x1000 + index * 8, (flags & 0xfff) | out);
            }
            Op::VtdQi => {
                let (lo, hi) = (c.u64()?, c.u64()?);
                self.vtd_qi(lo, hi);
            }
            Op::VtdIrte => {
                let i = u64::from(c.u8()?);
                let lo = c.u64()?;
                let hi = u64::from(c.u32()?);
                self.write_u64(addrs::IRT + i * 16, lo);
                self.write_u64(addrs::IRT + i * 16 + 8, hi);
            }
            Op::VtdReg => {
                let r = VTD_REGS[usize::from(c.u8()?) % VTD_REGS.len()];
                let v = c.u64()?;
                self.vtd_write(r, v);
            }
            Op::PasidCaps => {
                let caps = c.u8()?;
                self.pasid_caps(caps);
            }
            Op::PasidWq => {
                let (n, pasid, size, ctl) = (c.u8()?, c.u32()?, c.u8()?, c.u8()?);
                self.pasid_wq(n, pasid, size, ctl);
            }
            Op::PasidDesc => {
                let (n, slot) = (c.u8()?, c.u8()?);
                let (opcode, flags) = (u64::from(c.u8()?), u64::from(c.u8()?));
                let len = u64::from(c.u32()?);
                let (src, dst) = (u64::from(c.u16()?), u64::from(c.u16()?));
                let pattern = c.u64()?;
                let kick = c.u8()?;
                self.pasid_desc(n, slot, [opcode, flags, len, src, dst, pattern], kick);
            }
            Op::IoapicRte => {
                let pin = u64::from(c.u8()? % 26);
                let rte = c.u64()?;
                let sel = layout::IOAPIC_START;
                self.mmio_write(sel, 4, 0x10 + pin * 2);
                self.mmio_write(sel + 0x10, 4, rte & 0xffff_ffff);
                self.mmio_write(sel, 4, 0x11 + pin * 2);
                self.mmio_write(sel + 0x10, 4, rte >> 32);
            }
            Op::VtdQiTyped => {
                let (t, mask) = (c.u8()?, c.u8()?);
                let (lo, hi) = (c.u64()?, c.u64()?);
                let ty = u64::from(t % 9) + 1;
                // Sparse operands pass the reserved-bit checks more often.
                let keep =
                    [0, 0x30, 0xffff_0000_0000_00f0, 0xffff_ffff_ffff_f1f0][usize::from(mask % 4)];
                let hi =
                    [0, hi & 0xffff_ffff_ffff_f000, hi & 0x7f, hi][usize::from((mask >> 2) % 4)];
                self.vtd_qi((lo & keep) | ty, hi);
            }
            Op::VirtioIndirect => {
                let d = usize::from(c.u8()? % 2);
                let (t, sector, len, flags) = (c.u8()?, c.u16()?, c.u16()?, c.u8()?);
                self.virtio_chain(d, t, sector, len, flags, true);
            }
            Op::Tick => {
                for n in 0..8 {
                    let _ = self.mmio_read(Self::wq_reg(n, 0x20), 4);
                }
            }
        }
        Some(())
    }

    /// Checks the invariants ([`Violation`]).
    pub fn check(&mut self) -> Result<(), Violation> {
        // The low word in 0xFEEx_xxxx, bits 7:0 of the high word clear (x2APIC destinations
        // use bits 31:8 of it). Computed here, not with the router's own helper.
        let interrupt = |addr: u64| (addr >> 32) & 0xff == 0 && addr & 0xfff0_0000 == 0xfee0_0000;
        let routes: Vec<iommu_emulator::MsiMessage> = self
            .backend
            .routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(_, m)| *m)
            .collect();
        let direct = self
            .backend
            .direct
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let given = routes
            .iter()
            .map(|m| (m, false))
            .chain(direct.iter().map(|m| (m, true)));
        for (m, direct) in given {
            if !interrupt(m.addr) {
                return Err(Violation::MsiOutsideInterruptRange {
                    addr: m.addr,
                    data: m.data,
                    direct,
                });
            }
        }
        let (fsts, records) = self.fault_state();
        if (fsts & vtd_regs::FSTS_PPF != 0) != (records > 0) {
            return Err(Violation::PendingFaultMismatch { fsts, records });
        }
        for (disk, dev) in self.disks.iter().enumerate() {
            let dev = dev.lock().unwrap_or_else(|p| p.into_inner());
            for q in dev.queue_states() {
                let behind = q.next_avail.wrapping_sub(q.next_used);
                if q.ready && behind > q.size {
                    return Err(Violation::UsedAheadOfAvail {
                        disk,
                        size: q.size,
                        next_avail: q.next_avail,
                        next_used: q.next_used,
                    });
                }
            }
            let f = dev.faults();
            let now = (f.invalid_avail_idx, f.stalled_passes);
            if let Some(last) = self.last_faults.get_mut(disk) {
                if now.0 < last.0 || now.1 < last.1 {
                    return Err(Violation::FaultCounterDecreased { disk });
                }
                *last = now;
            }
        }
        Ok(())
    }

    /// FSTS and the number of fault recording registers with F set (VT-d 10.4.14).
    fn fault_state(&self) -> (u64, usize) {
        let cap = self.vtd_read(vtd_regs::CAP, 8);
        let fro = ((cap >> 24) & 0x3ff) * 16;
        let nfr = ((cap >> 40) & 0xff) + 1;
        let records = (0..nfr)
            .filter(|i| self.vtd_read(fro + i * 16 + 8, 8) & (1 << 63) != 0)
            .count();
        (self.vtd_read(vtd_regs::FSTS, 4), records)
    }

    /// What the machine shows now.
    pub fn report(&self, steps: usize) -> RunReport {
        let mut r = RunReport {
            steps,
            ..RunReport::default()
        };
        for d in &self.disks {
            let d = d.lock().unwrap_or_else(|p| p.into_inner());
            r.virtio_used
                .push(d.queue_states().first().map_or(0, |q| q.next_used));
            r.virtio_status.push(d.status());
            let f = d.faults();
            r.virtio_faults
                .push((f.invalid_avail_idx, f.stalled_passes));
        }
        (r.vtd_fsts, r.vtd_fault_records) = self.fault_state();
        r.vtd_gsts = self.vtd_read(vtd_regs::GSTS, 4);
        r.direct_msis = self
            .backend
            .direct
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len();
        r.msi_routes = self
            .backend
            .routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len();
        for n in 0..8 {
            r.pasid_completed
                .push(self.mmio_read(Self::wq_reg(n, 0x30), 4) as u32);
            r.pasid_status
                .push(self.mmio_read(Self::wq_reg(n, 0x20), 4) as u32);
        }
        r.stats = self.machine.stats_report();
        r
    }
}

/// Runs one input: byte 0 the configuration, then steps until the input or [`MAX_STEPS`]
/// ends. Returns what the machine shows at the end, or the first invariant it broke.
pub fn run(data: &[u8]) -> Result<RunReport, Violation> {
    run_machine(data).map(|(_, r)| r)
}

/// [`run`], keeping the machine for a test to look at.
pub fn run_machine(data: &[u8]) -> Result<(FuzzMachine, RunReport), Violation> {
    let mut c = Cursor::new(data);
    let sel = c.u8().unwrap_or(0);
    let mut m = FuzzMachine::new(sel).map_err(|e| Violation::Setup(e.to_string()))?;
    let mut steps = 0;
    while steps < MAX_STEPS {
        let Some(b) = c.u8() else { break };
        let op = decode_op(b);
        let start = Instant::now();
        let done = m.step(op, &mut c);
        let elapsed = start.elapsed();
        steps += 1;
        if elapsed > STEP_TIME_LIMIT {
            return Err(Violation::SlowStep {
                step: steps,
                op: op as u8,
                elapsed,
            });
        }
        m.check()?;
        if done.is_none() {
            break;
        }
    }
    let r = m.report(steps);
    Ok((m, r))
}

/// The fuzz target's body: [`run`], panicking on a broken invariant (how libFuzzer learns of
/// a finding).
#[allow(clippy::panic)]
pub fn fuzz(data: &[u8]) {
    if let Err(v) = run(data) {
        panic!("device-layer invariant broken: {v:?}");
    }
}

/// Encodes steps for seeds and tests: `(op, operand bytes)` pairs after configuration `sel`.
pub fn encode(sel: u8, steps: &[(Op, &[u8])]) -> Vec<u8> {
    let mut v = vec![sel];
    for (op, operands) in steps {
        v.push(opcode(*op));
        v.extend_from_slice(operands);
    }
    v
}
