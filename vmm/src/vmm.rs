//! Puts a VM together from the command line and runs it to its end.

use std::fs::OpenOptions;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use iommu_emulator::trace::{TraceSink, TraceWriter};
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use crate::arch::x86_64::{self, layout, platform};
use crate::cli::{Args, IommuSpec};
use crate::device_manager::DeviceManager;
use crate::error::{Error, Result};
use crate::event_loop::{ExitHandler, StdinHandler};
use crate::exit::{ExitControl, ExitReason, ExitSink, exit_status};
use crate::iommu;
use crate::kvm::{self, Vm};

pub use crate::arch::x86_64::BASE_CMDLINE;

/// The built-in test disk's bytes: 32-byte blocks, block `i` the SHA-256 of
/// `"iommu-emulator builtin disk"` and `i` (little-endian u64). Deterministic and without
/// repeats, so a DMA that lands on the wrong block changes the guest's checksum.
pub fn builtin_disk_content(len: usize) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut out = Vec::with_capacity(len);
    let mut i: u64 = 0;
    while out.len() < len {
        let mut h = Sha256::new();
        h.update(b"iommu-emulator builtin disk");
        h.update(i.to_le_bytes());
        let block = h.finalize();
        let take = block.len().min(len.saturating_sub(out.len()));
        out.extend_from_slice(block.get(..take).unwrap_or_default());
        i = i.wrapping_add(1); // a block counter; 2^64 blocks are never reached
    }
    out
}

/// An anonymous in-memory file holding `data` (the built-in disk's backing).
pub(crate) fn memfd_with(data: &[u8]) -> std::io::Result<std::fs::File> {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    // SAFETY: memfd_create with a valid NUL-terminated name and no flags beyond CLOEXEC; the
    // returned descriptor (checked below) is owned by nobody else, so File may take it.
    let fd = unsafe { libc::memfd_create(c"iommu-vmm-builtin-disk".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh, valid descriptor that only this File owns.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    f.write_all(data)?;
    Ok(f)
}

/// What a finished run reports.
#[derive(Debug)]
pub struct RunReport {
    /// Why it ended.
    pub reason: ExitReason,
    /// The process exit status.
    pub status: i32,
}

/// Check what can be checked without KVM (files, `--iommu` properties), so
/// that a mistake is reported at once, also before the nested runner
/// starts an L1 machine.
///
/// `args` must be resolved already: `--guest NAME` is the `iommu-vmm` command's (it turns the
/// name into kernel, initrd and defaults), and is refused here.
pub fn preflight(args: &Args) -> Result<()> {
    refuse_guest(args)?;
    open_host_files(args)?;
    iommu::validate(args.iommu.as_ref().unwrap_or(&IommuSpec::None))
}

/// The host files a run needs, opened and checked before any KVM work.
struct Inputs {
    kernel: std::path::PathBuf,
    iommu: IommuSpec,
    disks: Vec<(std::fs::File, bool)>,
    trace: Option<Arc<TraceWriter<std::fs::File>>>,
}

/// Opens the kernel, initrd and disks named on the command line (the checks [`preflight`]
/// and [`run`] share): the kernel's path and each disk with its read-only flag.
fn open_host_files(args: &Args) -> Result<(std::path::PathBuf, Vec<(std::fs::File, bool)>)> {
    let kernel = args.kernel.clone().ok_or(Error::MissingKernel)?;
    std::fs::File::open(&kernel).map_err(|source| Error::KernelUnreadable {
        path: kernel.clone(),
        source,
    })?;
    if let Some(p) = &args.initrd {
        std::fs::File::open(p).map_err(|source| Error::InitrdUnreadable {
            path: p.clone(),
            source,
        })?;
    }
    let mut disks = Vec::new();
    for d in &args.disk {
        let f = OpenOptions::new()
            .read(true)
            .write(!d.readonly)
            .open(&d.path)
            .map_err(|source| Error::DiskUnreadable {
                path: d.path.clone(),
                source,
            })?;
        disks.push((f, d.readonly));
    }
    Ok((kernel, disks))
}

impl Inputs {
    fn open(args: &Args) -> Result<Self> {
        let (kernel, files) = open_host_files(args)?;
        let iommu = args.iommu.clone().unwrap_or(IommuSpec::None);
        iommu::validate(&iommu)?;
        let mut disks = Vec::new();
        if let Some(len) = args.builtin_disk {
            let f =
                memfd_with(&builtin_disk_content(len)).map_err(io("creating the built-in disk"))?;
            disks.push((f, true));
        }
        disks.extend(files);
        let trace = match &args.trace {
            Some(p) => {
                let f = std::fs::File::create(p).map_err(|source| Error::Io {
                    what: format!("creating the trace file {}", p.display()),
                    source,
                })?;
                Some(Arc::new(
                    TraceWriter::new(f).map_err(io("writing the trace header"))?,
                ))
            }
            None => None,
        };
        Ok(Inputs {
            kernel,
            iommu,
            disks,
            trace,
        })
    }
}

/// How devices end the run: they tell [`ExitControl`], which wakes the event loop.
fn exit_path() -> Result<(EventFd, Arc<ExitControl>)> {
    let exit_evt = EventFd::new(libc::EFD_NONBLOCK).map_err(io("creating an eventfd"))?;
    let exit_evt_w = exit_evt.try_clone().map_err(io("cloning an eventfd"))?;
    let exit = Arc::new(ExitControl::new(Box::new(move || {
        let _ = exit_evt_w.write(1);
    })));
    Ok((exit_evt, exit))
}

/// Boot and run the guest described by `args`: open the inputs, create the VM and its
/// memory, wire the devices (device manager, then the platform's own), load the guest,
/// start the vCPUs, serve the event loop until a device ends the run, report.
///
/// As for [`preflight`], `--guest` must have been resolved by the caller.
pub fn run(args: &Args) -> Result<RunReport> {
    let started = Instant::now();
    refuse_guest(args)?;
    let inputs = Inputs::open(args)?;
    let mem = guest_memory(args.memory)?;
    let vm = Vm::new(kvm::open_kvm()?, &mem)?;
    let (exit_evt, exit) = exit_path()?;
    let exit_sink: Arc<dyn ExitSink> = exit.clone();

    let trace_sink = inputs.trace.clone().map(|t| t as Arc<dyn TraceSink>);
    let mut dm = DeviceManager::new(
        Arc::new(kvm::KvmBackend::new(vm.fd.clone())),
        mem.clone(),
        platform::PCI_WINDOWS,
        &inputs.iommu,
        trace_sink,
    )?;
    let plat = platform::add_devices(&mut dm, &exit_sink)?;
    for (file, readonly) in inputs.disks {
        dm.add_virtio_blk(file, readonly)?;
    }
    if args.device.iter().any(|d| d == "pasid-test") {
        dm.add_pasid_test()?;
    }
    let mut machine = dm.seal(platform::add_pci_ports)?;

    let guest = x86_64::load_guest(
        &mem,
        &x86_64::GuestBoot {
            kernel: &inputs.kernel,
            initrd: args.initrd.as_deref(),
            append: args.append.as_deref(),
            memory: args.memory,
            vcpus: args.smp,
        },
        machine.unit.as_ref(),
    )?;
    let mut vcpus = Vec::new();
    for id in 0..args.smp {
        vcpus.push(kvm::vcpu::create(
            &vm.kvm,
            &vm.fd,
            id,
            args.smp,
            args.kvm_pv_clear(),
        )?);
    }
    if let Some(bsp) = vcpus.first() {
        kvm::vcpu::setup_boot_cpu(bsp, guest.entry)?;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let mut em = event_loop(
        std::mem::take(&mut machine.subscribers),
        exit_evt,
        stop.clone(),
        &plat,
    )?;
    let unit = machine.unit.as_ref();
    tracing::info!(
        "starting {} vCPU(s), {} MiB, IOMMU {}, interrupt remapping {}, x2APIC API {}, setup took {:?}",
        args.smp,
        args.memory >> 20,
        unit.map_or("none", |u| u.name()),
        if unit.is_some_and(|u| u.interrupt_remapper().is_some()) {
            "on"
        } else {
            "off"
        },
        if vm.x2apic_api { "on" } else { "off" },
        started.elapsed()
    );
    crate::diag::postmortem::prepare_shutdown_report(&mem, &guest.cmdline, &args.diag_options());
    let mut threads = Vec::new();
    for (id, vcpu) in vcpus.into_iter().enumerate() {
        // vCPUs were created with u8 ids (cli caps the count), so this fits.
        let id = u8::try_from(id).map_err(|_| Error::Setup(format!("vCPU {id} has no u8 id")))?;
        let (pio, mmio, exit) = (machine.pio.clone(), machine.mmio.clone(), exit_sink.clone());
        let ioapic = plat.ioapic.clone();
        let t = std::thread::Builder::new()
            .name(format!("vcpu{id}"))
            .spawn(move || kvm::vcpu::run(vcpu, id, pio, mmio, ioapic, exit))
            .map_err(io("starting a vCPU thread"))?;
        threads.push(t);
    }

    while !stop.load(Ordering::SeqCst) {
        if let Err(e) = em.run() {
            tracing::warn!("event loop: {e:?}");
        }
    }

    let reason = exit
        .reason()
        .unwrap_or(ExitReason::Error("stopped without a reason".into()));
    let status = exit_status(&reason, exit.summary());
    let _ = std::io::Write::flush(&mut std::io::stdout());
    machine.stop_devices();
    if let Some(t) = &inputs.trace
        && let Err(e) = t.flush()
    {
        eprintln!("iommu-vmm: trace: {e}");
    }
    if args.stats {
        eprintln!("iommu-vmm: ran for {:.2?}", started.elapsed());
        if let Some(t) = &inputs.trace {
            eprintln!(
                "trace: {} records written, {} failed",
                t.written(),
                t.failed()
            );
        }
        eprintln!("{}", machine.stats_report());
    }
    Ok(RunReport { reason, status })
}

/// Guest RAM as the architecture lays it out.
fn guest_memory(size: u64) -> Result<GuestMemoryMmap> {
    let regions: Vec<(GuestAddress, usize)> = layout::ram_regions(size)
        .into_iter()
        .map(|(s, l)| {
            usize::try_from(l)
                .map(|l| (GuestAddress(s), l))
                .map_err(|_| Error::Memory {
                    size,
                    reason: format!("a RAM region of {l:#x} bytes does not fit the host"),
                })
        })
        .collect::<Result<_>>()?;
    GuestMemoryMmap::from_ranges(&regions).map_err(|e| Error::Memory {
        size,
        reason: e.to_string(),
    })
}

/// The event loop: the exit request, the devices' subscribers, console input.
fn event_loop(
    subscribers: Vec<Box<dyn MutEventSubscriber + Send>>,
    exit_evt: EventFd,
    stop: Arc<AtomicBool>,
    plat: &platform::Platform,
) -> Result<EventManager<Box<dyn MutEventSubscriber + Send>>> {
    let mut em: EventManager<Box<dyn MutEventSubscriber + Send>> =
        EventManager::new().map_err(|e| Error::Setup(format!("event manager: {e:?}")))?;
    em.add_subscriber(Box::new(ExitHandler::new(exit_evt, stop)));
    for s in subscribers {
        em.add_subscriber(s);
    }
    let input = plat.console.clone();
    em.add_subscriber(Box::new(StdinHandler::new(Box::new(move |bytes| {
        if let Ok(mut c) = input.lock() {
            c.enqueue_input(bytes);
        }
    }))));
    Ok(em)
}

/// `--guest NAME` needs the guest images, which this library does not depend on: the
/// `iommu-vmm` command resolves it into `--kernel`, `--initrd`, `--iommu` and `--append` first.
fn refuse_guest(args: &Args) -> Result<()> {
    match &args.guest {
        Some(name) => Err(Error::Setup(format!(
            "--guest {name}: guest images are resolved by the iommu-vmm command, not by the VMM library"
        ))),
        None => Ok(()),
    }
}

fn io(what: &'static str) -> impl Fn(std::io::Error) -> Error {
    move |source| Error::Io {
        what: what.to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> Args {
        let mut v = vec!["iommu-vmm"];
        v.extend_from_slice(extra);
        Args::try_parse_from(v).unwrap()
    }

    #[test]
    fn builtin_disk_content_is_deterministic_and_has_no_repeated_block() {
        const LEN: usize = 1 << 20;
        let a = builtin_disk_content(LEN);
        assert_eq!(a.len(), LEN);
        assert_eq!(a, builtin_disk_content(LEN));
        assert_eq!(builtin_disk_content(100), a[..100].to_vec());
        let blocks: std::collections::HashSet<&[u8]> = a.chunks(32).collect();
        assert_eq!(blocks.len(), LEN / 32);
    }

    #[test]
    fn memfd_disk_reads_back_its_bytes() {
        use std::os::unix::fs::FileExt;
        let data = builtin_disk_content(4096);
        let f = memfd_with(&data).unwrap();
        let mut back = vec![0u8; 4096];
        f.read_exact_at(&mut back, 0).unwrap();
        assert_eq!(back, data);
        assert_eq!(f.metadata().unwrap().len(), 4096);
    }

    #[test]
    fn preflight_without_kernel_says_so() {
        let e = preflight(&args(&[])).unwrap_err();
        assert!(matches!(e, Error::MissingKernel));
        assert!(e.to_string().contains("--kernel PATH"), "{e}");
    }

    #[test]
    fn preflight_unreadable_kernel_names_the_path() {
        let e = preflight(&args(&["--kernel", "/nonexistent/vmlinuz"])).unwrap_err();
        assert!(
            e.to_string()
                .contains("cannot read the kernel /nonexistent/vmlinuz"),
            "{e}"
        );
    }

    #[test]
    fn preflight_unknown_iommu_property_lists_valid_ones() {
        let k = tempfile::NamedTempFile::new().unwrap();
        let e = preflight(&args(&[
            "--kernel",
            k.path().to_str().unwrap(),
            "--iommu",
            "intel-iommu,no-such-prop=on",
        ]))
        .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("no-such-prop"), "{msg}");
        assert!(msg.contains("valid properties"), "{msg}");
        assert!(msg.contains("x-scalable-mode"), "{msg}");
    }

    #[test]
    fn preflight_missing_disk_names_the_path() {
        let k = tempfile::NamedTempFile::new().unwrap();
        let e = preflight(&args(&[
            "--kernel",
            k.path().to_str().unwrap(),
            "--disk",
            "/nonexistent/disk.img",
        ]))
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("cannot open the disk /nonexistent/disk.img"),
            "{e}"
        );
    }

    #[test]
    fn preflight_and_run_refuse_an_unresolved_guest() {
        for e in [
            preflight(&args(&["--guest", "6.1"])).unwrap_err(),
            run(&args(&["--guest", "6.1"])).unwrap_err(),
        ] {
            assert!(matches!(e, Error::Setup(_)), "{e}");
            assert!(e.to_string().contains("--guest 6.1"), "{e}");
        }
    }
}
