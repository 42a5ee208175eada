//! Synthetic translation traces, so the cycle-model sweep runs without a
//! guest. Each workload mimics a DMA pattern seen from real drivers; all
//! are deterministic for a seed.

use iommu_emulator::trace::{InvScope, TraceEvent, TranslateEvent};
use iommu_emulator::{CachePath, Pasid, Perm, RequestKind, Rid, SourceId};

/// A synthetic workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Sequential 4 KiB pages over a buffer, wrapping around (a streaming
    /// disk or NIC ring whose buffers stay mapped: lazy/pass-through-like).
    Stream {
        /// Buffer size in pages.
        pages: u64,
    },
    /// Uniformly random pages in a working set.
    Random {
        /// Working-set size in pages.
        pages: u64,
    },
    /// 90 % of accesses to a hot 10 % of the working set.
    Hot {
        /// Working-set size in pages.
        pages: u64,
    },
    /// Linux strict mode: map a fresh IOVA range per request, touch its
    /// pages, then unmap with a page-selective invalidation.
    StrictUnmap {
        /// Pages per request.
        pages_per_req: u64,
    },
    /// Several PASIDs (work queues) streaming at once, each in its own
    /// address space.
    MultiPasid {
        /// Number of PASIDs.
        pasids: u32,
        /// Pages per PASID.
        pages: u64,
    },
}

impl std::str::FromStr for Workload {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, arg) = s.split_once(':').unwrap_or((s, ""));
        let num = |d: u64| -> Result<u64, String> {
            if arg.is_empty() {
                Ok(d)
            } else {
                arg.parse()
                    .map_err(|_| format!("bad number '{arg}' in workload '{s}'"))
            }
        };
        match name {
            "stream" => Ok(Workload::Stream { pages: num(512)? }),
            "random" => Ok(Workload::Random { pages: num(2048)? }),
            "hot" => Ok(Workload::Hot { pages: num(4096)? }),
            "strict" => Ok(Workload::StrictUnmap {
                pages_per_req: num(16)?,
            }),
            "pasid" => Ok(Workload::MultiPasid {
                pasids: u32::try_from(num(8)?).map_err(|e| e.to_string())?,
                pages: 256,
            }),
            _ => Err(format!(
                "unknown workload '{name}' (valid: stream[:pages], random[:pages], hot[:pages], strict[:pages-per-request], pasid[:count])"
            )),
        }
    }
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Workload::Stream { pages } => write!(f, "stream:{pages}"),
            Workload::Random { pages } => write!(f, "random:{pages}"),
            Workload::Hot { pages } => write!(f, "hot:{pages}"),
            Workload::StrictUnmap { pages_per_req } => write!(f, "strict:{pages_per_req}"),
            Workload::MultiPasid { pasids, .. } => write!(f, "pasid:{pasids}"),
        }
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn translate(addr: u64, pasid: Option<u32>, tag: u32) -> TraceEvent {
    TraceEvent::Translate(TranslateEvent {
        source: SourceId::Pci(Rid::new(0, 3, 0)),
        pasid: pasid.and_then(Pasid::new),
        addr,
        access: Perm::R,
        kind: RequestKind::Untranslated,
        path: CachePath::WALK,
        walk_reads: 4,
        page_shift: 12,
        cycles: 0,
        output: addr,
        tag,
        fault_reason: 0,
    })
}

/// Generate `n` translations (plus the invalidations the workload implies).
pub fn generate(w: Workload, n: u64, seed: u64) -> Vec<TraceEvent> {
    let mut rng = Rng(seed | 1);
    let mut out = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
    let base = 0x1_0000_0000u64;
    let mut i = 0u64;
    while i < n {
        match w {
            Workload::Stream { pages } => {
                out.push(translate(base + (i % pages.max(1)) * 4096, None, 1));
                i += 1;
            }
            Workload::Random { pages } => {
                out.push(translate(base + rng.below(pages) * 4096, None, 1));
                i += 1;
            }
            Workload::Hot { pages } => {
                let hot = (pages / 10).max(1);
                let p = if rng.below(10) < 9 {
                    rng.below(hot)
                } else {
                    rng.below(pages)
                };
                out.push(translate(base + p * 4096, None, 1));
                i += 1;
            }
            Workload::StrictUnmap { pages_per_req } => {
                // IOVA allocator hands out ranges top-down, reusing freed ones.
                let slot = rng.below(64);
                let start = base + slot * pages_per_req * 4096;
                for p in 0..pages_per_req {
                    // each page touched twice (descriptor + data)
                    out.push(translate(start + p * 4096, None, 1));
                    out.push(translate(start + p * 4096, None, 1));
                    i += 2;
                }
                let shift = 12 + (64 - (pages_per_req.max(1) - 1).leading_zeros()) as u8;
                out.push(TraceEvent::Invalidate(InvScope::Range {
                    tag: 1,
                    pasid: None,
                    addr: start,
                    size_shift: shift,
                }));
            }
            Workload::MultiPasid { pasids, pages } => {
                let p = u32::try_from(rng.below(u64::from(pasids))).unwrap_or(0) + 1;
                let off = (i / u64::from(pasids.max(1))) % pages.max(1);
                out.push(translate(base + off * 4096, Some(p), 1));
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synth_is_deterministic_and_sized() {
        let a = generate(Workload::Random { pages: 100 }, 1000, 7);
        assert_eq!(a.len(), 1000);
        assert_eq!(a, generate(Workload::Random { pages: 100 }, 1000, 7));
        assert_ne!(a, generate(Workload::Random { pages: 100 }, 1000, 8));
    }

    #[test]
    fn synth_strict_emits_invalidations() {
        let t = generate(Workload::StrictUnmap { pages_per_req: 4 }, 80, 1);
        let inv = t
            .iter()
            .filter(|e| matches!(e, TraceEvent::Invalidate(_)))
            .count();
        assert_eq!(inv, 10);
    }

    #[test]
    fn synth_parse_names() {
        assert_eq!(
            "stream:64".parse::<Workload>(),
            Ok(Workload::Stream { pages: 64 })
        );
        assert!("bogus".parse::<Workload>().unwrap_err().contains("valid"));
    }
}
