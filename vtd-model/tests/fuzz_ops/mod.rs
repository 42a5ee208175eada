//! The fuzz input decoder and invariant checks, shared by the cargo-fuzz
//! target (`fuzz/fuzz_targets/vtd_ops.rs`) and the regression test that
//! replays every saved input (`tests/fuzz_regressions.rs`).
#![allow(dead_code)]

use std::sync::Arc;

use iommu_emulator::testing::{FakeRam, RecordingMsi};
use iommu_emulator::{
    DmaRequest, Gpa, GuestRam, Iommu, Pasid, PasidTag, Perm, RequestKind, Rid, SourceId,
};
use vtd_model::{PageRequest, PageRequestOutcome, Vtd, VtdConfig};

/// Guest RAM of the fuzzed unit: small so that guessed pointers hit it.
pub const RAM: u64 = 4 << 20;
/// Upper bound on guest-memory accesses one translation may make: root,
/// context, PASID directory and entry, a nested walk (5 first-level levels
/// each translated by a 5-level second-level walk, plus the output), A/D
/// updates, with restarts.
pub const MAX_READS_PER_DMA: u64 = 600;
/// Upper bound for one register write: a full invalidation queue (128
/// pages of 16-byte descriptors, two reads and one status write each).
pub const MAX_ACCESSES_PER_MMIO: u64 = 32768 * 4 + 16;

use iommu_emulator::fuzz::ByteCursor as Cursor;

fn config(sel: u8) -> VtdConfig {
    let mut c = VtdConfig::default();
    c.scalable_mode = sel & 1 != 0;
    c.aw_bits = [39, 48, 57, 48][usize::from((sel >> 1) & 3)];
    c.device_iotlb = sel & 8 != 0;
    c.fault_regs = if sel & 16 != 0 { 1 } else { 8 };
    c.caching_mode = sel & 32 != 0;
    c.qi = c.scalable_mode || sel & 64 == 0;
    c.iotlb = iommu_emulator::CacheConfig::new(4, if sel & 128 != 0 { 0 } else { 2 });
    // Page requests and interrupt remapping (EIME with 4-level widths).
    c.prs = c.scalable_mode;
    c.intremap = true;
    c.eim = sel & 4 != 0;
    c.perfmon = sel & 16 == 0;
    c
}

/// Decode and run one input; panics (for the fuzzer) on a broken invariant.
pub fn run(data: &[u8]) {
    let mut c = Cursor::new(data);
    let Some(sel) = c.u8() else { return };
    let ram = Arc::new(FakeRam::new(RAM));
    let msi = Arc::new(RecordingMsi::new());
    let Ok(vtd) = Vtd::new(config(sel), msi.clone()) else {
        return;
    };
    let mut steps = 0u32;
    while let Some(op) = c.u8() {
        steps += 1;
        if steps > 4096 {
            break;
        }
        let before = ram.reads() + ram.writes() + ram.out_of_range();
        // Ops 0xe0.. are page requests and interrupts; below, the original
        // eight kinds (saved inputs keep their meaning).
        let kind = if op >= 0xe0 { 8 + (op & 1) } else { op % 8 };
        match kind {
            // register write (aligned, 4 or 8 bytes, anywhere in the page)
            0 | 1 => {
                let Some(off) = c.u16() else { break };
                let Some(v) = c.u64() else { break };
                let size = if op & 8 != 0 { 8 } else { 4 };
                vtd.mmio_write(ram.as_ref(), u64::from(off & 0xffc), size, v);
                let after = ram.reads() + ram.writes() + ram.out_of_range();
                assert!(
                    after - before <= MAX_ACCESSES_PER_MMIO,
                    "mmio write made {} accesses",
                    after - before
                );
            }
            // register read, any offset and size
            2 => {
                let Some(off) = c.u16() else { break };
                let Some(size) = c.u8() else { break };
                let _ = vtd.mmio_read(ram.as_ref(), u64::from(off), size % 9);
            }
            // guest-memory write of a u64 inside RAM
            3 | 4 => {
                let Some(a) = c.u32() else { break };
                let Some(v) = c.u64() else { break };
                let _ = ram.write_u64(Gpa((u64::from(a) % RAM) & !7), v);
            }
            // DMA request
            5 | 6 => {
                let Some(r) = c.u16() else { break };
                let Some(flags) = c.u8() else { break };
                let Some(p) = c.u32() else { break };
                let Some(addr) = c.u64() else { break };
                let mut access = Perm::empty();
                if flags & 1 != 0 {
                    access |= Perm::R;
                }
                if flags & 2 != 0 {
                    access |= Perm::W;
                }
                let mut req = DmaRequest::new(SourceId::Pci(Rid(r)), addr, 4, access);
                if flags & 4 != 0 {
                    req = req.with_pasid(PasidTag {
                        pasid: Pasid::new(p & 0xf_ffff).unwrap_or_default(),
                        privileged: flags & 8 != 0,
                        exec: flags & 16 != 0,
                    });
                }
                req = req.with_kind(match (flags >> 5) & 3 {
                    1 => RequestKind::AtsTranslation,
                    2 => RequestKind::Translated,
                    _ => RequestKind::Untranslated,
                });
                let res = vtd.translate(ram.as_ref(), &req);
                let after = ram.reads() + ram.writes() + ram.out_of_range();
                assert!(
                    after - before <= MAX_READS_PER_DMA,
                    "translation made {} accesses",
                    after - before
                );
                if let Err(f) = res {
                    assert!(f.reason != 0, "fault without reason");
                }
            }
            // a page request from a device
            8 => {
                let Some(r) = c.u16() else { break };
                let Some(flags) = c.u8() else { break };
                let Some(p) = c.u32() else { break };
                let Some(addr) = c.u64() else { break };
                let req = PageRequest {
                    rid: Rid(r),
                    pasid: (flags & 1 != 0).then(|| PasidTag {
                        pasid: Pasid::new(p & 0xf_ffff).unwrap_or_default(),
                        privileged: flags & 2 != 0,
                        exec: flags & 4 != 0,
                    }),
                    addr,
                    read: flags & 8 != 0,
                    write: flags & 16 != 0,
                    lpig: flags & 32 != 0,
                    prg_index: u16::try_from(p >> 20).unwrap_or(0),
                    private_data: (flags & 64 != 0).then_some([addr, u64::from(p)]),
                };
                let out = vtd.page_request(ram.as_ref(), &req);
                let after = ram.reads() + ram.writes() + ram.out_of_range();
                assert!(
                    after - before <= 16,
                    "page request made {} accesses",
                    after - before
                );
                if let PageRequestOutcome::AutoResponded(resp) = out {
                    assert!(req.needs_response() && resp.prg_index < 512);
                }
            }
            // an interrupt: MSI or IOAPIC entry
            9 => {
                let Some(r) = c.u16() else { break };
                let Some(data) = c.u32() else { break };
                let Some(addr) = c.u64() else { break };
                let res = if data & (1 << 31) != 0 {
                    vtd.remap_ioapic(ram.as_ref(), Rid(r), addr)
                } else {
                    vtd.remap_msi(ram.as_ref(), Rid(r), addr, data)
                };
                let after = ram.reads() + ram.writes() + ram.out_of_range();
                assert!(
                    after - before <= 2,
                    "interrupt made {} accesses",
                    after - before
                );
                if let Err(f) = res {
                    assert!(
                        (0x20..=0x26).contains(&f.reason),
                        "IR fault {:#x}",
                        f.reason
                    );
                }
            }
            // a plausible structure write: a pointer to another page with low flag bits
            _ => {
                let Some(a) = c.u32() else { break };
                let Some(page) = c.u16() else { break };
                let Some(low) = c.u8() else { break };
                let v = ((u64::from(page) << 12) % RAM) | u64::from(low);
                let _ = ram.write_u64(Gpa((u64::from(a) % RAM) & !7), v);
            }
        }
    }
    let p = vtd.prq_stats();
    assert_eq!(
        p.received,
        p.queued + p.overflow_auto_responded + p.overflow_dropped + p.rejected
    );
    let s = vtd.stats();
    assert!(s.faults >= s.faults_recorded);
    let _ = s.to_string();
}
