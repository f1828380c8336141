//! `mmurr diff A B`: the first divergence between two traces of the same guest.
//! Exit 0 when they agree, 1 when they diverge, 18 when they agree as far as both could be
//! read but one is incomplete, 2 on error. `--guest-only` leaves out the MMU model's
//! decisions, which differ between machines whose CPUID or MAXPHYADDR differ.

use crate::cli::DiffArgs;
use recorder::exit::Outcome;
use replayer::{Compare, DiffReport};
use std::process::ExitCode;

pub fn run(args: &DiffArgs) -> anyhow::Result<ExitCode> {
    let (mut a, integrity_a) = super::open_trace(&args.a)?;
    let (mut b, integrity_b) = super::open_trace(&args.b)?;
    let whole = integrity_a.complete && integrity_b.complete;
    for (name, r, integrity) in [("A", &a, &integrity_a), ("B", &b, &integrity_b)] {
        let h = r.header();
        println!(
            "{name}: {} — {} backend ({}), {} steps{}",
            if name == "A" {
                args.a.display()
            } else {
                args.b.display()
            },
            h.backend.kind.name(),
            h.backend.engine,
            r.total_steps(),
            if integrity.complete {
                ""
            } else {
                ", INCOMPLETE (see the warning above)"
            }
        );
    }
    if a.header().guest.blobs != b.header().guest.blobs
        || a.header().guest.entry != b.header().guest.entry
    {
        println!("warning: the traces embed different guests (images or entry state differ)");
    }
    let compare = if args.guest_only {
        Compare::GuestOnly
    } else {
        Compare::Everything
    };
    print_machine_differences(a.header(), b.header(), compare);
    let report = match replayer::diff_with(&mut a, &mut b, compare) {
        Ok(report) => report,
        Err(e) if !whole => return Ok(super::stopped_at_damage(&e.into())),
        Err(e) => return Err(anyhow::Error::new(e).context("comparing the traces")),
    };
    print_report(&report);
    Ok(if report.divergence.is_some() {
        Outcome::Found
    } else if !whole {
        eprintln!(
            "mmurr: the parts that could be read agree; the rest was not compared (exit {})",
            Outcome::IncompleteTrace.code()
        );
        Outcome::IncompleteTrace
    } else {
        Outcome::Clean
    }
    .into())
}

/// What differs between the two machines, first, so a divergence that follows has its
/// explanation; and what is compared.
pub fn print_machine_differences(a: &traces::Header, b: &traces::Header, compare: Compare) {
    let machines = replayer::hosts::differences(a, b);
    if !machines.is_empty() {
        println!("the machines differ in what the guest and the MMU model see:");
        for line in &machines {
            println!("  {line}");
        }
    }
    match compare {
        Compare::GuestOnly => println!(
            "comparing what the guest did (registers, memory, CR writes, transitions, \
             exceptions, I/O); MMU decisions left out"
        ),
        Compare::Everything if replayer::hosts::model_differs(a, b) => println!(
            "note: the MMU model's inputs differ, so its decisions will; --guest-only compares \
             only what the guest did"
        ),
        Compare::Everything => {}
    }
}

pub fn print_report(report: &DiffReport) {
    let Some(d) = &report.divergence else {
        println!(
            "equal: {} instructions agree (rep iterations folded)",
            report.instructions
        );
        return;
    };
    let at = |s: Option<u64>| s.map_or("end".to_string(), |s| s.to_string());
    println!(
        "diverged at instruction {} (step {} in A, step {} in B){}:",
        d.instruction,
        at(d.step_a),
        at(d.step_b),
        d.rip.map_or(String::new(), |r| format!(", rip {r:#x}"))
    );
    for line in &d.differences {
        println!("  {line}");
    }
    if !d.context.is_empty() {
        println!("before it:");
        for line in &d.context {
            println!("  {line}");
        }
    }
}
