//! `mmurr check`: MMU-context divergences per policy; exit 1 when a stale context or a #GP
//! disagreement is found, 18 when nothing was found but the trace could not be read whole.

use crate::cli::CheckArgs;
use anyhow::{bail, Context};
use recorder::exit::Outcome;
use replayer::{check_with, CheckReport, Timeline};
use std::process::ExitCode;
use traces::Integrity;

pub fn run(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let mut policies = Vec::new();
    for name in &args.policies {
        match mmu::policy(name) {
            Some(p) => policies.push(p),
            None => bail!("unknown policy `{name}` (see `mmurr policies`)"),
        }
    }
    let (reader, integrity) = super::open_trace(&args.trace)?;
    let mut timeline = Timeline::new(reader)
        .with_context(|| format!("cannot read trace {}", args.trace.display()))?;
    if args.host {
        return super::check_host::run(args, &mut timeline, &policies, &integrity);
    }
    let flavour = match args.flavour {
        Some(f) => f.into(),
        None => mmu::Flavour::parse(&timeline.header().mmu_flavour).unwrap_or(mmu::Flavour::Tdp),
    };
    let report = match check_with(&mut timeline, &policies, flavour, args.decisions) {
        Ok(report) => report,
        // The damage already reported is why: say so with its own exit code.
        Err(e) if !integrity.complete => {
            let e = anyhow::Error::new(e);
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "complete": false,
                        "trace_integrity": super::integrity_json(&integrity),
                        "error": format!("{e:#}"),
                    }))?
                );
            }
            return Ok(super::stopped_at_damage(&e));
        }
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!("checking {}", args.trace.display())))
        }
    };
    if args.json {
        let mut json = to_json(&report);
        json["complete"] = integrity.complete.into();
        json["trace_integrity"] = super::integrity_json(&integrity);
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print_human(&report, args.all);
    }
    Ok(exit_outcome(report.has_bugs(), &integrity).into())
}

/// Findings are findings even in a partial trace; "no findings" is only a pass for a trace
/// read whole.
pub fn exit_outcome(has_bugs: bool, integrity: &Integrity) -> Outcome {
    if has_bugs {
        Outcome::Found
    } else if !integrity.complete {
        eprintln!(
            "mmurr: no findings in the part of the trace that could be read; the rest was not \
             checked (exit {})",
            Outcome::IncompleteTrace.code()
        );
        Outcome::IncompleteTrace
    } else {
        Outcome::Clean
    }
}

fn to_json(report: &CheckReport) -> serde_json::Value {
    let findings: Vec<serde_json::Value> = report.findings.iter().map(finding_json).collect();
    let policies: Vec<serde_json::Value> = report
        .policies
        .iter()
        .map(|(p, s)| {
            serde_json::json!({
                "name": p.name,
                "cr_writes": s.writes,
                "reinits": s.reinits,
                "skipped": s.skipped,
                "stale_contexts": s.stale,
                "needless_resets": s.needless,
                "gp_mismatches": s.gp_mismatches,
            })
        })
        .collect();
    let groups: Vec<serde_json::Value> = replayer::group(&report.findings)
        .iter()
        .map(|g| {
            serde_json::json!({
                "policies": g.policies,
                "kind": g.first.kind.name(),
                "write_kind": g.first.write_kind,
                "count": g.count,
                "first_step": g.first.step,
                "last_step": g.last.step,
            })
        })
        .collect();
    let vcpus: Vec<serde_json::Value> = report
        .vcpus
        .iter()
        .enumerate()
        .map(|(v, s)| {
            serde_json::json!({
                "vcpu": v, "writes": s.writes, "reinits": s.reinits, "skipped": s.skipped,
                "stale": s.stale, "needless": s.needless, "gp_mismatches": s.gp_mismatches,
            })
        })
        .collect();
    let mut json = serde_json::json!({
        "flavour": report.flavour.name(),
        "findings": findings,
        "groups": groups,
        "policies": policies,
        "vcpus": vcpus,
    });
    if !report.decisions.is_empty() {
        json["decisions"] = report
            .decisions
            .iter()
            .map(|a| {
                serde_json::json!({
                    "step": a.step,
                    "event": a.event,
                    "cause": a.cause,
                    "policies": a.policies.iter().map(|p| serde_json::json!({
                        "policy": p.policy,
                        "outcome": p.outcome.name(),
                        "reset": p.reset,
                        "current_root_freed": p.current_root_freed,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
    }
    json
}

/// The decisions, action by action (model traces, recordings with host actions, `--decisions`):
/// the policies by outcome, and those that kept the current root.
fn print_decisions(report: &replayer::CheckReport) {
    println!("\nDecisions, action by action:");
    for a in &report.decisions {
        println!("step {} (event {}): {}", a.step, a.event, a.cause);
        let mut outcomes: Vec<(String, Vec<&str>)> = Vec::new();
        for p in &a.policies {
            let name = if p.reset {
                p.outcome.name().to_string()
            } else {
                format!("{}, no reset", p.outcome.name())
            };
            match outcomes.iter_mut().find(|(o, _)| *o == name) {
                Some((_, ps)) => ps.push(p.policy),
                None => outcomes.push((name, vec![p.policy])),
            }
        }
        for (o, ps) in outcomes {
            println!("  {o}: {}", ps.join(", "));
        }
        let kept: Vec<&str> = a
            .policies
            .iter()
            .filter(|p| !p.current_root_freed)
            .map(|p| p.policy)
            .collect();
        if !kept.is_empty() {
            println!("  current root kept: {}", kept.join(", "));
        }
    }
}

/// One finding as `--json` lists it.
pub fn finding_json(f: &replayer::CheckFinding) -> serde_json::Value {
    // A host disagreement compares the policy's value with the host's.
    let (kept, required) = match f.kind {
        traces::FindingKind::HostDisagreement => ("model", "host"),
        _ => ("kept", "required"),
    };
    serde_json::json!({
        "policy": f.policy,
        "vcpu": f.vcpu,
        "step": f.step,
        "event": f.event,
        "kind": f.kind.name(),
        "write_kind": f.write_kind,
        "detail": f.detail,
        "attributes": f.attributes.iter().map(|(n, k, c)| serde_json::json!({"name": n, kept: k, required: c})).collect::<Vec<_>>(),
        "translations": f.translations.iter().map(|t| serde_json::json!({
            "gva": format!("{:#x}", t.gva),
            "access": format!("{:?}", t.access).to_lowercase(),
            "kept": t.kept,
            "correct": t.correct,
        })).collect::<Vec<_>>(),
    })
}

fn print_human(report: &CheckReport, all: bool) {
    println!("MMU flavour: {}", report.flavour.name());
    println!(
        "{:<10} {:>9} {:>8} {:>8} {:>6} {:>9} {:>6}",
        "policy", "CR writes", "reinits", "skipped", "stale", "needless", "#GP≠"
    );
    for (p, s) in &report.policies {
        println!(
            "{:<10} {:>9} {:>8} {:>8} {:>6} {:>9} {:>6}",
            p.name, s.writes, s.reinits, s.skipped, s.stale, s.needless, s.gp_mismatches
        );
    }
    if !report.vcpus.is_empty() {
        // KVM keeps one MMU per vCPU: each vCPU's writes went to its own model.
        println!(
            "\n{:<10} {:>9} {:>8} {:>8} {:>6} {:>9} {:>6}   (summed over the policies)",
            "vCPU", "CR writes", "reinits", "skipped", "stale", "needless", "#GP≠"
        );
        for (v, s) in report.vcpus.iter().enumerate() {
            println!(
                "{:<10} {:>9} {:>8} {:>8} {:>6} {:>9} {:>6}",
                v, s.writes, s.reinits, s.skipped, s.stale, s.needless, s.gp_mismatches
            );
        }
    }
    if !report.decisions.is_empty() {
        print_decisions(report);
    }
    if report.findings.is_empty() {
        println!("\nNo findings: every policy's MMU context followed the architecture.");
        return;
    }
    println!();
    if all {
        report.findings.iter().for_each(print_finding);
        return;
    }
    let groups = replayer::group(&report.findings);
    for g in &groups {
        if g.count == 1 && g.policies.len() == 1 {
            print_finding(g.first);
            continue;
        }
        let repeats = if g.count == 1 {
            format!(
                "at step {} (event {}), a {}",
                g.first.step,
                g.first.event,
                g.first.write_kind.trim_end_matches('s')
            )
        } else {
            format!(
                "×{} at {}: first at step {} (event {}), last at step {} (event {})",
                g.count, g.first.write_kind, g.first.step, g.first.event, g.last.step, g.last.event
            )
        };
        println!(
            "[{}] {} {repeats}{}:",
            g.policies.join(", "),
            g.first.kind.name(),
            if g.first.vcpu == g.last.vcpu {
                on_vcpu(g.first)
            } else {
                " on several vCPUs".into()
            }
        );
        print_details(g.first);
    }
    if groups.len() < report.findings.len() {
        println!(
            "\n{} findings told as {} stories; `--all` prints every one.",
            report.findings.len(),
            groups.len()
        );
    }
}

fn print_finding(f: &replayer::CheckFinding) {
    println!(
        "[{}] {} at step {} (event {}){}:",
        f.policy,
        f.kind.name(),
        f.step,
        f.event,
        on_vcpu(f)
    );
    print_details(f);
}

/// ` on vCPU N` in traces of several vCPUs.
fn on_vcpu(f: &replayer::CheckFinding) -> String {
    f.vcpu.map(|v| format!(" on vCPU {v}")).unwrap_or_default()
}

fn print_details(f: &replayer::CheckFinding) {
    println!("  {}", f.detail);
    for t in &f.translations {
        println!(
            "    {:#018x} {:<5} kept: {:<24} correct: {}",
            t.gva,
            format!("{:?}", t.access).to_lowercase(),
            t.kept,
            t.correct
        );
    }
}
