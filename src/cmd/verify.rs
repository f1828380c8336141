//! `mmurr verify T`: the "share a bug reproduction" path. Re-execute the guest embedded in
//! the trace from its entry state on this machine, record it again, and compare the two
//! recordings instruction by instruction. Exit 0 "reproduced", 1 at the first difference,
//! 18 when only part of an incomplete trace could be compared, 2 on error.

use crate::cli::{BackendChoice, VerifyArgs};
use crate::cmd::diff::print_report;
use crate::cmd::record::{emu_executable, print_summary, Chosen};
use anyhow::{bail, Context};
use recorder::exit::Outcome;
use recorder::{RecordOptions, SerialSink};
use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::process::{Command, ExitCode};
use traces::{BackendKind, EventKind, Header, Integrity, PagingMode, Reader, Record};

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
    let steps = original.total_steps();
    describe_origin(&header, steps);
    let needs = paging_modes_used(&mut original)?;
    let chosen = choose(args.backend, header.backend.kind, &needs)?;
    let name = if chosen.0 == Chosen::Kvm {
        "kvm"
    } else {
        "emu"
    };
    eprintln!("mmurr: re-executing on the {name} backend: {}", chosen.1);

    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let again = dir.path().join("verify.mmurr");
    match chosen.0 {
        Chosen::Kvm => record_on_kvm(&header, &again, steps)?,
        Chosen::Emu => record_on_emu(&args.trace, &header, &again, steps)?,
    }
    let mut replayed = Reader::open(&again).context("reading the new recording")?;
    let machines = replayer::hosts::differences(&header, replayed.header());
    if !machines.is_empty() {
        println!(
            "this machine differs from the recording one in what the guest and the MMU model see:"
        );
        for line in &machines {
            println!("  {line}");
        }
    }
    let report =
        replayer::diff(&mut original, &mut replayed).context("comparing the recordings")?;
    if report.divergence.is_none() {
        println!(
            "reproduced: all {} instructions agree with {} (rep iterations folded)",
            report.instructions,
            args.trace.display()
        );
        if !integrity.complete {
            eprintln!(
                "mmurr: only the part of the trace that could be read was compared (exit {})",
                Outcome::IncompleteTrace.code()
            );
            return Ok(Outcome::IncompleteTrace.into());
        }
        return Ok(Outcome::Clean.into());
    }
    print_report(&report);
    Ok(Outcome::Found.into())
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
fn paging_modes_used<R: std::io::Read + std::io::Seek>(
    reader: &mut Reader<R>,
) -> anyhow::Result<Vec<PagingMode>> {
    let mut modes = Vec::new();
    for r in reader.records() {
        if let Record::Event(e) = r? {
            if let EventKind::Transition { to, .. } = e.kind {
                if !modes.contains(&to) {
                    modes.push(to);
                }
            }
        }
    }
    Ok(modes)
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

fn options(header: &Header, out: &Path, steps: u64) -> anyhow::Result<RecordOptions> {
    let mut opts = RecordOptions::new(out);
    opts.policies = header.policies.clone();
    opts.flavour = mmu::Flavour::parse(&header.mmu_flavour).unwrap_or(mmu::Flavour::Tdp);
    // A guest that diverges into a loop must not run forever: a little more than the original.
    opts.max_steps = steps.saturating_add(steps / 10 + 1000);
    opts.scenario = header.scenario.clone();
    opts.command_line = std::env::args().collect();
    opts.serial = SerialSink::Capture;
    opts.progress = true;
    opts.interrupted =
        recorder::signals::interrupt_flag().context("installing the SIGINT/SIGTERM handler")?;
    Ok(opts)
}

fn record_on_kvm(header: &Header, out: &Path, steps: u64) -> anyhow::Result<()> {
    let opts = options(header, out, steps)?;
    let mut backend = recorder_kvm::KvmBackend::new(recorder_kvm::probe())?;
    let summary = recorder::record(&mut backend, &header.guest, &opts)?;
    print_summary(&summary);
    Ok(())
}

fn record_on_emu(trace: &Path, header: &Header, out: &Path, steps: u64) -> anyhow::Result<()> {
    let opts = options(header, out, steps)?;
    let mut cmd = Command::new(emu_executable()?);
    cmd.arg("record")
        .arg("--guest-from")
        .arg(trace)
        .arg("--output")
        .arg(out);
    cmd.arg("--max-steps").arg(opts.max_steps.to_string());
    cmd.arg("--flavour").arg(opts.flavour.name());
    for p in &opts.policies {
        cmd.arg("--policy").arg(p);
    }
    let status = cmd.status().context("running mmurr-emu")?;
    if !out.exists() {
        bail!("mmurr-emu wrote no trace ({status})");
    }
    Ok(())
}
