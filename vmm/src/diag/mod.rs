//! Diagnostics, kept off the hot paths: the flight recorder ([`recorder`]) and the
//! triple-fault post-mortem ([`postmortem`]).
//!
//! What each hot path touches of this module (all through [`recorder::record`], which takes
//! no lock and writes no word shared with another thread; see [`recorder`]):
//!
//! | hot path | where | recorded | touches |
//! | --- | --- | --- | --- |
//! | vCPU PIO exit (in/out) | `kvm::vcpu::run` | [`recorder::Event::Pio`] | the vCPU thread's own ring |
//! | vCPU MMIO exit (read/write) | `kvm::vcpu::run` | [`recorder::Event::Mmio`] | the vCPU thread's own ring |
//! | vCPU IOAPIC EOI exit | `kvm::vcpu::run` | [`recorder::Event::Eoi`] | the vCPU thread's own ring |
//! | vCPU HLT exit | `kvm::vcpu::run` | [`recorder::Event::Exit`] | the vCPU thread's own ring |
//! | MSI/MSI-X sent into KVM | `kvm::irq::IrqRouter` (send) | [`recorder::Event::Msi`] | the sending thread's ring (event loop or vCPU) |
//! | IOAPIC pin raised | `kvm::irq::IrqRouter::deliver` | [`recorder::Event::IoapicPin`] | the raising thread's ring |
//! | virtio-blk request completed (DMA done) | `virtio::blk` | [`recorder::Event::Blk`] | the event-loop thread's ring |
//!
//! "Its own ring" is one uncontended mutex (only a report takes it too), one clock read and
//! one store; no allocation, no formatting. The rings are read, merged and formatted only by
//! [`recorder::recent`]/[`recorder::dump`]: in the shutdown report of a triple fault
//! ([`postmortem::shutdown_report`]) and in tests. The post-mortem itself (registers, LAPIC,
//! KVM trace, guest symbols, the guest kernel's IDT and page tables) runs only after a
//! triple fault; before that, [`postmortem::prepare_shutdown_report`] keeps a handle on guest
//! memory and, with `--kvm-trace`, turns on the host's KVM tracepoints once.
//!
//! Not this module's: the devices keep their own state locks (one per device on the buses).
//! An MSI/MSI-X on a route already resolved goes out through the function's cached irqfd
//! with only that function's lock (`kvm::irq::DeviceMsi`); the router's lock (one per VM) is
//! taken only to resolve a new or invalidated route, for IOAPIC pins, and for statistics. So
//! no lock shared by all vCPUs sits on the exit, interrupt or DMA path in the steady state.
//! The recorder adds no lock to any of these paths.

pub mod postmortem;
pub mod recorder;
