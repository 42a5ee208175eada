//! Binary translation trace, its reader, and offline replay.
//!
//! A trace is a header followed by fixed-size little-endian records
//! ([`RECORD_SIZE`] bytes): every translation (request, outcome, cache path,
//! walk reads, cycles, the cache tag the model used) and every invalidation
//! (scope and tag). Fixed-size records keep writing cheap on the hot path
//! and let a reader seek.
//!
//! [`replay`] runs a trace against another IOTLB geometry/policy and
//! latency table and reports hit rate and modelled cycles, so hardware
//! what-ifs need no guest.

use std::io::{self, BufWriter, Read, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::cache::{Cache, CacheConfig, CacheConfigError, CacheTag};
use crate::timing::Latencies;
use crate::types::{CachePath, Pasid, Perm, RequestKind, Rid, SourceId};

/// File magic.
pub const MAGIC: &[u8; 8] = b"IOMMUTR1";
/// Format version.
pub const VERSION: u32 = 1;
/// Bytes per record.
pub const RECORD_SIZE: usize = 48;

/// One translation as seen by a model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TranslateEvent {
    /// Requester.
    pub source: SourceId,
    /// PASID / SSID, if the request had one.
    pub pasid: Option<Pasid>,
    /// Input address.
    pub addr: u64,
    /// Requested rights.
    pub access: Perm,
    /// Transaction type.
    pub kind: RequestKind,
    /// Structures touched ([`CachePath::FAULT`] set for faults).
    pub path: CachePath,
    /// Guest-memory reads of the walk.
    pub walk_reads: u8,
    /// log2 of the page size of the result (0 for faults).
    pub page_shift: u8,
    /// Modelled cycles.
    pub cycles: u32,
    /// Output address (0 for faults).
    pub output: u64,
    /// The IOTLB tag the model used: VT-d domain ID, SMMU (VMID << 16 | ASID).
    pub tag: u32,
    /// Architectural fault code (0 when the translation succeeded).
    pub fault_reason: u16,
}

/// What an invalidation covered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvScope {
    /// Everything.
    All,
    /// Every entry with this tag.
    Tag(u32),
    /// Every entry with this tag and PASID.
    Pasid {
        /// Tag.
        tag: u32,
        /// PASID.
        pasid: Pasid,
    },
    /// Entries with this tag overlapping `[addr, addr + 2^size_shift)`,
    /// optionally only for one PASID.
    Range {
        /// Tag.
        tag: u32,
        /// PASID restriction.
        pasid: Option<Pasid>,
        /// Start address.
        addr: u64,
        /// log2 of the range size.
        size_shift: u8,
    },
}

/// One trace record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceEvent {
    /// A translation (successful or faulting).
    Translate(TranslateEvent),
    /// An invalidation that the model carried out.
    Invalidate(InvScope),
}

const T_TRANSLATE: u8 = 1;
const T_INVALIDATE: u8 = 2;
const F_STREAM: u8 = 1 << 0;
const F_PASID: u8 = 1 << 1;

fn kind_code(k: RequestKind) -> u8 {
    match k {
        RequestKind::Untranslated => 0,
        RequestKind::AtsTranslation => 1,
        RequestKind::Translated => 2,
    }
}

impl TraceEvent {
    /// Encode into a fixed-size record.
    pub fn encode(&self) -> [u8; RECORD_SIZE] {
        let mut r = [0u8; RECORD_SIZE];
        let mut put = |at: usize, bytes: &[u8]| {
            if let Some(dst) = r.get_mut(at..at.saturating_add(bytes.len())) {
                dst.copy_from_slice(bytes);
            }
        };
        match self {
            TraceEvent::Translate(t) => {
                let (flags_src, src) = match t.source {
                    SourceId::Pci(rid) => (0, u32::from(rid.0)),
                    SourceId::Stream(s) => (F_STREAM, s),
                };
                let flags = flags_src | if t.pasid.is_some() { F_PASID } else { 0 };
                put(
                    0,
                    &[
                        T_TRANSLATE,
                        flags,
                        t.access.bits(),
                        kind_code(t.kind),
                        t.path.bits(),
                        t.walk_reads,
                        t.page_shift,
                        0,
                    ],
                );
                put(8, &src.to_le_bytes());
                put(12, &t.pasid.map_or(0, Pasid::get).to_le_bytes());
                put(16, &t.addr.to_le_bytes());
                put(24, &t.output.to_le_bytes());
                put(32, &t.cycles.to_le_bytes());
                put(36, &t.tag.to_le_bytes());
                put(40, &t.fault_reason.to_le_bytes());
            }
            TraceEvent::Invalidate(scope) => {
                let (code, tag, pasid, addr, shift) = match *scope {
                    InvScope::All => (0u8, 0u32, None, 0u64, 0u8),
                    InvScope::Tag(tag) => (1, tag, None, 0, 0),
                    InvScope::Pasid { tag, pasid } => (2, tag, Some(pasid), 0, 0),
                    InvScope::Range {
                        tag,
                        pasid,
                        addr,
                        size_shift,
                    } => (3, tag, pasid, addr, size_shift),
                };
                let flags = if pasid.is_some() { F_PASID } else { 0 };
                put(0, &[T_INVALIDATE, flags, 0, 0, 0, 0, shift, code]);
                put(12, &pasid.map_or(0, Pasid::get).to_le_bytes());
                put(16, &addr.to_le_bytes());
                put(36, &tag.to_le_bytes());
            }
        }
        r
    }

    /// Decode a record; `None` for a malformed one.
    pub fn decode(r: &[u8; RECORD_SIZE]) -> Option<TraceEvent> {
        let u32_at = |at: usize| -> Option<u32> {
            Some(u32::from_le_bytes(
                r.get(at..at.checked_add(4)?)?.try_into().ok()?,
            ))
        };
        let u64_at = |at: usize| -> Option<u64> {
            Some(u64::from_le_bytes(
                r.get(at..at.checked_add(8)?)?.try_into().ok()?,
            ))
        };
        let b = |at: usize| r.get(at).copied();
        let flags = b(1)?;
        let pasid = if flags & F_PASID != 0 {
            Some(Pasid::new(u32_at(12)?)?)
        } else {
            None
        };
        match b(0)? {
            T_TRANSLATE => {
                let src = u32_at(8)?;
                let source = if flags & F_STREAM != 0 {
                    SourceId::Stream(src)
                } else {
                    SourceId::Pci(Rid(u16::try_from(src).ok()?))
                };
                let kind = match b(3)? {
                    0 => RequestKind::Untranslated,
                    1 => RequestKind::AtsTranslation,
                    2 => RequestKind::Translated,
                    _ => return None,
                };
                Some(TraceEvent::Translate(TranslateEvent {
                    source,
                    pasid,
                    addr: u64_at(16)?,
                    access: Perm::from_bits(b(2)?)?,
                    kind,
                    path: CachePath::from_bits(b(4)?)?,
                    walk_reads: b(5)?,
                    page_shift: b(6)?,
                    cycles: u32_at(32)?,
                    output: u64_at(24)?,
                    tag: u32_at(36)?,
                    fault_reason: u16::from_le_bytes([b(40)?, b(41)?]),
                }))
            }
            T_INVALIDATE => {
                let tag = u32_at(36)?;
                let scope = match b(7)? {
                    0 => InvScope::All,
                    1 => InvScope::Tag(tag),
                    2 => InvScope::Pasid { tag, pasid: pasid? },
                    3 => InvScope::Range {
                        tag,
                        pasid,
                        addr: u64_at(16)?,
                        size_shift: b(6)?,
                    },
                    _ => return None,
                };
                Some(TraceEvent::Invalidate(scope))
            }
            _ => None,
        }
    }
}

/// Where models send trace events.
pub trait TraceSink: Send + Sync {
    /// Record one event.
    fn record(&self, ev: &TraceEvent);
}

/// Writes a trace to any `Write` (a file, a buffer). Thread-safe. Records
/// that fail to write are counted, not lost silently.
pub struct TraceWriter<W: Write + Send> {
    out: Mutex<BufWriter<W>>,
    written: AtomicU64,
    failed: AtomicU64,
}

impl<W: Write + Send> TraceWriter<W> {
    /// Start a trace: writes the header.
    pub fn new(out: W) -> io::Result<Self> {
        let mut w = BufWriter::new(out);
        w.write_all(MAGIC)?;
        w.write_all(&VERSION.to_le_bytes())?;
        w.write_all(&u32::try_from(RECORD_SIZE).unwrap_or(0).to_le_bytes())?;
        Ok(TraceWriter {
            out: Mutex::new(w),
            written: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        })
    }

    /// Records written so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Records that could not be written.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Flush buffered records.
    pub fn flush(&self) -> io::Result<()> {
        self.out
            .lock()
            .map_err(|_| io::Error::other("trace writer poisoned"))?
            .flush()
    }

    /// Flush and return the inner writer.
    pub fn into_inner(self) -> io::Result<W> {
        let w = self
            .out
            .into_inner()
            .map_err(|_| io::Error::other("trace writer poisoned"))?;
        w.into_inner().map_err(|e| e.into_error())
    }
}

impl<W: Write + Send> TraceSink for TraceWriter<W> {
    fn record(&self, ev: &TraceEvent) {
        let rec = ev.encode();
        let ok = self
            .out
            .lock()
            .map(|mut w| w.write_all(&rec).is_ok())
            .unwrap_or(false);
        if ok {
            self.written.fetch_add(1, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Trace reading errors.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// I/O failure.
    #[error("trace I/O: {0}")]
    Io(#[from] io::Error),
    /// Not a trace file of this version.
    #[error("not an iommu-emulator trace (bad magic or version {0})")]
    BadHeader(u32),
    /// A record could not be decoded.
    #[error("malformed trace record #{0}")]
    BadRecord(u64),
}

/// Reads a trace record by record.
pub struct TraceReader<R: Read> {
    input: R,
    index: u64,
}

impl<R: Read> TraceReader<R> {
    /// Check the header and get ready to read records.
    pub fn new(mut input: R) -> Result<Self, TraceError> {
        let mut h = [0u8; 16];
        input.read_exact(&mut h)?;
        let version = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
        let size = u32::from_le_bytes([h[12], h[13], h[14], h[15]]);
        if &h[..8] != MAGIC || version != VERSION || usize::try_from(size).ok() != Some(RECORD_SIZE)
        {
            return Err(TraceError::BadHeader(version));
        }
        Ok(TraceReader { input, index: 0 })
    }
}

impl<R: Read> Iterator for TraceReader<R> {
    type Item = Result<TraceEvent, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut r = [0u8; RECORD_SIZE];
        match self.input.read_exact(&mut r) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return None,
            Err(e) => return Some(Err(e.into())),
        }
        let i = self.index;
        self.index = self.index.saturating_add(1);
        Some(TraceEvent::decode(&r).ok_or(TraceError::BadRecord(i)))
    }
}

/// IOTLB key used by replay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ReplayTag {
    tag: u32,
    pasid: Option<Pasid>,
    page: u64,
    shift: u8,
}

impl CacheTag for ReplayTag {
    fn set_hash(&self) -> u64 {
        // Index by 4K page number so every page size of an address shares
        // the set-selection bits of its base: a real IOTLB indexes by the
        // low VPN bits.
        self.page << self.shift.saturating_sub(12)
    }
    fn addr_range(&self) -> Option<std::ops::Range<u64>> {
        let base = self.page.checked_shl(u32::from(self.shift))?;
        Some(base..base.saturating_add(1u64.checked_shl(u32::from(self.shift))?))
    }
}

/// What a replay measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReplayReport {
    /// Translations replayed (faults included).
    pub translations: u64,
    /// Translations that bypassed the IOTLB (pass-through, faults).
    pub uncached: u64,
    /// IOTLB hits.
    pub hits: u64,
    /// IOTLB misses.
    pub misses: u64,
    /// Invalidations applied.
    pub invalidations: u64,
    /// Modelled cycles under the replay configuration.
    pub cycles: u64,
    /// Cycles the trace recorded (under the configuration it was captured with).
    pub recorded_cycles: u64,
}

impl ReplayReport {
    /// IOTLB hit rate over cached lookups.
    pub fn hit_rate(&self) -> f64 {
        let n = self.hits.saturating_add(self.misses);
        if n == 0 {
            return 0.0;
        }
        #[allow(clippy::cast_precision_loss)]
        let r = self.hits as f64 / n as f64;
        r
    }

    /// Mean modelled cycles per translation.
    pub fn cycles_per_translation(&self) -> f64 {
        if self.translations == 0 {
            return 0.0;
        }
        #[allow(clippy::cast_precision_loss)]
        let r = self.cycles as f64 / self.translations as f64;
        r
    }
}

/// Replay `events` against an IOTLB of geometry `iotlb` and latencies
/// `lat`. A hit costs `iotlb_hit`; a miss costs `iotlb_miss` plus the
/// recorded walk reads times `mem_read` (the walk itself is what the trace
/// recorded: the page tables are not in the trace). Faults and bypassed
/// translations do not touch the IOTLB.
pub fn replay<I>(events: I, iotlb: CacheConfig, lat: &Latencies) -> Result<ReplayReport, TraceError>
where
    I: IntoIterator<Item = Result<TraceEvent, TraceError>>,
{
    let cache: Cache<ReplayTag, ()> = Cache::new(iotlb).map_err(|e: CacheConfigError| {
        TraceError::Io(io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))
    })?;
    let mut rep = ReplayReport::default();
    for ev in events {
        match ev? {
            TraceEvent::Translate(t) => {
                rep.translations = rep.translations.saturating_add(1);
                rep.recorded_cycles = rep.recorded_cycles.saturating_add(u64::from(t.cycles));
                let walk = u64::from(t.walk_reads).saturating_mul(lat.mem_read);
                if t.path.intersects(CachePath::FAULT | CachePath::BYPASS) || t.page_shift < 12 {
                    rep.uncached = rep.uncached.saturating_add(1);
                    rep.cycles = rep
                        .cycles
                        .saturating_add(lat.iotlb_miss)
                        .saturating_add(walk);
                    continue;
                }
                let key = ReplayTag {
                    tag: t.tag,
                    pasid: t.pasid,
                    page: t.addr.checked_shr(u32::from(t.page_shift)).unwrap_or(0),
                    shift: t.page_shift,
                };
                if cache.lookup(&key).is_some() {
                    rep.hits = rep.hits.saturating_add(1);
                    rep.cycles = rep.cycles.saturating_add(lat.iotlb_hit);
                } else {
                    rep.misses = rep.misses.saturating_add(1);
                    // A walk the trace recorded as a hit still has to read
                    // the tables here: charge a full walk of the recorded
                    // depth, or one read per level of a 4-level walk.
                    let reads = if t.walk_reads == 0 {
                        4
                    } else {
                        u64::from(t.walk_reads)
                    };
                    rep.cycles = rep
                        .cycles
                        .saturating_add(lat.iotlb_miss)
                        .saturating_add(reads.saturating_mul(lat.mem_read));
                    let ticket = cache.ticket();
                    cache.insert(key, (), ticket);
                }
            }
            TraceEvent::Invalidate(scope) => {
                rep.invalidations = rep.invalidations.saturating_add(1);
                match scope {
                    InvScope::All => {
                        cache.invalidate_all();
                    }
                    InvScope::Tag(tag) => {
                        cache.invalidate_if(|k, _| k.tag == tag);
                    }
                    InvScope::Pasid { tag, pasid } => {
                        cache.invalidate_if(|k, _| k.tag == tag && k.pasid == Some(pasid));
                    }
                    InvScope::Range {
                        tag,
                        pasid,
                        addr,
                        size_shift,
                    } => {
                        let end = addr.saturating_add(
                            1u64.checked_shl(u32::from(size_shift)).unwrap_or(u64::MAX),
                        );
                        cache.invalidate_range(addr..end, |k, _| {
                            k.tag == tag && (pasid.is_none() || k.pasid == pasid)
                        });
                    }
                }
            }
        }
    }
    Ok(rep)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tr(addr: u64, pasid: Option<u32>, tag: u32) -> TraceEvent {
        TraceEvent::Translate(TranslateEvent {
            source: SourceId::Pci(Rid::new(0, 3, 0)),
            pasid: pasid.and_then(Pasid::new),
            addr,
            access: Perm::R,
            kind: RequestKind::Untranslated,
            path: CachePath::WALK,
            walk_reads: 4,
            page_shift: 12,
            cycles: 402,
            output: addr + 0x1000_0000,
            tag,
            fault_reason: 0,
        })
    }

    #[test]
    fn trace_record_roundtrips_every_variant() {
        let evs = [
            tr(0x1234_5000, Some(7), 3),
            tr(0x1000, None, 1),
            TraceEvent::Translate(TranslateEvent {
                source: SourceId::Stream(0x1_0042),
                path: CachePath::FAULT,
                fault_reason: 0x10,
                kind: RequestKind::AtsTranslation,
                ..match tr(0, None, 0) {
                    TraceEvent::Translate(t) => t,
                    TraceEvent::Invalidate(_) => unreachable!(),
                }
            }),
            TraceEvent::Invalidate(InvScope::All),
            TraceEvent::Invalidate(InvScope::Tag(9)),
            TraceEvent::Invalidate(InvScope::Pasid {
                tag: 9,
                pasid: Pasid::new(0xfffff).unwrap(),
            }),
            TraceEvent::Invalidate(InvScope::Range {
                tag: 2,
                pasid: None,
                addr: 0x20_0000,
                size_shift: 21,
            }),
        ];
        for e in evs {
            assert_eq!(TraceEvent::decode(&e.encode()), Some(e));
        }
    }

    #[test]
    fn trace_decode_rejects_garbage() {
        let mut r = [0u8; RECORD_SIZE];
        assert_eq!(TraceEvent::decode(&r), None);
        r[0] = T_TRANSLATE;
        r[3] = 9; // bad request kind
        assert_eq!(TraceEvent::decode(&r), None);
    }

    #[test]
    fn trace_writer_then_reader_yields_same_events() {
        let w = TraceWriter::new(Vec::new()).unwrap();
        let evs = [tr(0x1000, None, 1), TraceEvent::Invalidate(InvScope::All)];
        for e in &evs {
            w.record(e);
        }
        assert_eq!(w.written(), 2);
        let bytes = w.into_inner().unwrap();
        assert_eq!(bytes.len(), 16 + 2 * RECORD_SIZE);
        let got: Vec<_> = TraceReader::new(&bytes[..])
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(got, evs);
    }

    #[test]
    fn trace_reader_rejects_bad_header() {
        assert!(matches!(
            TraceReader::new(&b"NOTATRACE_______"[..]),
            Err(TraceError::BadHeader(_))
        ));
    }

    #[test]
    fn replay_bigger_iotlb_hits_more() {
        // 8 pages touched round-robin 10 times: a 4-entry LRU IOTLB thrashes,
        // a 16-entry one hits after the first pass.
        let evs: Vec<_> = (0..10)
            .flat_map(|_| (0..8u64).map(|p| tr(p << 12, None, 1)))
            .collect();
        let lat = Latencies::default();
        let small = replay(
            evs.iter().copied().map(Ok),
            CacheConfig::fully_associative(4),
            &lat,
        )
        .unwrap();
        let big = replay(
            evs.into_iter().map(Ok),
            CacheConfig::fully_associative(16),
            &lat,
        )
        .unwrap();
        assert_eq!(small.hits, 0);
        assert_eq!(big.misses, 8);
        assert_eq!(big.hits, 72);
        assert_eq!(
            big.cycles,
            8 * (lat.iotlb_miss + 4 * lat.mem_read) + 72 * lat.iotlb_hit
        );
        assert!(big.cycles_per_translation() < small.cycles_per_translation());
    }

    #[test]
    fn replay_applies_invalidations() {
        let lat = Latencies::default();
        let evs = vec![
            Ok(tr(0x1000, Some(1), 5)),
            Ok(tr(0x1000, Some(2), 5)),
            Ok(TraceEvent::Invalidate(InvScope::Pasid {
                tag: 5,
                pasid: Pasid::new(1).unwrap(),
            })),
            Ok(tr(0x1000, Some(1), 5)), // miss again
            Ok(tr(0x1000, Some(2), 5)), // still cached
            Ok(TraceEvent::Invalidate(InvScope::Range {
                tag: 5,
                pasid: None,
                addr: 0,
                size_shift: 16,
            })),
            Ok(tr(0x1000, Some(2), 5)), // miss
        ];
        let r = replay(evs, CacheConfig::new(16, 4), &lat).unwrap();
        assert_eq!((r.hits, r.misses, r.invalidations), (1, 4, 2));
    }
}
