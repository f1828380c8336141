//! `mmurr run --gdb ADDR [guest options]`: the guest under the live gdb server, without keeping
//! a trace. The recorder's stepping loop still runs (it is what gdb drives) and writes its
//! trace to a temporary file, deleted at the end. Unlike `record --gdb`, gdb may change
//! registers and memory here.

use super::record::{
    build_guest, choose_backend, emu_args, exit_code, record_options, spawn_emu, BuiltGuest, Chosen,
};
use crate::cli::RecordArgs;
use anyhow::{bail, Context};
use recorder::exit::Outcome;
use recorder::RecordSummary;
use std::process::ExitCode;

pub fn run(args: &RecordArgs) -> anyhow::Result<ExitCode> {
    if args.flags.gdb.is_none() {
        bail!(
            "`mmurr run` runs the guest under gdb: give --gdb ADDR (e.g. --gdb 127.0.0.1:1234); \
             to run and keep a trace, use `mmurr record`"
        );
    }
    let guest = build_guest(&args.guest, args.flags.cpus)?;
    let backend = choose_backend(args.backend, &guest, args.flags.cpus)?;
    eprintln!("mmurr: backend {}: {}", backend.name(), backend.reason);
    let scratch = std::env::temp_dir().join(format!("mmurr-run-{}.mmurr", std::process::id()));
    let mut args = args.clone();
    args.flags.output = scratch.clone();
    let result = match backend.kind {
        Chosen::Kvm => live_on_kvm(&args, &guest, true).map(|s| {
            eprintln!(
                "mmurr: run ended after {} steps ({}): {}",
                s.steps,
                s.end.reason.name(),
                s.end.message
            );
            exit_code(&s)
        }),
        Chosen::Emu => {
            args.flags.gdb_writable = true;
            emu_args(&args, &guest)
                .and_then(|(argv, _guest_file)| spawn_emu(&argv))
                .map(|status| ExitCode::from(Outcome::code_of_child(status)))
        }
    };
    let _ = std::fs::remove_file(&scratch);
    result
}

/// Records (or, for `run`, traces to scratch) on kvm with gdb driving the loop.
pub fn live_on_kvm(
    args: &RecordArgs,
    guest: &BuiltGuest,
    allow_writes: bool,
) -> anyhow::Result<RecordSummary> {
    let listen = args.flags.gdb.as_deref().context("no --gdb address")?;
    let opts = record_options(args, guest)?;
    // An unknown policy is refused before gdb is told to connect.
    recorder::resolve_policies(&opts.policies)?;
    let mut backend = recorder_kvm::KvmBackend::with_vcpus(recorder_kvm::probe(), args.flags.cpus)?;
    let mut live = mmurr_gdb::start_live(mmurr_gdb::LiveOptions {
        listen,
        allow_remote: args.flags.allow_remote,
        what: &format!("{} on kvm", guest.label),
        allow_writes,
        vcpus: recorder::Backend::vcpus(&backend),
        interrupted: opts.interrupted.clone(),
    })?;
    Ok(recorder::record_with(
        &mut backend,
        &guest.spec,
        &opts,
        Some(&mut live),
    )?)
}
