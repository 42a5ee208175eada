//! Statistics: per-cache counters, events by type (recorded and lost),
//! commands by opcode, MSIs, and translation counters with modelled
//! cycles per (StreamID, SubstreamID).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use iommu_emulator::timing::CountersSnapshot;
use iommu_emulator::{CacheStats, TranslationStats};

use crate::structs::event::EventType;
use crate::{Smmu, lock};

/// Live counters.
#[derive(Debug)]
pub(crate) struct Stats {
    pub(crate) translations: TranslationStats,
    events: [AtomicU64; 256],
    commands: [AtomicU64; 256],
    pub(crate) events_written: AtomicU64,
    pub(crate) events_dropped_disabled: AtomicU64,
    pub(crate) events_dropped_overflow: AtomicU64,
    pub(crate) events_dropped_abort: AtomicU64,
    pub(crate) events_suppressed: AtomicU64,
    pub(crate) commands_illegal: AtomicU64,
    pub(crate) syncs: AtomicU64,
    pub(crate) msis: AtomicU64,
    pub(crate) msi_not_sent: AtomicU64,
    pub(crate) gerrors: AtomicU64,
    pub(crate) pri_written: AtomicU64,
    pub(crate) pri_dropped: AtomicU64,
    pub(crate) device_messages_dropped: AtomicU64,
    pub(crate) stalls: AtomicU64,
    pub(crate) stalls_retried: AtomicU64,
    pub(crate) stalls_aborted: AtomicU64,
    pub(crate) stalls_terminated: AtomicU64,
    pub(crate) stalls_refused: AtomicU64,
    pub(crate) stalls_deferred: AtomicU64,
    pub(crate) stalls_deferred_retried: AtomicU64,
    pub(crate) resumes_unmatched: AtomicU64,
    pub(crate) ats_commands_ignored: AtomicU64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            translations: TranslationStats::new(),
            events: std::array::from_fn(|_| AtomicU64::new(0)),
            commands: std::array::from_fn(|_| AtomicU64::new(0)),
            events_written: AtomicU64::new(0),
            events_dropped_disabled: AtomicU64::new(0),
            events_dropped_overflow: AtomicU64::new(0),
            events_dropped_abort: AtomicU64::new(0),
            events_suppressed: AtomicU64::new(0),
            commands_illegal: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            msis: AtomicU64::new(0),
            msi_not_sent: AtomicU64::new(0),
            gerrors: AtomicU64::new(0),
            pri_written: AtomicU64::new(0),
            pri_dropped: AtomicU64::new(0),
            device_messages_dropped: AtomicU64::new(0),
            stalls: AtomicU64::new(0),
            stalls_retried: AtomicU64::new(0),
            stalls_aborted: AtomicU64::new(0),
            stalls_terminated: AtomicU64::new(0),
            stalls_refused: AtomicU64::new(0),
            stalls_deferred: AtomicU64::new(0),
            stalls_deferred_retried: AtomicU64::new(0),
            resumes_unmatched: AtomicU64::new(0),
            ats_commands_ignored: AtomicU64::new(0),
        }
    }
}

fn get(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

impl Stats {
    pub(crate) fn count_event(&self, t: EventType) {
        if let Some(c) = self.events.get(usize::from(t.code())) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn count_command(&self, opcode: u8) {
        if let Some(c) = self.commands.get(usize::from(opcode)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn snapshot(&self, smmu: &Smmu) -> SmmuStats {
        let events = EventType::ALL
            .iter()
            .filter_map(|t| {
                let n = self.events.get(usize::from(t.code())).map_or(0, get);
                (n > 0).then_some((*t, n))
            })
            .collect();
        let commands = self
            .commands
            .iter()
            .enumerate()
            .filter_map(|(op, c)| {
                let n = get(c);
                (n > 0).then(|| (u8::try_from(op).unwrap_or(0), n))
            })
            .collect();
        SmmuStats {
            tlb: smmu.tlb.stats(),
            ste_cache: smmu.ste_cache.stats(),
            cd_cache: smmu.cd_cache.stats(),
            events,
            commands,
            events_written: get(&self.events_written),
            events_dropped_disabled: get(&self.events_dropped_disabled),
            events_dropped_overflow: get(&self.events_dropped_overflow),
            events_dropped_abort: get(&self.events_dropped_abort),
            events_suppressed: get(&self.events_suppressed),
            commands_illegal: get(&self.commands_illegal),
            syncs: get(&self.syncs),
            msis: get(&self.msis),
            msi_not_sent: get(&self.msi_not_sent),
            gerrors: get(&self.gerrors),
            pri_written: get(&self.pri_written),
            pri_dropped: get(&self.pri_dropped),
            device_messages_dropped: get(&self.device_messages_dropped),
            stalls: get(&self.stalls),
            stalls_retried: get(&self.stalls_retried),
            stalls_aborted: get(&self.stalls_aborted),
            stalls_terminated: get(&self.stalls_terminated),
            stalls_refused: get(&self.stalls_refused),
            stalls_deferred: get(&self.stalls_deferred),
            stalls_deferred_retried: get(&self.stalls_deferred_retried),
            resumes_unmatched: get(&self.resumes_unmatched),
            ats_commands_ignored: get(&self.ats_commands_ignored),
            stalled_now: lock(&smmu.state).stalls.len(),
            total: self.translations.total(),
            per_source: self
                .translations
                .snapshot()
                .into_iter()
                .map(|((s, p), c)| (s.stream_id(), p.map(|p| p.get()), c))
                .collect(),
        }
    }
}

/// A snapshot of an SMMU's statistics. `Display` prints a report.
#[derive(Clone, Debug, PartialEq)]
pub struct SmmuStats {
    /// TLB counters.
    pub tlb: CacheStats,
    /// STE cache counters.
    pub ste_cache: CacheStats,
    /// CD cache counters.
    pub cd_cache: CacheStats,
    /// Events raised, by type (recorded or not).
    pub events: Vec<(EventType, u64)>,
    /// Commands executed, by opcode.
    pub commands: Vec<(u8, u64)>,
    /// Event records written to the queue.
    pub events_written: u64,
    /// Events lost: event queue disabled.
    pub events_dropped_disabled: u64,
    /// Events lost: queue full (overflow).
    pub events_dropped_overflow: u64,
    /// Events lost: queue write aborted.
    pub events_dropped_abort: u64,
    /// Fault events not recorded because CD.R / STE.S2R was clear, or the
    /// request was an ATS translation request.
    pub events_suppressed: u64,
    /// Commands refused with CERROR_ILL.
    pub commands_illegal: u64,
    /// CMD_SYNCs completed.
    pub syncs: u64,
    /// MSIs sent.
    pub msis: u64,
    /// Interrupts that could not be sent as MSIs (not configured).
    pub msi_not_sent: u64,
    /// Global errors raised.
    pub gerrors: u64,
    /// Page requests written to the PRI queue.
    pub pri_written: u64,
    /// Page requests lost.
    pub pri_dropped: u64,
    /// Device messages dropped (outbox full).
    pub device_messages_dropped: u64,
    /// Transactions stalled (3.12.2), recorded or deferred.
    pub stalls: u64,
    /// Stalls resumed with Retry by CMD_RESUME.
    pub stalls_retried: u64,
    /// Stalls terminated by CMD_RESUME.
    pub stalls_aborted: u64,
    /// Stalls terminated by CMD_STALL_TERM or by clearing SMMUEN.
    pub stalls_terminated: u64,
    /// Stall-configured faults terminated because `max-stalls`
    /// transactions were already stalled (reported with Stall = 0).
    pub stalls_refused: u64,
    /// Stalls whose record could not be written at once (event queue not
    /// writable, 7.2.1).
    pub stalls_deferred: u64,
    /// Deferred stalls told to retry when the queue became writable.
    pub stalls_deferred_retried: u64,
    /// CMD_RESUMEs that matched no stalled transaction (4.7.1: no effect).
    pub resumes_unmatched: u64,
    /// CMD_ATC_INV / CMD_PRI_RESP ignored because SMMUEN = 0 (6.3.9.6).
    pub ats_commands_ignored: u64,
    /// Transactions stalled at the time of the snapshot.
    pub stalled_now: usize,
    /// Translation totals.
    pub total: CountersSnapshot,
    /// Per (StreamID, SubstreamID) translation counters.
    pub per_source: Vec<(u32, Option<u32>, CountersSnapshot)>,
}

impl SmmuStats {
    /// Events of type `t` raised so far.
    pub fn events_of(&self, t: EventType) -> u64 {
        self.events
            .iter()
            .find(|(k, _)| *k == t)
            .map_or(0, |(_, n)| *n)
    }

    /// Commands of `opcode` executed so far.
    pub fn commands_of(&self, opcode: u8) -> u64 {
        self.commands
            .iter()
            .find(|(k, _)| *k == opcode)
            .map_or(0, |(_, n)| *n)
    }

    /// Every event the guest never saw.
    pub fn events_lost(&self) -> u64 {
        self.events_dropped_disabled
            .saturating_add(self.events_dropped_overflow)
            .saturating_add(self.events_dropped_abort)
    }
}

fn cache_line(f: &mut fmt::Formatter<'_>, name: &str, c: &CacheStats) -> fmt::Result {
    writeln!(
        f,
        "  {name:<10} lookups {:>10} hits {:>10} ({:5.1}%) inserts {:>8} evictions {:>8} invalidated {:>8} stale {:>4}",
        c.lookups,
        c.hits,
        c.hit_rate() * 100.0,
        c.inserts,
        c.evictions,
        c.invalidated,
        c.stale_inserts
    )
}

impl fmt::Display for SmmuStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "SMMUv3 statistics")?;
        cache_line(f, "TLB", &self.tlb)?;
        cache_line(f, "STE cache", &self.ste_cache)?;
        cache_line(f, "CD cache", &self.cd_cache)?;
        writeln!(
            f,
            "  translations {} faults {} cycles {} (mean {:.1}, p50 <= {}, p99 <= {})",
            self.total.translations,
            self.total.faults,
            self.total.cycles,
            self.total.mean_cycles(),
            self.total.quantile(0.5),
            self.total.quantile(0.99)
        )?;
        for (sid, ssid, c) in &self.per_source {
            let s = ssid.map_or_else(|| "-".to_string(), |p| format!("{p:#x}"));
            writeln!(
                f,
                "    sid {sid:#06x} ssid {s:>7}: {} ok {} faults {} cycles",
                c.translations, c.faults, c.cycles
            )?;
        }
        writeln!(
            f,
            "  events written {} lost {} (disabled {}, overflow {}, abort {}) suppressed {}",
            self.events_written,
            self.events_lost(),
            self.events_dropped_disabled,
            self.events_dropped_overflow,
            self.events_dropped_abort,
            self.events_suppressed
        )?;
        for (t, n) in &self.events {
            writeln!(f, "    {:<20} {n}", t.name())?;
        }
        writeln!(
            f,
            "  commands illegal {} syncs {} msis {} (not sent {}) gerrors {} pri {} (dropped {})",
            self.commands_illegal,
            self.syncs,
            self.msis,
            self.msi_not_sent,
            self.gerrors,
            self.pri_written,
            self.pri_dropped
        )?;
        if self.ats_commands_ignored > 0 {
            writeln!(
                f,
                "  ATS commands ignored (SMMUEN = 0) {}",
                self.ats_commands_ignored
            )?;
        }
        writeln!(
            f,
            "  stalls {} (now {}) retried {} aborted {} terminated {} refused {} deferred {} (retried {}) unmatched resumes {}",
            self.stalls,
            self.stalled_now,
            self.stalls_retried,
            self.stalls_aborted,
            self.stalls_terminated,
            self.stalls_refused,
            self.stalls_deferred,
            self.stalls_deferred_retried,
            self.resumes_unmatched
        )?;
        for (op, n) in &self.commands {
            writeln!(f, "    opcode {op:#04x}: {n}")?;
        }
        Ok(())
    }
}
