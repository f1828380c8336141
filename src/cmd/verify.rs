//! `mmurr verify T`: the "share a bug reproduction" path. Re-execute the guest embedded in
//! the trace from its entry state on this machine, feeding it the inputs the trace recorded
//! (time-stamp counter, RNG, CPUID and MSR results, port and MMIO reads), record it again, and
//! compare the two recordings instruction by instruction (aligned by retired instructions;
//! only what the guest did when the two machines feed the MMU model different CPUs).
//! Exit 0 "reproduced"; 1 at the first difference; 4 when this host cannot run the guest; 16
//! when either recording failed its memory self-check; 18 when only part of an incomplete
//! trace could be compared; 2 on error (the README's exit-code table).

use crate::cli::{BackendChoice, VerifyArgs};
use crate::cmd::diff::{print_machine_differences, print_report};
use crate::cmd::record::{emu_executable, print_summary, Chosen};
use anyhow::{bail, Context};
use recorder::exit::Outcome;
use recorder::{RecordOptions, SerialSink};
use replayer::{Compare, Side};
use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::process::{Command, ExitCode};
use traces::{
    BackendKind, EndReason, EndRecord, EventKind, Header, Integrity, PagingMode, Reader, Record,
};

pub fn run(args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let (original, integrity) = super::open_trace(&args.trace)?;
    super::unless_damaged(&integrity, verify(args, original, &integrity))
}

fn verify(
    args: &VerifyArgs,
    mut original: Reader<BufReader<File>>,
    integrity: &Integrity,
) -> anyhow::Result<ExitCode> {
    let header = original.header().clone();
    if header.backend.kind == BackendKind::Model {
        bail!(
            "{} is the trace of a model-level scenario (backend `model`, {}): its steps are a \
             script's actions applied to the MMU model, not a guest's instructions, so there is \
             nothing to re-execute; `mmurr check` runs the model over it again",
            args.trace.display(),
            header.guest.origin
        );
    }
    let steps = original.total_steps();
    let original_end = original.end().cloned();
    describe_origin(&header, steps);
    let (needs, in_runs) = paging_modes_used(&mut original)?;
    let chosen = choose(args.backend, header.backend.kind, &needs)?;
    let name = if chosen.0 == Chosen::Kvm {
        "kvm"
    } else {
        "emu"
    };
    eprintln!("mmurr: re-executing on the {name} backend: {}", chosen.1);

    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let again = dir.path().join("verify.mmurr");
    // A recording cut by its step budget may end inside a rep instruction: the rerun stops at
    // the same step, or it would finish more iterations of that instruction and differ there.
    // Any other end gets a little more room, so a guest that diverges into a loop still stops.
    let budget = match &original_end {
        Some(e) if e.reason == EndReason::StepBudget => steps,
        _ => steps.saturating_add(steps / 10 + 1000),
    };
    match chosen.0 {
        Chosen::Kvm => record_on_kvm(&args.trace, &header, &again, budget)?,
        // In runs again only when the original is: a step-by-step trace (kvm's, or emu's
        // with --single-step) is compared instruction by instruction.
        Chosen::Emu => record_on_emu(&args.trace, &header, &again, budget, !in_runs)?,
    }
    let mut replayed = Reader::open(&again).context("reading the new recording")?;
    let new_end = replayed.end().cloned();
    let refused = |e: &Option<EndRecord>| {
        e.as_ref()
            .is_some_and(|e| e.reason == EndReason::HostUnsupported)
    };
    if refused(&new_end) && !refused(&original_end) {
        let why = new_end.as_ref().map_or("", |e| e.message.as_str());
        println!("cannot run here: this host's {name} backend refuses the guest: {why}");
        if chosen.0 == Chosen::Kvm {
            println!("  (`mmurr verify --backend emu` re-executes it on the reference emulator)");
        }
        return Ok(Outcome::HostUnsupported.into());
    }
    // Machines that feed the MMU model different CPUs legitimately decide differently.
    let compare = if replayer::hosts::model_differs(&header, replayed.header()) {
        Compare::GuestOnly
    } else {
        Compare::Everything
    };
    print_machine_differences(&header, replayed.header(), compare);
    let report = replayer::diff_with(&mut original, &mut replayed, compare)
        .context("comparing the recordings")?;
    let stopped_from_outside = stopped_from_outside(original_end.as_ref());
    let agree = match &report.divergence {
        None => true,
        // The original stopped at a budget, a timeout or a signal, not where the guest did.
        Some(d) => d.ended == Some(Side::A) && stopped_from_outside.is_some(),
    };
    if !agree {
        print_report(&report);
        if let Some(e) = new_end.as_ref().filter(|e| e.reason == EndReason::Error) {
            println!(
                "the re-execution ended ({}): {}",
                e.reason.name(),
                e.message
            );
        }
        return Ok(Outcome::Found.into());
    }
    let failures: Vec<String> = [
        ("the original", &original_end),
        ("the re-execution", &new_end),
    ]
    .into_iter()
    .flat_map(|(which, end)| {
        end.iter()
            .flat_map(|e| e.self_check_failures.iter())
            .map(move |f| format!("{which}: {f}"))
    })
    .collect();
    if !failures.is_empty() {
        println!(
            "not reproduced: {} instructions agree, but a recording failed its memory \
             self-check, so the memory compared is not all the guest wrote:",
            report.instructions
        );
        for f in &failures {
            println!("  {f}");
        }
        return Ok(Outcome::SelfCheckFailed.into());
    }
    println!(
        "reproduced: all {} instructions agree with {} (rep iterations folded){}",
        report.instructions,
        args.trace.display(),
        match (&report.divergence, stopped_from_outside) {
            (Some(_), Some(why)) => format!("; the original stopped there ({why})"),
            _ => String::new(),
        }
    );
    if !integrity.complete {
        eprintln!(
            "mmurr: only the part of the trace that could be read was compared (exit {})",
            Outcome::IncompleteTrace.code()
        );
        return Ok(Outcome::IncompleteTrace.into());
    }
    Ok(Outcome::Clean.into())
}

/// Why the original recording stopped where the guest did not: a step budget, a timeout, a
/// signal, or a recording that was never finished. `None`: the guest (or its engine) ended it.
fn stopped_from_outside(end: Option<&EndRecord>) -> Option<&'static str> {
    match end.map(|e| &e.reason) {
        None => Some("the recording was not finished"),
        Some(EndReason::StepBudget) => Some("its step budget"),
        Some(EndReason::Timeout) => Some("its timeout"),
        Some(EndReason::Interrupted) => Some("interrupted"),
        Some(_) => None,
    }
}

fn describe_origin(h: &Header, steps: u64) {
    let b = &h.backend;
    println!(
        "recorded by mmurr {} on {} ({}), host {} {} (family {} model {}), {} steps, guest {}",
        h.tool_version,
        b.kind.name(),
        b.engine,
        b.cpu_vendor,
        b.cpu_model_name,
        b.cpu_family,
        b.cpu_model,
        steps,
        h.guest.origin
    );
}

/// The paging modes the recorded guest entered: what the re-execution backend must run.
/// The paging modes the guest entered, and whether the trace was recorded in runs.
fn paging_modes_used<R: std::io::Read + std::io::Seek>(
    reader: &mut Reader<R>,
) -> anyhow::Result<(Vec<PagingMode>, bool)> {
    let mut modes = Vec::new();
    let mut runs = false;
    for r in reader.records() {
        match r? {
            Record::Event(e) => {
                if let EventKind::Transition { to, .. } = e.kind {
                    if !modes.contains(&to) {
                        modes.push(to);
                    }
                }
            }
            Record::Run(_) => runs = true,
            _ => {}
        }
    }
    Ok((modes, runs))
}

/// `auto`: the engine that recorded the trace, if this host can run what the guest did.
fn choose(
    choice: BackendChoice,
    recorded_on: BackendKind,
    needs: &[PagingMode],
) -> anyhow::Result<(Chosen, String)> {
    Ok(match choice {
        BackendChoice::Kvm => (Chosen::Kvm, "chosen with --backend kvm".into()),
        BackendChoice::Emu => (Chosen::Emu, "chosen with --backend emu".into()),
        BackendChoice::Auto if recorded_on == BackendKind::Emu => (
            Chosen::Emu,
            "the trace was recorded on the emu backend".into(),
        ),
        BackendChoice::Auto => {
            let host = recorder_kvm::probe();
            if let Err(why) = &host.usable {
                (Chosen::Emu, format!("/dev/kvm is not usable here: {why}"))
            } else if let Some(why) = needs.iter().find_map(|&m| host.cannot_run(m)) {
                (
                    Chosen::Emu,
                    format!("the guest entered a mode KVM cannot run here: {why}"),
                )
            } else {
                (
                    Chosen::Kvm,
                    "the trace was recorded on kvm and this host's KVM runs it".into(),
                )
            }
        }
    })
}

fn options(header: &Header, out: &Path, budget: u64) -> anyhow::Result<RecordOptions> {
    let mut opts = RecordOptions::new(out);
    opts.policies = header.policies.clone();
    opts.flavour = mmu::Flavour::parse(&header.mmu_flavour).unwrap_or(mmu::Flavour::Tdp);
    opts.max_steps = budget;
    opts.scenario = header.scenario.clone();
    opts.command_line = std::env::args().collect();
    opts.serial = SerialSink::Capture;
    opts.progress = true;
    opts.interrupted =
        recorder::signals::interrupt_flag().context("installing the SIGINT/SIGTERM handler")?;
    Ok(opts)
}

fn record_on_kvm(trace: &Path, header: &Header, out: &Path, budget: u64) -> anyhow::Result<()> {
    let mut opts = options(header, out, budget)?;
    opts.replay_inputs = Some(replayer::inputs::load(trace)?);
    let mut backend =
        recorder_kvm::KvmBackend::with_vcpus(recorder_kvm::probe(), header.vcpu_count())?;
    let summary = recorder::record(&mut backend, &header.guest, &opts)?;
    print_summary(&summary);
    Ok(())
}

fn record_on_emu(
    trace: &Path,
    header: &Header,
    out: &Path,
    budget: u64,
    single_step: bool,
) -> anyhow::Result<()> {
    let opts = options(header, out, budget)?;
    // The child's command line comes from the shared flag definition.
    let guest = mmurr_flags::GuestArgs {
        guest_from: Some(trace.to_path_buf()),
        ..Default::default()
    };
    let flags = mmurr_flags::RecordFlags {
        policy: opts.policies.clone(),
        flavour: Some(opts.flavour.into()),
        output: out.to_path_buf(),
        max_steps: opts.max_steps,
        replay_inputs: Some(trace.to_path_buf()),
        single_step,
        cpus: header.vcpu_count(),
        ..Default::default()
    };
    let mut cmd = Command::new(emu_executable()?);
    cmd.arg("record")
        .args(mmurr_flags::to_argv(&guest)?)
        .args(mmurr_flags::to_argv(&flags)?);
    let status = cmd.status().context("running mmurr-emu")?;
    if !out.exists() {
        bail!("mmurr-emu wrote no trace ({status})");
    }
    Ok(())
}
