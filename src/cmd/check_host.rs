//! `mmurr check --host`: the recording host's own roots against the policies' root_role.
//! Exit 1 when the policy of the host's own release (or a `--policy` given) disagrees with
//! the host on a root, or no policy agrees on all of them.

use crate::cli::CheckArgs;
use replayer::{check_host, HostCheck, Timeline};
use std::io::{Read, Seek};
use std::process::ExitCode;
use traces::Integrity;

pub fn run<R: Read + Seek>(
    args: &CheckArgs,
    timeline: &mut Timeline<R>,
    policies: &[&'static mmu::Policy],
    integrity: &Integrity,
) -> anyhow::Result<ExitCode> {
    let check = check_host(timeline, policies)
        .map_err(|e| anyhow::anyhow!("checking {} against its host: {e}", args.trace.display()))?;
    // What must agree: the policies asked for, else the host release's own.
    let judged: Vec<&str> = if policies.is_empty() {
        check.host_policy.map(|p| p.name).into_iter().collect()
    } else {
        policies.iter().map(|p| p.name).collect()
    };
    let agreeing = check.agreeing();
    let failed = agreeing.is_empty() || judged.iter().any(|p| !agreeing.contains(p));
    if args.json {
        let mut json = to_json(&check);
        json["judged"] = judged.clone().into();
        json["complete"] = integrity.complete.into();
        json["trace_integrity"] = super::integrity_json(integrity);
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print_human(&check, &judged, args.all);
    }
    Ok(super::check::exit_outcome(failed, integrity).into())
}

fn to_json(check: &HostCheck) -> serde_json::Value {
    let roots: Vec<serde_json::Value> = check
        .roots
        .iter()
        .enumerate()
        .map(|(i, r)| {
            serde_json::json!({
                "step": r.step,
                "role": format!("{:#x}", r.role),
                "fields": mmu::PageRole(r.role).describe(check.layout()),
                "created": r.created(),
                "pages": r.pages.iter().map(|p| serde_json::json!({
                    "gfn": format!("{:#x}", p.gfn),
                    "role": format!("{:#x}", p.role),
                    "created": p.created,
                    "root_count": p.root_count,
                })).collect::<Vec<_>>(),
                "predicted": check.verdicts.iter().map(|v| (v.policy.name.to_string(), serde_json::Value::from(format!("{:#x}", v.predicted[i])))).collect::<serde_json::Map<_, _>>(),
            })
        })
        .collect();
    serde_json::json!({
        "host_kernel": check.host_kernel,
        "host_policy": check.host_policy.map(|p| p.name),
        "flavour": check.flavour.name(),
        "roots": roots,
        "policies": check.verdicts.iter().map(|v| serde_json::json!({
            "name": v.policy.name,
            "agreed": v.agreed,
            "roots": check.roots.len(),
        })).collect::<Vec<_>>(),
        "agreeing": check.agreeing(),
        "lost_events": check.lost_events,
        "findings": check.findings.iter().map(super::check::finding_json).collect::<Vec<_>>(),
    })
}

fn print_human(check: &HostCheck, judged: &[&str], all: bool) {
    let layout = check.layout();
    println!(
        "host: Linux {} ({}), {} flavour; role words decoded with the {} layout",
        check.host_kernel,
        check
            .host_policy
            .map_or("older than every modelled policy".into(), |p| format!(
                "behaves as {}",
                p.name
            )),
        check.flavour.name(),
        layout.name
    );
    if check.lost_events > 0 {
        println!(
            "warning: the host's trace buffers lost {} events; roots may be missing",
            check.lost_events
        );
    }
    if check.roots.is_empty() {
        println!(
            "The host reported no root loads (a host whose TDP MMU builds roots without \
             kvm_mmu_get_page reports none)."
        );
    }
    println!("\n{:>8}  {:<8} {:<10} fields", "step", "root", "host");
    for r in &check.roots {
        println!(
            "{:>8}  {:#08x} {:<10} {}",
            r.step,
            r.role,
            if r.created() { "built" } else { "reused" },
            mmu::PageRole(r.role).describe(layout)
        );
    }
    println!("\n{:<10} {:>7}", "policy", "agree");
    for v in &check.verdicts {
        println!(
            "{:<10} {:>3}/{:<3}",
            v.policy.name,
            v.agreed,
            check.roots.len()
        );
    }
    let agreeing = check.agreeing();
    println!();
    if agreeing.is_empty() {
        println!("No policy agrees with this host on every root.");
    } else {
        println!(
            "This host behaved like {} on all {} roots.",
            agreeing.join(", "),
            check.roots.len()
        );
    }
    // The first disagreement of each judged policy, field by field; the others' with --all.
    for f in &check.findings {
        let first = check
            .findings
            .iter()
            .find(|g| g.policy == f.policy)
            .is_some_and(|g| std::ptr::eq(g, f));
        if all || (first && judged.contains(&f.policy)) {
            println!("\n[{}] {} at step {}:", f.policy, f.kind.name(), f.step);
            println!("  {}", f.detail);
            for (name, model, host) in &f.attributes {
                println!("    {name:<16} {} {model:<4} host {host}", f.policy);
            }
        }
    }
}
