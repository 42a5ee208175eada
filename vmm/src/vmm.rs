//! Puts a VM together from the command line and runs it to its end.

use std::fs::OpenOptions;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use iommu_emulator::trace::{TraceSink, TraceWriter};
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use crate::acpi::{self, AcpiConfig};
use crate::boot;
use crate::cli::{Args, IommuSpec};
use crate::devices::acpi_pm::{ACPI_PM_LEN, ACPI_PM_PORT, AcpiPm};
use crate::devices::console::ConsoleOut;
use crate::devices::debug_exit::{DEBUG_EXIT_PORT, DebugExit};
use crate::devices::ioapic::{IOAPIC_MMIO_SIZE, Ioapic, IoapicLine};
use crate::devices::serial::{COM1_IRQ, COM1_PORT, I8042, I8042_PORT, ResetTrigger, SerialDevice};
use crate::devices::{Bus, BusDevice};
use crate::error::{Error, Result};
use crate::event_loop::{ExitHandler, QueueHandler, StdinHandler};
use crate::exit::{ExitControl, ExitReason, ExitSink, exit_status};
use crate::iommu::{self, IommuMmio, IommuUnit};
use crate::kvm::irq::{IrqRouter, KvmGsi};
use crate::kvm::{self, KvmMsi, Vm};
use crate::layout;
use crate::pci::{PciConfigIo, PciEcam, PciMmio, PciRoot};
use crate::virtio::blk::Blk;
use crate::virtio::pci::{BAR_SIZE, NOTIFY_MULTIPLIER, VirtioPci};

/// Command line the VMM always gives the kernel: console on COM1, no port
/// 0x80 delays (every port access is an exit), reboot through ACPI, reboot
/// (which ends the VMM) on panic.
pub const BASE_CMDLINE: &str = "console=ttyS0 io_delay=none reboot=acpi panic=-1 pci=realloc=off";

/// Default `--iommu` for `--guest`.
pub const GUEST_DEFAULT_IOMMU: &str = "intel-iommu,x-scalable-mode=on";

/// Default `--iommu` for `--guest NAME` with `devices`: [`GUEST_DEFAULT_IOMMU`], plus ATS and
/// page requests (`device-iotlb=on,x-prs=on`, which Linux needs for PRI and SVA) with the
/// PASID test device, plus `x-perfmon=on` for kernels with the IOMMU perf driver (6.3+).
/// `name` is the guest's kernel release (`7.3.4+deb13-amd64`) or version (`6.12`).
pub fn guest_default_iommu(name: &str, devices: &[String]) -> String {
    let mut s = GUEST_DEFAULT_IOMMU.to_string();
    if devices.iter().any(|d| d == "pasid-test") {
        s.push_str(",device-iotlb=on,x-prs=on");
    }
    let mut v = name.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    if (v.next().unwrap_or(0), v.next().unwrap_or(0)) >= (6, 3) {
        s.push_str(",x-perfmon=on");
    }
    s
}

/// Length of the built-in disk `--guest` adds when no `--disk` is given (the payload's default
/// `iommutest.disk_len`).
pub const GUEST_DISK_LEN: usize = 1 << 20;

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
        let take = block.len().min(len - out.len());
        out.extend_from_slice(&block[..take]);
        i += 1;
    }
    out
}

/// Lower-case hex SHA-256 of `data`.
fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An anonymous in-memory file holding `data` (the built-in disk's backing).
fn memfd_with(data: &[u8]) -> std::io::Result<std::fs::File> {
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

struct Disk {
    dev: Arc<Mutex<VirtioPci>>,
}

type Console = SerialDevice<IoapicLine, ConsoleOut<std::io::Stdout>>;

/// Check what can be checked without KVM (files, `--iommu` properties), so
/// that a mistake is reported at once, also before the nested runner
/// starts an L1 machine.
pub fn preflight(args: &Args) -> Result<()> {
    let resolved;
    let args = match &args.guest {
        Some(name) => {
            resolved = resolve_guest(args, name, false)?;
            &resolved
        }
        None => args,
    };
    let kernel = args.kernel.as_ref().ok_or(Error::MissingKernel)?;
    std::fs::File::open(kernel).map_err(|source| Error::KernelUnreadable {
        path: kernel.clone(),
        source,
    })?;
    if let Some(p) = &args.initrd {
        std::fs::File::open(p).map_err(|source| Error::InitrdUnreadable {
            path: p.clone(),
            source,
        })?;
    }
    for d in &args.disk {
        OpenOptions::new()
            .read(true)
            .write(!d.readonly)
            .open(&d.path)
            .map_err(|source| Error::DiskUnreadable {
                path: d.path.clone(),
                source,
            })?;
    }
    iommu::validate(args.iommu.as_ref().unwrap_or(&IommuSpec::None))
}

/// Boot and run the guest described by `args`.
pub fn run(args: &Args) -> Result<RunReport> {
    let started = Instant::now();
    let resolved;
    let args = match &args.guest {
        Some(name) => {
            resolved = resolve_guest(args, name, false)?;
            &resolved
        }
        None => args,
    };
    let kernel_path = args.kernel.clone().ok_or(Error::MissingKernel)?;
    std::fs::File::open(&kernel_path).map_err(|source| Error::KernelUnreadable {
        path: kernel_path.clone(),
        source,
    })?;
    if let Some(p) = &args.initrd {
        std::fs::File::open(p).map_err(|source| Error::InitrdUnreadable {
            path: p.clone(),
            source,
        })?;
    }
    let spec = args.iommu.clone().unwrap_or(IommuSpec::None);
    iommu::validate(&spec)?;
    let mut disk_files = Vec::new();
    if let Some(len) = args.builtin_disk {
        let f = memfd_with(&builtin_disk_content(len)).map_err(io("creating the built-in disk"))?;
        disk_files.push((f, true));
    }
    for d in &args.disk {
        let f = OpenOptions::new()
            .read(true)
            .write(!d.readonly)
            .open(&d.path)
            .map_err(|source| Error::DiskUnreadable {
                path: d.path.clone(),
                source,
            })?;
        disk_files.push((f, d.readonly));
    }
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
    let trace_sink: Option<Arc<dyn TraceSink>> = trace.clone().map(|t| t as Arc<dyn TraceSink>);

    let kvm = kvm::open_kvm()?;
    let regions: Vec<(GuestAddress, usize)> = layout::ram_regions(args.memory)
        .into_iter()
        .map(|(s, l)| (GuestAddress(s), l as usize))
        .collect();
    let mem = GuestMemoryMmap::from_ranges(&regions).map_err(|e| Error::Memory {
        size: args.memory,
        reason: e.to_string(),
    })?;
    let vm = Vm::new(kvm, &mem)?;

    // Exit path: devices -> ExitControl -> eventfd -> event loop.
    let exit_evt = EventFd::new(libc::EFD_NONBLOCK).map_err(io("creating an eventfd"))?;
    let exit_evt_w = exit_evt.try_clone().map_err(io("cloning an eventfd"))?;
    let exit = Arc::new(ExitControl::new(Box::new(move || {
        let _ = exit_evt_w.write(1);
    })));
    let exit_sink: Arc<dyn ExitSink> = exit.clone();
    // The IOMMU's own interrupts (not remapped, VT-d 5.1.6).
    let msi = Arc::new(KvmMsi::new(vm.fd.clone()));

    // IOMMU.
    let unit: Option<Arc<dyn IommuUnit>> = iommu::create(&spec, msi.clone())?;

    // Interrupts: the router (remapping through the unit), the IOAPIC.
    let router = Arc::new(IrqRouter::new(
        Arc::new(KvmGsi::new(vm.fd.clone())),
        unit.as_ref().and_then(|u| u.interrupt_remapper()),
        Arc::new(mem.clone()),
    ));
    if let Some(u) = &unit {
        u.set_interrupt_router(&router);
    }
    let ioapic = Arc::new(Ioapic::new(acpi::IOAPIC_ID, router.clone()));

    // Port I/O.
    let mut pio = Bus::new();
    let console: Arc<Mutex<Console>> = Arc::new(Mutex::new(SerialDevice::new(
        IoapicLine {
            ioapic: ioapic.clone(),
            pin: COM1_IRQ as usize,
        },
        ConsoleOut::new(std::io::stdout(), exit_sink.clone()),
    )));
    insert(&mut pio, console.clone(), u64::from(COM1_PORT), 8)?;
    insert(
        &mut pio,
        Arc::new(Mutex::new(I8042(vm_superio::I8042Device::new(
            ResetTrigger(exit_sink.clone()),
        )))),
        u64::from(I8042_PORT),
        5,
    )?;
    insert(
        &mut pio,
        Arc::new(AcpiPm::new(exit_sink.clone())),
        u64::from(ACPI_PM_PORT),
        u64::from(ACPI_PM_LEN),
    )?;
    insert(
        &mut pio,
        Arc::new(DebugExit::new(exit_sink.clone())),
        u64::from(DEBUG_EXIT_PORT),
        1,
    )?;

    // PCI.
    let mut root = PciRoot::new();
    let mut disks = Vec::new();
    let mut notify_fds = Vec::new();
    for (i, (file, readonly)) in disk_files.into_iter().enumerate() {
        let blk = Blk::new(file, readonly).map_err(io("reading the disk size"))?;
        let devfn = root
            .next_devfn()
            .ok_or_else(|| Error::Setup("too many PCI devices".into()))?;
        let rid = iommu_emulator::Rid::new(0, devfn >> 3, devfn & 7);
        let source = iommu_emulator::SourceId::Pci(rid);
        let dma = iommu::dma_memory(&mem, unit.as_ref(), source, trace_sink.as_ref());
        let mut dev = VirtioPci::new(Box::new(blk), dma, router.device_sink(rid));
        dev.set_bar0(layout::PCI_MMIO_START + i as u64 * BAR_SIZE);
        let fds: Vec<EventFd> = (0..dev.num_queues())
            .map(|_| EventFd::new(libc::EFD_NONBLOCK))
            .collect::<std::io::Result<_>>()
            .map_err(io("creating an eventfd"))?;
        let hook_fds: Vec<EventFd> = fds
            .iter()
            .map(|f| f.try_clone())
            .collect::<std::io::Result<_>>()
            .map_err(io("cloning an eventfd"))?;
        let vmfd = vm.fd.clone();
        dev.set_notify_moved(Box::new(move |old, new| {
            kvm::move_ioevents(&vmfd, &hook_fds, u64::from(NOTIFY_MULTIPLIER), old, new)
        }));
        let dev = Arc::new(Mutex::new(dev));
        root.add(devfn, dev.clone());
        notify_fds.push((dev.clone(), fds));
        disks.push(Disk { dev });
        tracing::info!(
            "virtio-blk {i} at 00:{:02x}.{} (requester ID {source})",
            devfn >> 3,
            devfn & 7
        );
    }
    if args.device.iter().any(|d| d == "pasid-test") {
        let bar0 = layout::PCI_MMIO_START + crate::devices::pasid::pci::BAR0_OFFSET_IN_WINDOW;
        // plug() takes the next free slot: its requester ID is the source
        // of the device's MSI-X messages.
        let devfn = root
            .next_devfn()
            .ok_or_else(|| Error::Setup("too many PCI devices".into()))?;
        let rid = iommu_emulator::Rid::new(0, devfn >> 3, devfn & 7);
        let source = crate::devices::pasid::pci::plug(
            &mut root,
            &mem,
            unit.as_ref(),
            trace_sink.as_ref(),
            router.device_sink(rid),
            bar0,
        )?;
        if source != iommu_emulator::SourceId::Pci(rid) {
            return Err(Error::Setup(format!(
                "pasid-test plugged at {source}, expected {rid}"
            )));
        }
    }
    let root = Arc::new(root);
    insert(&mut pio, Arc::new(PciConfigIo(root.clone())), 0xcf8, 8)?;

    // MMIO.
    let mut mmio = Bus::new();
    insert(
        &mut mmio,
        Arc::new(PciEcam(root.clone())),
        layout::ECAM_START,
        layout::ECAM_SIZE,
    )?;
    insert(
        &mut mmio,
        Arc::new(PciMmio {
            root: root.clone(),
            base: layout::PCI_MMIO_START,
        }),
        layout::PCI_MMIO_START,
        layout::PCI_MMIO_SIZE,
    )?;
    insert(
        &mut mmio,
        ioapic.clone(),
        layout::IOAPIC_START,
        IOAPIC_MMIO_SIZE,
    )?;
    let mut extra_tables = Vec::new();
    if let Some(u) = &unit {
        insert(
            &mut mmio,
            Arc::new(IommuMmio::new(u.clone(), mem.clone())),
            u.mmio_base(),
            u.mmio_size(),
        )?;
        extra_tables.push(u.acpi_table(acpi::IOAPIC_ID));
    }

    // Guest memory contents.
    let kernel = boot::load_kernel(&mem, &kernel_path)?;
    let initrd = match &args.initrd {
        Some(p) => Some(boot::load_initrd(
            &mem,
            args.memory,
            p,
            boot::initrd_addr_max(&kernel),
            kernel.end,
        )?),
        None => None,
    };
    let tables = acpi::build(&AcpiConfig {
        vcpus: args.smp,
        extra_tables,
    })
    .map_err(Error::Setup)?;
    for t in &tables {
        vm_memory::Bytes::write_slice(&mem, &t.bytes, GuestAddress(t.addr))
            .map_err(|e| Error::Setup(format!("writing ACPI tables: {e}")))?;
    }
    let cmdline = boot::build_cmdline(BASE_CMDLINE, args.append.as_deref())?;
    boot::write_boot_params(
        &mem,
        args.memory,
        &kernel,
        &cmdline,
        initrd,
        layout::ACPI_START,
    )?;
    boot::write_boot_tables(&mem)?;

    // vCPUs.
    let pio = Arc::new(pio);
    let mmio = Arc::new(mmio);
    let mut vcpus = Vec::new();
    for id in 0..args.smp {
        vcpus.push(kvm::vcpu::create(&vm.kvm, &vm.fd, id, args.smp, args.kvm_pv_clear())?);
    }
    if let Some(bsp) = vcpus.first() {
        kvm::vcpu::setup_boot_cpu(bsp, kernel.entry)?;
    }

    // Event loop.
    let stop = Arc::new(AtomicBool::new(false));
    let mut em: EventManager<Box<dyn MutEventSubscriber + Send>> =
        EventManager::new().map_err(|e| Error::Setup(format!("event manager: {e:?}")))?;
    em.add_subscriber(Box::new(ExitHandler::new(exit_evt, stop.clone())));
    for (dev, fds) in notify_fds {
        em.add_subscriber(Box::new(QueueHandler::new(dev, fds)));
    }
    let input = console.clone();
    em.add_subscriber(Box::new(StdinHandler::new(Box::new(move |bytes| {
        if let Ok(mut c) = input.lock() {
            c.enqueue_input(bytes);
        }
    }))));

    tracing::info!(
        "starting {} vCPU(s), {} MiB, IOMMU {}, interrupt remapping {}, x2APIC API {}, setup took {:?}",
        args.smp,
        args.memory >> 20,
        unit.as_ref().map_or("none", |u| u.name()),
        if unit
            .as_ref()
            .is_some_and(|u| u.interrupt_remapper().is_some())
        {
            "on"
        } else {
            "off"
        },
        if vm.x2apic_api { "on" } else { "off" },
        started.elapsed()
    );
    crate::diag::postmortem::prepare_shutdown_report(
        &mem,
        &cmdline
            .as_cstring()
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_default(),
        &args.diag_options(),
    );
    let mut threads = Vec::new();
    for (id, vcpu) in vcpus.into_iter().enumerate() {
        let (pio, mmio, exit) = (pio.clone(), mmio.clone(), exit_sink.clone());
        let ioapic = ioapic.clone();
        let t = std::thread::Builder::new()
            .name(format!("vcpu{id}"))
            .spawn(move || kvm::vcpu::run(vcpu, id as u8, pio, mmio, ioapic, exit))
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
    for (i, d) in disks.iter().enumerate() {
        if let Ok(dev) = d.dev.lock() {
            if let Err(e) = dev.device().sync() {
                eprintln!("iommu-vmm: disk {i}: flushing to the host: {e}");
            }
            if args.stats {
                eprintln!("virtio-blk {i}: {}", dev.device().stats());
            }
        }
    }
    if let Some(t) = &trace {
        if let Err(e) = t.flush() {
            eprintln!("iommu-vmm: trace: {e}");
        }
        if args.stats {
            eprintln!(
                "trace: {} records written, {} failed",
                t.written(),
                t.failed()
            );
        }
    }
    if args.stats {
        eprintln!("iommu-vmm: ran for {:.2?}", started.elapsed());
        match &unit {
            Some(u) => eprintln!("{} statistics:\n{}", u.name(), u.stats()),
            None => eprintln!("no IOMMU (--iommu none): nothing translated"),
        }
        eprintln!("IOMMU MSIs refused by KVM: {}", msi.dropped());
        let io = ioapic.stats();
        eprintln!(
            "ioapic: {} sent, {} blocked by remapping, {} EOIs",
            io.sent, io.blocked, io.eois
        );
        eprintln!("{}", router.stats());
        eprintln!(
            "accesses to unmapped ports: {}, unmapped MMIO: {}",
            pio.unhandled(),
            mmio.unhandled()
        );
    }
    Ok(RunReport { reason, status })
}

/// Default kernel command line of `--guest` images (before `--append`).
pub fn guest_cmdline(iommu: &IommuSpec) -> &'static str {
    match iommu {
        IommuSpec::IntelIommu { .. } => "quiet intel_iommu=on,sm_on iommu.strict=1",
        IommuSpec::None => "quiet",
    }
}

/// Turn `--guest NAME` into kernel, initrd, default IOMMU and command line, plus the built-in
/// read-only disk (and its checksum on the command line) when no `--disk` is given.
/// With `build`, the image is built (or checked current) first; without,
/// a cached image is used as it is and built only when missing (inside the
/// nested runner's L1 machine there is no compiler or network, and the
/// host has built it already).
pub fn resolve_guest(args: &Args, name: &str, build: bool) -> Result<Args> {
    use guest_images::image::{BuildOptions, Builder, image_path};
    let err = |e: guest_images::Error| Error::Setup(format!("--guest {name}: {e}"));
    let cache = guest_images::cache::Cache::from_env().map_err(err)?;
    let manifest = guest_images::manifest::Manifest::embedded().map_err(err)?;
    // A guest's kernel series names it too (`7.3` for `latest`); an image that is not in the
    // manifest (`guest-image build --kernel-tree`) is used as it is.
    let guest = manifest.guest(name).map(|g| g.name.clone()).ok();
    let dir = match (image_path(&cache, guest.as_deref().unwrap_or(name)), &guest) {
        (Ok(dir), _) if !build => dir,
        (Ok(dir), None) => dir,
        (Err(e), None) => return Err(err(e)),
        (_, Some(guest)) => {
            let opts = BuildOptions {
                quiet: true,
                ..BuildOptions::default()
            };
            Builder::new(cache, manifest, opts)
                .build_debian(guest)
                .map_err(err)?
                .dir
        }
    };
    // Per-kernel defaults follow the image's kernel release (its lock), not its name.
    let release =
        guest_images::lockfile::ImageLock::load(&dir.join(guest_images::cache::LOCK_FILE))
            .ok()
            .flatten()
            .map(|l| l.release)
            .unwrap_or_else(|| name.to_owned());
    let mut out = args.clone();
    out.guest = None;
    out.kernel = Some(dir.join(guest_images::cache::KERNEL_FILE));
    out.initrd = Some(dir.join(guest_images::cache::INITRAMFS_FILE));
    let iommu = args.iommu.clone().unwrap_or_else(|| {
        crate::cli::parse_iommu(&guest_default_iommu(&release, &args.device))
            .unwrap_or(IommuSpec::None)
    });
    let mut append = guest_cmdline(&iommu).to_string();
    // Without a disk of the user's, a built-in one whose checksum the payload verifies.
    if args.disk.is_empty() && args.builtin_disk.is_none() {
        out.builtin_disk = Some(GUEST_DISK_LEN);
        let sha = sha256_hex(&builtin_disk_content(GUEST_DISK_LEN));
        append.push_str(&format!(
            " iommutest.disk_sha={sha} iommutest.disk_len={GUEST_DISK_LEN}"
        ));
    }
    if let Some(a) = &args.append {
        append.push(' ');
        append.push_str(a);
    }
    out.iommu = Some(iommu);
    out.append = Some(append);
    Ok(out)
}

fn insert(bus: &mut Bus, dev: Arc<dyn BusDevice>, base: u64, len: u64) -> Result<()> {
    bus.insert(dev, base, len)
        .map_err(|e| Error::Setup(e.to_string()))
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
        let a = builtin_disk_content(GUEST_DISK_LEN);
        assert_eq!(a.len(), GUEST_DISK_LEN);
        assert_eq!(a, builtin_disk_content(GUEST_DISK_LEN));
        assert_eq!(builtin_disk_content(100), a[..100].to_vec());
        let blocks: std::collections::HashSet<&[u8]> = a.chunks(32).collect();
        assert_eq!(blocks.len(), GUEST_DISK_LEN / 32);
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
    fn guest_default_iommu_adds_pri_with_the_pasid_device_and_perfmon_from_6_3() {
        let pasid = vec!["pasid-test".to_string()];
        assert_eq!(guest_default_iommu("6.1", &[]), GUEST_DEFAULT_IOMMU);
        let s = guest_default_iommu("6.1", &pasid);
        assert!(s.ends_with(",device-iotlb=on,x-prs=on"), "{s}");
        assert!(guest_default_iommu("6.12", &[]).ends_with(",x-perfmon=on"));
        assert!(!guest_default_iommu("5.10", &pasid).contains("perfmon"));
        // Kernel releases as the image locks give them: 7.x and trixie's ABIs too.
        assert!(guest_default_iommu("7.3.4+deb13-amd64", &[]).ends_with(",x-perfmon=on"));
        assert!(!guest_default_iommu("6.1.0-57-amd64", &[]).contains("perfmon"));
        for name in ["5.10", "6.1", "6.12", "kt-test", "7.3.4+deb13-amd64"] {
            let s = guest_default_iommu(name, &pasid);
            assert!(crate::cli::parse_iommu(&s).is_ok(), "{s}");
        }
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
    fn guest_cmdline_turns_on_scalable_mode_with_intel_iommu() {
        let spec = crate::cli::parse_iommu(GUEST_DEFAULT_IOMMU).unwrap();
        assert!(guest_cmdline(&spec).contains("intel_iommu=on,sm_on"));
        assert!(!guest_cmdline(&IommuSpec::None).contains("intel_iommu"));
    }
}
