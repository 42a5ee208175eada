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
        config[12..16].copy_from_slice(&u32::from(QUEUE_SIZE - 2).to_le_bytes());
        let mut id = [0u8; ID_BYTES];
        let name = b"iommu-vmm-blk";
        id[..name.len()].copy_from_slice(name);
        Ok(Blk {
            file,
            capacity_sectors,
            readonly,
            id,
            config,
            stats: BlkStats::default(),
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
                    .is_some_and(|end| end <= self.capacity_sectors * SECTOR_SIZE);
                if !in_range {
                    return (S_IOERR, 0);
                }
                let mut off = start;
                let mut buf = vec![0u8; CHUNK];
                let mut written = 0u32;
                for d in data {
                    let mut done = 0u64;
                    while done < u64::from(d.len) {
                        let n = (u64::from(d.len) - done).min(CHUNK as u64) as usize;
                        let chunk = &mut buf[..n];
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
                        done += n as u64;
                        off += n as u64;
                        if is_read {
                            written = written.saturating_add(n as u32);
                        }
                    }
                }
                if is_read {
                    self.stats.reads += 1;
                    self.stats.bytes_read += total;
                } else {
                    self.stats.writes += 1;
                    self.stats.bytes_written += total;
                }
                (S_OK, written)
            }
            T_FLUSH => {
                self.stats.flushes += 1;
                match self.file.sync_data() {
                    Ok(()) => (S_OK, 0),
                    Err(_) => (S_IOERR, 0),
                }
            }
            T_GET_ID => {
                let Some(d) = data.first().filter(|d| d.write) else {
                    return (S_IOERR, 0);
                };
                let n = (d.len as usize).min(ID_BYTES);
                if mem
                    .write_slice(&self.id[..n], GuestAddress(d.addr))
                    .is_err()
                {
                    return (S_IOERR, 0);
                }
                (S_OK, n as u32)
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

    fn process_queue(&mut self, _index: usize, queue: &mut Queue, mem: &DmaMemory) -> bool {
        let mut used_any = false;
        while let Some(chain) = queue.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            let descs: Vec<Desc> = chain
                .map(|d| Desc {
                    addr: d.addr().0,
                    len: d.len(),
                    write: d.is_write_only(),
                })
                .collect();
            let (status, data_len, status_addr) = match descs.split_last() {
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
                self.stats.errors += 1;
            }
            if let Err(e) = queue.add_used(mem, head, len) {
                tracing::warn!("virtio-blk: add_used: {e}");
                break;
            }
            used_any = true;
        }
        used_any
    }
}
