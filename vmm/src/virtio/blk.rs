//! virtio-blk (Virtio 1.2 §5.2) backed by a raw file: read, write, flush,
//! get-id; read-only disks refuse writes with VIRTIO_BLK_S_IOERR.
//!
//! Threat model: the driver controls descriptors (addresses, lengths,
//! flags, chains). Every buffer access goes through [`DmaMemory`], so an
//! address outside what the IOMMU maps fails the request instead of reaching
//! host memory; data moves in bounded chunks (no allocation sized by the
//! guest); chains longer than the queue are cut by virtio-queue.

use std::fs::File;
use std::os::unix::fs::FileExt;

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

use super::{DmaMemory, VirtioDevice};

/// Virtio device ID of a block device.
pub const VIRTIO_ID_BLOCK: u16 = 2;
/// Sector size of the protocol.
pub const SECTOR_SIZE: u64 = 512;
/// Queue size offered.
pub const QUEUE_SIZE: u16 = 256;

/// VIRTIO_BLK_F_SEG_MAX.
pub const F_SEG_MAX: u64 = 1 << 2;
/// VIRTIO_BLK_F_RO.
pub const F_RO: u64 = 1 << 5;
/// VIRTIO_BLK_F_FLUSH.
pub const F_FLUSH: u64 = 1 << 9;

/// Request types (§5.2.6).
pub const T_IN: u32 = 0;
/// Write.
pub const T_OUT: u32 = 1;
/// Flush.
pub const T_FLUSH: u32 = 4;
/// Get device ID string.
pub const T_GET_ID: u32 = 8;

/// Status values.
pub const S_OK: u8 = 0;
/// I/O error.
pub const S_IOERR: u8 = 1;
/// Unsupported request.
pub const S_UNSUPP: u8 = 2;

/// Length of the device ID string returned by GET_ID.
pub const ID_BYTES: usize = 20;
/// seg_max (§5.2.4): data descriptors per request, the queue less header and status.
const SEG_MAX: u16 = QUEUE_SIZE - 2;
/// Descriptors per request: seg_max data descriptors, the header and the status.
const MAX_CHAIN: usize = SEG_MAX as usize + 2;
/// Bytes moved per host I/O call.
const CHUNK: usize = 64 * 1024;

/// Request statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlkStats {
    /// Read requests completed.
    pub reads: u64,
    /// Write requests completed.
    pub writes: u64,
    /// Flushes.
    pub flushes: u64,
    /// Requests that ended in IOERR/UNSUPP (bad chain, DMA fault, host error).
    pub errors: u64,
    /// Bytes read from the disk into the guest.
    pub bytes_read: u64,
    /// Bytes written to the disk.
    pub bytes_written: u64,
}

/// The block device.
pub struct Blk {
    file: File,
    capacity_sectors: u64,
    readonly: bool,
    id: [u8; ID_BYTES],
    config: [u8; 24],
    /// Statistics.
    pub stats: BlkStats,
    /// Type and sector of the last request header read (for the flight recorder).
    last_header: (u32, u64),
}

struct Desc {
    addr: u64,
    len: u32,
    write: bool,
}

impl Blk {
    /// A device over `file` (its size rounded down to whole sectors).
    pub fn new(file: File, readonly: bool) -> std::io::Result<Self> {
        let len = file.metadata()?.len();
        let capacity_sectors = len / SECTOR_SIZE;
        let mut config = [0u8; 24];
        config[0..8].copy_from_slice(&capacity_sectors.to_le_bytes());
        // size_max (8..12) unused; seg_max (12..16).
        config[12..16].copy_from_slice(&u32::from(SEG_MAX).to_le_bytes());
        let mut id = [0u8; ID_BYTES];
        for (dst, src) in id.iter_mut().zip(b"iommu-vmm-blk") {
            *dst = *src;
        }
        Ok(Blk {
            file,
            capacity_sectors,
            readonly,
            id,
            config,
            stats: BlkStats::default(),
            last_header: (u32::MAX, 0),
        })
    }

    /// Disk size in sectors.
    pub fn capacity_sectors(&self) -> u64 {
        self.capacity_sectors
    }

    /// Flush the backing file to stable storage.
    pub fn sync(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }

    /// Execute one request whose descriptors are `descs`; returns the status
    /// and the number of data bytes written into the guest.
    fn execute(&mut self, mem: &DmaMemory, descs: &[Desc]) -> (u8, u32) {
        let Some((head, rest)) = descs.split_first() else {
            return (S_IOERR, 0);
        };
        if head.write || head.len < 16 {
            return (S_IOERR, 0);
        }
        let mut hdr = [0u8; 16];
        if mem.read_slice(&mut hdr, GuestAddress(head.addr)).is_err() {
            tracing::warn!(
                "virtio-blk: request header at iova {:#x} not readable",
                head.addr
            );
            return (S_IOERR, 0);
        }
        let rtype = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
        let sector = u64::from_le_bytes(hdr[8..16].try_into().unwrap_or([0; 8]));
        self.last_header = (rtype, sector);
        let data = rest;
        match rtype {
            T_IN | T_OUT => {
                let is_read = rtype == T_IN;
                if !is_read && self.readonly {
                    return (S_IOERR, 0);
                }
                if data.iter().any(|d| d.write != is_read) {
                    return (S_IOERR, 0);
                }
                let total: u64 = data.iter().map(|d| u64::from(d.len)).sum();
                let Some(start) = sector.checked_mul(SECTOR_SIZE) else {
                    return (S_IOERR, 0);
                };
                let in_range = start
                    .checked_add(total)
                    .zip(self.capacity_sectors.checked_mul(SECTOR_SIZE))
                    .is_some_and(|(end, capacity)| end <= capacity);
                if !in_range {
                    return (S_IOERR, 0);
                }
                let mut off = start;
                let mut buf = vec![0u8; CHUNK];
                let mut written = 0u32;
                for d in data {
                    let mut done = 0u64;
                    while done < u64::from(d.len) {
                        let remaining = u64::from(d.len).saturating_sub(done);
                        let n = usize::try_from(remaining).map_or(CHUNK, |r| r.min(CHUNK));
                        let Some(chunk) = buf.get_mut(..n) else {
                            return (S_IOERR, written);
                        };
                        // n <= CHUNK (64 KiB): both conversions are exact.
                        let n64 = u64::try_from(n).unwrap_or(u64::MAX);
                        let n32 = u32::try_from(n).unwrap_or(u32::MAX);
                        let gaddr = GuestAddress(d.addr.wrapping_add(done));
                        let ok = if is_read {
                            self.file.read_exact_at(chunk, off).is_ok()
                                && mem.write_slice(chunk, gaddr).is_ok()
                        } else {
                            mem.read_slice(chunk, gaddr).is_ok()
                                && self.file.write_all_at(chunk, off).is_ok()
                        };
                        if !ok {
                            tracing::warn!(
                                "virtio-blk: {} of {n} bytes at iova {:#x} failed",
                                if is_read { "read" } else { "write" },
                                gaddr.0
                            );
                            return (S_IOERR, written);
                        }
                        // off + total <= capacity was checked above: neither overflows.
                        done = done.saturating_add(n64);
                        off = off.saturating_add(n64);
                        if is_read {
                            written = written.saturating_add(n32);
                        }
                    }
                }
                if is_read {
                    self.stats.reads = self.stats.reads.saturating_add(1);
                    self.stats.bytes_read = self.stats.bytes_read.saturating_add(total);
                } else {
                    self.stats.writes = self.stats.writes.saturating_add(1);
                    self.stats.bytes_written = self.stats.bytes_written.saturating_add(total);
                }
                (S_OK, written)
            }
            T_FLUSH => {
                self.stats.flushes = self.stats.flushes.saturating_add(1);
                match self.file.sync_data() {
                    Ok(()) => (S_OK, 0),
                    Err(_) => (S_IOERR, 0),
                }
            }
            T_GET_ID => {
                let Some(d) = data.first().filter(|d| d.write) else {
                    return (S_IOERR, 0);
                };
                let n = usize::try_from(d.len).map_or(ID_BYTES, |l| l.min(ID_BYTES));
                let id = self.id.get(..n).unwrap_or(&self.id);
                if mem.write_slice(id, GuestAddress(d.addr)).is_err() {
                    return (S_IOERR, 0);
                }
                // n <= ID_BYTES (20).
                (S_OK, u32::try_from(n).unwrap_or(0))
            }
            _ => (S_UNSUPP, 0),
        }
    }
}

impl VirtioDevice for Blk {
    fn device_type(&self) -> u16 {
        VIRTIO_ID_BLOCK
    }

    fn features(&self) -> u64 {
        F_SEG_MAX | F_FLUSH | if self.readonly { F_RO } else { 0 }
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let Ok(off) = usize::try_from(offset) else {
            return;
        };
        if let Some(src) = self.config.get(off..off.saturating_add(data.len())) {
            data.copy_from_slice(src);
        }
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}

    fn sync(&self) -> std::io::Result<()> {
        Blk::sync(self)
    }

    fn stats(&self) -> String {
        let s = self.stats;
        format!(
            "{} reads ({} bytes), {} writes ({} bytes), {} flushes, {} failed requests",
            s.reads, s.bytes_read, s.writes, s.bytes_written, s.flushes, s.errors
        )
    }

    fn process_queue(&mut self, _index: usize, queue: &mut Queue, mem: &DmaMemory) -> bool {
        let mut used_any = false;
        // At most one queue's worth of chains per call: a driver that keeps adding buffers
        // from another vCPU while this runs cannot keep the thread here. What it added after
        // the pass started came with its own notification (or, with EVENT_IDX, the
        // transport's next pass), so nothing is lost.
        for _ in 0..queue.size() {
            let Some(chain) = queue.pop_descriptor_chain(mem) else {
                break;
            };
            let head = chain.head_index();
            // A chain is cut by virtio-queue at the queue size, or at its indirect table's
            // length (up to 65535 entries; the flag is followed even though INDIRECT_DESC is
            // not offered). More than seg_max data descriptors plus header and status is a
            // driver error (§5.2.4): `take` stops the walk there and the request fails.
            let descs: Vec<Desc> = chain
                .take(MAX_CHAIN.saturating_add(1))
                .map(|d| Desc {
                    addr: d.addr().0,
                    len: d.len(),
                    write: d.is_write_only(),
                })
                .collect();
            self.last_header = (u32::MAX, 0);
            let (status, data_len, status_addr) = match descs.split_last() {
                _ if descs.len() > MAX_CHAIN => (S_IOERR, 0, None),
                Some((last, body)) if last.write && last.len >= 1 => {
                    let (s, n) = self.execute(mem, body);
                    (s, n, Some(last.addr))
                }
                _ => (S_IOERR, 0, None),
            };
            let mut len = data_len;
            if let Some(a) = status_addr {
                if mem.write_obj(status, GuestAddress(a)).is_ok() {
                    len = len.saturating_add(1);
                } else {
                    tracing::warn!("virtio-blk: status byte at iova {a:#x} not writable");
                }
            }
            if status != S_OK {
                self.stats.errors = self.stats.errors.saturating_add(1);
            }
            if let Err(e) = queue.add_used(mem, head, len) {
                tracing::warn!("virtio-blk: add_used: {e}");
                break;
            }
            let data = descs
                .get(1..descs.len().saturating_sub(1))
                .unwrap_or_default();
            crate::diag::recorder::record(crate::diag::recorder::Event::Blk {
                head,
                rtype: self.last_header.0,
                sector: self.last_header.1,
                descs: u16::try_from(data.len()).unwrap_or(u16::MAX),
                lo: data.iter().map(|d| d.addr).min().unwrap_or(0),
                hi: data
                    .iter()
                    .map(|d| d.addr.saturating_add(u64::from(d.len)))
                    .max()
                    .unwrap_or(0),
                written: data_len,
                status_at: status_addr.unwrap_or(0),
                status,
                used_idx: queue.next_used(),
            });
            used_any = true;
        }
        used_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use iommu_emulator::{
        CachePath, Cycles, DeviceAddressSpace, DmaRequest, Fault, FaultKind, Gpa, GuestRam, Iommu,
        Iova, PageSize, Perm, Rid, SourceId, Translation,
    };
    use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::{RawDescriptor, split::Descriptor as SplitDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{GuestMemoryMmap, IommuMemory};

    const HDR: u64 = 0x10000;
    const DATA: u64 = 0x20000;
    const STATUS: u64 = 0x30000;
    /// IOVAs are guest-physical + this offset, so a missing translation shows.
    const SHIFT: u64 = 0x100_0000;

    /// An IOMMU mapping IOVA `x + SHIFT` to `x`, denying one page.
    struct ShiftIommu {
        deny: u64,
    }

    impl Iommu for ShiftIommu {
        fn translate(&self, _mem: &dyn GuestRam, req: &DmaRequest) -> Result<Translation, Fault> {
            let page = req.addr.0 & !0xfff;
            if page == self.deny || req.addr.0 < SHIFT {
                return Err(Fault {
                    kind: FaultKind::NotPresent,
                    reason: 0x6,
                    addr: Iova(req.addr.0),
                    level: Some(1),
                    recorded: true,
                    cycles: Cycles(0),
                });
            }
            Ok(Translation {
                output: Gpa(page - SHIFT),
                page_size: PageSize::SIZE_4K,
                perm: Perm::RW,
                privileged: false,
                cycles: Cycles(0),
                path: CachePath::empty(),
                walk_reads: 0,
            })
        }
    }

    struct Setup {
        mem: GuestMemoryMmap,
        dma: DmaMemory,
        disk: tempfile::NamedTempFile,
    }

    fn setup(deny: u64) -> Setup {
        let mem = GuestMemoryMmap::from_ranges(&[(vm_memory::GuestAddress(0), 1 << 20)]).unwrap();
        let ram: Arc<dyn GuestRam> = Arc::new(mem.clone());
        let space = DeviceAddressSpace::new(
            Arc::new(ShiftIommu { deny }),
            ram,
            SourceId::Pci(Rid::new(0, 1, 0)),
        );
        let dma = IommuMemory::new(mem.clone(), space, true, ());
        let disk = tempfile::NamedTempFile::new().unwrap();
        let content: Vec<u8> = (0..8 * SECTOR_SIZE as usize)
            .map(|i| (i * 7) as u8)
            .collect();
        std::fs::write(disk.path(), content).unwrap();
        Setup { mem, dma, disk }
    }

    fn blk(s: &Setup, readonly: bool) -> Blk {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(!readonly)
            .open(s.disk.path())
            .unwrap();
        Blk::new(f, readonly).unwrap()
    }

    fn desc(addr: u64, len: u32, write: bool) -> RawDescriptor {
        let flags = if write { VRING_DESC_F_WRITE as u16 } else { 0 } | VRING_DESC_F_NEXT as u16;
        RawDescriptor::from(SplitDescriptor::new(addr, len, flags, 0))
    }

    /// Submit one request (`data` descriptor writable for reads) and run the device.
    /// Rings live at IOVA SHIFT + 0 (queue placed by the mock in guest-physical space
    /// through the shifted view).
    fn submit(
        s: &Setup,
        dev: &mut Blk,
        rtype: u32,
        sector: u64,
        data_len: u32,
        data_write: bool,
    ) -> (u8, u32) {
        let mut hdr = [0u8; 16];
        hdr[0..4].copy_from_slice(&rtype.to_le_bytes());
        hdr[8..16].copy_from_slice(&sector.to_le_bytes());
        s.mem.write_slice(&hdr, GuestAddress(HDR)).unwrap();
        s.mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
        // The mock writes the rings through the device's own (translated) view.
        let mock = MockSplitQueue::create(&s.dma, GuestAddress(SHIFT), 16);
        let descs = [
            desc(SHIFT + HDR, 16, false),
            desc(SHIFT + DATA, data_len, data_write),
            desc(SHIFT + STATUS, 1, true),
        ];
        mock.build_desc_chain(&descs).unwrap();
        let mut q: Queue = mock.create_queue().unwrap();
        assert!(dev.process_queue(0, &mut q, &s.dma));
        let used_len: u32 = s
            .dma
            .read_obj(GuestAddress(mock.used_addr().0 + 8))
            .unwrap();
        (s.mem.read_obj(GuestAddress(STATUS)).unwrap(), used_len)
    }

    /// A driver racing the device from another vCPU, played by the IOMMU: every translation
    /// of the status page re-posts chain 0 in the avail ring (keeping at most `size` buffers
    /// outstanding), up to `limit` times, then stops.
    struct RacingDriver {
        mem: GuestMemoryMmap,
        /// Guest-physical addresses of the avail and used rings.
        avail: u64,
        used: u64,
        size: u16,
        posted: std::sync::atomic::AtomicU32,
        limit: u32,
    }

    impl Iommu for RacingDriver {
        fn translate(&self, _mem: &dyn GuestRam, req: &DmaRequest) -> Result<Translation, Fault> {
            let page = req.addr.0 & !0xfff;
            if page == SHIFT + STATUS
                && self.posted.load(std::sync::atomic::Ordering::Relaxed) < self.limit
            {
                let idx: u16 = self.mem.read_obj(GuestAddress(self.avail + 2)).unwrap();
                let used: u16 = self.mem.read_obj(GuestAddress(self.used + 2)).unwrap();
                if idx.wrapping_sub(used) >= self.size {
                    return ShiftIommu { deny: u64::MAX }.translate(_mem, req);
                }
                let slot = u64::from(idx % self.size);
                self.mem
                    .write_obj(0u16, GuestAddress(self.avail + 4 + 2 * slot))
                    .unwrap();
                self.mem
                    .write_obj(idx.wrapping_add(1), GuestAddress(self.avail + 2))
                    .unwrap();
                self.posted
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            ShiftIommu { deny: u64::MAX }.translate(_mem, req)
        }
    }

    #[test]
    fn blk_driver_posting_during_the_pass_is_served_at_most_queue_size_chains_per_call() {
        // STYLE rule 8 (work per call is bounded): without the per-call budget this pass
        // would serve all 1 + 1000 posted chains (or, with no limit, never return).
        let s = setup(u64::MAX);
        let mut dev = blk(&s, false);
        let mut hdr = [0u8; 16];
        hdr[0..4].copy_from_slice(&T_FLUSH.to_le_bytes());
        s.mem.write_slice(&hdr, GuestAddress(HDR)).unwrap();
        let size = 16u16;
        let mock = MockSplitQueue::create(&s.dma, GuestAddress(SHIFT), size);
        mock.build_desc_chain(&[desc(SHIFT + HDR, 16, false), desc(SHIFT + STATUS, 1, true)])
            .unwrap();
        let mut q: Queue = mock.create_queue().unwrap();
        // The mock lays the used ring over the avail ring's upper slots: move it clear.
        const USED: u64 = 0x800;
        q.set_used_ring_address(Some((SHIFT + USED) as u32), Some(0));
        let racer = Arc::new(RacingDriver {
            mem: s.mem.clone(),
            avail: mock.avail_addr().0 - SHIFT,
            used: USED,
            size,
            posted: std::sync::atomic::AtomicU32::new(0),
            limit: 1000,
        });
        let ram: Arc<dyn GuestRam> = Arc::new(s.mem.clone());
        let space = DeviceAddressSpace::new(racer.clone(), ram, SourceId::Pci(Rid::new(0, 1, 0)));
        let dma = IommuMemory::new(s.mem.clone(), space, true, ());
        assert!(dev.process_queue(0, &mut q, &dma));
        assert_eq!(dev.stats.flushes, u64::from(size));
        assert_eq!(q.next_used(), size);
        assert!(racer.posted.load(std::sync::atomic::Ordering::Relaxed) >= u32::from(size));
    }

    #[test]
    fn blk_indirect_chain_longer_than_seg_max_returns_ioerr_without_walking_it_all() {
        // Virtio 1.2 §5.2.4: at most seg_max data descriptors per request. virtio-queue
        // follows an indirect table of up to 65535 entries even though INDIRECT_DESC is not
        // offered; the device stops reading after seg_max + 3 descriptors and fails it.
        let s = setup(u64::MAX);
        let mut dev = blk(&s, false);
        let mut hdr = [0u8; 16];
        hdr[0..4].copy_from_slice(&T_IN.to_le_bytes());
        s.mem.write_slice(&hdr, GuestAddress(HDR)).unwrap();
        s.mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
        // The indirect table: header, 1000 one-byte data buffers, status.
        const TABLE: u64 = 0x40000;
        let n = 1002u16;
        for i in 0..n {
            let (addr, write) = match i {
                0 => (SHIFT + HDR, false),
                i if i == n - 1 => (SHIFT + STATUS, true),
                _ => (SHIFT + DATA, true),
            };
            let flags = if write { VRING_DESC_F_WRITE as u16 } else { 0 }
                | if i == n - 1 {
                    0
                } else {
                    VRING_DESC_F_NEXT as u16
                };
            let d = SplitDescriptor::new(addr, 1.max(16 * u32::from(i == 0)), flags, i + 1);
            s.mem
                .write_obj(d, GuestAddress(TABLE + 16 * u64::from(i)))
                .unwrap();
        }
        let mock = MockSplitQueue::create(&s.dma, GuestAddress(SHIFT), 16);
        let indirect = SplitDescriptor::new(
            SHIFT + TABLE,
            16 * u32::from(n),
            virtio_bindings::bindings::virtio_ring::VRING_DESC_F_INDIRECT as u16,
            0,
        );
        mock.build_desc_chain(&[RawDescriptor::from(indirect)])
            .unwrap();
        let mut q: Queue = mock.create_queue().unwrap();
        assert!(dev.process_queue(0, &mut q, &s.dma));
        assert_eq!(dev.stats.errors, 1);
        assert_eq!(dev.stats.reads, 0);
        let used_len: u32 = s
            .dma
            .read_obj(GuestAddress(mock.used_addr().0 + 8))
            .unwrap();
        assert_eq!(used_len, 0);
    }

    #[test]
    fn blk_read_request_through_iommu_copies_sector_and_reports_ok() {
        // Virtio 1.2 §5.2.6: VIRTIO_BLK_T_IN fills the writable buffer; used length
        // counts the data and the status byte.
        let s = setup(u64::MAX);
        let mut dev = blk(&s, false);
        let (status, len) = submit(&s, &mut dev, T_IN, 2, 512, true);
        assert_eq!(status, S_OK);
        assert_eq!(len, 513);
        let mut got = [0u8; 512];
        s.mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
        let want: Vec<u8> = (1024..1536usize).map(|i| (i * 7) as u8).collect();
        assert_eq!(&got[..], &want[..]);
        assert_eq!(dev.stats.reads, 1);
    }

    #[test]
    fn blk_completed_request_is_in_the_flight_recorder_with_its_buffers() {
        use crate::diag::recorder::{Event, recent};
        let s = setup(u64::MAX);
        let mut dev = blk(&s, false);
        let (status, _) = submit(&s, &mut dev, T_IN, 5, 512, true);
        assert_eq!(status, S_OK);
        // Other tests record concurrently: find this request by its sector and buffer.
        let found = recent(usize::MAX).into_iter().map(|r| r.event).any(|e| {
            e == Event::Blk {
                head: 0,
                rtype: T_IN,
                sector: 5,
                descs: 1,
                lo: SHIFT + DATA,
                hi: SHIFT + DATA + 512,
                written: 512,
                status_at: SHIFT + STATUS,
                status: S_OK,
                used_idx: 1,
            }
        });
        assert!(found, "{}", crate::diag::recorder::dump(usize::MAX));
    }

    #[test]
    fn blk_write_request_reaches_file_and_flush_succeeds() {
        let s = setup(u64::MAX);
        let mut dev = blk(&s, false);
        s.mem.write_slice(&[0xab; 512], GuestAddress(DATA)).unwrap();
        let (status, len) = submit(&s, &mut dev, T_OUT, 3, 512, false);
        assert_eq!((status, len), (S_OK, 1));
        let file = std::fs::read(s.disk.path()).unwrap();
        assert!(file[1536..2048].iter().all(|&b| b == 0xab));
        let (status, _) = submit(&s, &mut dev, T_FLUSH, 0, 1, false);
        assert_eq!(status, S_OK);
        assert_eq!(dev.stats.flushes, 1);
    }

    #[test]
    fn blk_write_to_readonly_disk_returns_ioerr() {
        let s = setup(u64::MAX);
        let mut dev = blk(&s, true);
        assert_ne!(dev.features() & F_RO, 0);
        let (status, _) = submit(&s, &mut dev, T_OUT, 0, 512, false);
        assert_eq!(status, S_IOERR);
        assert_eq!(
            std::fs::read(s.disk.path()).unwrap()[1],
            7,
            "file untouched"
        );
    }

    #[test]
    fn blk_read_past_capacity_returns_ioerr() {
        let s = setup(u64::MAX);
        let mut dev = blk(&s, false);
        let (status, len) = submit(&s, &mut dev, T_IN, 7, 1024, true);
        assert_eq!((status, len), (S_IOERR, 1));
        let (status, _) = submit(&s, &mut dev, T_IN, u64::MAX / 256, 512, true);
        assert_eq!(status, S_IOERR, "sector * 512 overflows");
    }

    #[test]
    fn blk_data_page_not_mapped_by_iommu_returns_ioerr_without_touching_ram() {
        // The device's DMA goes through its IOMMU address space: a buffer the IOMMU
        // does not map fails the request (and never reaches guest-physical DATA).
        let s = setup(SHIFT + DATA);
        let mut dev = blk(&s, false);
        s.mem.write_slice(&[0x5a; 512], GuestAddress(DATA)).unwrap();
        let (status, _) = submit(&s, &mut dev, T_IN, 0, 512, true);
        assert_eq!(status, S_IOERR);
        let mut got = [0u8; 512];
        s.mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
        assert!(got.iter().all(|&b| b == 0x5a));
        assert_eq!(dev.stats.errors, 1);
    }

    #[test]
    fn blk_unknown_request_type_returns_unsupp_and_get_id_returns_name() {
        let s = setup(u64::MAX);
        let mut dev = blk(&s, false);
        let (status, _) = submit(&s, &mut dev, 0x77, 0, 512, true);
        assert_eq!(status, S_UNSUPP);
        let (status, len) = submit(&s, &mut dev, T_GET_ID, 0, 20, true);
        assert_eq!((status, len), (S_OK, 21));
        let mut id = [0u8; 13];
        s.mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
        assert_eq!(&id, b"iommu-vmm-blk");
    }

    #[test]
    fn blk_header_in_writable_descriptor_is_rejected() {
        let s = setup(u64::MAX);
        let mut dev = blk(&s, false);
        let mock = MockSplitQueue::create(&s.dma, GuestAddress(SHIFT), 16);
        mock.build_desc_chain(&[desc(SHIFT + HDR, 16, true), desc(SHIFT + STATUS, 1, true)])
            .unwrap();
        let mut q: Queue = mock.create_queue().unwrap();
        assert!(dev.process_queue(0, &mut q, &s.dma));
        assert_eq!(s.mem.read_obj::<u8>(GuestAddress(STATUS)).unwrap(), S_IOERR);
    }

    #[test]
    fn blk_config_reports_capacity_in_sectors() {
        let s = setup(u64::MAX);
        let dev = blk(&s, false);
        let mut cap = [0u8; 8];
        dev.read_config(0, &mut cap);
        assert_eq!(u64::from_le_bytes(cap), 8);
        let mut past = [0xffu8; 4];
        dev.read_config(0x1000, &mut past);
        assert_eq!(past, [0; 4]);
    }
}
