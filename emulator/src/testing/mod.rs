//! Fakes for tests, fuzzers and benches (feature `test-utils`).
//!
//! - [`FakeRam`]: sparse guest RAM of a given size that counts reads and
//!   writes and refuses anything outside it;
//! - [`RecordingMsi`]: an MSI sink that keeps every message;
//! - page-table builders for the walkers' formats (in submodules).
//!
//! These fakes run only in tests, fuzzers and benches, never on a guest's
//! behalf in the VMM, so the model crates' no-panic lints are relaxed here;
//! bounds are still checked before every slice index.
#![allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation
)]

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::mem::{GuestRam, MemError, MsiMessage, MsiSink};
use crate::types::Gpa;

const PAGE: u64 = 4096;

/// Sparse guest RAM: `[0, size)` reads as zero until written. Pages are
/// allocated on first write only, so a fuzzer can hand out a huge RAM size
/// cheaply; an access outside `[0, size)` fails and is counted.
#[derive(Debug)]
pub struct FakeRam {
    size: u64,
    pages: Mutex<BTreeMap<u64, Box<[u8; PAGE as usize]>>>,
    reads: AtomicU64,
    writes: AtomicU64,
    out_of_range: AtomicU64,
    /// Simple bump allocator for builders (next free page).
    next_free: AtomicU64,
}

impl FakeRam {
    /// RAM of `size` bytes. The page allocator starts at 1 MiB.
    pub fn new(size: u64) -> Self {
        FakeRam {
            size,
            pages: Mutex::new(BTreeMap::new()),
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            out_of_range: AtomicU64::new(0),
            next_free: AtomicU64::new(0x10_0000),
        }
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Reads made so far (calls, not bytes).
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// Writes made so far (calls, not bytes).
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// Accesses refused because they fell outside RAM.
    pub fn out_of_range(&self) -> u64 {
        self.out_of_range.load(Ordering::Relaxed)
    }

    /// Reset the read/write counters.
    pub fn reset_counters(&self) {
        self.reads.store(0, Ordering::Relaxed);
        self.writes.store(0, Ordering::Relaxed);
    }

    /// Number of pages ever written.
    pub fn pages_touched(&self) -> usize {
        self.pages.lock().map(|p| p.len()).unwrap_or(0)
    }

    /// Copy every page ever written into `dst` (for instance a
    /// `GuestMemoryMmap`, so that tables built here can be walked through
    /// the memory backend the VMM uses). Stops at the first page `dst`
    /// refuses.
    pub fn copy_to(&self, dst: &dyn GuestRam) -> Result<(), MemError> {
        let pages = self.lock();
        for (addr, data) in pages.iter() {
            dst.write(Gpa(*addr), &data[..])?;
        }
        Ok(())
    }

    /// Allocate `n` zeroed, page-aligned pages (bump allocator for
    /// builders). Returns `None` when RAM is exhausted.
    pub fn alloc_pages(&self, n: u64) -> Option<Gpa> {
        let bytes = n.checked_mul(PAGE)?;
        let base = self.next_free.fetch_add(bytes, Ordering::Relaxed);
        (base.checked_add(bytes)? <= self.size).then_some(Gpa(base))
    }

    fn check(&self, addr: u64, len: usize) -> Result<(), MemError> {
        let end = u64::try_from(len).ok().and_then(|l| addr.checked_add(l));
        match end {
            Some(end) if end <= self.size => Ok(()),
            _ => {
                self.out_of_range.fetch_add(1, Ordering::Relaxed);
                Err(MemError::OutOfRange { addr, len })
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Box<[u8; PAGE as usize]>>> {
        self.pages
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl GuestRam for FakeRam {
    fn read(&self, gpa: Gpa, buf: &mut [u8]) -> Result<(), MemError> {
        self.check(gpa.0, buf.len())?;
        self.reads.fetch_add(1, Ordering::Relaxed);
        let pages = self.lock();
        let mut addr = gpa.0;
        let mut done = 0usize;
        while done < buf.len() {
            let page = addr & !(PAGE - 1);
            let off = usize::try_from(addr - page).unwrap_or(0);
            let n = (PAGE as usize - off).min(buf.len() - done);
            let dst = &mut buf[done..done + n];
            match pages.get(&page) {
                Some(p) => dst.copy_from_slice(&p[off..off + n]),
                None => dst.fill(0),
            }
            done += n;
            addr += n as u64;
        }
        Ok(())
    }

    fn write(&self, gpa: Gpa, data: &[u8]) -> Result<(), MemError> {
        self.check(gpa.0, data.len())?;
        self.writes.fetch_add(1, Ordering::Relaxed);
        let mut pages = self.lock();
        let mut addr = gpa.0;
        let mut done = 0usize;
        while done < data.len() {
            let page = addr & !(PAGE - 1);
            let off = usize::try_from(addr - page).unwrap_or(0);
            let n = (PAGE as usize - off).min(data.len() - done);
            let p = pages
                .entry(page)
                .or_insert_with(|| Box::new([0u8; PAGE as usize]));
            p[off..off + n].copy_from_slice(&data[done..done + n]);
            done += n;
            addr += n as u64;
        }
        Ok(())
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
        self.check(gpa.0, 8)?;
        // Hold the page lock across read and write: atomic w.r.t. other
        // FakeRam users.
        let mut pages = self.lock();
        let page = gpa.0 & !(PAGE - 1);
        let off = usize::try_from(gpa.0 - page).unwrap_or(0);
        let p = pages
            .entry(page)
            .or_insert_with(|| Box::new([0u8; PAGE as usize]));
        let mut b = [0u8; 8];
        b.copy_from_slice(&p[off..off + 8]);
        let actual = u64::from_le_bytes(b);
        self.reads.fetch_add(1, Ordering::Relaxed);
        if actual == current {
            p[off..off + 8].copy_from_slice(&new.to_le_bytes());
            self.writes.fetch_add(1, Ordering::Relaxed);
            Ok(Ok(actual))
        } else {
            Ok(Err(actual))
        }
    }
}

/// An MSI sink that records every message.
#[derive(Debug, Default)]
pub struct RecordingMsi {
    msgs: Mutex<Vec<MsiMessage>>,
}

impl RecordingMsi {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Messages so far, in order.
    pub fn messages(&self) -> Vec<MsiMessage> {
        self.msgs.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Take and clear the messages.
    pub fn take(&self) -> Vec<MsiMessage> {
        self.msgs
            .lock()
            .map(|mut m| std::mem::take(&mut *m))
            .unwrap_or_default()
    }
}

impl MsiSink for RecordingMsi {
    fn raise_msi(&self, msg: MsiMessage) {
        if let Ok(mut m) = self.msgs.lock() {
            m.push(msg);
        }
    }
}

/// (PASID, IOVA page) -> (GPA page, rights).
type PageMap = std::collections::HashMap<(Option<u32>, u64), (u64, crate::Perm)>;

/// A simple test IOMMU: a flat map of 4 KiB IOVA pages per PASID (or none)
/// to guest-physical pages with permissions, ignoring the requester. It
/// counts translations and faults and returns `FaultKind::NotPresent` /
/// `FaultKind::Permission` faults. Not an architectural model: a stand-in
/// for tests of the glue, devices and tools.
#[derive(Debug, Default)]
pub struct MapIommu {
    map: std::sync::RwLock<PageMap>,
    translations: AtomicU64,
    faults: AtomicU64,
}

impl MapIommu {
    /// An empty map: every request faults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Map `len` bytes (rounded up to pages) at `iova` to `gpa` for `pasid`.
    pub fn map(&self, pasid: Option<u32>, iova: u64, gpa: u64, len: u64, perm: crate::Perm) {
        let mut m = self
            .map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let pages = len.div_ceil(PAGE);
        for i in 0..pages {
            m.insert((pasid, (iova >> 12) + i), ((gpa >> 12) + i, perm));
        }
    }

    /// Unmap and invalidate: once this returns no translation uses the old
    /// mapping (the map is the only cache).
    pub fn unmap(&self, pasid: Option<u32>, iova: u64, len: u64) {
        let mut m = self
            .map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let pages = len.div_ceil(PAGE);
        for i in 0..pages {
            m.remove(&(pasid, (iova >> 12) + i));
        }
    }

    /// Successful translations so far.
    pub fn translations(&self) -> u64 {
        self.translations.load(Ordering::Relaxed)
    }

    /// Faults so far.
    pub fn faults(&self) -> u64 {
        self.faults.load(Ordering::Relaxed)
    }
}

impl crate::Iommu for MapIommu {
    fn translate(
        &self,
        _mem: &dyn GuestRam,
        req: &crate::DmaRequest,
    ) -> Result<crate::Translation, crate::Fault> {
        let pasid = req.pasid.map(|t| t.pasid.get());
        let m = self
            .map
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let fault = |kind| crate::Fault {
            kind,
            reason: 0,
            addr: req.addr,
            level: None,
            recorded: false,
            cycles: crate::Cycles(1),
        };
        let Some(&(page, perm)) = m.get(&(pasid, req.addr.0 >> 12)) else {
            self.faults.fetch_add(1, Ordering::Relaxed);
            return Err(fault(crate::FaultKind::NotPresent));
        };
        if !perm.allows(req.access) {
            self.faults.fetch_add(1, Ordering::Relaxed);
            return Err(fault(crate::FaultKind::Permission));
        }
        self.translations.fetch_add(1, Ordering::Relaxed);
        Ok(crate::Translation {
            output: Gpa((page << 12) | (req.addr.0 & (PAGE - 1))),
            page_size: crate::PageSize::SIZE_4K,
            perm,
            privileged: false,
            cycles: crate::Cycles(1),
            path: crate::CachePath::WALK,
            walk_reads: 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_ram_reads_zero_until_written_and_counts() {
        let r = FakeRam::new(1 << 30);
        assert_eq!(r.read_u64(Gpa(0x1000)).unwrap(), 0);
        r.write_u64(Gpa(0x1ffc), 0x1122_3344_5566_7788).unwrap(); // crosses a page
        assert_eq!(r.read_u64(Gpa(0x1ffc)).unwrap(), 0x1122_3344_5566_7788);
        assert_eq!((r.reads(), r.writes()), (2, 1));
        assert_eq!(r.pages_touched(), 2);
    }

    #[test]
    fn fake_ram_copy_to_copies_written_pages() {
        let a = FakeRam::new(1 << 20);
        let b = FakeRam::new(1 << 20);
        a.write_u64(Gpa(0x3008), 0x1122).unwrap();
        a.write_u64(Gpa(0x8000), 7).unwrap();
        a.copy_to(&b).unwrap();
        assert_eq!(b.read_u64(Gpa(0x3008)).unwrap(), 0x1122);
        assert_eq!(b.read_u64(Gpa(0x8000)).unwrap(), 7);
        assert_eq!(b.pages_touched(), 2);
        let small = FakeRam::new(0x4000);
        assert!(a.copy_to(&small).is_err());
    }

    #[test]
    fn fake_ram_refuses_outside_ram() {
        let r = FakeRam::new(0x2000);
        assert!(r.read_u64(Gpa(0x1ff8)).is_ok());
        assert!(r.read_u64(Gpa(0x1ffc)).is_err());
        assert!(r.write_u64(Gpa(u64::MAX - 3), 1).is_err());
        assert_eq!(r.out_of_range(), 2);
    }

    #[test]
    fn read_words_fetches_an_entry_whole_across_a_page() {
        let r = FakeRam::new(0x3000);
        for i in 0..10u64 {
            r.write_u64(Gpa(0xfe0 + 8 * i), 0x100 + i).unwrap();
        }
        r.reset_counters();
        let w = crate::mem::read_words::<8>(&r, Gpa(0xfe0)).unwrap();
        assert_eq!(w, [0x100, 0x101, 0x102, 0x103, 0x104, 0x105, 0x106, 0x107]);
        assert_eq!(r.reads(), 1, "one guest-memory read for a 512-bit entry");
        let w = crate::mem::read_words::<10>(&r, Gpa(0xfe0)).unwrap();
        assert_eq!(w[9], 0x109);
        assert!(crate::mem::read_words::<4>(&r, Gpa(0x2ff0)).is_err());
    }

    #[test]
    fn fake_ram_compare_exchange() {
        let r = FakeRam::new(0x2000);
        r.write_u64(Gpa(8), 5).unwrap();
        assert_eq!(r.compare_exchange_u64(Gpa(8), 5, 7).unwrap(), Ok(5));
        assert_eq!(r.compare_exchange_u64(Gpa(8), 5, 9).unwrap(), Err(7));
        assert!(r.compare_exchange_u64(Gpa(9), 7, 9).is_err());
    }

    #[test]
    fn recording_msi_keeps_order() {
        let m = RecordingMsi::new();
        m.raise_msi(MsiMessage {
            addr: 0xfee0_0000,
            data: 1,
        });
        m.raise_msi(MsiMessage {
            addr: 0xfee0_0000,
            data: 2,
        });
        assert_eq!(
            m.take().iter().map(|x| x.data).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert!(m.messages().is_empty());
    }
}

pub mod vmsa_pt;
pub mod x86_pt;
