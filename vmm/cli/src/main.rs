//! The `iommu-vmm` command: the VMM library (`iommu_vmm`) plus what only the command needs,
//! `--guest NAME` resolution ([`guest`], through `guest-images`) and the nested runner
//! (`iommu_nested`).

// The library's no-panic rules (STYLE rule 8) hold for the binary too.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic,
        clippy::arithmetic_side_effects,
        clippy::cast_possible_truncation
    )
)]

mod guest;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;
use iommu_nested::{NestedMode, in_nested_l1, maybe_run_nested, nested_check_main};
use iommu_vmm::cli::Args;
use iommu_vmm::exit::{ExitReason, STATUS_TRIPLE_FAULT, STATUS_VMM_ERROR};

/// A process exit status: statuses outside 0..=255 clamp to the nearest end.
fn exit_code(status: i32) -> ExitCode {
    ExitCode::from(u8::try_from(status.clamp(0, 255)).unwrap_or(u8::MAX))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("IOMMU_VMM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let raw: Vec<OsString> = std::env::args_os().collect();
    // Hidden: `iommu-vmm nested-check` boots the nested runner's L1 machine once.
    if raw.get(1).is_some_and(|a| a == "nested-check") {
        return ExitCode::from(nested_check_main().clamp(0, 255) as u8);
    }
    let args = Args::parse();

    // The single call site of the nested runner: when the host's KVM cannot
    // boot stock kernels, the whole command runs inside an L1 machine.
    // A --guest image is built (or checked current) here on the host: the L1
    // machine of the nested runner has neither compiler nor network. The
    // nested runner gets the user's own arguments (`raw`), and the command
    // inside L1 resolves `--guest` again from the image the host built.
    let args = match &args.guest {
        Some(name) => match guest::resolve_guest(&args, name, !in_nested_l1()) {
            Ok(resolved) => resolved,
            Err(e) => {
                eprintln!("iommu-vmm: {e}");
                return exit_code(STATUS_VMM_ERROR);
            }
        },
        None => args,
    };
    if let Err(e) = iommu_vmm::vmm::preflight(&args) {
        eprintln!("iommu-vmm: {e}");
        return exit_code(STATUS_VMM_ERROR);
    }
    let mode: NestedMode = match args.nested.parse() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("iommu-vmm: --nested: {e}");
            return exit_code(STATUS_VMM_ERROR);
        }
    };
    // A triple fault in L2 under the runner is retried once (L1's emulated SVM is unreliable).
    match maybe_run_nested(mode, raw.get(1..).unwrap_or(&[]), &[STATUS_TRIPLE_FAULT]) {
        Ok(Some(status)) => return exit_code(status),
        Ok(None) => {}
        Err(e) => {
            eprintln!("iommu-vmm: {e}");
            return exit_code(STATUS_VMM_ERROR);
        }
    }

    match iommu_vmm::vmm::run(&args) {
        Ok(report) => {
            match &report.reason {
                ExitReason::PowerOff | ExitReason::Reset | ExitReason::DebugExit(_) => {
                    tracing::info!("{}", report.reason)
                }
                other => eprintln!("iommu-vmm: {other}"),
            }
            exit_code(report.status)
        }
        Err(e) => {
            eprintln!("iommu-vmm: {e}");
            exit_code(STATUS_VMM_ERROR)
        }
    }
}
