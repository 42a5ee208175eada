//! `iommu-sweep`: replay translation traces (from `iommu-vmm --trace` or
//! synthetic workloads) against IOTLB sizes, associativities, replacement
//! policies and latency settings; write CSV and SVG plots.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use iommu_benches::sweep::{Metric, Ways, sweep, to_csv, to_svg};
use iommu_benches::synth::{Workload, generate};
use iommu_emulator::trace::{TraceEvent, TraceReader};
use iommu_emulator::{Latencies, ReplacementPolicy};

#[derive(Parser, Debug)]
#[command(about = "Sweep IOTLB geometry and policies over translation traces")]
struct Args {
    /// Trace files recorded with `iommu-vmm --trace FILE`.
    #[arg(long = "trace")]
    traces: Vec<PathBuf>,
    /// Synthetic workloads: stream[:pages], random[:pages], hot[:pages],
    /// strict[:pages-per-request], pasid[:count]. Default when no --trace:
    /// all five.
    #[arg(long = "synthetic", value_delimiter = ',')]
    synthetic: Vec<Workload>,
    /// Translations per synthetic workload.
    #[arg(long, default_value_t = 200_000)]
    length: u64,
    /// IOTLB entry counts.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "16,32,64,128,256,512,1024,2048,4096"
    )]
    entries: Vec<usize>,
    /// Associativities (a number or 'full').
    #[arg(long, value_delimiter = ',', default_value = "8")]
    ways: Vec<Ways>,
    /// Replacement policies.
    #[arg(long, value_delimiter = ',', default_value = "lru,plru,fifo,random")]
    policies: Vec<ReplacementPolicy>,
    /// Latency overrides, e.g. `--timing mem_read=200,iotlb_hit=1`.
    #[arg(long, value_delimiter = ',')]
    timing: Vec<String>,
    /// Output folder for sweep.csv and the SVG plots.
    #[arg(long, default_value = "target/sweep")]
    out: PathBuf,
}

fn run(args: Args) -> Result<(), String> {
    let mut lat = Latencies::default();
    for t in &args.timing {
        let (k, v) = t
            .split_once('=')
            .ok_or_else(|| format!("--timing expects name=value, got '{t}'"))?;
        let v: u64 = v
            .parse()
            .map_err(|_| format!("--timing {k}: '{v}' is not a number"))?;
        lat.set(k, v)?;
    }
    let mut sources: Vec<(String, Vec<TraceEvent>)> = Vec::new();
    for path in &args.traces {
        let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let events = TraceReader::new(std::io::BufReader::new(f))
            .map_err(|e| format!("{}: {e}", path.display()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let name = path
            .file_stem()
            .map_or("trace".into(), |s| s.to_string_lossy().into_owned());
        sources.push((name, events));
    }
    let mut synth = args.synthetic.clone();
    if synth.is_empty() && args.traces.is_empty() {
        synth = ["stream", "random", "hot", "strict", "pasid"]
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect();
    }
    for (i, w) in synth.iter().enumerate() {
        sources.push((
            w.to_string().replace(':', "-"),
            generate(*w, args.length, 0x5eed + i as u64),
        ));
    }
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let mut all = Vec::new();
    for (name, events) in &sources {
        eprintln!("iommu-sweep: {name}: {} events", events.len());
        let rows = sweep(
            name,
            events,
            &args.entries,
            &args.ways,
            &args.policies,
            &lat,
        )
        .map_err(|e| e.to_string())?;
        for ways in &args.ways {
            for (metric, suffix) in [(Metric::HitRate, "hit_rate"), (Metric::Cycles, "cycles")] {
                let file = args.out.join(format!("{name}-ways{ways}-{suffix}.svg"));
                std::fs::write(&file, to_svg(&rows, name, *ways, metric))
                    .map_err(|e| format!("{}: {e}", file.display()))?;
            }
        }
        all.extend(rows);
    }
    let csv = args.out.join("sweep.csv");
    std::fs::write(&csv, to_csv(&all)).map_err(|e| format!("{}: {e}", csv.display()))?;
    println!(
        "iommu-sweep: {} rows in {}, plots beside it",
        all.len(),
        csv.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("iommu-sweep: {e}");
            ExitCode::from(2)
        }
    }
}
