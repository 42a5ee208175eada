//! The two ways a model reaches outside itself: guest RAM and MSIs.
//!
//! A model never owns guest memory: it is passed into each call, as
//! rust-vmm's vm-memory does for devices. [`GuestRam`] is implemented for
//! every `vm_memory::GuestMemoryBackend` (so `GuestMemoryMmap` works as is)
//! and by the sparse fake in `testing`.

use std::sync::atomic::{AtomicU64, Ordering};

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, VolatileMemory};

use crate::types::Gpa;

/// A guest-memory access that could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MemError {
    /// The range is not (entirely) backed by guest RAM.
    #[error("guest-physical range {addr:#x}+{len} is not RAM")]
    OutOfRange {
        /// Start of the access.
        addr: u64,
        /// Its length.
        len: usize,
    },
    /// An atomic access was not naturally aligned.
    #[error("atomic access at {addr:#x} is not aligned")]
    Misaligned {
        /// The address.
        addr: u64,
    },
}

/// Guest-physical memory as a model sees it: byte reads and writes, and the
/// atomic compare-and-exchange needed for accessed/dirty-bit updates
/// (VT-d 3.6.2 / 3.7.2; SMMU HTTU, IHI 0070 3.13).
///
/// Every method fails cleanly for addresses outside guest RAM; nothing here
/// may touch host memory outside it.
pub trait GuestRam: Send + Sync {
    /// Read `buf.len()` bytes at `gpa`.
    fn read(&self, gpa: Gpa, buf: &mut [u8]) -> Result<(), MemError>;

    /// Write `data` at `gpa`.
    fn write(&self, gpa: Gpa, data: &[u8]) -> Result<(), MemError>;

    /// Atomically replace the naturally aligned u64 at `gpa` with `new` if it
    /// holds `current`. Returns `Ok(Ok(current))` on success and
    /// `Ok(Err(actual))` when the value differed.
    fn compare_exchange_u64(
        &self,
        gpa: Gpa,
        current: u64,
        new: u64,
    ) -> Result<Result<u64, u64>, MemError>;

    /// Read a little-endian u64.
    fn read_u64(&self, gpa: Gpa) -> Result<u64, MemError> {
        let mut b = [0u8; 8];
        self.read(gpa, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Read a little-endian u32.
    fn read_u32(&self, gpa: Gpa) -> Result<u32, MemError> {
        let mut b = [0u8; 4];
        self.read(gpa, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Write a little-endian u64.
    fn write_u64(&self, gpa: Gpa, value: u64) -> Result<(), MemError> {
        self.write(gpa, &value.to_le_bytes())
    }

    /// Write a little-endian u32.
    fn write_u32(&self, gpa: Gpa, value: u32) -> Result<(), MemError> {
        self.write(gpa, &value.to_le_bytes())
    }
}

/// Read `N` consecutive little-endian u64 words (a 128-, 256- or 512-bit
/// table entry, queue descriptor or command) with one guest-memory read
/// per 64 bytes, so an entry is fetched whole, as hardware does.
pub fn read_words<const N: usize>(mem: &dyn GuestRam, gpa: Gpa) -> Result<[u64; N], MemError> {
    let oor = MemError::OutOfRange {
        addr: gpa.0,
        len: N.saturating_mul(8),
    };
    let mut out = [0u64; N];
    let mut buf = [0u8; 64];
    let mut addr = gpa.0;
    for chunk in out.chunks_mut(8) {
        let bytes = buf.get_mut(..chunk.len().saturating_mul(8)).ok_or(oor)?;
        mem.read(Gpa(addr), bytes)?;
        for (w, b) in chunk.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut le = [0u8; 8];
            le.copy_from_slice(b);
            *w = u64::from_le_bytes(le);
        }
        addr = addr.checked_add(64).ok_or(oor)?;
    }
    Ok(out)
}

impl<M: GuestMemoryBackend + Send + Sync> GuestRam for M {
    fn read(&self, gpa: Gpa, buf: &mut [u8]) -> Result<(), MemError> {
        Bytes::read_slice(self, buf, GuestAddress(gpa.0)).map_err(|_| MemError::OutOfRange {
            addr: gpa.0,
            len: buf.len(),
        })
    }

    fn write(&self, gpa: Gpa, data: &[u8]) -> Result<(), MemError> {
        Bytes::write_slice(self, data, GuestAddress(gpa.0)).map_err(|_| MemError::OutOfRange {
            addr: gpa.0,
            len: data.len(),
        })
    }

    /// An aligned u64 is read with one 8-byte load (a table entry read
    /// whole, as hardware does, and without the generic byte-copy path);
    /// an unaligned one through [`GuestRam::read`].
    fn read_u64(&self, gpa: Gpa) -> Result<u64, MemError> {
        if !gpa.0.is_multiple_of(8) {
            let mut b = [0u8; 8];
            GuestRam::read(self, gpa, &mut b)?;
            return Ok(u64::from_le_bytes(b));
        }
        let oor = MemError::OutOfRange {
            addr: gpa.0,
            len: 8,
        };
        let slice = GuestMemoryBackend::get_slice(self, GuestAddress(gpa.0), 8).map_err(|_| oor)?;
        let atomic: &AtomicU64 = slice.get_atomic_ref(0).map_err(|_| oor)?;
        Ok(u64::from_le(atomic.load(Ordering::Acquire)))
    }

    fn compare_exchange_u64(
        &self,
        gpa: Gpa,
        current: u64,
        new: u64,
    ) -> Result<Result<u64, u64>, MemError> {
        if !gpa.0.is_multiple_of(8) {
            return Err(MemError::Misaligned { addr: gpa.0 });
        }
        let oor = MemError::OutOfRange {
            addr: gpa.0,
            len: 8,
        };
        let slice = GuestMemoryBackend::get_slice(self, GuestAddress(gpa.0), 8).map_err(|_| oor)?;
        let atomic: &AtomicU64 = slice.get_atomic_ref(0).map_err(|_| oor)?;
        Ok(atomic
            .compare_exchange(
                current.to_le(),
                new.to_le(),
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .map(u64::from_le)
            .map_err(u64::from_le))
    }
}

/// A message-signalled interrupt as the IOMMU writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MsiMessage {
    /// Address (upper and lower halves combined).
    pub addr: u64,
    /// Data.
    pub data: u32,
}

/// Where a model sends its interrupts (fault events, invalidation completion,
/// page requests, SMMU event/GERROR/PRI queues, CMD_SYNC completions).
///
/// IOMMU-generated MSIs are not translated by the IOMMU itself
/// (VT-d 5.1.6 / IHI 0070 3.18), so this is a separate path from DMA.
pub trait MsiSink: Send + Sync {
    /// Deliver `msg`.
    fn raise_msi(&self, msg: MsiMessage);
}

/// An MSI sink that drops everything (for tools that do not model interrupts).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoMsi;

impl MsiSink for NoMsi {
    fn raise_msi(&self, _msg: MsiMessage) {}
}
