//! Whole-VM comparison: the same Debian kernel, initramfs workload and disk under `iommu-vmm`
//! and under Debian's `qemu-system-x86_64 -accel kvm -machine q35 -device intel-iommu`, run
//! alternately (A B A B ...) on the same KVM, per IOMMU mode.
//!
//! Each run boots the guest image with `iommutest.bench=4096,65536` on its command line: the
//! payload's `/init` prints `IOMMUBENCH init uptime=<s>` first thing, then the IOMMU domain type
//! of the disk (`DMA`, `DMA-FQ`, `identity` or `none`: proof that the mode took effect), then one
//! `IOMMUBENCH read block=B bytes=N usecs=U mibs=M` line per block size from
//! `odirect_sha --time` (O_DIRECT reads of the first `disk_len` bytes of `/dev/vda`), and powers
//! off. The driver measures boot-to-init as the time from starting the VMM process to that first
//! line on its console (VMM start-up, firmware, kernel and initramfs unpacking all count), and
//! takes the read rates from the guest.
//!
//! On hosts without hardware KVM both VMMs run inside the same nested-runner L1 boot
//! (`iommu_nested`): QEMU, its libraries and firmware travel as a cached
//! [`iommu_nested::bundle::Bundle`], and each run copies its inputs into L1's RAM first
//! (`--stage`) so neither VMM reads its kernel or disk over 9p while timed.
//!
//! The pieces here are pure (modes, command lines, console and result parsing, medians, the
//! table and CSV) so they are unit-tested; the `iommu-wholevm` binary does the processes.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Prefix of the guest's benchmark lines (guest-images/payload/init.sh).
pub const GUEST_PREFIX: &str = "IOMMUBENCH ";
/// Prefix of the one result line each run prints (parsed by the driver).
pub const RESULT_PREFIX: &str = "WHOLEVM-RESULT ";

/// IOMMU mode of one comparison row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mode {
    /// VT-d present, DMA domains with strict invalidation (`iommu.strict=1`).
    Strict,
    /// VT-d present, DMA domains with lazy (flush-queue) invalidation (`iommu.strict=0`).
    Lazy,
    /// VT-d present, default domains in pass-through (`iommu.passthrough=1`).
    Pt,
    /// No IOMMU at all.
    None,
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "strict" => Ok(Mode::Strict),
            "lazy" => Ok(Mode::Lazy),
            "pt" | "passthrough" | "pass-through" => Ok(Mode::Pt),
            "none" | "absent" | "off" => Ok(Mode::None),
            other => Err(format!(
                "unknown mode {other:?} (expected strict, lazy, pt or none)"
            )),
        }
    }
}

/// The VT-d configuration both VMMs get when an IOMMU is present: scalable mode with
/// first-level translation (Linux 6.1 then uses first-level tables for DMA-API domains),
/// no interrupt remapping, no caching mode. Our model's properties and QEMU's.
pub const OUR_VTD: &str = "intel-iommu,x-scalable-mode=on,x-flts=on,caching-mode=off,intremap=off";
/// QEMU's device for the same hardware (QEMU 10: `x-flts` exists; QEMU 7.2 lacks it).
pub const QEMU_VTD: &str = "intel-iommu,x-scalable-mode=on,x-flts=on,caching-mode=off,intremap=off";

impl Mode {
    /// Every mode, in table order.
    pub const ALL: [Mode; 4] = [Mode::Strict, Mode::Lazy, Mode::Pt, Mode::None];

    /// Short name (as parsed).
    pub fn name(self) -> &'static str {
        match self {
            Mode::Strict => "strict",
            Mode::Lazy => "lazy",
            Mode::Pt => "pt",
            Mode::None => "none",
        }
    }

    /// Kernel command line options of the mode.
    pub fn kernel_args(self) -> &'static str {
        match self {
            Mode::Strict => "intel_iommu=on,sm_on iommu.strict=1",
            Mode::Lazy => "intel_iommu=on,sm_on iommu.strict=0",
            Mode::Pt => "intel_iommu=on,sm_on iommu.passthrough=1",
            Mode::None => "",
        }
    }

    /// The disk's IOMMU domain type the guest must report (`/sys/kernel/iommu_groups/*/type`).
    pub fn expected_domain(self) -> &'static str {
        match self {
            Mode::Strict => "DMA",
            Mode::Lazy => "DMA-FQ",
            Mode::Pt => "identity",
            Mode::None => "none",
        }
    }

    /// `iommu-vmm --iommu` value.
    pub fn our_iommu(self) -> &'static str {
        match self {
            Mode::None => "none",
            _ => OUR_VTD,
        }
    }

    /// QEMU `-device` for the IOMMU (`None`: no IOMMU device).
    pub fn qemu_iommu(self) -> Option<&'static str> {
        match self {
            Mode::None => None,
            _ => Some(QEMU_VTD),
        }
    }
}

/// Parses a comma-separated mode list (duplicates dropped, order kept).
pub fn parse_modes(s: &str) -> Result<Vec<Mode>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let m: Mode = part.parse()?;
        if !out.contains(&m) {
            out.push(m);
        }
    }
    if out.is_empty() {
        return Err("no mode given".into());
    }
    Ok(out)
}

/// Parses a block size: bytes, or with a K suffix (`4K`, `64k`); a multiple of 512 up to 1 MiB.
pub fn parse_block(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let n = match t.strip_suffix(['K', 'k']) {
        Some(k) => k.parse::<u64>().ok().and_then(|v| v.checked_mul(1024)),
        None => t.parse::<u64>().ok(),
    }
    .ok_or_else(|| format!("{s:?} is not a block size like 4K or 65536"))?;
    if n == 0 || !n.is_multiple_of(512) || n > 1 << 20 {
        return Err(format!(
            "block size {n} must be a multiple of 512 up to 1 MiB"
        ));
    }
    Ok(n)
}

/// A block size for people: `4K`, `64K`, or bytes.
pub fn block_label(b: u64) -> String {
    if b.is_multiple_of(1024) {
        format!("{}K", b / 1024)
    } else {
        b.to_string()
    }
}

/// Which VMM a run used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Vmm {
    /// `iommu-vmm` (A).
    Ours,
    /// Debian's QEMU (B).
    Qemu,
}

impl Vmm {
    /// Name in results and tables.
    pub fn name(self) -> &'static str {
        match self {
            Vmm::Ours => "iommu-vmm",
            Vmm::Qemu => "qemu",
        }
    }
}

impl FromStr for Vmm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "iommu-vmm" | "ours" => Ok(Vmm::Ours),
            "qemu" => Ok(Vmm::Qemu),
            other => Err(format!("unknown VMM {other:?} (iommu-vmm or qemu)")),
        }
    }
}

/// The run order: per round, per mode, A then B (A B A B ...).
pub fn schedule(rounds: u32, modes: &[Mode]) -> Vec<(u32, Mode, Vmm)> {
    let mut out = Vec::new();
    for r in 1..=rounds {
        for &m in modes {
            out.push((r, m, Vmm::Ours));
            out.push((r, m, Vmm::Qemu));
        }
    }
    out
}

/// The guest's own command line for a mode (both VMMs; `iommu-vmm` adds its base line, QEMU
/// gets [`iommu_vmm::vmm::BASE_CMDLINE`] in front of it so both kernels see the same options).
pub fn guest_append(mode: Mode, blocks: &[u64], disk_len: u64) -> String {
    let blocks: Vec<String> = blocks.iter().map(u64::to_string).collect();
    let mut s = String::from("quiet");
    if !mode.kernel_args().is_empty() {
        s.push(' ');
        s.push_str(mode.kernel_args());
    }
    let _ = write!(
        s,
        " iommutest.bench={} iommutest.disk_len={disk_len}",
        blocks.join(",")
    );
    s
}

/// What one boot needs.
#[derive(Debug, Clone)]
pub struct BootSpec {
    /// Guest kernel.
    pub kernel: PathBuf,
    /// Guest initramfs.
    pub initrd: PathBuf,
    /// Raw disk image (read-only to the guest).
    pub disk: PathBuf,
    /// The guest's command line ([`guest_append`]).
    pub append: String,
    /// The IOMMU mode.
    pub mode: Mode,
}

/// `iommu-vmm` arguments (without the program) for one boot.
pub fn our_args(b: &BootSpec) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec!["--nested".into(), "off".into(), "--kernel".into()];
    a.push(b.kernel.clone().into_os_string());
    a.push("--initrd".into());
    a.push(b.initrd.clone().into_os_string());
    a.push("--append".into());
    a.push(b.append.clone().into());
    a.push("--iommu".into());
    a.push(b.mode.our_iommu().into());
    a.push("--disk".into());
    let mut disk = b.disk.clone().into_os_string();
    disk.push(",readonly=on");
    a.push(disk);
    for s in ["-m", "1G", "--smp", "1"] {
        a.push(s.into());
    }
    a
}

/// QEMU arguments (without the program) for one boot: `-accel kvm -machine q35`, the IOMMU
/// device first (QEMU wants the vIOMMU before the devices behind it), the kernel with the same
/// command line, the disk as modern virtio-blk with `iommu_platform=on` (as `iommu-vmm` offers
/// VIRTIO_F_ACCESS_PLATFORM), and the test-exit port.
pub fn qemu_args(b: &BootSpec, data_dirs: &[PathBuf]) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    for d in data_dirs {
        a.push("-L".into());
        a.push(d.clone().into_os_string());
    }
    for s in [
        "-accel",
        "kvm",
        "-machine",
        "q35",
        "-cpu",
        "host",
        "-m",
        "1G",
        "-smp",
        "1",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-monitor",
        "none",
        "-no-reboot",
    ] {
        a.push(s.into());
    }
    if let Some(dev) = b.mode.qemu_iommu() {
        a.push("-device".into());
        a.push(dev.into());
    }
    a.push("-kernel".into());
    a.push(b.kernel.clone().into_os_string());
    a.push("-initrd".into());
    a.push(b.initrd.clone().into_os_string());
    a.push("-append".into());
    a.push(format!("{} {}", iommu_vmm::vmm::BASE_CMDLINE, b.append).into());
    a.push("-drive".into());
    a.push(
        format!(
            "file={},if=none,id=d0,format=raw,readonly=on",
            b.disk.to_string_lossy().replace(',', ",,")
        )
        .into(),
    );
    for s in [
        "-device",
        "virtio-blk-pci,drive=d0,disable-legacy=on,iommu_platform=on",
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=1",
    ] {
        a.push(s.into());
    }
    a
}

/// One guest benchmark line.
#[derive(Debug, Clone, PartialEq)]
pub enum GuestEvent {
    /// `/init` started; the guest's uptime then.
    Init {
        /// Seconds since the guest kernel started.
        uptime: f64,
    },
    /// The disk's IOMMU domain type.
    Domain(String),
    /// One timed O_DIRECT read pass.
    Read {
        /// Block size.
        block: u64,
        /// Bytes read.
        bytes: u64,
        /// Microseconds taken.
        usecs: u64,
    },
    /// The reader failed (its message).
    ReadError(String),
    /// All done; the guest powers off.
    Done,
}

fn kv(s: &str) -> BTreeMap<&str, &str> {
    s.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .collect()
}

/// Parses a guest console line (the marker may follow other text on the same line).
pub fn parse_guest_line(line: &str) -> Option<GuestEvent> {
    let rest = &line[line.find(GUEST_PREFIX)? + GUEST_PREFIX.len()..];
    let rest = rest.trim_end();
    if let Some(r) = rest.strip_prefix("init ") {
        return kv(r)
            .get("uptime")?
            .parse()
            .ok()
            .map(|uptime| GuestEvent::Init { uptime });
    }
    if let Some(r) = rest.strip_prefix("read ") {
        if let Some(e) = r.strip_prefix("error: ") {
            return Some(GuestEvent::ReadError(e.to_string()));
        }
        let m = kv(r);
        let num = |k: &str| m.get(k).and_then(|v| v.parse::<u64>().ok());
        return match (num("block"), num("bytes"), num("usecs")) {
            (Some(block), Some(bytes), Some(usecs)) if usecs > 0 => Some(GuestEvent::Read {
                block,
                bytes,
                usecs,
            }),
            _ => Some(GuestEvent::ReadError(r.to_string())),
        };
    }
    if let Some(r) = rest.strip_prefix("domain=") {
        return Some(GuestEvent::Domain(
            r.split_whitespace().next().unwrap_or("").to_string(),
        ));
    }
    (rest == "done").then_some(GuestEvent::Done)
}

/// MiB/s of a read pass.
pub fn mibs(bytes: u64, usecs: u64) -> f64 {
    if usecs == 0 {
        return 0.0;
    }
    bytes as f64 / (1024.0 * 1024.0) / (usecs as f64 / 1e6)
}

/// The outcome of one boot.
#[derive(Debug, Clone, PartialEq)]
pub struct RunResult {
    /// Round (1-based).
    pub round: u32,
    /// IOMMU mode.
    pub mode: Mode,
    /// VMM.
    pub vmm: Vmm,
    /// True when the guest reached init, reported the expected domain, read every block size
    /// and the VMM exited with status 0.
    pub ok: bool,
    /// Seconds from starting the VMM process to the guest's first init line.
    pub init_secs: Option<f64>,
    /// The guest kernel's uptime when init started.
    pub guest_uptime: Option<f64>,
    /// MiB/s per block size.
    pub read_mibs: BTreeMap<u64, f64>,
    /// Domain type the guest reported.
    pub domain: String,
    /// Seconds from start to the VMM's exit.
    pub total_secs: f64,
    /// Why a run is not ok (`-` when it is).
    pub note: String,
}

/// Builds a result from a finished boot's console, exit status and timings, checking it.
pub fn judge(
    (round, mode, vmm): (u32, Mode, Vmm),
    events: &[(f64, GuestEvent)],
    exit_status: Option<i32>,
    total_secs: f64,
    blocks: &[u64],
) -> RunResult {
    let mut r = RunResult {
        round,
        mode,
        vmm,
        ok: false,
        init_secs: None,
        guest_uptime: None,
        read_mibs: BTreeMap::new(),
        domain: "?".into(),
        total_secs,
        note: String::new(),
    };
    let mut problems = Vec::new();
    for (t, e) in events {
        match e {
            GuestEvent::Init { uptime } if r.init_secs.is_none() => {
                r.init_secs = Some(*t);
                r.guest_uptime = Some(*uptime);
            }
            GuestEvent::Domain(d) => r.domain = d.clone(),
            GuestEvent::Read {
                block,
                bytes,
                usecs,
            } => {
                r.read_mibs.insert(*block, mibs(*bytes, *usecs));
            }
            GuestEvent::ReadError(m) => problems.push(format!("read: {m}")),
            _ => {}
        }
    }
    if r.init_secs.is_none() {
        problems.push("no init line".into());
    }
    if r.domain != mode.expected_domain() {
        problems.push(format!(
            "domain {} (want {})",
            r.domain,
            mode.expected_domain()
        ));
    }
    for b in blocks {
        if !r.read_mibs.contains_key(b) {
            problems.push(format!("no {} read", block_label(*b)));
        }
    }
    match exit_status {
        Some(0) => {}
        Some(s) => problems.push(format!("exit status {s}")),
        None => problems.push("timed out".into()),
    }
    r.ok = problems.is_empty();
    r.note = if problems.is_empty() {
        "-".into()
    } else {
        problems.join("; ").replace(char::is_whitespace, "_")
    };
    r
}

impl RunResult {
    /// The result line (`WHOLEVM-RESULT k=v ...`), one per run, parsed back by [`RunResult::parse`].
    pub fn to_line(&self) -> String {
        let opt = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.3}"));
        let mut s = format!(
            "{RESULT_PREFIX}round={} mode={} vmm={} ok={} init_s={} uptime_s={}",
            self.round,
            self.mode.name(),
            self.vmm.name(),
            u8::from(self.ok),
            opt(self.init_secs),
            opt(self.guest_uptime)
        );
        for (b, v) in &self.read_mibs {
            let _ = write!(s, " r{b}={v:.2}");
        }
        let _ = write!(
            s,
            " domain={} total_s={:.2} note={}",
            self.domain, self.total_secs, self.note
        );
        s
    }

    /// Parses a result line (also inside a longer console line).
    pub fn parse(line: &str) -> Option<RunResult> {
        let rest = &line[line.find(RESULT_PREFIX)? + RESULT_PREFIX.len()..];
        let m = kv(rest);
        let f = |k: &str| m.get(k).and_then(|v| v.parse::<f64>().ok());
        let mut read_mibs = BTreeMap::new();
        for (k, v) in &m {
            if let Some(b) = k.strip_prefix('r').and_then(|b| b.parse::<u64>().ok())
                && let Ok(x) = v.parse::<f64>()
            {
                read_mibs.insert(b, x);
            }
        }
        Some(RunResult {
            round: m.get("round")?.parse().ok()?,
            mode: m.get("mode")?.parse().ok()?,
            vmm: m.get("vmm")?.parse().ok()?,
            ok: *m.get("ok")? == "1",
            init_secs: f("init_s"),
            guest_uptime: f("uptime_s"),
            read_mibs,
            domain: m.get("domain").unwrap_or(&"?").to_string(),
            total_secs: f("total_s").unwrap_or(0.0),
            note: m.get("note").unwrap_or(&"-").to_string(),
        })
    }
}

/// Median of the values (`None` when empty).
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if !n.is_multiple_of(2) {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Medians of one VMM in one mode.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Medians {
    /// Runs that passed the checks / runs made.
    pub ok: usize,
    /// Runs made.
    pub runs: usize,
    /// Boot-to-init seconds.
    pub init_secs: Option<f64>,
    /// Guest kernel uptime at init.
    pub guest_uptime: Option<f64>,
    /// MiB/s per block size.
    pub read_mibs: BTreeMap<u64, f64>,
}

/// Medians over the passing runs of `vmm` in `mode`.
pub fn medians(results: &[RunResult], mode: Mode, vmm: Vmm, blocks: &[u64]) -> Medians {
    let runs: Vec<&RunResult> = results
        .iter()
        .filter(|r| r.mode == mode && r.vmm == vmm)
        .collect();
    let good: Vec<&&RunResult> = runs.iter().filter(|r| r.ok).collect();
    let col = |f: &dyn Fn(&RunResult) -> Option<f64>| -> Option<f64> {
        median(&good.iter().filter_map(|r| f(r)).collect::<Vec<_>>())
    };
    let mut read_mibs = BTreeMap::new();
    for &b in blocks {
        if let Some(m) = col(&|r: &RunResult| r.read_mibs.get(&b).copied()) {
            read_mibs.insert(b, m);
        }
    }
    Medians {
        ok: good.len(),
        runs: runs.len(),
        init_secs: col(&|r: &RunResult| r.init_secs),
        guest_uptime: col(&|r: &RunResult| r.guest_uptime),
        read_mibs,
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "-".into(),
    }
}

fn num(v: Option<f64>, prec: usize) -> String {
    v.map_or("-".into(), |x| format!("{x:.prec$}"))
}

/// A rate with two decimals below 10 (nested runs read well under 1 MiB/s at 4K), else one.
fn rate(v: Option<f64>) -> String {
    match v {
        Some(x) if x < 10.0 => format!("{x:.2}"),
        other => num(other, 1),
    }
}

/// What QEMU is given for a mode, for the table's last column.
pub fn qemu_match_note(mode: Mode) -> &'static str {
    match mode {
        Mode::None => "no IOMMU device in either",
        _ => "same VT-d: scalable, first-level (x-flts), no caching mode, no IR",
    }
}

/// The Markdown table: per mode, boot-to-init and the O_DIRECT read rates of both VMMs with
/// their ratio (`iommu-vmm / QEMU`: below 1 is faster for boot time, above 1 is faster for
/// MiB/s).
pub fn render_table(results: &[RunResult], modes: &[Mode], blocks: &[u64]) -> String {
    let mut s = String::from(
        "| mode | runs ok (ours/QEMU) | boot to init, s: iommu-vmm | QEMU | ratio | guest kernel uptime at init, s (ours / QEMU) |",
    );
    for b in blocks {
        let l = block_label(*b);
        let _ = write!(s, " {l} read MiB/s: iommu-vmm | QEMU | ratio |");
    }
    s.push_str(" QEMU setting |\n|---|---|---|---|---|---|");
    for _ in blocks {
        s.push_str("---|---|---|");
    }
    s.push_str("---|\n");
    for &m in modes {
        let a = medians(results, m, Vmm::Ours, blocks);
        let b = medians(results, m, Vmm::Qemu, blocks);
        let _ = write!(
            s,
            "| {} | {}/{}, {}/{} | {} | {} | {} | {} / {} |",
            m.name(),
            a.ok,
            a.runs,
            b.ok,
            b.runs,
            num(a.init_secs, 2),
            num(b.init_secs, 2),
            ratio(a.init_secs, b.init_secs),
            num(a.guest_uptime, 2),
            num(b.guest_uptime, 2)
        );
        for bl in blocks {
            let (x, y) = (a.read_mibs.get(bl).copied(), b.read_mibs.get(bl).copied());
            let _ = write!(s, " {} | {} | {} |", rate(x), rate(y), ratio(x, y));
        }
        let _ = writeln!(s, " {} |", qemu_match_note(m));
    }
    s
}

/// CSV of every run: one row per boot, read rates in one column per block size.
pub fn to_csv(results: &[RunResult], blocks: &[u64]) -> String {
    let mut s = String::from("round,mode,vmm,ok,init_s,guest_uptime_s");
    for b in blocks {
        let _ = write!(s, ",read_{}_mibs", block_label(*b));
    }
    s.push_str(",domain,total_s,note\n");
    let opt = |v: Option<f64>| v.map_or(String::new(), |x| format!("{x:.3}"));
    for r in results {
        let _ = write!(
            s,
            "{},{},{},{},{},{}",
            r.round,
            r.mode.name(),
            r.vmm.name(),
            u8::from(r.ok),
            opt(r.init_secs),
            opt(r.guest_uptime)
        );
        for b in blocks {
            let _ = write!(s, ",{}", opt(r.read_mibs.get(b).copied()));
        }
        let _ = writeln!(
            s,
            ",{},{:.2},{}",
            r.domain,
            r.total_secs,
            r.note.replace(',', ";")
        );
    }
    s
}

/// Writes `len` bytes of a fixed pseudo-random pattern (xorshift64, different in every sector)
/// to `path`, unless a file of that size is already there.
pub fn ensure_disk(path: &Path, len: u64) -> std::io::Result<()> {
    use std::io::Write;
    if std::fs::metadata(path).is_ok_and(|m| m.len() == len) {
        return Ok(());
    }
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut written = 0u64;
    while written < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        f.write_all(&x.to_le_bytes())?;
        written += 8;
    }
    f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_modes_accepts_list_and_aliases_and_rejects_unknown() {
        assert_eq!(
            parse_modes("strict,lazy,pt,none").unwrap(),
            Mode::ALL.to_vec()
        );
        assert_eq!(
            parse_modes("absent,passthrough,strict,strict").unwrap(),
            vec![Mode::None, Mode::Pt, Mode::Strict]
        );
        assert!(parse_modes("strict,fast").is_err());
        assert!(parse_modes(",").is_err());
    }

    #[test]
    fn parse_block_takes_k_suffix_and_rejects_odd_sizes() {
        assert_eq!(parse_block("4K"), Ok(4096));
        assert_eq!(parse_block("64k"), Ok(65536));
        assert_eq!(parse_block("512"), Ok(512));
        assert!(parse_block("1000").is_err());
        assert!(parse_block("2048K").is_err());
        assert!(parse_block("0").is_err());
        assert_eq!(block_label(65536), "64K");
    }

    #[test]
    fn schedule_alternates_vmms_per_mode_and_round() {
        let s = schedule(2, &[Mode::Strict, Mode::None]);
        let vmms: Vec<Vmm> = s.iter().map(|x| x.2).collect();
        assert_eq!(
            vmms,
            [
                Vmm::Ours,
                Vmm::Qemu,
                Vmm::Ours,
                Vmm::Qemu,
                Vmm::Ours,
                Vmm::Qemu,
                Vmm::Ours,
                Vmm::Qemu
            ]
        );
        assert_eq!(s[0], (1, Mode::Strict, Vmm::Ours));
        assert_eq!(s[7], (2, Mode::None, Vmm::Qemu));
    }

    #[test]
    fn guest_append_carries_mode_and_bench_options() {
        let a = guest_append(Mode::Lazy, &[4096, 65536], 1 << 25);
        assert_eq!(
            a,
            "quiet intel_iommu=on,sm_on iommu.strict=0 iommutest.bench=4096,65536 iommutest.disk_len=33554432"
        );
        assert!(!guest_append(Mode::None, &[4096], 4096).contains("intel_iommu"));
    }

    fn spec(mode: Mode) -> BootSpec {
        BootSpec {
            kernel: "/k".into(),
            initrd: "/i".into(),
            // A comma, which QEMU's -drive needs doubled (iommu-vmm's --disk has no escape).
            disk: "/d,x.img".into(),
            append: guest_append(mode, &[4096], 4096),
            mode,
        }
    }

    fn strings(v: &[OsString]) -> Vec<String> {
        v.iter().map(|a| a.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn qemu_args_put_iommu_first_and_match_the_guest_line() {
        let a = strings(&qemu_args(&spec(Mode::Strict), &["/data".into()]));
        let j = a.join(" ");
        assert!(j.starts_with("-L /data -accel kvm -machine q35"), "{j}");
        let dev = a.iter().position(|x| x == QEMU_VTD).unwrap();
        let blk = a
            .iter()
            .position(|x| x.starts_with("virtio-blk-pci"))
            .unwrap();
        assert!(dev < blk);
        assert!(a.contains(&"file=/d,,x.img,if=none,id=d0,format=raw,readonly=on".to_string()));
        let append = &a[a.iter().position(|x| x == "-append").unwrap() + 1];
        assert!(append.starts_with(iommu_vmm::vmm::BASE_CMDLINE));
        assert!(append.ends_with(&spec(Mode::Strict).append));
        let none = strings(&qemu_args(&spec(Mode::None), &[]));
        assert!(!none.iter().any(|x| x.starts_with("intel-iommu")));
    }

    #[test]
    fn our_args_parse_as_iommu_vmm_command_line() {
        use clap::Parser;
        let mut v = vec![OsString::from("iommu-vmm")];
        v.extend(our_args(&BootSpec {
            disk: "/d.img".into(),
            ..spec(Mode::Pt)
        }));
        let a = iommu_vmm::cli::Args::try_parse_from(v).unwrap();
        assert_eq!(a.nested, "off");
        assert_eq!(a.memory, 1 << 30);
        assert!(a.disk[0].readonly);
        assert_eq!(
            a.iommu,
            Some(iommu_vmm::cli::IommuSpec::IntelIommu {
                props: OUR_VTD.trim_start_matches("intel-iommu,").into()
            })
        );
        let mut v = vec![OsString::from("iommu-vmm")];
        v.extend(our_args(&BootSpec {
            disk: "/d.img".into(),
            ..spec(Mode::None)
        }));
        let a = iommu_vmm::cli::Args::try_parse_from(v).unwrap();
        assert_eq!(a.iommu, Some(iommu_vmm::cli::IommuSpec::None));
    }

    #[test]
    fn our_vtd_properties_are_valid_for_the_model() {
        let props = OUR_VTD.trim_start_matches("intel-iommu,");
        assert!(vtd_model::VtdConfig::parse_props(props).is_ok());
    }

    #[test]
    fn parse_guest_line_reads_every_kind() {
        assert_eq!(
            parse_guest_line("IOMMUBENCH init uptime=1.25"),
            Some(GuestEvent::Init { uptime: 1.25 })
        );
        assert_eq!(
            parse_guest_line("junk\x1b[0mIOMMUBENCH domain=DMA-FQ modules_failed=none"),
            Some(GuestEvent::Domain("DMA-FQ".into()))
        );
        assert_eq!(
            parse_guest_line("IOMMUBENCH read block=4096 bytes=1048576 usecs=500000 mibs=2.00\r"),
            Some(GuestEvent::Read {
                block: 4096,
                bytes: 1 << 20,
                usecs: 500_000
            })
        );
        assert!(matches!(
            parse_guest_line("IOMMUBENCH read error: open /dev/vda with O_DIRECT: x"),
            Some(GuestEvent::ReadError(_))
        ));
        assert_eq!(parse_guest_line("IOMMUBENCH done"), Some(GuestEvent::Done));
        assert_eq!(parse_guest_line("IOMMUTEST x PASS"), None);
        assert!((mibs(1 << 20, 500_000) - 2.0).abs() < 1e-9);
    }

    fn events(domain: &str) -> Vec<(f64, GuestEvent)> {
        vec![
            (3.5, GuestEvent::Init { uptime: 1.5 }),
            (3.6, GuestEvent::Domain(domain.into())),
            (
                5.0,
                GuestEvent::Read {
                    block: 4096,
                    bytes: 1 << 20,
                    usecs: 1_000_000,
                },
            ),
        ]
    }

    #[test]
    fn judge_accepts_complete_run_and_rejects_wrong_domain_or_status() {
        let ok = judge(
            (1, Mode::Strict, Vmm::Ours),
            &events("DMA"),
            Some(0),
            9.0,
            &[4096],
        );
        assert!(ok.ok, "{ok:?}");
        assert_eq!(ok.init_secs, Some(3.5));
        assert_eq!(ok.read_mibs.get(&4096), Some(&1.0));
        let bad = judge(
            (1, Mode::Lazy, Vmm::Qemu),
            &events("DMA"),
            Some(0),
            9.0,
            &[4096],
        );
        assert!(!bad.ok);
        assert!(
            bad.note.contains("domain_DMA_(want_DMA-FQ)"),
            "{}",
            bad.note
        );
        let missing = judge(
            (1, Mode::Strict, Vmm::Ours),
            &events("DMA"),
            None,
            9.0,
            &[4096, 65536],
        );
        assert!(!missing.ok);
        assert!(missing.note.contains("no_64K_read") && missing.note.contains("timed_out"));
    }

    #[test]
    fn result_line_round_trips() {
        let r = judge(
            (2, Mode::Pt, Vmm::Qemu),
            &events("identity"),
            Some(0),
            12.345,
            &[4096],
        );
        let line = r.to_line();
        assert!(line.starts_with(RESULT_PREFIX));
        let back = RunResult::parse(&format!("noise {line}")).unwrap();
        assert_eq!(back.round, 2);
        assert_eq!(back.mode, Mode::Pt);
        assert_eq!(back.vmm, Vmm::Qemu);
        assert!(back.ok);
        assert_eq!(back.init_secs, Some(3.5));
        assert_eq!(back.read_mibs.get(&4096), Some(&1.0));
        assert_eq!(back.domain, "identity");
        assert!(RunResult::parse("WHOLEVM-RESULT round=x").is_none());
    }

    #[test]
    fn median_handles_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    fn result(mode: Mode, vmm: Vmm, init: f64, r4k: f64, ok: bool) -> RunResult {
        RunResult {
            round: 1,
            mode,
            vmm,
            ok,
            init_secs: Some(init),
            guest_uptime: Some(1.0),
            read_mibs: BTreeMap::from([(4096, r4k)]),
            domain: mode.expected_domain().into(),
            total_secs: 10.0,
            note: "-".into(),
        }
    }

    #[test]
    fn table_shows_medians_of_passing_runs_and_ratios() {
        let rs = vec![
            result(Mode::Strict, Vmm::Ours, 2.0, 10.0, true),
            result(Mode::Strict, Vmm::Ours, 4.0, 30.0, true),
            result(Mode::Strict, Vmm::Ours, 100.0, 1.0, false),
            result(Mode::Strict, Vmm::Qemu, 6.0, 10.0, true),
        ];
        let t = render_table(&rs, &[Mode::Strict, Mode::None], &[4096]);
        let strict = t.lines().find(|l| l.starts_with("| strict")).unwrap();
        assert!(
            strict.starts_with(
                "| strict | 2/3, 1/1 | 3.00 | 6.00 | 0.50 | 1.00 / 1.00 | 20.0 | 10.0 | 2.00 |"
            ),
            "{strict}"
        );
        let none = t.lines().find(|l| l.starts_with("| none")).unwrap();
        assert!(
            none.starts_with("| none | 0/0, 0/0 | - | - | - | - / - |"),
            "{none}"
        );
        assert_eq!(t.lines().count(), 4);
    }

    #[test]
    fn csv_has_header_and_one_row_per_run() {
        let rs = vec![
            result(Mode::Strict, Vmm::Ours, 2.0, 10.0, true),
            result(Mode::Lazy, Vmm::Qemu, 3.0, 11.0, false),
        ];
        let c = to_csv(&rs, &[4096, 65536]);
        let lines: Vec<&str> = c.lines().collect();
        assert_eq!(
            lines[0],
            "round,mode,vmm,ok,init_s,guest_uptime_s,read_4K_mibs,read_64K_mibs,domain,total_s,note"
        );
        assert_eq!(
            lines[1],
            "1,strict,iommu-vmm,1,2.000,1.000,10.000,,DMA,10.00,-"
        );
        assert!(lines[2].starts_with("1,lazy,qemu,0,"));
        assert_eq!(lines.len(), 3);
    }

    #[test]
    fn ensure_disk_writes_pattern_once() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("disk.img");
        ensure_disk(&p, 8192).unwrap();
        let a = std::fs::read(&p).unwrap();
        assert_eq!(a.len(), 8192);
        assert_ne!(a[..512], a[512..1024]);
        ensure_disk(&p, 8192).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), a);
    }
}
