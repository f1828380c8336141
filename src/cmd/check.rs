//! `mmurr check`: MMU-context divergences per policy; exit 1 when a stale context or a #GP
//! disagreement is found.

use crate::cli::{CheckArgs, FlavourChoice};
use anyhow::{bail, Context};
use replayer::{check, CheckReport, Timeline};
use std::process::ExitCode;

pub fn run(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let mut policies = Vec::new();
    for name in &args.policies {
        match mmu::policy(name) {
            Some(p) => policies.push(p),
            None => bail!("unknown policy `{name}` (see `mmurr policies`)"),
        }
    }
    let mut timeline = Timeline::open(&args.trace)
        .with_context(|| format!("cannot read trace {}", args.trace.display()))?;
    let flavour = match args.flavour {
        Some(FlavourChoice::Tdp) => mmu::Flavour::Tdp,
        Some(FlavourChoice::Shadow) => mmu::Flavour::Shadow,
        None => mmu::Flavour::parse(&timeline.header().mmu_flavour).unwrap_or(mmu::Flavour::Tdp),
    };
    let report = check(&mut timeline, &policies, flavour)
        .with_context(|| format!("checking {}", args.trace.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&to_json(&report))?);
    } else {
        print_human(&report);
    }
    Ok(if report.has_bugs() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn to_json(report: &CheckReport) -> serde_json::Value {
    let findings: Vec<serde_json::Value> = report
        .findings
        .iter()
        .map(|f| {
            serde_json::json!({
                "policy": f.policy,
                "step": f.step,
                "event": f.event,
                "kind": f.kind.name(),
                "detail": f.detail,
                "attributes": f.attributes.iter().map(|(n, k, c)| serde_json::json!({"name": n, "kept": k, "required": c})).collect::<Vec<_>>(),
                "translations": f.translations.iter().map(|t| serde_json::json!({
                    "gva": format!("{:#x}", t.gva),
                    "access": format!("{:?}", t.access).to_lowercase(),
                    "kept": t.kept,
                    "correct": t.correct,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
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
    serde_json::json!({ "flavour": report.flavour.name(), "findings": findings, "policies": policies })
}

fn print_human(report: &CheckReport) {
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
    if report.findings.is_empty() {
        println!("\nNo findings: every policy's MMU context followed the architecture.");
        return;
    }
    println!();
    for f in &report.findings {
        println!(
            "[{}] {} at step {} (event {}):",
            f.policy,
            f.kind.name(),
            f.step,
            f.event
        );
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
}
