//! The cycle-model sweep: replay translation traces against many IOTLB
//! geometries, replacement policies and latency tables, and write CSV plus
//! SVG plots (hit rate and cycles per translation against IOTLB entries, one
//! line per policy).

use std::fmt::Write as _;

use iommu_emulator::trace::{TraceError, TraceEvent, replay};
use iommu_emulator::{CacheConfig, Latencies, ReplacementPolicy};

/// Associativity of a swept IOTLB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ways {
    /// `n` ways per set (sets = entries / n).
    N(usize),
    /// One set holding every entry.
    Full,
}

impl std::str::FromStr for Ways {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "full" {
            return Ok(Ways::Full);
        }
        s.parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .map(Ways::N)
            .ok_or_else(|| format!("bad associativity '{s}' (a positive number or 'full')"))
    }
}

impl std::fmt::Display for Ways {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ways::N(n) => write!(f, "{n}"),
            Ways::Full => f.write_str("full"),
        }
    }
}

/// One sweep result.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Trace name.
    pub trace: String,
    /// Replacement policy.
    pub policy: ReplacementPolicy,
    /// IOTLB entries.
    pub entries: usize,
    /// Associativity.
    pub ways: Ways,
    /// Translations replayed.
    pub translations: u64,
    /// Hit rate over cached lookups.
    pub hit_rate: f64,
    /// Mean modelled cycles per translation.
    pub cycles_per_translation: f64,
}

/// Replay `events` for every combination.
pub fn sweep(
    name: &str,
    events: &[TraceEvent],
    entries: &[usize],
    ways: &[Ways],
    policies: &[ReplacementPolicy],
    lat: &Latencies,
) -> Result<Vec<Row>, TraceError> {
    let mut rows = Vec::new();
    for &policy in policies {
        for &w in ways {
            for &n in entries {
                let cfg = match w {
                    Ways::Full => CacheConfig::fully_associative(n),
                    Ways::N(k) => CacheConfig::new((n / k).max(1), k.min(n.max(1))),
                }
                .with_policy(policy);
                let r = replay(events.iter().copied().map(Ok), cfg, lat)?;
                rows.push(Row {
                    trace: name.to_string(),
                    policy,
                    entries: n,
                    ways: w,
                    translations: r.translations,
                    hit_rate: r.hit_rate(),
                    cycles_per_translation: r.cycles_per_translation(),
                });
            }
        }
    }
    Ok(rows)
}

/// CSV with a header line.
pub fn to_csv(rows: &[Row]) -> String {
    let mut s =
        String::from("trace,policy,entries,ways,translations,hit_rate,cycles_per_translation\n");
    for r in rows {
        let _ = writeln!(
            s,
            "{},{},{},{},{},{:.6},{:.3}",
            r.trace,
            r.policy,
            r.entries,
            r.ways,
            r.translations,
            r.hit_rate,
            r.cycles_per_translation
        );
    }
    s
}

const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];

/// A line chart (log2 x axis of entries) of `metric` for one trace and one
/// associativity, one line per policy.
pub fn to_svg(rows: &[Row], trace: &str, ways: Ways, metric: Metric) -> String {
    let (w, h, ml, mr, mt, mb) = (640.0, 400.0, 70.0, 120.0, 40.0, 50.0);
    let sel: Vec<&Row> = rows
        .iter()
        .filter(|r| r.trace == trace && r.ways == ways)
        .collect();
    let val = |r: &Row| match metric {
        Metric::HitRate => r.hit_rate * 100.0,
        Metric::Cycles => r.cycles_per_translation,
    };
    let xs: Vec<f64> = sel
        .iter()
        .map(|r| (r.entries.max(1) as f64).log2())
        .collect();
    let (xmin, xmax) = xs
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(*x), b.max(*x)));
    let ymax = match metric {
        Metric::HitRate => 100.0,
        Metric::Cycles => sel.iter().map(|r| val(r)).fold(1.0, f64::max) * 1.1,
    };
    let xspan = if xmax > xmin { xmax - xmin } else { 1.0 };
    let px = |x: f64| ml + (x - xmin) / xspan * (w - ml - mr);
    let py = |y: f64| h - mb - y / ymax * (h - mt - mb);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let title = match metric {
        Metric::HitRate => "IOTLB hit rate (%)",
        Metric::Cycles => "modelled cycles per translation",
    };
    let _ = writeln!(
        s,
        r#"<text x="{}" y="20" text-anchor="middle" font-size="14">{title}: {trace}, ways={ways}</text>"#,
        w / 2.0
    );
    // axes
    let _ = writeln!(
        s,
        r#"<path d="M{ml},{mt} V{} H{}" stroke="black" fill="none"/>"#,
        h - mb,
        w - mr
    );
    for i in 0..=4 {
        let y = ymax * f64::from(i) / 4.0;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{:.0}</text><path d="M{ml},{} h{}" stroke="lightgray"/>"#,
            ml - 6.0,
            py(y) + 4.0,
            y,
            py(y),
            w - ml - mr
        );
    }
    let mut entries: Vec<usize> = sel.iter().map(|r| r.entries).collect();
    entries.sort_unstable();
    entries.dedup();
    for e in &entries {
        let x = px((*e.max(&1) as f64).log2());
        let _ = writeln!(
            s,
            r#"<text x="{x}" y="{}" text-anchor="middle">{e}</text>"#,
            h - mb + 16.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">IOTLB entries</text>"#,
        (ml + w - mr) / 2.0,
        h - 10.0
    );
    let mut policies: Vec<ReplacementPolicy> = Vec::new();
    for r in &sel {
        if !policies.contains(&r.policy) {
            policies.push(r.policy);
        }
    }
    for (i, p) in policies.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut pts: Vec<(f64, f64)> = sel
            .iter()
            .filter(|r| r.policy == *p)
            .map(|r| (px((r.entries.max(1) as f64).log2()), py(val(r))))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let d: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" stroke="{color}" stroke-width="2" fill="none"/>"#,
            d.join(" ")
        );
        let ly = mt + 20.0 * (i as f64 + 1.0);
        let _ = writeln!(
            s,
            r#"<path d="M{},{ly} h20" stroke="{color}" stroke-width="2"/><text x="{}" y="{}">{p}</text>"#,
            w - mr + 10.0,
            w - mr + 34.0,
            ly + 4.0
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Which metric a plot shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// Hit rate in percent.
    HitRate,
    /// Mean cycles per translation.
    Cycles,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{Workload, generate};

    #[test]
    fn sweep_hit_rate_grows_with_entries_for_a_working_set() {
        let ev = generate(Workload::Stream { pages: 256 }, 20_000, 1);
        let rows = sweep(
            "stream",
            &ev,
            &[64, 512],
            &[Ways::Full],
            &[ReplacementPolicy::Lru],
            &Latencies::default(),
        )
        .unwrap();
        assert_eq!(rows.len(), 2);
        // 256-page loop: LRU with 64 entries always misses, 512 nearly always hits.
        assert!(rows[0].hit_rate < 0.01, "{:?}", rows[0]);
        assert!(rows[1].hit_rate > 0.95, "{:?}", rows[1]);
        assert!(rows[1].cycles_per_translation < rows[0].cycles_per_translation);
    }

    #[test]
    fn sweep_csv_and_svg_have_every_row_and_policy() {
        let ev = generate(Workload::Random { pages: 128 }, 2_000, 1);
        let pol = [ReplacementPolicy::Lru, ReplacementPolicy::Fifo];
        let rows = sweep(
            "r",
            &ev,
            &[16, 32, 64],
            &[Ways::N(4)],
            &pol,
            &Latencies::default(),
        )
        .unwrap();
        let csv = to_csv(&rows);
        assert_eq!(csv.lines().count(), 1 + 6);
        let svg = to_svg(&rows, "r", Ways::N(4), Metric::HitRate);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains(">fifo<") && svg.contains(">lru<"));
    }

    #[test]
    fn ways_parse() {
        assert_eq!("full".parse::<Ways>(), Ok(Ways::Full));
        assert_eq!("8".parse::<Ways>(), Ok(Ways::N(8)));
        assert!("0".parse::<Ways>().is_err());
    }
}
