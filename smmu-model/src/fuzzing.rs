//! The fuzzer's interpreter (feature `test-utils`): an input is decoded
//! into a sequence of API calls (register accesses, guest-memory writes of
//! STEs, CDs, commands and page-table words, DMA requests, page requests),
//! and the model's invariants are checked after each step. Used by
//! `fuzz/fuzz_targets/mmio_dma.rs` and by the regression tests that keep
//! every input the fuzzer found.
//!
//! Test tooling, not model code: the arithmetic here is on the fuzzer's
//! own small constants, so the model crate's arithmetic lint is relaxed.
#![allow(clippy::arithmetic_side_effects)]

use std::sync::Arc;

use iommu_emulator::testing::{FakeRam, RecordingMsi};
use iommu_emulator::{
    CachePath, DmaRequest, Gpa, GuestRam, Iommu, Pasid, PasidTag, Perm, RequestKind, SourceId,
};

use crate::regs::{self, queue};
use crate::structs::event::PageRequest;
use crate::{MAX_DEVICE_MESSAGES, Smmu, SmmuConfig};

/// Guest RAM size of a fuzz run.
pub const RAM: u64 = 16 << 20;
const STRTAB: u64 = 0x1_0000;
const CMDQ: u64 = 0x4_0000;
const EVTQ: u64 = 0x5_0000;
const PRIQ: u64 = 0x6_0000;
const CDTAB: u64 = 0x8_0000;
const PT: u64 = 0x10_0000;

struct Input<'a> {
    data: &'a [u8],
}

impl Input<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(*b)
    }

    fn u32(&mut self) -> Option<u32> {
        let mut v = 0u32;
        for i in 0..4u32 {
            v |= u32::from(self.u8()?) << (i * 8);
        }
        Some(v)
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from(self.u32()?) | (u64::from(self.u32()?) << 32))
    }
}

const OFFSETS: [u64; 28] = [
    regs::CR0,
    regs::CR1,
    regs::CR2,
    regs::GBPA,
    regs::IRQ_CTRL,
    regs::GERRORN,
    regs::GERROR_IRQ_CFG0,
    regs::GERROR_IRQ_CFG1,
    regs::STRTAB_BASE,
    regs::STRTAB_BASE_CFG,
    regs::CMDQ_BASE,
    regs::CMDQ_PROD,
    regs::CMDQ_CONS,
    regs::EVENTQ_BASE,
    regs::EVENTQ_PROD,
    regs::EVENTQ_CONS,
    regs::EVENTQ_IRQ_CFG0,
    regs::PRIQ_BASE,
    regs::PRIQ_PROD,
    regs::PRIQ_CONS,
    regs::PRIQ_IRQ_CFG0,
    regs::IDR0,
    regs::IDR1,
    regs::CR0ACK,
    regs::GERROR,
    0xa8,
    0xcc,
    0xfff0,
];

/// A Linux-like bring-up so the fuzzer starts from a working SMMU: linear
/// stream table of 256 STEs, queues, MSIs outside RAM, everything enabled.
fn bring_up(s: &Smmu, mem: &dyn GuestRam) {
    s.mmio_write(mem, regs::STRTAB_BASE, 8, STRTAB);
    s.mmio_write(mem, regs::STRTAB_BASE_CFG, 4, 8);
    s.mmio_write(mem, regs::CMDQ_BASE, 8, CMDQ | 6);
    s.mmio_write(mem, regs::EVENTQ_BASE, 8, EVTQ | 4);
    s.mmio_write(mem, regs::PRIQ_BASE, 8, PRIQ | 4);
    s.mmio_write(mem, regs::GERROR_IRQ_CFG0, 8, RAM + 0x40);
    s.mmio_write(mem, regs::EVENTQ_IRQ_CFG0, 8, RAM + 0x80);
    s.mmio_write(mem, regs::PRIQ_IRQ_CFG0, 8, RAM + 0xc0);
    s.mmio_write(mem, regs::IRQ_CTRL, 4, 7);
    s.mmio_write(mem, regs::CR0, 4, 0x1f);
}

/// Check the invariants that must hold after every step.
fn check(s: &Smmu, mem: &dyn GuestRam) {
    let r = |o| s.mmio_read(mem, o, 4);
    // 6.3.9-10 / 6.3.16-17: updates are acknowledged at once.
    assert_eq!(r(regs::CR0), r(regs::CR0ACK), "CR0ACK follows CR0");
    assert_eq!(
        r(regs::IRQ_CTRL),
        r(regs::IRQ_CTRLACK),
        "IRQ_CTRLACK follows IRQ_CTRL"
    );
    // GBPA.UPDATE always reads 0: updates complete at once.
    assert_eq!(r(regs::GBPA) & regs::gbpa::UPDATE, 0);
    // Processing is complete and bounded: with the queue on and no error,
    // CONS has caught up with PROD.
    let cmdq_base = s.mmio_read(mem, regs::CMDQ_BASE, 8);
    let log2 = (cmdq_base & queue::LOG2SIZE).min(u64::from(s.config.cmdq_log2));
    let mask = (2u64 << log2).wrapping_sub(1);
    let err_active = (r(regs::GERROR) ^ r(regs::GERRORN)) & regs::gerror::CMDQ_ERR != 0;
    if r(regs::CR0ACK) & regs::cr0::CMDQEN != 0 && !err_active {
        assert_eq!(
            r(regs::CMDQ_CONS) & mask,
            r(regs::CMDQ_PROD) & mask,
            "CMDQ fully consumed"
        );
    }
    let st = s.stats();
    assert!(
        st.events_written.saturating_add(st.events_lost())
            <= st.events.iter().map(|e| e.1).sum::<u64>()
    );
    assert!(s.outbox_len() <= MAX_DEVICE_MESSAGES);
}

/// Run one fuzz input. Panics (the fuzzer's crash) when an invariant is
/// broken.
pub fn run(data: &[u8]) {
    let ram = FakeRam::new(RAM);
    let msi = Arc::new(RecordingMsi::new());
    let Ok(s) = Smmu::new(SmmuConfig::default(), msi.clone()) else {
        return;
    };
    let mem: &dyn GuestRam = &ram;
    let mut inp = Input { data };
    if inp.u8().is_some_and(|b| b & 1 == 1) {
        bring_up(&s, mem);
    }
    let mut steps = 0u32;
    while let Some(op) = inp.u8() {
        steps = steps.saturating_add(1);
        if steps > 256 {
            break;
        }
        let ok = match op % 13 {
            0 => (|| {
                let o = OFFSETS
                    .get(usize::from(inp.u8()?) % OFFSETS.len())
                    .copied()?;
                let size = if inp.u8()? & 1 == 1 { 8 } else { 4 };
                let v = inp.u64()?;
                s.mmio_write(mem, o, size, v);
                Some(())
            })(),
            1 => (|| {
                // STE word of one of the 256 StreamIDs.
                let sid = u64::from(inp.u8()?);
                let w = u64::from(inp.u8()? & 7);
                let v = inp.u64()?;
                ram.write_u64(Gpa(STRTAB + sid * 64 + w * 8), v).ok()
            })(),
            2 => (|| {
                let i = u64::from(inp.u8()?);
                let w = u64::from(inp.u8()? & 7);
                let v = inp.u64()?;
                ram.write_u64(Gpa(CDTAB + i * 64 + w * 8), v).ok()
            })(),
            3 => (|| {
                // A command at the producer index, then PROD+1.
                let prod = s.mmio_read(mem, regs::CMDQ_PROD, 4) & 0x7f;
                let w0 = inp.u64()?;
                let w1 = inp.u64()?;
                ram.write_u64(Gpa(CMDQ + (prod & 0x3f) * 16), w0).ok()?;
                ram.write_u64(Gpa(CMDQ + (prod & 0x3f) * 16 + 8), w1).ok()?;
                s.mmio_write(mem, regs::CMDQ_PROD, 4, (prod + 1) & 0x7f);
                Some(())
            })(),
            4 => (|| {
                // A page-table word somewhere in the table area.
                let off = u64::from(inp.u32()?) % (RAM - PT);
                let v = inp.u64()?;
                ram.write_u64(Gpa(PT + (off & !7)), v).ok()
            })(),
            5 | 6 => (|| {
                let sid = u32::from(inp.u8()?);
                let flags = inp.u8()?;
                let ssid = inp.u32()? & 0xf_ffff;
                let addr = inp.u64()?;
                let access = Perm::from_bits_truncate(flags & 7);
                let kind = match (flags >> 3) & 3 {
                    0 | 1 => RequestKind::Untranslated,
                    2 => RequestKind::AtsTranslation,
                    _ => RequestKind::Translated,
                };
                let mut req =
                    DmaRequest::new(SourceId::Stream(sid), addr, 8, access).with_kind(kind);
                if flags & 0x20 != 0 {
                    req = req.with_pasid(PasidTag {
                        pasid: Pasid::new(ssid)?,
                        privileged: flags & 0x40 != 0,
                        exec: flags & 0x80 != 0,
                    });
                }
                if let Ok(t) = s.translate(mem, &req) {
                    assert!(t.page_size.shift() >= 12);
                    if !t.path.contains(CachePath::BYPASS) {
                        // A walked translation never leaves the OAS.
                        assert!(t.output.0 < 1 << s.config.oas_bits, "{t:?}");
                        assert!(t.page_size.shift() <= 39, "{t:?}");
                    }
                }
                Some(())
            })(),
            7 => (|| {
                let w = inp.u64()?;
                let a = inp.u64()?;
                let req = PageRequest {
                    sid: u32::try_from(w & 0xff).ok()?,
                    ssid: (w & (1 << 63) != 0).then_some(u32::try_from((w >> 32) & 0xf_ffff).ok()?),
                    addr: a & !0xfff,
                    read: w & (1 << 60) != 0,
                    write: w & (1 << 61) != 0,
                    exec: w & (1 << 59) != 0,
                    privileged: w & (1 << 58) != 0,
                    last: w & (1 << 62) != 0,
                    prg_index: u16::try_from(a & 0x1ff).ok()?,
                };
                s.page_request(mem, &req);
                Some(())
            })(),
            10 => (|| {
                // A well-formed STE of a random kind pointing into the CD
                // and page-table areas.
                let sid = u64::from(inp.u8()?);
                let k = inp.u8()?;
                let r = inp.u64()?;
                let cfg = [0u64, 4, 5, 6, 7].get(usize::from(k % 5)).copied()?;
                let fmt = u64::from((k >> 3) % 3);
                let cdmax = u64::from((k >> 5) & 3) * 4;
                let w0 = 1 | (cfg << 1) | (fmt << 4) | CDTAB | (cdmax << 59);
                let w1 = r & 0x3 | (r & (1 << 28)) | (r & (3 << 48));
                let t0sz = 16 + (r >> 8) % 24;
                let w2 = (r >> 16 & 0xff)
                    | (t0sz << 32)
                    | (((r >> 40) % 3) << 38)
                    | (((r >> 42) % 3) << 46)
                    | (5 << 48)
                    | (1 << 51)
                    | (1 << 58);
                let w3 = PT + ((r >> 48) & 0xff) * 0x1000;
                for (i, w) in [w0, w1, w2, w3].iter().enumerate() {
                    ram.write_u64(Gpa(STRTAB + sid * 64 + i as u64 * 8), *w)
                        .ok()?;
                }
                Some(())
            })(),
            11 => (|| {
                // A well-formed CD (or L1CD) whose TTB0 is in the table area.
                let i = u64::from(inp.u8()?);
                let r = inp.u64()?;
                let w0 = (16 + r % 24)
                    | (((r >> 5) % 3) << 6)
                    | (1 << 31)
                    | (((r >> 8) % 6) << 32)
                    | (1 << 41)
                    | (1 << 45)
                    | ((r >> 12 & 1) << 35)
                    | ((r >> 16 & 0xffff) << 48);
                let ttb = PT + ((r >> 32) & 0xff) * 0x1000;
                ram.write_u64(Gpa(CDTAB + i * 64), w0).ok()?;
                ram.write_u64(Gpa(CDTAB + i * 64 + 8), ttb).ok()?;
                if r >> 40 & 1 == 1 {
                    // Also a valid L1CD for two-level tables.
                    ram.write_u64(Gpa(CDTAB + i * 8), (CDTAB + 0x1_0000) | 1)
                        .ok()?;
                }
                Some(())
            })(),
            12 => (|| {
                // A descriptor in one of 256 table pages: a table pointer to
                // another page, or a leaf with random attributes.
                let p = u64::from(inp.u8()?);
                let r = inp.u64()?;
                let idx = r & 0x1fff;
                let d = if r >> 13 & 1 == 1 {
                    (PT + ((r >> 16) & 0xff) * 0x1000) | 3 | (r & (0xf << 59))
                } else {
                    ((r >> 16) & 0xffff_f000) | 1 | (r >> 14 & 2) | (r & 0x7fc) | (r & (7 << 52))
                };
                ram.write_u64(Gpa(PT + p * 0x1000 + idx * 8), d).ok()
            })(),
            8 => {
                let _ = s.take_device_messages();
                let _ = msi.take();
                Some(())
            }
            _ => (|| {
                let o = OFFSETS
                    .get(usize::from(inp.u8()?) % OFFSETS.len())
                    .copied()?;
                let _ = s.mmio_read(mem, o, 4);
                Some(())
            })(),
        };
        if ok.is_none() && inp.data.is_empty() {
            break;
        }
        check(&s, mem);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Every input the fuzzer ever flagged stays as a regression test
    // (fuzz/regressions/, one raw input per file).
    #[test]
    fn fuzz_regressions_still_pass() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
        let mut n = 0;
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.path().extension().is_some_and(|x| x == "bin") {
                    run(&std::fs::read(e.path()).unwrap());
                    n += 1;
                }
            }
        }
        // Hand-written seeds: bring-up then a bad command, a DMA and a PRI.
        run(&[1, 3, 0x7f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        run(&[
            1, 5, 3, 0x21, 1, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 7, 0xff, 0, 0, 0, 0, 0, 0, 0xc0,
        ]);
        run(&[0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        let _ = n;
    }

    // The bring-up really enables the SMMU, so the fuzzer starts deep.
    #[test]
    fn fuzz_bring_up_enables_everything() {
        let ram = FakeRam::new(RAM);
        let s = Smmu::new(SmmuConfig::default(), Arc::new(RecordingMsi::new())).unwrap();
        bring_up(&s, &ram);
        assert_eq!(s.mmio_read(&ram, regs::CR0ACK, 4), 0x1f);
        check(&s, &ram);
    }
}
