//! `mmurr demo`: record the seed scenario (`pae-toggle`: a 32-bit guest sets CR4.PAE with
//! paging on, which KVM 47c42e6b4192 missed) on a backend that can run it, then print the
//! events and each policy's verdict at the CR4.PAE write.

use crate::cli::{DemoArgs, GuestArgs, RecordArgs, RecordFlags};
use crate::cmd::record::{self, Chosen};
use anyhow::Context;
use std::io::IsTerminal;
use std::process::ExitCode;
use traces::{ControlReg, Event, EventKind, Reader, Record};

const SEED: &str = "pae-toggle";
use mmu::bits::CR4_PAE;

pub fn run(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    let rec = RecordArgs {
        guest: GuestArgs {
            scenario: Some(SEED.into()),
            ..GuestArgs::default()
        },
        backend: args.backend,
        flags: RecordFlags {
            output: args.output.clone(),
            max_steps: 1_000_000,
            timeout: Some(60.0),
            quiet: true,
            ..RecordFlags::default()
        },
    };
    let guest = record::build_guest(&rec.guest, rec.flags.cpus)?;
    let backend = record::choose_backend(args.backend, &guest, 1)?;
    eprintln!(
        "mmurr demo: recording {SEED} on {}: {}",
        backend.name(),
        backend.reason
    );
    match backend.kind {
        Chosen::Kvm => {
            let summary = record::record_on_kvm(&rec, &guest)?;
            record::print_summary(&summary);
        }
        Chosen::Emu => {
            let (argv, _guest_file) = record::emu_args(&rec, &guest)?;
            let status = record::spawn_emu(&argv)?;
            if !args.output.exists() {
                anyhow::bail!("the emu backend wrote no trace (it exited with {status})");
            }
        }
    }
    if !args.no_tui && std::io::stdout().is_terminal() {
        tui::terminal::run(&args.output)?;
        eprintln!(
            "mmurr demo: the trace is {}; `mmurr check {}` explains the finding, `mmurr gdb {}` \
             steps back to it",
            args.output.display(),
            args.output.display(),
            args.output.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    show(&args.output)?;
    Ok(ExitCode::SUCCESS)
}

fn show(path: &std::path::Path) -> anyhow::Result<()> {
    let mut reader =
        Reader::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let policies = reader.header().policies.clone();
    let mut events: Vec<Event> = Vec::new();
    let mut end = None;
    for r in reader.records() {
        match r? {
            Record::Event(e) => events.push(e),
            Record::End(e) => end = Some(e),
            _ => {}
        }
    }
    println!("events of {} ({}):", SEED, path.display());
    for e in &events {
        match &e.kind {
            EventKind::CrWrite(w) => println!(
                "  #{:<4} step {:<6} {:>4} {:#x} -> {:#x}{}",
                e.id,
                e.step,
                w.reg.name(),
                w.old,
                w.new,
                if w.faulted { " (#GP)" } else { "" }
            ),
            EventKind::Transition { from, to } => {
                println!(
                    "  #{:<4} step {:<6} mode {} -> {}",
                    e.id,
                    e.step,
                    from.name(),
                    to.name()
                )
            }
            _ => {}
        }
    }
    let pae_write = events.iter().find(|e| {
        matches!(&e.kind, EventKind::CrWrite(w) if w.reg == ControlReg::Cr4 && (w.old ^ w.new) & CR4_PAE != 0 && w.old & CR4_PAE == 0)
    });
    match pae_write {
        Some(cause) => {
            println!(
                "\nverdicts at the CR4.PAE write (event #{}, step {}):",
                cause.id, cause.step
            );
            for e in &events {
                match &e.kind {
                    EventKind::Mmu(d) if d.cause == cause.id => println!(
                        "  {:<14} {}{}",
                        policies.get(d.policy as usize).map_or("?", |s| s.as_str()),
                        d.outcome.name(),
                        if d.context_changes.is_empty() {
                            String::new()
                        } else {
                            format!(" [{}]", d.context_changes.join(", "))
                        }
                    ),
                    EventKind::Finding(f) if f.cause == cause.id => println!(
                        "  {:<14} FINDING {}: {}",
                        policies.get(f.policy as usize).map_or("?", |s| s.as_str()),
                        f.kind.name(),
                        f.detail
                    ),
                    _ => {}
                }
            }
        }
        None => println!("\nthe run ended before the guest set CR4.PAE"),
    }
    if let Some(end) = end {
        println!("\nrun ended ({}): {}", end.reason.name(), end.message);
    }
    Ok(())
}
